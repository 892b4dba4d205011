//! The server-to-server service: listeners for streams peers open, a queue and an outbound
//! stream per remote domain, and the hand-over of authenticated stanzas to a handler.
//!
//! Inbound stanzas are accepted only when their `from` domain is the one authenticated on the
//! stream and their `to` domain is ours ([`crate::stanza::accept_inbound`]). Outbound stanzas
//! are queued per destination; a stream is opened on demand, kept while used, closed when
//! idle, and opened again with backoff after a failure. Stanzas that cannot be delivered are
//! bounced to their sender with `remote-server-not-found`, never dropped silently.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tracing::Instrument;
use xmpp_parsers::stanza_error::DefinedCondition;

pub use crate::negotiation::DomainPolicy;
use crate::negotiation::{self, Authenticated, BoxedIo, InboundPolicy};
use crate::stanza::{Rejection, Stanza, accept_inbound, bounce};
use crate::stream::{Limits, StreamItem};
use crate::tls::TlsSettings;

/// Where a remote domain's server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub address: SocketAddr,
    /// XEP-0368: TLS from the first byte (otherwise STARTTLS).
    pub direct_tls: bool,
}

/// The configuration of the server-to-server service.
#[derive(Debug, Clone)]
pub struct S2sConfig {
    /// Our domains: the server's and the MUC service's.
    pub domains: Vec<String>,
    pub listen_starttls: Vec<SocketAddr>,
    pub listen_direct_tls: Vec<SocketAddr>,
    /// Fixed endpoints by remote domain; other domains are looked up in DNS (SRV, then A/AAAA).
    pub routes: HashMap<String, Vec<Endpoint>>,
    pub require_tls: bool,
    pub limits: Limits,
    /// An outbound stream with nothing to send for this long is closed.
    pub idle_timeout: Duration,
    /// How long connecting and negotiating may take.
    pub connect_timeout: Duration,
    /// Which remote domains may federate.
    pub domain_policy: DomainPolicy,
    /// Stanzas per second read from one inbound stream; a faster peer is slowed down.
    pub max_stanzas_per_second: u32,
}

/// What the rest of the server does with stanzas for our domains.
pub trait StanzaHandler: Send + Sync + 'static {
    /// Handles a stanza addressed to one of our domains: from a peer, or a bounce of a stanza
    /// one of our users sent. Returns the stanzas to send in reply.
    fn handle(&self, stanza: Stanza) -> Pin<Box<dyn Future<Output = Vec<Stanza>> + Send + '_>>;
}

/// Notes the negotiated peer, TLS version and authentication method on the stream's span.
fn record_negotiation(authenticated: &Authenticated) {
    let span = tracing::Span::current();
    span.record("peer", authenticated.peer.as_str());
    span.record(
        "tls",
        authenticated.tls_version.as_deref().unwrap_or("none"),
    );
    span.record("auth", format!("{:?}", authenticated.method).as_str());
}

/// The running service.
pub struct S2s {
    config: S2sConfig,
    routes: Mutex<HashMap<String, Vec<Endpoint>>>,
    resolver: crate::dns::Resolver,
    tls: Arc<TlsSettings>,
    handler: Arc<dyn StanzaHandler>,
    /// Outbound queues by `(our domain, remote domain)`.
    queues: Mutex<HashMap<(String, String), mpsc::UnboundedSender<Stanza>>>,
    local_addresses: Vec<(SocketAddr, bool)>,
}

impl S2s {
    /// Binds the listeners and starts accepting streams.
    pub async fn start(
        config: S2sConfig,
        tls: Arc<TlsSettings>,
        handler: Arc<dyn StanzaHandler>,
    ) -> std::io::Result<Arc<S2s>> {
        let mut listeners = Vec::new();
        for (address, direct) in config
            .listen_starttls
            .iter()
            .map(|a| (*a, false))
            .chain(config.listen_direct_tls.iter().map(|a| (*a, true)))
        {
            let listener = TcpListener::bind(address).await?;
            listeners.push((listener, direct));
        }
        let local_addresses = listeners
            .iter()
            .map(|(listener, direct)| listener.local_addr().map(|a| (a, *direct)))
            .collect::<std::io::Result<_>>()?;
        let s2s = Arc::new(S2s {
            routes: Mutex::new(config.routes.clone()),
            resolver: crate::dns::Resolver::system(),
            config,
            tls,
            handler,
            queues: Mutex::new(HashMap::new()),
            local_addresses,
        });
        for (listener, direct) in listeners {
            let s2s = s2s.clone();
            tokio::spawn(async move { s2s.accept_loop(listener, direct).await });
        }
        Ok(s2s)
    }

    /// Sets the fixed endpoints of a remote domain (used instead of DNS).
    pub fn set_route(&self, domain: &str, endpoints: Vec<Endpoint>) {
        self.routes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(domain.to_ascii_lowercase(), endpoints);
    }

    /// The addresses the listeners are bound to, with whether each is direct TLS.
    pub fn local_addresses(&self) -> &[(SocketAddr, bool)] {
        &self.local_addresses
    }

    fn is_ours(&self, domain: &str) -> bool {
        self.config
            .domains
            .iter()
            .any(|ours| ours.eq_ignore_ascii_case(domain))
    }

    async fn accept_loop(self: Arc<Self>, listener: TcpListener, direct: bool) {
        loop {
            let (socket, remote) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accepting a server-to-server connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // Negotiation is a ping-pong of small writes: without this, Nagle's algorithm and
            // delayed acknowledgements stall each step.
            let _ = socket.set_nodelay(true);
            let s2s = self.clone();
            let span = tracing::info_span!(
                "s2s",
                direction = "in",
                remote = %remote,
                direct_tls = direct,
                peer = tracing::field::Empty,
                tls = tracing::field::Empty,
                auth = tracing::field::Empty,
            );
            tokio::spawn(async move { s2s.inbound(socket, direct).await }.instrument(span));
        }
    }

    async fn inbound(self: Arc<Self>, socket: TcpStream, direct: bool) {
        let policy = InboundPolicy {
            domains: self.config.domains.clone(),
            require_tls: self.config.require_tls,
            limits: self.config.limits,
            domain_policy: self.config.domain_policy.clone(),
        };
        let negotiated = tokio::time::timeout(
            self.config.connect_timeout,
            negotiation::accept(Box::new(socket), direct, &self.tls, &policy),
        )
        .await;
        let mut authenticated = match negotiated {
            Ok(Ok(authenticated)) => authenticated,
            Ok(Err(error)) => {
                tracing::info!(%error, "inbound negotiation failed");
                return;
            }
            Err(_) => {
                tracing::info!("inbound negotiation timed out");
                return;
            }
        };
        record_negotiation(&authenticated);
        let peer = authenticated.peer.clone();
        if !self.config.domain_policy.permits(&peer) {
            let error = crate::error::StreamError::new(
                crate::error::StreamErrorCondition::PolicyViolation,
                "this server does not federate with your domain",
            );
            authenticated.stream.fail(&error).await;
            tracing::info!(peer = %peer, "refused a domain the federation policy excludes");
            return;
        }
        // A token bucket of stanzas: a peer sending faster is read more slowly (backpressure).
        let rate = f64::from(self.config.max_stanzas_per_second.max(1));
        let mut tokens = rate;
        let mut refilled = tokio::time::Instant::now();
        loop {
            let now = tokio::time::Instant::now();
            tokens = (tokens + now.duration_since(refilled).as_secs_f64() * rate).min(rate);
            refilled = now;
            if tokens < 1.0 {
                tokio::time::sleep(Duration::from_secs_f64((1.0 - tokens) / rate)).await;
                continue;
            }
            tokens -= 1.0;
            let element = match authenticated.stream.next().await {
                Ok(StreamItem::Element(element)) => element,
                Ok(_) => continue,
                Err(error) => {
                    tracing::info!(peer = %peer, %error, "inbound stream ended");
                    return;
                }
            };
            let checked = accept_inbound(
                element,
                |domain| domain.eq_ignore_ascii_case(&peer),
                |domain| self.is_ours(domain),
            );
            match checked {
                Ok(stanza) => {
                    for reply in self.handler.handle(stanza).await {
                        self.send(reply);
                    }
                }
                Err(Rejection::Stanza(reply)) => self.send(*reply),
                Err(Rejection::Drop) => {}
                Err(Rejection::Stream(error)) => {
                    authenticated.stream.fail(&error).await;
                    tracing::info!(peer = %peer, %error, "inbound stream closed with an error");
                    return;
                }
            }
        }
    }

    /// Sends a stanza to its recipient's server (or hands it to the handler when the
    /// recipient is ours). Never blocks; delivery failures bounce to the sender.
    pub fn send(self: &Arc<Self>, stanza: Stanza) {
        let Some(to) = stanza.to() else {
            tracing::warn!("a stanza without a recipient cannot be sent");
            return;
        };
        let domain = to.domain().as_str().to_ascii_lowercase();
        if !self.is_ours(&domain) && !self.config.domain_policy.permits(&domain) {
            let s2s = self.clone();
            tokio::spawn(async move {
                s2s.bounce_with(
                    stanza,
                    DefinedCondition::NotAllowed,
                    "this server does not federate with that domain",
                )
                .await;
            });
            return;
        }
        if self.is_ours(&domain) {
            let s2s = self.clone();
            tokio::spawn(async move {
                for reply in s2s.handler.handle(stanza).await {
                    s2s.send(reply);
                }
            });
            return;
        }
        // A stream authenticates one of our domains: stanzas from the MUC service and from the
        // server's users travel on different streams.
        let Some(local) = stanza
            .from()
            .map(|from| from.domain().as_str().to_ascii_lowercase())
            .filter(|local| self.is_ours(local))
        else {
            tracing::warn!(to = %domain, "a stanza not from one of our domains cannot be sent");
            return;
        };
        let key = (local.clone(), domain.clone());
        let mut queues = self
            .queues
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let sender = queues.entry(key.clone()).or_insert_with(|| {
            let (sender, receiver) = mpsc::unbounded_channel();
            let s2s = self.clone();
            let span = tracing::info_span!(
                "s2s",
                direction = "out",
                local = %local,
                peer = %domain,
                tls = tracing::field::Empty,
                auth = tracing::field::Empty,
            );
            tokio::spawn(
                s2s.outbound(local.clone(), domain.clone(), receiver)
                    .instrument(span),
            );
            sender
        });
        if let Err(mpsc::error::SendError(stanza)) = sender.send(stanza) {
            // The destination task ended between two sends: start it again.
            queues.remove(&key);
            drop(queues);
            self.send(stanza);
        }
    }

    async fn endpoints(&self, domain: &str) -> Vec<Endpoint> {
        let fixed = self
            .routes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(domain)
            .cloned();
        if let Some(routes) = fixed {
            return routes;
        }
        self.resolver.endpoints(domain).await
    }

    async fn open(&self, local: &str, domain: &str) -> Option<Authenticated> {
        for endpoint in self.endpoints(domain).await {
            let attempt = async {
                let socket = TcpStream::connect(endpoint.address).await.ok()?;
                let _ = socket.set_nodelay(true);
                let io: BoxedIo = Box::new(socket);
                negotiation::connect(
                    io,
                    endpoint.direct_tls,
                    local,
                    domain,
                    &self.tls,
                    self.config.limits,
                )
                .await
                .map_err(|error| tracing::info!(%domain, address = %endpoint.address, %error, "outbound negotiation failed"))
                .ok()
            };
            if let Ok(Some(authenticated)) =
                tokio::time::timeout(self.config.connect_timeout, attempt).await
            {
                return Some(authenticated);
            }
        }
        None
    }

    /// The task of one destination: connects when there is something to send, sends in order,
    /// closes when idle, bounces what cannot be delivered and retries later with backoff.
    async fn outbound(
        self: Arc<Self>,
        local: String,
        domain: String,
        mut queue: mpsc::UnboundedReceiver<Stanza>,
    ) {
        let mut pending: VecDeque<Stanza> = VecDeque::new();
        let mut backoff = Duration::from_millis(500);
        let mut failed_at: Option<tokio::time::Instant> = None;
        loop {
            if pending.is_empty() {
                match queue.recv().await {
                    Some(stanza) => pending.push_back(stanza),
                    None => return,
                }
            }
            // Within the backoff after a failure, stanzas bounce at once.
            if let Some(at) = failed_at
                && at.elapsed() < backoff
            {
                while let Some(stanza) = pending.pop_front() {
                    self.bounce(stanza).await;
                }
                continue;
            }
            let Some(mut stream) = self.open(&local, &domain).await else {
                failed_at = Some(tokio::time::Instant::now());
                tracing::info!(%domain, backoff_ms = backoff.as_millis() as u64, "remote server unreachable");
                while let Some(stanza) = pending.pop_front() {
                    self.bounce(stanza).await;
                }
                backoff = (backoff * 2).min(Duration::from_secs(60));
                continue;
            };
            record_negotiation(&stream);
            failed_at = None;
            backoff = Duration::from_millis(500);
            loop {
                while let Some(stanza) = pending.pop_front() {
                    if let Err(error) = stream
                        .stream
                        .send_element(&stanza.to_server_element())
                        .await
                    {
                        tracing::info!(%domain, %error, "outbound stream failed");
                        pending.push_front(stanza);
                        break;
                    }
                }
                if !pending.is_empty() {
                    // Reconnect once for what is left; it bounces if that fails too.
                    break;
                }
                match tokio::time::timeout(self.config.idle_timeout, queue.recv()).await {
                    Ok(Some(stanza)) => pending.push_back(stanza),
                    Ok(None) => {
                        let _ = stream.stream.close().await;
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%domain, "closing an idle outbound stream");
                        let _ = stream.stream.close().await;
                        break;
                    }
                }
            }
        }
    }

    /// Returns an undeliverable stanza to its sender as an error.
    async fn bounce(self: &Arc<Self>, stanza: Stanza) {
        self.bounce_with(
            stanza,
            DefinedCondition::RemoteServerNotFound,
            "the remote server cannot be reached",
        )
        .await;
    }

    async fn bounce_with(
        self: &Arc<Self>,
        stanza: Stanza,
        condition: DefinedCondition,
        text: &str,
    ) {
        let (Some(sender), recipient) = (stanza.from().cloned(), stanza.to().cloned()) else {
            return;
        };
        let (kind, is_error, id) = match &stanza {
            Stanza::Message(message) => (
                "message",
                message.type_ == xmpp_parsers::message::MessageType::Error,
                message.id.as_ref().map(|id| id.0.clone()),
            ),
            Stanza::Presence(presence) => (
                "presence",
                presence.type_ == xmpp_parsers::presence::Type::Error,
                presence.id.clone(),
            ),
            Stanza::Iq(iq) => (
                "iq",
                matches!(
                    iq,
                    xmpp_parsers::iq::Iq::Error { .. } | xmpp_parsers::iq::Iq::Result { .. }
                ),
                Some(iq.id().to_owned()),
            ),
        };
        if let Rejection::Stanza(reply) = bounce(
            kind,
            is_error,
            &sender,
            recipient.as_ref(),
            id,
            condition,
            text,
        ) {
            self.send(*reply);
        }
    }
}

#[cfg(test)]
mod tests;
