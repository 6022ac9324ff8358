//! Shared fixtures of the HTTP crate's integration tests: a test PKI made with rcgen, a real
//! HTTP(S) endpoint (axum over tokio-rustls) that records what it receives, and a fake outbox
//! cursor for fault injection.
#![allow(dead_code, unreachable_pub)]

pub mod cursor;
pub mod endpoint;
pub mod pki;

use std::time::Duration;

/// Upper bound for anything a test waits for; reaching it is a failure, never a pass.
pub const PATIENCE: Duration = wardgate_testkit::PATIENCE;

/// Polls `f` every 10 ms (on tokio's clock) until it returns `Some`; panics naming `what`
/// after [`PATIENCE`].
pub async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub use wardgate_testkit::sha256_hex;
