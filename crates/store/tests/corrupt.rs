//! Damaged files: detection at open (with the recovery command in the message) and salvage.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use common::{Running, cfg, names, reading};
use wardgate_core::OutboxCursor;
use wardgate_store::{Outbox, RECOVER_COMMAND, StoreConfig, StoreError, StoreMetrics, recover};

/// Writes `n` readings through a real outbox and closes it cleanly; returns their ids.
async fn fill(c: &StoreConfig, n: usize, len: usize) -> Vec<ulid::Ulid> {
    let run = Running::start(c, &names(&["cloud"])).unwrap();
    let mut ids = Vec::new();
    for chunk in 0..n.div_ceil(100) {
        let batch: Vec<_> = (0..100.min(n - chunk * 100))
            .map(|i| reading(&format!("bed-{i}"), len))
            .collect();
        ids.extend(batch.iter().map(|r| r.id));
        run.bus.submit(batch).await.unwrap();
    }
    run.stop().await;
    ids
}

fn open(c: &StoreConfig) -> Result<Outbox, StoreError> {
    Outbox::open(c, &names(&["cloud"]), StoreMetrics::unregistered())
}

fn assert_corrupt(r: Result<Outbox, StoreError>) -> String {
    match r {
        Err(e @ StoreError::Corrupt { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains(RECOVER_COMMAND),
                "message lacks the recovery command: {msg}"
            );
            msg
        }
        Err(e) => panic!("expected Corrupt, got {e:?}"),
        Ok(_) => panic!("expected Corrupt, the store opened"),
    }
}

async fn drain_ids(c: &StoreConfig) -> Vec<ulid::Ulid> {
    let run = Running::start(c, &names(&["cloud"])).unwrap();
    let mut cur = run.outbox.cursor("cloud").unwrap();
    let mut out = Vec::new();
    loop {
        let got = cur.try_next(1000).await.unwrap();
        if got.is_empty() {
            break;
        }
        out.extend(got.iter().map(|d| d.id));
    }
    drop(cur);
    run.stop().await;
    out
}

fn overwrite(path: &Path, at: u64, bytes: &[u8]) {
    let mut f = fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(bytes).unwrap();
    f.sync_all().unwrap();
}

#[test]
fn a_file_of_garbage_is_reported_corrupt_with_the_recovery_command() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    fs::create_dir_all(c.path.parent().unwrap()).unwrap();
    fs::write(&c.path, vec![0x5a; 64 * 1024]).unwrap();
    let msg = assert_corrupt(open(&c));
    assert!(msg.contains(&c.path.display().to_string()), "{msg}");
    assert_eq!(
        fs::read(&c.path).unwrap(),
        vec![0x5a; 64 * 1024],
        "open must not touch a damaged file"
    );

    let report = recover(&c.path).unwrap();
    assert!(!report.readable);
    assert_eq!(report.salvaged, 0);
    assert_eq!(
        fs::read(&report.moved_to).unwrap().len(),
        64 * 1024,
        "the damaged file is kept"
    );
    assert!(open(&c).is_ok(), "after recover the store opens (empty)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destroyed_header_is_rebuilt_and_every_reading_salvaged() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    let ids = fill(&c, 300, 200).await;
    overwrite(&c.path, 0, &[0xff; 100]);
    assert_corrupt(open(&c));

    let report = recover(&c.path).unwrap();
    assert!(report.header_rebuilt, "{report}");
    assert_eq!(report.salvaged, 300, "{report}");
    assert!(report.uplinks_recovered);
    assert_eq!(
        drain_ids(&c).await,
        ids,
        "salvaged readings come back in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_file_is_corrupt_and_recover_salvages_the_readable_part() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    let ids = fill(&c, 2000, 400).await;
    // Cut a slice out of the middle, as a bad copy or a failing disk would.
    let data = fs::read(&c.path).unwrap();
    let (a, b) = (data.len() * 2 / 5, data.len() * 3 / 5);
    let mut cut = data[..a].to_vec();
    cut.extend_from_slice(&data[b..]);
    fs::write(&c.path, &cut).unwrap();
    let msg = assert_corrupt(open(&c));
    assert!(msg.contains("truncated"), "{msg}");

    let report = recover(&c.path).unwrap();
    assert_eq!(
        fs::read(&report.moved_to).unwrap(),
        cut,
        "the damaged file is kept as it was"
    );
    assert!(report.readable, "{report}");
    assert!(report.salvaged > 0 && report.salvaged < 2000, "{report}");
    assert!(!report.unreadable.is_empty(), "{report}");
    assert!(report.moved_to.exists());
    let back = drain_ids(&c).await;
    assert_eq!(back.len() as u64, report.salvaged);
    // Whatever came back is genuine and in the original order.
    let pos: Vec<usize> = back
        .iter()
        .map(|id| {
            ids.iter()
                .position(|x| x == id)
                .expect("a salvaged reading was never written")
        })
        .collect();
    assert!(
        pos.windows(2).all(|w| w[0] < w[1]),
        "salvaged readings out of order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_pages_after_an_unclean_stop_fail_quick_check() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    fill(&c, 2000, 400).await;
    // Mark the file as not cleanly closed, as a crash leaves it.
    {
        let conn = rusqlite::Connection::open(&c.path).unwrap();
        conn.execute("UPDATE meta SET value = 0 WHERE key = 'clean'", [])
            .unwrap();
    }
    let len = fs::metadata(&c.path).unwrap().len();
    let page = 4096;
    let at = (len / 2) / page * page;
    overwrite(&c.path, at, &vec![0xa5; 3 * page as usize]);
    let msg = assert_corrupt(open(&c));
    assert!(msg.contains("quick_check"), "{msg}");

    let report = recover(&c.path).unwrap();
    assert!(report.salvaged > 1000 && report.salvaged < 2000, "{report}");
    assert_eq!(drain_ids(&c).await.len() as u64, report.salvaged);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_uplink_table_hands_salvaged_readings_to_every_configured_uplink() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    let ids = fill(&c, 50, 100).await;
    {
        let conn = rusqlite::Connection::open(&c.path).unwrap();
        conn.execute("DROP TABLE uplinks", []).unwrap();
    }
    let report = recover(&c.path).unwrap();
    assert!(!report.uplinks_recovered);
    assert_eq!(report.salvaged, 50);
    let run = Running::start(&c, &names(&["cloud", "backup"])).unwrap();
    for u in ["cloud", "backup"] {
        let mut cur = run.outbox.cursor(u).unwrap();
        let got = cur.next(100).await.unwrap();
        assert_eq!(got.iter().map(|d| d.id).collect::<Vec<_>>(), ids, "{u}");
    }
    run.stop().await;
}

#[test]
fn recover_of_a_missing_store_says_so() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        recover(&dir.path().join("nope.db")),
        Err(StoreError::NotFound(_))
    ));
}

#[test]
fn a_database_from_a_newer_wardgate_is_refused_not_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    drop(open(&c).unwrap());
    {
        let conn = rusqlite::Connection::open(&c.path).unwrap();
        conn.execute(
            "UPDATE meta SET value = 99 WHERE key = 'schema_version'",
            [],
        )
        .unwrap();
    }
    assert!(matches!(
        open(&c),
        Err(StoreError::UnsupportedSchema { found: 99, .. })
    ));
}
