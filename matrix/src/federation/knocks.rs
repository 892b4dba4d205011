//! Knocks across servers: another server's user asks to be let into a local room
//! (`make_knock`, `send_knock`, answered with the room's stripped state), and a local user
//! knocks on a room this server has no copy of, through one of its servers; the knock is kept
//! with the stripped state it was answered with (sync's `knock` section) until the user is
//! invited, or rescinds it (a leave through the room's servers).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use ruma::canonical_json::{CanonicalJsonObject, CanonicalJsonValue};
use ruma::{OwnedEventId, OwnedRoomId, OwnedServerName, OwnedUserId, RoomId, UserId};
use serde_json::{Value, json};

use super::invites::{federation_stripped_state, keep_membership, leave_through, strip_received};
use super::membership::{
    Signed, make_membership, receive_membership, remote_error, segment, sign_template,
    versions_asked, versions_offered,
};
use super::server::Federated;
use crate::Services;
use crate::error::Error;
use crate::pdu::Pdu;

/// # `GET /_matrix/federation/v1/make_knock/{roomId}/{userId}`: the template of a knock, for
/// a room whose version knows knocks and whose join rule lets one knock.
pub async fn make_knock_route(
    State(services): State<Arc<Services>>,
    Path((room_id, user_id)): Path<(OwnedRoomId, OwnedUserId)>,
    RawQuery(query): RawQuery,
    request: Federated,
) -> Result<Json<Value>, Error> {
    let versions = versions_asked(query.as_deref());
    if services.rooms.exists(&room_id).await? {
        let rules = services.rooms.rules(&room_id).await?;
        if !rules.authorization.knocking {
            return Err(Error::IncompatibleRoomVersion {
                room_version: services.rooms.version(&room_id).await?.to_string(),
            });
        }
        let join_rule = services
            .rooms
            .state_event(&room_id, "m.room.join_rules", "")
            .await?
            .and_then(|pdu| {
                pdu.content_value()
                    .get("join_rule")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            });
        let knockable = match join_rule.as_deref() {
            Some("knock") => true,
            Some("knock_restricted") => rules.authorization.knock_restricted_join_rule,
            _ => false,
        };
        if !knockable {
            return Err(Error::Forbidden(format!(
                "the join rule of {room_id} does not let anyone knock"
            )));
        }
    }
    make_membership(
        &services,
        &request,
        &room_id,
        &user_id,
        "knock",
        Some(&versions),
    )
    .await
}

/// # `PUT /_matrix/federation/v1/send_knock/{roomId}/{eventId}`: another server's user's
/// knock, taken in and answered with the room's stripped state.
pub async fn send_knock_route(
    State(services): State<Arc<Services>>,
    Path((room_id, event_id)): Path<(OwnedRoomId, OwnedEventId)>,
    request: Federated,
) -> Result<Json<Value>, Error> {
    let knock = receive_membership(&services, &request, &room_id, &event_id, "knock").await?;
    let state = federation_stripped_state(&services, &room_id, &[knock.sender.as_str()]).await?;
    Ok(Json(json!({
        "knock_room_state": state,
        // The name of the field before the specification settled it, read by older servers.
        "knock_state_events": state,
    })))
}

/// A local user knocks on a room this server has no copy of, through the first of `servers`
/// that takes the knock; the knock is kept with the room's stripped state.
pub async fn knock_remote(
    services: &Services,
    room_id: &RoomId,
    user_id: &UserId,
    servers: &[OwnedServerName],
    reason: Option<&str>,
) -> Result<(), Error> {
    let versions = versions_offered();
    let mut last = Error::NotFound(format!("no server to knock on {room_id} through"));
    for server in servers
        .iter()
        .filter(|server| **server != services.server_name)
    {
        let mut content = CanonicalJsonObject::new();
        content.insert(
            "membership".into(),
            CanonicalJsonValue::String("knock".into()),
        );
        if let Some(reason) = reason {
            content.insert("reason".into(), CanonicalJsonValue::String(reason.into()));
        }
        let signed = sign_template(
            services, server, room_id, user_id, "knock", &versions, content,
        )
        .await;
        let Signed {
            event, event_id, ..
        } = match signed {
            Ok(signed) => signed,
            Err(error) => {
                tracing::info!(%room_id, %server, %error, "knocking through this server failed");
                last = error;
                continue;
            }
        };
        let uri = format!(
            "/_matrix/federation/v1/send_knock/{}/{}",
            segment(room_id.as_str()),
            segment(event_id.as_str())
        );
        let body = serde_json::to_value(&event).map_err(|e| Error::Internal(e.to_string()))?;
        let answer = match services
            .federation
            .request(server, http::Method::PUT, &uri, Some(&body), true)
            .await
        {
            Ok(answer) => answer,
            Err(error) => {
                last = remote_error(error);
                continue;
            }
        };
        let state = strip_received(
            answer
                .get("knock_room_state")
                .or_else(|| answer.get("knock_state_events")),
        );
        let knock = Pdu::from_json(event_id, event).map_err(Error::Internal)?;
        return keep_membership(services, &knock, "knock", Some(&Value::Array(state))).await;
    }
    Err(last)
}

/// A local user takes back a knock on a room this server has no copy of: a leave through
/// the servers of the room's stripped state (its creator's first), then kept here.
pub async fn rescind_remote_knock(
    services: &Services,
    room_id: &RoomId,
    user_id: &UserId,
    reason: Option<&str>,
) -> Result<(), Error> {
    let state: Vec<Value> = services
        .store
        .invite_state(room_id.as_str(), user_id.as_str())
        .await?
        .and_then(|state| serde_json::from_str(&state).ok())
        .unwrap_or_default();
    let mut servers: Vec<OwnedServerName> = Vec::new();
    let creator_first = state
        .iter()
        .filter(|event| event["type"] == "m.room.create")
        .chain(
            state
                .iter()
                .filter(|event| event["type"] != "m.room.create"),
        );
    for event in creator_first {
        if let Some(server) = event["sender"]
            .as_str()
            .and_then(|sender| UserId::parse(sender).ok())
            .map(|sender| sender.server_name().to_owned())
            && server != services.server_name
            && !servers.contains(&server)
        {
            servers.push(server);
        }
    }
    if let Some(server) = room_id.server_name()
        && *server != services.server_name
        && !servers.iter().any(|known| known == server)
    {
        servers.push(server.to_owned());
    }
    let mut last = Error::NotFound(format!("no server to take back the knock on {room_id}"));
    for server in &servers {
        match leave_through(services, server, room_id, user_id, reason).await {
            Ok(leave) => return keep_membership(services, &leave, "leave", None).await,
            Err(error) => last = error,
        }
    }
    Err(last)
}
