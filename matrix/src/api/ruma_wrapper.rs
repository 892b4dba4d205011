//! Typed requests at the edge: [`Ruma<T>`] parses a ruma request type from the HTTP request
//! and authenticates it as the endpoint's metadata demands; [`RumaResponse`] serialises a
//! ruma response. Routes are registered from ruma's metadata by [`route`].

use std::any::TypeId;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequest, RawPathParams, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, on};
use axum::{RequestExt, Router};
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use ruma::api::auth_scheme::{
    AccessToken, AccessTokenOptional, AppserviceTokenOptional, extract_bearer_or_query_token,
};
use ruma::api::error::{DeserializationError, FromHttpRequestError};
use ruma::api::path_builder::PathBuilder;
use ruma::api::{
    IncomingRequest, IncomingRequestExt, Metadata, OutgoingResponse, OutgoingResponseExt,
};
use ruma::{OwnedDeviceId, OwnedUserId};

use crate::Services;
use crate::error::Error;

/// The authenticated sender of a request.
#[derive(Debug, Clone)]
pub struct Sender {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
    pub access_token: String,
    /// A guest account: only the endpoints of [`crate::api::guests`] are open to it.
    pub is_guest: bool,
}

/// A parsed and authenticated request.
pub struct Ruma<T> {
    pub body: T,
    pub sender: Option<Sender>,
    pub client_ip: Option<IpAddr>,
    /// The raw JSON body, for endpoints that need to see fields ruma does not model.
    pub json_body: Option<serde_json::Value>,
}

impl<T> Ruma<T> {
    /// The sender of a request whose endpoint requires authentication.
    pub fn sender(&self) -> Result<&Sender, Error> {
        self.sender.as_ref().ok_or(Error::MissingToken)
    }
}

/// Whether an endpoint needs an access token, may take one, or takes none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenUse {
    Required,
    Optional,
    None,
}

fn token_use<T: Metadata + 'static>() -> TokenUse
where
    T::Authentication: 'static,
{
    // These take an optional token in the specification for flows by e-mail or phone, which
    // this server does not offer: here they need a token.
    let request = TypeId::of::<T>();
    if request == TypeId::of::<ruma::api::client::account::change_password::v3::Request>()
        || request == TypeId::of::<ruma::api::client::account::deactivate::v3::Request>()
    {
        return TokenUse::Required;
    }
    // Profiles are public, but an authenticated look-up of an account the server makes on
    // demand (an XMPP user's ghost) makes it: the token is read when there is one.
    if request == TypeId::of::<ruma::api::client::profile::get_profile::v3::Request>()
        || request == TypeId::of::<ruma::api::client::profile::get_profile_field::v3::Request>()
    {
        return TokenUse::Optional;
    }
    let scheme = TypeId::of::<T::Authentication>();
    if scheme == TypeId::of::<AccessToken>() {
        TokenUse::Required
    } else if scheme == TypeId::of::<AccessTokenOptional>()
        || scheme == TypeId::of::<AppserviceTokenOptional>()
    {
        TokenUse::Optional
    } else {
        TokenUse::None
    }
}

impl<T> FromRequest<Arc<Services>> for Ruma<T>
where
    T: IncomingRequest + Send + 'static,
    T::Authentication: 'static,
{
    type Rejection = Error;

    async fn from_request(
        mut request: Request,
        services: &Arc<Services>,
    ) -> Result<Self, Self::Rejection> {
        let path_params: RawPathParams = request
            .extract_parts()
            .await
            .map_err(|_| Error::InvalidParam("malformed path parameter".into()))?;
        let mut path_args: Vec<String> = path_params
            .iter()
            .map(|(_, value)| value.to_owned())
            .collect();
        let client_ip = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| {
                super::client_address::client_address(
                    info.0.ip().to_canonical(),
                    request.headers(),
                    &services.config.client_api.trusted_proxies,
                )
            });
        let is_upload = TypeId::of::<T>()
            == TypeId::of::<ruma::api::client::media::create_content::v3::Request>();
        let limit = if is_upload {
            services.config.media.max_upload_size
        } else {
            services.config.limits.max_json_body
        };
        let (parts, body) = request.into_parts();
        let (parts_method, parts_path) = (parts.method.clone(), parts.uri.path().to_owned());
        let bytes: Bytes = match Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX))
            .collect()
            .await
        {
            Ok(collected) => collected.to_bytes(),
            Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => {
                return Err(Error::TooLarge(format!(
                    "the request body is larger than {limit} bytes"
                )));
            }
            Err(error) => return Err(Error::BadJson(format!("reading the body: {error}"))),
        };
        // Clients send POST and PUT requests without a body where every field is optional;
        // that is an empty JSON object.
        let bytes = if bytes.is_empty()
            && !is_upload
            && (parts.method == http::Method::POST || parts.method == http::Method::PUT)
        {
            Bytes::from_static(b"{}")
        } else {
            bytes
        };
        let bytes = if TypeId::of::<T>()
            == TypeId::of::<ruma::api::client::typing::create_typing_event::v3::Request>()
        {
            typing_with_timeout(bytes)
        } else {
            bytes
        };
        let http_request = http::Request::from_parts(parts, bytes.as_ref());

        let sender = match token_use::<T>() {
            TokenUse::None => None,
            mode => {
                let token = extract_bearer_or_query_token(&http_request)
                    .map_err(|_| Error::UnknownToken)?;
                match token {
                    Some(token) => {
                        let sender = services.authenticate(&token).await?;
                        crate::api::guests::check(&sender, &parts_method, &parts_path)?;
                        Some(sender)
                    }
                    None if mode == TokenUse::Required => return Err(Error::MissingToken),
                    None => None,
                }
            }
        };

        // Routes registered without a trailing state key pass an empty one.
        let expected = T::PATH_BUILDER
            .all_paths()
            .next()
            .map(|path| path.matches('{').count())
            .unwrap_or(0);
        while path_args.len() < expected {
            path_args.push(String::new());
        }
        let args: Vec<&str> = path_args.iter().map(String::as_str).collect();
        let json_body: Option<serde_json::Value> = if is_upload {
            None
        } else {
            serde_json::from_slice(&bytes).ok()
        };
        let body_is_json = json_body.is_some();
        let body = T::try_from_http_request(http_request, &args)
            .map_err(|error| request_error(error, body_is_json))?;
        Ok(Ruma {
            body,
            sender,
            client_ip,
            json_body,
        })
    }
}

/// The specification does not require `timeout` with `"typing": true`, and clients leave it
/// out; the request type does. Without one, a typing notification lasts 30 s (as in Synapse).
fn typing_with_timeout(bytes: Bytes) -> Bytes {
    match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(serde_json::Value::Object(mut body))
            if body.get("typing") == Some(&serde_json::Value::Bool(true))
                && !body.contains_key("timeout") =>
        {
            body.insert("timeout".into(), serde_json::json!(30_000));
            Bytes::from(serde_json::Value::Object(body).to_string())
        }
        _ => bytes,
    }
}

/// Maps a request that ruma could not parse to the Matrix error a client expects: a body that
/// is not JSON at all is `M_NOT_JSON`, valid JSON of the wrong shape `M_BAD_JSON`.
fn request_error(error: FromHttpRequestError, body_is_json: bool) -> Error {
    match error {
        FromHttpRequestError::Deserialization(DeserializationError::Json(error)) => {
            if body_is_json || error.classify() == serde_json::error::Category::Data {
                Error::BadJson(error.to_string())
            } else {
                Error::NotJson(format!("the body is not valid JSON: {error}"))
            }
        }
        FromHttpRequestError::Deserialization(DeserializationError::Utf8(error)) => {
            Error::NotJson(format!("the body is not UTF-8: {error}"))
        }
        FromHttpRequestError::Deserialization(DeserializationError::Ident(error)) => {
            Error::InvalidParam(format!("invalid identifier: {error}"))
        }
        FromHttpRequestError::Deserialization(DeserializationError::Query(error)) => {
            Error::InvalidParam(format!("invalid parameter: {error}"))
        }
        FromHttpRequestError::Deserialization(DeserializationError::Header(error)) => {
            Error::InvalidParam(format!("invalid header: {error}"))
        }
        FromHttpRequestError::MethodMismatch { .. } => Error::MethodNotAllowed,
        other => Error::BadJson(other.to_string()),
    }
}

/// A ruma response, serialised for axum.
pub struct RumaResponse<T>(pub T);

impl<T: OutgoingResponse> IntoResponse for RumaResponse<T> {
    fn into_response(self) -> Response {
        match self.0.try_into_http_response::<Vec<u8>>() {
            Ok(response) => response.map(axum::body::Body::from).into_response(),
            Err(error) => {
                Error::Internal(format!("serialising a response: {error}")).into_response()
            }
        }
    }
}

/// Registers `handler` for every path and the method of the endpoint `T`.
pub fn route<T, H, F>(router: Router<Arc<Services>>, handler: H) -> Router<Arc<Services>>
where
    T: IncomingRequest + Send + 'static,
    T::Authentication: 'static,
    T::OutgoingResponse: Send + 'static,
    H: Fn(Arc<Services>, Ruma<T>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<T::OutgoingResponse, Error>> + Send + 'static,
{
    route_completed(router, handler, None)
}

/// A response's JSON body passed through `complete`, for fields the specification or clients
/// expect that ruma leaves out when empty or false.
fn completed<T: OutgoingResponse>(response: T, complete: fn(&mut serde_json::Value)) -> Response {
    let http = match response.try_into_http_response::<Vec<u8>>() {
        Ok(http) => http,
        Err(error) => {
            return Error::Internal(format!("serialising a response: {error}")).into_response();
        }
    };
    let (parts, body) = http.into_parts();
    let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return Response::from_parts(parts, axum::body::Body::from(body));
    };
    complete(&mut value);
    Response::from_parts(parts, axum::body::Body::from(value.to_string()))
}

/// [`route`], with the response's JSON completed by `complete`.
pub fn route_completed<T, H, F>(
    router: Router<Arc<Services>>,
    handler: H,
    complete: Option<fn(&mut serde_json::Value)>,
) -> Router<Arc<Services>>
where
    T: IncomingRequest + Send + 'static,
    T::Authentication: 'static,
    T::OutgoingResponse: Send + 'static,
    H: Fn(Arc<Services>, Ruma<T>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<T::OutgoingResponse, Error>> + Send + 'static,
{
    let filter = match MethodFilter::try_from(T::METHOD) {
        Ok(filter) => filter,
        Err(_) => return router,
    };
    let mut router = router;
    let mut paths: Vec<&'static str> = T::PATH_BUILDER.all_paths().collect();
    paths.sort_unstable();
    paths.dedup();
    for path in paths {
        let handler = handler.clone();
        let method_router = on(
            filter,
            move |State(services): State<Arc<Services>>, request: Ruma<T>| {
                let handler = handler.clone();
                async move {
                    let response = handler(services, request).await?;
                    Ok::<Response, Error>(match complete {
                        Some(complete) => completed(response, complete),
                        None => RumaResponse(response).into_response(),
                    })
                }
            },
        );
        router = router.route(path, method_router.clone());
        // A path the specification writes with a trailing slash (`/pushrules/`) answers
        // without it too, as clients send both.
        if let Some(bare) = path.strip_suffix('/') {
            router = router.route(bare, method_router.clone());
        }
        // `…/state/{event_type}/{state_key}` also answers with an empty state key.
        if let Some(prefix) = path.strip_suffix("/{state_key}") {
            router = router.route(prefix, method_router.clone());
            router = router.route(&format!("{prefix}/"), method_router);
        }
    }
    router
}
