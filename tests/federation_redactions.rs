//! Redactions across two Causeway servers: each takes effect on the other server only when
//! allowed (the redacting user's own server's events, or the power to redact), never across
//! rooms, and also when the redaction arrives before the event it redacts.

#![allow(clippy::unwrap_used)]

mod common;

use common::federation::*;
use ruma::RoomVersionId;
use serde_json::json;

#[tokio::test]
async fn redactions_from_other_servers_take_effect_only_when_allowed() {
    let Shared {
        a,
        b,
        alice,
        bob_id,
        bob,
        room,
        ..
    } = shared_room("12").await;
    let event_id = event_id_of;
    let alices = event_id(a.send_text(&alice, &room, "t1", "alice's words").await);
    let bobs = event_id(b.send_text(&bob, &room, "t2", "bob's words").await);
    let bobs_second = event_id(b.send_text(&bob, &room, "t3", "bob again").await);
    for (server, token) in [(&a, &alice), (&b, &bob)] {
        eventually("the three messages on both servers", || async {
            let got = texts(server, token, &room).await;
            ["alice's words", "bob's words", "bob again"]
                .iter()
                .all(|text| got.contains(&(*text).to_owned()))
        })
        .await;
    }
    // Bob takes back his own words on b.test: gone on a.test too.
    b.put(
        &format!("/_matrix/client/v3/rooms/{room}/redact/{bobs}/r1"),
        &bob,
        json!({"reason": "oops"}),
    )
    .await
    .assert_ok();
    eventually("bob's words redacted on a.test", || async {
        !texts(&a, &alice, &room)
            .await
            .contains(&"bob's words".to_owned())
    })
    .await;
    // Alice, who has the power, redacts bob's other message on a.test: gone on b.test.
    a.put(
        &format!("/_matrix/client/v3/rooms/{room}/redact/{bobs_second}/r2"),
        &alice,
        json!({}),
    )
    .await
    .assert_ok();
    eventually("bob's second message redacted on b.test", || async {
        !texts(&b, &bob, &room)
            .await
            .contains(&"bob again".to_owned())
    })
    .await;

    // Bob's message in another room, and two redactions b.test makes for bob: of alice's
    // message (bob has no power over a.test's user's events), and of his message of the
    // other room. Both are events of the room; neither redacts anything.
    let elsewhere = a
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    b.post(
        &format!("/_matrix/client/v3/join/{elsewhere}?via=a.test"),
        &bob,
        json!({}),
    )
    .await
    .assert_ok();
    let bob_elsewhere = event_id(b.send_text(&bob, &elsewhere, "t4", "bob elsewhere").await);
    eventually("bob's message in the other room on a.test", || async {
        texts(&a, &alice, &elsewhere)
            .await
            .contains(&"bob elsewhere".to_owned())
    })
    .await;
    let (edges, depth) = next_event_edges(&a, &room, &bob_id).await;
    let version = RoomVersionId::V12;
    let over_alice = event_of_b(
        &b,
        (&room, &version),
        &bob_id,
        ("m.room.redaction", json!({"redacts": alices})),
        edges.clone(),
        depth,
    );
    let across_rooms = event_of_b(
        &b,
        (&room, &version),
        &bob_id,
        ("m.room.redaction", json!({"redacts": bob_elsewhere})),
        (vec![over_alice.event_id.clone()], edges.1.clone()),
        depth + 1,
    );
    let answer = b
        .services
        .federation
        .request(
            &server("a.test"),
            http::Method::PUT,
            "/_matrix/federation/v1/send/forged-redactions",
            Some(&json!({"pdus": [
                serde_json::to_value(&over_alice.json).unwrap(),
                serde_json::to_value(&across_rooms.json).unwrap(),
            ]})),
            true,
        )
        .await
        .unwrap();
    for pdu in [&over_alice, &across_rooms] {
        let outcome = &answer["pdus"][pdu.event_id.as_str()];
        assert!(outcome.is_null() || outcome == &json!({}), "{answer}");
        assert!(
            a.services
                .store
                .event(pdu.event_id.as_str())
                .await
                .unwrap()
                .is_some(),
            "the redaction is stored"
        );
    }
    let in_room = texts(&a, &alice, &room).await;
    assert!(in_room.contains(&"alice's words".to_owned()), "{in_room:?}");
    let elsewhere_texts = texts(&a, &alice, &elsewhere).await;
    assert!(
        elsewhere_texts.contains(&"bob elsewhere".to_owned()),
        "{elsewhere_texts:?}"
    );
}

#[tokio::test]
async fn a_redaction_that_comes_before_its_event_takes_effect_when_it_arrives() {
    let Shared {
        a,
        b,
        alice,
        bob_id,
        room,
        ..
    } = shared_room("12").await;
    let version = RoomVersionId::V12;
    // Bob's message and his redaction of it, each on its own fork: the redaction does not
    // follow the message, so a.test may take it first.
    let (edges, depth) = next_event_edges(&a, &room, &bob_id).await;
    let message = event_of_b(
        &b,
        (&room, &version),
        &bob_id,
        (
            "m.room.message",
            json!({"msgtype": "m.text", "body": "soon taken back"}),
        ),
        edges.clone(),
        depth,
    );
    let redaction = event_of_b(
        &b,
        (&room, &version),
        &bob_id,
        ("m.room.redaction", json!({"redacts": message.event_id})),
        edges,
        depth,
    );
    for (txn, pdu) in [
        ("first-the-redaction", &redaction),
        ("then-the-message", &message),
    ] {
        let answer = transaction_from_b(
            &b,
            txn,
            json!({"pdus": [serde_json::to_value(&pdu.json).unwrap()]}),
        )
        .await;
        assert_eq!(answer["pdus"][pdu.event_id.as_str()], json!({}), "{answer}");
    }
    // The message is stored redacted, by that redaction, and its words are nowhere.
    let stored = a
        .services
        .store
        .event(message.event_id.as_str())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.redacted_by.as_deref(),
        Some(redaction.event_id.as_str())
    );
    assert!(!stored.json.contains("soon taken back"), "{}", stored.json);
    assert!(
        !texts(&a, &alice, &room)
            .await
            .contains(&"soon taken back".to_owned())
    );
    let shown = a
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/event/{}", message.event_id),
            &alice,
        )
        .await
        .assert_ok();
    assert_eq!(shown["content"], json!({}), "{shown}");
    assert_eq!(
        shown["unsigned"]["redacted_because"]["event_id"],
        redaction.event_id.as_str(),
        "{shown}"
    );
    // Nothing waits any more.
    assert!(
        a.services
            .store
            .pending_redactions(&room, message.event_id.as_str())
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn redactions_paged_back_from_another_server_keep_what_they_redact_redacted() {
    let (a, b, _, _, _dir) = two_servers().await;
    let (_, alice) = a.register("alice").await;
    let (_, bob) = b.register("bob").await;
    let room = a
        .create_room(
            &alice,
            json!({"preset": "public_chat", "room_version": "10"}),
        )
        .await;
    let event_id = event_id_of;
    let mut sent = Vec::new();
    for i in 0..4 {
        sent.push(event_id(
            a.send_text(&alice, &room, &format!("e{i}"), &format!("early {i}"))
                .await,
        ));
    }
    let redaction = event_id(
        a.put(
            &format!("/_matrix/client/v3/rooms/{room}/redact/{}/r1", sent[1]),
            &alice,
            json!({"reason": "said too much"}),
        )
        .await,
    );
    join_via_a(&b, &bob, &room).await.assert_ok();
    // Bob pages back: b.test fetches the history from a.test, the redaction with it.
    let seen = texts(&b, &bob, &room).await;
    assert!(seen.contains(&"early 0".to_owned()), "{seen:?}");
    assert!(!seen.contains(&"early 1".to_owned()), "{seen:?}");
    let stored = b.services.store.event(&sent[1]).await.unwrap().unwrap();
    assert_eq!(stored.redacted_by.as_deref(), Some(redaction.as_str()));
    let shown = b
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/event/{}", sent[1]),
            &bob,
        )
        .await
        .assert_ok();
    assert_eq!(
        shown["unsigned"]["redacted_because"]["event_id"],
        redaction.as_str(),
        "{shown}"
    );
}
