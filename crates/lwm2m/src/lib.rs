//! wardgate-lwm2m: the LwM2M 1.0/1.1/1.2 server and bootstrap server, on wardgate's own CoAP
//! stack (`docs/protocols/lwm2m.md` is the user's view).
//!
//! - [`resource`] puts `/rd` (Register, Update, De-register), `/dp` (Send) and [`bootstrap`]'s
//!   `/bs` on every CoAP endpoint socket, plain and DTLS, and gives the [`Server`] their
//!   requesters, so requests to a client leave from the socket it registered on;
//! - [`Server`] (`server.rs`) holds the registrations (persisted by [`persist`]), queue mode and
//!   expiry; `ops.rs` the operations with content-format negotiation; `observe.rs` the
//!   observations kept established and their notifications turned into readings through the
//!   shared ingest pipeline (`IngestPipeline::submit_records`, durable before the ACK);
//! - [`format`](mod@format) and [`link`] are the codecs (pure, bounded, fuzzed), [`model`] the object model
//!   (OMA DDF XML) and the names of readings, [`node`] the data model they share;
//! - [`api`] is the operations as typed JSON for the admin API; [`sim`] a client simulator for
//!   tests, the demo and the registration-storm benchmark.
//!
//! Promises: a registration is authorized with what the transport proved, never the endpoint
//! name alone; a client's data reaches the outbox only through the ingest pipeline, acknowledged
//! only once durable; every table is bounded (clients, queued operations per client, operator
//! observations per client, managed bootstrap configurations, decoder limits); malformed input
//! gets the protocol's error code, a metric and a log line, never a panic.
//!
//! Dependencies: no maintained LwM2M crate exists in Rust (Leshan is Java, Wakaama and Anjay
//! C), so the protocol is ours. `rusqlite` keeps registrations because the outbox already uses
//! it (one SQLite in the binary, WAL, a well-known file format for operators); `roxmltree` reads
//! DDF files (see `model`); `ciborium-ll` and `serde_json` back the codecs (see `format`).
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod api;
pub mod bootstrap;
pub mod config;
pub mod format;
pub mod link;
pub mod metrics;
pub mod model;
pub mod node;
mod observe;
mod ops;
pub mod persist;
pub mod registration;
pub mod resource;
mod server;
pub mod sim;

pub use api::{JsonValue, Operation};
pub use bootstrap::{BootstrapConfig, SecurityMode};
pub use config::Lwm2mConfig;
pub use format::{Format, FormatError, Limits, decode_paths, encode_paths};
pub use link::{DiscoverLink, Link, LinkError, ObjectLink, ObjectList};
pub use metrics::Lwm2mMetrics;
pub use model::{
    DdfError, LoadError, ObjectDef, ObjectModel, Operations, ReadingName, ResourceDef, parse_ddf,
};
pub use node::{Entry, Path, PathError, ResourceType, TypeLookup, Value};
pub use observe::{MAX_MANUAL_OBSERVATIONS, ObserveRule};
pub use ops::{Attributes, WriteMode};
pub use server::{
    ClientInfo, MAX_BOOTSTRAP_CONFIGS, OpError, Refusal, Registered, Server, Settings,
};
