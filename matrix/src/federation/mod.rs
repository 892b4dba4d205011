//! The server-server API: how other homeservers are found (`discovery`), and, as it grows,
//! how requests to them are signed and theirs verified.

pub mod client;
pub mod discovery;
pub mod keys;
pub mod server;
pub mod xmatrix;
