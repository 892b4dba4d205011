//! Relations as clients use them: `/relations` (by type and event type, with paging and
//! `recurse`), `/threads`, and the aggregations bundled into events wherever clients read them
//! (`unsigned.m.relations`: the latest edit, the thread summary, the references), so that an
//! edited message shows edited after paging back, and a thread shows its last reply.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use ruma::api::Direction as ApiDirection;
use ruma::api::client::relations::{
    get_relating_events, get_relating_events_with_rel_type,
    get_relating_events_with_rel_type_and_event_type,
};
use ruma::api::client::threads::get_threads;
use ruma::{EventId, RoomId, UInt};
use serde_json::{Map, Value, json};

use super::events::{
    SeenRooms, client_events, client_events_bundling, ignored_users, parse_position, visible_to,
};
use crate::Services;
use crate::api::ruma_wrapper::{Ruma, Sender};
use crate::error::Error;
use crate::pdu::raw_event;
use crate::store::{Direction, EventRow, RELATION_RECURSION_DEPTH, RelationQuery};
use crate::visibility::Visible;

/// Which aggregations to bundle into events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bundle {
    /// Every aggregation: events as the timeline shows them.
    All,
    /// Only the latest edit: a thread's latest event inside a summary.
    Edits,
    /// None: an edit bundled into the event it edits.
    Nothing,
}

/// How many references a bundle lists.
const REFERENCES_BUNDLED: i64 = 100;

/// Adds `unsigned.m.relations` to the events that have aggregations: `m.replace` (the latest
/// edit by the event's sender, whole), `m.thread` (the latest reply the viewer may see, the
/// number of replies, and whether the viewer took part) and `m.reference` (the events that
/// refer to it). `events` are `rows` in the client format, in the same order.
pub async fn bundle_aggregations(
    services: &Services,
    rows: &[EventRow],
    events: &mut [Map<String, Value>],
    viewer: &Sender,
    bundle: Bundle,
) -> Result<(), Error> {
    // Redacted events and state events have no aggregations shown.
    let targets: Vec<&str> = rows
        .iter()
        .filter(|row| row.redacted_by.is_none() && row.state_key.is_none())
        .map(|row| row.event_id.as_str())
        .collect();
    if targets.is_empty() {
        return Ok(());
    }
    let rel_types: &[&str] = match bundle {
        Bundle::All => &["m.replace", "m.thread", "m.reference"],
        Bundle::Edits => &["m.replace"],
        Bundle::Nothing => &[],
    };
    let counts = services.store.relation_counts(&targets, rel_types).await?;
    if counts.is_empty() {
        return Ok(());
    }
    let mut seen = SeenRooms::default();
    let mut ignored = None;
    for (row, event) in rows.iter().zip(events.iter_mut()) {
        let Some(counts) = counts.get(&row.event_id) else {
            continue;
        };
        let mut relations = Map::new();
        if counts.contains_key("m.replace")
            && let Some(edit) = services
                .store
                .latest_replacement(&row.event_id, &row.sender)
                .await?
            && edit.room_id == row.room_id
        {
            let edit = Box::pin(client_events_bundling(
                services,
                std::slice::from_ref(&edit),
                Some(viewer),
                Bundle::Nothing,
            ))
            .await?;
            if let Some(edit) = edit.into_iter().next() {
                relations.insert("m.replace".into(), Value::Object(edit));
            }
        }
        if let Some(count) = counts.get("m.thread") {
            let visible = seen.of(services, &row.room_id, viewer).await?;
            if ignored.is_none() {
                ignored = Some(ignored_users(services, &viewer.user_id).await?);
            }
            let Some(ignored) = &ignored else {
                continue;
            };
            if let Some(summary) =
                thread_summary(services, row, *count, visible, ignored, viewer).await?
            {
                relations.insert("m.thread".into(), summary);
            }
        }
        if counts.contains_key("m.reference") {
            let visible = seen.of(services, &row.room_id, viewer).await?;
            let references = services
                .store
                .relating_events(&RelationQuery {
                    rel_type: Some("m.reference"),
                    limit: REFERENCES_BUNDLED,
                    direction: Direction::Forward,
                    ..direct_relations(row)
                })
                .await?;
            let chunk: Vec<Value> = references
                .iter()
                .filter(|reference| visible.contains(reference.stream_ordering))
                .map(|reference| json!({ "event_id": reference.event_id }))
                .collect();
            if !chunk.is_empty() {
                relations.insert("m.reference".into(), json!({ "chunk": chunk }));
            }
        }
        if relations.is_empty() {
            continue;
        }
        if let Some(Value::Object(unsigned)) = event.get_mut("unsigned") {
            unsigned.insert("m.relations".into(), Value::Object(relations));
        }
    }
    Ok(())
}

/// The direct relations of an event, every type, the whole room's history.
fn direct_relations(row: &EventRow) -> RelationQuery<'_> {
    RelationQuery {
        room_id: &row.room_id,
        target: &row.event_id,
        rel_type: None,
        event_type: None,
        sender: None,
        depth: 1,
        after: 0,
        until: i64::MAX,
        direction: Direction::Backward,
        limit: 1,
    }
}

/// A thread's summary: its latest reply the viewer may see (with its edit), how many replies
/// it has, and whether the viewer started it or replied.
async fn thread_summary(
    services: &Services,
    root: &EventRow,
    count: i64,
    visible: &Visible,
    ignored: &HashSet<String>,
    viewer: &Sender,
) -> Result<Option<Value>, Error> {
    let latest = services
        .store
        .relating_events(&RelationQuery {
            rel_type: Some("m.thread"),
            limit: 50,
            ..direct_relations(root)
        })
        .await?
        .into_iter()
        .find(|reply| visible.contains(reply.stream_ordering) && !ignored.contains(&reply.sender));
    let Some(latest) = latest else {
        return Ok(None);
    };
    let participated = root.sender == viewer.user_id.as_str()
        || !services
            .store
            .relating_events(&RelationQuery {
                rel_type: Some("m.thread"),
                sender: Some(viewer.user_id.as_str()),
                ..direct_relations(root)
            })
            .await?
            .is_empty();
    let latest = Box::pin(client_events_bundling(
        services,
        std::slice::from_ref(&latest),
        Some(viewer),
        Bundle::Edits,
    ))
    .await?;
    let Some(latest) = latest.into_iter().next() else {
        return Ok(None);
    };
    Ok(Some(json!({
        "latest_event": latest,
        "count": count,
        "current_user_participated": participated,
    })))
}

fn limit_of(limit: Option<UInt>, default: u64) -> i64 {
    let limit = limit.map_or(default, u64::from).clamp(1, 1000);
    i64::try_from(limit).unwrap_or(1)
}

/// What `/relations` asks for, in any of its three path forms.
struct RelationsRequest<'a> {
    room_id: &'a RoomId,
    event_id: &'a EventId,
    rel_type: Option<String>,
    event_type: Option<String>,
    from: Option<&'a str>,
    to: Option<&'a str>,
    dir: ApiDirection,
    limit: Option<UInt>,
    recurse: bool,
}

/// A page of `/relations`: the events, the next token, the depth followed.
struct RelationsPage {
    chunk: Vec<ruma::serde::Raw<ruma::events::AnyMessageLikeEvent>>,
    next_batch: Option<String>,
    recursion_depth: Option<UInt>,
}

async fn relations(
    services: &Services,
    sender: &Sender,
    request: RelationsRequest<'_>,
) -> Result<RelationsPage, Error> {
    let visible = visible_to(services, request.room_id, &sender.user_id).await?;
    // The parent must be an event of this room the viewer may see.
    let parent = services
        .store
        .event(request.event_id.as_str())
        .await?
        .filter(|row| {
            row.room_id == request.room_id.as_str() && visible.contains(row.stream_ordering)
        })
        .ok_or_else(|| Error::NotFound("event not found".into()))?;
    let limit = limit_of(request.limit, 50);
    let from = request.from.map(parse_position).transpose()?;
    let to = request.to.map(parse_position).transpose()?;
    let backward = request.dir == ApiDirection::Backward;
    let (after, until, direction) = if backward {
        (
            to.unwrap_or(0),
            from.unwrap_or(i64::MAX),
            Direction::Backward,
        )
    } else {
        (
            from.unwrap_or(0),
            to.unwrap_or(i64::MAX),
            Direction::Forward,
        )
    };
    let depth = if request.recurse {
        RELATION_RECURSION_DEPTH
    } else {
        1
    };
    let rows = services
        .store
        .relating_events(&RelationQuery {
            rel_type: request.rel_type.as_deref(),
            event_type: request.event_type.as_deref(),
            depth,
            after,
            until,
            direction,
            limit,
            ..direct_relations(&parent)
        })
        .await?;
    let next_batch = (rows.len() as i64 == limit)
        .then(|| rows.last())
        .flatten()
        .map(|last| {
            let position = if backward {
                last.stream_ordering - 1
            } else {
                last.stream_ordering
            };
            format!("s{position}")
        });
    let rows: Vec<EventRow> = rows
        .into_iter()
        .filter(|row| visible.contains(row.stream_ordering))
        .collect();
    let chunk = client_events(services, &rows, Some(sender))
        .await?
        .into_iter()
        .map(raw_event)
        .collect::<Result<_, _>>()?;
    Ok(RelationsPage {
        chunk,
        next_batch,
        recursion_depth: request
            .recurse
            .then(|| UInt::try_from(depth as u64).unwrap_or_default()),
    })
}

/// A `/relations` handler for one of its path forms: the relation type and event type it
/// takes from the path (if any).
macro_rules! relations_route {
    ($(#[$doc:meta])* $name:ident, $endpoint:ident, |$body:ident| ($rel_type:expr, $event_type:expr)) => {
        $(#[$doc])*
        pub async fn $name(
            services: Arc<Services>,
            request: Ruma<$endpoint::v1::Request>,
        ) -> Result<$endpoint::v1::Response, Error> {
            let sender = request.sender()?;
            let $body = &request.body;
            let page = relations(
                &services,
                sender,
                RelationsRequest {
                    room_id: &$body.room_id,
                    event_id: &$body.event_id,
                    rel_type: $rel_type,
                    event_type: $event_type,
                    from: $body.from.as_deref(),
                    to: $body.to.as_deref(),
                    dir: $body.dir,
                    limit: $body.limit,
                    recurse: $body.recurse,
                },
            )
            .await?;
            let mut response = $endpoint::v1::Response::new(page.chunk);
            response.next_batch = page.next_batch;
            response.recursion_depth = page.recursion_depth;
            Ok(response)
        }
    };
}

relations_route!(
    /// # `GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}`
    get_relating_events_route,
    get_relating_events,
    |body| (None, None)
);

relations_route!(
    /// # `GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}/{relType}`
    get_relating_events_with_rel_type_route,
    get_relating_events_with_rel_type,
    |body| (Some(body.rel_type.to_string()), None)
);

relations_route!(
    /// # `GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}/{relType}/{eventType}`
    get_relating_events_with_rel_type_and_event_type_route,
    get_relating_events_with_rel_type_and_event_type,
    |body| (
        Some(body.rel_type.to_string()),
        Some(body.event_type.to_string())
    )
);

/// # `GET /_matrix/client/v1/rooms/{roomId}/threads`: the room's thread roots the viewer may
/// see, by latest activity, each with its summary bundled.
pub async fn get_threads_route(
    services: Arc<Services>,
    request: Ruma<get_threads::v1::Request>,
) -> Result<get_threads::v1::Response, Error> {
    let sender = request.sender()?;
    let body = &request.body;
    let visible = visible_to(&services, &body.room_id, &sender.user_id).await?;
    let limit = limit_of(body.limit, 50);
    let until = body
        .from
        .as_deref()
        .map(parse_position)
        .transpose()?
        .unwrap_or(i64::MAX);
    let participant = match body.include {
        get_threads::v1::IncludeThreads::Participated => Some(sender.user_id.as_str()),
        _ => None,
    };
    let roots = services
        .store
        .thread_roots(body.room_id.as_str(), participant, until, limit)
        .await?;
    let next_batch = (roots.len() as i64 == limit)
        .then(|| roots.last())
        .flatten()
        .map(|(_, latest)| format!("s{}", latest - 1));
    let ids: Vec<String> = roots.iter().map(|(root, _)| root.clone()).collect();
    let mut rows = services.store.events(&ids).await?;
    rows.retain(|row| {
        row.room_id == body.room_id.as_str() && visible.contains(row.stream_ordering)
    });
    // Newest activity first, as the roots were listed.
    let rank: HashMap<&str, usize> = ids
        .iter()
        .enumerate()
        .map(|(rank, id)| (id.as_str(), rank))
        .collect();
    rows.sort_by_key(|row| rank.get(row.event_id.as_str()).copied());
    let chunk = client_events(&services, &rows, Some(sender))
        .await?
        .into_iter()
        .map(raw_event)
        .collect::<Result<_, _>>()?;
    let mut response = get_threads::v1::Response::new(chunk);
    response.next_batch = next_batch;
    Ok(response)
}
