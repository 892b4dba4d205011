//! Room creation, aliases and the public room directory.

use std::sync::Arc;

use ruma::api::client::alias::{create_alias, delete_alias, get_alias};
use ruma::api::client::directory::{
    get_public_rooms, get_public_rooms_filtered, get_room_visibility, set_room_visibility,
};
use ruma::api::client::room::{Visibility, aliases, create_room};
use ruma::directory::PublicRoomsChunk;
use ruma::{OwnedRoomAliasId, RoomAliasId, RoomId, UInt};
use serde_json::{Value, json};

use crate::Services;
use crate::api::ruma_wrapper::Ruma;
use crate::error::Error;
use crate::pdu::{self, DEFAULT_ROOM_VERSION, canonical_content};
use crate::rooms::NewLocalEvent;

fn preset_defaults(preset: &create_room::v3::RoomPreset) -> (&'static str, &'static str, bool) {
    // (join rule, history visibility, guests may join)
    match preset {
        create_room::v3::RoomPreset::PublicChat => ("public", "shared", false),
        _ => ("invite", "shared", true),
    }
}

/// Merges `overlay` into `base`, key by key, one level deep for objects.
fn merge(base: &mut serde_json::Map<String, Value>, overlay: serde_json::Map<String, Value>) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(Value::Object(existing)), Value::Object(new)) => {
                for (k, v) in new {
                    existing.insert(k, v);
                }
            }
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// # `POST /_matrix/client/v3/createRoom`
pub async fn create_room_route(
    services: Arc<Services>,
    request: Ruma<create_room::v3::Request>,
) -> Result<create_room::v3::Response, Error> {
    let sender = request.sender()?.clone();
    services.limits.message.check(sender.user_id.as_str())?;
    let body = request.body;
    let creator = &sender.user_id;
    let version = body.room_version.clone().unwrap_or(DEFAULT_ROOM_VERSION);
    let rules = pdu::rules(&version)?;
    let preset = body.preset.clone().unwrap_or(match body.visibility {
        Visibility::Public => create_room::v3::RoomPreset::PublicChat,
        _ => create_room::v3::RoomPreset::PrivateChat,
    });
    let alias = match &body.room_alias_name {
        Some(name) => {
            let alias = RoomAliasId::parse(format!("#{name}:{}", services.server_name))
                .map_err(|e| Error::InvalidParam(format!("invalid room_alias_name: {e}")))?;
            if services.store.alias(alias.as_str()).await?.is_some() {
                return Err(Error::RoomInUse);
            }
            Some(alias)
        }
        None => None,
    };
    for invitee in &body.invite {
        if invitee == creator {
            return Err(Error::InvalidParam("you cannot invite yourself".into()));
        }
    }
    let mut create_content = match &body.creation_content {
        Some(raw) => match serde_json::from_str::<Value>(raw.json().get()) {
            Ok(Value::Object(map)) => map,
            _ => return Err(Error::BadJson("creation_content must be an object".into())),
        },
        None => serde_json::Map::new(),
    };
    create_content.remove("room_version");
    if !rules.authorization.additional_room_creators {
        create_content.remove("additional_creators");
    }
    let is_public = body.visibility == Visibility::Public;
    let room_id = services
        .rooms
        .create_room(
            creator,
            &version,
            canonical_content(Value::Object(create_content))?,
            is_public,
        )
        .await?;
    let send = |event_type: &'static str, state_key: Option<String>, content: Value| {
        let services = services.clone();
        let room_id = room_id.clone();
        let creator = creator.clone();
        async move {
            let content = canonical_content(content)?;
            services
                .rooms
                .append(
                    &room_id,
                    NewLocalEvent::new(&creator, event_type, state_key.as_deref(), content),
                )
                .await
        }
    };
    let profile = services.store.user(creator.as_str()).await?;
    let mut join = json!({"membership": "join"});
    if let Some(profile) = &profile {
        if let Some(name) = &profile.displayname {
            join["displayname"] = json!(name);
        }
        if let Some(avatar) = &profile.avatar_url {
            join["avatar_url"] = json!(avatar);
        }
    }
    send("m.room.member", Some(creator.to_string()), join).await?;

    // Power levels: the defaults of the preset, then the client's override.
    let mut users = serde_json::Map::new();
    if !rules.authorization.explicitly_privilege_room_creators {
        users.insert(creator.to_string(), json!(100));
    }
    if preset == create_room::v3::RoomPreset::TrustedPrivateChat {
        for invitee in &body.invite {
            users.insert(invitee.to_string(), json!(100));
        }
    }
    let mut power_levels = json!({
        "users": users,
        "users_default": 0,
        "events": {
            "m.room.name": 50,
            "m.room.power_levels": 100,
            "m.room.history_visibility": 100,
            "m.room.canonical_alias": 50,
            "m.room.avatar": 50,
            "m.room.tombstone": 100,
            "m.room.server_acl": 100,
            "m.room.encryption": 100,
        },
        "events_default": 0,
        "state_default": 50,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": if preset == create_room::v3::RoomPreset::PublicChat { 50 } else { 0 },
        "notifications": {"room": 50},
    });
    if let Some(raw) = &body.power_level_content_override {
        match serde_json::from_str::<Value>(raw.json().get()) {
            Ok(Value::Object(overlay)) => {
                if let Value::Object(base) = &mut power_levels {
                    merge(base, overlay);
                }
            }
            _ => {
                return Err(Error::BadJson(
                    "power_level_content_override must be an object".into(),
                ));
            }
        }
    }
    send("m.room.power_levels", Some(String::new()), power_levels).await?;
    if let Some(alias) = &alias {
        send(
            "m.room.canonical_alias",
            Some(String::new()),
            json!({"alias": alias}),
        )
        .await?;
    }
    let (join_rule, history, guests) = preset_defaults(&preset);
    send(
        "m.room.join_rules",
        Some(String::new()),
        json!({"join_rule": join_rule}),
    )
    .await?;
    send(
        "m.room.history_visibility",
        Some(String::new()),
        json!({"history_visibility": history}),
    )
    .await?;
    if guests {
        send(
            "m.room.guest_access",
            Some(String::new()),
            json!({"guest_access": "can_join"}),
        )
        .await?;
    }
    for raw in &body.initial_state {
        let event: Value = serde_json::from_str(raw.json().get())
            .map_err(|e| Error::BadJson(format!("initial_state: {e}")))?;
        let event_type = event
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::BadJson("initial_state event without type".into()))?;
        if matches!(
            event_type,
            "m.room.create" | "m.room.member" | "m.room.power_levels"
        ) {
            return Err(Error::BadJson(format!(
                "initial_state may not contain {event_type}"
            )));
        }
        let state_key = event
            .get("state_key")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let content = event.get("content").cloned().unwrap_or(json!({}));
        let content = canonical_content(content)?;
        services
            .rooms
            .append(
                &room_id,
                NewLocalEvent::new(creator, event_type, Some(&state_key), content),
            )
            .await?;
    }
    if let Some(name) = &body.name {
        send("m.room.name", Some(String::new()), json!({"name": name})).await?;
    }
    if let Some(topic) = &body.topic {
        send(
            "m.room.topic",
            Some(String::new()),
            json!({"topic": topic, "m.topic": [{"mimetype": "text/plain", "body": topic}]}),
        )
        .await?;
    }
    for invitee in &body.invite {
        let mut content = json!({"membership": "invite"});
        if body.is_direct {
            content["is_direct"] = json!(true);
        }
        if let Some(profile) = services.store.user(invitee.as_str()).await?
            && let Some(name) = profile.displayname
        {
            content["displayname"] = json!(name);
        }
        send("m.room.member", Some(invitee.to_string()), content).await?;
    }
    if let Some(alias) = &alias
        && !services
            .store
            .create_alias(alias.as_str(), room_id.as_str(), creator.as_str())
            .await?
    {
        return Err(Error::RoomInUse);
    }
    tracing::info!(room_id = %room_id, creator = %creator, version = %version, "created a room");
    Ok(create_room::v3::Response::new(room_id))
}

fn check_local_alias(services: &Services, alias: &RoomAliasId) -> Result<(), Error> {
    if alias.server_name() != services.server_name {
        return Err(Error::InvalidParam(
            "aliases of other servers cannot be managed here".into(),
        ));
    }
    Ok(())
}

/// # `PUT /_matrix/client/v3/directory/room/{roomAlias}`
pub async fn create_alias_route(
    services: Arc<Services>,
    request: Ruma<create_alias::v3::Request>,
) -> Result<create_alias::v3::Response, Error> {
    let sender = request.sender()?;
    check_local_alias(&services, &request.body.room_alias)?;
    if !services.rooms.exists(&request.body.room_id).await? {
        return Err(Error::NotFound("unknown room".into()));
    }
    if services
        .store
        .membership(request.body.room_id.as_str(), sender.user_id.as_str())
        .await?
        .as_deref()
        != Some("join")
    {
        return Err(Error::Forbidden("you are not in this room".into()));
    }
    if !services
        .store
        .create_alias(
            request.body.room_alias.as_str(),
            request.body.room_id.as_str(),
            sender.user_id.as_str(),
        )
        .await?
    {
        return Err(Error::RoomInUse);
    }
    Ok(create_alias::v3::Response::new())
}

/// # `GET /_matrix/client/v3/directory/room/{roomAlias}`
pub async fn get_alias_route(
    services: Arc<Services>,
    request: Ruma<get_alias::v3::Request>,
) -> Result<get_alias::v3::Response, Error> {
    let (room_id, _) = services
        .store
        .alias(request.body.room_alias.as_str())
        .await?
        .ok_or_else(|| Error::NotFound("room alias not found".into()))?;
    let room_id =
        RoomId::parse(room_id).map_err(|e| Error::Internal(format!("stored room id: {e}")))?;
    Ok(get_alias::v3::Response::new(
        room_id,
        vec![services.server_name.clone()],
    ))
}

/// # `DELETE /_matrix/client/v3/directory/room/{roomAlias}`
pub async fn delete_alias_route(
    services: Arc<Services>,
    request: Ruma<delete_alias::v3::Request>,
) -> Result<delete_alias::v3::Response, Error> {
    let sender = request.sender()?;
    check_local_alias(&services, &request.body.room_alias)?;
    let (room_id, creator) = services
        .store
        .alias(request.body.room_alias.as_str())
        .await?
        .ok_or_else(|| Error::NotFound("room alias not found".into()))?;
    let room_id =
        RoomId::parse(room_id).map_err(|e| Error::Internal(format!("stored room id: {e}")))?;
    let is_admin = services
        .store
        .user(sender.user_id.as_str())
        .await?
        .is_some_and(|user| user.is_admin);
    let allowed = creator == sender.user_id.as_str() || is_admin || {
        let levels = services.rooms.power_levels(&room_id).await?;
        levels.user(&sender.user_id) >= levels.event("m.room.canonical_alias", true)
    };
    if !allowed {
        return Err(Error::Forbidden("you may not delete this alias".into()));
    }
    services
        .store
        .delete_alias(request.body.room_alias.as_str())
        .await?;
    Ok(delete_alias::v3::Response::new())
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/aliases`
pub async fn get_room_aliases_route(
    services: Arc<Services>,
    request: Ruma<aliases::v3::Request>,
) -> Result<aliases::v3::Response, Error> {
    let sender = request.sender()?;
    crate::api::client::message::require_joined(&services, &request.body.room_id, &sender.user_id)
        .await?;
    let aliases = services
        .store
        .room_aliases(request.body.room_id.as_str())
        .await?
        .into_iter()
        .filter_map(|alias| OwnedRoomAliasId::try_from(alias).ok())
        .collect();
    Ok(aliases::v3::Response::new(aliases))
}

async fn public_rooms_chunks(
    services: &Services,
    since: Option<&str>,
    limit: Option<UInt>,
    search: Option<&str>,
) -> Result<(Vec<PublicRoomsChunk>, Option<String>, Option<String>, usize), Error> {
    let mut chunks = Vec::new();
    for room_id in services.store.public_rooms().await? {
        let Ok(room_id) = RoomId::parse(&room_id) else {
            continue;
        };
        let text = |event_type: &'static str, key: &'static str| {
            let room_id = room_id.clone();
            async move {
                Ok::<_, Error>(
                    services
                        .rooms
                        .state_event(&room_id, event_type, "")
                        .await?
                        .and_then(|pdu| {
                            pdu.content_value()
                                .get(key)
                                .and_then(Value::as_str)
                                .map(str::to_owned)
                        }),
                )
            }
        };
        let name = text("m.room.name", "name").await?;
        let topic = text("m.room.topic", "topic").await?;
        let alias = text("m.room.canonical_alias", "alias").await?;
        let avatar = text("m.room.avatar", "url").await?;
        let join_rule = text("m.room.join_rules", "join_rule").await?;
        let history = text("m.room.history_visibility", "history_visibility").await?;
        let guests = text("m.room.guest_access", "guest_access").await?;
        if let Some(term) = search {
            let term = term.to_lowercase();
            let matches = [&name, &topic, &alias].iter().any(|field| {
                field
                    .as_deref()
                    .is_some_and(|f| f.to_lowercase().contains(&term))
            });
            if !matches {
                continue;
            }
        }
        let joined = services
            .store
            .room_members(room_id.as_str(), "join")
            .await?
            .len();
        let mut chunk: PublicRoomsChunk = ruma::directory::PublicRoomsChunkInit {
            num_joined_members: UInt::try_from(joined as u64).unwrap_or_default(),
            room_id: room_id.clone(),
            world_readable: history.as_deref() == Some("world_readable"),
            guest_can_join: guests.as_deref() == Some("can_join"),
        }
        .into();
        chunk.name = name;
        chunk.topic = topic;
        chunk.canonical_alias = alias.and_then(|alias| OwnedRoomAliasId::try_from(alias).ok());
        chunk.avatar_url = avatar.map(Into::into);
        chunk.join_rule = join_rule
            .as_deref()
            .map(ruma::room::JoinRuleKind::from)
            .unwrap_or_default();
        chunks.push(chunk);
    }
    chunks.sort_by(|a, b| {
        b.num_joined_members
            .cmp(&a.num_joined_members)
            .then_with(|| a.room_id.cmp(&b.room_id))
    });
    let total = chunks.len();
    let start: usize = match since {
        Some(token) => token
            .strip_prefix('n')
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| Error::InvalidParam("invalid since token".into()))?,
        None => 0,
    };
    let limit = limit
        .map(|l| usize::try_from(u64::from(l)).unwrap_or(usize::MAX))
        .unwrap_or(usize::MAX)
        .max(1);
    let end = start.saturating_add(limit).min(total);
    let page = chunks
        .into_iter()
        .skip(start)
        .take(end.saturating_sub(start))
        .collect();
    let next = (end < total).then(|| format!("n{end}"));
    let prev = (start > 0).then(|| format!("n{}", start.saturating_sub(limit)));
    Ok((page, next, prev, total))
}

/// # `GET /_matrix/client/v3/publicRooms`
pub async fn get_public_rooms_route(
    services: Arc<Services>,
    request: Ruma<get_public_rooms::v3::Request>,
) -> Result<get_public_rooms::v3::Response, Error> {
    check_directory_server(&services, request.body.server.as_deref())?;
    let (chunk, next, prev, total) = public_rooms_chunks(
        &services,
        request.body.since.as_deref(),
        request.body.limit,
        None,
    )
    .await?;
    let mut response = get_public_rooms::v3::Response::new(chunk);
    response.next_batch = next;
    response.prev_batch = prev;
    response.total_room_count_estimate = UInt::try_from(total as u64).ok();
    Ok(response)
}

/// # `POST /_matrix/client/v3/publicRooms`
pub async fn get_public_rooms_filtered_route(
    services: Arc<Services>,
    request: Ruma<get_public_rooms_filtered::v3::Request>,
) -> Result<get_public_rooms_filtered::v3::Response, Error> {
    check_directory_server(&services, request.body.server.as_deref())?;
    let (chunk, next, prev, total) = public_rooms_chunks(
        &services,
        request.body.since.as_deref(),
        request.body.limit,
        request.body.filter.generic_search_term.as_deref(),
    )
    .await?;
    let mut response = get_public_rooms_filtered::v3::Response::new();
    response.chunk = chunk;
    response.next_batch = next;
    response.prev_batch = prev;
    response.total_room_count_estimate = UInt::try_from(total as u64).ok();
    Ok(response)
}

fn check_directory_server(
    services: &Services,
    server: Option<&ruma::ServerName>,
) -> Result<(), Error> {
    match server {
        Some(server) if server != services.server_name => Err(Error::Unsupported(
            "the directories of other servers cannot be queried yet".into(),
        )),
        _ => Ok(()),
    }
}

/// # `GET /_matrix/client/v3/directory/list/room/{roomId}`
pub async fn get_room_visibility_route(
    services: Arc<Services>,
    request: Ruma<get_room_visibility::v3::Request>,
) -> Result<get_room_visibility::v3::Response, Error> {
    let room = services
        .store
        .room(request.body.room_id.as_str())
        .await?
        .ok_or_else(|| Error::NotFound("unknown room".into()))?;
    Ok(get_room_visibility::v3::Response::new(if room.is_public {
        Visibility::Public
    } else {
        Visibility::Private
    }))
}

/// # `PUT /_matrix/client/v3/directory/list/room/{roomId}`
pub async fn set_room_visibility_route(
    services: Arc<Services>,
    request: Ruma<set_room_visibility::v3::Request>,
) -> Result<set_room_visibility::v3::Response, Error> {
    let sender = request.sender()?;
    let room_id = &request.body.room_id;
    if !services.rooms.exists(room_id).await? {
        return Err(Error::NotFound("unknown room".into()));
    }
    crate::api::client::message::require_joined(&services, room_id, &sender.user_id).await?;
    let levels = services.rooms.power_levels(room_id).await?;
    if levels.user(&sender.user_id) < levels.event("m.room.canonical_alias", true) {
        return Err(Error::Forbidden(
            "you need a higher power level to publish this room".into(),
        ));
    }
    services
        .store
        .set_room_public(
            room_id.as_str(),
            request.body.visibility == Visibility::Public,
        )
        .await?;
    Ok(set_room_visibility::v3::Response::new())
}
