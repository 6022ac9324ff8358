//! wardgate-http: the gateway's HTTP side, servers and client.
//!
//! It owns:
//! - [`HttpServer`]: `/healthz` (the process is alive and its runtime answers), `/readyz`
//!   (every listener bound, the store writable and at least one uplink ready; the JSON body
//!   names the failing checks) and `/metrics` (Prometheus text exposition of the registry passed
//!   in), unauthenticated, for probes and scrapers on a management interface;
//! - [`AdminServer`]: the admin API (`/admin/v1/...`: the device registry) on its own
//!   listener, over TLS unless on loopback, to holders of a configured token or client
//!   certificate only; every edit is audited (see the [`admin`] module); it also shows the
//!   uplink selector's live state (`/admin/v1/selector`);
//! - [`ingest::IngestServer`]: HTTP(S) device ingest (`POST /v1/devices/{id}/readings`,
//!   `docs/ingest-api.openapi.json`) on its own listener: identity from a bearer token (checked
//!   by the device registry) or a client certificate, then the one ingest pipeline; RFC 9457
//!   problems for every refusal;
//! - [`uplink::HttpsUplink`]: the HTTPS uplink, which drains one outbox cursor to one endpoint
//!   as batches of readings (a JSON array of `wardgate.reading/1` objects per POST).
//!
//! It promises:
//! - **ingest 2xx means durable**: a device gets 201 only once the store made its reading
//!   durable; bodies are bounded while they are read, never buffered past `max_body_bytes`;
//! - **uplink ack means the endpoint has it**: a reading is acknowledged to the outbox only
//!   when the endpoint answered its batch 2xx; every other outcome hands the batch back (nack)
//!   and retries it later, with the same `Idempotency-Key`, never dropping it. One batch is in
//!   flight at a time, which keeps per-device order (see [`uplink`]);
//! - **TLS is strict**: TLS 1.2+ only, certificate chain, validity and host name checked
//!   (`insecure_skip_verify` is the one named, loudly logged lab exception), plain `http://`
//!   refused unless allowed explicitly;
//! - error responses never leak internals, and no response, log line, metric or `Debug`
//!   output carries a key, a token, a token hash or a configured header value.
//!
//! The uplink's client is `reqwest` (HTTP/1.1 framing, connection reuse, timeouts that we would
//! otherwise write on hyper ourselves) without its default features: it is handed a
//! `rustls::ClientConfig` built here with the `ring` provider, so the tree keeps one rustls 0.23
//! and no aws-lc, and neither proxies from the environment nor redirects are followed.
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod admin;
pub mod config;
mod error;
pub mod ingest;
mod listener;
mod server;
mod tls;
pub mod uplink;

pub use admin::{AdminDeps, AdminMetrics, AdminServer};
pub use config::{AdminConfig, AdminTlsConfig, AdminToken, HttpConfig, TokenRole};
pub use error::HttpError;
pub use server::{HttpDeps, HttpServer, ScrapeHook};
