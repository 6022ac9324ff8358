//! The in-memory tail: the most recently committed readings, so a caught-up uplink gets new
//! readings without a SQLite read.
//!
//! Bounded by a reading count and a byte budget; the oldest entries fall off. Invariant the
//! cursors rely on: every row in the database with `seq > start_after` is in the tail (rows
//! deleted from the database are removed from the tail by the writer too, or carry
//! `pending == 0`). A cursor positioned before `start_after` reads SQLite instead.

use std::collections::VecDeque;

use bytes::Bytes;
use ulid::Ulid;
use wardgate_core::MessageClass;

/// One committed reading.
#[derive(Debug, Clone)]
pub(crate) struct TailRow {
    pub(crate) seq: u64,
    /// Uplinks still owed the reading, as committed (acks clear bits after their commit).
    pub(crate) pending: i64,
    pub(crate) id: Ulid,
    pub(crate) device: String,
    pub(crate) class: MessageClass,
    pub(crate) json: Bytes,
}

#[derive(Debug)]
pub(crate) struct Tail {
    rows: VecDeque<TailRow>,
    bytes: usize,
    start_after: u64,
    max_rows: usize,
    max_bytes: usize,
}

impl Tail {
    /// An empty tail covering everything after `start_after` (the last seq already on disk).
    pub(crate) fn new(start_after: u64, max_rows: usize, max_bytes: usize) -> Self {
        Tail {
            rows: VecDeque::new(),
            bytes: 0,
            start_after,
            max_rows,
            max_bytes,
        }
    }

    fn row_cost(r: &TailRow) -> usize {
        r.json.len() + r.device.len() + std::mem::size_of::<TailRow>()
    }

    /// Appends committed rows (in seq order), evicting the oldest beyond the bounds.
    pub(crate) fn push(&mut self, rows: impl IntoIterator<Item = TailRow>) {
        for r in rows {
            if self.max_rows == 0 {
                self.start_after = self.start_after.max(r.seq);
                continue;
            }
            self.bytes += Self::row_cost(&r);
            self.rows.push_back(r);
            while self.rows.len() > self.max_rows
                || (self.bytes > self.max_bytes && self.rows.len() > 1)
            {
                self.pop_front();
            }
        }
    }

    fn pop_front(&mut self) {
        if let Some(r) = self.rows.pop_front() {
            self.bytes -= Self::row_cost(&r);
            self.start_after = self.start_after.max(r.seq);
        }
    }

    /// Rows at or below `seq` were deleted from the database.
    pub(crate) fn delete_through(&mut self, seq: u64) {
        while self.rows.front().is_some_and(|r| r.seq <= seq) {
            self.pop_front();
        }
        self.start_after = self.start_after.max(seq);
    }

    /// Clears `mask` on the committed acknowledgements `seqs`.
    pub(crate) fn clear(&mut self, mask: i64, seqs: &[u64]) {
        for s in seqs {
            if let Ok(i) = self.rows.binary_search_by_key(s, |r| r.seq) {
                if let Some(r) = self.rows.get_mut(i) {
                    r.pending &= !mask;
                }
            }
        }
    }

    /// A release moved committed row `seq` to other uplinks: its `pending` is now `pending`.
    pub(crate) fn set_pending(&mut self, seq: u64, pending: i64) {
        if let Ok(i) = self.rows.binary_search_by_key(&seq, |r| r.seq) {
            if let Some(r) = self.rows.get_mut(i) {
                r.pending = pending;
            }
        }
    }

    /// A cutover moved every committed row of `class` owed on `from` (except `keep`) to
    /// `target`.
    pub(crate) fn reroute(&mut self, from: i64, class: MessageClass, target: i64, keep: &[Ulid]) {
        for r in &mut self.rows {
            if r.pending & from != 0 && r.class == class && !keep.contains(&r.id) {
                r.pending = (r.pending & !from) | target;
            }
        }
    }

    /// Whether the tail alone answers "what comes after `pos`".
    pub(crate) fn covers(&self, pos: u64) -> bool {
        pos >= self.start_after
    }

    /// Rows after `pos`, in seq order.
    pub(crate) fn after(&self, pos: u64) -> impl Iterator<Item = &TailRow> {
        let i = self.rows.partition_point(|r| r.seq <= pos);
        self.rows.range(i..)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.rows.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(seq: u64, len: usize) -> TailRow {
        TailRow {
            seq,
            pending: 0b11,
            id: Ulid::nil(),
            device: "d".into(),
            class: MessageClass::Vital,
            json: Bytes::from(vec![b'x'; len]),
        }
    }

    #[test]
    fn tail_evicts_oldest_and_stops_covering_them() {
        let mut t = Tail::new(0, 3, usize::MAX);
        t.push((1..=5).map(|s| row(s, 1)));
        assert_eq!(t.len(), 3);
        assert!(!t.covers(1));
        assert!(t.covers(2));
        assert_eq!(t.after(2).map(|r| r.seq).collect::<Vec<_>>(), vec![3, 4, 5]);
    }

    #[test]
    fn tail_respects_its_byte_budget() {
        let cost = Tail::row_cost(&row(1, 100));
        let mut t = Tail::new(0, 100, cost * 2);
        t.push((1..=4).map(|s| row(s, 100)));
        assert_eq!(t.len(), 2);
        assert!(t.covers(2) && !t.covers(1));
    }

    #[test]
    fn deleted_prefix_leaves_the_tail_and_acks_clear_bits() {
        let mut t = Tail::new(0, 10, usize::MAX);
        t.push((1..=4).map(|s| row(s, 1)));
        t.delete_through(2);
        assert_eq!(t.after(0).map(|r| r.seq).collect::<Vec<_>>(), vec![3, 4]);
        t.clear(0b01, &[4, 9]);
        let pend: Vec<i64> = t.after(0).map(|r| r.pending).collect();
        assert_eq!(pend, vec![0b11, 0b10]);
        t.set_pending(3, 0b100);
        t.set_pending(1, 0b100); // deleted: nothing to change
        let pend: Vec<i64> = t.after(0).map(|r| r.pending).collect();
        assert_eq!(pend, vec![0b100, 0b10]);
    }

    #[test]
    fn zero_sized_tail_covers_only_the_future() {
        let mut t = Tail::new(0, 0, 0);
        t.push([row(1, 1)]);
        assert!(!t.covers(0));
        assert!(t.covers(1));
        assert_eq!(t.after(0).count(), 0);
    }
}
