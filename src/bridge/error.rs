//! What can go wrong between the two networks, and the one place it becomes an XMPP error.

use causeway_mapping::address::AddressError;
use causeway_matrix::error::Error as MatrixError;
use causeway_matrix::store::StoreError;
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType, StanzaError};

#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// The recipient is not an account of this server (or is deactivated).
    #[error("no such user: {0}")]
    NoSuchUser(String),
    /// The address cannot stand for a user on the other network.
    #[error(transparent)]
    Address(#[from] AddressError),
    /// What the message asks for is not possible (a group chat message to a user, say).
    #[error("{0}")]
    NotAcceptable(String),
    #[error(transparent)]
    Matrix(#[from] MatrixError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    BridgeStore(#[from] crate::bridge::store::BridgeStoreError),
    /// The MUC service refuses, with the condition XEP-0045 names for the case.
    #[error("{}", .0.text)]
    Refused(crate::bridge::Refusal),
}

impl BridgeError {
    /// The stanza error that tells the XMPP sender what went wrong; internal details stay in
    /// the log.
    pub fn to_stanza_error(&self) -> StanzaError {
        let (kind, condition, text) = match self {
            BridgeError::NoSuchUser(_) => (
                ErrorType::Cancel,
                DefinedCondition::ServiceUnavailable,
                None,
            ),
            BridgeError::Address(error) => (
                ErrorType::Modify,
                DefinedCondition::JidMalformed,
                Some(error.to_string()),
            ),
            BridgeError::NotAcceptable(text) => (
                ErrorType::Modify,
                DefinedCondition::NotAcceptable,
                Some(text.clone()),
            ),
            BridgeError::Matrix(MatrixError::Forbidden(text)) => (
                ErrorType::Auth,
                DefinedCondition::Forbidden,
                Some(text.clone()),
            ),
            // Another Matrix server, to reach the recipient through, did not answer.
            BridgeError::Matrix(MatrixError::BadGateway(text)) => (
                ErrorType::Wait,
                DefinedCondition::RemoteServerTimeout,
                Some(text.clone()),
            ),
            BridgeError::Matrix(MatrixError::LimitExceeded { .. }) => {
                (ErrorType::Wait, DefinedCondition::ResourceConstraint, None)
            }
            BridgeError::Refused(refusal) => (
                refusal.kind.clone(),
                refusal.condition.clone(),
                Some(refusal.text.clone()),
            ),
            BridgeError::Matrix(MatrixError::NotFound(text)) => (
                ErrorType::Cancel,
                DefinedCondition::ItemNotFound,
                Some(text.clone()),
            ),
            BridgeError::Matrix(_) | BridgeError::Store(_) | BridgeError::BridgeStore(_) => {
                (ErrorType::Wait, DefinedCondition::InternalServerError, None)
            }
        };
        match text {
            Some(text) => StanzaError::new(kind, condition, "en", text),
            None => StanzaError {
                type_: kind,
                by: None,
                defined_condition: condition,
                texts: Default::default(),
                other: None,
            },
        }
    }
}
