//! Finding a remote domain's server (RFC 6120 §3.2, XEP-0368): SRV records for
//! `_xmpps-server._tcp` (direct TLS) and `_xmpp-server._tcp` (STARTTLS), ordered by priority and
//! weight (RFC 2782), then the domain's own addresses on port 5269 when there are none.

use std::net::SocketAddr;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;

use crate::server::Endpoint;

/// One SRV record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvTarget {
    pub host: String,
    pub port: u16,
    pub priority: u16,
    pub weight: u16,
    pub direct_tls: bool,
}

/// Orders SRV records as RFC 2782 says: lower priority first; within one priority, a weighted
/// random order in which heavier records tend to come first. `random(n)` returns a number in
/// `0..=n`.
pub fn order(mut records: Vec<SrvTarget>, mut random: impl FnMut(u32) -> u32) -> Vec<SrvTarget> {
    records.sort_by_key(|record| record.priority);
    let mut ordered = Vec::with_capacity(records.len());
    let mut rest = records.as_slice();
    while let Some(first) = rest.first() {
        let same = rest
            .iter()
            .take_while(|record| record.priority == first.priority)
            .count();
        let (group, after) = rest.split_at(same);
        // Zero-weight records first, as the RFC's selection procedure has them.
        let mut pool: Vec<SrvTarget> = group.to_vec();
        pool.sort_by_key(|record| record.weight != 0);
        while !pool.is_empty() {
            let total: u32 = pool.iter().map(|record| u32::from(record.weight)).sum();
            let pick = random(total);
            let mut running = 0;
            let index = pool
                .iter()
                .position(|record| {
                    running += u32::from(record.weight);
                    running >= pick
                })
                .unwrap_or(0);
            ordered.push(pool.remove(index));
        }
        rest = after;
    }
    ordered
}

/// The resolver of remote domains.
pub struct Resolver {
    inner: Option<TokioResolver>,
    /// Whether `inner` also resolves the SRV targets' addresses (configured name servers);
    /// otherwise the system's resolver does, with its hosts file.
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

    async fn addresses(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
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

    async fn srv(&self, name: &str, direct_tls: bool) -> Vec<SrvTarget> {
        let Some(resolver) = &self.inner else {
            return vec![];
        };
        match resolver.srv_lookup(name).await {
            Ok(lookup) => lookup
                .iter()
                .map(|record| SrvTarget {
                    host: record.target().to_utf8().trim_end_matches('.').to_owned(),
                    port: record.port(),
                    priority: record.priority(),
                    weight: record.weight(),
                    direct_tls,
                })
                .collect(),
            Err(_) => vec![],
        }
    }

    /// The endpoints to try for a domain, in order.
    pub async fn endpoints(&self, domain: &str) -> Vec<Endpoint> {
        let mut records = self
            .srv(&format!("_xmpps-server._tcp.{domain}."), true)
            .await;
        records.extend(
            self.srv(&format!("_xmpp-server._tcp.{domain}."), false)
                .await,
        );
        // A single record with the target "." says the service is not offered (RFC 2782).
        if records.len() == 1 && records[0].host.is_empty() {
            tracing::info!(%domain, "the domain says it offers no XMPP service");
            return vec![];
        }
        let targets = if records.is_empty() {
            vec![SrvTarget {
                host: domain.to_owned(),
                port: 5269,
                priority: 0,
                weight: 0,
                direct_tls: false,
            }]
        } else {
            order(records, |n| rand::random::<u32>() % (n + 1))
        };
        let mut endpoints = Vec::new();
        for target in targets {
            if target.host.is_empty() {
                continue;
            }
            match self.addresses(&target.host, target.port).await {
                Ok(addresses) => endpoints.extend(addresses.into_iter().map(|address| Endpoint {
                    address,
                    direct_tls: target.direct_tls,
                })),
                Err(error) => {
                    tracing::info!(host = %target.host, %error, "no address for an SRV target");
                }
            }
        }
        endpoints
    }
}

pub use causeway_config::is_public;

/// A DNS server on loopback UDP for tests, answering from a fixed set of records.
#[cfg(test)]
pub(crate) async fn test_server(records: Vec<hickory_resolver::proto::rr::Record>) -> SocketAddr {
    use hickory_resolver::proto::op::{Message, MessageType, ResponseCode};
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let address = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buffer = vec![0; 4096];
        loop {
            let Ok((length, from)) = socket.recv_from(&mut buffer).await else {
                return;
            };
            let Ok(query) = Message::from_vec(&buffer[..length]) else {
                continue;
            };
            let mut answer = Message::new();
            answer
                .set_id(query.id())
                .set_message_type(MessageType::Response)
                .set_op_code(query.op_code())
                .set_recursion_desired(query.recursion_desired())
                .set_recursion_available(true)
                .add_queries(query.queries().to_vec());
            let mut known = false;
            for question in query.queries() {
                for record in &records {
                    if record.name() == question.name() {
                        known = true;
                        if record.record_type() == question.query_type() {
                            answer.add_answer(record.clone());
                        }
                    }
                }
            }
            if !known {
                answer.set_response_code(ResponseCode::NXDomain);
            }
            if let Ok(bytes) = answer.to_vec() {
                let _ = socket.send_to(&bytes, from).await;
            }
        }
    });
    address
}

#[cfg(test)]
pub(crate) mod records {
    //! Records for [`super::test_server`].
    use hickory_resolver::proto::rr::rdata::{A, SRV};
    use hickory_resolver::proto::rr::{Name, RData, Record};

    fn name(text: &str) -> Name {
        Name::from_ascii(text).unwrap()
    }

    pub fn srv(owner: &str, priority: u16, weight: u16, port: u16, target: &str) -> Record {
        Record::from_rdata(
            name(owner),
            60,
            RData::SRV(SRV::new(priority, weight, port, name(target))),
        )
    }

    pub fn a(owner: &str, address: [u8; 4]) -> Record {
        Record::from_rdata(
            name(owner),
            60,
            RData::A(A::from(std::net::Ipv4Addr::from(address))),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(host: &str, priority: u16, weight: u16) -> SrvTarget {
        SrvTarget {
            host: host.into(),
            port: 5269,
            priority,
            weight,
            direct_tls: false,
        }
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
        let lowest = order(records.clone(), |_| 0);
        let hosts: Vec<&str> = lowest.iter().map(|r| r.host.as_str()).collect();
        assert_eq!(hosts, vec!["b", "a1", "a2", "c"]);
        let highest = order(records, |n| n);
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
            .filter(|_| order(records.clone(), &mut random)[0].host == "heavy")
            .count();
        assert!((850..=950).contains(&firsts), "{firsts}");
    }

    #[tokio::test]
    async fn without_srv_records_the_domain_itself_on_5269() {
        let resolver = Resolver::system();
        let endpoints = resolver.endpoints("localhost").await;
        assert!(!endpoints.is_empty());
        assert!(
            endpoints
                .iter()
                .all(|e| e.address.port() == 5269 && !e.direct_tls)
        );
        assert!(endpoints.iter().all(|e| e.address.ip().is_loopback()));
    }
}

#[cfg(test)]
mod live {
    //! The resolver against a DNS server speaking the wire protocol.
    use super::records::{a, srv};
    use super::*;

    fn endpoint(address: &str, direct_tls: bool) -> Endpoint {
        Endpoint {
            address: address.parse().unwrap(),
            direct_tls,
        }
    }

    #[tokio::test]
    async fn srv_records_then_addresses() {
        let server = test_server(vec![
            srv(
                "_xmpps-server._tcp.remote.example.",
                0,
                0,
                5270,
                "xmpp.remote.example.",
            ),
            srv(
                "_xmpp-server._tcp.remote.example.",
                10,
                0,
                5999,
                "xmpp.remote.example.",
            ),
            a("xmpp.remote.example.", [127, 0, 0, 9]),
            a("fallback.example.", [127, 0, 0, 8]),
            srv("_xmpp-server._tcp.none.example.", 0, 0, 0, "."),
            a("none.example.", [127, 0, 0, 7]),
        ])
        .await;
        let resolver = Resolver::with_nameservers(&[server]);
        // Direct TLS from _xmpps-server, STARTTLS from _xmpp-server, each on its own port.
        assert_eq!(
            resolver.endpoints("remote.example").await,
            vec![
                endpoint("127.0.0.9:5270", true),
                endpoint("127.0.0.9:5999", false)
            ]
        );
        // No SRV records: the domain's own address on 5269.
        assert_eq!(
            resolver.endpoints("fallback.example").await,
            vec![endpoint("127.0.0.8:5269", false)]
        );
        // "." as the only target: no XMPP service, even though the domain has an address.
        assert_eq!(resolver.endpoints("none.example").await, vec![]);
        // A domain that does not exist.
        assert_eq!(resolver.endpoints("unknown.example").await, vec![]);
    }
}
