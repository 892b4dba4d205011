//! Jumping to a date: `timestamp_to_event` finds a room's event nearest a point in time, among
//! those the asker may see, for local clients and for other servers in the room.

#![allow(clippy::unwrap_used)]

mod common;

use causeway_matrix::federation::client::FederationError;
use common::federation::*;
use serde_json::Value;

async fn origin_ts(server: &common::TestServer, token: &str, room: &str, event: &str) -> i64 {
    server
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/event/{event}"),
            token,
        )
        .await
        .assert_ok()["origin_server_ts"]
        .as_i64()
        .unwrap()
}

#[tokio::test]
async fn the_event_nearest_a_time_for_clients_and_servers() {
    let Shared {
        a, b, alice, room, ..
    } = shared_room("10").await;
    let mut sent = Vec::new();
    for i in 0..3 {
        let id = event_id_of(
            a.send_text(&alice, &room, &format!("t{i}"), &format!("m{i}"))
                .await,
        );
        let ts = origin_ts(&a, &alice, &room, &id).await;
        sent.push((id, ts));
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let ask = |query: String| {
        let (a, alice, room) = (&a, &alice, &room);
        async move {
            a.get(
                &format!("/_matrix/client/v1/rooms/{room}/timestamp_to_event?{query}"),
                alice,
            )
            .await
        }
    };
    // Forward from the second message's time: the second; backward from just before it: the first.
    let (second, second_ts) = &sent[1];
    let found = ask(format!("ts={second_ts}&dir=f")).await.assert_ok();
    assert_eq!(found["event_id"], second.as_str());
    assert_eq!(found["origin_server_ts"], *second_ts);
    let found = ask(format!("ts={}&dir=b", second_ts - 1)).await.assert_ok();
    assert!(
        found["origin_server_ts"].as_i64().unwrap() < *second_ts,
        "{found}"
    );
    // Past the last message forward: nothing.
    let after = sent[2].1 + 60_000;
    let none = ask(format!("ts={after}&dir=f")).await;
    assert_eq!(none.status, 404);
    assert_eq!(none.json()["errcode"], "M_NOT_FOUND");
    // Bad parameters.
    for (query, errcode) in [
        ("dir=f", "M_MISSING_PARAM"),
        ("ts=1", "M_MISSING_PARAM"),
        ("ts=soon&dir=f", "M_INVALID_PARAM"),
        ("ts=1&dir=sideways", "M_INVALID_PARAM"),
    ] {
        let refused = ask(query.to_owned()).await;
        assert_eq!(refused.status, 400, "{query}");
        assert_eq!(refused.json()["errcode"], errcode, "{query}");
    }
    // A user who is not in the room sees nothing there.
    let (_, carol) = a.register("carol").await;
    let hidden = a
        .get(
            &format!("/_matrix/client/v1/rooms/{room}/timestamp_to_event?ts={second_ts}&dir=f"),
            &carol,
        )
        .await;
    assert_eq!(hidden.status, 404);

    // b.test, in the room, asks a.test; about a room it is not in, it is refused (a room
    // a.test does not know is not found).
    let path = format!("/_matrix/federation/v1/timestamp_to_event/{room}?ts={second_ts}&dir=f");
    let found: Value = get_from_b(&b, &path).await.unwrap();
    assert_eq!(found["event_id"], second.as_str());
    let elsewhere = a
        .create_room(&alice, serde_json::json!({"preset": "private_chat"}))
        .await;
    for (room, status) in [(elsewhere.as_str(), 403), ("!nowhere:a.test", 404)] {
        let refused = get_from_b(
            &b,
            &format!("/_matrix/federation/v1/timestamp_to_event/{room}?ts=1&dir=f"),
        )
        .await;
        assert!(
            matches!(refused, Err(FederationError::Status(_, code, _)) if code == status),
            "{refused:?}"
        );
    }
}
