//! `[coaps]` section of `gateway.toml`: the DTLS listeners and their bounds.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wardgate_core::validate::Problems;

/// DTLS transport settings. Every per-peer table has a bound here.
#[derive(Debug, Clone, Deserialize, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DtlsConfig {
    /// Run the CoAP-over-DTLS (`coaps://`) endpoint.
    pub enabled: bool,
    /// UDP addresses to listen on (default `0.0.0.0:5684`).
    pub listen: Vec<SocketAddr>,
    /// Most sessions (established and in handshake) per listener. A ClientHello beyond it is
    /// dropped and counted (`reason="sessions_full"`) until idle sessions expire.
    pub max_sessions: usize,
    /// Most handshakes in progress per listener (state exists only after a valid cookie).
    pub max_handshakes: usize,
    /// Most handshakes in progress from one source address (IPv4 /32, IPv6 /64), so one host
    /// cannot take the whole handshake table.
    pub max_handshakes_per_source: usize,
    /// A handshake not finished within this is abandoned.
    #[schemars(with = "wardgate_core::config_doc::Duration")]
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// An established session with no datagram for this long is closed (RFC 7925 §10 asks
    /// devices to re-handshake after loss of state; sleeping sensors do).
    #[schemars(with = "wardgate_core::config_doc::Duration")]
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// ClientHellos accepted per second from one source address (token bucket rate), counted
    /// before anything else is done with them.
    pub hello_rate_per_source: f64,
    /// Burst of the per-source ClientHello bucket.
    pub hello_burst_per_source: u32,
    /// How often the cookie secret changes. A cookie stays valid for up to two periods.
    #[schemars(with = "wardgate_core::config_doc::Duration")]
    #[serde(with = "humantime_serde")]
    pub cookie_rotation: Duration,
    /// Largest DTLS record payload the gateway sends (path MTU minus IP/UDP headers).
    pub mtu: usize,
    /// The gateway's certificate (PEM, ECDSA P-256 or P-384). With `private_key_file`, the
    /// listener also offers ECDHE_ECDSA suites to devices that authenticate with a client
    /// certificate whose SHA-256 fingerprint the device registry lists. Unset: PSK only.
    pub certificate_file: Option<PathBuf>,
    /// The private key of `certificate_file` (PEM, PKCS#8 or SEC1).
    pub private_key_file: Option<PathBuf>,
    /// SO_RCVBUF for each socket, in bytes.
    pub recv_buffer_bytes: usize,
    /// SO_SNDBUF for each socket, in bytes.
    pub send_buffer_bytes: usize,
}

impl Default for DtlsConfig {
    fn default() -> Self {
        DtlsConfig {
            enabled: false,
            listen: vec![SocketAddr::from(([0, 0, 0, 0], 5684))],
            max_sessions: 10_000,
            max_handshakes: 1_000,
            max_handshakes_per_source: 8,
            handshake_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(600),
            hello_rate_per_source: 10.0,
            hello_burst_per_source: 20,
            cookie_rotation: Duration::from_secs(60),
            mtu: 1200,
            certificate_file: None,
            private_key_file: None,
            recv_buffer_bytes: 4 * 1024 * 1024,
            send_buffer_bytes: 1024 * 1024,
        }
    }
}

impl DtlsConfig {
    /// Records every problem under `at` (the section's TOML path).
    pub fn validate(&self, at: &str, p: &mut Problems) {
        if self.enabled && self.listen.is_empty() {
            p.push(
                format!("{at}.listen"),
                "at least one address is required when enabled",
            );
        }
        if !(1..=1_000_000).contains(&self.max_sessions) {
            p.push(format!("{at}.max_sessions"), "must be from 1 to 1000000");
        }
        if self.max_handshakes == 0 || self.max_handshakes > self.max_sessions {
            p.push(
                format!("{at}.max_handshakes"),
                "must be at least 1 and at most max_sessions",
            );
        }
        if self.max_handshakes_per_source == 0
            || self.max_handshakes_per_source > self.max_handshakes
        {
            p.push(
                format!("{at}.max_handshakes_per_source"),
                "must be at least 1 and at most max_handshakes",
            );
        }
        let secs = |d: Duration, lo: u64, hi: u64| (lo..=hi).contains(&d.as_secs()) && !d.is_zero();
        if !secs(self.handshake_timeout, 1, 600) {
            p.push(format!("{at}.handshake_timeout"), "must be from 1s to 10m");
        }
        if !secs(self.idle_timeout, 1, 7 * 86_400) {
            p.push(format!("{at}.idle_timeout"), "must be from 1s to 7 days");
        }
        if !secs(self.cookie_rotation, 5, 3_600) {
            p.push(format!("{at}.cookie_rotation"), "must be from 5s to 1h");
        }
        if !(self.hello_rate_per_source.is_finite() && self.hello_rate_per_source > 0.0) {
            p.push(
                format!("{at}.hello_rate_per_source"),
                "must be a positive number",
            );
        }
        if self.hello_burst_per_source == 0 {
            p.push(format!("{at}.hello_burst_per_source"), "must be at least 1");
        }
        if self.certificate_file.is_some() != self.private_key_file.is_some() {
            p.push(
                format!("{at}.certificate_file"),
                "certificate_file and private_key_file go together",
            );
        }
        if !(256..=16_384).contains(&self.mtu) {
            p.push(format!("{at}.mtu"), "must be from 256 to 16384");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_bad_bounds_are_all_reported() {
        let mut p = Problems::new();
        DtlsConfig::default().validate("coaps", &mut p);
        assert!(p.is_empty(), "{p:?}");
        let bad = DtlsConfig {
            enabled: true,
            listen: vec![],
            max_handshakes: 0,
            mtu: 10,
            hello_rate_per_source: f64::NAN,
            ..DtlsConfig::default()
        };
        let mut p = Problems::new();
        bad.validate("coaps", &mut p);
        let text = format!("{p:?}");
        for field in ["listen", "max_handshakes", "mtu", "hello_rate_per_source"] {
            assert!(text.contains(field), "{field} not reported: {text}");
        }
    }
}
