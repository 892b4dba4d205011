//! Events as clients see them, for every endpoint that shows them: who may see what
//! (through [`crate::visibility`]), the state a viewer may see, the client format with what
//! `unsigned` carries (transaction ids, redactions, the state an event replaced), events of
//! erased accounts redacted, what ignored users send left out, bundled aggregations
//! ([`super::relations`]), and room event filters.

use std::collections::HashMap;
use std::sync::Arc;

use ruma::api::client::filter::RoomEventFilter;
use ruma::{RoomId, UserId};
use serde_json::{Map, Value};

use super::relations::{Bundle, bundle_aggregations};
use crate::Services;
use crate::api::ruma_wrapper::Sender;
use crate::error::Error;
use crate::pdu::{Pdu, Unsigned};
use crate::store::{EventRow, TopologicalKey, now_ms};
use crate::visibility::{self, Visible};

/// A room id read from the store (a bad one is the store's fault, not the client's).
pub fn stored_room_id(room_id: &str) -> Result<ruma::OwnedRoomId, Error> {
    RoomId::parse(room_id).map_err(|e| Error::Internal(format!("stored room id: {e}")))
}

/// Fails unless the user is joined to the room.
pub async fn require_joined(
    services: &Services,
    room_id: &RoomId,
    user_id: &UserId,
) -> Result<(), Error> {
    match services
        .rooms
        .membership(room_id, user_id)
        .await?
        .as_deref()
    {
        Some("join") => Ok(()),
        _ => Err(Error::Forbidden("you are not joined to this room".into())),
    }
}

/// The rooms a user is joined to.
pub async fn joined_rooms(services: &Services, user_id: &UserId) -> Result<Vec<String>, Error> {
    Ok(services
        .store
        .user_memberships(user_id.as_str())
        .await?
        .into_iter()
        .filter(|row| row.membership == "join")
        .map(|row| row.room_id)
        .collect())
}

/// What `user_id` may see of a room ([`crate::visibility`]); forbidden when nothing.
pub async fn visible_to(
    services: &Services,
    room_id: &RoomId,
    user_id: &UserId,
) -> Result<Visible, Error> {
    let visible = visibility::for_user(&services.store, room_id, user_id).await?;
    if visible.is_empty() {
        return Err(Error::Forbidden(
            "you are not allowed to see this room's events".into(),
        ));
    }
    Ok(visible)
}

/// What a viewer may see of each room, read once per room.
#[derive(Default)]
pub struct SeenRooms(HashMap<String, Visible>);

impl SeenRooms {
    /// What `viewer` may see of a room, read the first time it is asked.
    pub async fn of(
        &mut self,
        services: &Services,
        room_id: &str,
        viewer: &Sender,
    ) -> Result<&Visible, Error> {
        if !self.0.contains_key(room_id) {
            let parsed = stored_room_id(room_id)?;
            let visible = visibility::for_user(&services.store, &parsed, &viewer.user_id).await?;
            self.0.insert(room_id.to_owned(), visible);
        }
        self.0
            .get(room_id)
            .ok_or_else(|| Error::Internal("room visibility just read".into()))
    }

    /// What was read of a room, if it was.
    pub fn get(&self, room_id: &str) -> Option<&Visible> {
        self.0.get(room_id)
    }
}

/// The state a viewer may see: the state after the latest visible event at or before `at`
/// (the current state when what comes next is visible and no earlier point is asked for).
pub async fn state_seen_at(
    services: &Services,
    room_id: &RoomId,
    visible: &Visible,
    at: Option<i64>,
) -> Result<Vec<Arc<Pdu>>, Error> {
    if visible.is_open() && at.is_none_or(|at| at >= services.store.current_position()) {
        return services.rooms.current_state(room_id).await;
    }
    let at = at.unwrap_or(i64::MAX);
    for range in visible.latest_first() {
        if *range.start() > at {
            continue;
        }
        let upto = (*range.end()).min(at);
        if let Some(row) = services
            .store
            .last_room_event_at(room_id.as_str(), upto)
            .await?
            && row.stream_ordering >= *range.start()
        {
            return state_at_group(services, row.state_group).await;
        }
    }
    Ok(vec![])
}

/// Stored events in the client format, as seen by `viewer`, with their bundled aggregations.
pub async fn client_events(
    services: &Services,
    rows: &[EventRow],
    viewer: Option<&Sender>,
) -> Result<Vec<Map<String, Value>>, Error> {
    client_events_bundling(services, rows, viewer, Bundle::All).await
}

/// Stored events in the client format, with the aggregations `bundle` asks for.
pub async fn client_events_bundling(
    services: &Services,
    rows: &[EventRow],
    viewer: Option<&Sender>,
    bundle: Bundle,
) -> Result<Vec<Map<String, Value>>, Error> {
    if rows.is_empty() {
        return Ok(vec![]);
    }
    // What users the viewer ignores sent is not shown (state excepted), as the specification
    // says of `m.ignored_user_list`.
    let ignored = match viewer {
        Some(viewer) => ignored_users(services, &viewer.user_id).await?,
        None => Default::default(),
    };
    let shown: Vec<EventRow>;
    let rows = if ignored.is_empty() {
        rows
    } else {
        shown = rows
            .iter()
            .filter(|row| row.state_key.is_some() || !ignored.contains(&row.sender))
            .cloned()
            .collect();
        &shown
    };
    let ids: Vec<&str> = rows.iter().map(|row| row.event_id.as_str()).collect();
    let transaction_ids = match viewer {
        Some(viewer) => {
            services
                .store
                .transaction_ids(viewer.user_id.as_str(), viewer.device_id.as_str(), &ids)
                .await?
        }
        None => HashMap::new(),
    };
    let redaction_ids: Vec<String> = rows
        .iter()
        .filter_map(|row| row.redacted_by.clone())
        .collect();
    let mut redactions = HashMap::new();
    for row in services.store.events(&redaction_ids).await? {
        let room_id = stored_room_id(&row.room_id)?;
        let pdu = Pdu::from_stored(&row.event_id, &row.json)?;
        let event = pdu.to_client_value(&room_id);
        redactions.insert(row.event_id.clone(), Value::Object(event).to_string());
    }
    let unsigned = Unsigned {
        now: now_ms(),
        transaction_ids: Some(&transaction_ids),
    };
    let erased = match viewer {
        Some(viewer) => ErasedSenders::of(services, rows, &viewer.user_id).await?,
        None => ErasedSenders::default(),
    };
    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        let room_id = stored_room_id(&row.room_id)?;
        let mut pdu = Pdu::from_stored(&row.event_id, &row.json)?;
        if let Some(rules) = erased.redact(row) {
            pdu = crate::pdu::redacted(&pdu, rules)?;
        }
        let mut event = pdu.to_client_value(&room_id);
        let because = row
            .redacted_by
            .as_ref()
            .and_then(|id| redactions.get(id))
            .map(String::as_str);
        unsigned.apply(&pdu, &mut event, because);
        if let Some(state_key) = &row.state_key {
            replaced_state(services, row, state_key, &mut event).await?;
        }
        events.push(event);
    }
    if let Some(viewer) = viewer
        && bundle != Bundle::Nothing
    {
        bundle_aggregations(services, rows, &mut events, viewer, bundle).await?;
    }
    Ok(events)
}

/// `unsigned.prev_content`, `prev_sender` and `replaces_state` of a state event: the state it
/// replaced (clients read them to tell, say, that a join accepted an invite to a direct chat).
/// (Nothing of an erased account's state is shown there.)
async fn replaced_state(
    services: &Services,
    row: &EventRow,
    state_key: &str,
    event: &mut Map<String, Value>,
) -> Result<(), Error> {
    let Some((event_id, sender, content)) = services
        .store
        .replaced_state(
            &row.room_id,
            &row.event_type,
            state_key,
            row.stream_ordering,
        )
        .await?
    else {
        return Ok(());
    };
    if !services
        .store
        .erased_among(&[&sender, &row.sender])
        .await?
        .is_empty()
    {
        return Ok(());
    }
    if let Some(Value::Object(unsigned)) = event.get_mut("unsigned") {
        unsigned.insert("prev_content".into(), content);
        unsigned.insert("prev_sender".into(), Value::String(sender));
        unsigned.insert("replaces_state".into(), Value::String(event_id));
    }
    Ok(())
}

/// The users `user_id` ignores (`m.ignored_user_list` in their account data).
pub async fn ignored_users(
    services: &Services,
    user_id: &UserId,
) -> Result<std::collections::HashSet<String>, Error> {
    let Some(text) = services
        .store
        .account_data(user_id.as_str(), "", "m.ignored_user_list")
        .await?
    else {
        return Ok(Default::default());
    };
    Ok(serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|value| {
            value["ignored_users"]
                .as_object()
                .map(|users| users.keys().cloned().collect())
        })
        .unwrap_or_default())
}

/// The events of erased accounts among some rows, and whether the viewer was in the room when
/// each was sent: if not, it is shown redacted (as Synapse serves an erased user's events).
#[derive(Default)]
struct ErasedSenders {
    erased: std::collections::HashSet<String>,
    /// By room: what the viewer saw of it, and the room's rules.
    rooms: HashMap<String, (Visible, ruma::room_version_rules::RoomVersionRules)>,
}

impl ErasedSenders {
    async fn of(services: &Services, rows: &[EventRow], viewer: &UserId) -> Result<Self, Error> {
        let senders: Vec<&str> = rows
            .iter()
            .map(|row| row.sender.as_str())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let erased = services.store.erased_among(&senders).await?;
        let mut rooms = HashMap::new();
        for row in rows.iter().filter(|row| erased.contains(&row.sender)) {
            if rooms.contains_key(&row.room_id) {
                continue;
            }
            let room_id = stored_room_id(&row.room_id)?;
            let rules = services.rooms.rules(&room_id).await?;
            let visible = visibility::for_user(&services.store, &room_id, viewer).await?;
            rooms.insert(row.room_id.clone(), (visible, rules));
        }
        Ok(ErasedSenders { erased, rooms })
    }

    /// The rules to redact a row by, when it is to be shown redacted.
    fn redact(&self, row: &EventRow) -> Option<&ruma::room_version_rules::RoomVersionRules> {
        if !self.erased.contains(&row.sender) {
            return None;
        }
        let (visible, rules) = self.rooms.get(&row.room_id)?;
        (!visible.was_joined(row.stream_ordering)).then_some(rules)
    }
}

/// Client-format events of state PDUs held in memory.
pub fn client_state_events(pdus: &[Arc<Pdu>], room_id: &RoomId) -> Vec<Map<String, Value>> {
    let unsigned = Unsigned {
        now: now_ms(),
        transaction_ids: None,
    };
    pdus.iter()
        .map(|pdu| {
            let mut event = pdu.to_client_value(room_id);
            unsigned.apply(pdu, &mut event, None);
            event
        })
        .collect()
}

/// Whether an event passes a room event filter.
pub fn filter_allows(filter: &RoomEventFilter, event: &Map<String, Value>) -> bool {
    let event_type = event.get("type").and_then(Value::as_str).unwrap_or("");
    let sender = event.get("sender").and_then(Value::as_str).unwrap_or("");
    let type_matches = |pattern: &str| match pattern.strip_suffix('*') {
        Some(prefix) => event_type.starts_with(prefix),
        None => event_type == pattern,
    };
    if filter.not_types.iter().any(|t| type_matches(t)) {
        return false;
    }
    if let Some(types) = &filter.types
        && !types.iter().any(|t| type_matches(t))
    {
        return false;
    }
    if filter.not_senders.iter().any(|s| s.as_str() == sender) {
        return false;
    }
    if let Some(senders) = &filter.senders
        && !senders.iter().any(|s| s.as_str() == sender)
    {
        return false;
    }
    if let Some(wants_url) = filter.url_filter {
        let has_url = event
            .get("content")
            .and_then(|content| content.get("url"))
            .is_some();
        if has_url
            != matches!(
                wants_url,
                ruma::api::client::filter::UrlFilter::EventsWithUrl
            )
        {
            return false;
        }
    }
    true
}

/// A pagination token: a stream position (`s<position>`, and sync tokens
/// `s<position>_<typing>`), or a place in a room's topological order (`t<depth>_<stream>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomToken {
    Stream(i64),
    Topological(TopologicalKey),
}

/// Parses a pagination token.
pub fn parse_token(token: &str) -> Result<RoomToken, Error> {
    let invalid = || Error::InvalidParam(format!("invalid pagination token {token:?}"));
    let number = |text: &str| text.parse::<i64>().ok().filter(|n| *n >= 0);
    if let Some(rest) = token.strip_prefix('t') {
        let (depth, stream) = rest.split_once('_').ok_or_else(invalid)?;
        // Events fetched from other servers (backfill) have negative stream positions.
        return Ok(RoomToken::Topological(TopologicalKey {
            depth: number(depth).ok_or_else(invalid)?,
            stream: stream.parse::<i64>().map_err(|_| invalid())?,
        }));
    }
    token
        .strip_prefix('s')
        .and_then(|rest| rest.split('_').next())
        .and_then(number)
        .map(RoomToken::Stream)
        .ok_or_else(invalid)
}

/// Parses a pagination token as a stream position (a topological token by its stream part),
/// for the endpoints that read the stream rather than a room's order.
pub fn parse_position(token: &str) -> Result<i64, Error> {
    Ok(match parse_token(token)? {
        RoomToken::Stream(position) => position,
        RoomToken::Topological(key) => key.stream.max(0),
    })
}

/// The token of a place in a room's topological order.
pub fn topological_token(key: TopologicalKey) -> String {
    format!("t{}_{}", key.depth, key.stream)
}

/// The place before every event of a room.
pub const BEFORE_ALL: TopologicalKey = TopologicalKey {
    depth: 0,
    stream: 0,
};

/// The place in `room`'s topological order that a token names: a stream position is the place
/// of the room's last event at or before it.
pub async fn topological_place(
    services: &Services,
    room_id: &RoomId,
    token: RoomToken,
) -> Result<TopologicalKey, Error> {
    Ok(match token {
        RoomToken::Topological(key) => key,
        RoomToken::Stream(position) => services
            .store
            .topological_key_at(room_id.as_str(), position)
            .await?
            .unwrap_or(BEFORE_ALL),
    })
}

/// The stretch of a room's topological order a viewer may read: after the place before the
/// first visible event, up to the place of the last visible one (`(exclusive, inclusive)`).
pub async fn visible_stretch(
    services: &Services,
    room_id: &RoomId,
    visible: &Visible,
) -> Result<(TopologicalKey, TopologicalKey), Error> {
    let (first, last) = visible.bounds().unwrap_or((0, 0));
    let current = services.store.current_position().min(last);
    let lowest = topological_place(services, room_id, RoomToken::Stream(first - 1)).await?;
    let highest = topological_place(services, room_id, RoomToken::Stream(current)).await?;
    Ok((lowest, highest))
}

/// The events of a state group.
pub async fn state_at_group(services: &Services, group: i64) -> Result<Vec<Arc<Pdu>>, Error> {
    let state = services.store.state_group(group).await?;
    let ids: Vec<String> = state.into_values().collect();
    services
        .store
        .events(&ids)
        .await?
        .iter()
        .map(|row| Pdu::from_stored(&row.event_id, &row.json).map(Arc::new))
        .collect()
}
