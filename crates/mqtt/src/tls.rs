//! The rustls client configuration for `mqtts://` uplinks.
//!
//! - Crypto provider: `ring`, passed explicitly (no process-wide default provider is installed
//!   or needed).
//! - Trust: the PEM bundle in `tls.ca_file` when set, else the operating system's store, loaded
//!   through `rustls-native-certs`.
//! - Client certificate (mutual TLS): `tls.client_cert_file` (PEM chain) with
//!   `tls.client_key_file` (PEM PKCS#8, PKCS#1 or SEC1 key).
//! - Server name: the certificate is checked against `tls.server_name` when set, else against
//!   the URL host. rumqttc always sends the URL host as SNI (none for an IP address), so the
//!   override is done in the verifier: the standard WebPKI verifier, called with our name.
//!
//! - The broker's certificate: the southbound subscriber asks for the SHA-256 fingerprint of the
//!   certificate the broker presented and that verified ([`SeenCertificate`]), the identity it
//!   gives the broker as a peer.
//!
//! PEM parsing uses `rustls-pki-types`; every read or parse failure names the file.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::config::TlsConfig;
use crate::error::MqttError;

/// The SHA-256 fingerprint (lower-case hex) of the last broker certificate that verified on
/// connections made with one client configuration. Connections of one client are made one
/// after the other, so after a CONNACK it is the current connection's.
#[derive(Debug, Clone, Default)]
pub(crate) struct SeenCertificate(Arc<Mutex<Option<Arc<str>>>>);

impl SeenCertificate {
    fn record(&self, der: &[u8]) {
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(hex.into());
    }

    /// The fingerprint of the last certificate that verified, if any.
    pub(crate) fn latest(&self) -> Option<Arc<str>> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Builds the client configuration; `url_host` is the host from the broker URL.
pub(crate) fn client_config(
    tls: &TlsConfig,
    url_host: &str,
) -> Result<Arc<ClientConfig>, MqttError> {
    build(tls, url_host, None)
}

/// [`client_config`] that also records the fingerprint of each broker certificate that verifies
/// in `seen`.
pub(crate) fn client_config_recording(
    tls: &TlsConfig,
    url_host: &str,
    seen: SeenCertificate,
) -> Result<Arc<ClientConfig>, MqttError> {
    build(tls, url_host, Some(seen))
}

fn build(
    tls: &TlsConfig,
    url_host: &str,
    seen: Option<SeenCertificate>,
) -> Result<Arc<ClientConfig>, MqttError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = Arc::new(root_store(tls)?);
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let name = match &tls.server_name {
        Some(name) if name != url_host => Some(ServerName::try_from(name.clone()).map_err(
            |e| MqttError::Setting {
                field: "tls.server_name",
                reason: format!("{name:?}: {e}"),
            },
        )?),
        _ => None,
    };
    let builder = if name.is_some() || seen.is_some() {
        let inner = WebPkiServerVerifier::builder_with_provider(roots, provider)
            .build()
            .map_err(|e| MqttError::Setting {
                field: "tls.ca_file",
                reason: e.to_string(),
            })?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Verifier { inner, name, seen }))
    } else {
        builder.with_root_certificates(roots)
    };
    let config = match (&tls.client_cert_file, &tls.client_key_file) {
        (Some(cert), Some(key)) => {
            let chain = read_certs("client_cert_file", cert)?;
            let key = read_key(key)?;
            builder.with_client_auth_cert(chain, key)?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(MqttError::Setting {
                field: "tls",
                reason: "client_cert_file and client_key_file go together".into(),
            });
        }
    };
    Ok(Arc::new(config))
}

fn root_store(tls: &TlsConfig) -> Result<RootCertStore, MqttError> {
    let mut roots = RootCertStore::empty();
    match &tls.ca_file {
        Some(path) => {
            for cert in read_certs("ca_file", path)? {
                roots.add(cert).map_err(|e| MqttError::TlsFileContent {
                    what: "ca_file",
                    path: path.clone(),
                    reason: format!("unusable CA certificate: {e}"),
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found
                    .errors
                    .first()
                    .map(ToString::to_string)
                    .unwrap_or_else(|| "the system store is empty".into());
                return Err(MqttError::NoRootCertificates(why));
            }
        }
    }
    Ok(roots)
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, MqttError> {
    std::fs::read(path).map_err(|source| MqttError::TlsFileRead {
        what,
        path: path.to_owned(),
        source,
    })
}

fn read_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, MqttError> {
    let pem = read(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| MqttError::TlsFileContent {
            what,
            path: path.to_owned(),
            reason: format!("invalid PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(MqttError::TlsFileContent {
            what,
            path: path.to_owned(),
            reason: "no CERTIFICATE block found".into(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, MqttError> {
    let pem = read("client_key_file", path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| MqttError::TlsFileContent {
        what: "client_key_file",
        path: path.to_owned(),
        reason: format!("no usable private key: {e}"),
    })
}

/// Full WebPKI verification, against the configured name instead of the connect host when
/// one is set, recording the fingerprint of what verified when asked to.
#[derive(Debug)]
struct Verifier {
    inner: Arc<WebPkiServerVerifier>,
    name: Option<ServerName<'static>>,
    seen: Option<SeenCertificate>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let name: &ServerName<'_> = match &self.name {
            Some(n) => n,
            None => server_name,
        };
        let verified =
            self.inner
                .verify_server_cert(end_entity, intermediates, name, ocsp_response, now)?;
        if let Some(seen) = &self.seen {
            seen.record(end_entity.as_ref());
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.inner.requires_raw_public_keys()
    }

    fn root_hint_subjects(&self) -> Option<&[rustls::DistinguishedName]> {
        self.inner.root_hint_subjects()
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn tls(ca: Option<PathBuf>) -> TlsConfig {
        TlsConfig {
            ca_file: ca,
            ..TlsConfig::default()
        }
    }

    #[test]
    fn missing_ca_file_is_an_error_naming_the_file() {
        let err = client_config(&tls(Some("/nonexistent/ca.pem".into())), "h").unwrap_err();
        assert!(
            matches!(
                err,
                MqttError::TlsFileRead {
                    what: "ca_file",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn ca_file_without_certificates_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate\n").expect("write");
        let err = client_config(&tls(Some(path.clone())), "h").unwrap_err();
        assert!(
            matches!(
                err,
                MqttError::TlsFileContent {
                    what: "ca_file",
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn key_file_without_a_key_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("client.key");
        std::fs::write(&key, "-----BEGIN NOTHING-----\n-----END NOTHING-----\n").expect("write");
        let err = read_key(&key).unwrap_err();
        assert!(
            matches!(
                err,
                MqttError::TlsFileContent {
                    what: "client_key_file",
                    ..
                }
            ),
            "{err}"
        );
    }
}
