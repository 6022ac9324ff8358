//! Errors of opening and writing the audit log.

use std::path::PathBuf;

/// Why the audit log could not be opened, flushed or closed. No variant carries key material.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A setting is unusable.
    #[error("invalid audit settings: {0}")]
    Invalid(String),
    /// A file could not be read, written, renamed or synced.
    #[error("audit file {path}: {what}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The HMAC key file is unusable (the message never contains key bytes).
    #[error("audit HMAC key {path}: {reason}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Writing failed; the records of that batch were cut off and counted as dropped.
    #[error("audit write failed: {0}")]
    Write(std::io::Error),
    /// The log was closed (or its writer thread ended); nothing more is written.
    #[error("audit log is closed")]
    Closed,
}

impl AuditError {
    pub(crate) fn io(path: impl Into<PathBuf>, what: &'static str, source: std::io::Error) -> Self {
        AuditError::Io {
            path: path.into(),
            what,
            source,
        }
    }
}
