//! Account data, receipts, filters, push rules, presence, media and the signing key.

use sqlx::{AssertSqlSafe, Row};

use super::{Change, Store, StoreError, now_ms};

/// A stored read receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptRecord {
    pub room_id: String,
    pub receipt_type: String,
    pub user_id: String,
    pub thread_id: String,
    pub event_id: String,
    pub ts: i64,
}

/// A user's stored presence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceRecord {
    pub user_id: String,
    pub state: String,
    pub status_msg: Option<String>,
    pub last_active_ts: i64,
    pub stream_ordering: i64,
}

/// A stored media file's metadata; the bytes are in the media directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaRecord {
    pub media_id: String,
    pub content_type: Option<String>,
    pub filename: Option<String>,
    pub size: i64,
    pub uploader: String,
    /// Whether the legacy unauthenticated endpoints may serve it: only media stored before
    /// they were frozen.
    pub unauthenticated: bool,
}

fn receipt_from_row(row: &sqlx::any::AnyRow) -> Result<ReceiptRecord, StoreError> {
    Ok(ReceiptRecord {
        room_id: row.try_get("room_id")?,
        receipt_type: row.try_get("receipt_type")?,
        user_id: row.try_get("user_id")?,
        thread_id: row.try_get("thread_id")?,
        event_id: row.try_get("event_id")?,
        ts: row.try_get("ts")?,
    })
}

impl Store {
    /// The server's signing key: `(key id, base64 seed)`.
    pub async fn signing_key(&self) -> Result<Option<(String, String)>, StoreError> {
        let row = sqlx::query(
            "SELECT key_id, seed_base64 FROM server_signing_keys ORDER BY created_ts DESC LIMIT 1",
        )
        .fetch_optional(self.pool())
        .await?;
        row.map(|row| -> Result<(String, String), StoreError> {
            Ok((row.try_get("key_id")?, row.try_get("seed_base64")?))
        })
        .transpose()
    }

    pub async fn store_signing_key(&self, key_id: &str, seed: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO server_signing_keys (key_id, seed_base64, created_ts) VALUES ($1, $2, $3)",
        )
        .bind(key_id)
        .bind(seed)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Sets account data (`room_id` empty for global) at a new stream position.
    pub async fn set_account_data(
        &self,
        user_id: &str,
        room_id: &str,
        data_type: &str,
        content: &str,
    ) -> Result<i64, StoreError> {
        let mut writer = self.stream_writer().await;
        let position = writer.next_position();
        sqlx::query(
            "INSERT INTO account_data (user_id, room_id, data_type, content, stream_ordering) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id, room_id, data_type) DO UPDATE \
             SET content = excluded.content, stream_ordering = excluded.stream_ordering",
        )
        .bind(user_id)
        .bind(room_id)
        .bind(data_type)
        .bind(content)
        .bind(position)
        .execute(self.pool())
        .await?;
        self.changes
            .record(Change::AccountData(user_id.to_owned()), position);
        writer.publish();
        Ok(position)
    }

    pub async fn account_data(
        &self,
        user_id: &str,
        room_id: &str,
        data_type: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT content FROM account_data WHERE user_id = $1 AND room_id = $2 \
             AND data_type = $3",
        )
        .bind(user_id)
        .bind(room_id)
        .bind(data_type)
        .fetch_optional(self.pool())
        .await?)
    }

    /// Account data changed in `(after, until]`: `(room_id, type, content)`.
    pub async fn account_data_since(
        &self,
        user_id: &str,
        after: i64,
        until: i64,
    ) -> Result<Vec<(String, String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT room_id, data_type, content FROM account_data WHERE user_id = $1 \
             AND stream_ordering > $2 AND stream_ordering <= $3 ORDER BY stream_ordering",
        )
        .bind(user_id)
        .bind(after)
        .bind(until)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| -> Result<(String, String, String), StoreError> {
                Ok((
                    row.try_get("room_id")?,
                    row.try_get("data_type")?,
                    row.try_get("content")?,
                ))
            })
            .collect()
    }

    /// Stores a receipt at a new stream position.
    pub async fn set_receipt(&self, receipt: &ReceiptRecord) -> Result<i64, StoreError> {
        let mut writer = self.stream_writer().await;
        let position = writer.next_position();
        sqlx::query(
            "INSERT INTO receipts (room_id, receipt_type, user_id, thread_id, event_id, ts, \
             stream_ordering) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (room_id, receipt_type, user_id, thread_id) DO UPDATE SET \
             event_id = excluded.event_id, ts = excluded.ts, \
             stream_ordering = excluded.stream_ordering",
        )
        .bind(&receipt.room_id)
        .bind(&receipt.receipt_type)
        .bind(&receipt.user_id)
        .bind(&receipt.thread_id)
        .bind(&receipt.event_id)
        .bind(receipt.ts)
        .bind(position)
        .execute(self.pool())
        .await?;
        self.changes
            .record(Change::Receipts(receipt.room_id.clone()), position);
        if receipt.receipt_type == "m.read" || receipt.receipt_type == "m.read.private" {
            self.changes.record(
                Change::ReadPosition(receipt.room_id.clone(), receipt.user_id.clone()),
                position,
            );
        }
        writer.publish();
        Ok(position)
    }

    /// Receipts of a room changed in `(after, until]`.
    pub async fn receipts_since(
        &self,
        room_id: &str,
        after: i64,
        until: i64,
    ) -> Result<Vec<ReceiptRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT room_id, receipt_type, user_id, thread_id, event_id, ts FROM receipts \
             WHERE room_id = $1 AND stream_ordering > $2 AND stream_ordering <= $3 \
             ORDER BY stream_ordering",
        )
        .bind(room_id)
        .bind(after)
        .bind(until)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(receipt_from_row).collect()
    }

    /// Receipts of every room changed in `(after, until]`, in stream order.
    pub async fn receipts_after(
        &self,
        after: i64,
        until: i64,
    ) -> Result<Vec<ReceiptRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT room_id, receipt_type, user_id, thread_id, event_id, ts FROM receipts \
             WHERE stream_ordering > $1 AND stream_ordering <= $2 ORDER BY stream_ordering",
        )
        .bind(after)
        .bind(until)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(receipt_from_row).collect()
    }

    /// The stream position up to which a user has read a room: their latest read receipt
    /// (public or private) or their own latest event, whichever is later.
    pub async fn read_position(&self, room_id: &str, user_id: &str) -> Result<i64, StoreError> {
        let receipt: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(e.stream_ordering), 0) FROM receipts r JOIN events e \
             ON e.event_id = r.event_id WHERE r.room_id = $1 AND r.user_id = $2 \
             AND r.receipt_type IN ('m.read', 'm.read.private')",
        )
        .bind(room_id)
        .bind(user_id)
        .fetch_one(self.pool())
        .await?;
        let own: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(stream_ordering), 0) FROM events WHERE room_id = $1 \
             AND sender = $2",
        )
        .bind(room_id)
        .bind(user_id)
        .fetch_one(self.pool())
        .await?;
        Ok(receipt.max(own))
    }

    /// Stores a filter and returns its id (a number, unique per user).
    pub async fn create_filter(&self, user_id: &str, json: &str) -> Result<i64, StoreError> {
        let mut transaction = self.begin_write().await?;
        let next: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(filter_id), -1) + 1 FROM filters WHERE user_id = $1",
        )
        .bind(user_id)
        .fetch_one(&mut *transaction)
        .await?;
        sqlx::query("INSERT INTO filters (user_id, filter_id, json) VALUES ($1, $2, $3)")
            .bind(user_id)
            .bind(next)
            .bind(json)
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
        Ok(next)
    }

    pub async fn filter(
        &self,
        user_id: &str,
        filter_id: i64,
    ) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT json FROM filters WHERE user_id = $1 AND filter_id = $2")
                .bind(user_id)
                .bind(filter_id)
                .fetch_optional(self.pool())
                .await?,
        )
    }

    pub async fn push_rules(&self, user_id: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT json FROM push_rules WHERE user_id = $1")
                .bind(user_id)
                .fetch_optional(self.pool())
                .await?,
        )
    }

    pub async fn set_push_rules(&self, user_id: &str, json: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO push_rules (user_id, json) VALUES ($1, $2) ON CONFLICT (user_id) \
             DO UPDATE SET json = excluded.json",
        )
        .bind(user_id)
        .bind(json)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Stores a presence at a new stream position.
    pub async fn set_presence(
        &self,
        user_id: &str,
        state: &str,
        status_msg: Option<&str>,
    ) -> Result<i64, StoreError> {
        self.set_presence_at(user_id, state, status_msg, now_ms())
            .await
    }

    /// Stores a presence whose user was last active at `last_active_ts` (another server's
    /// user, as their server tells).
    pub async fn set_presence_at(
        &self,
        user_id: &str,
        state: &str,
        status_msg: Option<&str>,
        last_active_ts: i64,
    ) -> Result<i64, StoreError> {
        let mut writer = self.stream_writer().await;
        let position = writer.next_position();
        sqlx::query(
            "INSERT INTO presence (user_id, state, status_msg, last_active_ts, stream_ordering) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id) DO UPDATE SET \
             state = excluded.state, status_msg = excluded.status_msg, \
             last_active_ts = excluded.last_active_ts, stream_ordering = excluded.stream_ordering",
        )
        .bind(user_id)
        .bind(state)
        .bind(status_msg)
        .bind(last_active_ts)
        .bind(position)
        .execute(self.pool())
        .await?;
        self.changes.record(Change::Presence, position);
        writer.publish();
        Ok(position)
    }

    pub async fn presence(&self, user_id: &str) -> Result<Option<PresenceRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT user_id, state, status_msg, last_active_ts, stream_ordering FROM presence \
             WHERE user_id = $1",
        )
        .bind(user_id)
        .fetch_optional(self.pool())
        .await?;
        row.map(|row| presence_from_row(&row)).transpose()
    }

    /// The presence of several users; those who never had one are left out.
    pub async fn presences(&self, user_ids: &[String]) -> Result<Vec<PresenceRecord>, StoreError> {
        let mut records = Vec::with_capacity(user_ids.len());
        for chunk in user_ids.chunks(200) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let query = format!(
                "SELECT user_id, state, status_msg, last_active_ts, stream_ordering FROM presence \
                 WHERE user_id IN ({})",
                placeholders.join(", ")
            );
            let mut statement = sqlx::query(AssertSqlSafe(query));
            for user in chunk {
                statement = statement.bind(user);
            }
            for row in statement.fetch_all(self.pool()).await? {
                records.push(presence_from_row(&row)?);
            }
        }
        Ok(records)
    }

    /// Presence changes in `(after, until]` of any user.
    pub async fn presence_since(
        &self,
        after: i64,
        until: i64,
    ) -> Result<Vec<PresenceRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT user_id, state, status_msg, last_active_ts, stream_ordering FROM presence \
             WHERE stream_ordering > $1 AND stream_ordering <= $2 ORDER BY stream_ordering",
        )
        .bind(after)
        .bind(until)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(presence_from_row).collect()
    }

    pub async fn create_media(&self, media: &MediaRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO media (media_id, content_type, filename, size, uploader, created_ts, \
             unauthenticated) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&media.media_id)
        .bind(media.content_type.as_deref())
        .bind(media.filename.as_deref())
        .bind(media.size)
        .bind(&media.uploader)
        .bind(now_ms())
        .bind(i64::from(media.unauthenticated))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The local copy of another server's media item, if it was fetched.
    pub async fn remote_media(
        &self,
        server_name: &str,
        media_id: &str,
    ) -> Result<Option<MediaRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT local_id, content_type, filename, size FROM remote_media \
             WHERE server_name = $1 AND media_id = $2",
        )
        .bind(server_name)
        .bind(media_id)
        .fetch_optional(self.pool())
        .await?;
        row.map(|row| {
            Ok(MediaRecord {
                media_id: row.try_get("local_id")?,
                content_type: row.try_get("content_type")?,
                filename: row.try_get("filename")?,
                size: row.try_get("size")?,
                uploader: String::new(),
                unauthenticated: false,
            })
        })
        .transpose()
    }

    /// Records the local copy of another server's media item (`record.media_id` is the local
    /// id of the file).
    pub async fn create_remote_media(
        &self,
        server_name: &str,
        media_id: &str,
        record: &MediaRecord,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO remote_media (server_name, media_id, local_id, content_type, filename, \
             size, fetched_ts) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (server_name, media_id) DO NOTHING",
        )
        .bind(server_name)
        .bind(media_id)
        .bind(&record.media_id)
        .bind(record.content_type.as_deref())
        .bind(record.filename.as_deref())
        .bind(record.size)
        .bind(super::now_ms())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn media(&self, media_id: &str) -> Result<Option<MediaRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT media_id, content_type, filename, size, uploader, unauthenticated FROM media \
             WHERE media_id = $1",
        )
        .bind(media_id)
        .fetch_optional(self.pool())
        .await?;
        row.map(|row| -> Result<MediaRecord, StoreError> {
            Ok(MediaRecord {
                media_id: row.try_get("media_id")?,
                content_type: row.try_get("content_type")?,
                filename: row.try_get("filename")?,
                size: row.try_get("size")?,
                uploader: row.try_get("uploader")?,
                unauthenticated: row.try_get::<i64, _>("unauthenticated")? != 0,
            })
        })
        .transpose()
    }
}

fn presence_from_row(row: &sqlx::any::AnyRow) -> Result<PresenceRecord, StoreError> {
    Ok(PresenceRecord {
        user_id: row.try_get("user_id")?,
        state: row.try_get("state")?,
        status_msg: row.try_get("status_msg")?,
        last_active_ts: row.try_get("last_active_ts")?,
        stream_ordering: row.try_get("stream_ordering")?,
    })
}

impl Store {
    /// How far the stream reader `name` got, if it ever ran.
    pub async fn stream_cursor(&self, name: &str) -> Result<Option<i64>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT position FROM stream_cursors WHERE name = $1")
                .bind(name)
                .fetch_optional(self.pool())
                .await?,
        )
    }

    /// Records how far the stream reader `name` got.
    pub async fn set_stream_cursor(&self, name: &str, position: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO stream_cursors (name, position) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET position = excluded.position",
        )
        .bind(name)
        .bind(position)
        .execute(self.pool())
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::both_backends;

    both_backends!(presences_of_many_users, |store: Store| async move {
        store
            .set_presence("@a:x", "online", Some("here"))
            .await
            .unwrap();
        store.set_presence("@b:x", "offline", None).await.unwrap();
        // More users than one query takes: the chunks add up, the unknown are left out.
        let mut users: Vec<String> = (0..450).map(|n| format!("@nobody{n}:x")).collect();
        users.push("@b:x".to_owned());
        users.insert(0, "@a:x".to_owned());
        let mut found: Vec<(String, String, Option<String>)> = store
            .presences(&users)
            .await
            .unwrap()
            .into_iter()
            .map(|record| (record.user_id, record.state, record.status_msg))
            .collect();
        found.sort();
        assert_eq!(
            found,
            vec![
                (
                    "@a:x".to_owned(),
                    "online".to_owned(),
                    Some("here".to_owned())
                ),
                ("@b:x".to_owned(), "offline".to_owned(), None),
            ]
        );
        assert!(store.presences(&[]).await.unwrap().is_empty());
    });

    both_backends!(stream_cursors, |store: Store| async move {
        assert_eq!(store.stream_cursor("xmpp").await.unwrap(), None);
        store.set_stream_cursor("xmpp", 7).await.unwrap();
        store.set_stream_cursor("xmpp", 12).await.unwrap();
        store.set_stream_cursor("other", 1).await.unwrap();
        assert_eq!(store.stream_cursor("xmpp").await.unwrap(), Some(12));
        assert_eq!(store.stream_cursor("other").await.unwrap(), Some(1));
    });

    both_backends!(media_stored_before_the_freeze, |store: Store| async move {
        // A row as it was stored before the unauthenticated endpoints were frozen.
        sqlx::query(
            "INSERT INTO media (media_id, content_type, filename, size, uploader, created_ts) \
             VALUES ('old', 'image/png', NULL, 3, '@a:x', 1)",
        )
        .execute(store.pool())
        .await
        .unwrap();
        assert!(store.media("old").await.unwrap().unwrap().unauthenticated);
        store
            .create_media(&MediaRecord {
                media_id: "new".into(),
                content_type: None,
                filename: None,
                size: 1,
                uploader: "@a:x".into(),
                unauthenticated: false,
            })
            .await
            .unwrap();
        assert!(!store.media("new").await.unwrap().unwrap().unauthenticated);
    });

    both_backends!(one_writer_at_a_time, |store: Store| async move {
        let held = store.lock_writer().await.expect("the first writer");
        // Another holder (a file opened again, a PostgreSQL session of its own) is refused.
        match store.lock_writer().await {
            Err(error @ StoreError::InUse(_)) => {
                assert!(error.to_string().contains("only one process"), "{error}");
            }
            Err(other) => panic!("expected InUse, got {other}"),
            Ok(_) => panic!("a second writer was let in"),
        }
        held.release().await;
        // Once the first lets go, the next may write.
        let _again = store
            .lock_writer()
            .await
            .expect("the writer after the first");
    });

    both_backends!(streamed_data, |store: Store| async move {
        let start = store.current_position();
        let first = store
            .set_account_data("@a:x", "", "m.direct", "{}")
            .await
            .unwrap();
        assert_eq!(first, start + 1);
        assert_eq!(store.current_position(), first);
        store
            .set_account_data("@a:x", "", "m.direct", "{\"a\":1}")
            .await
            .unwrap();
        let changed = store
            .account_data_since("@a:x", first, i64::MAX)
            .await
            .unwrap();
        assert_eq!(
            changed,
            vec![("".to_owned(), "m.direct".to_owned(), "{\"a\":1}".to_owned())]
        );
        let receipt = ReceiptRecord {
            room_id: "!r:x".into(),
            receipt_type: "m.read".into(),
            user_id: "@a:x".into(),
            thread_id: String::new(),
            event_id: "$e".into(),
            ts: 5,
        };
        let at = store.set_receipt(&receipt).await.unwrap();
        assert_eq!(
            store.receipts_since("!r:x", at - 1, at).await.unwrap(),
            vec![receipt.clone()]
        );
        assert!(
            store
                .receipts_since("!r:x", at, at)
                .await
                .unwrap()
                .is_empty()
        );
        let other_room = ReceiptRecord {
            room_id: "!s:x".into(),
            ..receipt.clone()
        };
        let other_at = store.set_receipt(&other_room).await.unwrap();
        assert_eq!(
            store.receipts_after(at - 1, other_at).await.unwrap(),
            vec![receipt.clone(), other_room.clone()]
        );
        assert_eq!(
            store.receipts_after(at, i64::MAX).await.unwrap(),
            vec![other_room]
        );
        let presence_at = store
            .set_presence("@a:x", "online", Some("hi"))
            .await
            .unwrap();
        let presence = store.presence("@a:x").await.unwrap().unwrap();
        assert_eq!(presence.stream_ordering, presence_at);
        assert_eq!(presence.status_msg.as_deref(), Some("hi"));
        assert_eq!(store.create_filter("@a:x", "{}").await.unwrap(), 0);
        assert_eq!(store.create_filter("@a:x", "{\"b\":1}").await.unwrap(), 1);
        assert_eq!(store.create_filter("@b:x", "{}").await.unwrap(), 0);
        assert_eq!(
            store.filter("@a:x", 1).await.unwrap().as_deref(),
            Some("{\"b\":1}")
        );
        assert!(store.signing_key().await.unwrap().is_none());
        store
            .store_signing_key("ed25519:a", "c2VlZA")
            .await
            .unwrap();
        assert_eq!(
            store.signing_key().await.unwrap(),
            Some(("ed25519:a".to_owned(), "c2VlZA".to_owned()))
        );
    });

    both_backends!(
        positions_survive_reconnect_order,
        |store: Store| async move {
            // Positions handed out by concurrent writers become visible in order.
            let mut handles = Vec::new();
            for i in 0..20 {
                let store = store.clone();
                handles.push(tokio::spawn(async move {
                    store
                        .set_account_data("@a:x", "", &format!("t{i}"), "{}")
                        .await
                        .unwrap()
                }));
            }
            let mut positions = Vec::new();
            for handle in handles {
                positions.push(handle.await.unwrap());
            }
            positions.sort();
            positions.dedup();
            assert_eq!(positions.len(), 20);
            assert_eq!(store.current_position(), *positions.last().unwrap());
        }
    );
}
