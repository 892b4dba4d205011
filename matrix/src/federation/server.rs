//! The server-server endpoints this server answers, and the authentication every one of them
//! but the key endpoints requires: an `X-Matrix` signature of the origin, verified with the
//! origin's key (fetched from it when not known), over the method, the URI as sent, both
//! server names and the body. No other scheme is accepted, and none means refused.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{FromRequest, Query, Request, State};
use ruma::canonical_json::CanonicalJsonValue;
use ruma::{OwnedServerName, UserId};
use serde_json::{Map, Value, json};

use super::xmatrix::{self, AuthError, XMatrix};
use crate::Services;
use crate::error::Error;

/// The largest request body read from another server (a transaction of 50 PDUs of 64 KiB and
/// 100 EDUs fits).
pub const REQUEST_LIMIT: usize = 8 * 1024 * 1024;

/// A request of another server, authenticated: who sent it, and its body.
pub struct Federated {
    pub origin: OwnedServerName,
    pub body: Option<CanonicalJsonValue>,
}

impl FromRequest<Arc<Services>> for Federated {
    type Rejection = Error;

    async fn from_request(request: Request, services: &Arc<Services>) -> Result<Self, Error> {
        let (parts, body) = request.into_parts();
        let headers: Vec<&str> = parts
            .headers
            .get_all(http::header::AUTHORIZATION)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .collect();
        if headers.is_empty() {
            return Err(AuthError::Missing.into());
        }
        let bytes = axum::body::to_bytes(body, REQUEST_LIMIT)
            .await
            .map_err(|_| Error::TooLarge("the request body is too large".into()))?;
        let body = if bytes.is_empty() {
            None
        } else {
            let value: Value = serde_json::from_slice(&bytes)
                .map_err(|e| Error::NotJson(format!("the body is not JSON: {e}")))?;
            Some(
                CanonicalJsonValue::try_from(value)
                    .map_err(|e| Error::BadJson(format!("the body is not canonical JSON: {e}")))?,
            )
        };
        let uri = parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), ToString::to_string);
        // Several signatures may come (one per key): one that verifies is enough.
        let mut refusal = AuthError::UnknownScheme;
        for header in headers {
            let auth = match XMatrix::parse(header) {
                Ok(auth) => auth,
                Err(error) => {
                    refusal = error;
                    continue;
                }
            };
            if !super::acl::configured(&services.config.federation, &auth.origin) {
                return Err(Error::Forbidden(format!(
                    "this server does not federate with {}",
                    auth.origin
                )));
            }
            let key = services
                .server_keys
                .key(
                    &services.federation,
                    &auth.origin,
                    &auth.key,
                    crate::store::now_ms(),
                )
                .await?;
            xmatrix::verify_request(
                &auth,
                &services.server_name,
                &key,
                parts.method.as_str(),
                &uri,
                body.as_ref(),
            )?;
            return Ok(Federated {
                origin: auth.origin,
                body,
            });
        }
        Err(refusal.into())
    }
}

/// # `GET /_matrix/federation/v1/query/profile`: a local user's profile, or one field of it.
pub async fn query_profile_route(
    State(services): State<Arc<Services>>,
    Query(query): Query<HashMap<String, String>>,
    _request: Federated,
) -> Result<Json<Value>, Error> {
    let user_id = query
        .get("user_id")
        .ok_or_else(|| Error::MissingParam("`user_id` is required".into()))?;
    let user_id = UserId::parse(user_id.as_str())
        .map_err(|e| Error::InvalidParam(format!("invalid `user_id`: {e}")))?;
    if user_id.server_name() != services.server_name {
        return Err(Error::InvalidParam(format!(
            "{user_id} is not a user of this server"
        )));
    }
    let user = services
        .store
        .user(user_id.as_str())
        .await?
        .filter(|user| !user.deactivated)
        .ok_or_else(|| Error::NotFound("profile not found".into()))?;
    let mut profile = Map::new();
    let field = query.get("field").map(String::as_str);
    if matches!(field, None | Some("displayname"))
        && let Some(name) = user.displayname
    {
        profile.insert("displayname".into(), json!(name));
    }
    if matches!(field, None | Some("avatar_url"))
        && let Some(avatar) = user.avatar_url
    {
        profile.insert("avatar_url".into(), json!(avatar));
    }
    Ok(Json(Value::Object(profile)))
}

/// The documents `POST /_matrix/key/v2/query` and `GET /_matrix/key/v2/query/{serverName}`
/// answer: each server's own key document with this server's signature added; this server's
/// own from itself; servers whose keys cannot be had are left out.
async fn notary_documents(
    services: &Services,
    wanted: Vec<(OwnedServerName, i64)>,
) -> Result<Value, Error> {
    let mut documents = Vec::new();
    for (server, minimum_valid_until) in wanted {
        let document = if server == services.server_name {
            super::keys::own_key_document(&services.server_name, &services.key)
                .map_err(Error::Internal)?
        } else {
            match services
                .server_keys
                .document(&services.federation, &server, minimum_valid_until)
                .await
            {
                Ok(document) => {
                    super::keys::notarise(&document, &services.server_name, &services.key)
                        .map_err(Error::Internal)?
                }
                Err(error) => {
                    tracing::info!(%server, %error, "keys asked of this notary not had");
                    continue;
                }
            }
        };
        documents.push(document);
    }
    Ok(json!({ "server_keys": documents }))
}

/// At most this many servers are looked up for one key query.
const QUERY_LIMIT: usize = 50;

/// # `POST /_matrix/key/v2/query`: keys of several servers, as a notary.
pub async fn key_query_route(
    State(services): State<Arc<Services>>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, Error> {
    let body: Value =
        serde_json::from_slice(&body).map_err(|e| Error::NotJson(format!("the body: {e}")))?;
    let servers = body
        .get("server_keys")
        .and_then(Value::as_object)
        .ok_or_else(|| Error::BadJson("`server_keys` must be an object".into()))?;
    if servers.len() > QUERY_LIMIT {
        return Err(Error::TooLarge(format!(
            "at most {QUERY_LIMIT} servers a query"
        )));
    }
    let mut wanted = Vec::new();
    for (server, keys) in servers {
        let server = ruma::ServerName::parse(server)
            .map_err(|_| Error::BadJson(format!("{server:?} is not a server name")))?;
        let minimum = keys
            .as_object()
            .into_iter()
            .flat_map(|keys| keys.values())
            .filter_map(|criteria| criteria.get("minimum_valid_until_ts")?.as_i64())
            .max()
            .unwrap_or(0);
        wanted.push((server, minimum));
    }
    Ok(Json(notary_documents(&services, wanted).await?))
}

/// # `GET /_matrix/key/v2/query/{serverName}`: one server's keys, as a notary.
pub async fn key_query_server_route(
    State(services): State<Arc<Services>>,
    axum::extract::Path(server): axum::extract::Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, Error> {
    let server = ruma::ServerName::parse(&server)
        .map_err(|_| Error::InvalidParam(format!("{server:?} is not a server name")))?;
    let minimum = match query.get("minimum_valid_until_ts") {
        Some(value) => value.parse::<i64>().map_err(|_| {
            Error::InvalidParam("`minimum_valid_until_ts` must be an integer".into())
        })?,
        None => 0,
    };
    Ok(Json(
        notary_documents(&services, vec![(server, minimum)]).await?,
    ))
}

/// # `GET /_matrix/federation/v1/query/directory`: the room a local alias names, and the
/// servers of its joined members (this one first) to join it through.
pub async fn query_directory_route(
    State(services): State<Arc<Services>>,
    Query(query): Query<HashMap<String, String>>,
    _request: Federated,
) -> Result<Json<Value>, Error> {
    let alias = query
        .get("room_alias")
        .ok_or_else(|| Error::MissingParam("`room_alias` is required".into()))?;
    let alias = ruma::RoomAliasId::parse(alias.as_str())
        .map_err(|e| Error::InvalidParam(format!("invalid `room_alias`: {e}")))?;
    if alias.server_name() != services.server_name {
        return Err(Error::InvalidParam(format!(
            "{alias} is not an alias of this server"
        )));
    }
    let room_id = services
        .local_alias(&alias)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no room has the alias {alias}")))?
        .to_string();
    let mut servers = vec![services.server_name.to_string()];
    for member in services.store.room_members(&room_id, "join").await? {
        if let Ok(member) = UserId::parse(member.as_str()) {
            let server = member.server_name().to_string();
            if !servers.contains(&server) {
                servers.push(server);
            }
        }
    }
    Ok(Json(json!({ "room_id": room_id, "servers": servers })))
}
