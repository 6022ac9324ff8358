//! Per-run bookkeeping shared by the sender, the receiver and the MQTT subscriber: for every
//! sequence number, when its latency clock started and what has happened to it. Fixed-size
//! arrays indexed by sequence number, allocated once per run: memory is bounded by the run's
//! request count (17 bytes per request), and no lock is taken on the hot path.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Instant;

use tokio::sync::Notify;

/// Largest request count of one run (≈ 170 MB of bookkeeping).
pub const MAX_COUNT: u64 = 10_000_000;

/// The request was answered (any response code).
pub const ANSWERED: u8 = 1;
/// The request was given up as timed out.
pub const TIMED_OUT: u8 = 2;
/// The reading was delivered on MQTT at least once.
pub const DELIVERED: u8 = 4;
/// The answer was a success (2.xx).
pub const OK: u8 = 8;

/// Sentinel for "never sent".
const NOT_SENT: u64 = u64::MAX;

/// Shared state of one run.
#[derive(Debug)]
pub struct Tracker {
    t0: Instant,
    origin_ns: Vec<AtomicU64>,
    sent_ns: Vec<AtomicU64>,
    state: Vec<AtomicU8>,
    /// Woken on every first delivery, for publishers that keep a window of undelivered messages.
    pub delivered_notify: Notify,
    delivered: AtomicU64,
}

impl Tracker {
    /// Bookkeeping for `count` requests; the run clock starts now.
    pub fn new(count: u64) -> Self {
        let n = usize::try_from(count.min(MAX_COUNT)).unwrap_or(0);
        Tracker {
            t0: Instant::now(),
            origin_ns: (0..n).map(|_| AtomicU64::new(NOT_SENT)).collect(),
            sent_ns: (0..n).map(|_| AtomicU64::new(NOT_SENT)).collect(),
            state: (0..n).map(|_| AtomicU8::new(0)).collect(),
            delivered_notify: Notify::new(),
            delivered: AtomicU64::new(0),
        }
    }

    /// Requests this tracker can follow.
    pub fn capacity(&self) -> u64 {
        self.state.len() as u64
    }

    /// Nanoseconds since the run clock started.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.t0.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// The run clock's origin.
    pub fn t0(&self) -> Instant {
        self.t0
    }

    /// Sets the instant latency is measured from for `seq` (the scheduled send time in open
    /// loop, the actual send time in closed loop). Must happen before the request is sent.
    pub fn set_origin(&self, seq: u64, ns: u64) {
        if let Some(slot) = self.origin_ns.get(seq as usize) {
            slot.store(ns, Ordering::Release);
        }
    }

    /// Records when `seq` actually left (before the send call).
    pub fn set_sent(&self, seq: u64, ns: u64) {
        if let Some(slot) = self.sent_ns.get(seq as usize) {
            slot.store(ns, Ordering::Release);
        }
    }

    /// When `seq` actually left, if it was sent.
    pub fn sent(&self, seq: u64) -> Option<u64> {
        let v = self.sent_ns.get(seq as usize)?.load(Ordering::Acquire);
        (v != NOT_SENT).then_some(v)
    }

    /// The latency origin of `seq`, if it was sent.
    pub fn origin(&self, seq: u64) -> Option<u64> {
        let v = self.origin_ns.get(seq as usize)?.load(Ordering::Acquire);
        (v != NOT_SENT).then_some(v)
    }

    /// Sets `bits` on `seq` and returns the previous state (None for an out-of-range seq).
    pub fn mark(&self, seq: u64, bits: u8) -> Option<u8> {
        let prev = self
            .state
            .get(seq as usize)?
            .fetch_or(bits, Ordering::AcqRel);
        if bits & DELIVERED != 0 && prev & DELIVERED == 0 {
            self.delivered.fetch_add(1, Ordering::Relaxed);
            self.delivered_notify.notify_one();
        }
        Some(prev)
    }

    /// Marks `seq` timed out unless it was answered first; true if it is now timed out.
    pub fn time_out(&self, seq: u64) -> bool {
        let Some(s) = self.state.get(seq as usize) else {
            return false;
        };
        s.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
            (v & (ANSWERED | TIMED_OUT) == 0).then_some(v | TIMED_OUT)
        })
        .is_ok()
    }

    /// Current state bits of `seq`.
    pub fn state(&self, seq: u64) -> u8 {
        self.state
            .get(seq as usize)
            .map_or(0, |s| s.load(Ordering::Acquire))
    }

    /// Distinct sequence numbers delivered on MQTT so far.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// Counts, over the first `sent` sequence numbers, those whose state has all of `bits`.
    pub fn count_with(&self, sent: u64, bits: u8) -> u64 {
        self.state
            .iter()
            .take(usize::try_from(sent).unwrap_or(usize::MAX))
            .filter(|s| s.load(Ordering::Acquire) & bits == bits)
            .count() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answered_request_cannot_time_out_and_vice_versa() {
        let t = Tracker::new(4);
        t.set_origin(0, 10);
        assert_eq!(t.mark(0, ANSWERED), Some(0));
        assert!(!t.time_out(0));
        assert!(t.time_out(1));
        assert_eq!(
            t.mark(1, ANSWERED),
            Some(TIMED_OUT),
            "late answer is visible as such"
        );
        assert_eq!(t.origin(0), Some(10));
        assert_eq!(t.origin(2), None);
        assert_eq!(t.mark(99, ANSWERED), None);
    }

    #[test]
    fn deliveries_are_counted_once_per_sequence_number() {
        let t = Tracker::new(3);
        t.mark(2, DELIVERED);
        t.mark(2, DELIVERED);
        t.mark(0, DELIVERED);
        assert_eq!(t.delivered(), 2);
        assert_eq!(t.count_with(3, DELIVERED), 2);
        assert_eq!(t.count_with(1, DELIVERED), 1);
    }
}
