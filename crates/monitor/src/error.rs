//! The monitor's errors.

use std::path::PathBuf;

/// Why a capture could not start.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// The `[monitor.capture]` filters do not compile (validation reports the same).
    #[error("invalid capture filter: {0}")]
    Filter(String),
    /// The capture directory cannot be created or read.
    #[error("capture directory {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The writer thread could not be started.
    #[error("cannot start the capture writer thread: {0}")]
    Thread(std::io::Error),
}
