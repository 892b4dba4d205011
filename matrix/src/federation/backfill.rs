//! Backfill: when a client pages back to an event whose predecessors this server does not
//! have (the earliest event of a room it joined through another server, or the far side of a
//! gap left when it missed more than `get_missing_events` brings), the events before it are
//! fetched from a server in the room (`GET /_matrix/federation/v1/backfill`), checked, and
//! stored in their topological place at negative stream positions: shown in `/messages`,
//! never new to sync, the bridge or other servers.

use ruma::{RoomId, ServerName};

use super::membership::{remote_error, segment};
use super::pdu;
use crate::Services;
use crate::error::Error;
use crate::pdu::Pdu;
use crate::store::EventRow;

/// The most events asked for at once.
const MAX_BACKFILL: usize = 100;

/// Fetches up to `limit` events before the first of `read` (events of a room as `/messages`
/// read them, newest first) whose predecessors are not in the timeline, or, when nothing was
/// read, before the room's earliest event; returns how many became visible (0 when nothing
/// lacks its predecessors, or no server had them).
pub async fn backfill(
    services: &Services,
    room_id: &RoomId,
    read: &[EventRow],
    limit: usize,
) -> Result<u64, Error> {
    let candidates: Vec<Pdu> = if read.is_empty() {
        match services
            .store
            .earliest_shown_event(room_id.as_str())
            .await?
        {
            Some(earliest) => vec![Pdu::from_row(&earliest)?],
            None => return Ok(0),
        }
    } else {
        read.iter().map(Pdu::from_row).collect::<Result<_, _>>()?
    };
    let mut prevs: Vec<String> = candidates
        .iter()
        .flat_map(|event| event.prev_events.iter().map(ToString::to_string))
        .collect();
    prevs.sort();
    prevs.dedup();
    // The room's first event follows nothing: nothing came before.
    if prevs.is_empty() {
        return Ok(0);
    }
    let present = services.store.in_timeline(room_id.as_str(), &prevs).await?;
    let Some(gap) = candidates.iter().find(|event| {
        event
            .prev_events
            .iter()
            .any(|id| !present.contains(id.as_str()))
    }) else {
        return Ok(0);
    };
    let rules = services.rooms.rules(room_id).await?;
    let servers = services
        .store
        .room_servers(room_id.as_str(), &["join"])
        .await?;
    for server in servers
        .iter()
        .filter(|server| *server != services.server_name.as_str())
        .filter_map(|server| ServerName::parse(server).ok())
    {
        match backfill_from(services, &server, room_id, &rules, gap, limit).await {
            Ok(shown) => return Ok(shown),
            Err(error) => {
                tracing::info!(%room_id, %server, %error, "backfill from this server failed");
            }
        }
    }
    Ok(0)
}

async fn backfill_from(
    services: &Services,
    server: &ServerName,
    room_id: &RoomId,
    rules: &ruma::room_version_rules::RoomVersionRules,
    from: &Pdu,
    limit: usize,
) -> Result<u64, Error> {
    let uri = format!(
        "/_matrix/federation/v1/backfill/{}?v={}&limit={}",
        segment(room_id.as_str()),
        segment(from.event_id.as_str()),
        (limit + 1).min(MAX_BACKFILL)
    );
    let answer = services
        .federation
        .request(server, http::Method::GET, &uri, None, true)
        .await
        .map_err(remote_error)?;
    let events: Vec<Pdu> = pdu::check_list(services, rules, answer.get("pdus"))
        .await
        .into_iter()
        .filter(|event| event.room_id_or_derived().is_ok_and(|id| id == room_id))
        .collect();
    // The auth events this server lacks come first, as outliers.
    let mut auth: Vec<String> = events
        .iter()
        .flat_map(|event| event.auth_events.iter().map(ToString::to_string))
        .filter(|id| !events.iter().any(|event| event.event_id.as_str() == id))
        .collect();
    auth.sort();
    auth.dedup();
    let stored = services.store.events(&auth).await?;
    if stored.len() < auth.len() {
        let lacking: Vec<&Pdu> = events
            .iter()
            .filter(|event| {
                event.auth_events.iter().any(|id| {
                    auth.contains(&id.to_string())
                        && !stored.iter().any(|row| row.event_id == id.as_str())
                })
            })
            .collect();
        for event in lacking.into_iter().take(5) {
            pdu::fetch_auth_chain(services, server, room_id, rules, &event.event_id).await?;
        }
    }
    services.rooms.store_backfilled(room_id, events).await
}
