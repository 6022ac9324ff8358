//! Routing, nack, release and delivery outcome events, through the public API.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{
    AlarmsEverywhere, PrefixRouter, Running, cfg, drain, names, owed_to_nobody, reading, seqs,
};
use proptest::prelude::*;
use ulid::Ulid;
use wardgate_core::{
    Delivery, MessageClass, NackReason, OutboxCursor, OutcomeKind, RouteInput, Router, UplinkSet,
};
use wardgate_store::metrics::NackLabel;
use wardgate_store::{Cursor, OpenOptions, StoreConfig};

const TWO: [&str; 2] = ["cloud", "backup"];

fn attempts(ds: &[Delivery]) -> Vec<u32> {
    ds.iter().map(|d| d.attempts).collect()
}

fn classed(device: &str, class: MessageClass) -> wardgate_core::Encoded {
    let mut r = reading(device, 100);
    r.class = class;
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reading_routed_to_one_uplink_of_two_is_delivered_only_there() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    let run = Running::start_opts(&c, &names(&TWO), PrefixRouter::options()).unwrap();
    let batch = vec![
        reading("0/bed-1", 100),
        reading("1/bed-2", 100),
        reading("0/bed-1", 100),
    ];
    let ids: Vec<Ulid> = batch.iter().map(|r| r.id).collect();
    run.bus.submit(batch).await.unwrap();
    let stats = run.outbox.stats().unwrap();
    assert_eq!(stats.readings, 3);
    assert_eq!(
        (stats.uplinks[0].readings, stats.uplinks[1].readings),
        (2, 1)
    );
    {
        let mut cloud = run.outbox.cursor("cloud").unwrap();
        let mut backup = run.outbox.cursor("backup").unwrap();
        let got = drain(&mut cloud).await;
        assert_eq!(
            got.iter().map(|d| d.id).collect::<Vec<_>>(),
            vec![ids[0], ids[2]]
        );
        let got_b = drain(&mut backup).await;
        assert_eq!(got_b.iter().map(|d| d.id).collect::<Vec<_>>(), vec![ids[1]]);
        // Delivered where owed: the readings leave the outbox entirely.
        cloud.ack(&seqs(&got));
        backup.ack(&seqs(&got_b));
        run.outbox.flush().await.unwrap();
        assert_eq!(run.outbox.stats().unwrap().readings, 0);
    }

    // The decision is stored with the reading: reopened with the default router (every
    // uplink), a routed reading is still owed only where it was routed.
    run.bus.submit(vec![reading("1/bed-2", 100)]).await.unwrap();
    run.stop().await;
    let run = Running::start(&c, &names(&TWO)).unwrap();
    let stats = run.outbox.stats().unwrap();
    assert_eq!(
        (stats.uplinks[0].readings, stats.uplinks[1].readings),
        (0, 1)
    );
    let mut cloud = run.outbox.cursor("cloud").unwrap();
    assert!(drain(&mut cloud).await.is_empty());
    drop(cloud);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_delivery_is_handed_out_by_the_other_uplink_after_its_alarms_in_lane_order() {
    let dir = tempfile::tempdir().unwrap();
    let opts = OpenOptions {
        router: Arc::new(AlarmsEverywhere),
        ..OpenOptions::default()
    };
    let run = Running::start_opts(&cfg(dir.path()), &names(&TWO), opts).unwrap();
    // seq 1: bed-1 vital (cloud), 2: bed-1 alarm (both), 3: bed-2 vital (cloud),
    // 4: bed-1 alarm (both).
    run.bus
        .submit(vec![
            classed("bed-1", MessageClass::Vital),
            classed("bed-1", MessageClass::Alarm),
            classed("bed-2", MessageClass::Vital),
            classed("bed-1", MessageClass::Alarm),
        ])
        .await
        .unwrap();
    let mut cloud = run.outbox.cursor("cloud").unwrap();
    let mut backup = run.outbox.cursor("backup").unwrap();

    // Backup has bed-1's first alarm in flight, not yet acknowledged.
    assert_eq!(seqs(&backup.try_next(1).await.unwrap()), vec![2]);

    // Cloud gives up bed-1's vital (seq 1) and delivers the rest: its alarms first (the
    // priority lane), then the vitals.
    let got = drain(&mut cloud).await;
    assert_eq!(seqs(&got), vec![2, 4, 1, 3]);
    cloud.release(&[1]);
    cloud.ack(&[2, 3, 4]);
    run.outbox.flush().await.unwrap();

    // Backup hands out its other alarm, then the released vital (the release moved only the
    // normal lane back; bed-1's first alarm is still in flight on the priority lane).
    let got = drain(&mut backup).await;
    assert_eq!(seqs(&got), vec![4, 1]);
    assert_eq!(attempts(&got), vec![0, 0]);
    assert_eq!(got[1].class, MessageClass::Vital);
    assert_eq!(got[1].device, "bed-1");
    // Cloud never gets it back: it is no longer owed there.
    cloud.rewind();
    assert!(drain(&mut cloud).await.is_empty());
    let stats = run.outbox.stats().unwrap();
    assert_eq!(
        (stats.uplinks[0].readings, stats.uplinks[1].readings),
        (0, 3)
    );
    assert_eq!(run.metrics.released_total("cloud"), 1);

    backup.ack(&[1, 2, 4]);
    run.outbox.flush().await.unwrap();
    assert_eq!(run.outbox.stats().unwrap().readings, 0);
    drop((cloud, backup));
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_keeps_the_reading_owed_and_hands_it_out_again_with_attempts_incremented() {
    let dir = tempfile::tempdir().unwrap();
    let run = Running::start(&cfg(dir.path()), &names(&["cloud"])).unwrap();
    run.bus
        .submit((0..3).map(|_| reading("bed-1", 100)).collect())
        .await
        .unwrap();
    let mut cur = run.outbox.cursor("cloud").unwrap();
    let got = cur.try_next(10).await.unwrap();
    assert_eq!((seqs(&got), attempts(&got)), (vec![1, 2, 3], vec![0, 0, 0]));

    // Seq 2 failed; seq 1 is still in flight and not repeated, seq 3 follows 2 again so the
    // device's order holds on the retry.
    cur.nack(&[2], NackReason::Failed);
    let again = cur.try_next(10).await.unwrap();
    assert_eq!((seqs(&again), attempts(&again)), (vec![2, 3], vec![1, 1]));
    cur.nack(&[3, 99], NackReason::TimedOut);
    let again = cur.try_next(10).await.unwrap();
    assert_eq!((seqs(&again), attempts(&again)), (vec![3], vec![2]));
    assert_eq!(run.metrics.nacked_total("cloud", NackLabel::Failed), 1);
    assert_eq!(run.metrics.nacked_total("cloud", NackLabel::TimedOut), 1);
    run.outbox.flush().await.unwrap();
    assert_eq!(run.outbox.stats().unwrap().readings, 3, "still owed");

    cur.ack(&[1, 2, 3]);
    run.outbox.flush().await.unwrap();
    assert_eq!(run.outbox.stats().unwrap().readings, 0);
    drop(cur);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_no_other_uplink_can_take_stays_owed_to_the_releasing_uplink() {
    let dir = tempfile::tempdir().unwrap();
    let run = Running::start_opts(&cfg(dir.path()), &names(&TWO), PrefixRouter::options()).unwrap();
    // Pinned to cloud: no failover.
    run.bus
        .submit(vec![reading("0!/bed-1", 100), reading("0!/bed-1", 100)])
        .await
        .unwrap();
    let mut cloud = run.outbox.cursor("cloud").unwrap();
    let mut backup = run.outbox.cursor("backup").unwrap();
    let mut events = run.outbox.subscribe_outcomes();
    assert_eq!(seqs(&drain(&mut cloud).await), vec![1, 2]);
    cloud.release(&[1, 2]);
    run.outbox.flush().await.unwrap();
    let again = drain(&mut cloud).await;
    assert_eq!((seqs(&again), attempts(&again)), (vec![1, 2], vec![1, 1]));
    assert!(drain(&mut backup).await.is_empty());
    assert_eq!(run.metrics.nacked_total("cloud", NackLabel::Unplaced), 2);
    assert_eq!(run.metrics.released_total("cloud"), 0);
    let kinds: Vec<OutcomeKind> = std::iter::from_fn(|| events.try_recv())
        .map(|e| e.outcome)
        .collect();
    assert_eq!(kinds, vec![OutcomeKind::Failed, OutcomeKind::Failed]);
    drop((cloud, backup));
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reading_the_router_owes_to_nobody_is_owed_to_every_uplink_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let run = Running::start_opts(&cfg(dir.path()), &names(&TWO), PrefixRouter::options()).unwrap();
    run.bus
        .submit(vec![reading("-/bed-1", 100), reading("0/bed-2", 100)])
        .await
        .unwrap();
    let stats = run.outbox.stats().unwrap();
    assert_eq!(
        (stats.uplinks[0].readings, stats.uplinks[1].readings),
        (2, 1)
    );
    assert_eq!(run.metrics.unrouted_total(), 1);
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn outcome_events_carry_the_outcome_and_a_latency_measured_on_the_paused_clock() {
    let dir = tempfile::tempdir().unwrap();
    let run = Running::start(&cfg(dir.path()), &names(&TWO)).unwrap();
    let mut events = run.outbox.subscribe_outcomes();
    let batch = vec![reading("bed-1", 100), reading("bed-2", 100)];
    let ids: Vec<Ulid> = batch.iter().map(|r| r.id).collect();
    run.bus.submit(batch).await.unwrap();
    let mut cloud = run.outbox.cursor("cloud").unwrap();
    assert_eq!(seqs(&cloud.try_next(10).await.unwrap()), vec![1, 2]);

    tokio::time::advance(Duration::from_millis(250)).await;
    cloud.ack(&[1]);
    tokio::time::advance(Duration::from_millis(100)).await;
    cloud.nack(&[2], NackReason::TimedOut);
    assert_eq!(seqs(&cloud.try_next(10).await.unwrap()), vec![2]);
    tokio::time::advance(Duration::from_millis(40)).await;
    cloud.release(&[2]);

    let got: Vec<_> = std::iter::from_fn(|| events.try_recv()).collect();
    let summary: Vec<_> = got
        .iter()
        .map(|e| (e.outcome, e.seq, e.attempts, e.latency))
        .collect();
    assert_eq!(
        summary,
        vec![
            (OutcomeKind::Acked, 1, 0, Duration::from_millis(250)),
            (OutcomeKind::TimedOut, 2, 0, Duration::from_millis(350)),
            (OutcomeKind::Released, 2, 1, Duration::from_millis(40)),
        ]
    );
    for e in &got {
        assert_eq!((e.uplink, &*e.uplink_name), (0, "cloud"));
        assert_eq!(e.class, MessageClass::Vital);
    }
    assert_eq!((got[0].id, &*got[0].device), (ids[0], "bed-1"));
    assert_eq!((got[2].id, &*got[2].device), (ids[1], "bed-2"));
    assert_eq!(events.lost(), 0);
    drop(cloud);
    run.stop().await;
}

#[derive(Debug, Clone)]
enum Op {
    Append { route: u8, pinned: bool },
    Next { up: usize },
    Ack { up: usize, pick: u8 },
    Release { up: usize, pick: u8 },
    Nack { up: usize, pick: u8 },
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..8, any::<bool>()).prop_map(|(route, pinned)| Op::Append { route, pinned }),
        4 => (0usize..3).prop_map(|up| Op::Next { up }),
        2 => (0usize..3, any::<u8>()).prop_map(|(up, pick)| Op::Ack { up, pick }),
        3 => (0usize..3, any::<u8>()).prop_map(|(up, pick)| Op::Release { up, pick }),
        1 => (0usize..3, any::<u8>()).prop_map(|(up, pick)| Op::Nack { up, pick }),
        1 => Just(Op::Crash),
    ]
}

fn picked(handed: &[u64], pick: u8) -> Vec<u64> {
    handed
        .iter()
        .enumerate()
        .filter(|(i, _)| pick & (1 << (i % 8)) != 0)
        .map(|(_, s)| *s)
        .collect()
}

async fn never_owed_to_nobody(c: StoreConfig, ops: Vec<Op>) -> Result<(), TestCaseError> {
    const THREE: [&str; 3] = ["a", "b", "c"];
    let start = || {
        let run = Running::start_opts(&c, &names(&THREE), PrefixRouter::options()).unwrap();
        let cursors: Vec<Cursor> = THREE
            .iter()
            .map(|u| run.outbox.cursor(u).unwrap())
            .collect();
        (run, cursors)
    };
    let (mut run, mut cursors) = start();
    let mut handed: [Vec<u64>; 3] = Default::default();
    for op in ops {
        match op.clone() {
            Op::Append { route, pinned } => {
                let prefix: String = (0..3)
                    .filter(|i| route & (1 << i) != 0)
                    .map(|i| char::from(b'0' + i))
                    .collect();
                let prefix = match (prefix.is_empty(), pinned) {
                    (true, _) => "-".to_owned(),
                    (false, true) => format!("{prefix}!"),
                    (false, false) => prefix,
                };
                run.bus
                    .submit(vec![reading(&format!("{prefix}/bed"), 50)])
                    .await
                    .unwrap();
            }
            Op::Next { up } => {
                let got = cursors[up].try_next(4).await.unwrap();
                handed[up].extend(got.iter().map(|d| d.seq));
            }
            Op::Ack { up, pick } => {
                let chosen = picked(&handed[up], pick);
                cursors[up].ack(&chosen);
                handed[up].retain(|s| !chosen.contains(s));
            }
            Op::Release { up, pick } => {
                let chosen = picked(&handed[up], pick);
                cursors[up].release(&chosen);
                handed[up].retain(|s| !chosen.contains(s));
            }
            Op::Nack { up, pick } => {
                cursors[up].nack(&picked(&handed[up], pick), NackReason::Failed);
            }
            Op::Crash => {
                cursors.clear();
                run.crash().await;
                prop_assert_eq!(owed_to_nobody(&c.path), 0, "after a crash");
                (run, cursors) = start();
                handed = Default::default();
            }
        }
        run.outbox.flush().await.unwrap();
        prop_assert_eq!(owed_to_nobody(&c.path), 0, "after {:?}", op);
    }
    cursors.clear();
    run.stop().await;
    Ok(())
}

proptest! {
    #![proptest_config(common::proptest_config("proptest-regressions/routing.txt", 32))]

    #[test]
    fn a_reading_is_never_owed_to_zero_uplinks(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let c = StoreConfig {
            path: dir.path().join("outbox.db"),
            commit_window: Duration::ZERO,
            ..StoreConfig::default()
        };
        common::block_on(never_owed_to_nobody(c, ops))?;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_is_handed_out_before_a_backlog_owed_to_the_same_uplink() {
    let dir = tempfile::tempdir().unwrap();
    let run = Running::start(&cfg(dir.path()), &names(&["cloud"])).unwrap();
    // A backlog far larger than the in-memory tail, so the normal lane reads it from disk.
    for chunk in 0..20 {
        run.bus
            .submit(
                (0..500)
                    .map(|i| reading(&format!("bed-{}", (chunk * 500 + i) % 7), 200))
                    .collect(),
            )
            .await
            .unwrap();
    }
    let mut cur = run.outbox.cursor("cloud").unwrap();
    let first = cur.next(100).await.unwrap();
    assert_eq!(seqs(&first), (1..=100).collect::<Vec<_>>());

    run.bus
        .submit(vec![
            classed("bed-3", MessageClass::Alarm),
            classed("bed-3", MessageClass::Alarm),
        ])
        .await
        .unwrap();
    let next = cur.next(100).await.unwrap();
    assert_eq!(
        seqs(&next),
        vec![10_001, 10_002],
        "the alarms come next, ahead of 9,900 older readings, in their own order"
    );
    assert!(next.iter().all(|d| d.class == MessageClass::Alarm));
    let rest = cur.next(100).await.unwrap();
    assert_eq!(
        seqs(&rest),
        (101..=200).collect::<Vec<_>>(),
        "then the backlog resumes where it was"
    );

    // Acknowledged alarms are gone; a rewind hands out only what is still unacknowledged,
    // each lane in its own order.
    cur.ack(&[10_001]);
    cur.rewind();
    let again = cur.next(1000).await.unwrap();
    assert_eq!(seqs(&again), vec![10_002]);
    let again = cur.next(200).await.unwrap();
    assert_eq!(seqs(&again), (1..=200).collect::<Vec<_>>());
    drop(cur);
    run.stop().await;
}

/// Routes to uplink 0 until told to cut it over, then to uplink 1, handing the store one
/// cutover (vitals move, alarms stay, `keep` stays) at its next call.
#[derive(Debug, Default)]
struct CutOver {
    cut: std::sync::Mutex<Option<wardgate_core::Cutover>>,
    after: std::sync::atomic::AtomicBool,
}

impl Router for CutOver {
    fn route(&self, _: &RouteInput<'_>) -> UplinkSet {
        if self.after.load(std::sync::atomic::Ordering::SeqCst) {
            UplinkSet::single(1)
        } else {
            UplinkSet::single(0)
        }
    }

    fn take_cutovers(&self) -> Vec<wardgate_core::Cutover> {
        let c = self.cut.lock().unwrap().take();
        if c.is_some() {
            self.after.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        c.into_iter().collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cutover_moves_the_backlog_in_the_same_commit_as_the_first_reading_routed_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let router = Arc::new(CutOver::default());
    let opts = OpenOptions {
        router: router.clone(),
        ..OpenOptions::default()
    };
    let run = Running::start_opts(&cfg(dir.path()), &names(&TWO), opts).unwrap();
    // seq 1..=6: vitals of two devices, seq 7: an alarm, all owed to cloud.
    let backlog: Vec<_> = (0..6)
        .map(|i| {
            classed(
                if i % 2 == 0 { "bed-1" } else { "bed-2" },
                MessageClass::Vital,
            )
        })
        .chain([classed("bed-1", MessageClass::Alarm)])
        .collect();
    let kept = backlog[5].id;
    run.bus.submit(backlog).await.unwrap();
    let mut cloud = run.outbox.cursor("cloud").unwrap();
    let mut backup = run.outbox.cursor("backup").unwrap();
    assert_eq!(seqs(&cloud.next(10).await.unwrap()), vec![7]);
    assert_eq!(
        seqs(&cloud.next(2).await.unwrap()),
        vec![1, 2],
        "in flight when it failed"
    );
    assert!(drain(&mut backup).await.is_empty());

    // Cloud is cut over: vitals move to backup (but the one kept), the alarm stays.
    *router.cut.lock().unwrap() = Some(wardgate_core::Cutover {
        from: 0,
        moves: vec![(MessageClass::Vital, UplinkSet::single(1))],
        keep: vec![kept],
    });
    // The next batch triggers it and is routed to backup in the same commit.
    run.bus
        .submit(vec![
            classed("bed-1", MessageClass::Vital),
            classed("bed-2", MessageClass::Vital),
        ])
        .await
        .unwrap();
    let got = drain(&mut backup).await;
    assert_eq!(
        seqs(&got),
        vec![1, 2, 3, 4, 5, 8, 9],
        "the moved backlog first, then the new readings: every device in order"
    );
    assert_eq!(run.metrics.released_total("cloud"), 5);
    let stats = run.outbox.stats().unwrap();
    assert_eq!(
        (stats.uplinks[0].readings, stats.uplinks[1].readings),
        (2, 7)
    );

    // Cloud keeps the alarm and the kept reading; what moved is never handed out by it again.
    cloud.rewind();
    let left = drain(&mut cloud).await;
    assert_eq!(seqs(&left), vec![7, 6]);
    cloud.ack(&[7, 6, 1, 2]);
    backup.ack(&[1, 2, 3, 4, 5, 8, 9]);
    run.outbox.flush().await.unwrap();
    assert_eq!(run.outbox.stats().unwrap().readings, 0);
    drop((cloud, backup));
    run.stop().await;
}

/// Counts what the outbox's observer is shown.
#[derive(Debug, Default)]
struct Counting(std::sync::Mutex<Vec<(OutcomeKind, u64, String)>>);

impl wardgate_core::OutcomeObserver for Counting {
    fn observe(&self, ev: &wardgate_core::DeliveryOutcome) {
        self.0
            .lock()
            .unwrap()
            .push((ev.outcome, ev.seq, ev.uplink_name.to_string()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_observer_sees_every_outcome_without_a_subscriber_and_in_report_order() {
    let dir = tempfile::tempdir().unwrap();
    let seen = Arc::new(Counting::default());
    let opts = OpenOptions {
        observer: Some(seen.clone()),
        ..OpenOptions::default()
    };
    let run = Running::start_opts(&cfg(dir.path()), &names(&["cloud"]), opts).unwrap();
    // More than a subscriber's channel holds, reported at once: an observer loses none.
    let n = 10_000u64;
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        run.bus
            .submit(chunk.iter().map(|_| reading("bed-1", 60)).collect())
            .await
            .unwrap();
    }
    let mut cur = run.outbox.cursor("cloud").unwrap();
    let got = drain(&mut cur).await;
    assert_eq!(got.len() as u64, n);
    cur.nack(&[1], NackReason::Failed);
    let all = seqs(&got);
    cur.ack(&all[1..]);
    let again = cur.try_next(10).await.unwrap();
    cur.ack(&seqs(&again));
    let seen = seen.0.lock().unwrap().clone();
    assert_eq!(seen.len() as u64, n + 1);
    assert_eq!(seen[0], (OutcomeKind::Failed, 1, "cloud".to_owned()));
    assert!(
        seen[1..]
            .iter()
            .all(|(k, _, u)| *k == OutcomeKind::Acked && u == "cloud")
    );
    let mut acked: Vec<u64> = seen[1..].iter().map(|(_, s, _)| *s).collect();
    acked.sort_unstable();
    assert_eq!(acked, (1..=n).collect::<Vec<_>>());
    drop(cur);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_reading_waits_in_the_quarantine_lane_alone_until_released_or_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    let lanes = names(&["cloud", "backup", wardgate_core::QUARANTINE]);
    let run = Running::start(&c, &lanes).unwrap();
    let held = |device: &str| {
        let mut r = reading(device, 100);
        r.held = true;
        r
    };
    // seq 1 held, 2 not, 3 held (an alarm: the lane has a priority lane too), 4 held.
    let mut alarm = held("bed-3");
    alarm.class = MessageClass::Alarm;
    run.bus
        .submit(vec![
            held("bed-1"),
            reading("bed-2", 100),
            alarm,
            held("bed-4"),
        ])
        .await
        .unwrap();
    let owed = |run: &Running| -> Vec<u64> {
        let s = run.outbox.stats().unwrap();
        s.uplinks.iter().map(|u| u.readings).collect()
    };
    assert_eq!(
        owed(&run),
        vec![1, 1, 3],
        "held readings are owed to quarantine alone"
    );

    let mut cloud = run.outbox.cursor("cloud").unwrap();
    let mut quarantine = run.outbox.cursor(wardgate_core::QUARANTINE).unwrap();
    assert_eq!(seqs(&drain(&mut cloud).await), vec![2]);
    cloud.ack(&[2]);
    assert_eq!(seqs(&drain(&mut quarantine).await), vec![3, 1, 4]);

    // Approved: released to the router, which never picks the quarantine lane. Dismissed:
    // acknowledged, gone.
    quarantine.release(&[1, 3]);
    quarantine.ack(&[4]);
    run.outbox.flush().await.unwrap();
    // Both uplinks get the released two (backup still owes seq 2 as well).
    assert_eq!(owed(&run), vec![2, 3, 0]);
    assert_eq!(seqs(&drain(&mut cloud).await), vec![3, 1]);
    let s = run.outbox.stats().unwrap();
    assert_eq!(s.readings, 3, "the dismissed reading left the outbox");

    // Held survives a restart: still owed to quarantine only.
    run.bus.submit(vec![held("bed-5")]).await.unwrap();
    drop((cloud, quarantine));
    run.stop().await;
    let run = Running::start(&c, &lanes).unwrap();
    assert_eq!(owed(&run), vec![2, 3, 1]);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_reading_is_refused_by_an_outbox_without_a_quarantine_lane() {
    let dir = tempfile::tempdir().unwrap();
    let run = Running::start(&cfg(dir.path()), &names(&TWO)).unwrap();
    let mut r = reading("bed-1", 100);
    r.held = true;
    let refused = run.bus.submit(vec![r, reading("bed-2", 100)]).await;
    assert!(
        matches!(refused, Err(wardgate_core::IngestError::Unavailable(_))),
        "{refused:?}"
    );
    assert_eq!(
        run.outbox.stats().unwrap().readings,
        0,
        "nothing of it stored"
    );
    run.stop().await;
}
