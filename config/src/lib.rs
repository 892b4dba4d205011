//! Causeway's configuration: typed, documented, with defaults that run with no file at all.
//!
//! [`Config::default`] is what `causeway serve` uses without `--config`. [`load`] reads a TOML
//! file; every key is optional and unknown keys are refused, so a typo never passes silently.
//! [`EXAMPLE`] is the fully commented configuration that `causeway config example` prints; a
//! test keeps it equal to the defaults.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};

mod address;
pub use address::AddressRange;

/// The commented example configuration. Every value in it is the default.
pub const EXAMPLE: &str = include_str!("../example.toml");

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error("{path}: {message}")]
    Syntax { path: PathBuf, message: String },
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub client_api: ClientApiConfig,
    pub federation: FederationConfig,
    pub database: DatabaseConfig,
    pub registration: RegistrationConfig,
    pub media: MediaConfig,
    pub limits: LimitsConfig,
    pub rate_limits: RateLimitsConfig,
    pub logging: LoggingConfig,
    pub xmpp: XmppConfig,
    pub voip: VoipConfig,
    pub push: PushConfig,
}

impl Config {
    /// Where the SQLite database lives when `database.url` is not set.
    pub fn sqlite_path(&self) -> PathBuf {
        self.server.data_dir.join("causeway.sqlite3")
    }

    /// The database URL to connect to: the configured one, or SQLite in the data directory.
    pub fn database_url(&self) -> String {
        match &self.database.url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}?mode=rwc", self.sqlite_path().display()),
        }
    }
}

/// Reads and validates a configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text).map_err(|error| error.with_path(path))
}

/// An error of [`parse`], before it is tied to a file.
#[derive(Debug)]
pub struct ParseError {
    key: Option<String>,
    message: String,
}

impl ParseError {
    fn with_path(self, path: &Path) -> ConfigError {
        match self.key {
            Some(key) => ConfigError::Invalid {
                path: path.to_owned(),
                key,
                message: self.message,
            },
            None => ConfigError::Syntax {
                path: path.to_owned(),
                message: self.message,
            },
        }
    }

    /// The dotted key the error is about, when it is about one.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => write!(f, "`{key}`: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Parses configuration text.
pub fn parse(text: &str) -> Result<Config, ParseError> {
    let deserializer = toml::Deserializer::parse(text).map_err(|error| ParseError {
        key: None,
        message: error.to_string().trim_end().to_owned(),
    })?;
    let config: Config = serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let key = error.path().to_string();
        let message = error.into_inner().message().to_owned();
        ParseError {
            key: Some(key),
            message,
        }
    })?;
    config.validate().map_err(|(key, message)| ParseError {
        key: Some(key.to_owned()),
        message,
    })?;
    Ok(config)
}

impl Config {
    /// Checks relations between keys that serde cannot express.
    fn validate(&self) -> Result<(), (&'static str, String)> {
        if !ROOM_VERSIONS.contains(&self.server.default_room_version.as_str()) {
            return Err((
                "server.default_room_version",
                format!(
                    "room version {:?} is not one of {}",
                    self.server.default_room_version,
                    ROOM_VERSIONS.join(", ")
                ),
            ));
        }
        if self.xmpp.muc_self_ping_secs == 0 {
            return Err((
                "xmpp.muc_self_ping_secs",
                "the interval of self-pings must be at least one second".to_owned(),
            ));
        }
        if self.registration.mode == RegistrationMode::Token && self.registration.tokens.is_empty()
        {
            return Err((
                "registration.tokens",
                "registration mode `token` needs at least one token".to_owned(),
            ));
        }
        if self.registration.tokens.iter().any(String::is_empty) {
            return Err((
                "registration.tokens",
                "a registration token must not be empty".to_owned(),
            ));
        }
        match (
            &self.federation.tls_certificate,
            &self.federation.tls_private_key,
        ) {
            (Some(_), None) => {
                return Err((
                    "federation.tls_private_key",
                    "set together with federation.tls_certificate".to_owned(),
                ));
            }
            (None, Some(_)) => {
                return Err((
                    "federation.tls_certificate",
                    "set together with federation.tls_private_key".to_owned(),
                ));
            }
            _ => {}
        }
        if let Some((name, destination)) = self
            .federation
            .destinations
            .iter()
            .find(|(_, destination)| split_destination(destination).is_none())
        {
            return Err((
                "federation.destinations",
                format!("the destination of {name}, {destination:?}, is not host:port"),
            ));
        }
        for (key, patterns) in [
            ("federation.allow_servers", &self.federation.allow_servers),
            ("federation.deny_servers", &self.federation.deny_servers),
        ] {
            if let Some(bad) = patterns
                .iter()
                .find(|pattern| pattern.is_empty() || pattern.contains(['/', ' ']))
            {
                return Err((key, format!("{bad:?} is not a server name pattern")));
            }
        }
        for notary in &self.federation.trusted_key_servers {
            if let Some((id, _)) = notary.verify_keys.iter().find(|(id, key)| {
                !id.starts_with("ed25519:")
                    || key.is_empty()
                    || !key
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
            }) {
                return Err((
                    "federation.trusted_key_servers",
                    format!(
                        "the key {id:?} of {} is not an ed25519 key in unpadded base64",
                        notary.server_name
                    ),
                ));
            }
        }
        match (&self.xmpp.tls_certificate, &self.xmpp.tls_private_key) {
            (Some(_), None) => {
                return Err((
                    "xmpp.tls_private_key",
                    "set together with xmpp.tls_certificate".to_owned(),
                ));
            }
            (None, Some(_)) => {
                return Err((
                    "xmpp.tls_certificate",
                    "set together with xmpp.tls_private_key".to_owned(),
                ));
            }
            _ => {}
        }
        if let Some(domain) = &self.xmpp.muc_domain
            && ServerName::try_from(domain.as_str()).is_err()
        {
            return Err(("xmpp.muc_domain", format!("{domain:?} is not a domain")));
        }
        if self.xmpp.max_inbound_streams == 0 || self.xmpp.max_inbound_streams_per_address == 0 {
            let key = if self.xmpp.max_inbound_streams == 0 {
                "xmpp.max_inbound_streams"
            } else {
                "xmpp.max_inbound_streams_per_address"
            };
            return Err((key, "must be at least 1".to_owned()));
        }
        if self.xmpp.max_stanzas_per_second == 0 {
            return Err((
                "xmpp.max_stanzas_per_second",
                "must be at least 1".to_owned(),
            ));
        }
        if self.xmpp.max_stanza_bytes < 10_000 {
            return Err((
                "xmpp.max_stanza_bytes",
                "must be at least 10000 (RFC 6120 §13.12)".to_owned(),
            ));
        }
        if self.database.max_connections == 0 {
            return Err(("database.max_connections", "must be at least 1".to_owned()));
        }
        for (key, limit) in [
            ("rate_limits.login", &self.rate_limits.login),
            ("rate_limits.registration", &self.rate_limits.registration),
            ("rate_limits.message", &self.rate_limits.message),
        ] {
            if !(limit.per_second.is_finite() && limit.per_second > 0.0) {
                return Err((key, "per_second must be a positive number".to_owned()));
            }
            if limit.burst == 0 {
                return Err((key, "burst must be at least 1".to_owned()));
            }
        }
        Ok(())
    }
}

/// A server name as the Matrix specification defines it: a DNS name, an IPv4 address or a
/// bracketed IPv6 address, optionally followed by `:port`. It is also the XMPP domain.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerName(String);

impl ServerName {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The host part, without the port.
    pub fn host(&self) -> &str {
        if self.0.starts_with('[') {
            match self.0.find(']') {
                Some(end) => &self.0[..=end],
                None => &self.0,
            }
        } else {
            self.0.split(':').next().unwrap_or(&self.0)
        }
    }
}

impl fmt::Display for ServerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a text is not a server name.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ServerNameError {
    #[error("a server name must not be empty")]
    Empty,
    #[error("a server name must be at most 255 bytes")]
    TooLong,
    #[error("the port must be a number from 1 to 65535")]
    InvalidPort,
    #[error("invalid IPv6 literal")]
    InvalidIpv6,
    #[error("invalid character {0:?} in server name (allowed: letters, digits, `-` and `.`)")]
    InvalidCharacter(char),
}

impl TryFrom<&str> for ServerName {
    type Error = ServerNameError;

    fn try_from(value: &str) -> Result<Self, Self::Error> {
        if value.is_empty() {
            return Err(ServerNameError::Empty);
        }
        if value.len() > 255 {
            return Err(ServerNameError::TooLong);
        }
        let (host, port) = if let Some(rest) = value.strip_prefix('[') {
            let end = rest.find(']').ok_or(ServerNameError::InvalidIpv6)?;
            let (address, after) = rest.split_at(end);
            address
                .parse::<std::net::Ipv6Addr>()
                .map_err(|_| ServerNameError::InvalidIpv6)?;
            let after = &after[1..];
            let port = match after.strip_prefix(':') {
                Some(port) => Some(port),
                None if after.is_empty() => None,
                None => return Err(ServerNameError::InvalidIpv6),
            };
            (None, port)
        } else {
            match value.split_once(':') {
                Some((host, port)) => (Some(host), Some(port)),
                None => (Some(value), None),
            }
        };
        if let Some(host) = host {
            if host.is_empty() {
                return Err(ServerNameError::Empty);
            }
            if let Some(bad) = host
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '.'))
            {
                return Err(ServerNameError::InvalidCharacter(bad));
            }
        }
        if let Some(port) = port {
            match port.parse::<u16>() {
                Ok(p) if p > 0 && !port.starts_with('+') => {}
                _ => return Err(ServerNameError::InvalidPort),
            }
        }
        Ok(ServerName(value.to_owned()))
    }
}

impl<'de> Deserialize<'de> for ServerName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        ServerName::try_from(text.as_str()).map_err(serde::de::Error::custom)
    }
}

/// `[server]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub name: ServerName,
    pub data_dir: PathBuf,
    pub public_baseurl: Option<String>,
    /// The room version of new rooms when their creator asks for none (6 to 12).
    pub default_room_version: String,
}

/// The room versions this server creates and joins.
pub const ROOM_VERSIONS: [&str; 7] = ["6", "7", "8", "9", "10", "11", "12"];

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            name: ServerName("localhost".to_owned()),
            data_dir: PathBuf::from("./causeway-data"),
            public_baseurl: None,
            default_room_version: "12".to_owned(),
        }
    }
}

/// `[client_api]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientApiConfig {
    pub bind: SocketAddr,
    pub trusted_proxies: Vec<AddressRange>,
}

impl Default for ClientApiConfig {
    fn default() -> Self {
        ClientApiConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 8008)),
            trusted_proxies: Vec::new(),
        }
    }
}

/// `[federation]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FederationConfig {
    pub enabled: bool,
    pub bind: SocketAddr,
    pub tls_certificate: Option<PathBuf>,
    pub tls_private_key: Option<PathBuf>,
    /// PEM files of certificate authorities trusted beside the system's, for the
    /// certificates of other servers (a private CA of a closed network, or of tests).
    pub ca_files: Vec<PathBuf>,
    /// Where to reach servers, by server name, as `host:port`: used instead of
    /// `.well-known` and DNS (closed networks, tests).
    pub destinations: std::collections::BTreeMap<String, String>,
    /// The only servers federated with, as patterns (`*` any characters, `?` one); empty:
    /// every server.
    pub allow_servers: Vec<String>,
    /// Servers never federated with, as patterns; they win over `allow_servers`.
    pub deny_servers: Vec<String>,
    /// Notaries: servers asked for another server's signing keys when that server cannot be
    /// reached or does not have them, in order (`[[federation.trusted_key_servers]]`).
    pub trusted_key_servers: Vec<TrustedKeyServer>,
    /// Whether other servers may read this server's public room directory (the rooms its
    /// users published); Synapse's `allow_public_rooms_over_federation`.
    pub serve_public_rooms: bool,
    /// Networks other servers may be reached in though they are not public (loopback,
    /// private, link-local, unique-local addresses are otherwise never connected to, unless
    /// `destinations` names the server); Synapse's `ip_range_whitelist`.
    pub ip_range_whitelist: Vec<AddressRange>,
}

/// A notary trusted for other servers' keys.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedKeyServer {
    pub server_name: ServerName,
    /// The notary's own keys, by id (`ed25519:auto`), in unpadded base64; when none are
    /// given, they are fetched from the notary.
    #[serde(default)]
    pub verify_keys: std::collections::BTreeMap<String, String>,
}

impl Default for FederationConfig {
    fn default() -> Self {
        FederationConfig {
            enabled: true,
            bind: SocketAddr::from(([127, 0, 0, 1], 8448)),
            tls_certificate: None,
            tls_private_key: None,
            ca_files: Vec::new(),
            destinations: std::collections::BTreeMap::new(),
            allow_servers: Vec::new(),
            deny_servers: Vec::new(),
            trusted_key_servers: Vec::new(),
            serve_public_rooms: true,
            ip_range_whitelist: Vec::new(),
        }
    }
}

/// Splits a `host:port` destination (`[v6]:port` for IPv6).
pub fn split_destination(destination: &str) -> Option<(&str, u16)> {
    let (host, port) = destination.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    (!host.is_empty() && !host.contains(['/', ' '])).then_some((host, port))
}

/// `[database]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    pub url: Option<String>,
    pub max_connections: u32,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: None,
            max_connections: 4,
        }
    }
}

/// Who may create an account through the client API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RegistrationMode {
    /// Only administrators create accounts (`causeway user add`).
    #[default]
    Disabled,
    /// Anyone may register.
    Open,
    /// Registration needs one of the configured tokens (`m.login.registration_token`).
    Token,
}

/// `[registration]`
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrationConfig {
    pub mode: RegistrationMode,
    pub tokens: Vec<String>,
    /// Guest accounts (`/register?kind=guest`, no password): they may join rooms whose guest
    /// access is `can_join`, read `world_readable` ones, and do little else.
    pub guests: bool,
}

/// `[media]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    pub max_upload_size: u64,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            max_upload_size: 50 * 1024 * 1024,
        }
    }
}

/// `[limits]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub max_json_body: u64,
    pub max_sync_timeout_ms: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_json_body: 1024 * 1024,
            max_sync_timeout_ms: 60_000,
        }
    }
}

/// One token bucket: `burst` actions at once, refilled at `per_second`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

/// `[rate_limits]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitsConfig {
    pub login: RateLimit,
    pub registration: RateLimit,
    pub message: RateLimit,
    /// Per remote domain (XMPP servers today): stanzas that may become events.
    pub remote_events: RateLimit,
    /// Per remote domain: accounts made for its users (ghosts).
    pub remote_accounts: RateLimit,
    /// Per remote domain: rooms made for its users' chats.
    pub remote_rooms: RateLimit,
}

impl Default for RateLimitsConfig {
    fn default() -> Self {
        RateLimitsConfig {
            login: RateLimit {
                per_second: 0.2,
                burst: 5,
            },
            registration: RateLimit {
                per_second: 0.1,
                burst: 3,
            },
            message: RateLimit {
                per_second: 10.0,
                burst: 50,
            },
            remote_events: RateLimit {
                per_second: 20.0,
                burst: 200,
            },
            remote_accounts: RateLimit {
                per_second: 0.2,
                burst: 50,
            },
            remote_rooms: RateLimit {
                per_second: 0.2,
                burst: 50,
            },
        }
    }
}

/// `[voip]`: the TURN servers clients are given for calls.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VoipConfig {
    pub turn_uris: Vec<String>,
    /// Shared with the TURN server (coturn's `static-auth-secret`): each user gets credentials
    /// of their own, made from it (the TURN REST API).
    pub turn_shared_secret: Option<String>,
    pub turn_user_lifetime_secs: u64,
}

impl Default for VoipConfig {
    fn default() -> Self {
        VoipConfig {
            turn_uris: Vec::new(),
            turn_shared_secret: None,
            turn_user_lifetime_secs: 86_400,
        }
    }
}

/// `[push]`: notifications sent to the push gateways of mobile apps.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PushConfig {
    /// Addresses that push gateways may have although they are not public (loopback, private
    /// networks): a gateway the operator runs inside. Any other gateway must resolve to public
    /// addresses only, so that users cannot make the server call into its own network.
    pub allowed_gateway_addresses: Vec<AddressRange>,
}

/// A fixed route to a remote XMPP domain's server (`[[xmpp.routes]]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XmppRoute {
    pub domain: String,
    pub address: SocketAddr,
    #[serde(default)]
    pub direct_tls: bool,
}

/// `[xmpp]`: the XMPP server-to-server side.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct XmppConfig {
    pub enabled: bool,
    pub muc_domain: Option<String>,
    /// XMPP domains whose users may make rooms by joining an address no room has (`*`: any).
    pub muc_create_domains: Vec<String>,
    /// How often (seconds) each local member of a portal checks, by an XEP-0410 self-ping,
    /// that the MUC still has them; one it no longer has joins again.
    pub muc_self_ping_secs: u64,
    pub listen_starttls: Vec<SocketAddr>,
    pub listen_direct_tls: Vec<SocketAddr>,
    pub tls_certificate: Option<PathBuf>,
    pub tls_private_key: Option<PathBuf>,
    pub ca_files: Vec<PathBuf>,
    pub system_roots: bool,
    pub require_tls: bool,
    pub dialback: bool,
    pub routes: Vec<XmppRoute>,
    pub allow_domains: Vec<String>,
    pub deny_domains: Vec<String>,
    pub idle_timeout_secs: u64,
    pub max_stanza_bytes: usize,
    pub max_stanzas_per_second: u32,
    pub max_inbound_streams: usize,
    pub max_inbound_streams_per_address: usize,
    pub nameservers: Vec<SocketAddr>,
}

impl Default for XmppConfig {
    fn default() -> Self {
        XmppConfig {
            enabled: true,
            muc_domain: None,
            muc_create_domains: Vec::new(),
            muc_self_ping_secs: 300,
            listen_starttls: vec![SocketAddr::from(([127, 0, 0, 1], 5269))],
            listen_direct_tls: vec![SocketAddr::from(([127, 0, 0, 1], 5270))],
            tls_certificate: None,
            tls_private_key: None,
            ca_files: Vec::new(),
            system_roots: true,
            require_tls: true,
            dialback: true,
            routes: Vec::new(),
            allow_domains: Vec::new(),
            deny_domains: Vec::new(),
            idle_timeout_secs: 300,
            max_stanza_bytes: 256 * 1024,
            max_stanzas_per_second: 500,
            max_inbound_streams: 4096,
            max_inbound_streams_per_address: 64,
            nameservers: Vec::new(),
        }
    }
}

impl Config {
    /// The domain of the MUC service: configured, or `muc.` before the server's host.
    pub fn muc_domain(&self) -> String {
        self.xmpp
            .muc_domain
            .clone()
            .unwrap_or_else(|| format!("muc.{}", self.server.name.host()))
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

/// `[logging]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    pub format: LogFormat,
    pub filter: String,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            format: LogFormat::Pretty,
            filter: "info".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_text_is_the_default() {
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn example_is_the_default() {
        assert_eq!(parse(EXAMPLE).unwrap(), Config::default());
    }

    #[test]
    fn trusted_proxies_are_addresses_and_ranges() {
        let config = parse(
            "[client_api]\ntrusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\", \"fd00::/8\", \"::1\"]\n",
        )
        .unwrap();
        let ranges = &config.client_api.trusted_proxies;
        let inside = |address: &str| ranges.iter().any(|r| r.contains(address.parse().unwrap()));
        for address in [
            "127.0.0.1",
            "10.200.3.4",
            "fd12::1",
            "::1",
            "::ffff:10.1.1.1",
        ] {
            assert!(inside(address), "{address}");
        }
        for address in ["127.0.0.2", "11.0.0.1", "fe80::1", "192.168.1.1"] {
            assert!(!inside(address), "{address}");
        }
        let all: AddressRange = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        assert!(!all.contains("::2".parse().unwrap()));
        for bad in ["10.0.0.0/33", "proxy.example", "::/129", "10.0.0.0/x"] {
            let error = parse(&format!("[client_api]\ntrusted_proxies = [{bad:?}]\n")).unwrap_err();
            assert_eq!(
                error.key(),
                Some("client_api.trusted_proxies[0]"),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn example_documents_every_key() {
        // Every key of the example must be commented: a line of `key = value` follows a `#` line.
        let lines: Vec<&str> = EXAMPLE.lines().collect();
        for (index, line) in lines.iter().enumerate() {
            if line.contains(" = ") && !line.starts_with('#') {
                assert!(
                    index > 0 && lines[index - 1].starts_with('#'),
                    "undocumented key: {line}"
                );
            }
        }
    }

    #[test]
    fn values_are_read() {
        let config = parse(
            r#"
            [server]
            name = "example.org:8448"
            data_dir = "/var/lib/causeway"
            [client_api]
            bind = "0.0.0.0:9000"
            [registration]
            mode = "token"
            tokens = ["abc"]
            [rate_limits.message]
            per_second = 1000.0
            burst = 1000
            "#,
        )
        .unwrap();
        assert_eq!(config.server.name.as_str(), "example.org:8448");
        assert_eq!(config.server.name.host(), "example.org");
        assert_eq!(config.client_api.bind.port(), 9000);
        assert_eq!(config.registration.mode, RegistrationMode::Token);
        assert_eq!(config.rate_limits.message.burst, 1000);
        assert_eq!(config.rate_limits.login, RateLimitsConfig::default().login);
        assert_eq!(
            config.sqlite_path(),
            PathBuf::from("/var/lib/causeway/causeway.sqlite3")
        );
    }

    #[test]
    fn unknown_key_is_named() {
        let error = parse("[server]\nnmae = \"x\"\n").unwrap_err();
        assert_eq!(error.key(), Some("server.nmae"));
        assert!(
            error.to_string().contains("unknown field `nmae`"),
            "{error}"
        );
    }

    #[test]
    fn wrong_type_is_named() {
        let error = parse("[client_api]\nbind = 8008\n").unwrap_err();
        assert_eq!(error.key(), Some("client_api.bind"));
        let error = parse("[media]\nmax_upload_size = \"big\"\n").unwrap_err();
        assert_eq!(error.key(), Some("media.max_upload_size"));
    }

    #[test]
    fn bad_server_name_is_named() {
        let error = parse("[server]\nname = \"exa mple.org\"\n").unwrap_err();
        assert_eq!(error.key(), Some("server.name"));
        assert!(error.to_string().contains("invalid character"), "{error}");
        let error = parse("[server]\nname = \"example.org:99999\"\n").unwrap_err();
        assert!(error.to_string().contains("port"), "{error}");
    }

    #[test]
    fn bad_enum_value_is_named() {
        let error = parse("[registration]\nmode = \"sometimes\"\n").unwrap_err();
        assert_eq!(error.key(), Some("registration.mode"));
        assert!(error.to_string().contains("open"), "{error}");
    }

    #[test]
    fn relations_between_keys_are_checked() {
        let error = parse("[registration]\nmode = \"token\"\n").unwrap_err();
        assert_eq!(error.key(), Some("registration.tokens"));
        let error = parse("[server]\ndefault_room_version = \"5\"\n").unwrap_err();
        assert_eq!(error.key(), Some("server.default_room_version"));
        let error = parse("[xmpp]\nmuc_self_ping_secs = 0\n").unwrap_err();
        assert_eq!(error.key(), Some("xmpp.muc_self_ping_secs"));
        assert_eq!(
            parse("[server]\ndefault_room_version = \"10\"\n")
                .unwrap()
                .server
                .default_room_version,
            "10"
        );
        let error = parse("[federation.destinations]\n\"b.test\" = \"b.test\"\n").unwrap_err();
        assert_eq!(error.key(), Some("federation.destinations"));
        let config = parse("[federation.destinations]\n\"b.test\" = \"127.0.0.1:8449\"\n").unwrap();
        assert_eq!(
            split_destination(&config.federation.destinations["b.test"]),
            Some(("127.0.0.1", 8449))
        );
        assert_eq!(split_destination("[::1]:8448"), Some(("::1", 8448)));
        let error = parse("[federation]\ntls_certificate = \"a.pem\"\n").unwrap_err();
        assert_eq!(error.key(), Some("federation.tls_private_key"));
        let config = parse(
            "[[federation.trusted_key_servers]]\nserver_name = \"notary.test\"\n\
             verify_keys = { \"ed25519:a\" = \"AAAA\" }\n",
        )
        .unwrap();
        assert_eq!(
            config.federation.trusted_key_servers[0]
                .server_name
                .as_str(),
            "notary.test"
        );
        let config =
            parse("[federation]\nip_range_whitelist = [\"10.0.0.0/8\", \"fd00::/8\"]\n").unwrap();
        assert_eq!(config.federation.ip_range_whitelist.len(), 2);
        let error = parse("[federation]\nip_range_whitelist = [\"10.0.0.0/33\"]\n").unwrap_err();
        assert!(
            error
                .key()
                .is_some_and(|key| key.starts_with("federation.ip_range_whitelist")),
            "{error}"
        );
        for bad in [
            "server_name = \"not a name\"\n",
            "server_name = \"n.test\"\nverify_keys = { \"a\" = \"AAAA\" }\n",
            "server_name = \"n.test\"\nverify_keys = { \"ed25519:a\" = \"A=A\" }\n",
        ] {
            let error = parse(&format!("[[federation.trusted_key_servers]]\n{bad}")).unwrap_err();
            assert!(
                error
                    .key()
                    .is_some_and(|key| key.starts_with("federation.trusted_key_servers")),
                "{bad}: {error}"
            );
        }
        let error = parse("[rate_limits.login]\nper_second = 0.0\nburst = 1\n").unwrap_err();
        assert_eq!(error.key(), Some("rate_limits.login"));
        let error = parse("[database]\nmax_connections = 0\n").unwrap_err();
        assert_eq!(error.key(), Some("database.max_connections"));
    }

    #[test]
    fn syntax_error_has_no_key_but_a_position() {
        let error = parse("[server\nname = 1").unwrap_err();
        assert_eq!(error.key(), None);
        assert!(error.to_string().contains("line 1"), "{error}");
    }

    #[test]
    fn load_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("causeway.toml");
        std::fs::write(&path, "[server]\nname = \"\"\n").unwrap();
        let error = load(&path).unwrap_err().to_string();
        assert!(error.contains("causeway.toml"), "{error}");
        assert!(error.contains("`server.name`"), "{error}");
        let missing = load(&dir.path().join("missing.toml")).unwrap_err();
        assert!(matches!(missing, ConfigError::Read { .. }));
    }

    #[test]
    fn server_names() {
        for good in [
            "localhost",
            "example.org",
            "example.org:8448",
            "127.0.0.1:8481",
            "[::1]",
            "[::1]:8448",
            "a-b.c",
        ] {
            assert!(ServerName::try_from(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ":8448",
            "exa_mple.org",
            "example.org:",
            "example.org:0",
            "[::1",
            "[zz]",
            "[::1]x",
        ] {
            assert!(ServerName::try_from(bad).is_err(), "{bad}");
        }
        assert_eq!(ServerName::try_from("[::1]:80").unwrap().host(), "[::1]");
    }
}
