//! Payload redaction: captures contain patient data, so by default only the protocol headers
//! are kept. The payload's bytes are zeroed, not removed, so every length (IP, UDP, the
//! `epb` original length) stays true: packet sizes are what intrusion-detection features are
//! built from. Pure and total: any input, no panic.

/// Bytes of a datagram that is not CoAP kept before zeroing the rest.
pub const NON_COAP_KEEP: usize = 4;

/// Zeroes the payload of `datagram` in place: for a CoAP message (RFC 7252 §3) everything after
/// the 0xFF payload marker (header, token and options stay readable); for DTLS records (RFC 6347
/// §4.1) the body of every application-data record (the encrypted CoAP; handshake, alert and
/// change-cipher-spec records stay whole, so the handshake decodes); for anything else,
/// everything after the first [`NON_COAP_KEEP`] bytes.
pub fn redact(datagram: &mut [u8]) {
    if redact_dtls(datagram) {
        return;
    }
    let keep = coap_payload_start(datagram).unwrap_or(NON_COAP_KEEP);
    if let Some(rest) = datagram.get_mut(keep..) {
        rest.fill(0);
    }
}

/// DTLS record content type of application data.
const DTLS_APPLICATION_DATA: u8 = 23;
/// A DTLS record header: type, version (2), epoch (2), sequence number (6), length (2).
const DTLS_HEADER: usize = 13;

/// When `b` starts like DTLS (a content type 20-25 and a DTLS version 0xFEnn), zeroes the body
/// of each application-data record and returns true; a record whose length runs past the end is
/// zeroed to the end. False (nothing changed) for anything else.
fn redact_dtls(b: &mut [u8]) -> bool {
    let looks_like_dtls =
        b.len() >= DTLS_HEADER && (20..=25).contains(&b[0]) && b.get(1) == Some(&0xfe);
    if !looks_like_dtls {
        return false;
    }
    let mut at = 0usize;
    while at < b.len() {
        let (Some(&kind), Some(&hi), Some(&lo)) = (b.get(at), b.get(at + 11), b.get(at + 12))
        else {
            // A truncated header: nothing after it can be trusted to be a header.
            if let Some(rest) = b.get_mut(at..) {
                rest.fill(0);
            }
            break;
        };
        let body = at + DTLS_HEADER;
        let end = body
            .saturating_add(usize::from(u16::from_be_bytes([hi, lo])))
            .min(b.len());
        if kind == DTLS_APPLICATION_DATA
            && let Some(payload) = b.get_mut(body..end)
        {
            payload.fill(0);
        }
        at = end.max(body);
    }
    true
}

/// Where the payload of a well-formed CoAP message starts (its length when there is none);
/// `None` when `b` is not one.
pub fn coap_payload_start(b: &[u8]) -> Option<usize> {
    let first = *b.first()?;
    if first >> 6 != 1 || b.len() < 4 {
        return None;
    }
    let tkl = usize::from(first & 0x0f);
    if tkl > 8 {
        return None;
    }
    let mut at = 4 + tkl;
    if b.len() < at {
        return None;
    }
    loop {
        let Some(&byte) = b.get(at) else {
            return Some(b.len());
        };
        if byte == 0xff {
            // A marker followed by nothing is a format error (RFC 7252 §3).
            return (at + 1 < b.len()).then_some(at + 1);
        }
        at += 1;
        let delta_len = |nibble: u8, at: &mut usize| -> Option<usize> {
            match nibble {
                0..=12 => Some(usize::from(nibble)),
                13 => {
                    let v = *b.get(*at)?;
                    *at += 1;
                    Some(usize::from(v) + 13)
                }
                14 => {
                    let v = u16::from_be_bytes([*b.get(*at)?, *b.get(*at + 1)?]);
                    *at += 2;
                    Some(usize::from(v) + 269)
                }
                _ => None,
            }
        };
        delta_len(byte >> 4, &mut at)?;
        let len = delta_len(byte & 0x0f, &mut at)?;
        at = at.checked_add(len)?;
        if at > b.len() {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CON POST, token 0x7a, Uri-Path "v1" "readings", Content-Format 0, payload "36.6".
    fn post() -> Vec<u8> {
        let mut m = vec![0x41, 0x02, 0x12, 0x34, 0x7a];
        m.extend_from_slice(&[0xb2, b'v', b'1', 0x08]);
        m.extend_from_slice(b"readings");
        m.extend_from_slice(&[0x10]); // Content-Format (12) = 0, zero-length value
        m.push(0xff);
        m.extend_from_slice(b"36.6");
        m
    }

    #[test]
    fn coap_header_token_and_options_are_kept_and_the_payload_zeroed() {
        let original = post();
        let mut m = original.clone();
        redact(&mut m);
        let marker = original.len() - 5;
        assert_eq!(m[..=marker], original[..=marker]);
        assert_eq!(&m[marker + 1..], &[0, 0, 0, 0]);
        assert_eq!(m.len(), original.len(), "lengths stay true");
    }

    #[test]
    fn a_coap_message_without_payload_is_unchanged() {
        let mut m = post();
        m.truncate(m.len() - 5);
        let before = m.clone();
        redact(&mut m);
        assert_eq!(m, before);
    }

    #[test]
    fn extended_option_deltas_and_lengths_are_skipped_correctly() {
        // Option 2049 (delta 14: 2049 - 269 = 1780) with a 14-byte value (length 13: +1).
        let mut m = vec![0x50, 0x01, 0, 1];
        m.push(0xed);
        m.extend_from_slice(&(2049u16 - 269).to_be_bytes());
        m.push(1);
        m.extend_from_slice(&[0xff; 14]); // value bytes that look like markers
        m.extend_from_slice(&[0xff, 9, 9]);
        redact(&mut m);
        assert!(m[..m.len() - 2].iter().skip(8).all(|&b| b == 0xff));
        assert_eq!(&m[m.len() - 2..], &[0, 0]);
    }

    /// A DTLS record: `kind`, DTLS 1.2, epoch 1, sequence 7, `body`.
    fn record(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut r = vec![kind, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 7];
        r.extend_from_slice(&(body.len() as u16).to_be_bytes());
        r.extend_from_slice(body);
        r
    }

    #[test]
    fn dtls_application_data_is_zeroed_and_handshake_records_are_kept() {
        let mut d = record(22, &[1, 2, 3]);
        d.extend(record(23, &[9, 9, 9, 9]));
        d.extend(record(21, &[2, 40]));
        let before = d.clone();
        redact(&mut d);
        assert_eq!(d[..16], before[..16], "the handshake record is whole");
        assert_eq!(
            d[16..29],
            before[16..29],
            "the application-data header is kept"
        );
        assert_eq!(&d[29..33], &[0, 0, 0, 0]);
        assert_eq!(d[33..], before[33..], "the alert is whole");
        // A length running past the end zeroes to the end; a truncated header is zeroed.
        let mut long = record(23, &[5; 8]);
        long.truncate(long.len() - 3);
        redact(&mut long);
        assert!(long[13..].iter().all(|&b| b == 0));
        let mut torn = record(22, &[1]);
        torn.extend_from_slice(&[23, 0xfe, 0xfd, 0, 1]);
        redact(&mut torn);
        assert_eq!(&torn[14..], &[0, 0, 0, 0, 0]);
        for n in 0..40 {
            let mut d = before[..n.min(before.len())].to_vec();
            redact(&mut d);
        }
    }

    #[test]
    fn a_datagram_that_is_not_coap_keeps_only_its_first_four_bytes() {
        // Not CoAP version 1 and not a DTLS record.
        let mut d = vec![0x99, 0xfe, 0xfd, 0, 0, 1, 2, 3, 4];
        redact(&mut d);
        assert_eq!(d, vec![0x99, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0]);
        let mut short = vec![1, 2];
        redact(&mut short);
        assert_eq!(short, vec![1, 2]);
    }

    #[test]
    fn malformed_coap_is_redacted_as_not_coap() {
        for bad in [
            vec![0x49, 0, 0, 0],             // TKL 9
            vec![0x41, 0, 0, 0],             // token missing
            vec![0x40, 0, 0, 0, 0x0f, 1, 2], // length nibble 15
            vec![0x40, 0, 0, 0, 0x05, 1, 2], // option runs past the end
            vec![0x40, 0, 0, 0, 0xff],       // marker with no payload
        ] {
            assert_eq!(coap_payload_start(&bad), None, "{bad:?}");
            let mut d = bad.clone();
            redact(&mut d);
            assert!(d.iter().skip(NON_COAP_KEEP).all(|&b| b == 0), "{bad:?}");
        }
    }

    #[test]
    fn every_prefix_of_every_byte_pattern_is_handled_without_panic() {
        let m = post();
        for n in 0..=m.len() {
            let mut d = m[..n].to_vec();
            redact(&mut d);
        }
        for a in 0..=255u8 {
            for b in [0x00, 0x0d, 0x0e, 0xd0, 0xe0, 0xdd, 0xee, 0xff] {
                let mut d = vec![0x40, 1, 0, 0, a, b, 0xff];
                redact(&mut d);
            }
        }
    }
}
