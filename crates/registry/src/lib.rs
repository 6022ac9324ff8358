//! wardgate-registry: the device registry.
//!
//! It owns `devices.toml` (format: `docs/examples/devices.toml`, schema: [`RegistryFile`]):
//! per device its identities (a DTLS PSK identity and key, bearer-token hashes, client
//! certificate fingerprints), the protocols it may use, and its ACL (message classes,
//! resources, the device ids it may speak for); and what happens to unknown identities
//! (`reject`, or `quarantine`: a bounded pending-approval list, and the readings of proven but
//! unknown identities held until an administrator approves or dismisses them).
//!
//! [`Registry`] is the [`wardgate_core::CredentialStore`] of the secure transports and the
//! [`wardgate_core::Authorizer`] of the ingest pipeline. It promises:
//! - **answers from memory**: lookups clone an `Arc` of the current snapshot under a read lock
//!   and do no I/O; token hashes are compared in constant time;
//! - **edits take effect at once, durably**: an edit is validated against the whole registry,
//!   written (temporary file 0600, fsync, rename, directory fsync), and only then swapped in;
//!   [`CredentialStore::generation`](wardgate_core::CredentialStore::generation) then moves,
//!   which is how open DTLS sessions of a revoked or re-keyed device get closed. A failed edit
//!   or reload changes nothing;
//! - **all problems at once**: loading reports every problem in the file;
//! - **no secret leaves it**: keys and tokens never appear in logs, metrics, errors, `Debug`
//!   output or [`DeviceView`]s (keys are [`wardgate_core::Secret`]s; inline key text is a
//!   redacted [`KeyText`]; parser messages have echoed values removed). Files holding secrets
//!   with group/other permissions produce a warning naming the fix;
//! - **bounded under floods**: every denial is counted; its log line and audit event are rate
//!   limited per (identity, reason) to one a minute with a repeat count, over a bounded table;
//!   the pending list is bounded.
//!
//! Dependencies, and why: `toml`/`serde` (the file, as every wardgate config); `ring` (SHA-256
//! of bearer tokens; already in the tree through rustls); `subtle` (constant-time comparison;
//! already in the tree through rustls); `prometheus-client` (metrics with an explicit
//! registry, like every crate); `humantime` (RFC 3339 stamps in the pending view); `tracing`;
//! `thiserror`.
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod error;
mod file;
mod limit;
pub mod metrics;
mod pattern;
mod pending;
mod persist;
mod registry;
mod table;
mod view;

pub use error::RegistryError;
pub use file::{
    CertificateSpec, DeviceSpec, KeyText, PskSpec, RegistryFile, TokenSpec, UnknownPolicy,
    redact_parser_message,
};
pub use metrics::{DenyReason, RegistryMetrics};
pub use pending::PendingView;
pub use registry::{EnvLookup, HeldReading, HeldVerdict, LoadOptions, QuarantineLimits, Registry};
pub use view::{DeviceView, PskView};

/// Limits, for callers that validate before calling in.
pub mod limits {
    /// Distinct (identity, reason) pairs the denial rate limit tracks at once.
    pub const DENIAL_PAIRS: usize = crate::limit::CAPACITY;
    /// Unknown identities the quarantine remembers at once.
    pub const PENDING: usize = crate::pending::CAPACITY;
    /// PSK key length bounds, bytes.
    pub const KEY_BYTES: std::ops::RangeInclusive<usize> = crate::table::KEY_LEN;
}
