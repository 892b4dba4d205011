//! Room creation, aliases and the public room directory.

use std::sync::Arc;

use ruma::api::client::alias::{create_alias, delete_alias, get_alias};
use ruma::api::client::directory::{
    get_public_rooms, get_public_rooms_filtered, get_room_visibility, set_room_visibility,
};
use ruma::api::client::room::{Visibility, aliases, create_room};
use ruma::directory::PublicRoomsChunk;
use ruma::{OwnedRoomAliasId, RoomAliasId, RoomId, UInt};
use serde_json::{Map, Value};

use crate::Services;
use crate::api::ruma_wrapper::Ruma;
use crate::create_room::{RoomOptions, create_room as create};
use crate::error::Error;
use crate::federation::directory::{DirectoryPage, remote_public_rooms};

/// A JSON object of the request, or `M_BAD_JSON` naming the field.
fn object<T>(raw: &ruma::serde::Raw<T>, field: &str) -> Result<Map<String, Value>, Error> {
    match serde_json::from_str::<Value>(raw.json().get()) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(Error::BadJson(format!("{field} must be an object"))),
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
    let version = match &body.room_version {
        Some(version) => version.clone(),
        None => services.default_room_version(),
    };
    let mut options = RoomOptions::private(sender.user_id.clone(), version);
    options.preset = body.preset.clone().unwrap_or(match body.visibility {
        Visibility::Public => create_room::v3::RoomPreset::PublicChat,
        _ => create_room::v3::RoomPreset::PrivateChat,
    });
    options.is_public = body.visibility == Visibility::Public;
    options.alias_name = body.room_alias_name.clone();
    options.name = body.name.clone();
    options.topic = body.topic.clone();
    options.invite = body.invite.clone();
    options.is_direct = body.is_direct;
    if let Some(raw) = &body.creation_content {
        options.creation_content = object(raw, "creation_content")?;
    }
    if let Some(raw) = &body.power_level_content_override {
        options.power_level_override = Some(object(raw, "power_level_content_override")?);
    }
    for raw in &body.initial_state {
        options.initial_state.push(
            serde_json::from_str(raw.json().get())
                .map_err(|e| Error::BadJson(format!("initial_state: {e}")))?,
        );
    }
    let room_id = create(&services, options).await?;
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
    let room_id = services
        .local_alias(&request.body.room_alias)
        .await?
        .ok_or_else(|| Error::NotFound("room alias not found".into()))?;
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
    let room_id = crate::api::client::events::stored_room_id(&room_id)?;
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
    crate::api::client::events::require_joined(&services, &request.body.room_id, &sender.user_id)
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

/// A page of this server's room directory, as local clients and other servers see it.
pub(crate) async fn public_rooms_page(
    services: &Services,
    since: Option<&str>,
    limit: Option<UInt>,
    search: Option<&str>,
) -> Result<DirectoryPage, Error> {
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
    Ok(DirectoryPage {
        chunk: page,
        next_batch: (end < total).then(|| format!("n{end}")),
        prev_batch: (start > 0).then(|| format!("n{}", start.saturating_sub(limit))),
        total: Some(total as u64),
    })
}

/// A page of the directory of `server` (this one when `None`): read here, or asked of it.
async fn directory_page(
    services: &Services,
    server: Option<&ruma::ServerName>,
    since: Option<&str>,
    limit: Option<UInt>,
    search: Option<&str>,
) -> Result<DirectoryPage, Error> {
    match server {
        Some(server) if server != services.server_name => {
            remote_public_rooms(services, server, since, limit, search).await
        }
        _ => public_rooms_page(services, since, limit, search).await,
    }
}

/// # `GET /_matrix/client/v3/publicRooms`
pub async fn get_public_rooms_route(
    services: Arc<Services>,
    request: Ruma<get_public_rooms::v3::Request>,
) -> Result<get_public_rooms::v3::Response, Error> {
    let page = directory_page(
        &services,
        request.body.server.as_deref(),
        request.body.since.as_deref(),
        request.body.limit,
        None,
    )
    .await?;
    let mut response = get_public_rooms::v3::Response::new(page.chunk);
    response.next_batch = page.next_batch;
    response.prev_batch = page.prev_batch;
    response.total_room_count_estimate = page.total.and_then(|n| UInt::try_from(n).ok());
    Ok(response)
}

/// # `POST /_matrix/client/v3/publicRooms`
pub async fn get_public_rooms_filtered_route(
    services: Arc<Services>,
    request: Ruma<get_public_rooms_filtered::v3::Request>,
) -> Result<get_public_rooms_filtered::v3::Response, Error> {
    let page = directory_page(
        &services,
        request.body.server.as_deref(),
        request.body.since.as_deref(),
        request.body.limit,
        request.body.filter.generic_search_term.as_deref(),
    )
    .await?;
    let mut response = get_public_rooms_filtered::v3::Response::new();
    response.chunk = page.chunk;
    response.next_batch = page.next_batch;
    response.prev_batch = page.prev_batch;
    response.total_room_count_estimate = page.total.and_then(|n| UInt::try_from(n).ok());
    Ok(response)
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
    crate::api::client::events::require_joined(&services, room_id, &sender.user_id).await?;
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

/// # `POST /_matrix/client/v3/rooms/{roomId}/upgrade`
pub async fn upgrade_room_route(
    services: Arc<Services>,
    request: Ruma<ruma::api::client::room::upgrade_room::v3::Request>,
) -> Result<ruma::api::client::room::upgrade_room::v3::Response, Error> {
    let sender = request.sender()?;
    let body = &request.body;
    let replacement = crate::upgrade::upgrade_room(
        &services,
        &sender.user_id,
        &body.room_id,
        body.new_version.clone(),
        body.additional_creators.clone(),
    )
    .await?;
    Ok(ruma::api::client::room::upgrade_room::v3::Response::new(
        replacement,
    ))
}
