//! The router as the store applies it: from a [`Router`]'s [`UplinkSet`] (configuration
//! indices) to the `pending` bitmask of a row, on the lane of the reading's class (each uplink
//! has two persisted bits, alarms and the rest; bits need not match indices: they survive
//! config changes), and the router's cutovers to row moves.
//!
//! The rules that make "owed to no uplink" impossible live here, in one place:
//! - at append, an answer with no configured uplink left becomes "every uplink" (counted by
//!   the writer); a reading is never stored owed to nobody, and never refused because of the
//!   router (the device was already promised an answer by its protocol's rules, and a router
//!   bug must not turn into lost vitals);
//! - at release, the releasing uplink is removed from the answer; if nothing is left the
//!   caller keeps the reading owed to the releasing uplink;
//! - the [`QUARANTINE`] lane (when configured) is never a router's choice: a held reading is
//!   owed to it alone at append, and leaves it only by being released (approved: the router
//!   places it) or acknowledged (dismissed).

use std::sync::Arc;

use ulid::Ulid;
use wardgate_core::{MessageClass, QUARANTINE, RouteInput, Router, UplinkSet};

use crate::db::CutoverWork;
use crate::outbox::{LANES, lane_of};

#[derive(Debug)]
pub(crate) struct Routing {
    router: Arc<dyn Router>,
    /// Configured uplink names, in configuration order.
    names: Vec<String>,
    /// The row bits of each configured uplink's lanes (priority, normal), by index.
    masks: Vec<[i64; LANES]>,
    configured: UplinkSet,
    /// The [`QUARANTINE`] lane's index, when it is configured.
    quarantine: Option<usize>,
    /// The uplinks a router may choose: every configured one but the quarantine lane.
    routable: UplinkSet,
}

/// What the router decided for an appended reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AppendRoute {
    /// The row's `pending` mask (never 0).
    pub(crate) mask: i64,
    /// The router named no configured uplink: the reading is owed to every uplink.
    pub(crate) unrouted: bool,
}

impl Routing {
    pub(crate) fn new(
        router: Arc<dyn Router>,
        names: Vec<String>,
        masks: Vec<[i64; LANES]>,
    ) -> Self {
        let configured = UplinkSet::first(masks.len());
        let quarantine = names.iter().position(|n| n == QUARANTINE);
        let mut routable = configured;
        if let Some(q) = quarantine {
            routable.remove(q);
        }
        Routing {
            router,
            names,
            masks,
            configured,
            quarantine,
            routable,
        }
    }

    /// Whether held readings have a lane to wait in.
    pub(crate) fn holds(&self) -> bool {
        self.quarantine.is_some()
    }

    /// The row mask of an uplink set on the lane of `class` (unconfigured indices contribute
    /// nothing).
    pub(crate) fn mask_of(&self, set: UplinkSet, class: MessageClass) -> i64 {
        let lane = lane_of(class);
        set.iter()
            .filter_map(|i| self.masks.get(i))
            .fold(0, |m, b| m | b[lane])
    }

    fn ask(&self, id: Ulid, device: &str, class: MessageClass, excluded: UplinkSet) -> UplinkSet {
        let input = RouteInput {
            id,
            device,
            class,
            uplinks: &self.names,
            excluded,
        };
        self.router
            .route(&input)
            .intersection(self.routable)
            .difference(excluded)
    }

    /// The uplinks a new reading is owed to, as a row mask on its class's lane. A held reading
    /// is owed to the quarantine lane alone (the writer refuses held readings when there is
    /// none); no other reading is ever owed to it.
    pub(crate) fn on_append(
        &self,
        id: Ulid,
        device: &str,
        class: MessageClass,
        held: bool,
    ) -> AppendRoute {
        if let Some(q) = self.quarantine.filter(|_| held) {
            return AppendRoute {
                mask: self.mask_of(UplinkSet::single(q), class),
                unrouted: false,
            };
        }
        let set = self.ask(id, device, class, UplinkSet::EMPTY);
        if set.is_empty() {
            let all = if self.routable.is_empty() {
                self.configured
            } else {
                self.routable
            };
            return AppendRoute {
                mask: self.mask_of(all, class),
                unrouted: true,
            };
        }
        AppendRoute {
            mask: self.mask_of(set, class),
            unrouted: false,
        }
    }

    /// The router's cutovers as row moves: per (lane slot, class), the readings owed on that
    /// lane of the uplink move to the targets' bits on the same lane.
    pub(crate) fn take_cutovers(&self) -> Vec<CutoverWork> {
        let mut out = Vec::new();
        for c in self.router.take_cutovers() {
            if !self.configured.contains(c.from) {
                continue;
            }
            if Some(c.from) == self.quarantine {
                continue;
            }
            for (class, to) in c.moves {
                let to = to
                    .intersection(self.routable)
                    .difference(UplinkSet::single(c.from));
                let target = self.mask_of(to, class);
                let lane = lane_of(class);
                let Some(from_mask) = self.masks.get(c.from).map(|m| m[lane]) else {
                    continue;
                };
                if target == 0 {
                    continue;
                }
                out.push(CutoverWork {
                    slot: c.from * LANES + lane,
                    from_mask,
                    class,
                    target,
                    keep: c.keep.clone(),
                });
            }
        }
        out
    }

    /// Where uplink `from` may move a delivery it gives up: never `from`, possibly nowhere.
    ///
    /// A reading the quarantine lane releases (approved) is routed as if it had just arrived,
    /// not as a failover (the router did not choose the lane and nothing failed), and, like an
    /// appended reading, to every uplink when the router names none.
    pub(crate) fn on_release(
        &self,
        from: usize,
        id: Ulid,
        device: &str,
        class: MessageClass,
    ) -> UplinkSet {
        if Some(from) == self.quarantine {
            let set = self.ask(id, device, class, UplinkSet::EMPTY);
            return if set.is_empty() { self.routable } else { set };
        }
        self.ask(id, device, class, UplinkSet::single(from))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Answers a fixed set, whatever it is asked.
    #[derive(Debug)]
    struct Fixed(UplinkSet);

    impl Router for Fixed {
        fn route(&self, _: &RouteInput<'_>) -> UplinkSet {
            self.0
        }
    }

    fn routing(answer: u64, uplinks: usize) -> Routing {
        let set: UplinkSet = (0..64).filter(|i| answer & (1 << i) != 0).collect();
        let names = (0..uplinks).map(|i| format!("u{i}")).collect();
        // Bits deliberately not equal to indices (as after config changes); the priority lanes
        // take the low bits.
        let masks = (0..uplinks)
            .map(|i| [1i64 << i, 1i64 << (62 - i)])
            .collect();
        Routing::new(Arc::new(Fixed(set)), names, masks)
    }

    proptest! {
        #[test]
        fn an_appended_reading_is_owed_to_at_least_one_configured_uplink(
            answer in any::<u64>(), uplinks in 1usize..=31, alarm in any::<bool>(),
        ) {
            let r = routing(answer, uplinks);
            let class = if alarm { MessageClass::Alarm } else { MessageClass::Vital };
            let all = r.mask_of(UplinkSet::first(uplinks), class);
            let got = r.on_append(Ulid::nil(), "d", class, false);
            prop_assert!(got.mask != 0);
            prop_assert_eq!(got.mask & !all, 0, "only configured uplinks, on the class's lane");
            prop_assert_eq!(got.unrouted, got.mask == all && (answer & ((1u64 << uplinks) - 1)) == 0);
        }

        #[test]
        fn a_release_never_targets_the_releasing_or_an_unconfigured_uplink(
            answer in any::<u64>(), uplinks in 1usize..=31, from in 0usize..31,
        ) {
            let r = routing(answer, uplinks);
            let got = r.on_release(from, Ulid::nil(), "d", MessageClass::Vital);
            prop_assert!(!got.contains(from));
            prop_assert!(got.iter().all(|i| i < uplinks));
        }

        #[test]
        fn the_quarantine_lane_takes_held_readings_only_and_is_never_routed_to(
            answer in any::<u64>(), uplinks in 2usize..=31, q in 0usize..31, held in any::<bool>(),
            alarm in any::<bool>(),
        ) {
            let q = q % uplinks;
            let mut r = routing(answer, uplinks);
            r = Routing::new(r.router.clone(), {
                let mut n = r.names.clone();
                n[q] = QUARANTINE.to_owned();
                n
            }, r.masks.clone());
            let class = if alarm { MessageClass::Alarm } else { MessageClass::Vital };
            let qmask = r.mask_of(UplinkSet::single(q), class);
            let got = r.on_append(Ulid::nil(), "d", class, held);
            if held {
                prop_assert_eq!(got.mask, qmask);
            } else {
                prop_assert!(got.mask != 0);
                prop_assert_eq!(got.mask & qmask, 0, "a reading not held never waits in quarantine");
            }
            for from in 0..uplinks {
                let to = r.on_release(from, Ulid::nil(), "d", class);
                prop_assert!(!to.contains(q), "released from {} to the quarantine lane", from);
            }
            // Approved readings always find an uplink.
            prop_assert!(!r.on_release(q, Ulid::nil(), "d", class).is_empty());
        }
    }
}
