//! Settings of one MQTT southbound subscriber (one `[[mqtt_ingest]]` entry, as the gateway's
//! config will name it).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use wardgate_core::MessageClass;
use wardgate_core::validate::Problems;

use crate::config::TlsConfig;

/// How the payloads on a topic are decoded.
#[derive(
    Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum PayloadFormat {
    /// SenML JSON (RFC 8428), `application/senml+json`.
    SenmlJson,
    /// SenML CBOR (RFC 8428), `application/senml+cbor`.
    SenmlCbor,
    /// A JSON object of named values (`{"spo2": 97}`), as CoAP Content-Format 50.
    Json,
    /// A CBOR map of named values, as CoAP Content-Format 60.
    Cbor,
    /// Told apart by the first byte (the default): a JSON array is SenML JSON, a JSON object
    /// plain JSON, a CBOR array SenML CBOR, a CBOR map plain CBOR; anything else is refused as
    /// an unsupported format.
    #[default]
    Auto,
    /// A `wardgate.reading/1` another part of a split gateway took and normalized (the bus of
    /// `wardgate run --only uplinks`): stored as it is, under its own id, without a second
    /// authorization. Only the split wiring sets it; a config file cannot (it would let any
    /// publisher on the broker write for any device).
    #[serde(skip)]
    Reading,
}

/// One subscription: a topic filter and how to read what arrives on it.
#[derive(Debug, Clone, Deserialize, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TopicConfig {
    /// MQTT topic filter subscribed to, e.g. `ward/+/senml`. Filters should not overlap: a
    /// broker may deliver a message once per matching subscription (each copy would become a
    /// reading); the first filter in the list that matches a topic decides how it is read.
    pub filter: String,
    /// Which level of the topic holds the device id, counting from 1: in `ward/+/senml` the
    /// device is level 2. It must be a `+` level of the filter, or a level at or below its `#`.
    /// Required: it depends on the filter.
    pub device_level: usize,
    /// How payloads are decoded (default `auto`).
    #[serde(default)]
    pub format: PayloadFormat,
    /// Message class of the readings (default `vital`).
    #[serde(default)]
    pub class: MessageClass,
}

/// An MQTT southbound subscriber: ward sensors publish to a local broker and wardgate ingests
/// what they publish. `Debug` redacts the password and the user info of the URL.
#[derive(Clone, Deserialize, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MqttIngestConfig {
    /// Unique name (metrics label, health check `ingest.mqtt.<name>`).
    pub name: String,
    /// The sensors' broker: `mqtt://host[:port]` (1883), `mqtts://host[:port]` (8883),
    /// `ws://host[:port]/path` (80) or `wss://host[:port]/path` (443).
    #[serde(serialize_with = "wardgate_core::config_doc::redact_url")]
    pub url: String,
    /// Client id. Required and stable: the broker keeps this client's session (its
    /// subscriptions and the messages queued while wardgate is away) under this id. Two
    /// gateways must never share one.
    pub client_id: String,
    /// User name. A `password` without a user name is sent with an empty user name.
    #[serde(default)]
    pub username: Option<String>,
    /// Password; use `${VAR}` interpolation, never a literal secret in the file.
    #[serde(default, serialize_with = "wardgate_core::config_doc::redact")]
    pub password: Option<String>,
    /// What to subscribe to (at least one).
    pub topics: Vec<TopicConfig>,
    /// Subscription QoS: 1 (default: a message is acknowledged to the broker only once its
    /// reading is durable, so the broker keeps it until then) or 0 (the broker forgets a
    /// message once sent: a message in flight during a crash is lost).
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// Most messages awaiting durability (and so their PUBACK) at once. When it is reached the
    /// subscriber stops reading from the broker until the oldest is durable (TCP backpressure).
    /// Set it at or above the broker's own limit of unacknowledged messages per client
    /// (Mosquitto `max_inflight_messages`, 20 by default) so that this never happens in normal
    /// operation.
    #[serde(default = "default_max_inflight")]
    pub max_inflight: u16,
    /// Keep-alive interval (5 s to 18 h).
    #[schemars(with = "wardgate_core::config_doc::Duration")]
    #[serde(default = "default_keep_alive", with = "humantime_serde")]
    pub keep_alive: Duration,
    /// First reconnect delay; doubles per failure up to `reconnect_max`, with full jitter.
    #[schemars(with = "wardgate_core::config_doc::Duration")]
    #[serde(default = "default_reconnect_min", with = "humantime_serde")]
    pub reconnect_min: Duration,
    /// Longest reconnect delay.
    #[schemars(with = "wardgate_core::config_doc::Duration")]
    #[serde(default = "default_reconnect_max", with = "humantime_serde")]
    pub reconnect_max: Duration,
    /// Largest PUBLISH accepted from the broker, in bytes; a larger one fails the connection
    /// (rumqttc cannot skip it), so keep it above anything a sensor sends.
    #[serde(default = "default_max_packet_size")]
    pub max_packet_size: u32,
    /// Longest wait at shutdown for the messages in flight to become durable and be
    /// acknowledged before the DISCONNECT; past it the rest stay with the broker (redelivered
    /// at the next start).
    #[schemars(with = "wardgate_core::config_doc::Duration")]
    #[serde(default = "default_shutdown_timeout", with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// TLS settings for `mqtts://` and `wss://`.
    #[serde(default)]
    pub tls: TlsConfig,
}

impl std::fmt::Debug for MqttIngestConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttIngestConfig")
            .field("name", &self.name)
            .field("url", &crate::url::redact(&self.url))
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("topics", &self.topics)
            .field("qos", &self.qos)
            .field("max_inflight", &self.max_inflight)
            .field("keep_alive", &self.keep_alive)
            .field("reconnect_min", &self.reconnect_min)
            .field("reconnect_max", &self.reconnect_max)
            .field("max_packet_size", &self.max_packet_size)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("tls", &self.tls)
            .finish()
    }
}

fn default_qos() -> u8 {
    1
}
fn default_max_inflight() -> u16 {
    64
}
fn default_keep_alive() -> Duration {
    Duration::from_secs(30)
}
fn default_reconnect_min() -> Duration {
    Duration::from_millis(250)
}
fn default_reconnect_max() -> Duration {
    Duration::from_secs(30)
}
fn default_max_packet_size() -> u32 {
    256 * 1024
}
fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(5)
}

impl MqttIngestConfig {
    /// Adds every problem in this section to `p`; `at` is its path, e.g. `mqtt_ingest[0]`.
    pub fn validate(&self, at: &str, p: &mut Problems) {
        if self.name.is_empty() {
            p.push(format!("{at}.name"), "must not be empty");
        }
        if let Err(e) = crate::url::BrokerUrl::parse(&self.url) {
            p.push(format!("{at}.url"), e.to_string());
        }
        if self.client_id.is_empty() {
            p.push(
                format!("{at}.client_id"),
                "must not be empty: the broker keeps the session under it",
            );
        }
        if self.topics.is_empty() {
            p.push(format!("{at}.topics"), "at least one topic is needed");
        }
        for (i, t) in self.topics.iter().enumerate() {
            if let Err(e) = super::filter::TopicFilter::parse(t) {
                p.push(format!("{at}.topics[{i}]"), e);
            }
            if self.topics[..i].iter().any(|o| o.filter == t.filter) {
                p.push(format!("{at}.topics[{i}].filter"), "listed twice");
            }
        }
        if self.qos > 1 {
            p.push(format!("{at}.qos"), "must be 0 or 1");
        }
        if self.max_inflight == 0 {
            p.push(format!("{at}.max_inflight"), "must be at least 1");
        }
        if self.keep_alive < Duration::from_secs(5)
            || self.keep_alive > Duration::from_secs(u64::from(u16::MAX))
        {
            p.push(format!("{at}.keep_alive"), "must be from 5s to 65535s");
        }
        if self.reconnect_min.is_zero() {
            p.push(format!("{at}.reconnect_min"), "must be more than 0s");
        }
        if self.reconnect_min > self.reconnect_max {
            p.push(
                format!("{at}.reconnect_min"),
                "must not exceed reconnect_max",
            );
        }
        if self.max_packet_size < 1024 {
            p.push(
                format!("{at}.max_packet_size"),
                "must be at least 1024 bytes",
            );
        }
        if self.shutdown_timeout.is_zero() {
            p.push(format!("{at}.shutdown_timeout"), "must be more than 0s");
        }
        crate::config::validate_tls(at, &self.url, &self.tls, p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: serde_json::Value) -> MqttIngestConfig {
        serde_json::from_value(json).unwrap_or_else(|e| panic!("config parses: {e}"))
    }

    fn problems(cfg: &MqttIngestConfig) -> Vec<String> {
        let mut p = Problems::new();
        cfg.validate("mqtt_ingest[0]", &mut p);
        p.into_vec().into_iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn a_minimal_subscriber_gets_documented_defaults_and_validates() {
        let cfg = parse(serde_json::json!({
            "name": "ward", "url": "mqtt://127.0.0.1", "client_id": "wardgate-3a",
            "topics": [{ "filter": "ward/+/senml", "device_level": 2 }],
        }));
        assert_eq!(cfg.qos, 1);
        assert_eq!(cfg.max_inflight, 64);
        assert_eq!(cfg.keep_alive, Duration::from_secs(30));
        assert_eq!(cfg.reconnect_min, Duration::from_millis(250));
        assert_eq!(cfg.reconnect_max, Duration::from_secs(30));
        assert_eq!(cfg.max_packet_size, 256 * 1024);
        assert_eq!(cfg.shutdown_timeout, Duration::from_secs(5));
        assert_eq!(cfg.topics[0].format, PayloadFormat::Auto);
        assert_eq!(cfg.topics[0].class, MessageClass::Vital);
        assert!(problems(&cfg).is_empty(), "{:?}", problems(&cfg));
    }

    #[test]
    fn formats_and_classes_are_named_in_kebab_case() {
        let cfg = parse(serde_json::json!({
            "name": "ward", "url": "wss://broker/mqtt", "client_id": "c",
            "topics": [
                { "filter": "a/+", "device_level": 2, "format": "senml-cbor", "class": "alarm" },
                { "filter": "b/+", "device_level": 2, "format": "senml-json" },
                { "filter": "c/+", "device_level": 2, "format": "json" },
            ],
        }));
        assert_eq!(cfg.topics[0].format, PayloadFormat::SenmlCbor);
        assert_eq!(cfg.topics[0].class, MessageClass::Alarm);
        assert_eq!(cfg.topics[1].format, PayloadFormat::SenmlJson);
        assert_eq!(cfg.topics[2].format, PayloadFormat::Json);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let cfg = parse(serde_json::json!({
            "name": "", "url": "tcp://b", "client_id": "", "qos": 2, "max_inflight": 0,
            "keep_alive": "1s", "reconnect_min": "0s", "max_packet_size": 10,
            "shutdown_timeout": "0s",
            "topics": [
                { "filter": "ward/+/senml", "device_level": 1 },
                { "filter": "a/+", "device_level": 2 },
                { "filter": "a/+", "device_level": 2 },
            ],
            "tls": { "server_name": "b" },
        }));
        let found = problems(&cfg);
        for path in [
            "name",
            "url",
            "client_id",
            "qos",
            "max_inflight",
            "keep_alive",
            "reconnect_min",
            "max_packet_size",
            "shutdown_timeout",
            "topics[0]",
            "topics[2].filter",
            "tls",
        ] {
            let path = format!("mqtt_ingest[0].{path}:");
            assert!(
                found.iter().any(|p| p.starts_with(&path)),
                "{path} in {found:?}"
            );
        }
        let cfg = parse(serde_json::json!({
            "name": "w", "url": "mqtt://b", "client_id": "c", "topics": [],
        }));
        assert!(
            problems(&cfg)
                .iter()
                .any(|p| p.starts_with("mqtt_ingest[0].topics:")),
            "{:?}",
            problems(&cfg)
        );
    }

    #[test]
    fn unknown_fields_are_refused_in_the_section_and_in_topics() {
        let r: Result<MqttIngestConfig, _> = serde_json::from_value(serde_json::json!({
            "name": "w", "url": "mqtt://b", "client_id": "c", "clean_session": true,
            "topics": [{ "filter": "a/+", "device_level": 2 }],
        }));
        assert!(r.is_err());
        let r: Result<MqttIngestConfig, _> = serde_json::from_value(serde_json::json!({
            "name": "w", "url": "mqtt://b", "client_id": "c",
            "topics": [{ "filter": "a/+", "device_level": 2, "device": "x" }],
        }));
        assert!(r.is_err());
    }

    #[test]
    fn debug_output_and_problems_never_show_the_password() {
        let cfg = parse(serde_json::json!({
            "name": "w", "url": "mqtt://user:s3cret@b", "client_id": "c",
            "password": "hunter2",
            "topics": [{ "filter": "a/+", "device_level": 2 }],
        }));
        let shown = format!("{cfg:?} {:?}", problems(&cfg));
        assert!(
            !shown.contains("hunter2") && !shown.contains("s3cret"),
            "{shown}"
        );
        assert!(shown.contains("<redacted>"), "{shown}");
    }
}
