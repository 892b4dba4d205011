//! Addresses between Matrix and XMPP (`docs/mapping.md`, "Addresses").
//!
//! One [`Gateway`] holds the gateway's names: its Matrix server name, its XMPP domain (the
//! server name's host) and the domain of its MUC service. Every mapping is a pair of functions
//! that are each other's inverse on valid input; the decoding side accepts only the canonical
//! form the encoding side produces (it decodes, encodes again and compares), so that two
//! different addresses never map to the same one.

use jid::{BareJid, DomainPart, Jid, NodePart};
use ruma::{
    OwnedRoomAliasId, OwnedRoomId, OwnedServerName, OwnedUserId, RoomAliasId, RoomId, UserId,
};

use crate::escape::{
    case_escape, case_unescape, jid_escape, jid_unescape, matrix_escape, matrix_unescape,
};

/// The prefix of the Matrix localparts that stand for XMPP users (ghosts) and of the aliases
/// of portal rooms for XMPP MUCs.
pub const XMPP_PREFIX: &str = "_xmpp_";

/// Why an address cannot be mapped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("'{0}' is not a valid JID: {1}")]
    InvalidJid(String, String),
    #[error("'{0}' is not a valid Matrix identifier: {1}")]
    InvalidMatrixId(String, String),
    #[error("'{0}' has upper-case letters, which XMPP addresses fold to lower case")]
    CaseLost(String),
    #[error("'{0}' cannot be written in an XMPP address")]
    NotJidSafe(String),
    #[error("'{0}' is too long for the other side ({1} bytes at most)")]
    TooLong(String, usize),
    #[error("'{0}' is reserved for XMPP users and rooms")]
    Reserved(String),
    #[error("'{0}' is not written the way this gateway writes it")]
    NotCanonical(String),
    #[error("'{0}' is not a user")]
    NotAUser(String),
    #[error("'{0}' is not a room")]
    NotARoom(String),
}

/// A Matrix room as a MUC address names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MatrixRoom {
    /// A room alias, local or remote.
    Alias(OwnedRoomAliasId),
    /// A room id, with a server part (room versions up to 11) or without (version 12).
    Id(OwnedRoomId),
    /// The portal room of an XMPP MUC elsewhere, by its alias on this server.
    Portal(OwnedRoomAliasId),
}

/// A Matrix room to give a MUC address to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomRef<'a> {
    Alias(&'a RoomAliasId),
    Id(&'a RoomId),
}

/// The names of the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gateway {
    server_name: OwnedServerName,
    domain: String,
    muc_domain: String,
}

/// The most bytes of a Matrix identifier (user ids, room ids and aliases).
const MATRIX_ID_MAX: usize = 255;

fn matrix_error(text: &str, error: impl std::fmt::Display) -> AddressError {
    if text.len() > MATRIX_ID_MAX {
        AddressError::TooLong(text.to_owned(), MATRIX_ID_MAX)
    } else {
        AddressError::InvalidMatrixId(text.to_owned(), error.to_string())
    }
}

fn jid_error(text: &str, error: jid::Error) -> AddressError {
    match error {
        jid::Error::NodeTooLong | jid::Error::ResourceTooLong => {
            AddressError::TooLong(text.to_owned(), 1023)
        }
        error => AddressError::InvalidJid(text.to_owned(), error.to_string()),
    }
}

fn user_id(localpart: &str, server: &str) -> Result<OwnedUserId, AddressError> {
    let text = format!("@{localpart}:{server}");
    UserId::parse(&text).map_err(|error| matrix_error(&text, error))
}

fn alias_id(alias: &str, server: &str) -> Result<OwnedRoomAliasId, AddressError> {
    let text = format!("#{alias}:{server}");
    RoomAliasId::parse(&text).map_err(|error| matrix_error(&text, error))
}

/// A server name as it goes into a JID localpart: it must stay the same under case folding.
fn server_text(server: &ruma::ServerName) -> Result<&str, AddressError> {
    let text = server.as_str();
    if text.chars().any(char::is_uppercase) {
        return Err(AddressError::CaseLost(text.to_owned()));
    }
    Ok(text)
}

impl Gateway {
    /// The gateway of a Matrix server name, whose host is the XMPP domain, and its MUC domain.
    pub fn new(server_name: OwnedServerName, muc_domain: &str) -> Result<Gateway, AddressError> {
        let domain = server_name.host().to_ascii_lowercase();
        for name in [domain.as_str(), muc_domain] {
            DomainPart::new(name).map_err(|error| jid_error(name, error))?;
        }
        Ok(Gateway {
            server_name,
            domain,
            muc_domain: muc_domain.to_ascii_lowercase(),
        })
    }

    /// The XMPP domain of the gateway's accounts.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The XMPP domain of the gateway's MUC service.
    pub fn muc_domain(&self) -> &str {
        &self.muc_domain
    }

    fn is_ours(&self, domain: &str) -> bool {
        domain == self.domain || domain == self.muc_domain
    }

    /// A JID of ours with `text` as its localpart, XEP-0106 escaped; it must come through
    /// normalisation unchanged.
    fn our_jid(&self, text: &str, domain: &str) -> Result<BareJid, AddressError> {
        let escaped = jid_escape(text).ok_or_else(|| AddressError::NotJidSafe(text.to_owned()))?;
        let node = NodePart::new(&escaped).map_err(|error| match error {
            jid::Error::NodeTooLong => AddressError::TooLong(text.to_owned(), 1023),
            // Characters a localpart cannot hold, such as emoji.
            _ => AddressError::NotJidSafe(text.to_owned()),
        })?;
        if node.as_str() != escaped {
            // Normalisation (case folding, NFKC) would change it.
            return Err(AddressError::NotJidSafe(text.to_owned()));
        }
        let domain = DomainPart::new(domain).map_err(|error| jid_error(domain, error))?;
        Ok(BareJid::from_parts(Some(&node), &domain))
    }

    /// The XMPP address of a remote JID written in a Matrix name after [`XMPP_PREFIX`].
    fn decode_remote(&self, encoded: &str, whole: &str) -> Result<Jid, AddressError> {
        let not_canonical = || AddressError::NotCanonical(whole.to_owned());
        let text = matrix_unescape(encoded).ok_or_else(not_canonical)?;
        let jid = Jid::new(&text).map_err(|error| jid_error(&text, error))?;
        if jid.as_str() != text {
            return Err(not_canonical());
        }
        if self.is_ours(jid.domain().as_str()) {
            return Err(AddressError::Reserved(whole.to_owned()));
        }
        Ok(jid)
    }

    /// The Matrix localpart standing for a remote JID.
    fn encode_remote(jid: &Jid) -> String {
        format!("{XMPP_PREFIX}{}", matrix_escape(jid.as_str()))
    }

    /// Whether a Matrix user is the ghost of an XMPP user.
    pub fn is_ghost(&self, user: &UserId) -> bool {
        user.server_name() == self.server_name && user.localpart().starts_with(XMPP_PREFIX)
    }

    /// The XMPP address of a Matrix user: a local account is `alice@domain`; a user of another
    /// Matrix server `carol%matrix.org@domain`; the ghost of an XMPP user that user's JID (with
    /// a resource for the ghost of a MUC occupant).
    pub fn user_to_jid(&self, user: &UserId) -> Result<Jid, AddressError> {
        let localpart = user.localpart();
        let text = if user.server_name() == self.server_name {
            if let Some(encoded) = localpart.strip_prefix(XMPP_PREFIX) {
                return self.decode_remote(encoded, user.as_str());
            }
            if localpart.contains('%') {
                return Err(AddressError::NotJidSafe(user.as_str().to_owned()));
            }
            localpart.to_owned()
        } else {
            format!("{localpart}%{}", server_text(user.server_name())?)
        };
        if localpart.chars().any(char::is_uppercase) {
            return Err(AddressError::CaseLost(user.as_str().to_owned()));
        }
        Ok(self.our_jid(&text, &self.domain)?.into())
    }

    /// The Matrix user of an XMPP address: the inverse of [`Gateway::user_to_jid`]. For our
    /// domain the localpart names a local account or, with `%`, a user elsewhere; any other
    /// domain is an XMPP user, whose ghost this returns.
    pub fn jid_to_user(&self, jid: &Jid) -> Result<OwnedUserId, AddressError> {
        let domain = jid.domain().as_str();
        if domain == self.muc_domain {
            return Err(AddressError::NotAUser(jid.to_string()));
        }
        if domain != self.domain {
            // A JID whose normal form is not stable under normalisation (the stringprep
            // behind the jid crate is not idempotent for a few compatibility characters)
            // could not be read back from its ghost.
            if Jid::new(jid.as_str()).ok().as_ref() != Some(jid) {
                return Err(AddressError::InvalidJid(
                    jid.to_string(),
                    "not in normal form".to_owned(),
                ));
            }
            return user_id(&Self::encode_remote(jid), self.server_name.as_str());
        }
        let Some(node) = jid.node() else {
            return Err(AddressError::NotAUser(jid.to_string()));
        };
        let text = jid_unescape(node.as_str());
        let user = match text.rsplit_once('%') {
            Some((localpart, server)) => user_id(localpart, server)?,
            None if text.starts_with(XMPP_PREFIX) => {
                return Err(AddressError::Reserved(jid.to_string()));
            }
            None => user_id(&text, self.server_name.as_str())?,
        };
        if self.user_to_jid(&user).ok().as_ref() != Some(&Jid::from(jid.to_bare())) {
            return Err(AddressError::NotCanonical(jid.to_string()));
        }
        Ok(user)
    }

    /// The MUC address of a Matrix room: a local alias is `lobby@muc`; an alias elsewhere
    /// `#name%server@muc`; a room id `!opaque%server@muc` (or `!opaque@muc` for version 12);
    /// case-sensitive parts are case-escaped. The portal alias of an XMPP MUC gives that MUC.
    pub fn room_to_muc(&self, room: RoomRef<'_>) -> Result<BareJid, AddressError> {
        let case = |text: &str, whole: &str| {
            case_escape(text).ok_or_else(|| AddressError::NotJidSafe(whole.to_owned()))
        };
        let text = match room {
            RoomRef::Alias(alias) => {
                let name = alias.alias();
                if alias.server_name() == self.server_name {
                    if let Some(encoded) = name.strip_prefix(XMPP_PREFIX) {
                        let muc = self.decode_remote(encoded, alias.as_str())?;
                        return match muc.try_into_full() {
                            Err(bare) if bare.node().is_some() => Ok(bare),
                            _ => Err(AddressError::NotARoom(alias.as_str().to_owned())),
                        };
                    }
                    let escaped = case(name, alias.as_str())?;
                    if escaped.starts_with(['#', '!']) {
                        format!("#{escaped}%{}", server_text(alias.server_name())?)
                    } else {
                        escaped
                    }
                } else {
                    let escaped = case(name, alias.as_str())?;
                    format!("#{escaped}%{}", server_text(alias.server_name())?)
                }
            }
            RoomRef::Id(id) => match id.strip_sigil().split_once(':') {
                Some((opaque, _)) => {
                    let server = id
                        .server_name()
                        .ok_or_else(|| AddressError::NotARoom(id.as_str().to_owned()))?;
                    format!("!{}%{}", case(opaque, id.as_str())?, server_text(server)?)
                }
                // Without a server part, a '%' would read as one.
                None if id.strip_sigil().contains('%') => {
                    return Err(AddressError::NotJidSafe(id.as_str().to_owned()));
                }
                None => format!("!{}", case(id.strip_sigil(), id.as_str())?),
            },
        };
        self.our_jid(&text, &self.muc_domain)
    }

    /// The Matrix room of a MUC address: the inverse of [`Gateway::room_to_muc`] for our MUC
    /// service, and the portal alias for a MUC elsewhere.
    pub fn muc_to_room(&self, muc: &BareJid) -> Result<MatrixRoom, AddressError> {
        let domain = muc.domain().as_str();
        let not_a_room = || AddressError::NotARoom(muc.to_string());
        if domain == self.domain {
            return Err(not_a_room());
        }
        let Some(node) = muc.node() else {
            return Err(not_a_room());
        };
        if domain != self.muc_domain {
            if BareJid::new(muc.as_str()).ok().as_ref() != Some(muc) {
                return Err(AddressError::InvalidJid(
                    muc.to_string(),
                    "not in normal form".to_owned(),
                ));
            }
            let alias = alias_id(
                &Self::encode_remote(&Jid::from(muc.clone())),
                self.server_name.as_str(),
            )?;
            return Ok(MatrixRoom::Portal(alias));
        }
        let not_canonical = || AddressError::NotCanonical(muc.to_string());
        let text = jid_unescape(node.as_str());
        let room = if let Some(rest) = text.strip_prefix('!') {
            let (opaque, server) = match rest.rsplit_once('%') {
                Some((opaque, server)) => (opaque, Some(server)),
                None => (rest, None),
            };
            let opaque = case_unescape(opaque).ok_or_else(not_canonical)?;
            let text = match server {
                Some(server) => format!("!{opaque}:{server}"),
                None => format!("!{opaque}"),
            };
            MatrixRoom::Id(RoomId::parse(&text).map_err(|error| matrix_error(&text, error))?)
        } else if let Some(rest) = text.strip_prefix('#') {
            let (name, server) = rest.rsplit_once('%').ok_or_else(not_canonical)?;
            let name = case_unescape(name).ok_or_else(not_canonical)?;
            MatrixRoom::Alias(alias_id(&name, server)?)
        } else {
            let name = case_unescape(&text).ok_or_else(not_canonical)?;
            if name.starts_with(XMPP_PREFIX) {
                return Err(AddressError::Reserved(muc.to_string()));
            }
            MatrixRoom::Alias(alias_id(&name, self.server_name.as_str())?)
        };
        let again = match &room {
            MatrixRoom::Alias(alias) => self.room_to_muc(RoomRef::Alias(alias)),
            MatrixRoom::Id(id) => self.room_to_muc(RoomRef::Id(id)),
            MatrixRoom::Portal(_) => Err(not_canonical()),
        };
        if again.ok().as_ref() != Some(muc) {
            return Err(not_canonical());
        }
        Ok(room)
    }
}

mod nick;
mod typed;

pub use nick::occupant_nick;

#[cfg(test)]
mod tests;
