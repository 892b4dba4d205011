//! Versions, `.well-known`, capabilities and profiles.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use ruma::api::client::discovery::discover_homeserver::{self, HomeserverInfo};
use ruma::api::client::discovery::get_supported_versions;
use ruma::api::client::profile::{get_profile, get_profile_field, set_profile_field};
use ruma::api::client::user_directory::search_users;
use ruma::profile::{ProfileFieldName, ProfileFieldValue};
use ruma::{OwnedMxcUri, UserId};
use serde_json::{Value, json};

use crate::Services;
use crate::api::Authenticated;
use crate::api::ruma_wrapper::Ruma;
use crate::error::Error;
use crate::pdu::SUPPORTED_ROOM_VERSIONS;
use crate::rooms::NewLocalEvent;

/// # `GET /_matrix/client/versions`
pub async fn get_supported_versions_route(
    _services: Arc<Services>,
    _request: Ruma<get_supported_versions::Request>,
) -> Result<get_supported_versions::Response, Error> {
    let versions = [
        "r0.5.0", "r0.6.0", "r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7",
        "v1.8", "v1.9", "v1.10", "v1.11", "v1.12",
    ];
    let mut response =
        get_supported_versions::Response::new(versions.iter().map(|v| (*v).to_owned()).collect());
    // What clients probe for: cross-signing (Element sets it up at login only when this is
    // advertised) and authenticated media (MSC3916, stable in v1.11).
    response.unstable_features = BTreeMap::from([
        ("org.matrix.e2e_cross_signing".to_owned(), true),
        ("org.matrix.msc3916.stable".to_owned(), true),
    ]);
    Ok(response)
}

/// # `GET /_matrix/client/v3/thirdparty/protocols`: no third-party networks are bridged
/// through application services here (XMPP is native), so none are listed.
pub async fn get_protocols_route(
    _services: Arc<Services>,
    _request: Ruma<ruma::api::client::thirdparty::get_protocols::v3::Request>,
) -> Result<ruma::api::client::thirdparty::get_protocols::v3::Response, Error> {
    Ok(ruma::api::client::thirdparty::get_protocols::v3::Response::new(BTreeMap::new()))
}

/// The base URL clients reach the client API at.
pub fn client_base_url(services: &Services) -> String {
    match &services.config.server.public_baseurl {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => format!("http://{}", services.config.client_api.bind),
    }
}

/// # `GET /.well-known/matrix/client`
pub async fn discover_homeserver_route(
    services: Arc<Services>,
    _request: Ruma<discover_homeserver::Request>,
) -> Result<discover_homeserver::Response, Error> {
    Ok(discover_homeserver::Response::new(HomeserverInfo::new(
        client_base_url(&services),
    )))
}

/// # `GET /.well-known/matrix/server`
pub async fn well_known_server_route(State(services): State<Arc<Services>>) -> Json<Value> {
    let server = if services.config.server.name.as_str().contains(':') {
        services.config.server.name.to_string()
    } else {
        format!(
            "{}:{}",
            services.config.server.name.host(),
            services.config.federation.bind.port()
        )
    };
    Json(json!({ "m.server": server }))
}

/// # `GET /_matrix/client/v3/capabilities`
///
/// Written out whole, defaults included (`m.set_displayname`, `m.set_avatar_url`), as Synapse
/// answers and as clients of the versions this server advertises read it.
pub async fn get_capabilities_route(
    State(services): State<Arc<Services>>,
    _caller: Authenticated,
) -> Json<Value> {
    let available: serde_json::Map<String, Value> = SUPPORTED_ROOM_VERSIONS
        .iter()
        .map(|version| (version.to_string(), json!("stable")))
        .collect();
    Json(json!({"capabilities": {
        "m.change_password": {"enabled": true},
        "m.set_displayname": {"enabled": true},
        "m.set_avatar_url": {"enabled": true},
        "m.3pid_changes": {"enabled": false},
        "m.get_login_token": {"enabled": false},
        "m.room_versions": {"default": services.default_room_version().to_string(), "available": available},
    }}))
}

/// Whether the user directory shows `user` to `searcher`: users who share a room with the
/// searcher, and (as Synapse does by default) users in a public room; the ghosts of XMPP users
/// only to those who share a room with them.
async fn listed(services: &Services, searcher: &UserId, user: &UserId) -> Result<bool, Error> {
    if services
        .store
        .share_a_room(searcher.as_str(), user.as_str())
        .await?
    {
        return Ok(true);
    }
    if user
        .localpart()
        .starts_with(super::account::RESERVED_PREFIX)
    {
        return Ok(false);
    }
    for room in services.joined_rooms(user).await? {
        let value = async |event_type: &str, key: &str| -> Result<Value, Error> {
            Ok(services
                .rooms
                .state_event(&room, event_type, "")
                .await?
                .map(|pdu| pdu.content_value()[key].take())
                .unwrap_or_default())
        };
        if value("m.room.join_rules", "join_rule").await? == "public"
            || value("m.room.history_visibility", "history_visibility").await? == "world_readable"
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// # `GET /_matrix/client/v3/voip/turnServer`
///
/// Credentials of the caller's own for the configured TURN servers (the TURN REST API:
/// `<expiry>:<user id>` and its HMAC-SHA1 under the shared secret, as coturn checks them); `{}`
/// when none are configured, as Synapse answers.
pub async fn get_turn_server_route(
    State(services): State<Arc<Services>>,
    Authenticated(sender): Authenticated,
) -> Json<Value> {
    use base64::Engine as _;
    let voip = &services.config.voip;
    let Some(secret) = voip
        .turn_shared_secret
        .as_deref()
        .filter(|_| !voip.turn_uris.is_empty())
    else {
        return Json(json!({}));
    };
    let lifetime = voip.turn_user_lifetime_secs;
    let expiry = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |now| now.as_secs())
        .saturating_add(lifetime);
    let username = format!("{expiry}:{}", sender.user_id);
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
    let password = base64::engine::general_purpose::STANDARD
        .encode(ring::hmac::sign(&key, username.as_bytes()).as_ref());
    Json(json!({
        "username": username,
        "password": password,
        "uris": voip.turn_uris,
        "ttl": lifetime,
    }))
}

/// Makes an account the server makes on demand when an authenticated user looks it up, within
/// the user's rate limit (each one may make the server contact another).
async fn provision_for<T>(
    services: &Services,
    request: &Ruma<T>,
    user_id: &UserId,
) -> Result<(), Error> {
    let Ok(sender) = request.sender() else {
        return Ok(());
    };
    if services.store.user(user_id.as_str()).await?.is_some() || !services.is_local(user_id) {
        return Ok(());
    }
    services.limits.message.check(sender.user_id.as_str())?;
    services.provision_user(user_id).await?;
    Ok(())
}

/// # `GET /_matrix/client/v3/profile/{userId}`
pub async fn get_profile_route(
    services: Arc<Services>,
    request: Ruma<get_profile::v3::Request>,
) -> Result<get_profile::v3::Response, Error> {
    if !services.is_local(&request.body.user_id) {
        let profile =
            crate::federation::directory::remote_profile(&services, &request.body.user_id, None)
                .await?;
        let mut response = get_profile::v3::Response::new();
        for (key, value) in profile.into_iter().filter(|(_, value)| !value.is_null()) {
            response.data.set(key, value);
        }
        return Ok(response);
    }
    provision_for(&services, &request, &request.body.user_id).await?;
    let user = services
        .store
        .user(request.body.user_id.as_str())
        .await?
        .filter(|user| !user.deactivated)
        .ok_or_else(|| Error::NotFound("profile not found".into()))?;
    let mut response = get_profile::v3::Response::new();
    if let Some(name) = user.displayname {
        response.data.set("displayname".into(), json!(name));
    }
    if let Some(avatar) = user.avatar_url {
        response.data.set("avatar_url".into(), json!(avatar));
    }
    Ok(response)
}

/// # `GET /_matrix/client/v3/profile/{userId}/{keyName}`
pub async fn get_profile_field_route(
    services: Arc<Services>,
    request: Ruma<get_profile_field::v3::Request>,
) -> Result<get_profile_field::v3::Response, Error> {
    // A field that is not set is an empty object, as Synapse answers (the account exists).
    let mut response =
        get_profile_field::v3::Response::new(ProfileFieldValue::DisplayName(String::new()));
    if !services.is_local(&request.body.user_id) {
        let field = request.body.field.as_str();
        let profile = crate::federation::directory::remote_profile(
            &services,
            &request.body.user_id,
            Some(field),
        )
        .await?;
        response.value = match (
            &request.body.field,
            profile.get(field).and_then(Value::as_str),
        ) {
            (ProfileFieldName::DisplayName, Some(name)) => {
                Some(ProfileFieldValue::DisplayName(name.to_owned()))
            }
            (ProfileFieldName::AvatarUrl, Some(url)) => {
                Some(ProfileFieldValue::AvatarUrl(OwnedMxcUri::from(url)))
            }
            _ => None,
        };
        return Ok(response);
    }
    provision_for(&services, &request, &request.body.user_id).await?;
    let user = services
        .store
        .user(request.body.user_id.as_str())
        .await?
        .filter(|user| !user.deactivated)
        .ok_or_else(|| Error::NotFound("profile not found".into()))?;
    let value = match request.body.field {
        ProfileFieldName::DisplayName => user.displayname.map(ProfileFieldValue::DisplayName),
        ProfileFieldName::AvatarUrl => user
            .avatar_url
            .map(|url| ProfileFieldValue::AvatarUrl(OwnedMxcUri::from(url))),
        _ => None,
    };
    response.value = value;
    Ok(response)
}

/// # `PUT /_matrix/client/v3/profile/{userId}/{keyName}`
pub async fn set_profile_field_route(
    services: Arc<Services>,
    request: Ruma<set_profile_field::v3::Request>,
) -> Result<set_profile_field::v3::Response, Error> {
    let sender = request.sender()?;
    if sender.user_id != request.body.user_id {
        return Err(Error::Forbidden(
            "you can only change your own profile".into(),
        ));
    }
    match &request.body.value {
        ProfileFieldValue::DisplayName(name) => {
            let name = (!name.is_empty()).then_some(name.as_str());
            services
                .store
                .set_displayname(sender.user_id.as_str(), name)
                .await?;
        }
        ProfileFieldValue::AvatarUrl(url) => {
            let url = (!url.as_str().is_empty()).then_some(url.as_str());
            services
                .store
                .set_avatar_url(sender.user_id.as_str(), url)
                .await?;
        }
        _ => {
            return Err(Error::Unsupported(
                "only displayname and avatar_url are supported".into(),
            ));
        }
    }
    propagate_profile(&services, &sender.user_id).await?;
    Ok(set_profile_field::v3::Response::new())
}

/// Sends a new member event with the user's profile to every room they are joined to.
pub async fn propagate_profile(services: &Services, user_id: &UserId) -> Result<(), Error> {
    let user = services
        .store
        .user(user_id.as_str())
        .await?
        .ok_or_else(|| Error::NotFound("no such user".into()))?;
    for room_id in services.joined_rooms(user_id).await? {
        let Some(current) = services
            .rooms
            .state_event(&room_id, "m.room.member", user_id.as_str())
            .await?
        else {
            continue;
        };
        let mut content = current.content_value();
        let Some(object) = content.as_object_mut() else {
            continue;
        };
        for (key, value) in [
            ("displayname", &user.displayname),
            ("avatar_url", &user.avatar_url),
        ] {
            match value {
                Some(value) => object.insert(key.into(), json!(value)),
                None => object.remove(key),
            };
        }
        let content = crate::pdu::canonical_content(content)?;
        if let Err(error) = services
            .rooms
            .append(
                &room_id,
                NewLocalEvent::new(user_id, "m.room.member", Some(user_id.as_str()), content),
            )
            .await
        {
            tracing::warn!(room_id = %room_id, %error, "could not update the member event");
        }
    }
    Ok(())
}

/// # `POST /_matrix/client/v3/user_directory/search`
///
/// The directory is this server's active accounts, matched on the user name and the display
/// name, case-insensitively: the people of the organisation the server belongs to. The users
/// of other networks (their ghosts) are listed only to those who share a room with them: the
/// directory does not tell who talks to whom outside the organisation.
pub async fn search_users_route(
    services: Arc<Services>,
    request: Ruma<search_users::v3::Request>,
) -> Result<search_users::v3::Response, Error> {
    let searcher = request.sender()?.user_id.clone();
    let term = request.body.search_term.trim().to_lowercase();
    if term.is_empty() {
        return Ok(search_users::v3::Response::new(vec![], false));
    }
    let limit = u64::from(request.body.limit).clamp(1, 50) as usize;
    // The query also matches the server name; keep the accounts the term really names.
    let candidates = services
        .store
        .search_users(&term, i64::try_from(limit * 4 + 1).unwrap_or(201))
        .await?;
    let mut results = Vec::new();
    let mut limited = candidates.len() > limit * 4;
    for user in candidates {
        let Ok(user_id) = UserId::parse(&user.user_id) else {
            continue;
        };
        let named = user_id.localpart().to_lowercase().contains(&term)
            || user
                .displayname
                .as_deref()
                .is_some_and(|name| name.to_lowercase().contains(&term));
        if !named {
            continue;
        }
        if !listed(&services, &searcher, &user_id).await? {
            continue;
        }
        if results.len() == limit {
            limited = true;
            break;
        }
        let mut entry = search_users::v3::User::new(user_id);
        entry.display_name = user.displayname;
        entry.avatar_url = user.avatar_url.map(OwnedMxcUri::from);
        results.push(entry);
    }
    Ok(search_users::v3::Response::new(results, limited))
}
