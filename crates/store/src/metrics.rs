//! The store's metrics and the typed events that log and count them.
//!
//! Labels are bounded: `uplink` takes the configured uplink names (at most 63), every other label
//! is a closed enum. Device ids never become labels.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label set naming one configured uplink.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UplinkLabels {
    /// The configured uplink name.
    pub uplink: String,
}

/// Why readings left the outbox without being delivered.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum DropReason {
    /// `overflow = "drop-oldest"` made room for newer readings.
    Overflow,
    /// Older than `max_age`.
    Expired,
    /// `durability = "unsafe-no-fsync"` acknowledged them before a commit that then failed.
    UnsafeCommitFailed,
}

impl DropReason {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Overflow => "overflow",
            DropReason::Expired => "expired",
            DropReason::UnsafeCommitFailed => "unsafe_commit_failed",
        }
    }
}

impl EncodeLabelValue for DropReason {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

/// Why an ingest request was refused by the store.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum RejectReason {
    /// The quota is reached and `overflow = "reject"`.
    Full,
    /// The request alone is larger than the quota; it can never be stored.
    TooLarge,
    /// The commit failed (disk error).
    Unavailable,
}

impl RejectReason {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Full => "full",
            RejectReason::TooLarge => "too_large",
            RejectReason::Unavailable => "unavailable",
        }
    }
}

impl EncodeLabelValue for RejectReason {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

/// Why a reading was handed to an uplink again.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum ReplayReason {
    /// It was still owed after a restart (or a new cursor for the same uplink).
    Restart,
    /// The uplink rewound after a connection loss.
    Rewind,
}

impl ReplayReason {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ReplayReason::Restart => "restart",
            ReplayReason::Rewind => "rewind",
        }
    }
}

impl EncodeLabelValue for ReplayReason {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

/// What a commit carried.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum CommitKind {
    /// New readings (fsynced under `durability = "fsync"`).
    Ingest,
    /// Only acknowledgements and expiry: not fsynced on its own, since losing it only means
    /// delivering again; the next ingest commit's fsync covers it.
    Housekeeping,
}

impl CommitKind {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            CommitKind::Ingest => "ingest",
            CommitKind::Housekeeping => "housekeeping",
        }
    }
}

impl EncodeLabelValue for CommitKind {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

/// How an adaptive group-commit wait ended (`[store] commit_linger`).
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum LingerOutcome {
    /// More requests arrived and joined the commit.
    Caught,
    /// Nothing arrived: lingering pauses for a while.
    Empty,
}

impl LingerOutcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            LingerOutcome::Caught => "caught",
            LingerOutcome::Empty => "empty",
        }
    }
}

impl EncodeLabelValue for LingerOutcome {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LingerLabels {
    outcome: LingerOutcome,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    reason: DropReason,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectLabels {
    reason: RejectReason,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReplayLabels {
    uplink: String,
    reason: ReplayReason,
}

/// Why an uplink handed a delivery back (the label of `wardgate_store_nacked_total`).
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum NackLabel {
    /// The uplink reported a failure.
    Failed,
    /// The uplink timed out waiting for its peer.
    TimedOut,
    /// The uplink released it and no other uplink could take it.
    Unplaced,
}

impl NackLabel {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            NackLabel::Failed => "failed",
            NackLabel::TimedOut => "timed_out",
            NackLabel::Unplaced => "release_unplaced",
        }
    }
}

impl From<wardgate_core::NackReason> for NackLabel {
    fn from(r: wardgate_core::NackReason) -> Self {
        match r {
            wardgate_core::NackReason::Failed => NackLabel::Failed,
            wardgate_core::NackReason::TimedOut => NackLabel::TimedOut,
        }
    }
}

impl EncodeLabelValue for NackLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NackLabels {
    uplink: String,
    reason: NackLabel,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommitLabels {
    kind: CommitKind,
}

/// The outbox's metrics. Cheap to clone (every field is an `Arc` inside).
#[derive(Debug, Clone)]
pub struct StoreMetrics {
    depth_readings: Gauge,
    depth_bytes: Gauge,
    capacity_readings: Gauge,
    capacity_bytes: Gauge,
    delivery_log_rows: Gauge,
    uplink_depth: Family<UplinkLabels, Gauge>,
    oldest_age: Family<UplinkLabels, Gauge<f64, AtomicU64>>,
    commits: Family<CommitLabels, Counter>,
    lingers: Family<LingerLabels, Counter>,
    commit_errors: Counter,
    commit_seconds: Histogram,
    batch_readings: Histogram,
    committed_readings: Counter,
    replayed: Family<ReplayLabels, Counter>,
    dropped: Family<DropLabels, Counter>,
    rejected: Family<RejectLabels, Counter>,
    acks: Family<UplinkLabels, Counter>,
    nacked: Family<NackLabels, Counter>,
    released: Family<UplinkLabels, Counter>,
    unrouted: Counter,
    outcome_events_lost: Counter,
}

impl StoreMetrics {
    /// Registers every store metric in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = StoreMetrics::unregistered();
        registry.register(
            "wardgate_store_depth_readings",
            "Readings held in the outbox (owed to at least one uplink)",
            m.depth_readings.clone(),
        );
        registry.register(
            "wardgate_store_depth_bytes",
            "Bytes of reading JSON held in the outbox",
            m.depth_bytes.clone(),
        );
        registry.register(
            "wardgate_store_capacity_readings",
            "The outbox's bound in readings ([store] max_readings); beyond it ingest is refused",
            m.capacity_readings.clone(),
        );
        registry.register(
            "wardgate_store_capacity_bytes",
            "The outbox's bound in bytes ([store] max_bytes); beyond it ingest is refused",
            m.capacity_bytes.clone(),
        );
        registry.register(
            "wardgate_store_delivery_log_rows",
            "Rows in the delivery record (which uplink delivered which reading; [store] delivery_log)",
            m.delivery_log_rows.clone(),
        );
        registry.register(
            "wardgate_store_uplink_depth_readings",
            "Readings still owed to each uplink",
            m.uplink_depth.clone(),
        );
        registry.register(
            "wardgate_store_oldest_undelivered_age_seconds",
            "Age of the oldest reading still owed to each uplink (0 when none)",
            m.oldest_age.clone(),
        );
        registry.register(
            "wardgate_store_commits",
            "Outbox transactions committed",
            m.commits.clone(),
        );
        registry.register(
            "wardgate_store_commit_lingers",
            "Ingest commits that waited for more requests (adaptive group commit, [store] commit_linger), by whether any came",
            m.lingers.clone(),
        );
        registry.register(
            "wardgate_store_commit_errors",
            "Outbox commits that failed (their ingest requests were answered unavailable)",
            m.commit_errors.clone(),
        );
        registry.register(
            "wardgate_store_commit_duration_seconds",
            "Time to write and commit (fsync) one outbox transaction",
            m.commit_seconds.clone(),
        );
        registry.register(
            "wardgate_store_commit_batch_readings",
            "Readings per ingest commit (group commit: many requests share one fsync)",
            m.batch_readings.clone(),
        );
        registry.register(
            "wardgate_store_committed_readings",
            "Readings committed to the outbox",
            m.committed_readings.clone(),
        );
        registry.register(
            "wardgate_store_replayed",
            "Readings handed to an uplink again (after a restart or a rewind)",
            m.replayed.clone(),
        );
        registry.register(
            "wardgate_store_dropped",
            "Readings removed from the outbox undelivered, by reason",
            m.dropped.clone(),
        );
        registry.register(
            "wardgate_store_rejected",
            "Readings refused by the store (the device keeps them), by reason",
            m.rejected.clone(),
        );
        registry.register(
            "wardgate_store_acks",
            "Uplink acknowledgements committed",
            m.acks.clone(),
        );
        registry.register(
            "wardgate_store_nacked",
            "Deliveries an uplink handed back and will get again, by reason",
            m.nacked.clone(),
        );
        registry.register(
            "wardgate_store_released",
            "Deliveries an uplink gave up that the router moved to another uplink (counted at the giving uplink)",
            m.released.clone(),
        );
        registry.register(
            "wardgate_store_unrouted",
            "Readings the router owed to no configured uplink; they were owed to every uplink instead",
            m.unrouted.clone(),
        );
        registry.register(
            "wardgate_store_outcome_events_lost",
            "Delivery outcome events a subscriber lost because it fell behind",
            m.outcome_events_lost.clone(),
        );
        // Export zeros from the start, so "never happened" is distinguishable from "absent".
        for reason in [
            DropReason::Overflow,
            DropReason::Expired,
            DropReason::UnsafeCommitFailed,
        ] {
            let _ = m.dropped.get_or_create(&DropLabels { reason });
        }
        for reason in [
            RejectReason::Full,
            RejectReason::TooLarge,
            RejectReason::Unavailable,
        ] {
            let _ = m.rejected.get_or_create(&RejectLabels { reason });
        }
        for kind in [CommitKind::Ingest, CommitKind::Housekeeping] {
            let _ = m.commits.get_or_create(&CommitLabels { kind });
        }
        m
    }

    /// Creates the per-uplink series at zero.
    pub(crate) fn init_uplink(&self, uplink: &str) {
        for reason in [ReplayReason::Restart, ReplayReason::Rewind] {
            let _ = self.replayed.get_or_create(&ReplayLabels {
                uplink: uplink.to_owned(),
                reason,
            });
        }
        let _ = self.acks.get_or_create(&UplinkLabels {
            uplink: uplink.to_owned(),
        });
        let _ = self.released.get_or_create(&UplinkLabels {
            uplink: uplink.to_owned(),
        });
        for reason in [NackLabel::Failed, NackLabel::TimedOut, NackLabel::Unplaced] {
            let _ = self.nacked.get_or_create(&NackLabels {
                uplink: uplink.to_owned(),
                reason,
            });
        }
    }

    /// Metrics not attached to any registry (tests, benches, tools).
    pub fn unregistered() -> Self {
        StoreMetrics {
            depth_readings: Gauge::default(),
            depth_bytes: Gauge::default(),
            capacity_readings: Gauge::default(),
            capacity_bytes: Gauge::default(),
            delivery_log_rows: Gauge::default(),
            uplink_depth: Family::default(),
            oldest_age: Family::default(),
            commits: Family::default(),
            lingers: Family::default(),
            commit_errors: Counter::default(),
            commit_seconds: Histogram::new(exponential_buckets(0.000_1, 2.0, 16)),
            batch_readings: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            committed_readings: Counter::default(),
            replayed: Family::default(),
            dropped: Family::default(),
            rejected: Family::default(),
            acks: Family::default(),
            nacked: Family::default(),
            released: Family::default(),
            unrouted: Counter::default(),
            outcome_events_lost: Counter::default(),
        }
    }

    /// The counter outcome subscribers add their losses to.
    pub(crate) fn outcome_events_lost(&self) -> Counter {
        self.outcome_events_lost.clone()
    }

    /// Deliveries `uplink` handed back for this reason so far.
    pub fn nacked_total(&self, uplink: &str, reason: NackLabel) -> u64 {
        self.nacked
            .get_or_create(&NackLabels {
                uplink: uplink.to_owned(),
                reason,
            })
            .get()
    }

    /// Deliveries `uplink` released to another uplink so far.
    pub fn released_total(&self, uplink: &str) -> u64 {
        self.released
            .get_or_create(&UplinkLabels {
                uplink: uplink.to_owned(),
            })
            .get()
    }

    /// Readings appended with no route (owed to every uplink) so far.
    pub fn unrouted_total(&self) -> u64 {
        self.unrouted.get()
    }

    /// Outcome events lost by lagging subscribers so far.
    pub fn outcome_events_lost_total(&self) -> u64 {
        self.outcome_events_lost.get()
    }

    /// Commits of this kind so far.
    pub fn commits_total(&self, kind: CommitKind) -> u64 {
        self.commits.get_or_create(&CommitLabels { kind }).get()
    }

    /// Group-commit waits that ended this way so far.
    pub fn lingers_total(&self, outcome: LingerOutcome) -> u64 {
        self.lingers.get_or_create(&LingerLabels { outcome }).get()
    }

    pub(crate) fn lingered(&self, outcome: LingerOutcome) {
        self.lingers.get_or_create(&LingerLabels { outcome }).inc();
    }

    /// Commits that failed so far.
    pub fn commit_errors_total(&self) -> u64 {
        self.commit_errors.get()
    }

    /// Readings committed so far (the batch-size histogram's sum).
    pub fn committed_readings_total(&self) -> u64 {
        self.committed_readings.get()
    }

    /// Readings dropped for this reason so far.
    pub fn dropped_total(&self, reason: DropReason) -> u64 {
        self.dropped.get_or_create(&DropLabels { reason }).get()
    }

    /// Readings rejected for this reason so far.
    pub fn rejected_total(&self, reason: RejectReason) -> u64 {
        self.rejected.get_or_create(&RejectLabels { reason }).get()
    }

    /// Readings replayed to `uplink` for this reason so far.
    pub fn replayed_total(&self, uplink: &str, reason: ReplayReason) -> u64 {
        self.replayed
            .get_or_create(&ReplayLabels {
                uplink: uplink.to_owned(),
                reason,
            })
            .get()
    }

    /// Acknowledgements from `uplink` committed so far.
    pub fn acks_total(&self, uplink: &str) -> u64 {
        self.acks
            .get_or_create(&UplinkLabels {
                uplink: uplink.to_owned(),
            })
            .get()
    }

    /// Exports the outbox's bounds (for alert rules: depth / capacity).
    pub fn set_capacity(&self, readings: u64, bytes: u64) {
        self.capacity_readings.set(clamp_i64(readings));
        self.capacity_bytes.set(clamp_i64(bytes));
    }

    pub(crate) fn set_depth(&self, readings: u64, bytes: u64, delivery_log: u64) {
        self.depth_readings.set(clamp_i64(readings));
        self.depth_bytes.set(clamp_i64(bytes));
        self.delivery_log_rows.set(clamp_i64(delivery_log));
    }

    pub(crate) fn set_uplink(&self, uplink: &str, readings: u64, oldest_age: Option<Duration>) {
        let labels = UplinkLabels {
            uplink: uplink.to_owned(),
        };
        self.uplink_depth
            .get_or_create(&labels)
            .set(clamp_i64(readings));
        self.oldest_age
            .get_or_create(&labels)
            .set(oldest_age.map_or(0.0, |a| a.as_secs_f64()));
    }

    pub(crate) fn replayed(&self, uplink: &str, reason: ReplayReason, n: u64) {
        if n > 0 {
            self.replayed
                .get_or_create(&ReplayLabels {
                    uplink: uplink.to_owned(),
                    reason,
                })
                .inc_by(n);
        }
    }
}

fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A transaction committed.
#[derive(Debug)]
pub(crate) struct Committed {
    pub(crate) kind: CommitKind,
    pub(crate) readings: usize,
    pub(crate) elapsed: Duration,
}

impl Committed {
    pub(crate) fn emit(&self, m: &StoreMetrics) {
        m.commits
            .get_or_create(&CommitLabels { kind: self.kind })
            .inc();
        m.commit_seconds.observe(self.elapsed.as_secs_f64());
        if self.kind == CommitKind::Ingest {
            m.batch_readings.observe(self.readings as f64);
            m.committed_readings.inc_by(self.readings as u64);
        }
        tracing::trace!(
            kind = self.kind.as_str(),
            readings = self.readings,
            elapsed_us = self.elapsed.as_micros() as u64,
            "outbox commit"
        );
    }
}

/// Acknowledgements from one uplink were committed.
#[derive(Debug)]
pub(crate) struct AcksCommitted<'a> {
    pub(crate) uplink: &'a str,
    pub(crate) count: u64,
}

impl AcksCommitted<'_> {
    pub(crate) fn emit(&self, m: &StoreMetrics) {
        if self.count > 0 {
            m.acks
                .get_or_create(&UplinkLabels {
                    uplink: self.uplink.to_owned(),
                })
                .inc_by(self.count);
        }
    }
}

/// A commit failed; its requests were answered `Unavailable`.
#[derive(Debug)]
pub(crate) struct CommitFailed<'a> {
    pub(crate) error: &'a str,
    pub(crate) readings: usize,
    pub(crate) corrupt: bool,
}

impl CommitFailed<'_> {
    pub(crate) fn emit(&self, m: &StoreMetrics) {
        m.commit_errors.inc();
        if self.readings > 0 {
            m.rejected
                .get_or_create(&RejectLabels {
                    reason: RejectReason::Unavailable,
                })
                .inc_by(self.readings as u64);
        }
        if self.corrupt {
            tracing::error!(
                error = self.error,
                readings = self.readings,
                recover = crate::RECOVER_COMMAND,
                "outbox commit failed: the store file is damaged; stop the gateway and recover it"
            );
        } else {
            tracing::error!(
                error = self.error,
                readings = self.readings,
                "outbox commit failed; readings refused (devices keep them), retrying with the next request"
            );
        }
    }
}

/// Requests refused by quota.
#[derive(Debug)]
pub(crate) struct Rejected {
    pub(crate) reason: RejectReason,
    pub(crate) readings: usize,
}

impl Rejected {
    pub(crate) fn emit(&self, m: &StoreMetrics) {
        m.rejected
            .get_or_create(&RejectLabels {
                reason: self.reason,
            })
            .inc_by(self.readings as u64);
        // Refusals can come in floods; readiness and the counter carry the signal.
        tracing::debug!(
            reason = self.reason.as_str(),
            readings = self.readings,
            "outbox refused readings"
        );
    }
}

/// Readings dropped undelivered. Counted here; the writer rate-limits the log line for overflow.
#[derive(Debug)]
pub(crate) struct Dropped {
    pub(crate) reason: DropReason,
    pub(crate) count: u64,
}

impl Dropped {
    pub(crate) fn emit(&self, m: &StoreMetrics) {
        if self.count == 0 {
            return;
        }
        m.dropped
            .get_or_create(&DropLabels {
                reason: self.reason,
            })
            .inc_by(self.count);
        match self.reason {
            DropReason::Overflow => {}
            DropReason::Expired => tracing::warn!(
                count = self.count,
                "outbox dropped readings older than store.max_age, undelivered"
            ),
            DropReason::UnsafeCommitFailed => tracing::error!(
                count = self.count,
                "acknowledged readings were lost: the commit failed after they were acknowledged \
                 (durability = \"unsafe-no-fsync\")"
            ),
        }
    }
}

/// Deliveries an uplink handed back; they stay owed to it.
#[derive(Debug)]
pub(crate) struct Nacked<'a> {
    pub(crate) uplink: &'a str,
    pub(crate) reason: NackLabel,
    pub(crate) count: u64,
    /// For `Unplaced`: whether this is the first time (the warning is logged once, until a
    /// release succeeds again).
    pub(crate) first: bool,
}

impl Nacked<'_> {
    pub(crate) fn emit(&self, m: &StoreMetrics) {
        if self.count == 0 {
            return;
        }
        m.nacked
            .get_or_create(&NackLabels {
                uplink: self.uplink.to_owned(),
                reason: self.reason,
            })
            .inc_by(self.count);
        match self.reason {
            NackLabel::Unplaced if self.first => tracing::warn!(
                uplink = self.uplink,
                readings = self.count,
                "uplink released readings that no other uplink can take; they stay owed to it and are handed out again"
            ),
            // Per-delivery failures are the uplink's to log; the counter carries the rate.
            _ => tracing::debug!(
                uplink = self.uplink,
                reason = self.reason.as_str(),
                readings = self.count,
                "uplink handed deliveries back"
            ),
        }
    }
}

/// Deliveries an uplink gave up that the router placed elsewhere.
#[derive(Debug)]
pub(crate) struct Released<'a> {
    pub(crate) uplink: &'a str,
    pub(crate) count: u64,
}

impl Released<'_> {
    pub(crate) fn emit(&self, m: &StoreMetrics) {
        if self.count == 0 {
            return;
        }
        m.released
            .get_or_create(&UplinkLabels {
                uplink: self.uplink.to_owned(),
            })
            .inc_by(self.count);
        tracing::debug!(
            uplink = self.uplink,
            readings = self.count,
            "uplink released deliveries to other uplinks"
        );
    }
}

/// Readings the router owed to no configured uplink: owed to all of them instead.
#[derive(Debug)]
pub(crate) struct Unrouted {
    pub(crate) count: u64,
    /// Log only the first occurrence per writer; the counter carries the rate.
    pub(crate) first: bool,
}

impl Unrouted {
    pub(crate) fn emit(&self, m: &StoreMetrics) {
        if self.count == 0 {
            return;
        }
        m.unrouted.inc_by(self.count);
        if self.first {
            tracing::warn!(
                readings = self.count,
                "the router owed readings to no configured uplink; they are owed to every uplink instead                  (counted in wardgate_store_unrouted_total; further occurrences are not logged)"
            );
        }
    }
}
