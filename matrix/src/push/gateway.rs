//! The HTTP client of push gateways (the Push Gateway API's `/_matrix/push/v1/notify`).
//!
//! Users choose the gateway URL, so the server must not become a way into its own network: a
//! gateway is reached only at public addresses, unless the operator allows its address
//! (`push.allowed_gateway_addresses`). Names are checked after resolution (a name that
//! resolves to the loopback is refused as the loopback would be), and redirects are not
//! followed.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use causeway_config::AddressRange;

use crate::permitted::{PermittedResolver, permitted};
use serde_json::Value;

/// The path every gateway URL has, as the specification requires.
pub const NOTIFY_PATH: &str = "/_matrix/push/v1/notify";

/// How long a gateway has to answer.
const TIMEOUT: Duration = Duration::from_secs(15);

/// Why a notification did not reach a gateway.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// Worth trying again later: the gateway was unreachable, slow, overloaded or failing.
    #[error("push gateway unavailable: {0}")]
    Unavailable(String),
    /// The gateway refused this notification for good (a 4xx status).
    #[error("push gateway refused the notification with status {0}")]
    Refused(u16),
    /// The URL can never be used (not HTTP(S), or not a permitted address).
    #[error("push gateway URL not usable: {0}")]
    BadUrl(String),
}

/// What the gateway answered.
#[derive(Debug, Default)]
pub struct GatewayReply {
    /// Pushkeys the gateway no longer accepts: their pushers are to be removed.
    pub rejected: Vec<String>,
}

/// The client of push gateways.
#[derive(Clone)]
pub struct Gateway {
    client: reqwest::Client,
    allowed: Arc<Vec<AddressRange>>,
}

/// An error with its causes, for the log (a connection error says why only in its sources).
fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl Gateway {
    pub fn new(allowed: Vec<AddressRange>) -> Result<Gateway, GatewayError> {
        let allowed = Arc::new(allowed);
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("Causeway/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(PermittedResolver::new(
                allowed.clone(),
                "a push gateway",
            )))
            .build()
            .map_err(|error| GatewayError::Unavailable(error.to_string()))?;
        Ok(Gateway { client, allowed })
    }

    /// Checks a gateway URL as a pusher is set: HTTP or HTTPS, the notify path, and a host
    /// that is a name or a permitted address.
    pub fn check_url(&self, url: &str) -> Result<reqwest::Url, GatewayError> {
        let parsed =
            reqwest::Url::parse(url).map_err(|error| GatewayError::BadUrl(error.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(GatewayError::BadUrl("the URL must be http or https".into()));
        }
        if parsed.path() != NOTIFY_PATH {
            return Err(GatewayError::BadUrl(format!(
                "the URL's path must be {NOTIFY_PATH}"
            )));
        }
        let literal = match parsed.host() {
            Some(url::Host::Ipv4(address)) => Some(IpAddr::V4(address)),
            Some(url::Host::Ipv6(address)) => Some(IpAddr::V6(address)),
            Some(url::Host::Domain(_)) => None,
            None => return Err(GatewayError::BadUrl("the URL has no host".into())),
        };
        if let Some(address) = literal
            && !permitted(&self.allowed, address)
        {
            return Err(GatewayError::BadUrl(format!(
                "{address} is not an address a push gateway may have"
            )));
        }
        Ok(parsed)
    }

    /// Sends one notification.
    pub async fn notify(&self, url: &str, body: &Value) -> Result<GatewayReply, GatewayError> {
        let url = self.check_url(url)?;
        let response = self
            .client
            .post(url)
            .json(body)
            .send()
            .await
            .map_err(|error| GatewayError::Unavailable(describe(&error)))?;
        let status = response.status();
        if status.is_success() {
            let reply: Value = response.json().await.unwrap_or(Value::Null);
            let rejected = reply["rejected"]
                .as_array()
                .map(|keys| {
                    keys.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            return Ok(GatewayReply { rejected });
        }
        if status.is_client_error() && status != reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Err(GatewayError::Refused(status.as_u16()));
        }
        Err(GatewayError::Unavailable(format!("status {status}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_urls() {
        let gateway = Gateway::new(vec!["10.1.2.3".parse().unwrap()]).unwrap();
        assert!(
            gateway
                .check_url("https://push.example.org/_matrix/push/v1/notify")
                .is_ok()
        );
        assert!(
            gateway
                .check_url("http://10.1.2.3:5000/_matrix/push/v1/notify")
                .is_ok()
        );
        for bad in [
            "https://push.example.org/notify",
            "ftp://push.example.org/_matrix/push/v1/notify",
            "http://127.0.0.1/_matrix/push/v1/notify",
            "http://[::1]/_matrix/push/v1/notify",
            "http://10.1.2.4/_matrix/push/v1/notify",
            "http://192.168.0.1/_matrix/push/v1/notify",
            "not a url",
        ] {
            assert!(
                matches!(gateway.check_url(bad), Err(GatewayError::BadUrl(_))),
                "{bad}"
            );
        }
    }

    #[tokio::test]
    async fn names_that_resolve_to_private_addresses_are_not_reached() {
        let gateway = Gateway::new(vec![]).unwrap();
        let error = gateway
            .notify("http://localhost:9/_matrix/push/v1/notify", &Value::Null)
            .await
            .unwrap_err();
        assert!(matches!(error, GatewayError::Unavailable(_)), "{error}");
        assert!(
            format!("{error:?}").contains("no address a push gateway may have"),
            "{error:?}"
        );
    }
}
