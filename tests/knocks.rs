//! Knocking: asking to be let into a room whose join rule is `knock`, on this server and on
//! another one (`make_knock`, `send_knock`); the knock shown with the room's stripped state,
//! answered by an invite, or taken back.

#![allow(clippy::unwrap_used)]

mod common;

use common::federation::*;
use common::{TestServer, encode};
use serde_json::{Value, json};

/// A room of `token`'s whose join rule is `knock`.
async fn knock_room(server: &TestServer, token: &str, version: &str) -> String {
    server
        .create_room(
            token,
            json!({"name": "Door", "room_version": version, "room_alias_name": "door",
                "initial_state": [{"type": "m.room.join_rules", "state_key": "",
                    "content": {"join_rule": "knock"}}]}),
        )
        .await
}

/// The knocked rooms in a sync of `token`, with their stripped state.
async fn knocked(server: &TestServer, token: &str) -> Value {
    server.sync(token, "timeout=0").await["rooms"]["knock"].clone()
}

async fn member(server: &TestServer, token: &str, room: &str, user: &str) -> Value {
    server
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.member/{user}"),
            token,
        )
        .await
        .json()
}

#[tokio::test]
async fn knocks_on_a_local_room_are_shown_answered_and_taken_back() {
    let server = TestServer::new().await;
    let (_, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let (carol_id, carol) = server.register("carol").await;
    let room = knock_room(&server, &alice, "10").await;

    // Bob knocks, by the room's alias, with a reason.
    let answer = server
        .post(
            &format!("/_matrix/client/v3/knock/{}", encode("#door:test.example")),
            &bob,
            json!({"reason": "let me in"}),
        )
        .await
        .assert_ok();
    assert_eq!(answer["room_id"], room.as_str());
    let knocks = knocked(&server, &bob).await;
    let state = knocks[&room]["knock_state"]["events"].as_array().unwrap();
    assert!(
        state
            .iter()
            .any(|event| event["type"] == "m.room.join_rules"
                && event["content"]["join_rule"] == "knock")
    );
    assert!(state.iter().any(|event| event["type"] == "m.room.name"));
    assert!(state.iter().any(|event| event["type"] == "m.room.member"
        && event["state_key"] == bob_id.as_str()
        && event["content"]["membership"] == "knock"));
    let knock = member(&server, &alice, &room, &bob_id).await;
    assert_eq!(knock["membership"], "knock");
    assert_eq!(knock["reason"], "let me in");
    // A knock is not a way in: bob cannot send.
    server
        .send_text(&bob, &room, "t1", "hello?")
        .await
        .assert_error(403, "M_FORBIDDEN");
    // Alice lets him in.
    server
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/invite"),
            &alice,
            json!({"user_id": bob_id}),
        )
        .await
        .assert_ok();
    server.join(&bob, &room).await;
    assert_eq!(
        member(&server, &alice, &room, &bob_id).await["membership"],
        "join"
    );
    // Carol knocks and takes it back.
    server
        .post(
            &format!("/_matrix/client/v3/knock/{room}"),
            &carol,
            json!({}),
        )
        .await
        .assert_ok();
    server
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/leave"),
            &carol,
            json!({}),
        )
        .await
        .assert_ok();
    assert_eq!(
        member(&server, &alice, &room, &carol_id).await["membership"],
        "leave"
    );

    // Where the join rule is not `knock`, or the version knows no knocks: refused.
    let public = server
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    server
        .post(
            &format!("/_matrix/client/v3/knock/{public}"),
            &carol,
            json!({}),
        )
        .await
        .assert_error(403, "M_FORBIDDEN");
    let old = server
        .create_room(
            &alice,
            json!({"room_version": "6", "initial_state": [{"type": "m.room.join_rules",
                "state_key": "", "content": {"join_rule": "knock"}}]}),
        )
        .await;
    server
        .post(
            &format!("/_matrix/client/v3/knock/{old}"),
            &carol,
            json!({}),
        )
        .await
        .assert_error(403, "M_FORBIDDEN");
    server
        .post(
            "/_matrix/client/v3/knock/!nowhere:test.example",
            &carol,
            json!({}),
        )
        .await
        .assert_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn knocks_cross_servers() {
    let (a, b, _, _, _dir) = two_servers().await;
    let (alice_id, alice) = a.register("alice").await;
    let (bob_id, bob) = b.register("bob").await;
    let (carol_id, carol) = b.register("carol").await;
    let room = knock_room(&a, &alice, "12").await;

    // Bob of b.test knocks through a.test, by the room's alias there.
    let answer = b
        .post(
            &format!("/_matrix/client/v3/knock/{}", encode("#door:a.test")),
            &bob,
            json!({"reason": "from b"}),
        )
        .await
        .assert_ok();
    assert_eq!(answer["room_id"], room.as_str());
    let knocks = knocked(&b, &bob).await;
    let state = knocks[&room]["knock_state"]["events"].as_array().unwrap();
    assert!(
        state
            .iter()
            .any(|event| event["type"] == "m.room.name" && event["content"]["name"] == "Door")
    );
    assert!(state.iter().any(|event| event["type"] == "m.room.member"
        && event["state_key"] == bob_id.as_str()
        && event["content"]["membership"] == "knock"));
    let knock = member(&a, &alice, &room, &bob_id).await;
    assert_eq!(knock["membership"], "knock");
    assert_eq!(knock["reason"], "from b");
    // Alice invites him; he joins through a.test.
    a.post(
        &format!("/_matrix/client/v3/rooms/{room}/invite"),
        &alice,
        json!({"user_id": bob_id}),
    )
    .await
    .assert_ok();
    eventually("bob's invite on b.test", || async {
        b.sync(&bob, "timeout=0").await["rooms"]["invite"][&room].is_object()
    })
    .await;
    b.post(&format!("/_matrix/client/v3/join/{room}"), &bob, json!({}))
        .await
        .assert_ok();
    assert_eq!(
        member(&a, &alice, &room, &bob_id).await["membership"],
        "join"
    );
    // Carol knocks by the room id (b.test is in the room now: her knock is made there and
    // sent), then takes it back.
    b.post(
        &format!("/_matrix/client/v3/knock/{room}?via=a.test"),
        &carol,
        json!({}),
    )
    .await
    .assert_ok();
    eventually("carol's knock on a.test", || async {
        member(&a, &alice, &room, &carol_id).await["membership"] == "knock"
    })
    .await;
    b.post(
        &format!("/_matrix/client/v3/rooms/{room}/leave"),
        &carol,
        json!({}),
    )
    .await
    .assert_ok();
    eventually("carol's knock taken back on a.test", || async {
        member(&a, &alice, &room, &carol_id).await["membership"] == "leave"
    })
    .await;

    // Dave, on b.test too, knocks on a room b.test has no copy of, then takes it back: both
    // through a.test.
    let (dave_id, dave) = b.register("dave").await;
    let other = a
        .create_room(
            &alice,
            json!({"room_version": "10", "initial_state": [{"type": "m.room.join_rules",
                "state_key": "", "content": {"join_rule": "knock"}}]}),
        )
        .await;
    b.post(
        &format!("/_matrix/client/v3/knock/{other}?via=a.test"),
        &dave,
        json!({}),
    )
    .await
    .assert_ok();
    assert_eq!(
        member(&a, &alice, &other, &dave_id).await["membership"],
        "knock"
    );
    assert!(knocked(&b, &dave).await[&other]["knock_state"]["events"].is_array());
    b.post(
        &format!("/_matrix/client/v3/rooms/{other}/leave"),
        &dave,
        json!({}),
    )
    .await
    .assert_ok();
    assert_eq!(
        member(&a, &alice, &other, &dave_id).await["membership"],
        "leave"
    );
    let after = b.sync(&dave, "timeout=0").await;
    assert!(after["rooms"]["knock"].get(&other).is_none(), "{after}");

    // What a.test refuses to make: a knock of a user not b.test's, on a room that takes no
    // knocks, or of a version that knows none.
    let make = |room: String, user: String| {
        let federation = &b.services.federation;
        async move {
            federation
                .request(
                    &server("a.test"),
                    http::Method::GET,
                    &format!(
                        "/_matrix/federation/v1/make_knock/{}/{}?ver=6&ver=10&ver=12",
                        encode(&room),
                        encode(&user)
                    ),
                    None,
                    true,
                )
                .await
        }
    };
    assert_refused(
        make(room.clone(), alice_id.clone()).await,
        (403, "M_FORBIDDEN"),
        "another server's user",
    );
    let public = a
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    assert_refused(
        make(public, carol_id.clone()).await,
        (403, "M_FORBIDDEN"),
        "a public room",
    );
    let old = a
        .create_room(
            &alice,
            json!({"room_version": "6", "initial_state": [{"type": "m.room.join_rules",
                "state_key": "", "content": {"join_rule": "knock"}}]}),
        )
        .await;
    assert_refused(
        make(old, carol_id.clone()).await,
        (400, "M_INCOMPATIBLE_ROOM_VERSION"),
        "room version 6",
    );
}
