//! The state at a gap: when `get_missing_events` does not reach back to what this server has
//! (a server that was down for long, or a branch too long to fetch), the state after each
//! prev event still missing is asked of the origin (`state_ids`, then the events this server
//! lacks, through `state` when many are, else one by one through `event`), kept as outliers,
//! and stands in for that prev event when the state before the new event is resolved. The
//! events in the gap stay out of the timeline until backfill brings them.

use std::collections::BTreeSet;

use ruma::room_version_rules::RoomVersionRules;
use ruma::{EventId, OwnedEventId, RoomId, ServerName};
use serde_json::Value;

use super::membership::{remote_error, segment};
use super::pdu;
use crate::Services;
use crate::error::Error;
use crate::store::StateMap;

/// The most missing prev events of one event whose state is asked for.
pub const GAP_PREVS: usize = 5;
/// Above this many events lacking here, the whole state is fetched at once (`state`) rather
/// than event by event.
const EVENT_BY_EVENT: usize = 20;
/// The most event ids a `state_ids` answer may list (state and auth chain).
const MAX_STATE_IDS: usize = 200_000;

/// The states after the first [`GAP_PREVS`] of `prevs`, as `origin` tells them.
pub async fn states_after(
    services: &Services,
    origin: &ServerName,
    room_id: &RoomId,
    rules: &RoomVersionRules,
    prevs: &[OwnedEventId],
) -> Result<Vec<StateMap>, Error> {
    let mut states = Vec::new();
    for prev in prevs.iter().take(GAP_PREVS) {
        states.push(state_after(services, origin, room_id, rules, prev).await?);
    }
    Ok(states)
}

fn ids_of(answer: &Value, field: &str) -> Result<Vec<String>, Error> {
    let list = answer
        .get(field)
        .and_then(Value::as_array)
        .ok_or_else(|| Error::BadJson(format!("a state_ids answer without `{field}`")))?;
    if list.len() > MAX_STATE_IDS {
        return Err(Error::TooLarge(format!(
            "a state_ids answer of {} ids",
            list.len()
        )));
    }
    list.iter()
        .map(|id| {
            id.as_str()
                .filter(|id| EventId::parse(id).is_ok())
                .map(str::to_owned)
                .ok_or_else(|| Error::BadJson(format!("`{field}` holds {id}, not an event id")))
        })
        .collect()
}

/// Those of `wanted` this server does not have in the room.
async fn lacking(
    services: &Services,
    room_id: &RoomId,
    wanted: &BTreeSet<String>,
) -> Result<Vec<String>, Error> {
    let wanted: Vec<String> = wanted.iter().cloned().collect();
    let here: BTreeSet<String> = services
        .store
        .events(&wanted)
        .await?
        .into_iter()
        .filter(|row| row.room_id == room_id.as_str())
        .map(|row| row.event_id)
        .collect();
    Ok(wanted.into_iter().filter(|id| !here.contains(id)).collect())
}

/// The state after `prev`: the state before it that `origin` gives, with `prev` itself when it
/// is a state event; every event of it checked and kept (those failing checks left out).
async fn state_after(
    services: &Services,
    origin: &ServerName,
    room_id: &RoomId,
    rules: &RoomVersionRules,
    prev: &EventId,
) -> Result<StateMap, Error> {
    let room = segment(room_id.as_str());
    let at = format!("event_id={}", segment(prev.as_str()));
    let answer = services
        .federation
        .request(
            origin,
            http::Method::GET,
            &format!("/_matrix/federation/v1/state_ids/{room}?{at}"),
            None,
            true,
        )
        .await
        .map_err(remote_error)?;
    let state_ids = ids_of(&answer, "pdu_ids")?;
    let mut wanted: BTreeSet<String> = ids_of(&answer, "auth_chain_ids")?.into_iter().collect();
    wanted.extend(state_ids.iter().cloned());
    wanted.insert(prev.to_string());
    let mut missing = lacking(services, room_id, &wanted).await?;
    if missing.len() > EVENT_BY_EVENT {
        let answer = services
            .federation
            .request(
                origin,
                http::Method::GET,
                &format!("/_matrix/federation/v1/state/{room}?{at}"),
                None,
                true,
            )
            .await
            .map_err(remote_error)?;
        let mut events = pdu::check_list(services, rules, answer.get("auth_chain")).await;
        events.extend(pdu::check_list(services, rules, answer.get("pdus")).await);
        events.retain(|event| wanted.contains(event.event_id.as_str()));
        services.rooms.store_outliers(room_id, events).await?;
        missing = lacking(services, room_id, &wanted).await?;
    }
    let mut fetched = Vec::new();
    for id in missing.iter().take(EVENT_BY_EVENT + 1) {
        let answer = services
            .federation
            .request(
                origin,
                http::Method::GET,
                &format!("/_matrix/federation/v1/event/{}", segment(id)),
                None,
                true,
            )
            .await;
        match answer {
            Ok(answer) => {
                let events = pdu::check_list(services, rules, answer.get("pdus")).await;
                fetched.extend(
                    events
                        .into_iter()
                        .filter(|event| event.event_id == id.as_str()),
                );
            }
            Err(error) => {
                tracing::info!(%origin, event_id = %id, %error, "an event at a gap was not had")
            }
        }
    }
    services.rooms.store_outliers(room_id, fetched).await?;

    let mut ids = state_ids;
    ids.push(prev.to_string());
    let mut rows: std::collections::HashMap<String, crate::store::EventRow> = services
        .store
        .events(&ids)
        .await?
        .into_iter()
        .filter(|row| row.room_id == room_id.as_str() && row.rejected_reason.is_none())
        .map(|row| (row.event_id.clone(), row))
        .collect();
    // The state before `prev`, then `prev` over it.
    let mut state = StateMap::new();
    for id in &ids {
        if let Some(row) = rows.remove(id)
            && let Some(state_key) = row.state_key
        {
            state.insert((row.event_type, state_key), row.event_id);
        }
    }
    Ok(state)
}
