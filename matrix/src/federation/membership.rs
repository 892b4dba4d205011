//! Joining and leaving across servers: `make_join`/`send_join` (v1 and v2) and
//! `make_leave`/`send_leave` answered for other servers' users, and local users joining rooms
//! of which this server has no copy through a resident server.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use ruma::canonical_json::{CanonicalJsonObject, CanonicalJsonValue};
use ruma::{
    EventId, OwnedEventId, OwnedRoomId, OwnedServerName, OwnedUserId, RoomId, RoomVersionId,
    ServerName, UserId,
};
use serde_json::{Value, json};

use super::pdu;
use super::server::Federated;
use crate::Services;
use crate::error::Error;
use crate::pdu::{Pdu, SUPPORTED_ROOM_VERSIONS};
use crate::rooms::Received;

/// A path segment, percent-encoded.
pub fn segment(text: &str) -> String {
    utf8_percent_encode(text, NON_ALPHANUMERIC).to_string()
}

/// The JSON of an event as servers exchange it.
pub fn federation_json(json: &str) -> Result<Value, Error> {
    serde_json::from_str(json).map_err(|e| Error::Internal(format!("stored event: {e}")))
}

/// The room versions a joining or knocking server names (`ver`, repeated); none named means
/// version 1 only.
pub(super) fn versions_asked(query: Option<&str>) -> Vec<String> {
    url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .filter(|(key, _)| key == "ver")
        .map(|(_, value)| value.into_owned())
        .collect()
}

/// The query naming the room versions this server supports, for `make_join`/`make_knock`.
pub(super) fn versions_offered() -> String {
    SUPPORTED_ROOM_VERSIONS
        .iter()
        .map(|version| format!("ver={}", segment(version.as_str())))
        .collect::<Vec<_>>()
        .join("&")
}

/// # `GET /_matrix/federation/v1/make_join/{roomId}/{userId}`
pub async fn make_join_route(
    State(services): State<Arc<Services>>,
    Path((room_id, user_id)): Path<(OwnedRoomId, OwnedUserId)>,
    RawQuery(query): RawQuery,
    request: Federated,
) -> Result<Json<Value>, Error> {
    let versions = versions_asked(query.as_deref());
    make_membership(
        &services,
        &request,
        &room_id,
        &user_id,
        "join",
        Some(&versions),
    )
    .await
}

/// # `GET /_matrix/federation/v1/make_leave/{roomId}/{userId}`
pub async fn make_leave_route(
    State(services): State<Arc<Services>>,
    Path((room_id, user_id)): Path<(OwnedRoomId, OwnedUserId)>,
    request: Federated,
) -> Result<Json<Value>, Error> {
    make_membership(&services, &request, &room_id, &user_id, "leave", None).await
}

pub(super) async fn make_membership(
    services: &Services,
    request: &Federated,
    room_id: &RoomId,
    user_id: &UserId,
    membership: &str,
    versions: Option<&[String]>,
) -> Result<Json<Value>, Error> {
    if user_id.server_name() != request.origin {
        return Err(Error::Forbidden(format!(
            "{} may not ask for a {membership} of {user_id}",
            request.origin
        )));
    }
    if !services.rooms.exists(room_id).await? {
        return Err(Error::NotFound(format!(
            "this server is not in room {room_id}"
        )));
    }
    super::acl::check(services, room_id, &request.origin).await?;
    let version = services.rooms.version(room_id).await?;
    if let Some(versions) = versions
        && !versions
            .iter()
            .any(|supported| supported == version.as_str())
    {
        return Err(Error::IncompatibleRoomVersion {
            room_version: version.to_string(),
        });
    }
    if membership == "join" {
        // What this server provides may have to agree first (a portal's MUC takes the user
        // in as an occupant, or refuses): the refusal is the answer.
        services.joining(room_id, user_id).await?;
    }
    let mut content = CanonicalJsonObject::new();
    content.insert(
        "membership".into(),
        CanonicalJsonValue::String(membership.into()),
    );
    if membership == "join"
        && let Some(via) = crate::restricted::authorise_join(services, room_id, user_id).await?
    {
        content.insert(
            "join_authorised_via_users_server".into(),
            CanonicalJsonValue::String(via.to_string()),
        );
    }
    let (version, template) = services
        .rooms
        .membership_template(room_id, user_id, content)
        .await?;
    Ok(Json(json!({
        "event": CanonicalJsonValue::Object(template),
        "room_version": version,
    })))
}

/// # `PUT /_matrix/federation/v2/send_join/{roomId}/{eventId}`
pub async fn send_join_v2_route(
    State(services): State<Arc<Services>>,
    Path((room_id, event_id)): Path<(OwnedRoomId, OwnedEventId)>,
    request: Federated,
) -> Result<Json<Value>, Error> {
    Ok(Json(
        send_join(&services, &request, &room_id, &event_id).await?,
    ))
}

/// # `PUT /_matrix/federation/v1/send_join/{roomId}/{eventId}`: the same answer in the
/// older `[200, answer]` form.
pub async fn send_join_v1_route(
    State(services): State<Arc<Services>>,
    Path((room_id, event_id)): Path<(OwnedRoomId, OwnedEventId)>,
    request: Federated,
) -> Result<Json<Value>, Error> {
    let answer = send_join(&services, &request, &room_id, &event_id).await?;
    Ok(Json(json!([200, answer])))
}

/// # `PUT /_matrix/federation/v2/send_leave/{roomId}/{eventId}`
pub async fn send_leave_v2_route(
    State(services): State<Arc<Services>>,
    Path((room_id, event_id)): Path<(OwnedRoomId, OwnedEventId)>,
    request: Federated,
) -> Result<Json<Value>, Error> {
    receive_membership(&services, &request, &room_id, &event_id, "leave").await?;
    Ok(Json(json!({})))
}

/// # `PUT /_matrix/federation/v1/send_leave/{roomId}/{eventId}`
pub async fn send_leave_v1_route(
    State(services): State<Arc<Services>>,
    Path((room_id, event_id)): Path<(OwnedRoomId, OwnedEventId)>,
    request: Federated,
) -> Result<Json<Value>, Error> {
    receive_membership(&services, &request, &room_id, &event_id, "leave").await?;
    Ok(Json(json!([200, {}])))
}

/// Checks and takes in a membership event that another server's user signed after asking for
/// its template: theirs, of this membership, for this room, with this id.
pub(super) async fn receive_membership(
    services: &Services,
    request: &Federated,
    room_id: &RoomId,
    event_id: &EventId,
    membership: &str,
) -> Result<Pdu, Error> {
    let body = request
        .body
        .as_ref()
        .ok_or_else(|| Error::NotJson("the event is missing".into()))?;
    if !services.rooms.exists(room_id).await? {
        return Err(Error::NotFound(format!(
            "this server is not in room {room_id}"
        )));
    }
    super::acl::check(services, room_id, &request.origin).await?;
    let rules = services.rooms.rules(room_id).await?;
    let mut object = pdu::as_object(body)?;
    if membership == "join" {
        vouch(services, room_id, &rules, &mut object).await?;
    }
    let pdu = pdu::check(services, &rules, object).await?;
    if pdu.event_id != event_id {
        return Err(Error::BadJson(format!(
            "the event's id is {}, not {event_id}",
            pdu.event_id
        )));
    }
    if pdu.event_type.to_string() != "m.room.member"
        || pdu.state_key.as_deref() != Some(pdu.sender.as_str())
        || pdu
            .content_value()
            .get("membership")
            .and_then(Value::as_str)
            != Some(membership)
    {
        return Err(Error::BadJson(format!(
            "not a {membership} of its sender's own"
        )));
    }
    if pdu.sender.server_name() != request.origin {
        return Err(Error::Forbidden(format!(
            "{} may not send a {membership} of {}",
            request.origin, pdu.sender
        )));
    }
    match services.rooms.receive_pdu(room_id, pdu.clone()).await? {
        Received::Accepted { .. } | Received::Known => Ok(pdu),
        Received::Missing { .. } => Err(Error::BadJson(
            "the event follows events this server does not have".into(),
        )),
        Received::SoftFailed(reason) | Received::Rejected(reason) => Err(Error::Forbidden(
            format!("the {membership} is not allowed: {reason}"),
        )),
    }
}

/// A join into a restricted room that names a local user as vouching for it: checked again
/// (the joining user is still let in, the named user still may invite) and signed by this
/// server, as the authorization rules ask of the vouching user's server.
async fn vouch(
    services: &Services,
    room_id: &RoomId,
    rules: &ruma::room_version_rules::RoomVersionRules,
    object: &mut CanonicalJsonObject,
) -> Result<(), Error> {
    let Some(via) = object
        .get("content")
        .and_then(CanonicalJsonValue::as_object)
        .and_then(|content| content.get("join_authorised_via_users_server"))
        .and_then(CanonicalJsonValue::as_str)
        .and_then(|via| UserId::parse(via).ok())
    else {
        return Ok(());
    };
    if !services.is_local(&via) {
        return Ok(());
    }
    let sender = object
        .get("sender")
        .and_then(CanonicalJsonValue::as_str)
        .and_then(|sender| UserId::parse(sender).ok())
        .ok_or_else(|| Error::BadJson("the join has no valid sender".into()))?;
    if crate::restricted::authorise_join(services, room_id, &sender)
        .await?
        .is_none()
    {
        // Nobody needs to vouch (the user is invited): the event stands as it is.
        return Ok(());
    }
    let levels = services.rooms.power_levels(room_id).await?;
    if services.rooms.membership(room_id, &via).await?.as_deref() != Some("join")
        || levels.user(&via) < levels.invite
    {
        return Err(Error::Forbidden(format!("{via} may not let anyone in")));
    }
    ruma::signatures::sign_event(
        services.server_name.as_str(),
        &*services.key,
        object,
        &rules.redaction,
    )
    .map_err(|e| Error::Internal(format!("signing a restricted join: {e}")))
}

async fn send_join(
    services: &Services,
    request: &Federated,
    room_id: &RoomId,
    event_id: &EventId,
) -> Result<Value, Error> {
    receive_membership(services, request, room_id, event_id, "join").await?;
    let row = services
        .store
        .event(event_id.as_str())
        .await?
        .ok_or_else(|| Error::Internal("the join vanished".into()))?;
    let group = services
        .store
        .state_group_before(event_id.as_str())
        .await?
        .unwrap_or(0);
    let state = services.store.state_group(group).await?;
    let state_ids: Vec<String> = state.values().cloned().collect();
    let mut state_events = Vec::new();
    for event in services.store.events(&state_ids).await? {
        state_events.push(federation_json(&event.json)?);
    }
    let mut chain_of = state_ids;
    chain_of.push(event_id.to_string());
    let chain = auth_chain(services, &chain_of).await?;
    let current = services.rooms.current_state(room_id).await?;
    let servers: BTreeSet<String> = current
        .iter()
        .filter(|pdu| {
            pdu.event_type.to_string() == "m.room.member"
                && pdu
                    .content_value()
                    .get("membership")
                    .and_then(Value::as_str)
                    == Some("join")
        })
        .filter_map(|pdu| pdu.state_key.as_deref())
        .filter_map(|user| UserId::parse(user).ok())
        .map(|user| user.server_name().to_string())
        .collect();
    Ok(json!({
        "origin": services.server_name,
        "event": federation_json(&row.json)?,
        "state": state_events,
        "auth_chain": chain,
        "members_omitted": false,
        "servers_in_room": servers,
    }))
}

/// The auth chains of events, as servers exchange events (these events not included unless
/// one authorises another).
pub async fn auth_chain(services: &Services, of: &[String]) -> Result<Vec<Value>, Error> {
    auth_chain_rows(services, of)
        .await?
        .iter()
        .map(|row| federation_json(&row.json))
        .collect()
}

/// The stored events of the auth chains of events.
pub async fn auth_chain_rows(
    services: &Services,
    of: &[String],
) -> Result<Vec<crate::store::EventRow>, Error> {
    let graph = services.store.auth_graph(of).await?;
    let mut ids: BTreeSet<String> = BTreeSet::new();
    for auth in graph.values() {
        ids.extend(auth.iter().cloned());
    }
    let ids: Vec<String> = ids.into_iter().collect();
    Ok(services.store.events(&ids).await?)
}

/// Joins a local user to a room this server has no copy of, through the first of `servers`
/// that answers: it asks for a template, signs the join, sends it, checks every event of the
/// answer, and makes the room from it.
pub async fn join_remote(
    services: &Services,
    room_id: &RoomId,
    user_id: &UserId,
    servers: &[OwnedServerName],
    content: serde_json::Map<String, Value>,
) -> Result<(), Error> {
    let mut last = Error::NotFound(format!("no server to join {room_id} through"));
    for server in servers
        .iter()
        .filter(|server| **server != services.server_name)
    {
        match join_through(services, room_id, user_id, server, content.clone()).await {
            Ok(()) => return Ok(()),
            Err(error) => {
                tracing::info!(%room_id, %server, %error, "joining through this server failed");
                last = error;
            }
        }
    }
    Err(last)
}

async fn join_through(
    services: &Services,
    room_id: &RoomId,
    user_id: &UserId,
    server: &ServerName,
    content: serde_json::Map<String, Value>,
) -> Result<(), Error> {
    let versions = versions_offered();
    let mut content = match CanonicalJsonValue::try_from(Value::Object(content)) {
        Ok(CanonicalJsonValue::Object(object)) => object,
        _ => return Err(Error::BadJson("member content".into())),
    };
    content.insert(
        "membership".into(),
        CanonicalJsonValue::String("join".into()),
    );
    let Signed {
        version,
        rules,
        event,
        event_id,
    } = sign_template(
        services, server, room_id, user_id, "join", &versions, content,
    )
    .await?;
    let uri = format!(
        "/_matrix/federation/v2/send_join/{}/{}",
        segment(room_id.as_str()),
        segment(event_id.as_str())
    );
    let body = serde_json::to_value(&event).map_err(|e| Error::Internal(e.to_string()))?;
    let answer = services
        .federation
        .request(server, http::Method::PUT, &uri, Some(&body), true)
        .await
        .map_err(remote_error)?;
    // The resident server may have added its signature (a restricted join).
    let join_object = match answer
        .get("event")
        .cloned()
        .map(CanonicalJsonValue::try_from)
    {
        Some(Ok(CanonicalJsonValue::Object(signed))) => signed,
        _ => event,
    };
    let join = pdu::check(services, &rules, join_object).await?;
    if join.event_id != event_id {
        return Err(Error::BadJson("send_join answered another join".into()));
    }
    for list in ["state", "auth_chain"] {
        if !answer.get(list).is_some_and(Value::is_array) {
            return Err(Error::BadJson(format!("send_join answered no `{list}`")));
        }
    }
    let state = pdu::check_list(services, &rules, answer.get("state")).await;
    let auth_chain = pdu::check_list(services, &rules, answer.get("auth_chain")).await;
    services
        .rooms
        .join_remote_room(room_id, &version, state, auth_chain, join)
        .await?;
    Ok(())
}

/// A membership event of a local user made from another server's template.
pub struct Signed {
    pub version: RoomVersionId,
    pub rules: ruma::room_version_rules::RoomVersionRules,
    pub event: CanonicalJsonObject,
    pub event_id: OwnedEventId,
}

/// Asks `server` for the template of a membership event of a local user (`make_join`,
/// `make_leave`), checks that it is the event asked for, puts in `content` (with the user who
/// authorises a restricted join, if the template names one), and signs it.
pub async fn sign_template(
    services: &Services,
    server: &ServerName,
    room_id: &RoomId,
    user_id: &UserId,
    membership: &str,
    query: &str,
    mut content: CanonicalJsonObject,
) -> Result<Signed, Error> {
    let uri = format!(
        "/_matrix/federation/v1/make_{membership}/{}/{}{}{query}",
        segment(room_id.as_str()),
        segment(user_id.as_str()),
        if query.is_empty() { "" } else { "?" },
    );
    let answer = services
        .federation
        .request(server, http::Method::GET, &uri, None, true)
        .await
        .map_err(remote_error)?;
    // An answer without a version is for version 1, which this server does not support.
    let version = answer
        .get("room_version")
        .and_then(Value::as_str)
        .map(RoomVersionId::try_from)
        .transpose()
        .map_err(|e| Error::BadJson(format!("room_version: {e}")))?
        .unwrap_or(RoomVersionId::V1);
    let rules = crate::pdu::rules(&version)?;
    let mut event = match answer
        .get("event")
        .cloned()
        .map(CanonicalJsonValue::try_from)
    {
        Some(Ok(CanonicalJsonValue::Object(event))) => event,
        _ => {
            return Err(Error::BadJson(format!(
                "make_{membership} answered no event"
            )));
        }
    };
    let field = |key: &str| event.get(key).and_then(CanonicalJsonValue::as_str);
    if field("type") != Some("m.room.member")
        || field("sender") != Some(user_id.as_str())
        || field("state_key") != Some(user_id.as_str())
        || field("room_id") != Some(room_id.as_str())
    {
        return Err(Error::BadJson(format!(
            "make_{membership} answered a template for another event"
        )));
    }
    if let Some(CanonicalJsonValue::Object(template)) = event.get("content")
        && let Some(via) = template.get("join_authorised_via_users_server")
    {
        content.insert("join_authorised_via_users_server".into(), via.clone());
    }
    event.insert("content".into(), CanonicalJsonValue::Object(content));
    event.insert(
        "origin_server_ts".into(),
        CanonicalJsonValue::Integer(ruma::MilliSecondsSinceUnixEpoch::now().get().into()),
    );
    for key in ["event_id", "hashes", "signatures", "unsigned"] {
        event.remove(key);
    }
    ruma::signatures::hash_and_sign_event(
        services.server_name.as_str(),
        &*services.key,
        &mut event,
        &rules.redaction,
    )
    .map_err(|e| Error::Internal(format!("signing the {membership}: {e}")))?;
    let event_id = pdu::event_id(&event, &rules)?;
    Ok(Signed {
        version,
        rules,
        event,
        event_id,
    })
}

/// The room an alias of another server names, and servers in it, asked of the alias's
/// server (`query/directory`).
pub async fn resolve_remote_alias(
    services: &Services,
    alias: &ruma::RoomAliasId,
) -> Result<(OwnedRoomId, Vec<OwnedServerName>), Error> {
    let uri = format!(
        "/_matrix/federation/v1/query/directory?room_alias={}",
        segment(alias.as_str())
    );
    let answer = services
        .federation
        .request(alias.server_name(), http::Method::GET, &uri, None, true)
        .await
        .map_err(remote_error)?;
    let room_id = answer
        .get("room_id")
        .and_then(Value::as_str)
        .and_then(|id| RoomId::parse(id).ok())
        .ok_or_else(|| Error::NotFound(format!("room alias {alias} not found")))?;
    let mut servers: Vec<OwnedServerName> = answer
        .get("servers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter_map(|server| ServerName::parse(server).ok())
        .collect();
    if !servers.iter().any(|server| server == alias.server_name()) {
        servers.insert(0, alias.server_name().to_owned());
    }
    Ok((room_id, servers))
}

/// What another server's refusal means here.
pub fn remote_error(error: super::client::FederationError) -> Error {
    use super::client::FederationError;
    match error {
        FederationError::Status(server, status, body) => {
            let message = body
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("refused")
                .to_owned();
            let text = format!("{server}: {message}");
            match (status, body.get("errcode").and_then(Value::as_str)) {
                (_, Some("M_INCOMPATIBLE_ROOM_VERSION" | "M_UNSUPPORTED_ROOM_VERSION")) => {
                    Error::UnsupportedRoomVersion(text)
                }
                (403, _) => Error::Forbidden(text),
                (404, _) => Error::NotFound(text),
                _ => Error::BadJson(text),
            }
        }
        other => Error::NotFound(format!("cannot reach the room's servers: {other}")),
    }
}
