//! Requests to other homeservers. A server is found through discovery; each of its endpoints
//! is tried in order over TLS, the certificate checked against the name discovery gives (the
//! system's authorities and `federation.ca_files`), with HTTP/1.1 and the `Host` header
//! discovery gives. Requests that need authentication are signed (`X-Matrix`). Answers are
//! read up to [`RESPONSE_LIMIT`] bytes, counted before they are kept.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use causeway_net::dns::Resolver;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use ruma::canonical_json::CanonicalJsonValue;
use ruma::signatures::Ed25519KeyPair;
use ruma::{OwnedServerName, ServerName};
use serde_json::Value;

use super::discovery::{Destination, Discovery};
use super::xmatrix;

/// The largest answer read from another server.
pub const RESPONSE_LIMIT: usize = 16 * 1024 * 1024;
/// How long connecting to one address may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request may take once connected.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a request to another server failed.
#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    #[error("{0} could not be reached: {1}")]
    Unreachable(OwnedServerName, String),
    #[error("TLS with {0} failed: {1}")]
    Tls(OwnedServerName, String),
    #[error("HTTP with {0} failed: {1}")]
    Http(OwnedServerName, String),
    #[error("{0} answered {1}: {2}")]
    Status(OwnedServerName, u16, Value),
    #[error("{0} answered what is not JSON: {1}")]
    NotJson(OwnedServerName, String),
    #[error("the request could not be signed: {0}")]
    Signing(String),
}

/// Who signs requests: this server's name and key.
#[derive(Clone)]
pub struct Signer {
    pub server_name: OwnedServerName,
    pub key: Arc<Ed25519KeyPair>,
}

/// The client of the server-server API.
pub struct FederationClient {
    discovery: Discovery,
    resolver: Resolver,
    tls: tokio_rustls::TlsConnector,
    signer: Signer,
    /// The servers federated with (`federation.allow_servers` and `deny_servers`).
    policy: causeway_config::FederationConfig,
}

impl FederationClient {
    /// The client `[federation]` configures: discovery with its overrides, the system's DNS,
    /// TLS trusting the system's authorities and `ca_files`.
    pub fn from_config(
        config: &causeway_config::FederationConfig,
        signer: Signer,
    ) -> Result<FederationClient, crate::error::Error> {
        let mut client = FederationClient::new(
            Discovery::from_config(config)?,
            Resolver::system(),
            super::discovery::tls_client_config(&config.ca_files)?,
            signer,
        );
        client.policy = config.clone();
        Ok(client)
    }

    pub fn new(
        discovery: Discovery,
        resolver: Resolver,
        tls: rustls::ClientConfig,
        signer: Signer,
    ) -> FederationClient {
        FederationClient {
            discovery,
            resolver,
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
            signer,
            policy: causeway_config::FederationConfig::default(),
        }
    }

    /// Where another server is.
    pub fn discovery(&self) -> &Discovery {
        &self.discovery
    }

    /// A request without authentication (the key endpoints).
    pub async fn get_unsigned(
        &self,
        server: &ServerName,
        uri: &str,
    ) -> Result<Value, FederationError> {
        self.request(server, http::Method::GET, uri, None, false)
            .await
    }

    /// A signed request; `body` as JSON for methods that carry one. The answer is JSON.
    pub async fn request(
        &self,
        server: &ServerName,
        method: http::Method,
        uri: &str,
        body: Option<&Value>,
        signed: bool,
    ) -> Result<Value, FederationError> {
        let (status, _, bytes) = self.request_raw(server, method, uri, body, signed).await?;
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|e| FederationError::NotJson(server.to_owned(), e.to_string()))?;
        if !status.is_success() {
            return Err(FederationError::Status(
                server.to_owned(),
                status.as_u16(),
                value,
            ));
        }
        Ok(value)
    }

    /// A successful answer as it came: its headers and its bytes (media). An unsuccessful one
    /// is the error its JSON says.
    pub async fn request_bytes(
        &self,
        server: &ServerName,
        uri: &str,
    ) -> Result<(http::HeaderMap, Bytes), FederationError> {
        let (status, headers, bytes) = self
            .request_raw(server, http::Method::GET, uri, None, true)
            .await?;
        if !status.is_success() {
            // An error answer is JSON, whatever a successful one is.
            let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            return Err(FederationError::Status(
                server.to_owned(),
                status.as_u16(),
                value,
            ));
        }
        Ok((headers, bytes))
    }

    async fn request_raw(
        &self,
        server: &ServerName,
        method: http::Method,
        uri: &str,
        body: Option<&Value>,
        signed: bool,
    ) -> Result<(http::StatusCode, http::HeaderMap, Bytes), FederationError> {
        if !super::acl::configured(&self.policy, server) {
            return Err(FederationError::Unreachable(
                server.to_owned(),
                "this server does not federate with it (federation.allow_servers, deny_servers)"
                    .into(),
            ));
        }
        let destination = self.discovery.destination(server).await;
        let body = body
            .map(|body| {
                CanonicalJsonValue::try_from(body.clone())
                    .map_err(|e| FederationError::Signing(format!("the body: {e}")))
            })
            .transpose()?;
        let authorization = if signed {
            let auth = xmatrix::sign_request(
                &self.signer.key,
                &self.signer.server_name,
                server,
                method.as_str(),
                uri,
                body.as_ref(),
            )
            .map_err(|e| FederationError::Signing(e.to_string()))?;
            Some(auth.to_header())
        } else {
            None
        };
        let bytes = match &body {
            Some(body) => Bytes::from(body.to_string()),
            None => Bytes::new(),
        };
        let mut last = FederationError::Unreachable(server.to_owned(), "no address".into());
        // Whoever signs a request to this server names its origin, and so what this server
        // connects to: only public addresses, unless the configuration routes the server or
        // lets a network in.
        let routed = self.policy.destinations.contains_key(server.as_str());
        let (allowed, refused): (Vec<SocketAddr>, Vec<SocketAddr>) = self
            .addresses(&destination)
            .await
            .into_iter()
            .partition(|address| {
                routed || crate::permitted::permitted(&self.policy.ip_range_whitelist, address.ip())
            });
        if allowed.is_empty() && !refused.is_empty() {
            return Err(FederationError::Unreachable(
                server.to_owned(),
                format!(
                    "{} is not a public address (federation.ip_range_whitelist)",
                    refused[0].ip()
                ),
            ));
        }
        for address in allowed {
            let stream = match tokio::time::timeout(
                CONNECT_TIMEOUT,
                tokio::net::TcpStream::connect(address),
            )
            .await
            {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    last = FederationError::Unreachable(
                        server.to_owned(),
                        format!("{address}: {error}"),
                    );
                    continue;
                }
                Err(_) => {
                    last = FederationError::Unreachable(
                        server.to_owned(),
                        format!("{address}: timed out"),
                    );
                    continue;
                }
            };
            let exchange = self.exchange(
                server,
                &destination,
                stream,
                &method,
                uri,
                authorization.as_deref(),
                body.is_some().then(|| bytes.clone()),
            );
            return match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
                Ok(result) => result,
                Err(_) => Err(FederationError::Http(server.to_owned(), "timed out".into())),
            };
        }
        Err(last)
    }

    /// The addresses of a destination's endpoints, in order.
    async fn addresses(&self, destination: &Destination) -> Vec<SocketAddr> {
        let mut addresses = Vec::new();
        for (host, port) in &destination.endpoints {
            match host.parse::<IpAddr>() {
                Ok(ip) => addresses.push(SocketAddr::new(ip, *port)),
                Err(_) => {
                    if let Ok(found) = self.resolver.addresses(host, *port).await {
                        addresses.extend(found);
                    }
                }
            }
        }
        addresses
    }

    #[allow(clippy::too_many_arguments)]
    async fn exchange(
        &self,
        server: &ServerName,
        destination: &Destination,
        stream: tokio::net::TcpStream,
        method: &http::Method,
        uri: &str,
        authorization: Option<&str>,
        body: Option<Bytes>,
    ) -> Result<(http::StatusCode, http::HeaderMap, Bytes), FederationError> {
        let tls_error = |e: String| FederationError::Tls(server.to_owned(), e);
        let http_error = |e: String| FederationError::Http(server.to_owned(), e);
        let name = rustls::pki_types::ServerName::try_from(destination.tls_name.clone())
            .map_err(|e| tls_error(e.to_string()))?;
        let tls = self
            .tls
            .connect(name, stream)
            .await
            .map_err(|e| tls_error(e.to_string()))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| http_error(e.to_string()))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut request = http::Request::builder()
            .method(method.clone())
            .uri(uri)
            .header(http::header::HOST, &destination.host_header)
            .header(
                http::header::USER_AGENT,
                concat!("Causeway/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(authorization) = authorization {
            request = request.header(http::header::AUTHORIZATION, authorization);
        }
        if body.is_some() {
            request = request.header(http::header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| http_error(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| http_error(e.to_string()))?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = Limited::new(response.into_body(), RESPONSE_LIMIT)
            .collect()
            .await
            .map_err(|e| http_error(format!("reading the answer: {e}")))?
            .to_bytes();
        Ok((status, headers, bytes))
    }
}
