//! What happens in a room reaches its occupants: messages (the reflection of an occupant's
//! own included), corrections, replies, reactions, retractions and moderation, the topic as
//! the subject, members coming, going, renamed or given power as occupants' presence.

use std::sync::Arc;

use causeway_mapping::address::occupant_nick;
use causeway_mapping::content::message::{ReplyRef, ToXmppRefs, reactions, to_xmpp};
use causeway_mapping::content::room::topic_to_subject;
use causeway_matrix::pdu::Pdu;
use causeway_matrix::store::EventRow;
use causeway_matrix::visibility;
use causeway_xmpp::stanza::Stanza;
use minidom::Element;
use ruma::events::room::message::{Relation, RoomMessageEventContent};
use ruma::{EventId, OwnedUserId, RoomId, UserId};
use serde_json::Value;
use xmpp_parsers::jid::{BareJid, Jid};
use xmpp_parsers::message::{Id, Message, MessageType};

use super::roster::{Member, MemberPresence};
use super::{DELAY, OCCUPANT_ID, Roster, SID};
use crate::bridge::store::{Occupant, bare_of};
use crate::bridge::{Bridge, BridgeError, XMPP_DEVICE};

/// XEP-0424 and XEP-0425: retractions and moderation.
const RETRACT: &str = "urn:xmpp:message-retract:1";
const MODERATE: &str = "urn:xmpp:message-moderate:1";

/// A room event as a MUC message, before it is addressed to an occupant.
pub(super) struct RoomMessage {
    message: Message,
    event_id: String,
    sender: OwnedUserId,
    nick: String,
    /// The sender's own id of a message that came from XMPP.
    own_id: Option<String>,
    ts_ms: u64,
}

impl Bridge {
    /// Sends what an event does in a room with occupants to them.
    pub(in crate::bridge) async fn muc_event(&self, row: &EventRow) -> Result<(), BridgeError> {
        let Some(lock) = self.muc_room_if_any(&row.room_id) else {
            return Ok(());
        };
        let room = RoomId::parse(&row.room_id)
            .map_err(|e| causeway_matrix::error::Error::Internal(e.to_string()))?;
        let mut view = lock.lock().await;
        if matches!(
            row.event_type.as_str(),
            "m.room.member" | "m.room.history_visibility"
        ) {
            view.visible.clear();
        }
        if matches!(
            row.event_type.as_str(),
            "m.room.member" | "m.room.power_levels"
        ) {
            // A join through the MUC service told the occupants a roster with this in it.
            if view.roster.is_some() && row.stream_ordering <= view.roster_position {
                return Ok(());
            }
            let position = self.services.store.current_position();
            let roster = Arc::new(self.roster(&room).await?);
            if view.roster.is_none() {
                view.roster = Some(roster);
                return Ok(());
            }
            self.tell_changes(&room, &mut view, roster, None).await?;
            view.roster_position = position;
            return Ok(());
        }
        let roster = self.known_roster(&room, &mut view).await?;
        let pdu = Pdu::from_stored(&row.event_id, &row.json)?;
        let occupants: Vec<Occupant> = self
            .store
            .occupants(room.as_str())
            .await?
            .into_iter()
            .filter(|occupant| occupant.since_position < row.stream_ordering)
            .collect();
        if occupants.is_empty() {
            return Ok(());
        }
        // Who may see the event is decided for each occupant's ghost, in the one place; what
        // it said is kept until the room's memberships or history visibility change.
        let mut recipients = Vec::new();
        for occupant in occupants {
            let bare = BareJid::new(bare_of(&occupant.jid))
                .map_err(|e| causeway_matrix::error::Error::Internal(e.to_string()))?;
            let ghost = self.ghost_id(&bare)?;
            let allowed = match view.visible.get(&ghost) {
                Some(visible) => visible.contains(row.stream_ordering),
                None => {
                    let visible = visibility::for_user(&self.services.store, &room, &ghost).await?;
                    let allowed = visible.contains(row.stream_ordering);
                    view.visible.insert(ghost, visible);
                    allowed
                }
            };
            if allowed {
                recipients.push(occupant);
            }
        }
        match row.event_type.as_str() {
            "m.room.message" if row.redacted_by.is_none() => {
                let Some(message) = self.room_message(&room, &pdu, &roster).await? else {
                    return Ok(());
                };
                for occupant in &recipients {
                    self.send(Stanza::Message(
                        self.addressed(&room, &message, occupant, false),
                    ));
                }
            }
            "m.room.topic" => {
                let topic = pdu
                    .content_value()
                    .get("topic")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                let nick = nick_of(&roster, &pdu.sender);
                for occupant in &recipients {
                    let mut message = topic_to_subject(&topic);
                    message.from = occupant_room(occupant)
                        .and_then(|room| room.with_resource_str(&nick).ok())
                        .map(Jid::from);
                    message.to = Jid::new(&occupant.jid).ok();
                    message.id = Some(Id(pdu.event_id.to_string()));
                    self.send(Stanza::Message(message));
                }
            }
            "m.reaction" => {
                let relation = pdu
                    .content_value()
                    .get("m.relates_to")
                    .cloned()
                    .unwrap_or_default();
                if relation.get("rel_type").and_then(Value::as_str) != Some("m.annotation") {
                    return Ok(());
                }
                let Some(target) = relation
                    .get("event_id")
                    .and_then(Value::as_str)
                    .and_then(|id| EventId::parse(id).ok())
                else {
                    return Ok(());
                };
                self.reactions_to_room(&room, &roster, &pdu.sender, &target, None, &recipients)
                    .await?;
            }
            "m.room.redaction" => {
                let target = pdu.redacts.clone().or_else(|| {
                    pdu.content_value()
                        .get("redacts")
                        .and_then(Value::as_str)
                        .and_then(|id| EventId::parse(id).ok())
                });
                if let Some(target) = target {
                    self.redaction_to_room(&room, &roster, &pdu, &target, &recipients)
                        .await?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// A message event as a MUC message, with what it refers to found; `None` for what is
    /// not text.
    pub(super) async fn room_message(
        &self,
        room: &RoomId,
        pdu: &Pdu,
        roster: &Roster,
    ) -> Result<Option<RoomMessage>, BridgeError> {
        let Ok(content) = serde_json::from_value::<RoomMessageEventContent>(pdu.content_value())
        else {
            return Ok(None);
        };
        let store = &self.services.store;
        let mut refs = ToXmppRefs::default();
        match &content.relates_to {
            Some(Relation::Reply(reply)) => {
                let target = &reply.in_reply_to.event_id;
                if let Some(row) = store.event(target.as_str()).await?
                    && row.room_id == room.as_str()
                {
                    let author = UserId::parse(&row.sender)
                        .map(|user| nick_of(roster, &user))
                        .unwrap_or_default();
                    let text = serde_json::from_str::<Value>(&row.json)
                        .ok()
                        .and_then(|json| {
                            json.get("content")?.get("body")?.as_str().map(|body| {
                                causeway_mapping::content::message::strip_matrix_reply_fallback(
                                    body,
                                )
                                .to_owned()
                            })
                        })
                        .unwrap_or_default();
                    refs.reply = Some(ReplyRef {
                        id: target.to_string(),
                        to: None,
                        author,
                        text,
                    });
                }
            }
            Some(Relation::Replacement(replacement)) => {
                let original = replacement.event_id.as_str();
                refs.replaces = Some(
                    self.store
                        .xmpp_message_of_event(original)
                        .await?
                        .map(|(_, id)| id)
                        .unwrap_or_else(|| original.to_owned()),
                );
            }
            _ => {}
        }
        let Some(translated) = to_xmpp(&content, &refs, &self.gateway) else {
            return Ok(None);
        };
        let own_id = if self.gateway.is_ghost(&pdu.sender) {
            let prefix = format!("{room}|");
            store
                .transaction_ids(pdu.sender.as_str(), XMPP_DEVICE, &[pdu.event_id.as_str()])
                .await?
                .remove(pdu.event_id.as_str())
                .and_then(|txn| txn.strip_prefix(&prefix).map(str::to_owned))
        } else {
            None
        };
        Ok(Some(RoomMessage {
            message: translated.value,
            event_id: pdu.event_id.to_string(),
            sender: pdu.sender.clone(),
            nick: nick_of(roster, &pdu.sender),
            own_id,
            ts_ms: pdu.origin_server_ts.get().into(),
        }))
    }

    /// A room message for one occupant; `delayed` for history.
    pub(super) fn addressed(
        &self,
        room: &RoomId,
        message: &RoomMessage,
        occupant: &Occupant,
        delayed: bool,
    ) -> Message {
        let room_jid = occupant_room(occupant);
        let mut stanza = message.message.clone();
        stanza.type_ = MessageType::Groupchat;
        stanza.from = room_jid
            .as_ref()
            .and_then(|room| room.with_resource_str(&message.nick).ok())
            .map(Jid::from);
        stanza.to = Jid::new(&occupant.jid).ok();
        stanza.id = Some(Id(message
            .own_id
            .clone()
            .unwrap_or_else(|| message.event_id.clone())));
        if let Some(room_jid) = &room_jid {
            stanza.payloads.push(
                Element::builder("stanza-id", SID)
                    .attr(
                        rxml::xml_ncname!("id").to_owned(),
                        message.event_id.as_str(),
                    )
                    .attr(rxml::xml_ncname!("by").to_owned(), room_jid.to_string())
                    .build(),
            );
        }
        if let Some(own) = &message.own_id {
            stanza.payloads.push(
                Element::builder("origin-id", SID)
                    .attr(rxml::xml_ncname!("id").to_owned(), own.as_str())
                    .build(),
            );
        }
        stanza.payloads.push(
            Element::builder("occupant-id", OCCUPANT_ID)
                .attr(
                    rxml::xml_ncname!("id").to_owned(),
                    self.occupant_id(room, &message.sender),
                )
                .build(),
        );
        if delayed && let Some(room_jid) = &room_jid {
            stanza.payloads.push(
                Element::builder("delay", DELAY)
                    .attr(rxml::xml_ncname!("from").to_owned(), room_jid.to_string())
                    .attr(
                        rxml::xml_ncname!("stamp").to_owned(),
                        super::stamp_text(message.ts_ms),
                    )
                    .build(),
            );
        }
        stanza
    }

    /// XEP-0444: a member's whole set of reactions to a message, in the room.
    async fn reactions_to_room(
        &self,
        room: &RoomId,
        roster: &Roster,
        sender: &UserId,
        target: &EventId,
        redacted: Option<&EventId>,
        recipients: &[Occupant],
    ) -> Result<(), BridgeError> {
        let mut current = self
            .services
            .store
            .annotations_by(target.as_str(), sender.as_str())
            .await?;
        current.retain(|(_, event)| Some(event.as_str()) != redacted.map(|r| r.as_str()));
        let mut keys: Vec<String> = Vec::new();
        for (key, _) in current {
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        let nick = nick_of(roster, sender);
        for occupant in recipients {
            let mut message = Message::new(Jid::new(&occupant.jid).ok());
            message.type_ = MessageType::Groupchat;
            message.from = occupant_room(occupant)
                .and_then(|room| room.with_resource_str(&nick).ok())
                .map(Jid::from);
            message.id = Some(Id(format!("reactions-{}", super::super::random_id())));
            message.payloads.push(reactions(target.as_str(), &keys));
            message.payloads.push(
                Element::builder("occupant-id", OCCUPANT_ID)
                    .attr(
                        rxml::xml_ncname!("id").to_owned(),
                        self.occupant_id(room, sender),
                    )
                    .build(),
            );
            self.send(Stanza::Message(message));
        }
        Ok(())
    }

    /// A redaction: of a message, its retraction (XEP-0424) by its author or its moderation
    /// (XEP-0425) by another member; of a reaction, the author's new set of reactions.
    async fn redaction_to_room(
        &self,
        room: &RoomId,
        roster: &Roster,
        redaction: &Pdu,
        target: &EventId,
        recipients: &[Occupant],
    ) -> Result<(), BridgeError> {
        let store = &self.services.store;
        let Some(row) = store.event(target.as_str()).await? else {
            return Ok(());
        };
        let Ok(author) = UserId::parse(&row.sender) else {
            return Ok(());
        };
        if row.room_id != room.as_str() {
            return Ok(());
        }
        match row.event_type.as_str() {
            "m.reaction" => {
                let Some(relation) = store.relation(target.as_str()).await? else {
                    return Ok(());
                };
                let Ok(original) = EventId::parse(&relation.event_id) else {
                    return Ok(());
                };
                self.reactions_to_room(room, roster, &author, &original, Some(target), recipients)
                    .await
            }
            "m.room.message" => {
                let moderated = redaction.sender != author;
                let reason = redaction
                    .content_value()
                    .get("reason")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                for occupant in recipients {
                    let Some(room_jid) = occupant_room(occupant) else {
                        continue;
                    };
                    let mut message =
                        causeway_mapping::content::message::retraction(target.as_str());
                    message.type_ = MessageType::Groupchat;
                    message.to = Jid::new(&occupant.jid).ok();
                    message.id = Some(Id(redaction.event_id.to_string()));
                    if moderated {
                        // XEP-0425: the room says who moderated it.
                        message.from = Some(Jid::from(room_jid.clone()));
                        let by = room_jid
                            .with_resource_str(&nick_of(roster, &redaction.sender))
                            .map(|jid| jid.to_string())
                            .unwrap_or_else(|_| room_jid.to_string());
                        if let Some(retract) = message
                            .payloads
                            .iter_mut()
                            .find(|p| p.is("retract", RETRACT))
                        {
                            let mut moderated = Element::builder("moderated", MODERATE)
                                .attr(rxml::xml_ncname!("by").to_owned(), by)
                                .append(
                                    Element::builder("occupant-id", OCCUPANT_ID)
                                        .attr(
                                            rxml::xml_ncname!("id").to_owned(),
                                            self.occupant_id(room, &redaction.sender),
                                        )
                                        .build(),
                                )
                                .build();
                            if let Some(reason) = &reason {
                                moderated.append_child(
                                    Element::builder("reason", MODERATE)
                                        .append(reason.as_str())
                                        .build(),
                                );
                            }
                            retract.append_child(moderated);
                        }
                    } else {
                        message.from = room_jid
                            .with_resource_str(&nick_of(roster, &author))
                            .ok()
                            .map(Jid::from);
                        message.payloads.push(
                            Element::builder("occupant-id", OCCUPANT_ID)
                                .attr(
                                    rxml::xml_ncname!("id").to_owned(),
                                    self.occupant_id(room, &author),
                                )
                                .build(),
                        );
                    }
                    self.send(Stanza::Message(message));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Tells one occupant what changed among the members from `before` to `after`: who came,
    /// who went (kicked: 307, banned: 301), who took another nickname (303), whose power
    /// changed. An occupant whose own ghost went is gone from the room.
    pub(super) async fn tell_occupant(
        &self,
        room: &RoomId,
        occupant: &Occupant,
        before: &Roster,
        after: &Roster,
    ) -> Result<(), BridgeError> {
        let Some(room_jid) = occupant_room(occupant) else {
            return Ok(());
        };
        let Ok(to) = Jid::new(&occupant.jid) else {
            return Ok(());
        };
        let own = self.ghost_id(&to.to_bare()).ok();
        let is_own = |member: &Member| own.as_ref() == Some(&member.user);
        let tell = |member: &Member, presence: MemberPresence<'_>| {
            let presence = self.member_presence(room, &room_jid, member, &to, presence);
            self.send(Stanza::Presence(presence));
        };
        let mut gone_self = false;
        for old in before.members() {
            let own_flag: &[u16] = if is_own(old) { &[110] } else { &[] };
            let Some(new) = after.member(&old.user) else {
                let (mut statuses, reason) = self.why_gone(room, &old.user).await?;
                statuses.extend_from_slice(own_flag);
                tell(
                    old,
                    MemberPresence {
                        unavailable: true,
                        statuses: &statuses,
                        reason: reason.as_deref(),
                        ..MemberPresence::default()
                    },
                );
                gone_self |= is_own(old);
                continue;
            };
            if new.nick != old.nick {
                let mut statuses = vec![303];
                statuses.extend_from_slice(own_flag);
                tell(
                    old,
                    MemberPresence {
                        unavailable: true,
                        statuses: &statuses,
                        new_nick: Some(&new.nick),
                        ..MemberPresence::default()
                    },
                );
            }
            if new != old {
                tell(
                    new,
                    MemberPresence {
                        statuses: own_flag,
                        ..MemberPresence::default()
                    },
                );
            }
        }
        for new in after.members() {
            if before.member(&new.user).is_none() && !is_own(new) {
                tell(new, MemberPresence::default());
            }
        }
        if gone_self {
            self.store
                .remove_occupant(room.as_str(), &occupant.jid)
                .await?;
            tracing::info!(room_id = %room, occupant = %occupant.jid, "an XMPP user is no longer in a room");
        }
        Ok(())
    }

    /// The status codes and reason of a member who is no longer joined: banned (301), kicked
    /// (307), or left (none).
    async fn why_gone(
        &self,
        room: &RoomId,
        user: &UserId,
    ) -> Result<(Vec<u16>, Option<String>), BridgeError> {
        let Some(event) = self
            .services
            .rooms
            .state_event(room, "m.room.member", user.as_str())
            .await?
        else {
            return Ok((vec![], None));
        };
        let content = event.content_value();
        let reason = content
            .get("reason")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let statuses = match content.get("membership").and_then(Value::as_str) {
            Some("ban") => vec![301],
            Some("leave") if event.sender != user => vec![307],
            _ => vec![],
        };
        Ok((statuses, reason))
    }
}

/// The nickname of a member in the room; of someone who is not in it, the one they would get.
pub(super) fn nick_of(roster: &Roster, user: &UserId) -> String {
    match roster.member(user) {
        Some(member) => member.nick.clone(),
        None => occupant_nick(None, user, |nick| roster.by_nick(nick).is_some())
            .unwrap_or_else(|_| user.localpart().to_owned()),
    }
}

/// A time of an event (milliseconds since the epoch) as a date.
pub(super) fn stamp(ts_ms: u64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(i64::try_from(ts_ms).unwrap_or(0))
        .unwrap_or_default()
}

/// The room's address as the occupant joined it.
pub(super) fn occupant_room(occupant: &Occupant) -> Option<BareJid> {
    BareJid::new(&occupant.room_jid).ok()
}
