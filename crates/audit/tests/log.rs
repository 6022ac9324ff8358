//! The writer: chained, fsynced, rotated, resumed, and honest about what it could not write.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::{closed_log, event, files_starting, json, lines, open, options};
use wardgate_audit::{AuditLog, AuditMetrics, ProblemKind, VerifyOptions, verify, verify_with};
use wardgate_core::audit::{AuditEvent, AuditKind, AuditSink};

fn from_start(paths: &[std::path::PathBuf]) -> wardgate_audit::VerifyReport {
    verify_with(
        paths,
        &VerifyOptions {
            key: None,
            from_start: true,
        },
    )
}

#[test]
fn many_records_round_trip_as_one_gap_free_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = closed_log(dir.path(), 5000, |_| {});
    let l = lines(&path);
    assert_eq!(l.len(), 5002);
    assert_eq!(json(&l[0])["kind"], "audit_started");
    assert_eq!(json(&l[0])["prev"], wardgate_audit::GENESIS_PREV);
    assert_eq!(json(&l[5001])["kind"], "audit_stopped");
    let e = json(&l[2]);
    assert_eq!(e["kind"], "auth_failure");
    assert_eq!(e["actor"], "claimed-psk:bed-1");
    assert_eq!(e["peer"], "192.0.2.7:5684");
    assert_eq!(e["transport"], "dtls");
    assert_eq!(e["reason"], "unknown_identity");
    assert_eq!(e["prev"], json(&l[1])["hash"]);
    let report = from_start(&[path]);
    assert!(report.is_intact(), "{report}");
    assert_eq!(report.records, 5002);
}

#[test]
fn the_record_format_is_fixed_field_order_with_a_millisecond_utc_time() {
    let dir = tempfile::tempdir().unwrap();
    let path = closed_log(dir.path(), 1, |_| {});
    let line = &lines(&path)[1];
    let pieces: Vec<&str> = line.split("\":").collect();
    let keys: Vec<&str> = pieces[..pieces.len() - 1]
        .iter()
        .filter_map(|s| s.rsplit('"').next())
        .collect();
    assert_eq!(
        keys,
        [
            "v",
            "seq",
            "ts",
            "kind",
            "actor",
            "peer",
            "transport",
            "subject",
            "reason",
            "prev",
            "hash"
        ]
    );
    let ts = json(line)["ts"].as_str().unwrap().to_owned();
    assert_eq!(ts.len(), "2026-01-02T03:04:05.678Z".len(), "{ts}");
    assert!(ts.ends_with('Z') && ts.as_bytes()[19] == b'.', "{ts}");
}

#[test]
fn several_threads_recording_at_once_make_one_intact_chain() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(dir.path(), |_| {});
    let log = Arc::new(open(&opts));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for i in 0..500 {
                    log.record(event(t * 1000 + i));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    log.flush().unwrap();
    assert_eq!(log.metrics().dropped(), 0);
    let report = from_start(std::slice::from_ref(&opts.path));
    assert!(report.is_intact(), "{report}");
    assert_eq!(report.records, 4001);
    let actors: std::collections::HashSet<String> = lines(&opts.path)
        .iter()
        .filter_map(|l| json(l)["actor"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(actors.len(), 4000);
}

#[test]
fn flush_returns_once_the_records_are_in_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(dir.path(), |_| {});
    let log = open(&opts);
    log.record(AuditEvent::new(AuditKind::ConfigReload, "sighup").subject("gateway.toml"));
    log.flush().unwrap();
    let l = lines(&opts.path);
    assert_eq!(l.len(), 2);
    assert_eq!(json(&l[1])["kind"], "config_reload");
    assert_eq!(log.metrics().records(), 2);
}

#[test]
fn rotation_keeps_the_chain_across_files() {
    let dir = tempfile::tempdir().unwrap();
    closed_log(dir.path(), 300, |o| o.rotate_bytes = 8192);
    let rotated = files_starting(dir.path(), "audit.log.");
    assert!(rotated.len() >= 5, "{rotated:?}");
    // Named <first>-<last>; the next file starts where the previous ended.
    let mut ranges: Vec<(u64, u64)> = rotated
        .iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            let (a, b) = name
                .trim_start_matches("audit.log.")
                .split_once('-')
                .unwrap();
            (a.parse().unwrap(), b.parse().unwrap())
        })
        .collect();
    ranges.sort();
    assert_eq!(ranges[0].0, 1);
    for w in ranges.windows(2) {
        assert_eq!(w[0].1 + 1, w[1].0, "{ranges:?}");
    }
    for p in &rotated {
        assert!(std::fs::metadata(p).unwrap().len() >= 8192);
    }
    let active = dir.path().join("audit.log");
    let first_active = json(&lines(&active)[0]);
    assert_eq!(first_active["seq"], ranges.last().unwrap().1 + 1);

    // The directory, and the files named in any order, verify as one chain.
    let report = from_start(&[dir.path().to_owned()]);
    assert!(report.is_intact(), "{report}");
    assert_eq!(report.records, 302);
    let mut shuffled = rotated.clone();
    shuffled.reverse();
    shuffled.insert(1, active);
    assert!(from_start(&shuffled).is_intact());
}

#[test]
fn keep_files_deletes_the_oldest_and_verify_says_where_the_rest_starts() {
    let dir = tempfile::tempdir().unwrap();
    closed_log(dir.path(), 300, |o| {
        o.rotate_bytes = 8192;
        o.keep_files = 2;
    });
    assert_eq!(files_starting(dir.path(), "audit.log.").len(), 2);
    let report = verify(&[dir.path().to_owned()], None);
    assert!(report.is_intact(), "{report}");
    let start = report.first_seq.unwrap();
    assert!(start > 1);
    assert!(
        report
            .to_string()
            .contains(&format!("starts at seq {start}")),
        "{report}"
    );
    let strict = from_start(&[dir.path().to_owned()]).problem.unwrap();
    assert_eq!(strict.kind, ProblemKind::StartsLate);
}

#[test]
fn a_restart_continues_the_chain_with_audit_started() {
    let dir = tempfile::tempdir().unwrap();
    let path = closed_log(dir.path(), 3, |_| {});
    let before = lines(&path);
    closed_log(dir.path(), 2, |_| {});
    let l = lines(&path);
    assert_eq!(&l[..before.len()], &before[..]);
    let restarted = json(&l[before.len()]);
    assert_eq!(restarted["kind"], "audit_started");
    assert_eq!(restarted["reason"], "restart");
    assert_eq!(restarted["seq"], before.len() as u64 + 1);
    assert_eq!(restarted["prev"], json(before.last().unwrap())["hash"]);
    assert!(from_start(&[path]).is_intact());
}

#[test]
fn a_restart_with_an_empty_active_file_continues_from_the_newest_rotated_file() {
    let dir = tempfile::tempdir().unwrap();
    closed_log(dir.path(), 100, |o| o.rotate_bytes = 4096);
    // As if the process died right after a rotation, before the new file got a record.
    std::fs::remove_file(dir.path().join("audit.log")).unwrap();
    let newest = files_starting(dir.path(), "audit.log.")
        .into_iter()
        .max_by_key(|p| {
            let name = p.file_name().unwrap().to_str().unwrap().to_owned();
            name.rsplit('-').next().unwrap().parse::<u64>().unwrap()
        })
        .unwrap();
    let tail = json(lines(&newest).last().unwrap());
    closed_log(dir.path(), 1, |o| o.rotate_bytes = 4096);
    let first = json(&lines(&dir.path().join("audit.log"))[0]);
    assert_eq!(first["kind"], "audit_started");
    assert_eq!(first["seq"], tail["seq"].as_u64().unwrap() + 1);
    assert_eq!(first["prev"], tail["hash"]);
    let report = from_start(&[dir.path().to_owned()]);
    assert!(report.is_intact(), "{report}");
}

#[test]
fn a_damaged_tail_is_kept_aside_and_the_new_file_starts_with_chain_broken() {
    let dir = tempfile::tempdir().unwrap();
    let path = closed_log(dir.path(), 10, |_| {});
    let text = std::fs::read(&path).unwrap();
    // A crash in the middle of writing the last record.
    std::fs::write(&path, &text[..text.len() - 30]).unwrap();
    let good_lines = lines(&path).len() - 1;
    let last_good = json(&lines(&path)[good_lines - 1]);

    closed_log(dir.path(), 1, |_| {});
    let damaged = files_starting(dir.path(), "audit.log.damaged-");
    assert_eq!(damaged.len(), 1, "damaged file kept");
    assert_eq!(
        std::fs::read(&damaged[0]).unwrap(),
        &text[..text.len() - 30]
    );

    let l = lines(&path);
    let broken = json(&l[0]);
    assert_eq!(broken["kind"], "chain_broken");
    assert_eq!(broken["last_good_seq"], last_good["seq"]);
    assert_eq!(broken["last_good_hash"], last_good["hash"]);
    assert_eq!(broken["prev"], last_good["hash"]);
    assert_eq!(
        broken["subject"],
        damaged[0].file_name().unwrap().to_str().unwrap()
    );
    assert_eq!(json(&l[1])["kind"], "audit_started");

    // The new file alone verifies (it starts after the damage) ...
    let alone = verify(std::slice::from_ref(&path), None);
    assert!(alone.is_intact(), "{alone}");
    assert_eq!(alone.chain_broken, 1);
    // ... and with the damaged one, verify points at the damage.
    let p = verify(&[dir.path().to_owned()], None).problem.unwrap();
    assert_eq!(p.kind, ProblemKind::Truncated);
    assert_eq!(p.file, damaged[0]);
    assert_eq!(p.line, good_lines as u64 + 1);
}

#[test]
fn an_edited_last_record_is_not_continued_either() {
    let dir = tempfile::tempdir().unwrap();
    let path = closed_log(dir.path(), 3, |_| {});
    let mut l = lines(&path);
    let last = l.len() - 1;
    l[last] = l[last].replace("\"closed\"", "\"kaput\"");
    common::write_lines(&path, &l);
    closed_log(dir.path(), 1, |_| {});
    assert_eq!(files_starting(dir.path(), "audit.log.damaged-").len(), 1);
    let first = json(&lines(&path)[0]);
    assert_eq!(first["kind"], "chain_broken");
    assert_eq!(first["last_good_seq"], last as u64);
}

#[test]
fn a_full_queue_counts_drops_and_the_next_record_says_how_many() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(dir.path(), |o| o.queue_capacity = 4);
    let log = open(&opts);
    let held = log.hold_writer().unwrap();
    for i in 0..10 {
        log.record(event(i)); // never blocks: 4 queued, 6 dropped
    }
    assert_eq!(log.metrics().dropped(), 6);
    drop(held);
    log.flush().unwrap();
    log.record(event(10));
    log.flush().unwrap();
    let l = lines(&opts.path);
    let next = json(l.last().unwrap());
    assert_eq!(next["actor"], "claimed-psk:bed-10");
    assert_eq!(next["dropped_before"], 6);
    assert!(
        l[..l.len() - 1]
            .iter()
            .all(|x| !x.contains("dropped_before"))
    );
    let report = verify(std::slice::from_ref(&opts.path), None);
    assert!(report.is_intact(), "{report}");
    assert_eq!(report.dropped_events, 6);
    assert_eq!(log.metrics().records(), 6);
}

#[test]
fn events_after_close_are_counted_and_marked_in_audit_stopped_never_silent() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(dir.path(), |o| o.queue_capacity = 2);
    let log = open(&opts);
    let held = log.hold_writer().unwrap();
    for i in 0..5 {
        log.record(event(i));
    }
    drop(held);
    log.close().unwrap();
    log.record(event(99));
    assert_eq!(log.metrics().dropped(), 4);
    let l = lines(&opts.path);
    let stopped = json(l.last().unwrap());
    assert_eq!(stopped["kind"], "audit_stopped");
    assert_eq!(stopped["dropped_before"], 3);
}

#[test]
fn a_hostile_actor_is_capped_so_the_line_stays_verifiable() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(dir.path(), |_| {});
    let log = open(&opts);
    log.record(
        AuditEvent::new(AuditKind::AuthFailure, "unknown_identity").actor("\u{1}".repeat(70_000)),
    );
    log.close().unwrap();
    let report = verify(std::slice::from_ref(&opts.path), None);
    assert!(report.is_intact(), "{report}");
    assert!(std::fs::metadata(&opts.path).unwrap().len() < 8 * 1024);
}

#[test]
fn a_signed_log_restarts_under_the_same_key_and_verifies_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    std::fs::write(&key, "ab".repeat(32)).unwrap();
    let path = closed_log(dir.path(), 3, |o| o.hmac_key_file = Some(key.clone()));
    closed_log(dir.path(), 3, |o| o.hmac_key_file = Some(key.clone()));
    let report = verify(&[path], Some(&[0xab; 32]));
    assert!(report.is_intact() && report.macs_checked, "{report}");
    assert_eq!(report.records, 10);
}

#[test]
fn a_short_key_is_refused_and_the_error_shows_no_key_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    std::fs::write(&key, "sixteen-byte-key").unwrap();
    let opts = options(dir.path(), |o| o.hmac_key_file = Some(key));
    let err = AuditLog::open(&opts, AuditMetrics::unregistered()).unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(shown.contains("shorter than 32 bytes"), "{shown}");
    assert!(!shown.contains("sixteen-byte-key"), "{shown}");
}
