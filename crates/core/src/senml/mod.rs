//! SenML (RFC 8428): JSON and CBOR codecs and record resolution (§4.6).
//!
//! The decoders stream records out of the input bytes and resolve each one as soon as it has been
//! read, so no document tree is built: memory is the output plus one record in flight, strings
//! are borrowed from the input where the encoding allows it, and the record count is checked
//! before the next record is resolved. Nesting is bounded: serde_json's recursion limit for JSON,
//! and for CBOR an iterative walk with an explicit depth limit (no recursion at all).
//!
//! Where RFC 8428 leaves room, these decoders choose:
//! - a record holding only base fields (RFC 8428 §5.1.7 shows one) sets the base values for the
//!   records after it and yields no record itself; any other record needs exactly one of
//!   `v`/`vs`/`vb`/`vd`, or a sum;
//! - `bv` is added to `v` only: it never turns a `vs`/`vb`/`vd` record into a numeric one, while
//!   `bs` gives every following record a sum (§4.5.4: a missing sum or base sum counts as zero);
//! - `bver` above 10 is rejected (§4.4), and so are two records naming different versions;
//! - unknown labels are ignored unless they end in `_` (must-understand, §4.4), which rejects the
//!   pack; in SenML CBOR every text label is an extension (§6), and unknown integer labels are
//!   ignored;
//! - `vd` in SenML JSON must be canonical base64url (trailing `=` padding is tolerated and
//!   dropped; non-zero spare bits are not); in SenML CBOR it is a byte string and is carried as
//!   base64url without padding;
//! - SenML CBOR numbers may be integers, floats or decimal fractions (tag 4); other tags are
//!   rejected where a value is expected and skipped inside ignored labels.
//!
//! One concern per file: `record.rs` holds a record as sent, type-checked label by label;
//! `resolve.rs` applies base values and checks names, times and units (§4.6); `json.rs` and
//! `cbor.rs` read and write the two encodings, the latter on `cbor_reader.rs`'s pull reader;
//! `base64url.rs` is the alphabet of data values. The plain JSON object and CBOR map walkers live
//! beside the SenML readers they share; [`crate::payload`] calls them, and nothing here depends
//! on it.

mod base64url;
mod cbor;
mod cbor_reader;
mod json;
mod record;
mod resolve;
#[cfg(test)]
mod test_support;

pub use cbor::{decode_cbor, encode_cbor};
pub use json::{decode_json, encode_json};

pub(crate) use base64url::base64url_encode;
pub(crate) use cbor::decode_cbor_map;
pub(crate) use json::{decode_json_object, is_blank};
pub(crate) use record::Value;
pub(crate) use resolve::{check_name, is_senml_name, resolve_time};

#[cfg(test)]
mod tests {
    use super::resolve::RELATIVE_TIME_LIMIT;
    use super::test_support::ctx;
    use super::*;
    use crate::reading::Record;

    #[test]
    fn encoders_round_trip_every_value_kind() {
        let records = vec![
            Record {
                n: "urn:dev:x:spo2".into(),
                u: Some("%".into()),
                v: Some(97.0),
                t: 1_763_759_045.1,
                ut: Some(30.0),
                ..Record::default()
            },
            Record {
                n: "neg".into(),
                v: Some(-1e-300),
                s: Some(-5.0),
                t: 1_763_759_045.0,
                ..Record::default()
            },
            Record {
                n: "label".into(),
                vs: Some("Bed 12 \u{2014} ok".into()),
                t: RELATIVE_TIME_LIMIT,
                ..Record::default()
            },
            Record {
                n: "alarm".into(),
                vb: Some(true),
                t: 4e9,
                ..Record::default()
            },
            Record {
                n: "blob".into(),
                vd: Some(base64url_encode(&[0, 1, 2, 250, 251, 252, 253])),
                t: 1.5e9,
                ..Record::default()
            },
            Record {
                n: "energy".into(),
                s: Some(123_456.789),
                t: 1.5e9,
                ..Record::default()
            },
        ];
        assert_eq!(
            decode_json(&encode_json(&records), &ctx()),
            Ok(records.clone())
        );
        assert_eq!(
            decode_cbor(&encode_cbor(&records), &ctx()),
            Ok(records.clone())
        );
    }
}
