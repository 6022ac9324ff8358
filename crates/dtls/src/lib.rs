//! wardgate-dtls: CoAP over DTLS 1.2 (`coaps://`, RFC 7252 §9 with the RFC 7925 IoT profile) as
//! a [`wardgate_coap::Transport`], so the CoAP message layer, the router, the ingest resource and
//! (later) LwM2M run unchanged over it.
//!
//! It owns:
//! - [`record`]: pure parsing of the DTLS records the cookie front must read before any state
//!   exists (fuzzed);
//! - `front`: the stateless HelloVerifyRequest cookie front, the per-source ClientHello rate
//!   limit and the replay guard (why the cookie works the way it does is in that file);
//! - [`DtlsTransport`]: the per-socket session table (bounded sessions, bounded handshakes in
//!   total and per source, handshake and idle timeouts), the peer identity each session proved,
//!   revocation when the registry changes, metrics ([`DtlsMetrics`]) and audit events.
//!
//! Promises:
//! - **No state before a valid cookie**: a ClientHello from an address without a handshake in
//!   progress costs one throw-away library instance (≈5 µs) and a HelloVerifyRequest smaller than
//!   the ClientHello (no amplification); nothing is kept until the peer proves its address.
//! - **Every table is bounded**: sessions, handshakes (total and per source), client randoms per
//!   cookie epoch, the ClientHello rate buckets (a fixed array), decrypted datagrams waiting for
//!   the message layer, encrypted ones waiting for the socket.
//! - **Identity comes only from a completed handshake**: the PSK identity whose key, looked up in
//!   the [`wardgate_core::CredentialStore`] per handshake, produced a valid Finished. Keys are
//!   never logged, counted or kept beyond the library's session (a fingerprint is kept, to close
//!   the session when the registry re-keys or revokes the device).
//! - Handshake failures are counted by reason and audited with the identity the peer claimed.
//! - `keylog`: with a capture key log, each session's master secret, seen where the library
//!   computes its key expansion (its HMAC provider is ours to wrap), for offline decryption.
//!
//! Library choice: dimpl 0.9 (sans-I/O, PSK_AES128_CCM_8 client and server, HelloVerify cookies,
//! extended master secret; `rust-crypto` backend so no C toolchain or aws-lc). The alternative,
//! `rtc-dtls` 0.21, also offers ECDHE_ECDSA with CCM_8 but is built around WebRTC's endpoint
//! model and keeps per-peer state from the first ClientHello, like dimpl, with no way to share
//! the cookie secret across connections; dimpl's seedable RNG is what makes the stateless front
//! possible. What dimpl does not have: Connection ID (RFC 9146), session resumption, CCM_8 for
//! ECDHE_ECDSA, and DTLS 1.2 without the extended master secret (tinydtls clients that do not
//! send it are refused).
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod config;
mod error;
mod front;
mod keylog;
mod metrics;
mod pem;
pub mod record;
mod transport;

pub use config::DtlsConfig;
pub use error::DtlsError;
pub use metrics::DtlsMetrics;
pub use transport::{DtlsDeps, DtlsTransport};
