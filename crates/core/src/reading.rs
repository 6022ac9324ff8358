//! The normalized reading: one object per reading, SenML (RFC 8428) resolved records inside a
//! versioned envelope. `docs/readings.schema.json` is the published contract for this JSON; the
//! tests in this module validate what we emit against it.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use ulid::Ulid;

use crate::peer::{PeerContext, TransportKind};

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
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default, schemars::JsonSchema,
)]
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
    /// Security events the gateway itself raises (the traffic monitor's anomaly events). Alarm
    /// priority; devices may not send it (the pipeline refuses a device's claim to it).
    Security,
}

impl MessageClass {
    /// How many classes there are (arrays indexed by [`MessageClass::index`]).
    pub const COUNT: usize = 5;

    /// Every class, in [`MessageClass::index`] order.
    pub const ALL: [MessageClass; MessageClass::COUNT] = [
        MessageClass::Alarm,
        MessageClass::Vital,
        MessageClass::Telemetry,
        MessageClass::Bulk,
        MessageClass::Security,
    ];

    /// Its position in [`MessageClass::ALL`], for per-class arrays.
    pub fn index(self) -> usize {
        match self {
            MessageClass::Alarm => 0,
            MessageClass::Vital => 1,
            MessageClass::Telemetry => 2,
            MessageClass::Bulk => 3,
            MessageClass::Security => 4,
        }
    }

    /// Whether its readings travel on the priority lane (alarms and security events).
    pub fn is_priority(self) -> bool {
        matches!(self, MessageClass::Alarm | MessageClass::Security)
    }

    /// The lower-case wire name, also used as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageClass::Alarm => "alarm",
            MessageClass::Vital => "vital",
            MessageClass::Telemetry => "telemetry",
            MessageClass::Bulk => "bulk",
            MessageClass::Security => "security",
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
#[error("unknown message class {0:?} (expected alarm, vital, telemetry, bulk or security)")]
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
    /// Where the value lives on the device, for protocols that address values by path (the
    /// LwM2M path `/3303/0/5700`); the name `n` is then the object model's name for it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub path: Option<String>,
}

/// Longest device id (`docs/readings.schema.json` says the same).
pub const MAX_DEVICE_ID: usize = 128;

/// Device ids, whatever protocol names them (URI segment, topic level, endpoint name):
/// 1..=128 of `[A-Za-z0-9._:-]`, so an id is safe in a CoAP path, an MQTT topic level, a URL and
/// a log line.
pub fn valid_device_id(s: &[u8]) -> bool {
    !s.is_empty()
        && s.len() <= MAX_DEVICE_ID
        && s.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'-'))
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
    /// Where it came from (provenance), when the adapter knows.
    pub source: Option<Source>,
    /// Resolved SenML records (at least one).
    pub records: Vec<Record>,
}

/// A reading's provenance: how the device reached the gateway and, if something proved it, who
/// it is. JSON: `"source":{"transport":"dtls","addr":"10.1.2.3:49152","identity":"psk:bed-12"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// How the peer reached us.
    pub transport: TransportKind,
    /// The peer's address as `ip:port`.
    pub addr: String,
    /// The authenticated identity as `kind:value` (`psk:bed-12`), absent when none was proven.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub identity: Option<String>,
}

impl From<&PeerContext> for Source {
    fn from(p: &PeerContext) -> Self {
        Source {
            transport: p.transport,
            addr: p.addr.to_string(),
            identity: p.identity.as_ref().map(ToString::to_string),
        }
    }
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
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<&'a Source>,
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
    #[serde(default)]
    source: Option<Source>,
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
            source: self.source.as_ref(),
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
            source: w.source,
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
            source: None,
            records,
        }
    }

    /// The same reading with its provenance taken from `peer`.
    pub fn with_source(mut self, peer: &PeerContext) -> Self {
        self.source = Some(Source::from(peer));
        self
    }

    /// Serializes to the northbound JSON once, at ingest, so the store and every uplink share the
    /// same bytes.
    pub fn encode(&self) -> Encoded {
        Encoded {
            id: self.id,
            device: self.device.clone(),
            class: self.class,
            protocol: self.protocol,
            json: Bytes::from(self.to_json()),
            held: false,
        }
    }

    /// [`Reading::encode`] for a reading that is not needed afterwards: the device id moves into
    /// the [`Encoded`] instead of being copied.
    pub fn into_encoded(self) -> Encoded {
        let json = Bytes::from(self.to_json());
        Encoded {
            id: self.id,
            device: self.device,
            class: self.class,
            protocol: self.protocol,
            json,
            held: false,
        }
    }

    /// The `wardgate.reading/1` JSON: byte for byte what `serde_json::to_vec` makes of this
    /// reading through its `Serialize` impl (a property test holds the two together), written by
    /// hand into one buffer sized up front, because this runs once per reading on the ingest path.
    fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.json_len_hint());
        out.extend_from_slice(b"{\"schema\":");
        json::string(&mut out, SCHEMA);
        out.extend_from_slice(b",\"id\":\"");
        out.extend_from_slice(self.id.array_to_str(&mut [0; ulid::ULID_LEN]).as_bytes());
        out.extend_from_slice(b"\",\"gateway\":");
        json::string(&mut out, &self.gateway);
        out.extend_from_slice(b",\"device\":");
        json::string(&mut out, &self.device);
        out.extend_from_slice(b",\"protocol\":\"");
        out.extend_from_slice(self.protocol.as_str().as_bytes());
        out.extend_from_slice(b"\",\"class\":\"");
        out.extend_from_slice(self.class.as_str().as_bytes());
        out.extend_from_slice(b"\",\"received_at\":\"");
        json::rfc3339_millis(&mut out, self.received_at);
        out.push(b'"');
        if let Some(src) = &self.source {
            out.extend_from_slice(b",\"source\":{\"transport\":\"");
            out.extend_from_slice(src.transport.as_str().as_bytes());
            out.extend_from_slice(b"\",\"addr\":");
            json::string(&mut out, &src.addr);
            if let Some(id) = &src.identity {
                out.extend_from_slice(b",\"identity\":");
                json::string(&mut out, id);
            }
            out.push(b'}');
        }
        out.extend_from_slice(b",\"records\":[");
        for (i, r) in self.records.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"n\":");
            json::string(&mut out, &r.n);
            if let Some(u) = &r.u {
                out.extend_from_slice(b",\"u\":");
                json::string(&mut out, u);
            }
            if let Some(v) = r.v {
                out.extend_from_slice(b",\"v\":");
                json::number(&mut out, v);
            }
            if let Some(vs) = &r.vs {
                out.extend_from_slice(b",\"vs\":");
                json::string(&mut out, vs);
            }
            if let Some(vb) = r.vb {
                out.extend_from_slice(if vb {
                    b",\"vb\":true"
                } else {
                    b",\"vb\":false"
                });
            }
            if let Some(vd) = &r.vd {
                out.extend_from_slice(b",\"vd\":");
                json::string(&mut out, vd);
            }
            if let Some(s) = r.s {
                out.extend_from_slice(b",\"s\":");
                json::number(&mut out, s);
            }
            out.extend_from_slice(b",\"t\":");
            json::number(&mut out, r.t);
            if let Some(ut) = r.ut {
                out.extend_from_slice(b",\"ut\":");
                json::number(&mut out, ut);
            }
            if let Some(p) = &r.path {
                out.extend_from_slice(b",\"path\":");
                json::string(&mut out, p);
            }
            out.push(b'}');
        }
        out.extend_from_slice(b"]}");
        out
    }

    /// The JSON length when no string needs escaping and every number takes its longest form:
    /// the buffer is allocated once, and grows only for strings with characters to escape.
    fn json_len_hint(&self) -> usize {
        // Every key, quote, comma and bracket of the envelope, plus the schema, id, protocol,
        // class and timestamp at their longest.
        const ENVELOPE: usize = 200;
        // Every key, quote, comma and brace a record can carry.
        const RECORD: usize = 72;
        let records = self.records.iter().fold(0usize, |sum, r| {
            let numbers = 1 + [r.v, r.s, r.ut].iter().filter(|x| x.is_some()).count();
            let text = [&r.u, &r.vs, &r.vd, &r.path]
                .iter()
                .map(|x| x.as_ref().map_or(0, String::len))
                .sum::<usize>();
            sum.saturating_add(RECORD + numbers * json::NUMBER_MAX + r.n.len() + text)
        });
        // `,"source":{"transport":"https","addr":,"identity":}` and the two strings.
        let source = self.source.as_ref().map_or(0, |s| {
            64 + s.addr.len() + s.identity.as_ref().map_or(0, String::len)
        });
        ENVELOPE
            .saturating_add(source)
            .saturating_add(self.gateway.len())
            .saturating_add(self.device.len())
            .saturating_add(records)
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
    /// The protocol it came in over (the status board's device list).
    pub protocol: Protocol,
    /// The `wardgate.reading/1` JSON.
    pub json: Bytes,
    /// Quarantined ([`crate::Grant::Hold`]): owed only to the [`crate::QUARANTINE`] lane until
    /// an administrator decides. Not part of the JSON (the reading's `source.identity` names
    /// the unknown identity).
    pub held: bool,
}

/// Seconds since the Unix epoch as f64 (SenML time).
pub fn epoch_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

/// The pieces of the hand-written reading JSON, each matching what serde_json writes.
mod json {
    use std::time::{SystemTime, UNIX_EPOCH};

    use serde_json::ser::{CompactFormatter, Formatter};

    /// The longest text of a finite f64 (e.g. `-2.2250738585072014e-308`).
    pub(super) const NUMBER_MAX: usize = 24;

    /// serde_json's escape table: `\b \t \n \f \r \" \\` by name, other control characters as
    /// `\u00XX`, everything else (DEL and non-ASCII included) as is.
    const ESCAPE: [u8; 256] = {
        let mut table = [0u8; 256];
        let mut i = 0;
        while i < 0x20 {
            table[i] = b'u';
            i += 1;
        }
        table[0x08] = b'b';
        table[0x09] = b't';
        table[0x0a] = b'n';
        table[0x0c] = b'f';
        table[0x0d] = b'r';
        table[b'"' as usize] = b'"';
        table[b'\\' as usize] = b'\\';
        table
    };

    const HEX: &[u8; 16] = b"0123456789abcdef";

    /// A JSON string, quoted and escaped.
    pub(super) fn string(out: &mut Vec<u8>, s: &str) {
        out.push(b'"');
        let mut rest = s.as_bytes();
        while let Some(i) = first_escape(rest) {
            let (run, tail) = rest.split_at(i);
            out.extend_from_slice(run);
            let Some((&b, tail)) = tail.split_first() else {
                break;
            };
            let escape = ESCAPE[usize::from(b)];
            if escape == b'u' {
                out.extend_from_slice(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(b >> 4)],
                    HEX[usize::from(b & 0xf)],
                ]);
            } else {
                out.extend_from_slice(&[b'\\', escape]);
            }
            rest = tail;
        }
        out.extend_from_slice(rest);
        out.push(b'"');
    }

    /// The index of the first byte that needs escaping. Eight bytes at a time: a word with no
    /// control character, quote or backslash is skipped whole (the tests below are exact for
    /// "some byte matches", and a word that matches is searched byte by byte anyway).
    fn first_escape(bytes: &[u8]) -> Option<usize> {
        const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
        const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
        let has_zero = |w: u64| w.wrapping_sub(ONES) & !w & HIGH != 0;
        let mut chunks = bytes.chunks_exact(8);
        let mut start = 0;
        for chunk in &mut chunks {
            let Ok(word) = <[u8; 8]>::try_from(chunk) else {
                break;
            };
            let w = u64::from_ne_bytes(word);
            let control = w.wrapping_sub(ONES * 0x20) & !w & HIGH != 0;
            if control
                || has_zero(w ^ (ONES * u64::from(b'"')))
                || has_zero(w ^ (ONES * u64::from(b'\\')))
            {
                break;
            }
            start += 8;
        }
        bytes
            .get(start..)?
            .iter()
            .position(|&b| ESCAPE[usize::from(b)] != 0)
            .map(|i| start + i)
    }

    /// A number as serde_json writes an f64: its own shortest round-trip formatter for finite
    /// values, `null` for NaN and the infinities.
    pub(super) fn number(out: &mut Vec<u8>, x: f64) {
        if x.is_finite() {
            // Writing into a Vec cannot fail.
            let _ = CompactFormatter.write_f64(out, x);
        } else {
            out.extend_from_slice(b"null");
        }
    }

    /// `YYYY-MM-DDTHH:MM:SS.mmmZ`, as `humantime::format_rfc3339_millis` writes it (the property
    /// test compares the two over its whole range). humantime panics before 1970 and fails after
    /// 9999; such clock readings are clamped into that range instead.
    pub(super) fn rfc3339_millis(out: &mut Vec<u8>, t: SystemTime) {
        /// 9999-12-31T23:59:59.999Z, the last instant RFC 3339 (and humantime) can write.
        const LAST_MILLIS: u64 = 253_402_300_799_999;
        let since_epoch = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        let millis =
            u64::try_from(since_epoch.as_millis()).map_or(LAST_MILLIS, |ms| ms.min(LAST_MILLIS));
        let (secs, millis) = (millis / 1000, millis % 1000);
        let (days, secs_of_day) = (secs / 86_400, secs % 86_400);
        let (year, month, day) = civil_from_days(days);
        let mut buf = *b"0000-00-00T00:00:00.000Z";
        let mut digits = |at: usize, width: usize, mut n: u64| {
            for i in (at..at + width).rev() {
                if let Some(slot) = buf.get_mut(i) {
                    *slot = b'0' + (n % 10) as u8;
                }
                n /= 10;
            }
        };
        digits(0, 4, year);
        digits(5, 2, month);
        digits(8, 2, day);
        digits(11, 2, secs_of_day / 3600);
        digits(14, 2, secs_of_day / 60 % 60);
        digits(17, 2, secs_of_day % 60);
        digits(20, 3, millis);
        out.extend_from_slice(&buf);
    }

    /// Year, month (1-12) and day (1-31) of a day count since 1970-01-01 in the proleptic
    /// Gregorian calendar (H. Hinnant's `civil_from_days`, for non-negative counts).
    fn civil_from_days(days: u64) -> (u64, u64, u64) {
        // Shift the epoch to 0000-03-01 so leap days fall at the end of each 400-year era.
        let z = days + 719_468;
        let era = z / 146_097;
        let doe = z % 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + u64::from(month <= 2);
        (year, month, day)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

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

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "[\\x00-\\x1f\"\\\\\\x7f a-z\u{80}-\u{10ffff}]{0,12}",
            Just(String::new()),
        ]
    }

    fn number() -> impl Strategy<Value = f64> {
        prop_oneof![
            any::<f64>(),
            (-1_000_000i64..1_000_000).prop_map(|x| x as f64),
            prop::sample::select(vec![
                0.0,
                -0.0,
                f64::NAN,
                f64::INFINITY,
                f64::NEG_INFINITY,
                f64::MIN_POSITIVE,
                f64::MAX,
                -2.225_073_858_507_201_4e-308,
                1e21,
                1e-7,
            ]),
        ]
    }

    fn record() -> impl Strategy<Value = Record> {
        (
            text(),
            proptest::option::of(text()),
            proptest::option::of(number()),
            proptest::option::of(text()),
            proptest::option::of(any::<bool>()),
            proptest::option::of(text()),
            (
                proptest::option::of(number()),
                number(),
                proptest::option::of(number()),
            ),
        )
            .prop_map(|(n, u, v, vs, vb, vd, (s, t, ut))| {
                // Some records carry a device path, as LwM2M ones do.
                let path = (n.len() % 3 == 0).then(|| format!("/{}/0/5700", n.len()));
                Record {
                    n,
                    u,
                    v,
                    vs,
                    vb,
                    vd,
                    s,
                    t,
                    ut,
                    path,
                }
            })
    }

    fn reading() -> impl Strategy<Value = Reading> {
        (
            text(),
            text(),
            prop::sample::select(vec![
                Protocol::Coap,
                Protocol::Lwm2m,
                Protocol::Mqtt,
                Protocol::Http,
            ]),
            prop::sample::select(MessageClass::ALL.to_vec()),
            // Every instant humantime (the serde path) can write: 1970 to the end of 9999.
            (0u64..253_402_300_800, 0u32..1_000_000_000),
            proptest::collection::vec(record(), 0..5),
            proptest::option::of((
                prop::sample::select(vec![
                    TransportKind::Udp,
                    TransportKind::Dtls,
                    TransportKind::Https,
                ]),
                text(),
                proptest::option::of(text()),
            )),
        )
            .prop_map(
                |(gateway, device, protocol, class, (secs, nanos), records, source)| {
                    let mut r = Reading::new(
                        gateway,
                        device,
                        protocol,
                        class,
                        UNIX_EPOCH + Duration::new(secs, nanos),
                        records,
                    );
                    r.source = source.map(|(transport, addr, identity)| Source {
                        transport,
                        addr,
                        identity,
                    });
                    r
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn encoded_json_is_byte_identical_to_serde_json(reading in reading()) {
            let expected = serde_json::to_vec(&reading).expect("serde_json serializes");
            let encoded = reading.encode();
            prop_assert_eq!(
                String::from_utf8_lossy(&encoded.json),
                String::from_utf8_lossy(&expected)
            );
            prop_assert_eq!(&encoded.json[..], &expected[..]);
            prop_assert_eq!(reading.clone().into_encoded(), encoded);
        }
    }

    #[test]
    fn device_ids_follow_the_documented_charset() {
        assert!(valid_device_id(b"bed-12.spo2:a_b"));
        assert!(!valid_device_id(b""));
        assert!(!valid_device_id(b"bed 12"));
        assert!(!valid_device_id(b"bed/12"));
        assert!(valid_device_id(&[b'a'; 128]));
        assert!(!valid_device_id(&[b'a'; 129]));
    }

    #[test]
    fn encoded_json_escapes_like_serde_json() {
        let all_controls: String = (0u8..0x20).map(char::from).collect();
        let mut r = sample();
        r.gateway = format!("{all_controls}\"\\/\u{7f}\u{80}\u{2028}\u{1f600}é");
        r.device = "\u{0}\"".into();
        r.records[0].vs = Some("a\tb\nc\rd\u{8}e\u{c}f".into());
        r.records[0].v = Some(f64::NAN);
        r.records[1].s = Some(f64::NEG_INFINITY);
        assert_eq!(
            String::from_utf8_lossy(&r.encode().json),
            serde_json::to_string(&r).expect("serializes")
        );
    }

    #[test]
    fn received_at_matches_humantime_on_calendar_edges() {
        let check = |secs: u64, nanos: u32| {
            let t = UNIX_EPOCH + Duration::new(secs, nanos);
            let mut out = Vec::new();
            json::rfc3339_millis(&mut out, t);
            assert_eq!(
                String::from_utf8_lossy(&out),
                humantime::format_rfc3339_millis(t).to_string()
            );
        };
        // Every day (at its first and last millisecond) from 1970 through 2110, then every
        // 97th day up to the end of 9999: leap years, centuries and 400-year cycles.
        for day in (0..51_500).chain((51_500..2_932_897).step_by(97)) {
            check(day * 86_400, 0);
            check(day * 86_400 + 86_399, 999_999_999);
        }
        check(253_402_300_799, 999_999_999);
        check(951_782_400, 0); // 2000-02-29
        check(4_107_542_400, 0); // 2100-03-01
    }

    #[test]
    fn received_at_outside_rfc3339_range_is_clamped_not_a_panic() {
        let mut r = sample();
        r.received_at = UNIX_EPOCH - Duration::from_secs(1);
        let v: serde_json::Value = serde_json::from_slice(&r.encode().json).expect("json");
        assert_eq!(v["received_at"], "1970-01-01T00:00:00.000Z");
        r.received_at = UNIX_EPOCH + Duration::from_secs(300_000_000_000);
        let v: serde_json::Value = serde_json::from_slice(&r.encode().json).expect("json");
        assert_eq!(v["received_at"], "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn message_class_parses_its_own_names_only() {
        for c in MessageClass::ALL {
            assert_eq!(c.as_str().parse::<MessageClass>().ok(), Some(c));
        }
        assert!("urgent".parse::<MessageClass>().is_err());
    }
}
