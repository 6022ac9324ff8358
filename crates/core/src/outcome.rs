//! Delivery outcome events: how each delivery handed out by the outbox ended, for whoever
//! measures the uplinks (the selector's health, the admin API, tests).
//!
//! The outbox publishes one [`DeliveryOutcome`] per acknowledgement, failure, timeout or
//! release, through a bounded broadcast channel ([`OutcomeSender`]). Publishing never waits: a
//! subscriber that falls more than the channel's capacity behind loses the oldest events, and
//! [`OutcomeReceiver`] counts that loss in the metric its sender was built with, so delivery
//! is never slowed by a slow observer.
//!
//! A measurement that must see every outcome (the per-class latency budgets) is an
//! [`OutcomeObserver`] instead: the outbox calls it synchronously as each outcome is reported,
//! so it loses nothing; it must be cheap and never block.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::sync::broadcast;
use ulid::Ulid;

use crate::reading::MessageClass;

/// How a delivery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutcomeKind {
    /// The peer acknowledged it; no longer owed to this uplink.
    Acked,
    /// The uplink reported a failure; still owed to it and handed out again.
    Failed,
    /// The uplink gave up waiting for the peer; still owed to it and handed out again.
    TimedOut,
    /// The uplink gave it up and the router placed it on another uplink.
    Released,
}

impl OutcomeKind {
    /// A stable lower-case name (logs, labels).
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeKind::Acked => "acked",
            OutcomeKind::Failed => "failed",
            OutcomeKind::TimedOut => "timed_out",
            OutcomeKind::Released => "released",
        }
    }
}

/// Why an uplink hands a delivery back with [`crate::OutboxCursor::nack`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NackReason {
    /// Sending failed (refused, connection error, peer error answer).
    Failed,
    /// No answer within the uplink's deadline.
    TimedOut,
}

impl From<NackReason> for OutcomeKind {
    fn from(r: NackReason) -> Self {
        match r {
            NackReason::Failed => OutcomeKind::Failed,
            NackReason::TimedOut => OutcomeKind::TimedOut,
        }
    }
}

/// One delivery's end.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryOutcome {
    /// What happened.
    pub outcome: OutcomeKind,
    /// The uplink's index in configuration order (as in [`crate::UplinkSet`]).
    pub uplink: usize,
    /// The uplink's configured name.
    pub uplink_name: Arc<str>,
    /// Outbox sequence number.
    pub seq: u64,
    /// Reading id.
    pub id: Ulid,
    /// Device id.
    pub device: Arc<str>,
    /// Message class.
    pub class: MessageClass,
    /// The `attempts` of the delivery that ended (0: its first hand-out to this uplink).
    pub attempts: u32,
    /// From the cursor handing it out (most recently) to the uplink reporting this outcome,
    /// on `tokio::time`'s clock (so paused time in tests gives exact values).
    pub latency: Duration,
}

/// Sees every delivery outcome synchronously, on the task of the uplink reporting it, before
/// it is published to subscribers. Lossless, unlike a subscription, so it must be cheap (a
/// counter, a histogram sample) and must never block or wait.
pub trait OutcomeObserver: Send + Sync + std::fmt::Debug {
    /// One delivery ended.
    fn observe(&self, ev: &DeliveryOutcome);
}

/// Sees every batch of readings the store made durable, synchronously on the store's writer
/// task, after the commit and before the devices are answered. It must be cheap and must never
/// block or wait (the status board's counters and live feed).
pub trait CommitObserver: Send + Sync + std::fmt::Debug {
    /// `readings` are durable.
    fn committed(&self, readings: &[crate::reading::Encoded]);
}

/// The publishing side: cheap to clone, never blocks.
#[derive(Debug, Clone)]
pub struct OutcomeSender {
    tx: broadcast::Sender<DeliveryOutcome>,
    lost: Counter,
}

impl OutcomeSender {
    /// A channel keeping at most `capacity` (at least 1) unread events per subscriber; events a
    /// subscriber missed are added to `lost`.
    pub fn new(capacity: usize, lost: Counter) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        OutcomeSender { tx, lost }
    }

    /// Whether anyone listens: publishers skip building events nobody would read.
    pub fn has_subscribers(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    /// Publishes `ev` to every current subscriber (none: dropped, by design).
    pub fn send(&self, ev: DeliveryOutcome) {
        // The only error is "no receivers", which is not a loss anyone asked to see.
        let _ = self.tx.send(ev);
    }

    /// A new subscriber; it sees events published from now on.
    pub fn subscribe(&self) -> OutcomeReceiver {
        OutcomeReceiver {
            rx: self.tx.subscribe(),
            lost: self.lost.clone(),
            lost_here: 0,
        }
    }
}

/// One subscriber. Skips over events it was too slow for, counting them.
#[derive(Debug)]
pub struct OutcomeReceiver {
    rx: broadcast::Receiver<DeliveryOutcome>,
    lost: Counter,
    lost_here: u64,
}

impl OutcomeReceiver {
    /// The next event; `None` once every sender is gone (the outbox was dropped).
    pub async fn recv(&mut self) -> Option<DeliveryOutcome> {
        loop {
            match self.rx.recv().await {
                Ok(ev) => return Some(ev),
                Err(broadcast::error::RecvError::Lagged(n)) => self.lagged(n),
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// The next event if one is waiting; `None` when none is (or the channel is closed).
    pub fn try_recv(&mut self) -> Option<DeliveryOutcome> {
        loop {
            match self.rx.try_recv() {
                Ok(ev) => return Some(ev),
                Err(broadcast::error::TryRecvError::Lagged(n)) => self.lagged(n),
                Err(_) => return None,
            }
        }
    }

    /// Events this subscriber lost because it fell behind.
    pub fn lost(&self) -> u64 {
        self.lost_here
    }

    fn lagged(&mut self, n: u64) {
        self.lost.inc_by(n);
        if self.lost_here == 0 {
            // Once per subscriber: a consumer that is always behind would log on every lap.
            tracing::warn!(
                lost = n,
                "a delivery outcome subscriber fell behind and lost events (counted in wardgate_store_outcome_events_lost_total)"
            );
        }
        self.lost_here = self.lost_here.saturating_add(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: u64) -> DeliveryOutcome {
        DeliveryOutcome {
            outcome: OutcomeKind::Acked,
            uplink: 0,
            uplink_name: Arc::from("cloud"),
            seq,
            id: Ulid::nil(),
            device: Arc::from("bed-1"),
            class: MessageClass::Vital,
            attempts: 0,
            latency: Duration::ZERO,
        }
    }

    #[test]
    fn a_lagging_subscriber_loses_the_oldest_events_and_the_loss_is_counted() {
        let lost = Counter::default();
        let tx = OutcomeSender::new(2, lost.clone());
        assert!(!tx.has_subscribers());
        tx.send(ev(0)); // nobody listens: not a loss
        let mut rx = tx.subscribe();
        for seq in 1..=5 {
            tx.send(ev(seq));
        }
        assert_eq!(rx.try_recv().map(|e| e.seq), Some(4));
        assert_eq!(rx.try_recv().map(|e| e.seq), Some(5));
        assert_eq!(rx.try_recv(), None);
        assert_eq!((rx.lost(), lost.get()), (3, 3));
    }
}
