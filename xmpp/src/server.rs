//! The server-to-server service: listeners for streams peers open, a queue and an outbound
//! stream per remote domain, and the hand-over of authenticated stanzas to a handler.
//!
//! Inbound stanzas are accepted only when their `from` domain is authenticated on the stream
//! (by SASL EXTERNAL, or by Server Dialback for the pair of `from` and `to`) and their `to`
//! domain is ours ([`crate::stanza::accept_inbound`]). On every inbound stream this server also
//! answers as the authoritative server for the dialback keys it gave. Outbound stanzas
//! are queued per destination; a stream is opened on demand, kept while used, closed when
//! idle, and opened again with backoff after a failure. Stanzas that cannot be delivered are
//! bounced to their sender with `remote-server-not-found`, never dropped silently.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tracing::Instrument;
use xmpp_parsers::stanza_error::DefinedCondition;

use crate::connection::ConnectionError;
use crate::dialback::{Dialback, Outcome, Secret};
use crate::error::{StreamError, StreamErrorCondition};
pub use crate::negotiation::DomainPolicy;
use crate::negotiation::{self, Accepted, Authenticated, BoxedIo, InboundPolicy, OutboundPolicy};
use crate::stanza::{Rejection, Stanza, accept_inbound, bounce};
use crate::stream::{Limits, StreamItem};
use crate::tls::TlsSettings;
use dialback::InboundAuth;

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
    /// Allow Server Dialback (XEP-0220) where certificates do not authenticate a peer.
    pub dialback: bool,
    pub limits: Limits,
    /// An outbound stream with nothing to send for this long is closed.
    pub idle_timeout: Duration,
    /// How long connecting and negotiating may take.
    pub connect_timeout: Duration,
    /// Which remote domains may federate.
    pub domain_policy: DomainPolicy,
    /// Stanzas per second read from one inbound stream; a faster peer is slowed down.
    pub max_stanzas_per_second: u32,
    /// Inbound connections open at once, in all and from one address (negotiating or not);
    /// a connection over either is closed as soon as it is accepted.
    pub max_inbound_streams: usize,
    pub max_inbound_streams_per_address: usize,
    /// DNS servers for SRV records and addresses; empty: the system's resolver.
    pub nameservers: Vec<SocketAddr>,
}

/// What the rest of the server does with stanzas for our domains.
pub trait StanzaHandler: Send + Sync + 'static {
    /// Handles a stanza addressed to one of our domains: from a peer, or a bounce of a stanza
    /// one of our users sent. Returns the stanzas to send in reply.
    fn handle(&self, stanza: Stanza) -> Pin<Box<dyn Future<Output = Vec<Stanza>> + Send + '_>>;
}

/// Notes the negotiated peer, TLS version and authentication method on the stream's span.
fn record_negotiation(peer: &str, tls_version: Option<&str>, method: negotiation::AuthMethod) {
    let span = tracing::Span::current();
    span.record("peer", peer);
    span.record("tls", tls_version.unwrap_or("none"));
    span.record("auth", format!("{method:?}").as_str());
}

/// What the reading loop of an inbound stream waits for.
enum InboundEvent {
    Item(Result<StreamItem, ConnectionError>),
    /// A verification with the authoritative server finished.
    Verified(Dialback, Outcome),
    /// Nothing was authenticated in time.
    Timeout,
    /// The service is shutting down.
    Shutdown,
}

/// What became of a stanza given to [`S2s::send_tracked`].
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// Written to an authenticated stream to the recipient's server (or handed to our own
    /// handler). Without stream management (XEP-0198) this is as far as a sender can know.
    Sent,
    /// Not sent, for this reason; the stanza was not bounced to its sender.
    Failed(DefinedCondition),
}

/// A stanza waiting in an outbound queue, and who wants to know what became of it.
struct Outgoing {
    stanza: Stanza,
    report: Option<tokio::sync::oneshot::Sender<Delivery>>,
}

impl Outgoing {
    fn sent(&mut self) {
        if let Some(report) = self.report.take() {
            let _ = report.send(Delivery::Sent);
        }
    }
}

/// The running service.
pub struct S2s {
    config: S2sConfig,
    routes: Mutex<HashMap<String, Vec<Endpoint>>>,
    resolver: crate::dns::Resolver,
    tls: Arc<TlsSettings>,
    handler: Arc<dyn StanzaHandler>,
    /// Outbound queues by `(our domain, remote domain)`.
    queues: Mutex<HashMap<(String, String), mpsc::UnboundedSender<Outgoing>>>,
    local_addresses: Vec<(SocketAddr, bool)>,
    /// The secret our dialback keys come from; it lives as long as the process.
    secret: Secret,
    /// True once the service is shutting down.
    shutdown: tokio::sync::watch::Sender<bool>,
    /// How many streams are open, inbound and outbound, for the shutdown to wait for.
    open_streams: tokio::sync::watch::Sender<usize>,
    /// Inbound connections open now.
    inbound: Mutex<InboundCounts>,
}

/// Inbound connections open now, in all and by the address they come from.
#[derive(Default)]
struct InboundCounts {
    total: usize,
    by_address: HashMap<std::net::IpAddr, usize>,
}

/// An accepted inbound connection, counted against the caps while it lives.
struct InboundSlot {
    s2s: Arc<S2s>,
    address: std::net::IpAddr,
}

impl Drop for InboundSlot {
    fn drop(&mut self) {
        let mut counts = self
            .s2s
            .inbound
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        counts.total = counts.total.saturating_sub(1);
        if let Some(count) = counts.by_address.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                counts.by_address.remove(&self.address);
            }
        }
    }
}

/// Counts a stream as open while it lives.
struct OpenStream<'a>(&'a tokio::sync::watch::Sender<usize>);

impl<'a> OpenStream<'a> {
    fn new(counter: &'a tokio::sync::watch::Sender<usize>) -> OpenStream<'a> {
        counter.send_modify(|open| *open += 1);
        OpenStream(counter)
    }
}

impl Drop for OpenStream<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|open| *open = open.saturating_sub(1));
    }
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
            resolver: if config.nameservers.is_empty() {
                crate::dns::Resolver::system()
            } else {
                crate::dns::Resolver::with_nameservers(&config.nameservers)
            },
            config,
            tls,
            handler,
            queues: Mutex::new(HashMap::new()),
            local_addresses,
            secret: Secret::random(),
            shutdown: tokio::sync::watch::Sender::new(false),
            open_streams: tokio::sync::watch::Sender::new(0),
            inbound: Mutex::new(InboundCounts::default()),
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

    /// Shuts the service down: the listeners stop accepting, every inbound stream ends with
    /// the `system-shutdown` stream error (RFC 6120 §4.9.3.22), and every outbound stream is
    /// closed once what was queued on it is written. Returns when all streams are closed, or
    /// after `grace`.
    pub async fn shut_down(&self, grace: Duration) {
        self.shutdown.send_replace(true);
        let mut open = self.open_streams.subscribe();
        if tokio::time::timeout(grace, open.wait_for(|open| *open == 0))
            .await
            .is_err()
        {
            tracing::info!(
                open = *open.borrow(),
                "streams still open at the end of the shutdown"
            );
        }
    }

    /// How many streams are open, inbound and outbound.
    pub fn open_streams(&self) -> usize {
        *self.open_streams.borrow()
    }

    /// Takes a place for an inbound connection from `address`, if the caps leave one.
    fn inbound_slot(self: &Arc<Self>, address: std::net::IpAddr) -> Option<InboundSlot> {
        let mut counts = self
            .inbound
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let from_address = counts.by_address.get(&address).copied().unwrap_or(0);
        if counts.total >= self.config.max_inbound_streams
            || from_address >= self.config.max_inbound_streams_per_address
        {
            return None;
        }
        counts.total += 1;
        counts.by_address.insert(address, from_address + 1);
        Some(InboundSlot {
            s2s: self.clone(),
            address,
        })
    }

    /// Resolves once the service is shutting down.
    async fn shutting_down(&self) {
        until_shutdown(&mut self.shutdown.subscribe()).await;
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
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                // The listener closes: new connections are refused.
                () = self.shutting_down() => return,
            };
            let (socket, remote) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accepting a server-to-server connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Some(slot) = self.inbound_slot(remote.ip()) else {
                // Over the caps: closed before anything is read from it or kept for it.
                tracing::info!(%remote, "refused an inbound connection: too many open");
                drop(socket);
                continue;
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
            tokio::spawn(
                async move {
                    let _slot = slot;
                    s2s.inbound(socket, direct).await;
                }
                .instrument(span),
            );
        }
    }

    async fn inbound(self: Arc<Self>, socket: TcpStream, direct: bool) {
        let _open = OpenStream::new(&self.open_streams);
        let policy = InboundPolicy {
            domains: self.config.domains.clone(),
            require_tls: self.config.require_tls,
            dialback: self.config.dialback,
            limits: self.config.limits,
            domain_policy: self.config.domain_policy.clone(),
        };
        let negotiated = tokio::time::timeout(
            self.config.connect_timeout,
            negotiation::accept(Box::new(socket), direct, &self.tls, &policy),
        )
        .await;
        let accepted = match negotiated {
            Ok(Ok(accepted)) => accepted,
            Ok(Err(error)) => {
                tracing::info!(%error, "inbound negotiation failed");
                return;
            }
            Err(_) => {
                tracing::info!("inbound negotiation timed out");
                return;
            }
        };
        let mut auth = InboundAuth {
            sasl: None,
            pairs: HashSet::new(),
            pending: HashSet::new(),
        };
        let (mut stream, stream_id) = match accepted {
            Accepted::Sasl(authenticated) => {
                record_negotiation(
                    &authenticated.peer,
                    authenticated.tls_version.as_deref(),
                    authenticated.method,
                );
                // The negotiation refused a domain the federation policy excludes when the
                // stream opened, and SASL EXTERNAL authenticates only the domain claimed then.
                auth.sasl = Some(authenticated.peer);
                (authenticated.stream, String::new())
            }
            Accepted::Dialback(dialback) => {
                tracing::Span::current()
                    .record("tls", dialback.tls_version.as_deref().unwrap_or("none"));
                (dialback.stream, dialback.stream_id)
            }
        };
        let (verified_sender, mut verified) = mpsc::unbounded_channel();
        // A stream that authenticates nothing in time is closed, verifications under way or
        // not: a peer cannot hold a stream open by asking for checks that never end.
        let deadline = tokio::time::Instant::now() + self.config.connect_timeout;
        // A token bucket of stanzas: a peer sending faster is read more slowly (backpressure).
        let rate = f64::from(self.config.max_stanzas_per_second.max(1));
        let mut tokens = rate;
        let mut refilled = tokio::time::Instant::now();
        let mut shutdown = self.shutdown.subscribe();
        loop {
            let now = tokio::time::Instant::now();
            tokens = (tokens + now.duration_since(refilled).as_secs_f64() * rate).min(rate);
            refilled = now;
            if tokens < 1.0 {
                tokio::time::sleep(Duration::from_secs_f64((1.0 - tokens) / rate)).await;
                continue;
            }
            let waiting = auth.is_empty();
            let event = tokio::select! {
                item = stream.next() => InboundEvent::Item(item),
                Some((request, outcome)) = verified.recv() => InboundEvent::Verified(request, outcome),
                () = tokio::time::sleep_until(deadline), if waiting => InboundEvent::Timeout,
                () = until_shutdown(&mut shutdown) => InboundEvent::Shutdown,
            };
            let element = match event {
                InboundEvent::Item(Ok(StreamItem::Element(element))) => element,
                InboundEvent::Item(Ok(_)) => continue,
                InboundEvent::Item(Err(error)) => {
                    tracing::info!(%error, "inbound stream ended");
                    return;
                }
                InboundEvent::Verified(request, outcome) => {
                    if !self
                        .dialback_verified(&mut stream, &mut auth, request, outcome)
                        .await
                    {
                        return;
                    }
                    continue;
                }
                InboundEvent::Timeout => {
                    let error = StreamError::new(
                        StreamErrorCondition::ConnectionTimeout,
                        "nothing was authenticated in time",
                    );
                    stream.fail(&error).await;
                    tracing::info!("closed an inbound stream that authenticated nothing");
                    return;
                }
                InboundEvent::Shutdown => {
                    let error = StreamError::new(
                        StreamErrorCondition::SystemShutdown,
                        "the server is shutting down",
                    );
                    stream.fail(&error).await;
                    tracing::debug!("closed an inbound stream at shutdown");
                    return;
                }
            };
            tokens -= 1.0;
            if element.ns() == crate::ns::DIALBACK {
                let request = match Dialback::parse(&element) {
                    Ok(request) => request,
                    Err(error) => {
                        stream.fail(&error).await;
                        tracing::info!(%error, "inbound stream closed with an error");
                        return;
                    }
                };
                let answer =
                    self.dialback_request(&mut auth, request, &stream_id, &verified_sender);
                if let Some(answer) = answer
                    && let Err(error) = stream.send_raw(&answer.to_bytes()).await
                {
                    tracing::info!(%error, "inbound stream ended");
                    return;
                }
                continue;
            }
            let checked = accept_inbound(
                element,
                |domain| auth.sender_authenticated(domain),
                |domain| self.is_ours(domain),
            )
            .and_then(|stanza| {
                // With dialback, a sender domain is authenticated for one target at a time.
                let pair = stanza.from().zip(stanza.to()).is_some_and(|(from, to)| {
                    auth.pair_authenticated(from.domain().as_str(), to.domain().as_str())
                });
                if pair {
                    Ok(stanza)
                } else {
                    Err(Rejection::Stream(StreamError::new(
                        StreamErrorCondition::InvalidFrom,
                        "the sender domain is not authenticated for that target",
                    )))
                }
            });
            match checked {
                Ok(stanza) => {
                    for reply in self.handler.handle(stanza).await {
                        self.send(reply);
                    }
                }
                Err(Rejection::Stanza(reply)) => self.send(*reply),
                Err(Rejection::Drop) => {}
                Err(Rejection::Stream(error)) => {
                    stream.fail(&error).await;
                    tracing::info!(%error, "inbound stream closed with an error");
                    return;
                }
            }
        }
    }

    /// Sends a stanza to its recipient's server (or hands it to the handler when the
    /// recipient is ours). Never blocks; delivery failures bounce to the sender.
    pub fn send(self: &Arc<Self>, stanza: Stanza) {
        self.enqueue(Outgoing {
            stanza,
            report: None,
        });
    }

    /// Sends a stanza like [`S2s::send`], and says what became of it instead of bouncing it
    /// when it cannot be delivered.
    pub fn send_tracked(
        self: &Arc<Self>,
        stanza: Stanza,
    ) -> tokio::sync::oneshot::Receiver<Delivery> {
        let (report, receiver) = tokio::sync::oneshot::channel();
        self.enqueue(Outgoing {
            stanza,
            report: Some(report),
        });
        receiver
    }

    fn enqueue(self: &Arc<Self>, mut outgoing: Outgoing) {
        let stanza = &outgoing.stanza;
        let Some(to) = stanza.to() else {
            tracing::warn!("a stanza without a recipient cannot be sent");
            return;
        };
        let domain = to.domain().as_str().to_ascii_lowercase();
        if !self.is_ours(&domain) && !self.config.domain_policy.permits(&domain) {
            let s2s = self.clone();
            tokio::spawn(async move {
                s2s.bounce_with(
                    outgoing,
                    DefinedCondition::NotAllowed,
                    "this server does not federate with that domain",
                )
                .await;
            });
            return;
        }
        if self.is_ours(&domain) {
            let s2s = self.clone();
            outgoing.sent();
            tokio::spawn(async move {
                for reply in s2s.handler.handle(outgoing.stanza).await {
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
        if let Err(mpsc::error::SendError(outgoing)) = sender.send(outgoing) {
            // The destination task ended between two sends: start it again.
            queues.remove(&key);
            drop(queues);
            self.enqueue(outgoing);
        }
    }

    async fn endpoints(&self, domain: &str) -> Vec<Endpoint> {
        if let Some(routes) = self.fixed_route(domain) {
            return routes;
        }
        crate::dns::endpoints(&self.resolver, domain).await
    }

    fn fixed_route(&self, domain: &str) -> Option<Vec<Endpoint>> {
        self.routes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&domain.to_ascii_lowercase())
            .cloned()
    }

    /// Where to ask a domain's authoritative server about a dialback key: its fixed route,
    /// or the addresses its DNS gives, public ones only. Whoever opens a stream to us chooses
    /// the domain, and so its DNS: it must not be able to make this server connect to its own
    /// host or network (loopback, private, link-local, unique-local addresses) unless the
    /// configuration routes the domain there.
    async fn verification_endpoints(&self, domain: &str) -> Vec<Endpoint> {
        if let Some(routes) = self.fixed_route(domain) {
            return routes;
        }
        let (public, internal): (Vec<Endpoint>, Vec<Endpoint>) =
            crate::dns::endpoints(&self.resolver, domain)
                .await
                .into_iter()
                .partition(|endpoint| crate::dns::is_public(endpoint.address.ip()));
        if !internal.is_empty() {
            let refused: Vec<String> = internal.iter().map(|e| e.address.to_string()).collect();
            tracing::info!(%domain, ?refused, "dialback verification: not connecting to non-public addresses");
        }
        public
    }

    fn outbound_policy(&self) -> OutboundPolicy<'_> {
        OutboundPolicy {
            tls: &self.tls,
            require_tls: self.config.require_tls,
            dialback: self.config.dialback,
            secret: &self.secret,
            limits: self.config.limits,
        }
    }

    async fn open(&self, local: &str, domain: &str) -> Option<Authenticated> {
        let policy = self.outbound_policy();
        for endpoint in self.endpoints(domain).await {
            let attempt = async {
                let socket = TcpStream::connect(endpoint.address).await.ok()?;
                let _ = socket.set_nodelay(true);
                let io: BoxedIo = Box::new(socket);
                negotiation::connect(io, endpoint.direct_tls, local, domain, &policy)
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
        mut queue: mpsc::UnboundedReceiver<Outgoing>,
    ) {
        let mut pending: VecDeque<Outgoing> = VecDeque::new();
        let mut shutdown = self.shutdown.subscribe();
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
            let _open = OpenStream::new(&self.open_streams);
            record_negotiation(&stream.peer, stream.tls_version.as_deref(), stream.method);
            failed_at = None;
            backoff = Duration::from_millis(500);
            loop {
                if let Err(error) = write_pending(&mut stream.stream, &mut pending).await {
                    tracing::info!(%domain, %error, "outbound stream failed");
                }
                if !pending.is_empty() {
                    // Reconnect once for what is left; it bounces if that fails too.
                    break;
                }
                // Wait for the next stanza while reading the stream: a peer that closes it (or
                // sends a stream error) is noticed now, not by a stanza written into a dead
                // connection.
                let idle_until = tokio::time::Instant::now() + self.config.idle_timeout;
                let peer_closed = loop {
                    tokio::select! {
                        received = queue.recv() => match received {
                            Some(stanza) => {
                                pending.push_back(stanza);
                                break false;
                            }
                            None => {
                                let _ = stream.stream.close().await;
                                return;
                            }
                        },
                        item = stream.stream.next() => match item {
                            Ok(StreamItem::Element(element)) => {
                                // Without XEP-0288 the peer sends nothing on our stream.
                                tracing::debug!(%domain, name = element.name(), "ignored an element on an outbound stream");
                            }
                            Ok(_) => {}
                            Err(error) => {
                                tracing::info!(%domain, %error, "the peer ended the outbound stream");
                                break true;
                            }
                        },
                        () = tokio::time::sleep_until(idle_until) => {
                            tracing::debug!(%domain, "closing an idle outbound stream");
                            break true;
                        }
                        () = until_shutdown(&mut shutdown) => {
                            // What is queued is written before the stream ends politely.
                            while let Ok(outgoing) = queue.try_recv() {
                                pending.push_back(outgoing);
                            }
                            let _ = write_pending(&mut stream.stream, &mut pending).await;
                            let _ = stream.stream.close().await;
                            tracing::debug!(%domain, "closed an outbound stream at shutdown");
                            return;
                        }
                    }
                };
                if peer_closed {
                    let _ = stream.stream.close().await;
                    break;
                }
            }
        }
    }

    /// Returns an undeliverable stanza to its sender as an error.
    async fn bounce(self: &Arc<Self>, outgoing: Outgoing) {
        self.bounce_with(
            outgoing,
            DefinedCondition::RemoteServerNotFound,
            "the remote server cannot be reached",
        )
        .await;
    }

    /// Tells whoever tracks an undeliverable stanza, or else returns it to its sender.
    async fn bounce_with(
        self: &Arc<Self>,
        outgoing: Outgoing,
        condition: DefinedCondition,
        text: &str,
    ) {
        if let Some(report) = outgoing.report {
            let _ = report.send(Delivery::Failed(condition));
            return;
        }
        let stanza = outgoing.stanza;
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

mod dialback;

#[cfg(test)]
mod tests;

/// Resolves once `shutdown` says the service is shutting down. Its sender lives in the `S2s`
/// whose tasks wait on it, so waiting does not fail while they run.
async fn until_shutdown(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|down| *down).await;
}

/// Writes queued stanzas in order, each reported sent once written; on a failure the stanza
/// that failed and those after it stay queued.
async fn write_pending(
    stream: &mut crate::connection::XmlStream<BoxedIo>,
    pending: &mut VecDeque<Outgoing>,
) -> Result<(), ConnectionError> {
    while let Some(mut outgoing) = pending.pop_front() {
        if let Err(error) = stream
            .send_element(&outgoing.stanza.to_server_element())
            .await
        {
            pending.push_front(outgoing);
            return Err(error);
        }
        outgoing.sent();
    }
    Ok(())
}
