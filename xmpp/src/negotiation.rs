//! Stream negotiation of server-to-server streams (RFC 6120 §4.3, §5, §6; XEP-0178; XEP-0220).
//!
//! [`accept`] runs the receiving side of a stream a peer opened: stream headers and features,
//! STARTTLS (or TLS from the start on the XEP-0368 port), and SASL EXTERNAL, offered only when
//! the peer's certificate verified for the domain it claims, or Server Dialback when the policy
//! allows it. [`connect`] runs the initiating side, and [`verify`] asks an authoritative server
//! about a dialback key.

use minidom::Element;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::connection::{ConnectionError, XmlStream};
use crate::dialback::{self, Dialback, DialbackError, Kind, Outcome, Secret};
use crate::error::{StreamError, StreamErrorCondition};
use crate::ns;
use crate::stream::{Limits, StreamHeader, StreamItem};
use crate::tls::TlsSettings;

/// A byte stream a negotiation can run over: TCP, TLS over TCP, or a pipe in tests.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// The byte stream of a negotiated connection.
pub type BoxedIo = Box<dyn Io>;

/// Remote domains allowed to federate: all but the denied ones, or only the allowed ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DomainPolicy {
    /// When not empty, only these domains (and their subdomains) federate.
    pub allow: Vec<String>,
    /// These domains (and their subdomains) never federate.
    pub deny: Vec<String>,
}

impl DomainPolicy {
    fn matches(list: &[String], domain: &str) -> bool {
        let domain = domain.to_ascii_lowercase();
        list.iter().any(|entry| {
            let entry = entry.to_ascii_lowercase();
            domain == entry || domain.ends_with(&format!(".{entry}"))
        })
    }

    /// Whether a remote domain may federate.
    pub fn permits(&self, domain: &str) -> bool {
        if Self::matches(&self.deny, domain) {
            return false;
        }
        self.allow.is_empty() || Self::matches(&self.allow, domain)
    }
}

/// What the receiving side accepts.
#[derive(Debug, Clone)]
pub struct InboundPolicy {
    /// The domains served here (the server and its MUC service).
    pub domains: Vec<String>,
    /// Refuse to go on without TLS.
    pub require_tls: bool,
    /// Offer Server Dialback (XEP-0220) besides SASL EXTERNAL.
    pub dialback: bool,
    pub limits: Limits,
    /// Which remote domains may federate.
    pub domain_policy: DomainPolicy,
}

impl InboundPolicy {
    fn serves(&self, domain: &str) -> bool {
        self.domains
            .iter()
            .any(|served| served.eq_ignore_ascii_case(domain))
    }
}

/// What the initiating side does.
#[derive(Clone, Copy)]
pub struct OutboundPolicy<'a> {
    pub tls: &'a TlsSettings,
    /// Refuse to go on without TLS.
    pub require_tls: bool,
    /// Authenticate with Server Dialback when the peer does not accept our certificate, and
    /// send to peers whose certificate does not verify. Without it, certificates are required
    /// both ways.
    pub dialback: bool,
    /// The secret our dialback keys come from.
    pub secret: &'a Secret,
    pub limits: Limits,
}

/// How the peer's domain was authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    SaslExternal,
    Dialback,
}

/// A stream on which a peer domain is authenticated.
pub struct Authenticated {
    pub stream: XmlStream<BoxedIo>,
    /// The authenticated peer domain.
    pub peer: String,
    /// Our domain the peer addressed.
    pub local: String,
    pub method: AuthMethod,
    /// The TLS protocol version, when the stream is encrypted.
    pub tls_version: Option<String>,
    /// On a stream we opened, the id the peer gave it: further dialback keys for other domain
    /// pairs on the stream are bound to it.
    pub stream_id: Option<String>,
}

/// An inbound stream whose peer goes on with Server Dialback: its first dialback element is
/// the next item of the stream. Domain pairs are authenticated on it one by one.
pub struct DialbackStream {
    pub stream: XmlStream<BoxedIo>,
    /// Our domain the stream header addressed.
    pub local: String,
    /// The id of our stream header, which the peer's dialback keys are bound to.
    pub stream_id: String,
    pub tls_version: Option<String>,
}

/// The outcome of the receiving side's negotiation.
pub enum Accepted {
    /// The peer authenticated with SASL EXTERNAL.
    Sasl(Authenticated),
    /// The peer goes on with dialback.
    Dialback(DialbackStream),
}

/// Why a negotiation ended without an authenticated stream.
#[derive(Debug, thiserror::Error)]
pub enum NegotiationError {
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    #[error("dialback failed: {0}")]
    Dialback(DialbackError),
    #[error("the peer found our dialback key invalid")]
    DialbackInvalid,
}

/// A fresh stream id: unique and unpredictable (dialback keys are derived from it).
fn random_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

async fn violation<T>(
    stream: &mut XmlStream<BoxedIo>,
    condition: StreamErrorCondition,
    text: &str,
) -> Result<T, NegotiationError> {
    let error = StreamError::new(condition, text);
    stream.fail(&error).await;
    Err(ConnectionError::Violation(error).into())
}

/// The peer's stream as our answer opened it.
struct Opened {
    /// Our domain the peer asked for.
    local: String,
    /// The domain the peer claims to be.
    claimed: Option<String>,
    /// The id of our answering header.
    id: String,
}

/// Reads the peer's header and answers with ours.
async fn open_stream(
    stream: &mut XmlStream<BoxedIo>,
    policy: &InboundPolicy,
) -> Result<Opened, NegotiationError> {
    let header = stream.read_header().await?;
    let Some(local) = header.to.clone() else {
        return violation(stream, StreamErrorCondition::HostUnknown, "no 'to' domain").await;
    };
    // Our answer names us as the domain the peer asked for (RFC 6120 §4.7.1).
    let id = random_id();
    let reply = StreamHeader {
        from: Some(local.clone()),
        to: header.from.clone(),
        id: Some(id.clone()),
        version: Some("1.0".to_owned()),
        lang: Some("en".to_owned()),
    };
    stream.send_header(&reply, true).await?;
    if !policy.serves(&local) {
        return violation(
            stream,
            StreamErrorCondition::HostUnknown,
            "this server does not serve that domain",
        )
        .await;
    }
    if !header.is_version_1() {
        return violation(
            stream,
            StreamErrorCondition::UnsupportedVersion,
            "XMPP 1.0 is required",
        )
        .await;
    }
    if let Some(claimed) = &header.from
        && policy.serves(claimed)
    {
        // Nobody authenticates as one of our own domains, whatever certificate it holds.
        return violation(
            stream,
            StreamErrorCondition::InvalidFrom,
            "a peer cannot be one of this server's own domains",
        )
        .await;
    }
    if let Some(claimed) = &header.from
        && !policy.domain_policy.permits(claimed)
    {
        return violation(
            stream,
            StreamErrorCondition::PolicyViolation,
            "this server does not federate with your domain",
        )
        .await;
    }
    Ok(Opened {
        local: local.to_ascii_lowercase(),
        claimed: header.from,
        id,
    })
}

/// A TLS connection accepted from a peer.
struct AcceptedTls {
    io: BoxedIo,
    peer_chain: Option<Vec<rustls::pki_types::CertificateDer<'static>>>,
    version: Option<String>,
}

async fn accept_tls(tls: &TlsSettings, io: BoxedIo) -> Result<AcceptedTls, NegotiationError> {
    let tls_stream = tls
        .acceptor()
        .accept(io)
        .await
        .map_err(NegotiationError::Tls)?;
    let (_, connection) = tls_stream.get_ref();
    let peer_chain = connection.peer_certificates().map(|chain| chain.to_vec());
    let version = connection
        .protocol_version()
        .map(|version| format!("{version:?}"));
    Ok(AcceptedTls {
        io: Box::new(tls_stream),
        peer_chain,
        version,
    })
}

/// Connects with TLS; returns the encrypted stream, the TLS version, and whether the server's
/// certificate verified for `name`.
async fn connect_tls(
    tls: &TlsSettings,
    connector: &tokio_rustls::TlsConnector,
    name: &rustls::pki_types::ServerName<'static>,
    remote: &str,
    io: BoxedIo,
) -> Result<(BoxedIo, Option<String>, bool), NegotiationError> {
    let tls_stream = connector
        .connect(name.clone(), io)
        .await
        .map_err(NegotiationError::Tls)?;
    let connection = tls_stream.get_ref().1;
    let version = connection
        .protocol_version()
        .map(|version| format!("{version:?}"));
    let verified = connection
        .peer_certificates()
        .is_some_and(|chain| tls.verifies_server(chain, remote));
    Ok((Box::new(tls_stream), version, verified))
}

fn features(children: Vec<Element>) -> Element {
    let mut features = Element::bare("features", ns::STREAM);
    for child in children {
        features.append_child(child);
    }
    features
}

/// Runs the receiving side of a stream. `direct_tls` for connections on the XEP-0368 port,
/// where TLS comes before the stream.
pub async fn accept(
    io: BoxedIo,
    direct_tls: bool,
    tls: &TlsSettings,
    policy: &InboundPolicy,
) -> Result<Accepted, NegotiationError> {
    let mut peer_chain = None;
    let mut tls_version = None;
    let (io, mut encrypted) = if direct_tls {
        let accepted = accept_tls(tls, io).await?;
        peer_chain = accepted.peer_chain;
        tls_version = accepted.version;
        (accepted.io, true)
    } else {
        (io, false)
    };
    let mut stream = XmlStream::new(io, policy.limits);
    loop {
        let Opened { local, claimed, id } = open_stream(&mut stream, policy).await?;
        // Dialback without TLS only when TLS is optional (RFC 6120 §5.3.1: a mandatory
        // STARTTLS is the only feature offered).
        let plain_dialback = policy.dialback && !policy.require_tls;
        if !encrypted {
            let mut starttls = Element::builder("starttls", ns::TLS);
            if policy.require_tls {
                starttls = starttls.append(Element::bare("required", ns::TLS));
            }
            let mut offered = vec![starttls.build()];
            if plain_dialback {
                offered.push(dialback::feature());
            }
            stream.send_element(&features(offered)).await?;
            let StreamItem::Element(element) = stream.next().await? else {
                return violation(&mut stream, StreamErrorCondition::NotWellFormed, "").await;
            };
            if plain_dialback && element.ns() == ns::DIALBACK {
                stream.unread(element);
                return Ok(Accepted::Dialback(DialbackStream {
                    stream,
                    local,
                    stream_id: id,
                    tls_version: None,
                }));
            }
            if !element.is("starttls", ns::TLS) {
                let condition = if policy.require_tls {
                    StreamErrorCondition::PolicyViolation
                } else {
                    StreamErrorCondition::NotAuthorized
                };
                return violation(&mut stream, condition, "TLS is required").await;
            }
            stream
                .send_element(&Element::bare("proceed", ns::TLS))
                .await?;
            let accepted = accept_tls(tls, stream.into_inner()).await?;
            peer_chain = accepted.peer_chain;
            tls_version = accepted.version;
            stream = XmlStream::new(accepted.io, policy.limits);
            encrypted = true;
            continue;
        }
        // Encrypted: offer SASL EXTERNAL when the certificate verifies for the claimed domain,
        // and dialback when the policy allows it.
        let verified = match (&peer_chain, &claimed) {
            (Some(chain), Some(domain)) => tls.verifies(chain, domain),
            _ => false,
        };
        let mut offered = Vec::new();
        if verified {
            offered.push(
                Element::builder("mechanisms", ns::SASL)
                    .append(
                        Element::builder("mechanism", ns::SASL)
                            .append("EXTERNAL")
                            .build(),
                    )
                    .build(),
            );
        }
        if policy.dialback {
            offered.push(dialback::feature());
        }
        stream.send_element(&features(offered)).await?;
        let peer = loop {
            let StreamItem::Element(element) = stream.next().await? else {
                return violation(&mut stream, StreamErrorCondition::NotWellFormed, "").await;
            };
            if policy.dialback && element.ns() == ns::DIALBACK {
                stream.unread(element);
                return Ok(Accepted::Dialback(DialbackStream {
                    stream,
                    local,
                    stream_id: id,
                    tls_version,
                }));
            }
            if !element.is("auth", ns::SASL) {
                return violation(
                    &mut stream,
                    StreamErrorCondition::NotAuthorized,
                    "authenticate first",
                )
                .await;
            }
            if element.attr("mechanism") != Some("EXTERNAL") || !verified {
                stream
                    .send_element(&sasl_failure("invalid-mechanism"))
                    .await?;
                continue;
            }
            // The authorization identity is the claimed domain, given or implied by "=".
            let text = element.text();
            let authzid = match text.trim() {
                "" | "=" => claimed.clone(),
                encoded => decode_base64(encoded).and_then(|bytes| String::from_utf8(bytes).ok()),
            };
            match authzid {
                Some(domain) if Some(&domain) == claimed.as_ref() => break domain,
                _ => {
                    stream
                        .send_element(&sasl_failure("invalid-authzid"))
                        .await?;
                    continue;
                }
            }
        };
        stream
            .send_element(&Element::bare("success", ns::SASL))
            .await?;
        stream.reset();
        let again = open_stream(&mut stream, policy).await?;
        stream.send_element(&features(vec![])).await?;
        if again.local != local {
            return violation(
                &mut stream,
                StreamErrorCondition::InvalidNamespace,
                "the restarted stream names another domain",
            )
            .await;
        }
        tracing::info!(peer = %peer, local = %local, method = "SASL EXTERNAL", tls = ?tls_version, "inbound stream authenticated");
        return Ok(Accepted::Sasl(Authenticated {
            stream,
            peer: peer.to_ascii_lowercase(),
            local,
            method: AuthMethod::SaslExternal,
            tls_version,
            stream_id: None,
        }));
    }
}

/// A stream we opened to a peer, encrypted when the peer offers TLS, before authentication.
struct Connected {
    stream: XmlStream<BoxedIo>,
    /// The features of the (encrypted) stream.
    features: Element,
    /// The id of the peer's stream header.
    id: Option<String>,
    tls_version: Option<String>,
    /// Whether the peer's certificate verified for its domain.
    verified: bool,
}

/// Opens a stream to `remote` as `local`: headers and features, and STARTTLS when the peer
/// offers it (or TLS from the start with `direct_tls`, on the XEP-0368 port).
async fn open_outbound(
    io: BoxedIo,
    direct_tls: bool,
    local: &str,
    remote: &str,
    policy: &OutboundPolicy<'_>,
) -> Result<Connected, NegotiationError> {
    let connector = policy.tls.connector(local, direct_tls).ok_or_else(|| {
        NegotiationError::Tls(std::io::Error::other(format!("no certificate for {local}")))
    })?;
    let name = rustls::pki_types::ServerName::try_from(remote.to_owned())
        .map_err(|e| NegotiationError::Tls(std::io::Error::other(e)))?;
    let mut tls_version = None;
    let mut verified = false;
    let mut encrypted = direct_tls;
    let mut stream = if direct_tls {
        let (io, version, ok) = connect_tls(policy.tls, &connector, &name, remote, io).await?;
        tls_version = version;
        verified = ok;
        XmlStream::new(io, policy.limits)
    } else {
        XmlStream::new(io, policy.limits)
    };
    let header = StreamHeader {
        from: Some(local.to_owned()),
        to: Some(remote.to_owned()),
        version: Some("1.0".to_owned()),
        lang: Some("en".to_owned()),
        id: None,
    };
    loop {
        stream.send_header(&header, true).await?;
        let reply = stream.read_header().await?;
        if !reply.is_version_1() {
            return violation(
                &mut stream,
                StreamErrorCondition::UnsupportedVersion,
                "XMPP 1.0 is required",
            )
            .await;
        }
        let features = read_features(&mut stream).await?;
        if !encrypted && features.has_child("starttls", ns::TLS) {
            stream
                .send_element(&Element::bare("starttls", ns::TLS))
                .await?;
            let StreamItem::Element(answer) = stream.next().await? else {
                return violation(&mut stream, StreamErrorCondition::NotWellFormed, "").await;
            };
            if !answer.is("proceed", ns::TLS) {
                return Err(ConnectionError::PeerError("starttls failure".to_owned()).into());
            }
            let (io, version, ok) =
                connect_tls(policy.tls, &connector, &name, remote, stream.into_inner()).await?;
            tls_version = version;
            verified = ok;
            stream = XmlStream::new(io, policy.limits);
            encrypted = true;
            continue;
        }
        if !encrypted && policy.require_tls {
            return violation(
                &mut stream,
                StreamErrorCondition::PolicyViolation,
                "TLS is required",
            )
            .await;
        }
        return Ok(Connected {
            stream,
            features,
            id: reply.id,
            tls_version,
            verified,
        });
    }
}

async fn read_features(stream: &mut XmlStream<BoxedIo>) -> Result<Element, NegotiationError> {
    match stream.next().await? {
        StreamItem::Element(features) if features.is("features", ns::STREAM) => Ok(features),
        _ => {
            violation(
                stream,
                StreamErrorCondition::UnsupportedStanzaType,
                "expected stream features",
            )
            .await
        }
    }
}

/// Runs the initiating side of a stream to `remote` as `local`: TLS (STARTTLS, unless
/// `direct_tls` already encrypted the connection on the XEP-0368 port), then SASL EXTERNAL
/// with our certificate, or Server Dialback when the peer does not accept the certificate and
/// the policy allows dialback.
pub async fn connect(
    io: BoxedIo,
    direct_tls: bool,
    local: &str,
    remote: &str,
    policy: &OutboundPolicy<'_>,
) -> Result<Authenticated, NegotiationError> {
    let Connected {
        mut stream,
        features,
        id,
        tls_version,
        verified,
    } = open_outbound(io, direct_tls, local, remote, policy).await?;
    if !verified && !policy.dialback {
        return violation(
            &mut stream,
            StreamErrorCondition::PolicyViolation,
            "your certificate does not verify for your domain",
        )
        .await;
    }
    let external = tls_version.is_some()
        && features
            .get_child("mechanisms", ns::SASL)
            .is_some_and(|mechanisms| {
                mechanisms
                    .children()
                    .any(|mechanism| mechanism.text().trim() == "EXTERNAL")
            });
    let dialback_offered = policy.dialback && features.has_child("dialback", ns::DIALBACK_FEATURE);
    let method = if external {
        match sasl_external(&mut stream, local, remote).await? {
            None => AuthMethod::SaslExternal,
            // Servers such as ejabberd offer EXTERNAL before they check the certificate; after
            // its failure the same stream may go on with dialback (XEP-0220 §2.1, RFC 6120
            // §6.4.5: a failure does not end the stream).
            Some(condition) if dialback_offered => {
                tracing::debug!(peer = %remote, %condition, "SASL EXTERNAL refused: trying dialback");
                dialback(&mut stream, id.as_deref(), local, remote, policy).await?;
                AuthMethod::Dialback
            }
            Some(condition) => {
                let _ = stream.close().await;
                return Err(ConnectionError::PeerError(format!("SASL {condition}")).into());
            }
        }
    } else if dialback_offered {
        dialback(&mut stream, id.as_deref(), local, remote, policy).await?;
        AuthMethod::Dialback
    } else {
        return violation(
            &mut stream,
            StreamErrorCondition::PolicyViolation,
            "neither our certificate nor dialback is accepted",
        )
        .await;
    };
    tracing::info!(peer = %remote, local = %local, method = ?method, tls = ?tls_version, "outbound stream authenticated");
    Ok(Authenticated {
        stream,
        peer: remote.to_ascii_lowercase(),
        local: local.to_ascii_lowercase(),
        method,
        tls_version,
        stream_id: id,
    })
}

/// SASL EXTERNAL with the certificate of `local`, and the stream restarted after success.
/// Returns `None` on success, or the condition of the peer's `<failure/>`.
async fn sasl_external(
    stream: &mut XmlStream<BoxedIo>,
    local: &str,
    remote: &str,
) -> Result<Option<String>, NegotiationError> {
    use base64::Engine;
    let authzid = base64::engine::general_purpose::STANDARD.encode(local);
    stream
        .send_element(
            &Element::builder("auth", ns::SASL)
                .attr(rxml::xml_ncname!("mechanism").to_owned(), "EXTERNAL")
                .append(authzid.as_str())
                .build(),
        )
        .await?;
    let StreamItem::Element(answer) = stream.next().await? else {
        return violation(stream, StreamErrorCondition::NotWellFormed, "").await;
    };
    if !answer.is("success", ns::SASL) {
        let condition = answer
            .children()
            .find(|child| child.name() != "text")
            .map(|child| child.name().to_owned())
            .unwrap_or_else(|| "failure".to_owned());
        return Ok(Some(condition));
    }
    stream.reset();
    stream
        .send_header(
            &StreamHeader {
                from: Some(local.to_owned()),
                to: Some(remote.to_owned()),
                version: Some("1.0".to_owned()),
                lang: Some("en".to_owned()),
                id: None,
            },
            true,
        )
        .await?;
    stream.read_header().await?;
    read_features(stream).await?;
    Ok(None)
}

/// Server Dialback (XEP-0220) for the pair (`local`, `remote`) on a stream whose id the peer
/// gave: our key for it, and the peer's answer after it asked us as authoritative server.
async fn dialback(
    stream: &mut XmlStream<BoxedIo>,
    id: Option<&str>,
    local: &str,
    remote: &str,
    policy: &OutboundPolicy<'_>,
) -> Result<(), NegotiationError> {
    let Some(id) = id else {
        return violation(
            stream,
            StreamErrorCondition::InvalidXml,
            "dialback needs the id of your stream",
        )
        .await;
    };
    let key = policy.secret.key(remote, local, id);
    let request = Dialback::request(Kind::Result, local, remote, None, key);
    stream.send_raw(&request.to_bytes()).await?;
    match await_answer(stream, &request).await? {
        Outcome::Valid => Ok(()),
        Outcome::Invalid => {
            let _ = stream.close().await;
            Err(NegotiationError::DialbackInvalid)
        }
        Outcome::Error(error) => {
            let _ = stream.close().await;
            Err(NegotiationError::Dialback(error))
        }
    }
}

/// Waits for the answer to a dialback request: the element of the same kind from its target,
/// with the same id. Anything else the peer sends meanwhile is skipped; answers nobody asked
/// for are never taken for this one (XEP-0220 §5).
async fn await_answer(
    stream: &mut XmlStream<BoxedIo>,
    request: &Dialback,
) -> Result<Outcome, NegotiationError> {
    loop {
        let StreamItem::Element(element) = stream.next().await? else {
            return violation(stream, StreamErrorCondition::NotWellFormed, "").await;
        };
        if element.ns() != ns::DIALBACK {
            tracing::debug!(name = element.name(), "skipped while waiting for dialback");
            continue;
        }
        let answer = match Dialback::parse(&element) {
            Ok(answer) => answer,
            Err(error) => {
                stream.fail(&error).await;
                return Err(ConnectionError::Violation(error).into());
            }
        };
        // A verification is answered with its id; some servers (Prosody) put an id on the
        // answer to <db:result/> too, where none was asked.
        let same_id = request.kind == Kind::Result || answer.id == request.id;
        if answer.kind == request.kind
            && answer.from == request.to
            && answer.to == request.from
            && same_id
            && let Some(outcome) = answer.outcome
        {
            return Ok(outcome);
        }
        tracing::debug!(?answer, "skipped an unrelated dialback element");
    }
}

/// Asks the authoritative server of `originating` (to which `io` is connected) whether `key`
/// is the one it gave for the stream `stream_id` to `receiving`, one of our domains (XEP-0220
/// §2.2, on a connection of its own, closed after the answer).
pub async fn verify(
    io: BoxedIo,
    direct_tls: bool,
    receiving: &str,
    originating: &str,
    stream_id: &str,
    key: &str,
    policy: &OutboundPolicy<'_>,
) -> Result<Outcome, NegotiationError> {
    let Connected { mut stream, .. } =
        open_outbound(io, direct_tls, receiving, originating, policy).await?;
    let request = Dialback::request(
        Kind::Verify,
        receiving,
        originating,
        Some(stream_id),
        key.to_owned(),
    );
    stream.send_raw(&request.to_bytes()).await?;
    let outcome = await_answer(&mut stream, &request).await?;
    let _ = stream.close().await;
    Ok(outcome)
}

fn sasl_failure(condition: &str) -> Element {
    Element::builder("failure", ns::SASL)
        .append(Element::bare(condition, ns::SASL))
        .build()
}

/// Decodes standard base64 (RFC 4648).
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

#[cfg(test)]
mod tests;
