//! XEP-0045 presence to a room: joining (the ghost joins the Matrix room, the occupant gets
//! the room), nickname changes, leaving.

use causeway_mapping::address::MatrixRoom;
use causeway_mapping::content::presence::{MatrixPresence, presence_to_matrix};
use causeway_matrix::api::client::membership::{join_as, leave_as, room_of, update_member};
use causeway_matrix::error::Error as MatrixError;
use causeway_xmpp::stanza::Stanza;
use ruma::{OwnedRoomId, OwnedRoomOrAliasId, OwnedServerName, RoomId, UserId};
use serde_json::{Value, json};
use xmpp_parsers::jid::{BareJid, FullJid, Jid};
use xmpp_parsers::muc::Muc;
use xmpp_parsers::muc::muc::History;
use xmpp_parsers::presence::{Presence, Type as PresenceType};
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType};

use super::roster::MemberPresence;
use super::{MUC, RoomView, refused};
use crate::bridge::store::{Occupant, bare_of};
use crate::bridge::{Bridge, BridgeError};

/// The status codes of an occupant's own presence in a room: its own (110), the room shows
/// real JIDs (100), and keeps its history (170).
const SELF_STATUSES: &[u16] = &[110, 100, 170];
/// The same for the occupant whose join made the room (201).
const CREATOR_STATUSES: &[u16] = &[110, 100, 170, 201];

impl Bridge {
    /// Presence to a room: a join, a nickname change, a leave.
    pub(super) async fn muc_presence(&self, presence: Presence) -> Vec<Stanza> {
        let (Some(from), Some(to)) = (presence.from.clone(), presence.to.clone()) else {
            return vec![];
        };
        // Occupants are resources; presence of a bare JID or a server has no occupant.
        let Ok(from) = from.try_into_full() else {
            return vec![];
        };
        match presence.type_ {
            PresenceType::Unavailable | PresenceType::Error => {
                if let Err(error) = self.occupant_leaves(&from, &to.to_bare(), true).await {
                    tracing::warn!(%error, occupant = %from, room = %to, "an occupant's leave was not applied");
                }
                vec![]
            }
            PresenceType::None => match self.occupant_joins(&presence, &from, &to).await {
                Ok(()) => vec![],
                Err(error) => {
                    tracing::debug!(%error, occupant = %from, room = %to, "a join was refused");
                    let mut answer = Presence::new(PresenceType::Error);
                    answer.from = Some(to.clone());
                    answer.to = Some(Jid::from(from));
                    answer.id = presence.id.clone();
                    answer.payloads.push(minidom::Element::bare("x", MUC));
                    answer.payloads.push(error.to_stanza_error().into());
                    vec![Stanza::Presence(answer)]
                }
            },
            // Subscriptions and probes of rooms mean nothing.
            _ => vec![],
        }
    }

    /// The Matrix room of a MUC address, and servers to join it through.
    pub(super) async fn room_of_address(
        &self,
        room_jid: &BareJid,
    ) -> Result<(OwnedRoomId, Vec<OwnedServerName>), BridgeError> {
        let not_found =
            |text: String| refused(ErrorType::Cancel, DefinedCondition::ItemNotFound, text);
        let named: OwnedRoomOrAliasId = match self.gateway.muc_to_room(room_jid) {
            Ok(MatrixRoom::Alias(alias)) => alias.into(),
            Ok(MatrixRoom::Id(id)) => id.into(),
            Ok(MatrixRoom::Portal(_)) | Err(_) => {
                return Err(not_found(format!(
                    "{room_jid} is not the address of a room"
                )));
            }
        };
        let mut via = Vec::new();
        let room =
            room_of(&self.services, &named, &mut via)
                .await
                .map_err(|error| match error {
                    MatrixError::NotFound(text) => not_found(text),
                    MatrixError::BadGateway(text) => refused(
                        ErrorType::Cancel,
                        DefinedCondition::RemoteServerNotFound,
                        text,
                    ),
                    error => BridgeError::Matrix(error),
                })?;
        // A room this server has no copy of is joined through other servers: those an alias
        // named, or the room id's own. With neither, or named as this server's, it is not.
        let named: &ruma::RoomOrAliasId = &named;
        let ours = match <&ruma::RoomAliasId>::try_from(named) {
            Ok(alias) => alias.server_name() == self.services.server_name,
            Err(_) => room
                .server_name()
                .is_none_or(|server| server == self.services.server_name),
        };
        let reachable = !via.is_empty() || room.server_name().is_some();
        if (ours || !reachable) && !self.services.rooms.exists(&room).await? {
            return Err(not_found(format!("there is no room {room_jid}")));
        }
        Ok((room, via))
    }

    /// The Matrix room of a MUC address, when this server has a copy of it (to read it);
    /// `item-not-found` otherwise.
    pub(super) async fn known_room(&self, room_jid: &BareJid) -> Result<OwnedRoomId, BridgeError> {
        let (room, _) = self.room_of_address(room_jid).await?;
        if !self.services.rooms.exists(&room).await? {
            return Err(refused(
                ErrorType::Cancel,
                DefinedCondition::ItemNotFound,
                format!("this server is not in {room_jid}: join it to see it"),
            ));
        }
        Ok(room)
    }

    /// A resource joins a room (or, already in it, changes its nickname).
    async fn occupant_joins(
        &self,
        presence: &Presence,
        from: &FullJid,
        to: &Jid,
    ) -> Result<(), BridgeError> {
        let room_jid = to.to_bare();
        let Some(nick) = to.resource().map(|nick| nick.as_str().to_owned()) else {
            return Err(refused(
                ErrorType::Modify,
                DefinedCondition::JidMalformed,
                "a nickname is needed to join a room",
            ));
        };
        let history = match presence.payloads.iter().find(|p| p.is("x", MUC)) {
            Some(element) => {
                Muc::try_from(element.clone())
                    .map_err(|error| {
                        refused(
                            ErrorType::Modify,
                            DefinedCondition::BadRequest,
                            format!("the join request is malformed: {error}"),
                        )
                    })?
                    .history
            }
            None => None,
        };
        let bare = from.to_bare();
        let (room, via, created) = match self.room_of_address(&room_jid).await {
            Ok((room, via)) => (room, via, false),
            // A room nobody has made yet: made now, if the user may.
            Err(BridgeError::Refused(refusal))
                if refusal.condition == DefinedCondition::ItemNotFound
                    && self
                        .ghost_id(&bare)
                        .is_ok_and(|ghost| self.may_create_for(&ghost)) =>
            {
                let ghost = self.ghost(&bare).await?;
                match self.create_for_join(&room_jid, &ghost).await? {
                    Some(room) => (room, vec![], true),
                    None => return Err(BridgeError::Refused(refusal)),
                }
            }
            Err(error) => return Err(error),
        };
        // Each domain's users join at a bounded pace.
        self.services
            .limits
            .remote_events
            .check(&bare.domain().as_str().to_ascii_lowercase())?;
        let ghost = self.ghost(&bare).await?;
        let occupants = self.store.occupants(room.as_str()).await?;
        if let Some(current) = occupants.iter().find(|o| o.jid == from.as_str()) {
            if current.nick == nick {
                // Presence of an occupant in the room: their availability.
                return self.occupant_available(&ghost, presence).await;
            }
            return self.change_nick(&room, &ghost, &bare, &nick).await;
        }
        if let Some(other) = occupants.iter().find(|o| bare_of(&o.jid) == bare.as_str())
            && other.nick != nick
        {
            return Err(refused(
                ErrorType::Cancel,
                DefinedCondition::Conflict,
                format!("you are in this room as {} already", other.nick),
            ));
        }
        let exists = self.services.rooms.exists(&room).await?;
        if exists {
            self.may_join(&room, &ghost, &nick).await?;
        }
        let content = json!({ "displayname": nick });
        join_as(&self.services, &room, &ghost, Some(&content), &via)
            .await
            .map_err(|error| join_refused(error, exists))?;
        if !exists {
            // A room of another server: what could not be checked before, now.
            if let Err(error) = self.may_join(&room, &ghost, &nick).await {
                let _ = leave_as(&self.services, &room, &ghost, None).await;
                return Err(error);
            }
            self.fetch_history(&room, history.as_ref()).await;
        }
        self.set_room_name(&room, &ghost, &nick).await?;
        self.enter(&room, &room_jid, from, &nick, history.as_ref(), created)
            .await?;
        self.occupant_available(&ghost, presence).await
    }

    /// An occupant's show and status are their ghost's Matrix presence, which the room's
    /// members see and its other occupants are told (`muc_member_presence`).
    async fn occupant_available(
        &self,
        ghost: &UserId,
        presence: &Presence,
    ) -> Result<(), BridgeError> {
        if let Some(matrix) = presence_to_matrix(presence) {
            self.set_ghost_presence(ghost, &matrix).await?;
        }
        Ok(())
    }

    /// What keeps a ghost out of a room, or from a nickname in it: an encrypted room (the
    /// gateway cannot read it), a ban, an invitation it does not have, a nickname taken.
    async fn may_join(&self, room: &RoomId, ghost: &UserId, nick: &str) -> Result<(), BridgeError> {
        let rooms = &self.services.rooms;
        if rooms
            .state_event(room, "m.room.encryption", "")
            .await?
            .is_some()
        {
            return Err(refused(
                ErrorType::Cancel,
                DefinedCondition::NotAcceptable,
                "this room is end-to-end encrypted: the gateway cannot read or send its messages \
                 for XMPP users",
            ));
        }
        let membership = rooms.membership(room, ghost).await?;
        if membership.as_deref() == Some("ban") {
            return Err(refused(
                ErrorType::Auth,
                DefinedCondition::Forbidden,
                "you are banned from this room",
            ));
        }
        let join_rule = self
            .state_text(room, "m.room.join_rules", "join_rule")
            .await?
            .unwrap_or_else(|| "invite".to_owned());
        if matches!(join_rule.as_str(), "invite" | "knock" | "private")
            && !matches!(membership.as_deref(), Some("join" | "invite"))
        {
            return Err(refused(
                ErrorType::Auth,
                DefinedCondition::RegistrationRequired,
                "this room is for invited members only",
            ));
        }
        self.nick_free(room, ghost, nick).await?;
        Ok(())
    }

    /// Makes the ghost's display name in the room the nickname (a ghost that was in the room
    /// already keeps its member event otherwise).
    async fn set_room_name(
        &self,
        room: &RoomId,
        ghost: &UserId,
        nick: &str,
    ) -> Result<(), BridgeError> {
        let current = self
            .services
            .rooms
            .state_event(room, "m.room.member", ghost.as_str())
            .await?
            .map(|pdu| pdu.content_value());
        let name = current
            .as_ref()
            .and_then(|content| content.get("displayname"))
            .and_then(Value::as_str);
        if name != Some(nick) {
            self.rename(room, ghost, nick).await?;
        }
        Ok(())
    }

    /// Sets the ghost's display name in the room.
    async fn rename(&self, room: &RoomId, ghost: &UserId, nick: &str) -> Result<(), BridgeError> {
        let mut content = serde_json::Map::new();
        content.insert("displayname".into(), json!(nick));
        update_member(&self.services, room, ghost, content).await?;
        Ok(())
    }

    /// `conflict` when another member has the nickname in the room.
    async fn nick_free(
        &self,
        room: &RoomId,
        ghost: &UserId,
        nick: &str,
    ) -> Result<(), BridgeError> {
        let roster = self.roster(room).await?;
        match roster.by_nick(nick) {
            Some(member) if member.user != ghost => Err(refused(
                ErrorType::Cancel,
                DefinedCondition::Conflict,
                format!("the nickname {nick} is taken in this room"),
            )),
            _ => Ok(()),
        }
    }

    /// An occupant takes another nickname: the ghost's display name in the room, if no other
    /// member has it.
    async fn change_nick(
        &self,
        room: &RoomId,
        ghost: &UserId,
        bare: &BareJid,
        nick: &str,
    ) -> Result<(), BridgeError> {
        self.nick_free(room, ghost, nick).await?;
        let lock = self.muc_room(room);
        let _view = lock.lock().await;
        self.store
            .rename_occupants_of(room.as_str(), bare.as_str(), nick)
            .await?;
        self.rename(room, ghost, nick).await
    }

    /// The joined occupant gets the room: the other occupants, its own presence, the history,
    /// the subject; from then on, it gets what happens live. The others are told of it.
    async fn enter(
        &self,
        room: &RoomId,
        room_jid: &BareJid,
        from: &FullJid,
        nick: &str,
        history: Option<&History>,
        created: bool,
    ) -> Result<(), BridgeError> {
        let lock = self.muc_room(room);
        let mut view = lock.lock().await;
        // Everything up to here is given as the room's state and history; later events go out
        // live. The state is read after the position, so that it is at least as new.
        let position = self.services.store.current_position();
        self.store
            .set_occupant(&Occupant {
                room_id: room.to_string(),
                jid: from.to_string(),
                room_jid: room_jid.to_string(),
                nick: nick.to_owned(),
                since_position: position,
            })
            .await?;
        let roster = std::sync::Arc::new(self.roster(room).await?);
        let ghost = self.ghost_id(&from.to_bare())?;
        if view.roster.is_none() {
            // Nothing told since the start: the others know the room as it was, but for this
            // join.
            view.roster = Some(std::sync::Arc::new(roster.without(&ghost)));
        }
        // The others learn of what changed since they were last told (this join among it).
        self.tell_changes(room, &mut view, roster.clone(), Some(from.as_str()))
            .await?;
        view.roster_position = position;
        let to = Jid::from(from.clone());
        for member in roster.members() {
            if member.user == ghost {
                continue;
            }
            let presence =
                self.member_presence(room, room_jid, member, &to, MemberPresence::default());
            self.send(Stanza::Presence(presence));
        }
        if let Some(me) = roster.member(&ghost) {
            let presence = self.member_presence(
                room,
                room_jid,
                me,
                &to,
                MemberPresence {
                    statuses: if created {
                        CREATOR_STATUSES
                    } else {
                        SELF_STATUSES
                    },
                    ..MemberPresence::default()
                },
            );
            self.send(Stanza::Presence(presence));
        }
        for message in self
            .history(room, room_jid, &roster, &ghost, &to, position, history)
            .await?
        {
            self.send(Stanza::Message(message));
        }
        self.send(Stanza::Message(
            self.subject(room, room_jid, &roster, &to).await?,
        ));
        tracing::info!(room_id = %room, occupant = %from, %nick, "an XMPP user joined a room");
        Ok(())
    }

    /// A resource leaves a room (or its server says it is gone); the ghost leaves the Matrix
    /// room with its last resource. `told` says whether the resource is told it left.
    pub(super) async fn occupant_leaves(
        &self,
        from: &FullJid,
        room_jid: &BareJid,
        told: bool,
    ) -> Result<(), BridgeError> {
        let Some(occupant) = self
            .store
            .occupant_at(room_jid.as_str(), from.as_str())
            .await?
        else {
            return Ok(());
        };
        let room = RoomId::parse(&occupant.room_id)
            .map_err(|e| causeway_matrix::error::Error::Internal(e.to_string()))?;
        let bare = from.to_bare();
        let ghost = self.ghost_id(&bare)?;
        {
            let lock = self.muc_room(&room);
            let _view = lock.lock().await;
            self.store
                .remove_occupant(room.as_str(), from.as_str())
                .await?;
            if told {
                let roster = self.roster(&room).await?;
                if let Some(me) = roster.member(&ghost) {
                    let presence = self.member_presence(
                        &room,
                        room_jid,
                        me,
                        &Jid::from(from.clone()),
                        MemberPresence {
                            unavailable: true,
                            statuses: &[110],
                            ..MemberPresence::default()
                        },
                    );
                    self.send(Stanza::Presence(presence));
                }
            }
        }
        let remaining = self.store.occupants(room.as_str()).await?;
        if !remaining.iter().any(|o| bare_of(&o.jid) == bare.as_str()) {
            leave_as(&self.services, &room, &ghost, None).await?;
            // Out of every room, and nobody here receives their presence: what their
            // occupant said of it no longer holds.
            if !self.store.is_occupant_anywhere(bare.as_str()).await?
                && !self.store.presence_followed(bare.as_str()).await?
            {
                let offline = MatrixPresence {
                    state: ruma::presence::PresenceState::Offline,
                    status: None,
                };
                self.set_ghost_presence(&ghost, &offline).await?;
            }
        }
        if remaining.is_empty() {
            self.muc_room_emptied(&room);
        }
        tracing::info!(room_id = %room, occupant = %occupant.jid, "an XMPP user left a room");
        Ok(())
    }

    /// An error from an occupant's server about a message to it: the occupant is gone.
    pub(super) async fn occupant_bounced(&self, message: &xmpp_parsers::message::Message) {
        let (Some(from), Some(to)) = (&message.from, &message.to) else {
            return;
        };
        let Ok(from) = from.clone().try_into_full() else {
            return;
        };
        if let Err(error) = self.occupant_leaves(&from, &to.to_bare(), false).await {
            tracing::warn!(%error, occupant = %from, "a gone occupant was not removed");
        }
    }

    /// XEP-0410: a resource asks whether it is still an occupant under that nickname.
    pub(super) async fn self_ping(&self, from: &Jid, to: &Jid) -> Result<(), BridgeError> {
        let not_in = || {
            refused(
                ErrorType::Cancel,
                DefinedCondition::NotAcceptable,
                "you are not an occupant of this room",
            )
        };
        let occupant = self
            .store
            .occupant_at(to.to_bare().as_str(), from.as_str())
            .await?;
        match (occupant, to.resource()) {
            (Some(occupant), Some(nick)) if occupant.nick == nick.as_str() => Ok(()),
            _ => Err(not_in()),
        }
    }

    /// Tells the occupants of a room what changed among its members since they were last
    /// told (`view`), except the resource `except` (joining: it gets the room whole).
    pub(super) async fn tell_changes(
        &self,
        room: &RoomId,
        view: &mut RoomView,
        roster: std::sync::Arc<super::Roster>,
        except: Option<&str>,
    ) -> Result<(), BridgeError> {
        let Some(before) = view.roster.replace(roster.clone()) else {
            return Ok(());
        };
        let occupants = self.store.occupants(room.as_str()).await?;
        for occupant in occupants.iter().filter(|o| Some(o.jid.as_str()) != except) {
            self.tell_occupant(room, occupant, &before, &roster).await?;
        }
        Ok(())
    }
}

/// The stanza error of a join that the Matrix room refused.
fn join_refused(error: MatrixError, local: bool) -> BridgeError {
    match error {
        MatrixError::NotFound(text) => {
            refused(ErrorType::Cancel, DefinedCondition::ItemNotFound, text)
        }
        MatrixError::BadGateway(text) => refused(
            ErrorType::Cancel,
            DefinedCondition::RemoteServerNotFound,
            text,
        ),
        MatrixError::Forbidden(text) if !local => {
            refused(ErrorType::Auth, DefinedCondition::Forbidden, text)
        }
        MatrixError::IncompatibleRoomVersion { room_version } => refused(
            ErrorType::Cancel,
            DefinedCondition::NotAcceptable,
            format!("this server cannot take part in rooms of version {room_version}"),
        ),
        error => BridgeError::Matrix(error),
    }
}
