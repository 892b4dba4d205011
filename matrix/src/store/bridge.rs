//! What the bridge between XMPP and Matrix keeps: the direct room of each pair of a local
//! account and an XMPP user, and which Matrix event each XMPP message is.

use sqlx::Row;

use super::{Store, StoreError, now_ms};

/// A message known on both sides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgedMessage {
    pub room_id: String,
    /// The bare JID of the message's sender (of the XMPP user, or of the local account).
    pub sender_jid: String,
    pub xmpp_id: String,
    pub event_id: String,
}

/// The presence subscriptions between a local account and an XMPP user (RFC 6121 §3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subscription {
    /// The local account receives the XMPP user's presence.
    pub to_remote: bool,
    /// The XMPP user receives the local account's presence.
    pub from_remote: bool,
    /// The local account asked for the XMPP user's presence and has no answer yet.
    pub pending_out: bool,
    /// The XMPP user refused or revoked the local account's subscription.
    pub declined: bool,
    /// The XMPP user asked for the local account's presence: the notice that asks the account.
    pub request_event_id: Option<String>,
}

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

/// Two text columns of a row.
fn two(row: &sqlx::any::AnyRow, first: &str, second: &str) -> Result<(String, String), StoreError> {
    Ok((row.try_get(first)?, row.try_get(second)?))
}

impl Store {
    /// The direct room of a local account and an XMPP user (a bare JID).
    pub async fn xmpp_direct_room(
        &self,
        local_user: &str,
        remote_jid: &str,
    ) -> Result<Option<String>, StoreError> {
        let row = sqlx::query(
            "SELECT room_id FROM xmpp_direct_rooms WHERE local_user = $1 AND remote_jid = $2",
        )
        .bind(local_user)
        .bind(remote_jid)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|row| row.try_get("room_id")).transpose()?)
    }

    /// Records the direct room of a pair, unless one is recorded already; returns the room of
    /// the pair from then on (the one recorded first, when two were made at once).
    pub async fn set_xmpp_direct_room(
        &self,
        local_user: &str,
        remote_jid: &str,
        room_id: &str,
    ) -> Result<String, StoreError> {
        sqlx::query(
            "INSERT INTO xmpp_direct_rooms (local_user, remote_jid, room_id, created_ts) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (local_user, remote_jid) DO NOTHING",
        )
        .bind(local_user)
        .bind(remote_jid)
        .bind(room_id)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        self.xmpp_direct_room(local_user, remote_jid)
            .await?
            .ok_or_else(|| StoreError::Corrupt("a direct room vanished as it was recorded".into()))
    }

    /// Makes `room_id` the direct room of a pair, in place of the one recorded before.
    pub async fn replace_xmpp_direct_room(
        &self,
        local_user: &str,
        remote_jid: &str,
        room_id: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO xmpp_direct_rooms (local_user, remote_jid, room_id, created_ts) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (local_user, remote_jid) \
             DO UPDATE SET room_id = excluded.room_id, created_ts = excluded.created_ts",
        )
        .bind(local_user)
        .bind(remote_jid)
        .bind(room_id)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The pair of a direct room: `(local user, remote JID)`.
    pub async fn xmpp_direct_pair(
        &self,
        room_id: &str,
    ) -> Result<Option<(String, String)>, StoreError> {
        let row =
            sqlx::query("SELECT local_user, remote_jid FROM xmpp_direct_rooms WHERE room_id = $1")
                .bind(room_id)
                .fetch_optional(self.pool())
                .await?;
        row.map(|row| two(&row, "local_user", "remote_jid"))
            .transpose()
    }

    /// Records which event an XMPP message is. When the sender's id is recorded already (a
    /// stanza sent again), nothing changes and the event recorded first is returned.
    pub async fn record_xmpp_message(
        &self,
        message: &BridgedMessage,
    ) -> Result<String, StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO xmpp_messages (room_id, sender_jid, xmpp_id, event_id, created_ts) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (room_id, sender_jid, xmpp_id) DO NOTHING",
        )
        .bind(&message.room_id)
        .bind(&message.sender_jid)
        .bind(&message.xmpp_id)
        .bind(&message.event_id)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        if inserted.rows_affected() == 1 {
            return Ok(message.event_id.clone());
        }
        self.xmpp_message_event(&message.room_id, &message.sender_jid, &message.xmpp_id)
            .await?
            .ok_or_else(|| {
                StoreError::Corrupt("a bridged message vanished as it was recorded".into())
            })
    }

    /// The event of a sender's XMPP message in a room.
    pub async fn xmpp_message_event(
        &self,
        room_id: &str,
        sender_jid: &str,
        xmpp_id: &str,
    ) -> Result<Option<String>, StoreError> {
        let row = sqlx::query(
            "SELECT event_id FROM xmpp_messages \
             WHERE room_id = $1 AND sender_jid = $2 AND xmpp_id = $3",
        )
        .bind(room_id)
        .bind(sender_jid)
        .bind(xmpp_id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|row| row.try_get("event_id")).transpose()?)
    }

    /// The XMPP message an event is: `(sender JID, XMPP id)`.
    pub async fn xmpp_message_of_event(
        &self,
        event_id: &str,
    ) -> Result<Option<(String, String)>, StoreError> {
        let row = sqlx::query(
            "SELECT sender_jid, xmpp_id FROM xmpp_messages WHERE event_id = $1 \
             ORDER BY created_ts LIMIT 1",
        )
        .bind(event_id)
        .fetch_optional(self.pool())
        .await?;
        row.map(|row| two(&row, "sender_jid", "xmpp_id"))
            .transpose()
    }

    /// The messages of a room with an XMPP id, whoever sent them: `(sender JID, event id)`,
    /// by sender.
    pub async fn xmpp_messages_with_id(
        &self,
        room_id: &str,
        xmpp_id: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT sender_jid, event_id FROM xmpp_messages WHERE room_id = $1 AND xmpp_id = $2 \
             ORDER BY sender_jid",
        )
        .bind(room_id)
        .bind(xmpp_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| two(row, "sender_jid", "event_id"))
            .collect()
    }

    /// Records a failed attempt to deliver an event: the first puts it in the outbox, later
    /// ones count. Returns the entry as it is now.
    /// Records a local account's message as bridged and as in flight (an outbox entry with no
    /// attempt yet, looked at again at `check_at` unless its delivery reports back first), in
    /// one transaction, before it is sent. False when it was recorded before: it was read
    /// again after a restart, and the outbox has it.
    pub async fn record_outgoing(
        &self,
        message: &BridgedMessage,
        check_at: i64,
    ) -> Result<bool, StoreError> {
        let mut transaction = self.begin_write().await?;
        let now = now_ms();
        let inserted = sqlx::query(
            "INSERT INTO xmpp_messages (room_id, sender_jid, xmpp_id, event_id, created_ts) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (room_id, sender_jid, xmpp_id) DO NOTHING",
        )
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
        let mut transaction = self.begin_write().await?;
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

    /// The subscriptions between a local account and an XMPP user (none when never set).
    pub async fn xmpp_subscription(
        &self,
        local_user: &str,
        remote_jid: &str,
    ) -> Result<Subscription, StoreError> {
        let row = sqlx::query(
            "SELECT to_remote, from_remote, pending_out, declined, request_event_id \
             FROM xmpp_subscriptions \
             WHERE local_user = $1 AND remote_jid = $2",
        )
        .bind(local_user)
        .bind(remote_jid)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else {
            return Ok(Subscription::default());
        };
        Ok(Subscription {
            to_remote: row.try_get::<i64, _>("to_remote")? != 0,
            from_remote: row.try_get::<i64, _>("from_remote")? != 0,
            pending_out: row.try_get::<i64, _>("pending_out")? != 0,
            declined: row.try_get::<i64, _>("declined")? != 0,
            request_event_id: row.try_get("request_event_id")?,
        })
    }

    pub async fn set_xmpp_subscription(
        &self,
        local_user: &str,
        remote_jid: &str,
        subscription: &Subscription,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO xmpp_subscriptions (local_user, remote_jid, to_remote, from_remote, \
             pending_out, declined, request_event_id) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (local_user, remote_jid) DO UPDATE SET to_remote = excluded.to_remote, \
             from_remote = excluded.from_remote, pending_out = excluded.pending_out, \
             declined = excluded.declined, request_event_id = excluded.request_event_id",
        )
        .bind(local_user)
        .bind(remote_jid)
        .bind(i64::from(subscription.to_remote))
        .bind(i64::from(subscription.from_remote))
        .bind(i64::from(subscription.pending_out))
        .bind(i64::from(subscription.declined))
        .bind(subscription.request_event_id.as_deref())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The XMPP users who receive a local account's presence.
    pub async fn xmpp_subscribers(&self, local_user: &str) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT remote_jid FROM xmpp_subscriptions WHERE local_user = $1 AND from_remote = 1 \
             ORDER BY remote_jid",
        )
        .bind(local_user)
        .fetch_all(self.pool())
        .await?)
    }

    /// Every pair in which the local account receives the XMPP user's presence:
    /// `(local user, remote JID)`.
    pub async fn xmpp_subscriptions_to_remote(&self) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT local_user, remote_jid FROM xmpp_subscriptions WHERE to_remote = 1 \
             ORDER BY local_user, remote_jid",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| two(row, "local_user", "remote_jid"))
            .collect()
    }

    /// The pair whose subscription request a notice is: `(local user, remote JID)`.
    pub async fn xmpp_subscription_request(
        &self,
        event_id: &str,
    ) -> Result<Option<(String, String)>, StoreError> {
        let row = sqlx::query(
            "SELECT local_user, remote_jid FROM xmpp_subscriptions WHERE request_event_id = $1",
        )
        .bind(event_id)
        .fetch_optional(self.pool())
        .await?;
        row.map(|row| two(&row, "local_user", "remote_jid"))
            .transpose()
    }

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

    both_backends!(direct_rooms_and_messages, |store: Store| async move {
        let alice = "@alice:gw.test";
        let bob = "bob@prosody.test";
        assert_eq!(store.xmpp_direct_room(alice, bob).await.unwrap(), None);
        // The first room recorded for a pair stays its room.
        assert_eq!(
            store
                .set_xmpp_direct_room(alice, bob, "!one:gw.test")
                .await
                .unwrap(),
            "!one:gw.test"
        );
        assert_eq!(
            store
                .set_xmpp_direct_room(alice, bob, "!two:gw.test")
                .await
                .unwrap(),
            "!one:gw.test"
        );
        assert_eq!(
            store.xmpp_direct_room(alice, bob).await.unwrap().as_deref(),
            Some("!one:gw.test")
        );
        assert_eq!(
            store.xmpp_direct_pair("!one:gw.test").await.unwrap(),
            Some((alice.to_owned(), bob.to_owned()))
        );
        assert_eq!(store.xmpp_direct_pair("!two:gw.test").await.unwrap(), None);
        // A direct chat made anew takes over.
        store
            .replace_xmpp_direct_room(alice, bob, "!four:gw.test")
            .await
            .unwrap();
        assert_eq!(
            store.xmpp_direct_room(alice, bob).await.unwrap().as_deref(),
            Some("!four:gw.test")
        );
        assert_eq!(store.xmpp_direct_pair("!one:gw.test").await.unwrap(), None);
        store
            .replace_xmpp_direct_room(alice, bob, "!one:gw.test")
            .await
            .unwrap();
        // Another XMPP user, another room.
        store
            .set_xmpp_direct_room(alice, "carol@prosody.test", "!three:gw.test")
            .await
            .unwrap();
        assert_eq!(
            store
                .xmpp_direct_room(alice, "carol@prosody.test")
                .await
                .unwrap()
                .as_deref(),
            Some("!three:gw.test")
        );

        // A stanza sent again keeps its first event.
        let message = BridgedMessage {
            room_id: "!one:gw.test".into(),
            sender_jid: bob.into(),
            xmpp_id: "m1".into(),
            event_id: "$e1".into(),
        };
        assert_eq!(store.record_xmpp_message(&message).await.unwrap(), "$e1");
        let again = BridgedMessage {
            event_id: "$e2".into(),
            ..message.clone()
        };
        assert_eq!(store.record_xmpp_message(&again).await.unwrap(), "$e1");
        // Ids are per sender: Alice's own "m1" is another message.
        let alices = BridgedMessage {
            sender_jid: "alice@gw.test".into(),
            event_id: "$e3".into(),
            ..message.clone()
        };
        assert_eq!(store.record_xmpp_message(&alices).await.unwrap(), "$e3");
        assert_eq!(
            store
                .xmpp_message_event("!one:gw.test", bob, "m1")
                .await
                .unwrap()
                .as_deref(),
            Some("$e1")
        );
        assert_eq!(
            store
                .xmpp_message_event("!one:gw.test", bob, "m9")
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            store.xmpp_message_of_event("$e3").await.unwrap(),
            Some(("alice@gw.test".to_owned(), "m1".to_owned()))
        );
        assert_eq!(store.xmpp_message_of_event("$e2").await.unwrap(), None);
        assert_eq!(
            store
                .xmpp_messages_with_id("!one:gw.test", "m1")
                .await
                .unwrap(),
            vec![
                ("alice@gw.test".to_owned(), "$e3".to_owned()),
                (bob.to_owned(), "$e1".to_owned()),
            ]
        );
        assert!(
            store
                .xmpp_messages_with_id("!two:gw.test", "m1")
                .await
                .unwrap()
                .is_empty()
        );
    });

    both_backends!(outbox, |store: Store| async move {
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

    both_backends!(outbox_in_flight, |store: Store| async move {
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

    both_backends!(subscriptions, |store: Store| async move {
        let alice = "@alice:gw.test";
        assert_eq!(
            store.xmpp_subscription(alice, "bob@x").await.unwrap(),
            Subscription::default()
        );
        let asked = Subscription {
            pending_out: true,
            request_event_id: Some("$ask".into()),
            ..Subscription::default()
        };
        store
            .set_xmpp_subscription(alice, "bob@x", &asked)
            .await
            .unwrap();
        assert_eq!(
            store.xmpp_subscription(alice, "bob@x").await.unwrap(),
            asked
        );
        assert_eq!(
            store.xmpp_subscription_request("$ask").await.unwrap(),
            Some((alice.to_owned(), "bob@x".to_owned()))
        );
        assert!(store.xmpp_subscribers(alice).await.unwrap().is_empty());
        let both = Subscription {
            to_remote: true,
            from_remote: true,
            declined: true,
            ..Subscription::default()
        };
        store
            .set_xmpp_subscription(alice, "bob@x", &both)
            .await
            .unwrap();
        store
            .set_xmpp_subscription(
                alice,
                "carol@x",
                &Subscription {
                    from_remote: true,
                    ..Subscription::default()
                },
            )
            .await
            .unwrap();
        store
            .set_xmpp_subscription("@dave:gw.test", "erin@x", &both)
            .await
            .unwrap();
        assert_eq!(store.xmpp_subscription(alice, "bob@x").await.unwrap(), both);
        assert_eq!(
            store.xmpp_subscriptions_to_remote().await.unwrap(),
            [
                (alice.to_owned(), "bob@x".to_owned()),
                ("@dave:gw.test".to_owned(), "erin@x".to_owned())
            ]
        );
        assert_eq!(store.xmpp_subscription_request("$ask").await.unwrap(), None);
        assert_eq!(
            store.xmpp_subscribers(alice).await.unwrap(),
            ["bob@x", "carol@x"]
        );
    });

    both_backends!(stream_cursors, |store: Store| async move {
        assert_eq!(store.stream_cursor("xmpp").await.unwrap(), None);
        store.set_stream_cursor("xmpp", 7).await.unwrap();
        store.set_stream_cursor("xmpp", 12).await.unwrap();
        store.set_stream_cursor("other", 1).await.unwrap();
        assert_eq!(store.stream_cursor("xmpp").await.unwrap(), Some(12));
        assert_eq!(store.stream_cursor("other").await.unwrap(), Some(1));
    });
}
