//! Events, state groups, forward extremities and transaction ids.

use std::collections::{BTreeMap, HashMap};

use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

use super::graph::SHOWN;
use super::{Change, Store, StoreError, StreamWriter};

/// The longest chain of state-group deltas before a full snapshot is written again.
pub const MAX_STATE_CHAIN: i64 = 64;

/// `(event type, state key)`.
pub type StateKey = (String, String);
/// A full room state: `(type, state_key)` → event id.
pub type StateMap = BTreeMap<StateKey, String>;

/// An event to persist, built and authorised by the room engine.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_id: String,
    pub room_id: String,
    pub sender: String,
    pub event_type: String,
    pub state_key: Option<String>,
    pub depth: i64,
    pub origin_server_ts: i64,
    pub json: String,
    /// The events this one references, which stop being forward extremities.
    pub prev_events: Vec<String>,
    /// The state group before this event.
    pub state_group_before: i64,
    /// For a membership event: the target's new membership.
    pub membership: Option<String>,
    /// `(user, device, txn id)` for client sends.
    pub transaction: Option<(String, String, String)>,
    /// The event's `m.relates_to`, if it has a relation.
    pub relation: Option<Relation>,
    /// For a redaction: the event it redacts, with its redacted JSON, replaced in the same
    /// transaction as the redaction is stored.
    pub redacts: Option<Redacted>,
    /// For a redaction whose target is not here yet: the target, whose redaction waits for it.
    pub redacts_later: Option<String>,
    /// For an event a redaction taken earlier redacts: that redaction (`json` is then the
    /// redacted form).
    pub redacted_by: Option<String>,
    /// Whether the event takes its place in the room (see [`Standing`]).
    pub standing: Standing,
    /// The room's current state after this event when it is not simply the state after the
    /// event: the event left another fork of the room standing, and the current state is the
    /// resolution of the forks. `membership` is then ignored: memberships follow
    /// `resolved.changes`.
    pub resolved: Option<ResolvedState>,
}

/// Whether a stored event takes its place in its room.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Standing {
    /// Part of the room: a forward extremity, its state the room's, shown to clients.
    #[default]
    Accepted,
    /// Allowed by the state before it but not by the room's current state: kept in the graph,
    /// neither an extremity nor shown.
    SoftFailed,
    /// Refused by the authorization rules, with the reason: kept so that it is not fetched
    /// again, never used.
    Rejected(String),
}

/// A room's current state made by state resolution, written beforehand with
/// [`Store::write_resolved_state`].
#[derive(Debug, Clone)]
pub struct ResolvedState {
    /// The state group of the resolved state.
    pub group: i64,
    /// The entries that differ from the room's current state before the event, with the
    /// membership of member events.
    pub changes: Vec<StateChange>,
}

/// One entry of a room's current state that changed.
#[derive(Debug, Clone)]
pub struct StateChange {
    pub key: StateKey,
    pub event_id: String,
    /// For `m.room.member`: the membership the event gives.
    pub membership: Option<String>,
}

/// The redacted form of an event, to store in its place.
#[derive(Debug, Clone)]
pub struct Redacted {
    pub event_id: String,
    pub json: String,
}

/// An event's relation to another (`m.relates_to`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub rel_type: String,
    pub event_id: String,
    /// The key of an annotation (a reaction).
    pub key: Option<String>,
}

impl Relation {
    /// The relation in an event's content, if it has one with a type and a target.
    pub fn of_content(content: &serde_json::Value) -> Option<Relation> {
        let relation = content.get("m.relates_to")?;
        Some(Relation {
            rel_type: relation.get("rel_type")?.as_str()?.to_owned(),
            event_id: relation.get("event_id")?.as_str()?.to_owned(),
            key: relation
                .get("key")
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned),
        })
    }
}

/// What [`Store::persist_event`] wrote.
#[derive(Debug, Clone, Copy)]
pub struct Persisted {
    pub stream_ordering: i64,
    /// The state group after the event.
    pub state_group: i64,
    /// The room's current state group after the event; `None` when the event left it as it
    /// was (it was not accepted).
    pub current_state_group: Option<i64>,
}

/// A stored event.
#[derive(Debug, Clone)]
pub struct EventRow {
    pub stream_ordering: i64,
    pub event_id: String,
    pub room_id: String,
    pub sender: String,
    pub event_type: String,
    pub state_key: Option<String>,
    pub state_group: i64,
    pub json: String,
    pub redacted_by: Option<String>,
    /// The event's depth: its place in the room's topological order (then its stream position).
    pub depth: i64,
    /// Why the authorization rules refused the event, if they did.
    pub rejected_reason: Option<String>,
}

impl EventRow {
    /// The event's place in its room's topological order.
    pub fn topological(&self) -> super::TopologicalKey {
        super::TopologicalKey {
            depth: self.depth,
            stream: self.stream_ordering,
        }
    }
}

pub(super) const EVENT_COLUMNS: &str = "stream_ordering, event_id, room_id, sender, event_type, state_key, \
                             state_group, json, redacted_by, depth, rejected_reason";

pub(super) fn event_from_row(row: &AnyRow) -> Result<EventRow, sqlx::Error> {
    Ok(EventRow {
        stream_ordering: row.try_get("stream_ordering")?,
        event_id: row.try_get("event_id")?,
        room_id: row.try_get("room_id")?,
        sender: row.try_get("sender")?,
        event_type: row.try_get("event_type")?,
        state_key: row.try_get("state_key")?,
        state_group: row.try_get("state_group")?,
        json: row.try_get("json")?,
        redacted_by: row.try_get("redacted_by")?,
        depth: row.try_get("depth")?,
        rejected_reason: row.try_get("rejected_reason")?,
    })
}

/// Which way to read a room's timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Forward,
    Backward,
}

impl Store {
    /// Persists one event in one transaction: its state group (when it changes state), the
    /// event, the forward extremities, the membership table and the transaction id. The caller
    /// holds the stream writer; the new position becomes visible when the writer publishes.
    pub async fn persist_event(
        &self,
        writer: &mut StreamWriter<'_>,
        event: &NewEvent,
    ) -> Result<Persisted, StoreError> {
        let stream_ordering = writer.next_position();
        let mut transaction = self.begin_write().await?;
        let accepted = event.standing == Standing::Accepted;
        let state_group = match &event.state_key {
            // A soft-failed event has its place in the graph: what follows it sees its state.
            Some(state_key) if !matches!(event.standing, Standing::Rejected(_)) => {
                // The new group is numbered by the event's position, which is unique.
                write_state_group(
                    &mut transaction,
                    stream_ordering,
                    &event.room_id,
                    event.state_group_before,
                    &[(&event.event_type, state_key, &event.event_id)],
                    None,
                )
                .await?;
                stream_ordering
            }
            _ => event.state_group_before,
        };
        let current_state_group = match &event.resolved {
            Some(resolved) if accepted => resolved.group,
            _ => state_group,
        };
        let (soft_failed, rejected_reason) = match &event.standing {
            Standing::Accepted => (0_i64, None),
            Standing::SoftFailed => (1, None),
            Standing::Rejected(reason) => (0, Some(reason.as_str())),
        };
        sqlx::query(
            "INSERT INTO events (stream_ordering, event_id, room_id, sender, event_type, \
             state_key, depth, origin_server_ts, state_group, json, state_group_before, \
             soft_failed, rejected_reason, redacted_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(stream_ordering)
        .bind(&event.event_id)
        .bind(&event.room_id)
        .bind(&event.sender)
        .bind(&event.event_type)
        .bind(event.state_key.as_deref())
        .bind(event.depth)
        .bind(event.origin_server_ts)
        .bind(state_group)
        .bind(&event.json)
        .bind(event.state_group_before)
        .bind(soft_failed)
        .bind(rejected_reason)
        .bind(event.redacted_by.as_deref().filter(|_| accepted))
        .execute(&mut *transaction)
        .await?;
        if !accepted {
            // Kept in the graph and nothing more: not an extremity, no state, not shown.
            transaction.commit().await?;
            return Ok(Persisted {
                stream_ordering,
                state_group,
                current_state_group: None,
            });
        }
        for prev in &event.prev_events {
            sqlx::query(
                "DELETE FROM room_forward_extremities WHERE room_id = $1 AND event_id = $2",
            )
            .bind(&event.room_id)
            .bind(prev)
            .execute(&mut *transaction)
            .await?;
        }
        sqlx::query("INSERT INTO room_forward_extremities (room_id, event_id) VALUES ($1, $2)")
            .bind(&event.room_id)
            .bind(&event.event_id)
            .execute(&mut *transaction)
            .await?;
        if event.state_key.is_some() || event.resolved.is_some() {
            sqlx::query("UPDATE rooms SET current_state_group = $1 WHERE room_id = $2")
                .bind(current_state_group)
                .bind(&event.room_id)
                .execute(&mut *transaction)
                .await?;
        }
        // Whose membership changed.
        let mut members: Vec<&str> = Vec::new();
        match &event.resolved {
            None => {
                if let (Some(membership), Some(target)) = (&event.membership, &event.state_key) {
                    set_membership(
                        &mut transaction,
                        &event.room_id,
                        target,
                        membership,
                        &event.event_id,
                        stream_ordering,
                    )
                    .await?;
                    members.push(target);
                }
            }
            Some(resolved) => {
                for change in &resolved.changes {
                    if let (Some(membership), ("m.room.member", target)) =
                        (&change.membership, (change.key.0.as_str(), &change.key.1))
                    {
                        set_membership(
                            &mut transaction,
                            &event.room_id,
                            target,
                            membership,
                            &change.event_id,
                            stream_ordering,
                        )
                        .await?;
                        members.push(target);
                    }
                    if change.event_id != event.event_id {
                        sqlx::query(
                            "INSERT INTO current_state_delta (stream_ordering, room_id, \
                             event_type, state_key, event_id) VALUES ($1, $2, $3, $4, $5)",
                        )
                        .bind(stream_ordering)
                        .bind(&event.room_id)
                        .bind(&change.key.0)
                        .bind(&change.key.1)
                        .bind(&change.event_id)
                        .execute(&mut *transaction)
                        .await?;
                    }
                }
            }
        }
        if let Some(relation) = &event.relation {
            sqlx::query(
                "INSERT INTO event_relations (event_id, room_id, rel_type, relates_to, \
                 aggregation_key) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&event.event_id)
            .bind(&event.room_id)
            .bind(&relation.rel_type)
            .bind(&relation.event_id)
            .bind(relation.key.as_deref())
            .execute(&mut *transaction)
            .await?;
        }
        if let Some(redacted) = &event.redacts {
            // (The search index is written later, from the stored JSON: what it has of the
            // redacted event goes now, what it has not yet it will read redacted.)
            super::search::unindex_event(&mut transaction, &redacted.event_id).await?;
            // The redaction and the removal of what it redacts commit together.
            sqlx::query("UPDATE events SET json = $1, redacted_by = $2 WHERE event_id = $3")
                .bind(&redacted.json)
                .bind(&event.event_id)
                .bind(&redacted.event_id)
                .execute(&mut *transaction)
                .await?;
        }
        if let Some(target) = &event.redacts_later {
            sqlx::query(
                "INSERT INTO pending_redactions (target_event_id, redaction_event_id, room_id) \
                 VALUES ($1, $2, $3) ON CONFLICT (target_event_id, redaction_event_id) DO NOTHING",
            )
            .bind(target)
            .bind(&event.event_id)
            .bind(&event.room_id)
            .execute(&mut *transaction)
            .await?;
        }
        if event.redacted_by.is_some() {
            sqlx::query("DELETE FROM pending_redactions WHERE target_event_id = $1")
                .bind(&event.event_id)
                .execute(&mut *transaction)
                .await?;
        }
        if let Some((user_id, device_id, txn_id)) = &event.transaction {
            sqlx::query(
                "INSERT INTO event_transactions (user_id, device_id, txn_id, event_id) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(user_id)
            .bind(device_id)
            .bind(txn_id)
            .bind(&event.event_id)
            .execute(&mut *transaction)
            .await?;
        }
        transaction.commit().await?;
        self.changes.record(
            Change::ReadPosition(event.room_id.clone(), event.sender.clone()),
            stream_ordering,
        );
        self.changes
            .record(Change::Room(event.room_id.clone()), stream_ordering);
        if !members.is_empty() {
            self.changes
                .record(Change::Members(event.room_id.clone()), stream_ordering);
        }
        for member in members {
            self.changes
                .record(Change::Membership(member.to_owned()), stream_ordering);
        }
        if event.resolved.is_some() {
            self.changes.record(
                Change::ResolvedState(event.room_id.clone()),
                stream_ordering,
            );
        }
        Ok(Persisted {
            stream_ordering,
            state_group,
            current_state_group: Some(current_state_group),
        })
    }

    /// Writes a state made by state resolution as a new state group of a room: as changes to
    /// `base` (a group whose state it extends) when given, else whole. Groups written so are
    /// numbered downwards from -1 (events' groups are numbered by their stream positions).
    pub async fn write_resolved_state(
        &self,
        room_id: &str,
        state: &StateMap,
        base: Option<(i64, &[StateChange])>,
    ) -> Result<i64, StoreError> {
        let group = self.allocate_state_group();
        let mut transaction = self.begin_write().await?;
        match base {
            Some((base, changes)) => {
                let entries: Vec<(&String, &String, &String)> = changes
                    .iter()
                    .map(|change| (&change.key.0, &change.key.1, &change.event_id))
                    .collect();
                write_state_group(&mut transaction, group, room_id, base, &entries, None).await?;
            }
            None => {
                write_state_group(&mut transaction, group, room_id, 0, &[], Some(state)).await?;
            }
        }
        transaction.commit().await?;
        Ok(group)
    }

    /// The full state of a state group.
    pub async fn state_group(&self, state_group: i64) -> Result<StateMap, StoreError> {
        if state_group == 0 {
            return Ok(StateMap::new());
        }
        let mut connection = self.pool().acquire().await?;
        load_state_group(&mut connection, state_group).await
    }

    pub async fn event(&self, event_id: &str) -> Result<Option<EventRow>, StoreError> {
        let query = format!("SELECT {EVENT_COLUMNS} FROM events WHERE event_id = $1");
        let row = sqlx::query(AssertSqlSafe(query))
            .bind(event_id)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.as_ref().map(event_from_row).transpose()?)
    }

    /// Several events by id; the ones not found are left out.
    pub async fn events(&self, event_ids: &[String]) -> Result<Vec<EventRow>, StoreError> {
        let mut rows = Vec::with_capacity(event_ids.len());
        for chunk in event_ids.chunks(200) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let query = format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE event_id IN ({}) \
                 ORDER BY stream_ordering",
                placeholders.join(", ")
            );
            let mut statement = sqlx::query(AssertSqlSafe(query));
            for id in chunk {
                statement = statement.bind(id);
            }
            for row in statement.fetch_all(self.pool()).await? {
                rows.push(event_from_row(&row)?);
            }
        }
        Ok(rows)
    }

    /// Events of a room with `after < stream_ordering <= until`, in the given direction (the
    /// backward direction starts at `until`), at most `limit`.
    pub async fn room_events(
        &self,
        room_id: &str,
        after: i64,
        until: i64,
        direction: Direction,
        limit: i64,
    ) -> Result<Vec<EventRow>, StoreError> {
        let order = match direction {
            Direction::Forward => "ASC",
            Direction::Backward => "DESC",
        };
        let query = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE room_id = $1 AND stream_ordering > $2 \
             AND stream_ordering <= $3 AND {SHOWN} ORDER BY stream_ordering {order} LIMIT $4"
        );
        let rows = sqlx::query(AssertSqlSafe(query))
            .bind(room_id)
            .bind(after)
            .bind(until)
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        Ok(rows.iter().map(event_from_row).collect::<Result<_, _>>()?)
    }

    /// The shown events of some rooms before stream position `before`, newest first, at most
    /// `limit`.
    pub async fn events_before_in_rooms(
        &self,
        room_ids: &[String],
        before: i64,
        limit: i64,
    ) -> Result<Vec<EventRow>, StoreError> {
        let mut rows = Vec::new();
        for chunk in room_ids.chunks(100) {
            let placeholders: Vec<String> = (3..chunk.len() + 3).map(|i| format!("${i}")).collect();
            let query = format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE stream_ordering < $1 AND {SHOWN} \
                 AND room_id IN ({}) ORDER BY stream_ordering DESC LIMIT $2",
                placeholders.join(", ")
            );
            let mut statement = sqlx::query(AssertSqlSafe(query)).bind(before).bind(limit);
            for room_id in chunk {
                statement = statement.bind(room_id);
            }
            for row in statement.fetch_all(self.pool()).await? {
                rows.push(event_from_row(&row)?);
            }
        }
        rows.sort_by_key(|row| std::cmp::Reverse(row.stream_ordering));
        rows.truncate(usize::try_from(limit).unwrap_or(0));
        Ok(rows)
    }

    /// Events of every room with `after < stream_ordering <= until`, in stream order, at most
    /// `limit`.
    pub async fn events_after(
        &self,
        after: i64,
        until: i64,
        limit: i64,
    ) -> Result<Vec<EventRow>, StoreError> {
        let query = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE stream_ordering > $1 \
             AND stream_ordering <= $2 AND {SHOWN} ORDER BY stream_ordering LIMIT $3"
        );
        let rows = sqlx::query(AssertSqlSafe(query))
            .bind(after)
            .bind(until)
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        Ok(rows.iter().map(event_from_row).collect::<Result<_, _>>()?)
    }

    /// The annotations (reactions) a user made to an event and has not redacted:
    /// `(key, reaction event id)`, oldest first.
    pub async fn annotations_by(
        &self,
        target: &str,
        sender: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT r.aggregation_key, r.event_id FROM event_relations r \
             JOIN events e ON e.event_id = r.event_id \
             WHERE r.relates_to = $1 AND r.rel_type = 'm.annotation' AND e.sender = $2 \
             AND e.redacted_by IS NULL AND r.aggregation_key IS NOT NULL \
             ORDER BY e.stream_ordering",
        )
        .bind(target)
        .bind(sender)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("aggregation_key")?, row.try_get("event_id")?)))
            .collect()
    }

    /// The last replacement (edit) of an event by its sender, not redacted.
    pub async fn latest_replacement(
        &self,
        target: &str,
        sender: &str,
    ) -> Result<Option<EventRow>, StoreError> {
        let query = format!(
            "SELECT {} FROM events e JOIN event_relations r ON r.event_id = e.event_id \
             WHERE r.relates_to = $1 AND r.rel_type = 'm.replace' AND e.sender = $2 \
             AND e.redacted_by IS NULL ORDER BY e.stream_ordering DESC LIMIT 1",
            EVENT_COLUMNS
                .split(", ")
                .map(|column| format!("e.{}", column.trim()))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let row = sqlx::query(AssertSqlSafe(query))
            .bind(target)
            .bind(sender)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.as_ref().map(event_from_row).transpose()?)
    }

    /// The relation of an event, kept also after it was redacted.
    pub async fn relation(&self, event_id: &str) -> Result<Option<Relation>, StoreError> {
        let row = sqlx::query(
            "SELECT rel_type, relates_to, aggregation_key FROM event_relations WHERE event_id = $1",
        )
        .bind(event_id)
        .fetch_optional(self.pool())
        .await?;
        row.map(|row| -> Result<Relation, StoreError> {
            Ok(Relation {
                rel_type: row.try_get("rel_type")?,
                event_id: row.try_get("relates_to")?,
                key: row.try_get("aggregation_key")?,
            })
        })
        .transpose()
    }

    /// The last event of a room at or before a position.
    pub async fn last_room_event_at(
        &self,
        room_id: &str,
        position: i64,
    ) -> Result<Option<EventRow>, StoreError> {
        Ok(self
            .room_events(room_id, 0, position, Direction::Backward, 1)
            .await?
            .pop())
    }

    /// Replaces an event's JSON by its redacted form.
    pub async fn forward_extremities(&self, room_id: &str) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT event_id FROM room_forward_extremities WHERE room_id = $1 ORDER BY event_id",
        )
        .bind(room_id)
        .fetch_all(self.pool())
        .await?)
    }

    /// The depth of the deepest event of a room.
    /// The greatest depth of a room's forward extremities: what the next event builds on.
    /// (Not of all its events: an event off the room's current edge, such as an outlier,
    /// says nothing about the depth of the next one.)
    pub async fn extremities_depth(&self, room_id: &str) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT COALESCE(MAX(e.depth), 0) FROM room_forward_extremities f \
             JOIN events e ON e.event_id = f.event_id WHERE f.room_id = $1",
        )
        .bind(room_id)
        .fetch_one(self.pool())
        .await?)
    }

    pub async fn transaction_event(
        &self,
        user_id: &str,
        device_id: &str,
        txn_id: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT event_id FROM event_transactions WHERE user_id = $1 AND device_id = $2 \
             AND txn_id = $3",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(txn_id)
        .fetch_optional(self.pool())
        .await?)
    }

    /// Transaction ids of events sent by one device, for `unsigned.transaction_id`.
    pub async fn transaction_ids(
        &self,
        user_id: &str,
        device_id: &str,
        event_ids: &[&str],
    ) -> Result<HashMap<String, String>, StoreError> {
        let mut map = HashMap::new();
        if event_ids.is_empty() {
            return Ok(map);
        }
        for chunk in event_ids.chunks(200) {
            let placeholders: Vec<String> = (3..chunk.len() + 3).map(|i| format!("${i}")).collect();
            let query = format!(
                "SELECT event_id, txn_id FROM event_transactions WHERE user_id = $1 AND \
                 device_id = $2 AND event_id IN ({})",
                placeholders.join(", ")
            );
            let mut statement = sqlx::query(AssertSqlSafe(query))
                .bind(user_id)
                .bind(device_id);
            for id in chunk {
                statement = statement.bind(*id);
            }
            for row in statement.fetch_all(self.pool()).await? {
                map.insert(row.try_get("event_id")?, row.try_get("txn_id")?);
            }
        }
        Ok(map)
    }
}

impl Store {
    /// The events of a room's timeline nearest `ts` (sent at or after it when `forward`, at or
    /// before it otherwise), nearest first, at most `limit`.
    pub async fn events_near_ts(
        &self,
        room_id: &str,
        ts: i64,
        forward: bool,
        limit: i64,
    ) -> Result<Vec<EventRow>, StoreError> {
        let statement = if forward {
            "origin_server_ts >= $2 ORDER BY origin_server_ts ASC, stream_ordering ASC"
        } else {
            "origin_server_ts <= $2 ORDER BY origin_server_ts DESC, stream_ordering DESC"
        };
        let statement = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE room_id = $1 AND outlier = 0 \
             AND soft_failed = 0 AND rejected_reason IS NULL AND {statement} LIMIT $3"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(statement))
            .bind(room_id)
            .bind(ts)
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        Ok(rows
            .iter()
            .map(event_from_row)
            .collect::<Result<Vec<_>, _>>()?)
    }

    /// The redactions taken, in `room_id`, before their target `event_id` arrived.
    pub async fn pending_redactions(
        &self,
        room_id: &str,
        event_id: &str,
    ) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT redaction_event_id FROM pending_redactions \
             WHERE target_event_id = $1 AND room_id = $2 ORDER BY redaction_event_id",
        )
        .bind(event_id)
        .bind(room_id)
        .fetch_all(self.pool())
        .await?)
    }
}

/// Sets a user's current membership in a room.
pub(super) async fn set_membership(
    connection: &mut sqlx::AnyConnection,
    room_id: &str,
    user_id: &str,
    membership: &str,
    event_id: &str,
    stream_ordering: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO room_memberships (room_id, user_id, membership, event_id, \
         stream_ordering, forgotten) VALUES ($1, $2, $3, $4, $5, 0) \
         ON CONFLICT (room_id, user_id) DO UPDATE SET membership = excluded.membership, \
         event_id = excluded.event_id, stream_ordering = excluded.stream_ordering, \
         forgotten = 0",
    )
    .bind(room_id)
    .bind(user_id)
    .bind(membership)
    .bind(event_id)
    .bind(stream_ordering)
    .execute(&mut *connection)
    .await?;
    super::device_lists::membership_changed(connection, room_id, user_id, membership).await
}

/// Writes state group `group`: the state of `base` (0: empty) with `entries` replaced or
/// added, as a delta on `base` while the chain of deltas stays short, else whole; or, with
/// `whole`, exactly that state.
async fn write_state_group(
    transaction: &mut sqlx::Transaction<'static, sqlx::Any>,
    group: i64,
    room_id: &str,
    base: i64,
    entries: &[(&String, &String, &String)],
    whole: Option<&StateMap>,
) -> Result<(), StoreError> {
    let base_chain: Option<i64> = if base == 0 || whole.is_some() {
        None
    } else {
        let row = sqlx::query("SELECT chain_length FROM state_groups WHERE state_group = $1")
            .bind(base)
            .fetch_optional(&mut **transaction)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("state group {base} is missing")))?;
        Some(row.try_get("chain_length")?)
    };
    match base_chain.map(|length| length + 1) {
        Some(chain_length) if chain_length <= MAX_STATE_CHAIN => {
            sqlx::query(
                "INSERT INTO state_groups (state_group, room_id, prev_group, chain_length) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(group)
            .bind(room_id)
            .bind(base)
            .bind(chain_length)
            .execute(&mut **transaction)
            .await?;
            for (event_type, state_key, event_id) in entries {
                insert_state_entry(transaction, group, event_type, state_key, event_id).await?;
            }
        }
        _ => {
            // A new chain starts with a full snapshot.
            let mut full = match whole {
                Some(whole) => whole.clone(),
                None if base == 0 => StateMap::new(),
                None => load_state_group(transaction, base).await?,
            };
            for (event_type, state_key, event_id) in entries {
                full.insert(
                    ((*event_type).clone(), (*state_key).clone()),
                    (*event_id).clone(),
                );
            }
            sqlx::query(
                "INSERT INTO state_groups (state_group, room_id, prev_group, chain_length) \
                 VALUES ($1, $2, NULL, 0)",
            )
            .bind(group)
            .bind(room_id)
            .execute(&mut **transaction)
            .await?;
            for ((event_type, state_key), event_id) in &full {
                insert_state_entry(transaction, group, event_type, state_key, event_id).await?;
            }
        }
    }
    Ok(())
}

async fn insert_state_entry(
    connection: &mut sqlx::AnyConnection,
    state_group: i64,
    event_type: &str,
    state_key: &str,
    event_id: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO state_group_entries (state_group, event_type, state_key, event_id) \
         VALUES ($1, $2, $3, $4)",
    )
    .bind(state_group)
    .bind(event_type)
    .bind(state_key)
    .bind(event_id)
    .execute(connection)
    .await?;
    Ok(())
}

async fn load_state_group(
    connection: &mut sqlx::AnyConnection,
    state_group: i64,
) -> Result<StateMap, StoreError> {
    // Walk the chain up to its full snapshot, then apply the deltas from the oldest.
    let mut chain = Vec::new();
    let mut current = Some(state_group);
    while let Some(group) = current {
        if chain.len() as i64 > MAX_STATE_CHAIN + 1 {
            return Err(StoreError::Corrupt(format!(
                "state group chain from {state_group} is too long"
            )));
        }
        chain.push(group);
        current = sqlx::query_scalar::<_, Option<i64>>(
            "SELECT prev_group FROM state_groups WHERE state_group = $1",
        )
        .bind(group)
        .fetch_optional(&mut *connection)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("state group {group} is missing")))?;
    }
    let placeholders: Vec<String> = (1..=chain.len()).map(|i| format!("${i}")).collect();
    let query = format!(
        "SELECT state_group, event_type, state_key, event_id FROM state_group_entries \
         WHERE state_group IN ({})",
        placeholders.join(", ")
    );
    let mut statement = sqlx::query(AssertSqlSafe(query));
    for group in &chain {
        statement = statement.bind(*group);
    }
    let rows = statement.fetch_all(&mut *connection).await?;
    let mut by_group: HashMap<i64, Vec<(String, String, String)>> = HashMap::new();
    for row in rows {
        by_group
            .entry(row.try_get("state_group")?)
            .or_default()
            .push((
                row.try_get("event_type")?,
                row.try_get("state_key")?,
                row.try_get("event_id")?,
            ));
    }
    let mut state = StateMap::new();
    for group in chain.iter().rev() {
        for (event_type, state_key, event_id) in by_group.remove(group).unwrap_or_default() {
            state.insert((event_type, state_key), event_id);
        }
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::both_backends;

    fn event(id: &str, state_key: Option<&str>, before: i64, prev: &[&str]) -> NewEvent {
        NewEvent {
            event_id: id.to_owned(),
            room_id: "!r:x".to_owned(),
            sender: "@a:x".to_owned(),
            event_type: if state_key.is_some() {
                "m.room.member".to_owned()
            } else {
                "m.room.message".to_owned()
            },
            state_key: state_key.map(str::to_owned),
            depth: 1,
            origin_server_ts: 0,
            json: "{}".to_owned(),
            prev_events: prev.iter().map(|s| (*s).to_owned()).collect(),
            state_group_before: before,
            membership: state_key.map(|_| "join".to_owned()),
            transaction: None,
            relation: None,
            redacts: None,
            redacts_later: None,
            redacted_by: None,
            standing: Standing::Accepted,
            resolved: None,
        }
    }

    both_backends!(state_groups_share_and_chain, |store: Store| async move {
        let mut writer = store.stream_writer().await;
        let first = store
            .persist_event(&mut writer, &event("$1", Some("@a:x"), 0, &[]))
            .await
            .unwrap();
        let message = store
            .persist_event(&mut writer, &event("$2", None, first.state_group, &["$1"]))
            .await
            .unwrap();
        // A message shares the state group of the event before it.
        assert_eq!(message.state_group, first.state_group);
        let mut group = first.state_group;
        let mut prev = "$2".to_owned();
        // Enough state changes to cut the chain at least once.
        for i in 0..(MAX_STATE_CHAIN * 2 + 3) {
            let id = format!("$s{i}");
            let key = format!("@u{i}:x");
            let persisted = store
                .persist_event(&mut writer, &event(&id, Some(&key), group, &[&prev]))
                .await
                .unwrap();
            group = persisted.state_group;
            prev = id;
        }
        writer.publish();
        let state = store.state_group(group).await.unwrap();
        assert_eq!(state.len() as i64, MAX_STATE_CHAIN * 2 + 4);
        assert_eq!(
            state.get(&("m.room.member".to_owned(), "@a:x".to_owned())),
            Some(&"$1".to_owned())
        );
        // Older groups still answer their own state.
        assert_eq!(store.state_group(first.state_group).await.unwrap().len(), 1);
        assert_eq!(store.forward_extremities("!r:x").await.unwrap(), vec![prev]);
        assert_eq!(
            store.current_position(),
            store.max_stream_position().await.unwrap()
        );
        let backward = store
            .room_events("!r:x", 0, i64::MAX, Direction::Backward, 2)
            .await
            .unwrap();
        assert_eq!(backward.len(), 2);
        assert!(backward[0].stream_ordering > backward[1].stream_ordering);
    });

    both_backends!(events_near_a_time, |store: Store| async move {
        let mut writer = store.stream_writer().await;
        for (id, ts, standing) in [
            ("$early", 100, Standing::Accepted),
            ("$soft", 150, Standing::SoftFailed),
            ("$middle", 200, Standing::Accepted),
            ("$late", 300, Standing::Accepted),
        ] {
            let new = NewEvent {
                origin_server_ts: ts,
                standing,
                ..event(id, None, 0, &[])
            };
            store.persist_event(&mut writer, &new).await.unwrap();
        }
        writer.publish();
        let ids = |rows: Vec<EventRow>| -> Vec<String> {
            rows.into_iter().map(|row| row.event_id).collect()
        };
        assert_eq!(
            ids(store.events_near_ts("!r:x", 120, true, 5).await.unwrap()),
            ["$middle", "$late"]
        );
        assert_eq!(
            ids(store.events_near_ts("!r:x", 200, false, 1).await.unwrap()),
            ["$middle"]
        );
        assert_eq!(
            ids(store.events_near_ts("!r:x", 199, false, 5).await.unwrap()),
            ["$early"]
        );
        assert!(
            store
                .events_near_ts("!r:x", 301, true, 5)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            store
                .events_near_ts("!other:x", 0, true, 5)
                .await
                .unwrap()
                .is_empty()
        );
    });

    both_backends!(transactions_are_unique, |store: Store| async move {
        let mut writer = store.stream_writer().await;
        let mut first = event("$t1", None, 0, &[]);
        first.transaction = Some(("@a:x".into(), "D".into(), "txn".into()));
        store.persist_event(&mut writer, &first).await.unwrap();
        let mut again = event("$t2", None, 0, &[]);
        again.transaction = first.transaction.clone();
        assert!(store.persist_event(&mut writer, &again).await.is_err());
        writer.publish();
        // The failed write left nothing behind.
        assert!(store.event("$t2").await.unwrap().is_none());
        assert_eq!(
            store
                .transaction_event("@a:x", "D", "txn")
                .await
                .unwrap()
                .as_deref(),
            Some("$t1")
        );
        let ids = store.transaction_ids("@a:x", "D", &["$t1"]).await.unwrap();
        assert_eq!(ids.get("$t1").map(String::as_str), Some("txn"));
    });

    both_backends!(
        events_across_rooms_and_relations,
        |store: Store| async move {
            let mut writer = store.stream_writer().await;
            let mut positions = Vec::new();
            for (id, room, sender, key) in [
                ("$a", "!r:x", "@a:x", Some("👍")),
                ("$b", "!s:x", "@a:x", None),
                ("$c", "!r:x", "@b:x", Some("👍")),
                ("$d", "!r:x", "@a:x", Some("🎉")),
                ("$e", "!r:x", "@a:x", Some("😀")),
            ] {
                let mut new = event(id, None, 0, &[]);
                new.room_id = room.into();
                new.sender = sender.into();
                new.relation = key.map(|key| Relation {
                    rel_type: "m.annotation".into(),
                    event_id: "$target".into(),
                    key: Some(key.into()),
                });
                let persisted = store.persist_event(&mut writer, &new).await.unwrap();
                positions.push(persisted.stream_ordering);
            }
            // A redaction of $e, stored with $e's redacted form in one transaction.
            let mut redaction = event("$redaction", None, 0, &[]);
            redaction.room_id = "!r:x".into();
            redaction.redacts = Some(Redacted {
                event_id: "$e".into(),
                json: "{}".into(),
            });
            store.persist_event(&mut writer, &redaction).await.unwrap();
            writer.publish();
            let redacted = store.event("$e").await.unwrap().unwrap();
            assert_eq!(
                (redacted.json.as_str(), redacted.redacted_by.as_deref()),
                ("{}", Some("$redaction"))
            );
            let ids =
                |rows: Vec<EventRow>| rows.into_iter().map(|r| r.event_id).collect::<Vec<_>>();
            // Every room, in stream order, from a position on and up to a limit.
            assert_eq!(
                ids(store
                    .events_after(positions[0], i64::MAX, 10)
                    .await
                    .unwrap()),
                ["$b", "$c", "$d", "$e", "$redaction"]
            );
            assert_eq!(
                ids(store.events_after(0, positions[2], 2).await.unwrap()),
                ["$a", "$b"]
            );
            // One sender's reactions, redacted ones left out.
            assert_eq!(
                store.annotations_by("$target", "@a:x").await.unwrap(),
                [
                    ("👍".to_owned(), "$a".to_owned()),
                    ("🎉".to_owned(), "$d".to_owned())
                ]
            );
            assert!(
                store
                    .annotations_by("$other", "@a:x")
                    .await
                    .unwrap()
                    .is_empty()
            );
            // The relation outlives the redaction.
            assert_eq!(
                store.relation("$e").await.unwrap(),
                Some(Relation {
                    rel_type: "m.annotation".into(),
                    event_id: "$target".into(),
                    key: Some("😀".into()),
                })
            );
            assert_eq!(store.relation("$b").await.unwrap(), None);

            // The last edit of an event by its sender.
            let mut writer = store.stream_writer().await;
            for (id, sender) in [("$edit1", "@a:x"), ("$edit2", "@a:x"), ("$edit3", "@b:x")] {
                let mut new = event(id, None, 0, &[]);
                new.sender = sender.into();
                new.relation = Some(Relation {
                    rel_type: "m.replace".into(),
                    event_id: "$original".into(),
                    key: None,
                });
                store.persist_event(&mut writer, &new).await.unwrap();
            }
            writer.publish();
            let latest = |sender: &'static str| {
                let store = store.clone();
                async move {
                    store
                        .latest_replacement("$original", sender)
                        .await
                        .unwrap()
                        .map(|row| row.event_id)
                }
            };
            assert_eq!(latest("@a:x").await.as_deref(), Some("$edit2"));
            assert_eq!(latest("@c:x").await, None);
        }
    );
}
