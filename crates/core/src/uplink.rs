//! The contract between the durable outbox and the uplinks that drain it.
//!
//! Each uplink owns one [`OutboxCursor`]. It asks for the next deliveries in outbox order
//! (which keeps per-device order), sends them, and acknowledges each one only after its peer
//! acknowledged it (MQTT PUBACK for that packet, HTTP 2xx). A reading leaves the outbox for that
//! uplink only on [`OutboxCursor::ack`]. After a connection loss the uplink calls
//! [`OutboxCursor::rewind`] and everything not yet acknowledged is delivered again, in order, with
//! the same reading ids (at-least-once; the backend de-duplicates on `id`).

use std::future::Future;

use bytes::Bytes;
use ulid::Ulid;

use crate::reading::MessageClass;

/// One reading owed to one uplink.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// Outbox sequence number: strictly increasing in append order, the ack handle.
    pub seq: u64,
    /// Reading id.
    pub id: Ulid,
    /// Device id.
    pub device: String,
    /// Message class.
    pub class: MessageClass,
    /// The `wardgate.reading/1` JSON.
    pub json: Bytes,
    /// How many times this reading was handed to this uplink before (0 on first delivery).
    pub attempts: u32,
}

/// Why the outbox could not hand out deliveries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutboxError {
    /// The store is closed (shutdown).
    #[error("outbox closed")]
    Closed,
    /// Reading from disk failed.
    #[error("outbox read failed: {0}")]
    Io(String),
}

/// An uplink's view of the outbox. Not shared: each uplink has its own cursor.
pub trait OutboxCursor: Send + 'static {
    /// Waits until at least one delivery beyond the cursor exists, then returns up to `max` of
    /// them in outbox order and advances the cursor past them. Never returns an empty vector
    /// unless `max` is 0.
    fn next(
        &mut self,
        max: usize,
    ) -> impl Future<Output = Result<Vec<Delivery>, OutboxError>> + Send;

    /// The peer acknowledged these deliveries: they are no longer owed to this uplink.
    /// Cheap and non-blocking (batched by the store).
    fn ack(&mut self, seqs: &[u64]);

    /// Moves the cursor back to the oldest unacknowledged delivery (after a reconnect), so every
    /// delivery handed out but not acknowledged is handed out again.
    fn rewind(&mut self);
}
