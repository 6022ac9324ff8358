//! Base64 for opaque values: SenML `vd` is base64url without padding (RFC 8428 §4.3), OMA JSON
//! `sv` and text/plain opaque use the standard alphabet with padding (RFC 4648 §4). Decoding
//! accepts either alphabet (not mixed within one value) with or without padding, because
//! clients are seen writing both; the unused bits of the last character must be zero so one
//! byte string has one text form.

const STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// base64url without padding.
pub(crate) fn encode_url(data: &[u8]) -> String {
    encode(data, URL, false)
}

/// Standard base64 with padding.
pub(crate) fn encode_standard(data: &[u8]) -> String {
    encode(data, STANDARD, true)
}

fn encode(data: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let mut group = [0u8; 3];
        group[..chunk.len()].copy_from_slice(chunk);
        let bits = u32::from_be_bytes([0, group[0], group[1], group[2]]);
        let chars = chunk.len() + 1;
        for k in 0..4 {
            if k < chars {
                out.push(char::from(
                    alphabet[((bits >> (18 - 6 * k)) & 0x3f) as usize],
                ));
            } else if pad {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes either alphabet, padded or not; `None` if the text is not base64.
pub(crate) fn decode(text: &str) -> Option<Vec<u8>> {
    let unpadded = text.trim_end_matches('=');
    let padding = text.len() - unpadded.len();
    if padding > 2 || (padding > 0 && text.len() % 4 != 0) {
        return None;
    }
    let bytes = unpadded.as_bytes();
    let url = bytes.iter().any(|b| matches!(b, b'-' | b'_'));
    let standard = bytes.iter().any(|b| matches!(b, b'+' | b'/'));
    if url && standard {
        return None;
    }
    let spare_mask = match bytes.len() % 4 {
        0 => 0,
        1 => return None,
        2 => 0b1111,
        _ => 0b11,
    };
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3 + 2);
    let mut acc = 0u32;
    let mut nbits = 0u32;
    let mut last = 0u8;
    for &c in bytes {
        last = sextet(c)?;
        acc = (acc << 6) | u32::from(last);
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            out.push((acc >> nbits) as u8);
            acc &= (1 << nbits) - 1;
        }
    }
    (last & spare_mask == 0).then_some(out)
}

fn sextet(c: u8) -> Option<u8> {
    Some(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' | b'-' => 62,
        b'/' | b'_' => 63,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_alphabets_round_trip_with_and_without_padding() {
        let data = [0xfbu8, 0xff, 0xbf, 0x00, 0x01];
        assert_eq!(encode_url(&data), "-_-_AAE");
        assert_eq!(encode_standard(&data), "+/+/AAE=");
        assert_eq!(decode("-_-_AAE"), Some(data.to_vec()));
        assert_eq!(decode("+/+/AAE="), Some(data.to_vec()));
        assert_eq!(decode("+/+/AAE"), Some(data.to_vec()));
        assert_eq!(decode(""), Some(vec![]));
        assert_eq!(decode("Zg=="), Some(b"f".to_vec()));
    }

    #[test]
    fn non_canonical_mixed_or_broken_base64_is_refused() {
        for bad in [
            "Zh", "Z", "Zg=", "Zg===", "+_AA", "ab$c", "Zm9v=", "=", "Zg==Zg==",
        ] {
            assert_eq!(decode(bad), None, "{bad}");
        }
    }
}
