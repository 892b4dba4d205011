//! Network code both protocols need: DNS (SRV records ordered as RFC 2782 says, addresses,
//! which addresses are public) and TLS material (the crypto provider, root stores from the
//! system and configured CA files, certificate chains and keys from PEM files).

pub mod dns;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod tls;
