//! Reliability of the gateway's own Confirmable messages (RFC 7252 §4.2, §4.8): the derived
//! times, Message IDs per peer (and forgetting idle peers), retransmission with ACK_TIMEOUT ×
//! random [1, ACK_RANDOM_FACTOR) doubling up to MAX_RETRANSMIT, and what an ACK, a RST or giving up
//! means for the message's owner (a request of `exchange.rs` or a separate response of
//! `inbound.rs`).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use crate::codec::{Message, Token};
use crate::config::{MAX_ACK_TIMEOUT, MAX_RANDOM_FACTOR, MAX_RETRANSMIT_LIMIT, TransmissionConfig};
use crate::error::CoapError;
use crate::metrics::TransmissionGaveUp;

use super::exchange::Queued;
use super::{MessageLayer, Timer, TimerKey};

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Owner {
    Request(Token),
    SeparateResponse,
}

#[derive(Debug)]
pub(super) struct Outgoing {
    bytes: Box<[u8]>,
    retransmissions: u32,
    timeout: Duration,
    pub(super) timer: TimerKey,
    owner: Owner,
}

#[derive(Debug)]
pub(super) struct PeerState {
    next_mid: u16,
    /// NSTART: requests in flight to the peer (`exchange.rs`).
    pub(super) outstanding: u32,
    /// Requests waiting for an NSTART slot (`exchange.rs`).
    pub(super) queue: VecDeque<Queued>,
    last_used: Instant,
}

impl MessageLayer {
    pub(super) fn initial_timeout(&mut self) -> Duration {
        let f = self.timing.ack_random_factor;
        let r = if f > 1.0 {
            self.rng.random_range(1.0..f)
        } else {
            1.0
        };
        self.timing.ack_timeout.mul_f64(r)
    }

    pub(super) fn start_retransmission(
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

    pub(super) fn alloc_mid(&mut self, now: Instant, peer: SocketAddr) -> u16 {
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

    pub(super) fn on_ack(&mut self, now: Instant, peer: SocketAddr, msg: &Message<'_>) {
        let Some(out) = self.outgoing.remove(&(peer, msg.mid)) else {
            return; // late or duplicate ACK
        };
        self.timers.remove(&out.timer);
        let Owner::Request(token) = out.owner else {
            return; // a separate response was acknowledged
        };
        self.on_request_acked(now, peer, token, msg);
    }

    pub(super) fn on_rst(&mut self, now: Instant, peer: SocketAddr, mid: u16) {
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

    pub(super) fn on_retransmit_timer(&mut self, now: Instant, peer: SocketAddr, mid: u16) {
        let max = self.timing.max_retransmit;
        let Some(out) = self.outgoing.get_mut(&(peer, mid)) else {
            return;
        };
        if out.retransmissions < max {
            out.retransmissions += 1;
            out.timeout *= 2;
            let at = now + out.timeout;
            let (owner, len) = (out.owner, out.bytes.len());
            let send = match owner {
                Owner::Request(token) => {
                    let validate = self.validated(&token);
                    self.may_send(peer, validate, len)
                }
                Owner::SeparateResponse => {
                    self.validation.sent(peer, len);
                    true
                }
            };
            // Over an unproven address's budget the copy is not sent; the exchange times out
            // as it would have without an answer.
            if let Some(out) = self.outgoing.get(&(peer, mid)).filter(|_| send) {
                self.tx.push(peer, &out.bytes);
                self.metrics.retransmissions.inc();
            }
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

    /// Forgets peers idle for EXCHANGE_LIFETIME with nothing outstanding or queued (their MID
    /// counters go with them).
    pub(super) fn sweep_peers(&mut self, now: Instant) {
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
    }
}
