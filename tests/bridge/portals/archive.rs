//! A MUC with an archive (XEP-0313): the history comes from it, not with the join, and only
//! answers to the member's own query are taken.

use super::*;

fn result(query: &str, id: &str, from: &str, body: &str, stamp: &str) -> Stanza {
    stanza(&format!(
        "<message xmlns='jabber:server' from='lobby@prosody.test' to='alice@gw.test/causeway'>\
         <result xmlns='urn:xmpp:mam:2' queryid='{query}' id='{id}'>\
         <forwarded xmlns='urn:xmpp:forward:0'><delay xmlns='urn:xmpp:delay' stamp='{stamp}'/>\
         <message xmlns='jabber:client' type='groupchat' from='{from}' id='o-{id}'>\
         <body>{body}</body></message></forwarded></result></message>"
    ))
}

#[tokio::test]
async fn history_comes_from_the_mucs_archive() {
    let mut world = world().await;
    let token = world.token().await;
    let World {
        server, peer, seen, ..
    } = &mut world;
    let peer = peer.clone();
    let play = async {
        let Stanza::Iq(Iq::Get { id, .. }) = next_that(seen, to_room("lobby@prosody.test")).await
        else {
            panic!("no disco#info request");
        };
        peer.send(stanza(&format!(
            "<iq xmlns='jabber:server' type='result' id='{id}' from='lobby@prosody.test' to='gw.test'>\
             <query xmlns='http://jabber.org/protocol/disco#info'>\
             <identity category='conference' type='text' name='The Lobby'/>\
             <feature var='http://jabber.org/protocol/muc'/><feature var='urn:xmpp:mam:2'/>\
             </query></iq>"
        )));
        let Stanza::Presence(join) = next_that(seen, |s| {
            matches!(s, Stanza::Presence(_)) && to_room("lobby@prosody.test")(s)
        })
        .await
        else {
            unreachable!()
        };
        // No history with the join: it comes from the archive.
        let history = join
            .payloads
            .iter()
            .find_map(|x| x.get_child("history", "http://jabber.org/protocol/muc"))
            .expect("a history element");
        assert_eq!(history.attr("maxstanzas"), Some("0"));
        peer.send(stanza(
            "<presence xmlns='jabber:server' from='lobby@prosody.test/alice' \
             to='alice@gw.test/causeway'><x xmlns='http://jabber.org/protocol/muc#user'>\
             <item affiliation='none' role='participant'/><status code='110'/></x></presence>",
        ));
    };
    let path = join_path("#_xmpp_lobby=40prosody.test:gw.test");
    let (joined, ()) = tokio::join!(server.post(&path, &token, json!({})), play);
    let room = joined.assert_ok()["room_id"].as_str().unwrap().to_owned();
    // Alice's occupant asks the archive for its last messages.
    let Stanza::Iq(Iq::Set {
        id, from, payload, ..
    }) = next_that(&mut world.seen, |s| {
        matches!(s, Stanza::Iq(Iq::Set { payload, .. }) if payload.is("query", "urn:xmpp:mam:2"))
    })
    .await
    else {
        unreachable!()
    };
    assert_eq!(from.unwrap().to_string(), "alice@gw.test/causeway");
    let query = payload.attr("queryid").unwrap().to_owned();
    let set = payload
        .get_child("set", "http://jabber.org/protocol/rsm")
        .expect("a page");
    assert!(set.has_child("before", "http://jabber.org/protocol/rsm"));
    assert_eq!(
        set.get_child("max", "http://jabber.org/protocol/rsm")
            .map(|m| m.text()),
        Some("20".to_owned())
    );
    world.peer.send(result(
        &query,
        "a1",
        "lobby@prosody.test/Bob",
        "first of old",
        "2026-01-01T09:00:00Z",
    ));
    // Not of this query, or not of this room: not taken.
    world.peer.send(result(
        "not-ours",
        "x1",
        "lobby@prosody.test/Bob",
        "forged",
        "2026-01-01T09:00:01Z",
    ));
    world.peer.send(result(
        &query,
        "x2",
        "other@prosody.test/Bob",
        "elsewhere",
        "2026-01-01T09:00:02Z",
    ));
    world.peer.send(result(
        &query,
        "a2",
        "lobby@prosody.test/Bob",
        "second of old",
        "2026-01-01T09:00:03Z",
    ));
    world.peer.send(stanza(&format!(
        "<iq xmlns='jabber:server' type='result' id='{id}' from='lobby@prosody.test' \
         to='alice@gw.test/causeway'><fin xmlns='urn:xmpp:mam:2' complete='true'>\
         <set xmlns='http://jabber.org/protocol/rsm'><first>a1</first><last>a2</last></set>\
         </fin></iq>"
    )));
    // The second, received live as well, is one event.
    world.peer.send(stanza(
        "<message xmlns='jabber:server' type='groupchat' id='o-a2' from='lobby@prosody.test/Bob' \
         to='alice@gw.test/causeway'><body>second of old</body>\
         <stanza-id xmlns='urn:xmpp:sid:0' by='lobby@prosody.test' id='a2'/></message>",
    ));
    world.peer.send(stanza(
        "<message xmlns='jabber:server' type='groupchat' id='n1' from='lobby@prosody.test/Bob' \
         to='alice@gw.test/causeway'><body>new</body>\
         <stanza-id xmlns='urn:xmpp:sid:0' by='lobby@prosody.test' id='n1'/></message>",
    ));
    let said = world
        .wait_for(&token, &room, |events| {
            let bobs: Vec<(String, i64)> = messages(events, BOB_HERE)
                .iter()
                .map(|e| {
                    (
                        e["content"]["body"].as_str().unwrap().to_owned(),
                        e["origin_server_ts"].as_i64().unwrap(),
                    )
                })
                .collect();
            bobs.iter().any(|(body, _)| body == "new").then_some(bobs)
        })
        .await;
    let bodies: Vec<&str> = said.iter().map(|(body, _)| body.as_str()).collect();
    assert_eq!(bodies, ["first of old", "second of old", "new"]);
    assert_eq!(said[0].1, 1_767_258_000_000);
    assert_eq!(said[1].1, 1_767_258_003_000);
}
