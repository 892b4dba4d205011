//! Sending to other servers. Local events are read from the event stream after they commit
//! (the write path never waits for federation) and queued, in the database, for each server
//! with a user in the room (and the target's server of a membership change), together with
//! how far the stream was read. One task per destination sends its queue in order, as
//! transactions of at most 50 PDUs and 100 EDUs, and removes what the destination
//! acknowledged. A destination that fails is tried again after a backoff that doubles up to an
//! hour, at once when it is heard from; what it missed meanwhile waits in the queue, so a
//! restart of either side loses nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use ruma::{OwnedServerName, ServerName, UserId};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};

use super::membership::segment;
use crate::Services;
use crate::store::{FEDERATION_QUEUED, Outgoing, Store, now_ms};

/// The first wait after a failure; it doubles with each failure in a row.
const FIRST_BACKOFF_MS: i64 = 5_000;
/// The longest wait between attempts.
const MAX_BACKOFF_MS: i64 = 3_600_000;
/// How many events are read from the stream at once.
const STREAM_BATCH: i64 = 200;

/// The wait before the next attempt after `failures` failures in a row.
pub fn backoff(failures: i64) -> i64 {
    let doublings = u32::try_from((failures - 1).clamp(0, 20)).unwrap_or(20);
    FIRST_BACKOFF_MS
        .saturating_mul(1_i64 << doublings)
        .min(MAX_BACKOFF_MS)
}

/// The handle the rest of the server has on sending: wake a destination.
pub struct FederationSender {
    store: Store,
    wakes: mpsc::UnboundedSender<OwnedServerName>,
    receiver: std::sync::Mutex<Option<mpsc::UnboundedReceiver<OwnedServerName>>>,
}

impl FederationSender {
    pub fn new(store: Store) -> FederationSender {
        let (wakes, receiver) = mpsc::unbounded_channel();
        FederationSender {
            store,
            wakes,
            receiver: std::sync::Mutex::new(Some(receiver)),
        }
    }

    /// Another server was heard from: it is up, so its backoff ends and what waits for it goes.
    pub async fn heard_from(&self, server: &ServerName) {
        match self.store.destination_recovered(server.as_str()).await {
            Ok(true) => self.wake(server),
            Ok(false) => {}
            Err(error) => tracing::warn!(%server, %error, "backoff not cleared"),
        }
    }

    /// Something waits for `server`.
    pub fn wake(&self, server: &ServerName) {
        let _ = self.wakes.send(server.to_owned());
    }
}

/// Starts queueing and sending; both end when the server shuts down.
pub fn spawn(services: Arc<Services>) {
    let Some(mut receiver) = services
        .federation_sender
        .receiver
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take()
    else {
        return;
    };
    // The queue: local events, as they commit.
    let queueing = services.clone();
    tokio::spawn(async move {
        let mut positions = queueing.store.subscribe();
        loop {
            if let Err(error) = queue_new_events(&queueing).await {
                tracing::warn!(%error, "events not queued for other servers; trying again");
            }
            tokio::select! {
                changed = positions.changed() => if changed.is_err() { return },
                () = queueing.shutting_down() => return,
            }
        }
    });
    // The destinations: a task each, woken when something is queued for it.
    tokio::spawn(async move {
        let mut tasks: HashMap<OwnedServerName, Arc<Notify>> = HashMap::new();
        match services.store.queued_destinations().await {
            Ok(queued) => {
                for destination in queued {
                    if let Ok(destination) = ServerName::parse(destination) {
                        services.federation_sender.wake(&destination);
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "the federation queue could not be read"),
        }
        loop {
            let destination = tokio::select! {
                destination = receiver.recv() => match destination {
                    Some(destination) => destination,
                    None => return,
                },
                () = services.shutting_down() => return,
            };
            let notify = tasks.entry(destination.clone()).or_insert_with(|| {
                let notify = Arc::new(Notify::new());
                tokio::spawn(send_loop(services.clone(), destination, notify.clone()));
                notify
            });
            notify.notify_one();
        }
    });
}

/// Queues an EDU about a room (typing, a read receipt) for the other servers with users in it.
pub async fn queue_room_edu(
    services: &Services,
    room_id: &ruma::RoomId,
    edu: Value,
) -> Result<(), crate::error::Error> {
    let servers = services
        .store
        .room_servers(room_id.as_str(), &["join"])
        .await?;
    let entries: Vec<(String, Outgoing)> = servers
        .into_iter()
        .filter(|server| *server != services.server_name.as_str())
        .map(|server| (server, Outgoing::Edu(edu.to_string())))
        .collect();
    if entries.is_empty() {
        return Ok(());
    }
    services.store.enqueue_outgoing(&entries, None).await?;
    for (server, _) in &entries {
        if let Ok(server) = ServerName::parse(server) {
            services.federation_sender.wake(&server);
        }
    }
    Ok(())
}

/// Queues the local events committed since the last call for the servers of their rooms.
async fn queue_new_events(services: &Services) -> Result<(), crate::store::StoreError> {
    let store = &services.store;
    let until = store.current_position();
    // A server that starts federating sends what comes from now on, not its history.
    let mut after = match store.stream_cursor(FEDERATION_QUEUED).await? {
        Some(cursor) => cursor,
        None => {
            store.enqueue_outgoing(&[], Some(until)).await?;
            return Ok(());
        }
    };
    let start = after;
    while after < until {
        let rows = store.events_after(after, until, STREAM_BATCH).await?;
        let Some(last) = rows.last().map(|row| row.stream_ordering) else {
            store.enqueue_outgoing(&[], Some(until)).await?;
            break;
        };
        let mut servers_of: HashMap<String, Vec<String>> = HashMap::new();
        let mut entries = Vec::new();
        let mut woken: BTreeSet<String> = BTreeSet::new();
        for row in &rows {
            let local = UserId::parse(row.sender.as_str())
                .is_ok_and(|sender| sender.server_name() == services.server_name);
            if !local {
                continue;
            }
            if !servers_of.contains_key(&row.room_id) {
                let servers = store.room_servers(&row.room_id, &["join"]).await?;
                servers_of.insert(row.room_id.clone(), servers);
            }
            let mut destinations: BTreeSet<String> = servers_of
                .get(&row.room_id)
                .into_iter()
                .flatten()
                .cloned()
                .collect();
            // A membership change reaches its target's server too (an invite, a kick).
            if row.event_type == "m.room.member"
                && let Some(target) = row
                    .state_key
                    .as_deref()
                    .and_then(|user| UserId::parse(user).ok())
            {
                destinations.insert(target.server_name().to_string());
                // Memberships change what the room's servers are.
                servers_of.remove(&row.room_id);
            }
            destinations.remove(services.server_name.as_str());
            for destination in destinations {
                entries.push((destination.clone(), Outgoing::Pdu(row.event_id.clone())));
                woken.insert(destination);
            }
        }
        store.enqueue_outgoing(&entries, Some(last)).await?;
        for destination in woken {
            if let Ok(destination) = ServerName::parse(destination) {
                services.federation_sender.wake(&destination);
            }
        }
        after = last;
    }
    queue_device_list_updates(services, start, until).await?;
    queue_presence_updates(services, start, until).await
}

/// The servers with a user in a room `user` is joined to, but this one.
async fn servers_sharing_with(
    services: &Services,
    user: &UserId,
) -> Result<BTreeSet<String>, crate::store::StoreError> {
    let mut servers: BTreeSet<String> = BTreeSet::new();
    for row in services.store.user_memberships(user.as_str()).await? {
        if row.membership == "join" {
            servers.extend(services.store.room_servers(&row.room_id, &["join"]).await?);
        }
    }
    servers.remove(services.server_name.as_str());
    Ok(servers)
}

/// Queues `m.presence` EDUs for the local users whose presence changed in `(after, until]`,
/// one EDU per server with every change its users may see (they share a room).
async fn queue_presence_updates(
    services: &Services,
    after: i64,
    until: i64,
) -> Result<(), crate::store::StoreError> {
    if after >= until {
        return Ok(());
    }
    let mut pushes: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let now = now_ms();
    for presence in services.store.presence_since(after, until).await? {
        let Ok(user) = UserId::parse(presence.user_id.as_str()) else {
            continue;
        };
        if user.server_name() != services.server_name {
            continue;
        }
        let mut push = json!({
            "user_id": user,
            "presence": presence.state,
            "last_active_ago": (now - presence.last_active_ts).max(0),
            "currently_active": presence.state == "online",
        });
        if let Some(status) = &presence.status_msg {
            push["status_msg"] = json!(status);
        }
        for server in servers_sharing_with(services, &user).await? {
            pushes.entry(server).or_default().push(push.clone());
        }
    }
    let entries: Vec<(String, Outgoing)> = pushes
        .into_iter()
        .map(|(server, push)| {
            let edu = json!({"edu_type": "m.presence", "content": {"push": push}});
            (server, Outgoing::Edu(edu.to_string()))
        })
        .collect();
    enqueue_and_wake(services, &entries, until).await
}

/// Queues EDUs with the stream cursor at `until`, and wakes their destinations.
async fn enqueue_and_wake(
    services: &Services,
    entries: &[(String, Outgoing)],
    until: i64,
) -> Result<(), crate::store::StoreError> {
    if entries.is_empty() {
        return Ok(());
    }
    services
        .store
        .enqueue_outgoing(entries, Some(until))
        .await?;
    let woken: BTreeSet<&String> = entries.iter().map(|(server, _)| server).collect();
    for server in woken {
        if let Ok(server) = ServerName::parse(server) {
            services.federation_sender.wake(&server);
        }
    }
    Ok(())
}

/// Queues the EDUs of local users' device changes in `(after, until]` (`m.device_list_update`,
/// `m.signing_key_update`), in order, for every server with a user in a room they are in.
async fn queue_device_list_updates(
    services: &Services,
    after: i64,
    until: i64,
) -> Result<(), crate::store::StoreError> {
    if after >= until {
        return Ok(());
    }
    let mut entries = Vec::new();
    let mut sharing: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for entry in services.store.device_list_entries(after, until).await? {
        let Ok(user) = UserId::parse(entry.user_id.as_str()) else {
            continue;
        };
        if user.server_name() != services.server_name {
            continue;
        }
        let servers = match sharing.get(user.as_str()) {
            Some(servers) => servers,
            None => {
                let servers = servers_sharing_with(services, &user).await?;
                sharing.entry(user.to_string()).or_insert(servers)
            }
        };
        if servers.is_empty() {
            continue;
        }
        if let Some(edu) = super::device_lists::edu_for(services, &entry).await {
            for server in servers {
                entries.push((server.clone(), Outgoing::Edu(edu.to_string())));
            }
        }
    }
    enqueue_and_wake(services, &entries, until).await
}

/// Sends one destination's queue, in order, for as long as the server runs.
async fn send_loop(services: Arc<Services>, destination: OwnedServerName, notify: Arc<Notify>) {
    loop {
        let wait = match send_batch(&services, &destination).await {
            Ok(Sent::Batch) => continue,
            Ok(Sent::Nothing) => None,
            Ok(Sent::Later(retry_at)) => Some(retry_at),
            Err(error) => {
                tracing::warn!(%destination, %error, "the federation queue could not be read");
                Some(now_ms() + FIRST_BACKOFF_MS)
            }
        };
        let sleep = match wait {
            Some(retry_at) => {
                Duration::from_millis(u64::try_from(retry_at - now_ms()).unwrap_or(0))
            }
            None => Duration::MAX,
        };
        tokio::select! {
            () = notify.notified() => {}
            () = tokio::time::sleep(sleep.min(Duration::from_secs(86_400))) => {}
            () = services.shutting_down() => return,
        }
    }
}

enum Sent {
    /// A batch went; there may be more.
    Batch,
    /// Nothing is queued.
    Nothing,
    /// The destination is backing off until then.
    Later(i64),
}

async fn send_batch(
    services: &Services,
    destination: &ServerName,
) -> Result<Sent, crate::store::StoreError> {
    let store = &services.store;
    let retry_at = store.destination_retry_at(destination.as_str()).await?;
    if retry_at > now_ms() {
        return Ok(Sent::Later(retry_at));
    }
    let batch = store
        .outgoing(
            destination.as_str(),
            super::transactions::MAX_PDUS,
            super::transactions::MAX_EDUS,
        )
        .await?;
    let (Some((first, _)), Some((last, _))) = (batch.first(), batch.last()) else {
        return Ok(Sent::Nothing);
    };
    let (first, last) = (*first, *last);
    let ids: Vec<String> = batch
        .iter()
        .filter_map(|(_, entry)| match entry {
            Outgoing::Pdu(id) => Some(id.clone()),
            Outgoing::Edu(_) => None,
        })
        .collect();
    let rows: HashMap<String, String> = store
        .events(&ids)
        .await?
        .into_iter()
        .map(|row| (row.event_id, row.json))
        .collect();
    let mut pdus = Vec::new();
    let mut edus = Vec::new();
    for (_, entry) in &batch {
        match entry {
            Outgoing::Pdu(id) => {
                if let Some(json) = rows
                    .get(id)
                    .and_then(|json| serde_json::from_str::<Value>(json).ok())
                {
                    pdus.push(json);
                }
            }
            Outgoing::Edu(edu) => {
                if let Ok(edu) = serde_json::from_str::<Value>(edu) {
                    edus.push(edu);
                }
            }
        }
    }
    let body = json!({
        "origin": services.server_name,
        "origin_server_ts": now_ms(),
        "pdus": pdus,
        "edus": edus,
    });
    let uri = format!(
        "/_matrix/federation/v1/send/{}",
        segment(&format!("{first}-{last}"))
    );
    match services
        .federation
        .request(destination, http::Method::PUT, &uri, Some(&body), true)
        .await
    {
        Ok(answer) => {
            if let Some(results) = answer.get("pdus").and_then(Value::as_object) {
                for (event_id, result) in results {
                    if let Some(error) = result.get("error") {
                        tracing::info!(%destination, %event_id, %error, "the destination refused an event");
                    }
                }
            }
            store.outgoing_sent(destination.as_str(), last).await?;
            Ok(Sent::Batch)
        }
        Err(error) => {
            let retry_at = store
                .destination_failed(destination.as_str(), backoff)
                .await?;
            tracing::info!(%destination, %error, retry_in_ms = retry_at - now_ms(), "sending failed; trying again later");
            Ok(Sent::Later(retry_at))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_an_hour() {
        assert_eq!(backoff(1), 5_000);
        assert_eq!(backoff(2), 10_000);
        assert_eq!(backoff(4), 40_000);
        assert_eq!(backoff(100), MAX_BACKOFF_MS);
        assert_eq!(backoff(0), 5_000);
    }
}
