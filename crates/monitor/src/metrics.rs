//! The capture's metrics (prometheus-client, explicit registry; no labels) and the anomaly
//! detectors' (labelled by kind, a closed set).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// Every capture metric. Cheap to clone (the counters are shared handles).
#[derive(Debug, Clone, Default)]
pub struct CaptureMetrics {
    packets: Counter,
    bytes: Counter,
    rotated: Counter,
    dropped: Counter,
    write_errors: Counter,
    keylog_lines: Counter,
}

impl CaptureMetrics {
    /// Registers every capture metric in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = CaptureMetrics::default();
        registry.register(
            "wardgate_monitor_capture_packets",
            "Datagrams written to capture files",
            m.packets.clone(),
        );
        registry.register(
            "wardgate_monitor_capture_bytes",
            "Datagram bytes (UDP payload, before redaction) written to capture files",
            m.bytes.clone(),
        );
        registry.register(
            "wardgate_monitor_capture_files_rotated",
            "Capture files closed because they reached max_file_bytes or max_file_age",
            m.rotated.clone(),
        );
        registry.register(
            "wardgate_monitor_capture_dropped",
            "Datagrams not captured because the capture queue was full (ingest is never slowed)",
            m.dropped.clone(),
        );
        registry.register(
            "wardgate_monitor_capture_write_errors",
            "Capture writes that failed (the packet is lost; the next one starts a new file), key log lines included",
            m.write_errors.clone(),
        );
        registry.register(
            "wardgate_monitor_capture_keylog_lines",
            "DTLS session secrets written to the capture key log ([monitor.capture] keylog_file)",
            m.keylog_lines.clone(),
        );
        m
    }

    /// Key log lines written so far.
    pub fn keylog_lines(&self) -> u64 {
        self.keylog_lines.get()
    }

    /// Datagrams written so far.
    pub fn packets(&self) -> u64 {
        self.packets.get()
    }

    /// Datagram bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.get()
    }

    /// Files rotated so far.
    pub fn files_rotated(&self) -> u64 {
        self.rotated.get()
    }

    /// Datagrams dropped at the full queue so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.get()
    }

    /// Failed writes so far.
    pub fn write_errors(&self) -> u64 {
        self.write_errors.get()
    }

    pub(crate) fn written(&self, datagram_bytes: usize) {
        self.packets.inc();
        self.bytes.inc_by(datagram_bytes as u64);
    }

    pub(crate) fn rotated(&self) {
        self.rotated.inc();
    }

    pub(crate) fn drop_one(&self) {
        self.dropped.inc();
    }

    pub(crate) fn write_failed(&self) {
        self.write_errors.inc();
    }

    pub(crate) fn keylog_line(&self) {
        self.keylog_lines.inc();
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

/// The anomaly detectors' metrics. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct AnomalyMetrics {
    fired: Family<KindLabel, Counter>,
    dropped: Counter,
    suppressed: Counter,
    delivered: Counter,
}

impl AnomalyMetrics {
    /// Registers every anomaly metric in `registry`, each kind at 0 so alert rules and
    /// dashboards find every series before the first event.
    pub fn register(registry: &mut Registry) -> Self {
        let m = AnomalyMetrics::default();
        for k in crate::anomaly::AnomalyKind::ALL {
            let _ = m.fired.get_or_create(&KindLabel { kind: k.as_str() });
        }
        registry.register(
            "wardgate_monitor_anomalies",
            "Anomaly events detected, by kind (each becomes a security-class reading; in interface mode, a line of anomalies.jsonl)",
            m.fired.clone(),
        );
        registry.register(
            "wardgate_monitor_anomalies_dropped",
            "Anomaly events that did not become a reading (the event queue was full or the store refused it for good) or, in interface mode, could not be written",
            m.dropped.clone(),
        );
        registry.register(
            "wardgate_monitor_anomalies_suppressed",
            "Anomaly events beyond [monitor.anomalies] max_events_per_minute: counted by kind, not stored",
            m.suppressed.clone(),
        );
        registry.register(
            "wardgate_monitor_anomaly_readings",
            "Anomaly events stored as security-class readings",
            m.delivered.clone(),
        );
        m
    }

    /// Counts an event of `kind`.
    pub fn fired(&self, kind: crate::anomaly::AnomalyKind) {
        self.fired
            .get_or_create(&KindLabel {
                kind: kind.as_str(),
            })
            .inc();
    }

    /// Events of `kind` so far.
    pub fn count(&self, kind: crate::anomaly::AnomalyKind) -> u64 {
        self.fired
            .get_or_create(&KindLabel {
                kind: kind.as_str(),
            })
            .get()
    }

    /// Counts an event that did not become a reading.
    pub fn dropped(&self) {
        self.dropped.inc();
    }

    /// Counts an event over the per-minute limit; returns the total so far.
    pub fn suppress(&self) -> u64 {
        self.suppressed.inc() + 1
    }

    /// Events over the per-minute limit so far.
    pub fn suppressed(&self) -> u64 {
        self.suppressed.get()
    }

    /// Counts an event stored as a reading.
    pub fn stored(&self) {
        self.delivered.inc();
    }
}
