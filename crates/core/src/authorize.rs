//! Who may send what: the [`Authorizer`] every ingest path asks before a reading is decoded.
//!
//! Identity comes from the [`PeerContext`] (what a DTLS handshake, a client certificate or a
//! bearer token proved), never from the device id a message merely claims; the authorizer
//! decides which device the message may speak for. The device registry (keys, tokens, ACLs) will
//! be an implementation of this trait. Until it exists, [`AllowAll`] keeps today's behaviour and
//! says so loudly at start-up.

use std::fmt::Debug;

use crate::peer::PeerContext;
use crate::reading::{MessageClass, Protocol};

/// What a peer asks to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Submit readings.
    Write,
    /// Register as an LwM2M client (or another session-creating request).
    Register,
}

/// The question put to an [`Authorizer`].
#[derive(Debug, Clone, Copy)]
pub struct AuthRequest<'a> {
    /// Who is asking, with what the transport proved.
    pub peer: &'a PeerContext,
    /// Over which protocol.
    pub protocol: Protocol,
    /// The device id the message claims to be from (URI segment, topic level, endpoint name).
    pub claimed_device: &'a str,
    /// The message class it asks for.
    pub class: MessageClass,
    /// The resource it targets, as the adapter names it (`/v1/readings/bed-12`, `/rd`).
    pub resource: &'a str,
    /// What it wants to do.
    pub action: Action,
}

/// Why an [`Authorizer`] said no. The reason is a fixed label: safe for metrics and logs, and
/// never a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// Nothing proved who the peer is, or the proof is not accepted (CoAP 4.01, HTTP 401).
    #[error("not authenticated: {0}")]
    Unauthenticated(&'static str),
    /// The peer is known but may not do this (CoAP 4.03, HTTP 403).
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
}

impl Denied {
    /// Fixed metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Denied::Unauthenticated(_) => "unauthenticated",
            Denied::Forbidden(_) => "forbidden",
        }
    }
}

/// What an [`Authorizer`] grants a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// Store the readings under this device id and deliver them.
    Allow(String),
    /// Store the readings under this device id, durably, but deliver them nowhere until an
    /// administrator decides: the peer proved an identity no device holds, and unknown devices
    /// are quarantined. They are owed only to the outbox's [`QUARANTINE`] lane until then.
    Hold(String),
}

impl Grant {
    /// The device id the readings are stored under.
    pub fn device(&self) -> &str {
        match self {
            Grant::Allow(d) | Grant::Hold(d) => d,
        }
    }
}

/// The outbox lane (an internal uplink of that name) holding quarantined readings until an
/// administrator approves or dismisses their identity. Reserved: no configured uplink may take
/// the name.
pub const QUARANTINE: &str = "quarantine";

/// Decides whether a peer may act for a device, and which device the readings belong to.
///
/// Called on the ingest hot path from socket tasks: it must answer from memory without
/// blocking (a registry keeps its table in memory and reloads it aside).
pub trait Authorizer: Send + Sync + Debug + 'static {
    /// The device the readings are stored under, or why not.
    fn authorize(&self, req: &AuthRequest<'_>) -> Result<String, Denied>;

    /// [`Self::authorize`] for a write, which an authorizer may also answer with
    /// [`Grant::Hold`] (accept, keep, do not deliver). The default never holds.
    fn authorize_write(&self, req: &AuthRequest<'_>) -> Result<Grant, Denied> {
        self.authorize(req).map(Grant::Allow)
    }

    /// The answer [`Self::authorize_write`] would give, for an adapter that decides before it
    /// reads a body (HTTP), without what a write records (a quarantined identity is not noted
    /// twice for one request). Denials are counted and logged as usual: the request ends there.
    fn precheck_write(&self, req: &AuthRequest<'_>) -> Result<Grant, Denied> {
        self.authorize_write(req)
    }

    /// Whether this authorizer authenticates anything (start-up logs warn when it does not).
    fn authenticates(&self) -> bool;
}

/// Today's behaviour: every peer may write for the device it names. Unauthenticated; the
/// gateway logs a warning at start-up while it is in use.
#[derive(Debug, Default, Clone, Copy)]
pub struct AllowAll;

impl Authorizer for AllowAll {
    fn authorize(&self, req: &AuthRequest<'_>) -> Result<String, Denied> {
        Ok(req.claimed_device.to_owned())
    }

    fn authenticates(&self) -> bool {
        false
    }
}
