//! The whole client API on PostgreSQL: the same flows as on SQLite.

mod common;

use common::{TestServer, bodies};
use serde_json::json;

#[tokio::test]
async fn rooms_messages_and_sync_on_postgres() {
    let Some(server) = TestServer::postgres().await else {
        eprintln!("CAUSEWAY_TEST_POSTGRES_URL not set: PostgreSQL run skipped");
        return;
    };
    assert_eq!(
        server.services.store.backend(),
        causeway_matrix::store::Backend::Postgres
    );
    let (_, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let room = server
        .create_room(
            &alice,
            json!({"name": "PG", "invite": [bob_id], "room_alias_name": "pg"}),
        )
        .await;
    server.join(&bob, &room).await;
    let since = server.sync(&bob, "").await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    for i in 0..5 {
        server
            .send_text(&alice, &room, &format!("t{i}"), &format!("pg {i}"))
            .await
            .assert_ok();
    }
    // Idempotency holds on PostgreSQL too.
    let again = server
        .send_text(&alice, &room, "t0", "pg 0")
        .await
        .assert_ok();
    let sync = server.sync(&bob, &format!("since={since}")).await;
    let events = &sync["rooms"]["join"][&room]["timeline"]["events"];
    assert_eq!(bodies(events), vec!["pg 0", "pg 1", "pg 2", "pg 3", "pg 4"]);
    assert_eq!(events[0]["event_id"], again["event_id"]);
    let history = server
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=3"),
            &bob,
        )
        .await
        .assert_ok();
    assert_eq!(bodies(&history["chunk"]), vec!["pg 4", "pg 3", "pg 2"]);
    server
        .send_text(&bob, "!unknown:test.example", "x", "nowhere")
        .await
        .assert_error(403, "M_FORBIDDEN");
}
