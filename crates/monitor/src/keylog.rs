//! The capture key log (`[monitor.capture] keylog_file`): DTLS session secrets in the NSS key
//! log format, so a capture of a PSK session can be decrypted later in Wireshark or tshark
//! (`-o tls.keylog_file:FILE`). The transport finds the secrets (`wardgate-dtls`'s `keylog`);
//! this file only writes them.
//!
//! The file is separate from the captures and protected like a key: created mode 0600 (an
//! existing file is set to 0600), its directory created mode 0700, appended to, never
//! rotated, never served by the admin API. A line is written only for a session that is being
//! captured (a capture records and its filters take the peer), one per completed handshake, on
//! the socket's task (a few hundred bytes, no fsync). It stops at [`MAX_KEYLOG_BYTES`] with a
//! warning: the file holds the keys to every capture it matches, so it is the administrator's
//! to move away, not the gateway's to delete.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use crate::error::MonitorError;
use crate::metrics::CaptureMetrics;

/// Where the key log stops growing (about 370,000 sessions).
pub const MAX_KEYLOG_BYTES: u64 = 64 * 1024 * 1024;

/// The open key log file.
#[derive(Debug)]
pub struct KeyLog {
    path: PathBuf,
    state: Mutex<State>,
    metrics: CaptureMetrics,
}

#[derive(Debug)]
struct State {
    file: File,
    bytes: u64,
    /// A write failed or the file is full and that was logged; quiet until a write succeeds.
    warned: bool,
}

impl KeyLog {
    /// Opens (creates) the key log at `path` for appending.
    pub fn open(path: &Path, metrics: CaptureMetrics) -> Result<KeyLog, MonitorError> {
        let dir_error = |source| MonitorError::Dir {
            path: path.to_path_buf(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
            && !parent.exists()
        {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(dir_error)?;
        }
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .map_err(dir_error)?;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(dir_error)?;
        let bytes = file.metadata().map_err(dir_error)?.len();
        Ok(KeyLog {
            path: path.to_path_buf(),
            state: Mutex::new(State {
                file,
                bytes,
                warned: false,
            }),
            metrics,
        })
    }

    /// Appends `CLIENT_RANDOM <client random> <master secret>` (lower-case hex).
    pub fn write(&self, client_random: &[u8; 32], master_secret: &[u8; 48]) {
        let mut line = String::with_capacity(14 + 64 + 1 + 96 + 1);
        line.push_str("CLIENT_RANDOM ");
        push_hex(&mut line, client_random);
        line.push(' ');
        push_hex(&mut line, master_secret);
        line.push('\n');
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let result = if s.bytes + line.len() as u64 > MAX_KEYLOG_BYTES {
            Err(io::Error::other(format!(
                "the key log reached {MAX_KEYLOG_BYTES} bytes; move it away to log more sessions"
            )))
        } else {
            s.file.write_all(line.as_bytes())
        };
        // The line is a key: wipe the copy.
        let mut bytes = line.into_bytes();
        bytes.fill(0);
        std::hint::black_box(&bytes);
        match result {
            Ok(()) => {
                s.bytes += bytes.len() as u64;
                s.warned = false;
                self.metrics.keylog_line();
            }
            Err(error) => {
                self.metrics.write_failed();
                if !s.warned {
                    s.warned = true;
                    tracing::warn!(file = %self.path.display(), %error, "DTLS session keys not logged");
                }
            }
        }
    }
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_appended_in_the_nss_format_to_a_file_only_its_owner_reads() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("secret/keys.log");
        let log = KeyLog::open(&path, CaptureMetrics::default()).unwrap();
        log.write(&[0xab; 32], &[0x01; 48]);
        drop(log);
        let log = KeyLog::open(&path, CaptureMetrics::default()).unwrap();
        log.write(&[0xcd; 32], &[0x02; 48]);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                format!("CLIENT_RANDOM {} {}", "ab".repeat(32), "01".repeat(48)),
                format!("CLIENT_RANDOM {} {}", "cd".repeat(32), "02".repeat(48)),
            ]
        );
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
    }

    #[test]
    fn an_existing_file_readable_by_others_is_made_private() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("keys.log");
        std::fs::write(&path, "").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        KeyLog::open(&path, CaptureMetrics::default()).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
