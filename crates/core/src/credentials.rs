//! Where transports find device secrets, and who may see them: nobody but the handshake.
//!
//! The device registry implements [`CredentialStore`]; the DTLS transport asks it for a PSK per
//! handshake (never caches keys beyond the session that proved them) and re-checks its open
//! sessions whenever [`CredentialStore::generation`] moves, so a revocation or a key change
//! closes the sessions that relied on the old key on their next datagram or timer tick.
//!
//! [`Secret`] holds key bytes: its `Debug` prints the length only, it is zeroed on drop, and it
//! has no `Display` or `Serialize`, so a key cannot end up in a log line, a metric or an API
//! answer by accident.

use std::fmt;
use std::sync::Arc;

use crate::authorize::Denied;
use crate::peer::{Identity, PeerContext};

/// Secret bytes (a pre-shared key). Zeroed on drop; `Debug` shows only the length.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<SecretBytes>);

#[derive(PartialEq, Eq)]
struct SecretBytes(Vec<u8>);

impl Drop for SecretBytes {
    fn drop(&mut self) {
        // Volatile-free best effort: overwrite, then keep the optimizer from eliding it.
        for b in self.0.iter_mut() {
            *b = 0;
        }
        std::hint::black_box(&self.0);
    }
}

impl Secret {
    /// Wraps key bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        Secret(Arc::new(SecretBytes(bytes)))
    }

    /// The key bytes, for the handshake that needs them. Do not log them.
    pub fn expose(&self) -> &[u8] {
        &self.0.0
    }

    /// Number of key bytes.
    pub fn len(&self) -> usize {
        self.0.0.len()
    }

    /// Whether the key is empty (never valid as a PSK).
    pub fn is_empty(&self) -> bool {
        self.0.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.len())
    }
}

/// The device registry as transports see it. Answers from memory: it is called from socket
/// tasks, once per handshake and once per session re-check.
pub trait CredentialStore: Send + Sync + fmt::Debug + 'static {
    /// The pre-shared key of a PSK identity, if a device that may use it exists and is not
    /// revoked. Identities are UTF-8 in the registry; other bytes are unknown.
    fn psk(&self, identity: &str) -> Option<Secret>;

    /// Whether a client certificate with this SHA-256 fingerprint (lower-case hex of the DER)
    /// belongs to a device that is not revoked.
    fn knows_certificate(&self, sha256_hex: &str) -> bool;

    /// Moves on every change to the credentials (add, remove, re-key, revoke). Transports
    /// re-check their open sessions when it differs from the value they last saw.
    fn generation(&self) -> u64;

    /// Checks a bearer token (its bytes as sent, after `Bearer `) presented by `peer`: the
    /// identity it proves (a token subject the [`crate::Authorizer`] knows), or why not. The
    /// token is never logged, stored or echoed. Stores without tokens refuse every one.
    fn verify_bearer(&self, peer: &PeerContext, token: &[u8]) -> Result<Identity, Denied> {
        let _ = (peer, token);
        Err(Denied::Unauthenticated("no credential store"))
    }
}

/// No devices at all: every handshake fails. What a secure listener uses when no registry is
/// configured, so a misconfiguration fails closed.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoCredentials;

impl CredentialStore for NoCredentials {
    fn psk(&self, _identity: &str) -> Option<Secret> {
        None
    }

    fn knows_certificate(&self, _sha256_hex: &str) -> bool {
        false
    }

    fn generation(&self) -> u64 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_without_tokens_refuses_every_bearer_token() {
        let peer = PeerContext::new(
            "127.0.0.1:1".parse().unwrap(),
            crate::peer::TransportKind::Https,
        );
        assert_eq!(
            NoCredentials.verify_bearer(&peer, b"anything"),
            Err(Denied::Unauthenticated("no credential store"))
        );
    }

    #[test]
    fn debug_never_shows_the_key() {
        let s = Secret::new(b"hunter2-very-secret".to_vec());
        let shown = format!("{s:?}");
        assert_eq!(shown, "Secret(19 bytes)");
        assert!(!shown.contains("hunter2"));
        assert_eq!(s.expose(), b"hunter2-very-secret");
    }
}
