//! DTLS transport errors (start-up only: everything a peer sends is handled, counted and
//! audited, never returned).

use std::net::SocketAddr;

/// Why a DTLS listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum DtlsError {
    /// The socket could not be bound or configured.
    #[error("cannot bind DTLS listener {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The listener's certificate or key cannot be used.
    #[error("DTLS certificate {path}: {reason}")]
    Certificate {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong (never the key's bytes).
        reason: String,
    },
    /// The DTLS library refused its configuration (a bug or an unusable crypto provider).
    #[error("DTLS library configuration failed: {0}")]
    Library(String),
}
