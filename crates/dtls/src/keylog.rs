//! Session secrets for decrypting captures, in the terms of the NSS key log format that
//! Wireshark and tshark read (`CLIENT_RANDOM <client random> <master secret>`).
//!
//! dimpl has no key log callback and shows no secrets, but it computes every TLS 1.2 PRF
//! through the [`HmacProvider`] of its config, and the config's crypto provider is ours to
//! choose. [`provider`] is dimpl's own rust-crypto provider with the HMAC wrapped: the wrapper
//! passes every call through and, while a session it was asked to watch is being processed
//! ([`watching`]), recognizes the first HMAC of the key expansion (RFC 5246 §6.3:
//! `PRF(master_secret, "key expansion", server_random + client_random)`, whose first step is
//! `HMAC(master_secret, "key expansion" + server_random + client_random)`). That one call names
//! exactly what a key log line holds, for every DTLS 1.2 suite: PSK and ECDHE alike, with or
//! without the extended master secret, as the library really computed it.
//!
//! What is seen is kept in a thread-local slot: the library runs a session's handshake
//! synchronously inside the transport's call on the socket's thread, so the slot holds the
//! secret of the call just made and nothing from another transport or thread. Nothing is kept
//! while no session is watched (the cost then is one thread-local read per HMAC).

use std::cell::{Cell, RefCell};
use std::sync::LazyLock;

use dimpl::CryptoError;
use dimpl::crypto::{CryptoProvider, HashAlgorithm, HmacProvider, rust_crypto};

/// The PRF label of the key expansion.
const KEY_EXPANSION: &[u8] = b"key expansion";
/// A TLS 1.2 master secret's length (RFC 5246 §8.1).
const MASTER_SECRET: usize = 48;
/// The random of a hello message.
const RANDOM: usize = 32;

/// What a key log line holds. The master secret is zeroed on drop.
pub(crate) struct SessionKeys {
    pub(crate) client_random: [u8; RANDOM],
    pub(crate) master_secret: [u8; MASTER_SECRET],
}

impl Drop for SessionKeys {
    fn drop(&mut self) {
        self.master_secret.fill(0);
        std::hint::black_box(&self.master_secret);
    }
}

thread_local! {
    /// A watched session is being processed on this thread.
    static ARMED: Cell<bool> = const { Cell::new(false) };
    /// The key expansion seen while armed.
    static SEEN: RefCell<Option<SessionKeys>> = const { RefCell::new(None) };
}

/// dimpl's rust-crypto HMAC.
static INNER: LazyLock<&'static dyn HmacProvider> =
    LazyLock::new(|| rust_crypto::default_provider().hmac_provider);

static TAP: KeyExpansionTap = KeyExpansionTap;

/// dimpl's rust-crypto provider with the key-expansion tap on its HMAC: what every config of
/// the transport is built with.
pub(crate) fn provider() -> CryptoProvider {
    let mut p = rust_crypto::default_provider();
    p.hmac_provider = &TAP;
    p
}

/// Runs `f` (one library call for one session) and returns the session secrets the library
/// derived during it, when `watch` is set; with `watch` unset nothing is looked at.
pub(crate) fn watching<T>(watch: bool, f: impl FnOnce() -> T) -> (T, Option<SessionKeys>) {
    if !watch {
        return (f(), None);
    }
    /// Disarms even when `f` unwinds.
    struct Disarm;
    impl Drop for Disarm {
        fn drop(&mut self) {
            ARMED.set(false);
        }
    }
    SEEN.with_borrow_mut(Option::take);
    ARMED.set(true);
    let disarm = Disarm;
    let r = f();
    drop(disarm);
    (r, SEEN.with_borrow_mut(Option::take))
}

#[derive(Debug)]
struct KeyExpansionTap;

impl HmacProvider for KeyExpansionTap {
    fn hmac(
        &self,
        hash: HashAlgorithm,
        key: &[u8],
        data: &[u8],
        out: &mut [u8],
    ) -> Result<usize, CryptoError> {
        if ARMED.get()
            && let Some(keys) = key_expansion(key, data)
        {
            SEEN.with_borrow_mut(|s| *s = Some(keys));
        }
        INNER.hmac(hash, key, data, out)
    }
}

/// The secrets, when `HMAC(key, data)` is the first step of a key expansion.
fn key_expansion(key: &[u8], data: &[u8]) -> Option<SessionKeys> {
    let randoms = data.strip_prefix(KEY_EXPANSION)?;
    if randoms.len() != 2 * RANDOM {
        return None;
    }
    Some(SessionKeys {
        client_random: randoms[RANDOM..].try_into().ok()?,
        master_secret: key.try_into().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expansion_seed(server: u8, client: u8) -> Vec<u8> {
        let mut seed = KEY_EXPANSION.to_vec();
        seed.extend_from_slice(&[server; RANDOM]);
        seed.extend_from_slice(&[client; RANDOM]);
        seed
    }

    #[test]
    fn only_the_key_expansion_of_a_watched_call_is_kept_and_every_hmac_is_passed_through() {
        let mut out = [0u8; 48];
        let mut reference = [0u8; 48];
        let master = [7u8; MASTER_SECRET];
        let seed = expansion_seed(1, 2);
        let hmac = |out: &mut [u8]| {
            TAP.hmac(HashAlgorithm::SHA256, &master, &seed, out)
                .unwrap()
        };
        // Not watched: the same HMAC as dimpl's own, nothing kept.
        let ((), keys) = watching(false, || {
            hmac(&mut out);
        });
        assert!(keys.is_none());
        INNER
            .hmac(HashAlgorithm::SHA256, &master, &seed, &mut reference)
            .unwrap();
        assert_eq!(out, reference);
        // Watched: the client random (the second one) and the master secret.
        let (n, keys) = watching(true, || hmac(&mut out));
        assert_eq!(n, 32);
        let keys = keys.unwrap();
        assert_eq!(keys.client_random, [2; RANDOM]);
        assert_eq!(keys.master_secret, master);
        // Other HMACs (a master secret's derivation, a cookie) are not key expansions; and a
        // call that panics leaves the tap disarmed.
        let ((), keys) = watching(true, || {
            let mut o = [0u8; 48];
            TAP.hmac(
                HashAlgorithm::SHA256,
                b"premaster",
                b"extended master secret",
                &mut o,
            )
            .unwrap();
            TAP.hmac(
                HashAlgorithm::SHA256,
                &[1; 32],
                &expansion_seed(1, 2)[..40],
                &mut o,
            )
            .unwrap();
        });
        assert!(keys.is_none());
        let _ = std::panic::catch_unwind(|| watching(true, || panic!("inside the library")));
        assert!(!ARMED.get());
    }
}
