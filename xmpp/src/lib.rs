//! Causeway's XMPP server-to-server side.
//!
//! It holds the XML stream framing ([`stream`], [`writer`]), stream errors ([`error`]), the
//! namespace handling between servers and xmpp-parsers ([`ns`]), the checks on inbound stanzas
//! ([`stanza`]) and the answers for the server's own domains ([`router`]). Negotiation,
//! connection pools and DNS SRV resolution build on these. It knows nothing of Matrix.

pub mod connection;
pub mod dialback;
pub mod dns;
pub mod error;
pub mod fuzzing;
pub mod negotiation;
pub mod ns;
pub mod router;
pub mod server;
pub mod stanza;
pub mod stream;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod tls;
pub mod writer;
