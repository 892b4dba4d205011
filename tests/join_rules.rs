//! Join rules beyond public and invite, on this server and across servers: knocking (asking
//! to be let into a room whose join rule is `knock`: `make_knock`, `send_knock`; the knock
//! shown with the room's stripped state, answered by an invite, or taken back), and restricted
//! rooms (joined by the members of the rooms they name, a member with the power to invite
//! vouching for the join).

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

/// `user` knocks on the room `alias` names (`room`) with `reason`: the stripped state their
/// sync shows of it, which holds their knock.
async fn knock_by_alias(
    server: &TestServer,
    token: &str,
    (user, alias): (&str, &str),
    room: &str,
    reason: &str,
) -> Vec<Value> {
    let answer = server
        .post(
            &format!("/_matrix/client/v3/knock/{}", encode(alias)),
            token,
            json!({"reason": reason}),
        )
        .await
        .assert_ok();
    assert_eq!(answer["room_id"], room);
    let state = knocked(server, token).await[room]["knock_state"]["events"]
        .as_array()
        .unwrap()
        .clone();
    assert!(state.iter().any(|event| event["type"] == "m.room.member"
        && event["state_key"] == user
        && event["content"]["membership"] == "knock"));
    state
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
    let state = knock_by_alias(
        &server,
        &bob,
        (&bob_id, "#door:test.example"),
        &room,
        "let me in",
    )
    .await;
    assert!(
        state
            .iter()
            .any(|event| event["type"] == "m.room.join_rules"
                && event["content"]["join_rule"] == "knock")
    );
    assert!(state.iter().any(|event| event["type"] == "m.room.name"));
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
    let state = knock_by_alias(&b, &bob, (&bob_id, "#door:a.test"), &room, "from b").await;
    assert!(
        state
            .iter()
            .any(|event| event["type"] == "m.room.name" && event["content"]["name"] == "Door")
    );
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

/// A room of `token`'s that lets in the members of `space`.
async fn restricted_room(server: &TestServer, token: &str, space: &str) -> String {
    server
        .create_room(
            token,
            json!({"name": "Members only", "room_version": "10",
                "initial_state": [{"type": "m.room.join_rules", "state_key": "",
                    "content": {"join_rule": "restricted",
                        "allow": [{"type": "m.room_membership", "room_id": space}]}}]}),
        )
        .await
}

#[tokio::test]
async fn the_members_of_an_allowed_room_join_a_restricted_room() {
    let server = TestServer::new().await;
    let (alice_id, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let (_, carol) = server.register("carol").await;
    let space = server
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    let room = restricted_room(&server, &alice, &space).await;
    // Carol is in no allowed room: refused.
    server
        .post(
            &format!("/_matrix/client/v3/join/{room}"),
            &carol,
            json!({}),
        )
        .await
        .assert_error(403, "M_FORBIDDEN");
    // Bob joins the space, then the room; alice vouches for him.
    server.join(&bob, &space).await;
    server
        .post(&format!("/_matrix/client/v3/join/{room}"), &bob, json!({}))
        .await
        .assert_ok();
    let joined = member(&server, &alice, &room, &bob_id).await;
    assert_eq!(joined["membership"], "join");
    assert_eq!(
        joined["join_authorised_via_users_server"],
        alice_id.as_str()
    );
}

#[tokio::test]
async fn restricted_rooms_across_servers() {
    let (a, b, _, _, _dir) = two_servers().await;
    let (alice_id, alice) = a.register("alice").await;
    let (bob_id, bob) = b.register("bob").await;
    let (carol_id, carol) = b.register("carol").await;
    let space = a
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    let room = restricted_room(&a, &alice, &space).await;
    // Bob of b.test joins the space, then the room through a.test, which vouches for him.
    b.post(
        &format!("/_matrix/client/v3/join/{space}?via=a.test"),
        &bob,
        json!({}),
    )
    .await
    .assert_ok();
    b.post(
        &format!("/_matrix/client/v3/join/{room}?via=a.test"),
        &bob,
        json!({}),
    )
    .await
    .assert_ok();
    let joined = member(&a, &alice, &room, &bob_id).await;
    assert_eq!(joined["membership"], "join");
    assert_eq!(
        joined["join_authorised_via_users_server"],
        alice_id.as_str()
    );
    // The join carries a.test's signature beside b.test's.
    let event_id = a
        .services
        .store
        .membership_event(&room, &bob_id)
        .await
        .unwrap()
        .unwrap()
        .1;
    let stored: Value = serde_json::from_str(
        &a.services
            .store
            .event(&event_id)
            .await
            .unwrap()
            .unwrap()
            .json,
    )
    .unwrap();
    assert!(stored["signatures"]["a.test"].is_object(), "{stored}");
    assert!(stored["signatures"]["b.test"].is_object(), "{stored}");
    // Carol, in no allowed room, is refused; so is a template for a user not b.test's.
    b.post(
        &format!("/_matrix/client/v3/join/{room}?via=a.test"),
        &carol,
        json!({}),
    )
    .await
    .assert_error(403, "M_FORBIDDEN");
    let make = |user: String| {
        let federation = &b.services.federation;
        let room = room.clone();
        async move {
            federation
                .request(
                    &server("a.test"),
                    http::Method::GET,
                    &format!(
                        "/_matrix/federation/v1/make_join/{}/{}?ver=10",
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
        make(carol_id).await,
        (403, "M_FORBIDDEN"),
        "not in the space",
    );
    // A room that lets in the members of a room a.test is not in: a.test cannot tell.
    let elsewhere = restricted_room(&a, &alice, "!unknown:c.test").await;
    let unknown = b
        .services
        .federation
        .request(
            &server("a.test"),
            http::Method::GET,
            &format!(
                "/_matrix/federation/v1/make_join/{}/{}?ver=10",
                encode(&elsewhere),
                encode(&bob_id)
            ),
            None,
            true,
        )
        .await;
    assert_refused(
        unknown,
        (400, "M_UNABLE_TO_AUTHORISE_JOIN"),
        "an allowed room this server is not in",
    );
}
