//! The address a request comes from, for rate limits: the connection's peer, or, when the peer
//! is a trusted reverse proxy, the address the proxies recorded in `X-Forwarded-For`.

use std::net::IpAddr;

use causeway_config::AddressRange;
use http::HeaderMap;

/// The client's address. `X-Forwarded-For` lists the client first and each proxy after it
/// appends the address it received the request from; only the entries added by trusted proxies
/// can be believed, so the list is read from the right, skipping trusted proxies, and the first
/// address that is not one is the client. From an untrusted peer the header is ignored: anyone
/// can write it.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[AddressRange]) -> IpAddr {
    let is_trusted = |address: IpAddr| trusted.iter().any(|range| range.contains(address));
    if !is_trusted(peer) {
        return peer;
    }
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect();
    // The nearest hop known so far: a trusted proxy.
    let mut nearest = peer;
    for entry in entries.iter().rev() {
        let Ok(address) = entry.parse::<IpAddr>() else {
            // Garbage before a trusted hop: the request is known to come through that hop only.
            return nearest;
        };
        if !is_trusted(address) {
            return address.to_canonical();
        }
        nearest = address;
    }
    nearest
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append("x-forwarded-for", value.parse().unwrap());
        }
        map
    }

    fn ranges(list: &[&str]) -> Vec<AddressRange> {
        list.iter().map(|r| r.parse().unwrap()).collect()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn only_trusted_proxies_are_believed() {
        let trusted = ranges(&["127.0.0.1", "10.0.0.0/8"]);
        // No proxy configured, or an untrusted peer: the header is ignored.
        assert_eq!(
            client_address(ip("203.0.113.9"), &headers(&["198.51.100.1"]), &[]),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_address(ip("203.0.113.9"), &headers(&["198.51.100.1"]), &trusted),
            ip("203.0.113.9")
        );
        // Through one trusted proxy.
        assert_eq!(
            client_address(ip("127.0.0.1"), &headers(&["198.51.100.1"]), &trusted),
            ip("198.51.100.1")
        );
        // A client that writes its own header first cannot pick its address: the entry the
        // trusted proxy appended is the one believed.
        assert_eq!(
            client_address(
                ip("127.0.0.1"),
                &headers(&["1.2.3.4, 198.51.100.1"]),
                &trusted
            ),
            ip("198.51.100.1")
        );
        // Through two trusted proxies, in one header or two.
        assert_eq!(
            client_address(
                ip("127.0.0.1"),
                &headers(&["198.51.100.1, 10.1.2.3"]),
                &trusted
            ),
            ip("198.51.100.1")
        );
        assert_eq!(
            client_address(
                ip("127.0.0.1"),
                &headers(&["198.51.100.1", "10.1.2.3"]),
                &trusted
            ),
            ip("198.51.100.1")
        );
        // IPv6 and IPv4-mapped clients.
        assert_eq!(
            client_address(ip("127.0.0.1"), &headers(&["2001:db8::7"]), &trusted),
            ip("2001:db8::7")
        );
        assert_eq!(
            client_address(
                ip("127.0.0.1"),
                &headers(&["::ffff:198.51.100.1"]),
                &trusted
            ),
            ip("198.51.100.1")
        );
    }

    #[test]
    fn missing_or_broken_headers_fall_back_to_the_nearest_proxy() {
        let trusted = ranges(&["127.0.0.1", "10.0.0.0/8"]);
        assert_eq!(
            client_address(ip("127.0.0.1"), &headers(&[]), &trusted),
            ip("127.0.0.1")
        );
        assert_eq!(
            client_address(ip("127.0.0.1"), &headers(&["unknown, 10.0.0.5"]), &trusted),
            ip("10.0.0.5")
        );
        assert_eq!(
            client_address(ip("127.0.0.1"), &headers(&["10.0.0.5"]), &trusted),
            ip("10.0.0.5")
        );
    }
}
