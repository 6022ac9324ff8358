//! [`AuditLog`]: the non-blocking [`AuditSink`] in front of the writer thread.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use wardgate_core::audit::{AuditEvent, AuditSink};

use crate::error::AuditError;
use crate::metrics::AuditMetrics;
use crate::options::AuditOptions;
use crate::record::{self, Draft, RecordKind};
use crate::writer::Writer;

/// Most records written (and fsynced) as one batch.
const MAX_BATCH: usize = 4096;

enum Msg {
    /// An event and the drops counted just before it (its `dropped_before`). Boxed (as is
    /// `Hold`) so a queue slot, allocated up front for the whole capacity, stays ~32 bytes.
    Event(Box<AuditEvent>, u64),
    /// Answer once everything before this is durable.
    Flush(Sender<Result<(), AuditError>>),
    /// Write what came before, acknowledge, then wait until the receiver's sender is dropped.
    Hold(Box<(Sender<()>, Receiver<()>)>),
    /// Write `audit_stopped`, answer, and end the thread.
    Close(Sender<Result<(), AuditError>>),
}

#[derive(Debug, Default)]
struct Shared {
    /// Events dropped since the last one that made it into the queue.
    pending_drops: AtomicU64,
    closed: AtomicBool,
}

/// The audit trail: hash-chained JSON lines written by one writer thread (see the crate docs).
/// Share it as `Arc<AuditLog>` / `Arc<dyn AuditSink>`.
pub struct AuditLog {
    tx: SyncSender<Msg>,
    shared: Arc<Shared>,
    metrics: AuditMetrics,
    thread: Mutex<Option<JoinHandle<()>>>,
    path: PathBuf,
}

impl fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.path)
            .field("closed", &self.shared.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Keeps the writer paused while it lives (see [`AuditLog::hold_writer`]).
#[derive(Debug)]
pub struct WriterHold {
    _release: Sender<()>,
}

impl AuditLog {
    /// Opens (or creates) the log at `opts.path`: loads the key, resumes the chain (or starts
    /// a new file after a damaged tail), writes and fsyncs `audit_started`, and starts the
    /// writer thread. Blocking file I/O: call it at start-up, not from a socket task.
    pub fn open(opts: &AuditOptions, metrics: AuditMetrics) -> Result<AuditLog, AuditError> {
        if opts.queue_capacity == 0 {
            return Err(AuditError::Invalid(
                "queue_capacity must be at least 1".into(),
            ));
        }
        let mut writer = Writer::open(opts, metrics.clone())?;
        let (tx, rx) = mpsc::sync_channel(opts.queue_capacity);
        let shared = Arc::new(Shared::default());
        let thread = {
            let shared = Arc::clone(&shared);
            let metrics = metrics.clone();
            std::thread::Builder::new()
                .name("wardgate-audit".into())
                .spawn(move || run(&mut writer, &rx, &shared, &metrics))
                .map_err(|e| AuditError::io(&opts.path, "starting the writer thread for", e))?
        };
        Ok(AuditLog {
            tx,
            shared,
            metrics,
            thread: Mutex::new(Some(thread)),
            path: opts.path.clone(),
        })
    }

    /// The active file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The counters this log updates.
    pub fn metrics(&self) -> &AuditMetrics {
        &self.metrics
    }

    /// Blocks until everything recorded before this call is written and fsynced. `Err` if that
    /// batch failed (its records were counted as dropped) or the log is closed.
    pub fn flush(&self) -> Result<(), AuditError> {
        let (tx, rx) = mpsc::channel();
        self.tx
            .send(Msg::Flush(tx))
            .map_err(|_| AuditError::Closed)?;
        rx.recv().map_err(|_| AuditError::Closed)?
    }

    /// Writes what is queued and `audit_stopped`, fsyncs, and joins the writer thread. Later
    /// events are counted as dropped. Idempotent; `Drop` calls it. Blocks (file I/O).
    pub fn close(&self) -> Result<(), AuditError> {
        let handle = match self.thread.lock() {
            Ok(mut t) => t.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        let Some(handle) = handle else {
            return Ok(());
        };
        self.shared.closed.store(true, Ordering::SeqCst);
        let (tx, rx) = mpsc::channel();
        let result = match self.tx.send(Msg::Close(tx)) {
            Ok(()) => rx.recv().unwrap_or(Err(AuditError::Closed)),
            Err(_) => Err(AuditError::Closed),
        };
        if handle.join().is_err() {
            tracing::error!("audit writer thread panicked");
        }
        result
    }

    /// Pauses the writer until the returned guard is dropped, after it has written everything
    /// recorded before this call. Meant for tests and drills: while held, events fill the queue
    /// and then are dropped exactly as when the disk is slow.
    pub fn hold_writer(&self) -> Result<WriterHold, AuditError> {
        let (ack_tx, ack_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel();
        self.tx
            .send(Msg::Hold(Box::new((ack_tx, release_rx))))
            .map_err(|_| AuditError::Closed)?;
        ack_rx.recv().map_err(|_| AuditError::Closed)?;
        Ok(WriterHold {
            _release: release_tx,
        })
    }

    /// Counts one dropped event and owes `owed` (it and any drops it was carrying) to the next
    /// event that is queued.
    fn dropped(&self, owed: u64) {
        self.metrics.drop_events(1);
        self.shared.pending_drops.fetch_add(owed, Ordering::AcqRel);
    }
}

impl AuditSink for AuditLog {
    /// Never blocks: a full queue (or a closed log) drops the event and counts it.
    fn record(&self, event: AuditEvent) {
        if self.shared.closed.load(Ordering::Acquire) {
            self.dropped(1);
            return;
        }
        let carried = self.shared.pending_drops.swap(0, Ordering::AcqRel);
        match self.tx.try_send(Msg::Event(Box::new(event), carried)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped(1 + carried);
            }
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::error!(error = %e, "closing the audit log failed");
        }
    }
}

/// The writer thread: batch what is queued, write it, fsync once, answer flushes.
fn run(writer: &mut Writer, rx: &Receiver<Msg>, shared: &Shared, metrics: &AuditMetrics) {
    // Drops owed to the next record after a failed write.
    let mut carry = 0u64;
    let mut batch: Vec<Draft> = Vec::new();
    let mut waiters: Vec<Sender<Result<(), AuditError>>> = Vec::new();
    let mut closer = None;
    while let Ok(first) = rx.recv() {
        let mut hold = None;
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Event(e, dropped) => batch.push(Draft::from_event(*e, dropped)),
                Msg::Flush(tx) => waiters.push(tx),
                Msg::Hold(pair) => hold = Some(*pair),
                Msg::Close(tx) => {
                    let mut stopped = Draft::internal(RecordKind::Stopped, "closed");
                    stopped.dropped_before = shared.pending_drops.swap(0, Ordering::AcqRel);
                    batch.push(stopped);
                    closer = Some(tx);
                }
            }
            if batch.len() < MAX_BATCH && hold.is_none() && closer.is_none() {
                next = rx.try_recv().ok();
            }
        }
        let outcome = if batch.is_empty() {
            Ok(())
        } else {
            if let Some(d) = batch.first_mut() {
                d.dropped_before += std::mem::take(&mut carry);
            }
            writer.write(std::mem::take(&mut batch)).map_err(|f| {
                metrics.drop_events(f.lost);
                carry += f.carry;
                f.error
            })
        };
        for w in waiters.drain(..) {
            let _ = w.send(match &outcome {
                Ok(()) => Ok(()),
                Err(e) => Err(AuditError::Write(std::io::Error::new(
                    e.kind(),
                    e.to_string(),
                ))),
            });
        }
        if let Some((ack, release)) = hold {
            let _ = ack.send(());
            // Returns when the guard is dropped.
            let _ = release.recv();
        }
        if let Some(tx) = closer.take() {
            let _ = tx.send(outcome.map_err(AuditError::Write));
            break;
        }
    }
    // Whatever raced with close is counted, never lost silently.
    for msg in rx.try_iter() {
        match msg {
            Msg::Event(..) => metrics.drop_events(1),
            Msg::Flush(tx) | Msg::Close(tx) => {
                let _ = tx.send(Err(AuditError::Closed));
            }
            Msg::Hold(..) => {}
        }
    }
    let (seq, head) = writer.head();
    tracing::info!(last_seq = seq, head = %record::hex(&head), "audit log closed; audit chain head");
}
