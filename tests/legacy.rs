//! The deprecated endpoints older clients and bots still call: `/initialSync`,
//! `/rooms/{roomId}/initialSync` and `/events` (long-polling, and peeking into a world-readable
//! room).

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{TestServer, bodies};
use serde_json::{Value, json};

fn room<'a>(initial: &'a Value, room_id: &str) -> &'a Value {
    initial["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|room| room["room_id"] == room_id)
        .unwrap_or_else(|| panic!("{room_id} not in {initial}"))
}

#[tokio::test]
async fn initial_sync_and_events() {
    let server = Arc::new(TestServer::new().await);
    let (_, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let (_, carol) = server.register("carol").await;
    let shared = server
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    server.join(&bob, &shared).await;
    for (i, text) in ["one", "two", "three"].iter().enumerate() {
        server
            .send_text(&alice, &shared, &format!("t{i}"), text)
            .await
            .assert_ok();
    }
    let invited = server
        .create_room(&alice, json!({"invite": [bob_id]}))
        .await;

    let initial = server
        .get("/_matrix/client/v3/initialSync?limit=2", &bob)
        .await
        .assert_ok();
    let joined = room(&initial, &shared);
    assert_eq!(joined["membership"], "join");
    assert_eq!(bodies(&joined["messages"]["chunk"]), ["two", "three"]);
    // Paging back from `start` with /messages goes on before the messages shown.
    let start = joined["messages"]["start"].as_str().unwrap();
    let earlier = server
        .get(
            &format!("/_matrix/client/v3/rooms/{shared}/messages?dir=b&limit=1&from={start}"),
            &bob,
        )
        .await
        .assert_ok();
    assert_eq!(bodies(&earlier["chunk"]), ["one"]);
    assert!(
        joined["state"]
            .as_array()
            .unwrap()
            .iter()
            .any(|event| event["type"] == "m.room.create")
    );
    assert_eq!(joined["visibility"], "private");
    let invite = room(&initial, &invited);
    assert_eq!(invite["membership"], "invite");
    assert_eq!(invite["messages"]["chunk"], json!([]));
    let end = initial["end"].as_str().unwrap().to_owned();

    // Nothing new: an empty chunk at once with timeout=0.
    let nothing = server
        .get(
            &format!("/_matrix/client/v3/events?from={end}&timeout=0"),
            &bob,
        )
        .await
        .assert_ok();
    assert_eq!(nothing["chunk"], json!([]));
    // A waiting request wakes with the next message.
    let sender = {
        let server = server.clone();
        let shared = shared.clone();
        let alice = alice.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            server
                .send_text(&alice, &shared, "t9", "four")
                .await
                .assert_ok();
        })
    };
    let woke = server
        .get(
            &format!("/_matrix/client/v3/events?from={end}&timeout=20000"),
            &bob,
        )
        .await
        .assert_ok();
    sender.await.unwrap();
    assert_eq!(bodies(&woke["chunk"]), ["four"]);
    assert_eq!(woke["chunk"][0]["room_id"], shared);
    assert_eq!(woke["start"], end);
    let next = woke["end"].as_str().unwrap();
    assert_ne!(next, end);
    let after = server
        .get(
            &format!("/_matrix/client/v3/events?from={next}&timeout=0"),
            &bob,
        )
        .await
        .assert_ok();
    assert_eq!(after["chunk"], json!([]));

    // One room.
    let one = server
        .get(
            &format!("/_matrix/client/v3/rooms/{shared}/initialSync?limit=1"),
            &bob,
        )
        .await
        .assert_ok();
    assert_eq!(one["room_id"], shared);
    assert_eq!(one["membership"], "join");
    assert_eq!(bodies(&one["messages"]["chunk"]), ["four"]);
    assert_eq!(one["presence"], json!([]));
    // Carol is in neither room: the shared room's history is not hers to read.
    server
        .get(
            &format!("/_matrix/client/v3/rooms/{shared}/initialSync"),
            &carol,
        )
        .await
        .assert_error(403, "M_FORBIDDEN");

    // Peeking into a world-readable room with /events.
    let readable = server
        .create_room(
            &alice,
            json!({"preset": "public_chat", "initial_state": [
                {"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "world_readable"}}]}),
        )
        .await;
    server
        .send_text(&alice, &readable, "w1", "open to all")
        .await
        .assert_ok();
    let peeked = server
        .get(
            &format!("/_matrix/client/v3/events?room_id={readable}&from=s0&timeout=0"),
            &carol,
        )
        .await
        .assert_ok();
    assert_eq!(bodies(&peeked["chunk"]), ["open to all"]);
    server
        .get(
            &format!("/_matrix/client/v3/events?room_id={shared}&from=s0&timeout=0"),
            &carol,
        )
        .await
        .assert_error(403, "M_FORBIDDEN");
    let initial = server
        .get(
            &format!("/_matrix/client/v3/rooms/{readable}/initialSync"),
            &carol,
        )
        .await
        .assert_ok();
    assert_eq!(bodies(&initial["messages"]["chunk"]), ["open to all"]);

    // Bad parameters.
    for path in [
        "/_matrix/client/v3/events?from=yesterday".to_owned(),
        "/_matrix/client/v3/events?timeout=-1".to_owned(),
        "/_matrix/client/v3/initialSync?limit=many".to_owned(),
        "/_matrix/client/v3/events?room_id=nonsense&timeout=0".to_owned(),
    ] {
        server
            .get(&path, &bob)
            .await
            .assert_error(400, "M_INVALID_PARAM");
    }
}
