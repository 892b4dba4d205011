//! XMPP → Matrix in rooms: an occupant's groupchat messages become its ghost's events, by
//! the path of direct chats (`from_xmpp.rs`); a subject sets the topic; a private message to
//! another occupant goes to the direct chat with that member.

use causeway_mapping::content::message::from_xmpp_in_room;
use causeway_mapping::content::room::subject_to_topic;
use serde_json::json;
use xmpp_parsers::jid::Jid;
use xmpp_parsers::message::{Message, MessageType};
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType};

use super::refused;
use crate::bridge::{Bridge, BridgeError};

/// The most reactions one occupant may put on one message (XEP-0444 sends the whole set).
const MAX_REACTIONS: usize = 20;

impl Bridge {
    /// A message to a room or to one of its occupants.
    pub(super) async fn message_to_room(&self, message: &Message) -> Result<(), BridgeError> {
        let (Some(from), Some(to)) = (&message.from, &message.to) else {
            return Err(refused(
                ErrorType::Modify,
                DefinedCondition::BadRequest,
                "a message needs from and to",
            ));
        };
        if to.node().is_none() {
            return Err(refused(
                ErrorType::Cancel,
                DefinedCondition::ServiceUnavailable,
                "the room service takes messages for its rooms only",
            ));
        }
        // The occupant is found by the address it joined at: no alias is resolved again.
        let occupant = self
            .store
            .occupant_at(to.to_bare().as_str(), from.as_str())
            .await?;
        let Some(occupant) = occupant else {
            // XEP-0045 §7.4: only occupants may send to the room.
            return Err(refused(
                ErrorType::Modify,
                DefinedCondition::NotAcceptable,
                "only occupants may send messages to this room: join it first",
            ));
        };
        let room = ruma::RoomId::parse(&occupant.room_id)
            .map_err(|e| causeway_matrix::error::Error::Internal(e.to_string()))?;
        if let Some(nick) = to.resource() {
            return self.private_message(message, &room, nick.as_str()).await;
        }
        if message.type_ != MessageType::Groupchat {
            return Err(refused(
                ErrorType::Modify,
                DefinedCondition::BadRequest,
                "messages to a room are of type groupchat",
            ));
        }
        let remote = from.to_bare();
        let ghost = self.ghost_id(&remote)?;
        self.services
            .limits
            .remote_events
            .check(&remote.domain().as_str().to_ascii_lowercase())?;
        if let Some(topic) = subject_to_topic(message) {
            self.append(
                &room,
                &ghost,
                "m.room.topic",
                Some(""),
                json!({ "topic": topic }),
            )
            .await
            .map_err(|error| match error {
                BridgeError::Matrix(causeway_matrix::error::Error::Forbidden(_)) => refused(
                    ErrorType::Auth,
                    DefinedCondition::Forbidden,
                    "you may not change the subject of this room",
                ),
                error => error,
            })?;
            return Ok(());
        }
        // Clients without mention references address occupants by name.
        let roster = self.room_roster(&room).await?;
        let names: Vec<(&str, &ruma::UserId)> = roster
            .members()
            .iter()
            .filter(|member| member.user != ghost)
            .map(|member| (member.nick.as_str(), member.user.as_ref()))
            .collect();
        let mut read = from_xmpp_in_room(message, &self.gateway, &names);
        // Receipts are not asked of rooms (XEP-0184 §5.3).
        read.wants_receipt = false;
        if let Some((_, keys)) = &read.reactions
            && keys.len() > MAX_REACTIONS
        {
            return Err(BridgeError::NotAcceptable(format!(
                "at most {MAX_REACTIONS} reactions to one message"
            )));
        }
        let id = message.id.as_ref().map(|id| id.0.as_str());
        tracing::trace!(room_id = %room, occupant = %occupant.jid, "a message to a room");
        self.apply(&room, &ghost, remote.as_str(), id, read)
            .await
            .map_err(|error| match error {
                BridgeError::Matrix(causeway_matrix::error::Error::Forbidden(text)) => {
                    refused(ErrorType::Auth, DefinedCondition::Forbidden, text)
                }
                error => error,
            })
    }

    /// A private message to an occupant: a chat with that member, in their direct chat.
    async fn private_message(
        &self,
        message: &Message,
        room: &ruma::RoomId,
        nick: &str,
    ) -> Result<(), BridgeError> {
        if message.type_ == MessageType::Groupchat {
            return Err(refused(
                ErrorType::Modify,
                DefinedCondition::BadRequest,
                "a private message is not of type groupchat",
            ));
        }
        let roster = self.roster(room).await?;
        let Some(member) = roster.by_nick(nick) else {
            return Err(refused(
                ErrorType::Cancel,
                DefinedCondition::ItemNotFound,
                format!("there is no occupant {nick} in this room"),
            ));
        };
        if self.gateway.is_ghost(&member.user) {
            return Err(refused(
                ErrorType::Cancel,
                DefinedCondition::NotAcceptable,
                format!("{nick} is an XMPP user: write to them directly"),
            ));
        }
        let to = self.gateway.user_to_jid(&member.user)?;
        let mut direct = message.clone();
        direct.to = Some(Jid::from(to.to_bare()));
        direct.type_ = MessageType::Chat;
        self.deliver(&direct).await
    }
}
