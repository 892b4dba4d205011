//! Causeway's Matrix homeserver.

pub mod error;
pub mod pdu;
pub mod store;
