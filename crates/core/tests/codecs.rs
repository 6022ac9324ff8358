//! Property tests for the payload codecs (`payload::decode`, `senml::{encode,decode}_{json,cbor}`).
//!
//! What they pin down:
//! - no input, however hostile, makes any decoder panic, for every Content-Format;
//! - whatever a decoder accepts satisfies the published record rules
//!   (`docs/readings.schema.json` `$defs/record`: a non-empty name, exactly one value kind or only
//!   a sum) and the configured limits;
//! - valid resolved records survive encode → decode in both SenML encodings;
//! - the JSON and CBOR SenML decoders agree on the same pack, base values and errors included;
//! - nesting deep enough to overflow a recursive parser's stack is an error, not a crash.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proptest::prelude::*;
use wardgate_core::payload::{self, ContentFormat, DecodeContext, DecodeError, Limits};
use wardgate_core::{MessageClass, Protocol, Reading, Record, senml};

/// SenML times at or above 2^28 s are absolute (RFC 8428 §4.5.3).
const ABSOLUTE_TIME_MIN: f64 = 268_435_456.0;

const NOW_SECS: f64 = 1_763_759_045.25;

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs_f64(NOW_SECS)
}

fn ctx(limits: Limits) -> DecodeContext<'static> {
    DecodeContext {
        now: now(),
        default_name: Some("value"),
        limits,
    }
}

static SCHEMA: LazyLock<jsonschema::Validator> = LazyLock::new(|| {
    let text = include_str!("../../../docs/readings.schema.json");
    let schema: serde_json::Value = serde_json::from_str(text).expect("schema is JSON");
    jsonschema::validator_for(&schema).expect("schema compiles")
});

/// RFC 8428 §4.5.1.
fn is_senml_name(name: &str) -> bool {
    let b = name.as_bytes();
    b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-:./_".contains(c))
}

/// Unpadded base64url (RFC 4648 §5), written independently of the crate's own.
fn base64url(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &byte in data {
        acc = (acc << 8) | u32::from(byte);
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            out.push(char::from(ALPHABET[((acc >> bits) & 63) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((acc << (6 - bits)) & 63) as usize]));
    }
    out
}

fn base64url_decoded_len(text: &str) -> usize {
    text.len() / 4 * 3 + (text.len() % 4).saturating_sub(1)
}

/// Everything the decoders promise about what they accept. Panics (failing the property) with
/// the first broken rule.
fn assert_records_are_publishable(records: &[Record], limits: &Limits) {
    assert!(!records.is_empty(), "Ok with no records");
    assert!(
        records.len() <= limits.max_records,
        "more records than the limit"
    );
    for r in records {
        assert!(!r.n.is_empty(), "empty name");
        assert!(r.n.len() <= limits.max_name_len, "name over the limit");
        assert!(
            is_senml_name(&r.n),
            "name breaks RFC 8428 §4.5.1: {:?}",
            r.n
        );
        let kinds = [
            r.v.is_some(),
            r.vs.is_some(),
            r.vb.is_some(),
            r.vd.is_some(),
        ];
        let kinds = kinds.into_iter().filter(|k| *k).count();
        assert!(kinds <= 1, "more than one value kind: {r:?}");
        assert!(kinds == 1 || r.s.is_some(), "no value and no sum: {r:?}");
        for x in [r.v, r.s, r.ut, Some(r.t)].into_iter().flatten() {
            assert!(x.is_finite(), "non-finite number: {r:?}");
        }
        assert!(r.ut.is_none_or(|ut| ut >= 0.0), "negative ut: {r:?}");
        if let Some(vs) = &r.vs {
            assert!(
                vs.len() <= limits.max_value_len,
                "string value over the limit"
            );
        }
        if let Some(vd) = &r.vd {
            assert!(!vd.contains('='), "vd carries padding");
            assert!(
                vd.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'),
                "vd is not base64url: {vd:?}"
            );
            assert!(vd.len() % 4 != 1, "vd has an impossible length");
            assert!(
                base64url_decoded_len(vd) <= limits.max_value_len,
                "data value over the limit"
            );
        }
    }

    // The published contract, checked by a JSON Schema validator on the northbound JSON.
    let reading = Reading::new(
        "gw-test",
        "dev-test",
        Protocol::Coap,
        MessageClass::Vital,
        now(),
        records.to_vec(),
    );
    let json: serde_json::Value =
        serde_json::from_slice(&reading.encode().json).expect("reading JSON parses");
    let errors: Vec<String> = SCHEMA.iter_errors(&json).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "schema violations {errors:?} in {json}");
}

/// Decoding the decoder's own output gives the same records back whenever that is possible:
/// every time is absolute (a resolved time below 2^28 would be re-read as relative).
fn assert_reencoding_is_stable(records: &[Record]) {
    if records.iter().any(|r| r.t < ABSOLUTE_TIME_MIN) {
        return;
    }
    let c = ctx(Limits::default());
    assert_eq!(
        senml::decode_json(&senml::encode_json(records), &c).as_deref(),
        Ok(records),
        "SenML JSON re-encoding"
    );
    assert_eq!(
        senml::decode_cbor(&senml::encode_cbor(records), &c).as_deref(),
        Ok(records),
        "SenML CBOR re-encoding"
    );
}

/// Runs every decoder on `body` and checks whatever they accept.
fn decode_everything(body: &[u8], limits: Limits) {
    let c = ctx(limits);
    for format in ContentFormat::ALL {
        if let Ok(records) = payload::decode(format, body, &c) {
            assert_records_are_publishable(&records, &limits);
            if limits == Limits::default() {
                assert_reencoding_is_stable(&records);
            }
        }
    }
}

// -------------------------------------------------------------------------------------------
// Strategies
// -------------------------------------------------------------------------------------------

fn finite() -> impl Strategy<Value = f64> {
    use proptest::num::f64::{NEGATIVE, NORMAL, POSITIVE, SUBNORMAL, ZERO};
    prop_oneof![
        (POSITIVE | NEGATIVE | NORMAL | SUBNORMAL | ZERO),
        (-1000i32..1000).prop_map(f64::from),
        -1e6..1e6f64,
    ]
}

fn non_negative() -> impl Strategy<Value = f64> {
    use proptest::num::f64::{NORMAL, POSITIVE, SUBNORMAL, ZERO};
    prop_oneof![(POSITIVE | NORMAL | SUBNORMAL | ZERO), 0.0..86_400.0f64]
}

fn absolute_time() -> impl Strategy<Value = f64> {
    prop_oneof![
        ABSOLUTE_TIME_MIN..4e9f64,
        (ABSOLUTE_TIME_MIN as u64..4_000_000_000u64).prop_map(|t| t as f64),
        ABSOLUTE_TIME_MIN..f64::MAX,
        Just(ABSOLUTE_TIME_MIN),
    ]
}

fn name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9][A-Za-z0-9:./_-]{0,40}"
}

fn limits() -> impl Strategy<Value = Limits> {
    prop_oneof![
        Just(Limits::default()),
        (0usize..6, 0usize..24, 0usize..24).prop_map(|(r, n, v)| Limits {
            max_records: r,
            max_name_len: n,
            max_value_len: v,
        }),
    ]
}

/// A valid resolved record with absolute time: what encoders are given.
fn record() -> impl Strategy<Value = Record> {
    let value = prop_oneof![
        finite().prop_map(|v| (Some(v), None, None, None)),
        ".{0,40}".prop_map(|vs| (None, Some(vs), None, None)),
        any::<bool>().prop_map(|vb| (None, None, Some(vb), None)),
        proptest::collection::vec(any::<u8>(), 0..48).prop_map(|vd| (
            None,
            None,
            None,
            Some(base64url(&vd))
        )),
        Just((None, None, None, None)),
    ];
    (
        name(),
        proptest::option::of(".{0,8}"),
        value,
        proptest::option::of(finite()),
        absolute_time(),
        proptest::option::of(non_negative()),
    )
        .prop_map(|(n, u, (v, vs, vb, vd), s, t, ut)| {
            let no_value = v.is_none() && vs.is_none() && vb.is_none() && vd.is_none();
            // A record needs a value or a sum.
            let s = if no_value { Some(s.unwrap_or(0.0)) } else { s };
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
                // SenML carries no device path: only adapters that address values by path
                // (LwM2M) set it.
                path: None,
            }
        })
}

/// A scalar in a raw (unresolved) SenML record, before it is written in either encoding.
#[derive(Debug, Clone)]
enum Scalar {
    Int(i64),
    Float(f64),
    Text(String),
    Bool(bool),
    Null,
    /// A data value: base64url text in JSON, a byte string in CBOR.
    Data(Vec<u8>),
    /// Nested arrays (for extension labels).
    Nested(usize),
}

impl Scalar {
    fn json(&self) -> String {
        match self {
            Scalar::Int(x) => x.to_string(),
            Scalar::Float(x) => serde_json::to_string(x).expect("finite floats serialize"),
            Scalar::Text(s) => serde_json::to_string(s).expect("strings serialize"),
            Scalar::Bool(b) => b.to_string(),
            Scalar::Null => "null".into(),
            Scalar::Data(d) => serde_json::to_string(&base64url(d)).expect("strings serialize"),
            Scalar::Nested(depth) => format!("{}1{}", "[".repeat(*depth), "]".repeat(*depth)),
        }
    }

    fn cbor(&self) -> ciborium::Value {
        use ciborium::Value as V;
        match self {
            Scalar::Int(x) => V::Integer((*x).into()),
            Scalar::Float(x) => V::Float(*x),
            Scalar::Text(s) => V::Text(s.clone()),
            Scalar::Bool(b) => V::Bool(*b),
            Scalar::Null => V::Null,
            Scalar::Data(d) => V::Bytes(d.clone()),
            Scalar::Nested(depth) => {
                (0..*depth).fold(V::Integer(1.into()), |inner, _| V::Array(vec![inner]))
            }
        }
    }
}

/// SenML labels with their JSON and CBOR keys, plus extensions (text keys in both encodings).
const LABELS: [(&str, Option<i64>); 18] = [
    ("bver", Some(-1)),
    ("bn", Some(-2)),
    ("bt", Some(-3)),
    ("bu", Some(-4)),
    ("bv", Some(-5)),
    ("bs", Some(-6)),
    ("n", Some(0)),
    ("u", Some(1)),
    ("v", Some(2)),
    ("vs", Some(3)),
    ("vb", Some(4)),
    ("s", Some(5)),
    ("t", Some(6)),
    ("ut", Some(7)),
    ("vd", Some(8)),
    ("ct", None),
    ("x-ext", None),
    ("must_", None),
];

/// A plausible value for a label: usually the right type, sometimes not.
fn scalar_for(label: &str) -> BoxedStrategy<Scalar> {
    let number = prop_oneof![
        (-100i64..100).prop_map(Scalar::Int),
        (1_700_000_000i64..1_800_000_000).prop_map(Scalar::Int),
        finite().prop_map(Scalar::Float),
    ];
    let right: BoxedStrategy<Scalar> = match label {
        "bver" => prop_oneof![4 => Just(10), 1 => 0i64..12]
            .prop_map(Scalar::Int)
            .boxed(),
        "bn" => prop_oneof![
            9 => "([A-Za-z0-9][A-Za-z0-9:./_-]{0,11})?",
            1 => "[A-Za-z0-9:./_-]{0,12}",
        ]
        .prop_map(Scalar::Text)
        .boxed(),
        "n" => prop_oneof![
            9 => "[A-Za-z0-9][A-Za-z0-9:./_-]{0,11}",
            1 => "[A-Za-z0-9:./_ ?-]{0,12}",
        ]
        .prop_map(Scalar::Text)
        .boxed(),
        "u" | "bu" | "vs" | "ct" => ".{0,12}".prop_map(Scalar::Text).boxed(),
        "vb" => any::<bool>().prop_map(Scalar::Bool).boxed(),
        "ut" => prop_oneof![
            (0i64..100).prop_map(Scalar::Int),
            non_negative().prop_map(Scalar::Float),
        ]
        .boxed(),
        "vd" => proptest::collection::vec(any::<u8>(), 0..24)
            .prop_map(Scalar::Data)
            .boxed(),
        "x-ext" | "must_" => (0usize..6).prop_map(Scalar::Nested).boxed(),
        _ => number.boxed(),
    };
    let wrong = prop_oneof![
        (-3i64..3).prop_map(Scalar::Int),
        "[a-z]{0,3}".prop_map(Scalar::Text),
        any::<bool>().prop_map(Scalar::Bool),
        Just(Scalar::Null),
        (1usize..3).prop_map(Scalar::Nested),
    ];
    prop_oneof![24 => right, 1 => wrong].boxed()
}

type RawRecord = Vec<(usize, Scalar)>;

/// An unresolved SenML record: distinct labels in a random order with plausible values. Mostly
/// one value label plus a few others, so that a good share of packs is valid and resolution,
/// not just rejection, gets compared.
fn raw_record() -> impl Strategy<Value = RawRecord> {
    const VALUES: [usize; 5] = [8, 9, 10, 11, 14]; // v, vs, vb, s, vd
    const OTHERS: [usize; 11] = [0, 1, 2, 3, 4, 5, 7, 12, 13, 15, 16];
    const NAME: usize = 6;
    const MUST_UNDERSTAND: usize = 17;
    let values = prop_oneof![
        12 => proptest::sample::select(&VALUES[..]).prop_map(|i| vec![i]),
        1 => Just(Vec::new()),
        1 => proptest::sample::subsequence(&VALUES[..], 2),
    ];
    let others = proptest::sample::subsequence(&OTHERS[..], 0..5);
    let flags = (
        proptest::bool::weighted(0.92),
        proptest::bool::weighted(0.03),
    );
    (values, others, flags)
        .prop_map(|(values, others, (name, must))| {
            let mut labels = [values, others].concat();
            if name {
                labels.push(NAME);
            }
            if must {
                labels.push(MUST_UNDERSTAND);
            }
            labels
        })
        .prop_shuffle()
        .prop_flat_map(|labels| {
            labels
                .into_iter()
                .map(|i| scalar_for(LABELS[i].0).prop_map(move |v| (i, v)))
                .collect::<Vec<_>>()
        })
}

fn raw_pack() -> impl Strategy<Value = Vec<RawRecord>> {
    proptest::collection::vec(raw_record(), 0..6)
}

fn pack_json(pack: &[RawRecord]) -> Vec<u8> {
    let records: Vec<String> = pack
        .iter()
        .map(|record| {
            let fields: Vec<String> = record
                .iter()
                .map(|(i, value)| format!("{:?}:{}", LABELS[*i].0, value.json()))
                .collect();
            format!("{{{}}}", fields.join(","))
        })
        .collect();
    format!("[{}]", records.join(",")).into_bytes()
}

fn pack_cbor(pack: &[RawRecord]) -> Vec<u8> {
    use ciborium::Value as V;
    let records = pack
        .iter()
        .map(|record| {
            V::Map(
                record
                    .iter()
                    .map(|(i, value)| {
                        let key = match LABELS[*i] {
                            (_, Some(int)) => V::Integer(int.into()),
                            (text, None) => V::Text(text.into()),
                        };
                        (key, value.cbor())
                    })
                    .collect(),
            )
        })
        .collect();
    let mut out = Vec::new();
    ciborium::into_writer(&V::Array(records), &mut out).expect("CBOR serializes");
    out
}

/// Byte-level damage to a valid encoding: overwrite, insert, delete or truncate.
#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Truncate(usize),
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    let one = prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Remove),
        any::<usize>().prop_map(Mutation::Truncate),
    ];
    proptest::collection::vec(one, 1..4)
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = bytes.len();
        match *m {
            Mutation::Set(i, b) if len > 0 => bytes[i % len] = b,
            Mutation::Insert(i, b) => bytes.insert(i % (len + 1), b),
            Mutation::Remove(i) if len > 0 => {
                bytes.remove(i % len);
            }
            Mutation::Truncate(i) => bytes.truncate(i % (len + 1)),
            _ => {}
        }
    }
    bytes
}

/// Bytes drawn mostly from JSON's punctuation and SenML's labels, so that random input gets past
/// the first byte of the JSON parsers.
fn jsonish_bytes() -> impl Strategy<Value = Vec<u8>> {
    let pieces = prop_oneof![
        proptest::sample::select(
            &[
                "[",
                "]",
                "{",
                "}",
                ",",
                ":",
                "\"",
                "\"n\"",
                "\"bn\"",
                "\"v\"",
                "\"vs\"",
                "\"vd\"",
                "\"t\"",
                "\"bt\"",
                "\"bver\"",
                "\"x_\"",
                "\"a\"",
                "1",
                "-5",
                "1e308",
                "0.5",
                "true",
                "null",
                " ",
                "\\",
                "\"AQI\"",
                "1763759045",
            ][..]
        )
        .prop_map(|s| s.as_bytes().to_vec()),
        any::<u8>().prop_map(|b| vec![b]),
    ];
    proptest::collection::vec(pieces, 0..48).prop_map(|v| v.concat())
}

// -------------------------------------------------------------------------------------------
// Properties
// -------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn arbitrary_bytes_never_panic_any_decoder(
        body in proptest::collection::vec(any::<u8>(), 0..256),
        limits in limits(),
    ) {
        decode_everything(&body, limits);
    }

    #[test]
    fn json_like_bytes_never_panic_any_decoder(body in jsonish_bytes(), limits in limits()) {
        decode_everything(&body, limits);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn damaged_senml_never_panics_and_what_is_accepted_is_publishable(
        records in proptest::collection::vec(record(), 1..6),
        damage in mutations(),
    ) {
        decode_everything(&mutate(senml::encode_json(&records), &damage), Limits::default());
        decode_everything(&mutate(senml::encode_cbor(&records), &damage), Limits::default());
    }

    #[test]
    fn valid_records_round_trip_through_senml_json(
        records in proptest::collection::vec(record(), 1..20),
    ) {
        let c = ctx(Limits::default());
        let bytes = senml::encode_json(&records);
        prop_assert_eq!(senml::decode_json(&bytes, &c), Ok(records.clone()));
        prop_assert_eq!(payload::decode(ContentFormat::SenmlJson, &bytes, &c), Ok(records));
    }

    #[test]
    fn valid_records_round_trip_through_senml_cbor(
        records in proptest::collection::vec(record(), 1..20),
    ) {
        let c = ctx(Limits::default());
        let bytes = senml::encode_cbor(&records);
        // The encoding is CBOR a general-purpose parser accepts.
        let generic: Result<ciborium::Value, _> = ciborium::from_reader(bytes.as_slice());
        prop_assert!(generic.is_ok(), "ciborium rejects our CBOR: {:?}", generic.err());
        prop_assert_eq!(senml::decode_cbor(&bytes, &c), Ok(records.clone()));
        prop_assert_eq!(payload::decode(ContentFormat::SenmlCbor, &bytes, &c), Ok(records));
    }

    #[test]
    fn senml_json_and_cbor_decoders_agree_on_unresolved_packs(
        pack in raw_pack(),
        limits in limits(),
    ) {
        let c = ctx(limits);
        let from_json = senml::decode_json(&pack_json(&pack), &c);
        let from_cbor = senml::decode_cbor(&pack_cbor(&pack), &c);
        if let Ok(records) = &from_json {
            assert_records_are_publishable(records, &limits);
        }
        if pack.len() <= limits.max_records {
            prop_assert_eq!(from_json, from_cbor);
        } else {
            // A CBOR array declares its length, so an over-long pack is refused before any
            // record is read; JSON finds out only on reaching the extra record and may have
            // failed earlier for another reason. Both refuse it.
            prop_assert_eq!(from_cbor, Err(DecodeError::TooManyRecords(limits.max_records)));
            prop_assert!(from_json.is_err());
        }
    }

    #[test]
    fn plain_json_and_cbor_objects_decode_alike_member_by_member(
        members in proptest::collection::vec((name(), scalar_for("v")), 0..8),
        limits in limits(),
    ) {
        let c = ctx(limits);
        let json: Vec<String> = members
            .iter()
            .map(|(n, v)| format!("{}:{}", serde_json::to_string(n).expect("name"), v.json()))
            .collect();
        let json = format!("{{{}}}", json.join(","));
        let cbor = ciborium::Value::Map(
            members
                .iter()
                .map(|(n, v)| (ciborium::Value::Text(n.clone()), v.cbor()))
                .collect(),
        );
        let mut cbor_bytes = Vec::new();
        ciborium::into_writer(&cbor, &mut cbor_bytes).expect("CBOR serializes");
        let from_json = payload::decode(ContentFormat::Json, json.as_bytes(), &c);
        let from_cbor = payload::decode(ContentFormat::Cbor, &cbor_bytes, &c);
        if let Ok(records) = &from_json {
            assert_records_are_publishable(records, &limits);
            // One record per member except the time members, in order.
            let names: Vec<&str> = members
                .iter()
                .map(|(n, _)| n.as_str())
                .filter(|n| !matches!(*n, "t" | "time"))
                .collect();
            let got: Vec<&str> = records.iter().map(|r| r.n.as_str()).collect();
            prop_assert_eq!(got, names);
        }
        prop_assert_eq!(from_json, from_cbor);
    }

    #[test]
    fn text_plain_numbers_booleans_and_strings_decode_to_their_kind(text in ".{0,64}") {
        let c = ctx(Limits::default());
        let result = payload::decode(ContentFormat::TextPlain, text.as_bytes(), &c);
        let trimmed = text.trim();
        match result {
            Ok(records) => {
                assert_records_are_publishable(&records, &c.limits);
                let r = &records[0];
                prop_assert_eq!(r.n.as_str(), "value");
                prop_assert_eq!(r.t, NOW_SECS);
                match trimmed {
                    "true" | "false" => prop_assert_eq!(r.vb, Some(trimmed == "true")),
                    _ => match trimmed.parse::<f64>() {
                        Ok(v) => prop_assert_eq!(r.v, Some(v)),
                        Err(_) => prop_assert_eq!(r.vs.as_deref(), Some(trimmed)),
                    },
                }
            }
            Err(DecodeError::Empty) => prop_assert!(trimmed.is_empty()),
            Err(e) => prop_assert!(
                trimmed.parse::<f64>().is_ok_and(|v| !v.is_finite()),
                "unexpected {e}"
            ),
        }
    }
}

// -------------------------------------------------------------------------------------------
// Hostile nesting
// -------------------------------------------------------------------------------------------

const DEEP: usize = 100_000;

fn assert_every_decoder_rejects(body: &[u8]) {
    let c = ctx(Limits::default());
    for format in ContentFormat::ALL {
        assert!(
            payload::decode(format, body, &c).is_err(),
            "{format:?} accepted it"
        );
    }
}

#[test]
fn deeply_nested_json_is_an_error_for_every_decoder() {
    assert_every_decoder_rejects("[".repeat(DEEP).as_bytes());
    assert_every_decoder_rejects(format!("{}1{}", "[".repeat(DEEP), "]".repeat(DEEP)).as_bytes());
    assert_every_decoder_rejects(r#"{"a":"#.repeat(DEEP).as_bytes());
    // Nested inside a value the decoders do read.
    let in_value = format!(
        r#"[{{"n":"a","v":{}1{}}}]"#,
        "[".repeat(DEEP),
        "]".repeat(DEEP)
    );
    assert_every_decoder_rejects(in_value.as_bytes());
    let in_member = format!(r#"{{"spo2":{}1{}}}"#, "[".repeat(DEEP), "]".repeat(DEEP));
    assert_every_decoder_rejects(in_member.as_bytes());
    let objects = format!(
        r#"{{"spo2":{}1{}}}"#,
        r#"{"a":"#.repeat(DEEP),
        "}".repeat(DEEP)
    );
    assert_every_decoder_rejects(objects.as_bytes());
}

#[test]
fn deeply_nested_cbor_is_an_error_for_every_decoder() {
    let c = ctx(Limits::default());
    // 100k nested one-element arrays, then 100k nested one-entry maps {0: {0: ...}}.
    let mut arrays = vec![0x81; DEEP];
    arrays.push(0x01);
    assert_every_decoder_rejects(&arrays);
    let mut maps = [0xa1, 0x00].repeat(DEEP);
    maps.push(0x01);
    assert_every_decoder_rejects(&maps);
    // Indefinite-length arrays that never close.
    assert_every_decoder_rejects(&[0x9f; DEEP]);
    // Deep nesting in a value label, in an ignored extension label and in a plain CBOR member.
    // [{0: "a", 2: [[[...]]]}]
    let mut in_value = vec![0x81, 0xa2, 0x00, 0x61, b'a', 0x02];
    in_value.extend_from_slice(&arrays);
    assert!(payload::decode(ContentFormat::SenmlCbor, &in_value, &c).is_err());
    // [{0: "a", 2: 1, "x": [[[...]]]}]
    let mut in_extension = vec![0x81, 0xa3, 0x00, 0x61, b'a', 0x02, 0x01, 0x61, b'x'];
    in_extension.extend_from_slice(&arrays);
    assert!(payload::decode(ContentFormat::SenmlCbor, &in_extension, &c).is_err());
    // {"a": {0: {0: ...}}}
    let mut in_member = vec![0xa1, 0x61, b'a'];
    in_member.extend_from_slice(&maps);
    assert!(payload::decode(ContentFormat::Cbor, &in_member, &c).is_err());
    // A long chain of tags is not nesting, but must not recurse either: 1(1(1(...1(1))))
    let mut tags = [0xc1].repeat(DEEP);
    tags.push(0x01);
    assert_every_decoder_rejects(&tags);
    let mut tagged_extension = vec![0x81, 0xa3, 0x00, 0x61, b'a', 0x02, 0x01, 0x61, b'x'];
    tagged_extension.extend_from_slice(&tags);
    assert!(payload::decode(ContentFormat::SenmlCbor, &tagged_extension, &c).is_ok());
}
