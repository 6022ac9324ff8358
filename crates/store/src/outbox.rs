//! The outbox handle, its writer task, and its statistics.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{Notify, oneshot, watch};
use tokio::time::{Instant, MissedTickBehavior};
use wardgate_core::{
    AllUplinks, BusReceiver, Clock, CommitObserver, Encoded, HealthReporter, IngestError,
    IngestRequest, MessageClass, OutcomeObserver, OutcomeReceiver, OutcomeSender, Router, Shutdown,
    SystemClock,
};

use crate::config::{Durability, OverflowPolicy, StoreConfig};
use crate::cursor::Cursor;
use crate::db::{Db, OpenReport, Outcome, State, Work};
use crate::error::{StoreError, is_corruption};
use crate::linger::Linger;
use crate::metrics::{
    AcksCommitted, CommitFailed, Committed, DropReason, Dropped, LingerOutcome, RejectReason,
    Rejected, Released, StoreMetrics, Unrouted,
};
use crate::route::Routing;
use crate::tail::Tail;

/// How often the writer refreshes the age gauges, checks for expired readings and flushes the
/// rate-limited overflow log.
const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// Acknowledgements wait at most this long for an ingest commit to carry them before they get a
/// transaction of their own. An acknowledgement only deletes a delivered reading (losing one
/// repeats a delivery, never loses a reading), so there is no point in paying a commit per
/// PUBACK batch: at a steady ingest rate the ingest commits take them along.
const ACK_COMMIT_DELAY: Duration = Duration::from_millis(20);
/// Most acknowledgements (per uplink lane) an ingest commit carries. While a backlog drains,
/// tens of thousands of acknowledgements a second arrive; a commit costs several microseconds per
/// acknowledgement (the delete and the delivery record), so a reading that had to carry all of
/// them (about 1,100 per 20 ms at 55k/s) waited 6 to 25 ms for its answer instead of 1 to 2. The
/// rest follow in commits of their own as soon as no request waits.
const ACKS_WITH_INGEST: usize = 256;
/// Most acknowledgements (per uplink lane) any one commit carries, so that a reading arriving
/// during an acknowledgement-only commit waits for a bounded one.
const ACKS_PER_COMMIT: usize = 2048;

/// How many queued acknowledgements a commit takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AckShare {
    /// Everything (a flush waits for them, the quota needs the room, or the store is closing).
    All,
    /// The commit carries readings: a small share, unless far behind.
    WithIngest,
    /// An acknowledgement-only commit.
    Alone,
}

/// An uplink is named in the readiness detail's backlog once its oldest owed reading is this old.
const BACKLOG_SHOWN_AFTER: Duration = Duration::from_secs(1);
/// The overflow (drop-oldest) warning is logged at most this often, with the count since.
const OVERFLOW_LOG_EVERY: Duration = Duration::from_secs(10);
/// Delivery outcome events kept per subscriber (about 100 bytes each). A subscriber further
/// behind loses the oldest and the loss is counted; publishing never waits for it.
const OUTCOME_EVENTS: usize = 4096;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn epoch_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// What the cursors watch: the last committed seq, and whether the writer has closed the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CommitMark {
    pub(crate) seq: u64,
    pub(crate) closed: bool,
}

/// Lanes per uplink: each configured uplink has a priority lane (alarms) and a normal lane
/// (every other class), each with its own persisted bit and its own cursor position, so an
/// alarm is handed out before a backlog of other readings owed to the same uplink (see
/// [`crate::Cursor`]).
pub(crate) const LANES: usize = 2;
/// The priority lane's index within an uplink's lanes.
pub(crate) const PRIORITY_LANE: usize = 0;
/// The normal lane's index within an uplink's lanes.
pub(crate) const NORMAL_LANE: usize = 1;

/// The lane a reading of `class` is owed on.
pub(crate) fn lane_of(class: MessageClass) -> usize {
    if class.is_priority() {
        PRIORITY_LANE
    } else {
        NORMAL_LANE
    }
}

/// The store's own names for an uplink's lanes, as registered in the file. The normal lane
/// keeps the uplink's name, so a file written before lanes existed keeps every reading owed
/// on it; the priority lane's name has a `/`, which uplink names cannot contain.
pub(crate) fn lane_names(uplinks: &[String]) -> Vec<String> {
    uplinks
        .iter()
        .flat_map(|u| [format!("{u}/alarm"), u.clone()])
        .collect()
}

/// Most uplinks one store can serve: each takes two of the file's 63 bits (an alarm lane and
/// a lane for the other classes). The gateway configures the quarantine lane as one of them,
/// so a configuration may name one fewer ([`MAX_CONFIGURED_UPLINKS`]).
pub const MAX_UPLINKS: usize = wardgate_core::MAX_UPLINKS / LANES;

/// Most `[[uplinks]]` a configuration may name: [`MAX_UPLINKS`] less the quarantine lane.
pub const MAX_CONFIGURED_UPLINKS: usize = MAX_UPLINKS - 1;

/// One lane of one configured uplink: its shared state.
#[derive(Debug)]
pub(crate) struct Slot {
    /// The uplink's index in configuration order.
    pub(crate) uplink: usize,
    /// The uplink's name, shared by every outcome event and used as the metric label.
    pub(crate) label: Arc<str>,
    pub(crate) mask: i64,
    /// Acknowledgements waiting for the writer's next transaction. Not bounded by a constant:
    /// refusing an ack would only cause a redelivery, and a cursor forwards each handed-out seq
    /// at most once, so this holds at most the readings handed out (bounded by the quota).
    pub(crate) acks: Mutex<Vec<u64>>,
    /// Releases waiting for the writer's next transaction: (seq, mask of the uplinks taking it
    /// over). Bounded like `acks`: a cursor releases each handed-out seq at most once.
    pub(crate) releases: Mutex<Vec<(u64, i64)>>,
    /// Seqs other uplinks' releases made owed to this one (committed), for its live cursor to
    /// move back to. Filled only while a cursor is live (a new cursor reads the table anyway);
    /// bounded by the readings released to this uplink.
    pub(crate) received: Mutex<Vec<u64>>,
    /// The lowest seq a committed cutover made owed to this lane, for its live cursor to rescan
    /// from (every owed reading from there on is handed out as new).
    pub(crate) rescan_from: Mutex<Option<u64>>,
    /// The "released but nobody can take them" warning was logged (until a release succeeds).
    pub(crate) unplaced_warned: AtomicBool,
    /// A cursor for this uplink is alive.
    pub(crate) cursor_live: AtomicBool,
    /// Readings at or below this seq may have been handed out before (by an earlier process or
    /// cursor): handing them out again counts as a replay.
    pub(crate) handed_high: AtomicU64,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) cfg: StoreConfig,
    pub(crate) path: PathBuf,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) metrics: StoreMetrics,
    pub(crate) db: Arc<Mutex<Db>>,
    pub(crate) writer_started: AtomicBool,
    pub(crate) slots: Vec<Slot>,
    pub(crate) tail: Mutex<Tail>,
    /// The writer's counters as of the last commit.
    pub(crate) snapshot: Mutex<State>,
    pub(crate) committed: watch::Sender<CommitMark>,
    /// Wakes the writer when acknowledgements or releases are queued.
    pub(crate) ack_wake: Notify,
    pub(crate) routing: Routing,
    pub(crate) outcomes: OutcomeSender,
    /// Called with every outcome before it is published.
    pub(crate) observer: Option<Arc<dyn OutcomeObserver>>,
    /// Called with every batch of readings once it is durable.
    pub(crate) on_commit: Option<Arc<dyn CommitObserver>>,
    /// Callers of [`Outbox::flush`] waiting for the next commit (true: it committed).
    pub(crate) flushes: Mutex<Vec<oneshot::Sender<bool>>>,
}

impl Inner {
    /// The queued acknowledgements, at most `most` per lane (the oldest first), and whether any
    /// were left behind.
    fn take_acks(&self, most: AckShare) -> (Vec<(usize, Vec<u64>)>, bool) {
        let mut left = false;
        let taken = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let mut q = lock(&s.acks);
                let n = match most {
                    AckShare::All => q.len(),
                    // Far behind: take a large share even with a request waiting, so that a
                    // steady ingest cannot hold the acknowledgements back for ever.
                    AckShare::WithIngest if q.len() > ACKS_PER_COMMIT => ACKS_PER_COMMIT,
                    AckShare::WithIngest => q.len().min(ACKS_WITH_INGEST),
                    AckShare::Alone => q.len().min(ACKS_PER_COMMIT),
                };
                let v: Vec<u64> = if n == q.len() {
                    std::mem::take(&mut *q)
                } else {
                    left = true;
                    q.drain(..n).collect()
                };
                (!v.is_empty()).then_some((i, v))
            })
            .collect();
        (taken, left)
    }

    fn take_releases(&self) -> Vec<(usize, Vec<(u64, i64)>)> {
        self.take_queued(|s| &s.releases)
    }

    fn take_queued<T>(&self, queue: impl Fn(&Slot) -> &Mutex<Vec<T>>) -> Vec<(usize, Vec<T>)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let v = std::mem::take(&mut *lock(queue(s)));
                (!v.is_empty()).then_some((i, v))
            })
            .collect()
    }

    fn now_ms(&self) -> i64 {
        epoch_ms(self.clock.now())
    }

    fn publish_gauges(&self, st: &State) {
        self.set_gauges(st, &per_uplink(&self.slots, st));
    }

    /// The depth gauges, from `st` and its per-uplink sums.
    fn set_gauges(&self, st: &State, sums: &[UplinkSum]) {
        self.metrics.set_depth(st.readings, st.bytes, st.deliveries);
        let now = self.now_ms();
        for u in sums {
            self.metrics
                .set_uplink(&u.uplink, u.readings, age(now, u.oldest));
        }
    }
}

/// One uplink's backlog summed over its lanes.
struct UplinkSum {
    uplink: Arc<str>,
    readings: u64,
    bytes: u64,
    oldest: Option<(u64, i64)>,
}

/// The lanes' counters summed per configured uplink, in configuration order.
fn per_uplink(slots: &[Slot], st: &State) -> Vec<UplinkSum> {
    let mut out: Vec<UplinkSum> = Vec::new();
    for (slot, u) in slots.iter().zip(&st.uplinks) {
        if out.len() <= slot.uplink {
            out.push(UplinkSum {
                uplink: slot.label.clone(),
                readings: 0,
                bytes: 0,
                oldest: None,
            });
        }
        let Some(sum) = out.get_mut(slot.uplink) else {
            continue;
        };
        sum.readings += u.owed;
        sum.bytes += u.owed_bytes;
        sum.oldest = match (sum.oldest, u.oldest) {
            (Some(a), Some(b)) => Some(if b.0 < a.0 { b } else { a }),
            (a, b) => a.or(b),
        };
    }
    out
}

fn age(now_ms: i64, oldest: Option<(u64, i64)>) -> Option<Duration> {
    oldest
        .map(|(_, ms)| Duration::from_millis(u64::try_from(now_ms.saturating_sub(ms)).unwrap_or(0)))
}

/// The readiness detail's account of a backlog: "owed: cloud 1234 readings (oldest 5.2 s), ..."
/// for every uplink that is owed something, or `None` when every uplink has caught up. A
/// backlog is not a failure (the outbox exists to hold it), so it does not make the store
/// unready; it makes a slow or absent uplink visible in `/readyz` and on the status page.
///
/// Readings in flight to an uplink that keeps up are owed too, for milliseconds; only an uplink
/// whose oldest owed reading is at least [`BACKLOG_SHOWN_AFTER`] old is named.
fn backlog_detail(now_ms: i64, uplinks: &[UplinkSum]) -> Option<String> {
    let owed: Vec<String> = uplinks
        .iter()
        // Held readings wait for a person, not for delivery (the pending list shows them).
        .filter(|u| &*u.uplink != wardgate_core::QUARANTINE)
        .filter_map(|u| {
            let oldest = age(now_ms, u.oldest)?;
            (u.readings > 0 && oldest >= BACKLOG_SHOWN_AFTER).then(|| {
                format!(
                    "{} {} readings (oldest {:.1} s)",
                    u.uplink,
                    u.readings,
                    oldest.as_secs_f64()
                )
            })
        })
        .collect();
    (!owed.is_empty()).then(|| format!("owed: {}", owed.join(", ")))
}

/// The durable outbox. Cheap to clone; every clone is the same store.
///
/// Open it once with [`Outbox::open`], run exactly one [`Outbox::run_writer`], and hand each
/// configured uplink its [`Cursor`].
#[derive(Debug, Clone)]
pub struct Outbox {
    inner: Arc<Inner>,
}

/// What [`Outbox::open_with`] takes beyond the config: the injected clock and the router.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Wall clock for receive stamps, expiry and ages.
    pub clock: Arc<dyn Clock>,
    /// Decides which uplinks each reading is owed to (and where released deliveries go).
    pub router: Arc<dyn Router>,
    /// Sees every delivery outcome synchronously (lossless, unlike
    /// [`Outbox::subscribe_outcomes`]); none by default.
    pub observer: Option<Arc<dyn OutcomeObserver>>,
    /// Sees every batch of readings once it is durable, before the devices are answered (the
    /// status board); none by default.
    pub on_commit: Option<Arc<dyn CommitObserver>>,
}

impl Default for OpenOptions {
    /// The system clock and [`AllUplinks`] (every reading owed to every uplink).
    fn default() -> Self {
        OpenOptions {
            clock: Arc::new(SystemClock),
            router: Arc::new(AllUplinks),
            observer: None,
            on_commit: None,
        }
    }
}

/// Outbox occupancy, for the admin API, `/readyz` and metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxStats {
    /// Readings held (owed to at least one uplink).
    pub readings: u64,
    /// Bytes of reading JSON held.
    pub bytes: u64,
    /// The configured reading quota.
    pub max_readings: u64,
    /// The configured byte quota.
    pub max_bytes: u64,
    /// Per uplink, in configuration order.
    pub uplinks: Vec<UplinkStats>,
}

/// One uplink's backlog.
#[derive(Debug, Clone, PartialEq)]
pub struct UplinkStats {
    /// The configured uplink name.
    pub uplink: String,
    /// Readings still owed to it.
    pub readings: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Age of the oldest reading still owed to it.
    pub oldest_age: Option<Duration>,
}

impl Outbox {
    /// Opens or creates the store at `cfg.path` (creating its directory), checks the schema,
    /// registers `uplinks` and runs crash recovery.
    ///
    /// Uplinks new to the file are owed only readings appended from now on. Uplinks that the
    /// file knows but `uplinks` no longer lists are released: their bits are cleared and
    /// readings owed to nobody are deleted (logged). If the last shutdown was not clean, the
    /// file is checked with `PRAGMA quick_check` and its counters recounted. A damaged file is
    /// [`StoreError::Corrupt`], whose message names the recovery command; nothing is changed.
    pub fn open(
        cfg: &StoreConfig,
        uplinks: &[String],
        metrics: StoreMetrics,
    ) -> Result<Outbox, StoreError> {
        Outbox::open_with(cfg, uplinks, metrics, OpenOptions::default())
    }

    /// [`Outbox::open`] with an injected wall clock (receive stamps, expiry, ages).
    pub fn open_with_clock(
        cfg: &StoreConfig,
        uplinks: &[String],
        metrics: StoreMetrics,
        clock: Arc<dyn Clock>,
    ) -> Result<Outbox, StoreError> {
        let opts = OpenOptions {
            clock,
            ..OpenOptions::default()
        };
        Outbox::open_with(cfg, uplinks, metrics, opts)
    }

    /// [`Outbox::open`] with an injected clock and router. The router's [`wardgate_core::UplinkSet`]
    /// indices are positions in `uplinks`.
    pub fn open_with(
        cfg: &StoreConfig,
        uplinks: &[String],
        metrics: StoreMetrics,
        opts: OpenOptions,
    ) -> Result<Outbox, StoreError> {
        let OpenOptions {
            clock,
            router,
            observer,
            on_commit,
        } = opts;
        if uplinks.len() > MAX_UPLINKS {
            return Err(StoreError::TooManyUplinks {
                count: uplinks.len(),
            });
        }
        let lanes = lane_names(uplinks);
        let (db, report) = Db::open(cfg, &lanes)?;
        log_open(cfg, &report);
        if cfg.durability == Durability::UnsafeNoFsync {
            tracing::warn!(
                path = %cfg.path.display(),
                "store.durability = \"unsafe-no-fsync\": readings are acknowledged before they are on \
                 disk; acknowledged readings CAN BE LOST on a crash or power loss"
            );
        }
        let state = db.state.clone();
        let last = state.next_seq.saturating_sub(1);
        let labels: Vec<Arc<str>> = uplinks.iter().map(|u| Arc::from(u.as_str())).collect();
        let slots = state
            .uplinks
            .iter()
            .enumerate()
            .map(|(i, u)| Slot {
                uplink: i / LANES,
                label: labels
                    .get(i / LANES)
                    .cloned()
                    .unwrap_or_else(|| Arc::from(u.name.as_str())),
                mask: u.mask(),
                acks: Mutex::new(Vec::new()),
                releases: Mutex::new(Vec::new()),
                received: Mutex::new(Vec::new()),
                rescan_from: Mutex::new(None),
                unplaced_warned: AtomicBool::new(false),
                cursor_live: AtomicBool::new(false),
                handed_high: AtomicU64::new(last),
            })
            .collect();
        let tail_bytes = usize::try_from(cfg.tail_bytes).unwrap_or(usize::MAX);
        let routing = Routing::new(
            router,
            uplinks.to_vec(),
            state
                .uplinks
                .chunks(LANES)
                .map(|l| [l[PRIORITY_LANE].mask(), l[NORMAL_LANE].mask()])
                .collect(),
        );
        let outcomes = OutcomeSender::new(OUTCOME_EVENTS, metrics.outcome_events_lost());
        let inner = Inner {
            cfg: cfg.clone(),
            path: db.path().to_owned(),
            clock,
            metrics,
            db: Arc::new(Mutex::new(db)),
            writer_started: AtomicBool::new(false),
            slots,
            tail: Mutex::new(Tail::new(last, cfg.tail_readings, tail_bytes)),
            snapshot: Mutex::new(state.clone()),
            committed: watch::Sender::new(CommitMark {
                seq: last,
                closed: false,
            }),
            ack_wake: Notify::new(),
            routing,
            outcomes,
            observer,
            on_commit,
            flushes: Mutex::new(Vec::new()),
        };
        for u in uplinks {
            inner.metrics.init_uplink(u);
        }
        inner.publish_gauges(&state);
        Ok(Outbox {
            inner: Arc::new(inner),
        })
    }

    /// The delivery cursor for one configured uplink. One live cursor per uplink: a second
    /// call fails with [`StoreError::CursorInUse`] until the first is dropped. A new cursor
    /// starts from the oldest reading still owed to the uplink.
    pub fn cursor(&self, uplink: &str) -> Result<Cursor, StoreError> {
        let idx = self.uplink_index(uplink)?;
        Cursor::new(self.inner.clone(), idx)
    }

    /// The configured uplink names, in configuration order.
    pub fn uplinks(&self) -> Vec<Arc<str>> {
        self.inner
            .slots
            .iter()
            .step_by(LANES)
            .map(|s| s.label.clone())
            .collect()
    }

    fn uplink_index(&self, uplink: &str) -> Result<usize, StoreError> {
        self.inner
            .slots
            .iter()
            .step_by(LANES)
            .position(|s| &*s.label == uplink)
            .ok_or_else(|| StoreError::UnknownUplink(uplink.to_owned()))
    }

    /// Subscribes to delivery outcomes (every ack, nack and release of every cursor, with its
    /// latency). Bounded: a subscriber that falls more than a few thousand events behind loses
    /// the oldest, counted in `wardgate_store_outcome_events_lost_total`; delivery never waits
    /// for a subscriber. Events are published only while someone subscribes.
    pub fn subscribe_outcomes(&self) -> OutcomeReceiver {
        self.inner.outcomes.subscribe()
    }

    /// Waits until everything the cursors queued before this call (acknowledgements, releases)
    /// is committed. Tests and tools use it to observe a settled store; uplinks never need it.
    /// Fails when the commit fails or the writer is not running (closed, or never started:
    /// then it waits for the writer's first commit).
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        lock(&self.inner.flushes).push(tx);
        self.inner.ack_wake.notify_one();
        match rx.await {
            Ok(true) => Ok(()),
            Ok(false) => Err(StoreError::NotCommitted),
            Err(_) => Err(StoreError::Closed),
        }
    }

    /// Depth, bytes and oldest undelivered age, overall and per uplink, as of the last commit.
    /// Reads memory only.
    pub fn stats(&self) -> Result<OutboxStats, StoreError> {
        let st = lock(&self.inner.snapshot).clone();
        let now = self.inner.now_ms();
        Ok(OutboxStats {
            readings: st.readings,
            bytes: st.bytes,
            max_readings: self.inner.cfg.max_readings,
            max_bytes: self.inner.cfg.max_bytes,
            uplinks: per_uplink(&self.inner.slots, &st)
                .into_iter()
                .map(|u| UplinkStats {
                    uplink: u.uplink.to_string(),
                    readings: u.readings,
                    bytes: u.bytes,
                    oldest_age: age(now, u.oldest),
                })
                .collect(),
        })
    }

    /// Stops every write through this outbox at once, skipping the clean-shutdown steps (no
    /// final commit, no checkpoint, no clean marker): the file is left as a crash leaves it.
    /// Waits for a commit in progress to finish; later requests are answered `Unavailable`.
    /// For crash tests and tools; the gateway shuts down through `run_writer`'s `shutdown`.
    #[doc(hidden)]
    pub fn abandon(&self) {
        lock(&self.inner.db).abandon();
    }

    /// What the outbox knows about reading `id`: the uplinks it is still owed to, and the
    /// delivery record (which uplinks acknowledged it, when). Reads the file on a connection of
    /// its own (never blocks the writer) and scans the readings held: call it from a blocking
    /// thread. See [`crate::ReadingTrace`].
    pub fn trace(&self, id: ulid::Ulid) -> Result<crate::ReadingTrace, StoreError> {
        crate::trace::trace(&self.inner.path, &self.inner.slots, id)
    }

    /// The database file.
    pub fn path(&self) -> &std::path::Path {
        &self.inner.path
    }

    #[cfg(test)]
    pub(crate) fn db(&self) -> Arc<Mutex<Db>> {
        self.inner.db.clone()
    }

    /// The writer: drains the bus, group-commits, and resolves each request's `done`.
    ///
    /// Group commit: after the first request it keeps taking requests for up to
    /// `commit_window` (or until `max_batch` readings), writes them in one transaction (one
    /// fsync), then resolves every request. Quotas are checked per request as it arrives.
    /// Acknowledgements from the cursors ride along in the same transactions.
    ///
    /// Returns after `shutdown` once the queue is drained and committed and the store is
    /// closed cleanly (final commit, WAL checkpoint, clean marker). Requests still queued at
    /// shutdown are committed, not dropped; the bus is closed so later ones fail fast.
    pub async fn run_writer(
        &self,
        rx: BusReceiver,
        shutdown: Shutdown,
        health: HealthReporter,
    ) -> Result<(), StoreError> {
        if self.inner.writer_started.swap(true, Ordering::SeqCst) {
            return Err(StoreError::WriterRunning);
        }
        let mut w = Writer::new(self.inner.clone(), health);
        w.run(rx, shutdown).await
    }
}

fn log_open(cfg: &StoreConfig, r: &OpenReport) {
    let path = cfg.path.display();
    if r.created {
        tracing::info!(%path, "created a new outbox store");
    }
    if let Some(took) = r.quick_check {
        tracing::warn!(
            %path,
            quick_check_ms = took.as_millis() as u64,
            "the outbox was not closed cleanly (crash or kill); quick_check passed, WAL replayed"
        );
    }
    for name in &r.added {
        if !r.created {
            tracing::info!(%path, uplink = %name, "new uplink: it is owed readings stored from now on");
        }
    }
    for rel in &r.released {
        tracing::warn!(
            %path,
            uplink = %rel.name,
            readings = rel.readings,
            "uplink no longer configured: released the readings it was still owed"
        );
    }
    if r.orphans_deleted > 0 {
        tracing::warn!(
            %path,
            readings = r.orphans_deleted,
            "deleted readings owed to no configured uplink"
        );
    }
    if r.adopted > 0 {
        tracing::warn!(
            %path,
            readings = r.adopted,
            "readings salvaged by `wardgate store recover` without their uplink list are owed to every configured uplink"
        );
    }
    if let Some(from) = r.migrated_from {
        tracing::info!(
            %path,
            from,
            to = crate::db::SCHEMA_VERSION,
            "migrated the outbox schema (older wardgate versions cannot open it any more)"
        );
    }
    if let Some((sr, sb, cr, cb)) = r.recount_fixed {
        tracing::warn!(
            %path,
            stored_readings = sr,
            stored_bytes = sb,
            counted_readings = cr,
            counted_bytes = cb,
            "outbox counters disagreed with the rows; corrected by a recount"
        );
    }
}

/// Requests collected for one commit.
#[derive(Debug, Default)]
struct Batch {
    readings: Vec<Encoded>,
    bytes: u64,
    /// Requests still waiting for the commit (empty in unsafe-no-fsync mode).
    dones: Vec<oneshot::Sender<Result<(), IngestError>>>,
    requests: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HealthState {
    /// Ready, with the backlog owed to the uplinks if there is one (refreshed with the gauges).
    Ready(Option<String>),
    Full,
    Failed(String),
    Closed,
}

#[derive(Debug, Default)]
struct OverflowLog {
    unlogged: u64,
    last: Option<Instant>,
}

impl OverflowLog {
    fn add(&mut self, n: u64) {
        self.unlogged += n;
        self.flush();
    }

    fn flush(&mut self) {
        if self.unlogged == 0 || self.last.is_some_and(|l| l.elapsed() < OVERFLOW_LOG_EVERY) {
            return;
        }
        tracing::warn!(
            dropped = self.unlogged,
            "outbox quota reached: dropped the oldest undelivered readings (store.overflow = \"drop-oldest\")"
        );
        self.unlogged = 0;
        self.last = Some(Instant::now());
    }
}

struct Writer {
    inner: Arc<Inner>,
    health: HealthReporter,
    reported: Option<HealthState>,
    failed: Option<String>,
    /// Committed counters (admission control works from these plus the open batch).
    readings: u64,
    bytes: u64,
    /// Under `reject`: the counters when a request was last refused; full until they shrink.
    full_at: Option<(u64, u64)>,
    overflow_log: OverflowLog,
    carry: Option<IngestRequest>,
    bus_open: bool,
    expire_due: bool,
    expire_again: bool,
    /// The delivery record is due for pruning (age or rows over their bound).
    prune_due: bool,
    /// The "router owed readings to nobody" warning was logged.
    unrouted_logged: bool,
    /// Cutovers of a commit that failed, for the next one.
    retry_cutovers: Vec<crate::db::CutoverWork>,
    /// Adaptive group commit (`commit_linger`).
    linger: Linger,
    /// What the uplinks are owed, for the readiness detail (`None`: nothing).
    backlog: Option<String>,
    /// Shutting down: every commit takes every queued acknowledgement.
    closing: bool,
    /// The last commit left acknowledgements behind (it took only its share).
    acks_left: bool,
}

impl Writer {
    fn new(inner: Arc<Inner>, health: HealthReporter) -> Self {
        let (readings, bytes) = {
            let st = lock(&inner.snapshot);
            (st.readings, st.bytes)
        };
        Writer {
            linger: Linger::new(inner.cfg.commit_linger),
            backlog: None,
            closing: false,
            acks_left: false,
            inner,
            health,
            reported: None,
            failed: None,
            readings,
            bytes,
            full_at: None,
            overflow_log: OverflowLog::default(),
            carry: None,
            bus_open: true,
            expire_due: false,
            expire_again: false,
            prune_due: false,
            unrouted_logged: false,
            retry_cutovers: Vec::new(),
        }
    }

    async fn run(&mut self, mut rx: BusReceiver, shutdown: Shutdown) -> Result<(), StoreError> {
        self.update_health();
        let mut housekeeping =
            tokio::time::interval_at(Instant::now() + HOUSEKEEPING, HOUSEKEEPING);
        housekeeping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // When the queued acknowledgements get a commit of their own if none took them before.
        let mut acks_due: Option<Instant> = None;
        loop {
            let mut batch = Batch::default();
            if let Some(req) = self.carry.take() {
                self.admit(&mut batch, req);
            } else {
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => break,
                    _ = housekeeping.tick() => self.housekeeping(),
                    () = std::future::ready(()), if self.expire_again => {
                        self.expire_again = false;
                        self.expire_due = true;
                    }
                    // Acknowledgements before requests: under `reject` near the quota, the
                    // room they free must count when the next request is admitted, so they
                    // are committed at once there; elsewhere they wait for a commit to join.
                    () = tokio::time::sleep_until(acks_due.unwrap_or_else(Instant::now)),
                        if acks_due.is_some() => {}
                    () = self.inner.ack_wake.notified(), if acks_due.is_none() => {
                        // A flush is waited for by someone: commit now.
                        if !self.near_reject_quota() && lock(&self.inner.flushes).is_empty() {
                            acks_due = Some(Instant::now() + ACK_COMMIT_DELAY);
                            continue;
                        }
                    }
                    req = rx.recv(), if self.bus_open => match req {
                        Some(req) => self.admit(&mut batch, req),
                        None => self.bus_open = false,
                    },
                    // Acknowledgements a commit left behind (it took only its share): after
                    // any waiting request, in a commit of their own.
                    () = std::future::ready(()), if self.acks_left => {}
                }
            }
            if batch.requests > 0 {
                self.gather(&mut rx, &mut batch, &shutdown).await;
            }
            // Every commit takes queued acknowledgements along, up to its share.
            self.commit(batch).await;
            acks_due = None;
        }
        self.drain(rx).await;
        self.close().await
    }

    /// Keeps taking requests for up to `commit_window` or `max_batch` readings, and longer
    /// while the adaptive linger expects more (see [`crate::linger`]).
    async fn gather(&mut self, rx: &mut BusReceiver, batch: &mut Batch, shutdown: &Shutdown) {
        let opened = Instant::now();
        let window_end = opened + self.inner.cfg.commit_window;
        // Requests caught while waiting only because of the linger; `None`: it never waited.
        let mut caught: Option<usize> = None;
        while batch.readings.len() < self.inner.cfg.max_batch && self.bus_open {
            let req = match rx.try_recv() {
                Ok(req) => req,
                Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => {
                    self.bus_open = false;
                    break;
                }
                Err(tokio::sync::mpsc::error::TryRecvError::Empty) => {
                    let now = Instant::now();
                    // Someone waits for a flush: never linger on their time.
                    let linger = if lock(&self.inner.flushes).is_empty() {
                        self.linger.deadline(opened, now, batch.readings.len())
                    } else {
                        None
                    };
                    let lingering = linger.is_some_and(|l| l > window_end.max(now));
                    let deadline = linger.map_or(window_end, |l| l.max(window_end));
                    if deadline <= now {
                        break;
                    }
                    if lingering {
                        caught.get_or_insert(0);
                    }
                    tokio::select! {
                        biased;
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep_until(deadline) => break,
                        req = rx.recv() => match req {
                            Some(req) => {
                                if lingering && let Some(c) = caught.as_mut() {
                                    *c += 1;
                                }
                                req
                            }
                            None => {
                                self.bus_open = false;
                                break;
                            }
                        },
                    }
                }
            };
            if batch.readings.len() + req.readings.len() > self.inner.cfg.max_batch {
                self.carry = Some(req);
                break;
            }
            self.admit(batch, req);
        }
        if let Some(caught) = caught {
            self.linger.lingered(Instant::now(), caught);
            self.inner.metrics.lingered(if caught == 0 {
                LingerOutcome::Empty
            } else {
                LingerOutcome::Caught
            });
        }
    }

    /// Under `reject`: full, or within a tenth of a quota, where every freed reading counts.
    fn near_reject_quota(&self) -> bool {
        let cfg = &self.inner.cfg;
        cfg.overflow == OverflowPolicy::Reject
            && (self.full_at.is_some()
                || self.readings.saturating_mul(10) >= cfg.max_readings.saturating_mul(9)
                || self.bytes.saturating_mul(10) >= cfg.max_bytes.saturating_mul(9))
    }

    /// Quota check for one request; accepted requests join the batch.
    fn admit(&mut self, batch: &mut Batch, req: IngestRequest) {
        self.linger.arrived(Instant::now());
        let n = req.readings.len() as u64;
        let b: u64 = req.readings.iter().map(|e| e.json.len() as u64).sum();
        if n == 0 {
            let _ = req.done.send(Ok(()));
            return;
        }
        if !self.inner.routing.holds() && req.readings.iter().any(|e| e.held) {
            // Never deliver what was to be held: refuse (the device keeps it, retries later).
            Rejected {
                reason: RejectReason::Unavailable,
                readings: req.readings.len(),
            }
            .emit(&self.inner.metrics);
            tracing::error!("a quarantined reading reached an outbox without a quarantine lane");
            let _ = req.done.send(Err(IngestError::Unavailable(
                "no quarantine lane in this outbox".into(),
            )));
            return;
        }
        let cfg = &self.inner.cfg;
        if n > cfg.max_readings || b > cfg.max_bytes {
            Rejected {
                reason: RejectReason::TooLarge,
                readings: req.readings.len(),
            }
            .emit(&self.inner.metrics);
            let _ = req.done.send(Err(IngestError::StoreFull));
            return;
        }
        if cfg.overflow == OverflowPolicy::Reject {
            let r = self.readings + batch.readings.len() as u64 + n;
            let by = self.bytes + batch.bytes + b;
            if r > cfg.max_readings || by > cfg.max_bytes {
                Rejected {
                    reason: RejectReason::Full,
                    readings: req.readings.len(),
                }
                .emit(&self.inner.metrics);
                let _ = req.done.send(Err(IngestError::StoreFull));
                self.full_at = Some((self.readings, self.bytes));
                self.update_health();
                return;
            }
        }
        batch.bytes += b;
        batch.requests += 1;
        batch.readings.extend(req.readings);
        if cfg.durability == Durability::UnsafeNoFsync {
            let _ = req.done.send(Ok(()));
        } else {
            batch.dones.push(req.done);
        }
    }

    fn housekeeping(&mut self) {
        let st = lock(&self.inner.snapshot).clone();
        let sums = per_uplink(&self.inner.slots, &st);
        self.inner.set_gauges(&st, &sums);
        self.backlog = backlog_detail(self.inner.now_ms(), &sums);
        self.update_health();
        self.overflow_log.flush();
        let max_age = self.inner.cfg.max_age;
        if !max_age.is_zero() {
            // Every stored reading is owed to some uplink, so the oldest reading overall is the
            // oldest of the per-uplink oldest: no query needed to know whether any expired.
            let oldest = st
                .uplinks
                .iter()
                .filter_map(|u| u.oldest.map(|(_, ms)| ms))
                .min();
            if oldest.is_some_and(|ms| ms < self.expiry_cutoff()) {
                self.expire_due = true;
            }
        }
        // Over a bound, or turned off with records left from when it was on (they go, in
        // chunks, at the next housekeeping ticks).
        let cfg = &self.inner.cfg;
        let due = if cfg.delivery_log.is_zero() {
            st.deliveries > 0
        } else {
            st.deliveries > cfg.delivery_log_rows
                || st
                    .oldest_delivery_ms
                    .is_some_and(|ms| ms < self.delivery_log_cutoff())
        };
        if due {
            self.prune_due = true;
        }
    }

    /// Records of readings created before this (ms since the epoch) are pruned.
    fn delivery_log_cutoff(&self) -> i64 {
        let keep = i64::try_from(self.inner.cfg.delivery_log.as_millis()).unwrap_or(i64::MAX);
        self.inner.now_ms().saturating_sub(keep)
    }

    fn expiry_cutoff(&self) -> i64 {
        let max_age = i64::try_from(self.inner.cfg.max_age.as_millis()).unwrap_or(i64::MAX);
        self.inner.now_ms().saturating_sub(max_age)
    }

    /// Routes each reading: the `pending` mask it is stored with.
    fn route(&mut self, readings: &[Encoded]) -> Vec<i64> {
        let mut unrouted = 0u64;
        let masks = readings
            .iter()
            .map(|e| {
                let r = self
                    .inner
                    .routing
                    .on_append(e.id, &e.device, e.class, e.held);
                unrouted += u64::from(r.unrouted);
                r.mask
            })
            .collect();
        Unrouted {
            count: unrouted,
            first: !self.unrouted_logged,
        }
        .emit(&self.inner.metrics);
        self.unrouted_logged |= unrouted > 0;
        masks
    }

    async fn commit(&mut self, batch: Batch) {
        // Flush waiters first: everything queued before they asked is taken below.
        let flushes = std::mem::take(&mut *lock(&self.inner.flushes));
        // Cutovers before routing: the router's view changes only there, so this batch is
        // routed by the view whose moves commit with it.
        let mut cutovers = std::mem::take(&mut self.retry_cutovers);
        cutovers.extend(self.inner.routing.take_cutovers());
        let pending = self.route(&batch.readings);
        let (acks, acks_left) = self.inner.take_acks(
            if !flushes.is_empty() || self.closing || self.near_reject_quota() {
                AckShare::All
            } else if batch.requests > 0 {
                AckShare::WithIngest
            } else {
                AckShare::Alone
            },
        );
        self.acks_left = acks_left;
        let work = Work {
            readings: batch.readings,
            pending,
            acks,
            releases: self.inner.take_releases(),
            cutovers,
            expire_before_ms: std::mem::take(&mut self.expire_due).then(|| self.expiry_cutoff()),
            prune_deliveries_before_ms: std::mem::take(&mut self.prune_due)
                .then(|| self.delivery_log_cutoff()),
            now_ms: self.inner.now_ms(),
        };
        if work.is_empty() {
            for f in flushes {
                let _ = f.send(true);
            }
            return;
        }
        let db = self.inner.db.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let r = lock(&db).commit(&work);
            (work, r)
        })
        .await;
        let ok = matches!(joined, Ok((_, Ok(_))));
        match joined {
            Ok((work, Ok(outcome))) => self.committed(work, outcome, batch.dones),
            Ok((work, Err(e))) => {
                let corrupt = is_corruption(&e);
                self.failed(Some(work), e.to_string(), corrupt, batch.dones);
            }
            Err(e) => self.failed(
                None,
                format!("writer thread failed: {e}"),
                false,
                batch.dones,
            ),
        }
        for f in flushes {
            let _ = f.send(ok);
        }
    }

    fn committed(
        &mut self,
        work: Work,
        out: Outcome,
        dones: Vec<oneshot::Sender<Result<(), IngestError>>>,
    ) {
        let inner = &self.inner;
        let state = lock(&inner.db).state.clone();
        {
            let mut tail = lock(&inner.tail);
            tail.push(out.appended);
            if let Some(t) = out.deleted_through {
                tail.delete_through(t);
            }
            for (idx, seqs) in &work.acks {
                if let Some(slot) = inner.slots.get(*idx) {
                    tail.clear(slot.mask, seqs);
                }
            }
            for &(seq, pending) in &out.moved {
                tail.set_pending(seq, pending);
            }
            for (from, class, target, keep) in &out.cut_tail {
                tail.reroute(*from, *class, *target, keep);
            }
        }
        for (slot, from) in inner.slots.iter().zip(&out.rescan_from) {
            if let Some(seq) = from.filter(|_| slot.cursor_live.load(Ordering::SeqCst)) {
                let mut r = lock(&slot.rescan_from);
                *r = Some(r.map_or(seq, |x| x.min(seq)));
            }
        }
        // After the tail shows the new owners, so a cursor moving back finds them there.
        for (slot, seqs) in inner.slots.iter().zip(&out.received) {
            if !seqs.is_empty() && slot.cursor_live.load(Ordering::SeqCst) {
                lock(&slot.received).extend_from_slice(seqs);
            }
        }
        *lock(&inner.snapshot) = state.clone();
        inner
            .committed
            .send_modify(|m| m.seq = state.next_seq.saturating_sub(1));

        let m = &inner.metrics;
        if let Some(kind) = out.kind {
            Committed {
                kind,
                readings: work.readings.len(),
                elapsed: out.elapsed,
            }
            .emit(m);
        }
        for (i, n) in out.acked.iter().enumerate() {
            if let Some(slot) = inner.slots.get(i) {
                AcksCommitted {
                    uplink: &slot.label,
                    count: *n,
                }
                .emit(m);
            }
        }
        for (i, n) in out.cut.iter().enumerate() {
            if let Some(slot) = inner.slots.get(i).filter(|_| *n > 0) {
                Released {
                    uplink: &slot.label,
                    count: *n,
                }
                .emit(m);
                tracing::warn!(
                    uplink = %slot.label,
                    readings = n,
                    "uplink taken out of routing: moved the readings it was owed to other uplinks"
                );
            }
        }
        Dropped {
            reason: DropReason::Overflow,
            count: out.overflow_dropped,
        }
        .emit(m);
        Dropped {
            reason: DropReason::Expired,
            count: out.expired,
        }
        .emit(m);
        if out.overflow_dropped > 0 {
            self.overflow_log.add(out.overflow_dropped);
        }
        inner.publish_gauges(&state);

        self.readings = state.readings;
        self.bytes = state.bytes;
        if let Some((r, b)) = self.full_at {
            if state.readings < r || state.bytes < b {
                self.full_at = None;
            }
        }
        self.failed = None;
        self.expire_again = out.more_expiry;
        self.update_health();
        if let Some(o) = self
            .inner
            .on_commit
            .as_deref()
            .filter(|_| !work.readings.is_empty())
        {
            o.committed(&work.readings);
        }
        for done in dones {
            let _ = done.send(Ok(()));
        }
    }

    fn failed(
        &mut self,
        work: Option<Work>,
        error: String,
        corrupt: bool,
        dones: Vec<oneshot::Sender<Result<(), IngestError>>>,
    ) {
        let mut readings = 0;
        // The acknowledgements wait for the next request or acknowledgement to try again, as
        // after any failed commit: an immediate retry would spin on a failing disk.
        self.acks_left = false;
        if let Some(work) = work {
            readings = work.readings.len();
            // Nothing was written: acknowledgements and releases go back in the queue for the
            // next try (until then the released readings stay owed to the releasing uplink).
            for (idx, seqs) in work.acks {
                if let Some(slot) = self.inner.slots.get(idx) {
                    lock(&slot.acks).extend(seqs);
                }
            }
            for (idx, moves) in work.releases {
                if let Some(slot) = self.inner.slots.get(idx) {
                    lock(&slot.releases).extend(moves);
                }
            }
            self.retry_cutovers = work.cutovers;
            if self.inner.cfg.durability == Durability::UnsafeNoFsync && readings > 0 {
                Dropped {
                    reason: DropReason::UnsafeCommitFailed,
                    count: readings as u64,
                }
                .emit(&self.inner.metrics);
            }
        }
        CommitFailed {
            error: &error,
            readings,
            corrupt,
        }
        .emit(&self.inner.metrics);
        self.failed = Some(error.clone());
        self.update_health();
        for done in dones {
            let _ = done.send(Err(IngestError::Unavailable(error.clone())));
        }
    }

    fn update_health(&mut self) {
        let cfg = &self.inner.cfg;
        let want = if let Some(e) = &self.failed {
            HealthState::Failed(e.clone())
        } else if cfg.overflow == OverflowPolicy::Reject
            && (self.readings >= cfg.max_readings
                || self.bytes >= cfg.max_bytes
                || self.full_at.is_some())
        {
            HealthState::Full
        } else {
            HealthState::Ready(self.backlog.clone())
        };
        if self.reported.as_ref() == Some(&want) {
            return;
        }
        match &want {
            HealthState::Ready(_) => match &self.backlog {
                None => self.health.ready("writable"),
                Some(owed) => self.health.ready(format!("writable; {owed}")),
            },
            HealthState::Full => self.health.not_ready(format!(
                "outbox full ({} readings, {} bytes; store.overflow = \"reject\")",
                self.readings, self.bytes
            )),
            HealthState::Failed(e) => self.health.not_ready(format!("commit failed: {e}")),
            HealthState::Closed => self.health.not_ready("closed"),
        }
        self.reported = Some(want);
    }

    /// Shutdown: no new requests; commit everything already queued, then the last acks.
    async fn drain(&mut self, mut rx: BusReceiver) {
        rx.close();
        self.closing = true;
        loop {
            let mut batch = Batch::default();
            let mut took = 0usize;
            if let Some(req) = self.carry.take() {
                took += 1;
                self.admit(&mut batch, req);
            }
            while batch.readings.len() < self.inner.cfg.max_batch {
                let Ok(req) = rx.try_recv() else { break };
                took += 1;
                if batch.requests > 0
                    && batch.readings.len() + req.readings.len() > self.inner.cfg.max_batch
                {
                    self.carry = Some(req);
                    break;
                }
                self.admit(&mut batch, req);
            }
            self.commit(batch).await;
            if took == 0 {
                break;
            }
        }
    }

    async fn close(&mut self) -> Result<(), StoreError> {
        let db = self.inner.db.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let mut db = lock(&db);
            let path = db.path().to_owned();
            db.close()
                .map_err(|e| StoreError::sqlite(&path, "closing", e))
        })
        .await;
        self.inner.committed.send_modify(|m| m.closed = true);
        self.failed = None;
        self.reported = None;
        self.health.not_ready("closed");
        self.reported = Some(HealthState::Closed);
        match joined {
            Ok(Ok(true)) => {
                tracing::info!(path = %self.inner.path.display(), "outbox closed cleanly");
                Ok(())
            }
            Ok(Ok(false)) => {
                tracing::info!(
                    path = %self.inner.path.display(),
                    "outbox closed cleanly; readers kept the WAL checkpoint from finishing (it completes at the next open)"
                );
                Ok(())
            }
            Ok(Err(e)) => Err(e),
            Err(e) => Err(StoreError::Io {
                path: self.inner.path.clone(),
                op: "closing",
                source: std::io::Error::other(e.to_string()),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use wardgate_core::health::ComponentKind;
    use wardgate_core::{Bus, Health, MessageClass};

    use crate::metrics::RejectReason;

    fn big_reading(len: usize) -> Encoded {
        Encoded {
            id: ulid::Ulid::new(),
            device: "d".into(),
            class: MessageClass::Alarm,
            protocol: wardgate_core::Protocol::Coap,
            json: Bytes::from(vec![b'x'; len]),
            held: false,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_commit_answers_unavailable_and_the_writer_recovers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = StoreConfig {
            path: dir.path().join("outbox.db"),
            ..StoreConfig::default()
        };
        let metrics = StoreMetrics::unregistered();
        let outbox = Outbox::open(&cfg, &["cloud".to_owned()], metrics.clone()).expect("open");
        let health = Health::new();
        let (bus, rx) = Bus::new(8);
        let stop = Shutdown::new();
        let writer = {
            let outbox = outbox.clone();
            let stop = stop.clone();
            let reporter = health.reporter("store", ComponentKind::Store);
            tokio::spawn(async move { outbox.run_writer(rx, stop, reporter).await })
        };
        bus.submit(vec![big_reading(100)])
            .await
            .expect("first reading");

        // Simulate a full disk: SQLite may not grow the file any more.
        {
            let db = outbox.db();
            let db = lock(&db);
            let pages: i64 = db
                .conn()
                .query_row("PRAGMA page_count", [], |r| r.get(0))
                .expect("page_count");
            db.conn()
                .pragma_update(None, "max_page_count", pages)
                .expect("max_page_count");
        }
        let refused = bus.submit(vec![big_reading(64 * 1024)]).await;
        assert!(
            matches!(refused, Err(IngestError::Unavailable(_))),
            "{refused:?}"
        );
        let check = health.readiness().checks["store"].clone();
        assert!(
            !check.ready && check.detail.contains("commit failed"),
            "{check:?}"
        );
        assert_eq!(metrics.commit_errors_total(), 1);
        assert_eq!(metrics.rejected_total(RejectReason::Unavailable), 1);
        assert_eq!(
            outbox.stats().expect("stats").readings,
            1,
            "nothing half-written"
        );

        // Space comes back: the next request is stored and the store is ready again.
        {
            let db = outbox.db();
            let db = lock(&db);
            db.conn()
                .pragma_update(None, "max_page_count", 1_000_000)
                .expect("max_page_count");
        }
        bus.submit(vec![big_reading(64 * 1024)])
            .await
            .expect("after the disk recovered");
        assert!(health.readiness().checks["store"].ready);
        assert_eq!(outbox.stats().expect("stats").readings, 2);

        stop.cancel();
        writer.await.expect("join").expect("clean close");
    }
}
