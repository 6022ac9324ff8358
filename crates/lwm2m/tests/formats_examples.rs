//! Every format against the OMA specification's examples (and hand-checked bytes where the
//! specification prints none): decode to exact entries, encode to exact bytes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod formats_support;

use formats_support::*;
use wardgate_lwm2m::format::{self, Format, FormatError};
use wardgate_lwm2m::node::NoTypes;
use wardgate_lwm2m::{Entry, Path, Value};

#[test]
fn tlv_device_instance_example_decodes_to_its_resources_and_encodes_back_byte_for_byte() {
    let bytes = hex(DEVICE_TLV);
    assert_eq!(dec(Format::Tlv, "/3/0", &bytes).unwrap(), device());
    assert_eq!(enc(Format::Tlv, "/3/0", &device()).unwrap(), bytes);
}

#[test]
fn tlv_device_instance_wrapped_in_an_object_instance_tlv_also_decodes() {
    let inner = hex(DEVICE_TLV);
    assert_eq!(inner.len(), 121);
    let mut wrapped = hex("08 00 79");
    wrapped.extend_from_slice(&inner);
    assert_eq!(dec(Format::Tlv, "/3/0", &wrapped).unwrap(), device());
    // Read on the object: the wrapper is how instances are told apart.
    assert_eq!(dec(Format::Tlv, "/3", &wrapped).unwrap(), device());
    assert_eq!(enc(Format::Tlv, "/3", &device()).unwrap(), wrapped);
    // A wrapper for another instance is not the requested one.
    let mut other = hex("08 01 79");
    other.extend_from_slice(&inner);
    assert!(matches!(
        dec(Format::Tlv, "/3/0", &other),
        Err(FormatError::Invalid(_))
    ));
}

#[test]
fn tlv_access_control_multiple_instance_example_round_trips() {
    let bytes = hex("08 00 0E C1 00 01 C1 01 00 83 02 41 7F 07 C1 03 7F
         08 02 12 C1 00 03 C1 01 00 87 02 41 7F 07 61 01 36 01 C1 03 7F");
    use Value::Integer;
    let want = vec![
        e("/2/0/0", Integer(1)),
        e("/2/0/1", Integer(0)),
        e("/2/0/2/127", Integer(7)),
        e("/2/0/3", Integer(127)),
        e("/2/2/0", Integer(3)),
        e("/2/2/1", Integer(0)),
        e("/2/2/2/127", Integer(7)),
        e("/2/2/2/310", Integer(1)),
        e("/2/2/3", Integer(127)),
    ];
    assert_eq!(dec(Format::Tlv, "/2", &bytes).unwrap(), want);
    assert_eq!(enc(Format::Tlv, "/2", &want).unwrap(), bytes);
}

#[test]
fn tlv_multiple_resource_reads_as_a_multiple_tlv_or_bare_instances() {
    let want = vec![
        e("/3/0/6/0", Value::Integer(1)),
        e("/3/0/6/1", Value::Integer(5)),
    ];
    let multiple = hex("86 06 41 00 01 41 01 05");
    assert_eq!(dec(Format::Tlv, "/3/0/6", &multiple).unwrap(), want);
    assert_eq!(
        dec(Format::Tlv, "/3/0/6", &hex("41 00 01 41 01 05")).unwrap(),
        want
    );
    assert_eq!(enc(Format::Tlv, "/3/0/6", &want).unwrap(), multiple);
    // One resource instance.
    let one = hex("41 01 05");
    assert_eq!(dec(Format::Tlv, "/3/0/6/1", &one).unwrap(), want[1..]);
    assert_eq!(enc(Format::Tlv, "/3/0/6/1", &want[1..]).unwrap(), one);
    // A single resource.
    let battery = vec![e("/3/0/9", Value::Integer(100))];
    assert_eq!(
        dec(Format::Tlv, "/3/0/9", &hex("C1 09 64")).unwrap(),
        battery
    );
    assert_eq!(
        enc(Format::Tlv, "/3/0/9", &battery).unwrap(),
        hex("C1 09 64")
    );
}

#[test]
fn tlv_length_fields_of_every_size_and_sixteen_bit_ids_decode() {
    let base = "/9999/0";
    // Opaque rid 5: length in the type byte, in 8, 16 and 24 bits; rid 300 (unknown, opaque)
    // with a 16-bit id.
    for (head, len) in [
        ("C5 05", 5usize),
        ("C8 05 08", 8),
        ("D0 05 01 00", 256),
        ("D8 05 01 00 00", 65536),
        ("E5 01 2C", 5),
        ("F0 01 2C 01 00", 256),
    ] {
        let mut b = hex(head);
        b.extend(std::iter::repeat_n(0xAB, len));
        let got = dec(Format::Tlv, base, &b).unwrap();
        assert_eq!(got.len(), 1, "{head}");
        assert_eq!(got[0].value, Value::Opaque(vec![0xAB; len]), "{head}");
        assert_eq!(enc(Format::Tlv, base, &got).unwrap(), b, "{head}");
    }
}

#[test]
fn tlv_values_of_every_type_decode_by_the_model() {
    use Value::*;
    let cases: Vec<(&str, Value)> = vec![
        ("C3 00 61 62 63", String("abc".into())),
        ("C1 01 FF", Integer(-1)),
        ("C2 01 80 00", Integer(-32768)),
        ("C4 01 FF FF FF FE", Integer(-2)),
        ("C8 01 08 80 00 00 00 00 00 00 00", Integer(i64::MIN)),
        ("C8 02 08 FF FF FF FF FF FF FF FF", Unsigned(u64::MAX)),
        ("C1 02 FF", Unsigned(255)),
        ("C4 03 41 AC 00 00", Float(21.5)),
        ("C8 03 08 3F B9 99 99 99 99 99 9A", Float(0.1)),
        ("C1 04 01", Boolean(true)),
        ("C1 04 00", Boolean(false)),
        ("C2 05 00 FF", Opaque(vec![0, 255])),
        ("C4 06 51 82 42 8F", Time(1_367_491_215)),
        ("C4 07 00 03 00 01", Objlnk(3, 1)),
        ("C4 08 3C 2F 3E 3B", Corelnk("</>;".into())),
    ];
    for (bytes, v) in cases {
        let rid = hex(bytes)[1];
        let path = format!("/9999/0/{rid}");
        let got = dec(Format::Tlv, &path, &hex(bytes)).unwrap();
        assert_eq!(got, vec![e(&path, v.clone())], "{bytes}");
        let again = enc(Format::Tlv, &path, &got).unwrap();
        assert_eq!(dec(Format::Tlv, &path, &again).unwrap(), got, "{bytes}");
        // Every case but the wide -2 is already in the smallest width.
        if bytes != "C4 01 FF FF FF FE" {
            assert_eq!(again, hex(bytes), "{bytes}");
        }
    }
    // Unknown types stay opaque.
    let got = format::decode(Format::Tlv, &p("/3/0/9"), &hex("C1 09 64"), &NoTypes, now());
    assert_eq!(got.unwrap(), vec![e("/3/0/9", Value::Opaque(vec![100]))]);
}

fn device_json() -> String {
    r#"{"bn":"/3/0/","e":[{"n":"0","sv":"Open Mobile Alliance"},{"n":"1","sv":"Lightweight M2M Client"},{"n":"2","sv":"345000123"},{"n":"3","sv":"1.0"},{"n":"6/0","v":1},{"n":"6/1","v":5},{"n":"7/0","v":3800},{"n":"7/1","v":5000},{"n":"8/0","v":125},{"n":"8/1","v":900},{"n":"9","v":100},{"n":"10","v":15},{"n":"11/0","v":0},{"n":"13","v":1367491215},{"n":"14","sv":"+02:00"},{"n":"16","sv":"U"}]}"#.to_string()
}

#[test]
fn oma_json_device_example_decodes_and_encodes_exactly() {
    let pretty = device_json().replace(",{", ",\n  {").replace("[", "[\n  ");
    assert_eq!(
        dec(Format::OmaJson, "/3/0", pretty.as_bytes()).unwrap(),
        device()
    );
    assert_eq!(
        String::from_utf8(enc(Format::OmaJson, "/3/0", &device()).unwrap()).unwrap(),
        device_json()
    );
}

#[test]
fn oma_json_booleans_object_links_opaque_and_times() {
    let body = br#"{"bn":"/9999/0/","bt":1767225000,"e":[
        {"n":"4","bv":true},{"n":"7","ov":"3:0"},{"n":"5","sv":"AAEC"},
        {"n":"3","v":21.5,"t":-5},{"n":"0","sv":"x"}]}"#;
    let got = dec(Format::OmaJson, "/9999/0", body).unwrap();
    let t = 1_767_225_000.0 - 5.0;
    assert_eq!(
        got,
        vec![
            et("/9999/0/4", Value::Boolean(true), 1_767_225_000.0),
            et("/9999/0/7", Value::Objlnk(3, 0), 1_767_225_000.0),
            et("/9999/0/5", Value::Opaque(vec![0, 1, 2]), 1_767_225_000.0),
            et("/9999/0/3", Value::Float(21.5), t),
            et("/9999/0/0", s("x"), 1_767_225_000.0),
        ]
    );
    // A time without bt, below 2^28, is relative to now.
    let rel = dec(
        Format::OmaJson,
        "/3303/0",
        br#"{"e":[{"n":"5700","v":1,"t":-10}]}"#,
    );
    assert_eq!(
        rel.unwrap(),
        vec![et("/3303/0/5700", Value::Float(1.0), 1_767_225_590.0)]
    );
    // A single resource: bn is the resource, no n.
    let one = vec![e("/3/0/0", s("Open Mobile Alliance"))];
    let body = enc(Format::OmaJson, "/3/0/0", &one).unwrap();
    assert_eq!(
        body,
        br#"{"bn":"/3/0/0","e":[{"sv":"Open Mobile Alliance"}]}"#
    );
    assert_eq!(dec(Format::OmaJson, "/3/0/0", &body).unwrap(), one);
}

#[test]
fn senml_json_read_of_an_instance_decodes_and_encodes_exactly() {
    let body = r#"[{"bn":"/3303/0/","n":"5700","v":21.5},{"n":"5701","vs":"Cel"}]"#;
    let want = vec![
        e("/3303/0/5700", Value::Float(21.5)),
        e("/3303/0/5701", s("Cel")),
    ];
    assert_eq!(
        dec(Format::SenmlJson, "/3303/0", body.as_bytes()).unwrap(),
        want
    );
    assert_eq!(
        enc(Format::SenmlJson, "/3303/0", &want).unwrap(),
        body.as_bytes()
    );
}

#[test]
fn senml_json_send_keeps_each_timestamped_value_of_one_path() {
    let body = br#"[{"bn":"/3303/0/5700","bt":1767225000,"v":21.5},{"t":10,"v":22},
        {"n":"/3/0/9","bn":"","v":90,"t":20},{"n":"/9999/0/7","vlo":"3:0"},
        {"n":"/9999/0/5","vd":"AAEC"},{"n":"/9999/0/4","vb":false},{"n":"/9999/0/2","v":7}]"#;
    let got = dec(Format::SenmlJson, "/", body).unwrap();
    assert_eq!(
        got,
        vec![
            et("/3303/0/5700", Value::Float(21.5), 1_767_225_000.0),
            et("/3303/0/5700", Value::Float(22.0), 1_767_225_010.0),
            et("/3/0/9", Value::Integer(90), 1_767_225_020.0),
            et("/9999/0/7", Value::Objlnk(3, 0), 1_767_225_000.0),
            et("/9999/0/5", Value::Opaque(vec![0, 1, 2]), 1_767_225_000.0),
            et("/9999/0/4", Value::Boolean(false), 1_767_225_000.0),
            et("/9999/0/2", Value::Unsigned(7), 1_767_225_000.0),
        ]
    );
    // At the root, names are full paths and there is no bn.
    let two = &got[..2];
    let out = enc(Format::SenmlJson, "/", two).unwrap();
    assert_eq!(
        out,
        br#"[{"n":"/3303/0/5700","v":21.5,"t":1767225000.0},{"n":"/3303/0/5700","v":22.0,"t":1767225010.0}]"#
    );
    assert_eq!(dec(Format::SenmlJson, "/", &out).unwrap(), two);
}

#[test]
fn senml_cbor_uses_integer_labels_and_a_text_vlo() {
    // [{-2: "/3303/0/5700", 2: 21.5}]
    let one = hex("81 a2 21 6c 2f 33 33 30 33 2f 30 2f 35 37 30 30 02 f9 4d 60");
    let want = vec![e("/3303/0/5700", Value::Float(21.5))];
    assert_eq!(dec(Format::SenmlCbor, "/3303/0/5700", &one).unwrap(), want);
    assert_eq!(enc(Format::SenmlCbor, "/3303/0/5700", &want).unwrap(), one);
    // [{-2: "/9999/0/", 0: "7", "vlo": "3:0"}, {0: "5", 8: h'0001'}, {0: "6", 2: 5, 6: 1767225000}]
    let body = hex(
        "83 a3 21 68 2f 39 39 39 39 2f 30 2f 00 61 37 63 76 6c 6f 63 33 3a 30
            a2 00 61 35 08 42 00 01
            a3 00 61 36 02 05 06 1a 69 55 b6 a8",
    );
    let want = vec![
        e("/9999/0/7", Value::Objlnk(3, 0)),
        e("/9999/0/5", Value::Opaque(vec![0, 1])),
        et("/9999/0/6", Value::Time(5), 1_767_225_000.0),
    ];
    assert_eq!(dec(Format::SenmlCbor, "/9999/0", &body).unwrap(), want);
    let again = enc(Format::SenmlCbor, "/9999/0", &want).unwrap();
    assert_eq!(dec(Format::SenmlCbor, "/9999/0", &again).unwrap(), want);
}

#[test]
fn composite_request_bodies_are_senml_names_without_values() {
    let paths = vec![p("/3/0/0"), p("/3303/0"), p("/1")];
    let json = format::encode_paths(Format::SenmlJson, &paths).unwrap();
    assert_eq!(json, br#"[{"n":"/3/0/0"},{"n":"/3303/0"},{"n":"/1"}]"#);
    assert_eq!(
        format::decode_paths(Format::SenmlJson, &json).unwrap(),
        paths
    );
    let cbor = format::encode_paths(Format::SenmlCbor, &paths).unwrap();
    assert_eq!(&cbor[..4], &hex("83 a1 00 66"));
    assert_eq!(
        format::decode_paths(Format::SenmlCbor, &cbor).unwrap(),
        paths
    );
    // bn applies to the names after it.
    let with_bn = br#"[{"bn":"/3/0/","n":"1"},{"n":"2"}]"#;
    assert_eq!(
        format::decode_paths(Format::SenmlJson, with_bn).unwrap(),
        vec![p("/3/0/1"), p("/3/0/2")]
    );
    assert!(matches!(
        format::decode_paths(Format::SenmlJson, br#"[{"n":"/3/0/1","v":1}]"#),
        Err(FormatError::Invalid(_))
    ));
    assert_eq!(
        format::encode_paths(Format::Tlv, &paths),
        Err(FormatError::Unsupported(Format::Tlv))
    );
}

#[test]
fn lwm2m_cbor_example_collapses_single_children_into_path_arrays() {
    // {[3303, 0]: {5700: 21.5, 5701: "Cel"}}
    let bytes = hex("a1 82 19 0c e7 00 a2 19 16 44 f9 4d 60 19 16 45 63 43 65 6c");
    let want = vec![
        e("/3303/0/5700", Value::Float(21.5)),
        e("/3303/0/5701", s("Cel")),
    ];
    assert_eq!(dec(Format::Lwm2mCbor, "/3303/0", &bytes).unwrap(), want);
    assert_eq!(enc(Format::Lwm2mCbor, "/3303/0", &want).unwrap(), bytes);
    // The same as fully nested maps, and as one array per value.
    let nested = hex("a1 19 0c e7 a1 00 a2 19 16 44 f9 4d 60 19 16 45 63 43 65 6c");
    assert_eq!(dec(Format::Lwm2mCbor, "/3303", &nested).unwrap(), want);
    let flat = hex("a2 83 19 0c e7 00 19 16 44 f9 4d 60 83 19 0c e7 00 19 16 45 63 43 65 6c");
    assert_eq!(dec(Format::Lwm2mCbor, "/", &flat).unwrap(), want);
}

#[test]
fn lwm2m_cbor_carries_every_value_type() {
    use Value::*;
    let want = vec![
        e("/9999/0/0", s("x")),
        e("/9999/0/1", Integer(-3)),
        e("/9999/0/2", Unsigned(u64::MAX)),
        e("/9999/0/3", Float(0.1)),
        e("/9999/0/4", Boolean(true)),
        e("/9999/0/5", Opaque(vec![1, 2])),
        e("/9999/0/6", Time(1_767_225_600)),
        e("/9999/0/7", Objlnk(3, 0)),
        e("/9999/0/8", Corelnk("</3>".into())),
        e("/9999/0/11/0", Integer(1)),
        e("/9999/0/11/7", Integer(2)),
    ];
    let bytes = enc(Format::Lwm2mCbor, "/9999", &want).unwrap();
    // {[9999, 0]: {0: "x", 1: -3, 2: 2^64-1, 3: 0.1, 4: true, 5: h'0102', 6: 1(1767225600), 7:
    //  "3:0", 8: "</3>", 11: {0: 1, 7: 2}}}
    let expected = hex(
        "a1 82 19 27 0f 00 aa 00 61 78 01 22 02 1b ff ff ff ff ff ff ff ff
         03 fb 3f b9 99 99 99 99 99 9a 04 f5 05 42 01 02 06 c1 1a 69 55 b9 00
         07 63 33 3a 30 08 64 3c 2f 33 3e 0b a2 00 01 07 02",
    );
    assert_eq!(bytes, expected);
    assert_eq!(dec(Format::Lwm2mCbor, "/9999", &bytes).unwrap(), want);
}

#[test]
fn single_value_formats_read_by_the_model() {
    use Value::*;
    let cases: Vec<(&str, &[u8], Value)> = vec![
        (
            "/9999/0/0",
            b"Open Mobile Alliance",
            s("Open Mobile Alliance"),
        ),
        ("/9999/0/1", b"-42", Integer(-42)),
        ("/9999/0/2", b"18446744073709551615", Unsigned(u64::MAX)),
        ("/9999/0/3", b"21.5", Float(21.5)),
        ("/9999/0/4", b"1", Boolean(true)),
        ("/9999/0/5", b"AAEC", Opaque(vec![0, 1, 2])),
        ("/9999/0/6", b"1367491215", Time(1_367_491_215)),
        ("/9999/0/7", b"3:0", Objlnk(3, 0)),
        ("/9999/0/8", b"</3/0>", Corelnk("</3/0>".into())),
        ("/9999/0/11/3", b"7", Integer(7)),
    ];
    for (path, text, v) in cases {
        let want = vec![e(path, v)];
        assert_eq!(dec(Format::Text, path, text).unwrap(), want, "{path}");
        assert_eq!(enc(Format::Text, path, &want).unwrap(), text, "{path}");
        let cbor = enc(Format::Cbor, path, &want).unwrap();
        assert_eq!(dec(Format::Cbor, path, &cbor).unwrap(), want, "{path}");
    }
    // CBOR bytes for a few: 21.5 as a half, a time as tag 1, an object link as text.
    assert_eq!(
        enc(Format::Cbor, "/9999/0/3", &[e("/9999/0/3", Float(21.5))]).unwrap(),
        hex("f9 4d 60")
    );
    assert_eq!(
        enc(Format::Cbor, "/9999/0/6", &[e("/9999/0/6", Time(1))]).unwrap(),
        hex("c1 01")
    );
    assert_eq!(
        dec(Format::Cbor, "/9999/0/6", &hex("01")).unwrap(),
        vec![e("/9999/0/6", Time(1))]
    );
    // Opaque: the bytes themselves, only for opaque resources.
    let blob = vec![e("/9999/0/5", Opaque(vec![0, 0xff]))];
    assert_eq!(dec(Format::Opaque, "/9999/0/5", &[0, 0xff]).unwrap(), blob);
    assert_eq!(
        enc(Format::Opaque, "/9999/0/5", &blob).unwrap(),
        vec![0, 0xff]
    );
    assert!(matches!(
        dec(Format::Opaque, "/9999/0/0", b"x"),
        Err(FormatError::Invalid(_))
    ));
    assert_eq!(
        enc(Format::Opaque, "/9999/0/0", &[e("/9999/0/0", s("x"))]),
        Err(FormatError::Unsupported(Format::Opaque))
    );
}

#[test]
fn single_value_formats_need_a_single_resource_path() {
    for f in [Format::Text, Format::Opaque, Format::Cbor] {
        for base in ["/3/0", "/3", "/", "/3/0/7"] {
            assert!(
                matches!(dec(f, base, b"1"), Err(FormatError::Invalid(_))),
                "{f:?} {base}"
            );
        }
        let two = [
            e("/3/0/9", Value::Integer(1)),
            e("/3/0/10", Value::Integer(1)),
        ];
        assert!(
            matches!(enc(f, "/3/0", &two), Err(FormatError::Invalid(_))),
            "{f:?}"
        );
    }
}

#[test]
fn link_format_is_not_a_value_format() {
    assert_eq!(
        dec(Format::LinkFormat, "/3", b"</3/0>"),
        Err(FormatError::Unsupported(Format::LinkFormat))
    );
    assert_eq!(
        enc(Format::LinkFormat, "/3", &[]),
        Err(FormatError::Unsupported(Format::LinkFormat))
    );
}

#[test]
fn legacy_content_format_numbers_map_to_the_current_formats() {
    assert_eq!(Format::from_coap(1542), Some(Format::Tlv));
    assert_eq!(Format::from_coap(1543), Some(Format::OmaJson));
    for f in [
        Format::Text,
        Format::LinkFormat,
        Format::Opaque,
        Format::Cbor,
        Format::SenmlJson,
        Format::SenmlCbor,
        Format::Tlv,
        Format::OmaJson,
        Format::Lwm2mCbor,
    ] {
        assert_eq!(Format::from_coap(f.coap_number()), Some(f));
    }
    assert_eq!(Format::from_coap(50), None);
}

#[allow(dead_code)]
fn _types_used(_: Entry, _: Path) {}
