//! LwM2M TLV (11542; OMA LwM2M TS Core 1.0 §6.4.3, 1.1 §7.4.3).
//!
//! A TLV is a type byte (bits 7-6 the identifier kind: 00 object instance, 01 resource
//! instance, 10 multiple resource, 11 resource with value; bit 5 a 16-bit identifier; bits 4-3
//! the length field's size, 0 to 3 bytes; bits 2-0 the length itself when that size is 0), the
//! identifier, the length and the value. Values carry no type: it comes from the model, and a
//! value of unknown type is opaque.
//!
//! Reading choices where clients differ: an answer on `/o/i` may be the instance's resources or
//! one object-instance TLV wrapping them (both are seen); an answer on `/o/i/r` may be a
//! multiple-resource TLV or its bare resource instances; bits 2-0 are ignored when the length
//! has its own field.

use std::collections::BTreeMap;

use super::value::{self, Num, Raw};
use super::{Ctx, FormatError, invalid};
use crate::node::{Entry, Path, ResourceType, TypeLookup, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    ObjectInstance,
    ResourceInstance,
    MultipleResource,
    Resource,
}

impl Kind {
    fn bits(self) -> u8 {
        match self {
            Kind::ObjectInstance => 0b00,
            Kind::ResourceInstance => 0b01,
            Kind::MultipleResource => 0b10,
            Kind::Resource => 0b11,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Tlv<'a> {
    kind: Kind,
    id: u16,
    value: &'a [u8],
}

/// The TLVs of one level, in order.
fn parse_level<'a>(ctx: &Ctx<'_>, mut b: &'a [u8]) -> Result<Vec<Tlv<'a>>, FormatError> {
    let mut out = Vec::new();
    while let Some((&t, rest)) = b.split_first() {
        let kind = match t >> 6 {
            0b00 => Kind::ObjectInstance,
            0b01 => Kind::ResourceInstance,
            0b10 => Kind::MultipleResource,
            _ => Kind::Resource,
        };
        let id_len = if t & 0x20 != 0 { 2 } else { 1 };
        let len_len = usize::from((t >> 3) & 0b11);
        let (id, rest) = split(ctx, rest, id_len, "identifier")?;
        let (len, rest) = split(ctx, rest, len_len, "length")?;
        let id = be(id) as u16;
        if id == u16::MAX {
            return Err(invalid("TLV identifier 65535 is reserved"));
        }
        let len = if len_len == 0 {
            usize::from(t & 0b111)
        } else {
            be(len) as usize
        };
        let (value, rest) = split(ctx, rest, len, "value")?;
        // Each TLV is at least two bytes, so a level holds at most half the body: counting
        // here bounds the Vec by the entry limit, not by the body.
        if out.len() >= ctx.limits.max_entries {
            return Err(FormatError::TooLarge("the number of entries"));
        }
        out.push(Tlv { kind, id, value });
        b = rest;
    }
    Ok(out)
}

fn split<'a>(
    ctx: &Ctx<'_>,
    b: &'a [u8],
    n: usize,
    what: &str,
) -> Result<(&'a [u8], &'a [u8]), FormatError> {
    if b.len() < n {
        return Err(ctx.malformed(format!("a TLV {what} runs past the end of its container")));
    }
    Ok(b.split_at(n))
}

/// Big-endian unsigned of up to 8 bytes.
fn be(b: &[u8]) -> u64 {
    b.iter().fold(0u64, |n, x| (n << 8) | u64::from(*x))
}

pub(super) fn decode(ctx: &Ctx<'_>, body: &[u8]) -> Result<Vec<Entry>, FormatError> {
    let base = ctx.base;
    let ids = base.ids();
    let top = parse_level(ctx, body)?;
    let mut out = Vec::new();
    match *ids {
        [] => {
            return Err(invalid(
                "TLV cannot carry several objects: request an object",
            ));
        }
        [_] => {
            for t in &top {
                expect(t, &[Kind::ObjectInstance])?;
                instance(ctx, &mut out, path_child(&base, t.id)?, t.value)?;
            }
        }
        [_, iid] => match top.as_slice() {
            [t] if t.kind == Kind::ObjectInstance => {
                if t.id != iid {
                    return Err(outside(&base, t.id));
                }
                instance(ctx, &mut out, base, t.value)?;
            }
            _ => resources(ctx, &mut out, base, &top)?,
        },
        [_, _, rid] => match top.as_slice() {
            [t] if t.kind != Kind::ResourceInstance => {
                expect(t, &[Kind::Resource, Kind::MultipleResource])?;
                if t.id != rid {
                    return Err(outside(&base, t.id));
                }
                resource(ctx, &mut out, base, t)?;
            }
            _ => {
                for t in &top {
                    expect(t, &[Kind::ResourceInstance])?;
                    leaf(ctx, &mut out, path_child(&base, t.id)?, t.value)?;
                }
            }
        },
        [.., riid] => match top.as_slice() {
            [t] => {
                expect(t, &[Kind::ResourceInstance, Kind::Resource])?;
                if t.id != riid {
                    return Err(outside(&base, t.id));
                }
                leaf(ctx, &mut out, base, t.value)?;
            }
            _ => return Err(invalid("a resource instance request needs one TLV")),
        },
    }
    Ok(out)
}

fn outside(base: &Path, id: u16) -> FormatError {
    invalid(format!("a TLV with id {id} does not belong to {base}"))
}

fn expect(t: &Tlv<'_>, kinds: &[Kind]) -> Result<(), FormatError> {
    if kinds.contains(&t.kind) {
        Ok(())
    } else {
        Err(invalid(format!(
            "a TLV of kind {:?} where {kinds:?} is expected",
            t.kind
        )))
    }
}

fn path_child(p: &Path, id: u16) -> Result<Path, FormatError> {
    p.child(id)
        .ok_or_else(|| invalid("TLV nesting below a resource instance"))
}

fn instance(
    ctx: &Ctx<'_>,
    out: &mut Vec<Entry>,
    path: Path,
    body: &[u8],
) -> Result<(), FormatError> {
    let level = parse_level(ctx, body)?;
    resources(ctx, out, path, &level)
}

fn resources(
    ctx: &Ctx<'_>,
    out: &mut Vec<Entry>,
    instance: Path,
    level: &[Tlv<'_>],
) -> Result<(), FormatError> {
    for t in level {
        expect(t, &[Kind::Resource, Kind::MultipleResource])?;
        resource(ctx, out, path_child(&instance, t.id)?, t)?;
    }
    Ok(())
}

fn resource(
    ctx: &Ctx<'_>,
    out: &mut Vec<Entry>,
    path: Path,
    t: &Tlv<'_>,
) -> Result<(), FormatError> {
    if t.kind == Kind::Resource {
        return leaf(ctx, out, path, t.value);
    }
    for ri in parse_level(ctx, t.value)? {
        expect(&ri, &[Kind::ResourceInstance])?;
        leaf(ctx, out, path_child(&path, ri.id)?, ri.value)?;
    }
    Ok(())
}

fn leaf(ctx: &Ctx<'_>, out: &mut Vec<Entry>, path: Path, b: &[u8]) -> Result<(), FormatError> {
    ctx.room(out)?;
    ctx.check_value_len(b.len())?;
    let ids = path.ids();
    let ty = ctx.types.resource_type(ids[0], ids[2]);
    let value = decode_value(b, ty).map_err(value::at(&path))?;
    out.push(Entry {
        path,
        value,
        time: None,
    });
    Ok(())
}

fn decode_value(b: &[u8], ty: Option<ResourceType>) -> Result<Value, FormatError> {
    use ResourceType as T;
    let width = |ok: &[usize]| {
        if ok.contains(&b.len()) {
            Ok(())
        } else {
            Err(invalid(format!(
                "a {}-byte value where {ok:?} bytes are expected",
                b.len()
            )))
        }
    };
    match ty {
        None | Some(T::Opaque) => Ok(Value::Opaque(b.to_vec())),
        Some(T::Integer | T::Time) => {
            width(&[1, 2, 4, 8])?;
            // Sign-extend from the top bit of the first byte.
            let shift = 64 - 8 * b.len() as u32;
            let i = ((be(b) << shift) as i64) >> shift;
            value::typed(Raw::Num(Num::Int(i)), ty)
        }
        Some(T::Unsigned) => {
            width(&[1, 2, 4, 8])?;
            Ok(Value::Unsigned(be(b)))
        }
        Some(T::Float) => {
            width(&[4, 8])?;
            let f = if b.len() == 4 {
                f64::from(f32::from_bits(be(b) as u32))
            } else {
                f64::from_bits(be(b))
            };
            value::finite(f).map(Value::Float)
        }
        Some(T::Boolean) => match b {
            [0] => Ok(Value::Boolean(false)),
            [1] => Ok(Value::Boolean(true)),
            _ => Err(invalid("a boolean is not one byte 0 or 1")),
        },
        Some(T::String | T::Corelnk) => {
            let s = std::str::from_utf8(b)
                .map_err(|_| invalid("a string is not UTF-8"))?
                .to_owned();
            Ok(if ty == Some(T::Corelnk) {
                Value::Corelnk(s)
            } else {
                Value::String(s)
            })
        }
        Some(T::Objlnk) => {
            width(&[4])?;
            Ok(Value::Objlnk(be(&b[..2]) as u16, be(&b[2..]) as u16))
        }
        Some(T::None) => Err(invalid("an executable resource has no value")),
    }
}

pub(super) fn encode(
    base: &Path,
    entries: &[Entry],
    types: &dyn TypeLookup,
) -> Result<Vec<u8>, FormatError> {
    if base.is_empty() {
        return Err(invalid(
            "TLV cannot carry several objects: use an object path",
        ));
    }
    // object instance -> resource -> (single value | resource instances)
    let mut tree: BTreeMap<u16, BTreeMap<u16, Res<'_>>> = BTreeMap::new();
    for e in entries {
        let ids = e.path.ids();
        let res = tree
            .entry(ids[1])
            .or_default()
            .entry(ids[2])
            .or_insert(Res {
                single: None,
                instances: BTreeMap::new(),
            });
        match ids.get(3) {
            None => {
                if types.is_multiple(ids[0], ids[2]) == Some(true) {
                    return Err(invalid(format!(
                        "{} is a multiple-instance resource: give its instances",
                        e.path
                    )));
                }
                res.single = Some(&e.value);
            }
            Some(riid) => {
                res.instances.insert(*riid, &e.value);
            }
        }
    }
    let mut out = Vec::new();
    match base.len() {
        1 => {
            for (iid, resources) in &tree {
                let inner = encode_resources(resources)?;
                put(&mut out, Kind::ObjectInstance, *iid, &inner)?;
            }
        }
        2 => {
            if let Some(resources) = tree.values().next() {
                out = encode_resources(resources)?;
            }
        }
        3 => {
            if let Some((rid, r)) = tree.values().next().and_then(|m| m.iter().next()) {
                encode_resource(&mut out, *rid, r)?;
            }
        }
        _ => {
            if let Some((riid, v)) = tree
                .values()
                .next()
                .and_then(|m| m.values().next())
                .and_then(|r| r.instances.iter().next())
            {
                put(&mut out, Kind::ResourceInstance, *riid, &encode_value(v))?;
            }
        }
    }
    Ok(out)
}

#[derive(Debug)]
struct Res<'a> {
    single: Option<&'a Value>,
    instances: BTreeMap<u16, &'a Value>,
}

fn encode_resources(resources: &BTreeMap<u16, Res<'_>>) -> Result<Vec<u8>, FormatError> {
    let mut out = Vec::new();
    for (rid, r) in resources {
        encode_resource(&mut out, *rid, r)?;
    }
    Ok(out)
}

fn encode_resource(out: &mut Vec<u8>, rid: u16, r: &Res<'_>) -> Result<(), FormatError> {
    if let Some(v) = r.single {
        return put(out, Kind::Resource, rid, &encode_value(v));
    }
    let mut inner = Vec::new();
    for (riid, v) in &r.instances {
        put(&mut inner, Kind::ResourceInstance, *riid, &encode_value(v))?;
    }
    put(out, Kind::MultipleResource, rid, &inner)
}

fn put(out: &mut Vec<u8>, kind: Kind, id: u16, value: &[u8]) -> Result<(), FormatError> {
    let len = value.len();
    let (len_type, len_bytes): (u8, &[u8]) = match len {
        0..=7 => (0, &[]),
        8..=0xff => (1, &[len as u8]),
        0x100..=0xffff => (2, &(len as u16).to_be_bytes()),
        0x1_0000..=0xff_ffff => (3, &(len as u32).to_be_bytes()[1..]),
        _ => return Err(FormatError::TooLarge("a TLV value's 24-bit length")),
    };
    let wide = id > 0xff;
    let mut t = kind.bits() << 6 | u8::from(wide) << 5 | len_type << 3;
    if len_type == 0 {
        t |= len as u8;
    }
    out.push(t);
    if wide {
        out.extend_from_slice(&id.to_be_bytes());
    } else {
        out.push(id as u8);
    }
    out.extend_from_slice(len_bytes);
    out.extend_from_slice(value);
    Ok(())
}

fn encode_value(v: &Value) -> Vec<u8> {
    match v {
        Value::Integer(i) | Value::Time(i) => smallest_signed(*i),
        Value::Unsigned(u) => {
            let b = u.to_be_bytes();
            let keep = match *u {
                0..=0xff => 1,
                0x100..=0xffff => 2,
                0x1_0000..=0xffff_ffff => 4,
                _ => 8,
            };
            b[8 - keep..].to_vec()
        }
        Value::Float(f) => {
            let narrow = *f as f32;
            if f64::from(narrow).to_bits() == f.to_bits() {
                narrow.to_be_bytes().to_vec()
            } else {
                f.to_be_bytes().to_vec()
            }
        }
        Value::Boolean(b) => vec![u8::from(*b)],
        Value::String(s) | Value::Corelnk(s) => s.as_bytes().to_vec(),
        Value::Opaque(b) => b.clone(),
        Value::Objlnk(o, i) => [o.to_be_bytes(), i.to_be_bytes()].concat(),
    }
}

fn smallest_signed(i: i64) -> Vec<u8> {
    if let Ok(x) = i8::try_from(i) {
        x.to_be_bytes().to_vec()
    } else if let Ok(x) = i16::try_from(i) {
        x.to_be_bytes().to_vec()
    } else if let Ok(x) = i32::try_from(i) {
        x.to_be_bytes().to_vec()
    } else {
        i.to_be_bytes().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_take_the_smallest_two_complement_width() {
        assert_eq!(smallest_signed(0), [0]);
        assert_eq!(smallest_signed(-128), [0x80]);
        assert_eq!(smallest_signed(128), [0, 0x80]);
        assert_eq!(smallest_signed(-32769), [0xff, 0xff, 0x7f, 0xff]);
        assert_eq!(smallest_signed(1_367_491_215), [0x51, 0x82, 0x42, 0x8f]);
        assert_eq!(smallest_signed(i64::MIN).len(), 8);
        for v in [
            0i64,
            -1,
            127,
            -129,
            70000,
            -5_000_000_000,
            i64::MAX,
            i64::MIN,
        ] {
            assert_eq!(
                decode_value(&smallest_signed(v), Some(ResourceType::Integer)),
                Ok(Value::Integer(v))
            );
        }
    }

    #[test]
    fn header_lengths_pick_the_smallest_length_field() {
        let mut out = Vec::new();
        put(&mut out, Kind::Resource, 300, &[0; 7]).unwrap();
        assert_eq!(&out[..3], &[0b1110_0111, 0x01, 0x2c]);
        for (len, head) in [
            (8usize, vec![0b1100_1000, 5, 8]),
            (256, vec![0b1101_0000, 5, 1, 0]),
            (65536, vec![0b1101_1000, 5, 1, 0, 0]),
        ] {
            let mut out = Vec::new();
            put(&mut out, Kind::Resource, 5, &vec![0; len]).unwrap();
            assert_eq!(out[..head.len()], head[..], "{len}");
            assert_eq!(out.len(), head.len() + len);
        }
    }
}
