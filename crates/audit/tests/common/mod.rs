//! Shared helpers of the audit tests: events, logs in temporary directories, line editing.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use wardgate_audit::{AuditLog, AuditMetrics, AuditOptions};
use wardgate_core::audit::{AuditEvent, AuditKind};
use wardgate_core::peer::TransportKind;

/// A typical event, numbered through its actor (`claimed-psk:bed-<i>`).
pub fn event(i: usize) -> AuditEvent {
    AuditEvent::new(AuditKind::AuthFailure, "unknown_identity")
        .actor(format!("claimed-psk:bed-{i}"))
        .peer("192.0.2.7:5684".parse().unwrap(), TransportKind::Dtls)
        .subject("readings")
}

/// Options for `dir/audit.log`, adjusted by `f`.
pub fn options(dir: &Path, f: impl FnOnce(&mut AuditOptions)) -> AuditOptions {
    let mut o = AuditOptions::new(dir.join("audit.log"));
    f(&mut o);
    o
}

pub fn open(opts: &AuditOptions) -> AuditLog {
    AuditLog::open(opts, AuditMetrics::unregistered()).unwrap()
}

/// A closed log of `n` events: seq 1 `audit_started`, seq 2..=n+1 the events, seq n+2
/// `audit_stopped` (so event `i` is on line `i + 2`).
pub fn closed_log(dir: &Path, n: usize, f: impl FnOnce(&mut AuditOptions)) -> PathBuf {
    let opts = options(dir, f);
    let log = open(&opts);
    for i in 0..n {
        wardgate_core::audit::AuditSink::record(&log, event(i));
    }
    log.close().unwrap();
    opts.path
}

pub fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

pub fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).unwrap();
}

pub fn json(line: &str) -> serde_json::Value {
    serde_json::from_str(line).unwrap()
}

/// Every file in `dir` whose name starts with `prefix`, sorted by name.
pub fn files_starting(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .collect();
    v.sort();
    v
}
