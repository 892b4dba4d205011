//! Members typing in a portal: chat states (XEP-0085) to the MUC from their occupant, as in
//! direct chats (`composing`, and `active` when they stop).

use std::collections::HashSet;

use causeway_mapping::content::message::chat_state;
use causeway_xmpp::stanza::Stanza;
use minidom::Element;
use ruma::{OwnedUserId, RoomId, UserId};
use xmpp_parsers::jid::Jid;
use xmpp_parsers::message::{Id, Message, MessageType};

use crate::bridge::muc::TypingTold;
use crate::bridge::{Bridge, BridgeError};

/// XEP-0334: chat states are not archived.
const HINTS: &str = "urn:xmpp:hints";

impl Bridge {
    /// Tells a portal's MUC which of its members started or stopped typing.
    pub(in crate::bridge) async fn portal_typing(
        &self,
        room: &RoomId,
        typing: &[OwnedUserId],
        told: &mut TypingTold,
    ) -> Result<(), BridgeError> {
        let Some(muc) = self.portals.muc(room.as_str()) else {
            return Ok(());
        };
        let sessions = self.store.sessions(room.as_str()).await?;
        let was = told.remove(room).unwrap_or_default();
        let mut now = HashSet::new();
        for session in sessions {
            let Ok(user) = UserId::parse(&session.user_id) else {
                continue;
            };
            let is_typing = typing.contains(&user);
            if is_typing {
                now.insert(user.clone());
            }
            if was.contains(&user) == is_typing {
                continue;
            }
            let own = self.session_jid(&user, &session)?;
            let mut message = Message::new(Some(Jid::from(muc.clone())));
            message.from = Some(Jid::from(own));
            message.type_ = MessageType::Groupchat;
            message.id = Some(Id(format!("typing-{}", crate::bridge::random_id())));
            message.payloads.push(chat_state(is_typing));
            message.payloads.push(Element::bare("no-store", HINTS));
            self.send(Stanza::Message(message));
        }
        if !now.is_empty() {
            told.insert(room.to_owned(), now);
        }
        Ok(())
    }
}
