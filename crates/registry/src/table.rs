//! The compiled registry: what lookups on socket tasks read. Built (and validated) from a
//! [`RegistryFile`] in one pass that records every problem; never mutated after that (an edit
//! builds a new table and swaps it in).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use subtle::ConstantTimeEq;
use wardgate_core::reading::valid_device_id;
use wardgate_core::validate::{Problem, Problems};
use wardgate_core::{Identity, IdentityKind, MessageClass, Protocol, Secret, TransportKind};

use crate::file::{DeviceSpec, KeyText, PskSpec, RegistryFile, UnknownPolicy, wipe};
use crate::pattern::Pattern;

/// Protocol names, in bit order: bit `2*p + secure`.
pub(crate) const PROTOCOL_NAMES: [&str; 8] = [
    "coap", "coaps", "lwm2m", "lwm2ms", "mqtt", "mqtts", "http", "https",
];
/// The default: every protocol, over its secure transport only.
const SECURE_PROTOCOLS: u8 = 0b1010_1010;
/// Every class a device may send: not `security`, which is the gateway's own (the pipeline
/// refuses a device's claim to it whatever the ACL says).
const ALL_CLASSES: u8 = 0b1111;
/// PSK key length bounds, bytes (RFC 7925 wants at least 16; 64 is generous).
pub(crate) const KEY_LEN: std::ops::RangeInclusive<usize> = 16..=64;
/// Longest PSK identity accepted (RFC 4279 allows 65535; nobody needs more than this).
pub(crate) const MAX_PSK_IDENTITY: usize = 128;

/// The bit of a request's protocol name: the adapter's protocol, with the `s` form when the
/// transport it arrived on is secure (DTLS, TLS, HTTPS).
pub(crate) fn protocol_bit(protocol: Protocol, transport: TransportKind) -> u8 {
    let base = match protocol {
        Protocol::Coap => 0,
        Protocol::Lwm2m => 2,
        Protocol::Mqtt => 4,
        Protocol::Http => 6,
    };
    1 << (base + u8::from(transport.is_secure()))
}

fn class_bit(c: MessageClass) -> u8 {
    match c {
        MessageClass::Alarm => 1,
        MessageClass::Vital => 2,
        MessageClass::Telemetry => 4,
        MessageClass::Bulk => 8,
        MessageClass::Security => 16,
    }
}

/// Where a PSK came from (shown in views; the key never is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyOrigin {
    Inline,
    Env(String),
    File(PathBuf),
}

#[derive(Debug)]
pub(crate) struct PskEntry {
    pub(crate) identity: Box<str>,
    /// `Debug` prints the length only.
    pub(crate) key: Secret,
    pub(crate) origin: KeyOrigin,
}

/// A compiled device.
#[derive(Debug)]
pub(crate) struct Device {
    pub(crate) id: Box<str>,
    pub(crate) protocols: u8,
    pub(crate) classes: u8,
    pub(crate) resources: Vec<Pattern>,
    pub(crate) speaks_for: Vec<Pattern>,
    pub(crate) revoked: bool,
    pub(crate) psk: Option<PskEntry>,
    pub(crate) token_ids: Vec<Box<str>>,
    pub(crate) certificates: Vec<[u8; 32]>,
}

impl Device {
    pub(crate) fn allows_protocol(&self, bit: u8) -> bool {
        self.protocols & bit != 0
    }
    pub(crate) fn allows_class(&self, c: MessageClass) -> bool {
        self.classes & class_bit(c) != 0
    }
    pub(crate) fn allows_resource(&self, resource: &str) -> bool {
        let r = resource.trim_start_matches('/');
        self.resources.iter().any(|p| p.matches(r))
    }
    pub(crate) fn speaks_for(&self, device: &str) -> bool {
        self.speaks_for.iter().any(|p| p.matches(device))
    }
    pub(crate) fn protocol_names(&self) -> Vec<&'static str> {
        PROTOCOL_NAMES
            .iter()
            .enumerate()
            .filter(|(i, _)| self.protocols & (1 << i) != 0)
            .map(|(_, n)| *n)
            .collect()
    }
    pub(crate) fn class_names(&self) -> Vec<&'static str> {
        MessageClass::ALL
            .iter()
            .filter(|c| self.allows_class(**c))
            .map(|c| c.as_str())
            .collect()
    }
}

/// A token hash; `Debug` names the token, not the hash.
pub(crate) struct TokenEntry {
    hash: [u8; 32],
    device: usize,
    id: Box<str>,
}

impl fmt::Debug for TokenEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenEntry({})", self.id)
    }
}

/// The compiled registry.
#[derive(Debug, Default)]
pub(crate) struct Table {
    pub(crate) unknown: UnknownPolicy,
    pub(crate) devices: Vec<Device>,
    by_id: HashMap<Box<str>, usize>,
    by_psk: HashMap<Box<str>, usize>,
    by_cert: HashMap<[u8; 32], usize>,
    tokens: Vec<TokenEntry>,
}

impl Table {
    pub(crate) fn by_id(&self, id: &str) -> Option<&Device> {
        self.by_id.get(id).and_then(|&i| self.devices.get(i))
    }

    pub(crate) fn by_psk(&self, identity: &str) -> Option<&Device> {
        self.by_psk.get(identity).and_then(|&i| self.devices.get(i))
    }

    /// By certificate fingerprint in hex (either case, colons allowed). Malformed: `None`.
    pub(crate) fn by_certificate(&self, hex: &str) -> Option<&Device> {
        let fp = decode_hex32(hex)?;
        self.by_cert.get(&fp).and_then(|&i| self.devices.get(i))
    }

    /// By token hash, comparing every stored hash in constant time (no early exit), so the
    /// time taken says nothing about how close a guess was.
    pub(crate) fn by_token_hash(&self, hash: &[u8; 32]) -> Option<(&Device, &str)> {
        let mut found = None;
        for e in &self.tokens {
            if bool::from(e.hash.ct_eq(hash)) {
                found = Some(e);
            }
        }
        found.and_then(|e| Some((self.devices.get(e.device)?, &*e.id)))
    }

    /// By a token subject this registry issued (`<device>/<token id>`).
    pub(crate) fn by_token_subject(&self, subject: &str) -> Option<&Device> {
        let (device, token) = subject.split_once('/')?;
        self.by_id(device)
            .filter(|d| d.token_ids.iter().any(|t| &**t == token))
    }

    pub(crate) fn by_identity(&self, identity: &Identity) -> Option<&Device> {
        match identity.kind() {
            IdentityKind::PskIdentity => self.by_psk(identity.value()),
            IdentityKind::CertificateSha256 => self.by_certificate(identity.value()),
            IdentityKind::TokenSubject => self.by_token_subject(identity.value()),
        }
    }
}

/// A table and the key files it read (for the permission check).
#[derive(Debug)]
pub(crate) struct Compiled {
    pub(crate) table: Table,
    pub(crate) key_files: Vec<PathBuf>,
}

/// Validates `file` and compiles it, or returns every problem found. Problems never contain
/// key text.
pub(crate) fn compile(
    file: &RegistryFile,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Compiled, Vec<Problem>> {
    let mut table = Table {
        unknown: file.unknown,
        ..Table::default()
    };
    let mut cx = Cx {
        base,
        env,
        key_files: Vec::new(),
        problems: Problems::new(),
    };
    let mut token_owner: HashMap<[u8; 32], usize> = HashMap::new();
    let mut psk_identities = std::collections::HashSet::new();
    for (i, spec) in file.devices.iter().enumerate() {
        let at = if spec.id.is_empty() {
            format!("device[{i}]")
        } else {
            format!("device[{i}] ({})", printable(&spec.id))
        };
        let dev = compile_device(spec, &at, &mut cx);
        let problems = &mut cx.problems;
        if !valid_device_id(spec.id.as_bytes()) {
            problems.push(
                format!("{at}.id"),
                "must be 1 to 128 letters, digits, '.', '_', ':' or '-'",
            );
        } else if table.by_id.insert(spec.id.as_str().into(), i).is_some() {
            problems.push(format!("{at}.id"), "duplicate device id");
        }
        if let Some(p) = &spec.psk
            && !psk_identities.insert(p.identity.as_str())
        {
            problems.push(
                format!("{at}.psk.identity"),
                "PSK identity already used by another device",
            );
        }
        if let Some(p) = &dev.psk {
            table.by_psk.insert(p.identity.clone(), i);
        }
        for (j, fp) in dev.certificates.iter().enumerate() {
            if table.by_cert.insert(*fp, i).is_some() {
                problems.push(
                    format!("{at}.certificate[{j}].sha256"),
                    "certificate already registered (to this or another device)",
                );
            }
        }
        for (j, t) in spec.tokens.iter().enumerate() {
            if let Some(hash) = decode_hex32(&t.sha256) {
                if token_owner.insert(hash, i).is_some() {
                    problems.push(
                        format!("{at}.token[{j}].sha256"),
                        "token hash already registered (to this or another device)",
                    );
                }
                table.tokens.push(TokenEntry {
                    hash,
                    device: i,
                    id: t.id.as_str().into(),
                });
            }
        }
        table.devices.push(dev);
    }
    if cx.problems.is_empty() {
        Ok(Compiled {
            table,
            key_files: cx.key_files,
        })
    } else {
        Err(cx.problems.into_vec())
    }
}

/// What compiling one device needs besides its spec.
struct Cx<'a> {
    /// The directory key files are relative to.
    base: &'a Path,
    env: &'a dyn Fn(&str) -> Option<String>,
    /// Key files read (for the permission check).
    key_files: Vec<PathBuf>,
    problems: Problems,
}

fn compile_device(spec: &DeviceSpec, at: &str, cx: &mut Cx<'_>) -> Device {
    let problems = &mut cx.problems;
    let mut protocols = SECURE_PROTOCOLS;
    if let Some(list) = &spec.protocols {
        protocols = 0;
        non_empty(list, &format!("{at}.protocols"), problems);
        for (j, name) in list.iter().enumerate() {
            match PROTOCOL_NAMES.iter().position(|n| n == name) {
                Some(bit) => protocols |= 1 << bit,
                None => problems.push(
                    format!("{at}.protocols[{j}]"),
                    format!(
                        "unknown protocol {:?} (expected one of {})",
                        printable(name),
                        PROTOCOL_NAMES.join(", ")
                    ),
                ),
            }
        }
    }
    let mut classes = ALL_CLASSES;
    if let Some(list) = &spec.classes {
        classes = 0;
        non_empty(list, &format!("{at}.classes"), problems);
        for (j, name) in list.iter().enumerate() {
            match name.parse::<MessageClass>() {
                Ok(c) => classes |= class_bit(c),
                Err(_) => problems.push(
                    format!("{at}.classes[{j}]"),
                    format!(
                        "unknown message class {:?} (expected alarm, vital, telemetry or bulk)",
                        printable(name)
                    ),
                ),
            }
        }
    }
    let resources = match &spec.resources {
        // The CoAP readings resource and the LwM2M interfaces: register (`rd`), Send (`dp`),
        // bootstrap (`bs`) and notifications (`lwm2m/<path>`).
        None => vec![
            Pattern::exact("v1/readings"),
            Pattern::prefix("v1/readings/"),
            Pattern::exact("rd"),
            Pattern::exact("dp"),
            Pattern::exact("bs"),
            Pattern::prefix("lwm2m/"),
        ],
        Some(list) => {
            non_empty(list, &format!("{at}.resources"), problems);
            patterns(list, &format!("{at}.resources"), false, problems)
        }
    };
    let speaks_for = match &spec.speaks_for {
        None => vec![Pattern::exact(&spec.id)],
        Some(list) => {
            non_empty(list, &format!("{at}.speaks_for"), problems);
            patterns(list, &format!("{at}.speaks_for"), true, problems)
        }
    };
    let psk = spec
        .psk
        .as_ref()
        .and_then(|p| compile_psk(p, &format!("{at}.psk"), cx));
    let problems = &mut cx.problems;
    let mut token_ids: Vec<Box<str>> = Vec::new();
    for (j, t) in spec.tokens.iter().enumerate() {
        let tat = format!("{at}.token[{j}]");
        if !valid_device_id(t.id.as_bytes()) {
            problems.push(
                format!("{tat}.id"),
                "must be 1 to 128 letters, digits, '.', '_', ':' or '-'",
            );
        } else if token_ids.iter().any(|x| **x == *t.id) {
            problems.push(format!("{tat}.id"), "duplicate token id in this device");
        }
        token_ids.push(t.id.as_str().into());
        if decode_hex32(&t.sha256).is_none() {
            problems.push(
                format!("{tat}.sha256"),
                "must be the 64 hex digits of a SHA-256 (the hash of the token, never the token)",
            );
        }
    }
    let mut certificates = Vec::new();
    for (j, c) in spec.certificates.iter().enumerate() {
        match decode_hex32(&c.sha256) {
            Some(fp) => certificates.push(fp),
            None => problems.push(
                format!("{at}.certificate[{j}].sha256"),
                "must be the 64 hex digits (colons allowed) of the certificate's SHA-256",
            ),
        }
    }
    Device {
        id: spec.id.as_str().into(),
        protocols,
        classes,
        resources,
        speaks_for,
        revoked: spec.revoked,
        psk,
        token_ids,
        certificates,
    }
}

fn non_empty(list: &[String], at: &str, problems: &mut Problems) {
    if list.is_empty() {
        problems.push(
            at,
            "is empty, which would allow nothing (leave the field out for the default)",
        );
    }
}

fn patterns(list: &[String], at: &str, device_ids: bool, problems: &mut Problems) -> Vec<Pattern> {
    let mut out = Vec::with_capacity(list.len());
    for (j, text) in list.iter().enumerate() {
        let text = if device_ids {
            text.as_str()
        } else {
            text.trim_start_matches('/')
        };
        match Pattern::parse(text) {
            Ok(p) => {
                let literal = text.replace('*', "");
                if device_ids && !literal.is_empty() && !valid_device_id(literal.as_bytes()) {
                    problems.push(
                        format!("{at}[{j}]"),
                        "may hold only device-id characters and one '*'",
                    );
                } else {
                    out.push(p);
                }
            }
            Err(why) => problems.push(format!("{at}[{j}]"), format!("pattern {why}")),
        }
    }
    out
}

fn compile_psk(p: &PskSpec, at: &str, cx: &mut Cx<'_>) -> Option<PskEntry> {
    let problems = &mut cx.problems;
    let mut ok = true;
    if p.identity.is_empty()
        || p.identity.len() > MAX_PSK_IDENTITY
        || !p.identity.bytes().all(|b| (0x20..0x7f).contains(&b))
    {
        problems.push(
            format!("{at}.identity"),
            "must be 1 to 128 printable ASCII characters",
        );
        ok = false;
    }
    let key = match (&p.key, &p.key_file) {
        (Some(_), Some(_)) | (None, None) => {
            problems.push(at, "needs exactly one of `key` and `key_file`");
            None
        }
        (Some(k), None) => inline_key(k, &format!("{at}.key"), cx.env, problems),
        (None, Some(file)) => {
            let path = cx.base.join(file);
            cx.key_files.push(path.clone());
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    let r = decode_key(&text);
                    wipe(text);
                    report(r, &format!("{at}.key_file"), "the key file", problems)
                        .map(|k| (k, KeyOrigin::File(file.clone())))
                }
                Err(e) => {
                    problems.push(
                        format!("{at}.key_file"),
                        format!("cannot read key file {}: {e}", path.display()),
                    );
                    None
                }
            }
        }
    };
    let (key, origin) = key?;
    ok.then(|| PskEntry {
        identity: p.identity.as_str().into(),
        key,
        origin,
    })
}

fn inline_key(
    k: &KeyText,
    at: &str,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Problems,
) -> Option<(Secret, KeyOrigin)> {
    match k.env_var() {
        Some(var) => match env(var) {
            Some(text) => {
                let r = decode_key(&text);
                wipe(text);
                let what = format!("the value of ${{{var}}}");
                report(r, at, &what, problems).map(|s| (s, KeyOrigin::Env(var.to_owned())))
            }
            None => {
                problems.push(at, format!("environment variable {var} is not set"));
                None
            }
        },
        None if k.text().starts_with("${") => {
            problems.push(at, "must be `hex:…` or exactly `${VAR}`");
            None
        }
        None => {
            report(decode_key(k.text()), at, "the key", problems).map(|s| (s, KeyOrigin::Inline))
        }
    }
}

fn report(
    r: Result<Secret, KeyProblem>,
    at: &str,
    what: &str,
    problems: &mut Problems,
) -> Option<Secret> {
    match r {
        Ok(s) => Some(s),
        Err(KeyProblem::NotHex) => {
            problems.push(
                at,
                format!(
                    "{what} is not hex (expected `hex:` and an even number of hex digits, or `text:` and the key as it is)"
                ),
            );
            None
        }
        Err(KeyProblem::Length(n)) => {
            problems.push(
                at,
                format!(
                    "{what} is {n} bytes; a PSK must be {} to {} bytes",
                    KEY_LEN.start(),
                    KEY_LEN.end()
                ),
            );
            None
        }
    }
}

/// Why key text was refused. Carries no key material.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyProblem {
    NotHex,
    Length(usize),
}

/// Key text: hex digits, optionally after `hex:`, surrounding whitespace ignored; or `text:`
/// and the key's bytes as they are (what libcoap's `-k` and many devices take).
fn decode_key(text: &str) -> Result<Secret, KeyProblem> {
    let key = match text.strip_prefix("text:") {
        Some(raw) => Secret::new(raw.as_bytes().to_vec()),
        None => {
            let t = text.trim();
            let t = t.strip_prefix("hex:").unwrap_or(t);
            Secret::new(decode_hex(t).ok_or(KeyProblem::NotHex)?)
        }
    };
    if KEY_LEN.contains(&key.len()) {
        Ok(key)
    } else {
        Err(KeyProblem::Length(key.len()))
    }
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Hex to bytes; `None` on any non-hex digit or an odd count. The partial output of a failed
/// decode is wiped (it may be most of a key).
pub(crate) fn decode_hex(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if b.len() % 2 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(b.len() / 2);
    for pair in b.chunks_exact(2) {
        let byte = match pair {
            [h, l] => nibble(*h).zip(nibble(*l)).map(|(h, l)| (h << 4) | l),
            _ => None,
        };
        match byte {
            Some(x) => out.push(x),
            None => {
                drop(Secret::new(out));
                return None;
            }
        }
    }
    Some(out)
}

/// 64 hex digits (either case; `:` separators skipped) to 32 bytes, without allocating.
pub(crate) fn decode_hex32(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    let mut n = 0usize;
    let mut hi: Option<u8> = None;
    for c in s.bytes() {
        if c == b':' {
            continue;
        }
        let v = nibble(c)?;
        match hi.take() {
            None => hi = Some(v),
            Some(h) => {
                *out.get_mut(n)? = (h << 4) | v;
                n += 1;
            }
        }
    }
    (n == 32 && hi.is_none()).then_some(out)
}

/// Lower-case hex of bytes (fingerprints in views).
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

/// A user-supplied name as it may appear in a problem: printable ASCII, at most 64 chars.
pub(crate) fn printable(s: &str) -> String {
    s.chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex32_accepts_colons_and_either_case() {
        let lower = "00".repeat(31) + "ab";
        let upper_colons = format!("{}:AB", vec!["00"; 31].join(":"));
        assert_eq!(decode_hex32(&lower), decode_hex32(&upper_colons));
        assert!(decode_hex32(&lower).is_some());
        assert!(decode_hex32("abc").is_none());
        assert!(decode_hex32(&"00".repeat(33)).is_none());
    }

    #[test]
    fn keys_are_hex_or_text() {
        let hex = decode_key("hex:7761726421776172642177617264212a").ok();
        let text = decode_key("text:ward!ward!ward!*").ok();
        assert!(hex.is_some());
        assert_eq!(
            hex.as_ref().map(|k| k.expose().to_vec()),
            text.as_ref().map(|k| k.expose().to_vec())
        );
        assert_eq!(decode_key("text:short").err(), Some(KeyProblem::Length(5)));
        assert_eq!(decode_key("ward!").err(), Some(KeyProblem::NotHex));
    }

    #[test]
    fn protocol_bits_follow_the_names() {
        assert_eq!(
            PROTOCOL_NAMES
                [protocol_bit(Protocol::Coap, TransportKind::Dtls).trailing_zeros() as usize],
            "coaps"
        );
        assert_eq!(
            PROTOCOL_NAMES
                [protocol_bit(Protocol::Http, TransportKind::Http).trailing_zeros() as usize],
            "http"
        );
        assert_eq!(
            PROTOCOL_NAMES
                [protocol_bit(Protocol::Mqtt, TransportKind::Tls).trailing_zeros() as usize],
            "mqtts"
        );
    }
}
