//! Policies per message class and the ordering they put the uplinks in.

use std::cmp::Ordering;
use std::sync::Arc;
use std::time::Instant;

use wardgate_core::MessageClass;

use crate::health::UplinkHealth;

/// How a message class picks its uplinks.
///
/// Every policy except [`Policy::Pinned`] prefers *healthy* uplinks (breaker Closed, or
/// HalfOpen with a probe slot free) and orders the unhealthy ones after them, soonest
/// re-probe first, so a reading always has somewhere to be owed and a next choice after a
/// failure until every eligible uplink was tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Policy {
    /// Send to every healthy uplink. When none is healthy, send to every uplink (they are all
    /// Open or busy probing): for alarms an extra copy on a path that may have recovered is
    /// worth more than waiting for a cool-down; the outbox keeps it owed either way.
    Redundant,
    /// The healthy uplink with the lowest latency EWMA. Uplinks without a latency sample come
    /// *first* (in configuration order): optimism under uncertainty, so each path is measured
    /// once instead of an unmeasured path never being tried while a measured one is healthy.
    LowestLatency,
    /// The healthy uplink with the highest windowed success ratio, ties by lower EWMA, then
    /// configuration order. An empty window counts as ratio 1 and no EWMA as fastest, for the
    /// same reason as above.
    MostReliable,
    /// The first healthy uplink in this list's order. Only the listed uplinks are eligible:
    /// the list is the operator's whole contract (unlisted paths may be costly or not allowed).
    Failover(Vec<String>),
    /// Always this uplink, whatever its breaker says (a data-residency or contract pin); its
    /// outcomes still move its breaker, so the state stays visible. No other uplink is eligible.
    Pinned(String),
}

impl Policy {
    /// The policy of a class without a `[[selector.classes]]` entry, as in DESIGN.md:
    /// alarms `redundant`, vitals `lowest-latency`, telemetry and bulk `most-reliable`;
    /// the monitor's security events like alarms.
    pub fn default_for(class: MessageClass) -> Policy {
        match class {
            MessageClass::Alarm | MessageClass::Security => Policy::Redundant,
            MessageClass::Vital => Policy::LowestLatency,
            MessageClass::Telemetry | MessageClass::Bulk => Policy::MostReliable,
        }
    }

    /// The kebab-case name, bounded, usable as a metric label.
    pub fn name(&self) -> &'static str {
        match self {
            Policy::Redundant => "redundant",
            Policy::LowestLatency => "lowest-latency",
            Policy::MostReliable => "most-reliable",
            Policy::Failover(_) => "failover",
            Policy::Pinned(_) => "pinned",
        }
    }
}

/// Why a decision named the uplinks it named.
#[derive(Debug, Clone, PartialEq)]
pub enum Reason {
    /// `redundant`: sent to this many healthy uplinks.
    Redundant {
        /// How many healthy uplinks got the reading.
        healthy: usize,
    },
    /// `lowest-latency`: the first uplink's EWMA (`None`: not measured yet, tried first).
    LowestLatency {
        /// EWMA of the chosen uplink in milliseconds.
        ewma_ms: Option<f64>,
    },
    /// `most-reliable`: the first uplink's window ratio and EWMA.
    MostReliable {
        /// Window success ratio of the chosen uplink (`None`: empty window).
        success_ratio: Option<f64>,
        /// EWMA of the chosen uplink in milliseconds.
        ewma_ms: Option<f64>,
    },
    /// `failover`: the first listed eligible uplink was healthy.
    Failover,
    /// `failover`: these listed uplinks (before the chosen one) were unhealthy.
    FailoverSkipped {
        /// Skipped in list order.
        skipped: Vec<Arc<str>>,
    },
    /// `pinned`: the pinned uplink, and whether it was healthy.
    Pinned {
        /// Health of the pinned uplink at decision time.
        healthy: bool,
    },
    /// No eligible uplink was healthy: the reading goes to the one(s) re-probed soonest
    /// (`redundant`: to all of them).
    NoHealthyUplink,
    /// No eligible uplink is left (all tried, or none configured for this policy).
    NoUplink,
}

impl Reason {
    /// A bounded name for metric labels.
    pub fn name(&self) -> &'static str {
        match self {
            Reason::Redundant { .. } => "redundant",
            Reason::LowestLatency { .. } => "lowest-latency",
            Reason::MostReliable { .. } => "most-reliable",
            Reason::Failover => "failover",
            Reason::FailoverSkipped { .. } => "failover-skipped",
            Reason::Pinned { .. } => "pinned",
            Reason::NoHealthyUplink => "no-healthy-uplink",
            Reason::NoUplink => "no-uplink",
        }
    }
}

/// An ordering of uplink indices: try `order` front to back; the first `send` of them get the
/// reading now.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Plan {
    pub(crate) order: Vec<usize>,
    pub(crate) send: usize,
    pub(crate) reason: Reason,
}

/// Orders the eligible, not `excluded`, uplinks for `policy` at `now`. Pure: reads health only.
pub(crate) fn plan(
    policy: &Policy,
    healths: &[UplinkHealth],
    excluded: &dyn Fn(usize) -> bool,
    now: Instant,
) -> Plan {
    let index = |name: &str| healths.iter().position(|h| &**h.name() == name);
    let eligible: Vec<usize> = match policy {
        Policy::Redundant | Policy::LowestLatency | Policy::MostReliable => {
            (0..healths.len()).collect()
        }
        Policy::Failover(list) => list.iter().filter_map(|n| index(n)).collect(),
        Policy::Pinned(name) => index(name).into_iter().collect(),
    };
    let candidates: Vec<usize> = eligible.iter().copied().filter(|&i| !excluded(i)).collect();
    if candidates.is_empty() {
        return Plan {
            order: Vec::new(),
            send: 0,
            reason: Reason::NoUplink,
        };
    }
    if let Policy::Pinned(_) = policy {
        let healthy = healths[candidates[0]].is_healthy(now);
        return Plan {
            order: candidates,
            send: 1,
            reason: Reason::Pinned { healthy },
        };
    }

    let by_policy = |a: &usize, b: &usize| compare(policy, &healths[*a], &healths[*b]);
    let (mut healthy, mut unhealthy): (Vec<usize>, Vec<usize>) = candidates
        .iter()
        .partition(|&&i| healths[i].is_healthy(now));
    healthy.sort_by(by_policy);
    unhealthy.sort_by(by_policy);
    unhealthy.sort_by_key(|&i| healths[i].ready_at(now));

    let reason = match healthy.first() {
        None => Reason::NoHealthyUplink,
        Some(&first) => {
            let h = &healths[first];
            match policy {
                Policy::Redundant => Reason::Redundant {
                    healthy: healthy.len(),
                },
                Policy::LowestLatency => Reason::LowestLatency {
                    ewma_ms: h.ewma_ms(),
                },
                Policy::MostReliable => Reason::MostReliable {
                    success_ratio: h.success_ratio(),
                    ewma_ms: h.ewma_ms(),
                },
                Policy::Failover(_) | Policy::Pinned(_) => {
                    let skipped: Vec<Arc<str>> = candidates
                        .iter()
                        .take_while(|&&i| i != first)
                        .map(|&i| healths[i].name().clone())
                        .collect();
                    if skipped.is_empty() {
                        Reason::Failover
                    } else {
                        Reason::FailoverSkipped { skipped }
                    }
                }
            }
        }
    };
    let send = match (policy, healthy.len()) {
        (Policy::Redundant, 0) => unhealthy.len(),
        (Policy::Redundant, n) => n,
        _ => 1,
    };
    let mut order = healthy;
    order.append(&mut unhealthy);
    Plan {
        order,
        send,
        reason,
    }
}

/// Policy preference between two uplinks (Less = preferred). Stable sorts keep configuration
/// (or failover list) order on ties.
fn compare(policy: &Policy, a: &UplinkHealth, b: &UplinkHealth) -> Ordering {
    match policy {
        Policy::LowestLatency => latency(a, b),
        Policy::MostReliable => {
            let ra = a.success_ratio().unwrap_or(1.0);
            let rb = b.success_ratio().unwrap_or(1.0);
            rb.total_cmp(&ra).then_with(|| latency(a, b))
        }
        Policy::Redundant | Policy::Failover(_) | Policy::Pinned(_) => Ordering::Equal,
    }
}

/// Unmeasured first, then ascending EWMA.
fn latency(a: &UplinkHealth, b: &UplinkHealth) -> Ordering {
    match (a.ewma_ms(), b.ewma_ms()) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(x), Some(y)) => x.total_cmp(&y),
    }
}
