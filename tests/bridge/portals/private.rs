//! Private messages in MUCs are direct chats with the occupant's ghost: from an occupant, the
//! ghost invites the member to one; a member's direct chat with an occupant's ghost goes to the
//! occupant, from the member's own occupant; a refusal is a notice there.

use super::*;

const CAROL_HERE: &str = "@_xmpp_lobby=40prosody.test/=43arol:gw.test";

/// The next private message from Alice to an occupant of the lobby.
async fn next_private(world: &mut World, nick: &str) -> xmpp_parsers::message::Message {
    next_from_alice(
        world,
        MessageType::Chat,
        &format!("lobby@prosody.test/{nick}"),
    )
    .await
}

/// Alice joins the direct chat a ghost invited her to: the room, and the ghost's first message.
async fn first_private(world: &World, token: &str, ghost: &str) -> (String, serde_json::Value) {
    let room = world.invited_room(token).await;
    world
        .server
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/join"),
            token,
            json!({}),
        )
        .await
        .assert_ok();
    let first = world
        .wait_for(token, &room, |events| {
            messages(events, ghost).first().map(|e| (*e).clone())
        })
        .await;
    (room, first)
}

#[tokio::test]
async fn private_messages_in_mucs_are_direct_chats_with_occupants() {
    let mut world = world().await;
    let token = world.token().await;
    let others = vec![
        occupant_presence("lobby@prosody.test", "Bob", "bob@prosody.test/phone", false),
        occupant_presence(
            "lobby@prosody.test",
            "Carol",
            "carol@prosody.test/pc",
            false,
        ),
    ];
    join_lobby(
        &mut world,
        &token,
        others,
        "<item affiliation='none' role='participant'/>",
    )
    .await;
    // Bob writes to Alice privately: his occupant's ghost invites her to a direct chat.
    world.peer.send(stanza(
        "<message xmlns='jabber:server' type='chat' id='p1' from='lobby@prosody.test/Bob' \
         to='alice@gw.test/causeway'><body>psst</body>\
         <x xmlns='http://jabber.org/protocol/muc#user'/></message>",
    ));
    let (room, psst) = first_private(&world, &token, BOB_HERE).await;
    assert_eq!(psst["content"]["body"], "psst");
    // Her answer goes to Bob's occupant, from hers.
    let sent = world
        .server
        .send_text(&token, &room, "p2", "what?")
        .await
        .assert_ok();
    let answer = next_private(&mut world, "Bob").await;
    assert_eq!(body(&answer), "what?");
    // The MUC refuses one: she is told, in reply to it, by Bob's ghost.
    let event = sent["event_id"].as_str().unwrap().to_owned();
    world.peer.send(stanza(&format!(
        "<message xmlns='jabber:server' type='error' id='{event}' from='lobby@prosody.test/Bob' \
         to='alice@gw.test/causeway'><error type='cancel'>\
         <item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
         <text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>Bob left</text></error></message>"
    )));
    let notice = world
        .wait_for(&token, &room, |events| {
            messages(events, BOB_HERE)
                .into_iter()
                .find(|e| e["content"]["msgtype"] == "m.notice")
                .cloned()
        })
        .await;
    assert!(
        notice["content"]["body"]
            .as_str()
            .unwrap()
            .contains("Bob left"),
        "{notice}"
    );
    assert_eq!(
        notice["content"]["m.relates_to"]["m.in_reply_to"]["event_id"],
        event.as_str()
    );
    // Alice starts a direct chat with Carol's occupant: it goes to Carol in the MUC.
    let direct = world
        .server
        .create_room(
            &token,
            json!({"preset": "trusted_private_chat", "is_direct": true, "invite": [CAROL_HERE]}),
        )
        .await;
    world.wait_member(&token, &direct, CAROL_HERE, "join").await;
    world
        .server
        .send_text(&token, &direct, "c1", "hello Carol")
        .await
        .assert_ok();
    let to_carol = next_private(&mut world, "Carol").await;
    assert_eq!(body(&to_carol), "hello Carol");
    // Carol's answer lands in that chat.
    world.peer.send(stanza(
        "<message xmlns='jabber:server' type='chat' id='c2' from='lobby@prosody.test/Carol' \
         to='alice@gw.test/causeway'><body>hi Alice</body></message>",
    ));
    let answer = world
        .wait_for(&token, &direct, |events| {
            messages(events, CAROL_HERE).first().map(|e| (*e).clone())
        })
        .await;
    assert_eq!(answer["content"]["body"], "hi Alice");
}

#[tokio::test]
async fn a_private_message_from_a_muc_without_a_portal_is_the_occupants() {
    let world = world().await;
    let token = world.token().await;
    // Carol writes to Alice from a MUC Alice has no portal of: the message says it is a
    // private message in a MUC (XEP-0045 §7.5), so it is Carol's occupant's, not the MUC's.
    world.peer.send(stanza(
        "<message xmlns='jabber:server' type='chat' id='q1' from='den@prosody.test/Carol' \
         to='alice@gw.test'><body>you there?</body>\
         <x xmlns='http://jabber.org/protocol/muc#user'/></message>",
    ));
    let (_, said) =
        first_private(&world, &token, "@_xmpp_den=40prosody.test/=43arol:gw.test").await;
    assert_eq!(said["content"]["body"], "you there?");
}
