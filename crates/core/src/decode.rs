//! What every payload decoder shares: the Content-Format it reads, the bounds and context it
//! decodes with, and the error it answers with. [`crate::payload`] re-exports these as its API;
//! they live here so that [`crate::senml`] can use them without depending on `payload`.

use std::time::SystemTime;

/// Content-Formats wardgate accepts for readings (IANA CoAP Content-Formats registry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContentFormat {
    /// 0 `text/plain;charset=utf-8`: a single value; the record name comes from the URI.
    TextPlain,
    /// 50 `application/json`: an object of named number/string/bool values.
    Json,
    /// 60 `application/cbor`: a map of named number/string/bool values.
    Cbor,
    /// 110 `application/senml+json`.
    SenmlJson,
    /// 112 `application/senml+cbor`.
    SenmlCbor,
}

impl ContentFormat {
    /// Every accepted format.
    pub const ALL: [ContentFormat; 5] = [
        ContentFormat::TextPlain,
        ContentFormat::Json,
        ContentFormat::Cbor,
        ContentFormat::SenmlJson,
        ContentFormat::SenmlCbor,
    ];

    /// From a CoAP Content-Format number; `None` for formats we do not accept (answer 4.15).
    pub fn from_coap(n: u16) -> Option<Self> {
        match n {
            0 => Some(Self::TextPlain),
            50 => Some(Self::Json),
            60 => Some(Self::Cbor),
            110 => Some(Self::SenmlJson),
            112 => Some(Self::SenmlCbor),
            _ => None,
        }
    }

    /// The CoAP Content-Format number.
    pub fn coap_number(self) -> u16 {
        match self {
            Self::TextPlain => 0,
            Self::Json => 50,
            Self::Cbor => 60,
            Self::SenmlJson => 110,
            Self::SenmlCbor => 112,
        }
    }

    /// From an HTTP media type (parameters such as `charset` ignored).
    pub fn from_media_type(mt: &str) -> Option<Self> {
        let base = mt
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match base.as_str() {
            "text/plain" => Some(Self::TextPlain),
            "application/json" => Some(Self::Json),
            "application/cbor" => Some(Self::Cbor),
            "application/senml+json" => Some(Self::SenmlJson),
            "application/senml+cbor" => Some(Self::SenmlCbor),
            _ => None,
        }
    }

    /// The media type.
    pub fn media_type(self) -> &'static str {
        match self {
            Self::TextPlain => "text/plain;charset=utf-8",
            Self::Json => "application/json",
            Self::Cbor => "application/cbor",
            Self::SenmlJson => "application/senml+json",
            Self::SenmlCbor => "application/senml+cbor",
        }
    }
}

/// Bounds applied while decoding; hostile payloads hit these, not the allocator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Maximum records in one payload.
    pub max_records: usize,
    /// Maximum length of a resolved record name, in bytes.
    pub max_name_len: usize,
    /// Maximum length of a string or data value, in bytes.
    pub max_value_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_records: 256,
            max_name_len: 255,
            max_value_len: 4096,
        }
    }
}

/// Everything a decoder needs besides the bytes.
#[derive(Debug, Clone, Copy)]
pub struct DecodeContext<'a> {
    /// Reception time: resolves relative SenML times and stamps records without a time.
    pub now: SystemTime,
    /// Record name for formats that carry none (text/plain), e.g. the last URI path segment.
    pub default_name: Option<&'a str>,
    /// Bounds.
    pub limits: Limits,
}

/// Why a payload was rejected. Adapters answer 4.00 / HTTP 400 (4.13 / 413 for
/// [`DecodeError::TooManyRecords`]), count `reason()` and log once.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes are not valid for the declared format.
    #[error("malformed {format:?} payload: {detail}")]
    Malformed {
        /// Declared format.
        format: ContentFormat,
        /// Parser message (no payload echo).
        detail: String,
    },
    /// Structurally valid but not a reading (e.g. a JSON array where an object is required,
    /// a record without a value, a non-finite number).
    #[error("invalid reading: {0}")]
    Invalid(String),
    /// Empty payload or no records.
    #[error("payload contains no records")]
    Empty,
    /// More records than [`Limits::max_records`].
    #[error("payload has more than {0} records")]
    TooManyRecords(usize),
    /// A name or value longer than the limits.
    #[error("{0} exceeds the configured length limit")]
    TooLong(&'static str),
    /// text/plain needs a record name from the URI and none was given.
    #[error("text/plain payload needs a resource name in the URI")]
    MissingName,
}

impl DecodeError {
    /// Fixed label for the `reason` metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Malformed { .. } => "malformed",
            DecodeError::Invalid(_) => "invalid",
            DecodeError::Empty => "empty",
            DecodeError::TooManyRecords(_) => "too_many_records",
            DecodeError::TooLong(_) => "too_long",
            DecodeError::MissingName => "missing_name",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_formats_map_both_ways() {
        for format in ContentFormat::ALL {
            assert_eq!(ContentFormat::from_coap(format.coap_number()), Some(format));
            assert_eq!(
                ContentFormat::from_media_type(format.media_type()),
                Some(format)
            );
        }
        assert_eq!(ContentFormat::from_coap(11542), None);
        assert_eq!(
            ContentFormat::from_media_type("Application/SenML+JSON; charset=utf-8"),
            Some(ContentFormat::SenmlJson)
        );
    }
}
