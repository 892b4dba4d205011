//! Server Dialback on inbound streams: the domain pairs a stream authenticated, the requests
//! to authenticate more (verified with the sender domain's authoritative server), and the
//! answers this server gives as the authoritative server of its own keys.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tracing::Instrument;

use super::S2s;
use crate::connection::{ConnectionError, XmlStream};
use crate::dialback::{Dialback, DialbackError, Kind, Outcome};
use crate::negotiation::{self, BoxedIo, NegotiationError};

/// Dialback verifications one inbound stream may have under way at once.
const MAX_PENDING_VERIFICATIONS: usize = 8;
/// Domain pairs one inbound stream may authenticate with dialback.
const MAX_DIALBACK_PAIRS: usize = 256;

/// What an inbound stream has authenticated.
pub(super) struct InboundAuth {
    /// A peer domain authenticated with SASL EXTERNAL, for all our domains.
    pub(super) sasl: Option<String>,
    /// (remote, local) domain pairs authenticated with dialback.
    pub(super) pairs: HashSet<(String, String)>,
    /// Pairs whose key is being verified.
    pub(super) pending: HashSet<(String, String)>,
}

impl InboundAuth {
    pub(super) fn is_empty(&self) -> bool {
        self.sasl.is_none() && self.pairs.is_empty()
    }

    pub(super) fn sender_authenticated(&self, remote: &str) -> bool {
        self.sasl
            .as_deref()
            .is_some_and(|peer| peer.eq_ignore_ascii_case(remote))
            || self
                .pairs
                .iter()
                .any(|(from, _)| from.eq_ignore_ascii_case(remote))
    }

    pub(super) fn pair_authenticated(&self, remote: &str, local: &str) -> bool {
        self.sasl
            .as_deref()
            .is_some_and(|peer| peer.eq_ignore_ascii_case(remote))
            || self
                .pairs
                .contains(&(remote.to_ascii_lowercase(), local.to_ascii_lowercase()))
    }
}

impl S2s {
    /// Handles a dialback element on an inbound stream; returns what to answer at once.
    pub(super) fn dialback_request(
        self: &Arc<Self>,
        auth: &mut InboundAuth,
        request: Dialback,
        stream_id: &str,
        verified: &mpsc::UnboundedSender<(Dialback, Outcome)>,
    ) -> Option<Dialback> {
        let Some(key) = request.key.clone() else {
            // An answer nobody asked for on this stream (XEP-0220 §5): never acted upon.
            tracing::info!(?request, "ignored an unsolicited dialback answer");
            return None;
        };
        let refuse = |error| Some(request.answer(Outcome::Error(error)));
        if !self.is_ours(&request.to) {
            return refuse(DialbackError::ItemNotFound);
        }
        match request.kind {
            // We are the authoritative server: was this key ours for that stream?
            Kind::Verify => {
                let id = request.id.as_deref().unwrap_or_default();
                let valid = self.secret.verifies(&key, &request.from, &request.to, id);
                tracing::info!(receiving = %request.from, originating = %request.to, valid, "answered a dialback verification");
                let outcome = if valid {
                    Outcome::Valid
                } else {
                    Outcome::Invalid
                };
                Some(request.answer(outcome))
            }
            // The peer asks to send from its domain to ours: ask its authoritative server.
            Kind::Result => {
                let pair = (request.from.clone(), request.to.clone());
                if self.is_ours(&request.from) || !self.config.domain_policy.permits(&request.from)
                {
                    return refuse(DialbackError::Forbidden);
                }
                if !self.config.dialback {
                    return refuse(DialbackError::NotAuthorized);
                }
                if auth.pairs.contains(&pair) {
                    return Some(request.answer(Outcome::Valid));
                }
                if auth.pending.contains(&pair) {
                    return None;
                }
                if auth.pending.len() >= MAX_PENDING_VERIFICATIONS
                    || auth.pairs.len() >= MAX_DIALBACK_PAIRS
                {
                    return refuse(DialbackError::ResourceConstraint);
                }
                auth.pending.insert(pair);
                let s2s = self.clone();
                let verified = verified.clone();
                let stream_id = stream_id.to_owned();
                tokio::spawn(
                    async move {
                        let outcome = s2s.ask_authoritative(&request, &key, &stream_id).await;
                        let _ = verified.send((request, outcome));
                    }
                    .in_current_span(),
                );
                None
            }
        }
    }

    /// Acts on the authoritative server's answer about a peer's key; returns whether the
    /// stream goes on.
    pub(super) async fn dialback_verified(
        &self,
        stream: &mut XmlStream<BoxedIo>,
        auth: &mut InboundAuth,
        request: Dialback,
        outcome: Outcome,
    ) -> bool {
        let pair = (request.from.clone(), request.to.clone());
        auth.pending.remove(&pair);
        let answer = match outcome {
            Outcome::Valid => {
                if auth.is_empty() {
                    tracing::Span::current().record("peer", request.from.as_str());
                    tracing::Span::current().record("auth", "Dialback");
                }
                tracing::info!(peer = %request.from, local = %request.to, method = "dialback", "inbound domain pair authenticated");
                auth.pairs.insert(pair);
                request.answer(Outcome::Valid)
            }
            Outcome::Invalid if auth.is_empty() => {
                // A first pair with a forged key: the stream ends (XEP-0220 §2.4).
                tracing::warn!(peer = %request.from, local = %request.to, "dialback key refused by the authoritative server");
                let _ = stream
                    .send_raw(&request.answer(Outcome::Invalid).to_bytes())
                    .await;
                let _ = stream.close().await;
                return false;
            }
            Outcome::Invalid => {
                tracing::warn!(peer = %request.from, local = %request.to, "dialback key refused by the authoritative server");
                request.answer(Outcome::Error(DialbackError::Forbidden))
            }
            Outcome::Error(error) => {
                tracing::info!(peer = %request.from, %error, "dialback verification failed");
                request.answer(Outcome::Error(error))
            }
        };
        stream.send_raw(&answer.to_bytes()).await.is_ok()
    }

    /// Asks the authoritative server of the request's sender domain about its key (we are the
    /// receiving server).
    async fn ask_authoritative(&self, request: &Dialback, key: &str, stream_id: &str) -> Outcome {
        let endpoints = self.verification_endpoints(&request.from).await;
        if endpoints.is_empty() {
            return Outcome::Error(DialbackError::RemoteServerNotFound);
        }
        let policy = self.outbound_policy();
        let mut failure = DialbackError::RemoteConnectionFailed;
        for endpoint in endpoints {
            let attempt = async {
                let socket = TcpStream::connect(endpoint.address)
                    .await
                    .map_err(|_| DialbackError::RemoteConnectionFailed)?;
                let _ = socket.set_nodelay(true);
                negotiation::verify(
                    Box::new(socket),
                    endpoint.direct_tls,
                    &request.to,
                    &request.from,
                    stream_id,
                    key,
                    &policy,
                )
                .await
                .map_err(|error| {
                    tracing::info!(%error, address = %endpoint.address, "dialback verification connection failed");
                    match error {
                        NegotiationError::Connection(ConnectionError::PeerError(condition))
                            if condition == "host-unknown" =>
                        {
                            DialbackError::RemoteServerNotFound
                        }
                        _ => DialbackError::RemoteServerTimeout,
                    }
                })
            };
            match tokio::time::timeout(self.config.connect_timeout, attempt).await {
                Ok(Ok(outcome)) => return outcome,
                Ok(Err(error)) => failure = error,
                Err(_) => failure = DialbackError::RemoteServerTimeout,
            }
        }
        Outcome::Error(failure)
    }
}
