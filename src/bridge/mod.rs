//! The bridge: XMPP users and the server's Matrix accounts talk as if on one network.
//!
//! - An XMPP user appears in Matrix as a ghost, a local account without login
//!   (`@_xmpp_bob=40prosody.test:gw.test`, see `docs/mapping.md`), made when first needed.
//! - A chat between a Matrix user and an XMPP user is a direct Matrix room of the two
//!   (`xmpp_direct_rooms`), made once by whichever side speaks first and used from then on.
//!   The Matrix user is a local account or another server's user (`federated.rs`): a room
//!   made here invites them through their server; a room of their server is joined by the
//!   ghost through it.
//! - XMPP → Matrix: [`Bridge`] is the XMPP side's [`StanzaHandler`]; messages to local
//!   accounts become events of the ghost (`from_xmpp.rs`), everything else goes to the default
//!   router.
//! - Matrix → XMPP: one task reads the event stream from where it stopped (a cursor kept in
//!   the store) and sends what local accounts do in direct rooms to the XMPP user
//!   (`to_xmpp.rs`); events of ghosts never go back.
//! - Every bridged message is recorded once with its XMPP id (`xmpp_messages`), which is how
//!   replies, corrections, retractions, reactions and markers find their event, and how a
//!   stanza sent twice is stored once.

mod cache;
mod delivery;
mod error;
mod federated;
mod from_xmpp;
mod muc;
mod portal;
mod presence;
mod profile;
pub mod store;
mod to_xmpp;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock, Weak};

use causeway_mapping::address::Gateway;
use causeway_matrix::Services;
use causeway_matrix::create_room::{RoomOptions, create_room, member_content};
use causeway_matrix::pdu::canonical_content;
use causeway_matrix::rooms::NewLocalEvent;
use causeway_matrix::services::UserProvisioner;
use causeway_xmpp::router::{DefaultRouter, Domains};
use causeway_xmpp::server::{S2s, StanzaHandler};
use causeway_xmpp::stanza::Stanza;
use ruma::api::client::room::create_room::v3::RoomPreset;
use ruma::events::room::message::{Relation, RoomMessageEventContent};
use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde_json::{Value, json};
use xmpp_parsers::jid::{BareJid, Jid};
use xmpp_parsers::message::{Message, MessageType};

pub use error::BridgeError;
pub use muc::Refusal;

/// The device name under which ghosts' events are recorded with their XMPP ids.
const XMPP_DEVICE: &str = "xmpp";

/// A lock per (local account, XMPP user).
type PairLocks = HashMap<(OwnedUserId, Jid), Arc<tokio::sync::Mutex<()>>>;

/// The bridge between the XMPP side and the homeserver.
pub struct Bridge {
    services: Arc<Services>,
    gateway: Gateway,
    router: DefaultRouter,
    s2s: OnceLock<Weak<S2s>>,
    /// The bridge itself, for tasks it starts.
    me: Weak<Bridge>,
    /// One lock per (local account, XMPP user): a pair's messages are handled in order, and
    /// its direct room is made once.
    pairs: std::sync::Mutex<PairLocks>,
    /// The presence of XMPP users' resources (in memory: presence is sent again on
    /// reconnection).
    resources: std::sync::Mutex<presence::Resources>,
    /// The presence last sent for each local account.
    told_presence: std::sync::Mutex<presence::ToldPresence>,
    /// Requests sent, waiting for their answers.
    pending: std::sync::Mutex<profile::Pending>,
    cache: std::sync::Mutex<cache::Cache>,
    /// Held while the subscriptions of a pair are read and changed.
    subscriptions: tokio::sync::Mutex<()>,
    /// Messages handed to the XMPP side whose outcome is not recorded yet.
    in_flight: delivery::InFlight,
    /// The bridge's own tables.
    store: store::BridgeStore,
    /// The rooms with XMPP occupants.
    muc: muc::MucState,
    /// The portals of XMPP MUCs.
    portals: portal::Portals,
}

/// A random id for stanzas that are no message of their own.
fn random_id() -> String {
    causeway_matrix::services::random_string(12)
}

impl Bridge {
    /// The bridge, its tables brought up to date.
    pub async fn new(
        services: Arc<Services>,
        domains: Domains,
        version: &str,
    ) -> Result<Arc<Bridge>, BridgeError> {
        let gateway = Gateway::new(services.server_name.clone(), &domains.muc)?;
        let store = store::BridgeStore::open(services.store.clone()).await?;
        let bridge = Arc::new_cyclic(|me| Bridge {
            gateway,
            router: DefaultRouter::new(domains, version),
            s2s: OnceLock::new(),
            me: me.clone(),
            pairs: std::sync::Mutex::default(),
            resources: std::sync::Mutex::default(),
            told_presence: std::sync::Mutex::default(),
            pending: std::sync::Mutex::default(),
            cache: std::sync::Mutex::default(),
            subscriptions: tokio::sync::Mutex::default(),
            in_flight: delivery::InFlight::default(),
            store,
            muc: muc::MucState::default(),
            portals: portal::Portals::default(),
            services: services.clone(),
        });
        services.set_provisioner(Arc::new(Ghosts {
            bridge: Arc::downgrade(&bridge),
        }));
        Ok(bridge)
    }

    /// Connects the bridge to the running XMPP side and starts sending to it.
    pub fn attach(self: &Arc<Self>, s2s: &Arc<S2s>) {
        let _ = self.s2s.set(Arc::downgrade(s2s));
        let bridge = self.clone();
        tokio::spawn(async move {
            if let Err(error) = bridge.muc_load(bridge.sent_up_to().await).await {
                tracing::error!(%error, "the occupants of rooms could not be read");
            }
            if let Err(error) = bridge.portals_load().await {
                tracing::error!(%error, "the portals could not be read");
            }
            bridge.outbox_restart().await;
            tokio::spawn(bridge.clone().send_loop());
            bridge.outbox_loop().await;
        });
        let bridge = self.clone();
        tokio::spawn(async move { bridge.typing_loop().await });
        let bridge = self.clone();
        tokio::spawn(async move {
            if let Err(error) = bridge.probe_contacts().await {
                tracing::warn!(%error, "the presence of XMPP contacts was not asked for");
            }
        });
    }

    pub fn gateway(&self) -> &Gateway {
        &self.gateway
    }

    /// The bridge's own tables.
    pub fn store(&self) -> &store::BridgeStore {
        &self.store
    }

    /// Sends a stanza over the XMPP side, if it still runs.
    fn send(&self, stanza: Stanza) {
        match self.s2s.get().and_then(Weak::upgrade) {
            Some(s2s) => s2s.send(stanza),
            None => tracing::debug!("the XMPP side is not running: a stanza is not sent"),
        }
    }

    fn pair_lock(&self, local: &UserId, remote: &Jid) -> Arc<tokio::sync::Mutex<()>> {
        let mut pairs = self
            .pairs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if pairs.len() > 10_000 {
            pairs.retain(|_, lock| Arc::strong_count(lock) > 1);
        }
        pairs
            .entry((local.to_owned(), remote.clone()))
            .or_default()
            .clone()
    }

    /// The ghost of an XMPP user, its account made if needed.
    async fn ghost(&self, jid: &BareJid) -> Result<OwnedUserId, BridgeError> {
        let ghost = self.ghost_id(jid)?;
        if self.ghost_known(&ghost) {
            return Ok(ghost);
        }
        if make_ghost(&self.services, &ghost, jid).await? {
            self.refresh_profile(&ghost, jid);
        } else if self
            .services
            .store
            .user(ghost.as_str())
            .await?
            .is_some_and(|user| user.deactivated)
        {
            // Erased (or deactivated) by an administrator: not bridged any more.
            return Err(BridgeError::Matrix(
                causeway_matrix::error::Error::Forbidden(format!(
                    "{jid} is not bridged to this server any more"
                )),
            ));
        }
        self.remember_ghost(&ghost);
        Ok(ghost)
    }

    /// The id of an XMPP user's ghost, whether or not its account exists yet.
    fn ghost_id(&self, jid: &BareJid) -> Result<OwnedUserId, BridgeError> {
        self.ghost_id_of(&Jid::from(jid.clone()))
    }

    /// The id of the ghost of an XMPP user or of a MUC occupant.
    fn ghost_id_of(&self, jid: &Jid) -> Result<OwnedUserId, BridgeError> {
        let ghost = self.gateway.jid_to_user(jid)?;
        if !self.gateway.is_ghost(&ghost) {
            return Err(BridgeError::NotAcceptable(format!(
                "{jid} is an address of this server"
            )));
        }
        Ok(ghost)
    }

    /// A local account that can receive: it exists and is not deactivated.
    async fn local_account(&self, jid: &BareJid) -> Result<OwnedUserId, BridgeError> {
        let user = self
            .gateway
            .jid_to_user(&Jid::from(jid.clone()))
            .map_err(|_| BridgeError::NoSuchUser(jid.to_string()))?;
        if !self.services.is_local(&user) || self.gateway.is_ghost(&user) {
            return Err(BridgeError::NoSuchUser(jid.to_string()));
        }
        match self.services.store.user(user.as_str()).await? {
            Some(record) if !record.deactivated => Ok(user),
            _ => Err(BridgeError::NoSuchUser(jid.to_string())),
        }
    }

    /// The Matrix user an address of our domain stands for, to chat with: a local account
    /// that can receive or, when this server federates with theirs, another server's user
    /// (`carol%matrix.org@example.org`).
    async fn matrix_user(&self, jid: &BareJid) -> Result<OwnedUserId, BridgeError> {
        let user = self
            .gateway
            .jid_to_user(&Jid::from(jid.clone()))
            .map_err(|_| BridgeError::NoSuchUser(jid.to_string()))?;
        if self.services.is_local(&user) {
            return self.local_account(jid).await;
        }
        let federation = &self.services.config.federation;
        if !federation.enabled
            || !causeway_matrix::federation::acl::configured(federation, user.server_name())
        {
            return Err(BridgeError::NoSuchUser(jid.to_string()));
        }
        Ok(user)
    }

    /// The direct room of a Matrix user and an XMPP user (a bare JID, or a MUC occupant's
    /// full JID for private messages in a MUC), made (by the ghost, inviting the Matrix user)
    /// when there is none. The caller holds the pair's lock.
    async fn direct_room(
        &self,
        local: &UserId,
        ghost: &UserId,
        remote: &Jid,
        create: bool,
    ) -> Result<Option<OwnedRoomId>, BridgeError> {
        if let Some(room) = self.room_of_pair(local, remote).await? {
            if create {
                self.bring_back(&room, local, ghost).await?;
            }
            return Ok(Some(room));
        }
        if !create {
            return Ok(None);
        }
        // The ghost's account is made when a room needs it, not for every stanza; a domain's
        // users get rooms at a bounded pace.
        self.services
            .limits
            .remote_rooms
            .check(&remote.domain().as_str().to_ascii_lowercase())?;
        match remote.resource() {
            None => {
                self.ghost(&remote.to_bare()).await?;
            }
            Some(nick) => self.occupant_account(ghost, remote, nick.as_str()).await?,
        }
        // The room is in the account's `m.direct` before the invite reaches it, so that its
        // client shows the invite as a direct chat at once. The invitee has the creator's power,
        // as in a trusted private chat.
        let mut options =
            RoomOptions::private(ghost.to_owned(), self.services.default_room_version());
        options.preset = RoomPreset::TrustedPrivateChat;
        let mut users = serde_json::Map::new();
        users.insert("users".into(), json!({ local.as_str(): 100 }));
        options.power_level_override = Some(users);
        let room = create_room(&self.services, options).await?;
        self.record_room_of_pair(local, remote, &room, false)
            .await?;
        if self.services.is_local(local) {
            self.mark_direct(local, ghost, &room).await?;
        }
        self.bring_back(&room, local, ghost).await?;
        tracing::info!(room_id = %room, local = %local, remote = %remote, "made a direct room for an XMPP contact");
        Ok(Some(room))
    }

    /// Invites the Matrix user when they are not in the direct room (not yet, or not since
    /// they left), so that a new message reaches them; another server's user through their
    /// server, which signs the invite (an unreachable server fails the message, which the XMPP
    /// user is told of).
    async fn bring_back(
        &self,
        room: &RoomId,
        local: &UserId,
        ghost: &UserId,
    ) -> Result<(), BridgeError> {
        let rooms = &self.services.rooms;
        let membership = rooms.membership(room, local).await?;
        if matches!(membership.as_deref(), Some("join" | "invite" | "ban")) {
            return Ok(());
        }
        if rooms.membership(room, ghost).await?.as_deref() != Some("join") {
            return Ok(());
        }
        let mut content = member_content(&self.services, local, "invite").await?;
        content["is_direct"] = json!(true);
        if self.services.is_local(local) {
            self.append(room, ghost, "m.room.member", Some(local.as_str()), content)
                .await?;
        } else {
            causeway_matrix::federation::invites::invite_remote(
                &self.services,
                room,
                ghost,
                local,
                canonical_content(content)?,
            )
            .await?;
        }
        Ok(())
    }

    /// Adds a room to the direct chats with `ghost` in the account data of `local`
    /// (`m.direct`), as clients do for the direct chats they make.
    async fn mark_direct(
        &self,
        local: &UserId,
        ghost: &UserId,
        room: &RoomId,
    ) -> Result<(), BridgeError> {
        let store = &self.services.store;
        let mut direct = store
            .account_data(local.as_str(), "", "m.direct")
            .await?
            .and_then(|text| serde_json::from_str::<serde_json::Map<String, Value>>(&text).ok())
            .unwrap_or_default();
        let rooms = direct
            .entry(ghost.to_string())
            .or_insert_with(|| Value::Array(vec![]));
        if !rooms.is_array() {
            *rooms = Value::Array(vec![]);
        }
        if let Value::Array(list) = rooms
            && !list.iter().any(|r| r.as_str() == Some(room.as_str()))
        {
            list.push(json!(room));
            store
                .set_account_data(
                    local.as_str(),
                    "",
                    "m.direct",
                    &Value::Object(direct).to_string(),
                )
                .await?;
        }
        Ok(())
    }

    /// Whether a user's membership of a room is `membership`.
    async fn membership_is(
        &self,
        room: &RoomId,
        user: &UserId,
        membership: &str,
    ) -> Result<bool, BridgeError> {
        Ok(self.services.rooms.membership(room, user).await?.as_deref() == Some(membership))
    }

    /// Appends an event of `sender`.
    async fn append(
        &self,
        room: &RoomId,
        sender: &UserId,
        event_type: &str,
        state_key: Option<&str>,
        content: Value,
    ) -> Result<ruma::OwnedEventId, BridgeError> {
        let appended = self
            .services
            .rooms
            .append(
                room,
                NewLocalEvent::new(sender, event_type, state_key, canonical_content(content)?),
            )
            .await?;
        Ok(appended.event_id)
    }
}

impl StanzaHandler for Bridge {
    fn handle(&self, stanza: Stanza) -> Pin<Box<dyn Future<Output = Vec<Stanza>> + Send + '_>> {
        Box::pin(async move {
            match stanza {
                stanza if self.is_for_muc(stanza.to()) => self.muc_stanza(stanza).await,
                Stanza::Message(message) if self.is_invitation(&message) => {
                    self.portal_invitation(message);
                    vec![]
                }
                Stanza::Presence(presence)
                    if self.is_from_portal(presence.from.as_ref(), presence.to.as_ref()) =>
                {
                    self.portal_presence(presence).await;
                    vec![]
                }
                Stanza::Message(message)
                    if self.is_from_portal(message.from.as_ref(), message.to.as_ref())
                        && !self.is_private_in_muc(&message) =>
                {
                    self.portal_message(message).await;
                    vec![]
                }
                Stanza::Message(message) if self.is_for_an_account(&message) => {
                    self.message_from_xmpp(message).await.into_iter().collect()
                }
                Stanza::Presence(presence) if self.is_an_account(presence.to.as_ref()) => {
                    self.presence_from_xmpp(presence).await
                }
                Stanza::Iq(iq) => match self.iq(iq.clone()).await {
                    Some(replies) => replies,
                    None => self.router.answer(&Stanza::Iq(iq)).into_iter().collect(),
                },
                stanza => self.router.answer(&stanza).into_iter().collect(),
            }
        })
    }
}

impl Bridge {
    /// An address of a user of our domain (not the domain itself, nor the MUC service).
    fn is_an_account(&self, to: Option<&Jid>) -> bool {
        to.is_some_and(|to| to.node().is_some() && to.domain().as_str() == self.gateway.domain())
    }

    /// A message to a user of our domain, or an error about one sent by a local account.
    fn is_for_an_account(&self, message: &Message) -> bool {
        (self.is_an_account(message.to.as_ref()) && message.type_ != MessageType::Groupchat)
            || message.type_ == MessageType::Error
    }

    /// A notice of `sender` in a room.
    async fn notice_in(
        &self,
        room: &RoomId,
        sender: &UserId,
        text: String,
    ) -> Result<ruma::OwnedEventId, BridgeError> {
        let content = RoomMessageEventContent::notice_plain(text);
        self.append_content(room, sender, &content).await
    }

    /// A notice of `sender` in reply to an event.
    async fn notice_replying(
        &self,
        room: &RoomId,
        sender: &UserId,
        event: &ruma::EventId,
        text: String,
    ) -> Result<ruma::OwnedEventId, BridgeError> {
        let mut content = RoomMessageEventContent::notice_plain(text);
        content.relates_to = Some(Relation::Reply(
            ruma::events::relation::Reply::with_event_id(event.to_owned()),
        ));
        self.append_content(room, sender, &content).await
    }

    /// Replaces the text of a notice of `sender` (an edit, `m.replace`).
    async fn correct(
        &self,
        room: &RoomId,
        sender: &UserId,
        notice: &ruma::EventId,
        text: String,
    ) -> Result<(), BridgeError> {
        let new = RoomMessageEventContent::notice_plain(text.clone());
        let mut content = RoomMessageEventContent::notice_plain(format!("* {text}"));
        content.relates_to = Some(Relation::Replacement(
            ruma::events::relation::Replacement::new(notice.to_owned(), new.into()),
        ));
        self.append_content(room, sender, &content).await?;
        Ok(())
    }

    async fn append_content(
        &self,
        room: &RoomId,
        sender: &UserId,
        content: &RoomMessageEventContent,
    ) -> Result<ruma::OwnedEventId, BridgeError> {
        let value = serde_json::to_value(content)
            .map_err(|e| causeway_matrix::error::Error::Internal(e.to_string()))?;
        self.append(room, sender, "m.room.message", None, value)
            .await
    }
}

/// Makes the account of a ghost: no password (it cannot log in), the JID as its name until
/// the XMPP user's own name is known (from their vCard). Says whether the account is new.
async fn make_ghost(
    services: &Services,
    ghost: &UserId,
    jid: &BareJid,
) -> Result<bool, BridgeError> {
    if services.store.user(ghost.as_str()).await?.is_some() {
        return Ok(false);
    }
    // A domain's users get accounts at a bounded pace.
    services
        .limits
        .remote_accounts
        .check(&jid.domain().as_str().to_ascii_lowercase())?;
    let made = services
        .store
        .create_user(ghost.as_str(), None, Some(jid.as_str()), false)
        .await?;
    if made {
        tracing::debug!(ghost = %ghost, %jid, "made the account of an XMPP user");
    }
    Ok(made)
}

/// Makes ghosts' accounts when a local user invites or looks up an XMPP user.
struct Ghosts {
    bridge: Weak<Bridge>,
}

impl UserProvisioner for Ghosts {
    fn provision<'a>(
        &'a self,
        user_id: &'a UserId,
    ) -> Pin<Box<dyn Future<Output = Result<bool, causeway_matrix::error::Error>> + Send + 'a>>
    {
        Box::pin(async move {
            let Some(bridge) = self.bridge.upgrade() else {
                return Ok(false);
            };
            if !bridge.gateway.is_ghost(user_id) {
                return Ok(false);
            }
            let Ok(jid) = bridge.gateway.user_to_jid(user_id) else {
                return Ok(false);
            };
            match bridge.ghost(&jid.to_bare()).await {
                Ok(_) => Ok(true),
                Err(BridgeError::Matrix(error)) => Err(error),
                Err(BridgeError::Store(error)) => Err(error.into()),
                Err(_) => Ok(false),
            }
        })
    }

    fn room_for_alias<'a>(
        &'a self,
        alias: &'a ruma::RoomAliasId,
    ) -> Pin<
        Box<
            dyn Future<Output = Result<Option<OwnedRoomId>, causeway_matrix::error::Error>>
                + Send
                + 'a,
        >,
    > {
        Box::pin(async move {
            match self.bridge.upgrade() {
                Some(bridge) => bridge.portal_for_alias(alias).await,
                None => Ok(None),
            }
        })
    }

    fn joining<'a>(
        &'a self,
        room_id: &'a RoomId,
        user_id: &'a UserId,
    ) -> Pin<Box<dyn Future<Output = Result<(), causeway_matrix::error::Error>> + Send + 'a>> {
        Box::pin(async move {
            match self.bridge.upgrade() {
                Some(bridge) => bridge.portal_joining(room_id, user_id).await,
                None => Ok(()),
            }
        })
    }

    fn invited_remotely(
        &self,
        room_id: OwnedRoomId,
        user_id: OwnedUserId,
        inviter: OwnedUserId,
        is_direct: bool,
    ) {
        let Some(bridge) = self.bridge.upgrade() else {
            return;
        };
        if !bridge.gateway.is_ghost(&user_id) {
            return;
        }
        tokio::spawn(async move {
            if let Err(error) = bridge
                .ghost_invited_remotely(&room_id, &user_id, &inviter, is_direct)
                .await
            {
                tracing::warn!(%error, room_id = %room_id, ghost = %user_id, %inviter, "an invite of an XMPP user to another server's room was not answered");
            }
        });
    }

    /// An account was erased: a local account's messages still queued for XMPP go; of an XMPP
    /// user's ghost, the messages still queued for them and the subscriptions with them.
    fn erased<'a>(
        &'a self,
        user_id: &'a UserId,
    ) -> Pin<Box<dyn Future<Output = Result<(), causeway_matrix::error::Error>> + Send + 'a>> {
        Box::pin(async move {
            let Some(bridge) = self.bridge.upgrade() else {
                return Ok(());
            };
            let internal = |error: store::BridgeStoreError| {
                causeway_matrix::error::Error::Internal(error.to_string())
            };
            if !bridge.gateway.is_ghost(user_id) {
                let dropped = bridge
                    .store
                    .forget_local_user(user_id.as_str())
                    .await
                    .map_err(internal)?;
                tracing::debug!(%user_id, dropped, "messages of an erased account to XMPP dropped");
                return Ok(());
            }
            let Ok(jid) = bridge.gateway.user_to_jid(user_id) else {
                return Ok(());
            };
            let jid = jid.to_bare();
            let dropped = bridge
                .store
                .forget_remote_user(jid.as_str())
                .await
                .map_err(internal)?;
            bridge.forget_ghost(user_id);
            tracing::info!(%jid, dropped, "the traces of an erased XMPP user are gone");
            Ok(())
        })
    }
}
