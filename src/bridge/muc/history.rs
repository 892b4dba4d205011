//! The history a joining occupant gets (XEP-0045 §7.2.14): the room's last messages that its
//! ghost may see, as many and as recent as it asked for, within the service's limits; and the
//! subject that ends it.

use causeway_mapping::content::room::topic_to_subject;
use causeway_matrix::pdu::Pdu;
use causeway_matrix::store::{Direction, TopologicalKey};
use causeway_matrix::visibility;
use ruma::{RoomId, UserId};
use serde_json::Value;
use xmpp_parsers::jid::{BareJid, Jid};
use xmpp_parsers::message::Message;
use xmpp_parsers::muc::muc::History;

use super::Roster;
use crate::bridge::store::Occupant;
use crate::bridge::{Bridge, BridgeError};

/// Messages given when the occupant does not say how many.
const DEFAULT_HISTORY: u32 = 20;
/// The most messages given, whatever the occupant asks for.
const MAX_HISTORY: u32 = 100;
/// The most events read back to find them (the rest of a room's timeline is reached with
/// MAM).
const MAX_SCANNED: usize = 2_000;
/// Events read at once.
const PAGE: i64 = 200;

impl Bridge {
    /// Fetches the history of a room just joined through another server (its events before
    /// the join are not here yet), before the occupant is given it: no network under the
    /// room's lock.
    pub(super) async fn fetch_history(&self, room: &RoomId, request: Option<&History>) {
        let wanted = request
            .and_then(|history| history.maxstanzas)
            .unwrap_or(DEFAULT_HISTORY)
            .min(MAX_HISTORY) as usize;
        if wanted == 0 {
            return;
        }
        // Events other than messages come between them: ask for a few times as many.
        match causeway_matrix::federation::backfill::backfill(
            &self.services,
            room,
            &[],
            (wanted * 3).max(20),
        )
        .await
        {
            Ok(count) => tracing::debug!(room_id = %room, count, "fetched a room's history"),
            Err(error) => {
                tracing::info!(room_id = %room, %error, "the history of a room was not fetched")
            }
        }
    }

    /// The history for an occupant that joined at stream position `until`, oldest first.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn history(
        &self,
        room: &RoomId,
        room_jid: &BareJid,
        roster: &Roster,
        ghost: &UserId,
        to: &Jid,
        until: i64,
        request: Option<&History>,
    ) -> Result<Vec<Message>, BridgeError> {
        let request = request.cloned().unwrap_or_default();
        let wanted = request
            .maxstanzas
            .unwrap_or(DEFAULT_HISTORY)
            .min(MAX_HISTORY) as usize;
        let mut chars_left = request.maxchars.map(|chars| chars as usize);
        if wanted == 0 || chars_left == Some(0) {
            return Ok(vec![]);
        }
        let now = causeway_matrix::store::now_ms();
        let mut oldest_ms: i64 = 0;
        if let Some(seconds) = request.seconds {
            oldest_ms = now.saturating_sub(i64::from(seconds).saturating_mul(1000));
        }
        if let Some(since) = &request.since {
            oldest_ms = oldest_ms.max(since.0.timestamp_millis());
        }
        let visible = visibility::for_user(&self.services.store, room, ghost).await?;
        let occupant = Occupant {
            room_id: room.to_string(),
            jid: to.to_string(),
            room_jid: room_jid.to_string(),
            nick: String::new(),
            since_position: until,
        };
        let mut found = Vec::new();
        let mut scanned = 0;
        // The room's order (events fetched from other servers included), newest first; what
        // came after the occupant's position reaches it live.
        let mut from = TopologicalKey {
            depth: i64::MAX,
            stream: i64::MAX,
        };
        'pages: while found.len() < wanted && scanned < MAX_SCANNED {
            let rows = self
                .services
                .store
                .room_events_topological(room.as_str(), from, None, Direction::Backward, PAGE)
                .await?;
            let Some(last) = rows.last() else {
                break;
            };
            from = last.topological().before();
            let complete = rows.len() < PAGE as usize;
            for row in rows {
                scanned += 1;
                if row.stream_ordering > until
                    || row.event_type != "m.room.message"
                    || row.redacted_by.is_some()
                    || !visible.contains(row.stream_ordering)
                {
                    continue;
                }
                let pdu = Pdu::from_stored(&row.event_id, &row.json)?;
                if i64::from(pdu.origin_server_ts.get()) < oldest_ms {
                    break 'pages;
                }
                let Some(message) = self.room_message(room, &pdu, roster).await? else {
                    continue;
                };
                let stanza = self.addressed(room, &message, &occupant, true);
                if let Some(left) = &mut chars_left {
                    let size = String::from(&minidom::Element::from(stanza.clone()))
                        .chars()
                        .count();
                    if size > *left {
                        break 'pages;
                    }
                    *left -= size;
                }
                found.push(stanza);
                if found.len() >= wanted {
                    break 'pages;
                }
            }
            if complete {
                break;
            }
        }
        found.reverse();
        Ok(found)
    }

    /// The subject message that ends what a joining occupant gets: the room's topic, empty
    /// when it has none.
    pub(super) async fn subject(
        &self,
        room: &RoomId,
        room_jid: &BareJid,
        roster: &Roster,
        to: &Jid,
    ) -> Result<Message, BridgeError> {
        let topic = self
            .services
            .rooms
            .state_event(room, "m.room.topic", "")
            .await?;
        let text = topic
            .as_ref()
            .and_then(|pdu| {
                pdu.content_value()
                    .get("topic")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .unwrap_or_default();
        let mut message = topic_to_subject(&text);
        message.to = Some(to.clone());
        message.id = Some(xmpp_parsers::message::Id(format!(
            "subject-{}",
            crate::bridge::random_id()
        )));
        message.from = Some(match &topic {
            Some(pdu) => room_jid
                .with_resource_str(&super::outbound::nick_of(roster, &pdu.sender))
                .map(Jid::from)
                .unwrap_or_else(|_| Jid::from(room_jid.clone())),
            None => Jid::from(room_jid.clone()),
        });
        Ok(message)
    }
}
