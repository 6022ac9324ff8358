//! The monitor's errors.

use std::path::PathBuf;

/// Why a capture or the flow exporter could not start.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// The `[monitor.capture]` filters or `[monitor.flows]` labels do not compile (validation
    /// reports the same).
    #[error("invalid monitor filter: {0}")]
    Filter(String),
    /// The capture or flow directory (or a file in it) cannot be created or read.
    #[error("monitor directory {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The monitored interface cannot be opened (`wardgate monitor`).
    #[error("interface {name:?}: {reason}")]
    Interface {
        /// The interface name.
        name: String,
        /// Why (no such interface, no permission).
        reason: String,
    },
    /// A writer thread could not be started.
    #[error("cannot start a monitor writer thread: {0}")]
    Thread(std::io::Error),
}
