//! Requests from peers (RFC 7252 §4.2-4.3, §5.2): the critical options a request may carry,
//! handing new requests to the application, and answering them: piggybacked in the ACK while the
//! piggyback budget lasts (an empty ACK when it is over, then a separate CON response), as a NON
//! to a NON, or at once without the application (4.02, 4.13). What is cached for duplicates is
//! decided here (safe methods are re-processed).

use std::net::SocketAddr;

use tokio::time::Instant;

use crate::codec::{Code, Message, MsgType, Token, opt};
use crate::dedup::{DedupKey, DupAction, Seen};
use crate::metrics::MalformedMessage;

use super::reliability::Owner;
use super::{Inbound, InboundRequest, MessageLayer, RequestId, Response, queue};

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

#[derive(Debug)]
pub(super) struct InboundExchange {
    peer: SocketAddr,
    mid: u16,
    token: Token,
    con: bool,
    acked: bool,
    /// Cache the response for duplicates (false for safe methods, which are re-processed).
    cache: bool,
}

impl MessageLayer {
    pub(super) fn on_request<'a>(
        &mut self,
        peer: SocketAddr,
        msg: Message<'a>,
        key: DedupKey,
        budget: Option<usize>,
    ) -> Inbound<'a> {
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
                self.respond_now(peer, msg.mid, msg.token, &resp, key, budget);
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

    /// Answers an oversized CON request 4.13 with Size1, deduplicated like any CON (`budget`:
    /// the amplification budget of an unauthenticated peer).
    pub(crate) fn reject_oversized(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        (mid, token): (u16, Token),
        size1: u32,
        budget: Option<usize>,
    ) {
        let key = DedupKey::new(peer, mid);
        match self.dedup.observe(now, key, true) {
            Seen::New | Seen::Duplicate(DupAction::Reprocess) => {}
            Seen::Duplicate(DupAction::Resend(bytes)) => {
                self.metrics.dedup_hits.inc();
                queue(&mut self.tx, &mut self.validation, peer, bytes);
                return;
            }
            Seen::Duplicate(_) => {
                self.metrics.dedup_hits.inc();
                return;
            }
        }
        let mut r = Response::diagnostic(Code::REQUEST_ENTITY_TOO_LARGE, "datagram too large");
        r.size1 = Some(size1);
        self.respond_now(peer, mid, token, &r, key, budget);
        self.sync_dedup_metrics();
    }

    /// Sends a piggybacked response to a CON that was never handed to the application (and
    /// caches it for duplicates). Within `budget` (an unauthenticated peer's amplification
    /// budget) when there is one: the diagnostic payload is left out if it would not fit (RFC
    /// 7252 §5.5.2 makes it optional), and an answer that still would not is not sent.
    fn respond_now(
        &mut self,
        peer: SocketAddr,
        mid: u16,
        token: Token,
        resp: &Response,
        key: DedupKey,
        budget: Option<usize>,
    ) {
        if !self.encode_response(resp, MsgType::Ack, mid, token) {
            return;
        }
        if let Some(b) = budget.filter(|b| self.scratch.len() > *b) {
            let bare = Response {
                payload: bytes::Bytes::new(),
                ..resp.clone()
            };
            if !self.encode_response(&bare, MsgType::Ack, mid, token) || self.scratch.len() > b {
                self.metrics.amplification("answer_not_sent");
                return;
            }
            self.metrics.amplification("diagnostic_withheld");
        }
        queue(&mut self.tx, &mut self.validation, peer, &self.scratch);
        self.dedup.set_response(key, &self.scratch);
        self.metrics.response_sent(resp.code);
    }

    /// Forgets request `id` without answering it (a Non-confirmable request the application
    /// chose not to answer, RFC 7252 §5.2.3). A Confirmable one cannot go unanswered: it gets
    /// `fallback`.
    pub fn discard(&mut self, now: Instant, id: RequestId, fallback: &Response) {
        match self.inbound.get(&id.0) {
            Some(ex) if ex.con => self.respond(now, id, fallback),
            Some(_) => {
                self.inbound.remove(&id.0);
            }
            None => {}
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
                queue(&mut self.tx, &mut self.validation, ex.peer, &self.scratch);
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
                queue(&mut self.tx, &mut self.validation, ex.peer, &bytes);
                self.start_retransmission(now, ex.peer, mid, bytes, Owner::SeparateResponse);
                self.metrics.separate_responses.inc();
            }
        } else {
            let mid = self.alloc_mid(now, ex.peer);
            if self.encode_response(resp, MsgType::Non, mid, ex.token) {
                queue(&mut self.tx, &mut self.validation, ex.peer, &self.scratch);
            }
            if !ex.cache {
                self.dedup.set_reprocess(key);
            }
        }
        self.metrics.response_sent(resp.code);
        self.sync_dedup_metrics();
    }

    /// Sends the empty ACK of every deferred CON whose piggyback budget is over.
    pub(super) fn expire_budgets(&mut self, now: Instant) {
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
    }
}
