//! Plumbing: someone with the power to (a room administrator, by the room's power levels)
//! links an existing Matrix room to an existing MUC with the state event
//! `org.causeway.portal` (`{"muc": "room@conference.example.net"}`), and unlinks it with the
//! same event without `muc`. Linked, the room is the MUC's portal: the MUC's ghost comes in
//! (invited by whoever linked, when the room does not let it join), every member of the room is
//! an occupant of their own (as on joining a portal), the MUC's occupants are ghosts in the
//! room, and the MUC's alias `#_xmpp_…` names the room. Unlinked, every member leaves the MUC
//! and the ghosts leave the room. What cannot be done is told in the room, by a notice in
//! reply to the event.

use causeway_matrix::api::client::membership::{join_as, leave_as};
use causeway_matrix::pdu::Pdu;
use causeway_matrix::store::EventRow;
use ruma::{EventId, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde_json::{Value, json};
use xmpp_parsers::iq::Iq;
use xmpp_parsers::jid::BareJid;

use super::archive::keeps_archive;
use crate::bridge::{Bridge, BridgeError};

/// The state event that links a room to a MUC.
pub const LINK_EVENT: &str = "org.causeway.portal";

impl Bridge {
    /// A link or an unlink in the event stream: carried out apart from it (the MUC is asked,
    /// members join it one by one).
    pub(in crate::bridge) fn plumbing_event(&self, row: &EventRow) {
        if row.event_type != LINK_EVENT || row.redacted_by.is_some() {
            return;
        }
        let Ok(pdu) = Pdu::from_stored(&row.event_id, &row.json) else {
            return;
        };
        if pdu.state_key.as_deref() != Some("") {
            return;
        }
        let (Ok(room), Some(bridge)) = (RoomId::parse(&row.room_id), self.me.upgrade()) else {
            return;
        };
        let (sender, event, content) = (
            pdu.sender.clone(),
            pdu.event_id.clone(),
            pdu.content_value(),
        );
        tokio::spawn(async move {
            if let Err(error) = bridge.plumb(&room, &sender, &event, &content).await {
                tracing::warn!(%error, room_id = %room, "a link of a room to a MUC was not carried out");
            }
        });
    }

    async fn plumb(
        &self,
        room: &OwnedRoomId,
        sender: &UserId,
        event: &OwnedEventId,
        content: &Value,
    ) -> Result<(), BridgeError> {
        // Only the room's link as it is now counts (another may have followed this one).
        let current = self
            .services
            .rooms
            .state_event(room, LINK_EVENT, "")
            .await?;
        if current.as_ref().map(|pdu| &pdu.event_id) != Some(event) {
            return Ok(());
        }
        let wanted = content
            .get("muc")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|muc| !muc.is_empty());
        let linked = self
            .store
            .muc_of_portal(room.as_str())
            .await?
            .and_then(|muc| BareJid::new(&muc).ok());
        let Some(wanted) = wanted else {
            if let Some(muc) = linked {
                self.unlink(room, &muc, event).await?;
            }
            return Ok(());
        };
        let muc = match BareJid::new(wanted) {
            Ok(muc)
                if muc.node().is_some()
                    && muc.domain().as_str() != self.gateway.domain()
                    && muc.domain().as_str() != self.gateway.muc_domain() =>
            {
                muc
            }
            _ => {
                // No ghost can say it: an address of no MUC elsewhere.
                tracing::info!(room_id = %room, %wanted, "a link to what is not a MUC elsewhere");
                return Ok(());
            }
        };
        // The password of a protected MUC, for every join of it through the room.
        let password = content
            .get("password")
            .and_then(Value::as_str)
            .filter(|password| !password.is_empty());
        if linked.as_ref() == Some(&muc) {
            self.store
                .set_portal_password(muc.as_str(), password)
                .await?;
            return Ok(());
        }
        if let Some(old) = linked {
            self.unlink(room, &old, event).await?;
        }
        self.link(room, &muc, password, sender, event).await
    }

    async fn link(
        &self,
        room: &OwnedRoomId,
        muc: &BareJid,
        password: Option<&str>,
        sender: &UserId,
        event: &EventId,
    ) -> Result<(), BridgeError> {
        if let Some(other) = self.store.portal_of_muc(muc.as_str()).await? {
            let text = format!("{muc} is linked to {other} already");
            return self.link_refused(room, muc, sender, event, text).await;
        }
        let info = match self.ask_disco_info(muc).await? {
            Some(Iq::Result {
                payload: Some(info),
                ..
            }) if super::is_muc(&info) => info,
            _ => {
                let text = format!("{muc} is not a group chat that answers");
                return self.link_refused(room, muc, sender, event, text).await;
            }
        };
        // The MUC's ghost comes in: invited by whoever linked, if the room does not let it join.
        let ghost = self.ghost_in_room(room, muc, sender).await?;
        let recorded = self.store.set_portal(muc.as_str(), room.as_str()).await?;
        if recorded != room.as_str() {
            let text = format!("{muc} is linked to {recorded} already");
            return self.link_refused(room, muc, sender, event, text).await;
        }
        self.store
            .set_portal_password(muc.as_str(), password)
            .await?;
        self.portals.insert(muc.clone(), room.clone());
        self.portals.note_archive(muc, keeps_archive(&info));
        tracing::info!(room_id = %room, %muc, "linked a room to a MUC");
        let text =
            format!("Linked to {muc}: its occupants are here, and each member is one of its");
        self.plumbing_notice(room, &ghost, event, text).await?;
        // Every member is an occupant of their own.
        let members = self
            .services
            .store
            .room_members(room.as_str(), "join")
            .await?;
        for member in members {
            let Ok(member) = UserId::parse(&member) else {
                continue;
            };
            if self.gateway.is_ghost(&member) {
                continue;
            }
            if let Err(error) = self.portal_joining(room, &member).await {
                let text = format!("⚠ {member} is not in {muc}: {error}");
                self.plumbing_notice(room, &ghost, event, text).await?;
            }
        }
        Ok(())
    }

    async fn unlink(
        &self,
        room: &OwnedRoomId,
        muc: &BareJid,
        event: &EventId,
    ) -> Result<(), BridgeError> {
        let sessions = self.store.sessions(room.as_str()).await?;
        for session in &sessions {
            self.leave_muc(session).await?;
        }
        self.store.remove_portal(muc.as_str()).await?;
        self.portals.remove(muc, room);
        // The MUC's occupants' ghosts leave; the MUC's ghost says so, and leaves last.
        for member in self
            .services
            .store
            .room_members(room.as_str(), "join")
            .await?
        {
            let Ok(member) = UserId::parse(&member) else {
                continue;
            };
            if self.occupant_of_ghost(&member, muc).is_some() {
                leave_as(&self.services, room, &member, None).await?;
            }
        }
        let ghost = self.muc_ghost(muc).await?;
        if self.membership_is(room, &ghost, "join").await? {
            self.plumbing_notice(room, &ghost, event, format!("Unlinked from {muc}"))
                .await?;
            leave_as(&self.services, room, &ghost, None).await?;
        }
        tracing::info!(room_id = %room, %muc, "unlinked a room from a MUC");
        Ok(())
    }

    /// Brings a MUC's ghost into a room: it joins, invited first by whoever linked when the
    /// room does not let it join.
    async fn ghost_in_room(
        &self,
        room: &RoomId,
        muc: &BareJid,
        sender: &UserId,
    ) -> Result<OwnedUserId, BridgeError> {
        let ghost = self.muc_ghost(muc).await?;
        let rooms = &self.services.rooms;
        let membership = rooms.membership(room, &ghost).await?;
        if membership.as_deref() == Some("join") {
            return Ok(ghost);
        }
        if !self.is_public(room).await?
            && membership.as_deref() != Some("invite")
            && self.services.is_local(sender)
        {
            self.append(
                room,
                sender,
                "m.room.member",
                Some(ghost.as_str()),
                // Marked as the link's: not an invitation to a chat, which ghosts decline.
                json!({
                    "membership": "invite",
                    "reason": format!("the voice of {muc}"),
                    LINK_EVENT: muc.as_str(),
                }),
            )
            .await?;
        }
        join_as(&self.services, room, &ghost, None, &[]).await?;
        Ok(ghost)
    }

    /// A MUC ghost's notice in reply to a link event.
    async fn plumbing_notice(
        &self,
        room: &RoomId,
        ghost: &UserId,
        event: &EventId,
        text: String,
    ) -> Result<(), BridgeError> {
        self.notice_replying(room, ghost, event, text).await?;
        Ok(())
    }

    /// A link refused: the asked-for MUC's ghost says why, and leaves.
    async fn link_refused(
        &self,
        room: &RoomId,
        muc: &BareJid,
        sender: &UserId,
        event: &EventId,
        text: String,
    ) -> Result<(), BridgeError> {
        tracing::info!(room_id = %room, %muc, %text, "a link of a room to a MUC was refused");
        let ghost = self.ghost_in_room(room, muc, sender).await?;
        self.plumbing_notice(room, &ghost, event, format!("⚠ {text}"))
            .await?;
        leave_as(&self.services, room, &ghost, None).await?;
        Ok(())
    }
}
