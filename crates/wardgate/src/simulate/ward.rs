//! The simulated patients: vital signs that drift like real ones, desaturation episodes that
//! become alarms, and sensors that drop out for a while (a probe off a finger). Pure: a seeded
//! random number generator drives everything, one step a second.

use std::time::Duration;

use rand::Rng;

/// A bounded random walk around a set point, pulled back toward it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Walk {
    value: f64,
    set_point: f64,
    min: f64,
    max: f64,
    step: f64,
    /// How strongly it is pulled back to the set point each step.
    pull: f64,
}

impl Walk {
    pub(crate) const fn new(set_point: f64, min: f64, max: f64, step: f64) -> Walk {
        Walk {
            value: set_point,
            set_point,
            min,
            max,
            step,
            pull: 0.05,
        }
    }

    /// One step; the value rounded to one decimal.
    pub(crate) fn next(&mut self, rng: &mut impl Rng) -> f64 {
        let pull = (self.set_point - self.value) * self.pull;
        let delta = rng.random_range(-self.step..=self.step) + pull;
        self.value = (self.value + delta).clamp(self.min, self.max);
        round1(self.value)
    }

    /// Moves the set point (an episode), keeping it within bounds.
    fn aim(&mut self, set_point: f64) {
        self.set_point = set_point.clamp(self.min, self.max);
    }
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// SpO2 below this is an alarm (a common bedside monitor default).
pub(crate) const SPO2_ALARM: f64 = 90.0;

/// One patient's vital signs, a second at a time.
#[derive(Debug, Clone)]
pub(crate) struct Patient {
    spo2: Walk,
    pulse: Walk,
    temp: Walk,
    resp: Walk,
    systolic: Walk,
    diastolic: Walk,
    /// Seconds left of a desaturation episode (its dip, then recovery).
    episode: u32,
    /// Mean seconds between episodes.
    episode_every: f64,
    /// The patient's own SpO2 and pulse set points, returned to after an episode.
    base: (f64, f64),
}

/// The vital signs at one second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Vitals {
    pub(crate) spo2: f64,
    pub(crate) pulse: f64,
    pub(crate) temp: f64,
    pub(crate) resp: f64,
    pub(crate) systolic: f64,
    pub(crate) diastolic: f64,
}

impl Vitals {
    /// Whether a bedside monitor would alarm on these.
    pub(crate) fn alarming(&self) -> bool {
        self.spo2 < SPO2_ALARM
    }
}

/// How long an episode lasts: 30 s dipping and holding, then recovery.
const EPISODE: u32 = 45;

impl Patient {
    /// A patient with a desaturation episode every `episode_every` on average (`None`: never),
    /// and set points varied a little by `rng`.
    pub(crate) fn new(rng: &mut impl Rng, episode_every: Option<Duration>) -> Patient {
        let spo2 = rng.random_range(95.0..98.5);
        let pulse = rng.random_range(62.0..88.0);
        let temp = rng.random_range(36.5..37.4);
        let resp = rng.random_range(12.0..18.0);
        let sys = rng.random_range(108.0..135.0);
        Patient {
            spo2: Walk::new(spo2, 80.0, 100.0, 0.4),
            pulse: Walk::new(pulse, 40.0, 160.0, 1.5),
            temp: Walk::new(temp, 35.0, 41.0, 0.03),
            resp: Walk::new(resp, 6.0, 40.0, 0.5),
            systolic: Walk::new(sys, 80.0, 200.0, 1.0),
            diastolic: Walk::new(sys * 0.62, 45.0, 120.0, 0.8),
            episode: 0,
            episode_every: episode_every.map_or(f64::INFINITY, |d| d.as_secs_f64().max(1.0)),
            base: (spo2, pulse),
        }
    }

    /// One second later.
    pub(crate) fn step(&mut self, rng: &mut impl Rng) -> Vitals {
        if self.episode == 0 && rng.random_bool((1.0 / self.episode_every).clamp(0.0, 1.0)) {
            self.episode = EPISODE;
            // A dip to 84-88 %: an alarm on any monitor, with the pulse climbing.
            self.spo2.aim(rng.random_range(84.0..88.0));
            self.pulse.aim(self.base.1 + 25.0);
        }
        if self.episode > 0 {
            self.episode -= 1;
            if self.episode == EPISODE - 30 {
                // Recovery: back toward normal.
                self.spo2.aim(self.base.0);
                self.pulse.aim(self.base.1);
            }
        }
        // During the dip the saturation falls fast, as it does.
        self.spo2.pull = if self.episode > EPISODE - 30 {
            0.3
        } else {
            0.05
        };
        let spo2 = self.spo2.next(rng);
        Vitals {
            spo2,
            pulse: self.pulse.next(rng),
            temp: self.temp.next(rng),
            resp: self.resp.next(rng),
            systolic: self.systolic.next(rng),
            diastolic: self.diastolic.next(rng),
        }
    }
}

/// A sensor that drops out now and then: silent for 10-40 s, on average once every
/// `every`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dropout {
    silent_for: u32,
    every: f64,
}

impl Dropout {
    pub(crate) fn new(every: Option<Duration>) -> Dropout {
        Dropout {
            silent_for: 0,
            every: every.map_or(f64::INFINITY, |d| d.as_secs_f64().max(1.0)),
        }
    }

    /// One second later: `Some(true)` when a dropout starts now, whether it is silent.
    pub(crate) fn step(&mut self, rng: &mut impl Rng) -> (bool, bool) {
        if self.silent_for > 0 {
            self.silent_for -= 1;
            return (false, true);
        }
        if rng.random_bool((1.0 / self.every).clamp(0.0, 1.0)) {
            self.silent_for = rng.random_range(10..=40);
            return (true, true);
        }
        (false, false)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn vitals_stay_plausible_and_episodes_alarm_then_recover() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut p = Patient::new(&mut rng, Some(Duration::from_secs(300)));
        let mut alarming = 0;
        let mut episodes = 0;
        let mut was = false;
        for _ in 0..3600 {
            let v = p.step(&mut rng);
            assert!((80.0..=100.0).contains(&v.spo2), "{v:?}");
            assert!((40.0..=160.0).contains(&v.pulse), "{v:?}");
            assert!((35.0..=41.0).contains(&v.temp), "{v:?}");
            assert!(v.diastolic < v.systolic, "{v:?}");
            if v.alarming() {
                alarming += 1;
                if !was {
                    episodes += 1;
                }
            }
            was = v.alarming();
        }
        // About one episode in five minutes: some in an hour, and each one ends.
        assert!((3..=30).contains(&episodes), "{episodes} episodes");
        assert!(alarming < 3600 / 4, "alarming {alarming} s of 3600");
    }

    #[test]
    fn without_episodes_a_patient_does_not_alarm() {
        let mut rng = StdRng::seed_from_u64(11);
        let mut p = Patient::new(&mut rng, None);
        assert!((0..3600).all(|_| !p.step(&mut rng).alarming()));
    }

    #[test]
    fn dropouts_are_bounded_silences() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut d = Dropout::new(Some(Duration::from_secs(120)));
        let (mut starts, mut silent, mut run, mut longest) = (0, 0, 0, 0);
        for _ in 0..7200 {
            let (started, quiet) = d.step(&mut rng);
            starts += u32::from(started);
            if quiet {
                silent += 1;
                run += 1;
                longest = longest.max(run);
            } else {
                run = 0;
            }
        }
        assert!(starts > 10, "{starts}");
        assert!(longest <= 41, "{longest}");
        assert!(silent < 7200 / 2, "{silent}");
        let mut never = Dropout::new(None);
        assert!((0..1000).all(|_| !never.step(&mut rng).1));
    }
}
