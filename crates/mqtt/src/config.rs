//! `type = "mqtt"` uplink settings (one `[[uplinks]]` entry).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use wardgate_core::validate::Problems;

/// MQTT protocol version spoken to the broker.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
pub enum MqttVersion {
    /// MQTT 3.1.1.
    #[serde(rename = "3.1.1")]
    V311,
    /// MQTT 5.
    #[default]
    #[serde(rename = "5")]
    V5,
}

/// An MQTT uplink.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MqttUplinkConfig {
    /// Unique uplink name (metrics label, admin API, store cursor key).
    pub name: String,
    /// `mqtt://host[:port]` (default port 1883) or `mqtts://host[:port]` (default 8883).
    pub url: String,
    /// Protocol version.
    #[serde(default)]
    pub version: MqttVersion,
    /// Client id; default `wardgate-{gateway}-{name}`.
    #[serde(default)]
    pub client_id: Option<String>,
    /// User name.
    #[serde(default)]
    pub username: Option<String>,
    /// Password; use `${VAR}` interpolation, never a literal secret in the file.
    #[serde(default)]
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
    #[serde(default = "default_keep_alive", with = "humantime_serde")]
    pub keep_alive: Duration,
    /// Most publishes awaiting PUBACK at once.
    #[serde(default = "default_max_inflight")]
    pub max_inflight: u16,
    /// First reconnect delay; doubles per failure up to `reconnect_max`, with full jitter.
    #[serde(default = "default_reconnect_min", with = "humantime_serde")]
    pub reconnect_min: Duration,
    /// Longest reconnect delay.
    #[serde(default = "default_reconnect_max", with = "humantime_serde")]
    pub reconnect_max: Duration,
    /// TLS settings for `mqtts://`.
    #[serde(default)]
    pub tls: TlsConfig,
}

/// TLS settings for an `mqtts://` uplink.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
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

impl MqttUplinkConfig {
    /// Adds every problem in this uplink to `p`; `at` is its path, e.g. `uplinks[0]`.
    pub fn validate(&self, at: &str, p: &mut Problems) {
        if !(self.url.starts_with("mqtt://") || self.url.starts_with("mqtts://")) {
            p.push(format!("{at}.url"), format!("{:?} must start with mqtt:// or mqtts://", self.url));
        }
        if self.qos > 1 {
            p.push(format!("{at}.qos"), "must be 0 or 1");
        }
        if self.max_inflight == 0 {
            p.push(format!("{at}.max_inflight"), "must be at least 1");
        }
        if self.reconnect_min > self.reconnect_max {
            p.push(format!("{at}.reconnect_min"), "must not exceed reconnect_max");
        }
        if self.keep_alive < Duration::from_secs(5) {
            p.push(format!("{at}.keep_alive"), "must be at least 5s");
        }
        for (field, template) in [("topic", &self.topic), ("status_topic", &self.status_topic)] {
            if template.contains('+') || template.contains('#') {
                p.push(format!("{at}.{field}"), "a publish topic must not contain wildcards");
            }
        }
        let tls = &self.tls;
        if tls.client_cert_file.is_some() != tls.client_key_file.is_some() {
            p.push(format!("{at}.tls"), "client_cert_file and client_key_file go together");
        }
        for (field, file) in [
            ("ca_file", &tls.ca_file),
            ("client_cert_file", &tls.client_cert_file),
            ("client_key_file", &tls.client_key_file),
        ] {
            if let Some(f) = file {
                if !f.is_file() {
                    p.push(format!("{at}.tls.{field}"), format!("{} is not a readable file", f.display()));
                }
            }
        }
    }
}
