//! The MUC service (`muc.example.org`): Matrix rooms as XEP-0045 rooms for XMPP users.
//!
//! - An XMPP user joins `lobby@muc.example.org/Nick` (any room address of `docs/mapping.md`):
//!   their ghost joins the Matrix room under its rules, with the nickname as its display name
//!   in the room (`join.rs`); they get the occupants, their own presence, the history the ghost
//!   may see (`history.rs`) and the subject.
//! - Every joined member of the room is an occupant, with the nickname of `docs/mapping.md`
//!   (`roster.rs`); affiliations and roles come from power levels.
//! - Their messages become the ghost's events through the path direct chats take
//!   (`messages.rs`); what happens in the room reaches every occupant from the event stream
//!   (`outbound.rs`), their own messages too (the reflection XEP-0045 asks for).
//! - Service discovery of the service and its rooms (`disco.rs`).
//!
//! The occupants (which XMPP resource is in which room, under which nickname, from which
//! position of the stream) are the bridge's own table (`store.rs`); each room with occupants
//! has a lock, held while its occupants are told something, so that a joining occupant gets
//! the room before anything live.

mod admin;
mod archive;
mod disco;
mod ephemeral;
mod history;
mod join;
mod messages;
mod outbound;
mod owner;
mod roster;

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use causeway_xmpp::stanza::Stanza;
use minidom::Element;
use ruma::{OwnedRoomId, RoomId, UserId};
use sha2::Digest;
use xmpp_parsers::iq::Iq;
use xmpp_parsers::jid::Jid;
use xmpp_parsers::message::{Message, MessageType};
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType};

use super::{Bridge, BridgeError};
pub(in crate::bridge) use ephemeral::TypingTold;
pub(super) use roster::Roster;
pub(in crate::bridge) use roster::matrix_presence;

/// XEP-0045 namespaces.
const MUC: &str = "http://jabber.org/protocol/muc";
const MUC_USER: &str = "http://jabber.org/protocol/muc#user";
/// XEP-0421: occupant ids.
const OCCUPANT_ID: &str = "urn:xmpp:occupant-id:0";
/// XEP-0359: stanza ids.
const SID: &str = "urn:xmpp:sid:0";
/// XEP-0203: delayed delivery.
const DELAY: &str = "urn:xmpp:delay";

/// What the occupants of a room have been told of its members.
#[derive(Default)]
pub(super) struct RoomView {
    roster: Option<Arc<Roster>>,
    /// The stream position the occupants were told the roster as of: member and power
    /// events up to it are in it already.
    roster_position: i64,
    /// What each occupant's ghost may see of the room, as `visibility::for_user` said it after
    /// the last membership or history visibility change (forgotten at the next one).
    visible: HashMap<ruma::OwnedUserId, causeway_matrix::visibility::Visible>,
}

/// The rooms that have occupants, each with its lock.
#[derive(Default)]
pub(super) struct MucState {
    rooms: std::sync::Mutex<HashMap<OwnedRoomId, Arc<tokio::sync::Mutex<RoomView>>>>,
}

/// A refusal of the MUC service, with its stanza error.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub kind: ErrorType,
    pub condition: DefinedCondition,
    pub text: String,
}

impl Refusal {
    pub(super) fn new(
        kind: ErrorType,
        condition: DefinedCondition,
        text: impl Into<String>,
    ) -> Self {
        Refusal {
            kind,
            condition,
            text: text.into(),
        }
    }
}

impl Bridge {
    /// Whether a stanza is for the MUC service or one of its rooms.
    pub(super) fn is_for_muc(&self, to: Option<&Jid>) -> bool {
        to.is_some_and(|to| to.domain().as_str() == self.gateway.muc_domain())
    }

    /// Handles a stanza to the MUC service; returns the answers.
    pub(super) async fn muc_stanza(&self, stanza: Stanza) -> Vec<Stanza> {
        match stanza {
            Stanza::Presence(presence) => self.muc_presence(presence).await,
            Stanza::Message(message) => self.muc_message(message).await.into_iter().collect(),
            Stanza::Iq(iq) => self.muc_iq(iq).await.into_iter().collect(),
        }
    }

    /// The lock and view of a room with occupants, made when it has none.
    fn muc_room(&self, room: &RoomId) -> Arc<tokio::sync::Mutex<RoomView>> {
        let mut rooms = self
            .muc
            .rooms
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        rooms.entry(room.to_owned()).or_default().clone()
    }

    /// The lock and view of a room, if it has occupants.
    pub(in crate::bridge) fn muc_room_if_any(
        &self,
        room: &str,
    ) -> Option<Arc<tokio::sync::Mutex<RoomView>>> {
        let rooms = self
            .muc
            .rooms
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let room = RoomId::parse(room).ok()?;
        rooms.get(&room).cloned()
    }

    /// Every room with occupants, with its lock and view.
    fn muc_rooms(&self) -> Vec<(OwnedRoomId, Arc<tokio::sync::Mutex<RoomView>>)> {
        let rooms = self
            .muc
            .rooms
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        rooms
            .iter()
            .map(|(room, lock)| (room.clone(), lock.clone()))
            .collect()
    }

    /// Forgets the lock and view of a room whose occupants have all gone.
    fn muc_room_emptied(&self, room: &RoomId) {
        let mut rooms = self
            .muc
            .rooms
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        rooms.remove(room);
    }

    /// Reads which rooms have occupants (at start-up), and what they were told of each: its
    /// members as of where the event sender stopped, so that those who came, went or were
    /// given power after that are told when it reads their events again.
    pub(super) async fn muc_load(&self, sent_up_to: Option<i64>) -> Result<(), BridgeError> {
        for room in self.store.rooms_with_occupants().await? {
            let Ok(room) = RoomId::parse(&room) else {
                continue;
            };
            let lock = self.muc_room(&room);
            let Some(position) = sent_up_to else {
                continue;
            };
            match self.roster_at(&room, position).await {
                Ok(roster) => {
                    let mut view = lock.lock().await;
                    view.roster = Some(Arc::new(roster));
                    view.roster_position = position;
                }
                Err(error) => {
                    tracing::warn!(%error, room_id = %room, "the members of a room as its occupants knew them could not be read");
                }
            }
        }
        Ok(())
    }

    /// A text field of a room's state event (its `name`, `topic`, `join_rule`...).
    pub(super) async fn state_text(
        &self,
        room: &RoomId,
        event_type: &str,
        key: &str,
    ) -> Result<Option<String>, BridgeError> {
        Ok(self
            .services
            .rooms
            .state_event(room, event_type, "")
            .await?
            .and_then(|pdu| {
                pdu.content_value()
                    .get(key)
                    .and_then(serde_json::Value::as_str)
                    .map(str::to_owned)
            }))
    }

    /// XEP-0421: the occupant id of a member in a room, the same whenever and however they
    /// join (the room is not anonymous: it hides nothing, it only has to be stable and
    /// opaque).
    fn occupant_id(&self, room: &RoomId, user: &UserId) -> String {
        let mut hash = sha2::Sha256::new();
        hash.update(b"causeway occupant-id\0");
        hash.update(room.as_str().as_bytes());
        hash.update(b"\0");
        hash.update(user.as_str().as_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&hash.finalize()[..18])
    }

    /// Handles a message to the MUC service or a room.
    async fn muc_message(&self, message: Message) -> Option<Stanza> {
        if message.type_ == MessageType::Error {
            // An occupant's server says it cannot be reached: the occupant is gone (XEP-0045
            // §7.2.1 of errors to occupants).
            self.occupant_bounced(&message).await;
            return None;
        }
        let outcome = self.message_to_room(&message).await;
        match outcome {
            Ok(()) => None,
            Err(error) => {
                tracing::debug!(%error, from = ?message.from, to = ?message.to, "a message to a room was refused");
                let to = message.from.clone()?;
                let mut reply = Message::error(Some(to)).with_payload(error.to_stanza_error());
                reply.from = message.to.clone();
                reply.id = message.id.clone();
                Some(Stanza::Message(reply))
            }
        }
    }

    /// Handles an IQ to the MUC service or a room.
    async fn muc_iq(&self, iq: Iq) -> Option<Stanza> {
        let (from, to, id) = match &iq {
            Iq::Get { from, to, id, .. } | Iq::Set { from, to, id, .. } => {
                (from.clone(), to.clone(), id.clone())
            }
            // The service sends no requests of its own.
            Iq::Result { .. } | Iq::Error { .. } => return None,
        };
        let answer = match self.muc_request(&iq).await {
            Ok(payload) => Iq::Result {
                from: None,
                to: None,
                id,
                payload,
            },
            Err(error) => Iq::from_error(id, error.to_stanza_error()),
        };
        let mut answer = answer;
        if let Some(to) = to {
            answer = answer.with_from(to);
        }
        if let Some(from) = from {
            answer = answer.with_to(from);
        }
        Some(Stanza::Iq(answer))
    }

    /// The answer to a request of the MUC service or a room.
    async fn muc_request(&self, iq: &Iq) -> Result<Option<Element>, BridgeError> {
        let (from, to, payload, get) = match iq {
            Iq::Get {
                from, to, payload, ..
            } => (from, to, payload, true),
            Iq::Set {
                from, to, payload, ..
            } => (from, to, payload, false),
            _ => return Ok(None),
        };
        let (Some(from), Some(to)) = (from, to) else {
            return Err(refused(
                ErrorType::Modify,
                DefinedCondition::BadRequest,
                "a request needs from and to",
            ));
        };
        let is = |name: &str, ns: &str| payload.is(name, ns);
        match (to.node().is_some(), to.resource().is_some(), get) {
            (false, _, true) if is("query", disco::DISCO_INFO) => {
                disco::query_node(payload)?;
                Ok(Some(self.service_info().into()))
            }
            (false, _, true) if is("query", disco::DISCO_ITEMS) => {
                disco::query_node(payload)?;
                self.service_items(payload).await.map(Some)
            }
            (false, _, true) if is("ping", disco::PING) => Ok(None),
            (true, false, true) if is("query", disco::DISCO_INFO) => {
                disco::query_node(payload)?;
                self.room_info(&to.to_bare())
                    .await
                    .map(|info| Some(info.into()))
            }
            (true, false, true) if is("query", disco::DISCO_ITEMS) => {
                disco::query_node(payload)?;
                self.room_items(&to.to_bare()).await.map(Some)
            }
            (true, false, true) if is("vCard", "vcard-temp") => {
                self.room_vcard(&to.to_bare()).await.map(Some)
            }
            (true, false, false) if is("moderate", admin::MODERATE) => {
                self.moderate(from, to, payload).await
            }
            (true, false, _) if is("query", admin::MUC_ADMIN) => {
                self.admin_request(from, to, payload, get).await
            }
            (true, false, _) if is("query", owner::MUC_OWNER) => {
                self.owner_request(from, to, payload, get).await
            }
            (true, false, false) if is("query", archive::MAM) => {
                self.archive_query(from, to, payload).await.map(Some)
            }
            // XEP-0410: an occupant asks whether it is still in the room.
            (true, true, true) if is("ping", disco::PING) => {
                self.self_ping(from, to).await.map(|()| None)
            }
            _ => Err(refused(
                ErrorType::Cancel,
                DefinedCondition::ServiceUnavailable,
                "this request is not served by the rooms of this server",
            )),
        }
    }
}

/// A time (milliseconds since the epoch) as XEP-0082 writes it.
pub(super) fn stamp_text(ts_ms: u64) -> String {
    outbound::stamp(ts_ms)
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// A refusal as a bridge error.
fn refused(kind: ErrorType, condition: DefinedCondition, text: impl Into<String>) -> BridgeError {
    BridgeError::Refused(Refusal::new(kind, condition, text))
}
