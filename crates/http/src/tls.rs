//! The rustls configurations of the crate's TLS listeners (admin API, ingest) and the PEM
//! reading shared with the HTTPS uplink's client.
//!
//! - Crypto provider: `ring`, passed explicitly (no process-wide default needed).
//! - Server certificate: `cert_file` (PEM chain, leaf first) with `key_file`.
//! - Client certificates: requested only when `client_ca_file` is set, and then optional (a
//!   client without one may still send a token); one that is sent must chain to that CA.
//!   Whether a verified certificate is *allowed* is the caller's decision (the admin API's
//!   fingerprint list, the device registry), not ours.
//! - ALPN `http/1.1` (the servers speak HTTP/1.1 only).
//!
//! Every failure names the setting and the file, never their content.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use crate::error::HttpError;

/// The files of a TLS listener, each with the name of its setting (for error messages).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ServerFiles<'a> {
    /// PEM certificate chain, leaf first.
    pub(crate) cert: (&'static str, &'a Path),
    /// PEM private key.
    pub(crate) key: (&'static str, &'a Path),
    /// PEM CA bundle client certificates must chain to.
    pub(crate) client_ca: Option<(&'static str, &'a Path)>,
}

/// Reads the files and builds the server configuration. Every failure names the file.
pub(crate) fn server_config(tls: &ServerFiles<'_>) -> Result<Arc<ServerConfig>, HttpError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| HttpError::Tls(e.to_string()))?;
    let builder = match tls.client_ca {
        Some((what, ca)) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs(what, ca)? {
                roots.add(cert).map_err(|e| HttpError::TlsFileContent {
                    what,
                    path: ca.to_owned(),
                    reason: format!("unusable CA certificate: {e}"),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| HttpError::TlsFileContent {
                    what,
                    path: ca.to_owned(),
                    reason: e.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let chain = read_certs(tls.cert.0, tls.cert.1)?;
    let key = read_key(tls.key.0, tls.key.1)?;
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| HttpError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, HttpError> {
    std::fs::read(path).map_err(|source| HttpError::TlsFileRead {
        what,
        path: path.to_owned(),
        source,
    })
}

/// Every certificate of a PEM file; at least one.
pub(crate) fn read_certs(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, HttpError> {
    let pem = read(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| HttpError::TlsFileContent {
            what,
            path: path.to_owned(),
            reason: format!("invalid PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(HttpError::TlsFileContent {
            what,
            path: path.to_owned(),
            reason: "no CERTIFICATE block found".into(),
        });
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub(crate) fn read_key(
    what: &'static str,
    path: &Path,
) -> Result<PrivateKeyDer<'static>, HttpError> {
    let pem = read(what, path)?;
    // The PEM error names the problem (missing block, bad base64), never the key's bytes.
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| HttpError::TlsFileContent {
        what,
        path: path.to_owned(),
        reason: format!("no usable private key: {e}"),
    })
}
