//! The stateless front: everything that happens to a datagram from an address that has no
//! session yet, before the gateway keeps a byte of state for it.
//!
//! RFC 6347 §4.2.1 wants the server to answer a ClientHello with a HelloVerifyRequest whose
//! cookie it can check later without having remembered anything. The library (dimpl) keeps that
//! cookie's secret inside each connection object, so the usual trick, a cookie check in front of
//! the library, would make the library refuse the cookie-bearing ClientHello (it expects its own
//! cookie, and message_seq 0 from a fresh instance). Instead every connection object of one
//! *cookie epoch* is built from one [`Config`] whose RNG seed is fixed for that epoch, so they
//! all derive the same cookie secret:
//!
//! - a ClientHello without a (valid) cookie: a throw-away instance of the current epoch answers
//!   it with the HelloVerifyRequest, and is dropped at once (≈5 µs, nothing kept);
//! - a ClientHello with a cookie: a fresh instance of the epoch is shown the same ClientHello as
//!   first sent (no cookie, message_seq 0; `record::ClientHello::without_cookie`), produces its
//!   HelloVerifyRequest, and the two cookies are compared in constant time. Only when they match
//!   does that instance, now expecting exactly this cookie-bearing ClientHello, become the
//!   peer's session. The previous epoch is tried too, so a cookie stays valid across one
//!   rotation.
//!
//! What the fixed seed costs, and why it is acceptable: the seed drives only dimpl's
//! non-cryptographic randomness (cookie secret, timer jitter, the server random's 28 bytes,
//! explicit record nonces); key exchange keys come from the OS RNG. Session keys still differ per
//! session because the client random does, and nonces only need to be unique per key. What the
//! server random would otherwise add, freshness against a replayed client flight, is restored by
//! accepting each client random at most once per epoch ([`Replays`]), and the epoch (so the
//! seed) changes every `cookie_rotation`. The seed is 64 bits from the OS RNG, so the cookie
//! secret is as hard to guess as a 64-bit key: enough for what a cookie protects (address
//! ownership against spoofing), not used for anything secret.

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dimpl::crypto::Dtls12CipherSuite;
use dimpl::{Config, Dtls, Output, PskResolver};
use sha2::{Digest, Sha256};
use wardgate_core::CredentialStore;

use crate::config::DtlsConfig;

/// What the key resolver saw during the last `handle_packet`: the identity the peer claimed and,
/// if a device holds it, a fingerprint of the key it was given (to notice re-keying later).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Claimed {
    /// The identity in printable form (hex if it is not short, clean UTF-8).
    pub(crate) identity: String,
    /// Whether the registry knew it (and the bytes were a valid UTF-8 identity).
    pub(crate) known: bool,
    /// SHA-256 of the key handed to the library, when known.
    pub(crate) key_fingerprint: Option<[u8; 32]>,
}

/// The PSK resolver every connection object of this transport shares. Handshakes are processed
/// one at a time under the transport's lock, so "what the last call saw" is the identity of the
/// connection being processed.
pub(crate) struct KeyResolver {
    store: AssertUnwindSafe<Arc<dyn CredentialStore>>,
    seen: Mutex<Option<Claimed>>,
}

impl std::fmt::Debug for KeyResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyResolver").finish_non_exhaustive()
    }
}

/// Longest identity shown as text (RFC 7925 §4.2: identities are short, printable).
const MAX_PRINTABLE_IDENTITY: usize = 128;

/// A hostile identity must not put control characters or megabytes into a log or the audit
/// trail: printable short UTF-8 is kept, anything else becomes `hex:` of its first 32 bytes.
pub(crate) fn printable_identity(raw: &[u8]) -> (String, bool) {
    match std::str::from_utf8(raw) {
        Ok(s)
            if !s.is_empty()
                && s.len() <= MAX_PRINTABLE_IDENTITY
                && !s.chars().any(char::is_control) =>
        {
            (s.to_owned(), true)
        }
        _ => {
            let mut hex = String::from("hex:");
            for b in raw.iter().take(32) {
                hex.push_str(&format!("{b:02x}"));
            }
            (hex, false)
        }
    }
}

impl KeyResolver {
    pub(crate) fn new(store: Arc<dyn CredentialStore>) -> Self {
        KeyResolver {
            store: AssertUnwindSafe(store),
            seen: Mutex::new(None),
        }
    }

    /// Takes what the last `resolve` saw.
    pub(crate) fn take(&self) -> Option<Claimed> {
        self.seen.lock().ok().and_then(|mut s| s.take())
    }

    pub(crate) fn store(&self) -> &Arc<dyn CredentialStore> {
        &self.store
    }
}

/// SHA-256 of a key: how sessions remember which key proved them without keeping the key.
pub(crate) fn fingerprint(key: &[u8]) -> [u8; 32] {
    Sha256::digest(key).into()
}

impl PskResolver for KeyResolver {
    fn resolve(&self, identity: &[u8]) -> Option<Vec<u8>> {
        let (printable, usable) = printable_identity(identity);
        let key = if usable {
            self.store.psk(&printable)
        } else {
            None
        };
        let claimed = Claimed {
            identity: printable,
            known: key.is_some(),
            key_fingerprint: key.as_ref().map(|k| fingerprint(k.expose())),
        };
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some(claimed);
        }
        key.map(|k| k.expose().to_vec())
    }
}

/// One cookie epoch: the config every connection object of the epoch is built from.
#[derive(Clone)]
pub(crate) struct Epoch {
    pub(crate) config: Arc<Config>,
}

impl std::fmt::Debug for Epoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Epoch").finish_non_exhaustive()
    }
}

/// The ECDHE_ECDSA suites offered when the listener has a certificate (all dimpl 0.9 has).
pub(crate) const CERT_SUITES: [Dtls12CipherSuite; 3] = [
    Dtls12CipherSuite::ECDHE_ECDSA_AES128_GCM_SHA256,
    Dtls12CipherSuite::ECDHE_ECDSA_AES256_GCM_SHA384,
    Dtls12CipherSuite::ECDHE_ECDSA_CHACHA20_POLY1305_SHA256,
];

/// How a connection authenticates, decided from the ClientHello's suites.
#[derive(Clone)]
pub(crate) enum Auth {
    /// PSK_AES128_CCM_8 (preferred whenever offered).
    Psk,
    /// ECDHE_ECDSA with the listener's certificate; the client must present one.
    Certificate(Arc<dimpl::DtlsCertificate>),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Auth::Psk => "Psk",
            Auth::Certificate(_) => "Certificate",
        })
    }
}

/// A fresh server instance of `epoch` for `auth`.
pub(crate) fn instance(epoch: &Epoch, auth: &Auth, now: Instant) -> Dtls {
    match auth {
        Auth::Psk => Dtls::new_12_psk(epoch.config.clone(), now),
        Auth::Certificate(cert) => Dtls::new_12(epoch.config.clone(), (**cert).clone(), now),
    }
}

/// Builds the library config of a new epoch. Costs milliseconds (the library self-tests its
/// crypto provider on every build), so it runs on a helper thread ahead of the rotation.
pub(crate) fn build_epoch(
    settings: &DtlsConfig,
    resolver: &Arc<KeyResolver>,
    certificates: bool,
) -> Result<Epoch, dimpl::Error> {
    let seed: u64 = rand::random();
    let mut suites = vec![Dtls12CipherSuite::PSK_AES128_CCM_8];
    if certificates {
        suites.extend(CERT_SUITES);
    }
    let config = Config::builder()
        .with_crypto_provider(crate::keylog::provider())
        .with_psk_server(None, resolver.clone() as Arc<dyn PskResolver>)
        .dtls12_cipher_suites(&suites)
        .require_client_certificate(true)
        .mtu(settings.mtu)
        .handshake_timeout(settings.handshake_timeout)
        .use_server_cookie(true)
        .dangerously_set_rng_seed(seed)
        .build()?;
    Ok(Epoch {
        config: Arc::new(config),
    })
}

/// The two live epochs and the next one being built.
#[derive(Debug)]
pub(crate) struct Epochs {
    pub(crate) current: Epoch,
    pub(crate) previous: Option<Epoch>,
    /// When the current epoch ends.
    pub(crate) rotate_at: Instant,
    /// Filled by the helper thread building the next epoch.
    next: Arc<Mutex<Option<Epoch>>>,
    building: bool,
    certificates: bool,
}

impl Epochs {
    pub(crate) fn new(first: Epoch, now: Instant, period: Duration, certificates: bool) -> Self {
        Epochs {
            current: first,
            previous: None,
            rotate_at: now + period,
            next: Arc::new(Mutex::new(None)),
            building: false,
            certificates,
        }
    }

    /// Rotates when due and the next epoch is ready; starts building the next one ahead of
    /// time. Returns whether it rotated.
    pub(crate) fn tick(
        &mut self,
        now: Instant,
        period: Duration,
        settings: &DtlsConfig,
        resolver: &Arc<KeyResolver>,
    ) -> bool {
        if !self.building && self.next.lock().map(|n| n.is_none()).unwrap_or(false) {
            self.building = true;
            let slot = self.next.clone();
            let settings = settings.clone();
            let resolver = resolver.clone();
            let certificates = self.certificates;
            let spawned = std::thread::Builder::new()
                .name("dtls-epoch".into())
                .spawn(move || match build_epoch(&settings, &resolver, certificates) {
                    Ok(epoch) => {
                        if let Ok(mut s) = slot.lock() {
                            *s = Some(epoch);
                        }
                    }
                    Err(error) => {
                        tracing::error!(%error, "cannot build the next DTLS cookie epoch; keeping the current one")
                    }
                });
            if spawned.is_err() {
                self.building = false;
            }
        }
        if now < self.rotate_at {
            return false;
        }
        let ready = self.next.lock().ok().and_then(|mut n| n.take());
        let Some(next) = ready else {
            return false;
        };
        self.building = false;
        self.previous = Some(std::mem::replace(&mut self.current, next));
        self.rotate_at = now + period;
        true
    }
}

/// Client randoms admitted in the current and the previous epoch: each at most once, so a
/// recorded client flight cannot be replayed into a second session (see the module docs).
#[derive(Debug)]
pub(crate) struct Replays {
    current: HashSet<[u8; 32]>,
    previous: HashSet<[u8; 32]>,
    max: usize,
}

/// Result of [`Replays::admit`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    Fresh,
    Replayed,
    Full,
}

impl Replays {
    pub(crate) fn new(max: usize) -> Self {
        Replays {
            current: HashSet::new(),
            previous: HashSet::new(),
            max,
        }
    }

    pub(crate) fn admit(&mut self, random: &[u8; 32]) -> Admit {
        if self.current.contains(random) || self.previous.contains(random) {
            return Admit::Replayed;
        }
        if self.current.len() >= self.max {
            return Admit::Full;
        }
        self.current.insert(*random);
        Admit::Fresh
    }

    pub(crate) fn rotate(&mut self) {
        self.previous = std::mem::take(&mut self.current);
    }
}

/// Result of checking a ClientHello's cookie against the live epochs.
pub(crate) enum CookieCheck {
    /// The cookie is valid: this instance has replayed the cookie exchange and expects the
    /// cookie-bearing ClientHello next.
    Valid(Box<Dtls>),
    /// No (valid) cookie: send this HelloVerifyRequest (from the current epoch).
    Verify(Vec<u8>),
    /// The library refused even the cookie-less ClientHello (bad version, no null compression):
    /// drop it.
    Refused,
}

/// Runs a fresh instance of `epoch` on the cookie-less form of a ClientHello and returns it
/// with the HelloVerifyRequest datagram it produced.
fn replay_hello(
    epoch: &Epoch,
    auth: &Auth,
    hello0: &[u8],
    now: Instant,
    out: &mut Vec<u8>,
) -> Option<(Dtls, Vec<u8>)> {
    // A panic in the library on a hostile ClientHello costs this datagram, not the listener.
    let mut dtls = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut dtls = instance(epoch, auth, now);
        dtls.handle_timeout(now).ok()?;
        dtls.handle_packet(hello0).ok()?;
        Some(dtls)
    }))
    .ok()
    .flatten()?;
    let mut hvr = None;
    loop {
        match dtls.poll_output(out) {
            Output::Packet(p) if hvr.is_none() => hvr = Some(p.to_vec()),
            Output::BufferTooSmall { needed } => out.resize(needed.min(64 * 1024), 0),
            Output::Timeout(_) => break,
            _ => {}
        }
    }
    hvr.map(|h| (dtls, h))
}

/// Checks `cookie` (from a ClientHello whose cookie-less form is `hello0`) against the live
/// epochs.
pub(crate) fn check_cookie(
    epochs: &Epochs,
    auth: &Auth,
    hello0: &[u8],
    cookie: &[u8],
    now: Instant,
    out: &mut Vec<u8>,
) -> CookieCheck {
    let Some((dtls, hvr)) = replay_hello(&epochs.current, auth, hello0, now, out) else {
        return CookieCheck::Refused;
    };
    if !cookie.is_empty() {
        if cookie_matches(&hvr, cookie) {
            return CookieCheck::Valid(Box::new(dtls));
        }
        if let Some(prev) = &epochs.previous
            && let Some((old, old_hvr)) = replay_hello(prev, auth, hello0, now, out)
            && cookie_matches(&old_hvr, cookie)
        {
            return CookieCheck::Valid(Box::new(old));
        }
    }
    CookieCheck::Verify(hvr)
}

fn cookie_matches(hvr: &[u8], cookie: &[u8]) -> bool {
    let Some(expected) = crate::record::hello_verify_cookie(hvr) else {
        return false;
    };
    if expected.len() != cookie.len() {
        return false;
    }
    // Constant time: a timing oracle on the cookie would let an off-path attacker forge one.
    expected
        .iter()
        .zip(cookie)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_random_is_admitted_once_across_a_rotation() {
        let mut r = Replays::new(2);
        assert_eq!(r.admit(&[1; 32]), Admit::Fresh);
        assert_eq!(r.admit(&[1; 32]), Admit::Replayed);
        r.rotate();
        assert_eq!(r.admit(&[1; 32]), Admit::Replayed);
        assert_eq!(r.admit(&[2; 32]), Admit::Fresh);
        assert_eq!(r.admit(&[3; 32]), Admit::Fresh);
        assert_eq!(r.admit(&[4; 32]), Admit::Full);
    }

    #[test]
    fn hostile_identities_are_shown_as_bounded_hex() {
        assert_eq!(printable_identity(b"bed-12"), ("bed-12".into(), true));
        let (s, ok) = printable_identity(b"bad\nline");
        assert!(!ok && s.starts_with("hex:"));
        let (s, ok) = printable_identity(&[0xff; 1000]);
        assert!(!ok && s.len() == 4 + 64);
    }
}
