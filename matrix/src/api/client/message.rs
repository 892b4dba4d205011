//! Sending events, reading them back (`/messages`, `/event`, `/context`), redaction and state.

use std::collections::HashMap;
use std::sync::Arc;

use ruma::api::Direction as ApiDirection;
use ruma::api::client::context::get_context;
use ruma::api::client::filter::RoomEventFilter;
use ruma::api::client::message::{get_message_events, send_message_event};
use ruma::api::client::redact::redact_event;
use ruma::api::client::room::get_room_event;
use ruma::api::client::state::{get_state_event_for_key, get_state_events, send_state_event};
use ruma::{RoomId, UInt, UserId};
use serde_json::{Map, Value};

use crate::Services;
use crate::api::ruma_wrapper::{Ruma, Sender};
use crate::error::Error;
use crate::pdu::{Pdu, Unsigned, canonical_content, raw_event};
use crate::rooms::NewLocalEvent;
use crate::store::{Direction, EventRow, now_ms};
use crate::visibility::{self, Visible};

/// Fails unless the user is joined to the room.
pub async fn require_joined(
    services: &Services,
    room_id: &RoomId,
    user_id: &UserId,
) -> Result<(), Error> {
    match services
        .rooms
        .membership(room_id, user_id)
        .await?
        .as_deref()
    {
        Some("join") => Ok(()),
        _ => Err(Error::Forbidden("you are not joined to this room".into())),
    }
}

/// What `user_id` may see of a room ([`crate::visibility`]); forbidden when nothing.
pub async fn visible_to(
    services: &Services,
    room_id: &RoomId,
    user_id: &UserId,
) -> Result<Visible, Error> {
    let visible = visibility::for_user(&services.store, room_id, user_id).await?;
    if visible.is_empty() {
        return Err(Error::Forbidden(
            "you are not allowed to see this room's events".into(),
        ));
    }
    Ok(visible)
}

/// The state a viewer may see: the state after the latest visible event at or before `at`
/// (the current state when what comes next is visible and no earlier point is asked for).
pub async fn state_seen_at(
    services: &Services,
    room_id: &RoomId,
    visible: &Visible,
    at: Option<i64>,
) -> Result<Vec<Arc<Pdu>>, Error> {
    if visible.is_open() && at.is_none_or(|at| at >= services.store.current_position()) {
        return services.rooms.current_state(room_id).await;
    }
    let at = at.unwrap_or(i64::MAX);
    for range in visible.latest_first() {
        if *range.start() > at {
            continue;
        }
        let upto = (*range.end()).min(at);
        if let Some(row) = services
            .store
            .last_room_event_at(room_id.as_str(), upto)
            .await?
            && row.stream_ordering >= *range.start()
        {
            return state_at_group(services, row.state_group).await;
        }
    }
    Ok(vec![])
}

/// Stored events in the client format, as seen by `viewer`.
pub async fn client_events(
    services: &Services,
    rows: &[EventRow],
    viewer: Option<&Sender>,
) -> Result<Vec<Map<String, Value>>, Error> {
    if rows.is_empty() {
        return Ok(vec![]);
    }
    // What users the viewer ignores sent is not shown (state excepted), as the specification
    // says of `m.ignored_user_list`.
    let ignored = match viewer {
        Some(viewer) => ignored_users(services, &viewer.user_id).await?,
        None => Default::default(),
    };
    let shown: Vec<EventRow>;
    let rows = if ignored.is_empty() {
        rows
    } else {
        shown = rows
            .iter()
            .filter(|row| row.state_key.is_some() || !ignored.contains(&row.sender))
            .cloned()
            .collect();
        &shown
    };
    let ids: Vec<&str> = rows.iter().map(|row| row.event_id.as_str()).collect();
    let transaction_ids = match viewer {
        Some(viewer) => {
            services
                .store
                .transaction_ids(viewer.user_id.as_str(), viewer.device_id.as_str(), &ids)
                .await?
        }
        None => HashMap::new(),
    };
    let redaction_ids: Vec<String> = rows
        .iter()
        .filter_map(|row| row.redacted_by.clone())
        .collect();
    let mut redactions = HashMap::new();
    for row in services.store.events(&redaction_ids).await? {
        let room_id = RoomId::parse(&row.room_id)
            .map_err(|e| Error::Internal(format!("stored room id: {e}")))?;
        let pdu = Pdu::from_stored(&row.event_id, &row.json)?;
        let event = pdu.to_client_value(&room_id);
        redactions.insert(row.event_id.clone(), Value::Object(event).to_string());
    }
    let unsigned = Unsigned {
        now: now_ms(),
        transaction_ids: Some(&transaction_ids),
    };
    let erased = match viewer {
        Some(viewer) => ErasedSenders::of(services, rows, &viewer.user_id).await?,
        None => ErasedSenders::default(),
    };
    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        let room_id = RoomId::parse(&row.room_id)
            .map_err(|e| Error::Internal(format!("stored room id: {e}")))?;
        let mut pdu = Pdu::from_stored(&row.event_id, &row.json)?;
        if let Some(rules) = erased.redact(row) {
            pdu = crate::pdu::redacted(&pdu, rules)?;
        }
        let mut event = pdu.to_client_value(&room_id);
        let because = row
            .redacted_by
            .as_ref()
            .and_then(|id| redactions.get(id))
            .map(String::as_str);
        unsigned.apply(&pdu, &mut event, because);
        if let Some(state_key) = &row.state_key {
            replaced_state(services, row, state_key, &mut event).await?;
        }
        events.push(event);
    }
    Ok(events)
}

/// `unsigned.prev_content`, `prev_sender` and `replaces_state` of a state event: the state it
/// replaced (clients read them to tell, say, that a join accepted an invite to a direct chat).
/// (Nothing of an erased account's state is shown there.)
async fn replaced_state(
    services: &Services,
    row: &EventRow,
    state_key: &str,
    event: &mut Map<String, Value>,
) -> Result<(), Error> {
    let Some((event_id, sender, content)) = services
        .store
        .replaced_state(
            &row.room_id,
            &row.event_type,
            state_key,
            row.stream_ordering,
        )
        .await?
    else {
        return Ok(());
    };
    if !services
        .store
        .erased_among(&[&sender, &row.sender])
        .await?
        .is_empty()
    {
        return Ok(());
    }
    if let Some(Value::Object(unsigned)) = event.get_mut("unsigned") {
        unsigned.insert("prev_content".into(), content);
        unsigned.insert("prev_sender".into(), Value::String(sender));
        unsigned.insert("replaces_state".into(), Value::String(event_id));
    }
    Ok(())
}

/// The users `user_id` ignores (`m.ignored_user_list` in their account data).
pub async fn ignored_users(
    services: &Services,
    user_id: &UserId,
) -> Result<std::collections::HashSet<String>, Error> {
    let Some(text) = services
        .store
        .account_data(user_id.as_str(), "", "m.ignored_user_list")
        .await?
    else {
        return Ok(Default::default());
    };
    Ok(serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|value| {
            value["ignored_users"]
                .as_object()
                .map(|users| users.keys().cloned().collect())
        })
        .unwrap_or_default())
}

/// The events of erased accounts among some rows, and whether the viewer was in the room when
/// each was sent: if not, it is shown redacted (as Synapse serves an erased user's events).
#[derive(Default)]
struct ErasedSenders {
    erased: std::collections::HashSet<String>,
    /// By room: what the viewer saw of it, and the room's rules.
    rooms: HashMap<String, (Visible, ruma::room_version_rules::RoomVersionRules)>,
}

impl ErasedSenders {
    async fn of(services: &Services, rows: &[EventRow], viewer: &UserId) -> Result<Self, Error> {
        let senders: Vec<&str> = rows
            .iter()
            .map(|row| row.sender.as_str())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let erased = services.store.erased_among(&senders).await?;
        let mut rooms = HashMap::new();
        for row in rows.iter().filter(|row| erased.contains(&row.sender)) {
            if rooms.contains_key(&row.room_id) {
                continue;
            }
            let room_id = RoomId::parse(&row.room_id)
                .map_err(|e| Error::Internal(format!("stored room id: {e}")))?;
            let version = services
                .store
                .room(room_id.as_str())
                .await?
                .ok_or_else(|| Error::Internal(format!("no record of room {room_id}")))?
                .room_version;
            let rules = crate::pdu::rules(
                &ruma::RoomVersionId::try_from(version.as_str())
                    .map_err(|e| Error::Internal(format!("stored room version {version}: {e}")))?,
            )?;
            let visible = visibility::for_user(&services.store, &room_id, viewer).await?;
            rooms.insert(row.room_id.clone(), (visible, rules));
        }
        Ok(ErasedSenders { erased, rooms })
    }

    /// The rules to redact a row by, when it is to be shown redacted.
    fn redact(&self, row: &EventRow) -> Option<&ruma::room_version_rules::RoomVersionRules> {
        if !self.erased.contains(&row.sender) {
            return None;
        }
        let (visible, rules) = self.rooms.get(&row.room_id)?;
        (!visible.was_joined(row.stream_ordering)).then_some(rules)
    }
}

/// Client-format events of state PDUs held in memory.
pub fn client_state_events(pdus: &[Arc<Pdu>], room_id: &RoomId) -> Vec<Map<String, Value>> {
    let unsigned = Unsigned {
        now: now_ms(),
        transaction_ids: None,
    };
    pdus.iter()
        .map(|pdu| {
            let mut event = pdu.to_client_value(room_id);
            unsigned.apply(pdu, &mut event, None);
            event
        })
        .collect()
}

/// Whether an event passes a room event filter.
pub fn filter_allows(filter: &RoomEventFilter, event: &Map<String, Value>) -> bool {
    let event_type = event.get("type").and_then(Value::as_str).unwrap_or("");
    let sender = event.get("sender").and_then(Value::as_str).unwrap_or("");
    let type_matches = |pattern: &str| match pattern.strip_suffix('*') {
        Some(prefix) => event_type.starts_with(prefix),
        None => event_type == pattern,
    };
    if filter.not_types.iter().any(|t| type_matches(t)) {
        return false;
    }
    if let Some(types) = &filter.types
        && !types.iter().any(|t| type_matches(t))
    {
        return false;
    }
    if filter.not_senders.iter().any(|s| s.as_str() == sender) {
        return false;
    }
    if let Some(senders) = &filter.senders
        && !senders.iter().any(|s| s.as_str() == sender)
    {
        return false;
    }
    if let Some(wants_url) = filter.url_filter {
        let has_url = event
            .get("content")
            .and_then(|content| content.get("url"))
            .is_some();
        if has_url
            != matches!(
                wants_url,
                ruma::api::client::filter::UrlFilter::EventsWithUrl
            )
        {
            return false;
        }
    }
    true
}

/// Parses a pagination token: `s<position>` (sync tokens `s<position>_<typing>` too).
pub fn parse_position(token: &str) -> Result<i64, Error> {
    token
        .strip_prefix('s')
        .and_then(|rest| rest.split('_').next())
        .and_then(|n| n.parse::<i64>().ok())
        .filter(|n| *n >= 0)
        .ok_or_else(|| Error::InvalidParam(format!("invalid pagination token {token:?}")))
}

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
        .current_state(&body.room_id)
        .await?
        .iter()
        .find(|pdu| {
            pdu.event_type.to_string() == event_type
                && pdu.state_key.as_deref() == Some(body.state_key.as_str())
                && pdu.sender == sender.user_id
        })
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

/// The events of a state group.
pub async fn state_at_group(services: &Services, group: i64) -> Result<Vec<Arc<Pdu>>, Error> {
    let state = services.store.state_group(group).await?;
    let ids: Vec<String> = state.into_values().collect();
    services
        .store
        .events(&ids)
        .await?
        .iter()
        .map(|row| Pdu::from_stored(&row.event_id, &row.json).map(Arc::new))
        .collect()
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
    let (first, last) = visible.bounds().unwrap_or((0, 0));
    let limit = limit_of(body.limit, 1000);
    let current = services.store.current_position().min(last);
    let from = match &body.from {
        Some(token) => parse_position(token)?,
        None => match body.dir {
            ApiDirection::Backward => current,
            _ => 0,
        },
    };
    let to = body.to.as_deref().map(parse_position).transpose()?;
    // Only the visible stretch of the room is read; events in gaps of it are left out.
    let before_first = first.saturating_sub(1).max(0);
    let (rows, next) = match body.dir {
        ApiDirection::Backward => {
            let lower = to.unwrap_or(0).max(before_first);
            let rows = services
                .store
                .room_events(
                    body.room_id.as_str(),
                    lower,
                    from.min(current),
                    Direction::Backward,
                    limit,
                )
                .await?;
            let next = (rows.len() as i64 == limit)
                .then(|| rows.last().map(|row| row.stream_ordering - 1))
                .flatten();
            (rows, next)
        }
        _ => {
            let upper = to.unwrap_or(current).min(current);
            let rows = services
                .store
                .room_events(
                    body.room_id.as_str(),
                    from.max(before_first),
                    upper,
                    Direction::Forward,
                    limit,
                )
                .await?;
            let next = (rows.len() as i64 == limit)
                .then(|| rows.last().map(|row| row.stream_ordering))
                .flatten();
            (rows, next)
        }
    };
    let rows: Vec<EventRow> = rows
        .into_iter()
        .filter(|row| visible.contains(row.stream_ordering))
        .collect();
    let events = client_events(&services, &rows, Some(sender)).await?;
    let mut response = get_message_events::v3::Response::new();
    response.start = format!("s{from}");
    response.end = next.map(|position| format!("s{position}"));
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
    let (first, until) = visible.bounds().unwrap_or((0, 0));
    let limit = limit_of(body.limit, 100);
    let before_limit = limit / 2;
    let after_limit = limit - before_limit;
    let before = services
        .store
        .room_events(
            body.room_id.as_str(),
            first.saturating_sub(1).max(0),
            row.stream_ordering - 1,
            Direction::Backward,
            before_limit.max(1),
        )
        .await?;
    let before: Vec<EventRow> = before.into_iter().take(before_limit as usize).collect();
    let after = services
        .store
        .room_events(
            body.room_id.as_str(),
            row.stream_ordering,
            until,
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
    response.start = Some(format!(
        "s{}",
        before
            .last()
            .map(|r| r.stream_ordering - 1)
            .unwrap_or(row.stream_ordering - 1)
    ));
    response.end = Some(format!(
        "s{}",
        after
            .last()
            .map(|r| r.stream_ordering)
            .unwrap_or(row.stream_ordering)
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
