//! Typing notifications, receipts, read markers and presence.

use std::sync::Arc;
use std::time::Duration;

use ruma::api::client::presence::{get_presence, set_presence};
use ruma::api::client::read_marker::set_read_marker;
use ruma::api::client::receipt::create_receipt;
use ruma::api::client::typing::create_typing_event;
use ruma::events::receipt::ReceiptThread;
use ruma::presence::PresenceState;
use ruma::{EventId, RoomId, UserId};
use serde_json::json;

use crate::Services;
use crate::api::client::events::require_joined;
use crate::api::ruma_wrapper::Ruma;
use crate::error::Error;
use crate::store::{ReceiptRecord, now_ms};

/// The longest a typing notification lasts without being renewed.
const MAX_TYPING: Duration = Duration::from_secs(120);

/// # `PUT /_matrix/client/v3/rooms/{roomId}/typing/{userId}`
pub async fn create_typing_event_route(
    services: Arc<Services>,
    request: Ruma<create_typing_event::v3::Request>,
) -> Result<create_typing_event::v3::Response, Error> {
    let sender = request.sender()?;
    let body = &request.body;
    if body.user_id != sender.user_id {
        return Err(Error::Forbidden(
            "you can only set your own typing state".into(),
        ));
    }
    require_joined(&services, &body.room_id, &sender.user_id).await?;
    let typing = match &body.state {
        ruma::api::client::typing::create_typing_event::v3::Typing::Yes(info) => {
            services.typing.set(
                &body.room_id,
                &sender.user_id,
                Some(info.timeout.min(MAX_TYPING)),
            );
            true
        }
        _ => {
            services.typing.set(&body.room_id, &sender.user_id, None);
            false
        }
    };
    crate::federation::sender::queue_room_edu(
        &services,
        &body.room_id,
        json!({
            "edu_type": "m.typing",
            "content": {"room_id": body.room_id, "user_id": sender.user_id, "typing": typing},
        }),
    )
    .await?;
    Ok(create_typing_event::v3::Response::new())
}

async fn event_in_room(
    services: &Services,
    room_id: &RoomId,
    event_id: &EventId,
) -> Result<(), Error> {
    match services.store.event(event_id.as_str()).await? {
        Some(row) if row.room_id == room_id.as_str() => Ok(()),
        _ => Err(Error::NotFound(format!(
            "event {event_id} not found in this room"
        ))),
    }
}

async fn store_receipt(
    services: &Services,
    room_id: &RoomId,
    user_id: &UserId,
    receipt_type: &str,
    event_id: &EventId,
    thread: &ReceiptThread,
) -> Result<(), Error> {
    event_in_room(services, room_id, event_id).await?;
    let thread_id = match thread {
        ReceiptThread::Main => "main".to_owned(),
        ReceiptThread::Thread(id) => id.to_string(),
        _ => String::new(),
    };
    let ts = now_ms();
    services
        .store
        .set_receipt(&ReceiptRecord {
            room_id: room_id.to_string(),
            receipt_type: receipt_type.to_owned(),
            user_id: user_id.to_string(),
            thread_id: thread_id.clone(),
            event_id: event_id.to_string(),
            ts,
        })
        .await?;
    // Public read receipts go to the room's other servers; private ones stay here.
    if receipt_type == "m.read" {
        let mut data = json!({ "ts": ts });
        if !thread_id.is_empty() {
            data["thread_id"] = json!(thread_id);
        }
        crate::federation::sender::queue_room_edu(
            services,
            room_id,
            json!({
                "edu_type": "m.receipt",
                "content": {
                    room_id.as_str(): {"m.read": {user_id.as_str(): {"event_ids": [event_id], "data": data}}}
                },
            }),
        )
        .await?;
    }
    Ok(())
}

async fn set_fully_read(
    services: &Services,
    room_id: &RoomId,
    user_id: &UserId,
    event_id: &EventId,
) -> Result<(), Error> {
    event_in_room(services, room_id, event_id).await?;
    services
        .store
        .set_account_data(
            user_id.as_str(),
            room_id.as_str(),
            "m.fully_read",
            &json!({ "event_id": event_id }).to_string(),
        )
        .await?;
    Ok(())
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/receipt/{receiptType}/{eventId}`
pub async fn create_receipt_route(
    services: Arc<Services>,
    request: Ruma<create_receipt::v3::Request>,
) -> Result<create_receipt::v3::Response, Error> {
    let sender = request.sender()?;
    let body = &request.body;
    require_joined(&services, &body.room_id, &sender.user_id).await?;
    use create_receipt::v3::ReceiptType;
    match &body.receipt_type {
        ReceiptType::Read => {
            store_receipt(
                &services,
                &body.room_id,
                &sender.user_id,
                "m.read",
                &body.event_id,
                &body.thread,
            )
            .await?
        }
        ReceiptType::ReadPrivate => {
            store_receipt(
                &services,
                &body.room_id,
                &sender.user_id,
                "m.read.private",
                &body.event_id,
                &body.thread,
            )
            .await?
        }
        ReceiptType::FullyRead => {
            set_fully_read(&services, &body.room_id, &sender.user_id, &body.event_id).await?
        }
        other => {
            return Err(Error::InvalidParam(format!(
                "unknown receipt type {}",
                other.as_str()
            )));
        }
    }
    Ok(create_receipt::v3::Response::new())
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/read_markers`
pub async fn set_read_marker_route(
    services: Arc<Services>,
    request: Ruma<set_read_marker::v3::Request>,
) -> Result<set_read_marker::v3::Response, Error> {
    let sender = request.sender()?;
    let body = &request.body;
    require_joined(&services, &body.room_id, &sender.user_id).await?;
    if let Some(event_id) = &body.fully_read {
        set_fully_read(&services, &body.room_id, &sender.user_id, event_id).await?;
    }
    if let Some(event_id) = &body.read_receipt {
        store_receipt(
            &services,
            &body.room_id,
            &sender.user_id,
            "m.read",
            event_id,
            &ReceiptThread::Unthreaded,
        )
        .await?;
    }
    if let Some(event_id) = &body.private_read_receipt {
        store_receipt(
            &services,
            &body.room_id,
            &sender.user_id,
            "m.read.private",
            event_id,
            &ReceiptThread::Unthreaded,
        )
        .await?;
    }
    Ok(set_read_marker::v3::Response::new())
}

/// # `PUT /_matrix/client/v3/presence/{userId}/status`
pub async fn set_presence_route(
    services: Arc<Services>,
    request: Ruma<set_presence::v3::Request>,
) -> Result<set_presence::v3::Response, Error> {
    let sender = request.sender()?;
    if request.body.user_id != sender.user_id {
        return Err(Error::Forbidden(
            "you can only set your own presence".into(),
        ));
    }
    let state = request.body.presence.as_str();
    if !matches!(state, "online" | "offline" | "unavailable") {
        return Err(Error::InvalidParam(format!("unknown presence {state}")));
    }
    services
        .store
        .set_presence(
            sender.user_id.as_str(),
            state,
            request.body.status_msg.as_deref(),
        )
        .await?;
    Ok(set_presence::v3::Response::new())
}

/// # `GET /_matrix/client/v3/presence/{userId}/status`
pub async fn get_presence_route(
    services: Arc<Services>,
    request: Ruma<get_presence::v3::Request>,
) -> Result<get_presence::v3::Response, Error> {
    let sender = request.sender()?;
    let target = &request.body.user_id;
    if target != &sender.user_id
        && !services
            .store
            .share_a_room(sender.user_id.as_str(), target.as_str())
            .await?
    {
        return Err(Error::Forbidden(
            "you do not share a room with this user".into(),
        ));
    }
    // Another server's user's presence is what their server told (offline until it did).
    if services.is_local(target) && services.store.user(target.as_str()).await?.is_none() {
        return Err(Error::NotFound("unknown user".into()));
    }
    let presence = services.store.presence(target.as_str()).await?;
    let mut response = get_presence::v3::Response::new(
        presence
            .as_ref()
            .map(|p| PresenceState::from(p.state.as_str()))
            .unwrap_or(PresenceState::Offline),
    );
    if let Some(presence) = presence {
        response.status_msg = presence.status_msg;
        response.currently_active = Some(presence.state == "online");
        response.last_active_ago = Some(Duration::from_millis(
            u64::try_from(now_ms() - presence.last_active_ts).unwrap_or(0),
        ));
    }
    Ok(response)
}
