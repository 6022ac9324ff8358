//! OMA JSON (11543, legacy 1543; OMA LwM2M TS 1.0 §6.4.4): `{"bn":"/3/0/","bt":…,"e":[…]}`,
//! each element with a name `n` relative to `bn`, an optional time `t` relative to `bt`, and one
//! value: `v` (integers, floats, times), `bv` (booleans), `ov` (object links `"3:0"`) or `sv`
//! (strings, and opaque values in base64).
//!
//! Reading choices: without `bn`, names are relative to the request path (as Leshan reads
//! them); `bn` and `n` join with one `/` whether or not `bn` ends in one; times resolve like
//! SenML's (`bt` + `t`, below 2^28 relative to now); an `sv` for a resource of unknown type is a
//! string; unknown labels are ignored and a label given twice is invalid.

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};

use super::json_io::{self, BoundedSeq, Json, Labels};
use super::value::{self, Num, Raw};
use super::{Ctx, Format, FormatError, base64, invalid};
use crate::node::{Entry, Path, ResourceType, Value};

#[derive(Debug, Default)]
struct Doc {
    bn: Option<String>,
    bt: Option<f64>,
    e: Vec<Labels>,
}

/// Reads the document object with its `e` array bounded.
struct DocSeed<'c> {
    max: usize,
    tripped: &'c Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for DocSeed<'_> {
    type Value = Doc;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Doc, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for DocSeed<'_> {
    type Value = Doc;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an OMA JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Doc, A::Error> {
        let mut doc = Doc::default();
        let (mut bn, mut bt, mut e) = (false, false, false);
        let twice = |k: &str| de::Error::custom(format!("duplicate label {k}"));
        while let Some(k) = a.next_key::<String>()? {
            match k.as_str() {
                "bn" if !bn => {
                    bn = true;
                    doc.bn = Some(a.next_value()?);
                }
                "bt" if !bt => {
                    bt = true;
                    doc.bt = Some(a.next_value()?);
                }
                "e" if !e => {
                    e = true;
                    doc.e = a.next_value_seed(BoundedSeq::<Labels> {
                        max: self.max,
                        tripped: self.tripped,
                        item: PhantomData,
                    })?;
                }
                "bn" | "bt" | "e" => return Err(twice(&k)),
                _ => {
                    a.next_value::<IgnoredAny>()?;
                }
            }
        }
        if !e {
            return Err(de::Error::missing_field("e"));
        }
        Ok(doc)
    }
}

pub(super) fn decode(ctx: &Ctx<'_>, body: &[u8]) -> Result<Vec<Entry>, FormatError> {
    let tripped = Cell::new(false);
    let seed = DocSeed {
        max: ctx.limits.max_entries,
        tripped: &tripped,
    };
    let doc = json_io::read(Format::OmaJson, body, seed, &tripped)?;
    let bt = doc.bt.map(value::finite).transpose()?;
    let prefix = match &doc.bn {
        Some(bn) => bn.clone(),
        None => ctx.base.to_string(),
    };
    let mut out = Vec::new();
    for labels in doc.e {
        ctx.room(&out)?;
        let mut n: Option<String> = None;
        let mut t: Option<f64> = None;
        let mut raw: Option<(&str, Json)> = None;
        let mut seen: Vec<String> = Vec::new();
        for (k, v) in labels.0 {
            if seen.contains(&k) {
                return Err(invalid(format!("label {k} appears twice in an element")));
            }
            let label = match k.as_str() {
                "n" => {
                    let Json::Str(s) = v else {
                        return Err(invalid("n is not a string"));
                    };
                    n = Some(s);
                    "n"
                }
                "t" => {
                    let Json::Num(x) = v else {
                        return Err(invalid("t is not a number"));
                    };
                    t = Some(match x {
                        Num::Int(i) => i as f64,
                        Num::Uint(u) => u as f64,
                        Num::Float(f) => f,
                    });
                    "t"
                }
                "v" | "bv" | "ov" | "sv" => {
                    let l = match k.as_str() {
                        "v" => "v",
                        "bv" => "bv",
                        "ov" => "ov",
                        _ => "sv",
                    };
                    if raw.is_some() {
                        return Err(invalid("an element with more than one value"));
                    }
                    raw = Some((l, v));
                    l
                }
                _ => continue,
            };
            seen.push(label.to_string());
        }
        let path = join(&prefix, n.as_deref())?;
        if path.len() < 3 {
            return Err(invalid(format!("{path} is not a resource path")));
        }
        let ids = path.ids();
        let ty = ctx.types.resource_type(ids[0], ids[2]);
        let (label, v) =
            raw.ok_or_else(|| invalid(format!("the element for {path} has no value")))?;
        let value = element_value(label, v, ty, ctx).map_err(value::at(&path))?;
        let time = value::record_time(bt, t, ctx.now)?;
        out.push(Entry { path, value, time });
    }
    Ok(out)
}

fn element_value(
    label: &str,
    v: Json,
    ty: Option<ResourceType>,
    ctx: &Ctx<'_>,
) -> Result<Value, FormatError> {
    let raw = match (label, v) {
        ("v", Json::Num(n)) => Raw::Num(n),
        ("bv", Json::Bool(b)) => Raw::Bool(b),
        ("ov", Json::Str(s)) => Raw::Objlnk(s.into()),
        ("sv", Json::Str(s)) if ty == Some(ResourceType::Opaque) => {
            ctx.check_value_len(s.len() / 4 * 3)?;
            Raw::Bytes(
                base64::decode(&s)
                    .ok_or_else(|| invalid("an opaque sv is not base64"))?
                    .into(),
            )
        }
        ("sv", Json::Str(s)) => {
            ctx.check_value_len(s.len())?;
            Raw::Text(s.into())
        }
        (l, _) => return Err(invalid(format!("{l} holds the wrong kind of value"))),
    };
    value::typed(raw, ty)
}

/// `bn` + `n`, with exactly one `/` between them.
fn join(prefix: &str, n: Option<&str>) -> Result<Path, FormatError> {
    let full = match n {
        None | Some("") => prefix.to_string(),
        Some(n) => format!(
            "{}/{}",
            prefix.trim_end_matches('/'),
            n.strip_prefix('/').unwrap_or(n)
        ),
    };
    let trimmed = if full.len() > 1 {
        full.trim_end_matches('/')
    } else {
        &full
    };
    trimmed.parse::<Path>().map_err(|e| {
        invalid(format!(
            "the name \"{}\" is not a path: {}",
            full.escape_debug(),
            e.0
        ))
    })
}

pub(super) fn encode(base: &Path, entries: &[Entry]) -> Result<Vec<u8>, FormatError> {
    let single = !base.is_empty() && entries.iter().all(|e| e.path == *base);
    let bn = if single || base.is_empty() {
        base.to_string()
    } else {
        format!("{base}/")
    };
    let mut out = String::from("{");
    json_io::put_str(&mut out, "bn", &bn);
    out.push_str(",\"e\":[");
    for (i, e) in entries.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('{');
        if !single {
            let rel = &e.path.ids()[base.len()..];
            let n = rel.iter().map(u16::to_string).collect::<Vec<_>>().join("/");
            json_io::put_str(&mut out, "n", &n);
            out.push(',');
        }
        match &e.value {
            Value::Integer(x) | Value::Time(x) => json_io::put_num(&mut out, "v", Num::Int(*x)),
            Value::Unsigned(x) => json_io::put_num(&mut out, "v", Num::Uint(*x)),
            Value::Float(x) => json_io::put_num(&mut out, "v", Num::Float(*x)),
            Value::Boolean(b) => json_io::put_bool(&mut out, "bv", *b),
            Value::Objlnk(a, b) => json_io::put_str(&mut out, "ov", &value::objlnk_text(*a, *b)),
            Value::String(s) | Value::Corelnk(s) => json_io::put_str(&mut out, "sv", s),
            Value::Opaque(b) => json_io::put_str(&mut out, "sv", &base64::encode_standard(b)),
        }
        if let Some(t) = e.time {
            out.push(',');
            json_io::put_num(&mut out, "t", Num::Float(t));
        }
        out.push('}');
    }
    out.push_str("]}");
    Ok(out.into_bytes())
}
