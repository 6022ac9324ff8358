//! wardgate-coap: the CoAP endpoint (RFC 7252) of the gateway.
//!
//! It owns:
//! - [`codec`]: a zero-copy CoAP message parser and encoder;
//! - [`layer`]: the message layer — deduplication by (peer, Message ID) with a bounded, compact
//!   table; piggybacked and separate responses; retransmission of Confirmable messages with the
//!   RFC timers; tokens, Message IDs and NSTART for the gateway's own requests;
//! - [`router`] (with `resource.rs`): the resource layer — a [`Resource`] trait (request and peer
//!   context in, a response now or later out) and a router that dispatches by Uri-Path, answers
//!   4.04/4.05 itself, serves `/.well-known/core` from the registrations and runs block-wise
//!   transfer below every resource;
//! - [`block`]: block-wise transfer (RFC 7959), Block1 reassembly and Block2 slicing;
//! - [`ingest`]: the readings resource, a thin shell over `wardgate-core`'s ingest pipeline;
//! - [`observe`]: the gateway observing sensors (RFC 7641);
//! - [`transport`]: the datagram seam: UDP here, DTLS in `wardgate-dtls`;
//! - [`CoapEndpoint`] and [`CoapClient`], which run the above on sockets.
//!
//! Promises:
//! - **Ack means durable**: a 2.xx answer to an ingest request (and the ACK of a Confirmable
//!   notification) is sent only after the bus request for its reading resolved `Ok`, i.e. after
//!   the store made it durable. Everything else gets an error code or silence.
//! - **Bad input never takes the endpoint down**: malformed datagrams get a RST (Confirmable with a
//!   readable header) or silence (RFC 7252 §4.2-4.3), unknown critical options 4.02, oversized
//!   requests 4.13 with Size1; each counts a metric.
//! - **Memory is bounded by configuration**: deduplication entries (`dedup.max_entries`, oldest
//!   evicted first), block transfers (`block.max_open_transfers` × `block.max_body_bytes`),
//!   pending commits (by the bus capacity), command and notification queues, rate buckets (a
//!   fixed array per socket).
//! - **One peer cannot starve the others**: one source (proven identity, else IPv4 address or
//!   IPv6 /64) holds at most its share of the block tables (`block.max_transfers_per_source`)
//!   and of the dedup table (`dedup.max_entries_per_source`); a full block table evicts from the
//!   source holding the most instead of refusing everybody; requests are rate-limited per
//!   source and per claimed device id when `[coap.rate_limit]` sets rates.
//! - **No amplification**: nothing the endpoint sends an unauthenticated peer, message-layer
//!   answers included, is more than 3× the bytes of the datagram it answers (RFC 7252 §11.3).
//! - One task per socket owns its state: no lock, no task per datagram.
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod block;
mod client;
pub mod codec;
pub mod config;
pub mod dedup;
mod driver;
mod endpoint;
pub mod engine;
mod error;
mod exchange;
pub mod ingest;
pub mod layer;
mod metrics;
pub mod observe;
mod resource;
pub mod router;
pub mod transport;
pub mod uri;

pub use client::{CoapClient, Observation, Requester};
pub use codec::{Code, Token};
pub use config::{CoapConfig, ObserveTarget, TransmissionConfig};
pub use endpoint::{CoapEndpoint, EndpointDeps};
pub use error::CoapError;
pub use exchange::{AckHandle, ClientRequest, ClientResponse, Notification};
pub use layer::Response;
pub use metrics::CoapMetrics;
pub use resource::{Deferred, Registration, Reply, Request, Resource};
pub use router::{Router, RouterSettings};
pub use transport::{Transport, UdpTransport};
