//! The capture's metrics (prometheus-client, explicit registry). No labels.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

/// Every capture metric. Cheap to clone (the counters are shared handles).
#[derive(Debug, Clone, Default)]
pub struct CaptureMetrics {
    packets: Counter,
    bytes: Counter,
    rotated: Counter,
    dropped: Counter,
    write_errors: Counter,
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
            "Capture writes that failed (the packet is lost; the next one starts a new file)",
            m.write_errors.clone(),
        );
        m
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
}
