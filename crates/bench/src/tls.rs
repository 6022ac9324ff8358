//! TLS for the HTTPS scenarios: `gen-cert` writes a fresh self-signed certificate for the
//! loopback names (`127.0.0.1`, `::1`, `localhost`) that both the gateway (its ingest listener,
//! or its uplink's `ca_file`) and the harness (the HTTPS sink, the ingest client's trust anchor)
//! load. rustls with the ring provider, passed explicitly, like every rustls user in the tree.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use serde::Serialize;

use crate::error::BenchError;

/// File names inside the directory `gen-cert` writes.
pub const CERT_FILE: &str = "cert.pem";
/// See [`CERT_FILE`].
pub const KEY_FILE: &str = "key.pem";

/// Arguments of `gen-cert`.
#[derive(Debug, Clone, clap::Args)]
pub struct GenCertArgs {
    /// Directory to write `cert.pem` and `key.pem` (mode 0600) into; created if missing.
    #[arg(long)]
    pub dir: PathBuf,
}

/// What `gen-cert` printed.
#[derive(Debug, Clone, Serialize)]
pub struct GenCertReport {
    /// Always `gen-cert`.
    pub tool: &'static str,
    /// The certificate (PEM), also the CA to trust: it is self-signed.
    pub cert_file: PathBuf,
    /// Its private key (PEM, PKCS#8).
    pub key_file: PathBuf,
}

/// Writes a new self-signed certificate and key for the loopback names into `args.dir`.
pub fn gen_cert(args: &GenCertArgs) -> Result<GenCertReport, BenchError> {
    let names = vec![
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
        "localhost".to_owned(),
    ];
    let ck = rcgen::generate_simple_self_signed(names)
        .map_err(|e| BenchError::Tls(format!("certificate generation: {e}")))?;
    std::fs::create_dir_all(&args.dir)
        .map_err(|e| BenchError::io(format!("create {}", args.dir.display()), e))?;
    let cert_file = args.dir.join(CERT_FILE);
    let key_file = args.dir.join(KEY_FILE);
    std::fs::write(&cert_file, ck.cert.pem())
        .map_err(|e| BenchError::io(format!("write {}", cert_file.display()), e))?;
    write_private(&key_file, ck.signing_key.serialize_pem().as_bytes())?;
    Ok(GenCertReport {
        tool: "gen-cert",
        cert_file,
        key_file,
    })
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), BenchError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| BenchError::io(format!("create {}", path.display()), e))?;
    f.write_all(bytes)
        .map_err(|e| BenchError::io(format!("write {}", path.display()), e))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, BenchError> {
    let pem =
        std::fs::read(path).map_err(|e| BenchError::io(format!("read {}", path.display()), e))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| BenchError::io(format!("parse {}", path.display()), e))?;
    if certs.is_empty() {
        return Err(BenchError::Tls(format!(
            "no certificate in {}",
            path.display()
        )));
    }
    Ok(certs)
}

/// A TLS server configuration (TLS 1.2 and 1.3, ALPN `http/1.1`) from the PEM files in `dir`.
pub fn server_config(dir: &Path) -> Result<Arc<ServerConfig>, BenchError> {
    let chain = certs(&dir.join(CERT_FILE))?;
    let key_path = dir.join(KEY_FILE);
    let pem = std::fs::read(&key_path)
        .map_err(|e| BenchError::io(format!("read {}", key_path.display()), e))?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| BenchError::io(format!("parse {}", key_path.display()), e))?
        .ok_or_else(|| BenchError::Tls(format!("no private key in {}", key_path.display())))?;
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| BenchError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| BenchError::Tls(e.to_string()))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// A TLS client configuration trusting only the certificates in `ca_file`.
pub fn client_config(ca_file: &Path) -> Result<Arc<ClientConfig>, BenchError> {
    let mut roots = RootCertStore::empty();
    for c in certs(ca_file)? {
        roots
            .add(c)
            .map_err(|e| BenchError::Tls(format!("{}: {e}", ca_file.display())))?;
    }
    let mut cfg = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| BenchError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_certificate_loads_as_server_and_as_trust_anchor() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rep = gen_cert(&GenCertArgs {
            dir: dir.path().to_owned(),
        })
        .expect("generated");
        assert!(rep.cert_file.is_file() && rep.key_file.is_file());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&rep.key_file)
            .expect("key metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the key is private: {mode:o}");
        server_config(dir.path()).expect("server config");
        client_config(&rep.cert_file).expect("client config");
    }

    #[test]
    fn a_directory_without_a_certificate_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(server_config(dir.path()).is_err());
    }
}
