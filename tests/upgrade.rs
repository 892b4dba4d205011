//! Room upgrades: the replacement room carries the state, power levels, bans, aliases and
//! directory listing over; the old room gets a tombstone and is closed to messages; members
//! find their push rules, tags and direct chats in the new room when they join it.

#![allow(clippy::unwrap_used)]

mod common;

use common::{TestServer, encode};
use serde_json::{Value, json};

async fn state(server: &TestServer, token: &str, room: &str, event_type: &str) -> Value {
    server
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{room}/state/{event_type}{}",
                if event_type.contains('/') { "" } else { "/" }
            ),
            token,
        )
        .await
        .assert_ok()
}

#[tokio::test]
async fn upgrades() {
    let server = TestServer::new().await;
    let (alice_id, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let (carol_id, _) = server.register("carol").await;
    let old = server
        .create_room(
            &alice,
            json!({
                "room_version": "10",
                "preset": "public_chat",
                "visibility": "public",
                "name": "Old place",
                "topic": "things",
                "room_alias_name": "place",
                "power_level_content_override": {"users": {bob_id.clone(): 20}},
                "initial_state": [{"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}],
            }),
        )
        .await;
    server.join(&bob, &old).await;
    server
        .post(
            &format!("/_matrix/client/v3/rooms/{old}/ban"),
            &alice,
            json!({"user_id": carol_id, "reason": "spam"}),
        )
        .await
        .assert_ok();
    // Bob's rule, tag and direct chat for the old room.
    server
        .put(
            &format!("/_matrix/client/v3/pushrules/global/room/{old}"),
            &bob,
            json!({"actions": []}),
        )
        .await
        .assert_ok();
    server
        .put(
            &format!(
                "/_matrix/client/v3/user/{}/rooms/{old}/tags/m.favourite",
                encode(&bob_id)
            ),
            &bob,
            json!({"order": 0.5}),
        )
        .await
        .assert_ok();
    server
        .put(
            &format!(
                "/_matrix/client/v3/user/{}/account_data/m.direct",
                encode(&bob_id)
            ),
            &bob,
            json!({alice_id.clone(): [old.clone()]}),
        )
        .await
        .assert_ok();

    let upgrade = format!("/_matrix/client/v3/rooms/{old}/upgrade");
    // Who may not, and what cannot be.
    server
        .post(&upgrade, &bob, json!({"new_version": "12"}))
        .await
        .assert_error(403, "M_FORBIDDEN");
    server
        .post(&upgrade, &alice, json!({"new_version": "999"}))
        .await
        .assert_error(400, "M_UNSUPPORTED_ROOM_VERSION");
    server
        .post(
            "/_matrix/client/v3/rooms/!nowhere:test.example/upgrade",
            &alice,
            json!({"new_version": "12"}),
        )
        .await
        .assert_error(404, "M_NOT_FOUND");
    server
        .post(&upgrade, &alice, json!({}))
        .await
        .assert_error(400, "M_BAD_JSON");

    let new = server
        .post(&upgrade, &alice, json!({"new_version": "12"}))
        .await
        .assert_ok()["replacement_room"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(new, old);
    // The new room: its version and predecessor, the state carried over.
    let create = state(&server, &alice, &new, "m.room.create").await;
    assert_eq!(create["room_version"], "12");
    assert_eq!(create["predecessor"]["room_id"], old);
    assert_eq!(
        state(&server, &alice, &new, "m.room.name").await["name"],
        "Old place"
    );
    assert_eq!(
        state(&server, &alice, &new, "m.room.topic").await["topic"],
        "things"
    );
    assert_eq!(
        state(&server, &alice, &new, "m.room.encryption").await["algorithm"],
        "m.megolm.v1.aes-sha2"
    );
    assert_eq!(
        state(&server, &alice, &new, "m.room.join_rules").await["join_rule"],
        "public"
    );
    assert_eq!(
        state(&server, &alice, &new, "m.room.guest_access").await["guest_access"],
        "forbidden"
    );
    let levels = state(&server, &alice, &new, "m.room.power_levels").await;
    assert_eq!(levels["users"][&bob_id], 20);
    // A version 12 creator outranks everyone without being listed.
    assert!(levels["users"].get(&alice_id).is_none(), "{levels}");
    assert_eq!(
        state(&server, &alice, &new, &format!("m.room.member/{carol_id}")).await["membership"],
        "ban"
    );
    // The alias and the directory moved.
    let alias = server
        .get(
            "/_matrix/client/v3/directory/room/%23place:test.example",
            &alice,
        )
        .await
        .assert_ok();
    assert_eq!(alias["room_id"], new);
    assert_eq!(
        state(&server, &alice, &new, "m.room.canonical_alias").await["alias"],
        "#place:test.example"
    );
    assert_eq!(
        state(&server, &alice, &old, "m.room.canonical_alias").await,
        json!({})
    );
    let directory = server
        .get("/_matrix/client/v3/publicRooms", &alice)
        .await
        .assert_ok();
    let listed: Vec<&str> = directory["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|room| room["room_id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [new.as_str()]);

    // The old room: tombstoned and closed to Bob's messages.
    let tombstone = state(&server, &alice, &old, "m.room.tombstone").await;
    assert_eq!(tombstone["replacement_room"], new);
    let closed = state(&server, &alice, &old, "m.room.power_levels").await;
    assert_eq!(closed["events_default"], 50);
    assert_eq!(closed["invite"], 50);
    server
        .send_text(&bob, &old, "late", "hello?")
        .await
        .assert_error(403, "M_FORBIDDEN");
    // Bob sees the successor in his sync.
    let sync = server.sync(&bob, "").await;
    let timeline = sync["rooms"]["join"][&old]["timeline"]["events"]
        .as_array()
        .unwrap();
    assert!(
        timeline
            .iter()
            .any(|event| event["type"] == "m.room.tombstone"
                && event["content"]["replacement_room"] == new),
        "{timeline:?}"
    );
    // Upgrading again is refused.
    server
        .post(&upgrade, &alice, json!({"new_version": "12"}))
        .await
        .assert_error(400, "M_BAD_STATE");

    // Bob joins the new room: his rule, tag and direct chat follow.
    server.join(&bob, &new).await;
    let rule = server
        .get(
            &format!("/_matrix/client/v3/pushrules/global/room/{new}"),
            &bob,
        )
        .await
        .assert_ok();
    assert_eq!(rule["actions"], json!([]));
    let tags = server
        .get(
            &format!(
                "/_matrix/client/v3/user/{}/rooms/{new}/tags",
                encode(&bob_id)
            ),
            &bob,
        )
        .await
        .assert_ok();
    assert_eq!(tags["tags"]["m.favourite"]["order"], 0.5);
    let direct = server
        .get(
            &format!(
                "/_matrix/client/v3/user/{}/account_data/m.direct",
                encode(&bob_id)
            ),
            &bob,
        )
        .await
        .assert_ok();
    assert_eq!(direct[&alice_id], json!([old, new]));

    // Back to an older version: the version 12 creator gets the highest level explicitly.
    let newer = server
        .post(
            &format!("/_matrix/client/v3/rooms/{new}/upgrade"),
            &alice,
            json!({"new_version": "11"}),
        )
        .await
        .assert_ok()["replacement_room"]
        .as_str()
        .unwrap()
        .to_owned();
    let levels = state(&server, &alice, &newer, "m.room.power_levels").await;
    assert_eq!(levels["users"][&alice_id], 100);
    assert_eq!(levels["users"][&bob_id], 20);
    assert_eq!(
        state(&server, &alice, &newer, "m.room.create").await["predecessor"]["room_id"],
        new
    );
}
