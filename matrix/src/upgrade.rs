//! Room upgrades (`/rooms/{roomId}/upgrade`), as the specification describes them: a
//! replacement room of the new version whose `m.room.create` names its predecessor, the state
//! that carries over (name, topic, avatar, encryption, join rules, history visibility, guest
//! access, server ACLs, power levels, bans), the local aliases and the directory listing moved,
//! a tombstone in the old room naming the new one, and the old room's power levels raised so
//! that nobody keeps talking there. What members kept of the old room (its push rules, tags,
//! its place in `m.direct`) follows them when they join the new one.

use ruma::api::client::push::PushRule;
use ruma::push::{NewPushRule, NewSimplePushRule, RuleKind};
use ruma::{OwnedRoomId, OwnedUserId, RoomId, RoomVersionId, UserId};
use serde_json::{Map, Value, json};

use crate::Services;
use crate::api::client::user_data;
use crate::create_room::{RoomOptions, create_room};
use crate::error::Error;
use crate::pdu::{self, canonical_content};
use crate::rooms::NewLocalEvent;

/// The state events that carry over to the replacement room, as the specification recommends.
const TRANSFERRED_STATE: [&str; 8] = [
    "m.room.server_acl",
    "m.room.encryption",
    "m.room.name",
    "m.room.avatar",
    "m.room.topic",
    "m.room.guest_access",
    "m.room.history_visibility",
    "m.room.join_rules",
];

/// Upgrades `old` to `version` on behalf of `user`; returns the replacement room.
pub async fn upgrade_room(
    services: &Services,
    user: &UserId,
    old: &RoomId,
    version: RoomVersionId,
    additional_creators: Vec<OwnedUserId>,
) -> Result<OwnedRoomId, Error> {
    if !services.rooms.exists(old).await? {
        return Err(Error::NotFound("room not found".into()));
    }
    let new_rules = pdu::rules(&version)?;
    if services.rooms.membership(old, user).await?.as_deref() != Some("join") {
        return Err(Error::Forbidden("you are not joined to this room".into()));
    }
    let levels = services.rooms.power_levels(old).await?;
    if levels.user(user) < levels.event("m.room.tombstone", true) {
        return Err(Error::Forbidden(
            "you may not upgrade this room: it takes the power to send a tombstone".into(),
        ));
    }
    if let Some(tombstone) = services
        .rooms
        .state_event(old, "m.room.tombstone", "")
        .await?
        && tombstone.content_value().get("replacement_room").is_some()
    {
        return Err(Error::BadState(
            "this room has been upgraded already".into(),
        ));
    }
    let state = services.rooms.current_state(old).await?;
    let content_of = |event_type: &str, state_key: &str| {
        state
            .iter()
            .find(|pdu| {
                pdu.event_type.to_string() == event_type
                    && pdu.state_key.as_deref() == Some(state_key)
            })
            .map(|pdu| pdu.content_value())
    };

    // The new room's creation: the old one's extra content, the predecessor, the creators.
    let mut creation = match content_of("m.room.create", "") {
        Some(Value::Object(content)) => content,
        _ => Map::new(),
    };
    for key in [
        "room_version",
        "creator",
        "predecessor",
        "additional_creators",
    ] {
        creation.remove(key);
    }
    let last_event = services
        .store
        .forward_extremities(old.as_str())
        .await?
        .into_iter()
        .next();
    let mut predecessor = json!({ "room_id": old });
    if let Some(event_id) = last_event {
        predecessor["event_id"] = json!(event_id);
    }
    creation.insert("predecessor".into(), predecessor);
    if new_rules.authorization.additional_room_creators && !additional_creators.is_empty() {
        creation.insert("additional_creators".into(), json!(additional_creators));
    }

    // Power levels as they were, the upgrading user (unless a creator who outranks everyone)
    // able to send every state event while the room is made, then set back.
    let old_levels = match content_of("m.room.power_levels", "") {
        Some(Value::Object(content)) => content,
        _ => Map::new(),
    };
    let mut final_levels = old_levels.clone();
    let mut users = final_levels
        .get("users")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if new_rules.authorization.explicitly_privilege_room_creators {
        users.remove(user.as_str());
        for creator in &additional_creators {
            users.remove(creator.as_str());
        }
    } else {
        // Creators of the old room who outranked everyone keep the highest level.
        for creator in levels.creators() {
            users.entry(creator.clone()).or_insert(json!(100));
        }
    }
    final_levels.insert("users".into(), Value::Object(users.clone()));
    let mut creation_levels = final_levels.clone();
    let needed = creation_needs(&final_levels);
    if !new_rules.authorization.explicitly_privilege_room_creators {
        let mut raised = users;
        let current = raised
            .get(user.as_str())
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if current < needed {
            raised.insert(user.to_string(), json!(needed));
        }
        creation_levels.insert("users".into(), Value::Object(raised));
    }

    let mut options = RoomOptions::private(user.to_owned(), version);
    options.creation_content = creation;
    options.power_level_override = Some(creation_levels.clone());
    let was_public = services
        .store
        .room(old.as_str())
        .await?
        .is_some_and(|room| room.is_public);
    options.is_public = was_public;
    options.initial_state = TRANSFERRED_STATE
        .iter()
        .filter_map(|event_type| {
            content_of(event_type, "")
                .map(|content| json!({"type": event_type, "state_key": "", "content": content}))
        })
        .collect();
    if content_of("m.room.guest_access", "").is_none() {
        // No guest access in the old room is no guest access in the new one (the private
        // preset would allow it).
        options.initial_state.push(
            json!({"type": "m.room.guest_access", "state_key": "", "content": {"guest_access": "forbidden"}}),
        );
    }
    let new = create_room(services, options).await?;
    let send = |room: &RoomId, event_type: &str, state_key: &str, content: Value| {
        let room = room.to_owned();
        let (event_type, state_key) = (event_type.to_owned(), state_key.to_owned());
        async move {
            services
                .rooms
                .append(
                    &room,
                    NewLocalEvent::new(
                        user,
                        &event_type,
                        Some(&state_key),
                        canonical_content(content)?,
                    ),
                )
                .await
        }
    };
    // Bans carry over.
    for pdu in &state {
        if pdu.event_type.to_string() == "m.room.member"
            && pdu
                .content_value()
                .get("membership")
                .and_then(Value::as_str)
                == Some("ban")
            && let Some(banned) = &pdu.state_key
        {
            let mut content = json!({"membership": "ban"});
            if let Some(reason) = pdu.content_value().get("reason") {
                content["reason"] = reason.clone();
            }
            send(&new, "m.room.member", banned, content).await?;
        }
    }
    if creation_levels != final_levels {
        send(&new, "m.room.power_levels", "", Value::Object(final_levels)).await?;
    }

    // Local aliases and the canonical alias move; the directory lists the new room instead.
    for alias in services.store.room_aliases(old.as_str()).await? {
        services.store.delete_alias(&alias).await?;
        services
            .store
            .create_alias(&alias, new.as_str(), user.as_str())
            .await?;
    }
    if let Some(canonical) = content_of("m.room.canonical_alias", "")
        && canonical
            .as_object()
            .is_some_and(|content| !content.is_empty())
    {
        send(&new, "m.room.canonical_alias", "", canonical).await?;
        send(old, "m.room.canonical_alias", "", json!({})).await?;
    }
    if was_public {
        services.store.set_room_public(old.as_str(), false).await?;
    }

    // The tombstone, then the old room closed to messages and invites.
    send(
        old,
        "m.room.tombstone",
        "",
        json!({"body": "This room has been replaced", "replacement_room": new}),
    )
    .await?;
    let mut closed = old_levels;
    let users_default = closed
        .get("users_default")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let restricted = (users_default + 1).max(50);
    for key in ["events_default", "invite"] {
        let current = closed.get(key).and_then(Value::as_i64).unwrap_or(0);
        if current < restricted {
            closed.insert(key.into(), json!(restricted));
        }
    }
    if let Err(error) = send(old, "m.room.power_levels", "", Value::Object(closed)).await {
        // The upgrade stands; the old room stays open to those with the power to talk.
        tracing::warn!(%error, room_id = %old, "the old room's power levels were not raised");
    }
    carry_over(services, user, old, &new).await?;
    tracing::info!(old = %old, new = %new, "upgraded a room");
    Ok(new)
}

/// The level that every state event of the creation takes at most.
fn creation_needs(levels: &Map<String, Value>) -> i64 {
    let number =
        |key: &str, default: i64| levels.get(key).and_then(Value::as_i64).unwrap_or(default);
    let events = levels
        .get("events")
        .and_then(Value::as_object)
        .map(|events| events.values().filter_map(Value::as_i64).max().unwrap_or(0))
        .unwrap_or(0);
    [number("state_default", 50), number("ban", 50), events, 100]
        .into_iter()
        .max()
        .unwrap_or(100)
}

/// The room a room replaces, from its `m.room.create` event.
pub async fn predecessor(services: &Services, room: &RoomId) -> Result<Option<OwnedRoomId>, Error> {
    let create = services
        .rooms
        .state_event(room, "m.room.create", "")
        .await?;
    Ok(create
        .and_then(|pdu| {
            pdu.content_value()["predecessor"]["room_id"]
                .as_str()
                .map(str::to_owned)
        })
        .and_then(|room| RoomId::parse(room).ok()))
}

/// What a user kept of a room follows them to its replacement: the room's push rule, its tags,
/// and its place among their direct chats. Nothing the user already set for the new room is
/// replaced.
pub async fn carry_over(
    services: &Services,
    user: &UserId,
    old: &RoomId,
    new: &RoomId,
) -> Result<(), Error> {
    // The room's push rule.
    let rules = user_data::ruleset(services, user).await?;
    let old_rule = rules
        .get(RuleKind::Room, old.as_str())
        .map(PushRule::from)
        .filter(|_| rules.get(RuleKind::Room, new.as_str()).is_none());
    if let Some(old_rule) = old_rule {
        let enabled = old_rule.enabled;
        user_data::change_ruleset(services, user, |rules| {
            rules
                .insert(
                    NewPushRule::Room(NewSimplePushRule::new(new.to_owned(), old_rule.actions)),
                    None,
                    None,
                )
                .map_err(|e| Error::Internal(e.to_string()))?;
            rules
                .set_enabled(RuleKind::Room, new.as_str(), enabled)
                .map_err(|e| Error::Internal(e.to_string()))
        })
        .await?;
    }
    // Tags.
    let old_tags = user_data::room_tags(services, user, old).await?;
    if !old_tags.is_empty() && user_data::room_tags(services, user, new).await?.is_empty() {
        user_data::set_room_tags(services, user, new, old_tags).await?;
    }
    // Direct chats.
    if let Some(text) = services
        .store
        .account_data(user.as_str(), "", "m.direct")
        .await?
        && let Ok(Value::Object(mut direct)) = serde_json::from_str::<Value>(&text)
    {
        let mut changed = false;
        for rooms in direct.values_mut() {
            if let Some(rooms) = rooms.as_array_mut()
                && rooms.iter().any(|room| room == old.as_str())
                && !rooms.iter().any(|room| room == new.as_str())
            {
                rooms.push(json!(new));
                changed = true;
            }
        }
        if changed {
            services
                .store
                .set_account_data(
                    user.as_str(),
                    "",
                    "m.direct",
                    &Value::Object(direct).to_string(),
                )
                .await?;
        }
    }
    Ok(())
}
