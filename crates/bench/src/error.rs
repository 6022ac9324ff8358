//! Errors of the benchmark harness. A run either produces its JSON report or one of these; a
//! partially failed run (timeouts, 5.03s, lost readings) is a report with counts, not an error.

use std::net::SocketAddr;

/// Why a benchmark command could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The target is not on this machine: load is only ever sent to loopback addresses.
    #[error("refusing non-loopback target {0} (the harness only sends to 127.0.0.0/8 or ::1)")]
    NotLoopback(String),
    /// A target that does not parse or resolve.
    #[error("bad target {target:?}: {detail}")]
    BadTarget {
        /// What was given.
        target: String,
        /// Why it was rejected.
        detail: String,
    },
    /// Arguments that contradict each other or exceed the harness bounds.
    #[error("invalid arguments: {0}")]
    InvalidArgs(String),
    /// A socket or file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The system under test never answered the readiness probe.
    #[error("{0} did not answer within the readiness timeout")]
    NotReady(SocketAddr),
    /// The MQTT side (subscriber or publisher) failed.
    #[error("mqtt: {0}")]
    Mqtt(String),
    /// TLS material or configuration (the HTTPS scenarios).
    #[error("tls: {0}")]
    Tls(String),
    /// An HTTP exchange failed in a way that ends the run (not a counted error status).
    #[error("http: {0}")]
    Http(String),
    /// A process to sample does not exist (or /proc is unreadable).
    #[error("cannot read /proc for pid {pid}: {detail}")]
    Proc {
        /// The pid.
        pid: u32,
        /// Why.
        detail: String,
    },
}

impl BenchError {
    /// Wraps an I/O error with what we were doing.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        BenchError::Io {
            context: context.into(),
            source,
        }
    }
}
