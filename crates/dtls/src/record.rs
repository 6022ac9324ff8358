//! Pure parsing of the few DTLS 1.2 structures the cookie front needs, before any per-peer
//! state exists: the first record of a datagram, a ClientHello's random, cookie and offered
//! suites, a HelloVerifyRequest's cookie, and the cookie-less copy of a ClientHello that lets a
//! fresh library instance reproduce the cookie exchange (see `front.rs`).
//!
//! Everything here takes bytes and returns a view or `None`; nothing allocates except
//! [`ClientHello::without_cookie`], nothing panics on hostile input (fuzzed).

/// DTLS record header length: type, version, epoch, sequence number, length.
pub const RECORD_HEADER: usize = 13;
/// Handshake message header length: type, length, message_seq, fragment offset and length.
pub const HANDSHAKE_HEADER: usize = 12;

const CONTENT_HANDSHAKE: u8 = 22;
const HS_CLIENT_HELLO: u8 = 1;
const HS_HELLO_VERIFY_REQUEST: u8 = 3;

/// TLS_PSK_WITH_AES_128_CCM_8 (RFC 6655), RFC 7925's mandatory PSK suite.
pub const PSK_AES128_CCM_8: u16 = 0xC0A8;

/// What the first record of a datagram is, as far as the front cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstRecord {
    /// A plaintext (epoch 0) handshake record carrying an unfragmented ClientHello.
    ClientHello,
    /// Any other well-formed record (handshake continuation, alert, application data, …).
    Other,
    /// Not a DTLS record at all (too short, unknown content type, wrong version, bad length).
    Garbage,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn u24_at(b: &[u8], at: usize) -> Option<usize> {
    Some(
        ((*b.get(at)? as usize) << 16)
            | ((*b.get(at + 1)? as usize) << 8)
            | *b.get(at + 2)? as usize,
    )
}

/// Classifies the first record of `datagram`.
pub fn first_record(datagram: &[u8]) -> FirstRecord {
    if datagram.len() < RECORD_HEADER {
        return FirstRecord::Garbage;
    }
    let ct = datagram[0];
    // change_cipher_spec, alert, handshake, application_data (RFC 6347 §4.1).
    if !(20..=23).contains(&ct) || datagram[1] != 0xfe {
        return FirstRecord::Garbage;
    }
    let Some(len) = u16_at(datagram, 11) else {
        return FirstRecord::Garbage;
    };
    if RECORD_HEADER + len as usize > datagram.len() {
        return FirstRecord::Garbage;
    }
    let epoch = u16_at(datagram, 3).unwrap_or(u16::MAX);
    if ct == CONTENT_HANDSHAKE && epoch == 0 && ClientHello::parse(datagram).is_some() {
        FirstRecord::ClientHello
    } else {
        FirstRecord::Other
    }
}

/// A view of an unfragmented DTLS 1.2 ClientHello in the first record of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientHello<'a> {
    /// The whole first record (header included).
    record: &'a [u8],
    /// Handshake message_seq: 0 for a first ClientHello, 1 for the one answering a
    /// HelloVerifyRequest.
    pub message_seq: u16,
    /// client_random.
    pub random: &'a [u8; 32],
    /// The cookie (empty in a first ClientHello).
    pub cookie: &'a [u8],
    /// Offset of the cookie length byte within `record`.
    cookie_at: usize,
    /// The offered cipher suites, two bytes each.
    suites: &'a [u8],
}

impl<'a> ClientHello<'a> {
    /// Parses the first record of `datagram` as a ClientHello; `None` for anything else,
    /// including a fragmented one (RFC 7925 devices send theirs whole; the front refuses the
    /// rest rather than keep fragments for an unproven address).
    pub fn parse(datagram: &'a [u8]) -> Option<Self> {
        // DTLS records carry version {254, x} (RFC 6347 §4.1); anything else is not ours.
        if datagram.len() < RECORD_HEADER || datagram[0] != CONTENT_HANDSHAKE || datagram[1] != 0xfe
        {
            return None;
        }
        if u16_at(datagram, 3)? != 0 {
            return None;
        }
        let rec_len = u16_at(datagram, 11)? as usize;
        let record = datagram.get(..RECORD_HEADER + rec_len)?;
        let hs = record.get(RECORD_HEADER..)?;
        if *hs.first()? != HS_CLIENT_HELLO {
            return None;
        }
        let length = u24_at(hs, 1)?;
        let message_seq = u16_at(hs, 4)?;
        let frag_off = u24_at(hs, 6)?;
        let frag_len = u24_at(hs, 9)?;
        if frag_off != 0 || frag_len != length {
            return None;
        }
        let body = hs.get(HANDSHAKE_HEADER..HANDSHAKE_HEADER + length)?;
        let body_at = RECORD_HEADER + HANDSHAKE_HEADER;
        // client_version: DTLS 1.2 is {254, 253}; DTLS 1.0 {254, 255} is refused by the
        // library later, with an alert; here it is still a ClientHello.
        if *body.first()? != 0xfe {
            return None;
        }
        let random: &[u8; 32] = body.get(2..34)?.try_into().ok()?;
        let sid_len = *body.get(34)? as usize;
        if sid_len > 32 {
            return None;
        }
        let cookie_len_at = 35 + sid_len;
        let cookie_len = *body.get(cookie_len_at)? as usize;
        let cookie = body.get(cookie_len_at + 1..cookie_len_at + 1 + cookie_len)?;
        let suites_at = cookie_len_at + 1 + cookie_len;
        let suites_len = u16_at(body, suites_at)? as usize;
        if suites_len == 0 || !suites_len.is_multiple_of(2) {
            return None;
        }
        let suites = body.get(suites_at + 2..suites_at + 2 + suites_len)?;
        Some(ClientHello {
            record,
            message_seq,
            random,
            cookie,
            cookie_at: body_at + cookie_len_at,
            suites,
        })
    }

    /// Whether the client offers `suite`.
    pub fn offers(&self, suite: u16) -> bool {
        self.suites
            .chunks_exact(2)
            .any(|c| u16::from_be_bytes([c[0], c[1]]) == suite)
    }

    /// Whether the client offers any suite outside the PSK family (a certificate handshake).
    pub fn offers_non_psk(&self) -> bool {
        self.suites.chunks_exact(2).any(|c| {
            let s = u16::from_be_bytes([c[0], c[1]]);
            // ECDHE_ECDSA suites used by DTLS 1.2 stacks: 0xC02B/0xC02C (GCM),
            // 0xCCA9 (ChaCha20), 0xC0AC..0xC0AF (CCM, CCM_8).
            matches!(s, 0xC02B | 0xC02C | 0xCCA9 | 0xC0AC..=0xC0AF)
        })
    }

    /// The same ClientHello as it was first sent: no cookie, message_seq 0, record sequence
    /// number 0. Feeding this to a fresh library instance replays the cookie exchange so that
    /// instance accepts the real, cookie-bearing ClientHello next.
    pub fn without_cookie(&self) -> Vec<u8> {
        let cut = self.cookie.len();
        let mut out = Vec::with_capacity(self.record.len() - cut);
        out.extend_from_slice(&self.record[..self.cookie_at]);
        out.push(0);
        out.extend_from_slice(&self.record[self.cookie_at + 1 + cut..]);
        let rec_len = out.len() - RECORD_HEADER;
        let body_len = rec_len - HANDSHAKE_HEADER;
        // record sequence number 0, record length
        out[5..11].fill(0);
        out[11..13].copy_from_slice(&(rec_len as u16).to_be_bytes());
        let hs = RECORD_HEADER;
        let l = (body_len as u32).to_be_bytes();
        out[hs + 1..hs + 4].copy_from_slice(&l[1..]);
        out[hs + 4..hs + 6].copy_from_slice(&0u16.to_be_bytes());
        out[hs + 9..hs + 12].copy_from_slice(&l[1..]);
        out
    }
}

/// The cookie of a HelloVerifyRequest in the first record of `datagram`.
pub fn hello_verify_cookie(datagram: &[u8]) -> Option<&[u8]> {
    if *datagram.first()? != CONTENT_HANDSHAKE {
        return None;
    }
    let rec_len = u16_at(datagram, 11)? as usize;
    let hs = datagram.get(RECORD_HEADER..RECORD_HEADER + rec_len)?;
    if *hs.first()? != HS_HELLO_VERIFY_REQUEST {
        return None;
    }
    // body: server_version(2) cookie<0..255>
    let body = hs.get(HANDSHAKE_HEADER..)?;
    let len = *body.get(2)? as usize;
    body.get(3..3 + len)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal DTLS 1.2 ClientHello record with `cookie`, message_seq `seq`.
    pub(crate) fn client_hello(cookie: &[u8], seq: u16) -> Vec<u8> {
        let mut body = vec![0xfe, 0xfd];
        body.extend((0..32u8).map(|i| i + 1));
        body.push(0); // session id
        body.push(cookie.len() as u8);
        body.extend_from_slice(cookie);
        body.extend_from_slice(&[0, 4, 0xC0, 0xA8, 0xC0, 0x2B]);
        body.extend_from_slice(&[1, 0]); // compression: null
        body.extend_from_slice(&[0, 0]); // no extensions
        let mut hs = vec![1];
        let l = (body.len() as u32).to_be_bytes();
        hs.extend_from_slice(&l[1..]);
        hs.extend_from_slice(&seq.to_be_bytes());
        hs.extend_from_slice(&[0, 0, 0]);
        hs.extend_from_slice(&l[1..]);
        hs.extend_from_slice(&body);
        let mut rec = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 7];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend_from_slice(&hs);
        rec
    }

    #[test]
    fn a_client_hello_is_recognised_with_its_random_cookie_and_suites() {
        let d = client_hello(&[9; 32], 1);
        assert_eq!(first_record(&d), FirstRecord::ClientHello);
        let ch = ClientHello::parse(&d).unwrap();
        assert_eq!(ch.message_seq, 1);
        assert_eq!(ch.cookie, &[9; 32]);
        assert_eq!(ch.random[0], 1);
        assert!(ch.offers(PSK_AES128_CCM_8));
        assert!(ch.offers_non_psk());
        assert!(!ch.offers(0x1234));
    }

    #[test]
    fn without_cookie_gives_the_first_client_hello_back() {
        let with = client_hello(&[9; 32], 1);
        let mut without = client_hello(&[], 0);
        without[5..11].fill(0);
        assert_eq!(ClientHello::parse(&with).unwrap().without_cookie(), without);
        let again = ClientHello::parse(&without).unwrap();
        assert!(again.cookie.is_empty());
        assert_eq!(again.message_seq, 0);
    }

    #[test]
    fn truncations_and_garbage_are_refused_without_panicking() {
        let d = client_hello(&[9; 32], 1);
        for n in 0..d.len() {
            let _ = first_record(&d[..n]);
            assert!(ClientHello::parse(&d[..n]).is_none(), "prefix {n}");
            let _ = hello_verify_cookie(&d[..n]);
        }
        for b in 0..=255u8 {
            let mut e = d.clone();
            e[25] = b;
            let _ = ClientHello::parse(&e).map(|c| c.without_cookie());
        }
        assert_eq!(first_record(b"\x40\x01\x00\x01"), FirstRecord::Garbage);
        // Found by the fuzzer: a TLS-versioned record is no DTLS ClientHello either.
        let mut tls = client_hello(&[], 0);
        tls[1] = 0x03;
        assert_eq!(first_record(&tls), FirstRecord::Garbage);
        assert!(ClientHello::parse(&tls).is_none());
    }

    #[test]
    fn a_fragmented_client_hello_is_not_taken() {
        let mut d = client_hello(&[], 0);
        // fragment_length one short of length
        d[RECORD_HEADER + 11] -= 1;
        assert!(ClientHello::parse(&d).is_none());
    }
}
