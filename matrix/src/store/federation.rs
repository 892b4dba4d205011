//! What federation keeps: the transactions received from other servers with their answers,
//! the queue of what is to be sent to each destination, the backoff of destinations that
//! failed, and outliers (events known without their place in a room's graph, such as the
//! state and auth chain a join brings).

use sqlx::Row;

use super::{Store, StoreError, now_ms};

/// An event stored as an outlier: known, checked against its own auth events, without a place
/// in the room's graph (no state, never shown, never an extremity).
#[derive(Debug, Clone)]
pub struct NewOutlier {
    pub event_id: String,
    pub sender: String,
    pub event_type: String,
    pub state_key: Option<String>,
    pub depth: i64,
    pub origin_server_ts: i64,
    pub json: String,
    /// Why the authorization rules refused the event, if they did.
    pub rejected_reason: Option<String>,
    /// The redaction that redacts this event (`json` is then its redacted form).
    pub redacted_by: Option<String>,
}

/// What backfilled redactions do beside the events of their batch: events stored before that
/// they redact, and targets not here yet that they wait for.
#[derive(Debug, Default)]
pub struct BackfilledRedactions {
    /// `(target, its redacted JSON, redaction)`.
    pub of_stored: Vec<(String, String, String)>,
    /// `(target, redaction)`.
    pub waiting: Vec<(String, String)>,
}

/// One entry of a destination's queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    /// A PDU, by event id.
    Pdu(String),
    /// An EDU, as its JSON.
    Edu(String),
}

/// The name of the stream cursor up to which local events were queued for other servers.
pub const FEDERATION_QUEUED: &str = "federation_queued";
/// The name of the counter of queue entry ids.
const OUTBOUND_IDS: &str = "federation_outbound_ids";

impl Store {
    /// The answer given to a transaction received before, if it was.
    pub async fn inbound_transaction(
        &self,
        origin: &str,
        txn_id: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT response FROM federation_inbound WHERE origin = $1 AND txn_id = $2",
        )
        .bind(origin)
        .bind(txn_id)
        .fetch_optional(self.pool())
        .await?)
    }

    /// Records the answer to a transaction once its PDUs and EDUs are stored.
    pub async fn record_inbound_transaction(
        &self,
        origin: &str,
        txn_id: &str,
        response: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO federation_inbound (origin, txn_id, response, received_ts) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (origin, txn_id) DO NOTHING",
        )
        .bind(origin)
        .bind(txn_id)
        .bind(response)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Stores events of a room as outliers, at negative stream positions (which no reader of
    /// the stream ever sees as new). Events already stored stay as they are.
    pub async fn persist_outliers(
        &self,
        room_id: &str,
        outliers: &[NewOutlier],
    ) -> Result<(), StoreError> {
        let mut transaction = self.begin_write().await?;
        // Later events get the positions nearer the stream, as backfilled events do.
        let mut ordered: Vec<&NewOutlier> = outliers.iter().collect();
        ordered.sort_by_key(|outlier| std::cmp::Reverse(outlier.depth));
        for outlier in ordered {
            sqlx::query(
                "INSERT INTO events (stream_ordering, event_id, room_id, sender, event_type, \
                 state_key, depth, origin_server_ts, state_group, json, state_group_before, \
                 outlier, soft_failed, rejected_reason) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9, 0, 1, 0, $10) \
                 ON CONFLICT (event_id) DO NOTHING",
            )
            .bind(self.allocate_negative_position())
            .bind(&outlier.event_id)
            .bind(room_id)
            .bind(&outlier.sender)
            .bind(&outlier.event_type)
            .bind(outlier.state_key.as_deref())
            .bind(outlier.depth)
            .bind(outlier.origin_server_ts)
            .bind(&outlier.json)
            .bind(outlier.rejected_reason.as_deref())
            .execute(&mut *transaction)
            .await?;
        }
        transaction.commit().await?;
        Ok(())
    }

    /// Records a membership of a local user in a room of another server that this server has
    /// no copy of (an invite received, its rejection): the event is stored out of the room's
    /// graph, but at a new stream position, so that the user's sync sees the change. An
    /// invite keeps the stripped state it came with; other memberships drop it.
    pub async fn persist_remote_membership(
        &self,
        writer: &mut super::StreamWriter<'_>,
        room_id: &str,
        event: &NewOutlier,
        membership: &str,
        invite_state: Option<&str>,
    ) -> Result<i64, StoreError> {
        let position = writer.next_position();
        let Some(user_id) = event.state_key.as_deref() else {
            return Err(StoreError::Corrupt(
                "a membership without a state key".into(),
            ));
        };
        let mut transaction = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO events (stream_ordering, event_id, room_id, sender, event_type,              state_key, depth, origin_server_ts, state_group, json, state_group_before,              outlier, soft_failed, rejected_reason)              VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9, 0, 1, 0, NULL)              ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(position)
        .bind(&event.event_id)
        .bind(room_id)
        .bind(&event.sender)
        .bind(&event.event_type)
        .bind(user_id)
        .bind(event.depth)
        .bind(event.origin_server_ts)
        .bind(&event.json)
        .execute(&mut *transaction)
        .await?;
        super::events::set_membership(
            &mut transaction,
            room_id,
            user_id,
            membership,
            &event.event_id,
            position,
        )
        .await?;
        match invite_state {
            Some(state) => {
                sqlx::query(
                    "INSERT INTO invite_state (room_id, user_id, state) VALUES ($1, $2, $3)                      ON CONFLICT (room_id, user_id) DO UPDATE SET state = excluded.state",
                )
                .bind(room_id)
                .bind(user_id)
                .bind(state)
                .execute(&mut *transaction)
                .await?;
            }
            None => {
                sqlx::query("DELETE FROM invite_state WHERE room_id = $1 AND user_id = $2")
                    .bind(room_id)
                    .bind(user_id)
                    .execute(&mut *transaction)
                    .await?;
            }
        }
        transaction.commit().await?;
        for change in [
            super::Change::Members(room_id.to_owned()),
            super::Change::Room(room_id.to_owned()),
            super::Change::Membership(user_id.to_owned()),
        ] {
            self.changes.record(change, position);
        }
        Ok(position)
    }

    /// The stripped state kept with an invite to a room of another server.
    pub async fn invite_state(
        &self,
        room_id: &str,
        user_id: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar(
                "SELECT state FROM invite_state WHERE room_id = $1 AND user_id = $2",
            )
            .bind(room_id)
            .bind(user_id)
            .fetch_optional(self.pool())
            .await?,
        )
    }

    /// Stores events of a room's past, fetched from another server (backfill): shown in the
    /// room's timeline in their topological place, at negative stream positions (later events
    /// nearer the stream), so that no reader of the stream sees them as new. An event kept as
    /// an outlier before (a state event that came with a join) takes its place in the
    /// timeline. Returns how many events became visible.
    pub async fn persist_backfilled(
        &self,
        room_id: &str,
        events: &[(NewOutlier, Option<super::Relation>)],
        redactions: &BackfilledRedactions,
    ) -> Result<u64, StoreError> {
        let mut ordered: Vec<&(NewOutlier, Option<super::Relation>)> = events.iter().collect();
        ordered.sort_by_key(|(event, _)| std::cmp::Reverse(event.depth));
        let mut shown = 0;
        let mut transaction = self.begin_write().await?;
        for (event, relation) in ordered {
            let promoted = sqlx::query(
                "UPDATE events SET outlier = 0 WHERE event_id = $1 AND room_id = $2                  AND outlier = 1 AND rejected_reason IS NULL",
            )
            .bind(&event.event_id)
            .bind(room_id)
            .execute(&mut *transaction)
            .await?
            .rows_affected();
            let inserted = sqlx::query(
                "INSERT INTO events (stream_ordering, event_id, room_id, sender, event_type,                  state_key, depth, origin_server_ts, state_group, json, state_group_before,                  outlier, soft_failed, rejected_reason, redacted_by)                  VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9, 0, 0, 0, $10, $11)                  ON CONFLICT (event_id) DO NOTHING",
            )
            .bind(self.allocate_negative_position())
            .bind(&event.event_id)
            .bind(room_id)
            .bind(&event.sender)
            .bind(&event.event_type)
            .bind(event.state_key.as_deref())
            .bind(event.depth)
            .bind(event.origin_server_ts)
            .bind(&event.json)
            .bind(event.rejected_reason.as_deref())
            .bind(event.redacted_by.as_deref())
            .execute(&mut *transaction)
            .await?
            .rows_affected();
            if inserted > 0 && event.redacted_by.is_some() {
                sqlx::query("DELETE FROM pending_redactions WHERE target_event_id = $1")
                    .bind(&event.event_id)
                    .execute(&mut *transaction)
                    .await?;
            }
            if inserted > 0
                && event.rejected_reason.is_none()
                && let Some(relation) = relation
            {
                sqlx::query(
                    "INSERT INTO event_relations (event_id, room_id, rel_type, relates_to,                      aggregation_key) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&event.event_id)
                .bind(room_id)
                .bind(&relation.rel_type)
                .bind(&relation.event_id)
                .bind(relation.key.as_deref())
                .execute(&mut *transaction)
                .await?;
            }
            if event.rejected_reason.is_none() {
                shown += promoted + inserted;
            }
        }
        for (target, json, redaction) in &redactions.of_stored {
            super::search::unindex_event(&mut transaction, target).await?;
            sqlx::query(
                "UPDATE events SET json = $1, redacted_by = $2 WHERE event_id = $3 \
                 AND room_id = $4 AND redacted_by IS NULL",
            )
            .bind(json)
            .bind(redaction)
            .bind(target)
            .bind(room_id)
            .execute(&mut *transaction)
            .await?;
        }
        for (target, redaction) in &redactions.waiting {
            sqlx::query(
                "INSERT INTO pending_redactions (target_event_id, redaction_event_id, room_id) \
                 VALUES ($1, $2, $3) ON CONFLICT (target_event_id, redaction_event_id) DO NOTHING",
            )
            .bind(target)
            .bind(redaction)
            .bind(room_id)
            .execute(&mut *transaction)
            .await?;
        }
        transaction.commit().await?;
        Ok(shown)
    }

    /// The earliest event of a room's timeline (topologically), if it has one.
    /// Those of `event_ids` that are in a room's timeline: stored, not as outliers.
    pub async fn in_timeline(
        &self,
        room_id: &str,
        event_ids: &[String],
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        let mut found = std::collections::HashSet::new();
        for chunk in event_ids.chunks(200) {
            let placeholders: Vec<String> = (2..chunk.len() + 2).map(|i| format!("${i}")).collect();
            let statement = format!(
                "SELECT event_id FROM events WHERE room_id = $1 AND outlier = 0 \
                 AND event_id IN ({})",
                placeholders.join(", ")
            );
            let mut query = sqlx::query_scalar(sqlx::AssertSqlSafe(statement)).bind(room_id);
            for id in chunk {
                query = query.bind(id);
            }
            let ids: Vec<String> = query.fetch_all(self.pool()).await?;
            found.extend(ids);
        }
        Ok(found)
    }

    pub async fn earliest_shown_event(
        &self,
        room_id: &str,
    ) -> Result<Option<super::EventRow>, StoreError> {
        Ok(self
            .room_events_topological(
                room_id,
                super::TopologicalKey {
                    depth: i64::MIN,
                    stream: i64::MIN,
                },
                None,
                super::Direction::Forward,
                1,
            )
            .await?
            .pop())
    }

    /// Queues entries for destinations and moves the queueing cursor to `position`, in one
    /// transaction: after a crash, what was queued and how far are consistent.
    pub async fn enqueue_outgoing(
        &self,
        entries: &[(String, Outgoing)],
        cursor: Option<i64>,
    ) -> Result<(), StoreError> {
        let mut transaction = self.begin_write().await?;
        // Entry ids never repeat, also once the queue is empty: transaction ids are made of
        // them, and a destination ignores a transaction id it has seen.
        let queued: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM federation_outbound")
                .fetch_one(&mut *transaction)
                .await?;
        let given: Option<i64> =
            sqlx::query_scalar("SELECT position FROM stream_cursors WHERE name = $1")
                .bind(OUTBOUND_IDS)
                .fetch_optional(&mut *transaction)
                .await?;
        let mut next = queued.max(given.unwrap_or(0));
        for (destination, entry) in entries {
            next += 1;
            let (event_id, edu) = match entry {
                Outgoing::Pdu(event_id) => (Some(event_id.as_str()), None),
                Outgoing::Edu(edu) => (None, Some(edu.as_str())),
            };
            sqlx::query(
                "INSERT INTO federation_outbound (id, destination, event_id, edu) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(next)
            .bind(destination)
            .bind(event_id)
            .bind(edu)
            .execute(&mut *transaction)
            .await?;
        }
        let mut cursors = vec![(OUTBOUND_IDS, next)];
        if let Some(position) = cursor {
            cursors.push((FEDERATION_QUEUED, position));
        }
        for (name, position) in cursors {
            sqlx::query(
                "INSERT INTO stream_cursors (name, position) VALUES ($1, $2) \
                 ON CONFLICT (name) DO UPDATE SET position = excluded.position",
            )
            .bind(name)
            .bind(position)
            .execute(&mut *transaction)
            .await?;
        }
        transaction.commit().await?;
        Ok(())
    }

    /// The oldest entries queued for a destination: at most `pdus` PDUs and `edus` EDUs, in
    /// order, stopping before the first entry that would exceed either limit.
    pub async fn outgoing(
        &self,
        destination: &str,
        pdus: usize,
        edus: usize,
    ) -> Result<Vec<(i64, Outgoing)>, StoreError> {
        let limit = i64::try_from(pdus + edus).unwrap_or(i64::MAX);
        let rows = sqlx::query(
            "SELECT id, event_id, edu FROM federation_outbound WHERE destination = $1 \
             ORDER BY id LIMIT $2",
        )
        .bind(destination)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        let (mut pdu_count, mut edu_count) = (0, 0);
        let mut batch = Vec::new();
        for row in rows {
            let id: i64 = row.try_get("id")?;
            let event_id: Option<String> = row.try_get("event_id")?;
            let edu: Option<String> = row.try_get("edu")?;
            let entry = match (event_id, edu) {
                (Some(event_id), _) => {
                    pdu_count += 1;
                    Outgoing::Pdu(event_id)
                }
                (None, Some(edu)) => {
                    edu_count += 1;
                    Outgoing::Edu(edu)
                }
                (None, None) => continue,
            };
            if pdu_count > pdus || edu_count > edus {
                break;
            }
            batch.push((id, entry));
        }
        Ok(batch)
    }

    /// Removes a destination's entries up to `last` (acknowledged) and clears its backoff.
    pub async fn outgoing_sent(&self, destination: &str, last: i64) -> Result<(), StoreError> {
        let mut transaction = self.begin_write().await?;
        sqlx::query("DELETE FROM federation_outbound WHERE destination = $1 AND id <= $2")
            .bind(destination)
            .bind(last)
            .execute(&mut *transaction)
            .await?;
        sqlx::query("DELETE FROM federation_destinations WHERE destination = $1")
            .bind(destination)
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
        Ok(())
    }

    /// Records a failed attempt: the failures in a row, and when to try again.
    pub async fn destination_failed(
        &self,
        destination: &str,
        backoff: impl Fn(i64) -> i64,
    ) -> Result<i64, StoreError> {
        let failures: i64 = sqlx::query_scalar(
            "SELECT failures FROM federation_destinations WHERE destination = $1",
        )
        .bind(destination)
        .fetch_optional(self.pool())
        .await?
        .unwrap_or(0)
            + 1;
        let retry_at = now_ms().saturating_add(backoff(failures));
        sqlx::query(
            "INSERT INTO federation_destinations (destination, failures, retry_at) \
             VALUES ($1, $2, $3) ON CONFLICT (destination) DO UPDATE SET \
             failures = excluded.failures, retry_at = excluded.retry_at",
        )
        .bind(destination)
        .bind(failures)
        .bind(retry_at)
        .execute(self.pool())
        .await?;
        Ok(retry_at)
    }

    /// Clears a destination's backoff (it was heard from); true when it had one.
    pub async fn destination_recovered(&self, destination: &str) -> Result<bool, StoreError> {
        Ok(
            sqlx::query("DELETE FROM federation_destinations WHERE destination = $1")
                .bind(destination)
                .execute(self.pool())
                .await?
                .rows_affected()
                > 0,
        )
    }

    /// When sending to a destination may be tried again (0: now).
    pub async fn destination_retry_at(&self, destination: &str) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT retry_at FROM federation_destinations WHERE destination = $1",
        )
        .bind(destination)
        .fetch_optional(self.pool())
        .await?
        .unwrap_or(0))
    }

    /// The destinations with something queued.
    pub async fn queued_destinations(&self) -> Result<Vec<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT DISTINCT destination FROM federation_outbound")
                .fetch_all(self.pool())
                .await?,
        )
    }

    /// The servers of a room's users whose membership is one of `memberships`.
    pub async fn room_servers(
        &self,
        room_id: &str,
        memberships: &[&str],
    ) -> Result<Vec<String>, StoreError> {
        let users: Vec<(String, String)> =
            sqlx::query_as("SELECT user_id, membership FROM room_memberships WHERE room_id = $1")
                .bind(room_id)
                .fetch_all(self.pool())
                .await?;
        let mut servers: Vec<String> = users
            .into_iter()
            .filter(|(_, membership)| memberships.contains(&membership.as_str()))
            .filter_map(|(user, _)| user.split_once(':').map(|(_, server)| server.to_owned()))
            .collect();
        servers.sort();
        servers.dedup();
        Ok(servers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::both_backends;

    both_backends!(
        queue_is_ordered_per_destination,
        |store: Store| async move {
            let entries = vec![
                ("b.test".to_owned(), Outgoing::Pdu("$1".into())),
                ("c.test".to_owned(), Outgoing::Pdu("$1".into())),
                (
                    "b.test".to_owned(),
                    Outgoing::Edu("{\"edu_type\":\"m.typing\"}".into()),
                ),
                ("b.test".to_owned(), Outgoing::Pdu("$2".into())),
                ("b.test".to_owned(), Outgoing::Pdu("$3".into())),
            ];
            store.enqueue_outgoing(&entries, Some(7)).await.unwrap();
            assert_eq!(
                store.stream_cursor(FEDERATION_QUEUED).await.unwrap(),
                Some(7)
            );
            let mut destinations = store.queued_destinations().await.unwrap();
            destinations.sort();
            assert_eq!(destinations, ["b.test", "c.test"]);
            // At most two PDUs: the batch stops before the third.
            let batch = store.outgoing("b.test", 2, 100).await.unwrap();
            let kinds: Vec<&Outgoing> = batch.iter().map(|(_, entry)| entry).collect();
            assert_eq!(
                kinds,
                [
                    &Outgoing::Pdu("$1".into()),
                    &Outgoing::Edu("{\"edu_type\":\"m.typing\"}".into()),
                    &Outgoing::Pdu("$2".into())
                ]
            );
            // A failure backs off; acknowledging the batch clears it and removes only it.
            let retry_at = store
                .destination_failed("b.test", |n| n * 1000)
                .await
                .unwrap();
            assert!(retry_at > now_ms());
            assert_eq!(
                store.destination_retry_at("b.test").await.unwrap(),
                retry_at
            );
            let second = store
                .destination_failed("b.test", |n| n * 60_000)
                .await
                .unwrap();
            assert!(second > retry_at + 50_000);
            store.outgoing_sent("b.test", batch[2].0).await.unwrap();
            assert_eq!(store.destination_retry_at("b.test").await.unwrap(), 0);
            let rest = store.outgoing("b.test", 50, 100).await.unwrap();
            assert_eq!(rest.len(), 1);
            assert_eq!(rest[0].1, Outgoing::Pdu("$3".into()));
            assert_eq!(store.outgoing("c.test", 50, 100).await.unwrap().len(), 1);
            // New entries follow the old ones.
            store
                .enqueue_outgoing(&[("b.test".to_owned(), Outgoing::Pdu("$4".into()))], None)
                .await
                .unwrap();
            let rest = store.outgoing("b.test", 50, 100).await.unwrap();
            assert_eq!(rest[1].1, Outgoing::Pdu("$4".into()));
            assert!(rest[1].0 > rest[0].0);
            // Once a queue is empty, ids still never repeat.
            let last = rest[1].0;
            store.outgoing_sent("b.test", last).await.unwrap();
            store.outgoing_sent("c.test", last).await.unwrap();
            assert!(store.queued_destinations().await.unwrap().is_empty());
            store
                .enqueue_outgoing(&[("b.test".to_owned(), Outgoing::Pdu("$5".into()))], None)
                .await
                .unwrap();
            assert!(store.outgoing("b.test", 50, 100).await.unwrap()[0].0 > last);
            assert!(!store.destination_recovered("c.test").await.unwrap());
        }
    );

    both_backends!(
        transactions_answered_once_outliers_never_shown,
        |store: Store| async move {
            assert_eq!(
                store.inbound_transaction("b.test", "t1").await.unwrap(),
                None
            );
            store
                .record_inbound_transaction("b.test", "t1", "{\"pdus\":{}}")
                .await
                .unwrap();
            // The first answer stays.
            store
                .record_inbound_transaction("b.test", "t1", "other")
                .await
                .unwrap();
            assert_eq!(
                store
                    .inbound_transaction("b.test", "t1")
                    .await
                    .unwrap()
                    .as_deref(),
                Some("{\"pdus\":{}}")
            );
            assert_eq!(
                store.inbound_transaction("c.test", "t1").await.unwrap(),
                None
            );

            let outlier = |id: &str| NewOutlier {
                event_id: id.into(),
                sender: "@b:b.test".into(),
                event_type: "m.room.member".into(),
                state_key: Some("@b:b.test".into()),
                depth: 2,
                origin_server_ts: 1,
                json: "{}".into(),
                rejected_reason: None,
                redacted_by: None,
            };
            store
                .persist_outliers("!r:b.test", &[outlier("$o1"), outlier("$o2")])
                .await
                .unwrap();
            // Stored again: nothing changes.
            store
                .persist_outliers("!r:b.test", &[outlier("$o1")])
                .await
                .unwrap();
            let rows = store
                .events(&["$o1".to_owned(), "$o2".to_owned()])
                .await
                .unwrap();
            assert_eq!(rows.len(), 2);
            assert!(rows.iter().all(|row| row.stream_ordering < 0));
            assert!(
                store
                    .events_after(i64::MIN, i64::MAX, 10)
                    .await
                    .unwrap()
                    .is_empty()
            );
        }
    );
}
