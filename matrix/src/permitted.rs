//! Which addresses this server connects to on others' word: public ones, and those of the
//! networks the configuration lets in. A push gateway's URL is a user's to set, and another
//! server's name (so its DNS) is whoever signs a request's; neither may make this server
//! connect into its own host or network.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use causeway_config::AddressRange;
use causeway_net::dns::is_public;

/// Whether this server may connect to `address`: a public one, or one in `allowed`.
pub fn permitted(allowed: &[AddressRange], address: IpAddr) -> bool {
    is_public(address) || allowed.iter().any(|range| range.contains(address))
}

/// Resolves names to the permitted addresses only (for HTTP clients).
pub struct PermittedResolver {
    allowed: Arc<Vec<AddressRange>>,
    /// What is connected to, for the error (`a push gateway`).
    purpose: &'static str,
}

impl PermittedResolver {
    pub fn new(allowed: Arc<Vec<AddressRange>>, purpose: &'static str) -> Self {
        PermittedResolver { allowed, purpose }
    }
}

impl reqwest::dns::Resolve for PermittedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allowed = self.allowed.clone();
        let purpose = self.purpose;
        Box::pin(async move {
            let addresses: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
                .await?
                .filter(|address| permitted(&allowed, address.ip()))
                .collect();
            if addresses.is_empty() {
                return Err(format!("{} has no address {purpose} may have", name.as_str()).into());
            }
            let addresses: reqwest::dns::Addrs = Box::new(addresses.into_iter());
            Ok(addresses)
        })
    }
}
