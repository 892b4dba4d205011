//! MUC invitations to local users, direct (XEP-0249) or mediated by the MUC (XEP-0045
//! §7.8.2): the MUC's ghost invites the user to the portal (made if needed), with who invited
//! them and why as the reason. Accepting is joining the portal, which joins the MUC.

use causeway_mapping::address::MatrixRoom;
use causeway_mapping::content::room::{Invitation, invitation};
use serde_json::json;
use xmpp_parsers::jid::Jid;
use xmpp_parsers::message::Message;

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
}
