//! Device lists across servers. Local users' device changes go to the servers sharing a room
//! with them as a chain (`m.device_list_update` with `stream_id` and `prev_id`, the stream id
//! also answered with the whole list by `user/devices`), cross-signing key changes as
//! `m.signing_key_update`. Other servers' users' device lists are kept once asked for while
//! they share a room with a local user, updated by their servers' EDUs while the chain holds,
//! and asked again (`user/devices`) when it breaks: an update whose `prev_id` is not the
//! stream id kept drops what was kept.

use std::collections::BTreeMap;

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use ruma::{OwnedServerName, OwnedUserId, ServerName, UserId};
use serde_json::{Map, Value, json};

use super::e2ee::{failure_entry, local_keys};
use crate::Services;
use crate::store::{DeviceListEntry, RemoteDeviceList};

/// The EDU that tells other servers of one link of a local user's chain.
pub async fn edu_for(services: &Services, entry: &DeviceListEntry) -> Option<Value> {
    let user = UserId::parse(entry.user_id.as_str()).ok()?;
    let Some(device_id) = &entry.device_id else {
        let keys = local_keys(services, &user, &[]).await.ok()?;
        let mut content = json!({ "user_id": user });
        if let Some(master) = keys.master {
            content["master_key"] = master;
        }
        if let Some(key) = keys.self_signing {
            content["self_signing_key"] = key;
        }
        return Some(json!({ "edu_type": "m.signing_key_update", "content": content }));
    };
    let mut content = json!({
        "user_id": user,
        "device_id": device_id,
        "stream_id": entry.position,
        "prev_id": entry.prev.into_iter().collect::<Vec<i64>>(),
        "deleted": entry.deleted,
    });
    if !entry.deleted {
        let keys = local_keys(services, &user, std::slice::from_ref(device_id))
            .await
            .ok()?;
        // The keys carry the device's name; a device without keys yet is asked for it.
        let name = match keys.devices.get(device_id) {
            Some(keys) => {
                content["keys"] = keys.clone();
                keys["unsigned"]["device_display_name"]
                    .as_str()
                    .map(str::to_owned)
            }
            None => services
                .store
                .devices(user.as_str())
                .await
                .ok()?
                .into_iter()
                .find(|device| &device.device_id == device_id)
                .and_then(|device| device.display_name),
        };
        if let Some(name) = name {
            content["device_display_name"] = json!(name);
        }
    }
    Some(json!({ "edu_type": "m.device_list_update", "content": content }))
}

fn origin_user(origin: &ServerName, content: &Value) -> Result<OwnedUserId, String> {
    let user = content["user_id"]
        .as_str()
        .and_then(|user| UserId::parse(user).ok())
        .ok_or("a device list or signing key update without a user")?;
    if user.server_name() != origin {
        return Err(format!("{origin} may not speak for {user}"));
    }
    Ok(user)
}

/// Device keys as `keys/query` shows them: signed by the device for `user` and `device_id`,
/// with the device's name among the unsigned data.
fn device_keys(user: &UserId, device_id: &str, keys: &Value, name: Option<&str>) -> Option<Value> {
    if keys["user_id"].as_str() != Some(user.as_str())
        || keys["device_id"].as_str() != Some(device_id)
    {
        return None;
    }
    let mut keys = keys.clone();
    if let Some(name) = name
        && let Some(object) = keys.as_object_mut()
    {
        let unsigned = object.entry("unsigned").or_insert_with(|| json!({}));
        if let Some(unsigned) = unsigned.as_object_mut() {
            unsigned.insert("device_display_name".into(), json!(name));
        }
    }
    Some(keys)
}

/// A cross-signing key of `user`, as JSON text.
fn cross_signing_key(user: &UserId, key: &Value) -> Option<String> {
    (key["user_id"].as_str() == Some(user.as_str())).then(|| key.to_string())
}

/// An `m.device_list_update` EDU: one of the origin's users added, changed or deleted a device.
/// Local users who share a room with them learn it through sync (`device_lists.changed`).
pub async fn take_device_list_update(
    services: &Services,
    origin: &ServerName,
    content: &Value,
) -> Result<(), String> {
    let user = origin_user(origin, content)?;
    let device_id = content["device_id"]
        .as_str()
        .ok_or("m.device_list_update without a device id")?;
    let stream_id = content["stream_id"]
        .as_i64()
        .ok_or("m.device_list_update without a stream id")?;
    let prev: Vec<i64> = match &content["prev_id"] {
        Value::Null => Vec::new(),
        Value::Array(ids) => ids
            .iter()
            .map(|id| id.as_i64().ok_or("a prev_id that is not an integer"))
            .collect::<Result<_, _>>()?,
        _ => return Err("m.device_list_update with a prev_id that is not a list".into()),
    };
    let store = &services.store;
    if let Some(mut list) = store
        .remote_device_list(user.as_str())
        .await
        .map_err(|e| e.to_string())?
    {
        if stream_id <= list.stream_id {
            // Already known.
            return Ok(());
        }
        let follows = !prev.is_empty() && prev.iter().all(|id| *id == list.stream_id);
        if follows {
            let mut devices: Map<String, Value> =
                serde_json::from_str(&list.devices).unwrap_or_default();
            let name = content["device_display_name"].as_str();
            if content["deleted"].as_bool() == Some(true) {
                devices.remove(device_id);
            } else if content["keys"].is_object() {
                let keys = device_keys(&user, device_id, &content["keys"], name)
                    .ok_or("device keys of another user or device")?;
                devices.insert(device_id.to_owned(), keys);
            } else if let (Some(name), Some(keys)) = (name, devices.get_mut(device_id)) {
                let renamed = device_keys(&user, device_id, keys, Some(name));
                if let Some(renamed) = renamed {
                    *keys = renamed;
                }
            }
            list.stream_id = stream_id;
            list.devices = Value::Object(devices).to_string();
            store
                .set_remote_device_list(&list)
                .await
                .map_err(|e| e.to_string())?;
        } else {
            // An update was missed: the whole list is asked for again when next needed.
            store
                .forget_remote_device_list(user.as_str())
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    tell_local_clients(services, &user).await
}

/// Local clients sharing a room with `user` learn of the change through sync
/// (`device_lists.changed`) and ask for the keys again.
async fn tell_local_clients(services: &Services, user: &UserId) -> Result<(), String> {
    services
        .store
        .device_list_changed(user.as_str(), crate::store::DeviceChange::Remote)
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// An `m.signing_key_update` EDU: one of the origin's users changed their cross-signing keys.
pub async fn take_signing_key_update(
    services: &Services,
    origin: &ServerName,
    content: &Value,
) -> Result<(), String> {
    let user = origin_user(origin, content)?;
    let store = &services.store;
    if let Some(mut list) = store
        .remote_device_list(user.as_str())
        .await
        .map_err(|e| e.to_string())?
    {
        if let Some(key) = content.get("master_key") {
            list.master_key =
                Some(cross_signing_key(&user, key).ok_or("a master key of another user")?);
        }
        if let Some(key) = content.get("self_signing_key") {
            list.self_signing_key =
                Some(cross_signing_key(&user, key).ok_or("a self-signing key of another user")?);
        }
        store
            .set_remote_device_list(&list)
            .await
            .map_err(|e| e.to_string())?;
    }
    tell_local_clients(services, &user).await
}

/// A `user/devices` answer about `user`, as kept.
fn list_from_answer(user: &UserId, answer: &Value) -> Result<RemoteDeviceList, String> {
    if answer["user_id"].as_str() != Some(user.as_str()) {
        return Err(format!(
            "the device list asked for {user} is of another user"
        ));
    }
    let stream_id = answer["stream_id"]
        .as_i64()
        .ok_or("a device list without a stream id")?;
    let mut devices = Map::new();
    for device in answer["devices"].as_array().into_iter().flatten() {
        let Some(device_id) = device["device_id"].as_str() else {
            continue;
        };
        let name = device["device_display_name"].as_str();
        if let Some(keys) = device_keys(user, device_id, &device["keys"], name) {
            devices.insert(device_id.to_owned(), keys);
        }
    }
    Ok(RemoteDeviceList {
        user_id: user.to_string(),
        stream_id,
        devices: Value::Object(devices).to_string(),
        master_key: answer
            .get("master_key")
            .and_then(|key| cross_signing_key(user, key)),
        self_signing_key: answer
            .get("self_signing_key")
            .and_then(|key| cross_signing_key(user, key)),
    })
}

/// Asks a user's server for their whole device list, and keeps it unless an update came in
/// meanwhile (then it is asked again next time).
async fn fetch_list(services: &Services, user: &UserId) -> Result<RemoteDeviceList, Value> {
    let before = services
        .store
        .device_list_position(user.as_str())
        .await
        .map_err(|e| json!({ "status": 500, "message": e.to_string() }))?;
    let path = format!(
        "/_matrix/federation/v1/user/devices/{}",
        utf8_percent_encode(user.as_str(), NON_ALPHANUMERIC)
    );
    let answer = services
        .federation
        .request(user.server_name(), http::Method::GET, &path, None, true)
        .await
        .map_err(failure_entry)?;
    let list = list_from_answer(user, &answer)
        .map_err(|message| json!({ "status": 502, "message": message }))?;
    let after = services
        .store
        .device_list_position(user.as_str())
        .await
        .map_err(|e| json!({ "status": 500, "message": e.to_string() }))?;
    if before == after {
        services
            .store
            .set_remote_device_list(&list)
            .await
            .map_err(|e| json!({ "status": 500, "message": e.to_string() }))?;
    }
    Ok(list)
}

/// The device and cross-signing keys of other servers' users for a local client's
/// `keys/query`, in the form of `user/keys/query` answers, and the servers that failed.
/// Users sharing a room with a local user are answered from their kept device list (asked for
/// with `user/devices` when none is kept); others are asked of their servers each time.
pub async fn remote_keys(
    services: &Services,
    wanted: &BTreeMap<OwnedUserId, Vec<String>>,
) -> (Vec<Value>, BTreeMap<String, Value>) {
    let mut failures = BTreeMap::new();
    let mut ask: BTreeMap<OwnedServerName, Map<String, Value>> = BTreeMap::new();
    let mut lists = Vec::new();
    let mut fetch = Vec::new();
    for (user, devices) in wanted {
        let tracked = services
            .store
            .shares_room_with_local_user(user.as_str())
            .await
            .unwrap_or(false);
        let kept = if tracked {
            services
                .store
                .remote_device_list(user.as_str())
                .await
                .ok()
                .flatten()
        } else {
            None
        };
        match (tracked, kept) {
            (true, Some(list)) => lists.push((list, devices)),
            (true, None) => fetch.push((user, devices)),
            (false, _) => {
                ask.entry(user.server_name().to_owned())
                    .or_default()
                    .insert(user.to_string(), json!(devices));
            }
        }
    }
    let fetched =
        futures_util::future::join_all(fetch.into_iter().map(|(user, devices)| async move {
            (user, devices, fetch_list(services, user).await)
        }))
        .await;
    for (user, devices, result) in fetched {
        match result {
            Ok(list) => lists.push((list, devices)),
            Err(failure) => {
                failures.insert(user.server_name().to_string(), failure);
            }
        }
    }
    let (mut answers, asked_failures) = super::e2ee::ask_servers(
        services,
        "/_matrix/federation/v1/user/keys/query",
        "device_keys",
        ask,
    )
    .await;
    failures.extend(asked_failures);
    let (mut device_keys, mut masters, mut self_signing) = (Map::new(), Map::new(), Map::new());
    for (list, wanted) in lists {
        let devices: Map<String, Value> = serde_json::from_str(&list.devices).unwrap_or_default();
        let devices: Map<String, Value> = devices
            .into_iter()
            .filter(|(device, _)| wanted.is_empty() || wanted.contains(device))
            .collect();
        device_keys.insert(list.user_id.clone(), Value::Object(devices));
        for (key, target) in [
            (&list.master_key, &mut masters),
            (&list.self_signing_key, &mut self_signing),
        ] {
            if let Some(key) = key
                .as_deref()
                .and_then(|key| serde_json::from_str(key).ok())
            {
                target.insert(list.user_id.clone(), key);
            }
        }
    }
    answers.push(json!({
        "device_keys": device_keys,
        "master_keys": masters,
        "self_signing_keys": self_signing,
    }));
    (answers, failures)
}
