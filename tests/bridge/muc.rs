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

/// Bob joins `#lobby:gw.test` without history: he gets Alice, himself and the subject.
async fn bob_joins_lobby(world: &mut World) {
    world.peer.send(join(
        "bob@prosody.test/phone",
        "lobby@muc.gw.test/Bob",
        "<history maxstanzas='0'/>",
    ));
    for _ in 0..2 {
        next_room_presence(world).await;
    }
    next_room_message(world).await;
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
    bob_joins_lobby(&mut world).await;
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
        "urn:xmpp:mam:2",
        "urn:xmpp:message-moderate:1",
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
    assert_eq!(field("muc#roominfo_avatarhash"), None, "no avatar yet");
    // With an avatar: its SHA-1 in disco, the picture in the room's vCard (XEP-0486).
    let picture = b"the lobby's picture".to_vec();
    let upload = world
        .server
        .raw(
            http::Method::POST,
            "/_matrix/media/v3/upload?filename=lobby.png",
            Some(&token),
            Some("image/png"),
            picture.clone(),
        )
        .await
        .assert_ok();
    let lobby_id = world
        .server
        .get("/_matrix/client/v3/directory/room/%23lobby:gw.test", &token)
        .await
        .assert_ok()["room_id"]
        .as_str()
        .unwrap()
        .to_owned();
    world
        .server
        .put(
            &format!("/_matrix/client/v3/rooms/{lobby_id}/state/m.room.avatar/"),
            &token,
            json!({"url": upload["content_uri"]}),
        )
        .await
        .assert_ok();
    world.peer.send(ask(
        "d4b",
        "lobby@muc.gw.test",
        "<query xmlns='http://jabber.org/protocol/disco#info'/>",
    ));
    let Ok(Some(info)) = iq_outcome(&mut world).await else {
        panic!("no disco#info of the room");
    };
    let hash = info
        .get_child("x", "jabber:x:data")
        .unwrap()
        .children()
        .find(|f| f.attr("var") == Some("muc#roominfo_avatarhash"))
        .and_then(|f| f.children().next())
        .map(|v| v.text());
    let expected: String = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &picture)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(hash, Some(expected));
    world.peer.send(ask(
        "v1",
        "lobby@muc.gw.test",
        "<vCard xmlns='vcard-temp'/>",
    ));
    let Ok(Some(vcard)) = iq_outcome(&mut world).await else {
        panic!("no vCard of the room");
    };
    let binval = vcard
        .get_child("PHOTO", "vcard-temp")
        .and_then(|photo| photo.get_child("BINVAL", "vcard-temp"))
        .map(|b| b.text())
        .unwrap();
    use base64::Engine;
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(binval.split_whitespace().collect::<String>())
            .unwrap(),
        picture
    );
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

/// A MAM query of `lobby@muc.gw.test` from `from`: the results it got (body, id) and its `fin`
/// (or the error condition).
async fn archive(
    world: &mut World,
    from: &str,
    id: &str,
    inner: &str,
) -> Result<(Vec<(String, String)>, Element), String> {
    world.peer.send(stanza(&format!(
        "<iq xmlns='jabber:server' type='set' id='{id}' from='{from}' to='lobby@muc.gw.test'>\
         <query xmlns='urn:xmpp:mam:2' queryid='q-{id}'>{inner}</query></iq>"
    )));
    let mut results = Vec::new();
    loop {
        match from_rooms(world).await {
            Stanza::Message(message) => {
                // What happens in the room meanwhile is not a result.
                if !message
                    .payloads
                    .iter()
                    .any(|p| p.is("result", "urn:xmpp:mam:2"))
                {
                    continue;
                }
                let result = payload(&message, "result", "urn:xmpp:mam:2");
                assert_eq!(result.attr("queryid"), Some(format!("q-{id}").as_str()));
                let forwarded = result.get_child("forwarded", "urn:xmpp:forward:0").unwrap();
                assert!(forwarded.get_child("delay", "urn:xmpp:delay").is_some());
                let inner = forwarded.get_child("message", "jabber:client").unwrap();
                assert_eq!(inner.attr("type"), Some("groupchat"));
                let text = inner.get_child("body", "jabber:client").unwrap().text();
                results.push((text, result.attr("id").unwrap().to_owned()));
            }
            Stanza::Iq(xmpp_parsers::iq::Iq::Result {
                payload: Some(fin), ..
            }) => {
                return Ok((results, fin));
            }
            Stanza::Iq(xmpp_parsers::iq::Iq::Error { error, .. }) => {
                return Err(format!("{:?}", error.defined_condition));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn rsm_text(fin: &Element, name: &str) -> Option<String> {
    fin.get_child("set", "http://jabber.org/protocol/rsm")
        .and_then(|set| set.get_child(name, "http://jabber.org/protocol/rsm"))
        .map(Element::text)
}

#[tokio::test]
async fn the_archive_of_a_room_pages_by_id_and_time() {
    let mut world = world().await;
    let token = world.token().await;
    let room = lobby(&world, &token).await;
    let mut events = Vec::new();
    for (n, text) in ["m1", "m2", "m3", "m4", "m5", "m6", "m7"]
        .iter()
        .enumerate()
    {
        let sent = world
            .server
            .send_text(&token, &room, &format!("t{n}"), text)
            .await
            .assert_ok();
        events.push(sent["event_id"].as_str().unwrap().to_owned());
    }
    // Carol has never been in the room: its shared history is not hers to read.
    let (none, fin) = archive(&mut world, "carol@prosody.test/pc", "c1", "")
        .await
        .unwrap();
    assert!(none.is_empty());
    assert_eq!(fin.attr("complete"), Some("true"));
    bob_joins_lobby(&mut world).await;
    let page = "<set xmlns='http://jabber.org/protocol/rsm'><max>3</max></set>";
    let (first, fin) = archive(&mut world, "bob@prosody.test/phone", "a1", page)
        .await
        .unwrap();
    let texts =
        |results: &[(String, String)]| results.iter().map(|r| r.0.clone()).collect::<Vec<_>>();
    assert_eq!(texts(&first), ["m1", "m2", "m3"]);
    assert_eq!(
        first[0].1, events[0],
        "the result id is the event (the stanza id)"
    );
    assert_ne!(fin.attr("complete"), Some("true"), "more to come: {fin:?}");
    assert_eq!(rsm_text(&fin, "last"), Some(events[2].clone()));
    let next = format!(
        "<set xmlns='http://jabber.org/protocol/rsm'><max>3</max><after>{}</after></set>",
        events[2]
    );
    let (second, _) = archive(&mut world, "bob@prosody.test/phone", "a2", &next)
        .await
        .unwrap();
    assert_eq!(texts(&second), ["m4", "m5", "m6"]);
    let last = format!(
        "<set xmlns='http://jabber.org/protocol/rsm'><max>3</max><after>{}</after></set>",
        events[5]
    );
    let (third, fin) = archive(&mut world, "bob@prosody.test/phone", "a3", &last)
        .await
        .unwrap();
    assert_eq!(texts(&third), ["m7"]);
    assert_eq!(fin.attr("complete"), Some("true"));
    // The last page, and the page before a message.
    let (newest, _) = archive(
        &mut world,
        "bob@prosody.test/phone",
        "a4",
        "<set xmlns='http://jabber.org/protocol/rsm'><max>2</max><before/></set>",
    )
    .await
    .unwrap();
    assert_eq!(texts(&newest), ["m6", "m7"]);
    let before = format!(
        "<set xmlns='http://jabber.org/protocol/rsm'><max>2</max><before>{}</before></set>",
        events[5]
    );
    let (earlier, _) = archive(&mut world, "bob@prosody.test/phone", "a5", &before)
        .await
        .unwrap();
    assert_eq!(texts(&earlier), ["m4", "m5"]);
    // By ids, and from a time on.
    let form = |fields: &str| {
        format!(
            "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>\
             <value>urn:xmpp:mam:2</value></field>{fields}</x>"
        )
    };
    let (picked, _) = archive(
        &mut world,
        "bob@prosody.test/phone",
        "a6",
        &form(&format!(
            "<field var='ids'><value>{}</value><value>{}</value></field>",
            events[1], events[4]
        )),
    )
    .await
    .unwrap();
    assert_eq!(texts(&picked), ["m2", "m5"]);
    let future = form("<field var='start'><value>2999-01-01T00:00:00Z</value></field>");
    let (nothing, fin) = archive(&mut world, "bob@prosody.test/phone", "a7", &future)
        .await
        .unwrap();
    assert!(nothing.is_empty());
    assert_eq!(fin.attr("complete"), Some("true"));
    let past = form("<field var='start'><value>2000-01-01T00:00:00Z</value></field>");
    let (all, _) = archive(&mut world, "bob@prosody.test/phone", "a8", &past)
        .await
        .unwrap();
    assert_eq!(all.len(), 7);
    // What cannot be answered gets its error.
    for (inner, condition) in [
        (
            "<set xmlns='http://jabber.org/protocol/rsm'><after>$nothing</after></set>".to_owned(),
            "ItemNotFound",
        ),
        (
            form("<field var='start'><value>yesterday</value></field>"),
            "BadRequest",
        ),
        (
            form("<field var='with'><value>bob@prosody.test</value></field>"),
            "FeatureNotImplemented",
        ),
        (
            form("<field var='colour'><value>red</value></field>"),
            "BadRequest",
        ),
    ] {
        let error = archive(&mut world, "bob@prosody.test/phone", "bad", &inner)
            .await
            .unwrap_err();
        assert_eq!(error, condition, "{inner}");
    }
    // A redacted message is not in the archive.
    world.redact(&token, &room, &events[0], "r1").await;
    let (after_redaction, _) = archive(&mut world, "bob@prosody.test/phone", "a9", page)
        .await
        .unwrap();
    assert_eq!(texts(&after_redaction), ["m2", "m3", "m4"]);
}

/// A `muc#admin` request from `from`; its answer (the payload of a result, or the condition).
async fn admin(
    world: &mut World,
    from: &str,
    kind: &str,
    items: &str,
) -> Result<Option<Element>, String> {
    world.peer.send(stanza(&format!(
        "<iq xmlns='jabber:server' type='{kind}' id='adm' from='{from}' to='lobby@muc.gw.test'>\
         <query xmlns='http://jabber.org/protocol/muc#admin'>{items}</query></iq>"
    )));
    iq_outcome(world).await
}

/// The next answer to a request from the MUC service: its payload, or its error's condition.
async fn iq_outcome(world: &mut World) -> Result<Option<Element>, String> {
    loop {
        match from_rooms(world).await {
            Stanza::Iq(xmpp_parsers::iq::Iq::Result { payload, .. }) => return Ok(payload),
            Stanza::Iq(xmpp_parsers::iq::Iq::Error { error, .. }) => {
                return Err(format!("{:?}", error.defined_condition));
            }
            _ => {}
        }
    }
}

#[tokio::test]
async fn occupants_with_power_administer_the_room() {
    let mut world = world().await;
    let token = world.token().await;
    let room = lobby(&world, &token).await;
    for (from, nick) in [
        ("bob@prosody.test/phone", "Bob"),
        ("carol@prosody.test/pc", "Carol"),
    ] {
        world.peer.send(join(
            from,
            &format!("lobby@muc.gw.test/{nick}"),
            "<history maxstanzas='0'/>",
        ));
        world
            .wait_member(
                &token,
                &room,
                if nick == "Bob" { BOB } else { CAROL },
                "join",
            )
            .await;
    }
    // Carol has no power: she may not kick Bob, nor ban Alice.
    assert_eq!(
        admin(
            &mut world,
            "carol@prosody.test/pc",
            "set",
            "<item nick='Bob' role='none'/>"
        )
        .await,
        Err("Forbidden".into())
    );
    assert_eq!(
        admin(
            &mut world,
            "carol@prosody.test/pc",
            "set",
            "<item jid='alice@gw.test' affiliation='outcast'/>"
        )
        .await,
        Err("Forbidden".into())
    );
    // Someone who is not in the room, nor an occupant at all, gets nothing done.
    assert_eq!(
        admin(
            &mut world,
            "dave@prosody.test/x",
            "set",
            "<item nick='Bob' role='none'/>"
        )
        .await,
        Err("Forbidden".into())
    );
    assert_eq!(
        admin(
            &mut world,
            "bob@prosody.test/phone",
            "set",
            "<item nick='Nobody' role='none'/>"
        )
        .await,
        Err("ItemNotFound".into())
    );
    assert_eq!(
        admin(
            &mut world,
            "bob@prosody.test/phone",
            "set",
            "<item nick='Carol' role='king'/>"
        )
        .await,
        Err("BadRequest".into())
    );
    // Alice makes Bob a moderator in Matrix: the occupants see his new role.
    let mut levels = world
        .server
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.power_levels/"),
            &token,
        )
        .await
        .assert_ok();
    levels["users"][BOB] = json!(50);
    levels["events"]["m.room.power_levels"] = json!(50);
    world
        .server
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.power_levels/"),
            &token,
            levels,
        )
        .await
        .assert_ok();
    let promoted = loop {
        let presence = next_room_presence(&mut world).await;
        if presence.from.as_ref().unwrap().to_string() == "lobby@muc.gw.test/Bob"
            && presence.to.as_ref().unwrap().to_string() == "carol@prosody.test/pc"
        {
            break presence;
        }
    };
    assert_eq!(item(&promoted).attr("role"), Some("moderator"));
    assert_eq!(item(&promoted).attr("affiliation"), Some("admin"));
    // A moderator may not ban the owner.
    assert_eq!(
        admin(
            &mut world,
            "bob@prosody.test/phone",
            "set",
            "<item jid='alice@gw.test' affiliation='outcast'/>"
        )
        .await,
        Err("NotAllowed".into())
    );
    // Bob lists the owners, makes Carol a visitor, then kicks her.
    let owners = admin(
        &mut world,
        "bob@prosody.test/phone",
        "get",
        "<item affiliation='owner'/>",
    )
    .await
    .unwrap()
    .unwrap();
    let jids: Vec<&str> = owners.children().filter_map(|i| i.attr("jid")).collect();
    assert_eq!(jids, ["alice@gw.test"]);
    admin(
        &mut world,
        "bob@prosody.test/phone",
        "set",
        "<item nick='Carol' role='visitor'/>",
    )
    .await
    .unwrap();
    world
        .wait_for(&token, &room, |events| {
            events
                .iter()
                .any(|e| e["type"] == "m.room.power_levels" && e["content"]["users"][CAROL] == -1)
                .then_some(())
        })
        .await;
    admin(
        &mut world,
        "bob@prosody.test/phone",
        "set",
        "<item nick='Carol' role='none'><reason>too loud</reason></item>",
    )
    .await
    .unwrap();
    let kicked = world
        .wait_for(&token, &room, |events| {
            events
                .iter()
                .find(|e| e["state_key"] == CAROL && e["content"]["membership"] == "leave")
                .cloned()
        })
        .await;
    assert_eq!(kicked["sender"], BOB);
    assert_eq!(kicked["content"]["reason"], "too loud");
    // Then bans her by her JID, and she is on the outcast list.
    admin(
        &mut world,
        "bob@prosody.test/phone",
        "set",
        "<item jid='carol@prosody.test' affiliation='outcast'/>",
    )
    .await
    .unwrap();
    world.wait_member(&token, &room, CAROL, "ban").await;
    let outcasts = admin(
        &mut world,
        "bob@prosody.test/phone",
        "get",
        "<item affiliation='outcast'/>",
    )
    .await
    .unwrap()
    .unwrap();
    let jids: Vec<&str> = outcasts.children().filter_map(|i| i.attr("jid")).collect();
    assert_eq!(jids, ["carol@prosody.test"]);
    // And lets her back: no longer banned.
    admin(
        &mut world,
        "bob@prosody.test/phone",
        "set",
        "<item jid='carol@prosody.test' affiliation='none'/>",
    )
    .await
    .unwrap();
    world.wait_member(&token, &room, CAROL, "leave").await;
}

#[tokio::test]
async fn users_of_allowed_domains_make_rooms_by_joining() {
    let mut world = world_with(|config| {
        config.xmpp.muc_create_domains = vec!["prosody.test".into()];
    })
    .await;
    let token = world.token().await;
    // other.test may not.
    world
        .peer
        .send(join("dave@other.test/x", "theirs@muc.gw.test/Dave", ""));
    let refused = next_room_presence(&mut world).await;
    assert_eq!(condition(&refused.payloads), "item-not-found");
    // Bob's join makes the room: he is told with 201, and owns it.
    world
        .peer
        .send(join("bob@prosody.test/phone", "made@muc.gw.test/Bob", ""));
    let me = next_room_presence(&mut world).await;
    let mut codes = statuses(&me);
    codes.sort();
    assert_eq!(codes, ["100", "110", "170", "201"]);
    assert_eq!(item(&me).attr("affiliation"), Some("owner"));
    let subject = next_room_message(&mut world).await;
    assert!(!subject.subjects.is_empty());
    let found = world
        .server
        .get("/_matrix/client/v3/directory/room/%23made:gw.test", &token)
        .await
        .assert_ok();
    let room = found["room_id"].as_str().unwrap().to_owned();
    // He reads the configuration form and names the room; a malformed form is refused.
    let owner = |id: &str, kind: &str, inner: &str| {
        stanza(&format!(
            "<iq xmlns='jabber:server' type='{kind}' id='{id}' from='bob@prosody.test/phone' \
             to='made@muc.gw.test'><query xmlns='http://jabber.org/protocol/muc#owner'>{inner}</query></iq>"
        ))
    };
    world.peer.send(owner("o1", "get", ""));
    let Stanza::Iq(xmpp_parsers::iq::Iq::Result {
        payload: Some(form),
        ..
    }) = from_rooms(&mut world).await
    else {
        panic!("no configuration form");
    };
    let vars: Vec<&str> = form
        .get_child("x", "jabber:x:data")
        .unwrap()
        .children()
        .filter_map(|f| f.attr("var"))
        .collect();
    assert!(vars.contains(&"muc#roomconfig_roomname"), "{vars:?}");
    world.peer.send(owner(
        "o2",
        "set",
        "<x xmlns='jabber:x:data' type='submit'>\
         <field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>\
         <field var='muc#roomconfig_roomname'><value>Made on XMPP</value></field>\
         <field var='muc#roomconfig_publicroom'><value>1</value></field></x>",
    ));
    let answer = loop {
        if let Stanza::Iq(iq) = from_rooms(&mut world).await {
            break iq;
        }
    };
    assert!(
        matches!(answer, xmpp_parsers::iq::Iq::Result { .. }),
        "{answer:?}"
    );
    world.peer.send(owner(
        "o3",
        "set",
        "<x xmlns='jabber:x:data' type='nonsense'/>",
    ));
    let answer = loop {
        if let Stanza::Iq(iq) = from_rooms(&mut world).await {
            break iq;
        }
    };
    assert!(
        matches!(answer, xmpp_parsers::iq::Iq::Error { .. }),
        "{answer:?}"
    );
    // Listed in the directory now, under its new name.
    let directory = world
        .server
        .get("/_matrix/client/v3/publicRooms", &token)
        .await
        .assert_ok();
    let listed = directory["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["room_id"] == room.as_str())
        .cloned()
        .expect("the room in the directory");
    assert_eq!(listed["name"], "Made on XMPP");
}

#[tokio::test]
async fn typing_and_read_markers_go_both_ways_in_rooms() {
    let mut world = world().await;
    let token = world.token().await;
    let room = lobby(&world, &token).await;
    bob_joins_lobby(&mut world).await;
    // Alice types: Bob sees her composing, then active.
    world
        .server
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/typing/{}", world.alice),
            &token,
            json!({"typing": true, "timeout": 30000}),
        )
        .await
        .assert_ok();
    let composing = next_room_message(&mut world).await;
    assert_eq!(
        composing.from.as_ref().unwrap().to_string(),
        "lobby@muc.gw.test/alice"
    );
    assert_eq!(composing.type_, MessageType::Groupchat);
    assert!(
        composing
            .payloads
            .iter()
            .any(|p| p.is("composing", "http://jabber.org/protocol/chatstates"))
    );
    world
        .server
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/typing/{}", world.alice),
            &token,
            json!({"typing": false}),
        )
        .await
        .assert_ok();
    let active = next_room_message(&mut world).await;
    assert!(
        active
            .payloads
            .iter()
            .any(|p| p.is("active", "http://jabber.org/protocol/chatstates"))
    );
    // Bob writes; Alice reads it: Bob gets a displayed marker of its stanza id.
    world.peer.send(groupchat(
        "bob@prosody.test/phone",
        "lobby@muc.gw.test",
        "b1",
        "<body>read me</body>",
    ));
    let event = world
        .wait_for(&token, &room, |events| {
            messages(events, BOB).first().map(|e| (*e).clone())
        })
        .await;
    next_room_message(&mut world).await; // the reflection
    world
        .server
        .post(
            &format!(
                "/_matrix/client/v3/rooms/{room}/receipt/m.read/{}",
                crate::common::encode(event["event_id"].as_str().unwrap())
            ),
            &token,
            json!({}),
        )
        .await
        .assert_ok();
    let marker = next_room_message(&mut world).await;
    assert_eq!(
        marker.from.as_ref().unwrap().to_string(),
        "lobby@muc.gw.test/alice"
    );
    assert_eq!(
        payload(&marker, "displayed", "urn:xmpp:chat-markers:0").attr("id"),
        event["event_id"].as_str()
    );
    // Bob types and marks Alice's message as displayed: Alice sees both.
    let sent = world
        .server
        .send_text(&token, &room, "a1", "and you read mine")
        .await
        .assert_ok();
    next_room_message(&mut world).await;
    world.peer.send(groupchat(
        "bob@prosody.test/phone",
        "lobby@muc.gw.test",
        "b2",
        "<composing xmlns='http://jabber.org/protocol/chatstates'/>",
    ));
    let mut typing_seen = false;
    for _ in 0..100 {
        let sync = world.server.sync(&token, "timeout=0").await;
        typing_seen = sync["rooms"]["join"][&room]["ephemeral"]["events"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| {
                e["type"] == "m.typing"
                    && e["content"]["user_ids"]
                        .as_array()
                        .is_some_and(|u| u.contains(&json!(BOB)))
            });
        if typing_seen {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(typing_seen, "Bob's typing never showed");
    world.peer.send(groupchat(
        "bob@prosody.test/phone",
        "lobby@muc.gw.test",
        "b3",
        &format!(
            "<displayed xmlns='urn:xmpp:chat-markers:0' id='{}'/>",
            sent["event_id"].as_str().unwrap()
        ),
    ));
    let mut read = false;
    for _ in 0..100 {
        let sync = world.server.sync(&token, "timeout=0").await;
        read = sync["rooms"]["join"][&room]["ephemeral"]["events"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| {
                e["type"] == "m.receipt"
                    && e["content"][sent["event_id"].as_str().unwrap()]["m.read"][BOB].is_object()
            });
        if read {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(read, "Bob's marker never became a receipt");
}

#[tokio::test]
async fn private_messages_and_strangers() {
    let mut world = world().await;
    let token = world.token().await;
    lobby(&world, &token).await;
    bob_joins_lobby(&mut world).await;
    // Another resource of Bob's, which did not join, is no occupant.
    world.peer.send(groupchat(
        "bob@prosody.test/laptop",
        "lobby@muc.gw.test",
        "x1",
        "<body>from elsewhere</body>",
    ));
    let refused = next_room_message(&mut world).await;
    assert_eq!(condition(&refused.payloads), "not-acceptable");
    // A private message to Alice's nickname is a direct chat with her.
    world.peer.send(stanza(
        "<message xmlns='jabber:server' type='chat' id='pm1' from='bob@prosody.test/phone' \
         to='lobby@muc.gw.test/alice'><body>just between us</body></message>",
    ));
    let direct = world.invited_room(&token).await;
    world.server.join(&token, &direct).await;
    let first = world
        .wait_for(&token, &direct, |events| {
            messages(events, BOB).first().map(|e| (*e).clone())
        })
        .await;
    assert_eq!(first["content"]["body"], "just between us");
    // To a nickname nobody has: item-not-found.
    world.peer.send(stanza(
        "<message xmlns='jabber:server' type='chat' id='pm2' from='bob@prosody.test/phone' \
         to='lobby@muc.gw.test/Nobody'><body>hello?</body></message>",
    ));
    let refused = next_room_message(&mut world).await;
    assert_eq!(condition(&refused.payloads), "item-not-found");
}

#[tokio::test]
async fn moderators_retract_messages() {
    let mut world = world().await;
    let token = world.token().await;
    let room = lobby(&world, &token).await;
    for (from, nick, user) in [
        ("bob@prosody.test/phone", "Bob", BOB),
        ("carol@prosody.test/pc", "Carol", CAROL),
    ] {
        world.peer.send(join(
            from,
            &format!("lobby@muc.gw.test/{nick}"),
            "<history maxstanzas='0'/>",
        ));
        world.wait_member(&token, &room, user, "join").await;
    }
    let sent = world
        .server
        .send_text(&token, &room, "a1", "a message of Alice")
        .await
        .assert_ok();
    let alices = sent["event_id"].as_str().unwrap().to_owned();
    world.peer.send(groupchat(
        "carol@prosody.test/pc",
        "lobby@muc.gw.test",
        "c1",
        "<body>spam</body>",
    ));
    let carols = world
        .wait_for(&token, &room, |events| {
            messages(events, CAROL)
                .first()
                .map(|e| e["event_id"].as_str().unwrap().to_owned())
        })
        .await;
    let moderate = |id: &str, from: &str, target: &str| {
        stanza(&format!(
            "<iq xmlns='jabber:server' type='set' id='{id}' from='{from}' to='lobby@muc.gw.test'>\
             <moderate xmlns='urn:xmpp:message-moderate:1' id='{target}'>\
             <retract xmlns='urn:xmpp:message-retract:1'/><reason>off topic</reason></moderate></iq>"
        ))
    };
    // Bob has no power to moderate Alice's (nor Carol's) message.
    world
        .peer
        .send(moderate("m1", "bob@prosody.test/phone", &alices));
    assert_eq!(iq_outcome(&mut world).await, Err("Forbidden".into()));
    world
        .peer
        .send(moderate("m2", "bob@prosody.test/phone", "$nothing"));
    assert_eq!(iq_outcome(&mut world).await, Err("ItemNotFound".into()));
    // Made a moderator, he retracts Carol's: a redaction of his ghost, and the occupants get
    // the room's moderation notice.
    let mut levels = world
        .server
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.power_levels/"),
            &token,
        )
        .await
        .assert_ok();
    levels["users"][BOB] = json!(50);
    world
        .server
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.power_levels/"),
            &token,
            levels,
        )
        .await
        .assert_ok();
    world
        .wait_for(&token, &room, |events| {
            events
                .iter()
                .any(|e| e["type"] == "m.room.power_levels" && e["content"]["users"][BOB] == 50)
                .then_some(())
        })
        .await;
    world
        .peer
        .send(moderate("m3", "bob@prosody.test/phone", &carols));
    assert_eq!(iq_outcome(&mut world).await, Ok(None));
    let redaction = world
        .wait_for(&token, &room, |events| {
            events
                .iter()
                .find(|e| e["type"] == "m.room.redaction")
                .cloned()
        })
        .await;
    assert_eq!(redaction["sender"], BOB);
    assert_eq!(redaction["content"]["reason"], "off topic");
    let notice = loop {
        let message = next_room_message(&mut world).await;
        if message
            .payloads
            .iter()
            .any(|p| p.is("retract", "urn:xmpp:message-retract:1"))
        {
            break message;
        }
    };
    assert_eq!(
        notice.from.as_ref().unwrap().to_string(),
        "lobby@muc.gw.test"
    );
    let retract = payload(&notice, "retract", "urn:xmpp:message-retract:1");
    assert_eq!(retract.attr("id"), Some(carols.as_str()));
    let moderated = retract
        .get_child("moderated", "urn:xmpp:message-moderate:1")
        .unwrap();
    assert_eq!(moderated.attr("by"), Some("lobby@muc.gw.test/Bob"));
}
