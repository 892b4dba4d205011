//! Device lists across two Causeway servers on loopback: a.test keeps b.test's users' device
//! lists once asked, follows the chain of b.test's `m.device_list_update` EDUs (devices added,
//! deleted, the last one too), asks again when the chain breaks or when the user starts
//! sharing a room again, and answers its clients' `keys/query` from what it keeps.

#![allow(clippy::unwrap_used)]

mod common;

use common::federation::*;
use common::{Response, TestServer};
use http::Method;
use serde_json::{Value, json};

/// Logs bob in on a new device with keys: `(token, device id)`.
async fn new_device(b: &TestServer, bob_id: &str) -> (String, String) {
    let login = b.login("bob", "secret-pw").await;
    let token = login["access_token"].as_str().unwrap().to_owned();
    let device = login["device_id"].as_str().unwrap().to_owned();
    b.post(
        "/_matrix/client/v3/keys/upload",
        &token,
        json!({"device_keys": device_keys(bob_id, &device)}),
    )
    .await
    .assert_ok();
    (token, device)
}

/// Asks a.test for bob's keys until it keeps his list: a list fetched while an update of it
/// comes in is not kept (it may be older than the update), and bob's login and his keys are
/// two updates.
async fn asked_until_kept(a: &TestServer, alice: &str, bob_id: &str) -> Value {
    let mut answer = Value::Null;
    for _ in 0..100 {
        answer = query(a, alice, bob_id).await;
        if kept_devices(a, bob_id).await.is_some() {
            return answer;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("a.test never kept bob's list: {answer}");
}

async fn query(a: &TestServer, alice: &str, bob_id: &str) -> Value {
    a.post(
        "/_matrix/client/v3/keys/query",
        alice,
        json!({"device_keys": {bob_id: []}}),
    )
    .await
    .assert_ok()
}

/// The device ids a.test keeps for bob, if it keeps his list.
async fn kept_devices(a: &TestServer, bob_id: &str) -> Option<(i64, Vec<String>)> {
    let list = a.services.store.remote_device_list(bob_id).await.unwrap()?;
    let devices: serde_json::Map<String, Value> = serde_json::from_str(&list.devices).unwrap();
    Some((list.stream_id, devices.keys().cloned().collect()))
}

async fn delete_device(b: &TestServer, token: &str, bob_id: &str, device: &str) -> Response {
    b.call(
        Method::DELETE,
        &format!("/_matrix/client/v3/devices/{device}"),
        Some(token),
        Some(
            json!({"auth": {"type": "m.login.password", "password": "secret-pw",
            "identifier": {"type": "m.id.user", "user": bob_id}}}),
        ),
    )
    .await
}

#[tokio::test]
async fn a_kept_device_list_follows_the_other_servers_changes() {
    let Shared {
        a,
        b,
        alice,
        bob_id,
        ..
    } = shared_room("12").await;
    let (_, first) = new_device(&b, &bob_id).await;
    assert_eq!(kept_devices(&a, &bob_id).await, None);
    assert!(
        a.services
            .store
            .shares_room_with_local_user(&bob_id)
            .await
            .unwrap()
    );

    // Asked: a.test asks b.test for bob's whole list and keeps it, with b.test's stream id.
    let answer = asked_until_kept(&a, &alice, &bob_id).await;
    assert!(
        answer["device_keys"][&bob_id][&first].is_object(),
        "{answer}"
    );
    let latest = b
        .services
        .store
        .device_list_stream_id(&bob_id)
        .await
        .unwrap();
    // (An update still on its way when the list was fetched follows it.)
    eventually("a.test at b.test's latest stream id for bob", || async {
        kept_devices(&a, &bob_id)
            .await
            .is_some_and(|(stream_id, devices)| stream_id == latest && devices.contains(&first))
    })
    .await;

    // A new device: the EDU follows the chain and is applied to what is kept.
    let (second_token, second) = new_device(&b, &bob_id).await;
    eventually("bob's second device kept on a.test", || async {
        kept_devices(&a, &bob_id)
            .await
            .is_some_and(|(_, devices)| devices.contains(&second))
    })
    .await;
    let answer = query(&a, &alice, &bob_id).await;
    assert_eq!(
        answer["device_keys"][&bob_id][&second]["keys"][format!("ed25519:{second}")],
        format!("ed-of-{second}")
    );

    // A deleted device is gone from what is kept and from the answers.
    delete_device(&b, &second_token, &bob_id, &second)
        .await
        .assert_ok();
    eventually("bob's second device gone on a.test", || async {
        kept_devices(&a, &bob_id)
            .await
            .is_some_and(|(_, devices)| !devices.contains(&second) && devices.contains(&first))
    })
    .await;
    let answer = query(&a, &alice, &bob_id).await;
    assert!(
        answer["device_keys"][&bob_id][&second].is_null(),
        "{answer}"
    );
    assert!(
        answer["device_keys"][&bob_id][&first].is_object(),
        "{answer}"
    );

    // Every device deleted, the last one too: a.test is told.
    let devices: Vec<String> = b
        .services
        .store
        .devices(&bob_id)
        .await
        .unwrap()
        .into_iter()
        .map(|device| device.device_id)
        .collect();
    let (last_token, _) = {
        let login = b.login("bob", "secret-pw").await;
        let token = login["access_token"].as_str().unwrap().to_owned();
        (token, login["device_id"].as_str().unwrap().to_owned())
    };
    for device in &devices {
        delete_device(&b, &last_token, &bob_id, device)
            .await
            .assert_ok();
    }
    b.post("/_matrix/client/v3/logout", &last_token, json!({}))
        .await
        .assert_ok();
    assert!(b.services.store.devices(&bob_id).await.unwrap().is_empty());
    eventually("bob without devices on a.test", || async {
        kept_devices(&a, &bob_id)
            .await
            .is_some_and(|(_, devices)| devices.is_empty())
    })
    .await;
    let answer = query(&a, &alice, &bob_id).await;
    assert_eq!(answer["device_keys"][&bob_id], json!({}), "{answer}");
}

#[tokio::test]
async fn a_broken_chain_or_a_new_shared_room_makes_the_list_asked_again() {
    let Shared {
        a,
        b,
        alice,
        bob_id,
        bob,
        room,
        ..
    } = shared_room("12").await;
    let (_, first) = new_device(&b, &bob_id).await;
    asked_until_kept(&a, &alice, &bob_id).await;
    let (stream_id, _) = kept_devices(&a, &bob_id).await.unwrap();

    // An update already known (its stream id not past what is kept) changes nothing.
    edus_from_b(
        &b,
        "old",
        json!([{"edu_type": "m.device_list_update", "content": {
            "user_id": bob_id, "device_id": "OLD", "stream_id": stream_id,
            "prev_id": [stream_id - 1], "deleted": false,
            "keys": device_keys(&bob_id, "OLD")}}]),
    )
    .await;
    let (_, devices) = kept_devices(&a, &bob_id).await.unwrap();
    assert!(!devices.contains(&"OLD".to_owned()), "{devices:?}");

    // Keys that are not of the device named: refused, nothing kept changes.
    edus_from_b(
        &b,
        "mismatch",
        json!([{"edu_type": "m.device_list_update", "content": {
            "user_id": bob_id, "device_id": "MISMATCH", "stream_id": stream_id + 1,
            "prev_id": [stream_id], "deleted": false,
            "keys": device_keys(&bob_id, "OTHER")}}]),
    )
    .await;
    assert_eq!(
        kept_devices(&a, &bob_id).await.map(|(id, _)| id),
        Some(stream_id)
    );

    // An update after one a.test never had: what is kept is dropped, and the next question
    // asks b.test again (which knows nothing of the made-up device).
    edus_from_b(
        &b,
        "gap",
        json!([{"edu_type": "m.device_list_update", "content": {
            "user_id": bob_id, "device_id": "GHOST", "stream_id": stream_id + 10,
            "prev_id": [stream_id + 5], "deleted": false,
            "keys": device_keys(&bob_id, "GHOST")}}]),
    )
    .await;
    assert_eq!(kept_devices(&a, &bob_id).await, None);
    let answer = query(&a, &alice, &bob_id).await;
    assert!(
        answer["device_keys"][&bob_id]["GHOST"].is_null(),
        "{answer}"
    );
    assert!(
        answer["device_keys"][&bob_id][&first].is_object(),
        "{answer}"
    );
    assert!(kept_devices(&a, &bob_id).await.is_some());

    // A cross-signing key update is applied to what is kept.
    let master = json!({"user_id": bob_id, "usage": ["master"],
        "keys": {"ed25519:base64master": "base64master"}});
    edus_from_b(
        &b,
        "signing",
        json!([{"edu_type": "m.signing_key_update", "content": {
            "user_id": bob_id, "master_key": master}}]),
    )
    .await;
    let answer = query(&a, &alice, &bob_id).await;
    assert_eq!(answer["master_keys"][&bob_id], master, "{answer}");

    // Bob leaves: a.test is no longer told of his changes, and asks b.test each time.
    b.post(
        &format!("/_matrix/client/v3/rooms/{room}/leave"),
        &bob,
        json!({}),
    )
    .await
    .assert_ok();
    eventually("bob's leave on a.test", || async {
        membership(&a, &room, &bob_id).await.as_deref() == Some("leave")
    })
    .await;
    let answer = query(&a, &alice, &bob_id).await;
    assert!(
        answer["device_keys"][&bob_id][&first].is_object(),
        "{answer}"
    );
    // He joins again: what was kept may have missed changes, and is dropped.
    join_via_a(&b, &bob, &room).await.assert_ok();
    eventually("bob's join on a.test", || async {
        membership(&a, &room, &bob_id).await.as_deref() == Some("join")
    })
    .await;
    assert_eq!(kept_devices(&a, &bob_id).await, None);
    let answer = query(&a, &alice, &bob_id).await;
    assert!(
        answer["device_keys"][&bob_id][&first].is_object(),
        "{answer}"
    );
    assert!(kept_devices(&a, &bob_id).await.is_some());
}
