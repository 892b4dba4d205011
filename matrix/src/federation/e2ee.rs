//! End-to-end encryption across servers: other servers ask for local users' device keys,
//! one-time keys and device lists (`user/keys/query`, `user/keys/claim`, `user/devices`);
//! local clients' questions about other servers' users are asked of those servers; to-device
//! messages and device-list changes travel as EDUs (`m.direct_to_device`,
//! `m.device_list_update`, kept and sent by `device_lists`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use ruma::{OwnedServerName, OwnedUserId, ServerName, UserId};
use serde_json::{Map, Value, json};

use super::membership::remote_error;
use super::server::Federated;
use crate::Services;
use crate::error::Error;
use crate::store::{Outgoing, OutgoingToDevice};

/// A local user's device keys (with display names), and master and self-signing keys.
pub struct LocalKeys {
    pub devices: Map<String, Value>,
    pub master: Option<Value>,
    pub self_signing: Option<Value>,
    pub user_signing: Option<Value>,
}

/// The keys of a local user, of the devices wanted (all when none is named).
pub async fn local_keys(
    services: &Services,
    user_id: &UserId,
    wanted: &[String],
) -> Result<LocalKeys, Error> {
    let devices = services.store.devices(user_id.as_str()).await?;
    let mut keys = LocalKeys {
        devices: Map::new(),
        master: None,
        self_signing: None,
        user_signing: None,
    };
    for (device_id, json) in services.store.device_keys(user_id.as_str()).await? {
        if !wanted.is_empty() && !wanted.contains(&device_id) {
            continue;
        }
        let mut value: Value = serde_json::from_str(&json)
            .map_err(|e| Error::Internal(format!("stored device keys: {e}")))?;
        if let Some(name) = devices
            .iter()
            .find(|device| device.device_id == device_id)
            .and_then(|device| device.display_name.as_deref())
            && let Some(object) = value.as_object_mut()
        {
            let unsigned = object.entry("unsigned").or_insert_with(|| json!({}));
            if let Some(unsigned) = unsigned.as_object_mut() {
                unsigned.insert("device_display_name".into(), json!(name));
            }
        }
        keys.devices.insert(device_id, value);
    }
    for (kind, json) in services.store.cross_signing_keys(user_id.as_str()).await? {
        let value: Value = serde_json::from_str(&json)
            .map_err(|e| Error::Internal(format!("stored cross-signing key: {e}")))?;
        match kind.as_str() {
            "master" => keys.master = Some(value),
            "self_signing" => keys.self_signing = Some(value),
            "user_signing" => keys.user_signing = Some(value),
            _ => {}
        }
    }
    Ok(keys)
}

fn body_object(request: &Federated) -> Result<Value, Error> {
    request
        .body
        .as_ref()
        .and_then(|body| serde_json::to_value(body).ok())
        .filter(Value::is_object)
        .ok_or_else(|| Error::NotJson("the body is a JSON object".into()))
}

/// The local users of a request's map, with what is asked of each.
fn local_users<'a>(
    services: &Services,
    map: &'a Map<String, Value>,
) -> impl Iterator<Item = (OwnedUserId, &'a Value)> {
    let server_name = services.server_name.clone();
    map.iter().filter_map(move |(user, asked)| {
        let user = UserId::parse(user.as_str()).ok()?;
        (user.server_name() == server_name).then_some((user, asked))
    })
}

/// # `POST /_matrix/federation/v1/user/keys/query`
pub async fn query_route(
    State(services): State<Arc<Services>>,
    request: Federated,
) -> Result<Json<Value>, Error> {
    let body = body_object(&request)?;
    let asked = body["device_keys"]
        .as_object()
        .ok_or_else(|| Error::BadJson("`device_keys` is required".into()))?;
    let (mut devices, mut masters, mut self_signing) = (Map::new(), Map::new(), Map::new());
    for (user, wanted) in local_users(&services, asked) {
        let wanted: Vec<String> = wanted
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect();
        let keys = local_keys(&services, &user, &wanted).await?;
        devices.insert(user.to_string(), Value::Object(keys.devices));
        if let Some(master) = keys.master {
            masters.insert(user.to_string(), master);
        }
        if let Some(key) = keys.self_signing {
            self_signing.insert(user.to_string(), key);
        }
    }
    Ok(Json(json!({
        "device_keys": devices,
        "master_keys": masters,
        "self_signing_keys": self_signing,
    })))
}

/// # `POST /_matrix/federation/v1/user/keys/claim`
pub async fn claim_route(
    State(services): State<Arc<Services>>,
    request: Federated,
) -> Result<Json<Value>, Error> {
    let body = body_object(&request)?;
    let asked = body["one_time_keys"]
        .as_object()
        .ok_or_else(|| Error::BadJson("`one_time_keys` is required".into()))?;
    let mut claimed = Map::new();
    for (user, devices) in local_users(&services, asked) {
        let mut of_user = Map::new();
        for (device_id, algorithm) in devices.as_object().into_iter().flatten() {
            let Some(algorithm) = algorithm.as_str() else {
                continue;
            };
            if let Some((key_id, json)) = services
                .store
                .claim_key(user.as_str(), device_id, algorithm)
                .await?
            {
                let key: Value = serde_json::from_str(&json)
                    .map_err(|e| Error::Internal(format!("stored one-time key: {e}")))?;
                of_user.insert(device_id.clone(), json!({ key_id: key }));
            }
        }
        claimed.insert(user.to_string(), Value::Object(of_user));
    }
    Ok(Json(json!({ "one_time_keys": claimed })))
}

/// # `GET /_matrix/federation/v1/user/devices/{userId}`
pub async fn devices_route(
    State(services): State<Arc<Services>>,
    Path(user_id): Path<OwnedUserId>,
    _request: Federated,
) -> Result<Json<Value>, Error> {
    if user_id.server_name() != services.server_name {
        return Err(Error::InvalidParam(format!(
            "{user_id} is not a user of this server"
        )));
    }
    let keys = local_keys(&services, &user_id, &[]).await?;
    let names = services.store.devices(user_id.as_str()).await?;
    let devices: Vec<Value> = keys
        .devices
        .into_iter()
        .map(|(device_id, keys)| {
            let name = names
                .iter()
                .find(|device| device.device_id == device_id)
                .and_then(|device| device.display_name.clone());
            json!({ "device_id": device_id, "keys": keys, "device_display_name": name })
        })
        .collect();
    let mut answer = json!({
        "user_id": user_id,
        "stream_id": services.store.device_list_stream_id(user_id.as_str()).await?,
        "devices": devices,
    });
    if let Some(master) = keys.master {
        answer["master_key"] = master;
    }
    if let Some(key) = keys.self_signing {
        answer["self_signing_key"] = key;
    }
    Ok(Json(answer))
}

/// Asks each server about its users, in parallel: `path` and a body built from the users'
/// entries. Returns the answers by server, and the servers that failed with why.
pub async fn ask_servers(
    services: &Services,
    path: &str,
    field: &str,
    by_server: BTreeMap<OwnedServerName, Map<String, Value>>,
) -> (Vec<Value>, BTreeMap<String, Value>) {
    let asks = by_server.into_iter().map(|(server, users)| async move {
        let body = json!({ field: users });
        let answer = services
            .federation
            .request(&server, http::Method::POST, path, Some(&body), true)
            .await;
        (server, answer)
    });
    let mut answers = Vec::new();
    let mut failures = BTreeMap::new();
    for (server, answer) in futures_util::future::join_all(asks).await {
        match answer {
            Ok(answer) => answers.push(answer),
            Err(error) => {
                failures.insert(server.to_string(), failure_entry(error));
            }
        }
    }
    (answers, failures)
}

/// How a server that could not answer is shown among a response's `failures`.
pub fn failure_entry(error: super::client::FederationError) -> Value {
    let status = match &error {
        super::client::FederationError::Status(_, status, _) => *status,
        _ => 503,
    };
    json!({ "status": status, "message": remote_error(error).to_string() })
}

/// Sends to-device messages for other servers' users, one EDU per server.
pub async fn send_to_device(
    services: &Services,
    sender: &UserId,
    event_type: &str,
    message_id: &str,
    by_server: BTreeMap<OwnedServerName, Map<String, Value>>,
) -> Result<(), Error> {
    let mut entries = Vec::new();
    for (server, messages) in by_server {
        let edu = json!({
            "edu_type": "m.direct_to_device",
            "content": {
                "sender": sender,
                "type": event_type,
                "message_id": message_id,
                "messages": messages,
            },
        });
        entries.push((server.to_string(), Outgoing::Edu(edu.to_string())));
    }
    services.store.enqueue_outgoing(&entries, None).await?;
    for (server, _) in &entries {
        if let Ok(server) = ServerName::parse(server) {
            services.federation_sender.wake(&server);
        }
    }
    Ok(())
}

/// An `m.direct_to_device` EDU: messages of one of the origin's users for local devices.
pub async fn take_to_device(
    services: &Services,
    origin: &ServerName,
    content: &Value,
) -> Result<(), String> {
    let sender = content["sender"]
        .as_str()
        .and_then(|sender| UserId::parse(sender).ok())
        .ok_or("m.direct_to_device without a sender")?;
    if sender.server_name() != origin {
        return Err(format!("{origin} may not speak for {sender}"));
    }
    let event_type = content["type"]
        .as_str()
        .ok_or("m.direct_to_device without a type")?;
    let message_id = content["message_id"]
        .as_str()
        .ok_or("m.direct_to_device without a message id")?;
    let mut queued = Vec::new();
    for (user, devices) in content["messages"].as_object().into_iter().flatten() {
        let Ok(user) = UserId::parse(user.as_str()) else {
            continue;
        };
        if user.server_name() != services.server_name {
            continue;
        }
        let known: Vec<String> = services
            .store
            .devices(user.as_str())
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|device| device.device_id)
            .collect();
        for (device, message) in devices.as_object().into_iter().flatten() {
            let targets: Vec<&String> = if device == "*" {
                known.iter().collect()
            } else {
                known.iter().filter(|known| *known == device).collect()
            };
            for target in targets {
                queued.push(OutgoingToDevice {
                    user_id: user.to_string(),
                    device_id: target.clone(),
                    sender: sender.to_string(),
                    event_type: event_type.to_owned(),
                    content: message.to_string(),
                });
            }
        }
    }
    // Deduplicated by the sender and message id, as a client's by its transaction id.
    services
        .store
        .queue_to_device(&queued, (sender.as_str(), origin.as_str(), message_id))
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}
