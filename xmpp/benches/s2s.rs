//! Server-to-server benchmark: stanzas per second through one stream into the router, stream
//! set-ups per second (TCP, STARTTLS, SASL EXTERNAL, stream restarts), and memory per open
//! authenticated stream. Everything runs over loopback between two instances in this process.
//!
//! Run: `cargo bench -p causeway-xmpp --bench s2s` (sizes: `S2S_BENCH_STANZAS`,
//! `S2S_BENCH_SETUPS`, `S2S_BENCH_STREAMS`).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use causeway_xmpp::dialback::Secret;
use causeway_xmpp::negotiation::{self, BoxedIo, OutboundPolicy};
use causeway_xmpp::server::{Endpoint, S2s};
use causeway_xmpp::stanza::Stanza;
use causeway_xmpp::stream::Limits;
use causeway_xmpp::testing::TestCa;
use causeway_xmpp::tls::TlsSettings;
use common::{Counter, config, rss_kb, size};

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = TestCa::new("Bench CA");
    let roots = vec![ca.root()];
    let gateway_tls = Arc::new(
        TlsSettings::new(vec![ca.identity(&["gw.test"])], roots.clone(), false).expect("TLS"),
    );
    let remote_tls =
        Arc::new(TlsSettings::new(vec![ca.identity(&["remote.test"])], roots, false).expect("TLS"));
    let counter = Arc::new(Counter::new());
    let gateway = S2s::start(
        config("gw.test", "127.0.0.1:0"),
        gateway_tls,
        counter.clone(),
    )
    .await
    .expect("gateway");
    let gateway_address = gateway.local_addresses()[0].0;
    let remote = S2s::start(
        config("remote.test", "127.0.0.1:0"),
        remote_tls.clone(),
        Arc::new(Counter::new()),
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
    while counter.count() < 1 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let start = Instant::now();
    for i in 1..=stanzas {
        remote.send(message(i));
    }
    while counter.count() < stanzas + 1 {
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
    let before = rss_kb(None);
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
    let after = rss_kb(None);
    println!(
        "memory per open stream (both ends, TLS included): {:.1} KiB ({} streams, RSS {} -> {} KiB)",
        after.saturating_sub(before) as f64 / streams as f64,
        streams,
        before,
        after
    );
    drop(open);
}
