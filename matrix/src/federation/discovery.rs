//! Finding another homeserver from its server name, as the server-server API's "Resolving
//! server names" says: an IP literal or an explicit port as they are; otherwise the server's
//! `/.well-known/matrix/server` (delegation to another name, itself resolved without a further
//! `.well-known`), then the SRV records `_matrix-fed._tcp` and the deprecated `_matrix._tcp`,
//! then port 8448. `federation.destinations` overrides all of it (closed networks, tests).
//! Answers are cached: delegations as long as the `.well-known` response says (one day by
//! default, two at most), the absence of one for an hour.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use causeway_net::dns::{Resolver, SrvRecord, order};
use ruma::{OwnedServerName, ServerName};

use crate::error::Error;

/// Where and how to reach a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// Where to connect, in order of preference: a host name or IP address, and a port.
    pub endpoints: Vec<(String, u16)>,
    /// The name the server's certificate must be valid for (and the SNI).
    pub tls_name: String,
    /// The `Host` header of requests.
    pub host_header: String,
}

/// What a `.well-known/matrix/server` look-up found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delegation {
    /// The delegated server name (`m.server`), `None` when there is none.
    pub server: Option<OwnedServerName>,
    /// How long the answer may be kept.
    pub keep_for: Duration,
}

/// The largest `.well-known` body read; a larger one is no delegation.
pub const WELL_KNOWN_LIMIT: usize = 16 * 1024;
/// How long a delegation is kept when the response does not say.
const DEFAULT_KEEP: Duration = Duration::from_secs(24 * 3600);
/// The longest a delegation is kept, whatever the response says.
const LONGEST_KEEP: Duration = Duration::from_secs(48 * 3600);
/// How long the absence of a delegation (or a failed look-up) is kept.
const ABSENT_KEEP: Duration = Duration::from_secs(3600);
/// The shortest a delegation is kept, so that a server saying `max-age=0` is not asked for
/// every request.
const SHORTEST_KEEP: Duration = Duration::from_secs(300);

/// Where `.well-known/matrix/server` answers come from.
pub enum WellKnownSource {
    /// HTTPS requests to the server.
    Https(reqwest::Client),
    /// Fixed answers by host name (tests).
    Fixed(HashMap<String, String>),
}

impl WellKnownSource {
    async fn delegation(&self, host: &str) -> Delegation {
        let absent = Delegation {
            server: None,
            keep_for: ABSENT_KEEP,
        };
        match self {
            WellKnownSource::Fixed(table) => match table.get(host) {
                Some(body) => Delegation {
                    server: parse_well_known(body.as_bytes()),
                    keep_for: DEFAULT_KEEP,
                },
                None => absent,
            },
            WellKnownSource::Https(client) => {
                let url = format!("https://{host}/.well-known/matrix/server");
                let Ok(mut response) = client.get(&url).send().await else {
                    return absent;
                };
                if !response.status().is_success() {
                    return absent;
                }
                let keep_for = response
                    .headers()
                    .get(reqwest::header::CACHE_CONTROL)
                    .and_then(|value| value.to_str().ok())
                    .map_or(DEFAULT_KEEP, keep_for);
                // The body is counted before it is kept.
                let mut body = Vec::new();
                while let Ok(Some(chunk)) = response.chunk().await {
                    if body.len() + chunk.len() > WELL_KNOWN_LIMIT {
                        return absent;
                    }
                    body.extend_from_slice(&chunk);
                }
                match parse_well_known(&body) {
                    Some(server) => Delegation {
                        server: Some(server),
                        keep_for,
                    },
                    None => absent,
                }
            }
        }
    }
}

/// The delegated server name of a `.well-known/matrix/server` body, if it is a valid one.
pub fn parse_well_known(body: &[u8]) -> Option<OwnedServerName> {
    if body.len() > WELL_KNOWN_LIMIT {
        return None;
    }
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let server = value.get("m.server")?.as_str()?;
    ServerName::parse(server).ok()
}

/// How long a response may be kept, from its `Cache-Control`: its `max-age` within bounds,
/// nothing for `no-store`, the default otherwise.
pub fn keep_for(cache_control: &str) -> Duration {
    let mut max_age = None;
    for directive in cache_control.split(',').map(str::trim) {
        let directive = directive.to_ascii_lowercase();
        if directive == "no-store" || directive == "no-cache" {
            return SHORTEST_KEEP;
        }
        if let Some(seconds) = directive.strip_prefix("max-age=") {
            max_age = seconds.trim_matches('"').parse::<u64>().ok();
        }
    }
    max_age
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_KEEP)
        .clamp(SHORTEST_KEEP, LONGEST_KEEP)
}

/// Resolves server names, with a cache.
pub struct Discovery {
    resolver: Resolver,
    well_known: WellKnownSource,
    overrides: BTreeMap<String, (String, u16)>,
    cache: Mutex<HashMap<OwnedServerName, (Destination, Instant)>>,
}

impl Discovery {
    /// Discovery as `[federation]` configures it: the system's DNS, `.well-known` over HTTPS
    /// trusting the system's certificate authorities and `ca_files`, the `destinations`
    /// table.
    pub fn from_config(config: &causeway_config::FederationConfig) -> Result<Discovery, Error> {
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls_client_config(&config.ca_files)?)
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::limited(5))
            .user_agent(concat!("Causeway/", env!("CARGO_PKG_VERSION")))
            // `.well-known` is fetched from the host of whatever server name a request
            // claims: public addresses only, and the networks configured.
            .dns_resolver(Arc::new(crate::permitted::PermittedResolver::new(
                Arc::new(config.ip_range_whitelist.clone()),
                "another server's .well-known",
            )))
            .build()
            .map_err(|e| Error::Internal(format!("the federation HTTP client: {e}")))?;
        let overrides = config
            .destinations
            .iter()
            .filter_map(|(name, destination)| {
                let (host, port) = causeway_config::split_destination(destination)?;
                Some((name.clone(), (host.to_owned(), port)))
            })
            .collect();
        Ok(Discovery::new(
            Resolver::system(),
            WellKnownSource::Https(client),
            overrides,
        ))
    }

    pub fn new(
        resolver: Resolver,
        well_known: WellKnownSource,
        overrides: BTreeMap<String, (String, u16)>,
    ) -> Discovery {
        Discovery {
            resolver,
            well_known,
            overrides,
            cache: Mutex::default(),
        }
    }

    /// Where to reach `server`.
    pub async fn destination(&self, server: &ServerName) -> Destination {
        if let Some((destination, until)) = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(server)
            && *until > Instant::now()
        {
            return destination.clone();
        }
        let (destination, keep_for) = self.resolve(server).await;
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(
                server.to_owned(),
                (destination.clone(), Instant::now() + keep_for),
            );
        destination
    }

    async fn resolve(&self, server: &ServerName) -> (Destination, Duration) {
        if let Some((host, port)) = self.overrides.get(server.as_str()) {
            return (
                Destination {
                    endpoints: vec![(host.clone(), *port)],
                    tls_name: server.host().to_owned(),
                    host_header: server.to_string(),
                },
                LONGEST_KEEP,
            );
        }
        // An IP literal or an explicit port: as it is.
        if let Some(destination) = literal(server) {
            return (destination, LONGEST_KEEP);
        }
        let delegation = self.well_known.delegation(server.host()).await;
        match delegation.server {
            Some(delegated) => {
                let destination = match literal(&delegated) {
                    Some(destination) => destination,
                    None => self.by_srv(&delegated).await,
                };
                (destination, delegation.keep_for)
            }
            None => (self.by_srv(server).await, delegation.keep_for),
        }
    }

    /// A name without a port: its SRV records, the current name then the deprecated one,
    /// else port 8448. The certificate is the name's, whatever the SRV target.
    async fn by_srv(&self, server: &ServerName) -> Destination {
        let host = server.host();
        let mut records: Vec<SrvRecord> = Vec::new();
        for service in ["_matrix-fed._tcp", "_matrix._tcp"] {
            records = self.resolver.srv(&format!("{service}.{host}.")).await;
            // A single record with the target "." says the service is not offered.
            records.retain(|record| !record.host.is_empty() && record.host != ".");
            if !records.is_empty() {
                break;
            }
        }
        let endpoints = if records.is_empty() {
            vec![(host.to_owned(), 8448)]
        } else {
            order(
                records,
                |record| (record.priority, record.weight),
                |n| rand::random::<u32>() % (n + 1),
            )
            .into_iter()
            .map(|record| (record.host, record.port))
            .collect()
        };
        Destination {
            endpoints,
            tls_name: host.to_owned(),
            host_header: host.to_owned(),
        }
    }
}

/// The TLS settings for connections to other servers: the system's certificate authorities
/// and those of `ca_files`.
pub fn tls_client_config(ca_files: &[std::path::PathBuf]) -> Result<rustls::ClientConfig, Error> {
    let mut extra = Vec::new();
    for file in ca_files {
        extra.extend(
            causeway_net::tls::read_certificates(file)
                .map_err(|e| Error::Internal(format!("federation.ca_files: {e}")))?,
        );
    }
    let roots = causeway_net::tls::root_store(true, extra)
        .map_err(|e| Error::Internal(format!("federation.ca_files: {e}")))?;
    Ok(
        rustls::ClientConfig::builder_with_provider(causeway_net::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Internal(format!("TLS: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// The destination of an IP literal or of a name with an explicit port.
fn literal(server: &ServerName) -> Option<Destination> {
    if !server.is_ip_literal() && server.port().is_none() {
        return None;
    }
    let host = server.host();
    let connect = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    Some(Destination {
        endpoints: vec![(connect.to_owned(), server.port().unwrap_or(8448))],
        tls_name: connect.to_owned(),
        host_header: server.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use causeway_net::testing::{Record, dns_server, records};

    use super::*;

    fn name(text: &str) -> OwnedServerName {
        ServerName::parse(text).unwrap()
    }

    async fn discovery(dns: Vec<Record>, well_known: &[(&str, &str)]) -> Discovery {
        let address = dns_server(dns).await;
        Discovery::new(
            Resolver::with_nameservers(&[address]),
            WellKnownSource::Fixed(
                well_known
                    .iter()
                    .map(|(host, body)| ((*host).to_owned(), (*body).to_owned()))
                    .collect(),
            ),
            BTreeMap::new(),
        )
    }

    fn destination(endpoints: &[(&str, u16)], tls_name: &str, host_header: &str) -> Destination {
        Destination {
            endpoints: endpoints
                .iter()
                .map(|(host, port)| ((*host).to_owned(), *port))
                .collect(),
            tls_name: tls_name.to_owned(),
            host_header: host_header.to_owned(),
        }
    }

    #[tokio::test]
    async fn literals_and_explicit_ports_are_used_as_they_are() {
        // Even with a delegation and SRV records, which are not looked at.
        let discovery = discovery(
            vec![records::srv("_matrix-fed._tcp.a.test.", 0, 0, 1, "x.test.")],
            &[("a.test", r#"{"m.server": "b.test"}"#)],
        )
        .await;
        assert_eq!(
            discovery.destination(&name("1.2.3.4")).await,
            destination(&[("1.2.3.4", 8448)], "1.2.3.4", "1.2.3.4")
        );
        assert_eq!(
            discovery.destination(&name("[::1]:8449")).await,
            destination(&[("::1", 8449)], "::1", "[::1]:8449")
        );
        assert_eq!(
            discovery.destination(&name("a.test:8450")).await,
            destination(&[("a.test", 8450)], "a.test", "a.test:8450")
        );
    }

    #[tokio::test]
    async fn a_delegation_is_followed_then_its_srv_records() {
        let discovery = discovery(
            vec![
                records::srv(
                    "_matrix-fed._tcp.delegated.test.",
                    10,
                    0,
                    8500,
                    "host.test.",
                ),
                // The server's own SRV record is not used once it delegates.
                records::srv("_matrix-fed._tcp.a.test.", 0, 0, 1, "wrong.test."),
            ],
            &[
                ("a.test", r#"{"m.server": "delegated.test"}"#),
                ("b.test", r#"{"m.server": "delegated.test:9000"}"#),
                ("c.test", r#"{"m.server": "10.0.0.7"}"#),
            ],
        )
        .await;
        // The certificate and Host are the delegated name's, not the SRV target's.
        assert_eq!(
            discovery.destination(&name("a.test")).await,
            destination(&[("host.test", 8500)], "delegated.test", "delegated.test")
        );
        assert_eq!(
            discovery.destination(&name("b.test")).await,
            destination(
                &[("delegated.test", 9000)],
                "delegated.test",
                "delegated.test:9000"
            )
        );
        assert_eq!(
            discovery.destination(&name("c.test")).await,
            destination(&[("10.0.0.7", 8448)], "10.0.0.7", "10.0.0.7")
        );
    }

    #[tokio::test]
    async fn without_a_delegation_srv_records_then_port_8448() {
        let discovery = discovery(
            vec![
                records::srv("_matrix-fed._tcp.a.test.", 10, 0, 8500, "fed.test."),
                records::srv("_matrix-fed._tcp.a.test.", 5, 0, 8501, "first.test."),
                records::srv("_matrix-fed._tcp.a.test.", 5, 0, 8501, "first.test."),
                records::srv("_matrix._tcp.a.test.", 0, 0, 1, "old.test."),
                records::srv("_matrix._tcp.b.test.", 0, 0, 8502, "old.test."),
            ],
            // A body that is not a delegation counts as none.
            &[("d.test", r#"{"m.server": "not a name!"}"#)],
        )
        .await;
        // Lower priority first; the deprecated record only when there is no current one.
        let a = discovery.destination(&name("a.test")).await;
        assert_eq!(a.endpoints[0], ("first.test".to_owned(), 8501));
        assert_eq!(a.endpoints.last(), Some(&("fed.test".to_owned(), 8500)));
        assert_eq!(
            (a.tls_name.as_str(), a.host_header.as_str()),
            ("a.test", "a.test")
        );
        assert_eq!(
            discovery.destination(&name("b.test")).await,
            destination(&[("old.test", 8502)], "b.test", "b.test")
        );
        for server in ["c.test", "d.test"] {
            assert_eq!(
                discovery.destination(&name(server)).await,
                destination(&[(server, 8448)], server, server)
            );
        }
    }

    #[tokio::test]
    async fn the_override_table_wins() {
        let mut discovery = discovery(
            vec![records::srv("_matrix-fed._tcp.a.test.", 0, 0, 1, "x.test.")],
            &[("a.test", r#"{"m.server": "b.test"}"#)],
        )
        .await;
        discovery
            .overrides
            .insert("a.test".to_owned(), ("127.0.0.1".to_owned(), 18448));
        assert_eq!(
            discovery.destination(&name("a.test")).await,
            destination(&[("127.0.0.1", 18448)], "a.test", "a.test")
        );
    }

    #[test]
    fn well_known_bodies_and_cache_lifetimes() {
        assert_eq!(
            parse_well_known(br#"{"m.server": "matrix.example.org:443"}"#),
            Some(name("matrix.example.org:443"))
        );
        for bad in [
            &br#"{"m.server": 7}"#[..],
            br#"{"server": "a.test"}"#,
            b"not json",
            br#"{"m.server": "a b"}"#,
        ] {
            assert_eq!(parse_well_known(bad), None);
        }
        let mut huge = br#"{"m.server": "a.test", "pad": ""#.to_vec();
        huge.extend(std::iter::repeat_n(b'x', WELL_KNOWN_LIMIT));
        huge.extend(br#""}"#);
        assert_eq!(parse_well_known(&huge), None);
        assert_eq!(keep_for("max-age=7200"), Duration::from_secs(7200));
        assert_eq!(keep_for("public, max-age=999999999"), LONGEST_KEEP);
        assert_eq!(keep_for("max-age=0"), SHORTEST_KEEP);
        assert_eq!(keep_for("no-store"), SHORTEST_KEEP);
        assert_eq!(keep_for("public"), DEFAULT_KEEP);
    }
}
