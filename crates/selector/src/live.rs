//! The selector as the running gateway shares it: one [`Selector`] behind a mutex with the
//! clock it reads and its metrics, acting as the outbox's [`Router`].
//!
//! Still no I/O and no runtime here: the clock is injected ([`Now`]; the gateway passes
//! `tokio::time::Instant`'s, so tests with paused time see exact instants), and whoever runs
//! the gateway feeds it: delivery outcomes ([`SharedSelector::record`]), link state
//! ([`SharedSelector::link`]) and a timer ([`SharedSelector::tick`]).
//!
//! # Per-device order across a failover
//! Outcomes and link changes are queued and applied only in [`Router::take_cutovers`], which
//! the store's writer calls right before it routes each batch. So a breaker opens exactly
//! there, and the same call hands the store the cutover of that uplink (its backlog of each
//! movable class goes to the class's healthy alternative), which the store commits with the
//! batch: no reading of a device is routed to the new uplink before that device's older
//! readings are moved there. Probes keep this too: a reading sent to a half-open uplink as a
//! probe is also sent to the best closed uplink (a copy; the backend de-duplicates on `id`),
//! and a cutover leaves probe copies where they are, so a failed probe never strands a reading
//! behind newer ones.
//!
//! Locking: every method takes the mutex for microseconds and never awaits under it. The
//! store's writer calls [`Router::route`] once per appended reading, so the lock is on the
//! ingest path; a decision is a sort of at most 31 uplinks.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use serde::Serialize;
use ulid::Ulid;
use wardgate_core::{Cutover, MessageClass, RouteInput, Router, UplinkSet};

use crate::health::{BreakerKind, Outcome, Transition};
use crate::metrics::SelectorMetrics;
use crate::selector::Selector;

/// The clock the shared selector reads.
pub type Now = Arc<dyn Fn() -> Instant + Send + Sync>;

/// Health events queued until the next [`Router::take_cutovers`]; beyond this many the
/// oldest are dropped (and counted): at most a second of outcomes at the highest rates
/// measured, while the writer takes them every commit (milliseconds) or housekeeping tick.
const MAX_QUEUED_EVENTS: usize = 65_536;
/// Probe copies remembered for cutovers (a probe is one reading per half-open uplink).
const MAX_PROBES: usize = 256;

/// A health event waiting for the writer.
#[derive(Debug)]
enum Event {
    Outcome(Arc<str>, Outcome),
    Link(Arc<str>, bool),
}

#[derive(Debug)]
struct State {
    selector: Selector,
    events: VecDeque<Event>,
    events_dropped: u64,
    /// Uplinks handed to the store as cut over (open), until they are not open any more.
    cut: HashSet<Arc<str>>,
    /// (uplink, reading) sent to a half-open uplink as a probe copy.
    probes: VecDeque<(Arc<str>, Ulid)>,
}

/// The gateway's selector; cheap to clone, every clone is the same selector.
#[derive(Clone)]
pub struct SharedSelector {
    inner: Arc<Mutex<State>>,
    now: Now,
    metrics: SelectorMetrics,
}

impl fmt::Debug for SharedSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedSelector").finish_non_exhaustive()
    }
}

impl SharedSelector {
    /// Shares `selector`, reading time from `now` and counting in `metrics`.
    pub fn new(selector: Selector, now: Now, metrics: SelectorMetrics) -> Self {
        let s = SharedSelector {
            inner: Arc::new(Mutex::new(State {
                selector,
                events: VecDeque::new(),
                events_dropped: 0,
                cut: HashSet::new(),
                probes: VecDeque::new(),
            })),
            now,
            metrics,
        };
        s.publish_gauges();
        s
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock(&self) -> SelectorGuard<'_> {
        SelectorGuard(self.state())
    }

    fn queue(&self, ev: Event) {
        let mut st = self.state();
        if st.events.len() >= MAX_QUEUED_EVENTS {
            st.events.pop_front();
            st.events_dropped += 1;
        }
        st.events.push_back(ev);
    }

    /// Health events queued and not yet applied (the writer applies them at its next commit).
    pub fn queued_events(&self) -> usize {
        self.state().events.len()
    }

    /// Queues one delivery outcome of `uplink` (unknown names are ignored: the outbox only
    /// reports configured uplinks). It takes effect at the store's next commit.
    pub fn record(&self, uplink: &str, outcome: Outcome) {
        let latency = match outcome {
            Outcome::Delivered { latency } => Some(latency),
            _ => None,
        };
        let label = match outcome {
            Outcome::Delivered { .. } => "delivered",
            Outcome::Failed => "failed",
            Outcome::TimedOut => "timed_out",
        };
        self.metrics.outcome(uplink, label, latency);
        self.queue(Event::Outcome(Arc::from(uplink), outcome));
    }

    /// Queues `uplink`'s report of its connection lost (`up == false`) or back; it takes
    /// effect at the store's next commit.
    pub fn link(&self, uplink: &str, up: bool) {
        self.queue(Event::Link(Arc::from(uplink), up));
    }

    /// Applies the queued events and returns the cutovers of uplinks that are newly open.
    fn apply(&self, now: Instant) -> Vec<Cutover> {
        let mut st = self.state();
        let State {
            selector,
            events,
            cut,
            probes,
            ..
        } = &mut *st;
        for ev in events.drain(..) {
            let _ = match ev {
                Event::Outcome(u, o) => selector.record(&u, o, now),
                Event::Link(u, up) => selector.link(&u, up, now),
            };
        }
        selector.tick(now);
        let names: Vec<Arc<str>> = selector.uplinks().cloned().collect();
        let mut out = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let open = selector
                .health(name)
                .is_some_and(|h| h.breaker_at(now).kind() == BreakerKind::Open);
            if !open {
                cut.remove(name);
                continue;
            }
            if !cut.insert(name.clone()) {
                continue;
            }
            let moves: Vec<(MessageClass, UplinkSet)> = MessageClass::ALL
                .into_iter()
                .filter(|&c| selector.movable(c))
                .filter_map(|c| {
                    let alt = selector.alternative(c, name, now)?;
                    let j = names.iter().position(|n| *n == alt)?;
                    Some((c, UplinkSet::single(j)))
                })
                .collect();
            let keep = probes
                .iter()
                .filter(|(u, _)| u == name)
                .map(|(_, id)| *id)
                .collect();
            out.push(Cutover {
                from: i,
                moves,
                keep,
            });
        }
        out
    }

    /// The breaker state of `uplink` now.
    pub fn breaker(&self, uplink: &str) -> Option<BreakerKind> {
        let now = (self.now)();
        self.lock().health(uplink).map(|h| h.breaker_at(now).kind())
    }

    /// Counts readings moved off `uplink`.
    pub fn moved(&self, uplink: &str, n: u64) {
        if n > 0 {
            self.metrics.moved(uplink, n);
        }
    }

    /// The class of a reading after `[[selector.rules]]`.
    pub fn classify(
        &self,
        device: &str,
        resource: Option<&str>,
        class: MessageClass,
    ) -> MessageClass {
        self.lock().classify(device, resource, class)
    }

    /// Applies the passage of time, counts and logs every breaker transition since the last
    /// call, refreshes the gauges, and returns the transitions.
    pub fn tick(&self) -> Vec<Transition> {
        let now = (self.now)();
        let ts = {
            let mut s = self.lock();
            s.tick(now);
            s.take_transitions()
        };
        for t in &ts {
            self.metrics.transition(t);
            match t.to {
                BreakerKind::Open => tracing::warn!(
                    uplink = %t.uplink,
                    from = t.from.as_str(),
                    reason = t.reason.name(),
                    "uplink circuit opened: new readings go to other uplinks while it rests"
                ),
                BreakerKind::HalfOpen => tracing::info!(
                    uplink = %t.uplink,
                    reason = t.reason.name(),
                    "uplink circuit half-open: probing with live readings"
                ),
                BreakerKind::Closed => tracing::info!(
                    uplink = %t.uplink,
                    reason = t.reason.name(),
                    "uplink circuit closed: the uplink takes readings again"
                ),
            }
        }
        self.publish_gauges();
        ts
    }

    fn publish_gauges(&self) {
        let now = (self.now)();
        for u in self.lock().snapshot(now) {
            self.metrics.snapshot(&u);
        }
    }

    /// The live state for the admin API: every uplink's health, every class's policy and
    /// current choice, and the recent decisions (newest first) with their reasons.
    pub fn status(&self) -> SelectorStatus {
        let now = (self.now)();
        let s = self.lock();
        let uplinks = s
            .snapshot(now)
            .into_iter()
            .map(|u| UplinkStatus {
                name: u.name.to_string(),
                breaker: u.breaker.as_str(),
                healthy: u.healthy,
                ewma_ms: u.ewma_ms,
                success_ratio: u.success_ratio,
                samples: u.samples,
                consecutive_failures: u.consecutive_failures,
                state_for_ms: millis(u.for_),
                reopens_in_ms: u.reopens_in.map(millis),
            })
            .collect();
        let classes = MessageClass::ALL
            .iter()
            .map(|&c| ClassStatus {
                class: c.as_str(),
                policy: s.policy(c).name(),
                policy_uplinks: match s.policy(c) {
                    crate::Policy::Failover(list) => list.clone(),
                    crate::Policy::Pinned(name) => vec![name.clone()],
                    _ => Vec::new(),
                },
                now: s.preview(c, now).iter().map(|u| u.to_string()).collect(),
            })
            .collect();
        let decisions = s
            .recent_decisions()
            .rev()
            .map(|d| DecisionStatus {
                class: d.class.as_str(),
                policy: d.policy,
                age_ms: millis(now.saturating_duration_since(d.at)),
                targets: d.targets().iter().map(|u| u.to_string()).collect(),
                order: d.uplinks.iter().map(|u| u.to_string()).collect(),
                tried: d.tried.iter().map(|u| u.to_string()).collect(),
                reason: d.reason.name(),
                detail: format!("{:?}", d.reason),
            })
            .collect();
        SelectorStatus {
            uplinks,
            classes,
            decisions,
        }
    }
}

/// The selector under the shared state's lock.
struct SelectorGuard<'a>(MutexGuard<'a, State>);

impl std::ops::Deref for SelectorGuard<'_> {
    type Target = Selector;
    fn deref(&self) -> &Selector {
        &self.0.selector
    }
}

impl std::ops::DerefMut for SelectorGuard<'_> {
    fn deref_mut(&mut self) -> &mut Selector {
        &mut self.0.selector
    }
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Router for SharedSelector {
    /// A new reading: [`Selector::choose`]'s targets. A released one (`excluded` non-empty):
    /// [`Selector::next_after_failure`] with the excluded uplinks as tried.
    fn route(&self, r: &RouteInput<'_>) -> UplinkSet {
        let now = (self.now)();
        let index = |name: &str| r.uplinks.iter().position(|u| u == name);
        let mut st = self.state();
        if r.excluded.is_empty() {
            let d = st.selector.choose(r.class, now);
            self.metrics.decision(&d);
            let mut set: UplinkSet = d.targets().iter().filter_map(|t| index(t)).collect();
            // A probe also goes to the best closed uplink (see the module doc).
            if d.targets().len() == 1 {
                let first = &d.targets()[0];
                let probing = st
                    .selector
                    .health(first)
                    .is_some_and(|h| h.breaker_at(now).kind() == BreakerKind::HalfOpen);
                let alt = d.uplinks[1..]
                    .iter()
                    .find(|u| {
                        st.selector
                            .health(u)
                            .is_some_and(|h| h.breaker_at(now).kind() == BreakerKind::Closed)
                    })
                    .cloned();
                if let (true, Some(j)) = (probing, alt.and_then(|a| index(&a))) {
                    set.insert(j);
                    if st.probes.len() >= MAX_PROBES {
                        st.probes.pop_front();
                    }
                    st.probes.push_back((first.clone(), r.id));
                }
            }
            set
        } else {
            let tried: Vec<&str> = r
                .excluded
                .iter()
                .filter_map(|i| r.uplinks.get(i).map(String::as_str))
                .collect();
            let next = st.selector.next_after_failure(r.class, &tried, now);
            if let Some(d) = st.selector.recent_decisions().last() {
                self.metrics.decision(d);
            }
            next.and_then(|n| index(&n))
                .map_or(UplinkSet::EMPTY, UplinkSet::single)
        }
    }

    fn take_cutovers(&self) -> Vec<Cutover> {
        self.apply((self.now)())
    }
}

/// The selector's live state (`GET /admin/v1/selector`).
#[derive(Debug, Clone, Serialize)]
pub struct SelectorStatus {
    /// Every uplink, in configuration order.
    pub uplinks: Vec<UplinkStatus>,
    /// Every message class.
    pub classes: Vec<ClassStatus>,
    /// The most recent decisions, newest first.
    pub decisions: Vec<DecisionStatus>,
}

/// One uplink's measured health.
#[derive(Debug, Clone, Serialize)]
pub struct UplinkStatus {
    /// Configured name.
    pub name: String,
    /// `closed`, `open` or `half-open`.
    pub breaker: &'static str,
    /// Takes readings now (closed, or half-open with a probe slot free).
    pub healthy: bool,
    /// Delivery latency EWMA in milliseconds (`null`: nothing delivered yet).
    pub ewma_ms: Option<f64>,
    /// Success ratio over the window (`null`: no outcome yet).
    pub success_ratio: Option<f64>,
    /// Outcomes in the window.
    pub samples: usize,
    /// Failures in a row.
    pub consecutive_failures: u32,
    /// How long the breaker has been in its state.
    pub state_for_ms: u64,
    /// When open: time left until half-open.
    pub reopens_in_ms: Option<u64>,
}

/// One message class's policy and where its readings go now.
#[derive(Debug, Clone, Serialize)]
pub struct ClassStatus {
    /// `alarm`, `vital`, `telemetry` or `bulk`.
    pub class: &'static str,
    /// `redundant`, `lowest-latency`, `most-reliable`, `failover` or `pinned`.
    pub policy: &'static str,
    /// The uplinks a `failover` or `pinned` policy names.
    pub policy_uplinks: Vec<String>,
    /// Where a reading of this class would go now.
    pub now: Vec<String>,
}

/// One recent decision.
#[derive(Debug, Clone, Serialize)]
pub struct DecisionStatus {
    /// The class decided for.
    pub class: &'static str,
    /// Its policy.
    pub policy: &'static str,
    /// How long ago.
    pub age_ms: u64,
    /// The uplinks that got the reading.
    pub targets: Vec<String>,
    /// The order the uplinks were ranked in (fallbacks after the targets).
    pub order: Vec<String>,
    /// Uplinks already tried (a reading moved after a failure).
    pub tried: Vec<String>,
    /// Why, as a label.
    pub reason: &'static str,
    /// Why, with the numbers (latency EWMA, ratio, skipped uplinks).
    pub detail: String,
}

impl wardgate_core::Classify for SharedSelector {
    fn classify(&self, device: &str, resource: &str, class: MessageClass) -> MessageClass {
        SharedSelector::classify(self, device, Some(resource), class)
    }
}
