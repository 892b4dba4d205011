//! Push: every new event is run through the push rules of the local members it concerns (the
//! room's joined members, and the target of an invite) who have a pusher, and what the rules
//! say notifies is queued for their pushers (`notifications`). Users without a pusher cost
//! nothing here: `/notifications` and sync's counts evaluate their rules when asked.
//!
//! The notifier follows the event stream with a stored cursor (`stream_cursors`, `push`), so a
//! restart resumes where it stopped. Each pusher has a worker that sends the user's
//! notifications after its own stored position, one at a time and in order, retrying with
//! growing pauses while the gateway is unavailable (for at most [`GIVE_UP_AFTER`] per
//! notification); a gateway that rejects the pushkey removes the pusher.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ruma::UserId;
use ruma::push::Action;
use serde_json::{Map, Value, json};
use tokio::sync::Notify;

use super::gateway::{Gateway, GatewayError};
use super::{FlatEvent, RuleContext};
use crate::Services;
use crate::api::client::events::stored_room_id;
use crate::error::Error;
use crate::pdu::Pdu;
use crate::store::{EventRow, NotificationRow, Pusher, now_ms};

/// The name of the notifier's cursor in the event stream.
const CURSOR: &str = "push";
/// Events evaluated at a time.
const BATCH: i64 = 100;
/// How long notifications are kept for `/notifications`.
const KEEP_NOTIFICATIONS_MS: i64 = 30 * 24 * 3600 * 1000;
/// How long one notification is retried while its gateway is unavailable.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(3600);
/// How long the notifier lets events gather before it evaluates them.
const COALESCE: Duration = Duration::from_millis(100);
/// The longest pause between two tries.
const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// A pusher's identity: user, app id, pushkey.
type PusherKey = (String, String, String);

fn key_of(pusher: &Pusher) -> PusherKey {
    (
        pusher.user_id.clone(),
        pusher.app_id.clone(),
        pusher.pushkey.clone(),
    )
}

/// The gateway client and the workers of the pushers.
pub struct Pushers {
    pub gateway: Gateway,
    workers: tokio::sync::Mutex<HashMap<PusherKey, Arc<Notify>>>,
}

impl Pushers {
    pub fn new(gateway: Gateway) -> Pushers {
        Pushers {
            gateway,
            workers: Default::default(),
        }
    }
}

/// Wakes the worker of a pusher, starting it if it is not running.
pub async fn wake(services: &Arc<Services>, pusher: &Pusher) {
    let key = key_of(pusher);
    let mut workers = services.pushers.workers.lock().await;
    if let Some(wake) = workers.get(&key) {
        wake.notify_one();
        return;
    }
    let wake = Arc::new(Notify::new());
    workers.insert(key.clone(), wake.clone());
    tokio::spawn(work(services.clone(), key, wake));
}

/// Starts the notifier and the workers of the pushers there are.
pub fn spawn(services: Arc<Services>) {
    tokio::spawn(async move {
        match services.store.all_pushers().await {
            Ok(pushers) => {
                for pusher in &pushers {
                    wake(&services, pusher).await;
                }
            }
            Err(error) => tracing::error!(%error, "pushers not read"),
        }
        run(services).await;
    });
}

async fn run(services: Arc<Services>) {
    let mut positions = services.store.subscribe();
    let mut cursor = loop {
        match services.store.stream_cursor(CURSOR).await {
            Ok(Some(cursor)) => break cursor,
            // The first start notifies of what comes, not of the history.
            Ok(None) => break services.store.current_position(),
            Err(error) => {
                tracing::warn!(%error, "notifier cursor not read");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let mut pruned: Option<Instant> = None;
    loop {
        let current = services.store.current_position();
        if current <= cursor {
            tokio::select! {
                changed = positions.changed() => if changed.is_err() { return },
                () = services.shutting_down() => return,
            }
            // Events come in bursts: a moment's wait evaluates them together (one rule
            // context per user and room, one write), and a notification is not late by it.
            tokio::select! {
                () = tokio::time::sleep(COALESCE) => {}
                () = services.shutting_down() => return,
            }
            continue;
        }
        match notify_batch(&services, cursor, current).await {
            Ok(next) => {
                cursor = next;
                if let Err(error) = services.store.set_stream_cursor(CURSOR, cursor).await {
                    tracing::warn!(%error, "notifier cursor not stored");
                }
            }
            Err(error) => {
                tracing::warn!(%error, "notifications not evaluated; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        if pruned.is_none_or(|at| at.elapsed() > Duration::from_secs(3600)) {
            pruned = Some(Instant::now());
            if let Err(error) = services
                .store
                .prune_notifications(KEEP_NOTIFICATIONS_MS)
                .await
            {
                tracing::warn!(%error, "old notifications not pruned");
            }
        }
    }
}

/// The local users an event may notify: the joined members (and the target of an invite),
/// not its sender, and only accounts that have a device to be notified on. `members` keeps each
/// room's joined members with a device for the batch.
async fn concerned_users(
    services: &Services,
    row: &EventRow,
    members: &mut HashMap<String, Vec<String>>,
) -> Result<Vec<String>, Error> {
    if !members.contains_key(&row.room_id) {
        let joined: Vec<String> = services
            .store
            .room_members(&row.room_id, "join")
            .await?
            .into_iter()
            .filter(|user| UserId::parse(user.as_str()).is_ok_and(|user| services.is_local(&user)))
            .collect();
        let with_pushers = services.store.users_with_pushers(&joined).await?;
        members.insert(row.room_id.clone(), with_pushers);
    }
    let mut users: Vec<String> = members
        .get(&row.room_id)
        .map(|users| {
            users
                .iter()
                .filter(|user| **user != row.sender)
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    if row.event_type == "m.room.member"
        && let Some(target) = &row.state_key
        && target != &row.sender
        && !users.contains(target)
        && UserId::parse(target.as_str()).is_ok_and(|user| services.is_local(&user))
    {
        users.extend(
            services
                .store
                .users_with_pushers(std::slice::from_ref(target))
                .await?,
        );
    }
    // A member event changes who is in the room: the next event reads the members again.
    if row.event_type == "m.room.member" {
        members.remove(&row.room_id);
    }
    Ok(users)
}

/// Evaluates the events in `(after, until]`, at most [`BATCH`] of them; returns how far it got.
async fn notify_batch(services: &Arc<Services>, after: i64, until: i64) -> Result<i64, Error> {
    let rows = services.store.events_after(after, until, BATCH).await?;
    let reached = match rows.last() {
        Some(last) if rows.len() as i64 == BATCH => last.stream_ordering,
        _ => until,
    };
    let mut contexts: HashMap<(String, String), RuleContext> = HashMap::new();
    let mut members: HashMap<String, Vec<String>> = HashMap::new();
    let mut notifications = Vec::new();
    let now = now_ms();
    for row in &rows {
        let pdu = Pdu::from_stored(&row.event_id, &row.json)?;
        let room_id = stored_room_id(&row.room_id)?;
        let users = concerned_users(services, row, &mut members).await?;
        if users.is_empty() {
            continue;
        }
        let event = FlatEvent::new(&pdu, &room_id)?;
        for user in users {
            let key = (user.clone(), row.room_id.clone());
            if !contexts.contains_key(&key) {
                let user_id = UserId::parse(user.as_str())
                    .map_err(|e| Error::Internal(format!("stored user id: {e}")))?;
                let context = RuleContext::new(services, &user_id, &room_id).await?;
                contexts.insert(key.clone(), context);
            }
            let Some(context) = contexts.get(&key) else {
                continue;
            };
            let actions = context.actions_for(&event).await;
            if !actions.iter().any(Action::should_notify) {
                continue;
            }
            notifications.push(NotificationRow {
                user_id: user,
                stream_ordering: row.stream_ordering,
                event_id: row.event_id.clone(),
                room_id: row.room_id.clone(),
                actions: serde_json::to_string(&actions)
                    .map_err(|e| Error::Internal(e.to_string()))?,
                highlight: actions.iter().any(Action::is_highlight),
                ts: now,
            });
        }
    }
    services.store.add_notifications(&notifications).await?;
    let users: HashSet<&str> = notifications
        .iter()
        .map(|notification| notification.user_id.as_str())
        .collect();
    for user in users {
        for pusher in services.store.pushers(user).await? {
            wake(services, &pusher).await;
        }
    }
    Ok(reached)
}

/// What became of one notification.
enum Outcome {
    /// Sent, or given up: the pusher moves past it.
    Done,
    /// The pusher is gone, or the server stops.
    Stop,
}

/// A pusher's worker: sends the user's notifications after the pusher's position, in order.
async fn work(services: Arc<Services>, key: PusherKey, wake: Arc<Notify>) {
    let (user_id, app_id, pushkey) = &key;
    loop {
        // A pusher that is gone ends its worker, under the registry's lock, so that a pusher
        // set again meanwhile gets a worker of its own.
        let pusher = {
            let mut workers = services.pushers.workers.lock().await;
            match services.store.pusher(user_id, app_id, pushkey).await {
                Ok(Some(pusher)) => pusher,
                Ok(None) => {
                    workers.remove(&key);
                    return;
                }
                Err(error) => {
                    drop(workers);
                    tracing::warn!(%error, "pusher not read");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    continue;
                }
            }
        };
        let pending = match services
            .store
            .notifications_after(user_id, pusher.last_sent, 20)
            .await
        {
            Ok(pending) => pending,
            Err(error) => {
                tracing::warn!(%error, "notifications not read");
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
        };
        if pending.is_empty() {
            tokio::select! {
                () = wake.notified() => {}
                () = services.shutting_down() => return,
            }
            continue;
        }
        for notification in &pending {
            match deliver(&services, &pusher, notification).await {
                Outcome::Done => {
                    if let Err(error) = services
                        .store
                        .advance_pusher(&pusher, notification.stream_ordering)
                        .await
                    {
                        tracing::warn!(%error, "pusher position not stored");
                    }
                }
                Outcome::Stop => break,
            }
        }
    }
}

/// Sends one notification to a pusher's gateway, trying again while it is unavailable.
async fn deliver(services: &Services, pusher: &Pusher, notification: &NotificationRow) -> Outcome {
    let started = Instant::now();
    let mut pause = Duration::from_secs(1);
    loop {
        let result = match notification_body(services, pusher, notification).await {
            Ok((url, body)) => services.pushers.gateway.notify(&url, &body).await,
            Err(error) => {
                tracing::warn!(%error, event_id = %notification.event_id, "notification not built");
                return Outcome::Done;
            }
        };
        match result {
            Ok(reply) => {
                if reply.rejected.contains(&pusher.pushkey) {
                    tracing::info!(app_id = %pusher.app_id, "the push gateway rejected a pushkey; its pusher is removed");
                    if let Err(error) = services
                        .store
                        .delete_pusher(&pusher.user_id, &pusher.app_id, &pusher.pushkey)
                        .await
                    {
                        tracing::warn!(%error, "rejected pusher not removed");
                    }
                    return Outcome::Stop;
                }
                return Outcome::Done;
            }
            Err(error @ (GatewayError::Refused(_) | GatewayError::BadUrl(_))) => {
                tracing::warn!(%error, app_id = %pusher.app_id, "notification given up");
                return Outcome::Done;
            }
            Err(error @ GatewayError::Unavailable(_)) => {
                if started.elapsed() > GIVE_UP_AFTER {
                    tracing::warn!(%error, app_id = %pusher.app_id, "notification given up after retries");
                    return Outcome::Done;
                }
                tracing::info!(%error, app_id = %pusher.app_id, retry_in = ?pause, "push gateway unavailable");
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = services.shutting_down() => return Outcome::Stop,
                }
                pause = (pause * 2).min(MAX_BACKOFF);
                match services
                    .store
                    .pusher(&pusher.user_id, &pusher.app_id, &pusher.pushkey)
                    .await
                {
                    Ok(Some(_)) => {}
                    Ok(None) => return Outcome::Stop,
                    Err(error) => tracing::warn!(%error, "pusher not read"),
                }
            }
        }
    }
}

/// How many joined rooms have notifications the user has not read (the app's badge), as
/// sync counts them.
async fn unread_rooms(services: &Services, user_id: &str) -> Result<u64, Error> {
    let user = UserId::parse(user_id).map_err(|e| Error::Internal(format!("stored user: {e}")))?;
    let now = services.store.current_position();
    let mut unread = 0;
    for membership in services.store.user_memberships(user_id).await? {
        if membership.membership != "join" {
            continue;
        }
        let room_id = stored_room_id(&membership.room_id)?;
        let counts = services
            .notification_counts
            .counts(services, &user, &room_id, now)
            .await?;
        if counts.notify > 0 {
            unread += 1;
        }
    }
    Ok(unread)
}

/// The tweaks of push rule actions, as gateways get them (`highlight` without a value is
/// `true`).
fn tweaks(actions: &[Action]) -> Map<String, Value> {
    let mut tweaks = Map::new();
    for action in actions {
        if let Action::SetTweak(tweak) = action
            && let Ok(Value::Object(tweak)) = serde_json::to_value(tweak)
            && let Some(Value::String(name)) = tweak.get("set_tweak")
        {
            let value = tweak.get("value").cloned().unwrap_or(Value::Bool(true));
            tweaks.insert(name.clone(), value);
        }
    }
    tweaks
}

/// The gateway URL and the body of a notification to a pusher (the Push Gateway API's
/// `/notify`): the event's details unless the pusher's `format` is `event_id_only`.
async fn notification_body(
    services: &Services,
    pusher: &Pusher,
    notification: &NotificationRow,
) -> Result<(String, Value), Error> {
    let mut data: Map<String, Value> =
        serde_json::from_str(&pusher.data).map_err(|e| Error::Internal(e.to_string()))?;
    let url = data
        .remove("url")
        .and_then(|url| url.as_str().map(str::to_owned))
        .ok_or_else(|| Error::Internal("an HTTP pusher without url".into()))?;
    let event_id_only = data.get("format").and_then(Value::as_str) == Some("event_id_only");
    let actions: Vec<Action> =
        serde_json::from_str(&notification.actions).map_err(|e| Error::Internal(e.to_string()))?;
    let tweaks = tweaks(&actions);
    let device = json!({
        "app_id": pusher.app_id,
        "pushkey": pusher.pushkey,
        "pushkey_ts": pusher.pushkey_ts / 1000,
        "data": data,
        "tweaks": tweaks,
    });
    let unread = unread_rooms(services, &pusher.user_id).await?;
    let row = services.store.event(&notification.event_id).await?;
    let event_type = row
        .as_ref()
        .map(|row| row.event_type.as_str())
        .unwrap_or("");
    let high = event_type == "m.room.encrypted"
        || tweaks.get("highlight") == Some(&Value::Bool(true))
        || tweaks.contains_key("sound");
    let mut body = json!({
        "event_id": notification.event_id,
        "room_id": notification.room_id,
        "counts": { "unread": unread },
        "devices": [device],
        "prio": if high { "high" } else { "low" },
    });
    if !event_id_only && let Some(row) = row {
        let pdu = Pdu::from_stored(&row.event_id, &row.json)?;
        let room_id = stored_room_id(&row.room_id)?;
        let room_id = &room_id;
        let state_content = |event_type: &'static str, state_key: String| async move {
            services
                .rooms
                .state_event(room_id, event_type, &state_key)
                .await
                .map(|pdu| pdu.map(|pdu| pdu.content_value()))
        };
        let details = body
            .as_object_mut()
            .ok_or_else(|| Error::Internal("body".into()))?;
        details.insert("type".into(), json!(row.event_type));
        details.insert("sender".into(), json!(row.sender));
        details.insert("content".into(), pdu.content_value());
        if let Some(name) = state_content("m.room.member", row.sender.clone())
            .await?
            .and_then(|content| content.get("displayname").cloned())
        {
            details.insert("sender_display_name".into(), name);
        }
        if let Some(name) = state_content("m.room.name", String::new())
            .await?
            .and_then(|content| content.get("name").cloned())
        {
            details.insert("room_name".into(), name);
        }
        if let Some(alias) = state_content("m.room.canonical_alias", String::new())
            .await?
            .and_then(|content| content.get("alias").cloned())
        {
            details.insert("room_alias".into(), alias);
        }
        if row.event_type == "m.room.member" {
            details.insert(
                "user_is_target".into(),
                json!(row.state_key.as_deref() == Some(pusher.user_id.as_str())),
            );
            if let Some(membership) = pdu.content_value().get("membership") {
                details.insert("membership".into(), membership.clone());
            }
        }
    }
    Ok((url, json!({ "notification": body })))
}
