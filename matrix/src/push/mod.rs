//! Notification counts: how many events since a user last read a room their push rules say
//! notify, and how many of those highlight.
//!
//! Counts are computed when a user syncs, from their read position (their latest read receipt
//! or own event) and their push rules, and kept in memory per user and room so that each later
//! sync only evaluates the events that arrived since. A moved read position starts the count
//! again. At most [`MAX_EVALUATED`] unread events are evaluated; clients show larger counts as
//! "many" anyway.

use std::collections::{BTreeMap, HashMap};

use ruma::power_levels::NotificationPowerLevels;
use ruma::push::{
    Action, FlattenedJson, PushConditionPowerLevelsCtx, PushConditionRoomCtx, Ruleset,
};
use ruma::room_version_rules::RoomPowerLevelsRules;
use ruma::{Int, RoomId, UInt, UserId};
use serde_json::Value;

use crate::Services;
use crate::error::Error;
use crate::pdu::{Pdu, raw_event};
use crate::store::{Change, Direction};

pub mod gateway;
pub mod notifier;

/// The most unread events evaluated for one count.
pub const MAX_EVALUATED: i64 = 1000;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub notify: u64,
    pub highlight: u64,
}

#[derive(Debug, Clone, Copy)]
struct Cached {
    read_position: i64,
    evaluated_to: i64,
    counts: Counts,
}

/// The in-memory cache of notification counts.
#[derive(Default)]
pub struct NotificationCounts {
    cache: std::sync::Mutex<HashMap<(String, String), Cached>>,
}

impl NotificationCounts {
    /// The counts of a user in a room, with events up to stream position `now`.
    pub async fn counts(
        &self,
        services: &Services,
        user_id: &UserId,
        room_id: &RoomId,
        now: i64,
    ) -> Result<Counts, Error> {
        let key = (user_id.to_string(), room_id.to_string());
        let previous = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)
            .copied()
            .filter(|cached| cached.evaluated_to <= now);
        // The read position only needs to be looked up again when it may have moved.
        let read_moved = |cached: &Cached| {
            services.store.changes().changed_since(
                &Change::ReadPosition(room_id.to_string(), user_id.to_string()),
                cached.evaluated_to,
            )
        };
        let read_position = match previous {
            Some(cached) if !read_moved(&cached) => cached.read_position,
            _ => {
                services
                    .store
                    .read_position(room_id.as_str(), user_id.as_str())
                    .await?
            }
        };
        let cached = previous.filter(|cached| cached.read_position == read_position);
        let (from, mut counts) = match cached {
            Some(cached) => (cached.evaluated_to, cached.counts),
            None => (read_position, Counts::default()),
        };
        if from < now {
            let mut rows = services
                .store
                .room_events(
                    room_id.as_str(),
                    from,
                    now,
                    Direction::Backward,
                    MAX_EVALUATED,
                )
                .await?;
            rows.reverse();
            let events: Vec<Pdu> = rows
                .iter()
                .filter(|row| row.sender != user_id.as_str())
                .map(|row| Pdu::from_stored(&row.event_id, &row.json))
                .collect::<Result<_, _>>()?;
            if !events.is_empty() {
                let added = evaluate(services, user_id, room_id, &events).await?;
                counts.notify += added.notify;
                counts.highlight += added.highlight;
            }
        }
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.len() > 100_000 {
            cache.clear();
        }
        cache.insert(
            key,
            Cached {
                read_position,
                evaluated_to: now.max(from),
                counts,
            },
        );
        Ok(counts)
    }
}

/// How many events `/notifications` evaluates at most for one page; a page that reaches it
/// ends there, with a token to go on.
pub const MAX_SCANNED: usize = 5000;

/// A user's notifications before stream position `before`, newest first: the events of the
/// rooms they are joined or invited to that their push rules say notify (only those that highlight with
/// `only_highlight`), at most `limit`, with the position to continue from when there may be
/// more. Evaluated when asked (nothing is stored per event and user), at most [`MAX_SCANNED`]
/// events a page.
pub async fn notifications_before(
    services: &Services,
    user_id: &UserId,
    before: i64,
    only_highlight: bool,
    limit: usize,
) -> Result<(Vec<(crate::store::EventRow, Vec<Action>)>, Option<i64>), Error> {
    let rooms: Vec<String> = services
        .store
        .user_memberships(user_id.as_str())
        .await?
        .into_iter()
        .filter(|membership| matches!(membership.membership.as_str(), "join" | "invite"))
        .map(|membership| membership.room_id)
        .collect();
    let mut contexts: HashMap<String, RuleContext> = HashMap::new();
    let mut found = Vec::new();
    let mut position = before;
    let mut scanned = 0;
    loop {
        let rows = services
            .store
            .events_before_in_rooms(&rooms, position, 200)
            .await?;
        if rows.is_empty() {
            return Ok((found, None));
        }
        for row in rows {
            position = row.stream_ordering;
            scanned += 1;
            if row.sender != user_id.as_str() {
                if !contexts.contains_key(&row.room_id) {
                    let room_id = crate::api::client::events::stored_room_id(&row.room_id)?;
                    let context = RuleContext::new(services, user_id, &room_id).await?;
                    contexts.insert(row.room_id.clone(), context);
                }
                if let Some(context) = contexts.get(&row.room_id) {
                    let actions = context
                        .actions(&Pdu::from_stored(&row.event_id, &row.json)?)
                        .await?;
                    if actions.iter().any(Action::should_notify)
                        && (!only_highlight || actions.iter().any(Action::is_highlight))
                    {
                        found.push((row, actions));
                        if found.len() >= limit {
                            return Ok((found, Some(position)));
                        }
                    }
                }
            }
            if scanned >= MAX_SCANNED {
                return Ok((found, Some(position)));
            }
        }
    }
}

/// Runs a user's push rules over events of a room.
async fn evaluate(
    services: &Services,
    user_id: &UserId,
    room_id: &RoomId,
    events: &[Pdu],
) -> Result<Counts, Error> {
    let rules = RuleContext::new(services, user_id, room_id).await?;
    let mut counts = Counts::default();
    for pdu in events {
        let actions = rules.actions(pdu).await?;
        if actions.iter().any(Action::should_notify) {
            counts.notify += 1;
            if actions.iter().any(Action::is_highlight) {
                counts.highlight += 1;
            }
        }
    }
    Ok(counts)
}

/// A user's push rules with what they need to know of a room.
pub struct RuleContext {
    rules: Ruleset,
    context: PushConditionRoomCtx,
    room_id: ruma::OwnedRoomId,
}

impl RuleContext {
    pub async fn new(
        services: &Services,
        user_id: &UserId,
        room_id: &RoomId,
    ) -> Result<Self, Error> {
        let rules = crate::api::client::user_data::ruleset(services, user_id).await?;
        let member_count = services
            .store
            .room_members(room_id.as_str(), "join")
            .await?
            .len();
        let display_name = services
            .rooms
            .state_event(room_id, "m.room.member", user_id.as_str())
            .await?
            .and_then(|pdu| {
                pdu.content_value()
                    .get("displayname")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| user_id.localpart().to_owned());
        let levels = services.rooms.power_levels(room_id).await?;
        let room_rules = services.rooms.rules(room_id).await?;
        let users: BTreeMap<_, _> = levels
            .users()
            .filter_map(|(user, level)| Some((UserId::parse(user).ok()?, Int::new(level)?)))
            .collect();
        let mut notifications = NotificationPowerLevels::new();
        notifications.room = Int::new(levels.notify_room).unwrap_or_default();
        let creators = levels
            .creators()
            .iter()
            .filter_map(|user| UserId::parse(user).ok());
        let power_levels = PushConditionPowerLevelsCtx::new(
            users,
            Int::new(levels.users_default()).unwrap_or_default(),
            notifications,
            RoomPowerLevelsRules::new(&room_rules.authorization, creators),
        );
        let mut context = PushConditionRoomCtx::new(
            room_id.to_owned(),
            UInt::try_from(member_count as u64).unwrap_or_default(),
            user_id.to_owned(),
            display_name,
        );
        context.power_levels = Some(power_levels);
        Ok(RuleContext {
            rules,
            context,
            room_id: room_id.to_owned(),
        })
    }

    /// The actions the user's rules give an event of the room.
    pub async fn actions(&self, pdu: &Pdu) -> Result<Vec<Action>, Error> {
        Ok(self.actions_for(&FlatEvent::new(pdu, &self.room_id)?).await)
    }

    /// The actions the user's rules give an event already flattened (once for every user it
    /// is evaluated for: flattening costs more than most rules). The user's own events get
    /// none.
    pub async fn actions_for(&self, event: &FlatEvent) -> Vec<Action> {
        if event.sender == self.context.user_id.as_str() {
            return vec![];
        }
        for rule in &self.rules {
            if rule.applies(&event.flat, &self.context).await {
                return rule.actions().to_vec();
            }
        }
        vec![]
    }
}

/// An event as push rules read it, flattened once.
pub struct FlatEvent {
    flat: FlattenedJson,
    sender: String,
}

impl FlatEvent {
    pub fn new(pdu: &Pdu, room_id: &RoomId) -> Result<FlatEvent, Error> {
        let event: ruma::serde::Raw<Value> = raw_event(pdu.to_client_value(room_id))?;
        Ok(FlatEvent {
            flat: FlattenedJson::from_raw(&event),
            sender: pdu.sender.to_string(),
        })
    }
}
