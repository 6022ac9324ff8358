//! Metrics and typed events of HTTP(S) ingest. Labels come from closed sets (status codes the
//! server answers, refusal reasons, message classes): never a device id, a token or an address.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::time::Instant;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    class: &'static str,
}

/// How often a refusal log line may appear per reason; the lines in between are counted and
/// reported with the next one.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// HTTP(S) ingest counters. Cheap to clone (shared handles).
#[derive(Debug, Clone, Default)]
pub struct IngestMetrics {
    responses: Family<StatusLabels, Counter>,
    refused: Family<ReasonLabels, Counter>,
    accepted: Family<ClassLabels, Counter>,
    handshake_failures: Family<ReasonLabels, Counter>,
    log: Arc<Mutex<Vec<LogGate>>>,
}

/// One refusal reason's log throttle: when it was last logged, and how many since.
#[derive(Debug)]
struct LogGate {
    reason: &'static str,
    last: Instant,
    unlogged: u64,
}

impl IngestMetrics {
    /// Registers `wardgate_http_ingest_responses_total{status}`,
    /// `wardgate_http_ingest_refused_total{reason}`,
    /// `wardgate_http_ingest_readings_accepted_total{class}` and
    /// `wardgate_http_ingest_tls_handshake_failures_total{reason}`.
    pub fn register(registry: &mut Registry) -> IngestMetrics {
        let m = IngestMetrics::default();
        registry.register(
            "wardgate_http_ingest_responses",
            "HTTP ingest answers by status code",
            m.responses.clone(),
        );
        registry.register(
            "wardgate_http_ingest_refused",
            "HTTP ingest requests refused, by reason",
            m.refused.clone(),
        );
        registry.register(
            "wardgate_http_ingest_readings_accepted",
            "Readings accepted over HTTP (durable when answered), by class",
            m.accepted.clone(),
        );
        registry.register(
            "wardgate_http_ingest_tls_handshake_failures",
            "HTTP ingest TLS handshakes that failed or timed out",
            m.handshake_failures.clone(),
        );
        m
    }

    pub(crate) fn response(&self, status: u16) {
        self.responses
            .get_or_create(&StatusLabels {
                status: status_label(status),
            })
            .inc();
    }

    pub(crate) fn accepted(&self, class: wardgate_core::MessageClass) {
        self.accepted
            .get_or_create(&ClassLabels {
                class: class.as_str(),
            })
            .inc();
    }

    pub(crate) fn handshake_failed(&self, reason: &'static str) {
        self.handshake_failures
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Counts one refusal for `reason`; `Some(n)` when a line should be logged now for the `n`
    /// refusals since the last one.
    fn gate(&self, reason: &'static str, now: Instant) -> Option<u64> {
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        match log.iter_mut().find(|g| g.reason == reason) {
            Some(g) => {
                g.unlogged += 1;
                if now.saturating_duration_since(g.last) < LOG_EVERY {
                    return None;
                }
                g.last = now;
                Some(std::mem::take(&mut g.unlogged))
            }
            None => {
                // Bounded: reasons are a closed set of labels.
                log.push(LogGate {
                    reason,
                    last: now,
                    unlogged: 0,
                });
                Some(1)
            }
        }
    }
}

fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        201 => "201",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        408 => "408",
        413 => "413",
        415 => "415",
        429 => "429",
        500 => "500",
        503 => "503",
        _ => "other",
    }
}

/// A request was refused: counted every time, logged at most once a minute per reason with
/// the number of refusals since the last line.
#[derive(Debug)]
pub(crate) struct Refusal<'a> {
    pub(crate) peer: SocketAddr,
    /// A fixed label.
    pub(crate) reason: &'static str,
    pub(crate) status: u16,
    /// What the device was told (never a secret, never internals).
    pub(crate) detail: &'a str,
}

impl Refusal<'_> {
    pub(crate) fn emit(&self, m: &IngestMetrics) {
        m.refused
            .get_or_create(&ReasonLabels {
                reason: self.reason,
            })
            .inc();
        if let Some(n) = m.gate(self.reason, Instant::now()) {
            if self.status >= 500 {
                tracing::warn!(peer = %self.peer, reason = self.reason, status = self.status, refusals = n, detail = %self.detail, "HTTP ingest request refused");
            } else {
                tracing::info!(peer = %self.peer, reason = self.reason, status = self.status, refusals = n, detail = %self.detail, "HTTP ingest request refused");
            }
        }
    }
}
