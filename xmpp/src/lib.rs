//! Causeway's XMPP server-to-server side.
//!
//! It holds the XML stream framing ([`stream`]), stream errors ([`error`]) and the namespace
//! handling between servers and xmpp-parsers ([`ns`]). Negotiation, connection pools, DNS SRV
//! resolution and stanza routing build on these. It knows nothing of Matrix.

pub mod error;
pub mod ns;
pub mod stream;
pub mod writer;
