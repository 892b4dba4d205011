//! Matrix rooms as MUCs: XMPP users of the peer join a room of the server as
//! `room@muc.gw.test/Nick` and take part in it.

use causeway_xmpp::stanza::Stanza;
use minidom::Element;
use serde_json::json;
use xmpp_parsers::message::{Message, MessageType};
use xmpp_parsers::presence::Presence;

use crate::world::*;

const MUC_USER: &str = "http://jabber.org/protocol/muc#user";

/// The next stanza from the MUC service (others, such as presence of accounts, are skipped).
async fn from_rooms(world: &mut World) -> Stanza {
    loop {
        let stanza = world.next().await;
        if stanza
            .from()
            .is_some_and(|from| from.domain().as_str() == "muc.gw.test")
        {
            return stanza;
        }
    }
}

async fn next_room_presence(world: &mut World) -> Presence {
    loop {
        if let Stanza::Presence(presence) = from_rooms(world).await {
            return presence;
        }
    }
}

async fn next_room_message(world: &mut World) -> Message {
    loop {
        if let Stanza::Message(message) = from_rooms(world).await {
            return message;
        }
    }
}

/// The status codes of a MUC presence.
fn statuses(presence: &Presence) -> Vec<String> {
    presence
        .payloads
        .iter()
        .filter(|p| p.is("x", MUC_USER))
        .flat_map(|x| x.children().filter(|c| c.name() == "status"))
        .filter_map(|status| status.attr("code").map(str::to_owned))
        .collect()
}

fn item(presence: &Presence) -> Element {
    presence
        .payloads
        .iter()
        .find(|p| p.is("x", MUC_USER))
        .and_then(|x| x.get_child("item", MUC_USER))
        .cloned()
        .unwrap_or_else(|| panic!("no item in {presence:?}"))
}

fn join(from: &str, to: &str, history: &str) -> Stanza {
    stanza(&format!(
        "<presence xmlns='jabber:server' from='{from}' to='{to}'>\
         <x xmlns='http://jabber.org/protocol/muc'>{history}</x></presence>"
    ))
}

fn groupchat(from: &str, to: &str, id: &str, inner: &str) -> Stanza {
    stanza(&format!(
        "<message xmlns='jabber:server' type='groupchat' id='{id}' from='{from}' to='{to}'>\
         {inner}</message>"
    ))
}

/// The condition of an error stanza's payload.
fn condition(payloads: &[Element]) -> String {
    payloads
        .iter()
        .find(|p| p.name() == "error")
        .and_then(|error| {
            error
                .children()
                .find(|c| c.ns() == "urn:ietf:params:xml:ns:xmpp-stanzas" && c.name() != "text")
                .map(|c| c.name().to_owned())
        })
        .unwrap_or_default()
}

/// Alice's public room `#lobby:gw.test`, with a topic.
async fn lobby(world: &World, token: &str) -> String {
    world
        .server
        .create_room(
            token,
            json!({"preset": "public_chat", "room_alias_name": "lobby", "name": "Lobby",
                   "topic": "Welcome", "visibility": "public"}),
        )
        .await
}

#[tokio::test]
async fn an_xmpp_user_joins_a_room_and_talks_in_it() {
    let mut world = world().await;
    let token = world.token().await;
    let room = lobby(&world, &token).await;
    for (n, text) in ["one", "two", "three"].iter().enumerate() {
        world
            .server
            .send_text(&token, &room, &format!("t{n}"), text)
            .await
            .assert_ok();
    }
    world.peer.send(join(
        "bob@prosody.test/phone",
        "lobby@muc.gw.test/Bob",
        "<history maxstanzas='2'/>",
    ));
    // First the other occupants, then Bob himself, then the history, then the subject.
    let alice = next_room_presence(&mut world).await;
    assert_eq!(
        alice.from.as_ref().unwrap().to_string(),
        "lobby@muc.gw.test/alice"
    );
    assert_eq!(
        alice.to.as_ref().unwrap().to_string(),
        "bob@prosody.test/phone"
    );
    let alice_item = item(&alice);
    assert_eq!(alice_item.attr("affiliation"), Some("owner"));
    assert_eq!(alice_item.attr("role"), Some("moderator"));
    assert_eq!(alice_item.attr("jid"), Some("alice@gw.test"));
    assert!(statuses(&alice).is_empty());
    let alice_occupant_id = alice
        .payloads
        .iter()
        .find(|p| p.is("occupant-id", "urn:xmpp:occupant-id:0"))
        .and_then(|p| p.attr("id"))
        .unwrap()
        .to_owned();
    let me = next_room_presence(&mut world).await;
    assert_eq!(
        me.from.as_ref().unwrap().to_string(),
        "lobby@muc.gw.test/Bob"
    );
    let mut codes = statuses(&me);
    codes.sort();
    assert_eq!(codes, ["100", "110", "170"]);
    assert_eq!(item(&me).attr("role"), Some("participant"));
    assert_eq!(item(&me).attr("jid"), Some("bob@prosody.test/phone"));
    let first = next_room_message(&mut world).await;
    let second = next_room_message(&mut world).await;
    for (message, text) in [(&first, "two"), (&second, "three")] {
        assert_eq!(message.type_, MessageType::Groupchat);
        assert_eq!(body(message), text);
        assert_eq!(
            message.from.as_ref().unwrap().to_string(),
            "lobby@muc.gw.test/alice"
        );
        let delay = payload(message, "delay", "urn:xmpp:delay");
        assert_eq!(delay.attr("from"), Some("lobby@muc.gw.test"));
        let stanza_id = payload(message, "stanza-id", "urn:xmpp:sid:0");
        assert_eq!(stanza_id.attr("by"), Some("lobby@muc.gw.test"));
        assert!(stanza_id.attr("id").unwrap().starts_with('$'));
        assert_eq!(
            payload(message, "occupant-id", "urn:xmpp:occupant-id:0").attr("id"),
            Some(alice_occupant_id.as_str())
        );
    }
    let subject = next_room_message(&mut world).await;
    assert_eq!(
        subject.subjects.values().next().map(String::as_str),
        Some("Welcome")
    );
    assert!(subject.bodies.is_empty());
    // In Matrix, Bob's ghost joined with his nickname as its name in the room.
    world.wait_member(&token, &room, BOB, "join").await;
    let member = world
        .server
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.member/{BOB}"),
            &token,
        )
        .await
        .assert_ok();
    assert_eq!(member["displayname"], "Bob");

    // Bob writes: the room has it from his ghost, and he gets it back with the room's id.
    world.peer.send(groupchat(
        "bob@prosody.test/phone",
        "lobby@muc.gw.test",
        "g1",
        "<body>hello *room*</body><origin-id xmlns='urn:xmpp:sid:0' id='g1'/>",
    ));
    let event = world
        .wait_for(&token, &room, |events| {
            messages(events, BOB).first().map(|e| (*e).clone())
        })
        .await;
    assert_eq!(event["content"]["body"], "hello *room*");
    assert_eq!(
        event["content"]["formatted_body"],
        "hello <strong>room</strong>"
    );
    let reflection = next_room_message(&mut world).await;
    assert_eq!(reflection.id.as_ref().unwrap().0, "g1");
    assert_eq!(body(&reflection), "hello *room*");
    assert_eq!(
        reflection.from.as_ref().unwrap().to_string(),
        "lobby@muc.gw.test/Bob"
    );
    assert_eq!(
        payload(&reflection, "stanza-id", "urn:xmpp:sid:0").attr("id"),
        event["event_id"].as_str()
    );
    assert_eq!(
        payload(&reflection, "origin-id", "urn:xmpp:sid:0").attr("id"),
        Some("g1")
    );
    // The same id again is the same message.
    world.peer.send(groupchat(
        "bob@prosody.test/phone",
        "lobby@muc.gw.test",
        "g1",
        "<body>hello *room*</body>",
    ));

    // Alice answers, replying to Bob by the room's id of his message.
    let answer = world
        .server
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/a1"),
            &token,
            json!({"msgtype": "m.text", "body": "hi Bob",
                   "m.relates_to": {"m.in_reply_to": {"event_id": event["event_id"]}}}),
        )
        .await
        .assert_ok();
    let message = next_room_message(&mut world).await;
    assert_eq!(
        message.from.as_ref().unwrap().to_string(),
        "lobby@muc.gw.test/alice"
    );
    assert!(body(&message).ends_with("hi Bob"), "{message:?}");
    assert_eq!(
        message.id.as_ref().unwrap().0,
        answer["event_id"].as_str().unwrap()
    );
    assert_eq!(
        payload(&message, "reply", "urn:xmpp:reply:0").attr("id"),
        event["event_id"].as_str()
    );
    // Bob reacts to it by its stanza id.
    world.peer.send(groupchat(
        "bob@prosody.test/phone",
        "lobby@muc.gw.test",
        "r1",
        &format!(
            "<reactions xmlns='urn:xmpp:reactions:0' id='{}'><reaction>👍</reaction></reactions>",
            answer["event_id"].as_str().unwrap()
        ),
    ));
    world
        .wait_for(&token, &room, |events| {
            events
                .iter()
                .any(|e| {
                    e["type"] == "m.reaction"
                        && e["sender"] == BOB
                        && e["content"]["m.relates_to"]["event_id"] == answer["event_id"]
                })
                .then_some(())
        })
        .await;
    let reaction = next_room_message(&mut world).await;
    assert_eq!(
        payload(&reaction, "reactions", "urn:xmpp:reactions:0").attr("id"),
        answer["event_id"].as_str()
    );

    // A new topic is the room's subject.
    world
        .server
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.topic/"),
            &token,
            json!({"topic": "Lunch at noon"}),
        )
        .await
        .assert_ok();
    let subject = next_room_message(&mut world).await;
    assert_eq!(
        subject.subjects.values().next().map(String::as_str),
        Some("Lunch at noon")
    );
    // Bob may not set the topic: in a public room, that takes power level 50.
    world.peer.send(groupchat(
        "bob@prosody.test/phone",
        "lobby@muc.gw.test",
        "s1",
        "<subject>Mine</subject>",
    ));
    let refused = next_room_message(&mut world).await;
    assert_eq!(refused.type_, MessageType::Error);
    assert_eq!(condition(&refused.payloads), "forbidden");

    // Bob leaves: he is told, and his ghost leaves the room.
    world.peer.send(stanza(
        "<presence xmlns='jabber:server' type='unavailable' from='bob@prosody.test/phone' \
         to='lobby@muc.gw.test/Bob'/>",
    ));
    let gone = next_room_presence(&mut world).await;
    assert_eq!(gone.type_, xmpp_parsers::presence::Type::Unavailable);
    assert_eq!(statuses(&gone), ["110"]);
    world.wait_member(&token, &room, BOB, "leave").await;
    // No longer an occupant, he may not write to it.
    world.peer.send(groupchat(
        "bob@prosody.test/phone",
        "lobby@muc.gw.test",
        "g2",
        "<body>still here?</body>",
    ));
    let refused = next_room_message(&mut world).await;
    assert_eq!(condition(&refused.payloads), "not-acceptable");
}

#[tokio::test]
async fn joins_that_cannot_be_get_the_right_error() {
    let mut world = world().await;
    let token = world.token().await;
    let open = lobby(&world, &token).await;
    let private = world
        .server
        .create_room(
            &token,
            json!({"preset": "private_chat", "room_alias_name": "private"}),
        )
        .await;
    let encrypted = world
        .server
        .create_room(
            &token,
            json!({"preset": "public_chat", "room_alias_name": "secret",
                   "initial_state": [{"type": "m.room.encryption", "state_key": "",
                                      "content": {"algorithm": "m.megolm.v1.aes-sha2"}}]}),
        )
        .await;
    let _ = (&private, &encrypted);
    // Carol is banned from the open room.
    world
        .server
        .post(
            &format!("/_matrix/client/v3/rooms/{open}/ban"),
            &token,
            json!({"user_id": CAROL, "reason": "spam"}),
        )
        .await
        .assert_ok();
    let cases = [
        (
            "bob@prosody.test/a",
            "nowhere@muc.gw.test/Bob",
            "",
            "item-not-found",
        ),
        (
            "bob@prosody.test/a",
            "private@muc.gw.test/Bob",
            "",
            "registration-required",
        ),
        (
            "bob@prosody.test/a",
            "secret@muc.gw.test/Bob",
            "",
            "not-acceptable",
        ),
        (
            "carol@prosody.test/a",
            "lobby@muc.gw.test/Carol",
            "",
            "forbidden",
        ),
        (
            "bob@prosody.test/a",
            "lobby@muc.gw.test/alice",
            "",
            "conflict",
        ),
        (
            "bob@prosody.test/a",
            "lobby@muc.gw.test/Bob",
            "<history maxstanzas='many'/>",
            "bad-request",
        ),
        (
            "bob@prosody.test/a",
            "!nosuchroom%gw.test@muc.gw.test/Bob",
            "",
            "item-not-found",
        ),
    ];
    for (from, to, history, expected) in cases {
        world.peer.send(join(from, to, history));
        let answer = next_room_presence(&mut world).await;
        assert_eq!(
            answer.type_,
            xmpp_parsers::presence::Type::Error,
            "{to}: {answer:?}"
        );
        assert_eq!(condition(&answer.payloads), expected, "{to}");
        assert_eq!(
            answer.from.as_ref().unwrap().to_string().to_lowercase(),
            to.to_lowercase()
        );
    }
    // A join without a nickname cannot be answered as a MUC join: the room says so.
    world.peer.send(stanza(
        "<presence xmlns='jabber:server' from='bob@prosody.test/a' to='lobby@muc.gw.test'>\
         <x xmlns='http://jabber.org/protocol/muc'/></presence>",
    ));
    let answer = next_room_presence(&mut world).await;
    assert_eq!(condition(&answer.payloads), "jid-malformed");
    // None of this made Bob a member of anything; the room still works for him.
    world
        .peer
        .send(join("bob@prosody.test/a", "lobby@muc.gw.test/Bob", ""));
    let mut presences = vec![];
    while presences.len() < 2 {
        presences.push(next_room_presence(&mut world).await);
    }
    assert!(statuses(&presences[1]).contains(&"110".to_owned()));
    let subject = next_room_message(&mut world).await;
    assert!(!subject.subjects.is_empty());
    let members = world
        .server
        .get(
            &format!("/_matrix/client/v3/rooms/{open}/joined_members"),
            &token,
        )
        .await
        .assert_ok();
    assert!(members["joined"].get(BOB).is_some());
    assert!(members["joined"].get(CAROL).is_none());
}

#[tokio::test]
async fn kicks_bans_and_nicknames_reach_the_occupants() {
    let mut world = world().await;
    let token = world.token().await;
    let room = lobby(&world, &token).await;
    world.peer.send(join(
        "bob@prosody.test/phone",
        "lobby@muc.gw.test/Bob",
        "<history maxstanzas='0'/>",
    ));
    // alice, Bob, subject.
    for _ in 0..2 {
        next_room_presence(&mut world).await;
    }
    next_room_message(&mut world).await;
    world.peer.send(join(
        "carol@prosody.test/pc",
        "lobby@muc.gw.test/Carol",
        "<history maxstanzas='0'/>",
    ));
    // Bob learns of Carol; Carol gets alice, Bob and herself.
    let mut seen: Vec<(String, String, Vec<String>)> = Vec::new();
    while seen.len() < 4 {
        let presence = next_room_presence(&mut world).await;
        seen.push((
            presence.to.as_ref().unwrap().to_string(),
            presence.from.as_ref().unwrap().to_string(),
            statuses(&presence),
        ));
    }
    assert!(seen.contains(&(
        "bob@prosody.test/phone".into(),
        "lobby@muc.gw.test/Carol".into(),
        vec![]
    )));
    assert!(seen.contains(&(
        "carol@prosody.test/pc".into(),
        "lobby@muc.gw.test/Bob".into(),
        vec![]
    )));
    let subject = next_room_message(&mut world).await;
    assert_eq!(
        subject.to.as_ref().unwrap().to_string(),
        "carol@prosody.test/pc"
    );

    // Bob takes another nickname: everyone sees 303, he with 110.
    world.peer.send(join(
        "bob@prosody.test/phone",
        "lobby@muc.gw.test/Robert",
        "",
    ));
    let mut changes = Vec::new();
    while changes.len() < 4 {
        changes.push(next_room_presence(&mut world).await);
    }
    let to_bob: Vec<&Presence> = changes
        .iter()
        .filter(|p| p.to.as_ref().unwrap().to_string() == "bob@prosody.test/phone")
        .collect();
    assert_eq!(to_bob.len(), 2);
    let mut codes = statuses(to_bob[0]);
    codes.sort();
    assert_eq!(codes, ["110", "303"]);
    assert_eq!(item(to_bob[0]).attr("nick"), Some("Robert"));
    assert_eq!(
        to_bob[1].from.as_ref().unwrap().to_string(),
        "lobby@muc.gw.test/Robert"
    );
    world
        .wait_for(&token, &room, |events| {
            events
                .iter()
                .any(|e| e["state_key"] == BOB && e["content"]["displayname"] == "Robert")
                .then_some(())
        })
        .await;

    // Alice kicks Bob in Matrix: he is out with 307, Carol sees it.
    world
        .server
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/kick"),
            &token,
            json!({"user_id": BOB, "reason": "be nice"}),
        )
        .await
        .assert_ok();
    let mut kicked = Vec::new();
    while kicked.len() < 2 {
        kicked.push(next_room_presence(&mut world).await);
    }
    for presence in &kicked {
        assert_eq!(presence.type_, xmpp_parsers::presence::Type::Unavailable);
        assert_eq!(
            presence.from.as_ref().unwrap().to_string(),
            "lobby@muc.gw.test/Robert"
        );
        let codes = statuses(presence);
        assert!(codes.contains(&"307".to_owned()), "{codes:?}");
        let own = presence.to.as_ref().unwrap().to_string() == "bob@prosody.test/phone";
        assert_eq!(codes.contains(&"110".to_owned()), own);
        let reason = item(presence)
            .get_child("reason", MUC_USER)
            .map(|r| r.text());
        assert_eq!(reason.as_deref(), Some("be nice"));
    }
    // Bob is no occupant any more.
    world.peer.send(stanza(
        "<iq xmlns='jabber:server' type='get' id='sp1' from='bob@prosody.test/phone' \
         to='lobby@muc.gw.test/Robert'><ping xmlns='urn:xmpp:ping'/></iq>",
    ));
    let Stanza::Iq(answer) = from_rooms(&mut world).await else {
        panic!("no answer to the self-ping");
    };
    assert!(
        matches!(answer, xmpp_parsers::iq::Iq::Error { .. }),
        "{answer:?}"
    );
    // Carol's self-ping is answered.
    world.peer.send(stanza(
        "<iq xmlns='jabber:server' type='get' id='sp2' from='carol@prosody.test/pc' \
         to='lobby@muc.gw.test/Carol'><ping xmlns='urn:xmpp:ping'/></iq>",
    ));
    let Stanza::Iq(answer) = from_rooms(&mut world).await else {
        panic!("no answer to the self-ping");
    };
    assert!(
        matches!(answer, xmpp_parsers::iq::Iq::Result { .. }),
        "{answer:?}"
    );

    // Banned, Carol is out with 301.
    world
        .server
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/ban"),
            &token,
            json!({"user_id": CAROL}),
        )
        .await
        .assert_ok();
    let banned = next_room_presence(&mut world).await;
    let mut codes = statuses(&banned);
    codes.sort();
    assert_eq!(codes, ["110", "301"]);
    assert_eq!(item(&banned).attr("affiliation"), Some("outcast"));
}

#[tokio::test]
async fn the_service_and_its_rooms_are_discoverable() {
    let mut world = world().await;
    let token = world.token().await;
    lobby(&world, &token).await;
    for name in ["alpha", "beta", "gamma"] {
        world
            .server
            .create_room(
                &token,
                json!({"preset": "public_chat", "room_alias_name": name, "visibility": "public"}),
            )
            .await;
    }
    // A room not in the directory is not listed.
    world
        .server
        .create_room(
            &token,
            json!({"preset": "public_chat", "room_alias_name": "unlisted"}),
        )
        .await;
    let ask = |id: &str, to: &str, query: &str| {
        stanza(&format!(
            "<iq xmlns='jabber:server' type='get' id='{id}' from='bob@prosody.test/a' \
             to='{to}'>{query}</iq>"
        ))
    };
    world.peer.send(ask(
        "d1",
        "muc.gw.test",
        "<query xmlns='http://jabber.org/protocol/disco#info'/>",
    ));
    let Stanza::Iq(xmpp_parsers::iq::Iq::Result {
        payload: Some(info),
        ..
    }) = from_rooms(&mut world).await
    else {
        panic!("no disco#info");
    };
    let identity = info
        .get_child("identity", "http://jabber.org/protocol/disco#info")
        .unwrap();
    assert_eq!(identity.attr("category"), Some("conference"));
    assert!(
        info.children()
            .any(|f| f.attr("var") == Some("http://jabber.org/protocol/muc"))
    );

    // Two pages of two.
    world.peer.send(ask(
        "d2",
        "muc.gw.test",
        "<query xmlns='http://jabber.org/protocol/disco#items'>\
         <set xmlns='http://jabber.org/protocol/rsm'><max>2</max></set></query>",
    ));
    let page = |stanza: Stanza| -> (Vec<String>, Element) {
        let Stanza::Iq(xmpp_parsers::iq::Iq::Result {
            payload: Some(items),
            ..
        }) = stanza
        else {
            panic!("no disco#items: {stanza:?}");
        };
        let jids = items
            .children()
            .filter(|c| c.name() == "item")
            .map(|c| c.attr("jid").unwrap().to_owned())
            .collect();
        let set = items
            .get_child("set", "http://jabber.org/protocol/rsm")
            .unwrap()
            .clone();
        (jids, set)
    };
    let (first, set) = page(from_rooms(&mut world).await);
    assert_eq!(first, ["alpha@muc.gw.test", "beta@muc.gw.test"]);
    assert_eq!(
        set.get_child("count", "http://jabber.org/protocol/rsm")
            .unwrap()
            .text(),
        "4"
    );
    let last = set
        .get_child("last", "http://jabber.org/protocol/rsm")
        .unwrap()
        .text();
    world.peer.send(ask(
        "d3",
        "muc.gw.test",
        &format!(
            "<query xmlns='http://jabber.org/protocol/disco#items'>\
             <set xmlns='http://jabber.org/protocol/rsm'><max>2</max><after>{last}</after></set></query>"
        ),
    ));
    let (second, _) = page(from_rooms(&mut world).await);
    assert_eq!(second, ["gamma@muc.gw.test", "lobby@muc.gw.test"]);

    // The room's own information.
    world.peer.send(ask(
        "d4",
        "lobby@muc.gw.test",
        "<query xmlns='http://jabber.org/protocol/disco#info'/>",
    ));
    let Stanza::Iq(xmpp_parsers::iq::Iq::Result {
        payload: Some(info),
        ..
    }) = from_rooms(&mut world).await
    else {
        panic!("no disco#info of the room");
    };
    let features: Vec<&str> = info
        .children()
        .filter(|c| c.name() == "feature")
        .filter_map(|c| c.attr("var"))
        .collect();
    for feature in [
        "muc_public",
        "muc_open",
        "muc_nonanonymous",
        "muc_persistent",
        "urn:xmpp:occupant-id:0",
    ] {
        assert!(
            features.contains(&feature),
            "{feature} missing: {features:?}"
        );
    }
    let identity = info
        .get_child("identity", "http://jabber.org/protocol/disco#info")
        .unwrap();
    assert_eq!(identity.attr("name"), Some("Lobby"));
    let form = info.get_child("x", "jabber:x:data").unwrap();
    let field = |var: &str| {
        form.children()
            .find(|f| f.attr("var") == Some(var))
            .and_then(|f| f.children().next())
            .map(|v| v.text())
    };
    assert_eq!(
        field("muc#roominfo_description").as_deref(),
        Some("Welcome")
    );
    assert_eq!(field("muc#roominfo_occupants").as_deref(), Some("1"));
    // An unknown room, and a malformed page request.
    world.peer.send(ask(
        "d5",
        "nowhere@muc.gw.test",
        "<query xmlns='http://jabber.org/protocol/disco#info'/>",
    ));
    let Stanza::Iq(xmpp_parsers::iq::Iq::Error { error, .. }) = from_rooms(&mut world).await else {
        panic!("no error");
    };
    assert_eq!(
        error.defined_condition,
        xmpp_parsers::stanza_error::DefinedCondition::ItemNotFound
    );
    world.peer.send(ask(
        "d6",
        "muc.gw.test",
        "<query xmlns='http://jabber.org/protocol/disco#items'>\
         <set xmlns='http://jabber.org/protocol/rsm'><max>lots</max></set></query>",
    ));
    let Stanza::Iq(xmpp_parsers::iq::Iq::Error { error, .. }) = from_rooms(&mut world).await else {
        panic!("no error");
    };
    assert_eq!(
        error.defined_condition,
        xmpp_parsers::stanza_error::DefinedCondition::BadRequest
    );
}
