//! wardgate-http: the operator-facing HTTP servers.
//!
//! [`HttpServer`] serves `/healthz` (the process is alive and its runtime answers), `/readyz`
//! (every listener bound, the store writable and at least one uplink connected; the JSON body
//! names the failing checks) and `/metrics` (Prometheus text exposition of the registry passed
//! in), unauthenticated, for probes and scrapers on a management interface.
//!
//! [`AdminServer`] serves the admin API (`/admin/v1/...`: the device registry) on its own
//! listener, over TLS unless on loopback, to holders of a configured token or client
//! certificate only; every edit is audited (see the [`admin`] module).
//!
//! HTTP ingest, the status page and the HTTPS uplink are later work.
//!
//! Error responses never leak internals, and no response, log line or metric carries a key,
//! a token or a token hash.
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod admin;
pub mod config;
mod error;
mod server;

pub use admin::{AdminDeps, AdminMetrics, AdminServer};
pub use config::{AdminConfig, AdminTlsConfig, AdminToken, HttpConfig};
pub use error::HttpError;
pub use server::{HttpDeps, HttpServer, ScrapeHook};
