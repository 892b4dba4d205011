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

/// Writes a private key (or any secret) readable by its owner only (mode 0600 on Unix), set
/// when the file is made, so that it is never readable by others, not even for a moment.
pub fn write_private(path: &std::path::Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    // A file that existed keeps its mode through open(): set it.
    #[cfg(unix)]
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    file.write_all(contents)?;
    file.sync_all()
}

/// The crates whose log lines a bare level (`filter = "info"`) is about.
const OWN_CRATES: [&str; 5] = [
    "causeway",
    "causeway_matrix",
    "causeway_xmpp",
    "causeway_mapping",
    "causeway_config",
];

/// The tracing filter a configured one stands for. A bare level (`"info"`, `"debug"`) applies
/// to Causeway's own crates, and dependencies (the authorization rules, HTTP, SQL) stay at
/// `warn` or quieter; a filter that names targets (`"info,ruma_state_res=debug"`) is taken as
/// written.
pub fn effective_log_filter(configured: &str) -> String {
    use tracing_subscriber::filter::LevelFilter;
    let Ok(level) = configured.trim().parse::<LevelFilter>() else {
        return configured.to_owned();
    };
    let dependencies = level.min(LevelFilter::WARN);
    let mut filter = dependencies.to_string().to_lowercase();
    for name in OWN_CRATES {
        filter.push_str(&format!(",{name}={}", level.to_string().to_lowercase()));
    }
    filter
}

/// Sets up structured logging as configured (`RUST_LOG`, when set, is taken as written).
pub fn init_logging(config: &Config) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(effective_log_filter(&config.logging.filter)))
        .unwrap_or_else(|_| EnvFilter::new(effective_log_filter("info")));
    // Colours only on a terminal: a log file or a collector gets plain text.
    let colours = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colours);
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
    let services = Services::serve(config.clone())
        .await
        .context("starting the homeserver")?;
    // The command line administers through this server while it runs, with this secret.
    let secret_file = config.server.data_dir.join(admin::ADMIN_SECRET_FILE);
    let secret = causeway_matrix::services::random_string(48);
    write_private(&secret_file, secret.as_bytes())
        .with_context(|| format!("writing {}", secret_file.display()))?;
    services.set_admin_secret(secret);
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
    .with_graceful_shutdown({
        let services = services.clone();
        async move {
            shutdown_signal().await;
            // Waiting syncs answer now, so that the graceful shutdown does not wait for them.
            services.begin_shutdown();
        }
    });

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
    causeway_matrix::push::notifier::spawn(services.clone());
    causeway_matrix::indexer::spawn(services.clone());
    if config.federation.enabled {
        causeway_matrix::federation::sender::spawn(services.clone());
    }
    client_server.await.context("serving the client API")?;
    if let Some(handle) = federation {
        handle.abort();
    }
    if let Some(xmpp) = &xmpp {
        // Peers learn that the streams end on purpose (`system-shutdown`), and what was
        // queued for them is written first.
        xmpp.s2s.shut_down(Duration::from_secs(1)).await;
        // The outcome of what was written is recorded; what was not stays in the outbox.
        xmpp.bridge.drain(Duration::from_secs(2)).await;
    }
    drop(xmpp);
    if let Err(error) = std::fs::remove_file(&secret_file) {
        tracing::warn!(%error, "the administration secret was not removed");
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt;

    /// Records the targets of the events a filter lets through.
    struct Targets(Arc<Mutex<Vec<String>>>);

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Targets {
        fn on_event(
            &self,
            event: &tracing::Event<'_>,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            self.0.lock().unwrap().push(format!(
                "{} {}",
                event.metadata().level(),
                event.metadata().target()
            ));
        }
    }

    fn passed(configured: &str) -> Vec<String> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry()
            .with(EnvFilter::try_new(effective_log_filter(configured)).unwrap())
            .with(Targets(seen.clone()));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: "ruma_state_res::event_auth", "auth check");
            tracing::warn!(target: "ruma_state_res::event_auth", "odd event");
            tracing::info!(target: "causeway_matrix::rooms", "room made");
            tracing::debug!(target: "causeway_xmpp::server", "stream opened");
            tracing::debug!(target: "sqlx::query", "select");
            tracing::info!(target: "causeway::bridge", "bridged");
        });
        seen.lock().unwrap().clone()
    }

    #[test]
    fn a_bare_level_keeps_dependencies_quiet() {
        assert_eq!(
            passed("info"),
            [
                "WARN ruma_state_res::event_auth",
                "INFO causeway_matrix::rooms",
                "INFO causeway::bridge"
            ]
        );
        assert_eq!(
            passed("debug"),
            [
                "WARN ruma_state_res::event_auth",
                "INFO causeway_matrix::rooms",
                "DEBUG causeway_xmpp::server",
                "INFO causeway::bridge"
            ]
        );
        assert_eq!(passed("error"), Vec::<String>::new());
        // The default configuration is such a level.
        assert_eq!(
            passed(&causeway_config::Config::default().logging.filter),
            passed("info")
        );
    }

    #[test]
    fn a_filter_naming_targets_is_taken_as_written() {
        assert_eq!(
            passed("info,ruma_state_res=debug"),
            [
                "INFO ruma_state_res::event_auth",
                "WARN ruma_state_res::event_auth",
                "INFO causeway_matrix::rooms",
                "INFO causeway::bridge"
            ]
        );
    }
}
