//! The [`Selector`]: the healths of the named uplinks, the policy per class, the decision ring.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wardgate_core::MessageClass;
use wardgate_core::validate::Problems;

use crate::classify::ClassMap;
use crate::config::SelectorConfig;
use crate::error::SelectorError;
use crate::health::{Breaker, BreakerKind, Outcome, Transition, TransitionReason, UplinkHealth};
use crate::policy::{Plan, Policy, Reason, plan};

/// One routing decision, as returned and as kept in the recent-decision ring.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The class decided for.
    pub class: MessageClass,
    /// The class's policy name (`redundant`, `failover`, ...).
    pub policy: &'static str,
    /// When.
    pub at: Instant,
    /// The uplinks in the order to try them (eligible ones only, already-tried ones left out).
    pub uplinks: Vec<Arc<str>>,
    /// How many of `uplinks`, from the front, get the reading now: all healthy ones for
    /// `redundant`, otherwise 1 (0 only when `uplinks` is empty).
    pub send_now: usize,
    /// Uplinks already tried for this reading (empty for a first choice).
    pub tried: Vec<Arc<str>>,
    /// Why.
    pub reason: Reason,
}

impl Decision {
    /// The uplinks that get the reading now (`uplinks[..send_now]`).
    pub fn targets(&self) -> &[Arc<str>] {
        &self.uplinks[..self.send_now.min(self.uplinks.len())]
    }
}

/// One uplink's state for the admin API and metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct UplinkSnapshot {
    /// Configured name.
    pub name: Arc<str>,
    /// Latency EWMA in milliseconds (`None`: no delivery measured yet).
    pub ewma_ms: Option<f64>,
    /// Window success ratio (`None`: empty window).
    pub success_ratio: Option<f64>,
    /// Outcomes in the window.
    pub samples: usize,
    /// Current run of failures.
    pub consecutive_failures: u32,
    /// Breaker state at the snapshot's `now` (an elapsed cool-down shows as half-open).
    pub breaker: BreakerKind,
    /// When that state began.
    pub since: Instant,
    /// How long it has lasted at the snapshot's `now`.
    pub for_: Duration,
    /// When Open: time left until half-open.
    pub reopens_in: Option<Duration>,
    /// Healthy at `now` (Closed, or HalfOpen with a probe slot free).
    pub healthy: bool,
}

/// Chooses uplinks per message class from measured health. Pure logic: every method takes
/// `now`, nothing reads a clock, nothing blocks. Decisions mutate (probe slots, the ring), so
/// the wiring shares it behind a mutex (a decision is microseconds, no await inside).
#[derive(Debug)]
pub struct Selector {
    uplinks: Vec<UplinkHealth>,
    /// Indexed like [`MessageClass::ALL`].
    policies: [Policy; MessageClass::COUNT],
    classes: ClassMap,
    capacity: usize,
    decisions: VecDeque<Decision>,
    transitions: VecDeque<Transition>,
    transitions_dropped: u64,
}

impl Selector {
    /// A selector for `uplinks` (configured names, in configuration order), all Closed at
    /// `now`. Refuses a configuration with any problem (all of them listed).
    pub fn new<S: AsRef<str>>(
        config: &SelectorConfig,
        uplinks: &[S],
        now: Instant,
    ) -> Result<Selector, SelectorError> {
        let names: Vec<&str> = uplinks.iter().map(AsRef::as_ref).collect();
        let mut p = Problems::new();
        config.validate("selector", &names, &mut p);
        if !p.is_empty() {
            return Err(SelectorError::InvalidConfig(p.into_vec()));
        }
        let params = config.health();
        let mut policies = MessageClass::ALL.map(Policy::default_for);
        for c in &config.classes {
            if let Some(policy) = c.to_policy() {
                policies[c.class.index()] = policy;
            }
        }
        Ok(Selector {
            uplinks: names
                .iter()
                .map(|n| UplinkHealth::new(*n, params, now))
                .collect(),
            policies,
            classes: ClassMap::new(&config.rules),
            capacity: config.decision_log.max(1),
            decisions: VecDeque::new(),
            transitions: VecDeque::new(),
            transitions_dropped: 0,
        })
    }

    /// The configured uplink names, in configuration order.
    pub fn uplinks(&self) -> impl Iterator<Item = &Arc<str>> {
        self.uplinks.iter().map(UplinkHealth::name)
    }

    /// The health of one uplink.
    pub fn health(&self, name: &str) -> Option<&UplinkHealth> {
        self.uplinks.iter().find(|h| &**h.name() == name)
    }

    /// The policy of `class`.
    pub fn policy(&self, class: MessageClass) -> &Policy {
        &self.policies[class.index()]
    }

    /// The class for a reading after the `[[selector.rules]]` mapping (see [`ClassMap`]).
    pub fn classify(
        &self,
        device: &str,
        resource: Option<&str>,
        current: MessageClass,
    ) -> MessageClass {
        self.classes.classify(device, resource, current)
    }

    /// Decides where a new reading of `class` goes. The targets get the reading now; the rest
    /// of [`Decision::uplinks`] is the fallback order. A HalfOpen target takes a probe slot
    /// (release it with [`Self::release_probe`] if the delivery is abandoned unsent).
    /// The decision is also kept in the ring ([`Self::recent_decisions`]).
    ///
    /// Never names an Open uplink first while an eligible uplink is healthy (except `pinned`).
    /// Names no uplink only when the policy has none eligible.
    pub fn choose(&mut self, class: MessageClass, now: Instant) -> Decision {
        self.decide(class, &[], false, now)
    }

    /// The next uplink for a reading of `class` whose delivery on every uplink in `tried`
    /// failed: the first of the class's current order not in `tried` (so the reading moves
    /// on, never back). Takes a probe slot like [`Self::choose`] and is kept in the ring.
    /// `None` once every eligible uplink was tried (for `pinned`: the pinned one; for
    /// `failover`: the listed ones); the reading then stays owed in the outbox.
    pub fn next_after_failure<S: AsRef<str>>(
        &mut self,
        class: MessageClass,
        tried: &[S],
        now: Instant,
    ) -> Option<Arc<str>> {
        let tried: Vec<Arc<str>> = tried
            .iter()
            .filter_map(|t| self.health(t.as_ref()).map(|h| h.name().clone()))
            .collect();
        self.decide(class, &tried, true, now)
            .uplinks
            .first()
            .cloned()
    }

    /// `single`: one target at most (a retry moves one reading on, even under `redundant`).
    fn decide(
        &mut self,
        class: MessageClass,
        tried: &[Arc<str>],
        single: bool,
        now: Instant,
    ) -> Decision {
        self.tick(now);
        let policy = &self.policies[class.index()];
        let policy_name = policy.name();
        let excluded = |i: usize| tried.iter().any(|t| t == self.uplinks[i].name());
        let Plan {
            order,
            mut send,
            reason,
        } = plan(policy, &self.uplinks, &excluded, now);
        if single {
            send = send.min(1);
        }
        for &i in &order[..send] {
            // Time was advanced by tick above, so this cannot transition.
            let (_, t) = self.uplinks[i].take_probe(now);
            self.log_transitions(t);
        }
        let decision = Decision {
            class,
            policy: policy_name,
            at: now,
            uplinks: order
                .iter()
                .map(|&i| self.uplinks[i].name().clone())
                .collect(),
            send_now: send,
            tried: tried.to_vec(),
            reason,
        };
        if self.decisions.len() == self.capacity {
            self.decisions.pop_front();
        }
        self.decisions.push_back(decision.clone());
        decision
    }

    /// Records a delivery outcome on `name` and returns the breaker transition the outcome
    /// caused, if any. Every transition (also one from time passing, noticed here) goes to
    /// the transition log ([`Self::take_transitions`]).
    pub fn record(
        &mut self,
        name: &str,
        outcome: Outcome,
        now: Instant,
    ) -> Result<Option<Transition>, SelectorError> {
        let h = self
            .uplinks
            .iter_mut()
            .find(|h| &**h.name() == name)
            .ok_or_else(|| SelectorError::UnknownUplink(name.to_owned()))?;
        let ts = h.record(outcome, now);
        let own = ts
            .iter()
            .rfind(|t| !matches!(t.reason, TransitionReason::CoolDownElapsed { .. }))
            .cloned();
        for t in ts {
            self.log_transitions(Some(t));
        }
        Ok(own)
    }

    /// Where a reading of `class` goes when `name` gives it up at `now`: the first uplink of
    /// the class's order without `name`, if it is healthy. Changes nothing.
    pub fn alternative(&self, class: MessageClass, name: &str, now: Instant) -> Option<Arc<str>> {
        let policy = &self.policies[class.index()];
        let excluded = |i: usize| &**self.uplinks[i].name() == name;
        let Plan { order, .. } = plan(policy, &self.uplinks, &excluded, now);
        order
            .first()
            .filter(|&&i| self.uplinks[i].is_healthy(now))
            .map(|&i| self.uplinks[i].name().clone())
    }

    /// What [`Self::choose`] would send a reading of `class` to at `now`, without taking a
    /// probe slot or logging the decision (for the admin API and metrics).
    pub fn preview(&self, class: MessageClass, now: Instant) -> Vec<Arc<str>> {
        let policy = &self.policies[class.index()];
        let Plan { order, send, .. } = plan(policy, &self.uplinks, &|_| false, now);
        order[..send.min(order.len())]
            .iter()
            .map(|&i| self.uplinks[i].name().clone())
            .collect()
    }

    /// The uplink `name` reported its connection lost (`up == false`) or back (`up == true`)
    /// at `now`; see [`UplinkHealth::link_down`] and [`UplinkHealth::link_up`]. Returns the
    /// transition it caused, if any (also logged for [`Self::take_transitions`]).
    pub fn link(
        &mut self,
        name: &str,
        up: bool,
        now: Instant,
    ) -> Result<Option<Transition>, SelectorError> {
        let h = self
            .uplinks
            .iter_mut()
            .find(|h| &**h.name() == name)
            .ok_or_else(|| SelectorError::UnknownUplink(name.to_owned()))?;
        let ts = if up { h.link_up(now) } else { h.link_down(now) };
        let own = ts
            .iter()
            .rfind(|t| !matches!(t.reason, TransitionReason::CoolDownElapsed { .. }))
            .cloned();
        for t in ts {
            self.log_transitions(Some(t));
        }
        Ok(own)
    }

    /// Whether readings of `class` owed to `name` may be moved to another uplink when `name`
    /// fails: not under `redundant` (every path gets its own copy; moving one would deliver a
    /// second copy on a path that has one) nor `pinned` (no other path is allowed).
    pub fn movable(&self, class: MessageClass) -> bool {
        !matches!(self.policy(class), Policy::Redundant | Policy::Pinned(_))
    }

    /// Whether the class's policy has a healthy uplink other than `name` at `now` (where a
    /// reading that `name` gives up would go). Changes nothing.
    pub fn has_healthy_alternative(&self, class: MessageClass, name: &str, now: Instant) -> bool {
        self.alternative(class, name, now).is_some()
    }

    /// A probe slot taken by [`Self::choose`] / [`Self::next_after_failure`] whose delivery
    /// will never be sent (the reading was delivered elsewhere first): frees it.
    pub fn release_probe(&mut self, name: &str) -> Result<(), SelectorError> {
        self.uplinks
            .iter_mut()
            .find(|h| &**h.name() == name)
            .ok_or_else(|| SelectorError::UnknownUplink(name.to_owned()))?
            .release_probe();
        Ok(())
    }

    /// Applies the passage of time to every breaker (Open → HalfOpen at the end of a
    /// cool-down). The other methods do this themselves; call it on a timer so metrics see
    /// the transition when it happens rather than at the next decision.
    pub fn tick(&mut self, now: Instant) {
        for i in 0..self.uplinks.len() {
            let t = self.uplinks[i].advance(now);
            self.log_transitions(t);
        }
    }

    /// Removes and returns the logged transitions, oldest first (for metrics and log lines).
    /// The log keeps at most `decision_log` entries; older ones are dropped and counted.
    pub fn take_transitions(&mut self) -> Vec<Transition> {
        self.transitions.drain(..).collect()
    }

    /// Transitions dropped because the log was full.
    pub fn transitions_dropped(&self) -> u64 {
        self.transitions_dropped
    }

    fn log_transitions(&mut self, t: Option<Transition>) {
        if let Some(t) = t {
            if self.transitions.len() == self.capacity {
                self.transitions.pop_front();
                self.transitions_dropped += 1;
            }
            self.transitions.push_back(t);
        }
    }

    /// Every uplink's state at `now`, in configuration order. Changes nothing.
    pub fn snapshot(&self, now: Instant) -> Vec<UplinkSnapshot> {
        self.uplinks
            .iter()
            .map(|h| {
                let b = h.breaker_at(now);
                UplinkSnapshot {
                    name: h.name().clone(),
                    ewma_ms: h.ewma_ms(),
                    success_ratio: h.success_ratio(),
                    samples: h.samples(),
                    consecutive_failures: h.consecutive_failures(),
                    breaker: b.kind(),
                    since: b.since(),
                    for_: now.saturating_duration_since(b.since()),
                    reopens_in: match b {
                        Breaker::Open { until, .. } => Some(until.saturating_duration_since(now)),
                        _ => None,
                    },
                    healthy: h.is_healthy(now),
                }
            })
            .collect()
    }

    /// The last decisions (at most `decision_log`), oldest first.
    pub fn recent_decisions(
        &self,
    ) -> impl ExactSizeIterator<Item = &Decision> + DoubleEndedIterator {
        self.decisions.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ClassPolicyConfig, PolicyName};

    const A: MessageClass = MessageClass::Alarm;
    const V: MessageClass = MessageClass::Vital;
    const T: MessageClass = MessageClass::Telemetry;
    const B: MessageClass = MessageClass::Bulk;

    fn ms(n: u64) -> Outcome {
        Outcome::Delivered {
            latency: Duration::from_millis(n),
        }
    }

    fn names(v: &[Arc<str>]) -> Vec<&str> {
        v.iter().map(|n| &**n).collect()
    }

    fn selector(classes: Vec<ClassPolicyConfig>, now: Instant) -> Selector {
        let cfg = SelectorConfig {
            consecutive_failures: 2,
            cool_down: Duration::from_secs(10),
            decision_log: 4,
            classes,
            ..SelectorConfig::default()
        };
        Selector::new(&cfg, &["a", "b", "c"], now).unwrap()
    }

    fn class(class: MessageClass, policy: PolicyName) -> ClassPolicyConfig {
        ClassPolicyConfig {
            class,
            policy: Some(policy),
            failover: None,
            pinned: None,
        }
    }

    fn open(s: &mut Selector, name: &str, now: Instant) {
        s.record(name, Outcome::Failed, now).unwrap();
        let t = s.record(name, Outcome::Failed, now).unwrap();
        assert_eq!(t.map(|t| t.to), Some(BreakerKind::Open));
    }

    #[test]
    fn the_defaults_follow_the_design_per_class() {
        let s = selector(vec![], Instant::now());
        assert_eq!(s.policy(A), &Policy::Redundant);
        assert_eq!(s.policy(V), &Policy::LowestLatency);
        assert_eq!(s.policy(T), &Policy::MostReliable);
        assert_eq!(s.policy(B), &Policy::MostReliable);
    }

    #[test]
    fn lowest_latency_tries_unmeasured_uplinks_first_then_the_lowest_ewma() {
        let t0 = Instant::now();
        let mut s = selector(vec![], t0);
        s.record("a", ms(100), t0).unwrap();
        s.record("b", ms(50), t0).unwrap();
        let d = s.choose(V, t0);
        assert_eq!(names(&d.uplinks), ["c", "b", "a"]);
        assert_eq!(d.reason, Reason::LowestLatency { ewma_ms: None });
        s.record("c", ms(200), t0).unwrap();
        let d = s.choose(V, t0);
        assert_eq!(names(&d.uplinks), ["b", "a", "c"]);
        assert_eq!(names(d.targets()), ["b"]);
        assert_eq!(
            d.reason,
            Reason::LowestLatency {
                ewma_ms: Some(50.0)
            }
        );
    }

    #[test]
    fn lowest_latency_puts_an_open_uplink_last_however_fast() {
        let t0 = Instant::now();
        let mut s = selector(vec![], t0);
        for (n, l) in [("a", 100), ("b", 1), ("c", 300)] {
            s.record(n, ms(l), t0).unwrap();
        }
        open(&mut s, "b", t0);
        let d = s.choose(V, t0);
        assert_eq!(names(&d.uplinks), ["a", "c", "b"]);
        assert_eq!(
            d.reason,
            Reason::LowestLatency {
                ewma_ms: Some(100.0)
            }
        );
    }

    #[test]
    fn most_reliable_prefers_the_higher_ratio_then_the_lower_latency() {
        let t0 = Instant::now();
        let mut s = selector(vec![], t0);
        // a: S F S S → 0.75 at 10 ms; b: S S S S → 1.0 at 90 ms; c: S → 1.0 at 40 ms.
        for o in [ms(10), Outcome::Failed, ms(10), ms(10)] {
            s.record("a", o, t0).unwrap();
        }
        for _ in 0..4 {
            s.record("b", ms(90), t0).unwrap();
        }
        s.record("c", ms(40), t0).unwrap();
        let d = s.choose(T, t0);
        assert_eq!(names(&d.uplinks), ["c", "b", "a"]);
        assert_eq!(
            d.reason,
            Reason::MostReliable {
                success_ratio: Some(1.0),
                ewma_ms: Some(40.0)
            }
        );
    }

    #[test]
    fn redundant_sends_to_every_healthy_uplink_and_to_all_when_none_is() {
        let t0 = Instant::now();
        let mut s = selector(vec![], t0);
        open(&mut s, "b", t0);
        let d = s.choose(A, t0);
        assert_eq!(names(d.targets()), ["a", "c"]);
        assert_eq!(names(&d.uplinks), ["a", "c", "b"]);
        assert_eq!(d.reason, Reason::Redundant { healthy: 2 });

        open(&mut s, "a", t0 + Duration::from_secs(1));
        open(&mut s, "c", t0 + Duration::from_secs(2));
        let d = s.choose(A, t0 + Duration::from_secs(3));
        assert_eq!(d.reason, Reason::NoHealthyUplink);
        assert_eq!(
            names(d.targets()),
            ["b", "a", "c"],
            "soonest re-probe first"
        );
    }

    #[test]
    fn failover_takes_the_first_healthy_listed_uplink_and_names_the_skipped() {
        let t0 = Instant::now();
        let mut s = selector(
            vec![ClassPolicyConfig {
                class: B,
                policy: None,
                failover: Some(vec!["c".into(), "a".into()]),
                pinned: None,
            }],
            t0,
        );
        let d = s.choose(B, t0);
        assert_eq!(names(&d.uplinks), ["c", "a"], "b is not listed");
        assert_eq!(d.reason, Reason::Failover);
        open(&mut s, "c", t0);
        let d = s.choose(B, t0);
        assert_eq!(names(&d.uplinks), ["a", "c"]);
        assert_eq!(
            d.reason,
            Reason::FailoverSkipped {
                skipped: vec!["c".into()]
            }
        );
    }

    #[test]
    fn pinned_uses_its_uplink_even_when_open_and_never_another() {
        let t0 = Instant::now();
        let mut s = selector(
            vec![ClassPolicyConfig {
                class: V,
                policy: None,
                failover: None,
                pinned: Some("b".into()),
            }],
            t0,
        );
        open(&mut s, "b", t0);
        let d = s.choose(V, t0);
        assert_eq!(names(d.targets()), ["b"]);
        assert_eq!(d.reason, Reason::Pinned { healthy: false });
        assert_eq!(s.next_after_failure(V, &["b"], t0), None);
    }

    #[test]
    fn next_after_failure_moves_on_in_order_and_ends_when_all_were_tried() {
        let t0 = Instant::now();
        let mut s = selector(vec![class(A, PolicyName::Redundant)], t0);
        open(&mut s, "a", t0);
        assert_eq!(s.next_after_failure(A, &["b"], t0).as_deref(), Some("c"));
        assert_eq!(
            s.next_after_failure(A, &["b", "c"], t0).as_deref(),
            Some("a")
        );
        assert_eq!(s.next_after_failure(A, &["b", "c", "a"], t0), None);
        let last = s.recent_decisions().last().unwrap();
        assert_eq!(last.reason, Reason::NoUplink);
        assert_eq!(last.send_now, 0);
        let d = &s.recent_decisions().nth(1).unwrap();
        assert_eq!(names(&d.tried), ["b", "c"]);
        assert_eq!(
            d.send_now, 1,
            "a retry moves one reading on, even redundant"
        );
    }

    #[test]
    fn a_half_open_uplink_gets_one_probe_then_traffic_goes_elsewhere() {
        let t0 = Instant::now();
        let mut s = selector(vec![class(V, PolicyName::LowestLatency)], t0);
        s.record("a", ms(1), t0).unwrap();
        s.record("b", ms(5), t0).unwrap();
        s.record("c", ms(9), t0).unwrap();
        open(&mut s, "a", t0);
        let t10 = t0 + Duration::from_secs(10);
        let d = s.choose(V, t10);
        assert_eq!(names(d.targets()), ["a"], "the fast one is probed");
        let snap = s.snapshot(t10);
        assert_eq!(snap[0].breaker, BreakerKind::HalfOpen);
        assert!(!snap[0].healthy, "its only probe slot is taken");
        let d = s.choose(V, t10);
        assert_eq!(names(d.targets()), ["b"]);
        let t = s.record("a", ms(2), t10).unwrap().unwrap();
        assert_eq!(t.reason, TransitionReason::ProbeSucceeded);
        assert_eq!(names(s.choose(V, t10).targets()), ["a"]);
        let kinds: Vec<_> = s.take_transitions().iter().map(|t| t.to).collect();
        assert_eq!(
            kinds,
            [
                BreakerKind::Open,
                BreakerKind::HalfOpen,
                BreakerKind::Closed
            ]
        );
        assert!(s.take_transitions().is_empty());
    }

    #[test]
    fn a_released_probe_slot_can_be_taken_again() {
        let t0 = Instant::now();
        let mut s = selector(vec![], t0);
        open(&mut s, "a", t0);
        let t10 = t0 + Duration::from_secs(10);
        s.choose(V, t10);
        assert!(!s.snapshot(t10)[0].healthy);
        s.release_probe("a").unwrap();
        assert!(s.snapshot(t10)[0].healthy);
    }

    #[test]
    fn the_snapshot_shows_state_since_and_time_left() {
        let t0 = Instant::now();
        let mut s = selector(vec![], t0);
        s.record("a", ms(20), t0).unwrap();
        s.record("a", Outcome::TimedOut, t0).unwrap();
        open(&mut s, "b", t0 + Duration::from_secs(1));
        let snap = s.snapshot(t0 + Duration::from_secs(4));
        assert_eq!(snap[0].ewma_ms, Some(20.0));
        assert_eq!(snap[0].success_ratio, Some(0.5));
        assert_eq!(snap[0].samples, 2);
        assert_eq!(snap[0].breaker, BreakerKind::Closed);
        assert_eq!(snap[0].for_, Duration::from_secs(4));
        assert_eq!(snap[1].breaker, BreakerKind::Open);
        assert_eq!(snap[1].since, t0 + Duration::from_secs(1));
        assert_eq!(snap[1].reopens_in, Some(Duration::from_secs(7)));
        assert_eq!(snap[2].ewma_ms, None);
        assert_eq!(snap[2].success_ratio, None);
    }

    #[test]
    fn the_decision_ring_keeps_only_the_last_capacity_decisions() {
        let t0 = Instant::now();
        let mut s = selector(vec![], t0);
        for i in 0..10 {
            s.choose(V, t0 + Duration::from_millis(i));
        }
        assert_eq!(s.recent_decisions().len(), 4);
        assert_eq!(
            s.recent_decisions().next().unwrap().at,
            t0 + Duration::from_millis(6)
        );
    }

    #[test]
    fn unknown_uplinks_and_bad_config_are_typed_errors() {
        let t0 = Instant::now();
        let mut s = selector(vec![], t0);
        assert_eq!(
            s.record("z", Outcome::Failed, t0),
            Err(SelectorError::UnknownUplink("z".into()))
        );
        let cfg = SelectorConfig {
            window: 0,
            classes: vec![ClassPolicyConfig {
                class: A,
                policy: None,
                failover: None,
                pinned: Some("nope".into()),
            }],
            ..SelectorConfig::default()
        };
        match Selector::new(&cfg, &["a"], t0) {
            Err(SelectorError::InvalidConfig(p)) => assert_eq!(p.len(), 2, "{p:?}"),
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    #[test]
    fn the_rules_remap_the_class() {
        let cfg = SelectorConfig {
            rules: vec![crate::ClassRuleConfig {
                device: Some("bed-*".into()),
                resource: Some("*/alarm".into()),
                class: A,
            }],
            ..SelectorConfig::default()
        };
        let s = Selector::new(&cfg, &["a"], Instant::now()).unwrap();
        assert_eq!(s.classify("bed-4", Some("spo2/alarm"), V), A);
        assert_eq!(s.classify("bed-4", Some("spo2"), V), V);
    }

    #[test]
    fn a_lost_link_opens_the_breaker_at_once_and_its_return_half_opens_it() {
        let t0 = Instant::now();
        let mut s = selector(vec![class(V, PolicyName::LowestLatency)], t0);
        let t = s.link("a", false, t0).unwrap().unwrap();
        assert_eq!((t.from, t.to), (BreakerKind::Closed, BreakerKind::Open));
        assert_eq!(t.reason, TransitionReason::LinkDown);
        assert_eq!(s.health("a").unwrap().samples(), 0, "no delivery failed");
        assert_eq!(names(s.choose(V, t0).targets()), vec!["b"]);
        // Down again while open: nothing changes.
        assert!(s.link("a", false, t0).unwrap().is_none());

        let t1 = t0 + Duration::from_secs(3);
        let t = s.link("a", true, t1).unwrap().unwrap();
        assert_eq!(
            (t.from, t.to, t.reason),
            (
                BreakerKind::Open,
                BreakerKind::HalfOpen,
                TransitionReason::LinkUp
            )
        );
        // Half-open: one probe goes to "a" (unmeasured, so first under lowest-latency) ...
        assert_eq!(names(s.choose(V, t1).targets()), vec!["a"]);
        // ... and a delivery closes it.
        let t = s.record("a", ms(5), t1).unwrap().unwrap();
        assert_eq!(t.to, BreakerKind::Closed);
        // Up while closed: nothing changes.
        assert!(s.link("a", true, t1).unwrap().is_none());
        assert_eq!(s.take_transitions().len(), 3);
        assert!(matches!(
            s.link("zz", true, t1),
            Err(SelectorError::UnknownUplink(_))
        ));
    }

    #[test]
    fn a_lost_link_while_probing_reopens_with_a_grown_cool_down() {
        let t0 = Instant::now();
        let mut s = selector(Vec::new(), t0);
        s.link("a", false, t0).unwrap();
        let t1 = t0 + Duration::from_secs(10);
        s.tick(t1);
        assert_eq!(
            s.health("a").unwrap().breaker().kind(),
            BreakerKind::HalfOpen
        );
        s.link("a", false, t1).unwrap();
        match s.health("a").unwrap().breaker() {
            Breaker::Open { cool_down, .. } => assert_eq!(cool_down, Duration::from_secs(20)),
            b => panic!("expected open, got {b:?}"),
        }
    }

    #[test]
    fn readings_move_only_under_policies_that_allow_it_and_only_to_a_healthy_uplink() {
        let t0 = Instant::now();
        let mut s = selector(
            vec![
                class(V, PolicyName::LowestLatency),
                ClassPolicyConfig {
                    class: T,
                    policy: None,
                    failover: Some(vec!["a".into(), "b".into()]),
                    pinned: None,
                },
                ClassPolicyConfig {
                    class: B,
                    policy: None,
                    failover: None,
                    pinned: Some("a".into()),
                },
            ],
            t0,
        );
        assert!(!s.movable(A), "redundant: every path has its own copy");
        assert!(s.movable(V) && s.movable(T));
        assert!(!s.movable(B), "pinned");
        open(&mut s, "a", t0);
        assert!(s.has_healthy_alternative(V, "a", t0));
        assert!(s.has_healthy_alternative(T, "a", t0));
        open(&mut s, "b", t0);
        assert!(s.has_healthy_alternative(V, "a", t0), "c is healthy");
        assert!(
            !s.has_healthy_alternative(T, "a", t0),
            "the failover list has only a and b"
        );
        assert_eq!(names(&s.preview(V, t0)), vec!["c"]);
        assert_eq!(names(&s.preview(B, t0)), vec!["a"], "pinned ignores health");
        let before = s.recent_decisions().len();
        let _ = s.preview(T, t0);
        assert_eq!(
            s.recent_decisions().len(),
            before,
            "a preview is not a decision"
        );
    }
}
