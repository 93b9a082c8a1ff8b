//! The serving certificate: PEM files in, a rustls server configuration (ring provider) out.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::{Error, Result};

/// Reads the certificate chain and private key from PEM files.
pub fn load(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|error| Error::Read {
            path: path.to_path_buf(),
            error,
        })
    };
    server_config(
        &read(cert)?,
        &cert.display().to_string(),
        &read(key)?,
        &key.display().to_string(),
    )
}

/// A server configuration from PEM text: the certificate chain (leaf first) and its key.
/// `cert_name` and `key_name` name the sources in errors. Only HTTP/1.1 is offered.
pub fn server_config(
    cert_pem: &[u8],
    cert_name: &str,
    key_pem: &[u8],
    key_name: &str,
) -> Result<Arc<ServerConfig>> {
    let pem_error = |what: &str, message: String| Error::Pem {
        what: what.to_string(),
        message,
    };
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(cert_name, e.to_string()))?;
    if certs.is_empty() {
        return Err(pem_error(cert_name, "no CERTIFICATE block".to_string()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| pem_error(key_name, format!("no usable private key: {e}")))?;
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(Error::Tls)?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(Error::Tls)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
