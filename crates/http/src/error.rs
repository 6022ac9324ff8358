//! Errors of the HTTP servers. None carries key material: TLS file problems name the file and
//! what is wrong with it, never its content.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Why the HTTP server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The listen address could not be bound.
    #[error("cannot bind HTTP listener on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// OS error.
        source: std::io::Error,
    },
    /// The server failed while running.
    #[error("HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
    /// A TLS file of `[admin.tls]` could not be read.
    #[error("cannot read admin TLS {what} {path}: {source}")]
    TlsFileRead {
        /// Which setting (`cert_file`, `key_file`, `client_ca_file`).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// A TLS file of `[admin.tls]` holds nothing usable.
    #[error("admin TLS {what} {path}: {reason}")]
    TlsFileContent {
        /// Which setting.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the configuration (e.g. the key does not match the certificate).
    #[error("admin TLS configuration refused: {0}")]
    Tls(String),
}
