//! Which servers this server federates with: the configuration's `allow_servers` and
//! `deny_servers`, for every request both ways, and each room's `m.room.server_acl`, for what
//! another server does in that room (its transactions' PDUs, joins, leaves, invites, reads).

use ruma::{RoomId, ServerName};
use serde_json::Value;

use crate::Services;
use crate::error::Error;

/// Whether `pattern` (`*` any characters, `?` one character) matches `text`, ignoring case.
pub fn glob(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.to_lowercase().chars().collect();
    let text: Vec<char> = text.to_lowercase().chars().collect();
    let (mut p, mut t) = (0, 0);
    // Where the last `*` was, and the text position it matched up to.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

/// Whether the configuration lets this server federate with `server`.
pub fn configured(config: &causeway_config::FederationConfig, server: &ServerName) -> bool {
    let name = server.as_str();
    let allowed =
        config.allow_servers.is_empty() || config.allow_servers.iter().any(|p| glob(p, name));
    allowed && !config.deny_servers.iter().any(|p| glob(p, name))
}

/// Whether a room's `m.room.server_acl` content lets `server` take part: its host (the port
/// left out) matches an `allow` pattern and no `deny` pattern, and an IP literal only when
/// `allow_ip_literals` is not false.
pub fn acl_allows(content: &Value, server: &ServerName) -> bool {
    let host = server.host();
    let patterns = |key: &str| -> Vec<&str> {
        content[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect()
    };
    if server.is_ip_literal() && content["allow_ip_literals"].as_bool() == Some(false) {
        return false;
    }
    if patterns("deny").iter().any(|pattern| glob(pattern, host)) {
        return false;
    }
    patterns("allow").iter().any(|pattern| glob(pattern, host))
}

/// Fails with `M_FORBIDDEN` when the room's server ACL bans `server`.
pub async fn check(
    services: &Services,
    room_id: &RoomId,
    server: &ServerName,
) -> Result<(), Error> {
    if let Some(acl) = services
        .rooms
        .state_event(room_id, "m.room.server_acl", "")
        .await?
        && !acl_allows(&acl.content_value(), server)
    {
        return Err(Error::Forbidden(format!(
            "the server ACL of {room_id} bans {server}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn server(name: &str) -> ruma::OwnedServerName {
        ServerName::parse(name).unwrap()
    }

    #[test]
    fn patterns() {
        assert!(glob("*", "example.org"));
        assert!(glob("*.example.org", "chat.example.org"));
        assert!(!glob("*.example.org", "example.org"));
        assert!(glob("ex?mple.org", "EXAMPLE.org"));
        assert!(!glob("ex?mple.org", "exaample.org"));
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(!glob("a*b*c", "aXXbYY"));
        assert!(glob("", ""));
        assert!(!glob("", "a"));
    }

    #[test]
    fn server_acls() {
        let acl = json!({"allow": ["*"], "deny": ["evil.example", "*.bad.example"],
                         "allow_ip_literals": false});
        assert!(acl_allows(&acl, &server("good.example:8448")));
        assert!(!acl_allows(&acl, &server("evil.example")));
        assert!(!acl_allows(&acl, &server("evil.example:443")));
        assert!(!acl_allows(&acl, &server("x.bad.example")));
        assert!(!acl_allows(&acl, &server("127.0.0.1:8448")));
        // No allow list: nobody; IP literals allowed unless said otherwise.
        assert!(!acl_allows(&json!({"deny": []}), &server("good.example")));
        assert!(acl_allows(&json!({"allow": ["*"]}), &server("[::1]:8448")));
    }

    #[test]
    fn configured_lists() {
        let mut config = causeway_config::FederationConfig::default();
        assert!(configured(&config, &server("any.example")));
        config.deny_servers = vec!["*.spam.example".into()];
        assert!(!configured(&config, &server("a.spam.example")));
        assert!(configured(&config, &server("any.example")));
        config.allow_servers = vec!["friend.example".into(), "a.spam.example".into()];
        assert!(configured(&config, &server("friend.example")));
        assert!(!configured(&config, &server("any.example")));
        assert!(!configured(&config, &server("a.spam.example")));
    }
}
