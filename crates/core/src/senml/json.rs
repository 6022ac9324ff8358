//! SenML JSON (Content-Format 110) and plain JSON objects (Content-Format 50): serde visitors over
//! serde_json's borrowing readers.
//!
//! Errors that are about the reading rather than the JSON syntax are stored in a `failure` slot
//! and surface as that `DecodeError`; serde only carries a placeholder. Every visitor reads with
//! `deserialize_any` and answers every JSON type itself, so no serde "invalid type" message (which
//! would quote the payload) is ever produced.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::record::{Key, RawRecord, Value, must_understand, text_key};
use super::resolve::Resolver;
use crate::decode::{ContentFormat, DecodeContext, DecodeError};
use crate::reading::Record;

/// Decodes a SenML JSON pack (Content-Format 110) into resolved records.
pub fn decode_json(body: &[u8], ctx: &DecodeContext<'_>) -> Result<Vec<Record>, DecodeError> {
    if is_blank(body) {
        return Err(DecodeError::Empty);
    }
    // Every record is an object, so the count of '{' bounds the records to make room for.
    let mut resolver = Resolver::new(ctx, count_byte(body, b'{'));
    let mut failure = None;
    let parsed = parse_json(
        body,
        JsonPack {
            resolver: &mut resolver,
            failure: &mut failure,
        },
    );
    json_outcome(parsed, failure, ContentFormat::SenmlJson)?;
    resolver.finish()
}

/// How many times `byte` occurs in `body`, eight bytes at a time.
fn count_byte(body: &[u8], byte: u8) -> usize {
    const LOW7: u64 = u64::from_ne_bytes([0x7f; 8]);
    let pattern = u64::from_ne_bytes([byte; 8]);
    let mut chunks = body.chunks_exact(8);
    let mut count = 0;
    for chunk in &mut chunks {
        let Ok(word) = <[u8; 8]>::try_from(chunk) else {
            break;
        };
        // Bytes equal to `byte` become zero; each zero byte then gets exactly its top bit set.
        let x = u64::from_ne_bytes(word) ^ pattern;
        let zero_bytes = !(((x & LOW7) + LOW7) | x | LOW7);
        count += zero_bytes.count_ones() as usize;
    }
    count + chunks.remainder().iter().filter(|b| **b == byte).count()
}

/// Encodes resolved records as a SenML JSON pack (for simulators, tests and LwM2M Send).
///
/// Resolved records are valid SenML without base values. Times at or above 2^28 stay absolute
/// when decoded again; smaller ones would be read as relative to the receiver's "now". Non-finite
/// numbers have no JSON form and come out as `null`, which decoders reject.
pub fn encode_json(records: &[Record]) -> Vec<u8> {
    // Records are plain strings and numbers: serializing them into a Vec cannot fail.
    serde_json::to_vec(records).unwrap_or_default()
}

/// JSON whitespace only (or nothing at all).
pub(crate) fn is_blank(body: &[u8]) -> bool {
    body.iter()
        .all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
}

/// Stores `error` as the reason for the failure and returns the placeholder serde error.
fn fail<E: de::Error>(slot: &mut Option<DecodeError>, error: DecodeError) -> E {
    *slot = Some(error);
    E::custom("rejected")
}

/// Parses the whole of `body` with `seed`. Valid UTF-8 (checked once, up front) is read as a
/// `&str`, so serde_json does not check every string again; anything else is read as bytes,
/// where serde_json reports the bad sequence as before (or skips it inside an ignored value).
fn parse_json<'de, S>(body: &'de [u8], seed: S) -> Result<(), serde_json::Error>
where
    S: DeserializeSeed<'de, Value = ()>,
{
    match std::str::from_utf8(body) {
        Ok(text) => {
            let mut de = serde_json::Deserializer::from_str(text);
            seed.deserialize(&mut de).and_then(|()| de.end())
        }
        Err(_) => {
            let mut de = serde_json::Deserializer::from_slice(body);
            seed.deserialize(&mut de).and_then(|()| de.end())
        }
    }
}

/// Turns the outcome of a serde_json parse into ours.
fn json_outcome(
    parsed: Result<(), serde_json::Error>,
    failure: Option<DecodeError>,
    format: ContentFormat,
) -> Result<(), DecodeError> {
    match parsed {
        Ok(()) => Ok(()),
        Err(e) => Err(failure.unwrap_or_else(|| DecodeError::Malformed {
            format,
            // serde_json's syntax messages name a position, never payload content.
            detail: e.to_string(),
        })),
    }
}

/// Scalar arms for visitors that only accept one container type.
macro_rules! reject_scalars {
    () => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Err(self.reject("a boolean"))
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Err(self.reject("a number"))
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Err(self.reject("a number"))
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Err(self.reject("a number"))
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Err(self.reject("a string"))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Err(self.reject("null"))
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Err(self.reject("null"))
        }
    };
}

/// The top-level array of a SenML JSON pack; resolves each record as soon as it is read.
struct JsonPack<'r, 'a> {
    resolver: &'r mut Resolver<'a>,
    failure: &'r mut Option<DecodeError>,
}

impl JsonPack<'_, '_> {
    fn reject<E: de::Error>(self, found: &str) -> E {
        fail(
            self.failure,
            DecodeError::Invalid(format!(
                "a SenML JSON pack must be an array of records, found {found}"
            )),
        )
    }
}

impl<'de> DeserializeSeed<'de> for JsonPack<'_, 'de> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for JsonPack<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a SenML pack (an array of records)")
    }

    reject_scalars!();

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(self.reject("an object"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0;
        loop {
            if self.resolver.limit_reached(index) {
                // Only an actual extra record is too many; a pack may end right at the limit.
                return match seq.next_element::<IgnoredAny>()? {
                    None => Ok(()),
                    Some(_) => {
                        let e = self.resolver.too_many();
                        Err(fail(self.failure, e))
                    }
                };
            }
            let seed = JsonRecord {
                index,
                resolver: &mut *self.resolver,
                failure: &mut *self.failure,
            };
            if seq.next_element_seed(seed)?.is_none() {
                return Ok(());
            }
            index += 1;
        }
    }
}

/// One record object of a SenML JSON pack, resolved as soon as its object closes (so the raw
/// record never travels back through serde).
struct JsonRecord<'f, 'a> {
    index: usize,
    resolver: &'f mut Resolver<'a>,
    failure: &'f mut Option<DecodeError>,
}

impl JsonRecord<'_, '_> {
    fn reject<E: de::Error>(self, found: &str) -> E {
        let index = self.index;
        fail(
            self.failure,
            DecodeError::Invalid(format!("record {index}: must be an object, found {found}")),
        )
    }
}

impl<'de> DeserializeSeed<'de> for JsonRecord<'_, 'de> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for JsonRecord<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a SenML record (an object)")
    }

    reject_scalars!();

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(self.reject("an array"))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut raw = RawRecord::default();
        while let Some(key) = map.next_key_seed(JsonKey)? {
            match key {
                Key::Known(label) => {
                    let value = map.next_value_seed(JsonValue)?;
                    if let Err(e) = raw.set(label, value, self.index) {
                        return Err(fail(self.failure, e));
                    }
                }
                Key::Ignored => {
                    map.next_value::<IgnoredAny>()?;
                }
                Key::MustUnderstand => return Err(fail(self.failure, must_understand(self.index))),
            }
        }
        self.resolver
            .push(raw, self.index)
            .map_err(|e| fail(self.failure, e))
    }
}

/// A SenML JSON label, classified without allocating.
struct JsonKey;

impl<'de> DeserializeSeed<'de> for JsonKey {
    type Value = Key;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Key, D::Error> {
        d.deserialize_identifier(self)
    }
}

impl Visitor<'_> for JsonKey {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a SenML label")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
        Ok(text_key(key, true))
    }
}

/// A JSON object key, borrowed from the input unless it contains escapes.
struct JsonString;

impl<'de> DeserializeSeed<'de> for JsonString {
    type Value = Cow<'de, str>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for JsonString {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(s))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(s.to_owned()))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(s))
    }
}

/// Any JSON value as a [`Value`]; arrays and objects are skipped (serde_json skips them
/// iteratively) and reported as [`Value::Nested`].
struct JsonValue;

impl<'de> DeserializeSeed<'de> for JsonValue {
    type Value = Value<'de>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for JsonValue {
    type Value = Value<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Value<'de>, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E: de::Error>(self, x: i64) -> Result<Value<'de>, E> {
        Ok(u64::try_from(x).map_or(Value::Int(x), Value::Uint))
    }

    fn visit_u64<E: de::Error>(self, x: u64) -> Result<Value<'de>, E> {
        Ok(Value::Uint(x))
    }

    fn visit_f64<E: de::Error>(self, x: f64) -> Result<Value<'de>, E> {
        Ok(Value::Float(x))
    }

    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Value<'de>, E> {
        Ok(Value::Text(Cow::Borrowed(s)))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Value<'de>, E> {
        Ok(Value::Text(Cow::Owned(s.to_owned())))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Value<'de>, E> {
        Ok(Value::Text(Cow::Owned(s)))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value<'de>, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value<'de>, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Value::Nested)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value<'de>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Value::Nested)
    }
}

/// Walks a JSON object (Content-Format 50), handing each member to `member` with its position.
/// Anything but an object is [`DecodeError::Invalid`]; errors from `member` stop the walk.
pub(crate) fn decode_json_object<'de, F>(body: &'de [u8], member: F) -> Result<(), DecodeError>
where
    F: FnMut(Cow<'de, str>, Value<'de>, usize) -> Result<(), DecodeError>,
{
    let mut failure = None;
    let parsed = parse_json(
        body,
        JsonObject {
            member,
            failure: &mut failure,
        },
    );
    json_outcome(parsed, failure, ContentFormat::Json)
}

struct JsonObject<'f, F> {
    member: F,
    failure: &'f mut Option<DecodeError>,
}

impl<F> JsonObject<'_, F> {
    fn reject<E: de::Error>(self, found: &str) -> E {
        fail(
            self.failure,
            DecodeError::Invalid(format!(
                "a JSON payload must be an object of named values, found {found}"
            )),
        )
    }
}

impl<'de, F> DeserializeSeed<'de> for JsonObject<'_, F>
where
    F: FnMut(Cow<'de, str>, Value<'de>, usize) -> Result<(), DecodeError>,
{
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, F> Visitor<'de> for JsonObject<'_, F>
where
    F: FnMut(Cow<'de, str>, Value<'de>, usize) -> Result<(), DecodeError>,
{
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object of named values")
    }

    reject_scalars!();

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(self.reject("an array"))
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        let mut index = 0;
        while let Some(name) = map.next_key_seed(JsonString)? {
            let value = map.next_value_seed(JsonValue)?;
            if let Err(e) = (self.member)(name, value, index) {
                return Err(fail(self.failure, e));
            }
            index += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::senml::test_support::{ctx, json};

    #[test]
    fn unknown_labels_are_ignored_and_must_understand_labels_reject() {
        let records = json(r#"[{"n":"a","v":1,"foo":{"deep":[1,2,{"x":null}]},"ct":"60"}]"#)
            .expect("ignorable extensions are ignored");
        assert_eq!(records.len(), 1);
        let err = json(r#"[{"n":"a","v":1,"ct_":"60"}]"#).expect_err("must-understand");
        assert_eq!(err.reason(), "invalid");
        assert!(err.to_string().contains("must-understand"), "{err}");
    }

    #[test]
    fn wrong_json_types_are_invalid_and_do_not_echo_the_payload() {
        let err = json(r#"[{"n":"a","v":"secret-value"}]"#).expect_err("string v");
        assert_eq!(err.reason(), "invalid");
        assert!(!err.to_string().contains("secret-value"), "{err}");
        let err = json(r#""secret-top""#).expect_err("string pack");
        assert!(!err.to_string().contains("secret-top"), "{err}");
        let err = json(r#"["secret-record"]"#).expect_err("string record");
        assert!(!err.to_string().contains("secret-record"), "{err}");
        assert!(
            json(r#"{"n":"a","v":1}"#).is_err(),
            "object instead of array"
        );
        assert!(json(r#"[{"n":"a","v":null}]"#).is_err());
        assert!(json(r#"[{"n":"a","vb":1}]"#).is_err());
    }

    #[test]
    fn syntax_errors_are_malformed() {
        for bad in [
            "[",
            "[{\"n\":}]",
            "[{\"n\":\"a\",\"v\":1},]",
            "[{\"n\":\"a\",\"v\":1}] x",
            "\u{0}",
        ] {
            let err = json(bad).expect_err(bad);
            assert_eq!(err.reason(), "malformed", "{bad}: {err}");
        }
        let err = decode_json(b"[{\"n\":\"\xff\",\"v\":1}]", &ctx()).expect_err("bad UTF-8");
        assert_eq!(err.reason(), "malformed");
        let err = json("[{\"n\":\"a\",\"v\":1e400}]").expect_err("out of range");
        assert_eq!(err.reason(), "malformed");
    }

    #[test]
    fn empty_inputs_are_empty() {
        for empty in ["", "  \n", "[]", r#"[{"bn":"x/"}]"#] {
            assert_eq!(json(empty), Err(DecodeError::Empty), "{empty:?}");
        }
    }

    #[test]
    fn deeply_nested_json_is_an_error_not_a_crash() {
        let deep = "[".repeat(100_000);
        assert!(json(&deep).is_err());
        let in_value = format!(
            r#"[{{"n":"a","v":{}1{}}}]"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert_eq!(json(&in_value).expect_err("nested v").reason(), "invalid");
        let in_extension = format!(
            r#"[{{"n":"a","v":1,"x":{}1{}}}]"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert!(
            json(&in_extension).is_ok(),
            "ignored extension is skipped iteratively"
        );
    }

    #[test]
    fn count_byte_counts_every_occurrence() {
        let body: Vec<u8> = (0..=255u8)
            .chain(*b"{{x{{{{{{{{{{{{")
            .chain(0..=255)
            .collect();
        for len in 0..body.len() {
            for byte in [b'{', 0, 0x7f, 0x80, 0xff] {
                let slice = body.get(..len).unwrap_or_default();
                let expected = slice.iter().filter(|b| **b == byte).count();
                assert_eq!(count_byte(slice, byte), expected, "{len} {byte}");
            }
        }
    }
}
