//! `type = "mqtt"` uplink settings (one `[[uplinks]]` entry).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wardgate_core::validate::Problems;

/// MQTT protocol version spoken to the broker.
#[derive(
    Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default, Serialize, schemars::JsonSchema,
)]
pub enum MqttVersion {
    /// MQTT 3.1.1.
    #[serde(rename = "3.1.1")]
    V311,
    /// MQTT 5.
    #[default]
    #[serde(rename = "5")]
    V5,
}

/// An MQTT uplink. `Debug` redacts the password, and the user info of the URL.
#[derive(Clone, Deserialize, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MqttUplinkConfig {
    /// Unique uplink name (metrics label, admin API, store cursor key).
    pub name: String,
    /// `mqtt://host[:port]` (default port 1883), `mqtts://host[:port]` (default 8883), or MQTT
    /// over WebSockets for networks that only let HTTPS out: `wss://host[:port]/path` (default
    /// port 443; TLS with the `tls` settings) or `ws://host[:port]/path` (default 80; like
    /// `mqtt://`, unencrypted).
    #[serde(serialize_with = "wardgate_core::config_doc::redact_url")]
    pub url: String,
    /// Protocol version.
    #[serde(default)]
    pub version: MqttVersion,
    /// Client id; default `wardgate-{gateway}-{name}`.
    #[serde(default)]
    pub client_id: Option<String>,
    /// User name. A `password` without a user name is sent with an empty user name.
    #[serde(default)]
    pub username: Option<String>,
    /// Password; use `${VAR}` interpolation, never a literal secret in the file.
    #[serde(default, serialize_with = "wardgate_core::config_doc::redact")]
    pub password: Option<String>,
    /// QoS for readings: 1 (default, delivery confirmed by PUBACK) or 0 (fire and forget:
    /// a reading counts as delivered once written to the socket).
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// Topic template. Fields: `{gateway}`, `{device}`, `{class}`.
    #[serde(default = "default_topic")]
    pub topic: String,
    /// Status topic template (retained `online` birth, `offline` will). Field: `{gateway}`.
    #[serde(default = "default_status_topic")]
    pub status_topic: String,
    /// Keep-alive interval.
    #[schemars(with = "wardgate_core::config_doc::Duration")]
    #[serde(default = "default_keep_alive", with = "humantime_serde")]
    pub keep_alive: Duration,
    /// Most publishes awaiting PUBACK at once.
    #[serde(default = "default_max_inflight")]
    pub max_inflight: u16,
    /// A reading whose PUBACK has not come this long after it was written is reported timed
    /// out (the selector counts it; the uplink reports itself not ready) while the connection
    /// stays up: a broker that hangs with the TCP connection open is noticed here, not only by
    /// the keep-alive. The reading stays in flight on the connection (not published twice).
    #[schemars(with = "wardgate_core::config_doc::Duration")]
    #[serde(default = "default_ack_timeout", with = "humantime_serde")]
    pub ack_timeout: Duration,
    /// First reconnect delay; doubles per failure up to `reconnect_max`, with full jitter.
    #[schemars(with = "wardgate_core::config_doc::Duration")]
    #[serde(default = "default_reconnect_min", with = "humantime_serde")]
    pub reconnect_min: Duration,
    /// Longest reconnect delay.
    #[schemars(with = "wardgate_core::config_doc::Duration")]
    #[serde(default = "default_reconnect_max", with = "humantime_serde")]
    pub reconnect_max: Duration,
    /// First reconnect delay after the broker refused our credentials (CONNACK "bad user name
    /// or password" / "not authorized"); doubles per refusal up to `refused_retry_max`, with
    /// jitter. Much longer than `reconnect_min`: retrying the same credentials soon cannot
    /// succeed, and brokers may lock out a client that keeps trying.
    #[schemars(with = "wardgate_core::config_doc::Duration")]
    #[serde(default = "default_refused_retry_min", with = "humantime_serde")]
    pub refused_retry_min: Duration,
    /// Longest reconnect delay after refused credentials.
    #[schemars(with = "wardgate_core::config_doc::Duration")]
    #[serde(default = "default_refused_retry_max", with = "humantime_serde")]
    pub refused_retry_max: Duration,
    /// Longest wait at shutdown for the retained `offline` status to be acknowledged and the
    /// DISCONNECT to be written. Past it the socket is dropped and the broker publishes the will.
    #[schemars(with = "wardgate_core::config_doc::Duration")]
    #[serde(default = "default_shutdown_timeout", with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Largest PUBLISH packet sent, in bytes (an MQTT 5 broker's own lower limit from CONNACK
    /// wins). A reading that cannot fit is dropped for this uplink and counted
    /// (`wardgate_mqtt_readings_dropped_total{reason="too_large"}`): retrying could never succeed.
    #[serde(default = "default_max_packet_size")]
    pub max_packet_size: u32,
    /// TLS settings for `mqtts://` and `wss://`.
    #[serde(default)]
    pub tls: TlsConfig,
}

impl std::fmt::Debug for MqttUplinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttUplinkConfig")
            .field("name", &self.name)
            .field("url", &crate::url::redact(&self.url))
            .field("version", &self.version)
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("qos", &self.qos)
            .field("topic", &self.topic)
            .field("status_topic", &self.status_topic)
            .field("keep_alive", &self.keep_alive)
            .field("max_inflight", &self.max_inflight)
            .field("reconnect_min", &self.reconnect_min)
            .field("reconnect_max", &self.reconnect_max)
            .field("refused_retry_min", &self.refused_retry_min)
            .field("refused_retry_max", &self.refused_retry_max)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("max_packet_size", &self.max_packet_size)
            .field("tls", &self.tls)
            .finish()
    }
}

/// TLS settings for an `mqtts://` or `wss://` connection.
#[derive(Debug, Clone, Deserialize, PartialEq, Default, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM bundle of CAs to trust instead of the built-in roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain for mutual TLS.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key for `client_cert_file`.
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
    /// Name checked against the server certificate (default: the URL's host).
    #[serde(default)]
    pub server_name: Option<String>,
}

fn default_qos() -> u8 {
    1
}
fn default_topic() -> String {
    "wardgate/{gateway}/{device}/{class}".into()
}
fn default_status_topic() -> String {
    "wardgate/{gateway}/status".into()
}
fn default_keep_alive() -> Duration {
    Duration::from_secs(30)
}
fn default_max_inflight() -> u16 {
    256
}
fn default_reconnect_min() -> Duration {
    Duration::from_millis(250)
}
fn default_reconnect_max() -> Duration {
    Duration::from_secs(30)
}
fn default_refused_retry_min() -> Duration {
    Duration::from_secs(30)
}
fn default_refused_retry_max() -> Duration {
    Duration::from_secs(5 * 60)
}
fn default_ack_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_max_packet_size() -> u32 {
    1024 * 1024
}

impl MqttUplinkConfig {
    /// Builds the uplink: validates this section (the same rules as [`Self::validate`]), reads
    /// the TLS files, and registers its health check `uplink.<name>` with `health`. Nothing
    /// connects until the uplink is started.
    pub fn build(
        &self,
        gateway_id: &str,
        metrics: crate::MqttMetrics,
        health: &wardgate_core::Health,
    ) -> Result<crate::MqttUplink, crate::MqttError> {
        let reporter = health.reporter(
            format!("uplink.{}", self.name),
            wardgate_core::health::ComponentKind::Uplink,
        );
        crate::MqttUplink::new(self.clone(), gateway_id, metrics, reporter)
    }

    /// Adds every problem in this uplink to `p`; `at` is its path, e.g. `uplinks[0]`.
    pub fn validate(&self, at: &str, p: &mut Problems) {
        if self.qos > 1 {
            p.push(format!("{at}.qos"), "must be 0 or 1");
        }
        if self.max_inflight == 0 {
            p.push(format!("{at}.max_inflight"), "must be at least 1");
        }
        for (min_name, min, max_name, max) in [
            (
                "reconnect_min",
                self.reconnect_min,
                "reconnect_max",
                self.reconnect_max,
            ),
            (
                "refused_retry_min",
                self.refused_retry_min,
                "refused_retry_max",
                self.refused_retry_max,
            ),
        ] {
            if min > max {
                p.push(
                    format!("{at}.{min_name}"),
                    format!("must not exceed {max_name}"),
                );
            }
            if min.is_zero() {
                p.push(format!("{at}.{min_name}"), "must be more than 0s");
            }
        }
        if self.keep_alive < Duration::from_secs(5) {
            p.push(format!("{at}.keep_alive"), "must be at least 5s");
        }
        if let Err(e) = crate::url::BrokerUrl::parse(&self.url) {
            p.push(format!("{at}.url"), e.to_string());
        }
        if let Err(e) = crate::topic::TopicTemplate::readings(&self.topic) {
            p.push(format!("{at}.topic"), e.to_string());
        }
        if let Err(e) = crate::topic::TopicTemplate::status(&self.status_topic) {
            p.push(format!("{at}.status_topic"), e.to_string());
        }
        if self.ack_timeout < Duration::from_millis(100) {
            p.push(format!("{at}.ack_timeout"), "must be at least 100ms");
        }
        if self.shutdown_timeout.is_zero() {
            p.push(format!("{at}.shutdown_timeout"), "must be more than 0s");
        }
        if self.max_packet_size < 1024 {
            p.push(
                format!("{at}.max_packet_size"),
                "must be at least 1024 bytes",
            );
        }
        let tls = &self.tls;
        validate_tls(at, &self.url, tls, p);
    }
}

/// The TLS rules shared by the uplink and the southbound subscriber.
pub(crate) fn validate_tls(at: &str, url: &str, tls: &TlsConfig, p: &mut Problems) {
    let uses_tls = crate::url::BrokerUrl::parse(url).is_ok_and(|u| u.tls);
    if *tls != TlsConfig::default() && !uses_tls {
        p.push(
            format!("{at}.tls"),
            "TLS settings need an mqtts:// or wss:// url",
        );
    }
    if tls.client_cert_file.is_some() != tls.client_key_file.is_some() {
        p.push(
            format!("{at}.tls"),
            "client_cert_file and client_key_file go together",
        );
    }
    for (field, file) in [
        ("ca_file", &tls.ca_file),
        ("client_cert_file", &tls.client_cert_file),
        ("client_key_file", &tls.client_key_file),
    ] {
        if let Some(f) = file {
            if !f.is_file() {
                p.push(
                    format!("{at}.tls.{field}"),
                    format!("{} is not a readable file", f.display()),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: serde_json::Value) -> MqttUplinkConfig {
        serde_json::from_value(json).unwrap_or_else(|e| panic!("config parses: {e}"))
    }

    fn problems(cfg: &MqttUplinkConfig) -> Vec<String> {
        let mut p = Problems::new();
        cfg.validate("uplinks[0]", &mut p);
        p.into_vec().into_iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn minimal_uplink_gets_documented_defaults_and_validates() {
        let cfg = parse(serde_json::json!({ "name": "cloud", "url": "mqtt://broker:1883" }));
        assert_eq!(cfg.version, MqttVersion::V5);
        assert_eq!(cfg.qos, 1);
        assert_eq!(cfg.topic, "wardgate/{gateway}/{device}/{class}");
        assert_eq!(cfg.status_topic, "wardgate/{gateway}/status");
        assert_eq!(cfg.max_inflight, 256);
        assert_eq!(cfg.shutdown_timeout, Duration::from_secs(5));
        assert_eq!(cfg.max_packet_size, 1024 * 1024);
        assert_eq!(cfg.refused_retry_min, Duration::from_secs(30));
        assert_eq!(cfg.refused_retry_max, Duration::from_secs(300));
        assert!(problems(&cfg).is_empty(), "{:?}", problems(&cfg));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let cfg = parse(serde_json::json!({
            "name": "cloud",
            "url": "mqtt://user@broker",
            "qos": 2,
            "topic": "wardgate/{devic}",
            "status_topic": "wardgate/{device}/status",
            "max_inflight": 0,
            "tls": { "server_name": "broker" },
        }));
        let found = problems(&cfg);
        for path in [
            "uplinks[0].url",
            "uplinks[0].qos",
            "uplinks[0].topic",
            "uplinks[0].status_topic",
            "uplinks[0].max_inflight",
            "uplinks[0].tls",
        ] {
            assert!(
                found.iter().any(|p| p.starts_with(&format!("{path}:"))),
                "{path} in {found:?}"
            );
        }
    }

    #[test]
    fn the_refused_credentials_backoff_must_be_positive_and_ordered() {
        let cfg = parse(serde_json::json!({
            "name": "cloud", "url": "mqtt://b",
            "refused_retry_min": "10m", "refused_retry_max": "1m",
        }));
        let found = problems(&cfg);
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("uplinks[0].refused_retry_min:")),
            "{found:?}"
        );
        let cfg = parse(serde_json::json!({
            "name": "cloud", "url": "mqtt://b", "refused_retry_min": "0s",
        }));
        assert!(
            problems(&cfg)
                .iter()
                .any(|p| p.contains("refused_retry_min: must be more than 0s")),
            "{:?}",
            problems(&cfg)
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        let r: Result<MqttUplinkConfig, _> = serde_json::from_value(serde_json::json!({
            "name": "cloud", "url": "mqtt://b", "retain": true
        }));
        assert!(r.is_err());
    }

    #[test]
    fn a_password_in_the_url_appears_in_no_problem_and_no_debug_output() {
        for url in [
            "mqtt://user:s3cret@broker:1883",
            "ssl://user:s3cret@broker:8883",
            "mqtt://user:s3cret",
        ] {
            let cfg = parse(serde_json::json!({ "name": "cloud", "url": url }));
            let found = problems(&cfg);
            assert!(
                found.iter().any(|p| p.starts_with("uplinks[0].url:")),
                "{url}: {found:?}"
            );
            let shown = format!("{found:?} {cfg:?}");
            assert!(!shown.contains("s3cret"), "{url}: {shown}");
        }
    }

    #[test]
    fn debug_output_never_shows_the_password() {
        let cfg = parse(serde_json::json!({
            "name": "cloud", "url": "mqtt://b", "username": "u", "password": "hunter2"
        }));
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }
}
