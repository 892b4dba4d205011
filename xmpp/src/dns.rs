//! Finding a remote domain's server (RFC 6120 §3.2, XEP-0368): SRV records for
//! `_xmpps-server._tcp` (direct TLS) and `_xmpp-server._tcp` (STARTTLS), ordered by priority and
//! weight (RFC 2782), then the domain's own addresses on port 5269 when there are none. The DNS
//! itself is `causeway_net::dns`.

use causeway_net::dns::{SrvRecord, order};

pub use causeway_net::dns::{Resolver, is_public};

use crate::server::Endpoint;

/// The endpoints to try for a domain, in order.
pub async fn endpoints(resolver: &Resolver, domain: &str) -> Vec<Endpoint> {
    let mut records: Vec<(SrvRecord, bool)> = resolver
        .srv(&format!("_xmpps-server._tcp.{domain}."))
        .await
        .into_iter()
        .map(|record| (record, true))
        .collect();
    records.extend(
        resolver
            .srv(&format!("_xmpp-server._tcp.{domain}."))
            .await
            .into_iter()
            .map(|record| (record, false)),
    );
    // A single record with the target "." says the service is not offered (RFC 2782).
    if records.len() == 1 && records[0].0.host.is_empty() {
        tracing::info!(%domain, "the domain says it offers no XMPP service");
        return vec![];
    }
    let targets = if records.is_empty() {
        vec![(
            SrvRecord {
                host: domain.to_owned(),
                port: 5269,
                priority: 0,
                weight: 0,
            },
            false,
        )]
    } else {
        order(
            records,
            |(record, _)| (record.priority, record.weight),
            |n| rand::random::<u32>() % (n + 1),
        )
    };
    let mut endpoints = Vec::new();
    for (target, direct_tls) in targets {
        if target.host.is_empty() {
            continue;
        }
        match resolver.addresses(&target.host, target.port).await {
            Ok(addresses) => endpoints.extend(addresses.into_iter().map(|address| Endpoint {
                address,
                direct_tls,
            })),
            Err(error) => {
                tracing::info!(host = %target.host, %error, "no address for an SRV target");
            }
        }
    }
    endpoints
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn without_srv_records_the_domain_itself_on_5269() {
        let resolver = Resolver::system();
        let endpoints = endpoints(&resolver, "localhost").await;
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
    #![allow(clippy::unwrap_used)]
    use super::*;
    use causeway_net::testing::{
        dns_server,
        records::{a, srv},
    };

    fn endpoint(address: &str, direct_tls: bool) -> Endpoint {
        Endpoint {
            address: address.parse().unwrap(),
            direct_tls,
        }
    }

    #[tokio::test]
    async fn srv_records_then_addresses() {
        let server = dns_server(vec![
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
            endpoints(&resolver, "remote.example").await,
            vec![
                endpoint("127.0.0.9:5270", true),
                endpoint("127.0.0.9:5999", false)
            ]
        );
        // No SRV records: the domain's own address on 5269.
        assert_eq!(
            endpoints(&resolver, "fallback.example").await,
            vec![endpoint("127.0.0.8:5269", false)]
        );
        // "." as the only target: no XMPP service, even though the domain has an address.
        assert_eq!(endpoints(&resolver, "none.example").await, vec![]);
        // A domain that does not exist.
        assert_eq!(endpoints(&resolver, "unknown.example").await, vec![]);
    }
}
