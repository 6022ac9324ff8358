//! Retry delays, the one backoff of the workspace (uplink reconnects, re-observations, later
//! HTTPS retries): exponential growth from `min` to `max` with full jitter, so a ward full of
//! gateways that lost the same broker does not reconnect in lock-step.
//!
//! Attempt `n` (0-based) waits a uniformly random time in `[min, min(max, min * 2^n)]`. The floor
//! is `min`, not zero: "full jitter" usually starts at zero, but a zero delay against a broker
//! that refuses us at once would be a busy loop.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Pure backoff state; the caller sleeps (on `tokio::time`, so tests can pause time).
#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
    rng: StdRng,
}

impl Backoff {
    /// Delays from `min` growing to `max`, seeded from the thread's random source.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self::with_rng(min, max, StdRng::from_rng(&mut rand::rng()))
    }

    /// [`Backoff::new`] with an explicit random source (seeded in tests).
    pub fn with_rng(min: Duration, max: Duration, rng: StdRng) -> Self {
        Backoff {
            min,
            max: max.max(min),
            attempt: 0,
            rng,
        }
    }

    /// The delay before the next attempt; each call grows the ceiling.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let lo = u64::try_from(self.min.as_nanos()).unwrap_or(u64::MAX);
        let hi = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(self.rng.random_range(lo..=hi.max(lo)))
    }

    /// Current ceiling, `min(max, min * 2^attempt)`.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.min.saturating_mul(factor).min(self.max)
    }

    /// Starts over (after a connection that stayed up).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// How many delays were handed out since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff(min_ms: u64, max_ms: u64, seed: u64) -> Backoff {
        Backoff::with_rng(
            Duration::from_millis(min_ms),
            Duration::from_millis(max_ms),
            StdRng::seed_from_u64(seed),
        )
    }

    #[test]
    fn delays_stay_between_min_and_the_doubling_ceiling() {
        for seed in 0..50 {
            let mut b = backoff(250, 30_000, seed);
            for n in 0..20u32 {
                let ceiling = Duration::from_millis(250u64.saturating_mul(1 << n.min(20)))
                    .min(Duration::from_millis(30_000));
                let d = b.next_delay();
                assert!(d >= Duration::from_millis(250), "attempt {n}: {d:?}");
                assert!(d <= ceiling, "attempt {n}: {d:?} > {ceiling:?}");
            }
        }
    }

    #[test]
    fn ceiling_doubles_then_saturates_at_max() {
        let mut b = backoff(100, 1_000, 1);
        let mut ceilings = Vec::new();
        for _ in 0..6 {
            ceilings.push(b.ceiling().as_millis());
            b.next_delay();
        }
        assert_eq!(ceilings, vec![100, 200, 400, 800, 1_000, 1_000]);
        for _ in 0..100 {
            b.next_delay();
        }
        assert_eq!(b.ceiling(), Duration::from_millis(1_000));
    }

    #[test]
    fn delays_are_jittered_not_fixed() {
        let mut b = backoff(100, 60_000, 7);
        for _ in 0..8 {
            b.next_delay();
        }
        let samples: std::collections::BTreeSet<Duration> =
            (0..20).map(|_| b.next_delay()).collect();
        assert!(samples.len() > 10, "{samples:?}");
    }

    #[test]
    fn reset_starts_again_from_min() {
        let mut b = backoff(100, 60_000, 3);
        for _ in 0..10 {
            b.next_delay();
        }
        b.reset();
        assert_eq!(b.attempts(), 0);
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }
}
