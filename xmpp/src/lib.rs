//! Causeway's XMPP server-to-server side.
//!
//! It will hold XML stream framing, S2S negotiation, connection pools, DNS SRV resolution and
//! stanza routing. It knows nothing of Matrix. Until it lands, the crate is empty so that the
//! dependency graph of the workspace is in place from the start.
