//! The administration API, on the paths and with the shapes of Synapse's admin API (so that
//! the tools written for it work): accounts listed, read, created and changed, passwords reset,
//! accounts deactivated and erased. What it does is in [`crate::admin`].
//!
//! A request is authenticated by the access token of a server administrator, or by the local
//! administration secret the running server writes into its data directory for the command line
//! (`causeway user …` while the server runs).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::BodyExt;
use ruma::{OwnedUserId, UserId};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Services;
use crate::admin::{self, UserChange};
use crate::api::client::account::same_secret;
use crate::error::Error;
use crate::store::UserRecord;

/// The routes of the admin API.
pub fn routes() -> Router<Arc<Services>> {
    Router::new()
        .route("/_synapse/admin/v1/server_version", get(server_version))
        .route("/_synapse/admin/v2/users", get(list_users))
        .route(
            "/_synapse/admin/v2/users/{user_id}",
            get(get_user).put(put_user),
        )
        .route(
            "/_synapse/admin/v1/reset_password/{user_id}",
            post(reset_password),
        )
        .route("/_synapse/admin/v1/deactivate/{user_id}", post(deactivate))
}

/// Who made an admin request.
enum Administrator {
    /// A server administrator's account.
    Account(OwnedUserId),
    /// The command line on the server's machine, with the local secret.
    Local,
}

/// Authenticates an admin request: a token of an administrator's account, or the local secret.
async fn administrator(
    services: &Services,
    headers: &HeaderMap,
    query: &ListQuery,
) -> Result<Administrator, Error> {
    let token = crate::api::bearer_token(headers, query.access_token.as_deref())
        .ok_or(Error::MissingToken)?;
    if let Some(secret) = services.admin_secret()
        && same_secret(&token, secret)
    {
        return Ok(Administrator::Local);
    }
    let sender = services.authenticate(&token).await?;
    let is_admin = services
        .store
        .user(sender.user_id.as_str())
        .await?
        .is_some_and(|user| user.is_admin);
    if !is_admin {
        return Err(Error::Forbidden(
            "you are not a server administrator".into(),
        ));
    }
    Ok(Administrator::Account(sender.user_id))
}

/// The query parameters the admin endpoints read.
#[derive(Debug, Default, Deserialize)]
struct ListQuery {
    access_token: Option<String>,
    from: Option<String>,
    limit: Option<String>,
    deactivated: Option<String>,
}

fn user_id(services: &Services, raw: &str) -> Result<OwnedUserId, Error> {
    let user_id = UserId::parse(raw)
        .map_err(|e| Error::InvalidParam(format!("not a user id: {raw}: {e}")))?;
    if !services.is_local(&user_id) {
        return Err(Error::InvalidParam(
            "only users of this server can be administered here".into(),
        ));
    }
    Ok(user_id)
}

/// A JSON object body, read up to the configured limit; an empty body is `{}`.
async fn json_body(services: &Services, body: Body) -> Result<Value, Error> {
    let limit = usize::try_from(services.config.limits.max_json_body).unwrap_or(usize::MAX);
    let bytes = http_body_util::Limited::new(body, limit)
        .collect()
        .await
        .map_err(|_| Error::TooLarge(format!("the request body is larger than {limit} bytes")))?
        .to_bytes();
    if bytes.is_empty() {
        return Ok(json!({}));
    }
    let value: Value =
        serde_json::from_slice(&bytes).map_err(|e| Error::NotJson(format!("not JSON: {e}")))?;
    if !value.is_object() {
        return Err(Error::BadJson("the body must be a JSON object".into()));
    }
    Ok(value)
}

fn field<'a, T: Deserialize<'a>>(body: &'a Value, name: &str) -> Result<Option<T>, Error> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => T::deserialize(value)
            .map(Some)
            .map_err(|e| Error::BadJson(format!("{name}: {e}"))),
    }
}

/// A user as the admin API shows it.
fn user_json(user: &UserRecord) -> Value {
    json!({
        "name": user.user_id,
        "displayname": user.displayname,
        "avatar_url": user.avatar_url,
        "admin": user.is_admin,
        "deactivated": user.deactivated,
        "erased": user.erased,
        "is_guest": false,
        "user_type": null,
        "creation_ts": user.created_ts,
        "threepids": [],
        "external_ids": [],
    })
}

fn respond(result: Result<(StatusCode, Value), Error>) -> Response {
    match result {
        Ok((status, body)) => (status, axum::Json(body)).into_response(),
        Err(error) => error.into_response(),
    }
}

/// An authenticated admin request: who made it, the user in its path (if any), its query and
/// its JSON body (`{}` when there is none).
struct AdminCall {
    by: Administrator,
    user_id: Option<OwnedUserId>,
    query: ListQuery,
    body: Value,
}

impl AdminCall {
    fn user_id(&self) -> Result<&OwnedUserId, Error> {
        self.user_id
            .as_ref()
            .ok_or_else(|| Error::MissingParam("a user id is required".into()))
    }

    /// Refuses an administrator's action on their own account.
    fn not_on_themselves(&self, what: &str) -> Result<(), Error> {
        match (&self.by, &self.user_id) {
            (Administrator::Account(admin), Some(user)) if admin == user => Err(
                Error::InvalidParam(format!("administrators cannot {what} themselves here")),
            ),
            _ => Ok(()),
        }
    }
}

impl axum::extract::FromRequest<Arc<Services>> for AdminCall {
    type Rejection = Response;

    async fn from_request(
        request: axum::extract::Request,
        services: &Arc<Services>,
    ) -> Result<Self, Self::Rejection> {
        use axum::extract::FromRequestParts;
        let (mut parts, body) = request.into_parts();
        let call = async {
            let Query(query) = Query::<ListQuery>::from_request_parts(&mut parts, services)
                .await
                .map_err(|e| Error::InvalidParam(format!("query: {e}")))?;
            let by = administrator(services, &parts.headers, &query).await?;
            let user_id = match Path::<String>::from_request_parts(&mut parts, services).await {
                Ok(Path(raw)) => Some(user_id(services, &raw)?),
                Err(_) => None,
            };
            let body = json_body(services, body).await?;
            Ok(AdminCall {
                by,
                user_id,
                query,
                body,
            })
        };
        call.await.map_err(|error: Error| error.into_response())
    }
}

/// # `GET /_synapse/admin/v1/server_version`
async fn server_version(_call: AdminCall) -> Response {
    respond(Ok((
        StatusCode::OK,
        json!({"server_version": env!("CARGO_PKG_VERSION")}),
    )))
}

/// # `GET /_synapse/admin/v2/users`: `from` (an offset), `limit` (100 by default),
/// `deactivated` (`true` lists deactivated accounts too).
async fn list_users(State(services): State<Arc<Services>>, call: AdminCall) -> Response {
    respond(
        async {
            let query = &call.query;
            let number = |value: &Option<String>, default: usize, name: &str| match value {
                None => Ok(default),
                Some(text) => text
                    .parse::<usize>()
                    .map_err(|_| Error::InvalidParam(format!("{name} must be a number"))),
            };
            let from = number(&query.from, 0, "from")?;
            let limit = number(&query.limit, 100, "limit")?.clamp(1, 1000);
            let with_deactivated = query.deactivated.as_deref() == Some("true");
            let users: Vec<UserRecord> = services
                .store
                .users()
                .await?
                .into_iter()
                .filter(|user| with_deactivated || !user.deactivated)
                .collect();
            let total = users.len();
            let page: Vec<Value> = users.iter().skip(from).take(limit).map(user_json).collect();
            let mut body = json!({"users": page, "total": total});
            if from + limit < total {
                body["next_token"] = json!((from + limit).to_string());
            }
            Ok((StatusCode::OK, body))
        }
        .await,
    )
}

async fn user_record(services: &Services, user_id: &UserId) -> Result<UserRecord, Error> {
    services
        .store
        .user(user_id.as_str())
        .await?
        .ok_or_else(|| Error::NotFound("user not found".into()))
}

/// # `GET /_synapse/admin/v2/users/{userId}`
async fn get_user(State(services): State<Arc<Services>>, call: AdminCall) -> Response {
    respond(
        async {
            let user = user_record(&services, call.user_id()?).await?;
            Ok((StatusCode::OK, user_json(&user)))
        }
        .await,
    )
}

/// # `PUT /_synapse/admin/v2/users/{userId}`: creates the account (201) or changes it (200):
/// `password`, `admin`, `displayname`, `deactivated`, `logout_devices`.
async fn put_user(State(services): State<Arc<Services>>, call: AdminCall) -> Response {
    respond(
        async {
            let user_id = call.user_id()?;
            let body = &call.body;
            let change = UserChange {
                password: field(body, "password")?,
                admin: field(body, "admin")?,
                displayname: field(body, "displayname")?,
                deactivated: field(body, "deactivated")?,
                logout_devices: field(body, "logout_devices")?.unwrap_or(true),
            };
            if change.admin == Some(false) || change.deactivated == Some(true) {
                call.not_on_themselves("demote or deactivate")?;
            }
            let created = admin::create_or_modify(&services, user_id, change).await?;
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok((status, user_json(&user_record(&services, user_id).await?)))
        }
        .await,
    )
}

/// # `POST /_synapse/admin/v1/reset_password/{userId}`: `new_password`, `logout_devices`.
async fn reset_password(State(services): State<Arc<Services>>, call: AdminCall) -> Response {
    respond(
        async {
            let password: String = field(&call.body, "new_password")?
                .ok_or_else(|| Error::MissingParam("new_password is required".into()))?;
            let logout = field(&call.body, "logout_devices")?.unwrap_or(true);
            admin::reset_password(&services, call.user_id()?, &password, logout).await?;
            Ok((StatusCode::OK, json!({})))
        }
        .await,
    )
}

/// # `POST /_synapse/admin/v1/deactivate/{userId}`: `erase`.
async fn deactivate(State(services): State<Arc<Services>>, call: AdminCall) -> Response {
    respond(
        async {
            call.not_on_themselves("deactivate")?;
            let erase = field(&call.body, "erase")?.unwrap_or(false);
            admin::deactivate(&services, call.user_id()?, erase).await?;
            Ok((
                StatusCode::OK,
                json!({"id_server_unbind_result": "success"}),
            ))
        }
        .await,
    )
}
