//! Notifications: pushers are set, listed and removed as the specification says; events the
//! push rules say notify reach a push gateway (a recording one on the loopback, speaking the
//! Push Gateway API) and `/notifications`; a gateway that fails is retried, one that rejects a
//! pushkey removes its pusher.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::routing::post;
use common::{TestServer, encode};
use http::Method;
use serde_json::{Value, json};

/// A push gateway that records what it is sent and answers as told.
#[derive(Clone, Default)]
struct Gateway {
    received: Arc<Mutex<Vec<Value>>>,
    /// Statuses to answer with before answering 200, in order.
    failures: Arc<Mutex<Vec<u16>>>,
    /// Pushkeys to reject.
    rejected: Arc<Mutex<Vec<String>>>,
}

impl Gateway {
    async fn start() -> (Gateway, String) {
        let gateway = Gateway::default();
        let app = axum::Router::new()
            .route("/_matrix/push/v1/notify", post(notify))
            .with_state(gateway.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (gateway, format!("http://{address}/_matrix/push/v1/notify"))
    }

    /// Waits until at least `count` notifications arrived; returns them all.
    async fn wait_for(&self, count: usize) -> Vec<Value> {
        for _ in 0..400 {
            let received = self.received.lock().unwrap().clone();
            if received.len() >= count {
                return received;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "{count} notifications expected, got {:?}",
            self.received.lock().unwrap()
        );
    }
}

async fn notify(
    State(gateway): State<Gateway>,
    Json(body): Json<Value>,
) -> (http::StatusCode, Json<Value>) {
    let failure = {
        let mut failures = gateway.failures.lock().unwrap();
        (!failures.is_empty()).then(|| failures.remove(0))
    };
    if let Some(status) = failure {
        return (http::StatusCode::from_u16(status).unwrap(), Json(json!({})));
    }
    gateway.received.lock().unwrap().push(body.clone());
    let rejected: Vec<String> = gateway.rejected.lock().unwrap().clone();
    let rejected: Vec<&String> = body["notification"]["devices"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|device| rejected.iter().find(|key| device["pushkey"] == **key))
        .collect();
    (http::StatusCode::OK, Json(json!({ "rejected": rejected })))
}

fn pusher(pushkey: &str, url: &str) -> Value {
    json!({
        "pushkey": pushkey,
        "kind": "http",
        "app_id": "org.example.app",
        "app_display_name": "Example",
        "device_display_name": "Alice's phone",
        "lang": "en",
        "data": {"url": url, "extra": "kept"},
    })
}

async fn server_with_local_gateways() -> TestServer {
    TestServer::with_config(|config| {
        config.push.allowed_gateway_addresses = vec!["127.0.0.1".parse().unwrap()];
    })
    .await
}

#[tokio::test]
async fn pushers_are_checked() {
    let server = TestServer::new().await;
    let (_, alice) = server.register("alice").await;
    let set = "/_matrix/client/v3/pushers/set";
    let url = "https://push.example.org/_matrix/push/v1/notify";
    for field in [
        "pushkey",
        "app_id",
        "kind",
        "app_display_name",
        "lang",
        "data",
    ] {
        let mut body = pusher("key", url);
        body.as_object_mut().unwrap().remove(field);
        server
            .post(set, &alice, body)
            .await
            .assert_error(400, "M_MISSING_PARAM");
    }
    let mut body = pusher("key", url);
    body["data"] = json!({"format": "event_id_only"});
    server
        .post(set, &alice, body)
        .await
        .assert_error(400, "M_MISSING_PARAM");
    for bad_url in [
        "https://push.example.org/notify",
        "gopher://push.example.org/_matrix/push/v1/notify",
        // Not public, and not allowed by the configuration.
        "http://127.0.0.1:9/_matrix/push/v1/notify",
        "http://[::1]:9/_matrix/push/v1/notify",
        "http://10.0.0.1/_matrix/push/v1/notify",
    ] {
        server
            .post(set, &alice, pusher("key", bad_url))
            .await
            .assert_error(400, "M_INVALID_PARAM");
    }
    for (field, value, errcode) in [
        ("kind", json!("email"), "M_INVALID_PARAM"),
        ("app_id", json!("a".repeat(65)), "M_INVALID_PARAM"),
        ("pushkey", json!("k".repeat(513)), "M_INVALID_PARAM"),
        ("data", json!("text"), "M_BAD_JSON"),
        ("append", json!("yes"), "M_BAD_JSON"),
    ] {
        let mut body = pusher("key", url);
        body[field] = value;
        server
            .post(set, &alice, body)
            .await
            .assert_error(400, errcode);
    }
    server
        .raw(
            Method::POST,
            set,
            Some(&alice),
            Some("application/json"),
            b"{not json".to_vec(),
        )
        .await
        .assert_error(400, "M_NOT_JSON");
    server
        .call(Method::GET, "/_matrix/client/v3/pushers", None, None)
        .await
        .assert_error(401, "M_MISSING_TOKEN");
    // Nothing of the above was kept.
    assert_eq!(
        server
            .get("/_matrix/client/v3/pushers", &alice)
            .await
            .assert_ok(),
        json!({"pushers": []})
    );
    server
        .get("/_matrix/client/v3/notifications?only=everything", &alice)
        .await
        .assert_error(400, "M_INVALID_PARAM");
    server
        .get("/_matrix/client/v3/notifications?from=abc", &alice)
        .await
        .assert_error(400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn pushers_are_set_replaced_and_removed() {
    let server = TestServer::new().await;
    let (_, alice) = server.register("alice").await;
    let (_, bob) = server.register("bob").await;
    let set = "/_matrix/client/v3/pushers/set";
    let url = "https://push.example.org/_matrix/push/v1/notify";
    server
        .post(set, &alice, pusher("k1", url))
        .await
        .assert_ok();
    let mut second = pusher("k2", url);
    second["profile_tag"] = json!("tag");
    second["data"]["format"] = json!("event_id_only");
    server.post(set, &alice, second).await.assert_ok();
    let listed = server
        .get("/_matrix/client/v3/pushers", &alice)
        .await
        .assert_ok();
    let pushers = listed["pushers"].as_array().unwrap();
    assert_eq!(pushers.len(), 2, "{listed}");
    assert_eq!(pushers[0]["pushkey"], "k1");
    assert_eq!(pushers[0]["data"]["url"], url);
    assert_eq!(pushers[0]["data"]["extra"], "kept");
    assert_eq!(pushers[0]["device_display_name"], "Alice's phone");
    assert_eq!(pushers[1]["profile_tag"], "tag");
    assert_eq!(pushers[1]["data"]["format"], "event_id_only");
    // Setting the same app id and pushkey replaces.
    let mut renamed = pusher("k1", url);
    renamed["device_display_name"] = json!("New phone");
    server.post(set, &alice, renamed).await.assert_ok();
    let listed = server
        .get("/_matrix/client/v3/pushers", &alice)
        .await
        .assert_ok();
    assert_eq!(listed["pushers"].as_array().unwrap().len(), 2);
    assert_eq!(listed["pushers"][0]["device_display_name"], "New phone");
    // Bob takes k2 (the phone changed hands): Alice's goes, unless appended.
    server.post(set, &bob, pusher("k2", url)).await.assert_ok();
    let listed = server
        .get("/_matrix/client/v3/pushers", &alice)
        .await
        .assert_ok();
    assert_eq!(listed["pushers"].as_array().unwrap().len(), 1);
    let mut appended = pusher("k1", url);
    appended["append"] = json!(true);
    server.post(set, &bob, appended).await.assert_ok();
    assert_eq!(
        server
            .get("/_matrix/client/v3/pushers", &alice)
            .await
            .assert_ok()["pushers"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // kind null removes.
    let mut removal = pusher("k1", url);
    removal["kind"] = Value::Null;
    server.post(set, &alice, removal).await.assert_ok();
    assert_eq!(
        server
            .get("/_matrix/client/v3/pushers", &alice)
            .await
            .assert_ok(),
        json!({"pushers": []})
    );
    // A password change removes the pushers of Bob's other devices, not the current one's.
    let login = server.login("bob", "secret-pw").await;
    let bob_phone = login["access_token"].as_str().unwrap().to_owned();
    server
        .post(set, &bob_phone, pusher("k3", url))
        .await
        .assert_ok();
    assert_eq!(
        server
            .get("/_matrix/client/v3/pushers", &bob)
            .await
            .assert_ok()["pushers"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    server
        .post(
            "/_matrix/client/v3/account/password",
            &bob_phone,
            json!({"new_password": "another-pw", "logout_devices": false,
                   "auth": {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "bob"}, "password": "secret-pw"}}),
        )
        .await
        .assert_ok();
    let left = server
        .get("/_matrix/client/v3/pushers", &bob_phone)
        .await
        .assert_ok();
    assert_eq!(
        left["pushers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|pusher| pusher["pushkey"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["k3"]
    );
    // Logging out removes the device's pushers.
    server
        .post("/_matrix/client/v3/logout", &bob_phone, json!({}))
        .await
        .assert_ok();
    let pushers = server
        .services
        .store
        .pushers(login["user_id"].as_str().unwrap())
        .await
        .unwrap();
    assert!(pushers.is_empty(), "{pushers:?}");
}

#[tokio::test]
async fn notifications_reach_the_gateway_and_the_list() {
    let server = server_with_local_gateways().await;
    let (gateway, url) = Gateway::start().await;
    let (alice_id, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    server
        .put(
            &format!("/_matrix/client/v3/profile/{}/displayname", encode(&bob_id)),
            &bob,
            json!({"displayname": "Bob B"}),
        )
        .await
        .assert_ok();
    let room = server
        .create_room(
            &bob,
            json!({"name": "Plans", "invite": [alice_id.clone()], "is_direct": true}),
        )
        .await;
    let set = "/_matrix/client/v3/pushers/set";
    server
        .post(set, &alice, pusher("alice-key", &url))
        .await
        .assert_ok();
    let mut ids_only = pusher("ids-key", &url);
    ids_only["data"]["format"] = json!("event_id_only");
    ids_only["app_id"] = json!("org.example.other");
    server.post(set, &alice, ids_only).await.assert_ok();
    server.join(&alice, &room).await;
    // Alice's own message notifies nobody (Bob has no pusher, Alice sent it).
    server
        .send_text(&alice, &room, "a1", "hello")
        .await
        .assert_ok();
    let message = server
        .send_text(&bob, &room, "b1", "are you there?")
        .await
        .assert_ok()["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let received = gateway.wait_for(2).await;
    let full = received
        .iter()
        .map(|body| &body["notification"])
        .find(|notification| notification["devices"][0]["pushkey"] == "alice-key")
        .unwrap();
    assert_eq!(full["event_id"], message);
    assert_eq!(full["room_id"], room);
    assert_eq!(full["type"], "m.room.message");
    assert_eq!(full["sender"], bob_id);
    assert_eq!(full["sender_display_name"], "Bob B");
    assert_eq!(full["room_name"], "Plans");
    assert_eq!(full["content"]["body"], "are you there?");
    assert_eq!(full["counts"]["unread"], 1);
    assert_eq!(full["prio"], "high");
    let device = &full["devices"][0];
    assert_eq!(device["app_id"], "org.example.app");
    // The URL stays on the server; the rest of `data` goes to the gateway.
    assert_eq!(device["data"], json!({"extra": "kept"}));
    // A one-to-one room rings.
    assert_eq!(device["tweaks"]["sound"], "default");
    let brief = received
        .iter()
        .map(|body| &body["notification"])
        .find(|notification| notification["devices"][0]["pushkey"] == "ids-key")
        .unwrap();
    assert_eq!(brief["event_id"], message);
    assert_eq!(brief["counts"]["unread"], 1);
    for hidden in ["content", "sender", "type", "sender_display_name"] {
        assert!(brief.get(hidden).is_none(), "{hidden} in {brief}");
    }
    // The invite notified too, before Alice had a pusher: it is listed, not pushed.
    assert_eq!(received.len(), 2, "{received:?}");

    // A mention highlights.
    let mention = server
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/b2"),
            &bob,
            json!({"msgtype": "m.text", "body": "alice, look", "m.mentions": {"user_ids": [alice_id]}}),
        )
        .await
        .assert_ok()["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let received = gateway.wait_for(4).await;
    let pushed = &received[2]["notification"];
    assert_eq!(pushed["event_id"], mention);
    assert_eq!(pushed["counts"]["unread"], 1);
    assert_eq!(pushed["devices"][0]["tweaks"]["highlight"], true);

    let list = server
        .get("/_matrix/client/v3/notifications", &alice)
        .await
        .assert_ok();
    let notifications = list["notifications"].as_array().unwrap();
    let events: Vec<&str> = notifications
        .iter()
        .map(|notification| notification["event"]["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(events[..2], [mention.as_str(), message.as_str()]);
    // The invite is the third, the oldest.
    assert_eq!(notifications.len(), 3, "{list}");
    assert_eq!(notifications[2]["event"]["type"], "m.room.member");
    assert_eq!(notifications[0]["room_id"], room);
    assert_eq!(notifications[0]["read"], false);
    assert!(notifications[0]["ts"].as_i64().unwrap() > 0);
    assert!(
        notifications[0]["actions"]
            .as_array()
            .unwrap()
            .contains(&json!("notify"))
    );
    let highlights = server
        .get("/_matrix/client/v3/notifications?only=highlight", &alice)
        .await
        .assert_ok();
    assert_eq!(highlights["notifications"].as_array().unwrap().len(), 1);
    assert_eq!(highlights["notifications"][0]["event"]["event_id"], mention);
    // Paging.
    let first = server
        .get("/_matrix/client/v3/notifications?limit=2", &alice)
        .await
        .assert_ok();
    assert_eq!(first["notifications"].as_array().unwrap().len(), 2);
    let next = first["next_token"].as_str().unwrap();
    let rest = server
        .get(
            &format!("/_matrix/client/v3/notifications?limit=2&from={next}"),
            &alice,
        )
        .await
        .assert_ok();
    assert_eq!(rest["notifications"].as_array().unwrap().len(), 1);
    assert_eq!(rest["notifications"][0]["event"]["type"], "m.room.member");
    assert!(rest.get("next_token").is_none());
    // Read up to the message: it and what came before are read, the mention is not.
    server
        .post(
            &format!(
                "/_matrix/client/v3/rooms/{room}/receipt/m.read/{}",
                encode(&message)
            ),
            &alice,
            json!({}),
        )
        .await
        .assert_ok();
    let list = server
        .get("/_matrix/client/v3/notifications", &alice)
        .await
        .assert_ok();
    let read: Vec<bool> = list["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|notification| notification["read"].as_bool().unwrap())
        .collect();
    assert_eq!(read, [false, true, true]);

    // A gateway that fails for a while gets the notification when it is back.
    gateway.failures.lock().unwrap().extend([503, 502]);
    let late = server
        .send_text(&bob, &room, "b3", "later")
        .await
        .assert_ok()["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let received = gateway.wait_for(6).await;
    let delivered: Vec<&Value> = received[4..]
        .iter()
        .map(|body| &body["notification"]["event_id"])
        .collect();
    assert_eq!(delivered, [&json!(late), &json!(late)]);

    // A gateway that rejects a pushkey: that pusher is removed, the other stays.
    gateway
        .rejected
        .lock()
        .unwrap()
        .push("alice-key".to_owned());
    server
        .send_text(&bob, &room, "b4", "still there?")
        .await
        .assert_ok();
    gateway.wait_for(8).await;
    let mut pushers = Vec::new();
    for _ in 0..200 {
        pushers = server
            .get("/_matrix/client/v3/pushers", &alice)
            .await
            .assert_ok()["pushers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|pusher| pusher["pushkey"].as_str().unwrap().to_owned())
            .collect();
        if pushers.len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(pushers, ["ids-key"]);
}

#[tokio::test]
async fn notifications_of_a_user_without_pushers() {
    let server = TestServer::new().await;
    let (carol_id, carol) = server.register("carol").await;
    let (_, dave) = server.register("dave").await;
    let room = server
        .create_room(&dave, json!({"preset": "public_chat"}))
        .await;
    server.join(&carol, &room).await;
    for i in 0..3 {
        server
            .send_text(&dave, &room, &format!("m{i}"), &format!("chat {i}"))
            .await
            .assert_ok();
    }
    let mention = server
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/m3"),
            &dave,
            json!({
                "msgtype": "m.text",
                "body": format!("hello {carol_id}"),
                "m.mentions": {"user_ids": [carol_id.clone()]},
            }),
        )
        .await
        .assert_ok()["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Carol's own messages are never her notifications.
    server
        .send_text(&carol, &room, "c1", "mine")
        .await
        .assert_ok();
    // Nothing was queued for a pusher she does not have, yet her list is complete.
    let queued = server
        .services
        .store
        .notifications_after(&carol_id, 0, 10)
        .await
        .unwrap();
    assert!(queued.is_empty(), "{queued:?}");
    let list = server
        .get("/_matrix/client/v3/notifications", &carol)
        .await
        .assert_ok();
    let bodies: Vec<&str> = list["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["event"]["content"]["body"].as_str().unwrap_or("(member)"))
        .collect();
    assert_eq!(
        bodies,
        [
            format!("hello {carol_id}").as_str(),
            "chat 2",
            "chat 1",
            "chat 0"
        ]
    );
    let highlights = server
        .get("/_matrix/client/v3/notifications?only=highlight", &carol)
        .await
        .assert_ok();
    assert_eq!(highlights["notifications"][0]["event"]["event_id"], mention);
    assert_eq!(highlights["notifications"].as_array().unwrap().len(), 1);
}
