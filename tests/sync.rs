//! Sync, ephemeral data, account data, filters, push rules, presence and media.

mod common;

use std::time::Duration;

use common::{TestServer, bodies, encode, query_encode};
use http::Method;
use serde_json::{Value, json};

fn timeline<'a>(sync: &'a Value, room: &str) -> &'a Value {
    &sync["rooms"]["join"][room]["timeline"]["events"]
}

#[tokio::test]
async fn incremental_sync_returns_only_what_is_new() {
    let server = TestServer::new().await;
    let (_, alice) = server.register("alice").await;
    let room = server.create_room(&alice, json!({"name": "R"})).await;
    let initial = server.sync(&alice, "").await;
    let state_or_timeline: Vec<&str> = timeline(&initial, &room)
        .as_array()
        .unwrap()
        .iter()
        .chain(
            initial["rooms"]["join"][&room]["state"]["events"]
                .as_array()
                .into_iter()
                .flatten(),
        )
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert!(
        state_or_timeline.contains(&"m.room.create"),
        "{state_or_timeline:?}"
    );
    assert!(
        state_or_timeline.contains(&"m.room.name"),
        "{state_or_timeline:?}"
    );
    let since = initial["next_batch"].as_str().unwrap().to_owned();

    server
        .send_text(&alice, &room, "1", "new one")
        .await
        .assert_ok();
    let next = server.sync(&alice, &format!("since={since}")).await;
    assert_eq!(bodies(timeline(&next, &room)), vec!["new one"]);
    // `limited` is false, which may be left out.
    assert_ne!(next["rooms"]["join"][&room]["timeline"]["limited"], true);
    // The sender's transaction id comes back to its own device.
    assert_eq!(timeline(&next, &room)[0]["unsigned"]["transaction_id"], "1");
    let since = next["next_batch"].as_str().unwrap().to_owned();

    // Nothing new: an immediate empty answer with timeout 0.
    let empty = server
        .sync(&alice, &format!("since={since}&timeout=0"))
        .await;
    assert!(empty["rooms"]["join"].get(&room).is_none(), "{empty}");
    assert_eq!(empty["next_batch"], since);

    // A gap larger than the limit is reported as limited with a usable prev_batch.
    for i in 0..15 {
        server
            .send_text(&alice, &room, &format!("g{i}"), &format!("gap {i}"))
            .await
            .assert_ok();
    }
    let gapped = server.sync(&alice, &format!("since={since}")).await;
    let joined = &gapped["rooms"]["join"][&room];
    assert_eq!(joined["timeline"]["limited"], true);
    assert_eq!(bodies(&joined["timeline"]["events"]).len(), 10);
    assert_eq!(bodies(&joined["timeline"]["events"])[9], "gap 14");
    let prev = joined["timeline"]["prev_batch"].as_str().unwrap();
    let earlier = server
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&from={prev}&limit=5"),
            &alice,
        )
        .await
        .assert_ok();
    assert_eq!(
        bodies(&earlier["chunk"]),
        vec!["gap 4", "gap 3", "gap 2", "gap 1", "gap 0"]
    );

    server
        .get("/_matrix/client/v3/sync?since=bogus", &alice)
        .await
        .assert_error(400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn a_send_wakes_a_waiting_sync() {
    let server = std::sync::Arc::new(TestServer::new().await);
    let (_, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let room = server
        .create_room(&alice, json!({"invite": [bob_id]}))
        .await;
    server.join(&bob, &room).await;
    let since = server.sync(&bob, "").await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let waiting = {
        let server = server.clone();
        let bob = bob.clone();
        tokio::spawn(async move {
            server
                .sync(&bob, &format!("since={since}&timeout=20000"))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !waiting.is_finished(),
        "the sync answered before anything happened"
    );
    server
        .send_text(&alice, &room, "w", "wake up")
        .await
        .assert_ok();
    let woken = tokio::time::timeout(Duration::from_secs(15), waiting)
        .await
        .expect("the sync was not woken by the send")
        .unwrap();
    assert_eq!(bodies(timeline(&woken, &room)), vec!["wake up"]);
}

/// A shutdown answers every waiting sync at once, with nothing new and the position it had,
/// so that the server does not wait for long-polls to run out and the client loses nothing.
#[tokio::test]
async fn a_shutdown_answers_waiting_syncs_at_once() {
    let server = std::sync::Arc::new(TestServer::new().await);
    let (_, alice) = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    let since = server.sync(&alice, "").await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let waiting: Vec<_> = (0..3)
        .map(|_| {
            let server = server.clone();
            let alice = alice.clone();
            let since = since.clone();
            tokio::spawn(async move {
                server
                    .sync(&alice, &format!("since={since}&timeout=600000"))
                    .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(waiting.iter().all(|w| !w.is_finished()));
    server.services.begin_shutdown();
    for sync in waiting {
        // Without the shutdown it would wait for its timeout, 60 s (the server's maximum).
        let answer = tokio::time::timeout(Duration::from_secs(30), sync)
            .await
            .expect("a waiting sync did not answer at shutdown")
            .unwrap();
        assert_eq!(answer["next_batch"], since.as_str(), "{answer}");
        assert!(timeline(&answer, &room).is_null(), "{answer}");
    }
    // A sync that starts during the shutdown does not wait either, and what happens is still
    // delivered.
    let answer = tokio::time::timeout(
        Duration::from_secs(30),
        server.sync(&alice, &format!("since={since}&timeout=600000")),
    )
    .await
    .expect("a sync waited during the shutdown");
    assert_eq!(answer["next_batch"], since.as_str(), "{answer}");
    server
        .send_text(&alice, &room, "late", "still here")
        .await
        .assert_ok();
    let answer = tokio::time::timeout(
        Duration::from_secs(30),
        server.sync(&alice, &format!("since={since}&timeout=600000")),
    )
    .await
    .expect("a sync waited during the shutdown");
    assert_eq!(bodies(timeline(&answer, &room)), vec!["still here"]);
}

#[tokio::test]
async fn lazy_loading_members_and_filters() {
    let server = TestServer::new().await;
    let (alice_id, alice) = server.register("alice").await;
    let room = server
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    let mut tokens = Vec::new();
    for i in 0..5 {
        let (_, token) = server.register(&format!("user{i}")).await;
        server.join(&token, &room).await;
        tokens.push(token);
    }
    for i in 0..12 {
        server
            .send_text(&alice, &room, &format!("m{i}"), &format!("text {i}"))
            .await
            .assert_ok();
    }
    let filter = json!({"room": {"state": {"lazy_load_members": true}, "timeline": {"limit": 3}}});
    let created = server
        .post(
            &format!("/_matrix/client/v3/user/{alice_id}/filter"),
            &alice,
            filter.clone(),
        )
        .await
        .assert_ok();
    let filter_id = created["filter_id"].as_str().unwrap().to_owned();
    let stored = server
        .get(
            &format!("/_matrix/client/v3/user/{alice_id}/filter/{filter_id}"),
            &alice,
        )
        .await
        .assert_ok();
    assert_eq!(stored["room"]["timeline"]["limit"], 3);
    for query in [
        format!("filter={filter_id}"),
        format!("filter={}", query_encode(&filter.to_string())),
    ] {
        let sync = server.sync(&alice, &query).await;
        let joined = &sync["rooms"]["join"][&room];
        assert_eq!(joined["timeline"]["events"].as_array().unwrap().len(), 3);
        let members: Vec<&str> = joined["state"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "m.room.member")
            .map(|e| e["state_key"].as_str().unwrap())
            .collect();
        // Only Alice (the sender of the timeline and the syncing user), not the five others.
        assert_eq!(members, vec![alice_id.as_str()]);
        assert_eq!(joined["summary"]["m.joined_member_count"], 6);
    }
    server
        .get(
            &format!("/_matrix/client/v3/user/{alice_id}/filter/999"),
            &alice,
        )
        .await
        .assert_error(404, "M_NOT_FOUND");
    server
        .get("/_matrix/client/v3/sync?filter=999", &alice)
        .await
        .assert_error(400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn typing_receipts_and_read_markers() {
    let server = TestServer::new().await;
    let (alice_id, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let room = server
        .create_room(&alice, json!({"invite": [bob_id]}))
        .await;
    server.join(&bob, &room).await;
    let since = server.sync(&bob, "").await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    server
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/typing/{alice_id}"),
            &alice,
            json!({"typing": true, "timeout": 30000}),
        )
        .await
        .assert_ok();
    let sync = server.sync(&bob, &format!("since={since}")).await;
    let ephemeral = &sync["rooms"]["join"][&room]["ephemeral"]["events"];
    let typing = ephemeral
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "m.typing")
        .unwrap();
    assert_eq!(typing["content"]["user_ids"], json!([alice_id]));
    // Someone else's typing state cannot be set.
    server
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/typing/{alice_id}"),
            &bob,
            json!({"typing": true, "timeout": 30000}),
        )
        .await
        .assert_error(403, "M_FORBIDDEN");

    let since = sync["next_batch"].as_str().unwrap().to_owned();
    let message = server
        .send_text(&alice, &room, "r", "read me")
        .await
        .assert_ok();
    let event_id = message["event_id"].as_str().unwrap();
    server
        .post(
            &format!(
                "/_matrix/client/v3/rooms/{room}/receipt/m.read/{}",
                encode(event_id)
            ),
            &bob,
            json!({}),
        )
        .await
        .assert_ok();
    server
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/read_markers"),
            &bob,
            json!({"m.fully_read": event_id, "m.read.private": event_id}),
        )
        .await
        .assert_ok();
    let alice_sync = server.sync(&alice, &format!("since={since}")).await;
    let receipts = alice_sync["rooms"]["join"][&room]["ephemeral"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "m.receipt")
        .unwrap()
        .clone();
    assert!(receipts["content"][event_id]["m.read"][&bob_id]["ts"].is_u64());
    // Bob's private receipt is not shown to Alice.
    assert!(
        receipts["content"][event_id]
            .get("m.read.private")
            .is_none()
    );
    let bob_sync = server.sync(&bob, &format!("since={since}")).await;
    let fully_read = bob_sync["rooms"]["join"][&room]["account_data"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "m.fully_read")
        .unwrap()
        .clone();
    assert_eq!(fully_read["content"]["event_id"], event_id);
    server
        .post(
            &format!(
                "/_matrix/client/v3/rooms/{room}/receipt/m.read/{}",
                encode("$nope")
            ),
            &bob,
            json!({}),
        )
        .await
        .assert_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn account_data_and_push_rules() {
    let server = TestServer::new().await;
    let (alice_id, alice) = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    let since = server.sync(&alice, "").await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    server
        .put(
            &format!("/_matrix/client/v3/user/{alice_id}/account_data/m.direct"),
            &alice,
            json!({"@bob:test.example": [room]}),
        )
        .await
        .assert_ok();
    server
        .put(
            &format!("/_matrix/client/v3/user/{alice_id}/rooms/{room}/account_data/m.tag"),
            &alice,
            json!({"tags": {"u.work": {}}}),
        )
        .await
        .assert_ok();
    let direct = server
        .get(
            &format!("/_matrix/client/v3/user/{alice_id}/account_data/m.direct"),
            &alice,
        )
        .await
        .assert_ok();
    assert_eq!(direct["@bob:test.example"], json!([room]));
    let sync = server.sync(&alice, &format!("since={since}")).await;
    assert!(
        sync["account_data"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.direct")
    );
    assert!(
        sync["rooms"]["join"][&room]["account_data"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.tag")
    );
    server
        .get(
            &format!("/_matrix/client/v3/user/{alice_id}/account_data/m.unknown"),
            &alice,
        )
        .await
        .assert_error(404, "M_NOT_FOUND");

    // Push rules: the specification's defaults, editable.
    let rules = server
        .get("/_matrix/client/v3/pushrules/", &alice)
        .await
        .assert_ok();
    assert!(
        rules["global"]["override"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["rule_id"] == ".m.rule.master")
    );
    assert!(
        rules["global"]["underride"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["rule_id"] == ".m.rule.message")
    );
    server
        .put(
            "/_matrix/client/v3/pushrules/global/room/!r:test.example",
            &alice,
            json!({"actions": []}),
        )
        .await
        .assert_ok();
    let rule = server
        .get(
            "/_matrix/client/v3/pushrules/global/room/!r:test.example",
            &alice,
        )
        .await
        .assert_ok();
    assert_eq!(rule["rule_id"], "!r:test.example");
    server
        .put(
            "/_matrix/client/v3/pushrules/global/override/.m.rule.master/enabled",
            &alice,
            json!({"enabled": true}),
        )
        .await
        .assert_ok();
    let enabled = server
        .get(
            "/_matrix/client/v3/pushrules/global/override/.m.rule.master/enabled",
            &alice,
        )
        .await
        .assert_ok();
    assert_eq!(enabled["enabled"], true);
    server
        .call(
            Method::DELETE,
            "/_matrix/client/v3/pushrules/global/room/!r:test.example",
            Some(&alice),
            None,
        )
        .await
        .assert_ok();
    server
        .get(
            "/_matrix/client/v3/pushrules/global/room/!r:test.example",
            &alice,
        )
        .await
        .assert_error(404, "M_NOT_FOUND");
    server
        .call(
            Method::DELETE,
            "/_matrix/client/v3/pushrules/global/override/.m.rule.master",
            Some(&alice),
            None,
        )
        .await
        .assert_error(400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn presence_is_set_read_and_synced() {
    let server = TestServer::new().await;
    let (alice_id, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let (_, stranger) = server.register("stranger").await;
    let room = server
        .create_room(&alice, json!({"invite": [bob_id]}))
        .await;
    server.join(&bob, &room).await;
    let since = server.sync(&bob, "set_presence=offline").await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    server
        .put(
            &format!("/_matrix/client/v3/presence/{alice_id}/status"),
            &alice,
            json!({"presence": "unavailable", "status_msg": "lunch"}),
        )
        .await
        .assert_ok();
    let presence = server
        .get(
            &format!("/_matrix/client/v3/presence/{alice_id}/status"),
            &bob,
        )
        .await
        .assert_ok();
    assert_eq!(presence["presence"], "unavailable");
    assert_eq!(presence["status_msg"], "lunch");
    server
        .get(
            &format!("/_matrix/client/v3/presence/{alice_id}/status"),
            &stranger,
        )
        .await
        .assert_error(403, "M_FORBIDDEN");
    server
        .put(
            &format!("/_matrix/client/v3/presence/{alice_id}/status"),
            &bob,
            json!({"presence": "online"}),
        )
        .await
        .assert_error(403, "M_FORBIDDEN");
    let sync = server
        .sync(&bob, &format!("since={since}&set_presence=offline"))
        .await;
    let event = sync["presence"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["sender"] == alice_id)
        .unwrap()
        .clone();
    assert_eq!(event["content"]["presence"], "unavailable");
}

#[tokio::test]
async fn notification_counts_follow_push_rules_and_read_receipts() {
    let server = TestServer::new().await;
    let (alice_id, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let room = server
        .create_room(&alice, json!({"invite": [bob_id]}))
        .await;
    server.join(&bob, &room).await;
    let counts = |sync: &Value| {
        let unread = &sync["rooms"]["join"][&room]["unread_notifications"];
        (
            unread["notification_count"].as_u64().unwrap_or(0),
            unread["highlight_count"].as_u64().unwrap_or(0),
        )
    };
    let first = server
        .send_text(&bob, &room, "1", "hello")
        .await
        .assert_ok();
    server
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/2"),
            &bob,
            json!({"msgtype": "m.text", "body": "alice, look", "m.mentions": {"user_ids": [alice_id]}}),
        )
        .await
        .assert_ok();
    let third = server
        .send_text(&bob, &room, "3", "and this")
        .await
        .assert_ok();
    // Typing, receipts and membership of others do not count; messages do, mentions highlight.
    let sync = server.sync(&alice, "").await;
    assert_eq!(counts(&sync), (3, 1), "{}", sync["rooms"]["join"][&room]);
    let since = sync["next_batch"].as_str().unwrap().to_owned();

    // Reading up to the first message leaves two, one of them highlighted.
    server
        .post(
            &format!(
                "/_matrix/client/v3/rooms/{room}/receipt/m.read/{}",
                encode(first["event_id"].as_str().unwrap())
            ),
            &alice,
            json!({}),
        )
        .await
        .assert_ok();
    let sync = server.sync(&alice, &format!("since={since}")).await;
    assert_eq!(counts(&sync), (2, 1));
    // A private receipt on the last message clears the count.
    server
        .post(
            &format!(
                "/_matrix/client/v3/rooms/{room}/receipt/m.read.private/{}",
                encode(third["event_id"].as_str().unwrap())
            ),
            &alice,
            json!({}),
        )
        .await
        .assert_ok();
    let sync = server.sync(&alice, "").await;
    assert_eq!(counts(&sync), (0, 0));
    // New messages count again; the user's own message marks everything before it read.
    server.send_text(&bob, &room, "4", "more").await.assert_ok();
    assert_eq!(counts(&server.sync(&alice, "").await), (1, 0));
    server
        .send_text(&alice, &room, "a", "answer")
        .await
        .assert_ok();
    assert_eq!(counts(&server.sync(&alice, "").await), (0, 0));
    // A room muted with a push rule does not count.
    server
        .put(
            &format!("/_matrix/client/v3/pushrules/global/room/{room}"),
            &alice,
            json!({"actions": []}),
        )
        .await
        .assert_ok();
    server
        .send_text(&bob, &room, "5", "muted")
        .await
        .assert_ok();
    assert_eq!(counts(&server.sync(&alice, "").await), (0, 0));
}

#[tokio::test]
async fn a_token_from_before_a_restart_still_gets_everything() {
    let server = TestServer::new().await;
    let (alice_id, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let room = server
        .create_room(&alice, json!({"invite": [bob_id]}))
        .await;
    server.join(&bob, &room).await;
    let since = server.sync(&alice, "").await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    // Changes of every kind, then a restart before Alice syncs again.
    server
        .send_text(&bob, &room, "m", "before restart")
        .await
        .assert_ok();
    server
        .put(
            &format!("/_matrix/client/v3/user/{alice_id}/account_data/org.example.data"),
            &alice,
            json!({"v": 1}),
        )
        .await
        .assert_ok();
    server
        .put(
            "/_matrix/client/v3/sendToDevice/org.example.ping/t",
            &bob,
            json!({"messages": {alice_id.clone(): {"*": {"n": 1}}}}),
        )
        .await
        .assert_ok();
    server
        .put(
            &format!("/_matrix/client/v3/presence/{bob_id}/status"),
            &bob,
            json!({"presence": "unavailable"}),
        )
        .await
        .assert_ok();
    let server = server.restart().await;
    let sync = server
        .sync(&alice, &format!("since={since}&set_presence=offline"))
        .await;
    assert_eq!(bodies(timeline(&sync, &room)), vec!["before restart"]);
    assert!(
        sync["account_data"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "org.example.data")
    );
    assert_eq!(sync["to_device"]["events"][0]["content"]["n"], 1);
    assert!(
        sync["presence"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["sender"] == bob_id)
    );
    // The same message is not delivered again after it was acknowledged.
    let next = sync["next_batch"].as_str().unwrap();
    let again = server
        .sync(&alice, &format!("since={next}&timeout=0"))
        .await;
    assert!(
        again["to_device"]["events"]
            .as_array()
            .is_none_or(Vec::is_empty)
    );
    let fresh = server.sync(&alice, "").await;
    assert!(
        fresh["to_device"]["events"]
            .as_array()
            .is_none_or(Vec::is_empty),
        "{}",
        fresh["to_device"]
    );
}

#[tokio::test]
async fn a_room_joined_since_the_last_sync_shows_what_was_said_before() {
    let server = TestServer::new().await;
    let (_, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let room = server
        .create_room(&alice, json!({"invite": [bob_id], "is_direct": true}))
        .await;
    server
        .send_text(&alice, &room, "t1", "before you came")
        .await
        .assert_ok();
    let first = server.sync(&bob, "timeout=0").await;
    assert!(first["rooms"]["invite"].get(&room).is_some(), "{first}");
    let since = first["next_batch"].as_str().unwrap().to_owned();
    server.join(&bob, &room).await;
    let next = server.sync(&bob, &format!("timeout=0&since={since}")).await;
    let events = timeline(&next, &room);
    let bodies: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    assert_eq!(bodies, ["before you came"], "{next}");
    // The sync after that has only what is new.
    let since = next["next_batch"].as_str().unwrap().to_owned();
    server
        .send_text(&alice, &room, "t2", "welcome")
        .await
        .assert_ok();
    let later = server.sync(&bob, &format!("timeout=0&since={since}")).await;
    let events = timeline(&later, &room).as_array().unwrap().clone();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["content"]["body"], "welcome");
    // A profile change is a new member event, not a new join: no history again.
    let since = later["next_batch"].as_str().unwrap().to_owned();
    server
        .put(
            &format!("/_matrix/client/v3/profile/{bob_id}/displayname"),
            &bob,
            json!({"displayname": "Bobby"}),
        )
        .await
        .assert_ok();
    let renamed = server.sync(&bob, &format!("timeout=0&since={since}")).await;
    let events = timeline(&renamed, &room).as_array().unwrap().clone();
    assert_eq!(events.len(), 1, "{renamed}");
    assert_eq!(events[0]["type"], "m.room.member");
}

/// A waiting sync sleeps through what happens in rooms that are not its user's, and wakes for
/// what is theirs: an invitation to a new room, a to-device message, their account data, a
/// message in their room.
#[tokio::test]
async fn a_waiting_sync_wakes_for_what_is_its_users() {
    let server = std::sync::Arc::new(TestServer::new().await);
    let (_, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let (_, carol) = server.register("carol").await;
    let elsewhere = server
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    server.join(&carol, &elsewhere).await;
    // Bob waits; each step makes something of his happen and reads what woke his sync.
    let wait = |since: String| {
        let server = server.clone();
        let bob = bob.clone();
        tokio::spawn(async move {
            server
                .sync(&bob, &format!("since={since}&timeout=10000"))
                .await
        })
    };
    let woken = |waiting: tokio::task::JoinHandle<Value>| async move {
        tokio::time::timeout(Duration::from_secs(30), waiting)
            .await
            .expect("a waiting sync never answered")
            .unwrap()
    };
    let mut since = server.sync(&bob, "").await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let waiting = wait(since.clone());
    tokio::time::sleep(Duration::from_millis(100)).await;
    for i in 0..3 {
        server
            .send_text(&carol, &elsewhere, &format!("c{i}"), "not for Bob")
            .await
            .assert_ok();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !waiting.is_finished(),
        "the sync answered for a room that is not Bob's"
    );
    // Invited to a new room: his sync wakes with the invitation.
    let room = server
        .create_room(&alice, json!({"invite": [bob_id.clone()]}))
        .await;
    let answer = woken(waiting).await;
    assert!(
        answer["rooms"]["invite"][&room].is_object(),
        "the invitation is not in the answer: {answer}"
    );
    since = answer["next_batch"].as_str().unwrap().to_owned();
    // A to-device message for his devices.
    let waiting = wait(since.clone());
    tokio::time::sleep(Duration::from_millis(100)).await;
    server
        .put(
            "/_matrix/client/v3/sendToDevice/m.test/t1",
            &alice,
            json!({"messages": {bob_id.clone(): {"*": {"hello": "bob"}}}}),
        )
        .await
        .assert_ok();
    let answer = woken(waiting).await;
    assert_eq!(
        answer["to_device"]["events"][0]["content"]["hello"], "bob",
        "{answer}"
    );
    since = answer["next_batch"].as_str().unwrap().to_owned();
    // His account data, set from another device.
    let waiting = wait(since.clone());
    tokio::time::sleep(Duration::from_millis(100)).await;
    server
        .put(
            &format!("/_matrix/client/v3/user/{bob_id}/account_data/org.example.note"),
            &bob,
            json!({"n": 1}),
        )
        .await
        .assert_ok();
    let answer = woken(waiting).await;
    let types: Vec<&str> = answer["account_data"]["events"]
        .as_array()
        .map(|events| events.iter().filter_map(|e| e["type"].as_str()).collect())
        .unwrap_or_default();
    assert!(types.contains(&"org.example.note"), "{answer}");
    since = answer["next_batch"].as_str().unwrap().to_owned();
    // Joined, a message in his room wakes it (and only that room is in the answer).
    server.join(&bob, &room).await;
    let since_join = server.sync(&bob, &format!("since={since}&timeout=0")).await;
    let waiting = wait(since_join["next_batch"].as_str().unwrap().to_owned());
    tokio::time::sleep(Duration::from_millis(100)).await;
    server
        .send_text(&carol, &elsewhere, "c9", "still not for Bob")
        .await
        .assert_ok();
    server
        .send_text(&alice, &room, "a1", "for Bob")
        .await
        .assert_ok();
    let answer = woken(waiting).await;
    assert_eq!(bodies(timeline(&answer, &room)), vec!["for Bob"]);
    assert!(answer["rooms"]["join"][&elsewhere].is_null(), "{answer}");
}
