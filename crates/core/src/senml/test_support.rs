//! Helpers and RFC 8428 examples shared by the SenML unit tests.

use std::time::{Duration, UNIX_EPOCH};

use super::{decode_cbor, decode_json};
use crate::decode::{DecodeContext, DecodeError, Limits};
use crate::reading::Record;

pub(super) const NOW: f64 = 1_700_000_000.25;

pub(super) fn ctx() -> DecodeContext<'static> {
    DecodeContext {
        now: UNIX_EPOCH + Duration::from_secs_f64(NOW),
        default_name: None,
        limits: Limits::default(),
    }
}

pub(super) fn json(text: &str) -> Result<Vec<Record>, DecodeError> {
    decode_json(text.as_bytes(), &ctx())
}

pub(super) fn cbor(bytes: &[u8]) -> Result<Vec<Record>, DecodeError> {
    decode_cbor(bytes, &ctx())
}

pub(super) fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|pair| {
            let s = std::str::from_utf8(pair).expect("hex digits are ASCII");
            u8::from_str_radix(s, 16).expect("two hex digits")
        })
        .collect()
}

pub(super) fn rec(n: &str, u: Option<&str>, v: f64, t: f64) -> Record {
    Record {
        n: n.into(),
        u: u.map(Into::into),
        v: Some(v),
        t,
        ..Record::default()
    }
}

pub(super) const RFC_5_1_2_TIMED: &str = r#"[
    {"bn":"urn:dev:ow:10e2073a0108006:","bt":1.276020076001e+09,
     "bu":"A","bver":5,
     "n":"voltage","u":"V","v":120.1},
    {"n":"current","t":-5,"v":1.2},
    {"n":"current","t":-4,"v":1.3},
    {"n":"current","t":-3,"v":1.4},
    {"n":"current","t":-2,"v":1.5},
    {"n":"current","t":-1,"v":1.6},
    {"n":"current","v":1.7}
]"#;

pub(super) fn rfc_5_1_2_timed_resolved() -> Vec<Record> {
    let bt = 1.276020076001e9;
    let current = "urn:dev:ow:10e2073a0108006:current";
    vec![
        rec("urn:dev:ow:10e2073a0108006:voltage", Some("V"), 120.1, bt),
        rec(current, Some("A"), 1.2, bt - 5.0),
        rec(current, Some("A"), 1.3, bt - 4.0),
        rec(current, Some("A"), 1.4, bt - 3.0),
        rec(current, Some("A"), 1.5, bt - 2.0),
        rec(current, Some("A"), 1.6, bt - 1.0),
        rec(current, Some("A"), 1.7, bt),
    ]
}

pub(super) const RFC_CBOR_EXAMPLE: &str = "
    87 a7 21 78 1b 75 72 6e 3a 64 65 76 3a 6f 77 3a
    31 30 65 32 30 37 33 61 30 31 30 38 30 30 36 3a
    22 fb 41 d3 03 a1 5b 00 10 62 23 61 41 20 05 00
    67 76 6f 6c 74 61 67 65 01 61 56 02 fb 40 5e 06
    66 66 66 66 66 a3 00 67 63 75 72 72 65 6e 74 06
    24 02 fb 3f f3 33 33 33 33 33 33 a3 00 67 63 75
    72 72 65 6e 74 06 23 02 fb 3f f4 cc cc cc cc cc
    cd a3 00 67 63 75 72 72 65 6e 74 06 22 02 fb 3f
    f6 66 66 66 66 66 66 a3 00 67 63 75 72 72 65 6e
    74 06 21 02 f9 3e 00 a3 00 67 63 75 72 72 65 6e
    74 06 20 02 fb 3f f9 99 99 99 99 99 9a a3 00 67
    63 75 72 72 65 6e 74 06 00 02 fb 3f fb 33 33 33
    33 33 33";
