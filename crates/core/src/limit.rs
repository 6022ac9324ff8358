//! What every adapter needs to keep one peer from starving the others: who a peer counts as
//! ([`SourceKey`]) and token buckets whose memory does not grow with the number of peers
//! ([`TokenBuckets`]). Pure: time comes in as an argument.

use std::collections::hash_map::DefaultHasher;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, RandomState};
use std::net::{IpAddr, SocketAddr};

use tokio::time::Instant;

use crate::peer::PeerContext;

/// Who a peer counts as when per-peer tables are shared out and rates are limited: its proven
/// identity when it has one, else its IPv4 address or its IPv6 /64 (one host or one subnet can
/// have any number of ports and, on IPv6, any number of addresses in its /64, so neither counts
/// separately).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceKey {
    /// An IPv4 address (IPv4-mapped IPv6 addresses included), as its 32 bits.
    V4(u32),
    /// The upper 64 bits of an IPv6 address.
    V6Prefix(u64),
    /// A hash of a proven identity (its kind and value): a collision only merges two shares.
    Identity(u64),
}

impl SourceKey {
    /// The address part of `addr`, whatever identity its peer has.
    pub fn of_addr(addr: &SocketAddr) -> Self {
        Self::of_ip(addr.ip())
    }

    /// See [`SourceKey::of_addr`].
    pub fn of_ip(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => SourceKey::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => SourceKey::V4(u32::from(v4)),
                None => SourceKey::V6Prefix((u128::from(v6) >> 64) as u64),
            },
        }
    }

    /// The peer's identity when it has a proven one, else its address.
    pub fn of(peer: &PeerContext) -> Self {
        match &peer.identity {
            // A fixed-key hash: identities are proven, so nobody can choose them to collide.
            Some(id) => SourceKey::Identity(
                BuildHasherDefault::<DefaultHasher>::default()
                    .hash_one((id.kind().prefix(), id.value())),
            ),
            None => Self::of_addr(&peer.addr),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Option<Instant>,
}

/// A rate: `rate` tokens a second refill a bucket of `burst` tokens. A rate of 0 means unlimited.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Tokens a second (0 = unlimited).
    pub rate: f64,
    /// Bucket size: how many may come at once.
    pub burst: u32,
}

impl Rate {
    /// Whether this rate limits anything.
    pub fn is_limited(&self) -> bool {
        self.rate.is_finite() && self.rate > 0.0
    }
}

/// Token buckets in a fixed array indexed by a keyed hash of the key: memory is constant however
/// many keys (spoofed addresses, claimed device ids) a flood uses. Keys that hash alike share a
/// bucket, which only ever makes the limit stricter for them; with many more keys than buckets
/// a flood degrades the limit to one per bucket, which still bounds the total rate to
/// `buckets × rate`.
#[derive(Debug)]
pub struct TokenBuckets {
    buckets: Box<[Bucket]>,
    hasher: RandomState,
    rate: f64,
    burst: f64,
}

/// Whether a token was taken, and if not, when the next one will be there.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Take {
    /// Go ahead.
    Allowed,
    /// Over the limit: the bucket has a whole token again after this many seconds.
    Limited {
        /// Seconds until the next token, rounded up, at least 1.
        retry_after_secs: u32,
    },
}

impl TokenBuckets {
    /// `buckets` buckets (at least 1) of `rate`. With an unlimited rate no memory is allocated
    /// and every take is allowed.
    pub fn new(rate: Rate, buckets: usize) -> Self {
        let n = if rate.is_limited() { buckets.max(1) } else { 0 };
        TokenBuckets {
            buckets: vec![
                Bucket {
                    tokens: 0.0,
                    last: None,
                };
                n
            ]
            .into_boxed_slice(),
            hasher: RandomState::new(),
            rate: if rate.is_limited() { rate.rate } else { 0.0 },
            burst: f64::from(rate.burst.max(1)),
        }
    }

    /// Whether anything is limited.
    pub fn is_limited(&self) -> bool {
        !self.buckets.is_empty()
    }

    /// Takes one token from `key`'s bucket at `now`.
    pub fn take(&mut self, key: impl Hash, now: Instant) -> Take {
        let n = self.buckets.len();
        if n == 0 {
            return Take::Allowed;
        }
        let i = (self.hasher.hash_one(key) % n as u64) as usize;
        let Some(b) = self.buckets.get_mut(i) else {
            return Take::Allowed;
        };
        let refill = match b.last {
            None => self.burst,
            Some(last) => now.saturating_duration_since(last).as_secs_f64() * self.rate,
        };
        b.tokens = (b.tokens + refill).min(self.burst);
        b.last = Some(now);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Take::Allowed
        } else {
            let wait = ((1.0 - b.tokens) / self.rate).ceil();
            Take::Limited {
                retry_after_secs: if wait >= f64::from(u32::MAX) {
                    u32::MAX
                } else {
                    (wait as u32).max(1)
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::peer::{Identity, IdentityKind, TransportKind};

    #[test]
    fn ipv6_peers_in_one_slash_64_are_one_source_and_ipv4_mapped_is_ipv4() {
        let a: SocketAddr = "[2001:db8:1:2:aaaa::1]:1000".parse().unwrap();
        let b: SocketAddr = "[2001:db8:1:2:bbbb::9]:2000".parse().unwrap();
        let c: SocketAddr = "[2001:db8:1:3::1]:1000".parse().unwrap();
        assert_eq!(SourceKey::of_addr(&a), SourceKey::of_addr(&b));
        assert_ne!(SourceKey::of_addr(&a), SourceKey::of_addr(&c));
        let v4: SocketAddr = "192.0.2.1:5".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:192.0.2.1]:6".parse().unwrap();
        assert_eq!(SourceKey::of_addr(&v4), SourceKey::of_addr(&mapped));
    }

    #[test]
    fn a_proven_identity_is_its_own_source_wherever_it_comes_from() {
        let id = Identity::new(IdentityKind::PskIdentity, "bed-1");
        let a = PeerContext::new("192.0.2.1:5".parse().unwrap(), TransportKind::Dtls)
            .with_identity(id.clone());
        let b = PeerContext::new("198.51.100.7:9".parse().unwrap(), TransportKind::Dtls)
            .with_identity(id);
        assert_eq!(SourceKey::of(&a), SourceKey::of(&b));
        let anon = PeerContext::new("192.0.2.1:5".parse().unwrap(), TransportKind::Udp);
        assert_eq!(SourceKey::of(&anon), SourceKey::V4(0xc000_0201));
    }

    #[test]
    fn a_bucket_allows_its_burst_then_refills_at_its_rate() {
        let mut b = TokenBuckets::new(
            Rate {
                rate: 2.0,
                burst: 3,
            },
            64,
        );
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(b.take("a", t0), Take::Allowed);
        }
        assert_eq!(
            b.take("a", t0),
            Take::Limited {
                retry_after_secs: 1
            }
        );
        assert_eq!(b.take("a", t0 + Duration::from_millis(500)), Take::Allowed);
        assert!(matches!(
            b.take("a", t0 + Duration::from_millis(500)),
            Take::Limited { .. }
        ));
    }

    #[test]
    fn unlimited_allocates_nothing_and_allows_everything() {
        let mut b = TokenBuckets::new(
            Rate {
                rate: 0.0,
                burst: 0,
            },
            4096,
        );
        assert!(!b.is_limited());
        let t0 = Instant::now();
        for _ in 0..10_000 {
            assert_eq!(b.take(1u8, t0), Take::Allowed);
        }
    }

    #[test]
    fn a_slow_rate_asks_for_a_long_wait() {
        let mut b = TokenBuckets::new(
            Rate {
                rate: 0.01,
                burst: 1,
            },
            1,
        );
        let t0 = Instant::now();
        assert_eq!(b.take(0u8, t0), Take::Allowed);
        assert_eq!(
            b.take(0u8, t0),
            Take::Limited {
                retry_after_secs: 100
            }
        );
    }
}
