//! Pure translation between XMPP and Matrix: addresses and message content.
//!
//! This crate has no sockets, no async and no SQL. The mappings it will hold are specified in
//! `docs/mapping.md`; until they land, the crate is empty so that the dependency graph of the
//! workspace (`config` ← `mapping` ← {`xmpp`, `matrix`} ← `causeway`) is in place from the start.
