//! wardgate-mqtt: wardgate's MQTT parts (the split-mode bus backend will join them).
//!
//! - The **uplink** ([`MqttUplink`]) gets readings from the durable outbox to the cloud's MQTT
//!   broker: MQTT 3.1.1 or 5, over TCP (`mqtt://`), TLS (`mqtts://`, optional client
//!   certificate), or WebSockets (`wss://host/path` through TLS, for hospital networks that
//!   only let HTTPS out; `ws://` unencrypted, accepted like `mqtt://`).
//! - The **southbound subscriber** ([`southbound::MqttIngest`]) ingests what ward sensors
//!   publish to a local broker, through the one ingest pipeline of `wardgate-core`; see
//!   [`southbound`] for its promises (a message is acknowledged to the broker only once its
//!   reading is durable; bad messages are acknowledged, counted and dropped; store refusals are
//!   left to the broker to deliver again).
//!
//! The uplink promises:
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
pub mod southbound;
mod tls;
pub mod topic;
mod uplink;
pub mod url;

pub use config::{MqttUplinkConfig, MqttVersion, TlsConfig};
pub use error::MqttError;
pub use metrics::MqttMetrics;
pub use uplink::MqttUplink;
