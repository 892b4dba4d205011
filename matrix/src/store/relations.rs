//! Reading relations as clients ask for them: the events that relate to an event (directly or
//! through other relations), the counts that bundled aggregations report, and a room's threads
//! by latest activity. Redacted events have no relations here: redaction removes a relation
//! from the event's content.

use std::collections::HashMap;

use sqlx::{AssertSqlSafe, Row};

use super::events::{EVENT_COLUMNS, event_from_row};
use super::graph::SHOWN_E;
use super::{Direction, EventRow, Store, StoreError};

/// How deep `recurse` follows relations of relations, as Synapse does.
pub const RELATION_RECURSION_DEPTH: i64 = 3;

/// Which relating events to read.
#[derive(Debug, Clone, Copy)]
pub struct RelationQuery<'a> {
    pub room_id: &'a str,
    pub target: &'a str,
    pub rel_type: Option<&'a str>,
    pub event_type: Option<&'a str>,
    pub sender: Option<&'a str>,
    /// 1 for direct relations only; more to follow relations of relations.
    pub depth: i64,
    /// Stream positions with `after < position <= until`.
    pub after: i64,
    pub until: i64,
    pub direction: Direction,
    pub limit: i64,
}

/// The columns of `events e`, prefixed.
fn event_columns() -> String {
    EVENT_COLUMNS
        .split(", ")
        .map(|column| format!("e.{}", column.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Store {
    /// The events that relate to `query.target`, not redacted, in the direction asked.
    pub async fn relating_events(
        &self,
        query: &RelationQuery<'_>,
    ) -> Result<Vec<EventRow>, StoreError> {
        let order = match query.direction {
            Direction::Forward => "ASC",
            Direction::Backward => "DESC",
        };
        let mut conditions = String::new();
        let mut next = 7;
        for (value, condition) in [
            (query.rel_type, "r.rel_type"),
            (query.event_type, "e.event_type"),
            (query.sender, "e.sender"),
        ] {
            if value.is_some() {
                conditions.push_str(&format!(" AND {condition} = ${next}"));
                next += 1;
            }
        }
        let statement = format!(
            "WITH RECURSIVE related (event_id, depth) AS ( \
                 SELECT event_id, 1 FROM event_relations WHERE relates_to = $1 \
                 UNION \
                 SELECT r.event_id, related.depth + 1 FROM event_relations r \
                 JOIN related ON r.relates_to = related.event_id WHERE related.depth < $2 \
             ) \
             SELECT {} FROM related JOIN events e ON e.event_id = related.event_id \
             JOIN event_relations r ON r.event_id = e.event_id \
             WHERE e.room_id = $3 AND e.redacted_by IS NULL AND {SHOWN_E} \
             AND e.stream_ordering > $4 AND e.stream_ordering <= $5{conditions} \
             ORDER BY e.stream_ordering {order} LIMIT $6",
            event_columns()
        );
        let mut statement = sqlx::query(AssertSqlSafe(statement))
            .bind(query.target.to_owned())
            .bind(query.depth)
            .bind(query.room_id.to_owned())
            .bind(query.after)
            .bind(query.until)
            .bind(query.limit);
        for value in [query.rel_type, query.event_type, query.sender]
            .into_iter()
            .flatten()
        {
            statement = statement.bind(value.to_owned());
        }
        let rows = statement.fetch_all(self.pool()).await?;
        Ok(rows.iter().map(event_from_row).collect::<Result<_, _>>()?)
    }

    /// For each of `targets` that has any: how many events, not redacted, relate to it by
    /// each of `rel_types`.
    pub async fn relation_counts(
        &self,
        targets: &[&str],
        rel_types: &[&str],
    ) -> Result<HashMap<String, HashMap<String, i64>>, StoreError> {
        let mut counts: HashMap<String, HashMap<String, i64>> = HashMap::new();
        if rel_types.is_empty() {
            return Ok(counts);
        }
        for chunk in targets.chunks(200) {
            let targets: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let types: Vec<String> = (chunk.len() + 1..=chunk.len() + rel_types.len())
                .map(|i| format!("${i}"))
                .collect();
            let statement = format!(
                "SELECT r.relates_to, r.rel_type, COUNT(*) AS n FROM event_relations r \
                 JOIN events e ON e.event_id = r.event_id \
                 WHERE r.relates_to IN ({}) AND r.rel_type IN ({}) AND e.redacted_by IS NULL \
                 GROUP BY r.relates_to, r.rel_type",
                targets.join(", "),
                types.join(", ")
            );
            let mut statement = sqlx::query(AssertSqlSafe(statement));
            for value in chunk.iter().chain(rel_types) {
                statement = statement.bind(value.to_string());
            }
            for row in statement.fetch_all(self.pool()).await? {
                counts
                    .entry(row.try_get("relates_to")?)
                    .or_default()
                    .insert(row.try_get("rel_type")?, row.try_get("n")?);
            }
        }
        Ok(counts)
    }

    /// A room's threads, by their latest event (not redacted) at or before `until`, newest
    /// first: `(root event id, position of the latest event)`. With `participant`, only the
    /// threads that user started or replied in.
    pub async fn thread_roots(
        &self,
        room_id: &str,
        participant: Option<&str>,
        until: i64,
        limit: i64,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let participated = if participant.is_some() {
            " AND (r.relates_to IN (SELECT event_id FROM events WHERE room_id = $1 AND sender = $4) \
             OR r.relates_to IN (SELECT r2.relates_to FROM event_relations r2 \
             JOIN events e2 ON e2.event_id = r2.event_id WHERE r2.room_id = $1 \
             AND r2.rel_type = 'm.thread' AND e2.sender = $4 AND e2.redacted_by IS NULL))"
        } else {
            ""
        };
        let statement = format!(
            "SELECT r.relates_to, MAX(e.stream_ordering) AS latest FROM event_relations r \
             JOIN events e ON e.event_id = r.event_id \
             WHERE r.room_id = $1 AND r.rel_type = 'm.thread' AND e.redacted_by IS NULL\
             {participated} GROUP BY r.relates_to HAVING MAX(e.stream_ordering) <= $2 \
             ORDER BY latest DESC LIMIT $3"
        );
        let mut statement = sqlx::query(AssertSqlSafe(statement))
            .bind(room_id.to_owned())
            .bind(until)
            .bind(limit);
        if let Some(participant) = participant {
            statement = statement.bind(participant.to_owned());
        }
        let rows = statement.fetch_all(self.pool()).await?;
        rows.iter()
            .map(|row| Ok((row.try_get("relates_to")?, row.try_get("latest")?)))
            .collect()
    }
}
