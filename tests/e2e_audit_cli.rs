//! `wardgate audit verify` as an operator meets it: a one-line summary and exit 0 for an intact
//! trail, the damaged line and exit 1 for an edited one, exit 64 for unusable arguments.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use wardgate_audit::{AuditLog, AuditMetrics, AuditOptions};
use wardgate_core::audit::{AuditEvent, AuditKind, AuditSink};

const WARDGATE: &str = env!("CARGO_BIN_EXE_wardgate");

/// A closed audit log of `n` events (seq 1 `audit_started`, event i at seq i + 2).
fn audit_log(dir: &Path, n: usize, key: Option<PathBuf>) -> PathBuf {
    let mut opts = AuditOptions::new(dir.join("audit.log"));
    opts.hmac_key_file = key;
    let log = AuditLog::open(&opts, AuditMetrics::unregistered()).unwrap();
    for i in 0..n {
        log.record(
            AuditEvent::new(AuditKind::AclDenied, "forbidden_class").actor(format!("psk:bed-{i}")),
        );
    }
    log.close().unwrap();
    opts.path
}

fn verify(args: &[&Path]) -> Output {
    Command::new(WARDGATE)
        .args(["audit", "verify"])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn an_intact_trail_verifies_with_exit_0_and_a_one_line_summary() {
    let dir = tempfile::tempdir().unwrap();
    let path = audit_log(dir.path(), 10, None);
    let out = verify(&[Path::new("--from-start"), &path]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(
        stdout.starts_with("intact: 12 record(s) in 1 file(s), seq 1..12"),
        "{stdout}"
    );
}

#[test]
fn an_edited_trail_fails_with_exit_1_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = audit_log(dir.path(), 10, None);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("psk:bed-4\"", "psk:bed-0\"")).unwrap();
    let out = verify(&[&path]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("line 6 (seq 6): hash mismatch — record was edited"),
        "{stderr}"
    );
}

#[test]
fn the_key_is_checked_when_given() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("audit.key");
    std::fs::write(&key, "42".repeat(32)).unwrap();
    let other = dir.path().join("other.key");
    std::fs::write(&other, "43".repeat(32)).unwrap();
    let path = audit_log(dir.path(), 3, Some(key.clone()));
    let ok = verify(&[Path::new("--key"), &key, &path]);
    assert_eq!(ok.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("MACs verified"));
    let bad = verify(&[Path::new("--key"), &other, &path]);
    assert_eq!(bad.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("line 1 (seq 1): MAC mismatch"), "{stderr}");
    assert!(!stderr.contains(&"43".repeat(32)), "{stderr}");
}

#[test]
fn unusable_arguments_exit_64() {
    let dir = tempfile::tempdir().unwrap();
    let path = audit_log(dir.path(), 1, None);
    let no_files = Command::new(WARDGATE)
        .args(["audit", "verify"])
        .output()
        .unwrap();
    assert_eq!(no_files.status.code(), Some(64));
    let missing = verify(&[&dir.path().join("nope.log")]);
    assert_eq!(missing.status.code(), Some(64));
    let short_key = dir.path().join("short.key");
    std::fs::write(&short_key, "tiny").unwrap();
    let bad_key = verify(&[Path::new("--key"), &short_key, &path]);
    assert_eq!(bad_key.status.code(), Some(64));
    assert!(!String::from_utf8_lossy(&bad_key.stderr).contains("tiny"));
}
