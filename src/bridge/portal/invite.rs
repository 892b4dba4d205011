//! MUC invitations to local users, direct (XEP-0249) or mediated by the MUC (XEP-0045
//! §7.8.2): the MUC's ghost invites the user to the portal (made if needed), with who invited
//! them and why as the reason. Accepting is joining the portal, which joins the MUC.
//!
//! The other way, a member inviting an XMPP user's ghost into a portal asks the MUC to invite
//! that user (mediated, from the member's occupant); the ghost answers the Matrix invitation by
//! leaving and saying so, since the user comes in as an occupant of their own when they accept.

use causeway_mapping::address::MatrixRoom;
use causeway_mapping::content::room::{Invitation, invitation};
use causeway_xmpp::stanza::Stanza;
use minidom::Element;
use ruma::{EventId, RoomId, UserId};
use serde_json::json;
use xmpp_parsers::jid::{BareJid, Jid};
use xmpp_parsers::message::{Id, Message, MessageType};

use super::MUC_USER;
use crate::bridge::{Bridge, BridgeError};

impl Bridge {
    /// Whether a message to a local user is an invitation to a MUC.
    pub(in crate::bridge) fn is_invitation(&self, message: &Message) -> bool {
        self.is_an_account(message.to.as_ref()) && invitation(message).is_some()
    }

    /// An invitation to a MUC for a local user. It is passed on apart from the stream it
    /// came by: the MUC may have to be asked what it is first.
    pub(in crate::bridge) fn portal_invitation(&self, message: Message) {
        let (Some(invitation), Some(bridge)) = (invitation(&message), self.me.upgrade()) else {
            return;
        };
        tokio::spawn(async move {
            if let Err(error) = bridge.portal_invitation_inner(&message, &invitation).await {
                tracing::info!(%error, room = %invitation.room, to = ?message.to, "an invitation to a MUC was not passed on");
            }
        });
    }

    async fn portal_invitation_inner(
        &self,
        message: &Message,
        invitation: &Invitation,
    ) -> Result<(), BridgeError> {
        let Some(to) = &message.to else {
            return Ok(());
        };
        let user = self.gateway.jid_to_user(&Jid::from(to.to_bare()))?;
        if self.gateway.is_ghost(&user) || self.services.store.user(user.as_str()).await?.is_none()
        {
            return Ok(());
        }
        // Only MUCs elsewhere have portals; an invitation to one of our rooms names a
        // Matrix room the inviter can invite to from Matrix.
        let Ok(MatrixRoom::Portal(alias)) = self.gateway.muc_to_room(&invitation.room) else {
            return Ok(());
        };
        let Some(room) = self.portal_for_alias(&alias).await? else {
            return Ok(());
        };
        // The password of a protected MUC is for every join of it through the portal: the
        // MUC's own (a mediated invitation) replaces the one known, a user's is taken only
        // when none is.
        if let Some(password) = &invitation.password {
            let from_muc = message
                .from
                .as_ref()
                .is_some_and(|from| from.to_bare() == invitation.room);
            let muc = invitation.room.as_str();
            if from_muc || self.store.portal_password(muc).await?.is_none() {
                self.store.set_portal_password(muc, Some(password)).await?;
            }
        }
        if matches!(
            self.services
                .rooms
                .membership(&room, &user)
                .await?
                .as_deref(),
            Some("join" | "invite" | "ban")
        ) {
            return Ok(());
        }
        let inviter = invitation
            .inviter
            .as_ref()
            .map(|jid| jid.to_bare().to_string())
            .unwrap_or_else(|| invitation.room.to_string());
        let reason = match &invitation.reason {
            Some(reason) => format!("{inviter} invites you: {reason}"),
            None => format!("{inviter} invites you"),
        };
        let muc_ghost = self.muc_ghost(&invitation.room).await?;
        self.append(
            &room,
            &muc_ghost,
            "m.room.member",
            Some(user.as_str()),
            json!({ "membership": "invite", "reason": reason }),
        )
        .await?;
        tracing::info!(room_id = %room, muc = %invitation.room, %user, %inviter, "an invitation to a MUC");
        Ok(())
    }

    /// A member invited a ghost into a room: when the room is a portal, its MUC is asked to
    /// invite the XMPP user the ghost stands for (an occupant's ghost stands for their real
    /// JID, if the MUC shows it), and the ghost leaves with a reason that says what happened.
    /// Returns whether the room is a portal (then the invitation is dealt with). The request
    /// has the invitation's event id as its id, so that the MUC's refusal is a notice in reply.
    pub(in crate::bridge) async fn invite_into_portal(
        &self,
        room: &RoomId,
        event: &EventId,
        inviter: &UserId,
        ghost: &UserId,
        reason: Option<&str>,
    ) -> Result<bool, BridgeError> {
        let Some(muc) = self.portals.muc(room.as_str()) else {
            return Ok(false);
        };
        let invitee = self.gateway.user_to_jid(ghost)?;
        let to: Option<BareJid> = match invitee.resource() {
            None if invitee.to_bare() != muc => Some(invitee.to_bare()),
            Some(_) if invitee.to_bare() == muc => self.portals.real_jid(&invitee),
            _ => None,
        };
        let session = self.portal_session_of(room.as_str(), inviter).await?;
        let text = match (to, session) {
            (Some(to), Some((_, own))) => {
                let mut invite = Element::builder("invite", MUC_USER)
                    .attr(rxml::xml_ncname!("to").to_owned(), to.as_str());
                if let Some(reason) = reason.filter(|reason| !reason.is_empty()) {
                    invite = invite.append(Element::builder("reason", MUC_USER).append(reason));
                }
                let mut message = Message::new(Some(Jid::from(muc.clone())));
                message.type_ = MessageType::Normal;
                message.from = Some(Jid::from(own));
                message.id = Some(Id(event.to_string()));
                message
                    .payloads
                    .push(Element::builder("x", MUC_USER).append(invite).build());
                self.send(Stanza::Message(message));
                tracing::info!(room_id = %room, %muc, %to, %inviter, "a member invites an XMPP user to a MUC");
                format!("{muc} invites {to}, who comes in as an occupant on accepting")
            }
            (None, _) => format!("{muc} does not show who this is: it cannot invite them"),
            (Some(_), None) => {
                format!("the inviter is not in {muc}: it cannot invite anyone for them")
            }
        };
        self.append(
            room,
            ghost,
            "m.room.member",
            Some(ghost.as_str()),
            json!({ "membership": "leave", "reason": text }),
        )
        .await?;
        Ok(true)
    }
}
