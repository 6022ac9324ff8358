//! The resource layer of a socket: dispatch by Uri-Path to registered [`Resource`]s, with the
//! block-wise layer (RFC 7959) below them and the answers every resource would otherwise repeat.
//!
//! In order, for each request the message layer hands up:
//! 0. the per-source rate limit (`[coap.rate_limit]`; a source is the proven identity, else the
//!    IPv4 address or IPv6 /64): over it a CON gets 5.03 with Max-Age (seconds until the
//!    source's bucket has a token again) and a NON nothing;
//! 1. Proxy-Uri/Proxy-Scheme → 5.05 (not a proxy); not accepting (shutdown) → 5.03 + Max-Age;
//! 2. routing: `/.well-known/core` is served from the registrations (RFC 6690, with `rt`, `if`,
//!    `ct`, `obs`, `title`); a path no registration covers → 4.04; a method it does not serve
//!    → 4.05;
//! 3. Block1 (RFC 7959 §2.5): blocks are reassembled here, bounded by `max_body_bytes` and the
//!    number of open transfers (4.13 with Size1, 4.08, 5.03 from [`Reassembly`]); a resource
//!    sees the whole body once, and its final response carries the last Block1 echoed;
//!    an oversized single-datagram body → 4.13 with Size1;
//! 4. the resource answers, now or later;
//! 5. Block2 (§2.4): a success response larger than the block size, or one the client asked in
//!    blocks, is sliced (Size2 on the first block). The whole response is kept for the
//!    client's later block requests (keyed by peer and request URI, bounded in count and age,
//!    at most `max_transfers_per_source` per source; a full cache drops the oldest response of
//!    the source holding the most):
//!    a client fetches the rest of a POST/PUT response by repeating the request with Block2
//!    (RFC 7959 §2.7, Figure 14), which must not run a non-idempotent resource again. A block
//!    request with nothing cached runs the resource (fine for GET).
//!
//! Every refusal here counts in `wardgate_coap_ingest_rejections_total{reason}` and logs at
//! debug.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use wardgate_core::{PeerContext, Rate, SourceKey, Take, TokenBuckets};

use crate::block::{self, Reassembly, Step};
use crate::codec::{BlockOpt, Code, Message, MsgType, opt};
pub use crate::layer::AMPLIFICATION_FACTOR;
use crate::layer::Response;
use crate::metrics::{CoapMetrics, IngestRejected, LogGate, RateLimited};
use crate::resource::{Deferred, Registration, Reply, Request, Resource};

/// Link-format Content-Format.
pub const LINK_FORMAT: u16 = 40;

/// Longest Uri-Path (segments) routed; longer paths are 4.04.
const MAX_SEGMENTS: usize = 16;

/// Settings of the resource layer.
#[derive(Debug, Clone, Copy)]
pub struct RouterSettings {
    /// Max-Age of 5.03 answers, seconds.
    pub busy_max_age: u32,
    /// Largest request body (single datagram or reassembled).
    pub max_body_bytes: usize,
    /// SZX of our Block2 responses.
    pub preferred_szx: u8,
    /// Most block-wise responses kept for one source.
    pub max_responses_per_source: usize,
    /// Requests per source (unlimited when its rate is 0).
    pub per_source: Rate,
}

/// Most block-wise responses kept for clients fetching their remaining blocks.
const BLOCK2_CACHE_ENTRIES: usize = 64;

/// Token buckets per socket for the per-source (and, in the readings resource, per-device)
/// rate limits: a fixed array, so spoofed sources cannot grow it (24 bytes each: 96 KiB).
pub const RATE_BUCKETS: usize = 4096;

/// How long a block-wise response is kept after it was made.
const BLOCK2_CACHE_TTL: Duration = Duration::from_secs(60);

/// Whole responses whose Block2 blocks clients are still fetching, oldest first.
#[derive(Debug)]
struct Block2Cache {
    entries: VecDeque<(Instant, SocketAddr, SourceKey, u64, Response)>,
    per_source: usize,
    metrics: CoapMetrics,
}

impl Block2Cache {
    fn new(per_source: usize, metrics: CoapMetrics) -> Self {
        Block2Cache {
            entries: VecDeque::new(),
            per_source: per_source.max(1),
            metrics,
        }
    }

    fn expire(&mut self, now: Instant) {
        while self.entries.front().is_some_and(|(t, ..)| *t <= now) {
            self.entries.pop_front();
            self.metrics.block2_cached.dec();
        }
    }

    fn get(&mut self, now: Instant, peer: SocketAddr, key: u64) -> Option<Response> {
        self.expire(now);
        self.entries
            .iter()
            .find(|(_, p, _, k, _)| *p == peer && *k == key)
            .map(|(.., r)| r.clone())
    }

    fn put(&mut self, now: Instant, peer: SocketAddr, source: SourceKey, key: u64, r: Response) {
        self.remove(peer, key);
        let held = |s: SourceKey, e: &VecDeque<(Instant, SocketAddr, SourceKey, u64, Response)>| {
            e.iter().filter(|(_, _, x, ..)| *x == s).count()
        };
        if held(source, &self.entries) >= self.per_source {
            // This source's oldest makes room: it cannot push out anybody else's.
            self.drop_oldest_of(source);
            self.metrics.eviction("block2", "source_share");
        } else if self.entries.len() >= BLOCK2_CACHE_ENTRIES {
            // The oldest response of the source holding the most (a scan of 64 entries).
            let most = self
                .entries
                .iter()
                .map(|(_, _, s, ..)| (held(*s, &self.entries), *s))
                .max_by_key(|(n, _)| *n)
                .map(|(_, s)| s);
            if let Some(s) = most {
                self.drop_oldest_of(s);
                self.metrics.eviction("block2", "table_full");
            }
        }
        self.entries
            .push_back((now + BLOCK2_CACHE_TTL, peer, source, key, r));
        self.metrics.block2_cached.inc();
    }

    fn drop_oldest_of(&mut self, source: SourceKey) {
        if let Some(i) = self.entries.iter().position(|(_, _, s, ..)| *s == source) {
            self.entries.remove(i);
            self.metrics.block2_cached.dec();
        }
    }

    fn remove(&mut self, peer: SocketAddr, key: u64) {
        let before = self.entries.len();
        self.entries
            .retain(|(_, p, _, k, _)| !(*p == peer && *k == key));
        self.metrics
            .block2_cached
            .dec_by((before - self.entries.len()) as i64);
    }
}

impl Drop for Block2Cache {
    fn drop(&mut self) {
        self.metrics.block2_cached.dec_by(self.entries.len() as i64);
    }
}

/// Who asked for what, and how much may be sent back: the peer and a hash of the request's
/// method, path and query (the block-wise response cache key; computed without allocating), and
/// the response budget of an unauthenticated peer.
#[derive(Debug, Clone, Copy)]
pub struct BlockKey {
    peer: SocketAddr,
    source: SourceKey,
    uri: u64,
    /// RFC 7252 §11.3: at most [`AMPLIFICATION_FACTOR`] × the request's bytes go back to a peer
    /// nothing authenticated (its address may be spoofed: we would be flooding a victim).
    /// `None` for an authenticated peer.
    budget: Option<usize>,
    token_len: usize,
}

impl BlockKey {
    fn of(peer: &PeerContext, source: SourceKey, msg: &Message<'_>, request_len: usize) -> Self {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        msg.code.hash(&mut h);
        for p in msg.values(opt::URI_PATH) {
            p.hash(&mut h);
        }
        0xffu8.hash(&mut h);
        for q in msg.values(opt::URI_QUERY) {
            q.hash(&mut h);
        }
        BlockKey {
            peer: peer.addr,
            source,
            uri: h.finish(),
            budget: peer
                .identity
                .is_none()
                .then(|| request_len.saturating_mul(AMPLIFICATION_FACTOR)),
            token_len: msg.token.as_bytes().len(),
        }
    }
}

/// An upper bound of `r`'s encoded size with a token of `token_len` bytes: the 4-byte header,
/// the token, each option at its longest header (1 + 2 extended delta + 2 extended length)
/// plus its value, and the payload marker.
fn encoded_upper_bound(r: &Response, token_len: usize) -> usize {
    let payload = if r.payload.is_empty() {
        0
    } else {
        1 + r.payload.len()
    };
    head_upper_bound(r, token_len, 0) + payload
}

/// [`encoded_upper_bound`] without the payload, with room for `extra_uints` more uint options.
fn head_upper_bound(r: &Response, token_len: usize, extra_uints: usize) -> usize {
    const UINT_OPTION: usize = 5 + 4;
    let uints = extra_uints
        + [
            r.observe.is_some(),
            r.content_format.is_some(),
            r.max_age.is_some(),
            r.block2.is_some(),
            r.block1.is_some(),
            r.size2.is_some(),
            r.size1.is_some(),
        ]
        .iter()
        .filter(|x| **x)
        .count();
    let location: usize = r.location.as_ref().map_or(0, |l| {
        l.split('/')
            .filter(|s| !s.is_empty())
            .map(|s| 5 + s.len())
            .sum()
    });
    4 + token_len + uints * UINT_OPTION + location
}

/// What the router makes of a request.
#[derive(Debug)]
pub enum Routed {
    /// Answer now.
    Now(Response),
    /// Answer when `fut` resolves, then pass the response through [`Router::finish`] with
    /// these block options.
    Later(Later),
    /// Send nothing (a Non-confirmable request over a rate limit, RFC 7252 §5.2.3). Never for a
    /// Confirmable request.
    Silent,
}

/// A deferred answer and the block options its final response needs.
pub struct Later {
    /// The resource's future.
    pub fut: Deferred,
    /// Block1 to echo (the last block of a reassembled body).
    pub block1: Option<BlockOpt>,
    /// Block2 the client asked for.
    pub block2: Option<BlockOpt>,
    /// Whose request it was, for the block-wise response cache.
    pub key: BlockKey,
}

impl std::fmt::Debug for Later {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Later")
            .field("block1", &self.block1)
            .field("block2", &self.block2)
            .finish_non_exhaustive()
    }
}

/// The resources of one socket.
#[derive(Debug)]
pub struct Router {
    s: RouterSettings,
    entries: Vec<(Registration, Box<dyn Resource>)>,
    well_known: Bytes,
    reassembly: Reassembly,
    block2_cache: Block2Cache,
    source_limit: TokenBuckets,
    source_log: LogGate,
    metrics: CoapMetrics,
    accepting: bool,
}

impl Router {
    /// A router with no resources yet (everything but `/.well-known/core` is 4.04).
    pub fn new(s: RouterSettings, reassembly: Reassembly, metrics: CoapMetrics) -> Self {
        Router {
            s,
            entries: Vec::new(),
            well_known: Bytes::new(),
            reassembly,
            block2_cache: Block2Cache::new(s.max_responses_per_source, metrics.clone()),
            source_limit: TokenBuckets::new(s.per_source, RATE_BUCKETS),
            source_log: LogGate::default(),
            metrics,
            accepting: true,
        }
    }

    /// Registers `resource` at `reg`'s path. A later registration of the same path replaces
    /// the earlier one.
    pub fn add(&mut self, reg: Registration, resource: Box<dyn Resource>) -> &mut Self {
        self.entries.retain(|(r, _)| r.path != reg.path);
        self.entries.push((reg, resource));
        // Longest path first, so the first match is the most specific.
        self.entries
            .sort_by_key(|(r, _)| std::cmp::Reverse(r.path.len()));
        let links: Vec<String> = self
            .entries
            .iter()
            .filter(|(r, _)| r.listed)
            .map(|(r, _)| r.link())
            .collect();
        self.well_known = Bytes::from(links.join(","));
        self
    }

    /// The `/.well-known/core` document.
    pub fn well_known(&self) -> &[u8] {
        &self.well_known
    }

    /// Largest accepted request body.
    pub fn max_body_bytes(&self) -> usize {
        self.s.max_body_bytes
    }

    /// From now on new requests get 5.03 (graceful shutdown).
    pub fn stop_accepting(&mut self) {
        self.accepting = false;
    }

    /// When idle block transfers next expire.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.reassembly.next_deadline()
    }

    /// Expires idle block transfers and block-wise responses nobody fetched.
    pub fn poll_timers(&mut self, now: Instant) {
        self.reassembly.expire(now);
        self.block2_cache.expire(now);
    }

    fn reject(&self, peer: &PeerContext, reason: &'static str, resp: Response) -> Routed {
        IngestRejected {
            peer: peer.addr,
            reason,
            detail: std::str::from_utf8(&resp.payload).unwrap_or(""),
        }
        .emit(&self.metrics);
        Routed::Now(resp)
    }

    fn busy(&self, text: &'static str) -> Response {
        let mut r = Response::diagnostic(Code::SERVICE_UNAVAILABLE, text);
        r.max_age = Some(self.s.busy_max_age);
        r
    }

    /// Handles one request the message layer handed over (`request_len`: its datagram's size,
    /// for the amplification limit).
    pub fn on_request(
        &mut self,
        now: Instant,
        peer: &PeerContext,
        msg: &Message<'_>,
        request_len: usize,
    ) -> Routed {
        let source = SourceKey::of(peer);
        if let Take::Limited { retry_after_secs } = self.source_limit.take(source, now) {
            RateLimited {
                peer: peer.addr,
                scope: "source",
                retry_after_secs,
            }
            .emit(&self.metrics, &mut self.source_log, now);
            if msg.mtype != MsgType::Con {
                return Routed::Silent;
            }
            let mut r = Response::diagnostic(Code::SERVICE_UNAVAILABLE, "rate limited");
            r.max_age = Some(retry_after_secs);
            let key = BlockKey::of(peer, source, msg, request_len);
            return Routed::Now(self.limit(r, key));
        }
        let key = BlockKey::of(peer, source, msg, request_len);
        match self.route(now, peer, msg, key) {
            Routed::Now(r) => Routed::Now(self.limit(r, key)),
            other => other,
        }
    }

    fn route(
        &mut self,
        now: Instant,
        peer: &PeerContext,
        msg: &Message<'_>,
        key: BlockKey,
    ) -> Routed {
        if msg.has_option(opt::PROXY_URI) || msg.has_option(opt::PROXY_SCHEME) {
            let r = Response::diagnostic(Code::PROXYING_NOT_SUPPORTED, "not a proxy");
            return self.reject(peer, "proxy", r);
        }
        if !self.accepting {
            return self.reject(peer, "shutting_down", self.busy("shutting down"));
        }
        let mut segs: [&[u8]; MAX_SEGMENTS] = [&[]; MAX_SEGMENTS];
        let mut n = 0;
        for s in msg.values(opt::URI_PATH) {
            if n == MAX_SEGMENTS {
                let r = Response::diagnostic(Code::NOT_FOUND, "no such resource");
                return self.reject(peer, "not_found", r);
            }
            segs[n] = s;
            n += 1;
        }
        let segs = &segs[..n];
        let block2 = match msg.block2() {
            None => None,
            Some(Ok(b)) => Some(b),
            Some(Err(_)) => {
                let r = Response::diagnostic(Code::BAD_OPTION, "malformed Block2");
                return self.reject(peer, "bad_option", r);
            }
        };
        if segs == [&b".well-known"[..], &b"core"[..]] {
            return self.well_known_get(peer, msg, block2, key);
        }
        let Some(idx) = self.entries.iter().position(|(r, _)| {
            segs.len() >= r.path.len()
                && segs.len() - r.path.len() <= r.max_depth
                && r.path.iter().zip(segs).all(|(a, b)| a.as_bytes() == *b)
        }) else {
            let r = Response::diagnostic(Code::NOT_FOUND, "no such resource");
            return self.reject(peer, "not_found", r);
        };
        if !self.entries[idx].0.methods.contains(&msg.code) {
            let r = Response::diagnostic(Code::METHOD_NOT_ALLOWED, "method not allowed here");
            return self.reject(peer, "method_not_allowed", r);
        }
        if let Some(b) = block2.filter(|b| b.num > 0 && msg.block1().is_none()) {
            if let Some(whole) = self.block2_cache.get(now, key.peer, key.uri) {
                return Routed::Now(self.finish(now, whole, None, Some(b), key));
            }
        }
        let (body, block1): (Cow<'_, [u8]>, Option<BlockOpt>) = match msg.block1() {
            Some(Err(_)) => {
                let r = Response::diagnostic(Code::BAD_OPTION, "malformed Block1");
                return self.reject(peer, "bad_option", r);
            }
            Some(Ok(b)) => {
                let uri = request_uri(msg);
                match self.reassembly.on_block(
                    now,
                    peer.addr,
                    key.source,
                    &uri,
                    b,
                    msg.payload,
                    msg.size1(),
                    msg.content_format(),
                ) {
                    Step::Reply(r) if r.code.is_success() => return Routed::Now(r),
                    Step::Reply(r) => return self.reject(peer, "block_transfer", r),
                    Step::Complete { body, block1 } => (body.into(), Some(block1)),
                }
            }
            None => {
                let max = self.s.max_body_bytes;
                if msg.size1().is_some_and(|s| s as usize > max) || msg.payload.len() > max {
                    let mut r =
                        Response::diagnostic(Code::REQUEST_ENTITY_TOO_LARGE, "body too large");
                    r.size1 = Some(u32::try_from(max).unwrap_or(u32::MAX));
                    return self.reject(peer, "too_large", r);
                }
                (msg.payload.into(), None)
            }
        };
        let (reg, resource) = &mut self.entries[idx];
        let req = Request {
            now,
            peer,
            msg,
            rest: &segs[reg.path.len()..],
            body: &body,
        };
        match resource.handle(&req) {
            Reply::Now(r) => Routed::Now(self.finish(now, r, block1, block2, key)),
            Reply::Later(fut) => Routed::Later(Later {
                fut,
                block1,
                block2,
                key,
            }),
            Reply::Silent => Routed::Silent,
        }
    }

    /// Completes a resource's response: echoes Block1, slices a large or block-requested
    /// success payload into the requested Block2 block, and keeps the whole response while the
    /// client has blocks left to fetch.
    pub fn finish(
        &mut self,
        now: Instant,
        mut r: Response,
        block1: Option<BlockOpt>,
        block2: Option<BlockOpt>,
        key: BlockKey,
    ) -> Response {
        if r.block1.is_none() {
            r.block1 = block1;
        }
        // Nothing to slice (every ingest answer): no block sizing on the hot path.
        if r.block2.is_some() || !r.code.is_success() || (r.payload.is_empty() && block2.is_none())
        {
            return self.limit(r, key);
        }
        let szx = self.szx_within(&r, key);
        match block::block2_slice(&r.payload, block2, szx) {
            Ok(None) => self.limit(r, key),
            Ok(Some((b, range))) => {
                if b.more {
                    self.block2_cache
                        .put(now, key.peer, key.source, key.uri, r.clone());
                } else {
                    self.block2_cache.remove(key.peer, key.uri);
                }
                r.size2 = Some(u32::try_from(r.payload.len()).unwrap_or(u32::MAX));
                r.block2 = Some(b);
                // `range` lies within the payload (block2_slice's contract); no copy.
                let end = range.end.min(r.payload.len());
                r.payload = r.payload.slice(range.start.min(end)..end);
                self.limit(r, key)
            }
            Err(e) => self.limit(e, key),
        }
    }

    /// The largest Block2 size (SZX) whose block, with `r`'s header, token and options, fits the
    /// asker's amplification budget (our preferred size when it has none).
    fn szx_within(&self, r: &Response, key: BlockKey) -> u8 {
        let Some(budget) = key.budget else {
            return self.s.preferred_szx;
        };
        // Room for the payload once the header, the options (plus the Block2 and Size2 the
        // slicing adds) and the payload marker are paid for. No copy of `r`: this runs for every
        // success answer to an unauthenticated peer.
        let extra = usize::from(r.block2.is_none()) + usize::from(r.size2.is_none());
        let room = budget.saturating_sub(head_upper_bound(r, key.token_len, extra) + 1);
        let mut szx = self.s.preferred_szx.min(6);
        while szx > 0 && (16usize << szx) > room {
            szx -= 1;
        }
        szx
    }

    /// Enforces the amplification budget on a finished response: a response still too large
    /// for an unauthenticated asker loses its payload (a diagnostic text is optional, RFC 7252
    /// §5.5.2; a block too small to fit is better not sent than sent to a spoofed address).
    fn limit(&self, mut r: Response, key: BlockKey) -> Response {
        if let Some(budget) = key.budget {
            if !r.payload.is_empty() && encoded_upper_bound(&r, key.token_len) > budget {
                tracing::debug!(peer = %key.peer, code = %r.code, "response payload withheld: over the unauthenticated amplification budget");
                self.metrics.amplification("payload_withheld");
                r.payload = Bytes::new();
            }
        }
        r
    }

    fn well_known_get(
        &self,
        peer: &PeerContext,
        msg: &Message<'_>,
        block2: Option<BlockOpt>,
        key: BlockKey,
    ) -> Routed {
        if msg.code != Code::GET {
            let r = Response::diagnostic(Code::METHOD_NOT_ALLOWED, "GET only");
            return self.reject(peer, "method_not_allowed", r);
        }
        if let Some(a) = msg.uint_option(opt::ACCEPT, 2) {
            if a != Ok(u32::from(LINK_FORMAT)) {
                let r = Response::diagnostic(Code::NOT_ACCEPTABLE, "only link-format (40)");
                return self.reject(peer, "not_acceptable", r);
            }
        }
        let mut r = Response::new(Code::CONTENT);
        r.content_format = Some(LINK_FORMAT);
        let szx = self.szx_within(&r, key);
        match block::block2_slice(&self.well_known, block2, szx) {
            Ok(None) => r.payload = self.well_known.clone(),
            Ok(Some((b, range))) => {
                r.block2 = Some(b);
                r.size2 = Some(u32::try_from(self.well_known.len()).unwrap_or(u32::MAX));
                // `range` lies within the document (block2_slice's contract); no copy.
                let end = range.end.min(self.well_known.len());
                r.payload = self.well_known.slice(range.start.min(end)..end);
            }
            Err(e) => return self.reject(peer, "bad_option", e),
        }
        Routed::Now(r)
    }
}

/// Path and query of a request, the key of its block-wise transfer.
fn request_uri(msg: &Message<'_>) -> String {
    let mut s = String::new();
    for p in msg.values(opt::URI_PATH) {
        s.push('/');
        s.push_str(&String::from_utf8_lossy(p));
    }
    let mut sep = '?';
    for q in msg.values(opt::URI_QUERY) {
        s.push(sep);
        sep = '&';
        s.push_str(&String::from_utf8_lossy(q));
    }
    s
}
