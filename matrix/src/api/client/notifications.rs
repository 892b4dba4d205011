//! Pushers (`/pushers`, `/pushers/set`) and the list of a user's notifications
//! (`/notifications`). Delivery to push gateways is [`crate::push::notifier`]'s.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::events::client_events;
use crate::Services;
use crate::api::Authenticated;
use crate::error::Error;
use crate::push::notifier;
use crate::store::{EventRow, Pusher, now_ms};

/// The longest pushkey the specification allows, in bytes.
const MAX_PUSHKEY_BYTES: usize = 512;
/// The longest app id the specification allows, in characters.
const MAX_APP_ID_CHARS: usize = 64;

fn pusher_json(pusher: &Pusher) -> Value {
    let data: Value = serde_json::from_str(&pusher.data).unwrap_or_else(|_| json!({}));
    let mut value = json!({
        "pushkey": pusher.pushkey,
        "kind": pusher.kind,
        "app_id": pusher.app_id,
        "app_display_name": pusher.app_display_name,
        "device_display_name": pusher.device_display_name,
        "lang": pusher.lang,
        "data": data,
    });
    if let (Some(tag), Some(object)) = (&pusher.profile_tag, value.as_object_mut()) {
        object.insert("profile_tag".into(), json!(tag));
    }
    value
}

/// # `GET /_matrix/client/v3/pushers`
pub async fn get_pushers_route(
    State(services): State<Arc<Services>>,
    Authenticated(sender): Authenticated,
) -> Result<Json<Value>, Error> {
    let pushers: Vec<Value> = services
        .store
        .pushers(sender.user_id.as_str())
        .await?
        .iter()
        .map(pusher_json)
        .collect();
    Ok(Json(json!({ "pushers": pushers })))
}

/// A required string field of the request.
fn required<'a>(body: &'a Map<String, Value>, field: &str) -> Result<&'a str, Error> {
    match body.get(field) {
        Some(Value::String(value)) => Ok(value),
        Some(_) => Err(Error::BadJson(format!("`{field}` must be a string"))),
        None => Err(Error::MissingParam(format!("`{field}` is required"))),
    }
}

/// # `POST /_matrix/client/v3/pushers/set`: adds, replaces (same app id and pushkey) or, with
/// `kind: null`, removes a pusher.
pub async fn set_pusher_route(
    State(services): State<Arc<Services>>,
    Authenticated(sender): Authenticated,
    body: Bytes,
) -> Result<Json<Value>, Error> {
    let body: Value =
        serde_json::from_slice(&body).map_err(|e| Error::NotJson(format!("request body: {e}")))?;
    let Value::Object(body) = body else {
        return Err(Error::BadJson("the request body must be an object".into()));
    };
    let user_id = sender.user_id.as_str();
    let app_id = required(&body, "app_id")?;
    let pushkey = required(&body, "pushkey")?;
    if app_id.is_empty() || app_id.chars().count() > MAX_APP_ID_CHARS {
        return Err(Error::InvalidParam(format!(
            "`app_id` must have 1 to {MAX_APP_ID_CHARS} characters"
        )));
    }
    if pushkey.is_empty() || pushkey.len() > MAX_PUSHKEY_BYTES {
        return Err(Error::InvalidParam(format!(
            "`pushkey` must have 1 to {MAX_PUSHKEY_BYTES} bytes"
        )));
    }
    let kind = match body.get("kind") {
        None => return Err(Error::MissingParam("`kind` is required".into())),
        Some(Value::Null) => {
            services
                .store
                .delete_pusher(user_id, app_id, pushkey)
                .await?;
            return Ok(Json(json!({})));
        }
        Some(Value::String(kind)) => kind.as_str(),
        Some(_) => return Err(Error::BadJson("`kind` must be a string or null".into())),
    };
    if kind != "http" {
        return Err(Error::InvalidParam(format!(
            "pushers of kind {kind:?} are not supported here: only \"http\""
        )));
    }
    let app_display_name = required(&body, "app_display_name")?;
    let device_display_name = required(&body, "device_display_name")?;
    let lang = required(&body, "lang")?;
    let profile_tag = match body.get("profile_tag") {
        None | Some(Value::Null) => None,
        Some(Value::String(tag)) => Some(tag.clone()),
        Some(_) => return Err(Error::BadJson("`profile_tag` must be a string".into())),
    };
    let data = match body.get("data") {
        Some(Value::Object(data)) => data,
        Some(_) => return Err(Error::BadJson("`data` must be an object".into())),
        None => return Err(Error::MissingParam("`data` is required".into())),
    };
    let url = match data.get("url") {
        Some(Value::String(url)) => url,
        Some(_) => return Err(Error::BadJson("`data.url` must be a string".into())),
        None => {
            return Err(Error::MissingParam(
                "`data.url` is required for HTTP pushers".into(),
            ));
        }
    };
    services
        .pushers
        .gateway
        .check_url(url)
        .map_err(|e| Error::InvalidParam(format!("`data.url`: {e}")))?;
    if let Some(format) = data.get("format")
        && format != "event_id_only"
    {
        return Err(Error::InvalidParam(
            "`data.format` must be \"event_id_only\" when present".into(),
        ));
    }
    let append = match body.get("append") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(append)) => *append,
        Some(_) => return Err(Error::BadJson("`append` must be a boolean".into())),
    };
    let pusher = Pusher {
        user_id: user_id.to_owned(),
        device_id: sender.device_id.to_string(),
        app_id: app_id.to_owned(),
        pushkey: pushkey.to_owned(),
        kind: kind.to_owned(),
        app_display_name: app_display_name.to_owned(),
        device_display_name: device_display_name.to_owned(),
        profile_tag,
        lang: lang.to_owned(),
        data: Value::Object(data.clone()).to_string(),
        pushkey_ts: now_ms(),
        last_sent: 0,
    };
    services.store.set_pusher(&pusher, append).await?;
    notifier::wake(&services, &pusher).await;
    Ok(Json(json!({})))
}

/// # `GET /_matrix/client/v3/notifications`: the user's notifications, newest first, with
/// `only=highlight` and paging by `from`.
pub async fn get_notifications_route(
    State(services): State<Arc<Services>>,
    Authenticated(sender): Authenticated,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, Error> {
    let before = match query.get("from") {
        Some(from) => from
            .parse::<i64>()
            .map_err(|_| Error::InvalidParam(format!("invalid `from` token {from:?}")))?,
        None => i64::MAX,
    };
    let limit = match query.get("limit") {
        Some(limit) => limit
            .parse::<i64>()
            .ok()
            .filter(|limit| *limit >= 0)
            .ok_or_else(|| Error::InvalidParam("`limit` must be a non-negative integer".into()))?
            .clamp(1, 1000),
        None => 50,
    };
    let only_highlight = match query.get("only").map(String::as_str) {
        None | Some("") => false,
        Some("highlight") => true,
        Some(other) => {
            return Err(Error::InvalidParam(format!(
                "`only` may be \"highlight\", not {other:?}"
            )));
        }
    };
    let user_id = sender.user_id.as_str();
    let (found, next_token) = crate::push::notifications_before(
        &services,
        &sender.user_id,
        before,
        only_highlight,
        usize::try_from(limit).unwrap_or(50),
    )
    .await?;
    let rows: Vec<EventRow> = found.iter().map(|(row, _)| row.clone()).collect();
    let formatted = client_events(&services, &rows, Some(&sender)).await?;
    let by_id: HashMap<&str, &Map<String, Value>> = formatted
        .iter()
        .filter_map(|event| Some((event.get("event_id")?.as_str()?, event)))
        .collect();
    let mut read_positions: HashMap<&str, i64> = HashMap::new();
    let mut notifications = Vec::with_capacity(found.len());
    for (row, actions) in &found {
        // Events hidden from the user (history visibility, an ignored sender) are left out.
        let Some(event) = by_id.get(row.event_id.as_str()) else {
            continue;
        };
        let read_position = match read_positions.get(row.room_id.as_str()) {
            Some(position) => *position,
            None => {
                let position = services.store.read_position(&row.room_id, user_id).await?;
                read_positions.insert(&row.room_id, position);
                position
            }
        };
        notifications.push(json!({
            "actions": actions,
            "event": event,
            "read": read_position >= row.stream_ordering,
            "room_id": row.room_id,
            "ts": event.get("origin_server_ts").cloned().unwrap_or(json!(0)),
        }));
    }
    let next_token = next_token.map(|position| position.to_string());
    let mut response = json!({ "notifications": notifications });
    if let (Some(token), Some(object)) = (next_token, response.as_object_mut()) {
        object.insert("next_token".into(), json!(token));
    }
    Ok(Json(response))
}
