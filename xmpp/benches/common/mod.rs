//! What the server-to-server benchmarks share: a counting stanza handler, sizes from the environment and the resident memory of a process. Each bench uses a
//! part of it.

#![allow(dead_code)]

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};

use std::time::Duration;

use causeway_xmpp::server::{DomainPolicy, S2sConfig, StanzaHandler};
use causeway_xmpp::stanza::Stanza;
use causeway_xmpp::stream::Limits;

/// Counts the stanzas it is given and answers none.
pub struct Counter(pub AtomicU64);

impl Counter {
    pub fn new() -> Counter {
        Counter(AtomicU64::new(0))
    }

    pub fn count(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl StanzaHandler for Counter {
    fn handle(&self, _stanza: Stanza) -> Pin<Box<dyn Future<Output = Vec<Stanza>> + Send + '_>> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Box::pin(async { vec![] })
    }
}

/// A size from the environment, or its default.
pub fn size(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// The resident memory of a process (this one without a pid), in KiB.
pub fn rss_kb(pid: Option<u32>) -> u64 {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/status"),
        None => "/proc/self/status".to_owned(),
    };
    std::fs::read_to_string(path)
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

/// The configuration of a bench server for `domain`, listening on `listen`.
pub fn config(domain: &str, listen: &str) -> S2sConfig {
    S2sConfig {
        domains: vec![domain.to_owned()],
        listen_starttls: vec![listen.parse().expect("address")],
        listen_direct_tls: vec![],
        routes: Default::default(),
        require_tls: true,
        dialback: false,
        limits: Limits::default(),
        idle_timeout: Duration::from_secs(300),
        connect_timeout: Duration::from_secs(30),
        domain_policy: DomainPolicy::default(),
        max_stanzas_per_second: 1_000_000,
        max_inbound_streams: 100_000,
        max_inbound_streams_per_address: 100_000,
        nameservers: vec![],
    }
}
