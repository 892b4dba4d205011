//! `GET /_matrix/client/v3/sync`: initial and incremental sync with long-polling.
//!
//! A sync token is `s<stream position>_<typing serial>`. Everything persisted (events, account
//! data, receipts, presence) has a position in the one stream; typing notifications, which are
//! kept in memory only, have their own serial. A sync with nothing new waits until either
//! changes or the timeout passes.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use ruma::api::client::filter::{FilterDefinition, LazyLoadOptions, RoomEventFilter};
use ruma::api::client::sync::sync_events::v3 as sync;
use ruma::presence::PresenceState;
use ruma::{RoomId, UInt, UserId};
use serde_json::{Map, Value, json};

use crate::Services;
use crate::api::client::events::{
    client_events, client_state_events, filter_allows, topological_token,
};
use crate::api::ruma_wrapper::{Ruma, Sender};
use crate::error::Error;
use crate::pdu::{Pdu, raw_event};
use crate::store::{Change, Direction, EventRow, MembershipRow, now_ms};
use crate::visibility;

/// The default number of timeline events per room.
const DEFAULT_TIMELINE_LIMIT: u64 = 10;

/// A parsed sync token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncToken {
    pub position: i64,
    pub typing: u64,
}

impl SyncToken {
    pub fn parse(token: &str) -> Result<SyncToken, Error> {
        let invalid = || Error::InvalidParam(format!("invalid sync token {token:?}"));
        let rest = token.strip_prefix('s').ok_or_else(invalid)?;
        let (position, typing) = match rest.split_once('_') {
            Some((position, typing)) => (position, typing.parse().map_err(|_| invalid())?),
            None => (rest, 0),
        };
        let position: i64 = position.parse().map_err(|_| invalid())?;
        if position < 0 {
            return Err(invalid());
        }
        Ok(SyncToken { position, typing })
    }

    pub fn encode(&self) -> String {
        format!("s{}_{}", self.position, self.typing)
    }
}

/// Fills in what ruma leaves out of a sync response when empty or false and clients read
/// without checking (as Synapse sends them): each room's `timeline.limited` and `events`, and
/// its `state`, `account_data` and `ephemeral` events.
pub fn complete_response(response: &mut Value) {
    for (section, parts) in [
        (
            "join",
            &["timeline", "state", "account_data", "ephemeral"][..],
        ),
        ("leave", &["timeline", "state", "account_data"][..]),
    ] {
        // (`get_mut`, not indexing: indexing would add the sections that are not there.)
        let Some(rooms) = response
            .get_mut("rooms")
            .and_then(|rooms| rooms.get_mut(section))
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        for room in rooms.values_mut() {
            let Some(room) = room.as_object_mut() else {
                continue;
            };
            for part in parts {
                let part = room.entry(*part).or_insert_with(|| json!({}));
                if let Some(part) = part.as_object_mut() {
                    part.entry("events").or_insert_with(|| json!([]));
                }
            }
            if let Some(timeline) = room.get_mut("timeline").and_then(Value::as_object_mut) {
                timeline.entry("limited").or_insert(Value::Bool(false));
            }
        }
    }
}

/// # `GET /_matrix/client/v3/sync`
pub async fn sync_events_route(
    services: Arc<Services>,
    request: Ruma<sync::Request>,
) -> Result<sync::Response, Error> {
    let sender = request.sender()?.clone();
    let body = request.body;
    let filter = match &body.filter {
        Some(sync::Filter::FilterDefinition(definition)) => definition.clone(),
        Some(sync::Filter::FilterId(id)) => {
            let stored = match id.parse::<i64>() {
                Ok(id) => services.store.filter(sender.user_id.as_str(), id).await?,
                Err(_) => None,
            };
            let stored =
                stored.ok_or_else(|| Error::InvalidParam(format!("unknown filter {id}")))?;
            serde_json::from_str(&stored)
                .map_err(|e| Error::Internal(format!("stored filter: {e}")))?
        }
        _ => FilterDefinition::default(),
    };
    let since = body.since.as_deref().map(SyncToken::parse).transpose()?;
    if body.set_presence != PresenceState::Offline {
        let state = body.set_presence.as_str();
        let current = services.store.presence(sender.user_id.as_str()).await?;
        // Only a change is written: a write per sync would wake every other sync.
        if current.as_ref().is_none_or(|p| p.state != state) {
            let status = current.and_then(|p| p.status_msg);
            services
                .store
                .set_presence(sender.user_id.as_str(), state, status.as_deref())
                .await?;
        }
    }
    let max_timeout = Duration::from_millis(services.config.limits.max_sync_timeout_ms);
    let timeout = body.timeout.unwrap_or_default().min(max_timeout);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut positions = services.store.subscribe();
    let mut typing = services.typing.subscribe();
    let mut at = observe(&services, &mut positions, &mut typing);
    let (mut response, has_content, mut rooms) =
        compute(&services, &sender, &filter, since, body.full_state, at).await?;
    if has_content || since.is_none() || body.full_state {
        return Ok(response);
    }
    loop {
        let woke = tokio::time::timeout_at(deadline, async {
            tokio::select! {
                changed = positions.changed() => changed.is_ok(),
                changed = typing.changed() => changed.is_ok(),
                () = services.shutting_down() => false,
            }
        })
        .await;
        if !matches!(woke, Ok(true)) {
            // Timed out (or the server is shutting down): answer with nothing new.
            return Ok(response);
        }
        let now = observe(&services, &mut positions, &mut typing);
        // Woken by what concerns neither the user nor their rooms: the response stays as it
        // was, and the sync waits on.
        if !may_have_changed(&services, &sender, &rooms, at) {
            continue;
        }
        let has_content;
        (response, has_content, rooms) =
            compute(&services, &sender, &filter, since, body.full_state, now).await?;
        at = now;
        if has_content {
            return Ok(response);
        }
    }
}

/// The positions now, the channels that announce them marked seen first (a change after
/// this wakes the waiting sync).
fn observe(
    services: &Services,
    positions: &mut tokio::sync::watch::Receiver<i64>,
    typing: &mut tokio::sync::watch::Receiver<u64>,
) -> SyncToken {
    positions.borrow_and_update();
    typing.borrow_and_update();
    SyncToken {
        position: services.store.current_position(),
        typing: services.typing.current(),
    }
}

/// Whether anything a sync shows `sender` may have changed after `at` (the stream position
/// and typing serial of the last response), in the user's `rooms` or of the user: their
/// memberships, account data, to-device messages, anyone's device lists or presence. What
/// the stream records is never missed (every position comes with a recorded change); a
/// false "maybe" only costs a response computed again.
fn may_have_changed(services: &Services, sender: &Sender, rooms: &[String], at: SyncToken) -> bool {
    let changes = services.store.changes();
    let user = sender.user_id.as_str();
    let changed = |change: Change| changes.changed_since(&change, at.position);
    if changed(Change::Membership(user.to_owned()))
        || changed(Change::AccountData(user.to_owned()))
        || changed(Change::ToDevice(
            user.to_owned(),
            sender.device_id.as_str().to_owned(),
        ))
        || changed(Change::DeviceLists)
        || changed(Change::Presence)
    {
        return true;
    }
    let typing: HashSet<String> = services
        .typing
        .changed_since(at.typing)
        .into_iter()
        .map(|room| room.to_string())
        .collect();
    // Member changes, resolved state and read positions come with an event or a receipt of
    // their room: `Room` and `Receipts` say them too.
    rooms.iter().any(|room| {
        typing.contains(room)
            || changed(Change::Room(room.clone()))
            || changed(Change::Receipts(room.clone()))
    })
}

fn timeline_limit(filter: &RoomEventFilter) -> i64 {
    let limit = filter
        .limit
        .map(u64::from)
        .unwrap_or(DEFAULT_TIMELINE_LIMIT)
        .clamp(1, 1000);
    i64::try_from(limit).unwrap_or(10)
}

fn room_selected(filter: &FilterDefinition, room_id: &RoomId) -> bool {
    if filter.room.not_rooms.iter().any(|r| r == room_id) {
        return false;
    }
    filter
        .room
        .rooms
        .as_ref()
        .is_none_or(|rooms| rooms.iter().any(|r| r == room_id))
}

fn without_room_id(mut event: Map<String, Value>) -> Map<String, Value> {
    event.remove("room_id");
    event
}

/// Builds one sync response for the positions in `now`; says whether it holds anything new,
/// and gives the rooms it looked at (every room the user has a membership of).
async fn compute(
    services: &Services,
    sender: &Sender,
    filter: &FilterDefinition,
    since: Option<SyncToken>,
    full_state: bool,
    now: SyncToken,
) -> Result<(sync::Response, bool, Vec<String>), Error> {
    let mut response = sync::Response::new(now.encode());
    let mut has_content = false;
    let since_position = since.map(|s| s.position).unwrap_or(0);
    if since.is_none() {
        // An initial sync: the device starts over without member events.
        services
            .lazy_members
            .reset(sender.user_id.as_str(), sender.device_id.as_str());
    }
    let changes = services.store.changes();
    let changed =
        |change: Change| since.is_none() || changes.changed_since(&change, since_position);
    let memberships = services
        .store
        .user_memberships(sender.user_id.as_str())
        .await?;
    // Account data is read once and handed to the rooms it belongs to.
    let mut account_data = if changed(Change::AccountData(sender.user_id.to_string())) {
        services
            .store
            .account_data_since(sender.user_id.as_str(), since_position, now.position)
            .await?
    } else {
        vec![]
    };
    // A first sync carries the push rules also when the user never changed them (clients
    // evaluate them for encrypted rooms), as Synapse does.
    if since.is_none()
        && !account_data
            .iter()
            .any(|(room, data_type, _)| room.is_empty() && data_type == "m.push_rules")
    {
        let rules = crate::api::client::user_data::ruleset(services, &sender.user_id).await?;
        let content =
            json!({ "global": crate::api::client::user_data::ruleset_json(&rules)? }).to_string();
        account_data.push((String::new(), "m.push_rules".to_owned(), content));
    }
    let ignored = crate::api::client::events::ignored_users(services, &sender.user_id).await?;
    for row in &memberships {
        let Ok(room_id) = RoomId::parse(&row.room_id) else {
            continue;
        };
        if !room_selected(filter, &room_id) {
            continue;
        }
        match row.membership.as_str() {
            "join" => {
                let room_data = RoomSync {
                    membership: row,
                    since,
                    full_state,
                    now,
                    account_data: &account_data,
                };
                if let Some(room) =
                    joined_room(services, sender, filter, &room_id, room_data).await?
                {
                    response.rooms.join.insert(room_id.clone(), room);
                    has_content = true;
                }
            }
            "invite" if since.is_none() || row.stream_ordering > since_position => {
                // Invites from ignored users are not shown.
                if !ignored.is_empty()
                    && let Some(invite) = services.store.event(&row.event_id).await?
                    && ignored.contains(&invite.sender)
                {
                    continue;
                }
                let mut room = sync::InvitedRoom::new();
                room.invite_state =
                    sync::InviteState::from(stripped_room_state(services, &room_id, row).await?);
                response.rooms.invite.insert(room_id.clone(), room);
                has_content = true;
            }
            "knock" if since.is_none() || row.stream_ordering > since_position => {
                let mut room = sync::KnockedRoom::new();
                let mut state = sync::KnockState::new();
                state.events = stripped_room_state(services, &room_id, row).await?;
                room.knock_state = state;
                response.rooms.knock.insert(room_id.clone(), room);
                has_content = true;
            }
            "leave" | "ban" => {
                let include = match since {
                    Some(_) => row.stream_ordering > since_position,
                    None => filter.room.include_leave,
                };
                if include {
                    response.rooms.leave.insert(
                        room_id.clone(),
                        left_room(services, sender, filter, &room_id, row, since).await?,
                    );
                    has_content = true;
                }
            }
            _ => {}
        }
    }

    // End-to-end encryption: to-device messages, device lists and key counts.
    let device = crate::api::client::keys::device_sync_data(
        services,
        &sender.user_id,
        sender.device_id.as_str(),
        since.map(|s| s.position),
        now.position,
    )
    .await?;
    if !device.to_device.is_empty() || !device.changed.is_empty() || !device.left.is_empty() {
        has_content = true;
    }
    for event in device.to_device {
        response
            .to_device
            .events
            .push(raw_event(json_object(event))?);
    }
    response.device_lists.changed = device.changed;
    response.device_lists.left = device.left;
    for (algorithm, count) in device.one_time_key_counts {
        response.device_one_time_keys_count.insert(
            algorithm.as_str().into(),
            UInt::try_from(count.max(0) as u64).unwrap_or_default(),
        );
    }
    response.device_unused_fallback_key_types = Some(
        device
            .unused_fallback
            .iter()
            .map(|algorithm| algorithm.as_str().into())
            .collect(),
    );

    // Global account data.
    for (room_id, data_type, content) in &account_data {
        if !room_id.is_empty() || filter.account_data.not_types.iter().any(|t| t == "*") {
            continue;
        }
        let content: Value = serde_json::from_str(content).unwrap_or(json!({}));
        response.account_data.events.push(raw_event(json_object(
            json!({"type": data_type, "content": content}),
        ))?);
        has_content = true;
    }

    // Presence of the users sharing a room with the sender.
    let presence_wanted = !filter
        .presence
        .not_types
        .iter()
        .any(|t| t == "*" || t == "m.presence");
    if presence_wanted && changed(Change::Presence) {
        let shared_users =
            crate::api::client::keys::users_sharing_rooms(services, &sender.user_id).await?;
        let now_ms = now_ms();
        for presence in services
            .store
            .presence_since(since_position, now.position)
            .await?
        {
            if !shared_users.contains(&presence.user_id) {
                continue;
            }
            let mut content = json!({
                "presence": presence.state,
                "last_active_ago": (now_ms - presence.last_active_ts).max(0),
                "currently_active": presence.state == "online",
            });
            if let Some(status) = &presence.status_msg {
                content["status_msg"] = json!(status);
            }
            response.presence.events.push(raw_event(json_object(json!({
                "type": "m.presence",
                "sender": presence.user_id,
                "content": content,
            })))?);
            has_content = true;
        }
    }
    let rooms = memberships.into_iter().map(|row| row.room_id).collect();
    Ok((response, has_content, rooms))
}

fn json_object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// What a joined room's part of a sync is computed from.
struct RoomSync<'a> {
    membership: &'a MembershipRow,
    since: Option<SyncToken>,
    full_state: bool,
    now: SyncToken,
    /// The sender's account data changed since the token: `(room, type, content)`.
    account_data: &'a [(String, String, String)],
}

async fn joined_room(
    services: &Services,
    sender: &Sender,
    filter: &FilterDefinition,
    room_id: &RoomId,
    data: RoomSync<'_>,
) -> Result<Option<sync::JoinedRoom>, Error> {
    let RoomSync {
        membership,
        since,
        full_state,
        now,
        account_data,
    } = data;
    let since_position = since.map(|s| s.position).unwrap_or(0);
    let newly_joined = since.is_none() || membership.stream_ordering > since_position;
    let limit = timeline_limit(&filter.room.timeline);
    // A room joined since the last sync shows its recent history, as at an initial sync
    // (what was said before the join, such as the message that came with the invite). A new
    // member event of someone joined before (a profile change) is no new join.
    let joined_before = match since {
        Some(_) if newly_joined => {
            services
                .store
                .membership_at(room_id.as_str(), sender.user_id.as_str(), since_position)
                .await?
                .as_deref()
                == Some("join")
        }
        _ => false,
    };
    let timeline_after = if newly_joined && !joined_before {
        0
    } else {
        since_position
    };
    let mut rows = services
        .store
        .room_events(
            room_id.as_str(),
            timeline_after,
            now.position,
            Direction::Backward,
            limit + 1,
        )
        .await?;
    let limited = rows.len() as i64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(10));
    rows.reverse();
    // Everything after the member's latest member event is visible to them (they are joined);
    // what came before depends on the room's history visibility.
    if timeline_after < membership.stream_ordering {
        let visible = visibility::for_user(&services.store, room_id, &sender.user_id).await?;
        rows.retain(|row| visible.contains(row.stream_ordering));
    }
    let mut room = sync::JoinedRoom::new();
    let timeline_events = client_events(services, &rows, Some(sender)).await?;
    let timeline_ids: HashSet<String> = rows.iter().map(|row| row.event_id.clone()).collect();
    let mut senders: BTreeSet<String> = BTreeSet::new();
    // The syncing user's own member event goes with a room's whole state (an initial sync, a
    // new join, full state), as Synapse does; otherwise only the timeline's senders count.
    if since.is_none() || newly_joined || full_state {
        senders.insert(sender.user_id.to_string());
    }
    for event in timeline_events {
        if filter_allows(&filter.room.timeline, &event) {
            if let Some(sender) = event.get("sender").and_then(Value::as_str) {
                senders.insert(sender.to_owned());
            }
            room.timeline
                .events
                .push(raw_event(without_room_id(event))?);
        }
    }
    room.timeline.limited = limited;
    room.timeline.prev_batch = Some(match rows.first() {
        Some(first) => topological_token(first.topological().before()),
        None => format!("s{}", now.position),
    });

    // State between `since` and the start of the timeline.
    let first_timeline = rows
        .first()
        .map(|row| row.stream_ordering)
        .unwrap_or(i64::MAX);
    // What state resolution changed since the last sync, beyond the events of the stream.
    let resolved_changes = if since.is_some()
        && services
            .store
            .changes()
            .changed_since(&Change::ResolvedState(room_id.to_string()), since_position)
    {
        services
            .store
            .resolved_state_changes(room_id.as_str(), since_position, now.position + 1)
            .await?
    } else {
        Vec::new()
    };
    let state_wanted = full_state || newly_joined || limited || !resolved_changes.is_empty();
    let (lazy, include_redundant) = match &filter.room.state.lazy_load_options {
        LazyLoadOptions::Enabled {
            include_redundant_members,
        } => (true, *include_redundant_members),
        _ => (false, false),
    };
    let current = if state_wanted || (lazy && !rows.is_empty()) {
        services.rooms.current_state(room_id).await?
    } else {
        vec![]
    };
    let is_member_of = |pdu: &Pdu, users: &BTreeSet<String>| {
        pdu.event_type.to_string() == "m.room.member"
            && pdu
                .state_key
                .as_ref()
                .is_some_and(|key| users.contains(key))
    };
    let mut selected: Vec<Arc<Pdu>> = Vec::new();
    if state_wanted {
        let candidates: Vec<Arc<Pdu>> = current
            .iter()
            .filter(|pdu| !timeline_ids.contains(pdu.event_id.as_str()))
            .filter(|pdu| {
                !lazy
                    || pdu.event_type.to_string() != "m.room.member"
                    || is_member_of(pdu, &senders)
            })
            .cloned()
            .collect();
        selected = if full_state || newly_joined {
            candidates
        } else {
            // Only what changed since the last sync, before the timeline starts.
            // New events of the state, and older ones that state resolution brought back.
            let ids: Vec<String> = candidates.iter().map(|p| p.event_id.to_string()).collect();
            let mut changed: HashSet<String> = services
                .store
                .events(&ids)
                .await?
                .into_iter()
                .filter(|row| {
                    row.stream_ordering > since_position && row.stream_ordering < first_timeline
                })
                .map(|row| row.event_id)
                .collect();
            changed.extend(resolved_changes.iter().cloned());
            candidates
                .into_iter()
                .filter(|pdu| changed.contains(pdu.event_id.as_str()))
                .collect()
        };
    }
    if lazy && !current.is_empty() {
        let device = (sender.user_id.as_str(), sender.device_id.as_str());
        // The member events of the timeline's senders that this device has not been sent
        // (all of them with `include_redundant_members`).
        if !(full_state || newly_joined) {
            let chosen: HashSet<String> = selected
                .iter()
                .map(|pdu| pdu.event_id.to_string())
                .collect();
            for pdu in &current {
                if is_member_of(pdu, &senders)
                    && !timeline_ids.contains(pdu.event_id.as_str())
                    && !chosen.contains(pdu.event_id.as_str())
                    && (include_redundant
                        || !services.lazy_members.has(
                            device,
                            room_id.as_str(),
                            pdu.state_key.as_deref().unwrap_or_default(),
                            pdu.event_id.as_str(),
                        ))
                {
                    selected.push(pdu.clone());
                }
            }
        }
        let timeline_members = rows
            .iter()
            .filter(|row| row.event_type == "m.room.member")
            .filter_map(|row| Some((row.state_key.as_deref()?, row.event_id.as_str())));
        let state_members = selected
            .iter()
            .filter(|pdu| pdu.event_type.to_string() == "m.room.member")
            .filter_map(|pdu| Some((pdu.state_key.as_deref()?, pdu.event_id.as_str())));
        services.lazy_members.record(
            device,
            room_id.as_str(),
            timeline_members.chain(state_members),
        );
    }
    if state_wanted || !selected.is_empty() {
        let state_events: Vec<_> = client_state_events(&selected, room_id)
            .into_iter()
            .filter(|event| filter_allows(&filter.room.state, event))
            .map(|event| raw_event(without_room_id(event)))
            .collect::<Result<_, _>>()?;
        room.state = sync::State::Before(sync::StateEvents::with_events(state_events));
    }

    // Ephemeral: typing and receipts.
    let typing_changed = since.is_none_or(|s| services.typing.last_change(room_id) > s.typing);
    if typing_changed
        && !filter
            .room
            .ephemeral
            .not_types
            .iter()
            .any(|t| t == "m.typing")
    {
        let users = services.typing.users(room_id);
        if since.is_some() || !users.is_empty() {
            room.ephemeral.events.push(raw_event(json_object(json!({
                "type": "m.typing",
                "content": {"user_ids": users},
            })))?);
        }
    }
    let receipts_changed = since.is_none()
        || services
            .store
            .changes()
            .changed_since(&Change::Receipts(room_id.to_string()), since_position);
    let receipts = if receipts_changed {
        services
            .store
            .receipts_since(room_id.as_str(), since_position, now.position)
            .await?
    } else {
        vec![]
    };
    if !receipts.is_empty()
        && !filter
            .room
            .ephemeral
            .not_types
            .iter()
            .any(|t| t == "m.receipt")
    {
        let mut content = Map::new();
        for receipt in receipts {
            // Private receipts are only for their owner.
            if receipt.receipt_type == "m.read.private"
                && receipt.user_id != sender.user_id.as_str()
            {
                continue;
            }
            let mut entry = json!({"ts": receipt.ts});
            if !receipt.thread_id.is_empty() {
                entry["thread_id"] = json!(receipt.thread_id);
            }
            let by_event = content
                .entry(receipt.event_id.clone())
                .or_insert_with(|| json!({}));
            by_event[&receipt.receipt_type][&receipt.user_id] = entry;
        }
        if !content.is_empty() {
            room.ephemeral.events.push(raw_event(json_object(json!({
                "type": "m.receipt",
                "content": content,
            })))?);
        }
    }

    // Room account data.
    for (data_room, data_type, content) in account_data {
        if data_room != room_id.as_str() {
            continue;
        }
        let content: Value = serde_json::from_str(content).unwrap_or(json!({}));
        room.account_data.events.push(raw_event(json_object(
            json!({"type": data_type, "content": content}),
        ))?);
    }

    let empty = room.timeline.events.is_empty()
        && room.ephemeral.events.is_empty()
        && room.account_data.events.is_empty()
        && matches!(&room.state, sync::State::Before(s) if s.events.is_empty());
    if empty && !newly_joined {
        return Ok(None);
    }
    // Counts change only with new events or a moved read position, which both put the room in
    // the response (its timeline, or a receipt in its ephemeral events).
    let counts = services
        .notification_counts
        .counts(services, &sender.user_id, room_id, now.position)
        .await?;
    room.unread_notifications.notification_count = UInt::try_from(counts.notify).ok();
    room.unread_notifications.highlight_count = UInt::try_from(counts.highlight).ok();
    if newly_joined
        || room.timeline.events.iter().any(|e| {
            e.get_field::<String>("type").ok().flatten().as_deref() == Some("m.room.member")
        })
    {
        room.summary = summary(services, room_id, &sender.user_id).await?;
    }
    Ok(Some(room))
}

async fn summary(
    services: &Services,
    room_id: &RoomId,
    viewer: &UserId,
) -> Result<sync::RoomSummary, Error> {
    let joined = services
        .store
        .room_members(room_id.as_str(), "join")
        .await?;
    let invited = services
        .store
        .room_members(room_id.as_str(), "invite")
        .await?;
    let mut summary = sync::RoomSummary::new();
    summary.joined_member_count = UInt::try_from(joined.len() as u64).ok();
    summary.invited_member_count = UInt::try_from(invited.len() as u64).ok();
    // The first five joined or invited members in the order they came, never the viewer;
    // without any, those who left or were banned (as the specification says).
    for memberships in [["join", "invite"], ["leave", "ban"]] {
        summary.heroes = services
            .store
            .room_members_in_order(room_id.as_str(), memberships, 6)
            .await?
            .iter()
            .filter(|user| user.as_str() != viewer.as_str())
            .take(5)
            .filter_map(|user| UserId::parse(user).ok())
            .collect();
        if !summary.heroes.is_empty() {
            break;
        }
    }
    Ok(summary)
}

/// The state shown with an invite or a knock: stripped events that let a client present the
/// room, with the membership event (of the inviter's, or the knock).
async fn stripped_room_state(
    services: &Services,
    room_id: &RoomId,
    membership: &MembershipRow,
) -> Result<Vec<ruma::serde::Raw<ruma::events::AnyStrippedStateEvent>>, Error> {
    let invite = services.store.event(&membership.event_id).await?;
    let mut events = Vec::new();
    if services.rooms.exists(room_id).await? {
        let inviter = invite.as_ref().map(|row| row.sender.clone());
        let mut members = vec![membership.user_id.as_str()];
        members.extend(inviter.as_deref());
        for event in crate::federation::invites::stripped_state(services, room_id, &members).await?
        {
            events.push(raw_event(json_object(event))?);
        }
    } else {
        // A room of another server: the state its invite or knock came with, and the
        // membership event.
        let kept = services
            .store
            .invite_state(room_id.as_str(), membership.user_id.as_str())
            .await?
            .and_then(|state| serde_json::from_str::<Vec<Value>>(&state).ok())
            .unwrap_or_default();
        for event in kept {
            events.push(raw_event(json_object(event))?);
        }
        if let Some(row) = &invite {
            let pdu = crate::pdu::Pdu::from_row(row)?;
            events.push(raw_event(json_object(json!({
                "type": "m.room.member",
                "state_key": pdu.state_key,
                "content": pdu.content_value(),
                "sender": pdu.sender,
            })))?);
        }
    }
    Ok(events)
}

async fn left_room(
    services: &Services,
    sender: &Sender,
    filter: &FilterDefinition,
    room_id: &RoomId,
    membership: &MembershipRow,
    since: Option<SyncToken>,
) -> Result<sync::LeftRoom, Error> {
    let since_position = since.map(|s| s.position).unwrap_or(0);
    let limit = timeline_limit(&filter.room.timeline);
    let mut rows = services
        .store
        .room_events(
            room_id.as_str(),
            since_position,
            membership.stream_ordering,
            Direction::Backward,
            limit + 1,
        )
        .await?;
    let limited = rows.len() as i64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(10));
    rows.reverse();
    // What the viewer may see of the history, and their own leave (or ban) in any case, as the
    // reason the room is in this section.
    let visible = visibility::for_user(&services.store, room_id, &sender.user_id).await?;
    let rows: Vec<EventRow> = rows
        .into_iter()
        .filter(|row| visible.contains(row.stream_ordering) || row.event_id == membership.event_id)
        .collect();
    let mut room = sync::LeftRoom::new();
    for event in client_events(services, &rows, Some(sender)).await? {
        if filter_allows(&filter.room.timeline, &event) {
            room.timeline
                .events
                .push(raw_event(without_room_id(event))?);
        }
    }
    room.timeline.limited = limited;
    room.timeline.prev_batch = rows
        .first()
        .map(|first| topological_token(first.topological().before()));
    // The room's state as the user last saw it (as their leave or ban left it), but what the
    // timeline shows: a left room carries its state, so that a client can show it.
    {
        let timeline_ids: HashSet<&str> = rows.iter().map(|row| row.event_id.as_str()).collect();
        let state =
            crate::api::client::events::state_seen_at(services, room_id, &visible, None).await?;
        let state: Vec<Arc<Pdu>> = state
            .into_iter()
            .filter(|pdu| !timeline_ids.contains(pdu.event_id.as_str()))
            .collect();
        let events: Vec<_> = client_state_events(&state, room_id)
            .into_iter()
            .filter(|event| filter_allows(&filter.room.state, event))
            .map(|event| raw_event(without_room_id(event)))
            .collect::<Result<_, _>>()?;
        room.state = sync::State::Before(sync::StateEvents::with_events(events));
    }
    Ok(room)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        let token = SyncToken {
            position: 42,
            typing: 7,
        };
        assert_eq!(SyncToken::parse(&token.encode()).unwrap(), token);
        assert_eq!(SyncToken::parse("s5").unwrap().position, 5);
        for bad in ["", "5", "s", "s-1_0", "sx_1", "s1_x"] {
            assert!(SyncToken::parse(bad).is_err(), "{bad}");
        }
    }
}
