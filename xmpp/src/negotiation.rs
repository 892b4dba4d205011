//! Stream negotiation of server-to-server streams (RFC 6120 §4.3, §5, §6; XEP-0178).
//!
//! [`accept`] runs the receiving side of a stream a peer opened: stream headers and features,
//! STARTTLS (or TLS from the start on the XEP-0368 port), and SASL EXTERNAL, offered only when
//! the peer's certificate verified for the domain it claims. The result is a stream on which
//! that domain is authenticated.

use minidom::Element;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::connection::{ConnectionError, XmlStream};
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

/// How the peer's domain was authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    SaslExternal,
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
}

/// Why a negotiation ended without an authenticated stream.
#[derive(Debug, thiserror::Error)]
pub enum NegotiationError {
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
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

/// Reads the peer's header and answers with ours; returns our domain and the peer's claim.
async fn open_stream(
    stream: &mut XmlStream<BoxedIo>,
    policy: &InboundPolicy,
) -> Result<(String, Option<String>), NegotiationError> {
    let header = stream.read_header().await?;
    let Some(local) = header.to.clone() else {
        return violation(stream, StreamErrorCondition::HostUnknown, "no 'to' domain").await;
    };
    // Our answer names us as the domain the peer asked for (RFC 6120 §4.7.1).
    let reply = StreamHeader {
        from: Some(local.clone()),
        to: header.from.clone(),
        id: Some(random_id()),
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
        && !policy.domain_policy.permits(claimed)
    {
        return violation(
            stream,
            StreamErrorCondition::PolicyViolation,
            "this server does not federate with your domain",
        )
        .await;
    }
    Ok((local, header.from))
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

/// Connects with TLS; returns the encrypted stream and the TLS version.
async fn connect_tls(
    connector: &tokio_rustls::TlsConnector,
    name: &rustls::pki_types::ServerName<'static>,
    io: BoxedIo,
) -> Result<(BoxedIo, Option<String>), NegotiationError> {
    let tls_stream = connector
        .connect(name.clone(), io)
        .await
        .map_err(NegotiationError::Tls)?;
    let version = tls_stream
        .get_ref()
        .1
        .protocol_version()
        .map(|version| format!("{version:?}"));
    Ok((Box::new(tls_stream), version))
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
) -> Result<Authenticated, NegotiationError> {
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
        let (local, claimed) = open_stream(&mut stream, policy).await?;
        if !encrypted {
            let starttls = Element::builder("starttls", ns::TLS)
                .append(Element::bare("required", ns::TLS))
                .build();
            stream.send_element(&features(vec![starttls])).await?;
            let StreamItem::Element(element) = stream.next().await? else {
                return violation(&mut stream, StreamErrorCondition::NotWellFormed, "").await;
            };
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
        // Encrypted: offer SASL EXTERNAL when the certificate verifies for the claimed domain.
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
        stream.send_element(&features(offered)).await?;
        let peer = loop {
            let StreamItem::Element(element) = stream.next().await? else {
                return violation(&mut stream, StreamErrorCondition::NotWellFormed, "").await;
            };
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
        let (local_again, _) = open_stream(&mut stream, policy).await?;
        stream.send_element(&features(vec![])).await?;
        if !local_again.eq_ignore_ascii_case(&local) {
            return violation(
                &mut stream,
                StreamErrorCondition::InvalidNamespace,
                "the restarted stream names another domain",
            )
            .await;
        }
        tracing::info!(peer = %peer, local = %local_again, method = "SASL EXTERNAL", tls = ?tls_version, "inbound stream authenticated");
        return Ok(Authenticated {
            stream,
            peer,
            local: local_again,
            method: AuthMethod::SaslExternal,
            tls_version,
        });
    }
}

/// Runs the initiating side of a stream to `remote` as `local`: STARTTLS (unless `direct_tls`
/// already encrypted the connection on the XEP-0368 port), then SASL EXTERNAL with our
/// certificate. The remote server must offer EXTERNAL; dialback is not spoken yet.
pub async fn connect(
    io: BoxedIo,
    direct_tls: bool,
    local: &str,
    remote: &str,
    tls: &TlsSettings,
    limits: Limits,
) -> Result<Authenticated, NegotiationError> {
    let connector = tls.connector(local, direct_tls).ok_or_else(|| {
        NegotiationError::Tls(std::io::Error::other(format!("no certificate for {local}")))
    })?;
    let name = rustls::pki_types::ServerName::try_from(remote.to_owned())
        .map_err(|e| NegotiationError::Tls(std::io::Error::other(e)))?;
    let mut tls_version = None;
    let mut stream = if direct_tls {
        let (io, version) = connect_tls(&connector, &name, io).await?;
        tls_version = version;
        XmlStream::new(io, limits)
    } else {
        XmlStream::new(io, limits)
    };
    let header = StreamHeader {
        from: Some(local.to_owned()),
        to: Some(remote.to_owned()),
        version: Some("1.0".to_owned()),
        lang: Some("en".to_owned()),
        id: None,
    };
    let mut encrypted = direct_tls;
    let mut authenticated = false;
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
        let StreamItem::Element(features) = stream.next().await? else {
            return violation(&mut stream, StreamErrorCondition::NotWellFormed, "").await;
        };
        if !features.is("features", ns::STREAM) {
            return violation(
                &mut stream,
                StreamErrorCondition::UnsupportedStanzaType,
                "expected stream features",
            )
            .await;
        }
        if authenticated {
            tracing::info!(peer = %remote, local = %local, method = "SASL EXTERNAL", tls = ?tls_version, "outbound stream authenticated");
            return Ok(Authenticated {
                stream,
                peer: remote.to_owned(),
                local: local.to_owned(),
                method: AuthMethod::SaslExternal,
                tls_version,
            });
        }
        if !encrypted {
            if !features.has_child("starttls", ns::TLS) {
                return violation(
                    &mut stream,
                    StreamErrorCondition::PolicyViolation,
                    "TLS is required",
                )
                .await;
            }
            stream
                .send_element(&Element::bare("starttls", ns::TLS))
                .await?;
            let StreamItem::Element(answer) = stream.next().await? else {
                return violation(&mut stream, StreamErrorCondition::NotWellFormed, "").await;
            };
            if !answer.is("proceed", ns::TLS) {
                return Err(ConnectionError::PeerError("starttls failure".to_owned()).into());
            }
            let (io, version) = connect_tls(&connector, &name, stream.into_inner()).await?;
            tls_version = version;
            stream = XmlStream::new(io, limits);
            encrypted = true;
            continue;
        }
        let external = features
            .get_child("mechanisms", ns::SASL)
            .is_some_and(|mechanisms| {
                mechanisms
                    .children()
                    .any(|mechanism| mechanism.text().trim() == "EXTERNAL")
            });
        if !external {
            return violation(
                &mut stream,
                StreamErrorCondition::PolicyViolation,
                "the peer does not accept our certificate",
            )
            .await;
        }
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
            return violation(&mut stream, StreamErrorCondition::NotWellFormed, "").await;
        };
        if !answer.is("success", ns::SASL) {
            let condition = answer
                .children()
                .next()
                .map(|child| child.name().to_owned())
                .unwrap_or_else(|| "failure".to_owned());
            let _ = stream.close().await;
            return Err(ConnectionError::PeerError(format!("SASL {condition}")).into());
        }
        stream.reset();
        authenticated = true;
    }
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
