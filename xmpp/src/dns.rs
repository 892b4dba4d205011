//! Finding a remote domain's server (RFC 6120 §3.2, XEP-0368): SRV records for
//! `_xmpps-server._tcp` (direct TLS) and `_xmpp-server._tcp` (STARTTLS), ordered by priority and
//! weight (RFC 2782), then the domain's own addresses on port 5269 when there are none.

use hickory_resolver::TokioResolver;

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
        Resolver { inner }
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
            match tokio::net::lookup_host((target.host.as_str(), target.port)).await {
                Ok(addresses) => endpoints.extend(addresses.map(|address| Endpoint {
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
