//! Certificates for tests and benchmarks: a CA and leaves for test domains, usable as server and
//! client certificates; and the policy of a test peer. Built for this crate's tests, and for
//! other crates' tests and the benchmarks with the `testing` feature.

pub use rcgen::ExtendedKeyUsagePurpose;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};

use crate::dialback::Secret;
use crate::negotiation::OutboundPolicy;
use crate::stream::Limits;
use crate::tls::{Identity, TlsSettings};

/// A leaf certificate: for rustls, and as PEM files for other servers.
pub struct Leaf {
    pub identity: Identity,
    pub cert_pem: String,
    pub key_pem: String,
}

/// A DER element with a definite length.
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    match content.len() {
        len @ 0..0x80 => out.push(len as u8),
        len @ 0x80..0x100 => out.extend([0x81, len as u8]),
        len => out.extend([0x82, (len >> 8) as u8, len as u8]),
    }
    out.extend_from_slice(content);
    out
}

/// A certificate authority for test domains.
pub struct TestCa {
    pub cert: rcgen::Certificate,
    key: KeyPair,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("CA certificate");
        TestCa { cert, key }
    }

    pub fn root(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    pub fn root_pem(&self) -> String {
        self.cert.pem()
    }

    /// A leaf for `domains`, with both TLS usages (servers present theirs as client
    /// certificates too).
    pub fn leaf(&self, domains: &[&str]) -> Leaf {
        self.leaf_with_usages(
            domains,
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        )
    }

    /// A leaf for `domains` with these extended key usages only (public CAs now issue
    /// server certificates with `serverAuth` alone).
    pub fn leaf_with_usages(&self, domains: &[&str], usages: Vec<ExtendedKeyUsagePurpose>) -> Leaf {
        let names: Vec<String> = domains.iter().map(|d| (*d).to_owned()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, domains[0]);
        params.extended_key_usages = usages;
        self.sign(params, names)
    }

    /// A leaf whose names are not DNS names but XMPP ones (RFC 7590): `XmppAddr` names and
    /// `SRV-ID`s (such as `_xmpp-server.example.org`), as some XMPP CAs issue them.
    pub fn leaf_with_xmpp_names(&self, xmpp_addrs: &[&str], srv_ids: &[&str]) -> Leaf {
        let mut names = Vec::new();
        for (oid_last, tag, values) in [(5u8, 0x0c, xmpp_addrs), (7u8, 0x16, srv_ids)] {
            for value in values {
                let oid = der(0x06, &[0x2b, 6, 1, 5, 5, 7, 8, oid_last]);
                let inner = der(0xa0, &der(tag, value.as_bytes()));
                names.extend(der(0xa0, &[oid, inner].concat()));
            }
        }
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, "XMPP names only");
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params
            .custom_extensions
            .push(rcgen::CustomExtension::from_oid_content(
                &[2, 5, 29, 17],
                der(0x30, &names),
            ));
        self.sign(params, vec![])
    }

    fn sign(&self, mut params: CertificateParams, domains: Vec<String>) -> Leaf {
        let key = KeyPair::generate().expect("key");
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("leaf certificate");
        Leaf {
            identity: Identity {
                domains,
                chain: vec![cert.der().clone()],
                key: PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
            },
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// The identity of a leaf for `domains`.
    pub fn identity(&self, domains: &[&str]) -> Identity {
        self.leaf(domains).identity
    }
}

/// How a test peer connects: TLS required, dialback allowed.
pub fn dialback_policy<'a>(tls: &'a TlsSettings, secret: &'a Secret) -> OutboundPolicy<'a> {
    OutboundPolicy {
        tls,
        require_tls: true,
        dialback: true,
        secret,
        limits: Limits::default(),
    }
}

/// Reads what a server wrote on a stream the way servers that care about prefixes do (ejabberd
/// among them): names as written, no namespace resolution. `bytes` may hold several streams
/// one after the other (restarts after STARTTLS and SASL). Returns the qualified names of the
/// first-level elements in order, or why a strict reader would not recognise them: the stream
/// must be `<stream:stream>` declaring `xmlns:stream` (and `xmlns:db`), streams-namespace elements
/// must be written `<stream:…>`, dialback elements `<db:…>`, and every other first-level element
/// must declare its namespace on itself (`xmlns='…'`).
pub fn strict_first_level_names(bytes: &[u8]) -> Result<Vec<String>, String> {
    use rxml::{Parse, RawEvent, RawParser};

    let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
    let mut names = Vec::new();
    let mut documents: Vec<&str> = text.split("<?xml").collect();
    if documents
        .first()
        .is_some_and(|first| first.trim().is_empty())
    {
        documents.remove(0);
    }
    for document in documents {
        let document = format!("<?xml{document}");
        let mut parser = RawParser::new();
        let mut input = document.as_bytes();
        let mut depth = 0usize;
        // The qualified name and attributes of the element whose head is being read.
        let mut head: Option<(String, Vec<(String, String)>)> = None;
        loop {
            let event = match parser.parse(&mut input, false) {
                Ok(Some(event)) => event,
                Ok(None) | Err(rxml::error::EndOrError::NeedMoreData) => break,
                Err(rxml::error::EndOrError::Error(error)) => return Err(error.to_string()),
            };
            match event {
                RawEvent::ElementHeadOpen(_, (prefix, local)) => {
                    let name = match prefix {
                        Some(prefix) => format!("{prefix}:{local}"),
                        None => local.to_string(),
                    };
                    head = Some((name, Vec::new()));
                }
                RawEvent::Attribute(_, (prefix, local), value) => {
                    let name = match prefix {
                        Some(prefix) => format!("{prefix}:{local}"),
                        None => local.to_string(),
                    };
                    if let Some((_, attributes)) = head.as_mut() {
                        attributes.push((name, value.to_string()));
                    }
                }
                RawEvent::ElementHeadClose(_) => {
                    let Some((name, attributes)) = head.take() else {
                        return Err("an element head closed that never opened".into());
                    };
                    let attribute = |key: &str| {
                        attributes
                            .iter()
                            .find(|(k, _)| k == key)
                            .map(|(_, v)| v.as_str())
                    };
                    if depth == 0 {
                        if name != "stream:stream" {
                            return Err(format!("the stream opens with <{name}>"));
                        }
                        if attribute("xmlns:stream") != Some(crate::ns::STREAM) {
                            return Err("the stream header does not declare xmlns:stream".into());
                        }
                    } else if depth == 1 {
                        let expected_prefix = match name.split_once(':') {
                            Some(("stream", _)) | Some(("db", _)) => None,
                            Some((prefix, _)) => {
                                return Err(format!("<{name}>: undeclared prefix {prefix}"));
                            }
                            None => Some(()),
                        };
                        if expected_prefix.is_some() {
                            match attribute("xmlns") {
                                Some(crate::ns::STREAM) => {
                                    return Err(format!(
                                        "<{name} xmlns='{}'> instead of <stream:{name}>",
                                        crate::ns::STREAM
                                    ));
                                }
                                Some(crate::ns::DIALBACK) => {
                                    return Err(format!(
                                        "<{name} xmlns='{}'> instead of <db:{name}>",
                                        crate::ns::DIALBACK
                                    ));
                                }
                                Some(_) => {}
                                None => {
                                    return Err(format!("<{name}> declares no namespace"));
                                }
                            }
                        }
                        names.push(name);
                    }
                    depth += 1;
                }
                RawEvent::ElementFoot(_) => depth = depth.saturating_sub(1),
                RawEvent::XmlDeclaration(..) | RawEvent::Text(..) => {}
            }
        }
    }
    Ok(names)
}

/// A byte stream that keeps a copy of everything read from it: what the other side wrote, in
/// plain text when the tap sits above TLS.
pub struct Tap<S> {
    inner: S,
    read: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl<S> Tap<S> {
    /// The tap, and the shared copy of what is read through it.
    pub fn new(inner: S) -> (Tap<S>, std::sync::Arc<std::sync::Mutex<Vec<u8>>>) {
        let read = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        (
            Tap {
                inner,
                read: read.clone(),
            },
            read,
        )
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Tap<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if let std::task::Poll::Ready(Ok(())) = &poll {
            let new = buf.filled()[before..].to_vec();
            self.read
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .extend_from_slice(&new);
        }
        poll
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Tap<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
