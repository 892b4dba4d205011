//! Causeway's Matrix homeserver: the client-server API, the event format and authorization
//! rules, the room engine, sync, media and storage. It knows nothing of XMPP.

pub mod admin;
pub mod api;
pub mod create_room;
pub mod error;
pub mod federation;
pub mod hierarchy;
pub mod indexer;
pub mod keys;
pub mod openid;
pub mod pdu;
pub mod permitted;
pub mod push;
pub mod resolve;
pub mod restricted;
pub mod rooms;
pub mod services;
pub mod store;
pub mod thumbnails;
pub mod timestamps;
pub mod upgrade;
pub mod visibility;

pub use services::Services;
