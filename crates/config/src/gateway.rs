//! The whole `gateway.toml`: sections composed from the adapter crates.

use std::collections::HashSet;
use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use wardgate_coap::config::CoapConfig;
use wardgate_core::validate::Problems;
use wardgate_dtls::DtlsConfig;
use wardgate_http::config::{AdminConfig, HttpConfig};
use wardgate_http::ingest::IngestHttpConfig;
use wardgate_http::uplink::HttpsUplinkConfig;
use wardgate_lwm2m::Lwm2mConfig;
use wardgate_monitor::MonitorConfig;
use wardgate_mqtt::config::MqttUplinkConfig;
use wardgate_mqtt::southbound::MqttIngestConfig;
use wardgate_selector::SelectorConfig;
use wardgate_store::config::StoreConfig;

use crate::audit::AuditConfig;

/// The complete gateway configuration. Parsed section by section ([`parse_sections`]);
/// `Serialize` and `JsonSchema` are for its reference (`crate::reference`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, schemars::JsonSchema)]
pub struct GatewayConfig {
    /// `[gateway]`: identity.
    pub gateway: GatewaySection,
    /// `[log]`: logging.
    pub log: LogConfig,
    /// `[bus]`: the in-process ingest bus.
    pub bus: BusConfig,
    /// `[coap]`: the CoAP endpoint (plain UDP).
    pub coap: CoapConfig,
    /// `[registry]`: the device registry (keys, tokens, ACLs).
    pub registry: RegistrySection,
    /// `[coaps]`: CoAP over DTLS (same resources as `[coap]`, devices authenticated by PSK).
    pub coaps: DtlsConfig,
    /// `[http]`: health, readiness, metrics.
    pub http: HttpConfig,
    /// `[admin]`: the admin API (off by default), on its own listener.
    pub admin: AdminConfig,
    /// `[store]`: the durable outbox.
    pub store: StoreConfig,
    /// `[[uplinks]]`: where readings go. Without a `[selector]` section every reading is owed
    /// to every uplink; with one, the selector chooses per message class.
    pub uplinks: Vec<UplinkConfig>,
    /// `[selector]`: the latency/reliability-aware choice of uplinks per message class
    /// (absent: every reading goes to every uplink).
    pub selector: Option<SelectorConfig>,
    /// `[ingest]`: the other southbound adapters (MQTT subscribers, HTTPS ingest).
    pub ingest: IngestSection,
    /// `[audit]`: the security audit trail (off unless `path` is set).
    pub audit: AuditConfig,
    /// `[lwm2m]`: the LwM2M server on the CoAP endpoints.
    pub lwm2m: Lwm2mConfig,
    /// `[monitor]`: the traffic monitor (`[monitor.capture]`: pcapng captures, off by default).
    pub monitor: MonitorConfig,
    /// `[split]`: the bus broker of a gateway split into parts (`wardgate run --only`).
    pub split: crate::split::SplitConfig,
}

/// `[ingest]`: southbound adapters besides CoAP and LwM2M.
#[derive(Debug, Clone, Deserialize, PartialEq, Default, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct IngestSection {
    /// `[[ingest.mqtt]]`: subscribe to a local broker where MQTT sensors publish; each
    /// message is PUBACKed only once its reading is durable.
    pub mqtt: Vec<MqttIngestConfig>,
    /// `[ingest.http]`: `POST /v1/devices/{id}/readings` over HTTPS (off by default;
    /// `docs/ingest-api.openapi.json`), answered 201 only once durable.
    pub http: IngestHttpConfig,
}

/// `[registry]`: where the device registry lives, and how much quarantine may hold.
#[derive(Debug, Clone, Deserialize, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrySection {
    /// Path of `devices.toml` (see `docs/examples/devices.toml`), relative to the directory of
    /// `gateway.toml`. Unset: devices are not authenticated (every peer may write for any device
    /// id, and `run` warns), and `[coaps]` cannot be enabled.
    pub path: Option<PathBuf>,
    /// With `unknown = "quarantine"` in `devices.toml`: readings from unknown (but proven)
    /// identities held in the outbox at most, all identities together. Beyond it they are
    /// refused (`quarantine_full`, CoAP 4.03, HTTP 403) until an administrator approves or
    /// dismisses some.
    pub quarantine_max_readings: u64,
    /// The same bound per unknown identity, so one cannot take the whole quarantine.
    pub quarantine_max_per_identity: u64,
}

impl Default for RegistrySection {
    fn default() -> Self {
        RegistrySection {
            path: None,
            quarantine_max_readings: 10_000,
            quarantine_max_per_identity: 1_000,
        }
    }
}

/// `[gateway]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct GatewaySection {
    /// This gateway's id: in every reading and in topic templates. `[A-Za-z0-9._-]`, 1-64 chars.
    /// Give each gateway its own (several parts of a split gateway, several workers).
    pub id: String,
}

impl Default for GatewaySection {
    fn default() -> Self {
        GatewaySection {
            id: "wardgate".into(),
        }
    }
}

/// Log output format.
#[derive(
    Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (for log shippers).
    Json,
}

/// `[log]`. Logs go to stderr; stdout is reserved for the stdout uplink.
#[derive(Debug, Clone, Deserialize, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `tracing` filter directive, e.g. `info` or `info,wardgate_coap=debug`. `RUST_LOG`, when
    /// set, takes precedence.
    pub level: String,
    /// Output format.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// `[bus]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct BusConfig {
    /// Ingest requests waiting for the store writer. When full, adapters answer "busy"
    /// (CoAP 5.03 + Max-Age) at once instead of queueing without bound.
    pub capacity: usize,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig { capacity: 8192 }
    }
}

/// One `[[uplinks]]` entry, selected by `type`.
// Built once at start-up, a handful at most: the size difference between variants is irrelevant.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Deserialize, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum UplinkConfig {
    /// An MQTT broker.
    Mqtt(MqttUplinkConfig),
    /// An HTTPS endpoint taking batches of readings (JSON arrays).
    Https(HttpsUplinkConfig),
    /// JSON lines to a file or stdout: the embedded default, needing no external service.
    File(FileUplinkConfig),
}

impl UplinkConfig {
    /// The uplink's unique name.
    pub fn name(&self) -> &str {
        match self {
            UplinkConfig::Mqtt(c) => &c.name,
            UplinkConfig::Https(c) => &c.name,
            UplinkConfig::File(c) => &c.name,
        }
    }
}

/// `type = "file"` uplink: one normalized JSON reading per line.
#[derive(Debug, Clone, Deserialize, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileUplinkConfig {
    /// Unique uplink name.
    pub name: String,
    /// File to append to; `-` writes to stdout. A reading counts as delivered once written and
    /// flushed (and fsynced when `fsync = true`).
    pub path: PathBuf,
    /// fsync the file after each batch (files only).
    #[serde(default)]
    pub fsync: bool,
}

const SECTIONS: [&str; 16] = [
    "gateway", "log", "bus", "registry", "coap", "coaps", "lwm2m", "http", "admin", "store",
    "uplinks", "audit", "selector", "ingest", "monitor", "split",
];

/// What [`parse_sections`] made of a file.
pub(crate) struct Parsed {
    /// The configuration; a section that did not parse holds its defaults.
    pub(crate) cfg: GatewayConfig,
    /// The sections that did not parse (their problems are recorded).
    pub(crate) failed: Vec<&'static str>,
}

/// Parses each section on its own so one bad section does not hide problems in the others.
/// `None` only when the text is not TOML at all.
pub(crate) fn parse_sections(text: &str, p: &mut Problems) -> Option<Parsed> {
    let table: toml::Table = match text.parse() {
        Ok(t) => t,
        Err(e) => {
            p.push(
                "gateway.toml",
                format!("not valid TOML: {}", e.to_string().trim_end()),
            );
            return None;
        }
    };
    for key in table.keys() {
        if !SECTIONS.contains(&key.as_str()) {
            p.push(
                key.clone(),
                format!("unknown section (expected one of: {})", SECTIONS.join(", ")),
            );
        }
    }
    let mut failed = Vec::new();
    let mut cfg = GatewayConfig::default();
    section(&table, "gateway", p, &mut failed, &mut cfg.gateway);
    section(&table, "log", p, &mut failed, &mut cfg.log);
    section(&table, "bus", p, &mut failed, &mut cfg.bus);
    section(&table, "coap", p, &mut failed, &mut cfg.coap);
    section(&table, "coaps", p, &mut failed, &mut cfg.coaps);
    section(&table, "registry", p, &mut failed, &mut cfg.registry);
    section(&table, "http", p, &mut failed, &mut cfg.http);
    section(&table, "admin", p, &mut failed, &mut cfg.admin);
    section(&table, "store", p, &mut failed, &mut cfg.store);
    section(&table, "audit", p, &mut failed, &mut cfg.audit);
    section(&table, "lwm2m", p, &mut failed, &mut cfg.lwm2m);
    section(&table, "ingest", p, &mut failed, &mut cfg.ingest);
    section(&table, "monitor", p, &mut failed, &mut cfg.monitor);
    section(&table, "split", p, &mut failed, &mut cfg.split);
    if table.contains_key("selector") {
        let mut sel = SelectorConfig::default();
        section(&table, "selector", p, &mut failed, &mut sel);
        cfg.selector = Some(sel);
    }
    match table.get("uplinks") {
        None => {}
        Some(toml::Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                match typed::<UplinkConfig>(item, &format!("uplinks[{i}]")) {
                    Ok(u) => cfg.uplinks.push(u),
                    Err((path, message)) => {
                        failed.push("uplinks");
                        p.push(path, message);
                    }
                }
            }
        }
        Some(_) => {
            failed.push("uplinks");
            p.push("uplinks", "must be an array of tables ([[uplinks]])");
        }
    }
    failed.dedup();
    Some(Parsed { cfg, failed })
}

fn section<T: DeserializeOwned>(
    table: &toml::Table,
    key: &'static str,
    p: &mut Problems,
    failed: &mut Vec<&'static str>,
    into: &mut T,
) {
    if let Some(v) = table.get(key) {
        match typed::<T>(v, key) {
            Ok(parsed) => *into = parsed,
            Err((path, message)) => {
                failed.push(key);
                p.push(path, message);
            }
        }
    }
}

/// Whether a value problem found while sections in `failed` did not parse still holds: not
/// when it is in one of them, names one (`needs [registry] path`, whose `path` may be the very
/// key with the type error), or is the selector's and the uplinks it names did not parse.
pub(crate) fn holds_despite(problem: &wardgate_core::validate::Problem, failed: &[&str]) -> bool {
    let section = problem.path.split(['.', '[']).next().unwrap_or("");
    !failed.iter().any(|f| {
        section == *f
            || problem.message.contains(&format!("[{f}]"))
            || problem.message.contains(&format!("[[{f}]]"))
            || (*f == "uplinks" && section == "selector")
    })
}

/// Deserializes the value at `at`; on failure, the full path of the offending key and a message
/// that says what would be right.
fn typed<T: DeserializeOwned>(v: &toml::Value, at: &str) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(v.clone()).map_err(|e| {
        let inner = e.path().to_string();
        let mut path = if inner == "." || inner.is_empty() {
            at.to_owned()
        } else {
            format!("{at}.{inner}")
        };
        // toml appends "in `key`" lines the path already says.
        let raw = e.inner().to_string();
        let message: String = raw
            .lines()
            .filter(|l| !l.trim_start().starts_with("in `"))
            .collect::<Vec<_>>()
            .join(" ");
        let message = message.trim().to_owned();
        // The path may stop at the table holding an unknown key, or name the key itself.
        if let Some(field) = unknown_field(&message).or_else(|| missing_field(&message))
            && !path.ends_with(&format!(".{field}"))
        {
            path = format!("{path}.{field}");
        }
        (path, with_fix(message))
    })
}

/// The field an "unknown field `x`, expected ..." error names.
fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

/// The field a "missing field `x`" error names.
fn missing_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("missing field `")?;
    rest.split('`').next()
}

/// `message` with what to write instead, for the errors people make most.
fn with_fix(message: String) -> String {
    if let Some(field) = unknown_field(&message) {
        // serde lists the expected fields: suggest the closest.
        let expected: Vec<&str> = message
            .split_once("expected ")
            .map(|(_, list)| {
                list.split('`')
                    .enumerate()
                    .filter(|(i, _)| i % 2 == 1)
                    .map(|(_, s)| s)
                    .collect()
            })
            .unwrap_or_default();
        let best = expected
            .iter()
            .map(|e| (strsim::jaro_winkler(field, e), *e))
            .filter(|(score, _)| *score > 0.8)
            .max_by(|a, b| a.0.total_cmp(&b.0));
        return match best {
            Some((_, e)) => format!("{message}; did you mean `{e}`?"),
            None => format!("{message}; remove it, or check the section it is in"),
        };
    }
    let hint = if message.contains("invalid socket address") {
        Some("write an address and port, e.g. \"0.0.0.0:5683\" or \"[::]:5683\"")
    } else if message.contains("expected a sequence") {
        Some("write a list, e.g. [\"…\"]")
    } else if [
        "expected usize",
        "expected u64",
        "expected u32",
        "expected u16",
        "expected u8",
    ]
    .iter()
    .any(|t| message.contains(t))
    {
        Some("write a whole number, without quotes")
    } else if message.contains("expected a boolean") {
        Some("write true or false (no quotes)")
    } else if message.contains("time unit")
        || message.contains("expected number")
        || message.contains("unknown unit")
    {
        Some("write a duration such as \"500ms\", \"30s\", \"5m\" or \"1h\"")
    } else if message.contains("missing field") {
        Some("add it: it has no default")
    } else if message.contains("unknown variant") {
        Some("use one of the values listed")
    } else {
        None
    };
    match hint {
        Some(h) => format!("{message} ({h})"),
        None => message,
    }
}

fn valid_id(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

impl GatewayConfig {
    /// Runs every section's checks and the cross-section rules.
    pub fn validate(&self, p: &mut Problems) {
        if !valid_id(&self.gateway.id, 64) {
            p.push(
                "gateway.id",
                format!(
                    "{:?} must be 1-64 characters of A-Z a-z 0-9 . _ -",
                    self.gateway.id
                ),
            );
        }
        if self.log.level.trim().is_empty() {
            p.push("log.level", "must not be empty");
        }
        if self.bus.capacity == 0 {
            p.push("bus.capacity", "must be at least 1");
        }
        self.coap.validate("coap", p);
        self.coaps.validate("coaps", p);
        self.lwm2m.validate("lwm2m", p);
        for (i, t) in self.coap.observe.iter().enumerate() {
            if t.uri.starts_with("coaps://")
                && !(self.coaps.enabled && self.registry.path.is_some())
            {
                p.push(
                    format!("coap.observe[{i}].uri"),
                    "a coaps:// target needs [coaps] enabled and a [registry] holding the device's PSK",
                );
            }
        }
        if self.registry.quarantine_max_readings == 0 {
            p.push(
                "registry.quarantine_max_readings",
                "must be at least 1 (with unknown = \"reject\" nothing is held anyway)",
            );
        }
        if self.registry.quarantine_max_per_identity == 0
            || self.registry.quarantine_max_per_identity > self.registry.quarantine_max_readings
        {
            p.push(
                "registry.quarantine_max_per_identity",
                "must be at least 1 and at most quarantine_max_readings",
            );
        }
        if self.coaps.enabled && self.registry.path.is_none() {
            p.push(
                "coaps.enabled",
                "needs [registry] path: DTLS devices are authenticated by the PSK their registry entry holds",
            );
        }
        self.http.validate("http", p);
        self.admin.validate("admin", p);
        let (a, h) = (self.admin.listen, self.http.listen);
        let overlap = a.port() == h.port()
            && (a.ip() == h.ip() || a.ip().is_unspecified() || h.ip().is_unspecified());
        if self.admin.enabled && self.http.enabled && overlap {
            p.push(
                "admin.listen",
                "must differ from [http] listen: /healthz, /readyz and /metrics stay unauthenticated there",
            );
        }
        self.store.validate("store", p);
        self.audit.validate("audit", p);
        self.split.validate("split", p);
        if self.uplinks.is_empty() {
            p.push("uplinks", "at least one [[uplinks]] entry is required");
        }
        if self.uplinks.len() > wardgate_store::MAX_CONFIGURED_UPLINKS {
            p.push(
                "uplinks",
                format!(
                    "at most {} uplinks are supported",
                    wardgate_store::MAX_CONFIGURED_UPLINKS
                ),
            );
        }
        let mut names = HashSet::new();
        let mut stdout_users = 0;
        for (i, u) in self.uplinks.iter().enumerate() {
            let at = format!("uplinks[{i}]");
            if !valid_id(u.name(), 64) {
                p.push(
                    format!("{at}.name"),
                    format!(
                        "{:?} must be 1-64 characters of A-Z a-z 0-9 . _ -",
                        u.name()
                    ),
                );
            }
            if u.name() == wardgate_core::QUARANTINE {
                p.push(
                    format!("{at}.name"),
                    format!(
                        "{:?} is reserved (the outbox lane holding quarantined readings)",
                        u.name()
                    ),
                );
            }
            if !names.insert(u.name()) {
                p.push(
                    format!("{at}.name"),
                    format!("duplicate uplink name {:?}", u.name()),
                );
            }
            match u {
                UplinkConfig::Mqtt(m) => m.validate(&at, p),
                UplinkConfig::Https(h) => h.validate(&at, p),
                UplinkConfig::File(f) => {
                    if f.path.as_os_str().is_empty() {
                        p.push(
                            format!("{at}.path"),
                            "must not be empty (use \"-\" for stdout)",
                        );
                    }
                    if f.path.as_os_str() == "-" {
                        stdout_users += 1;
                    }
                }
            }
        }
        if stdout_users > 1 {
            p.push(
                "uplinks",
                "only one file uplink may write to stdout (\"-\")",
            );
        }
        if self.ingest.http.enabled {
            self.ingest.http.validate("ingest.http", p);
        }
        let mut ingest_names = HashSet::new();
        for (i, m) in self.ingest.mqtt.iter().enumerate() {
            let at = format!("ingest.mqtt[{i}]");
            m.validate(&at, p);
            if !ingest_names.insert(m.name.as_str()) {
                p.push(format!("{at}.name"), format!("duplicate name {:?}", m.name));
            }
        }
        if let Some(sel) = &self.selector {
            let names: Vec<&str> = self.uplinks.iter().map(UplinkConfig::name).collect();
            sel.validate("selector", &names, p);
        }
        self.monitor.validate("monitor", p);
        let endpoint = self.coap.enabled || self.coaps.enabled;
        if self.monitor.capture.enabled && !endpoint {
            p.push(
                "monitor.capture.enabled",
                "captures tap the CoAP endpoints: enable [coap] or [coaps]",
            );
        }
        if self.monitor.flows.enabled && !endpoint {
            p.push(
                "monitor.flows.enabled",
                "flow records come from the CoAP endpoints: enable [coap] or [coaps]",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ConfigError, parse};

    fn no_env(_: &str) -> Option<String> {
        None
    }

    /// A type error in one section does not hide the value problems of the others, and value
    /// problems that only follow from the broken section are not reported.
    #[test]
    fn a_type_error_keeps_the_other_sections_value_checks() {
        let text = r#"
[bus]
capacity = 0
[coap]
listen = 5683
[registry]
path = 7
[coaps]
enabled = true
[[uplinks]]
type = "file"
name = "out"
path = "-"
"#;
        let Err(ConfigError::Invalid(problems)) = parse(text, &no_env) else {
            panic!("accepted");
        };
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert!(paths.contains(&"coap.listen"), "{problems:#?}");
        assert!(paths.contains(&"registry.path"), "{problems:#?}");
        assert!(paths.contains(&"bus.capacity"), "{problems:#?}");
        // [coaps] needs a registry path: it has one, with a type error already reported.
        assert!(!paths.contains(&"coaps.enabled"), "{problems:#?}");
        assert_eq!(problems.len(), 3, "{problems:#?}");
        assert!(problems.iter().all(|p| p.line.is_some()), "{problems:#?}");
    }

    #[test]
    fn shipped_gateway_toml_is_valid() {
        let text = include_str!("../../../gateway.toml");
        let cfg = parse(text, &no_env).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.uplinks.len(), 1);
        assert!(matches!(cfg.uplinks[0], UplinkConfig::File(_)));
    }

    #[test]
    fn every_example_under_docs_is_valid() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/examples");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).expect("docs/examples exists") {
            let path = entry.expect("entry").path();
            // devices*.toml are device registries (wardgate-registry parses them), not configs.
            let registry = path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("devices"));
            if path.extension().is_some_and(|e| e == "toml") && !registry {
                let text = std::fs::read_to_string(&path).expect("read");
                if let Err(e) = parse(&text, &no_env) {
                    panic!("{}: {e}", path.display());
                }
                seen += 1;
            }
        }
        assert!(seen > 0, "no examples found");
    }

    #[test]
    fn several_problems_in_different_sections_are_reported_together() {
        let text = r#"
[gateway]
id = "ward 3a"
[coap]
listen = []
transmission = { ack_random_factor = 0.5 }
[store]
max_batch = 0
[bogus]
x = 1
[[uplinks]]
type = "mqtt"
name = "cloud"
url = "http://example"
qos = 2
[[uplinks]]
type = "file"
name = "cloud"
path = "-"
"#;
        let Err(ConfigError::Invalid(problems)) = parse(text, &no_env) else {
            panic!("expected problems");
        };
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        for expected in [
            "bogus",
            "gateway.id",
            "coap.listen",
            "coap.transmission.ack_random_factor",
            "store.max_batch",
            "uplinks[0].url",
            "uplinks[0].qos",
            "uplinks[1].name",
        ] {
            assert!(paths.contains(&expected), "missing {expected} in {paths:?}");
        }
    }

    #[test]
    fn type_errors_in_one_section_do_not_hide_other_sections() {
        let text = "[coap]\nlisten = 5\n[store]\nmax_batch = \"many\"\n[[uplinks]]\ntype = \"carrier-pigeon\"\nname = \"x\"\n";
        let Err(ConfigError::Invalid(problems)) = parse(text, &no_env) else {
            panic!("expected problems");
        };
        // Each names the key itself, its line, and what to write instead.
        let got: Vec<(&str, Option<usize>)> =
            problems.iter().map(|p| (p.path.as_str(), p.line)).collect();
        assert_eq!(
            got,
            vec![
                ("coap.listen", Some(2)),
                ("store.max_batch", Some(4)),
                ("uplinks[0].type", Some(6))
            ],
            "{problems:?}"
        );
        assert!(
            problems[0]
                .message
                .ends_with("(write a list, e.g. [\"…\"])")
        );
        assert!(
            problems[1]
                .message
                .ends_with("(write a whole number, without quotes)")
        );
        assert!(
            problems[2]
                .message
                .contains("expected one of `mqtt`, `https`, `file`")
        );
    }

    #[test]
    fn a_misspelt_key_is_named_with_the_closest_right_one() {
        let text = "[http]\nlisen = \"127.0.0.1:8080\"\n[[uplinks]]\ntype = \"file\"\nname = \"x\"\npath = \"-\"\n";
        let Err(ConfigError::Invalid(problems)) = parse(text, &no_env) else {
            panic!("expected problems");
        };
        assert_eq!(problems.len(), 1, "{problems:?}");
        let p = &problems[0];
        assert_eq!(
            (p.path.as_str(), p.line, p.column),
            ("http.lisen", Some(2), Some(1))
        );
        assert!(
            p.message.ends_with("did you mean `listen`?"),
            "{}",
            p.message
        );
    }

    #[test]
    fn a_missing_key_is_named_and_located_at_its_table() {
        let text = "[gateway]\nid = \"w\"\n[[uplinks]]\ntype = \"file\"\npath = \"-\"\n";
        let Err(ConfigError::Invalid(problems)) = parse(text, &no_env) else {
            panic!("expected problems");
        };
        let p = &problems[0];
        assert_eq!(
            (p.path.as_str(), p.line),
            ("uplinks[0].name", Some(3)),
            "{p:?}"
        );
        assert!(
            p.message.ends_with("(add it: it has no default)"),
            "{}",
            p.message
        );
    }

    #[test]
    fn the_commented_capture_block_of_the_shipped_gateway_toml_parses_when_uncommented() {
        let shipped = include_str!("../../../gateway.toml");
        let block: String = shipped
            .lines()
            .skip_while(|l| *l != "# [monitor.capture]")
            .take_while(|l| l.starts_with('#'))
            .map(|l| format!("{}\n", l.trim_start_matches('#').trim_start()))
            .collect();
        assert!(block.starts_with("[monitor.capture]"), "{block}");
        let cfg = parse(&format!("{block}{UPLINK}"), &no_env).unwrap_or_else(|e| panic!("{e}"));
        assert!(cfg.monitor.capture.enabled);
        assert_eq!(cfg.monitor.capture.addresses, ["192.0.2.0/24"]);
    }

    #[test]
    fn a_capture_section_is_parsed_and_all_its_problems_reported_with_the_others() {
        let text = format!(
            "[monitor.capture]\nenabled = true\ndir = \"/var/lib/wardgate/captures\"\n\
             max_files = 3\naddresses = [\"192.0.2.0/24\"]\n{UPLINK}"
        );
        let cfg = parse(&text, &no_env).unwrap_or_else(|e| panic!("{e}"));
        let c = &cfg.monitor.capture;
        assert!(
            c.enabled && c.redact_payloads,
            "redaction stays on by default"
        );
        assert_eq!(c.max_files, 3);
        let bad = format!(
            "[coap]\nenabled = false\n[coaps]\nenabled = false\n[monitor.capture]\nenabled = true\n\
             max_files = 0\naddresses = [\"ward\"]\n[monitor.flows]\nenabled = true\n\
             [store]\nmax_batch = 0\n{UPLINK}"
        );
        let Err(ConfigError::Invalid(problems)) = parse(&bad, &no_env) else {
            panic!("expected problems");
        };
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        for expected in [
            "store.max_batch",
            "monitor.capture.max_files",
            "monitor.capture.addresses[0]",
            "monitor.capture.enabled",
            "monitor.flows.enabled",
        ] {
            assert!(paths.contains(&expected), "missing {expected} in {paths:?}");
        }
        let unknown = format!("[monitor.capture]\nredact = false\n{UPLINK}");
        let Err(ConfigError::Invalid(problems)) = parse(&unknown, &no_env) else {
            panic!("expected problems");
        };
        assert!(problems[0].message.contains("redact"), "{problems:?}");
    }

    #[test]
    fn more_uplinks_than_the_outbox_tracks_are_refused_with_its_limit() {
        let uplinks = |n: usize| -> String {
            (0..n)
                .map(|i| {
                    format!("[[uplinks]]\ntype = \"file\"\nname = \"u{i}\"\npath = \"/tmp/u{i}\"\n")
                })
                .collect()
        };
        let max = wardgate_store::MAX_CONFIGURED_UPLINKS;
        assert!(parse(&uplinks(max), &no_env).is_ok());
        let Err(ConfigError::Invalid(problems)) = parse(&uplinks(max + 1), &no_env) else {
            panic!("expected problems");
        };
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].path, "uplinks");
        assert!(
            problems[0].message.contains(&max.to_string()),
            "{problems:?}"
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        let text = "[coap]\nlisten_on = [\"0.0.0.0:5683\"]\n[[uplinks]]\ntype = \"file\"\nname = \"out\"\npath = \"-\"\n";
        let Err(ConfigError::Invalid(problems)) = parse(text, &no_env) else {
            panic!("expected problems");
        };
        assert_eq!(problems.len(), 1);
        assert!(problems[0].message.contains("listen_on"), "{problems:?}");
    }

    #[test]
    fn environment_overrides_reach_typed_fields() {
        let text = "[gateway]\nid = \"${WARD:-x}\"\n[coap]\nlisten = [\"${COAP:-0.0.0.0:5683}\"]\n[[uplinks]]\ntype = \"mqtt\"\nname = \"c\"\nurl = \"${URL}\"\npassword = \"${PW}\"\n";
        let env = |n: &str| match n {
            "WARD" => Some("ward-7".to_owned()),
            "COAP" => Some("127.0.0.1:15683".to_owned()),
            "URL" => Some("mqtt://127.0.0.1:1883".to_owned()),
            "PW" => Some("s3cr\"et".replace('"', "")),
            _ => None,
        };
        let cfg = parse(text, &env).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.gateway.id, "ward-7");
        assert_eq!(
            cfg.coap.listen,
            vec!["127.0.0.1:15683".parse().expect("addr")]
        );
        let UplinkConfig::Mqtt(m) = &cfg.uplinks[0] else {
            panic!("mqtt uplink expected")
        };
        assert_eq!(m.password.as_deref(), Some("s3cret"));
    }

    const UPLINK: &str = "[[uplinks]]\ntype = \"file\"\nname = \"out\"\npath = \"-\"\n";
    const HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn an_enabled_admin_api_without_credentials_or_tls_off_loopback_reports_every_problem() {
        let text = format!(
            "[http]\nlisten = \"0.0.0.0:9000\"\n[admin]\nenabled = true\nlisten = \"0.0.0.0:9000\"\n\
             client_certificates = [\"nope\"]\n[[admin.tokens]]\nid = \"ops 1\"\nsha256 = \"s3cret-token\"\n{UPLINK}"
        );
        let Err(ConfigError::Invalid(problems)) = parse(&text, &no_env) else {
            panic!("expected problems");
        };
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        for expected in [
            "admin.tokens[0].id",
            "admin.tokens[0].sha256",
            "admin.client_certificates[0]",
            "admin.client_certificates",
            "admin.listen",
        ] {
            assert!(
                paths.contains(&expected),
                "missing {expected} in {problems:?}"
            );
        }
        let all = format!("{problems:?}");
        assert!(all.contains("must use TLS"), "{all}");
        assert!(all.contains("must differ from [http] listen"), "{all}");
        assert!(!all.contains("s3cret-token"), "a token echoed: {all}");
    }

    #[test]
    fn an_enabled_admin_api_needs_a_token_or_a_client_certificate() {
        let text = format!("[admin]\nenabled = true\n{UPLINK}");
        let Err(ConfigError::Invalid(problems)) = parse(&text, &no_env) else {
            panic!("expected problems");
        };
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].path, "admin.tokens");
    }

    #[test]
    fn a_plain_admin_api_on_loopback_and_a_tls_one_anywhere_are_accepted() {
        let plain = format!(
            "[admin]\nenabled = true\n[[admin.tokens]]\nid = \"ops-1\"\nsha256 = \"{HASH}\"\n{UPLINK}"
        );
        let cfg = parse(&plain, &no_env).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.admin.listen, "127.0.0.1:8443".parse().unwrap());
        let tls = format!(
            "[admin]\nenabled = true\nlisten = \"0.0.0.0:8443\"\nclient_certificates = [\"{HASH}\"]\n\
             [admin.tls]\ncert_file = \"a.pem\"\nkey_file = \"a.key\"\nclient_ca_file = \"ca.pem\"\n{UPLINK}"
        );
        parse(&tls, &no_env).unwrap_or_else(|e| panic!("{e}"));
    }
}
