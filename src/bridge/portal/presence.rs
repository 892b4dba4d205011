//! Presence in portals, both ways. A member's Matrix presence is their occupant's show and
//! status in the MUC (`occupant_availability`: `unavailable` is away, `offline` xa): on
//! joining, on a nickname change, and whenever it changes, for members of this server and of
//! others alike. An occupant's show and status are their ghost's Matrix presence, offline
//! once they leave the MUC.

use causeway_mapping::content::presence::{
    MatrixPresence, occupant_availability, presence_to_matrix,
};
use causeway_matrix::store::PresenceRecord;
use causeway_xmpp::stanza::Stanza;
use ruma::UserId;
use xmpp_parsers::jid::{BareJid, FullJid, Jid};
use xmpp_parsers::presence::{Presence, Show, Type as PresenceType};

use crate::bridge::muc::matrix_presence;
use crate::bridge::{Bridge, BridgeError};

/// A member's presence as an occupant's: show and status.
pub(super) type Availability = (Option<Show>, Option<String>);

impl Bridge {
    /// An available presence of a member's occupant (`from`) to `to` in a MUC, with the
    /// member's show and status (available when nothing is known of their presence).
    pub(super) async fn member_occupant_presence(
        &self,
        user: &UserId,
        from: FullJid,
        to: Option<Jid>,
    ) -> Presence {
        let availability = match self.services.store.presence(user.as_str()).await {
            Ok(record) => record
                .map(|record| occupant_availability(&matrix_presence(&record)))
                .unwrap_or_default(),
            Err(error) => {
                tracing::warn!(%error, %user, "a presence could not be read");
                Availability::default()
            }
        };
        with_availability(from, to, availability)
    }

    /// A user's presence changed: each MUC where they are an occupant through a portal is
    /// told their new show and status, once per change.
    pub(in crate::bridge) async fn portal_member_presence(
        &self,
        record: &PresenceRecord,
    ) -> Result<(), BridgeError> {
        let Ok(user) = UserId::parse(&record.user_id) else {
            return Ok(());
        };
        if self.gateway.is_ghost(&user) {
            return Ok(());
        }
        let sessions = self.store.sessions_of_user(user.as_str()).await?;
        let availability = occupant_availability(&matrix_presence(record));
        {
            let mut told = self
                .portals
                .told
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if sessions.is_empty() {
                told.remove(&user);
                return Ok(());
            }
            if told.get(&user) == Some(&availability) {
                return Ok(());
            }
            told.insert(user.clone(), availability.clone());
        }
        for session in sessions {
            let Ok(muc) = BareJid::new(&session.muc_jid) else {
                continue;
            };
            let to = muc.with_resource_str(&session.nick).ok().map(Jid::from);
            let from = self.session_jid(&user, &session)?;
            self.send(Stanza::Presence(with_availability(
                from,
                to,
                availability.clone(),
            )));
        }
        Ok(())
    }

    /// An occupant's presence in a MUC is their ghost's: their show and status while they
    /// are there, offline once they have left.
    pub(super) async fn occupant_presence_to_ghost(
        &self,
        ghost: &UserId,
        presence: &Presence,
    ) -> Result<(), BridgeError> {
        let matrix = match presence.type_ {
            PresenceType::Unavailable => MatrixPresence {
                state: ruma::presence::PresenceState::Offline,
                status: None,
            },
            _ => match presence_to_matrix(presence) {
                Some(matrix) => matrix,
                None => return Ok(()),
            },
        };
        self.set_ghost_presence(ghost, &matrix).await
    }
}

/// An available presence with a show and a status.
fn with_availability(from: FullJid, to: Option<Jid>, (show, status): Availability) -> Presence {
    let mut presence = Presence::new(PresenceType::None);
    presence.from = Some(Jid::from(from));
    presence.to = to;
    presence.show = show;
    if let Some(status) = status {
        presence.set_status(String::new(), status);
    }
    presence
}
