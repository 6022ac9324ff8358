//! An LwM2M client simulator: a peer for the server's integration tests, the demo mode and the
//! registration benchmark. Not a second CoAP stack — a small message layer of its own over
//! `wardgate_coap::codec`, just enough to be a faithful, observable client:
//!
//! - one [`SimClient`] per UDP socket; Confirmable requests it sends (Register, Update, Send,
//!   notifications) are retransmitted with the RFC 7252 timers ([`Timing`], bounded by
//!   `max_retransmit`); its answers to the server ride on the ACK (piggybacked); a duplicate
//!   Confirmable request from the server (same Message ID) gets the same answer again from a
//!   small bounded cache; a response it did not ask for gets a RST;
//! - an object tree ([`Tree`]) with values the test changes with [`SimClient::set`], which
//!   notifies the server's observations subject to the `pmin`/`pmax`/`gt`/`lt`/`st` attributes
//!   the server wrote;
//! - it answers every operation of TS Core §6.3–6.4 in every content format of
//!   [`crate::format`] it is configured to accept (4.06 / 4.15 for the others), slices large
//!   answers with Block2, and records each request it received ([`Received`]) and each Execute
//!   ([`Executed`]) for assertions;
//! - queue mode: after [`SimClient::sleep`] it drops every datagram until [`SimClient::wake`]
//!   sends an Update; Execute on `/3/0/4` (Reboot) makes it forget its observations and
//!   attributes and Register again, as a rebooted device does.
//!
//! [`run_many`] starts many clients at once (bounded concurrency), each on its own socket.

mod client;
mod handle;
mod observe;
mod tree;
mod ward;
mod wire;

use std::net::SocketAddr;
use std::time::Duration;

pub use client::{OverTransport, Recv, SimClient, SimSocket, UpdateOpts};
pub use observe::Attrs;
pub use tree::{Res, Tree};
pub use ward::{Ward, open_files_limit, run_many};
pub use wire::{SimResponse, Timing};

use crate::format::Format;
use crate::registration::Version;
use wardgate_coap::codec::{BlockOpt, Code, Token};

use crate::node::Path;

/// Every content format the simulator can answer in (all of [`crate::format`] but
/// link-format, which is Discover's).
pub const ALL_FORMATS: [Format; 8] = [
    Format::Text,
    Format::Opaque,
    Format::Cbor,
    Format::SenmlJson,
    Format::SenmlCbor,
    Format::Tlv,
    Format::OmaJson,
    Format::Lwm2mCbor,
];

/// How a simulated client registers and behaves.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Endpoint name (`ep`).
    pub endpoint: String,
    /// Lifetime in seconds (`lt`).
    pub lifetime: u32,
    /// LwM2M version (`lwm2m`).
    pub version: Version,
    /// Binding letters without `Q` (`b`).
    pub binding: String,
    /// Queue mode (`b=UQ` for 1.0, the `Q` parameter from 1.1).
    pub queue_mode: bool,
    /// Alternate root path (`/lwm2m`): the object list is written below it and the client
    /// answers only requests below it.
    pub root: Option<String>,
    /// Whether the root link lists the accepted formats (`ct=`); clients such as Wakaama do not.
    pub advertise_formats: bool,
    /// The content formats it reads and writes; others get 4.06 (Accept) or 4.15
    /// (Content-Format).
    pub formats: Vec<Format>,
    /// Its objects and values.
    pub tree: Tree,
    /// Send an Update when three quarters of the lifetime passed.
    pub auto_update: bool,
    /// Notifications as Confirmable messages (else Non-confirmable).
    pub confirmable_notifications: bool,
    /// Largest block of an answer; longer answers go by Block2 (16..=1024).
    pub block_size: usize,
    /// Retransmission timers.
    pub timing: Timing,
    /// Local address to bind (port 0: ephemeral).
    pub bind: SocketAddr,
}

impl SimConfig {
    /// A 1.1 client with the default device tree ([`Tree::device`]), every format, lifetime
    /// 300 s, on an ephemeral loopback port.
    pub fn new(endpoint: impl Into<String>) -> SimConfig {
        let endpoint = endpoint.into();
        SimConfig {
            tree: Tree::device(&endpoint, 300),
            endpoint,
            lifetime: 300,
            version: Version::V1_1,
            binding: "U".into(),
            queue_mode: false,
            root: None,
            advertise_formats: false,
            formats: ALL_FORMATS.to_vec(),
            auto_update: false,
            confirmable_notifications: true,
            block_size: 512,
            timing: Timing::default(),
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    }

    /// Sets the LwM2M version.
    pub fn version(mut self, v: Version) -> Self {
        self.version = v;
        self
    }

    /// Sets the lifetime (seconds).
    pub fn lifetime(mut self, secs: u32) -> Self {
        self.lifetime = secs;
        self
    }

    /// Registers in queue mode.
    pub fn queue_mode(mut self) -> Self {
        self.queue_mode = true;
        self
    }

    /// Puts the objects below an alternate root path (`/lwm2m`).
    pub fn root(mut self, root: impl Into<String>) -> Self {
        self.root = Some(root.into());
        self
    }

    /// Accepts only these formats.
    pub fn formats(mut self, formats: &[Format]) -> Self {
        self.formats = formats.to_vec();
        self
    }

    /// Replaces the object tree.
    pub fn tree(mut self, tree: Tree) -> Self {
        self.tree = tree;
        self
    }

    /// Sends Updates on its own before the lifetime runs out.
    pub fn auto_update(mut self) -> Self {
        self.auto_update = true;
        self
    }

    /// The Uri-Path segments of the alternate root path (empty for `/`).
    pub(crate) fn root_segments(&self) -> Vec<String> {
        self.root
            .as_deref()
            .unwrap_or("/")
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// The format it answers in when the request has no Accept.
    pub(crate) fn default_format(&self) -> Format {
        let wanted = match self.version {
            Version::V1_0 => Format::Tlv,
            Version::V1_1 | Version::V1_2 => Format::SenmlCbor,
        };
        if self.formats.contains(&wanted) {
            wanted
        } else {
            self.formats.first().copied().unwrap_or(Format::Tlv)
        }
    }
}

/// Why a simulator operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// Socket trouble.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    /// No ACK after the last retransmission, or no separate response in time.
    #[error("no answer from the server")]
    Timeout,
    /// The server reset the exchange.
    #[error("the server answered with a RST")]
    Reset,
    /// The server answered with an unexpected code.
    #[error("the server answered {0}")]
    Refused(Code),
    /// Update, De-register or Send before a successful Register.
    #[error("not registered")]
    NotRegistered,
    /// Values that do not encode in the format asked for.
    #[error(transparent)]
    Format(#[from] crate::format::FormatError),
    /// The process may not open that many sockets (see [`open_files_limit`]).
    #[error(
        "{needed} sockets need an open-files limit of at least {needed} (ulimit -n is {limit})"
    )]
    FileLimit {
        /// Sockets the run needs, with headroom.
        needed: u64,
        /// The current soft limit.
        limit: u64,
    },
}

/// A request the client received from the server (duplicates not repeated).
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    /// Where it came from.
    pub from: SocketAddr,
    /// Confirmable.
    pub confirmable: bool,
    /// Method.
    pub method: Code,
    /// Token.
    pub token: Token,
    /// Uri-Path segments as received (alternate root path included).
    pub uri_path: Vec<String>,
    /// The LwM2M path below the root path, if the request names one.
    pub path: Option<Path>,
    /// Uri-Query items.
    pub query: Vec<String>,
    /// Accept.
    pub accept: Option<u16>,
    /// Content-Format.
    pub content_format: Option<u16>,
    /// Observe.
    pub observe: Option<u32>,
    /// Block2 (a follow-up block request).
    pub block2: Option<BlockOpt>,
    /// Block1 (a block of a large request body; the simulator refuses these with 4.13).
    pub block1: Option<BlockOpt>,
    /// Body.
    pub payload: Vec<u8>,
}

/// An Execute the client received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Executed {
    /// The executed resource.
    pub path: Path,
    /// Its arguments (`0='abc',1`), if any.
    pub arguments: Option<String>,
}

/// A settle time small enough for tests, long enough for a loaded machine.
pub(crate) const POLL: Duration = Duration::from_millis(20);
