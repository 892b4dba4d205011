//! The bridge in one process: the homeserver with its XMPP side, and a peer server playing
//! `prosody.test` that records what reaches it. Alice is a local account; Bob and Carol are
//! XMPP users on the peer.

// The helpers above the tests unwrap like the tests do.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use causeway_config::{ServerName, XmppRoute};
use causeway_xmpp::server::{Endpoint, S2s};
use causeway_xmpp::stanza::Stanza;
use causeway_xmpp::testing::TestCa;
use common::TestServer;
use minidom::Element;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use xmpp_parsers::message::{Message, MessageType};

const BOB: &str = "@_xmpp_bob=40prosody.test:gw.test";
const CAROL: &str = "@_xmpp_carol=40prosody.test:gw.test";

struct World {
    ca: TestCa,
    /// Where the server expects `later.test`, which is not there at first.
    later: std::net::SocketAddr,
    server: TestServer,
    _xmpp: causeway::xmpp::Xmpp,
    peer: Arc<S2s>,
    seen: mpsc::UnboundedReceiver<Stanza>,
    alice: String,
}

async fn world() -> World {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = TestCa::new("Causeway test CA");
    let (peer, seen) = common::peer::start(&ca, "prosody.test").await;
    let peer_address = peer.local_addresses()[0].0;
    let gateway = ca.leaf(&["gw.test", "muc.gw.test"]);
    let gateway_address = common::peer::free_address();
    let later = common::peer::free_address();
    let server = TestServer::with_config(|config| {
        let dir = config.server.data_dir.clone();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("gw.crt"), &gateway.cert_pem).unwrap();
        std::fs::write(dir.join("gw.key"), &gateway.key_pem).unwrap();
        std::fs::write(dir.join("ca.crt"), ca.root_pem()).unwrap();
        config.server.name = ServerName::try_from("gw.test").unwrap();
        config.xmpp.listen_starttls = vec![gateway_address];
        config.xmpp.listen_direct_tls = vec![];
        config.xmpp.tls_certificate = Some(dir.join("gw.crt"));
        config.xmpp.tls_private_key = Some(dir.join("gw.key"));
        config.xmpp.ca_files = vec![dir.join("ca.crt")];
        config.xmpp.system_roots = false;
        config.xmpp.routes = vec![
            XmppRoute {
                domain: "prosody.test".into(),
                address: peer_address,
                direct_tls: false,
            },
            // Nothing listens there at first.
            XmppRoute {
                domain: "later.test".into(),
                address: later,
                direct_tls: false,
            },
        ];
    })
    .await;
    let config = server.services.config.clone();
    causeway::init_logging(&config);
    let xmpp = causeway::xmpp::start(&config, server.services.clone())
        .await
        .unwrap();
    for domain in ["gw.test", "muc.gw.test"] {
        peer.set_route(
            domain,
            vec![Endpoint {
                address: gateway_address,
                direct_tls: false,
            }],
        );
    }
    let (alice, _) = server.register("alice").await;
    World {
        ca,
        later,
        server,
        _xmpp: xmpp,
        peer,
        seen,
        alice,
    }
}

/// A message stanza as the peer sends it.
fn stanza(xml: &str) -> Stanza {
    let element: Element = xml.parse().unwrap();
    causeway_xmpp::stanza::accept_inbound(element, |_| true, |_| true).expect("a valid stanza")
}

fn chat(from: &str, id: &str, inner: &str) -> Stanza {
    stanza(&format!(
        "<message xmlns='jabber:server' type='chat' id='{id}' from='{from}' to='alice@gw.test'>\
         {inner}</message>"
    ))
}

impl World {
    async fn token(&self) -> String {
        let (token, _) = self
            .server
            .services
            .login_device(&ruma::UserId::parse(&self.alice).unwrap(), None, None, None)
            .await
            .unwrap();
        token
    }

    async fn redact(&self, token: &str, room: &str, event_id: &str, txn: &str) {
        self.server
            .put(
                &format!(
                    "/_matrix/client/v3/rooms/{room}/redact/{}/{txn}",
                    common::encode(event_id)
                ),
                token,
                json!({}),
            )
            .await
            .assert_ok();
    }

    /// The next stanza the peer receives.
    async fn next(&mut self) -> Stanza {
        tokio::time::timeout(Duration::from_secs(10), self.seen.recv())
            .await
            .expect("a stanza in time")
            .unwrap()
    }

    async fn next_message(&mut self) -> Message {
        loop {
            if let Stanza::Message(message) = self.next().await {
                return message;
            }
        }
    }

    /// Waits until `check` finds what it wants in a room's timeline (as Alice sees it).
    async fn wait_for<T>(
        &self,
        token: &str,
        room: &str,
        mut check: impl FnMut(&[Value]) -> Option<T>,
    ) -> T {
        for _ in 0..100 {
            let response = self
                .server
                .get(
                    &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=50"),
                    token,
                )
                .await;
            let body = response.json();
            let mut events: Vec<Value> = body["chunk"].as_array().cloned().unwrap_or_default();
            events.reverse();
            if let Some(found) = check(&events) {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the room never showed what was expected");
    }

    /// The room Alice was invited to by a ghost, once there is one.
    async fn invited_room(&self, token: &str) -> String {
        for _ in 0..100 {
            let sync = self.server.sync(token, "timeout=0").await;
            if let Some(invites) = sync["rooms"]["invite"].as_object()
                && let Some(room) = invites.keys().next()
            {
                return room.clone();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no invite came");
    }
}

fn messages<'a>(events: &'a [Value], sender: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["type"] == "m.room.message" && e["sender"] == sender)
        .collect()
}

fn payload<'a>(message: &'a Message, name: &str, namespace: &str) -> &'a Element {
    message
        .payloads
        .iter()
        .find(|p| p.is(name, namespace))
        .unwrap_or_else(|| panic!("no {name} in {message:?}"))
}

fn body(message: &Message) -> &str {
    message
        .bodies
        .values()
        .next()
        .map(String::as_str)
        .unwrap_or("")
}

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
    world.server.join(&token, &room).await;
    let first = world
        .wait_for(&token, &room, |events| {
            messages(events, BOB).first().map(|e| (*e).clone())
        })
        .await;
    assert_eq!(first["content"]["body"], "Hi *Alice*");
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
        .wait_for(&token, &room, |events| {
            events
                .iter()
                .any(|e| {
                    e["state_key"] == "@_xmpp_erin=40later.test:gw.test"
                        && e["content"]["membership"] == "join"
                })
                .then_some(())
        })
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

impl World {
    /// The presence stanzas the peer receives within `wait`.
    async fn presences(&mut self, wait: Duration) -> Vec<xmpp_parsers::presence::Presence> {
        let mut found = Vec::new();
        let deadline = tokio::time::Instant::now() + wait;
        while let Ok(Some(stanza)) = tokio::time::timeout_at(deadline, self.seen.recv()).await {
            if let Stanza::Presence(presence) = stanza {
                found.push(presence);
            }
        }
        found
    }

    async fn ghost_presence(&self, token: &str, ghost: &str) -> Value {
        self.server
            .get(
                &format!("/_matrix/client/v3/presence/{ghost}/status"),
                token,
            )
            .await
            .assert_ok()
    }
}

#[tokio::test]
async fn presence_and_subscriptions() {
    use xmpp_parsers::presence::{Show, Type};
    let mut world = world().await;
    let token = world.token().await;
    world.peer.send(stanza(
        "<presence xmlns='jabber:server' type='subscribe' from='bob@prosody.test' \
         to='alice@gw.test'/>",
    ));
    let room = world.invited_room(&token).await;
    world.server.join(&token, &room).await;
    let request = world
        .wait_for(&token, &room, |events| {
            events
                .iter()
                .find(|e| e["content"]["msgtype"] == "m.notice")
                .cloned()
        })
        .await;
    assert_eq!(request["sender"], BOB);
    assert_eq!(
        request["content"]["body"],
        "bob@prosody.test asks to see when you are online. \
         React with 👍 to allow it or with 👎 to decline."
    );
    // Joining the chat asked for Bob's presence.
    let presences = world.presences(Duration::from_millis(500)).await;
    assert!(
        presences.iter().any(|p| p.type_ == Type::Subscribe
            && p.from.as_ref().unwrap().to_string() == "alice@gw.test"
            && p.to.as_ref().unwrap().to_string() == "bob@prosody.test"),
        "{presences:?}"
    );
    // The same request again makes no second notice.
    world.peer.send(stanza(
        "<presence xmlns='jabber:server' type='subscribe' from='bob@prosody.test' \
         to='alice@gw.test'/>",
    ));
    assert!(world.presences(Duration::from_millis(300)).await.is_empty());
    world
        .server
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/send/m.reaction/r1"),
            &token,
            json!({"m.relates_to": {"rel_type": "m.annotation",
                   "event_id": request["event_id"], "key": "👍"}}),
        )
        .await
        .assert_ok();
    let presences = world.presences(Duration::from_millis(800)).await;
    let kinds: Vec<Type> = presences.iter().map(|p| p.type_.clone()).collect();
    // Allowed once, and Bob learns her presence (online: her client syncs).
    assert_eq!(kinds, [Type::Subscribed, Type::None], "{presences:?}");
    let answered = world
        .wait_for(&token, &room, |events| {
            events
                .iter()
                .find(|e| {
                    e["content"]["m.relates_to"]["rel_type"] == "m.replace"
                        && e["content"]["m.relates_to"]["event_id"] == request["event_id"]
                })
                .cloned()
        })
        .await;
    assert_eq!(
        answered["content"]["m.new_content"]["body"],
        "bob@prosody.test now sees when you are online."
    );
    let notices = world
        .wait_for(&token, &room, |events| Some(events.to_vec()))
        .await
        .into_iter()
        .filter(|e| e["content"]["msgtype"] == "m.notice" && e["content"]["m.relates_to"].is_null())
        .count();
    assert_eq!(notices, 1, "one request, one notice");

    // Bob accepts Alice's request and is away on his phone, online on his laptop. (An
    // approval nobody asked for would be ignored: Alice asked when she joined.)
    world.peer.send(stanza(
        "<presence xmlns='jabber:server' type='subscribed' from='bob@prosody.test' \
         to='alice@gw.test'/>",
    ));
    world.peer.send(stanza(
        "<presence xmlns='jabber:server' from='bob@prosody.test/phone' to='alice@gw.test'>\
         <show>away</show><status>lunch</status></presence>",
    ));
    let mut presence = Value::Null;
    for _ in 0..100 {
        presence = world.ghost_presence(&token, BOB).await;
        if presence["presence"] == "unavailable" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(presence["presence"], "unavailable", "{presence}");
    assert_eq!(presence["status_msg"], "lunch");
    world.peer.send(stanza(
        "<presence xmlns='jabber:server' from='bob@prosody.test/laptop' to='alice@gw.test'/>",
    ));
    for _ in 0..100 {
        presence = world.ghost_presence(&token, BOB).await;
        if presence["presence"] == "online" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        presence["presence"], "online",
        "the most available resource counts"
    );
    for resource in ["phone", "laptop"] {
        world.peer.send(stanza(&format!(
            "<presence xmlns='jabber:server' type='unavailable' from='bob@prosody.test/{resource}' \
             to='alice@gw.test'/>"
        )));
    }
    for _ in 0..100 {
        presence = world.ghost_presence(&token, BOB).await;
        if presence["presence"] == "offline" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(presence["presence"], "offline");

    // Alice's presence reaches Bob, who may see it.
    world
        .server
        .put(
            &format!("/_matrix/client/v3/presence/{}/status", world.alice),
            &token,
            json!({"presence": "unavailable", "status_msg": "in a meeting"}),
        )
        .await
        .assert_ok();
    let presences = world.presences(Duration::from_millis(800)).await;
    let away = presences
        .iter()
        .find(|p| p.type_ == Type::None)
        .unwrap_or_else(|| panic!("{presences:?}"));
    assert_eq!(away.show, Some(Show::Away));
    assert_eq!(
        away.statuses.values().next().map(String::as_str),
        Some("in a meeting")
    );
    // A probe gets her presence; Bob's unsubscribe is confirmed, and he hears no more.
    world.peer.send(stanza(
        "<presence xmlns='jabber:server' type='probe' from='bob@prosody.test' to='alice@gw.test'/>",
    ));
    let presences = world.presences(Duration::from_millis(500)).await;
    assert!(
        presences.iter().any(|p| p.show == Some(Show::Away)),
        "{presences:?}"
    );
    world.peer.send(stanza(
        "<presence xmlns='jabber:server' type='unsubscribe' from='bob@prosody.test' \
         to='alice@gw.test'/>",
    ));
    let presences = world.presences(Duration::from_millis(500)).await;
    assert!(
        presences.iter().any(|p| p.type_ == Type::Unsubscribed),
        "{presences:?}"
    );
    world
        .server
        .put(
            &format!("/_matrix/client/v3/presence/{}/status", world.alice),
            &token,
            json!({"presence": "online"}),
        )
        .await
        .assert_ok();
    let presences = world.presences(Duration::from_millis(500)).await;
    assert!(presences.is_empty(), "{presences:?}");
}

#[tokio::test]
async fn profiles_both_ways() {
    use base64::Engine;
    use xmpp_parsers::iq::Iq;
    let mut world = world().await;
    let token = world.token().await;
    world
        .peer
        .send(chat("bob@prosody.test/phone", "p1", "<body>hello</body>"));
    // The gateway asks for Bob's vCard; the peer answers for him.
    let request = loop {
        if let Stanza::Iq(iq @ Iq::Get { .. }) = world.next().await {
            break iq;
        }
    };
    let Iq::Get {
        id, payload, to, ..
    } = &request
    else {
        unreachable!()
    };
    assert!(payload.is("vCard", "vcard-temp"));
    assert_eq!(to.as_ref().unwrap().to_string(), "bob@prosody.test");
    let photo = b"\x89PNG\r\n\x1a\nnot really a picture";
    let encoded = base64::engine::general_purpose::STANDARD.encode(photo);
    world.peer.send(stanza(&format!(
        "<iq xmlns='jabber:server' type='result' id='{id}' from='bob@prosody.test' to='gw.test'>\
         <vCard xmlns='vcard-temp'><FN>Bob Builder</FN><NICKNAME>bob</NICKNAME>\
         <PHOTO><TYPE>image/png</TYPE><BINVAL>{encoded}</BINVAL></PHOTO></vCard></iq>"
    )));
    let mut profile = Value::Null;
    for _ in 0..100 {
        profile = world
            .server
            .get(&format!("/_matrix/client/v3/profile/{BOB}"), &token)
            .await
            .assert_ok();
        if profile["avatar_url"].is_string() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(profile["displayname"], "Bob Builder", "{profile}");
    let avatar = profile["avatar_url"].as_str().unwrap();
    let media = avatar.strip_prefix("mxc://").unwrap();
    let download = world
        .server
        .get(
            &format!("/_matrix/client/v1/media/download/{media}"),
            &token,
        )
        .await;
    assert_eq!(download.body, photo);

    // Alice's profile is her vCard.
    let upload = world
        .server
        .raw(
            http::Method::POST,
            "/_matrix/media/v3/upload?filename=alice.png",
            Some(&token),
            Some("image/png"),
            b"alice's picture".to_vec(),
        )
        .await
        .assert_ok();
    for (field, value) in [
        ("displayname", json!({"displayname": "Alice Liddell"})),
        ("avatar_url", json!({"avatar_url": upload["content_uri"]})),
    ] {
        world
            .server
            .put(
                &format!("/_matrix/client/v3/profile/{}/{field}", world.alice),
                &token,
                value,
            )
            .await
            .assert_ok();
    }
    world.peer.send(stanza(
        "<iq xmlns='jabber:server' type='get' id='v1' from='bob@prosody.test/phone' \
         to='alice@gw.test'><vCard xmlns='vcard-temp'/></iq>",
    ));
    let answer = loop {
        if let Stanza::Iq(iq @ Iq::Result { .. }) = world.next().await {
            break iq;
        }
    };
    let Iq::Result {
        id,
        payload: Some(payload),
        to,
        ..
    } = answer
    else {
        panic!("{answer:?}");
    };
    assert_eq!(id, "v1");
    assert_eq!(to.unwrap().to_string(), "bob@prosody.test/phone");
    let vcard = xmpp_parsers::vcard::VCard::try_from(payload).unwrap();
    let photo = vcard.photo.unwrap();
    assert_eq!(photo.binval.data, b"alice's picture");
    assert_eq!(photo.type_.data, "image/png");
    let name = vcard
        .payloads
        .iter()
        .find(|e| e.name() == "FN")
        .map(Element::text);
    assert_eq!(name.as_deref(), Some("Alice Liddell"));
    // Nobody's vCard: an error, not an empty card.
    world.peer.send(stanza(
        "<iq xmlns='jabber:server' type='get' id='v2' from='bob@prosody.test/phone' \
         to='nobody@gw.test'><vCard xmlns='vcard-temp'/></iq>",
    ));
    let answer = loop {
        if let Stanza::Iq(iq @ (Iq::Error { .. } | Iq::Result { .. })) = world.next().await {
            break iq;
        }
    };
    assert!(
        matches!(&answer, Iq::Error { id, error, .. } if id == "v2"
            && error.defined_condition == xmpp_parsers::stanza_error::DefinedCondition::ServiceUnavailable),
        "{answer:?}"
    );
}
