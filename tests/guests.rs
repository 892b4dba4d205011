//! Guest access: off unless configured; guests join rooms whose guest access is `can_join`,
//! read `world_readable` rooms without joining, send messages, and get
//! `M_GUEST_ACCESS_FORBIDDEN` for everything else; they leave a room that stops letting them in.

#![allow(clippy::unwrap_used)]

mod common;

use common::TestServer;
use http::Method;
use serde_json::json;

async fn register_guest(server: &TestServer) -> common::Response {
    server
        .call(
            Method::POST,
            "/_matrix/client/v3/register?kind=guest",
            None,
            Some(json!({"initial_device_display_name": "browser"})),
        )
        .await
}

#[tokio::test]
async fn guests_are_off_by_default() {
    let server = TestServer::new().await;
    register_guest(&server)
        .await
        .assert_error(403, "M_GUEST_ACCESS_FORBIDDEN");
}

#[tokio::test]
async fn what_guests_may_do() {
    let server = TestServer::with_config(|config| {
        config.registration.mode = causeway_config::RegistrationMode::Disabled;
        config.registration.guests = true;
    })
    .await;
    let (_, alice) = {
        // Registration is closed: the host is made directly.
        let services = &server.services;
        let hash = causeway_matrix::services::hash_password("alice-pw")
            .await
            .unwrap();
        services
            .store
            .create_user("@alice:test.example", Some(&hash), Some("alice"), false)
            .await
            .unwrap();
        let login = server.login("alice", "alice-pw").await;
        (
            login["user_id"].as_str().unwrap().to_owned(),
            login["access_token"].as_str().unwrap().to_owned(),
        )
    };
    // Registration of users stays closed; guests may come.
    server
        .call(
            Method::POST,
            "/_matrix/client/v3/register",
            None,
            Some(json!({"username": "mallory", "password": "x"})),
        )
        .await
        .assert_error(403, "M_FORBIDDEN");
    let guest = register_guest(&server).await.assert_ok();
    let guest_id = guest["user_id"].as_str().unwrap().to_owned();
    let localpart = guest_id.trim_start_matches('@').split(':').next().unwrap();
    assert!(localpart.chars().all(|c| c.is_ascii_digit()), "{guest_id}");
    let guest = guest["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        server
            .get("/_matrix/client/v3/account/whoami", &guest)
            .await
            .assert_ok()["user_id"],
        guest_id
    );

    let open = server
        .create_room(
            &alice,
            json!({"preset": "public_chat", "initial_state": [
                {"type": "m.room.guest_access", "state_key": "", "content": {"guest_access": "can_join"}}]}),
        )
        .await;
    let readable = server
        .create_room(
            &alice,
            json!({"preset": "public_chat", "initial_state": [
                {"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "world_readable"}}]}),
        )
        .await;
    let private = server
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    server
        .send_text(&alice, &readable, "r1", "for anyone to read")
        .await
        .assert_ok();
    server
        .send_text(&alice, &private, "p1", "members only")
        .await
        .assert_ok();

    // A room that lets guests in.
    server.join(&guest, &open).await;
    server
        .send_text(&guest, &open, "g1", "hello from a guest")
        .await
        .assert_ok();
    server
        .put(
            &format!("/_matrix/client/v3/rooms/{open}/send/m.reaction/g2"),
            &guest,
            json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": "$x", "key": "a"}}),
        )
        .await
        .assert_error(403, "M_GUEST_ACCESS_FORBIDDEN");
    server
        .put(
            &format!("/_matrix/client/v3/rooms/{open}/state/m.room.topic/"),
            &guest,
            json!({"topic": "guests rule"}),
        )
        .await
        .assert_error(403, "M_GUEST_ACCESS_FORBIDDEN");
    // A room that does not: no joining, but reading a world-readable one.
    server
        .post(
            &format!("/_matrix/client/v3/rooms/{readable}/join"),
            &guest,
            json!({}),
        )
        .await
        .assert_error(403, "M_GUEST_ACCESS_FORBIDDEN");
    let messages = server.messages(&guest, &readable).await;
    assert!(
        common::bodies(&messages["chunk"]).contains(&"for anyone to read".to_owned()),
        "{messages}"
    );
    server
        .get(
            &format!("/_matrix/client/v3/rooms/{private}/messages?dir=b"),
            &guest,
        )
        .await
        .assert_error(403, "M_FORBIDDEN");
    // Nothing else.
    for (method, path, body) in [
        (
            Method::POST,
            "/_matrix/client/v3/createRoom".to_owned(),
            json!({}),
        ),
        (
            Method::POST,
            format!("/_matrix/client/v3/rooms/{open}/invite"),
            json!({"user_id": "@alice:test.example"}),
        ),
        (
            Method::GET,
            "/_matrix/client/v3/pushers".to_owned(),
            json!({}),
        ),
        (
            Method::POST,
            "/_matrix/client/v3/search".to_owned(),
            json!({"search_categories": {}}),
        ),
        (
            Method::PUT,
            "/_matrix/client/v3/user/x/account_data/m.direct".to_owned(),
            json!({}),
        ),
        (
            Method::POST,
            "/_matrix/client/v3/room_keys/version".to_owned(),
            json!({}),
        ),
    ] {
        let body = (method != Method::GET).then_some(body);
        server
            .call(method.clone(), &path, Some(&guest), body)
            .await
            .assert_error(403, "M_GUEST_ACCESS_FORBIDDEN");
    }
    let sync = server.sync(&guest, "").await;
    assert!(sync["rooms"]["join"].get(&open).is_some(), "{sync}");

    // The room stops letting guests in: the guest leaves it.
    server
        .put(
            &format!("/_matrix/client/v3/rooms/{open}/state/m.room.guest_access/"),
            &alice,
            json!({"guest_access": "forbidden"}),
        )
        .await
        .assert_ok();
    let member = server
        .get(
            &format!("/_matrix/client/v3/rooms/{open}/state/m.room.member/{guest_id}"),
            &alice,
        )
        .await
        .assert_ok();
    assert_eq!(member["membership"], "leave");
}
