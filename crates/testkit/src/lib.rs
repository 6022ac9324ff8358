//! wardgate-testkit: the fixtures every test suite of the workspace shares, so that there is one
//! Mosquitto fixture, one libcoap runner and one PKI, each hardened once.
//!
//! - [`Mosquitto`]: a real broker on a free loopback port, with the queue limits lifted and a
//!   guard that fails the test if the broker ever logs that it dropped messages (Mosquitto's
//!   default `max_queued_messages 1000` silently drops QoS 1 messages to a subscriber that falls
//!   behind; a harness artefact must never look like, or hide, a real loss);
//! - [`Subscriber`]: an MQTT 5 subscriber (rumqttc) on its own thread and runtime, ready only
//!   once the broker's SUBACK arrived, so no test races its own subscription;
//! - [`Pki`]: a throw-away CA, server and client certificates made with the `openssl` CLI;
//! - [`libcoap`]: libcoap's `coap-client-notls`, bounded in time;
//! - [`CapturedLog`]: this thread's log lines as text;
//! - free ports, bounded waits and child processes that die with their test.
//!
//! Every wait is bounded by [`PATIENCE`]; reaching it is a failure, never a pass. The bound is
//! generous on purpose: it only matters when something is broken, and a loaded CI machine must
//! not turn a slow start into a red run.
#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // fixtures fail the test loudly by design

pub mod libcoap;
mod log;
mod mosquitto;
mod pki;
mod subscriber;

use std::net::{TcpListener, UdpSocket};
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

pub use log::CapturedLog;
pub use mosquitto::Mosquitto;
pub use pki::Pki;
pub use subscriber::Subscriber;

/// Upper bound for anything a fixture waits for.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A TCP port on loopback that was free a moment ago.
pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind an ephemeral TCP port")
        .local_addr()
        .expect("local addr")
        .port()
}

/// A UDP port on loopback that was free a moment ago.
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .expect("bind an ephemeral UDP port")
        .local_addr()
        .expect("local addr")
        .port()
}

/// Fails the test with a clear message when a required tool is missing: the README's test
/// command installs them, so a missing tool is a broken environment, not a skip.
pub fn require_tool(path: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: run the test command from README.md (./scripts/test.sh installs the test peers)"
    );
}

/// Polls `f` every 25 ms until it returns `Some`; panics naming `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A child process killed and reaped when the guard drops, however the test ends.
#[derive(Debug)]
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Lower-case hex of the SHA-256 of `bytes` (certificate fingerprints, token hashes).
pub fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
