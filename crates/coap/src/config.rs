//! `[coap]` section of `gateway.toml`.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use wardgate_core::MessageClass;
use wardgate_core::validate::Problems;

/// CoAP endpoint settings.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CoapConfig {
    /// Run the CoAP endpoint.
    pub enabled: bool,
    /// UDP addresses to listen on. IPv6 sockets are bound v6-only so `0.0.0.0:5683` and
    /// `[::]:5683` can both be listed.
    pub listen: Vec<SocketAddr>,
    /// SO_RCVBUF for each socket, in bytes. The kernel default holds only a few hundred small
    /// datagrams; bursts beyond the buffer are lost before wardgate sees them.
    pub recv_buffer_bytes: usize,
    /// SO_SNDBUF for each socket, in bytes.
    pub send_buffer_bytes: usize,
    /// Largest datagram accepted or sent, in bytes (RFC 7252 §4.6 recommends 1152 of payload
    /// within a 1280-byte IPv6 MTU). Larger datagrams are answered 4.13 with Size1 (CON) or ignored.
    pub max_datagram_bytes: usize,
    /// URI path prefix of the ingest resource: readings go to `/{ingest_path}/{device-id}`.
    pub ingest_path: String,
    /// Message class for readings whose request carries no `class=` URI query.
    pub default_class: MessageClass,
    /// How long a request may wait for its reading to become durable before the gateway sends an
    /// empty ACK and answers later with a separate (CON) response.
    #[serde(with = "humantime_serde")]
    pub piggyback_budget: Duration,
    /// Maximum records in one payload (4.13 beyond).
    pub max_records_per_message: usize,
    /// Message-layer transmission parameters.
    pub transmission: TransmissionConfig,
    /// Deduplication state bounds.
    pub dedup: DedupConfig,
    /// Block-wise transfer bounds.
    pub block: BlockConfig,
    /// Resources on CoAP-server sensors that wardgate observes (RFC 7641).
    pub observe: Vec<ObserveTarget>,
}

impl Default for CoapConfig {
    fn default() -> Self {
        CoapConfig {
            enabled: true,
            listen: vec![
                SocketAddr::from(([0, 0, 0, 0], 5683)),
                SocketAddr::from(([0u16; 8], 5683)),
            ],
            recv_buffer_bytes: 4 * 1024 * 1024,
            send_buffer_bytes: 1024 * 1024,
            max_datagram_bytes: 1280,
            ingest_path: "v1/readings".into(),
            default_class: MessageClass::Vital,
            piggyback_budget: Duration::from_millis(500),
            max_records_per_message: 256,
            transmission: TransmissionConfig::default(),
            dedup: DedupConfig::default(),
            block: BlockConfig::default(),
            observe: Vec::new(),
        }
    }
}

/// RFC 7252 §4.8 transmission parameters. The defaults are the RFC's; change them only for
/// constrained links you have measured.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TransmissionConfig {
    /// ACK_TIMEOUT.
    #[serde(with = "humantime_serde")]
    pub ack_timeout: Duration,
    /// ACK_RANDOM_FACTOR (≥ 1.0).
    pub ack_random_factor: f64,
    /// MAX_RETRANSMIT.
    pub max_retransmit: u32,
    /// NSTART: outstanding CON requests per peer when wardgate is the client.
    pub nstart: u32,
}

impl Default for TransmissionConfig {
    fn default() -> Self {
        TransmissionConfig {
            ack_timeout: Duration::from_secs(2),
            ack_random_factor: 1.5,
            max_retransmit: 4,
            nstart: 1,
        }
    }
}

/// Deduplication bounds. Entries live EXCHANGE_LIFETIME (CON) or NON_LIFETIME (NON); when the
/// table is full the oldest entry is evicted early and counted
/// (`wardgate_coap_dedup_evictions_total`).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DedupConfig {
    /// Maximum remembered exchanges across all peers.
    pub max_entries: usize,
}

impl Default for DedupConfig {
    fn default() -> Self {
        DedupConfig {
            max_entries: 262_144,
        }
    }
}

/// Block-wise (RFC 7959) bounds.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BlockConfig {
    /// Largest body reassembled from Block1 uploads (4.13 with Size1 beyond).
    pub max_body_bytes: usize,
    /// Concurrent Block1 reassemblies across all peers (5.03 beyond).
    pub max_open_transfers: usize,
    /// An idle reassembly is discarded after this long.
    #[serde(with = "humantime_serde")]
    pub transfer_timeout: Duration,
    /// Block size (16..=1024, power of two) wardgate uses for Block2 responses.
    pub preferred_block_size: u16,
}

impl Default for BlockConfig {
    fn default() -> Self {
        BlockConfig {
            max_body_bytes: 64 * 1024,
            max_open_transfers: 256,
            transfer_timeout: Duration::from_secs(60),
            preferred_block_size: 1024,
        }
    }
}

/// One resource wardgate observes on a sensor that is a CoAP server.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ObserveTarget {
    /// `coap://host[:port]/path`.
    pub uri: String,
    /// Device id for readings from this resource.
    pub device: String,
    /// Message class for its readings.
    #[serde(default)]
    pub class: MessageClass,
    /// Record name when the notification payload is text/plain (default: last path segment).
    #[serde(default)]
    pub name: Option<String>,
    /// Re-register when no notification arrived for this long (covers lost state on the sensor).
    #[serde(default = "default_reregister_after", with = "humantime_serde")]
    pub reregister_after: Duration,
}

fn default_reregister_after() -> Duration {
    Duration::from_secs(300)
}

impl CoapConfig {
    /// Adds every problem in this section to `p`; `at` is the section's path.
    pub fn validate(&self, at: &str, p: &mut Problems) {
        if self.enabled && self.listen.is_empty() {
            p.push(format!("{at}.listen"), "at least one address is required when enabled");
        }
        if !(256..=65_507).contains(&self.max_datagram_bytes) {
            p.push(format!("{at}.max_datagram_bytes"), "must be between 256 and 65507");
        }
        if self.ingest_path.is_empty() || self.ingest_path.starts_with('/') {
            p.push(format!("{at}.ingest_path"), "must be a non-empty path without a leading '/'");
        }
        if self.transmission.ack_random_factor < 1.0 {
            p.push(format!("{at}.transmission.ack_random_factor"), "must be at least 1.0");
        }
        if self.transmission.nstart == 0 {
            p.push(format!("{at}.transmission.nstart"), "must be at least 1");
        }
        if self.dedup.max_entries == 0 {
            p.push(format!("{at}.dedup.max_entries"), "must be at least 1");
        }
        let b = self.block.preferred_block_size;
        if !(16..=1024).contains(&b) || !b.is_power_of_two() {
            p.push(format!("{at}.block.preferred_block_size"), "must be a power of two from 16 to 1024");
        }
        if self.max_records_per_message == 0 {
            p.push(format!("{at}.max_records_per_message"), "must be at least 1");
        }
        for (i, o) in self.observe.iter().enumerate() {
            if !o.uri.starts_with("coap://") {
                p.push(format!("{at}.observe[{i}].uri"), format!("{:?} is not a coap:// URI", o.uri));
            }
            if o.device.is_empty() {
                p.push(format!("{at}.observe[{i}].device"), "must not be empty");
            }
        }
    }
}
