//! XEP-0410: a MUC may lose its occupants without telling them (a restart, a lost stream).
//! Every `xmpp.muc_self_ping_secs`, each local member of a portal pings their own occupant
//! JID: an answer (or `service-unavailable` / `feature-not-implemented`, a MUC passing the
//! ping on to the occupant) means they are in; an unreachable server, or no answer, is asked
//! again next time; any other error means the MUC no longer has them, and they join again,
//! with the history since the last message seen.

use std::sync::Arc;
use std::time::Duration;

use minidom::Element;
use xmpp_parsers::iq::Iq;
use xmpp_parsers::jid::{BareJid, Jid};
use xmpp_parsers::stanza_error::DefinedCondition;

use crate::bridge::store::Session;
use crate::bridge::{Bridge, BridgeError};

const PING: &str = "urn:xmpp:ping";

/// What a self-ping says of an occupant.
#[derive(Debug, PartialEq, Eq)]
enum Standing {
    Joined,
    Unknown,
    Gone,
}

fn standing(answer: Option<&Iq>) -> Standing {
    match answer {
        Some(Iq::Result { .. }) => Standing::Joined,
        Some(Iq::Error { error, .. }) => match error.defined_condition {
            DefinedCondition::ServiceUnavailable | DefinedCondition::FeatureNotImplemented => {
                Standing::Joined
            }
            DefinedCondition::RemoteServerNotFound | DefinedCondition::RemoteServerTimeout => {
                Standing::Unknown
            }
            _ => Standing::Gone,
        },
        _ => Standing::Unknown,
    }
}

impl Bridge {
    /// Self-pings every member's MUC, for as long as the server runs.
    pub(in crate::bridge) async fn self_ping_loop(self: Arc<Self>) {
        let every = Duration::from_secs(self.services.config.xmpp.muc_self_ping_secs.max(1));
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let sessions = match self.store.all_sessions().await {
                Ok(sessions) => sessions,
                Err(error) => {
                    tracing::warn!(%error, "the members of portals were not read for self-pings");
                    continue;
                }
            };
            for session in sessions {
                let bridge = self.clone();
                tokio::spawn(async move {
                    if let Err(error) = bridge.ping_own_occupant(&session).await {
                        tracing::info!(%error, muc = %session.muc_jid, user = %session.user_id, "a self-ping came to nothing");
                    }
                });
            }
        }
    }

    async fn ping_own_occupant(&self, session: &Session) -> Result<(), BridgeError> {
        let (Ok(muc), Ok(user)) = (
            BareJid::new(&session.muc_jid),
            ruma::UserId::parse(&session.user_id),
        ) else {
            return Ok(());
        };
        let own = self.session_jid(&user, session)?;
        let occupant = muc
            .with_resource_str(&session.nick)
            .map_err(super::internal)?;
        // Not (or no longer) in the portal: a join that never completed (another server asked
        // to join and did not), or a leave missed. Out of the MUC too.
        let room = ruma::RoomId::parse(&session.room_id).map_err(super::internal)?;
        if self
            .services
            .rooms
            .membership(&room, &user)
            .await?
            .as_deref()
            != Some("join")
        {
            return self.leave_muc(session).await;
        }
        let iq = Iq::Get {
            from: Some(Jid::from(own)),
            to: Some(Jid::from(occupant)),
            id: format!("self-ping-{}", crate::bridge::random_id()),
            payload: Element::bare("ping", PING),
        };
        let answer = self.request(iq).await;
        if standing(answer.as_ref()) != Standing::Gone {
            return Ok(());
        }
        // Still a member of the portal (not gone while the ping was under way)?
        let Some(current) = self
            .store
            .session(&session.room_id, &session.user_id)
            .await?
        else {
            return Ok(());
        };
        tracing::info!(%muc, user = %session.user_id, "the MUC no longer has a member of its portal; joining again");
        self.rejoin(&current).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xmpp_parsers::stanza_error::{ErrorType, StanzaError};

    fn error(condition: DefinedCondition) -> Iq {
        Iq::Error {
            from: None,
            to: None,
            id: "p".into(),
            error: StanzaError::new(ErrorType::Cancel, condition, "en", ""),
            payload: None,
        }
    }

    #[test]
    fn what_a_self_ping_says() {
        let result = Iq::Result {
            from: None,
            to: None,
            id: "p".into(),
            payload: None,
        };
        assert_eq!(standing(Some(&result)), Standing::Joined);
        for joined in [
            DefinedCondition::ServiceUnavailable,
            DefinedCondition::FeatureNotImplemented,
        ] {
            assert_eq!(standing(Some(&error(joined))), Standing::Joined);
        }
        for unknown in [
            DefinedCondition::RemoteServerNotFound,
            DefinedCondition::RemoteServerTimeout,
        ] {
            assert_eq!(standing(Some(&error(unknown))), Standing::Unknown);
        }
        assert_eq!(standing(None), Standing::Unknown);
        for gone in [
            DefinedCondition::NotAcceptable,
            DefinedCondition::ItemNotFound,
            DefinedCondition::Forbidden,
        ] {
            assert_eq!(standing(Some(&error(gone))), Standing::Gone);
        }
    }
}
