//! The federation listener: TLS on `federation.bind`, serving the server's signing keys and
//! version. A self-signed certificate for the server name is generated once and kept in the
//! data directory when none is configured.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::{get, post, put};
use axum_server::tls_rustls::RustlsConfig;
use causeway_matrix::Services;
use causeway_matrix::federation;
use serde_json::{Value, json};

/// The certificate and key files: configured, or generated into the data directory.
fn certificate_paths(services: &Services) -> anyhow::Result<(PathBuf, PathBuf)> {
    let federation = &services.config.federation;
    if let (Some(cert), Some(key)) = (&federation.tls_certificate, &federation.tls_private_key) {
        return Ok((cert.clone(), key.clone()));
    }
    let dir = &services.config.server.data_dir;
    let cert = dir.join("federation.crt");
    let key = dir.join("federation.key");
    if !cert.exists() || !key.exists() {
        let host = services
            .config
            .server
            .name
            .host()
            .trim_matches(['[', ']'])
            .to_owned();
        let generated = rcgen::generate_simple_self_signed(vec![host])
            .context("generating a self-signed certificate")?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        crate::write_private(&key, generated.key_pair.serialize_pem().as_bytes())
            .with_context(|| format!("writing {}", key.display()))?;
        std::fs::write(&cert, generated.cert.pem())
            .with_context(|| format!("writing {}", cert.display()))?;
        tracing::info!(path = %cert.display(), "generated a self-signed federation certificate");
    }
    Ok((cert, key))
}

/// The signed `GET /_matrix/key/v2/server` document.
pub fn server_keys(services: &Services) -> anyhow::Result<Value> {
    causeway_matrix::federation::keys::own_key_document(&services.server_name, &services.key)
        .map_err(anyhow::Error::msg)
}

async fn server_keys_route(State(services): State<Arc<Services>>) -> axum::response::Response {
    use axum::response::IntoResponse;
    match server_keys(&services) {
        Ok(document) => Json(document).into_response(),
        Err(error) => causeway_matrix::error::Error::Internal(error.to_string()).into_response(),
    }
}

async fn version_route() -> Json<Value> {
    Json(json!({ "server": { "name": "Causeway", "version": env!("CARGO_PKG_VERSION") } }))
}

/// The federation router.
pub fn router(services: Arc<Services>) -> Router {
    Router::new()
        .route("/_matrix/key/v2/server", get(server_keys_route))
        .route("/_matrix/federation/v1/version", get(version_route))
        .route(
            "/_matrix/key/v2/query",
            axum::routing::post(causeway_matrix::federation::server::key_query_route),
        )
        .route(
            "/_matrix/key/v2/query/{server_name}",
            get(causeway_matrix::federation::server::key_query_server_route),
        )
        .route(
            "/_matrix/federation/v1/query/directory",
            get(causeway_matrix::federation::server::query_directory_route),
        )
        .route(
            "/_matrix/federation/v1/query/profile",
            get(causeway_matrix::federation::server::query_profile_route),
        )
        .route(
            "/_matrix/federation/v1/make_knock/{room_id}/{user_id}",
            get(federation::knocks::make_knock_route),
        )
        .route(
            "/_matrix/federation/v1/send_knock/{room_id}/{event_id}",
            put(federation::knocks::send_knock_route),
        )
        .route(
            "/_matrix/federation/v1/publicRooms",
            get(federation::directory::public_rooms_route)
                .post(federation::directory::public_rooms_filtered_route),
        )
        .route(
            "/_matrix/federation/v1/send/{txn_id}",
            put(federation::transactions::send_route),
        )
        .route(
            "/_matrix/federation/v1/make_join/{room_id}/{user_id}",
            get(federation::membership::make_join_route),
        )
        .route(
            "/_matrix/federation/v1/send_join/{room_id}/{event_id}",
            put(federation::membership::send_join_v1_route),
        )
        .route(
            "/_matrix/federation/v2/send_join/{room_id}/{event_id}",
            put(federation::membership::send_join_v2_route),
        )
        .route(
            "/_matrix/federation/v1/make_leave/{room_id}/{user_id}",
            get(federation::membership::make_leave_route),
        )
        .route(
            "/_matrix/federation/v1/send_leave/{room_id}/{event_id}",
            put(federation::membership::send_leave_v1_route),
        )
        .route(
            "/_matrix/federation/v2/send_leave/{room_id}/{event_id}",
            put(federation::membership::send_leave_v2_route),
        )
        .route(
            "/_matrix/federation/v1/invite/{room_id}/{event_id}",
            put(federation::invites::invite_v1_route),
        )
        .route(
            "/_matrix/federation/v2/invite/{room_id}/{event_id}",
            put(federation::invites::invite_v2_route),
        )
        .route(
            "/_matrix/federation/v1/media/download/{media_id}",
            get(federation::media::download_route),
        )
        .route(
            "/_matrix/federation/v1/media/thumbnail/{media_id}",
            get(federation::media::thumbnail_route),
        )
        .route(
            "/_matrix/federation/v1/user/keys/query",
            post(federation::e2ee::query_route),
        )
        .route(
            "/_matrix/federation/v1/user/keys/claim",
            post(federation::e2ee::claim_route),
        )
        .route(
            "/_matrix/federation/v1/user/devices/{user_id}",
            get(federation::e2ee::devices_route),
        )
        .route(
            "/_matrix/federation/v1/event/{event_id}",
            get(federation::reads::event_route),
        )
        .route(
            "/_matrix/federation/v1/state/{room_id}",
            get(federation::reads::state_route),
        )
        .route(
            "/_matrix/federation/v1/state_ids/{room_id}",
            get(federation::reads::state_ids_route),
        )
        .route(
            "/_matrix/federation/v1/event_auth/{room_id}/{event_id}",
            get(federation::reads::event_auth_route),
        )
        .route(
            "/_matrix/federation/v1/get_missing_events/{room_id}",
            post(federation::reads::get_missing_events_route),
        )
        .route(
            "/_matrix/federation/v1/backfill/{room_id}",
            get(federation::reads::backfill_route),
        )
        .route(
            "/_matrix/federation/v1/hierarchy/{room_id}",
            get(causeway_matrix::hierarchy::federation_route),
        )
        .route(
            "/_matrix/federation/v1/openid/userinfo",
            get(causeway_matrix::openid::userinfo_route),
        )
        .route(
            "/_matrix/federation/v1/timestamp_to_event/{room_id}",
            get(causeway_matrix::timestamps::federation_route),
        )
        .fallback(|| async { causeway_matrix::error::Error::Unrecognized })
        .with_state(services)
}

/// Starts the federation listener in the background.
pub async fn spawn(services: Arc<Services>) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    // Several crates may bring rustls providers; pick ring for the whole process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (cert, key) = certificate_paths(&services)?;
    let tls = RustlsConfig::from_pem_file(&cert, &key)
        .await
        .with_context(|| format!("loading {} and {}", cert.display(), key.display()))?;
    let address = services.config.federation.bind;
    let listener = std::net::TcpListener::bind(address)
        .with_context(|| format!("binding the federation API to {address}"))?;
    listener.set_nonblocking(true)?;
    tracing::info!(%address, "federation API listening (TLS)");
    let app = router(services);
    Ok(tokio::spawn(async move {
        if let Err(error) = axum_server::from_tcp_rustls(listener, tls)
            .serve(app.into_make_service())
            .await
        {
            tracing::error!(%error, "the federation listener stopped");
        }
    }))
}
