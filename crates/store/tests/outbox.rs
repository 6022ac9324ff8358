//! Behaviour of the outbox through its public API: group commit, quotas, cursors, restarts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{ManualClock, Running, cfg, names, reading};
use prometheus_client::registry::Registry;
use wardgate_core::{Clock, IngestError, OutboxCursor, OutboxError};
use wardgate_store::metrics::{CommitKind, DropReason, LingerOutcome, RejectReason, ReplayReason};
use wardgate_store::{Durability, Outbox, OverflowPolicy, StoreError, StoreMetrics};

fn ids(ds: &[wardgate_core::Delivery]) -> Vec<ulid::Ulid> {
    ds.iter().map(|d| d.id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_submits_share_fsyncs_through_group_commit() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path());
    c.commit_window = Duration::from_millis(5);
    let run = Running::start(&c, &names(&["cloud"])).unwrap();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let bus = run.bus.clone();
        tasks.push(tokio::spawn(async move {
            bus.submit(vec![reading(&format!("bed-{i}"), 200)]).await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), Ok(()));
    }
    let commits = run.metrics.commits_total(CommitKind::Ingest);
    assert_eq!(run.metrics.committed_readings_total(), 200);
    assert!(
        commits < 200,
        "200 concurrent readings took {commits} commits: no sharing"
    );
    assert_eq!(run.outbox.stats().unwrap().readings, 200);
    run.stop().await;
}

/// Adaptive group commit (`commit_linger`): a lone device with one request in flight is not
/// held back (nothing can arrive while the writer would wait), and a steady stream from many
/// devices shares its commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_commit_linger_spares_a_lone_device_and_batches_a_steady_stream() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path());
    c.commit_window = Duration::ZERO;
    c.commit_linger = Duration::from_millis(20);
    let run = Running::start(&c, &names(&["cloud"])).unwrap();

    let started = std::time::Instant::now();
    for i in 0..60 {
        run.bus
            .submit(vec![reading(&format!("lone-{i}"), 100)])
            .await
            .unwrap();
    }
    let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap();
    let empty = run.metrics.lingers_total(LingerOutcome::Empty);
    // Each wait that caught nothing turns waiting off for 100 ms.
    assert!(
        empty <= 1 + elapsed_ms / 100,
        "{empty} empty waits in {elapsed_ms} ms for a lone device"
    );
    assert_eq!(run.metrics.lingers_total(LingerOutcome::Caught), 0);
    assert_eq!(run.metrics.commits_total(CommitKind::Ingest), 60);

    // Eight devices, each sending every 2 ms with one request in flight, once a pause the
    // lone device caused is over.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let before = run.metrics.commits_total(CommitKind::Ingest);
    let mut devices = Vec::new();
    for d in 0..8 {
        let bus = run.bus.clone();
        devices.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(2));
            for i in 0..50 {
                tick.tick().await;
                bus.submit(vec![reading(&format!("bed-{d}-{i}"), 100)])
                    .await
                    .unwrap();
            }
        }));
    }
    for d in devices {
        d.await.unwrap();
    }
    let commits = run.metrics.commits_total(CommitKind::Ingest) - before;
    assert!(
        run.metrics.lingers_total(LingerOutcome::Caught) > 0,
        "the writer never waited for a steady stream"
    );
    assert!(
        commits <= 100,
        "400 readings from 8 steady devices took {commits} commits"
    );
    assert_eq!(run.outbox.stats().unwrap().readings, 460);
    run.stop().await;
}

/// A drained backlog's acknowledgements are committed in shares (at most 2,048 per lane per
/// commit), so a reading that arrives meanwhile never waits behind one huge commit; all of them
/// are committed, and the readings are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_acknowledgements_is_committed_in_bounded_shares() {
    let dir = tempfile::tempdir().unwrap();
    let run = Running::start(&cfg(dir.path()), &names(&["cloud"])).unwrap();
    let batch: Vec<_> = (0..5000)
        .map(|i| reading(&format!("bed-{}", i % 50), 80))
        .collect();
    run.bus.submit(batch).await.unwrap();
    let mut cur = run.outbox.cursor("cloud").unwrap();
    let mut seqs = Vec::new();
    while seqs.len() < 5000 {
        seqs.extend(
            cur.next(5000 - seqs.len())
                .await
                .unwrap()
                .iter()
                .map(|d| d.seq),
        );
    }
    let before = run.metrics.commits_total(CommitKind::Housekeeping);
    cur.ack(&seqs);
    // A reading while they are queued: it takes a share, not all of them.
    run.bus
        .submit(vec![reading("meanwhile", 80)])
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while run.metrics.acks_total("cloud") < 5000 {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of 5000 acknowledgements committed",
            run.metrics.acks_total("cloud")
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ack_commits = run.metrics.commits_total(CommitKind::Housekeeping) - before;
    // 5000 acknowledgements at most 2048 a commit: at least two commits besides the reading's.
    assert!(
        ack_commits >= 2,
        "5000 acknowledgements in {ack_commits} acknowledgement-only commits"
    );
    assert_eq!(run.outbox.stats().unwrap().readings, 1);
    drop(cur);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_policy_refuses_beyond_quota_and_reports_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path());
    c.max_readings = 5;
    c.overflow = OverflowPolicy::Reject;
    let run = Running::start(&c, &names(&["cloud"])).unwrap();
    for i in 0..4 {
        run.bus
            .submit(vec![reading(&format!("d{i}"), 100)])
            .await
            .unwrap();
    }
    assert!(run.store_ready(), "{}", run.store_detail());
    run.bus.submit(vec![reading("d4", 100)]).await.unwrap();
    assert!(
        !run.store_ready(),
        "at the quota the store takes nothing more"
    );
    assert_eq!(
        run.bus.submit(vec![reading("late", 100)]).await,
        Err(IngestError::StoreFull)
    );
    let stats = run.outbox.stats().unwrap();
    assert_eq!(stats.readings, 5);
    assert!(!run.store_ready(), "full under reject must not be ready");
    assert!(
        run.store_detail().contains("full"),
        "{}",
        run.store_detail()
    );
    assert_eq!(run.metrics.rejected_total(RejectReason::Full), 1);

    // Delivering frees room: the store takes readings and is ready again.
    let mut cur = run.outbox.cursor("cloud").unwrap();
    let got = cur.next(2).await.unwrap();
    cur.ack(&got.iter().map(|d| d.seq).collect::<Vec<_>>());
    run.bus.submit(vec![reading("after", 100)]).await.unwrap();
    assert_eq!(run.outbox.stats().unwrap().readings, 4);
    assert!(run.store_ready(), "{}", run.store_detail());
    drop(cur);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byte_quota_refuses_whole_requests_and_oversized_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path());
    c.max_bytes = 1000;
    let run = Running::start(&c, &names(&["cloud"])).unwrap();
    run.bus
        .submit(vec![reading("a", 400), reading("a", 400)])
        .await
        .unwrap();
    assert_eq!(
        run.bus
            .submit(vec![reading("b", 150), reading("b", 150)])
            .await,
        Err(IngestError::StoreFull)
    );
    assert_eq!(
        run.bus.submit(vec![reading("c", 2000)]).await,
        Err(IngestError::StoreFull)
    );
    assert_eq!(run.metrics.rejected_total(RejectReason::TooLarge), 1);
    run.bus.submit(vec![reading("d", 150)]).await.unwrap();
    let stats = run.outbox.stats().unwrap();
    assert_eq!((stats.readings, stats.bytes), (3, 950));
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_oldest_keeps_the_newest_and_counts_the_drops() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path());
    c.max_readings = 5;
    c.overflow = OverflowPolicy::DropOldest;
    let run = Running::start(&c, &names(&["cloud"])).unwrap();
    let mut sent = Vec::new();
    for i in 0..8 {
        let r = reading(&format!("d{i}"), 100);
        sent.push(r.id);
        run.bus.submit(vec![r]).await.unwrap();
    }
    // One request larger than the room left still fits by dropping more.
    let big: Vec<_> = (0..3).map(|_| reading("big", 100)).collect();
    sent.extend(big.iter().map(|r| r.id));
    run.bus.submit(big).await.unwrap();

    assert_eq!(run.outbox.stats().unwrap().readings, 5);
    assert_eq!(run.metrics.dropped_total(DropReason::Overflow), 6);
    assert!(run.store_ready(), "drop-oldest stays ready when full");
    let mut cur = run.outbox.cursor("cloud").unwrap();
    let got = cur.next(100).await.unwrap();
    assert_eq!(
        ids(&got),
        sent[6..].to_vec(),
        "the newest five remain, in order"
    );
    drop(cur);
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn readings_older_than_max_age_expire_and_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path());
    c.max_age = Duration::from_secs(3600);
    let clock = ManualClock::new();
    let run = Running::start_with(
        &c,
        &names(&["cloud"]),
        StoreMetrics::unregistered(),
        Some(clock.clone() as Arc<dyn Clock>),
    )
    .unwrap();
    for _ in 0..3 {
        run.bus.submit(vec![reading("old", 100)]).await.unwrap();
    }
    clock.advance(Duration::from_secs(1800));
    let young = reading("young", 100);
    run.bus.submit(vec![young.clone()]).await.unwrap();
    assert_eq!(
        run.outbox.stats().unwrap().uplinks[0].oldest_age,
        Some(Duration::from_secs(1800))
    );

    clock.advance(Duration::from_secs(1801));
    // The housekeeping tick sees the expired readings; the writer handles it before the next
    // request, so once that request resolves the expiry is committed.
    tokio::time::sleep(Duration::from_secs(2)).await;
    run.bus.submit(vec![reading("new", 100)]).await.unwrap();

    assert_eq!(run.metrics.dropped_total(DropReason::Expired), 3);
    let stats = run.outbox.stats().unwrap();
    assert_eq!(stats.readings, 2);
    let mut cur = run.outbox.cursor("cloud").unwrap();
    let got = cur.next(10).await.unwrap();
    assert_eq!(got[0].id, young.id);
    drop(cur);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_readings_are_replayed_in_order_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    let ups = names(&["cloud", "backup"]);
    let run = Running::start(&c, &ups).unwrap();
    let mut sent = Vec::new();
    for i in 0..10 {
        let r = reading(&format!("d{}", i % 3), 120);
        sent.push(r.id);
        run.bus.submit(vec![r]).await.unwrap();
    }
    let mut cloud = run.outbox.cursor("cloud").unwrap();
    let first = cloud.next(4).await.unwrap();
    assert_eq!(ids(&first), sent[..4].to_vec());
    assert!(first.iter().all(|d| d.attempts == 0));
    cloud.ack(&[first[0].seq, first[1].seq]);
    // The next request's commit carries the queued acks.
    let extra = reading("d9", 120);
    sent.push(extra.id);
    run.bus.submit(vec![extra]).await.unwrap();
    drop(cloud);
    run.crash().await;

    let metrics = StoreMetrics::unregistered();
    let run = Running::start_with(&c, &ups, metrics.clone(), None).unwrap();
    let mut cloud = run.outbox.cursor("cloud").unwrap();
    let again = cloud.next(100).await.unwrap();
    assert_eq!(
        ids(&again),
        sent[2..].to_vec(),
        "unacked readings come back in order"
    );
    assert!(
        again.iter().all(|d| d.attempts == 1),
        "replays are marked as repeats"
    );
    assert_eq!(metrics.replayed_total("cloud", ReplayReason::Restart), 9);
    let mut backup = run.outbox.cursor("backup").unwrap();
    assert_eq!(ids(&backup.next(100).await.unwrap()), sent);
    let stats = run.outbox.stats().unwrap();
    assert_eq!(stats.readings, 11);
    assert_eq!(stats.uplinks[0].readings, 9);
    assert_eq!(stats.uplinks[1].readings, 11);
    drop((cloud, backup));
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewind_hands_out_unacknowledged_readings_again() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = StoreMetrics::unregistered();
    let run =
        Running::start_with(&cfg(dir.path()), &names(&["cloud"]), metrics.clone(), None).unwrap();
    let batch: Vec<_> = (0..5).map(|i| reading(&format!("d{i}"), 100)).collect();
    let sent: Vec<_> = batch.iter().map(|r| r.id).collect();
    run.bus.submit(batch).await.unwrap();
    let mut cur = run.outbox.cursor("cloud").unwrap();
    let got = cur.next(5).await.unwrap();
    assert_eq!(ids(&got), sent);
    cur.ack(&[got[1].seq, got[3].seq]);
    cur.rewind();
    let again = cur.next(10).await.unwrap();
    assert_eq!(ids(&again), vec![sent[0], sent[2], sent[4]]);
    assert!(again.iter().all(|d| d.attempts == 1));
    cur.rewind();
    let third = cur.next(10).await.unwrap();
    assert!(third.iter().all(|d| d.attempts == 2));
    assert_eq!(metrics.replayed_total("cloud", ReplayReason::Rewind), 6);
    cur.ack(&third.iter().map(|d| d.seq).collect::<Vec<_>>());
    cur.rewind();
    assert!(
        cur.try_next(10).await.unwrap().is_empty(),
        "nothing left to redeliver"
    );
    drop(cur);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_cursor_wakes_on_the_next_commit() {
    let dir = tempfile::tempdir().unwrap();
    let run = Running::start(&cfg(dir.path()), &names(&["cloud"])).unwrap();
    let mut cur = run.outbox.cursor("cloud").unwrap();
    let waiter = tokio::spawn(async move {
        let got = cur.next(10).await;
        (cur, got)
    });
    tokio::task::yield_now().await;
    let r = reading("d", 80);
    run.bus.submit(vec![r.clone()]).await.unwrap();
    let (cur, got) = waiter.await.unwrap();
    assert_eq!(ids(&got.unwrap()), vec![r.id]);
    drop(cur);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_cursor_reads_from_disk_when_the_tail_is_small() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path());
    c.tail_readings = 4;
    let run = Running::start(&c, &names(&["cloud"])).unwrap();
    let mut sent = Vec::new();
    for chunk in 0..10 {
        let batch: Vec<_> = (0..7)
            .map(|i| reading(&format!("d{chunk}-{i}"), 90))
            .collect();
        sent.extend(batch.iter().map(|r| r.id));
        run.bus.submit(batch).await.unwrap();
    }
    let mut cur = run.outbox.cursor("cloud").unwrap();
    let mut got = Vec::new();
    while got.len() < sent.len() {
        let ds = cur.next(9).await.unwrap();
        assert!(ds.len() <= 9);
        cur.ack(&ds.iter().map(|d| d.seq).collect::<Vec<_>>());
        got.extend(ids(&ds));
    }
    assert_eq!(got, sent);
    drop(cur);
    run.stop().await;
    let stats_after = {
        let o = Outbox::open(&c, &names(&["cloud"]), StoreMetrics::unregistered()).unwrap();
        o.stats().unwrap()
    };
    assert_eq!(
        stats_after.readings, 0,
        "every acknowledged reading was deleted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_uplinks_are_released_and_new_ones_get_only_new_readings() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    let run = Running::start(&c, &names(&["a", "b"])).unwrap();
    let old: Vec<_> = (0..3).map(|_| reading("d", 100)).collect();
    run.bus.submit(old.clone()).await.unwrap();
    let mut a = run.outbox.cursor("a").unwrap();
    let got = a.next(10).await.unwrap();
    a.ack(&got.iter().map(|d| d.seq).collect::<Vec<_>>());
    drop(a);
    run.stop().await;

    // b leaves (its readings were acked by a: owed to nobody now), c arrives.
    let run = Running::start(&c, &names(&["a", "c"])).unwrap();
    assert_eq!(run.outbox.stats().unwrap().readings, 0);
    let new = reading("d", 100);
    run.bus.submit(vec![new.clone()]).await.unwrap();
    let mut cc = run.outbox.cursor("c").unwrap();
    assert_eq!(ids(&cc.next(10).await.unwrap()), vec![new.id]);
    assert!(matches!(
        run.outbox.cursor("b"),
        Err(StoreError::UnknownUplink(_))
    ));
    drop(cc);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_live_cursor_per_uplink_and_a_new_one_replays_unacked() {
    let dir = tempfile::tempdir().unwrap();
    let run = Running::start(&cfg(dir.path()), &names(&["cloud"])).unwrap();
    let batch: Vec<_> = (0..3).map(|_| reading("d", 100)).collect();
    run.bus.submit(batch.clone()).await.unwrap();
    let mut first = run.outbox.cursor("cloud").unwrap();
    assert!(matches!(
        run.outbox.cursor("cloud"),
        Err(StoreError::CursorInUse(_))
    ));
    let got = first.next(3).await.unwrap();
    first.ack(&[got[0].seq]);
    run.bus.submit(vec![reading("d", 100)]).await.unwrap(); // commits the ack
    drop(first);
    let mut second = run.outbox.cursor("cloud").unwrap();
    let again = second.next(10).await.unwrap();
    assert_eq!(again.len(), 3);
    assert_eq!(again[0].id, batch[1].id);
    assert_eq!(
        again.iter().map(|d| d.attempts).collect::<Vec<_>>(),
        vec![1, 1, 0],
        "the new cursor marks what the old one may have sent"
    );
    drop(second);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_no_fsync_acknowledges_on_receipt_and_still_stores() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path());
    c.durability = Durability::UnsafeNoFsync;
    let run = Running::start(&c, &names(&["cloud"])).unwrap();
    let r = reading("d", 100);
    run.bus.submit(vec![r.clone()]).await.unwrap();
    let mut cur = run.outbox.cursor("cloud").unwrap();
    assert_eq!(ids(&cur.next(1).await.unwrap()), vec![r.id]);
    drop(cur);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_commits_queued_requests_and_closes_cursors() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    let run = Running::start(&c, &names(&["cloud"])).unwrap();
    let mut pending = Vec::new();
    for _ in 0..50 {
        pending.push(run.bus.enqueue(vec![reading("d", 100)]).unwrap());
    }
    let mut cur = run.outbox.cursor("cloud").unwrap();
    let bus = run.bus.clone();
    run.stop().await;
    for p in pending {
        assert_eq!(
            p.await.unwrap(),
            Ok(()),
            "queued before shutdown means stored"
        );
    }
    assert_eq!(
        bus.submit(vec![reading("late", 10)]).await,
        Err(IngestError::ShuttingDown)
    );
    assert_eq!(cur.next(100).await.unwrap().len(), 50);
    assert_eq!(cur.next(100).await, Err(OutboxError::Closed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_runs_once() {
    let dir = tempfile::tempdir().unwrap();
    let run = Running::start(&cfg(dir.path()), &names(&["cloud"])).unwrap();
    // A resolved submit proves the first writer is running.
    run.bus.submit(vec![reading("d", 10)]).await.unwrap();
    let (_bus, rx) = wardgate_core::Bus::new(1);
    let health = wardgate_core::Health::new();
    let second = run
        .outbox
        .run_writer(
            rx,
            wardgate_core::Shutdown::new(),
            health.reporter("x", wardgate_core::health::ComponentKind::Store),
        )
        .await;
    assert!(matches!(second, Err(StoreError::WriterRunning)));
    run.stop().await;
}

#[test]
fn open_refuses_an_empty_duplicate_or_oversized_uplink_list() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    let m = StoreMetrics::unregistered;
    assert!(matches!(
        Outbox::open(&c, &[], m()),
        Err(StoreError::NoUplinks)
    ));
    assert!(matches!(
        Outbox::open(&c, &names(&["a", "a"]), m()),
        Err(StoreError::DuplicateUplink(_))
    ));
    let many: Vec<String> = (0..32).map(|i| format!("u{i}")).collect();
    assert!(matches!(
        Outbox::open(&c, &many, m()),
        Err(StoreError::TooManyUplinks { count: 32 })
    ));
    assert!(
        Outbox::open(&c, &many[..31], m()).is_ok(),
        "31 uplinks of two lanes each fit the 63-bit mask"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_registered_under_their_documented_names() {
    let dir = tempfile::tempdir().unwrap();
    let mut registry = Registry::default();
    let metrics = StoreMetrics::register(&mut registry);
    let run = Running::start_with(&cfg(dir.path()), &names(&["cloud"]), metrics, None).unwrap();
    run.bus.submit(vec![reading("d", 100)]).await.unwrap();
    let mut cur = run.outbox.cursor("cloud").unwrap();
    let got = cur.next(1).await.unwrap();
    cur.ack(&[got[0].seq]);
    drop(cur);
    run.stop().await;
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    for name in [
        "wardgate_store_depth_readings ",
        "wardgate_store_depth_bytes ",
        "wardgate_store_uplink_depth_readings{uplink=\"cloud\"}",
        "wardgate_store_oldest_undelivered_age_seconds{uplink=\"cloud\"}",
        "wardgate_store_commits_total{kind=\"ingest\"} 1",
        "wardgate_store_commit_duration_seconds_count",
        "wardgate_store_commit_batch_readings_count 1",
        "wardgate_store_acks_total{uplink=\"cloud\"} 1",
        "# TYPE wardgate_store_dropped counter",
        "# TYPE wardgate_store_rejected counter",
        "# TYPE wardgate_store_replayed counter",
    ] {
        assert!(text.contains(name), "missing {name:?} in\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_open_trusts_stored_counters_and_an_unclean_one_recounts() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    let run = Running::start(&c, &names(&["cloud"])).unwrap();
    run.bus
        .submit((0..20).map(|_| reading("d", 100)).collect())
        .await
        .unwrap();
    run.stop().await;
    let tamper = |clean: i64| {
        let conn = rusqlite::Connection::open(&c.path).unwrap();
        conn.execute("UPDATE meta SET value = 7 WHERE key = 'readings'", [])
            .unwrap();
        conn.execute("UPDATE meta SET value = ?1 WHERE key = 'clean'", [clean])
            .unwrap();
    };
    // After a clean stop the counters are read, not recomputed: no scan of the backlog.
    tamper(1);
    let o = Outbox::open(&c, &names(&["cloud"]), StoreMetrics::unregistered()).unwrap();
    assert_eq!(o.stats().unwrap().readings, 7);
    drop(o);
    // After an unclean stop (which already pays for quick_check) they are recounted.
    tamper(0);
    let o = Outbox::open(&c, &names(&["cloud"]), StoreMetrics::unregistered()).unwrap();
    let stats = o.stats().unwrap();
    assert_eq!((stats.readings, stats.bytes), (20, 2000));
    assert_eq!(stats.uplinks[0].readings, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_with_gaps_in_any_order_keep_every_counter_exact() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    let ups = names(&["cloud", "backup"]);
    let run = Running::start(&c, &ups).unwrap();
    // 20 readings of 100 + i bytes, so byte counters tell which rows went.
    let batch: Vec<_> = (0..20).map(|i| reading("d", 100 + i)).collect();
    run.bus.submit(batch).await.unwrap();
    let mut cloud = run.outbox.cursor("cloud").unwrap();
    let mut backup = run.outbox.cursor("backup").unwrap();
    let cd = cloud.next(20).await.unwrap();
    let bd = backup.next(20).await.unwrap();
    let seq = |i: usize| cd[i].seq;
    // Runs 0..=2, 5, 7..=9 and 15..=19, unsorted; backup acks an overlapping set, so some rows
    // are deleted (both acked) and others only lose a bit.
    let cloud_acked = [9, 0, 17, 2, 5, 1, 8, 16, 7, 19, 15, 18];
    cloud.ack(&cloud_acked.map(seq));
    let backup_acked = [2, 3, 4, 5, 6, 9, 10, 19];
    backup.ack(&backup_acked.map(|i| bd[i].seq));
    // A later request's commit is known to carry the queued acks.
    run.bus.submit(vec![reading("d", 120)]).await.unwrap();

    let size = |i: usize| 100 + i as u64;
    let owed = |acked: &[usize]| {
        let left: Vec<usize> = (0..20).filter(|i| !acked.contains(i)).collect();
        (
            left.len() as u64 + 1,
            left.iter().map(|&i| size(i)).sum::<u64>() + 120,
        )
    };
    let both: Vec<usize> = (0..20)
        .filter(|i| cloud_acked.contains(i) && backup_acked.contains(i))
        .collect();
    let expect = (
        owed(&both).0,
        owed(&both).1,
        owed(&cloud_acked),
        owed(&backup_acked),
    );
    let check = |o: &Outbox, when: &str| {
        let s = o.stats().unwrap();
        let got = (
            s.readings,
            s.bytes,
            (s.uplinks[0].readings, s.uplinks[0].bytes),
            (s.uplinks[1].readings, s.uplinks[1].bytes),
        );
        assert_eq!(got, expect, "{when}");
    };
    check(&run.outbox, "while running");
    assert_eq!(
        run.metrics.acks_total("cloud") + run.metrics.acks_total("backup"),
        (cloud_acked.len() + backup_acked.len()) as u64
    );
    // Only unacknowledged readings are handed out again, in order.
    cloud.rewind();
    let again: Vec<u64> = cloud
        .next(100)
        .await
        .unwrap()
        .iter()
        .map(|d| d.seq)
        .collect();
    let want: Vec<u64> = (0..20)
        .filter(|i| !cloud_acked.contains(i))
        .map(seq)
        .collect();
    assert_eq!(again[..want.len()], want[..]);
    drop((cloud, backup));
    run.stop().await;

    // A clean open reads the counters written at close; an unclean one recounts them.
    let run = Running::start(&c, &ups).unwrap();
    check(&run.outbox, "after a clean stop");
    run.crash().await;
    let run = Running::start(&c, &ups).unwrap();
    check(&run.outbox, "after a crash");
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seqs_never_go_back_after_a_crash_that_emptied_the_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    let ups = names(&["cloud"]);
    let run = Running::start(&c, &ups).unwrap();
    run.bus
        .submit((0..5).map(|_| reading("d", 100)).collect())
        .await
        .unwrap();
    let mut cloud = run.outbox.cursor("cloud").unwrap();
    let handed = cloud.next(5).await.unwrap();
    let high = handed.iter().map(|d| d.seq).max().unwrap();
    cloud.ack(&handed.iter().map(|d| d.seq).collect::<Vec<_>>());
    // Wait for the acks' commit: the table is empty, the newest seq is gone with it.
    for _ in 0..2500 {
        if run.outbox.stats().unwrap().readings == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(run.outbox.stats().unwrap().readings, 0);
    drop(cloud);
    run.crash().await;

    let run = Running::start(&c, &ups).unwrap();
    let fresh = reading("d", 100);
    run.bus.submit(vec![fresh.clone()]).await.unwrap();
    let mut cloud = run.outbox.cursor("cloud").unwrap();
    let got = cloud.next(5).await.unwrap();
    assert_eq!(ids(&got), vec![fresh.id]);
    assert!(got[0].seq > high, "{} must be above {high}", got[0].seq);
    assert_eq!(got[0].attempts, 0, "a new reading is not a replay");
    drop(cloud);
    run.stop().await;
}
