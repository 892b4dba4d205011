//! TLS material for both protocols: the process's crypto provider (ring), root stores made of
//! the system's certificate authorities and configured ones, and certificate chains and private
//! keys read from PEM files.

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The crypto provider every TLS configuration of Causeway uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A root store: the system's certificate authorities when `system` (those that cannot be
/// loaded are logged and left out), and `extra` ones.
pub fn root_store(
    system: bool,
    extra: Vec<CertificateDer<'static>>,
) -> Result<RootCertStore, rustls::Error> {
    let mut roots = RootCertStore::empty();
    if system {
        let native = rustls_native_certs::load_native_certs();
        for error in &native.errors {
            tracing::warn!(%error, "a system root certificate could not be loaded");
        }
        roots.add_parsable_certificates(native.certs);
    }
    for root in extra {
        roots.add(root)?;
    }
    Ok(roots)
}

/// Why a PEM file could not be read.
#[derive(Debug)]
pub struct PemError {
    pub path: std::path::PathBuf,
    pub reason: String,
}

impl std::fmt::Display for PemError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "reading {}: {}", self.path.display(), self.reason)
    }
}

impl std::error::Error for PemError {}

fn pem_error(path: &Path, error: impl std::fmt::Display) -> PemError {
    PemError {
        path: path.to_owned(),
        reason: error.to_string(),
    }
}

/// The certificates of a PEM file (a chain, or CA certificates), in order; at least one.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))?;
    if certificates.is_empty() {
        return Err(pem_error(path, "no certificate in the file"));
    }
    Ok(certificates)
}

/// The private key of a PEM file.
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| pem_error(path, e))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn pem_files() {
        let dir = std::env::temp_dir().join(format!("causeway-net-pem-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "nothing here\n").unwrap();
        let error = read_certificates(&empty).unwrap_err();
        assert!(error.to_string().contains("no certificate"), "{error}");
        assert!(read_private_key(&empty).is_err());
        assert!(read_certificates(&dir.join("missing.pem")).is_err());
        // A store of extra roots only holds them; a bad one is refused.
        let store = root_store(false, vec![]).unwrap();
        assert!(store.is_empty());
        assert!(root_store(false, vec![CertificateDer::from(vec![1, 2, 3])]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
