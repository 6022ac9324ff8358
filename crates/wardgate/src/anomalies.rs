//! `[monitor.anomalies]`: the monitor thread's anomaly events become `security`-class readings
//! from the gateway itself (`device` = `[gateway] id`), stored and delivered like any other
//! reading on the priority lane, plus a WARN log line and an audit record (`anomaly`).
//!
//! The monitor thread must never wait, so its sink only `try_send`s on a bounded queue
//! (`queue_events`); a full queue drops the event and counts it
//! (`wardgate_monitor_anomalies_dropped_total`; the event is still counted by kind). One task
//! takes the queue, audits and submits each event through [`IngestPipeline::submit_own`] and
//! waits until it is durable; a store that is busy or full is retried every second for up to
//! [`RETRY_FOR`], then the event is dropped and counted.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use wardgate_core::{AuditEvent, AuditKind, AuditSink, IngestPipeline, MessageClass, Protocol};
use wardgate_monitor::{Anomaly, AnomalyMetrics};

/// How long a busy store is retried for one event.
const RETRY_FOR: Duration = Duration::from_secs(30);

/// The monitor's sink: queues each event for [`AnomalyStore::run`], never waits.
pub(crate) fn sink(
    tx: mpsc::Sender<Anomaly>,
    metrics: AnomalyMetrics,
) -> Box<dyn FnMut(Anomaly) + Send> {
    Box::new(move |a| {
        if tx.try_send(a).is_err() {
            metrics.dropped();
        }
    })
}

/// Takes the anomaly queue to the store.
pub(crate) struct AnomalyStore {
    pub(crate) rx: mpsc::Receiver<Anomaly>,
    pub(crate) pipeline: IngestPipeline,
    /// The gateway's id: the device of its own readings.
    pub(crate) device: String,
    pub(crate) audit: Arc<dyn AuditSink>,
    pub(crate) metrics: AnomalyMetrics,
}

impl AnomalyStore {
    /// Runs until the monitor thread ends (its sink dropped) and the queue is empty.
    pub(crate) async fn run(mut self) {
        while let Some(a) = self.rx.recv().await {
            a.log();
            self.audit.record(AuditEvent {
                kind: AuditKind::Anomaly,
                actor: a.device.clone(),
                peer: a.peer,
                transport: None,
                subject: a.port.map(|p| format!("port {p}")),
                reason: a.kind.as_str(),
            });
            self.store(&a).await;
        }
    }

    async fn store(&self, a: &Anomaly) {
        let deadline = tokio::time::Instant::now() + RETRY_FOR;
        loop {
            let submitted = self.pipeline.submit_own(
                &self.device,
                Protocol::Coap,
                MessageClass::Security,
                a.records(),
            );
            let result = match submitted {
                Ok(pending) => pending.await,
                Err(e) => Err(e),
            };
            match result {
                Ok(_) => {
                    self.metrics.stored();
                    return;
                }
                Err(e) if e.is_retryable() && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => {
                    tracing::error!(anomaly = a.kind.as_str(), error = %e, "an anomaly event was not stored");
                    self.metrics.dropped();
                    return;
                }
            }
        }
    }
}
