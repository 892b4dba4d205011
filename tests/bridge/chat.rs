//! Chats started on either side, and everything that goes across in them.

use std::time::Duration;

use serde_json::json;
use xmpp_parsers::message::MessageType;

use crate::common;
use crate::world::*;

#[tokio::test]
async fn a_chat_started_on_xmpp_goes_both_ways() {
    let mut world = world().await;
    let token = world.token().await;
    world.peer.send(chat(
        "bob@prosody.test/phone",
        "m1",
        "<body>Hi *Alice*</body><nick xmlns='http://jabber.org/protocol/nick'>Bob</nick>",
    ));
    let room = world.invited_room(&token).await;
    // The ghost invited her to a direct chat, and said so in her account data.
    let direct = world
        .server
        .get(
            &format!(
                "/_matrix/client/v3/user/{}/account_data/m.direct",
                world.alice
            ),
            &token,
        )
        .await
        .assert_ok();
    assert_eq!(direct[BOB], json!([room.clone()]));
    // Before she joins, the directory does not list Bob's ghost to her.
    let search = |token: String| {
        let server = &world.server;
        async move {
            server
                .post(
                    "/_matrix/client/v3/user_directory/search",
                    &token,
                    json!({"search_term": "xmpp_bob"}),
                )
                .await
                .assert_ok()["results"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["user_id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert!(search(token.clone()).await.is_empty());
    world.server.join(&token, &room).await;
    let first = world
        .wait_for(&token, &room, |events| {
            messages(events, BOB).first().map(|e| (*e).clone())
        })
        .await;
    assert_eq!(first["content"]["body"], "Hi *Alice*");
    // Sharing a room with him, she finds him; another local account does not.
    assert_eq!(search(token.clone()).await, vec![BOB.to_owned()]);
    let (_, dave) = world.server.register("dave").await;
    assert!(search(dave).await.is_empty());
    assert_eq!(
        first["content"]["formatted_body"],
        "Hi <strong>Alice</strong>"
    );
    // The ghost's account exists, named by its JID, and cannot log in.
    let profile = world
        .server
        .get(&format!("/_matrix/client/v3/profile/{BOB}"), &token)
        .await
        .assert_ok();
    assert_eq!(profile["displayname"], "bob@prosody.test");
    world
        .server
        .call(
            http::Method::POST,
            "/_matrix/client/v3/login",
            None,
            Some(json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": BOB}, "password": ""})),
        )
        .await
        .assert_error(403, "M_FORBIDDEN");

    // The same stanza again, and a second message: one room, each message once. Bob asks
    // for a receipt (XEP-0184) and gets one, as the message is stored.
    world.peer.send(chat(
        "bob@prosody.test/phone",
        "m1",
        "<body>Hi *Alice*</body><request xmlns='urn:xmpp:receipts'/>",
    ));
    let receipt = world.next_message().await;
    assert_eq!(
        payload(&receipt, "received", "urn:xmpp:receipts").attr("id"),
        Some("m1")
    );
    assert_eq!(receipt.to.as_ref().unwrap().to_string(), "bob@prosody.test");
    world.peer.send(chat(
        "bob@prosody.test/laptop",
        "m2",
        "<body>/me waves</body>",
    ));
    let events = world
        .wait_for(&token, &room, |events| {
            (messages(events, BOB).len() >= 2).then(|| events.to_vec())
        })
        .await;
    let bobs = messages(&events, BOB);
    assert_eq!(bobs.len(), 2, "{events:#?}");
    assert_eq!(bobs[1]["content"]["msgtype"], "m.emote");
    assert_eq!(bobs[1]["content"]["body"], "waves");

    // Alice answers; Bob gets a chat message from her JID whose id is the event's.
    let sent = world
        .server
        .send_text(&token, &room, "t1", "Hello Bob")
        .await
        .assert_ok();
    let event_id = sent["event_id"].as_str().unwrap().to_owned();
    let message = world.next_message().await;
    assert_eq!(message.type_, MessageType::Chat);
    assert_eq!(message.from.as_ref().unwrap().to_string(), "alice@gw.test");
    assert_eq!(message.to.as_ref().unwrap().to_string(), "bob@prosody.test");
    assert_eq!(body(&message), "Hello Bob");
    assert_eq!(message.id.as_ref().unwrap().0, event_id);

    // Bob corrects his first message, reacts to Alice's, and retracts his second.
    world.peer.send(chat(
        "bob@prosody.test/phone",
        "m3",
        "<body>Hi Alice!</body><replace xmlns='urn:xmpp:message-correct:0' id='m1'/>",
    ));
    world.peer.send(chat(
        "bob@prosody.test/phone",
        "m4",
        &format!("<reactions xmlns='urn:xmpp:reactions:0' id='{event_id}'><reaction>👍</reaction></reactions>"),
    ));
    world.peer.send(chat(
        "bob@prosody.test/phone",
        "m5",
        "<retract xmlns='urn:xmpp:message-retract:1' id='m2'/><body>retracted</body>",
    ));
    let first_id = first["event_id"].as_str().unwrap().to_owned();
    let events = world
        .wait_for(&token, &room, |events| {
            let redacted = events.iter().any(|e| e["type"] == "m.room.redaction");
            let reacted = events.iter().any(|e| e["type"] == "m.reaction");
            (redacted && reacted).then(|| events.to_vec())
        })
        .await;
    let edit = events
        .iter()
        .find(|e| e["content"]["m.relates_to"]["rel_type"] == "m.replace")
        .expect("an edit");
    let edit_id = edit["event_id"].as_str().unwrap().to_owned();
    assert_eq!(
        edit["content"]["m.relates_to"]["event_id"],
        first_id.as_str()
    );
    assert_eq!(edit["content"]["m.new_content"]["body"], "Hi Alice!");
    let reaction = events.iter().find(|e| e["type"] == "m.reaction").unwrap();
    assert_eq!(reaction["sender"], BOB);
    assert_eq!(
        reaction["content"]["m.relates_to"]["event_id"],
        event_id.as_str()
    );
    assert_eq!(reaction["content"]["m.relates_to"]["key"], "👍");
    let second_id = bobs[1]["event_id"].as_str().unwrap();
    let redaction = events
        .iter()
        .find(|e| e["type"] == "m.room.redaction")
        .unwrap();
    assert_eq!(redaction["redacts"], second_id);
    // A correction of the correction (by its id, as some clients send) edits the original:
    // the Matrix specification ignores edits of edits.
    world.peer.send(chat(
        "bob@prosody.test/phone",
        "m3b",
        "<body>Hi Alice!!</body><replace xmlns='urn:xmpp:message-correct:0' id='m3'/>",
    ));
    let second_edit = world
        .wait_for(&token, &room, |events| {
            events
                .iter()
                .find(|e| e["content"]["m.new_content"]["body"] == "Hi Alice!!")
                .cloned()
        })
        .await;
    assert_eq!(
        second_edit["content"]["m.relates_to"]["event_id"],
        first_id.as_str()
    );
    assert_ne!(
        second_edit["content"]["m.relates_to"]["event_id"],
        edit_id.as_str()
    );

    // Alice replies to Bob's message, reacts to it, takes the reaction back and retracts
    // her own message.
    let reply = world
        .server
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/t2"),
            &token,
            json!({"msgtype": "m.text", "body": "> <@_xmpp_bob=40prosody.test:gw.test> Hi *Alice*\n\nIndeed",
                   "m.relates_to": {"m.in_reply_to": {"event_id": first_id}}}),
        )
        .await
        .assert_ok();
    let message = world.next_message().await;
    assert_eq!(
        body(&message),
        "> bob@prosody.test:\n> Hi Alice!!\nIndeed",
        "the quotation names Bob, never his Matrix id"
    );
    let reply_element = payload(&message, "reply", "urn:xmpp:reply:0");
    assert_eq!(reply_element.attr("id"), Some("m1"));
    let _ = reply;
    let reacted = world
        .server
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/send/m.reaction/t3"),
            &token,
            json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": first_id, "key": "❤"}}),
        )
        .await
        .assert_ok();
    let message = world.next_message().await;
    let reactions = payload(&message, "reactions", "urn:xmpp:reactions:0");
    assert_eq!(reactions.attr("id"), Some("m1"));
    assert_eq!(
        reactions.children().map(|c| c.text()).collect::<Vec<_>>(),
        ["❤"]
    );
    let reaction_id = reacted["event_id"].as_str().unwrap();
    world.redact(&token, &room, reaction_id, "t4").await;
    let message = world.next_message().await;
    let reactions = payload(&message, "reactions", "urn:xmpp:reactions:0");
    assert_eq!(reactions.attr("id"), Some("m1"));
    assert_eq!(reactions.children().count(), 0, "the whole set, now empty");
    world.redact(&token, &room, &event_id, "t5").await;
    let message = world.next_message().await;
    let retract = payload(&message, "retract", "urn:xmpp:message-retract:1");
    assert_eq!(retract.attr("id"), Some(event_id.as_str()));

    // Bob is typing, then reads Alice's reply.
    world.peer.send(chat(
        "bob@prosody.test/phone",
        "m6",
        "<composing xmlns='http://jabber.org/protocol/chatstates'/>",
    ));
    let room_id = ruma::RoomId::parse(&room).unwrap();
    for _ in 0..100 {
        if !world.server.services.typing.users(&room_id).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        world.server.services.typing.users(&room_id),
        vec![ruma::UserId::parse(BOB).unwrap()]
    );

    // Alice types, then reads Bob's first message: a chat state and a displayed marker.
    world
        .server
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/typing/{}", world.alice),
            &token,
            json!({"typing": true, "timeout": 10000}),
        )
        .await
        .assert_ok();
    let message = world.next_message().await;
    payload(
        &message,
        "composing",
        "http://jabber.org/protocol/chatstates",
    );
    assert!(message.bodies.is_empty());
    world
        .server
        .post(
            &format!(
                "/_matrix/client/v3/rooms/{room}/receipt/m.read/{}",
                common::encode(&first_id)
            ),
            &token,
            json!({}),
        )
        .await
        .assert_ok();
    let message = world.next_message().await;
    assert_eq!(
        payload(&message, "displayed", "urn:xmpp:chat-markers:0").attr("id"),
        Some("m1")
    );
}

#[tokio::test]
async fn a_chat_started_on_matrix_reaches_the_xmpp_user() {
    let mut world = world().await;
    let token = world.token().await;
    // Element looks the user up before it offers to start a chat.
    world
        .server
        .get(&format!("/_matrix/client/v3/profile/{CAROL}"), &token)
        .await
        .assert_ok();
    let room = world
        .server
        .create_room(
            &token,
            json!({"preset": "trusted_private_chat", "is_direct": true, "invite": [CAROL]}),
        )
        .await;
    // The ghost joins by itself.
    world
        .wait_for(&token, &room, |events| {
            events
                .iter()
                .any(|e| {
                    e["type"] == "m.room.member"
                        && e["state_key"] == CAROL
                        && e["content"]["membership"] == "join"
                })
                .then_some(())
        })
        .await;
    world
        .server
        .send_text(&token, &room, "c1", "Hello Carol")
        .await
        .assert_ok();
    let message = world.next_message().await;
    assert_eq!(
        message.to.as_ref().unwrap().to_string(),
        "carol@prosody.test"
    );
    assert_eq!(body(&message), "Hello Carol");
    // Carol's answer lands in that room, not in a new one.
    world
        .peer
        .send(chat("carol@prosody.test/pc", "c-1", "<body>Hi!</body>"));
    world
        .wait_for(&token, &room, |events| {
            messages(events, CAROL)
                .first()
                .map(|e| e["content"]["body"].clone())
        })
        .await;
    let sync = world.server.sync(&token, "timeout=0").await;
    assert!(
        sync["rooms"]["invite"]
            .as_object()
            .is_none_or(|i| i.is_empty())
    );

    // A second direct chat with Carol while the first goes on: the ghost declines and says
    // where the chat is.
    let second = world
        .server
        .create_room(&token, json!({"is_direct": true, "invite": [CAROL]}))
        .await;
    let left = world
        .wait_for(&token, &second, |events| {
            events
                .iter()
                .find(|e| e["state_key"] == CAROL && e["content"]["membership"] == "leave")
                .cloned()
        })
        .await;
    let reason = left["content"]["reason"].as_str().unwrap();
    assert!(reason.contains(&room), "{reason}");

    // Without a token, looking a ghost up makes nothing.
    world
        .server
        .call(
            http::Method::GET,
            "/_matrix/client/v3/profile/@_xmpp_nobody=40elsewhere.test:gw.test",
            None,
            None,
        )
        .await
        .assert_error(404, "M_NOT_FOUND");
    assert!(
        world
            .server
            .services
            .store
            .user("@_xmpp_nobody=40elsewhere.test:gw.test")
            .await
            .unwrap()
            .is_none()
    );

    // A ghost invited into a group room declines.
    let group = world
        .server
        .create_room(&token, json!({"preset": "private_chat", "name": "Group"}))
        .await;
    world
        .server
        .post(
            &format!("/_matrix/client/v3/rooms/{group}/invite"),
            &token,
            json!({"user_id": BOB}),
        )
        .await
        .assert_ok();
    let left = world
        .wait_for(&token, &group, |events| {
            events
                .iter()
                .find(|e| e["state_key"] == BOB && e["content"]["membership"] == "leave")
                .cloned()
        })
        .await;
    assert!(
        left["content"]["reason"]
            .as_str()
            .unwrap()
            .contains("direct")
    );
}
