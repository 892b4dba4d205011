//! The homeserver's error type and its one conversion into Matrix error responses.

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::{Value, json};

use crate::store::StoreError;

/// Everything a client request can fail with. [`Error::into_response`] is the only place that
/// turns errors into `errcode`s and HTTP statuses.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Forbidden(String),
    /// A server-server request whose `X-Matrix` authentication is missing or does not verify.
    #[error("{0}")]
    Unauthorized(String),
    #[error("unknown access token")]
    UnknownToken,
    #[error("missing access token")]
    MissingToken,
    #[error("{0}")]
    NotJson(String),
    #[error("{0}")]
    BadJson(String),
    #[error("{0}")]
    NotFound(String),
    #[error("too many requests")]
    LimitExceeded { retry_after_ms: u64 },
    #[error("user id already taken")]
    UserInUse,
    #[error("{0}")]
    InvalidUsername(String),
    #[error("unrecognized request")]
    Unrecognized,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    InvalidParam(String),
    #[error("{0}")]
    MissingParam(String),
    #[error("room alias already taken")]
    RoomInUse,
    #[error("{0}")]
    UnsupportedRoomVersion(String),
    /// The joining server does not support the room's version.
    #[error("this server does not support room version {room_version}")]
    IncompatibleRoomVersion { room_version: String },
    #[error("{0}")]
    UserDeactivated(String),
    #[error("{0}")]
    BadState(String),
    /// An alias that does not point where an event says it does.
    #[error("{0}")]
    BadAlias(String),
    /// A user-interactive authentication session this server did not open.
    #[error("unknown authentication session {0}")]
    UnknownSession(String),
    #[error("{0}")]
    Exclusive(String),
    #[error("the server does not support this")]
    Unsupported(String),
    #[error("{0}")]
    WeakPassword(String),
    #[error("{0}")]
    CannotLeaveServerNoticeRoom(String),
    /// An endpoint closed to guest accounts.
    #[error("guests may not do this")]
    GuestAccessForbidden,
    /// A key backup upload to a version that is not the current one.
    #[error("this is not the current backup version")]
    WrongRoomKeysVersion { current_version: Option<String> },
    #[error("user interactive authentication required")]
    Uiaa(Box<Value>),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A restricted room's join that this server cannot vouch for.
    #[error("{0}")]
    UnableToAuthoriseJoin(String),
    /// Another server this one asked on a client's behalf did not answer, or answered
    /// nonsense.
    #[error("{0}")]
    BadGateway(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The Matrix `errcode` and HTTP status of this error.
    pub fn code(&self) -> (StatusCode, &'static str) {
        match self {
            Error::Forbidden(_) => (StatusCode::FORBIDDEN, "M_FORBIDDEN"),
            Error::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "M_UNAUTHORIZED"),
            Error::UnknownToken => (StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN"),
            Error::MissingToken => (StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN"),
            Error::NotJson(_) => (StatusCode::BAD_REQUEST, "M_NOT_JSON"),
            Error::BadJson(_) => (StatusCode::BAD_REQUEST, "M_BAD_JSON"),
            Error::NotFound(_) => (StatusCode::NOT_FOUND, "M_NOT_FOUND"),
            Error::LimitExceeded { .. } => (StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED"),
            Error::UserInUse => (StatusCode::BAD_REQUEST, "M_USER_IN_USE"),
            Error::InvalidUsername(_) => (StatusCode::BAD_REQUEST, "M_INVALID_USERNAME"),
            Error::Unrecognized => (StatusCode::NOT_FOUND, "M_UNRECOGNIZED"),
            Error::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "M_UNRECOGNIZED"),
            Error::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE"),
            Error::InvalidParam(_) => (StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
            Error::MissingParam(_) => (StatusCode::BAD_REQUEST, "M_MISSING_PARAM"),
            Error::RoomInUse => (StatusCode::BAD_REQUEST, "M_ROOM_IN_USE"),
            Error::UnsupportedRoomVersion(_) => {
                (StatusCode::BAD_REQUEST, "M_UNSUPPORTED_ROOM_VERSION")
            }
            Error::IncompatibleRoomVersion { .. } => {
                (StatusCode::BAD_REQUEST, "M_INCOMPATIBLE_ROOM_VERSION")
            }
            Error::UserDeactivated(_) => (StatusCode::FORBIDDEN, "M_USER_DEACTIVATED"),
            Error::BadState(_) => (StatusCode::BAD_REQUEST, "M_BAD_STATE"),
            Error::BadAlias(_) => (StatusCode::BAD_REQUEST, "M_BAD_ALIAS"),
            Error::UnknownSession(_) => (StatusCode::BAD_REQUEST, "M_UNKNOWN"),
            Error::Exclusive(_) => (StatusCode::BAD_REQUEST, "M_EXCLUSIVE"),
            Error::Unsupported(_) => (StatusCode::BAD_REQUEST, "M_UNRECOGNIZED"),
            Error::WeakPassword(_) => (StatusCode::BAD_REQUEST, "M_WEAK_PASSWORD"),
            Error::CannotLeaveServerNoticeRoom(_) => {
                (StatusCode::FORBIDDEN, "M_CANNOT_LEAVE_SERVER_NOTICE_ROOM")
            }
            Error::GuestAccessForbidden => (StatusCode::FORBIDDEN, "M_GUEST_ACCESS_FORBIDDEN"),
            Error::WrongRoomKeysVersion { .. } => {
                (StatusCode::FORBIDDEN, "M_WRONG_ROOM_KEYS_VERSION")
            }
            Error::Uiaa(_) => (StatusCode::UNAUTHORIZED, "M_FORBIDDEN"),
            Error::BadGateway(_) => (StatusCode::BAD_GATEWAY, "M_UNKNOWN"),
            Error::UnableToAuthoriseJoin(_) => {
                (StatusCode::BAD_REQUEST, "M_UNABLE_TO_AUTHORISE_JOIN")
            }
            Error::Store(_) | Error::Internal(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "M_UNKNOWN")
            }
        }
    }

    /// The JSON body of the error response.
    pub fn body(&self) -> Value {
        let (_, errcode) = self.code();
        match self {
            Error::Uiaa(info) => (**info).clone(),
            Error::LimitExceeded { retry_after_ms } => json!({
                "errcode": errcode,
                "error": self.to_string(),
                "retry_after_ms": retry_after_ms,
            }),
            Error::IncompatibleRoomVersion { room_version } => json!({
                "errcode": errcode,
                "error": self.to_string(),
                "room_version": room_version,
            }),
            Error::WrongRoomKeysVersion { current_version } => json!({
                "errcode": errcode,
                "error": self.to_string(),
                "current_version": current_version,
            }),
            // Internal details stay in the log, not in the response.
            Error::Store(_) | Error::Internal(_) => json!({
                "errcode": errcode,
                "error": "internal server error",
            }),
            _ => json!({ "errcode": errcode, "error": self.to_string() }),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, _) = self.code();
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %self, "request failed");
        }
        let mut response = (status, axum::Json(self.body())).into_response();
        if let Error::LimitExceeded { retry_after_ms } = self {
            let seconds = retry_after_ms.div_ceil(1000).max(1);
            if let Ok(value) = http::HeaderValue::from_str(&seconds.to_string()) {
                response
                    .headers_mut()
                    .insert(http::header::RETRY_AFTER, value);
            }
        }
        response
    }
}

impl From<crate::federation::xmatrix::AuthError> for Error {
    fn from(error: crate::federation::xmatrix::AuthError) -> Self {
        Error::Unauthorized(error.to_string())
    }
}

impl From<crate::federation::keys::KeyError> for Error {
    fn from(error: crate::federation::keys::KeyError) -> Self {
        match error {
            crate::federation::keys::KeyError::Store(error) => error.into(),
            error => Error::Unauthorized(format!("the origin's key: {error}")),
        }
    }
}

impl From<crate::federation::pdu::PduError> for Error {
    fn from(error: crate::federation::pdu::PduError) -> Self {
        use crate::federation::pdu::PduError;
        match error {
            PduError::TooLarge => Error::TooLarge(error.to_string()),
            PduError::Format(_) => Error::BadJson(error.to_string()),
            PduError::Signature(_) | PduError::Keys(_) => Error::Forbidden(error.to_string()),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_bodies() {
        let error = Error::LimitExceeded {
            retry_after_ms: 1500,
        };
        assert_eq!(
            error.code(),
            (StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED")
        );
        assert_eq!(error.body()["retry_after_ms"], 1500);
        let response = error.into_response();
        assert_eq!(response.headers()[http::header::RETRY_AFTER], "2");
        let internal = Error::Internal("secret detail".into());
        assert_eq!(internal.body()["error"], "internal server error");
        assert_eq!(
            Error::UnknownToken.code(),
            (StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN")
        );
    }
}
