//! Adaptive group commit: when the writer should wait for more requests before committing.
//!
//! Every commit costs about the same whatever it carries: a hand-off to a blocking thread, the
//! SQLite transaction, one fsync, and the wake-ups that follow it (the answers, the uplinks). At
//! saturation the requests that arrive during one fsync share the next, so batches are large
//! on their own. At a ward-sized load (a few thousand readings/s from many devices) each commit
//! finishes before the next request arrives, so every reading paid a whole commit: measured at
//! 2,000 readings/s on the bench host, one commit per reading and 180 ms of CPU per 1,000
//! readings, eleven times the cost at saturation (`docs/benchmarks.md`, 2026-12-01).
//!
//! The writer therefore lingers, up to `commit_linger`, for requests it has reason to expect:
//! - only when requests have recently been arriving closer together than half the linger (so at
//!   least two more are expected within it); a light load commits at once, adding no latency;
//! - only while the batch is smaller than [`TARGET`] readings (a batch that size already spreads
//!   the commit thin; at saturation the queue alone fills it, and nothing waits);
//! - only while lingering pays: a linger that caught nothing pauses lingering for [`PAUSE`].
//!   That is the case of a lone device with one request in flight (it waits for our answer, so
//!   nothing can arrive while we wait for it) and of traffic that just stopped.
//!
//! This is the same trade PostgreSQL's `commit_delay` / `commit_siblings` and Kafka's
//! `linger.ms` make, decided from the arrivals themselves so nobody has to tune it per ward.

use std::time::Duration;

use tokio::time::Instant;

/// A batch this large commits without lingering.
pub(crate) const TARGET: usize = 32;

/// How long lingering stays off after a linger that caught no request.
pub(crate) const PAUSE: Duration = Duration::from_millis(100);

/// Weight of the newest gap in the moving average (1/8).
const NEW_GAP_WEIGHT: f64 = 0.125;

/// The writer's view of recent arrivals.
#[derive(Debug)]
pub(crate) struct Linger {
    max: Duration,
    /// Moving average of the gap between request arrivals, in seconds.
    gap: f64,
    last_arrival: Option<Instant>,
    /// Lingering is off until then (it last caught nothing).
    paused_until: Option<Instant>,
}

impl Linger {
    /// `max` is `commit_linger`; zero never lingers.
    pub(crate) fn new(max: Duration) -> Self {
        Linger {
            max,
            // Start from "sparse": the first arrivals have to show a rate before anyone waits.
            gap: max.as_secs_f64() * 4.0,
            last_arrival: None,
            paused_until: None,
        }
    }

    /// A request reached the writer at `now`.
    pub(crate) fn arrived(&mut self, now: Instant) {
        if let Some(last) = self.last_arrival {
            let gap = now.saturating_duration_since(last).as_secs_f64();
            self.gap += (gap - self.gap) * NEW_GAP_WEIGHT;
        }
        self.last_arrival = Some(now);
    }

    /// How long a batch holding `readings` (opened at `opened`) may still wait for more, or
    /// `None` to commit as soon as the queue is empty.
    pub(crate) fn deadline(
        &self,
        opened: Instant,
        now: Instant,
        readings: usize,
    ) -> Option<Instant> {
        if self.max.is_zero() || readings >= TARGET {
            return None;
        }
        if self.paused_until.is_some_and(|until| now < until) {
            return None;
        }
        if self.gap * 2.0 > self.max.as_secs_f64() {
            return None;
        }
        let deadline = opened + self.max;
        (deadline > now).then_some(deadline)
    }

    /// A linger ended having caught `caught` requests.
    pub(crate) fn lingered(&mut self, now: Instant, caught: usize) {
        if caught == 0 {
            self.paused_until = Some(now + PAUSE);
        }
    }

    /// The moving average of the gap between arrivals (for tests and logs).
    #[cfg(test)]
    pub(crate) fn gap(&self) -> Duration {
        Duration::from_secs_f64(self.gap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_millis(2);

    fn fed(every: Duration, n: u32, start: Instant) -> (Linger, Instant) {
        let mut l = Linger::new(MAX);
        let mut t = start;
        for _ in 0..n {
            l.arrived(t);
            t += every;
        }
        (l, t)
    }

    #[test]
    fn a_light_load_commits_at_once() {
        let t0 = Instant::now();
        // 100 readings/s: 10 ms apart, far more than half the linger.
        let (l, now) = fed(Duration::from_millis(10), 50, t0);
        assert_eq!(l.deadline(now, now, 1), None);
    }

    #[test]
    fn a_fresh_writer_does_not_linger_before_it_has_seen_a_rate() {
        let t0 = Instant::now();
        let mut l = Linger::new(MAX);
        l.arrived(t0);
        assert_eq!(l.deadline(t0, t0, 1), None);
    }

    #[test]
    fn a_steady_ward_load_lingers_up_to_the_maximum_from_the_batch_opening() {
        let t0 = Instant::now();
        // 2,000 readings/s: 0.5 ms apart.
        let (l, now) = fed(Duration::from_micros(500), 64, t0);
        assert!(l.gap() < Duration::from_micros(600), "gap {:?}", l.gap());
        let opened = now - Duration::from_micros(300);
        assert_eq!(l.deadline(opened, now, 1), Some(opened + MAX));
        // Past the maximum: commit.
        assert_eq!(l.deadline(opened, opened + MAX, 3), None);
    }

    #[test]
    fn a_batch_of_the_target_size_commits_without_waiting() {
        let t0 = Instant::now();
        let (l, now) = fed(Duration::from_micros(20), 200, t0);
        assert!(l.deadline(now, now, TARGET - 1).is_some());
        assert_eq!(l.deadline(now, now, TARGET), None);
    }

    #[test]
    fn a_linger_that_caught_nothing_pauses_lingering_then_it_resumes() {
        let t0 = Instant::now();
        let (mut l, now) = fed(Duration::from_micros(300), 64, t0);
        assert!(l.deadline(now, now, 1).is_some());
        l.lingered(now, 0);
        assert_eq!(l.deadline(now, now + Duration::from_millis(50), 1), None);
        let later = now + PAUSE;
        assert!(l.deadline(later, later, 1).is_some());
        // A linger that caught something keeps lingering on.
        l.lingered(later, 3);
        assert!(l.deadline(later, later, 1).is_some());
    }

    #[test]
    fn traffic_that_slows_down_stops_the_lingering() {
        let t0 = Instant::now();
        let (mut l, mut now) = fed(Duration::from_micros(300), 64, t0);
        assert!(l.deadline(now, now, 1).is_some());
        for _ in 0..32 {
            now += Duration::from_millis(20);
            l.arrived(now);
        }
        assert_eq!(l.deadline(now, now, 1), None);
    }

    #[test]
    fn zero_never_lingers() {
        let t0 = Instant::now();
        let mut l = Linger::new(Duration::ZERO);
        for i in 0..100 {
            l.arrived(t0 + Duration::from_micros(i));
        }
        assert_eq!(l.deadline(t0, t0, 1), None);
    }
}
