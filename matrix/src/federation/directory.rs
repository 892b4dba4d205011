//! The public room directory and profiles across servers: this server's published rooms
//! served to others (`publicRooms`), and, for local clients, another server's directory and
//! its users' profiles asked of it.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use ruma::directory::PublicRoomsChunk;
use ruma::{ServerName, UInt, UserId};
use serde_json::{Map, Value, json};

use super::client::FederationError;
use super::server::Federated;
use crate::Services;
use crate::error::Error;

/// A page of a room directory: its rooms, the tokens of the next and previous pages, and how
/// many rooms it has in all, when known.
pub struct DirectoryPage {
    pub chunk: Vec<PublicRoomsChunk>,
    pub next_batch: Option<String>,
    pub prev_batch: Option<String>,
    pub total: Option<u64>,
}

impl DirectoryPage {
    fn to_json(&self) -> Result<Value, Error> {
        let chunk =
            serde_json::to_value(&self.chunk).map_err(|e| Error::Internal(e.to_string()))?;
        let mut page = json!({ "chunk": chunk });
        if let Some(next) = &self.next_batch {
            page["next_batch"] = json!(next);
        }
        if let Some(prev) = &self.prev_batch {
            page["prev_batch"] = json!(prev);
        }
        if let Some(total) = self.total {
            page["total_room_count_estimate"] = json!(total);
        }
        Ok(page)
    }
}

fn limit(value: Option<&Value>) -> Result<Option<UInt>, Error> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value
            .as_u64()
            .and_then(|n| UInt::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| Error::InvalidParam("`limit` must be a non-negative integer".into())),
    }
}

fn check_served(services: &Services) -> Result<(), Error> {
    if services.config.federation.serve_public_rooms {
        Ok(())
    } else {
        Err(Error::Forbidden(format!(
            "the public room directory of {} is not served to other servers",
            services.server_name
        )))
    }
}

/// # `GET /_matrix/federation/v1/publicRooms`: this server's published rooms.
pub async fn public_rooms_route(
    State(services): State<Arc<Services>>,
    Query(query): Query<HashMap<String, String>>,
    _request: Federated,
) -> Result<Json<Value>, Error> {
    check_served(&services)?;
    let limit = match query.get("limit") {
        Some(text) => Some(
            text.parse::<u64>()
                .ok()
                .and_then(|n| UInt::try_from(n).ok())
                .ok_or_else(|| {
                    Error::InvalidParam("`limit` must be a non-negative integer".into())
                })?,
        ),
        None => None,
    };
    let page = crate::api::client::room::public_rooms_page(
        &services,
        query.get("since").map(String::as_str),
        limit,
        None,
    )
    .await?;
    Ok(Json(page.to_json()?))
}

/// # `POST /_matrix/federation/v1/publicRooms`: this server's published rooms, filtered.
pub async fn public_rooms_filtered_route(
    State(services): State<Arc<Services>>,
    request: Federated,
) -> Result<Json<Value>, Error> {
    check_served(&services)?;
    let body: Value = request
        .body
        .map(Value::from)
        .unwrap_or_else(|| Value::Object(Map::new()));
    if !body.is_object() {
        return Err(Error::BadJson("the body must be an object".into()));
    }
    let since = match body.get("since") {
        None | Some(Value::Null) => None,
        Some(Value::String(since)) => Some(since.as_str()),
        Some(_) => return Err(Error::BadJson("`since` must be a string".into())),
    };
    let term = match body
        .get("filter")
        .and_then(|f| f.get("generic_search_term"))
    {
        None | Some(Value::Null) => None,
        Some(Value::String(term)) => Some(term.as_str()),
        Some(_) => {
            return Err(Error::BadJson(
                "`filter.generic_search_term` must be a string".into(),
            ));
        }
    };
    let page = crate::api::client::room::public_rooms_page(
        &services,
        since,
        limit(body.get("limit"))?,
        term,
    )
    .await?;
    Ok(Json(page.to_json()?))
}

/// What a local client is told when another server did not answer a question about itself:
/// that server's own refusal where it gave one, else that it could not be asked (502).
fn asked_error(error: FederationError) -> Error {
    match error {
        FederationError::Status(server, status, body) => {
            let text = format!(
                "{server}: {}",
                body.get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("refused")
            );
            match (status, body.get("errcode").and_then(Value::as_str)) {
                (404, _) => Error::NotFound(text),
                (403, _) => Error::Forbidden(text),
                (400, Some("M_INVALID_PARAM")) => Error::InvalidParam(text),
                _ => Error::BadGateway(text),
            }
        }
        other => Error::BadGateway(other.to_string()),
    }
}

/// Another server's room directory, a page of it, as a local client asks for it.
pub async fn remote_public_rooms(
    services: &Services,
    server: &ServerName,
    since: Option<&str>,
    limit: Option<UInt>,
    term: Option<&str>,
) -> Result<DirectoryPage, Error> {
    let answer = if term.is_some() {
        let mut body = json!({});
        if let Some(since) = since {
            body["since"] = json!(since);
        }
        if let Some(limit) = limit {
            body["limit"] = json!(limit);
        }
        if let Some(term) = term {
            body["filter"] = json!({ "generic_search_term": term });
        }
        services
            .federation
            .request(
                server,
                http::Method::POST,
                "/_matrix/federation/v1/publicRooms",
                Some(&body),
                true,
            )
            .await
    } else {
        let mut query = Vec::new();
        if let Some(since) = since {
            query.push(format!("since={}", super::membership::segment(since)));
        }
        if let Some(limit) = limit {
            query.push(format!("limit={limit}"));
        }
        let uri = if query.is_empty() {
            "/_matrix/federation/v1/publicRooms".to_owned()
        } else {
            format!("/_matrix/federation/v1/publicRooms?{}", query.join("&"))
        };
        services
            .federation
            .request(server, http::Method::GET, &uri, None, true)
            .await
    }
    .map_err(asked_error)?;
    let malformed = |what: &str| Error::BadGateway(format!("{server} answered {what}"));
    let chunk = answer
        .get("chunk")
        .cloned()
        .ok_or_else(|| malformed("a directory without `chunk`"))?;
    let chunk: Vec<PublicRoomsChunk> =
        serde_json::from_value(chunk).map_err(|e| malformed(&format!("rooms unreadable: {e}")))?;
    let text = |key: &str| answer.get(key).and_then(Value::as_str).map(str::to_owned);
    Ok(DirectoryPage {
        chunk,
        next_batch: text("next_batch"),
        prev_batch: text("prev_batch"),
        total: answer
            .get("total_room_count_estimate")
            .and_then(Value::as_u64),
    })
}

/// Another server's user's profile, or one field of it (`displayname`, `avatar_url`), asked
/// of their server.
pub async fn remote_profile(
    services: &Services,
    user_id: &UserId,
    field: Option<&str>,
) -> Result<Map<String, Value>, Error> {
    let mut uri = format!(
        "/_matrix/federation/v1/query/profile?user_id={}",
        super::membership::segment(user_id.as_str())
    );
    if let Some(field) = field {
        uri.push_str(&format!("&field={}", super::membership::segment(field)));
    }
    let answer = services
        .federation
        .request(user_id.server_name(), http::Method::GET, &uri, None, true)
        .await
        .map_err(asked_error)?;
    let Value::Object(profile) = answer else {
        return Err(Error::BadGateway(format!(
            "{} answered a profile that is not an object",
            user_id.server_name()
        )));
    };
    // Only the fields a profile has, of the types they have.
    Ok(profile
        .into_iter()
        .filter(|(key, value)| {
            field.is_none_or(|field| key == field)
                && (value.is_string() || value.is_null())
                && (key == "displayname" || key == "avatar_url")
        })
        .collect())
}
