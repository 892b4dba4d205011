//! `/messages`, `/context` and sync's `prev_batch` follow the room's topological order (depth,
//! then arrival), not the order events were stored in: an event stored late at a low depth
//! (as a remote server's event can be) is read where its depth puts it, and paging in either
//! direction returns every event once.

#![allow(clippy::unwrap_used)]

mod common;

use common::{TestServer, bodies, encode};
use serde_json::{Value, json};

/// Every page of `/messages` in one direction, `limit` at a time: the bodies in order.
async fn all_pages(
    server: &TestServer,
    token: &str,
    room: &str,
    dir: &str,
    from: Option<&str>,
) -> Vec<String> {
    let filter = common::query_encode(&json!({"types": ["m.room.message"]}).to_string());
    let mut seen = Vec::new();
    let mut from = from.map(str::to_owned);
    for _ in 0..50 {
        let mut path =
            format!("/_matrix/client/v3/rooms/{room}/messages?dir={dir}&limit=2&filter={filter}");
        if let Some(from) = &from {
            path.push_str(&format!("&from={from}"));
        }
        let page = server.get(&path, token).await.assert_ok();
        seen.extend(bodies(&page["chunk"]));
        match page["end"].as_str() {
            Some(end) => from = Some(end.to_owned()),
            None => return seen,
        }
    }
    panic!("paging did not end");
}

#[tokio::test]
async fn reading_follows_depth_then_arrival() {
    let server = TestServer::new().await;
    let (_, alice) = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    let mut ids = Vec::new();
    for i in 0..6 {
        let sent = server
            .send_text(&alice, &room, &format!("t{i}"), &format!("m{i}"))
            .await
            .assert_ok();
        ids.push(sent["event_id"].as_str().unwrap().to_owned());
    }
    // m4 arrived late but belongs between m1 and m2 (its depth says so).
    let depth = |event_id: &str| {
        let store = server.services.store.clone();
        let event_id = event_id.to_owned();
        async move { store.event(&event_id).await.unwrap().unwrap().depth }
    };
    let m1_depth = depth(&ids[1]).await;
    let database = format!(
        "sqlite://{}",
        server.services.config.sqlite_path().display()
    );
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&database).await.unwrap();
    sqlx::query("UPDATE events SET depth = $1 WHERE event_id = $2")
        .bind(m1_depth)
        .bind(&ids[4])
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;

    let topological = ["m0", "m1", "m4", "m2", "m3", "m5"];
    let backward = all_pages(&server, &alice, &room, "b", None).await;
    let mut expected: Vec<&str> = topological.to_vec();
    expected.reverse();
    assert_eq!(backward, expected);
    let forward = all_pages(&server, &alice, &room, "f", Some("t0_0")).await;
    assert_eq!(forward, topological);

    // /context around m4: m1 before it, m2 after it.
    let context = server
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{room}/context/{}?limit=2",
                encode(&ids[4])
            ),
            &alice,
        )
        .await
        .assert_ok();
    assert_eq!(bodies(&context["events_before"]), ["m1"]);
    assert_eq!(bodies(&context["events_after"]), ["m2"]);
    // Its tokens page on from there.
    let start = context["start"].as_str().unwrap();
    assert_eq!(
        all_pages(&server, &alice, &room, "b", Some(start)).await,
        ["m0"]
    );
    let end = context["end"].as_str().unwrap();
    assert_eq!(
        all_pages(&server, &alice, &room, "f", Some(end)).await,
        ["m3", "m5"]
    );

    // Sync's prev_batch pages back in the same order from the start of its timeline.
    let filter = json!({"room": {"timeline": {"limit": 1, "types": ["m.room.message"]}}});
    let sync = server
        .sync(
            &alice,
            &format!("filter={}", common::query_encode(&filter.to_string())),
        )
        .await;
    let timeline = &sync["rooms"]["join"][&room]["timeline"];
    assert_eq!(bodies(&timeline["events"]), ["m5"]);
    let prev_batch = timeline["prev_batch"].as_str().unwrap();
    assert!(prev_batch.starts_with('t'), "{prev_batch}");
    assert_eq!(
        all_pages(&server, &alice, &room, "b", Some(prev_batch)).await,
        ["m3", "m2", "m4", "m1", "m0"]
    );
    // A malformed topological token is refused.
    let bad: Value = server
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&from=t1"),
            &alice,
        )
        .await
        .json();
    assert_eq!(bad["errcode"], "M_INVALID_PARAM");
}
