//! Server-side key backup (`/room_keys`): clients keep their encrypted room keys here, so that a
//! new login can read old messages. The server stores what it cannot read and keeps, of each
//! session's key, the best copy it was given.

use std::collections::BTreeMap;
use std::sync::Arc;

use ruma::api::client::backup::{
    RoomKeyBackup, add_backup_keys, add_backup_keys_for_room, add_backup_keys_for_session,
    create_backup_version, delete_backup_keys, delete_backup_keys_for_room,
    delete_backup_keys_for_session, delete_backup_version, get_backup_info, get_backup_keys,
    get_backup_keys_for_room, get_backup_keys_for_session, get_latest_backup_info,
    update_backup_version,
};
use ruma::serde::Raw;
use ruma::{OwnedRoomId, UInt, UserId};
use serde_json::{Map, Value, json};

use crate::Services;
use crate::api::ruma_wrapper::Ruma;
use crate::error::Error;
use crate::store::{BackedUpKey, BackupVersion, KeyScope};

fn raw<T>(value: &Value) -> Result<Raw<T>, Error> {
    serde_json::value::to_raw_value(value)
        .map(Raw::from_json)
        .map_err(|e| Error::Internal(e.to_string()))
}

fn uint(value: i64) -> UInt {
    UInt::try_from(value.max(0) as u64).unwrap_or_default()
}

/// A version number as the path or query names it. Versions are numbers here: any other
/// string names no version.
fn version_number(version: &str) -> Result<i64, Error> {
    version
        .parse::<i64>()
        .ok()
        .filter(|number| *number > 0)
        .ok_or_else(|| unknown_version(version))
}

fn unknown_version(version: &str) -> Error {
    Error::NotFound(format!("no backup version {version}"))
}

/// A version that exists and is not deleted.
async fn existing_version(
    services: &Services,
    user_id: &UserId,
    version: &str,
) -> Result<BackupVersion, Error> {
    let number = version_number(version)?;
    services
        .store
        .backup_version(user_id.as_str(), Some(number))
        .await?
        .ok_or_else(|| unknown_version(version))
}

/// The `algorithm` and `auth_data` of a version's description.
fn algorithm_and_auth_data(body: &Value) -> Result<(String, String), Error> {
    let algorithm = match body.get("algorithm") {
        Some(Value::String(algorithm)) if !algorithm.is_empty() => algorithm.clone(),
        Some(_) => return Err(Error::BadJson("`algorithm` must be a string".into())),
        None => return Err(Error::MissingParam("`algorithm` is required".into())),
    };
    let auth_data = match body.get("auth_data") {
        Some(auth_data @ Value::Object(_)) => auth_data.to_string(),
        Some(_) => return Err(Error::BadJson("`auth_data` must be an object".into())),
        None => return Err(Error::MissingParam("`auth_data` is required".into())),
    };
    Ok((algorithm, auth_data))
}

/// A version as both read endpoints answer it: algorithm with its auth data, key count, etag,
/// version number.
fn version_info(
    version: &BackupVersion,
) -> Result<
    (
        Raw<ruma::api::client::backup::BackupAlgorithm>,
        UInt,
        String,
        String,
    ),
    Error,
> {
    let auth_data: Value =
        serde_json::from_str(&version.auth_data).map_err(|e| Error::Internal(e.to_string()))?;
    Ok((
        raw(&json!({ "algorithm": version.algorithm, "auth_data": auth_data }))?,
        uint(version.count),
        version.etag.to_string(),
        version.version.to_string(),
    ))
}

/// A session's key as uploaded: the fields the specification requires, checked.
fn backed_up_key(
    room_id: &OwnedRoomId,
    session_id: &str,
    data: &Raw<ruma::api::client::backup::KeyBackupData>,
) -> Result<BackedUpKey, Error> {
    let bad = |what: &str| Error::BadJson(format!("key of session {session_id}: {what}"));
    let data: Map<String, Value> =
        serde_json::from_str(data.json().get()).map_err(|_| bad("not a JSON object"))?;
    let count = |field: &str| {
        data.get(field)
            .and_then(Value::as_i64)
            .filter(|value| *value >= 0)
            .ok_or_else(|| bad(&format!("`{field}` must be a non-negative integer")))
    };
    let first_message_index = count("first_message_index")?;
    let forwarded_count = count("forwarded_count")?;
    let is_verified = data
        .get("is_verified")
        .and_then(Value::as_bool)
        .ok_or_else(|| bad("`is_verified` must be a boolean"))?;
    let session_data = match data.get("session_data") {
        Some(session_data @ Value::Object(_)) => session_data.to_string(),
        _ => return Err(bad("`session_data` must be an object")),
    };
    if session_id.is_empty() {
        return Err(Error::InvalidParam("a session id must not be empty".into()));
    }
    Ok(BackedUpKey {
        room_id: room_id.to_string(),
        session_id: session_id.to_owned(),
        first_message_index,
        forwarded_count,
        is_verified,
        session_data,
    })
}

fn key_json(key: &BackedUpKey) -> Result<Value, Error> {
    let session_data: Value =
        serde_json::from_str(&key.session_data).map_err(|e| Error::Internal(e.to_string()))?;
    Ok(json!({
        "first_message_index": key.first_message_index,
        "forwarded_count": key.forwarded_count,
        "is_verified": key.is_verified,
        "session_data": session_data,
    }))
}

/// Stores uploaded keys in the current version; answers the etag and count.
async fn put_keys(
    services: &Services,
    user_id: &UserId,
    version: &str,
    keys: Vec<BackedUpKey>,
) -> Result<(String, UInt), Error> {
    let number = version_number(version)?;
    match services
        .store
        .put_backup_keys(user_id.as_str(), number, &keys)
        .await?
    {
        Ok((etag, count)) => Ok((etag.to_string(), uint(count))),
        Err(current) => {
            // A version that never was (or was deleted) is not found; an older one that
            // still exists is the wrong version, and the client is told the current one.
            existing_version(services, user_id, version).await?;
            Err(Error::WrongRoomKeysVersion {
                current_version: current.map(|current| current.to_string()),
            })
        }
    }
}

async fn delete_keys(
    services: &Services,
    user_id: &UserId,
    version: &str,
    scope: KeyScope<'_>,
) -> Result<(String, UInt), Error> {
    let existing = existing_version(services, user_id, version).await?;
    let (etag, count) = services
        .store
        .delete_backup_keys(user_id.as_str(), existing.version, scope)
        .await?;
    Ok((etag.to_string(), uint(count)))
}

/// # `POST /_matrix/client/v3/room_keys/version`
pub async fn create_backup_version_route(
    services: Arc<Services>,
    request: Ruma<create_backup_version::v3::Request>,
) -> Result<create_backup_version::v3::Response, Error> {
    let sender = request.sender()?;
    let body: Value = serde_json::from_str(request.body.algorithm.json().get())
        .map_err(|e| Error::BadJson(e.to_string()))?;
    let (algorithm, auth_data) = algorithm_and_auth_data(&body)?;
    let version = services
        .store
        .create_backup_version(sender.user_id.as_str(), &algorithm, &auth_data)
        .await?;
    Ok(create_backup_version::v3::Response::new(
        version.to_string(),
    ))
}

/// # `PUT /_matrix/client/v3/room_keys/version/{version}`
pub async fn update_backup_version_route(
    services: Arc<Services>,
    request: Ruma<update_backup_version::v3::Request>,
) -> Result<update_backup_version::v3::Response, Error> {
    let sender = request.sender()?;
    let body: Value = serde_json::from_str(request.body.algorithm.json().get())
        .map_err(|e| Error::BadJson(e.to_string()))?;
    let existing = existing_version(&services, &sender.user_id, &request.body.version).await?;
    if let Some(named) = body.get("version")
        && named.as_str() != Some(request.body.version.as_str())
    {
        return Err(Error::InvalidParam(
            "the version in the body is not the one in the path".into(),
        ));
    }
    let (algorithm, auth_data) = algorithm_and_auth_data(&body)?;
    if algorithm != existing.algorithm {
        return Err(Error::InvalidParam(
            "a backup version keeps its algorithm".into(),
        ));
    }
    if !services
        .store
        .update_backup_version(sender.user_id.as_str(), existing.version, &auth_data)
        .await?
    {
        return Err(unknown_version(&request.body.version));
    }
    Ok(update_backup_version::v3::Response::new())
}

/// # `GET /_matrix/client/v3/room_keys/version`
pub async fn get_latest_backup_info_route(
    services: Arc<Services>,
    request: Ruma<get_latest_backup_info::v3::Request>,
) -> Result<get_latest_backup_info::v3::Response, Error> {
    let sender = request.sender()?;
    let current = services
        .store
        .backup_version(sender.user_id.as_str(), None)
        .await?
        .ok_or_else(|| Error::NotFound("no current backup version".into()))?;
    let (algorithm, count, etag, version) = version_info(&current)?;
    Ok(get_latest_backup_info::v3::Response::new(
        algorithm, count, etag, version,
    ))
}

/// # `GET /_matrix/client/v3/room_keys/version/{version}`
pub async fn get_backup_info_route(
    services: Arc<Services>,
    request: Ruma<get_backup_info::v3::Request>,
) -> Result<get_backup_info::v3::Response, Error> {
    let sender = request.sender()?;
    let existing = existing_version(&services, &sender.user_id, &request.body.version).await?;
    let (algorithm, count, etag, version) = version_info(&existing)?;
    Ok(get_backup_info::v3::Response::new(
        algorithm, count, etag, version,
    ))
}

/// # `DELETE /_matrix/client/v3/room_keys/version/{version}`
pub async fn delete_backup_version_route(
    services: Arc<Services>,
    request: Ruma<delete_backup_version::v3::Request>,
) -> Result<delete_backup_version::v3::Response, Error> {
    let sender = request.sender()?;
    let number = version_number(&request.body.version)?;
    if !services
        .store
        .delete_backup_version(sender.user_id.as_str(), number)
        .await?
    {
        return Err(unknown_version(&request.body.version));
    }
    Ok(delete_backup_version::v3::Response::new())
}

/// # `PUT /_matrix/client/v3/room_keys/keys`
pub async fn add_backup_keys_route(
    services: Arc<Services>,
    request: Ruma<add_backup_keys::v3::Request>,
) -> Result<add_backup_keys::v3::Response, Error> {
    let sender = request.sender()?;
    let mut keys = Vec::new();
    for (room_id, room) in &request.body.rooms {
        for (session_id, data) in &room.sessions {
            keys.push(backed_up_key(room_id, session_id, data)?);
        }
    }
    let (etag, count) = put_keys(&services, &sender.user_id, &request.body.version, keys).await?;
    Ok(add_backup_keys::v3::Response::new(etag, count))
}

/// # `PUT /_matrix/client/v3/room_keys/keys/{roomId}`
pub async fn add_backup_keys_for_room_route(
    services: Arc<Services>,
    request: Ruma<add_backup_keys_for_room::v3::Request>,
) -> Result<add_backup_keys_for_room::v3::Response, Error> {
    let sender = request.sender()?;
    let body = &request.body;
    let keys = body
        .sessions
        .iter()
        .map(|(session_id, data)| backed_up_key(&body.room_id, session_id, data))
        .collect::<Result<Vec<_>, _>>()?;
    let (etag, count) = put_keys(&services, &sender.user_id, &body.version, keys).await?;
    Ok(add_backup_keys_for_room::v3::Response::new(etag, count))
}

/// # `PUT /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}`
pub async fn add_backup_keys_for_session_route(
    services: Arc<Services>,
    request: Ruma<add_backup_keys_for_session::v3::Request>,
) -> Result<add_backup_keys_for_session::v3::Response, Error> {
    let sender = request.sender()?;
    let body = &request.body;
    let key = backed_up_key(&body.room_id, &body.session_id, &body.session_data)?;
    let (etag, count) = put_keys(&services, &sender.user_id, &body.version, vec![key]).await?;
    Ok(add_backup_keys_for_session::v3::Response::new(etag, count))
}

/// The sessions of one room's keys, as the read endpoints answer them.
fn sessions(
    keys: &[BackedUpKey],
) -> Result<BTreeMap<String, Raw<ruma::api::client::backup::KeyBackupData>>, Error> {
    keys.iter()
        .map(|key| Ok((key.session_id.clone(), raw(&key_json(key)?)?)))
        .collect()
}

/// # `GET /_matrix/client/v3/room_keys/keys`
pub async fn get_backup_keys_route(
    services: Arc<Services>,
    request: Ruma<get_backup_keys::v3::Request>,
) -> Result<get_backup_keys::v3::Response, Error> {
    let sender = request.sender()?;
    let existing = existing_version(&services, &sender.user_id, &request.body.version).await?;
    let keys = services
        .store
        .backup_keys(sender.user_id.as_str(), existing.version, KeyScope::All)
        .await?;
    let mut rooms = BTreeMap::new();
    for room_keys in keys.chunk_by(|a, b| a.room_id == b.room_id) {
        let Ok(room_id) = OwnedRoomId::try_from(room_keys[0].room_id.as_str()) else {
            continue;
        };
        rooms.insert(room_id, RoomKeyBackup::new(sessions(room_keys)?));
    }
    Ok(get_backup_keys::v3::Response::new(rooms))
}

/// # `GET /_matrix/client/v3/room_keys/keys/{roomId}`: a room without keys answers no
/// sessions, as Synapse does.
pub async fn get_backup_keys_for_room_route(
    services: Arc<Services>,
    request: Ruma<get_backup_keys_for_room::v3::Request>,
) -> Result<get_backup_keys_for_room::v3::Response, Error> {
    let sender = request.sender()?;
    let body = &request.body;
    let existing = existing_version(&services, &sender.user_id, &body.version).await?;
    let keys = services
        .store
        .backup_keys(
            sender.user_id.as_str(),
            existing.version,
            KeyScope::Room(body.room_id.as_str()),
        )
        .await?;
    Ok(get_backup_keys_for_room::v3::Response::new(sessions(
        &keys,
    )?))
}

/// # `GET /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}`
pub async fn get_backup_keys_for_session_route(
    services: Arc<Services>,
    request: Ruma<get_backup_keys_for_session::v3::Request>,
) -> Result<get_backup_keys_for_session::v3::Response, Error> {
    let sender = request.sender()?;
    let body = &request.body;
    let existing = existing_version(&services, &sender.user_id, &body.version).await?;
    let keys = services
        .store
        .backup_keys(
            sender.user_id.as_str(),
            existing.version,
            KeyScope::Session(body.room_id.as_str(), &body.session_id),
        )
        .await?;
    let key = keys
        .first()
        .ok_or_else(|| Error::NotFound("no key of this session is backed up".into()))?;
    Ok(get_backup_keys_for_session::v3::Response::new(raw(
        &key_json(key)?,
    )?))
}

/// # `DELETE /_matrix/client/v3/room_keys/keys`
pub async fn delete_backup_keys_route(
    services: Arc<Services>,
    request: Ruma<delete_backup_keys::v3::Request>,
) -> Result<delete_backup_keys::v3::Response, Error> {
    let sender = request.sender()?;
    let (etag, count) = delete_keys(
        &services,
        &sender.user_id,
        &request.body.version,
        KeyScope::All,
    )
    .await?;
    Ok(delete_backup_keys::v3::Response::new(etag, count))
}

/// # `DELETE /_matrix/client/v3/room_keys/keys/{roomId}`
pub async fn delete_backup_keys_for_room_route(
    services: Arc<Services>,
    request: Ruma<delete_backup_keys_for_room::v3::Request>,
) -> Result<delete_backup_keys_for_room::v3::Response, Error> {
    let sender = request.sender()?;
    let body = &request.body;
    let scope = KeyScope::Room(body.room_id.as_str());
    let (etag, count) = delete_keys(&services, &sender.user_id, &body.version, scope).await?;
    Ok(delete_backup_keys_for_room::v3::Response::new(etag, count))
}

/// # `DELETE /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}`
pub async fn delete_backup_keys_for_session_route(
    services: Arc<Services>,
    request: Ruma<delete_backup_keys_for_session::v3::Request>,
) -> Result<delete_backup_keys_for_session::v3::Response, Error> {
    let sender = request.sender()?;
    let body = &request.body;
    let scope = KeyScope::Session(body.room_id.as_str(), &body.session_id);
    let (etag, count) = delete_keys(&services, &sender.user_id, &body.version, scope).await?;
    Ok(delete_backup_keys_for_session::v3::Response::new(
        etag, count,
    ))
}
