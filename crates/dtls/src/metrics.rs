//! DTLS metrics (prometheus-client, explicit registry). Labels are fixed reason strings only:
//! never a peer address or an identity.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// `reason` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Fixed reason.
    pub reason: &'static str,
}

/// Every DTLS metric. Cheap to clone (shared handles).
#[derive(Debug, Clone, Default)]
pub struct DtlsMetrics {
    /// Handshakes completed.
    pub handshakes: Counter,
    /// Handshakes that failed or were refused, by reason (`unknown_identity`, `bad_key`,
    /// `unknown_certificate`, `timeout`, `rate_limited`, `sessions_full`, `handshakes_full`,
    /// `source_full`, `library_panic` (caught; the session is dropped),
    /// `replayed_hello`, `no_shared_suite`, `protocol_error`).
    pub handshake_failures: Family<ReasonLabel, Counter>,
    /// HelloVerifyRequests sent (each for a ClientHello without a valid cookie).
    pub hello_verify_sent: Counter,
    /// Datagrams dropped before or outside a session, by reason (`garbage`, `no_session`,
    /// `plaintext_queue_full`, `before_established`, `send_backlog_full`).
    pub dropped: Family<ReasonLabel, Counter>,
    /// Sessions closed, by reason (`idle`, `peer_closed`, `revoked`, `replaced`, `error`,
    /// `shutdown`).
    pub sessions_closed: Family<ReasonLabel, Counter>,
    /// Sessions now open (established and in handshake).
    pub sessions: Gauge,
    /// Handshakes now in progress.
    pub handshakes_in_progress: Gauge,
    /// Established sessions whose secrets a tap asked for (`[monitor.capture] keylog_file`),
    /// by outcome: `logged`, or `not_seen` (the library's key expansion was not observed).
    pub session_keys: Family<ReasonLabel, Counter>,
}

/// Every handshake failure reason, created at 0 at registration so dashboards and alert rules
/// find the family (and each series) before the first failure.
pub(crate) const HANDSHAKE_FAILURE_REASONS: [&str; 12] = [
    "unknown_identity",
    "bad_key",
    "unknown_certificate",
    "timeout",
    "rate_limited",
    "sessions_full",
    "handshakes_full",
    "source_full",
    "library_panic",
    "replayed_hello",
    "no_shared_suite",
    "protocol_error",
];

impl DtlsMetrics {
    /// Registers every metric under `wardgate_dtls_*`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = DtlsMetrics::default();
        for reason in HANDSHAKE_FAILURE_REASONS {
            let _ = m.handshake_failures.get_or_create(&ReasonLabel { reason });
        }
        let r = registry.sub_registry_with_prefix("wardgate_dtls");
        r.register(
            "handshakes",
            "DTLS handshakes completed",
            m.handshakes.clone(),
        );
        r.register(
            "handshake_failures",
            "DTLS handshakes failed or refused, by reason",
            m.handshake_failures.clone(),
        );
        r.register(
            "hello_verify_sent",
            "HelloVerifyRequests sent (stateless cookie exchange)",
            m.hello_verify_sent.clone(),
        );
        r.register(
            "dropped_datagrams",
            "Datagrams dropped before or outside a DTLS session, by reason",
            m.dropped.clone(),
        );
        r.register(
            "sessions_closed",
            "DTLS sessions closed, by reason",
            m.sessions_closed.clone(),
        );
        r.register("sessions", "DTLS sessions open", m.sessions.clone());
        r.register(
            "handshakes_in_progress",
            "DTLS handshakes in progress",
            m.handshakes_in_progress.clone(),
        );
        r.register(
            "session_keys",
            "DTLS sessions whose secrets were asked for by the capture key log, by outcome",
            m.session_keys.clone(),
        );
        m
    }

    pub(crate) fn session_keys(&self, outcome: &'static str) {
        self.session_keys
            .get_or_create(&ReasonLabel { reason: outcome })
            .inc();
    }

    pub(crate) fn fail(&self, reason: &'static str) {
        self.handshake_failures
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    pub(crate) fn drop_datagram(&self, reason: &'static str) {
        self.dropped.get_or_create(&ReasonLabel { reason }).inc();
    }

    pub(crate) fn closed(&self, reason: &'static str) {
        self.sessions_closed
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }
}
