//! The full-text index of `/search`: the words of each searchable field of an event, in
//! `event_search`, written in the transaction that stores the event and removed by its
//! redaction. A query word of three characters or more finds the words that begin with it
//! (through `term_prefix`); a shorter one finds itself only.

use sqlx::{AssertSqlSafe, Row};

use super::events::{EVENT_COLUMNS, event_from_row};
use super::graph::SHOWN_E;
use super::{EventRow, Store, StoreError};

/// The fields of an event that are searched, as `/search` names them in `keys`.
pub const SEARCH_FIELDS: [&str; 3] = ["content.body", "content.name", "content.topic"];

/// How many distinct words of one field are indexed.
const MAX_TERMS: usize = 1000;
/// How long an indexed word may be, in characters (longer ones are cut).
const MAX_TERM_CHARS: usize = 64;
/// The characters of a word's indexed beginning.
const PREFIX_CHARS: usize = 3;

/// The words of a text: runs of letters and digits, lowercased.
pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(|word| {
            word.chars()
                .take(MAX_TERM_CHARS)
                .collect::<String>()
                .to_lowercase()
        })
        .collect()
}

fn prefix(term: &str) -> String {
    term.chars().take(PREFIX_CHARS).collect()
}

/// The words of an event's searchable fields, with how often each occurs.
fn event_terms(event_json: &str) -> Vec<(&'static str, String, i64)> {
    let Ok(event) = serde_json::from_str::<serde_json::Value>(event_json) else {
        return vec![];
    };
    let mut terms = Vec::new();
    for field in SEARCH_FIELDS {
        let key = field.trim_start_matches("content.");
        let Some(text) = event["content"][key].as_str() else {
            continue;
        };
        let mut counts: std::collections::BTreeMap<String, i64> = Default::default();
        for word in words(text) {
            if counts.len() >= MAX_TERMS && !counts.contains_key(&word) {
                continue;
            }
            *counts.entry(word).or_default() += 1;
        }
        terms.extend(counts.into_iter().map(|(term, count)| (field, term, count)));
    }
    terms
}

/// What a search asks for.
#[derive(Debug, Clone)]
pub struct SearchQuery<'a> {
    pub room_ids: &'a [String],
    pub words: &'a [String],
    pub fields: &'a [&'a str],
    /// Ordered by how often the words occur (then the newest first), or by recency only.
    pub by_rank: bool,
    /// For recency order: only events before this position.
    pub before: Option<i64>,
    /// For rank order: how many results to skip.
    pub offset: i64,
    pub limit: i64,
}

/// A search result: the event and its rank.
#[derive(Debug, Clone)]
pub struct SearchHit {
    pub event: EventRow,
    pub rank: i64,
}

/// Adds an event's words to the index, in the transaction that stores it: in statements of
/// up to 16 words (an event is written while its room waits; SQLite looks bound parameters up
/// one by one, so statements of hundreds cost more than several small ones).
pub(super) async fn index_event(
    transaction: &mut sqlx::Transaction<'static, sqlx::Any>,
    event_id: &str,
    room_id: &str,
    stream_ordering: i64,
    event_json: &str,
) -> Result<(), StoreError> {
    let terms = event_terms(event_json);
    for chunk in terms.chunks(16) {
        let rows: Vec<String> = (0..chunk.len())
            .map(|i| {
                let base = 4 + i * 4;
                format!(
                    "($1, $2, $3, ${}, ${}, ${}, ${})",
                    base,
                    base + 1,
                    base + 2,
                    base + 3
                )
            })
            .collect();
        let statement = format!(
            "INSERT INTO event_search (event_id, room_id, stream_ordering, field, term, \
             term_prefix, occurrences) VALUES {} ON CONFLICT (event_id, field, term) DO NOTHING",
            rows.join(", ")
        );
        let mut query = sqlx::query(AssertSqlSafe(statement))
            .bind(event_id.to_owned())
            .bind(room_id.to_owned())
            .bind(stream_ordering);
        for (field, term, occurrences) in chunk {
            query = query
                .bind((*field).to_owned())
                .bind(term.clone())
                .bind(prefix(term))
                .bind(*occurrences);
        }
        query.execute(&mut **transaction).await?;
    }
    Ok(())
}

/// Removes an event's words from the index (it was redacted).
pub(super) async fn unindex_event(
    transaction: &mut sqlx::Transaction<'static, sqlx::Any>,
    event_id: &str,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM event_search WHERE event_id = $1")
        .bind(event_id)
        .execute(&mut **transaction)
        .await?;
    Ok(())
}

/// Escapes `LIKE`'s wildcards in a word, for a pattern with `ESCAPE '\'`.
fn like_escaped(word: &str) -> String {
    word.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

impl Store {
    /// The events with every query word, in the rooms and fields asked, and how many there
    /// are in all.
    pub async fn search(
        &self,
        query: &SearchQuery<'_>,
    ) -> Result<(Vec<SearchHit>, i64), StoreError> {
        if query.words.is_empty() || query.room_ids.is_empty() || query.fields.is_empty() {
            return Ok((vec![], 0));
        }
        let mut binds: Vec<Bind> = Vec::new();
        let mut placeholder = |value: Bind| {
            binds.push(value);
            format!("${}", binds.len())
        };
        let rooms: Vec<String> = query
            .room_ids
            .iter()
            .map(|room| placeholder(Bind::Text(room.clone())))
            .collect();
        let fields: Vec<String> = query
            .fields
            .iter()
            .map(|field| placeholder(Bind::Text((*field).to_owned())))
            .collect();
        let scope = format!(
            "room_id IN ({}) AND field IN ({})",
            rooms.join(", "),
            fields.join(", ")
        );
        let mut parts = Vec::new();
        for (index, word) in query.words.iter().enumerate() {
            let condition = if word.chars().count() >= PREFIX_CHARS {
                format!(
                    "term_prefix = {} AND term LIKE {} ESCAPE '\\'",
                    placeholder(Bind::Text(prefix(word))),
                    placeholder(Bind::Text(format!("{}%", like_escaped(word))))
                )
            } else {
                let word = placeholder(Bind::Text(word.clone()));
                format!("term_prefix = {word} AND term = {word}")
            };
            parts.push(format!(
                "SELECT event_id, stream_ordering, occurrences, {index} AS word \
                 FROM event_search WHERE {condition} AND {scope}"
            ));
        }
        let before = match query.before {
            Some(before) if !query.by_rank => {
                format!(
                    " AND MAX(s.stream_ordering) < {}",
                    placeholder(Bind::Number(before))
                )
            }
            _ => String::new(),
        };
        let matching = format!(
            "SELECT s.event_id, CAST(SUM(s.occurrences) AS BIGINT) AS hits, \
             MAX(s.stream_ordering) AS position \
             FROM ({}) s GROUP BY s.event_id HAVING COUNT(DISTINCT s.word) = {}{before}",
            parts.join(" UNION ALL "),
            query.words.len()
        );
        let bind_all = |statement: String, binds: &[Bind]| {
            let mut statement = sqlx::query(AssertSqlSafe(statement));
            for value in binds {
                statement = match value {
                    Bind::Text(text) => statement.bind(text.clone()),
                    Bind::Number(number) => statement.bind(*number),
                };
            }
            statement
        };
        let count: i64 = bind_all(format!("SELECT COUNT(*) AS n FROM ({matching}) m"), &binds)
            .fetch_one(self.pool())
            .await?
            .try_get("n")?;
        let order = if query.by_rank {
            "m.hits DESC, m.position DESC"
        } else {
            "m.position DESC"
        };
        let columns = EVENT_COLUMNS
            .split(", ")
            .map(|column| format!("e.{}", column.trim()))
            .collect::<Vec<_>>()
            .join(", ");
        let statement = format!(
            "SELECT {columns}, m.hits FROM ({matching}) m JOIN events e ON e.event_id = m.event_id \
             WHERE {SHOWN_E} AND e.redacted_by IS NULL ORDER BY {order} LIMIT {} OFFSET {}",
            query.limit.max(0),
            query.offset.max(0)
        );
        let rows = bind_all(statement, &binds).fetch_all(self.pool()).await?;
        let hits = rows
            .iter()
            .map(|row| {
                Ok(SearchHit {
                    event: event_from_row(row)?,
                    rank: row.try_get("hits")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok((hits, count))
    }

    /// Brings the search index up to the stream: indexes the events stored since it was
    /// last brought up to date, in batches, outside the transactions that store events (so
    /// that sending does not wait for it). The search endpoint calls this before it reads,
    /// so that a search sees every event stored before it; a background task calls it as
    /// events come, so that little is left to do then. Returns how many events it indexed.
    pub async fn index_pending(&self) -> Result<u64, StoreError> {
        let _one_at_a_time = self.search_indexer.lock().await;
        let stored = self.stream_cursor(INDEXED).await?;
        let mut after = match stored {
            Some(cursor) => cursor,
            // A server that indexed each event as it stored it has them all indexed.
            None if self.stream_cursor(INDEXED_INLINE).await?.is_some() => self.current_position(),
            None => 0,
        };
        let start = after;
        let until = self.current_position();
        let mut indexed = 0;
        while after < until {
            let rows = self.events_after(after, until, 500).await?;
            let Some(last) = rows.last() else {
                after = until;
                break;
            };
            let next = last.stream_ordering;
            let mut transaction = self.begin_write().await?;
            for row in rows.iter().filter(|row| row.redacted_by.is_none()) {
                index_event(
                    &mut transaction,
                    &row.event_id,
                    &row.room_id,
                    row.stream_ordering,
                    &row.json,
                )
                .await?;
                indexed += 1;
            }
            transaction.commit().await?;
            after = next;
        }
        if after != start || stored.is_none() {
            self.set_stream_cursor(INDEXED, after).await?;
        }
        Ok(indexed)
    }
}

/// The stream cursor up to which events are in the search index.
const INDEXED: &str = "search_index";
/// Set by servers that indexed events in the transaction that stored them.
const INDEXED_INLINE: &str = "search_index_backfill";

/// A value bound to a search statement.
enum Bind {
    Text(String),
    Number(i64),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_runs_of_letters_and_digits() {
        assert_eq!(
            words("Hello, World! Ünïcode 42nd re-run ½"),
            ["hello", "world", "ünïcode", "42nd", "re", "run", "½"]
        );
        assert_eq!(words(&"x".repeat(100))[0].len(), MAX_TERM_CHARS);
    }

    #[test]
    fn event_terms_count_occurrences_per_field() {
        let terms = event_terms(
            r#"{"content":{"body":"cake and more cake","name":"Cake room","topic":7}}"#,
        );
        assert!(terms.contains(&("content.body", "cake".to_owned(), 2)));
        assert!(terms.contains(&("content.name", "cake".to_owned(), 1)));
        assert!(!terms.iter().any(|(field, ..)| *field == "content.topic"));
    }
}
