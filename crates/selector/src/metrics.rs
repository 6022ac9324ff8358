//! The selector's metrics: per uplink (delivery latency, EWMA, success ratio, breaker state and
//! transitions, readings moved off it) and per class (decisions by policy, reason and chosen
//! uplink).
//!
//! Labels are bounded: `uplink` is a configured name, `class` a [`MessageClass`], `policy`,
//! `reason`, `state`, `from`, `to` and `outcome` come from closed sets. Never a device id.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use crate::health::{BreakerKind, Transition};
use crate::selector::{Decision, UplinkSnapshot};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UplinkLabels {
    uplink: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    uplink: String,
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabels {
    uplink: String,
    from: &'static str,
    to: &'static str,
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    uplink: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    class: &'static str,
    policy: &'static str,
    reason: &'static str,
    /// The first uplink named (`none` when none was).
    uplink: String,
}

fn latency_histogram() -> Histogram {
    // 1 ms .. ~33 s, like the MQTT uplink's PUBACK latency.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// The selector's metrics; register once.
#[derive(Debug, Clone)]
pub struct SelectorMetrics {
    decisions: Family<DecisionLabels, Counter>,
    outcomes: Family<OutcomeLabels, Counter>,
    latency: Family<UplinkLabels, Histogram, fn() -> Histogram>,
    ewma: Family<UplinkLabels, Gauge<f64, AtomicU64>>,
    ratio: Family<UplinkLabels, Gauge<f64, AtomicU64>>,
    breaker: Family<StateLabels, Gauge>,
    transitions: Family<TransitionLabels, Counter>,
    moved: Family<UplinkLabels, Counter>,
}

impl SelectorMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = SelectorMetrics {
            decisions: Family::default(),
            outcomes: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            ewma: Family::default(),
            ratio: Family::default(),
            breaker: Family::default(),
            transitions: Family::default(),
            moved: Family::default(),
        };
        registry.register(
            "wardgate_selector_decisions",
            "Routing decisions by message class, policy, reason and first uplink chosen",
            m.decisions.clone(),
        );
        registry.register(
            "wardgate_selector_outcomes",
            "Delivery outcomes the selector measured, by uplink and outcome",
            m.outcomes.clone(),
        );
        registry.register(
            "wardgate_selector_delivery_latency_seconds",
            "Hand-out to peer acknowledgement (MQTT PUBACK, HTTP 2xx) of delivered readings",
            m.latency.clone(),
        );
        registry.register(
            "wardgate_selector_latency_ewma_seconds",
            "Exponentially weighted moving average of the delivery latency",
            m.ewma.clone(),
        );
        registry.register(
            "wardgate_selector_success_ratio",
            "Delivered / outcomes over the selector's window",
            m.ratio.clone(),
        );
        registry.register(
            "wardgate_selector_breaker_state",
            "1 for the circuit breaker's current state (closed, open, half-open), 0 for the others",
            m.breaker.clone(),
        );
        registry.register(
            "wardgate_selector_breaker_transitions",
            "Circuit breaker state changes, by uplink, from, to and reason",
            m.transitions.clone(),
        );
        registry.register(
            "wardgate_selector_readings_moved",
            "Readings moved off an uplink whose circuit is open to another uplink",
            m.moved.clone(),
        );
        m
    }

    pub(crate) fn decision(&self, d: &Decision) {
        self.decisions
            .get_or_create(&DecisionLabels {
                class: d.class.as_str(),
                policy: d.policy,
                reason: d.reason.name(),
                uplink: d
                    .targets()
                    .first()
                    .or(d.uplinks.first())
                    .map_or_else(|| "none".to_owned(), |u| u.to_string()),
            })
            .inc();
    }

    pub(crate) fn outcome(&self, uplink: &str, outcome: &'static str, latency: Option<Duration>) {
        self.outcomes
            .get_or_create(&OutcomeLabels {
                uplink: uplink.to_owned(),
                outcome,
            })
            .inc();
        if let Some(l) = latency {
            self.latency
                .get_or_create(&UplinkLabels {
                    uplink: uplink.to_owned(),
                })
                .observe(l.as_secs_f64());
        }
    }

    pub(crate) fn transition(&self, t: &Transition) {
        self.transitions
            .get_or_create(&TransitionLabels {
                uplink: t.uplink.to_string(),
                from: t.from.as_str(),
                to: t.to.as_str(),
                reason: t.reason.name(),
            })
            .inc();
    }

    pub(crate) fn moved(&self, uplink: &str, n: u64) {
        self.moved
            .get_or_create(&UplinkLabels {
                uplink: uplink.to_owned(),
            })
            .inc_by(n);
    }

    /// Publishes the gauges of one uplink's snapshot.
    pub(crate) fn snapshot(&self, s: &UplinkSnapshot) {
        let uplink = UplinkLabels {
            uplink: s.name.to_string(),
        };
        if let Some(ms) = s.ewma_ms {
            self.ewma.get_or_create(&uplink).set(ms / 1000.0);
        }
        if let Some(r) = s.success_ratio {
            self.ratio.get_or_create(&uplink).set(r);
        }
        for k in [
            BreakerKind::Closed,
            BreakerKind::Open,
            BreakerKind::HalfOpen,
        ] {
            self.breaker
                .get_or_create(&StateLabels {
                    uplink: s.name.to_string(),
                    state: k.as_str(),
                })
                .set(i64::from(k == s.breaker));
        }
    }
}
