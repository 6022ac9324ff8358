//! `[split]` and `wardgate run --only <part>`: one gateway run as several processes (one
//! container per adapter), exchanging normalized readings over an MQTT broker.
//!
//! [`restrict`] turns the one `gateway.toml` into the configuration of one part, so every part
//! reads the same file and the same checks apply:
//! - an adapter part (`coap`, `http-in`, `mqtt-in`) keeps its listeners, turns the others off,
//!   and has exactly one uplink: `bus`, an MQTT uplink publishing each reading (QoS 1) to
//!   `<topic_prefix>/readings/<gateway>/<class>/<device>`. A device is acknowledged once the reading is
//!   durable in the part's own outbox, and a reading leaves that outbox only when the broker
//!   acknowledged it (PUBACK), so a killed adapter loses nothing it acknowledged.
//! - the `uplinks` part turns every device listener off and subscribes to the bus (persistent
//!   session, QoS 1, `<topic_prefix>/readings/+/+/+`; each adapter's retained online/offline
//!   status is on `<topic_prefix>/status/<gateway>/<part>`); each message is stored in its outbox as it is,
//!   under the id the adapter gave it ([`wardgate_core::IngestPipeline::forward`]), and
//!   PUBACKed only once durable. The configured `[[uplinks]]` and `[selector]` deliver from there.
//!   With `[split.jetstream]` (a NATS bus) it reads through a JetStream consumer shared by every
//!   worker instead (`wardgate::jetstream`).
//!
//! Each part gets its own outbox and audit file (`outbox.db` becomes `outbox-coap.db`), so parts
//! on one host never share a file. What the broker must do for the promise to hold (persistence,
//! no queue limit for the `uplinks` session, the session existing before adapters publish) is
//! in `docs/scale-out.md`.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use wardgate_core::validate::Problems;
use wardgate_mqtt::TlsConfig;
use wardgate_mqtt::southbound::{MqttIngestConfig, PayloadFormat};

use crate::gateway::{GatewayConfig, UplinkConfig};

/// `[split]`: the broker the parts of a split gateway exchange readings through. `Debug`
/// redacts the password.
#[derive(Clone, Deserialize, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SplitConfig {
    /// `mqtt://host[:port]` or `mqtts://host[:port]`. Required for `--only`.
    #[serde(serialize_with = "wardgate_core::config_doc::redact_optional_url")]
    pub broker: Option<String>,
    /// User name on the bus broker.
    pub username: Option<String>,
    /// Password on the bus broker; use `${VAR}` interpolation.
    #[serde(serialize_with = "wardgate_core::config_doc::redact")]
    pub password: Option<String>,
    /// First topic level(s) of the bus (default `wardgate/bus`).
    pub topic_prefix: String,
    /// Readings the `uplinks` part holds un-acknowledged while they become durable
    /// (default 256; keep it at or above the broker's per-client in-flight limit).
    pub max_inflight: u16,
    /// Several `uplinks` parts share the bus: each subscribes as a member of this shared
    /// subscription group (`$share/<group>/…`), and the broker hands each reading to one of them.
    /// Each worker needs its own `[gateway] id` (its session is kept under it). Unset: one
    /// `uplinks` part takes everything. Needs a broker with shared subscriptions for MQTT 3.1.1
    /// clients (Mosquitto 2, EMQX, HiveMQ); on NATS the workers share `[split.jetstream]` instead.
    pub shared_group: Option<String>,
    /// TLS for `mqtts://`.
    pub tls: TlsConfig,
    /// The `uplinks` workers read the bus through one durable JetStream consumer they share
    /// (a NATS bus: NATS's MQTT listener has no shared subscriptions). Unset: an MQTT
    /// subscription. See `docs/scale-out.md`.
    pub jetstream: Option<JetStreamConfig>,
}

/// `[split.jetstream]`: the shared consumer of the `uplinks` workers on a NATS JetStream bus.
/// The adapters still publish over MQTT (`broker`, NATS's MQTT listener); NATS stores each
/// reading in its `$MQTT_msgs` stream before acknowledging it, and every worker pulls from the
/// same durable consumer there: each reading goes to one worker, and to another one when it is
/// not acknowledged within `ack_wait`.
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct JetStreamConfig {
    /// NATS client URLs of the cluster's nodes (`nats://host:4222`); the worker connects to one
    /// and moves to another when it fails. The user name and password are `[split]`'s.
    pub servers: Vec<String>,
    /// Name of the durable consumer the workers share (default `wardgate-uplinks`).
    pub consumer: String,
    /// How long a reading handed to a worker may stay unacknowledged before JetStream hands
    /// it to another (default 30 s).
    #[schemars(with = "wardgate_core::config_doc::Duration")]
    #[serde(with = "humantime_serde")]
    pub ack_wait: std::time::Duration,
    /// Replicas of the `$MQTT_msgs` stream when a worker has to create it (before any MQTT
    /// client connected, NATS has not made it yet): the servers' `mqtt { stream_replicas }`
    /// (default 1).
    pub stream_replicas: usize,
}

impl Default for JetStreamConfig {
    fn default() -> Self {
        JetStreamConfig {
            servers: Vec::new(),
            consumer: "wardgate-uplinks".into(),
            ack_wait: std::time::Duration::from_secs(30),
            stream_replicas: 1,
        }
    }
}

impl JetStreamConfig {
    fn validate(&self, at: &str, split: &SplitConfig, p: &mut Problems) {
        if self.servers.is_empty() {
            p.push(
                format!("{at}.servers"),
                "name at least one nats://host:port",
            );
        }
        for s in &self.servers {
            if !s.starts_with("nats://") {
                p.push(
                    format!("{at}.servers"),
                    format!(
                        "{}: only nats:// is supported (TLS to NATS is not built yet)",
                        wardgate_mqtt::url::redact(s)
                    ),
                );
            }
        }
        if self.consumer.is_empty()
            || self.consumer.len() > 64
            || !self
                .consumer
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            p.push(
                format!("{at}.consumer"),
                "must be 1-64 of [A-Za-z0-9_-] (a JetStream durable name)",
            );
        }
        if self.ack_wait < std::time::Duration::from_secs(1) {
            p.push(format!("{at}.ack_wait"), "must be at least 1s");
        }
        if !(1..=5).contains(&self.stream_replicas) {
            p.push(format!("{at}.stream_replicas"), "must be 1 to 5");
        }
        if split.shared_group.is_some() {
            p.push(
                at.to_string(),
                "the workers share the JetStream consumer: leave [split] shared_group unset",
            );
        }
        if split.topic_prefix.contains(['.', ' ']) {
            p.push(
                "split.topic_prefix",
                "NATS refuses MQTT topics with '.' or ' ': choose a prefix without them",
            );
        }
    }

    /// The consumer's filter: the bus readings topic as a subject of `$MQTT_msgs`.
    pub fn filter_subject(&self, topic_prefix: &str) -> String {
        format!("$MQTT.msgs.{}.readings.>", topic_prefix.replace('/', "."))
    }
}

impl Default for SplitConfig {
    fn default() -> Self {
        SplitConfig {
            broker: None,
            username: None,
            password: None,
            topic_prefix: "wardgate/bus".into(),
            max_inflight: 256,
            shared_group: None,
            tls: TlsConfig::default(),
            jetstream: None,
        }
    }
}

impl std::fmt::Debug for SplitConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SplitConfig")
            .field(
                "broker",
                &self.broker.as_deref().map(wardgate_mqtt::url::redact),
            )
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("topic_prefix", &self.topic_prefix)
            .field("max_inflight", &self.max_inflight)
            .field("shared_group", &self.shared_group)
            .field("tls", &self.tls)
            .field("jetstream", &self.jetstream)
            .finish()
    }
}

impl SplitConfig {
    pub(crate) fn validate(&self, at: &str, p: &mut Problems) {
        if let Some(url) = &self.broker
            && let Err(e) = wardgate_mqtt::url::BrokerUrl::parse(url)
        {
            p.push(format!("{at}.broker"), e.to_string());
        }
        let prefix = &self.topic_prefix;
        if prefix.is_empty()
            || prefix.starts_with('/')
            || prefix.ends_with('/')
            || prefix.contains(['+', '#', '\0'])
        {
            p.push(
                format!("{at}.topic_prefix"),
                "must be topic levels without wildcards, without a leading or trailing /",
            );
        }
        if self.max_inflight == 0 {
            p.push(format!("{at}.max_inflight"), "must be at least 1");
        }
        if let Some(g) = &self.shared_group
            && (g.is_empty() || g.contains(['/', '+', '#', '\0']))
        {
            p.push(
                format!("{at}.shared_group"),
                "must be a non-empty name without /, + or #",
            );
        }
        if let Some(js) = &self.jetstream {
            js.validate(&format!("{at}.jetstream"), self, p);
        }
    }
}

/// One part of a split gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// CoAP, CoAP over DTLS and the LwM2M server on them (they share ports 5683/5684).
    Coap,
    /// HTTPS device ingest (`[ingest.http]`).
    HttpIn,
    /// The MQTT southbound subscribers (`[[ingest.mqtt]]`).
    MqttIn,
    /// The bus subscriber, the outbox of record and the `[[uplinks]]` with the `[selector]`.
    Uplinks,
}

impl Part {
    /// Every part, in the order `--help` lists them.
    pub const ALL: [Part; 4] = [Part::Coap, Part::HttpIn, Part::MqttIn, Part::Uplinks];

    /// Its name on the command line, in client ids and file names.
    pub fn as_str(self) -> &'static str {
        match self {
            Part::Coap => "coap",
            Part::HttpIn => "http-in",
            Part::MqttIn => "mqtt-in",
            Part::Uplinks => "uplinks",
        }
    }
}

impl FromStr for Part {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Part::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Part::ALL.iter().map(|p| p.as_str()).collect();
                format!("unknown part {s:?} (expected one of: {})", names.join(", "))
            })
    }
}

impl std::fmt::Display for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The configuration of one part (see the module doc). Every problem is reported at once, with
/// the key to change.
pub fn restrict(cfg: &GatewayConfig, part: Part) -> Result<GatewayConfig, Problems> {
    let mut p = Problems::new();
    let Some(broker) = cfg.split.broker.clone() else {
        p.push(
            "split.broker",
            "--only needs the MQTT broker the parts exchange readings through ([split] broker)",
        );
        return Err(p);
    };
    let mut out = cfg.clone();
    let (coap, http_in, mqtt_in) = (
        part == Part::Coap,
        part == Part::HttpIn,
        part == Part::MqttIn,
    );
    out.coap.enabled &= coap;
    out.coaps.enabled &= coap;
    out.lwm2m.enabled &= coap;
    out.ingest.http.enabled &= http_in;
    if !mqtt_in {
        out.ingest.mqtt.clear();
    }
    let nothing = match part {
        Part::Coap => (!out.coap.enabled && !out.coaps.enabled).then_some("[coap] and [coaps]"),
        Part::HttpIn => (!out.ingest.http.enabled).then_some("[ingest.http]"),
        Part::MqttIn => out.ingest.mqtt.is_empty().then_some("[[ingest.mqtt]]"),
        Part::Uplinks => None,
    };
    if let Some(what) = nothing {
        p.push(
            "--only",
            format!("{part}: nothing to run: {what} is not enabled in the configuration"),
        );
    }
    if part == Part::Uplinks && cfg.split.jetstream.is_some() {
        // The bus is read through the shared JetStream consumer (`wardgate::jetstream`).
        out.ingest.mqtt.clear();
    } else if part == Part::Uplinks {
        match bus_subscriber(cfg, &broker) {
            Ok(sub) => out.ingest.mqtt = vec![sub],
            Err(e) => p.push("split", e),
        }
    } else {
        match bus_uplink(cfg, &broker, part) {
            Ok(up) => out.uplinks = vec![up],
            Err(e) => p.push("split", e),
        }
        // The uplinks part routes; an adapter owes everything to the bus.
        out.selector = None;
    }
    out.store.path = with_part(&cfg.store.path, part);
    out.audit.path = cfg.audit.path.as_deref().map(|a| with_part(a, part));
    if p.is_empty() { Ok(out) } else { Err(p) }
}

/// `dir/outbox.db` → `dir/outbox-coap.db`.
fn with_part(path: &Path, part: Part) -> PathBuf {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
    let name = match (stem, path.extension()) {
        (Some(stem), Some(ext)) => format!("{stem}-{part}.{}", ext.to_string_lossy()),
        (Some(stem), None) => format!("{stem}-{part}"),
        (None, _) => part.to_string(),
    };
    path.with_file_name(name)
}

/// A TOML table with the bus broker's connection settings.
fn connection(cfg: &GatewayConfig, broker: &str, name: &str, client_id: String) -> toml::Table {
    let mut t = toml::Table::new();
    t.insert("name".into(), name.into());
    t.insert("url".into(), broker.into());
    t.insert("client_id".into(), client_id.into());
    for (key, value) in [
        ("username", &cfg.split.username),
        ("password", &cfg.split.password),
    ] {
        if let Some(v) = value {
            t.insert(key.into(), v.clone().into());
        }
    }
    t
}

/// The adapter part's one uplink.
fn bus_uplink(cfg: &GatewayConfig, broker: &str, part: Part) -> Result<UplinkConfig, String> {
    let id = &cfg.gateway.id;
    let prefix = &cfg.split.topic_prefix;
    let mut t = connection(cfg, broker, "bus", format!("{id}-{part}"));
    t.insert("type".into(), "mqtt".into());
    t.insert("qos".into(), 1.into());
    // 3.1.1 like the subscriber: every broker speaks it (NATS refuses MQTT 5 at CONNECT).
    t.insert("version".into(), "3.1.1".into());
    t.insert(
        "topic".into(),
        format!("{prefix}/readings/{{gateway}}/{{class}}/{{device}}").into(),
    );
    t.insert(
        "status_topic".into(),
        format!("{prefix}/status/{id}/{part}").into(),
    );
    let mut up = UplinkConfig::deserialize(toml::Value::Table(t)).map_err(|e| e.to_string())?;
    if let UplinkConfig::Mqtt(m) = &mut up {
        m.tls = cfg.split.tls.clone();
    }
    Ok(up)
}

/// The `uplinks` part's subscription to the bus.
fn bus_subscriber(cfg: &GatewayConfig, broker: &str) -> Result<MqttIngestConfig, String> {
    let id = &cfg.gateway.id;
    let mut t = connection(cfg, broker, "bus", format!("{id}-uplinks"));
    let mut topic = toml::Table::new();
    let filter = format!("{}/readings/+/+/+", cfg.split.topic_prefix);
    let filter = match &cfg.split.shared_group {
        Some(group) => format!("$share/{group}/{filter}"),
        None => filter,
    };
    topic.insert("filter".into(), filter.into());
    let levels = cfg.split.topic_prefix.split('/').count();
    topic.insert(
        "device_level".into(),
        i64::try_from(levels + 4).unwrap_or(i64::MAX).into(),
    );
    t.insert("topics".into(), vec![toml::Value::Table(topic)].into());
    t.insert("qos".into(), 1.into());
    t.insert(
        "max_inflight".into(),
        i64::from(cfg.split.max_inflight).into(),
    );
    let mut sub =
        MqttIngestConfig::deserialize(toml::Value::Table(t)).map_err(|e| e.to_string())?;
    for topic in &mut sub.topics {
        topic.format = PayloadFormat::Reading;
    }
    sub.tls = cfg.split.tls.clone();
    Ok(sub)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> GatewayConfig {
        let text = format!(
            "[gateway]\nid = \"ward-7\"\n[store]\npath = \"/var/lib/wardgate/outbox.db\"\n\
             [audit]\npath = \"/var/lib/wardgate/audit.jsonl\"\n\
             [[uplinks]]\ntype = \"file\"\nname = \"out\"\npath = \"-\"\n{extra}"
        );
        crate::parse(&text, &|_| None).unwrap_or_else(|e| panic!("{e}"))
    }

    /// What `crate::parse` finds wrong in `text` (it must find something).
    fn problems(text: &str) -> Vec<crate::Problem> {
        let Err(crate::ConfigError::Invalid(problems)) = crate::parse(text, &|_| None) else {
            panic!("expected problems");
        };
        problems
    }

    const SPLIT: &str =
        "[split]\nbroker = \"mqtt://bus:1883\"\nusername = \"wg\"\npassword = \"s3cret\"\n";

    #[test]
    fn an_adapter_part_keeps_its_listeners_and_owes_everything_to_the_bus() {
        let c = cfg(&format!(
            "{SPLIT}[selector]\n[ingest.http]\nenabled = true\nlisten = \"127.0.0.1:8443\"\n"
        ));
        let coap = restrict(&c, Part::Coap).unwrap_or_else(|e| panic!("{e:?}"));
        assert!(coap.coap.enabled && !coap.ingest.http.enabled && coap.selector.is_none());
        let [UplinkConfig::Mqtt(bus)] = coap.uplinks.as_slice() else {
            panic!("one MQTT uplink: {:?}", coap.uplinks);
        };
        assert_eq!(bus.url, "mqtt://bus:1883");
        assert_eq!(bus.client_id.as_deref(), Some("ward-7-coap"));
        assert_eq!(
            bus.topic,
            "wardgate/bus/readings/{gateway}/{class}/{device}"
        );
        assert_eq!(bus.qos, 1);
        assert_eq!(bus.version, wardgate_mqtt::MqttVersion::V311);
        assert_eq!(bus.password.as_deref(), Some("s3cret"));
        assert_eq!(
            coap.store.path,
            Path::new("/var/lib/wardgate/outbox-coap.db")
        );
        assert_eq!(
            coap.audit.path.as_deref(),
            Some(Path::new("/var/lib/wardgate/audit-coap.jsonl"))
        );
        let http = restrict(&c, Part::HttpIn).unwrap_or_else(|e| panic!("{e:?}"));
        assert!(!http.coap.enabled && !http.lwm2m.enabled && http.ingest.http.enabled);
        assert_eq!(
            http.store.path,
            Path::new("/var/lib/wardgate/outbox-http-in.db")
        );
    }

    #[test]
    fn the_uplinks_part_subscribes_to_the_bus_and_keeps_the_uplinks() {
        let c = cfg(&format!("{SPLIT}topic_prefix = \"h1/bus\"\n[selector]\n"));
        let up = restrict(&c, Part::Uplinks).unwrap_or_else(|e| panic!("{e:?}"));
        assert!(!up.coap.enabled && !up.coaps.enabled && !up.lwm2m.enabled);
        assert!(up.selector.is_some());
        assert_eq!(up.uplinks, c.uplinks);
        let [sub] = up.ingest.mqtt.as_slice() else {
            panic!("one subscriber");
        };
        assert_eq!(sub.client_id, "ward-7-uplinks");
        assert_eq!(sub.topics[0].filter, "h1/bus/readings/+/+/+");
        assert_eq!(sub.topics[0].device_level, 6);
        assert_eq!(sub.topics[0].format, PayloadFormat::Reading);
        assert_eq!(sub.max_inflight, 256);
        let shared = cfg(&format!("{SPLIT}shared_group = \"hub\"\n"));
        let up = restrict(&shared, Part::Uplinks).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            up.ingest.mqtt[0].topics[0].filter,
            "$share/hub/wardgate/bus/readings/+/+/+"
        );
        let mut problems = Problems::new();
        sub.validate("x", &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
    }

    #[test]
    fn a_part_without_a_broker_or_without_its_adapter_is_refused_with_the_key_to_change() {
        let e = restrict(&cfg(""), Part::Coap).unwrap_err().into_vec();
        assert_eq!(e[0].path, "split.broker");
        let e = restrict(&cfg(SPLIT), Part::MqttIn).unwrap_err().into_vec();
        assert_eq!(e[0].path, "--only");
        assert!(e[0].message.contains("[[ingest.mqtt]]"), "{e:?}");
        let no_coap = format!("{SPLIT}[coap]\nenabled = false\n");
        assert!(restrict(&cfg(&no_coap), Part::Coap).is_err());
        assert_eq!("http-in".parse::<Part>(), Ok(Part::HttpIn));
        assert!(
            "lwm2m"
                .parse::<Part>()
                .unwrap_err()
                .contains("coap, http-in")
        );
    }

    #[test]
    fn split_settings_are_validated_and_the_password_is_not_printed() {
        let text = "[split]\nbroker = \"ftp://x\"\ntopic_prefix = \"a/#\"\npassword = \"s3cret\"\n\
                    shared_group = \"a/b\"\n\
                    [[uplinks]]\ntype = \"file\"\nname = \"out\"\npath = \"-\"\n";
        let problems = problems(text);
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            ["split.broker", "split.topic_prefix", "split.shared_group"]
        );
        let c = cfg(SPLIT);
        assert!(!format!("{:?}", c.split).contains("s3cret"));
    }

    #[test]
    fn a_jetstream_bus_replaces_the_uplinks_subscription_and_is_validated() {
        let js = format!(
            "{SPLIT}[split.jetstream]\nservers = [\"nats://n1:4222\", \"nats://n2:4222\"]\n"
        );
        let c = cfg(&js);
        let uplinks = restrict(&c, Part::Uplinks).unwrap_or_else(|e| panic!("{e:?}"));
        assert!(uplinks.ingest.mqtt.is_empty(), "no MQTT subscription");
        let j = uplinks.split.jetstream.as_ref().unwrap();
        assert_eq!(j.consumer, "wardgate-uplinks");
        assert_eq!(j.ack_wait, std::time::Duration::from_secs(30));
        assert_eq!(
            j.filter_subject(&uplinks.split.topic_prefix),
            "$MQTT.msgs.wardgate.bus.readings.>"
        );
        // The adapters still publish over MQTT.
        let coap = restrict(&c, Part::Coap).unwrap_or_else(|e| panic!("{e:?}"));
        assert!(matches!(coap.uplinks.as_slice(), [UplinkConfig::Mqtt(_)]));

        let text = "[split]\nbroker = \"mqtt://x\"\ntopic_prefix = \"a.b\"\nshared_group = \"g\"\n\
                    [split.jetstream]\nservers = [\"tls://u:pw@n1:4222\"]\nconsumer = \"a.b\"\n\
                    ack_wait = \"10ms\"\nstream_replicas = 7\n\
                    [[uplinks]]\ntype = \"file\"\nname = \"out\"\npath = \"-\"\n";
        let problems = problems(text);
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "split.jetstream.servers",
                "split.jetstream.consumer",
                "split.jetstream.ack_wait",
                "split.jetstream.stream_replicas",
                "split.jetstream",
                "split.topic_prefix",
            ]
        );
        assert!(
            !problems.iter().any(|p| p.message.contains("pw")),
            "{problems:?}"
        );
    }
}
