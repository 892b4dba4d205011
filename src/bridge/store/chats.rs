//! Direct chats: the direct room of each pair of a Matrix user and an XMPP user, which Matrix
//! event each XMPP message is, and the presence subscriptions of each pair.

use causeway_matrix::store::now_ms;
use sqlx::Row;

use super::{BridgeStore, BridgeStoreError as StoreError};

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

/// Records which event an XMPP message is, unless its sender's id is recorded already.
pub(super) const INSERT_XMPP_MESSAGE: &str = "INSERT INTO xmpp_messages (room_id, sender_jid, xmpp_id, event_id, created_ts) \
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (room_id, sender_jid, xmpp_id) DO NOTHING";

/// Two text columns of a row.
fn two(row: &sqlx::any::AnyRow, first: &str, second: &str) -> Result<(String, String), StoreError> {
    Ok((row.try_get(first)?, row.try_get(second)?))
}

impl BridgeStore {
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
        let inserted = sqlx::query(INSERT_XMPP_MESSAGE)
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

    /// Whether any local account receives an XMPP user's presence (their subscription keeps
    /// the ghost's presence).
    pub async fn presence_followed(&self, remote_jid: &str) -> Result<bool, StoreError> {
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM xmpp_subscriptions WHERE remote_jid = $1 AND to_remote = 1",
        )
        .bind(remote_jid)
        .fetch_one(self.pool())
        .await?;
        Ok(count > 0)
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
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::bridge::store::testing::both_backends;

    both_backends!(direct_rooms_and_messages, |store: BridgeStore| async move {
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

    both_backends!(subscriptions, |store: BridgeStore| async move {
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
}
