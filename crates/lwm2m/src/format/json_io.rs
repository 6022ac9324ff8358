//! JSON for SenML JSON and OMA JSON: reading through serde visitors (no `serde_json::Value`
//! tree; a record list stops at the entry limit while it is read) and a small writer.
//!
//! Records are read permissively, every label kept with its JSON kind, and judged afterwards,
//! so an error is classified by what it means (malformed JSON, an invalid record, too many
//! records) rather than by serde's message.

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::value::Num;
use super::{Format, FormatError, Limits, malformed};

/// A JSON value of one record label.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Json {
    Num(Num),
    Str(String),
    Bool(bool),
    /// Anything else (null, array, object): skipped while reading.
    Other,
}

impl<'de> serde::Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Json, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Json;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
                Ok(Json::Num(Num::Int(v)))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
                Ok(Json::Num(Num::Uint(v)))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Json, E> {
                Ok(Json::Num(Num::Float(v)))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
                Ok(Json::Bool(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Json, E> {
                Ok(Json::Str(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<Json, E> {
                Ok(Json::Str(v))
            }
            fn visit_unit<E>(self) -> Result<Json, E> {
                Ok(Json::Other)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Json, A::Error> {
                while a.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Json::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Json, A::Error> {
                while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Json::Other)
            }
        }
        d.deserialize_any(V)
    }
}

/// A JSON object read as its labels in order (duplicates kept), values as [`Json`].
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Labels(pub(crate) Vec<(String, Json)>);

impl<'de> serde::Deserialize<'de> for Labels {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Labels, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Labels;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Labels, A::Error> {
                let mut labels = Vec::new();
                while let Some(k) = a.next_key::<String>()? {
                    // Labels are few in a sane record; a flood of them is refused.
                    if labels.len() >= MAX_LABELS {
                        return Err(de::Error::custom("too many labels in one record"));
                    }
                    labels.push((k, a.next_value::<Json>()?));
                }
                Ok(Labels(labels))
            }
        }
        d.deserialize_map(V)
    }
}

const MAX_LABELS: usize = 64;

/// A JSON array of `T`, refused once it holds more than `max` items.
pub(crate) struct BoundedSeq<'c, T> {
    pub(crate) max: usize,
    pub(crate) tripped: &'c Cell<bool>,
    pub(crate) item: PhantomData<T>,
}

impl<'de, T: serde::Deserialize<'de>> DeserializeSeed<'de> for BoundedSeq<'_, T> {
    type Value = Vec<T>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<T>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, T: serde::Deserialize<'de>> Visitor<'de> for BoundedSeq<'_, T> {
    type Value = Vec<T>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Vec<T>, A::Error> {
        let mut out = Vec::new();
        while let Some(x) = a.next_element::<T>()? {
            if out.len() >= self.max {
                self.tripped.set(true);
                return Err(de::Error::custom("too many records"));
            }
            out.push(x);
        }
        Ok(out)
    }
}

/// Reads a whole body with `seed`, mapping serde_json's errors: the record bound tripped is
/// [`FormatError::TooLarge`], serde_json's recursion limit too, anything else malformed.
pub(crate) fn read<'de, S: DeserializeSeed<'de>>(
    format: Format,
    body: &'de [u8],
    seed: S,
    tripped: &Cell<bool>,
) -> Result<S::Value, FormatError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let out = seed.deserialize(&mut de).and_then(|v| de.end().map(|()| v));
    out.map_err(|e| {
        if tripped.get() {
            FormatError::TooLarge("the number of entries")
        } else if e.to_string().starts_with("recursion limit exceeded") {
            FormatError::TooLarge("JSON nesting")
        } else {
            malformed(
                format,
                format!("line {} column {}: {}", e.line(), e.column(), kind(&e)),
            )
        }
    })
}

fn kind(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Io => "read error",
        serde_json::error::Category::Syntax => "not JSON",
        serde_json::error::Category::Data => "unexpected JSON structure",
        serde_json::error::Category::Eof => "unexpected end of input",
    }
}

/// A record list as [`read`] wants it.
pub(crate) fn records(
    format: Format,
    body: &[u8],
    limits: &Limits,
) -> Result<Vec<Labels>, FormatError> {
    let tripped = Cell::new(false);
    let seed = BoundedSeq::<Labels> {
        max: limits.max_entries,
        tripped: &tripped,
        item: PhantomData,
    };
    read(format, body, seed, &tripped)
}

/// Appends `"key":` and a JSON string.
pub(crate) fn put_str(out: &mut String, key: &str, s: &str) {
    out.push('"');
    out.push_str(key);
    out.push_str("\":");
    // A string always serialises.
    out.push_str(&serde_json::to_string(s).unwrap_or_default());
}

/// Appends `"key":` and a JSON number (floats in serde_json's shortest round-trip form, which
/// keeps a `.0` on integral floats so they read back as floats).
pub(crate) fn put_num(out: &mut String, key: &str, n: Num) {
    out.push('"');
    out.push_str(key);
    out.push_str("\":");
    match n {
        Num::Int(i) => out.push_str(&i.to_string()),
        Num::Uint(u) => out.push_str(&u.to_string()),
        Num::Float(f) => out.push_str(&serde_json::to_string(&f).unwrap_or_default()),
    }
}

pub(crate) fn put_bool(out: &mut String, key: &str, b: bool) {
    out.push('"');
    out.push_str(key);
    out.push_str("\":");
    out.push_str(if b { "true" } else { "false" });
}
