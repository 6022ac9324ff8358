//! Quarantine: the bounded list of unknown identities waiting for an administrator.
//!
//! With `unknown = "quarantine"`, an identity no device holds (a PSK identity asked for in a
//! handshake, a certificate fingerprint, a proven identity reaching `authorize`) is remembered
//! here (identity, first and last seen, count, last peer address, readings held). An identity
//! that cannot be proven without a device holding it (a PSK identity: there is no key to finish
//! the handshake with) is only listed and refused with `Forbidden("quarantined")`; a proven one
//! (a client certificate) has its readings held in the outbox's quarantine lane, not delivered.
//! An administrator approves it by adding a device holding that identity (`Registry::upsert`),
//! which removes it from the list and releases what was held, or dismisses it (what was held
//! before the dismissal is discarded). The list holds at most [`CAPACITY`] identities; when
//! full, the one seen least recently is dropped (counted in
//! `wardgate_registry_pending_evictions`).

use std::net::SocketAddr;
use std::time::SystemTime;

use serde::Serialize;
use wardgate_core::{Identity, IdentityKind};

use crate::table::{Table, decode_hex32, to_hex};

/// Identities remembered at most.
pub(crate) const CAPACITY: usize = 256;
/// Longest identity value remembered (longer ones are refused but not listed).
const MAX_VALUE: usize = 128;

#[derive(Debug, Clone)]
struct Entry {
    identity: Identity,
    first_seen: SystemTime,
    last_seen: SystemTime,
    count: u64,
    last_peer: Option<SocketAddr>,
    /// Readings accepted into quarantine since it was listed (this process).
    held: u64,
}

/// An unknown identity waiting for approval, as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PendingView {
    /// `kind:value`, e.g. `psk:bed-99` or `x509-sha256:…`.
    pub identity: String,
    /// When it was first refused (RFC 3339).
    pub first_seen: String,
    /// When it was last refused (RFC 3339).
    pub last_seen: String,
    /// How often it was refused.
    pub count: u64,
    /// The address it last came from, when the transport said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_peer: Option<SocketAddr>,
    /// Readings from it accepted into quarantine since it was listed (held until approval or
    /// dismissal; after a restart, counted again as the quarantine lane is read).
    pub held: u64,
}

#[derive(Debug, Default)]
pub(crate) struct PendingList {
    entries: Vec<Entry>,
}

impl PendingList {
    /// Remembers a refusal of `kind:value`. Returns whether an older entry was evicted.
    pub(crate) fn note(
        &mut self,
        kind: IdentityKind,
        value: &str,
        peer: Option<SocketAddr>,
        now: SystemTime,
    ) -> bool {
        if let Some(e) = self
            .entries
            .iter_mut()
            .find(|e| e.identity.kind() == kind && same_value(kind, e.identity.value(), value))
        {
            e.last_seen = now;
            e.count = e.count.saturating_add(1);
            if peer.is_some() {
                e.last_peer = peer;
            }
            return false;
        }
        let Some(value) = canonical(kind, value) else {
            return false;
        };
        let mut evicted = false;
        if self.entries.len() >= CAPACITY
            && let Some((i, _)) = self
                .entries
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.last_seen)
        {
            self.entries.swap_remove(i);
            evicted = true;
        }
        self.entries.push(Entry {
            identity: Identity::new(kind, value),
            first_seen: now,
            last_seen: now,
            count: 1,
            last_peer: peer,
            held: 0,
        });
        evicted
    }

    /// Readings held for `identity` so far (0 when it is not listed).
    pub(crate) fn held(&self, identity: &Identity) -> u64 {
        self.find(identity).map_or(0, |e| e.held)
    }

    /// Adds `delta` held readings to a listed identity (never below 0).
    pub(crate) fn add_held(&mut self, identity: &Identity, delta: i64) {
        if let Some(e) = self.entries.iter_mut().find(|e| {
            e.identity.kind() == identity.kind()
                && same_value(identity.kind(), e.identity.value(), identity.value())
        }) {
            e.held = e.held.saturating_add_signed(delta);
        }
    }

    fn find(&self, identity: &Identity) -> Option<&Entry> {
        self.entries.iter().find(|e| {
            e.identity.kind() == identity.kind()
                && same_value(identity.kind(), e.identity.value(), identity.value())
        })
    }

    /// Whether `identity` is listed.
    pub(crate) fn contains(&self, identity: &Identity) -> bool {
        self.find(identity).is_some()
    }

    /// Drops identities that a device now holds (approved).
    pub(crate) fn retain_unknown(&mut self, table: &Table) {
        self.entries
            .retain(|e| table.by_identity(&e.identity).is_none());
    }

    /// Drops one identity (`kind:value`); the identity, when it was there.
    pub(crate) fn dismiss(&mut self, identity: &str) -> Option<Identity> {
        let i = self
            .entries
            .iter()
            .position(|e| e.identity.to_string() == identity)?;
        Some(self.entries.swap_remove(i).identity)
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn views(&self) -> Vec<PendingView> {
        let mut v: Vec<_> = self
            .entries
            .iter()
            .map(|e| PendingView {
                identity: e.identity.to_string(),
                first_seen: humantime::format_rfc3339_seconds(e.first_seen).to_string(),
                last_seen: humantime::format_rfc3339_seconds(e.last_seen).to_string(),
                count: e.count,
                last_peer: e.last_peer,
                held: e.held,
            })
            .collect();
        v.sort_by(|a, b| a.identity.cmp(&b.identity));
        v
    }
}

pub(crate) fn same_value(kind: IdentityKind, stored: &str, seen: &str) -> bool {
    match kind {
        IdentityKind::CertificateSha256 => {
            decode_hex32(seen).is_some_and(|fp| decode_hex32(stored) == Some(fp))
        }
        _ => stored == seen,
    }
}

/// The form an identity is listed in, or `None` when it is not worth listing (too long, not
/// printable: nothing an administrator could approve as typed).
fn canonical(kind: IdentityKind, value: &str) -> Option<String> {
    match kind {
        IdentityKind::CertificateSha256 => decode_hex32(value).map(|fp| to_hex(&fp)),
        _ => (!value.is_empty()
            && value.len() <= MAX_VALUE
            && value.bytes().all(|b| (0x20..0x7f).contains(&b)))
        .then(|| value.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_list_is_bounded_and_evicts_the_least_recently_seen() {
        let mut p = PendingList::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        for i in 0..CAPACITY {
            let t = t0 + Duration::from_secs(i as u64);
            assert!(!p.note(IdentityKind::PskIdentity, &format!("id-{i}"), None, t));
        }
        // id-0 is seen again, so id-1 is now the oldest.
        p.note(
            IdentityKind::PskIdentity,
            "id-0",
            None,
            t0 + Duration::from_secs(10_000),
        );
        assert!(p.note(
            IdentityKind::PskIdentity,
            "new",
            None,
            t0 + Duration::from_secs(10_001)
        ));
        assert_eq!(p.len(), CAPACITY);
        let ids: Vec<_> = p.views().into_iter().map(|v| v.identity).collect();
        assert!(ids.contains(&"psk:id-0".to_owned()));
        assert!(!ids.contains(&"psk:id-1".to_owned()));
        assert!(ids.contains(&"psk:new".to_owned()));
    }

    #[test]
    fn unprintable_or_huge_identities_are_not_listed() {
        let mut p = PendingList::default();
        let now = SystemTime::UNIX_EPOCH;
        p.note(IdentityKind::PskIdentity, "a\u{7}b", None, now);
        p.note(IdentityKind::PskIdentity, &"x".repeat(500), None, now);
        assert_eq!(p.len(), 0);
    }
}
