//! The gateway's own requests (the client side of the message layer, Californium's exchange and
//! observe layers): tokens, NSTART with a bounded queue per peer, matching piggybacked and
//! separate responses to requests (RST for unmatched ones), timeouts, and observations: each
//! notification goes to its observer's sink, and a Confirmable one is ACKed only when the
//! application accepts it. The values exchanged (`ClientRequest`, `ClientResponse`,
//! `Notification`) are in `crate::exchange`.

use std::net::SocketAddr;

use rand::Rng;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::codec::{Message, MsgType, Token, encode_empty};
use crate::dedup::DedupKey;
use crate::error::CoapError;
use crate::exchange::{AckHandle, BlockOpts, ClientRequest, ClientResponse, Notification};

use super::inbound::KNOWN_REQUEST_CRITICAL;
use super::reliability::Owner;
use super::{MessageLayer, Timer, TimerKey, queue};

/// Critical options accepted in responses; others make the response rejected (§5.4.1). The
/// same set as for requests: the layer understands these options in either direction.
const KNOWN_RESPONSE_CRITICAL: &[u16] = KNOWN_REQUEST_CRITICAL;

/// Requests waiting for an NSTART slot per peer; beyond this [`CoapError::Busy`].
const MAX_QUEUED_PER_PEER: usize = 64;

/// Where a client exchange's result goes.
#[derive(Debug)]
pub(crate) enum Sink {
    Once(oneshot::Sender<Result<ClientResponse, CoapError>>),
    Observe(mpsc::Sender<Box<Notification>>),
}

#[derive(Debug)]
pub(super) struct Exchange {
    peer: SocketAddr,
    sink: Sink,
    /// The unacknowledged CON request's MID.
    mid: Option<u16>,
    /// Response-wait timer.
    timer: Option<TimerKey>,
    /// Sent within the address's budget until it is proven (`validation.rs`).
    validate: bool,
}

#[derive(Debug)]
pub(super) struct Queued {
    token: Token,
    bytes: Vec<u8>,
}

/// A Confirmable notification waiting for the application's ACK decision.
#[derive(Debug)]
pub(crate) struct AckWait {
    pub(crate) peer: SocketAddr,
    pub(crate) mid: u16,
    pub(crate) rx: oneshot::Receiver<bool>,
}

impl MessageLayer {
    pub(crate) fn take_ack_waits(&mut self) -> std::vec::Drain<'_, AckWait> {
        self.ack_waits.drain(..)
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
            if !must_queue && !self.may_send(peer, req.validate_address, bytes.len()) {
                return Err((CoapError::AddressUnproven(peer), sink));
            }
            self.exchanges.insert(
                token,
                Exchange {
                    peer,
                    sink,
                    mid: None,
                    timer: None,
                    validate: req.validate_address,
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
            if !self.may_send(peer, req.validate_address, bytes.len()) {
                return Err((CoapError::AddressUnproven(peer), sink));
            }
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
                    validate: req.validate_address,
                },
            );
        }
        Ok(token)
    }

    /// Whether a request of `len` bytes may go to `peer` now: always, unless it is to a learned
    /// address (`validate`) that is unproven and whose budget it would exceed (then counted as
    /// withheld). Counts the bytes against the budget when it may.
    pub(super) fn may_send(&mut self, peer: SocketAddr, validate: bool, len: usize) -> bool {
        if !validate {
            self.validation.sent(peer, len);
            return true;
        }
        if self.validation.allow(peer, len) {
            return true;
        }
        self.metrics.amplification("request_withheld");
        false
    }

    /// Whether request `token` is sent within its address's budget.
    pub(super) fn validated(&self, token: &Token) -> bool {
        self.exchanges.get(token).is_some_and(|ex| ex.validate)
    }

    /// Sends a Confirmable request whose bytes [`MessageLayer::may_send`] already allowed.
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

    pub(super) fn release_slot(&mut self, now: Instant, peer: SocketAddr) {
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
            if !self.exchanges.contains_key(&q.token) {
                continue;
            }
            let validate = self.validated(&q.token);
            if self.may_send(peer, validate, q.bytes.len()) {
                self.dispatch_con(now, peer, q.token, q.bytes);
            } else {
                self.fail_exchange(q.token, CoapError::AddressUnproven(peer));
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

    pub(super) fn fail_exchange(&mut self, token: Token, err: CoapError) {
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

    /// An ACK for request `token`: empty (the response comes separately) or piggybacked.
    pub(super) fn on_request_acked(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        token: Token,
        msg: &Message<'_>,
    ) {
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

    pub(super) fn on_separate_response(
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
            queue(&mut self.tx, &mut self.validation, peer, &self.scratch);
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
        // It carries our token, from the address we sent to: the peer receives there.
        self.validation.prove(now, peer);
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
                // Boxed: the channel's slots are then a pointer each (an observation's channel
                // holds 32 slots whatever its bound; at 10k observations that is 20 MB unboxed).
                let n = Box::new(Notification {
                    response: ClientResponse::from_message(msg),
                    ack: handle,
                });
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

    /// Request `token` got no (separate) response in time.
    pub(super) fn on_exchange_timeout(&mut self, token: Token) {
        if let Some(ex) = self.exchanges.get_mut(&token) {
            ex.timer = None;
            let peer = ex.peer;
            self.fail_exchange(token, CoapError::Timeout(peer));
        }
    }
}
