//! XMPP MUCs as Matrix rooms: portals.
//!
//! - The alias `#_xmpp_room=40conference.jabber.de:example.org` names the portal of
//!   `room@conference.jabber.de`. The first time it is asked for (a join, a directory lookup,
//!   another server's directory query), the MUC is asked what it is (disco#info): a MUC gets a
//!   public Matrix room with that alias, made by the MUC's own ghost; anything else is
//!   `M_NOT_FOUND`, never a room made up.
//! - A local user joining the portal joins the MUC first, as themselves
//!   (`alice@example.org/causeway`), under their display name: the Matrix join waits for the
//!   MUC's answer and fails with its refusal (no such room `M_NOT_FOUND`, members only or banned
//!   `M_FORBIDDEN`); a nickname taken is tried again by the rules of `docs/mapping.md`.
//! - The MUC's occupants are ghosts in the portal (`@_xmpp_room=40…/=4eick:example.org`),
//!   joining and leaving with their presence; their messages (the history sent on joining
//!   too) are their ghosts' events, by the path of direct chats, once however many local
//!   members receive them; the subject is the topic.
//! - What a local member does in the portal goes to the MUC from their own JID; the MUC's
//!   reflection of it is recognised by its id (the event id) and only its stanza id kept.
//!   Leaving the portal leaves the MUC.
//! - What comes from the MUC (presence, messages, refusals) is in `inbound.rs`.
//! - At start-up, every member joins their MUCs again, asking for the history since the last
//!   message seen.

use std::collections::HashMap;
use std::time::Duration;

use causeway_mapping::address::{RoomRef, occupant_nick};
use causeway_mapping::content::room::{room_name, topic_to_subject};
use causeway_matrix::create_room::{RoomOptions, create_room};
use causeway_matrix::error::Error as MatrixError;
use causeway_matrix::pdu::Pdu;
use causeway_matrix::store::EventRow;
use causeway_xmpp::stanza::Stanza;
use minidom::Element;
use ruma::api::client::room::create_room::v3::RoomPreset;
use ruma::{OwnedRoomId, OwnedUserId, RoomAliasId, RoomId, UserId};
use serde_json::Value;
use xmpp_parsers::iq::Iq;
use xmpp_parsers::jid::{BareJid, FullJid, Jid};
use xmpp_parsers::message::{Id, Message, MessageType};
use xmpp_parsers::presence::{Presence, Type as PresenceType};
use xmpp_parsers::stanza_error::{DefinedCondition, StanzaError};

use super::store::Session;
use super::{Bridge, BridgeError};

mod archive;
mod copies;
mod inbound;
mod info;
mod invite;
mod moderation;
mod plumbing;
pub(super) use plumbing::LINK_EVENT;
mod ping;
mod presence;
mod typing;

/// The resource of local users' JIDs in MUCs.
const RESOURCE: &str = "causeway";
/// How long a MUC has to answer a join.
const JOIN_TIMEOUT: Duration = Duration::from_secs(20);
/// The messages of history asked for on a first join.
const FIRST_HISTORY: u32 = 20;
/// Nicknames tried when the MUC says one is taken.
const NICK_ATTEMPTS: usize = 3;
const MUC: &str = "http://jabber.org/protocol/muc";
const MUC_USER: &str = "http://jabber.org/protocol/muc#user";
const SID: &str = "urn:xmpp:sid:0";

/// Joins waiting for the MUC's answer, by (our full JID, MUC): the nickname asked for, and
/// where the answer goes (the nickname the MUC gave, or its refusal).
type PendingJoins = HashMap<
    (String, String),
    (
        String,
        tokio::sync::oneshot::Sender<Result<String, StanzaError>>,
    ),
>;

/// The portals, both ways, and the joins under way.
#[derive(Default)]
pub(super) struct Portals {
    by_muc: std::sync::RwLock<HashMap<BareJid, OwnedRoomId>>,
    by_room: std::sync::RwLock<HashMap<OwnedRoomId, BareJid>>,
    joins: std::sync::Mutex<PendingJoins>,
    /// Held while a portal is made (one at a time).
    making: tokio::sync::Mutex<()>,
    /// Held while the power levels of a portal are changed.
    power: tokio::sync::Mutex<()>,
    /// The real JIDs of occupants, by occupant JID, where their MUC shows them.
    real: std::sync::RwLock<HashMap<String, BareJid>>,
    /// The show and status last told to MUCs of each member's presence.
    told: std::sync::Mutex<HashMap<OwnedUserId, presence::Availability>>,
    /// Whether each MUC keeps an archive, as its disco#info last said.
    archives: std::sync::RwLock<HashMap<BareJid, bool>>,
    /// Queries of MUCs' archives under way: by query id, the MUC and the member's full JID.
    queries: std::sync::Mutex<HashMap<String, (BareJid, String)>>,
    /// The groupchat messages taken, whose other copies (one per member) are left.
    copies: std::sync::Mutex<copies::Copies>,
}

impl Portals {
    fn insert(&self, muc: BareJid, room: OwnedRoomId) {
        self.by_room
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(room.clone(), muc.clone());
        self.by_muc
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(muc, room);
    }

    fn remove(&self, muc: &BareJid, room: &RoomId) {
        self.by_room
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(room);
        self.by_muc
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(muc);
    }

    fn room(&self, muc: &BareJid) -> Option<OwnedRoomId> {
        self.by_muc
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(muc)
            .cloned()
    }

    fn muc(&self, room: &str) -> Option<BareJid> {
        let room = RoomId::parse(room).ok()?;
        self.by_room
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&room)
            .cloned()
    }

    fn real_jid(&self, occupant: &Jid) -> Option<BareJid> {
        self.real
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(occupant.as_str())
            .cloned()
    }

    fn remember_real_jid(&self, occupant: &Jid, real: BareJid) {
        self.real
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(occupant.to_string(), real);
    }

    fn forget_real_jid(&self, occupant: &Jid) {
        self.real
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(occupant.as_str());
    }

    fn note_archive(&self, muc: &BareJid, kept: bool) {
        self.archives
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(muc.clone(), kept);
    }

    fn archive_known(&self, muc: &BareJid) -> Option<bool> {
        self.archives
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(muc)
            .copied()
    }

    fn start_query(&self, query: &str, muc: &BareJid, own: &FullJid) {
        self.queries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(query.to_owned(), (muc.clone(), own.to_string()));
    }

    fn end_query(&self, query: &str) {
        self.queries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(query);
    }

    /// Whether a query id is one of ours, of that MUC, for that member.
    fn is_query(&self, query: &str, muc: &BareJid, to: &Jid) -> bool {
        self.queries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(query)
            .is_some_and(|(asked, own)| asked == muc && own == to.as_str())
    }

    /// The nicknames of joins under way in a MUC.
    fn joining_nicks(&self, muc: &BareJid) -> Vec<String> {
        self.joins
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|((_, joined), _)| joined == muc.as_str())
            .map(|(_, (nick, _))| nick.clone())
            .collect()
    }
}

pub(super) fn internal(error: impl std::fmt::Display) -> MatrixError {
    MatrixError::Internal(error.to_string())
}

impl Bridge {
    /// Reads the portals (at start-up) and joins their MUCs again for every member.
    pub(super) async fn portals_load(self: &std::sync::Arc<Self>) -> Result<(), BridgeError> {
        for (muc, room) in self.store.portals().await? {
            if let (Ok(muc), Ok(room)) = (BareJid::new(&muc), RoomId::parse(&room)) {
                self.portals.insert(muc, room);
            }
        }
        tokio::spawn(self.clone().self_ping_loop());
        let bridge = self.clone();
        tokio::spawn(async move {
            let sessions = match bridge.store.all_sessions().await {
                Ok(sessions) => sessions,
                Err(error) => {
                    tracing::warn!(%error, "the members of portals were not read");
                    return;
                }
            };
            for session in sessions {
                if let Err(error) = bridge.rejoin(&session).await {
                    tracing::info!(%error, muc = %session.muc_jid, user = %session.user_id, "a member of a portal did not join its MUC again");
                }
            }
        });
        Ok(())
    }

    /// Whether a stanza comes from a MUC with a portal (to one of our users).
    pub(super) fn is_from_portal(&self, from: Option<&Jid>, to: Option<&Jid>) -> bool {
        from.is_some_and(|from| self.portals.room(&from.to_bare()).is_some())
            && self.is_an_account(to)
    }

    /// The portal of a local alias `#_xmpp_…`, made when the MUC exists and has none.
    pub(super) async fn portal_for_alias(
        &self,
        alias: &RoomAliasId,
    ) -> Result<Option<OwnedRoomId>, MatrixError> {
        if !alias.alias().starts_with("_xmpp_") {
            return Ok(None);
        }
        let Ok(muc) = self.gateway.room_to_muc(RoomRef::Alias(alias)) else {
            return Ok(None);
        };
        if let Some(room) = self.portals.room(&muc) {
            return Ok(Some(room));
        }
        let _making = self.portals.making.lock().await;
        if let Some(room) = self
            .store
            .portal_of_muc(muc.as_str())
            .await
            .map_err(internal)?
        {
            let room = RoomId::parse(&room).map_err(internal)?;
            self.portals.insert(muc, room.clone());
            return Ok(Some(room));
        }
        // What is there? Only a MUC gets a portal.
        let info = match self.ask_disco_info(&muc).await.map_err(internal)? {
            Some(Iq::Result {
                payload: Some(info),
                ..
            }) => info,
            Some(Iq::Error { error, .. }) => {
                return Err(match error.defined_condition {
                    DefinedCondition::RemoteServerNotFound
                    | DefinedCondition::RemoteServerTimeout => {
                        MatrixError::BadGateway(format!("the server of {muc} cannot be reached"))
                    }
                    _ => MatrixError::NotFound(format!("there is no group chat {muc}")),
                });
            }
            _ => {
                return Err(MatrixError::BadGateway(format!("{muc} did not answer")));
            }
        };
        self.portals
            .note_archive(&muc, archive::keeps_archive(&info));
        if !is_muc(&info) {
            return Err(MatrixError::NotFound(format!("{muc} is not a group chat")));
        }
        // The MUC's own ghost makes the room (it is the room's voice: the subject, notices).
        let creator = self.muc_ghost(&muc).await?;
        let mut options = RoomOptions::private(creator, self.services.default_room_version());
        options.preset = RoomPreset::PublicChat;
        options.alias_name = Some(alias.alias().to_owned());
        options.name = room_name(&info);
        let room = create_room(&self.services, options).await?;
        let room = RoomId::parse(
            self.store
                .set_portal(muc.as_str(), room.as_str())
                .await
                .map_err(internal)?,
        )
        .map_err(internal)?;
        self.portals.insert(muc.clone(), room.clone());
        tracing::info!(room_id = %room, %muc, "made the portal of a MUC");
        if let Err(error) = self.portal_info(&room, &muc, &info).await {
            tracing::info!(%error, %muc, "the avatar of a MUC was not read");
        }
        Ok(Some(room))
    }

    /// The ghost of a MUC itself, its account made if needed.
    pub(super) async fn muc_ghost(&self, muc: &BareJid) -> Result<OwnedUserId, MatrixError> {
        let ghost = self
            .gateway
            .jid_to_user(&Jid::from(muc.clone()))
            .map_err(internal)?;
        if self.services.store.user(ghost.as_str()).await?.is_none() {
            self.services
                .store
                .create_user(ghost.as_str(), None, Some(muc.as_str()), false)
                .await?;
        }
        Ok(ghost)
    }

    /// A local user joins a portal: they join its MUC first, and the Matrix join fails with
    /// the MUC's refusal.
    pub(super) async fn portal_joining(
        &self,
        room: &RoomId,
        user: &UserId,
    ) -> Result<(), MatrixError> {
        let Some(muc) = self.portals.muc(room.as_str()) else {
            return Ok(());
        };
        if self.gateway.is_ghost(user) {
            return Ok(());
        }
        if self
            .store
            .session(room.as_str(), user.as_str())
            .await
            .map_err(internal)?
            .is_some()
        {
            return Ok(());
        }
        let own = self.gateway.user_to_jid(user).map_err(internal)?.to_bare();
        let full = own.with_resource_str(RESOURCE).map_err(internal)?;
        let name = self.display_name_of(user).await;
        // A MUC with an archive gives the history from it; another, with the join.
        let archive = self.muc_has_archive(&muc).await;
        let history = match archive {
            true => "<history maxstanzas='0'/>".to_owned(),
            false => format!("<history maxstanzas='{FIRST_HISTORY}'/>"),
        };
        let mut tried: Vec<String> = Vec::new();
        for _ in 0..NICK_ATTEMPTS {
            let nick = occupant_nick(name.as_deref(), user, |nick| {
                tried.contains(&nick.to_owned())
            })
            .map_err(internal)?;
            match self.join_muc(user, &muc, &full, &nick, &history).await {
                Ok(given) => {
                    self.store
                        .set_session(&Session {
                            room_id: room.to_string(),
                            user_id: user.to_string(),
                            muc_jid: muc.to_string(),
                            resource: RESOURCE.to_owned(),
                            nick: given.clone(),
                            // The MUC's history came with the join: what is missed from now on
                            // is asked for on joining again.
                            last_seen: Some(causeway_matrix::store::now_ms()),
                        })
                        .await
                        .map_err(internal)?;
                    tracing::info!(room_id = %room, %muc, %user, nick = %given, "a Matrix user joined a MUC");
                    if archive {
                        self.catch_up(muc, full, None);
                    }
                    return Ok(());
                }
                Err(error) if error.defined_condition == DefinedCondition::Conflict => {
                    tried.push(nick);
                }
                Err(error) => return Err(refusal(&muc, &error)),
            }
        }
        Err(MatrixError::Forbidden(format!(
            "{muc}: every nickname tried is taken ({})",
            tried.join(", ")
        )))
    }

    /// A user's display name: a local account's, or what another server says of its user
    /// (nothing if it does not answer).
    async fn display_name_of(&self, user: &UserId) -> Option<String> {
        if self.services.is_local(user) {
            return self
                .services
                .store
                .user(user.as_str())
                .await
                .ok()
                .flatten()
                .and_then(|record| record.displayname);
        }
        causeway_matrix::federation::directory::remote_profile(
            &self.services,
            user,
            Some("displayname"),
        )
        .await
        .ok()
        .and_then(|profile| profile.get("displayname")?.as_str().map(str::to_owned))
    }

    /// Sends a join to a MUC and waits for its answer: the nickname given, or the refusal.
    async fn join_muc(
        &self,
        user: &UserId,
        muc: &BareJid,
        full: &FullJid,
        nick: &str,
        history: &str,
    ) -> Result<String, StanzaError> {
        let timeout = || {
            StanzaError::new(
                xmpp_parsers::stanza_error::ErrorType::Wait,
                DefinedCondition::RemoteServerTimeout,
                "en",
                format!("{muc} did not answer"),
            )
        };
        let Ok(occupant) = muc.with_resource_str(nick) else {
            return Err(StanzaError::new(
                xmpp_parsers::stanza_error::ErrorType::Modify,
                DefinedCondition::JidMalformed,
                "en",
                format!("{nick} cannot be a nickname"),
            ));
        };
        let key = (full.to_string(), muc.to_string());
        let (sender, receiver) = tokio::sync::oneshot::channel();
        self.portals
            .joins
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key.clone(), (nick.to_owned(), sender));
        let mut presence = self
            .member_occupant_presence(user, full.clone(), Some(Jid::from(occupant)))
            .await;
        let mut x: Element = format!("<x xmlns='{MUC}'>{history}</x>")
            .parse()
            .unwrap_or_else(|_| Element::bare("x", MUC));
        // A password-protected MUC gets the password an invitation or a link gave.
        match self.store.portal_password(muc.as_str()).await {
            Ok(Some(password)) => {
                x.append_child(Element::builder("password", MUC).append(password).build());
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, %muc, "the password of a MUC could not be read"),
        }
        presence.payloads.push(x);
        self.send(Stanza::Presence(presence));
        let answer = tokio::time::timeout(JOIN_TIMEOUT, receiver).await;
        self.portals
            .joins
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&key);
        match answer {
            Ok(Ok(outcome)) => outcome,
            _ => Err(timeout()),
        }
    }

    /// Joins a member's MUC again (after a restart), asking for what was missed.
    pub(super) async fn rejoin(&self, session: &Session) -> Result<(), BridgeError> {
        let (Ok(muc), Ok(user)) = (
            BareJid::new(&session.muc_jid),
            UserId::parse(&session.user_id),
        ) else {
            return Ok(());
        };
        let full = self.session_jid(&user, session)?;
        let archive = self.muc_has_archive(&muc).await;
        let history = match (archive, session.last_seen) {
            (true, _) => "<history maxstanzas='0'/>".to_owned(),
            (false, Some(ms)) => format!(
                "<history since='{}'/>",
                super::muc::stamp_text(u64::try_from(ms + 1).unwrap_or(0))
            ),
            (false, None) => format!("<history maxstanzas='{FIRST_HISTORY}'/>"),
        };
        match self
            .join_muc(&user, &muc, &full, &session.nick, &history)
            .await
        {
            Ok(_) => {
                if archive {
                    self.catch_up(muc, full, session.last_seen);
                }
                Ok(())
            }
            Err(error) => {
                // The MUC no longer takes them: they are out of the portal too.
                self.removed_from_muc(&session.room_id, &user, &describe(&error))
                    .await
            }
        }
    }

    /// The MUC of a portal and the full JID a local member is its occupant as, if they are.
    pub(super) async fn portal_session_of(
        &self,
        room: &str,
        user: &UserId,
    ) -> Result<Option<(BareJid, FullJid)>, BridgeError> {
        let Some(muc) = self.portals.muc(room) else {
            return Ok(None);
        };
        if self.gateway.is_ghost(user) {
            return Ok(None);
        }
        let Some(session) = self.store.session(room, user.as_str()).await? else {
            return Ok(None);
        };
        Ok(Some((muc, self.session_jid(user, &session)?)))
    }

    /// The full JID a member is an occupant as: their own JID, with their session's resource.
    pub(super) fn session_jid(
        &self,
        user: &UserId,
        session: &Session,
    ) -> Result<FullJid, BridgeError> {
        Ok(self
            .gateway
            .user_to_jid(user)?
            .to_bare()
            .with_resource_str(&session.resource)
            .map_err(internal)?)
    }

    /// A member leaves the MUC (and their session ends).
    pub(super) async fn leave_muc(&self, session: &Session) -> Result<(), BridgeError> {
        self.store
            .remove_session(&session.room_id, &session.user_id)
            .await?;
        let (Ok(user), Ok(muc)) = (
            UserId::parse(&session.user_id),
            BareJid::new(&session.muc_jid),
        ) else {
            return Ok(());
        };
        let mut presence = Presence::new(PresenceType::Unavailable);
        presence.from = Some(Jid::from(self.session_jid(&user, session)?));
        presence.to = muc.with_resource_str(&session.nick).ok().map(Jid::from);
        self.send(Stanza::Presence(presence));
        tracing::info!(room_id = %session.room_id, %muc, %user, "a Matrix user left a MUC");
        Ok(())
    }

    /// The full JID a local user is an occupant of a MUC as, if they are.
    pub(super) async fn occupant_session(
        &self,
        muc: &BareJid,
        user: &UserId,
    ) -> Result<Option<FullJid>, BridgeError> {
        let Some(room) = self.portals.room(muc) else {
            return Ok(None);
        };
        Ok(self
            .portal_session_of(room.as_str(), user)
            .await?
            .map(|(_, own)| own))
    }

    /// Whether a message is a private message from an occupant of a MUC: one from a MUC with
    /// a portal, or one that says it is (XEP-0045 §7.5, `<x xmlns='…muc#user'/>`) from a MUC
    /// without one. It takes the path of direct chats, with the occupant as the contact.
    pub(super) fn is_private_in_muc(&self, message: &Message) -> bool {
        matches!(message.type_, MessageType::Chat | MessageType::Normal)
            && message.from.as_ref().is_some_and(|from| {
                from.resource().is_some()
                    && (self.portals.room(&from.to_bare()).is_some()
                        || message.payloads.iter().any(|p| p.is("x", MUC_USER)))
            })
    }

    /// What a local member does to the MUC itself (the topic, kicks and bans of occupants,
    /// leaving) goes to it from their own JID; their messages, reactions and retractions go
    /// by the path of direct chats (`to_xmpp.rs`).
    pub(super) async fn portal_event(&self, row: &EventRow) -> Result<(), BridgeError> {
        let Some(muc) = self.portals.muc(&row.room_id) else {
            return Ok(());
        };
        let pdu = Pdu::from_stored(&row.event_id, &row.json)?;
        let content = pdu.content_value();
        let membership = content.get("membership").and_then(Value::as_str);
        let target = pdu
            .state_key
            .as_deref()
            .and_then(|key| UserId::parse(key).ok());
        if row.event_type == "m.room.member"
            && membership != Some("join")
            && let Some(target) = &target
            && let Some(session) = self.store.session(&row.room_id, target.as_str()).await?
        {
            // A member out of the portal, however they went, leaves the MUC.
            return self.leave_muc(&session).await;
        }
        let Ok(sender) = UserId::parse(&row.sender) else {
            return Ok(());
        };
        let Some((_, own)) = self.portal_session_of(&row.room_id, &sender).await? else {
            return Ok(());
        };
        match row.event_type.as_str() {
            "m.room.topic" => {
                let topic = content
                    .get("topic")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                let mut message = topic_to_subject(&topic);
                message.from = Some(Jid::from(own));
                message.to = Some(Jid::from(muc));
                message.id = Some(Id(row.event_id.clone()));
                self.send(Stanza::Message(message));
            }
            "m.room.power_levels" => {
                self.portal_power_change(row, muc, own, &content).await?;
            }
            "m.room.member" => {
                let (Some(target), Some(membership)) = (target, membership) else {
                    return Ok(());
                };
                let ban = match membership {
                    "ban" => true,
                    "leave" => false,
                    "join" if target == sender => {
                        return self.nick_change(row, &muc, own, &content).await;
                    }
                    _ => return Ok(()),
                };
                let reason = content
                    .get("reason")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                self.portal_removal(row, muc, own, &target, ban, reason)
                    .await?;
            }
            _ => {}
        }
        Ok(())
    }
}

impl Bridge {
    /// A member's new display name in the portal is a new nickname in the MUC (XEP-0045
    /// §7.6); the MUC's answer (its presence from the new nickname) updates the session.
    async fn nick_change(
        &self,
        row: &EventRow,
        muc: &BareJid,
        own: FullJid,
        content: &Value,
    ) -> Result<(), BridgeError> {
        let Some(name) = content.get("displayname").and_then(Value::as_str) else {
            return Ok(());
        };
        let before = self
            .services
            .store
            .replaced_state(
                &row.room_id,
                "m.room.member",
                &row.sender,
                row.stream_ordering,
            )
            .await?
            .and_then(|(_, _, previous)| {
                previous
                    .get("displayname")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            });
        if before.as_deref() == Some(name) {
            return Ok(());
        }
        let user = UserId::parse(&row.sender).map_err(internal)?;
        let nick = occupant_nick(Some(name), &user, |_| false).map_err(internal)?;
        let Some(session) = self.store.session(&row.room_id, user.as_str()).await? else {
            return Ok(());
        };
        if session.nick == nick {
            return Ok(());
        }
        // A nickname change is a whole presence: it keeps the member's show and status.
        let presence = self
            .member_occupant_presence(&user, own, muc.with_resource_str(&nick).ok().map(Jid::from))
            .await;
        self.send(Stanza::Presence(presence));
        Ok(())
    }
}

/// Whether a disco#info is a MUC's (identity `conference`/`text`).
fn is_muc(info: &Element) -> bool {
    info.children().any(|child| {
        child.name() == "identity"
            && child.attr("category") == Some("conference")
            && child.attr("type") == Some("text")
    })
}

/// The Matrix error of a MUC's refusal of a join.
fn refusal(muc: &BareJid, error: &StanzaError) -> MatrixError {
    let text = format!("{muc}: {}", describe(error));
    match error.defined_condition {
        DefinedCondition::ItemNotFound => MatrixError::NotFound(text),
        DefinedCondition::RemoteServerNotFound | DefinedCondition::RemoteServerTimeout => {
            MatrixError::BadGateway(text)
        }
        _ => MatrixError::Forbidden(text),
    }
}

/// A refusal in words: its condition, and the MUC's text when it gave one.
pub(super) fn describe(error: &StanzaError) -> String {
    let condition = format!("{:?}", error.defined_condition);
    match error.texts.values().next() {
        Some(text) => format!("{text} ({condition})"),
        None => condition,
    }
}
