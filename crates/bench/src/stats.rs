//! Latency histograms (microsecond resolution, up to one minute) and their summary.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest trackable latency, µs. Larger values are clamped (and still counted).
const MAX_US: u64 = 60_000_000;

/// A latency histogram in microseconds.
#[derive(Debug, Clone)]
pub struct Latency {
    h: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    /// An empty histogram.
    pub fn new() -> Self {
        // Constant bounds (1 µs..60 s, 3 significant digits) that hdrhistogram accepts; no input
        // reaches this call.
        #[allow(clippy::expect_used)]
        let h =
            Histogram::new_with_bounds(1, MAX_US, 3).expect("constant histogram bounds are valid");
        Latency { h }
    }

    /// Records one latency in nanoseconds.
    pub fn record_ns(&mut self, ns: u64) {
        let us = (ns / 1000).clamp(1, MAX_US);
        self.h.saturating_record(us);
    }

    /// Adds another histogram's counts.
    pub fn merge(&mut self, other: &Latency) {
        let _ = self.h.add(&other.h);
    }

    /// Number of recorded values.
    pub fn count(&self) -> u64 {
        self.h.len()
    }

    /// The summary in milliseconds; `None` when empty.
    pub fn summary(&self) -> Option<LatencySummary> {
        if self.h.is_empty() {
            return None;
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Some(LatencySummary {
            count: self.h.len(),
            mean_ms: self.h.mean() / 1000.0,
            p50_ms: ms(self.h.value_at_quantile(0.50)),
            p90_ms: ms(self.h.value_at_quantile(0.90)),
            p99_ms: ms(self.h.value_at_quantile(0.99)),
            p999_ms: ms(self.h.value_at_quantile(0.999)),
            max_ms: ms(self.h.max()),
        })
    }
}

/// Latency quantiles in milliseconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LatencySummary {
    /// Values recorded.
    pub count: u64,
    /// Mean.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Maximum.
    pub max_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_reported_in_milliseconds() {
        let mut l = Latency::new();
        for i in 1..=1000u64 {
            l.record_ns(i * 1000); // 1..1000 µs
        }
        let s = l.summary().expect("non-empty");
        assert_eq!(s.count, 1000);
        assert!((s.p50_ms - 0.5).abs() < 0.01, "{s:?}");
        assert!((s.p99_ms - 0.99).abs() < 0.01, "{s:?}");
        assert!((s.max_ms - 1.0).abs() < 0.01, "{s:?}");
    }

    #[test]
    fn huge_and_tiny_latencies_are_clamped_not_lost() {
        let mut l = Latency::new();
        l.record_ns(0);
        l.record_ns(u64::MAX);
        assert_eq!(l.count(), 2);
        assert!(Latency::new().summary().is_none());
    }
}
