//! End-to-end encryption support: keys are stored, queried, claimed and signed; to-device
//! messages and device-list changes reach the right devices through sync.

// The key helpers above the tests unwrap like the tests do.
#![allow(clippy::unwrap_used)]

mod common;

use common::TestServer;
use http::Method;
use ruma::canonical_json::CanonicalJsonObject;
use ruma::signatures::Ed25519KeyPair;
use serde_json::{Value, json};

/// A key pair whose key id is its own public key, as cross-signing keys are named.
fn cross_signing_pair() -> (Ed25519KeyPair, String) {
    let document = Ed25519KeyPair::generate();
    let probe = Ed25519KeyPair::from_der(&document, "probe".into()).unwrap();
    let public =
        ruma::serde::Base64::<ruma::serde::base64::Standard, _>::new(probe.public_key().to_vec())
            .encode();
    (
        Ed25519KeyPair::from_der(&document, public.clone()).unwrap(),
        public,
    )
}

fn sign(user_id: &str, key: &Ed25519KeyPair, value: Value) -> Value {
    let mut object: CanonicalJsonObject = serde_json::from_value(value).unwrap();
    ruma::signatures::sign_json(user_id, key, &mut object).unwrap();
    serde_json::to_value(object).unwrap()
}

fn device_keys(user_id: &str, device_id: &str) -> Value {
    json!({
        "user_id": user_id,
        "device_id": device_id,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {
            format!("curve25519:{device_id}"): "curve-key",
            format!("ed25519:{device_id}"): "ed-key",
        },
        "signatures": {user_id: {format!("ed25519:{device_id}"): "device-self-signature"}},
    })
}

#[tokio::test]
async fn keys_are_uploaded_queried_and_claimed() {
    let server = TestServer::new().await;
    let (alice_id, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let room = server
        .create_room(&alice, json!({"invite": [bob_id]}))
        .await;
    server.join(&bob, &room).await;
    let alice_device = server
        .get("/_matrix/client/v3/account/whoami", &alice)
        .await
        .assert_ok()["device_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let bob_since = server.sync(&bob, "").await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();

    // Keys for another device are refused.
    server
        .post(
            "/_matrix/client/v3/keys/upload",
            &alice,
            json!({"device_keys": device_keys(&alice_id, "OTHER")}),
        )
        .await
        .assert_error(400, "M_INVALID_PARAM");
    let uploaded = server
        .post(
            "/_matrix/client/v3/keys/upload",
            &alice,
            json!({
                "device_keys": device_keys(&alice_id, &alice_device),
                "one_time_keys": {
                    "signed_curve25519:AAAA": {"key": "one", "signatures": {}},
                    "signed_curve25519:AAAB": {"key": "two", "signatures": {}},
                },
                "fallback_keys": {"signed_curve25519:FFFF": {"key": "fallback", "fallback": true, "signatures": {}}},
            }),
        )
        .await
        .assert_ok();
    assert_eq!(uploaded["one_time_key_counts"]["signed_curve25519"], 2);

    // Bob learns that Alice's keys changed, and queries them.
    let sync = server.sync(&bob, &format!("since={bob_since}")).await;
    assert!(
        sync["device_lists"]["changed"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u == &json!(alice_id)),
        "{sync}"
    );
    let query = server
        .post(
            "/_matrix/client/v3/keys/query",
            &bob,
            json!({"device_keys": {alice_id.clone(): []}}),
        )
        .await
        .assert_ok();
    let keys = &query["device_keys"][&alice_id][&alice_device];
    assert_eq!(
        keys["keys"][format!("curve25519:{alice_device}")],
        "curve-key"
    );
    let remote = server
        .post(
            "/_matrix/client/v3/keys/query",
            &bob,
            json!({"device_keys": {"@x:elsewhere.example": []}}),
        )
        .await
        .assert_ok();
    assert!(remote["failures"].get("elsewhere.example").is_some());

    // Two one-time keys, then the fallback key.
    // Clients send a timeout with it (Element: 10 s); it is accepted.
    let claim = json!({
        "one_time_keys": {alice_id.clone(): {alice_device.clone(): "signed_curve25519"}},
        "timeout": 10000,
    });
    let mut claimed = Vec::new();
    for _ in 0..3 {
        let response = server
            .post("/_matrix/client/v3/keys/claim", &bob, claim.clone())
            .await
            .assert_ok();
        let keys = response["one_time_keys"][&alice_id][&alice_device]
            .as_object()
            .unwrap()
            .clone();
        assert_eq!(keys.len(), 1);
        claimed.push(keys.keys().next().unwrap().clone());
    }
    assert_eq!(
        claimed,
        vec![
            "signed_curve25519:AAAA",
            "signed_curve25519:AAAB",
            "signed_curve25519:FFFF"
        ]
    );
    let alice_sync = server.sync(&alice, "").await;
    assert!(
        alice_sync["device_one_time_keys_count"]
            .get("signed_curve25519")
            .is_none_or(|c| c == 0)
    );
    assert_eq!(alice_sync["device_unused_fallback_key_types"], json!([]));
    let changes = server
        .get(
            &format!(
                "/_matrix/client/v3/keys/changes?from={bob_since}&to={}",
                alice_sync["next_batch"].as_str().unwrap()
            ),
            &bob,
        )
        .await
        .assert_ok();
    assert_eq!(changes["changed"], json!([alice_id]));
}

#[tokio::test]
async fn to_device_messages_are_delivered_once() {
    let server = TestServer::new().await;
    let (alice_id, alice) = server.register("alice").await;
    let (_, bob) = server.register("bob").await;
    let since = server.sync(&alice, "").await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let message = json!({"messages": {alice_id.clone(): {"*": {"secret": "room key"}}}});
    server
        .put(
            "/_matrix/client/v3/sendToDevice/m.room_key_request/t1",
            &bob,
            message.clone(),
        )
        .await
        .assert_ok();
    // The same transaction again is not delivered twice.
    server
        .put(
            "/_matrix/client/v3/sendToDevice/m.room_key_request/t1",
            &bob,
            message,
        )
        .await
        .assert_ok();
    let first = server.sync(&alice, &format!("since={since}")).await;
    let events = first["to_device"]["events"].as_array().unwrap().clone();
    assert_eq!(events.len(), 1, "{first}");
    assert_eq!(events[0]["type"], "m.room_key_request");
    assert_eq!(events[0]["content"]["secret"], "room key");
    assert_eq!(events[0]["sender"], "@bob:test.example");
    // Syncing from the next token acknowledges them.
    let next = first["next_batch"].as_str().unwrap();
    let second = server
        .sync(&alice, &format!("since={next}&timeout=0"))
        .await;
    assert!(
        second["to_device"]["events"]
            .as_array()
            .is_none_or(Vec::is_empty),
        "{second}"
    );
}

#[tokio::test]
async fn cross_signing_and_signatures() {
    let server = TestServer::new().await;
    let (alice_id, alice) = server.register("alice").await;
    let device = server
        .get("/_matrix/client/v3/account/whoami", &alice)
        .await
        .assert_ok()["device_id"]
        .as_str()
        .unwrap()
        .to_owned();
    server
        .post(
            "/_matrix/client/v3/keys/upload",
            &alice,
            json!({"device_keys": device_keys(&alice_id, &device)}),
        )
        .await
        .assert_ok();
    let (master, master_public) = cross_signing_pair();
    let (self_signing, self_public) = cross_signing_pair();
    let master_key = json!({
        "user_id": alice_id, "usage": ["master"],
        "keys": {format!("ed25519:{master_public}"): master_public},
    });
    let self_signing_key = sign(
        &alice_id,
        &master,
        json!({
            "user_id": alice_id, "usage": ["self_signing"],
            "keys": {format!("ed25519:{self_public}"): self_public},
        }),
    );
    // A key of the wrong usage is refused; the first upload needs no password.
    server
        .post(
            "/_matrix/client/v3/keys/device_signing/upload",
            &alice,
            json!({"master_key": {"user_id": alice_id, "usage": ["self_signing"], "keys": {"ed25519:x": "x"}}}),
        )
        .await
        .assert_error(400, "M_INVALID_PARAM");
    server
        .post(
            "/_matrix/client/v3/keys/device_signing/upload",
            &alice,
            json!({"master_key": master_key, "self_signing_key": self_signing_key}),
        )
        .await
        .assert_ok();
    let query = server
        .post(
            "/_matrix/client/v3/keys/query",
            &alice,
            json!({"device_keys": {alice_id.clone(): []}}),
        )
        .await
        .assert_ok();
    assert_eq!(query["master_keys"][&alice_id]["usage"], json!(["master"]));
    assert_eq!(
        query["self_signing_keys"][&alice_id]["keys"][format!("ed25519:{self_public}")],
        self_public
    );

    // Replacing the master key asks for the password.
    let (_, other_public) = cross_signing_pair();
    let replacement = server
        .post(
            "/_matrix/client/v3/keys/device_signing/upload",
            &alice,
            json!({"master_key": {"user_id": alice_id, "usage": ["master"], "keys": {format!("ed25519:{other_public}"): other_public}}}),
        )
        .await;
    assert_eq!(replacement.status, 401);
    assert_eq!(
        replacement.json()["flows"][0]["stages"][0],
        "m.login.password"
    );

    // The self-signing key signs the device; the signature is verified and kept.
    let stored = query["device_keys"][&alice_id][&device].clone();
    let mut unsigned_copy = stored.as_object().unwrap().clone();
    unsigned_copy.remove("unsigned");
    unsigned_copy.remove("signatures");
    let signed = sign(
        &alice_id,
        &self_signing,
        Value::Object(unsigned_copy.clone()),
    );
    let result = server
        .post(
            "/_matrix/client/v3/keys/signatures/upload",
            &alice,
            json!({alice_id.clone(): {device.clone(): signed}}),
        )
        .await
        .assert_ok();
    assert!(
        result["failures"].as_object().is_none_or(|f| f.is_empty()),
        "{result}"
    );
    let query = server
        .post(
            "/_matrix/client/v3/keys/query",
            &alice,
            json!({"device_keys": {alice_id.clone(): [device.clone()]}}),
        )
        .await
        .assert_ok();
    let signatures = &query["device_keys"][&alice_id][&device]["signatures"][&alice_id];
    assert!(
        signatures.get(format!("ed25519:{self_public}")).is_some(),
        "{signatures}"
    );
    assert_eq!(
        signatures[format!("ed25519:{device}")],
        "device-self-signature"
    );

    // A forged signature is reported and not stored.
    let mut forged = unsigned_copy;
    forged.insert(
        "signatures".into(),
        json!({alice_id.clone(): {format!("ed25519:{self_public}"): "Zm9yZ2Vk"}}),
    );
    let result = server
        .post(
            "/_matrix/client/v3/keys/signatures/upload",
            &alice,
            json!({alice_id.clone(): {device.clone(): forged}}),
        )
        .await
        .assert_ok();
    assert_eq!(
        result["failures"][&alice_id][&device]["errcode"],
        "M_INVALID_SIGNATURE"
    );
}

#[tokio::test]
async fn deleting_a_device_removes_its_keys() {
    let server = TestServer::new().await;
    let (alice_id, alice) = server.register("alice").await;
    let device = server
        .get("/_matrix/client/v3/account/whoami", &alice)
        .await
        .assert_ok()["device_id"]
        .as_str()
        .unwrap()
        .to_owned();
    server
        .post(
            "/_matrix/client/v3/keys/upload",
            &alice,
            json!({"device_keys": device_keys(&alice_id, &device)}),
        )
        .await
        .assert_ok();
    let login = server
        .call(
            Method::POST,
            "/_matrix/client/v3/login",
            None,
            Some(json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "secret-pw"})),
        )
        .await
        .assert_ok();
    let other = login["access_token"].as_str().unwrap().to_owned();
    server
        .post("/_matrix/client/v3/logout", &alice, json!({}))
        .await
        .assert_ok();
    let query = server
        .post(
            "/_matrix/client/v3/keys/query",
            &other,
            json!({"device_keys": {alice_id.clone(): []}}),
        )
        .await
        .assert_ok();
    assert_eq!(query["device_keys"][&alice_id], json!({}));
}

/// A new login of a user, its keys and its deletion reach the user's other devices in
/// `device_lists.changed` (so that they fetch and verify its keys), and a waiting long-poll
/// answers at once.
#[tokio::test]
async fn own_device_changes_reach_the_other_devices() {
    let server = TestServer::new().await;
    let (alice_id, first) = server.register("alice").await;
    let before_login = server.sync(&first, "").await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let login = server
        .call(
            http::Method::POST,
            "/_matrix/client/v3/login",
            None,
            Some(json!({
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": "alice"},
                "password": "secret-pw",
                "device_id": "SECOND",
            })),
        )
        .await
        .assert_ok();
    let second = login["access_token"].as_str().unwrap().to_owned();
    // The login itself is news to the first device.
    let after_login = server
        .sync(&first, &format!("since={before_login}&timeout=0"))
        .await;
    assert_eq!(after_login["device_lists"]["changed"], json!([alice_id]));
    let since = after_login["next_batch"].as_str().unwrap().to_owned();
    // The first device waits; the second uploads its keys, which answers the wait.
    let waiting = {
        let server = &server;
        let first = first.clone();
        let since = since.clone();
        async move {
            server
                .sync(&first, &format!("since={since}&timeout=30000"))
                .await
        }
    };
    let upload = async {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        server
            .post(
                "/_matrix/client/v3/keys/upload",
                &second,
                json!({"device_keys": device_keys(&alice_id, "SECOND")}),
            )
            .await
            .assert_ok();
    };
    let (sync, ()) = tokio::join!(waiting, upload);
    assert_eq!(sync["device_lists"]["changed"], json!([alice_id]), "{sync}");
    let next = sync["next_batch"].as_str().unwrap().to_owned();
    let changes = server
        .get(
            &format!("/_matrix/client/v3/keys/changes?from={since}&to={next}"),
            &first,
        )
        .await
        .assert_ok();
    assert_eq!(changes["changed"], json!([alice_id]));
    // Nothing changed since: nothing said.
    let quiet = server.sync(&first, &format!("since={next}")).await;
    assert!(
        quiet["device_lists"]["changed"]
            .as_array()
            .is_none_or(|c| c.is_empty()),
        "{quiet}"
    );
}

fn backed_up(index: u64, forwarded: u64, verified: bool, marker: &str) -> Value {
    json!({
        "first_message_index": index,
        "forwarded_count": forwarded,
        "is_verified": verified,
        "session_data": {"ephemeral": marker, "ciphertext": "c", "mac": "m"},
    })
}

#[tokio::test]
async fn key_backup() {
    let server = TestServer::new().await;
    let (_, alice) = server.register("alice").await;
    let (_, bob) = server.register("bob").await;
    let version_path = "/_matrix/client/v3/room_keys/version";
    // No backup yet.
    server
        .get(version_path, &alice)
        .await
        .assert_error(404, "M_NOT_FOUND");
    server
        .get("/_matrix/client/v3/room_keys/keys?version=1", &alice)
        .await
        .assert_error(404, "M_NOT_FOUND");
    // Bad descriptions.
    server
        .post(version_path, &alice, json!({"auth_data": {}}))
        .await
        .assert_error(400, "M_MISSING_PARAM");
    server
        .post(
            version_path,
            &alice,
            json!({"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": 3}),
        )
        .await
        .assert_error(400, "M_BAD_JSON");
    let algorithm = "m.megolm_backup.v1.curve25519-aes-sha2";
    let created = server
        .post(
            version_path,
            &alice,
            json!({"algorithm": algorithm, "auth_data": {"public_key": "abc", "signatures": {}}}),
        )
        .await
        .assert_ok();
    assert_eq!(created["version"], "1");
    let info = server.get(version_path, &alice).await.assert_ok();
    assert_eq!(info["version"], "1");
    assert_eq!(info["algorithm"], algorithm);
    assert_eq!(info["auth_data"]["public_key"], "abc");
    assert_eq!(info["count"], 0);
    let first_etag = info["etag"].as_str().unwrap().to_owned();
    // Bob has none of Alice's.
    server
        .get(version_path, &bob)
        .await
        .assert_error(404, "M_NOT_FOUND");
    server
        .get(&format!("{version_path}/1"), &bob)
        .await
        .assert_error(404, "M_NOT_FOUND");

    // Keys in every form of upload.
    let room = "!room:test.example";
    let keys_path = "/_matrix/client/v3/room_keys/keys";
    let all = server
        .put(
            &format!("{keys_path}?version=1"),
            &alice,
            json!({"rooms": {room: {"sessions": {"s1": backed_up(5, 1, false, "first")}}}}),
        )
        .await
        .assert_ok();
    assert_eq!(all["count"], 1);
    assert_ne!(all["etag"].as_str().unwrap(), first_etag);
    let room_path = format!("{keys_path}/{}", common::encode(room));
    let by_room = server
        .put(
            &format!("{room_path}?version=1"),
            &alice,
            json!({"sessions": {"s2": backed_up(0, 0, false, "second")}}),
        )
        .await
        .assert_ok();
    assert_eq!(by_room["count"], 2);
    // A worse copy of s1 is kept out (same etag); a better one replaces it.
    let worse = server
        .put(
            &format!("{room_path}/s1?version=1"),
            &alice,
            backed_up(7, 0, false, "worse"),
        )
        .await
        .assert_ok();
    assert_eq!(worse["etag"], by_room["etag"]);
    let better = server
        .put(
            &format!("{room_path}/s1?version=1"),
            &alice,
            backed_up(5, 1, true, "verified"),
        )
        .await
        .assert_ok();
    assert_ne!(better["etag"], by_room["etag"]);
    assert_eq!(better["count"], 2);
    // Reads in every form.
    let everything = server
        .get(&format!("{keys_path}?version=1"), &alice)
        .await
        .assert_ok();
    assert_eq!(
        everything["rooms"][room]["sessions"]["s1"],
        backed_up(5, 1, true, "verified")
    );
    assert_eq!(
        everything["rooms"][room]["sessions"]["s2"],
        backed_up(0, 0, false, "second")
    );
    let in_room = server
        .get(&format!("{room_path}?version=1"), &alice)
        .await
        .assert_ok();
    assert_eq!(in_room["sessions"].as_object().unwrap().len(), 2);
    let session = server
        .get(&format!("{room_path}/s2?version=1"), &alice)
        .await
        .assert_ok();
    assert_eq!(session, backed_up(0, 0, false, "second"));
    server
        .get(&format!("{room_path}/nothing?version=1"), &alice)
        .await
        .assert_error(404, "M_NOT_FOUND");
    let other_room = format!("{keys_path}/{}", common::encode("!other:test.example"));
    assert_eq!(
        server
            .get(&format!("{other_room}?version=1"), &alice)
            .await
            .assert_ok(),
        json!({"sessions": {}})
    );
    // Bad keys: nothing of the request is stored.
    server
        .put(
            &format!("{keys_path}?version=1"),
            &alice,
            json!({"rooms": {room: {"sessions": {
                "s3": backed_up(0, 0, false, "fine"),
                "s4": {"first_message_index": -1, "forwarded_count": 0, "is_verified": false, "session_data": {}},
            }}}}),
        )
        .await
        .assert_error(400, "M_BAD_JSON");
    server
        .put(
            &format!("{room_path}/s5?version=1"),
            &alice,
            json!({"first_message_index": 0, "forwarded_count": 0, "is_verified": false, "session_data": "text"}),
        )
        .await
        .assert_error(400, "M_BAD_JSON");
    let info = server.get(version_path, &alice).await.assert_ok();
    assert_eq!(info["count"], 2);
    assert_eq!(info["etag"], better["etag"]);

    // Updating the version: same algorithm, the version in the body as in the path.
    server
        .put(
            &format!("{version_path}/1"),
            &alice,
            json!({"algorithm": "other", "auth_data": {}}),
        )
        .await
        .assert_error(400, "M_INVALID_PARAM");
    server
        .put(
            &format!("{version_path}/1"),
            &alice,
            json!({"algorithm": algorithm, "auth_data": {}, "version": "2"}),
        )
        .await
        .assert_error(400, "M_INVALID_PARAM");
    server
        .put(
            &format!("{version_path}/1"),
            &alice,
            json!({"algorithm": algorithm, "auth_data": {"public_key": "def"}, "version": "1"}),
        )
        .await
        .assert_ok();
    server
        .put(
            &format!("{version_path}/7"),
            &alice,
            json!({"algorithm": algorithm, "auth_data": {}}),
        )
        .await
        .assert_error(404, "M_NOT_FOUND");
    assert_eq!(
        server
            .get(&format!("{version_path}/1"), &alice)
            .await
            .assert_ok()["auth_data"]["public_key"],
        "def"
    );

    // A new version is current: uploads to the old one are refused with the current one named.
    let created = server
        .post(
            version_path,
            &alice,
            json!({"algorithm": algorithm, "auth_data": {}}),
        )
        .await
        .assert_ok();
    assert_eq!(created["version"], "2");
    let refused = server
        .put(
            &format!("{room_path}/s9?version=1"),
            &alice,
            backed_up(0, 0, false, "late"),
        )
        .await;
    refused.assert_error(403, "M_WRONG_ROOM_KEYS_VERSION");
    assert_eq!(refused.json()["current_version"], "2");
    server
        .put(
            &format!("{room_path}/s9?version=9"),
            &alice,
            backed_up(0, 0, false, "nowhere"),
        )
        .await
        .assert_error(404, "M_NOT_FOUND");
    server
        .put(
            &format!("{room_path}/s9?version=abc"),
            &alice,
            backed_up(0, 0, false, "nowhere"),
        )
        .await
        .assert_error(404, "M_NOT_FOUND");
    // The old version is still readable.
    assert_eq!(
        server
            .get(&format!("{version_path}/1"), &alice)
            .await
            .assert_ok()["count"],
        2
    );

    // Deletions: a session, a room, all; then the version.
    let deleted = server
        .call(
            Method::DELETE,
            &format!("{room_path}/s1?version=1"),
            Some(&alice),
            None,
        )
        .await
        .assert_ok();
    assert_eq!(deleted["count"], 1);
    let deleted = server
        .call(
            Method::DELETE,
            &format!("{room_path}?version=1"),
            Some(&alice),
            None,
        )
        .await
        .assert_ok();
    assert_eq!(deleted["count"], 0);
    let deleted = server
        .call(
            Method::DELETE,
            &format!("{keys_path}?version=1"),
            Some(&alice),
            None,
        )
        .await
        .assert_ok();
    assert_eq!(deleted["count"], 0);
    server
        .call(
            Method::DELETE,
            &format!("{version_path}/2"),
            Some(&alice),
            None,
        )
        .await
        .assert_ok();
    server
        .call(
            Method::DELETE,
            &format!("{version_path}/2"),
            Some(&alice),
            None,
        )
        .await
        .assert_error(404, "M_NOT_FOUND");
    // With version 2 gone, version 1 is current again; 2 is never given again.
    assert_eq!(
        server.get(version_path, &alice).await.assert_ok()["version"],
        "1"
    );
    let created = server
        .post(
            version_path,
            &alice,
            json!({"algorithm": algorithm, "auth_data": {}}),
        )
        .await
        .assert_ok();
    assert_eq!(created["version"], "3");
}

/// What `bob` learns of device-list changes since `since`: `(changed, left, next token)`.
async fn device_lists(
    server: &TestServer,
    bob: &str,
    since: &str,
) -> (Vec<String>, Vec<String>, String) {
    let sync = server.sync(bob, &format!("since={since}&timeout=0")).await;
    let list = |key: &str| {
        let mut users: Vec<String> = sync["device_lists"][key]
            .as_array()
            .map(|users| {
                users
                    .iter()
                    .map(|u| u.as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default();
        users.sort();
        users
    };
    (
        list("changed"),
        list("left"),
        sync["next_batch"].as_str().unwrap().to_owned(),
    )
}

/// Device-list changes reach the users who share a room: a new device with its keys, a
/// deleted device, new cross-signing keys, a user who joins or leaves a shared encrypted
/// room; a waiting long-poll answers at once; `/keys/changes` says the same; users sharing no
/// room hear nothing.
#[tokio::test]
async fn device_changes_reach_those_who_share_a_room() {
    let server = TestServer::new().await;
    let (alice_id, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let (carol_id, carol) = server.register("carol").await;
    let (_, dave) = server.register("dave").await;
    let room = server
        .create_room(
            &alice,
            json!({"preset": "public_chat", "invite": [bob_id],
                   "initial_state": [{"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}]}),
        )
        .await;
    server.join(&bob, &room).await;
    let start = server.sync(&bob, "").await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();

    // A new device of Alice's uploads its keys while Bob waits: his sync answers at once.
    let phone = server.login("alice", "secret-pw").await;
    let phone_token = phone["access_token"].as_str().unwrap().to_owned();
    let phone_device = phone["device_id"].as_str().unwrap().to_owned();
    let wait_query = format!("since={start}&timeout=30000");
    let waiting = server.sync(&bob, &wait_query);
    let upload = async {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        server
            .post(
                "/_matrix/client/v3/keys/upload",
                &phone_token,
                json!({"device_keys": device_keys(&alice_id, &phone_device)}),
            )
            .await
            .assert_ok();
    };
    let (sync, ()) = tokio::join!(waiting, upload);
    assert!(
        sync["device_lists"]["changed"]
            .as_array()
            .is_some_and(|users| users.contains(&json!(alice_id))),
        "{sync}"
    );
    let mut since = sync["next_batch"].as_str().unwrap().to_owned();

    // The device is deleted (with the password).
    let delete = format!("/_matrix/client/v3/devices/{phone_device}");
    let asked = server
        .call(Method::DELETE, &delete, Some(&alice), Some(json!({})))
        .await;
    assert_eq!(asked.status, 401);
    let session = asked.json()["session"].as_str().unwrap().to_owned();
    server
        .call(
            Method::DELETE,
            &delete,
            Some(&alice),
            Some(json!({"auth": {"type": "m.login.password", "session": session,
                                 "identifier": {"type": "m.id.user", "user": "alice"}, "password": "secret-pw"}})),
        )
        .await
        .assert_ok();
    let (changed, left, next) = device_lists(&server, &bob, &since).await;
    assert_eq!((changed, left), (vec![alice_id.clone()], vec![]));
    since = next;

    // New cross-signing keys.
    let (_, master_public) = cross_signing_pair();
    server
        .post(
            "/_matrix/client/v3/keys/device_signing/upload",
            &alice,
            json!({"master_key": {"user_id": alice_id, "usage": ["master"],
                                  "keys": {format!("ed25519:{master_public}"): master_public}}}),
        )
        .await
        .assert_ok();
    let (changed, _, next) = device_lists(&server, &bob, &since).await;
    assert_eq!(changed, [alice_id.as_str()]);
    since = next;

    // Dave shares no room with Bob: his new device is not Bob's concern.
    server
        .post(
            "/_matrix/client/v3/keys/upload",
            &dave,
            json!({"device_keys": device_keys("@dave:test.example", "DAVE")}),
        )
        .await;
    let (changed, left, next) = device_lists(&server, &bob, &since).await;
    assert_eq!((changed, left), (vec![], vec![]));
    since = next;

    // Carol joins the encrypted room: Bob is to fetch her keys; she leaves: he may forget them.
    let before_carol = since.clone();
    server.join(&carol, &room).await;
    let (changed, _, next) = device_lists(&server, &bob, &since).await;
    assert_eq!(changed, [carol_id.as_str()]);
    since = next;
    server
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/leave"),
            &carol,
            json!({}),
        )
        .await
        .assert_ok();
    let (_, left, next) = device_lists(&server, &bob, &since).await;
    assert_eq!(left, [carol_id.as_str()]);

    // /keys/changes tells the same over the whole stretch.
    let changes = server
        .get(
            &format!("/_matrix/client/v3/keys/changes?from={start}&to={next}"),
            &bob,
        )
        .await
        .assert_ok();
    let mut changed: Vec<String> = serde_json::from_value(changes["changed"].clone()).unwrap();
    changed.sort();
    assert!(changed.contains(&alice_id), "{changes}");
    assert!(
        !changed.contains(&"@dave:test.example".to_owned()),
        "{changes}"
    );
    let carol_changes = server
        .get(
            &format!("/_matrix/client/v3/keys/changes?from={before_carol}&to={next}"),
            &bob,
        )
        .await
        .assert_ok();
    assert_eq!(carol_changes["left"], json!([carol_id]), "{carol_changes}");
}

/// `POST /delete_devices`: several devices at once after the password, a session bound to the
/// devices it was opened for, unknown devices passed over; a new login alone is a device-list
/// change for those who share a room.
#[tokio::test]
async fn devices_deleted_together() {
    let server = TestServer::new().await;
    let (alice_id, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let room = server
        .create_room(&alice, json!({"invite": [bob_id]}))
        .await;
    server.join(&bob, &room).await;
    let since = server.sync(&bob, "").await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let phone = server.login("alice", "secret-pw").await["device_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let tablet = server.login("alice", "secret-pw").await["device_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (changed, _, _) = device_lists(&server, &bob, &since).await;
    assert_eq!(changed, [alice_id.as_str()]);

    let path = "/_matrix/client/v3/delete_devices";
    let asked = server.post(path, &alice, json!({"devices": [phone]})).await;
    assert_eq!(asked.status, 401);
    let phone_only = asked.json()["session"].as_str().unwrap().to_owned();
    let password = |session: &str| {
        json!({"type": "m.login.password", "session": session,
               "identifier": {"type": "m.id.user", "user": "alice"}, "password": "secret-pw"})
    };
    // A session opened for the phone does not delete the tablet too.
    server
        .post(
            path,
            &alice,
            json!({"devices": [phone, tablet], "auth": password(&phone_only)}),
        )
        .await
        .assert_error(403, "M_FORBIDDEN");
    let asked = server
        .post(
            path,
            &alice,
            json!({"devices": [phone, tablet, "NOSUCHDEVICE"]}),
        )
        .await;
    assert_eq!(asked.status, 401);
    let session = asked.json()["session"].as_str().unwrap().to_owned();
    server
        .post(
            path,
            &alice,
            json!({"devices": [phone, tablet, "NOSUCHDEVICE"], "auth": password(&session)}),
        )
        .await
        .assert_ok();
    let devices = server
        .get("/_matrix/client/v3/devices", &alice)
        .await
        .assert_ok();
    let left: Vec<&str> = devices["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|device| device["device_id"].as_str().unwrap())
        .collect();
    assert_eq!(left.len(), 1, "{devices}");
    assert!(!left.contains(&phone.as_str()) && !left.contains(&tablet.as_str()));
    server
        .post(path, &alice, json!({"devices": "all"}))
        .await
        .assert_error(400, "M_BAD_JSON");
}
