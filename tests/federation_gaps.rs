//! Gaps in a room's graph across two Causeway servers on loopback: a server that missed more
//! events than `get_missing_events` brings takes the next event with the state at the gap,
//! as the other server tells it, and fetches what is in the gap when a client pages back to
//! it.

#![allow(clippy::unwrap_used)]

mod common;

use common::federation::*;
use ruma::RoomId;
use serde_json::json;

#[tokio::test]
async fn a_server_that_missed_many_events_takes_the_state_at_the_gap() {
    let Shared {
        a,
        b,
        alice,
        bob_id,
        bob,
        room,
        ..
    } = shared_room("12").await;
    let room_id = RoomId::parse(&room).unwrap();
    // Once both servers have sent each other all they had (a transaction from a.test would
    // end b.test's backoff: a.test is heard from), b.test holds what comes for an hour...
    let quiet = |server: &common::TestServer, other: &'static str| {
        let store = server.services.store.clone();
        async move {
            store
                .stream_cursor(causeway_matrix::store::FEDERATION_QUEUED)
                .await
                .unwrap()
                == Some(store.current_position())
                && store.outgoing(other, 100, 100).await.unwrap().is_empty()
        }
    };
    eventually("both servers sent all they had", || async {
        quiet(&a, "b.test").await && quiet(&b, "a.test").await
    })
    .await;
    b.services
        .store
        .destination_failed("a.test", |_| 3_600_000)
        .await
        .unwrap();
    // ...while bob changes his name and says 30 things...
    b.put(
        &format!("/_matrix/client/v3/profile/{bob_id}/displayname"),
        &bob,
        json!({"displayname": "Bob Renamed"}),
    )
    .await
    .assert_ok();
    for n in 1..=30 {
        b.send_text(&bob, &room, &format!("gap{n}"), &format!("gap {n}"))
            .await
            .assert_ok();
    }
    // ...and loses them (a sender that skips to the latest, like a server catching up).
    eventually("the queue for a.test holds bob's events", || async {
        b.services
            .store
            .outgoing("a.test", 100, 100)
            .await
            .unwrap()
            .len()
            >= 31
    })
    .await;
    let queued = b.services.store.outgoing("a.test", 100, 100).await.unwrap();
    let last = queued.last().unwrap().0;
    b.services
        .store
        .outgoing_sent("a.test", last)
        .await
        .unwrap();
    b.services
        .federation_sender
        .heard_from(&server("a.test"))
        .await;
    // The next message reaches a.test; what it follows is more than get_missing_events
    // brings, so a.test asks b.test for the state at the gap.
    b.send_text(&bob, &room, "after", "after the gap")
        .await
        .assert_ok();
    eventually("the message after the gap on a.test", || async {
        texts(&a, &alice, &room)
            .await
            .contains(&"after the gap".to_owned())
    })
    .await;
    // Paging back reaches the gap; what a.test never had is fetched from b.test (backfill),
    // and the whole conversation reads in order.
    let seen = texts(&a, &alice, &room).await;
    let gap: Vec<String> = seen
        .iter()
        .filter(|text| text.starts_with("gap "))
        .cloned()
        .collect();
    let expected: Vec<String> = (1..=30).rev().map(|n| format!("gap {n}")).collect();
    assert_eq!(gap, expected, "{seen:?}");
    assert_eq!(seen.first().map(String::as_str), Some("after the gap"));
    // The rename, before what get_missing_events brought, is in a.test's state: it came
    // with the state at the gap.
    let member = a
        .services
        .rooms
        .state_event(&room_id, "m.room.member", &bob_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(member.content_value()["displayname"], "Bob Renamed");
    assert_eq!(member.content_value()["membership"], "join");
    // The room goes on: alice answers, bob gets it.
    say(&a, &alice, &room, "reply", "welcome back", (&b, &bob)).await;
}
