//! SenML (RFC 8428): JSON and CBOR codecs and record resolution (§4.6).

use crate::payload::{DecodeContext, DecodeError};
use crate::reading::Record;

/// Decodes a SenML JSON pack (Content-Format 110) into resolved records.
pub fn decode_json(body: &[u8], ctx: &DecodeContext<'_>) -> Result<Vec<Record>, DecodeError> {
    let _ = (body, ctx);
    Err(DecodeError::Invalid("SenML JSON decoding is not implemented yet".into()))
}

/// Decodes a SenML CBOR pack (Content-Format 112) into resolved records.
pub fn decode_cbor(body: &[u8], ctx: &DecodeContext<'_>) -> Result<Vec<Record>, DecodeError> {
    let _ = (body, ctx);
    Err(DecodeError::Invalid("SenML CBOR decoding is not implemented yet".into()))
}

/// Encodes resolved records as a SenML JSON pack (for simulators, tests and LwM2M Send).
pub fn encode_json(records: &[Record]) -> Vec<u8> {
    serde_json::to_vec(records).unwrap_or_default()
}

/// Encodes resolved records as a SenML CBOR pack (integer labels, RFC 8428 §6).
pub fn encode_cbor(records: &[Record]) -> Vec<u8> {
    let _ = records;
    Vec::new()
}
