//! The store's typed errors.

use std::path::PathBuf;

use crate::MAX_UPLINKS;

/// The command that salvages a corrupt store. Every corruption message quotes it.
pub const RECOVER_COMMAND: &str = "wardgate store recover --config <file>";

/// Why the outbox could not be opened, written or recovered.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database file is damaged. Nothing was changed; the file is left as it is.
    #[error(
        "outbox store {path} is corrupt ({detail}); the gateway will not start on it. Stop the \
         gateway and run `wardgate store recover --config <file>`: it copies every readable \
         reading into a fresh store and keeps the damaged file aside"
    )]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What was found.
        detail: String,
    },
    /// The file was written by a newer wardgate.
    #[error(
        "outbox store {path} has schema version {found}, newer than this wardgate supports \
         ({supported}); run the newer wardgate or move the file aside"
    )]
    UnsupportedSchema {
        /// The database file.
        path: PathBuf,
        /// Version found in the file.
        found: i64,
        /// Newest version this build understands.
        supported: i64,
    },
    /// A file-system operation failed.
    #[error("outbox store {path}: {op}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// SQLite reported an error.
    #[error("outbox store {path}: {op}: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// No uplink is configured, so nothing would ever be delivered.
    #[error(
        "no uplink configured: a reading owed to no uplink would be acknowledged and never delivered"
    )]
    NoUplinks,
    /// More uplinks than the per-reading bitmask holds.
    #[error("{count} uplinks configured; the outbox tracks at most {MAX_UPLINKS}")]
    TooManyUplinks {
        /// Configured uplinks.
        count: usize,
    },
    /// The same uplink name appears twice.
    #[error("uplink {0:?} is configured twice")]
    DuplicateUplink(String),
    /// A cursor was asked for an uplink that was not configured at open.
    #[error("uplink {0:?} is not configured")]
    UnknownUplink(String),
    /// The uplink already holds a live cursor (two would deliver everything twice).
    #[error("uplink {0:?} already has a delivery cursor")]
    CursorInUse(String),
    /// `run_writer` was called twice.
    #[error("the outbox writer is already running (or has run and closed the store)")]
    WriterRunning,
    /// The commit a [`crate::Outbox::flush`] waited for failed (the writer logged why).
    #[error("the outbox commit failed")]
    NotCommitted,
    /// The outbox writer has stopped (or the outbox was dropped).
    #[error("the outbox is closed")]
    Closed,
    /// `recover` found nothing at the path.
    #[error("no outbox store at {0}")]
    NotFound(PathBuf),
}

impl StoreError {
    pub(crate) fn sqlite(
        path: &std::path::Path,
        op: &'static str,
        source: rusqlite::Error,
    ) -> Self {
        if is_corruption(&source) {
            return StoreError::Corrupt {
                path: path.to_owned(),
                detail: format!("{op}: {source}"),
            };
        }
        StoreError::Sqlite {
            path: path.to_owned(),
            op,
            source,
        }
    }

    pub(crate) fn io(path: &std::path::Path, op: &'static str, source: std::io::Error) -> Self {
        StoreError::Io {
            path: path.to_owned(),
            op,
            source,
        }
    }
}

/// True for the SQLite errors that mean the file itself is damaged (as opposed to locked, full,
/// or unreadable for permission reasons).
pub(crate) fn is_corruption(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
    )
}
