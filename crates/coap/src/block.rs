//! Block-wise transfer (RFC 7959): Block1 reassembly of request bodies and Block2 slicing of
//! response bodies.
//!
//! Reassembly is bounded three ways: `max_body_bytes` per body (4.13 with Size1 beyond),
//! `max_open_transfers` at once (5.03 beyond), and `transfer_timeout` of idleness (the transfer is
//! dropped; a later block gets 4.08). Transfers are keyed by (peer, request URI), as RFC 7959 §2.4
//! ties the blocks of one body to the endpoint and the target resource, not to a token.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

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

    fn remove(&mut self, key: &(SocketAddr, String)) {
        if self.open.remove(key).is_some() {
            self.metrics.block_transfers_open.dec();
        }
    }

    /// Handles one Block1 request message for `uri` (path and query) from `peer`.
    #[allow(clippy::too_many_arguments)]
    pub fn on_block(
        &mut self,
        now: Instant,
        peer: SocketAddr,
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
            if !self.open.contains_key(&key) && self.open.len() >= self.limits.max_open_transfers {
                self.metrics.block_outcome("too_many_open");
                let mut r =
                    Response::diagnostic(Code::SERVICE_UNAVAILABLE, "too many block transfers");
                r.max_age = Some(self.limits.busy_max_age);
                return Step::Reply(r);
            }
            if !block.more {
                // A one-block body: no state needed.
                self.remove(&key);
                return Step::Complete {
                    body: payload.to_vec(),
                    block1: block,
                };
            }
            if self
                .open
                .insert(
                    key.clone(),
                    Transfer {
                        body: Vec::new(),
                        content_format,
                        last: now,
                    },
                )
                .is_none()
            {
                self.metrics.block_transfers_open.inc();
                self.expiry
                    .push_back((now + self.limits.transfer_timeout, key.clone()));
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
        let body = self.open.remove(&key).map(|t| t.body).unwrap_or_default();
        self.metrics.block_transfers_open.dec();
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

    fn b(num: u32, more: bool) -> BlockOpt {
        BlockOpt { num, more, szx: 0 }
    }

    #[test]
    fn blocks_in_order_reassemble_the_body() {
        let mut t = table(1024, 4);
        let now = Instant::now();
        let s = t.on_block(now, peer(), "/x", b(0, true), &[1; 16], None, Some(110));
        assert!(matches!(s, Step::Reply(r) if r.code == Code::CONTINUE));
        let s = t.on_block(now, peer(), "/x", b(1, false), &[2; 5], None, Some(110));
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
        t.on_block(now, peer(), "/x", b(0, true), &[1; 16], None, None);
        let s = t.on_block(now, peer(), "/x", b(2, true), &[1; 16], None, None);
        assert!(matches!(s, Step::Reply(r) if r.code == Code::REQUEST_ENTITY_INCOMPLETE));
    }

    #[test]
    fn body_over_the_limit_gets_413_with_size1() {
        let mut t = table(20, 4);
        let now = Instant::now();
        t.on_block(now, peer(), "/x", b(0, true), &[1; 16], None, None);
        let s = t.on_block(now, peer(), "/x", b(1, true), &[1; 16], None, None);
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
        t.on_block(now, peer(), "/a", b(0, true), &[1; 16], None, None);
        let s = t.on_block(now, peer(), "/b", b(0, true), &[1; 16], None, None);
        assert!(
            matches!(s, Step::Reply(r) if r.code == Code::SERVICE_UNAVAILABLE && r.max_age == Some(5))
        );
    }

    #[test]
    fn idle_transfer_expires() {
        let mut t = table(1024, 1);
        let now = Instant::now();
        t.on_block(now, peer(), "/a", b(0, true), &[1; 16], None, None);
        t.expire(now + Duration::from_secs(61));
        assert!(t.is_empty());
        let s = t.on_block(
            now + Duration::from_secs(61),
            peer(),
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
