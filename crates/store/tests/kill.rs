//! The real crash: a child process appends readings under load and prints the id of each one
//! the outbox acknowledged; the parent SIGKILLs it mid-load, reopens the store, and checks that
//! every acknowledged reading is there.
//!
//! A second child also delivers on two routed uplinks while it appends, acknowledging most
//! deliveries and releasing the rest to the other uplink, so the kill lands among releases too:
//! afterwards no acknowledged reading may be lost (each is still owed somewhere or was
//! delivered) and no reading may be owed to no uplink.
//!
//! The child is this same test binary, re-run with an environment variable naming the store
//! directory, so no extra binary has to be built.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{PrefixRouter, Running, block_on, names, owed_to_nobody, reading};
use ulid::Ulid;
use wardgate_core::OutboxCursor;
use wardgate_store::{Cursor, StoreConfig};

const CHILD_ENV: &str = "WARDGATE_STORE_KILL_CHILD_DIR";
const TEST_NAME: &str = "acknowledged_readings_survive_sigkill_of_the_writer_process";
const RELEASE_CHILD_ENV: &str = "WARDGATE_STORE_KILL_RELEASE_CHILD_DIR";
const RELEASE_TEST_NAME: &str =
    "releases_under_sigkill_lose_no_acknowledged_reading_and_leave_none_owed_to_nobody";
/// The kill lands after this many acknowledgements plus a varying extra, so runs hit
/// different phases of the writer (collecting, writing, fsyncing, resolving).
const KILL_AFTER: usize = 200;
/// The release test kills only after at least this many releases.
const RELEASES_BEFORE_KILL: usize = 50;
const ROUTED: [&str; 2] = ["cloud", "backup"];

fn store_cfg(dir: &Path) -> StoreConfig {
    StoreConfig {
        path: dir.join("outbox.db"),
        commit_window: Duration::from_millis(1),
        ..StoreConfig::default()
    }
}

fn say(line: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_fmt(line);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

/// 16 concurrent submitters, forever; each prints `ACK <id> <device>` once its submit resolved
/// Ok.
/// Submitter `t` sends as device `device(t)`.
async fn submit_forever(run: &Running, device: fn(usize) -> String) {
    let mut tasks = Vec::new();
    for t in 0..16 {
        let bus = run.bus.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let r = reading(&device(t), 300);
                let id = r.id;
                let dev = r.device.clone();
                if bus.submit(vec![r]).await.is_ok() {
                    say(format_args!("ACK {id} {dev}"));
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// The first child: appends only.
fn child(dir: &Path) {
    block_on(async {
        let run = Running::start(&store_cfg(dir), &names(&["cloud"])).unwrap();
        submit_forever(&run, |t| format!("bed-{t}")).await;
    });
}

/// The second child: appends readings routed to cloud, to backup (each failing over to the
/// other) or to both, while each uplink acknowledges two deliveries in three (printing
/// `DLV <id> <uplink> <seq>` first) and releases the third (printing `REL ...` likewise).
fn release_child(dir: &Path) {
    block_on(async {
        let run =
            Running::start_opts(&store_cfg(dir), &names(&ROUTED), PrefixRouter::options()).unwrap();
        for up in ROUTED {
            let mut cur = run.outbox.cursor(up).unwrap();
            tokio::spawn(async move {
                let mut n = 0u64;
                while let Ok(got) = cur.next(16).await {
                    for d in got {
                        n += 1;
                        if n % 3 == 0 {
                            cur.release(&[d.seq]);
                            say(format_args!("REL {} {up} {}", d.id, d.seq));
                        } else {
                            say(format_args!("DLV {} {up} {}", d.id, d.seq));
                            cur.ack(&[d.seq]);
                        }
                    }
                }
            });
        }
        submit_forever(&run, |t| {
            let route = ["0", "1", "01"][t % 3];
            format!("{route}/bed-{t}")
        })
        .await;
    });
}

/// What a child printed before it was killed.
#[derive(Debug, Default)]
struct Printed {
    acked: HashSet<Ulid>,
    delivered: HashSet<Ulid>,
    /// Release lines (a reading can be released more than once, by either uplink).
    released: Vec<Ulid>,
}

impl Printed {
    fn take(&mut self, line: &str) {
        // libtest prints the child's first line after its own "test ... " prefix.
        let Some(at) = ["ACK ", "DLV ", "REL "]
            .iter()
            .filter_map(|t| line.find(t))
            .min()
        else {
            return;
        };
        let mut parts = line[at..].split(' ');
        let (Some(tag), Some(id)) = (parts.next(), parts.next()) else {
            return;
        };
        let Ok(id) = id.parse::<Ulid>() else { return };
        match tag {
            "ACK" => {
                self.acked.insert(id);
            }
            "DLV" => {
                self.delivered.insert(id);
            }
            "REL" => self.released.push(id),
            _ => {}
        }
    }
}

/// Runs this test binary's `test` as a child with `env` naming a fresh store directory,
/// SIGKILLs it once `enough` holds for what it printed, and returns the directory and
/// everything it printed (lines written before the kill landed included).
fn run_child_until_killed(
    test: &str,
    env: &str,
    enough: impl Fn(&Printed, usize) -> bool,
) -> (tempfile::TempDir, Printed) {
    let dir = tempfile::tempdir().unwrap();
    let mut proc = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(env, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = proc.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let jitter = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as usize % 400);
    let mut printed = Printed::default();
    while !enough(&printed, KILL_AFTER + jitter) {
        let Some(line) = lines.next() else { break };
        printed.take(&line.unwrap());
    }
    proc.kill().unwrap(); // SIGKILL
    for line in lines {
        let Ok(line) = line else { break };
        printed.take(&line);
    }
    proc.wait().unwrap();
    assert!(
        printed.acked.len() >= KILL_AFTER,
        "the child stopped early: {} acks",
        printed.acked.len()
    );
    (dir, printed)
}

/// Every reading the cursor hands out now.
async fn drain(cur: &mut Cursor, into: &mut HashSet<Ulid>) {
    loop {
        let got = cur.try_next(1000).await.unwrap();
        if got.is_empty() {
            return;
        }
        into.extend(got.iter().map(|d| d.id));
    }
}

#[test]
fn acknowledged_readings_survive_sigkill_of_the_writer_process() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        child(Path::new(&dir));
        return;
    }
    let (dir, printed) = run_child_until_killed(TEST_NAME, CHILD_ENV, |p, n| p.acked.len() >= n);
    let acked = printed.acked;

    block_on(async {
        let run = Running::start(&store_cfg(dir.path()), &names(&["cloud"])).unwrap();
        let mut cur = run.outbox.cursor("cloud").unwrap();
        let mut stored = HashSet::new();
        drain(&mut cur, &mut stored).await;
        eprintln!(
            "kill test: {} readings acknowledged before SIGKILL, {} found after reopening",
            acked.len(),
            stored.len()
        );
        let lost: Vec<_> = acked.difference(&stored).collect();
        assert!(
            lost.is_empty(),
            "{} acknowledged readings lost: {lost:?}",
            lost.len()
        );
        drop(cur);
        run.stop().await;
    });
}

#[test]
fn releases_under_sigkill_lose_no_acknowledged_reading_and_leave_none_owed_to_nobody() {
    if let Some(dir) = std::env::var_os(RELEASE_CHILD_ENV) {
        release_child(Path::new(&dir));
        return;
    }
    let (dir, printed) = run_child_until_killed(RELEASE_TEST_NAME, RELEASE_CHILD_ENV, |p, n| {
        p.acked.len() >= n && p.released.len() >= RELEASES_BEFORE_KILL
    });
    assert!(
        printed.released.len() >= RELEASES_BEFORE_KILL,
        "the child released only {} deliveries",
        printed.released.len()
    );
    let cfg = store_cfg(dir.path());
    // The file as the crash left it, before the outbox's open touches it.
    assert_eq!(owed_to_nobody(&cfg.path), 0, "readings owed to no uplink");

    block_on(async {
        let run = Running::start_opts(&cfg, &names(&ROUTED), PrefixRouter::options()).unwrap();
        let mut stored = HashSet::new();
        for up in ROUTED {
            let mut cur = run.outbox.cursor(up).unwrap();
            drain(&mut cur, &mut stored).await;
        }
        eprintln!(
            "kill test with releases: {} readings acknowledged, {} delivered upstream, {} releases \
             before SIGKILL; {} still owed after reopening",
            printed.acked.len(),
            printed.delivered.len(),
            printed.released.len(),
            stored.len()
        );
        // Delivered upstream (an uplink acknowledged it) or still owed: at least once.
        let lost: Vec<_> = printed
            .acked
            .iter()
            .filter(|id| !stored.contains(id) && !printed.delivered.contains(id))
            .collect();
        // For the failure message: what the file holds for each lost reading.
        let c = rusqlite::Connection::open(&cfg.path).unwrap();
        let detail: Vec<_> = lost
            .iter()
            .map(|id| {
                let rel = printed.released.iter().filter(|r| r == id).count();
                let row: Option<(i64, i64, String)> = c
                    .query_row(
                        "SELECT seq, pending, device FROM readings WHERE id = ?1",
                        [&id.to_bytes()[..]],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                    )
                    .ok();
                format!("{id} (released {rel} times, row (seq, pending, device) {row:?})")
            })
            .collect();
        assert!(
            lost.is_empty(),
            "{} acknowledged readings lost: {detail:?}",
            lost.len()
        );
        run.stop().await;
    });
}
