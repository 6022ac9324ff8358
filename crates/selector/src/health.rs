//! One uplink's measured health: latency EWMA, windowed success ratio and circuit breaker.
//!
//! Pure state driven by outcomes and an injected `now`; the [`crate::Selector`] owns one per
//! uplink. Everything here is exact arithmetic on the inputs, so tests state numbers.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The tuning of health and breaker, shared by every uplink (built from
/// [`crate::SelectorConfig::health`]). See the config fields for meanings and defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HealthParams {
    /// Weight of a new latency sample in the EWMA, in `(0, 1]`.
    pub ewma_alpha: f64,
    /// How many of the most recent outcomes the success ratio is computed over (at least 1).
    pub window: usize,
    /// The ratio rule opens the breaker only once the window holds at least this many outcomes.
    pub min_samples: usize,
    /// Closed opens when the window's success ratio is strictly below this.
    pub min_success_ratio: f64,
    /// Closed opens after this many failures in a row (at least 1).
    pub consecutive_failures: u32,
    /// How long Open lasts before HalfOpen, the first time.
    pub cool_down: Duration,
    /// Each failed probe multiplies the cool-down by this (1.0: constant) ...
    pub cool_down_multiplier: f64,
    /// ... up to this cap.
    pub max_cool_down: Duration,
    /// How many deliveries HalfOpen lets through before one of them reports.
    pub half_open_probes: u32,
}

/// What became of one delivery on one uplink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The peer acknowledged it (MQTT PUBACK, HTTP 2xx) after `latency` (send → ack).
    Delivered {
        /// Send → acknowledgement.
        latency: Duration,
    },
    /// The peer refused it or the connection failed.
    Failed,
    /// No acknowledgement within the uplink's deadline. Counts as a failure; it has no
    /// latency sample, so the EWMA is left as it was (the window and breaker see it).
    TimedOut,
}

impl Outcome {
    /// True for [`Outcome::Delivered`].
    pub fn is_success(self) -> bool {
        matches!(self, Outcome::Delivered { .. })
    }
}

/// The breaker state without its timestamps: a closed set, usable as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerKind {
    /// Deliveries flow.
    Closed,
    /// No deliveries (except pinned ones) until the cool-down ends.
    Open,
    /// A bounded number of probe deliveries decide between Closed and Open.
    HalfOpen,
}

impl BreakerKind {
    /// Lower-case name for metrics and the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerKind::Closed => "closed",
            BreakerKind::Open => "open",
            BreakerKind::HalfOpen => "half-open",
        }
    }
}

/// The circuit breaker of one uplink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Breaker {
    /// Deliveries flow.
    Closed {
        /// When it closed (or the selector was built).
        since: Instant,
    },
    /// Resting until `until`.
    Open {
        /// When it opened.
        since: Instant,
        /// `since + cool_down`: from this instant on it is HalfOpen.
        until: Instant,
        /// The cool-down this opening used (grows on failed probes).
        cool_down: Duration,
    },
    /// Probing.
    HalfOpen {
        /// When the cool-down ended (the `until` of the Open state, not when it was noticed).
        since: Instant,
        /// Probe deliveries handed out and not yet reported.
        probes_in_flight: u32,
        /// The cool-down of the Open state it came from (the base for the next growth).
        cool_down: Duration,
    },
}

impl Breaker {
    /// The state's kind.
    pub fn kind(&self) -> BreakerKind {
        match self {
            Breaker::Closed { .. } => BreakerKind::Closed,
            Breaker::Open { .. } => BreakerKind::Open,
            Breaker::HalfOpen { .. } => BreakerKind::HalfOpen,
        }
    }

    /// When the current state began.
    pub fn since(&self) -> Instant {
        match *self {
            Breaker::Closed { since }
            | Breaker::Open { since, .. }
            | Breaker::HalfOpen { since, .. } => since,
        }
    }
}

/// Why a breaker changed state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TransitionReason {
    /// Closed → Open: this many failures in a row.
    ConsecutiveFailures {
        /// The run length (equals `consecutive_failures`).
        count: u32,
    },
    /// Closed → Open: the window's success ratio fell below `min_success_ratio`.
    LowSuccessRatio {
        /// The ratio that tripped it.
        ratio: f64,
        /// How many outcomes the window held.
        samples: usize,
    },
    /// Open → HalfOpen: the cool-down elapsed.
    CoolDownElapsed {
        /// The cool-down that elapsed.
        cool_down: Duration,
    },
    /// HalfOpen → Closed: a probe was delivered.
    ProbeSucceeded,
    /// HalfOpen → Open: a probe failed or timed out; the next cool-down.
    ProbeFailed {
        /// The (grown, capped) cool-down of the new Open state.
        cool_down: Duration,
    },
    /// Closed or HalfOpen → Open: the uplink reported its connection lost (no delivery can
    /// succeed until it reconnects, so waiting for a failure run would only delay failover).
    LinkDown,
    /// Open → HalfOpen: the uplink reported its connection back before the cool-down ended;
    /// probes decide, as after a cool-down.
    LinkUp,
}

impl TransitionReason {
    /// A bounded name for metric labels and logs.
    pub fn name(&self) -> &'static str {
        match self {
            TransitionReason::ConsecutiveFailures { .. } => "consecutive_failures",
            TransitionReason::LowSuccessRatio { .. } => "low_success_ratio",
            TransitionReason::CoolDownElapsed { .. } => "cool_down_elapsed",
            TransitionReason::ProbeSucceeded => "probe_succeeded",
            TransitionReason::ProbeFailed { .. } => "probe_failed",
            TransitionReason::LinkDown => "link_down",
            TransitionReason::LinkUp => "link_up",
        }
    }
}

/// One breaker state change, for metrics and logs.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// The uplink's name.
    pub uplink: Arc<str>,
    /// State before.
    pub from: BreakerKind,
    /// State after.
    pub to: BreakerKind,
    /// When it happened (for a cool-down, the instant it ended, not when it was noticed).
    pub at: Instant,
    /// Why.
    pub reason: TransitionReason,
}

/// Measured health of one uplink.
#[derive(Debug, Clone)]
pub struct UplinkHealth {
    name: Arc<str>,
    params: HealthParams,
    /// Latency EWMA in seconds; `None` until the first delivered sample seeds it.
    ewma: Option<f64>,
    /// The last `params.window` outcomes, oldest first; `true` is a success.
    window: VecDeque<bool>,
    successes: usize,
    consecutive_failures: u32,
    breaker: Breaker,
}

impl UplinkHealth {
    /// A fresh uplink: Closed, no samples.
    pub fn new(name: impl Into<Arc<str>>, params: HealthParams, now: Instant) -> Self {
        let window = params.window.max(1);
        UplinkHealth {
            name: name.into(),
            params: HealthParams { window, ..params },
            ewma: None,
            window: VecDeque::with_capacity(window),
            successes: 0,
            consecutive_failures: 0,
            breaker: Breaker::Closed { since: now },
        }
    }

    /// The uplink's name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Latency EWMA, `None` before the first delivered sample.
    pub fn ewma(&self) -> Option<Duration> {
        self.ewma.map(Duration::from_secs_f64)
    }

    /// Latency EWMA in milliseconds (exact `f64`, for reasons and the admin API).
    pub fn ewma_ms(&self) -> Option<f64> {
        self.ewma.map(|s| s * 1000.0)
    }

    /// Successes / outcomes in the window; `None` while the window is empty.
    pub fn success_ratio(&self) -> Option<f64> {
        (!self.window.is_empty()).then(|| self.successes as f64 / self.window.len() as f64)
    }

    /// How many outcomes the window holds (at most `window`).
    pub fn samples(&self) -> usize {
        self.window.len()
    }

    /// The current run of failures (0 after any success).
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// The breaker as last advanced (call [`Self::advance`] or use [`Self::breaker_at`]).
    pub fn breaker(&self) -> Breaker {
        self.breaker
    }

    /// The breaker as it is at `now`, without changing anything: an Open breaker whose
    /// cool-down ended at or before `now` is HalfOpen since that instant.
    pub fn breaker_at(&self, now: Instant) -> Breaker {
        match self.breaker {
            Breaker::Open {
                until, cool_down, ..
            } if now >= until => Breaker::HalfOpen {
                since: until,
                probes_in_flight: 0,
                cool_down,
            },
            b => b,
        }
    }

    /// Applies the passage of time: Open → HalfOpen once `now >= since + cool_down`
    /// (exactly at the boundary, it is HalfOpen).
    pub fn advance(&mut self, now: Instant) -> Option<Transition> {
        let before = self.breaker;
        let after = self.breaker_at(now);
        if before == after {
            return None;
        }
        self.breaker = after;
        let Breaker::Open {
            until, cool_down, ..
        } = before
        else {
            return None;
        };
        Some(self.transition(
            BreakerKind::Open,
            until,
            TransitionReason::CoolDownElapsed { cool_down },
        ))
    }

    /// Healthy at `now`: Closed, or HalfOpen with a probe slot free.
    pub fn is_healthy(&self, now: Instant) -> bool {
        match self.breaker_at(now) {
            Breaker::Closed { .. } => true,
            Breaker::HalfOpen {
                probes_in_flight, ..
            } => probes_in_flight < self.params.half_open_probes,
            Breaker::Open { .. } => false,
        }
    }

    /// When this uplink can next take a delivery under its breaker: `now` when healthy or a
    /// probe is merely busy, the end of the cool-down when Open. Orders the unhealthy ones.
    pub fn ready_at(&self, now: Instant) -> Instant {
        match self.breaker_at(now) {
            Breaker::Open { until, .. } => until,
            _ => now,
        }
    }

    /// A delivery is about to go to this uplink. In HalfOpen it takes a probe slot and
    /// returns true; otherwise (Closed, Open, or no slot free) it changes nothing and returns
    /// false. Advances time first.
    pub fn take_probe(&mut self, now: Instant) -> (bool, Option<Transition>) {
        let t = self.advance(now);
        if let Breaker::HalfOpen {
            probes_in_flight, ..
        } = &mut self.breaker
            && *probes_in_flight < self.params.half_open_probes
        {
            *probes_in_flight += 1;
            return (true, t);
        }
        (false, t)
    }

    /// A probe taken with [`Self::take_probe`] will not report (its delivery was abandoned
    /// before it was sent): frees the slot. No effect outside HalfOpen.
    pub fn release_probe(&mut self) {
        if let Breaker::HalfOpen {
            probes_in_flight, ..
        } = &mut self.breaker
        {
            *probes_in_flight = probes_in_flight.saturating_sub(1);
        }
    }

    /// Records an outcome at `now` and returns the breaker transitions it caused, in order:
    /// at most one from time passing (Open → HalfOpen) and one from the outcome.
    ///
    /// Every outcome feeds the statistics (a delivered one the EWMA; all of them the window
    /// and the failure run), whatever the breaker state. The breaker reacts as follows:
    /// Closed opens on the failure run or the ratio rule; HalfOpen closes on a success
    /// (clearing the window, whose first entry is that success) and reopens on a failure
    /// with a grown cool-down; Open ignores outcomes (late results of deliveries sent before
    /// it opened) until its cool-down ends.
    pub fn record(&mut self, outcome: Outcome, now: Instant) -> Vec<Transition> {
        let mut out = Vec::new();
        out.extend(self.advance(now));
        if let Outcome::Delivered { latency } = outcome {
            let x = latency.as_secs_f64();
            let a = self.params.ewma_alpha;
            self.ewma = Some(match self.ewma {
                None => x,
                Some(prev) => a * x + (1.0 - a) * prev,
            });
        }
        let ok = outcome.is_success();
        self.push_window(ok);
        self.consecutive_failures = if ok {
            0
        } else {
            self.consecutive_failures.saturating_add(1)
        };
        match (self.breaker, ok) {
            (Breaker::Closed { .. }, false) => {
                if let Some(reason) = self.trip_reason() {
                    out.push(self.open(BreakerKind::Closed, now, self.params.cool_down, reason));
                }
            }
            (Breaker::HalfOpen { .. }, true) => {
                self.window.clear();
                self.successes = 0;
                self.push_window(true);
                self.breaker = Breaker::Closed { since: now };
                out.push(self.transition(
                    BreakerKind::HalfOpen,
                    now,
                    TransitionReason::ProbeSucceeded,
                ));
            }
            (Breaker::HalfOpen { cool_down, .. }, false) => {
                let next = self.grown(cool_down);
                let reason = TransitionReason::ProbeFailed { cool_down: next };
                out.push(self.open(BreakerKind::HalfOpen, now, next, reason));
            }
            _ => {}
        }
        out
    }

    /// The uplink lost its connection at `now`: Closed or HalfOpen opens at once (HalfOpen
    /// with a grown cool-down, like a failed probe); Open stays as it is. The statistics are
    /// untouched: no delivery failed.
    pub fn link_down(&mut self, now: Instant) -> Vec<Transition> {
        let mut out = Vec::new();
        out.extend(self.advance(now));
        match self.breaker {
            Breaker::Closed { .. } => {
                let cool_down = self.params.cool_down;
                out.push(self.open(
                    BreakerKind::Closed,
                    now,
                    cool_down,
                    TransitionReason::LinkDown,
                ));
            }
            Breaker::HalfOpen { cool_down, .. } => {
                let next = self.grown(cool_down);
                out.push(self.open(BreakerKind::HalfOpen, now, next, TransitionReason::LinkDown));
            }
            Breaker::Open { .. } => {}
        }
        out
    }

    /// The uplink has its connection back at `now`: Open becomes HalfOpen at once (probes
    /// decide, as after a cool-down); other states are unchanged.
    pub fn link_up(&mut self, now: Instant) -> Vec<Transition> {
        let mut out = Vec::new();
        out.extend(self.advance(now));
        if let Breaker::Open { cool_down, .. } = self.breaker {
            self.breaker = Breaker::HalfOpen {
                since: now,
                probes_in_flight: 0,
                cool_down,
            };
            out.push(self.transition(BreakerKind::Open, now, TransitionReason::LinkUp));
        }
        out
    }

    fn trip_reason(&self) -> Option<TransitionReason> {
        if self.consecutive_failures >= self.params.consecutive_failures {
            return Some(TransitionReason::ConsecutiveFailures {
                count: self.consecutive_failures,
            });
        }
        let samples = self.window.len();
        let ratio = self.success_ratio()?;
        (samples >= self.params.min_samples && ratio < self.params.min_success_ratio)
            .then_some(TransitionReason::LowSuccessRatio { ratio, samples })
    }

    fn grown(&self, cool_down: Duration) -> Duration {
        let max = self.params.max_cool_down.max(self.params.cool_down);
        let secs = cool_down.as_secs_f64() * self.params.cool_down_multiplier;
        if !secs.is_finite() || secs >= max.as_secs_f64() {
            max
        } else {
            Duration::from_secs_f64(secs).max(self.params.cool_down)
        }
    }

    fn open(
        &mut self,
        from: BreakerKind,
        now: Instant,
        cool_down: Duration,
        reason: TransitionReason,
    ) -> Transition {
        self.breaker = Breaker::Open {
            since: now,
            until: now + cool_down,
            cool_down,
        };
        self.transition(from, now, reason)
    }

    fn transition(&self, from: BreakerKind, at: Instant, reason: TransitionReason) -> Transition {
        Transition {
            uplink: self.name.clone(),
            from,
            to: self.breaker.kind(),
            at,
            reason,
        }
    }

    fn push_window(&mut self, ok: bool) {
        if self.window.len() == self.params.window
            && let Some(old) = self.window.pop_front()
        {
            self.successes -= usize::from(old);
        }
        self.window.push_back(ok);
        self.successes += usize::from(ok);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> HealthParams {
        HealthParams {
            ewma_alpha: 0.5,
            window: 4,
            min_samples: 4,
            min_success_ratio: 0.5,
            consecutive_failures: 3,
            cool_down: Duration::from_secs(10),
            cool_down_multiplier: 2.0,
            max_cool_down: Duration::from_secs(25),
            half_open_probes: 2,
        }
    }

    fn ms(n: u64) -> Outcome {
        Outcome::Delivered {
            latency: Duration::from_millis(n),
        }
    }

    fn secs(t0: Instant, s: u64) -> Instant {
        t0 + Duration::from_secs(s)
    }

    #[test]
    fn the_first_sample_seeds_the_ewma_and_later_ones_weigh_alpha() {
        let t0 = Instant::now();
        let mut h = UplinkHealth::new("a", params(), t0);
        assert_eq!(h.ewma_ms(), None);
        h.record(ms(100), t0);
        assert_eq!(h.ewma_ms(), Some(100.0));
        h.record(ms(200), t0);
        assert!((h.ewma_ms().unwrap_or(0.0) - 150.0).abs() < 1e-9);
        h.record(ms(50), t0);
        assert!((h.ewma_ms().unwrap_or(0.0) - 100.0).abs() < 1e-9);
    }

    #[test]
    fn a_timeout_counts_as_a_failure_but_leaves_the_ewma() {
        let t0 = Instant::now();
        let mut h = UplinkHealth::new("a", params(), t0);
        h.record(ms(40), t0);
        h.record(Outcome::TimedOut, t0);
        assert_eq!(h.ewma_ms(), Some(40.0));
        assert_eq!(h.success_ratio(), Some(0.5));
        assert_eq!(h.consecutive_failures(), 1);
    }

    #[test]
    fn the_ratio_covers_only_the_last_window_outcomes() {
        let t0 = Instant::now();
        let p = HealthParams {
            consecutive_failures: 100,
            min_samples: 100,
            ..params()
        };
        let mut h = UplinkHealth::new("a", p, t0);
        // F S S F S → window (4) holds S S F S.
        for o in [Outcome::Failed, ms(1), ms(1), Outcome::Failed, ms(1)] {
            h.record(o, t0);
        }
        assert_eq!(h.samples(), 4);
        assert_eq!(h.success_ratio(), Some(0.75));
        h.record(Outcome::TimedOut, t0);
        h.record(Outcome::Failed, t0);
        assert_eq!(h.success_ratio(), Some(0.25));
    }

    #[test]
    fn consecutive_failures_open_the_breaker_on_the_nth_failure() {
        let t0 = Instant::now();
        let mut h = UplinkHealth::new("a", params(), t0);
        assert!(h.record(Outcome::Failed, t0).is_empty());
        assert!(h.record(Outcome::TimedOut, t0).is_empty());
        let t = h.record(Outcome::Failed, secs(t0, 1));
        assert_eq!(t.len(), 1);
        assert_eq!(
            (t[0].from, t[0].to),
            (BreakerKind::Closed, BreakerKind::Open)
        );
        assert_eq!(
            t[0].reason,
            TransitionReason::ConsecutiveFailures { count: 3 }
        );
        assert_eq!(t[0].at, secs(t0, 1));
        assert!(!h.is_healthy(secs(t0, 1)));
    }

    #[test]
    fn a_success_breaks_the_failure_run() {
        let t0 = Instant::now();
        let p = HealthParams {
            min_samples: 100,
            ..params()
        };
        let mut h = UplinkHealth::new("a", p, t0);
        for o in [Outcome::Failed, Outcome::Failed, ms(5), Outcome::Failed] {
            assert!(h.record(o, t0).is_empty());
        }
        assert_eq!(h.consecutive_failures(), 1);
        assert_eq!(h.breaker().kind(), BreakerKind::Closed);
    }

    #[test]
    fn a_low_ratio_opens_the_breaker_only_once_the_window_holds_min_samples() {
        let t0 = Instant::now();
        let p = HealthParams {
            window: 10,
            min_samples: 4,
            consecutive_failures: 100,
            ..params()
        };
        let mut h = UplinkHealth::new("a", p, t0);
        // F S F: ratio 1/3 < 0.5 but only 3 samples.
        for o in [Outcome::Failed, ms(1), Outcome::Failed] {
            assert!(h.record(o, t0).is_empty());
        }
        // S: 2/4 = 0.5, not below.
        assert!(h.record(ms(1), t0).is_empty());
        // F: 2/5 = 0.4 < 0.5 with 5 ≥ 4 samples.
        let t = h.record(Outcome::Failed, t0);
        assert_eq!(
            t[0].reason,
            TransitionReason::LowSuccessRatio {
                ratio: 0.4,
                samples: 5
            }
        );
        assert_eq!(h.breaker().kind(), BreakerKind::Open);
    }

    fn opened(t0: Instant) -> UplinkHealth {
        let mut h = UplinkHealth::new("a", params(), t0);
        for _ in 0..3 {
            h.record(Outcome::Failed, t0);
        }
        assert_eq!(h.breaker().kind(), BreakerKind::Open);
        h
    }

    #[test]
    fn the_breaker_half_opens_exactly_at_the_end_of_the_cool_down() {
        let t0 = Instant::now();
        let mut h = opened(t0);
        let just_before = secs(t0, 10) - Duration::from_nanos(1);
        assert_eq!(h.advance(just_before), None);
        assert_eq!(h.breaker_at(just_before).kind(), BreakerKind::Open);
        assert!(!h.is_healthy(just_before));
        let t = h.advance(secs(t0, 10)).expect("half-opens at the boundary");
        assert_eq!((t.from, t.to), (BreakerKind::Open, BreakerKind::HalfOpen));
        assert_eq!(
            t.reason,
            TransitionReason::CoolDownElapsed {
                cool_down: Duration::from_secs(10)
            }
        );
        assert_eq!(t.at, secs(t0, 10));
        assert!(h.is_healthy(secs(t0, 10)));
    }

    #[test]
    fn the_transition_is_dated_when_the_cool_down_ended_not_when_noticed() {
        let t0 = Instant::now();
        let mut h = opened(t0);
        let t = h.advance(secs(t0, 99)).expect("half-open");
        assert_eq!(t.at, secs(t0, 10));
        assert_eq!(h.breaker().since(), secs(t0, 10));
    }

    #[test]
    fn half_open_lets_through_at_most_the_configured_probes() {
        let t0 = Instant::now();
        let mut h = opened(t0);
        let now = secs(t0, 10);
        let (first, t) = h.take_probe(now);
        assert!(first && t.is_some());
        assert!(h.is_healthy(now), "one of two slots left");
        assert_eq!(h.take_probe(now), (true, None));
        assert!(!h.is_healthy(now));
        assert_eq!(h.take_probe(now), (false, None));
        h.release_probe();
        assert!(h.is_healthy(now));
    }

    #[test]
    fn a_successful_probe_closes_and_resets_the_window() {
        let t0 = Instant::now();
        let mut h = opened(t0);
        let now = secs(t0, 12);
        assert!(h.take_probe(now).0);
        let t = h.record(ms(30), now);
        assert_eq!(t.len(), 1);
        assert_eq!(
            (t[0].from, t[0].to),
            (BreakerKind::HalfOpen, BreakerKind::Closed)
        );
        assert_eq!(t[0].reason, TransitionReason::ProbeSucceeded);
        assert_eq!(h.samples(), 1);
        assert_eq!(h.success_ratio(), Some(1.0));
        assert_eq!(h.consecutive_failures(), 0);
        assert_eq!(h.breaker(), Breaker::Closed { since: now });
    }

    #[test]
    fn a_failed_probe_reopens_with_a_grown_capped_cool_down() {
        let t0 = Instant::now();
        let mut h = opened(t0);
        // 10 s → probe fails at 10 → 20 s → fails at 30 → 40 s capped to 25 s.
        let t = h.record(Outcome::Failed, secs(t0, 10));
        assert_eq!(
            t.len(),
            2,
            "cool-down elapsed, then the probe failed: {t:?}"
        );
        assert_eq!(
            t[1].reason,
            TransitionReason::ProbeFailed {
                cool_down: Duration::from_secs(20)
            }
        );
        assert_eq!(
            h.breaker_at(secs(t0, 29)).kind(),
            BreakerKind::Open,
            "20 s from 10 s"
        );
        let t = h.record(Outcome::TimedOut, secs(t0, 30));
        assert_eq!(
            t[1].reason,
            TransitionReason::ProbeFailed {
                cool_down: Duration::from_secs(25)
            }
        );
        assert_eq!(h.breaker_at(secs(t0, 55)).kind(), BreakerKind::HalfOpen);
    }

    #[test]
    fn a_close_resets_the_cool_down_to_its_base() {
        let t0 = Instant::now();
        let mut h = opened(t0);
        h.record(Outcome::Failed, secs(t0, 10)); // reopens for 20 s
        h.record(ms(1), secs(t0, 30)); // probe succeeds
        for _ in 0..3 {
            h.record(Outcome::Failed, secs(t0, 31));
        }
        match h.breaker() {
            Breaker::Open { cool_down, .. } => assert_eq!(cool_down, Duration::from_secs(10)),
            b => panic!("expected open, got {b:?}"),
        }
    }

    #[test]
    fn late_outcomes_while_open_update_statistics_but_not_the_breaker() {
        let t0 = Instant::now();
        let mut h = opened(t0);
        assert!(h.record(ms(10), secs(t0, 1)).is_empty());
        assert_eq!(h.breaker().kind(), BreakerKind::Open);
        assert_eq!(h.ewma_ms(), Some(10.0));
        assert_eq!(h.consecutive_failures(), 0);
    }

    #[test]
    fn a_multiplier_of_one_keeps_the_cool_down_constant() {
        let t0 = Instant::now();
        let p = HealthParams {
            cool_down_multiplier: 1.0,
            ..params()
        };
        let mut h = UplinkHealth::new("a", p, t0);
        for _ in 0..3 {
            h.record(Outcome::Failed, t0);
        }
        let t = h.record(Outcome::Failed, secs(t0, 10));
        assert_eq!(
            t[1].reason,
            TransitionReason::ProbeFailed {
                cool_down: Duration::from_secs(10)
            }
        );
    }
}
