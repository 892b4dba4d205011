//! The bridge in one process: the homeserver with its XMPP side, and a peer server playing
//! `prosody.test` that records what reaches it. Alice is a local account; Bob and Carol are
//! XMPP users on the peer.

// The helpers unwrap like the tests do.
#![allow(clippy::unwrap_used)]

#[path = "../common/mod.rs"]
mod common;

mod chat;
mod delivery;
mod erasure;
mod muc;
mod portals;
mod presence;
mod profiles;
mod quotas;
mod world;
