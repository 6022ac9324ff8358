//! The data model every LwM2M content format decodes to and encodes from: a flat list of
//! resolved resource values, each at a full [`Path`] (`/3303/0/5700`, or `/3303/0/5700/1` for a
//! resource instance), like resolved SenML records. Object and object-instance structure is
//! implied by the paths, so TLV, SenML, OMA JSON and LwM2M CBOR all meet here.

use std::fmt;
use std::str::FromStr;

/// An LwM2M path: `/`, `/oid`, `/oid/iid`, `/oid/iid/rid` or `/oid/iid/rid/riid`.
/// Every id is 0..=65534 (65535 is reserved as "no id" by the specification).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Path {
    ids: [u16; 4],
    len: u8,
}

/// Why a path does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid LwM2M path: {0}")]
pub struct PathError(pub &'static str);

impl Path {
    /// The root path `/`.
    pub const ROOT: Path = Path {
        ids: [0; 4],
        len: 0,
    };

    /// A path from its ids (at most four, each ≤ 65534).
    pub fn new(ids: &[u16]) -> Result<Path, PathError> {
        if ids.len() > 4 {
            return Err(PathError("more than four levels"));
        }
        if ids.contains(&u16::MAX) {
            return Err(PathError("id 65535 is reserved"));
        }
        let mut p = Path::ROOT;
        for (slot, id) in p.ids.iter_mut().zip(ids) {
            *slot = *id;
        }
        p.len = ids.len() as u8;
        Ok(p)
    }

    /// `/oid`.
    pub fn object(oid: u16) -> Path {
        Path {
            ids: [oid, 0, 0, 0],
            len: 1,
        }
    }

    /// `/oid/iid`.
    pub fn instance(oid: u16, iid: u16) -> Path {
        Path {
            ids: [oid, iid, 0, 0],
            len: 2,
        }
    }

    /// `/oid/iid/rid`.
    pub fn resource(oid: u16, iid: u16, rid: u16) -> Path {
        Path {
            ids: [oid, iid, rid, 0],
            len: 3,
        }
    }

    /// `/oid/iid/rid/riid`.
    pub fn resource_instance(oid: u16, iid: u16, rid: u16, riid: u16) -> Path {
        Path {
            ids: [oid, iid, rid, riid],
            len: 4,
        }
    }

    /// The ids, outermost first.
    pub fn ids(&self) -> &[u16] {
        &self.ids[..usize::from(self.len)]
    }

    /// Number of levels (0 for the root).
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Whether this is the root path.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Object id, if any.
    pub fn object_id(&self) -> Option<u16> {
        self.ids().first().copied()
    }

    /// Object instance id, if any.
    pub fn instance_id(&self) -> Option<u16> {
        self.ids().get(1).copied()
    }

    /// Resource id, if any.
    pub fn resource_id(&self) -> Option<u16> {
        self.ids().get(2).copied()
    }

    /// Resource instance id, if any.
    pub fn resource_instance_id(&self) -> Option<u16> {
        self.ids().get(3).copied()
    }

    /// This path with one more level, or `None` below a resource instance.
    pub fn child(&self, id: u16) -> Option<Path> {
        if self.len >= 4 || id == u16::MAX {
            return None;
        }
        let mut p = *self;
        p.ids[usize::from(self.len)] = id;
        p.len += 1;
        Some(p)
    }

    /// Whether `self` is `other` or below it.
    pub fn starts_with(&self, other: &Path) -> bool {
        self.len >= other.len && self.ids()[..other.len()] == *other.ids()
    }

    /// The Uri-Path segments (`["3303", "0", "5700"]`).
    pub fn segments(&self) -> Vec<String> {
        self.ids().iter().map(u16::to_string).collect()
    }

    /// From Uri-Path segments (each a decimal id).
    pub fn from_segments<S: AsRef<[u8]>>(segs: &[S]) -> Result<Path, PathError> {
        if segs.len() > 4 {
            return Err(PathError("more than four levels"));
        }
        let mut ids = [0u16; 4];
        for (slot, s) in ids.iter_mut().zip(segs) {
            *slot = parse_id(s.as_ref())?;
        }
        Path::new(&ids[..segs.len()])
    }
}

fn parse_id(s: &[u8]) -> Result<u16, PathError> {
    if s.is_empty() || s.len() > 5 || !s.iter().all(u8::is_ascii_digit) {
        return Err(PathError("an id is not a decimal number"));
    }
    if s.len() > 1 && s[0] == b'0' {
        return Err(PathError("an id has a leading zero"));
    }
    let n = s.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
    u16::try_from(n)
        .ok()
        .filter(|n| *n != u16::MAX)
        .ok_or(PathError("an id is above 65534"))
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.len == 0 {
            return f.write_str("/");
        }
        for id in self.ids() {
            write!(f, "/{id}")?;
        }
        Ok(())
    }
}

impl FromStr for Path {
    type Err = PathError;

    /// `/3303/0/5700` (the leading slash optional; `/` and the empty string are the root).
    fn from_str(s: &str) -> Result<Path, PathError> {
        let s = s.strip_prefix('/').unwrap_or(s);
        if s.is_empty() {
            return Ok(Path::ROOT);
        }
        let segs: Vec<&str> = s.split('/').collect();
        Path::from_segments(&segs)
    }
}

impl serde::Serialize for Path {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl schemars::JsonSchema for Path {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Path".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "An LwM2M path: `/object`, `/object/instance` or `/object/instance/resource`.",
        })
    }
}

impl<'de> serde::Deserialize<'de> for Path {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Path, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The data type of a resource (OMA LwM2M TS Core, Appendix C).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResourceType {
    /// UTF-8 string.
    String,
    /// Signed integer (up to 64 bits).
    Integer,
    /// Unsigned integer (up to 64 bits; LwM2M 1.1).
    Unsigned,
    /// IEEE 754 float (32 or 64 bits).
    Float,
    /// Boolean.
    Boolean,
    /// Bytes.
    Opaque,
    /// Seconds since the Unix epoch (signed integer).
    Time,
    /// Object link `oid:iid`.
    Objlnk,
    /// CoRE link (RFC 6690) as a string.
    Corelnk,
    /// Executable resources carry no value.
    None,
}

/// A resource (instance) value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// String.
    String(String),
    /// Signed integer.
    Integer(i64),
    /// Unsigned integer.
    Unsigned(u64),
    /// Float.
    Float(f64),
    /// Boolean.
    Boolean(bool),
    /// Bytes.
    Opaque(Vec<u8>),
    /// Seconds since the Unix epoch.
    Time(i64),
    /// Object link (`oid`, `iid`).
    Objlnk(u16, u16),
    /// CoRE link string.
    Corelnk(String),
}

impl Value {
    /// Its type.
    pub fn resource_type(&self) -> ResourceType {
        match self {
            Value::String(_) => ResourceType::String,
            Value::Integer(_) => ResourceType::Integer,
            Value::Unsigned(_) => ResourceType::Unsigned,
            Value::Float(_) => ResourceType::Float,
            Value::Boolean(_) => ResourceType::Boolean,
            Value::Opaque(_) => ResourceType::Opaque,
            Value::Time(_) => ResourceType::Time,
            Value::Objlnk(..) => ResourceType::Objlnk,
            Value::Corelnk(_) => ResourceType::Corelnk,
        }
    }
}

/// One resolved value: a resource (single-instance) or resource instance at a full path, with
/// its time when the format carries one (SenML `t`, OMA JSON `t`), absolute seconds since the
/// Unix epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// `/oid/iid/rid` or `/oid/iid/rid/riid`.
    pub path: Path,
    /// The value.
    pub value: Value,
    /// Absolute time, if the payload carried one.
    pub time: Option<f64>,
}

/// Where decoders find a resource's type for formats that do not carry it (TLV, text/plain,
/// CBOR), and encoders check values. The object model implements it.
pub trait TypeLookup {
    /// The type of resource `rid` of object `oid`, if the object is known.
    fn resource_type(&self, oid: u16, rid: u16) -> Option<ResourceType>;
    /// Whether resource `rid` of object `oid` is multi-instance (`None`: unknown).
    fn is_multiple(&self, oid: u16, rid: u16) -> Option<bool>;
}

/// A lookup that knows nothing (values keep the type their format carries; TLV values whose
/// type is unknown decode as opaque).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoTypes;

impl TypeLookup for NoTypes {
    fn resource_type(&self, _: u16, _: u16) -> Option<ResourceType> {
        None
    }
    fn is_multiple(&self, _: u16, _: u16) -> Option<bool> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_print_and_reject() {
        for s in ["/", "/3", "/3/0", "/3303/0/5700", "/3/0/7/1", "/65534"] {
            let p: Path = s.parse().unwrap();
            assert_eq!(p.to_string(), s);
        }
        assert_eq!("3/0".parse::<Path>().unwrap(), Path::instance(3, 0));
        for bad in [
            "/3/",
            "/a",
            "/65535",
            "/1/2/3/4/5",
            "/01",
            "//",
            "/99999",
            "/-1",
        ] {
            assert!(bad.parse::<Path>().is_err(), "{bad}");
        }
        let p = Path::resource(3, 0, 7);
        assert!(p.starts_with(&Path::object(3)));
        assert!(!Path::object(3).starts_with(&p));
        assert_eq!(p.child(1), Some(Path::resource_instance(3, 0, 7, 1)));
        assert_eq!(Path::resource_instance(3, 0, 7, 1).child(0), None);
    }
}
