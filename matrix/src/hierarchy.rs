//! Spaces: the rooms a space holds (its `m.space.child` state), walked breadth first for a
//! local client (`GET /_matrix/client/v1/rooms/{roomId}/hierarchy`) and answered one level at a
//! time for other servers (`GET /_matrix/federation/v1/hierarchy/{roomId}`). Rooms this server
//! has no copy of are asked of the servers their parent names (`via`). A room is shown to whom
//! may see or join it: its members and invitees, anyone when it is public, open to knocks or
//! world-readable, and the members of the rooms a restricted room allows.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use ruma::{OwnedRoomId, OwnedServerName, RoomId, ServerName, UserId};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Services;
use crate::api::Authenticated;
use crate::error::Error;
use crate::federation::server::Federated;

/// The most rooms a page holds, and a page holds when the client names no limit.
const MAX_LIMIT: usize = 50;
/// How deep a walk goes when the client names no depth.
const MAX_DEPTH: usize = 20;
/// The most rooms one walk asks other servers about (a space may name any number of rooms of
/// any servers), and the most servers asked about one room.
const MAX_REMOTE_ROOMS: usize = 50;
const MAX_VIA: usize = 3;

/// A room as a space's hierarchy shows it, with its children as its state names them.
#[derive(Debug, Clone)]
struct Summary {
    /// The room's summary: name, topic, members, join rule, `children_state`.
    json: Value,
    /// The rooms of restricted rooms' `allow` (for the asker to check).
    allowed: Vec<OwnedRoomId>,
}

/// A child as its parent's `m.space.child` event names it.
#[derive(Debug, Clone)]
struct Child {
    room_id: OwnedRoomId,
    via: Vec<OwnedServerName>,
    suggested: bool,
}

impl Summary {
    fn children(&self) -> Vec<Child> {
        let mut children: Vec<(String, i64, Child)> = self.json["children_state"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|event| {
                let room_id = RoomId::parse(event["state_key"].as_str()?).ok()?;
                let content = &event["content"];
                let via: Vec<OwnedServerName> = content["via"]
                    .as_array()?
                    .iter()
                    .filter_map(Value::as_str)
                    .filter_map(|server| ServerName::parse(server).ok())
                    .collect();
                if via.is_empty() {
                    return None;
                }
                // `order`: printable ASCII of at most 50 characters, else none.
                let order = content["order"]
                    .as_str()
                    .filter(|order| {
                        order.len() <= 50 && order.chars().all(|c| ('\x20'..='\x7e').contains(&c))
                    })
                    .map(|order| format!("0{order}"))
                    .unwrap_or_else(|| "1".to_owned());
                let suggested = content["suggested"].as_bool() == Some(true);
                let ts = event["origin_server_ts"].as_i64().unwrap_or(0);
                Some((
                    order,
                    ts,
                    Child {
                        room_id,
                        via,
                        suggested,
                    },
                ))
            })
            .collect();
        children.sort_by(|a, b| {
            (a.0.as_str(), a.1, a.2.room_id.as_str()).cmp(&(
                b.0.as_str(),
                b.1,
                b.2.room_id.as_str(),
            ))
        });
        children.into_iter().map(|(_, _, child)| child).collect()
    }
}

/// The summary of a room this server has a copy of (`None`: it has none).
async fn local_summary(services: &Services, room_id: &RoomId) -> Result<Option<Summary>, Error> {
    if !services.rooms.exists(room_id).await? {
        return Ok(None);
    }
    let state = services.rooms.current_state(room_id).await?;
    let content = |kind: &str| {
        state
            .iter()
            .find(|pdu| pdu.event_type.to_string() == kind && pdu.state_key.as_deref() == Some(""))
            .map(|pdu| pdu.content_value())
    };
    let field = |kind: &str, key: &str| {
        content(kind)
            .and_then(|content| content.get(key).and_then(Value::as_str).map(str::to_owned))
    };
    let joined = services
        .store
        .room_members(room_id.as_str(), "join")
        .await?
        .len();
    let join_rule = field("m.room.join_rules", "join_rule").unwrap_or_else(|| "invite".into());
    let mut json = json!({
        "room_id": room_id,
        "num_joined_members": joined,
        "join_rule": join_rule,
        "world_readable": field("m.room.history_visibility", "history_visibility").as_deref()
            == Some("world_readable"),
        "guest_can_join": field("m.room.guest_access", "guest_access").as_deref() == Some("can_join"),
    });
    for (key, kind, content_key) in [
        ("name", "m.room.name", "name"),
        ("topic", "m.room.topic", "topic"),
        ("canonical_alias", "m.room.canonical_alias", "alias"),
        ("avatar_url", "m.room.avatar", "url"),
        ("room_type", "m.room.create", "type"),
    ] {
        if let Some(value) = field(kind, content_key) {
            json[key] = json!(value);
        }
    }
    let create = state
        .iter()
        .find(|pdu| pdu.event_type.to_string() == "m.room.create");
    if let Some(create) = create {
        let version = create
            .content_value()
            .get("room_version")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| "1".into());
        json["room_version"] = json!(version);
    }
    let children: Vec<Value> = state
        .iter()
        .filter(|pdu| pdu.event_type.to_string() == "m.space.child")
        .filter(|pdu| {
            pdu.content_value()
                .get("via")
                .and_then(Value::as_array)
                .is_some_and(|via| !via.is_empty())
        })
        .map(|pdu| {
            json!({
                "type": "m.space.child",
                "state_key": pdu.state_key,
                "sender": pdu.sender,
                "content": pdu.content_value(),
                "origin_server_ts": pdu.origin_server_ts,
            })
        })
        .collect();
    json["children_state"] = Value::Array(children);
    let allowed = crate::restricted::allowed_rooms(services, room_id)
        .await?
        .unwrap_or_default();
    if !allowed.is_empty() {
        json["allowed_room_ids"] = json!(allowed);
    }
    Ok(Some(Summary { json, allowed }))
}

/// Whether anyone may see a room in a hierarchy, whoever asks: it is public, open to knocks or
/// world-readable.
fn open_to_all(summary: &Summary) -> bool {
    matches!(
        summary.json["join_rule"].as_str(),
        Some("public" | "knock" | "knock_restricted")
    ) || summary.json["world_readable"] == true
}

/// Whether a local user may see a room in a hierarchy.
async fn visible_to_user(
    services: &Services,
    summary: &Summary,
    user: &UserId,
) -> Result<bool, Error> {
    if open_to_all(summary) {
        return Ok(true);
    }
    let room = summary.json["room_id"].as_str().unwrap_or_default();
    if matches!(
        services
            .store
            .membership(room, user.as_str())
            .await?
            .as_deref(),
        Some("join" | "invite")
    ) {
        return Ok(true);
    }
    for allowed in &summary.allowed {
        if services
            .store
            .membership(allowed.as_str(), user.as_str())
            .await?
            .as_deref()
            == Some("join")
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whether another server may see a room in a hierarchy: open to all, a restricted room (the
/// asker checks its own users against `allowed_room_ids`), or one with a user of that server in
/// it or invited.
async fn visible_to_server(
    services: &Services,
    summary: &Summary,
    server: &ServerName,
) -> Result<bool, Error> {
    if open_to_all(summary) || !summary.allowed.is_empty() {
        return Ok(true);
    }
    let room = summary.json["room_id"].as_str().unwrap_or_default();
    Ok(services
        .store
        .room_servers(room, &["join", "invite"])
        .await?
        .iter()
        .any(|member_server| member_server == server.as_str()))
}

/// The answer of one of `via` to `federation/v1/hierarchy` for a room: its summary and its
/// children's, as that server shows them.
async fn remote_level(
    services: &Services,
    room_id: &RoomId,
    via: &[OwnedServerName],
    suggested_only: bool,
) -> Option<(Summary, Vec<Summary>)> {
    let path = format!(
        "/_matrix/federation/v1/hierarchy/{}?suggested_only={suggested_only}",
        utf8_percent_encode(room_id.as_str(), NON_ALPHANUMERIC)
    );
    for server in via
        .iter()
        .filter(|server| **server != services.server_name)
        .take(MAX_VIA)
    {
        let Ok(answer) = services
            .federation
            .request(server, http::Method::GET, &path, None, true)
            .await
        else {
            continue;
        };
        let summary = |json: &Value| -> Option<Summary> {
            json.get("room_id")?.as_str()?;
            let allowed = json["allowed_room_ids"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .filter_map(|id| RoomId::parse(id).ok())
                .collect();
            Some(Summary {
                json: json.clone(),
                allowed,
            })
        };
        let Some(room) = summary(&answer["room"]) else {
            continue;
        };
        if room.json["room_id"].as_str() != Some(room_id.as_str()) {
            continue;
        }
        let children = answer["children"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(summary)
            .collect();
        return Some((room, children));
    }
    None
}

#[derive(Debug, Deserialize)]
pub struct HierarchyQuery {
    from: Option<String>,
    limit: Option<usize>,
    max_depth: Option<usize>,
    #[serde(default)]
    suggested_only: bool,
}

/// # `GET /_matrix/client/v1/rooms/{roomId}/hierarchy`
pub async fn client_route(
    State(services): State<Arc<Services>>,
    Path(room_id): Path<OwnedRoomId>,
    Query(query): Query<HierarchyQuery>,
    Authenticated(sender): Authenticated,
) -> Result<Json<Value>, Error> {
    let limit = query.limit.unwrap_or(MAX_LIMIT).clamp(1, MAX_LIMIT);
    let max_depth = query.max_depth.unwrap_or(MAX_DEPTH).min(MAX_DEPTH);
    // The token is the number of rooms the earlier pages showed, with what they were asked.
    let skip = match &query.from {
        None => 0,
        Some(token) => {
            let (count, asked) = token
                .split_once('_')
                .ok_or_else(|| Error::InvalidParam("unknown pagination token".into()))?;
            if asked != format!("{max_depth}-{}", query.suggested_only) {
                return Err(Error::InvalidParam(
                    "the pagination token was made for other parameters".into(),
                ));
            }
            count
                .parse::<usize>()
                .map_err(|_| Error::InvalidParam("unknown pagination token".into()))?
        }
    };
    let user = &sender.user_id;
    let mut rooms: Vec<Value> = Vec::new();
    let mut seen: HashSet<OwnedRoomId> = HashSet::new();
    // Summaries other servers gave along with their parent's.
    let mut given: HashMap<OwnedRoomId, Summary> = HashMap::new();
    let mut queue: VecDeque<(OwnedRoomId, Vec<OwnedServerName>, usize)> = VecDeque::new();
    queue.push_back((
        room_id.clone(),
        room_id
            .server_name()
            .into_iter()
            .map(ToOwned::to_owned)
            .collect(),
        0,
    ));
    let mut shown = 0usize;
    let mut more = false;
    let mut remote_asks = 0usize;
    while let Some((room, via, depth)) = queue.pop_front() {
        if !seen.insert(room.clone()) {
            continue;
        }
        let summary = match local_summary(&services, &room).await? {
            Some(summary) => Some(summary),
            None => match given.remove(&room) {
                // What a parent's server said of it is enough for a leaf; a room whose children
                // are wanted is asked for itself.
                Some(summary) if depth >= max_depth => Some(summary),
                _ if remote_asks >= MAX_REMOTE_ROOMS => None,
                _ => {
                    remote_asks += 1;
                    let level = remote_level(&services, &room, &via, query.suggested_only).await;
                    level.map(|(summary, children)| {
                        for child in children {
                            if let Some(id) = child.json["room_id"]
                                .as_str()
                                .and_then(|id| RoomId::parse(id).ok())
                            {
                                given.entry(id).or_insert(child);
                            }
                        }
                        summary
                    })
                }
            },
        };
        let Some(summary) = summary else {
            if room == room_id {
                return Err(Error::Forbidden(format!(
                    "{room_id} is not a room you may see"
                )));
            }
            continue;
        };
        if !visible_to_user(&services, &summary, user).await? {
            if room == room_id {
                return Err(Error::Forbidden(format!(
                    "{room_id} is not a room you may see"
                )));
            }
            continue;
        }
        if depth < max_depth {
            for child in summary.children() {
                if query.suggested_only && !child.suggested {
                    continue;
                }
                queue.push_back((child.room_id, child.via, depth + 1));
            }
        }
        if shown >= skip {
            if rooms.len() == limit {
                more = true;
                break;
            }
            let mut json = summary.json;
            if let Some(object) = json.as_object_mut() {
                object.remove("allowed_room_ids");
            }
            rooms.push(json);
        }
        shown += 1;
    }
    let mut answer = json!({ "rooms": rooms });
    if more {
        answer["next_batch"] = json!(format!(
            "{}_{max_depth}-{}",
            skip + limit,
            query.suggested_only
        ));
    }
    Ok(Json(answer))
}

#[derive(Debug, Deserialize)]
pub struct FederationQuery {
    #[serde(default)]
    suggested_only: bool,
}

/// # `GET /_matrix/federation/v1/hierarchy/{roomId}`: a room and its children, for another
/// server walking a space.
pub async fn federation_route(
    State(services): State<Arc<Services>>,
    Path(room_id): Path<OwnedRoomId>,
    Query(query): Query<FederationQuery>,
    request: Federated,
) -> Result<Json<Value>, Error> {
    let origin = &request.origin;
    let not_found = || Error::NotFound(format!("{room_id} is not known here"));
    let summary = local_summary(&services, &room_id)
        .await?
        .ok_or_else(not_found)?;
    if !visible_to_server(&services, &summary, origin).await? {
        return Err(not_found());
    }
    let mut children = Vec::new();
    let mut inaccessible = Vec::new();
    for child in summary.children() {
        if query.suggested_only && !child.suggested {
            continue;
        }
        match local_summary(&services, &child.room_id).await? {
            Some(child_summary) if visible_to_server(&services, &child_summary, origin).await? => {
                children.push(child_summary.json);
            }
            Some(_) => inaccessible.push(child.room_id),
            None => {}
        }
    }
    Ok(Json(json!({
        "room": summary.json,
        "children": children,
        "inaccessible_children": inaccessible,
    })))
}
