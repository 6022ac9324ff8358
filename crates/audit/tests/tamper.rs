//! `verify` finds every kind of tampering and says where: edited, removed, reordered and
//! truncated records, a missing rotated file, a forged chain without the key.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;

use common::{closed_log, json, lines, write_lines};
use sha2::{Digest, Sha256};
use wardgate_audit::{ProblemKind, VerifyOptions, verify, verify_with};

fn problem_of(paths: &[PathBuf]) -> wardgate_audit::VerifyProblem {
    let report = verify(paths, None);
    let shown = report.to_string();
    report
        .problem
        .unwrap_or_else(|| panic!("tampering not found: {shown}"))
}

#[test]
fn an_untouched_log_verifies_from_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = closed_log(dir.path(), 20, |_| {});
    let report = verify_with(
        &[path],
        &VerifyOptions {
            key: None,
            from_start: true,
        },
    );
    assert!(report.is_intact(), "{report}");
    assert_eq!(report.records, 22);
    assert_eq!((report.first_seq, report.last_seq), (Some(1), Some(22)));
    assert!(
        report
            .to_string()
            .starts_with("intact: 22 record(s) in 1 file(s), seq 1..22")
    );
}

#[test]
fn an_edited_line_is_a_hash_mismatch_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = closed_log(dir.path(), 20, |_| {});
    let mut l = lines(&path);
    assert!(l[8].contains("bed-7\""));
    l[8] = l[8].replace("bed-7\"", "bed-9\"");
    write_lines(&path, &l);
    let p = problem_of(&[path]);
    assert_eq!(
        (p.kind, p.line, p.seq),
        (ProblemKind::HashMismatch, 9, Some(9))
    );
    assert!(
        p.to_string()
            .contains("line 9 (seq 9): hash mismatch — record was edited"),
        "{p}"
    );
}

#[test]
fn a_deleted_line_is_a_seq_gap_named_at_the_next_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = closed_log(dir.path(), 20, |_| {});
    let mut l = lines(&path);
    l.remove(9);
    write_lines(&path, &l);
    let p = problem_of(&[path]);
    assert_eq!(
        (p.kind, p.line, p.seq),
        (ProblemKind::Removed, 10, Some(11))
    );
    assert!(p.message.contains("seq jumps 9 → 11"), "{p}");
    assert!(p.message.contains("1 record(s) removed"), "{p}");
}

#[test]
fn two_swapped_lines_are_reported_as_reordered() {
    let dir = tempfile::tempdir().unwrap();
    let path = closed_log(dir.path(), 20, |_| {});
    let mut l = lines(&path);
    l.swap(9, 10);
    write_lines(&path, &l);
    let p = problem_of(&[path]);
    assert_eq!(
        (p.kind, p.line, p.seq),
        (ProblemKind::Reordered, 11, Some(10))
    );
    assert!(p.message.contains("reordered: seq 10 after seq 11"), "{p}");
}

#[test]
fn a_line_moved_far_back_is_reordered_too() {
    let dir = tempfile::tempdir().unwrap();
    let path = closed_log(dir.path(), 20, |_| {});
    let mut l = lines(&path);
    let moved = l.remove(3);
    l.push(moved);
    write_lines(&path, &l);
    assert_eq!(problem_of(&[path]).kind, ProblemKind::Reordered);
}

#[test]
fn a_truncated_last_line_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = closed_log(dir.path(), 20, |_| {});
    let text = std::fs::read(&path).unwrap();
    std::fs::write(&path, &text[..text.len() - 40]).unwrap();
    let p = problem_of(std::slice::from_ref(&path));
    assert_eq!((p.kind, p.line), (ProblemKind::Truncated, 22));
    assert!(p.message.contains("last line truncated"), "{p}");

    // Cut, then "repaired" with a newline: still not a record.
    let mut cut = text[..text.len() - 40].to_vec();
    cut.push(b'\n');
    std::fs::write(&path, &cut).unwrap();
    let p = problem_of(&[path]);
    assert_eq!((p.kind, p.line), (ProblemKind::Truncated, 22));
}

#[test]
fn a_replaced_record_with_a_recomputed_hash_breaks_the_next_prev() {
    let dir = tempfile::tempdir().unwrap();
    let path = closed_log(dir.path(), 20, |_| {});
    let mut l = lines(&path);
    l[8] = rehash(&l[8].replace("bed-7\"", "bed-9\""), None);
    write_lines(&path, &l);
    let p = problem_of(&[path]);
    assert_eq!(
        (p.kind, p.line, p.seq),
        (ProblemKind::PrevMismatch, 10, Some(10))
    );
    assert!(
        p.message
            .contains("prev of seq 10 does not match hash of seq 9"),
        "{p}"
    );
}

#[test]
fn a_rotated_file_removed_from_the_middle_is_a_gap_at_the_next_file() {
    let dir = tempfile::tempdir().unwrap();
    closed_log(dir.path(), 200, |o| o.rotate_bytes = 4096);
    let rotated = common::files_starting(dir.path(), "audit.log.");
    assert!(rotated.len() >= 4, "{rotated:?}");
    assert!(verify(&[dir.path().to_owned()], None).is_intact());
    let middle = &rotated[1];
    std::fs::remove_file(middle).unwrap();
    let p = problem_of(&[dir.path().to_owned()]);
    assert_eq!((p.kind, p.line), (ProblemKind::Removed, 1));
    assert!(p.message.contains("a whole file missing"), "{p}");
}

#[test]
fn with_the_key_a_rewritten_chain_is_caught_which_the_hash_alone_cannot_catch() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("audit.key");
    std::fs::write(&key, [0x5au8; 32]).unwrap();
    let path = closed_log(dir.path(), 20, |o| o.hmac_key_file = Some(key));
    let good = verify(std::slice::from_ref(&path), Some(&[0x5a; 32]));
    assert!(good.is_intact() && good.macs_checked, "{good}");

    // Someone who can write the file edits line 9 and re-chains everything after it, keeping
    // the old MACs (they cannot compute new ones).
    let mut l = lines(&path);
    l[8] = l[8].replace("bed-7\"", "bed-9\"");
    let mut prev = json(&l[7])["hash"].as_str().unwrap().to_owned();
    for line in &mut l[8..] {
        *line = rehash(&set_prev(line, &prev), json(line)["mac"].as_str());
        prev = json(line)["hash"].as_str().unwrap().to_owned();
    }
    write_lines(&path, &l);
    assert!(verify(std::slice::from_ref(&path), None).is_intact());
    let with_key = verify(std::slice::from_ref(&path), Some(&[0x5a; 32]));
    let p = with_key.problem.expect("forgery found with the key");
    assert_eq!((p.kind, p.line), (ProblemKind::MacMismatch, 9));

    // And a wrong key fails on the first record.
    let wrong = verify(&[path], Some(&[0x5b; 32])).problem.unwrap();
    assert_eq!((wrong.kind, wrong.line), (ProblemKind::MacMismatch, 1));
}

#[test]
fn a_key_demands_a_mac_on_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = closed_log(dir.path(), 3, |_| {});
    let p = verify(&[path], Some(&[1; 32])).problem.unwrap();
    assert_eq!((p.kind, p.line), (ProblemKind::MacMissing, 1));
}

#[test]
fn a_line_longer_than_64_kib_is_refused_without_reading_it_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = closed_log(dir.path(), 3, |_| {});
    let mut l = lines(&path);
    l.insert(2, "x".repeat(1 << 20));
    write_lines(&path, &l);
    let p = problem_of(&[path]);
    assert_eq!((p.kind, p.line), (ProblemKind::LineTooLong, 3));
}

/// Replaces `prev` in a record line.
fn set_prev(line: &str, prev: &str) -> String {
    let at = line.find(",\"prev\":\"").unwrap() + 9;
    format!("{}{prev}{}", &line[..at], &line[at + 64..])
}

/// Recomputes a line's hash as the format defines it (what anyone without the key can do),
/// keeping `mac` if given.
fn rehash(line: &str, mac: Option<&str>) -> String {
    let body = &line[..line.find(",\"hash\":").unwrap()];
    let hash: [u8; 32] = Sha256::digest(format!("{body}}}").as_bytes()).into();
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    match mac {
        Some(m) => format!("{body},\"hash\":\"{hex}\",\"mac\":\"{m}\"}}"),
        None => format!("{body},\"hash\":\"{hex}\"}}"),
    }
}
