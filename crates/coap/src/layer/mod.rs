//! The CoAP message layer (RFC 7252 §4) of one socket, for the gateway as a server and as a
//! client: [`MessageLayer`] is its facade, and each concern has its own file:
//!
//! - this file: datagrams in (parse, RST or silence for malformed ones, pings, the dedup lookup by
//!   (peer, Message ID)), dispatch by message type, the one timer queue, the transmit queue;
//! - `inbound.rs`: requests from peers, handed to the application and answered piggybacked in the
//!   ACK, as a separate CON response once the piggyback budget is over, or as a NON;
//! - `reliability.rs`: the RFC 7252 §4.8.2 times, Message IDs per peer, retransmission of the
//!   gateway's own Confirmable messages and what ACK, RST or giving up means for them;
//! - `exchange.rs`: the gateway's own requests: tokens, NSTART queueing per peer, matching
//!   responses (piggybacked or separate) to requests, observation sinks and the application's
//!   ACK decisions for Confirmable notifications;
//! - `response.rs`: [`Response`] and its encoding;
//! - `validation.rs`: what may go to an address that has not proven it receives there (the
//!   anti-amplification budget of the gateway's own requests to learned addresses).
//!
//! It is sans-I/O: datagrams and the current time go in ([`MessageLayer::handle_datagram`],
//! [`MessageLayer::poll_timers`]); datagrams to send come out in a [`TxQueue`], requests for the
//! application come out as [`Inbound::Request`]. One task per socket owns it, so there is no lock;
//! the task sleeps until [`MessageLayer::next_deadline`]. The state of every concern lives in the
//! one [`MessageLayer`] struct (no indirection and no hand-off between layers on the hot path); the
//! files split its code, not its ownership.
//!
//! Hot path: parsing borrows from the receive buffer; responses are encoded into one reusable
//! scratch buffer and queued in one reusable byte buffer. The allocations per request are the
//! dedup cache of a piggybacked response (the point of the cache) and hash map growth.

mod exchange;
mod inbound;
mod reliability;
mod response;
mod validation;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::time::Instant;

use crate::codec::{Message, MsgType, Token, encode_empty};
use crate::config::{MAX_PIGGYBACK_BUDGET, TransmissionConfig};
use crate::dedup::{DedupKey, DedupTable, DupAction, Seen};
use crate::metrics::{CoapMetrics, MalformedMessage};

use exchange::Exchange;
pub(crate) use exchange::{AckWait, Sink};
use inbound::InboundExchange;
pub use inbound::KNOWN_REQUEST_CRITICAL;
pub use reliability::Timing;
use reliability::{Outgoing, PeerState};
pub use response::Response;
use validation::Validation;

/// Message-layer settings.
#[derive(Debug, Clone, Copy)]
pub struct LayerConfig {
    /// Transmission parameters.
    pub transmission: TransmissionConfig,
    /// How long a Confirmable request may wait for its response before an empty ACK is sent.
    pub piggyback_budget: Duration,
    /// Bound of the deduplication table.
    pub dedup_max_entries: usize,
    /// Most deduplication entries of one source (IPv4 address or IPv6 /64).
    pub dedup_max_entries_per_source: usize,
}

/// How many times its request's size an unauthenticated peer may receive (RFC 7252 §11.3): its
/// address may be spoofed, and we would be flooding whoever owns it.
pub const AMPLIFICATION_FACTOR: usize = 3;

/// Datagrams to send, in one reusable buffer.
#[derive(Debug, Default)]
pub struct TxQueue {
    buf: Vec<u8>,
    items: Vec<(SocketAddr, usize, usize)>,
}

/// Queues `bytes` for `peer`; an answer, ACK or RST counts against an unproven address's
/// budget (`validation.rs`). A function of the two fields, so callers can pass the scratch buffer.
fn queue(tx: &mut TxQueue, validation: &mut Validation, peer: SocketAddr, bytes: &[u8]) {
    validation.sent(peer, bytes.len());
    tx.push(peer, bytes);
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

type TimerKey = (Instant, u64);

#[derive(Debug, Clone, Copy)]
enum Timer {
    Retransmit(SocketAddr, u16),
    ExchangeTimeout(Token),
}

/// The message layer of one socket. See the module documentation.
#[derive(Debug)]
pub struct MessageLayer {
    // Who uses what: `inbound.rs` next_request, inbound, budget_queue; `reliability.rs`
    // outgoing, the MIDs in peers, peer_sweep; `exchange.rs` exchanges, ack_waits, the NSTART
    // counters and queues in peers; every file the dedup table, timers, scratch and tx.
    timing: Timing,
    nstart: u32,
    budget: Duration,
    max_peers: usize,
    dedup: DedupTable,
    dedup_reported: (usize, u64, u64),
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
    validation: Validation,
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
            )
            .with_source_share(cfg.dedup_max_entries_per_source),
            dedup_reported: (0, 0, 0),
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
            validation: Validation::new(cfg.dedup_max_entries, timing.exchange_lifetime),
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

    fn sync_dedup_metrics(&mut self) {
        let len = self.dedup.len();
        let stats = self.dedup.stats();
        let (ev, over) = (stats.evictions, stats.over_share);
        let (last_len, last_ev, last_over) = self.dedup_reported;
        if len > last_len {
            self.metrics.dedup_entries.inc_by((len - last_len) as i64);
        } else if len < last_len {
            self.metrics.dedup_entries.dec_by((last_len - len) as i64);
        }
        if ev > last_ev {
            self.metrics.dedup_evictions.inc_by(ev - last_ev);
        }
        if over > last_over {
            self.metrics.dedup_over_share.inc_by(over - last_over);
        }
        self.dedup_reported = (len, ev, over);
    }

    fn send_empty(&mut self, peer: SocketAddr, mtype: MsgType, mid: u16) {
        encode_empty(&mut self.scratch, mtype, mid);
        queue(&mut self.tx, &mut self.validation, peer, &self.scratch);
    }

    /// Handles one received datagram from a peer nothing authenticated.
    pub fn handle_datagram<'a>(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        datagram: &'a [u8],
    ) -> Inbound<'a> {
        self.handle_datagram_as(now, peer, datagram, false)
    }

    /// Handles one received datagram; `authenticated` when the transport proved the peer's
    /// identity. To anybody else the layer's own answers (RST, empty ACK, 4.02, a duplicate's
    /// cached response) are never more than [`AMPLIFICATION_FACTOR`] × the datagram's bytes.
    pub fn handle_datagram_as<'a>(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        datagram: &'a [u8],
        authenticated: bool,
    ) -> Inbound<'a> {
        let budget = (!authenticated).then(|| datagram.len().saturating_mul(AMPLIFICATION_FACTOR));
        self.validation
            .received(now, peer, datagram.len(), authenticated);
        let r = self.handle_inner(now, peer, datagram, budget);
        self.sync_dedup_metrics();
        r
    }

    fn handle_inner<'a>(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        datagram: &'a [u8],
        budget: Option<usize>,
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
                                queue(&mut self.tx, &mut self.validation, peer, &self.scratch);
                                return Inbound::Nothing;
                            }
                            DupAction::Resend(bytes) => {
                                // The first copy's answer fitted the first copy's size; a
                                // smaller "duplicate" (same Message ID, spoofed) gets nothing.
                                if budget.is_some_and(|b| bytes.len() > b) {
                                    self.metrics.amplification("duplicate_not_resent");
                                } else {
                                    queue(&mut self.tx, &mut self.validation, peer, bytes);
                                }
                                return Inbound::Nothing;
                            }
                            DupAction::Reprocess => {}
                        }
                    }
                }
                if msg.code.is_request() {
                    self.on_request(peer, msg, key, budget)
                } else {
                    self.on_separate_response(now, peer, &msg, key);
                    Inbound::Nothing
                }
            }
        }
    }

    fn schedule(&mut self, at: Instant, t: Timer) -> TimerKey {
        self.timer_seq += 1;
        let key = (at, self.timer_seq);
        self.timers.insert(key, t);
        key
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
        consider(
            self.validation
                .next_expiry()
                .map(|t| t + Duration::from_millis(1000)),
        );
        d
    }

    /// Runs every timer due at `now`: empty ACKs when the piggyback budget is over,
    /// retransmissions, give-ups, response timeouts, expiry.
    pub fn poll_timers(&mut self, now: Instant) {
        self.expire_budgets(now);
        while let Some((&key, &timer)) = self.timers.first_key_value() {
            if key.0 > now {
                break;
            }
            self.timers.remove(&key);
            match timer {
                Timer::Retransmit(peer, mid) => self.on_retransmit_timer(now, peer, mid),
                Timer::ExchangeTimeout(token) => self.on_exchange_timeout(token),
            }
        }
        self.dedup.expire(now);
        self.sweep_peers(now);
        self.validation.expire(now);
        self.sync_dedup_metrics();
    }
}

impl Drop for MessageLayer {
    fn drop(&mut self) {
        let (len, ..) = self.dedup_reported;
        self.metrics.dedup_entries.dec_by(len as i64);
    }
}
