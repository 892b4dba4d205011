//! DNS as both protocols use it: SRV records (RFC 2782) ordered by priority and weight, the
//! addresses of a host, through the system's resolver or configured name servers; and which
//! addresses are on the public internet.

use std::net::SocketAddr;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;

/// One SRV record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvRecord {
    /// The target host, without the final dot; empty for the target "." (no service).
    pub host: String,
    pub port: u16,
    pub priority: u16,
    pub weight: u16,
}

/// Orders records as RFC 2782 says: lower priority first; within one priority, a weighted
/// random order in which heavier records tend to come first. `key` gives a record's priority
/// and weight; `random(n)` returns a number in `0..=n`.
pub fn order<T: Clone>(
    mut records: Vec<T>,
    key: impl Fn(&T) -> (u16, u16),
    mut random: impl FnMut(u32) -> u32,
) -> Vec<T> {
    records.sort_by_key(|record| key(record).0);
    let mut ordered = Vec::with_capacity(records.len());
    let mut rest = records.as_slice();
    while let Some(first) = rest.first() {
        let priority = key(first).0;
        let same = rest
            .iter()
            .take_while(|record| key(record).0 == priority)
            .count();
        let (group, after) = rest.split_at(same);
        // Zero-weight records first, as the RFC's selection procedure has them.
        let mut pool: Vec<T> = group.to_vec();
        pool.sort_by_key(|record| key(record).1 != 0);
        while !pool.is_empty() {
            let total: u32 = pool.iter().map(|record| u32::from(key(record).1)).sum();
            let pick = random(total);
            let mut running = 0;
            let index = pool
                .iter()
                .position(|record| {
                    running += u32::from(key(record).1);
                    running >= pick
                })
                .unwrap_or(0);
            ordered.push(pool.remove(index));
        }
        rest = after;
    }
    ordered
}

/// A resolver: the system's, or configured name servers.
pub struct Resolver {
    inner: Option<TokioResolver>,
    /// Whether `inner` also resolves addresses (configured name servers); otherwise the
    /// system's resolver does, with its hosts file.
    addresses: bool,
}

impl Resolver {
    /// The system's resolver configuration; without one, only address lookups work.
    pub fn system() -> Resolver {
        let inner = match TokioResolver::builder_tokio() {
            Ok(builder) => Some(builder.build()),
            Err(error) => {
                tracing::warn!(%error, "no DNS configuration: SRV records cannot be looked up");
                None
            }
        };
        Resolver {
            inner,
            addresses: false,
        }
    }

    /// Asks these DNS servers (UDP, then TCP) instead of the system's, for SRV records and
    /// addresses alike.
    pub fn with_nameservers(servers: &[SocketAddr]) -> Resolver {
        let servers: Vec<NameServerConfig> = servers
            .iter()
            .flat_map(|server| {
                [
                    NameServerConfig::new(*server, Protocol::Udp),
                    NameServerConfig::new(*server, Protocol::Tcp),
                ]
            })
            .collect();
        let config = ResolverConfig::from_parts(None, vec![], servers);
        let resolver =
            TokioResolver::builder_with_config(config, TokioConnectionProvider::default()).build();
        Resolver {
            inner: Some(resolver),
            addresses: true,
        }
    }

    /// The addresses of a host, with a port.
    pub async fn addresses(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        match &self.inner {
            Some(resolver) if self.addresses => resolver
                .lookup_ip(format!("{host}."))
                .await
                .map(|lookup| lookup.iter().map(|ip| SocketAddr::new(ip, port)).collect())
                .map_err(std::io::Error::other),
            _ => tokio::net::lookup_host((host, port))
                .await
                .map(Iterator::collect),
        }
    }

    /// The SRV records of a name (`_service._proto.domain.`); none when the lookup fails.
    pub async fn srv(&self, name: &str) -> Vec<SrvRecord> {
        let Some(resolver) = &self.inner else {
            return vec![];
        };
        match resolver.srv_lookup(name).await {
            Ok(lookup) => lookup
                .iter()
                .map(|record| SrvRecord {
                    host: record.target().to_utf8().trim_end_matches('.').to_owned(),
                    port: record.port(),
                    priority: record.priority(),
                    weight: record.weight(),
                })
                .collect(),
            Err(_) => vec![],
        }
    }
}

/// Whether an address is on the public internet: not loopback, private (RFC 1918), shared
/// (RFC 6598), link-local, unique-local (RFC 4193), unspecified, broadcast, multicast or
/// documentation space, in IPv4 or IPv6 (IPv4-mapped addresses as their IPv4 address).
pub fn is_public(address: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match address {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b)))
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public(IpAddr::V4(v4)),
            None => {
                let first = v6.segments()[0];
                !(v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.is_multicast()
                    || v6.is_unique_local()
                    || v6.is_unicast_link_local()
                    || first == 0x2001 && v6.segments()[1] == 0x0db8)
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(host: &str, priority: u16, weight: u16) -> SrvRecord {
        SrvRecord {
            host: host.into(),
            port: 5269,
            priority,
            weight,
        }
    }

    fn key(record: &SrvRecord) -> (u16, u16) {
        (record.priority, record.weight)
    }

    #[test]
    fn priority_first_then_weight() {
        let records = vec![
            record("c", 20, 0),
            record("a1", 10, 60),
            record("a2", 10, 40),
            record("b", 5, 0),
        ];
        // Always picking the first record whose running weight reaches the draw.
        let lowest = order(records.clone(), key, |_| 0);
        let hosts: Vec<&str> = lowest.iter().map(|r| r.host.as_str()).collect();
        assert_eq!(hosts, vec!["b", "a1", "a2", "c"]);
        let highest = order(records, key, |n| n);
        let hosts: Vec<&str> = highest.iter().map(|r| r.host.as_str()).collect();
        assert_eq!(hosts, vec!["b", "a2", "a1", "c"]);
    }

    #[test]
    fn weights_decide_how_often_a_record_comes_first() {
        let records = vec![record("heavy", 1, 90), record("light", 1, 10)];
        let mut seed = 12345u64;
        let mut random = move |n: u32| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 33) as u32) % (n + 1)
        };
        let firsts = (0..1000)
            .filter(|_| order(records.clone(), key, &mut random)[0].host == "heavy")
            .count();
        assert!((850..=950).contains(&firsts), "{firsts}");
    }
}

#[cfg(test)]
mod live {
    //! The resolver against a DNS server speaking the wire protocol.
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::testing::{
        dns_server,
        records::{a, srv},
    };

    #[tokio::test]
    async fn srv_records_and_addresses() {
        let server = dns_server(vec![
            srv(
                "_matrix-fed._tcp.remote.example.",
                10,
                5,
                8448,
                "matrix.remote.example.",
            ),
            a("matrix.remote.example.", [127, 0, 0, 9]),
        ])
        .await;
        let resolver = Resolver::with_nameservers(&[server]);
        assert_eq!(
            resolver.srv("_matrix-fed._tcp.remote.example.").await,
            vec![SrvRecord {
                host: "matrix.remote.example".into(),
                port: 8448,
                priority: 10,
                weight: 5,
            }]
        );
        assert_eq!(
            resolver.srv("_matrix-fed._tcp.unknown.example.").await,
            vec![]
        );
        assert_eq!(
            resolver
                .addresses("matrix.remote.example", 8448)
                .await
                .unwrap(),
            vec!["127.0.0.9:8448".parse::<SocketAddr>().unwrap()]
        );
        assert!(resolver.addresses("unknown.example", 1).await.is_err());
    }
}
