//! The in-process ingest bus: adapters hand encoded readings to the store's writer.
//!
//! Backpressure rule: the bus is a bounded queue of requests. [`Bus::submit`] never waits for
//! room: when the queue is full it fails at once with [`IngestError::Busy`], and the adapter
//! answers the device with its protocol's "try later" (CoAP 5.03 with Max-Age, HTTP 503 with
//! Retry-After) so the device keeps the reading. Nothing is dropped silently. Once queued, the
//! request resolves when the store has made the readings durable (or refused them by quota).

use std::fmt;

use tokio::sync::{mpsc, oneshot};

use crate::reading::Encoded;

/// Why an ingest request was not accepted. Each maps to a protocol answer that tells the device to
/// keep its data and retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    /// The bus queue is full (transient overload).
    #[error("ingest queue is full")]
    Busy,
    /// The outbox quota is reached and the overflow policy is `reject`.
    #[error("outbox is full")]
    StoreFull,
    /// The store failed to commit (disk error); the reading was not stored.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The gateway is shutting down.
    #[error("gateway is shutting down")]
    ShuttingDown,
}

impl IngestError {
    /// Short, fixed label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            IngestError::Busy => "busy",
            IngestError::StoreFull => "store_full",
            IngestError::Unavailable(_) => "store_unavailable",
            IngestError::ShuttingDown => "shutting_down",
        }
    }
}

/// One ingest request: readings from one device message, committed together.
pub struct IngestRequest {
    /// The readings, already encoded.
    pub readings: Vec<Encoded>,
    /// Resolved by the store once the readings are durable, or with the reason they are not.
    pub done: oneshot::Sender<Result<(), IngestError>>,
}

impl fmt::Debug for IngestRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IngestRequest")
            .field("readings", &self.readings.len())
            .finish()
    }
}

/// Sending half of the bus, cloned into every adapter.
#[derive(Debug, Clone)]
pub struct Bus {
    tx: mpsc::Sender<IngestRequest>,
}

/// Receiving half of the bus, owned by the store writer.
pub type BusReceiver = mpsc::Receiver<IngestRequest>;

impl Bus {
    /// A bus holding at most `capacity` pending requests.
    pub fn new(capacity: usize) -> (Bus, BusReceiver) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (Bus { tx }, rx)
    }

    /// Queues readings for durable storage and waits until they are durable.
    ///
    /// Fails at once with [`IngestError::Busy`] when the queue is full.
    pub async fn submit(&self, readings: Vec<Encoded>) -> Result<(), IngestError> {
        let rx = self.enqueue(readings)?;
        rx.await.unwrap_or(Err(IngestError::ShuttingDown))
    }

    /// Queues readings without waiting; the returned receiver resolves when they are durable.
    /// Lets an adapter answer "accepted" separately from the enqueue (e.g. CoAP separate responses).
    pub fn enqueue(
        &self,
        readings: Vec<Encoded>,
    ) -> Result<oneshot::Receiver<Result<(), IngestError>>, IngestError> {
        let (done, rx) = oneshot::channel();
        match self.tx.try_send(IngestRequest { readings, done }) {
            Ok(()) => Ok(rx),
            Err(mpsc::error::TrySendError::Full(_)) => Err(IngestError::Busy),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(IngestError::ShuttingDown),
        }
    }

    /// Requests waiting in the queue (the `wardgate_bus_depth` gauge).
    pub fn depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// The queue's capacity.
    pub fn capacity(&self) -> usize {
        self.tx.max_capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reading::MessageClass;

    fn enc() -> Encoded {
        Encoded {
            id: ulid::Ulid::new(),
            device: "d".into(),
            class: MessageClass::Vital,
            protocol: crate::reading::Protocol::Coap,
            json: bytes::Bytes::from_static(b"{}"),
            held: false,
        }
    }

    #[tokio::test]
    async fn full_bus_answers_busy_instead_of_waiting() {
        let (bus, mut rx) = Bus::new(1);
        let _first = bus.enqueue(vec![enc()]).expect("room for one");
        assert_eq!(bus.depth(), 1);
        assert_eq!(bus.enqueue(vec![enc()]).err(), Some(IngestError::Busy));
        let req = rx.recv().await.expect("queued");
        assert_eq!(req.readings.len(), 1);
        assert_eq!(bus.depth(), 0);
    }

    #[tokio::test]
    async fn submit_resolves_with_the_store_verdict() {
        let (bus, mut rx) = Bus::new(4);
        let store = tokio::spawn(async move {
            let req = rx.recv().await.expect("request");
            let _ = req.done.send(Err(IngestError::StoreFull));
        });
        assert_eq!(bus.submit(vec![enc()]).await, Err(IngestError::StoreFull));
        store.await.expect("store task");
    }

    #[tokio::test]
    async fn dropped_store_means_shutting_down_not_success() {
        let (bus, rx) = Bus::new(4);
        drop(rx);
        assert_eq!(
            bus.submit(vec![enc()]).await,
            Err(IngestError::ShuttingDown)
        );
    }
}
