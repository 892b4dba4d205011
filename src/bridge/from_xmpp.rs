//! XMPP → Matrix: messages from XMPP users to local accounts become events of their ghosts
//! in the direct room of the two; bounces of what a local account sent become a notice.

use std::time::Duration;

use causeway_mapping::content::message::{FromXmpp, from_xmpp, matrix_content, reaction_changes};
use causeway_matrix::rooms::NewLocalEvent;
use causeway_matrix::store::ReceiptRecord;

use super::store::BridgedMessage;
use causeway_xmpp::stanza::Stanza;
use ruma::events::relation::Annotation;
use ruma::events::room::message::RoomMessageEventContent;
use ruma::{EventId, OwnedEventId, RoomId, UserId};
use serde_json::json;
use xmpp_parsers::jid::{BareJid, Jid};
use xmpp_parsers::message::{Message, MessageType};
use xmpp_parsers::stanza_error::StanzaError;

use super::{Bridge, BridgeError, XMPP_DEVICE};

/// The most reactions one XMPP user may put on one message (XEP-0444 sends the whole set).
const MAX_REACTIONS: usize = 20;

/// How long an XMPP user counts as typing after `composing`, unless they say otherwise
/// (XEP-0085 leaves it open; clients send `paused` or a message well within this).
const TYPING_TIMEOUT: Duration = Duration::from_secs(30);

impl Bridge {
    /// Handles a message to a local account; returns the error to answer with, if any.
    pub(super) async fn message_from_xmpp(&self, message: Message) -> Option<Stanza> {
        if message.type_ == MessageType::Error {
            if let Err(error) = self.bounced(&message).await {
                tracing::warn!(%error, "a bounce could not be shown");
            }
            return None;
        }
        match self.deliver(&message).await {
            Ok(()) => None,
            Err(error) => {
                match &error {
                    BridgeError::Matrix(_) | BridgeError::Store(_) => {
                        tracing::warn!(%error, from = ?message.from, "an XMPP message was not delivered")
                    }
                    _ => {
                        tracing::debug!(%error, from = ?message.from, "an XMPP message was refused")
                    }
                }
                let to = message.from.clone()?;
                let mut reply = Message::error(Some(to)).with_payload(error.to_stanza_error());
                reply.from = message.to.clone();
                reply.id = message.id.clone();
                Some(Stanza::Message(reply))
            }
        }
    }

    pub(super) async fn deliver(&self, message: &Message) -> Result<(), BridgeError> {
        let (Some(from), Some(to)) = (&message.from, &message.to) else {
            return Err(BridgeError::NotAcceptable(
                "a message needs from and to".into(),
            ));
        };
        let local = self.matrix_user(&to.to_bare()).await?;
        // A user is a contact by their bare JID; a MUC occupant writing privately by their
        // occupant JID.
        let remote = match self.is_private_in_muc(message) {
            true => from.clone(),
            false => Jid::from(from.to_bare()),
        };
        let ghost = self.ghost_id_of(&remote)?;
        // Each domain has its quota: a flood from one does not hold up the others.
        self.services
            .limits
            .remote_events
            .check(&remote.domain().as_str().to_ascii_lowercase())?;
        let read = from_xmpp(message, &self.gateway);
        if let Some((_, keys)) = &read.reactions
            && keys.len() > MAX_REACTIONS
        {
            // Refused whole, with the reason (XEP-0444, "Rejecting a reaction").
            return Err(BridgeError::NotAcceptable(format!(
                "at most {MAX_REACTIONS} reactions to one message"
            )));
        }
        let lock = self.pair_lock(&local, &remote);
        let _pair = lock.lock().await;
        // Typing and markers alone do not open a chat.
        let worth_a_room =
            read.content.is_some() || read.reactions.is_some() || read.retracts.is_some();
        let Some(room) = self
            .direct_room(&local, &ghost, &remote, worth_a_room)
            .await?
        else {
            return Ok(());
        };
        let id = message.id.as_ref().map(|id| id.0.as_str());
        self.apply(&room, &ghost, remote.as_str(), id, read).await
    }

    /// Applies what an XMPP message says to a room (a direct chat, or a room the XMPP user is
    /// an occupant of), as the ghost. `remote` is the key the sender's message ids are kept
    /// under: their bare JID, or an occupant's full JID in a portal.
    pub(super) async fn apply(
        &self,
        room: &RoomId,
        ghost: &UserId,
        remote: &str,
        id: Option<&str>,
        read: FromXmpp,
    ) -> Result<(), BridgeError> {
        if let Some(typing) = read.typing {
            let timeout = typing.then_some(TYPING_TIMEOUT);
            self.services.typing.set(room, ghost, timeout);
        }
        if let Some(displayed) = &read.displayed
            && let Some(event) = self
                .event_of_sender(room, remote, ghost, displayed, false)
                .await?
        {
            self.services
                .store
                .set_receipt(&ReceiptRecord {
                    room_id: room.to_string(),
                    receipt_type: "m.read".into(),
                    user_id: ghost.to_string(),
                    thread_id: String::new(),
                    event_id: event.to_string(),
                    ts: causeway_matrix::store::now_ms(),
                })
                .await?;
        }
        if let Some(retracted) = &read.retracts {
            // Only the sender's own messages.
            if let Some(event) = self
                .event_of_sender(room, remote, ghost, retracted, true)
                .await?
            {
                self.append(
                    room,
                    ghost,
                    "m.room.redaction",
                    None,
                    json!({"redacts": event, "reason": "retracted"}),
                )
                .await?;
            }
            return Ok(());
        }
        if let Some((target, keys)) = &read.reactions {
            if let Some(event) = self
                .event_of_sender(room, remote, ghost, target, false)
                .await?
            {
                self.react(room, ghost, &event, keys).await?;
            }
            return Ok(());
        }
        let wants_receipt = read.wants_receipt;
        // A message delivered late (history, offline storage) keeps when it was sent; never
        // a time to come.
        let now = causeway_matrix::store::now_ms();
        let sent_at = read
            .sent_at
            .filter(|&ts| ts > 0 && ts < now)
            .and_then(|ts| ruma::UInt::try_from(ts).ok())
            .map(ruma::MilliSecondsSinceUnixEpoch);
        let Some(content) = read.content else {
            return Ok(());
        };
        // A stanza sent again with the same id is the message appended already: each is
        // appended with its id as transaction id, in the same database transaction.
        let transaction = id.map(|id| format!("{room}|{id}"));
        if let (Some(txn), Some(id)) = (&transaction, id)
            && let Some(event) = self
                .services
                .rooms
                .transaction_event(ghost, XMPP_DEVICE, txn)
                .await?
        {
            // Recorded already, or appended just before a restart and not yet recorded.
            self.record(room, remote, Some(id), &event).await?;
            if wants_receipt {
                self.receipt(room, remote, id).await?;
            }
            return Ok(());
        }
        let reply_to = match &read.reply_to {
            Some(target) => {
                self.event_of_sender(room, remote, ghost, target, false)
                    .await?
            }
            None => None,
        };
        let replaces = match &read.replaces {
            Some(target) => self.original_of(room, remote, ghost, target).await?,
            None => None,
        };
        let content: RoomMessageEventContent = matrix_content(content, reply_to, replaces);
        let content = serde_json::to_value(&content)
            .map_err(|e| causeway_matrix::error::Error::Internal(e.to_string()))?;
        let mut event = NewLocalEvent::new(
            ghost,
            "m.room.message",
            None,
            causeway_matrix::pdu::canonical_content(content)?,
        );
        event.transaction = transaction.as_deref().map(|txn| (XMPP_DEVICE, txn));
        event.origin_server_ts = sent_at;
        let appended = self.services.rooms.append(room, event).await?;
        self.record(room, remote, id, &appended.event_id).await?;
        if let (true, Some(id)) = (wants_receipt, id) {
            // XEP-0184: stored, so received.
            self.receipt(room, remote, id).await?;
        }
        // A message ends typing.
        self.services.typing.set(room, ghost, None);
        Ok(())
    }

    /// XEP-0184: tells the sender that their message was received.
    async fn receipt(&self, room: &RoomId, remote: &str, id: &str) -> Result<(), BridgeError> {
        let Ok(remote) = BareJid::new(remote) else {
            return Ok(());
        };
        let Some((local, _)) = self.pair_of_room(room.as_str()).await? else {
            return Ok(());
        };
        let local = UserId::parse(&local)
            .map_err(|e| causeway_matrix::error::Error::Internal(e.to_string()))?;
        let mut message = Message::new(Some(xmpp_parsers::jid::Jid::from(remote)));
        message.from = Some(self.gateway.user_to_jid(&local)?.to_bare().into());
        message.type_ = MessageType::Chat;
        message
            .payloads
            .push(causeway_mapping::content::message::received(id));
        self.send(Stanza::Message(message));
        Ok(())
    }

    async fn record(
        &self,
        room: &RoomId,
        remote: &str,
        id: Option<&str>,
        event: &EventId,
    ) -> Result<(), BridgeError> {
        if let Some(id) = id {
            self.store
                .record_xmpp_message(&BridgedMessage {
                    room_id: room.to_string(),
                    sender_jid: remote.to_string(),
                    xmpp_id: id.to_owned(),
                    event_id: event.to_string(),
                })
                .await?;
        }
        Ok(())
    }

    /// The event of an XMPP id in a room: of `remote`'s own messages only, or of anyone's
    /// (the remote user's first, then the local account's).
    async fn event_of_sender(
        &self,
        room: &RoomId,
        remote: &str,
        ghost: &UserId,
        id: &str,
        own: bool,
    ) -> Result<Option<OwnedEventId>, BridgeError> {
        let found = self.store.xmpp_messages_with_id(room.as_str(), id).await?;
        let event = found
            .iter()
            .find(|(sender, _)| sender == remote)
            .or_else(|| if own { None } else { found.first() })
            .and_then(|(_, event)| EventId::parse(event).ok());
        if event.is_some() {
            return Ok(event);
        }
        // In rooms, messages are referred to by the stanza id the room gave them: their event.
        let Ok(event) = EventId::parse(id) else {
            return Ok(None);
        };
        let Some(row) = self.services.store.event(event.as_str()).await? else {
            return Ok(None);
        };
        let sender_is_remote = ghost.as_str() == row.sender;
        Ok((row.room_id == room.as_str() && (!own || sender_is_remote)).then_some(event))
    }

    /// The message a correction corrects: the sender's message with that id, or, when the id
    /// is of an earlier correction (as some clients send), the message that one corrected: the
    /// Matrix specification ignores edits of edits.
    async fn original_of(
        &self,
        room: &RoomId,
        remote: &str,
        ghost: &UserId,
        id: &str,
    ) -> Result<Option<OwnedEventId>, BridgeError> {
        let Some(event) = self.event_of_sender(room, remote, ghost, id, true).await? else {
            return Ok(None);
        };
        match self.services.store.relation(event.as_str()).await? {
            Some(relation) if relation.rel_type == "m.replace" => {
                Ok(EventId::parse(&relation.event_id).ok().or(Some(event)))
            }
            _ => Ok(Some(event)),
        }
    }

    /// Makes the ghost's reactions to an event the set `keys` (XEP-0444 sends the whole set).
    async fn react(
        &self,
        room: &RoomId,
        ghost: &UserId,
        target: &EventId,
        keys: &[String],
    ) -> Result<(), BridgeError> {
        let current: Vec<(String, OwnedEventId)> = self
            .services
            .store
            .annotations_by(target.as_str(), ghost.as_str())
            .await?
            .into_iter()
            .filter_map(|(key, event)| Some((key, EventId::parse(&event).ok()?)))
            .collect();
        let changes = reaction_changes(&current, keys);
        for key in changes.add {
            let annotation = Annotation::new(target.to_owned(), key);
            let content = ruma::events::reaction::ReactionEventContent::new(annotation);
            let content = serde_json::to_value(&content)
                .map_err(|e| causeway_matrix::error::Error::Internal(e.to_string()))?;
            self.append(room, ghost, "m.reaction", None, content)
                .await?;
        }
        for event in changes.remove {
            self.append(
                room,
                ghost,
                "m.room.redaction",
                None,
                json!({"redacts": event}),
            )
            .await?;
        }
        Ok(())
    }

    /// A message of a local account that the XMPP side could not deliver: the ghost says so
    /// in the room, in reply to it.
    async fn bounced(&self, message: &Message) -> Result<(), BridgeError> {
        let Some(id) = &message.id else {
            return Ok(());
        };
        let Ok(event_id) = EventId::parse(&id.0) else {
            return Ok(());
        };
        let Some(row) = self.services.store.event(event_id.as_str()).await? else {
            return Ok(());
        };
        let Some((local, remote)) = self.pair_of_room(&row.room_id).await? else {
            return Ok(());
        };
        if row.sender != local || row.event_type != "m.room.message" {
            return Ok(());
        }
        let Ok(room) = RoomId::parse(&row.room_id) else {
            return Ok(());
        };
        let Ok(remote) = BareJid::new(&remote) else {
            return Ok(());
        };
        // Only the contact's server may say that a message to the contact failed, and only to
        // the account that sent it.
        let from_contacts_server = message
            .from
            .as_ref()
            .is_some_and(|from| from.domain() == remote.domain());
        let to_sender = match (&message.to, UserId::parse(&local)) {
            (Some(to), Ok(local)) => {
                self.gateway
                    .user_to_jid(&local)
                    .ok()
                    .map(|jid| jid.to_bare())
                    == Some(to.to_bare())
            }
            _ => false,
        };
        if !from_contacts_server || !to_sender {
            return Ok(());
        }
        let reason = message
            .payloads
            .iter()
            .find_map(|payload| StanzaError::try_from(payload.clone()).ok())
            .map(|error| describe(&error, &remote))
            .unwrap_or_else(|| "the XMPP server gave no reason".to_owned());
        // A message that failed on the way before and now got an answer leaves the outbox.
        self.store.outbox_remove(event_id.as_str()).await?;
        self.notice(
            &room,
            &event_id,
            &remote,
            format!("⚠ Not delivered to {remote}: {reason}."),
        )
        .await?;
        tracing::info!(event_id = %event_id, %remote, %reason, "a message to XMPP bounced");
        Ok(())
    }
}

/// A sentence on why a stanza bounced, with the text the error came with.
fn describe(error: &StanzaError, remote: &BareJid) -> String {
    let mut reason = super::delivery::reason(&error.defined_condition, remote);
    if let Some(text) = error.texts.values().next() {
        reason.push_str(&format!(" ({text})"));
    }
    reason
}
