//! Reads of other servers: an event, the state at an event (whole or as ids), an event's auth
//! chain, the events missing between two points of a room, and backfill. All but the single
//! event are for servers with a user in the room; every event goes through the visibility
//! rule for servers ([`crate::visibility::ForServers`]).

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use ruma::{EventId, OwnedEventId, OwnedRoomId, RoomId, ServerName};
use serde_json::{Value, json};

use super::membership::{auth_chain, auth_chain_rows, federation_json};
use super::server::Federated;
use crate::Services;
use crate::error::Error;
use crate::store::EventRow;
use crate::visibility::ForServers;

/// The most events one `backfill` or `get_missing_events` answers.
const MAX_EVENTS: usize = 100;

/// Fails unless a user of `server` is joined to the room and its server ACL allows `server`.
pub(crate) async fn require_in_room(
    services: &Services,
    room_id: &RoomId,
    server: &ServerName,
) -> Result<(), Error> {
    super::acl::check(services, room_id, server).await?;
    let servers = services
        .store
        .room_servers(room_id.as_str(), &["join"])
        .await?;
    if servers.iter().any(|joined| joined == server.as_str()) {
        Ok(())
    } else {
        Err(Error::Forbidden(format!(
            "{server} is not in room {room_id}"
        )))
    }
}

/// A stored event of a room, else 404.
async fn room_event(
    services: &Services,
    room_id: &RoomId,
    event_id: &EventId,
) -> Result<EventRow, Error> {
    services
        .store
        .event(event_id.as_str())
        .await?
        .filter(|row| row.room_id == room_id.as_str())
        .ok_or_else(|| Error::NotFound(format!("event {event_id} not found in {room_id}")))
}

/// An event of a room that `origin` is in and may see, else 403 (404 for an unknown event).
async fn visible_room_event(
    services: &Services,
    origin: &ServerName,
    room_id: &RoomId,
    event_id: &EventId,
) -> Result<EventRow, Error> {
    require_in_room(services, room_id, origin).await?;
    let row = room_event(services, room_id, event_id).await?;
    if !ForServers::default()
        .allows(&services.store, origin.as_str(), &row)
        .await?
    {
        return Err(Error::Forbidden(format!(
            "{origin} may not see event {event_id}"
        )));
    }
    Ok(row)
}

fn query_values(query: Option<&str>, key: &str) -> Vec<String> {
    url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .filter(|(name, _)| name == key)
        .map(|(_, value)| value.into_owned())
        .collect()
}

fn transaction(services: &Services, pdus: Vec<Value>) -> Value {
    json!({
        "origin": services.server_name,
        "origin_server_ts": crate::store::now_ms(),
        "pdus": pdus,
    })
}

/// # `GET /_matrix/federation/v1/event/{eventId}`
pub async fn event_route(
    State(services): State<Arc<Services>>,
    Path(event_id): Path<OwnedEventId>,
    request: Federated,
) -> Result<Json<Value>, Error> {
    let row = services
        .store
        .event(event_id.as_str())
        .await?
        .ok_or_else(|| Error::NotFound(format!("event {event_id} not found")))?;
    if !ForServers::default()
        .allows(&services.store, request.origin.as_str(), &row)
        .await?
    {
        return Err(Error::NotFound(format!("event {event_id} not found")));
    }
    Ok(Json(transaction(
        &services,
        vec![federation_json(&row.json)?],
    )))
}

/// The state before an event, checked for the asking server: its ids and its auth chain.
async fn state_at(
    services: &Services,
    request: &Federated,
    room_id: &RoomId,
    query: Option<&str>,
) -> Result<(Vec<String>, Vec<EventRow>), Error> {
    let event_id = query_values(query, "event_id")
        .pop()
        .ok_or_else(|| Error::MissingParam("`event_id` is required".into()))?;
    let event_id = EventId::parse(&event_id)
        .map_err(|e| Error::InvalidParam(format!("invalid `event_id`: {e}")))?;
    visible_room_event(services, &request.origin, room_id, &event_id).await?;
    let group = services
        .store
        .state_group_before(event_id.as_str())
        .await?
        .unwrap_or(0);
    let ids: Vec<String> = services
        .store
        .state_group(group)
        .await?
        .into_values()
        .collect();
    let chain = auth_chain_rows(services, &ids).await?;
    Ok((ids, chain))
}

/// # `GET /_matrix/federation/v1/state_ids/{roomId}`
pub async fn state_ids_route(
    State(services): State<Arc<Services>>,
    Path(room_id): Path<OwnedRoomId>,
    RawQuery(query): RawQuery,
    request: Federated,
) -> Result<Json<Value>, Error> {
    let (ids, chain) = state_at(&services, &request, &room_id, query.as_deref()).await?;
    let chain_ids: Vec<&str> = chain.iter().map(|row| row.event_id.as_str()).collect();
    Ok(Json(json!({ "pdu_ids": ids, "auth_chain_ids": chain_ids })))
}

/// # `GET /_matrix/federation/v1/state/{roomId}`
pub async fn state_route(
    State(services): State<Arc<Services>>,
    Path(room_id): Path<OwnedRoomId>,
    RawQuery(query): RawQuery,
    request: Federated,
) -> Result<Json<Value>, Error> {
    let (ids, chain) = state_at(&services, &request, &room_id, query.as_deref()).await?;
    let mut pdus = Vec::with_capacity(ids.len());
    for row in services.store.events(&ids).await? {
        pdus.push(federation_json(&row.json)?);
    }
    let chain: Vec<Value> = chain
        .iter()
        .map(|row| federation_json(&row.json))
        .collect::<Result<_, _>>()?;
    Ok(Json(json!({ "pdus": pdus, "auth_chain": chain })))
}

/// # `GET /_matrix/federation/v1/event_auth/{roomId}/{eventId}`
pub async fn event_auth_route(
    State(services): State<Arc<Services>>,
    Path((room_id, event_id)): Path<(OwnedRoomId, OwnedEventId)>,
    request: Federated,
) -> Result<Json<Value>, Error> {
    visible_room_event(&services, &request.origin, &room_id, &event_id).await?;
    let chain = auth_chain(&services, &[event_id.to_string()]).await?;
    Ok(Json(json!({ "auth_chain": chain })))
}

/// Where a walk back through a room's graph starts and stops.
struct Walk<'a> {
    from: Vec<String>,
    /// Whether the events of `from` are part of the answer.
    inclusive: bool,
    stop: &'a BTreeSet<String>,
    limit: usize,
    min_depth: i64,
}

/// The events reached from `from` backwards along `prev_events` (these included when
/// `inclusive`), breadth first, stopping at `stop` and below `min_depth`, at most `limit`,
/// those the asking server may see, oldest first.
async fn walk_back(
    services: &Services,
    room_id: &RoomId,
    origin: &ServerName,
    walk: Walk<'_>,
) -> Result<Vec<Value>, Error> {
    let Walk {
        from,
        inclusive,
        stop,
        limit,
        min_depth,
    } = walk;
    let mut seen: BTreeSet<String> = stop.clone();
    let mut queue: VecDeque<String> = VecDeque::new();
    let mut found: Vec<EventRow> = Vec::new();
    let mut start: Vec<String> = Vec::new();
    for row in services.store.events(&from).await? {
        if row.room_id != room_id.as_str() {
            continue;
        }
        seen.insert(row.event_id.clone());
        if inclusive {
            found.push(row.clone());
        }
        start.push(row.event_id);
    }
    for id in &start {
        for prev in services.store.prev_events(id).await? {
            if seen.insert(prev.clone()) {
                queue.push_back(prev);
            }
        }
    }
    while found.len() < limit {
        let Some(id) = queue.pop_front() else { break };
        let Some(row) = services.store.event(&id).await? else {
            continue;
        };
        if row.room_id != room_id.as_str() || row.depth < min_depth {
            continue;
        }
        for prev in services.store.prev_events(&id).await? {
            if seen.insert(prev.clone()) {
                queue.push_back(prev);
            }
        }
        found.push(row);
    }
    found.truncate(limit);
    found.sort_by_key(|row| (row.depth, row.stream_ordering));
    let mut visibility = ForServers::default();
    let mut events = Vec::with_capacity(found.len());
    for row in found {
        if visibility
            .allows(&services.store, origin.as_str(), &row)
            .await?
        {
            events.push(federation_json(&row.json)?);
        }
    }
    Ok(events)
}

/// # `POST /_matrix/federation/v1/get_missing_events/{roomId}`
pub async fn get_missing_events_route(
    State(services): State<Arc<Services>>,
    Path(room_id): Path<OwnedRoomId>,
    request: Federated,
) -> Result<Json<Value>, Error> {
    require_in_room(&services, &room_id, &request.origin).await?;
    let body: Value = request
        .body
        .as_ref()
        .map(|body| serde_json::to_value(body).unwrap_or(Value::Null))
        .unwrap_or(Value::Null);
    let ids = |key: &str| -> Result<Vec<String>, Error> {
        body.get(key)
            .and_then(Value::as_array)
            .ok_or_else(|| Error::BadJson(format!("`{key}` is required")))?
            .iter()
            .map(|id| {
                id.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| Error::BadJson(format!("`{key}` lists event ids")))
            })
            .collect()
    };
    let earliest: BTreeSet<String> = ids("earliest_events")?.into_iter().collect();
    let latest = ids("latest_events")?;
    let limit = body
        .get("limit")
        .and_then(Value::as_u64)
        .map_or(10, |limit| usize::try_from(limit).unwrap_or(MAX_EVENTS))
        .min(MAX_EVENTS);
    let min_depth = body.get("min_depth").and_then(Value::as_i64).unwrap_or(0);
    let events = walk_back(
        &services,
        &room_id,
        &request.origin,
        Walk {
            from: latest,
            inclusive: false,
            stop: &earliest,
            limit,
            min_depth,
        },
    )
    .await?;
    Ok(Json(json!({ "events": events })))
}

/// # `GET /_matrix/federation/v1/backfill/{roomId}`
pub async fn backfill_route(
    State(services): State<Arc<Services>>,
    Path(room_id): Path<OwnedRoomId>,
    RawQuery(query): RawQuery,
    request: Federated,
) -> Result<Json<Value>, Error> {
    require_in_room(&services, &room_id, &request.origin).await?;
    let from = query_values(query.as_deref(), "v");
    if from.is_empty() {
        return Err(Error::MissingParam("`v` is required".into()));
    }
    let limit = query_values(query.as_deref(), "limit")
        .pop()
        .map(|limit| {
            limit
                .parse::<usize>()
                .map_err(|e| Error::InvalidParam(format!("invalid `limit`: {e}")))
        })
        .transpose()?
        .unwrap_or(10)
        .min(MAX_EVENTS);
    let events = walk_back(
        &services,
        &room_id,
        &request.origin,
        Walk {
            from,
            inclusive: true,
            stop: &BTreeSet::new(),
            limit,
            min_depth: i64::MIN,
        },
    )
    .await?;
    Ok(Json(transaction(&services, events)))
}
