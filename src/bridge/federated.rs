//! Direct chats between XMPP users and other servers' Matrix users. A chat the XMPP user
//! starts is a room of this server that invites the Matrix user through their server
//! (`Bridge::bring_back`); a chat the Matrix user starts is a room of their server, to which
//! they invite the XMPP user's ghost: the ghost joins it through that server, and the room
//! becomes the pair's direct room. Either way, what the Matrix user says there reaches the
//! XMPP user as the chat of `user%server@domain`.

use std::time::Duration;

use causeway_matrix::create_room::member_content;
use causeway_matrix::federation::invites::reject_remote_invite;
use causeway_matrix::federation::membership::join_remote;
use ruma::{RoomId, UserId};
use serde_json::Value;

use super::{Bridge, BridgeError};

/// How many times the ghost tries to join (or decline) through the inviting server.
const ATTEMPTS: u32 = 5;
/// The wait before the second try; it doubles after each.
const FIRST_RETRY: Duration = Duration::from_millis(500);

impl Bridge {
    /// Another server's user invited an XMPP user's ghost to a room of their server: into a
    /// direct chat, the ghost joins and the room becomes the chat of the two; into anything
    /// else, or while the two have a direct chat already, it declines.
    pub(super) async fn ghost_invited_remotely(
        &self,
        room: &RoomId,
        ghost: &UserId,
        inviter: &UserId,
        is_direct: bool,
    ) -> Result<(), BridgeError> {
        if self.services.is_local(inviter) {
            return Ok(());
        }
        if !is_direct {
            return self
                .decline(
                    room,
                    ghost,
                    "XMPP users take part in direct chats; group chats with them are XMPP group chats (MUC)",
                )
                .await;
        }
        let remote = self.gateway.user_to_jid(ghost)?.to_bare();
        self.ghost(&remote).await?;
        let lock = self.pair_lock(inviter, &remote);
        let _pair = lock.lock().await;
        if let Some(old) = self.room_of_pair(inviter, &remote).await?
            && *old != *room
            && matches!(
                self.services
                    .rooms
                    .membership(&old, inviter)
                    .await?
                    .as_deref(),
                Some("join" | "invite")
            )
        {
            let reason = format!("You have a direct chat with {remote} already: {old}");
            return self.decline(room, ghost, &reason).await;
        }
        let content = match member_content(&self.services, ghost, "join").await? {
            Value::Object(content) => content,
            _ => serde_json::Map::new(),
        };
        let servers = [inviter.server_name().to_owned()];
        retried("the ghost's join", || {
            join_remote(&self.services, room, ghost, &servers, content.clone())
        })
        .await?;
        self.record_room_of_pair(inviter, &remote, room, true)
            .await?;
        tracing::info!(room_id = %room, matrix_user = %inviter, %remote, "a direct chat of another server's user with an XMPP contact");
        Ok(())
    }

    /// Declines an invite of a ghost to another server's room, through that server.
    async fn decline(
        &self,
        room: &RoomId,
        ghost: &UserId,
        reason: &str,
    ) -> Result<(), BridgeError> {
        retried("declining an invite", || {
            reject_remote_invite(&self.services, room, ghost, Some(reason))
        })
        .await?;
        Ok(())
    }
}

/// Runs `attempt` until it succeeds, up to [`ATTEMPTS`] times with growing pauses: the
/// inviting server may still be storing the invite it sent when the first try reaches it.
async fn retried<F, Fut>(what: &str, mut attempt: F) -> Result<(), causeway_matrix::error::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), causeway_matrix::error::Error>>,
{
    let mut wait = FIRST_RETRY;
    let mut tries = 1;
    loop {
        match attempt().await {
            Ok(()) => return Ok(()),
            Err(error) if tries < ATTEMPTS => {
                tracing::debug!(%error, tries, "{what} is tried again");
                tokio::time::sleep(wait).await;
                wait *= 2;
                tries += 1;
            }
            Err(error) => return Err(error),
        }
    }
}
