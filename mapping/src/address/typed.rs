//! Addresses as people type them: the canonical forms of [`Gateway`], and the other forms in
//! use (URIs, `matrix.to` links, the spellings of matrix-bifrost and of ejabberd's Matrix
//! gateway) where they are unambiguous.

use jid::{BareJid, Jid};
use ruma::{OwnedUserId, RoomAliasId, RoomId, UserId};

use super::{AddressError, Gateway, MatrixRoom, XMPP_PREFIX};
use crate::escape::matrix_escape;

/// Strips the URI forms around an address: `xmpp:` (RFC 5122, without its query),
/// `matrix:` (`u/`, `r/`, `roomid/`), and `https://matrix.to/#/`.
fn unwrap_uri(input: &str) -> String {
    let input = input.trim();
    if let Some(rest) = input.strip_prefix("xmpp:") {
        let address = rest
            .trim_start_matches("//")
            .split(['?', '#'])
            .next()
            .unwrap_or_default();
        return crate::content::percent_decode(address);
    }
    if let Some(rest) = input.strip_prefix("matrix:") {
        let path = rest.split(['?', '#']).next().unwrap_or_default();
        let decoded = crate::content::percent_decode(path);
        for (kind, sigil) in [("u/", '@'), ("r/", '#'), ("roomid/", '!')] {
            if let Some(identifier) = decoded.strip_prefix(kind) {
                return format!("{sigil}{identifier}");
            }
        }
        return decoded;
    }
    for prefix in ["https://matrix.to/#/", "http://matrix.to/#/"] {
        if let Some(rest) = input.strip_prefix(prefix) {
            let identifier = rest.split('?').next().unwrap_or_default();
            return crate::content::percent_decode(identifier);
        }
    }
    input.to_owned()
}

/// Rewrites the matrix-bifrost spelling of a ghost or portal, with the JID's `@` as it is
/// (`@_xmpp_bob@jabber.de:example.org`), to the canonical one.
fn bifrost(input: &str, gateway: &Gateway) -> Option<String> {
    let sigil = input.chars().next().filter(|c| matches!(c, '@' | '#'))?;
    let rest = input[1..].strip_prefix(XMPP_PREFIX)?;
    let address = rest.strip_suffix(&format!(":{}", gateway.server_name))?;
    // Only when the middle is a JID with its '@'; the canonical form has none.
    if !address.contains('@') {
        return None;
    }
    let jid = Jid::new(address).ok()?;
    Some(format!(
        "{sigil}{XMPP_PREFIX}{}:{}",
        matrix_escape(jid.as_str()),
        gateway.server_name
    ))
}

impl Gateway {
    /// The Matrix user someone means by `input`: a Matrix user id, a JID (of an account here,
    /// a Matrix user written `user%server`, or an XMPP user), either as a URI or a `matrix.to`
    /// link, or a ghost in matrix-bifrost's spelling.
    pub fn parse_user(&self, input: &str) -> Result<OwnedUserId, AddressError> {
        let text = unwrap_uri(input);
        let text = bifrost(&text, self).unwrap_or(text);
        if text.starts_with('@') {
            return UserId::parse(&text).map_err(|error| super::matrix_error(&text, error));
        }
        let jid = Jid::new(&text).map_err(|error| super::jid_error(&text, error))?;
        // A user is a bare JID; a resource names one of their devices.
        self.jid_to_user(&Jid::from(jid.to_bare()))
    }

    /// The Matrix room someone means by `input`: a room alias or id, a MUC address (of a room
    /// here, also with our server written out, or of a MUC elsewhere), as a URI or a
    /// `matrix.to` link, or a portal alias in matrix-bifrost's spelling.
    pub fn parse_room(&self, input: &str) -> Result<MatrixRoom, AddressError> {
        let text = unwrap_uri(input);
        let text = bifrost(&text, self).unwrap_or(text);
        if text.starts_with('#') && !text.contains('@') {
            let alias =
                RoomAliasId::parse(&text).map_err(|error| super::matrix_error(&text, error))?;
            if alias.server_name() == self.server_name && alias.alias().starts_with(XMPP_PREFIX) {
                // A portal: it must name a MUC.
                self.room_to_muc(super::RoomRef::Alias(&alias))?;
                return Ok(MatrixRoom::Portal(alias));
            }
            return Ok(MatrixRoom::Alias(alias));
        }
        if text.starts_with('!') && !text.contains('@') {
            let id = RoomId::parse(&text).map_err(|error| super::matrix_error(&text, error))?;
            return Ok(MatrixRoom::Id(id));
        }
        let jid = Jid::new(&text).map_err(|error| super::jid_error(&text, error))?;
        let muc: BareJid = jid.to_bare();
        match self.muc_to_room(&muc) {
            // `#lobby%example.org@muc.example.org` names the local alias `#lobby`.
            Err(AddressError::NotCanonical(_)) => {
                let node = muc
                    .node()
                    .map(|node| crate::escape::jid_unescape(node.as_str()));
                let local = node
                    .as_deref()
                    .and_then(|node| node.strip_prefix('#'))
                    .and_then(|rest| rest.strip_suffix(&format!("%{}", self.server_name)))
                    .and_then(crate::escape::case_unescape);
                match local {
                    Some(name) if !name.starts_with(XMPP_PREFIX) => Ok(MatrixRoom::Alias(
                        super::alias_id(&name, self.server_name.as_str())?,
                    )),
                    _ => Err(AddressError::NotCanonical(muc.to_string())),
                }
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateway() -> Gateway {
        Gateway::new(
            ruma::OwnedServerName::try_from("example.org").unwrap(),
            "muc.example.org",
        )
        .unwrap()
    }

    #[test]
    fn users_as_typed() {
        let gateway = gateway();
        for (input, user) in [
            ("@alice:example.org", "@alice:example.org"),
            ("alice@example.org", "@alice:example.org"),
            ("Alice@Example.org/phone", "@alice:example.org"),
            ("xmpp:alice@example.org", "@alice:example.org"),
            ("carol%matrix.org@example.org", "@carol:matrix.org"),
            ("https://matrix.to/#/@carol:matrix.org", "@carol:matrix.org"),
            (
                "https://matrix.to/#/%40carol%3Amatrix.org?via=matrix.org",
                "@carol:matrix.org",
            ),
            ("matrix:u/carol:matrix.org?action=chat", "@carol:matrix.org"),
            ("bob@jabber.de", "@_xmpp_bob=40jabber.de:example.org"),
            (
                "xmpp:bob@jabber.de?message",
                "@_xmpp_bob=40jabber.de:example.org",
            ),
            (
                "xmpp:j%C3%B6rg@jabber.de",
                "@_xmpp_j=c3=b6rg=40jabber.de:example.org",
            ),
            (
                "@_xmpp_bob=40jabber.de:example.org",
                "@_xmpp_bob=40jabber.de:example.org",
            ),
            // matrix-bifrost's spelling of a ghost.
            (
                "@_xmpp_bob@jabber.de:example.org",
                "@_xmpp_bob=40jabber.de:example.org",
            ),
            ("  bob@jabber.de ", "@_xmpp_bob=40jabber.de:example.org"),
        ] {
            assert_eq!(
                gateway.parse_user(input).map(|u| u.to_string()),
                Ok(user.to_owned()),
                "{input}"
            );
        }
        for input in [
            "",
            "@",
            "a@b@c",
            "room@muc.example.org",
            "_xmpp_x@example.org",
        ] {
            assert!(gateway.parse_user(input).is_err(), "{input}");
        }
    }

    #[test]
    fn rooms_as_typed() {
        let gateway = gateway();
        let alias = |text: &str| MatrixRoom::Alias(RoomAliasId::parse(text).unwrap());
        let id = |text: &str| MatrixRoom::Id(RoomId::parse(text).unwrap());
        let portal = |text: &str| MatrixRoom::Portal(RoomAliasId::parse(text).unwrap());
        for (input, room) in [
            ("#lobby:example.org", alias("#lobby:example.org")),
            ("lobby@muc.example.org", alias("#lobby:example.org")),
            (
                "xmpp:lobby@muc.example.org?join",
                alias("#lobby:example.org"),
            ),
            (
                "#lobby%example.org@muc.example.org",
                alias("#lobby:example.org"),
            ),
            (
                "#matrix%matrix.org@muc.example.org",
                alias("#matrix:matrix.org"),
            ),
            (
                "https://matrix.to/#/%23matrix%3Amatrix.org",
                alias("#matrix:matrix.org"),
            ),
            ("matrix:r/matrix:matrix.org", alias("#matrix:matrix.org")),
            ("!OpaQue:matrix.org", id("!OpaQue:matrix.org")),
            (
                "matrix:roomid/OpaQue:matrix.org?via=matrix.org",
                id("!OpaQue:matrix.org"),
            ),
            (
                "room@conference.jabber.de",
                portal("#_xmpp_room=40conference.jabber.de:example.org"),
            ),
            (
                "xmpp:room@conference.jabber.de?join",
                portal("#_xmpp_room=40conference.jabber.de:example.org"),
            ),
            // matrix-bifrost's spelling of a portal.
            (
                "#_xmpp_room@conference.jabber.de:example.org",
                portal("#_xmpp_room=40conference.jabber.de:example.org"),
            ),
        ] {
            assert_eq!(gateway.parse_room(input), Ok(room), "{input}");
        }
        for input in [
            "",
            "alice@example.org",
            "#_xmpp_x%example.org@muc.example.org",
            "^^^@muc.example.org",
        ] {
            assert!(gateway.parse_room(input).is_err(), "{input}");
        }
    }
}
