//! What a member does to messages in a portal reaches the MUC by the path of direct chats,
//! naming messages by the MUC's stanza ids: replies, reactions, corrections, retractions and
//! read markers, and typing as chat states; history keeps when it was said.

use super::*;

/// The next groupchat message from Alice to the lobby.
async fn next_groupchat(world: &mut World) -> xmpp_parsers::message::Message {
    next_from_alice(world, MessageType::Groupchat, "lobby@prosody.test").await
}

#[tokio::test]
async fn members_reply_react_correct_retract_and_mark_in_mucs() {
    let mut world = world().await;
    let token = world.token().await;
    let others = vec![
        occupant_presence("lobby@prosody.test", "Bob", "bob@prosody.test/phone", false),
        stanza(
            "<message xmlns='jabber:server' type='groupchat' id='h1' from='lobby@prosody.test/Bob' \
             to='alice@gw.test/causeway'><body>said before</body>\
             <delay xmlns='urn:xmpp:delay' from='lobby@prosody.test' stamp='2026-01-01T10:00:00Z'/>\
             <stanza-id xmlns='urn:xmpp:sid:0' by='lobby@prosody.test' id='s-h1'/></message>",
        ),
    ];
    let room = join_lobby(
        &mut world,
        &token,
        others,
        "<item affiliation='none' role='participant'/>",
    )
    .await;
    // History keeps when it was said.
    let before = world
        .wait_for(&token, &room, |events| {
            messages(events, BOB_HERE).first().map(|e| (*e).clone())
        })
        .await;
    assert_eq!(before["content"]["body"], "said before");
    assert_eq!(before["origin_server_ts"], 1_767_261_600_000_i64);
    world.peer.send(stanza(
        "<message xmlns='jabber:server' type='groupchat' id='m1' from='lobby@prosody.test/Bob' \
         to='alice@gw.test/causeway'><body>hello portal</body>\
         <stanza-id xmlns='urn:xmpp:sid:0' by='lobby@prosody.test' id='s-m1'/></message>",
    ));
    let bobs = world
        .wait_for(&token, &room, |events| {
            messages(events, BOB_HERE)
                .into_iter()
                .find(|e| e["content"]["body"] == "hello portal")
                .map(|e| e["event_id"].as_str().unwrap().to_owned())
        })
        .await;
    // Alice writes; the MUC reflects it with its stanza id.
    let sent = world
        .server
        .send_text(&token, &room, "a1", "hi Bob")
        .await
        .assert_ok();
    let mine = sent["event_id"].as_str().unwrap().to_owned();
    let out = next_groupchat(&mut world).await;
    assert_eq!(out.id.as_ref().unwrap().0, mine);
    world.peer.send(stanza(&format!(
        "<message xmlns='jabber:server' type='groupchat' id='{mine}' from='lobby@prosody.test/alice' \
         to='alice@gw.test/causeway'><body>hi Bob</body>\
         <origin-id xmlns='urn:xmpp:sid:0' id='{mine}'/>\
         <stanza-id xmlns='urn:xmpp:sid:0' by='lobby@prosody.test' id='s-a1'/></message>"
    )));
    // A reply names Bob's message by the MUC's id, and Bob as the occupant he is.
    let path = |txn: &str| format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}");
    world
        .server
        .put(
            &path("r1"),
            &token,
            json!({
                "msgtype": "m.text",
                "body": "welcome",
                "m.relates_to": { "m.in_reply_to": { "event_id": bobs } },
            }),
        )
        .await
        .assert_ok();
    let reply = next_groupchat(&mut world).await;
    let reply_to = payload(&reply, "reply", "urn:xmpp:reply:0");
    assert_eq!(reply_to.attr("id"), Some("s-m1"));
    assert_eq!(reply_to.attr("to"), Some("lobby@prosody.test/Bob"));
    assert!(body(&reply).ends_with("welcome"), "{}", body(&reply));
    // A reaction, by the same id.
    world
        .server
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/send/m.reaction/x1"),
            &token,
            json!({ "m.relates_to": {
                "rel_type": "m.annotation", "event_id": bobs, "key": "👍" } }),
        )
        .await
        .assert_ok();
    let reacted = next_groupchat(&mut world).await;
    let reactions = payload(&reacted, "reactions", "urn:xmpp:reactions:0");
    assert_eq!(reactions.attr("id"), Some("s-m1"));
    assert_eq!(
        reactions.children().map(|r| r.text()).collect::<Vec<_>>(),
        ["👍"]
    );
    // A correction of Alice's message names the id she sent it with.
    world
        .server
        .put(
            &path("e1"),
            &token,
            json!({
                "msgtype": "m.text",
                "body": "* hi Bob!",
                "m.new_content": { "msgtype": "m.text", "body": "hi Bob!" },
                "m.relates_to": { "rel_type": "m.replace", "event_id": mine },
            }),
        )
        .await
        .assert_ok();
    let corrected = next_groupchat(&mut world).await;
    assert_eq!(
        payload(&corrected, "replace", "urn:xmpp:message-correct:0").attr("id"),
        Some(mine.as_str())
    );
    assert_eq!(body(&corrected), "hi Bob!");
    // A read receipt on Bob's message is a displayed marker, by the MUC's id.
    world
        .server
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/{bobs}"),
            &token,
            json!({}),
        )
        .await
        .assert_ok();
    let marker = next_groupchat(&mut world).await;
    assert_eq!(
        payload(&marker, "displayed", "urn:xmpp:chat-markers:0").attr("id"),
        Some("s-m1")
    );
    // Redacting her message retracts it, by the MUC's id of it.
    world.redact(&token, &room, &mine, "d1").await;
    let retracted = next_groupchat(&mut world).await;
    assert_eq!(
        payload(&retracted, "retract", "urn:xmpp:message-retract:1").attr("id"),
        Some("s-a1")
    );
    // Typing is a chat state in the MUC, and its end `active`.
    let typing = format!(
        "/_matrix/client/v3/rooms/{room}/typing/{}",
        common::encode(&world.alice)
    );
    for (on, state) in [(true, "composing"), (false, "active")] {
        world
            .server
            .put(&typing, &token, json!({ "typing": on, "timeout": 30000 }))
            .await
            .assert_ok();
        let told = next_groupchat(&mut world).await;
        assert!(
            told.payloads
                .iter()
                .any(|p| p.is(state, "http://jabber.org/protocol/chatstates")),
            "{state}: {told:?}"
        );
    }
    // A new display name in the portal is a new nickname in the MUC; once the MUC says so,
    // what comes from the new nickname is hers.
    assert_eq!(
        new_nick(&mut world, &token, &room, "Alicia")
            .await
            .to
            .unwrap()
            .to_string(),
        "lobby@prosody.test/Alicia"
    );
    world.peer.send(stanza(
        "<presence xmlns='jabber:server' type='unavailable' from='lobby@prosody.test/alice' \
         to='alice@gw.test/causeway'><x xmlns='http://jabber.org/protocol/muc#user'>\
         <item affiliation='none' role='participant' nick='Alicia'/>\
         <status code='303'/><status code='110'/></x></presence>",
    ));
    world.peer.send(stanza(
        "<presence xmlns='jabber:server' from='lobby@prosody.test/Alicia' \
         to='alice@gw.test/causeway'><x xmlns='http://jabber.org/protocol/muc#user'>\
         <item affiliation='none' role='participant'/><status code='110'/></x></presence>",
    ));
    let sent = world
        .server
        .send_text(&token, &room, "a9", "as Alicia")
        .await
        .assert_ok();
    let mine = sent["event_id"].as_str().unwrap().to_owned();
    next_groupchat(&mut world).await;
    world.peer.send(stanza(&format!(
        "<message xmlns='jabber:server' type='groupchat' id='{mine}' \
         from='lobby@prosody.test/Alicia' to='alice@gw.test/causeway'><body>as Alicia</body>\
         <origin-id xmlns='urn:xmpp:sid:0' id='{mine}'/>\
         <stanza-id xmlns='urn:xmpp:sid:0' by='lobby@prosody.test' id='s-a9'/></message>"
    )));
    world.peer.send(stanza(
        "<message xmlns='jabber:server' type='groupchat' id='m9' from='lobby@prosody.test/Bob' \
         to='alice@gw.test/causeway'><body>after</body>\
         <stanza-id xmlns='urn:xmpp:sid:0' by='lobby@prosody.test' id='s-m9'/></message>",
    ));
    let ghosts = world
        .wait_for(&token, &room, |events| {
            messages(events, BOB_HERE)
                .iter()
                .any(|e| e["content"]["body"] == "after")
                .then(|| {
                    events
                        .iter()
                        .filter(|e| e["content"]["body"] == "as Alicia")
                        .map(|e| e["sender"].as_str().unwrap().to_owned())
                        .collect::<Vec<_>>()
                })
        })
        .await;
    assert_eq!(
        ghosts,
        [world.alice.clone()],
        "the reflection is hers, not a ghost's"
    );
    // A nickname the MUC refuses: the portal is told, and she stays Alicia there.
    assert_eq!(
        new_nick(&mut world, &token, &room, "Bob")
            .await
            .to
            .unwrap()
            .to_string(),
        "lobby@prosody.test/Bob"
    );
    world.peer.send(stanza(
        "<presence xmlns='jabber:server' type='error' from='lobby@prosody.test/Bob' \
         to='alice@gw.test/causeway'><error type='cancel'>\
         <conflict xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></presence>",
    ));
    let told = world
        .wait_for(&token, &room, |events| {
            messages(events, "@_xmpp_lobby=40prosody.test:gw.test")
                .into_iter()
                .find(|e| {
                    e["content"]["body"]
                        .as_str()
                        .is_some_and(|body| body.contains("the nickname Bob"))
                })
                .cloned()
        })
        .await;
    let body = told["content"]["body"].as_str().unwrap();
    assert!(
        body.contains("Conflict") && body.contains("still Alicia"),
        "{body}"
    );
}

/// Alice takes the display name `name` in the portal: the presence it makes.
pub(super) async fn new_nick(
    world: &mut World,
    token: &str,
    room: &str,
    name: &str,
) -> xmpp_parsers::presence::Presence {
    world
        .server
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{room}/state/m.room.member/{}",
                common::encode(&world.alice)
            ),
            token,
            json!({ "membership": "join", "displayname": name }),
        )
        .await
        .assert_ok();
    presence_to(&mut world.seen, "lobby@prosody.test").await
}
