//! Spaces: `GET /_matrix/client/v1/rooms/{roomId}/hierarchy` walks a space's rooms breadth
//! first, showing each user only the rooms they may see or join, in pages; rooms of other
//! servers are asked of them (`/_matrix/federation/v1/hierarchy`).

#![allow(clippy::unwrap_used)]

mod common;

use common::TestServer;
use common::federation::*;
use serde_json::{Value, json};

async fn space_child(server: &TestServer, token: &str, space: &str, child: &str, extra: Value) {
    let mut content = json!({"via": [child.rsplit(':').next().unwrap_or("test.example")]});
    if let (Some(content), Some(extra)) = (content.as_object_mut(), extra.as_object()) {
        content.extend(extra.clone());
    }
    server
        .put(
            &format!("/_matrix/client/v3/rooms/{space}/state/m.space.child/{child}"),
            token,
            content,
        )
        .await
        .assert_ok();
}

async fn hierarchy(server: &TestServer, token: &str, room: &str, query: &str) -> common::Response {
    server
        .get(
            &format!("/_matrix/client/v1/rooms/{room}/hierarchy?{query}"),
            token,
        )
        .await
}

fn room_ids(page: &Value) -> Vec<String> {
    page["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|room| room["room_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_space_shows_each_user_the_rooms_they_may_see_in_pages() {
    let server = TestServer::new().await;
    let (_, alice) = server.register("alice").await;
    let (_, bob) = server.register("bob").await;
    let (_, carol) = server.register("carol").await;
    let room = |token: &str, body: Value| {
        let token = token.to_owned();
        let server = &server;
        async move { server.create_room(&token, body).await }
    };
    let space = room(
        &alice,
        json!({"preset": "public_chat", "name": "The space", "room_version": "10",
               "creation_content": {"type": "m.space"}}),
    )
    .await;
    let open = room(
        &alice,
        json!({"preset": "public_chat", "name": "Open", "room_version": "10"}),
    )
    .await;
    let closed = room(
        &alice,
        json!({"preset": "private_chat", "name": "Closed", "room_version": "10"}),
    )
    .await;
    let carols = room(
        &carol,
        json!({"preset": "private_chat", "name": "Carol's", "room_version": "10"}),
    )
    .await;
    let sub = room(
        &alice,
        json!({"preset": "public_chat", "name": "Sub", "room_version": "10",
               "creation_content": {"type": "m.space"}}),
    )
    .await;
    let deep = room(
        &alice,
        json!({"preset": "public_chat", "name": "Deep", "room_version": "10"}),
    )
    .await;
    space_child(
        &server,
        &alice,
        &space,
        &open,
        json!({"order": "b", "suggested": true}),
    )
    .await;
    space_child(&server, &alice, &space, &closed, json!({"order": "a"})).await;
    space_child(&server, &alice, &space, &carols, json!({})).await;
    space_child(&server, &alice, &space, &sub, json!({"order": "c"})).await;
    space_child(&server, &alice, &sub, &deep, json!({})).await;
    // A child event without `via` names no child.
    server
        .put(
            &format!("/_matrix/client/v3/rooms/{space}/state/m.space.child/!gone:test.example"),
            &alice,
            json!({}),
        )
        .await
        .assert_ok();

    // Alice is in all her rooms, in the order of `order`, breadth first; not in carol's.
    let page = hierarchy(&server, &alice, &space, "").await.assert_ok();
    assert_eq!(
        room_ids(&page),
        [
            space.clone(),
            closed.clone(),
            open.clone(),
            sub.clone(),
            deep.clone()
        ]
    );
    let first = &page["rooms"][0];
    assert_eq!(first["name"], "The space");
    assert_eq!(first["room_type"], "m.space");
    assert_eq!(first["join_rule"], "public");
    assert_eq!(first["num_joined_members"], 1);
    assert_eq!(first["children_state"].as_array().unwrap().len(), 4);
    assert!(first["children_state"][0]["origin_server_ts"].is_i64());
    assert!(page["next_batch"].is_null());
    // Bob sees the public rooms only.
    let page = hierarchy(&server, &bob, &space, "").await.assert_ok();
    assert_eq!(
        room_ids(&page),
        [space.clone(), open.clone(), sub.clone(), deep.clone()]
    );
    // Depth, suggested rooms, pages.
    let page = hierarchy(&server, &alice, &space, "max_depth=1")
        .await
        .assert_ok();
    assert_eq!(
        room_ids(&page),
        [space.clone(), closed.clone(), open.clone(), sub.clone()]
    );
    let page = hierarchy(&server, &alice, &space, "suggested_only=true")
        .await
        .assert_ok();
    assert_eq!(room_ids(&page), [space.clone(), open.clone()]);
    let mut paged = Vec::new();
    let mut from: Option<String> = None;
    for _ in 0..5 {
        let query = match &from {
            Some(token) => format!("limit=2&from={token}"),
            None => "limit=2".to_owned(),
        };
        let page = hierarchy(&server, &alice, &space, &query).await.assert_ok();
        paged.extend(room_ids(&page));
        match page["next_batch"].as_str() {
            Some(token) => from = Some(token.to_owned()),
            None => break,
        }
    }
    assert_eq!(
        paged,
        [
            space.clone(),
            closed.clone(),
            open.clone(),
            sub.clone(),
            deep.clone()
        ]
    );
    // A token of other parameters, or made up: refused.
    let page = hierarchy(&server, &alice, &space, "limit=2")
        .await
        .assert_ok();
    let token = page["next_batch"].as_str().unwrap();
    let refused = hierarchy(
        &server,
        &alice,
        &space,
        &format!("from={token}&max_depth=1"),
    )
    .await;
    assert_eq!(refused.status, 400);
    assert_eq!(refused.json()["errcode"], "M_INVALID_PARAM");
    let refused = hierarchy(&server, &alice, &space, "from=nonsense").await;
    assert_eq!(refused.status, 400);
    // A root the user may not see.
    let refused = hierarchy(&server, &bob, &carols, "").await;
    assert_eq!(refused.status, 403);
    assert_eq!(refused.json()["errcode"], "M_FORBIDDEN");
}

#[tokio::test]
async fn a_space_holds_rooms_of_other_servers() {
    let (a, b, _, _, _dir) = two_servers().await;
    let (_, alice) = a.register("alice").await;
    let (_, bob) = b.register("bob").await;
    let space = a
        .create_room(
            &alice,
            json!({"preset": "public_chat", "name": "Across", "room_version": "10",
                   "creation_content": {"type": "m.space"}}),
        )
        .await;
    let local = a
        .create_room(
            &alice,
            json!({"preset": "public_chat", "name": "Here", "room_version": "10"}),
        )
        .await;
    let hidden = a
        .create_room(
            &alice,
            json!({"preset": "private_chat", "name": "Hidden", "room_version": "10"}),
        )
        .await;
    let bobs = b
        .create_room(
            &bob,
            json!({"preset": "public_chat", "name": "Bob's", "room_version": "10"}),
        )
        .await;
    // Ordered by `order`: children added within one millisecond would otherwise be ordered
    // by room id.
    for (child, order) in [(&local, "a"), (&hidden, "b")] {
        space_child(
            &a,
            &alice,
            &space,
            child,
            json!({"via": ["a.test"], "order": order}),
        )
        .await;
    }
    space_child(
        &a,
        &alice,
        &space,
        &bobs,
        json!({"via": ["b.test"], "order": "c"}),
    )
    .await;

    // Alice's server asks b.test about bob's room, which it has no copy of.
    let page = hierarchy(&a, &alice, &space, "").await.assert_ok();
    assert_eq!(
        room_ids(&page),
        [space.clone(), local.clone(), hidden.clone(), bobs.clone()]
    );
    let bobs_summary = &page["rooms"][3];
    assert_eq!(bobs_summary["name"], "Bob's");
    assert_eq!(bobs_summary["num_joined_members"], 1);

    // Bob's server has no copy of the space: it asks a.test, which shows b.test what any server
    // may see (not the private room), and says which children it may not.
    let page = hierarchy(&b, &bob, &space, "").await.assert_ok();
    assert_eq!(
        room_ids(&page),
        [space.clone(), local.clone(), bobs.clone()]
    );
    let answer = get_from_b(&b, &format!("/_matrix/federation/v1/hierarchy/{space}"))
        .await
        .unwrap();
    assert_eq!(answer["room"]["room_id"], space.as_str());
    assert_eq!(answer["inaccessible_children"], json!([hidden]));
    // A room b.test may not see is not found, as one a.test does not know.
    for room in [hidden.as_str(), "!unknown:a.test"] {
        let refused = get_from_b(&b, &format!("/_matrix/federation/v1/hierarchy/{room}")).await;
        assert!(
            matches!(
                refused,
                Err(causeway_matrix::federation::client::FederationError::Status(_, 404, _))
            ),
            "{refused:?}"
        );
    }
}
