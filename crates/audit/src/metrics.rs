//! The audit log's metrics (prometheus-client, explicit registry). No labels.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

/// Every audit metric. Cheap to clone (the counters are shared handles).
#[derive(Debug, Clone, Default)]
pub struct AuditMetrics {
    records: Counter,
    dropped: Counter,
    write_errors: Counter,
}

impl AuditMetrics {
    /// Registers every audit metric in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = AuditMetrics::unregistered();
        registry.register(
            "wardgate_audit_records",
            "Audit records written and fsynced (events and the log's own records)",
            m.records.clone(),
        );
        registry.register(
            "wardgate_audit_dropped",
            "Audit events not written: queue full, log closed, or a failed write (the next record says how many in dropped_before)",
            m.dropped.clone(),
        );
        registry.register(
            "wardgate_audit_write_errors",
            "Audit batches whose write or fsync failed",
            m.write_errors.clone(),
        );
        m
    }

    /// Metrics that no registry exposes (tests, tools).
    pub fn unregistered() -> Self {
        AuditMetrics::default()
    }

    /// Records written so far.
    pub fn records(&self) -> u64 {
        self.records.get()
    }

    /// Events dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.get()
    }

    /// Failed batches so far.
    pub fn write_errors(&self) -> u64 {
        self.write_errors.get()
    }

    pub(crate) fn written(&self, n: u64) {
        self.records.inc_by(n);
    }

    pub(crate) fn drop_events(&self, n: u64) {
        self.dropped.inc_by(n);
    }

    pub(crate) fn write_failed(&self) {
        self.write_errors.inc();
    }
}
