//! Server signing keys: this server's key document (`GET /_matrix/key/v2/server`), and other
//! servers' keys, fetched from the server itself, checked (its own name, its own signature
//! by one of the keys it lists, a validity) and kept in memory until they expire.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ruma::canonical_json::{CanonicalJsonObject, CanonicalJsonValue};
use ruma::serde::Base64;
use ruma::serde::base64::Standard;
use ruma::signatures::{Ed25519KeyPair, PublicKeyMap, PublicKeySet};
use ruma::{OwnedServerName, ServerName};
use serde_json::{Value, json};

use super::client::{FederationClient, FederationError};

/// How long other servers may keep this server's key.
pub const KEY_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);

/// Why another server's key is not available.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0}")]
    Fetch(#[from] FederationError),
    #[error("the key document of {0} is invalid: {1}")]
    Invalid(OwnedServerName, String),
    #[error("{0} has no key {1} valid at that time")]
    Unknown(OwnedServerName, String),
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// This server's signed key document.
pub fn own_key_document(server_name: &ServerName, key: &Ed25519KeyPair) -> Result<Value, String> {
    let valid_until = now_ms() + i64::try_from(KEY_VALIDITY.as_millis()).unwrap_or(0);
    let public = Base64::<Standard, _>::new(key.public_key().to_vec()).encode();
    let document = json!({
        "server_name": server_name,
        "valid_until_ts": valid_until,
        "verify_keys": { format!("ed25519:{}", key.version()): { "key": public } },
        "old_verify_keys": {},
    });
    let mut object: CanonicalJsonObject = match CanonicalJsonValue::try_from(document) {
        Ok(CanonicalJsonValue::Object(object)) => object,
        _ => return Err("the key document is not an object".into()),
    };
    ruma::signatures::sign_json(server_name.as_str(), key, &mut object)
        .map_err(|e| e.to_string())?;
    serde_json::to_value(&object).map_err(|e| e.to_string())
}

/// Adds this server's signature to a key document it serves as a notary.
pub fn notarise(
    document: &Value,
    server_name: &ServerName,
    key: &Ed25519KeyPair,
) -> Result<Value, String> {
    let mut object = match CanonicalJsonValue::try_from(document.clone()) {
        Ok(CanonicalJsonValue::Object(object)) => object,
        _ => return Err("the key document is not an object".into()),
    };
    ruma::signatures::sign_json(server_name.as_str(), key, &mut object)
        .map_err(|e| e.to_string())?;
    serde_json::to_value(&object).map_err(|e| e.to_string())
}

/// A key another server published: its bytes and until when it verifies (`valid_until_ts`
/// for current keys, `expired_ts` for old ones).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedKey {
    pub key: Vec<u8>,
    pub valid_until: i64,
}

/// Checks a key document `server` published about itself: its name, its signature by one of
/// its current keys, and returns every key it lists by id.
pub fn check_key_document(
    server: &ServerName,
    document: &Value,
) -> Result<HashMap<String, PublishedKey>, KeyError> {
    let invalid = |why: &str| KeyError::Invalid(server.to_owned(), why.to_owned());
    if document.get("server_name").and_then(Value::as_str) != Some(server.as_str()) {
        return Err(invalid("it names another server"));
    }
    let valid_until = document
        .get("valid_until_ts")
        .and_then(Value::as_i64)
        .ok_or_else(|| invalid("no valid_until_ts"))?;
    let decode = |entry: &Value| -> Result<Vec<u8>, KeyError> {
        let text = entry
            .get("key")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("a key without `key`"))?;
        Base64::<Standard, Vec<u8>>::parse(text)
            .map(|key| key.into_inner())
            .map_err(|_| invalid("a key that is not base64"))
    };
    let mut keys = HashMap::new();
    let mut current = PublicKeySet::new();
    for (id, entry) in document
        .get("verify_keys")
        .and_then(Value::as_object)
        .ok_or_else(|| invalid("no verify_keys"))?
    {
        let key = decode(entry)?;
        current.insert(id.clone(), Base64::new(key.clone()));
        keys.insert(id.clone(), PublishedKey { key, valid_until });
    }
    if let Some(old) = document.get("old_verify_keys").and_then(Value::as_object) {
        for (id, entry) in old {
            let expired = entry
                .get("expired_ts")
                .and_then(Value::as_i64)
                .ok_or_else(|| invalid("an old key without expired_ts"))?;
            keys.entry(id.clone()).or_insert(PublishedKey {
                key: decode(entry)?,
                valid_until: expired,
            });
        }
    }
    // Signed by the server itself (other signatures, a notary's, are not ours to check here).
    let mut object = match CanonicalJsonValue::try_from(document.clone()) {
        Ok(CanonicalJsonValue::Object(object)) => object,
        _ => return Err(invalid("not canonical JSON")),
    };
    let own = object
        .get("signatures")
        .and_then(CanonicalJsonValue::as_object)
        .and_then(|signatures| signatures.get(server.as_str()))
        .cloned()
        .ok_or_else(|| invalid("not signed by the server"))?;
    let mut signatures = CanonicalJsonObject::new();
    signatures.insert(server.to_string(), own);
    object.insert("signatures".into(), CanonicalJsonValue::Object(signatures));
    let mut map = PublicKeyMap::new();
    map.insert(server.to_string(), current);
    ruma::signatures::verify_json(&map, &object)
        .map_err(|e| invalid(&format!("its signature does not verify: {e}")))?;
    Ok(keys)
}

/// Other servers' keys, kept while valid, with the documents they came in (which this server
/// serves again as a notary).
#[derive(Default)]
pub struct ServerKeys {
    cache: Mutex<HashMap<(OwnedServerName, String), PublishedKey>>,
    documents: Mutex<HashMap<OwnedServerName, (Value, i64)>>,
}

impl ServerKeys {
    /// The key `key_id` of `server`, valid at `at` (milliseconds): from memory, else fetched
    /// from the server.
    pub async fn key(
        &self,
        client: &FederationClient,
        server: &ServerName,
        key_id: &str,
        at: i64,
    ) -> Result<Vec<u8>, KeyError> {
        let cached = |cache: &HashMap<(OwnedServerName, String), PublishedKey>| {
            cache
                .get(&(server.to_owned(), key_id.to_owned()))
                .filter(|published| published.valid_until >= at)
                .map(|published| published.key.clone())
        };
        if let Some(key) = cached(&self.lock()) {
            return Ok(key);
        }
        self.fetch(client, server).await?;
        let cache = self.lock();
        cached(&cache).ok_or_else(|| KeyError::Unknown(server.to_owned(), key_id.to_owned()))
    }

    /// Fetches a server's key document from it, checks it and keeps its keys and itself.
    async fn fetch(
        &self,
        client: &FederationClient,
        server: &ServerName,
    ) -> Result<Value, KeyError> {
        let document = client
            .get_unsigned(server, "/_matrix/key/v2/server")
            .await?;
        let keys = check_key_document(server, &document)?;
        let valid_until = document
            .get("valid_until_ts")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        {
            let mut cache = self.lock();
            for (id, published) in keys {
                cache.insert((server.to_owned(), id), published);
            }
        }
        self.documents
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(server.to_owned(), (document.clone(), valid_until));
        Ok(document)
    }

    /// A server's key document valid at least until `minimum_valid_until` (0: any), as this
    /// server acting as a notary serves it: kept if it is still so valid, else fetched again.
    pub async fn document(
        &self,
        client: &FederationClient,
        server: &ServerName,
        minimum_valid_until: i64,
    ) -> Result<Value, KeyError> {
        let kept = self
            .documents
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(server)
            .filter(|(_, valid_until)| *valid_until >= minimum_valid_until.max(now_ms()))
            .map(|(document, _)| document.clone());
        match kept {
            Some(document) => Ok(document),
            None => self.fetch(client, server).await,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(OwnedServerName, String), PublishedKey>> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(version: &str) -> Ed25519KeyPair {
        let document = Ed25519KeyPair::generate();
        Ed25519KeyPair::from_der(&document, version.into()).unwrap()
    }

    #[test]
    fn own_documents_check_and_altered_ones_do_not() {
        let server = ServerName::parse("a.test").unwrap();
        let key = key("k1");
        let document = own_key_document(&server, &key).unwrap();
        let keys = check_key_document(&server, &document).unwrap();
        assert_eq!(keys["ed25519:k1"].key, key.public_key());
        assert!(keys["ed25519:k1"].valid_until > now_ms());
        // Claimed for another server, altered, unsigned, or signed by another key: refused.
        let other = ServerName::parse("b.test").unwrap();
        assert!(matches!(
            check_key_document(&other, &document),
            Err(KeyError::Invalid(..))
        ));
        let mut altered = document.clone();
        altered["valid_until_ts"] = json!(i64::from(i32::MAX) * 1000);
        assert!(matches!(
            check_key_document(&server, &altered),
            Err(KeyError::Invalid(..))
        ));
        let mut unsigned = document.clone();
        unsigned["signatures"] = json!({});
        assert!(matches!(
            check_key_document(&server, &unsigned),
            Err(KeyError::Invalid(..))
        ));
        let stranger = own_key_document(&server, &self::key("k2")).unwrap();
        let mut swapped = document.clone();
        swapped["signatures"] = stranger["signatures"].clone();
        assert!(matches!(
            check_key_document(&server, &swapped),
            Err(KeyError::Invalid(..))
        ));
        // Another signature beside the server's own (a notary's) does not matter.
        let mut notarised = document.clone();
        notarised["signatures"]["notary.test"] = json!({"ed25519:n": "AAAA"});
        assert!(check_key_document(&server, &notarised).is_ok());
        // Old keys count until they expired.
        let mut with_old = document;
        with_old["old_verify_keys"] = json!({"ed25519:old": {"key": "AAAA", "expired_ts": 5}});
        with_old["signatures"] = json!({});
        let mut object = match CanonicalJsonValue::try_from(with_old).unwrap() {
            CanonicalJsonValue::Object(object) => object,
            _ => unreachable!(),
        };
        object.remove("signatures");
        ruma::signatures::sign_json("a.test", &key, &mut object).unwrap();
        let keys = check_key_document(&server, &serde_json::to_value(&object).unwrap()).unwrap();
        assert_eq!(keys["ed25519:old"].valid_until, 5);
    }
}
