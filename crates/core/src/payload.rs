//! Device payload decoding by CoAP Content-Format: the one entry point adapters call.

use std::borrow::Cow;
use std::fmt;

use crate::reading::{Record, epoch_seconds};
use crate::senml::Value;

pub use crate::decode::{ContentFormat, DecodeContext, DecodeError, Limits};
/// Decodes a device payload into resolved SenML records.
pub fn decode(
    format: ContentFormat,
    body: &[u8],
    ctx: &DecodeContext<'_>,
) -> Result<Vec<Record>, DecodeError> {
    match format {
        ContentFormat::SenmlJson => crate::senml::decode_json(body, ctx),
        ContentFormat::SenmlCbor => crate::senml::decode_cbor(body, ctx),
        ContentFormat::Json => decode_plain_json(body, ctx),
        ContentFormat::Cbor => decode_plain_cbor(body, ctx),
        ContentFormat::TextPlain => decode_text(body, ctx),
    }
}

/// `{"spo2": 97, "heart_rate": 72, "alarm": false, "note": "ok"}` → one record per member:
/// numbers → `v`, strings → `vs`, booleans → `vb`. `null`, arrays and objects are rejected.
///
/// Convention: a member named `t` or `time` holding a number is not a reading but the time of
/// all of them, with SenML's rule (below 2^28 = seconds relative to now). Without it, records
/// are stamped with the reception time. Member names must be valid SenML names.
fn decode_plain_json(body: &[u8], ctx: &DecodeContext<'_>) -> Result<Vec<Record>, DecodeError> {
    if crate::senml::is_blank(body) {
        return Err(DecodeError::Empty);
    }
    let mut plain = PlainRecords::new(ctx);
    crate::senml::decode_json_object(body, |name, value, index| plain.member(name, value, index))?;
    plain.finish()
}

/// The CBOR equivalent of [`decode_plain_json`]: a map with text keys; integers and floats → `v`,
/// text → `vs`, booleans → `vb`, byte strings → `vd` (base64url). Same time convention.
fn decode_plain_cbor(body: &[u8], ctx: &DecodeContext<'_>) -> Result<Vec<Record>, DecodeError> {
    if body.is_empty() {
        return Err(DecodeError::Empty);
    }
    let mut plain = PlainRecords::new(ctx);
    crate::senml::decode_cbor_map(body, |name, value, index| plain.member(name, value, index))?;
    plain.finish()
}

/// `97.5` → one numeric record; `true`/`false` → boolean; anything else → string value. The
/// text is UTF-8 and trimmed; the record is named `ctx.default_name` and stamped now. A number
/// that is not finite (`NaN`, `inf`, `1e999`) is rejected rather than passed on as text.
fn decode_text(body: &[u8], ctx: &DecodeContext<'_>) -> Result<Vec<Record>, DecodeError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| DecodeError::Malformed {
            format: ContentFormat::TextPlain,
            detail: format!("not UTF-8 (invalid byte at {})", e.valid_up_to()),
        })?
        .trim();
    if text.is_empty() {
        return Err(DecodeError::Empty);
    }
    if ctx.limits.max_records == 0 {
        return Err(DecodeError::TooManyRecords(0));
    }
    let name = ctx.default_name.ok_or(DecodeError::MissingName)?;
    crate::senml::check_name(name, &ctx.limits, &"the resource name")?;
    let mut record = Record {
        n: name.to_owned(),
        t: epoch_seconds(ctx.now),
        ..Record::default()
    };
    match text {
        "true" => record.vb = Some(true),
        "false" => record.vb = Some(false),
        _ => match text.parse::<f64>() {
            Ok(v) if v.is_finite() => record.v = Some(v),
            Ok(_) => {
                return Err(DecodeError::Invalid(
                    "text/plain number is not finite".into(),
                ));
            }
            Err(_) if text.len() > ctx.limits.max_value_len => {
                return Err(DecodeError::TooLong("string value"));
            }
            Err(_) => record.vs = Some(text.to_owned()),
        },
    }
    Ok(vec![record])
}

/// Members names that carry the time of a plain JSON/CBOR payload instead of a reading.
const TIME_MEMBERS: [&str; 2] = ["t", "time"];

/// Builds records from the members of a plain JSON object or CBOR map.
#[derive(Debug)]
struct PlainRecords<'c> {
    ctx: &'c DecodeContext<'c>,
    time: Option<f64>,
    records: Vec<Record>,
}

impl<'c> PlainRecords<'c> {
    fn new(ctx: &'c DecodeContext<'c>) -> Self {
        PlainRecords {
            ctx,
            time: None,
            records: Vec::new(),
        }
    }

    fn member(
        &mut self,
        name: Cow<'_, str>,
        value: Value<'_>,
        index: usize,
    ) -> Result<(), DecodeError> {
        let limits = &self.ctx.limits;
        if TIME_MEMBERS.contains(&name.as_ref()) {
            return match value.number() {
                Some(t) if t.is_finite() && self.time.is_none() => {
                    self.time = Some(t);
                    Ok(())
                }
                Some(t) if t.is_finite() => Err(DecodeError::Invalid(
                    "more than one time member (\"t\" or \"time\")".into(),
                )),
                Some(_) => Err(DecodeError::Invalid(format!(
                    "member {name:?}: time is not a finite number"
                ))),
                None => Err(DecodeError::Invalid(format!(
                    "member {name:?} holds the time and must be a number, found {}",
                    value.kind()
                ))),
            };
        }
        if self.records.len() >= limits.max_records {
            return Err(DecodeError::TooManyRecords(limits.max_records));
        }
        let what = MemberLabel {
            name: &name,
            index,
            limits,
        };
        crate::senml::check_name(&name, limits, &what)?;
        let mut record = Record {
            n: name.into_owned(),
            ..Record::default()
        };
        match value {
            Value::Uint(_) | Value::Int(_) | Value::Float(_) => match value.number() {
                Some(v) if v.is_finite() => record.v = Some(v),
                _ => {
                    return Err(DecodeError::Invalid(format!(
                        "{}: is not a finite number",
                        MemberLabel {
                            name: &record.n,
                            index,
                            limits
                        }
                    )));
                }
            },
            Value::Text(s) if s.len() > limits.max_value_len => {
                return Err(DecodeError::TooLong("string value"));
            }
            Value::Text(s) => record.vs = Some(s.into_owned()),
            Value::Bool(b) => record.vb = Some(b),
            Value::Bytes(b) if b.len() > limits.max_value_len => {
                return Err(DecodeError::TooLong("data value"));
            }
            Value::Bytes(b) => record.vd = Some(crate::senml::base64url_encode(&b)),
            Value::Null | Value::Nested | Value::Unsupported => {
                return Err(DecodeError::Invalid(format!(
                    "{}: is {}; only numbers, strings and booleans are readings",
                    MemberLabel {
                        name: &record.n,
                        index,
                        limits
                    },
                    value.kind()
                )));
            }
        }
        self.records.push(record);
        Ok(())
    }

    fn finish(mut self) -> Result<Vec<Record>, DecodeError> {
        if self.records.is_empty() {
            return Err(DecodeError::Empty);
        }
        let now = epoch_seconds(self.ctx.now);
        let t = crate::senml::resolve_time(self.time.unwrap_or(0.0), now);
        for record in &mut self.records {
            record.t = t;
        }
        Ok(self.records)
    }
}

/// Names a member in error messages: by its name when that is a valid SenML name (safe to log),
/// else by its position, so device input is never echoed.
struct MemberLabel<'n> {
    name: &'n str,
    index: usize,
    limits: &'n Limits,
}

impl fmt::Display for MemberLabel<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.name.len() <= self.limits.max_name_len && crate::senml::is_senml_name(self.name) {
            write!(f, "member {:?}", self.name)
        } else {
            write!(f, "member #{}", self.index)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    const NOW: f64 = 1_700_000_000.25;

    fn ctx(default_name: Option<&str>) -> DecodeContext<'_> {
        DecodeContext {
            now: UNIX_EPOCH + Duration::from_secs_f64(NOW),
            default_name,
            limits: Limits::default(),
        }
    }

    fn json(text: &str) -> Result<Vec<Record>, DecodeError> {
        decode(ContentFormat::Json, text.as_bytes(), &ctx(None))
    }

    fn cbor(bytes: &[u8]) -> Result<Vec<Record>, DecodeError> {
        decode(ContentFormat::Cbor, bytes, &ctx(None))
    }

    fn text(body: &str, name: Option<&str>) -> Result<Vec<Record>, DecodeError> {
        decode(ContentFormat::TextPlain, body.as_bytes(), &ctx(name))
    }

    fn hex(text: &str) -> Vec<u8> {
        let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
        digits
            .chunks(2)
            .map(|pair| {
                let s = std::str::from_utf8(pair).expect("hex digits are ASCII");
                u8::from_str_radix(s, 16).expect("two hex digits")
            })
            .collect()
    }

    #[test]
    fn plain_json_members_become_records_stamped_now() {
        let records = json(r#"{"spo2": 97, "heart_rate": 72.5, "alarm": false, "note": "ok"}"#)
            .expect("decodes");
        assert_eq!(records.len(), 4);
        assert_eq!((records[0].n.as_str(), records[0].v), ("spo2", Some(97.0)));
        assert_eq!(records[1].v, Some(72.5));
        assert_eq!(records[2].vb, Some(false));
        assert_eq!(records[3].vs.as_deref(), Some("ok"));
        assert!(records.iter().all(|r| r.t == NOW && r.u.is_none()));
    }

    #[test]
    fn plain_json_time_member_times_every_record() {
        let absolute = json(r#"{"spo2": 97, "t": 1763759045.5, "hr": 70}"#).expect("decodes");
        assert_eq!(absolute.len(), 2);
        assert!(absolute.iter().all(|r| r.t == 1_763_759_045.5));
        let relative = json(r#"{"time": -30, "spo2": 97}"#).expect("decodes");
        assert_eq!(relative[0].t, NOW - 30.0);
        assert!(json(r#"{"t": "yesterday", "spo2": 97}"#).is_err());
        assert!(json(r#"{"t": 1, "time": 2, "spo2": 97}"#).is_err());
        assert_eq!(json(r#"{"t": 1763759045}"#), Err(DecodeError::Empty));
    }

    #[test]
    fn plain_json_rejects_nested_and_null_members_by_name() {
        let err = json(r#"{"spo2": 97, "wave": [1, 2, 3]}"#).expect_err("array member");
        assert_eq!(err.reason(), "invalid");
        assert!(err.to_string().contains(r#"member "wave""#), "{err}");
        let err = json(r#"{"cfg": {"a": 1}}"#).expect_err("object member");
        assert!(err.to_string().contains(r#"member "cfg""#), "{err}");
        let err = json(r#"{"spo2": null}"#).expect_err("null member");
        assert!(err.to_string().contains("null"), "{err}");
        // A member whose name is not a valid name is referred to by position, never echoed.
        let err = json(r#"{"ok": 1, "<script>": [1]}"#).expect_err("bad name");
        assert!(!err.to_string().contains("script"), "{err}");
    }

    #[test]
    fn plain_json_must_be_an_object() {
        assert_eq!(json("[1, 2]").expect_err("array").reason(), "invalid");
        assert_eq!(json("97").expect_err("number").reason(), "invalid");
        assert_eq!(
            json(r#"{"a": 1"#).expect_err("unterminated").reason(),
            "malformed"
        );
        assert_eq!(
            json(r#"{"a": 1} {}"#).expect_err("trailing").reason(),
            "malformed"
        );
        assert_eq!(json("{}"), Err(DecodeError::Empty));
        assert_eq!(json(" "), Err(DecodeError::Empty));
    }

    #[test]
    fn plain_json_member_names_follow_senml_rules_and_limits() {
        assert_eq!(
            json(r#"{"heart rate": 70}"#).expect_err("space").reason(),
            "invalid"
        );
        let long = format!(r#"{{"{}": 1}}"#, "a".repeat(256));
        assert_eq!(json(&long), Err(DecodeError::TooLong("record name")));
        let mut c = ctx(None);
        c.limits.max_records = 2;
        let err = decode(ContentFormat::Json, br#"{"a":1,"b":2,"t":5,"c":3}"#, &c);
        assert_eq!(err, Err(DecodeError::TooManyRecords(2)));
        assert!(decode(ContentFormat::Json, br#"{"a":1,"t":5,"b":2}"#, &c).is_ok());
    }

    #[test]
    fn plain_cbor_map_members_become_records() {
        // {"spo2": 97, "ok": true, "note": "x", "raw": h'0102', "neg": -3, "t": <f64>}
        let mut bytes = hex("a6 64 73 70 6f 32 18 61  62 6f 6b f5  64 6e 6f 74 65 61 78
             63 72 61 77 42 01 02  63 6e 65 67 22  61 74 fb");
        bytes.extend_from_slice(&1_763_759_045.5f64.to_be_bytes());
        let records = cbor(&bytes).expect("decodes");
        assert_eq!(records.len(), 5);
        assert_eq!(records[0].v, Some(97.0));
        assert_eq!(records[1].vb, Some(true));
        assert_eq!(records[2].vs.as_deref(), Some("x"));
        assert_eq!(records[3].vd.as_deref(), Some("AQI"));
        assert_eq!(records[4].v, Some(-3.0));
        assert!(records.iter().all(|r| r.t == 1_763_759_045.5));
    }

    #[test]
    fn plain_cbor_rejects_what_is_not_a_map_of_scalars() {
        // {1: 2}
        assert_eq!(
            cbor(&hex("a1 01 02")).expect_err("int key").reason(),
            "invalid"
        );
        // [1]
        assert_eq!(cbor(&hex("81 01")).expect_err("array").reason(), "invalid");
        // {"a": null}, {"a": [1]}, {"a": 1(0)}
        for bad in ["a1 61 61 f6", "a1 61 61 81 01", "a1 61 61 c1 00"] {
            assert_eq!(cbor(&hex(bad)).expect_err(bad).reason(), "invalid", "{bad}");
        }
        // {"a": NaN}
        assert_eq!(
            cbor(&hex("a1 61 61 f9 7e 00")).expect_err("NaN").reason(),
            "invalid"
        );
        assert_eq!(
            cbor(&hex("a1 61 61 01 00")).expect_err("trailing").reason(),
            "malformed"
        );
        assert_eq!(
            cbor(&hex("a1 61 61")).expect_err("truncated").reason(),
            "malformed"
        );
        assert_eq!(cbor(&hex("a0")), Err(DecodeError::Empty));
        assert_eq!(cbor(&[]), Err(DecodeError::Empty));
    }

    #[test]
    fn text_plain_is_a_number_a_boolean_or_a_string() {
        let r = text(" 97.5\n", Some("spo2")).expect("number");
        assert_eq!((r[0].n.as_str(), r[0].v, r[0].t), ("spo2", Some(97.5), NOW));
        assert_eq!(text("true", Some("alarm")).expect("bool")[0].vb, Some(true));
        assert_eq!(
            text("false", Some("alarm")).expect("bool")[0].vb,
            Some(false)
        );
        assert_eq!(
            text("sensor detached", Some("status")).expect("string")[0]
                .vs
                .as_deref(),
            Some("sensor detached")
        );
        assert_eq!(
            text("-1e3", Some("x")).expect("exponent")[0].v,
            Some(-1000.0)
        );
    }

    #[test]
    fn text_plain_rejects_what_it_cannot_name_or_trust() {
        assert_eq!(text("97", None), Err(DecodeError::MissingName));
        assert_eq!(text(" \n", Some("x")), Err(DecodeError::Empty));
        assert_eq!(text("NaN", Some("x")).expect_err("NaN").reason(), "invalid");
        assert_eq!(
            text("1e999", Some("x")).expect_err("inf").reason(),
            "invalid"
        );
        assert_eq!(
            text("1", Some("bad name")).expect_err("name").reason(),
            "invalid"
        );
        let err = decode(ContentFormat::TextPlain, b"\xff97", &ctx(Some("x")));
        assert_eq!(err.expect_err("not UTF-8").reason(), "malformed");
        let mut none_allowed = ctx(Some("x"));
        none_allowed.limits.max_records = 0;
        let err = decode(ContentFormat::TextPlain, b"1", &none_allowed);
        assert_eq!(err, Err(DecodeError::TooManyRecords(0)));
        let long = "x".repeat(4097);
        assert_eq!(
            text(&long, Some("x")),
            Err(DecodeError::TooLong("string value"))
        );
    }

    #[test]
    fn every_decode_error_variant_has_its_reason() {
        let mut small = ctx(None);
        small.limits.max_records = 1;
        let cases = [
            (
                decode(ContentFormat::SenmlJson, b"[{", &ctx(None)),
                "malformed",
            ),
            (
                decode(ContentFormat::SenmlJson, br#"[{"n":"a"}]"#, &ctx(None)),
                "invalid",
            ),
            (
                decode(ContentFormat::SenmlCbor, b"\x80", &ctx(None)),
                "empty",
            ),
            (
                decode(
                    ContentFormat::SenmlJson,
                    br#"[{"n":"a","v":1},{"n":"b","v":2}]"#,
                    &small,
                ),
                "too_many_records",
            ),
            (
                decode(
                    ContentFormat::Json,
                    format!(r#"{{"{}":1}}"#, "n".repeat(300)).as_bytes(),
                    &ctx(None),
                ),
                "too_long",
            ),
            (
                decode(ContentFormat::TextPlain, b"1", &ctx(None)),
                "missing_name",
            ),
        ];
        for (result, reason) in cases {
            let err = result.expect_err(reason);
            assert_eq!(err.reason(), reason, "{err}");
        }
    }
}
