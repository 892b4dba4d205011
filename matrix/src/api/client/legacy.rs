//! Endpoints the specification deprecates that older clients and bots still call: `/events`
//! (long-polling for new events, or peeking into a world-readable room with `room_id`),
//! `/initialSync` and `/rooms/{roomId}/initialSync`. They read through the same places as the
//! current ones (visibility, the client format).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use ruma::RoomId;
use serde_json::{Map, Value, json};

use super::events::{
    SeenRooms, client_events, client_state_events, joined_rooms, parse_position, state_seen_at,
    stored_room_id, topological_token, visible_to,
};
use crate::Services;
use crate::api::Authenticated;
use crate::api::ruma_wrapper::Sender;
use crate::error::Error;
use crate::store::{Direction, EventRow};
use crate::visibility;

/// Messages per room in an initial sync, unless `limit` says otherwise.
const DEFAULT_LIMIT: i64 = 10;
/// How long `/events` waits when the request does not say.
const DEFAULT_EVENTS_TIMEOUT_MS: u64 = 30_000;

fn limit_param(query: &HashMap<String, String>, default: i64) -> Result<i64, Error> {
    match query.get("limit") {
        None => Ok(default),
        Some(limit) => limit
            .parse::<i64>()
            .ok()
            .filter(|limit| *limit >= 0)
            .map(|limit| limit.min(1000))
            .ok_or_else(|| Error::InvalidParam("`limit` must be a non-negative integer".into())),
    }
}

/// # `GET /_matrix/client/v3/events`: the events after `from` in the rooms the user is
/// joined to (or, with `room_id`, in that room as the user may see it), waiting up to
/// `timeout` milliseconds for some.
pub async fn get_events_route(
    State(services): State<Arc<Services>>,
    Authenticated(sender): Authenticated,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, Error> {
    let timeout = match query.get("timeout") {
        None => DEFAULT_EVENTS_TIMEOUT_MS,
        Some(timeout) => timeout
            .parse::<u64>()
            .map_err(|_| Error::InvalidParam("`timeout` must be a non-negative integer".into()))?,
    }
    .min(services.config.limits.max_sync_timeout_ms);
    let peeked = match query.get("room_id") {
        Some(room) => {
            let room_id = RoomId::parse(room.as_str())
                .map_err(|_| Error::InvalidParam(format!("invalid room id {room:?}")))?;
            let visible = visible_to(&services, &room_id, &sender.user_id).await?;
            Some((room_id, visible))
        }
        None => None,
    };
    let from = match query.get("from") {
        Some(from) => parse_position(from)?,
        None => services.store.current_position(),
    };
    let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout);
    let mut positions = services.store.subscribe();
    loop {
        positions.borrow_and_update();
        let until = services.store.current_position();
        let rows = match &peeked {
            Some((room_id, visible)) => services
                .store
                .room_events(room_id.as_str(), from, until, Direction::Forward, 100)
                .await?
                .into_iter()
                .filter(|row| visible.contains(row.stream_ordering))
                .collect(),
            None => joined_room_events(&services, &sender, from, until).await?,
        };
        if !rows.is_empty() {
            let end = rows.last().map_or(until, |row| row.stream_ordering);
            let chunk = client_events(&services, &rows, Some(&sender)).await?;
            return Ok(Json(json!({
                "chunk": chunk,
                "start": format!("s{from}"),
                "end": format!("s{end}"),
            })));
        }
        let woke = tokio::time::timeout_at(deadline, async {
            tokio::select! {
                changed = positions.changed() => changed.is_ok(),
                () = services.shutting_down() => false,
            }
        })
        .await;
        if !matches!(woke, Ok(true)) {
            return Ok(Json(json!({
                "chunk": [],
                "start": format!("s{from}"),
                "end": format!("s{until}"),
            })));
        }
    }
}

/// The events in `(after, until]` (at most 100) of the rooms the user is joined to, as the
/// user may see them.
async fn joined_room_events(
    services: &Services,
    sender: &Sender,
    after: i64,
    until: i64,
) -> Result<Vec<EventRow>, Error> {
    let rooms = joined_rooms(services, &sender.user_id).await?;
    let rows = services.store.events_after(after, until, 100).await?;
    let mut seen = SeenRooms::default();
    let mut visible_rows = Vec::new();
    for row in rows {
        if rooms.contains(&row.room_id)
            && seen
                .of(services, &row.room_id, sender)
                .await?
                .contains(row.stream_ordering)
        {
            visible_rows.push(row);
        }
    }
    Ok(visible_rows)
}

/// One room as the initial syncs show it: membership, the latest messages the user may see
/// (oldest first, with the tokens around them), the state, the room's account data and its
/// directory visibility.
/// All of a user's account data: `(room, type, content)`, global data with an empty room.
async fn all_account_data(
    services: &Services,
    sender: &Sender,
) -> Result<Vec<(String, String, String)>, Error> {
    Ok(services
        .store
        .account_data_since(sender.user_id.as_str(), 0, i64::MAX)
        .await?)
}

/// The account data events of one room (`""`: the global ones).
fn account_data_events(account_data: &[(String, String, String)], room: &str) -> Vec<Value> {
    account_data
        .iter()
        .filter(|(data_room, _, _)| data_room == room)
        .map(|(_, data_type, content)| {
            json!({
                "type": data_type,
                "content": serde_json::from_str::<Value>(content).unwrap_or_else(|_| json!({})),
            })
        })
        .collect()
}

async fn room_snapshot(
    services: &Services,
    sender: &Sender,
    room_id: &RoomId,
    membership: &str,
    limit: i64,
    account_data: &[(String, String, String)],
) -> Result<Map<String, Value>, Error> {
    let visible = visibility::for_user(&services.store, room_id, &sender.user_id).await?;
    let (first, last) = visible.bounds().unwrap_or((0, 0));
    let end = last.min(services.store.current_position());
    let mut rows = if limit > 0 && !visible.is_empty() {
        services
            .store
            .room_events(
                room_id.as_str(),
                first.saturating_sub(1).max(0),
                end,
                Direction::Backward,
                limit,
            )
            .await?
    } else {
        vec![]
    };
    // Paging back from the oldest message is in the room's topological order; `end` is a
    // stream position, for `/events`.
    let start = match rows.last() {
        Some(oldest) => topological_token(oldest.topological().before()),
        None => format!("s{end}"),
    };
    rows.retain(|row| visible.contains(row.stream_ordering));
    rows.reverse();
    let chunk = client_events(services, &rows, Some(sender)).await?;
    let state = if visible.is_empty() {
        vec![]
    } else {
        state_seen_at(services, room_id, &visible, None).await?
    };
    let is_public = services
        .store
        .room(room_id.as_str())
        .await?
        .is_some_and(|room| room.is_public);
    let account_data = account_data_events(account_data, room_id.as_str());
    let mut snapshot = Map::new();
    snapshot.insert("room_id".into(), json!(room_id));
    snapshot.insert("membership".into(), json!(membership));
    snapshot.insert(
        "messages".into(),
        json!({ "chunk": chunk, "start": start, "end": format!("s{end}") }),
    );
    snapshot.insert(
        "state".into(),
        Value::Array(
            client_state_events(&state, room_id)
                .into_iter()
                .map(Value::Object)
                .collect(),
        ),
    );
    snapshot.insert(
        "visibility".into(),
        json!(if is_public { "public" } else { "private" }),
    );
    snapshot.insert("account_data".into(), Value::Array(account_data));
    Ok(snapshot)
}

/// # `GET /_matrix/client/v3/initialSync`: every room the user is joined to or invited to
/// (and has left, with `archived=true`), with its latest messages and state, and the global
/// account data.
pub async fn initial_sync_route(
    State(services): State<Arc<Services>>,
    Authenticated(sender): Authenticated,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, Error> {
    let limit = limit_param(&query, DEFAULT_LIMIT)?;
    let archived = query.get("archived").is_some_and(|value| value == "true");
    let end = services.store.current_position();
    // Read once for every room.
    let account_data = all_account_data(&services, &sender).await?;
    let mut rooms = Vec::new();
    for row in services
        .store
        .user_memberships(sender.user_id.as_str())
        .await?
    {
        let wanted = match row.membership.as_str() {
            "join" | "invite" => true,
            "leave" | "ban" => archived,
            _ => false,
        };
        if !wanted {
            continue;
        }
        let room_id = stored_room_id(&row.room_id)?;
        let limit = if row.membership == "invite" { 0 } else { limit };
        rooms.push(Value::Object(
            room_snapshot(
                &services,
                &sender,
                &room_id,
                &row.membership,
                limit,
                &account_data,
            )
            .await?,
        ));
    }
    Ok(Json(json!({
        "end": format!("s{end}"),
        "rooms": rooms,
        "presence": [],
        "account_data": account_data_events(&account_data, ""),
    })))
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/initialSync`: one room the user may see.
pub async fn room_initial_sync_route(
    State(services): State<Arc<Services>>,
    Authenticated(sender): Authenticated,
    Path(room_id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, Error> {
    let room_id = RoomId::parse(room_id.as_str())
        .map_err(|_| Error::InvalidParam(format!("invalid room id {room_id:?}")))?;
    if !services.rooms.exists(&room_id).await? {
        return Err(Error::Forbidden("you may not see this room".into()));
    }
    visible_to(&services, &room_id, &sender.user_id).await?;
    let limit = limit_param(&query, DEFAULT_LIMIT)?;
    let membership = services
        .rooms
        .membership(&room_id, &sender.user_id)
        .await?
        .unwrap_or_else(|| "leave".to_owned());
    let account_data = all_account_data(&services, &sender).await?;
    let mut snapshot = room_snapshot(
        &services,
        &sender,
        &room_id,
        &membership,
        limit,
        &account_data,
    )
    .await?;
    snapshot.insert("presence".into(), json!([]));
    Ok(Json(Value::Object(snapshot)))
}
