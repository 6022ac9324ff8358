//! Malformed, out-of-bounds and contradictory payloads: each refused with the right error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod formats_support;

use formats_support::*;
use wardgate_lwm2m::Value;
use wardgate_lwm2m::format::{self, Format, FormatError, Limits};

fn reason(r: Result<Vec<wardgate_lwm2m::Entry>, FormatError>) -> &'static str {
    r.map(|_| "ok").unwrap_or_else(|e| e.reason())
}

#[test]
fn truncated_tlv_is_malformed_at_every_cut() {
    let bytes = hex(DEVICE_TLV);
    let whole = device();
    for cut in 1..bytes.len() {
        // A cut between two resources is a shorter, valid body: its entries are a prefix.
        match dec(Format::Tlv, "/3/0", &bytes[..cut]) {
            Ok(got) => assert_eq!(got[..], whole[..got.len()], "cut at {cut}"),
            Err(e) => assert_eq!(e.reason(), "malformed", "cut at {cut}"),
        }
    }
    // A 24-bit length claiming 16 MiB in a 10-byte body.
    assert_eq!(
        reason(dec(Format::Tlv, "/9999/0", &hex("D8 05 FF FF FF 00 00"))),
        "malformed"
    );
}

#[test]
fn tlv_values_that_do_not_fit_their_type_are_invalid() {
    for (path, bytes) in [
        ("/9999/0/4", "C1 04 02"),          // boolean 2
        ("/9999/0/4", "C2 04 00 01"),       // boolean of two bytes
        ("/9999/0/1", "C3 01 00 00 01"),    // 3-byte integer
        ("/9999/0/3", "C2 03 00 01"),       // 2-byte float
        ("/9999/0/3", "C4 03 7F C0 00 00"), // NaN
        ("/9999/0/3", "C4 03 7F 80 00 00"), // +inf
        ("/9999/0/0", "C2 00 C3 28"),       // not UTF-8
        ("/9999/0/7", "C3 07 00 03 00"),    // 3-byte object link
        ("/3/0/4", "C1 04 01"),             // an executable resource
    ] {
        assert_eq!(
            reason(dec(Format::Tlv, path, &hex(bytes))),
            "invalid",
            "{bytes}"
        );
    }
}

#[test]
fn tlv_structure_outside_the_request_or_of_the_wrong_kind_is_invalid() {
    for (base, bytes) in [
        ("/3/0/9", "C1 0A 0F"),       // another resource
        ("/3/0/6/1", "41 00 01"),     // another resource instance
        ("/3", "C1 09 64"),           // a resource where instances belong
        ("/3/0", "41 00 01"),         // a resource instance where resources belong
        ("/3/0/6", "83 06 C1 00 01"), // a resource inside a multiple resource
        ("/", "08 00 03 C1 09 64"),   // TLV at the root
        ("/3/0", "C1 FF FF"),         // 8-bit id 255 is fine, but... (checked below)
    ] {
        if bytes == "C1 FF FF" {
            continue;
        }
        assert_eq!(
            reason(dec(Format::Tlv, base, &hex(bytes))),
            "invalid",
            "{base} {bytes}"
        );
    }
    // The reserved id 65535.
    assert_eq!(
        reason(dec(Format::Tlv, "/3/0", &hex("E1 FF FF 00"))),
        "invalid"
    );
}

#[test]
fn entries_and_values_beyond_the_limits_are_too_large() {
    let limits = Limits {
        max_entries: 3,
        max_depth: 4,
        max_value_len: 8,
        max_body: 64,
    };
    let d =
        |f, base: &str, body: &[u8]| format::decode_with(f, &p(base), body, &Model, now(), &limits);
    let four = hex("C1 09 64 C1 0A 0F C1 0D 00 C1 10 55");
    assert_eq!(
        d(Format::Tlv, "/3/0", &four),
        Err(FormatError::TooLarge("the number of entries"))
    );
    assert_eq!(reason(d(Format::Tlv, "/3/0", &four[..9])), "ok");
    let long = hex("C9 00 09 41 41 41 41 41 41 41 41 41");
    assert_eq!(reason(d(Format::Tlv, "/3/0", &long)), "too_large");
    assert_eq!(reason(d(Format::Text, "/3/0/0", &[b'a'; 9])), "too_large");
    assert_eq!(
        reason(d(Format::Opaque, "/9999/0/5", &[0; 65])),
        "too_large"
    );
    let json = br#"[{"n":"/3/0/9","v":1},{"n":"/3/0/10","v":1},{"n":"/3/0/13","v":1},{"n":"/3/0/0","vs":"x"}]"#;
    assert_eq!(
        reason(format::decode_with(
            Format::SenmlJson,
            &p("/"),
            json,
            &Model,
            now(),
            &Limits {
                max_body: 1000,
                ..limits
            }
        )),
        "too_large"
    );
    // CBOR nesting inside an ignored SenML label: [{0: "/3/0/9", 2: 1, 99: [[[[[1]]]]]}]
    let mut nested = hex("81 a3 00 66 2f 33 2f 30 2f 39 02 01 18 63");
    nested.extend([0x81; 5]);
    nested.push(1);
    assert_eq!(reason(d(Format::SenmlCbor, "/", &nested)), "too_large");
    // The default bounds: 1025 entries are refused, 1024 accepted.
    let many = |n: usize| {
        let recs: Vec<String> = (0..n)
            .map(|i| format!(r#"{{"n":"/9999/0/11/{i}","v":{i}}}"#))
            .collect();
        format!("[{}]", recs.join(","))
    };
    assert_eq!(
        dec(Format::SenmlJson, "/9999", many(1024).as_bytes()).map(|v| v.len()),
        Ok(1024)
    );
    assert_eq!(
        reason(dec(Format::SenmlJson, "/9999", many(1025).as_bytes())),
        "too_large"
    );
    // JSON nesting in an ignored label is skipped without recursion (serde_json's
    // `IgnoredAny` walks iteratively), so even 100 000 levels cost no stack.
    let deep = format!(
        "[{{\"n\":\"/3/0/0\",\"vs\":\"a\",\"x\":{}1{}}}]",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert_eq!(
        dec(Format::SenmlJson, "/", deep.as_bytes()),
        Ok(vec![e("/3/0/0", s("a"))])
    );
}

#[test]
fn duplicate_paths_are_refused_unless_their_times_differ() {
    // TLV and LwM2M CBOR carry no times: a path twice is invalid.
    assert_eq!(
        reason(dec(Format::Tlv, "/3/0", &hex("C1 09 64 C1 09 63"))),
        "invalid"
    );
    // {[3, 0, 9]: 1, 3: {0: {9: 2}}}
    let cbor = hex("a2 83 03 00 09 01 03 a1 00 a1 09 02");
    assert_eq!(reason(dec(Format::Lwm2mCbor, "/", &cbor)), "invalid");
    // SenML: the same path twice with the same (or no) time is invalid, with two times fine.
    let same = br#"[{"n":"/3/0/9","v":1},{"n":"/3/0/9","v":2}]"#;
    assert_eq!(reason(dec(Format::SenmlJson, "/", same)), "invalid");
    let timed = br#"[{"n":"/3/0/9","v":1,"t":1767225000},{"n":"/3/0/9","v":2,"t":1767225001}]"#;
    assert_eq!(reason(dec(Format::SenmlJson, "/", timed)), "ok");
    // A resource as a single value and with instances.
    let both = br#"[{"n":"/3/0/7","v":1},{"n":"/3/0/7/0","v":2}]"#;
    assert_eq!(reason(dec(Format::SenmlJson, "/", both)), "invalid");
    // Encoders hold the same rule; time-less formats refuse a repeated path even with times.
    let two = [
        et("/3/0/9", Value::Integer(1), 1.8e9),
        et("/3/0/9", Value::Integer(2), 1.9e9),
    ];
    assert!(enc(Format::SenmlCbor, "/3/0", &two).is_ok());
    assert_eq!(
        enc(Format::Tlv, "/3/0", &two)
            .map(|_| ())
            .unwrap_err()
            .reason(),
        "invalid"
    );
    assert_eq!(
        enc(Format::Lwm2mCbor, "/3/0", &two)
            .map(|_| ())
            .unwrap_err()
            .reason(),
        "invalid"
    );
}

#[test]
fn entries_outside_the_request_path_are_invalid() {
    let body = br#"[{"n":"/3/0/9","v":1},{"n":"/3/1/9","v":1}]"#;
    assert_eq!(reason(dec(Format::SenmlJson, "/3/0", body)), "invalid");
    assert_eq!(
        reason(dec(
            Format::OmaJson,
            "/3/0",
            br#"{"bn":"/4/0/","e":[{"n":"1","v":1}]}"#
        )),
        "invalid"
    );
    assert_eq!(
        reason(dec(Format::Lwm2mCbor, "/3/0", &hex("a1 83 03 01 09 01"))),
        "invalid"
    );
    // Names that are not resource paths.
    assert_eq!(
        reason(dec(Format::SenmlJson, "/", br#"[{"n":"/3/0","v":1}]"#)),
        "invalid"
    );
    assert_eq!(
        reason(dec(Format::SenmlJson, "/", br#"[{"n":"temp","v":1}]"#)),
        "invalid"
    );
    assert_eq!(
        reason(dec(
            Format::SenmlJson,
            "/",
            br#"[{"n":"/3/0/65535","v":1}]"#
        )),
        "invalid"
    );
    let out = enc(Format::SenmlJson, "/3/0", &[e("/4/0/1", Value::Integer(1))]);
    assert_eq!(out.unwrap_err().reason(), "invalid");
}

#[test]
fn senml_records_breaking_the_lwm2m_rules_are_invalid() {
    for body in [
        r#"[{"n":"/3/0/9"}]"#,                     // no value
        r#"[{"n":"/3/0/9","v":1,"vs":"x"}]"#,      // two values
        r#"[{"n":"/3/0/9","v":1,"n":"/3/0/10"}]"#, // a label twice
        r#"[{"n":"/3/0/9","v":1,"s":2}]"#,         // a sum
        r#"[{"n":"/3/0/9","v":1,"bv":2}]"#,        // a base value
        r#"[{"n":"/3/0/9","v":1,"x_":2}]"#,        // must-understand
        r#"[{"n":"/3/0/9","v":"1"}]"#,             // v as a string
        r#"[{"n":"/3/0/9","v":1.5}]"#,             // a fraction for an integer
        r#"[{"n":"/3/0/0","v":1}]"#,               // a number for a string
        r#"[{"n":"/9999/0/5","vd":"A*=="}]"#,      // vd not base64
        r#"[{"n":"/9999/0/7","vlo":"3"}]"#,        // vlo not oid:iid
        r#"[{"n":"/9999/0/4","vs":"true"}]"#,      // text for a boolean
        r#"[{"n":"/9999/0/2","v":-1}]"#,           // negative unsigned
    ] {
        assert_eq!(
            reason(dec(Format::SenmlJson, "/", body.as_bytes())),
            "invalid",
            "{body}"
        );
    }
    for body in ["", "[", "{}", "[1]", "[{\"n\":1}]", "[{}] x", "\u{feff}[]"] {
        let r = reason(dec(Format::SenmlJson, "/", body.as_bytes()));
        assert!(r == "malformed" || r == "invalid", "{body:?}: {r}");
    }
    // Units and unknown labels are ignored; a base-only record yields nothing.
    let ok = br#"[{"bn":"/3/0/","bver":10},{"n":"9","v":1,"u":"%","foo":[1,{"a":2}]}]"#;
    assert_eq!(
        dec(Format::SenmlJson, "/", ok).unwrap(),
        vec![e("/3/0/9", Value::Integer(1))]
    );
}

#[test]
fn non_finite_floats_are_refused_wherever_the_encoding_can_carry_them() {
    // CBOR NaN, +inf (half) for a float value.
    assert_eq!(
        reason(dec(Format::Cbor, "/9999/0/3", &hex("f9 7e 00"))),
        "invalid"
    );
    assert_eq!(
        reason(dec(Format::Cbor, "/9999/0/3", &hex("f9 7c 00"))),
        "invalid"
    );
    assert_eq!(
        reason(dec(
            Format::Lwm2mCbor,
            "/",
            &hex("a1 83 19 27 0f 00 03 f9 7c 00")
        )),
        "invalid"
    );
    // SenML CBOR: a NaN value and an infinite time.
    let v = hex("81 a2 00 69 2f 39 39 39 39 2f 30 2f 33 02 f9 7e 00");
    assert_eq!(reason(dec(Format::SenmlCbor, "/", &v)), "invalid");
    let t = hex("81 a3 00 69 2f 39 39 39 39 2f 30 2f 33 02 01 06 f9 7c 00");
    assert_eq!(reason(dec(Format::SenmlCbor, "/", &t)), "invalid");
    // Text and JSON cannot spell them; encoders refuse them.
    assert_eq!(reason(dec(Format::Text, "/9999/0/3", b"NaN")), "invalid");
    let nan = [e("/9999/0/3", Value::Float(f64::NAN))];
    for f in [Format::SenmlJson, Format::Cbor, Format::Tlv, Format::Text] {
        assert_eq!(
            enc(f, "/9999/0/3", &nan).unwrap_err().reason(),
            "invalid",
            "{f:?}"
        );
    }
}

#[test]
fn lwm2m_cbor_structure_errors_are_named() {
    for (bytes, want) in [
        ("a1 03 01", "invalid"),                   // a value at an object
        ("a1 82 03 00 01", "invalid"),             // a value at an instance
        ("a1 80 01", "invalid"),                   // an empty key array
        ("a1 85 01 02 03 04 05 01", "invalid"),    // five ids
        ("a1 84 03 00 07 00 a1 00 01", "invalid"), // a map below a resource instance
        ("a1 83 03 00 09 f6", "invalid"),          // null
        ("a1 83 03 00 09 c2 41 00", "invalid"),    // a bignum tag
        ("a1 61 78 01", "invalid"),                // a text key
        ("a1 83 03 00 19 ff ff 01", "invalid"),    // id 65535
        ("81 01", "invalid"),                      // not a map
        ("a1 83 03 00 09", "malformed"),           // truncated
        ("a1 83 03 00 09 01 00", "malformed"),     // trailing bytes
        ("bf 83 03 00 09 01", "malformed"),        // unterminated
    ] {
        assert_eq!(
            reason(dec(Format::Lwm2mCbor, "/", &hex(bytes))),
            want,
            "{bytes}"
        );
    }
    // Indefinite maps, arrays and strings are fine: {_ [_ 3, 0, 0]: (_ "ab", "c")}
    let ok = hex("bf 9f 03 00 00 ff 7f 62 61 62 61 63 ff ff");
    assert_eq!(
        dec(Format::Lwm2mCbor, "/", &ok).unwrap(),
        vec![e("/3/0/0", s("abc"))]
    );
}

#[test]
fn oma_json_documents_breaking_the_rules_are_refused() {
    for (body, want) in [
        (r#"{"bn":"/3/0/"}"#, "malformed"),               // no e
        (r#"{"bn":"/3/0/","e":[],"e":[]}"#, "malformed"), // e twice
        (r#"{"bn":"/3/0/","e":[{"n":"9"}]}"#, "invalid"), // no value
        (
            r#"{"bn":"/3/0/","e":[{"n":"9","v":1,"sv":"1"}]}"#,
            "invalid",
        ), // two values
        (
            r#"{"bn":"/3/0/","e":[{"n":"9","n":"10","v":1}]}"#,
            "invalid",
        ), // n twice
        (r#"{"bn":"/3/0/","e":[{"n":"9","bv":1}]}"#, "invalid"), // bv a number
        (r#"{"bn":"/9999/0/","e":[{"n":"5","sv":"%%"}]}"#, "invalid"), // opaque not base64
        (r#"{"bn":"/9999/0/","e":[{"n":"7","ov":"a:b"}]}"#, "invalid"), // bad object link
        (r#"[]"#, "malformed"),
    ] {
        assert_eq!(
            reason(dec(Format::OmaJson, "/", body.as_bytes())),
            want,
            "{body}"
        );
    }
}

#[test]
fn text_and_cbor_single_values_that_do_not_fit_are_invalid() {
    for (path, text) in [
        ("/9999/0/4", "true"),
        ("/9999/0/1", "1.5"),
        ("/9999/0/7", "3"),
        ("/9999/0/5", "not base64!"),
        ("/3/0/4", ""),
    ] {
        assert_eq!(
            reason(dec(Format::Text, path, text.as_bytes())),
            "invalid",
            "{path} {text}"
        );
    }
    assert_eq!(reason(dec(Format::Text, "/3/0/0", &[0xff])), "malformed");
    for (path, bytes, want) in [
        ("/9999/0/4", "01", "invalid"),       // an integer for a boolean
        ("/9999/0/0", "42 00 01", "invalid"), // bytes for a string
        ("/9999/0/1", "3b ff ff ff ff ff ff ff ff", "invalid"), // below -2^63
        ("/9999/0/1", "01 02", "malformed"),  // two values
        ("/9999/0/1", "", "malformed"),
        ("/9999/0/1", "81 01", "invalid"),    // an array
        ("/9999/0/6", "c1 61 78", "invalid"), // a time tag on text
    ] {
        assert_eq!(
            reason(dec(Format::Cbor, path, &hex(bytes))),
            want,
            "{path} {bytes}"
        );
    }
}
