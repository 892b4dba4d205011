//! Account data, room tags, filters and push rules.

use std::sync::Arc;

use ruma::api::client::config::{
    get_global_account_data, get_room_account_data, set_global_account_data, set_room_account_data,
};
use ruma::api::client::filter::{create_filter, get_filter};
use ruma::api::client::push::PushRule;
use ruma::api::client::push::{
    delete_pushrule, get_pushrule, get_pushrule_actions, get_pushrule_enabled, set_pushrule,
    set_pushrule_actions, set_pushrule_enabled,
};
use ruma::api::client::tag::{create_tag, delete_tag, get_tags};
use ruma::push::{InsertPushRuleError, RemovePushRuleError, Ruleset};
use ruma::serde::Raw;
use ruma::{RoomId, UserId};
use serde_json::Value;

use crate::Services;
use crate::api::Authenticated;
use crate::api::ruma_wrapper::Ruma;
use crate::error::Error;
use axum::Json;
use axum::extract::State;

fn own(sender: &UserId, target: &UserId) -> Result<(), Error> {
    if sender == target {
        Ok(())
    } else {
        Err(Error::Forbidden(
            "you can only access your own account data".into(),
        ))
    }
}

/// Account data types the server manages itself and clients may not set directly.
fn check_settable(data_type: &str) -> Result<(), Error> {
    if matches!(data_type, "m.fully_read" | "m.push_rules") {
        return Err(Error::BadJson(format!(
            "{data_type} is managed by the server; use its dedicated endpoint"
        )));
    }
    Ok(())
}

fn json_object_text(raw: &str) -> Result<String, Error> {
    match serde_json::from_str::<Value>(raw) {
        Ok(Value::Object(map)) => Ok(Value::Object(map).to_string()),
        Ok(_) => Err(Error::BadJson("account data must be a JSON object".into())),
        Err(e) => Err(Error::NotJson(e.to_string())),
    }
}

/// # `PUT /_matrix/client/v3/user/{userId}/account_data/{type}`
pub async fn set_global_account_data_route(
    services: Arc<Services>,
    request: Ruma<set_global_account_data::v3::Request>,
) -> Result<set_global_account_data::v3::Response, Error> {
    let sender = request.sender()?;
    own(&sender.user_id, &request.body.user_id)?;
    let data_type = request.body.event_type.to_string();
    check_settable(&data_type)?;
    let content = json_object_text(request.body.data.json().get())?;
    services
        .store
        .set_account_data(sender.user_id.as_str(), "", &data_type, &content)
        .await?;
    Ok(set_global_account_data::v3::Response::new())
}

/// # `GET /_matrix/client/v3/user/{userId}/account_data/{type}`
pub async fn get_global_account_data_route(
    services: Arc<Services>,
    request: Ruma<get_global_account_data::v3::Request>,
) -> Result<get_global_account_data::v3::Response, Error> {
    let sender = request.sender()?;
    own(&sender.user_id, &request.body.user_id)?;
    let content = services
        .store
        .account_data(
            sender.user_id.as_str(),
            "",
            &request.body.event_type.to_string(),
        )
        .await?
        .ok_or_else(|| Error::NotFound("account data not found".into()))?;
    let raw = Raw::from_json_string(content).map_err(|e| Error::Internal(e.to_string()))?;
    Ok(get_global_account_data::v3::Response::new(raw))
}

async fn check_room(services: &Services, room_id: &RoomId) -> Result<(), Error> {
    if services.rooms.exists(room_id).await? {
        Ok(())
    } else {
        Err(Error::NotFound("unknown room".into()))
    }
}

/// # `PUT /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}`
pub async fn set_room_account_data_route(
    services: Arc<Services>,
    request: Ruma<set_room_account_data::v3::Request>,
) -> Result<set_room_account_data::v3::Response, Error> {
    let sender = request.sender()?;
    own(&sender.user_id, &request.body.user_id)?;
    check_room(&services, &request.body.room_id).await?;
    let data_type = request.body.event_type.to_string();
    check_settable(&data_type)?;
    let content = json_object_text(request.body.data.json().get())?;
    services
        .store
        .set_account_data(
            sender.user_id.as_str(),
            request.body.room_id.as_str(),
            &data_type,
            &content,
        )
        .await?;
    Ok(set_room_account_data::v3::Response::new())
}

/// A user's tags of a room: the `tags` of the room's `m.tag` account data.
pub(crate) async fn room_tags(
    services: &Services,
    user_id: &UserId,
    room_id: &RoomId,
) -> Result<serde_json::Map<String, Value>, Error> {
    let content = services
        .store
        .account_data(user_id.as_str(), room_id.as_str(), "m.tag")
        .await?;
    Ok(content
        .and_then(|text| serde_json::from_str::<Value>(&text).ok())
        .and_then(|mut value| match value["tags"].take() {
            Value::Object(tags) => Some(tags),
            _ => None,
        })
        .unwrap_or_default())
}

pub(crate) async fn set_room_tags(
    services: &Services,
    user_id: &UserId,
    room_id: &RoomId,
    tags: serde_json::Map<String, Value>,
) -> Result<(), Error> {
    let content = serde_json::json!({ "tags": tags }).to_string();
    services
        .store
        .set_account_data(user_id.as_str(), room_id.as_str(), "m.tag", &content)
        .await?;
    Ok(())
}

/// # `GET /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags`
pub async fn get_tags_route(
    services: Arc<Services>,
    request: Ruma<get_tags::v3::Request>,
) -> Result<get_tags::v3::Response, Error> {
    let sender = request.sender()?;
    own(&sender.user_id, &request.body.user_id)?;
    let tags = room_tags(&services, &sender.user_id, &request.body.room_id).await?;
    let tags = serde_json::from_value(Value::Object(tags)).unwrap_or_default();
    Ok(get_tags::v3::Response::new(tags))
}

/// # `PUT /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag}`
pub async fn create_tag_route(
    services: Arc<Services>,
    request: Ruma<create_tag::v3::Request>,
) -> Result<create_tag::v3::Response, Error> {
    let sender = request.sender()?;
    let body = &request.body;
    own(&sender.user_id, &body.user_id)?;
    check_room(&services, &body.room_id).await?;
    if body.tag.is_empty() || body.tag.len() > 255 {
        return Err(Error::InvalidParam("a tag has 1 to 255 bytes".into()));
    }
    let mut tags = room_tags(&services, &sender.user_id, &body.room_id).await?;
    let info = serde_json::to_value(&body.tag_info).map_err(|e| Error::Internal(e.to_string()))?;
    tags.insert(body.tag.clone(), info);
    set_room_tags(&services, &sender.user_id, &body.room_id, tags).await?;
    Ok(create_tag::v3::Response::new())
}

/// # `DELETE /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag}`
pub async fn delete_tag_route(
    services: Arc<Services>,
    request: Ruma<delete_tag::v3::Request>,
) -> Result<delete_tag::v3::Response, Error> {
    let sender = request.sender()?;
    let body = &request.body;
    own(&sender.user_id, &body.user_id)?;
    let mut tags = room_tags(&services, &sender.user_id, &body.room_id).await?;
    if tags.remove(&body.tag).is_some() {
        set_room_tags(&services, &sender.user_id, &body.room_id, tags).await?;
    }
    Ok(delete_tag::v3::Response::new())
}

/// # `GET /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}`
pub async fn get_room_account_data_route(
    services: Arc<Services>,
    request: Ruma<get_room_account_data::v3::Request>,
) -> Result<get_room_account_data::v3::Response, Error> {
    let sender = request.sender()?;
    own(&sender.user_id, &request.body.user_id)?;
    let content = services
        .store
        .account_data(
            sender.user_id.as_str(),
            request.body.room_id.as_str(),
            &request.body.event_type.to_string(),
        )
        .await?
        .ok_or_else(|| Error::NotFound("account data not found".into()))?;
    let raw = Raw::from_json_string(content).map_err(|e| Error::Internal(e.to_string()))?;
    Ok(get_room_account_data::v3::Response::new(raw))
}

/// # `POST /_matrix/client/v3/user/{userId}/filter`
pub async fn create_filter_route(
    services: Arc<Services>,
    request: Ruma<create_filter::v3::Request>,
) -> Result<create_filter::v3::Response, Error> {
    let sender = request.sender()?;
    own(&sender.user_id, &request.body.user_id)?;
    let json =
        serde_json::to_string(&request.body.filter).map_err(|e| Error::Internal(e.to_string()))?;
    let id = services
        .store
        .create_filter(sender.user_id.as_str(), &json)
        .await?;
    Ok(create_filter::v3::Response::new(id.to_string()))
}

/// # `GET /_matrix/client/v3/user/{userId}/filter/{filterId}`
pub async fn get_filter_route(
    services: Arc<Services>,
    request: Ruma<get_filter::v3::Request>,
) -> Result<get_filter::v3::Response, Error> {
    let sender = request.sender()?;
    own(&sender.user_id, &request.body.user_id)?;
    let not_found = || Error::NotFound("filter not found".into());
    let id: i64 = request.body.filter_id.parse().map_err(|_| not_found())?;
    let json = services
        .store
        .filter(sender.user_id.as_str(), id)
        .await?
        .ok_or_else(not_found)?;
    let filter = serde_json::from_str(&json).map_err(|e| Error::Internal(e.to_string()))?;
    Ok(get_filter::v3::Response::new(filter))
}

/// The user's push rules: the stored set, or the specification's defaults.
pub(crate) async fn ruleset(services: &Services, user_id: &UserId) -> Result<Ruleset, Error> {
    match services.store.push_rules(user_id.as_str()).await? {
        Some(json) => serde_json::from_str(&json)
            .map_err(|e| Error::Internal(format!("stored push rules: {e}"))),
        None => Ok(Ruleset::server_default(user_id)),
    }
}

async fn save_ruleset(services: &Services, user_id: &UserId, rules: &Ruleset) -> Result<(), Error> {
    let json = serde_json::to_string(rules).map_err(|e| Error::Internal(e.to_string()))?;
    services
        .store
        .set_push_rules(user_id.as_str(), &json)
        .await?;
    // Clients learn of changes through the m.push_rules account data.
    let content = serde_json::json!({ "global": ruleset_json(rules)? }).to_string();
    services
        .store
        .set_account_data(user_id.as_str(), "", "m.push_rules", &content)
        .await?;
    Ok(())
}

/// Loads a user's rules, changes them, and saves them when the change succeeded.
pub(crate) async fn change_ruleset(
    services: &Services,
    user_id: &UserId,
    change: impl FnOnce(&mut Ruleset) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut rules = ruleset(services, user_id).await?;
    change(&mut rules)?;
    save_ruleset(services, user_id, &rules).await
}

/// Reads one rule of a user's rules.
async fn read_rule<T>(
    services: &Services,
    user_id: &UserId,
    kind: &ruma::push::RuleKind,
    rule_id: &str,
    read: impl FnOnce(ruma::push::AnyPushRuleRef<'_>) -> T,
) -> Result<T, Error> {
    known_kind(kind)?;
    let rules = ruleset(services, user_id).await?;
    let rule = rules
        .get(kind.clone(), rule_id)
        .ok_or_else(rule_not_found)?;
    Ok(read(rule))
}

/// Fails for a kind the specification does not have.
fn known_kind(kind: &ruma::push::RuleKind) -> Result<(), Error> {
    use ruma::push::RuleKind;
    match kind {
        RuleKind::Override
        | RuleKind::Underride
        | RuleKind::Sender
        | RuleKind::Room
        | RuleKind::Content => Ok(()),
        other => Err(Error::InvalidParam(format!(
            "{:?} is not a push rule kind",
            other.as_str()
        ))),
    }
}

fn rule_not_found() -> Error {
    Error::NotFound("push rule not found".into())
}

/// A rule set as clients read it: every kind present, empty ones too (clients iterate over
/// each kind without checking that it is there).
pub(crate) fn ruleset_json(rules: &Ruleset) -> Result<Value, Error> {
    let mut value = serde_json::to_value(rules).map_err(|e| Error::Internal(e.to_string()))?;
    if let Some(kinds) = value.as_object_mut() {
        for kind in ["override", "content", "room", "sender", "underride"] {
            kinds
                .entry(kind)
                .or_insert_with(|| Value::Array(Vec::new()));
        }
    }
    Ok(value)
}

/// # `GET /_matrix/client/v3/pushrules/` (also without the trailing slash)
pub async fn get_pushrules_all_route(
    State(services): State<Arc<Services>>,
    Authenticated(sender): Authenticated,
) -> Result<Json<Value>, Error> {
    let rules = ruleset(&services, &sender.user_id).await?;
    Ok(Json(serde_json::json!({ "global": ruleset_json(&rules)? })))
}

/// # `GET /_matrix/client/v3/pushrules/global/` (also without the trailing slash)
pub async fn get_pushrules_global_scope_route(
    State(services): State<Arc<Services>>,
    Authenticated(sender): Authenticated,
) -> Result<Json<Value>, Error> {
    let rules = ruleset(&services, &sender.user_id).await?;
    Ok(Json(ruleset_json(&rules)?))
}

/// # `GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}`
pub async fn get_pushrule_route(
    services: Arc<Services>,
    request: Ruma<get_pushrule::v3::Request>,
) -> Result<get_pushrule::v3::Response, Error> {
    let sender = request.sender()?;
    read_rule(
        &services,
        &sender.user_id,
        &request.body.kind,
        &request.body.rule_id,
        |rule| get_pushrule::v3::Response::new(PushRule::from(rule)),
    )
    .await
}

/// # `PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}`
pub async fn set_pushrule_route(
    services: Arc<Services>,
    request: Ruma<set_pushrule::v3::Request>,
) -> Result<set_pushrule::v3::Response, Error> {
    let sender = request.sender()?;
    change_ruleset(&services, &sender.user_id, |rules| {
        rules
            .insert(
                request.body.rule.clone(),
                request.body.after.as_deref(),
                request.body.before.as_deref(),
            )
            .map_err(|error| match error {
                InsertPushRuleError::UnknownRuleId => {
                    Error::NotFound("the rule given in before or after does not exist".into())
                }
                other => Error::InvalidParam(other.to_string()),
            })
    })
    .await?;
    Ok(set_pushrule::v3::Response::new())
}

/// # `DELETE /_matrix/client/v3/pushrules/global/{kind}/{ruleId}`
pub async fn delete_pushrule_route(
    services: Arc<Services>,
    request: Ruma<delete_pushrule::v3::Request>,
) -> Result<delete_pushrule::v3::Response, Error> {
    let sender = request.sender()?;
    known_kind(&request.body.kind)?;
    change_ruleset(&services, &sender.user_id, |rules| {
        rules
            .remove(request.body.kind.clone(), &request.body.rule_id)
            .map_err(|error| match error {
                RemovePushRuleError::NotFound => rule_not_found(),
                other => Error::InvalidParam(other.to_string()),
            })
    })
    .await?;
    Ok(delete_pushrule::v3::Response::new())
}

/// # `GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/enabled`
pub async fn get_pushrule_enabled_route(
    services: Arc<Services>,
    request: Ruma<get_pushrule_enabled::v3::Request>,
) -> Result<get_pushrule_enabled::v3::Response, Error> {
    let sender = request.sender()?;
    read_rule(
        &services,
        &sender.user_id,
        &request.body.kind,
        &request.body.rule_id,
        |rule| get_pushrule_enabled::v3::Response::new(rule.enabled()),
    )
    .await
}

/// # `PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/enabled`
pub async fn set_pushrule_enabled_route(
    services: Arc<Services>,
    request: Ruma<set_pushrule_enabled::v3::Request>,
) -> Result<set_pushrule_enabled::v3::Response, Error> {
    let sender = request.sender()?;
    known_kind(&request.body.kind)?;
    change_ruleset(&services, &sender.user_id, |rules| {
        rules
            .set_enabled(
                request.body.kind.clone(),
                &request.body.rule_id,
                request.body.enabled,
            )
            .map_err(|_| rule_not_found())
    })
    .await?;
    Ok(set_pushrule_enabled::v3::Response::new())
}

/// # `GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/actions`
pub async fn get_pushrule_actions_route(
    services: Arc<Services>,
    request: Ruma<get_pushrule_actions::v3::Request>,
) -> Result<get_pushrule_actions::v3::Response, Error> {
    let sender = request.sender()?;
    read_rule(
        &services,
        &sender.user_id,
        &request.body.kind,
        &request.body.rule_id,
        |rule| get_pushrule_actions::v3::Response::new(rule.actions().to_vec()),
    )
    .await
}

/// # `PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/actions`
pub async fn set_pushrule_actions_route(
    services: Arc<Services>,
    request: Ruma<set_pushrule_actions::v3::Request>,
) -> Result<set_pushrule_actions::v3::Response, Error> {
    let sender = request.sender()?;
    known_kind(&request.body.kind)?;
    change_ruleset(&services, &sender.user_id, |rules| {
        rules
            .set_actions(
                request.body.kind.clone(),
                &request.body.rule_id,
                request.body.actions.clone(),
            )
            .map_err(|_| rule_not_found())
    })
    .await?;
    Ok(set_pushrule_actions::v3::Response::new())
}
