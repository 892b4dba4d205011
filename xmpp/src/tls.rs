//! TLS between servers (RFC 6120 §5, XEP-0368, XEP-0178): our certificate chosen by the domain
//! the peer asks for, the peer's certificate requested and checked after the handshake against
//! the system roots plus configured CAs for the domain it claims.
//!
//! Both handshakes accept any peer certificate (its signature over the handshake is still
//! verified), so that a peer whose certificate does not verify can fall back to dialback; whether
//! the certificate authenticates a domain is decided afterwards, by [`TlsSettings::verifies`] for
//! a peer that connected to us and [`TlsSettings::verifies_server`] for one we connected to.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ParsedCertificate, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

/// The ALPN protocol of XEP-0368 direct TLS between servers.
pub const ALPN_XMPP_SERVER: &[u8] = b"xmpp-server";

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("TLS: {0}")]
    Verifier(String),
    #[error("no certificate is configured")]
    NoCertificate,
}

/// A certificate chain and its key, for the domains it names.
pub struct Identity {
    pub domains: Vec<String>,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

/// The TLS configuration of the server-to-server side.
pub struct TlsSettings {
    provider: Arc<CryptoProvider>,
    roots: Arc<RootCertStore>,
    server: Arc<rustls::ServerConfig>,
    /// Client configurations by the domain we connect from: for STARTTLS, and for direct TLS
    /// with the ALPN protocol of XEP-0368.
    clients: HashMap<String, (Arc<rustls::ClientConfig>, Arc<rustls::ClientConfig>)>,
}

impl TlsSettings {
    /// Builds the configuration from our identities and the CAs that verify peers: the system
    /// roots when `system_roots`, plus `extra_roots`.
    pub fn new(
        identities: Vec<Identity>,
        extra_roots: Vec<CertificateDer<'static>>,
        system_roots: bool,
    ) -> Result<TlsSettings, TlsError> {
        let provider = causeway_net::tls::provider();
        let roots = Arc::new(causeway_net::tls::root_store(system_roots, extra_roots)?);
        let mut by_domain = HashMap::new();
        let mut clients = HashMap::new();
        let verifier = Arc::new(AnyCertificate {
            algorithms: provider.signature_verification_algorithms,
        });
        let mut default = None;
        for identity in identities {
            let key = Arc::new(CertifiedKey::from_der(
                identity.chain.clone(),
                identity.key.clone_key(),
                &provider,
            )?);
            default.get_or_insert_with(|| key.clone());
            let client = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()?
                .dangerous()
                .with_custom_certificate_verifier(verifier.clone())
                .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())?;
            let mut direct = client.clone();
            direct.alpn_protocols = vec![ALPN_XMPP_SERVER.to_vec()];
            let client = (Arc::new(client), Arc::new(direct));
            for domain in identity.domains {
                let domain = domain.to_ascii_lowercase();
                by_domain.insert(domain.clone(), key.clone());
                clients.insert(domain, client.clone());
            }
        }
        let default = default.ok_or(TlsError::NoCertificate)?;
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(ByDomain { by_domain, default }));
        server.alpn_protocols = vec![ALPN_XMPP_SERVER.to_vec()];
        Ok(TlsSettings {
            provider,
            roots,
            server: Arc::new(server),
            clients,
        })
    }

    /// Accepts TLS from a peer (after STARTTLS, or at once on the direct TLS port).
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.server.clone())
    }

    /// Connects with TLS as `local_domain`, presenting its certificate. `direct` adds the ALPN
    /// protocol of XEP-0368. The server's certificate is checked afterwards with
    /// [`TlsSettings::verifies_server`].
    pub fn connector(
        &self,
        local_domain: &str,
        direct: bool,
    ) -> Option<tokio_rustls::TlsConnector> {
        let (starttls, direct_tls) = self.clients.get(&local_domain.to_ascii_lowercase())?;
        let config = if direct { direct_tls } else { starttls };
        Some(tokio_rustls::TlsConnector::from(config.clone()))
    }

    /// Whether a peer's certificate chain verifies against our roots and names `domain`. A
    /// server certificate (extended key usage `serverAuth` only) counts as well as a client
    /// one: public CAs no longer issue `clientAuth`, and Prosody and ejabberd accept it too.
    pub fn verifies(&self, chain: &[CertificateDer<'_>], domain: &str) -> bool {
        self.verifies_server(chain, domain) || self.verifies_client(chain, domain)
    }

    /// Whether the chain verifies as a client certificate (`clientAuth`) naming `domain`.
    fn verifies_client(&self, chain: &[CertificateDer<'_>], domain: &str) -> bool {
        let Some((end_entity, intermediates)) = chain.split_first() else {
            return false;
        };
        let Ok(strict) =
            WebPkiClientVerifier::builder_with_provider(self.roots.clone(), self.provider.clone())
                .build()
        else {
            return false;
        };
        if strict
            .verify_client_cert(end_entity, intermediates, UnixTime::now())
            .is_err()
        {
            return false;
        }
        let Ok(name) = ServerName::try_from(domain.to_owned()) else {
            return false;
        };
        match ParsedCertificate::try_from(end_entity)
            .and_then(|parsed| rustls::client::verify_server_name(&parsed, &name))
        {
            Ok(()) => true,
            Err(error) if names_another(&error) => has_xmpp_name(end_entity, domain),
            Err(_) => false,
        }
    }
}

/// Whether a verification failed only because the certificate has no DNS name of the domain.
fn names_another(error: &rustls::Error) -> bool {
    matches!(
        error,
        rustls::Error::InvalidCertificate(
            rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. }
        )
    )
}

/// `id-on-xmppAddr` (RFC 6120 §13.7.1.4): an XMPP address, for a server its domain.
const ID_ON_XMPP_ADDR: &str = "1.3.6.1.5.5.7.8.5";
/// `id-on-dnsSRV` (RFC 4985): an SRV-ID, `_service.domain`.
const ID_ON_DNS_SRV: &str = "1.3.6.1.5.5.7.8.7";
/// The services whose SRV-IDs name an XMPP server (RFC 7590; XEP-0368 for direct TLS).
const SERVER_SERVICES: [&str; 2] = ["_xmpp-server.", "_xmpps-server."];

/// Whether a certificate (whose chain verified) names `domain` by an `XmppAddr` or an `SRV-ID`
/// of an XMPP server (RFC 6125 §6, RFC 7590 §3.2). Neither may hold a wildcard.
fn has_xmpp_name(end_entity: &CertificateDer<'_>, domain: &str) -> bool {
    use x509_parser::extensions::GeneralName;
    use x509_parser::prelude::FromDer;
    let Ok((_, certificate)) = x509_parser::certificate::X509Certificate::from_der(end_entity)
    else {
        return false;
    };
    let Ok(Some(names)) = certificate.subject_alternative_name() else {
        return false;
    };
    names.value.general_names.iter().any(|name| {
        let GeneralName::OtherName(oid, value) = name else {
            return false;
        };
        let Some(text) = other_name_text(value) else {
            return false;
        };
        match oid.to_id_string().as_str() {
            ID_ON_XMPP_ADDR => text.eq_ignore_ascii_case(domain),
            ID_ON_DNS_SRV => SERVER_SERVICES.iter().any(|service| {
                text.len() == service.len() + domain.len()
                    && text.is_char_boundary(service.len())
                    && text[..service.len()].eq_ignore_ascii_case(service)
                    && text[service.len()..].eq_ignore_ascii_case(domain)
            }),
            _ => false,
        }
    })
}

/// The text of an `otherName` value: `[0] EXPLICIT` around a UTF8String (XmppAddr) or an
/// IA5String (SRV-ID).
fn other_name_text(value: &[u8]) -> Option<&str> {
    use x509_parser::der_parser::asn1_rs::{Any, Class, FromDer, Tag};
    let (_, explicit) = Any::from_der(value).ok()?;
    if explicit.class() != Class::ContextSpecific || explicit.tag() != Tag(0) {
        return None;
    }
    let (_, inner) = Any::from_der(explicit.data).ok()?;
    if inner.class() != Class::Universal
        || !(inner.tag() == Tag::Utf8String || inner.tag() == Tag::Ia5String)
    {
        return None;
    }
    std::str::from_utf8(inner.data).ok()
}

impl TlsSettings {
    /// Whether the certificate chain of a server we connected to verifies against our roots
    /// for `domain`.
    pub fn verifies_server(&self, chain: &[CertificateDer<'_>], domain: &str) -> bool {
        use rustls::client::danger::ServerCertVerifier as _;
        let Some((end_entity, intermediates)) = chain.split_first() else {
            return false;
        };
        let Ok(name) = ServerName::try_from(domain.to_owned()) else {
            return false;
        };
        let Ok(strict) = rustls::client::WebPkiServerVerifier::builder_with_provider(
            self.roots.clone(),
            self.provider.clone(),
        )
        .build() else {
            return false;
        };
        match strict.verify_server_cert(end_entity, intermediates, &name, &[], UnixTime::now()) {
            Ok(_) => true,
            // The chain verified; the domain may be named as XMPP names it.
            Err(error) if names_another(&error) => has_xmpp_name(end_entity, domain),
            Err(_) => false,
        }
    }
}

/// Chooses our certificate by the name the peer asked for; peers that send no name (Prosody
/// does not) get the first certificate.
#[derive(Debug)]
struct ByDomain {
    by_domain: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl ResolvesServerCert for ByDomain {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            hello
                .server_name()
                .and_then(|name| self.by_domain.get(name))
                .unwrap_or(&self.default)
                .clone(),
        )
    }
}

/// Accepts any peer certificate whose handshake signature is right, as client certificate
/// (requested, not required) and as server certificate, and leaves the decision about the
/// chain to [`TlsSettings::verifies`] and [`TlsSettings::verifies_server`].
#[derive(Debug)]
struct AnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl AnyCertificate {
    fn tls12(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }
}

impl ClientCertVerifier for AnyCertificate {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestCa;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    /// Runs a handshake from `client` (as `client_domain`) to `server`, returning the chain the
    /// server saw and the ALPN protocol.
    async fn handshake(
        server: &TlsSettings,
        client: &TlsSettings,
        client_domain: &str,
        sni: &str,
        direct: bool,
    ) -> (Option<Vec<CertificateDer<'static>>>, Option<Vec<u8>>) {
        let (a, b) = duplex(64 * 1024);
        let connector = client.connector(client_domain, direct).unwrap();
        let name = ServerName::try_from(sni.to_owned()).unwrap();
        let client_side = tokio::spawn(async move {
            let mut tls = connector.connect(name, a).await.unwrap();
            tls.write_all(b"ping").await.unwrap();
            tls.flush().await.unwrap();
            let mut buf = [0; 4];
            tls.read_exact(&mut buf).await.unwrap();
            buf
        });
        let mut tls = server.acceptor().accept(b).await.unwrap();
        let mut buf = [0; 4];
        tls.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        tls.write_all(b"pong").await.unwrap();
        tls.flush().await.unwrap();
        assert_eq!(&client_side.await.unwrap(), b"pong");
        let (_, connection) = tls.get_ref();
        (
            connection.peer_certificates().map(|chain| chain.to_vec()),
            connection.alpn_protocol().map(<[u8]>::to_vec),
        )
    }

    /// A peer's certificate with `serverAuth` alone (as public CAs issue them now) or
    /// `clientAuth` alone authenticates its domain; one for another usage does not.
    #[test]
    fn server_certificates_authenticate_peers_too() {
        use crate::testing::ExtendedKeyUsagePurpose as Usage;
        let ca = TestCa::new("Test CA");
        let gateway =
            TlsSettings::new(vec![ca.identity(&["gw.test"])], vec![ca.root()], false).unwrap();
        for (usages, accepted) in [
            (vec![Usage::ServerAuth], true),
            (vec![Usage::ClientAuth], true),
            (vec![Usage::ServerAuth, Usage::ClientAuth], true),
            (vec![Usage::CodeSigning], false),
        ] {
            let leaf = ca.leaf_with_usages(&["prosody.test"], usages.clone());
            assert_eq!(
                gateway.verifies(&leaf.identity.chain, "prosody.test"),
                accepted,
                "{usages:?}"
            );
            assert!(!gateway.verifies(&leaf.identity.chain, "other.test"));
        }
    }

    /// RFC 7590: a certificate may name an XMPP server by an `XmppAddr` or an `SRV-ID` instead
    /// of a DNS name; both are understood, for the domain they name and no other.
    #[test]
    fn xmpp_names_in_certificates() {
        let ca = TestCa::new("Test CA");
        let gateway =
            TlsSettings::new(vec![ca.identity(&["gw.test"])], vec![ca.root()], false).unwrap();
        let xmpp_addr = ca.leaf_with_xmpp_names(&["prosody.test"], &[]);
        let srv_id = ca.leaf_with_xmpp_names(&[], &["_xmpp-server.Prosody.test"]);
        let direct = ca.leaf_with_xmpp_names(&[], &["_xmpps-server.prosody.test"]);
        for leaf in [&xmpp_addr, &srv_id, &direct] {
            let chain = &leaf.identity.chain;
            assert!(gateway.verifies(chain, "prosody.test"));
            assert!(gateway.verifies_server(chain, "prosody.test"));
            assert!(!gateway.verifies(chain, "other.test"));
            assert!(!gateway.verifies(chain, "test"));
            assert!(!gateway.verifies_server(chain, "sub.prosody.test"));
        }
        // An SRV-ID of another service names no XMPP server; wildcards are not names here.
        for (addrs, srv) in [
            (&[][..], &["_xmpp-client.prosody.test"][..]),
            (&[][..], &["_imap.prosody.test"][..]),
            (&["*.test"][..], &[][..]),
            (&[][..], &["_xmpp-server.*.test"][..]),
        ] {
            let leaf = ca.leaf_with_xmpp_names(addrs, srv);
            assert!(
                !gateway.verifies(&leaf.identity.chain, "prosody.test"),
                "{addrs:?} {srv:?}"
            );
        }
        // The names of a certificate from a CA we do not trust count for nothing.
        let stranger = TestCa::new("Stranger CA").leaf_with_xmpp_names(&["prosody.test"], &[]);
        assert!(!gateway.verifies(&stranger.identity.chain, "prosody.test"));
        assert!(!gateway.verifies_server(&stranger.identity.chain, "prosody.test"));
    }

    #[tokio::test]
    async fn mutual_certificates_verify_for_the_right_domain_only() {
        let ca = TestCa::new("Test CA");
        let gateway_identity = ca.identity(&["gw.test", "muc.gw.test"]);
        let gateway_identity_chain = gateway_identity.chain[0].clone();
        let gateway = TlsSettings::new(vec![gateway_identity], vec![ca.root()], false).unwrap();
        let prosody =
            TlsSettings::new(vec![ca.identity(&["prosody.test"])], vec![ca.root()], false).unwrap();
        let (chain, alpn) = handshake(&gateway, &prosody, "prosody.test", "gw.test", false).await;
        let chain = chain.expect("a client certificate");
        assert!(gateway.verifies(&chain, "prosody.test"));
        assert!(!gateway.verifies(&chain, "gw.test"));
        assert!(!gateway.verifies(&chain, "evil.test"));
        assert_eq!(alpn, None);
        // The server's certificate, as the connecting side checks it.
        let server_chain = vec![gateway_identity_chain.clone()];
        assert!(prosody.verifies_server(&server_chain, "gw.test"));
        assert!(prosody.verifies_server(&server_chain, "muc.gw.test"));
        assert!(!prosody.verifies_server(&server_chain, "prosody.test"));
        assert!(!prosody.verifies_server(&[], "gw.test"));
        // Direct TLS negotiates the xmpp-server protocol.
        let (_, alpn) = handshake(&gateway, &prosody, "prosody.test", "muc.gw.test", true).await;
        assert_eq!(alpn.as_deref(), Some(ALPN_XMPP_SERVER));
    }

    #[tokio::test]
    async fn a_certificate_of_an_unknown_ca_connects_but_does_not_verify() {
        let ours = TestCa::new("Our CA");
        let theirs = TestCa::new("Their CA");
        let gateway =
            TlsSettings::new(vec![ours.identity(&["gw.test"])], vec![ours.root()], false).unwrap();
        // The stranger trusts our CA (to verify us) but its own certificate is from another CA.
        let stranger = TlsSettings::new(
            vec![theirs.identity(&["stranger.test"])],
            vec![ours.root()],
            false,
        )
        .unwrap();
        let (chain, _) = handshake(&gateway, &stranger, "stranger.test", "gw.test", false).await;
        let chain = chain.expect("a client certificate");
        assert!(!gateway.verifies(&chain, "stranger.test"));
        assert!(!gateway.verifies(&[], "stranger.test"));
        assert!(!gateway.verifies_server(&chain, "stranger.test"));
    }

    #[test]
    fn a_configuration_needs_a_certificate() {
        assert!(matches!(
            TlsSettings::new(vec![], vec![], false),
            Err(TlsError::NoCertificate)
        ));
    }
}
