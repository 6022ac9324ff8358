//! Where what a format read on the wire meets the object model's type: one function,
//! [`typed`], decides for every format which wire kinds a resource type accepts.
//!
//! Without a known type (an unknown object, [`crate::node::NoTypes`]) a value keeps the kind
//! its format carries: integers are `Integer` (`Unsigned` above `i64::MAX`), floats `Float`,
//! text `String`, bytes `Opaque`. With a type, an integer is accepted for a float resource, an
//! integral float for an integer one (some clients write `1.0`), and nothing else crosses kinds.

use std::borrow::Cow;

use super::{FormatError, invalid};
use crate::node::{Entry, Path, ResourceType, TypeLookup, Value};

/// A number as a format carried it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Num {
    Int(i64),
    Uint(u64),
    Float(f64),
}

/// A value as a format carried it, before the model's type is applied.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Raw<'a> {
    Num(Num),
    Bool(bool),
    Text(Cow<'a, str>),
    Bytes(Cow<'a, [u8]>),
    /// An object link the format marks as one (SenML `vlo`, OMA JSON `ov`).
    Objlnk(Cow<'a, str>),
    /// A time the format marks as one (CBOR tag 1).
    Time(Num),
}

/// Applies the model's type (if known) to what the format carried.
pub(crate) fn typed(raw: Raw<'_>, ty: Option<ResourceType>) -> Result<Value, FormatError> {
    use ResourceType as T;
    let mismatch = |what: &str| {
        Err(invalid(format!(
            "{what} where the model expects {}",
            ty.map_or("a value".to_string(), |t| format!("{t:?}").to_lowercase())
        )))
    };
    match (raw, ty) {
        (_, Some(T::None)) => Err(invalid("an executable resource has no value")),
        (Raw::Num(n), None) => match n {
            Num::Int(i) => Ok(Value::Integer(i)),
            Num::Uint(u) => Ok(i64::try_from(u).map_or(Value::Unsigned(u), Value::Integer)),
            Num::Float(f) => finite(f).map(Value::Float),
        },
        (Raw::Num(n), Some(T::Integer)) => to_i64(n).map(Value::Integer),
        (Raw::Num(n), Some(T::Time)) | (Raw::Time(n), Some(T::Time) | None) => {
            to_i64(n).map(Value::Time)
        }
        (Raw::Num(n), Some(T::Unsigned)) => to_u64(n).map(Value::Unsigned),
        (Raw::Num(n), Some(T::Float)) => finite(match n {
            Num::Int(i) => i as f64,
            Num::Uint(u) => u as f64,
            Num::Float(f) => f,
        })
        .map(Value::Float),
        (Raw::Num(_), _) => mismatch("a number"),
        (Raw::Time(_), _) => mismatch("a time"),
        (Raw::Bool(b), None | Some(T::Boolean)) => Ok(Value::Boolean(b)),
        (Raw::Bool(_), _) => mismatch("a boolean"),
        (Raw::Text(s), None | Some(T::String)) => Ok(Value::String(s.into_owned())),
        (Raw::Text(s), Some(T::Corelnk)) => Ok(Value::Corelnk(s.into_owned())),
        (Raw::Text(s), Some(T::Objlnk)) => objlnk(&s),
        (Raw::Text(_), _) => mismatch("text"),
        (Raw::Bytes(b), None | Some(T::Opaque)) => Ok(Value::Opaque(b.into_owned())),
        (Raw::Bytes(_), _) => mismatch("bytes"),
        (Raw::Objlnk(s), None | Some(T::Objlnk)) => objlnk(&s),
        (Raw::Objlnk(_), _) => mismatch("an object link"),
    }
}

pub(crate) fn finite(f: f64) -> Result<f64, FormatError> {
    if f.is_finite() {
        Ok(f)
    } else {
        Err(invalid("a float is NaN or infinite"))
    }
}

fn to_i64(n: Num) -> Result<i64, FormatError> {
    let out_of_range = || invalid("an integer is out of range");
    match n {
        Num::Int(i) => Ok(i),
        Num::Uint(u) => i64::try_from(u).map_err(|_| out_of_range()),
        Num::Float(f) => integral(f)
            // 2^63 is exactly representable and one past i64::MAX.
            .filter(|f| *f >= -9_223_372_036_854_775_808.0 && *f < 9_223_372_036_854_775_808.0)
            .map(|f| f as i64)
            .ok_or_else(out_of_range),
    }
}

fn to_u64(n: Num) -> Result<u64, FormatError> {
    let out_of_range = || invalid("an unsigned integer is out of range");
    match n {
        Num::Int(i) => u64::try_from(i).map_err(|_| out_of_range()),
        Num::Uint(u) => Ok(u),
        Num::Float(f) => integral(f)
            .filter(|f| *f >= 0.0 && *f < 18_446_744_073_709_551_616.0)
            .map(|f| f as u64)
            .ok_or_else(out_of_range),
    }
}

fn integral(f: f64) -> Option<f64> {
    (f.is_finite() && f.fract() == 0.0).then_some(f)
}

/// `"3:0"`.
pub(crate) fn objlnk(s: &str) -> Result<Value, FormatError> {
    parse_objlnk(s)
        .map(|(o, i)| Value::Objlnk(o, i))
        .ok_or_else(|| invalid("an object link is not \"oid:iid\""))
}

/// `"3:0"` (each part 0..=65535: `65535:65535` is the null link).
pub(crate) fn parse_objlnk(s: &str) -> Option<(u16, u16)> {
    let (o, i) = s.split_once(':')?;
    Some((parse_u16(o)?, parse_u16(i)?))
}

fn parse_u16(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

pub(crate) fn objlnk_text(oid: u16, iid: u16) -> String {
    format!("{oid}:{iid}")
}

/// Encoders refuse a value whose type contradicts the model's, and values no format carries.
pub(crate) fn check_against_model(e: &Entry, types: &dyn TypeLookup) -> Result<(), FormatError> {
    if let Value::Float(f) = e.value {
        finite(f)?;
    }
    if let Some(t) = e.time {
        finite(t)?;
    }
    let (Some(oid), Some(rid)) = (e.path.object_id(), e.path.resource_id()) else {
        return Ok(());
    };
    match types.resource_type(oid, rid) {
        Some(t) if t != e.value.resource_type() => Err(invalid(format!(
            "{} holds {:?} where the model expects {t:?}",
            e.path,
            e.value.resource_type()
        ))),
        _ => Ok(()),
    }
}

/// Names `path` in an invalid-value error.
pub(crate) fn at(path: &Path) -> impl Fn(FormatError) -> FormatError + '_ {
    move |e| match e {
        FormatError::Invalid(d) => invalid(format!("{path}: {d}")),
        e => e,
    }
}

/// A record's time: base time plus time, resolved; `None` when the record and its bases carry
/// neither.
pub(crate) fn record_time(
    bt: Option<f64>,
    t: Option<f64>,
    now: f64,
) -> Result<Option<f64>, FormatError> {
    if bt.is_none() && t.is_none() {
        return Ok(None);
    }
    resolve_time(bt.unwrap_or(0.0) + t.unwrap_or(0.0), now).map(Some)
}

/// SenML and OMA JSON times below 2^28 are relative to now (RFC 8428 §4.5.3).
pub(crate) fn resolve_time(t: f64, now: f64) -> Result<f64, FormatError> {
    const RELATIVE_LIMIT: f64 = 268_435_456.0;
    let t = finite(t)?;
    Ok(if t < RELATIVE_LIMIT { now + t } else { t })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_cross_to_floats_and_integral_floats_to_integers_only() {
        assert_eq!(
            typed(Raw::Num(Num::Int(3)), Some(ResourceType::Float)),
            Ok(Value::Float(3.0))
        );
        assert_eq!(
            typed(Raw::Num(Num::Float(3.0)), Some(ResourceType::Integer)),
            Ok(Value::Integer(3))
        );
        assert!(typed(Raw::Num(Num::Float(3.5)), Some(ResourceType::Integer)).is_err());
        assert!(typed(Raw::Num(Num::Float(9.3e18)), Some(ResourceType::Integer)).is_err());
        assert!(typed(Raw::Num(Num::Int(-1)), Some(ResourceType::Unsigned)).is_err());
        assert_eq!(
            typed(Raw::Num(Num::Uint(u64::MAX)), None),
            Ok(Value::Unsigned(u64::MAX))
        );
        assert!(typed(Raw::Num(Num::Float(f64::NAN)), None).is_err());
        assert!(typed(Raw::Num(Num::Int(1)), Some(ResourceType::Boolean)).is_err());
        assert!(typed(Raw::Bool(true), Some(ResourceType::None)).is_err());
    }

    #[test]
    fn object_links_need_two_ids() {
        assert_eq!(parse_objlnk("3:0"), Some((3, 0)));
        assert_eq!(parse_objlnk("65535:65535"), Some((65535, 65535)));
        for bad in [
            "3", "3:", ":0", "3:0:1", "65536:0", "-1:0", "+3:0", " 3:0", "3:0 ",
        ] {
            assert_eq!(parse_objlnk(bad), None, "{bad}");
        }
    }
}
