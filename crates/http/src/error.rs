//! Errors of the HTTP servers and the HTTPS uplink. None carries key material: TLS file problems
//! name the setting and the file and what is wrong with it, never their content; no token either.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Why an HTTP server or the HTTPS uplink could not be built or started, or a server stopped.
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
    /// A TLS file (`[admin.tls]`, `[ingest.tls]`, an HTTPS uplink's) could not be read.
    #[error("cannot read {what} {path}: {source}")]
    TlsFileRead {
        /// Which setting (`admin.tls.cert_file`, `ca_file`, ...).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// A TLS file holds nothing usable.
    #[error("bad {what} {path}: {reason}")]
    TlsFileContent {
        /// Which setting.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the configuration (e.g. the key does not match the certificate).
    #[error("TLS configuration refused: {0}")]
    Tls(String),
    /// A configuration section breaks its rules (its `validate`'s problems, joined).
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// No trust anchors: `ca_file` unset and the operating system's store is empty or
    /// unreadable.
    #[error("no CA certificates: set ca_file or install system roots ({0})")]
    NoRootCertificates(String),
    /// The HTTP client could not be built.
    #[error("HTTP client: {0}")]
    Client(String),
    /// The outbox failed while the HTTPS uplink was reading from it.
    #[error("outbox: {0}")]
    Outbox(#[from] wardgate_core::OutboxError),
}
