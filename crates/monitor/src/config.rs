//! `[monitor]`: the traffic monitor's section of `gateway.toml`: `[monitor.capture]` (pcapng
//! captures of the CoAP and DTLS endpoints), `[monitor.flows]` (flow records) and
//! `[monitor.anomalies]` (anomaly events).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wardgate_core::validate::Problems;

use crate::filter::CaptureFilter;

/// `[monitor]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Default, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct MonitorConfig {
    /// `[monitor.capture]`: pcapng captures (off by default).
    pub capture: CaptureConfig,
    /// `[monitor.flows]`: flow records (off by default).
    pub flows: FlowsConfig,
    /// `[monitor.anomalies]`: anomaly events (off by default).
    pub anomalies: AnomaliesConfig,
    /// `[monitor.interface]`: the interface `wardgate monitor` reads (interface capture mode).
    pub interface: crate::interface::InterfaceConfig,
}

/// `[monitor.anomalies]`: scans, floods, authentication-failure bursts, rate spikes and new
/// ports turned into `security`-class readings (see [`crate::anomaly`] for each detector). In
/// interface mode (`wardgate monitor`) the events are JSON lines in `anomalies.jsonl` in the
/// `[monitor.flows]` directory instead, which must then be enabled.
#[derive(Debug, Clone, Deserialize, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AnomaliesConfig {
    /// Detect at all. Default `false`.
    pub enabled: bool,
    /// The per-source counting window (tumbling). Default `10s`.
    #[schemars(with = "wardgate_core::config_doc::Duration")]
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// `resource_scan`: 4.04/4.05 answers to one source in a window. Default 20.
    pub scan_threshold: u32,
    /// `malformed_flood`: datagrams from one source that are not CoAP, in a window. Default 20.
    pub malformed_threshold: u32,
    /// `auth_failures`: 4.01/4.03 answers, DTLS credential failures and HTTP ingest 401/403
    /// answers of one source in a window. Default 10.
    pub auth_failure_threshold: u32,
    /// `handshake_flood`: DTLS ClientHellos from one source in a window. Default 30.
    pub handshake_threshold: u32,
    /// `new_sources`: never-seen source addresses in a window, gateway-wide. Default 50.
    pub new_sources_threshold: u32,
    /// `rate_spike`: the interval a device's datagram rate is measured over. Default `10s`.
    #[schemars(with = "wardgate_core::config_doc::Duration")]
    #[serde(with = "humantime_serde")]
    pub rate_interval: Duration,
    /// The weight of the newest interval in the baseline (EWMA), in (0, 1]. Default 0.1.
    pub rate_alpha: f64,
    /// The z-score against the baseline that makes a spike. Default 4.
    pub rate_zscore: f64,
    /// Intervals of history before a device's rate is judged. Default 6.
    pub rate_warmup: u32,
    /// Fewest datagrams in an interval for a spike. Default 20.
    pub rate_min_packets: u32,
    /// No `new_sources` events this long after start (every device is new then), and a device
    /// must be known this long before `new_port` fires for it. Default `5m`.
    #[schemars(with = "wardgate_core::config_doc::Duration")]
    #[serde(with = "humantime_serde")]
    pub learning: Duration,
    /// Least time between two events of one kind about one source or device. Default `60s`.
    #[schemars(with = "wardgate_core::config_doc::Duration")]
    #[serde(with = "humantime_serde")]
    pub cooldown: Duration,
    /// Most sources (and most devices) tracked; a full table forgets its least recently seen
    /// 1 %. Default 10,000 (a few MB).
    pub max_tracked: usize,
    /// Events waiting to become readings; beyond it they are dropped and counted
    /// (`wardgate_monitor_anomalies_dropped_total`). Default 1024.
    pub queue_events: usize,
    /// Most events stored as `security` readings per minute, gateway-wide; beyond it they are
    /// counted (`wardgate_monitor_anomalies_suppressed_total`, and by kind) but not stored, so a
    /// flood from many spoofed sources cannot crowd the alarm lane. Default 60.
    pub max_events_per_minute: u32,
}

impl Default for AnomaliesConfig {
    fn default() -> Self {
        AnomaliesConfig {
            enabled: false,
            window: Duration::from_secs(10),
            scan_threshold: 20,
            malformed_threshold: 20,
            auth_failure_threshold: 10,
            handshake_threshold: 30,
            new_sources_threshold: 50,
            rate_interval: Duration::from_secs(10),
            rate_alpha: 0.1,
            rate_zscore: 4.0,
            rate_warmup: 6,
            rate_min_packets: 20,
            learning: Duration::from_secs(300),
            cooldown: Duration::from_secs(60),
            max_tracked: 10_000,
            queue_events: 1024,
            max_events_per_minute: 60,
        }
    }
}

impl AnomaliesConfig {
    /// Checks every value (also when disabled), reporting all problems under `at`
    /// (`monitor.anomalies`).
    pub fn validate(&self, at: &str, p: &mut Problems) {
        let ms = Duration::from_millis(100);
        for (key, d) in [
            ("window", self.window),
            ("rate_interval", self.rate_interval),
        ] {
            if d < ms || d > Duration::from_secs(3600) {
                p.push(format!("{at}.{key}"), "must be between 100ms and 1h");
            }
        }
        for (key, n) in [
            ("scan_threshold", self.scan_threshold),
            ("malformed_threshold", self.malformed_threshold),
            ("auth_failure_threshold", self.auth_failure_threshold),
            ("handshake_threshold", self.handshake_threshold),
            ("new_sources_threshold", self.new_sources_threshold),
        ] {
            if n == 0 {
                p.push(format!("{at}.{key}"), "must be at least 1");
            }
        }
        if !(self.rate_alpha > 0.0 && self.rate_alpha <= 1.0) {
            p.push(format!("{at}.rate_alpha"), "must be in (0, 1]");
        }
        if !(self.rate_zscore.is_finite() && self.rate_zscore > 0.0) {
            p.push(format!("{at}.rate_zscore"), "must be a positive number");
        }
        if !(1..=1_000_000).contains(&self.max_tracked) {
            p.push(format!("{at}.max_tracked"), "must be between 1 and 1000000");
        }
        if self.queue_events == 0 {
            p.push(format!("{at}.queue_events"), "must be at least 1");
        }
        if self.max_events_per_minute == 0 {
            p.push(format!("{at}.max_events_per_minute"), "must be at least 1");
        }
    }
}

/// Default `[monitor.flows] dir`.
pub const DEFAULT_FLOWS_DIR: &str = "wardgate-data/flows";

/// `[monitor.flows]`: flow records for IDS datasets (see [`crate::flow`]).
#[derive(Debug, Clone, Deserialize, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct FlowsConfig {
    /// Keep flow records at all. Default `false`.
    pub enabled: bool,
    /// Directory of `flows.jsonl` and `flows.csv` (created `0700`). Default
    /// `wardgate-data/flows`.
    pub dir: PathBuf,
    /// A flow without packets this long ends (`end_reason = "idle"`). Default 60 s.
    #[schemars(with = "wardgate_core::config_doc::Duration")]
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// A flow is cut when it has lasted this long (`"active"`). Default 30 min.
    #[schemars(with = "wardgate_core::config_doc::Duration")]
    #[serde(with = "humantime_serde")]
    pub active_timeout: Duration,
    /// Most flows open at once; beyond it the least recently seen 1 % are written early
    /// (`"evicted"`). Default 100,000 (about 40 MB).
    pub max_flows: usize,
    /// Datagrams waiting for the flow thread; beyond it they are dropped and counted
    /// (`wardgate_monitor_flow_packets_dropped_total`). Default 8192.
    pub queue_packets: usize,
    /// Each file is moved to `<name>.1` (replacing the previous one) before it would pass
    /// this. Default 64 MiB (disk: at most twice this per file).
    pub max_file_bytes: u64,
    /// The label of flows no `labels` entry matches. Default `"benign"`.
    pub label: String,
    /// `[[monitor.flows.labels]]`: the first entry with a prefix containing the peer's
    /// address labels its flows (the labelling hook: a simulator sends attacks from its own
    /// address).
    pub labels: Vec<FlowLabel>,
}

/// One `[[monitor.flows.labels]]` entry.
#[derive(Debug, Clone, Deserialize, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FlowLabel {
    /// Peer prefixes (`192.0.2.0/24`, `2001:db8::/32`, one address).
    pub addresses: Vec<String>,
    /// The label (e.g. `"attack"`, `"coap-scan"`).
    pub label: String,
}

impl Default for FlowsConfig {
    fn default() -> Self {
        FlowsConfig {
            enabled: false,
            dir: PathBuf::from(DEFAULT_FLOWS_DIR),
            idle_timeout: Duration::from_secs(60),
            active_timeout: Duration::from_secs(1800),
            max_flows: 100_000,
            queue_packets: 8192,
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            label: "benign".into(),
            labels: Vec::new(),
        }
    }
}

impl FlowsConfig {
    /// The flow table's settings; the problems (path, message) when a prefix does not parse.
    pub fn params(&self) -> Result<crate::flow::FlowParams, Vec<String>> {
        let mut labels = Vec::new();
        let mut problems = Vec::new();
        for (i, l) in self.labels.iter().enumerate() {
            for (j, a) in l.addresses.iter().enumerate() {
                match a.parse() {
                    Ok(prefix) => labels.push((prefix, l.label.clone())),
                    Err(e) => problems.push(format!("labels[{i}].addresses[{j}]: {e}")),
                }
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(crate::flow::FlowParams {
            idle_timeout: self.idle_timeout,
            active_timeout: self.active_timeout,
            max_flows: self.max_flows,
            labels,
            default_label: self.label.clone(),
        })
    }

    /// Checks every value (also when disabled), reporting all problems under `at`
    /// (`monitor.flows`).
    pub fn validate(&self, at: &str, p: &mut Problems) {
        if self.dir.as_os_str().is_empty() {
            p.push(format!("{at}.dir"), "must not be empty");
        }
        if self.idle_timeout < Duration::from_secs(1) {
            p.push(format!("{at}.idle_timeout"), "must be at least 1s");
        }
        if self.active_timeout < self.idle_timeout {
            p.push(
                format!("{at}.active_timeout"),
                "must be at least idle_timeout",
            );
        }
        if !(1..=10_000_000).contains(&self.max_flows) {
            p.push(format!("{at}.max_flows"), "must be between 1 and 10000000");
        }
        if self.queue_packets == 0 {
            p.push(format!("{at}.queue_packets"), "must be at least 1");
        }
        if self.max_file_bytes < MIN_FILE_BYTES {
            p.push(
                format!("{at}.max_file_bytes"),
                format!("must be at least {MIN_FILE_BYTES}"),
            );
        }
        let bad_label = |l: &str| l.is_empty() || l.contains(['\n', '\r', ',', '"']);
        if bad_label(&self.label) {
            p.push(
                format!("{at}.label"),
                "must be non-empty, without commas, quotes or line breaks",
            );
        }
        for (i, l) in self.labels.iter().enumerate() {
            if bad_label(&l.label) {
                p.push(
                    format!("{at}.labels[{i}].label"),
                    "must be non-empty, without commas, quotes or line breaks",
                );
            }
            if l.addresses.is_empty() {
                p.push(
                    format!("{at}.labels[{i}].addresses"),
                    "must list at least one prefix",
                );
            }
        }
        if let Err(problems) = self.params() {
            for m in problems {
                let (path, message) = m.split_once(": ").unwrap_or((m.as_str(), ""));
                p.push(format!("{at}.{path}"), message.to_owned());
            }
        }
    }
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
#[derive(Debug, Clone, Deserialize, PartialEq, Serialize, schemars::JsonSchema)]
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
    #[schemars(with = "wardgate_core::config_doc::Duration")]
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
    /// Only these protocols (`coap`, `coaps`, `https` / `http` for the HTTP ingest's sessions,
    /// `mqtt` / `mqtts` for the MQTT subscribers' broker sessions); empty: all. Combined with
    /// the above by AND.
    pub protocols: Vec<String>,
    /// Write the secrets of every captured DTLS session (PSK and certificate) to this file in
    /// the NSS key log format, so the capture can be decrypted later (Wireshark: TLS protocol
    /// preferences, "(Pre)-Master-Secret log filename"; tshark: `-o tls.keylog_file:FILE`).
    /// Off (unset) by default: the file decrypts patient data, so it is created mode 0600,
    /// kept apart from the captures, never served by the admin API and never rotated (it
    /// stops growing at 64 MiB). Needs `redact_payloads = false` (a redacted capture has no
    /// ciphertext left to decrypt). Not used by `wardgate monitor`, which holds no keys.
    pub keylog_file: Option<PathBuf>,
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
            keylog_file: None,
        }
    }
}

impl MonitorConfig {
    /// Checks every value, reporting all problems under `at` (`monitor`).
    pub fn validate(&self, at: &str, p: &mut Problems) {
        self.capture.validate(&format!("{at}.capture"), p);
        self.flows.validate(&format!("{at}.flows"), p);
        self.anomalies.validate(&format!("{at}.anomalies"), p);
        self.interface.validate(&format!("{at}.interface"), p);
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
        if self.keylog_file.is_some() && self.redact_payloads {
            p.push(
                format!("{at}.keylog_file"),
                "needs redact_payloads = false: a redacted capture has no ciphertext left to decrypt",
            );
        }
        if self
            .keylog_file
            .as_ref()
            .is_some_and(|k| k.as_os_str().is_empty())
        {
            p.push(format!("{at}.keylog_file"), "must not be empty");
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

    /// The paths of every problem `toml` (a `[monitor]` section) has.
    fn problem_paths(toml: &str) -> Vec<String> {
        let cfg: MonitorConfig = toml::from_str(toml).unwrap();
        let mut p = Problems::new();
        cfg.validate("monitor", &mut p);
        p.into_vec().into_iter().map(|p| p.path).collect()
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        assert_eq!(
            problem_paths(
                "[capture]\nenabled = true\ndir = \"\"\nmax_file_bytes = 10\nmax_file_age = \"10ms\"\n\
                 max_files = 0\nqueue_packets = 0\naddresses = [\"x\"]\nprotocols = [\"ftp\"]\n"
            ),
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
    fn a_key_log_needs_unredacted_captures() {
        assert_eq!(
            problem_paths("[capture]\nkeylog_file = \"keys.log\"\n"),
            ["monitor.capture.keylog_file"]
        );
        assert!(
            problem_paths("[capture]\nkeylog_file = \"keys.log\"\nredact_payloads = false\n")
                .is_empty()
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(toml::from_str::<MonitorConfig>("[capture]\nredact = false\n").is_err());
        assert!(toml::from_str::<MonitorConfig>("[flow]\n").is_err());
        assert!(toml::from_str::<MonitorConfig>("[flows]\nidle = \"1s\"\n").is_err());
    }

    #[test]
    fn anomalies_default_off_parse_and_report_every_problem() {
        let cfg: MonitorConfig =
            toml::from_str("[anomalies]\nenabled = true\nwindow = \"5s\"\nlearning = \"0s\"\n")
                .unwrap();
        assert!(cfg.anomalies.enabled);
        assert_eq!(cfg.anomalies.window, Duration::from_secs(5));
        assert_eq!(cfg.anomalies.learning, Duration::ZERO);
        let mut p = Problems::new();
        cfg.validate("monitor", &mut p);
        assert!(p.is_empty(), "{:?}", p.into_vec());
        assert_eq!(
            problem_paths(
                "[anomalies]\nwindow = \"1ms\"\nscan_threshold = 0\nrate_alpha = 0.0\n\
                 rate_zscore = -1.0\nmax_tracked = 0\nqueue_events = 0\n"
            ),
            [
                "monitor.anomalies.window",
                "monitor.anomalies.scan_threshold",
                "monitor.anomalies.rate_alpha",
                "monitor.anomalies.rate_zscore",
                "monitor.anomalies.max_tracked",
                "monitor.anomalies.queue_events",
            ]
        );
    }

    #[test]
    fn flows_parse_with_labels_and_report_every_problem() {
        let cfg: MonitorConfig = toml::from_str(
            "[flows]\nenabled = true\nidle_timeout = \"30s\"\n\
             [[flows.labels]]\naddresses = [\"127.0.0.66\", \"10.0.0.0/8\"]\nlabel = \"attack\"\n",
        )
        .unwrap();
        let params = cfg.flows.params().unwrap();
        assert_eq!(params.labels.len(), 2);
        assert_eq!(params.idle_timeout, Duration::from_secs(30));
        let mut p = Problems::new();
        cfg.validate("monitor", &mut p);
        assert!(p.is_empty(), "{:?}", p.into_vec());

        assert_eq!(
            problem_paths(
                "[flows]\nidle_timeout = \"0s\"\nmax_flows = 0\nlabel = \"a,b\"\n\
                 [[flows.labels]]\naddresses = [\"nope\"]\nlabel = \"x\"\n"
            ),
            [
                "monitor.flows.idle_timeout",
                "monitor.flows.max_flows",
                "monitor.flows.label",
                "monitor.flows.labels[0].addresses[0]",
            ]
        );
    }
}
