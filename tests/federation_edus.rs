//! Ephemeral data across two Causeway servers on loopback: typing notifications, read
//! receipts and presence of the users of one server reach the other server's users who share
//! a room with them, and what a server says of users not its own is not taken.

#![allow(clippy::unwrap_used)]

mod common;

use common::federation::*;
use ruma::RoomId;
use serde_json::json;

#[tokio::test]
async fn typing_and_read_receipts_reach_the_other_server() {
    let Shared {
        a,
        b,
        alice_id,
        alice,
        bob_id,
        bob,
        room,
        ..
    } = shared_room("12").await;
    let room_id = RoomId::parse(&room).unwrap();

    // Bob types on b.test: a.test shows him typing, then not.
    b.put(
        &format!("/_matrix/client/v3/rooms/{room}/typing/{bob_id}"),
        &bob,
        json!({"typing": true, "timeout": 20000}),
    )
    .await
    .assert_ok();
    eventually("bob typing on a.test", || async {
        a.services
            .typing
            .users(&room_id)
            .iter()
            .any(|user| user.as_str() == bob_id)
    })
    .await;
    b.put(
        &format!("/_matrix/client/v3/rooms/{room}/typing/{bob_id}"),
        &bob,
        json!({"typing": false}),
    )
    .await
    .assert_ok();
    eventually("bob no longer typing on a.test", || async {
        a.services.typing.users(&room_id).is_empty()
    })
    .await;

    // Alice's message, read by bob: his receipt reaches a.test; a private one does not.
    let sent = a
        .send_text(&alice, &room, "t1", "read me")
        .await
        .assert_ok();
    let event_id = sent["event_id"].as_str().unwrap().to_owned();
    eventually("alice's message on b.test", || async {
        texts(&b, &bob, &room).await.contains(&"read me".to_owned())
    })
    .await;
    b.post(
        &format!("/_matrix/client/v3/rooms/{room}/receipt/m.read.private/{event_id}"),
        &bob,
        json!({}),
    )
    .await
    .assert_ok();
    b.post(
        &format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/{event_id}"),
        &bob,
        json!({}),
    )
    .await
    .assert_ok();
    eventually("bob's read receipt in alice's sync", || async {
        let sync = a.sync(&alice, "timeout=0").await;
        let ephemeral = &sync["rooms"]["join"][&room]["ephemeral"]["events"];
        ephemeral.as_array().into_iter().flatten().any(|event| {
            event["type"] == "m.receipt"
                && event["content"][&event_id]["m.read"][&bob_id].is_object()
                && event["content"][&event_id].get("m.read.private").is_none()
        })
    })
    .await;
    // A.test does not take a typing notification of its own user from b.test.
    edus_from_b(
        &b,
        "forged-typing",
        json!([{"edu_type": "m.typing", "content": {
            "room_id": room, "user_id": alice_id, "typing": true}}]),
    )
    .await;
    assert!(a.services.typing.users(&room_id).is_empty());
}

#[tokio::test]
async fn presence_reaches_the_servers_sharing_a_room() {
    let Shared {
        a,
        b,
        alice_id,
        alice,
        bob_id,
        bob,
        ..
    } = shared_room("12").await;
    // Alice's status on a.test: bob's sync on b.test shows it.
    a.put(
        &format!("/_matrix/client/v3/presence/{alice_id}/status"),
        &alice,
        json!({"presence": "unavailable", "status_msg": "at lunch"}),
    )
    .await
    .assert_ok();
    eventually("alice's presence in bob's sync", || async {
        let sync = b.sync(&bob, "timeout=0").await;
        sync["presence"]["events"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|event| {
                event["sender"] == alice_id.as_str()
                    && event["content"]["presence"] == "unavailable"
                    && event["content"]["status_msg"] == "at lunch"
            })
    })
    .await;
    let status = b
        .get(
            &format!("/_matrix/client/v3/presence/{alice_id}/status"),
            &bob,
        )
        .await
        .assert_ok();
    assert_eq!(status["presence"], "unavailable");
    assert_eq!(status["status_msg"], "at lunch");
    // Bob's syncs made him online on b.test: a.test hears it.
    eventually("bob online on a.test", || async {
        a.get(
            &format!("/_matrix/client/v3/presence/{bob_id}/status"),
            &alice,
        )
        .await
        .json()["presence"]
            == "online"
    })
    .await;

    // What b.test says of a.test's user, of a user sharing no room, or an unknown state, is
    // not taken; the transaction is still answered.
    edus_from_b(
        &b,
        "presence-forged",
        json!([
            {"edu_type": "m.presence", "content": {"push": [
                {"user_id": alice_id, "presence": "offline", "last_active_ago": 5}]}},
            {"edu_type": "m.presence", "content": {"push": [
                {"user_id": "@carol:b.test", "presence": "online", "last_active_ago": 5}]}},
            {"edu_type": "m.presence", "content": {"push": [
                {"user_id": bob_id, "presence": "dancing", "last_active_ago": 5}]}},
            {"edu_type": "m.presence", "content": {"push": "nobody"}},
        ]),
    )
    .await;
    let alice_now = a.services.store.presence(&alice_id).await.unwrap().unwrap();
    assert_eq!(alice_now.state, "unavailable");
    assert!(
        a.services
            .store
            .presence("@carol:b.test")
            .await
            .unwrap()
            .is_none()
    );
    let bob_now = a.services.store.presence(&bob_id).await.unwrap().unwrap();
    assert_eq!(bob_now.state, "online");
    // A change b.test tells of its own user is taken, with when they were last active.
    edus_from_b(
        &b,
        "presence-away",
        json!([{"edu_type": "m.presence", "content": {"push": [
            {"user_id": bob_id, "presence": "unavailable", "last_active_ago": 60000,
             "status_msg": "away"}]}}]),
    )
    .await;
    let bob_now = a.services.store.presence(&bob_id).await.unwrap().unwrap();
    assert_eq!(
        (bob_now.state.as_str(), bob_now.status_msg.as_deref()),
        ("unavailable", Some("away"))
    );
    let ago = causeway_matrix::store::now_ms() - bob_now.last_active_ts;
    assert!((60_000..120_000).contains(&ago), "{ago}");
}

#[tokio::test]
async fn a_signing_key_update_makes_local_clients_ask_again() {
    let Shared {
        a,
        b,
        alice,
        bob_id,
        ..
    } = shared_room("12").await;
    let since = a.sync(&alice, "timeout=0").await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    // What another server sends when its user's cross-signing keys change.
    edus_from_b(
        &b,
        "signing-keys",
        json!([{"edu_type": "m.signing_key_update", "content": {
            "user_id": bob_id,
            "master_key": {"user_id": bob_id, "usage": ["master"],
                "keys": {"ed25519:base64master": "base64master"}}}}]),
    )
    .await;
    let sync = a.sync(&alice, &format!("timeout=0&since={since}")).await;
    let changed = sync["device_lists"]["changed"].as_array().cloned();
    assert!(
        changed
            .unwrap_or_default()
            .iter()
            .any(|user| user == bob_id.as_str()),
        "{sync}"
    );
    // Of a user not its own: not taken.
    let since = sync["next_batch"].as_str().unwrap().to_owned();
    edus_from_b(
        &b,
        "signing-keys-forged",
        json!([{"edu_type": "m.signing_key_update", "content": {"user_id": "@alice:a.test"}}]),
    )
    .await;
    let sync = a.sync(&alice, &format!("timeout=0&since={since}")).await;
    assert!(sync["device_lists"]["changed"].is_null(), "{sync}");
}
