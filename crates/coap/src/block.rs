//! Block-wise transfer (RFC 7959): Block1 reassembly of request bodies and Block2 slicing of
//! response bodies.
//!
//! Reassembly is bounded four ways: `max_body_bytes` per body (4.13 with Size1 beyond),
//! `max_transfers_per_source` per source (that source gets 5.03 beyond, the others are still
//! served), `max_open_transfers` at once, and `transfer_timeout` of idleness (the transfer is
//! dropped; a later block gets 4.08). Transfers are keyed by (peer, request URI), as RFC 7959 §2.4
//! ties the blocks of one body to the endpoint and the target resource, not to a token.
//!
//! A full table does not refuse everybody: a new transfer takes the place of the least recently
//! active transfer of the source holding the most. So a flood from many ports of one host can
//! hold only its share, and a flood from many (spoofed) sources holding one transfer each can
//! push out only the idlest transfers: a device that is actually uploading sends a block every
//! round trip, so it loses its transfer only when more than `max_open_transfers` new transfers
//! arrive within one of its round trips. Evictions are counted in
//! `wardgate_coap_evictions_total{table="block1",reason="table_full"}`; finding the victim is a
//! scan of the table, which is small by design (each entry may hold `max_body_bytes`).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use wardgate_core::SourceKey;

use crate::codec::{BlockOpt, Code};
use crate::config::MAX_TRANSFER_TIMEOUT;
use crate::layer::Response;
use crate::metrics::CoapMetrics;

/// Block1 bounds.
#[derive(Debug, Clone, Copy)]
pub struct BlockLimits {
    /// Largest reassembled body.
    pub max_body_bytes: usize,
    /// Concurrent reassemblies.
    pub max_open_transfers: usize,
    /// Concurrent reassemblies of one source.
    pub max_transfers_per_source: usize,
    /// Idle reassemblies are discarded after this long.
    pub transfer_timeout: Duration,
    /// Largest block size wardgate asks for (SZX), 0..=6.
    pub preferred_szx: u8,
    /// Max-Age of the 5.03 answered when too many transfers are open.
    pub busy_max_age: u32,
}

#[derive(Debug)]
struct Transfer {
    body: Vec<u8>,
    content_format: Option<u16>,
    last: Instant,
    source: SourceKey,
}

/// What the application does with a Block1 request.
#[derive(Debug)]
pub enum Step {
    /// Answer this now (2.31 Continue or an error).
    Reply(Response),
    /// The body is complete; process it and echo this Block1 in the final response.
    Complete {
        /// The reassembled body.
        body: Vec<u8>,
        /// Block1 option for the final response.
        block1: BlockOpt,
    },
}

/// Open Block1 reassemblies of one socket.
#[derive(Debug)]
pub struct Reassembly {
    limits: BlockLimits,
    metrics: CoapMetrics,
    open: HashMap<(SocketAddr, String), Transfer>,
    /// Open transfers per source (no entry for a source holding none).
    per_source: HashMap<SourceKey, usize>,
    /// (deadline at enqueue, key) in enqueue order; re-queued when the transfer was touched
    /// since, so a transfer expires between `transfer_timeout` and twice that after its last
    /// block.
    expiry: VecDeque<(Instant, (SocketAddr, String))>,
}

impl Reassembly {
    /// Empty table.
    pub fn new(mut limits: BlockLimits, metrics: CoapMetrics) -> Self {
        // Keeps `Instant + timeout` far from overflow whatever the configuration says.
        limits.transfer_timeout = limits.transfer_timeout.min(MAX_TRANSFER_TIMEOUT);
        Reassembly {
            limits,
            metrics,
            open: HashMap::new(),
            per_source: HashMap::new(),
            expiry: VecDeque::new(),
        }
    }

    /// Transfers in progress.
    pub fn len(&self) -> usize {
        self.open.len()
    }

    /// None in progress.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    fn too_large(&self) -> Response {
        let mut r = Response::diagnostic(Code::REQUEST_ENTITY_TOO_LARGE, "body too large");
        r.size1 = Some(u32::try_from(self.limits.max_body_bytes).unwrap_or(u32::MAX));
        r
    }

    /// Open transfers of `source`.
    pub fn held_by(&self, source: SourceKey) -> usize {
        self.per_source.get(&source).copied().unwrap_or(0)
    }

    fn busy(&self, text: &'static str) -> Response {
        let mut r = Response::diagnostic(Code::SERVICE_UNAVAILABLE, text);
        r.max_age = Some(self.limits.busy_max_age);
        r
    }

    fn take(&mut self, key: &(SocketAddr, String)) -> Option<Transfer> {
        let t = self.open.remove(key)?;
        self.metrics.block_transfers_open.dec();
        if let Some(n) = self.per_source.get_mut(&t.source) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_source.remove(&t.source);
            }
        }
        Some(t)
    }

    fn remove(&mut self, key: &(SocketAddr, String)) {
        self.take(key);
    }

    /// Makes room for one more transfer: drops the least recently active transfer of the source
    /// holding the most. False when there is nothing to drop.
    fn evict_one(&mut self) -> bool {
        let Some(most) = self.per_source.values().max().copied() else {
            return false;
        };
        let per_source = &self.per_source;
        let victim = self
            .open
            .iter()
            .filter(|(_, t)| per_source.get(&t.source) == Some(&most))
            .min_by_key(|(_, t)| t.last)
            .map(|(k, _)| k.clone());
        let Some(victim) = victim else {
            return false;
        };
        self.remove(&victim);
        self.metrics.eviction("block1", "table_full");
        true
    }

    fn insert(&mut self, now: Instant, key: (SocketAddr, String), t: Transfer) {
        *self.per_source.entry(t.source).or_insert(0) += 1;
        self.open.insert(key.clone(), t);
        self.metrics.block_transfers_open.inc();
        self.expiry
            .push_back((now + self.limits.transfer_timeout, key));
        // Evicted and completed transfers leave their expiry entries behind until their deadline;
        // under a flood of new transfers rebuild the queue so it stays bounded by the table.
        if self.expiry.len() > 2 * self.limits.max_open_transfers.max(16) {
            let timeout = self.limits.transfer_timeout;
            let mut live: Vec<_> = self
                .open
                .iter()
                .map(|(k, t)| (t.last + timeout, k.clone()))
                .collect();
            live.sort_by_key(|(d, _)| *d);
            self.expiry = live.into();
        }
    }

    /// Handles one Block1 request message for `uri` (path and query) from `peer`, which counts
    /// as `source` for the per-source share.
    #[allow(clippy::too_many_arguments)]
    pub fn on_block(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        source: SourceKey,
        uri: &str,
        block: BlockOpt,
        payload: &[u8],
        size1: Option<u32>,
        content_format: Option<u16>,
    ) -> Step {
        self.expire(now);
        if block.szx > 6 {
            return Step::Reply(Response::diagnostic(Code::BAD_REQUEST, "SZX 7 is reserved"));
        }
        let key = (peer, uri.to_owned());
        if size1.is_some_and(|s| s as usize > self.limits.max_body_bytes) {
            self.remove(&key);
            self.metrics.block_outcome("too_large");
            return Step::Reply(self.too_large());
        }
        let size = block.size();
        let offset = (block.num as usize).saturating_mul(size);
        if block.more && payload.len() != size {
            self.remove(&key);
            return Step::Reply(Response::diagnostic(
                Code::BAD_REQUEST,
                "block payload does not match its size",
            ));
        }
        if block.num == 0 {
            if !block.more {
                // A one-block body: no state needed.
                self.remove(&key);
                return Step::Complete {
                    body: payload.to_vec(),
                    block1: block,
                };
            }
            if let Some(t) = self.open.get_mut(&key) {
                // The client starts its body over.
                t.body.clear();
                t.content_format = content_format;
            } else {
                if self.held_by(source) >= self.limits.max_transfers_per_source {
                    self.metrics.block_outcome("source_share");
                    return Step::Reply(self.busy("too many block transfers from this source"));
                }
                if self.open.len() >= self.limits.max_open_transfers && !self.evict_one() {
                    self.metrics.block_outcome("too_many_open");
                    return Step::Reply(self.busy("too many block transfers"));
                }
                self.insert(
                    now,
                    key.clone(),
                    Transfer {
                        body: Vec::new(),
                        content_format,
                        last: now,
                        source,
                    },
                );
            }
        }
        let max_body = self.limits.max_body_bytes;
        let Some(t) = self.open.get_mut(&key) else {
            self.metrics.block_outcome("incomplete");
            return Step::Reply(Response::diagnostic(
                Code::REQUEST_ENTITY_INCOMPLETE,
                "no transfer in progress for this block",
            ));
        };
        if offset != t.body.len() || t.content_format != content_format {
            self.remove(&key);
            self.metrics.block_outcome("incomplete");
            return Step::Reply(Response::diagnostic(
                Code::REQUEST_ENTITY_INCOMPLETE,
                "block out of order",
            ));
        }
        if t.body.len() + payload.len() > max_body {
            self.remove(&key);
            self.metrics.block_outcome("too_large");
            return Step::Reply(self.too_large());
        }
        t.body.extend_from_slice(payload);
        t.last = now;
        if block.more {
            // RFC 7959 §2.3/§3.3: the server may ask for smaller blocks by echoing the block number
            // with a smaller SZX; the client continues at the same byte offset.
            let szx = block.szx.min(self.limits.preferred_szx);
            let mut r = Response::new(Code::CONTINUE);
            r.block1 = Some(BlockOpt {
                num: block.num,
                more: true,
                szx,
            });
            return Step::Reply(r);
        }
        let body = self.take(&key).map(|t| t.body).unwrap_or_default();
        self.metrics.block_outcome("completed");
        Step::Complete {
            body,
            block1: block,
        }
    }

    /// When the next idle check is due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.expiry.front().map(|(t, _)| *t)
    }

    /// Drops transfers idle for longer than `transfer_timeout`.
    pub fn expire(&mut self, now: Instant) {
        while let Some((t, _)) = self.expiry.front() {
            if *t > now {
                break;
            }
            let Some((_, key)) = self.expiry.pop_front() else {
                break;
            };
            let Some(tr) = self.open.get(&key) else {
                continue;
            };
            let idle_until = tr.last + self.limits.transfer_timeout;
            if idle_until <= now {
                self.remove(&key);
                self.metrics.block_outcome("expired");
            } else {
                self.expiry.push_back((idle_until, key));
            }
        }
    }
}

impl Drop for Reassembly {
    fn drop(&mut self) {
        self.metrics
            .block_transfers_open
            .dec_by(self.open.len() as i64);
    }
}

/// Picks the Block2 block of `body` to send: the block the client asked for (or the first), at
/// the smaller of the client's and our block size, as its option and byte range (always within
/// `body`). Returns `None` when the body fits and the client did not ask for blocks, or the 4.02
/// response for a block past the end.
pub fn block2_slice(
    body: &[u8],
    requested: Option<BlockOpt>,
    preferred_szx: u8,
) -> Result<Option<(BlockOpt, std::ops::Range<usize>)>, Response> {
    let szx = requested
        .map_or(preferred_szx, |b| b.szx.min(preferred_szx))
        .min(6);
    let size = 1usize << (szx + 4);
    if requested.is_none() && body.len() <= size {
        return Ok(None);
    }
    let req_num = requested.map_or(0, |b| b.num as usize);
    let req_size = requested.map_or(size, BlockOpt::size);
    // A client that asked with a larger size continues at the same byte offset.
    let offset = req_num.saturating_mul(req_size);
    if offset >= body.len() && !(offset == 0 && body.is_empty()) {
        return Err(Response::diagnostic(Code::BAD_OPTION, "block past the end"));
    }
    let end = (offset + size).min(body.len());
    let num = (offset / size) as u32;
    Ok(Some((
        BlockOpt {
            num,
            more: end < body.len(),
            szx,
        },
        offset.min(end)..end,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(max_body: usize, max_open: usize) -> Reassembly {
        Reassembly::new(
            BlockLimits {
                max_body_bytes: max_body,
                max_open_transfers: max_open,
                max_transfers_per_source: max_open,
                transfer_timeout: Duration::from_secs(60),
                preferred_szx: 6,
                busy_max_age: 5,
            },
            CoapMetrics::default(),
        )
    }

    fn peer() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 5000))
    }

    fn src() -> SourceKey {
        SourceKey::of_addr(&peer())
    }

    /// Opens a transfer of `uri` from `ip`:`port` and returns the answer's code.
    fn open(t: &mut Reassembly, now: Instant, ip: [u8; 4], port: u16, uri: &str) -> Code {
        let p = SocketAddr::from((ip, port));
        match t.on_block(
            now,
            p,
            SourceKey::of_addr(&p),
            uri,
            b(0, true),
            &[1; 16],
            None,
            None,
        ) {
            Step::Reply(r) => r.code,
            Step::Complete { .. } => Code::CHANGED,
        }
    }

    fn next(t: &mut Reassembly, now: Instant, ip: [u8; 4], port: u16, num: u32) -> Code {
        let p = SocketAddr::from((ip, port));
        match t.on_block(
            now,
            p,
            SourceKey::of_addr(&p),
            "/u",
            b(num, true),
            &[1; 16],
            None,
            None,
        ) {
            Step::Reply(r) => r.code,
            Step::Complete { .. } => Code::CHANGED,
        }
    }

    #[test]
    fn a_source_over_its_share_gets_503_while_another_source_is_served() {
        let mut t = table(1024, 16);
        t.limits.max_transfers_per_source = 2;
        let now = Instant::now();
        assert_eq!(open(&mut t, now, [10, 0, 0, 1], 1, "/u"), Code::CONTINUE);
        assert_eq!(open(&mut t, now, [10, 0, 0, 1], 2, "/u"), Code::CONTINUE);
        assert_eq!(
            open(&mut t, now, [10, 0, 0, 1], 3, "/u"),
            Code::SERVICE_UNAVAILABLE
        );
        assert_eq!(open(&mut t, now, [10, 0, 0, 2], 1, "/u"), Code::CONTINUE);
        assert_eq!(t.held_by(SourceKey::V4(0x0a00_0001)), 2);
        // Its own transfers go on.
        assert_eq!(next(&mut t, now, [10, 0, 0, 1], 1, 1), Code::CONTINUE);
    }

    #[test]
    fn a_full_table_evicts_the_idlest_transfer_of_the_source_holding_the_most() {
        let mut t = table(1024, 4);
        t.limits.max_transfers_per_source = 3;
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        // The device opened first and keeps uploading; host A holds three.
        assert_eq!(open(&mut t, t0, [10, 0, 0, 9], 1, "/u"), Code::CONTINUE);
        for port in 1..=3 {
            assert_eq!(
                open(&mut t, t0 + s, [10, 0, 0, 1], port, "/u"),
                Code::CONTINUE
            );
        }
        assert_eq!(
            next(&mut t, t0 + 2 * s, [10, 0, 0, 1], 1, 1),
            Code::CONTINUE
        );
        // Host B's new transfer pushes out one of A's idlest (port 2 or 3), not the device's
        // older one, nor A's active one.
        assert_eq!(
            open(&mut t, t0 + 3 * s, [10, 0, 0, 2], 1, "/u"),
            Code::CONTINUE
        );
        assert_eq!(t.len(), 4);
        assert_eq!(t.held_by(SourceKey::V4(0x0a00_0001)), 2);
        assert_eq!(
            next(&mut t, t0 + 3 * s, [10, 0, 0, 9], 1, 1),
            Code::CONTINUE
        );
        assert_eq!(
            next(&mut t, t0 + 3 * s, [10, 0, 0, 1], 1, 2),
            Code::CONTINUE
        );
        assert_eq!(
            t.metrics
                .evictions
                .get_or_create(&crate::metrics::EvictionLabels {
                    table: "block1",
                    reason: "table_full"
                })
                .get(),
            1
        );
    }

    #[test]
    fn a_flood_of_sources_holding_one_each_pushes_out_only_the_idlest() {
        let mut t = table(1 << 16, 8);
        let t0 = Instant::now();
        assert_eq!(open(&mut t, t0, [10, 9, 9, 9], 1, "/u"), Code::CONTINUE);
        for i in 0u16..1000 {
            let now = t0 + Duration::from_millis(u64::from(i) + 1);
            let ip = [10, 1, (i >> 8) as u8, i as u8];
            assert_eq!(open(&mut t, now, ip, 1, "/u"), Code::CONTINUE);
            if i % 4 == 3 {
                // The device sends a block every few flood transfers.
                let num = u32::from(i / 4) + 1;
                assert_eq!(next(&mut t, now, [10, 9, 9, 9], 1, num), Code::CONTINUE);
            }
            assert!(t.len() <= 8);
            assert!(t.expiry.len() <= 32, "the expiry queue stays bounded");
        }
    }

    fn b(num: u32, more: bool) -> BlockOpt {
        BlockOpt { num, more, szx: 0 }
    }

    #[test]
    fn blocks_in_order_reassemble_the_body() {
        let mut t = table(1024, 4);
        let now = Instant::now();
        let s = t.on_block(
            now,
            peer(),
            src(),
            "/x",
            b(0, true),
            &[1; 16],
            None,
            Some(110),
        );
        assert!(matches!(s, Step::Reply(r) if r.code == Code::CONTINUE));
        let s = t.on_block(
            now,
            peer(),
            src(),
            "/x",
            b(1, false),
            &[2; 5],
            None,
            Some(110),
        );
        match s {
            Step::Complete { body, block1 } => {
                assert_eq!(body.len(), 21);
                assert_eq!(block1, b(1, false));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(t.is_empty());
    }

    #[test]
    fn out_of_order_block_gets_request_entity_incomplete() {
        let mut t = table(1024, 4);
        let now = Instant::now();
        t.on_block(now, peer(), src(), "/x", b(0, true), &[1; 16], None, None);
        let s = t.on_block(now, peer(), src(), "/x", b(2, true), &[1; 16], None, None);
        assert!(matches!(s, Step::Reply(r) if r.code == Code::REQUEST_ENTITY_INCOMPLETE));
    }

    #[test]
    fn body_over_the_limit_gets_413_with_size1() {
        let mut t = table(20, 4);
        let now = Instant::now();
        t.on_block(now, peer(), src(), "/x", b(0, true), &[1; 16], None, None);
        let s = t.on_block(now, peer(), src(), "/x", b(1, true), &[1; 16], None, None);
        match s {
            Step::Reply(r) => {
                assert_eq!(r.code, Code::REQUEST_ENTITY_TOO_LARGE);
                assert_eq!(r.size1, Some(20));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn too_many_open_transfers_get_503() {
        let mut t = table(1024, 1);
        let now = Instant::now();
        t.on_block(now, peer(), src(), "/a", b(0, true), &[1; 16], None, None);
        let s = t.on_block(now, peer(), src(), "/b", b(0, true), &[1; 16], None, None);
        assert!(
            matches!(s, Step::Reply(r) if r.code == Code::SERVICE_UNAVAILABLE && r.max_age == Some(5))
        );
    }

    #[test]
    fn idle_transfer_expires() {
        let mut t = table(1024, 1);
        let now = Instant::now();
        t.on_block(now, peer(), src(), "/a", b(0, true), &[1; 16], None, None);
        t.expire(now + Duration::from_secs(61));
        assert!(t.is_empty());
        let s = t.on_block(
            now + Duration::from_secs(61),
            peer(),
            src(),
            "/a",
            b(1, false),
            &[1],
            None,
            None,
        );
        assert!(matches!(s, Step::Reply(r) if r.code == Code::REQUEST_ENTITY_INCOMPLETE));
    }

    #[test]
    fn block2_honours_the_smaller_requested_size() {
        let body: Vec<u8> = (0..100).collect();
        let (opt, slice) = block2_slice(
            &body,
            Some(BlockOpt {
                num: 1,
                more: false,
                szx: 0,
            }),
            6,
        )
        .expect("ok")
        .expect("sliced");
        assert_eq!(
            opt,
            BlockOpt {
                num: 1,
                more: true,
                szx: 0
            }
        );
        assert_eq!(slice, 16..32);
        assert!(block2_slice(&body, None, 6).expect("ok").is_none());
        assert!(
            block2_slice(
                &body,
                Some(BlockOpt {
                    num: 7,
                    more: false,
                    szx: 0
                }),
                6
            )
            .is_err()
        );
    }
}
