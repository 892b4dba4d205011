//! The outbox of messages to XMPP: each message of a local account is recorded as under way
//! before it is sent; a failure keeps it for another attempt, with its notice; what waits in a
//! room goes together and in order.

use causeway_matrix::store::now_ms;
use sqlx::Row;

use super::{BridgeStore, BridgeStoreError as StoreError, BridgedMessage};

/// A message waiting in the outbox for another attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    pub event_id: String,
    pub room_id: String,
    /// Why the last attempt failed.
    pub reason: String,
    pub attempts: i64,
    pub first_failure_ts: i64,
    pub next_attempt_ts: i64,
    /// The notice that told the sender.
    pub notice_event_id: Option<String>,
}

fn outbox_from_row(row: &sqlx::any::AnyRow) -> Result<OutboxEntry, StoreError> {
    Ok(OutboxEntry {
        event_id: row.try_get("event_id")?,
        room_id: row.try_get("room_id")?,
        reason: row.try_get("reason")?,
        attempts: row.try_get("attempts")?,
        first_failure_ts: row.try_get("first_failure_ts")?,
        next_attempt_ts: row.try_get("next_attempt_ts")?,
        notice_event_id: row.try_get("notice_event_id")?,
    })
}

const OUTBOX_COLUMNS: &str = "SELECT event_id, room_id, reason, attempts, first_failure_ts, \
                              next_attempt_ts, notice_event_id FROM xmpp_outbox";

impl BridgeStore {
    /// Records a local account's message as bridged and as in flight (an outbox entry with no
    /// attempt yet, looked at again at `check_at` unless its delivery reports back first), in
    /// one transaction, before it is sent. False when it was recorded before: it was read
    /// again after a restart, and the outbox has it.
    pub async fn record_outgoing(
        &self,
        message: &BridgedMessage,
        check_at: i64,
    ) -> Result<bool, StoreError> {
        let mut transaction = self.store.begin_write().await?;
        let now = now_ms();
        let inserted = sqlx::query(super::chats::INSERT_XMPP_MESSAGE)
            .bind(&message.room_id)
            .bind(&message.sender_jid)
            .bind(&message.xmpp_id)
            .bind(&message.event_id)
            .bind(now)
            .execute(&mut *transaction)
            .await?;
        if inserted.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO xmpp_outbox (event_id, room_id, reason, attempts, first_failure_ts, \
             next_attempt_ts, sending) VALUES ($1, $2, '', 0, $3, $4, 1) \
             ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(&message.event_id)
        .bind(&message.room_id)
        .bind(now)
        .bind(check_at)
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(true)
    }

    /// After a restart: every entry is due at once, and the messages that were in flight when
    /// the server stopped count as attempted (later messages of their room wait behind them).
    pub async fn outbox_restart(&self, now: i64) -> Result<u64, StoreError> {
        Ok(sqlx::query(
            "UPDATE xmpp_outbox SET next_attempt_ts = $1, sending = 0, \
             attempts = CASE WHEN attempts = 0 THEN 1 ELSE attempts END",
        )
        .bind(now)
        .execute(self.pool())
        .await?
        .rows_affected())
    }

    /// Records a failed attempt to deliver an event: the first puts it in the outbox, later
    /// ones count. Returns the entry as it is now.
    pub async fn outbox_failed(
        &self,
        event_id: &str,
        room_id: &str,
        reason: &str,
        next_attempt_ts: i64,
    ) -> Result<OutboxEntry, StoreError> {
        sqlx::query(
            "INSERT INTO xmpp_outbox (event_id, room_id, reason, attempts, first_failure_ts, \
             next_attempt_ts, sending) VALUES ($1, $2, $3, 1, $4, $5, 0) \
             ON CONFLICT (event_id) DO UPDATE \
             SET reason = excluded.reason, attempts = xmpp_outbox.attempts + 1, \
             next_attempt_ts = excluded.next_attempt_ts, sending = 0",
        )
        .bind(event_id)
        .bind(room_id)
        .bind(reason)
        .bind(now_ms())
        .bind(next_attempt_ts)
        .execute(self.pool())
        .await?;
        self.outbox_entry(event_id)
            .await?
            .ok_or_else(|| StoreError::Corrupt("an outbox entry vanished as it was written".into()))
    }

    pub async fn outbox_entry(&self, event_id: &str) -> Result<Option<OutboxEntry>, StoreError> {
        let query = format!("{OUTBOX_COLUMNS} WHERE event_id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(query))
            .bind(event_id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(outbox_from_row).transpose()
    }

    /// Records the notice that told the sender about an entry.
    pub async fn outbox_set_notice(
        &self,
        event_id: &str,
        notice_event_id: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE xmpp_outbox SET notice_event_id = $1 WHERE event_id = $2")
            .bind(notice_event_id)
            .bind(event_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Entries due for another attempt at `now`, each put off until `later` so that it is
    /// taken once; oldest first.
    pub async fn outbox_take_due(
        &self,
        now: i64,
        later: i64,
        limit: i64,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let query = format!(
            "{OUTBOX_COLUMNS} WHERE next_attempt_ts <= $1 ORDER BY next_attempt_ts LIMIT $2"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(query))
            .bind(now)
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        let entries = rows
            .iter()
            .map(outbox_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        for entry in &entries {
            sqlx::query("UPDATE xmpp_outbox SET next_attempt_ts = $1 WHERE event_id = $2")
                .bind(later)
                .bind(&entry.event_id)
                .execute(self.pool())
                .await?;
        }
        Ok(entries)
    }

    /// When the first of a room's entries that a new message waits behind is due, if it has
    /// any: those that failed before or wait for an attempt. (Messages in flight for the first
    /// time are not waited for: they are ahead of it in the same queue.)
    pub async fn outbox_room_next(&self, room_id: &str) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT MIN(next_attempt_ts) FROM xmpp_outbox \
                 WHERE room_id = $1 AND (attempts > 0 OR sending = 0)",
        )
        .bind(room_id)
        .fetch_one(self.pool())
        .await?)
    }

    /// The entries of a room to try again, in the order of their events, each marked as under
    /// way and put off until `later`: a room's messages are tried again together and in order.
    /// Entries under way already are left to their attempt unless it is overdue at `now`.
    pub async fn outbox_take_room(
        &self,
        room_id: &str,
        now: i64,
        later: i64,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let mut transaction = self.store.begin_write().await?;
        let rows = sqlx::query(
            "SELECT o.event_id, o.room_id, o.reason, o.attempts, o.first_failure_ts, \
             o.next_attempt_ts, o.notice_event_id FROM xmpp_outbox o \
             LEFT JOIN events e ON e.event_id = o.event_id \
             WHERE o.room_id = $1 AND (o.sending = 0 OR o.next_attempt_ts <= $2) \
             ORDER BY COALESCE(e.stream_ordering, 0)",
        )
        .bind(room_id)
        .bind(now)
        .fetch_all(&mut *transaction)
        .await?;
        let entries = rows
            .iter()
            .map(outbox_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        sqlx::query(
            "UPDATE xmpp_outbox SET next_attempt_ts = $3, sending = 1 \
             WHERE room_id = $1 AND (sending = 0 OR next_attempt_ts <= $2)",
        )
        .bind(room_id)
        .bind(now)
        .bind(later)
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(entries)
    }

    /// A message of the room went through: the entries waiting for their next attempt go now.
    pub async fn outbox_release_room(&self, room_id: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE xmpp_outbox SET next_attempt_ts = $2 \
             WHERE room_id = $1 AND sending = 0 AND next_attempt_ts > $2",
        )
        .bind(room_id)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Takes an event out of the outbox; returns its entry if it was there.
    pub async fn outbox_remove(&self, event_id: &str) -> Result<Option<OutboxEntry>, StoreError> {
        let entry = self.outbox_entry(event_id).await?;
        if entry.is_some() {
            sqlx::query("DELETE FROM xmpp_outbox WHERE event_id = $1")
                .bind(event_id)
                .execute(self.pool())
                .await?;
        }
        Ok(entry)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use crate::bridge::store::testing::both_backends;
    use crate::bridge::store::{BridgeStore, BridgedMessage};

    both_backends!(outbox, |store: BridgeStore| async move {
        assert_eq!(store.outbox_entry("$m").await.unwrap(), None);
        let first = store
            .outbox_failed("$m", "!r:gw.test", "unreachable", 1_000)
            .await
            .unwrap();
        assert_eq!((first.attempts, first.next_attempt_ts), (1, 1_000));
        assert_eq!(first.notice_event_id, None);
        store.outbox_set_notice("$m", "$notice").await.unwrap();
        let again = store
            .outbox_failed("$m", "!r:gw.test", "still unreachable", 3_000)
            .await
            .unwrap();
        assert_eq!(again.attempts, 2);
        assert_eq!(again.reason, "still unreachable");
        assert_eq!(again.first_failure_ts, first.first_failure_ts);
        assert_eq!(again.notice_event_id.as_deref(), Some("$notice"));
        store
            .outbox_failed("$n", "!r:gw.test", "unreachable", 2_000)
            .await
            .unwrap();
        // Due at 2,500: only $n; taken once.
        let due = store.outbox_take_due(2_500, 9_000, 10).await.unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].event_id, "$n");
        assert!(
            store
                .outbox_take_due(2_500, 9_000, 10)
                .await
                .unwrap()
                .is_empty()
        );
        let due = store.outbox_take_due(3_000, 9_000, 10).await.unwrap();
        assert_eq!(due[0].event_id, "$m");
        assert_eq!(
            store.outbox_remove("$m").await.unwrap().unwrap().attempts,
            2
        );
        assert_eq!(store.outbox_remove("$m").await.unwrap(), None);
    });

    both_backends!(outbox_in_flight, |store: BridgeStore| async move {
        let message = |event: &str| BridgedMessage {
            room_id: "!r:gw.test".into(),
            sender_jid: "alice@gw.test".into(),
            xmpp_id: event.into(),
            event_id: event.into(),
        };
        // Recorded once, before it is sent; read again after a restart, it is not sent again.
        assert!(store.record_outgoing(&message("$a"), 5_000).await.unwrap());
        assert!(!store.record_outgoing(&message("$a"), 5_000).await.unwrap());
        assert_eq!(
            store.xmpp_message_of_event("$a").await.unwrap(),
            Some(("alice@gw.test".to_owned(), "$a".to_owned()))
        );
        let entry = store.outbox_entry("$a").await.unwrap().unwrap();
        assert_eq!((entry.attempts, entry.next_attempt_ts), (0, 5_000));
        // A message in flight is not waited for, nor taken with its room before it is overdue.
        assert_eq!(store.outbox_room_next("!r:gw.test").await.unwrap(), None);
        assert!(
            store
                .outbox_take_room("!r:gw.test", 1_000, 9_000)
                .await
                .unwrap()
                .is_empty()
        );
        // Its attempt failed: now it is waited for.
        store
            .outbox_failed("$a", "!r:gw.test", "unreachable", 2_000)
            .await
            .unwrap();
        assert_eq!(
            store.outbox_room_next("!r:gw.test").await.unwrap(),
            Some(2_000)
        );
        // A restart makes everything due, and what was in flight counts as attempted.
        assert!(store.record_outgoing(&message("$b"), 5_000).await.unwrap());
        assert_eq!(store.outbox_restart(1_500).await.unwrap(), 2);
        let taken = store
            .outbox_take_room("!r:gw.test", 1_500, 9_000)
            .await
            .unwrap();
        let taken: Vec<(&str, i64)> = taken
            .iter()
            .map(|e| (e.event_id.as_str(), e.attempts))
            .collect();
        assert_eq!(taken.len(), 2);
        assert!(taken.contains(&("$a", 1)) && taken.contains(&("$b", 1)));
        // Taken, they are under way: not taken again before they are overdue.
        assert!(
            store
                .outbox_take_room("!r:gw.test", 1_500, 9_000)
                .await
                .unwrap()
                .is_empty()
        );
        // $a failed again and waits; $b went through, so $a goes now.
        store
            .outbox_failed("$a", "!r:gw.test", "unreachable", 60_000)
            .await
            .unwrap();
        store.outbox_remove("$b").await.unwrap();
        store
            .outbox_release_room("!r:gw.test", 2_000)
            .await
            .unwrap();
        let entry = store.outbox_entry("$a").await.unwrap().unwrap();
        assert_eq!((entry.attempts, entry.next_attempt_ts), (2, 2_000));
    });
}
