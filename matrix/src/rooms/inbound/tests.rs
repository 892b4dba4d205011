//! Received events against the room graph: authorization, soft failure, forks and their
//! resolution, on both storage backends. Remote events are built and signed as another
//! server would, with prev events chosen to make the forks each case needs.

use std::sync::Arc;

use ruma::canonical_json::CanonicalJsonObject;
use ruma::signatures::Ed25519KeyPair;
use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, OwnedUserId, RoomVersionId, UInt,
    UserId, server_name,
};
use serde_json::{Value, json};

use super::Received;
use crate::pdu::{self, EventDraft, Pdu, canonical_content};
use crate::rooms::{NewLocalEvent, Rooms};
use crate::store::testing::both_backends;
use crate::store::{Direction, Store};

/// Before any local event of a test (local events are stamped now).
const BASE_TS: u64 = 1_600_000_000_000;

fn key(version: &str) -> Ed25519KeyPair {
    let document = Ed25519KeyPair::generate();
    Ed25519KeyPair::from_der(&document, version.into()).unwrap()
}

fn user(id: &str) -> OwnedUserId {
    UserId::parse(id).unwrap()
}

/// An event of `there.test` to build: by default it follows the room's forward extremities
/// and is stamped at [`BASE_TS`].
struct Draft<'a> {
    sender: &'a UserId,
    kind: &'a str,
    state_key: Option<&'a str>,
    content: Value,
    prev: Option<Vec<OwnedEventId>>,
    ts_offset: u64,
}

impl<'a> Draft<'a> {
    fn new(sender: &'a UserId, kind: &'a str, state_key: Option<&'a str>, content: Value) -> Self {
        Draft {
            sender,
            kind,
            state_key,
            content,
            prev: None,
            ts_offset: 0,
        }
    }

    /// Following these events rather than the room's extremities.
    fn after(mut self, prev: Vec<OwnedEventId>) -> Self {
        self.prev = Some(prev);
        self
    }

    /// Stamped this many milliseconds after [`BASE_TS`].
    fn at(mut self, ts_offset: u64) -> Self {
        self.ts_offset = ts_offset;
        self
    }
}

/// A room on `here.test` with alice (creator, 100) and bob of `there.test` (100) joined.
struct World {
    store: Store,
    rooms: Rooms,
    room: OwnedRoomId,
    version: RoomVersionId,
    remote: Ed25519KeyPair,
    alice: OwnedUserId,
    bob: OwnedUserId,
}

impl World {
    async fn new(store: Store, version: RoomVersionId) -> World {
        let rooms = Rooms::new(
            store.clone(),
            server_name!("here.test").to_owned(),
            Arc::new(key("local")),
        );
        let alice = user("@alice:here.test");
        let bob = user("@bob:there.test");
        let room = rooms
            .create_room(&alice, &version, CanonicalJsonObject::new(), true)
            .await
            .unwrap();
        let mut world = World {
            store,
            rooms,
            room,
            version,
            remote: key("remote"),
            alice: alice.clone(),
            bob: bob.clone(),
        };
        world
            .local(
                &alice,
                "m.room.member",
                Some(alice.as_str()),
                json!({"membership": "join"}),
            )
            .await;
        let mut users = json!({ bob.as_str(): 100 });
        if world.version != RoomVersionId::V12 {
            users[alice.as_str()] = json!(100);
        }
        world
            .local(
                &alice,
                "m.room.power_levels",
                Some(""),
                json!({"users": users}),
            )
            .await;
        world
            .local(
                &alice,
                "m.room.join_rules",
                Some(""),
                json!({"join_rule": "public"}),
            )
            .await;
        let join = world
            .remote(
                Draft::new(
                    &bob,
                    "m.room.member",
                    Some(bob.as_str()),
                    json!({"membership": "join"}),
                )
                .at(0),
            )
            .await;
        let received = world.receive(join).await;
        assert!(
            matches!(received, Received::Accepted { .. }),
            "{received:?}"
        );
        world.bob = bob;
        world
    }

    async fn local(
        &mut self,
        sender: &UserId,
        kind: &str,
        state_key: Option<&str>,
        content: Value,
    ) -> OwnedEventId {
        self.rooms
            .append(
                &self.room,
                NewLocalEvent::new(sender, kind, state_key, canonical_content(content).unwrap()),
            )
            .await
            .unwrap()
            .event_id
    }

    /// A user of `there.test` joins at the room's extremities.
    async fn join_remote(&self, user_id: &UserId) {
        let join = self
            .remote(
                Draft::new(
                    user_id,
                    "m.room.member",
                    Some(user_id.as_str()),
                    json!({"membership": "join"}),
                )
                .at(1),
            )
            .await;
        let received = self.receive(join).await;
        assert!(
            matches!(received, Received::Accepted { .. }),
            "{received:?}"
        );
    }

    /// The room's forward extremities.
    async fn tips(&self) -> Vec<OwnedEventId> {
        self.extremities()
            .await
            .iter()
            .map(|id| ruma::EventId::parse(id).unwrap())
            .collect()
    }

    /// An event of `there.test` as the draft describes it, its auth events chosen from the
    /// state after its prev events.
    async fn remote(&self, draft: Draft<'_>) -> Pdu {
        let Draft {
            sender,
            kind,
            state_key,
            content,
            prev,
            ts_offset,
        } = draft;
        let prev = match prev {
            Some(prev) => prev,
            None => self.tips().await,
        };
        let mut state = crate::store::StateMap::new();
        let mut depth = 0;
        for id in &prev {
            let row = self.store.event(id.as_str()).await.unwrap().unwrap();
            depth = depth.max(row.depth);
            state.extend(self.store.state_group(row.state_group).await.unwrap());
        }
        let content = canonical_content(content).unwrap();
        let raw = serde_json::value::to_raw_value(&content).unwrap();
        let rules = pdu::rules(&self.version).unwrap();
        let types = ruma::state_res::auth_types_for_event(
            &kind.into(),
            sender,
            state_key,
            &raw,
            &rules.authorization,
        )
        .unwrap();
        let mut auth: Vec<OwnedEventId> = types
            .iter()
            .filter_map(|(kind, key)| state.get(&(kind.to_string(), key.clone())))
            .map(|id| ruma::EventId::parse(id).unwrap())
            .collect();
        auth.sort();
        auth.dedup();
        pdu::build_event(
            EventDraft {
                room_id: Some(&self.room),
                sender,
                event_type: kind,
                state_key,
                content,
                prev_events: prev,
                auth_events: auth,
                depth: depth + 1,
                origin_server_ts: MilliSecondsSinceUnixEpoch(
                    UInt::new(BASE_TS + ts_offset).unwrap(),
                ),
            },
            &rules,
            "there.test",
            &self.remote,
        )
        .unwrap()
    }

    async fn receive(&self, pdu: Pdu) -> Received {
        self.rooms.receive_pdu(&self.room, pdu).await.unwrap()
    }

    async fn extremities(&self) -> Vec<String> {
        self.store
            .forward_extremities(self.room.as_str())
            .await
            .unwrap()
    }

    async fn state_content(&self, kind: &str, state_key: &str) -> Value {
        self.rooms
            .state_event(&self.room, kind, state_key)
            .await
            .unwrap()
            .map(|pdu| pdu.content_value())
            .unwrap_or(Value::Null)
    }

    async fn membership(&self, user_id: &str) -> Option<String> {
        self.store
            .membership(self.room.as_str(), user_id)
            .await
            .unwrap()
    }

    /// The ids of the events a client would see, oldest first.
    async fn shown(&self) -> Vec<String> {
        let mut rows = self
            .store
            .room_events(self.room.as_str(), 0, i64::MAX, Direction::Forward, 1000)
            .await
            .unwrap();
        rows.sort_by_key(|row| row.stream_ordering);
        rows.into_iter().map(|row| row.event_id).collect()
    }

    /// A fresh engine on the same store: what survives a restart.
    fn restarted(&self) -> Rooms {
        Rooms::new(
            self.store.clone(),
            server_name!("here.test").to_owned(),
            Arc::new(key("local")),
        )
    }
}

both_backends!(remote_events_take_their_place, |store: Store| async move {
    let world = World::new(store, RoomVersionId::V10).await;
    assert_eq!(
        world.membership(world.bob.as_str()).await.as_deref(),
        Some("join")
    );
    let message = world
        .remote(Draft::new(&world.bob, "m.room.message", None, json!({"body": "hi"})).at(5))
        .await;
    let id = message.event_id.to_string();
    assert!(matches!(
        world.receive(message.clone()).await,
        Received::Accepted { .. }
    ));
    assert_eq!(world.receive(message).await, Received::Known);
    assert!(world.shown().await.contains(&id));
    assert_eq!(world.extremities().await, [id]);
});

both_backends!(
    unknown_prev_and_auth_events_are_asked_for,
    |store: Store| async move {
        let world = World::new(store, RoomVersionId::V10).await;
        let ghost = ruma::EventId::parse("$unknownevent").unwrap();
        let mut draft = world
            .remote(Draft::new(&world.bob, "m.room.message", None, json!({"body": "x"})).at(1))
            .await;
        let rules = pdu::rules(&world.version).unwrap();
        let mut json = draft.json.clone();
        json.insert(
            "prev_events".into(),
            ruma::canonical_json::CanonicalJsonValue::Array(vec![ghost.to_string().into()]),
        );
        json.remove("signatures");
        json.remove("hashes");
        ruma::signatures::hash_and_sign_event(
            "there.test",
            &world.remote,
            &mut json,
            &rules.redaction,
        )
        .unwrap();
        let hash = ruma::signatures::reference_hash(&json, &rules).unwrap();
        draft = Pdu::from_json(ruma::EventId::new_v2_or_v3(&hash).unwrap(), json).unwrap();
        assert_eq!(
            world.receive(draft.clone()).await,
            Received::Missing {
                prev_events: vec![ghost],
                auth_events: vec![]
            }
        );
        // Nothing was stored: the event is asked for again once its past is known.
        assert!(
            world
                .store
                .event(draft.event_id.as_str())
                .await
                .unwrap()
                .is_none()
        );
    }
);

both_backends!(
    events_failing_their_auth_events_are_rejected,
    |store: Store| async move {
        let world = World::new(store, RoomVersionId::V10).await;
        let mallory = user("@mallory:there.test");
        let message = world
            .remote(Draft::new(&mallory, "m.room.message", None, json!({"body": "spam"})).at(1))
            .await;
        let id = message.event_id.to_string();
        assert!(matches!(
            world.receive(message).await,
            Received::Rejected(_)
        ));
        assert!(!world.shown().await.contains(&id));
        assert!(!world.extremities().await.contains(&id));
        // Stored as rejected, so that it is not fetched again.
        let row = world.store.event(&id).await.unwrap().unwrap();
        assert!(row.rejected_reason.is_some());
    }
);

/// A join that raced a change of the room that would have refused it: allowed by the state
/// before it, refused by the current state, so soft-failed.
async fn join_racing(store: Store, change: (&str, Value)) {
    let mut world = World::new(store, RoomVersionId::V10).await;
    let carol = user("@carol:there.test");
    let before = world.tips().await;
    let alice = world.alice.clone();
    let (kind, content) = change;
    let state_key = if kind == "m.room.member" {
        carol.to_string()
    } else {
        String::new()
    };
    world.local(&alice, kind, Some(&state_key), content).await;
    let join = world
        .remote(
            Draft::new(
                &carol,
                "m.room.member",
                Some(carol.as_str()),
                json!({"membership": "join"}),
            )
            .after(before)
            .at(1),
        )
        .await;
    let id = join.event_id.to_string();
    assert!(matches!(world.receive(join).await, Received::SoftFailed(_)));
    assert_ne!(
        world.membership(carol.as_str()).await.as_deref(),
        Some("join")
    );
    assert!(!world.shown().await.contains(&id));
    assert!(!world.extremities().await.contains(&id));
}

both_backends!(
    a_ban_racing_a_join_soft_fails_the_join,
    |store: Store| async move {
        join_racing(store, ("m.room.member", json!({"membership": "ban"}))).await;
    }
);

both_backends!(
    a_join_rule_change_racing_a_join_soft_fails_it,
    |store: Store| async move {
        join_racing(store, ("m.room.join_rules", json!({"join_rule": "invite"}))).await;
    }
);

/// Two topics set at once on two servers: both accepted, the room forks, and the resolved
/// topic is the later one (equal power: then by timestamp). A new local event joins the forks.
async fn concurrent_topics(store: Store, remote_later: bool) {
    let mut world = World::new(store, RoomVersionId::V10).await;
    let before: Vec<OwnedEventId> = world.tips().await;
    let alice = world.alice.clone();
    let bob = world.bob.clone();
    // The local topic is stamped now, far from the fixed time of the remote one.
    let local = world
        .local(&alice, "m.room.topic", Some(""), json!({"topic": "local"}))
        .await;
    let offset = if remote_later { 10_000_000_000_000 } else { 0 };
    let remote = world
        .remote(
            Draft::new(&bob, "m.room.topic", Some(""), json!({"topic": "remote"}))
                .after(before)
                .at(offset),
        )
        .await;
    let remote_id = remote.event_id.to_string();
    assert!(matches!(
        world.receive(remote).await,
        Received::Accepted { .. }
    ));
    let mut extremities = world.extremities().await;
    extremities.sort();
    let mut expected = vec![local.to_string(), remote_id.clone()];
    expected.sort();
    assert_eq!(extremities, expected);
    let topic = if remote_later { "remote" } else { "local" };
    assert_eq!(
        world.state_content("m.room.topic", "").await["topic"],
        topic
    );
    // Both forks are shown; the resolved state survives a restart.
    assert!(world.shown().await.contains(&remote_id));
    let restarted = world.restarted();
    let again = restarted
        .state_event(&world.room, "m.room.topic", "")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.content_value()["topic"], topic);
    // The next local event follows both forks.
    let message = world
        .local(&alice, "m.room.message", None, json!({"body": "merge"}))
        .await;
    assert_eq!(world.extremities().await, [message.to_string()]);
    let row = world.store.event(message.as_str()).await.unwrap().unwrap();
    let pdu = Pdu::from_row(&row).unwrap();
    assert_eq!(pdu.prev_events.len(), 2);
    assert_eq!(
        world.state_content("m.room.topic", "").await["topic"],
        topic
    );
}

both_backends!(
    concurrent_topics_resolve_to_the_later,
    |store: Store| async move {
        concurrent_topics(store, true).await;
    }
);

both_backends!(
    concurrent_topics_keep_the_later_local_one,
    |store: Store| async move {
        concurrent_topics(store, false).await;
    }
);

both_backends!(concurrent_power_level_changes, |store: Store| async move {
    let mut world = World::new(store, RoomVersionId::V10).await;
    let before: Vec<OwnedEventId> = world.tips().await;
    let alice = world.alice.clone();
    let bob = world.bob.clone();
    let levels =
        |extra: &str| json!({"users": {alice.as_str(): 100, bob.as_str(): 100, extra: 50}});
    world
        .local(
            &alice,
            "m.room.power_levels",
            Some(""),
            levels("@dave:here.test"),
        )
        .await;
    // Bob's change, made without seeing Alice's, later: both are allowed, the later wins.
    let remote = world
        .remote(
            Draft::new(
                &bob,
                "m.room.power_levels",
                Some(""),
                levels("@carol:there.test"),
            )
            .after(before.clone())
            .at(10_000_000_000_000),
        )
        .await;
    let received = world.receive(remote).await;
    assert!(
        matches!(received, Received::Accepted { .. }),
        "{received:?}"
    );
    let users = world.state_content("m.room.power_levels", "").await["users"].clone();
    assert_eq!(users["@carol:there.test"], 50);
    assert!(users.get("@dave:here.test").is_none());

    // Carol (50 now) joins and sets the topic while Alice demotes her: the topic is allowed
    // by the state before it, refused by the current state.
    let carol = user("@carol:there.test");
    world.join_remote(&carol).await;
    let before: Vec<OwnedEventId> = world.tips().await;
    world
        .local(
            &alice,
            "m.room.power_levels",
            Some(""),
            json!({"users": {alice.as_str(): 100, bob.as_str(): 100}}),
        )
        .await;
    let topic = world
        .remote(
            Draft::new(
                &carol,
                "m.room.topic",
                Some(""),
                json!({"topic": "carol's"}),
            )
            .after(before)
            .at(2),
        )
        .await;
    let received = world.receive(topic).await;
    assert!(matches!(received, Received::SoftFailed(_)), "{received:?}");
    assert_eq!(world.state_content("m.room.topic", "").await, Value::Null);
    let users = world.state_content("m.room.power_levels", "").await["users"].clone();
    assert!(users.get(carol.as_str()).is_none());
});

both_backends!(
    memberships_follow_the_resolved_state,
    |store: Store| async move {
        let mut world = World::new(store, RoomVersionId::V10).await;
        let carol = user("@carol:there.test");
        world.join_remote(&carol).await;
        let before: Vec<OwnedEventId> = world.tips().await;
        let alice = world.alice.clone();
        world
            .local(&alice, "m.room.topic", Some(""), json!({"topic": "t"}))
            .await;
        // Carol leaves on her fork: the resolution keeps both the topic and her leave.
        let leave = world
            .remote(
                Draft::new(
                    &carol,
                    "m.room.member",
                    Some(carol.as_str()),
                    json!({"membership": "leave"}),
                )
                .after(before)
                .at(2),
            )
            .await;
        assert!(matches!(
            world.receive(leave).await,
            Received::Accepted { .. }
        ));
        assert_eq!(
            world.membership(carol.as_str()).await.as_deref(),
            Some("leave")
        );
        assert_eq!(
            world
                .rooms
                .membership(&world.room, &carol)
                .await
                .unwrap()
                .as_deref(),
            Some("leave")
        );
        assert_eq!(world.state_content("m.room.topic", "").await["topic"], "t");
    }
);

both_backends!(
    version_12_creators_cannot_be_banned,
    |store: Store| async move {
        let world = World::new(store, RoomVersionId::V12).await;
        let alice = world.alice.clone();
        let bob = world.bob.clone();
        let ban = world
            .remote(
                Draft::new(
                    &bob,
                    "m.room.member",
                    Some(alice.as_str()),
                    json!({"membership": "ban"}),
                )
                .at(1),
            )
            .await;
        assert!(matches!(world.receive(ban).await, Received::Rejected(_)));
        assert_eq!(
            world.membership(alice.as_str()).await.as_deref(),
            Some("join")
        );
        // Bob's power still lets him change the topic.
        let topic = world
            .remote(Draft::new(&bob, "m.room.topic", Some(""), json!({"topic": "v12"})).at(2))
            .await;
        assert!(matches!(
            world.receive(topic).await,
            Received::Accepted { .. }
        ));
        assert_eq!(
            world.state_content("m.room.topic", "").await["topic"],
            "v12"
        );
    }
);

both_backends!(
    an_event_of_another_room_is_refused,
    |store: Store| async move {
        let world = World::new(store.clone(), RoomVersionId::V10).await;
        let other = World::new(store, RoomVersionId::V10).await;
        let message = other
            .remote(Draft::new(&other.bob, "m.room.message", None, json!({"body": "x"})).at(1))
            .await;
        assert!(matches!(
            world.rooms.receive_pdu(&world.room, message).await,
            Err(crate::error::Error::BadJson(_))
        ));
    }
);
