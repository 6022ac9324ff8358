//! One uplink's delivery cursor.
//!
//! The cursor walks the outbox in seq order. New readings come from the writer's in-memory tail
//! when the cursor is caught up; a cursor that fell behind (or starts after a restart) reads
//! SQLite by seq range, `max` rows at a time, never the whole backlog.
//!
//! In-flight bookkeeping: `inflight` holds each reading handed out and not yet acknowledged,
//! with its attempt count, when it was handed out, and what an outcome event and the router
//! need to know about it. It is bounded by what the uplink keeps in flight (its own window);
//! [`Cursor::rewind`] moves the position back to the oldest of them so they are handed out
//! again, and readings between them that were already acknowledged are skipped. `nack` and a
//! release nobody can take move the position back the same way, from the lowest seq concerned.
//!
//! Readings another uplink released to this one arrive (after their commit) in the slot's
//! `received` queue: the cursor moves back to each and remembers it in `adopted`, because a
//! seq at or below `handed_high` is otherwise only handed out again when it is in flight.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use rusqlite::{Connection, params};
use tokio::sync::watch;
use tokio::time::Instant;
use ulid::Ulid;
use wardgate_core::{
    Delivery, DeliveryOutcome, MessageClass, NackReason, OutboxCursor, OutboxError, OutcomeKind,
};

use crate::db::{class_from_code, connect, to_i64, to_u64, ulid_from_blob};
use crate::error::StoreError;
use crate::metrics::{NackLabel, Nacked, Released, ReplayReason};
use crate::outbox::{CommitMark, Inner, LANES, NORMAL_LANE, PRIORITY_LANE, lock};

/// A reading read back from SQLite.
#[derive(Debug)]
struct DbRow {
    seq: u64,
    id: Ulid,
    device: String,
    class: MessageClass,
    json: Bytes,
}

/// A reading handed out and not yet acknowledged (or released).
#[derive(Debug)]
struct InFlight {
    /// The `attempts` it was last handed out with.
    attempts: u32,
    /// When it was last handed out (`tokio::time`, pausable in tests).
    handed_at: Instant,
    id: Ulid,
    device: Arc<str>,
    class: MessageClass,
}

/// One lane of an uplink's view of the outbox: the cursor logic over one persisted bit.
#[derive(Debug)]
pub(crate) struct LaneCursor {
    inner: Arc<Inner>,
    idx: usize,
    mask: i64,
    /// Every reading at or below `pos` has been considered.
    pos: u64,
    /// Highest seq this cursor has handed out.
    handed_high: u64,
    /// Readings at or below this may have been handed out before this cursor existed.
    replay_upto: u64,
    inflight: BTreeMap<u64, InFlight>,
    /// Seqs released to this uplink by others and not handed out yet.
    adopted: BTreeSet<u64>,
    committed: watch::Receiver<CommitMark>,
    /// Opened on first use, so a caught-up uplink never holds a read connection busy.
    conn: Arc<Mutex<Option<Connection>>>,
}

#[derive(Debug, Default)]
struct Replays {
    restart: u64,
    rewind: u64,
}

impl LaneCursor {
    pub(crate) fn new(inner: Arc<Inner>, idx: usize) -> Result<LaneCursor, StoreError> {
        let slot = inner
            .slots
            .get(idx)
            .ok_or_else(|| StoreError::UnknownUplink(idx.to_string()))?;
        if slot.cursor_live.swap(true, Ordering::SeqCst) {
            return Err(StoreError::CursorInUse(slot.label.to_string()));
        }
        let mask = slot.mask;
        let replay_upto = slot.handed_high.load(Ordering::SeqCst);
        // A new cursor reads every owed row from the start; older notices are moot.
        lock(&slot.received).clear();
        *lock(&slot.rescan_from) = None;
        let committed = inner.committed.subscribe();
        Ok(LaneCursor {
            inner,
            idx,
            mask,
            pos: 0,
            handed_high: 0,
            replay_upto,
            inflight: BTreeMap::new(),
            adopted: BTreeSet::new(),
            committed,
            conn: Arc::new(Mutex::new(None)),
        })
    }

    /// The uplink this cursor serves.
    fn uplink(&self) -> &str {
        self.inner.slots.get(self.idx).map_or("", |s| &*s.label)
    }

    /// See [`Cursor::try_next`].
    async fn try_next(&mut self, max: usize) -> Result<Vec<Delivery>, OutboxError> {
        let mut out = Vec::new();
        let mut replays = Replays::default();
        let result = self.fill(max, &mut out, &mut replays).await;
        if replays.restart + replays.rewind > 0 {
            let m = &self.inner.metrics;
            let name = self.uplink();
            m.replayed(name, ReplayReason::Restart, replays.restart);
            m.replayed(name, ReplayReason::Rewind, replays.rewind);
        }
        result.map(|()| out)
    }

    async fn fill(
        &mut self,
        max: usize,
        out: &mut Vec<Delivery>,
        replays: &mut Replays,
    ) -> Result<(), OutboxError> {
        self.take_received();
        while out.len() < max {
            let mark = *self.committed.borrow_and_update();
            if self.pos >= mark.seq {
                break;
            }
            let want = max - out.len();
            if self.fill_from_tail(mark.seq, want, out, replays) {
                continue;
            }
            if !out.is_empty() {
                // Cancel safety: never await once deliveries are recorded as handed out, or a
                // dropped future would lose them until the next rewind.
                break;
            }
            let rows = self.read_db(self.pos, want).await?;
            let complete = rows.len() < want;
            for r in rows {
                let DbRow {
                    seq,
                    id,
                    device,
                    class,
                    json,
                } = r;
                self.consider(seq, out, replays, |attempts| Delivery {
                    seq,
                    id,
                    device,
                    class,
                    json,
                    attempts,
                });
            }
            if complete {
                // Nothing else owed up to what was committed when we looked.
                self.skip_to(mark.seq);
            }
        }
        Ok(())
    }

    /// Serves from the tail if it covers the position; false when SQLite must be read.
    fn fill_from_tail(
        &mut self,
        committed: u64,
        want: usize,
        out: &mut Vec<Delivery>,
        replays: &mut Replays,
    ) -> bool {
        let inner = self.inner.clone();
        let tail = lock(&inner.tail);
        if !tail.covers(self.pos) {
            return false;
        }
        let start = out.len();
        let mut exhausted = true;
        for r in tail.after(self.pos) {
            if out.len() - start >= want {
                exhausted = false;
                break;
            }
            if r.pending & self.mask == 0 {
                // Acknowledged by this uplink, or deleted: nothing to hand out.
                self.skip_to(r.seq);
                continue;
            }
            self.consider(r.seq, out, replays, |attempts| Delivery {
                seq: r.seq,
                id: r.id,
                device: r.device.clone(),
                class: r.class,
                json: r.json.clone(),
                attempts,
            });
        }
        if exhausted {
            // The tail holds every committed row after `start_after`, so none is left below
            // the mark we read before locking it.
            self.skip_to(committed);
        }
        true
    }

    /// Advances past readings that were not handed out (acknowledged, deleted or not owed),
    /// forgetting in-flight entries that no longer exist.
    fn skip_to(&mut self, seq: u64) {
        if seq <= self.pos {
            return;
        }
        self.forget_missing(self.pos, seq.saturating_add(1));
        self.pos = seq;
    }

    /// In-flight entries strictly between `from` and `to` were deleted (overflow, expiry).
    fn forget_missing(&mut self, from: u64, to: u64) {
        if from.saturating_add(1) >= to {
            return;
        }
        let gone: Vec<u64> = self.inflight.range(from + 1..to).map(|(s, _)| *s).collect();
        for s in gone {
            self.inflight.remove(&s);
        }
        let gone: Vec<u64> = self.adopted.range(from + 1..to).copied().collect();
        for s in gone {
            self.adopted.remove(&s);
        }
    }

    /// Takes the seqs other uplinks' releases made owed to this one: each is handed out before
    /// anything after it, so the position moves back to the lowest (like a rewind from there).
    fn take_received(&mut self) {
        let Some(slot) = self.inner.slots.get(self.idx) else {
            return;
        };
        if let Some(from) = lock(&slot.rescan_from).take() {
            // A cutover made readings from `from` on owed here: hand out every owed reading
            // from there as new (those in flight are handed out again, as after a rewind).
            let below = from.saturating_sub(1);
            self.pos = self.pos.min(below);
            self.handed_high = self.handed_high.min(below);
        }
        let got = std::mem::take(&mut *lock(&slot.received));
        for s in got {
            // Already handed out since it became owed here (found by a scan): nothing to redo.
            if !self.inflight.contains_key(&s) {
                self.adopted.insert(s);
                self.pos = self.pos.min(s.saturating_sub(1));
            }
        }
    }

    /// Moves the position back so `seq` and every unacknowledged delivery after it are handed
    /// out again.
    fn back_to(&mut self, seq: u64) {
        self.pos = self.pos.min(seq.saturating_sub(1));
    }

    /// Shows one outcome per seq to the observer and publishes it to the subscribers (events
    /// are built only when one of them is there).
    fn publish(&self, kind: OutcomeKind, seqs: &[u64], now: Instant) {
        let outcomes = &self.inner.outcomes;
        let observer = self.inner.observer.as_deref();
        let subscribed = outcomes.has_subscribers();
        if !subscribed && observer.is_none() {
            return;
        }
        let Some(slot) = self.inner.slots.get(self.idx) else {
            return;
        };
        for s in seqs {
            if let Some(f) = self.inflight.get(s) {
                let ev = outcome(kind, slot.uplink, &slot.label, *s, f, now);
                if let Some(o) = observer {
                    o.observe(&ev);
                }
                if subscribed {
                    outcomes.send(ev);
                }
            }
        }
    }

    /// Decides whether an owed reading at `seq` is handed out, and with which attempt count.
    fn consider(
        &mut self,
        seq: u64,
        out: &mut Vec<Delivery>,
        replays: &mut Replays,
        make: impl FnOnce(u32) -> Delivery,
    ) {
        self.forget_missing(self.pos, seq);
        let now = Instant::now();
        let adopted = self.adopted.remove(&seq);
        if let Some(f) = self.inflight.get_mut(&seq) {
            // Handed out before by this cursor and still unacknowledged (rewind, nack).
            f.attempts = f.attempts.saturating_add(1);
            f.handed_at = now;
            replays.rewind += 1;
            out.push(make(f.attempts));
        } else if adopted || seq > self.handed_high {
            // New to this cursor: first hand-out, or released here by another uplink (which
            // is a first hand-out for this uplink too, whatever happened before a restart).
            let attempts = if !adopted && seq <= self.replay_upto {
                replays.restart += 1;
                1
            } else {
                0
            };
            let d = make(attempts);
            self.inflight.insert(
                seq,
                InFlight {
                    attempts,
                    handed_at: now,
                    id: d.id,
                    device: Arc::from(d.device.as_str()),
                    class: d.class,
                },
            );
            self.handed_high = self.handed_high.max(seq);
            out.push(d);
        }
        // Otherwise: at or below `handed_high` and not in flight: acknowledged or released by
        // this cursor, not to be handed out again.
        self.pos = self.pos.max(seq);
    }

    async fn read_db(&self, after: u64, limit: usize) -> Result<Vec<DbRow>, OutboxError> {
        let conn = self.conn.clone();
        let path = self.inner.path.clone();
        let mask = self.mask;
        tokio::task::spawn_blocking(move || {
            let mut guard = lock(&conn);
            if guard.is_none() {
                let c = connect(&path).map_err(|e| OutboxError::Io(e.to_string()))?;
                c.pragma_update(None, "query_only", true)
                    .map_err(|e| OutboxError::Io(e.to_string()))?;
                *guard = Some(c);
            }
            let Some(c) = guard.as_ref() else {
                return Err(OutboxError::Closed);
            };
            read_owed(c, mask, after, limit).map_err(|e| OutboxError::Io(e.to_string()))
        })
        .await
        .map_err(|e| OutboxError::Io(format!("reader thread failed: {e}")))?
    }
}

fn outcome(
    kind: OutcomeKind,
    uplink: usize,
    name: &Arc<str>,
    seq: u64,
    f: &InFlight,
    now: Instant,
) -> DeliveryOutcome {
    DeliveryOutcome {
        outcome: kind,
        uplink,
        uplink_name: name.clone(),
        seq,
        id: f.id,
        device: f.device.clone(),
        class: f.class,
        attempts: f.attempts,
        latency: now.saturating_duration_since(f.handed_at),
    }
}

fn read_owed(
    conn: &Connection,
    mask: i64,
    after: u64,
    limit: usize,
) -> rusqlite::Result<Vec<DbRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, id, device, class, json FROM readings \
         WHERE seq > ?1 AND (pending & ?2) != 0 ORDER BY seq LIMIT ?3",
    )?;
    let mut rows = stmt.query(params![
        to_i64(after),
        mask,
        i64::try_from(limit).unwrap_or(i64::MAX)
    ])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let seq = to_u64(r.get(0)?);
        let id_blob: Vec<u8> = r.get(1)?;
        let Some(id) = ulid_from_blob(&id_blob) else {
            return Err(rusqlite::Error::FromSqlConversionFailure(
                1,
                rusqlite::types::Type::Blob,
                format!(
                    "reading {seq} has a damaged id; run `{}`",
                    crate::RECOVER_COMMAND
                )
                .into(),
            ));
        };
        out.push(DbRow {
            seq,
            id,
            device: r.get(2)?,
            class: class_from_code(r.get(3)?),
            json: Bytes::from(r.get::<_, Vec<u8>>(4)?),
        });
    }
    Ok(out)
}

impl LaneCursor {
    fn ack(&mut self, seqs: &[u64]) {
        self.publish(OutcomeKind::Acked, seqs, Instant::now());
        let mut acked = Vec::new();
        for s in seqs {
            if self.inflight.remove(s).is_some() {
                acked.push(*s);
            }
        }
        if acked.is_empty() {
            return;
        }
        if let Some(slot) = self.inner.slots.get(self.idx) {
            lock(&slot.acks).extend(acked);
            self.inner.ack_wake.notify_one();
        }
    }

    fn rewind(&mut self) {
        if let Some((&first, _)) = self.inflight.first_key_value() {
            self.back_to(first);
        }
    }

    fn nack(&mut self, seqs: &[u64], why: NackReason) {
        let mut failed: Vec<u64> = seqs
            .iter()
            .copied()
            .filter(|s| self.inflight.contains_key(s))
            .collect();
        failed.sort_unstable();
        failed.dedup();
        let Some(&lowest) = failed.first() else {
            return;
        };
        self.publish(why.into(), &failed, Instant::now());
        Nacked {
            uplink: self.uplink(),
            reason: why.into(),
            count: failed.len() as u64,
            first: false,
        }
        .emit(&self.inner.metrics);
        self.back_to(lowest);
    }

    fn release(&mut self, seqs: &[u64]) {
        let inner = self.inner.clone();
        let Some(slot) = inner.slots.get(self.idx) else {
            return;
        };
        let now = Instant::now();
        let mut moves = Vec::new();
        let mut kept = Vec::new();
        let mut seen = BTreeSet::new();
        for &s in seqs {
            let Some(f) = self.inflight.get(&s).filter(|_| seen.insert(s)) else {
                continue;
            };
            let to = inner
                .routing
                .on_release(slot.uplink, f.id, &f.device, f.class);
            if to.is_empty() {
                kept.push(s);
            } else {
                moves.push((s, inner.routing.mask_of(to, f.class)));
            }
        }
        if !moves.is_empty() {
            let moved: Vec<u64> = moves.iter().map(|(s, _)| *s).collect();
            self.publish(OutcomeKind::Released, &moved, now);
            for s in &moved {
                // No longer this uplink's: neither handed out again nor acknowledged by it.
                self.inflight.remove(s);
            }
            lock(&slot.releases).extend(moves);
            slot.unplaced_warned.store(false, Ordering::Relaxed);
            inner.ack_wake.notify_one();
            Released {
                uplink: &slot.label,
                count: moved.len() as u64,
            }
            .emit(&inner.metrics);
        }
        if let Some(&lowest) = kept.iter().min() {
            // Nobody else can take them: they stay this uplink's, handed out again like a
            // failed delivery (the uplink gave up on this attempt).
            self.publish(OutcomeKind::Failed, &kept, now);
            Nacked {
                uplink: &slot.label,
                reason: NackLabel::Unplaced,
                count: kept.len() as u64,
                first: !slot.unplaced_warned.swap(true, Ordering::Relaxed),
            }
            .emit(&inner.metrics);
            self.back_to(lowest);
        }
    }
}

impl Drop for LaneCursor {
    fn drop(&mut self) {
        if let Some(slot) = self.inner.slots.get(self.idx) {
            slot.handed_high
                .fetch_max(self.handed_high, Ordering::SeqCst);
            slot.cursor_live.store(false, Ordering::SeqCst);
        }
    }
}

/// An uplink's view of the outbox; see [`OutboxCursor`]. Created by
/// [`crate::Outbox::cursor`]; dropping it lets the uplink take a new one, which starts again
/// from the oldest reading still owed.
///
/// # Alarms first
/// The uplink's readings are owed on two lanes (see [`crate::Outbox`]): alarms on the
/// priority lane, every other class on the normal lane, each a cursor of its own over the
/// same store. [`OutboxCursor::next`] hands out what the priority lane has before anything
/// from the normal lane, so a new alarm overtakes a backlog of telemetry instead of queueing
/// behind it: it waits at most for one free slot in the uplink's window. Order is kept per
/// lane, so per device within a class (and between a device's alarms and its other readings
/// only as far as the lanes agree: an alarm may overtake that device's earlier vitals, which
/// is the point). Acknowledgements, nacks, releases and rewinds go to both lanes; each acts
/// only on the seqs it handed out. Alarms are rare by nature; a flood of them would hold the
/// normal lane back for as long as it lasts, by design.
#[derive(Debug)]
pub struct Cursor {
    /// Indexed by lane: [`PRIORITY_LANE`], [`NORMAL_LANE`].
    lanes: [LaneCursor; LANES],
    /// The commit watch `next` waits on.
    committed: watch::Receiver<CommitMark>,
}

impl Cursor {
    /// The cursor of configured uplink `uplink` (its index): one lane cursor per lane.
    pub(crate) fn new(inner: Arc<Inner>, uplink: usize) -> Result<Cursor, StoreError> {
        let first = uplink * LANES;
        let committed = inner.committed.subscribe();
        let priority = LaneCursor::new(inner.clone(), first + PRIORITY_LANE)?;
        let normal = LaneCursor::new(inner, first + NORMAL_LANE)?;
        Ok(Cursor {
            lanes: [priority, normal],
            committed,
        })
    }

    /// The uplink this cursor serves.
    pub fn uplink(&self) -> &str {
        self.lanes[NORMAL_LANE].uplink()
    }

    /// Readings handed out and not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.lanes.iter().map(|l| l.inflight.len()).sum()
    }

    /// Like [`OutboxCursor::next`] but never waits for new commits: returns what is committed
    /// and owed now (possibly nothing, possibly fewer than `max` when more must be read from
    /// disk): the priority lane's readings if it has any, else the normal lane's. Cancel-safe,
    /// like `next`: readings count as handed out only once returned.
    pub async fn try_next(&mut self, max: usize) -> Result<Vec<Delivery>, OutboxError> {
        self.committed.borrow_and_update();
        let [priority, normal] = &mut self.lanes;
        let out = priority.try_next(max).await?;
        if !out.is_empty() {
            // Returned at once: awaiting the normal lane after the priority lane handed
            // readings out would lose them (until a rewind) if this future were dropped.
            return Ok(out);
        }
        normal.try_next(max).await
    }
}

impl OutboxCursor for Cursor {
    /// Cancel-safe: if the future is dropped (e.g. in a `select!`), nothing is lost; readings
    /// count as handed out only once a call returns them.
    async fn next(&mut self, max: usize) -> Result<Vec<Delivery>, OutboxError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        loop {
            let out = self.try_next(max).await?;
            if !out.is_empty() {
                return Ok(out);
            }
            if self.committed.borrow().closed {
                return Err(OutboxError::Closed);
            }
            // try_next marked the current mark as seen, so a commit since then wakes us.
            if self.committed.changed().await.is_err() {
                return Err(OutboxError::Closed);
            }
        }
    }

    fn ack(&mut self, seqs: &[u64]) {
        for l in &mut self.lanes {
            l.ack(seqs);
        }
    }

    fn rewind(&mut self) {
        for l in &mut self.lanes {
            l.rewind();
        }
    }

    fn nack(&mut self, seqs: &[u64], why: NackReason) {
        for l in &mut self.lanes {
            l.nack(seqs, why);
        }
    }

    fn release(&mut self, seqs: &[u64]) {
        for l in &mut self.lanes {
            l.release(seqs);
        }
    }
}
