//! The optional HMAC key: loaded from a file, never printed.

use std::fmt;
use std::path::Path;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::error::AuditError;

type HmacSha256 = Hmac<Sha256>;

/// Shortest key accepted, in bytes (the output size of SHA-256).
pub const MIN_KEY_BYTES: usize = 32;
/// Longest key file read; a larger file is refused rather than read whole.
const MAX_KEY_FILE_BYTES: u64 = 4096;

/// An HMAC-SHA256 key. Its `Debug` shows no key material.
#[derive(Clone)]
pub struct HmacKey {
    bytes: Vec<u8>,
    signer: Signer,
}

impl fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HmacKey({} bytes, redacted)", self.bytes.len())
    }
}

impl HmacKey {
    /// Reads a key file: a file holding only hex digits (surrounding white space ignored, at
    /// least 64 digits) is decoded as hex, anything else is taken as raw bytes. Either way the
    /// key must be at least 32 bytes. Logs a warning if the file is group- or other-readable.
    pub fn load(path: &Path) -> Result<HmacKey, AuditError> {
        let bad = |reason: String| AuditError::Key {
            path: path.to_owned(),
            reason,
        };
        let meta = std::fs::metadata(path).map_err(|e| bad(format!("cannot read: {e}")))?;
        if !meta.is_file() {
            return Err(bad("not a regular file".into()));
        }
        if meta.len() > MAX_KEY_FILE_BYTES {
            return Err(bad(format!(
                "larger than {MAX_KEY_FILE_BYTES} bytes; expected 32-64 random bytes or their hex"
            )));
        }
        warn_if_readable_by_others(path, &meta);
        let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot read: {e}")))?;
        HmacKey::from_file_bytes(&bytes).map_err(|reason| bad(reason.into()))
    }

    /// Interprets a key file's content (see [`HmacKey::load`]).
    pub fn from_file_bytes(bytes: &[u8]) -> Result<HmacKey, &'static str> {
        let trimmed = bytes.trim_ascii();
        let key = if trimmed.len() >= 2 * MIN_KEY_BYTES && trimmed.iter().all(u8::is_ascii_hexdigit)
        {
            crate::record::hex_decode(trimmed).ok_or("odd number of hex digits")?
        } else {
            bytes.to_vec()
        };
        if key.len() < MIN_KEY_BYTES {
            return Err("shorter than 32 bytes (generate one with `head -c 32 /dev/urandom`)");
        }
        let signer = Signer::new(&key).ok_or("not usable as an HMAC-SHA256 key")?;
        Ok(HmacKey { bytes: key, signer })
    }

    /// The key bytes, for [`crate::verify`]. Do not log them.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub(crate) fn signer(&self) -> &Signer {
        &self.signer
    }
}

/// HMAC-SHA256 keyed once; each use clones the keyed state.
#[derive(Clone)]
pub(crate) struct Signer(HmacSha256);

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Signer(redacted)")
    }
}

impl Signer {
    /// `None` only if the MAC refuses the key length, which HMAC never does.
    pub(crate) fn new(key: &[u8]) -> Option<Signer> {
        <HmacSha256 as KeyInit>::new_from_slice(key)
            .ok()
            .map(Signer)
    }

    /// HMAC-SHA256(key, hash).
    pub(crate) fn sign(&self, hash: &[u8; 32]) -> [u8; 32] {
        let mut m = self.0.clone();
        m.update(hash);
        m.finalize().into_bytes().into()
    }

    /// Constant-time check of `mac` against the MAC of `hash`.
    pub(crate) fn check(&self, hash: &[u8; 32], mac: &[u8]) -> bool {
        let mut m = self.0.clone();
        m.update(hash);
        m.verify_slice(mac).is_ok()
    }
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path, meta: &std::fs::Metadata) {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(
            path = %path.display(),
            mode = format_args!("{:o}", mode & 0o777),
            "audit HMAC key file is accessible to group or others; chmod 600 it"
        );
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path, _meta: &std::fs::Metadata) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_key_files_are_decoded_and_raw_ones_taken_as_they_are() {
        let hex = "00".repeat(32) + "\n";
        assert_eq!(
            HmacKey::from_file_bytes(hex.as_bytes()).unwrap().as_bytes(),
            &[0u8; 32]
        );
        let raw = [0xffu8; 40];
        assert_eq!(HmacKey::from_file_bytes(&raw).unwrap().as_bytes(), &raw);
        assert!(HmacKey::from_file_bytes(b"short").is_err());
    }

    #[test]
    fn debug_never_shows_the_key() {
        let key = HmacKey::from_file_bytes(&[0x41u8; 32]).unwrap();
        let shown = format!("{key:?}");
        assert!(!shown.contains("AAAA") && !shown.contains("65"), "{shown}");
    }
}
