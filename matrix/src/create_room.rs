//! Creating a room: the `m.room.create` event and the state a new room starts with (the
//! creator's membership, power levels, alias, join rules, history visibility, guest access,
//! initial state, name, topic and invites), in the order the specification gives.
//!
//! The client API's `createRoom` and the server itself (rooms made for XMPP contacts) both
//! create rooms through [`create_room`].

use ruma::api::client::room::create_room::v3::RoomPreset;
use ruma::{OwnedRoomAliasId, OwnedRoomId, OwnedUserId, RoomAliasId, RoomVersionId, UserId};
use serde_json::{Map, Value, json};

use crate::Services;
use crate::error::Error;
use crate::pdu::{self, canonical_content};
use crate::rooms::NewLocalEvent;

/// What a new room is made with.
#[derive(Debug, Clone)]
pub struct RoomOptions {
    pub creator: OwnedUserId,
    pub version: RoomVersionId,
    pub preset: RoomPreset,
    /// Listed in the public room directory.
    pub is_public: bool,
    /// The local part of an alias on this server.
    pub alias_name: Option<String>,
    pub name: Option<String>,
    pub topic: Option<String>,
    pub invite: Vec<OwnedUserId>,
    /// The invites are to a direct chat (`is_direct` in their member events).
    pub is_direct: bool,
    /// Extra content of the `m.room.create` event.
    pub creation_content: Map<String, Value>,
    /// Merged into the power levels the preset gives.
    pub power_level_override: Option<Map<String, Value>>,
    /// State events (`type`, `state_key`, `content`) sent after the preset's.
    pub initial_state: Vec<Value>,
}

impl RoomOptions {
    /// A private room of `creator` of room version `version`, with nothing else.
    pub fn private(creator: OwnedUserId, version: ruma::RoomVersionId) -> RoomOptions {
        RoomOptions {
            creator,
            version,
            preset: RoomPreset::PrivateChat,
            is_public: false,
            alias_name: None,
            name: None,
            topic: None,
            invite: vec![],
            is_direct: false,
            creation_content: Map::new(),
            power_level_override: None,
            initial_state: vec![],
        }
    }
}

fn preset_defaults(preset: &RoomPreset) -> (&'static str, &'static str, bool) {
    // (join rule, history visibility, guests may join)
    match preset {
        RoomPreset::PublicChat => ("public", "shared", false),
        _ => ("invite", "shared", true),
    }
}

/// Merges `overlay` into `base`, key by key, one level deep for objects.
fn merge(base: &mut Map<String, Value>, overlay: Map<String, Value>) {
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

/// Checks the options before anything is written: the alias is free and well formed, nobody
/// invites themselves, no initial state event takes the place of the preset's.
async fn check(
    services: &Services,
    options: &RoomOptions,
) -> Result<Option<OwnedRoomAliasId>, Error> {
    pdu::rules(&options.version)?;
    if options.invite.contains(&options.creator) {
        return Err(Error::InvalidParam("you cannot invite yourself".into()));
    }
    for event in &options.initial_state {
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
        if event
            .get("content")
            .is_some_and(|content| !content.is_object())
        {
            return Err(Error::BadJson(
                "the content of an initial_state event must be an object".into(),
            ));
        }
    }
    let Some(name) = &options.alias_name else {
        return Ok(None);
    };
    let alias = RoomAliasId::parse(format!("#{name}:{}", services.server_name))
        .map_err(|e| Error::InvalidParam(format!("invalid room_alias_name: {e}")))?;
    if services.store.alias(alias.as_str()).await?.is_some() {
        return Err(Error::RoomInUse);
    }
    Ok(Some(alias))
}

/// The content of a member event of a local user, with their profile (display name and
/// avatar), as joins and invites carry it.
pub async fn member_content(
    services: &Services,
    user: &UserId,
    membership: &str,
) -> Result<Value, Error> {
    let mut content = json!({ "membership": membership });
    if let Some(profile) = services.store.user(user.as_str()).await? {
        if let Some(name) = profile.displayname {
            content["displayname"] = json!(name);
        }
        if let Some(avatar) = profile.avatar_url {
            content["avatar_url"] = json!(avatar);
        }
    }
    Ok(content)
}

/// Creates a room as `options` say; returns its id.
pub async fn create_room(services: &Services, options: RoomOptions) -> Result<OwnedRoomId, Error> {
    let alias = check(services, &options).await?;
    let RoomOptions {
        creator,
        version,
        preset,
        is_public,
        name,
        topic,
        invite,
        is_direct,
        mut creation_content,
        power_level_override,
        initial_state,
        ..
    } = options;
    let rules = pdu::rules(&version)?;
    creation_content.remove("room_version");
    if !rules.authorization.additional_room_creators {
        creation_content.remove("additional_creators");
    }
    let room_id = services
        .rooms
        .create_room(
            &creator,
            &version,
            canonical_content(Value::Object(creation_content))?,
            is_public,
        )
        .await?;
    let send = |event_type: &str, state_key: &str, content: Value| {
        let room_id = room_id.clone();
        let creator = creator.clone();
        let (event_type, state_key) = (event_type.to_owned(), state_key.to_owned());
        async move {
            let content = canonical_content(content)?;
            services
                .rooms
                .append(
                    &room_id,
                    NewLocalEvent::new(&creator, &event_type, Some(&state_key), content),
                )
                .await
        }
    };
    send(
        "m.room.member",
        creator.as_str(),
        member_content(services, &creator, "join").await?,
    )
    .await?;

    // Power levels: the defaults of the preset, then the override.
    let mut users = Map::new();
    if !rules.authorization.explicitly_privilege_room_creators {
        users.insert(creator.to_string(), json!(100));
    }
    if preset == RoomPreset::TrustedPrivateChat {
        for invitee in &invite {
            users.insert(invitee.to_string(), json!(100));
        }
    }
    let mut power_levels = Map::new();
    if let Value::Object(defaults) = json!({
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
        "invite": if preset == RoomPreset::PublicChat { 50 } else { 0 },
        "notifications": {"room": 50},
    }) {
        power_levels = defaults;
    }
    if let Some(overlay) = power_level_override {
        merge(&mut power_levels, overlay);
    }
    send("m.room.power_levels", "", Value::Object(power_levels)).await?;
    if let Some(alias) = &alias {
        send("m.room.canonical_alias", "", json!({"alias": alias})).await?;
    }
    let (join_rule, history, guests) = preset_defaults(&preset);
    send("m.room.join_rules", "", json!({"join_rule": join_rule})).await?;
    send(
        "m.room.history_visibility",
        "",
        json!({"history_visibility": history}),
    )
    .await?;
    if guests {
        send(
            "m.room.guest_access",
            "",
            json!({"guest_access": "can_join"}),
        )
        .await?;
    }
    for event in initial_state {
        let event_type = event
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let state_key = event
            .get("state_key")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let content = event.get("content").cloned().unwrap_or(json!({}));
        send(&event_type, &state_key, content).await?;
    }
    if let Some(name) = &name {
        send("m.room.name", "", json!({"name": name})).await?;
    }
    if let Some(topic) = &topic {
        send(
            "m.room.topic",
            "",
            json!({"topic": topic, "m.topic": [{"mimetype": "text/plain", "body": topic}]}),
        )
        .await?;
    }
    for invitee in &invite {
        let mut content = member_content(services, invitee, "invite").await?;
        if is_direct {
            content["is_direct"] = json!(true);
        }
        if services.is_local(invitee) {
            services.provision_user(invitee).await?;
            send("m.room.member", invitee.as_str(), content).await?;
        } else {
            // Another server's user: their server signs the invite before it is stored.
            crate::federation::invites::invite_remote(
                services,
                &room_id,
                &creator,
                invitee,
                canonical_content(content)?,
            )
            .await?;
        }
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
    Ok(room_id)
}
