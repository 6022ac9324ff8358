//! The normalized reading: one object per reading, SenML (RFC 8428) resolved records inside a
//! versioned envelope. `docs/readings.schema.json` is the published contract for this JSON; the
//! tests in this module validate what we emit against it.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use ulid::Ulid;

/// Schema identifier carried in every reading. Bump the suffix on any incompatible change.
pub const SCHEMA: &str = "wardgate.reading/1";

/// The protocol a reading arrived over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// CoAP over UDP (or DTLS).
    Coap,
    /// LwM2M (send, notify or read responses).
    Lwm2m,
    /// MQTT southbound subscription.
    Mqtt,
    /// HTTP(S) ingest.
    Http,
}

impl Protocol {
    /// The lower-case wire name, also used as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Coap => "coap",
            Protocol::Lwm2m => "lwm2m",
            Protocol::Mqtt => "mqtt",
            Protocol::Http => "http",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The message class decides the upstream policy (see `[selector]` in `gateway.toml`).
/// A closed set, so it is safe as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MessageClass {
    /// Alarms: clinical or technical alerts. Highest priority.
    Alarm,
    /// Periodic vital signs (SpO2, heart rate, temperature, ...).
    #[default]
    Vital,
    /// Device and environment telemetry (battery, signal, room temperature).
    Telemetry,
    /// Large or deferred uploads (waveforms, logs).
    Bulk,
}

impl MessageClass {
    /// Every class, in priority order.
    pub const ALL: [MessageClass; 4] = [
        MessageClass::Alarm,
        MessageClass::Vital,
        MessageClass::Telemetry,
        MessageClass::Bulk,
    ];

    /// The lower-case wire name, also used as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageClass::Alarm => "alarm",
            MessageClass::Vital => "vital",
            MessageClass::Telemetry => "telemetry",
            MessageClass::Bulk => "bulk",
        }
    }
}

impl fmt::Display for MessageClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for an unknown message class name.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown message class {0:?} (expected alarm, vital, telemetry or bulk)")]
pub struct UnknownClass(pub String);

impl FromStr for MessageClass {
    type Err = UnknownClass;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MessageClass::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownClass(s.to_owned()))
    }
}

/// One resolved SenML record (RFC 8428 §4.6): the name is the full name (base name applied),
/// the time is absolute (seconds since the Unix epoch), the unit is the resolved unit.
/// Exactly one of `v`, `vs`, `vb`, `vd` is set, or none when only `s` (sum) is present.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Record {
    /// Full name, e.g. `urn:dev:mac:0024befffe804ff1/temperature` or `spo2`.
    pub n: String,
    /// Unit (SenML units registry), e.g. `%`, `beat/min`, `Cel`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub u: Option<String>,
    /// Numeric value.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub v: Option<f64>,
    /// String value.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub vs: Option<String>,
    /// Boolean value.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub vb: Option<bool>,
    /// Data value (base64url, as in SenML JSON).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub vd: Option<String>,
    /// Sum.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub s: Option<f64>,
    /// Absolute time, seconds since the Unix epoch.
    pub t: f64,
    /// Update time: the maximum seconds before the next reading is expected.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ut: Option<f64>,
}

/// A normalized reading: what one device reported in one message.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// Unique, sortable id (ULID). Kept through store, replay and redelivery so the backend can
    /// de-duplicate.
    pub id: Ulid,
    /// The gateway's configured id.
    pub gateway: String,
    /// The authenticated device id.
    pub device: String,
    /// How it arrived.
    pub protocol: Protocol,
    /// Its message class.
    pub class: MessageClass,
    /// When the gateway received it.
    pub received_at: SystemTime,
    /// Resolved SenML records (at least one).
    pub records: Vec<Record>,
}

#[derive(Serialize)]
struct WireRef<'a> {
    schema: &'static str,
    id: Ulid,
    gateway: &'a str,
    device: &'a str,
    protocol: Protocol,
    class: MessageClass,
    received_at: String,
    records: &'a [Record],
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireOwned {
    schema: String,
    id: Ulid,
    gateway: String,
    device: String,
    protocol: Protocol,
    class: MessageClass,
    received_at: String,
    records: Vec<Record>,
}

impl Serialize for Reading {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        WireRef {
            schema: SCHEMA,
            id: self.id,
            gateway: &self.gateway,
            device: &self.device,
            protocol: self.protocol,
            class: self.class,
            received_at: humantime::format_rfc3339_millis(self.received_at).to_string(),
            records: &self.records,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Reading {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let w = WireOwned::deserialize(d)?;
        if w.schema != SCHEMA {
            return Err(D::Error::custom(format!(
                "unsupported schema {:?}, expected {SCHEMA:?}",
                w.schema
            )));
        }
        let received_at = humantime::parse_rfc3339(&w.received_at).map_err(D::Error::custom)?;
        Ok(Reading {
            id: w.id,
            gateway: w.gateway,
            device: w.device,
            protocol: w.protocol,
            class: w.class,
            received_at,
            records: w.records,
        })
    }
}

impl Reading {
    /// A new reading with a fresh id.
    pub fn new(
        gateway: impl Into<String>,
        device: impl Into<String>,
        protocol: Protocol,
        class: MessageClass,
        received_at: SystemTime,
        records: Vec<Record>,
    ) -> Self {
        Reading {
            id: Ulid::new(),
            gateway: gateway.into(),
            device: device.into(),
            protocol,
            class,
            received_at,
            records,
        }
    }

    /// Serializes to the northbound JSON once, at ingest, so the store and every uplink share the
    /// same bytes.
    pub fn encode(&self) -> Encoded {
        // Serializing plain structs of strings and finite-or-null numbers into a Vec cannot fail.
        let json = serde_json::to_vec(self).unwrap_or_else(|e| {
            tracing::error!(error = %e, "reading serialization failed");
            Vec::new()
        });
        Encoded {
            id: self.id,
            device: self.device.clone(),
            class: self.class,
            json: Bytes::from(json),
        }
    }
}

/// A reading already serialized to its northbound JSON, with the fields the store and the uplinks
/// route on.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    /// The reading id.
    pub id: Ulid,
    /// Device id (per-device ordering key; topic template field).
    pub device: String,
    /// Message class (routing policy; topic template field).
    pub class: MessageClass,
    /// The `wardgate.reading/1` JSON.
    pub json: Bytes,
}

/// Seconds since the Unix epoch as f64 (SenML time).
pub fn epoch_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Reading {
        Reading::new(
            "ward-3a",
            "bed-12-spo2",
            Protocol::Coap,
            MessageClass::Vital,
            UNIX_EPOCH + Duration::from_millis(1_763_759_045_123),
            vec![
                Record {
                    n: "spo2".into(),
                    u: Some("%".into()),
                    v: Some(97.0),
                    t: 1_763_759_045.1,
                    ..Record::default()
                },
                Record {
                    n: "alarm".into(),
                    vb: Some(false),
                    t: 1_763_759_045.1,
                    ..Record::default()
                },
            ],
        )
    }

    fn schema() -> serde_json::Value {
        let text = include_str!("../../../docs/readings.schema.json");
        serde_json::from_str(text).unwrap_or_else(|e| panic!("schema is not JSON: {e}"))
    }

    #[test]
    fn emitted_reading_validates_against_published_schema() {
        let validator = jsonschema::validator_for(&schema()).expect("schema compiles");
        let r = sample();
        let v: serde_json::Value = serde_json::from_slice(&r.encode().json).expect("json");
        let errors: Vec<String> = validator.iter_errors(&v).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(v["schema"], SCHEMA);
        assert_eq!(v["received_at"], "2025-11-21T21:04:05.123Z");
    }

    #[test]
    fn schema_rejects_reading_without_records_or_with_wrong_version() {
        let validator = jsonschema::validator_for(&schema()).expect("schema compiles");
        let mut v: serde_json::Value =
            serde_json::from_slice(&sample().encode().json).expect("json");
        v["records"] = serde_json::json!([]);
        assert!(!validator.is_valid(&v));
        let mut v: serde_json::Value =
            serde_json::from_slice(&sample().encode().json).expect("json");
        v["schema"] = serde_json::json!("wardgate.reading/0");
        assert!(!validator.is_valid(&v));
    }

    #[test]
    fn reading_round_trips_through_json() {
        let r = sample();
        let back: Reading = serde_json::from_slice(&r.encode().json).expect("parse");
        assert_eq!(back, r);
    }

    #[test]
    fn ids_are_unique_and_sortable_by_time() {
        let a = sample();
        std::thread::sleep(Duration::from_millis(2));
        let b = sample();
        assert_ne!(a.id, b.id);
        assert!(a.id < b.id);
    }

    #[test]
    fn message_class_parses_its_own_names_only() {
        for c in MessageClass::ALL {
            assert_eq!(c.as_str().parse::<MessageClass>().ok(), Some(c));
        }
        assert!("urgent".parse::<MessageClass>().is_err());
    }
}
