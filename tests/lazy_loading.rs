//! Lazy-loaded members in incremental and gapped syncs: a device gets the member event of a
//! timeline sender once (every time with `include_redundant_members`), each device on its own;
//! a gapped sync carries the state that changed in the gap.

#![allow(clippy::unwrap_used)]

mod common;

use common::{TestServer, query_encode};
use serde_json::{Value, json};

fn members(sync: &Value, room: &str) -> Vec<String> {
    let mut members: Vec<String> = sync["rooms"]["join"][room]["state"]["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter(|event| event["type"] == "m.room.member")
                .map(|event| event["state_key"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default();
    members.sort();
    members
}

fn state_types(sync: &Value, room: &str) -> Vec<String> {
    sync["rooms"]["join"][room]["state"]["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .map(|event| event["type"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn lazy_members_in_incremental_and_gapped_syncs() {
    let server = TestServer::new().await;
    let (alice_id, alice) = server.register("alice").await;
    let room = server
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    let mut users = Vec::new();
    for i in 0..3 {
        let (id, token) = server.register(&format!("user{i}")).await;
        server.join(&token, &room).await;
        users.push((id, token));
    }
    // The first sync's timeline holds none of their joins.
    for i in 0..3 {
        server
            .send_text(&alice, &room, &format!("a{i}"), "hello")
            .await
            .assert_ok();
    }
    let lazy = |redundant: bool| {
        let filter = json!({"room": {"state": {"lazy_load_members": true, "include_redundant_members": redundant},
                                     "timeline": {"limit": 3}}});
        format!("filter={}", query_encode(&filter.to_string()))
    };
    let sync_since = |since: &str, filter: &str| format!("{filter}&since={since}&timeout=0");

    let first = server.sync(&alice, &lazy(false)).await;
    assert_eq!(members(&first, &room), [alice_id.as_str()]);
    let mut since = first["next_batch"].as_str().unwrap().to_owned();

    // user0 speaks: his member event comes with it, once.
    let (user0, user0_token) = &users[0];
    server
        .send_text(user0_token, &room, "u0a", "me too")
        .await
        .assert_ok();
    let sync = server.sync(&alice, &sync_since(&since, &lazy(false))).await;
    assert_eq!(sync["rooms"]["join"][&room]["timeline"]["limited"], false);
    assert_eq!(members(&sync, &room), [user0.as_str()]);
    since = sync["next_batch"].as_str().unwrap().to_owned();
    server
        .send_text(user0_token, &room, "u0b", "again")
        .await
        .assert_ok();
    let sync = server.sync(&alice, &sync_since(&since, &lazy(false))).await;
    assert_eq!(members(&sync, &room), Vec::<String>::new());
    since = sync["next_batch"].as_str().unwrap().to_owned();
    // With include_redundant_members, every time.
    server
        .send_text(user0_token, &room, "u0c", "and again")
        .await
        .assert_ok();
    let sync = server.sync(&alice, &sync_since(&since, &lazy(true))).await;
    assert_eq!(members(&sync, &room), [user0.as_str()]);
    since = sync["next_batch"].as_str().unwrap().to_owned();

    // A gap: user1 says much, the room is renamed in the middle, user2 speaks last.
    let (user1, user1_token) = &users[1];
    let (user2, user2_token) = &users[2];
    for i in 0..3 {
        server
            .send_text(user1_token, &room, &format!("u1{i}"), "chatter")
            .await
            .assert_ok();
    }
    server
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/"),
            &alice,
            json!({"name": "Renamed in the gap"}),
        )
        .await
        .assert_ok();
    for i in 0..3 {
        server
            .send_text(user1_token, &room, &format!("u1b{i}"), "more chatter")
            .await
            .assert_ok();
    }
    server
        .send_text(user2_token, &room, "u2", "hi all")
        .await
        .assert_ok();
    let sync = server.sync(&alice, &sync_since(&since, &lazy(false))).await;
    let joined = &sync["rooms"]["join"][&room];
    assert_eq!(joined["timeline"]["limited"], true);
    assert!(
        state_types(&sync, &room).contains(&"m.room.name".to_owned()),
        "{joined}"
    );
    assert_eq!(members(&sync, &room), [user1.clone(), user2.clone()]);
    since = sync["next_batch"].as_str().unwrap().to_owned();

    // Another device of Alice's has its own record.
    let login = server.login("alice", "secret-pw").await;
    let laptop = login["access_token"].as_str().unwrap().to_owned();
    let laptop_first = server.sync(&laptop, &lazy(false)).await;
    assert_eq!(
        members(&laptop_first, &room),
        [alice_id.clone(), user1.clone(), user2.clone()]
    );
    let laptop_since = laptop_first["next_batch"].as_str().unwrap().to_owned();
    server
        .send_text(user0_token, &room, "u0d", "back")
        .await
        .assert_ok();
    // The phone has had user0's member event; the laptop has not.
    let phone = server.sync(&alice, &sync_since(&since, &lazy(false))).await;
    assert_eq!(members(&phone, &room), Vec::<String>::new());
    let laptop_sync = server
        .sync(&laptop, &sync_since(&laptop_since, &lazy(false)))
        .await;
    assert_eq!(members(&laptop_sync, &room), [user0.as_str()]);
    // Without lazy loading, an incremental sync without a gap has no state.
    let plain = server
        .sync(&alice, &format!("since={since}&timeout=0"))
        .await;
    assert_eq!(state_types(&plain, &room), Vec::<String>::new());
}

/// A sync has no `null` where clients expect an object (matrix-nio validates every response):
/// sections with nothing in them are left out, not sent as `null`.
#[tokio::test]
async fn sync_has_no_nulls() {
    let server = TestServer::new().await;
    let (_, alice) = server.register("alice").await;
    let (_, bob) = server.register("bob").await;
    let room = server.create_room(&alice, json!({"name": "x"})).await;
    server.send_text(&alice, &room, "t", "hi").await.assert_ok();
    fn nulls(path: &str, value: &Value, found: &mut Vec<String>) {
        match value {
            Value::Null => found.push(path.to_owned()),
            Value::Object(map) => {
                for (key, value) in map {
                    nulls(&format!("{path}.{key}"), value, found);
                }
            }
            Value::Array(items) => {
                for (i, value) in items.iter().enumerate() {
                    nulls(&format!("{path}[{i}]"), value, found);
                }
            }
            _ => {}
        }
    }
    // Bob is in no room; Alice is in one.
    for (token, query) in [(&bob, "timeout=0"), (&alice, "full_state=true&timeout=0")] {
        let sync = server.sync(token, query).await;
        let mut found = Vec::new();
        nulls("", &sync, &mut found);
        assert!(found.is_empty(), "nulls at {found:?} in {sync}");
    }
}
