//! End-to-end encryption: device keys, one-time keys, cross-signing, key changes and
//! to-device messages. The server stores and relays keys; it never sees what they protect.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use ruma::api::client::keys::{
    claim_keys, get_key_changes, get_keys, upload_keys, upload_signatures, upload_signing_keys,
};
use ruma::api::client::to_device::send_event_to_device;
use ruma::canonical_json::CanonicalJsonObject;
use ruma::serde::Raw;
use ruma::{OwnedDeviceId, OwnedUserId, UInt, UserId};
use serde_json::{Map, Value, json};

use crate::Services;
use crate::api::client::account::password_uiaa;
use crate::api::client::sync::SyncToken;
use crate::api::ruma_wrapper::Ruma;
use crate::error::Error;
use crate::store::{Change, OutgoingToDevice};

fn object(text: &str) -> Result<Map<String, Value>, Error> {
    match serde_json::from_str(text) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(Error::BadJson("expected a JSON object".into())),
    }
}

fn raw<T>(value: &Value) -> Result<Raw<T>, Error> {
    serde_json::value::to_raw_value(value)
        .map(Raw::from_json)
        .map_err(|e| Error::Internal(e.to_string()))
}

/// # `POST /_matrix/client/v3/keys/upload`
pub async fn upload_keys_route(
    services: Arc<Services>,
    request: Ruma<upload_keys::v3::Request>,
) -> Result<upload_keys::v3::Response, Error> {
    let sender = request.sender()?;
    let user_id = sender.user_id.as_str();
    let device_id = sender.device_id.as_str();
    if let Some(keys) = &request.body.device_keys {
        let keys = object(keys.json().get())?;
        if keys.get("user_id").and_then(Value::as_str) != Some(user_id)
            || keys.get("device_id").and_then(Value::as_str) != Some(device_id)
        {
            return Err(Error::InvalidParam(
                "device_keys must name the uploading user and device".into(),
            ));
        }
        for field in ["algorithms", "keys", "signatures"] {
            if keys.get(field).is_none() {
                return Err(Error::BadJson(format!("device_keys lacks `{field}`")));
            }
        }
        services
            .store
            .set_device_keys(user_id, device_id, &Value::Object(keys).to_string())
            .await?;
    }
    let mut one_time = Vec::new();
    for (key_id, key) in &request.body.one_time_keys {
        one_time.push((
            key_id.to_string(),
            key_id.algorithm().to_string(),
            key.json().get().to_owned(),
        ));
    }
    services
        .store
        .add_one_time_keys(user_id, device_id, &one_time)
        .await?;
    for (key_id, key) in &request.body.fallback_keys {
        services
            .store
            .set_fallback_key(
                user_id,
                device_id,
                key_id.algorithm().as_str(),
                key_id.as_str(),
                key.json().get(),
            )
            .await?;
    }
    let counts = services
        .store
        .one_time_key_counts(user_id, device_id)
        .await?
        .into_iter()
        .map(|(algorithm, count)| {
            (
                algorithm.as_str().into(),
                UInt::try_from(count.max(0) as u64).unwrap_or_default(),
            )
        })
        .collect();
    Ok(upload_keys::v3::Response::new(counts))
}

/// Adds the device's display name to its keys, as `keys/query` answers them.
fn with_display_name(json: &str, display_name: Option<&str>) -> Result<Value, Error> {
    let mut keys = object(json)?;
    let unsigned = keys.entry("unsigned").or_insert_with(|| json!({}));
    if let (Some(name), Some(unsigned)) = (display_name, unsigned.as_object_mut()) {
        unsigned.insert("device_display_name".into(), json!(name));
    }
    Ok(Value::Object(keys))
}

/// # `POST /_matrix/client/v3/keys/query`
pub async fn get_keys_route(
    services: Arc<Services>,
    request: Ruma<get_keys::v3::Request>,
) -> Result<get_keys::v3::Response, Error> {
    let sender = request.sender()?;
    let mut response = get_keys::v3::Response::new();
    // Other servers' users: from their kept device lists, else asked of their servers.
    let remote: BTreeMap<OwnedUserId, Vec<String>> = request
        .body
        .device_keys
        .iter()
        .filter(|(user_id, _)| !services.is_local(user_id))
        .map(|(user_id, wanted)| {
            let wanted = wanted.iter().map(|device| device.to_string()).collect();
            (user_id.clone(), wanted)
        })
        .collect();
    let (answers, failures) =
        crate::federation::device_lists::remote_keys(&services, &remote).await;
    response.failures.extend(failures);
    for answer in answers {
        for (user, devices) in answer["device_keys"].as_object().into_iter().flatten() {
            let Ok(user) = UserId::parse(user.as_str()) else {
                continue;
            };
            if !request.body.device_keys.contains_key(&user) {
                continue;
            }
            let mut found = BTreeMap::new();
            for (device_id, keys) in devices.as_object().into_iter().flatten() {
                found.insert(OwnedDeviceId::from(device_id.as_str()), raw(keys)?);
            }
            response.device_keys.insert(user, found);
        }
        for (field, target) in [
            ("master_keys", &mut response.master_keys),
            ("self_signing_keys", &mut response.self_signing_keys),
        ] {
            for (user, key) in answer[field].as_object().into_iter().flatten() {
                if let Ok(user) = UserId::parse(user.as_str())
                    && request.body.device_keys.contains_key(&user)
                {
                    target.insert(user, raw(key)?);
                }
            }
        }
    }
    for (user_id, wanted) in &request.body.device_keys {
        if !services.is_local(user_id) {
            continue;
        }
        let devices = services.store.devices(user_id.as_str()).await?;
        let mut found = BTreeMap::new();
        for (device_id, json) in services.store.device_keys(user_id.as_str()).await? {
            if !wanted.is_empty() && !wanted.iter().any(|d| d.as_str() == device_id) {
                continue;
            }
            let name = devices
                .iter()
                .find(|d| d.device_id == device_id)
                .and_then(|d| d.display_name.as_deref());
            found.insert(
                OwnedDeviceId::from(device_id.as_str()),
                raw(&with_display_name(&json, name)?)?,
            );
        }
        response.device_keys.insert(user_id.clone(), found);
        for (key_type, json) in services.store.cross_signing_keys(user_id.as_str()).await? {
            let value = Value::Object(object(&json)?);
            match key_type.as_str() {
                "master" => {
                    response.master_keys.insert(user_id.clone(), raw(&value)?);
                }
                "self_signing" => {
                    response
                        .self_signing_keys
                        .insert(user_id.clone(), raw(&value)?);
                }
                // The user-signing key is private to its owner.
                "user_signing" if *user_id == sender.user_id => {
                    response
                        .user_signing_keys
                        .insert(user_id.clone(), raw(&value)?);
                }
                _ => {}
            }
        }
    }
    Ok(response)
}

/// # `POST /_matrix/client/v3/keys/claim`
pub async fn claim_keys_route(
    services: Arc<Services>,
    request: Ruma<claim_keys::v3::Request>,
) -> Result<claim_keys::v3::Response, Error> {
    request.sender()?;
    let mut response = claim_keys::v3::Response::new(BTreeMap::new());
    let mut remote: BTreeMap<ruma::OwnedServerName, Map<String, Value>> = BTreeMap::new();
    for (user_id, devices) in &request.body.one_time_keys {
        if !services.is_local(user_id) {
            remote
                .entry(user_id.server_name().to_owned())
                .or_default()
                .insert(user_id.to_string(), json!(devices));
        }
    }
    let (answers, failures) = crate::federation::e2ee::ask_servers(
        &services,
        "/_matrix/federation/v1/user/keys/claim",
        "one_time_keys",
        remote,
    )
    .await;
    response.failures.extend(failures);
    for answer in answers {
        for (user, devices) in answer["one_time_keys"].as_object().into_iter().flatten() {
            let Ok(user) = UserId::parse(user.as_str()) else {
                continue;
            };
            if !request.body.one_time_keys.contains_key(&user) {
                continue;
            }
            let mut claimed = BTreeMap::new();
            for (device_id, keys) in devices.as_object().into_iter().flatten() {
                let mut of_device = BTreeMap::new();
                for (key_id, key) in keys.as_object().into_iter().flatten() {
                    if let Ok(key_id) = key_id.as_str().try_into() {
                        of_device.insert(key_id, raw(key)?);
                    }
                }
                claimed.insert(OwnedDeviceId::from(device_id.as_str()), of_device);
            }
            response.one_time_keys.insert(user, claimed);
        }
    }
    for (user_id, devices) in &request.body.one_time_keys {
        if !services.is_local(user_id) {
            continue;
        }
        let mut claimed = BTreeMap::new();
        for (device_id, algorithm) in devices {
            if let Some((key_id, json)) = services
                .store
                .claim_key(user_id.as_str(), device_id.as_str(), algorithm.as_str())
                .await?
            {
                let key_id = key_id
                    .as_str()
                    .try_into()
                    .map_err(|e| Error::Internal(format!("stored key id {key_id}: {e}")))?;
                let mut keys = BTreeMap::new();
                keys.insert(key_id, raw(&Value::Object(object(&json)?))?);
                claimed.insert(device_id.clone(), keys);
            }
        }
        response.one_time_keys.insert(user_id.clone(), claimed);
    }
    Ok(response)
}

/// The local users who share a joined room with `user_id`, the user included.
pub async fn users_sharing_rooms(
    services: &Services,
    user_id: &UserId,
) -> Result<BTreeSet<String>, Error> {
    let mut users = BTreeSet::new();
    users.insert(user_id.to_string());
    for room_id in services.joined_rooms(user_id).await? {
        users.extend(
            services
                .store
                .room_members(room_id.as_str(), "join")
                .await?,
        );
    }
    Ok(users)
}

/// # `GET /_matrix/client/v3/keys/changes`
pub async fn get_key_changes_route(
    services: Arc<Services>,
    request: Ruma<get_key_changes::v3::Request>,
) -> Result<get_key_changes::v3::Response, Error> {
    let sender = request.sender()?;
    let from = SyncToken::parse(&request.body.from)?.position;
    let to = SyncToken::parse(&request.body.to)?.position;
    // Only each user's latest change is kept: one who changed in the range and again after
    // `to` is found by reading on past `to`. Saying too much is safe (the client fetches keys
    // it already has); saying too little is not.
    let to = if to < services.store.current_position() {
        i64::MAX
    } else {
        to
    };
    let (changed, left) = device_list_delta(&services, &sender.user_id, from, to).await?;
    Ok(get_key_changes::v3::Response::new(changed, left))
}

/// Checks that a cross-signing key belongs to the user and has the expected usage.
fn check_cross_signing_key(
    user_id: &UserId,
    usage: &str,
    key: &Raw<ruma::encryption::CrossSigningKey>,
) -> Result<String, Error> {
    let value = object(key.json().get())?;
    if value.get("user_id").and_then(Value::as_str) != Some(user_id.as_str()) {
        return Err(Error::InvalidParam(format!(
            "the {usage} key must belong to {user_id}"
        )));
    }
    let usages = value
        .get("usage")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::BadJson(format!("the {usage} key lacks `usage`")))?;
    if !usages.iter().any(|u| u.as_str() == Some(usage)) {
        return Err(Error::InvalidParam(format!(
            "the {usage} key must have the usage {usage}"
        )));
    }
    if value
        .get("keys")
        .and_then(Value::as_object)
        .is_none_or(Map::is_empty)
    {
        return Err(Error::BadJson(format!("the {usage} key lacks `keys`")));
    }
    Ok(Value::Object(value).to_string())
}

/// # `POST /_matrix/client/v3/keys/device_signing/upload`
pub async fn upload_signing_keys_route(
    services: Arc<Services>,
    request: Ruma<upload_signing_keys::v3::Request>,
) -> Result<upload_signing_keys::v3::Response, Error> {
    let sender = request.sender()?;
    let body = &request.body;
    let existing = services
        .store
        .cross_signing_keys(sender.user_id.as_str())
        .await?;
    let existing_master = existing
        .iter()
        .find(|(kind, _)| kind == "master")
        .map(|(_, json)| json.clone());
    let new_master = body
        .master_key
        .as_ref()
        .map(|key| check_cross_signing_key(&sender.user_id, "master", key))
        .transpose()?;
    // Replacing an existing master key needs the password; the first upload does not.
    let replaces = match (&existing_master, &new_master) {
        (Some(old), Some(new)) => object(old)?.get("keys") != object(new)?.get("keys"),
        _ => false,
    };
    // A probe without keys (as clients send it before they upload) gets the authentication
    // flows, and with the password, nothing happens.
    let probe = body.master_key.is_none()
        && body.self_signing_key.is_none()
        && body.user_signing_key.is_none();
    if replaces || probe {
        password_uiaa(
            &services,
            &sender.user_id,
            "device_signing_upload",
            body.auth.as_ref(),
        )
        .await?;
    }
    if probe {
        return Ok(upload_signing_keys::v3::Response::new());
    }
    if new_master.is_none() && existing_master.is_none() {
        return Err(Error::InvalidParam("upload a master key first".into()));
    }
    let self_signing = body
        .self_signing_key
        .as_ref()
        .map(|key| check_cross_signing_key(&sender.user_id, "self_signing", key))
        .transpose()?;
    let user_signing = body
        .user_signing_key
        .as_ref()
        .map(|key| check_cross_signing_key(&sender.user_id, "user_signing", key))
        .transpose()?;
    for (kind, json) in [
        ("master", new_master),
        ("self_signing", self_signing),
        ("user_signing", user_signing),
    ] {
        if let Some(json) = json {
            services
                .store
                .set_cross_signing_key(sender.user_id.as_str(), kind, &json)
                .await?;
        }
    }
    Ok(upload_signing_keys::v3::Response::new())
}

/// The public ed25519 keys a user may sign with: device keys and cross-signing keys,
/// as `(key id "ed25519:<name>", base64 key)`.
async fn signing_keys_of(
    services: &Services,
    user_id: &UserId,
) -> Result<BTreeMap<String, String>, Error> {
    let mut keys = BTreeMap::new();
    let mut add = |json: &str| -> Result<(), Error> {
        if let Some(map) = object(json)?.get("keys").and_then(Value::as_object) {
            for (id, key) in map {
                if let (true, Some(key)) = (id.starts_with("ed25519:"), key.as_str()) {
                    keys.insert(id.clone(), key.to_owned());
                }
            }
        }
        Ok(())
    };
    for (_, json) in services.store.device_keys(user_id.as_str()).await? {
        add(&json)?;
    }
    for (_, json) in services.store.cross_signing_keys(user_id.as_str()).await? {
        add(&json)?;
    }
    Ok(keys)
}

/// Keeps the sender's signatures on `signed` that verify against the sender's own keys.
async fn verified_signatures(
    services: &Services,
    signer: &UserId,
    signed: &Map<String, Value>,
) -> Result<Map<String, Value>, String> {
    let signer_keys = signing_keys_of(services, signer)
        .await
        .map_err(|e| e.to_string())?;
    let signatures = signed
        .get("signatures")
        .and_then(|s| s.get(signer.as_str()))
        .and_then(Value::as_object)
        .ok_or("no signature of the uploader")?;
    let mut verified = Map::new();
    for (key_id, signature) in signatures {
        let Some(public) = signer_keys.get(key_id) else {
            continue;
        };
        let mut single = signed.clone();
        single.insert(
            "signatures".into(),
            json!({ signer.as_str(): { key_id: signature } }),
        );
        let canonical: CanonicalJsonObject =
            ruma::canonical_json::try_from_json_map(single).map_err(|e| e.to_string())?;
        let mut key_set = ruma::signatures::PublicKeySet::new();
        let public = ruma::serde::Base64::parse(public).map_err(|e| e.to_string())?;
        key_set.insert(key_id.clone(), public);
        let mut key_map = ruma::signatures::PublicKeyMap::new();
        key_map.insert(signer.to_string(), key_set);
        if ruma::signatures::verify_json(&key_map, &canonical).is_ok() {
            verified.insert(key_id.clone(), signature.clone());
        }
    }
    if verified.is_empty() {
        Err("no valid signature of the uploader's keys".into())
    } else {
        Ok(verified)
    }
}

/// Merges new signatures of `signer` into a stored key's JSON.
fn merge_signatures(
    stored: &str,
    signer: &UserId,
    new: Map<String, Value>,
) -> Result<String, Error> {
    let mut value = object(stored)?;
    let signatures = value
        .entry("signatures")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .ok_or_else(|| Error::Internal("stored signatures are not an object".into()))?;
    let by_signer = signatures
        .entry(signer.to_string())
        .or_insert_with(|| json!({}));
    if let Some(by_signer) = by_signer.as_object_mut() {
        by_signer.extend(new);
    }
    Ok(Value::Object(value).to_string())
}

/// # `POST /_matrix/client/v3/keys/signatures/upload`
pub async fn upload_signatures_route(
    services: Arc<Services>,
    request: Ruma<upload_signatures::v3::Request>,
) -> Result<upload_signatures::v3::Response, Error> {
    let sender = request.sender()?;
    let body = request
        .json_body
        .as_ref()
        .and_then(Value::as_object)
        .ok_or_else(|| Error::BadJson("expected a JSON object".into()))?;
    let mut failures: Map<String, Value> = Map::new();
    for (user, keys) in body {
        let Ok(user_id) = UserId::parse(user) else {
            return Err(Error::InvalidParam(format!("invalid user id {user}")));
        };
        let Some(keys) = keys.as_object() else {
            return Err(Error::BadJson(format!(
                "the keys of {user} are not an object"
            )));
        };
        for (key_id, signed) in keys {
            let fail = |failures: &mut Map<String, Value>, error: String| {
                failures.entry(user.clone()).or_insert_with(|| json!({}))[key_id] =
                    json!({"errcode": "M_INVALID_SIGNATURE", "error": error});
            };
            let Some(signed) = signed.as_object() else {
                fail(&mut failures, "the signed key is not an object".into());
                continue;
            };
            let signatures = match verified_signatures(&services, &sender.user_id, signed).await {
                Ok(signatures) => signatures,
                Err(error) => {
                    fail(&mut failures, error);
                    continue;
                }
            };
            // The target is a device of the user, or one of their cross-signing keys.
            let device = services
                .store
                .device_keys(user_id.as_str())
                .await?
                .into_iter()
                .find(|(device_id, _)| device_id == key_id);
            if let Some((device_id, stored)) = device {
                let merged = merge_signatures(&stored, &sender.user_id, signatures)?;
                services
                    .store
                    .replace_device_keys(user_id.as_str(), &device_id, &merged)
                    .await?;
                continue;
            }
            let cross = services
                .store
                .cross_signing_keys(user_id.as_str())
                .await?
                .into_iter()
                .find(|(_, json)| {
                    object(json).ok().is_some_and(|value| {
                        value
                            .get("keys")
                            .and_then(|keys| keys.get(format!("ed25519:{key_id}")))
                            .is_some()
                    })
                });
            match cross {
                Some((kind, stored)) => {
                    let merged = merge_signatures(&stored, &sender.user_id, signatures)?;
                    services
                        .store
                        .set_cross_signing_key(user_id.as_str(), &kind, &merged)
                        .await?;
                }
                None => fail(&mut failures, format!("unknown key {key_id}")),
            }
        }
    }
    let mut response = upload_signatures::v3::Response::new();
    response.failures = serde_json::from_value(Value::Object(failures))
        .map_err(|e| Error::Internal(e.to_string()))?;
    Ok(response)
}

/// # `PUT /_matrix/client/v3/sendToDevice/{eventType}/{txnId}`
pub async fn send_event_to_device_route(
    services: Arc<Services>,
    request: Ruma<send_event_to_device::v3::Request>,
) -> Result<send_event_to_device::v3::Response, Error> {
    let sender = request.sender()?;
    let body = &request.body;
    let mut messages = Vec::new();
    let mut remote: BTreeMap<ruma::OwnedServerName, Map<String, Value>> = BTreeMap::new();
    for (user_id, devices) in &body.messages {
        if !services.is_local(user_id) {
            let mut of_user = Map::new();
            for (target, content) in devices {
                let content: Value = serde_json::from_str(content.json().get())
                    .map_err(|e| Error::BadJson(format!("to-device content: {e}")))?;
                of_user.insert(target.to_string(), content);
            }
            remote
                .entry(user_id.server_name().to_owned())
                .or_default()
                .insert(user_id.to_string(), Value::Object(of_user));
            continue;
        }
        let known: Vec<String> = services
            .store
            .devices(user_id.as_str())
            .await?
            .into_iter()
            .map(|device| device.device_id)
            .collect();
        for (target, content) in devices {
            let targets: Vec<String> = match target {
                ruma::to_device::DeviceIdOrAllDevices::AllDevices => known.clone(),
                ruma::to_device::DeviceIdOrAllDevices::DeviceId(device_id) => known
                    .iter()
                    .filter(|known| known.as_str() == device_id.as_str())
                    .cloned()
                    .collect(),
            };
            for device_id in targets {
                messages.push(OutgoingToDevice {
                    user_id: user_id.to_string(),
                    device_id,
                    sender: sender.user_id.to_string(),
                    event_type: body.event_type.to_string(),
                    content: content.json().get().to_owned(),
                });
            }
        }
    }
    let first_time = services
        .store
        .queue_to_device(
            &messages,
            (
                sender.user_id.as_str(),
                sender.device_id.as_str(),
                body.txn_id.as_str(),
            ),
        )
        .await?;
    // (A transaction sent again went to other servers the first time.)
    if first_time && !remote.is_empty() {
        crate::federation::e2ee::send_to_device(
            &services,
            &sender.user_id,
            body.event_type.to_string().as_str(),
            &format!("{}-{}", sender.device_id, body.txn_id),
            remote,
        )
        .await?;
    }
    Ok(send_event_to_device::v3::Response::new())
}

/// What sync reports about end-to-end encryption for one device.
pub struct DeviceSyncData {
    pub to_device: Vec<Value>,
    pub changed: Vec<OwnedUserId>,
    pub left: Vec<OwnedUserId>,
    pub one_time_key_counts: BTreeMap<String, i64>,
    pub unused_fallback: Vec<String>,
}

/// Collects the to-device messages, device-list changes and key counts of a sync. The change
/// tracker lets a sync skip every query for what did not change since its token.
pub async fn device_sync_data(
    services: &Services,
    user_id: &UserId,
    device_id: &str,
    since: Option<i64>,
    now: i64,
) -> Result<DeviceSyncData, Error> {
    let changes = services.store.changes();
    let changed = |change: Change| since.is_none_or(|since| changes.changed_since(&change, since));
    let to_device_key = Change::ToDevice(user_id.to_string(), device_id.to_owned());
    if let Some(since) = since {
        // Syncing with a token acknowledges the messages delivered up to it. They are deleted
        // when some may be left: messages were queued after the last deletion, or the token is
        // older than this process (which does not know what was queued before it started).
        let progress = services.to_device_progress(user_id, device_id);
        let queued_after_ack = changes
            .latest(&to_device_key)
            .is_some_and(|latest| latest > progress.acknowledged);
        let delivered_after_ack = progress.delivered > progress.acknowledged;
        if since > progress.acknowledged
            && (since < changes.floor() || queued_after_ack || delivered_after_ack)
        {
            services
                .store
                .delete_to_device_messages(user_id.as_str(), device_id, since)
                .await?;
            services.set_to_device_progress(user_id, device_id, |p| p.acknowledged = since);
        }
    }
    let to_device = if changed(to_device_key) {
        let messages = services
            .store
            .to_device_messages(user_id.as_str(), device_id, since.unwrap_or(0), now, 100)
            .await?;
        if let Some(last) = messages.last() {
            let delivered = last.stream_ordering;
            services.set_to_device_progress(user_id, device_id, |p| {
                p.delivered = p.delivered.max(delivered);
            });
        }
        messages
            .into_iter()
            .map(|message| {
                json!({
                    "sender": message.sender,
                    "type": message.event_type,
                    "content": serde_json::from_str::<Value>(&message.content).unwrap_or(json!({})),
                })
            })
            .collect()
    } else {
        vec![]
    };
    let (changed_users, left) = match since {
        Some(since) => device_list_delta(services, user_id, since, now).await?,
        None => (vec![], vec![]),
    };
    let (counts, unused_fallback) = services
        .store
        .key_counts(user_id.as_str(), device_id)
        .await?;
    Ok(DeviceSyncData {
        to_device,
        changed: changed_users,
        left,
        one_time_key_counts: counts.into_iter().collect(),
        unused_fallback,
    })
}

/// The users whose devices or keys the user must fetch again (`changed`: they changed them, or
/// came to share a room), and those they may forget (`left`: they share no room any more),
/// between two stream positions. Sync and `/keys/changes` both say this.
pub async fn device_list_delta(
    services: &Services,
    user_id: &UserId,
    since: i64,
    now: i64,
) -> Result<(Vec<OwnedUserId>, Vec<OwnedUserId>), Error> {
    let changes = services.store.changes();
    let mut left = Vec::new();
    let mut changed_set: BTreeSet<String> = BTreeSet::new();
    let mut shared: Option<BTreeSet<String>> = None;
    // The user's own devices changed (a new login, a deleted device, new keys): their
    // other devices learn it too.
    let mut own_changed = false;
    if changes.changed_since(&Change::DeviceLists, since) {
        let sharing = users_sharing_rooms(services, user_id).await?;
        let device_changes = services.store.device_list_changes(since, now).await?;
        own_changed = device_changes.iter().any(|user| user == user_id.as_str());
        changed_set.extend(
            device_changes
                .into_iter()
                .filter(|user| sharing.contains(user)),
        );
        shared = Some(sharing);
    }
    // Users who joined a room shared with this one, or whose rooms this user joined.
    for row in services.store.user_memberships(user_id.as_str()).await? {
        if row.membership != "join" {
            continue;
        }
        let fresh = row.stream_ordering > since;
        if fresh {
            changed_set.extend(services.store.room_members(&row.room_id, "join").await?);
        }
        if !changes.changed_since(&Change::Members(row.room_id.clone()), since) {
            continue;
        }
        for (member, membership) in services
            .store
            .membership_changes_since(&row.room_id, since, now)
            .await?
        {
            if membership == "join" || fresh {
                changed_set.insert(member);
                continue;
            }
            let sharing = match &shared {
                Some(sharing) => sharing,
                None => shared.insert(users_sharing_rooms(services, user_id).await?),
            };
            if !sharing.contains(&member) {
                left.push(member);
            }
        }
    }
    // Not because of the user's own joins; for their own devices, yes.
    changed_set.remove(user_id.as_str());
    if own_changed {
        changed_set.insert(user_id.to_string());
    }
    let changed = changed_set
        .into_iter()
        .filter_map(|user| UserId::parse(user).ok())
        .collect();
    left.sort();
    left.dedup();
    let left = left
        .into_iter()
        .filter_map(|user| UserId::parse(user).ok())
        .collect();
    Ok((changed, left))
}
