//! Registration through user-interactive authentication as the specification describes it:
//! the parameters of the first request are remembered by the session, a repeated request of a
//! finished session answers the same account, `inhibit_login`, and sessions serve registration
//! only.

#![allow(clippy::unwrap_used)]

mod common;

use common::TestServer;
use http::Method;
use serde_json::{Value, json};

async fn register(server: &TestServer, body: Value) -> common::Response {
    server
        .call(
            Method::POST,
            "/_matrix/client/v3/register",
            None,
            Some(body),
        )
        .await
}

#[tokio::test]
async fn registration_sessions() {
    let server = TestServer::new().await;
    // The first request names the account and its password; it learns the flows.
    let first = register(
        &server,
        json!({"username": "Dora", "password": "dora-pw", "initial_device_display_name": "Dora's phone"}),
    )
    .await;
    assert_eq!(first.status, 401);
    let first = first.json();
    assert_eq!(first["flows"], json!([{"stages": ["m.login.dummy"]}]));
    let session = first["session"].as_str().unwrap().to_owned();
    // The next gives only the stage: the name, password and device name are the first's.
    let done = register(
        &server,
        json!({"auth": {"type": "m.login.dummy", "session": session}}),
    )
    .await
    .assert_ok();
    assert_eq!(done["user_id"], "@dora:test.example");
    let token = done["access_token"].as_str().unwrap().to_owned();
    let device = done["device_id"].as_str().unwrap().to_owned();
    let devices = server
        .get("/_matrix/client/v3/devices", &token)
        .await
        .assert_ok();
    assert_eq!(devices["devices"][0]["display_name"], "Dora's phone");
    server.login("dora", "dora-pw").await;
    // The same request again: the same account, logged in again, nothing registered twice.
    let again = register(
        &server,
        json!({"username": "dora", "auth": {"type": "m.login.dummy", "session": session}}),
    )
    .await
    .assert_ok();
    assert_eq!(again["user_id"], "@dora:test.example");
    let second_token = again["access_token"].as_str().unwrap();
    assert_ne!(second_token, token);
    assert_ne!(again["device_id"], device);
    server
        .get("/_matrix/client/v3/account/whoami", second_token)
        .await
        .assert_ok();
    // A new session for the same name: taken.
    register(&server, json!({"username": "dora", "password": "x"}))
        .await
        .assert_error(400, "M_USER_IN_USE");

    // A later request may change what the first asked for.
    let first = register(&server, json!({"username": "erin", "password": "erin-pw"})).await;
    let session = first.json()["session"].as_str().unwrap().to_owned();
    let done = register(
        &server,
        json!({"username": "erin2", "inhibit_login": true,
               "auth": {"type": "m.login.dummy", "session": session}}),
    )
    .await
    .assert_ok();
    assert_eq!(done["user_id"], "@erin2:test.example");
    // inhibit_login: no token, no device.
    assert!(done.get("access_token").is_none(), "{done}");
    assert!(done.get("device_id").is_none_or(Value::is_null), "{done}");
    server.login("erin2", "erin-pw").await;

    // A flow finished without a password asks for one, and the session goes on.
    let first = register(&server, json!({"username": "fay"})).await;
    let session = first.json()["session"].as_str().unwrap().to_owned();
    register(
        &server,
        json!({"auth": {"type": "m.login.dummy", "session": session}}),
    )
    .await
    .assert_error(400, "M_MISSING_PARAM");
    let done = register(
        &server,
        json!({"password": "fay-pw", "auth": {"type": "m.login.dummy", "session": session}}),
    )
    .await
    .assert_ok();
    assert_eq!(done["user_id"], "@fay:test.example");

    // Sessions this server never opened, and registration sessions used for something else.
    register(
        &server,
        json!({"username": "gus", "password": "x", "auth": {"type": "m.login.dummy", "session": "forged"}}),
    )
    .await
    .assert_error(400, "M_UNKNOWN");
    let first = register(&server, json!({"username": "hal", "password": "x"})).await;
    let session = first.json()["session"].as_str().unwrap().to_owned();
    let response = server
        .post(
            "/_matrix/client/v3/account/deactivate",
            &token,
            json!({"auth": {"type": "m.login.password", "session": session,
                             "identifier": {"type": "m.id.user", "user": "dora"}, "password": "dora-pw"}}),
        )
        .await;
    response.assert_error(403, "M_FORBIDDEN");
    server
        .get("/_matrix/client/v3/account/whoami", &token)
        .await
        .assert_ok();
}
