//! The federation listener: TLS on `federation.bind`, serving the server's signing keys and
//! version. A self-signed certificate for the server name is generated once and kept in the
//! data directory when none is configured.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use axum_server::tls_rustls::RustlsConfig;
use causeway_matrix::Services;
use ruma::canonical_json::{CanonicalJsonObject, CanonicalJsonValue};
use serde_json::{Value, json};

/// How long other servers may cache the signing key.
const KEY_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);

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
    let key = &services.key;
    let valid_until = std::time::SystemTime::now()
        .checked_add(KEY_VALIDITY)
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let public =
        ruma::serde::Base64::<ruma::serde::base64::Standard, _>::new(key.public_key().to_vec())
            .encode();
    let document = json!({
        "server_name": services.server_name,
        "valid_until_ts": valid_until,
        "verify_keys": { format!("ed25519:{}", key.version()): { "key": public } },
        "old_verify_keys": {},
    });
    let mut object: CanonicalJsonObject = match CanonicalJsonValue::try_from(document)? {
        CanonicalJsonValue::Object(object) => object,
        _ => anyhow::bail!("the key document is not an object"),
    };
    ruma::signatures::sign_json(services.server_name.as_str(), key.as_ref(), &mut object)?;
    Ok(serde_json::to_value(&object)?)
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
