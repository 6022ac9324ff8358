//! Shared by the `formats_*` tests: a model of the objects the OMA examples use, and helpers.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime};

use wardgate_lwm2m::format::{self, Format, FormatError};
use wardgate_lwm2m::{Entry, Path, ResourceType, TypeLookup, Value};

/// Device (3), Access Control (2), Temperature (3303) as far as the examples need, and a test
/// object 9999 with one resource per type: rid 0..=8 single, rid 10..=18 multiple, in the order
/// of [`TYPES`].
pub(crate) struct Model;

pub(crate) const TYPES: [ResourceType; 9] = [
    ResourceType::String,
    ResourceType::Integer,
    ResourceType::Unsigned,
    ResourceType::Float,
    ResourceType::Boolean,
    ResourceType::Opaque,
    ResourceType::Time,
    ResourceType::Objlnk,
    ResourceType::Corelnk,
];

impl TypeLookup for Model {
    fn resource_type(&self, oid: u16, rid: u16) -> Option<ResourceType> {
        use ResourceType as T;
        Some(match (oid, rid) {
            (3, 0..=3 | 14..=16) => T::String,
            (3, 4 | 5) => T::None,
            (3, 6..=11) => T::Integer,
            (3, 13) => T::Time,
            (2, 0..=3) => T::Integer,
            (3303, 5700 | 5601 | 5602) => T::Float,
            (3303, 5701) => T::String,
            (9999, r @ 0..=8) => TYPES[usize::from(r)],
            (9999, r @ 10..=18) => TYPES[usize::from(r - 10)],
            _ => return None,
        })
    }
    fn is_multiple(&self, oid: u16, rid: u16) -> Option<bool> {
        Some(match (oid, rid) {
            (3, 6 | 7 | 8 | 11) | (2, 2) => true,
            (9999, 10..=18) => true,
            (3 | 2 | 3303 | 9999, _) => false,
            _ => return None,
        })
    }
}

/// A fixed "now": 2026-01-01T00:00:00Z.
pub(crate) fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600)
}

pub(crate) fn p(s: &str) -> Path {
    s.parse().expect("test path")
}

pub(crate) fn e(path: &str, value: Value) -> Entry {
    Entry {
        path: p(path),
        value,
        time: None,
    }
}

pub(crate) fn et(path: &str, value: Value, time: f64) -> Entry {
    Entry {
        path: p(path),
        value,
        time: Some(time),
    }
}

pub(crate) fn dec(f: Format, base: &str, body: &[u8]) -> Result<Vec<Entry>, FormatError> {
    format::decode(f, &p(base), body, &Model, now())
}

pub(crate) fn enc(f: Format, base: &str, entries: &[Entry]) -> Result<Vec<u8>, FormatError> {
    format::encode(f, &p(base), entries, &Model)
}

pub(crate) fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

pub(crate) fn s(x: &str) -> Value {
    Value::String(x.into())
}

/// The Device object instance of the OMA examples (TS Core Appendix, Read on /3/0).
pub(crate) fn device() -> Vec<Entry> {
    use Value::*;
    vec![
        e("/3/0/0", s("Open Mobile Alliance")),
        e("/3/0/1", s("Lightweight M2M Client")),
        e("/3/0/2", s("345000123")),
        e("/3/0/3", s("1.0")),
        e("/3/0/6/0", Integer(1)),
        e("/3/0/6/1", Integer(5)),
        e("/3/0/7/0", Integer(3800)),
        e("/3/0/7/1", Integer(5000)),
        e("/3/0/8/0", Integer(125)),
        e("/3/0/8/1", Integer(900)),
        e("/3/0/9", Integer(100)),
        e("/3/0/10", Integer(15)),
        e("/3/0/11/0", Integer(0)),
        e("/3/0/13", Time(1_367_491_215)),
        e("/3/0/14", s("+02:00")),
        e("/3/0/16", s("U")),
    ]
}

/// Its TLV, byte for byte as the specification prints it.
pub(crate) const DEVICE_TLV: &str = "
    C8 00 14 4F 70 65 6E 20 4D 6F 62 69 6C 65 20 41 6C 6C 69 61 6E 63 65
    C8 01 16 4C 69 67 68 74 77 65 69 67 68 74 20 4D 32 4D 20 43 6C 69 65 6E 74
    C8 02 09 33 34 35 30 30 30 31 32 33
    C3 03 31 2E 30
    86 06 41 00 01 41 01 05
    88 07 08 42 00 0E D8 42 01 13 88
    87 08 41 00 7D 42 01 03 84
    C1 09 64
    C1 0A 0F
    83 0B 41 00 00
    C4 0D 51 82 42 8F
    C6 0E 2B 30 32 3A 30 30
    C1 10 55";
