//! Watches delivery while the gateway runs.
//!
//! [`Budget`] measures every acknowledged delivery's age against its class's latency budget
//! (`[selector.budgets]`, alarm 1 s by default; always, with or without a selector). It is the
//! outbox's [`OutcomeObserver`], called as each outcome is reported, so it sees every one.
//!
//! [`run`] drives the uplink selector when `[selector]` is configured: feeds it every delivery
//! outcome the outbox publishes and every uplink's link state, and ticks it (breaker
//! transitions become metrics and log lines).
//!
//! Failover of what an uplink was already owed is not done here: the selector applies health
//! events and hands the store its cutovers on the store's writer, which moves an open uplink's
//! backlog in the same commit as the first reading routed elsewhere (see
//! `wardgate_selector::SharedSelector` and `wardgate_core::Router::take_cutovers`). This task
//! only makes sure the writer commits soon after events arrive when no ingest is making it
//! commit anyway.
//!
//! Link state: an uplink whose health check (`uplink.<name>`) has been not ready for
//! `[selector] link_down_after` (default 2 s; disconnected, failing) is reported down to the selector, which opens its
//! breaker at once instead of waiting for a run of failed deliveries (an uplink that cannot
//! connect has no deliveries to fail); ready again is reported up (half-open: probes decide).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::{Instant, MissedTickBehavior};
use ulid::Ulid;
use wardgate_core::{DeliveryOutcome, Health, OutcomeKind, OutcomeObserver, Shutdown};
use wardgate_selector::{DeliveryBudget, Outcome, SharedSelector};
use wardgate_store::Outbox;

/// How often link states are sampled and the selector ticked.
const TICK: Duration = Duration::from_millis(100);

/// One uplink's link tracking.
#[derive(Debug, Default)]
struct Link {
    /// Not ready since (cleared when ready).
    not_ready_since: Option<Instant>,
    /// The selector was told the link is down (and not yet that it is back).
    told_down: bool,
}

/// The latency budgets as the outbox's outcome observer: see the module doc.
#[derive(Debug)]
pub(crate) struct Budget(pub(crate) DeliveryBudget);

/// Every acknowledged delivery's age, measured once: against its class's budget, and into the
/// status board's latency series.
#[derive(Debug)]
pub(crate) struct Observers {
    pub(crate) budget: Budget,
    pub(crate) board: wardgate_core::StatusBoard,
}

impl OutcomeObserver for Observers {
    fn observe(&self, ev: &DeliveryOutcome) {
        // The quarantine lane "acknowledges" what it discards: not a delivery.
        if ev.outcome == OutcomeKind::Acked && &*ev.uplink_name != wardgate_core::QUARANTINE {
            let now = SystemTime::now();
            let age = age(ev.id, now);
            self.budget
                .0
                .record(ev.class, &ev.uplink_name, age, std::time::Instant::now());
            self.board.delivered_at(age, now);
        }
    }
}

/// Runs until `stop`: see the module doc.
pub(crate) async fn run(
    selector: SharedSelector,
    outbox: Outbox,
    health: Health,
    link_down_after: Duration,
    stop: Shutdown,
) {
    // The quarantine lane is no uplink the selector chooses among.
    let uplinks: Vec<Arc<str>> = outbox
        .uplinks()
        .into_iter()
        .filter(|u| &**u != wardgate_core::QUARANTINE)
        .collect();
    let mut links: HashMap<Arc<str>, Link> = uplinks
        .iter()
        .map(|u| (u.clone(), Link::default()))
        .collect();
    let mut outcomes = outbox.subscribe_outcomes();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            ev = outcomes.recv() => {
                let Some(ev) = ev else { return };
                if &*ev.uplink_name == wardgate_core::QUARANTINE {
                    continue;
                }
                let outcome = match ev.outcome {
                    OutcomeKind::Acked => Outcome::Delivered { latency: ev.latency },
                    OutcomeKind::Failed => Outcome::Failed,
                    OutcomeKind::TimedOut => Outcome::TimedOut,
                    // A move, not a delivery result: the failure that caused it was counted.
                    OutcomeKind::Released => continue,
                };
                selector.record(&ev.uplink_name, outcome);
            }
            _ = tick.tick() => {
                let now = Instant::now();
                for u in &uplinks {
                    if let Some(link) = links.get_mut(u) {
                        track_link(&selector, &health, u, link, link_down_after, now);
                    }
                }
                if selector.queued_events() > 0 {
                    // Makes the writer apply them (and commit any cutover) now.
                    if let Err(e) = outbox.flush().await {
                        tracing::debug!(error = %e, "selector: the outbox did not commit");
                    }
                }
                selector.tick();
            }
        }
    }
}

/// How long ago the reading `id` was created (its ULID's timestamp, taken when its payload
/// was decoded), as of `now`; zero when the wall clock stepped back since.
fn age(id: Ulid, now: SystemTime) -> Duration {
    now.duration_since(id.datetime()).unwrap_or(Duration::ZERO)
}

fn track_link(
    selector: &SharedSelector,
    health: &Health,
    uplink: &str,
    link: &mut Link,
    grace: Duration,
    now: Instant,
) {
    let ready = health
        .check(&format!("uplink.{uplink}"))
        .is_none_or(|c| c.ready);
    if ready {
        link.not_ready_since = None;
        if link.told_down {
            link.told_down = false;
            selector.link(uplink, true);
        }
        return;
    }
    let since = *link.not_ready_since.get_or_insert(now);
    if !link.told_down && now.duration_since(since) >= grace {
        link.told_down = true;
        selector.link(uplink, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_readings_age_comes_from_its_id_and_never_goes_negative() {
        let born = SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_000_000_123);
        let id = Ulid::from_datetime(born);
        assert_eq!(
            age(id, born + Duration::from_millis(1500)),
            Duration::from_millis(1500)
        );
        assert_eq!(age(id, born - Duration::from_secs(3)), Duration::ZERO);
    }
}
