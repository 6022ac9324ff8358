//! One SenML record as sent: the labels of RFC 8428 Table 1, the scalar values either encoding
//! delivers, and the type check each label applies. Shared by both encodings; nothing here
//! resolves.

use std::borrow::Cow;

use crate::decode::DecodeError;

/// The labels of RFC 8428 Table 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Label {
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
    pub(super) fn from_cbor(key: i64) -> Option<Self> {
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
pub(super) enum Key {
    Known(Label),
    /// An extension we do not know: ignore it (RFC 8428 §4.4).
    Ignored,
    /// An extension we do not know that ends in `_`: the pack must be rejected.
    MustUnderstand,
}

/// Classifies a text key. In SenML CBOR text keys are always extensions (RFC 8428 §6).
pub(super) fn text_key(key: &str, json: bool) -> Key {
    let known = if json { Label::from_json(key) } else { None };
    match known {
        Some(label) => Key::Known(label),
        None if key.ends_with('_') => Key::MustUnderstand,
        None => Key::Ignored,
    }
}

pub(super) fn must_understand(index: usize) -> DecodeError {
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
pub(super) enum Data<'a> {
    Base64(Cow<'a, str>),
    Raw(Cow<'a, [u8]>),
}

/// One record as sent, fields type-checked but not resolved.
#[derive(Debug, Default)]
pub(super) struct RawRecord<'a> {
    pub(super) bver: Option<u64>,
    pub(super) bn: Option<Cow<'a, str>>,
    pub(super) bt: Option<f64>,
    pub(super) bu: Option<Cow<'a, str>>,
    pub(super) bv: Option<f64>,
    pub(super) bs: Option<f64>,
    pub(super) n: Option<Cow<'a, str>>,
    pub(super) u: Option<Cow<'a, str>>,
    pub(super) v: Option<f64>,
    pub(super) vs: Option<Cow<'a, str>>,
    pub(super) vb: Option<bool>,
    pub(super) vd: Option<Data<'a>>,
    pub(super) s: Option<f64>,
    pub(super) t: Option<f64>,
    pub(super) ut: Option<f64>,
}

impl<'a> RawRecord<'a> {
    pub(super) fn set(
        &mut self,
        label: Label,
        value: Value<'a>,
        index: usize,
    ) -> Result<(), DecodeError> {
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

    pub(super) fn has_base_fields(&self) -> bool {
        self.bver.is_some()
            || self.bn.is_some()
            || self.bt.is_some()
            || self.bu.is_some()
            || self.bv.is_some()
            || self.bs.is_some()
    }

    pub(super) fn has_regular_fields(&self) -> bool {
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
