//! Rooms across two Causeway servers on loopback: a user of one joins a room of the other
//! (`make_join`/`send_join`), events go both ways through the queue of each server
//! (`/send`), and what is malformed, forged or not allowed is refused without harm.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use causeway_matrix::federation::client::FederationError;
use causeway_matrix::pdu::{EventDraft, build_event, canonical_content};
use common::TestServer;
use common::federation::*;
use ruma::{MilliSecondsSinceUnixEpoch, RoomId, RoomVersionId, UserId};
use serde_json::{Value, json};

#[tokio::test]
async fn a_user_of_another_server_joins_and_messages_go_both_ways() {
    let (a, b, _, _, _dir) = two_servers().await;
    let (alice_id, alice) = a.register("alice").await;
    let (bob_id, bob) = b.register("bob").await;
    let room = a
        .create_room(
            &alice,
            json!({"preset": "public_chat", "name": "Lounge", "room_version": "10"}),
        )
        .await;
    a.send_text(&alice, &room, "t0", "before bob")
        .await
        .assert_ok();

    // Bob joins through a.test; b.test had no copy of the room.
    join_via_a(&b, &bob, &room).await.assert_ok();
    assert_eq!(
        membership(&a, &room, &bob_id).await.as_deref(),
        Some("join")
    );
    assert_eq!(
        membership(&b, &room, &alice_id).await.as_deref(),
        Some("join")
    );
    // Bob's sync shows the room with its state.
    let sync = b.sync(&bob, "timeout=0").await;
    let joined = &sync["rooms"]["join"][&room];
    let state: Vec<&Value> = joined["state"]["events"]
        .as_array()
        .into_iter()
        .chain(joined["timeline"]["events"].as_array())
        .flatten()
        .collect();
    assert!(
        state
            .iter()
            .any(|event| event["type"] == "m.room.name" && event["content"]["name"] == "Lounge"),
        "{joined}"
    );

    // Bob's message reaches alice, alice's reaches bob.
    say(&b, &bob, &room, "t1", "hello from b", (&a, &alice)).await;
    say(&a, &alice, &room, "t2", "hello from a", (&b, &bob)).await;
    // In order on both sides.
    let on_a = texts(&a, &alice, &room).await;
    let on_b = texts(&b, &bob, &room).await;
    assert_eq!(on_a[..2], ["hello from a", "hello from b"]);
    assert_eq!(on_b[..2], ["hello from a", "hello from b"]);

    // State changes follow: a new topic on a.test is b.test's too.
    a.put(
        &format!("/_matrix/client/v3/rooms/{room}/state/m.room.topic/"),
        &alice,
        json!({"topic": "federated"}),
    )
    .await
    .assert_ok();
    eventually("the topic on b.test", || async {
        b.get(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.topic/"),
            &bob,
        )
        .await
        .json()["topic"]
            == "federated"
    })
    .await;

    // Bob leaves; a.test sees it.
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
}

#[tokio::test]
async fn a_user_joins_a_room_of_another_server_by_its_alias() {
    let (a, b, _, _, _dir) = two_servers().await;
    let (_, alice) = a.register("alice").await;
    let (bob_id, bob) = b.register("bob").await;
    let room = a
        .create_room(
            &alice,
            json!({"preset": "public_chat", "room_alias_name": "hall", "room_version": "12"}),
        )
        .await;
    let joined = b
        .post(
            &format!("/_matrix/client/v3/join/{}", common::encode("#hall:a.test")),
            &bob,
            json!({}),
        )
        .await
        .assert_ok();
    assert_eq!(joined["room_id"], room.as_str());
    assert_eq!(
        membership(&a, &room, &bob_id).await.as_deref(),
        Some("join")
    );
    // An alias nobody has, and a room nobody answers for.
    b.post(
        &format!(
            "/_matrix/client/v3/join/{}",
            common::encode("#nothing:a.test")
        ),
        &bob,
        json!({}),
    )
    .await
    .assert_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn joins_that_are_not_allowed_are_refused() {
    let (a, b, _, _, _dir) = two_servers().await;
    let (_, alice) = a.register("alice").await;
    let (_, bob) = b.register("bob").await;
    let private = a
        .create_room(&alice, json!({"preset": "private_chat"}))
        .await;
    // Bob was not invited: a.test refuses, and b.test says so.
    join_via_a(&b, &bob, &private)
        .await
        .assert_error(403, "M_FORBIDDEN");
    assert!(
        !b.services
            .rooms
            .exists(&RoomId::parse(&private).unwrap())
            .await
            .unwrap()
    );

    let public = a
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    let ask = |uri: String| {
        let federation = &b.services.federation;
        async move {
            federation
                .request(&server("a.test"), http::Method::GET, &uri, None, true)
                .await
        }
    };
    // A join template for a user of another server than the asking one.
    assert_refused(
        ask(format!(
            "/_matrix/federation/v1/make_join/{}/{}?ver=10",
            enc(&public),
            enc("@carol:c.test")
        ))
        .await,
        (403, "M_FORBIDDEN"),
        "another server's user",
    );
    // A joining server that does not support the room's version.
    let refused = ask(format!(
        "/_matrix/federation/v1/make_join/{}/{}?ver=1&ver=2",
        enc(&public),
        enc("@bob:b.test")
    ))
    .await;
    match refused {
        Err(FederationError::Status(_, 400, body)) => {
            assert_eq!(body["errcode"], "M_INCOMPATIBLE_ROOM_VERSION");
            assert_eq!(body["room_version"], "12");
        }
        other => panic!("{other:?}"),
    }
    // Reads of a room b.test has nobody in.
    let create = a
        .services
        .rooms
        .state_event(&RoomId::parse(&public).unwrap(), "m.room.create", "")
        .await
        .unwrap()
        .unwrap();
    assert_refused(
        ask(format!(
            "/_matrix/federation/v1/state_ids/{}?event_id={}",
            enc(&public),
            enc(create.event_id.as_str())
        ))
        .await,
        (403, "M_FORBIDDEN"),
        "state of a room the asker is not in",
    );
    assert_refused(
        ask(format!("/_matrix/federation/v1/event/{}", enc("$nothing"))).await,
        (404, "M_NOT_FOUND"),
        "an unknown event",
    );
}

fn enc(text: &str) -> String {
    causeway_matrix::federation::membership::segment(text)
}

/// A PDU of `sender` (a user of b.test) in `room`, built and signed by b.test.
fn pdu_of_b(
    b: &TestServer,
    room: &str,
    sender: &str,
    prev_and_auth: (Vec<ruma::OwnedEventId>, Vec<ruma::OwnedEventId>),
    depth: i64,
    body: &str,
) -> causeway_matrix::pdu::Pdu {
    event_of_b(
        b,
        (room, &RoomVersionId::V10),
        sender,
        ("m.room.message", json!({"msgtype": "m.text", "body": body})),
        prev_and_auth,
        depth,
    )
}

#[tokio::test]
async fn bad_transactions_and_pdus_are_refused_without_harm() {
    let Shared {
        a,
        b,
        alice_id,
        alice,
        bob_id,
        room,
        ..
    } = shared_room("10").await;
    let room_id = RoomId::parse(&room).unwrap();
    let send = |txn: &'static str, body: Value| {
        let federation = &b.services.federation;
        async move {
            federation
                .request(
                    &server("a.test"),
                    http::Method::PUT,
                    &format!("/_matrix/federation/v1/send/{txn}"),
                    Some(&body),
                    true,
                )
                .await
        }
    };
    // Malformed transactions.
    assert_refused(
        send("t1", json!({"edus": []})).await,
        (400, "M_BAD_JSON"),
        "no pdus",
    );
    let many: Vec<Value> = (0..51).map(|i| json!({"n": i})).collect();
    assert_refused(
        send("t2", json!({"pdus": many})).await,
        (400, "M_BAD_JSON"),
        "51 PDUs",
    );
    let edus: Vec<Value> = (0..101).map(|_| json!({"edu_type": "m.typing"})).collect();
    assert_refused(
        send("t3", json!({"pdus": [], "edus": edus})).await,
        (400, "M_BAD_JSON"),
        "101 EDUs",
    );

    // Bob's message, as b.test would send it, follows the room's extremities.
    let ((prev, auth), depth) = next_event_edges(&a, &room, &bob_id).await;
    let good = pdu_of_b(
        &b,
        &room,
        &bob_id,
        (prev.clone(), auth.clone()),
        depth,
        "good",
    );
    // Forged: the content changed after b.test signed (the hash no longer matches), and
    // another signed by a key that is not b.test's.
    let mut altered = serde_json::to_value(&good.json).unwrap();
    altered["content"]["body"] = json!("altered");
    let stranger = ruma::signatures::Ed25519KeyPair::from_der(
        &ruma::signatures::Ed25519KeyPair::generate(),
        b.services.key.version().to_owned(),
    )
    .unwrap();
    let mut forged = pdu_of_b(
        &b,
        &room,
        &bob_id,
        (prev.clone(), auth.clone()),
        depth,
        "forged",
    )
    .json;
    forged.remove("signatures");
    ruma::signatures::sign_json("b.test", &stranger, &mut forged).unwrap();
    // Alice is not b.test's to speak for.
    let impostor = build_event(
        EventDraft {
            room_id: Some(&room_id),
            sender: &UserId::parse(&alice_id).unwrap(),
            event_type: "m.room.message",
            state_key: None,
            content: canonical_content(json!({"msgtype": "m.text", "body": "impostor"})).unwrap(),
            prev_events: prev.clone(),
            auth_events: auth.clone(),
            depth,
            origin_server_ts: MilliSecondsSinceUnixEpoch::now(),
        },
        &causeway_matrix::pdu::rules(&RoomVersionId::V10).unwrap(),
        "b.test",
        &b.services.key,
    )
    .unwrap();
    let oversized =
        json!({"type": "m.room.message", "room_id": room, "content": {"body": "x".repeat(70_000)}});
    let answer = send(
        "t4",
        json!({
            "origin": "b.test",
            "origin_server_ts": 1,
            "pdus": [
                serde_json::to_value(&good.json).unwrap(),
                altered,
                serde_json::to_value(&forged).unwrap(),
                serde_json::to_value(&impostor.json).unwrap(),
                oversized,
                {"type": "m.room.message", "room_id": "!elsewhere:c.test", "content": {}},
            ],
        }),
    )
    .await
    .unwrap();
    // One answer per event of the room (the altered copy has the good one's id; the event
    // of a room a.test is not in is dropped): the good one taken, the others refused.
    let results = answer["pdus"].as_object().unwrap();
    assert_eq!(results.len(), 4, "{answer}");
    assert_eq!(results[good.event_id.as_str()], json!({}), "{answer}");
    let rules = causeway_matrix::pdu::rules(&RoomVersionId::V10).unwrap();
    let forged_id = causeway_matrix::federation::pdu::event_id(&forged, &rules).unwrap();
    assert!(results[forged_id.as_str()]["error"].is_string(), "{answer}");
    assert!(
        results[impostor.event_id.as_str()]["error"].is_string(),
        "{answer}"
    );
    let refused = results
        .values()
        .filter(|result| result["error"].is_string())
        .count();
    assert_eq!(refused, 3, "{answer}");
    // The good one and the altered one (kept redacted) are the same event; a.test shows it
    // once, and the room is not harmed: alice still writes, bob's good message is there.
    let shown = texts(&a, &alice, &room).await;
    assert!(shown.contains(&"good".to_owned()), "{shown:?}");
    assert!(
        !shown
            .iter()
            .any(|text| text == "altered" || text == "forged" || text == "impostor")
    );
    a.send_text(&alice, &room, "after", "still fine")
        .await
        .assert_ok();

    // The same transaction again is answered the same and changes nothing.
    let again = send("t4", json!({"pdus": []})).await.unwrap();
    assert_eq!(again, answer);
    assert_eq!(
        texts(&a, &alice, &room)
            .await
            .iter()
            .filter(|text| *text == "good")
            .count(),
        1
    );
}

#[tokio::test]
async fn invites_across_servers_are_signed_by_both_and_joined_or_rejected() {
    let (a, b, _, _, _dir) = two_servers().await;
    let (_, alice) = a.register("alice").await;
    let (bob_id, bob) = b.register("bob").await;
    let (carol_id, carol) = b.register("carol").await;
    let room = a
        .create_room(
            &alice,
            json!({"preset": "private_chat", "name": "Invited only", "room_version": "11"}),
        )
        .await;
    for user in [&bob_id, &carol_id] {
        a.post(
            &format!("/_matrix/client/v3/rooms/{room}/invite"),
            &alice,
            json!({"user_id": user}),
        )
        .await
        .assert_ok();
        assert_eq!(membership(&a, &room, user).await.as_deref(), Some("invite"));
    }
    // The invite a.test keeps carries b.test's signature beside its own.
    let invite_id = a
        .services
        .rooms
        .state_event(&RoomId::parse(&room).unwrap(), "m.room.member", &bob_id)
        .await
        .unwrap()
        .unwrap();
    let signatures = &invite_id.json["signatures"];
    let signers: Vec<String> = match signatures {
        ruma::CanonicalJsonValue::Object(map) => map.keys().cloned().collect(),
        _ => vec![],
    };
    assert_eq!(signers, ["a.test", "b.test"]);

    // Bob's sync on b.test shows the invite with the room's stripped state.
    let sync = b.sync(&bob, "timeout=0").await;
    let invite_state = &sync["rooms"]["invite"][&room]["invite_state"]["events"];
    let events = invite_state.as_array().unwrap();
    assert!(
        events
            .iter()
            .any(|event| event["type"] == "m.room.name"
                && event["content"]["name"] == "Invited only"),
        "{sync}"
    );
    assert!(events.iter().any(|event| event["type"] == "m.room.member"
        && event["state_key"] == bob_id.as_str()
        && event["content"]["membership"] == "invite"));

    // Bob joins, through the inviting server without naming it.
    b.join(&bob, &room).await;
    assert_eq!(
        membership(&a, &room, &bob_id).await.as_deref(),
        Some("join")
    );
    assert_eq!(
        membership(&b, &room, &bob_id).await.as_deref(),
        Some("join")
    );

    // Carol rejects: a.test learns it, and her sync shows the room left.
    b.post(
        &format!("/_matrix/client/v3/rooms/{room}/leave"),
        &carol,
        json!({}),
    )
    .await
    .assert_ok();
    eventually("carol's rejection on a.test", || async {
        membership(&a, &room, &carol_id).await.as_deref() == Some("leave")
    })
    .await;
    let sync = b.sync(&carol, "timeout=0").await;
    assert!(sync["rooms"]["invite"].get(&room).is_none(), "{sync}");
    // A rejected invite cannot be rejected again, nor can an unknown user be invited.
    a.post(
        &format!("/_matrix/client/v3/rooms/{room}/invite"),
        &alice,
        json!({"user_id": "@nobody:b.test"}),
    )
    .await
    .assert_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn a_joining_server_pages_back_through_history_it_never_had() {
    let (a, b, _, _, _dir) = two_servers().await;
    let (_, alice) = a.register("alice").await;
    let (_, bob) = b.register("bob").await;
    let room = a
        .create_room(
            &alice,
            json!({"preset": "public_chat", "room_version": "10"}),
        )
        .await;
    for i in 0..60 {
        a.send_text(&alice, &room, &format!("h{i}"), &format!("history {i}"))
            .await
            .assert_ok();
    }
    join_via_a(&b, &bob, &room).await.assert_ok();
    let before = b.sync(&bob, "timeout=0").await["next_batch"].clone();

    // Bob pages back, 20 at a time, from the present to the room's creation.
    let mut texts_seen = Vec::new();
    let mut kinds = Vec::new();
    let mut from: Option<String> = None;
    for _ in 0..20 {
        let query = match &from {
            Some(token) => format!("dir=b&limit=20&from={token}"),
            None => "dir=b&limit=20".to_owned(),
        };
        let page = b
            .get(
                &format!("/_matrix/client/v3/rooms/{room}/messages?{query}"),
                &bob,
            )
            .await
            .assert_ok();
        for event in page["chunk"].as_array().unwrap() {
            kinds.push(event["type"].as_str().unwrap().to_owned());
            if let Some(body) = event["content"]["body"].as_str() {
                texts_seen.push(body.to_owned());
            }
        }
        match page["end"].as_str() {
            Some(end) => from = Some(end.to_owned()),
            None => break,
        }
    }
    texts_seen.reverse();
    let expected: Vec<String> = (0..60).map(|i| format!("history {i}")).collect();
    assert_eq!(texts_seen, expected);
    // Down to the room's beginning, each event once.
    assert_eq!(kinds.last().map(String::as_str), Some("m.room.create"));
    assert_eq!(
        kinds.iter().filter(|kind| *kind == "m.room.create").count(),
        1
    );
    // What was fetched is history: nothing of it is new to bob's sync.
    let sync = b
        .sync(
            &bob,
            &format!("timeout=0&since={}", before.as_str().unwrap()),
        )
        .await;
    assert!(
        sync["rooms"]["join"][&room]["timeline"]["events"]
            .as_array()
            .is_none_or(|events| events.is_empty()),
        "{sync}"
    );
}

#[tokio::test]
async fn media_of_another_server_is_fetched_kept_and_thumbnailed() {
    let (a, b, _, _, _dir) = two_servers().await;
    let (_, alice) = a.register("alice").await;
    let (_, bob) = b.register("bob").await;
    let mut png = Vec::new();
    image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(64, 32, |x, _| {
        image::Rgb([(x * 4) as u8, 0, 200])
    }))
    .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
    .unwrap();
    let uploaded = b
        .raw(
            http::Method::POST,
            "/_matrix/media/v3/upload?filename=picture.png",
            Some(&bob),
            Some("image/png"),
            png.clone(),
        )
        .await
        .assert_ok();
    let uri = uploaded["content_uri"].as_str().unwrap();
    let (server_name, media_id) = uri.strip_prefix("mxc://").unwrap().split_once('/').unwrap();
    assert_eq!(server_name, "b.test");

    // Alice, on a.test, downloads bob's picture: a.test fetches it from b.test.
    let download = a
        .get(
            &format!("/_matrix/client/v1/media/download/b.test/{media_id}"),
            &alice,
        )
        .await;
    assert_eq!(download.status, 200);
    assert_eq!(download.body, png);
    assert_eq!(download.headers["content-type"], "image/png");
    // Kept under a local id: served again from the copy, and thumbnailed from it.
    let kept = a
        .services
        .store
        .remote_media("b.test", media_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kept.size, png.len() as i64);
    assert_eq!(kept.filename.as_deref(), Some("picture.png"));
    let again = a
        .get(
            &format!("/_matrix/client/v1/media/download/b.test/{media_id}"),
            &alice,
        )
        .await;
    assert_eq!(again.body, png);
    let thumbnail = a
        .get(
            &format!("/_matrix/client/v1/media/thumbnail/b.test/{media_id}?width=32&height=32"),
            &alice,
        )
        .await;
    assert_eq!(thumbnail.status, 200);
    assert!(
        thumbnail.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("image/")
    );
    // The frozen unauthenticated endpoints do not serve other servers' media.
    a.raw(
        http::Method::GET,
        &format!("/_matrix/media/v3/download/b.test/{media_id}"),
        None,
        None,
        vec![],
    )
    .await
    .assert_error(404, "M_NOT_FOUND");
    a.get("/_matrix/client/v1/media/download/c.test/nothing", &alice)
        .await
        .assert_error(404, "M_NOT_FOUND");
}

/// Identity keys of a device, as a client uploads them.
#[tokio::test]
async fn keys_devices_and_to_device_messages_cross_servers() {
    let Shared {
        a,
        b,
        alice_id,
        alice,
        bob_id,
        bob,
        ..
    } = shared_room("12").await;
    let bob_device = device_of(&b, &bob).await;
    b.post(
        "/_matrix/client/v3/keys/upload",
        &bob,
        json!({
            "device_keys": device_keys(&bob_id, &bob_device),
            "one_time_keys": {
                "signed_curve25519:AAAAAQ": {"key": "otk-1", "signatures": {}},
                "signed_curve25519:AAAAAg": {"key": "otk-2", "signatures": {}},
            },
        }),
    )
    .await
    .assert_ok();

    // Alice's client asks a.test about bob: a.test asks b.test.
    let query = a
        .post(
            "/_matrix/client/v3/keys/query",
            &alice,
            json!({"device_keys": {&bob_id: [], "@nobody:c.test": []}}),
        )
        .await
        .assert_ok();
    assert_eq!(
        query["device_keys"][&bob_id][&bob_device]["keys"][format!("ed25519:{bob_device}")],
        format!("ed-of-{bob_device}")
    );
    // A server that cannot be reached is a failure, not an error of the whole query.
    assert!(query["failures"]["c.test"].is_object(), "{query}");

    // One-time keys are claimed once each.
    let claim = || {
        a.post(
            "/_matrix/client/v3/keys/claim",
            &alice,
            json!({"one_time_keys": {&bob_id: {&bob_device: "signed_curve25519"}}}),
        )
    };
    let first = claim().await.assert_ok();
    let second = claim().await.assert_ok();
    let key_of = |answer: &Value| {
        answer["one_time_keys"][&bob_id][&bob_device]
            .as_object()
            .and_then(|keys| keys.values().next().cloned())
            .map(|key| key["key"].clone())
    };
    let (first_key, second_key) = (key_of(&first), key_of(&second));
    assert!(
        first_key.is_some() && second_key.is_some(),
        "{first} {second}"
    );
    assert_ne!(first_key, second_key);

    // A to-device message for bob's device reaches his sync on b.test.
    let since = b.sync(&bob, "timeout=0").await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    a.put(
        "/_matrix/client/v3/sendToDevice/m.room_key_request/txn1",
        &alice,
        json!({"messages": {&bob_id: {&bob_device: {"secret": "for bob"}}}}),
    )
    .await
    .assert_ok();
    let mut received = None;
    for _ in 0..100 {
        let sync = b.sync(&bob, &format!("timeout=0&since={since}")).await;
        if let Some(event) = sync["to_device"]["events"]
            .as_array()
            .and_then(|events| events.first())
        {
            received = Some(event.clone());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let received = received.expect("the to-device message arrives");
    assert_eq!(received["sender"], alice_id.as_str());
    assert_eq!(received["content"]["secret"], "for bob");

    // Bob's new device: alice's sync learns that his devices changed.
    let since = a.sync(&alice, "timeout=0").await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let login = b.login("bob", "secret-pw").await;
    let second_login = login["access_token"].as_str().unwrap().to_owned();
    let second_device = login["device_id"].as_str().unwrap().to_owned();
    b.post(
        "/_matrix/client/v3/keys/upload",
        &second_login,
        json!({"device_keys": device_keys(&bob_id, &second_device)}),
    )
    .await
    .assert_ok();
    eventually("bob's device change in alice's sync", || async {
        let sync = a.sync(&alice, &format!("timeout=0&since={since}")).await;
        sync["device_lists"]["changed"]
            .as_array()
            .is_some_and(|changed| changed.iter().any(|user| user == bob_id.as_str()))
    })
    .await;
    // (The device's login and its keys are two changes: the keys may come a moment later.)
    eventually("bob's second device's keys for alice", || async {
        let query = a
            .post(
                "/_matrix/client/v3/keys/query",
                &alice,
                json!({"device_keys": {&bob_id: []}}),
            )
            .await
            .assert_ok();
        query["device_keys"][&bob_id][&second_device]["keys"].is_object()
    })
    .await;
    // b.test answers for its own users only, and may not speak for a.test's.
    let forged = b
        .services
        .federation
        .request(
            &server("a.test"),
            http::Method::PUT,
            "/_matrix/federation/v1/send/forged-to-device",
            Some(
                &json!({"pdus": [], "edus": [{"edu_type": "m.direct_to_device", "content": {
                "sender": alice_id, "type": "m.x", "message_id": "m1",
                "messages": {&alice_id: {"*": {"forged": true}}}}}]}),
            ),
            true,
        )
        .await
        .unwrap();
    assert_eq!(forged["pdus"], json!({}));
    let sync = a.sync(&alice, "timeout=0").await;
    assert!(
        sync["to_device"]["events"]
            .as_array()
            .is_none_or(|events| events
                .iter()
                .all(|event| event["content"]["forged"].is_null())),
        "{sync}"
    );
}

#[tokio::test]
async fn a_room_server_acl_keeps_a_server_out() {
    let Shared {
        a,
        b,
        alice,
        bob,
        room,
        ..
    } = shared_room("12").await;
    say(&b, &bob, &room, "b1", "before the ban", (&a, &alice)).await;
    // Alice bans b.test from the room by its server ACL.
    a.put(
        &format!("/_matrix/client/v3/rooms/{room}/state/m.room.server_acl/"),
        &alice,
        json!({"allow": ["*"], "deny": ["b.test"], "allow_ip_literals": false}),
    )
    .await
    .assert_ok();
    eventually("the ACL on b.test", || async {
        b.get(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.server_acl/"),
            &bob,
        )
        .await
        .status
            == 200
    })
    .await;
    b.send_text(&bob, &room, "b2", "after the ban")
        .await
        .assert_ok();
    // What b.test sends in the room is refused; a.test's own users go on.
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.send_text(&alice, &room, "a1", "alice goes on")
        .await
        .assert_ok();
    let shown = texts(&a, &alice, &room).await;
    assert!(shown.contains(&"alice goes on".to_owned()));
    assert!(!shown.contains(&"after the ban".to_owned()), "{shown:?}");
    // Nor may b.test read the room's state or join anyone to it.
    let create = a
        .services
        .rooms
        .state_event(&RoomId::parse(&room).unwrap(), "m.room.create", "")
        .await
        .unwrap()
        .unwrap();
    let refused = b
        .services
        .federation
        .request(
            &server("a.test"),
            http::Method::GET,
            &format!(
                "/_matrix/federation/v1/state_ids/{}?event_id={}",
                enc(&room),
                enc(create.event_id.as_str())
            ),
            None,
            true,
        )
        .await;
    assert_refused(
        refused,
        (403, "M_FORBIDDEN"),
        "state of a room whose ACL bans",
    );
    let template = b
        .services
        .federation
        .request(
            &server("a.test"),
            http::Method::GET,
            &format!(
                "/_matrix/federation/v1/make_join/{}/{}?ver=12",
                enc(&room),
                enc("@carol:b.test")
            ),
            None,
            true,
        )
        .await;
    assert_refused(
        template,
        (403, "M_FORBIDDEN"),
        "a join of a banned server's user",
    );
}

#[tokio::test]
async fn a_server_denied_by_configuration_is_refused_both_ways() {
    let (a, b, _, _, _dir) = two_servers_with(|name, config| {
        if name == "a.test" {
            config.federation.deny_servers = vec!["b.*".into()];
        }
    })
    .await;
    let (_, alice) = a.register("alice").await;
    let (_, bob) = b.register("bob").await;
    let room = a
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    // b.test's requests are refused by a.test…
    join_via_a(&b, &bob, &room)
        .await
        .assert_error(403, "M_FORBIDDEN");
    let bob_room_id = b.create_room(&bob, json!({"preset": "public_chat"})).await;
    // …and a.test does not contact b.test.
    a.post(
        &format!("/_matrix/client/v3/join/{bob_room_id}?via=b.test"),
        &alice,
        json!({}),
    )
    .await
    .assert_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn a_ban_on_one_server_holds_on_the_other() {
    let Shared {
        a,
        b,
        alice,
        bob_id,
        bob,
        room,
        ..
    } = shared_room("10").await;
    a.post(
        &format!("/_matrix/client/v3/rooms/{room}/ban"),
        &alice,
        json!({"user_id": bob_id, "reason": "spam"}),
    )
    .await
    .assert_ok();
    eventually("bob's ban on b.test", || async {
        membership(&b, &room, &bob_id).await.as_deref() == Some("ban")
    })
    .await;
    // Bob can no longer post, on his own server either, nor join again.
    b.send_text(&bob, &room, "after", "banned words")
        .await
        .assert_error(403, "M_FORBIDDEN");
    join_via_a(&b, &bob, &room)
        .await
        .assert_error(403, "M_FORBIDDEN");
    assert_eq!(membership(&a, &room, &bob_id).await.as_deref(), Some("ban"));
}
