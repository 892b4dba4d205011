//! What guest accounts may do: the endpoints the specification opens to guests (reading rooms,
//! syncing, joining rooms that allow guests, sending messages, their profile and devices, and
//! what end-to-end encryption needs), and nothing else.

use http::Method;

use crate::api::ruma_wrapper::Sender;
use crate::error::Error;

/// The endpoints open to guests, by method and path after the version (`*` one segment, `**`
/// the rest).
const OPEN_TO_GUESTS: &[(Method, &str)] = &[
    (Method::GET, "sync"),
    (Method::GET, "events"),
    (Method::GET, "initialSync"),
    (Method::GET, "rooms/*/state"),
    (Method::GET, "rooms/*/state/**"),
    (Method::GET, "rooms/*/context/*"),
    (Method::GET, "rooms/*/event/*"),
    (Method::GET, "rooms/*/messages"),
    (Method::GET, "rooms/*/members"),
    (Method::GET, "rooms/*/joined_members"),
    (Method::GET, "rooms/*/initialSync"),
    (Method::GET, "profile/**"),
    (Method::PUT, "profile/*/displayname"),
    (Method::PUT, "profile/*/avatar_url"),
    (Method::GET, "presence/*/status"),
    (Method::PUT, "presence/*/status"),
    (Method::POST, "rooms/*/join"),
    (Method::POST, "join/*"),
    (Method::POST, "rooms/*/leave"),
    (Method::PUT, "rooms/*/send/m.room.message/*"),
    (Method::PUT, "sendToDevice/*/*"),
    (Method::GET, "devices"),
    (Method::GET, "devices/*"),
    (Method::PUT, "devices/*"),
    (Method::GET, "keys/changes"),
    (Method::POST, "keys/upload"),
    (Method::POST, "keys/query"),
    (Method::POST, "keys/claim"),
    (Method::PUT, "rooms/*/typing/*"),
    (Method::POST, "rooms/*/receipt/*/*"),
    (Method::POST, "rooms/*/read_markers"),
    (Method::GET, "account/whoami"),
    (Method::GET, "voip/turnServer"),
    (Method::GET, "capabilities"),
    (Method::POST, "logout"),
    (Method::GET, "user/*/filter/*"),
    (Method::POST, "user/*/filter"),
];

fn matches(pattern: &str, path: &str) -> bool {
    let mut segments = path.split('/');
    for expected in pattern.split('/') {
        if expected == "**" {
            return segments.next().is_some();
        }
        match segments.next() {
            Some(segment) if expected == "*" || segment == expected => {}
            _ => return false,
        }
    }
    segments.next().is_none()
}

/// Whether a guest may call `method` on `path`.
pub fn open_to_guests(method: &Method, path: &str) -> bool {
    let Some(rest) = path.strip_prefix("/_matrix/client/") else {
        // Media may be read, not uploaded.
        return path.starts_with("/_matrix/media/") && *method == Method::GET;
    };
    if rest.starts_with("v1/media/") {
        return *method == Method::GET;
    }
    let Some((_version, endpoint)) = rest.split_once('/') else {
        return false;
    };
    let endpoint = endpoint.trim_end_matches('/');
    OPEN_TO_GUESTS
        .iter()
        .any(|(allowed, pattern)| allowed == method && matches(pattern, endpoint))
}

/// Fails with `M_GUEST_ACCESS_FORBIDDEN` when a guest calls an endpoint closed to guests.
pub fn check(sender: &Sender, method: &Method, path: &str) -> Result<(), Error> {
    if sender.is_guest && !open_to_guests(method, path) {
        return Err(Error::GuestAccessForbidden);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_paths() {
        for (method, path) in [
            (Method::GET, "/_matrix/client/v3/sync"),
            (Method::GET, "/_matrix/client/r0/rooms/!r:x/messages"),
            (
                Method::GET,
                "/_matrix/client/v3/rooms/!r:x/state/m.room.name/",
            ),
            (Method::GET, "/_matrix/client/v3/rooms/!r:x/state"),
            (
                Method::PUT,
                "/_matrix/client/v3/rooms/!r:x/send/m.room.message/t1",
            ),
            (Method::POST, "/_matrix/client/v3/join/%23a:x"),
            (Method::GET, "/_matrix/client/v3/profile/@a:x/displayname"),
            (Method::GET, "/_matrix/client/v1/media/download/x/y"),
        ] {
            assert!(open_to_guests(&method, path), "{method} {path}");
        }
        for (method, path) in [
            (Method::POST, "/_matrix/client/v3/createRoom"),
            (
                Method::PUT,
                "/_matrix/client/v3/rooms/!r:x/send/m.reaction/t1",
            ),
            (
                Method::PUT,
                "/_matrix/client/v3/rooms/!r:x/state/m.room.name/",
            ),
            (Method::POST, "/_matrix/client/v3/rooms/!r:x/invite"),
            (Method::GET, "/_matrix/client/v3/pushers"),
            (Method::POST, "/_matrix/client/v3/search"),
            (Method::POST, "/_matrix/media/v3/upload"),
            (
                Method::GET,
                "/_matrix/client/v3/rooms/!r:x/send/m.room.message/t1",
            ),
            (Method::GET, "/_matrix/client/v3"),
        ] {
            assert!(!open_to_guests(&method, path), "{method} {path}");
        }
    }
}
