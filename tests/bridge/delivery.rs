//! Bad messages, and messages that cannot be delivered at first.

use std::time::Duration;

use causeway_xmpp::stanza::Stanza;
use serde_json::json;
use xmpp_parsers::message::MessageType;

use crate::common;
use crate::world::*;

#[tokio::test]
async fn bad_messages_get_errors_and_bounces_are_shown() {
    let mut world = world().await;
    let token = world.token().await;
    // Nobody by that name, a ghost's address, and the reserved prefix: errors, not rooms.
    for (to, condition) in [
        ("nobody@gw.test", "service-unavailable"),
        ("_xmpp_bob=40prosody.test@gw.test", "service-unavailable"),
    ] {
        world.peer.send(stanza(&format!(
            "<message xmlns='jabber:server' type='chat' id='x' from='bob@prosody.test/a' to='{to}'>\
             <body>hello?</body></message>"
        )));
        let answer = world.next_message().await;
        assert_eq!(answer.type_, MessageType::Error);
        let error = answer
            .payloads
            .iter()
            .find(|p| p.name() == "error")
            .unwrap();
        assert!(error.children().any(|c| c.name() == condition), "{error:?}");
    }
    // More reactions than a user may put on one message: refused whole, with the reason.
    let many: String = (0..21)
        .map(|i| format!("<reaction>r{i}</reaction>"))
        .collect();
    world.peer.send(chat(
        "bob@prosody.test/a",
        "too-many",
        &format!("<reactions xmlns='urn:xmpp:reactions:0' id='m1'>{many}</reactions>"),
    ));
    let answer = world.next_message().await;
    assert_eq!(answer.type_, MessageType::Error);
    assert_eq!(answer.id.map(|id| id.0).as_deref(), Some("too-many"));
    let error = answer
        .payloads
        .iter()
        .find(|p| p.name() == "error")
        .unwrap();
    assert!(
        error.children().any(|c| c.name() == "not-acceptable"),
        "{error:?}"
    );
    assert!(
        error
            .children()
            .any(|c| c.text().contains("at most 20 reactions")),
        "{error:?}"
    );
    let sync = world.server.sync(&token, "timeout=0").await;
    assert!(
        sync["rooms"]["invite"]
            .as_object()
            .is_none_or(|i| i.is_empty())
    );
    // Typing alone opens no chat.
    world.peer.send(chat(
        "dave@prosody.test/a",
        "d1",
        "<composing xmlns='http://jabber.org/protocol/chatstates'/>",
    ));
    // A message to someone whose server cannot be reached bounces, and Alice sees why.
    let room = world
        .server
        .create_room(
            &token,
            json!({"is_direct": true, "invite": ["@_xmpp_erin=40later.test:gw.test"]}),
        )
        .await;
    world
        .wait_member(&token, &room, "@_xmpp_erin=40later.test:gw.test", "join")
        .await;
    let sent = world
        .server
        .send_text(&token, &room, "e1", "Are you there?")
        .await
        .assert_ok();
    let notice = world
        .wait_for(&token, &room, |events| {
            events
                .iter()
                .find(|e| e["content"]["msgtype"] == "m.notice")
                .cloned()
        })
        .await;
    assert_eq!(
        notice["content"]["m.relates_to"]["m.in_reply_to"]["event_id"],
        sent["event_id"]
    );
    let text = notice["content"]["body"].as_str().unwrap();
    assert_eq!(
        text,
        "⚠ Not delivered to erin@later.test yet: the server later.test cannot be reached. \
         Causeway keeps trying."
    );
    let sync = world.server.sync(&token, "timeout=0").await;
    let invites = sync["rooms"]["invite"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    assert!(invites.is_empty(), "{invites:?}");
    // A bounce claimed by another server for that message is not believed.
    world.peer.send(stanza(&format!(
        "<message xmlns='jabber:server' type='error' id='{}' from='mallory@prosody.test' \
         to='alice@gw.test'><error type='cancel'><item-not-found \
         xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>",
        sent["event_id"].as_str().unwrap()
    )));
    // A second message waits behind the first.
    let second = world
        .server
        .send_text(&token, &room, "e2", "Hello?")
        .await
        .assert_ok();

    // The server comes up: the message arrives, and the notice says it was delivered.
    let (_later, mut later_seen) =
        common::peer::start_on(&world.ca, "later.test", world.later).await;
    let arrived = tokio::time::timeout(Duration::from_secs(30), later_seen.recv())
        .await
        .expect("the message in time")
        .unwrap();
    let Stanza::Message(arrived) = arrived else {
        panic!("{arrived:?}");
    };
    assert_eq!(body(&arrived), "Are you there?");
    assert_eq!(
        arrived.id.as_ref().unwrap().0,
        sent["event_id"].as_str().unwrap()
    );
    let next = tokio::time::timeout(Duration::from_secs(30), later_seen.recv())
        .await
        .expect("the second message in time")
        .unwrap();
    let Stanza::Message(next) = next else {
        panic!("{next:?}");
    };
    assert_eq!(body(&next), "Hello?", "in the order they were written");
    assert_eq!(
        next.id.as_ref().unwrap().0,
        second["event_id"].as_str().unwrap()
    );
    let notice_id = notice["event_id"].as_str().unwrap().to_owned();
    let edit = world
        .wait_for(&token, &room, |events| {
            events
                .iter()
                .find(|e| e["content"]["m.relates_to"]["event_id"] == notice_id.as_str())
                .cloned()
        })
        .await;
    let text = edit["content"]["m.new_content"]["body"].as_str().unwrap();
    assert_eq!(text, "✓ Delivered to erin@later.test, later.");
    // Two notices, one for each message, and none for the forged bounce.
    let events = world
        .wait_for(&token, &room, |events| Some(events.to_vec()))
        .await;
    let notices: Vec<&str> = events
        .iter()
        .filter(|e| {
            e["content"]["msgtype"] == "m.notice"
                && e["content"]["m.relates_to"]["rel_type"].is_null()
        })
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    assert_eq!(notices.len(), 2, "{notices:?}");
    assert!(
        notices[1].contains("waits for earlier messages"),
        "{notices:?}"
    );
}

#[tokio::test]
async fn a_message_to_another_matrix_servers_user_needs_their_server() {
    // Federating, the user's server is asked to sign the invite to the direct room: a server
    // that cannot be reached is a `remote-server-timeout`, told to the XMPP user.
    let mut world = world().await;
    world.peer.send(stanza(
        "<message xmlns='jabber:server' type='chat' id='far' from='bob@prosody.test/a' \
         to='carol%unreachable.test@gw.test'><body>hello?</body></message>",
    ));
    let (id, condition, kind) = error_of(&world.next_message().await);
    assert_eq!(
        (id.as_str(), condition.as_str(), kind.as_str()),
        ("far", "remote-server-timeout", "wait")
    );
    // Without federation, another server's user is nobody here.
    let mut world = world_with(|config| config.federation.enabled = false).await;
    world.peer.send(stanza(
        "<message xmlns='jabber:server' type='chat' id='off' from='bob@prosody.test/a' \
         to='carol%matrix.test@gw.test'><body>hello?</body></message>",
    ));
    let (id, condition, _) = error_of(&world.next_message().await);
    assert_eq!(
        (id.as_str(), condition.as_str()),
        ("off", "service-unavailable")
    );
}
