//! Server-to-server benchmark: stanzas per second through one stream into the router, stream
//! set-ups per second (TCP, STARTTLS, SASL EXTERNAL, stream restarts), and memory per open
//! authenticated stream. Everything runs over loopback between two instances in this process.
//!
//! Run: `cargo bench -p causeway-xmpp --bench s2s` (sizes: `S2S_BENCH_STANZAS`,
//! `S2S_BENCH_SETUPS`, `S2S_BENCH_STREAMS`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use causeway_xmpp::dialback::Secret;
use causeway_xmpp::negotiation::{self, BoxedIo, OutboundPolicy};
use causeway_xmpp::server::{DomainPolicy, Endpoint, S2s, S2sConfig, StanzaHandler};
use causeway_xmpp::stanza::Stanza;
use causeway_xmpp::stream::Limits;
use causeway_xmpp::tls::{Identity, TlsSettings};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

struct Counter(AtomicU64);

impl StanzaHandler for Counter {
    fn handle(&self, _stanza: Stanza) -> Pin<Box<dyn Future<Output = Vec<Stanza>> + Send + '_>> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Box::pin(async { vec![] })
    }
}

fn size(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn identity(ca: &rcgen::Certificate, ca_key: &KeyPair, domains: &[&str]) -> Identity {
    let key = KeyPair::generate().expect("key");
    let mut params =
        CertificateParams::new(domains.iter().map(|d| (*d).to_owned()).collect::<Vec<_>>())
            .expect("params");
    params
        .distinguished_name
        .push(DnType::CommonName, domains[0]);
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params.signed_by(&key, ca, ca_key).expect("leaf");
    Identity {
        domains: domains.iter().map(|d| (*d).to_owned()).collect(),
        chain: vec![cert.der().clone()],
        key: rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
    }
}

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmRSS:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kb| kb.parse().ok())
        })
        .unwrap_or(0)
}

fn config(domain: &str) -> S2sConfig {
    S2sConfig {
        domains: vec![domain.to_owned()],
        listen_starttls: vec!["127.0.0.1:0".parse().expect("address")],
        listen_direct_tls: vec![],
        routes: Default::default(),
        require_tls: true,
        dialback: false,
        limits: Limits::default(),
        idle_timeout: Duration::from_secs(300),
        connect_timeout: Duration::from_secs(30),
        domain_policy: DomainPolicy::default(),
        max_stanzas_per_second: 1_000_000,
    }
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca_key = KeyPair::generate().expect("key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Bench CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = ca_params.self_signed(&ca_key).expect("CA");
    let roots = vec![ca.der().clone()];
    let gateway_tls = Arc::new(
        TlsSettings::new(
            vec![identity(&ca, &ca_key, &["gw.test"])],
            roots.clone(),
            false,
        )
        .expect("TLS"),
    );
    let remote_tls = Arc::new(
        TlsSettings::new(vec![identity(&ca, &ca_key, &["remote.test"])], roots, false)
            .expect("TLS"),
    );
    let counter = Arc::new(Counter(AtomicU64::new(0)));
    let gateway = S2s::start(config("gw.test"), gateway_tls, counter.clone())
        .await
        .expect("gateway");
    let gateway_address = gateway.local_addresses()[0].0;
    let remote = S2s::start(
        config("remote.test"),
        remote_tls.clone(),
        Arc::new(Counter(AtomicU64::new(0))),
    )
    .await
    .expect("remote");
    remote.set_route(
        "gw.test",
        vec![Endpoint {
            address: gateway_address,
            direct_tls: false,
        }],
    );

    // Stanzas per second through one stream into the router.
    let stanzas = size("S2S_BENCH_STANZAS", 20_000) as u64;
    let message = |i: u64| -> Stanza {
        let element: minidom::Element = format!(
            "<message xmlns='jabber:server' type='chat' id='m{i}' from='bob@remote.test/x' \
             to='alice@gw.test'><body>message number {i} of the benchmark</body></message>"
        )
        .parse()
        .expect("stanza");
        causeway_xmpp::stanza::accept_inbound(element, |_| true, |_| true).expect("valid")
    };
    remote.send(message(0));
    while counter.0.load(Ordering::Relaxed) < 1 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let start = Instant::now();
    for i in 1..=stanzas {
        remote.send(message(i));
    }
    while counter.0.load(Ordering::Relaxed) < stanzas + 1 {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let elapsed = start.elapsed();
    println!(
        "stanzas through one stream into the router: {stanzas} in {:.2} s = {:.0} stanzas/s",
        elapsed.as_secs_f64(),
        stanzas as f64 / elapsed.as_secs_f64()
    );

    // Stream set-ups per second: TCP, STARTTLS, SASL EXTERNAL and the restarts.
    let secret = Secret::random();
    let policy = OutboundPolicy {
        tls: &remote_tls,
        require_tls: true,
        dialback: false,
        secret: &secret,
        limits: Limits::default(),
    };
    let setups = size("S2S_BENCH_SETUPS", 200);
    let start = Instant::now();
    for _ in 0..setups {
        let socket = tokio::net::TcpStream::connect(gateway_address)
            .await
            .expect("connect");
        socket.set_nodelay(true).expect("nodelay");
        let io: BoxedIo = Box::new(socket);
        let mut stream = negotiation::connect(io, false, "remote.test", "gw.test", &policy)
            .await
            .expect("negotiation");
        let _ = stream.stream.close().await;
    }
    let elapsed = start.elapsed();
    println!(
        "stream set-ups (TCP + STARTTLS + SASL EXTERNAL): {setups} in {:.2} s = {:.0} set-ups/s",
        elapsed.as_secs_f64(),
        setups as f64 / elapsed.as_secs_f64()
    );

    // Memory per open authenticated stream (both ends live in this process).
    let streams = size("S2S_BENCH_STREAMS", 500);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kb();
    let mut open = Vec::with_capacity(streams);
    for _ in 0..streams {
        let socket = tokio::net::TcpStream::connect(gateway_address)
            .await
            .expect("connect");
        socket.set_nodelay(true).expect("nodelay");
        let io: BoxedIo = Box::new(socket);
        open.push(
            negotiation::connect(io, false, "remote.test", "gw.test", &policy)
                .await
                .expect("negotiation"),
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kb();
    println!(
        "memory per open stream (both ends, TLS included): {:.1} KiB ({} streams, RSS {} -> {} KiB)",
        after.saturating_sub(before) as f64 / streams as f64,
        streams,
        before,
        after
    );
    drop(open);
}
