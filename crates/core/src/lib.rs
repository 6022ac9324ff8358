//! wardgate-core: the bottom of the crate graph. No sockets live here.
//!
//! It owns:
//! - [`reading`]: the normalized [`Reading`] and its versioned JSON (`wardgate.reading/1`,
//!   published as `docs/readings.schema.json`);
//! - [`senml`] and [`payload`]: decoders from device payloads (SenML JSON/CBOR, plain JSON/CBOR,
//!   text/plain) to resolved SenML records. They are pure (bytes in, records or a typed error out),
//!   bounded (record count, name length, nesting), and never panic on hostile input;
//! - [`peer`]: the peer context (address, transport, authenticated identity) carried from the
//!   transport to the stored reading;
//! - [`authorize`] and [`pipeline`]: the [`Authorizer`] seam and the one ingest pipeline every
//!   adapter uses (authorize → decode → normalize → enqueue → resolve when durable), with the one
//!   error type ([`Refused`]) each adapter maps to its protocol's answer;
//! - [`bus`]: the in-process ingest bus from the pipeline to the store, with its backpressure rule;
//! - [`uplink`]: the contract between the durable outbox and the uplinks that drain it;
//! - [`route`]: which uplinks a reading is owed to ([`Router`], default [`AllUplinks`]);
//! - [`outcome`]: delivery outcome events (acked / failed / timed out / released, with latency);
//! - [`credentials`] and [`audit`]: the seams to the device registry (keys per handshake,
//!   never logged) and to the audit trail (security events, never blocking);
//! - [`health`]: readiness reporting shared by every component;
//! - [`limit`]: who a peer counts as for per-source shares and rate limits ([`SourceKey`]), and
//!   token buckets in constant memory ([`TokenBuckets`]);
//! - [`clock`]: an injectable wall clock; [`backoff`]: the one retry backoff (full jitter).
//!
//! Invariant carried by these types: a reading is acknowledged to a device only after the
//! [`pipeline::Pending`] for it (the receiver [`Bus::enqueue`] returned) resolves `Ok`, and the
//! store resolves it only once the reading is durable (or, in the explicitly named
//! no-durability mode, once it is queued).
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod audit;
pub mod authorize;
pub mod backoff;
pub mod board;
pub mod bus;
pub mod clock;
pub mod config_doc;
pub mod credentials;
mod decode;
pub mod health;
pub mod limit;
pub mod outcome;
pub mod payload;
pub mod peer;
pub mod pipeline;
pub mod reading;
pub mod route;
pub mod senml;
pub mod uplink;
pub mod validate;

pub use audit::{AuditEvent, AuditKind, AuditSink, MemoryAudit, NoAudit};
pub use authorize::{Action, AllowAll, AuthRequest, Authorizer, Denied, Grant, QUARANTINE};
pub use backoff::Backoff;
pub use board::StatusBoard;
pub use bus::{Bus, BusReceiver, IngestError, IngestRequest};
pub use clock::{Clock, SystemClock};
pub use credentials::{CredentialStore, NoCredentials, Secret};
pub use health::{Health, HealthReporter};
pub use limit::{Rate, SourceKey, Take, TokenBuckets};
pub use outcome::{
    CommitObserver, DeliveryOutcome, NackReason, OutcomeKind, OutcomeObserver, OutcomeReceiver,
    OutcomeSender,
};
pub use peer::{DatagramTap, Identity, IdentityKind, PeerContext, TransportKind};
pub use pipeline::{
    Accepted, Classify, IngestPipeline, Pending, RecordSubmission, Refused, Submission,
};
pub use reading::{Encoded, MessageClass, Protocol, Reading, Record, SCHEMA, Source};
pub use route::{AllUplinks, Cutover, MAX_UPLINKS, RouteInput, Router, UplinkSet};
pub use uplink::{Delivery, OutboxCursor, OutboxError, Uplink, UplinkTask};

/// Cancellation handle passed to every long-running task. Cancelling it starts graceful shutdown.
pub use tokio_util::sync::CancellationToken as Shutdown;
