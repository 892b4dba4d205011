//! Starting the XMPP server-to-server side for the server's domains, with the bridge as the
//! handler of what arrives (messages to local accounts; the default router answers service
//! discovery, ping, version and time, and `service-unavailable` for the rest).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use causeway_config::Config;
use causeway_matrix::Services;
use causeway_xmpp::router::Domains;
use causeway_xmpp::server::{DomainPolicy, Endpoint, S2s, S2sConfig};
use causeway_xmpp::stream::Limits;
use causeway_xmpp::tls::{Identity, TlsSettings};

use crate::bridge::Bridge;

/// The XMPP domains: the server's host and the MUC service.
pub fn domains(config: &Config) -> Domains {
    Domains {
        server: config.server.name.host().to_ascii_lowercase(),
        muc: config.muc_domain().to_ascii_lowercase(),
    }
}

fn read_identity(certificate: &Path, key: &Path, domains: &Domains) -> anyhow::Result<Identity> {
    let chain = causeway_net::tls::read_certificates(certificate)?;
    let key = causeway_net::tls::read_private_key(key)?;
    Ok(Identity {
        domains: vec![domains.server.clone(), domains.muc.clone()],
        chain,
        key,
    })
}

/// The configured certificate, or one generated once for our domains and kept.
fn identity(config: &Config, domains: &Domains) -> anyhow::Result<Identity> {
    if let (Some(certificate), Some(key)) =
        (&config.xmpp.tls_certificate, &config.xmpp.tls_private_key)
    {
        return read_identity(certificate, key, domains);
    }
    let dir = &config.server.data_dir;
    let certificate = dir.join("xmpp.crt");
    let key = dir.join("xmpp.key");
    if !certificate.exists() || !key.exists() {
        let generated =
            rcgen::generate_simple_self_signed(vec![domains.server.clone(), domains.muc.clone()])
                .context("generating a certificate for XMPP")?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        crate::write_private(&key, generated.key_pair.serialize_pem().as_bytes())
            .with_context(|| format!("writing {}", key.display()))?;
        std::fs::write(&certificate, generated.cert.pem())
            .with_context(|| format!("writing {}", certificate.display()))?;
        tracing::warn!(
            path = %certificate.display(),
            "generated a self-signed XMPP certificate: peers will not authenticate this server \
             with it; configure xmpp.tls_certificate"
        );
    }
    read_identity(&certificate, &key, domains)
}

/// The running XMPP side and the bridge behind it.
pub struct Xmpp {
    pub s2s: Arc<S2s>,
    pub bridge: Arc<Bridge>,
}

/// Starts the listeners, the outbound side and the bridge to the homeserver.
pub async fn start(config: &Config, services: Arc<Services>) -> anyhow::Result<Xmpp> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let domains = domains(config);
    let mut roots = Vec::new();
    for file in &config.xmpp.ca_files {
        roots.extend(causeway_net::tls::read_certificates(file)?);
    }
    let tls = TlsSettings::new(
        vec![identity(config, &domains)?],
        roots,
        config.xmpp.system_roots,
    )
    .context("setting up TLS for XMPP")?;
    let mut routes = std::collections::HashMap::<String, Vec<Endpoint>>::new();
    for route in &config.xmpp.routes {
        routes
            .entry(route.domain.to_ascii_lowercase())
            .or_default()
            .push(Endpoint {
                address: route.address,
                direct_tls: route.direct_tls,
            });
    }
    let s2s_config = S2sConfig {
        domains: vec![domains.server.clone(), domains.muc.clone()],
        listen_starttls: config.xmpp.listen_starttls.clone(),
        listen_direct_tls: config.xmpp.listen_direct_tls.clone(),
        routes,
        require_tls: config.xmpp.require_tls,
        dialback: config.xmpp.dialback,
        limits: Limits {
            max_stanza_bytes: config.xmpp.max_stanza_bytes,
            ..Limits::default()
        },
        idle_timeout: Duration::from_secs(config.xmpp.idle_timeout_secs),
        connect_timeout: Duration::from_secs(20),
        domain_policy: DomainPolicy {
            allow: config.xmpp.allow_domains.clone(),
            deny: config.xmpp.deny_domains.clone(),
        },
        max_stanzas_per_second: config.xmpp.max_stanzas_per_second,
        max_inbound_streams: config.xmpp.max_inbound_streams,
        max_inbound_streams_per_address: config.xmpp.max_inbound_streams_per_address,
        nameservers: config.xmpp.nameservers.clone(),
    };
    let bridge = Bridge::new(services, domains.clone(), env!("CARGO_PKG_VERSION"))
        .await
        .context("setting up the bridge")?;
    let s2s = S2s::start(s2s_config, Arc::new(tls), bridge.clone())
        .await
        .context("binding the XMPP listeners")?;
    bridge.attach(&s2s);
    for (address, direct) in s2s.local_addresses() {
        tracing::info!(%address, direct_tls = direct, domain = %domains.server, muc = %domains.muc, "XMPP server-to-server listening");
    }
    Ok(Xmpp { s2s, bridge })
}
