//! The audit seam: security-relevant events (authentication, ACL decisions, admin actions,
//! registry changes, configuration reloads) go to an [`AuditSink`].
//!
//! The hash-chained, fsynced, rotated JSON-lines file is `wardgate-audit`'s implementation;
//! components only see this trait, so they can be tested with an in-memory sink. `record` is
//! called from socket tasks and must not block: an implementation queues and writes aside, and
//! counts (never hides) what it could not queue.
//!
//! An event never carries a secret: identities are public names (`psk:bed-12`), never keys;
//! tokens are named by their id, never their value.

use std::fmt;
use std::net::SocketAddr;

use crate::peer::TransportKind;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    /// A peer proved an identity (handshake completed, token accepted).
    AuthSuccess,
    /// A peer failed to prove one (unknown identity, wrong key, bad token, bad certificate).
    AuthFailure,
    /// A proven (or unproven) peer asked for something its ACL does not allow.
    AclDenied,
    /// An open session was closed because its credentials were revoked or changed.
    SessionRevoked,
    /// An administrator did something through the admin API.
    AdminAction,
    /// The device registry changed (whoever changed it).
    RegistryChange,
    /// The configuration (or the registry file) was reloaded.
    ConfigReload,
    /// The traffic monitor saw an anomaly (a scan, a flood, an authentication-failure burst,
    /// a rate spike, a new port); `reason` names the kind.
    Anomaly,
}

impl AuditKind {
    /// The wire name (`auth_failure`).
    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::AuthSuccess => "auth_success",
            AuditKind::AuthFailure => "auth_failure",
            AuditKind::AclDenied => "acl_denied",
            AuditKind::SessionRevoked => "session_revoked",
            AuditKind::AdminAction => "admin_action",
            AuditKind::RegistryChange => "registry_change",
            AuditKind::ConfigReload => "config_reload",
            AuditKind::Anomaly => "anomaly",
        }
    }
}

impl fmt::Display for AuditKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One audit event, before the sink stamps it with a time, a sequence number and its chain hash.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AuditEvent {
    /// What happened.
    pub kind: AuditKind,
    /// Who did it: a proven identity (`psk:bed-12`), an admin token id (`admin:ops-1`), or
    /// what the peer claimed when nothing was proven (`claimed-psk:bed-99`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// From where.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<SocketAddr>,
    /// Over what.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transport: Option<TransportKind>,
    /// What it concerned (a device id, a resource, a config path).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// A fixed, secret-free label of why (`unknown_identity`, `bad_mac`, `forbidden_class`).
    pub reason: &'static str,
}

impl AuditEvent {
    /// An event of `kind` for `reason`, with nothing else filled in.
    pub fn new(kind: AuditKind, reason: &'static str) -> Self {
        AuditEvent {
            kind,
            actor: None,
            peer: None,
            transport: None,
            subject: None,
            reason,
        }
    }

    /// Sets who.
    pub fn actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = Some(actor.into());
        self
    }

    /// Sets from where, over what.
    pub fn peer(mut self, addr: SocketAddr, transport: TransportKind) -> Self {
        self.peer = Some(addr);
        self.transport = Some(transport);
        self
    }

    /// Sets what it concerned.
    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }
}

/// Where audit events go. Must not block (see the module docs).
pub trait AuditSink: Send + Sync + fmt::Debug + 'static {
    /// Records one event.
    fn record(&self, event: AuditEvent);
}

/// Drops every event: for tests and for a gateway run without an audit file (which `run`
/// warns about at start-up).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoAudit;

impl AuditSink for NoAudit {
    fn record(&self, _event: AuditEvent) {}
}

/// Keeps events in memory, for tests.
#[derive(Debug, Default)]
pub struct MemoryAudit {
    events: std::sync::Mutex<Vec<AuditEvent>>,
}

impl MemoryAudit {
    /// Everything recorded so far.
    pub fn events(&self) -> Vec<AuditEvent> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

impl AuditSink for MemoryAudit {
    fn record(&self, event: AuditEvent) {
        if let Ok(mut e) = self.events.lock() {
            e.push(event);
        }
    }
}
