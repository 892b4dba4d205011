//! What a MUC with a portal sends to our members: the answers to their joins, occupants
//! coming and going (as ghosts in the portal), messages and the subject, refusals, and the
//! removal of one of ours.

use causeway_mapping::content::message::from_xmpp;
use causeway_mapping::content::room::subject_to_topic;
use causeway_matrix::api::client::membership::join_as;
use causeway_matrix::error::Error as MatrixError;
use ruma::{OwnedUserId, RoomId, UserId};
use serde_json::json;
use xmpp_parsers::jid::{BareJid, Jid};
use xmpp_parsers::message::{Message, MessageType};
use xmpp_parsers::presence::{Presence, Type as PresenceType};
use xmpp_parsers::stanza_error::{DefinedCondition, StanzaError};

use super::moderation::OccupantInfo;
use super::{SID, describe};
use crate::bridge::{Bridge, BridgeError};

impl Bridge {
    /// Presence from a MUC with a portal to one of our users.
    pub(in crate::bridge) async fn portal_presence(&self, presence: Presence) {
        if let Err(error) = self.portal_presence_inner(&presence).await {
            tracing::warn!(%error, from = ?presence.from, "presence of a MUC was not applied");
        }
    }

    async fn portal_presence_inner(&self, presence: &Presence) -> Result<(), BridgeError> {
        let (Some(from), Some(to)) = (&presence.from, &presence.to) else {
            return Ok(());
        };
        let muc = from.to_bare();
        let Some(room) = self.portals.room(&muc) else {
            return Ok(());
        };
        let key = (to.to_string(), muc.to_string());
        let info = OccupantInfo::of(&presence.payloads);
        let is_self = info.has(110);
        if presence.type_ == PresenceType::Error {
            let error = presence
                .payloads
                .iter()
                .find_map(|p| StanzaError::try_from(p.clone()).ok())
                .unwrap_or_else(|| {
                    StanzaError::new(
                        xmpp_parsers::stanza_error::ErrorType::Cancel,
                        DefinedCondition::UndefinedCondition,
                        "en",
                        "the group chat refused without saying why",
                    )
                });
            if !self.answer_join(&key, Err(error.clone())) {
                self.nick_refused(&room, &muc, from, to, &error).await?;
            }
            return Ok(());
        }
        let Some(nick) = from.resource().map(|nick| nick.as_str().to_owned()) else {
            return Ok(());
        };
        if is_self {
            let user = self
                .gateway
                .jid_to_user(&Jid::from(to.to_bare()))
                .map_err(BridgeError::from)?;
            if presence.type_ != PresenceType::Unavailable {
                // Our member's affiliation and role, on joining and whenever they change.
                self.portal_power(&room, &muc, &user, &info).await?;
                if !self.answer_join(&key, Ok(nick.clone())) {
                    self.own_nick_is(&room, &user, &nick).await?;
                }
                return Ok(());
            }
            // The MUC removed one of ours (kicked, banned, shut down), unless it is a
            // nickname change.
            if info.has(303) {
                return Ok(());
            }
            // The MUC's service shuts down (332): the member stays in the portal, and their
            // self-ping joins them again once it is back.
            if info.has(332) {
                tracing::info!(room_id = %room, %muc, %user, "a MUC service shuts down; its members will join again");
                return Ok(());
            }
            let reason = info
                .reason
                .clone()
                .unwrap_or_else(|| format!("{muc} removed you"));
            return self.removed_from_muc(room.as_str(), &user, &reason).await;
        }
        if self.is_ours(&room, &muc, &nick).await? {
            return Ok(());
        }
        match presence.type_ {
            PresenceType::None => {
                let ghost = self.occupant_ghost(&room, from, &nick).await?;
                if let Some(real) = info.item.as_ref().and_then(|item| item.jid.as_ref()) {
                    self.portals.remember_real_jid(from, real.to_bare());
                }
                self.portal_power(&room, &muc, &ghost, &info).await?;
                self.occupant_presence_to_ghost(&ghost, presence).await?;
            }
            PresenceType::Unavailable => {
                self.occupant_gone(&room, &muc, from, &info).await?;
                let ghost = self.gateway.jid_to_user(from)?;
                self.occupant_presence_to_ghost(&ghost, presence).await?;
            }
            _ => {}
        }
        Ok(())
    }

    /// The MUC refused one of ours a nickname they asked for (with a new display name): the
    /// portal is told, and the session keeps the nickname the MUC knows.
    async fn nick_refused(
        &self,
        room: &RoomId,
        muc: &BareJid,
        from: &Jid,
        to: &Jid,
        error: &StanzaError,
    ) -> Result<(), BridgeError> {
        let Some(nick) = from.resource() else {
            return Ok(());
        };
        let user = self
            .gateway
            .jid_to_user(&Jid::from(to.to_bare()))
            .map_err(BridgeError::from)?;
        let Some(session) = self.store.session(room.as_str(), user.as_str()).await? else {
            return Ok(());
        };
        if session.nick == nick.as_str() {
            return Ok(());
        }
        let text = format!(
            "⚠ {muc} did not give {user} the nickname {nick}: {}; they are still {} there",
            describe(error),
            session.nick
        );
        tracing::info!(room_id = %room, %muc, %user, %nick, "a MUC refused a nickname");
        self.muc_notice(room, muc, None, text).await
    }

    /// Gives a join waiting for it the MUC's answer; says whether one was waiting.
    fn answer_join(&self, key: &(String, String), outcome: Result<String, StanzaError>) -> bool {
        let waiting = self
            .portals
            .joins
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(key);
        match waiting {
            Some((_, sender)) => {
                let _ = sender.send(outcome);
                true
            }
            None => false,
        }
    }

    /// The MUC gave one of ours a nickname other than their session's (a change they asked
    /// for, or the MUC's own): the session follows.
    async fn own_nick_is(
        &self,
        room: &RoomId,
        user: &UserId,
        nick: &str,
    ) -> Result<(), BridgeError> {
        if let Some(mut session) = self.store.session(room.as_str(), user.as_str()).await?
            && session.nick != nick
        {
            session.nick = nick.to_owned();
            self.store.set_session(&session).await?;
        }
        Ok(())
    }

    /// Whether a nickname of a MUC is one of our members' (or one joining now).
    pub(super) async fn is_ours(
        &self,
        room: &RoomId,
        muc: &BareJid,
        nick: &str,
    ) -> Result<bool, BridgeError> {
        if self.portals.joining_nicks(muc).iter().any(|n| n == nick) {
            return Ok(true);
        }
        Ok(self.store.has_session_nick(room.as_str(), nick).await?)
    }

    /// Whether anyone may join a room (its join rule is `public`).
    pub(super) async fn is_public(&self, room: &RoomId) -> Result<bool, BridgeError> {
        Ok(self
            .state_text(room, "m.room.join_rules", "join_rule")
            .await?
            .as_deref()
            == Some("public"))
    }

    /// The account of an occupant's ghost, made (named by the nickname) if needed.
    pub(in crate::bridge) async fn occupant_account(
        &self,
        ghost: &UserId,
        occupant: &Jid,
        nick: &str,
    ) -> Result<(), BridgeError> {
        if self.services.store.user(ghost.as_str()).await?.is_none() {
            self.services
                .limits
                .remote_accounts
                .check(&occupant.domain().as_str().to_ascii_lowercase())?;
            self.services
                .store
                .create_user(ghost.as_str(), None, Some(nick), false)
                .await?;
        }
        Ok(())
    }

    /// The ghost of a MUC occupant, made and joined to the portal when it is not.
    pub(super) async fn occupant_ghost(
        &self,
        room: &RoomId,
        occupant: &Jid,
        nick: &str,
    ) -> Result<OwnedUserId, BridgeError> {
        let ghost = self.gateway.jid_to_user(occupant)?;
        self.occupant_account(&ghost, occupant, nick).await?;
        let membership = self.services.rooms.membership(room, &ghost).await?;
        if membership.as_deref() != Some("join") {
            // A room linked to the MUC may not let anyone join: the MUC's ghost invites.
            if !self.is_public(room).await? && membership.as_deref() != Some("invite") {
                let muc = occupant.to_bare();
                let muc_ghost = self.muc_ghost(&muc).await?;
                self.append(
                    room,
                    &muc_ghost,
                    "m.room.member",
                    Some(ghost.as_str()),
                    json!({ "membership": "invite" }),
                )
                .await?;
            }
            join_as(
                &self.services,
                room,
                &ghost,
                Some(&json!({ "displayname": nick })),
                &[],
            )
            .await?;
        }
        Ok(ghost)
    }

    /// One of our members is no longer in the MUC: out of the portal too, by the MUC's ghost.
    pub(super) async fn removed_from_muc(
        &self,
        room: &str,
        user: &UserId,
        reason: &str,
    ) -> Result<(), BridgeError> {
        self.store.remove_session(room, user.as_str()).await?;
        let room = RoomId::parse(room).map_err(|e| MatrixError::Internal(e.to_string()))?;
        let Some(muc) = self.portals.muc(room.as_str()) else {
            return Ok(());
        };
        if self
            .services
            .rooms
            .membership(&room, user)
            .await?
            .as_deref()
            == Some("join")
        {
            self.muc_sets_membership(&room, &muc, user, "leave", reason)
                .await?;
        }
        tracing::info!(room_id = %room, %muc, %user, %reason, "a Matrix user is out of a MUC");
        Ok(())
    }

    /// A message from a MUC with a portal to one of our users.
    pub(in crate::bridge) async fn portal_message(&self, message: Message) {
        if let Err(error) = self.portal_message_inner(&message).await {
            tracing::warn!(%error, from = ?message.from, "a message of a MUC was not applied");
        }
    }

    async fn portal_message_inner(&self, message: &Message) -> Result<(), BridgeError> {
        let Some(from) = &message.from else {
            return Ok(());
        };
        let muc = from.to_bare();
        let Some(room) = self.portals.room(&muc) else {
            return Ok(());
        };
        if message.type_ == MessageType::Error {
            return self.portal_refused(&room, &muc, message).await;
        }
        if let Some(archived) = self.archived(message, &muc) {
            return self.portal_groupchat(&room, &muc, &archived).await;
        }
        if message.type_ != MessageType::Groupchat {
            // Private messages take the path of direct chats, invitations theirs.
            return Ok(());
        }
        self.portal_groupchat(&room, &muc, message).await
    }

    /// A groupchat message of a MUC with a portal, live or from its archive.
    async fn portal_groupchat(
        &self,
        room: &RoomId,
        muc: &BareJid,
        message: &Message,
    ) -> Result<(), BridgeError> {
        let (room, muc) = (room.to_owned(), muc.clone());
        let Some(from) = &message.from else {
            return Ok(());
        };
        if let Some(topic) = subject_to_topic(message) {
            let current = self
                .state_text(&room, "m.room.topic", "topic")
                .await?
                .unwrap_or_default();
            if current != topic {
                let muc_ghost = self.muc_ghost(&muc).await?;
                self.append(
                    &room,
                    &muc_ghost,
                    "m.room.topic",
                    Some(""),
                    json!({ "topic": topic }),
                )
                .await?;
            }
            return Ok(());
        }
        let stanza_id = message
            .payloads
            .iter()
            .filter(|p| p.is("stanza-id", SID))
            .find(|p| p.attr("by") == Some(muc.as_str()))
            .and_then(|p| p.attr("id"))
            .map(str::to_owned);
        let id = stanza_id
            .clone()
            .or_else(|| message.id.as_ref().map(|id| id.0.clone()));
        // Every member gets a copy: the first is the message, the others are left at once.
        let key = match (&stanza_id, &message.id) {
            (Some(stanza_id), _) => Some(stanza_id.clone()),
            (None, Some(id)) => Some(format!("{from}\u{0}{}", id.0)),
            (None, None) => None,
        };
        if let Some(key) = key
            && !self
                .portals
                .copies
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .first(&muc, &key)
        {
            return Ok(());
        }
        let Some(nick) = from.resource().map(|nick| nick.as_str().to_owned()) else {
            // The room itself speaks: its configuration changed (104), or a notice of its
            // ghost.
            if OccupantInfo::of(&message.payloads).has(104) {
                self.refresh_portal_info(&room, &muc);
            }
            let read = from_xmpp(message, &self.gateway);
            if let Some(content) = read.content {
                let text = content.msgtype.body().to_owned();
                let muc_ghost = self.muc_ghost(&muc).await?;
                self.notice_in(&room, &muc_ghost, text).await?;
            }
            return Ok(());
        };
        if self.is_ours(&room, &muc, &nick).await? {
            // The reflection of what one of ours sent: its event is known by the id it was
            // sent with; the room's id of it is kept, for replies and reactions from XMPP.
            let sent = message
                .payloads
                .iter()
                .find(|p| p.is("origin-id", SID))
                .and_then(|p| p.attr("id"))
                .map(str::to_owned)
                .or_else(|| message.id.as_ref().map(|id| id.0.clone()));
            if let (Some(sent), Some(stanza_id)) = (sent, stanza_id)
                && let Ok(event) = ruma::EventId::parse(&sent)
            {
                self.store
                    .record_xmpp_message(&crate::bridge::store::BridgedMessage {
                        room_id: room.to_string(),
                        sender_jid: from.to_string(),
                        xmpp_id: stanza_id,
                        event_id: event.to_string(),
                    })
                    .await?;
            }
            return Ok(());
        }
        let ghost = self.occupant_ghost(&room, from, &nick).await?;
        let mut read = from_xmpp(message, &self.gateway);
        read.wants_receipt = false;
        // Seen up to when it was said (a live message: now).
        let seen = read.sent_at.unwrap_or_else(causeway_matrix::store::now_ms);
        self.apply(&room, &ghost, from.as_str(), id.as_deref(), read)
            .await?;
        self.store.session_seen(room.as_str(), seen).await?;
        Ok(())
    }

    /// The MUC refused something one of ours sent, in the portal or privately to one of its
    /// occupants: a notice in reply to it (of the MUC's ghost, or of the occupant's).
    async fn portal_refused(
        &self,
        room: &RoomId,
        muc: &BareJid,
        message: &Message,
    ) -> Result<(), BridgeError> {
        let Some(event) = message
            .id
            .as_ref()
            .and_then(|id| ruma::EventId::parse(&id.0).ok())
        else {
            return Ok(());
        };
        let Some(row) = self.services.store.event(event.as_str()).await? else {
            return Ok(());
        };
        let (room, ghost) = if row.room_id == room.as_str() {
            (room.to_owned(), self.muc_ghost(muc).await?)
        } else {
            let occupant = self
                .pair_of_room(&row.room_id)
                .await?
                .and_then(|(_, remote)| Jid::new(&remote).ok())
                .filter(|remote| remote.resource().is_some() && remote.to_bare() == *muc);
            let (Some(occupant), Ok(room)) = (occupant, RoomId::parse(&row.room_id)) else {
                return Ok(());
            };
            (room, self.ghost_id_of(&occupant)?)
        };
        let reason = message
            .payloads
            .iter()
            .find_map(|p| StanzaError::try_from(p.clone()).ok())
            .map(|error| describe(&error))
            .unwrap_or_else(|| "no reason given".to_owned());
        self.notice_replying(
            &room,
            &ghost,
            &event,
            format!("⚠ {muc} did not take this: {reason}"),
        )
        .await?;
        Ok(())
    }
}
