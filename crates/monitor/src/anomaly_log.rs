//! Interface mode's anomaly events (`wardgate monitor` with `[monitor.anomalies]`): the monitor
//! apart from the gateway has no outbox to turn an event into a reading, so each event becomes
//! a JSON line in `anomalies.jsonl` beside the flow records, a WARN log line, and the same
//! `wardgate_monitor_anomalies_total{kind}` count. An IDS or a log shipper tails the file.
//!
//! The sink runs on the analysis thread, which already writes the flow records: one short
//! append per event, and events are few (`max_events_per_minute`, `cooldown`). When the file
//! passes `max_file_bytes` it is renamed to `anomalies.jsonl.1` (the one before is replaced)
//! and a new one is started, so the pair stays bounded. A write that fails is logged and the
//! event counted in `wardgate_monitor_anomalies_dropped_total`; it never stops the thread.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde_json::{Value, json};

use crate::anomaly::Anomaly;
use crate::metrics::AnomalyMetrics;

/// The events file's name in the flows directory.
pub const FILE_NAME: &str = "anomalies.jsonl";

/// The open events file.
#[derive(Debug)]
pub struct AnomalyLog {
    path: PathBuf,
    file: Option<File>,
    bytes: u64,
    max_bytes: u64,
    metrics: AnomalyMetrics,
}

impl AnomalyLog {
    /// Events for `dir/anomalies.jsonl`, appended to. The file is opened at the first event
    /// (the flow writer makes `dir` when it starts).
    pub fn new(dir: &Path, max_bytes: u64, metrics: AnomalyMetrics) -> Self {
        AnomalyLog {
            path: dir.join(FILE_NAME),
            file: None,
            bytes: 0,
            max_bytes,
            metrics,
        }
    }

    /// The sink for [`crate::Anomalies`]: writes every event it is given.
    pub fn into_sink(mut self) -> Box<dyn FnMut(Anomaly) + Send> {
        Box::new(move |a| self.write(&a))
    }

    /// Logs `a` and appends it as one JSON line.
    pub fn write(&mut self, a: &Anomaly) {
        a.log();
        let mut line = line(a).to_string();
        line.push('\n');
        if self.file.is_some() && self.bytes + line.len() as u64 > self.max_bytes {
            self.rotate();
        }
        let file = match self.file.as_mut() {
            Some(f) => f,
            None => match open(&self.path) {
                Ok(f) => {
                    self.bytes = f.metadata().map(|m| m.len()).unwrap_or(0);
                    self.file.insert(f)
                }
                Err(e) => {
                    tracing::error!(path = %self.path.display(), error = %e, "cannot open the anomaly events file");
                    self.metrics.dropped();
                    return;
                }
            },
        };
        let written = file.write_all(line.as_bytes());
        match written {
            Ok(()) => self.bytes += line.len() as u64,
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "cannot write an anomaly event");
                self.file = None;
                self.metrics.dropped();
            }
        }
    }

    fn rotate(&mut self) {
        self.file = None;
        let mut old = self.path.clone().into_os_string();
        old.push(".1");
        if let Err(e) = std::fs::rename(&self.path, &old) {
            tracing::error!(path = %self.path.display(), error = %e, "cannot rotate the anomaly events file");
        }
        self.bytes = 0;
    }
}

fn open(path: &Path) -> std::io::Result<File> {
    let mut o = OpenOptions::new();
    o.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o.open(path)
}

/// One event as a JSON object: the fields of its security reading, flat.
fn line(a: &Anomaly) -> Value {
    let mut v = json!({
        "time": humantime::format_rfc3339_micros(a.at.max(UNIX_EPOCH)).to_string(),
        "anomaly": a.kind.as_str(),
        "peer": a.peer.map(|p| p.to_string()),
        "identity": a.device,
        "count": a.count,
        "window_s": a.window.as_secs_f64(),
        "threshold": a.threshold,
    });
    if let Some(r) = a.rate {
        v["rate"] = json!(r.rate);
        v["baseline"] = json!(r.baseline);
        v["zscore"] = json!(r.zscore);
    }
    if let Some(p) = a.port {
        v["port"] = json!(p);
    }
    v
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::anomaly::AnomalyKind;

    fn event(kind: AnomalyKind) -> Anomaly {
        Anomaly {
            kind,
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            peer: Some("10.0.0.7:40000".parse().unwrap()),
            device: None,
            count: 25,
            window: Duration::from_secs(10),
            threshold: 20.0,
            rate: None,
            port: Some(5684),
        }
    }

    #[test]
    fn each_event_is_one_json_line_with_its_fields() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = AnomalyLog::new(dir.path(), 1 << 20, AnomalyMetrics::default());
        log.write(&event(AnomalyKind::ResourceScan));
        log.write(&event(AnomalyKind::NewPort));
        let text = std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["anomaly"], "resource_scan");
        assert_eq!(lines[0]["peer"], "10.0.0.7:40000");
        assert_eq!(lines[0]["count"], 25);
        assert_eq!(lines[0]["window_s"], 10.0);
        assert_eq!(lines[0]["time"], "2027-01-15T08:00:00.000000Z");
        assert!(lines[0]["identity"].is_null());
        assert_eq!(lines[1]["anomaly"], "new_port");
        assert_eq!(lines[1]["port"], 5684);
    }

    #[test]
    fn a_full_file_is_rotated_once_and_the_pair_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let one = line(&event(AnomalyKind::ResourceScan)).to_string().len() as u64 + 1;
        let mut log = AnomalyLog::new(dir.path(), one * 3, AnomalyMetrics::default());
        for _ in 0..10 {
            log.write(&event(AnomalyKind::ResourceScan));
        }
        let cur = std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        let old = std::fs::read_to_string(dir.path().join("anomalies.jsonl.1")).unwrap();
        assert!(
            cur.lines().count() <= 3 && old.lines().count() == 3,
            "{cur}\n{old}"
        );
        assert_eq!(cur.lines().count() + old.lines().count(), 10 - 6);
    }
}
