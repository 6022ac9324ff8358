//! Model-based test: random routed appends, deliveries, acks, rewinds, nacks, releases, crashes
//! and clean restarts against an in-memory model of what the outbox owes each uplink.
//!
//! Readings are routed by [`PrefixRouter`] (the device id's prefix names the uplinks, with or
//! without failover, or none); the model replays the same decision. A release moves a reading
//! to the other uplink when the router allows it, where it is inserted in append order and the
//! receiving cursor starts again from it (what it had handed out after it comes again); else
//! it stays, like a nack. Releases are followed by `flush`, so the model knows they committed.
//!
//! Properties checked after every step:
//! - every appended-and-acknowledged reading is, for each uplink, either acknowledged by it or
//!   still handed out by its cursor, in append order (after a crash: in a full drain);
//! - a reading is never handed out again after its uplink acknowledged it and that ack was
//!   committed (acks are known committed once a later append resolved, or after a clean
//!   stop); after a crash only acks not yet known committed may come back;
//! - attempt counts: 0 on first delivery, +1 per redelivery, 1 for replays after a restart;
//! - depth and bytes in `stats()` match the model whenever the acks are known committed;
//! - no reading in the file is owed to no uplink.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::{PrefixRouter, Running, names, owed_to_nobody, reading};
use proptest::prelude::*;
use ulid::Ulid;
use wardgate_core::{NackReason, OutboxCursor, UplinkSet};
use wardgate_store::{Cursor, StoreConfig};

const UPLINKS: [&str; 2] = ["cloud", "backup"];
/// Device prefixes: every uplink (no prefix), both listed, one with failover, one pinned, none.
const ROUTES: [&str; 6] = ["", "01/", "0/", "1/", "0!/", "-/"];

#[derive(Debug, Clone)]
enum Op {
    Append { n: usize, len: usize, route: usize },
    Next { up: usize, max: usize },
    Ack { up: usize, pick: u16 },
    Rewind { up: usize },
    Nack { up: usize, pick: u16 },
    Release { up: usize, pick: u16 },
    Crash,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1usize..4, 20usize..300, 0..ROUTES.len())
            .prop_map(|(n, len, route)| Op::Append { n, len, route }),
        6 => (0usize..2, 1usize..6).prop_map(|(up, max)| Op::Next { up, max }),
        4 => (0usize..2, any::<u16>()).prop_map(|(up, pick)| Op::Ack { up, pick }),
        2 => (0usize..2).prop_map(|up| Op::Rewind { up }),
        2 => (0usize..2, any::<u16>()).prop_map(|(up, pick)| Op::Nack { up, pick }),
        3 => (0usize..2, any::<u16>()).prop_map(|(up, pick)| Op::Release { up, pick }),
        1 => Just(Op::Crash),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Debug, Default)]
struct UplinkModel {
    /// Readings owed, in append order.
    queue: Vec<Ulid>,
    /// How many at the front of `queue` are handed out (the cursor's in-flight set).
    handed: usize,
    /// Hand-outs in this process, per reading.
    handouts: HashMap<Ulid, u32>,
    /// Acked, but no commit is known to have carried the ack yet.
    uncommitted: HashSet<Ulid>,
    /// Released here by the other uplink since the last open: first hand-out has attempts 0
    /// whatever happened before (`handouts` restarts from the release).
    adopted: HashSet<Ulid>,
}

impl UplinkModel {
    /// The handed-out readings `pick` selects (bit i of `pick` for the i-th, modulo 16).
    fn picked(&self, pick: u16) -> Vec<Ulid> {
        self.queue
            .iter()
            .take(self.handed)
            .enumerate()
            .filter(|(i, _)| pick & (1 << (i % 16)) != 0)
            .map(|(_, id)| *id)
            .collect()
    }

    /// The cursor moves back to the earliest of `ids` (nack, release that stays).
    fn back_to(&mut self, ids: &[Ulid]) {
        if let Some(p) = self.queue.iter().position(|id| ids.contains(id)) {
            self.handed = self.handed.min(p);
        }
    }
}

#[derive(Debug, Default)]
struct Model {
    order: HashMap<Ulid, usize>,
    size: HashMap<Ulid, u64>,
    device: HashMap<Ulid, String>,
    up: [UplinkModel; 2],
    /// Readings present when the store was last opened: their first hand-out counts as a replay.
    existed_at_open: HashSet<Ulid>,
    seq_of: HashMap<Ulid, u64>,
}

impl Model {
    fn expected_attempts(&self, up: usize, id: &Ulid) -> u32 {
        let u = &self.up[up];
        let handouts = u.handouts.get(id).copied().unwrap_or(0);
        if u.adopted.contains(id) {
            return handouts;
        }
        u32::from(self.existed_at_open.contains(id)) + handouts
    }

    /// Where the router sends `id`, `excluded` left out (an empty answer at append means all).
    fn route(&self, id: &Ulid, excluded: UplinkSet) -> UplinkSet {
        PrefixRouter::decide(&self.device[id], UPLINKS.len(), excluded)
    }

    fn held(&self) -> HashSet<Ulid> {
        self.up
            .iter()
            .flat_map(|u| u.queue.iter().copied())
            .collect()
    }

    fn restarted(&mut self) {
        self.existed_at_open = self.held();
        for u in &mut self.up {
            u.handed = 0;
            u.handouts.clear();
            u.uncommitted.clear();
            u.adopted.clear();
        }
    }
}

struct Harness {
    cfg: StoreConfig,
    run: Option<Running>,
    cursors: Vec<Cursor>,
}

impl Harness {
    fn start(&mut self) {
        let run =
            Running::start_opts(&self.cfg, &names(&UPLINKS), PrefixRouter::options()).unwrap();
        self.cursors = UPLINKS
            .iter()
            .map(|u| run.outbox.cursor(u).unwrap())
            .collect();
        self.run = Some(run);
    }

    fn run(&self) -> &Running {
        self.run.as_ref().unwrap()
    }

    fn check_stats(&self, m: &Model) -> Result<(), TestCaseError> {
        let stats = self.run().outbox.stats().unwrap();
        let held = m.held();
        prop_assert_eq!(stats.readings, held.len() as u64, "depth");
        prop_assert_eq!(
            stats.bytes,
            held.iter().map(|id| m.size[id]).sum::<u64>(),
            "bytes"
        );
        for (i, u) in stats.uplinks.iter().enumerate() {
            prop_assert_eq!(
                u.readings,
                m.up[i].queue.len() as u64,
                "depth of {}",
                u.uplink
            );
            prop_assert_eq!(
                u.bytes,
                m.up[i].queue.iter().map(|id| m.size[id]).sum::<u64>(),
                "bytes of {}",
                u.uplink
            );
            prop_assert_eq!(u.oldest_age.is_some(), !m.up[i].queue.is_empty());
        }
        Ok(())
    }
}

async fn run_ops(cfg: StoreConfig, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut h = Harness {
        cfg,
        run: None,
        cursors: Vec::new(),
    };
    h.start();
    let mut m = Model::default();
    for op in ops {
        match op {
            Op::Append { n, len, route } => {
                let batch: Vec<_> = (0..n)
                    .map(|i| reading(&format!("{}dev-{i}", ROUTES[route]), len))
                    .collect();
                for r in &batch {
                    m.order.insert(r.id, m.order.len());
                    m.size.insert(r.id, r.json.len() as u64);
                    m.device.insert(r.id, r.device.clone());
                    let mut owed = m.route(&r.id, UplinkSet::EMPTY);
                    if owed.is_empty() {
                        owed = UplinkSet::first(UPLINKS.len());
                    }
                    for i in owed.iter() {
                        m.up[i].queue.push(r.id);
                    }
                }
                prop_assert_eq!(h.run().bus.submit(batch).await, Ok(()));
                // This commit took every ack queued before it.
                for u in &mut m.up {
                    u.uncommitted.clear();
                }
                h.check_stats(&m)?;
            }
            Op::Next { up, max } => {
                let got = h.cursors[up].try_next(max).await.unwrap();
                let u = &m.up[up];
                let want: Vec<Ulid> = u.queue.iter().skip(u.handed).take(max).copied().collect();
                let got_ids: Vec<Ulid> = got.iter().map(|d| d.id).collect();
                // A call may stop short where it would have to read the disk again (cancel
                // safety), but never hands out nothing while something is owed.
                prop_assert!(
                    !got_ids.is_empty() || want.is_empty(),
                    "uplink {} next({}) returned nothing, owed {:?}",
                    UPLINKS[up],
                    max,
                    want
                );
                prop_assert_eq!(
                    &got_ids[..],
                    &want[..got_ids.len().min(want.len())],
                    "uplink {} next({})",
                    UPLINKS[up],
                    max
                );
                for d in &got {
                    prop_assert_eq!(
                        d.attempts,
                        m.expected_attempts(up, &d.id),
                        "attempts of {}",
                        d.id
                    );
                    m.seq_of.insert(d.id, d.seq);
                }
                let u = &mut m.up[up];
                for id in &got_ids {
                    *u.handouts.entry(*id).or_default() += 1;
                }
                u.handed += got_ids.len();
            }
            Op::Ack { up, pick } => {
                let u = &mut m.up[up];
                let chosen = u.picked(pick);
                let seqs: Vec<u64> = chosen.iter().map(|id| m.seq_of[id]).collect();
                h.cursors[up].ack(&seqs);
                u.queue.retain(|id| !chosen.contains(id));
                u.handed -= chosen.len();
                u.uncommitted.extend(chosen);
            }
            Op::Rewind { up } => {
                h.cursors[up].rewind();
                m.up[up].handed = 0;
            }
            Op::Nack { up, pick } => {
                let chosen = m.up[up].picked(pick);
                let seqs: Vec<u64> = chosen.iter().map(|id| m.seq_of[id]).collect();
                h.cursors[up].nack(&seqs, NackReason::Failed);
                m.up[up].back_to(&chosen);
            }
            Op::Release { up, pick } => {
                let chosen = m.up[up].picked(pick);
                let seqs: Vec<u64> = chosen.iter().map(|id| m.seq_of[id]).collect();
                h.cursors[up].release(&seqs);
                h.run().outbox.flush().await.unwrap();
                let other = 1 - up;
                let (moved, kept): (Vec<Ulid>, Vec<Ulid>) = chosen
                    .iter()
                    .partition(|id| m.route(id, UplinkSet::single(up)).contains(other));
                let u = &mut m.up[up];
                u.queue.retain(|id| !moved.contains(id));
                u.handed -= moved.len();
                u.back_to(&kept);
                for id in moved {
                    let o = &mut m.up[other];
                    if o.queue.contains(&id) {
                        continue; // already owed there: nothing changes for that uplink
                    }
                    let p = o.queue.partition_point(|q| m.order[q] < m.order[&id]);
                    o.queue.insert(p, id);
                    o.handed = o.handed.min(p);
                    o.adopted.insert(id);
                    o.handouts.insert(id, 0);
                }
                // The flush committed every queued ack too.
                for u in &mut m.up {
                    u.uncommitted.clear();
                }
                h.check_stats(&m)?;
            }
            Op::Crash => {
                h.cursors.clear();
                h.run.take().unwrap().crash().await;
                h.start();
                // Acks that were not known committed may or may not have survived.
                for (i, u) in m.up.iter_mut().enumerate() {
                    let mut all = Vec::new();
                    loop {
                        let got = h.cursors[i].try_next(64).await.unwrap();
                        if got.is_empty() {
                            break;
                        }
                        for d in &got {
                            prop_assert_eq!(d.attempts, 1, "replay after a crash is marked");
                            m.seq_of.insert(d.id, d.seq);
                        }
                        all.extend(got.iter().map(|d| d.id));
                    }
                    let owed: HashSet<Ulid> = u.queue.iter().copied().collect();
                    for id in &u.queue {
                        prop_assert!(
                            all.contains(id),
                            "{} lost reading {} after a crash",
                            UPLINKS[i],
                            id
                        );
                    }
                    for id in &all {
                        prop_assert!(
                            owed.contains(id) || u.uncommitted.contains(id),
                            "{} got {} back although its ack was committed",
                            UPLINKS[i],
                            id
                        );
                    }
                    let pos: Vec<usize> = all.iter().map(|id| m.order[id]).collect();
                    prop_assert!(pos.windows(2).all(|w| w[0] < w[1]), "replay out of order");
                    u.queue = all;
                }
                m.restarted();
                // The drain above counted as hand-outs: rewind both sides to a clean state.
                for (i, c) in h.cursors.iter_mut().enumerate() {
                    for id in &m.up[i].queue {
                        m.up[i].handouts.insert(*id, 1);
                    }
                    c.rewind();
                }
                h.check_stats(&m)?;
            }
            Op::Reopen => {
                h.cursors.clear();
                h.run.take().unwrap().stop().await;
                h.start();
                m.restarted();
                h.check_stats(&m)?;
            }
        }
        prop_assert_eq!(owed_to_nobody(&h.cfg.path), 0, "readings owed to no uplink");
    }
    h.cursors.clear();
    h.run.take().unwrap().stop().await;
    Ok(())
}

proptest! {
    #![proptest_config(common::proptest_config("proptest-regressions/model.txt", 128))]

    #[test]
    fn outbox_matches_the_model_through_crashes_and_restarts(
        ops in proptest::collection::vec(op(), 1..40),
        tail in prop_oneof![Just(0usize), Just(2), Just(1000)],
        max_batch in 1usize..8,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = StoreConfig {
            path: dir.path().join("outbox.db"),
            commit_window: Duration::ZERO,
            max_batch,
            tail_readings: tail,
            ..StoreConfig::default()
        };
        common::block_on(run_ops(cfg, ops))?;
    }
}
