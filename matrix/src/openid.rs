//! OpenID: a user asks for a token that proves who they are (`POST
//! /_matrix/client/v3/user/{userId}/openid/request_token`) and gives it to a third party, an
//! integration manager say, which asks this server whose it is (`GET
//! /_matrix/federation/v1/openid/userinfo`, not signed: the third party is no homeserver).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use ruma::OwnedUserId;
use serde_json::{Value, json};

use crate::Services;
use crate::api::Authenticated;
use crate::error::Error;
use crate::services::random_string;
use crate::store::now_ms;

/// How long a token proves its user's identity.
const LIFETIME_SECONDS: i64 = 3600;

/// # `POST /_matrix/client/v3/user/{userId}/openid/request_token`
pub async fn request_token_route(
    State(services): State<Arc<Services>>,
    Path(user_id): Path<OwnedUserId>,
    Authenticated(sender): Authenticated,
) -> Result<Json<Value>, Error> {
    if user_id != sender.user_id {
        return Err(Error::Forbidden(
            "an OpenID token is asked for by its own user only".into(),
        ));
    }
    let token = random_string(32);
    let now = now_ms();
    services
        .store
        .add_openid_token(&token, user_id.as_str(), now + LIFETIME_SECONDS * 1000, now)
        .await?;
    Ok(Json(json!({
        "access_token": token,
        "token_type": "Bearer",
        "matrix_server_name": services.server_name,
        "expires_in": LIFETIME_SECONDS,
    })))
}

/// # `GET /_matrix/federation/v1/openid/userinfo?access_token=…`
pub async fn userinfo_route(
    State(services): State<Arc<Services>>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, Error> {
    let token = query.get("access_token").ok_or(Error::UnknownToken)?;
    let user = services
        .store
        .openid_user(token, now_ms())
        .await?
        .ok_or(Error::UnknownToken)?;
    Ok(Json(json!({ "sub": user })))
}
