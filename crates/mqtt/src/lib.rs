//! wardgate-mqtt: the MQTT uplink (and later the southbound subscriber and the split-mode bus
//! backend).
//!
//! It owns getting readings from the durable outbox to an MQTT broker (3.1.1 or 5, plain or
//! TLS with optional client certificates), and it promises:
//! - **ack means the broker has it**: a reading is acknowledged to the outbox only when the
//!   PUBACK for its own packet id arrives (QoS 1, the default), or once written for QoS 0. A
//!   reading larger than the packet limit is the one exception: it is released with a counted
//!   metric and an error log, since no retry could deliver it;
//! - **at least once, in order**: after every (re)connect it publishes again from the oldest
//!   unacknowledged reading, in outbox order (which keeps per-device order); duplicates are
//!   possible, loss is not, and the reading id lets the backend de-duplicate;
//! - **bounded**: at most `max_inflight` publishes are queued or unacknowledged at once;
//! - **status**: retained `online` on the status topic after each CONNACK, retained `offline` as
//!   the will, and `offline` published before a clean DISCONNECT on shutdown;
//! - **topics cannot be injected**: device and gateway ids are escaped before they enter a topic
//!   (see [`topic`] for the rule).
//!
//! How rumqttc's queueing and reconnect behaviour is handled is written down in [`link`]'s and
//! `uplink`'s module docs.
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod config;
mod error;
mod inflight;
mod link;
mod metrics;
mod tls;
pub mod topic;
mod uplink;
pub mod url;

pub use config::{MqttUplinkConfig, MqttVersion, TlsConfig};
pub use error::MqttError;
pub use metrics::MqttMetrics;
pub use uplink::MqttUplink;
