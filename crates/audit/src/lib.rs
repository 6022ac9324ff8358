//! wardgate-audit: the audit trail. It owns the file every security event is written to
//! (authentication successes and failures, ACL denials, revoked sessions, admin actions,
//! registry changes, configuration reloads) and the verifier that checks it.
//!
//! [`AuditLog`] implements [`wardgate_core::AuditSink`]; [`verify`] (and `wardgate audit
//! verify FILE…`) reads the files back.
//!
//! # Promises
//! 1. **`record` never blocks.** It pushes onto a bounded queue (`queue_capacity`, default
//!    65536) read by one writer thread (std, not the tokio runtime: the file I/O stays off the
//!    socket tasks). When the queue is full the event is dropped, counted in
//!    `wardgate_audit_dropped_total`, and the next record written carries
//!    `"dropped_before": N`, so the gap is visible in the file itself, not only in metrics.
//! 2. **Written means fsynced.** The writer takes whatever is queued, writes it, and calls
//!    `sync_data` once per batch. [`AuditLog::flush`] returns once everything recorded before it
//!    is on disk; [`AuditLog::close`] (and drop) writes an `audit_stopped` record and joins the
//!    writer. A failed write is cut back off the file (so no half line remains), its records
//!    are counted as dropped, and the chain continues from the last record on disk.
//! 3. **Every record is chained.** One JSON object per line, fields in this fixed order:
//!    ```text
//!    {"v":1,"seq":N,"ts":"2026-05-01T12:00:00.123Z","kind":"auth_failure",
//!     "actor":"…","peer":"…","transport":"…","subject":"…","reason":"…",
//!     "dropped_before":N,"last_good_seq":N,"last_good_hash":"…",
//!     "prev":"<64 hex>","hash":"<64 hex>","mac":"<64 hex>"}
//!    ```
//!    (`actor`, `peer`, `transport`, `subject` only when known; `dropped_before` only when
//!    non-zero; `last_good_*` only on `chain_broken`; `mac` only with a key). Strings are JSON
//!    escaped by `serde_json`. `prev` is the previous record's `hash` (64 zeros before seq 1).
//!    **`hash`** is the SHA-256 of the line's exact bytes up to (not including) `,"hash":`,
//!    followed by `}`: the record as written without its `hash` and `mac`, which covers `prev`
//!    and so the whole history. **`mac`**, when an HMAC key is configured, is
//!    HMAC-SHA256(key, the 32 raw bytes of `hash`): without the key, someone who rewrites the
//!    whole file cannot produce a chain that verifies. `seq` starts at 1 and is gap-free across
//!    rotated files.
//! 4. **Internal kinds** besides core's `AuditKind`: `audit_started` (first record of a new log
//!    and of every restart, chained to the existing tail), `audit_stopped` (clean close), and
//!    `chain_broken` (see 5).
//! 5. **A damaged tail is never continued silently.** On open, the last line of the active file
//!    must be complete and its hash (and MAC) must check. Otherwise the file is renamed aside to
//!    `<name>.damaged-<unix-seconds>`, an ERROR is logged, and a new file starts with a
//!    `chain_broken` record naming it, with `last_good_seq`/`last_good_hash` of the last record
//!    that still checked, and chained to it: the new file verifies on its own, and verifying
//!    the damaged file with it points at the damage.
//! 6. **Rotation keeps the chain.** Once the active file reaches `rotate_bytes` (default
//!    64 MiB) it is fsynced and renamed to `<name>.<first-seq>-<last-seq>`, and records continue
//!    in a fresh `<name>` whose first record's `prev` is the rotated file's last `hash`. At most
//!    `keep_files` rotated files are kept (0 keeps all); the oldest are deleted, never a
//!    `.damaged-` file.
//! 7. **The verifier is total.** [`verify`] never panics on arbitrary bytes and reads at most
//!    64 KiB per line. It reports the first problem with file, line and seq: an edited record
//!    (hash mismatch), a removed one (seq gap), reordered ones, a replaced or rewritten one
//!    (`prev` mismatch, or a MAC mismatch with the key), and a truncated last line. Whole
//!    records cut off the end at a line boundary cannot be seen in the file alone: compare the
//!    head with the `audit chain head` the gateway logs at rotation and at close.
//!
//! No secret is written: events carry public names (see `wardgate_core::audit`), and the HMAC
//! key appears in no log line, error or `Debug` output.
//!
//! # Dependencies
//! `sha2` and `hmac` (RustCrypto): the reference pure-Rust SHA-256 and HMAC, audited and used
//! across the ecosystem, and already in the build through the DTLS stack (the same versions, so
//! one implementation is linked). `ring`, linked through rustls, was the alternative, but its
//! digest/HMAC API would tie this crate to rustls' crypto provider choice for no gain.
//! `humantime` (already a workspace dependency) formats RFC 3339 timestamps; the queue is
//! `std::sync::mpsc::sync_channel`, so no runtime or channel crate is needed.
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod error;
mod key;
mod log;
mod metrics;
mod options;
mod record;
mod resume;
mod verify;
mod writer;

pub use error::AuditError;
pub use key::{HmacKey, MIN_KEY_BYTES};
pub use log::{AuditLog, WriterHold};
pub use metrics::AuditMetrics;
pub use options::{AuditOptions, DEFAULT_QUEUE_CAPACITY, DEFAULT_ROTATE_BYTES};
pub use record::{GENESIS_PREV, RecordKind};
pub use verify::{ProblemKind, VerifyOptions, VerifyProblem, VerifyReport, verify, verify_with};
