//! Session secrets for decrypting captures, in the terms of the NSS key log format that
//! Wireshark and tshark read (`CLIENT_RANDOM <client random> <master secret>`).
//!
//! dimpl exposes no secrets of its sessions, so for PSK sessions they are derived again from
//! what is public plus the key the transport already looked up: the handshake messages sent in
//! clear (epoch 0) are kept per session while it handshakes, and once the library reports the
//! session established, the master secret is computed as RFC 5246 §8.1 (or RFC 7627 §4 with the
//! extended master secret, which dimpl always negotiates) from the RFC 4279 §2 premaster secret
//! of the PSK. Certificate (ECDHE) sessions cannot be derived: their premaster secret is the
//! library's ephemeral key, which it never shows.
//!
//! Only done when a tap asks for it ([`wardgate_core::DatagramTap::wants_session_keys`]): the
//! transcript costs a copy of each handshake message (at most [`MAX_TRANSCRIPT`] bytes a
//! session) and the derivation a few HMACs per handshake.
//!
//! Pure and total: any bytes go in, nothing panics; what cannot be derived says why.

use std::collections::BTreeMap;

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// Most handshake bytes kept for one session; a handshake larger than this (only certificate
/// chains are) is not derivable anyway.
pub(crate) const MAX_TRANSCRIPT: usize = 16 * 1024;

/// RFC 6347 §4.1 record header: type, version (2), epoch (2), sequence number (6), length (2).
const RECORD_HEADER: usize = 13;
/// RFC 6347 §4.2.2 handshake header: type, length (3), message_seq (2), fragment offset (3) and
/// length (3).
const HANDSHAKE_HEADER: usize = 12;
const CONTENT_HANDSHAKE: u8 = 22;

const CLIENT_HELLO: u8 = 1;
const SERVER_HELLO: u8 = 2;
const HELLO_VERIFY_REQUEST: u8 = 3;
const CERTIFICATE: u8 = 11;
const SERVER_KEY_EXCHANGE: u8 = 12;
const CERTIFICATE_REQUEST: u8 = 13;
const SERVER_HELLO_DONE: u8 = 14;
const CLIENT_KEY_EXCHANGE: u8 = 16;

/// RFC 7627's `extended_master_secret` extension.
const EXTENDED_MASTER_SECRET: u16 = 0x0017;

/// PSK key exchange suites whose PRF is SHA-256 (RFC 6655, RFC 5487): the ones whose secrets
/// this module can derive.
const PSK_SHA256_SUITES: [u16; 4] = [
    0xC0A8, // TLS_PSK_WITH_AES_128_CCM_8
    0xC0A4, // TLS_PSK_WITH_AES_128_CCM
    0x00A8, // TLS_PSK_WITH_AES_128_GCM_SHA256
    0x00AE, // TLS_PSK_WITH_AES_128_CBC_SHA256
];

/// What a key log line holds.
pub(crate) struct SessionKeys {
    pub(crate) client_random: [u8; 32],
    pub(crate) master_secret: [u8; 48],
}

impl Drop for SessionKeys {
    fn drop(&mut self) {
        self.master_secret.fill(0);
        std::hint::black_box(&self.master_secret);
    }
}

/// One handshake message, as its fragments arrive.
struct Message {
    kind: u8,
    body: Vec<u8>,
    /// Byte ranges of `body` received (merged, sorted).
    have: Vec<(usize, usize)>,
}

impl Message {
    fn complete(&self) -> bool {
        self.have.first() == Some(&(0, self.body.len())) || self.body.is_empty()
    }

    fn add(&mut self, offset: usize, fragment: &[u8]) {
        let end = offset + fragment.len();
        let Some(slot) = self.body.get_mut(offset..end) else {
            return;
        };
        slot.copy_from_slice(fragment);
        self.have.push((offset, end));
        self.have.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::with_capacity(self.have.len());
        for &(a, b) in &self.have {
            match merged.last_mut() {
                Some(last) if a <= last.1 => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        self.have = merged;
    }

    /// The message as the handshake hash sees it (RFC 6347 §4.2.6): one unfragmented piece.
    fn hash_into(&self, seq: u16, h: &mut Sha256) {
        let len = u24(self.body.len());
        h.update([self.kind]);
        h.update(len);
        h.update(seq.to_be_bytes());
        h.update([0, 0, 0]);
        h.update(len);
        h.update(&self.body);
    }
}

fn u24(n: usize) -> [u8; 3] {
    let b = (n as u32).to_be_bytes();
    [b[1], b[2], b[3]]
}

fn read_u24(b: &[u8]) -> usize {
    (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2])
}

/// The clear handshake messages of one session, both directions.
#[derive(Default)]
pub(crate) struct Transcript {
    client: BTreeMap<u16, Message>,
    server: BTreeMap<u16, Message>,
    bytes: usize,
    /// Past [`MAX_TRANSCRIPT`]: nothing more is kept and nothing can be derived.
    overflow: bool,
}

impl Transcript {
    /// Keeps the epoch-0 handshake fragments of one datagram sent by the client
    /// (`from_client`) or the server. Retransmissions and HelloVerifyRequests are ignored.
    pub(crate) fn observe(&mut self, from_client: bool, datagram: &[u8]) {
        let mut at = 0usize;
        while let Some(header) = datagram.get(at..at + RECORD_HEADER) {
            let len = usize::from(u16::from_be_bytes([header[11], header[12]]));
            let body_at = at + RECORD_HEADER;
            let Some(body) = datagram.get(body_at..body_at + len) else {
                return;
            };
            let epoch = u16::from_be_bytes([header[3], header[4]]);
            if header[0] == CONTENT_HANDSHAKE && epoch == 0 {
                self.fragments(from_client, body);
            }
            at = body_at + len;
        }
    }

    fn fragments(&mut self, from_client: bool, mut body: &[u8]) {
        while let Some(h) = body.get(..HANDSHAKE_HEADER) {
            let kind = h[0];
            let length = read_u24(&h[1..4]);
            let seq = u16::from_be_bytes([h[4], h[5]]);
            let offset = read_u24(&h[6..9]);
            let frag_len = read_u24(&h[9..12]);
            let Some(fragment) = body.get(HANDSHAKE_HEADER..HANDSHAKE_HEADER + frag_len) else {
                return;
            };
            body = &body[HANDSHAKE_HEADER + frag_len..];
            if kind == HELLO_VERIFY_REQUEST || offset + frag_len > length {
                continue;
            }
            let side = if from_client {
                &mut self.client
            } else {
                &mut self.server
            };
            let m = match side.entry(seq) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => {
                    if self.overflow || self.bytes + length > MAX_TRANSCRIPT {
                        self.overflow = true;
                        continue;
                    }
                    self.bytes += length;
                    e.insert(Message {
                        kind,
                        body: vec![0; length],
                        have: Vec::new(),
                    })
                }
            };
            if m.kind == kind {
                m.add(offset, fragment);
            }
        }
    }

    /// The session's secrets, given the PSK that completed it; `Err` names why they cannot be
    /// derived (`not_psk` for a certificate session, `incomplete` when a message is missing).
    pub(crate) fn derive(&self, psk: &[u8]) -> Result<SessionKeys, &'static str> {
        if self.overflow {
            return Err("too_large");
        }
        let complete = |m: &&Message| m.complete();
        // After a HelloVerifyRequest the client sends its ClientHello again, with the cookie and
        // the next message_seq; only that one is in the handshake hash (RFC 6347 §4.2.6).
        let (&hello_seq, hello) = self
            .client
            .iter()
            .rfind(|(_, m)| m.kind == CLIENT_HELLO)
            .filter(|(_, m)| m.complete())
            .ok_or("incomplete")?;
        let (&server_hello_seq, server_hello) = self
            .server
            .iter()
            .find(|(_, m)| m.kind == SERVER_HELLO)
            .filter(|(_, m)| m.complete())
            .ok_or("incomplete")?;
        let hello_info = parse_server_hello(&server_hello.body).ok_or("malformed")?;
        if !PSK_SHA256_SUITES.contains(&hello_info.suite) {
            return Err("not_psk");
        }
        let client_random: [u8; 32] = hello
            .body
            .get(2..34)
            .and_then(|r| r.try_into().ok())
            .ok_or("malformed")?;
        let premaster = psk_premaster(psk);
        let mut master_secret = [0u8; 48];
        if hello_info.extended_master_secret {
            let mut h = Sha256::new();
            hello.hash_into(hello_seq, &mut h);
            for (&seq, m) in self.server.range(server_hello_seq..) {
                if !matches!(
                    m.kind,
                    SERVER_HELLO
                        | CERTIFICATE
                        | SERVER_KEY_EXCHANGE
                        | CERTIFICATE_REQUEST
                        | SERVER_HELLO_DONE
                ) {
                    continue;
                }
                if !complete(&m) {
                    return Err("incomplete");
                }
                m.hash_into(seq, &mut h);
            }
            let mut key_exchange = false;
            for (&seq, m) in self.client.range(hello_seq.saturating_add(1)..) {
                if !matches!(m.kind, CERTIFICATE | CLIENT_KEY_EXCHANGE) {
                    continue;
                }
                if !complete(&m) {
                    return Err("incomplete");
                }
                m.hash_into(seq, &mut h);
                key_exchange |= m.kind == CLIENT_KEY_EXCHANGE;
            }
            if !key_exchange {
                return Err("incomplete");
            }
            let session_hash = h.finalize();
            prf_sha256(
                &premaster,
                b"extended master secret",
                &[&session_hash[..]],
                &mut master_secret,
            );
        } else {
            prf_sha256(
                &premaster,
                b"master secret",
                &[&client_random[..], &hello_info.random[..]],
                &mut master_secret,
            );
        }
        Ok(SessionKeys {
            client_random,
            master_secret,
        })
    }
}

struct ServerHelloInfo {
    random: [u8; 32],
    suite: u16,
    extended_master_secret: bool,
}

/// RFC 5246 §7.4.1.3: version (2), random (32), session id (1 + n), cipher suite (2),
/// compression (1), extensions (2 + n), each type (2), length (2), data.
fn parse_server_hello(b: &[u8]) -> Option<ServerHelloInfo> {
    let random: [u8; 32] = b.get(2..34)?.try_into().ok()?;
    let sid_len = usize::from(*b.get(34)?);
    let at = 35 + sid_len;
    let suite = u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?);
    let mut extended_master_secret = false;
    if let Some(len) = b.get(at + 3..at + 5) {
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        let mut ext = b.get(at + 5..at + 5 + len)?;
        while let Some(h) = ext.get(..4) {
            let kind = u16::from_be_bytes([h[0], h[1]]);
            let n = usize::from(u16::from_be_bytes([h[2], h[3]]));
            extended_master_secret |= kind == EXTENDED_MASTER_SECRET;
            ext = ext.get(4 + n..)?;
        }
    }
    Some(ServerHelloInfo {
        random,
        suite,
        extended_master_secret,
    })
}

/// RFC 4279 §2: the premaster secret of plain PSK, `N` zero bytes and the `N`-byte key, each
/// with its 16-bit length. Zeroed on drop.
struct Premaster(Vec<u8>);

impl Drop for Premaster {
    fn drop(&mut self) {
        self.0.fill(0);
        std::hint::black_box(&self.0);
    }
}

impl std::ops::Deref for Premaster {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

fn psk_premaster(psk: &[u8]) -> Premaster {
    let n = u16::try_from(psk.len()).unwrap_or(u16::MAX);
    let psk = &psk[..usize::from(n)];
    let mut out = Vec::with_capacity(4 + 2 * psk.len());
    out.extend_from_slice(&n.to_be_bytes());
    out.resize(2 + psk.len(), 0);
    out.extend_from_slice(&n.to_be_bytes());
    out.extend_from_slice(psk);
    Premaster(out)
}

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC takes a key of any length.
    let Ok(mut m) = <HmacSha256 as KeyInit>::new_from_slice(key) else {
        return [0; 32];
    };
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// RFC 5246 §5: `PRF(secret, label, seed) = P_SHA256(secret, label + seed)`, filling `out`.
fn prf_sha256(secret: &[u8], label: &[u8], seed: &[&[u8]], out: &mut [u8]) {
    let mut label_seed: Vec<&[u8]> = Vec::with_capacity(1 + seed.len());
    label_seed.push(label);
    label_seed.extend_from_slice(seed);
    // A(1) = HMAC(secret, label + seed); A(i) = HMAC(secret, A(i-1)).
    let mut a = hmac(secret, &label_seed);
    for chunk in out.chunks_mut(32) {
        let mut parts: Vec<&[u8]> = Vec::with_capacity(2 + seed.len());
        parts.push(&a);
        parts.extend_from_slice(&label_seed);
        let block = hmac(secret, &parts);
        chunk.copy_from_slice(&block[..chunk.len()]);
        a = hmac(secret, &[&a]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The TLS 1.2 PRF (SHA-256) test vector posted to the IETF TLS list and used by many
    /// implementations' tests.
    #[test]
    fn the_prf_matches_the_published_tls12_sha256_vector() {
        let secret = unhex("9b be 43 6b a9 40 f0 17 b1 76 52 84 9a 71 db 35");
        let seed = unhex("a0 ba 9f 93 6c da 31 18 27 a6 f7 96 ff d5 19 8c");
        let mut out = [0u8; 100];
        prf_sha256(&secret, b"test label", &[&seed], &mut out);
        let expected = unhex(
            "e3 f2 29 ba 72 7b e1 7b 8d 12 26 20 55 7c d4 53 c2 aa b2 1d 07 c3 d4 95 32 9b 52 d4 \
             e6 1e db 5a 6b 30 17 91 e9 0d 35 c9 c9 a4 6b 4e 14 ba f9 af 0f a0 22 f7 07 7d ef 17 \
             ab fd 37 97 c0 56 4b ab 4f bc 91 66 6e 9d ef 9b 97 fc e3 4f 79 67 89 ba a4 80 82 d1 \
             22 ee 42 c5 a7 2e 5a 51 10 ff f7 01 87 34 7b 66",
        );
        assert_eq!(out.to_vec(), expected);
    }

    #[test]
    fn the_psk_premaster_secret_is_zeros_and_the_key_each_with_its_length() {
        assert_eq!(
            &*psk_premaster(&[0xAA, 0xBB]),
            &[0, 2, 0, 0, 0, 2, 0xAA, 0xBB]
        );
    }

    /// A handshake record of one message, possibly a fragment of it.
    fn record(
        epoch: u16,
        kind: u8,
        seq: u16,
        length: usize,
        offset: usize,
        frag: &[u8],
    ) -> Vec<u8> {
        let mut hs = vec![kind];
        hs.extend_from_slice(&u24(length));
        hs.extend_from_slice(&seq.to_be_bytes());
        hs.extend_from_slice(&u24(offset));
        hs.extend_from_slice(&u24(frag.len()));
        hs.extend_from_slice(frag);
        let mut r = vec![CONTENT_HANDSHAKE, 0xfe, 0xfd];
        r.extend_from_slice(&epoch.to_be_bytes());
        r.extend_from_slice(&[0; 6]);
        r.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        r.extend_from_slice(&hs);
        r
    }

    fn server_hello(suite: u16, ems: bool) -> Vec<u8> {
        let mut b = vec![0xfe, 0xfd];
        b.extend_from_slice(&[0x22; 32]);
        b.push(0);
        b.extend_from_slice(&suite.to_be_bytes());
        b.push(0);
        let ext: Vec<u8> = if ems { vec![0x00, 0x17, 0, 0] } else { vec![] };
        b.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        b.extend_from_slice(&ext);
        b
    }

    fn client_hello(random: u8) -> Vec<u8> {
        let mut b = vec![0xfe, 0xfd];
        b.extend_from_slice(&[random; 32]);
        b.extend_from_slice(&[0, 0, 0, 2, 0xC0, 0xA8, 1, 0]);
        b
    }

    /// A PSK handshake with the extended master secret, the client's message fragmented and
    /// retransmitted, a HelloVerifyRequest and an encrypted record in between: the session hash
    /// is over the cookie ClientHello, the server's flight and the ClientKeyExchange, each as
    /// one unfragmented piece.
    #[test]
    fn the_extended_master_secret_is_derived_over_the_unfragmented_transcript() {
        let hello0 = client_hello(0x10);
        let hello1 = client_hello(0x11);
        let sh = server_hello(0xC0A8, true);
        let cke = b"\x00\x06bed-12".to_vec();
        let mut t = Transcript::default();
        t.observe(true, &record(0, CLIENT_HELLO, 0, hello0.len(), 0, &hello0));
        t.observe(
            false,
            &record(0, HELLO_VERIFY_REQUEST, 0, 3, 0, &[0xfe, 0xfd, 0]),
        );
        t.observe(
            true,
            &record(0, CLIENT_HELLO, 1, hello1.len(), 0, &hello1[..10]),
        );
        t.observe(
            true,
            &record(0, CLIENT_HELLO, 1, hello1.len(), 10, &hello1[10..]),
        );
        assert_eq!(t.derive(b"key").err(), Some("incomplete"));
        let mut flight = record(0, SERVER_HELLO, 1, sh.len(), 0, &sh);
        flight.extend(record(0, SERVER_HELLO_DONE, 2, 0, 0, &[]));
        t.observe(false, &flight);
        t.observe(false, &flight); // a retransmission
        let mut last = record(0, CLIENT_KEY_EXCHANGE, 2, cke.len(), 0, &cke);
        last.extend(record(1, 20, 3, 1, 0, &[1])); // epoch 1: not kept
        t.observe(true, &last);
        let keys = t.derive(b"key").unwrap();
        assert_eq!(keys.client_random, [0x11; 32]);

        let mut h = Sha256::new();
        for (kind, seq, body) in [
            (CLIENT_HELLO, 1u16, &hello1),
            (SERVER_HELLO, 1, &sh),
            (SERVER_HELLO_DONE, 2, &Vec::new()),
            (CLIENT_KEY_EXCHANGE, 2, &cke),
        ] {
            h.update(&record(0, kind, seq, body.len(), 0, body)[RECORD_HEADER..]);
        }
        let mut expected = [0u8; 48];
        prf_sha256(
            &psk_premaster(b"key"),
            b"extended master secret",
            &[&h.finalize()[..]],
            &mut expected,
        );
        assert_eq!(keys.master_secret, expected);
    }

    #[test]
    fn without_the_extension_the_master_secret_is_over_both_randoms() {
        let hello = client_hello(0x33);
        let sh = server_hello(0xC0A8, false);
        let mut t = Transcript::default();
        t.observe(true, &record(0, CLIENT_HELLO, 0, hello.len(), 0, &hello));
        t.observe(false, &record(0, SERVER_HELLO, 0, sh.len(), 0, &sh));
        let keys = t.derive(b"key").unwrap();
        let mut expected = [0u8; 48];
        prf_sha256(
            &psk_premaster(b"key"),
            b"master secret",
            &[&[0x33; 32], &[0x22; 32]],
            &mut expected,
        );
        assert_eq!(keys.master_secret, expected);
    }

    #[test]
    fn certificate_sessions_and_hostile_bytes_derive_nothing() {
        let hello = client_hello(1);
        let sh = server_hello(0xC02B, true); // ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        let mut t = Transcript::default();
        t.observe(true, &record(0, CLIENT_HELLO, 0, hello.len(), 0, &hello));
        t.observe(false, &record(0, SERVER_HELLO, 0, sh.len(), 0, &sh));
        assert_eq!(t.derive(b"key").err(), Some("not_psk"));

        let mut t = Transcript::default();
        // A fragment claiming a message past the bound, one past its own length, and garbage.
        t.observe(
            true,
            &record(0, CLIENT_HELLO, 0, MAX_TRANSCRIPT + 1, 0, &[1]),
        );
        t.observe(true, &record(0, CLIENT_HELLO, 1, 4, 2, &[1, 2, 3]));
        for n in 0..64u8 {
            t.observe(n % 2 == 0, &vec![CONTENT_HANDSHAKE; usize::from(n)]);
        }
        assert_eq!(t.derive(b"key").err(), Some("too_large"));
    }
}
