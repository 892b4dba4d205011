//! Pure translation between XMPP and Matrix: addresses and message content.
//!
//! This crate has no sockets, no async and no SQL. What it implements is specified in
//! `docs/mapping.md`: [`address`] maps users, rooms and MUCs between the two address spaces,
//! built on the escapings of [`escape`]; [`content`] translates what messages say.

pub mod address;
pub mod content;
pub mod escape;
pub mod fuzzing;

pub use address::{AddressError, Gateway, MatrixRoom, RoomRef, XMPP_PREFIX};
