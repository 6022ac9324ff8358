//! wardgate-core: the bottom of the crate graph. No sockets live here.
//!
//! It owns:
//! - [`reading`]: the normalized [`Reading`] and its versioned JSON (`wardgate.reading/1`,
//!   published as `docs/readings.schema.json`);
//! - [`senml`] and [`payload`]: decoders from device payloads (SenML JSON/CBOR, plain JSON/CBOR,
//!   text/plain) to resolved SenML records. They are pure (bytes in, records or a typed error out),
//!   bounded (record count, name length, nesting), and never panic on hostile input;
//! - [`bus`]: the in-process ingest bus from adapters to the store, with its backpressure rule;
//! - [`uplink`]: the contract between the durable outbox and the uplinks that drain it;
//! - [`route`]: which uplinks a reading is owed to ([`Router`], default [`AllUplinks`]);
//! - [`outcome`]: delivery outcome events (acked / failed / timed out / released, with latency);
//! - [`health`]: readiness reporting shared by every component;
//! - [`clock`]: an injectable wall clock.
//!
//! Invariant carried by these types: a reading is acknowledged to a device only after the
//! [`bus::IngestTicket`] for it resolves `Ok`, and the store resolves it only once the reading is
//! durable (or, in the explicitly named no-durability mode, once it is queued).
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod bus;
pub mod clock;
pub mod health;
pub mod outcome;
pub mod payload;
pub mod reading;
pub mod route;
pub mod senml;
pub mod uplink;
pub mod validate;

pub use bus::{Bus, BusReceiver, IngestError, IngestRequest};
pub use clock::{Clock, SystemClock};
pub use health::{Health, HealthReporter};
pub use outcome::{DeliveryOutcome, NackReason, OutcomeKind, OutcomeReceiver, OutcomeSender};
pub use reading::{Encoded, MessageClass, Protocol, Reading, Record, SCHEMA};
pub use route::{AllUplinks, MAX_UPLINKS, RouteInput, Router, UplinkSet};
pub use uplink::{Delivery, OutboxCursor, OutboxError};

/// Cancellation handle passed to every long-running task. Cancelling it starts graceful shutdown.
pub use tokio_util::sync::CancellationToken as Shutdown;
