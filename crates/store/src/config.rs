//! `[store]` section of `gateway.toml`.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wardgate_core::validate::Problems;

/// How hard the store works to keep acknowledged readings.
#[derive(
    Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Durability {
    /// Acknowledge only after the commit is fsynced (SQLite WAL, `synchronous=FULL`), with group
    /// commit. The product's promise: an acknowledged reading survives `kill -9` and power loss.
    #[default]
    Fsync,
    /// Acknowledge once the reading is queued for the writer; commit without fsync. Readings
    /// acknowledged in the last moments before a crash or power loss CAN BE LOST. Logged as a
    /// warning at start-up.
    UnsafeNoFsync,
}

/// What happens when the outbox quota is reached.
#[derive(
    Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum OverflowPolicy {
    /// Refuse new readings (CoAP 5.03 + Max-Age, HTTP 503 + Retry-After): devices keep them.
    #[default]
    Reject,
    /// Delete the oldest undelivered readings to make room; counted in
    /// `wardgate_store_dropped_total` and logged once per interval.
    DropOldest,
}

/// Durable outbox settings.
#[derive(Debug, Clone, Deserialize, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// SQLite database file. Its directory is created if missing.
    pub path: PathBuf,
    /// Durability mode.
    pub durability: Durability,
    /// Group commit: after the first request arrives, wait at most this long for more before
    /// committing them in one transaction (one fsync). 0 (the default) commits whatever is queued
    /// at once; requests that arrive while an fsync runs still share the next one, so batching
    /// happens under load without adding latency when traffic is light (measured in
    /// `cargo bench -p wardgate-store`: a 2 ms window cost ~4 ms per ack at 1 in flight).
    #[schemars(with = "wardgate_core::config_doc::Duration")]
    #[serde(with = "humantime_serde")]
    pub commit_window: Duration,
    /// Adaptive group commit: while requests have been arriving less than half this apart, a
    /// commit waits up to this long for more (until it holds 32 readings), so a ward-sized load
    /// shares each fsync instead of paying one per reading. A light load, a lone device with
    /// one request in flight, and a saturated gateway commit at once; a wait that catches
    /// nothing turns waiting off for 100 ms. Measured at 2,000 readings/s: 2.4 times less CPU
    /// per reading for about this much more acknowledgement latency (timers round up to the
    /// next millisecond) (`docs/benchmarks.md`, 2026-12-01).
    /// 0 turns it off.
    #[schemars(with = "wardgate_core::config_doc::Duration")]
    #[serde(with = "humantime_serde")]
    pub commit_linger: Duration,
    /// Most readings in one commit.
    pub max_batch: usize,
    /// Quota: bytes of reading JSON held in the outbox.
    pub max_bytes: u64,
    /// Quota: readings held in the outbox.
    pub max_readings: u64,
    /// Readings older than this are dropped even if undelivered (counted, logged). 0 disables.
    #[schemars(with = "wardgate_core::config_doc::Duration")]
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Policy when a quota is reached.
    pub overflow: OverflowPolicy,
    /// Most recently committed readings kept in memory, so uplinks that keep up get new readings
    /// without reading the database back. 0 disables it (every delivery is read from disk).
    pub tail_readings: usize,
    /// Memory budget of that in-memory tail, in bytes of reading JSON (roughly).
    pub tail_bytes: u64,
    /// The delivery record: for each delivered reading, which uplink acknowledged it and when
    /// (one row of about 60 bytes per reading and uplink, written with the acknowledgement;
    /// `GET /admin/v1/readings/{id}` reads it). Records of readings created longer ago than
    /// this are removed. 0 turns the record off (and removes what an earlier run recorded).
    /// Default 24 h.
    #[schemars(with = "wardgate_core::config_doc::Duration")]
    #[serde(with = "humantime_serde")]
    pub delivery_log: Duration,
    /// Most rows the delivery record keeps; the oldest go first. Default 1,000,000
    /// (about 60 MB; an hour at 300 readings/s to one uplink).
    pub delivery_log_rows: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: PathBuf::from("wardgate-data/outbox.db"),
            durability: Durability::Fsync,
            commit_window: Duration::ZERO,
            commit_linger: Duration::from_millis(2),
            max_batch: 4096,
            max_bytes: 1024 * 1024 * 1024,
            max_readings: 10_000_000,
            max_age: Duration::from_secs(7 * 24 * 3600),
            overflow: OverflowPolicy::Reject,
            tail_readings: 8192,
            tail_bytes: 16 * 1024 * 1024,
            delivery_log: Duration::from_secs(24 * 3600),
            delivery_log_rows: 1_000_000,
        }
    }
}

impl StoreConfig {
    /// Adds every problem in this section to `p`; `at` is the section's path.
    pub fn validate(&self, at: &str, p: &mut Problems) {
        if self.path.as_os_str().is_empty() {
            p.push(format!("{at}.path"), "must not be empty");
        }
        if self.max_batch == 0 {
            p.push(format!("{at}.max_batch"), "must be at least 1");
        }
        if self.max_bytes == 0 {
            p.push(format!("{at}.max_bytes"), "must be at least 1");
        }
        if self.max_readings == 0 {
            p.push(format!("{at}.max_readings"), "must be at least 1");
        }
        if self.tail_readings > 1_000_000 {
            p.push(
                format!("{at}.tail_readings"),
                "must be at most 1000000 (it is held in memory)",
            );
        }
        if self.tail_bytes > 1024 * 1024 * 1024 {
            p.push(
                format!("{at}.tail_bytes"),
                "must be at most 1 GiB (it is held in memory)",
            );
        }
        if !self.delivery_log.is_zero() && !(1..=100_000_000).contains(&self.delivery_log_rows) {
            p.push(
                format!("{at}.delivery_log_rows"),
                "must be between 1 and 100000000 (or set delivery_log = \"0s\" to turn the record off)",
            );
        }
        if self.commit_window > Duration::from_secs(1) {
            p.push(
                format!("{at}.commit_window"),
                "must be at most 1s (it delays every acknowledgement)",
            );
        }
        if self.commit_linger > Duration::from_millis(100) {
            p.push(
                format!("{at}.commit_linger"),
                "must be at most 100ms (it can delay acknowledgements by that much)",
            );
        }
    }
}
