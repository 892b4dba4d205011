//! The server's ed25519 signing key: generated once, kept in the database.

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use rand::Rng;
use rand::distributions::Alphanumeric;
use ruma::signatures::Ed25519KeyPair;

use crate::error::Error;
use crate::store::Store;

/// Loads the signing key, generating and storing it on first start.
pub async fn load_or_generate(store: &Store) -> Result<Ed25519KeyPair, Error> {
    if let Some((key_id, encoded)) = store.signing_key().await? {
        let version = key_id
            .strip_prefix("ed25519:")
            .ok_or_else(|| Error::Internal(format!("stored key id {key_id} is not ed25519")))?;
        let document = STANDARD_NO_PAD
            .decode(encoded)
            .map_err(|e| Error::Internal(format!("stored signing key: {e}")))?;
        return Ed25519KeyPair::from_der(&document, version.to_owned())
            .map_err(|e| Error::Internal(format!("stored signing key: {e}")));
    }
    let version: String = rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(6)
        .map(char::from)
        .collect();
    let version = format!("a_{version}");
    let document = Ed25519KeyPair::generate();
    store
        .store_signing_key(
            &format!("ed25519:{version}"),
            &STANDARD_NO_PAD.encode(&*document),
        )
        .await?;
    tracing::info!(key_id = %format!("ed25519:{version}"), "generated the server signing key");
    Ed25519KeyPair::from_der(&document, version)
        .map_err(|e| Error::Internal(format!("generated signing key: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ruma::signatures::KeyPair;

    #[tokio::test]
    async fn key_is_kept() {
        let test = crate::store::testing::sqlite().await;
        let first = load_or_generate(&test.store).await.unwrap();
        let second = load_or_generate(&test.store).await.unwrap();
        assert_eq!(first.version(), second.version());
        assert_eq!(first.public_key(), second.public_key());
        assert_eq!(first.sign(b"x").as_bytes(), second.sign(b"x").as_bytes());
    }
}
