//! Typing and read receipts of Matrix members reach a room's occupants as XEP-0085 chat
//! states and XEP-0333 displayed markers (by stanza id), from the member's nickname. The other
//! way, occupants' chat states and markers take the path of every message (`messages.rs`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use causeway_mapping::content::message::{chat_state, displayed};
use causeway_matrix::store::ReceiptRecord;
use causeway_xmpp::stanza::Stanza;
use minidom::Element;
use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use xmpp_parsers::jid::Jid;
use xmpp_parsers::message::{Id, Message, MessageType};

use super::outbound::{nick_of, occupant_room};
use super::{OCCUPANT_ID, Roster};
use crate::bridge::store::Occupant;
use crate::bridge::{Bridge, BridgeError, random_id};

/// XEP-0334: not to be archived.
const HINTS: &str = "urn:xmpp:hints";

/// Who the occupants of each room were last told is typing.
pub(in crate::bridge) type TypingTold = HashMap<OwnedRoomId, HashSet<OwnedUserId>>;

impl Bridge {
    /// Tells a room's occupants who started or stopped typing (Matrix members only: an
    /// occupant's own typing came from XMPP).
    pub(in crate::bridge) async fn muc_typing(
        &self,
        room: &RoomId,
        typing: &[OwnedUserId],
        told: &mut TypingTold,
    ) -> Result<(), BridgeError> {
        if self.muc_room_if_any(room.as_str()).is_none() {
            told.remove(room);
            return Ok(());
        }
        let now: HashSet<OwnedUserId> = typing
            .iter()
            .filter(|user| !self.gateway.is_ghost(user))
            .cloned()
            .collect();
        let before = told.remove(room).unwrap_or_default();
        let started: Vec<&OwnedUserId> = now.difference(&before).collect();
        let stopped: Vec<&OwnedUserId> = before.difference(&now).collect();
        if !started.is_empty() || !stopped.is_empty() {
            let (roster, occupants) = self.room_audience(room).await?;
            for (user, is_typing) in started
                .into_iter()
                .map(|user| (user, true))
                .chain(stopped.into_iter().map(|user| (user, false)))
            {
                for occupant in &occupants {
                    let mut message = self.member_says(room, &roster, user, occupant);
                    message.payloads.push(chat_state(is_typing));
                    message.payloads.push(Element::bare("no-store", HINTS));
                    self.send(Stanza::Message(message));
                }
            }
        }
        told.insert(room.to_owned(), now);
        Ok(())
    }

    /// A Matrix member's read receipt in a room with occupants: a displayed marker of the
    /// message, by its stanza id.
    pub(in crate::bridge) async fn muc_receipt(
        &self,
        receipt: &ReceiptRecord,
    ) -> Result<(), BridgeError> {
        if self.muc_room_if_any(&receipt.room_id).is_none() {
            return Ok(());
        }
        let (Ok(room), Ok(user)) = (
            RoomId::parse(&receipt.room_id),
            UserId::parse(&receipt.user_id),
        ) else {
            return Ok(());
        };
        if self.gateway.is_ghost(&user) {
            return Ok(());
        }
        let (roster, occupants) = self.room_audience(&room).await?;
        for occupant in &occupants {
            let mut message = self.member_says(&room, &roster, &user, occupant);
            message.payloads.push(displayed(&receipt.event_id));
            self.send(Stanza::Message(message));
        }
        Ok(())
    }

    /// A room's occupants and the roster they know.
    async fn room_audience(
        &self,
        room: &RoomId,
    ) -> Result<(Arc<Roster>, Vec<Occupant>), BridgeError> {
        let roster = self.room_roster(room).await?;
        let occupants = self.store.occupants(room.as_str()).await?;
        Ok((roster, occupants))
    }

    /// The roster the occupants of a room know (read from the room when none is kept).
    pub(super) async fn room_roster(&self, room: &RoomId) -> Result<Arc<Roster>, BridgeError> {
        match self.muc_room_if_any(room.as_str()) {
            Some(lock) => self.known_roster(room, &mut *lock.lock().await).await,
            None => Ok(Arc::new(self.roster(room).await?)),
        }
    }

    /// The roster a room's view keeps, read from the room when it has none (the caller holds
    /// the room's lock).
    pub(super) async fn known_roster(
        &self,
        room: &RoomId,
        view: &mut super::RoomView,
    ) -> Result<Arc<Roster>, BridgeError> {
        if let Some(roster) = &view.roster {
            return Ok(roster.clone());
        }
        let roster = Arc::new(self.roster(room).await?);
        view.roster = Some(roster.clone());
        Ok(roster)
    }

    /// An empty groupchat message from a member's nickname to an occupant.
    fn member_says(
        &self,
        room: &RoomId,
        roster: &Roster,
        user: &UserId,
        occupant: &Occupant,
    ) -> Message {
        let mut message = Message::new(Jid::new(&occupant.jid).ok());
        message.type_ = MessageType::Groupchat;
        message.id = Some(Id(random_id()));
        message.from = occupant_room(occupant)
            .and_then(|room| room.with_resource_str(&nick_of(roster, user)).ok())
            .map(Jid::from);
        message.payloads.push(
            Element::builder("occupant-id", OCCUPANT_ID)
                .attr(
                    rxml::xml_ncname!("id").to_owned(),
                    self.occupant_id(room, user),
                )
                .build(),
        );
        message
    }
}
