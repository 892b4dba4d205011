//! Transactions from other servers (`PUT /_matrix/federation/v1/send/{txnId}`): at most 50
//! PDUs and 100 EDUs, each PDU checked (format, signatures, content hash) and taken in by the
//! room engine, the events it follows fetched from the origin when missing (and the state at
//! the gap when they cannot all be had, see [`super::gap`]); the answer is
//! recorded with the transaction, so that the same transaction sent again is answered the
//! same and applied once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use ruma::canonical_json::{CanonicalJsonObject, CanonicalJsonValue};
use ruma::room_version_rules::RoomVersionRules;
use ruma::{EventId, OwnedRoomId, RoomId, ServerName, UserId};
use serde_json::{Value, json};

use super::membership::{remote_error, segment};
use super::pdu;
use super::server::Federated;
use crate::Services;
use crate::error::Error;
use crate::pdu::Pdu;
use crate::rooms::Received;
use crate::store::{ReceiptRecord, now_ms};

/// The most PDUs a transaction may carry.
pub const MAX_PDUS: usize = 50;
/// The most EDUs a transaction may carry.
pub const MAX_EDUS: usize = 100;
/// How many missing events are asked for at once.
const MISSING_EVENTS_LIMIT: u64 = 20;
/// The longest another server's user is shown typing without a renewal.
const REMOTE_TYPING: Duration = Duration::from_secs(30);

/// # `PUT /_matrix/federation/v1/send/{txnId}`
pub async fn send_route(
    State(services): State<Arc<Services>>,
    Path(txn_id): Path<String>,
    request: Federated,
) -> Result<Json<Value>, Error> {
    let origin = request.origin.clone();
    if let Some(answer) = services
        .store
        .inbound_transaction(origin.as_str(), &txn_id)
        .await?
    {
        return serde_json::from_str(&answer)
            .map(Json)
            .map_err(|e| Error::Internal(format!("stored transaction answer: {e}")));
    }
    let body = match &request.body {
        Some(CanonicalJsonValue::Object(body)) => body,
        _ => return Err(Error::NotJson("a transaction is a JSON object".into())),
    };
    let pdus = match body.get("pdus") {
        Some(CanonicalJsonValue::Array(pdus)) => pdus.as_slice(),
        _ => return Err(Error::BadJson("`pdus` is required and is a list".into())),
    };
    let edus = match body.get("edus") {
        Some(CanonicalJsonValue::Array(edus)) => edus.as_slice(),
        None => &[],
        Some(_) => return Err(Error::BadJson("`edus` is a list".into())),
    };
    if pdus.len() > MAX_PDUS || edus.len() > MAX_EDUS {
        return Err(Error::BadJson(format!(
            "a transaction carries at most {MAX_PDUS} PDUs and {MAX_EDUS} EDUs"
        )));
    }
    // The origin is up: what waits for it goes now.
    services.federation_sender.heard_from(&origin).await;

    let mut results = serde_json::Map::new();
    // Each room's events in depth order, so that an event's predecessors come first.
    let mut by_room: BTreeMap<OwnedRoomId, Vec<(i64, CanonicalJsonObject)>> = BTreeMap::new();
    for value in pdus {
        let CanonicalJsonValue::Object(object) = value else {
            continue;
        };
        let Some(room_id) = object
            .get("room_id")
            .and_then(CanonicalJsonValue::as_str)
            .and_then(|id| RoomId::parse(id).ok())
        else {
            tracing::info!(%origin, "a PDU without a room id was dropped");
            continue;
        };
        let depth = object
            .get("depth")
            .and_then(CanonicalJsonValue::as_integer)
            .map_or(0, i64::from);
        by_room
            .entry(room_id)
            .or_default()
            .push((depth, object.clone()));
    }
    for (room_id, mut events) in by_room {
        events.sort_by_key(|(depth, _)| *depth);
        let rules = match services.rooms.exists(&room_id).await? {
            true => services.rooms.rules(&room_id).await?,
            false => {
                tracing::info!(%origin, %room_id, "PDUs of a room this server is not in were dropped");
                continue;
            }
        };
        // A server the room's ACL bans has no say in it.
        let banned = super::acl::check(&services, &room_id, &origin).await.err();
        for (_, object) in events {
            let Ok(event_id) = pdu::event_id(&object, &rules) else {
                continue;
            };
            let outcome = match &banned {
                Some(error) => Err(error.to_string()),
                None => take_pdu(&services, &origin, &room_id, &rules, object).await,
            };
            let result = match outcome {
                Ok(()) => json!({}),
                Err(reason) => {
                    tracing::info!(%origin, %event_id, %reason, "PDU not taken in");
                    json!({ "error": reason })
                }
            };
            results.insert(event_id.to_string(), result);
        }
    }
    for edu in edus {
        if let CanonicalJsonValue::Object(edu) = edu
            && let Err(reason) = take_edu(&services, &origin, edu).await
        {
            tracing::info!(%origin, %reason, "EDU ignored");
        }
    }
    let answer = json!({ "pdus": results });
    services
        .store
        .record_inbound_transaction(origin.as_str(), &txn_id, &answer.to_string())
        .await?;
    Ok(Json(answer))
}

/// Checks one PDU and takes it into its room, fetching from `origin` what it follows and this
/// server lacks. The error is the reason given back to the origin.
async fn take_pdu(
    services: &Services,
    origin: &ServerName,
    room_id: &RoomId,
    rules: &RoomVersionRules,
    object: CanonicalJsonObject,
) -> Result<(), String> {
    let event = pdu::check(services, rules, object)
        .await
        .map_err(|e| e.to_string())?;
    if let Taken::Done = receive(services, room_id, event.clone()).await? {
        return Ok(());
    }
    fetch_missing(services, origin, room_id, rules, &event).await?;
    match receive(services, room_id, event.clone()).await? {
        Taken::Done => Ok(()),
        Taken::Missing {
            prevs,
            authorized: true,
        } => take_at_gap(services, origin, room_id, rules, event, &prevs).await,
        Taken::Missing { .. } => Err("events that authorize it cannot be found".into()),
    }
}

enum Taken {
    Done,
    /// Not all its prev events are stored with their state, or not all its auth events
    /// (`authorized` false).
    Missing {
        prevs: Vec<ruma::OwnedEventId>,
        authorized: bool,
    },
}

fn taken(received: Result<Received, Error>) -> Result<Taken, String> {
    match received {
        Ok(Received::Accepted { .. } | Received::Known | Received::SoftFailed(_)) => {
            Ok(Taken::Done)
        }
        Ok(Received::Rejected(reason)) => Err(format!("rejected: {reason}")),
        Ok(Received::Missing {
            prev_events,
            auth_events,
        }) => Ok(Taken::Missing {
            prevs: prev_events,
            authorized: auth_events.is_empty(),
        }),
        Err(error) => Err(error.to_string()),
    }
}

async fn receive(services: &Services, room_id: &RoomId, event: Pdu) -> Result<Taken, String> {
    taken(services.rooms.receive_pdu(room_id, event).await)
}

/// Takes in an event whose prev events `get_missing_events` did not bring, with the state
/// after them that `origin` tells (see [`super::gap`]).
async fn take_at_gap(
    services: &Services,
    origin: &ServerName,
    room_id: &RoomId,
    rules: &RoomVersionRules,
    event: Pdu,
    prevs: &[ruma::OwnedEventId],
) -> Result<(), String> {
    let states = super::gap::states_after(services, origin, room_id, rules, prevs)
        .await
        .map_err(|e| format!("the state at the gap before it: {e}"))?;
    match taken(services.rooms.receive_at_gap(room_id, event, states).await)? {
        Taken::Done => Ok(()),
        Taken::Missing { .. } => Err("events it follows cannot be found".into()),
    }
}

/// Asks `origin` for the events between the room's forward extremities and `event`
/// (`get_missing_events`), and for the auth chain of `event` when its auth events are
/// unknown, and takes them in, oldest first.
async fn fetch_missing(
    services: &Services,
    origin: &ServerName,
    room_id: &RoomId,
    rules: &RoomVersionRules,
    event: &Pdu,
) -> Result<(), String> {
    let unknown_auth = {
        let ids: Vec<String> = event.auth_events.iter().map(ToString::to_string).collect();
        let known = services
            .store
            .events(&ids)
            .await
            .map_err(|e| e.to_string())?;
        known.len() < ids.len()
    };
    if unknown_auth {
        pdu::fetch_auth_chain(services, origin, room_id, rules, &event.event_id)
            .await
            .map_err(|e| e.to_string())?;
    }
    let extremities = services
        .store
        .forward_extremities(room_id.as_str())
        .await
        .map_err(|e| e.to_string())?;
    let uri = format!(
        "/_matrix/federation/v1/get_missing_events/{}",
        segment(room_id.as_str())
    );
    let body = json!({
        "earliest_events": extremities,
        "latest_events": [event.event_id],
        "limit": MISSING_EVENTS_LIMIT,
        "min_depth": 0,
    });
    let answer = services
        .federation
        .request(origin, http::Method::POST, &uri, Some(&body), true)
        .await
        .map_err(|e| remote_error(e).to_string())?;
    let mut missing: Vec<Pdu> = pdu::check_list(services, rules, answer.get("events"))
        .await
        .into_iter()
        .filter(|checked| checked.event_id != event.event_id)
        .collect();
    missing.sort_by_key(|pdu| pdu.depth);
    // The earliest of them that still lacks what it follows is taken at a gap; those after
    // it follow it.
    let mut gap_taken = false;
    for earlier in missing {
        let id = earlier.event_id.clone();
        let outcome = match receive(services, room_id, earlier.clone()).await {
            Ok(Taken::Missing {
                prevs,
                authorized: true,
            }) if !gap_taken => {
                gap_taken = true;
                take_at_gap(services, origin, room_id, rules, earlier, &prevs).await
            }
            Ok(Taken::Missing { .. }) => Err("events it follows cannot be found".into()),
            Ok(Taken::Done) => Ok(()),
            Err(reason) => Err(reason),
        };
        if let Err(reason) = outcome {
            tracing::info!(%id, %reason, "a missing event was not taken in");
        }
    }
    Ok(())
}

/// The longest status message kept of another server's user, in characters.
const MAX_STATUS_CHARS: usize = 1024;

/// Applies an EDU: typing notifications and read receipts of the origin's users in rooms this
/// server shares with them, presence of the origin's users who share a room with this server,
/// to-device messages and device-list changes of the origin's users. Others are ignored.
async fn take_edu(
    services: &Services,
    origin: &ServerName,
    edu: &CanonicalJsonObject,
) -> Result<(), String> {
    let kind = edu
        .get("edu_type")
        .and_then(CanonicalJsonValue::as_str)
        .unwrap_or_default();
    let content: Value = edu
        .get("content")
        .map(|content| serde_json::to_value(content).unwrap_or(Value::Null))
        .unwrap_or(Value::Null);
    let origin_user = |user: &str| -> Result<ruma::OwnedUserId, String> {
        let user = UserId::parse(user).map_err(|e| format!("invalid user id: {e}"))?;
        if user.server_name() != origin {
            return Err(format!("{origin} may not speak for {user}"));
        }
        Ok(user)
    };
    match kind {
        "m.typing" => {
            let room_id = content["room_id"]
                .as_str()
                .and_then(|id| RoomId::parse(id).ok())
                .ok_or("m.typing without a room id")?;
            let user = origin_user(content["user_id"].as_str().unwrap_or_default())?;
            super::acl::check(services, &room_id, origin)
                .await
                .map_err(|e| e.to_string())?;
            if !joined(services, &room_id, &user).await {
                return Err(format!("{user} is not in {room_id}"));
            }
            let typing = content["typing"].as_bool().unwrap_or(false);
            services
                .typing
                .set(&room_id, &user, typing.then_some(REMOTE_TYPING));
            Ok(())
        }
        "m.receipt" => {
            let Some(rooms) = content.as_object() else {
                return Err("m.receipt content is not an object".into());
            };
            for (room_id, receipts) in rooms {
                let Ok(room_id) = RoomId::parse(room_id.as_str()) else {
                    continue;
                };
                let Some(read) = receipts.get("m.read").and_then(Value::as_object) else {
                    continue;
                };
                for (user, receipt) in read {
                    let user = origin_user(user)?;
                    if !joined(services, &room_id, &user).await {
                        continue;
                    }
                    let Some(event_id) = receipt["event_ids"]
                        .as_array()
                        .and_then(|ids| ids.last())
                        .and_then(Value::as_str)
                        .and_then(|id| EventId::parse(id).ok())
                    else {
                        continue;
                    };
                    let in_room = services
                        .store
                        .event(event_id.as_str())
                        .await
                        .map_err(|e| e.to_string())?
                        .is_some_and(|row| row.room_id == room_id.as_str());
                    if !in_room {
                        continue;
                    }
                    let thread_id = receipt["data"]["thread_id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                    services
                        .store
                        .set_receipt(&ReceiptRecord {
                            room_id: room_id.to_string(),
                            receipt_type: "m.read".into(),
                            user_id: user.to_string(),
                            thread_id,
                            event_id: event_id.to_string(),
                            ts: receipt["data"]["ts"].as_i64().unwrap_or_else(now_ms),
                        })
                        .await
                        .map_err(|e| e.to_string())?;
                }
            }
            Ok(())
        }
        "m.direct_to_device" => super::e2ee::take_to_device(services, origin, &content).await,
        "m.device_list_update" => {
            super::device_lists::take_device_list_update(services, origin, &content).await
        }
        // A change of a user's cross-signing keys reaches local clients as a change of
        // their device list: they ask for the keys again.
        "m.signing_key_update" => {
            super::device_lists::take_signing_key_update(services, origin, &content).await
        }
        "m.presence" => {
            let pushes = content["push"]
                .as_array()
                .ok_or("m.presence without `push`")?;
            for push in pushes {
                let user = origin_user(push["user_id"].as_str().unwrap_or_default())?;
                let state = push["presence"].as_str().unwrap_or_default();
                if !matches!(state, "online" | "offline" | "unavailable") {
                    return Err(format!("unknown presence {state:?}"));
                }
                // Only of users this server shares a room with: nobody here could see others.
                let shares = services
                    .store
                    .user_memberships(user.as_str())
                    .await
                    .map_err(|e| e.to_string())?
                    .iter()
                    .any(|row| row.membership == "join");
                if !shares {
                    continue;
                }
                let ago = push["last_active_ago"].as_i64().unwrap_or(0).max(0);
                let status = push["status_msg"]
                    .as_str()
                    .map(|status| status.chars().take(MAX_STATUS_CHARS).collect::<String>());
                services
                    .store
                    .set_presence_at(
                        user.as_str(),
                        state,
                        status.as_deref(),
                        now_ms().saturating_sub(ago),
                    )
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok(())
        }
        other => Err(format!("EDU type {other} is not handled")),
    }
}

async fn joined(services: &Services, room_id: &RoomId, user: &UserId) -> bool {
    matches!(
        services.rooms.membership(room_id, user).await,
        Ok(Some(membership)) if membership == "join"
    )
}
