//! The contract between the durable outbox and the uplinks that drain it.
//!
//! Each uplink owns one [`OutboxCursor`]. It asks for the next deliveries in outbox order
//! (which keeps per-device order), sends them, and acknowledges each one only after its peer
//! acknowledged it (MQTT PUBACK for that packet, HTTP 2xx). A reading leaves the outbox for that
//! uplink only on [`OutboxCursor::ack`]. After a connection loss the uplink calls
//! [`OutboxCursor::rewind`] and everything not yet acknowledged is delivered again, in order, with
//! the same reading ids (at-least-once; the backend de-duplicates on `id`).
//!
//! A delivery can also be handed back: [`OutboxCursor::nack`] (it failed or timed out; still
//! owed to this uplink, handed out again) and [`OutboxCursor::release`] (this uplink gives it
//! up; the outbox's [`crate::Router`] places it on another uplink). Every ack, nack and release
//! is reported as a [`crate::DeliveryOutcome`] by outboxes that publish outcomes.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use ulid::Ulid;

use crate::outcome::NackReason;
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

    /// These deliveries failed (`why`): they stay owed to this uplink and are handed out
    /// again, with `attempts` one higher, counted and reported as a failed / timed-out outcome.
    ///
    /// Order: the cursor moves back to the lowest nacked delivery, like [`Self::rewind`] from
    /// there: that delivery and every unacknowledged one after it (including ones still in
    /// flight) are handed out again in outbox order, so a device's readings reach the peer in
    /// order again after the retry (duplicates allowed). Deliveries in flight below it are not
    /// repeated. Seqs not handed out by this cursor, or already acknowledged, are ignored.
    /// Cheap and non-blocking.
    fn nack(&mut self, seqs: &[u64], why: NackReason);

    /// This uplink gives these deliveries up (for example its circuit is open): the outbox asks
    /// its router for another uplink, with this one excluded, and moves each reading there in one
    /// durable step, so at every instant (crash included) it is owed to this uplink or to the
    /// new one, never to none. The receiving uplink's cursor hands it out before any later
    /// reading it has not had acknowledged (it moves back to the released seq, like a rewind
    /// from there), which keeps per-device order on the receiving uplink.
    ///
    /// A delivery no other uplink can take stays owed to this one and is treated like a
    /// [`Self::nack`] (handed out again, counted, logged once). Seqs not handed out by this
    /// cursor, or already acknowledged, are ignored. Cheap and non-blocking (the move is
    /// committed by the store's writer, batched like acknowledgements).
    fn release(&mut self, seqs: &[u64]);
}

/// The future of a running uplink: drains its cursor until shutdown, logging its own failures.
pub type UplinkTask = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// An uplink component: built from its configuration (validated, files read, metrics and its
/// health check registered), not yet running. `C` is the outbox's cursor type, so core does not
/// depend on the store.
///
/// Building is where everything fallible happens; [`Uplink::start`] cannot fail. The gateway
/// builds every component first and starts them only when all built (model: linkerd's
/// `Config::build` then `App::spawn`), so a bad uplink stops start-up before anything runs.
pub trait Uplink<C: OutboxCursor>: Send + 'static {
    /// The configured name: its cursor, health check (`uplink.<name>`) and metric label.
    fn name(&self) -> &str;

    /// Starts draining `cursor` until `shutdown` is cancelled.
    fn start(self: Box<Self>, cursor: C, shutdown: crate::Shutdown) -> UplinkTask;
}
