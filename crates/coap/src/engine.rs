//! One socket's protocol state: the message layer, the resource layer ([`Router`]), the
//! resources' deferred answers and notification ACK decisions. Sans-I/O except that it holds the futures of those two waits, so
//! the socket task can poll them in the same `select!` as the socket and the timers.
//!
//! [`Engine::handle_datagram`] is the entry point benchmarks and fuzzers drive.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::stream::{FuturesUnordered, Stream};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use wardgate_core::PeerContext;

use crate::codec::BlockOpt;
use crate::codec::{self, Code, MsgType, Token};
use crate::error::CoapError;
use crate::exchange::{BlockOpts, ClientRequest, ClientResponse, Notification};
use crate::layer::{
    AckWait, Inbound, LayerConfig, MessageLayer, RequestId, Response, Sink, TxQueue,
};
use crate::metrics::{CoapMetrics, MalformedMessage};
use crate::resource::Deferred;
use crate::router::{BlockKey, Later, Routed, Router};

/// Work sent to a socket task by [`crate::Requester`]s.
#[derive(Debug)]
pub(crate) enum Command {
    Request {
        peer: SocketAddr,
        req: ClientRequest,
        blocks: BlockOpts,
        reply: oneshot::Sender<Result<ClientResponse, CoapError>>,
    },
    Observe {
        peer: SocketAddr,
        req: ClientRequest,
        sink: mpsc::Sender<Box<Notification>>,
        reply: oneshot::Sender<Result<Token, CoapError>>,
    },
    Forget {
        token: Token,
    },
}

/// Something the engine was waiting for has happened.
#[derive(Debug)]
pub enum Completion {
    /// A resource's deferred answer is ready, with what the router needs to finish it.
    Response(
        RequestId,
        Response,
        Option<BlockOpt>,
        Option<BlockOpt>,
        BlockKey,
    ),
    /// The observer decided about a notification's ACK: (peer, MID, accepted).
    Ack(SocketAddr, u16, bool),
}

/// A resource's deferred answer and what its final response needs.
struct DeferredAnswer {
    id: RequestId,
    fut: Deferred,
    block1: Option<BlockOpt>,
    block2: Option<BlockOpt>,
    key: BlockKey,
}

impl Future for DeferredAnswer {
    type Output = Completion;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let r = std::task::ready!(self.fut.as_mut().poll(cx));
        Poll::Ready(Completion::Response(
            self.id,
            r,
            self.block1,
            self.block2,
            self.key,
        ))
    }
}

struct AckFuture(AckWait);

impl Future for AckFuture {
    type Output = (SocketAddr, u16, bool);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let w = &mut self.0;
        match Pin::new(&mut w.rx).poll(cx) {
            Poll::Pending => Poll::Pending,
            // A dropped handle means "not processed": no ACK.
            Poll::Ready(r) => Poll::Ready((w.peer, w.mid, r.unwrap_or(false))),
        }
    }
}

/// Protocol state of one socket.
pub struct Engine {
    layer: MessageLayer,
    resources: Option<Router>,
    deferred: FuturesUnordered<DeferredAnswer>,
    acks: FuturesUnordered<AckFuture>,
    metrics: CoapMetrics,
    max_datagram: usize,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("layer", &self.layer)
            .field("resources", &self.resources)
            .field("deferred", &self.deferred.len())
            .field("acks", &self.acks.len())
            .finish()
    }
}

impl Engine {
    /// An engine; `resources` is `None` for a client-only socket (requests then get 4.04).
    pub fn new(
        now: Instant,
        layer: LayerConfig,
        max_datagram: usize,
        resources: Option<Router>,
        metrics: CoapMetrics,
    ) -> Self {
        Engine {
            layer: MessageLayer::new(now, layer, metrics.clone()),
            resources,
            deferred: FuturesUnordered::new(),
            acks: FuturesUnordered::new(),
            metrics,
            max_datagram,
        }
    }

    /// The message layer (for inspection in tests and benchmarks).
    pub fn layer(&self) -> &MessageLayer {
        &self.layer
    }

    /// Datagrams to send; the caller sends them and clears the queue.
    pub fn tx(&mut self) -> &mut TxQueue {
        self.layer.tx()
    }

    /// Deferred answers (e.g. store commits) not resolved yet.
    pub fn pending_commits(&self) -> usize {
        self.deferred.len()
    }

    /// Nothing in flight: no deferred answer and no unacknowledged CON message or open exchange.
    pub fn is_idle(&self) -> bool {
        self.deferred.is_empty() && self.layer.outstanding() == 0
    }

    /// New requests get 5.03 from now on.
    pub fn stop_accepting(&mut self) {
        if let Some(r) = &mut self.resources {
            r.stop_accepting();
        }
    }

    /// Handles one received datagram (`datagram.len() > max_datagram` means it was truncated)
    /// from `peer`, as the transport identified it.
    pub fn handle_datagram(&mut self, now: Instant, peer: &PeerContext, datagram: &[u8]) {
        if datagram.len() > self.max_datagram {
            let budget = peer.identity.is_none().then(|| {
                datagram
                    .len()
                    .saturating_mul(crate::layer::AMPLIFICATION_FACTOR)
            });
            self.oversized(now, peer.addr, datagram, budget);
            return;
        }
        let authenticated = peer.identity.is_some();
        match self
            .layer
            .handle_datagram_as(now, peer.addr, datagram, authenticated)
        {
            Inbound::Nothing => {}
            Inbound::Request(req) => {
                let routed = match &mut self.resources {
                    Some(router) => router.on_request(now, peer, &req.msg, datagram.len()),
                    None => Routed::Now(Response::diagnostic(Code::NOT_FOUND, "client socket")),
                };
                match routed {
                    Routed::Now(resp) => self.layer.respond(now, req.id, &resp),
                    Routed::Silent => {
                        self.layer
                            .discard(now, req.id, &Response::new(Code::INTERNAL_SERVER_ERROR))
                    }
                    Routed::Later(Later {
                        fut,
                        block1,
                        block2,
                        key,
                    }) => {
                        self.layer.defer(now, req.id);
                        self.deferred.push(DeferredAnswer {
                            id: req.id,
                            fut,
                            block1,
                            block2,
                            key,
                        });
                    }
                }
            }
        }
        self.collect_ack_waits();
    }

    /// RFC 7252 §4.6 / RFC 7959 §2.9.3: a request too large for one datagram is answered 4.13
    /// (CON) with Size1; anything else oversized is dropped.
    fn oversized(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        datagram: &[u8],
        budget: Option<usize>,
    ) {
        MalformedMessage {
            peer,
            reason: "oversized",
        }
        .emit(&self.metrics);
        let Some((h, token)) = codec::parse_header_and_token(datagram) else {
            return;
        };
        if h.mtype != MsgType::Con || !h.code.is_request() {
            return;
        }
        self.layer
            .reject_oversized(now, peer, (h.mid, token), self.max_body(), budget);
    }

    fn max_body(&self) -> u32 {
        self.resources
            .as_ref()
            .map_or(self.max_datagram, Router::max_body_bytes)
            .try_into()
            .unwrap_or(u32::MAX)
    }

    fn collect_ack_waits(&mut self) {
        for w in self.layer.take_ack_waits() {
            self.acks.push(AckFuture(w));
        }
    }

    /// Runs due timers.
    pub fn poll_timers(&mut self, now: Instant) {
        self.layer.poll_timers(now);
        if let Some(r) = &mut self.resources {
            r.poll_timers(now);
        }
    }

    /// When [`Engine::poll_timers`] next has work.
    pub fn next_deadline(&self) -> Option<Instant> {
        let a = self.layer.next_deadline();
        let b = self.resources.as_ref().and_then(Router::next_deadline);
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Polls deferred answers and ACK decisions; `Pending` when there are none.
    pub fn poll_completion(&mut self, cx: &mut Context<'_>) -> Poll<Completion> {
        if let Poll::Ready(Some(c)) = Pin::new(&mut self.deferred).poll_next(cx) {
            return Poll::Ready(c);
        }
        match Pin::new(&mut self.acks).poll_next(cx) {
            Poll::Ready(Some((peer, mid, ok))) => Poll::Ready(Completion::Ack(peer, mid, ok)),
            Poll::Ready(None) | Poll::Pending => Poll::Pending,
        }
    }

    /// Applies a completion: answers the request or sends/withholds the ACK.
    pub fn complete(&mut self, now: Instant, c: Completion) {
        match c {
            Completion::Response(id, resp, block1, block2, key) => {
                let resp = match &mut self.resources {
                    Some(r) => r.finish(now, resp, block1, block2, key),
                    None => resp,
                };
                self.layer.respond(now, id, &resp);
            }
            Completion::Ack(peer, mid, ok) => self.layer.ack_decision(peer, mid, ok),
        }
    }

    /// Executes a command from a requester.
    pub(crate) fn command(&mut self, now: Instant, cmd: Command) {
        match cmd {
            Command::Request {
                peer,
                req,
                blocks,
                reply,
            } => {
                if let Err((e, Sink::Once(reply))) =
                    self.layer
                        .send_request(now, peer, &req, blocks, Sink::Once(reply))
                {
                    let _ = reply.send(Err(e));
                }
            }
            Command::Observe {
                peer,
                req,
                sink,
                reply,
            } => {
                let r = self
                    .layer
                    .send_request(now, peer, &req, BlockOpts::default(), Sink::Observe(sink))
                    .map_err(|(e, _)| e);
                let _ = reply.send(r);
            }
            Command::Forget { token } => self.layer.forget(now, &token),
        }
    }
}
