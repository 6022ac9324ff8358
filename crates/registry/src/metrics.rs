//! Registry metrics (prometheus-client, explicit registry) and the closed set of denial reasons.
//!
//! Labels are `&'static str` from closed sets (the [`DenyReason`]s, edit and reload outcomes):
//! device ids and identities are never labels.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use wardgate_core::{AuditKind, Denied};

/// Why the registry refused a peer. A closed set: metric label, audit reason and the
/// [`Denied`] label the adapter turns into its protocol's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DenyReason {
    /// Nothing proved who the peer is (plain transport, no token). 4.01 / 401.
    NoIdentity,
    /// An identity no device holds, with `unknown = "reject"`. 4.01 / 401.
    UnknownIdentity,
    /// The device holding the identity is revoked. 4.01 / 401.
    Revoked,
    /// An identity no device holds, with `unknown = "quarantine"`: remembered for approval, and
    /// refused where its readings cannot be held (a handshake or registration, a write naming no
    /// device). 4.03 / 403.
    Quarantined,
    /// An unknown identity's readings would be held, but the quarantine is at its bound (all
    /// identities, or this one's share). 4.03 / 403.
    QuarantineFull,
    /// The device may not use this protocol over this transport. 4.03 / 403.
    ProtocolNotAllowed,
    /// The device may not write this message class. 4.03 / 403.
    ClassNotAllowed,
    /// The device may not write to this resource. 4.03 / 403.
    ResourceNotAllowed,
    /// The device may not submit readings as the device id it claims. 4.03 / 403.
    NotSpeakingFor,
}

impl DenyReason {
    /// Every reason, in label order.
    pub const ALL: [DenyReason; 9] = [
        DenyReason::NoIdentity,
        DenyReason::UnknownIdentity,
        DenyReason::Revoked,
        DenyReason::Quarantined,
        DenyReason::QuarantineFull,
        DenyReason::ProtocolNotAllowed,
        DenyReason::ClassNotAllowed,
        DenyReason::ResourceNotAllowed,
        DenyReason::NotSpeakingFor,
    ];

    /// The fixed label (`not_speaking_for`).
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::NoIdentity => "no_identity",
            DenyReason::UnknownIdentity => "unknown_identity",
            DenyReason::Revoked => "revoked",
            DenyReason::Quarantined => "quarantined",
            DenyReason::QuarantineFull => "quarantine_full",
            DenyReason::ProtocolNotAllowed => "protocol_not_allowed",
            DenyReason::ClassNotAllowed => "class_not_allowed",
            DenyReason::ResourceNotAllowed => "resource_not_allowed",
            DenyReason::NotSpeakingFor => "not_speaking_for",
        }
    }

    /// What the authorizer answers.
    pub fn denied(self) -> Denied {
        match self {
            DenyReason::NoIdentity | DenyReason::UnknownIdentity | DenyReason::Revoked => {
                Denied::Unauthenticated(self.as_str())
            }
            _ => Denied::Forbidden(self.as_str()),
        }
    }

    /// The audit kind: failures to prove an accepted identity are `auth_failure`, refusals of a
    /// proven device's request are `acl_denied`.
    pub fn audit_kind(self) -> AuditKind {
        match self {
            DenyReason::NoIdentity
            | DenyReason::UnknownIdentity
            | DenyReason::Revoked
            | DenyReason::Quarantined
            | DenyReason::QuarantineFull => AuditKind::AuthFailure,
            _ => AuditKind::AclDenied,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// `reason` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// A [`DenyReason`] label.
    pub reason: &'static str,
}

/// `outcome` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// Fixed outcome (`ok`, `invalid`, `write_failed`, `not_found`).
    pub outcome: &'static str,
}

/// Every registry metric. Cheap to clone (shared handles).
#[derive(Debug, Clone)]
pub struct RegistryMetrics {
    /// Requests and lookups refused, by reason (every one, also when its log line is
    /// suppressed).
    pub denials: Family<ReasonLabel, Counter>,
    /// Devices in the registry (revoked ones included).
    pub devices: Gauge,
    /// The credential generation (moves on every change).
    pub generation: Gauge,
    /// Unknown identities waiting for approval (quarantine).
    pub pending: Gauge,
    /// Pending identities dropped because the list was full.
    pub pending_evictions: Counter,
    /// Edits through the API, by outcome.
    pub edits: Family<OutcomeLabel, Counter>,
    /// Reloads of the file, by outcome.
    pub reloads: Family<OutcomeLabel, Counter>,
    /// Denial log lines and audit events coalesced into a later one (rate limit).
    pub denials_coalesced: Counter,
    /// Readings of unknown identities, by what became of them: `held` (accepted into
    /// quarantine), `released` (approved: routed to the uplinks), `discarded` (dismissed, or
    /// refused by the approved device's ACL).
    pub quarantine: Family<OutcomeLabel, Counter>,
    /// Pre-resolved `denials` handles, indexed by [`DenyReason`]: the family lookup hashes and
    /// locks, which a flood of denials should not.
    hot: Arc<[Counter]>,
}

impl Default for RegistryMetrics {
    fn default() -> Self {
        let denials: Family<ReasonLabel, Counter> = Family::default();
        let hot = DenyReason::ALL
            .iter()
            .map(|r| {
                denials
                    .get_or_create(&ReasonLabel { reason: r.as_str() })
                    .clone()
            })
            .collect();
        RegistryMetrics {
            denials,
            devices: Gauge::default(),
            generation: Gauge::default(),
            pending: Gauge::default(),
            pending_evictions: Counter::default(),
            edits: Family::default(),
            reloads: Family::default(),
            denials_coalesced: Counter::default(),
            quarantine: Family::default(),
            hot,
        }
    }
}

impl RegistryMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry;
        r.register(
            "wardgate_registry_denials",
            "Requests and credential lookups the device registry refused, by reason",
            m.denials.clone(),
        );
        r.register(
            "wardgate_registry_devices",
            "Devices in the registry (revoked included)",
            m.devices.clone(),
        );
        r.register(
            "wardgate_registry_generation",
            "Credential generation; moves on every registry change",
            m.generation.clone(),
        );
        r.register(
            "wardgate_registry_pending_identities",
            "Unknown identities waiting for approval (unknown = quarantine)",
            m.pending.clone(),
        );
        r.register(
            "wardgate_registry_pending_evictions",
            "Pending identities dropped because the list was full",
            m.pending_evictions.clone(),
        );
        r.register(
            "wardgate_registry_edits",
            "Registry edits, by outcome",
            m.edits.clone(),
        );
        r.register(
            "wardgate_registry_reloads",
            "Registry file reloads, by outcome",
            m.reloads.clone(),
        );
        r.register(
            "wardgate_registry_denials_coalesced",
            "Denial log lines and audit events folded into a later one by the rate limit",
            m.denials_coalesced.clone(),
        );
        r.register(
            "wardgate_registry_quarantine_readings",
            "Readings of unknown identities: held in quarantine, released on approval, discarded",
            m.quarantine.clone(),
        );
        m
    }

    /// Counts `n` quarantined readings that became `outcome` (`held`, `released`, `discarded`).
    pub fn quarantined(&self, outcome: &'static str, n: u64) {
        self.quarantine
            .get_or_create(&OutcomeLabel { outcome })
            .inc_by(n);
    }

    pub(crate) fn denied(&self, reason: DenyReason) {
        if let Some(c) = self.hot.get(reason.index()) {
            c.inc();
        }
    }

    pub(crate) fn edit(&self, outcome: &'static str) {
        self.edits.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    pub(crate) fn reload(&self, outcome: &'static str) {
        self.reloads.get_or_create(&OutcomeLabel { outcome }).inc();
    }
}
