//! Causeway: wiring of the homeserver, the listeners and the administration commands.

pub mod admin;
pub mod bridge;
pub mod federation_listener;
pub mod xmpp;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use causeway_config::{Config, LogFormat};
use causeway_matrix::Services;
use tracing_subscriber::EnvFilter;

/// Sets up structured logging as configured.
pub fn init_logging(config: &Config) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.logging.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let result = match config.logging.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
    if result.is_err() {
        // A subscriber is already installed (tests): keep it.
    }
}

/// Runs the server until SIGINT or SIGTERM.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    init_logging(&config);
    let services = Services::start(config.clone())
        .await
        .context("starting the homeserver")?;
    tracing::info!(
        server_name = %services.server_name,
        database = ?services.store.backend(),
        "homeserver ready"
    );
    let client = tokio::net::TcpListener::bind(config.client_api.bind)
        .await
        .with_context(|| format!("binding the client API to {}", config.client_api.bind))?;
    tracing::info!(address = %config.client_api.bind, "client API listening");
    let router = causeway_matrix::api::client_router(services.clone());
    let client_server = axum::serve(
        client,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal());

    let federation = if config.federation.enabled {
        Some(federation_listener::spawn(services.clone()).await?)
    } else {
        None
    };
    let xmpp = if config.xmpp.enabled {
        Some(xmpp::start(&config, services.clone()).await?)
    } else {
        None
    };
    spawn_typing_expiry(services.clone());
    client_server.await.context("serving the client API")?;
    if let Some(handle) = federation {
        handle.abort();
    }
    drop(xmpp);
    tracing::info!("stopped");
    Ok(())
}

fn spawn_typing_expiry(services: Arc<Services>) {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_secs(1));
        loop {
            interval.tick().await;
            services.typing.expire();
        }
    });
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
    tracing::info!("shutting down");
}
