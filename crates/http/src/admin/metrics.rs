//! Admin API metrics. Labels come from closed sets (reasons, actions, outcomes): never a token
//! id, a device id or an address.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    action: &'static str,
    outcome: &'static str,
}

/// The admin API's counters. Cheap to clone (shared handles).
#[derive(Debug, Clone, Default)]
pub struct AdminMetrics {
    auth_failures: Family<Reason, Counter>,
    actions: Family<ActionLabels, Counter>,
    handshake_failures: Family<Reason, Counter>,
    pub(crate) feed_clients: Gauge,
    feed_dropped: Counter,
}

impl AdminMetrics {
    /// Registers the counters: `wardgate_admin_auth_failures_total{reason}`,
    /// `wardgate_admin_actions_total{action,outcome}`,
    /// `wardgate_admin_tls_handshake_failures_total{reason}`, `wardgate_admin_feed_clients`,
    /// `wardgate_admin_feed_dropped_total`.
    pub fn register(registry: &mut Registry) -> AdminMetrics {
        let m = AdminMetrics::default();
        registry.register(
            "wardgate_admin_auth_failures",
            "Admin API requests refused for their credentials (or rate limited)",
            m.auth_failures.clone(),
        );
        registry.register(
            "wardgate_admin_actions",
            "Admin API registry edits by action and outcome (ok, refused)",
            m.actions.clone(),
        );
        registry.register(
            "wardgate_admin_tls_handshake_failures",
            "Admin API TLS handshakes that failed or timed out",
            m.handshake_failures.clone(),
        );
        registry.register(
            "wardgate_admin_feed_clients",
            "Clients of the status page's live feed of readings now",
            m.feed_clients.clone(),
        );
        registry.register(
            "wardgate_admin_feed_dropped",
            "Live-feed clients disconnected for falling too far behind",
            m.feed_dropped.clone(),
        );
        m
    }

    pub(crate) fn feed_dropped(&self) {
        self.feed_dropped.inc();
    }

    pub(crate) fn auth_failed(&self, reason: &'static str) {
        self.auth_failures.get_or_create(&Reason { reason }).inc();
    }

    pub(crate) fn action(&self, action: &'static str, ok: bool) {
        let outcome = if ok { "ok" } else { "refused" };
        self.actions
            .get_or_create(&ActionLabels { action, outcome })
            .inc();
    }

    pub(crate) fn handshake_failed(&self, reason: &'static str) {
        self.handshake_failures
            .get_or_create(&Reason { reason })
            .inc();
    }
}
