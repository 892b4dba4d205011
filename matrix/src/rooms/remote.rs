//! Joins across servers, on the room engine's side: the template of a join another server's
//! user asks for (`make_join`), and a room this server was not in, made from what a resident
//! server answered to a join of a local user (`send_join`): the auth chain and state kept as
//! outliers after their authorization checks, the state before the join, and the join.

use std::collections::HashMap;
use std::sync::Arc;

use ruma::canonical_json::CanonicalJsonObject;
use ruma::{EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, RoomId, RoomVersionId, UserId};
use serde_json::Value;

use super::inbound::{StateEvents, check};
use super::{MAX_DEPTH, MAX_PREV_EVENTS, Rooms};
use crate::error::Error;
use crate::pdu::{self, EventDraft, Pdu};
use crate::resolve::Known;
use crate::store::{NewEvent, NewOutlier, ResolvedState, StateChange, StateMap};

impl Rooms {
    /// An unsigned membership event of `user` (another server's) that follows the room's
    /// extremities, checked against the current state: what `make_join` (and `make_leave`)
    /// answer. Refused when the rules would refuse the event.
    pub async fn membership_template(
        &self,
        room_id: &RoomId,
        user: &UserId,
        content: CanonicalJsonObject,
    ) -> Result<(RoomVersionId, CanonicalJsonObject), Error> {
        let guard = self.locked(room_id).await?;
        let Some(cache) = guard.as_ref() else {
            return Err(Error::Internal("room cache vanished".into()));
        };
        let content_raw = serde_json::value::to_raw_value(&content)
            .map_err(|e| Error::Internal(e.to_string()))?;
        let auth_events =
            cache.auth_events("m.room.member", user, Some(user.as_str()), &content_raw)?;
        // Built as this server would build it, to check it; the joining server signs its own.
        let draft = pdu::build_event(
            EventDraft {
                room_id: Some(room_id),
                sender: user,
                event_type: "m.room.member",
                state_key: Some(user.as_str()),
                content,
                prev_events: cache
                    .extremities
                    .iter()
                    .take(MAX_PREV_EVENTS)
                    .cloned()
                    .collect(),
                auth_events,
                depth: cache.depth.saturating_add(1).min(MAX_DEPTH),
                origin_server_ts: MilliSecondsSinceUnixEpoch::now(),
            },
            &cache.rules,
            self.server_name.as_str(),
            &self.key,
        )?;
        let mut known: Known = HashMap::new();
        // Room version 12 names no create event among the auth events: the room id is its id.
        if let Some(create) = cache
            .state
            .get(&("m.room.create".to_owned(), String::new()))
            .and_then(|id| EventId::parse(id).ok())
            .and_then(|id| cache.state_events.get(&id))
        {
            known.insert(create.event_id.clone(), create.clone());
        }
        for id in &draft.auth_events {
            if let Some(event) = cache.state_events.get(id) {
                known.insert(id.clone(), event.clone());
            }
        }
        let state = self
            .state_events(&cache.state, &draft, &cache.rules, &cache.state_events)
            .await?;
        check(&cache.rules, &draft, &known, &state).map_err(Error::Forbidden)?;
        let mut template = draft.json;
        template.remove("hashes");
        template.remove("signatures");
        Ok((cache.version.clone(), template))
    }

    /// Makes a room this server was not in from the answer to a local user's join: `state`
    /// (the state before the join) and `auth_chain` are stored as outliers, each checked
    /// against its own auth events (a refused one is kept as rejected and left out of the
    /// state), then the join, checked against that state, becomes the room's only forward
    /// extremity. Signatures and hashes are checked before, by the caller. Returns the join's
    /// stream position.
    pub async fn join_remote_room(
        &self,
        room_id: &RoomId,
        version: &RoomVersionId,
        state: Vec<Pdu>,
        auth_chain: Vec<Pdu>,
        join: Pdu,
    ) -> Result<i64, Error> {
        let rules = pdu::rules(version)?;
        let lock = self.room_lock(room_id);
        let mut guard = lock.lock().await;
        let record = self.store.room(room_id.as_str()).await?;
        if record
            .as_ref()
            .is_some_and(|record| record.current_state_group != 0)
        {
            drop(guard);
            return match self.receive_pdu(room_id, join).await? {
                super::Received::Accepted { stream_ordering } => Ok(stream_ordering),
                other => Err(Error::Forbidden(format!(
                    "the join was not accepted: {other:?}"
                ))),
            };
        }

        // Every event the answer brings, checked in depth order against its own auth events.
        let mut events: Vec<Pdu> = auth_chain;
        let state_ids: Vec<OwnedEventId> = state.iter().map(|pdu| pdu.event_id.clone()).collect();
        events.extend(state);
        let mut known: Known = HashMap::new();
        let outliers = check_outliers(&rules, room_id, events, &mut known)?;
        let Some(create) = known
            .values()
            .find(|event| event.event_type.to_string() == "m.room.create" && !event.rejected)
            .cloned()
        else {
            return Err(Error::BadJson("the answer has no create event".into()));
        };

        // The state before the join, and the join checked against it.
        let mut before = StateMap::new();
        for id in &state_ids {
            if let Some(event) = known.get(id)
                && !event.rejected
                && let Some(state_key) = &event.state_key
            {
                before.insert(
                    (event.event_type.to_string(), state_key.clone()),
                    id.to_string(),
                );
            }
        }
        let before_events: StateEvents = before
            .iter()
            .filter_map(|(key, id)| {
                let id = EventId::parse(id).ok()?;
                Some((key.clone(), known.get(&id)?.clone()))
            })
            .collect();
        let mut join_auth: Known = HashMap::new();
        join_auth.insert(create.event_id.clone(), create.clone());
        for id in &join.auth_events {
            match known.get(id) {
                Some(event) => {
                    join_auth.insert(id.clone(), event.clone());
                }
                None => {
                    return Err(Error::BadJson(format!(
                        "the auth event {id} of the join is not in the answer"
                    )));
                }
            }
        }
        check(&rules, &join, &join_auth, &before_events)
            .map_err(|reason| Error::Forbidden(format!("the join is not allowed: {reason}")))?;

        if record.is_none() {
            self.store
                .create_room(
                    room_id.as_str(),
                    version.as_str(),
                    create.sender.as_str(),
                    false,
                )
                .await?;
        }
        self.store
            .persist_outliers(room_id.as_str(), &outliers)
            .await?;
        let before_group = self
            .store
            .write_resolved_state(room_id.as_str(), &before, None)
            .await?;
        let join_key = ("m.room.member".to_owned(), join.sender.to_string());
        let join_change = StateChange {
            key: join_key.clone(),
            event_id: join.event_id.to_string(),
            membership: Some("join".to_owned()),
        };
        let mut after = before.clone();
        after.insert(join_key.clone(), join.event_id.to_string());
        let after_group = self
            .store
            .write_resolved_state(
                room_id.as_str(),
                &after,
                Some((before_group, std::slice::from_ref(&join_change))),
            )
            .await?;
        // Every entry is new to this server: memberships follow, and sync shows the state.
        let changes: Vec<StateChange> = after
            .iter()
            .map(|(key, id)| StateChange {
                key: key.clone(),
                event_id: id.clone(),
                membership: (key.0 == "m.room.member")
                    .then(|| {
                        if *key == join_key {
                            return Some("join".to_owned());
                        }
                        let event = known.get(&EventId::parse(id).ok()?)?;
                        event
                            .content_value()
                            .get("membership")
                            .and_then(Value::as_str)
                            .map(str::to_owned)
                    })
                    .flatten(),
            })
            .collect();
        let new_event = NewEvent {
            membership: Some("join".to_owned()),
            resolved: Some(ResolvedState {
                group: after_group,
                changes,
            }),
            ..super::stored_event(room_id, &join, before_group)
        };
        let mut writer = self.store.stream_writer().await;
        let persisted = self.store.persist_event(&mut writer, &new_event).await?;
        writer.publish();
        // Loaded from the store when next used.
        *guard = None;
        Ok(persisted.stream_ordering)
    }
}

impl Rooms {
    /// Stores events of a room this server is in as outliers (the auth chain of a received
    /// event, say), each checked against its own auth events, which are among them or stored.
    /// Signatures and hashes are checked before, by the caller.
    pub async fn store_outliers(&self, room_id: &RoomId, events: Vec<Pdu>) -> Result<(), Error> {
        let rules = self.rules(room_id).await?;
        let mut wanted: Vec<String> = events
            .iter()
            .flat_map(|event| event.auth_events.iter().map(ToString::to_string))
            .collect();
        wanted.extend(create_event_id(room_id, &rules));
        wanted.sort();
        wanted.dedup();
        let mut known: Known = HashMap::new();
        for row in self.store.events(&wanted).await? {
            if row.room_id == room_id.as_str() {
                let stored = Pdu::from_row(&row)?;
                known.insert(stored.event_id.clone(), Arc::new(stored));
            }
        }
        let fresh: Vec<Pdu> = events
            .into_iter()
            .filter(|event| !known.contains_key(&event.event_id))
            .collect();
        let outliers = check_outliers(&rules, room_id, fresh, &mut known)?;
        self.store
            .persist_outliers(room_id.as_str(), &outliers)
            .await?;
        Ok(())
    }
}

impl Rooms {
    /// Stores events of a room's past that another server gave (backfill), each checked
    /// against its own auth events (stored or among them); signatures and hashes are checked
    /// before, by the caller. Events kept as outliers before take their place in the
    /// timeline. Returns how many events became visible.
    pub async fn store_backfilled(&self, room_id: &RoomId, events: Vec<Pdu>) -> Result<u64, Error> {
        let rules = self.rules(room_id).await?;
        let mut wanted: Vec<String> = events
            .iter()
            .flat_map(|event| {
                event
                    .auth_events
                    .iter()
                    .chain(std::iter::once(&event.event_id))
                    .map(ToString::to_string)
            })
            .collect();
        wanted.extend(create_event_id(room_id, &rules));
        wanted.sort();
        wanted.dedup();
        let mut known: Known = HashMap::new();
        let mut stored: HashMap<String, bool> = HashMap::new();
        for row in self.store.events(&wanted).await? {
            if row.room_id == room_id.as_str() {
                stored.insert(row.event_id.clone(), row.rejected_reason.is_some());
                let event = Pdu::from_row(&row)?;
                known.insert(event.event_id.clone(), Arc::new(event));
            }
        }
        let (kept, fresh): (Vec<Pdu>, Vec<Pdu>) = events
            .into_iter()
            .partition(|event| stored.contains_key(event.event_id.as_str()));
        let mut prepared: Vec<(NewOutlier, Option<crate::store::Relation>)> = kept
            .iter()
            .filter(|event| stored.get(event.event_id.as_str()) == Some(&false))
            .map(|event| (event.to_outlier(None), None))
            .collect();
        let relations: HashMap<String, Option<crate::store::Relation>> = fresh
            .iter()
            .map(|event| {
                (
                    event.event_id.to_string(),
                    crate::store::Relation::of_content(&event.content_value()),
                )
            })
            .collect();
        let originals: HashMap<String, Pdu> = fresh
            .iter()
            .map(|event| (event.event_id.to_string(), event.clone()))
            .collect();
        for outlier in check_outliers(&rules, room_id, fresh, &mut known)? {
            let relation = relations.get(&outlier.event_id).cloned().flatten();
            prepared.push((outlier, relation));
        }
        let redactions = self
            .backfilled_redactions(room_id, &rules, &originals, &mut prepared)
            .await?;
        Ok(self
            .store
            .persist_backfilled(room_id.as_str(), &prepared, &redactions)
            .await?)
    }

    /// Redactions among backfilled events, and redactions taken earlier of them, under the
    /// rule of every redaction from another server (the redactor's own server's events, or the
    /// power to redact): the events of the batch they redact are stored redacted; events
    /// stored before are redacted with the batch; targets not here yet wait for it.
    async fn backfilled_redactions(
        &self,
        room_id: &RoomId,
        rules: &ruma::room_version_rules::RoomVersionRules,
        originals: &HashMap<String, Pdu>,
        prepared: &mut [(crate::store::NewOutlier, Option<crate::store::Relation>)],
    ) -> Result<crate::store::BackfilledRedactions, Error> {
        let levels = self.power_levels(room_id).await?;
        let may_redact = |redactor: &ruma::UserId, sender: &str| {
            ruma::UserId::parse(sender)
                .is_ok_and(|sender| sender.server_name() == redactor.server_name())
                || levels.user(redactor) >= levels.redact
        };
        let redacted_form = |event_id: &str| -> Result<Option<String>, Error> {
            originals
                .get(event_id)
                .map(|original| Ok(crate::pdu::redacted(original, rules)?.to_stored()))
                .transpose()
        };
        let mut result = crate::store::BackfilledRedactions::default();
        // The batch's redactions.
        let taken: Vec<(String, ruma::OwnedUserId, String)> = prepared
            .iter()
            .filter(|(outlier, _)| outlier.rejected_reason.is_none())
            .filter_map(|(outlier, _)| {
                let event = originals.get(&outlier.event_id)?;
                (event.event_type.to_string() == "m.room.redaction").then_some(())?;
                Some((
                    outlier.event_id.clone(),
                    event.sender.clone(),
                    event.redacts.as_ref()?.to_string(),
                ))
            })
            .collect();
        for (redaction, redactor, target) in taken {
            if let Some((outlier, relation)) = prepared
                .iter_mut()
                .find(|(outlier, _)| outlier.event_id == target)
            {
                if outlier.rejected_reason.is_none()
                    && outlier.redacted_by.is_none()
                    && may_redact(&redactor, &outlier.sender)
                    && let Some(json) = redacted_form(&target)?
                {
                    outlier.json = json;
                    outlier.redacted_by = Some(redaction);
                    *relation = None;
                }
                continue;
            }
            match self.store.event(&target).await? {
                Some(row) => {
                    if row.room_id == room_id.as_str()
                        && row.redacted_by.is_none()
                        && row.rejected_reason.is_none()
                        && may_redact(&redactor, &row.sender)
                    {
                        let original = Pdu::from_stored(&row.event_id, &row.json)?;
                        let json = crate::pdu::redacted(&original, rules)?.to_stored();
                        result.of_stored.push((target, json, redaction));
                    }
                }
                None => result.waiting.push((target, redaction)),
            }
        }
        // Events of the batch that redactions taken earlier redact.
        for (outlier, relation) in prepared.iter_mut() {
            if outlier.rejected_reason.is_some() || outlier.redacted_by.is_some() {
                continue;
            }
            for redaction in self
                .store
                .pending_redactions(room_id.as_str(), &outlier.event_id)
                .await?
            {
                let Some(row) = self.store.event(&redaction).await? else {
                    continue;
                };
                let Ok(redactor) = ruma::UserId::parse(row.sender.as_str()) else {
                    continue;
                };
                if may_redact(&redactor, &outlier.sender)
                    && let Some(json) = redacted_form(&outlier.event_id)?
                {
                    outlier.json = json;
                    outlier.redacted_by = Some(redaction);
                    *relation = None;
                    break;
                }
            }
        }
        Ok(result)
    }
}

/// The id of a room's create event where the room id is made from it (room version 12): the
/// auth events of that version never name it.
fn create_event_id(
    room_id: &RoomId,
    rules: &ruma::room_version_rules::RoomVersionRules,
) -> Option<String> {
    rules
        .authorization
        .room_create_event_id_as_room_id
        .then(|| format!("${}", &room_id.as_str()[1..]))
}

/// Checks events in depth order, each against its own auth events (in `known` or earlier
/// among them), and adds them to `known`, marked rejected when refused: what to store of
/// them as outliers.
fn check_outliers(
    rules: &ruma::room_version_rules::RoomVersionRules,
    room_id: &RoomId,
    mut events: Vec<Pdu>,
    known: &mut Known,
) -> Result<Vec<NewOutlier>, Error> {
    events.sort_by_key(|pdu| pdu.depth);
    events.dedup_by(|a, b| a.event_id == b.event_id);
    let mut outliers = Vec::new();
    let is_create = |pdu: &Pdu| pdu.event_type.to_string() == "m.room.create" && !pdu.rejected;
    let mut create = known.values().find(|known| is_create(known)).cloned();
    for mut event in events {
        if known.contains_key(&event.event_id) {
            continue;
        }
        if event.room_id_or_derived()? != room_id {
            return Err(Error::BadJson(format!(
                "event {} is not in room {room_id}",
                event.event_id
            )));
        }
        let mut auth: Known = HashMap::new();
        if let Some(create) = &create {
            auth.insert(create.event_id.clone(), create.clone());
        }
        for id in &event.auth_events {
            if let Some(found) = known.get(id) {
                auth.insert(id.clone(), found.clone());
            }
        }
        let own: StateEvents = auth
            .values()
            .filter_map(|pdu| {
                Some((
                    (pdu.event_type.to_string(), pdu.state_key.clone()?),
                    pdu.clone(),
                ))
            })
            .collect();
        let rejected_reason = check(rules, &event, &auth, &own).err();
        if let Some(reason) = &rejected_reason {
            tracing::info!(event_id = %event.event_id, %reason, "outlier rejected");
            event.rejected = true;
        }
        outliers.push(event.to_outlier(rejected_reason));
        let event = Arc::new(event);
        if is_create(&event) {
            create = Some(event.clone());
        }
        known.insert(event.event_id.clone(), event);
    }
    Ok(outliers)
}
