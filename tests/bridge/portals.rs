//! XMPP MUCs as Matrix rooms: the peer plays a MUC at `lobby@prosody.test` (and others), and
//! Alice joins its portal `#_xmpp_lobby=40prosody.test:gw.test`.

use std::time::Duration;

use causeway_xmpp::stanza::Stanza;
use serde_json::json;
use tokio::sync::mpsc;
use xmpp_parsers::iq::Iq;
use xmpp_parsers::message::MessageType;

use crate::common::{self, Response};
use crate::world::*;

mod archive;
mod moderation;
mod plumbing;
mod presence;
mod private;
mod relations;

const BOB_HERE: &str = "@_xmpp_lobby=40prosody.test/=42ob:gw.test";

/// The next stanza the peer receives that `accept` takes (others are skipped).
async fn next_that(
    seen: &mut mpsc::UnboundedReceiver<Stanza>,
    accept: impl Fn(&Stanza) -> bool,
) -> Stanza {
    loop {
        let stanza = tokio::time::timeout(Duration::from_secs(10), seen.recv())
            .await
            .expect("a stanza in time")
            .unwrap();
        if accept(&stanza) {
            return stanza;
        }
    }
}

fn to_room(room: &'static str) -> impl Fn(&Stanza) -> bool {
    move |stanza: &Stanza| stanza.to().is_some_and(|to| to.to_bare().as_str() == room)
}

/// Answers the disco#info request about a MUC: a MUC named `name`, or `item-not-found`.
async fn answer_disco(
    world_peer: &std::sync::Arc<causeway_xmpp::server::S2s>,
    seen: &mut mpsc::UnboundedReceiver<Stanza>,
    room: &'static str,
    exists: bool,
) {
    let Stanza::Iq(Iq::Get { id, from, .. }) = next_that(seen, to_room(room)).await else {
        panic!("no disco#info request");
    };
    assert_eq!(from.unwrap().to_string(), "gw.test");
    let answer = if exists {
        format!(
            "<iq xmlns='jabber:server' type='result' id='{id}' from='{room}' to='gw.test'>\
             <query xmlns='http://jabber.org/protocol/disco#info'>\
             <identity category='conference' type='text' name='The Lobby'/>\
             <feature var='http://jabber.org/protocol/muc'/></query></iq>"
        )
    } else {
        format!(
            "<iq xmlns='jabber:server' type='error' id='{id}' from='{room}' to='gw.test'>\
             <error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
             </error></iq>"
        )
    };
    world_peer.send(stanza(&answer));
}

/// The next presence the peer receives for `room` (or one of its occupants).
async fn presence_to(
    seen: &mut mpsc::UnboundedReceiver<Stanza>,
    room: &'static str,
) -> xmpp_parsers::presence::Presence {
    let Stanza::Presence(presence) = next_that(seen, |s| {
        matches!(s, Stanza::Presence(_)) && to_room(room)(s)
    })
    .await
    else {
        unreachable!()
    };
    presence
}

/// The presence of a join of Alice's (it has the MUC's `<x>`).
async fn join_presence(
    seen: &mut mpsc::UnboundedReceiver<Stanza>,
    room: &'static str,
) -> xmpp_parsers::presence::Presence {
    let presence = presence_to(seen, room).await;
    assert_eq!(
        presence.from.as_ref().unwrap().to_string(),
        "alice@gw.test/causeway"
    );
    assert!(
        presence
            .payloads
            .iter()
            .any(|p| p.is("x", "http://jabber.org/protocol/muc"))
    );
    presence
}

/// The nickname a join asks for.
async fn join_request(seen: &mut mpsc::UnboundedReceiver<Stanza>, room: &'static str) -> String {
    let presence = join_presence(seen, room).await;
    presence.to.unwrap().resource().unwrap().to_string()
}

fn occupant_presence(room: &str, nick: &str, jid: &str, own: bool) -> Stanza {
    let status = if own { "<status code='110'/>" } else { "" };
    stanza(&format!(
        "<presence xmlns='jabber:server' from='{room}/{nick}' to='alice@gw.test/causeway'>\
         <x xmlns='http://jabber.org/protocol/muc#user'>\
         <item affiliation='none' role='participant' jid='{jid}'/>{status}</x></presence>"
    ))
}

/// The next message of `kind` the peer gets from Alice's occupant for `to` (the lobby, or one
/// of its occupants).
async fn next_from_alice(
    world: &mut World,
    kind: MessageType,
    to: &str,
) -> xmpp_parsers::message::Message {
    let Stanza::Message(message) = next_that(&mut world.seen, |s| {
        matches!(s, Stanza::Message(m) if m.type_ == kind
            && m.to.as_ref().is_some_and(|jid| jid.as_str() == to))
    })
    .await
    else {
        unreachable!()
    };
    assert_eq!(
        message.from.as_ref().unwrap().to_string(),
        "alice@gw.test/causeway"
    );
    message
}

/// The answer to a request for `user`'s member event in `room`.
async fn member_state(world: &World, token: &str, room: &str, user: &str) -> Response {
    world
        .server
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{room}/state/m.room.member/{}",
                common::encode(user)
            ),
            token,
        )
        .await
}

fn join_path(alias: &str) -> String {
    format!("/_matrix/client/v3/join/{}", common::encode(alias))
}

/// Alice joins the portal of `lobby@prosody.test`, where the MUC shows `others` (occupants'
/// presence, history) before her own presence, whose item is `own_item`. The portal's id.
async fn join_lobby(world: &mut World, token: &str, others: Vec<Stanza>, own_item: &str) -> String {
    let World {
        server, peer, seen, ..
    } = world;
    let peer = peer.clone();
    let play = async {
        answer_disco(&peer, seen, "lobby@prosody.test", true).await;
        assert_eq!(join_request(seen, "lobby@prosody.test").await, "alice");
        for stanza in others {
            peer.send(stanza);
        }
        peer.send(stanza(&format!(
            "<presence xmlns='jabber:server' from='lobby@prosody.test/alice' \
             to='alice@gw.test/causeway'><x xmlns='http://jabber.org/protocol/muc#user'>\
             {own_item}<status code='110'/></x></presence>"
        )));
    };
    let path = join_path("#_xmpp_lobby=40prosody.test:gw.test");
    let (joined, ()): (Response, ()) = tokio::join!(server.post(&path, token, json!({})), play);
    joined.assert_ok()["room_id"].as_str().unwrap().to_owned()
}

/// A new world where Alice has joined the lobby's portal as `join_lobby` does it: the world,
/// Alice's token, the portal.
async fn in_lobby(others: Vec<Stanza>, own_item: &str) -> (World, String, String) {
    let mut world = world().await;
    let token = world.token().await;
    let room = join_lobby(&mut world, &token, others, own_item).await;
    (world, token, room)
}

#[tokio::test]
async fn a_portal_is_made_joined_and_talked_in() {
    let mut world = world().await;
    let token = world.token().await;
    let World {
        server, peer, seen, ..
    } = &mut world;
    let peer = peer.clone();
    let paths: std::collections::HashMap<&str, String> = [
        "#_xmpp_lobby=40prosody.test:gw.test",
        "#_xmpp_nothere=40prosody.test:gw.test",
        "#_xmpp_closed=40prosody.test:gw.test",
        "#_xmpp_busy=40prosody.test:gw.test",
    ]
    .into_iter()
    .map(|alias| (alias, join_path(alias)))
    .collect();
    let play = async {
        answer_disco(&peer, seen, "lobby@prosody.test", true).await;
        let nick = join_request(seen, "lobby@prosody.test").await;
        assert_eq!(nick, "alice");
        peer.send(occupant_presence(
            "lobby@prosody.test",
            "Bob",
            "bob@prosody.test/phone",
            false,
        ));
        peer.send(stanza(
            "<message xmlns='jabber:server' type='groupchat' id='h1' from='lobby@prosody.test/Bob' \
             to='alice@gw.test/causeway'><body>said before</body>\
             <delay xmlns='urn:xmpp:delay' stamp='2026-01-01T10:00:00Z'/>\
             <stanza-id xmlns='urn:xmpp:sid:0' by='lobby@prosody.test' id='s-h1'/></message>",
        ));
        peer.send(occupant_presence(
            "lobby@prosody.test",
            "alice",
            "alice@gw.test/causeway",
            true,
        ));
    };
    let (joined, ()): (Response, ()) = tokio::join!(
        server.post(
            &paths["#_xmpp_lobby=40prosody.test:gw.test"],
            &token,
            json!({})
        ),
        play
    );
    let room = joined.assert_ok()["room_id"].as_str().unwrap().to_owned();
    // The portal is named after the MUC, and Bob is in it, with what he said before.
    let name = world
        .server
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/"),
            &token,
        )
        .await
        .assert_ok();
    assert_eq!(name["name"], "The Lobby");
    let before = world
        .wait_for(&token, &room, |events| {
            messages(events, BOB_HERE).first().map(|e| (*e).clone())
        })
        .await;
    assert_eq!(before["content"]["body"], "said before");
    // A message from the MUC, received twice (as by two members), is one event.
    for _ in 0..2 {
        world.peer.send(stanza(
            "<message xmlns='jabber:server' type='groupchat' id='m1' from='lobby@prosody.test/Bob' \
             to='alice@gw.test/causeway'><body>hello portal</body>\
             <stanza-id xmlns='urn:xmpp:sid:0' by='lobby@prosody.test' id='s-m1'/></message>",
        ));
    }
    let said = world
        .wait_for(&token, &room, |events| {
            let found: Vec<_> = messages(events, BOB_HERE)
                .into_iter()
                .filter(|e| e["content"]["body"] == "hello portal")
                .cloned()
                .collect();
            (!found.is_empty()).then_some(found)
        })
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let again = world
        .wait_for(&token, &room, |events| {
            Some(
                messages(events, BOB_HERE)
                    .into_iter()
                    .filter(|e| e["content"]["body"] == "hello portal")
                    .count(),
            )
        })
        .await;
    assert_eq!((said.len(), again), (1, 1));
    // Alice writes: the MUC gets it from her JID, with the event as id; its reflection is not
    // shown again.
    let sent = world
        .server
        .send_text(&token, &room, "a1", "hi Bob")
        .await
        .assert_ok();
    let event = sent["event_id"].as_str().unwrap().to_owned();
    let out = next_that(&mut world.seen, |s| {
        matches!(s, Stanza::Message(m) if m.type_ == MessageType::Groupchat)
            && to_room("lobby@prosody.test")(s)
    })
    .await;
    let Stanza::Message(out) = out else {
        unreachable!()
    };
    assert_eq!(
        out.from.as_ref().unwrap().to_string(),
        "alice@gw.test/causeway"
    );
    assert_eq!(out.id.as_ref().unwrap().0, event);
    assert_eq!(body(&out), "hi Bob");
    world.peer.send(stanza(&format!(
        "<message xmlns='jabber:server' type='groupchat' id='{event}' from='lobby@prosody.test/alice' \
         to='alice@gw.test/causeway'><body>hi Bob</body>\
         <origin-id xmlns='urn:xmpp:sid:0' id='{event}'/>\
         <stanza-id xmlns='urn:xmpp:sid:0' by='lobby@prosody.test' id='s-a1'/></message>"
    )));
    // Bob replies to it by the room's id: the reply is related to Alice's event.
    world.peer.send(stanza(
        "<message xmlns='jabber:server' type='groupchat' id='m2' from='lobby@prosody.test/Bob' \
         to='alice@gw.test/causeway'><body>hi Alice</body>\
         <reply xmlns='urn:xmpp:reply:0' id='s-a1'/></message>",
    ));
    let reply = world
        .wait_for(&token, &room, |events| {
            messages(events, BOB_HERE)
                .into_iter()
                .find(|e| e["content"]["body"] == "hi Alice")
                .cloned()
        })
        .await;
    assert_eq!(
        reply["content"]["m.relates_to"]["m.in_reply_to"]["event_id"],
        event.as_str()
    );
    let alices = world
        .wait_for(&token, &room, |events| {
            Some(messages(events, &world.alice).len())
        })
        .await;
    assert_eq!(alices, 1, "the reflection is not a second message");
    // The subject is the topic, set by the MUC's ghost.
    world.peer.send(stanza(
        "<message xmlns='jabber:server' type='groupchat' id='t1' from='lobby@prosody.test/Bob' \
         to='alice@gw.test/causeway'><subject>Lobby talk</subject></message>",
    ));
    let topic = world
        .wait_for(&token, &room, |events| {
            events.iter().find(|e| e["type"] == "m.room.topic").cloned()
        })
        .await;
    assert_eq!(topic["content"]["topic"], "Lobby talk");
    assert_eq!(topic["sender"], "@_xmpp_lobby=40prosody.test:gw.test");
    // Bob leaves: his ghost leaves the portal.
    world.peer.send(stanza(
        "<presence xmlns='jabber:server' type='unavailable' from='lobby@prosody.test/Bob' \
         to='alice@gw.test/causeway'><x xmlns='http://jabber.org/protocol/muc#user'>\
         <item affiliation='none' role='none'/></x></presence>",
    ));
    world.wait_member(&token, &room, BOB_HERE, "leave").await;
    // The MUC kicks Alice: she is out of the portal, told why.
    world.peer.send(stanza(
        "<presence xmlns='jabber:server' type='unavailable' from='lobby@prosody.test/alice' \
         to='alice@gw.test/causeway'><x xmlns='http://jabber.org/protocol/muc#user'>\
         <item affiliation='none' role='none'><reason>flooding</reason></item>\
         <status code='307'/><status code='110'/></x></presence>",
    ));
    let kicked = world
        .wait_for(&token, &room, |events| {
            events
                .iter()
                .find(|e| {
                    e["state_key"] == world.alice.as_str() && e["content"]["membership"] == "leave"
                })
                .cloned()
        })
        .await;
    assert_eq!(kicked["content"]["reason"], "flooding");
}

#[tokio::test]
async fn joins_of_portals_fail_as_their_mucs_say() {
    let mut world = world().await;
    let token = world.token().await;
    let World {
        server, peer, seen, ..
    } = &mut world;
    let peer = peer.clone();
    let paths: std::collections::HashMap<&str, String> = [
        "#_xmpp_lobby=40prosody.test:gw.test",
        "#_xmpp_nothere=40prosody.test:gw.test",
        "#_xmpp_closed=40prosody.test:gw.test",
        "#_xmpp_busy=40prosody.test:gw.test",
    ]
    .into_iter()
    .map(|alias| (alias, join_path(alias)))
    .collect();
    // A MUC that does not exist: M_NOT_FOUND, and no room is made.
    let (missing, ()) = tokio::join!(
        server.post(
            &paths["#_xmpp_nothere=40prosody.test:gw.test"],
            &token,
            json!({})
        ),
        answer_disco(&peer, seen, "nothere@prosody.test", false)
    );
    missing.assert_error(404, "M_NOT_FOUND");
    // A members-only MUC: M_FORBIDDEN with its text; Alice is not in the portal.
    let play = async {
        answer_disco(&peer, seen, "closed@prosody.test", true).await;
        join_request(seen, "closed@prosody.test").await;
        peer.send(stanza(
            "<presence xmlns='jabber:server' type='error' from='closed@prosody.test/alice' \
             to='alice@gw.test/causeway'><x xmlns='http://jabber.org/protocol/muc'/>\
             <error type='auth'><registration-required xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
             <text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>Members only</text></error></presence>",
        ));
    };
    let (closed, ()) = tokio::join!(
        server.post(
            &paths["#_xmpp_closed=40prosody.test:gw.test"],
            &token,
            json!({})
        ),
        play
    );
    closed.assert_error(403, "M_FORBIDDEN");
    assert!(
        closed.json()["error"]
            .as_str()
            .unwrap()
            .contains("Members only")
    );
    // A nickname taken: the next one the mapping gives is tried.
    let play = async {
        answer_disco(&peer, seen, "busy@prosody.test", true).await;
        let first = join_request(seen, "busy@prosody.test").await;
        assert_eq!(first, "alice");
        peer.send(stanza(
            "<presence xmlns='jabber:server' type='error' from='busy@prosody.test/alice' \
             to='alice@gw.test/causeway'><error type='cancel'>\
             <conflict xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></presence>",
        ));
        let second = join_request(seen, "busy@prosody.test").await;
        assert_eq!(second, "alice (@alice:gw.test)");
        peer.send(occupant_presence(
            "busy@prosody.test",
            "alice (@alice:gw.test)",
            "alice@gw.test/causeway",
            true,
        ));
    };
    let (busy, ()) = tokio::join!(
        server.post(
            &paths["#_xmpp_busy=40prosody.test:gw.test"],
            &token,
            json!({})
        ),
        play
    );
    busy.assert_ok();
    // A portal alias that is no MUC address at all names nothing.
    world
        .server
        .get(
            "/_matrix/client/v3/directory/room/%23_xmpp_not-escaped:gw.test",
            &token,
        )
        .await
        .assert_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn self_pings_find_a_member_the_muc_lost_and_join_again() {
    let mut world = world_with(|config| config.xmpp.muc_self_ping_secs = 1).await;
    let token = world.token().await;
    let room = join_lobby(
        &mut world,
        &token,
        vec![stanza(
            "<message xmlns='jabber:server' type='groupchat' id='m1' from='lobby@prosody.test/Bob' \
             to='alice@gw.test/causeway'><body>before</body>\
             <stanza-id xmlns='urn:xmpp:sid:0' by='lobby@prosody.test' id='s-m1'/></message>",
        )],
        "<item affiliation='none' role='participant'/>",
    )
    .await;
    world
        .wait_for(&token, &room, |events| {
            (!messages(events, BOB_HERE).is_empty()).then_some(())
        })
        .await;
    let ping = |s: &Stanza| matches!(s, Stanza::Iq(Iq::Get { payload, .. }) if payload.is("ping", "urn:xmpp:ping"));
    // The MUC still has her: nothing more happens.
    let Stanza::Iq(Iq::Get { id, from, to, .. }) = next_that(&mut world.seen, ping).await else {
        unreachable!()
    };
    assert_eq!(
        (from.unwrap().to_string(), to.unwrap().to_string()),
        (
            "alice@gw.test/causeway".to_owned(),
            "lobby@prosody.test/alice".to_owned()
        )
    );
    world.peer.send(stanza(&format!(
        "<iq xmlns='jabber:server' type='result' id='{id}' from='lobby@prosody.test/alice' \
         to='alice@gw.test/causeway'/>"
    )));
    // The MUC's service shuts down (332): she stays in the portal, to join again once it is
    // back.
    world.peer.send(stanza(
        "<presence xmlns='jabber:server' type='unavailable' from='lobby@prosody.test/alice' \
         to='alice@gw.test/causeway'><x xmlns='http://jabber.org/protocol/muc#user'>\
         <item affiliation='none' role='none'><reason>system shutdown</reason></item>\
         <status code='110'/><status code='332'/></x></presence>",
    ));
    // The MUC restarted and lost her: she joins again, asking for what she missed since the
    // last message she got. (Until then, the next thing the MUC gets is the next ping, not
    // a join.)
    let next = next_that(&mut world.seen, to_room("lobby@prosody.test")).await;
    assert!(ping(&next), "{next:?}");
    let Stanza::Iq(Iq::Get { id, .. }) = next else {
        unreachable!()
    };
    world.peer.send(stanza(&format!(
        "<iq xmlns='jabber:server' type='error' id='{id}' from='lobby@prosody.test/alice' \
         to='alice@gw.test/causeway'><error type='cancel'>\
         <not-acceptable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
    )));
    let Stanza::Presence(join) = next_that(&mut world.seen, |s| {
        matches!(s, Stanza::Presence(_)) && to_room("lobby@prosody.test")(s)
    })
    .await
    else {
        unreachable!()
    };
    assert_eq!(join.to.unwrap().to_string(), "lobby@prosody.test/alice");
    let history = join
        .payloads
        .iter()
        .find(|p| p.is("x", "http://jabber.org/protocol/muc"))
        .and_then(|x| x.get_child("history", "http://jabber.org/protocol/muc"))
        .expect("history asked for");
    assert!(history.attr("since").is_some(), "{history:?}");
    let member = member_state(&world, &token, &room, &world.alice)
        .await
        .assert_ok();
    assert_eq!(member["membership"], "join", "{member}");
}

#[tokio::test]
async fn the_mucs_name_and_avatar_are_the_portals() {
    let (mut world, token, room) =
        in_lobby(vec![], "<item affiliation='none' role='participant'/>").await;
    // The MUC says its configuration changed: it is asked what it is now, and for the avatar
    // its disco#info announces.
    world.peer.send(stanza(
        "<message xmlns='jabber:server' type='groupchat' from='lobby@prosody.test' \
         to='alice@gw.test/causeway'><x xmlns='http://jabber.org/protocol/muc#user'>\
         <status code='104'/></x></message>",
    ));
    let image = b"\x89PNG\r\n\x1a\nthe lobby's picture".to_vec();
    let hash: String = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &image)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let Stanza::Iq(Iq::Get { id, .. }) =
        next_that(&mut world.seen, to_room("lobby@prosody.test")).await
    else {
        panic!("no disco#info request");
    };
    world.peer.send(stanza(&format!(
        "<iq xmlns='jabber:server' type='result' id='{id}' from='lobby@prosody.test' to='gw.test'>\
         <query xmlns='http://jabber.org/protocol/disco#info'>\
         <identity category='conference' type='text' name='The New Lobby'/>\
         <feature var='http://jabber.org/protocol/muc'/>\
         <x xmlns='jabber:x:data' type='result'>\
         <field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/muc#roominfo</value></field>\
         <field var='muc#roominfo_avatarhash' type='text-multi'><value>{hash}</value></field>\
         </x></query></iq>"
    )));
    let Stanza::Iq(Iq::Get { id, payload, .. }) =
        next_that(&mut world.seen, to_room("lobby@prosody.test")).await
    else {
        panic!("no vCard request");
    };
    assert!(payload.is("vCard", "vcard-temp"));
    let encoded = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(&image)
    };
    world.peer.send(stanza(&format!(
        "<iq xmlns='jabber:server' type='result' id='{id}' from='lobby@prosody.test' to='gw.test'>\
         <vCard xmlns='vcard-temp'><PHOTO><TYPE>image/png</TYPE><BINVAL>{encoded}</BINVAL></PHOTO>\
         </vCard></iq>"
    )));
    let avatar = world
        .wait_for(&token, &room, |events| {
            events
                .iter()
                .find(|e| e["type"] == "m.room.avatar")
                .cloned()
        })
        .await;
    assert_eq!(avatar["sender"], "@_xmpp_lobby=40prosody.test:gw.test");
    assert_eq!(avatar["content"]["info"]["mimetype"], "image/png");
    let name = world
        .server
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/"),
            &token,
        )
        .await
        .assert_ok();
    assert_eq!(name["name"], "The New Lobby");
    let url = avatar["content"]["url"].as_str().unwrap();
    let media = world
        .server
        .get(
            &format!(
                "/_matrix/client/v1/media/download/{}",
                url.trim_start_matches("mxc://")
            ),
            &token,
        )
        .await;
    assert_eq!(media.body, image);
}
