//! Bookkeeping from "handed to rumqttc" to "acknowledged by the broker". Pure: no I/O, time is
//! passed in.
//!
//! Every publish the uplink queues into rumqttc is pushed here in the same order. rumqttc
//! reports `Outgoing::Publish(pkid)` in queue order (see [`crate::link`]), so each such event
//! pops the front entry and binds it to its packet id; the PUBACK with that id then resolves
//! exactly that entry. A QoS 0 publish (pkid 0) is resolved by its write event.
//!
//! Anything that contradicts the expected order (an event with nothing queued, a QoS mismatch,
//! a packet id that is already bound) is reported as an error instead of guessed around: the
//! uplink then drops the connection and starts over from the outbox, which is always safe.

use std::collections::{HashMap, VecDeque};

use tokio::time::Instant;
use wardgate_core::MessageClass;

use crate::link::Qos;

/// A status message on the status topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// Birth message after CONNACK.
    Online,
    /// Graceful shutdown.
    Offline,
}

/// What a queued publish carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entry {
    /// A reading, by outbox sequence number.
    Reading { seq: u64, class: MessageClass },
    /// A status message.
    Status(Status),
}

/// The result of a write event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Written {
    pub(crate) entry: Entry,
    /// True for QoS 0: written is all the delivery there will be.
    pub(crate) done: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Tracker {
    /// Queued into rumqttc, write not reported yet.
    queued: VecDeque<(Entry, Qos)>,
    /// Written with a packet id, PUBACK not seen yet.
    awaiting: HashMap<u16, (Entry, Instant)>,
    /// Readings among both.
    readings: usize,
    /// Written readings already reported overdue (pkid → seq), until their PUBACK.
    overdue: HashMap<u16, u64>,
}

impl Tracker {
    pub(crate) fn queue(&mut self, entry: Entry, qos: Qos) {
        if matches!(entry, Entry::Reading { .. }) {
            self.readings += 1;
        }
        self.queued.push_back((entry, qos));
    }

    /// `Outgoing::Publish(pkid)` was reported.
    pub(crate) fn on_written(&mut self, pkid: u16, now: Instant) -> Result<Written, String> {
        let Some((entry, qos)) = self.queued.pop_front() else {
            return Err(format!("publish {pkid} written but nothing was queued"));
        };
        match (qos, pkid) {
            (Qos::AtMostOnce, 0) => {
                self.release(entry);
                Ok(Written { entry, done: true })
            }
            (Qos::AtLeastOnce, 0) | (Qos::AtMostOnce, _) => Err(format!(
                "publish written with packet id {pkid} but {qos:?} was queued"
            )),
            (Qos::AtLeastOnce, pkid) => {
                if self.awaiting.contains_key(&pkid) {
                    return Err(format!("packet id {pkid} reused before its PUBACK"));
                }
                self.awaiting.insert(pkid, (entry, now));
                Ok(Written { entry, done: false })
            }
        }
    }

    /// PUBACK for `pkid`: the entry it acknowledges and when it was written, if known.
    pub(crate) fn on_puback(&mut self, pkid: u16) -> Option<(Entry, Instant)> {
        self.overdue.remove(&pkid);
        let (entry, at) = self.awaiting.remove(&pkid)?;
        self.release(entry);
        Some((entry, at))
    }

    fn release(&mut self, entry: Entry) {
        if matches!(entry, Entry::Reading { .. }) {
            self.readings = self.readings.saturating_sub(1);
        }
    }

    /// Publishes queued or written and not yet resolved (the in-flight window).
    pub(crate) fn outstanding(&self) -> usize {
        self.queued.len() + self.awaiting.len()
    }

    /// Readings among [`Self::outstanding`].
    pub(crate) fn readings(&self) -> usize {
        self.readings
    }

    /// Forgets everything (new connection: the outbox will hand the readings out again).
    pub(crate) fn reset(&mut self) {
        self.queued.clear();
        self.awaiting.clear();
        self.overdue.clear();
        self.readings = 0;
    }

    /// Readings written at or before `cutoff` and still without a PUBACK that no earlier call
    /// returned (each is reported once per connection), in seq order.
    pub(crate) fn overdue(&mut self, cutoff: Instant) -> Vec<u64> {
        let mut out = Vec::new();
        for (pkid, (entry, at)) in &self.awaiting {
            if let Entry::Reading { seq, .. } = entry
                && *at <= cutoff
                && !self.overdue.contains_key(pkid)
            {
                out.push((*pkid, *seq));
            }
        }
        out.sort_unstable_by_key(|(_, seq)| *seq);
        self.overdue.extend(out.iter().copied());
        out.into_iter().map(|(_, seq)| seq).collect()
    }

    /// Whether reading `seq` is queued or written and still awaiting its PUBACK on this
    /// connection (handed out again after a timeout report, it must not be published twice).
    /// A scan of the window: callers ask only while [`Self::stalled`].
    pub(crate) fn in_flight(&self, seq: u64) -> bool {
        let is = |e: &Entry| matches!(e, Entry::Reading { seq: s, .. } if *s == seq);
        self.awaiting.values().any(|(e, _)| is(e)) || self.queued.iter().any(|(e, _)| is(e))
    }

    /// Whether any written reading is still reported overdue.
    pub(crate) fn stalled(&self) -> bool {
        !self.overdue.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(seq: u64) -> Entry {
        Entry::Reading {
            seq,
            class: MessageClass::Vital,
        }
    }

    #[test]
    fn write_events_bind_queued_publishes_in_order_and_pubacks_resolve_them_in_any_order() {
        let now = Instant::now();
        let mut t = Tracker::default();
        t.queue(Entry::Status(Status::Online), Qos::AtLeastOnce);
        for seq in 10..13 {
            t.queue(reading(seq), Qos::AtLeastOnce);
        }
        assert_eq!((t.outstanding(), t.readings()), (4, 3));
        for pkid in 1..=4 {
            let w = t.on_written(pkid, now).expect("in order");
            assert!(!w.done);
        }
        assert_eq!(t.on_puback(3).map(|(e, _)| e), Some(reading(11)));
        assert_eq!(
            t.on_puback(1).map(|(e, _)| e),
            Some(Entry::Status(Status::Online))
        );
        assert_eq!(t.on_puback(4).map(|(e, _)| e), Some(reading(12)));
        assert_eq!(t.on_puback(2).map(|(e, _)| e), Some(reading(10)));
        assert_eq!((t.outstanding(), t.readings()), (0, 0));
    }

    #[test]
    fn a_puback_for_an_unknown_packet_id_resolves_nothing() {
        let mut t = Tracker::default();
        t.queue(reading(1), Qos::AtLeastOnce);
        t.on_written(7, Instant::now()).expect("bound");
        assert_eq!(t.on_puback(8), None);
        assert_eq!(t.on_puback(7).map(|(e, _)| e), Some(reading(1)));
        assert_eq!(
            t.on_puback(7),
            None,
            "a second PUBACK for the same id acks nothing"
        );
    }

    #[test]
    fn qos0_publishes_are_done_when_written() {
        let mut t = Tracker::default();
        t.queue(reading(5), Qos::AtMostOnce);
        let w = t.on_written(0, Instant::now()).expect("qos0");
        assert_eq!(
            w,
            Written {
                entry: reading(5),
                done: true
            }
        );
        assert_eq!(t.outstanding(), 0);
    }

    #[test]
    fn inconsistent_events_are_errors_not_guesses() {
        let now = Instant::now();
        let mut t = Tracker::default();
        assert!(t.on_written(1, now).is_err(), "nothing queued");
        t.queue(reading(1), Qos::AtLeastOnce);
        assert!(t.on_written(0, now).is_err(), "qos1 reported as qos0");
        t.queue(reading(2), Qos::AtMostOnce);
        assert!(t.on_written(3, now).is_err(), "qos0 reported with an id");
        t.queue(reading(3), Qos::AtLeastOnce);
        t.queue(reading(4), Qos::AtLeastOnce);
        t.on_written(9, now).expect("first use");
        assert!(
            t.on_written(9, now).is_err(),
            "id reused while awaiting its PUBACK"
        );
    }

    #[test]
    fn reset_forgets_queued_and_awaiting_publishes() {
        let mut t = Tracker::default();
        t.queue(reading(1), Qos::AtLeastOnce);
        t.queue(reading(2), Qos::AtLeastOnce);
        t.on_written(1, Instant::now()).expect("bound");
        t.reset();
        assert_eq!((t.outstanding(), t.readings()), (0, 0));
        assert_eq!(t.on_puback(1), None);
    }
}
