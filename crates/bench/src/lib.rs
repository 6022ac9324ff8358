//! wardgate-bench: the benchmark harness.
//!
//! It owns the load generator and the ceilings wardgate is measured against:
//! - [`coap_load`]: CoAP CON/NON readings (SenML JSON or CBOR) against any loopback CoAP server,
//!   closed loop or open loop with coordinated-omission-corrected latency, optionally matching
//!   every reading delivered on an MQTT topic back to its send time ([`mqtt_sink`]);
//! - [`udp_echo`]: the loopback UDP ceiling (a stateless 2.01 answerer);
//! - [`broker_limit`]: the broker ceiling (QoS 1 publisher → Mosquitto → subscriber);
//! - [`sample`]: the CPU and memory of an idle process;
//! - [`failover`] and [`alarm_backlog`]: the uplink selector's failover under load and alarm
//!   latency while a backlog drains (issue 11), observed by [`arrivals`] subscribers;
//! - [`uplink_e2e`]: CoAP vitals delivered by the MQTT and/or the HTTPS uplink, the latter
//!   received by [`https_sink`] (HTTP/1.1 over TLS with a [`tls`] certificate made per run);
//! - [`https_ingest`]: devices posting readings to the HTTP(S) ingest over keep-alive
//!   connections, closed loop.
//!
//! Promises: it only ever sends to loopback addresses ([`target`]); every run is bounded in
//! request count, time and memory; every run prints exactly one JSON object on stdout, whose
//! counts (timeouts, 5.03s, losses, duplicates, other processes' CPU) say how trustworthy it is.
//! Orchestration (which systems, how often, the report) lives in `bench/` at the repository root.
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod alarm_backlog;
pub mod arrivals;
pub mod broker_limit;
pub mod coap_load;
pub mod coap_msg;
pub mod dtls_load;
pub mod error;
pub mod failover;
pub mod https_ingest;
pub mod https_sink;
pub mod lwm2m_storm;
pub mod mqtt_sink;
pub mod payload;
pub mod procfs;
pub mod prom;
pub mod sample;
pub mod stats;
pub mod target;
pub mod tls;
pub mod tracker;
pub mod udp_echo;
pub mod uplink_e2e;

pub use error::BenchError;
