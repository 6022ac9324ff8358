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

use std::borrow::Cow;
use std::fmt;

use ciborium_ll::Header;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::payload::{ContentFormat, DecodeContext, DecodeError, Limits};
use crate::reading::{Record, epoch_seconds};

/// SenML times below 2^28 s are relative to "now" (RFC 8428 §4.5.3).
pub(crate) const RELATIVE_TIME_LIMIT: f64 = 268_435_456.0;

/// The SenML version RFC 8428 defines; newer packs must not be used (§4.4).
const SENML_VERSION: u64 = 10;

/// Deepest CBOR nesting walked while skipping an ignored value. SenML has no nesting of its own,
/// so this only bounds the work an extension label can cause.
const MAX_CBOR_DEPTH: usize = 32;

/// CBOR tag for decimal fractions, which RFC 8428 §6 allows for numbers.
const TAG_DECIMAL_FRACTION: u64 = 4;

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

/// Encodes resolved records as a SenML JSON pack (for simulators, tests and LwM2M Send).
///
/// Resolved records are valid SenML without base values. Times at or above 2^28 stay absolute
/// when decoded again; smaller ones would be read as relative to the receiver's "now". Non-finite
/// numbers have no JSON form and come out as `null`, which decoders reject.
pub fn encode_json(records: &[Record]) -> Vec<u8> {
    // Records are plain strings and numbers: serializing them into a Vec cannot fail.
    serde_json::to_vec(records).unwrap_or_default()
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
// Labels, raw records and resolution (shared by both encodings)
// ---------------------------------------------------------------------------------------------

/// The labels of RFC 8428 Table 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Label {
    Bver,
    Bn,
    Bt,
    Bu,
    Bv,
    Bs,
    N,
    U,
    V,
    Vs,
    Vb,
    Vd,
    S,
    T,
    Ut,
}

impl Label {
    fn from_json(key: &str) -> Option<Self> {
        Some(match key {
            "bver" => Label::Bver,
            "bn" => Label::Bn,
            "bt" => Label::Bt,
            "bu" => Label::Bu,
            "bv" => Label::Bv,
            "bs" => Label::Bs,
            "n" => Label::N,
            "u" => Label::U,
            "v" => Label::V,
            "vs" => Label::Vs,
            "vb" => Label::Vb,
            "vd" => Label::Vd,
            "s" => Label::S,
            "t" => Label::T,
            "ut" => Label::Ut,
            _ => return None,
        })
    }

    /// RFC 8428 Table 4.
    fn from_cbor(key: i64) -> Option<Self> {
        Some(match key {
            -1 => Label::Bver,
            -2 => Label::Bn,
            -3 => Label::Bt,
            -4 => Label::Bu,
            -5 => Label::Bv,
            -6 => Label::Bs,
            0 => Label::N,
            1 => Label::U,
            2 => Label::V,
            3 => Label::Vs,
            4 => Label::Vb,
            5 => Label::S,
            6 => Label::T,
            7 => Label::Ut,
            8 => Label::Vd,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Label::Bver => "bver",
            Label::Bn => "bn",
            Label::Bt => "bt",
            Label::Bu => "bu",
            Label::Bv => "bv",
            Label::Bs => "bs",
            Label::N => "n",
            Label::U => "u",
            Label::V => "v",
            Label::Vs => "vs",
            Label::Vb => "vb",
            Label::Vd => "vd",
            Label::S => "s",
            Label::T => "t",
            Label::Ut => "ut",
        }
    }
}

/// What a record key means to us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Known(Label),
    /// An extension we do not know: ignore it (RFC 8428 §4.4).
    Ignored,
    /// An extension we do not know that ends in `_`: the pack must be rejected.
    MustUnderstand,
}

/// Classifies a text key. In SenML CBOR text keys are always extensions (RFC 8428 §6).
fn text_key(key: &str, json: bool) -> Key {
    let known = if json { Label::from_json(key) } else { None };
    match known {
        Some(label) => Key::Known(label),
        None if key.ends_with('_') => Key::MustUnderstand,
        None => Key::Ignored,
    }
}

fn must_understand(index: usize) -> DecodeError {
    DecodeError::Invalid(format!(
        "record {index}: carries a must-understand label (ending in '_') that is not supported"
    ))
}

/// A scalar as either encoding delivers it, before the label decides what it must be.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value<'a> {
    Uint(u64),
    /// A negative integer.
    Int(i64),
    Float(f64),
    Text(Cow<'a, str>),
    Bytes(Cow<'a, [u8]>),
    Bool(bool),
    Null,
    /// An array, object or map (already skipped).
    Nested,
    /// A CBOR tag or simple value we do not interpret (already skipped).
    Unsupported,
}

impl Value<'_> {
    /// For error messages.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Value::Uint(_) | Value::Int(_) | Value::Float(_) => "a number",
            Value::Text(_) => "a text string",
            Value::Bytes(_) => "a byte string",
            Value::Bool(_) => "a boolean",
            Value::Null => "null",
            Value::Nested => "an array or map",
            Value::Unsupported => "an unsupported CBOR tag or simple value",
        }
    }

    /// The numeric value if this is a number; CBOR floats may be non-finite.
    pub(crate) fn number(&self) -> Option<f64> {
        match *self {
            Value::Uint(x) => Some(x as f64),
            Value::Int(x) => Some(x as f64),
            Value::Float(x) => Some(x),
            _ => None,
        }
    }
}

/// A data value as sent: base64url text (JSON) or raw bytes (CBOR).
#[derive(Debug)]
enum Data<'a> {
    Base64(Cow<'a, str>),
    Raw(Cow<'a, [u8]>),
}

/// One record as sent, fields type-checked but not resolved.
#[derive(Debug, Default)]
struct RawRecord<'a> {
    bver: Option<u64>,
    bn: Option<Cow<'a, str>>,
    bt: Option<f64>,
    bu: Option<Cow<'a, str>>,
    bv: Option<f64>,
    bs: Option<f64>,
    n: Option<Cow<'a, str>>,
    u: Option<Cow<'a, str>>,
    v: Option<f64>,
    vs: Option<Cow<'a, str>>,
    vb: Option<bool>,
    vd: Option<Data<'a>>,
    s: Option<f64>,
    t: Option<f64>,
    ut: Option<f64>,
}

impl<'a> RawRecord<'a> {
    fn set(&mut self, label: Label, value: Value<'a>, index: usize) -> Result<(), DecodeError> {
        let f = Field { label, index };
        match label {
            Label::Bver => put(&mut self.bver, f.version(value)?, f),
            Label::Bn => put(&mut self.bn, f.text(value)?, f),
            Label::Bt => put(&mut self.bt, f.number(value)?, f),
            Label::Bu => put(&mut self.bu, f.text(value)?, f),
            Label::Bv => put(&mut self.bv, f.number(value)?, f),
            Label::Bs => put(&mut self.bs, f.number(value)?, f),
            Label::N => put(&mut self.n, f.text(value)?, f),
            Label::U => put(&mut self.u, f.text(value)?, f),
            Label::V => put(&mut self.v, f.number(value)?, f),
            Label::Vs => put(&mut self.vs, f.text(value)?, f),
            Label::Vb => put(&mut self.vb, f.boolean(value)?, f),
            Label::Vd => put(&mut self.vd, f.data(value)?, f),
            Label::S => put(&mut self.s, f.number(value)?, f),
            Label::T => put(&mut self.t, f.number(value)?, f),
            Label::Ut => put(&mut self.ut, f.number(value)?, f),
        }
    }

    fn has_base_fields(&self) -> bool {
        self.bver.is_some()
            || self.bn.is_some()
            || self.bt.is_some()
            || self.bu.is_some()
            || self.bv.is_some()
            || self.bs.is_some()
    }

    fn has_regular_fields(&self) -> bool {
        self.n.is_some()
            || self.u.is_some()
            || self.v.is_some()
            || self.vs.is_some()
            || self.vb.is_some()
            || self.vd.is_some()
            || self.s.is_some()
            || self.t.is_some()
            || self.ut.is_some()
    }
}

fn put<T>(slot: &mut Option<T>, value: T, f: Field) -> Result<(), DecodeError> {
    if slot.is_some() {
        return Err(DecodeError::Invalid(format!(
            "record {}: \"{}\" appears more than once",
            f.index,
            f.label.as_str()
        )));
    }
    *slot = Some(value);
    Ok(())
}

/// The label being read, for type checks and their messages.
#[derive(Debug, Clone, Copy)]
struct Field {
    label: Label,
    index: usize,
}

impl Field {
    fn wrong_type(self, expected: &str, found: &Value<'_>) -> DecodeError {
        DecodeError::Invalid(format!(
            "record {}: \"{}\" must be {expected}, found {}",
            self.index,
            self.label.as_str(),
            found.kind()
        ))
    }

    fn number(self, value: Value<'_>) -> Result<f64, DecodeError> {
        match value.number() {
            Some(x) if x.is_finite() => Ok(x),
            Some(_) => Err(DecodeError::Invalid(format!(
                "record {}: \"{}\" is not a finite number",
                self.index,
                self.label.as_str()
            ))),
            None => Err(self.wrong_type("a number", &value)),
        }
    }

    fn text<'a>(self, value: Value<'a>) -> Result<Cow<'a, str>, DecodeError> {
        match value {
            Value::Text(s) => Ok(s),
            other => Err(self.wrong_type("a text string", &other)),
        }
    }

    fn boolean(self, value: Value<'_>) -> Result<bool, DecodeError> {
        match value {
            Value::Bool(b) => Ok(b),
            other => Err(self.wrong_type("a boolean", &other)),
        }
    }

    fn version(self, value: Value<'_>) -> Result<u64, DecodeError> {
        match value {
            Value::Uint(v) => Ok(v),
            other => Err(self.wrong_type("an unsigned integer", &other)),
        }
    }

    fn data<'a>(self, value: Value<'a>) -> Result<Data<'a>, DecodeError> {
        match value {
            Value::Text(s) => Ok(Data::Base64(s)),
            Value::Bytes(b) => Ok(Data::Raw(b)),
            other => Err(self.wrong_type("base64url text or a byte string", &other)),
        }
    }
}

/// Applies base values to records as they arrive (RFC 8428 §4.6) and collects the result.
#[derive(Debug)]
struct Resolver<'a> {
    now: f64,
    limits: Limits,
    bver: Option<u64>,
    bn: Cow<'a, str>,
    bt: Option<f64>,
    bu: Option<Cow<'a, str>>,
    bv: Option<f64>,
    bs: Option<f64>,
    records: Vec<Record>,
}

impl<'a> Resolver<'a> {
    /// `expected` is how many records the pack seems to hold: room is made for that many, up to
    /// the record limit, so the output is allocated once.
    fn new(ctx: &DecodeContext<'_>, expected: usize) -> Self {
        Resolver {
            now: epoch_seconds(ctx.now),
            limits: ctx.limits,
            bver: None,
            bn: Cow::Borrowed(""),
            bt: None,
            bu: None,
            bv: None,
            bs: None,
            records: Vec::with_capacity(expected.min(ctx.limits.max_records)),
        }
    }

    /// Whether the record at `index` would exceed [`Limits::max_records`].
    fn limit_reached(&self, index: usize) -> bool {
        index >= self.limits.max_records
    }

    fn too_many(&self) -> DecodeError {
        DecodeError::TooManyRecords(self.limits.max_records)
    }

    fn push(&mut self, raw: RawRecord<'a>, index: usize) -> Result<(), DecodeError> {
        if let Some(version) = raw.bver {
            if version > SENML_VERSION {
                return Err(DecodeError::Invalid(format!(
                    "record {index}: SenML version {version} is newer than the supported \
                     version {SENML_VERSION}"
                )));
            }
            if self.bver.is_some_and(|earlier| earlier != version) {
                return Err(DecodeError::Invalid(format!(
                    "record {index}: \"bver\" differs from an earlier record; a pack has one version"
                )));
            }
            self.bver = Some(version);
        }
        // Base fields apply to the record that carries them and to every record after it.
        let base_only = !raw.has_regular_fields() && raw.has_base_fields();
        if let Some(bn) = raw.bn {
            self.bn = bn;
        }
        if let Some(bu) = raw.bu {
            self.bu = Some(bu);
        }
        self.bt = raw.bt.or(self.bt);
        self.bv = raw.bv.or(self.bv);
        self.bs = raw.bs.or(self.bs);
        if base_only {
            return Ok(());
        }

        let values = [
            raw.v.is_some(),
            raw.vs.is_some(),
            raw.vb.is_some(),
            raw.vd.is_some(),
        ]
        .into_iter()
        .filter(|present| *present)
        .count();
        if values > 1 {
            return Err(DecodeError::Invalid(format!(
                "record {index}: has more than one of \"v\", \"vs\", \"vb\", \"vd\""
            )));
        }
        let s = add_base(self.bs, raw.s);
        if values == 0 && s.is_none() {
            return Err(DecodeError::Invalid(format!(
                "record {index}: has no value (\"v\", \"vs\", \"vb\" or \"vd\") and no sum"
            )));
        }

        let n = self.name(raw.n.as_deref(), index)?;
        let u = match (raw.u, &self.bu) {
            (Some(u), _) => Some(self.unit(u)?),
            (None, Some(bu)) => Some(self.unit(Cow::Borrowed(bu.as_ref()))?),
            (None, None) => None,
        };
        let v = match raw.v {
            Some(v) => Some(finite(self.bv.map_or(v, |bv| bv + v), "v", index)?),
            None => None,
        };
        let vs = match raw.vs {
            Some(vs) if vs.len() > self.limits.max_value_len => {
                return Err(DecodeError::TooLong("string value"));
            }
            Some(vs) => Some(vs.into_owned()),
            None => None,
        };
        let vd = match raw.vd {
            Some(data) => Some(self.data(data, index)?),
            None => None,
        };
        let s = match s {
            Some(s) => Some(finite(s, "s", index)?),
            None => None,
        };
        let t = finite(add_base(self.bt, raw.t).unwrap_or(0.0), "t", index)?;
        if raw.ut.is_some_and(|ut| ut < 0.0) {
            return Err(DecodeError::Invalid(format!(
                "record {index}: \"ut\" is negative"
            )));
        }
        self.records.push(Record {
            n,
            u,
            v,
            vs,
            vb: raw.vb,
            vd,
            s,
            t: resolve_time(t, self.now),
            ut: raw.ut,
        });
        Ok(())
    }

    /// Base name + name, checked against RFC 8428 §4.5.1 and the length limit.
    fn name(&self, n: Option<&str>, index: usize) -> Result<String, DecodeError> {
        let n = n.unwrap_or("");
        let len = self.bn.len().saturating_add(n.len());
        if len > self.limits.max_name_len {
            return Err(DecodeError::TooLong("record name"));
        }
        let mut name = String::with_capacity(len);
        name.push_str(&self.bn);
        name.push_str(n);
        check_name(&name, &self.limits, &format_args!("record {index}"))?;
        Ok(name)
    }

    fn unit(&self, u: Cow<'_, str>) -> Result<String, DecodeError> {
        // Units are registry names of a few characters; the name limit is a generous bound.
        if u.len() > self.limits.max_name_len {
            return Err(DecodeError::TooLong("unit"));
        }
        Ok(u.into_owned())
    }

    fn data(&self, data: Data<'_>, index: usize) -> Result<String, DecodeError> {
        match data {
            Data::Raw(bytes) => {
                if bytes.len() > self.limits.max_value_len {
                    return Err(DecodeError::TooLong("data value"));
                }
                Ok(base64url_encode(&bytes))
            }
            Data::Base64(text) => {
                let trimmed = text.trim_end_matches('=');
                let decoded_len = match base64url_decoded_len(trimmed) {
                    Some(len) if text.len() - trimmed.len() <= 2 => len,
                    _ => {
                        return Err(DecodeError::Invalid(format!(
                            "record {index}: \"vd\" is not base64url (RFC 4648 §5)"
                        )));
                    }
                };
                if decoded_len > self.limits.max_value_len {
                    return Err(DecodeError::TooLong("data value"));
                }
                if trimmed.len() == text.len() {
                    Ok(text.into_owned())
                } else {
                    Ok(trimmed.to_owned())
                }
            }
        }
    }

    fn finish(self) -> Result<Vec<Record>, DecodeError> {
        if self.records.is_empty() {
            return Err(DecodeError::Empty);
        }
        Ok(self.records)
    }
}

/// Base + field, where a missing one counts as zero and both missing means absent. Adding only
/// what is present keeps values exact (and the sign of a lone `-0.0`).
fn add_base(base: Option<f64>, value: Option<f64>) -> Option<f64> {
    match (base, value) {
        (Some(b), Some(v)) => Some(b + v),
        (Some(x), None) | (None, Some(x)) => Some(x),
        (None, None) => None,
    }
}

fn finite(x: f64, label: &str, index: usize) -> Result<f64, DecodeError> {
    if x.is_finite() {
        Ok(x)
    } else {
        Err(DecodeError::Invalid(format!(
            "record {index}: resolved \"{label}\" is not a finite number"
        )))
    }
}

/// RFC 8428 §4.5.3: times below 2^28 are seconds relative to now (0 = now); others are absolute.
pub(crate) fn resolve_time(t: f64, now: f64) -> f64 {
    if t < RELATIVE_TIME_LIMIT { now + t } else { t }
}

/// Checks a resolved record name: non-empty, within the length limit, and RFC 8428 §4.5.1's
/// character rules. `what` names the record in the message (never the name itself: it is device
/// input and could be anything).
pub(crate) fn check_name(
    name: &str,
    limits: &Limits,
    what: &dyn fmt::Display,
) -> Result<(), DecodeError> {
    if name.is_empty() {
        return Err(DecodeError::Invalid(format!("{what}: has no name")));
    }
    if name.len() > limits.max_name_len {
        return Err(DecodeError::TooLong("record name"));
    }
    if !is_senml_name(name) {
        return Err(DecodeError::Invalid(format!(
            "{what}: name must use only A-Z a-z 0-9 - : . / _ and start with a letter or digit \
             (RFC 8428 §4.5.1)"
        )));
    }
    Ok(())
}

/// RFC 8428 §4.5.1: `[A-Za-z0-9][A-Za-z0-9:./_-]*`.
pub(crate) fn is_senml_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.iter().all(|b| NAME_CHAR[usize::from(*b)])
}

/// The characters RFC 8428 §4.5.1 allows in a name, as a table: names are checked once per
/// record on the ingest path.
const NAME_CHAR: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || matches!(c, b'-' | b':' | b'.' | b'/' | b'_');
        b += 1;
    }
    table
};

/// JSON whitespace only (or nothing at all).
pub(crate) fn is_blank(body: &[u8]) -> bool {
    body.iter()
        .all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
}

// ---------------------------------------------------------------------------------------------
// base64url (RFC 4648 §5, no padding), the form SenML uses for data values
// ---------------------------------------------------------------------------------------------

const BASE64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Encodes bytes as base64url without padding.
pub(crate) fn base64url_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b0 = u32::from(chunk.first().copied().unwrap_or(0));
        let b1 = u32::from(chunk.get(1).copied().unwrap_or(0));
        let b2 = u32::from(chunk.get(2).copied().unwrap_or(0));
        let n = (b0 << 16) | (b1 << 8) | b2;
        for i in 0..=chunk.len() {
            let sextet = (n >> (18 - 6 * i)) & 63;
            out.push(char::from(BASE64URL[sextet as usize]));
        }
    }
    out
}

fn base64url_sextet(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'-' => Some(62),
        b'_' => Some(63),
        _ => None,
    }
}

/// The decoded length of unpadded base64url text, or `None` if it is not base64url.
///
/// Only the canonical encoding is accepted: the bits left over in the last character must be
/// zero (RFC 4648 §3.5 lets decoders require it). Otherwise "Zg" and "Zh" would both mean "f",
/// and the same bytes could reach the backend as different text depending on the encoding the
/// device used.
fn base64url_decoded_len(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    if !bytes.iter().all(|c| base64url_sextet(*c).is_some()) {
        return None;
    }
    let spare_bits_mask = match bytes.len() % 4 {
        0 => 0,
        1 => return None,
        2 => 0b1111,
        _ => 0b11,
    };
    let last = bytes.last().and_then(|c| base64url_sextet(*c)).unwrap_or(0);
    if last & spare_bits_mask != 0 {
        return None;
    }
    Some(bytes.len() / 4 * 3 + (bytes.len() % 4).saturating_sub(1))
}

/// Decodes unpadded base64url text; `None` if it is not base64url.
pub(crate) fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    let len = base64url_decoded_len(text)?;
    let mut out = Vec::with_capacity(len);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in text.bytes() {
        acc = (acc << 6) | u32::from(base64url_sextet(c)?);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(((acc >> bits) & 0xff) as u8);
        }
    }
    Some(out)
}

// ---------------------------------------------------------------------------------------------
// SenML JSON and plain JSON: serde visitors over serde_json's borrowing readers
// ---------------------------------------------------------------------------------------------
//
// Errors that are about the reading rather than the JSON syntax are stored in a `failure` slot
// and surface as that `DecodeError`; serde only carries a placeholder. Every visitor reads with
// `deserialize_any` and answers every JSON type itself, so no serde "invalid type" message (which
// would quote the payload) is ever produced.

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

// ---------------------------------------------------------------------------------------------
// SenML CBOR and plain CBOR: a pull reader over the input slice
// ---------------------------------------------------------------------------------------------

/// A container being skipped by [`CborReader::skip`].
#[derive(Debug, Clone, Copy)]
enum Open {
    /// Definite length: items still expected (a map counts keys and values).
    Items(usize),
    /// Indefinite-length array: ends at a break.
    IndefiniteArray,
    /// Indefinite-length map: ends at a break, which must not follow a lone key.
    IndefiniteMap { odd: bool },
}

/// Reads CBOR items straight from the input: ciborium-ll decodes each item header (including
/// half-precision floats), and string contents are borrowed from the slice. Nothing recurses.
#[derive(Debug)]
pub(crate) struct CborReader<'a> {
    body: &'a [u8],
    pos: usize,
    format: ContentFormat,
}

impl<'a> CborReader<'a> {
    pub(crate) fn new(body: &'a [u8], format: ContentFormat) -> Self {
        CborReader {
            body,
            pos: 0,
            format,
        }
    }

    fn malformed(&self, what: &str) -> DecodeError {
        DecodeError::Malformed {
            format: self.format,
            detail: format!("{what} at byte {}", self.pos),
        }
    }

    pub(crate) fn header(&mut self) -> Result<Header, DecodeError> {
        let rest = self.body.get(self.pos..).unwrap_or_default();
        let mut decoder = ciborium_ll::Decoder::from(rest);
        match decoder.pull() {
            Ok(header) => {
                self.pos += decoder.offset();
                Ok(header)
            }
            Err(ciborium_ll::Error::Io(_)) => Err(self.malformed("unexpected end of input")),
            Err(ciborium_ll::Error::Syntax(_)) => Err(self.malformed("invalid CBOR item")),
        }
    }

    /// The next header after any tags (e.g. the self-described CBOR tag 55799).
    pub(crate) fn header_skipping_tags(&mut self) -> Result<Header, DecodeError> {
        loop {
            match self.header()? {
                Header::Tag(_) => continue,
                header => return Ok(header),
            }
        }
    }

    /// Fails unless the whole input has been read.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if self.pos < self.body.len() {
            return Err(self.malformed("trailing bytes"));
        }
        Ok(())
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        let bytes = self
            .pos
            .checked_add(len)
            .and_then(|end| self.body.get(self.pos..end))
            .ok_or_else(|| self.malformed("string runs past the end of input"))?;
        self.pos += len;
        Ok(bytes)
    }

    fn utf8(&self, bytes: &'a [u8]) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(bytes).map_err(|_| self.malformed("text string is not UTF-8"))
    }

    pub(crate) fn text(&mut self, len: Option<usize>) -> Result<Cow<'a, str>, DecodeError> {
        if let Some(len) = len {
            let bytes = self.take(len)?;
            return self.utf8(bytes).map(Cow::Borrowed);
        }
        // Indefinite length: definite-length text chunks, each valid UTF-8 (RFC 8949 §3.2.3).
        let mut text = String::new();
        loop {
            match self.header()? {
                Header::Break => return Ok(Cow::Owned(text)),
                Header::Text(Some(len)) => {
                    let bytes = self.take(len)?;
                    text.push_str(self.utf8(bytes)?);
                }
                _ => return Err(self.malformed("bad chunk in an indefinite-length text string")),
            }
        }
    }

    fn bytes(&mut self, len: Option<usize>) -> Result<Cow<'a, [u8]>, DecodeError> {
        if let Some(len) = len {
            return self.take(len).map(Cow::Borrowed);
        }
        let mut bytes = Vec::new();
        loop {
            match self.header()? {
                Header::Break => return Ok(Cow::Owned(bytes)),
                Header::Bytes(Some(len)) => bytes.extend_from_slice(self.take(len)?),
                _ => return Err(self.malformed("bad chunk in an indefinite-length byte string")),
            }
        }
    }

    /// Skips the item that starts with `first`, iteratively, up to [`MAX_CBOR_DEPTH`] levels.
    fn skip(&mut self, first: Header) -> Result<(), DecodeError> {
        let mut open: Vec<Open> = Vec::new();
        // A tag and the item it tags are one item: a tag must be followed by an item, not a
        // break.
        let mut tagged = false;
        let mut header = first;
        loop {
            if tagged && matches!(header, Header::Break) {
                return Err(self.malformed("tag without content"));
            }
            tagged = false;
            let item_done = match header {
                Header::Tag(_) => {
                    tagged = true;
                    false
                }
                Header::Bytes(len) => {
                    self.bytes(len)?;
                    true
                }
                Header::Text(len) => {
                    self.text(len)?;
                    true
                }
                Header::Array(Some(0)) | Header::Map(Some(0)) => true,
                Header::Array(len) | Header::Map(len) => {
                    if open.len() >= MAX_CBOR_DEPTH {
                        return Err(self.malformed("nesting deeper than 32 levels"));
                    }
                    open.push(match (header, len) {
                        (Header::Map(_), Some(n)) => Open::Items(
                            n.checked_mul(2)
                                .ok_or_else(|| self.malformed("map too large"))?,
                        ),
                        (Header::Map(_), None) => Open::IndefiniteMap { odd: false },
                        (_, Some(n)) => Open::Items(n),
                        (_, None) => Open::IndefiniteArray,
                    });
                    false
                }
                Header::Break => match open.pop() {
                    Some(Open::IndefiniteArray | Open::IndefiniteMap { odd: false }) => true,
                    Some(Open::IndefiniteMap { odd: true }) => {
                        return Err(self.malformed("map key without a value"));
                    }
                    _ => return Err(self.malformed("unexpected break")),
                },
                Header::Positive(_) | Header::Negative(_) | Header::Float(_) => true,
                Header::Simple(_) => true,
            };
            if item_done {
                // Count the item in its container; a full container is an item of its parent.
                loop {
                    match open.last_mut() {
                        None => return Ok(()),
                        Some(Open::Items(left)) => {
                            *left = left.saturating_sub(1);
                            if *left == 0 {
                                open.pop();
                                continue;
                            }
                            break;
                        }
                        Some(Open::IndefiniteMap { odd }) => {
                            *odd = !*odd;
                            break;
                        }
                        Some(Open::IndefiniteArray) => break,
                    }
                }
            }
            header = self.header()?;
        }
    }

    /// Reads the value that starts with `first`. Containers and unknown tags are skipped and
    /// reported as such, so the label's type check can name what it found.
    pub(crate) fn value(&mut self, first: Header) -> Result<Value<'a>, DecodeError> {
        Ok(match first {
            Header::Positive(x) => Value::Uint(x),
            Header::Negative(x) => match i64::try_from(x) {
                Ok(x) => Value::Int(-1 - x),
                Err(_) => Value::Float(-1.0 - x as f64),
            },
            Header::Float(x) => Value::Float(x),
            Header::Simple(ciborium_ll::simple::FALSE) => Value::Bool(false),
            Header::Simple(ciborium_ll::simple::TRUE) => Value::Bool(true),
            Header::Simple(ciborium_ll::simple::NULL | ciborium_ll::simple::UNDEFINED) => {
                Value::Null
            }
            Header::Simple(_) => Value::Unsupported,
            Header::Text(len) => Value::Text(self.text(len)?),
            Header::Bytes(len) => Value::Bytes(self.bytes(len)?),
            Header::Array(_) | Header::Map(_) => {
                self.skip(first)?;
                Value::Nested
            }
            Header::Tag(TAG_DECIMAL_FRACTION) => self.decimal_fraction()?,
            Header::Tag(_) => {
                let tagged = self.header()?;
                self.skip(tagged)?;
                Value::Unsupported
            }
            Header::Break => return Err(self.malformed("unexpected break")),
        })
    }

    /// A decimal fraction (RFC 8949 §3.4.4): `[exponent, mantissa]`, value = mantissa × 10^exponent.
    fn decimal_fraction(&mut self) -> Result<Value<'a>, DecodeError> {
        let invalid = || {
            DecodeError::Invalid(
                "a decimal fraction (CBOR tag 4) must be [exponent, mantissa] with integer parts"
                    .into(),
            )
        };
        if !matches!(self.header()?, Header::Array(Some(2))) {
            return Err(invalid());
        }
        let exponent = cbor_integer(self.header()?).ok_or_else(invalid)?;
        let mantissa = cbor_integer(self.header()?).ok_or_else(invalid)?;
        // The decimal text is parsed with correct rounding; huge exponents give 0 or infinity,
        // and the label's check rejects the latter.
        let x: f64 = format!("{mantissa}e{exponent}")
            .parse()
            .map_err(|_| invalid())?;
        Ok(Value::Float(x))
    }
}

fn cbor_integer(header: Header) -> Option<i128> {
    match header {
        Header::Positive(x) => Some(i128::from(x)),
        Header::Negative(x) => Some(-1 - i128::from(x)),
        _ => None,
    }
}

/// For error messages.
pub(crate) fn header_kind(header: &Header) -> &'static str {
    match header {
        Header::Positive(_) | Header::Negative(_) => "an integer",
        Header::Float(_) => "a float",
        Header::Simple(_) => "a simple value",
        Header::Tag(_) => "a tag",
        Header::Break => "a break",
        Header::Bytes(_) => "a byte string",
        Header::Text(_) => "a text string",
        Header::Array(_) => "an array",
        Header::Map(_) => "a map",
    }
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
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    const NOW: f64 = 1_700_000_000.25;

    fn ctx() -> DecodeContext<'static> {
        DecodeContext {
            now: UNIX_EPOCH + Duration::from_secs_f64(NOW),
            default_name: None,
            limits: Limits::default(),
        }
    }

    fn json(text: &str) -> Result<Vec<Record>, DecodeError> {
        decode_json(text.as_bytes(), &ctx())
    }

    fn hex(text: &str) -> Vec<u8> {
        let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
        digits
            .chunks(2)
            .map(|pair| {
                let s = std::str::from_utf8(pair).expect("hex digits are ASCII");
                u8::from_str_radix(s, 16).expect("two hex digits")
            })
            .collect()
    }

    fn rec(n: &str, u: Option<&str>, v: f64, t: f64) -> Record {
        Record {
            n: n.into(),
            u: u.map(Into::into),
            v: Some(v),
            t,
            ..Record::default()
        }
    }

    #[test]
    fn rfc8428_single_datapoint_is_stamped_now() {
        let records = json(r#"[{"n":"urn:dev:ow:10e2073a01080063","u":"Cel","v":23.1}]"#)
            .expect("RFC 8428 §5.1.1 decodes");
        assert_eq!(
            records,
            vec![rec("urn:dev:ow:10e2073a01080063", Some("Cel"), 23.1, NOW)]
        );
    }

    #[test]
    fn rfc8428_multiple_datapoints_concatenate_base_name() {
        let records = json(
            r#"[{"bn":"urn:dev:ow:10e2073a01080063:","n":"voltage","u":"V","v":120.1},
                {"n":"current","u":"A","v":1.2}]"#,
        )
        .expect("RFC 8428 §5.1.2 decodes");
        assert_eq!(
            records,
            vec![
                rec("urn:dev:ow:10e2073a01080063:voltage", Some("V"), 120.1, NOW),
                rec("urn:dev:ow:10e2073a01080063:current", Some("A"), 1.2, NOW),
            ]
        );
    }

    const RFC_5_1_2_TIMED: &str = r#"[
        {"bn":"urn:dev:ow:10e2073a0108006:","bt":1.276020076001e+09,
         "bu":"A","bver":5,
         "n":"voltage","u":"V","v":120.1},
        {"n":"current","t":-5,"v":1.2},
        {"n":"current","t":-4,"v":1.3},
        {"n":"current","t":-3,"v":1.4},
        {"n":"current","t":-2,"v":1.5},
        {"n":"current","t":-1,"v":1.6},
        {"n":"current","v":1.7}
    ]"#;

    fn rfc_5_1_2_timed_resolved() -> Vec<Record> {
        let bt = 1.276020076001e9;
        let current = "urn:dev:ow:10e2073a0108006:current";
        vec![
            rec("urn:dev:ow:10e2073a0108006:voltage", Some("V"), 120.1, bt),
            rec(current, Some("A"), 1.2, bt - 5.0),
            rec(current, Some("A"), 1.3, bt - 4.0),
            rec(current, Some("A"), 1.4, bt - 3.0),
            rec(current, Some("A"), 1.5, bt - 2.0),
            rec(current, Some("A"), 1.6, bt - 1.0),
            rec(current, Some("A"), 1.7, bt),
        ]
    }

    #[test]
    fn rfc8428_base_time_and_base_unit_apply_to_following_records() {
        assert_eq!(
            json(RFC_5_1_2_TIMED).expect("RFC 8428 §5.1.2 decodes"),
            rfc_5_1_2_timed_resolved()
        );
    }

    const RFC_5_1_3: &str = r#"[
        {"bn":"urn:dev:ow:10e2073a01080063","bt":1.320067464e+09,
         "bu":"%RH","v":20},
        {"u":"lon","v":24.30621},
        {"u":"lat","v":60.07965},
        {"t":60,"v":20.3},
        {"u":"lon","t":60,"v":24.30622},
        {"u":"lat","t":60,"v":60.07965},
        {"t":120,"v":20.7},
        {"u":"lon","t":120,"v":24.30623},
        {"u":"lat","t":120,"v":60.07966},
        {"u":"%EL","t":150,"v":98},
        {"t":180,"v":21.2},
        {"u":"lon","t":180,"v":24.30628},
        {"u":"lat","t":180,"v":60.07967}
    ]"#;

    const RFC_5_1_4: &str = r#"[
        {"n":"urn:dev:ow:10e2073a01080063","u":"%RH","t":1.320067464e+09,"v":20},
        {"n":"urn:dev:ow:10e2073a01080063","u":"lon","t":1.320067464e+09,"v":24.30621},
        {"n":"urn:dev:ow:10e2073a01080063","u":"lat","t":1.320067464e+09,"v":60.07965},
        {"n":"urn:dev:ow:10e2073a01080063","u":"%RH","t":1.320067524e+09,"v":20.3},
        {"n":"urn:dev:ow:10e2073a01080063","u":"lon","t":1.320067524e+09,"v":24.30622},
        {"n":"urn:dev:ow:10e2073a01080063","u":"lat","t":1.320067524e+09,"v":60.07965},
        {"n":"urn:dev:ow:10e2073a01080063","u":"%RH","t":1.320067584e+09,"v":20.7},
        {"n":"urn:dev:ow:10e2073a01080063","u":"lon","t":1.320067584e+09,"v":24.30623},
        {"n":"urn:dev:ow:10e2073a01080063","u":"lat","t":1.320067584e+09,"v":60.07966},
        {"n":"urn:dev:ow:10e2073a01080063","u":"%EL","t":1.320067614e+09,"v":98},
        {"n":"urn:dev:ow:10e2073a01080063","u":"%RH","t":1.320067644e+09,"v":21.2},
        {"n":"urn:dev:ow:10e2073a01080063","u":"lon","t":1.320067644e+09,"v":24.30628},
        {"n":"urn:dev:ow:10e2073a01080063","u":"lat","t":1.320067644e+09,"v":60.07967}
    ]"#;

    #[test]
    fn rfc8428_multiple_measurements_resolve_to_the_rfc_resolved_form() {
        let resolved = json(RFC_5_1_4).expect("RFC 8428 §5.1.4 decodes");
        let packed = json(RFC_5_1_3).expect("RFC 8428 §5.1.3 decodes");
        assert_eq!(packed, resolved);
        assert_eq!(packed.len(), 13);
        let name = "urn:dev:ow:10e2073a01080063";
        assert_eq!(packed[0], rec(name, Some("%RH"), 20.0, 1_320_067_464.0));
        assert_eq!(packed[9], rec(name, Some("%EL"), 98.0, 1_320_067_614.0));
        assert_eq!(
            packed[12],
            rec(name, Some("lat"), 60.07967, 1_320_067_644.0)
        );
    }

    #[test]
    fn rfc8428_multiple_data_types_keep_their_kind() {
        let records = json(
            r#"[{"bn":"urn:dev:ow:10e2073a01080063:","n":"temp","u":"Cel","v":23.1},
                {"n":"label","vs":"Machine Room"},
                {"n":"open","vb":false},
                {"n":"nfv-reader","vd":"aGkgCg"}]"#,
        )
        .expect("RFC 8428 §5.1.5 decodes");
        assert_eq!(records[1].vs.as_deref(), Some("Machine Room"));
        assert_eq!(records[2].vb, Some(false));
        assert_eq!(records[3].vd.as_deref(), Some("aGkgCg"));
        assert!(records[1..].iter().all(|r| r.v.is_none() && r.u.is_none()));
    }

    #[test]
    fn rfc8428_collection_switches_base_name_but_keeps_base_time() {
        let records = json(
            r#"[{"bn":"2001:db8::2/","bt":1.320078429e+09,"n":"temperature","u":"Cel","v":25.2},
                {"n":"humidity","u":"%RH","v":30},
                {"bn":"2001:db8::1/","n":"temperature","u":"Cel","v":12.3},
                {"n":"humidity","u":"%RH","v":67}]"#,
        )
        .expect("RFC 8428 §5.1.6 decodes");
        let names: Vec<&str> = records.iter().map(|r| r.n.as_str()).collect();
        assert_eq!(
            names,
            [
                "2001:db8::2/temperature",
                "2001:db8::2/humidity",
                "2001:db8::1/temperature",
                "2001:db8::1/humidity"
            ]
        );
        assert!(records.iter().all(|r| r.t == 1_320_078_429.0));
    }

    #[test]
    fn base_only_record_sets_bases_and_yields_nothing() {
        let records = json(
            r#"[{"bn":"urn:dev:ow:10e2073a01080063:"},
                {"n":"temp","u":"Cel","v":23.1},
                {"n":"heat","u":"/","v":1},
                {"n":"fan","u":"/","v":0}]"#,
        )
        .expect("RFC 8428 §5.1.7 decodes");
        assert_eq!(records.len(), 3);
        assert_eq!(records[0].n, "urn:dev:ow:10e2073a01080063:temp");
        assert_eq!(records[2].v, Some(0.0));
    }

    #[test]
    fn relative_times_are_offsets_from_now_and_large_times_are_absolute() {
        let records = json(
            r#"[{"n":"a","v":1,"t":-10},{"n":"b","v":1,"t":0.5},{"n":"c","v":1,"t":268435456}]"#,
        )
        .expect("decodes");
        assert_eq!(records[0].t, NOW - 10.0);
        assert_eq!(records[1].t, NOW + 0.5);
        assert_eq!(records[2].t, RELATIVE_TIME_LIMIT);
    }

    #[test]
    fn base_value_and_base_sum_add_to_the_record() {
        let records = json(
            r#"[{"bn":"m/","bv":100,"bs":1000,"n":"a","v":1.5},{"n":"b","s":5},{"n":"c","vs":"x"}]"#,
        )
        .expect("decodes");
        assert_eq!(records[0].v, Some(101.5));
        assert_eq!(records[0].s, Some(1000.0));
        assert_eq!(records[1].v, None);
        assert_eq!(records[1].s, Some(1005.0));
        assert_eq!(records[2].vs.as_deref(), Some("x"));
        assert_eq!(records[2].v, None, "bv never turns a string record numeric");
    }

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
    fn version_newer_than_10_or_inconsistent_is_rejected() {
        assert!(json(r#"[{"bver":10,"n":"a","v":1}]"#).is_ok());
        let err = json(r#"[{"bver":11,"n":"a","v":1}]"#).expect_err("bver 11");
        assert!(err.to_string().contains("version 11"), "{err}");
        assert!(json(r#"[{"bver":5,"n":"a","v":1},{"bver":6,"n":"b","v":1}]"#).is_err());
        assert!(json(r#"[{"bver":"10","n":"a","v":1}]"#).is_err());
        assert!(json(r#"[{"bver":-1,"n":"a","v":1}]"#).is_err());
    }

    #[test]
    fn records_need_exactly_one_value_or_a_sum() {
        assert!(json(r#"[{"n":"a","s":3}]"#).is_ok());
        let none = json(r#"[{"n":"a","u":"Cel"}]"#).expect_err("no value");
        assert!(none.to_string().contains("no value"), "{none}");
        let two = json(r#"[{"n":"a","v":1,"vs":"1"}]"#).expect_err("two values");
        assert!(two.to_string().contains("more than one"), "{two}");
        assert!(
            json(r#"[{"n":"a","v":1,"v":2}]"#).is_err(),
            "duplicate label"
        );
        assert_eq!(
            json(r#"[{}]"#).expect_err("empty record").reason(),
            "invalid"
        );
    }

    #[test]
    fn names_follow_rfc8428_character_rules() {
        assert!(json(r#"[{"n":"A-z0:9./_","v":1}]"#).is_ok());
        for bad in [
            r#""""#,
            r#""-lead""#,
            r#""has space""#,
            r#""ü""#,
            r#""a?b""#,
        ] {
            let text = format!(r#"[{{"n":{bad},"v":1}}]"#);
            assert_eq!(json(&text).expect_err(&text).reason(), "invalid", "{text}");
        }
        assert_eq!(
            json(r#"[{"v":1}]"#).expect_err("no name at all").reason(),
            "invalid"
        );
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
    fn limits_bound_records_names_and_values() {
        let mut c = ctx();
        c.limits = Limits {
            max_records: 2,
            max_name_len: 8,
            max_value_len: 4,
        };
        let d = |s: &str| decode_json(s.as_bytes(), &c);
        assert!(d(r#"[{"n":"a","v":1},{"n":"b","v":2}]"#).is_ok());
        assert_eq!(
            d(r#"[{"n":"a","v":1},{"n":"b","v":2},{"n":"c","v":3}]"#),
            Err(DecodeError::TooManyRecords(2))
        );
        assert_eq!(
            d(r#"[{"bn":"abcde","n":"fghi","v":1}]"#),
            Err(DecodeError::TooLong("record name"))
        );
        assert_eq!(
            d(r#"[{"n":"a","vs":"abcde"}]"#),
            Err(DecodeError::TooLong("string value"))
        );
        assert!(d(r#"[{"n":"a","vd":"AAAAAA"}]"#).is_ok(), "4 bytes");
        assert_eq!(
            d(r#"[{"n":"a","vd":"AAAAAAA"}]"#),
            Err(DecodeError::TooLong("data value"))
        );
        assert_eq!(
            d(r#"[{"n":"a","u":"abcdefghi","v":1}]"#),
            Err(DecodeError::TooLong("unit"))
        );
    }

    #[test]
    fn data_values_must_be_base64url() {
        assert_eq!(
            json(r#"[{"n":"a","vd":"Zh"}]"#)
                .expect_err("non-zero spare bits")
                .reason(),
            "invalid"
        );
        assert!(
            json(r#"[{"n":"a","vd":"Zm9"}]"#).is_err(),
            "non-zero spare bits"
        );
        assert!(
            json(r#"[{"n":"a","vd":"Zm8"}]"#).is_ok(),
            "canonical \"fo\""
        );
        assert!(
            json(r#"[{"n":"a","vd":"a+b/"}]"#).is_err(),
            "standard alphabet"
        );
        assert!(
            json(r#"[{"n":"a","vd":"abcde"}]"#).is_err(),
            "impossible length"
        );
        let padded = json(r#"[{"n":"a","vd":"aGkgCg=="}]"#).expect("padding tolerated");
        assert_eq!(padded[0].vd.as_deref(), Some("aGkgCg"));
    }

    #[test]
    fn non_finite_resolved_values_are_rejected() {
        let err = json(r#"[{"bv":1e308,"n":"a","v":1e308}]"#).expect_err("overflow");
        assert!(err.to_string().contains("finite"), "{err}");
        let err = json(r#"[{"bt":1e308,"n":"a","v":1,"t":1e308}]"#).expect_err("overflow");
        assert!(err.to_string().contains("finite"), "{err}");
        assert!(json(r#"[{"n":"a","v":1,"ut":-1}]"#).is_err(), "negative ut");
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

    const RFC_CBOR_EXAMPLE: &str = "
        87 a7 21 78 1b 75 72 6e 3a 64 65 76 3a 6f 77 3a
        31 30 65 32 30 37 33 61 30 31 30 38 30 30 36 3a
        22 fb 41 d3 03 a1 5b 00 10 62 23 61 41 20 05 00
        67 76 6f 6c 74 61 67 65 01 61 56 02 fb 40 5e 06
        66 66 66 66 66 a3 00 67 63 75 72 72 65 6e 74 06
        24 02 fb 3f f3 33 33 33 33 33 33 a3 00 67 63 75
        72 72 65 6e 74 06 23 02 fb 3f f4 cc cc cc cc cc
        cd a3 00 67 63 75 72 72 65 6e 74 06 22 02 fb 3f
        f6 66 66 66 66 66 66 a3 00 67 63 75 72 72 65 6e
        74 06 21 02 f9 3e 00 a3 00 67 63 75 72 72 65 6e
        74 06 20 02 fb 3f f9 99 99 99 99 99 9a a3 00 67
        63 75 72 72 65 6e 74 06 00 02 fb 3f fb 33 33 33
        33 33 33";

    #[test]
    fn rfc8428_cbor_example_decodes_like_its_json_twin() {
        let bytes = hex(RFC_CBOR_EXAMPLE);
        assert_eq!(bytes.len(), 0xc3);
        let from_cbor = decode_cbor(&bytes, &ctx()).expect("RFC 8428 §6 example decodes");
        assert_eq!(from_cbor, json(RFC_5_1_2_TIMED).expect("JSON twin decodes"));
        assert_eq!(from_cbor, rfc_5_1_2_timed_resolved());
    }

    fn cbor(bytes: &[u8]) -> Result<Vec<Record>, DecodeError> {
        decode_cbor(bytes, &ctx())
    }

    #[test]
    fn cbor_accepts_indefinite_lengths_and_decimal_fractions() {
        // [_ {_ 0: (_ "te", "mp"), 2: 4([-1, 236])}, {0: "b", 8: (_ h'01', h'02')}]
        let bytes = hex("9f bf 00 7f 62 74 65 62 6d 70 ff 02 c4 82 20 18 ec ff
             a2 00 61 62 08 5f 41 01 41 02 ff ff");
        let records = cbor(&bytes).expect("indefinite forms decode");
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].n, "temp");
        assert_eq!(records[0].v, Some(23.6));
        assert_eq!(records[1].vd.as_deref(), Some("AQI"));
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
    fn cbor_truncation_and_garbage_are_malformed() {
        let bytes = hex(RFC_CBOR_EXAMPLE);
        for cut in [1, 2, 10, 50, bytes.len() - 1] {
            let err = cbor(&bytes[..cut]).expect_err("truncated");
            assert_eq!(err.reason(), "malformed", "cut at {cut}: {err}");
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(cbor(&trailing).expect_err("trailing").reason(), "malformed");
        // A text string claiming 2^63 bytes.
        let err = cbor(&hex("81 a1 00 7b 80 00 00 00 00 00 00 00")).expect_err("huge");
        assert_eq!(err.reason(), "malformed");
        // Reserved additional information 28.
        assert_eq!(
            cbor(&hex("1c")).expect_err("reserved").reason(),
            "malformed"
        );
        assert_eq!(cbor(&[]), Err(DecodeError::Empty));
        assert_eq!(cbor(&hex("80")), Err(DecodeError::Empty));
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
    fn malformed_cbor_inside_an_ignored_label_is_still_malformed() {
        // [{0: "a", 2: 1, 99: [_ 1(<break>)]}]: a tag with nothing to tag.
        let err = cbor(&hex("81 a3 00 61 61 02 01 18 63 9f c1 ff")).expect_err("empty tag");
        assert_eq!(err.reason(), "malformed", "{err}");
        // [{0: "a", 2: 1, 99: {_ 1: 2, 3 <break>}}]: a key without a value.
        let err = cbor(&hex("81 a3 00 61 61 02 01 18 63 bf 01 02 03 ff")).expect_err("odd map");
        assert_eq!(err.reason(), "malformed", "{err}");
        // The well-formed versions of both are skipped.
        assert!(cbor(&hex("81 a3 00 61 61 02 01 18 63 9f c1 00 ff")).is_ok());
        assert!(cbor(&hex("81 a3 00 61 61 02 01 18 63 bf 01 02 03 04 ff")).is_ok());
        // A lone break where a pack should start.
        assert_eq!(cbor(&hex("ff")).expect_err("break").reason(), "malformed");
    }

    #[test]
    fn decimal_fractions_with_extreme_exponents_do_not_panic() {
        // [{0: "a", 2: 4([-18446744073709551616, 1])}] = 1e-18446744073709551616, which is 0.
        let tiny = cbor(&hex(
            "81 a2 00 61 61 02 c4 82 3b ff ff ff ff ff ff ff ff 01",
        ));
        assert_eq!(tiny.expect("underflows to zero")[0].v, Some(0.0));
        // [{0: "a", 2: 4([18446744073709551615, 1])}] overflows to infinity: rejected.
        let huge = cbor(&hex(
            "81 a2 00 61 61 02 c4 82 1b ff ff ff ff ff ff ff ff 01",
        ));
        assert_eq!(huge.expect_err("overflows").reason(), "invalid");
        // [{0: "a", 2: 4([1, 1.5])}]: the mantissa must be an integer.
        let float = cbor(&hex("81 a2 00 61 61 02 c4 82 01 f9 3e 00"));
        assert_eq!(float.expect_err("float mantissa").reason(), "invalid");
    }

    #[test]
    fn deeply_nested_cbor_is_an_error_not_a_crash() {
        let mut top = vec![0x81; 100_000];
        top.push(0x01);
        assert_eq!(cbor(&top).expect_err("nested pack").reason(), "invalid");
        // [{0: "a", 2: 1, 99: [[[...]]]}] inside an ignored label
        let mut ignored = hex("81 a3 00 61 61 02 01 18 63");
        ignored.extend(std::iter::repeat_n(0x81, 100_000));
        ignored.push(0x01);
        let err = cbor(&ignored).expect_err("too deep");
        assert!(err.to_string().contains("nesting"), "{err}");
        // Indefinite arrays, never closed.
        let mut open = hex("81 a3 00 61 61 02 01 18 63");
        open.extend(std::iter::repeat_n(0x9f, 100_000));
        assert!(cbor(&open).is_err());
        // Within the depth limit, nesting in an ignored label is skipped.
        let mut shallow = hex("81 a3 00 61 61 02 01 18 63");
        shallow.extend(std::iter::repeat_n(0x81, 20));
        shallow.push(0x01);
        assert!(cbor(&shallow).is_ok());
    }

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

    #[test]
    fn base64url_matches_rfc4648_test_vectors() {
        let vectors: [(&[u8], &str); 7] = [
            (b"", ""),
            (b"f", "Zg"),
            (b"fo", "Zm8"),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg"),
            (b"fooba", "Zm9vYmE"),
            (b"foobar", "Zm9vYmFy"),
        ];
        for (raw, text) in vectors {
            assert_eq!(base64url_encode(raw), text);
            assert_eq!(base64url_decode(text).as_deref(), Some(raw));
        }
        assert_eq!(base64url_encode(&[0xfb, 0xff]), "-_8");
        assert_eq!(base64url_decode("-_8").as_deref(), Some(&[0xfb, 0xff][..]));
        assert_eq!(base64url_decode("Zm9v+"), None);
        assert_eq!(base64url_decode("Z"), None);
        assert_eq!(base64url_decode("Zh"), None, "spare bits must be zero");
    }
}
