//! Message deduplication by (peer, Message ID) (RFC 7252 §4.5).
//!
//! Entries live EXCHANGE_LIFETIME (CON) or NON_LIFETIME (NON). The table is bounded by
//! `max_entries`: when full, the oldest entry (by arrival) is evicted early and counted.
//!
//! One source (IPv4 address or IPv6 /64: the table sees addresses, not identities) holds at most
//! `max_entries_per_source` entries ([`DedupTable::with_source_share`]), so one host sending from
//! many ports cannot fill the table and push out everybody else's entries. A source at its share
//! keeps its older entries; its new messages are processed but not remembered (counted in
//! [`DedupStats::over_share`]). Evicting the source's own oldest entry instead would mean taking an
//! entry out of the middle of a ring (tombstones, then compaction to keep them from filling the
//! table); not remembering is O(1) and costs only that source, whose rate is already abnormal.
//! Only a flood from more than `max_entries / max_entries_per_source` sources can still fill the
//! table; then the total bound holds and the oldest entries go first, as before.
//!
//! Layout: the entries themselves sit in two rings (CON and NON), each in arrival order and so in
//! expiry order; a hash index holds only the position of each live entry (8 bytes a bucket). So
//! expiry and eviction are pops from a ring's front, amortized O(1), and the index never stores a
//! copy of the key.
//!
//! Memory per entry, on a 64-bit target (checked by `entry_sizes_match_the_documented_cost`):
//! - the ring entry: key 24 + expiry 8 + response handle 16 + state = 56 bytes;
//! - the index: 8 bytes + 1 control byte a bucket. The index is sized once for twice
//!   `max_entries`, so it is never more than half full and never grows or rehashes into a larger
//!   allocation while serving: 18 bytes an entry at the bound, allocated up front (its pages are
//!   touched as they fill);
//! - the cached response bytes on the heap, only for CON requests answered piggybacked: header,
//!   token and options (a 2.01 with Location-Path `v1/readings/<device>/<ulid>` is 50-70 bytes,
//!   an error with diagnostic payload up to ~90), plus allocator overhead (~16 bytes).
//!
//! - the per-source counts: one map entry (about 40 bytes with its hash slot) per source holding
//!   entries, so at most `max_entries` of them under a flood from that many spoofed sources;
//!   not kept at all when the share is no smaller than the table.
//!
//! So about 75 bytes per remembered exchange plus the cached response (~150 bytes in all for an
//! ingest 2.01); the default 262 144 entries cost about 40 MB at the bound. A ring that emptied
//! gives memory back (it shrinks when a quarter full). Safe-method (GET) responses are not cached:
//! a duplicate GET is processed again (RFC 7252 §4.5 allows it for idempotent requests), which
//! keeps large Block2 responses out of the table.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hashbrown::HashTable;
use tokio::time::Instant;
use wardgate_core::SourceKey;

/// EXCHANGE_LIFETIME with the default transmission parameters (RFC 7252 §4.8.2).
pub const EXCHANGE_LIFETIME: Duration = Duration::from_secs(247);
/// NON_LIFETIME with the default transmission parameters.
pub const NON_LIFETIME: Duration = Duration::from_secs(145);

/// Largest index allocated up front (buckets); larger bounds let the index grow as it fills.
const MAX_PRESIZED_INDEX: usize = 1 << 22;

/// Compact (peer, Message ID) key: IPv4 addresses are stored v4-mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DedupKey {
    ip: [u8; 16],
    scope: u32,
    port: u16,
    mid: u16,
}

impl DedupKey {
    /// The key for a message `mid` from `peer`.
    pub fn new(peer: SocketAddr, mid: u16) -> DedupKey {
        let (ip, scope) = match peer {
            SocketAddr::V4(a) => (a.ip().to_ipv6_mapped().octets(), 0),
            SocketAddr::V6(a) => (a.ip().octets(), a.scope_id()),
        };
        DedupKey {
            ip,
            scope,
            port: peer.port(),
            mid,
        }
    }

    /// The peer's IP (for logs).
    pub fn ip(&self) -> IpAddr {
        std::net::Ipv6Addr::from(self.ip).to_canonical()
    }

    /// Who the peer counts as for its share of the table.
    pub fn source(&self) -> SourceKey {
        SourceKey::of_ip(self.ip())
    }
}

/// What a duplicate of a remembered message gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DupAction<'a> {
    /// The first copy is still being processed and nothing was sent yet: stay silent.
    Ignore,
    /// An empty ACK was sent for the first copy: send it again.
    EmptyAck,
    /// This response was sent for the first copy: send the same bytes again.
    Resend(&'a [u8]),
    /// Process the duplicate as if it were new (safe requests; messages we refused to ACK).
    Reprocess,
}

const PENDING: u8 = 0;
const ACKED: u8 = 1;
const RESPONDED: u8 = 2;
const REPROCESS: u8 = 3;
const NON_SEEN: u8 = 4;

/// One remembered message: 56 bytes (see the module doc).
#[derive(Debug)]
struct Entry {
    key: DedupKey,
    expires_ms: u64,
    response: Box<[u8]>,
    state: u8,
}

/// Result of [`DedupTable::observe`].
#[derive(Debug, PartialEq, Eq)]
pub enum Seen<'a> {
    /// First copy: now remembered (pending for CON, seen for NON).
    New,
    /// A duplicate, and what to do with it.
    Duplicate(DupAction<'a>),
}

/// Counters the caller turns into metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DedupStats {
    /// Entries evicted before their lifetime because the table was full.
    pub evictions: u64,
    /// Duplicates detected.
    pub hits: u64,
    /// New messages not remembered because their source held its share.
    pub over_share: u64,
}

/// Entries of one lifetime, in arrival order. Positions are absolute (`base` is the position of
/// the front) so they stay valid while the front is popped.
#[derive(Debug, Default)]
struct Ring {
    entries: VecDeque<Entry>,
    base: u64,
}

impl Ring {
    fn get(&self, pos: u64) -> Option<&Entry> {
        self.entries
            .get(usize::try_from(pos.checked_sub(self.base)?).ok()?)
    }

    fn get_mut(&mut self, pos: u64) -> Option<&mut Entry> {
        self.entries
            .get_mut(usize::try_from(pos.checked_sub(self.base)?).ok()?)
    }

    fn pop_front(&mut self) -> Option<(u64, Entry)> {
        let e = self.entries.pop_front()?;
        let pos = self.base;
        self.base += 1;
        let cap = self.entries.capacity();
        if cap > 1024 && self.entries.len() < cap / 4 {
            self.entries.shrink_to(cap / 2);
        }
        Some((pos, e))
    }
}

/// Index value: bit 63 tells the ring (set = NON), the rest is the position in it.
const NON_BIT: u64 = 1 << 63;

/// The bounded deduplication table.
#[derive(Debug)]
pub struct DedupTable {
    epoch: Instant,
    max_entries: usize,
    con_lifetime: u64,
    non_lifetime: u64,
    hasher: RandomState,
    index: HashTable<u64>,
    con: Ring,
    non: Ring,
    stats: DedupStats,
    /// Most entries of one source; `per_source` is kept only when this is below `max_entries`.
    max_per_source: usize,
    per_source: HashMap<SourceKey, u32>,
}

fn entry<'a>(con: &'a Ring, non: &'a Ring, slot: u64) -> Option<&'a Entry> {
    if slot & NON_BIT != 0 {
        non.get(slot & !NON_BIT)
    } else {
        con.get(slot)
    }
}

impl DedupTable {
    /// A table holding at most `max_entries` (at least 1) exchanges.
    pub fn new(
        now: Instant,
        max_entries: usize,
        con_lifetime: Duration,
        non_lifetime: Duration,
    ) -> Self {
        let max_entries = max_entries.max(1);
        DedupTable {
            epoch: now,
            max_entries,
            con_lifetime: con_lifetime.as_millis() as u64,
            non_lifetime: non_lifetime.as_millis() as u64,
            hasher: RandomState::new(),
            index: HashTable::with_capacity(max_entries.saturating_mul(2).min(MAX_PRESIZED_INDEX)),
            con: Ring::default(),
            non: Ring::default(),
            stats: DedupStats::default(),
            max_per_source: usize::MAX,
            per_source: HashMap::new(),
        }
    }

    /// Limits one source to `max` entries (see the module documentation).
    pub fn with_source_share(mut self, max: usize) -> Self {
        self.max_per_source = max.max(1);
        self
    }

    fn shared(&self) -> bool {
        self.max_per_source < self.max_entries
    }

    /// Entries held by `source` (0 when shares are not kept).
    pub fn held_by(&self, source: SourceKey) -> usize {
        self.per_source.get(&source).map_or(0, |n| *n as usize)
    }

    fn ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_millis() as u64
    }

    /// Entries currently remembered.
    pub fn len(&self) -> usize {
        self.con.entries.len() + self.non.entries.len()
    }

    /// No entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counters since creation.
    pub fn stats(&self) -> DedupStats {
        self.stats
    }

    /// When the next entry expires.
    pub fn next_expiry(&self) -> Option<Instant> {
        let a = self.con.entries.front().map(|e| e.expires_ms);
        let b = self.non.entries.front().map(|e| e.expires_ms);
        let ms = match (a, b) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        Some(self.epoch + Duration::from_millis(ms))
    }

    /// Drops every entry whose lifetime is over.
    pub fn expire(&mut self, now: Instant) {
        let now_ms = self.ms(now);
        for non in [false, true] {
            let ring = if non { &self.non } else { &self.con };
            if ring.entries.front().is_some_and(|e| e.expires_ms <= now_ms) {
                while self.pop_if(non, |e| e.expires_ms <= now_ms) {}
            }
        }
    }

    /// Pops the front of one ring if `pred` holds for it, and unindexes it.
    fn pop_if(&mut self, non: bool, pred: impl Fn(&Entry) -> bool) -> bool {
        let ring = if non { &mut self.non } else { &mut self.con };
        if !ring.entries.front().is_some_and(pred) {
            return false;
        }
        let Some((pos, e)) = ring.pop_front() else {
            return false;
        };
        let slot = if non { pos | NON_BIT } else { pos };
        if self.shared() {
            let source = e.key.source();
            if let Some(n) = self.per_source.get_mut(&source) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.per_source.remove(&source);
                }
            }
        }
        let hash = self.hasher.hash_one(e.key);
        if let Ok(found) = self.index.find_entry(hash, |&s| s == slot) {
            found.remove();
        }
        true
    }

    fn find(&self, key: &DedupKey) -> Option<u64> {
        self.find_hashed(self.hasher.hash_one(key), key)
    }

    fn find_hashed(&self, hash: u64, key: &DedupKey) -> Option<u64> {
        let (con, non) = (&self.con, &self.non);
        self.index
            .find(hash, |&s| entry(con, non, s).is_some_and(|e| e.key == *key))
            .copied()
    }

    fn entry_mut(&mut self, key: &DedupKey) -> Option<&mut Entry> {
        let slot = self.find(key)?;
        self.slot_mut(slot)
    }

    fn slot_mut(&mut self, slot: u64) -> Option<&mut Entry> {
        if slot & NON_BIT != 0 {
            self.non.get_mut(slot & !NON_BIT)
        } else {
            self.con.get_mut(slot)
        }
    }

    /// Records message `key` (Confirmable when `con`) or reports it as a duplicate.
    pub fn observe(&mut self, now: Instant, key: DedupKey, con: bool) -> Seen<'_> {
        self.expire(now);
        let hash = self.hasher.hash_one(key);
        if let Some(slot) = self.find_hashed(hash, &key) {
            self.stats.hits += 1;
            let Some(e) = self.slot_mut(slot) else {
                return Seen::New;
            };
            let action = match e.state {
                PENDING | NON_SEEN => DupAction::Ignore,
                ACKED => DupAction::EmptyAck,
                REPROCESS => {
                    e.state = if con { PENDING } else { NON_SEEN };
                    DupAction::Reprocess
                }
                _ => DupAction::Resend(&e.response),
            };
            return Seen::Duplicate(action);
        }
        let source = self.shared().then(|| key.source());
        if let Some(source) = source {
            if self.held_by(source) >= self.max_per_source {
                self.stats.over_share += 1;
                return Seen::New;
            }
        }
        if self.len() >= self.max_entries {
            self.evict_oldest();
        }
        if let Some(source) = source {
            *self.per_source.entry(source).or_insert(0) += 1;
        }
        let now_ms = self.ms(now);
        let (expires_ms, state) = if con {
            (now_ms + self.con_lifetime, PENDING)
        } else {
            (now_ms + self.non_lifetime, NON_SEEN)
        };
        let ring = if con { &mut self.con } else { &mut self.non };
        let pos = ring.base + ring.entries.len() as u64;
        ring.entries.push_back(Entry {
            key,
            expires_ms,
            response: Box::default(),
            state,
        });
        let slot = if con { pos } else { pos | NON_BIT };
        let (hasher, con_ring, non_ring) = (&self.hasher, &self.con, &self.non);
        // The rehash closure only runs if the index must grow (a bound above the pre-sized one).
        self.index.insert_unique(hash, slot, |&s| {
            entry(con_ring, non_ring, s).map_or(0, |e| hasher.hash_one(e.key))
        });
        Seen::New
    }

    fn evict_oldest(&mut self) {
        // Arrival = expiry - lifetime; the two rings are each in arrival order.
        let con = self
            .con
            .entries
            .front()
            .map(|e| e.expires_ms.saturating_sub(self.con_lifetime));
        let non = self
            .non
            .entries
            .front()
            .map(|e| e.expires_ms.saturating_sub(self.non_lifetime));
        let from_non = match (con, non) {
            (Some(c), Some(n)) => n < c,
            (Some(_), None) => false,
            (None, _) => true,
        };
        if self.pop_if(from_non, |_| true) {
            self.stats.evictions += 1;
        }
    }

    /// An empty ACK was sent for `key`.
    pub fn set_acked(&mut self, key: DedupKey) {
        if let Some(e) = self.entry_mut(&key) {
            e.state = ACKED;
        }
    }

    /// `response` was sent for `key` (piggybacked or in reply to a NON).
    pub fn set_response(&mut self, key: DedupKey, response: &[u8]) {
        if let Some(e) = self.entry_mut(&key) {
            if e.state != NON_SEEN {
                e.state = RESPONDED;
                e.response = response.into();
            }
        }
    }

    /// A duplicate of `key` is to be processed as new (its first copy was refused or its
    /// response is cheap to recompute).
    pub fn set_reprocess(&mut self, key: DedupKey) {
        if let Some(e) = self.entry_mut(&key) {
            e.state = REPROCESS;
            e.response = Box::default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Odd and even ports come from two hosts (two sources).
    fn peer(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1 + (port % 2) as u8], port))
    }

    #[test]
    fn entry_sizes_match_the_documented_cost() {
        assert_eq!(std::mem::size_of::<DedupKey>(), 24);
        assert_eq!(std::mem::size_of::<Entry>(), 56);
        assert_eq!(std::mem::size_of::<u64>(), 8);
    }

    #[test]
    fn duplicate_con_gets_the_cached_response_and_counts_a_hit() {
        let now = Instant::now();
        let mut t = DedupTable::new(now, 10, EXCHANGE_LIFETIME, NON_LIFETIME);
        let k = DedupKey::new(peer(1), 7);
        assert_eq!(t.observe(now, k, true), Seen::New);
        assert_eq!(t.observe(now, k, true), Seen::Duplicate(DupAction::Ignore));
        t.set_acked(k);
        assert_eq!(
            t.observe(now, k, true),
            Seen::Duplicate(DupAction::EmptyAck)
        );
        t.set_response(k, b"abc");
        assert_eq!(
            t.observe(now, k, true),
            Seen::Duplicate(DupAction::Resend(b"abc"))
        );
        assert_eq!(t.stats().hits, 3);
    }

    #[test]
    fn entries_expire_after_their_lifetime() {
        let now = Instant::now();
        let mut t = DedupTable::new(now, 10, EXCHANGE_LIFETIME, NON_LIFETIME);
        let con = DedupKey::new(peer(1), 1);
        let non = DedupKey::new(peer(1), 2);
        t.observe(now, con, true);
        t.observe(now, non, false);
        t.expire(now + NON_LIFETIME);
        assert_eq!(t.len(), 1);
        t.expire(now + EXCHANGE_LIFETIME);
        assert!(t.is_empty());
        assert_eq!(t.observe(now + EXCHANGE_LIFETIME, con, true), Seen::New);
    }

    #[test]
    fn full_table_evicts_the_oldest_arrival_first() {
        let now = Instant::now();
        let mut t = DedupTable::new(now, 2, EXCHANGE_LIFETIME, NON_LIFETIME);
        let a = DedupKey::new(peer(1), 1);
        let b = DedupKey::new(peer(1), 2);
        let c = DedupKey::new(peer(1), 3);
        t.observe(now, a, true);
        t.observe(now + Duration::from_secs(1), b, false);
        t.observe(now + Duration::from_secs(2), c, true);
        assert_eq!(t.len(), 2);
        assert_eq!(t.stats().evictions, 1);
        assert!(matches!(t.observe(now, b, false), Seen::Duplicate(_)));
        assert_eq!(t.observe(now, a, true), Seen::New);
    }

    #[test]
    fn a_source_at_its_share_is_not_remembered_and_cannot_push_out_others() {
        let now = Instant::now();
        let mut t = DedupTable::new(now, 4, EXCHANGE_LIFETIME, NON_LIFETIME).with_source_share(2);
        let device = DedupKey::new(SocketAddr::from(([10, 0, 0, 9], 5683)), 1);
        t.observe(now, device, true);
        for port in 1..100 {
            let k = DedupKey::new(SocketAddr::from(([10, 0, 0, 1], port)), 7);
            assert_eq!(t.observe(now, k, true), Seen::New);
        }
        assert_eq!(t.len(), 3);
        assert_eq!(t.stats().over_share, 97);
        assert_eq!(t.stats().evictions, 0);
        assert_eq!(
            t.observe(now, device, true),
            Seen::Duplicate(DupAction::Ignore),
            "the device's entry is still there"
        );
        assert_eq!(t.held_by(SourceKey::V4(0x0a00_0001)), 2);
        t.expire(now + EXCHANGE_LIFETIME);
        assert!(t.is_empty());
        assert_eq!(t.held_by(SourceKey::V4(0x0a00_0001)), 0);
    }

    #[test]
    fn reprocess_lets_one_duplicate_through_then_dedups_again() {
        let now = Instant::now();
        let mut t = DedupTable::new(now, 4, EXCHANGE_LIFETIME, NON_LIFETIME);
        let k = DedupKey::new(peer(9), 9);
        t.observe(now, k, true);
        t.set_reprocess(k);
        assert_eq!(
            t.observe(now, k, true),
            Seen::Duplicate(DupAction::Reprocess)
        );
        assert_eq!(t.observe(now, k, true), Seen::Duplicate(DupAction::Ignore));
    }

    mod model {
        //! The table against a plain list in arrival order: same answers, same length, same next
        //! expiry, under random arrivals, state changes and time steps.
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            Observe {
                peer: u16,
                mid: u16,
                con: bool,
                dt: u64,
            },
            Acked {
                peer: u16,
                mid: u16,
            },
            Respond {
                peer: u16,
                mid: u16,
                byte: u8,
            },
            Reprocess {
                peer: u16,
                mid: u16,
            },
        }

        fn op() -> impl Strategy<Value = Op> {
            let k = (0u16..3, 0u16..4);
            prop_oneof![
                4 => (k.clone(), any::<bool>(), 0u64..40)
                    .prop_map(|((peer, mid), con, dt)| Op::Observe { peer, mid, con, dt }),
                1 => k.clone().prop_map(|(peer, mid)| Op::Acked { peer, mid }),
                1 => (k.clone(), any::<u8>()).prop_map(|((peer, mid), byte)| Op::Respond { peer, mid, byte }),
                1 => k.prop_map(|(peer, mid)| Op::Reprocess { peer, mid }),
            ]
        }

        struct M {
            key: DedupKey,
            arrival: u64,
            expires: u64,
            con: bool,
            state: u8,
            response: Vec<u8>,
        }

        const CON_MS: u64 = 100;
        const NON_MS: u64 = 60;

        proptest! {
            #[test]
            fn table_matches_the_model(
                max in 1usize..8,
                share in 1usize..9,
                ops in proptest::collection::vec(op(), 1..200),
            ) {
                let t0 = Instant::now();
                let mut t = DedupTable::new(
                    t0, max, Duration::from_millis(CON_MS), Duration::from_millis(NON_MS))
                    .with_source_share(share);
                let mut over_share = 0u64;
                let mut m: Vec<M> = Vec::new();
                let mut now = 0u64;
                let mut evictions = 0u64;
                for o in ops {
                    match o {
                        Op::Observe { peer: p, mid, con, dt } => {
                            now += dt;
                            let key = DedupKey::new(peer(p), mid);
                            m.retain(|e| e.expires > now);
                            let want = if let Some(e) = m.iter_mut().find(|e| e.key == key) {
                                Seen::Duplicate(match e.state {
                                    PENDING | NON_SEEN => DupAction::Ignore,
                                    ACKED => DupAction::EmptyAck,
                                    REPROCESS => {
                                        e.state = if con { PENDING } else { NON_SEEN };
                                        DupAction::Reprocess
                                    }
                                    _ => DupAction::Resend(&[]),
                                })
                            } else if share < max
                                && m.iter().filter(|e| e.key.source() == key.source()).count() >= share
                            {
                                over_share += 1;
                                Seen::New
                            } else {
                                if m.len() >= max {
                                    let oldest = (0..m.len())
                                        .min_by_key(|&i| (m[i].arrival, !m[i].con, i))
                                        .unwrap_or(0);
                                    m.remove(oldest);
                                    evictions += 1;
                                }
                                let (life, state) = if con { (CON_MS, PENDING) } else { (NON_MS, NON_SEEN) };
                                m.push(M { key, arrival: now, expires: now + life, con, state, response: vec![] });
                                Seen::New
                            };
                            let got = t.observe(t0 + Duration::from_millis(now), key, con);
                            match (&want, &got) {
                                (Seen::Duplicate(DupAction::Resend(_)), Seen::Duplicate(DupAction::Resend(b))) => {
                                    let e = m.iter().find(|e| e.key == key);
                                    prop_assert_eq!(Some(b.to_vec()), e.map(|e| e.response.clone()));
                                }
                                _ => prop_assert_eq!(want, got),
                            }
                        }
                        Op::Acked { peer: p, mid } => {
                            let key = DedupKey::new(peer(p), mid);
                            if let Some(e) = m.iter_mut().find(|e| e.key == key) { e.state = ACKED; }
                            t.set_acked(key);
                        }
                        Op::Respond { peer: p, mid, byte } => {
                            let key = DedupKey::new(peer(p), mid);
                            if let Some(e) = m.iter_mut().find(|e| e.key == key) {
                                if e.state != NON_SEEN { e.state = RESPONDED; e.response = vec![byte]; }
                            }
                            t.set_response(key, &[byte]);
                        }
                        Op::Reprocess { peer: p, mid } => {
                            let key = DedupKey::new(peer(p), mid);
                            if let Some(e) = m.iter_mut().find(|e| e.key == key) {
                                e.state = REPROCESS; e.response = vec![];
                            }
                            t.set_reprocess(key);
                        }
                    }
                    t.expire(t0 + Duration::from_millis(now));
                    m.retain(|e| e.expires > now);
                    prop_assert_eq!(t.len(), m.len());
                    prop_assert_eq!(t.stats().evictions, evictions);
                    prop_assert_eq!(t.stats().over_share, over_share);
                    let next = m.iter().map(|e| e.expires).min();
                    prop_assert_eq!(t.next_expiry(), next.map(|ms| t0 + Duration::from_millis(ms)));
                }
            }
        }
    }
}
