//! Message deduplication by (peer, Message ID) (RFC 7252 §4.5).
//!
//! Entries live EXCHANGE_LIFETIME (CON) or NON_LIFETIME (NON). The table is bounded by
//! `max_entries`: when full, the oldest entry (by arrival) is evicted early and counted.
//!
//! Memory per entry, on a 64-bit target (checked by `entry_sizes_match_the_documented_cost`):
//! - hash map bucket: [`DedupKey`] 24 bytes + [`Slot`] 32 bytes = 56 bytes, plus 1 control byte,
//!   at a load factor of at most 7/8 → about 65 bytes;
//! - arrival queue item: key 24 + expiry 8 = 32 bytes;
//! - the cached response bytes on the heap, only for CON requests answered piggybacked: header,
//!   token and options (a 2.01 with Location-Path `v1/readings/<device>/<ulid>` is 50-70 bytes,
//!   an error with diagnostic payload up to ~90), plus allocator overhead (~16 bytes).
//!
//! So about 100 bytes per remembered exchange plus the cached response; the default 262 144
//! entries cost about 26 MB plus the cached responses in the worst case. Safe-method (GET)
//! responses are not cached: a duplicate GET is processed again (RFC 7252 §4.5 allows it for
//! idempotent requests), which keeps large Block2 responses out of the table.
//!
//! Expiry is amortized O(1): two FIFO queues (CON and NON lifetimes), each in arrival order and so
//! in expiry order; expired entries are popped from the fronts on every access.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::time::Instant;

/// EXCHANGE_LIFETIME with the default transmission parameters (RFC 7252 §4.8.2).
pub const EXCHANGE_LIFETIME: Duration = Duration::from_secs(247);
/// NON_LIFETIME with the default transmission parameters.
pub const NON_LIFETIME: Duration = Duration::from_secs(145);

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

/// Per-entry value: 32 bytes (see the module doc).
#[derive(Debug)]
pub struct Slot {
    expires_ms: u64,
    response: Box<[u8]>,
    state: u8,
}

/// Arrival-queue item: 32 bytes.
#[derive(Debug, Clone, Copy)]
pub struct QueueItem {
    key: DedupKey,
    expires_ms: u64,
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
}

/// The bounded deduplication table.
#[derive(Debug)]
pub struct DedupTable {
    epoch: Instant,
    max_entries: usize,
    con_lifetime: u64,
    non_lifetime: u64,
    map: HashMap<DedupKey, Slot>,
    con_queue: VecDeque<QueueItem>,
    non_queue: VecDeque<QueueItem>,
    stats: DedupStats,
}

impl DedupTable {
    /// A table holding at most `max_entries` (at least 1) exchanges.
    pub fn new(
        now: Instant,
        max_entries: usize,
        con_lifetime: Duration,
        non_lifetime: Duration,
    ) -> Self {
        DedupTable {
            epoch: now,
            max_entries: max_entries.max(1),
            con_lifetime: con_lifetime.as_millis() as u64,
            non_lifetime: non_lifetime.as_millis() as u64,
            map: HashMap::new(),
            con_queue: VecDeque::new(),
            non_queue: VecDeque::new(),
            stats: DedupStats::default(),
        }
    }

    fn ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_millis() as u64
    }

    /// Entries currently remembered.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// No entries.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Counters since creation.
    pub fn stats(&self) -> DedupStats {
        self.stats
    }

    /// When the next entry expires.
    pub fn next_expiry(&self) -> Option<Instant> {
        let a = self.con_queue.front().map(|i| i.expires_ms);
        let b = self.non_queue.front().map(|i| i.expires_ms);
        let ms = match (a, b) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        Some(self.epoch + Duration::from_millis(ms))
    }

    /// Drops every entry whose lifetime is over.
    pub fn expire(&mut self, now: Instant) {
        let now_ms = self.ms(now);
        for q in [&mut self.con_queue, &mut self.non_queue] {
            while let Some(front) = q.front().copied() {
                if front.expires_ms > now_ms {
                    break;
                }
                q.pop_front();
                remove_if_same(&mut self.map, front);
            }
        }
    }

    /// Records message `key` (Confirmable when `con`) or reports it as a duplicate.
    pub fn observe(&mut self, now: Instant, key: DedupKey, con: bool) -> Seen<'_> {
        self.expire(now);
        if self.map.contains_key(&key) {
            self.stats.hits += 1;
            let Some(slot) = self.map.get_mut(&key) else {
                return Seen::New;
            };
            let action = match slot.state {
                PENDING | NON_SEEN => DupAction::Ignore,
                ACKED => DupAction::EmptyAck,
                REPROCESS => {
                    slot.state = if con { PENDING } else { NON_SEEN };
                    DupAction::Reprocess
                }
                _ => DupAction::Resend(&slot.response),
            };
            return Seen::Duplicate(action);
        }
        if self.map.len() >= self.max_entries {
            self.evict_oldest();
        }
        let now_ms = self.ms(now);
        let (expires_ms, state) = if con {
            (now_ms + self.con_lifetime, PENDING)
        } else {
            (now_ms + self.non_lifetime, NON_SEEN)
        };
        self.map.insert(
            key,
            Slot {
                expires_ms,
                response: Box::default(),
                state,
            },
        );
        let item = QueueItem { key, expires_ms };
        if con {
            self.con_queue.push_back(item);
        } else {
            self.non_queue.push_back(item);
        }
        Seen::New
    }

    fn evict_oldest(&mut self) {
        // Arrival = expiry - lifetime; the two queues are each in arrival order.
        let con = self
            .con_queue
            .front()
            .map(|i| i.expires_ms.saturating_sub(self.con_lifetime));
        let non = self
            .non_queue
            .front()
            .map(|i| i.expires_ms.saturating_sub(self.non_lifetime));
        let from_con = match (con, non) {
            (Some(c), Some(n)) => c <= n,
            (Some(_), None) => true,
            (None, _) => false,
        };
        let q = if from_con {
            &mut self.con_queue
        } else {
            &mut self.non_queue
        };
        if let Some(item) = q.pop_front() {
            if remove_if_same(&mut self.map, item) {
                self.stats.evictions += 1;
            }
        }
    }

    /// An empty ACK was sent for `key`.
    pub fn set_acked(&mut self, key: DedupKey) {
        if let Some(s) = self.map.get_mut(&key) {
            s.state = ACKED;
        }
    }

    /// `response` was sent for `key` (piggybacked or in reply to a NON).
    pub fn set_response(&mut self, key: DedupKey, response: &[u8]) {
        if let Some(s) = self.map.get_mut(&key) {
            if s.state != NON_SEEN {
                s.state = RESPONDED;
                s.response = response.into();
            }
        }
    }

    /// A duplicate of `key` is to be processed as new (its first copy was refused or its
    /// response is cheap to recompute).
    pub fn set_reprocess(&mut self, key: DedupKey) {
        if let Some(s) = self.map.get_mut(&key) {
            s.state = REPROCESS;
            s.response = Box::default();
        }
    }
}

fn remove_if_same(map: &mut HashMap<DedupKey, Slot>, item: QueueItem) -> bool {
    if map
        .get(&item.key)
        .is_some_and(|s| s.expires_ms == item.expires_ms)
    {
        map.remove(&item.key);
        true
    } else {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn entry_sizes_match_the_documented_cost() {
        assert_eq!(std::mem::size_of::<DedupKey>(), 24);
        assert_eq!(std::mem::size_of::<Slot>(), 32);
        assert_eq!(std::mem::size_of::<QueueItem>(), 32);
        assert_eq!(std::mem::size_of::<(DedupKey, Slot)>(), 56);
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
}
