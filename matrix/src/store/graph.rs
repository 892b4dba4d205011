//! The room graph: each event's `prev_events` and `auth_events` edges, read from the stored
//! event itself (the event is written once, with nothing beside it to keep in step), and the
//! state before it; and the events a room shows, which leave out outliers, soft-failed and
//! rejected events (see [`SHOWN`]).

use std::collections::HashMap;

use sqlx::Row;

use super::{Store, StoreError};

/// The condition (on `events`, unqualified) of an event a room shows: not an outlier, not
/// soft-failed, not rejected. Every reader of a room's timeline or of the event stream
/// applies it, so that such events reach no client, no XMPP user and no server as news.
pub const SHOWN: &str = "outlier = 0 AND soft_failed = 0 AND rejected_reason IS NULL";

/// The same condition on `events` read as `e`.
pub const SHOWN_E: &str = "e.outlier = 0 AND e.soft_failed = 0 AND e.rejected_reason IS NULL";

/// The edge lists of a stored event, as its JSON has them.
#[derive(serde::Deserialize)]
struct Edges {
    #[serde(default)]
    prev_events: EdgeList,
    #[serde(default)]
    auth_events: EdgeList,
}

/// Event ids, or (room versions 1 and 2) `[id, hashes]` pairs.
#[derive(serde::Deserialize, Default)]
struct EdgeList(Vec<serde_json::Value>);

impl EdgeList {
    fn ids(&self) -> Vec<String> {
        self.0
            .iter()
            .filter_map(|id| {
                id.as_str()
                    .or_else(|| id.get(0).and_then(serde_json::Value::as_str))
                    .map(str::to_owned)
            })
            .collect()
    }
}

/// A place in a room's topological order: depth, then arrival (stream position). Comparing
/// keys compares places.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TopologicalKey {
    pub depth: i64,
    pub stream: i64,
}

impl TopologicalKey {
    /// The place just before this one: what reading backwards from it reads first is before
    /// the event at this place.
    pub fn before(self) -> TopologicalKey {
        TopologicalKey {
            depth: self.depth,
            stream: self.stream - 1,
        }
    }
}

impl Store {
    /// The events that state resolution made part of a room's current state at stream
    /// positions `after < position < before` without being new there themselves.
    pub async fn resolved_state_changes(
        &self,
        room_id: &str,
        after: i64,
        before: i64,
    ) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT event_id FROM current_state_delta WHERE room_id = $1 \
             AND stream_ordering > $2 AND stream_ordering < $3",
        )
        .bind(room_id)
        .bind(after)
        .bind(before)
        .fetch_all(self.pool())
        .await?)
    }

    /// The auth edges of the events reachable from `event_ids` along `auth_events`, these
    /// included: each stored event with the events that authorise it. Read a generation of
    /// the auth chain at a time.
    pub async fn auth_graph(
        &self,
        event_ids: &[String],
    ) -> Result<HashMap<String, Vec<String>>, StoreError> {
        let mut graph: HashMap<String, Vec<String>> = HashMap::new();
        let mut frontier: Vec<String> = event_ids.to_vec();
        while !frontier.is_empty() {
            let mut next = Vec::new();
            for (event_id, (_, auth)) in self.edge_lists(&frontier).await? {
                for id in &auth {
                    if !graph.contains_key(id) && !next.contains(id) {
                        next.push(id.clone());
                    }
                }
                graph.insert(event_id, auth);
            }
            next.retain(|id| !graph.contains_key(id));
            frontier = next;
        }
        Ok(graph)
    }

    /// The `prev_events` and `auth_events` of stored events, by id.
    async fn edge_lists(
        &self,
        event_ids: &[String],
    ) -> Result<HashMap<String, (Vec<String>, Vec<String>)>, StoreError> {
        let mut lists = HashMap::new();
        for chunk in event_ids.chunks(100) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let statement = format!(
                "SELECT event_id, json FROM events WHERE event_id IN ({})",
                placeholders.join(", ")
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(statement));
            for id in chunk {
                query = query.bind(id);
            }
            for row in query.fetch_all(self.pool()).await? {
                let event_id: String = row.try_get("event_id")?;
                let json: String = row.try_get("json")?;
                let edges: Edges = serde_json::from_str(&json)
                    .map_err(|e| StoreError::Corrupt(format!("event {event_id}: {e}")))?;
                lists.insert(event_id, (edges.prev_events.ids(), edges.auth_events.ids()));
            }
        }
        Ok(lists)
    }

    /// A room's shown events in topological order from `from` (inclusive backwards,
    /// exclusive forwards) up to `bound` (exclusive backwards, inclusive forwards), at most
    /// `limit`.
    pub async fn room_events_topological(
        &self,
        room_id: &str,
        from: TopologicalKey,
        bound: Option<TopologicalKey>,
        direction: super::Direction,
        limit: i64,
    ) -> Result<Vec<super::EventRow>, StoreError> {
        let (start, end, order) = match direction {
            super::Direction::Backward => (
                "(depth < $2 OR (depth = $2 AND stream_ordering <= $3))",
                "(depth > $4 OR (depth = $4 AND stream_ordering > $5))",
                "DESC",
            ),
            super::Direction::Forward => (
                "(depth > $2 OR (depth = $2 AND stream_ordering > $3))",
                "(depth < $4 OR (depth = $4 AND stream_ordering <= $5))",
                "ASC",
            ),
        };
        let bound_key = bound.unwrap_or(match direction {
            super::Direction::Backward => TopologicalKey {
                depth: i64::MIN,
                stream: i64::MIN,
            },
            super::Direction::Forward => TopologicalKey {
                depth: i64::MAX,
                stream: i64::MAX,
            },
        });
        let statement = format!(
            "SELECT {} FROM events WHERE room_id = $1 AND {start} AND {end} AND {SHOWN} \
             ORDER BY depth {order}, stream_ordering {order} LIMIT $6",
            super::events::EVENT_COLUMNS
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(statement))
            .bind(room_id)
            .bind(from.depth)
            .bind(from.stream)
            .bind(bound_key.depth)
            .bind(bound_key.stream)
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        Ok(rows
            .iter()
            .map(super::events::event_from_row)
            .collect::<Result<_, _>>()?)
    }

    /// The place in a room's topological order that stream position `position` stands for:
    /// after every shown event that had arrived by then, even one that arrived after an event
    /// of greater depth (a late branch): the greatest depth of those events, with `position`.
    pub async fn topological_key_at(
        &self,
        room_id: &str,
        position: i64,
    ) -> Result<Option<TopologicalKey>, StoreError> {
        let statement = format!(
            "SELECT MAX(depth) AS depth FROM events WHERE room_id = $1 \
             AND stream_ordering <= $2 AND {SHOWN}"
        );
        let depth: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(statement))
            .bind(room_id)
            .bind(position)
            .fetch_one(self.pool())
            .await?;
        Ok(depth.map(|depth| TopologicalKey {
            depth,
            stream: position,
        }))
    }

    /// The events an event follows.
    pub async fn prev_events(&self, event_id: &str) -> Result<Vec<String>, StoreError> {
        let mut lists = self.edge_lists(&[event_id.to_owned()]).await?;
        let mut ids = lists
            .remove(event_id)
            .map(|(prev, _)| prev)
            .unwrap_or_default();
        ids.sort();
        Ok(ids)
    }

    /// The events that authorise an event.
    pub async fn auth_events(&self, event_id: &str) -> Result<Vec<String>, StoreError> {
        let mut lists = self.edge_lists(&[event_id.to_owned()]).await?;
        let mut ids = lists
            .remove(event_id)
            .map(|(_, auth)| auth)
            .unwrap_or_default();
        ids.sort();
        Ok(ids)
    }

    /// The state group before an event (0: the empty state).
    pub async fn state_group_before(&self, event_id: &str) -> Result<Option<i64>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT state_group_before FROM events WHERE event_id = $1")
                .bind(event_id)
                .fetch_optional(self.pool())
                .await?,
        )
    }

    /// A room's state group as of a stream position: after its last accepted event at or
    /// before it (0, the empty state, when it has none).
    pub async fn state_group_at_position(
        &self,
        room_id: &str,
        position: i64,
    ) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT state_group FROM events WHERE room_id = $1 AND stream_ordering <= $2 \
             AND outlier = 0 AND soft_failed = 0 AND rejected_reason IS NULL \
             ORDER BY stream_ordering DESC LIMIT 1",
        )
        .bind(room_id)
        .bind(position)
        .fetch_optional(self.pool())
        .await?
        .unwrap_or(0))
    }

    /// Gives the events stored before the graph was kept the state before them, once (an
    /// upgraded server). Rooms were lines then: the state before an event is the state after
    /// the room's previous one.
    pub async fn build_room_graph(&self) -> Result<u64, StoreError> {
        const DONE: &str = "room_graph_backfill";
        if self.stream_cursor(DONE).await?.is_some() {
            return Ok(0);
        }
        let until = self.current_position();
        let mut after = 0;
        let mut done = 0;
        let mut state_after: HashMap<String, i64> = HashMap::new();
        loop {
            let rows = sqlx::query(
                "SELECT stream_ordering, event_id, room_id, state_group FROM events \
                 WHERE stream_ordering > $1 AND stream_ordering <= $2 \
                 ORDER BY stream_ordering LIMIT 500",
            )
            .bind(after)
            .bind(until)
            .fetch_all(self.pool())
            .await?;
            let Some(last) = rows.last() else {
                break;
            };
            after = last.try_get("stream_ordering")?;
            let mut transaction = self.begin_write().await?;
            for row in &rows {
                let event_id: String = row.try_get("event_id")?;
                let room_id: String = row.try_get("room_id")?;
                let state_group: i64 = row.try_get("state_group")?;
                let before = state_after.insert(room_id, state_group).unwrap_or(0);
                sqlx::query("UPDATE events SET state_group_before = $1 WHERE event_id = $2")
                    .bind(before)
                    .bind(&event_id)
                    .execute(&mut *transaction)
                    .await?;
                done += 1;
            }
            transaction.commit().await?;
        }
        self.set_stream_cursor(DONE, until).await?;
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::both_backends;
    use crate::store::{Direction, NewEvent};

    fn event(id: &str, depth: i64, prev: &[&str], auth: &[&str], before: i64) -> NewEvent {
        NewEvent {
            event_id: id.to_owned(),
            room_id: "!r:x".to_owned(),
            sender: "@a:x".to_owned(),
            event_type: "m.room.message".to_owned(),
            state_key: None,
            depth,
            origin_server_ts: 0,
            json: serde_json::json!({"prev_events": prev, "auth_events": auth}).to_string(),
            prev_events: prev.iter().map(|s| (*s).to_owned()).collect(),
            state_group_before: before,
            membership: None,
            transaction: None,
            relation: None,
            redacts: None,
            redacts_later: None,
            redacted_by: None,
            standing: crate::store::Standing::Accepted,
            resolved: None,
        }
    }

    both_backends!(
        a_stream_position_stands_after_late_branches,
        |store: Store| async move {
            // $deep arrives before $late, which is of a branch of lower depth.
            let mut positions = Vec::new();
            for new in [
                event("$a", 1, &[], &[], 0),
                event("$deep", 5, &["$a"], &["$a"], 0),
                event("$late", 3, &["$a"], &["$a"], 0),
            ] {
                let mut writer = store.stream_writer().await;
                positions.push(
                    store
                        .persist_event(&mut writer, &new)
                        .await
                        .unwrap()
                        .stream_ordering,
                );
                writer.publish();
            }
            assert_eq!(
                store
                    .topological_key_at("!r:x", positions[0] - 1)
                    .await
                    .unwrap(),
                None
            );
            // After $late arrived: at the greatest depth yet, so $deep stays before it.
            let at = store
                .topological_key_at("!r:x", positions[2])
                .await
                .unwrap()
                .unwrap();
            assert_eq!((at.depth, at.stream), (5, positions[2]));
            let back = store
                .room_events_topological("!r:x", at, None, Direction::Backward, 10)
                .await
                .unwrap();
            let ids: Vec<&str> = back.iter().map(|row| row.event_id.as_str()).collect();
            assert_eq!(ids, ["$deep", "$late", "$a"]);
            // Before $late arrived: the same depth, at that position.
            let at = store
                .topological_key_at("!r:x", positions[1])
                .await
                .unwrap()
                .unwrap();
            assert_eq!((at.depth, at.stream), (5, positions[1]));
        }
    );

    both_backends!(edges_and_shown_events, |store: Store| async move {
        for new in [
            event("$a", 1, &[], &[], 0),
            event("$b", 2, &["$a"], &["$a"], 0),
            event("$c", 2, &["$a"], &["$a"], 0),
            event("$d", 3, &["$b", "$c"], &["$a"], 0),
        ] {
            let mut writer = store.stream_writer().await;
            store.persist_event(&mut writer, &new).await.unwrap();
            writer.publish();
        }
        assert_eq!(store.prev_events("$d").await.unwrap(), ["$b", "$c"]);
        assert_eq!(store.auth_events("$b").await.unwrap(), ["$a"]);
        let graph = store.auth_graph(&["$d".to_owned()]).await.unwrap();
        assert_eq!(
            graph.get("$d").map(Vec::as_slice),
            Some(&["$a".to_owned()][..])
        );
        assert_eq!(graph.get("$a").map(Vec::len), Some(0));
        assert_eq!(graph.len(), 2);
        assert_eq!(store.state_group_before("$d").await.unwrap(), Some(0));
        // Outliers, soft-failed and rejected events are in the graph, not in the timeline.
        for (id, flag) in [
            ("$b", "outlier = 1"),
            ("$c", "soft_failed = 1"),
            ("$d", "rejected_reason = 'auth'"),
        ] {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE events SET {flag} WHERE event_id = '{id}'"
            )))
            .execute(store.pool())
            .await
            .unwrap();
        }
        let ids = |rows: Vec<crate::store::EventRow>| {
            rows.into_iter().map(|row| row.event_id).collect::<Vec<_>>()
        };
        let now = store.current_position();
        assert_eq!(
            ids(store
                .room_events("!r:x", 0, now, Direction::Forward, 10)
                .await
                .unwrap()),
            ["$a"]
        );
        assert_eq!(ids(store.events_after(0, now, 10).await.unwrap()), ["$a"]);
        assert_eq!(
            store
                .last_room_event_at("!r:x", now)
                .await
                .unwrap()
                .map(|row| row.event_id),
            Some("$a".to_owned())
        );
        assert_eq!(store.prev_events("$d").await.unwrap(), ["$b", "$c"]);
    });

    both_backends!(graph_of_an_upgraded_server, |store: Store| async move {
        for new in [
            event("$a", 1, &[], &[], 0),
            event("$b", 2, &["$a"], &["$a"], 0),
        ] {
            let mut writer = store.stream_writer().await;
            store.persist_event(&mut writer, &new).await.unwrap();
            writer.publish();
        }
        // As a server from before the graph: no state before, no record of the backfill.
        sqlx::query("UPDATE events SET state_group_before = 0")
            .execute(store.pool())
            .await
            .unwrap();
        sqlx::query("UPDATE events SET state_group = 7 WHERE event_id = '$a'")
            .execute(store.pool())
            .await
            .unwrap();
        assert_eq!(store.build_room_graph().await.unwrap(), 2);
        assert_eq!(store.prev_events("$b").await.unwrap(), ["$a"]);
        assert_eq!(store.auth_events("$b").await.unwrap(), ["$a"]);
        assert_eq!(store.state_group_before("$b").await.unwrap(), Some(7));
        // Once only.
        assert_eq!(store.build_room_graph().await.unwrap(), 0);
    });
}
