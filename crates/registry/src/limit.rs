//! The rate limit on denial log lines and audit events.
//!
//! Every denial is counted in the metrics. Its log line and its audit event are emitted for the
//! first denial of an (actor, reason) pair in each one-minute window; later ones in the window
//! are coalesced, and their number is reported with the next emitted one
//! (`repeats_coalesced`). The table of pairs is bounded ([`CAPACITY`]); when it is full of live
//! windows, every new pair shares one overflow window. So under a flood the log and the audit
//! trail grow by at most `CAPACITY + 1` events a minute, whatever the traffic.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

/// Distinct (actor, reason) pairs tracked at once.
pub(crate) const CAPACITY: usize = 1024;
/// How long one emitted event stands for its repeats.
pub(crate) const WINDOW: Duration = Duration::from_secs(60);

/// Whether to emit this denial's log line and audit event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Emit; `coalesced` earlier denials of the pair were not emitted.
    Emit { coalesced: u64 },
    /// Count only.
    Coalesce,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start: SystemTime,
    coalesced: u64,
}

impl Window {
    fn live(&self, now: SystemTime) -> bool {
        // A clock that went backwards starts a new window.
        now.duration_since(self.start)
            .map(|d| d < WINDOW)
            .unwrap_or(false)
    }

    fn hit(&mut self, now: SystemTime) -> Verdict {
        if self.live(now) {
            self.coalesced += 1;
            Verdict::Coalesce
        } else {
            let coalesced = self.coalesced;
            *self = Window {
                start: now,
                coalesced: 0,
            };
            Verdict::Emit { coalesced }
        }
    }
}

#[derive(Debug)]
struct State {
    pairs: HashMap<u64, Window>,
    overflow: Option<Window>,
}

/// The limiter. Keys are hashes with a per-process random seed, so a peer cannot aim its
/// identities at another peer's slot.
#[derive(Debug)]
pub(crate) struct Limiter {
    state: Mutex<State>,
    seed: RandomState,
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter {
            state: Mutex::new(State {
                pairs: HashMap::new(),
                overflow: None,
            }),
            seed: RandomState::new(),
        }
    }
}

impl Limiter {
    pub(crate) fn key(&self, parts: impl Hash) -> u64 {
        self.seed.hash_one(parts)
    }

    pub(crate) fn check(&self, key: u64, now: SystemTime) -> Verdict {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(w) = s.pairs.get_mut(&key) {
            return w.hit(now);
        }
        if s.pairs.len() >= CAPACITY {
            s.pairs.retain(|_, w| w.live(now));
        }
        if s.pairs.len() < CAPACITY {
            s.pairs.insert(
                key,
                Window {
                    start: now,
                    coalesced: 0,
                },
            );
            return Verdict::Emit { coalesced: 0 };
        }
        match &mut s.overflow {
            Some(w) => w.hit(now),
            None => {
                s.overflow = Some(Window {
                    start: now,
                    coalesced: 0,
                });
                Verdict::Emit { coalesced: 0 }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_per_pair_per_window_then_the_count() {
        let l = Limiter::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let k = l.key(("psk:a", "revoked"));
        assert_eq!(l.check(k, t0), Verdict::Emit { coalesced: 0 });
        for _ in 0..5 {
            assert_eq!(l.check(k, t0 + Duration::from_secs(1)), Verdict::Coalesce);
        }
        assert_eq!(l.check(k, t0 + WINDOW), Verdict::Emit { coalesced: 5 });
    }

    #[test]
    fn a_flood_of_distinct_pairs_emits_at_most_capacity_plus_one() {
        let l = Limiter::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let emitted = (0..CAPACITY * 3)
            .filter(|i| matches!(l.check(l.key(i), t0), Verdict::Emit { .. }))
            .count();
        assert_eq!(emitted, CAPACITY + 1);
    }
}
