//! Invites of another server's users made with the room: `createRoom` with an `invite` list
//! that names them asks their server to sign each invite, as `/invite` does.

#![allow(clippy::unwrap_used)]

mod common;

use common::federation::*;
use serde_json::json;

#[tokio::test]
async fn a_room_created_with_another_servers_user_invited() {
    let (a, b, _, _, _dir) = two_servers().await;
    let (_, alice) = a.register("alice").await;
    let (bob_id, bob) = b.register("bob").await;
    let room = a
        .create_room(
            &alice,
            json!({"preset": "trusted_private_chat", "name": "Made for two",
                   "invite": [&bob_id], "is_direct": true, "room_version": "10"}),
        )
        .await;
    assert_eq!(
        membership(&a, &room, &bob_id).await.as_deref(),
        Some("invite")
    );
    // b.test signed it and shows it to bob, marked direct, with the room's stripped state.
    let sync = b.sync(&bob, "timeout=0").await;
    let events = sync["rooms"]["invite"][&room]["invite_state"]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let invite = events
        .iter()
        .find(|event| event["type"] == "m.room.member" && event["state_key"] == bob_id.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("no invite in {sync}"));
    assert_eq!(invite["content"]["membership"], "invite");
    assert_eq!(invite["content"]["is_direct"], true);
    assert!(
        events
            .iter()
            .any(|event| event["type"] == "m.room.name"
                && event["content"]["name"] == "Made for two"),
        "{sync}"
    );
    b.join(&bob, &room).await;
    assert_eq!(
        membership(&a, &room, &bob_id).await.as_deref(),
        Some("join")
    );

    // An invitee whose server cannot be reached: the room is not made with a stored invite
    // nobody was told of.
    let unreachable = a
        .post(
            "/_matrix/client/v3/createRoom",
            &alice,
            json!({"invite": ["@nobody:c.test"]}),
        )
        .await;
    assert_eq!(unreachable.status, 502, "{}", unreachable.json());
    assert_eq!(unreachable.json()["errcode"], "M_UNKNOWN");
}

#[tokio::test]
async fn a_first_version_invite_is_for_room_versions_not_taken_part_in() {
    let (a, b, _, _, _dir) = two_servers().await;
    let (alice_id, _) = a.register("alice").await;
    let (bob_id, _) = b.register("bob").await;
    let invite = json!({
        "room_id": "!old:b.test", "type": "m.room.member", "state_key": alice_id,
        "sender": bob_id, "content": {"membership": "invite"}, "event_id": "$old:b.test",
        "origin_server_ts": 1, "depth": 3, "prev_events": [], "auth_events": [],
    });
    let refused = b
        .services
        .federation
        .request(
            &server("a.test"),
            http::Method::PUT,
            "/_matrix/federation/v1/invite/!old:b.test/$old:b.test",
            Some(&invite),
            true,
        )
        .await;
    match refused {
        Err(causeway_matrix::federation::client::FederationError::Status(_, status, body)) => {
            assert_eq!(status, 400);
            assert_eq!(body["errcode"], "M_INCOMPATIBLE_ROOM_VERSION");
            assert_eq!(body["room_version"], "1");
        }
        other => panic!("{other:?}"),
    }
    // Unsigned, it is refused as any request without the origin's signature.
    let unsigned = b
        .services
        .federation
        .request(
            &server("a.test"),
            http::Method::PUT,
            "/_matrix/federation/v1/invite/!old:b.test/$old:b.test",
            Some(&invite),
            false,
        )
        .await;
    assert!(
        matches!(
            unsigned,
            Err(causeway_matrix::federation::client::FederationError::Status(_, 401, _))
        ),
        "{unsigned:?}"
    );
}
