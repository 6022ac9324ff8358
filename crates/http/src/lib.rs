//! wardgate-http: the operator-facing HTTP server.
//!
//! Serves `/healthz` (the process is alive and its runtime answers), `/readyz` (every listener
//! bound, the store writable and at least one uplink connected; the JSON body names the failing
//! checks) and `/metrics` (Prometheus text exposition of the registry passed in).
//! HTTP ingest, the admin API, the status page and the HTTPS uplink are later work and are not
//! served yet (requests to them get 404).
//!
//! Error responses never leak internals.
#![forbid(unsafe_code)]

pub mod config;
mod error;
mod server;

pub use config::HttpConfig;
pub use error::HttpError;
pub use server::{HttpDeps, HttpServer, ScrapeHook};
