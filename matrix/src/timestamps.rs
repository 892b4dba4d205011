//! Jumping to a date: a room's event nearest a point in time, among those the asker may see,
//! for a local client (`GET /_matrix/client/v1/rooms/{roomId}/timestamp_to_event`) and for
//! another server in the room (`GET /_matrix/federation/v1/timestamp_to_event/{roomId}`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use ruma::OwnedRoomId;
use serde_json::{Value, json};

use crate::Services;
use crate::api::Authenticated;
use crate::error::Error;
use crate::federation::server::Federated;
use crate::pdu::Pdu;
use crate::store::EventRow;

/// How many of the nearest events are looked at for one the asker may see.
const CANDIDATES: i64 = 50;

/// `ts` and `dir` of a request: the time, and whether the event is to come at or after it.
fn asked(query: &HashMap<String, String>) -> Result<(i64, bool), Error> {
    let ts = query
        .get("ts")
        .ok_or_else(|| Error::MissingParam("`ts` is required".into()))?
        .parse::<i64>()
        .map_err(|e| Error::InvalidParam(format!("invalid `ts`: {e}")))?;
    let forward = match query.get("dir").map(String::as_str) {
        Some("f") => true,
        Some("b") => false,
        Some(other) => {
            return Err(Error::InvalidParam(format!(
                "`dir` is `f` or `b`, not {other:?}"
            )));
        }
        None => return Err(Error::MissingParam("`dir` is required".into())),
    };
    Ok((ts, forward))
}

fn answer(row: &EventRow) -> Result<Json<Value>, Error> {
    let pdu = Pdu::from_stored(&row.event_id, &row.json)?;
    Ok(Json(json!({
        "event_id": row.event_id,
        "origin_server_ts": pdu.origin_server_ts,
    })))
}

fn none_found(room_id: &OwnedRoomId, ts: i64, forward: bool) -> Error {
    let side = if forward {
        "at or after"
    } else {
        "at or before"
    };
    Error::NotFound(format!("no event {side} {ts} in {room_id}"))
}

/// # `GET /_matrix/client/v1/rooms/{roomId}/timestamp_to_event`
pub async fn client_route(
    State(services): State<Arc<Services>>,
    Path(room_id): Path<OwnedRoomId>,
    Query(query): Query<HashMap<String, String>>,
    Authenticated(sender): Authenticated,
) -> Result<Json<Value>, Error> {
    let (ts, forward) = asked(&query)?;
    let visible = crate::visibility::for_user(&services.store, &room_id, &sender.user_id).await?;
    for row in services
        .store
        .events_near_ts(room_id.as_str(), ts, forward, CANDIDATES)
        .await?
    {
        if visible.contains(row.stream_ordering) {
            return answer(&row);
        }
    }
    Err(none_found(&room_id, ts, forward))
}

/// # `GET /_matrix/federation/v1/timestamp_to_event/{roomId}`
pub async fn federation_route(
    State(services): State<Arc<Services>>,
    Path(room_id): Path<OwnedRoomId>,
    Query(query): Query<HashMap<String, String>>,
    request: Federated,
) -> Result<Json<Value>, Error> {
    crate::federation::reads::require_in_room(&services, &room_id, &request.origin).await?;
    let (ts, forward) = asked(&query)?;
    let mut servers = crate::visibility::ForServers::default();
    for row in services
        .store
        .events_near_ts(room_id.as_str(), ts, forward, CANDIDATES)
        .await?
    {
        if servers
            .allows(&services.store, request.origin.as_str(), &row)
            .await?
        {
            return answer(&row);
        }
    }
    Err(none_found(&room_id, ts, forward))
}
