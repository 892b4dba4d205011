//! Joining, talking, leaving, what members do to occupants, and what goes wrong.

use super::*;

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
async fn joins_that_cannot_be_made_get_the_right_error() {
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
