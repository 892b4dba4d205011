//! Joining, leaving, inviting, kicking and banning; member lists.

use std::collections::BTreeMap;
use std::sync::Arc;

use ruma::api::client::knock::knock_room;
use ruma::api::client::membership::{
    ban_user, forget_room, get_member_events, invite_user, join_room_by_id,
    join_room_by_id_or_alias, joined_members, joined_rooms, kick_user, leave_room, unban_user,
};
use ruma::{OwnedRoomId, OwnedServerName, RoomId, UserId};
use serde_json::{Value, json};

use crate::Services;
use crate::api::client::events::{client_state_events, parse_position, state_seen_at, visible_to};
use crate::api::ruma_wrapper::Ruma;
use crate::error::Error;
use crate::pdu::{Pdu, canonical_content, raw_event};
use crate::rooms::NewLocalEvent;

/// Sends a membership event for `target`, sent by `sender`.
async fn set_membership(
    services: &Services,
    room_id: &RoomId,
    sender: &UserId,
    target: &UserId,
    membership: &str,
    reason: Option<&str>,
    extra: Option<serde_json::Map<String, Value>>,
) -> Result<(), Error> {
    if !services.rooms.exists(room_id).await? {
        return Err(Error::NotFound("unknown room".into()));
    }
    let mut content = if membership == "join" || membership == "invite" {
        crate::create_room::member_content(services, target, membership).await?
    } else {
        json!({ "membership": membership })
    };
    if let Some(reason) = reason {
        content["reason"] = json!(reason);
    }
    if let (Some(extra), Some(object)) = (extra, content.as_object_mut()) {
        object.extend(extra);
    }
    services
        .rooms
        .append(
            room_id,
            NewLocalEvent::new(
                sender,
                "m.room.member",
                Some(target.as_str()),
                canonical_content(content)?,
            ),
        )
        .await?;
    Ok(())
}

/// What a client adds to its member event when it joins (a display name for the room, say):
/// the keys of the request body other than those the endpoint defines.
fn custom_member_content(body: Option<&Value>) -> Option<serde_json::Map<String, Value>> {
    let mut content = body?.as_object()?.clone();
    for defined in ["membership", "reason", "third_party_signed"] {
        content.remove(defined);
    }
    (!content.is_empty()).then_some(content)
}

/// Joins `user_id` to a room as the server's own part (the bridge joins XMPP users' ghosts
/// this way): the same rules as a client's join; `content` is added to the member event
/// (a display name for the room, say).
pub async fn join_as(
    services: &Services,
    room_id: &RoomId,
    user_id: &UserId,
    content: Option<&Value>,
    via: &[OwnedServerName],
) -> Result<(), Error> {
    join(services, room_id, user_id, false, None, content, via).await
}

/// Leaves a room as the server's own part: what a client's `leave` does for a joined member.
pub async fn leave_as(
    services: &Services,
    room_id: &RoomId,
    user_id: &UserId,
    reason: Option<&str>,
) -> Result<(), Error> {
    let current = services
        .store
        .membership(room_id.as_str(), user_id.as_str())
        .await?;
    if matches!(current.as_deref(), Some("join" | "invite" | "knock"))
        && services.rooms.exists(room_id).await?
    {
        set_membership(services, room_id, user_id, user_id, "leave", reason, None).await?;
    }
    Ok(())
}

/// Sets the member event of a joined member again with `content` added (a new display name
/// for the room, say).
pub async fn update_member(
    services: &Services,
    room_id: &RoomId,
    user_id: &UserId,
    content: serde_json::Map<String, Value>,
) -> Result<(), Error> {
    set_membership(
        services,
        room_id,
        user_id,
        user_id,
        "join",
        None,
        Some(content),
    )
    .await
}

async fn join(
    services: &Services,
    room_id: &RoomId,
    user_id: &UserId,
    is_guest: bool,
    reason: Option<&str>,
    body: Option<&Value>,
    via: &[OwnedServerName],
) -> Result<(), Error> {
    if !services.rooms.exists(room_id).await? {
        // A room of other servers: joined through one of them.
        if is_guest {
            return Err(Error::GuestAccessForbidden);
        }
        let mut servers: Vec<OwnedServerName> = via.to_vec();
        // An invited user joins through the server that invited them.
        if let Some(server) =
            crate::federation::invites::inviting_server(services, room_id, user_id).await?
            && !servers.contains(&server)
        {
            servers.insert(0, server);
        }
        if let Some(server) = room_id.server_name()
            && !servers.iter().any(|known| known == server)
        {
            servers.push(server.to_owned());
        }
        let mut content =
            match crate::create_room::member_content(services, user_id, "join").await? {
                Value::Object(content) => content,
                _ => serde_json::Map::new(),
            };
        if let Some(reason) = reason {
            content.insert("reason".into(), json!(reason));
        }
        if let Some(custom) = custom_member_content(body) {
            content.extend(custom);
        }
        return crate::federation::membership::join_remote(
            services, room_id, user_id, &servers, content,
        )
        .await;
    }
    // Guests join only the rooms that let them.
    if is_guest && !guests_may_join(services, room_id).await? {
        return Err(Error::GuestAccessForbidden);
    }
    // Joining again keeps the membership as it is.
    if services
        .store
        .membership(room_id.as_str(), user_id.as_str())
        .await?
        .as_deref()
        == Some("join")
    {
        return Ok(());
    }
    // The server's own part may hold the join up, or refuse it (a portal's MUC).
    services.joining(room_id, user_id).await?;
    let mut custom = custom_member_content(body);
    // A restricted room: a member with the power to invite vouches for the join.
    if let Some(via) = crate::restricted::authorise_join(services, room_id, user_id).await? {
        custom
            .get_or_insert_with(serde_json::Map::new)
            .insert("join_authorised_via_users_server".into(), json!(via));
    }
    set_membership(services, room_id, user_id, user_id, "join", reason, custom).await?;
    // Joining the replacement of an upgraded room: what the user kept of the old room follows.
    if let Some(old) = crate::upgrade::predecessor(services, room_id).await? {
        crate::upgrade::carry_over(services, user_id, &old, room_id).await?;
    }
    Ok(())
}

/// Whether the room's guest access is `can_join`.
pub async fn guests_may_join(services: &Services, room_id: &RoomId) -> Result<bool, Error> {
    Ok(services
        .rooms
        .state_event(room_id, "m.room.guest_access", "")
        .await?
        .is_some_and(|pdu| {
            pdu.content_value()
                .get("guest_access")
                .and_then(Value::as_str)
                == Some("can_join")
        }))
}

/// Guests leave a room that stops letting them in, as the specification requires.
pub async fn remove_guests(services: &Services, room_id: &RoomId) -> Result<(), Error> {
    if guests_may_join(services, room_id).await? {
        return Ok(());
    }
    for guest in services.store.joined_guests(room_id.as_str()).await? {
        let Ok(guest) = UserId::parse(guest.as_str()) else {
            continue;
        };
        set_membership(services, room_id, &guest, &guest, "leave", None, None).await?;
    }
    Ok(())
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/join`
pub async fn join_room_by_id_route(
    services: Arc<Services>,
    request: Ruma<join_room_by_id::v3::Request>,
) -> Result<join_room_by_id::v3::Response, Error> {
    let sender = request.sender()?;
    join(
        &services,
        &request.body.room_id,
        &sender.user_id,
        sender.is_guest,
        request.body.reason.as_deref(),
        request.json_body.as_ref(),
        &[],
    )
    .await?;
    Ok(join_room_by_id::v3::Response::new(
        request.body.room_id.clone(),
    ))
}

/// # `POST /_matrix/client/v3/join/{roomIdOrAlias}`
pub async fn join_room_by_id_or_alias_route(
    services: Arc<Services>,
    request: Ruma<join_room_by_id_or_alias::v3::Request>,
) -> Result<join_room_by_id_or_alias::v3::Response, Error> {
    let sender = request.sender()?;
    let mut via = request.body.via.clone();
    let room_id = room_of(&services, &request.body.room_id_or_alias, &mut via).await?;
    join(
        &services,
        &room_id,
        &sender.user_id,
        sender.is_guest,
        request.body.reason.as_deref(),
        request.json_body.as_ref(),
        &via,
    )
    .await?;
    Ok(join_room_by_id_or_alias::v3::Response::new(room_id))
}

/// The room a room id or alias names; the servers a remote alias's server names for it are
/// added to `via`.
pub async fn room_of(
    services: &Services,
    room_id_or_alias: &ruma::RoomOrAliasId,
    via: &mut Vec<OwnedServerName>,
) -> Result<OwnedRoomId, Error> {
    Ok(match <&RoomId>::try_from(room_id_or_alias) {
        Ok(room_id) => room_id.to_owned(),
        Err(alias) if alias.server_name() == services.server_name => services
            .local_alias(alias)
            .await?
            .ok_or_else(|| Error::NotFound(format!("room alias {alias} not found")))?,
        Err(alias) => {
            let (room_id, servers) =
                crate::federation::membership::resolve_remote_alias(services, alias).await?;
            via.extend(servers);
            room_id
        }
    })
}

/// # `POST /_matrix/client/v3/knock/{roomIdOrAlias}`: asks to be let into a room whose join
/// rule is `knock` (or `knock_restricted`); a room of other servers through one of them.
pub async fn knock_room_route(
    services: Arc<Services>,
    request: Ruma<knock_room::v3::Request>,
) -> Result<knock_room::v3::Response, Error> {
    let sender = request.sender()?;
    if sender.is_guest {
        return Err(Error::GuestAccessForbidden);
    }
    let mut via = request.body.via.clone();
    let room_id = room_of(&services, &request.body.room_id_or_alias, &mut via).await?;
    let reason = request.body.reason.as_deref();
    if services.rooms.exists(&room_id).await? {
        set_membership(
            &services,
            &room_id,
            &sender.user_id,
            &sender.user_id,
            "knock",
            reason,
            None,
        )
        .await?;
    } else {
        if let Some(server) = room_id.server_name()
            && !via.iter().any(|known| known == server)
        {
            via.push(server.to_owned());
        }
        crate::federation::knocks::knock_remote(&services, &room_id, &sender.user_id, &via, reason)
            .await?;
    }
    Ok(knock_room::v3::Response::new(room_id))
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/leave`
pub async fn leave_room_route(
    services: Arc<Services>,
    request: Ruma<leave_room::v3::Request>,
) -> Result<leave_room::v3::Response, Error> {
    let sender = request.sender()?;
    let current = services
        .store
        .membership(request.body.room_id.as_str(), sender.user_id.as_str())
        .await?;
    match current.as_deref() {
        // An invite to a room of another server, which this server has no copy of: rejected
        // through the inviting server.
        Some("invite") if !services.rooms.exists(&request.body.room_id).await? => {
            crate::federation::invites::reject_remote_invite(
                &services,
                &request.body.room_id,
                &sender.user_id,
                request.body.reason.as_deref(),
            )
            .await?;
        }
        // A knock on a room of another server: taken back through the room's servers.
        Some("knock") if !services.rooms.exists(&request.body.room_id).await? => {
            crate::federation::knocks::rescind_remote_knock(
                &services,
                &request.body.room_id,
                &sender.user_id,
                request.body.reason.as_deref(),
            )
            .await?;
        }
        Some("join" | "invite" | "knock") => {
            set_membership(
                &services,
                &request.body.room_id,
                &sender.user_id,
                &sender.user_id,
                "leave",
                request.body.reason.as_deref(),
                None,
            )
            .await?;
        }
        Some(_) => {}
        None => return Err(Error::NotFound("you are not in this room".into())),
    }
    Ok(leave_room::v3::Response::new())
}

/// Leaves every room (used when an account is deactivated).
pub async fn leave_all_rooms(services: &Services, user_id: &UserId) -> Result<(), Error> {
    for row in services.store.user_memberships(user_id.as_str()).await? {
        if matches!(row.membership.as_str(), "join" | "invite" | "knock") {
            let Ok(room_id) = RoomId::parse(&row.room_id) else {
                continue;
            };
            if let Err(error) =
                set_membership(services, &room_id, user_id, user_id, "leave", None, None).await
            {
                tracing::warn!(room_id = %room_id, %error, "could not leave a room");
            }
        }
    }
    Ok(())
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/forget`
pub async fn forget_room_route(
    services: Arc<Services>,
    request: Ruma<forget_room::v3::Request>,
) -> Result<forget_room::v3::Response, Error> {
    let sender = request.sender()?;
    match services
        .store
        .membership(request.body.room_id.as_str(), sender.user_id.as_str())
        .await?
        .as_deref()
    {
        Some("join") => Err(Error::BadState(
            "leave the room before forgetting it".into(),
        )),
        Some(_) => {
            services
                .store
                .forget_room(request.body.room_id.as_str(), sender.user_id.as_str())
                .await?;
            Ok(forget_room::v3::Response::new())
        }
        None => Err(Error::NotFound("you were never in this room".into())),
    }
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/invite`
pub async fn invite_user_route(
    services: Arc<Services>,
    request: Ruma<invite_user::v3::Request>,
) -> Result<invite_user::v3::Response, Error> {
    let sender = request.sender()?;
    let invite_user::v3::InvitationRecipient::UserId(recipient) = &request.body.recipient else {
        return Err(Error::Unsupported(
            "third-party invites are not supported".into(),
        ));
    };
    let remote = !services.is_local(&recipient.user_id);
    // Only members may invite.
    crate::api::client::events::require_joined(&services, &request.body.room_id, &sender.user_id)
        .await?;
    if recipient.user_id == sender.user_id {
        return Err(Error::Forbidden("you cannot invite yourself".into()));
    }
    if !remote && !services.provision_user(&recipient.user_id).await? {
        return Err(Error::NotFound(format!(
            "unknown user {}",
            recipient.user_id
        )));
    }
    match services
        .store
        .membership(request.body.room_id.as_str(), recipient.user_id.as_str())
        .await?
        .as_deref()
    {
        // Invited already: nothing changes.
        Some("invite") => return Ok(invite_user::v3::Response::new()),
        // The authorization rules refuse an invite of a member or of someone banned.
        Some("join") => {
            return Err(Error::Forbidden(format!(
                "{} is already in the room",
                recipient.user_id
            )));
        }
        Some("ban") => {
            return Err(Error::Forbidden(format!(
                "{} is banned from the room",
                recipient.user_id
            )));
        }
        _ => {}
    }
    services.limits.message.check(sender.user_id.as_str())?;
    if remote {
        // The invitee's server signs the invite before it is stored.
        let mut content = json!({ "membership": "invite" });
        if let Some(reason) = &recipient.reason {
            content["reason"] = json!(reason);
        }
        crate::federation::invites::invite_remote(
            &services,
            &request.body.room_id,
            &sender.user_id,
            &recipient.user_id,
            canonical_content(content)?,
        )
        .await?;
        return Ok(invite_user::v3::Response::new());
    }
    set_membership(
        &services,
        &request.body.room_id,
        &sender.user_id,
        &recipient.user_id,
        "invite",
        recipient.reason.as_deref(),
        None,
    )
    .await?;
    Ok(invite_user::v3::Response::new())
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/kick`
pub async fn kick_user_route(
    services: Arc<Services>,
    request: Ruma<kick_user::v3::Request>,
) -> Result<kick_user::v3::Response, Error> {
    let sender = request.sender()?;
    match services
        .store
        .membership(request.body.room_id.as_str(), request.body.user_id.as_str())
        .await?
        .as_deref()
    {
        Some("join" | "invite" | "knock") => {}
        _ => return Err(Error::Forbidden("the user is not in the room".into())),
    }
    set_membership(
        &services,
        &request.body.room_id,
        &sender.user_id,
        &request.body.user_id,
        "leave",
        request.body.reason.as_deref(),
        None,
    )
    .await?;
    Ok(kick_user::v3::Response::new())
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/ban`
pub async fn ban_user_route(
    services: Arc<Services>,
    request: Ruma<ban_user::v3::Request>,
) -> Result<ban_user::v3::Response, Error> {
    let sender = request.sender()?;
    set_membership(
        &services,
        &request.body.room_id,
        &sender.user_id,
        &request.body.user_id,
        "ban",
        request.body.reason.as_deref(),
        None,
    )
    .await?;
    Ok(ban_user::v3::Response::new())
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/unban`
pub async fn unban_user_route(
    services: Arc<Services>,
    request: Ruma<unban_user::v3::Request>,
) -> Result<unban_user::v3::Response, Error> {
    let sender = request.sender()?;
    if services
        .store
        .membership(request.body.room_id.as_str(), request.body.user_id.as_str())
        .await?
        .as_deref()
        != Some("ban")
    {
        return Err(Error::Forbidden("the user is not banned".into()));
    }
    set_membership(
        &services,
        &request.body.room_id,
        &sender.user_id,
        &request.body.user_id,
        "leave",
        request.body.reason.as_deref(),
        None,
    )
    .await?;
    Ok(unban_user::v3::Response::new())
}

/// # `GET /_matrix/client/v3/joined_rooms`
pub async fn joined_rooms_route(
    services: Arc<Services>,
    request: Ruma<joined_rooms::v3::Request>,
) -> Result<joined_rooms::v3::Response, Error> {
    let sender = request.sender()?;
    Ok(joined_rooms::v3::Response::new(
        services.joined_rooms(&sender.user_id).await?,
    ))
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/joined_members`
pub async fn joined_members_route(
    services: Arc<Services>,
    request: Ruma<joined_members::v3::Request>,
) -> Result<joined_members::v3::Response, Error> {
    let sender = request.sender()?;
    crate::api::client::events::require_joined(&services, &request.body.room_id, &sender.user_id)
        .await?;
    let mut joined = BTreeMap::new();
    for pdu in services.rooms.current_state(&request.body.room_id).await? {
        if pdu.event_type.to_string() != "m.room.member" {
            continue;
        }
        let content = pdu.content_value();
        if content.get("membership").and_then(Value::as_str) != Some("join") {
            continue;
        }
        let Some(user_id) = pdu
            .state_key
            .as_deref()
            .and_then(|key| UserId::parse(key).ok())
        else {
            continue;
        };
        let mut member = joined_members::v3::RoomMember::new();
        member.display_name = content
            .get("displayname")
            .and_then(Value::as_str)
            .map(str::to_owned);
        member.avatar_url = content
            .get("avatar_url")
            .and_then(Value::as_str)
            .map(Into::into);
        joined.insert(user_id, member);
    }
    Ok(joined_members::v3::Response::new(joined))
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/members`
pub async fn get_member_events_route(
    services: Arc<Services>,
    request: Ruma<get_member_events::v3::Request>,
) -> Result<get_member_events::v3::Response, Error> {
    let sender = request.sender()?;
    let body = &request.body;
    let visible = visible_to(&services, &body.room_id, &sender.user_id).await?;
    let at = body.at.as_deref().map(parse_position).transpose()?;
    let state = state_seen_at(&services, &body.room_id, &visible, at).await?;
    let members: Vec<Arc<Pdu>> = state
        .into_iter()
        .filter(|pdu| pdu.event_type.to_string() == "m.room.member")
        .filter(|pdu| {
            let content = pdu.content_value();
            let membership = content
                .get("membership")
                .and_then(Value::as_str)
                .unwrap_or("");
            let wanted = body
                .membership
                .as_ref()
                .is_none_or(|m| m.as_str() == membership);
            let unwanted = body
                .not_membership
                .as_ref()
                .is_some_and(|m| m.as_str() == membership);
            wanted && !unwanted
        })
        .collect();
    let chunk = client_state_events(&members, &body.room_id)
        .into_iter()
        .map(raw_event)
        .collect::<Result<_, _>>()?;
    Ok(get_member_events::v3::Response::new(chunk))
}
