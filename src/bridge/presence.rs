//! Presence and subscriptions between XMPP users and local accounts (RFC 6121).
//!
//! - An XMPP user's presence (the best of their resources) is their ghost's `m.presence`.
//! - A subscription request from an XMPP user is a notice of their ghost in the direct room
//!   that asks the local account to react 👍 (share presence) or 👎 (decline); the answer goes
//!   back as `subscribed` or `unsubscribed`.
//! - A local account asks for the presence of an XMPP user when it takes part in a direct chat
//!   with them (`subscribe`), and its presence goes to the XMPP users who may see it.

use std::collections::HashMap;

use causeway_mapping::content::presence::{MatrixPresence, presence_to_matrix, presence_to_xmpp};
use causeway_matrix::store::PresenceRecord;

use super::store::Subscription;
use causeway_xmpp::stanza::Stanza;
use ruma::presence::PresenceState;
use ruma::{EventId, OwnedUserId, RoomId, UserId};
use xmpp_parsers::jid::{BareJid, Jid};
use xmpp_parsers::presence::{Presence, Type};

use super::{Bridge, BridgeError};

/// Reactions that answer a subscription request.
const AGREE: &[&str] = &["👍", "👍️", "✅", "✔️", "👌"];
const DECLINE: &[&str] = &["👎", "👎️", "❌", "🚫"];

/// The presence of each XMPP user's resources, as last heard.
pub(super) type Resources = HashMap<BareJid, HashMap<String, MatrixPresence>>;

fn rank(state: &PresenceState) -> u8 {
    match state {
        PresenceState::Online => 2,
        PresenceState::Unavailable => 1,
        _ => 0,
    }
}

/// The presence of a user with several resources: the most available one's.
fn best(resources: &HashMap<String, MatrixPresence>) -> MatrixPresence {
    resources
        .values()
        .max_by_key(|presence| rank(&presence.state))
        .cloned()
        .unwrap_or(MatrixPresence {
            state: PresenceState::Offline,
            status: None,
        })
}

fn answer(from: &BareJid, to: &BareJid, kind: Type) -> Stanza {
    let mut presence = Presence::new(kind);
    presence.from = Some(Jid::from(from.clone()));
    presence.to = Some(Jid::from(to.clone()));
    Stanza::Presence(presence)
}

impl Bridge {
    /// Handles a presence stanza to a local account.
    pub(super) async fn presence_from_xmpp(&self, presence: Presence) -> Vec<Stanza> {
        match self.presence(&presence).await {
            Ok(replies) => replies,
            Err(error) => {
                tracing::debug!(%error, from = ?presence.from, "a presence was not handled");
                if presence.type_ == Type::Error || presence.type_ == Type::Unavailable {
                    return vec![];
                }
                let Some(to) = presence.from.clone() else {
                    return vec![];
                };
                let mut reply = Presence::new(Type::Error)
                    .with_to(to)
                    .with_payload(error.to_stanza_error());
                reply.from = presence.to.clone();
                reply.id = presence.id.clone();
                vec![Stanza::Presence(reply)]
            }
        }
    }

    async fn presence(&self, presence: &Presence) -> Result<Vec<Stanza>, BridgeError> {
        let (Some(from), Some(to)) = (&presence.from, &presence.to) else {
            return Ok(vec![]);
        };
        if presence.type_ == Type::Error {
            return Ok(vec![]);
        }
        let local = self.local_account(&to.to_bare()).await?;
        let local_jid = to.to_bare();
        let remote = from.to_bare();
        let ghost = self.ghost_id(&remote)?;
        let (l, r) = (&local, &remote);
        match presence.type_ {
            Type::None | Type::Unavailable => {
                // Only of contacts: anyone else's presence makes no ghost and no presence.
                let subscription = self.update_subscription(l, r, |_| ()).await?.0;
                if !subscription.to_remote && self.room_of_pair(l, r).await?.is_none() {
                    return Ok(vec![]);
                }
                let resource = from.resource().map(|r| r.to_string()).unwrap_or_default();
                self.remote_presence(&ghost, &remote, resource, presence)
                    .await?;
                Ok(vec![])
            }
            Type::Subscribe => {
                let subscription = self.update_subscription(l, r, |_| ()).await?.0;
                if subscription.from_remote {
                    // Already allowed (RFC 6121 §3.1.3): say so again, with the presence.
                    let mut replies = vec![answer(&local_jid, &remote, Type::Subscribed)];
                    replies.extend(self.local_presence_to(&local, &local_jid, &remote).await?);
                    return Ok(replies);
                }
                if subscription.request_event_id.is_some() {
                    return Ok(vec![]);
                }
                let lock = self.pair_lock(&local, &remote);
                let _pair = lock.lock().await;
                let Some(room) = self.direct_room(&local, &ghost, &remote, true).await? else {
                    return Ok(vec![]);
                };
                let notice = self
                    .notice_in(
                        &room,
                        &ghost,
                        format!(
                            "{remote} asks to see when you are online. \
                             React with 👍 to allow it or with 👎 to decline."
                        ),
                    )
                    .await?;
                self.update_subscription(l, r, |sub| {
                    sub.request_event_id = Some(notice.to_string());
                })
                .await?;
                Ok(vec![])
            }
            Type::Subscribed => {
                // Unasked-for approvals are ignored (RFC 6121 §3.1.6).
                self.update_subscription(l, r, |sub| {
                    if sub.pending_out {
                        sub.to_remote = true;
                        sub.pending_out = false;
                        sub.declined = false;
                    }
                })
                .await?;
                Ok(vec![])
            }
            Type::Unsubscribed => {
                let (before, _) = self
                    .update_subscription(l, r, |sub| {
                        if sub.to_remote || sub.pending_out {
                            // Refused or revoked: not asked again by itself.
                            sub.declined = true;
                        }
                        sub.to_remote = false;
                        sub.pending_out = false;
                    })
                    .await?;
                if before.to_remote {
                    self.forget_resources(&remote);
                    self.set_ghost_presence(
                        &ghost,
                        &MatrixPresence {
                            state: PresenceState::Offline,
                            status: None,
                        },
                    )
                    .await?;
                }
                Ok(vec![])
            }
            Type::Unsubscribe => {
                self.update_subscription(l, r, |sub| {
                    sub.from_remote = false;
                    sub.request_event_id = None;
                })
                .await?;
                Ok(vec![answer(&local_jid, &remote, Type::Unsubscribed)])
            }
            Type::Probe => {
                let subscription = self.update_subscription(l, r, |_| ()).await?.0;
                if subscription.from_remote {
                    self.local_presence_to(&local, &local_jid, &remote).await
                } else {
                    Ok(vec![])
                }
            }
            Type::Error => Ok(vec![]),
        }
    }

    /// Reads and changes the subscriptions of a pair in one step, under the bridge's
    /// subscription lock (the XMPP handler and the sender task both change them); returns
    /// them as they were and the closure's result. Nothing else is awaited under the lock.
    async fn update_subscription<R>(
        &self,
        local: &UserId,
        remote: &BareJid,
        change: impl FnOnce(&mut Subscription) -> R,
    ) -> Result<(Subscription, R), BridgeError> {
        let _lock = self.subscriptions.lock().await;
        let before = self
            .store
            .xmpp_subscription(local.as_str(), remote.as_str())
            .await?;
        let mut after = before.clone();
        let result = change(&mut after);
        if after != before {
            self.store
                .set_xmpp_subscription(local.as_str(), remote.as_str(), &after)
                .await?;
        }
        Ok((before, result))
    }

    async fn remote_presence(
        &self,
        ghost: &UserId,
        remote: &BareJid,
        resource: String,
        presence: &Presence,
    ) -> Result<(), BridgeError> {
        let Some(matrix) = presence_to_matrix(presence) else {
            return Ok(());
        };
        let aggregated = {
            let mut resources = self
                .resources
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let of_user = resources.entry(remote.clone()).or_default();
            if matrix.state == PresenceState::Offline {
                of_user.remove(&resource);
            } else {
                of_user.insert(resource, matrix.clone());
            }
            let aggregated = best(of_user);
            if of_user.is_empty() {
                resources.remove(remote);
            }
            aggregated
        };
        // An unavailable presence of the last resource keeps its status text.
        let aggregated = if aggregated.state == PresenceState::Offline {
            MatrixPresence {
                state: PresenceState::Offline,
                status: matrix.status,
            }
        } else {
            aggregated
        };
        self.set_ghost_presence(ghost, &aggregated).await
    }

    fn forget_resources(&self, remote: &BareJid) {
        self.resources
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(remote);
    }

    /// Stores a ghost's presence when it changed.
    pub(in crate::bridge) async fn set_ghost_presence(
        &self,
        ghost: &UserId,
        presence: &MatrixPresence,
    ) -> Result<(), BridgeError> {
        let store = &self.services.store;
        let state = presence.state.as_str();
        let current = store.presence(ghost.as_str()).await?;
        if current.as_ref().is_some_and(|current| {
            current.state == state && current.status_msg.as_deref() == presence.status.as_deref()
        }) {
            return Ok(());
        }
        store
            .set_presence(ghost.as_str(), state, presence.status.as_deref())
            .await?;
        Ok(())
    }

    /// A local account's presence as a stanza to one XMPP user.
    async fn local_presence_to(
        &self,
        local: &UserId,
        local_jid: &BareJid,
        remote: &BareJid,
    ) -> Result<Vec<Stanza>, BridgeError> {
        let record = self.services.store.presence(local.as_str()).await?;
        Ok(vec![self.presence_stanza(
            record.as_ref(),
            local_jid,
            remote,
        )])
    }

    fn presence_stanza(
        &self,
        record: Option<&PresenceRecord>,
        local_jid: &BareJid,
        remote: &BareJid,
    ) -> Stanza {
        let matrix = record
            .map(super::muc::matrix_presence)
            .unwrap_or(MatrixPresence {
                state: PresenceState::Offline,
                status: None,
            });
        let mut presence = presence_to_xmpp(&matrix);
        presence.from = Some(Jid::from(local_jid.clone()));
        presence.to = Some(Jid::from(remote.clone()));
        Stanza::Presence(presence)
    }

    /// At start: what was known of contacts' presence is stale, so their ghosts are offline
    /// until their servers answer a probe (RFC 6121 §4.3.1).
    pub(super) async fn probe_contacts(&self) -> Result<(), BridgeError> {
        for (local, remote) in self.store.xmpp_subscriptions_to_remote().await? {
            let (Ok(local), Ok(remote)) = (UserId::parse(&local), BareJid::new(&remote)) else {
                continue;
            };
            let ghost = self.ghost_id(&remote)?;
            self.set_ghost_presence(
                &ghost,
                &MatrixPresence {
                    state: PresenceState::Offline,
                    status: None,
                },
            )
            .await?;
            let local_jid = self.gateway.user_to_jid(&local)?.to_bare();
            self.send(answer(&local_jid, &remote, Type::Probe));
        }
        Ok(())
    }

    /// A local account's presence changed: the XMPP users who may see it are told, once per
    /// change.
    pub(super) async fn local_presence_changed(
        &self,
        record: &PresenceRecord,
    ) -> Result<(), BridgeError> {
        let Ok(local) = UserId::parse(&record.user_id) else {
            return Ok(());
        };
        if !self.services.is_local(&local) || self.gateway.is_ghost(&local) {
            return Ok(());
        }
        {
            let mut told = self
                .told_presence
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = (record.state.clone(), record.status_msg.clone());
            if told.get(&local) == Some(&now) {
                return Ok(());
            }
            told.insert(local.clone(), now);
        }
        let local_jid = self.gateway.user_to_jid(&local)?.to_bare();
        for remote in self.store.xmpp_subscribers(local.as_str()).await? {
            let Ok(remote) = BareJid::new(&remote) else {
                continue;
            };
            self.send(self.presence_stanza(Some(record), &local_jid, &remote));
        }
        Ok(())
    }

    /// The local account answered a subscription request with a reaction; returns whether
    /// the reaction was such an answer.
    pub(super) async fn subscription_answer(
        &self,
        local: &UserId,
        target: &EventId,
        key: &str,
    ) -> Result<bool, BridgeError> {
        let store = &self.services.store;
        let Some((asked, remote)) = self
            .store
            .xmpp_subscription_request(target.as_str())
            .await?
        else {
            return Ok(false);
        };
        if asked != local.as_str() {
            return Ok(false);
        }
        let agree = AGREE.contains(&key);
        if !agree && !DECLINE.contains(&key) {
            return Ok(true);
        }
        let Ok(remote) = BareJid::new(&remote) else {
            return Ok(true);
        };
        let local_jid = self.gateway.user_to_jid(local)?.to_bare();
        self.update_subscription(local, &remote, |sub| {
            sub.request_event_id = None;
            sub.from_remote = agree;
        })
        .await?;
        if agree {
            self.send(answer(&local_jid, &remote, Type::Subscribed));
            for stanza in self.local_presence_to(local, &local_jid, &remote).await? {
                self.send(stanza);
            }
            self.subscribe(local, &remote).await?;
        } else {
            self.send(answer(&local_jid, &remote, Type::Unsubscribed));
        }
        let text = if agree {
            format!("{remote} now sees when you are online.")
        } else {
            format!("You declined to share your presence with {remote}.")
        };
        if let Some(row) = store.event(target.as_str()).await?
            && let Ok(room) = RoomId::parse(&row.room_id)
        {
            let ghost = self.ghost(&remote).await?;
            self.correct(&room, &ghost, target, text).await?;
        }
        Ok(true)
    }

    /// Asks for an XMPP user's presence on behalf of a local account, unless it has it, asked
    /// already, or was refused before.
    pub(super) async fn subscribe(
        &self,
        local: &UserId,
        remote: &BareJid,
    ) -> Result<(), BridgeError> {
        let ask = self
            .update_subscription(local, remote, |sub| {
                let ask = !sub.to_remote && !sub.pending_out && !sub.declined;
                if ask {
                    sub.pending_out = true;
                }
                ask
            })
            .await?
            .1;
        if !ask {
            return Ok(());
        }
        let local_jid = self.gateway.user_to_jid(local)?.to_bare();
        self.send(answer(&local_jid, remote, Type::Subscribe));
        Ok(())
    }
}

/// Who told what presence last, per local account.
pub(super) type ToldPresence = HashMap<OwnedUserId, (String, Option<String>)>;

#[cfg(test)]
mod tests {
    use super::*;

    fn presence(state: PresenceState, status: &str) -> MatrixPresence {
        MatrixPresence {
            state,
            status: Some(status.to_owned()),
        }
    }

    #[test]
    fn the_most_available_resource_counts() {
        let mut resources = HashMap::new();
        assert_eq!(best(&resources).state, PresenceState::Offline);
        resources.insert(
            "phone".to_owned(),
            presence(PresenceState::Unavailable, "away"),
        );
        resources.insert("pc".to_owned(), presence(PresenceState::Online, "at work"));
        assert_eq!(best(&resources), presence(PresenceState::Online, "at work"));
        resources.remove("pc");
        assert_eq!(
            best(&resources),
            presence(PresenceState::Unavailable, "away")
        );
    }
}
