//! Delivery of local accounts' messages to XMPP, and what the sender sees when it fails: a
//! notice from the contact's ghost, in reply to the message, that says why; further attempts
//! with growing pauses (kept in the store's outbox, so across restarts too) for as long as the
//! contact's server cannot be reached, up to a day; and the notice corrected once the message
//! went through.

use std::sync::Arc;
use std::time::Duration;

use causeway_matrix::store::now_ms;

use super::store::OutboxEntry;
use causeway_xmpp::server::Delivery;
use causeway_xmpp::stanza::Stanza;
use ruma::{EventId, RoomId};
use xmpp_parsers::jid::BareJid;
use xmpp_parsers::stanza_error::DefinedCondition;

use super::{Bridge, BridgeError};

/// The pause before the first retry; it doubles with each failure up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_secs(2);
const MAX_PAUSE: Duration = Duration::from_secs(300);
/// After this long, a message that could not be delivered is given up.
const GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 3600);
/// How often the outbox is looked at.
const OUTBOX_TICK: Duration = Duration::from_secs(1);
/// A message in flight whose attempt has not reported back after this long is tried again.
const IN_FLIGHT_FOR: Duration = MAX_PAUSE;

fn pause(attempts: i64) -> Duration {
    let doublings = u32::try_from(attempts.saturating_sub(1))
        .unwrap_or(u32::MAX)
        .min(16);
    (FIRST_PAUSE * 2u32.pow(doublings)).min(MAX_PAUSE)
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Why a message was not delivered, in words.
pub(super) fn reason(condition: &DefinedCondition, remote: &BareJid) -> String {
    use DefinedCondition as C;
    let domain = remote.domain();
    match condition {
        C::RemoteServerNotFound => format!("the server {domain} cannot be reached"),
        C::RemoteServerTimeout => format!("the server {domain} did not answer in time"),
        C::ServiceUnavailable | C::ItemNotFound => {
            format!("{remote} does not exist or does not accept messages")
        }
        C::NotAllowed => format!("this server does not federate with {domain}"),
        C::Forbidden | C::NotAuthorized => format!("{remote} does not accept messages from you"),
        C::ResourceConstraint => format!("the server {domain} is overloaded"),
        other => format!(
            "the XMPP error {}",
            minidom::Element::from(other.clone()).name()
        ),
    }
}

/// Whether trying again may help: the contact's server could not be reached.
fn worth_retrying(condition: &DefinedCondition) -> bool {
    matches!(
        condition,
        DefinedCondition::RemoteServerNotFound | DefinedCondition::RemoteServerTimeout
    )
}

/// The deliveries whose outcome is still to be recorded; the shutdown waits for them.
#[derive(Default)]
pub(super) struct InFlight {
    count: Arc<tokio::sync::watch::Sender<usize>>,
}

/// One delivery being followed, from before it is handed to the XMPP side.
struct Following(Arc<tokio::sync::watch::Sender<usize>>);

impl InFlight {
    fn follow(&self) -> Following {
        self.count.send_modify(|count| *count += 1);
        Following(self.count.clone())
    }
}

impl Drop for Following {
    fn drop(&mut self) {
        self.0.send_modify(|count| *count = count.saturating_sub(1));
    }
}

impl Bridge {
    /// When a message sent now is looked at again if its attempt has not reported back.
    pub(super) fn in_flight_check_at(&self) -> i64 {
        now_ms() + millis(IN_FLIGHT_FOR)
    }

    /// Waits (at most `grace`) until the outcome of every delivery under way is recorded: what
    /// was written to a peer is not sent again after a restart, and what was not stays in the
    /// outbox.
    pub async fn drain(&self, grace: Duration) {
        let mut count = self.in_flight.count.subscribe();
        if tokio::time::timeout(grace, count.wait_for(|count| *count == 0))
            .await
            .is_err()
        {
            tracing::info!(
                in_flight = *count.borrow(),
                "messages to XMPP still under way at shutdown stay in the outbox"
            );
        }
    }

    /// Sends a local account's message and follows what becomes of it.
    pub(super) fn send_message(
        &self,
        room: &RoomId,
        event: &EventId,
        remote: &BareJid,
        stanza: Stanza,
    ) {
        let Some(bridge) = self.me.upgrade() else {
            return;
        };
        let Some(s2s) = self.s2s.get().and_then(std::sync::Weak::upgrade) else {
            tracing::debug!("the XMPP side is not running: a message is not sent");
            return;
        };
        let following = self.in_flight.follow();
        let report = s2s.send_tracked(stanza);
        let (room, event, remote) = (room.to_owned(), event.to_owned(), remote.clone());
        tokio::spawn(async move {
            let _following = following;
            let outcome = match report.await {
                Ok(Delivery::Sent) => bridge.delivered(&event, &remote).await,
                Ok(Delivery::Failed(condition)) => {
                    bridge.undelivered(&room, &event, &remote, &condition).await
                }
                Err(_) => Ok(()),
            };
            if let Err(error) = outcome {
                tracing::warn!(%error, event_id = %event, "the outcome of a delivery was not recorded");
            }
        });
    }

    /// A message went through: if it had failed before, the notice says so now.
    async fn delivered(&self, event: &EventId, remote: &BareJid) -> Result<(), BridgeError> {
        let Some(entry) = self.store.outbox_remove(event.as_str()).await? else {
            return Ok(());
        };
        // The contact's server takes messages again: what waits in the room goes now.
        self.store
            .outbox_release_room(&entry.room_id, now_ms())
            .await?;
        if entry.attempts == 0 {
            // Through at the first attempt.
            return Ok(());
        }
        tracing::info!(event_id = %event, %remote, attempts = entry.attempts + 1, "a message to XMPP was delivered after waiting");
        self.correct_notice(&entry, remote, format!("✓ Delivered to {remote}, later."))
            .await
    }

    async fn undelivered(
        &self,
        room: &RoomId,
        event: &EventId,
        remote: &BareJid,
        condition: &DefinedCondition,
    ) -> Result<(), BridgeError> {
        let reason = reason(condition, remote);
        if !worth_retrying(condition) {
            self.store.outbox_remove(event.as_str()).await?;
            self.notice(
                room,
                event,
                remote,
                format!("⚠ Not delivered to {remote}: {reason}."),
            )
            .await?;
            return Ok(());
        }
        let previous = self.store.outbox_entry(event.as_str()).await?;
        let attempts = previous.as_ref().map_or(0, |entry| entry.attempts) + 1;
        let entry = self
            .store
            .outbox_failed(
                event.as_str(),
                room.as_str(),
                &reason,
                now_ms() + millis(pause(attempts)),
            )
            .await?;
        if now_ms() - entry.first_failure_ts > millis(GIVE_UP_AFTER) {
            self.store.outbox_remove(event.as_str()).await?;
            return self
                .correct_notice(
                    &entry,
                    remote,
                    format!(
                        "⚠ Not delivered to {remote}: {reason}, for a day now. Causeway gave up."
                    ),
                )
                .await;
        }
        tracing::info!(event_id = %event, %remote, attempts = entry.attempts, %reason, "a message to XMPP was not delivered; trying again later");
        if entry.notice_event_id.is_none() {
            let notice = self
                .notice(
                    room,
                    event,
                    remote,
                    format!("⚠ Not delivered to {remote} yet: {reason}. Causeway keeps trying."),
                )
                .await?;
            self.store
                .outbox_set_notice(event.as_str(), notice.as_str())
                .await?;
        }
        Ok(())
    }

    /// The ghost's notice about a message, in reply to it.
    pub(super) async fn notice(
        &self,
        room: &RoomId,
        event: &EventId,
        remote: &BareJid,
        text: String,
    ) -> Result<ruma::OwnedEventId, BridgeError> {
        let ghost = self.ghost(remote).await?;
        self.notice_replying(room, &ghost, event, text).await
    }

    /// Replaces the text of an entry's notice.
    async fn correct_notice(
        &self,
        entry: &OutboxEntry,
        remote: &BareJid,
        text: String,
    ) -> Result<(), BridgeError> {
        let (Some(notice), Ok(room)) = (
            entry
                .notice_event_id
                .as_deref()
                .and_then(|id| EventId::parse(id).ok()),
            RoomId::parse(&entry.room_id),
        ) else {
            return Ok(());
        };
        let ghost = self.ghost(remote).await?;
        self.correct(&room, &ghost, &notice, text).await
    }

    /// Tries the messages in the outbox again when they are due, for as long as the server
    /// runs.
    /// At start-up, before anything is sent: what was in flight when the server stopped goes
    /// again now, with what waited, and new messages of its room wait behind it.
    pub(super) async fn outbox_restart(&self) {
        match self.store.outbox_restart(now_ms()).await {
            Ok(0) => {}
            Ok(entries) => {
                tracing::info!(
                    entries,
                    "messages to XMPP from before the restart are sent again"
                );
            }
            Err(error) => tracing::warn!(%error, "the XMPP outbox cannot be read"),
        }
    }

    pub(super) async fn outbox_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(OUTBOX_TICK);
        loop {
            tick.tick().await;
            let now = now_ms();
            // Taken entries wait this long unless the attempt reports back sooner.
            let later = now + millis(MAX_PAUSE);
            let due = match self.store.outbox_take_due(now, later, 50).await {
                Ok(due) => due,
                Err(error) => {
                    tracing::warn!(%error, "the XMPP outbox cannot be read");
                    continue;
                }
            };
            // A room's messages go again together, in order, behind the first that is due.
            let mut rooms: Vec<String> = Vec::new();
            for entry in due {
                if !rooms.contains(&entry.room_id) {
                    rooms.push(entry.room_id);
                }
            }
            for room in rooms {
                let entries = match self.store.outbox_take_room(&room, now, later).await {
                    Ok(entries) => entries,
                    Err(error) => {
                        tracing::warn!(%error, "the XMPP outbox cannot be read");
                        continue;
                    }
                };
                for entry in entries {
                    if let Err(error) = self.retry(&entry).await {
                        tracing::warn!(%error, event_id = %entry.event_id, "a message could not be tried again");
                    }
                }
            }
        }
    }

    async fn retry(&self, entry: &OutboxEntry) -> Result<(), BridgeError> {
        let store = &self.services.store;
        let pair = self.pair_of_room(&entry.room_id).await?;
        let row = store.event(&entry.event_id).await?;
        let (Some((_, remote)), Some(row)) = (pair, row.filter(|row| row.redacted_by.is_none()))
        else {
            // Redacted, gone, or no longer in a direct chat: nothing to deliver.
            self.store.outbox_remove(&entry.event_id).await?;
            return Ok(());
        };
        let Ok(remote) = BareJid::new(&remote) else {
            self.store.outbox_remove(&entry.event_id).await?;
            return Ok(());
        };
        if now_ms() - entry.first_failure_ts > millis(GIVE_UP_AFTER) {
            self.store.outbox_remove(&entry.event_id).await?;
            let reason = &entry.reason;
            return self
                .correct_notice(
                    entry,
                    &remote,
                    format!(
                        "⚠ Not delivered to {remote}: {reason}, for a day now. Causeway gave up."
                    ),
                )
                .await;
        }
        self.event_to_xmpp(&row, true).await
    }

    /// Whether a new message of a room has to wait behind earlier ones in the outbox; if so,
    /// it joins them (with its notice) and goes when they go.
    pub(super) async fn wait_behind(
        &self,
        room: &RoomId,
        event: &EventId,
        remote: &BareJid,
    ) -> Result<bool, BridgeError> {
        let Some(next) = self.store.outbox_room_next(room.as_str()).await? else {
            return Ok(false);
        };
        let entry = self
            .store
            .outbox_failed(
                event.as_str(),
                room.as_str(),
                "earlier messages are not delivered yet",
                next,
            )
            .await?;
        if entry.notice_event_id.is_none() {
            let notice = self
                .notice(
                    room,
                    event,
                    remote,
                    format!(
                        "⚠ Not delivered to {remote} yet: it waits for earlier messages. \
                         Causeway keeps trying."
                    ),
                )
                .await?;
            self.store
                .outbox_set_notice(event.as_str(), notice.as_str())
                .await?;
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_the_maximum() {
        assert_eq!(pause(1), FIRST_PAUSE);
        assert_eq!(pause(2), FIRST_PAUSE * 2);
        assert_eq!(pause(4), FIRST_PAUSE * 8);
        assert_eq!(pause(40), MAX_PAUSE);
        assert_eq!(pause(i64::MAX), MAX_PAUSE);
    }
}
