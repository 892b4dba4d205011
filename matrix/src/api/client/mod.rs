//! The client-server API, one file per area of the specification.

pub mod account;
pub mod backup;
pub mod discovery;
pub mod ephemeral;
pub mod events;
pub mod keys;
pub mod lazy_members;
pub mod legacy;
pub mod media;
pub mod membership;
pub mod message;
pub mod notifications;
pub mod relations;
pub mod room;
pub mod search;
pub mod sync;
pub mod user_data;
