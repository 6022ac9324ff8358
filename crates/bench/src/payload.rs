//! The readings the harness sends and how it recognises them when they come back.
//!
//! Every request carries a realistic vital-signs SenML pack (SpO2 and heart rate with a base name
//! and base time) plus a `seq` record whose value is the request's index in this run. The index is
//! the only thing the end-to-end matcher needs: it finds the `seq` record in whatever arrives on
//! MQTT (wardgate's normalized JSON, or the raw SenML JSON/CBOR a naive bridge forwards) and looks
//! the send time up by it.

use std::io::Write;

use ciborium::Value;
use serde::Deserialize;

/// Payload encodings the load generator can send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// SenML JSON, Content-Format 110.
    SenmlJson,
    /// SenML CBOR, Content-Format 112.
    SenmlCbor,
}

impl Format {
    /// The CoAP Content-Format number.
    pub fn coap_number(self) -> u16 {
        match self {
            Format::SenmlJson => 110,
            Format::SenmlCbor => 112,
        }
    }
}

/// Name suffix of the record that carries the sequence number. Matched as a suffix because a
/// gateway resolves the base name into it.
pub const SEQ_NAME: &str = "seq";

/// Plausible, slowly varying vitals so payload sizes and number shapes look like a ward's.
fn vitals(seq: u64) -> (u64, u64) {
    (94 + seq % 6, 58 + (seq * 7) % 45)
}

/// Writes one SenML pack for `seq` into `out` (cleared first).
pub fn encode(format: Format, out: &mut Vec<u8>, base_name: &str, base_time: f64, seq: u64) {
    out.clear();
    let (spo2, hr) = vitals(seq);
    match format {
        Format::SenmlJson => {
            // Writing into a Vec cannot fail; the base name is harness-generated ASCII.
            let _ = write!(
                out,
                r#"[{{"bn":"{base_name}","bt":{base_time:.3},"n":"spo2","u":"%","v":{spo2}}},{{"n":"heart_rate","u":"beat/min","v":{hr}}},{{"n":"{SEQ_NAME}","v":{seq}}}]"#
            );
        }
        Format::SenmlCbor => {
            let rec = |pairs: Vec<(i64, Value)>| {
                Value::Map(
                    pairs
                        .into_iter()
                        .map(|(k, v)| (Value::Integer(k.into()), v))
                        .collect(),
                )
            };
            let pack = Value::Array(vec![
                rec(vec![
                    (-2, Value::Text(base_name.to_owned())),
                    (-3, Value::Float(base_time)),
                    (0, Value::Text("spo2".into())),
                    (1, Value::Text("%".into())),
                    (2, Value::Integer(spo2.into())),
                ]),
                rec(vec![
                    (0, Value::Text("heart_rate".into())),
                    (1, Value::Text("beat/min".into())),
                    (2, Value::Integer(hr.into())),
                ]),
                rec(vec![
                    (0, Value::Text(SEQ_NAME.into())),
                    (2, Value::Integer(seq.into())),
                ]),
            ]);
            // Serializing an in-memory value into a Vec cannot fail.
            let _ = ciborium::into_writer(&pack, &mut *out);
        }
    }
}

/// A `wardgate.reading/1` document of the size wardgate publishes, for the broker ceiling run.
pub fn normalized_json(out: &mut Vec<u8>, device: &str, base_time: f64, seq: u64) {
    out.clear();
    let (spo2, hr) = vitals(seq);
    let _ = write!(
        out,
        r#"{{"schema":"wardgate.reading/1","id":"01JD3W6Z8KX4N5Q2M7V9{seq:06}","gateway":"bench","device":"{device}","protocol":"coap","class":"vital","received_at":"2026-11-21T21:04:05.123Z","records":[{{"n":"spo2","u":"%","v":{spo2},"t":{base_time:.3}}},{{"n":"heart_rate","u":"beat/min","v":{hr},"t":{base_time:.3}}},{{"n":"{SEQ_NAME}","v":{seq},"t":{base_time:.3}}}]}}"#
    );
}

#[derive(Deserialize)]
struct Normalized {
    records: Vec<NamedValue>,
}

#[derive(Deserialize)]
struct NamedValue {
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    v: Option<f64>,
}

/// The value of the `seq` record among `(name, value)` pairs, if it is a whole non-negative number.
pub(crate) fn seq_of(
    records: impl IntoIterator<Item = (Option<String>, Option<f64>)>,
) -> Option<u64> {
    records.into_iter().find_map(|(n, v)| {
        let n = n?;
        let v = v?;
        (n.ends_with(SEQ_NAME) && v >= 0.0 && v.fract() == 0.0 && v < 9.0e15).then_some(v as u64)
    })
}

/// Finds the sequence number in a delivered message: wardgate's normalized JSON, a raw SenML JSON
/// pack, or a raw SenML CBOR pack. `None` for anything else.
pub fn extract_seq(payload: &[u8]) -> Option<u64> {
    match payload.first()? {
        b'{' => {
            let doc: Normalized = serde_json::from_slice(payload).ok()?;
            seq_of(doc.records.into_iter().map(|r| (r.n, r.v)))
        }
        b'[' => {
            let pack: Vec<NamedValue> = serde_json::from_slice(payload).ok()?;
            seq_of(pack.into_iter().map(|r| (r.n, r.v)))
        }
        _ => {
            let Value::Array(items) = ciborium::from_reader::<Value, _>(payload).ok()? else {
                return None;
            };
            seq_of(items.into_iter().filter_map(|item| {
                let Value::Map(pairs) = item else { return None };
                let mut n = None;
                let mut v = None;
                for (k, val) in pairs {
                    match (k.as_integer().map(i128::from), val) {
                        (Some(0), Value::Text(t)) => n = Some(t),
                        (Some(2), Value::Integer(i)) => v = Some(i128::from(i) as f64),
                        (Some(2), Value::Float(f)) => v = Some(f),
                        _ => {}
                    }
                }
                Some((n, v))
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn senml_json_pack_carries_its_sequence_number() {
        let mut buf = Vec::new();
        encode(
            Format::SenmlJson,
            &mut buf,
            "urn:dev:bench:0:",
            1_763_759_045.125,
            4242,
        );
        let v: serde_json::Value = serde_json::from_slice(&buf).expect("valid JSON");
        assert_eq!(v[0]["bn"], "urn:dev:bench:0:");
        assert_eq!(v[0]["u"], "%");
        assert_eq!(extract_seq(&buf), Some(4242));
    }

    #[test]
    fn senml_cbor_pack_carries_its_sequence_number() {
        let mut buf = Vec::new();
        encode(
            Format::SenmlCbor,
            &mut buf,
            "urn:dev:bench:0:",
            1_763_759_045.125,
            7,
        );
        assert_eq!(buf.first(), Some(&0x83), "a CBOR array of three records");
        assert_eq!(extract_seq(&buf), Some(7));
    }

    #[test]
    fn normalized_reading_is_matched_by_its_resolved_seq_record() {
        let doc = br#"{"schema":"wardgate.reading/1","id":"x","records":[{"n":"urn:dev:bench:0:spo2","v":97.0,"t":1.0},{"n":"urn:dev:bench:0:seq","v":123.0,"t":1.0}]}"#;
        assert_eq!(extract_seq(doc), Some(123));
        let mut buf = Vec::new();
        normalized_json(&mut buf, "dev-1", 1.5, 99);
        assert_eq!(extract_seq(&buf), Some(99));
    }

    #[test]
    fn foreign_or_broken_messages_have_no_sequence_number() {
        assert_eq!(extract_seq(b""), None);
        assert_eq!(extract_seq(b"online"), None);
        assert_eq!(extract_seq(br#"{"records":[{"n":"spo2","v":97}]}"#), None);
        assert_eq!(extract_seq(br#"[{"n":"seq","v":-1}]"#), None);
        assert_eq!(extract_seq(br#"[{"n":"seq","v":1.5}]"#), None);
        assert_eq!(extract_seq(b"{not json"), None);
    }
}
