//! LwM2M content formats: decode a payload to [`Entry`] values and encode values to a payload.
//!
//! OWNED BY THE CODEC WORK (see the brief): TLV, OMA JSON, SenML JSON/CBOR, LwM2M CBOR, CBOR,
//! text/plain, opaque; link-format is in [`crate::link`].

use std::time::SystemTime;

use crate::node::{Entry, Path, TypeLookup};

/// The LwM2M Content-Formats (OMA LwM2M TS Core §7.3, IANA CoAP Content-Formats registry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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

/// Decodes `body` in `format`, the answer to (or the request on) `base`, into resolved entries.
/// Types come from the payload where the format carries them, else from `types`; relative
/// times (SenML, OMA JSON) resolve against `now`.
pub fn decode(
    format: Format,
    base: &Path,
    body: &[u8],
    types: &dyn TypeLookup,
    now: SystemTime,
) -> Result<Vec<Entry>, FormatError> {
    let _ = (base, body, types, now);
    Err(FormatError::Unsupported(format))
}

/// Encodes `entries` (all at or below `base`) in `format`.
pub fn encode(
    format: Format,
    base: &Path,
    entries: &[Entry],
    types: &dyn TypeLookup,
) -> Result<Vec<u8>, FormatError> {
    let _ = (base, entries, types);
    Err(FormatError::Unsupported(format))
}

// PLACEHOLDER (the codec branch replaces this file).
/// The body of a composite Read/Observe: the paths as a SenML list without values.
pub fn encode_paths(format: Format, paths: &[Path]) -> Result<Vec<u8>, FormatError> {
    let _ = paths;
    Err(FormatError::Unsupported(format))
}
