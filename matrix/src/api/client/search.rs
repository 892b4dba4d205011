//! `/search`: the messages of the rooms a user is in that contain every word of a query, as
//! the user may see them, by rank or recency, with paging, context, profiles, room state and
//! groups.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use bytes::Bytes;
use ruma::api::client::filter::RoomEventFilter;
use serde_json::{Map, Value, json};

use super::events::{
    SeenRooms, client_events, client_state_events, filter_allows, joined_rooms, state_seen_at,
    stored_room_id, topological_token, visible_stretch,
};
use crate::Services;
use crate::api::Authenticated;
use crate::api::ruma_wrapper::Sender;
use crate::error::Error;
use crate::store::{Direction, EventRow, SEARCH_FIELDS, SearchQuery};
use crate::visibility::Visible;

const DEFAULT_LIMIT: u64 = 10;
const MAX_LIMIT: u64 = 100;
const DEFAULT_CONTEXT: i64 = 5;
const MAX_CONTEXT: i64 = 20;

/// What the `room_events` category asks for.
struct RoomEventsQuery {
    words: Vec<String>,
    fields: Vec<&'static str>,
    filter: RoomEventFilter,
    by_rank: bool,
    context: Option<(i64, i64, bool)>,
    include_state: bool,
    group_by: Vec<String>,
}

fn object<'a>(value: &'a Value, what: &str) -> Result<Option<&'a Map<String, Value>>, Error> {
    match value {
        Value::Null => Ok(None),
        Value::Object(object) => Ok(Some(object)),
        _ => Err(Error::BadJson(format!("`{what}` must be an object"))),
    }
}

fn context_limit(context: &Map<String, Value>, field: &str) -> Result<i64, Error> {
    match context.get(field) {
        None => Ok(DEFAULT_CONTEXT),
        Some(value) => value
            .as_i64()
            .filter(|limit| *limit >= 0)
            .map(|limit| limit.min(MAX_CONTEXT))
            .ok_or_else(|| Error::BadJson(format!("`{field}` must be a non-negative integer"))),
    }
}

fn parse_room_events(category: &Map<String, Value>) -> Result<RoomEventsQuery, Error> {
    let search_term = match category.get("search_term") {
        Some(Value::String(term)) => term,
        Some(_) => return Err(Error::BadJson("`search_term` must be a string".into())),
        None => return Err(Error::MissingParam("`search_term` is required".into())),
    };
    let fields = match category.get("keys") {
        None | Some(Value::Null) => SEARCH_FIELDS.to_vec(),
        Some(Value::Array(keys)) => keys
            .iter()
            .map(|key| {
                SEARCH_FIELDS
                    .iter()
                    .find(|field| Some(**field) == key.as_str())
                    .copied()
                    .ok_or_else(|| {
                        Error::InvalidParam(format!(
                            "`keys` may name {}, not {key}",
                            SEARCH_FIELDS.join(", ")
                        ))
                    })
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(Error::BadJson("`keys` must be an array".into())),
    };
    let filter = match category.get("filter") {
        None | Some(Value::Null) => RoomEventFilter::default(),
        Some(filter) => serde_json::from_value(filter.clone())
            .map_err(|e| Error::BadJson(format!("`filter`: {e}")))?,
    };
    let by_rank = match category.get("order_by").and_then(Value::as_str) {
        None | Some("rank") => true,
        Some("recent") => false,
        Some(other) => {
            return Err(Error::InvalidParam(format!(
                "`order_by` may be \"rank\" or \"recent\", not {other:?}"
            )));
        }
    };
    let context = match category.get("event_context") {
        None => None,
        Some(value) => object(value, "event_context")?
            .map(|context| -> Result<_, Error> {
                Ok((
                    context_limit(context, "before_limit")?,
                    context_limit(context, "after_limit")?,
                    context
                        .get("include_profile")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                ))
            })
            .transpose()?,
    };
    let include_state = category
        .get("include_state")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let mut group_by = Vec::new();
    if let Some(groupings) = category.get("groupings")
        && let Some(groupings) = object(groupings, "groupings")?
        && let Some(Value::Array(groups)) = groupings.get("group_by")
    {
        for group in groups {
            match group.get("key").and_then(Value::as_str) {
                Some(key @ ("room_id" | "sender")) => group_by.push(key.to_owned()),
                _ => {
                    return Err(Error::InvalidParam(
                        "a group's `key` is \"room_id\" or \"sender\"".into(),
                    ));
                }
            }
        }
    }
    Ok(RoomEventsQuery {
        words: crate::store::search_words(search_term),
        fields,
        filter,
        by_rank,
        context,
        include_state,
        group_by,
    })
}

/// # `POST /_matrix/client/v3/search`
pub async fn search_route(
    State(services): State<Arc<Services>>,
    Authenticated(sender): Authenticated,
    Query(params): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<Json<Value>, Error> {
    let body: Value =
        serde_json::from_slice(&body).map_err(|e| Error::NotJson(format!("request body: {e}")))?;
    let categories = body
        .get("search_categories")
        .ok_or_else(|| Error::MissingParam("`search_categories` is required".into()))?;
    let categories = object(categories, "search_categories")?;
    let mut response = Map::new();
    if let Some(category) = categories.and_then(|categories| categories.get("room_events")) {
        let category = object(category, "room_events")?
            .ok_or_else(|| Error::BadJson("`room_events` must be an object".into()))?;
        let query = parse_room_events(category)?;
        let next_batch = params.get("next_batch").map(String::as_str);
        let results = search_room_events(&services, &sender, &query, next_batch).await?;
        response.insert("room_events".into(), results);
    }
    Ok(Json(json!({ "search_categories": response })))
}

/// The rooms searched: those the user is joined to, narrowed by the filter's rooms.
async fn searched_rooms(
    services: &Services,
    sender: &Sender,
    filter: &RoomEventFilter,
) -> Result<Vec<String>, Error> {
    Ok(joined_rooms(services, &sender.user_id)
        .await?
        .into_iter()
        .filter(|room| {
            filter
                .rooms
                .as_ref()
                .is_none_or(|rooms| rooms.iter().any(|wanted| wanted.as_str() == room))
                && !filter
                    .not_rooms
                    .iter()
                    .any(|unwanted| unwanted.as_str() == room)
        })
        .collect())
}

async fn search_room_events(
    services: &Services,
    sender: &Sender,
    query: &RoomEventsQuery,
    next_batch: Option<&str>,
) -> Result<Value, Error> {
    let limit = query
        .filter
        .limit
        .map_or(DEFAULT_LIMIT, u64::from)
        .clamp(1, MAX_LIMIT) as i64;
    let (before, offset) = match next_batch {
        None => (None, 0),
        Some(token) => {
            let bad = || Error::InvalidParam(format!("invalid `next_batch` {token:?}"));
            let (kind, number) = token.split_at(token.len().min(1));
            let number = number.parse::<i64>().map_err(|_| bad())?;
            match (kind, query.by_rank) {
                ("r", true) => (None, number),
                ("s", false) => (Some(number), 0),
                _ => return Err(bad()),
            }
        }
    };
    let room_ids = searched_rooms(services, sender, &query.filter).await?;
    // Every event stored before the search is in the index.
    services.store.index_pending().await?;
    let (hits, count) = services
        .store
        .search(&SearchQuery {
            room_ids: &room_ids,
            words: &query.words,
            fields: &query.fields,
            by_rank: query.by_rank,
            before,
            offset,
            limit,
        })
        .await?;
    let next = (hits.len() as i64 == limit).then(|| match hits.last() {
        Some(last) if !query.by_rank => format!("s{}", last.event.stream_ordering),
        _ => format!("r{}", offset + limit),
    });
    // What the user may see of each room with results.
    let mut seen = SeenRooms::default();
    for hit in &hits {
        seen.of(services, &hit.event.room_id, sender).await?;
    }
    let visible_hits: Vec<_> = hits
        .iter()
        .filter(|hit| {
            seen.get(&hit.event.room_id)
                .is_some_and(|visible| visible.contains(hit.event.stream_ordering))
        })
        .collect();
    let rows: Vec<EventRow> = visible_hits.iter().map(|hit| hit.event.clone()).collect();
    let events = client_events(services, &rows, Some(sender)).await?;
    let ranks: HashMap<&str, i64> = visible_hits
        .iter()
        .map(|hit| (hit.event.event_id.as_str(), hit.rank))
        .collect();
    let mut results = Vec::new();
    let mut groups: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    let mut result_rooms = Vec::new();
    for event in events {
        if !filter_allows(&query.filter, &event) {
            continue;
        }
        let event_id = event
            .get("event_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let room_id = event
            .get("room_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let mut result = json!({
            "rank": ranks.get(event_id.as_str()).copied().unwrap_or(0),
            "result": event,
        });
        if let (Some((before_limit, after_limit, include_profile)), Some(row)) = (
            query.context,
            rows.iter().find(|row| row.event_id == event_id),
        ) && let Some(visible) = seen.get(&row.room_id)
        {
            result["context"] = context_of(
                services,
                sender,
                row,
                visible,
                (before_limit, after_limit),
                include_profile,
            )
            .await?;
        }
        for key in &query.group_by {
            let value = result["result"][key.as_str()]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let group = groups.entry(key.clone()).or_default();
            let order = group.len();
            let entry = group
                .entry(value)
                .or_insert_with(|| json!({ "results": [], "order": order }));
            if let Some(list) = entry["results"].as_array_mut() {
                list.push(json!(event_id));
            }
            if let Some(next) = &next {
                entry["next_batch"] = json!(next);
            }
        }
        if !result_rooms.contains(&room_id) {
            result_rooms.push(room_id);
        }
        results.push(result);
    }
    let mut answer = json!({
        "count": count,
        "highlights": query.words,
        "results": results,
    });
    if let Some(next) = next {
        answer["next_batch"] = json!(next);
    }
    if query.include_state {
        let mut state = Map::new();
        for room in &result_rooms {
            let room_id = stored_room_id(room)?;
            let Some(visible) = seen.get(room) else {
                continue;
            };
            let pdus = state_seen_at(services, &room_id, visible, None).await?;
            state.insert(
                room.clone(),
                Value::Array(
                    client_state_events(&pdus, &room_id)
                        .into_iter()
                        .map(Value::Object)
                        .collect(),
                ),
            );
        }
        answer["state"] = Value::Object(state);
    }
    if !groups.is_empty() {
        answer["groups"] =
            serde_json::to_value(groups).map_err(|e| Error::Internal(e.to_string()))?;
    }
    Ok(answer)
}

/// The events around a result that the user may see, the tokens around them, and (when asked)
/// the profiles of their senders.
async fn context_of(
    services: &Services,
    sender: &Sender,
    row: &EventRow,
    visible: &Visible,
    (before_limit, after_limit): (i64, i64),
    include_profile: bool,
) -> Result<Value, Error> {
    let room_id = stored_room_id(&row.room_id)?;
    let (lowest, highest) = visible_stretch(services, &room_id, visible).await?;
    let place = row.topological();
    let before = if before_limit > 0 {
        services
            .store
            .room_events_topological(
                &row.room_id,
                place.before(),
                Some(lowest),
                Direction::Backward,
                before_limit,
            )
            .await?
    } else {
        vec![]
    };
    let after = if after_limit > 0 {
        services
            .store
            .room_events_topological(
                &row.room_id,
                place,
                Some(highest),
                Direction::Forward,
                after_limit,
            )
            .await?
    } else {
        vec![]
    };
    let start = before.last().map_or(place, EventRow::topological).before();
    let end = after.last().map_or(place, EventRow::topological);
    let seen = |rows: Vec<EventRow>| -> Vec<EventRow> {
        rows.into_iter()
            .filter(|row| visible.contains(row.stream_ordering))
            .collect()
    };
    let before = client_events(services, &seen(before), Some(sender)).await?;
    let after = client_events(services, &seen(after), Some(sender)).await?;
    let mut context = json!({
        "start": topological_token(start),
        "end": topological_token(end),
        "events_before": before,
        "events_after": after,
    });
    if include_profile {
        let mut senders: Vec<String> = context["events_before"]
            .as_array()
            .into_iter()
            .chain(context["events_after"].as_array())
            .flatten()
            .filter_map(|event| event["sender"].as_str().map(str::to_owned))
            .collect();
        senders.push(row.sender.clone());
        senders.sort();
        senders.dedup();
        let mut profiles = Map::new();
        for user in senders {
            let member = services
                .rooms
                .state_event(&room_id, "m.room.member", &user)
                .await?;
            let content = member.map(|pdu| pdu.content_value()).unwrap_or_default();
            let mut profile = Map::new();
            for field in ["displayname", "avatar_url"] {
                if let Some(value) = content.get(field).filter(|value| value.is_string()) {
                    profile.insert(field.into(), value.clone());
                }
            }
            profiles.insert(user, Value::Object(profile));
        }
        context["profile_info"] = Value::Object(profiles);
    }
    Ok(context)
}
