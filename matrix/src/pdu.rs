//! Persistent data units: the event format of room versions 10 to 12, hashing, signing,
//! reference-hash event ids, redaction, and the client format of events.

use std::collections::HashMap;

use ruma::canonical_json::{CanonicalJsonObject, CanonicalJsonValue, redact};
use ruma::events::TimelineEventType;
use ruma::room_version_rules::RoomVersionRules;
use ruma::serde::Raw;
use ruma::signatures::Ed25519KeyPair;
use ruma::{
    EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId,
    RoomVersionId, UInt, UserId,
};
use serde_json::value::{RawValue, to_raw_value};
use serde_json::{Map, Value, json};

use crate::error::Error;

/// The room versions this server creates and joins.
pub const SUPPORTED_ROOM_VERSIONS: [RoomVersionId; 7] = [
    RoomVersionId::V6,
    RoomVersionId::V7,
    RoomVersionId::V8,
    RoomVersionId::V9,
    RoomVersionId::V10,
    RoomVersionId::V11,
    RoomVersionId::V12,
];

/// The rules of a supported room version.
pub fn rules(version: &RoomVersionId) -> Result<RoomVersionRules, Error> {
    if !SUPPORTED_ROOM_VERSIONS.contains(version) {
        return Err(Error::UnsupportedRoomVersion(format!(
            "room version {version} is not supported"
        )));
    }
    version.rules().ok_or_else(|| {
        Error::UnsupportedRoomVersion(format!("no rules for room version {version}"))
    })
}

/// A parsed event, as the room engine and the authorization rules see it.
#[derive(Debug, Clone)]
pub struct Pdu {
    pub event_id: OwnedEventId,
    pub room_id: Option<OwnedRoomId>,
    pub sender: OwnedUserId,
    pub origin_server_ts: MilliSecondsSinceUnixEpoch,
    pub event_type: TimelineEventType,
    pub state_key: Option<String>,
    pub content: Box<RawValue>,
    pub prev_events: Vec<OwnedEventId>,
    pub auth_events: Vec<OwnedEventId>,
    pub redacts: Option<OwnedEventId>,
    pub depth: i64,
    /// The full signed event, without `event_id` and `unsigned`.
    pub json: CanonicalJsonObject,
    /// Whether the authorization rules refused the event (state resolution skips it).
    pub rejected: bool,
}

impl Pdu {
    /// Parses a stored or received PDU. `event_id` is the id it is known by; `room_id` fills in
    /// the room of a version 12 create event, which carries none.
    pub fn from_json(event_id: OwnedEventId, mut json: CanonicalJsonObject) -> Result<Pdu, String> {
        json.remove("event_id");
        json.remove("unsigned");
        let text = |key: &str| -> Result<&str, String> {
            json.get(key)
                .and_then(CanonicalJsonValue::as_str)
                .ok_or_else(|| format!("missing or invalid `{key}`"))
        };
        let room_id = match json.get("room_id") {
            Some(value) => Some(
                value
                    .as_str()
                    .and_then(|id| RoomId::parse(id).ok())
                    .ok_or("invalid `room_id`")?,
            ),
            None => None,
        };
        let sender = UserId::parse(text("sender")?).map_err(|e| format!("invalid sender: {e}"))?;
        let event_type = TimelineEventType::from(text("type")?);
        let state_key = match json.get("state_key") {
            Some(value) => Some(value.as_str().ok_or("invalid `state_key`")?.to_owned()),
            None => None,
        };
        let origin_server_ts = json
            .get("origin_server_ts")
            .and_then(CanonicalJsonValue::as_integer)
            .and_then(|value| UInt::try_from(i64::from(value)).ok())
            .map(MilliSecondsSinceUnixEpoch)
            .ok_or("missing or invalid `origin_server_ts`")?;
        let depth = json
            .get("depth")
            .and_then(CanonicalJsonValue::as_integer)
            .map(i64::from)
            .ok_or("missing or invalid `depth`")?;
        let content_value = json.get("content").ok_or("missing `content`")?;
        if content_value.as_object().is_none() {
            return Err("`content` is not an object".to_owned());
        }
        let content = to_raw_value(content_value).map_err(|e| e.to_string())?;
        let ids = |key: &str| -> Result<Vec<OwnedEventId>, String> {
            json.get(key)
                .and_then(CanonicalJsonValue::as_array)
                .ok_or_else(|| format!("missing or invalid `{key}`"))?
                .iter()
                .map(|value| {
                    value
                        .as_str()
                        .and_then(|id| EventId::parse(id).ok())
                        .ok_or_else(|| format!("invalid event id in `{key}`"))
                })
                .collect()
        };
        let prev_events = ids("prev_events")?;
        let auth_events = ids("auth_events")?;
        let redacts = content_value
            .as_object()
            .and_then(|content| content.get("redacts"))
            .or_else(|| json.get("redacts"))
            .and_then(CanonicalJsonValue::as_str)
            .and_then(|id| EventId::parse(id).ok());
        Ok(Pdu {
            event_id,
            room_id,
            sender,
            origin_server_ts,
            event_type,
            state_key,
            content,
            prev_events,
            auth_events,
            redacts,
            depth,
            json,
            rejected: false,
        })
    }

    /// Parses the JSON stored for an event.
    pub fn from_stored(event_id: &str, json: &str) -> Result<Pdu, Error> {
        let event_id = EventId::parse(event_id)
            .map_err(|e| Error::Internal(format!("stored event id {event_id}: {e}")))?;
        let object: CanonicalJsonObject = serde_json::from_str(json)
            .map_err(|e| Error::Internal(format!("stored event {event_id}: {e}")))?;
        Pdu::from_json(event_id.clone(), object)
            .map_err(|e| Error::Internal(format!("stored event {event_id}: {e}")))
    }

    /// A stored event, with whether it was rejected.
    pub fn from_row(row: &crate::store::EventRow) -> Result<Pdu, Error> {
        let mut pdu = Pdu::from_stored(&row.event_id, &row.json)?;
        pdu.rejected = row.rejected_reason.is_some();
        Ok(pdu)
    }

    /// This event, to store out of its room's graph.
    pub fn to_outlier(&self, rejected_reason: Option<String>) -> crate::store::NewOutlier {
        crate::store::NewOutlier {
            event_id: self.event_id.to_string(),
            sender: self.sender.to_string(),
            event_type: self.event_type.to_string(),
            state_key: self.state_key.clone(),
            depth: self.depth,
            origin_server_ts: i64::try_from(u64::from(self.origin_server_ts.get())).unwrap_or(0),
            json: self.to_stored(),
            rejected_reason,
            redacted_by: None,
        }
    }

    /// The JSON stored for this event.
    pub fn to_stored(&self) -> String {
        CanonicalJsonValue::Object(self.json.clone()).to_string()
    }

    /// The content as a JSON value.
    pub fn content_value(&self) -> Value {
        serde_json::from_str(self.content.get()).unwrap_or(Value::Object(Map::new()))
    }

    /// The room this event belongs to, also for a version 12 create event.
    pub fn room_id_or_derived(&self) -> Result<OwnedRoomId, Error> {
        match &self.room_id {
            Some(room_id) => Ok(room_id.clone()),
            None => RoomId::parse(format!("!{}", &self.event_id.as_str()[1..]))
                .map_err(|e| Error::Internal(format!("create event id as room id: {e}"))),
        }
    }

    /// The event in the client-server format. `unsigned` is added by the caller.
    pub fn to_client_value(&self, room_id: &RoomId) -> Map<String, Value> {
        let mut event = Map::new();
        event.insert("content".into(), self.content_value());
        event.insert("event_id".into(), json!(self.event_id));
        event.insert("origin_server_ts".into(), json!(self.origin_server_ts));
        event.insert("room_id".into(), json!(room_id));
        event.insert("sender".into(), json!(self.sender));
        event.insert("type".into(), json!(self.event_type.to_string()));
        if let Some(state_key) = &self.state_key {
            event.insert("state_key".into(), json!(state_key));
        }
        if let Some(redacts) = &self.redacts {
            // Clients of every version read `redacts` at the top level.
            event.insert("redacts".into(), json!(redacts));
        }
        event
    }
}

impl ruma::state_res::Event for Pdu {
    type Id = OwnedEventId;

    fn event_id(&self) -> &Self::Id {
        &self.event_id
    }
    fn room_id(&self) -> Option<&RoomId> {
        self.room_id.as_deref()
    }
    fn sender(&self) -> &UserId {
        &self.sender
    }
    fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        self.origin_server_ts
    }
    fn event_type(&self) -> &TimelineEventType {
        &self.event_type
    }
    fn content(&self) -> &RawValue {
        &self.content
    }
    fn state_key(&self) -> Option<&str> {
        self.state_key.as_deref()
    }
    fn prev_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.prev_events.iter())
    }
    fn auth_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.auth_events.iter())
    }
    fn redacts(&self) -> Option<&Self::Id> {
        self.redacts.as_ref()
    }
    fn rejected(&self) -> bool {
        self.rejected
    }
}

/// What a new local event is made of, before it is hashed and signed.
pub struct EventDraft<'a> {
    pub room_id: Option<&'a RoomId>,
    pub sender: &'a UserId,
    pub event_type: &'a str,
    pub state_key: Option<&'a str>,
    pub content: CanonicalJsonObject,
    pub prev_events: Vec<OwnedEventId>,
    pub auth_events: Vec<OwnedEventId>,
    pub depth: i64,
    pub origin_server_ts: MilliSecondsSinceUnixEpoch,
}

/// Builds, hashes and signs an event; the event id is its reference hash.
pub fn build_event(
    draft: EventDraft<'_>,
    rules: &RoomVersionRules,
    server_name: &str,
    key: &Ed25519KeyPair,
) -> Result<Pdu, Error> {
    let ids = |ids: &[OwnedEventId]| {
        CanonicalJsonValue::Array(
            ids.iter()
                .map(|id| CanonicalJsonValue::String(id.to_string()))
                .collect(),
        )
    };
    let mut object = CanonicalJsonObject::new();
    object.insert("auth_events".into(), ids(&draft.auth_events));
    object.insert("content".into(), CanonicalJsonValue::Object(draft.content));
    object.insert(
        "depth".into(),
        CanonicalJsonValue::Integer(
            ruma::Int::new(draft.depth).ok_or_else(|| Error::Internal("depth overflow".into()))?,
        ),
    );
    object.insert(
        "origin_server_ts".into(),
        CanonicalJsonValue::Integer(draft.origin_server_ts.get().into()),
    );
    object.insert("prev_events".into(), ids(&draft.prev_events));
    if let Some(room_id) = draft.room_id {
        object.insert(
            "room_id".into(),
            CanonicalJsonValue::String(room_id.to_string()),
        );
    }
    object.insert(
        "sender".into(),
        CanonicalJsonValue::String(draft.sender.to_string()),
    );
    if let Some(state_key) = draft.state_key {
        object.insert(
            "state_key".into(),
            CanonicalJsonValue::String(state_key.into()),
        );
    }
    object.insert(
        "type".into(),
        CanonicalJsonValue::String(draft.event_type.into()),
    );
    if !rules.redaction.content_field_redacts
        && draft.event_type == "m.room.redaction"
        && let Some(redacts) = object
            .get("content")
            .and_then(CanonicalJsonValue::as_object)
            .and_then(|content| content.get("redacts"))
            .cloned()
    {
        // Before version 11 the target of a redaction is a top-level key.
        object.insert("redacts".into(), redacts);
    }
    ruma::signatures::hash_and_sign_event(server_name, key, &mut object, &rules.redaction)
        .map_err(|e| event_too_large_or_internal(&e))?;
    let hash = ruma::signatures::reference_hash(&object, rules)
        .map_err(|e| event_too_large_or_internal(&e))?;
    let event_id = EventId::new_v2_or_v3(&hash)
        .map_err(|e| Error::Internal(format!("event id from hash: {e}")))?;
    Pdu::from_json(event_id, object).map_err(Error::Internal)
}

fn event_too_large_or_internal(error: &ruma::signatures::JsonError) -> Error {
    match error {
        ruma::signatures::JsonError::PduTooLarge => {
            Error::TooLarge("the event is larger than 65536 bytes".into())
        }
        other => Error::Internal(format!("hashing an event: {other}")),
    }
}

/// The redacted form of an event, with `redacted_because` kept in `unsigned` by the caller.
pub fn redacted(pdu: &Pdu, rules: &RoomVersionRules) -> Result<Pdu, Error> {
    let object = redact(pdu.json.clone(), &rules.redaction, None)
        .map_err(|e| Error::Internal(format!("redacting {}: {e}", pdu.event_id)))?;
    Pdu::from_json(pdu.event_id.clone(), object).map_err(Error::Internal)
}

/// Turns a JSON object from a client into canonical JSON, refusing what cannot be canonical.
pub fn canonical_content(value: Value) -> Result<CanonicalJsonObject, Error> {
    match value {
        Value::Object(map) => ruma::canonical_json::try_from_json_map(map)
            .map_err(|e| Error::BadJson(format!("content is not canonical JSON: {e}"))),
        _ => Err(Error::BadJson("content must be a JSON object".into())),
    }
}

/// A raw client-format event for ruma response types.
pub fn raw_event<T>(event: Map<String, Value>) -> Result<Raw<T>, Error> {
    to_raw_value(&Value::Object(event))
        .map(Raw::from_json)
        .map_err(|e| Error::Internal(e.to_string()))
}

/// `unsigned` data added to client events: age, the sender's transaction id, redaction.
#[derive(Default)]
pub struct Unsigned<'a> {
    pub now: i64,
    pub transaction_ids: Option<&'a HashMap<String, String>>,
}

impl Unsigned<'_> {
    pub fn apply(&self, pdu: &Pdu, event: &mut Map<String, Value>, redacted_because: Option<&str>) {
        let mut unsigned = Map::new();
        let ts = i64::try_from(u64::from(pdu.origin_server_ts.get())).unwrap_or(0);
        unsigned.insert("age".into(), json!((self.now - ts).max(0)));
        if let Some(txn) = self
            .transaction_ids
            .and_then(|ids| ids.get(pdu.event_id.as_str()))
        {
            unsigned.insert("transaction_id".into(), json!(txn));
        }
        if let Some(because) = redacted_because
            && let Ok(value) = serde_json::from_str::<Value>(because)
        {
            unsigned.insert("redacted_because".into(), value);
        }
        event.insert("unsigned".into(), Value::Object(unsigned));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Ed25519KeyPair {
        let document = Ed25519KeyPair::generate();
        Ed25519KeyPair::from_der(&document, "test".into()).unwrap()
    }

    fn draft<'a>(room_id: Option<&'a RoomId>, sender: &'a UserId) -> EventDraft<'a> {
        EventDraft {
            room_id,
            sender,
            event_type: "m.room.message",
            state_key: None,
            content: canonical_content(json!({"msgtype": "m.text", "body": "hi"})).unwrap(),
            prev_events: vec![],
            auth_events: vec![],
            depth: 3,
            origin_server_ts: MilliSecondsSinceUnixEpoch(UInt::new(1_700_000_000_000).unwrap()),
        }
    }

    #[test]
    fn event_id_is_the_reference_hash_and_signature_verifies() {
        let key = key();
        let sender = UserId::parse("@a:example.org").unwrap();
        let room = RoomId::parse("!room:example.org").unwrap();
        let rules = rules(&RoomVersionId::V11).unwrap();
        let pdu = build_event(draft(Some(&room), &sender), &rules, "example.org", &key).unwrap();
        let hash = ruma::signatures::reference_hash(&pdu.json, &rules).unwrap();
        assert_eq!(pdu.event_id.as_str(), format!("${hash}"));
        assert!(pdu.json.contains_key("hashes"));
        let mut keys = ruma::signatures::PublicKeyMap::new();
        let mut set = ruma::signatures::PublicKeySet::new();
        set.insert(
            format!("ed25519:{}", key.version()),
            ruma::serde::Base64::new(key.public_key().to_vec()),
        );
        keys.insert("example.org".into(), set);
        let verified = ruma::signatures::verify_event(&keys, &pdu.json, &rules).unwrap();
        assert_eq!(verified, ruma::signatures::Verified::All);
        // A stored copy parses back to the same event.
        let again = Pdu::from_stored(pdu.event_id.as_str(), &pdu.to_stored()).unwrap();
        assert_eq!(again.json, pdu.json);
        assert_eq!(again.depth, 3);
    }

    #[test]
    fn changing_content_changes_the_id() {
        let key = key();
        let sender = UserId::parse("@a:example.org").unwrap();
        let room = RoomId::parse("!room:example.org").unwrap();
        let rules = rules(&RoomVersionId::V12).unwrap();
        let first = build_event(draft(Some(&room), &sender), &rules, "example.org", &key).unwrap();
        let mut other = draft(Some(&room), &sender);
        other.content = canonical_content(json!({"msgtype": "m.text", "body": "ho"})).unwrap();
        let second = build_event(other, &rules, "example.org", &key).unwrap();
        assert_ne!(first.event_id, second.event_id);
    }

    #[test]
    fn redaction_keeps_only_what_the_version_keeps() {
        let key = key();
        let sender = UserId::parse("@a:example.org").unwrap();
        let room = RoomId::parse("!room:example.org").unwrap();
        let rules = rules(&RoomVersionId::V11).unwrap();
        let pdu = build_event(draft(Some(&room), &sender), &rules, "example.org", &key).unwrap();
        let redacted = redacted(&pdu, &rules).unwrap();
        assert_eq!(redacted.content_value(), json!({}));
        assert_eq!(redacted.event_id, pdu.event_id);
        // Redaction does not change the reference hash.
        assert_eq!(
            ruma::signatures::reference_hash(&redacted.json, &rules).unwrap(),
            ruma::signatures::reference_hash(&pdu.json, &rules).unwrap()
        );
    }

    #[test]
    fn unsupported_versions_and_bad_content() {
        assert!(matches!(
            rules(&RoomVersionId::V5),
            Err(Error::UnsupportedRoomVersion(_))
        ));
        assert!(matches!(
            canonical_content(json!({"a": 1.5})),
            Err(Error::BadJson(_))
        ));
        assert!(matches!(
            canonical_content(json!([1])),
            Err(Error::BadJson(_))
        ));
    }

    #[test]
    fn oversize_event_is_too_large() {
        let key = key();
        let sender = UserId::parse("@a:example.org").unwrap();
        let room = RoomId::parse("!room:example.org").unwrap();
        let rules = rules(&RoomVersionId::V12).unwrap();
        let mut big = draft(Some(&room), &sender);
        big.content = canonical_content(json!({"body": "x".repeat(70_000)})).unwrap();
        assert!(matches!(
            build_event(big, &rules, "example.org", &key),
            Err(Error::TooLarge(_))
        ));
    }
}
