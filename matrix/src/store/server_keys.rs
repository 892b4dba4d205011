//! Other servers' signing keys and the key documents they came in, so that a restart does not
//! have to ask every server (or a notary) again, and a server that is down meanwhile does not
//! make its earlier events unverifiable.

use sqlx::Row;

use super::{Store, StoreError, now_ms};

/// One of another server's keys: its bytes in unpadded base64 and until when it verifies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredServerKey {
    pub key: String,
    pub valid_until: i64,
}

impl Store {
    /// A key of `server` by id, whatever its validity.
    pub async fn server_key(
        &self,
        server: &str,
        key_id: &str,
    ) -> Result<Option<StoredServerKey>, StoreError> {
        let row = sqlx::query(
            "SELECT key, valid_until FROM remote_server_keys \
             WHERE server_name = $1 AND key_id = $2",
        )
        .bind(server)
        .bind(key_id)
        .fetch_optional(self.pool())
        .await?;
        row.map(|row| {
            Ok(StoredServerKey {
                key: row.try_get("key")?,
                valid_until: row.try_get("valid_until")?,
            })
        })
        .transpose()
    }

    /// Keeps a key document `server` published (checked beforehand) and the keys it lists, by
    /// id (`keys`: id, base64 key, valid until). A key listed again takes the newer word.
    pub async fn save_server_keys(
        &self,
        server: &str,
        document: &str,
        valid_until: i64,
        keys: &[(String, String, i64)],
    ) -> Result<(), StoreError> {
        let mut transaction = self.pool().begin().await?;
        for (key_id, key, key_valid_until) in keys {
            sqlx::query(
                "INSERT INTO remote_server_keys (server_name, key_id, key, valid_until) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (server_name, key_id) \
                 DO UPDATE SET key = excluded.key, valid_until = excluded.valid_until",
            )
            .bind(server)
            .bind(key_id)
            .bind(key)
            .bind(key_valid_until)
            .execute(&mut *transaction)
            .await?;
        }
        sqlx::query(
            "INSERT INTO remote_key_documents (server_name, document, valid_until, fetched_ts) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (server_name) DO UPDATE SET \
             document = excluded.document, valid_until = excluded.valid_until, \
             fetched_ts = excluded.fetched_ts",
        )
        .bind(server)
        .bind(document)
        .bind(valid_until)
        .bind(now_ms())
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(())
    }

    /// The latest key document of `server` kept, with its validity.
    pub async fn server_key_document(
        &self,
        server: &str,
    ) -> Result<Option<(String, i64)>, StoreError> {
        let row = sqlx::query(
            "SELECT document, valid_until FROM remote_key_documents WHERE server_name = $1",
        )
        .bind(server)
        .fetch_optional(self.pool())
        .await?;
        row.map(|row| Ok((row.try_get("document")?, row.try_get("valid_until")?)))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::both_backends;

    both_backends!(keys_and_documents_are_kept, |store: Store| async move {
        assert_eq!(store.server_key("b.test", "ed25519:a").await.unwrap(), None);
        assert_eq!(store.server_key_document("b.test").await.unwrap(), None);
        let first = [
            ("ed25519:a".to_owned(), "AAAA".to_owned(), 100),
            ("ed25519:old".to_owned(), "BBBB".to_owned(), 5),
        ];
        store
            .save_server_keys("b.test", "{\"n\":1}", 100, &first)
            .await
            .unwrap();
        assert_eq!(
            store.server_key("b.test", "ed25519:a").await.unwrap(),
            Some(StoredServerKey {
                key: "AAAA".into(),
                valid_until: 100
            })
        );
        // Another server's key of the same id is its own.
        assert_eq!(store.server_key("c.test", "ed25519:a").await.unwrap(), None);
        // A newer document: its word on a key wins, keys it no longer lists stay.
        store
            .save_server_keys(
                "b.test",
                "{\"n\":2}",
                300,
                &[("ed25519:a".to_owned(), "AAAA".to_owned(), 300)],
            )
            .await
            .unwrap();
        assert_eq!(
            store
                .server_key("b.test", "ed25519:a")
                .await
                .unwrap()
                .map(|key| key.valid_until),
            Some(300)
        );
        assert_eq!(
            store
                .server_key("b.test", "ed25519:old")
                .await
                .unwrap()
                .map(|key| key.key),
            Some("BBBB".into())
        );
        assert_eq!(
            store.server_key_document("b.test").await.unwrap(),
            Some(("{\"n\":2}".into(), 300))
        );
    });
}
