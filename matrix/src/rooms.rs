//! The room engine: builds local events, applies the authorization rules of the room's
//! version against the current state, persists them, and keeps each room's current state.
//!
//! Events of one room are appended in order under that room's lock; rooms are independent of
//! each other. The stream position is published after the commit, which wakes waiting syncs.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use ruma::canonical_json::{CanonicalJsonObject, CanonicalJsonValue};
use ruma::events::StateEventType;
use ruma::room_version_rules::RoomVersionRules;
use ruma::signatures::Ed25519KeyPair;
use ruma::{
    EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, OwnedServerName, RoomId,
    RoomVersionId, UserId,
};
use serde_json::Value;

use crate::error::Error;
use crate::pdu::{self, EventDraft, Pdu};
use crate::store::{NewEvent, Redacted, Relation, Standing, StateMap, Store};

mod inbound;
mod remote;
pub use inbound::Received;

/// At most this many forward extremities are referenced by a new event.
const MAX_PREV_EVENTS: usize = 20;

/// The greatest depth an event may have: the largest integer canonical JSON allows
/// (2^53 - 1).
pub const MAX_DEPTH: i64 = 9_007_199_254_740_991;

/// The current state of one room, kept in memory once loaded.
struct RoomCache {
    version: RoomVersionId,
    rules: RoomVersionRules,
    state: StateMap,
    state_group: i64,
    extremities: Vec<OwnedEventId>,
    depth: i64,
    /// The events of the current state, by id.
    state_events: HashMap<OwnedEventId, Arc<Pdu>>,
}

impl RoomCache {
    /// The events of the current state that authorise a new event: its auth events.
    fn auth_events(
        &self,
        event_type: &str,
        sender: &UserId,
        state_key: Option<&str>,
        content: &serde_json::value::RawValue,
    ) -> Result<Vec<OwnedEventId>, Error> {
        let types = ruma::state_res::auth_types_for_event(
            &event_type.into(),
            sender,
            state_key,
            content,
            &self.rules.authorization,
        )
        .map_err(Error::BadJson)?;
        let mut auth_events: Vec<OwnedEventId> = types
            .iter()
            .filter_map(|(kind, key)| self.state.get(&(kind.to_string(), key.clone())))
            .filter_map(|id| EventId::parse(id).ok())
            .collect();
        auth_events.sort();
        auth_events.dedup();
        Ok(auth_events)
    }
}

/// A local event to append to a room.
pub struct NewLocalEvent<'a> {
    pub sender: &'a UserId,
    pub event_type: &'a str,
    pub state_key: Option<&'a str>,
    pub content: CanonicalJsonObject,
    /// `(device id, transaction id)` of a client send, for idempotency.
    pub transaction: Option<(&'a str, &'a str)>,
    pub origin_server_ts: Option<MilliSecondsSinceUnixEpoch>,
}

impl<'a> NewLocalEvent<'a> {
    pub fn new(
        sender: &'a UserId,
        event_type: &'a str,
        state_key: Option<&'a str>,
        content: CanonicalJsonObject,
    ) -> Self {
        NewLocalEvent {
            sender,
            event_type,
            state_key,
            content,
            transaction: None,
            origin_server_ts: None,
        }
    }
}

/// What appending an event produced.
#[derive(Debug, Clone)]
pub struct Appended {
    pub event_id: OwnedEventId,
    pub stream_ordering: Option<i64>,
}

/// How many recent client transactions the engine remembers (see [`RecentTransactions`]).
const RECENT_TRANSACTIONS: usize = 1_000;

type TransactionKey = (String, String, String);

/// The transactions appended lately. Handlers look a transaction id up in the store before
/// they append; this catches the duplicate that raced past that look-up and waited for the
/// room lock while the first copy was appended.
#[derive(Default)]
struct RecentTransactions {
    events: HashMap<TransactionKey, OwnedEventId>,
    order: VecDeque<TransactionKey>,
}

impl RecentTransactions {
    fn remember(&mut self, key: TransactionKey, event_id: OwnedEventId) {
        if self.order.len() >= RECENT_TRANSACTIONS
            && let Some(oldest) = self.order.pop_front()
        {
            self.events.remove(&oldest);
        }
        self.order.push_back(key.clone());
        self.events.insert(key, event_id);
    }
}

/// The room engine.
pub struct Rooms {
    store: Store,
    server_name: OwnedServerName,
    key: Arc<Ed25519KeyPair>,
    rooms: std::sync::Mutex<HashMap<OwnedRoomId, Arc<tokio::sync::Mutex<Option<RoomCache>>>>>,
    recent_transactions: std::sync::Mutex<RecentTransactions>,
}

impl Rooms {
    pub fn new(store: Store, server_name: OwnedServerName, key: Arc<Ed25519KeyPair>) -> Rooms {
        Rooms {
            store,
            server_name,
            key,
            rooms: std::sync::Mutex::new(HashMap::new()),
            recent_transactions: std::sync::Mutex::default(),
        }
    }

    /// Drops the map entry of a room that failed to load (an unknown room id), so that
    /// requests naming random rooms do not grow the map.
    fn forget_unloaded(&self, room_id: &RoomId) {
        let mut rooms = self
            .rooms
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(entry) = rooms.get(room_id)
            && entry.try_lock().is_ok_and(|cache| cache.is_none())
        {
            rooms.remove(room_id);
        }
    }

    fn room_lock(&self, room_id: &RoomId) -> Arc<tokio::sync::Mutex<Option<RoomCache>>> {
        let mut rooms = self
            .rooms
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        rooms.entry(room_id.to_owned()).or_default().clone()
    }

    /// Takes a room's lock, with the room loaded.
    async fn locked(
        &self,
        room_id: &RoomId,
    ) -> Result<tokio::sync::OwnedMutexGuard<Option<RoomCache>>, Error> {
        let mut guard = self.room_lock(room_id).lock_owned().await;
        if guard.is_none() {
            match self.load(room_id).await {
                Ok(cache) => *guard = Some(cache),
                Err(error) => {
                    drop(guard);
                    self.forget_unloaded(room_id);
                    return Err(error);
                }
            }
        }
        Ok(guard)
    }

    /// Creates a room with its `m.room.create` event; returns the room id.
    pub async fn create_room(
        &self,
        creator: &UserId,
        version: &RoomVersionId,
        mut create_content: CanonicalJsonObject,
        is_public: bool,
    ) -> Result<OwnedRoomId, Error> {
        let rules = pdu::rules(version)?;
        create_content.insert(
            "room_version".into(),
            CanonicalJsonValue::String(version.to_string()),
        );
        if rules.authorization.use_room_create_sender {
            create_content.remove("creator");
        } else {
            create_content.insert(
                "creator".into(),
                CanonicalJsonValue::String(creator.to_string()),
            );
        }
        let random_room_id;
        let room_id_in_event = if rules.authorization.room_create_event_id_as_room_id {
            None
        } else {
            random_room_id = RoomId::new_v1(&self.server_name);
            Some(random_room_id.as_ref())
        };
        let create = pdu::build_event(
            EventDraft {
                room_id: room_id_in_event,
                sender: creator,
                event_type: "m.room.create",
                state_key: Some(""),
                content: create_content,
                prev_events: vec![],
                auth_events: vec![],
                depth: 1,
                origin_server_ts: MilliSecondsSinceUnixEpoch::now(),
            },
            &rules,
            self.server_name.as_str(),
            &self.key,
        )?;
        let room_id = create.room_id_or_derived()?;
        ruma::state_res::check_state_independent_auth_rules(
            &rules.authorization,
            &create,
            |_: &EventId| None::<Arc<Pdu>>,
        )
        .map_err(Error::Forbidden)?;
        self.store
            .create_room(
                room_id.as_str(),
                version.as_str(),
                creator.as_str(),
                is_public,
            )
            .await?;
        let lock = self.room_lock(&room_id);
        let mut guard = lock.lock().await;
        let mut cache = RoomCache {
            version: version.clone(),
            rules,
            state: StateMap::new(),
            state_group: 0,
            extremities: vec![],
            depth: 0,
            state_events: HashMap::new(),
        };
        self.persist(&room_id, &mut cache, create, None, None, None)
            .await?;
        *guard = Some(cache);
        Ok(room_id)
    }

    /// Appends a local event to a room after checking it against the authorization rules.
    pub async fn append(
        &self,
        room_id: &RoomId,
        event: NewLocalEvent<'_>,
    ) -> Result<Appended, Error> {
        let mut guard = self.locked(room_id).await?;
        let Some(cache) = guard.as_mut() else {
            return Err(Error::Internal("room cache vanished".into()));
        };
        let transaction_key = event
            .transaction
            .map(|(device, txn)| (event.sender.to_string(), device.to_owned(), txn.to_owned()));
        if let Some(key) = &transaction_key
            && let Some(event_id) = self
                .recent_transactions
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .events
                .get(key)
                .cloned()
        {
            return Ok(Appended {
                event_id,
                stream_ordering: None,
            });
        }
        let event_type = event.event_type;
        let redacts = redaction_target(&event)?;
        let pdu = self.build_local(room_id, cache, event)?;
        self.authorize(room_id, cache, &pdu)?;
        // What a redaction removes is computed now, so that it is stored with the redaction.
        let redacted = match &redacts {
            Some(target) => {
                self.check_redaction(room_id, cache, &pdu, target).await?;
                self.redacted(cache, target).await?
            }
            None => None,
        };
        let membership = pdu
            .content_value()
            .get("membership")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let stream_ordering = self
            .persist(
                room_id,
                cache,
                pdu.clone(),
                transaction_key.clone(),
                (event_type == "m.room.member")
                    .then_some(membership.as_deref())
                    .flatten(),
                redacted.as_ref(),
            )
            .await?;
        if let Some(key) = transaction_key {
            self.recent_transactions
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remember(key, pdu.event_id.clone());
        }
        if let Some(redacted) = redacted
            && let Some(entry) = cache.state_events.get_mut(&redacted.event_id)
        {
            *entry = Arc::new(redacted);
        }
        Ok(Appended {
            event_id: pdu.event_id,
            stream_ordering: Some(stream_ordering),
        })
    }

    /// A local event, built on the room's current state and signed, not yet stored: for an
    /// invite of another server's user, which that server signs too before it is stored.
    pub async fn build(&self, room_id: &RoomId, event: NewLocalEvent<'_>) -> Result<Pdu, Error> {
        let guard = self.locked(room_id).await?;
        let Some(cache) = guard.as_ref() else {
            return Err(Error::Internal("room cache vanished".into()));
        };
        let pdu = self.build_local(room_id, cache, event)?;
        self.authorize(room_id, cache, &pdu)?;
        Ok(pdu)
    }

    /// Builds, hashes and signs a local event on the room's current state.
    fn build_local(
        &self,
        room_id: &RoomId,
        cache: &RoomCache,
        event: NewLocalEvent<'_>,
    ) -> Result<Pdu, Error> {
        let content_raw = serde_json::value::to_raw_value(&event.content)
            .map_err(|e| Error::Internal(e.to_string()))?;
        let auth_events = cache.auth_events(
            event.event_type,
            event.sender,
            event.state_key,
            &content_raw,
        )?;
        let prev_events: Vec<OwnedEventId> = cache
            .extremities
            .iter()
            .take(MAX_PREV_EVENTS)
            .cloned()
            .collect();
        let event_type = event.event_type;
        if event_type == "m.room.create" {
            return Err(Error::Forbidden(
                "a room has only one m.room.create event".into(),
            ));
        }
        let pdu = pdu::build_event(
            EventDraft {
                room_id: Some(room_id),
                sender: event.sender,
                event_type,
                state_key: event.state_key,
                content: event.content,
                prev_events,
                auth_events,
                // One more than the events it follows, capped at the largest integer
                // canonical JSON has, so that no depth can make the room unwritable.
                depth: cache.depth.saturating_add(1).min(MAX_DEPTH),
                origin_server_ts: event
                    .origin_server_ts
                    .unwrap_or_else(MilliSecondsSinceUnixEpoch::now),
            },
            &cache.rules,
            self.server_name.as_str(),
            &self.key,
        )?;
        Ok(pdu)
    }

    fn authorize(&self, room_id: &RoomId, cache: &RoomCache, pdu: &Pdu) -> Result<(), Error> {
        let fetch_event = |id: &EventId| cache.state_events.get(id).cloned();
        ruma::state_res::check_state_independent_auth_rules(
            &cache.rules.authorization,
            pdu,
            fetch_event,
        )
        .map_err(Error::Forbidden)?;
        let fetch_state = |kind: &StateEventType, key: &str| {
            cache
                .state
                .get(&(kind.to_string(), key.to_owned()))
                .and_then(|id| EventId::parse(id).ok())
                .and_then(|id| cache.state_events.get(&id).cloned())
        };
        ruma::state_res::check_state_dependent_auth_rules(
            &cache.rules.authorization,
            pdu,
            fetch_state,
        )
        .map_err(|reason| {
            tracing::debug!(room_id = %room_id, event_type = %pdu.event_type, %reason, "event refused by the authorization rules");
            Error::Forbidden(reason)
        })
    }

    /// A redaction of someone else's event needs the `redact` power level.
    async fn check_redaction(
        &self,
        room_id: &RoomId,
        cache: &RoomCache,
        redaction: &Pdu,
        target: &EventId,
    ) -> Result<(), Error> {
        let Some(row) = self.store.event(target.as_str()).await? else {
            return Err(Error::NotFound(format!("event {target} not found")));
        };
        if row.room_id != room_id.as_str() {
            return Err(Error::NotFound(format!(
                "event {target} not found in this room"
            )));
        }
        if row.sender == redaction.sender.as_str() {
            return Ok(());
        }
        let levels = PowerLevels::from_state(cache);
        if levels.user(&redaction.sender) >= levels.redact {
            Ok(())
        } else {
            Err(Error::Forbidden(
                "you need a higher power level to redact other users' events".into(),
            ))
        }
    }

    /// The redacted form of an event, if it is stored.
    async fn redacted(&self, cache: &RoomCache, target: &EventId) -> Result<Option<Pdu>, Error> {
        let Some(row) = self.store.event(target.as_str()).await? else {
            return Ok(None);
        };
        let original = Pdu::from_stored(&row.event_id, &row.json)?;
        Ok(Some(pdu::redacted(&original, &cache.rules)?))
    }

    async fn persist(
        &self,
        room_id: &RoomId,
        cache: &mut RoomCache,
        pdu: Pdu,
        transaction: Option<(String, String, String)>,
        membership: Option<&str>,
        redacted: Option<&Pdu>,
    ) -> Result<i64, Error> {
        let new_event = NewEvent {
            membership: membership.map(str::to_owned),
            transaction,
            relation: Relation::of_content(&pdu.content_value()),
            redacts: redacted.map(|redacted| Redacted {
                event_id: redacted.event_id.to_string(),
                json: redacted.to_stored(),
            }),
            ..stored_event(room_id, &pdu, cache.state_group)
        };
        let mut writer = self.store.stream_writer().await;
        let persisted = self.store.persist_event(&mut writer, &new_event).await?;
        writer.publish();
        if let Some(group) = persisted.current_state_group {
            cache.state_group = group;
        }
        cache.depth = cache.depth.max(pdu.depth);
        // The event follows the extremities it references; any beyond those stay.
        cache
            .extremities
            .retain(|extremity| !pdu.prev_events.contains(extremity));
        cache.extremities.insert(0, pdu.event_id.clone());
        if let Some(state_key) = &pdu.state_key {
            let key = (pdu.event_type.to_string(), state_key.clone());
            if let Some(old) = cache.state.insert(key, pdu.event_id.to_string())
                && let Ok(old) = EventId::parse(&old)
            {
                cache.state_events.remove(&old);
            }
            cache
                .state_events
                .insert(pdu.event_id.clone(), Arc::new(pdu));
        }
        Ok(persisted.stream_ordering)
    }

    async fn load(&self, room_id: &RoomId) -> Result<RoomCache, Error> {
        let record = self
            .store
            .room(room_id.as_str())
            .await?
            .ok_or_else(|| Error::NotFound(format!("unknown room {room_id}")))?;
        let version = RoomVersionId::try_from(record.room_version.as_str())
            .map_err(|e| Error::Internal(format!("stored room version: {e}")))?;
        let rules = pdu::rules(&version)?;
        if record.current_state_group == 0 {
            return Err(Error::Internal(format!("room {room_id} has no state")));
        }
        let state = self.store.state_group(record.current_state_group).await?;
        let ids: Vec<String> = state.values().cloned().collect();
        let mut state_events = HashMap::new();
        for row in self.store.events(&ids).await? {
            let pdu = Pdu::from_row(&row)?;
            state_events.insert(pdu.event_id.clone(), Arc::new(pdu));
        }
        let extremities = self
            .store
            .forward_extremities(room_id.as_str())
            .await?
            .iter()
            .filter_map(|id| EventId::parse(id).ok())
            .collect();
        Ok(RoomCache {
            version,
            rules,
            state,
            state_group: record.current_state_group,
            extremities,
            depth: self.store.extremities_depth(room_id.as_str()).await?,
            state_events,
        })
    }

    async fn with_cache<T>(
        &self,
        room_id: &RoomId,
        read: impl FnOnce(&RoomCache) -> T,
    ) -> Result<T, Error> {
        let guard = self.locked(room_id).await?;
        match guard.as_ref() {
            Some(cache) => Ok(read(cache)),
            None => Err(Error::Internal("room cache vanished".into())),
        }
    }

    /// The event a client transaction id already produced.
    pub async fn transaction_event(
        &self,
        sender: &UserId,
        device: &str,
        txn: &str,
    ) -> Result<Option<OwnedEventId>, Error> {
        self.store
            .transaction_event(sender.as_str(), device, txn)
            .await?
            .map(|id| parse_event_id(&id))
            .transpose()
    }

    /// Whether the room exists on this server.
    pub async fn exists(&self, room_id: &RoomId) -> Result<bool, Error> {
        Ok(self.store.room(room_id.as_str()).await?.is_some())
    }

    /// The room's version.
    pub async fn version(&self, room_id: &RoomId) -> Result<RoomVersionId, Error> {
        self.with_cache(room_id, |cache| cache.version.clone())
            .await
    }

    /// The room's version rules.
    pub async fn rules(&self, room_id: &RoomId) -> Result<RoomVersionRules, Error> {
        self.with_cache(room_id, |cache| cache.rules.clone()).await
    }

    /// The events of the current state.
    pub async fn current_state(&self, room_id: &RoomId) -> Result<Vec<Arc<Pdu>>, Error> {
        self.with_cache(room_id, |cache| {
            cache.state_events.values().cloned().collect()
        })
        .await
    }

    /// One event of the current state.
    pub async fn state_event(
        &self,
        room_id: &RoomId,
        event_type: &str,
        state_key: &str,
    ) -> Result<Option<Arc<Pdu>>, Error> {
        self.with_cache(room_id, |cache| {
            cache
                .state
                .get(&(event_type.to_owned(), state_key.to_owned()))
                .and_then(|id| EventId::parse(id).ok())
                .and_then(|id| cache.state_events.get(&id).cloned())
        })
        .await
    }

    /// A user's membership in the current state of a room; `None` for an unknown room.
    pub async fn membership(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
    ) -> Result<Option<String>, Error> {
        let read = self
            .with_cache(room_id, |cache| {
                cache
                    .state
                    .get(&("m.room.member".to_owned(), user_id.to_string()))
                    .and_then(|id| EventId::parse(id).ok())
                    .and_then(|id| cache.state_events.get(&id))
                    .and_then(|pdu| {
                        pdu.content_value()
                            .get("membership")
                            .and_then(Value::as_str)
                            .map(str::to_owned)
                    })
            })
            .await;
        match read {
            Err(Error::NotFound(_)) => Ok(None),
            other => other,
        }
    }

    /// The power levels in the current state.
    pub async fn power_levels(&self, room_id: &RoomId) -> Result<PowerLevels, Error> {
        self.with_cache(room_id, PowerLevels::from_state).await
    }
}

/// The stored form of an event, with what only some events have left empty: no membership,
/// transaction, relation or redaction, accepted, no resolved state.
fn stored_event(room_id: &RoomId, pdu: &Pdu, before_group: i64) -> NewEvent {
    NewEvent {
        event_id: pdu.event_id.to_string(),
        room_id: room_id.to_string(),
        sender: pdu.sender.to_string(),
        event_type: pdu.event_type.to_string(),
        state_key: pdu.state_key.clone(),
        depth: pdu.depth,
        origin_server_ts: i64::try_from(u64::from(pdu.origin_server_ts.get())).unwrap_or(0),
        json: pdu.to_stored(),
        prev_events: pdu.prev_events.iter().map(ToString::to_string).collect(),
        state_group_before: before_group,
        membership: None,
        transaction: None,
        relation: None,
        redacts: None,
        redacts_later: None,
        redacted_by: None,
        standing: Standing::Accepted,
        resolved: None,
    }
}

/// The event a redaction redacts.
fn redaction_target(event: &NewLocalEvent<'_>) -> Result<Option<OwnedEventId>, Error> {
    if event.event_type != "m.room.redaction" {
        return Ok(None);
    }
    event
        .content
        .get("redacts")
        .and_then(CanonicalJsonValue::as_str)
        .map(EventId::parse)
        .transpose()
        .map_err(|e| Error::BadJson(format!("invalid redacts: {e}")))
}

fn parse_event_id(id: &str) -> Result<OwnedEventId, Error> {
    EventId::parse(id).map_err(|e| Error::Internal(format!("stored event id {id}: {e}")))
}

/// The parts of `m.room.power_levels` the server itself needs.
#[derive(Debug, Clone)]
pub struct PowerLevels {
    users: HashMap<String, i64>,
    users_default: i64,
    creators: Vec<String>,
    pub redact: i64,
    pub invite: i64,
    pub kick: i64,
    pub ban: i64,
    pub state_default: i64,
    pub events_default: i64,
    events: HashMap<String, i64>,
    /// The level needed to notify the whole room (`@room`).
    pub notify_room: i64,
}

impl PowerLevels {
    fn from_state(cache: &RoomCache) -> PowerLevels {
        PowerLevels::of_state(&cache.rules, |kind| {
            cache
                .state
                .get(&(kind.to_owned(), String::new()))
                .and_then(|id| EventId::parse(id).ok())
                .and_then(|id| cache.state_events.get(&id))
                .map(|pdu| &**pdu)
        })
    }

    /// The power levels of a room's state given as its events (of any moment, not only the
    /// current one).
    pub fn from_events(rules: &RoomVersionRules, state: &[Arc<Pdu>]) -> PowerLevels {
        PowerLevels::of_state(rules, |kind| {
            state
                .iter()
                .find(|pdu| {
                    pdu.event_type.to_string() == kind && pdu.state_key.as_deref() == Some("")
                })
                .map(|pdu| &**pdu)
        })
    }

    /// The power levels of a state whose event of each type (with the empty state key)
    /// `event` finds.
    fn of_state<'a>(
        rules: &RoomVersionRules,
        event: impl Fn(&str) -> Option<&'a Pdu>,
    ) -> PowerLevels {
        let content = |kind: &str| event(kind).map(|pdu| pdu.content_value());
        let create = content("m.room.create").unwrap_or(Value::Null);
        let create_sender = event("m.room.create").map(|pdu| pdu.sender.to_string());
        let mut creators = Vec::new();
        if rules.authorization.explicitly_privilege_room_creators {
            creators.extend(create_sender.clone());
            if let Some(additional) = create.get("additional_creators").and_then(Value::as_array) {
                creators.extend(
                    additional
                        .iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned),
                );
            }
        }
        let Some(levels) = content("m.room.power_levels") else {
            // Without power levels the creator has 100 and everyone else 0.
            let mut users = HashMap::new();
            let creator = if rules.authorization.use_room_create_sender {
                create_sender
            } else {
                create
                    .get("creator")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            };
            users.extend(creator.map(|creator| (creator, 100)));
            return PowerLevels {
                users,
                users_default: 0,
                creators,
                redact: 50,
                invite: 0,
                kick: 50,
                ban: 50,
                state_default: 0,
                events_default: 0,
                events: HashMap::new(),
                notify_room: 50,
            };
        };
        let number = |key: &str, default: i64| {
            levels
                .get(key)
                .and_then(|value| {
                    value
                        .as_i64()
                        .or_else(|| value.as_str().and_then(|text| text.parse().ok()))
                })
                .unwrap_or(default)
        };
        let map = |key: &str| -> HashMap<String, i64> {
            levels
                .get(key)
                .and_then(Value::as_object)
                .map(|object| {
                    object
                        .iter()
                        .filter_map(|(k, v)| v.as_i64().map(|v| (k.clone(), v)))
                        .collect()
                })
                .unwrap_or_default()
        };
        PowerLevels {
            users: map("users"),
            users_default: number("users_default", 0),
            creators,
            redact: number("redact", 50),
            invite: number("invite", 0),
            kick: number("kick", 50),
            ban: number("ban", 50),
            state_default: number("state_default", 50),
            events_default: number("events_default", 0),
            events: map("events"),
            notify_room: levels
                .get("notifications")
                .and_then(|n| n.get("room"))
                .and_then(Value::as_i64)
                .unwrap_or(50),
        }
    }

    /// A user's power level; room creators of version 12 rooms outrank everyone.
    pub fn user(&self, user_id: &UserId) -> i64 {
        if self
            .creators
            .iter()
            .any(|creator| creator == user_id.as_str())
        {
            return i64::MAX;
        }
        self.users
            .get(user_id.as_str())
            .copied()
            .unwrap_or(self.users_default)
    }

    /// The explicitly listed users and their levels.
    pub fn users(&self) -> impl Iterator<Item = (&str, i64)> {
        self.users
            .iter()
            .map(|(user, level)| (user.as_str(), *level))
    }

    pub fn users_default(&self) -> i64 {
        self.users_default
    }

    /// The room creators who outrank everyone (room version 12).
    pub fn creators(&self) -> &[String] {
        &self.creators
    }

    /// The level needed to send an event of a type.
    pub fn event(&self, event_type: &str, is_state: bool) -> i64 {
        self.events.get(event_type).copied().unwrap_or(if is_state {
            self.state_default
        } else {
            self.events_default
        })
    }
}
