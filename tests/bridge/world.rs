//! The world of the bridge tests: the server with its XMPP side, the peer, Alice, and what
//! the tests read from them.

use std::sync::Arc;
use std::time::Duration;

use causeway_config::{ServerName, XmppRoute};
use causeway_xmpp::server::{Endpoint, S2s};
use causeway_xmpp::stanza::Stanza;
use causeway_xmpp::testing::TestCa;
use minidom::Element;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use xmpp_parsers::message::Message;

use crate::common::{self, TestServer};

pub const BOB: &str = "@_xmpp_bob=40prosody.test:gw.test";
pub const CAROL: &str = "@_xmpp_carol=40prosody.test:gw.test";

pub struct World {
    pub ca: TestCa,
    /// Where the server expects `later.test`, which is not there at first.
    pub later: std::net::SocketAddr,
    pub server: TestServer,
    pub _xmpp: causeway::xmpp::Xmpp,
    pub peer: Arc<S2s>,
    pub seen: mpsc::UnboundedReceiver<Stanza>,
    pub alice: String,
}

pub async fn world() -> World {
    world_with(|_| {}).await
}

/// The world with a change to the server's configuration. The peer serves `other.test` too.
pub async fn world_with(change: impl FnOnce(&mut causeway_config::Config)) -> World {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = TestCa::new("Causeway test CA");
    let (peer, seen) = common::peer::start_serving(
        &ca,
        &["prosody.test", "other.test"],
        "127.0.0.1:0".parse().unwrap(),
    )
    .await;
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
            XmppRoute {
                domain: "other.test".into(),
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
        change(config);
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
pub fn stanza(xml: &str) -> Stanza {
    let element: Element = xml.parse().unwrap();
    causeway_xmpp::stanza::accept_inbound(element, |_| true, |_| true).expect("a valid stanza")
}

pub fn chat(from: &str, id: &str, inner: &str) -> Stanza {
    stanza(&format!(
        "<message xmlns='jabber:server' type='chat' id='{id}' from='{from}' to='alice@gw.test'>\
         {inner}</message>"
    ))
}

impl World {
    pub async fn token(&self) -> String {
        let (token, _) = self
            .server
            .services
            .login_device(&ruma::UserId::parse(&self.alice).unwrap(), None, None, None)
            .await
            .unwrap();
        token
    }

    pub async fn redact(&self, token: &str, room: &str, event_id: &str, txn: &str) {
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
    pub async fn next(&mut self) -> Stanza {
        tokio::time::timeout(Duration::from_secs(10), self.seen.recv())
            .await
            .expect("a stanza in time")
            .unwrap()
    }

    pub async fn next_message(&mut self) -> Message {
        loop {
            if let Stanza::Message(message) = self.next().await {
                return message;
            }
        }
    }

    /// Waits until `check` finds what it wants in a room's timeline (as Alice sees it).
    pub async fn wait_for<T>(
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

    /// Waits until `user`'s membership in a room is `membership` (as Alice sees it).
    pub async fn wait_member(&self, token: &str, room: &str, user: &str, membership: &str) {
        self.wait_for(token, room, |events| {
            events
                .iter()
                .any(|e| e["state_key"] == user && e["content"]["membership"] == membership)
                .then_some(())
        })
        .await;
    }

    /// The direct chat Alice was invited to by a ghost, once there is one.
    pub async fn invited_room(&self, token: &str) -> String {
        for _ in 0..100 {
            let sync = self.server.sync(token, "timeout=0").await;
            if let Some(invites) = sync["rooms"]["invite"].as_object()
                && let Some((room, invite)) = invites.iter().next()
            {
                // Ghosts invite to direct chats; the invite says so, and the room is already in
                // `m.direct` in the same response, so that the client shows it as a direct chat
                // at once.
                let direct_invite = invite["invite_state"]["events"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|e| e["type"] == "m.room.member" && e["content"]["is_direct"] == true);
                assert!(direct_invite, "not a direct invite: {invite}");
                let listed = sync["account_data"]["events"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|e| e["type"] == "m.direct")
                    .flat_map(|e| {
                        e["content"]
                            .as_object()
                            .into_iter()
                            .flat_map(|m| m.values())
                    })
                    .any(|rooms| rooms.as_array().is_some_and(|r| r.contains(&json!(room))));
                assert!(
                    listed,
                    "the direct invite to {room} came before m.direct: {sync}"
                );
                return room.clone();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no invite came");
    }
}

pub fn messages<'a>(events: &'a [Value], sender: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["type"] == "m.room.message" && e["sender"] == sender)
        .collect()
}

/// The id, the condition and the type of an error answer.
pub fn error_of(answer: &Message) -> (String, String, String) {
    assert_eq!(
        answer.type_,
        xmpp_parsers::message::MessageType::Error,
        "{answer:?}"
    );
    let error = answer
        .payloads
        .iter()
        .find(|p| p.name() == "error")
        .unwrap();
    let condition = error
        .children()
        .find(|c| c.ns() == "urn:ietf:params:xml:ns:xmpp-stanzas" && c.name() != "text")
        .map(|c| c.name().to_owned())
        .unwrap_or_default();
    (
        answer.id.clone().map(|id| id.0).unwrap_or_default(),
        condition,
        error.attr("type").unwrap_or_default().to_owned(),
    )
}

pub fn payload<'a>(message: &'a Message, name: &str, namespace: &str) -> &'a Element {
    message
        .payloads
        .iter()
        .find(|p| p.is(name, namespace))
        .unwrap_or_else(|| panic!("no {name} in {message:?}"))
}

pub fn body(message: &Message) -> &str {
    message
        .bodies
        .values()
        .next()
        .map(String::as_str)
        .unwrap_or("")
}

impl World {
    /// The presence stanzas the peer receives within `wait`.
    pub async fn presences(&mut self, wait: Duration) -> Vec<xmpp_parsers::presence::Presence> {
        let mut found = Vec::new();
        let deadline = tokio::time::Instant::now() + wait;
        while let Ok(Some(stanza)) = tokio::time::timeout_at(deadline, self.seen.recv()).await {
            if let Stanza::Presence(presence) = stanza {
                found.push(presence);
            }
        }
        found
    }

    /// The presences the peer receives until `enough` holds of them (or ten seconds pass).
    pub async fn presences_until(
        &mut self,
        enough: impl Fn(&[xmpp_parsers::presence::Presence]) -> bool,
    ) -> Vec<xmpp_parsers::presence::Presence> {
        let mut found = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !enough(&found)
            && let Ok(Some(stanza)) = tokio::time::timeout_at(deadline, self.seen.recv()).await
        {
            if let Stanza::Presence(presence) = stanza {
                found.push(presence);
            }
        }
        found
    }

    /// Alice sets her presence.
    pub async fn alice_is(&self, token: &str, presence: &str, status: &str) {
        self.server
            .put(
                &format!("/_matrix/client/v3/presence/{}/status", self.alice),
                token,
                json!({ "presence": presence, "status_msg": status }),
            )
            .await
            .assert_ok();
    }

    pub async fn ghost_presence(&self, token: &str, ghost: &str) -> Value {
        self.server
            .get(
                &format!(
                    "/_matrix/client/v3/presence/{}/status",
                    ghost.replace('/', "%2F")
                ),
                token,
            )
            .await
            .assert_ok()
    }
}

/// The show (in lower case) and status of a presence.
pub fn show_and_status(
    presence: &xmpp_parsers::presence::Presence,
) -> (Option<String>, Option<String>) {
    (
        presence
            .show
            .as_ref()
            .map(|show| format!("{show:?}").to_lowercase()),
        presence.statuses.values().next().cloned(),
    )
}
