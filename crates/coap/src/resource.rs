//! Server-side resources: what a CoAP application implements to serve a path.
//!
//! A [`Resource`] gets a [`Request`] — the peer context, the parsed message, the Uri-Path
//! segments below where it is registered, and the whole body (Block1 transfers are already
//! reassembled by the router's block layer) — and answers [`Reply::Now`] (piggybacked, or a
//! separate response if the message layer already sent an empty ACK) or [`Reply::Later`] with a
//! future that yields the response (e.g. once the store made a reading durable). The router
//! below it answers 4.04, 4.05, Proxy-Uri and the shutdown 5.03 itself, serves
//! `/.well-known/core` from the registrations, and slices large responses into Block2 blocks,
//! so a resource holds no block or routing code. Model: Leshan's thin `RegisterResource`
//! handing off to a transport-independent handler.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use tokio::time::Instant;
use wardgate_core::PeerContext;

use crate::codec::{Code, Message};
use crate::layer::Response;

/// A response computed later (a store commit, a downstream exchange).
pub type Deferred = Pin<Box<dyn Future<Output = Response> + Send>>;

/// How a resource answers.
pub enum Reply {
    /// Answer now.
    Now(Response),
    /// Answer when the future resolves; the message layer sends an empty ACK first if it takes
    /// longer than the piggyback budget.
    Later(Deferred),
    /// No answer at all: only for a Non-confirmable request (RFC 7252 §5.2.3), e.g. one over a
    /// rate limit. A Confirmable request answered so gets 5.00.
    Silent,
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Now(r) => f.debug_tuple("Now").field(r).finish(),
            Reply::Later(_) => f.write_str("Later(..)"),
            Reply::Silent => f.write_str("Silent"),
        }
    }
}

/// A request as a resource sees it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'r, 'a> {
    /// When it arrived.
    pub now: Instant,
    /// Who sent it (address, transport, authenticated identity).
    pub peer: &'r PeerContext,
    /// The message (options, code). For a Block1 transfer, the last block's message.
    pub msg: &'r Message<'a>,
    /// The Uri-Path segments below the resource's registered path.
    pub rest: &'r [&'a [u8]],
    /// The whole body: the payload, or the reassembled Block1 body.
    pub body: &'r [u8],
}

/// A server-side CoAP resource. Called from the socket task: never block.
///
/// Memory: the socket task holds every [`Reply::Later`] until it resolves, so a resource that
/// answers later must bound how many it has open (the readings resource is bounded by the bus
/// capacity: a full bus is an immediate 5.03, not another pending answer).
pub trait Resource: Send + fmt::Debug + 'static {
    /// Handles one request whose path and method the router already matched.
    fn handle(&mut self, req: &Request<'_, '_>) -> Reply;
}

/// Where a resource lives and how it is described in `/.well-known/core` (RFC 6690).
#[derive(Debug, Clone)]
pub struct Registration {
    /// Path segments (`["v1", "readings"]`).
    pub(crate) path: Vec<String>,
    /// How many further segments below `path` the resource serves (0: the exact path only).
    pub(crate) max_depth: usize,
    /// Methods it serves; others get 4.05.
    pub(crate) methods: Vec<Code>,
    /// `rt` attribute.
    pub(crate) rt: Option<String>,
    /// `if` attribute.
    pub(crate) iface: Option<String>,
    /// `ct` attribute: Content-Formats it accepts or serves.
    pub(crate) ct: Vec<u16>,
    /// `title` attribute.
    pub(crate) title: Option<String>,
    /// `obs` flag: observable.
    pub(crate) obs: bool,
    /// Listed in `/.well-known/core` (RFC 6690 lets a server keep resources out of it).
    pub(crate) listed: bool,
}

impl Registration {
    /// A resource at `path` (`"v1/readings"`; empty segments ignored) serving `methods`.
    pub fn new(path: &str, methods: &[Code]) -> Self {
        Registration {
            path: path
                .split('/')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            max_depth: 0,
            methods: methods.to_vec(),
            rt: None,
            iface: None,
            ct: Vec::new(),
            title: None,
            obs: false,
            listed: true,
        }
    }

    /// Serves up to `depth` further path segments below its path.
    pub fn subtree(mut self, depth: usize) -> Self {
        self.max_depth = depth;
        self
    }

    /// Resource type (`rt`).
    pub fn rt(mut self, rt: &str) -> Self {
        self.rt = Some(rt.to_owned());
        self
    }

    /// Interface description (`if`).
    pub fn interface(mut self, iface: &str) -> Self {
        self.iface = Some(iface.to_owned());
        self
    }

    /// Content-Formats (`ct`).
    pub fn content_formats(mut self, ct: &[u16]) -> Self {
        self.ct = ct.to_vec();
        self
    }

    /// Human-readable `title`.
    pub fn title(mut self, title: &str) -> Self {
        self.title = Some(title.to_owned());
        self
    }

    /// Marks it observable (`obs`).
    pub fn observable(mut self) -> Self {
        self.obs = true;
        self
    }

    /// Keeps it out of `/.well-known/core`.
    pub fn unlisted(mut self) -> Self {
        self.listed = false;
        self
    }

    /// Its link-format entry: `</path>;rt="..";if="..";ct="..";obs;title=".."`.
    pub(crate) fn link(&self) -> String {
        let mut s = format!("</{}>", self.path.join("/"));
        if let Some(rt) = &self.rt {
            s.push_str(&format!(";rt=\"{rt}\""));
        }
        if let Some(i) = &self.iface {
            s.push_str(&format!(";if=\"{i}\""));
        }
        if !self.ct.is_empty() {
            let ct: Vec<String> = self.ct.iter().map(u16::to_string).collect();
            s.push_str(&format!(";ct=\"{}\"", ct.join(" ")));
        }
        if self.obs {
            s.push_str(";obs");
        }
        if let Some(t) = &self.title {
            s.push_str(&format!(";title=\"{t}\""));
        }
        s
    }
}
