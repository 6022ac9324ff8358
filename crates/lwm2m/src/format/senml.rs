//! SenML JSON (110) and SenML CBOR (112) as LwM2M 1.1 uses them (OMA LwM2M TS Core 1.1
//! §7.4.4, §7.4.5; RFC 8428).
//!
//! Names are paths: `bn` + `n` concatenate to `/3303/0/5700`. Values: `v` numbers (integers,
//! unsigned, floats and times), `vs` strings and CoRE links, `vb` booleans, `vd` opaque (base64url
//! in JSON, a byte string in CBOR), `vlo` object links `"3:0"`. Times: `bt` + `t`, and a result
//! below 2^28 is relative to now. SenML CBOR labels are integers (bn -2, bt -3, n 0, v 2, vs 3,
//! vb 4, t 6, vd 8) except `vlo`, a text label.
//!
//! Where RFC 8428 and LwM2M leave room, these decoders choose:
//! - a record holding only base fields (`bn`, `bt`, `bver`) sets them for the records after it
//!   and yields no entry; any other record needs exactly one value;
//! - sums and base values (`s`, `bs`, `bv`) have no meaning in LwM2M and are invalid, as is any
//!   label ending in `_` (must-understand, RFC 8428 §4.4); units and other labels are ignored;
//! - a label given twice in one record is invalid.
//!
//! `core`'s SenML decoder resolves to `wardgate_core::Record` (string names, float values); it
//! has no `vlo`, no typed integers and no paths, and its CBOR reader is crate-private, so this
//! is its own layer on [`super::cbor_io`].
//!
//! The composite request bodies (Read-Composite, Observe-Composite: names, no values) are
//! [`encode_paths_json`] / [`decode_paths_json`] and their CBOR twins.

use std::borrow::Cow;

use ciborium_ll::Header;

use super::cbor_io::{Reader, Writer};
use super::json_io::{self, Json, Labels};
use super::value::{self, Num, Raw};
use super::{Ctx, Format, FormatError, Limits, base64, invalid};
use crate::node::{Entry, Path, Value};

/// One SenML record as sent, before resolution.
#[derive(Debug, Default)]
struct Rec<'a> {
    bn: Option<Cow<'a, str>>,
    bt: Option<f64>,
    n: Option<Cow<'a, str>>,
    t: Option<f64>,
    value: Option<Raw<'a>>,
}

impl<'a> Rec<'a> {
    fn set_value(&mut self, raw: Raw<'a>) -> Result<(), FormatError> {
        if self.value.replace(raw).is_some() {
            return Err(invalid("a record with more than one value"));
        }
        Ok(())
    }

    fn is_base_only(&self) -> bool {
        self.n.is_none() && self.t.is_none() && self.value.is_none()
    }
}

/// Labels every record reader shares the meaning of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Label {
    Bn,
    Bt,
    N,
    T,
    V,
    Vs,
    Vb,
    Vd,
    Vlo,
    /// `s`, `bs`, `bv`: no LwM2M meaning.
    Refused,
    /// `bver`, `u`, `bu`, `ut` and unknown labels.
    Ignored,
}

fn json_label(k: &str) -> Result<Label, FormatError> {
    Ok(match k {
        "bn" => Label::Bn,
        "bt" => Label::Bt,
        "n" => Label::N,
        "t" => Label::T,
        "v" => Label::V,
        "vs" => Label::Vs,
        "vb" => Label::Vb,
        "vd" => Label::Vd,
        "vlo" => Label::Vlo,
        "s" | "bs" | "bv" => Label::Refused,
        k if k.ends_with('_') => return Err(must_understand()),
        _ => Label::Ignored,
    })
}

fn cbor_label(k: i64) -> Label {
    match k {
        -2 => Label::Bn,
        -3 => Label::Bt,
        0 => Label::N,
        6 => Label::T,
        2 => Label::V,
        3 => Label::Vs,
        4 => Label::Vb,
        8 => Label::Vd,
        5 | -5 | -6 => Label::Refused,
        _ => Label::Ignored,
    }
}

fn must_understand() -> FormatError {
    invalid("a must-understand label (ending in '_') this decoder does not know")
}

fn refused() -> FormatError {
    invalid("sums and base values (s, bs, bv) have no meaning in LwM2M")
}

fn wrong_kind(label: Label) -> FormatError {
    invalid(format!("label {label:?} holds the wrong kind of value"))
}

/// Tracks labels seen in one record (a label twice is invalid).
#[derive(Default)]
struct Seen(u16);

impl Seen {
    fn first(&mut self, label: Label) -> Result<(), FormatError> {
        if matches!(label, Label::Ignored) {
            return Ok(());
        }
        let bit = 1u16 << (label as u16);
        if self.0 & bit != 0 {
            return Err(invalid(format!(
                "label {label:?} appears twice in a record"
            )));
        }
        self.0 |= bit;
        Ok(())
    }
}

fn json_record(labels: Labels, limits: &Limits) -> Result<Rec<'static>, FormatError> {
    let mut rec = Rec::default();
    let mut seen = Seen::default();
    for (k, v) in labels.0 {
        let label = json_label(&k)?;
        seen.first(label)?;
        match (label, v) {
            (Label::Bn, Json::Str(s)) => rec.bn = Some(Cow::Owned(s)),
            (Label::N, Json::Str(s)) => rec.n = Some(Cow::Owned(s)),
            (Label::Bt, Json::Num(n)) => rec.bt = Some(num_f64(n)),
            (Label::T, Json::Num(n)) => rec.t = Some(num_f64(n)),
            (Label::V, Json::Num(n)) => rec.set_value(Raw::Num(n))?,
            (Label::Vs, Json::Str(s)) => rec.set_value(Raw::Text(Cow::Owned(s)))?,
            (Label::Vb, Json::Bool(b)) => rec.set_value(Raw::Bool(b))?,
            (Label::Vd, Json::Str(s)) => {
                if s.len() / 4 * 3 > limits.max_value_len {
                    return Err(FormatError::TooLarge("a value's length"));
                }
                let bytes = base64::decode(&s).ok_or_else(|| invalid("vd is not base64url"))?;
                rec.set_value(Raw::Bytes(Cow::Owned(bytes)))?;
            }
            (Label::Vlo, Json::Str(s)) => rec.set_value(Raw::Objlnk(Cow::Owned(s)))?,
            (Label::Refused, _) => return Err(refused()),
            (Label::Ignored, _) => {}
            (label, _) => return Err(wrong_kind(label)),
        }
    }
    Ok(rec)
}

fn num_f64(n: Num) -> f64 {
    match n {
        Num::Int(i) => i as f64,
        Num::Uint(u) => u as f64,
        Num::Float(f) => f,
    }
}

fn json_records(
    format: Format,
    body: &[u8],
    limits: &Limits,
) -> Result<Vec<Rec<'static>>, FormatError> {
    json_io::records(format, body, limits)?
        .into_iter()
        .map(|l| json_record(l, limits))
        .collect()
}

fn cbor_records<'a>(body: &'a [u8], limits: &Limits) -> Result<Vec<Rec<'a>>, FormatError> {
    let mut r = Reader::new(body, Format::SenmlCbor, *limits);
    let len = match r.header()? {
        Header::Array(len) => len,
        _ => return Err(invalid("SenML CBOR is an array of records")),
    };
    let mut out = Vec::new();
    loop {
        if len.is_some_and(|n| out.len() >= n) {
            break;
        }
        let h = r.header()?;
        if len.is_none() && h == Header::Break {
            break;
        }
        if out.len() >= limits.max_entries {
            return Err(FormatError::TooLarge("the number of entries"));
        }
        out.push(cbor_record(&mut r, h)?);
    }
    r.finish()?;
    Ok(out)
}

fn cbor_record<'a>(r: &mut Reader<'a>, h: Header) -> Result<Rec<'a>, FormatError> {
    let Header::Map(len) = h else {
        return Err(invalid("a SenML record is not a map"));
    };
    let mut rec = Rec::default();
    let mut seen = Seen::default();
    let mut i = 0usize;
    loop {
        if len.is_some_and(|n| i >= n) {
            return Ok(rec);
        }
        let kh = r.header()?;
        if len.is_none() && kh == Header::Break {
            return Ok(rec);
        }
        let label = match kh {
            Header::Positive(_) | Header::Negative(_) => match r.number(kh)? {
                Num::Int(k) => cbor_label(k),
                Num::Uint(k) => i64::try_from(k).map_or(Label::Ignored, cbor_label),
                Num::Float(_) => Label::Ignored,
            },
            Header::Text(l) => match &*r.text(l)? {
                "vlo" => Label::Vlo,
                k if k.ends_with('_') => return Err(must_understand()),
                _ => Label::Ignored,
            },
            Header::Break => return Err(r.malformed("an unexpected break")),
            _ => return Err(invalid("a SenML label is neither an integer nor text")),
        };
        seen.first(label)?;
        let vh = r.header()?;
        match label {
            Label::Ignored => r.skip(vh)?,
            Label::Refused => return Err(refused()),
            _ => {
                let raw = match vh {
                    Header::Tag(_) => return Err(invalid("a tagged SenML value")),
                    _ => r.value(vh)?,
                };
                match (label, raw) {
                    (Label::Bn, Raw::Text(s)) => rec.bn = Some(s),
                    (Label::N, Raw::Text(s)) => rec.n = Some(s),
                    (Label::Bt, Raw::Num(n)) => rec.bt = Some(num_f64(n)),
                    (Label::T, Raw::Num(n)) => rec.t = Some(num_f64(n)),
                    (Label::V, raw @ Raw::Num(_))
                    | (Label::Vs, raw @ Raw::Text(_))
                    | (Label::Vb, raw @ Raw::Bool(_))
                    | (Label::Vd, raw @ Raw::Bytes(_)) => rec.set_value(raw)?,
                    (Label::Vlo, Raw::Text(s)) => rec.set_value(Raw::Objlnk(s))?,
                    (label, _) => return Err(wrong_kind(label)),
                }
            }
        }
        i += 1;
    }
}

/// Resolves records to entries: names, types, times.
fn resolve(ctx: &Ctx<'_>, recs: Vec<Rec<'_>>) -> Result<Vec<Entry>, FormatError> {
    let mut out = Vec::new();
    let mut bn: Cow<'_, str> = Cow::Borrowed("");
    let mut bt: Option<f64> = None;
    for rec in recs {
        let base_only = rec.is_base_only();
        if let Some(b) = rec.bn {
            bn = b;
        }
        if let Some(t) = rec.bt {
            bt = Some(value::finite(t)?);
        }
        if base_only {
            continue;
        }
        let path = name(&bn, rec.n.as_deref())?;
        let raw = rec
            .value
            .ok_or_else(|| invalid(format!("the record for {path} has no value")))?;
        if path.len() < 3 {
            return Err(invalid(format!("{path} is not a resource path")));
        }
        ctx.room(&out)?;
        let ids = path.ids();
        let value =
            value::typed(raw, ctx.types.resource_type(ids[0], ids[2])).map_err(value::at(&path))?;
        let time = value::record_time(bt, rec.t, ctx.now)?;
        out.push(Entry { path, value, time });
    }
    Ok(out)
}

fn name(bn: &str, n: Option<&str>) -> Result<Path, FormatError> {
    let full = format!("{bn}{}", n.unwrap_or(""));
    full.parse::<Path>().map_err(|e| {
        invalid(format!(
            "the name \"{}\" is not a path: {}",
            full.escape_debug(),
            e.0
        ))
    })
}

fn paths(recs: Vec<Rec<'_>>) -> Result<Vec<Path>, FormatError> {
    let mut bn: Cow<'_, str> = Cow::Borrowed("");
    let mut out = Vec::with_capacity(recs.len());
    for rec in recs {
        if rec.value.is_some() {
            return Err(invalid("a composite request name carries a value"));
        }
        if let Some(b) = rec.bn {
            bn = b;
        }
        out.push(name(&bn, rec.n.as_deref())?);
    }
    Ok(out)
}

pub(super) fn decode_json(ctx: &Ctx<'_>, body: &[u8]) -> Result<Vec<Entry>, FormatError> {
    resolve(ctx, json_records(Format::SenmlJson, body, &ctx.limits)?)
}

pub(super) fn decode_cbor(ctx: &Ctx<'_>, body: &[u8]) -> Result<Vec<Entry>, FormatError> {
    resolve(ctx, cbor_records(body, &ctx.limits)?)
}

pub(super) fn decode_paths_json(body: &[u8], limits: &Limits) -> Result<Vec<Path>, FormatError> {
    paths(json_records(Format::SenmlJson, body, limits)?)
}

pub(super) fn decode_paths_cbor(body: &[u8], limits: &Limits) -> Result<Vec<Path>, FormatError> {
    paths(cbor_records(body, limits)?)
}

/// The names to write: `bn` once (the request path, or its children's prefix) and each `n`
/// relative to it; at the root every `n` is a full path.
fn names(base: &Path, entries: &[Entry]) -> (Option<String>, Vec<Option<String>>) {
    if base.is_empty() {
        return (
            None,
            entries.iter().map(|e| Some(e.path.to_string())).collect(),
        );
    }
    if entries.iter().all(|e| e.path == *base) {
        return (Some(base.to_string()), vec![None; entries.len()]);
    }
    let rel = entries
        .iter()
        .map(|e| {
            let ids = &e.path.ids()[base.len()..];
            Some(ids.iter().map(u16::to_string).collect::<Vec<_>>().join("/"))
        })
        .collect();
    (Some(format!("{base}/")), rel)
}

pub(super) fn encode_json(base: &Path, entries: &[Entry]) -> Result<Vec<u8>, FormatError> {
    let (bn, ns) = names(base, entries);
    let mut out = String::from("[");
    for (i, (e, n)) in entries.iter().zip(ns).enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('{');
        let mut fields = Vec::new();
        if i == 0 {
            if let Some(bn) = &bn {
                fields.push(field(|o| json_io::put_str(o, "bn", bn)));
            }
        }
        if let Some(n) = n {
            fields.push(field(|o| json_io::put_str(o, "n", &n)));
        }
        fields.push(field(|o| match &e.value {
            Value::Integer(x) | Value::Time(x) => json_io::put_num(o, "v", Num::Int(*x)),
            Value::Unsigned(x) => json_io::put_num(o, "v", Num::Uint(*x)),
            Value::Float(x) => json_io::put_num(o, "v", Num::Float(*x)),
            Value::String(s) | Value::Corelnk(s) => json_io::put_str(o, "vs", s),
            Value::Boolean(b) => json_io::put_bool(o, "vb", *b),
            Value::Opaque(b) => json_io::put_str(o, "vd", &base64::encode_url(b)),
            Value::Objlnk(a, b) => json_io::put_str(o, "vlo", &value::objlnk_text(*a, *b)),
        }));
        if let Some(t) = e.time {
            fields.push(field(|o| json_io::put_num(o, "t", Num::Float(t))));
        }
        out.push_str(&fields.join(","));
        out.push('}');
    }
    out.push(']');
    Ok(out.into_bytes())
}

fn field(f: impl FnOnce(&mut String)) -> String {
    let mut s = String::new();
    f(&mut s);
    s
}

pub(super) fn encode_cbor(base: &Path, entries: &[Entry]) -> Result<Vec<u8>, FormatError> {
    let (bn, ns) = names(base, entries);
    let mut w = Writer::default();
    w.array(entries.len());
    for (i, (e, n)) in entries.iter().zip(ns).enumerate() {
        let bn = bn.as_ref().filter(|_| i == 0);
        w.map(
            usize::from(bn.is_some())
                + usize::from(n.is_some())
                + 1
                + usize::from(e.time.is_some()),
        );
        if let Some(bn) = bn {
            w.int(-2);
            w.text(bn);
        }
        if let Some(n) = &n {
            w.uint(0);
            w.text(n);
        }
        match &e.value {
            Value::Integer(_) | Value::Time(_) | Value::Unsigned(_) | Value::Float(_) => {
                w.uint(2);
                match &e.value {
                    Value::Integer(x) | Value::Time(x) => w.int(*x),
                    Value::Unsigned(x) => w.uint(*x),
                    Value::Float(x) => w.float(*x),
                    _ => {}
                }
            }
            Value::String(s) | Value::Corelnk(s) => {
                w.uint(3);
                w.text(s);
            }
            Value::Boolean(b) => {
                w.uint(4);
                w.bool(*b);
            }
            Value::Opaque(b) => {
                w.uint(8);
                w.bytes(b);
            }
            Value::Objlnk(a, b) => {
                w.text("vlo");
                w.text(&value::objlnk_text(*a, *b));
            }
        }
        if let Some(t) = e.time {
            w.uint(6);
            w.float(t);
        }
    }
    Ok(w.into_bytes())
}

pub(super) fn encode_paths_json(paths: &[Path]) -> Vec<u8> {
    let records: Vec<String> = paths
        .iter()
        .map(|p| {
            field(|o| {
                o.push('{');
                json_io::put_str(o, "n", &p.to_string());
                o.push('}');
            })
        })
        .collect();
    format!("[{}]", records.join(",")).into_bytes()
}

pub(super) fn encode_paths_cbor(paths: &[Path]) -> Vec<u8> {
    let mut w = Writer::default();
    w.array(paths.len());
    for p in paths {
        w.map(1);
        w.uint(0);
        w.text(&p.to_string());
    }
    w.into_bytes()
}
