//! `/search` over the messages of the rooms a user is in: every word must match (a word of
//! three characters or more by its beginning), by rank or recency with paging, in the fields
//! asked, narrowed by the filter, as the user may see the room; with context, profiles, state
//! and groups; redacted messages are not found; the events of an upgraded server are indexed.

#![allow(clippy::unwrap_used)]

mod common;

use common::{TestServer, encode};
use http::Method;
use serde_json::{Value, json};

async fn search(server: &TestServer, token: &str, room_events: Value) -> Value {
    search_page(server, token, room_events, None).await
}

async fn search_page(
    server: &TestServer,
    token: &str,
    room_events: Value,
    next_batch: Option<&str>,
) -> Value {
    let path = match next_batch {
        Some(next) => format!("/_matrix/client/v3/search?next_batch={next}"),
        None => "/_matrix/client/v3/search".to_owned(),
    };
    server
        .post(
            &path,
            token,
            json!({"search_categories": {"room_events": room_events}}),
        )
        .await
        .assert_ok()["search_categories"]["room_events"]
        .clone()
}

fn bodies(results: &Value) -> Vec<String> {
    results["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|result| {
            let content = &result["result"]["content"];
            content["body"]
                .as_str()
                .or(content["name"].as_str())
                .unwrap()
                .to_owned()
        })
        .collect()
}

async fn send(server: &TestServer, token: &str, room: &str, txn: &str, body: &str) -> String {
    server.send_text(token, room, txn, body).await.assert_ok()["event_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn search_messages() {
    search_scenario(TestServer::new().await).await;
}

#[tokio::test]
async fn search_messages_on_postgres() {
    let Some(server) = TestServer::postgres().await else {
        eprintln!("CAUSEWAY_TEST_POSTGRES_URL not set: PostgreSQL run skipped");
        return;
    };
    search_scenario(server).await;
}

async fn search_scenario(server: TestServer) {
    let (alice_id, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let (_, carol) = server.register("carol").await;
    let (_, dave) = server.register("dave").await;
    server
        .put(
            &format!("/_matrix/client/v3/profile/{}/displayname", encode(&bob_id)),
            &bob,
            json!({"displayname": "Bob the Baker"}),
        )
        .await
        .assert_ok();
    let kitchen = server
        .create_room(
            &alice,
            json!({"name": "Kitchen cakes", "preset": "public_chat",
                   "initial_state": [{"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "joined"}}]}),
        )
        .await;
    server.join(&bob, &kitchen).await;
    let elsewhere = server.create_room(&carol, json!({})).await;
    send(&server, &carol, &elsewhere, "c1", "cake for carol only").await;
    send(&server, &alice, &kitchen, "a1", "Who baked the cake?").await;
    send(&server, &bob, &kitchen, "b1", "I did: cakes are my thing").await;
    send(&server, &alice, &kitchen, "a2", "cake cake CAKE!").await;
    send(&server, &bob, &kitchen, "b2", "chocolate cake, ok?").await;
    let oops = send(&server, &bob, &kitchen, "b3", "secret cake recipe").await;
    send(&server, &alice, &kitchen, "a3", "ok").await;
    server
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{kitchen}/redact/{}/r1",
                encode(&oops)
            ),
            &bob,
            json!({}),
        )
        .await
        .assert_ok();

    // Recent first; only rooms Alice is in; the redacted message is gone; "cak" finds "cakes".
    let recent = search(
        &server,
        &alice,
        json!({"search_term": "cak", "order_by": "recent"}),
    )
    .await;
    assert_eq!(
        bodies(&recent),
        [
            "chocolate cake, ok?",
            "cake cake CAKE!",
            "I did: cakes are my thing",
            "Who baked the cake?",
            "Kitchen cakes"
        ]
    );
    assert_eq!(recent["count"], 5);
    assert_eq!(recent["highlights"], json!(["cak"]));
    // Every word must match; a short word matches itself only.
    let both = search(
        &server,
        &alice,
        json!({"search_term": "Cake OK", "order_by": "recent"}),
    )
    .await;
    assert_eq!(bodies(&both), ["chocolate cake, ok?"]);
    let short = search(
        &server,
        &alice,
        json!({"search_term": "o", "order_by": "recent"}),
    )
    .await;
    assert_eq!(bodies(&short), Vec::<String>::new());
    // By rank: the message with the word three times first.
    let ranked = search(
        &server,
        &alice,
        json!({"search_term": "cake", "keys": ["content.body"]}),
    )
    .await;
    assert_eq!(bodies(&ranked)[0], "cake cake CAKE!");
    assert_eq!(ranked["results"][0]["rank"], 3);
    assert_eq!(ranked["count"], 4);
    // Only the room name.
    let names = search(
        &server,
        &alice,
        json!({"search_term": "kitchen", "keys": ["content.name"]}),
    )
    .await;
    assert_eq!(bodies(&names), ["Kitchen cakes"]);

    // Paging, both orders: every result once.
    for order in ["recent", "rank"] {
        let query = json!({"search_term": "cake", "order_by": order, "filter": {"limit": 2}});
        let mut seen = Vec::new();
        let mut next: Option<String> = None;
        for _ in 0..10 {
            let page = search_page(&server, &alice, query.clone(), next.as_deref()).await;
            assert!(page["results"].as_array().unwrap().len() <= 2);
            seen.extend(bodies(&page));
            next = page["next_batch"].as_str().map(str::to_owned);
            if next.is_none() {
                break;
            }
        }
        seen.sort();
        assert_eq!(
            seen,
            [
                "I did: cakes are my thing",
                "Kitchen cakes",
                "Who baked the cake?",
                "cake cake CAKE!",
                "chocolate cake, ok?"
            ],
            "{order}"
        );
    }

    // Filters: senders and rooms.
    let from_bob = search(
        &server,
        &alice,
        json!({"search_term": "cake", "order_by": "recent", "filter": {"senders": [bob_id]}}),
    )
    .await;
    assert_eq!(
        bodies(&from_bob),
        ["chocolate cake, ok?", "I did: cakes are my thing"]
    );
    let nowhere = search(
        &server,
        &alice,
        json!({"search_term": "cake", "filter": {"rooms": [elsewhere]}}),
    )
    .await;
    assert_eq!(nowhere["results"], json!([]));

    // Context with profiles, state, groups.
    let detailed = search(
        &server,
        &alice,
        json!({"search_term": "chocolate", "event_context": {"before_limit": 1, "after_limit": 1, "include_profile": true},
               "include_state": true, "groupings": {"group_by": [{"key": "room_id"}, {"key": "sender"}]}}),
    )
    .await;
    let result = &detailed["results"][0];
    let context = &result["context"];
    assert_eq!(
        context["events_before"][0]["content"]["body"],
        "cake cake CAKE!"
    );
    // The redacted message comes after, redacted.
    assert_eq!(context["events_after"][0]["event_id"], oops);
    assert_eq!(context["events_after"][0]["content"], json!({}));
    assert!(context["start"].as_str().unwrap().starts_with('t'));
    assert_eq!(
        context["profile_info"][&bob_id]["displayname"],
        "Bob the Baker"
    );
    assert!(context["profile_info"].get(&alice_id).is_some());
    let state = detailed["state"][&kitchen].as_array().unwrap();
    assert!(state.iter().any(|event| event["type"] == "m.room.create"));
    assert_eq!(
        detailed["groups"]["room_id"][&kitchen]["results"][0],
        result["result"]["event_id"]
    );
    assert_eq!(detailed["groups"]["sender"][&bob_id]["order"], 0);

    // History visibility: Dave joins later and does not find what was said before.
    server.join(&dave, &kitchen).await;
    let before_dave = search(&server, &dave, json!({"search_term": "cake"})).await;
    assert_eq!(bodies(&before_dave), Vec::<String>::new());
    send(&server, &bob, &kitchen, "b4", "fresh cake for dave").await;
    let for_dave = search(&server, &dave, json!({"search_term": "cake"})).await;
    assert_eq!(bodies(&for_dave), ["fresh cake for dave"]);

    // Bad requests.
    let path = "/_matrix/client/v3/search";
    server
        .post(path, &alice, json!({}))
        .await
        .assert_error(400, "M_MISSING_PARAM");
    server
        .post(
            path,
            &alice,
            json!({"search_categories": {"room_events": {}}}),
        )
        .await
        .assert_error(400, "M_MISSING_PARAM");
    for (room_events, status, errcode) in [
        (json!({"search_term": 5}), 400, "M_BAD_JSON"),
        (
            json!({"search_term": "x", "order_by": "size"}),
            400,
            "M_INVALID_PARAM",
        ),
        (
            json!({"search_term": "x", "keys": ["content.url"]}),
            400,
            "M_INVALID_PARAM",
        ),
        (
            json!({"search_term": "x", "filter": {"limit": "ten"}}),
            400,
            "M_BAD_JSON",
        ),
        (
            json!({"search_term": "x", "event_context": {"before_limit": -1}}),
            400,
            "M_BAD_JSON",
        ),
        (
            json!({"search_term": "x", "groupings": {"group_by": [{"key": "type"}]}}),
            400,
            "M_INVALID_PARAM",
        ),
    ] {
        server
            .post(
                path,
                &alice,
                json!({"search_categories": {"room_events": room_events}}),
            )
            .await
            .assert_error(status, errcode);
    }
    server
        .post(
            &format!("{path}?next_batch=s12"),
            &alice,
            json!({"search_categories": {"room_events": {"search_term": "cake"}}}),
        )
        .await
        .assert_error(400, "M_INVALID_PARAM");
    server
        .raw(
            Method::POST,
            path,
            Some(&alice),
            Some("application/json"),
            b"{".to_vec(),
        )
        .await
        .assert_error(400, "M_NOT_JSON");
    // Categories this server does not search answer nothing.
    assert_eq!(
        server
            .post(path, &alice, json!({"search_categories": {}}))
            .await
            .assert_ok(),
        json!({"search_categories": {}})
    );
}

#[tokio::test]
async fn events_of_an_upgraded_server_are_indexed() {
    let server = TestServer::new().await;
    let (_, alice) = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    send(&server, &alice, &room, "a1", "indexed later").await;
    // As a server from before the index: no words, no record of what was indexed.
    let path = server.services.config.sqlite_path();
    sqlx::any::install_default_drivers();
    let database = sqlx::AnyPool::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    for statement in [
        "DELETE FROM event_search",
        "DELETE FROM stream_cursors WHERE name LIKE 'search_index%'",
    ] {
        sqlx::query(statement).execute(&database).await.unwrap();
    }
    database.close().await;
    // Its events are indexed when it starts.
    let server = server.restart().await;
    let database = sqlx::AnyPool::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let indexed: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM event_search")
        .fetch_one(&database)
        .await
        .unwrap();
    database.close().await;
    assert!(indexed > 0);
    assert_eq!(
        bodies(&search(&server, &alice, json!({"search_term": "indexed"})).await),
        ["indexed later"]
    );
}

#[tokio::test]
async fn a_search_sees_every_event_stored_before_it() {
    let server = TestServer::new().await;
    let (_, alice) = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    // Words are indexed in the background, after the event is stored; a search right after
    // the send indexes what is left before it reads.
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(
            send(
                &server,
                &alice,
                &room,
                &format!("t{i}"),
                &format!("burst number{i}"),
            )
            .await,
        );
    }
    let found = bodies(&search(&server, &alice, json!({"search_term": "burst"})).await);
    assert_eq!(found.len(), 10, "a page of the 20 matches");
    assert_eq!(found[0], "burst number19");
    assert_eq!(
        bodies(&search(&server, &alice, json!({"search_term": "number7"})).await),
        ["burst number7"]
    );
    // A redacted event is not found, whether its words were indexed before or after.
    server
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/redact/{}/r1", ids[7]),
            &alice,
            json!({}),
        )
        .await
        .assert_ok();
    assert!(bodies(&search(&server, &alice, json!({"search_term": "number7"})).await).is_empty());
}
