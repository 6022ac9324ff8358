//! The delivery record (`[store] delivery_log`): which uplink delivered which reading, written
//! with the acknowledgement, looked up through `Outbox::trace`, bounded in age and rows, and
//! added to a version-1 file at open.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{AlarmsEverywhere, ManualClock, Running, cfg, drain, names, reading, seqs};
use ulid::Ulid;
use wardgate_core::{Clock, MessageClass, OutboxCursor};
use wardgate_store::{OpenOptions, ReadingTrace, StoreConfig, StoreMetrics};

fn trace(run: &Running, id: Ulid) -> ReadingTrace {
    run.outbox.trace(id).unwrap()
}

fn delivered_by(t: &ReadingTrace) -> Vec<&str> {
    let mut v: Vec<&str> = t.deliveries.iter().map(|d| d.uplink.as_str()).collect();
    v.sort_unstable();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_record_names_the_uplink_that_delivered_each_reading_including_after_a_failover() {
    let dir = tempfile::tempdir().unwrap();
    let opts = OpenOptions {
        router: Arc::new(AlarmsEverywhere),
        ..OpenOptions::default()
    };
    let run = Running::start_opts(&cfg(dir.path()), &names(&["cloud", "backup"]), opts).unwrap();
    let mut alarm = reading("bed-1", 100);
    alarm.class = MessageClass::Alarm;
    let (vital, moved, alarm_id) = (reading("bed-1", 100), reading("bed-2", 100), alarm.id);
    let (vital_id, moved_id) = (vital.id, moved.id);
    run.bus.submit(vec![vital, alarm, moved]).await.unwrap();

    // Held: owed where the router put it, nothing delivered yet.
    let t = trace(&run, alarm_id);
    let p = t.pending.as_ref().expect("held");
    assert_eq!(p.owed_to, ["cloud", "backup"]);
    assert_eq!((p.device.as_str(), p.class), ("bed-1", MessageClass::Alarm));
    assert!(t.deliveries.is_empty());
    assert_eq!(trace(&run, vital_id).pending.unwrap().owed_to, ["cloud"]);

    let mut cloud = run.outbox.cursor("cloud").unwrap();
    let mut backup = run.outbox.cursor("backup").unwrap();
    // Cloud delivers the alarm and the first vital, gives the second vital up (failover).
    assert_eq!(seqs(&drain(&mut cloud).await), [2, 1, 3]);
    cloud.ack(&[1, 2]);
    cloud.release(&[3]);
    run.outbox.flush().await.unwrap();

    let t = trace(&run, alarm_id);
    assert_eq!(t.pending.as_ref().unwrap().owed_to, ["backup"], "{t:?}");
    assert_eq!(delivered_by(&t), ["cloud"]);
    let t = trace(&run, vital_id);
    assert!(t.pending.is_none());
    assert_eq!(delivered_by(&t), ["cloud"]);
    assert_eq!(trace(&run, moved_id).pending.unwrap().owed_to, ["backup"]);

    assert_eq!(seqs(&drain(&mut backup).await), [2, 3]);
    backup.ack(&[2, 3]);
    run.outbox.flush().await.unwrap();
    let t = trace(&run, alarm_id);
    assert!(t.pending.is_none());
    assert_eq!(
        delivered_by(&t),
        ["backup", "cloud"],
        "both copies recorded"
    );
    assert_eq!(delivered_by(&trace(&run, moved_id)), ["backup"]);
    assert!(!t.deliveries[0].acked_at.is_empty());

    // Never seen: unknown.
    assert!(trace(&run, Ulid::new()).is_unknown());
    drop((cloud, backup));

    // The record is durable: still there after a restart.
    run.stop().await;
    let run = Running::start(&cfg(dir.path()), &names(&["cloud", "backup"])).unwrap();
    assert_eq!(
        delivered_by(&trace(&run, alarm_id)),
        ["backup", "cloud"],
        "after a restart"
    );
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_turned_off_writes_nothing_forgets_the_old_one_and_held_readings_are_still_found()
{
    let dir = tempfile::tempdir().unwrap();
    // Recorded while the record was on.
    let run = Running::start(&cfg(dir.path()), &names(&["cloud"])).unwrap();
    let early = reading("bed-1", 100);
    let early_id = early.id;
    run.bus.submit(vec![early]).await.unwrap();
    let mut cur = run.outbox.cursor("cloud").unwrap();
    let got = drain(&mut cur).await;
    cur.ack(&seqs(&got));
    run.outbox.flush().await.unwrap();
    assert_eq!(delivered_by(&trace(&run, early_id)), ["cloud"]);
    drop(cur);
    run.stop().await;

    let c = StoreConfig {
        delivery_log: Duration::ZERO,
        ..cfg(dir.path())
    };
    let run = Running::start(&c, &names(&["cloud"])).unwrap();
    let (a, b) = (reading("bed-1", 100), reading("bed-1", 100));
    let (a_id, b_id) = (a.id, b.id);
    run.bus.submit(vec![a, b]).await.unwrap();
    let mut cur = run.outbox.cursor("cloud").unwrap();
    let got = drain(&mut cur).await;
    assert_eq!(got.len(), 2);
    cur.ack(&[got[0].seq]);
    run.outbox.flush().await.unwrap();
    assert!(trace(&run, a_id).is_unknown(), "delivered, not recorded");
    assert_eq!(trace(&run, b_id).pending.unwrap().seq, got[1].seq);
    // What the earlier run recorded goes at the next housekeeping.
    eventually("the old record removed", || {
        trace(&run, early_id).is_unknown()
    })
    .await;
    drop(cur);
    run.stop().await;
}

/// Polls `cond` until it holds (the writer prunes at its once-a-second housekeeping).
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_record_keeps_at_most_its_rows_and_forgets_readings_older_than_its_age() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let c = StoreConfig {
        delivery_log: Duration::from_secs(3600),
        delivery_log_rows: 3,
        ..cfg(dir.path())
    };
    let dyn_clock: Arc<dyn Clock> = clock.clone();
    let run = Running::start_with(
        &c,
        &names(&["cloud"]),
        StoreMetrics::unregistered(),
        Some(dyn_clock),
    )
    .unwrap();
    // Ids one millisecond apart, created "now" on the outbox's clock: the ULID order is the
    // creation order.
    let now_ms = |clock: &ManualClock| {
        clock
            .now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    };
    let start = now_ms(&clock);
    let batch: Vec<_> = (0..5u64)
        .map(|i| {
            let mut r = reading("bed-1", 100);
            r.id = Ulid::from_parts(start + i, u128::from(i));
            r
        })
        .collect();
    let ids: Vec<Ulid> = batch.iter().map(|r| r.id).collect();
    run.bus.submit(batch).await.unwrap();
    let mut cur = run.outbox.cursor("cloud").unwrap();
    let got = drain(&mut cur).await;
    cur.ack(&seqs(&got));
    run.outbox.flush().await.unwrap();
    assert!(ids.iter().all(|id| !trace(&run, *id).is_unknown()));

    // Five rows, three allowed: the two oldest go at the next housekeeping.
    eventually("the row bound", || trace(&run, ids[1]).is_unknown()).await;
    assert!(trace(&run, ids[0]).is_unknown());
    for id in &ids[2..] {
        assert_eq!(delivered_by(&trace(&run, *id)), ["cloud"]);
    }

    // An hour and a bit later the rest is older than the record keeps.
    clock.advance(Duration::from_secs(3600) + Duration::from_millis(10));
    eventually("the age bound", || trace(&run, ids[4]).is_unknown()).await;
    drop(cur);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_file_gets_the_record_at_open_and_keeps_its_readings() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    let held = reading("bed-1", 100);
    let held_id = held.id;
    let run = Running::start(&c, &names(&["cloud"])).unwrap();
    run.bus.submit(vec![held]).await.unwrap();
    run.stop().await;
    {
        // What a version-1 file looks like: no delivery record.
        let conn = rusqlite::Connection::open(&c.path).unwrap();
        conn.execute_batch(
            "DROP TABLE deliveries; UPDATE meta SET value = 1 WHERE key = 'schema_version';",
        )
        .unwrap();
    }
    let run = Running::start(&c, &names(&["cloud"])).unwrap();
    assert_eq!(trace(&run, held_id).pending.unwrap().device, "bed-1");
    let mut cur = run.outbox.cursor("cloud").unwrap();
    let got = drain(&mut cur).await;
    cur.ack(&seqs(&got));
    run.outbox.flush().await.unwrap();
    assert_eq!(delivered_by(&trace(&run, held_id)), ["cloud"]);
    drop(cur);
    run.stop().await;
    let conn = rusqlite::Connection::open(&c.path).unwrap();
    let version: i64 = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(version, 2);
}
