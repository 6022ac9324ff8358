//! Property tests: random outcomes, time steps, decisions and retries for 1–4 uplinks, checked
//! against a reference model (plain recomputation of EWMA and window ratio from the full
//! history) and against the selector's own invariants.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use proptest::prelude::*;
use wardgate_selector::{
    BreakerKind, ClassPolicyConfig, MessageClass, Outcome, PolicyName, Selector, SelectorConfig,
    TransitionReason,
};

const NAMES: [&str; 4] = ["u0", "u1", "u2", "u3"];

#[derive(Debug, Clone)]
enum PolicySpec {
    Redundant,
    LowestLatency,
    MostReliable,
    /// Indices (mod n), deduplicated in order.
    Failover(Vec<usize>),
    Pinned(usize),
}

#[derive(Debug, Clone)]
enum Op {
    Record {
        uplink: usize,
        kind: u8,
        latency_ms: u64,
    },
    Advance {
        ms: u64,
    },
    Choose {
        class: usize,
    },
    Retry {
        class: usize,
        tried: u8,
    },
    Release {
        uplink: usize,
    },
}

fn policy() -> impl Strategy<Value = PolicySpec> {
    prop_oneof![
        Just(PolicySpec::Redundant),
        Just(PolicySpec::LowestLatency),
        Just(PolicySpec::MostReliable),
        prop::collection::vec(0usize..4, 1..5).prop_map(PolicySpec::Failover),
        (0usize..4).prop_map(PolicySpec::Pinned),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0usize..4, 0u8..3, 1u64..2000).prop_map(|(uplink, kind, latency_ms)| Op::Record { uplink, kind, latency_ms }),
        2 => (0u64..6000).prop_map(|ms| Op::Advance { ms }),
        3 => (0usize..4).prop_map(|class| Op::Choose { class }),
        2 => (0usize..4, any::<u8>()).prop_map(|(class, tried)| Op::Retry { class, tried }),
        1 => (0usize..4).prop_map(|uplink| Op::Release { uplink }),
    ]
}

#[derive(Debug, Clone)]
struct Case {
    n: usize,
    alpha: f64,
    window: usize,
    min_samples: usize,
    ratio: f64,
    consecutive: u32,
    cool_down_ms: u64,
    probes: u32,
    log: usize,
    policies: Vec<PolicySpec>,
    ops: Vec<Op>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        1usize..=4,
        prop::sample::select(vec![0.1, 0.3, 0.5, 1.0]),
        1usize..8,
        prop::sample::select(vec![0.0, 0.5, 0.8, 1.0]),
        1u32..5,
        1000u64..5000,
        1u32..3,
        1usize..6,
        prop::collection::vec(policy(), 4),
        prop::collection::vec(op(), 1..120),
    )
        .prop_flat_map(
            |(n, alpha, window, ratio, consecutive, cool, probes, log, policies, ops)| {
                (1..=window).prop_map(move |min_samples| Case {
                    n,
                    alpha,
                    window,
                    min_samples,
                    ratio,
                    consecutive,
                    cool_down_ms: cool,
                    probes,
                    log,
                    policies: policies.clone(),
                    ops: ops.clone(),
                })
            },
        )
}

fn to_config(c: &Case) -> SelectorConfig {
    let classes = MessageClass::ALL
        .iter()
        .zip(&c.policies)
        .map(|(&class, p)| {
            let mut e = ClassPolicyConfig {
                class,
                policy: None,
                failover: None,
                pinned: None,
            };
            match p {
                PolicySpec::Redundant => e.policy = Some(PolicyName::Redundant),
                PolicySpec::LowestLatency => e.policy = Some(PolicyName::LowestLatency),
                PolicySpec::MostReliable => e.policy = Some(PolicyName::MostReliable),
                PolicySpec::Failover(list) => {
                    let mut names: Vec<String> = Vec::new();
                    for &i in list {
                        let name = NAMES[i % c.n].to_owned();
                        if !names.contains(&name) {
                            names.push(name);
                        }
                    }
                    e.failover = Some(names);
                }
                PolicySpec::Pinned(i) => e.pinned = Some(NAMES[i % c.n].to_owned()),
            }
            e
        })
        .collect();
    SelectorConfig {
        ewma_alpha: c.alpha,
        window: c.window,
        min_samples: c.min_samples,
        min_success_ratio: c.ratio,
        consecutive_failures: c.consecutive,
        cool_down: Duration::from_millis(c.cool_down_ms),
        cool_down_multiplier: 2.0,
        max_cool_down: Duration::from_millis(c.cool_down_ms * 4),
        half_open_probes: c.probes,
        decision_log: c.log,
        link_down_after: wardgate_selector::DEFAULT_LINK_DOWN_AFTER,
        classes,
        rules: Vec::new(),
        budgets: wardgate_selector::Budgets::default(),
    }
}

/// The reference: the whole history per uplink, statistics recomputed from scratch.
#[derive(Debug, Default, Clone)]
struct Reference {
    /// (success, latency in ms when delivered)
    history: Vec<(bool, Option<f64>)>,
    /// Index where the window restarts (a successful probe closes the breaker and clears it).
    window_start: usize,
}

impl Reference {
    fn ewma_ms(&self, alpha: f64) -> Option<f64> {
        let mut e: Option<f64> = None;
        for x in self.history.iter().filter_map(|h| h.1) {
            e = Some(match e {
                None => x,
                Some(p) => alpha * x + (1.0 - alpha) * p,
            });
        }
        e
    }

    fn ratio(&self, window: usize) -> Option<f64> {
        let start = self
            .history
            .len()
            .saturating_sub(window)
            .max(self.window_start);
        let w = &self.history[start..];
        (!w.is_empty()).then(|| w.iter().filter(|h| h.0).count() as f64 / w.len() as f64)
    }
}

fn close(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * x.abs().max(1.0),
        _ => false,
    }
}

/// The eligible uplink names of a class's policy, as the config gave them.
fn eligible(cfg: &SelectorConfig, class: MessageClass, n: usize) -> (Vec<String>, bool) {
    let e = cfg.classes.iter().find(|e| e.class == class).unwrap();
    if let Some(list) = &e.failover {
        (list.clone(), false)
    } else if let Some(p) = &e.pinned {
        (vec![p.clone()], true)
    } else {
        (NAMES[..n].iter().map(|s| s.to_string()).collect(), false)
    }
}

fn run(c: Case) -> Result<(), TestCaseError> {
    let cfg = to_config(&c);
    let t0 = Instant::now();
    let mut now = t0;
    let mut s = Selector::new(&cfg, &NAMES[..c.n], t0).unwrap();
    let mut reference = vec![Reference::default(); c.n];

    for op in &c.ops {
        match *op {
            Op::Record {
                uplink,
                kind,
                latency_ms,
            } => {
                let i = uplink % c.n;
                let outcome = match kind {
                    0 => Outcome::Delivered {
                        latency: Duration::from_millis(latency_ms),
                    },
                    1 => Outcome::Failed,
                    _ => Outcome::TimedOut,
                };
                let lat = (kind == 0).then_some(latency_ms as f64);
                reference[i].history.push((kind == 0, lat));
                let t = s.record(NAMES[i], outcome, now).unwrap();
                if t.is_some_and(|t| t.reason == TransitionReason::ProbeSucceeded) {
                    reference[i].window_start = reference[i].history.len() - 1;
                }
            }
            Op::Advance { ms } => now += Duration::from_millis(ms),
            Op::Choose { class } => {
                let class = MessageClass::ALL[class];
                let before = s.snapshot(now);
                let d = s.choose(class, now);
                let (names, pinned) = eligible(&cfg, class, c.n);
                prop_assert!(
                    !d.targets().is_empty(),
                    "a reading is always owed somewhere"
                );
                prop_assert!(
                    d.uplinks.iter().all(|u| names.iter().any(|n| n == &**u)),
                    "only eligible uplinks: {d:?}"
                );
                prop_assert_eq!(d.uplinks.len(), names.len());
                if !pinned {
                    let state = |n: &str| before.iter().find(|u| &*u.name == n).unwrap();
                    let some_closed = names
                        .iter()
                        .any(|n| state(n).breaker == BreakerKind::Closed);
                    let some_healthy = names.iter().any(|n| state(n).healthy);
                    for t in d.targets() {
                        if some_closed {
                            prop_assert!(
                                state(t).breaker != BreakerKind::Open,
                                "chose open {t} while a closed one existed: {d:?} {before:?}"
                            );
                        }
                        if some_healthy {
                            prop_assert!(state(t).healthy, "chose unhealthy {t}: {d:?}");
                        }
                    }
                }
            }
            Op::Retry { class, tried } => {
                let class = MessageClass::ALL[class];
                let tried: Vec<&str> = (0..c.n)
                    .filter(|i| tried & (1 << i) != 0)
                    .map(|i| NAMES[i])
                    .collect();
                let (names, _) = eligible(&cfg, class, c.n);
                match s.next_after_failure(class, &tried, now) {
                    Some(next) => {
                        prop_assert!(!tried.contains(&&*next), "repeated {next}");
                        prop_assert!(names.iter().any(|n| *n == *next));
                    }
                    None => prop_assert!(
                        names.iter().all(|n| tried.contains(&n.as_str())),
                        "None while {names:?} not all in {tried:?}"
                    ),
                }
            }
            Op::Release { uplink } => s.release_probe(NAMES[uplink % c.n]).unwrap(),
        }

        prop_assert!(s.recent_decisions().len() <= c.log);
        for (i, r) in reference.iter().enumerate() {
            let h = s.health(NAMES[i]).unwrap();
            prop_assert!(
                close(h.ewma_ms(), r.ewma_ms(c.alpha)),
                "ewma {:?} vs {:?}",
                h.ewma_ms(),
                r.ewma_ms(c.alpha)
            );
            prop_assert!(
                close(h.success_ratio(), r.ratio(c.window)),
                "ratio {:?} vs {:?}",
                h.success_ratio(),
                r.ratio(c.window)
            );
        }
        let _ = s.take_transitions();
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn the_selector_matches_the_reference_model_and_keeps_its_invariants(c in case()) {
        run(c)?;
    }
}
