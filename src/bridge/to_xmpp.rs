//! Matrix → XMPP: what local accounts do in direct rooms with XMPP users, read from the event
//! stream in order, from where the last run stopped.

use std::time::Duration;

use causeway_mapping::content::message::{
    ReplyRef, ToXmppRefs, chat_state, displayed, reactions, retraction, to_xmpp,
};
use causeway_matrix::create_room::member_content;
use causeway_matrix::pdu::Pdu;
use causeway_matrix::store::{EventRow, ReceiptRecord};

use super::store::BridgedMessage;
use causeway_matrix::visibility;
use causeway_xmpp::stanza::Stanza;
use minidom::Element;
use ruma::events::room::message::{Relation, RoomMessageEventContent};
use ruma::{EventId, OwnedUserId, RoomId, UserId};
use serde_json::Value;
use xmpp_parsers::jid::{BareJid, Jid};
use xmpp_parsers::message::{Id, Message, MessageType};

use super::{Bridge, BridgeError, random_id};

/// The name of the sender's cursor in the store.
const CURSOR: &str = "xmpp-sender";
/// Events read from the store at once.
const BATCH: i64 = 200;
/// How long the sender's position may stay unwritten while nothing goes out.
const SAVE_EVERY: Duration = Duration::from_secs(1);

/// XEP-0359: the sender's own id of a message, kept by every server on the way.
const SID: &str = "urn:xmpp:sid:0";
/// XEP-0333: markers.
const MARKERS: &str = "urn:xmpp:chat-markers:0";
/// XEP-0334: processing hints.
const HINTS: &str = "urn:xmpp:hints";

/// How far the sender got, and how far the store knows. The position is written when
/// something may have gone out, and otherwise at most every SAVE_EVERY: what is read again
/// after a restart is only events that go nowhere (of ghosts, of rooms that are not direct
/// chats with XMPP users).
struct Cursor {
    position: i64,
    saved: i64,
    saved_at: tokio::time::Instant,
}

impl Cursor {
    async fn save(&mut self, store: &causeway_matrix::store::Store) {
        if self.saved != self.position {
            match store.set_stream_cursor(CURSOR, self.position).await {
                Ok(()) => self.saved = self.position,
                Err(error) => tracing::warn!(%error, "the XMPP sender cannot record its position"),
            }
        }
        self.saved_at = tokio::time::Instant::now();
    }
}

/// Where a local account's events in a room go on XMPP: the direct chat with a contact, or
/// the MUC of a portal the account is an occupant of. Both go by the same path; in a MUC,
/// messages are `groupchat` and what they refer to is named by the MUC's stanza ids.
struct Pair {
    local: OwnedUserId,
    local_jid: BareJid,
    /// The account as it speaks here: its bare JID to a contact, its session's full JID to a
    /// MUC.
    own: Jid,
    /// The contact, the MUC, or the MUC occupant of a private chat.
    remote: Jid,
    /// The contact's ghost, or the MUC's: what it may see of the room is what goes out.
    ghost: OwnedUserId,
    /// A MUC's portal.
    group: bool,
}

impl Pair {
    /// The contact of a direct chat with an XMPP user (not an occupant of a MUC): its messages
    /// go through the outbox, and its presence is subscribed to.
    fn contact(&self) -> Option<BareJid> {
        match (self.group, self.remote.resource()) {
            (false, None) => Some(self.remote.to_bare()),
            _ => None,
        }
    }
}

impl Bridge {
    /// Follows the event stream for as long as the server runs.
    pub(super) async fn send_loop(self: std::sync::Arc<Self>) {
        let store = &self.services.store;
        let mut changes = store.subscribe();
        let start = match store.stream_cursor(CURSOR).await {
            Ok(Some(position)) => position,
            Ok(None) => {
                // The first start: what happened before the bridge existed stays where it is.
                let position = store.current_position();
                if let Err(error) = store.set_stream_cursor(CURSOR, position).await {
                    tracing::error!(%error, "the XMPP sender cannot record its position");
                }
                position
            }
            Err(error) => {
                tracing::error!(%error, "the XMPP sender cannot read its position; not sending to XMPP");
                return;
            }
        };
        let mut cursor = Cursor {
            position: start,
            saved: start,
            saved_at: tokio::time::Instant::now(),
        };
        loop {
            let until = store.current_position();
            if until <= cursor.position {
                match tokio::time::timeout(SAVE_EVERY, changes.changed()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return,
                    Err(_) => cursor.save(store).await,
                }
                continue;
            }
            let after = cursor.position;
            let rows = match store.events_after(after, until, BATCH).await {
                Ok(rows) => rows,
                Err(error) => {
                    tracing::warn!(%error, "the XMPP sender cannot read events; trying again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let upper = match rows.last() {
                Some(last) if rows.len() as i64 >= BATCH => last.stream_ordering,
                _ => until,
            };
            let mut went_out = rows.iter().any(|row| {
                self.may_go_out(&row.sender) || self.muc_room_if_any(&row.room_id).is_some()
            });
            for row in &rows {
                self.plumbing_event(row);
                if let Err(error) = self.muc_event(row).await {
                    tracing::warn!(%error, event_id = %row.event_id, "an event was not sent to a room's occupants");
                }
                if let Err(error) = self.portal_event(row).await {
                    tracing::warn!(%error, event_id = %row.event_id, "an event was not sent to a MUC");
                }
                if let Err(error) = self.event_to_xmpp(row, false).await {
                    tracing::warn!(%error, event_id = %row.event_id, "an event was not sent to XMPP");
                }
            }
            // Presence changes are rare: the store is asked only when there are any.
            let presence_changed = store
                .changes()
                .changed_since(&causeway_matrix::store::Change::Presence, after);
            if presence_changed {
                match store.presence_since(after, upper).await {
                    Ok(changes) => {
                        went_out |= changes
                            .iter()
                            .any(|record| self.may_go_out(&record.user_id));
                        for record in &changes {
                            if let Err(error) = self.local_presence_changed(record).await {
                                tracing::warn!(%error, user = %record.user_id, "a presence was not sent to XMPP");
                            }
                            if let Err(error) = self.muc_member_presence(record).await {
                                tracing::warn!(%error, user = %record.user_id, "a presence was not sent to rooms' occupants");
                            }
                            if let Err(error) = self.portal_member_presence(record).await {
                                tracing::warn!(%error, user = %record.user_id, "a presence was not sent to MUCs");
                            }
                        }
                    }
                    Err(error) => tracing::warn!(%error, "the XMPP sender cannot read presence"),
                }
            }
            match store.receipts_after(after, upper).await {
                Ok(receipts) => {
                    went_out |= receipts
                        .iter()
                        .any(|receipt| self.may_go_out(&receipt.user_id));
                    for receipt in &receipts {
                        if let Err(error) = self.receipt_to_xmpp(receipt).await {
                            tracing::warn!(%error, event_id = %receipt.event_id, "a receipt was not sent to XMPP");
                        }
                    }
                }
                Err(error) => tracing::warn!(%error, "the XMPP sender cannot read receipts"),
            }
            cursor.position = upper;
            if went_out || cursor.saved_at.elapsed() >= SAVE_EVERY {
                cursor.save(store).await;
            }
        }
    }

    /// Where the event sender stopped (`None` before its first start).
    pub(super) async fn sent_up_to(&self) -> Option<i64> {
        match self.services.store.stream_cursor(CURSOR).await {
            Ok(position) => position,
            Err(error) => {
                tracing::warn!(%error, "the XMPP sender's position could not be read");
                None
            }
        }
    }

    /// Whether something of this user may go to XMPP: a local account's, not a ghost's.
    fn may_go_out(&self, user: &str) -> bool {
        UserId::parse(user)
            .is_ok_and(|user| self.services.is_local(&user) && !self.gateway.is_ghost(&user))
    }

    /// Sends the local accounts' typing in direct rooms as chat states, for as long as the
    /// server runs.
    pub(super) async fn typing_loop(self: std::sync::Arc<Self>) {
        let typing = &self.services.typing;
        let mut changes = typing.subscribe();
        let mut seen = typing.current();
        // What the XMPP user was last told, by room.
        let mut told: std::collections::HashMap<ruma::OwnedRoomId, bool> = Default::default();
        // Who occupants of rooms were last told is typing, by room.
        let mut told_rooms = super::muc::TypingTold::default();
        // Which members portals' MUCs were last told are typing, by room.
        let mut told_portals = super::muc::TypingTold::default();
        loop {
            if changes.changed().await.is_err() {
                return;
            }
            let now = *changes.borrow_and_update();
            for room in typing.changed_since(seen) {
                if let Err(error) = self
                    .muc_typing(&room, &typing.users(&room), &mut told_rooms)
                    .await
                {
                    tracing::warn!(%error, "typing not sent to a room's occupants");
                }
                if let Err(error) = self
                    .portal_typing(&room, &typing.users(&room), &mut told_portals)
                    .await
                {
                    tracing::warn!(%error, "typing not sent to a MUC");
                }
                let pair = match self.pair_of(room.as_str(), None).await {
                    Ok(Some(pair)) => pair,
                    Ok(None) => continue,
                    Err(error) => {
                        tracing::warn!(%error, "typing not sent to XMPP");
                        continue;
                    }
                };
                let is_typing = typing.users(&room).contains(&pair.local);
                if told.get(&room).copied().unwrap_or(false) == is_typing {
                    continue;
                }
                told.insert(room.clone(), is_typing);
                let mut message = self.chat(
                    &pair,
                    &format!("typing-{}", random_id()),
                    Message::new(None),
                );
                message.payloads.push(chat_state(is_typing));
                message.payloads.push(Element::bare("no-store", HINTS));
                self.send(Stanza::Message(message));
            }
            seen = now;
        }
    }

    /// A read receipt of the local account on the XMPP user's message becomes an XEP-0333
    /// displayed marker.
    async fn receipt_to_xmpp(&self, receipt: &ReceiptRecord) -> Result<(), BridgeError> {
        if receipt.receipt_type != "m.read" {
            return Ok(());
        }
        self.muc_receipt(receipt).await?;
        let Some(pair) = self
            .pair_of(&receipt.room_id, Some(&receipt.user_id))
            .await?
        else {
            return Ok(());
        };
        let Some((sender, id)) = self.store.xmpp_message_of_event(&receipt.event_id).await? else {
            return Ok(());
        };
        // Only the other side's messages are marked: the contact's, or an occupant's other
        // than the account itself.
        let theirs = match pair.group {
            true => {
                Jid::new(&sender).is_ok_and(|jid| jid.to_bare() == pair.remote.to_bare())
                    && self
                        .services
                        .store
                        .event(&receipt.event_id)
                        .await?
                        .is_some_and(|row| row.sender != pair.local.as_str())
            }
            false => sender == pair.remote.as_str(),
        };
        if !theirs {
            return Ok(());
        }
        let mut message = self.chat(
            &pair,
            &format!("displayed-{}", random_id()),
            Message::new(None),
        );
        message.payloads.push(displayed(&id));
        message.payloads.push(Element::bare("store", HINTS));
        self.send(Stanza::Message(message));
        Ok(())
    }

    /// The direct room `room`, if it is one; with `sender`, only if that is the local account,
    /// or the portal `room` if `sender` is one of its MUC's occupants.
    async fn pair_of(&self, room: &str, sender: Option<&str>) -> Result<Option<Pair>, BridgeError> {
        let Some((local, remote)) = self.pair_of_room(room).await? else {
            let Some(sender) = sender.and_then(|sender| UserId::parse(sender).ok()) else {
                return Ok(None);
            };
            let Some((muc, own)) = self.portal_session_of(room, &sender).await? else {
                return Ok(None);
            };
            return Ok(Some(Pair {
                local_jid: own.to_bare(),
                own: Jid::from(own),
                ghost: self.muc_ghost(&muc).await?,
                remote: Jid::from(muc),
                local: sender,
                group: true,
            }));
        };
        if sender.is_some_and(|sender| sender != local) {
            return Ok(None);
        }
        let (Ok(local), Ok(remote)) = (UserId::parse(&local), Jid::new(&remote)) else {
            return Ok(None);
        };
        let local_jid = self.gateway.user_to_jid(&local)?.to_bare();
        let ghost = self.ghost_id_of(&remote)?;
        // A private chat with a MUC's occupant goes from the account's own occupant (a MUC
        // passes on only those); if it has none, the MUC says no, and the account is told.
        let own = match remote.resource() {
            Some(_) => self
                .occupant_session(&remote.to_bare(), &local)
                .await?
                .map(Jid::from),
            None => None,
        };
        Ok(Some(Pair {
            local,
            own: own.unwrap_or_else(|| Jid::from(local_jid.clone())),
            local_jid,
            remote,
            ghost,
            group: false,
        }))
    }

    /// Sends what an event does to XMPP; `again` for a message from the outbox.
    pub(super) async fn event_to_xmpp(
        &self,
        row: &EventRow,
        again: bool,
    ) -> Result<(), BridgeError> {
        if row.event_type == "m.room.member" {
            let pdu = Pdu::from_stored(&row.event_id, &row.json)?;
            return self.member_event(row, &pdu).await;
        }
        let Some(pair) = self.pair_of(&row.room_id, Some(&row.sender)).await? else {
            return Ok(());
        };
        // Only events of direct chats are read further, and only those the XMPP user's ghost
        // may see.
        let room = RoomId::parse(&row.room_id)
            .map_err(|e| causeway_matrix::error::Error::Internal(e.to_string()))?;
        let visible = visibility::for_user(&self.services.store, &room, &pair.ghost).await?;
        if !visible.contains(row.stream_ordering) {
            return Ok(());
        }
        let pdu = Pdu::from_stored(&row.event_id, &row.json)?;
        let content = pdu.content_value();
        match row.event_type.as_str() {
            "m.room.message" if row.redacted_by.is_none() => {
                self.message_to_xmpp(&room, &pair, &pdu, content, again)
                    .await
            }
            "m.reaction" => {
                let relation = content
                    .get("m.relates_to")
                    .filter(|r| r.get("rel_type").and_then(Value::as_str) == Some("m.annotation"));
                let target = relation
                    .and_then(|r| r.get("event_id"))
                    .and_then(Value::as_str)
                    .and_then(|id| EventId::parse(id).ok());
                let key = relation
                    .and_then(|r| r.get("key"))
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                match target {
                    Some(target) if self.subscription_answer(&pair.local, &target, key).await? => {
                        Ok(())
                    }
                    Some(target) => self.reactions_to_xmpp(&pair, &target, None).await,
                    None => Ok(()),
                }
            }
            "m.room.redaction" => {
                let target = pdu.redacts.clone().or_else(|| {
                    content
                        .get("redacts")
                        .and_then(Value::as_str)
                        .and_then(|id| EventId::parse(id).ok())
                });
                match target {
                    Some(target) => self.redaction_to_xmpp(&room, &pair, &target, &pdu).await,
                    None => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }

    /// The message of the local account to the XMPP user or the MUC, with an id for both ends.
    fn chat(&self, pair: &Pair, id: &str, mut message: Message) -> Message {
        message.from = Some(pair.own.clone());
        message.to = Some(pair.remote.clone());
        message.type_ = match pair.group {
            true => MessageType::Groupchat,
            false => MessageType::Chat,
        };
        message.id = Some(Id(id.to_owned()));
        message
    }

    async fn message_to_xmpp(
        &self,
        room: &RoomId,
        pair: &Pair,
        pdu: &Pdu,
        content: Value,
        again: bool,
    ) -> Result<(), BridgeError> {
        let Ok(content) = serde_json::from_value::<RoomMessageEventContent>(content) else {
            return Ok(());
        };
        // Messages reach the contact in the order they were written.
        let contact = pair.contact();
        if !again
            && let Some(contact) = &contact
            && self.wait_behind(room, &pdu.event_id, contact).await?
        {
            return Ok(());
        }
        let mut refs = ToXmppRefs::default();
        match &content.relates_to {
            Some(Relation::Reply(reply)) => {
                refs.reply = self.reply_ref(&reply.in_reply_to.event_id).await?;
            }
            Some(Relation::Replacement(replacement)) => {
                let target = replacement.event_id.as_str();
                refs.replaces = match self.store.xmpp_message_of_event(target).await? {
                    // A MUC knows the message by the id it was sent with: its event id.
                    Some(_) if pair.group => self
                        .services
                        .store
                        .event(target)
                        .await?
                        .filter(|row| row.sender == pair.local.as_str())
                        .map(|row| row.event_id),
                    Some((sender, id)) if sender == pair.local_jid.as_str() => Some(id),
                    _ => None,
                };
                if refs.replaces.is_none() {
                    // A correction of a message XMPP never saw.
                    return Ok(());
                }
            }
            _ => {}
        }
        let Some(translated) = to_xmpp(&content, &refs, &self.gateway) else {
            tracing::debug!(event_id = %pdu.event_id, "a message that is not text is not sent to XMPP");
            return Ok(());
        };
        if !translated.dropped.is_empty() {
            tracing::debug!(event_id = %pdu.event_id, dropped = ?translated.dropped, "parts of a message are not sent to XMPP");
        }
        let id = pdu.event_id.as_str();
        let mut message = self.chat(pair, id, translated.value);
        message.payloads.push(
            Element::builder("origin-id", SID)
                .attr(rxml::xml_ncname!("id").to_owned(), id)
                .build(),
        );
        message.payloads.push(Element::bare("markable", MARKERS));
        message.payloads.push(Element::bare(
            "active",
            causeway_mapping::content::message::ns::CHAT_STATES,
        ));
        let Some(contact) = contact else {
            // To a MUC or one of its occupants: an error naming the event comes back if it
            // refuses. The MUC's reflection records a groupchat message, under the MUC's
            // stanza id; a private one is recorded now.
            if !pair.group {
                self.store
                    .record_xmpp_message(&BridgedMessage {
                        room_id: room.to_string(),
                        sender_jid: pair.local_jid.to_string(),
                        xmpp_id: id.to_owned(),
                        event_id: id.to_owned(),
                    })
                    .await?;
            }
            self.send(Stanza::Message(message));
            return Ok(());
        };
        let record = BridgedMessage {
            room_id: room.to_string(),
            sender_jid: pair.local_jid.to_string(),
            xmpp_id: id.to_owned(),
            event_id: id.to_owned(),
        };
        if again {
            self.store.record_xmpp_message(&record).await?;
        } else if !self
            .store
            .record_outgoing(&record, self.in_flight_check_at())
            .await?
        {
            // Read again after a restart: it is in the outbox, which sends it once more.
            return Ok(());
        }
        self.send_message(room, &pdu.event_id, &contact, Stanza::Message(message));
        Ok(())
    }

    /// What a reply needs to know of the message it answers.
    async fn reply_ref(&self, target: &EventId) -> Result<Option<ReplyRef>, BridgeError> {
        let store = &self.services.store;
        let Some((sender_jid, id)) = self.store.xmpp_message_of_event(target.as_str()).await?
        else {
            return Ok(None);
        };
        let Some(row) = store.event(target.as_str()).await? else {
            return Ok(None);
        };
        let author = store
            .user(&row.sender)
            .await?
            .and_then(|user| user.displayname)
            .unwrap_or_else(|| sender_jid.clone());
        // The text as it reads now: the last correction's, if any.
        let current = store
            .latest_replacement(target.as_str(), &row.sender)
            .await?
            .unwrap_or(row);
        let text = serde_json::from_str::<Value>(&current.json)
            .ok()
            .and_then(|json| {
                let content = json.get("content")?;
                let body = content
                    .get("m.new_content")
                    .and_then(|new| new.get("body"))
                    .or_else(|| content.get("body"))?
                    .as_str()?;
                Some(
                    causeway_mapping::content::message::strip_matrix_reply_fallback(body)
                        .to_owned(),
                )
            })
            .unwrap_or_default();
        Ok(Some(ReplyRef {
            id,
            to: Jid::new(&sender_jid).ok(),
            author,
            text,
        }))
    }

    /// XEP-0444: the local account's whole set of reactions to a message.
    /// `redacted` is a reaction being redacted, whose redaction may not be applied yet.
    async fn reactions_to_xmpp(
        &self,
        pair: &Pair,
        target: &EventId,
        redacted: Option<&EventId>,
    ) -> Result<(), BridgeError> {
        let store = &self.services.store;
        let Some((_, target_id)) = self.store.xmpp_message_of_event(target.as_str()).await? else {
            return Ok(());
        };
        let mut current = store
            .annotations_by(target.as_str(), pair.local.as_str())
            .await?;
        current.retain(|(_, event)| Some(event.as_str()) != redacted.map(|r| r.as_str()));
        let mut keys: Vec<String> = Vec::new();
        for (key, _) in &current {
            if !keys.contains(key) {
                keys.push(key.clone());
            }
        }
        let last = current.last().map(|(_, event)| event.clone());
        let id = last.unwrap_or_else(|| format!("reactions-{target}"));
        let mut message = self.chat(pair, &id, Message::new(None));
        message.payloads.push(reactions(&target_id, &keys));
        message.payloads.push(Element::bare("store", HINTS));
        self.send(Stanza::Message(message));
        Ok(())
    }

    /// A redaction of the local account's message retracts it; of a reaction, the set of
    /// reactions changes; of an occupant's message in a portal, the MUC is asked to retract
    /// it.
    async fn redaction_to_xmpp(
        &self,
        room: &RoomId,
        pair: &Pair,
        target: &EventId,
        redaction: &Pdu,
    ) -> Result<(), BridgeError> {
        let store = &self.services.store;
        let Some(row) = store.event(target.as_str()).await? else {
            return Ok(());
        };
        if row.room_id != room.as_str() {
            return Ok(());
        }
        if row.sender != pair.local.as_str() {
            // A moderator's redaction of an occupant's message in a portal asks the MUC to
            // retract it (XEP-0425).
            if pair.group
                && row.event_type == "m.room.message"
                && let Some((_, id)) = self.store.xmpp_message_of_event(target.as_str()).await?
            {
                let reason = redaction
                    .content_value()
                    .get("reason")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                self.portal_moderate(
                    room,
                    &pair.remote.to_bare(),
                    &pair.own,
                    redaction,
                    &id,
                    reason,
                );
            }
            return Ok(());
        }
        match row.event_type.as_str() {
            "m.reaction" => {
                // The redacted reaction's content is gone; its relation is kept.
                let Some(relation) = store.relation(target.as_str()).await? else {
                    return Ok(());
                };
                let Ok(original) = EventId::parse(&relation.event_id) else {
                    return Ok(());
                };
                self.reactions_to_xmpp(pair, &original, Some(target)).await
            }
            "m.room.message" => {
                let Some((sender, id)) = self.store.xmpp_message_of_event(target.as_str()).await?
                else {
                    return Ok(());
                };
                // In a MUC, the occupant's reflection was recorded under its nickname.
                if !pair.group && sender != pair.local_jid.as_str() {
                    return Ok(());
                }
                let message = self.chat(pair, &format!("retract-{target}"), retraction(&id));
                self.send(Stanza::Message(message));
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// A local account invited a ghost: into a direct chat, the ghost joins and the room
    /// becomes the chat of the two; into anything else, it declines.
    async fn member_event(&self, row: &EventRow, pdu: &Pdu) -> Result<(), BridgeError> {
        let content = pdu.content_value();
        let membership = content.get("membership").and_then(Value::as_str);
        if membership == Some("join") {
            // A local account taking part in a direct chat with an XMPP user asks for their
            // presence.
            if let Some(pair) = self.pair_of(&row.room_id, pdu.state_key.as_deref()).await?
                && let Some(contact) = pair.contact()
                && self.services.is_local(&pair.local)
            {
                self.subscribe(&pair.local, &contact).await?;
            }
            return Ok(());
        }
        if membership != Some("invite") {
            return Ok(());
        }
        let Some(ghost) = pdu
            .state_key
            .as_deref()
            .and_then(|key| UserId::parse(key).ok())
        else {
            return Ok(());
        };
        if !self.gateway.is_ghost(&ghost) || self.gateway.is_ghost(&pdu.sender) {
            return Ok(());
        }
        if !self.services.is_local(&pdu.sender) {
            return Ok(());
        }
        // The invitation of a MUC's ghost into a room being linked to the MUC.
        if content.get(super::portal::LINK_EVENT).is_some() {
            return Ok(());
        }
        let room = RoomId::parse(&row.room_id)
            .map_err(|e| causeway_matrix::error::Error::Internal(e.to_string()))?;
        if self
            .services
            .rooms
            .membership(&room, &ghost)
            .await?
            .as_deref()
            != Some("invite")
        {
            // Answered already (an event read again after a restart).
            return Ok(());
        }
        let reason = content.get("reason").and_then(Value::as_str);
        if self
            .invite_into_portal(&room, &pdu.event_id, &pdu.sender, &ghost, reason)
            .await?
        {
            return Ok(());
        }
        // A user's bare JID, or a MUC occupant's full JID (a private chat in the MUC).
        let remote = self.gateway.user_to_jid(&ghost)?;
        let local = pdu.sender.clone();
        let store = &self.services.store;
        let mut members = store.room_members(row.room_id.as_str(), "join").await?;
        members.extend(store.room_members(row.room_id.as_str(), "invite").await?);
        let others = members
            .iter()
            .filter(|member| *member != local.as_str() && *member != ghost.as_str())
            .count();
        let is_direct = content.get("is_direct").and_then(Value::as_bool) == Some(true);
        if !is_direct || others > 0 {
            self.append(
                &room,
                &ghost,
                "m.room.member",
                Some(ghost.as_str()),
                serde_json::json!({
                    "membership": "leave",
                    "reason": "XMPP users take part in direct chats; group chats with them are XMPP group chats (MUC)",
                }),
            )
            .await?;
            return Ok(());
        }
        let lock = self.pair_lock(&local, &remote);
        let _pair = lock.lock().await;
        let existing = self.room_of_pair(&local, &remote).await?;
        if let Some(old) = &existing
            && old != &room
            && matches!(
                self.services
                    .rooms
                    .membership(old, &local)
                    .await?
                    .as_deref(),
                Some("join" | "invite")
            )
        {
            // The chat the account is in goes on; a second one would not be bridged.
            self.append(
                &room,
                &ghost,
                "m.room.member",
                Some(ghost.as_str()),
                serde_json::json!({
                    "membership": "leave",
                    "reason": format!("You have a direct chat with {remote} already: {old}"),
                }),
            )
            .await?;
            return Ok(());
        }
        let join = member_content(&self.services, &ghost, "join").await?;
        self.append(&room, &ghost, "m.room.member", Some(ghost.as_str()), join)
            .await?;
        // A new direct chat takes over from one the account has left.
        let replace = existing.as_ref() != Some(&room);
        if replace {
            self.record_room_of_pair(&local, &remote, &room, true)
                .await?;
            tracing::info!(room_id = %room, local = %local, %remote, "a direct chat with an XMPP contact");
            if remote.resource().is_none() {
                self.subscribe(&local, &remote.to_bare()).await?;
            }
        }
        Ok(())
    }
}
