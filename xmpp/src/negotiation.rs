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
    let mut peer_chain: Option<Vec<rustls::pki_types::CertificateDer<'static>>> = None;
    let mut tls_version = None;
    let (io, mut encrypted) = if direct_tls {
        let tls_stream = tls
            .acceptor()
            .accept(io)
            .await
            .map_err(NegotiationError::Tls)?;
        let (_, connection) = tls_stream.get_ref();
        peer_chain = connection.peer_certificates().map(|chain| chain.to_vec());
        tls_version = connection
            .protocol_version()
            .map(|version| format!("{version:?}"));
        let boxed: BoxedIo = Box::new(tls_stream);
        (boxed, true)
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
            let io = stream.into_inner();
            let tls_stream = tls
                .acceptor()
                .accept(io)
                .await
                .map_err(NegotiationError::Tls)?;
            let (_, connection) = tls_stream.get_ref();
            peer_chain = connection.peer_certificates().map(|chain| chain.to_vec());
            tls_version = connection
                .protocol_version()
                .map(|version| format!("{version:?}"));
            let boxed: BoxedIo = Box::new(tls_stream);
            stream = XmlStream::new(boxed, policy.limits);
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
        let tls_stream = connector
            .connect(name.clone(), io)
            .await
            .map_err(NegotiationError::Tls)?;
        tls_version = tls_stream
            .get_ref()
            .1
            .protocol_version()
            .map(|version| format!("{version:?}"));
        let boxed: BoxedIo = Box::new(tls_stream);
        XmlStream::new(boxed, limits)
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
            let io = stream.into_inner();
            let tls_stream = connector
                .connect(name.clone(), io)
                .await
                .map_err(NegotiationError::Tls)?;
            tls_version = tls_stream
                .get_ref()
                .1
                .protocol_version()
                .map(|version| format!("{version:?}"));
            let boxed: BoxedIo = Box::new(tls_stream);
            stream = XmlStream::new(boxed, limits);
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
mod tests {
    use super::*;
    use crate::tls::testing::TestCa;
    use rustls::pki_types::ServerName;
    use tokio::io::duplex;

    struct World {
        gateway: TlsSettings,
        prosody: TlsSettings,
        policy: InboundPolicy,
    }

    fn world() -> World {
        let ca = TestCa::new("Test CA");
        World {
            gateway: TlsSettings::new(
                vec![ca.identity(&["gw.test", "muc.gw.test"])],
                vec![ca.root()],
                false,
            )
            .unwrap(),
            prosody: TlsSettings::new(vec![ca.identity(&["prosody.test"])], vec![ca.root()], false)
                .unwrap(),
            policy: InboundPolicy {
                domains: vec!["gw.test".into(), "muc.gw.test".into()],
                require_tls: true,
                limits: Limits::default(),
                domain_policy: DomainPolicy::default(),
            },
        }
    }

    fn header(from: &str, to: &str) -> StreamHeader {
        StreamHeader {
            from: Some(from.into()),
            to: Some(to.into()),
            version: Some("1.0".into()),
            ..StreamHeader::default()
        }
    }

    async fn element(stream: &mut XmlStream<BoxedIo>) -> Element {
        match stream.next().await {
            Ok(StreamItem::Element(element)) => element,
            other => panic!("expected an element, got {other:?}"),
        }
    }

    /// What a peer like Prosody does: STARTTLS with its certificate, then SASL EXTERNAL.
    /// `claim` is the domain it says it is; `authzid` what it puts in <auth/>.
    async fn peer(
        io: tokio::io::DuplexStream,
        tls: TlsSettings,
        claim: &str,
        authzid: &str,
        direct: bool,
    ) -> Result<XmlStream<BoxedIo>, String> {
        let connector = tls.connector("prosody.test", direct).unwrap();
        let name = ServerName::try_from("gw.test").unwrap();
        let mut stream: XmlStream<BoxedIo> = if direct {
            let tls = connector
                .connect(name.clone(), io)
                .await
                .map_err(|e| e.to_string())?;
            XmlStream::new(Box::new(tls), Limits::default())
        } else {
            XmlStream::new(Box::new(io), Limits::default())
        };
        if !direct {
            stream
                .send_header(&header(claim, "gw.test"), true)
                .await
                .unwrap();
            stream.read_header().await.map_err(|e| e.to_string())?;
            let features = element(&mut stream).await;
            assert!(features.has_child("starttls", ns::TLS), "{features:?}");
            stream
                .send_element(&Element::bare("starttls", ns::TLS))
                .await
                .unwrap();
            assert!(element(&mut stream).await.is("proceed", ns::TLS));
            let io = stream.into_inner();
            let tls = connector
                .connect(name, io)
                .await
                .map_err(|e| e.to_string())?;
            stream = XmlStream::new(Box::new(tls), Limits::default());
        }
        stream
            .send_header(&header(claim, "gw.test"), true)
            .await
            .unwrap();
        stream.read_header().await.map_err(|e| e.to_string())?;
        let features = element(&mut stream).await;
        let offered = features
            .get_child("mechanisms", ns::SASL)
            .is_some_and(|m| m.children().any(|c| c.text() == "EXTERNAL"));
        use base64::Engine;
        // "=" is sent as it is: an empty authorization identity (RFC 6120 §6.4.2).
        let encoded = if authzid == "=" {
            authzid.to_owned()
        } else {
            base64::engine::general_purpose::STANDARD.encode(authzid)
        };
        stream
            .send_element(
                &Element::builder("auth", ns::SASL)
                    .attr(rxml::xml_ncname!("mechanism").to_owned(), "EXTERNAL")
                    .append(encoded.as_str())
                    .build(),
            )
            .await
            .unwrap();
        let answer = element(&mut stream).await;
        if !answer.is("success", ns::SASL) {
            let condition = answer
                .children()
                .next()
                .map(|c| c.name().to_owned())
                .unwrap_or_default();
            return Err(format!("offered={offered} failure={condition}"));
        }
        stream.reset();
        stream
            .send_header(&header(claim, "gw.test"), true)
            .await
            .unwrap();
        stream.read_header().await.map_err(|e| e.to_string())?;
        let features = element(&mut stream).await;
        assert!(features.is("features", ns::STREAM));
        Ok(stream)
    }

    #[tokio::test]
    async fn starttls_then_sasl_external() {
        let World {
            gateway,
            prosody,
            policy,
        } = world();
        let (ours, theirs) = duplex(64 * 1024);
        let peer = tokio::spawn(async move {
            let mut stream = peer(theirs, prosody, "prosody.test", "prosody.test", false)
                .await
                .unwrap();
            stream
                .send_element(
                    &"<message xmlns='jabber:server' from='bob@prosody.test' to='alice@gw.test'><body>hi</body></message>"
                        .parse()
                        .unwrap(),
                )
                .await
                .unwrap();
            stream
        });
        let mut authenticated = accept(Box::new(ours), false, &gateway, &policy)
            .await
            .unwrap();
        assert_eq!(authenticated.peer, "prosody.test");
        assert_eq!(authenticated.local, "gw.test");
        assert_eq!(authenticated.method, AuthMethod::SaslExternal);
        assert!(authenticated.tls_version.is_some());
        let message = element(&mut authenticated.stream).await;
        assert!(message.is("message", ns::JABBER_SERVER));
        drop(peer.await.unwrap());
    }

    #[tokio::test]
    async fn direct_tls_with_the_empty_authorization_identity() {
        let World {
            gateway,
            prosody,
            policy,
        } = world();
        let (ours, theirs) = duplex(64 * 1024);
        let peer = tokio::spawn(peer(theirs, prosody, "prosody.test", "=", true));
        let authenticated = accept(Box::new(ours), true, &gateway, &policy)
            .await
            .unwrap();
        assert_eq!(authenticated.peer, "prosody.test");
        assert!(peer.await.unwrap().is_ok());
    }

    #[tokio::test]
    async fn a_certificate_for_another_domain_gets_no_external() {
        let World {
            gateway,
            prosody,
            policy,
        } = world();
        let (ours, theirs) = duplex(64 * 1024);
        let peer = tokio::spawn(peer(theirs, prosody, "evil.test", "evil.test", false));
        let server = tokio::spawn(async move {
            accept(Box::new(ours), false, &gateway, &policy)
                .await
                .map(|a| a.peer)
        });
        let result = peer.await.unwrap();
        assert_eq!(
            result.err().as_deref(),
            Some("offered=false failure=invalid-mechanism")
        );
        server.abort();
    }

    #[tokio::test]
    async fn a_mismatched_authorization_identity_fails() {
        let World {
            gateway,
            prosody,
            policy,
        } = world();
        let (ours, theirs) = duplex(64 * 1024);
        let peer = tokio::spawn(peer(theirs, prosody, "prosody.test", "other.test", false));
        let server = tokio::spawn(async move {
            accept(Box::new(ours), false, &gateway, &policy)
                .await
                .map(|a| a.peer)
        });
        let result = peer.await.unwrap();
        assert_eq!(
            result.err().as_deref(),
            Some("offered=true failure=invalid-authzid")
        );
        server.abort();
    }

    #[tokio::test]
    async fn our_initiating_side_against_our_receiving_side() {
        let World {
            gateway,
            prosody,
            policy,
        } = world();
        for direct in [false, true] {
            let (ours, theirs) = duplex(64 * 1024);
            // Here "prosody.test" is played by Causeway's initiating side.
            let initiating = prosody_as_causeway(&prosody, theirs, direct);
            let receiving = accept(Box::new(ours), direct, &gateway, &policy);
            let (outbound, inbound) = tokio::join!(initiating, receiving);
            let mut outbound = outbound.unwrap();
            let mut inbound = inbound.unwrap();
            assert_eq!(
                (outbound.peer.as_str(), inbound.peer.as_str()),
                ("gw.test", "prosody.test")
            );
            outbound
                .stream
                .send_element(
                    &"<presence xmlns='jabber:server' from='a@prosody.test' to='b@gw.test'/>"
                        .parse()
                        .unwrap(),
                )
                .await
                .unwrap();
            assert!(
                element(&mut inbound.stream)
                    .await
                    .is("presence", ns::JABBER_SERVER)
            );
        }
    }

    async fn prosody_as_causeway(
        tls: &TlsSettings,
        io: tokio::io::DuplexStream,
        direct: bool,
    ) -> Result<Authenticated, NegotiationError> {
        connect(
            Box::new(io),
            direct,
            "prosody.test",
            "gw.test",
            tls,
            Limits::default(),
        )
        .await
    }

    #[tokio::test]
    async fn the_initiating_side_refuses_an_untrusted_peer() {
        // Two worlds, two CAs: neither side trusts the other's certificate.
        let World { prosody, .. } = world();
        let World {
            gateway, policy, ..
        } = world();
        let (ours, theirs) = duplex(64 * 1024);
        let receiving = tokio::spawn(async move {
            accept(Box::new(ours), false, &gateway, &policy)
                .await
                .map(|a| a.peer)
        });
        let result = prosody_as_causeway(&prosody, theirs, false).await;
        assert!(result.is_err());
        let _ = receiving.await;
    }

    async fn refused(first: &[u8], policy: InboundPolicy, gateway: TlsSettings) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (ours, mut theirs) = duplex(64 * 1024);
        let server =
            tokio::spawn(
                async move { accept(Box::new(ours), false, &gateway, &policy).await.err() },
            );
        theirs.write_all(first).await.unwrap();
        let mut reply = Vec::new();
        theirs.read_to_end(&mut reply).await.unwrap();
        assert!(server.await.unwrap().is_some());
        String::from_utf8(reply).unwrap()
    }

    #[tokio::test]
    async fn unknown_hosts_old_versions_and_skipping_tls_are_refused() {
        let open = |to: &str, version: &str| {
            format!(
                "<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' \
                 from='prosody.test' to='{to}' version='{version}'>"
            )
        };
        let World {
            gateway, policy, ..
        } = world();
        let reply = refused(
            open("other.test", "1.0").as_bytes(),
            policy.clone(),
            gateway,
        )
        .await;
        assert!(reply.contains("host-unknown"), "{reply}");
        assert!(
            reply.contains("from='other.test'"),
            "the error stream names the asked domain: {reply}"
        );
        let World {
            gateway, policy, ..
        } = world();
        let reply = refused(open("gw.test", "0.9").as_bytes(), policy.clone(), gateway).await;
        assert!(reply.contains("unsupported-version"), "{reply}");
        let World {
            gateway, policy, ..
        } = world();
        let mut input = open("gw.test", "1.0").into_bytes();
        input.extend_from_slice(b"<message from='bob@prosody.test' to='alice@gw.test'/>");
        let reply = refused(&input, policy, gateway).await;
        assert!(reply.contains("policy-violation"), "{reply}");
    }
}
