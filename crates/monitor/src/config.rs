//! `[monitor]`: the traffic monitor's section of `gateway.toml`. Today it has one part,
//! `[monitor.capture]` (pcapng captures of the plain CoAP endpoint).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use wardgate_core::validate::Problems;

use crate::filter::CaptureFilter;

/// `[monitor]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MonitorConfig {
    /// `[monitor.capture]`: pcapng captures (off by default).
    pub capture: CaptureConfig,
}

/// Default `dir`.
pub const DEFAULT_DIR: &str = "wardgate-data/captures";
/// Default `max_file_bytes`: 64 MiB.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;
/// Default `max_file_age`: one hour.
pub const DEFAULT_MAX_FILE_AGE: Duration = Duration::from_secs(3600);
/// Default `max_files`: 24 (at most 1.5 GiB on disk with the default file size).
pub const DEFAULT_MAX_FILES: usize = 24;
/// Default `queue_packets`.
pub const DEFAULT_QUEUE_PACKETS: usize = 4096;
/// The smallest `max_file_bytes` accepted (room for the file's header blocks and a packet).
pub const MIN_FILE_BYTES: u64 = 4096;

/// `[monitor.capture]`: what the taps copy and where the capture files go.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CaptureConfig {
    /// Capture at all. Default `false`: captures hold patient data and cost disk.
    pub enabled: bool,
    /// Directory of the capture files (created if missing; keep it `chmod 700`). Relative
    /// paths are relative to the working directory, like the outbox. Default
    /// `wardgate-data/captures`.
    pub dir: PathBuf,
    /// Start a new file before one would grow past this many bytes. Default 64 MiB, at least
    /// 4096.
    pub max_file_bytes: u64,
    /// Start a new file when the current one is this old (checked as packets arrive). Default
    /// `1h`, at least `1s`.
    #[serde(with = "humantime_serde")]
    pub max_file_age: Duration,
    /// Files kept, the one being written included; the oldest are deleted. Default 24, at
    /// least 1. Disk use is bounded by `max_files × max_file_bytes`.
    pub max_files: usize,
    /// Packets waiting for the writer thread. When it is full, packets are dropped and counted
    /// (`wardgate_monitor_capture_dropped_total`): capture never slows ingest. Memory is
    /// bounded by this × `[coap] max_datagram_bytes`. Default 4096.
    pub queue_packets: usize,
    /// Zero every payload (CoAP: after the 0xFF marker; anything else: after its first 4
    /// bytes), keeping headers, tokens, options and every length. Default `true`: payloads
    /// are patient data.
    pub redact_payloads: bool,
    /// Only peers whose proven identity (DTLS PSK identity, certificate) matches one of these
    /// (exact, or a prefix ending in `*`). Peers without an identity (plain UDP) match only
    /// `addresses`. Empty with `addresses` empty: every peer.
    pub devices: Vec<String>,
    /// Only peers inside one of these prefixes (`192.0.2.0/24`, `2001:db8::/32`, or one
    /// address). Combined with `devices` by OR.
    pub addresses: Vec<String>,
    /// Only these protocols (`coap`, `coaps`); empty: all. Combined with the above by AND.
    /// This version taps `coap` only (DTLS records come with the DTLS tap).
    pub protocols: Vec<String>,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            enabled: false,
            dir: PathBuf::from(DEFAULT_DIR),
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            max_file_age: DEFAULT_MAX_FILE_AGE,
            max_files: DEFAULT_MAX_FILES,
            queue_packets: DEFAULT_QUEUE_PACKETS,
            redact_payloads: true,
            devices: Vec::new(),
            addresses: Vec::new(),
            protocols: Vec::new(),
        }
    }
}

impl MonitorConfig {
    /// Checks every value, reporting all problems under `at` (`monitor`).
    pub fn validate(&self, at: &str, p: &mut Problems) {
        self.capture.validate(&format!("{at}.capture"), p);
    }
}

impl CaptureConfig {
    /// Checks every value (also when disabled, so a prepared section is already right),
    /// reporting all problems under `at` (`monitor.capture`).
    pub fn validate(&self, at: &str, p: &mut Problems) {
        if self.dir.as_os_str().is_empty() {
            p.push(format!("{at}.dir"), "must not be empty");
        }
        if self.max_file_bytes < MIN_FILE_BYTES {
            p.push(
                format!("{at}.max_file_bytes"),
                format!("must be at least {MIN_FILE_BYTES}"),
            );
        }
        if self.max_file_age < Duration::from_secs(1) {
            p.push(format!("{at}.max_file_age"), "must be at least 1s");
        }
        if self.max_files == 0 {
            p.push(format!("{at}.max_files"), "must be at least 1");
        }
        if self.queue_packets == 0 {
            p.push(format!("{at}.queue_packets"), "must be at least 1");
        }
        if let Err(problems) = CaptureFilter::from_config(self) {
            for (path, message) in problems {
                p.push(format!("{at}.{path}"), message);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_section_is_off_with_redaction_on_and_valid() {
        let cfg: MonitorConfig = toml::from_str("[capture]\n").unwrap();
        assert!(!cfg.capture.enabled);
        assert!(cfg.capture.redact_payloads);
        assert_eq!(cfg.capture, CaptureConfig::default());
        let mut p = Problems::new();
        cfg.validate("monitor", &mut p);
        assert!(p.is_empty(), "{:?}", p.into_vec());
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let cfg: MonitorConfig = toml::from_str(
            "[capture]\nenabled = true\ndir = \"\"\nmax_file_bytes = 10\nmax_file_age = \"10ms\"\n\
             max_files = 0\nqueue_packets = 0\naddresses = [\"x\"]\nprotocols = [\"ftp\"]\n",
        )
        .unwrap();
        let mut p = Problems::new();
        cfg.validate("monitor", &mut p);
        let paths: Vec<String> = p.into_vec().into_iter().map(|p| p.path).collect();
        assert_eq!(
            paths,
            [
                "monitor.capture.dir",
                "monitor.capture.max_file_bytes",
                "monitor.capture.max_file_age",
                "monitor.capture.max_files",
                "monitor.capture.queue_packets",
                "monitor.capture.addresses[0]",
                "monitor.capture.protocols[0]",
            ]
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(toml::from_str::<MonitorConfig>("[capture]\nredact = false\n").is_err());
        assert!(toml::from_str::<MonitorConfig>("[flows]\n").is_err());
    }
}
