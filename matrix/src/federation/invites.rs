//! Invites across servers. An invite of another server's user is signed by that server too
//! before it is stored (`PUT /_matrix/federation/v2/invite`); an invite of a local user to a
//! room of another server is signed here, and kept with the stripped state it came with until
//! the user joins (through the inviting server) or rejects it (a leave through the inviting
//! server, `make_leave`/`send_leave`).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use ruma::canonical_json::{CanonicalJsonObject, CanonicalJsonValue};
use ruma::room_version_rules::RoomVersionRules;
use ruma::{OwnedEventId, OwnedRoomId, OwnedServerName, RoomId, RoomVersionId, ServerName, UserId};
use serde_json::{Value, json};

use super::client::FederationError;
use super::membership::{Signed, remote_error, segment, sign_template};
use super::pdu;
use super::server::Federated;
use crate::Services;
use crate::error::Error;
use crate::pdu::Pdu;
use crate::rooms::{NewLocalEvent, Received};

/// The state events an invite shows of its room.
const STRIPPED: [&str; 7] = [
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.encryption",
    "m.room.topic",
];

/// The stripped state of a room this server is in: the events that let a client present it,
/// with the member events of `members`.
pub async fn stripped_state(
    services: &Services,
    room_id: &RoomId,
    members: &[&str],
) -> Result<Vec<Value>, Error> {
    Ok(presenting_state(services, room_id, members)
        .await?
        .iter()
        .map(|pdu| stripped(pdu))
        .collect())
}

/// The same events as whole PDUs, as servers give them to each other with an invite or a
/// knock (`invite_room_state`, `knock_room_state`), so that the receiver can check the create
/// event against the room id.
pub async fn federation_stripped_state(
    services: &Services,
    room_id: &RoomId,
    members: &[&str],
) -> Result<Vec<Value>, Error> {
    let ids: Vec<String> = presenting_state(services, room_id, members)
        .await?
        .iter()
        .map(|pdu| pdu.event_id.to_string())
        .collect();
    services
        .store
        .events(&ids)
        .await?
        .iter()
        .map(|row| super::membership::federation_json(&row.json))
        .collect()
}

/// What another server gave as a room's stripped state, whole PDUs or stripped events, as
/// clients are shown it: the type, state key, content and sender of each event that has them.
pub fn strip_received(state: Option<&Value>) -> Vec<Value> {
    state
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|event| {
            event.get("type").is_some_and(Value::is_string)
                && event.get("state_key").is_some_and(Value::is_string)
                && event.get("content").is_some_and(Value::is_object)
        })
        .map(|event| {
            json!({
                "type": event["type"],
                "state_key": event["state_key"],
                "content": event["content"],
                "sender": event.get("sender").cloned().unwrap_or(Value::Null),
            })
        })
        .collect()
}

async fn presenting_state(
    services: &Services,
    room_id: &RoomId,
    members: &[&str],
) -> Result<Vec<std::sync::Arc<Pdu>>, Error> {
    let mut events = Vec::new();
    for pdu in services.rooms.current_state(room_id).await? {
        let event_type = pdu.event_type.to_string();
        let shown = STRIPPED.contains(&event_type.as_str())
            || (event_type == "m.room.member"
                && pdu
                    .state_key
                    .as_deref()
                    .is_some_and(|key| members.contains(&key)));
        if shown {
            events.push(pdu);
        }
    }
    Ok(events)
}

fn stripped(pdu: &Pdu) -> Value {
    json!({
        "type": pdu.event_type.to_string(),
        "state_key": pdu.state_key,
        "content": pdu.content_value(),
        "sender": pdu.sender,
    })
}

/// # `PUT /_matrix/federation/v2/invite/{roomId}/{eventId}`: another server's user invites a
/// local user. The invite is checked, signed by this server and kept.
pub async fn invite_v2_route(
    State(services): State<Arc<Services>>,
    Path((room_id, event_id)): Path<(OwnedRoomId, OwnedEventId)>,
    request: Federated,
) -> Result<Json<Value>, Error> {
    let Some(CanonicalJsonValue::Object(body)) = &request.body else {
        return Err(Error::NotJson("an invite is a JSON object".into()));
    };
    let version = body
        .get("room_version")
        .and_then(CanonicalJsonValue::as_str)
        .ok_or_else(|| Error::BadJson("`room_version` is required".into()))?;
    let version = RoomVersionId::try_from(version)
        .map_err(|e| Error::BadJson(format!("invalid `room_version`: {e}")))?;
    let rules = crate::pdu::rules(&version).map_err(|_| Error::IncompatibleRoomVersion {
        room_version: version.to_string(),
    })?;
    let event = body
        .get("event")
        .ok_or_else(|| Error::BadJson("`event` is required".into()))?;
    let invite = pdu::check(&services, &rules, pdu::as_object(event)?).await?;
    if invite.event_id != event_id {
        return Err(Error::BadJson(format!(
            "the event's id is {}, not {event_id}",
            invite.event_id
        )));
    }
    if invite.room_id_or_derived()? != room_id {
        return Err(Error::BadJson("the invite is for another room".into()));
    }
    if invite.sender.server_name() != request.origin {
        return Err(Error::Forbidden(format!(
            "{} may not send an invite of {}",
            request.origin, invite.sender
        )));
    }
    let content = invite.content_value();
    let invitee = invite
        .state_key
        .as_deref()
        .and_then(|key| UserId::parse(key).ok())
        .filter(|_| invite.event_type.to_string() == "m.room.member")
        .filter(|_| content.get("membership").and_then(Value::as_str) == Some("invite"))
        .ok_or_else(|| Error::BadJson("not an invite".into()))?;
    if invitee.server_name() != services.server_name {
        return Err(Error::BadJson(format!(
            "{invitee} is not a user of this server"
        )));
    }
    let known = services
        .store
        .user(invitee.as_str())
        .await?
        .is_some_and(|user| !user.deactivated);
    if !known && !services.provision_user(&invitee).await? {
        return Err(Error::NotFound(format!("unknown user {invitee}")));
    }
    let mut signed = invite.json.clone();
    ruma::signatures::sign_event(
        services.server_name.as_str(),
        &*services.key,
        &mut signed,
        &rules.redaction,
    )
    .map_err(|e| Error::Internal(format!("signing an invite: {e}")))?;
    let mut kept = invite.clone();
    kept.json = signed.clone();
    if services.rooms.exists(&room_id).await? {
        super::acl::check(&services, &room_id, &request.origin).await?;
        // A room this server is in: the invite takes its place in the room's graph.
        match services.rooms.receive_pdu(&room_id, kept).await? {
            Received::Accepted { .. } | Received::Known => {}
            Received::Missing { .. } => {
                return Err(Error::BadJson(
                    "the invite follows events this server does not have".into(),
                ));
            }
            Received::SoftFailed(reason) | Received::Rejected(reason) => {
                return Err(Error::Forbidden(format!(
                    "the invite is not allowed: {reason}"
                )));
            }
        }
    } else {
        let given = body
            .get("invite_room_state")
            .and_then(|state| serde_json::to_value(state).ok());
        let state = strip_received(given.as_ref());
        keep_membership(&services, &kept, "invite", Some(&Value::Array(state))).await?;
        let is_direct = content.get("is_direct").and_then(Value::as_bool) == Some(true);
        services.invited_remotely(
            room_id.clone(),
            invitee.clone(),
            invite.sender.clone(),
            is_direct,
        );
    }
    Ok(Json(json!({ "event": CanonicalJsonValue::Object(signed) })))
}

/// # `PUT /_matrix/federation/v1/invite/{roomId}/{eventId}`: the first version of the invite
/// endpoint. Its requests name no room version, and the specification has the receiver take
/// the room to be of version 1 or 2, versions this server does not take part in (6 to 12):
/// the invite is refused as `M_INCOMPATIBLE_ROOM_VERSION`, once the request is authenticated.
pub async fn invite_v1_route(
    Path((_room_id, _event_id)): Path<(OwnedRoomId, OwnedEventId)>,
    _request: Federated,
) -> Result<Json<Value>, Error> {
    Err(Error::IncompatibleRoomVersion {
        room_version: "1".into(),
    })
}

/// Keeps a membership of a local user in a room this server has no copy of.
pub(super) async fn keep_membership(
    services: &Services,
    event: &Pdu,
    membership: &str,
    invite_state: Option<&Value>,
) -> Result<(), Error> {
    let room_id = event.room_id_or_derived()?;
    let outlier = event.to_outlier(None);
    let state = invite_state.map(ToString::to_string);
    let mut writer = services.store.stream_writer().await;
    services
        .store
        .persist_remote_membership(
            &mut writer,
            room_id.as_str(),
            &outlier,
            membership,
            state.as_deref(),
        )
        .await?;
    writer.publish();
    Ok(())
}

/// A local user invites another server's user to a room of this server: the invite is built
/// on the room's state, signed by the invitee's server, then stored and sent to the room.
pub async fn invite_remote(
    services: &Services,
    room_id: &RoomId,
    sender: &UserId,
    invitee: &UserId,
    content: CanonicalJsonObject,
) -> Result<(), Error> {
    let invite = services
        .rooms
        .build(
            room_id,
            NewLocalEvent::new(sender, "m.room.member", Some(invitee.as_str()), content),
        )
        .await?;
    let version = services.rooms.version(room_id).await?;
    let rules = services.rooms.rules(room_id).await?;
    let state = federation_stripped_state(services, room_id, &[sender.as_str()]).await?;
    let body = json!({
        "event": CanonicalJsonValue::Object(invite.json.clone()),
        "room_version": version,
        "invite_room_state": state,
    });
    let uri = format!(
        "/_matrix/federation/v2/invite/{}/{}",
        segment(room_id.as_str()),
        segment(invite.event_id.as_str())
    );
    let answer = services
        .federation
        .request(
            invitee.server_name(),
            http::Method::PUT,
            &uri,
            Some(&body),
            true,
        )
        .await
        .map_err(|error| match error {
            FederationError::Status(..) => remote_error(error),
            // Nobody answered: the invite is not made.
            other => Error::BadGateway(format!("the invitee's server: {other}")),
        })?;
    let signed = answer
        .get("event")
        .cloned()
        .map(CanonicalJsonValue::try_from)
        .and_then(Result::ok)
        .ok_or_else(|| Error::BadJson("the invitee's server answered no event".into()))?;
    let signed = pdu::check(services, &rules, pdu::as_object(&signed)?).await?;
    if signed.event_id != invite.event_id {
        return Err(Error::BadJson(
            "the invitee's server answered another event".into(),
        ));
    }
    check_signed_by(services, &signed, invitee.server_name(), &rules).await?;
    match services.rooms.receive_pdu(room_id, signed).await? {
        Received::Accepted { .. } | Received::Known => Ok(()),
        other => Err(Error::Forbidden(format!(
            "the invite was not taken: {other:?}"
        ))),
    }
}

/// Fails unless `server` signed the event.
async fn check_signed_by(
    services: &Services,
    event: &Pdu,
    server: &ServerName,
    rules: &RoomVersionRules,
) -> Result<(), Error> {
    let key_ids: Vec<String> = event
        .json
        .get("signatures")
        .and_then(CanonicalJsonValue::as_object)
        .and_then(|signatures| signatures.get(server.as_str()))
        .and_then(CanonicalJsonValue::as_object)
        .map(|keys| keys.keys().cloned().collect())
        .unwrap_or_default();
    let mut keys = ruma::signatures::PublicKeySet::new();
    for key_id in key_ids.iter().filter(|id| id.starts_with("ed25519:")) {
        if let Ok(key) = services
            .server_keys
            .key(&services.federation, server, key_id, crate::store::now_ms())
            .await
        {
            keys.insert(key_id.clone(), ruma::serde::Base64::new(key));
        }
    }
    if keys.is_empty() {
        return Err(Error::Forbidden(format!(
            "{server} did not sign the invite"
        )));
    }
    let mut map = ruma::signatures::PublicKeyMap::new();
    map.insert(server.to_string(), keys);
    // Every signature the event carries is checked: this server's own (it signed the invite).
    let mut own = ruma::signatures::PublicKeySet::new();
    own.insert(
        format!("ed25519:{}", services.key.version()),
        ruma::serde::Base64::new(services.key.public_key().to_vec()),
    );
    map.insert(services.server_name.to_string(), own);
    let redacted = ruma::canonical_json::redact(event.json.clone(), &rules.redaction, None)
        .map_err(|e| Error::Internal(format!("redacting: {e}")))?;
    ruma::signatures::verify_json(&map, &redacted)
        .map_err(|e| Error::Forbidden(format!("{server}'s signature of the invite: {e}")))
}

/// The server that sent a local user's invite to a room this server has no copy of.
pub async fn inviting_server(
    services: &Services,
    room_id: &RoomId,
    user_id: &UserId,
) -> Result<Option<OwnedServerName>, Error> {
    let Some((_, event_id)) = services
        .store
        .membership_event(room_id.as_str(), user_id.as_str())
        .await?
        .filter(|(membership, _)| membership == "invite")
    else {
        return Ok(None);
    };
    Ok(services
        .store
        .event(&event_id)
        .await?
        .and_then(|event| UserId::parse(event.sender).ok())
        .map(|sender| sender.server_name().to_owned()))
}

/// A local user rejects an invite to a room this server has no copy of: a leave made
/// through the inviting server (`make_leave`, `send_leave`), then kept here.
pub async fn reject_remote_invite(
    services: &Services,
    room_id: &RoomId,
    user_id: &UserId,
    reason: Option<&str>,
) -> Result<(), Error> {
    let server = inviting_server(services, room_id, user_id)
        .await?
        .ok_or_else(|| Error::NotFound("no invite to reject".into()))?;
    let leave = leave_through(services, &server, room_id, user_id, reason).await?;
    keep_membership(services, &leave, "leave", None).await
}

/// A local user's leave of a room this server has no copy of, made through `server`
/// (`make_leave`, `send_leave`): the leave as sent, for the caller to keep.
pub async fn leave_through(
    services: &Services,
    server: &ServerName,
    room_id: &RoomId,
    user_id: &UserId,
    reason: Option<&str>,
) -> Result<Pdu, Error> {
    let mut content = CanonicalJsonObject::new();
    content.insert(
        "membership".into(),
        CanonicalJsonValue::String("leave".into()),
    );
    if let Some(reason) = reason {
        content.insert("reason".into(), CanonicalJsonValue::String(reason.into()));
    }
    let Signed {
        event, event_id, ..
    } = sign_template(services, server, room_id, user_id, "leave", "", content).await?;
    let uri = format!(
        "/_matrix/federation/v2/send_leave/{}/{}",
        segment(room_id.as_str()),
        segment(event_id.as_str())
    );
    let body = serde_json::to_value(&event).map_err(|e| Error::Internal(e.to_string()))?;
    services
        .federation
        .request(server, http::Method::PUT, &uri, Some(&body), true)
        .await
        .map_err(remote_error)?;
    Pdu::from_json(event_id, event).map_err(Error::Internal)
}
