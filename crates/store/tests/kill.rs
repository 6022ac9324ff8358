//! The real crash: a child process appends readings under load and prints the id of each one
//! the outbox acknowledged; the parent SIGKILLs it mid-load, reopens the store, and checks that
//! every acknowledged reading is there.
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

use common::{Running, names, reading};
use wardgate_store::StoreConfig;

const CHILD_ENV: &str = "WARDGATE_STORE_KILL_CHILD_DIR";
const TEST_NAME: &str = "acknowledged_readings_survive_sigkill_of_the_writer_process";
/// The kill lands after this many acknowledgements plus a varying extra, so runs hit
/// different phases of the writer (collecting, writing, fsyncing, resolving).
const KILL_AFTER: usize = 200;

fn store_cfg(dir: &Path) -> StoreConfig {
    StoreConfig {
        path: dir.join("outbox.db"),
        commit_window: Duration::from_millis(1),
        ..StoreConfig::default()
    }
}

/// The child: 16 concurrent submitters, forever; prints `ACK <id>` once a submit resolved Ok.
fn child(dir: &Path) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let run = Running::start(&store_cfg(dir), &names(&["cloud"])).unwrap();
        let mut tasks = Vec::new();
        for t in 0..16 {
            let bus = run.bus.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    let r = reading(&format!("bed-{t}"), 300);
                    let id = r.id;
                    if bus.submit(vec![r]).await.is_ok() {
                        let mut out = std::io::stdout().lock();
                        let _ = writeln!(out, "ACK {id}");
                        let _ = out.flush();
                    }
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
}

#[test]
fn acknowledged_readings_survive_sigkill_of_the_writer_process() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        child(Path::new(&dir));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut proc = Command::new(std::env::current_exe().unwrap())
        .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = proc.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let jitter = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as usize % 400);
    let kill_after = KILL_AFTER + jitter;
    let mut acked = HashSet::new();
    while acked.len() < kill_after {
        let Some(line) = lines.next() else { break };
        if let Some(id) = line.unwrap().strip_prefix("ACK ") {
            acked.insert(id.parse::<ulid::Ulid>().unwrap());
        }
    }
    proc.kill().unwrap(); // SIGKILL
    // Lines printed before the kill landed are acknowledged readings too.
    for line in lines {
        let Ok(line) = line else { break };
        if let Some(id) = line.strip_prefix("ACK ") {
            acked.insert(id.parse::<ulid::Ulid>().unwrap());
        }
    }
    proc.wait().unwrap();
    assert!(
        acked.len() >= KILL_AFTER,
        "the child stopped early: {} acks",
        acked.len()
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let run = Running::start(&store_cfg(dir.path()), &names(&["cloud"])).unwrap();
        let mut cur = run.outbox.cursor("cloud").unwrap();
        let mut stored = HashSet::new();
        loop {
            let got = cur.try_next(1000).await.unwrap();
            if got.is_empty() {
                break;
            }
            stored.extend(got.iter().map(|d| d.id));
        }
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
