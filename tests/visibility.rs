//! History visibility as a table: each `m.room.history_visibility` × each history of Bob's
//! membership × each endpoint that shows events or state.
//!
//! In every room Alice speaks in phases: `before` anything happens to Bob, `invited` while Bob
//! is invited, `joined` while he is joined, `after` he left, rejected or was banned. In the
//! `after` phase she also renames the room, which a former member must not see.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;

use common::{TestServer, bodies, encode, query_encode};
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq)]
enum History {
    /// Bob never had anything to do with the room.
    Never,
    /// Invited, and still invited.
    InvitedNow,
    /// Invited, then he rejected the invite.
    InvitedRejected,
    /// Invited, joined, then left.
    JoinedLeft,
    /// Banned before he ever joined.
    BannedFirst,
    /// Invited and joined, and still there.
    JoinedNow,
}

use History::*;

const HISTORIES: [History; 6] = [
    Never,
    InvitedNow,
    InvitedRejected,
    JoinedLeft,
    BannedFirst,
    JoinedNow,
];

/// What Bob may read, by the specification's rule, written out case by case.
fn expected(visibility: &str, history: History) -> &'static [&'static str] {
    match (visibility, history) {
        ("world_readable", Never | BannedFirst) => &["before", "after"],
        ("world_readable", InvitedNow) => &["before", "invited"],
        ("world_readable", InvitedRejected) => &["before", "invited", "after"],
        ("world_readable", JoinedLeft) => &["before", "invited", "joined", "after"],
        ("world_readable", JoinedNow) => &["before", "invited", "joined"],
        // `shared`: everything up to the end of his membership, once he has joined.
        ("shared", JoinedLeft | JoinedNow) => &["before", "invited", "joined"],
        // `invited`: from his invite on, while invited or joined.
        ("invited", InvitedNow | InvitedRejected) => &["invited"],
        ("invited", JoinedLeft | JoinedNow) => &["invited", "joined"],
        // `joined`: only while joined.
        ("joined", JoinedLeft | JoinedNow) => &["joined"],
        _ => &[],
    }
}

struct Case {
    room: String,
    /// Message bodies to their event ids.
    events: Vec<(String, String)>,
}

struct Table {
    server: TestServer,
    alice: String,
    bob: String,
    bob_token: String,
}

impl Table {
    async fn say(&self, room: &str, body: &str, events: &mut Vec<(String, String)>) {
        let id = self
            .server
            .send_text(&self.alice, room, &format!("{room}-{body}"), body)
            .await
            .assert_ok()["event_id"]
            .as_str()
            .unwrap()
            .to_owned();
        events.push((body.to_owned(), id));
    }

    async fn act(&self, token: &str, room: &str, action: &str, body: Value) {
        self.server
            .post(
                &format!("/_matrix/client/v3/rooms/{room}/{action}"),
                token,
                body,
            )
            .await
            .assert_ok();
    }

    async fn case(&self, visibility: &str, history: History) -> Case {
        let room = self
            .server
            .create_room(
                &self.alice,
                json!({
                    "preset": "private_chat",
                    "name": "first name",
                    "initial_state": [{
                        "type": "m.room.history_visibility",
                        "state_key": "",
                        "content": {"history_visibility": visibility},
                    }],
                }),
            )
            .await;
        let mut events = vec![];
        let bob = json!({"user_id": self.bob});
        self.say(&room, "before", &mut events).await;
        match history {
            Never => {}
            BannedFirst => self.act(&self.alice, &room, "ban", bob.clone()).await,
            _ => {
                self.act(&self.alice, &room, "invite", bob.clone()).await;
                self.say(&room, "invited", &mut events).await;
            }
        }
        match history {
            InvitedRejected => self.act(&self.bob_token, &room, "leave", json!({})).await,
            JoinedLeft | JoinedNow => {
                self.server.join(&self.bob_token, &room).await;
                self.say(&room, "joined", &mut events).await;
                if history == JoinedLeft {
                    self.act(&self.bob_token, &room, "leave", json!({})).await;
                }
            }
            _ => {}
        }
        if !matches!(history, InvitedNow | JoinedNow) {
            self.say(&room, "after", &mut events).await;
            self.server
                .put(
                    &format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/"),
                    &self.alice,
                    json!({"name": "later name"}),
                )
                .await
                .assert_ok();
        }
        Case { room, events }
    }
}

fn set(items: impl IntoIterator<Item = String>) -> BTreeSet<String> {
    items.into_iter().collect()
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn history_visibility_table() {
    let server = TestServer::new().await;
    let (_, alice) = server.register("alice").await;
    let (bob, bob_token) = server.register("bob").await;
    let table = Table {
        server,
        alice,
        bob,
        bob_token,
    };
    let server = &table.server;
    let token = &table.bob_token;
    let mut cases = vec![];
    for visibility in ["world_readable", "shared", "invited", "joined"] {
        for history in HISTORIES {
            cases.push((visibility, history, table.case(visibility, history).await));
        }
    }
    let left_filter = query_encode(
        &json!({"room": {"include_leave": true, "timeline": {"limit": 50}}}).to_string(),
    );
    let sync = server.sync(token, &format!("filter={left_filter}")).await;

    for (visibility, history, case) in &cases {
        let what = format!("{visibility} × {history:?}");
        let room = &case.room;
        let wanted = names(expected(visibility, *history));
        let nothing = wanted.is_empty();

        // /messages
        let messages = server
            .get(
                &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=100"),
                token,
            )
            .await;
        if nothing {
            messages.assert_error(403, "M_FORBIDDEN");
        } else {
            let chunk = messages.assert_ok()["chunk"].clone();
            assert_eq!(set(bodies(&chunk)), wanted, "/messages, {what}");
            // Forwards from the start, too.
            let forward = server
                .get(
                    &format!("/_matrix/client/v3/rooms/{room}/messages?dir=f&limit=100"),
                    token,
                )
                .await
                .assert_ok();
            assert_eq!(
                set(bodies(&forward["chunk"])),
                wanted,
                "/messages forwards, {what}"
            );
        }

        for (body, event_id) in &case.events {
            let seen = wanted.contains(body);
            // /event
            let event = server
                .get(
                    &format!("/_matrix/client/v3/rooms/{room}/event/{}", encode(event_id)),
                    token,
                )
                .await;
            if seen {
                assert_eq!(event.assert_ok()["content"]["body"], *body, "{what}");
            } else {
                event.assert_error(404, "M_NOT_FOUND");
            }
            // /context
            let context = server
                .get(
                    &format!(
                        "/_matrix/client/v3/rooms/{room}/context/{}?limit=20",
                        encode(event_id)
                    ),
                    token,
                )
                .await;
            if seen {
                let context = context.assert_ok();
                let around: BTreeSet<String> = set(bodies(&context["events_before"]))
                    .into_iter()
                    .chain(bodies(&context["events_after"]))
                    .chain([body.clone()])
                    .collect();
                assert_eq!(around, wanted, "/context of {body}, {what}");
            } else if nothing {
                context.assert_error(403, "M_FORBIDDEN");
            } else {
                context.assert_error(404, "M_NOT_FOUND");
            }
        }

        // /state, /state/m.room.name, /members: the state at the last event Bob may see.
        let name_seen = match () {
            _ if nothing => None,
            _ if wanted.contains("after") => Some("later name"),
            _ => Some("first name"),
        };
        let state = server
            .get(&format!("/_matrix/client/v3/rooms/{room}/state"), token)
            .await;
        let name = server
            .get(
                &format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/"),
                token,
            )
            .await;
        let members = server
            .get(&format!("/_matrix/client/v3/rooms/{room}/members"), token)
            .await;
        match name_seen {
            None => {
                state.assert_error(403, "M_FORBIDDEN");
                name.assert_error(403, "M_FORBIDDEN");
                members.assert_error(403, "M_FORBIDDEN");
            }
            Some(expected_name) => {
                let state = state.assert_ok();
                let names: Vec<&Value> = state
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|e| e["type"] == "m.room.name")
                    .map(|e| &e["content"]["name"])
                    .collect();
                assert_eq!(names, [&json!(expected_name)], "/state, {what}");
                assert_eq!(name.assert_ok()["name"], expected_name, "{what}");
                assert!(
                    members.assert_ok()["chunk"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|e| e["state_key"] == table.bob || *visibility == "world_readable"),
                    "/members, {what}"
                );
            }
        }

        // Sync: the joined room's timeline, the left room's timeline, the invite.
        let section = match history {
            JoinedNow => "join",
            InvitedNow => "invite",
            Never => "none",
            _ => "leave",
        };
        for other in ["join", "invite", "leave"] {
            if other != section {
                assert!(
                    sync["rooms"][other][room.as_str()].is_null(),
                    "sync {other}, {what}"
                );
            }
        }
        match section {
            "join" | "leave" => {
                let timeline = &sync["rooms"][section][room.as_str()]["timeline"]["events"];
                // A left room's timeline ends with his leave.
                let mut wanted = wanted.clone();
                wanted.remove("after");
                assert_eq!(
                    set(bodies(timeline)),
                    wanted,
                    "sync {section} timeline, {what}"
                );
                if section == "leave" {
                    // The reason the room is there, his own leave or ban, is always shown.
                    let last = timeline.as_array().unwrap().last().unwrap();
                    assert_eq!(last["state_key"], table.bob, "{what}");
                }
            }
            "invite" => assert!(
                sync["rooms"]["invite"][room.as_str()]["invite_state"].is_object(),
                "sync invite, {what}"
            ),
            _ => {}
        }
    }
}

/// Visibility applies at the time of each event: Alice speaks under `shared`, switches to
/// `joined`, speaks again; Bob joins later and sees the first part, not the second.
#[tokio::test]
async fn visibility_changed_halfway() {
    let server = TestServer::new().await;
    let (_, alice) = server.register("alice").await;
    let (bob, bob_token) = server.register("bob").await;
    let room = server
        .create_room(&alice, json!({"preset": "private_chat"}))
        .await;
    server
        .send_text(&alice, &room, "t1", "shared part")
        .await
        .assert_ok();
    server
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.history_visibility/"),
            &alice,
            json!({"history_visibility": "joined"}),
        )
        .await
        .assert_ok();
    server
        .send_text(&alice, &room, "t2", "joined part")
        .await
        .assert_ok();
    server
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/invite"),
            &alice,
            json!({"user_id": bob}),
        )
        .await
        .assert_ok();
    server.join(&bob_token, &room).await;
    server
        .send_text(&alice, &room, "t3", "welcome")
        .await
        .assert_ok();
    let messages = server.messages(&bob_token, &room).await;
    assert_eq!(bodies(&messages["chunk"]), ["welcome", "shared part"]);
    // The change of visibility itself is visible: the old value allowed it.
    assert!(
        messages["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.room.history_visibility")
    );
    let sync = server.sync(&bob_token, "").await;
    assert_eq!(
        bodies(&sync["rooms"]["join"][room.as_str()]["timeline"]["events"]),
        ["shared part", "welcome"]
    );
}
