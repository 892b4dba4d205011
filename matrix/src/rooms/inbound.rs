//! Events from other servers. The checks on receipt of a PDU that need the room run here,
//! under the room's lock and without the network: authorization against the event's own
//! auth events (else rejected), against the state before it, the resolution of the states
//! after its prev events (else rejected), and against the room's current state (else
//! soft-failed). An accepted event becomes a forward extremity in place of the events it
//! follows, and the room's current state becomes the resolution of the states after all its
//! extremities. Format, signatures and content hashes are checked before, by the caller.

use std::collections::HashMap;
use std::sync::Arc;

use ruma::events::StateEventType;
use ruma::room_version_rules::RoomVersionRules;
use ruma::{EventId, OwnedEventId, RoomId};
use serde_json::Value;

use super::{RoomCache, Rooms};
use crate::error::Error;
use crate::pdu::Pdu;
use crate::resolve::{self, Known};
use crate::store::{
    EventRow, NewEvent, Redacted, Relation, ResolvedState, Standing, StateChange, StateKey,
    StateMap,
};

/// What became of a received event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// Part of the room now, at this stream position.
    Accepted { stream_ordering: i64 },
    /// Allowed by the state before it, not by the room's current state: kept in the graph,
    /// shown to nobody.
    SoftFailed(String),
    /// Refused by the authorization rules: kept as rejected, never used.
    Rejected(String),
    /// Already stored.
    Known,
    /// Events it refers to are not stored; the caller fetches them and tries again.
    Missing {
        prev_events: Vec<OwnedEventId>,
        auth_events: Vec<OwnedEventId>,
    },
}

/// An event and state, read by `(type, state_key)`.
pub(super) type StateEvents = HashMap<StateKey, Arc<Pdu>>;

impl Rooms {
    /// Takes an event of another server into a room that this server knows.
    pub async fn receive_pdu(&self, room_id: &RoomId, pdu: Pdu) -> Result<Received, Error> {
        self.receive_at_gap(room_id, pdu, Vec::new()).await
    }

    /// Takes an event of another server whose prev events are not all here with their state
    /// (missing, or known only as outliers): `gap_states` are the states after those, as
    /// another server told (the state before each and the event itself), and stand in for
    /// them when the state before the event is resolved. Its auth events must be stored.
    pub async fn receive_at_gap(
        &self,
        room_id: &RoomId,
        pdu: Pdu,
        gap_states: Vec<StateMap>,
    ) -> Result<Received, Error> {
        if pdu.room_id_or_derived()? != room_id {
            return Err(Error::BadJson(format!(
                "event {} is not in room {room_id}",
                pdu.event_id
            )));
        }
        let mut guard = self.locked(room_id).await?;
        let Some(cache) = guard.as_mut() else {
            return Err(Error::Internal("room cache vanished".into()));
        };
        if self.store.event(pdu.event_id.as_str()).await?.is_some() {
            return Ok(Received::Known);
        }

        // The events it refers to, all of which must be stored and in this room.
        let referenced: Vec<String> = pdu
            .prev_events
            .iter()
            .chain(&pdu.auth_events)
            .map(ToString::to_string)
            .collect();
        let rows: HashMap<String, EventRow> = self
            .store
            .events(&referenced)
            .await?
            .into_iter()
            .filter(|row| row.room_id == room_id.as_str())
            .map(|row| (row.event_id.clone(), row))
            .collect();
        let absent = |ids: &[OwnedEventId]| -> Vec<OwnedEventId> {
            ids.iter()
                .filter(|id| !rows.contains_key(id.as_str()))
                .cloned()
                .collect()
        };
        // A prev event known without its state (an outlier, a backfilled event) counts as
        // missing: the state after it is not known here.
        let prev_missing: Vec<OwnedEventId> = pdu
            .prev_events
            .iter()
            .filter(|id| rows.get(id.as_str()).is_none_or(|row| row.state_group == 0))
            .cloned()
            .collect();
        let auth_missing = absent(&pdu.auth_events);
        if !auth_missing.is_empty() || (!prev_missing.is_empty() && gap_states.is_empty()) {
            return Ok(Received::Missing {
                prev_events: prev_missing,
                auth_events: auth_missing,
            });
        }
        let mut auth_events: Known = HashMap::new();
        // Room version 12 names no create event: the room id is its id.
        if let Some(create) = cache
            .state
            .get(&("m.room.create".to_owned(), String::new()))
            .and_then(|id| EventId::parse(id).ok())
            .and_then(|id| cache.state_events.get(&id))
        {
            auth_events.insert(create.event_id.clone(), create.clone());
        }
        for id in &pdu.auth_events {
            if let Some(row) = rows.get(id.as_str()) {
                auth_events.insert(id.clone(), Arc::new(Pdu::from_row(row)?));
            }
        }

        // Against its own auth events.
        let own: StateEvents = auth_events
            .values()
            .filter_map(|auth| {
                Some((
                    (auth.event_type.to_string(), auth.state_key.clone()?),
                    auth.clone(),
                ))
            })
            .collect();
        if let Err(reason) = check(&cache.rules, &pdu, &auth_events, &own) {
            return self
                .keep_refused(
                    room_id,
                    &pdu,
                    0,
                    Standing::Rejected(reason.clone()),
                    Received::Rejected(reason),
                )
                .await;
        }

        // Against the state before it: the resolution of the states after its prev events.
        let mut prev_states: Vec<(i64, StateMap)> = Vec::new();
        for id in &pdu.prev_events {
            if let Some(row) = rows.get(id.as_str())
                && row.state_group != 0
            {
                prev_states.push((
                    row.state_group,
                    self.store.state_group(row.state_group).await?,
                ));
            }
        }
        // States at a gap have no group yet (0): written below if the resolution is one.
        prev_states.extend(gap_states.into_iter().map(|state| (0, state)));
        if prev_states.is_empty() {
            return Err(Error::BadJson(format!(
                "event {} follows no event",
                pdu.event_id
            )));
        }
        // The events of the current state, and (below) the event itself: what resolution and
        // the new current state need without reading the store.
        let mut known: Known = cache.state_events.clone();
        let before = resolve::resolve(
            &self.store,
            &cache.rules,
            &prev_states
                .iter()
                .map(|(_, state)| state)
                .collect::<Vec<_>>(),
            &known,
        )
        .await?;
        let before_group = match prev_states
            .iter()
            .find(|(group, state)| *group != 0 && *state == before)
        {
            Some((group, _)) => *group,
            None => {
                let (base_group, base) = &prev_states[0];
                self.write_state(room_id, &before, *base_group, base)
                    .await?
            }
        };
        let before_events = self
            .state_events(&before, &pdu, &cache.rules, &known)
            .await?;
        if let Err(reason) = check(&cache.rules, &pdu, &auth_events, &before_events) {
            return self
                .keep_refused(
                    room_id,
                    &pdu,
                    before_group,
                    Standing::Rejected(reason.clone()),
                    Received::Rejected(reason),
                )
                .await;
        }

        // Against the room's current state.
        let current_events = self
            .state_events(&cache.state, &pdu, &cache.rules, &known)
            .await?;
        if let Err(reason) = check(&cache.rules, &pdu, &auth_events, &current_events) {
            return self
                .keep_refused(
                    room_id,
                    &pdu,
                    before_group,
                    Standing::SoftFailed,
                    Received::SoftFailed(reason),
                )
                .await;
        }

        // Accepted: the room's extremities and its current state.
        let mut extremities: Vec<OwnedEventId> = cache
            .extremities
            .iter()
            .filter(|id| !pdu.prev_events.contains(id))
            .cloned()
            .collect();
        let mut after = before;
        if let Some(state_key) = &pdu.state_key {
            after.insert(
                (pdu.event_type.to_string(), state_key.clone()),
                pdu.event_id.to_string(),
            );
        }
        known.insert(pdu.event_id.clone(), Arc::new(pdu.clone()));
        let (current, resolved) = if extremities.is_empty() {
            (after, None)
        } else {
            let others: Vec<String> = extremities.iter().map(ToString::to_string).collect();
            let mut states = Vec::new();
            for row in self.store.events(&others).await? {
                states.push(self.store.state_group(row.state_group).await?);
            }
            states.push(after);
            let current = resolve::resolve(
                &self.store,
                &cache.rules,
                &states.iter().collect::<Vec<_>>(),
                &known,
            )
            .await?;
            let changes = self.changes(cache, &current, &known).await?;
            let group = self
                .write_state(room_id, &current, cache.state_group, &cache.state)
                .await?;
            (current, Some(ResolvedState { group, changes }))
        };
        let content = pdu.content_value();
        let membership = (pdu.event_type.to_string() == "m.room.member")
            .then(|| {
                content
                    .get("membership")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .flatten();
        let redacted = self.remote_redaction(room_id, cache, &pdu).await?;
        // A redaction of an event not here yet waits for it; an event a redaction taken
        // earlier redacts is stored redacted.
        let redacts_later = match (&redacted, &pdu.redacts) {
            (None, Some(target))
                if pdu.event_type.to_string() == "m.room.redaction"
                    && self.store.event(target.as_str()).await?.is_none() =>
            {
                Some(target.to_string())
            }
            _ => None,
        };
        let late = self.late_redaction(room_id, cache, &pdu).await?;
        let stored = match &late {
            Some((_, redacted_form)) => redacted_form,
            None => &pdu,
        };
        let new_event = NewEvent {
            standing: Standing::Accepted,
            resolved,
            membership,
            relation: Relation::of_content(&stored.content_value()),
            redacts: redacted.as_ref().map(|redacted| Redacted {
                event_id: redacted.event_id.to_string(),
                json: redacted.to_stored(),
            }),
            redacts_later,
            redacted_by: late.as_ref().map(|(redaction, _)| redaction.clone()),
            ..super::stored_event(room_id, stored, before_group)
        };
        let mut writer = self.store.stream_writer().await;
        let persisted = self.store.persist_event(&mut writer, &new_event).await?;
        writer.publish();

        extremities.insert(0, pdu.event_id.clone());
        cache.extremities = extremities;
        cache.depth = cache.depth.max(pdu.depth);
        if let Some(group) = persisted.current_state_group {
            cache.state_group = group;
        }
        let ids: Vec<String> = current
            .values()
            .filter(|id| EventId::parse(id).is_ok_and(|id| !known.contains_key(&id)))
            .cloned()
            .collect();
        for row in self.store.events(&ids).await? {
            let loaded = Pdu::from_row(&row)?;
            known.insert(loaded.event_id.clone(), Arc::new(loaded));
        }
        cache.state_events = current
            .values()
            .filter_map(|id| EventId::parse(id).ok())
            .filter_map(|id| known.get(&id).map(|pdu| (id, pdu.clone())))
            .collect();
        if let Some(redacted) = redacted
            && let Some(entry) = cache.state_events.get_mut(&redacted.event_id)
        {
            *entry = Arc::new(redacted);
        }
        cache.state = current;
        Ok(Received::Accepted {
            stream_ordering: persisted.stream_ordering,
        })
    }

    /// The redacted form of the target of an accepted redaction, when the redaction takes
    /// effect: the target is stored, in this room, and its sender's server is the redacting
    /// user's or the redacting user has the power to redact (from room version 3 the
    /// authorization rules leave this check to the server applying the redaction). A
    /// redaction that does not take effect stays an event, redacting nothing.
    async fn remote_redaction(
        &self,
        room_id: &RoomId,
        cache: &RoomCache,
        pdu: &Pdu,
    ) -> Result<Option<Pdu>, Error> {
        if pdu.event_type.to_string() != "m.room.redaction" {
            return Ok(None);
        }
        let Some(target) = &pdu.redacts else {
            return Ok(None);
        };
        let Some(row) = self.store.event(target.as_str()).await? else {
            return Ok(None);
        };
        if row.room_id != room_id.as_str() {
            return Ok(None);
        }
        let same_server = ruma::UserId::parse(row.sender.as_str())
            .is_ok_and(|sender| sender.server_name() == pdu.sender.server_name());
        let levels = super::PowerLevels::from_state(cache);
        if !same_server && levels.user(&pdu.sender) < levels.redact {
            return Ok(None);
        }
        self.redacted(cache, target).await
    }

    /// The redaction, taken before `pdu` arrived, that takes effect on it (with `pdu`'s
    /// redacted form): under the same rule as a redaction of an event already here.
    async fn late_redaction(
        &self,
        room_id: &RoomId,
        cache: &RoomCache,
        pdu: &Pdu,
    ) -> Result<Option<(String, Pdu)>, Error> {
        let waiting = self
            .store
            .pending_redactions(room_id.as_str(), pdu.event_id.as_str())
            .await?;
        let levels = super::PowerLevels::from_state(cache);
        for redaction_id in waiting {
            let Some(row) = self.store.event(&redaction_id).await? else {
                continue;
            };
            let Ok(sender) = ruma::UserId::parse(row.sender.as_str()) else {
                continue;
            };
            if sender.server_name() == pdu.sender.server_name()
                || levels.user(&sender) >= levels.redact
            {
                return Ok(Some((
                    redaction_id,
                    crate::pdu::redacted(pdu, &cache.rules)?,
                )));
            }
        }
        Ok(None)
    }

    /// Stores an event that does not take its place in the room.
    async fn keep_refused(
        &self,
        room_id: &RoomId,
        pdu: &Pdu,
        before_group: i64,
        standing: Standing,
        outcome: Received,
    ) -> Result<Received, Error> {
        tracing::debug!(room_id = %room_id, event_id = %pdu.event_id, ?outcome, "received event not accepted");
        let new_event = NewEvent {
            standing,
            ..super::stored_event(room_id, pdu, before_group)
        };
        let mut writer = self.store.stream_writer().await;
        self.store.persist_event(&mut writer, &new_event).await?;
        writer.publish();
        Ok(outcome)
    }

    /// The events of `state` that the authorization rules read for `pdu`.
    pub(super) async fn state_events(
        &self,
        state: &StateMap,
        pdu: &Pdu,
        rules: &RoomVersionRules,
        known: &Known,
    ) -> Result<StateEvents, Error> {
        let types = ruma::state_res::auth_types_for_event(
            &pdu.event_type,
            &pdu.sender,
            pdu.state_key.as_deref(),
            &pdu.content,
            &rules.authorization,
        )
        .map_err(Error::BadJson)?;
        let mut wanted: Vec<(StateKey, String)> = Vec::new();
        // The create event is always read (room version 12 does not list it).
        let create = ("m.room.create".to_owned(), String::new());
        if let Some(id) = state.get(&create) {
            wanted.push((create, id.clone()));
        }
        for (kind, key) in types {
            let key = (kind.to_string(), key);
            if let Some(id) = state.get(&key) {
                wanted.push((key, id.clone()));
            }
        }
        let mut events = StateEvents::new();
        let mut unknown = Vec::new();
        for (key, id) in wanted {
            match EventId::parse(&id)
                .ok()
                .and_then(|parsed| known.get(&parsed))
            {
                Some(pdu) => {
                    events.insert(key, pdu.clone());
                }
                None => unknown.push((key, id)),
            }
        }
        let ids: Vec<String> = unknown.iter().map(|(_, id)| id.clone()).collect();
        let rows: HashMap<String, EventRow> = self
            .store
            .events(&ids)
            .await?
            .into_iter()
            .map(|row| (row.event_id.clone(), row))
            .collect();
        for (key, id) in unknown {
            if let Some(row) = rows.get(&id) {
                events.insert(key, Arc::new(Pdu::from_row(row)?));
            }
        }
        Ok(events)
    }

    /// The entries of `state` that differ from the room's current state, with memberships.
    async fn changes(
        &self,
        cache: &RoomCache,
        state: &StateMap,
        known: &Known,
    ) -> Result<Vec<StateChange>, Error> {
        let changed: Vec<(&StateKey, &String)> = state
            .iter()
            .filter(|(key, id)| cache.state.get(*key) != Some(*id))
            .collect();
        let unknown: Vec<String> = changed
            .iter()
            .filter(|(key, id)| {
                key.0 == "m.room.member"
                    && EventId::parse(id.as_str()).is_ok_and(|id| !known.contains_key(&id))
            })
            .map(|(_, id)| (*id).clone())
            .collect();
        let mut memberships: HashMap<String, String> = HashMap::new();
        for row in self.store.events(&unknown).await? {
            let pdu = Pdu::from_row(&row)?;
            if let Some(membership) = membership_of(&pdu) {
                memberships.insert(row.event_id, membership);
            }
        }
        for (key, id) in &changed {
            if key.0 == "m.room.member"
                && let Some(pdu) = EventId::parse(id.as_str())
                    .ok()
                    .and_then(|id| known.get(&id))
                && let Some(membership) = membership_of(pdu)
            {
                memberships.insert((*id).clone(), membership);
            }
        }
        Ok(changed
            .into_iter()
            .map(|(key, id)| StateChange {
                key: key.clone(),
                event_id: id.clone(),
                membership: memberships.get(id).cloned(),
            })
            .collect())
    }

    /// Writes a state made by resolution: as changes to `base` unless it lacks some entry
    /// of `base`'s.
    async fn write_state(
        &self,
        room_id: &RoomId,
        state: &StateMap,
        base_group: i64,
        base: &StateMap,
    ) -> Result<i64, Error> {
        let drops = base.keys().any(|key| !state.contains_key(key));
        let changes: Vec<StateChange> = state
            .iter()
            .filter(|(key, id)| base.get(*key) != Some(*id))
            .map(|(key, id)| StateChange {
                key: key.clone(),
                event_id: id.clone(),
                membership: None,
            })
            .collect();
        let base = (!drops && base_group != 0).then_some((base_group, changes.as_slice()));
        Ok(self
            .store
            .write_resolved_state(room_id.as_str(), state, base)
            .await?)
    }
}

fn membership_of(pdu: &Pdu) -> Option<String> {
    pdu.content_value()
        .get("membership")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// The authorization rules for `pdu`, reading its auth events by id and `state` by key.
pub(super) fn check(
    rules: &RoomVersionRules,
    pdu: &Pdu,
    auth_events: &Known,
    state: &StateEvents,
) -> Result<(), String> {
    ruma::state_res::check_state_independent_auth_rules(
        &rules.authorization,
        pdu,
        |id: &EventId| auth_events.get(id).cloned(),
    )?;
    ruma::state_res::check_state_dependent_auth_rules(
        &rules.authorization,
        pdu,
        |kind: &StateEventType, key: &str| state.get(&(kind.to_string(), key.to_owned())).cloned(),
    )
}

#[cfg(test)]
mod tests;
