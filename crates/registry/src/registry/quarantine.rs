//! Quarantine: holding the readings of proven but unknown identities until an administrator
//! decides.
//!
//! With `unknown = "quarantine"`, a write from an identity the transport proved but no device
//! holds (a client certificate: TLS or DTLS checked the signature, the registry does not know
//! the fingerprint) is granted [`Grant::Hold`]: the reading is stored, acknowledged to the
//! device, and owed only to the outbox's quarantine lane, which delivers nothing. The identity
//! is listed in the pending list with the readings held for it.
//!
//! The lane (`wardgate::quarantine`) asks [`Registry::judge_held`] about every held reading,
//! again whenever [`Registry::quarantine_epoch`] moves:
//! - a device holds the identity now (approved by `upsert`) → the reading is checked against
//!   that device's ACL (protocol over its transport, class, the device id it names); allowed →
//!   [`HeldVerdict::Release`] (routed to the uplinks); refused → discarded;
//! - the identity was dismissed after the reading arrived → discarded;
//! - otherwise → still held.
//!
//! What cannot be held is refused as before (`quarantined`, 4.03) and listed: a PSK identity no
//! device holds (there is no key to finish the handshake with), a registration, a write that
//! names no device. The bounds (`[registry] quarantine_max_readings` in all,
//! `quarantine_max_per_identity` each) are counted from what the lane has seen: a burst can
//! pass them by what is still on its way to the store (at most the bus capacity).

use std::net::SocketAddr;
use std::sync::PoisonError;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use wardgate_core::reading::valid_device_id;
use wardgate_core::{
    AuditEvent, AuditKind, AuthRequest, Denied, Grant, Identity, MessageClass, Protocol,
    TransportKind,
};

use super::{Actor, Registry, gauge};
use crate::metrics::DenyReason;
use crate::table::{Table, printable, protocol_bit};

/// Dismissals remembered (so held readings from before a dismissal are discarded).
const DISMISSALS: usize = crate::pending::CAPACITY;

/// How much quarantine may hold (`[registry]` in `gateway.toml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuarantineLimits {
    /// Readings held at most, all identities together.
    pub max_readings: u64,
    /// Readings held at most per identity.
    pub max_per_identity: u64,
}

impl Default for QuarantineLimits {
    fn default() -> Self {
        QuarantineLimits {
            max_readings: 10_000,
            max_per_identity: 1_000,
        }
    }
}

/// What becomes of one held reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeldVerdict {
    /// Nobody decided yet: keep holding it.
    Hold,
    /// Its identity was approved and the approving device may send it: deliver it.
    Release,
    /// Dismissed, or refused by the approving device's ACL (the reason, a fixed label).
    Discard(&'static str),
}

/// What the quarantine lane knows of a held reading (from its `wardgate.reading/1` JSON).
#[derive(Debug, Clone, Copy)]
pub struct HeldReading<'a> {
    /// `source.identity`: the unknown identity that sent it.
    pub identity: &'a Identity,
    /// `source.transport`.
    pub transport: TransportKind,
    /// `protocol`.
    pub protocol: Protocol,
    /// `class`.
    pub class: MessageClass,
    /// `device`: the id it was stored under (what the sender claimed).
    pub device: &'a str,
    /// `received_at`.
    pub received: SystemTime,
}

/// Whether two identities name the same thing (certificate fingerprints in any hex case).
fn same(a: &Identity, b: &Identity) -> bool {
    a.kind() == b.kind() && crate::pending::same_value(a.kind(), a.value(), b.value())
}

impl Registry {
    /// A write from `identity`, proven and unknown, under `unknown = "quarantine"`: held when it
    /// names a device and the bounds allow, else refused (and listed either way).
    /// With `peek`, nothing is noted (the same request is asked again with its body).
    pub(super) fn hold(
        &self,
        table: &Table,
        identity: &Identity,
        req: &AuthRequest<'_>,
        peek: bool,
    ) -> Result<Grant, Denied> {
        let actor = Actor::Proven(identity);
        let claimed = req.claimed_device;
        let peer = Some(req.peer);
        if claimed.is_empty() || !valid_device_id(claimed.as_bytes()) {
            let (kind, value) = (identity.kind(), identity.value());
            return Err(self.unknown(table, kind, value, actor, peer, Some(claimed)));
        }
        let limits = self.opts.quarantine;
        let full = {
            let mut p = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            if !peek {
                let now = self.opts.clock.now();
                if p.note(identity.kind(), identity.value(), Some(req.peer.addr), now) {
                    self.metrics.pending_evictions.inc();
                }
                self.metrics.pending.set(gauge(p.len()));
            }
            if !peek && !p.contains(identity) {
                // Not listable (an unprintable or huge value): nothing an administrator could
                // approve, so nothing to hold for.
                None
            } else {
                Some(
                    self.held_total.load(Ordering::Relaxed) >= limits.max_readings
                        || p.held(identity) >= limits.max_per_identity,
                )
            }
        };
        match full {
            None => Err(self.deny(DenyReason::Quarantined, actor, peer, Some(claimed))),
            Some(true) => Err(self.deny(DenyReason::QuarantineFull, actor, peer, Some(claimed))),
            Some(false) => Ok(Grant::Hold(claimed.to_owned())),
        }
    }

    /// Moves whenever a held reading's fate may have changed (a registry change, a
    /// dismissal): the quarantine lane then judges what it holds again.
    pub fn quarantine_epoch(&self) -> u64 {
        self.generation
            .load(Ordering::SeqCst)
            .wrapping_add(self.dismissals.load(Ordering::SeqCst))
    }

    /// What becomes of a held reading now (see the module doc).
    pub fn judge_held(&self, r: &HeldReading<'_>) -> HeldVerdict {
        let s = self.snapshot();
        if let Some(dev) = s.table.by_identity(r.identity) {
            return if dev.revoked {
                HeldVerdict::Discard("revoked")
            } else if !dev.allows_protocol(protocol_bit(r.protocol, r.transport)) {
                HeldVerdict::Discard(DenyReason::ProtocolNotAllowed.as_str())
            } else if !dev.allows_class(r.class) {
                HeldVerdict::Discard(DenyReason::ClassNotAllowed.as_str())
            } else if !valid_device_id(r.device.as_bytes()) || !dev.speaks_for(r.device) {
                HeldVerdict::Discard(DenyReason::NotSpeakingFor.as_str())
            } else {
                HeldVerdict::Release
            };
        }
        let dismissed = self
            .dismissed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .any(|(id, at)| same(id, r.identity) && r.received <= *at);
        if dismissed {
            HeldVerdict::Discard("dismissed")
        } else {
            HeldVerdict::Hold
        }
    }

    /// The quarantine lane's accounting: `delta` readings of `identity` are held (positive:
    /// first seen, counted as `held`; negative: released or discarded). A held identity
    /// missing from the pending list (after a restart, or evicted) is listed again, so an
    /// administrator sees it.
    pub fn count_held(&self, identity: &Identity, addr: Option<SocketAddr>, delta: i64) {
        let n = delta.unsigned_abs();
        if delta >= 0 {
            self.metrics.quarantined("held", n);
            self.held_total.fetch_add(n, Ordering::Relaxed);
        } else {
            let _ = self
                .held_total
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                    Some(t.saturating_sub(n))
                });
        }
        let known = self.snapshot().table.by_identity(identity).is_some();
        let mut p = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if delta > 0 && !known && !p.contains(identity) {
            let now = self.opts.clock.now();
            if p.note(identity.kind(), identity.value(), addr, now) {
                self.metrics.pending_evictions.inc();
            }
            self.metrics.pending.set(gauge(p.len()));
        }
        p.add_held(identity, delta);
    }

    /// Readings held now, as the quarantine lane counted them.
    pub fn held_readings(&self) -> u64 {
        self.held_total.load(Ordering::Relaxed)
    }

    /// The quarantine lane decided `n` readings of `identity`: counted and audited (one
    /// record per decision batch, never per reading).
    pub fn quarantine_decided(&self, identity: &Identity, verdict: HeldVerdict, n: u64) {
        let (outcome, reason) = match verdict {
            HeldVerdict::Hold => return,
            HeldVerdict::Release => ("released", "quarantine_released"),
            HeldVerdict::Discard(why) => ("discarded", why),
        };
        self.metrics.quarantined(outcome, n);
        tracing::info!(
            identity = %printable(&identity.to_string()),
            readings = n,
            outcome,
            reason,
            "quarantined readings decided"
        );
        let kind = match verdict {
            HeldVerdict::Release => "quarantine_released",
            _ => "quarantine_discarded",
        };
        self.audit.record(
            AuditEvent::new(AuditKind::RegistryChange, kind)
                .actor(identity.to_string())
                .subject(format!("{n} readings ({reason})")),
        );
    }

    /// Remembers a dismissal of `identity` now: what it sent before is discarded.
    pub(super) fn note_dismissal(&self, identity: Identity) {
        let now = self.opts.clock.now();
        let mut d = self
            .dismissed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        d.retain(|(id, _)| !same(id, &identity));
        if d.len() >= DISMISSALS {
            d.remove(0);
        }
        d.push((identity, now));
        drop(d);
        self.dismissals.fetch_add(1, Ordering::SeqCst);
    }
}
