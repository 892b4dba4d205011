//! Server signing keys: this server's key document (`GET /_matrix/key/v2/server`), and other
//! servers' keys, fetched from the server itself or from notaries, checked (its own name, its
//! own signature by one of the keys it lists, a validity; a notary's signature) and kept in
//! memory and in the database until they expire.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use causeway_config::TrustedKeyServer;

use ruma::canonical_json::{CanonicalJsonObject, CanonicalJsonValue};
use ruma::serde::Base64;
use ruma::serde::base64::Standard;
use ruma::signatures::{Ed25519KeyPair, PublicKeyMap, PublicKeySet};
use ruma::{OwnedServerName, ServerName};
use serde_json::{Value, json};

use super::client::{FederationClient, FederationError};
use crate::store::Store;

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
    #[error("the keys of {0} were asked for moments ago and are not asked for again yet")]
    Throttled(OwnedServerName),
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
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
    verify_signed_by(document, server, current)
        .map_err(|why| invalid(&format!("its signature: {why}")))?;
    Ok(keys)
}

/// How soon the keys of one server may be asked for again (of it or of notaries) after the last
/// time: a flood of requests naming keys nobody has makes one fetch, not one each.
pub const REFETCH_INTERVAL: Duration = Duration::from_secs(10);

/// The longest a fetched key is trusted for, whatever its document says: a week after it was
/// fetched, as the specification asks.
const LONGEST_TRUST: i64 = 7 * 24 * 3600 * 1000;

/// A notary: a server trusted to serve other servers' key documents, and its own keys when
/// they are configured.
struct Notary {
    name: OwnedServerName,
    keys: PublicKeySet,
}

/// Checks the signature of `signer` on a JSON object with `keys` (at least one of its
/// signatures must verify; other signers' signatures are left aside).
fn verify_signed_by(
    document: &Value,
    signer: &ServerName,
    keys: PublicKeySet,
) -> Result<(), String> {
    let mut object = match CanonicalJsonValue::try_from(document.clone()) {
        Ok(CanonicalJsonValue::Object(object)) => object,
        _ => return Err("not canonical JSON".into()),
    };
    let own = object
        .get("signatures")
        .and_then(CanonicalJsonValue::as_object)
        .and_then(|signatures| signatures.get(signer.as_str()))
        .cloned()
        .ok_or_else(|| format!("not signed by {signer}"))?;
    let mut signatures = CanonicalJsonObject::new();
    signatures.insert(signer.to_string(), own);
    object.insert("signatures".into(), CanonicalJsonValue::Object(signatures));
    let mut map = PublicKeyMap::new();
    map.insert(signer.to_string(), keys);
    ruma::signatures::verify_json(&map, &object).map_err(|e| format!("it does not verify: {e}"))
}

/// Other servers' keys, kept while valid in memory and in the database, with the documents
/// they came in (which this server serves again as a notary). A key not known is fetched from
/// its server, else asked of the configured notaries; one fetch at a time per server, and not
/// again within [`REFETCH_INTERVAL`].
pub struct ServerKeys {
    store: Store,
    notaries: Vec<Notary>,
    cache: Mutex<HashMap<(OwnedServerName, String), PublishedKey>>,
    documents: Mutex<HashMap<OwnedServerName, (Value, i64)>>,
    fetches: Mutex<HashMap<OwnedServerName, Arc<tokio::sync::Mutex<Option<Instant>>>>>,
}

impl ServerKeys {
    /// Keys kept in `store`, asked of `notaries` (configured; a notary whose keys do not
    /// decode is left out, the configuration's check refuses them) when their servers fail.
    pub fn new(store: Store, notaries: &[TrustedKeyServer]) -> Self {
        let notaries = notaries
            .iter()
            .filter_map(|notary| {
                let name = ServerName::parse(notary.server_name.as_str()).ok()?;
                let mut keys = PublicKeySet::new();
                for (id, key) in &notary.verify_keys {
                    keys.insert(id.clone(), Base64::parse(key).ok()?);
                }
                Some(Notary { name, keys })
            })
            .collect();
        ServerKeys {
            store,
            notaries,
            cache: Mutex::default(),
            documents: Mutex::default(),
            fetches: Mutex::default(),
        }
    }

    /// The key `key_id` of `server`, valid at `at` (milliseconds): from memory, else from the
    /// database, else fetched from the server, else asked of the notaries.
    pub async fn key(
        &self,
        client: &FederationClient,
        server: &ServerName,
        key_id: &str,
        at: i64,
    ) -> Result<Vec<u8>, KeyError> {
        self.find(client, server, key_id, at, true).await
    }

    async fn find(
        &self,
        client: &FederationClient,
        server: &ServerName,
        key_id: &str,
        at: i64,
        via_notaries: bool,
    ) -> Result<Vec<u8>, KeyError> {
        if let Some(key) = self.cached(server, key_id, at) {
            return Ok(key);
        }
        if let Some(stored) = self.store.server_key(server.as_str(), key_id).await?
            && let Ok(key) = Base64::<Standard, Vec<u8>>::parse(&stored.key)
        {
            let key = key.into_inner();
            self.lock().insert(
                (server.to_owned(), key_id.to_owned()),
                PublishedKey {
                    key: key.clone(),
                    valid_until: stored.valid_until,
                },
            );
            if stored.valid_until >= at {
                return Ok(key);
            }
        }
        let gate = self.gate(server);
        let mut last = gate.lock().await;
        // Another request may have fetched them meanwhile.
        if let Some(key) = self.cached(server, key_id, at) {
            return Ok(key);
        }
        if last.is_some_and(|last| last.elapsed() < REFETCH_INTERVAL) {
            return Err(KeyError::Throttled(server.to_owned()));
        }
        *last = Some(Instant::now());
        let wanted = |keys: &Self| keys.cached(server, key_id, at).is_some();
        let outcome = self.fetch(client, server, via_notaries, wanted).await;
        match self.cached(server, key_id, at) {
            Some(key) => Ok(key),
            None => Err(match outcome {
                Err(error) => error,
                Ok(_) => KeyError::Unknown(server.to_owned(), key_id.to_owned()),
            }),
        }
    }

    /// Asks the server for its key document, then (when `via_notaries` and the answer does not
    /// do) each notary in turn, until `enough`; keeps every valid document on the way and
    /// returns the last, or the last error.
    async fn fetch(
        &self,
        client: &FederationClient,
        server: &ServerName,
        via_notaries: bool,
        enough: impl Fn(&Self) -> bool,
    ) -> Result<Value, KeyError> {
        let mut outcome = self.ask_origin(client, server).await;
        if outcome.is_ok() && enough(self) || !via_notaries {
            return outcome;
        }
        for notary in self.notaries.iter().filter(|notary| notary.name != server) {
            match self.ask_notary(client, notary, server).await {
                Ok(document) => {
                    outcome = Ok(document);
                    if enough(self) {
                        break;
                    }
                }
                Err(error) => {
                    tracing::info!(%server, notary = %notary.name, %error, "a notary did not help");
                    if outcome.is_err() {
                        outcome = Err(error);
                    }
                }
            }
        }
        outcome
    }

    async fn ask_origin(
        &self,
        client: &FederationClient,
        server: &ServerName,
    ) -> Result<Value, KeyError> {
        let document = client
            .get_unsigned(server, "/_matrix/key/v2/server")
            .await?;
        self.keep(server, document).await
    }

    /// Asks a notary for `server`'s key document: it must be the server's own (its signature)
    /// and carry the notary's signature, by the notary's configured keys or, when none are
    /// configured, by the keys fetched from the notary itself.
    async fn ask_notary(
        &self,
        client: &FederationClient,
        notary: &Notary,
        server: &ServerName,
    ) -> Result<Value, KeyError> {
        let body = json!({ "server_keys": { server.as_str(): {} } });
        let answer = client
            .request(
                &notary.name,
                http::Method::POST,
                "/_matrix/key/v2/query",
                Some(&body),
                false,
            )
            .await?;
        let invalid = |why: String| KeyError::Invalid(notary.name.clone(), why);
        let document = answer
            .get("server_keys")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|document| {
                document.get("server_name").and_then(Value::as_str) == Some(server.as_str())
            })
            .cloned()
            .ok_or_else(|| invalid(format!("it has no key document of {server}")))?;
        let mut keys = notary.keys.clone();
        if keys.is_empty() {
            let key_ids: Vec<String> = document
                .get("signatures")
                .and_then(|signatures| signatures.get(notary.name.as_str()))
                .and_then(Value::as_object)
                .map(|signatures| signatures.keys().cloned().collect())
                .unwrap_or_default();
            for key_id in key_ids.iter().filter(|id| id.starts_with("ed25519:")) {
                // The notary's own keys come from the notary only: asking notaries about
                // notaries could go round in circles.
                if let Ok(key) =
                    Box::pin(self.find(client, &notary.name, key_id, now_ms(), false)).await
                {
                    keys.insert(key_id.clone(), Base64::new(key));
                }
            }
        }
        verify_signed_by(&document, &notary.name, keys)
            .map_err(|why| invalid(format!("its answer about {server}: {why}")))?;
        self.keep(server, document).await
    }

    /// Checks a key document of `server` and keeps it and its keys, each trusted at most a
    /// week from now.
    async fn keep(&self, server: &ServerName, document: Value) -> Result<Value, KeyError> {
        let keys = check_key_document(server, &document)?;
        let longest = now_ms().saturating_add(LONGEST_TRUST);
        let valid_until = document
            .get("valid_until_ts")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            .min(longest);
        let stored: Vec<(String, String, i64)> = keys
            .iter()
            .map(|(id, published)| {
                (
                    id.clone(),
                    Base64::<Standard, _>::new(published.key.clone()).encode(),
                    published.valid_until.min(longest),
                )
            })
            .collect();
        self.store
            .save_server_keys(server.as_str(), &document.to_string(), valid_until, &stored)
            .await?;
        {
            let mut cache = self.lock();
            for (id, mut published) in keys {
                published.valid_until = published.valid_until.min(longest);
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
    /// server acting as a notary serves it: kept if it is still so valid, else fetched again
    /// from the server (not more often than [`REFETCH_INTERVAL`]; meanwhile the one kept).
    pub async fn document(
        &self,
        client: &FederationClient,
        server: &ServerName,
        minimum_valid_until: i64,
    ) -> Result<Value, KeyError> {
        let floor = minimum_valid_until.max(now_ms());
        let kept = |keys: &Self| {
            keys.documents
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(server)
                .cloned()
        };
        let mut latest = kept(self);
        if latest.is_none()
            && let Some((text, valid_until)) =
                self.store.server_key_document(server.as_str()).await?
            && let Ok(document) = serde_json::from_str::<Value>(&text)
        {
            self.documents
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(server.to_owned(), (document.clone(), valid_until));
            latest = Some((document, valid_until));
        }
        if let Some((document, valid_until)) = &latest
            && *valid_until >= floor
        {
            return Ok(document.clone());
        }
        let gate = self.gate(server);
        let mut last = gate.lock().await;
        if let Some((document, valid_until)) = kept(self)
            && (valid_until >= floor || last.is_some_and(|last| last.elapsed() < REFETCH_INTERVAL))
        {
            return Ok(document);
        }
        if last.is_some_and(|last| last.elapsed() < REFETCH_INTERVAL) {
            return Err(KeyError::Throttled(server.to_owned()));
        }
        *last = Some(Instant::now());
        self.fetch(client, server, false, |_| true).await
    }

    fn cached(&self, server: &ServerName, key_id: &str, at: i64) -> Option<Vec<u8>> {
        self.lock()
            .get(&(server.to_owned(), key_id.to_owned()))
            .filter(|published| published.valid_until >= at)
            .map(|published| published.key.clone())
    }

    /// The lock one server's fetches take turns on, with when the last one started.
    fn gate(&self, server: &ServerName) -> Arc<tokio::sync::Mutex<Option<Instant>>> {
        self.fetches
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(server.to_owned())
            .or_default()
            .clone()
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
