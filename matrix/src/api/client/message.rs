//! Sending events, reading them back (`/messages`, `/event`, `/context`), redaction and state.
//! How events are shown (who may see them, in which form) is in `events.rs`.

use std::sync::Arc;

use ruma::api::Direction as ApiDirection;
use ruma::api::client::context::get_context;
use ruma::api::client::message::{get_message_events, send_message_event};
use ruma::api::client::redact::redact_event;
use ruma::api::client::room::get_room_event;
use ruma::api::client::state::{get_state_event_for_key, get_state_events, send_state_event};
use ruma::{RoomId, UInt, UserId};
use serde_json::Value;

use crate::Services;
use crate::api::client::events::{
    client_events, client_state_events, filter_allows, parse_token, require_joined, state_at_group,
    state_seen_at, topological_place, topological_token, visible_stretch, visible_to,
};
use crate::api::ruma_wrapper::{Ruma, Sender};
use crate::error::Error;
use crate::pdu::{Pdu, canonical_content, raw_event};
use crate::rooms::NewLocalEvent;
use crate::store::{Direction, EventRow};
use crate::visibility;

/// # `PUT /_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}`
pub async fn send_message_event_route(
    services: Arc<Services>,
    request: Ruma<send_message_event::v3::Request>,
) -> Result<send_message_event::v3::Response, Error> {
    let sender = request.sender()?;
    let body = &request.body;
    let event_type = body.event_type.to_string();
    if let Some(event_id) = services
        .rooms
        .transaction_event(
            &sender.user_id,
            sender.device_id.as_str(),
            body.txn_id.as_str(),
        )
        .await?
    {
        return Ok(send_message_event::v3::Response::new(event_id));
    }
    let content: Value =
        serde_json::from_str(body.body.json().get()).map_err(|e| Error::BadJson(e.to_string()))?;
    let event_id = send_event(
        &services,
        sender,
        &body.room_id,
        &event_type,
        content,
        Some(body.txn_id.as_str()),
    )
    .await?;
    Ok(send_message_event::v3::Response::new(event_id))
}

/// Appends a message-like event of a joined member, within their rate limit.
async fn send_event(
    services: &Services,
    sender: &Sender,
    room_id: &RoomId,
    event_type: &str,
    content: Value,
    transaction: Option<&str>,
) -> Result<ruma::OwnedEventId, Error> {
    if matches!(event_type, "m.room.redaction" | "m.room.create") {
        return Err(Error::BadJson(format!(
            "{event_type} cannot be sent with /send"
        )));
    }
    services.limits.message.check(sender.user_id.as_str())?;
    require_joined(services, room_id, &sender.user_id).await?;
    let content = canonical_content(content)?;
    let mut event = NewLocalEvent::new(&sender.user_id, event_type, None, content);
    event.transaction = transaction.map(|txn| (sender.device_id.as_str(), txn));
    Ok(services.rooms.append(room_id, event).await?.event_id)
}

/// # `POST /_matrix/client/r0/rooms/{roomId}/send/{eventType}`
///
/// Deprecated (no transaction id, so not idempotent), kept because older clients and bots
/// still call it.
pub async fn post_message_event_route(
    axum::extract::State(services): axum::extract::State<Arc<Services>>,
    crate::api::Authenticated(sender): crate::api::Authenticated,
    axum::extract::Path((room_id, event_type)): axum::extract::Path<(String, String)>,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let sent = async {
        let room_id = RoomId::parse(&room_id)
            .map_err(|e| Error::InvalidParam(format!("not a room id: {e}")))?;
        if body.len() as u64 > services.config.limits.max_json_body {
            return Err(Error::TooLarge("the request body is too large".into()));
        }
        let content: Value =
            serde_json::from_slice(&body).map_err(|e| Error::NotJson(e.to_string()))?;
        if !content.is_object() {
            return Err(Error::BadJson("the content must be a JSON object".into()));
        }
        send_event(&services, &sender, &room_id, &event_type, content, None).await
    };
    match sent.await {
        Ok(event_id) => axum::Json(serde_json::json!({ "event_id": event_id })).into_response(),
        Err(error) => error.into_response(),
    }
}

/// # `PUT /_matrix/client/v3/rooms/{roomId}/redact/{eventId}/{txnId}`
pub async fn redact_event_route(
    services: Arc<Services>,
    request: Ruma<redact_event::v3::Request>,
) -> Result<redact_event::v3::Response, Error> {
    let sender = request.sender()?;
    let body = &request.body;
    if let Some(event_id) = services
        .rooms
        .transaction_event(
            &sender.user_id,
            sender.device_id.as_str(),
            body.txn_id.as_str(),
        )
        .await?
    {
        return Ok(redact_event::v3::Response::new(event_id));
    }
    services.limits.message.check(sender.user_id.as_str())?;
    require_joined(&services, &body.room_id, &sender.user_id).await?;
    let mut content = serde_json::json!({ "redacts": body.event_id });
    if let Some(reason) = &body.reason {
        content["reason"] = Value::String(reason.clone());
    }
    let mut event = NewLocalEvent::new(
        &sender.user_id,
        "m.room.redaction",
        None,
        canonical_content(content)?,
    );
    event.transaction = Some((sender.device_id.as_str(), body.txn_id.as_str()));
    let appended = services.rooms.append(&body.room_id, event).await?;
    Ok(redact_event::v3::Response::new(appended.event_id))
}

/// # `PUT /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}`
pub async fn send_state_event_route(
    services: Arc<Services>,
    request: Ruma<send_state_event::v3::Request>,
) -> Result<send_state_event::v3::Response, Error> {
    let sender = request.sender()?;
    let body = &request.body;
    let event_type = body.event_type.to_string();
    if event_type == "m.room.create" {
        return Err(Error::BadJson("m.room.create cannot be sent".into()));
    }
    services.limits.message.check(sender.user_id.as_str())?;
    if !services.rooms.exists(&body.room_id).await? {
        return Err(Error::NotFound("unknown room".into()));
    }
    let content: Value =
        serde_json::from_str(body.body.json().get()).map_err(|e| Error::BadJson(e.to_string()))?;
    if event_type == "m.room.canonical_alias" {
        check_canonical_alias(&services, &body.room_id, &content).await?;
    }
    // The same content again changes nothing: the event that set it answers (as Synapse does).
    if let Some(current) = services
        .rooms
        .state_event(&body.room_id, &event_type, &body.state_key)
        .await?
        && current.sender == sender.user_id
        && current.content_value() == content
    {
        return Ok(send_state_event::v3::Response::new(
            current.event_id.clone(),
        ));
    }
    let content = canonical_content(content)?;
    let appended = services
        .rooms
        .append(
            &body.room_id,
            NewLocalEvent::new(&sender.user_id, &event_type, Some(&body.state_key), content),
        )
        .await?;
    if event_type == "m.room.guest_access" {
        crate::api::client::membership::remove_guests(&services, &body.room_id).await?;
    }
    Ok(send_state_event::v3::Response::new(appended.event_id))
}

/// A canonical alias must point at this room.
async fn check_canonical_alias(
    services: &Services,
    room_id: &RoomId,
    content: &Value,
) -> Result<(), Error> {
    let mut aliases: Vec<&str> = content
        .get("alt_aliases")
        .and_then(Value::as_array)
        .map(|list| list.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if let Some(alias) = content.get("alias").and_then(Value::as_str) {
        aliases.push(alias);
    }
    for alias in aliases {
        let parsed = ruma::RoomAliasId::parse(alias)
            .map_err(|e| Error::InvalidParam(format!("invalid alias {alias}: {e}")))?;
        if parsed.server_name() != services.server_name {
            continue;
        }
        match services.store.alias(alias).await? {
            Some((target, _)) if target == room_id.as_str() => {}
            _ => {
                return Err(Error::BadAlias(format!(
                    "the alias {alias} does not point to this room"
                )));
            }
        }
    }
    Ok(())
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/state`
pub async fn get_state_events_route(
    services: Arc<Services>,
    request: Ruma<get_state_events::v3::Request>,
) -> Result<get_state_events::v3::Response, Error> {
    let sender = request.sender()?;
    let room_id = &request.body.room_id;
    let state = state_for_viewer(&services, room_id, &sender.user_id).await?;
    let events = client_state_events(&state, room_id)
        .into_iter()
        .map(raw_event)
        .collect::<Result<_, _>>()?;
    Ok(get_state_events::v3::Response::new(events))
}

/// The state a viewer may see now.
async fn state_for_viewer(
    services: &Services,
    room_id: &RoomId,
    user_id: &UserId,
) -> Result<Vec<Arc<Pdu>>, Error> {
    let visible = visible_to(services, room_id, user_id).await?;
    state_seen_at(services, room_id, &visible, None).await
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}`
pub async fn get_state_event_for_key_route(
    services: Arc<Services>,
    request: Ruma<get_state_event_for_key::v3::Request>,
) -> Result<get_state_event_for_key::v3::Response, Error> {
    let sender = request.sender()?;
    let body = &request.body;
    let event_type = body.event_type.to_string();
    let state = state_for_viewer(&services, &body.room_id, &sender.user_id).await?;
    let pdu = state
        .iter()
        .find(|pdu| {
            pdu.event_type.to_string() == event_type
                && pdu.state_key.as_deref() == Some(body.state_key.as_str())
        })
        .ok_or_else(|| Error::NotFound("state event not found".into()))?;
    let value = match body.format {
        get_state_event_for_key::v3::StateEventFormat::Event => {
            let events = client_state_events(std::slice::from_ref(pdu), &body.room_id);
            Value::Object(events.into_iter().next().unwrap_or_default())
        }
        _ => pdu.content_value(),
    };
    let raw =
        serde_json::value::to_raw_value(&value).map_err(|e| Error::Internal(e.to_string()))?;
    Ok(get_state_event_for_key::v3::Response::new(raw))
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/event/{eventId}`
pub async fn get_room_event_route(
    services: Arc<Services>,
    request: Ruma<get_room_event::v3::Request>,
) -> Result<get_room_event::v3::Response, Error> {
    let sender = request.sender()?;
    let body = &request.body;
    let row = services
        .store
        .event(body.event_id.as_str())
        .await?
        .filter(|row| row.room_id == body.room_id.as_str())
        .ok_or_else(|| Error::NotFound("event not found".into()))?;
    let visible = visibility::for_user(&services.store, &body.room_id, &sender.user_id).await?;
    if !visible.contains(row.stream_ordering) {
        return Err(Error::NotFound("event not found".into()));
    }
    let event = client_events(&services, std::slice::from_ref(&row), Some(sender))
        .await?
        .pop()
        .ok_or_else(|| Error::NotFound("event not found".into()))?;
    Ok(get_room_event::v3::Response::new(raw_event(event)?))
}

fn limit_of(limit: UInt, max: u64) -> i64 {
    i64::try_from(u64::from(limit).clamp(1, max)).unwrap_or(1)
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/messages`
pub async fn get_message_events_route(
    services: Arc<Services>,
    request: Ruma<get_message_events::v3::Request>,
) -> Result<get_message_events::v3::Response, Error> {
    let sender = request.sender()?;
    let body = &request.body;
    if !services.rooms.exists(&body.room_id).await? {
        return Err(Error::Forbidden("you are not in this room".into()));
    }
    let visible = visible_to(&services, &body.room_id, &sender.user_id).await?;
    let limit = limit_of(body.limit, 1000);
    // The room is read in topological order (depth, then arrival), within the stretch the
    // viewer may see; events in gaps of it are left out below.
    let (lowest, highest) = visible_stretch(&services, &body.room_id, &visible).await?;
    let backward = body.dir == ApiDirection::Backward;
    let from = match &body.from {
        Some(token) => topological_place(&services, &body.room_id, parse_token(token)?).await?,
        None if backward => highest,
        None => lowest,
    };
    let to = match &body.to {
        Some(token) => {
            Some(topological_place(&services, &body.room_id, parse_token(token)?).await?)
        }
        None => None,
    };
    let room = body.room_id.as_str();
    let (rows, next) = if backward {
        let bound = to.map_or(lowest, |to| to.max(lowest));
        let read = || {
            services.store.room_events_topological(
                room,
                from.min(highest),
                Some(bound),
                Direction::Backward,
                limit,
            )
        };
        let mut rows = read().await?;
        // Reaching an event whose predecessors this server does not have (the earliest event
        // of a room joined through another server, or a gap left while it was cut off): what
        // came before is fetched from the room's servers.
        if body.to.is_none()
            && crate::federation::backfill::backfill(
                &services,
                &body.room_id,
                &rows,
                usize::try_from(limit).unwrap_or(0),
            )
            .await
            .unwrap_or_else(|error| {
                tracing::info!(room_id = %body.room_id, %error, "backfill failed");
                0
            }) > 0
        {
            rows = read().await?;
        }
        let next = (rows.len() as i64 == limit)
            .then(|| rows.last().map(|row| row.topological().before()))
            .flatten();
        (rows, next)
    } else {
        let bound = to.map_or(highest, |to| to.min(highest));
        let rows = services
            .store
            .room_events_topological(
                room,
                from.max(lowest),
                Some(bound),
                Direction::Forward,
                limit,
            )
            .await?;
        let next = (rows.len() as i64 == limit)
            .then(|| rows.last().map(EventRow::topological))
            .flatten();
        (rows, next)
    };
    let rows: Vec<EventRow> = rows
        .into_iter()
        .filter(|row| visible.contains(row.stream_ordering))
        .collect();
    let events = client_events(&services, &rows, Some(sender)).await?;
    let mut response = get_message_events::v3::Response::new();
    // `start` is the token given (or the place read from when none was).
    response.start = body.from.clone().unwrap_or_else(|| topological_token(from));
    response.end = next.map(topological_token);
    let mut senders = std::collections::BTreeSet::new();
    for event in events {
        if filter_allows(&body.filter, &event) {
            if let Some(sender) = event.get("sender").and_then(Value::as_str) {
                senders.insert(sender.to_owned());
            }
            response.chunk.push(raw_event(event)?);
        }
    }
    if !body.filter.lazy_load_options.is_disabled() {
        // Lazy loading: the member events of the senders in the chunk, as the viewer may see
        // them.
        let state = state_seen_at(&services, &body.room_id, &visible, None).await?;
        let members: Vec<Arc<Pdu>> = state
            .into_iter()
            .filter(|pdu| {
                pdu.event_type.to_string() == "m.room.member"
                    && pdu
                        .state_key
                        .as_ref()
                        .is_some_and(|key| senders.contains(key))
            })
            .collect();
        for event in client_state_events(&members, &body.room_id) {
            response.state.push(raw_event(event)?);
        }
    }
    Ok(response)
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/context/{eventId}`
pub async fn get_context_route(
    services: Arc<Services>,
    request: Ruma<get_context::v3::Request>,
) -> Result<get_context::v3::Response, Error> {
    let sender = request.sender()?;
    let body = &request.body;
    let visible = visible_to(&services, &body.room_id, &sender.user_id).await?;
    let row = services
        .store
        .event(body.event_id.as_str())
        .await?
        .filter(|row| row.room_id == body.room_id.as_str() && visible.contains(row.stream_ordering))
        .ok_or_else(|| Error::NotFound("event not found".into()))?;
    let (lowest, highest) = visible_stretch(&services, &body.room_id, &visible).await?;
    let limit = limit_of(body.limit, 100);
    let before_limit = limit / 2;
    let after_limit = limit - before_limit;
    let place = row.topological();
    let before = services
        .store
        .room_events_topological(
            body.room_id.as_str(),
            place.before(),
            Some(lowest),
            Direction::Backward,
            before_limit.max(1),
        )
        .await?;
    let before: Vec<EventRow> = before.into_iter().take(before_limit as usize).collect();
    let after = services
        .store
        .room_events_topological(
            body.room_id.as_str(),
            place,
            Some(highest),
            Direction::Forward,
            after_limit.max(1),
        )
        .await?;
    let after: Vec<EventRow> = after.into_iter().take(after_limit as usize).collect();
    let mut response = get_context::v3::Response::new();
    // The tokens are of the rows read; the events are those the viewer may see.
    let seen = |rows: &[EventRow]| -> Vec<EventRow> {
        rows.iter()
            .filter(|row| visible.contains(row.stream_ordering))
            .cloned()
            .collect()
    };
    response.start = Some(topological_token(
        before.last().map_or(place, EventRow::topological).before(),
    ));
    response.end = Some(topological_token(
        after.last().map_or(place, EventRow::topological),
    ));
    let (before, after) = (seen(&before), seen(&after));
    for event in client_events(&services, &before, Some(sender)).await? {
        if filter_allows(&body.filter, &event) {
            response.events_before.push(raw_event(event)?);
        }
    }
    for event in client_events(&services, &after, Some(sender)).await? {
        if filter_allows(&body.filter, &event) {
            response.events_after.push(raw_event(event)?);
        }
    }
    if let Some(event) = client_events(&services, std::slice::from_ref(&row), Some(sender))
        .await?
        .pop()
    {
        response.event = Some(raw_event(event)?);
    }
    let last_group = after
        .last()
        .map(|r| r.state_group)
        .unwrap_or(row.state_group);
    for event in client_state_events(&state_at_group(&services, last_group).await?, &body.room_id) {
        response.state.push(raw_event(event)?);
    }
    Ok(response)
}
