//! The admin API (Synapse's paths and shapes) and erasure.

#![allow(clippy::unwrap_used)]

mod common;

use common::{TestServer, bodies};
use http::Method;
use serde_json::{Value, json};

async fn login(server: &TestServer, user: &str, password: &str) -> common::Response {
    server
        .call(
            Method::POST,
            "/_matrix/client/v3/login",
            None,
            Some(json!({
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": user},
                "password": password,
            })),
        )
        .await
}

/// An administrator's account and token.
async fn administrator(server: &TestServer) -> String {
    let (root, token) = server.register("root").await;
    assert!(server.services.store.set_admin(&root, true).await.unwrap());
    token
}

#[tokio::test]
async fn admin_api_needs_an_administrator() {
    let server = TestServer::new().await;
    let (_, alice) = server.register("alice").await;
    let path = "/_synapse/admin/v2/users";
    server
        .call(Method::GET, path, None, None)
        .await
        .assert_error(401, "M_MISSING_TOKEN");
    server
        .get(path, "not-a-token")
        .await
        .assert_error(401, "M_UNKNOWN_TOKEN");
    server
        .get(path, &alice)
        .await
        .assert_error(403, "M_FORBIDDEN");
    server
        .post(
            "/_synapse/admin/v1/deactivate/@root:test.example",
            &alice,
            json!({}),
        )
        .await
        .assert_error(403, "M_FORBIDDEN");
    // An administrator may; so may the local secret of the running server.
    let root = administrator(&server).await;
    server.get(path, &root).await.assert_ok();
    server.services.set_admin_secret("local-secret".into());
    let version = server
        .get("/_synapse/admin/v1/server_version", "local-secret")
        .await
        .assert_ok();
    assert!(version["server_version"].is_string());
    server
        .get(path, "local-secre")
        .await
        .assert_error(401, "M_UNKNOWN_TOKEN");
}

#[tokio::test]
async fn accounts_are_created_changed_listed_and_deactivated() {
    let server = TestServer::new().await;
    let root = administrator(&server).await;
    let bob = "/_synapse/admin/v2/users/@bob:test.example";
    server
        .get(bob, &root)
        .await
        .assert_error(404, "M_NOT_FOUND");
    let created = server
        .put(
            bob,
            &root,
            json!({"password": "bob's password", "displayname": "Bob"}),
        )
        .await;
    assert_eq!(created.status, 201);
    let body = created.json();
    assert_eq!(
        (
            &body["name"],
            &body["displayname"],
            &body["admin"],
            &body["deactivated"]
        ),
        (
            &json!("@bob:test.example"),
            &json!("Bob"),
            &json!(false),
            &json!(false)
        )
    );
    let bob_token = login(&server, "bob", "bob's password").await.assert_ok()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    // Changed: an administrator now.
    let changed = server.put(bob, &root, json!({"admin": true})).await;
    assert_eq!(changed.status, 200);
    assert_eq!(changed.json()["admin"], true);
    // A new password logs out his devices.
    server
        .post(
            "/_synapse/admin/v1/reset_password/@bob:test.example",
            &root,
            json!({"new_password": "new password"}),
        )
        .await
        .assert_ok();
    server
        .get("/_matrix/client/v3/account/whoami", &bob_token)
        .await
        .assert_error(401, "M_UNKNOWN_TOKEN");
    login(&server, "bob", "new password").await.assert_ok();
    // Listed, a page at a time.
    for name in ["carol", "dave", "erin"] {
        server.register(name).await;
    }
    let first = server
        .get("/_synapse/admin/v2/users?limit=2", &root)
        .await
        .assert_ok();
    assert_eq!(first["total"], 5);
    assert_eq!(first["users"].as_array().unwrap().len(), 2);
    let next = first["next_token"].as_str().unwrap();
    let rest = server
        .get(
            &format!("/_synapse/admin/v2/users?limit=10&from={next}"),
            &root,
        )
        .await
        .assert_ok();
    assert_eq!(rest["users"].as_array().unwrap().len(), 3);
    assert!(rest.get("next_token").is_none());
    // Deactivated: gone from the default list, there with deactivated=true.
    server
        .post(
            "/_synapse/admin/v1/deactivate/@carol:test.example",
            &root,
            json!({}),
        )
        .await
        .assert_ok();
    let listed = server
        .get("/_synapse/admin/v2/users", &root)
        .await
        .assert_ok();
    assert_eq!(listed["total"], 4);
    let all = server
        .get("/_synapse/admin/v2/users?deactivated=true", &root)
        .await
        .assert_ok();
    assert_eq!(all["total"], 5);
    // Bad requests get precise errors.
    for (path, body, status, errcode) in [
        (bob, "not json", 400, "M_NOT_JSON"),
        (bob, "[1]", 400, "M_BAD_JSON"),
        (bob, r#"{"admin": "yes"}"#, 400, "M_BAD_JSON"),
        (
            "/_synapse/admin/v2/users/@bob:elsewhere.example",
            "{}",
            400,
            "M_INVALID_PARAM",
        ),
        (
            "/_synapse/admin/v2/users/not-a-user",
            "{}",
            400,
            "M_INVALID_PARAM",
        ),
        (
            "/_synapse/admin/v2/users/@carol:test.example",
            r#"{"deactivated": false}"#,
            400,
            "M_INVALID_PARAM",
        ),
    ] {
        server
            .raw(
                Method::PUT,
                path,
                Some(&root),
                Some("application/json"),
                body.as_bytes().to_vec(),
            )
            .await
            .assert_error(status, errcode);
    }
    server
        .post(
            "/_synapse/admin/v1/reset_password/@nobody:test.example",
            &root,
            json!({"new_password": "x"}),
        )
        .await
        .assert_error(404, "M_NOT_FOUND");
    server
        .post(
            "/_synapse/admin/v1/reset_password/@bob:test.example",
            &root,
            json!({}),
        )
        .await
        .assert_error(400, "M_MISSING_PARAM");
    // An administrator does not deactivate themselves by mistake.
    server
        .post(
            "/_synapse/admin/v1/deactivate/@root:test.example",
            &root,
            json!({}),
        )
        .await
        .assert_error(400, "M_INVALID_PARAM");
}

/// Deactivation with `erase: true`: the account's profile, media, account data and presence
/// are gone, and the content of its events is served redacted to whoever was not in the room
/// when they were sent; those who were there still read them.
#[tokio::test]
async fn erasure_erases() {
    let server = TestServer::new().await;
    let (alice, alice_token) = server.register("alice").await;
    let (bob, bob_token) = server.register("bob").await;
    let (_, carol_token) = server.register("carol").await;
    let room = server
        .create_room(&alice_token, json!({"preset": "public_chat"}))
        .await;
    server.join(&bob_token, &room).await;
    server
        .send_text(&alice_token, &room, "a1", "something personal")
        .await
        .assert_ok();
    server
        .put(
            &format!("/_matrix/client/v3/profile/{alice}/displayname"),
            &alice_token,
            json!({"displayname": "Alice Liddell"}),
        )
        .await
        .assert_ok();
    server
        .put(
            &format!("/_matrix/client/v3/user/{alice}/account_data/org.example.private"),
            &alice_token,
            json!({"secret": true}),
        )
        .await
        .assert_ok();
    server
        .put(
            &format!("/_matrix/client/v3/presence/{alice}/status"),
            &alice_token,
            json!({"presence": "online", "status_msg": "here"}),
        )
        .await
        .assert_ok();
    let uploaded = server
        .raw(
            Method::POST,
            "/_matrix/media/v3/upload",
            Some(&alice_token),
            Some("text/plain"),
            b"alice's file".to_vec(),
        )
        .await
        .assert_ok();
    let media_id = uploaded["content_uri"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let media_path = format!("/_matrix/client/v1/media/download/test.example/{media_id}");
    server.get(&media_path, &bob_token).await.assert_ok();

    // Alice deactivates her account and asks for erasure.
    let ask = server
        .post(
            "/_matrix/client/v3/account/deactivate",
            &alice_token,
            json!({"erase": true}),
        )
        .await;
    assert_eq!(ask.status, 401);
    let session = ask.json()["session"].as_str().unwrap().to_owned();
    server
        .post(
            "/_matrix/client/v3/account/deactivate",
            &alice_token,
            json!({"erase": true, "auth": {
                "type": "m.login.password", "session": session,
                "identifier": {"type": "m.id.user", "user": "alice"},
                "password": "secret-pw"}}),
        )
        .await
        .assert_ok();

    let record = server.services.store.user(&alice).await.unwrap().unwrap();
    assert!(record.deactivated && record.erased);
    let profile = server
        .get(&format!("/_matrix/client/v3/profile/{alice}"), &bob_token)
        .await;
    assert!(
        profile.status == 404 || profile.json().get("displayname").is_none(),
        "{:?}",
        profile.json()
    );
    server
        .get(&media_path, &bob_token)
        .await
        .assert_error(404, "M_NOT_FOUND");
    assert_eq!(
        server
            .services
            .store
            .account_data(&alice, "", "org.example.private")
            .await
            .unwrap(),
        None
    );
    let presence = server
        .get(
            &format!("/_matrix/client/v3/presence/{alice}/status"),
            &bob_token,
        )
        .await;
    assert_ne!(presence.json()["status_msg"], "here");

    // Bob was there when she wrote: he still reads it. Carol joins now: she does not.
    let read = async |token: &str| {
        let messages = server.messages(token, &room).await;
        messages["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["type"] == "m.room.message" && e["sender"] == alice)
            .cloned()
            .unwrap()
    };
    assert_eq!(
        bodies(&json!([read(&bob_token).await])),
        ["something personal"]
    );
    server.join(&carol_token, &room).await;
    let seen_by_carol = read(&carol_token).await;
    assert_eq!(seen_by_carol["content"], json!({}), "{seen_by_carol}");
    // Her leave, in the room's state, carries no name.
    let members = server
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/members"),
            &carol_token,
        )
        .await
        .assert_ok();
    let her = members["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["state_key"] == alice)
        .unwrap();
    assert_eq!(her["content"], json!({"membership": "leave"}), "{her}");
    let sync = server.sync(&carol_token, "").await;
    let timeline: &Value = &sync["rooms"]["join"][room.as_str()]["timeline"]["events"];
    assert!(
        !bodies(timeline).contains(&"something personal".to_owned()),
        "{timeline}"
    );
    let _ = bob;
}
