//! `[coap]` section of `gateway.toml`.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wardgate_core::MessageClass;
use wardgate_core::validate::Problems;

/// Largest ACK_TIMEOUT, ACK_RANDOM_FACTOR and MAX_RETRANSMIT honoured (the config validation
/// refuses larger ones; the clamps keep timer arithmetic overflow-free regardless).
pub const MAX_ACK_TIMEOUT: Duration = Duration::from_secs(300);
/// See [`MAX_ACK_TIMEOUT`].
pub const MAX_RANDOM_FACTOR: f64 = 16.0;
/// See [`MAX_ACK_TIMEOUT`].
pub const MAX_RETRANSMIT_LIMIT: u32 = 20;
/// Longest piggyback budget honoured.
pub const MAX_PIGGYBACK_BUDGET: Duration = Duration::from_secs(300);
/// Longest idle time honoured for a Block1 reassembly.
pub const MAX_TRANSFER_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// CoAP endpoint settings.
#[derive(Debug, Clone, Deserialize, PartialEq, Serialize, schemars::JsonSchema)]
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
    #[schemars(with = "wardgate_core::config_doc::Duration")]
    #[serde(with = "humantime_serde")]
    pub piggyback_budget: Duration,
    /// Maximum records in one payload (4.13 beyond).
    pub max_records_per_message: usize,
    /// Max-Age of 5.03 Service Unavailable answers (bus busy, store full, shutting down,
    /// too many block transfers): how long devices should wait before retrying.
    #[schemars(with = "wardgate_core::config_doc::Duration")]
    #[serde(with = "humantime_serde")]
    pub busy_max_age: Duration,
    /// On shutdown, the longest wait for in-flight requests to be answered (their readings are
    /// already queued to the store) and observations to be cancelled.
    #[schemars(with = "wardgate_core::config_doc::Duration")]
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// Message-layer transmission parameters.
    pub transmission: TransmissionConfig,
    /// Deduplication state bounds.
    pub dedup: DedupConfig,
    /// Block-wise transfer bounds.
    pub block: BlockConfig,
    /// Request rate limits per source and per claimed device.
    pub rate_limit: RateLimitConfig,
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
            busy_max_age: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(5),
            transmission: TransmissionConfig::default(),
            dedup: DedupConfig::default(),
            block: BlockConfig::default(),
            rate_limit: RateLimitConfig::default(),
            observe: Vec::new(),
        }
    }
}

/// RFC 7252 §4.8 transmission parameters. The defaults are the RFC's; change them only for
/// constrained links you have measured.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TransmissionConfig {
    /// ACK_TIMEOUT.
    #[schemars(with = "wardgate_core::config_doc::Duration")]
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
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DedupConfig {
    /// Maximum remembered exchanges across all peers.
    pub max_entries: usize,
    /// Maximum remembered exchanges of one source (IPv4 address or IPv6 /64), so one host cannot
    /// fill the table and push out everybody else's entries. A source at its share still has its
    /// new messages processed, but they are not remembered (their duplicates would be processed
    /// again), counted in `wardgate_coap_dedup_over_share_total`. The default allows a sustained
    /// 66 messages a second from one host for EXCHANGE_LIFETIME.
    pub max_entries_per_source: usize,
}

impl Default for DedupConfig {
    fn default() -> Self {
        DedupConfig {
            max_entries: 262_144,
            max_entries_per_source: 16_384,
        }
    }
}

/// Token-bucket limits on requests reaching the resources (`[coap.rate_limit]`). A rate of 0
/// turns that limit off (the default: the right numbers depend on the devices, and a load
/// generator or an aggregating device legitimately sends thousands a second from one address).
/// Over a limit a Confirmable request gets 5.03 with Max-Age (the seconds until its bucket has a
/// token again) and a Non-confirmable one gets nothing; counted in
/// `wardgate_coap_rate_limited_total{scope}` and logged at most once a minute per scope. Buckets
/// sit in fixed arrays indexed by a keyed hash (4,096 per socket and scope), so memory does not
/// grow with the number of (spoofed) sources or device ids.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Requests a second from one source (IPv4 address, IPv6 /64, or proven identity), every
    /// request counted (each Block1 block too). 0 = unlimited.
    pub per_source_rate: f64,
    /// Requests one source may send at once before `per_source_rate` applies.
    pub per_source_burst: u32,
    /// Readings requests a second for one device id (as claimed in the readings path, checked
    /// before authorization and decoding; a whole Block1 upload counts once). 0 = unlimited.
    pub per_device_rate: f64,
    /// Readings requests one device id may send at once before `per_device_rate` applies.
    pub per_device_burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            per_source_rate: 0.0,
            per_source_burst: 200,
            per_device_rate: 0.0,
            per_device_burst: 20,
        }
    }
}

/// Largest rate accepted by the validation (requests a second).
pub const MAX_RATE: f64 = 1_000_000.0;

/// Block-wise (RFC 7959) bounds.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct BlockConfig {
    /// Largest body reassembled from Block1 uploads (4.13 with Size1 beyond).
    pub max_body_bytes: usize,
    /// Concurrent Block1 reassemblies across all peers. When the table is full, a new transfer
    /// takes the place of the least recently active transfer of the source holding the most
    /// (counted in `wardgate_coap_evictions_total{table="block1",reason="table_full"}`).
    pub max_open_transfers: usize,
    /// Concurrent Block1 reassemblies of one source (IPv4 address, IPv6 /64, or proven
    /// identity); beyond it that source's new transfers get 5.03 with Max-Age while other sources
    /// are still served. Also the most block-wise responses kept for one source's Block2 fetches
    /// (its oldest is dropped beyond that).
    pub max_transfers_per_source: usize,
    /// An idle reassembly is discarded after this long.
    #[schemars(with = "wardgate_core::config_doc::Duration")]
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
            max_transfers_per_source: 8,
            transfer_timeout: Duration::from_secs(60),
            preferred_block_size: 1024,
        }
    }
}

/// One resource wardgate observes on a sensor that is a CoAP server.
#[derive(Debug, Clone, Deserialize, PartialEq, Serialize, schemars::JsonSchema)]
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
    #[schemars(with = "wardgate_core::config_doc::Duration")]
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
            p.push(
                format!("{at}.listen"),
                "at least one address is required when enabled",
            );
        }
        if !(256..=65_507).contains(&self.max_datagram_bytes) {
            p.push(
                format!("{at}.max_datagram_bytes"),
                "must be between 256 and 65507",
            );
        }
        if self.ingest_path.is_empty() || self.ingest_path.starts_with('/') {
            p.push(
                format!("{at}.ingest_path"),
                "must be a non-empty path without a leading '/'",
            );
        }
        let t = &self.transmission;
        if !(1.0..=MAX_RANDOM_FACTOR).contains(&t.ack_random_factor) {
            p.push(
                format!("{at}.transmission.ack_random_factor"),
                "must be a number from 1.0 to 16",
            );
        }
        if t.ack_timeout.is_zero() || t.ack_timeout > MAX_ACK_TIMEOUT {
            p.push(
                format!("{at}.transmission.ack_timeout"),
                "must be more than 0 and at most 300s",
            );
        }
        if t.max_retransmit > MAX_RETRANSMIT_LIMIT {
            p.push(
                format!("{at}.transmission.max_retransmit"),
                "must be at most 20",
            );
        }
        if self.piggyback_budget > MAX_PIGGYBACK_BUDGET {
            p.push(format!("{at}.piggyback_budget"), "must be at most 300s");
        }
        if self.drain_timeout > Duration::from_secs(3600) {
            p.push(format!("{at}.drain_timeout"), "must be at most 1h");
        }
        if self.block.transfer_timeout.is_zero()
            || self.block.transfer_timeout > MAX_TRANSFER_TIMEOUT
        {
            p.push(
                format!("{at}.block.transfer_timeout"),
                "must be more than 0 and at most 24h",
            );
        }
        if self.transmission.nstart == 0 {
            p.push(format!("{at}.transmission.nstart"), "must be at least 1");
        }
        if self.dedup.max_entries == 0 {
            p.push(format!("{at}.dedup.max_entries"), "must be at least 1");
        }
        let b = self.block.preferred_block_size;
        if !(16..=1024).contains(&b) || !b.is_power_of_two() {
            p.push(
                format!("{at}.block.preferred_block_size"),
                "must be a power of two from 16 to 1024",
            );
        }
        if self.max_records_per_message == 0 {
            p.push(
                format!("{at}.max_records_per_message"),
                "must be at least 1",
            );
        }
        if self.busy_max_age.as_secs() > u64::from(u32::MAX) {
            p.push(format!("{at}.busy_max_age"), "must fit in 32-bit seconds");
        }
        if self.block.max_open_transfers == 0 {
            p.push(
                format!("{at}.block.max_open_transfers"),
                "must be at least 1",
            );
        }
        if self.block.max_transfers_per_source == 0 {
            p.push(
                format!("{at}.block.max_transfers_per_source"),
                "must be at least 1",
            );
        }
        if self.dedup.max_entries_per_source == 0 {
            p.push(
                format!("{at}.dedup.max_entries_per_source"),
                "must be at least 1",
            );
        }
        let r = &self.rate_limit;
        for (name, rate, burst) in [
            ("per_source", r.per_source_rate, r.per_source_burst),
            ("per_device", r.per_device_rate, r.per_device_burst),
        ] {
            if !(0.0..=MAX_RATE).contains(&rate) {
                p.push(
                    format!("{at}.rate_limit.{name}_rate"),
                    "must be a number from 0 (unlimited) to 1000000",
                );
            }
            if rate > 0.0 && burst == 0 {
                p.push(
                    format!("{at}.rate_limit.{name}_burst"),
                    "must be at least 1 when the rate is set",
                );
            }
        }
        for (i, o) in self.observe.iter().enumerate() {
            if let Err(e) = crate::uri::parse_uri(&o.uri) {
                p.push(format!("{at}.observe[{i}].uri"), e.to_string());
            }
            if !wardgate_core::reading::valid_device_id(o.device.as_bytes()) {
                p.push(
                    format!("{at}.observe[{i}].device"),
                    "must be 1-128 characters of [A-Za-z0-9._:-]",
                );
            }
            if o.reregister_after < Duration::from_secs(1) {
                p.push(
                    format!("{at}.observe[{i}].reregister_after"),
                    "must be at least 1s",
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(c: &CoapConfig) -> Vec<String> {
        let mut p = Problems::new();
        c.validate("coap", &mut p);
        p.into_vec().into_iter().map(|p| p.path).collect()
    }

    #[test]
    fn defaults_are_valid() {
        assert!(problems(&CoapConfig::default()).is_empty());
    }

    #[test]
    fn timer_values_that_could_overflow_are_reported() {
        let mut c = CoapConfig::default();
        c.transmission.ack_random_factor = f64::INFINITY;
        c.transmission.ack_timeout = Duration::ZERO;
        c.transmission.max_retransmit = 1000;
        c.piggyback_budget = Duration::from_secs(86_400 * 365);
        c.block.transfer_timeout = Duration::ZERO;
        let p = problems(&c);
        for path in [
            "coap.transmission.ack_random_factor",
            "coap.transmission.ack_timeout",
            "coap.transmission.max_retransmit",
            "coap.piggyback_budget",
            "coap.block.transfer_timeout",
        ] {
            assert!(p.iter().any(|x| x == path), "{path} missing from {p:?}");
        }
        c.transmission.ack_random_factor = f64::NAN;
        assert!(
            problems(&c)
                .iter()
                .any(|x| x == "coap.transmission.ack_random_factor")
        );
    }

    #[test]
    fn shares_and_rate_limits_are_checked() {
        let mut c = CoapConfig::default();
        c.block.max_transfers_per_source = 0;
        c.dedup.max_entries_per_source = 0;
        c.rate_limit.per_source_rate = f64::NAN;
        c.rate_limit.per_device_rate = 5.0;
        c.rate_limit.per_device_burst = 0;
        assert_eq!(
            problems(&c),
            [
                "coap.block.max_transfers_per_source",
                "coap.dedup.max_entries_per_source",
                "coap.rate_limit.per_source_rate",
                "coap.rate_limit.per_device_burst",
            ]
        );
        c.rate_limit.per_source_rate = -1.0;
        assert!(
            problems(&c)
                .iter()
                .any(|x| x == "coap.rate_limit.per_source_rate")
        );
    }

    #[test]
    fn observe_targets_are_checked() {
        let c = CoapConfig {
            observe: vec![ObserveTarget {
                uri: "coap://[::1/x".into(),
                device: "bed 1".into(),
                class: MessageClass::Vital,
                name: None,
                reregister_after: Duration::from_millis(10),
            }],
            ..CoapConfig::default()
        };
        assert_eq!(
            problems(&c),
            [
                "coap.observe[0].uri",
                "coap.observe[0].device",
                "coap.observe[0].reregister_after"
            ]
        );
    }

    #[test]
    fn new_fields_deserialize_with_humantime() {
        let c: CoapConfig =
            serde_json::from_str(r#"{"busy_max_age":"30s","drain_timeout":"2s"}"#).expect("parse");
        assert_eq!(c.busy_max_age, Duration::from_secs(30));
        assert_eq!(c.drain_timeout, Duration::from_secs(2));
        assert!(serde_json::from_str::<CoapConfig>(r#"{"busy_maxage":"30s"}"#).is_err());
    }
}
