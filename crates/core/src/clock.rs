//! An injectable wall clock. Timers use `tokio::time` (pausable in tests); wall-clock stamps
//! (`received_at`, SenML base time resolution) come from a [`Clock`] so tests can fix them.

use std::fmt::Debug;
use std::time::SystemTime;

/// Source of wall-clock time.
pub trait Clock: Send + Sync + Debug + 'static {
    /// The current wall-clock time.
    fn now(&self) -> SystemTime;
}

/// The real system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that always answers the same instant (tests).
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub SystemTime);

impl Clock for FixedClock {
    fn now(&self) -> SystemTime {
        self.0
    }
}
