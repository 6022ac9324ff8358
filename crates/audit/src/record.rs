//! One record: its deterministic encoding, its hash, and the parsing and checking of a line.
//! Pure: bytes in, bytes or a verdict out (the crate header defines the format).

use std::io::Write as _;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use wardgate_core::audit::{AuditEvent, AuditKind};

use crate::key::Signer;

/// `prev` of the first record of a log (seq 1): 64 zeros.
pub const GENESIS_PREV: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Format version written in `v`.
pub(crate) const VERSION: u64 = 1;

/// Longest line the verifier (and the resume logic) reads; the writer keeps far below it by
/// capping each free-text field at [`MAX_FIELD`].
pub(crate) const MAX_LINE: usize = 64 * 1024;
/// Longest `actor`/`subject` kept, in bytes; longer ones (a hostile claimed identity) are cut
/// at a character boundary and end in `…`.
pub(crate) const MAX_FIELD: usize = 512;

/// A chain hash (SHA-256).
pub(crate) type Hash = [u8; 32];

/// What a record says happened: one of core's [`AuditKind`]s or one of this crate's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordKind {
    /// A security event from a component.
    Event(AuditKind),
    /// The log was opened: the first record of a new log and of every restart.
    Started,
    /// The log was closed cleanly.
    Stopped,
    /// The previous file's tail was damaged; this record starts a new file after it.
    ChainBroken,
}

impl RecordKind {
    /// The wire name (`auth_failure`, `audit_started`).
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Event(k) => k.as_str(),
            RecordKind::Started => "audit_started",
            RecordKind::Stopped => "audit_stopped",
            RecordKind::ChainBroken => "chain_broken",
        }
    }
}

/// A record's content before it is stamped with seq, time and chain.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Draft {
    pub(crate) kind: RecordKind,
    pub(crate) actor: Option<String>,
    pub(crate) peer: Option<String>,
    pub(crate) transport: Option<&'static str>,
    pub(crate) subject: Option<String>,
    pub(crate) reason: &'static str,
    pub(crate) dropped_before: u64,
    /// `chain_broken` only: the last record that still checked, if any.
    pub(crate) last_good: Option<(u64, Hash)>,
}

impl Draft {
    /// An internal record (`audit_started`, ...).
    pub(crate) fn internal(kind: RecordKind, reason: &'static str) -> Self {
        // An empty core event (its kind replaced), so the two stay alike field for field.
        let mut d = Draft::from_event(AuditEvent::new(AuditKind::AdminAction, reason), 0);
        d.kind = kind;
        d
    }

    pub(crate) fn from_event(e: AuditEvent, dropped_before: u64) -> Self {
        Draft {
            kind: RecordKind::Event(e.kind),
            actor: e.actor.map(capped),
            peer: e.peer.map(|p| p.to_string()),
            transport: e.transport.map(|t| t.as_str()),
            subject: e.subject.map(capped),
            reason: e.reason,
            dropped_before,
            last_good: None,
        }
    }
}

fn capped(mut s: String) -> String {
    if s.len() > MAX_FIELD {
        let mut end = MAX_FIELD;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

/// Appends `draft` as one line (with its `\n`) to `out` and returns its hash.
pub(crate) fn encode(
    draft: &Draft,
    seq: u64,
    ts: &str,
    prev: &Hash,
    signer: Option<&Signer>,
    out: &mut Vec<u8>,
) -> Hash {
    let start = out.len();
    // Writing into a Vec cannot fail, and serde_json cannot fail on a &str.
    let _ = write!(out, "{{\"v\":{VERSION},\"seq\":{seq},\"ts\":");
    json_str(out, ts);
    out.extend_from_slice(b",\"kind\":");
    json_str(out, draft.kind.as_str());
    for (name, value) in [
        ("actor", draft.actor.as_deref()),
        ("peer", draft.peer.as_deref()),
        ("transport", draft.transport),
        ("subject", draft.subject.as_deref()),
    ] {
        if let Some(v) = value {
            let _ = write!(out, ",\"{name}\":");
            json_str(out, v);
        }
    }
    out.extend_from_slice(b",\"reason\":");
    json_str(out, draft.reason);
    if draft.dropped_before > 0 {
        let _ = write!(out, ",\"dropped_before\":{}", draft.dropped_before);
    }
    if let Some((s, h)) = &draft.last_good {
        let _ = write!(
            out,
            ",\"last_good_seq\":{s},\"last_good_hash\":\"{}\"",
            hex(h)
        );
    }
    let _ = write!(out, ",\"prev\":\"{}\"", hex(prev));
    let hash = hash_of_body(&out[start..]);
    let _ = write!(out, ",\"hash\":\"{}\"", hex(&hash));
    if let Some(s) = signer {
        let _ = write!(out, ",\"mac\":\"{}\"", hex(&s.sign(&hash)));
    }
    out.extend_from_slice(b"}\n");
    hash
}

fn json_str(out: &mut Vec<u8>, s: &str) {
    let _ = serde_json::to_writer(&mut *out, s);
}

/// SHA-256 of `body` (a line up to, not including, `,"hash":`) followed by `}`.
fn hash_of_body(body: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update(body);
    h.update(b"}");
    h.finalize().into()
}

/// The fields the verifier and the resume logic read; any others are covered by the hash.
#[derive(Debug, Deserialize)]
struct Wire {
    v: u64,
    seq: u64,
    kind: String,
    prev: String,
    hash: String,
    #[serde(default)]
    mac: Option<String>,
    #[serde(default)]
    dropped_before: Option<u64>,
}

/// A line that parsed and whose hash recomputes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Checked {
    pub(crate) seq: u64,
    pub(crate) kind: String,
    pub(crate) prev: Hash,
    pub(crate) hash: Hash,
    pub(crate) mac: Option<Hash>,
    pub(crate) dropped_before: u64,
}

/// Why a line is not a good record on its own (before any chain check).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LineError {
    /// Not JSON, or missing/mistyped fields.
    Unparsable(String),
    /// Parsed, but a version this verifier does not know.
    Version(u64),
    /// `hash`/`mac` are not the last fields, or are not 64 lower-case hex digits.
    NotCanonical { seq: u64 },
    /// The recomputed hash differs: the record was edited.
    HashMismatch { seq: u64 },
}

/// Parses a line (without its `\n`) and recomputes its hash.
pub(crate) fn check_line(line: &[u8]) -> Result<Checked, LineError> {
    // serde_json's message may quote a short piece of the line: the operator's own audit
    // file, which holds no secrets by construction.
    let wire: Wire =
        serde_json::from_slice(line).map_err(|e| LineError::Unparsable(e.to_string()))?;
    if wire.v != VERSION {
        return Err(LineError::Version(wire.v));
    }
    let seq = wire.seq;
    let not_canonical = LineError::NotCanonical { seq };
    let hash = hex32(&wire.hash).ok_or_else(|| not_canonical.clone())?;
    let prev = hex32(&wire.prev).ok_or_else(|| not_canonical.clone())?;
    let mac = match &wire.mac {
        Some(m) => Some(hex32(m).ok_or_else(|| not_canonical.clone())?),
        None => None,
    };
    let suffix = match &wire.mac {
        Some(m) => format!(",\"hash\":\"{}\",\"mac\":\"{m}\"}}", wire.hash),
        None => format!(",\"hash\":\"{}\"}}", wire.hash),
    };
    let body = line
        .strip_suffix(suffix.as_bytes())
        .ok_or_else(|| not_canonical.clone())?;
    if hash_of_body(body) != hash {
        return Err(LineError::HashMismatch { seq });
    }
    Ok(Checked {
        seq,
        kind: wire.kind,
        prev,
        hash,
        mac,
        dropped_before: wire.dropped_before.unwrap_or(0),
    })
}

/// Just the seq of a line, for the verifier's look-ahead after a gap.
pub(crate) fn seq_of(line: &[u8]) -> Option<u64> {
    #[derive(Deserialize)]
    struct SeqOnly {
        seq: u64,
    }
    serde_json::from_slice::<SeqOnly>(line).ok().map(|s| s.seq)
}

/// Lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

/// Decodes hex digits (either case); `None` on an odd count or a non-digit.
pub(crate) fn hex_decode(digits: &[u8]) -> Option<Vec<u8>> {
    if digits.len() % 2 != 0 {
        return None;
    }
    digits
        .chunks_exact(2)
        .map(|pair| {
            let hi = char::from(pair[0]).to_digit(16)?;
            let lo = char::from(pair[1]).to_digit(16)?;
            u8::try_from(hi * 16 + lo).ok()
        })
        .collect()
}

/// Exactly 64 lower-case hex digits, as written.
fn hex32(s: &str) -> Option<Hash> {
    if s.len() != 64 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    hex_decode(s.as_bytes())?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use wardgate_core::peer::TransportKind;

    fn line_of(draft: &Draft, seq: u64, prev: &Hash, signer: Option<&Signer>) -> (Vec<u8>, Hash) {
        let mut out = Vec::new();
        let h = encode(
            draft,
            seq,
            "2026-01-02T03:04:05.678Z",
            prev,
            signer,
            &mut out,
        );
        (out, h)
    }

    #[test]
    fn the_hash_covers_the_line_up_to_the_hash_field_closed_by_a_brace() {
        let d = Draft::internal(RecordKind::Started, "new_log");
        let (line, hash) = line_of(&d, 1, &[0; 32], None);
        let text = String::from_utf8(line).unwrap();
        let body = text.split(",\"hash\":").next().unwrap().to_owned() + "}";
        let expected: Hash = Sha256::digest(body.as_bytes()).into();
        assert_eq!(hash, expected);
        assert_eq!(
            text,
            format!(
                "{{\"v\":1,\"seq\":1,\"ts\":\"2026-01-02T03:04:05.678Z\",\"kind\":\"audit_started\",\"reason\":\"new_log\",\"prev\":\"{GENESIS_PREV}\",\"hash\":\"{}\"}}\n",
                hex(&hash)
            )
        );
    }

    #[test]
    fn an_event_with_every_field_round_trips_through_check_line() {
        let peer: SocketAddr = "[fe80::1]:5684".parse().unwrap();
        let e = AuditEvent::new(AuditKind::AuthFailure, "bad_mac")
            .actor("claimed-psk:bed-\"9\"\n")
            .peer(peer, TransportKind::Dtls)
            .subject("dev/é");
        let signer = Signer::new(&[7; 32]).unwrap();
        let (line, hash) = line_of(&Draft::from_event(e, 3), 42, &[9; 32], Some(&signer));
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        let c = check_line(line.strip_suffix(b"\n").unwrap()).unwrap();
        assert_eq!(
            (c.seq, c.prev, c.hash, c.dropped_before),
            (42, [9; 32], hash, 3)
        );
        assert_eq!(c.kind, "auth_failure");
        assert!(signer.check(&c.hash, &c.mac.unwrap()));
    }

    #[test]
    fn one_changed_byte_is_a_hash_mismatch() {
        let (line, _) = line_of(
            &Draft::internal(RecordKind::Started, "new_log"),
            5,
            &[1; 32],
            None,
        );
        let text = String::from_utf8(line)
            .unwrap()
            .replace("new_log", "new_lag");
        assert_eq!(
            check_line(text.trim_end().as_bytes()),
            Err(LineError::HashMismatch { seq: 5 })
        );
    }
}
