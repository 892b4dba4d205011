//! Certificates for tests and benchmarks: a CA and leaves for test domains, usable as server and
//! client certificates; and the policy of a test peer. Built for this crate's tests, and for
//! other crates' tests and the benchmarks with the `testing` feature.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
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
        let key = KeyPair::generate().expect("key");
        let names: Vec<String> = domains.iter().map(|d| (*d).to_owned()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, domains[0]);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("leaf certificate");
        Leaf {
            identity: Identity {
                domains: names,
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
