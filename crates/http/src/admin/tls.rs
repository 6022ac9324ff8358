//! The admin API's rustls server configuration.
//!
//! - Crypto provider: `ring`, passed explicitly (no process-wide default needed).
//! - Server certificate: `cert_file` (PEM chain, leaf first) with `key_file`.
//! - Client certificates: requested only when `client_ca_file` is set, and then optional (a
//!   client without one may still send a token); one that is sent must chain to that CA.
//!   Whether a verified certificate is *allowed* is the fingerprint list's decision, not ours.
//! - ALPN `http/1.1` (the server speaks HTTP/1.1 only).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use crate::config::AdminTlsConfig;
use crate::error::HttpError;

/// Reads the files and builds the server configuration. Every failure names the file.
pub(crate) fn server_config(tls: &AdminTlsConfig) -> Result<Arc<ServerConfig>, HttpError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| HttpError::Tls(e.to_string()))?;
    let builder = match &tls.client_ca_file {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs("client_ca_file", ca)? {
                roots.add(cert).map_err(|e| HttpError::TlsFileContent {
                    what: "client_ca_file",
                    path: ca.clone(),
                    reason: format!("unusable CA certificate: {e}"),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| HttpError::TlsFileContent {
                    what: "client_ca_file",
                    path: ca.clone(),
                    reason: e.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let chain = read_certs("cert_file", &tls.cert_file)?;
    let key = read_key(&tls.key_file)?;
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

fn read_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, HttpError> {
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

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, HttpError> {
    let pem = read("key_file", path)?;
    // The PEM error names the problem (missing block, bad base64), never the key's bytes.
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| HttpError::TlsFileContent {
        what: "key_file",
        path: path.to_owned(),
        reason: format!("no usable private key: {e}"),
    })
}
