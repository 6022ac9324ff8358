//! Address validation for the gateway's own requests (RFC 7252 §11.3; the anti-amplification
//! limit of RFC 9000 §8.1 applied to CoAP). An address learned from traffic nothing
//! authenticated — an LwM2M client's Register or Bootstrap-Request over plain UDP — may be
//! spoofed: the observations, reads and bootstrap writes the gateway then sends there on its own
//! initiative would flood whoever owns it. So, for a request marked
//! [`ClientRequest::validate_address`](crate::ClientRequest::validate_address), everything the
//! layer sends to such an address (answers included) stays within [`AMPLIFICATION_FACTOR`] ×
//! the bytes received from it, until the address is *proven*:
//! - a response carrying the token of one of our requests arrives from it (the token is 8
//!   random bytes; an empty ACK's 16-bit Message ID is not proof), or
//! - the transport authenticated a datagram from it (DTLS: the handshake's cookie exchange
//!   already proved the address).
//!
//! A real client answers the first request, which fits the budget its Register gave, and is
//! proven from then on; a spoofed Register gets at most 3× its size sent to the victim. A
//! request over the budget is not sent: its exchange fails with
//! [`CoapError::AddressUnproven`](crate::CoapError::AddressUnproven), a retransmission over it is
//! skipped (the exchange times out), and both are counted.
//!
//! Bounded: at most [`MAX_ADDRESSES`] addresses. Unproven ones are forgotten after EXCHANGE_LIFETIME of
//! silence, proven ones after [`PROVEN_IDLE`]; when the table is full, the oldest unproven
//! address makes room (forgetting an address only ever lowers what may be sent to it).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use super::AMPLIFICATION_FACTOR;

/// How long a proven address stays proven without a datagram from it: longer than the default
/// LwM2M registration lifetime (86,400 s), so a client that updates once a day stays proven.
pub(super) const PROVEN_IDLE: Duration = Duration::from_secs(25 * 3600);

/// Most addresses tracked per socket (about 2 MB at most with the sweep queue). Only the time
/// between a client's first message and its first answer needs an entry (a proven registration
/// is not validated again: `Registration::address_proven` in `wardgate_lwm2m`), so a flood of
/// spoofed sources evicting unproven entries costs a real client at most one deferred request.
pub(super) const MAX_ADDRESSES: usize = 16_384;

/// Entries looked at to find an unproven address to evict before giving up.
const EVICTION_TRIES: usize = 8;

#[derive(Debug)]
struct Addr {
    received: u64,
    sent: u64,
    proven: bool,
    seen: Instant,
}

impl Addr {
    fn idle(&self, unproven_idle: Duration) -> Duration {
        if self.proven {
            PROVEN_IDLE
        } else {
            unproven_idle
        }
    }
}

/// The addresses the layer heard from, what they sent and were sent, and whether they proved
/// they receive there. See the module documentation.
#[derive(Debug)]
pub(super) struct Validation {
    addrs: HashMap<SocketAddr, Addr>,
    /// When to look at each address again (one entry per address).
    sweep: VecDeque<(Instant, SocketAddr)>,
    max: usize,
    unproven_idle: Duration,
}

impl Validation {
    pub(super) fn new(max: usize, unproven_idle: Duration) -> Self {
        Validation {
            addrs: HashMap::new(),
            sweep: VecDeque::new(),
            max: max.clamp(1, MAX_ADDRESSES),
            unproven_idle,
        }
    }

    /// A datagram of `len` bytes arrived from `peer`; `authenticated` when the transport proved
    /// who sent it.
    pub(super) fn received(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        len: usize,
        authenticated: bool,
    ) {
        let len = len as u64;
        if let Some(a) = self.addrs.get_mut(&peer) {
            a.received = a.received.saturating_add(len);
            a.proven |= authenticated;
            a.seen = now;
            return;
        }
        self.insert(now, peer, len, authenticated);
    }

    /// A response with one of our tokens came from `peer`: it receives at that address.
    pub(super) fn prove(&mut self, now: Instant, peer: SocketAddr) {
        match self.addrs.get_mut(&peer) {
            Some(a) => {
                a.proven = true;
                a.seen = now;
            }
            None => self.insert(now, peer, 0, true),
        }
    }

    /// `len` bytes other than a validated request (an answer, an ACK, a RST) go to `peer`; they
    /// count against an unproven address's budget.
    pub(super) fn sent(&mut self, peer: SocketAddr, len: usize) {
        if let Some(a) = self.addrs.get_mut(&peer).filter(|a| !a.proven) {
            a.sent = a.sent.saturating_add(len as u64);
        }
    }

    /// Whether a validated request of `len` bytes may go to `peer` now; counted if so.
    pub(super) fn allow(&mut self, peer: SocketAddr, len: usize) -> bool {
        let Some(a) = self.addrs.get_mut(&peer) else {
            return false;
        };
        if a.proven {
            return true;
        }
        let after = a.sent.saturating_add(len as u64);
        if after > a.received.saturating_mul(AMPLIFICATION_FACTOR as u64) {
            return false;
        }
        a.sent = after;
        true
    }

    /// Whether `peer` proved its address.
    #[cfg(test)]
    fn is_proven(&self, peer: &SocketAddr) -> bool {
        self.addrs.get(peer).is_some_and(|a| a.proven)
    }

    /// Addresses tracked.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.addrs.len()
    }

    fn insert(&mut self, now: Instant, peer: SocketAddr, received: u64, proven: bool) {
        if self.addrs.len() >= self.max && !self.evict_one() {
            return;
        }
        let a = Addr {
            received,
            sent: 0,
            proven,
            seen: now,
        };
        self.sweep
            .push_back((now + a.idle(self.unproven_idle), peer));
        self.addrs.insert(peer, a);
    }

    /// Forgets the unproven address looked at longest ago; false when none was found within a
    /// few tries (the table is mostly proven addresses: the newcomer is not tracked).
    fn evict_one(&mut self) -> bool {
        for _ in 0..EVICTION_TRIES {
            let Some((t, peer)) = self.sweep.pop_front() else {
                return false;
            };
            match self.addrs.get(&peer) {
                Some(a) if a.proven => self.sweep.push_back((t, peer)),
                Some(_) => {
                    self.addrs.remove(&peer);
                    return true;
                }
                None => {}
            }
        }
        false
    }

    /// Forgets addresses silent for their idle time.
    pub(super) fn expire(&mut self, now: Instant) {
        while let Some(&(t, peer)) = self.sweep.front() {
            if t > now {
                break;
            }
            self.sweep.pop_front();
            let Some(a) = self.addrs.get(&peer) else {
                continue;
            };
            let until = a.seen + a.idle(self.unproven_idle);
            if until <= now {
                self.addrs.remove(&peer);
            } else {
                self.sweep.push_back((until, peer));
            }
        }
    }

    /// When [`Validation::expire`] next has work.
    pub(super) fn next_expiry(&self) -> Option<Instant> {
        self.sweep.front().map(|(t, _)| *t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(n: u8) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, n], 5683))
    }

    #[test]
    fn an_unproven_address_gets_three_times_what_it_sent_answers_included() {
        let now = Instant::now();
        let mut v = Validation::new(16, Duration::from_secs(247));
        assert!(!v.allow(addr(1), 1), "never heard from: nothing");
        v.received(now, addr(1), 50, false);
        v.sent(addr(1), 20); // the answer to its Register
        assert!(v.allow(addr(1), 100));
        assert!(v.allow(addr(1), 30));
        assert!(!v.allow(addr(1), 1), "150 bytes spent");
        v.received(now, addr(1), 10, false);
        assert!(v.allow(addr(1), 30));
        assert!(!v.allow(addr(1), 1));
        v.prove(now, addr(1));
        assert!(v.allow(addr(1), 10_000), "proven: no limit");
        v.received(now, addr(2), 1, true);
        assert!(
            v.is_proven(&addr(2)),
            "authenticated traffic proves the address"
        );
    }

    #[test]
    fn the_table_is_bounded_and_a_flood_evicts_unproven_addresses_only() {
        let now = Instant::now();
        let mut v = Validation::new(4, Duration::from_secs(247));
        v.received(now, addr(1), 10, false);
        v.prove(now, addr(1));
        for n in 2..200 {
            v.received(now, addr(n), 10, false);
        }
        assert_eq!(v.len(), 4);
        assert!(
            v.is_proven(&addr(1)),
            "the proven client survives the flood"
        );
        assert!(
            v.allow(addr(199), 30),
            "the newest spoofed source has its budget"
        );
        assert!(!v.allow(addr(2), 1), "an evicted one has none");
        assert!(v.sweep.len() <= 4, "one sweep entry per address");
    }

    #[test]
    fn silent_addresses_are_forgotten_proven_ones_later() {
        let now = Instant::now();
        let idle = Duration::from_secs(247);
        let mut v = Validation::new(16, idle);
        v.received(now, addr(1), 10, false);
        v.received(now, addr(2), 10, false);
        v.prove(now, addr(2));
        v.received(now + Duration::from_secs(100), addr(1), 10, false);
        v.expire(now + idle);
        assert_eq!(v.len(), 2, "addr 1 spoke since, addr 2 is proven");
        v.expire(now + idle + Duration::from_secs(100));
        assert_eq!(v.len(), 1, "addr 1 is forgotten after its silence");
        v.expire(now + PROVEN_IDLE);
        assert_eq!(v.len(), 0);
        assert_eq!(v.next_expiry(), None);
    }
}
