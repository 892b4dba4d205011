//! Rooms: creation, membership, authorization, messages, state, redaction, aliases, directory.

mod common;

use common::{TestServer, bodies, encode};
use serde_json::json;

#[tokio::test]
async fn create_invite_join_and_talk_in_every_room_version() {
    for version in ["6", "7", "8", "9", "10", "11", "12"] {
        let server = TestServer::new().await;
        let (alice, alice_token) = server.register("alice").await;
        let (bob, bob_token) = server.register("bob").await;
        let room = server
            .create_room(
                &alice_token,
                json!({"room_version": version, "name": "Lobby", "topic": "talk", "invite": [bob], "is_direct": true}),
            )
            .await;
        if version == "12" {
            assert!(
                !room.contains(':'),
                "version 12 room ids have no server part: {room}"
            );
        } else {
            assert!(room.ends_with(":test.example"), "{room}");
        }
        let create = server
            .get(
                &format!("/_matrix/client/v3/rooms/{room}/state/m.room.create/"),
                &alice_token,
            )
            .await
            .assert_ok();
        assert_eq!(create["room_version"], version);
        // Before version 11 the creator is named in the content.
        let numeric: u32 = version.parse().unwrap();
        if numeric < 11 {
            assert_eq!(create["creator"], alice);
        } else {
            assert!(create.get("creator").is_none());
        }

        // Bob sees the invite with its stripped state, then joins.
        let sync = server.sync(&bob_token, "").await;
        let invite = &sync["rooms"]["invite"][&room]["invite_state"]["events"];
        let types: Vec<&str> = invite
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["type"].as_str().unwrap())
            .collect();
        assert!(types.contains(&"m.room.name"), "{types:?}");
        assert!(types.contains(&"m.room.member"), "{types:?}");
        let member = invite
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["type"] == "m.room.member" && e["state_key"] == bob)
            .unwrap();
        assert_eq!(member["content"]["is_direct"], true);
        server.join(&bob_token, &room).await;

        server
            .send_text(&alice_token, &room, "a1", "hello bob")
            .await
            .assert_ok();
        server
            .send_text(&bob_token, &room, "b1", "hello alice")
            .await
            .assert_ok();
        let messages = server
            .get(
                &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=50"),
                &bob_token,
            )
            .await
            .assert_ok();
        assert_eq!(bodies(&messages["chunk"]), vec!["hello alice", "hello bob"]);
        let joined = server
            .get(
                &format!("/_matrix/client/v3/rooms/{room}/joined_members"),
                &alice_token,
            )
            .await
            .assert_ok();
        assert!(joined["joined"].get(&alice).is_some());
        assert!(joined["joined"].get(&bob).is_some());
        // A redaction by the rules of the version.
        let hello = messages["chunk"][1]["event_id"]
            .as_str()
            .unwrap()
            .to_owned();
        server
            .put(
                &format!(
                    "/_matrix/client/v3/rooms/{room}/redact/{}/r1",
                    common::encode(&hello)
                ),
                &alice_token,
                json!({"reason": "typo"}),
            )
            .await
            .assert_ok();
        let redacted = server
            .get(
                &format!(
                    "/_matrix/client/v3/rooms/{room}/event/{}",
                    common::encode(&hello)
                ),
                &bob_token,
            )
            .await
            .assert_ok();
        assert_eq!(redacted["content"], json!({}), "version {version}");
    }
}

#[tokio::test]
async fn send_is_idempotent_per_transaction_id() {
    let server = TestServer::new().await;
    let (_, token) = server.register("alice").await;
    let room = server.create_room(&token, json!({})).await;
    let first = server
        .send_text(&token, &room, "same", "once")
        .await
        .assert_ok();
    let second = server
        .send_text(&token, &room, "same", "twice?")
        .await
        .assert_ok();
    assert_eq!(first["event_id"], second["event_id"]);
    let messages = server
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b"),
            &token,
        )
        .await
        .assert_ok();
    assert_eq!(bodies(&messages["chunk"]), vec!["once"]);
    // The sender's own device sees its transaction id.
    let event = messages["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "m.room.message")
        .unwrap();
    assert_eq!(event["unsigned"]["transaction_id"], "same");
}

#[tokio::test]
async fn authorization_rules_are_enforced() {
    let server = TestServer::new().await;
    let (_, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let (carol_id, carol) = server.register("carol").await;
    let private = server
        .create_room(&alice, json!({"preset": "private_chat"}))
        .await;

    // Not invited: cannot join, send or read.
    server
        .post(
            &format!("/_matrix/client/v3/rooms/{private}/join"),
            &bob,
            json!({}),
        )
        .await
        .assert_error(403, "M_FORBIDDEN");
    server
        .send_text(&bob, &private, "x", "let me in")
        .await
        .assert_error(403, "M_FORBIDDEN");
    server
        .get(
            &format!("/_matrix/client/v3/rooms/{private}/messages?dir=b"),
            &bob,
        )
        .await
        .assert_error(403, "M_FORBIDDEN");
    server
        .get(&format!("/_matrix/client/v3/rooms/{private}/state"), &bob)
        .await
        .assert_error(403, "M_FORBIDDEN");

    // Invited and joined; a member of power 0 cannot kick, change the name or redact others.
    server
        .post(
            &format!("/_matrix/client/v3/rooms/{private}/invite"),
            &alice,
            json!({"user_id": bob_id}),
        )
        .await
        .assert_ok();
    server.join(&bob, &private).await;
    server
        .post(
            &format!("/_matrix/client/v3/rooms/{private}/invite"),
            &alice,
            json!({"user_id": carol_id}),
        )
        .await
        .assert_ok();
    server.join(&carol, &private).await;
    server
        .post(
            &format!("/_matrix/client/v3/rooms/{private}/kick"),
            &bob,
            json!({"user_id": carol_id}),
        )
        .await
        .assert_error(403, "M_FORBIDDEN");
    server
        .put(
            &format!("/_matrix/client/v3/rooms/{private}/state/m.room.name/"),
            &bob,
            json!({"name": "mine"}),
        )
        .await
        .assert_error(403, "M_FORBIDDEN");
    let carol_message = server
        .send_text(&carol, &private, "c1", "carol says")
        .await
        .assert_ok();
    let target = carol_message["event_id"].as_str().unwrap();
    server
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{private}/redact/{}/r1",
                encode(target)
            ),
            &bob,
            json!({"reason": "no"}),
        )
        .await
        .assert_error(403, "M_FORBIDDEN");

    // The room creator can; bans keep people out until unbanned.
    server
        .post(
            &format!("/_matrix/client/v3/rooms/{private}/ban"),
            &alice,
            json!({"user_id": carol_id, "reason": "spam"}),
        )
        .await
        .assert_ok();
    server
        .post(
            &format!("/_matrix/client/v3/rooms/{private}/join"),
            &carol,
            json!({}),
        )
        .await
        .assert_error(403, "M_FORBIDDEN");
    server
        .post(
            &format!("/_matrix/client/v3/rooms/{private}/unban"),
            &alice,
            json!({"user_id": carol_id}),
        )
        .await
        .assert_ok();
    server
        .post(
            &format!("/_matrix/client/v3/rooms/{private}/kick"),
            &alice,
            json!({"user_id": bob_id}),
        )
        .await
        .assert_ok();
    server
        .send_text(&bob, &private, "b2", "still here?")
        .await
        .assert_error(403, "M_FORBIDDEN");
    // Bob, who left, still reads what happened up to his kick but not later.
    server
        .send_text(&alice, &private, "a2", "after bob left")
        .await
        .assert_ok();
    let history = server
        .get(
            &format!("/_matrix/client/v3/rooms/{private}/messages?dir=b"),
            &bob,
        )
        .await
        .assert_ok();
    let seen = bodies(&history["chunk"]);
    assert!(seen.contains(&"carol says".to_owned()), "{seen:?}");
    assert!(!seen.contains(&"after bob left".to_owned()), "{seen:?}");
}

#[tokio::test]
async fn power_level_override_and_trusted_private_chat() {
    let server = TestServer::new().await;
    let (_, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let room = server
        .create_room(
            &alice,
            json!({"preset": "trusted_private_chat", "invite": [bob_id], "power_level_content_override": {"events_default": 10}}),
        )
        .await;
    let levels = server
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.power_levels/"),
            &alice,
        )
        .await
        .assert_ok();
    assert_eq!(levels["events_default"], 10);
    assert_eq!(levels["users"][&bob_id], 100);
    server.join(&bob, &room).await;
    // Bob has power 100 and may rename the room.
    server
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/"),
            &bob,
            json!({"name": "ours"}),
        )
        .await
        .assert_ok();
}

#[tokio::test]
async fn redaction_strips_content_and_is_reported() {
    let server = TestServer::new().await;
    let (_, alice) = server.register("alice").await;
    let room = server
        .create_room(&alice, json!({"room_version": "11"}))
        .await;
    let sent = server
        .send_text(&alice, &room, "t", "secret")
        .await
        .assert_ok();
    let event_id = sent["event_id"].as_str().unwrap().to_owned();
    let redaction = server
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{room}/redact/{}/r",
                encode(&event_id)
            ),
            &alice,
            json!({"reason": "oops"}),
        )
        .await
        .assert_ok();
    let event = server
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{room}/event/{}",
                encode(&event_id)
            ),
            &alice,
        )
        .await
        .assert_ok();
    assert_eq!(event["content"], json!({}));
    assert_eq!(
        event["unsigned"]["redacted_because"]["event_id"],
        redaction["event_id"]
    );
    assert_eq!(
        event["unsigned"]["redacted_because"]["content"]["reason"],
        "oops"
    );
    // Redacting an unknown event is refused.
    server
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{room}/redact/{}/r2",
                encode("$unknown")
            ),
            &alice,
            json!({}),
        )
        .await
        .assert_error(404, "M_NOT_FOUND");
    // So is redacting, through another room, an event of this one; the event stays whole.
    let elsewhere = server.create_room(&alice, json!({})).await;
    let kept = server
        .send_text(&alice, &room, "t3", "kept")
        .await
        .assert_ok()["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    server
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{elsewhere}/redact/{}/r3",
                encode(&kept)
            ),
            &alice,
            json!({}),
        )
        .await
        .assert_error(404, "M_NOT_FOUND");
    let event = server
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/event/{}", encode(&kept)),
            &alice,
        )
        .await
        .assert_ok();
    assert_eq!(event["content"]["body"], "kept");
}

#[tokio::test]
async fn messages_paginate_in_both_directions() {
    let server = TestServer::new().await;
    let (_, alice) = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    for i in 0..25 {
        server
            .send_text(&alice, &room, &format!("t{i}"), &format!("m{i}"))
            .await
            .assert_ok();
    }
    let filter = common::query_encode(&json!({"types": ["m.room.message"]}).to_string());
    let mut seen = Vec::new();
    let mut from: Option<String> = None;
    loop {
        let mut path =
            format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=10&filter={filter}");
        if let Some(from) = &from {
            path.push_str(&format!("&from={from}"));
        }
        let page = server.get(&path, &alice).await.assert_ok();
        seen.extend(bodies(&page["chunk"]));
        match page["end"].as_str() {
            Some(end) => from = Some(end.to_owned()),
            None => break,
        }
    }
    let expected: Vec<String> = (0..25).rev().map(|i| format!("m{i}")).collect();
    assert_eq!(seen, expected);

    // Forwards from the start, stopping at a `to` token.
    let forward = server
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=f&limit=1000"),
            &alice,
        )
        .await
        .assert_ok();
    let all = bodies(&forward["chunk"]);
    assert_eq!(all, (0..25).map(|i| format!("m{i}")).collect::<Vec<_>>());
    server
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&from=garbage"),
            &alice,
        )
        .await
        .assert_error(400, "M_INVALID_PARAM");

    // Context around one event.
    let middle = forward["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["content"]["body"] == "m12")
        .unwrap()["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let context = server
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{room}/context/{}?limit=4",
                encode(&middle)
            ),
            &alice,
        )
        .await
        .assert_ok();
    assert_eq!(context["event"]["content"]["body"], "m12");
    assert_eq!(bodies(&context["events_before"]), vec!["m11", "m10"]);
    assert_eq!(bodies(&context["events_after"]), vec!["m13", "m14"]);
    assert!(
        context["state"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.room.create")
    );
}

#[tokio::test]
async fn state_members_and_membership_filters() {
    let server = TestServer::new().await;
    let (alice_id, alice) = server.register("alice").await;
    let (bob_id, _) = server.register("bob").await;
    let room = server.create_room(&alice, json!({"name": "Named"})).await;
    server
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/invite"),
            &alice,
            json!({"user_id": bob_id}),
        )
        .await
        .assert_ok();
    let state = server
        .get(&format!("/_matrix/client/v3/rooms/{room}/state"), &alice)
        .await
        .assert_ok();
    let types: Vec<&str> = state
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    for expected in [
        "m.room.create",
        "m.room.power_levels",
        "m.room.join_rules",
        "m.room.name",
        "m.room.history_visibility",
    ] {
        assert!(types.contains(&expected), "{types:?}");
    }
    let name = server
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/?format=event"),
            &alice,
        )
        .await
        .assert_ok();
    assert_eq!(name["content"]["name"], "Named");
    assert_eq!(name["type"], "m.room.name");
    server
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.topic/"),
            &alice,
        )
        .await
        .assert_error(404, "M_NOT_FOUND");
    let invited = server
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/members?membership=invite"),
            &alice,
        )
        .await
        .assert_ok();
    let keys: Vec<&str> = invited["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["state_key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, vec![bob_id.as_str()]);
    let not_invited = server
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/members?not_membership=invite"),
            &alice,
        )
        .await
        .assert_ok();
    let keys: Vec<&str> = not_invited["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["state_key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, vec![alice_id.as_str()]);
    // Alice's own room list.
    let rooms = server
        .get("/_matrix/client/v3/joined_rooms", &alice)
        .await
        .assert_ok();
    assert_eq!(rooms["joined_rooms"], json!([room]));
    // Custom state with a state key, and state that must be an object.
    server
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/state/org.example.custom/key1"),
            &alice,
            json!({"v": 1}),
        )
        .await
        .assert_ok();
    let custom = server
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/state/org.example.custom/key1"),
            &alice,
        )
        .await
        .assert_ok();
    assert_eq!(custom, json!({"v": 1}));
    server
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/state/org.example.custom/key2"),
            &alice,
            json!([1]),
        )
        .await
        .assert_error(400, "M_BAD_JSON");
    server
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.canonical_alias/"),
            &alice,
            json!({"alias": "#unknown:test.example"}),
        )
        .await
        .assert_error(400, "M_BAD_ALIAS");
}

#[tokio::test]
async fn leave_and_forget() {
    let server = TestServer::new().await;
    let (_, alice) = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    server
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/forget"),
            &alice,
            json!({}),
        )
        .await
        .assert_error(400, "M_BAD_STATE");
    server
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/leave"),
            &alice,
            json!({}),
        )
        .await
        .assert_ok();
    let sync = server
        .sync(
            &alice,
            &format!(
                "filter={}",
                common::query_encode(r#"{"room":{"include_leave":true}}"#)
            ),
        )
        .await;
    assert!(sync["rooms"]["leave"].get(&room).is_some(), "{sync}");
    server
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/forget"),
            &alice,
            json!({}),
        )
        .await
        .assert_ok();
    let sync = server
        .sync(
            &alice,
            &format!(
                "filter={}",
                common::query_encode(r#"{"room":{"include_leave":true}}"#)
            ),
        )
        .await;
    assert!(sync["rooms"]["leave"].get(&room).is_none(), "{sync}");
}

#[tokio::test]
async fn sending_is_rate_limited_per_user() {
    let server = TestServer::with_config(|c| {
        c.rate_limits.message = causeway_config::RateLimit {
            per_second: 0.01,
            burst: 3,
        }
    })
    .await;
    let (_, alice) = server.register("alice").await;
    // Creating the room takes one action.
    let room = server.create_room(&alice, json!({})).await;
    server.send_text(&alice, &room, "1", "a").await.assert_ok();
    server.send_text(&alice, &room, "2", "b").await.assert_ok();
    let limited = server.send_text(&alice, &room, "3", "c").await;
    limited.assert_error(429, "M_LIMIT_EXCEEDED");
    assert!(limited.json()["retry_after_ms"].as_u64().unwrap() > 0);
    // A retry of an acknowledged transaction is not limited.
    server.send_text(&alice, &room, "2", "b").await.assert_ok();
    let (_, bob) = server.register("bob").await;
    server.create_room(&bob, json!({})).await;
}

/// Every event keeps its place in the room graph: the event it follows, the events that
/// authorise it, and the state before it.
#[tokio::test]
async fn events_keep_their_edges() {
    let server = TestServer::new().await;
    let (_, alice) = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    let first = server
        .send_text(&alice, &room, "t1", "one")
        .await
        .assert_ok()["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let second = server
        .send_text(&alice, &room, "t2", "two")
        .await
        .assert_ok()["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let store = &server.services.store;
    assert_eq!(store.prev_events(&second).await.unwrap(), [first.as_str()]);
    let stored = store.event(&second).await.unwrap().unwrap();
    let json: serde_json::Value = serde_json::from_str(&stored.json).unwrap();
    let mut auth: Vec<String> = serde_json::from_value(json["auth_events"].clone()).unwrap();
    auth.sort();
    assert_eq!(store.auth_events(&second).await.unwrap(), auth);
    assert!(auth.len() >= 2, "{auth:?}");
    // A message changes no state: the state before it is the state after the one before.
    let first_row = store.event(&first).await.unwrap().unwrap();
    assert_eq!(
        store.state_group_before(&second).await.unwrap(),
        Some(first_row.state_group)
    );
}

/// Depth follows the events the new one builds on, and stops at the largest integer canonical
/// JSON allows: a room whose edge is at that depth stays writable, and a deep event off the
/// edge does not make the next one deep.
#[tokio::test]
async fn depth_is_capped_and_follows_the_edge() {
    let server = TestServer::new().await;
    let (_, alice) = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    let depth_of = |server: &TestServer, event_id: String| {
        let store = server.services.store.clone();
        async move {
            let row = store.event(&event_id).await.unwrap().unwrap();
            serde_json::from_str::<serde_json::Value>(&row.json).unwrap()["depth"]
                .as_i64()
                .unwrap()
        }
    };
    let old = server
        .send_text(&alice, &room, "t1", "old")
        .await
        .assert_ok()["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let edge = server
        .send_text(&alice, &room, "t2", "edge")
        .await
        .assert_ok()["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let edge_depth = depth_of(&server, edge.clone()).await;
    let database = format!(
        "sqlite://{}",
        server.services.config.sqlite_path().display()
    );
    let set_depth = |event_id: String, depth: i64| {
        let database = database.clone();
        async move {
            sqlx::any::install_default_drivers();
            let pool = sqlx::AnyPool::connect(&database).await.unwrap();
            sqlx::query("UPDATE events SET depth = $1 WHERE event_id = $2")
                .bind(depth)
                .bind(event_id)
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
        }
    };
    // A deep event off the edge: the next one is one deeper than the edge.
    set_depth(old, causeway_matrix::rooms::MAX_DEPTH).await;
    let server = server.restart().await;
    let next = server
        .send_text(&alice, &room, "t3", "next")
        .await
        .assert_ok()["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(depth_of(&server, next.clone()).await, edge_depth + 1);
    // The edge at the greatest depth: the room stays writable, at that depth.
    set_depth(next, causeway_matrix::rooms::MAX_DEPTH).await;
    let server = server.restart().await;
    for txn in ["t4", "t5"] {
        let capped = server
            .send_text(&alice, &room, txn, "still")
            .await
            .assert_ok()["event_id"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(
            depth_of(&server, capped).await,
            causeway_matrix::rooms::MAX_DEPTH
        );
    }
}

/// A room's state as of a stream position is what it was then: members who came later are
/// not in it, and its power levels are those of then.
#[tokio::test]
async fn the_state_as_of_a_position_is_then() {
    let server = TestServer::new().await;
    let (alice_id, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let store = &server.services.store;
    let before_room = store.current_position();
    let room = server
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    let room_id = ruma::RoomId::parse(&room).unwrap();
    let rules = server.services.rooms.rules(&room_id).await.unwrap();
    let before_bob = store.current_position();
    server.join(&bob, &room).await;
    server
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.power_levels/"),
            &alice,
            // Alice made the room (version 12): she outranks everyone without being listed.
            json!({"users": {bob_id.clone(): 50}}),
        )
        .await
        .assert_ok();
    server.send_text(&bob, &room, "t1", "hi").await.assert_ok();
    let state_at = |position: i64| {
        let services = server.services.clone();
        let room = room.clone();
        async move {
            let group = services
                .store
                .state_group_at_position(&room, position)
                .await
                .unwrap();
            causeway_matrix::api::client::events::state_at_group(&services, group)
                .await
                .unwrap()
        }
    };
    let member = |state: &[std::sync::Arc<causeway_matrix::pdu::Pdu>], user: &str| {
        state
            .iter()
            .find(|pdu| {
                pdu.event_type.to_string() == "m.room.member"
                    && pdu.state_key.as_deref() == Some(user)
            })
            .and_then(|pdu| {
                pdu.content_value()["membership"]
                    .as_str()
                    .map(str::to_owned)
            })
    };
    assert!(state_at(before_room).await.is_empty());
    let then = state_at(before_bob).await;
    assert_eq!(member(&then, &alice_id).as_deref(), Some("join"));
    assert_eq!(member(&then, &bob_id), None);
    let levels = causeway_matrix::rooms::PowerLevels::from_events(&rules, &then);
    let bob_user = ruma::UserId::parse(&bob_id).unwrap();
    assert_eq!(levels.user(&bob_user), 0);
    let now = state_at(store.current_position()).await;
    assert_eq!(member(&now, &bob_id).as_deref(), Some("join"));
    let levels = causeway_matrix::rooms::PowerLevels::from_events(&rules, &now);
    assert_eq!(levels.user(&bob_user), 50);
    // What the events give is what the room's current power levels say.
    let current = server.services.rooms.power_levels(&room_id).await.unwrap();
    assert_eq!(current.user(&bob_user), levels.user(&bob_user));
    assert_eq!(current.events_default, levels.events_default);
}
