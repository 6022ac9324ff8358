//! What [`crate::AuditLog::open`] needs; `wardgate-config`'s `[audit]` section maps onto it.

use std::path::PathBuf;

/// Default size at which the active file is rotated: 64 MiB.
pub const DEFAULT_ROTATE_BYTES: u64 = 64 * 1024 * 1024;
/// Default queue capacity (events waiting for the writer).
pub const DEFAULT_QUEUE_CAPACITY: usize = 65_536;

/// Settings of an [`crate::AuditLog`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditOptions {
    /// The active file. Rotated files are its siblings, `<name>.<first-seq>-<last-seq>`. Its
    /// directory is created if missing.
    pub path: PathBuf,
    /// Rotate once the active file holds at least this many bytes. 0 never rotates.
    pub rotate_bytes: u64,
    /// Rotated files kept; the oldest beyond this are deleted. 0 keeps all.
    pub keep_files: usize,
    /// A file with at least 32 random bytes (raw, or as hex digits); each record's hash is then
    /// signed with HMAC-SHA256. A warning is logged when the file is group- or other-readable.
    pub hmac_key_file: Option<PathBuf>,
    /// Events waiting for the writer; when full, new events are dropped and counted. The queue
    /// takes ~32 bytes per slot up front (2 MiB at the default), a queued event ~100-300 more.
    pub queue_capacity: usize,
}

impl AuditOptions {
    /// Defaults for everything but the path.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        AuditOptions {
            path: path.into(),
            rotate_bytes: DEFAULT_ROTATE_BYTES,
            keep_files: 0,
            hmac_key_file: None,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
        }
    }
}
