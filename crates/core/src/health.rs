//! Readiness reporting. Components (listeners, uplinks, the store) each get a [`HealthReporter`]
//! and flip it as their state changes; `/readyz` reads a [`Health`] snapshot. Passed in, not
//! global.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;

/// What kind of component a check belongs to; `/readyz` is ready when every listener and the
/// store are ready and at least one uplink is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ComponentKind {
    /// A southbound listener (CoAP socket, HTTP ingest, MQTT subscriber).
    Listener,
    /// An uplink to the cloud.
    Uplink,
    /// The durable outbox.
    Store,
}

/// One component's reported state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Component kind.
    pub kind: ComponentKind,
    /// Whether it is ready.
    pub ready: bool,
    /// Human-readable detail (why not ready, or what it is bound to).
    pub detail: String,
}

/// Shared readiness table.
#[derive(Debug, Clone, Default)]
pub struct Health {
    inner: Arc<Mutex<BTreeMap<String, Check>>>,
    /// A process without uplinks (`wardgate monitor`): readiness needs none.
    no_uplinks: bool,
}

/// The gateway's overall readiness, as served by `/readyz`.
#[derive(Debug, Clone, Serialize)]
pub struct Readiness {
    /// True when every listener and store check passes and at least one uplink is ready.
    pub ready: bool,
    /// Every check by name.
    pub checks: BTreeMap<String, Check>,
    /// Names of the failing checks (or `uplinks` when no uplink is ready).
    pub failing: Vec<String>,
}

impl Health {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty table for a process that has no uplinks by design (the interface monitor):
    /// ready when every component is, without the "at least one uplink" rule.
    pub fn without_uplinks() -> Self {
        Health {
            no_uplinks: true,
            ..Self::default()
        }
    }

    /// Registers a component, not ready until it says so.
    pub fn reporter(&self, name: impl Into<String>, kind: ComponentKind) -> HealthReporter {
        let name = name.into();
        self.set(&name, kind, false, "starting".into());
        HealthReporter {
            health: self.clone(),
            name,
            kind,
        }
    }

    fn set(&self, name: &str, kind: ComponentKind, ready: bool, detail: String) {
        let mut map = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        map.insert(
            name.to_owned(),
            Check {
                kind,
                ready,
                detail,
            },
        );
    }

    /// One component's check, by name (`uplink.<name>`, `coap`, ...).
    pub fn check(&self, name: &str) -> Option<Check> {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// Evaluates readiness now.
    pub fn readiness(&self) -> Readiness {
        let checks = self
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut failing: Vec<String> = checks
            .iter()
            .filter(|(_, c)| c.kind != ComponentKind::Uplink && !c.ready)
            .map(|(n, _)| n.clone())
            .collect();
        let uplinks: Vec<_> = checks
            .values()
            .filter(|c| c.kind == ComponentKind::Uplink)
            .collect();
        if !self.no_uplinks && (uplinks.is_empty() || !uplinks.iter().any(|c| c.ready)) {
            failing.push("uplinks".into());
        }
        Readiness {
            ready: failing.is_empty(),
            checks,
            failing,
        }
    }
}

/// A component's handle on its own health entry.
#[derive(Debug, Clone)]
pub struct HealthReporter {
    health: Health,
    name: String,
    kind: ComponentKind,
}

impl HealthReporter {
    /// Marks the component ready.
    pub fn ready(&self, detail: impl Into<String>) {
        self.health.set(&self.name, self.kind, true, detail.into());
    }

    /// Marks the component not ready, with the reason.
    pub fn not_ready(&self, detail: impl Into<String>) {
        self.health.set(&self.name, self.kind, false, detail.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_needs_listeners_store_and_one_uplink() {
        let h = Health::new();
        let coap = h.reporter("coap", ComponentKind::Listener);
        let store = h.reporter("store", ComponentKind::Store);
        let a = h.reporter("uplink.a", ComponentKind::Uplink);
        let _b = h.reporter("uplink.b", ComponentKind::Uplink);
        assert!(!h.readiness().ready);
        coap.ready("udp 0.0.0.0:5683");
        store.ready("ok");
        assert_eq!(h.readiness().failing, vec!["uplinks".to_string()]);
        let monitor = Health::without_uplinks();
        let iface = monitor.reporter("interface", ComponentKind::Listener);
        assert!(!monitor.readiness().ready);
        iface.ready("eth1");
        assert!(monitor.readiness().ready);
        a.ready("connected");
        assert!(h.readiness().ready);
        store.not_ready("disk full");
        assert_eq!(h.readiness().failing, vec!["store".to_string()]);
    }
}
