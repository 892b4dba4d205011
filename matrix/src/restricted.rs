//! Restricted rooms (join rule `restricted`, and `knock_restricted` where the room version
//! knows it): a user who is not invited may join when they are joined to one of the rooms the
//! join rule's `allow` list names, and a user of the resident server with the power to invite
//! vouches for the join (`join_authorised_via_users_server`, signed by that user's server).
//! The same decision serves local joins and other servers' `make_join` and `send_join`.

use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde_json::Value;

use crate::Services;
use crate::error::Error;

/// The rooms a restricted room lets the members of in, when its join rule restricts joins
/// (`None` for any other join rule, or a room version without restricted joins).
pub async fn allowed_rooms(
    services: &Services,
    room_id: &RoomId,
) -> Result<Option<Vec<OwnedRoomId>>, Error> {
    let rules = services.rooms.rules(room_id).await?;
    if !rules.authorization.restricted_join_rule {
        return Ok(None);
    }
    let Some(join_rules) = services
        .rooms
        .state_event(room_id, "m.room.join_rules", "")
        .await?
    else {
        return Ok(None);
    };
    let content = join_rules.content_value();
    let restricted = match content.get("join_rule").and_then(Value::as_str) {
        Some("restricted") => true,
        Some("knock_restricted") => rules.authorization.knock_restricted_join_rule,
        _ => false,
    };
    if !restricted {
        return Ok(None);
    }
    Ok(Some(
        content
            .get("allow")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|entry| entry.get("type").and_then(Value::as_str) == Some("m.room_membership"))
            .filter_map(|entry| entry.get("room_id").and_then(Value::as_str))
            .filter_map(|id| RoomId::parse(id).ok())
            .collect(),
    ))
}

/// Who vouches for `user_id` joining `room_id`: `None` when the join needs nobody (the room is
/// not restricted, or the user is invited or joined already), else a local member with the
/// power to invite. Refused (`M_FORBIDDEN`) when the user is in none of the allowed rooms this
/// server is in; `M_UNABLE_TO_AUTHORISE_JOIN` when this server is in none of them (another
/// resident server may be) or none of its users may invite.
pub async fn authorise_join(
    services: &Services,
    room_id: &RoomId,
    user_id: &UserId,
) -> Result<Option<OwnedUserId>, Error> {
    let Some(allowed) = allowed_rooms(services, room_id).await? else {
        return Ok(None);
    };
    if matches!(
        services
            .rooms
            .membership(room_id, user_id)
            .await?
            .as_deref(),
        Some("join" | "invite")
    ) {
        return Ok(None);
    }
    let mut known = false;
    let mut member = false;
    for allowed_room in &allowed {
        if !services.rooms.exists(allowed_room).await? {
            continue;
        }
        known = true;
        if services
            .rooms
            .membership(allowed_room, user_id)
            .await?
            .as_deref()
            == Some("join")
        {
            member = true;
            break;
        }
    }
    if !member {
        return Err(if known || services.is_local(user_id) {
            Error::Forbidden(format!(
                "{user_id} is not in a room whose members {room_id} lets in"
            ))
        } else {
            Error::UnableToAuthoriseJoin(format!(
                "this server is in none of the rooms whose members {room_id} lets in"
            ))
        });
    }
    let levels = services.rooms.power_levels(room_id).await?;
    let mut members = services
        .store
        .room_members(room_id.as_str(), "join")
        .await?;
    members.sort();
    members
        .iter()
        .filter_map(|member| UserId::parse(member.as_str()).ok())
        .find(|member| services.is_local(member) && levels.user(member) >= levels.invite)
        .map(Some)
        .ok_or_else(|| {
            Error::UnableToAuthoriseJoin(format!("no user of this server may invite to {room_id}"))
        })
}
