//! base64url (RFC 4648 §5, no padding), the form SenML uses for data values.

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
pub(super) fn base64url_decoded_len(text: &str) -> Option<usize> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
