//! The checks every PDU from another server passes before the room engine sees it: its size,
//! its format, the signatures of the servers that must sign it (with their keys, fetched when
//! not known), and its content hash: an event whose content does not match its hash is kept
//! in its redacted form. Its event id is computed here, from its reference hash.

use std::collections::BTreeMap;

use ruma::canonical_json::{CanonicalJsonObject, CanonicalJsonValue};
use ruma::room_version_rules::RoomVersionRules;
use ruma::serde::Base64;
use ruma::{EventId, OwnedEventId, ServerName};

use super::keys::KeyError;
use crate::Services;
use crate::pdu::Pdu;

/// The largest PDU, in bytes of canonical JSON.
pub const MAX_PDU_BYTES: usize = 65_536;

/// Why a PDU was refused.
#[derive(Debug, thiserror::Error)]
pub enum PduError {
    #[error("the event is larger than {MAX_PDU_BYTES} bytes")]
    TooLarge,
    #[error("invalid event: {0}")]
    Format(String),
    #[error("signature check failed: {0}")]
    Signature(String),
    #[error("the keys to check its signatures cannot be had: {0}")]
    Keys(#[from] KeyError),
}

/// A PDU as it arrives, as canonical JSON; anything else is refused.
pub fn as_object(value: &CanonicalJsonValue) -> Result<CanonicalJsonObject, PduError> {
    match value {
        CanonicalJsonValue::Object(object) => Ok(object.clone()),
        _ => Err(PduError::Format("a PDU is a JSON object".into())),
    }
}

/// The id of an event in the format of the room versions this server supports: its reference
/// hash.
pub fn event_id(
    object: &CanonicalJsonObject,
    rules: &RoomVersionRules,
) -> Result<OwnedEventId, PduError> {
    let hash = ruma::signatures::reference_hash(object, rules)
        .map_err(|e| PduError::Format(format!("no reference hash: {e}")))?;
    EventId::new_v2_or_v3(&hash).map_err(|e| PduError::Format(format!("event id: {e}")))
}

/// Checks a PDU of a room of version `rules` and parses it: size, format, signatures and
/// content hash. A content hash mismatch gives the redacted event.
pub async fn check(
    services: &Services,
    rules: &RoomVersionRules,
    mut object: CanonicalJsonObject,
) -> Result<Pdu, PduError> {
    object.remove("unsigned");
    if CanonicalJsonValue::Object(object.clone()).to_string().len() > MAX_PDU_BYTES {
        return Err(PduError::TooLarge);
    }
    let event_id = event_id(&object, rules)?;
    // Parsed first, so that the format is known good before any key is fetched for it.
    Pdu::from_json(event_id.clone(), object.clone()).map_err(PduError::Format)?;
    let servers =
        ruma::signatures::required_server_signatures_to_verify_event(&object, &rules.signatures)
            .map_err(|e| PduError::Signature(e.to_string()))?;
    let signatures = object
        .get("signatures")
        .and_then(CanonicalJsonValue::as_object)
        .ok_or_else(|| PduError::Signature("no signatures".into()))?;
    let ts = object
        .get("origin_server_ts")
        .and_then(CanonicalJsonValue::as_integer)
        .map_or(0, i64::from);
    let mut public_keys = ruma::signatures::PublicKeyMap::new();
    for server in &servers {
        let Some(theirs) = signatures
            .get(server.as_str())
            .and_then(CanonicalJsonValue::as_object)
        else {
            return Err(PduError::Signature(format!("{server} did not sign it")));
        };
        let mut set = BTreeMap::new();
        let mut last_error = None;
        for key_id in theirs.keys().filter(|id| id.starts_with("ed25519:")) {
            match key_at(services, server, key_id, ts).await {
                Ok(key) => {
                    set.insert(key_id.clone(), Base64::new(key));
                }
                Err(error) => last_error = Some(error),
            }
        }
        if set.is_empty() {
            return Err(match last_error {
                Some(error) => PduError::Keys(error),
                None => PduError::Signature(format!("{server} signed with no ed25519 key")),
            });
        }
        public_keys.insert(server.to_string(), set);
    }
    let verified = ruma::signatures::verify_event(&public_keys, &object, rules)
        .map_err(|e| PduError::Signature(e.to_string()))?;
    if verified == ruma::signatures::Verified::Signatures {
        tracing::info!(%event_id, "content hash mismatch: the event is kept redacted");
        object = ruma::canonical_json::redact(object, &rules.redaction, None)
            .map_err(|e| PduError::Format(format!("redacting: {e}")))?;
    }
    Pdu::from_json(event_id, object).map_err(PduError::Format)
}

/// The events of a list in another server's answer, each checked; those that fail are left
/// out (what holds without them is for the authorization rules to say).
pub async fn check_list(
    services: &Services,
    rules: &RoomVersionRules,
    list: Option<&serde_json::Value>,
) -> Vec<Pdu> {
    let mut events = Vec::new();
    for value in list
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
    {
        let checked = match CanonicalJsonValue::try_from(value.clone()) {
            Ok(value) => match as_object(&value) {
                Ok(object) => check(services, rules, object).await,
                Err(error) => Err(error),
            },
            Err(e) => Err(PduError::Format(e.to_string())),
        };
        match checked {
            Ok(event) => events.push(event),
            Err(error) => {
                tracing::info!(%error, "an event of another server's answer was left out")
            }
        }
    }
    events
}

/// Fetches the auth chain of an event from `server` (`event_auth`) and stores what this
/// server lacks of it as outliers.
pub async fn fetch_auth_chain(
    services: &Services,
    server: &ServerName,
    room_id: &ruma::RoomId,
    rules: &RoomVersionRules,
    event_id: &EventId,
) -> Result<(), crate::error::Error> {
    use super::membership::{remote_error, segment};
    let uri = format!(
        "/_matrix/federation/v1/event_auth/{}/{}",
        segment(room_id.as_str()),
        segment(event_id.as_str())
    );
    let answer = services
        .federation
        .request(server, http::Method::GET, &uri, None, true)
        .await
        .map_err(remote_error)?;
    let chain = check_list(services, rules, answer.get("auth_chain")).await;
    services.rooms.store_outliers(room_id, chain).await
}

/// A server's key, valid when the event was made (a key that expired before is no good).
async fn key_at(
    services: &Services,
    server: &ServerName,
    key_id: &str,
    ts: i64,
) -> Result<Vec<u8>, KeyError> {
    if server == services.server_name {
        return if key_id == format!("ed25519:{}", services.key.version()) {
            Ok(services.key.public_key().to_vec())
        } else {
            Err(KeyError::Unknown(server.to_owned(), key_id.to_owned()))
        };
    }
    services
        .server_keys
        .key(&services.federation, server, key_id, ts)
        .await
}
