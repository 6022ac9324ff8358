//! The CoAP message layer (RFC 7252 §4): deduplication, piggybacked and separate responses,
//! retransmission of Confirmable messages, Message ID and token allocation, matching of ACK/RST
//! and responses to outgoing requests, NSTART.
//!
//! It is sans-I/O: datagrams and the current time go in ([`MessageLayer::handle_datagram`],
//! [`MessageLayer::poll_timers`]); datagrams to send come out in a [`TxQueue`], requests for the
//! application come out as [`Inbound::Request`]. One task per socket owns it, so there is no lock;
//! the task sleeps until [`MessageLayer::next_deadline`].
//!
//! Hot path: parsing borrows from the receive buffer; responses are encoded into one reusable
//! scratch buffer and queued in one reusable byte buffer. The allocations per request are the
//! dedup cache of a piggybacked response (the point of the cache) and hash map growth.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::codec::{self, BlockOpt, Code, Encoder, Message, MsgType, Token, encode_empty, opt};
use crate::config::{
    MAX_ACK_TIMEOUT, MAX_PIGGYBACK_BUDGET, MAX_RANDOM_FACTOR, MAX_RETRANSMIT_LIMIT,
    TransmissionConfig,
};
use crate::dedup::{DedupKey, DedupTable, DupAction, Seen};
use crate::error::CoapError;
use crate::exchange::{AckHandle, BlockOpts, ClientRequest, ClientResponse, Notification};
use crate::metrics::{CoapMetrics, MalformedMessage, TransmissionGaveUp};

/// Critical options the endpoint processes in requests; any other critical option in a
/// Confirmable request is answered 4.02 (RFC 7252 §5.4.1). Proxy-Uri/-Scheme are recognized so
/// they can be answered 5.05.
pub const KNOWN_REQUEST_CRITICAL: &[u16] = &[
    opt::URI_HOST,
    opt::URI_PORT,
    opt::URI_PATH,
    opt::URI_QUERY,
    opt::ACCEPT,
    opt::BLOCK2,
    opt::BLOCK1,
    opt::PROXY_URI,
    opt::PROXY_SCHEME,
];

/// Critical options accepted in responses; others make the response rejected (§5.4.1). The
/// same set as for requests: the layer understands these options in either direction.
const KNOWN_RESPONSE_CRITICAL: &[u16] = KNOWN_REQUEST_CRITICAL;

/// Requests waiting for an NSTART slot per peer; beyond this [`CoapError::Busy`].
const MAX_QUEUED_PER_PEER: usize = 64;

/// Derived RFC 7252 §4.8.2 times.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    /// ACK_TIMEOUT.
    pub ack_timeout: Duration,
    /// ACK_RANDOM_FACTOR.
    pub ack_random_factor: f64,
    /// MAX_RETRANSMIT.
    pub max_retransmit: u32,
    /// MAX_TRANSMIT_WAIT.
    pub max_transmit_wait: Duration,
    /// EXCHANGE_LIFETIME.
    pub exchange_lifetime: Duration,
    /// NON_LIFETIME.
    pub non_lifetime: Duration,
}

impl Timing {
    /// The derived times for `t` (MAX_LATENCY 100 s, PROCESSING_DELAY = ACK_TIMEOUT). Values
    /// outside the validated ranges are clamped so no timer arithmetic can overflow.
    pub fn new(t: &TransmissionConfig) -> Timing {
        let factor = if t.ack_random_factor.is_finite() {
            t.ack_random_factor.clamp(1.0, MAX_RANDOM_FACTOR)
        } else {
            1.5
        };
        let retr = t.max_retransmit.min(MAX_RETRANSMIT_LIMIT);
        let ack_timeout = t
            .ack_timeout
            .clamp(Duration::from_millis(1), MAX_ACK_TIMEOUT);
        let ack = ack_timeout.as_secs_f64();
        let span = ack * f64::from((1u32 << retr) - 1) * factor;
        let wait = ack * f64::from((1u32 << (retr + 1)) - 1) * factor;
        let max_latency = 100.0;
        Timing {
            ack_timeout,
            ack_random_factor: factor,
            max_retransmit: retr,
            max_transmit_wait: Duration::from_secs_f64(wait),
            exchange_lifetime: Duration::from_secs_f64(span + 2.0 * max_latency + ack),
            non_lifetime: Duration::from_secs_f64(span + max_latency),
        }
    }
}

/// Message-layer settings.
#[derive(Debug, Clone, Copy)]
pub struct LayerConfig {
    /// Transmission parameters.
    pub transmission: TransmissionConfig,
    /// How long a Confirmable request may wait for its response before an empty ACK is sent.
    pub piggyback_budget: Duration,
    /// Bound of the deduplication table.
    pub dedup_max_entries: usize,
}

/// Datagrams to send, in one reusable buffer.
#[derive(Debug, Default)]
pub struct TxQueue {
    buf: Vec<u8>,
    items: Vec<(SocketAddr, usize, usize)>,
}

impl TxQueue {
    fn push(&mut self, peer: SocketAddr, bytes: &[u8]) {
        let start = self.buf.len();
        self.buf.extend_from_slice(bytes);
        self.items.push((peer, start, self.buf.len()));
    }

    /// Datagrams queued.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Nothing queued.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The queued datagrams, in order.
    pub fn iter(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> {
        self.items
            .iter()
            .map(|(p, s, e)| (*p, self.buf.get(*s..*e).unwrap_or_default()))
    }

    /// Forgets the queued datagrams, keeping the capacity.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.items.clear();
    }
}

/// Identifies a request handed to the application until it is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestId(u64);

/// A new request for the application.
#[derive(Debug, Clone, Copy)]
pub struct InboundRequest<'a> {
    /// Answer with [`MessageLayer::respond`].
    pub id: RequestId,
    /// Sender.
    pub peer: SocketAddr,
    /// The request.
    pub msg: Message<'a>,
}

/// What a datagram means for the application.
#[derive(Debug)]
pub enum Inbound<'a> {
    /// Nothing (handled in the layer: ACK, RST, duplicate, response, malformed).
    Nothing,
    /// A new request.
    Request(InboundRequest<'a>),
}

/// A response for [`MessageLayer::respond`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Response {
    /// Code.
    pub code: Code,
    /// Observe.
    pub observe: Option<u32>,
    /// Location-Path segments joined with `/`.
    pub location: Option<String>,
    /// Content-Format.
    pub content_format: Option<u16>,
    /// Max-Age in seconds.
    pub max_age: Option<u32>,
    /// Block2.
    pub block2: Option<BlockOpt>,
    /// Block1.
    pub block1: Option<BlockOpt>,
    /// Size2.
    pub size2: Option<u32>,
    /// Size1.
    pub size1: Option<u32>,
    /// Payload (a diagnostic text for errors). `Bytes` so static texts and slices of shared
    /// documents need no allocation.
    pub payload: Bytes,
}

impl Response {
    /// A response with `code` and nothing else.
    pub fn new(code: Code) -> Self {
        Response {
            code,
            ..Response::default()
        }
    }

    /// With a diagnostic payload (RFC 7252 §5.5.2).
    pub fn diagnostic(code: Code, text: impl Into<Cow<'static, str>>) -> Self {
        let payload = match text.into() {
            Cow::Borrowed(s) => Bytes::from_static(s.as_bytes()),
            Cow::Owned(s) => Bytes::from(s),
        };
        Response {
            code,
            payload,
            ..Response::default()
        }
    }

    fn encode(
        &self,
        buf: &mut Vec<u8>,
        mtype: MsgType,
        mid: u16,
        token: Token,
    ) -> Result<(), codec::EncodeError> {
        let mut e = Encoder::new(buf, mtype, self.code, mid, token);
        if let Some(o) = self.observe {
            e.uint_option(opt::OBSERVE, o)?;
        }
        if let Some(loc) = &self.location {
            for seg in loc.split('/').filter(|s| !s.is_empty()) {
                e.option(opt::LOCATION_PATH, seg.as_bytes())?;
            }
        }
        if let Some(cf) = self.content_format {
            e.uint_option(opt::CONTENT_FORMAT, u32::from(cf))?;
        }
        if let Some(m) = self.max_age {
            e.uint_option(opt::MAX_AGE, m)?;
        }
        if let Some(b) = self.block2 {
            e.uint_option(opt::BLOCK2, b.value())?;
        }
        if let Some(b) = self.block1 {
            e.uint_option(opt::BLOCK1, b.value())?;
        }
        if let Some(s) = self.size2 {
            e.uint_option(opt::SIZE2, s)?;
        }
        if let Some(s) = self.size1 {
            e.uint_option(opt::SIZE1, s)?;
        }
        e.payload(&self.payload);
        Ok(())
    }
}

#[derive(Debug)]
struct InboundExchange {
    peer: SocketAddr,
    mid: u16,
    token: Token,
    con: bool,
    acked: bool,
    /// Cache the response for duplicates (false for safe methods, which are re-processed).
    cache: bool,
}

/// Where a client exchange's result goes.
#[derive(Debug)]
pub(crate) enum Sink {
    Once(oneshot::Sender<Result<ClientResponse, CoapError>>),
    Observe(mpsc::Sender<Notification>),
}

#[derive(Debug)]
struct Exchange {
    peer: SocketAddr,
    sink: Sink,
    /// The unacknowledged CON request's MID.
    mid: Option<u16>,
    /// Response-wait timer.
    timer: Option<TimerKey>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    Request(Token),
    SeparateResponse,
}

#[derive(Debug)]
struct Outgoing {
    bytes: Box<[u8]>,
    retransmissions: u32,
    timeout: Duration,
    timer: TimerKey,
    owner: Owner,
}

type TimerKey = (Instant, u64);

#[derive(Debug, Clone, Copy)]
enum Timer {
    Retransmit(SocketAddr, u16),
    ExchangeTimeout(Token),
}

#[derive(Debug)]
struct Queued {
    token: Token,
    bytes: Vec<u8>,
}

#[derive(Debug)]
struct PeerState {
    next_mid: u16,
    outstanding: u32,
    queue: VecDeque<Queued>,
    last_used: Instant,
}

/// A Confirmable notification waiting for the application's ACK decision.
#[derive(Debug)]
pub(crate) struct AckWait {
    pub(crate) peer: SocketAddr,
    pub(crate) mid: u16,
    pub(crate) rx: oneshot::Receiver<bool>,
}

/// The message layer of one socket. See the module documentation.
#[derive(Debug)]
pub struct MessageLayer {
    timing: Timing,
    nstart: u32,
    budget: Duration,
    max_peers: usize,
    dedup: DedupTable,
    dedup_reported: (usize, u64),
    metrics: CoapMetrics,
    next_request: u64,
    inbound: HashMap<u64, InboundExchange>,
    budget_queue: VecDeque<(Instant, u64)>,
    outgoing: HashMap<(SocketAddr, u16), Outgoing>,
    exchanges: HashMap<Token, Exchange>,
    timers: BTreeMap<TimerKey, Timer>,
    timer_seq: u64,
    peers: HashMap<SocketAddr, PeerState>,
    peer_sweep: VecDeque<(Instant, SocketAddr)>,
    rng: StdRng,
    scratch: Vec<u8>,
    tx: TxQueue,
    ack_waits: Vec<AckWait>,
}

impl MessageLayer {
    /// A layer with empty state.
    pub fn new(now: Instant, cfg: LayerConfig, metrics: CoapMetrics) -> Self {
        let timing = Timing::new(&cfg.transmission);
        MessageLayer {
            timing,
            nstart: cfg.transmission.nstart.max(1),
            budget: cfg.piggyback_budget.min(MAX_PIGGYBACK_BUDGET),
            max_peers: cfg.dedup_max_entries.max(1),
            dedup: DedupTable::new(
                now,
                cfg.dedup_max_entries,
                timing.exchange_lifetime,
                timing.non_lifetime,
            ),
            dedup_reported: (0, 0),
            metrics,
            next_request: 0,
            inbound: HashMap::new(),
            budget_queue: VecDeque::new(),
            outgoing: HashMap::new(),
            exchanges: HashMap::new(),
            timers: BTreeMap::new(),
            timer_seq: 0,
            peers: HashMap::new(),
            peer_sweep: VecDeque::new(),
            rng: StdRng::from_os_rng(),
            scratch: Vec::with_capacity(1280),
            tx: TxQueue::default(),
            ack_waits: Vec::new(),
        }
    }

    /// The derived timing parameters.
    pub fn timing(&self) -> Timing {
        self.timing
    }

    /// Datagrams to send; the caller sends them and calls [`TxQueue::clear`].
    pub fn tx(&mut self) -> &mut TxQueue {
        &mut self.tx
    }

    /// Entries in the deduplication table.
    pub fn dedup_len(&self) -> usize {
        self.dedup.len()
    }

    /// Requests handed to the application and not answered yet.
    pub fn pending_requests(&self) -> usize {
        self.inbound.len()
    }

    /// Confirmable messages awaiting an ACK plus client exchanges awaiting a response
    /// (observations included).
    pub fn outstanding(&self) -> usize {
        self.outgoing.len() + self.exchanges.len()
    }

    pub(crate) fn take_ack_waits(&mut self) -> std::vec::Drain<'_, AckWait> {
        self.ack_waits.drain(..)
    }

    fn sync_dedup_metrics(&mut self) {
        let len = self.dedup.len();
        let ev = self.dedup.stats().evictions;
        let (last_len, last_ev) = self.dedup_reported;
        if len > last_len {
            self.metrics.dedup_entries.inc_by((len - last_len) as i64);
        } else if len < last_len {
            self.metrics.dedup_entries.dec_by((last_len - len) as i64);
        }
        if ev > last_ev {
            self.metrics.dedup_evictions.inc_by(ev - last_ev);
        }
        self.dedup_reported = (len, ev);
    }

    fn send_empty(&mut self, peer: SocketAddr, mtype: MsgType, mid: u16) {
        encode_empty(&mut self.scratch, mtype, mid);
        self.tx.push(peer, &self.scratch);
    }

    /// Handles one received datagram.
    pub fn handle_datagram<'a>(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        datagram: &'a [u8],
    ) -> Inbound<'a> {
        let r = self.handle_inner(now, peer, datagram);
        self.sync_dedup_metrics();
        r
    }

    fn handle_inner<'a>(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        datagram: &'a [u8],
    ) -> Inbound<'a> {
        let msg = match Message::parse(datagram) {
            Ok(m) => m,
            Err(e) => {
                MalformedMessage {
                    peer,
                    reason: e.kind.reason(),
                }
                .emit(&self.metrics);
                // RFC 7252 §4.2: a CON whose header could be read is rejected with RST;
                // everything else malformed is silently ignored (§4.3).
                if let Some(h) = e.header {
                    if h.mtype == MsgType::Con {
                        self.send_empty(peer, MsgType::Rst, h.mid);
                    }
                }
                return Inbound::Nothing;
            }
        };
        self.metrics.received(msg.mtype);
        match msg.mtype {
            MsgType::Ack => {
                self.on_ack(now, peer, &msg);
                Inbound::Nothing
            }
            MsgType::Rst => {
                self.on_rst(now, peer, msg.mid);
                Inbound::Nothing
            }
            MsgType::Con | MsgType::Non => {
                let con = msg.mtype == MsgType::Con;
                if msg.code.is_empty() {
                    // A CoAP ping (empty CON) is answered with RST; an empty NON is ignored.
                    if con {
                        self.send_empty(peer, MsgType::Rst, msg.mid);
                    }
                    return Inbound::Nothing;
                }
                let key = DedupKey::new(peer, msg.mid);
                match self.dedup.observe(now, key, con) {
                    Seen::New => {}
                    Seen::Duplicate(action) => {
                        self.metrics.dedup_hits.inc();
                        match action {
                            DupAction::Ignore => return Inbound::Nothing,
                            DupAction::EmptyAck => {
                                encode_empty(&mut self.scratch, MsgType::Ack, msg.mid);
                                self.tx.push(peer, &self.scratch);
                                return Inbound::Nothing;
                            }
                            DupAction::Resend(bytes) => {
                                self.tx.push(peer, bytes);
                                return Inbound::Nothing;
                            }
                            DupAction::Reprocess => {}
                        }
                    }
                }
                if msg.code.is_request() {
                    self.on_request(peer, msg, key)
                } else {
                    self.on_separate_response(now, peer, &msg, key);
                    Inbound::Nothing
                }
            }
        }
    }

    fn on_request<'a>(&mut self, peer: SocketAddr, msg: Message<'a>, key: DedupKey) -> Inbound<'a> {
        let con = msg.mtype == MsgType::Con;
        if let Some(n) = msg.unknown_critical(KNOWN_REQUEST_CRITICAL) {
            MalformedMessage {
                peer,
                reason: "unknown_critical_option",
            }
            .emit(&self.metrics);
            tracing::debug!(%peer, option = n, "unrecognized critical option");
            if con {
                let resp = Response::diagnostic(Code::BAD_OPTION, "unrecognized critical option");
                self.respond_now(peer, msg.mid, msg.token, &resp, key, true);
            }
            return Inbound::Nothing;
        }
        let id = self.next_request;
        self.next_request += 1;
        self.inbound.insert(
            id,
            InboundExchange {
                peer,
                mid: msg.mid,
                token: msg.token,
                con,
                acked: false,
                cache: !matches!(msg.code, Code::GET | Code::FETCH),
            },
        );
        Inbound::Request(InboundRequest {
            id: RequestId(id),
            peer,
            msg,
        })
    }

    /// Answers an oversized CON request 4.13 with Size1, deduplicated like any CON.
    pub(crate) fn reject_oversized(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        mid: u16,
        token: Token,
        size1: u32,
    ) {
        let key = DedupKey::new(peer, mid);
        match self.dedup.observe(now, key, true) {
            Seen::New | Seen::Duplicate(DupAction::Reprocess) => {}
            Seen::Duplicate(DupAction::Resend(bytes)) => {
                self.metrics.dedup_hits.inc();
                self.tx.push(peer, bytes);
                return;
            }
            Seen::Duplicate(_) => {
                self.metrics.dedup_hits.inc();
                return;
            }
        }
        let mut r = Response::diagnostic(Code::REQUEST_ENTITY_TOO_LARGE, "datagram too large");
        r.size1 = Some(size1);
        self.respond_now(peer, mid, token, &r, key, true);
        self.sync_dedup_metrics();
    }

    /// Sends a piggybacked response to a CON that was never handed to the application.
    fn respond_now(
        &mut self,
        peer: SocketAddr,
        mid: u16,
        token: Token,
        resp: &Response,
        key: DedupKey,
        cache: bool,
    ) {
        if self.encode_response(resp, MsgType::Ack, mid, token) {
            self.tx.push(peer, &self.scratch);
            if cache {
                self.dedup.set_response(key, &self.scratch);
            }
            self.metrics.response_sent(resp.code);
        }
    }

    fn encode_response(&mut self, resp: &Response, mtype: MsgType, mid: u16, token: Token) -> bool {
        if let Err(e) = resp.encode(&mut self.scratch, mtype, mid, token) {
            tracing::error!(error = %e, code = %resp.code, "cannot encode CoAP response; sending 5.00");
            let fallback = Response::new(Code::INTERNAL_SERVER_ERROR);
            return fallback
                .encode(&mut self.scratch, mtype, mid, token)
                .is_ok();
        }
        true
    }

    /// The application answers `id` later (it waits for the store): start its piggyback budget,
    /// after which an empty ACK is sent. Only deferred requests get a timer, so the timer queue is
    /// bounded by the pending commits, not by the request rate.
    pub fn defer(&mut self, now: Instant, id: RequestId) {
        if self
            .inbound
            .get(&id.0)
            .is_some_and(|ex| ex.con && !ex.acked)
        {
            self.budget_queue.push_back((now + self.budget, id.0));
        }
    }

    /// Answers request `id`: piggybacked in the ACK while the budget lasts, else as a separate
    /// Confirmable response (retransmitted until acknowledged), or as a NON to a NON request.
    /// Answering an unknown (already answered) id does nothing.
    pub fn respond(&mut self, now: Instant, id: RequestId, resp: &Response) {
        let Some(ex) = self.inbound.remove(&id.0) else {
            return;
        };
        let key = DedupKey::new(ex.peer, ex.mid);
        if ex.con && !ex.acked {
            if self.encode_response(resp, MsgType::Ack, ex.mid, ex.token) {
                self.tx.push(ex.peer, &self.scratch);
                if ex.cache {
                    self.dedup.set_response(key, &self.scratch);
                } else {
                    self.dedup.set_reprocess(key);
                }
            }
        } else if ex.con {
            let mid = self.alloc_mid(now, ex.peer);
            if self.encode_response(resp, MsgType::Con, mid, ex.token) {
                let bytes: Box<[u8]> = self.scratch.as_slice().into();
                self.tx.push(ex.peer, &bytes);
                self.start_retransmission(now, ex.peer, mid, bytes, Owner::SeparateResponse);
                self.metrics.separate_responses.inc();
            }
        } else {
            let mid = self.alloc_mid(now, ex.peer);
            if self.encode_response(resp, MsgType::Non, mid, ex.token) {
                self.tx.push(ex.peer, &self.scratch);
            }
            if !ex.cache {
                self.dedup.set_reprocess(key);
            }
        }
        self.metrics.response_sent(resp.code);
        self.sync_dedup_metrics();
    }

    fn schedule(&mut self, at: Instant, t: Timer) -> TimerKey {
        self.timer_seq += 1;
        let key = (at, self.timer_seq);
        self.timers.insert(key, t);
        key
    }

    fn initial_timeout(&mut self) -> Duration {
        let f = self.timing.ack_random_factor;
        let r = if f > 1.0 {
            self.rng.random_range(1.0..f)
        } else {
            1.0
        };
        self.timing.ack_timeout.mul_f64(r)
    }

    fn start_retransmission(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        mid: u16,
        bytes: Box<[u8]>,
        owner: Owner,
    ) {
        let timeout = self.initial_timeout();
        let timer = self.schedule(now + timeout, Timer::Retransmit(peer, mid));
        if let Some(old) = self.outgoing.insert(
            (peer, mid),
            Outgoing {
                bytes,
                retransmissions: 0,
                timeout,
                timer,
                owner,
            },
        ) {
            self.timers.remove(&old.timer);
        }
    }

    fn alloc_mid(&mut self, now: Instant, peer: SocketAddr) -> u16 {
        if !self.peers.contains_key(&peer) {
            if self.peers.len() >= self.max_peers {
                // Over the bound: a random MID without remembered state; a collision within
                // EXCHANGE_LIFETIME is then possible but unlikely (1 in 65536 per message).
                return self.rng.random();
            }
            let next_mid = self.rng.random();
            self.peers.insert(
                peer,
                PeerState {
                    next_mid,
                    outstanding: 0,
                    queue: VecDeque::new(),
                    last_used: now,
                },
            );
            self.peer_sweep
                .push_back((now + self.timing.exchange_lifetime, peer));
        }
        match self.peers.get_mut(&peer) {
            Some(st) => {
                let mid = st.next_mid;
                st.next_mid = st.next_mid.wrapping_add(1);
                st.last_used = now;
                mid
            }
            None => self.rng.random(),
        }
    }

    fn new_token(&mut self) -> Token {
        loop {
            let bytes: [u8; 8] = self.rng.random();
            let t = Token::new(&bytes).unwrap_or_default();
            if !self.exchanges.contains_key(&t) {
                return t;
            }
        }
    }

    /// Sends a request from this socket to `peer`; the result goes to `sink`.
    pub(crate) fn send_request(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        req: &ClientRequest,
        blocks: BlockOpts,
        sink: Sink,
    ) -> Result<Token, (CoapError, Sink)> {
        let token = match req.token {
            Some(t) => match self.exchanges.get(&t) {
                // Re-using an observation's token (cancel or re-register) replaces it.
                Some(ex) if ex.peer == peer && matches!(ex.sink, Sink::Observe(_)) => {
                    self.forget(now, &t);
                    t
                }
                Some(_) => return Err((CoapError::BadResponse("token in use"), sink)),
                None => t,
            },
            None => self.new_token(),
        };
        let mtype = if req.confirmable {
            MsgType::Con
        } else {
            MsgType::Non
        };
        let mut bytes = Vec::new();
        if let Err(e) = req.encode(&mut bytes, (mtype, 0, token), blocks, &req.payload) {
            return Err((e.into(), sink));
        }
        if req.confirmable {
            // NSTART: with the peer's allowance used up, the request waits in its queue.
            let must_queue = match self.peers.get(&peer) {
                Some(st) if st.outstanding >= self.nstart => {
                    if st.queue.len() >= MAX_QUEUED_PER_PEER {
                        return Err((CoapError::Busy(peer), sink));
                    }
                    true
                }
                _ => false,
            };
            self.exchanges.insert(
                token,
                Exchange {
                    peer,
                    sink,
                    mid: None,
                    timer: None,
                },
            );
            if must_queue {
                if let Some(st) = self.peers.get_mut(&peer) {
                    st.queue.push_back(Queued { token, bytes });
                }
                return Ok(token);
            }
            self.dispatch_con(now, peer, token, bytes);
        } else {
            let mid = self.alloc_mid(now, peer);
            if let Some(b) = bytes.get_mut(2..4) {
                b.copy_from_slice(&mid.to_be_bytes());
            }
            self.tx.push(peer, &bytes);
            let timer = self.schedule(
                now + self.timing.max_transmit_wait,
                Timer::ExchangeTimeout(token),
            );
            self.exchanges.insert(
                token,
                Exchange {
                    peer,
                    sink,
                    mid: None,
                    timer: Some(timer),
                },
            );
        }
        Ok(token)
    }

    fn dispatch_con(&mut self, now: Instant, peer: SocketAddr, token: Token, mut bytes: Vec<u8>) {
        let mid = self.alloc_mid(now, peer);
        if let Some(b) = bytes.get_mut(2..4) {
            b.copy_from_slice(&mid.to_be_bytes());
        }
        self.tx.push(peer, &bytes);
        if let Some(st) = self.peers.get_mut(&peer) {
            st.outstanding += 1;
        }
        if let Some(ex) = self.exchanges.get_mut(&token) {
            ex.mid = Some(mid);
        }
        self.start_retransmission(now, peer, mid, bytes.into(), Owner::Request(token));
    }

    fn release_slot(&mut self, now: Instant, peer: SocketAddr) {
        if let Some(st) = self.peers.get_mut(&peer) {
            st.outstanding = st.outstanding.saturating_sub(1);
        }
        self.pump_queue(now, peer);
    }

    /// Dispatches queued requests to `peer` while NSTART allows.
    fn pump_queue(&mut self, now: Instant, peer: SocketAddr) {
        loop {
            let next = match self.peers.get_mut(&peer) {
                Some(st) if st.outstanding < self.nstart => st.queue.pop_front(),
                _ => None,
            };
            let Some(q) = next else {
                return;
            };
            // Skipped when the exchange was cancelled while queued.
            if self.exchanges.contains_key(&q.token) {
                self.dispatch_con(now, peer, q.token, q.bytes);
            }
        }
    }

    /// Stops tracking observation/exchange `token`; later notifications for it are answered RST.
    pub(crate) fn forget(&mut self, now: Instant, token: &Token) {
        if let Some(ex) = self.exchanges.remove(token) {
            if let Some(t) = ex.timer {
                self.timers.remove(&t);
            }
            if let Some(mid) = ex.mid {
                if let Some(out) = self.outgoing.remove(&(ex.peer, mid)) {
                    self.timers.remove(&out.timer);
                    self.release_slot(now, ex.peer);
                }
            }
        }
    }

    fn fail_exchange(&mut self, token: Token, err: CoapError) {
        if let Some(ex) = self.exchanges.remove(&token) {
            if let Some(t) = ex.timer {
                self.timers.remove(&t);
            }
            // Dropping an observation sink ends the observer's stream.
            if let Sink::Once(tx) = ex.sink {
                let _ = tx.send(Err(err));
            }
        }
    }

    fn on_ack(&mut self, now: Instant, peer: SocketAddr, msg: &Message<'_>) {
        let Some(out) = self.outgoing.remove(&(peer, msg.mid)) else {
            return; // late or duplicate ACK
        };
        self.timers.remove(&out.timer);
        let Owner::Request(token) = out.owner else {
            return; // a separate response was acknowledged
        };
        self.release_slot(now, peer);
        if let Some(ex) = self.exchanges.get_mut(&token) {
            ex.mid = None;
        }
        if msg.code.is_empty() {
            // Empty ACK: the response comes separately.
            let at = now + self.timing.exchange_lifetime;
            if self.exchanges.contains_key(&token) {
                let timer = self.schedule(at, Timer::ExchangeTimeout(token));
                if let Some(ex) = self.exchanges.get_mut(&token) {
                    if let Some(old) = ex.timer.replace(timer) {
                        self.timers.remove(&old);
                    }
                }
            }
        } else if msg.token == token {
            self.deliver(now, peer, msg, None);
        } else {
            self.fail_exchange(
                token,
                CoapError::BadResponse("piggybacked response with another token"),
            );
        }
    }

    fn on_rst(&mut self, now: Instant, peer: SocketAddr, mid: u16) {
        let Some(out) = self.outgoing.remove(&(peer, mid)) else {
            return;
        };
        self.timers.remove(&out.timer);
        match out.owner {
            Owner::Request(token) => {
                self.release_slot(now, peer);
                self.fail_exchange(token, CoapError::Reset(peer));
            }
            Owner::SeparateResponse => {
                tracing::debug!(%peer, mid, "peer reset a separate response");
            }
        }
    }

    fn on_separate_response(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        msg: &Message<'_>,
        key: DedupKey,
    ) {
        let con = msg.mtype == MsgType::Con;
        let matched = self
            .exchanges
            .get(&msg.token)
            .is_some_and(|ex| ex.peer == peer);
        if !matched {
            // RST tells the sender to stop (e.g. notifications of an observation we forgot).
            self.metrics.unmatched_responses.inc();
            encode_empty(&mut self.scratch, MsgType::Rst, msg.mid);
            self.tx.push(peer, &self.scratch);
            if con {
                self.dedup.set_response(key, &self.scratch);
            }
            return;
        }
        // A separate response also acknowledges a request whose ACK was lost.
        if let Some(mid) = self.exchanges.get(&msg.token).and_then(|e| e.mid) {
            if let Some(out) = self.outgoing.remove(&(peer, mid)) {
                self.timers.remove(&out.timer);
                self.release_slot(now, peer);
            }
            if let Some(ex) = self.exchanges.get_mut(&msg.token) {
                ex.mid = None;
            }
        }
        let ack = if con { Some((msg.mid, key)) } else { None };
        self.deliver(now, peer, msg, ack);
    }

    /// Hands a response to its exchange. `ack` is the (MID, dedup key) of a CON response that
    /// needs an ACK (sent here for plain requests, after the application's decision for
    /// observations).
    fn deliver(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        msg: &Message<'_>,
        ack: Option<(u16, DedupKey)>,
    ) {
        let token = msg.token;
        if msg.unknown_critical(KNOWN_RESPONSE_CRITICAL).is_some() {
            if let Some((mid, key)) = ack {
                self.send_empty(peer, MsgType::Rst, mid);
                self.dedup.set_response(key, &self.scratch);
            }
            self.fail_exchange(
                token,
                CoapError::BadResponse("unrecognized critical option"),
            );
            return;
        }
        let observe_closed = match self.exchanges.get(&token).map(|ex| &ex.sink) {
            None => return,
            Some(Sink::Once(_)) => None,
            Some(Sink::Observe(tx)) => Some(tx.is_closed()),
        };
        match observe_closed {
            None => {
                if let Some((mid, key)) = ack {
                    self.send_empty(peer, MsgType::Ack, mid);
                    self.dedup.set_acked(key);
                }
                if let Some(ex) = self.exchanges.remove(&token) {
                    if let Some(t) = ex.timer {
                        self.timers.remove(&t);
                    }
                    if let Sink::Once(tx) = ex.sink {
                        let _ = tx.send(Ok(ClientResponse::from_message(msg)));
                    }
                }
            }
            Some(true) => {
                // Nobody observes any more: reject so the server drops the observation.
                if let Some((mid, key)) = ack {
                    self.send_empty(peer, MsgType::Rst, mid);
                    self.dedup.set_response(key, &self.scratch);
                }
                self.forget(now, &token);
            }
            Some(false) => {
                let keep = msg.code.is_success() && msg.observe().is_some();
                let handle = ack.map(|(mid, _)| {
                    let (tx, rx) = oneshot::channel();
                    self.ack_waits.push(AckWait { peer, mid, rx });
                    AckHandle(tx)
                });
                let n = Notification {
                    response: ClientResponse::from_message(msg),
                    ack: handle,
                };
                if let Some(ex) = self.exchanges.get_mut(&token) {
                    if let Sink::Observe(tx) = &ex.sink {
                        if tx.try_send(n).is_err() {
                            // Observer is behind: no ACK (the handle was dropped with the
                            // notification), so the server retransmits or sends newer state.
                            self.metrics.observe_notification("dropped_backlog");
                        }
                    }
                    if keep {
                        if let Some(t) = ex.timer.take() {
                            self.timers.remove(&t);
                        }
                    }
                }
                if !keep {
                    self.forget(now, &token);
                }
            }
        }
    }

    /// The application decided about a Confirmable notification's ACK.
    pub(crate) fn ack_decision(&mut self, peer: SocketAddr, mid: u16, accepted: bool) {
        let key = DedupKey::new(peer, mid);
        if accepted {
            self.send_empty(peer, MsgType::Ack, mid);
            self.dedup.set_acked(key);
        } else {
            self.dedup.set_reprocess(key);
        }
    }

    /// When [`MessageLayer::poll_timers`] next has work.
    pub fn next_deadline(&self) -> Option<Instant> {
        let mut d: Option<Instant> = None;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                d = Some(d.map_or(t, |d| d.min(t)));
            }
        };
        consider(self.budget_queue.front().map(|(t, _)| *t));
        consider(self.timers.keys().next().map(|(t, _)| *t));
        // Expiry of dedup entries and idle peers is not urgent: batch it per second.
        consider(
            self.dedup
                .next_expiry()
                .map(|t| t + Duration::from_millis(1000)),
        );
        consider(
            self.peer_sweep
                .front()
                .map(|(t, _)| *t + Duration::from_millis(1000)),
        );
        d
    }

    /// Runs every timer due at `now`: empty ACKs when the piggyback budget is over,
    /// retransmissions, give-ups, response timeouts, expiry.
    pub fn poll_timers(&mut self, now: Instant) {
        while let Some(&(t, id)) = self.budget_queue.front() {
            if t > now {
                break;
            }
            self.budget_queue.pop_front();
            if let Some(ex) = self.inbound.get_mut(&id) {
                if ex.con && !ex.acked {
                    ex.acked = true;
                    let (peer, mid) = (ex.peer, ex.mid);
                    self.send_empty(peer, MsgType::Ack, mid);
                    self.dedup.set_acked(DedupKey::new(peer, mid));
                }
            }
        }
        while let Some((&key, &timer)) = self.timers.first_key_value() {
            if key.0 > now {
                break;
            }
            self.timers.remove(&key);
            match timer {
                Timer::Retransmit(peer, mid) => self.on_retransmit_timer(now, peer, mid),
                Timer::ExchangeTimeout(token) => {
                    if let Some(ex) = self.exchanges.get_mut(&token) {
                        ex.timer = None;
                        let peer = ex.peer;
                        self.fail_exchange(token, CoapError::Timeout(peer));
                    }
                }
            }
        }
        self.dedup.expire(now);
        while let Some(&(t, peer)) = self.peer_sweep.front() {
            if t > now {
                break;
            }
            self.peer_sweep.pop_front();
            let Some(st) = self.peers.get(&peer) else {
                continue;
            };
            let idle_until = st.last_used + self.timing.exchange_lifetime;
            if idle_until <= now && st.outstanding == 0 && st.queue.is_empty() {
                self.peers.remove(&peer);
            } else {
                self.peer_sweep
                    .push_back((idle_until.max(now + Duration::from_secs(1)), peer));
            }
        }
        self.sync_dedup_metrics();
    }

    fn on_retransmit_timer(&mut self, now: Instant, peer: SocketAddr, mid: u16) {
        let max = self.timing.max_retransmit;
        let Some(out) = self.outgoing.get_mut(&(peer, mid)) else {
            return;
        };
        if out.retransmissions < max {
            out.retransmissions += 1;
            out.timeout *= 2;
            let at = now + out.timeout;
            self.tx.push(peer, &out.bytes);
            self.metrics.retransmissions.inc();
            let timer = self.schedule(at, Timer::Retransmit(peer, mid));
            if let Some(out) = self.outgoing.get_mut(&(peer, mid)) {
                out.timer = timer;
            }
            return;
        }
        let Some(out) = self.outgoing.remove(&(peer, mid)) else {
            return;
        };
        match out.owner {
            Owner::Request(token) => {
                TransmissionGaveUp {
                    peer,
                    mid,
                    what: "request",
                }
                .emit(&self.metrics);
                self.release_slot(now, peer);
                self.fail_exchange(token, CoapError::Timeout(peer));
            }
            Owner::SeparateResponse => TransmissionGaveUp {
                peer,
                mid,
                what: "separate response",
            }
            .emit(&self.metrics),
        }
    }
}

impl Drop for MessageLayer {
    fn drop(&mut self) {
        let (len, _) = self.dedup_reported;
        self.metrics.dedup_entries.dec_by(len as i64);
    }
}
