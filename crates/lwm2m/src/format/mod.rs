//! LwM2M content formats: decode a payload to [`Entry`] values and encode values to a payload.
//!
//! One file per format: `tlv.rs` (11542), `oma_json.rs` (11543, LwM2M 1.0 JSON), `senml.rs` (110
//! SenML JSON and 112 SenML CBOR as LwM2M 1.1 uses them), `lwm2m_cbor.rs` (11544, LwM2M 1.2),
//! `cbor.rs` (60, one value) and `text.rs` (0 text/plain and 42 opaque, one value each).
//! Link-format (40) is [`crate::link`]. Shared pieces: `value.rs` turns what a format read into a
//! typed [`crate::Value`] (the one place where wire kinds meet the object model's types),
//! `cbor_io.rs` is the CBOR pull reader and writer, `base64.rs` the data-value alphabet.
//!
//! Dependencies: `serde_json` (already the crate's) reads the two JSON formats through serde
//! visitors, so a document is never held as a `serde_json::Value` tree and record counts are
//! checked while reading; `ciborium-ll` (already the workspace's CBOR crate, under `core`'s SenML
//! CBOR) decodes CBOR item headers, half-precision floats included, while this module owns
//! lengths and nesting. The `ciborium` serde layer is not used: it would build whole values before
//! any bound could be checked.
//!
//! What every decoder promises, whatever the input:
//! - no panic, and no allocation sized by a length read from the input before that length has
//!   been checked against the bytes that remain;
//! - at most [`Limits::max_entries`] entries, nesting at most [`Limits::max_depth`] deep, no
//!   single value longer than [`Limits::max_value_len`], no body longer than
//!   [`Limits::max_body`] (all [`FormatError::TooLarge`]);
//! - every entry at a resource or resource-instance path at or below `base`
//!   ([`FormatError::Invalid`] otherwise);
//! - no non-finite float: NaN and ±∞ can be carried by TLV, CBOR, SenML CBOR and LwM2M CBOR
//!   (float values and SenML times), and are rejected there as [`FormatError::Invalid`]; the
//!   JSON formats cannot carry them at all;
//! - the duplicate rule: in formats without times (TLV, LwM2M CBOR, CBOR, text, opaque) a path
//!   appears once; in SenML and OMA JSON a path may repeat only with different times (a Send or
//!   a notification carrying history: each is its own entry, in payload order); and a resource
//!   never appears both as a single value and with resource instances (`/3/0/7` and `/3/0/7/0`).
//!   Breaking it is [`FormatError::Invalid`].
//!
//! The flat entry model cannot carry an empty object instance or an empty multiple resource; the
//! decoders accept them (TLV `00 00`, LwM2M CBOR `{3: {0: {}}}`) and yield no entry for them.

pub(crate) mod base64;
mod cbor;
mod cbor_io;
mod json_io;
mod lwm2m_cbor;
mod oma_json;
mod senml;
mod text;
mod tlv;
mod value;

use std::collections::HashSet;
use std::time::SystemTime;

use crate::node::{Entry, Path, TypeLookup};

/// The LwM2M Content-Formats (OMA LwM2M TS Core §7.3, IANA CoAP Content-Formats registry).
/// By name in JSON and TOML: `text`, `link-format`, `opaque`, `cbor`, `senml-json`, `senml-cbor`,
/// `tlv`, `oma-json`, `lwm2m-cbor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// 0 text/plain: one resource (instance) value.
    Text,
    /// 40 application/link-format (Discover, Register).
    LinkFormat,
    /// 42 application/octet-stream: one opaque resource (instance) value.
    Opaque,
    /// 60 application/cbor: one resource (instance) value (LwM2M 1.1 §7.4.6).
    Cbor,
    /// 110 application/senml+json.
    SenmlJson,
    /// 112 application/senml+cbor.
    SenmlCbor,
    /// 11542 application/vnd.oma.lwm2m+tlv (also the legacy 1542).
    Tlv,
    /// 11543 application/vnd.oma.lwm2m+json, the OMA JSON of LwM2M 1.0 (also the legacy 1543).
    OmaJson,
    /// 11544 application/vnd.oma.lwm2m+cbor (LwM2M 1.2).
    Lwm2mCbor,
}

impl Format {
    /// From a CoAP Content-Format number (legacy 1542/1543 accepted).
    pub fn from_coap(n: u16) -> Option<Format> {
        Some(match n {
            0 => Format::Text,
            40 => Format::LinkFormat,
            42 => Format::Opaque,
            60 => Format::Cbor,
            110 => Format::SenmlJson,
            112 => Format::SenmlCbor,
            11542 | 1542 => Format::Tlv,
            11543 | 1543 => Format::OmaJson,
            11544 => Format::Lwm2mCbor,
            _ => return None,
        })
    }

    /// The (current, non-legacy) CoAP Content-Format number.
    pub fn coap_number(self) -> u16 {
        match self {
            Format::Text => 0,
            Format::LinkFormat => 40,
            Format::Opaque => 42,
            Format::Cbor => 60,
            Format::SenmlJson => 110,
            Format::SenmlCbor => 112,
            Format::Tlv => 11542,
            Format::OmaJson => 11543,
            Format::Lwm2mCbor => 11544,
        }
    }

    /// Whether the format carries a time per value (SenML, OMA JSON).
    pub fn carries_time(self) -> bool {
        matches!(
            self,
            Format::SenmlJson | Format::SenmlCbor | Format::OmaJson
        )
    }

    /// Whether the format carries exactly one resource (instance) value.
    pub fn is_single_value(self) -> bool {
        matches!(self, Format::Text | Format::Opaque | Format::Cbor)
    }
}

/// Why a payload could not be decoded or values could not be encoded. The server answers a
/// device's undecodable request with 4.00 and counts `reason()`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FormatError {
    /// The bytes are not valid for the format.
    #[error("malformed {format:?} payload: {detail}")]
    Malformed {
        /// The format.
        format: Format,
        /// What is wrong (never an echo of the payload).
        detail: String,
    },
    /// Valid bytes that do not fit the request (a path outside the requested one, a single-value
    /// format for several values, a value of the wrong type for the model).
    #[error("invalid content: {0}")]
    Invalid(String),
    /// More values, nesting or bytes than the decoder's bounds.
    #[error("{0} exceeds the decoder's bounds")]
    TooLarge(&'static str),
    /// The format cannot carry this (link-format values, opaque for a string).
    #[error("{0:?} cannot carry this content")]
    Unsupported(Format),
}

impl FormatError {
    /// Fixed metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            FormatError::Malformed { .. } => "malformed",
            FormatError::Invalid(_) => "invalid",
            FormatError::TooLarge(_) => "too_large",
            FormatError::Unsupported(_) => "unsupported",
        }
    }
}

pub(crate) fn malformed(format: Format, detail: impl Into<String>) -> FormatError {
    FormatError::Malformed {
        format,
        detail: detail.into(),
    }
}

pub(crate) fn invalid(detail: impl Into<String>) -> FormatError {
    FormatError::Invalid(detail.into())
}

/// The decoders' bounds. [`decode`] uses [`Limits::default`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most entries one payload may decode to.
    pub max_entries: usize,
    /// Deepest nesting of containers (CBOR arrays/maps, JSON arrays/objects, TLV levels).
    pub max_depth: usize,
    /// Longest single string or byte value, in bytes.
    pub max_value_len: usize,
    /// Longest body, in bytes.
    pub max_body: usize,
}

impl Limits {
    /// Default [`Limits::max_entries`].
    pub const DEFAULT_MAX_ENTRIES: usize = 1024;
    /// Default [`Limits::max_depth`]: LwM2M needs at most 4 map levels plus a path array.
    pub const DEFAULT_MAX_DEPTH: usize = 16;
    /// Default [`Limits::max_value_len`]: certificates and keys fit, a firmware image does not
    /// (firmware goes by Package URI or block-wise opaque writes, which the server sends).
    pub const DEFAULT_MAX_VALUE_LEN: usize = 256 * 1024;
    /// Default [`Limits::max_body`].
    pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_entries: Limits::DEFAULT_MAX_ENTRIES,
            max_depth: Limits::DEFAULT_MAX_DEPTH,
            max_value_len: Limits::DEFAULT_MAX_VALUE_LEN,
            max_body: Limits::DEFAULT_MAX_BODY,
        }
    }
}

/// What every decoder gets: the request path, the type lookup, the clock, the bounds.
pub(crate) struct Ctx<'a> {
    pub(crate) format: Format,
    pub(crate) base: Path,
    pub(crate) types: &'a dyn TypeLookup,
    /// Seconds since the Unix epoch.
    pub(crate) now: f64,
    pub(crate) limits: Limits,
}

impl Ctx<'_> {
    pub(crate) fn malformed(&self, detail: impl Into<String>) -> FormatError {
        malformed(self.format, detail)
    }

    /// Fails once `entries` is full, before another entry is added.
    pub(crate) fn room(&self, entries: &[Entry]) -> Result<(), FormatError> {
        if entries.len() >= self.limits.max_entries {
            return Err(FormatError::TooLarge("the number of entries"));
        }
        Ok(())
    }

    pub(crate) fn check_value_len(&self, len: usize) -> Result<(), FormatError> {
        if len > self.limits.max_value_len {
            return Err(FormatError::TooLarge("a value's length"));
        }
        Ok(())
    }
}

/// Decodes `body` in `format`, the answer to (or the request on) `base`, into resolved entries.
/// Types come from the payload where the format carries them, else from `types`; relative
/// times (SenML, OMA JSON) resolve against `now`. Uses [`Limits::default`].
pub fn decode(
    format: Format,
    base: &Path,
    body: &[u8],
    types: &dyn TypeLookup,
    now: SystemTime,
) -> Result<Vec<Entry>, FormatError> {
    decode_with(format, base, body, types, now, &Limits::default())
}

/// [`decode`] with explicit bounds.
pub fn decode_with(
    format: Format,
    base: &Path,
    body: &[u8],
    types: &dyn TypeLookup,
    now: SystemTime,
    limits: &Limits,
) -> Result<Vec<Entry>, FormatError> {
    if body.len() > limits.max_body {
        return Err(FormatError::TooLarge("the body's length"));
    }
    let now = match now.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    };
    let ctx = Ctx {
        format,
        base: *base,
        types,
        now,
        limits: *limits,
    };
    let entries = match format {
        Format::Text => text::decode_text(&ctx, body)?,
        Format::Opaque => text::decode_opaque(&ctx, body)?,
        Format::Cbor => cbor::decode(&ctx, body)?,
        Format::SenmlJson => senml::decode_json(&ctx, body)?,
        Format::SenmlCbor => senml::decode_cbor(&ctx, body)?,
        Format::Tlv => tlv::decode(&ctx, body)?,
        Format::OmaJson => oma_json::decode(&ctx, body)?,
        Format::Lwm2mCbor => lwm2m_cbor::decode(&ctx, body)?,
        Format::LinkFormat => return Err(FormatError::Unsupported(format)),
    };
    check_entries(base, &entries)?;
    Ok(entries)
}

/// Encodes `entries` (all at or below `base`) in `format`. Entries are written in path order
/// (the order of equal paths kept) where the format nests them (TLV, LwM2M CBOR), in the given
/// order otherwise. Formats without times (TLV, LwM2M CBOR, CBOR, text, opaque) drop them.
pub fn encode(
    format: Format,
    base: &Path,
    entries: &[Entry],
    types: &dyn TypeLookup,
) -> Result<Vec<u8>, FormatError> {
    check_entries(base, entries)?;
    if !format.carries_time() {
        let mut paths = HashSet::with_capacity(entries.len());
        if !entries.iter().all(|e| paths.insert(e.path)) {
            return Err(invalid(format!(
                "{format:?} carries no times, so a path can appear only once"
            )));
        }
    }
    for e in entries {
        value::check_against_model(e, types)?;
    }
    match format {
        Format::Text => text::encode_text(base, entries),
        Format::Opaque => text::encode_opaque(base, entries),
        Format::Cbor => cbor::encode(base, entries),
        Format::SenmlJson => senml::encode_json(base, entries),
        Format::SenmlCbor => senml::encode_cbor(base, entries),
        Format::Tlv => tlv::encode(base, entries, types),
        Format::OmaJson => oma_json::encode(base, entries),
        Format::Lwm2mCbor => lwm2m_cbor::encode(entries),
        Format::LinkFormat => Err(FormatError::Unsupported(format)),
    }
}

/// The body of a Read-Composite or Observe-Composite request (FETCH): a SenML list of names
/// without values (LwM2M 1.1 §6.3.8). Only SenML JSON and SenML CBOR carry it.
pub fn encode_paths(format: Format, paths: &[Path]) -> Result<Vec<u8>, FormatError> {
    match format {
        Format::SenmlJson => Ok(senml::encode_paths_json(paths)),
        Format::SenmlCbor => Ok(senml::encode_paths_cbor(paths)),
        _ => Err(FormatError::Unsupported(format)),
    }
}

/// Reads a Read-Composite/Observe-Composite request body (what [`encode_paths`] writes; `bn`
/// and `n` concatenate). Records carrying a value are [`FormatError::Invalid`]. Uses
/// [`Limits::default`].
pub fn decode_paths(format: Format, body: &[u8]) -> Result<Vec<Path>, FormatError> {
    let limits = Limits::default();
    if body.len() > limits.max_body {
        return Err(FormatError::TooLarge("the body's length"));
    }
    match format {
        Format::SenmlJson => senml::decode_paths_json(body, &limits),
        Format::SenmlCbor => senml::decode_paths_cbor(body, &limits),
        _ => Err(FormatError::Unsupported(format)),
    }
}

/// The rules every decoded entry list obeys and every encoder requires (see the module doc).
fn check_entries(base: &Path, entries: &[Entry]) -> Result<(), FormatError> {
    let mut seen: HashSet<(Path, Option<u64>)> = HashSet::with_capacity(entries.len());
    let mut singles: HashSet<Path> = HashSet::new();
    let mut multiples: HashSet<Path> = HashSet::new();
    for e in entries {
        if e.path.len() < 3 {
            return Err(invalid(format!(
                "{} is not a resource or resource instance path",
                e.path
            )));
        }
        if !e.path.starts_with(base) {
            return Err(invalid(format!(
                "{} is outside the request's {base}",
                e.path
            )));
        }
        if !seen.insert((e.path, e.time.map(f64::to_bits))) {
            return Err(invalid(format!("{} appears twice", e.path)));
        }
        let resource = resource_of(&e.path);
        let (own, other) = if e.path.len() == 3 {
            (&mut singles, &multiples)
        } else {
            (&mut multiples, &singles)
        };
        if other.contains(&resource) {
            return Err(invalid(format!(
                "{resource} appears both as a single value and with instances"
            )));
        }
        own.insert(resource);
    }
    Ok(())
}

/// `/o/i/r` of a resource or resource-instance path.
pub(crate) fn resource_of(path: &Path) -> Path {
    let ids = path.ids();
    Path::resource(ids[0], ids[1], ids[2])
}

/// Single-value formats need a resource or resource-instance request path.
pub(crate) fn single_value_base(ctx: &Ctx<'_>) -> Result<(), FormatError> {
    if ctx.base.len() < 3 {
        return Err(invalid(format!(
            "{:?} carries one value, but {} is not a resource path",
            ctx.format, ctx.base
        )));
    }
    if ctx.base.len() == 3 {
        let ids = ctx.base.ids();
        if ctx.types.is_multiple(ids[0], ids[2]) == Some(true) {
            return Err(invalid(format!(
                "{} is a multiple-instance resource; {:?} carries one value",
                ctx.base, ctx.format
            )));
        }
    }
    Ok(())
}

/// The one entry a single-value format encodes.
pub(crate) fn single_entry<'e>(
    format: Format,
    base: &Path,
    entries: &'e [Entry],
) -> Result<&'e Entry, FormatError> {
    match entries {
        [e] if e.path == *base => Ok(e),
        [_] => Err(invalid(format!(
            "{format:?} carries the value at the request path {base} only"
        ))),
        _ => Err(invalid(format!(
            "{format:?} carries exactly one value, not {}",
            entries.len()
        ))),
    }
}
