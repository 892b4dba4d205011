//! End-to-end encryption: device keys, one-time and fallback keys, cross-signing keys,
//! device-list changes and to-device messages.

use std::collections::HashMap;

use sqlx::Row;

use super::device_lists::DeviceChange;
use super::{Change, Store, StoreError, StreamWriter};

/// A device's one-time key counts by algorithm and its unused fallback key algorithms.
pub type KeyCounts = (Vec<(String, i64)>, Vec<String>);

/// The key counts of devices, which every sync reports, kept until the keys change.
#[derive(Default)]
pub(super) struct KeyCountCache {
    counts: std::sync::Mutex<HashMap<(String, String), KeyCounts>>,
}

impl KeyCountCache {
    fn get(&self, user_id: &str, device_id: &str) -> Option<KeyCounts> {
        self.counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&(user_id.to_owned(), device_id.to_owned()))
            .cloned()
    }

    fn insert(&self, user_id: &str, device_id: &str, counts: KeyCounts) {
        let mut cache = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.len() > 100_000 {
            cache.clear();
        }
        cache.insert((user_id.to_owned(), device_id.to_owned()), counts);
    }

    fn forget(&self, user_id: &str, device_id: &str) {
        self.counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&(user_id.to_owned(), device_id.to_owned()));
    }
}

/// A to-device message waiting for its device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToDeviceMessage {
    pub stream_ordering: i64,
    pub sender: String,
    pub event_type: String,
    pub content: String,
}

/// A to-device message to queue.
#[derive(Debug, Clone)]
pub struct OutgoingToDevice {
    pub user_id: String,
    pub device_id: String,
    pub sender: String,
    pub event_type: String,
    pub content: String,
}

impl Store {
    async fn bump_device_list(
        &self,
        writer: &mut StreamWriter<'_>,
        user_id: &str,
        change: DeviceChange<'_>,
    ) -> Result<i64, StoreError> {
        let position = writer.next_position();
        sqlx::query(
            "INSERT INTO device_list_updates (user_id, stream_ordering) VALUES ($1, $2) \
             ON CONFLICT (user_id) DO UPDATE SET stream_ordering = excluded.stream_ordering",
        )
        .bind(user_id)
        .bind(position)
        .execute(self.pool())
        .await?;
        self.log_device_change(position, user_id, change).await?;
        self.changes.record(Change::DeviceLists, position);
        Ok(position)
    }

    /// Records that a user's devices or keys changed: a local user's device added or renamed,
    /// or another server's user's list.
    pub async fn device_list_changed(
        &self,
        user_id: &str,
        change: DeviceChange<'_>,
    ) -> Result<i64, StoreError> {
        let mut writer = self.stream_writer().await;
        let position = self.bump_device_list(&mut writer, user_id, change).await?;
        writer.publish();
        Ok(position)
    }

    /// Stores a device's identity keys; returns whether they changed.
    pub async fn set_device_keys(
        &self,
        user_id: &str,
        device_id: &str,
        json: &str,
    ) -> Result<bool, StoreError> {
        let existing: Option<String> = sqlx::query_scalar(
            "SELECT json FROM device_keys WHERE user_id = $1 AND device_id = $2",
        )
        .bind(user_id)
        .bind(device_id)
        .fetch_optional(self.pool())
        .await?;
        if existing.as_deref() == Some(json) {
            return Ok(false);
        }
        let mut writer = self.stream_writer().await;
        sqlx::query(
            "INSERT INTO device_keys (user_id, device_id, json) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id, device_id) DO UPDATE SET json = excluded.json",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(json)
        .execute(self.pool())
        .await?;
        self.bump_device_list(&mut writer, user_id, DeviceChange::Device(device_id))
            .await?;
        writer.publish();
        Ok(true)
    }

    /// The identity keys of a user's devices: `(device id, json)`.
    pub async fn device_keys(&self, user_id: &str) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT k.device_id, k.json FROM device_keys k JOIN devices d \
             ON d.user_id = k.user_id AND d.device_id = k.device_id \
             WHERE k.user_id = $1 ORDER BY k.device_id",
        )
        .bind(user_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("device_id")?, row.try_get("json")?)))
            .collect()
    }

    /// Adds one-time keys; a key id already stored is kept as it is.
    pub async fn add_one_time_keys(
        &self,
        user_id: &str,
        device_id: &str,
        keys: &[(String, String, String)],
    ) -> Result<(), StoreError> {
        self.key_counts.forget(user_id, device_id);
        let mut transaction = self.begin_write().await?;
        for (key_id, algorithm, json) in keys {
            sqlx::query(
                "INSERT INTO one_time_keys (user_id, device_id, key_id, algorithm, json) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id, device_id, key_id) DO NOTHING",
            )
            .bind(user_id)
            .bind(device_id)
            .bind(key_id)
            .bind(algorithm)
            .bind(json)
            .execute(&mut *transaction)
            .await?;
        }
        transaction.commit().await?;
        self.key_counts.forget(user_id, device_id);
        Ok(())
    }

    /// A device's one-time key counts and unused fallback algorithms, from the cache when the
    /// keys did not change since they were last counted.
    pub async fn key_counts(
        &self,
        user_id: &str,
        device_id: &str,
    ) -> Result<KeyCounts, StoreError> {
        if let Some(counts) = self.key_counts.get(user_id, device_id) {
            return Ok(counts);
        }
        let counts = (
            self.one_time_key_counts(user_id, device_id).await?,
            self.unused_fallback_algorithms(user_id, device_id).await?,
        );
        self.key_counts.insert(user_id, device_id, counts.clone());
        Ok(counts)
    }

    /// How many one-time keys a device has left, by algorithm.
    pub async fn one_time_key_counts(
        &self,
        user_id: &str,
        device_id: &str,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT algorithm, COUNT(*) AS count FROM one_time_keys WHERE user_id = $1 \
             AND device_id = $2 GROUP BY algorithm ORDER BY algorithm",
        )
        .bind(user_id)
        .bind(device_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("algorithm")?, row.try_get("count")?)))
            .collect()
    }

    /// Replaces a device's fallback key for an algorithm.
    pub async fn set_fallback_key(
        &self,
        user_id: &str,
        device_id: &str,
        algorithm: &str,
        key_id: &str,
        json: &str,
    ) -> Result<(), StoreError> {
        self.key_counts.forget(user_id, device_id);
        sqlx::query(
            "INSERT INTO fallback_keys (user_id, device_id, algorithm, key_id, json, used) \
             VALUES ($1, $2, $3, $4, $5, 0) ON CONFLICT (user_id, device_id, algorithm) \
             DO UPDATE SET key_id = excluded.key_id, json = excluded.json, used = 0",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(algorithm)
        .bind(key_id)
        .bind(json)
        .execute(self.pool())
        .await?;
        self.key_counts.forget(user_id, device_id);
        Ok(())
    }

    /// The algorithms for which a device has a fallback key that was not used yet.
    pub async fn unused_fallback_algorithms(
        &self,
        user_id: &str,
        device_id: &str,
    ) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT algorithm FROM fallback_keys WHERE user_id = $1 AND device_id = $2 \
             AND used = 0 ORDER BY algorithm",
        )
        .bind(user_id)
        .bind(device_id)
        .fetch_all(self.pool())
        .await?)
    }

    /// Takes a one-time key of a device, or its fallback key when none is left:
    /// `(key id, json)`.
    pub async fn claim_key(
        &self,
        user_id: &str,
        device_id: &str,
        algorithm: &str,
    ) -> Result<Option<(String, String)>, StoreError> {
        let claimed = self.claim_key_uncached(user_id, device_id, algorithm).await;
        self.key_counts.forget(user_id, device_id);
        claimed
    }

    async fn claim_key_uncached(
        &self,
        user_id: &str,
        device_id: &str,
        algorithm: &str,
    ) -> Result<Option<(String, String)>, StoreError> {
        let mut transaction = self.begin_write().await?;
        let row = sqlx::query(
            "SELECT key_id, json FROM one_time_keys WHERE user_id = $1 AND device_id = $2 \
             AND algorithm = $3 ORDER BY key_id LIMIT 1",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(algorithm)
        .fetch_optional(&mut *transaction)
        .await?;
        if let Some(row) = row {
            let key_id: String = row.try_get("key_id")?;
            let json: String = row.try_get("json")?;
            let deleted = sqlx::query(
                "DELETE FROM one_time_keys WHERE user_id = $1 AND device_id = $2 AND key_id = $3",
            )
            .bind(user_id)
            .bind(device_id)
            .bind(&key_id)
            .execute(&mut *transaction)
            .await?;
            transaction.commit().await?;
            // A concurrent claim took it first: nothing is handed out twice.
            return Ok((deleted.rows_affected() == 1).then_some((key_id, json)));
        }
        let row = sqlx::query(
            "SELECT key_id, json FROM fallback_keys WHERE user_id = $1 AND device_id = $2 \
             AND algorithm = $3",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(algorithm)
        .fetch_optional(&mut *transaction)
        .await?;
        let Some(row) = row else {
            transaction.commit().await?;
            return Ok(None);
        };
        sqlx::query(
            "UPDATE fallback_keys SET used = 1 WHERE user_id = $1 AND device_id = $2 \
             AND algorithm = $3",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(algorithm)
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(Some((row.try_get("key_id")?, row.try_get("json")?)))
    }

    /// Stores a cross-signing key (`master`, `self_signing` or `user_signing`).
    pub async fn set_cross_signing_key(
        &self,
        user_id: &str,
        key_type: &str,
        json: &str,
    ) -> Result<(), StoreError> {
        let mut writer = self.stream_writer().await;
        sqlx::query(
            "INSERT INTO cross_signing_keys (user_id, key_type, json) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id, key_type) DO UPDATE SET json = excluded.json",
        )
        .bind(user_id)
        .bind(key_type)
        .bind(json)
        .execute(self.pool())
        .await?;
        self.bump_device_list(&mut writer, user_id, DeviceChange::CrossSigning)
            .await?;
        writer.publish();
        Ok(())
    }

    /// A user's cross-signing keys: `(key type, json)`.
    pub async fn cross_signing_keys(
        &self,
        user_id: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT key_type, json FROM cross_signing_keys WHERE user_id = $1 ORDER BY key_type",
        )
        .bind(user_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("key_type")?, row.try_get("json")?)))
            .collect()
    }

    /// Replaces the stored JSON of a device's keys without other checks (signature uploads).
    pub async fn replace_device_keys(
        &self,
        user_id: &str,
        device_id: &str,
        json: &str,
    ) -> Result<(), StoreError> {
        let mut writer = self.stream_writer().await;
        sqlx::query("UPDATE device_keys SET json = $1 WHERE user_id = $2 AND device_id = $3")
            .bind(json)
            .bind(user_id)
            .bind(device_id)
            .execute(self.pool())
            .await?;
        self.bump_device_list(&mut writer, user_id, DeviceChange::Device(device_id))
            .await?;
        writer.publish();
        Ok(())
    }

    /// Forgets every key of a deleted device and its undelivered messages.
    pub async fn delete_device_keys(
        &self,
        user_id: &str,
        device_id: &str,
    ) -> Result<(), StoreError> {
        let mut writer = self.stream_writer().await;
        self.forget_device_keys(&mut writer, user_id, device_id)
            .await?;
        writer.publish();
        Ok(())
    }

    pub(super) async fn forget_device_keys(
        &self,
        writer: &mut StreamWriter<'_>,
        user_id: &str,
        device_id: &str,
    ) -> Result<(), StoreError> {
        self.key_counts.forget(user_id, device_id);
        for table in [
            "device_keys",
            "one_time_keys",
            "fallback_keys",
            "to_device_messages",
        ] {
            let statement = format!("DELETE FROM {table} WHERE user_id = $1 AND device_id = $2");
            sqlx::query(sqlx::AssertSqlSafe(statement))
                .bind(user_id)
                .bind(device_id)
                .execute(self.pool())
                .await?;
        }
        self.bump_device_list(writer, user_id, DeviceChange::Deleted(device_id))
            .await?;
        Ok(())
    }

    /// Users whose devices or keys changed in `(after, until]`.
    pub async fn device_list_changes(
        &self,
        after: i64,
        until: i64,
    ) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT user_id FROM device_list_updates WHERE stream_ordering > $1 \
             AND stream_ordering <= $2 ORDER BY user_id",
        )
        .bind(after)
        .bind(until)
        .fetch_all(self.pool())
        .await?)
    }

    /// Queues to-device messages; with a transaction id already used, queues nothing and
    /// returns `false`.
    pub async fn queue_to_device(
        &self,
        messages: &[OutgoingToDevice],
        transaction: (&str, &str, &str),
    ) -> Result<bool, StoreError> {
        let mut writer = self.stream_writer().await;
        let mut db = self.begin_write().await?;
        let (user_id, device_id, txn_id) = transaction;
        let inserted = sqlx::query(
            "INSERT INTO to_device_transactions (user_id, device_id, txn_id) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id, device_id, txn_id) DO NOTHING",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(txn_id)
        .execute(&mut *db)
        .await?;
        if inserted.rows_affected() == 0 {
            return Ok(false);
        }
        let mut first_position = None;
        for message in messages {
            let position = writer.next_position();
            first_position.get_or_insert(position);
            sqlx::query(
                "INSERT INTO to_device_messages (stream_ordering, user_id, device_id, sender, \
                 event_type, content) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(position)
            .bind(&message.user_id)
            .bind(&message.device_id)
            .bind(&message.sender)
            .bind(&message.event_type)
            .bind(&message.content)
            .execute(&mut *db)
            .await?;
        }
        db.commit().await?;
        let first_position = first_position.unwrap_or(0);
        for (message, position) in messages.iter().zip(first_position..) {
            self.changes.record(
                Change::ToDevice(message.user_id.clone(), message.device_id.clone()),
                position,
            );
        }
        writer.publish();
        Ok(true)
    }

    /// Messages for a device in `(after, until]`, oldest first, at most `limit`.
    pub async fn to_device_messages(
        &self,
        user_id: &str,
        device_id: &str,
        after: i64,
        until: i64,
        limit: i64,
    ) -> Result<Vec<ToDeviceMessage>, StoreError> {
        let rows = sqlx::query(
            "SELECT stream_ordering, sender, event_type, content FROM to_device_messages \
             WHERE user_id = $1 AND device_id = $2 AND stream_ordering > $3 \
             AND stream_ordering <= $4 ORDER BY stream_ordering LIMIT $5",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(after)
        .bind(until)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ToDeviceMessage {
                    stream_ordering: row.try_get("stream_ordering")?,
                    sender: row.try_get("sender")?,
                    event_type: row.try_get("event_type")?,
                    content: row.try_get("content")?,
                })
            })
            .collect()
    }

    /// Deletes the messages a device has acknowledged by syncing past them.
    pub async fn delete_to_device_messages(
        &self,
        user_id: &str,
        device_id: &str,
        up_to: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM to_device_messages WHERE user_id = $1 AND device_id = $2 \
             AND stream_ordering <= $3",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(up_to)
        .execute(self.pool())
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::both_backends;

    both_backends!(keys_and_claims, |store: Store| async move {
        store
            .create_device_and_token("@a:x", "D", None, "t", None)
            .await
            .unwrap();
        let before = store.current_position();
        assert!(
            store
                .set_device_keys("@a:x", "D", "{\"k\":1}")
                .await
                .unwrap()
        );
        assert!(
            !store
                .set_device_keys("@a:x", "D", "{\"k\":1}")
                .await
                .unwrap()
        );
        assert_eq!(
            store.device_list_changes(before, i64::MAX).await.unwrap(),
            vec!["@a:x".to_owned()]
        );
        assert_eq!(
            store.device_keys("@a:x").await.unwrap(),
            vec![("D".to_owned(), "{\"k\":1}".to_owned())]
        );
        let keys = vec![
            (
                "signed_curve25519:1".to_owned(),
                "signed_curve25519".to_owned(),
                "{}".to_owned(),
            ),
            (
                "signed_curve25519:2".to_owned(),
                "signed_curve25519".to_owned(),
                "{}".to_owned(),
            ),
        ];
        store.add_one_time_keys("@a:x", "D", &keys).await.unwrap();
        store
            .add_one_time_keys("@a:x", "D", &keys[..1])
            .await
            .unwrap();
        assert_eq!(
            store.one_time_key_counts("@a:x", "D").await.unwrap(),
            vec![("signed_curve25519".to_owned(), 2)]
        );
        store
            .set_fallback_key(
                "@a:x",
                "D",
                "signed_curve25519",
                "signed_curve25519:f",
                "{\"f\":1}",
            )
            .await
            .unwrap();
        let first = store
            .claim_key("@a:x", "D", "signed_curve25519")
            .await
            .unwrap();
        let second = store
            .claim_key("@a:x", "D", "signed_curve25519")
            .await
            .unwrap();
        assert_ne!(first, second);
        assert!(first.is_some() && second.is_some());
        // One-time keys are gone: the fallback key is handed out, and stays available.
        let fallback = store
            .claim_key("@a:x", "D", "signed_curve25519")
            .await
            .unwrap();
        assert_eq!(fallback.unwrap().0, "signed_curve25519:f");
        assert!(
            store
                .unused_fallback_algorithms("@a:x", "D")
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            store
                .claim_key("@a:x", "D", "other")
                .await
                .unwrap()
                .is_none()
        );
    });

    both_backends!(to_device_delivery, |store: Store| async move {
        let message = OutgoingToDevice {
            user_id: "@b:x".into(),
            device_id: "B".into(),
            sender: "@a:x".into(),
            event_type: "m.room_key_request".into(),
            content: "{}".into(),
        };
        let start = store.current_position();
        assert!(
            store
                .queue_to_device(&[message.clone(), message.clone()], ("@a:x", "A", "t1"))
                .await
                .unwrap()
        );
        // The same transaction again queues nothing.
        assert!(
            !store
                .queue_to_device(&[message], ("@a:x", "A", "t1"))
                .await
                .unwrap()
        );
        let now = store.current_position();
        let pending = store
            .to_device_messages("@b:x", "B", start, now, 100)
            .await
            .unwrap();
        assert_eq!(pending.len(), 2);
        store
            .delete_to_device_messages("@b:x", "B", pending[0].stream_ordering)
            .await
            .unwrap();
        let left = store
            .to_device_messages("@b:x", "B", 0, now, 100)
            .await
            .unwrap();
        assert_eq!(left, pending[1..].to_vec());
    });
}
