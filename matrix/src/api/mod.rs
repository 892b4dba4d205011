//! HTTP APIs: the router, typed request extraction, and the endpoint handlers.

pub mod admin;
pub mod client;
pub mod client_address;
pub mod guests;
pub mod ruma_wrapper;

use std::sync::Arc;

use axum::Router;
use axum::response::IntoResponse;
use axum::routing::get;
use http::Method;
use tower_http::cors::{Any, CorsLayer};
use tower_http::trace::TraceLayer;

use crate::Services;
use crate::error::Error;
use client::{
    account, backup, discovery, ephemeral, keys, legacy, media, membership, message, notifications,
    relations, room, search, sync, user_data,
};
use ruma_wrapper::route;

/// The client-server API router.
pub fn client_router(services: Arc<Services>) -> Router {
    let router = Router::new();
    // Discovery and accounts.
    let router = route(router, discovery::get_supported_versions_route);
    let router = route(router, discovery::discover_homeserver_route);
    let router = router.route(
        "/.well-known/matrix/server",
        get(discovery::well_known_server_route),
    );
    let router = router
        .route(
            "/_matrix/client/v3/capabilities",
            get(discovery::get_capabilities_route),
        )
        .route(
            "/_matrix/client/r0/capabilities",
            get(discovery::get_capabilities_route),
        )
        .route(
            "/_matrix/client/v3/voip/turnServer",
            get(discovery::get_turn_server_route),
        )
        .route(
            "/_matrix/client/v1/rooms/{room_id}/hierarchy",
            get(crate::hierarchy::client_route),
        )
        .route(
            "/_matrix/client/v1/rooms/{room_id}/timestamp_to_event",
            get(crate::timestamps::client_route),
        )
        .route(
            "/_matrix/client/v3/user/{user_id}/openid/request_token",
            axum::routing::post(crate::openid::request_token_route),
        )
        .route(
            "/_matrix/client/r0/user/{user_id}/openid/request_token",
            axum::routing::post(crate::openid::request_token_route),
        )
        .route(
            "/_matrix/client/r0/rooms/{room_id}/send/{event_type}",
            axum::routing::post(message::post_message_event_route),
        )
        .route(
            "/_matrix/client/v3/rooms/{room_id}/send/{event_type}",
            axum::routing::post(message::post_message_event_route),
        )
        .route(
            "/_matrix/client/r0/voip/turnServer",
            get(discovery::get_turn_server_route),
        );
    let router = route(router, account::register_route);
    let router = route(router, account::get_username_availability_route);
    let router = route(router, account::get_login_types_route);
    let router = route(router, account::login_route);
    let router = route(router, account::logout_route);
    let router = route(router, account::logout_all_route);
    let router = route(router, account::whoami_route);
    let router = route(router, account::change_password_route);
    let router = route(router, account::deactivate_route);
    let router = route(router, account::get_devices_route);
    let router = route(router, account::get_device_route);
    let router = route(router, account::update_device_route);
    let router = route(router, account::delete_device_route);
    let router = route(router, account::delete_devices_route);
    // Profiles.
    let router = route(router, discovery::get_profile_route);
    let router = route(router, discovery::get_profile_field_route);
    let router = route(router, discovery::set_profile_field_route);
    let router = route(router, discovery::search_users_route);
    // Rooms, aliases, directory.
    let router = route(router, room::create_room_route);
    let router = route(router, room::create_alias_route);
    let router = route(router, room::get_alias_route);
    let router = route(router, room::delete_alias_route);
    let router = route(router, room::get_room_aliases_route);
    let router = route(router, room::get_public_rooms_route);
    let router = route(router, room::get_public_rooms_filtered_route);
    let router = route(router, room::get_room_visibility_route);
    let router = route(router, room::set_room_visibility_route);
    let router = route(router, room::upgrade_room_route);
    // Membership.
    let router = route(router, membership::join_room_by_id_route);
    let router = route(router, membership::join_room_by_id_or_alias_route);
    let router = route(router, membership::knock_room_route);
    let router = route(router, membership::leave_room_route);
    let router = route(router, membership::forget_room_route);
    let router = route(router, membership::invite_user_route);
    let router = route(router, membership::kick_user_route);
    let router = route(router, membership::ban_user_route);
    let router = route(router, membership::unban_user_route);
    let router = route(router, membership::joined_rooms_route);
    let router = route(router, membership::joined_members_route);
    let router = route(router, membership::get_member_events_route);
    // Events and state.
    let router = route(router, message::send_message_event_route);
    let router = route(router, message::redact_event_route);
    let router = route(router, message::send_state_event_route);
    let router = route(router, message::get_state_events_route);
    let router = route(router, message::get_state_event_for_key_route);
    let router = route(router, message::get_room_event_route);
    let router = route(router, message::get_message_events_route);
    let router = route(router, message::get_context_route);
    let router = ruma_wrapper::route_completed(
        router,
        sync::sync_events_route,
        Some(sync::complete_response),
    );
    let router = route(router, relations::get_relating_events_route);
    let router = route(router, relations::get_relating_events_with_rel_type_route);
    let router = route(
        router,
        relations::get_relating_events_with_rel_type_and_event_type_route,
    );
    let router = route(router, relations::get_threads_route);
    // Ephemeral data and presence.
    let router = route(router, ephemeral::create_typing_event_route);
    let router = route(router, ephemeral::create_receipt_route);
    let router = route(router, ephemeral::set_read_marker_route);
    let router = route(router, ephemeral::set_presence_route);
    let router = route(router, ephemeral::get_presence_route);
    // Account data, filters, push rules.
    let router = route(router, user_data::set_global_account_data_route);
    let router = route(router, user_data::get_global_account_data_route);
    let router = route(router, user_data::set_room_account_data_route);
    let router = route(router, user_data::get_room_account_data_route);
    let router = route(router, user_data::get_tags_route);
    let router = route(router, user_data::create_tag_route);
    let router = route(router, user_data::delete_tag_route);
    let router = route(router, discovery::get_protocols_route);
    let router = route(router, account::get_3pids_route);
    let router = route(router, user_data::create_filter_route);
    let router = route(router, user_data::get_filter_route);
    let mut router = router;
    for version in ["v3", "r0"] {
        router = router
            .route(
                &format!("/_matrix/client/{version}/events"),
                get(legacy::get_events_route),
            )
            .route(
                &format!("/_matrix/client/{version}/initialSync"),
                get(legacy::initial_sync_route),
            )
            .route(
                &format!("/_matrix/client/{version}/rooms/{{room_id}}/initialSync"),
                get(legacy::room_initial_sync_route),
            );
        for (path, handler) in [
            ("pushrules", get(user_data::get_pushrules_all_route)),
            (
                "pushrules/global",
                get(user_data::get_pushrules_global_scope_route),
            ),
        ] {
            router = router
                .route(
                    &format!("/_matrix/client/{version}/{path}"),
                    handler.clone(),
                )
                .route(&format!("/_matrix/client/{version}/{path}/"), handler);
        }
    }
    let router = route(router, user_data::get_pushrule_route);
    let router = route(router, user_data::set_pushrule_route);
    let router = route(router, user_data::delete_pushrule_route);
    let router = route(router, user_data::get_pushrule_enabled_route);
    let router = route(router, user_data::set_pushrule_enabled_route);
    let router = route(router, user_data::get_pushrule_actions_route);
    let router = route(router, user_data::set_pushrule_actions_route);
    let router = router
        .route(
            "/_matrix/client/v3/pushers",
            get(notifications::get_pushers_route),
        )
        .route(
            "/_matrix/client/r0/pushers",
            get(notifications::get_pushers_route),
        )
        .route(
            "/_matrix/client/v3/pushers/set",
            axum::routing::post(notifications::set_pusher_route),
        )
        .route(
            "/_matrix/client/r0/pushers/set",
            axum::routing::post(notifications::set_pusher_route),
        )
        .route(
            "/_matrix/client/v3/search",
            axum::routing::post(search::search_route),
        )
        .route(
            "/_matrix/client/r0/search",
            axum::routing::post(search::search_route),
        )
        .route(
            "/_matrix/client/v3/notifications",
            get(notifications::get_notifications_route),
        )
        .route(
            "/_matrix/client/r0/notifications",
            get(notifications::get_notifications_route),
        );
    // End-to-end encryption.
    let router = route(router, keys::upload_keys_route);
    let router = route(router, keys::get_keys_route);
    let router = route(router, keys::claim_keys_route);
    let router = route(router, keys::get_key_changes_route);
    let router = route(router, keys::upload_signing_keys_route);
    let router = route(router, keys::upload_signatures_route);
    let router = route(router, keys::send_event_to_device_route);
    // Key backup.
    let router = route(router, backup::create_backup_version_route);
    let router = route(router, backup::update_backup_version_route);
    let router = route(router, backup::get_latest_backup_info_route);
    let router = route(router, backup::get_backup_info_route);
    let router = route(router, backup::delete_backup_version_route);
    let router = route(router, backup::add_backup_keys_route);
    let router = route(router, backup::add_backup_keys_for_room_route);
    let router = route(router, backup::add_backup_keys_for_session_route);
    let router = route(router, backup::get_backup_keys_route);
    let router = route(router, backup::get_backup_keys_for_room_route);
    let router = route(router, backup::get_backup_keys_for_session_route);
    let router = route(router, backup::delete_backup_keys_route);
    let router = route(router, backup::delete_backup_keys_for_room_route);
    let router = route(router, backup::delete_backup_keys_for_session_route);
    // Media.
    let router = route(router, media::create_content_route);
    let router = route(router, media::get_content_route);
    let router = route(router, media::get_content_as_filename_route);
    let router = route(router, media::get_content_thumbnail_route);
    let router = route(router, media::get_media_config_route);
    let router = route(router, media::legacy_get_content_route);
    let router = route(router, media::legacy_get_content_as_filename_route);
    let router = route(router, media::legacy_get_content_thumbnail_route);
    let router = route(router, media::legacy_get_media_config_route);

    router
        .merge(admin::routes())
        .fallback(unrecognized)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::map_response(media_headers))
        .layer(TraceLayer::new_for_http())
        .layer(
            CorsLayer::new()
                .allow_origin(Any)
                .allow_methods([
                    Method::GET,
                    Method::POST,
                    Method::PUT,
                    Method::DELETE,
                    Method::OPTIONS,
                ])
                // Named, as the specification recommends: a wildcard does not cover
                // `Authorization` in browsers.
                .allow_headers([
                    http::header::ORIGIN,
                    http::HeaderName::from_static("x-requested-with"),
                    http::header::CONTENT_TYPE,
                    http::header::ACCEPT,
                    http::header::AUTHORIZATION,
                ]),
        )
        .with_state(services)
}

/// What a browser may do with media that anyone could have uploaded: never guess another
/// content type than the one sent (`nosniff`), and treat the content as a sandboxed document
/// that runs no script and loads nothing from elsewhere, should it be opened directly.
const MEDIA_CONTENT_SECURITY_POLICY: &str = "sandbox; default-src 'none'; script-src 'none'; \
    plugin-types application/pdf; style-src 'unsafe-inline'; media-src 'self'; object-src 'self';";

/// Adds the media headers to every response of the media endpoints (errors included).
async fn media_headers(
    uri: http::Uri,
    mut response: axum::response::Response,
) -> axum::response::Response {
    let path = uri.path();
    if path.starts_with("/_matrix/media/") || path.starts_with("/_matrix/client/v1/media/") {
        let headers = response.headers_mut();
        headers.insert(
            http::header::X_CONTENT_TYPE_OPTIONS,
            http::HeaderValue::from_static("nosniff"),
        );
        headers.insert(
            http::header::CONTENT_SECURITY_POLICY,
            http::HeaderValue::from_static(MEDIA_CONTENT_SECURITY_POLICY),
        );
    }
    response
}

/// The access token of a request: `Authorization: Bearer …`, else the `access_token` query
/// parameter (deprecated, still sent by some clients). An `Authorization` header of another
/// scheme is taken whole, as a token that matches nothing (`M_UNKNOWN_TOKEN`, not missing).
pub(crate) fn bearer_token(headers: &http::HeaderMap, query: Option<&str>) -> Option<String> {
    match headers.get(http::header::AUTHORIZATION) {
        Some(value) => {
            let value = String::from_utf8_lossy(value.as_bytes());
            Some(match value.strip_prefix("Bearer ") {
                Some(token) => token.to_owned(),
                None => value.into_owned(),
            })
        }
        None => query.map(str::to_owned),
    }
}

/// The authenticated sender of a request, for the handlers that answer JSON of their own
/// rather than through ruma's types.
pub struct Authenticated(pub ruma_wrapper::Sender);

impl axum::extract::FromRequestParts<Arc<Services>> for Authenticated {
    type Rejection = axum::response::Response;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        services: &Arc<Services>,
    ) -> Result<Self, Self::Rejection> {
        let query_token =
            axum::extract::Query::<std::collections::HashMap<String, String>>::try_from_uri(
                &parts.uri,
            )
            .ok()
            .and_then(|axum::extract::Query(mut query)| query.remove("access_token"));
        let Some(token) = bearer_token(&parts.headers, query_token.as_deref()) else {
            return Err(Error::MissingToken.into_response());
        };
        let sender = services
            .authenticate(&token)
            .await
            .map_err(IntoResponse::into_response)?;
        guests::check(&sender, &parts.method, parts.uri.path())
            .map_err(IntoResponse::into_response)?;
        Ok(Authenticated(sender))
    }
}

async fn unrecognized() -> impl IntoResponse {
    Error::Unrecognized
}

async fn method_not_allowed() -> impl IntoResponse {
    Error::MethodNotAllowed
}
