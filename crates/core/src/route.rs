//! Routing: which configured uplinks a reading is owed to.
//!
//! The outbox asks a [`Router`] once per reading when it is appended, and again when an uplink
//! releases a delivery (with that uplink excluded). The answer is an [`UplinkSet`] over the
//! uplinks' indices in configuration order. [`AllUplinks`] owes every reading to every uplink
//! (the gateway without `[selector]`); `wardgate_selector::SharedSelector` chooses per message
//! class from measured health, and hands the store its cutovers ([`Router::take_cutovers`]).
//!
//! Routers are pure decisions (no I/O, no waiting): the store calls them on its writer and in a
//! cursor's `release`, so a slow router would slow ingest and delivery.

use std::fmt::{self, Debug};

use ulid::Ulid;

use crate::reading::MessageClass;

/// Most uplinks one gateway can configure: the outbox keeps one bit per uplink in a signed
/// 64-bit column, and an [`UplinkSet`] holds indices below this.
pub const MAX_UPLINKS: usize = 63;

/// A set of configured uplinks, by index in configuration order (0-based, below
/// [`MAX_UPLINKS`]). A copyable bitset.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct UplinkSet(u64);

impl UplinkSet {
    /// No uplink.
    pub const EMPTY: UplinkSet = UplinkSet(0);

    /// The first `n` uplinks (all of them when `n` is the configured count); `n` is capped at
    /// [`MAX_UPLINKS`].
    pub fn first(n: usize) -> UplinkSet {
        let n = n.min(MAX_UPLINKS);
        UplinkSet((1u64 << n) - 1)
    }

    /// Just uplink `i` (empty when `i` is out of range).
    pub fn single(i: usize) -> UplinkSet {
        let mut s = UplinkSet::EMPTY;
        s.insert(i);
        s
    }

    /// Adds uplink `i`; false (and no change) when `i` is not below [`MAX_UPLINKS`].
    pub fn insert(&mut self, i: usize) -> bool {
        if i >= MAX_UPLINKS {
            return false;
        }
        self.0 |= 1 << i;
        true
    }

    /// Removes uplink `i`.
    pub fn remove(&mut self, i: usize) {
        if i < MAX_UPLINKS {
            self.0 &= !(1 << i);
        }
    }

    /// Whether uplink `i` is in the set.
    pub fn contains(&self, i: usize) -> bool {
        i < MAX_UPLINKS && self.0 & (1 << i) != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }

    /// Number of uplinks in the set.
    pub fn len(&self) -> usize {
        self.0.count_ones() as usize
    }

    /// Uplinks in both sets.
    #[must_use]
    pub fn intersection(self, other: UplinkSet) -> UplinkSet {
        UplinkSet(self.0 & other.0)
    }

    /// Uplinks in `self` and not in `other`.
    #[must_use]
    pub fn difference(self, other: UplinkSet) -> UplinkSet {
        UplinkSet(self.0 & !other.0)
    }

    /// Uplinks in either set.
    #[must_use]
    pub fn union(self, other: UplinkSet) -> UplinkSet {
        UplinkSet(self.0 | other.0)
    }

    /// The indices in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        (0..MAX_UPLINKS).filter(|i| self.contains(*i))
    }
}

impl FromIterator<usize> for UplinkSet {
    /// Out-of-range indices are ignored.
    fn from_iter<T: IntoIterator<Item = usize>>(iter: T) -> Self {
        let mut s = UplinkSet::EMPTY;
        for i in iter {
            s.insert(i);
        }
        s
    }
}

impl Debug for UplinkSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// What a [`Router`] decides on.
#[derive(Debug, Clone, Copy)]
pub struct RouteInput<'a> {
    /// The reading's id.
    pub id: Ulid,
    /// The device that sent it.
    pub device: &'a str,
    /// Its message class (the selector's policies are per class).
    pub class: MessageClass,
    /// The configured uplink names; index `i` in an [`UplinkSet`] is `uplinks[i]`.
    pub uplinks: &'a [String],
    /// Uplinks that must not get the reading: empty when it is appended, the releasing uplink
    /// when an uplink gave a delivery up. The outbox removes these from the answer anyway; a
    /// router sees them so it can pick an alternative (failover) instead of answering nothing.
    pub excluded: UplinkSet,
}

/// Decides which uplinks a reading is owed to.
///
/// The outbox treats the answer as follows (so a router need not be defensive about it):
/// indices of unconfigured uplinks and of `excluded` uplinks are ignored; if nothing is left
/// when a reading is appended, the reading is owed to every uplink and counted
/// (`wardgate_store_unrouted_total`), never dropped; if nothing is left when a delivery is
/// released, it stays owed to the uplink that released it.
pub trait Router: Send + Sync + Debug {
    /// The uplinks `r` is owed to.
    fn route(&self, r: &RouteInput<'_>) -> UplinkSet;

    /// Uplinks that stopped taking readings since the last call, with where the readings
    /// they are still owed go instead. The store calls this on its writer right before it
    /// routes each batch (and on its housekeeping tick), and moves those readings in the same
    /// transaction as that batch: a device's older readings reach the new uplink in the same
    /// commit as (or before) its newer ones, so per-device order holds across a failover. A
    /// router whose choices change only here (the selector applies breaker openings here)
    /// never routes a reading away from an uplink that still holds older readings of it.
    fn take_cutovers(&self) -> Vec<Cutover> {
        Vec::new()
    }
}

/// One uplink taken out of routing (see [`Router::take_cutovers`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Cutover {
    /// The uplink's index.
    pub from: usize,
    /// Per class, where its readings owed to `from` go (classes not listed stay owed).
    pub moves: Vec<(MessageClass, UplinkSet)>,
    /// Readings not to move (copies sent to `from` as probes while another uplink got the
    /// reading too: moving them would owe a second copy to an uplink that may have delivered
    /// the first).
    pub keep: Vec<Ulid>,
}

/// Owes every reading to every configured uplink except the excluded ones: the outbox's
/// behaviour before routing, and its default.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllUplinks;

impl Router for AllUplinks {
    fn route(&self, r: &RouteInput<'_>) -> UplinkSet {
        UplinkSet::first(r.uplinks.len()).difference(r.excluded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_uplink_set_holds_indices_below_the_limit_only() {
        let mut s = UplinkSet::EMPTY;
        assert!(s.insert(0) && s.insert(62));
        assert!(!s.insert(63), "index 63 has no bit in the store");
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0, 62]);
        assert_eq!(s.len(), 2);
        s.remove(0);
        assert!(!s.contains(0) && s.contains(62));
        assert_eq!(UplinkSet::first(100).len(), MAX_UPLINKS);
        assert_eq!(UplinkSet::first(0), UplinkSet::EMPTY);
        assert_eq!(
            format!("{:?}", [1usize, 3].into_iter().collect::<UplinkSet>()),
            "{1, 3}"
        );
    }

    #[test]
    fn all_uplinks_routes_to_every_configured_uplink_but_the_excluded() {
        let names = vec!["a".to_owned(), "b".to_owned(), "c".to_owned()];
        let mut input = RouteInput {
            id: Ulid::nil(),
            device: "bed-1",
            class: MessageClass::Vital,
            uplinks: &names,
            excluded: UplinkSet::EMPTY,
        };
        assert_eq!(AllUplinks.route(&input), UplinkSet::first(3));
        input.excluded = UplinkSet::single(1);
        assert_eq!(
            AllUplinks.route(&input).iter().collect::<Vec<_>>(),
            vec![0, 2]
        );
    }
}
