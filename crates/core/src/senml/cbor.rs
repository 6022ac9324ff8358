//! SenML CBOR (Content-Format 112, RFC 8428 §6) decoding and encoding, and plain CBOR maps
//! (Content-Format 60).

use std::borrow::Cow;

use ciborium_ll::Header;

use super::base64url::base64url_decode;
use super::cbor_reader::{CborReader, header_kind};
use super::record::{Key, Label, RawRecord, Value, must_understand, text_key};
use super::resolve::Resolver;
use crate::decode::{ContentFormat, DecodeContext, DecodeError};
use crate::reading::Record;

/// Decodes a SenML CBOR pack (Content-Format 112) into resolved records.
pub fn decode_cbor(body: &[u8], ctx: &DecodeContext<'_>) -> Result<Vec<Record>, DecodeError> {
    if body.is_empty() {
        return Err(DecodeError::Empty);
    }
    let mut reader = CborReader::new(body, ContentFormat::SenmlCbor);
    let len = match reader.header_skipping_tags()? {
        Header::Array(len) => len,
        Header::Break => return Err(reader.malformed("unexpected break")),
        other => {
            return Err(DecodeError::Invalid(format!(
                "a SenML CBOR pack must be an array of records, found {}",
                header_kind(&other)
            )));
        }
    };
    // A record that yields a reading takes at least three bytes (`{5: 0}`), so a header
    // claiming more than the body can hold does not reserve for them.
    let mut resolver = Resolver::new(ctx, len.unwrap_or(0).min(body.len() / 3));
    if len.is_some_and(|n| n > ctx.limits.max_records) {
        return Err(resolver.too_many());
    }
    let mut index = 0;
    while len != Some(index) {
        let header = reader.header()?;
        if len.is_none() && matches!(header, Header::Break) {
            break;
        }
        if resolver.limit_reached(index) {
            return Err(resolver.too_many());
        }
        let raw = cbor_record(&mut reader, header, index)?;
        resolver.push(raw, index)?;
        index += 1;
    }
    reader.finish()?;
    resolver.finish()
}

/// One record map of a SenML CBOR pack.
fn cbor_record<'a>(
    reader: &mut CborReader<'a>,
    header: Header,
    index: usize,
) -> Result<RawRecord<'a>, DecodeError> {
    let len = match header {
        Header::Map(len) => len,
        other => {
            return Err(DecodeError::Invalid(format!(
                "record {index}: must be a map, found {}",
                header_kind(&other)
            )));
        }
    };
    let mut raw = RawRecord::default();
    let mut entries = 0;
    while len != Some(entries) {
        let key_header = reader.header()?;
        let key = match key_header {
            Header::Break if len.is_none() => break,
            Header::Positive(x) => cbor_label(i64::try_from(x).ok()),
            Header::Negative(x) => cbor_label(i64::try_from(x).ok().map(|x| -1 - x)),
            Header::Text(text_len) => text_key(&reader.text(text_len)?, false),
            Header::Break => return Err(reader.malformed("unexpected break")),
            other => {
                return Err(DecodeError::Invalid(format!(
                    "record {index}: a label must be an integer or a text string, found {}",
                    header_kind(&other)
                )));
            }
        };
        let value_header = reader.header()?;
        match key {
            Key::Known(label) => {
                let value = reader.value(value_header)?;
                raw.set(label, value, index)?;
            }
            Key::Ignored => reader.skip(value_header)?,
            Key::MustUnderstand => return Err(must_understand(index)),
        }
        entries += 1;
    }
    Ok(raw)
}

fn cbor_label(key: Option<i64>) -> Key {
    key.and_then(Label::from_cbor)
        .map_or(Key::Ignored, Key::Known)
}

/// Walks a CBOR map with text keys (Content-Format 60), handing each member to `member` with its
/// position. Anything but such a map is [`DecodeError::Invalid`].
pub(crate) fn decode_cbor_map<'a, F>(body: &'a [u8], mut member: F) -> Result<(), DecodeError>
where
    F: FnMut(Cow<'a, str>, Value<'a>, usize) -> Result<(), DecodeError>,
{
    let mut reader = CborReader::new(body, ContentFormat::Cbor);
    let len = match reader.header_skipping_tags()? {
        Header::Map(len) => len,
        Header::Break => return Err(reader.malformed("unexpected break")),
        other => {
            return Err(DecodeError::Invalid(format!(
                "a CBOR payload must be a map of named values, found {}",
                header_kind(&other)
            )));
        }
    };
    let mut index = 0;
    while len != Some(index) {
        let name = match reader.header()? {
            Header::Break if len.is_none() => break,
            Header::Text(text_len) => reader.text(text_len)?,
            Header::Break => return Err(reader.malformed("unexpected break")),
            other => {
                return Err(DecodeError::Invalid(format!(
                    "member {index}: keys must be text strings, found {}",
                    header_kind(&other)
                )));
            }
        };
        let value_header = reader.header()?;
        let value = reader.value(value_header)?;
        member(name, value, index)?;
        index += 1;
    }
    reader.finish()
}

/// Encodes resolved records as a SenML CBOR pack (integer labels, RFC 8428 §6).
///
/// `vd` is carried as a byte string, decoded from the record's base64url. A `vd` that is not
/// base64url cannot be turned into bytes; it is written as a text string, which decoders reject,
/// rather than silently dropped.
pub fn encode_cbor(records: &[Record]) -> Vec<u8> {
    let mut out = Vec::with_capacity(records.len().saturating_mul(32).saturating_add(1));
    cbor_head(&mut out, MAJOR_ARRAY, len_u64(records.len()));
    for r in records {
        let optional = [
            r.u.is_some(),
            r.v.is_some(),
            r.vs.is_some(),
            r.vb.is_some(),
            r.vd.is_some(),
            r.s.is_some(),
            r.ut.is_some(),
        ];
        let fields = 2 + optional.iter().filter(|present| **present).count();
        cbor_head(&mut out, MAJOR_MAP, len_u64(fields));
        cbor_int(&mut out, 0);
        cbor_text(&mut out, &r.n);
        if let Some(u) = &r.u {
            cbor_int(&mut out, 1);
            cbor_text(&mut out, u);
        }
        if let Some(v) = r.v {
            cbor_int(&mut out, 2);
            cbor_number(&mut out, v);
        }
        if let Some(vs) = &r.vs {
            cbor_int(&mut out, 3);
            cbor_text(&mut out, vs);
        }
        if let Some(vb) = r.vb {
            cbor_int(&mut out, 4);
            out.push(if vb { CBOR_TRUE } else { CBOR_FALSE });
        }
        if let Some(s) = r.s {
            cbor_int(&mut out, 5);
            cbor_number(&mut out, s);
        }
        cbor_int(&mut out, 6);
        cbor_number(&mut out, r.t);
        if let Some(ut) = r.ut {
            cbor_int(&mut out, 7);
            cbor_number(&mut out, ut);
        }
        if let Some(vd) = &r.vd {
            cbor_int(&mut out, 8);
            match base64url_decode(vd) {
                Some(bytes) => {
                    cbor_head(&mut out, MAJOR_BYTES, len_u64(bytes.len()));
                    out.extend_from_slice(&bytes);
                }
                None => cbor_text(&mut out, vd),
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// CBOR encoding (RFC 8949 §3): preferred serialization of heads, integers where exact
// ---------------------------------------------------------------------------------------------

const MAJOR_UINT: u8 = 0;
const MAJOR_NEGATIVE: u8 = 1;
const MAJOR_BYTES: u8 = 2;
const MAJOR_TEXT: u8 = 3;
const MAJOR_ARRAY: u8 = 4;
const MAJOR_MAP: u8 = 5;
const CBOR_FALSE: u8 = 0xf4;
const CBOR_TRUE: u8 = 0xf5;
const CBOR_F32: u8 = 0xfa;
const CBOR_F64: u8 = 0xfb;

/// Largest integer every f64 below it represents exactly.
const F64_EXACT_INT: f64 = 9_007_199_254_740_992.0;

fn len_u64(len: usize) -> u64 {
    u64::try_from(len).unwrap_or(u64::MAX)
}

fn cbor_head(out: &mut Vec<u8>, major: u8, arg: u64) {
    let m = major << 5;
    if let Ok(small) = u8::try_from(arg) {
        if small < 24 {
            out.push(m | small);
        } else {
            out.extend_from_slice(&[m | 24, small]);
        }
    } else if let Ok(x) = u16::try_from(arg) {
        out.push(m | 25);
        out.extend_from_slice(&x.to_be_bytes());
    } else if let Ok(x) = u32::try_from(arg) {
        out.push(m | 26);
        out.extend_from_slice(&x.to_be_bytes());
    } else {
        out.push(m | 27);
        out.extend_from_slice(&arg.to_be_bytes());
    }
}

fn cbor_int(out: &mut Vec<u8>, x: i64) {
    match u64::try_from(x) {
        Ok(x) => cbor_head(out, MAJOR_UINT, x),
        Err(_) => cbor_head(out, MAJOR_NEGATIVE, (-1 - x).unsigned_abs()),
    }
}

fn cbor_text(out: &mut Vec<u8>, s: &str) {
    cbor_head(out, MAJOR_TEXT, len_u64(s.len()));
    out.extend_from_slice(s.as_bytes());
}

/// Integral values as integers (smaller, and exact), others as the narrowest float that holds
/// them exactly.
fn cbor_number(out: &mut Vec<u8>, x: f64) {
    let integral = x.fract() == 0.0 && x.abs() <= F64_EXACT_INT;
    if integral && x >= 0.0 && !x.is_sign_negative() {
        cbor_head(out, MAJOR_UINT, x as u64);
    } else if integral && x < 0.0 {
        cbor_head(out, MAJOR_NEGATIVE, (-1.0 - x) as u64);
    } else if f64::from(x as f32).to_bits() == x.to_bits() {
        out.push(CBOR_F32);
        out.extend_from_slice(&(x as f32).to_be_bytes());
    } else {
        out.push(CBOR_F64);
        out.extend_from_slice(&x.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::senml::test_support::{
        RFC_5_1_2_TIMED, RFC_CBOR_EXAMPLE, cbor, ctx, hex, json, rec, rfc_5_1_2_timed_resolved,
    };

    #[test]
    fn rfc8428_cbor_example_decodes_like_its_json_twin() {
        let bytes = hex(RFC_CBOR_EXAMPLE);
        assert_eq!(bytes.len(), 0xc3);
        let from_cbor = decode_cbor(&bytes, &ctx()).expect("RFC 8428 §6 example decodes");
        assert_eq!(from_cbor, json(RFC_5_1_2_TIMED).expect("JSON twin decodes"));
        assert_eq!(from_cbor, rfc_5_1_2_timed_resolved());
    }

    #[test]
    fn cbor_text_labels_are_extensions() {
        // [{0: "a", 2: 1, "n": "ignored", "x": [1, 2]}]
        let ok = hex("81 a4 00 61 61 02 01 61 6e 67 69 67 6e 6f 72 65 64 61 78 82 01 02");
        let records = cbor(&ok).expect("text labels are ignored");
        assert_eq!(records[0].n, "a");
        // [{0: "a", 2: 1, "x_": 0}]
        let must = hex("81 a3 00 61 61 02 01 62 78 5f 00");
        assert!(
            cbor(&must)
                .expect_err("must-understand")
                .to_string()
                .contains("must-understand")
        );
        // [{0: "a", 2: 1, 99: 0}]: unknown integer labels are ignored too.
        assert!(cbor(&hex("81 a3 00 61 61 02 01 18 63 00")).is_ok());
    }

    #[test]
    fn cbor_rejects_non_finite_and_wrongly_typed_values() {
        // [{0: "a", 2: NaN}] (half-precision NaN)
        let err = cbor(&hex("81 a2 00 61 61 02 f9 7e 00")).expect_err("NaN");
        assert!(err.to_string().contains("finite"), "{err}");
        // [{0: "a", 2: "1"}]
        assert_eq!(
            cbor(&hex("81 a2 00 61 61 02 61 31"))
                .expect_err("text v")
                .reason(),
            "invalid"
        );
        // [{0: "a", 2: 1(1)}]: tags other than 4 are not numbers.
        assert_eq!(
            cbor(&hex("81 a2 00 61 61 02 c1 01"))
                .expect_err("tagged")
                .reason(),
            "invalid"
        );
        // [{-1: -1, 0: "a", 2: 1}]: bver must be unsigned.
        assert!(cbor(&hex("81 a3 20 20 00 61 61 02 01")).is_err());
        // [1]
        assert_eq!(
            cbor(&hex("81 01")).expect_err("not a map").reason(),
            "invalid"
        );
        // {0: "a"}
        assert_eq!(
            cbor(&hex("a1 00 61 61"))
                .expect_err("not an array")
                .reason(),
            "invalid"
        );
    }

    #[test]
    fn cbor_record_count_is_checked_before_reading_records() {
        let mut c = ctx();
        c.limits.max_records = 1;
        // An array that claims 65536 records: rejected from its header alone.
        let err = decode_cbor(&hex("9a 00 01 00 00"), &c).expect_err("too many");
        assert_eq!(err, DecodeError::TooManyRecords(1));
        // Indefinite: rejected at the second record.
        let err = decode_cbor(&hex("9f a2 00 61 61 02 01 a2 00 61 62 02 01 ff"), &c)
            .expect_err("too many");
        assert_eq!(err, DecodeError::TooManyRecords(1));
    }

    #[test]
    fn cbor_encoding_is_valid_cbor_with_integer_labels() {
        let records = vec![rec("a", Some("Cel"), 21.5, 1.5e9)];
        let bytes = encode_cbor(&records);
        let value: ciborium::Value =
            ciborium::from_reader(bytes.as_slice()).expect("ciborium reads our CBOR");
        let expected = ciborium::Value::Array(vec![ciborium::Value::Map(vec![
            (0.into(), "a".into()),
            (1.into(), "Cel".into()),
            (2.into(), 21.5.into()),
            (6.into(), 1_500_000_000.into()),
        ])]);
        assert_eq!(value, expected);
        // Preferred serialization: 21.5 fits a float32, 1.5e9 is an integer.
        assert_eq!(
            bytes,
            hex("81 a4 00 61 61 01 63 43 65 6c 02 fa 41 ac 00 00 06 1a 59 68 2f 00")
        );
    }
}
