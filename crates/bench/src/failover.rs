//! `failover`: the uplink selector's failover under load (issue 11). An open-loop stream of
//! Confirmable vitals ([`crate::coap_load`]'s generator) goes to a gateway whose `vital` class
//! fails over from a preferred MQTT uplink to a backup; a subscriber on each broker records every
//! reading; at `--kill-at` seconds into the send phase the preferred broker is killed (SIGKILL,
//! by the pid the caller passes). What is reported: how long until the backup received its first
//! reading, how late readings were (before the kill, during the outage, after the switch), how
//! many acknowledged readings reached neither broker and how many of those the killed broker
//! had accepted (the gateway's `wardgate_mqtt_readings_acked_total` for it against what its
//! subscriber received), and per-device order at each broker.
//!
//! The analysis ([`analyse`], [`account`]) is pure: vectors in, figures out.

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::arrivals::{Class, Recorded, Recorder, RecorderConfig, order_violations};
use crate::coap_load::{CoapLoadArgs, CoapLoadReport, RunHooks, run_with};
use crate::coap_msg::MsgType;
use crate::error::BenchError;
use crate::payload::Format;
use crate::prom;
use crate::stats::{Latency, LatencySummary};
use crate::target::mqtt_broker;
use crate::tracker::{OK, Tracker};

/// Arguments of `failover`.
#[derive(Debug, Clone, clap::Args)]
pub struct FailoverArgs {
    /// The gateway's CoAP address, host:port (loopback only).
    #[arg(long)]
    pub target: String,
    /// Readings per second (open loop).
    #[arg(long, default_value_t = 5000.0)]
    pub rate: f64,
    /// Send phase, seconds.
    #[arg(long, default_value_t = 20.0)]
    pub duration: f64,
    /// Kill the preferred broker this many seconds into the send phase.
    #[arg(long, default_value_t = 8.0)]
    pub kill_at: f64,
    /// Pid of the preferred broker (killed with SIGKILL).
    #[arg(long)]
    pub kill_pid: u32,
    /// The preferred uplink's broker, mqtt://host:port (loopback).
    #[arg(long)]
    pub primary: String,
    /// The backup uplink's broker, mqtt://host:port (loopback).
    #[arg(long)]
    pub backup: String,
    /// Topic filter subscribed on both brokers.
    #[arg(long, default_value = "wardgate/#")]
    pub topic: String,
    /// Simulated devices (one client socket each).
    #[arg(long, default_value_t = 16)]
    pub devices: usize,
    /// The gateway's metrics URL (http://127.0.0.1:PORT/metrics), read after the run.
    #[arg(long)]
    pub metrics: Option<String>,
    /// Name of the preferred uplink in the gateway's metrics.
    #[arg(long, default_value = "cloud")]
    pub primary_uplink: String,
    /// Name of the backup uplink in the gateway's metrics.
    #[arg(long, default_value = "backup")]
    pub backup_uplink: String,
    /// A reading is "delayed" when its end-to-end latency exceeds this, milliseconds.
    #[arg(long, default_value_t = 1000.0)]
    pub delayed_ms: f64,
    /// After the send phase, stop waiting for deliveries once none arrived for this long, s.
    #[arg(long, default_value_t = 3.0)]
    pub drain_idle: f64,
    /// Never wait longer than this for deliveries after the send phase, s.
    #[arg(long, default_value_t = 60.0)]
    pub drain_timeout: f64,
    /// Free-form label copied into the report.
    #[arg(long, default_value = "")]
    pub label: String,
}

/// One reading of this run as a broker's subscriber saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    /// Device id.
    pub device: String,
    /// The generator's sequence number (send order; per device too).
    pub seq: u64,
    /// Arrival on the run clock, ns.
    pub at_ns: u64,
}

/// What the generator sent, by sequence number.
#[derive(Debug, Clone, Default)]
pub struct Sent {
    /// Latency origin (scheduled send time) on the run clock; `u64::MAX` for never sent.
    pub origin_ns: Vec<u64>,
    /// Answered 2.xx.
    pub acked: Vec<bool>,
}

/// The delivery figures of one run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Figures {
    /// Kill → first reading at the backup broker, ms.
    pub first_at_backup_after_kill_ms: Option<f64>,
    /// Kill → last first-delivery at the killed broker, ms (negative: before the kill).
    pub last_at_primary_after_kill_ms: Option<f64>,
    /// Readings acknowledged (2.01) to the device.
    pub acked: u64,
    /// Acknowledged readings received at either broker.
    pub acked_delivered: u64,
    /// Acknowledged readings received at neither broker.
    pub acked_missing: u64,
    /// Readings received that were not acknowledged (answer timed out or was refused).
    pub unacked_delivered: u64,
    /// Distinct readings received at the preferred broker.
    pub primary_unique: u64,
    /// Distinct readings received at the backup broker.
    pub backup_unique: u64,
    /// Readings received at both brokers.
    pub at_both: u64,
    /// Repeated deliveries at the same broker.
    pub redelivered: u64,
    /// Readings whose first delivery came later than `--delayed-ms` after their scheduled send.
    pub delayed: u64,
    /// End-to-end latency (scheduled send → first delivery at either broker), all readings.
    pub latency: Option<LatencySummary>,
    /// … of readings scheduled before the kill.
    pub latency_before_kill: Option<LatencySummary>,
    /// … of readings scheduled between the kill and the first delivery at the backup.
    pub latency_outage: Option<LatencySummary>,
    /// … of readings scheduled after the first delivery at the backup.
    pub latency_after_switch: Option<LatencySummary>,
    /// Per-device order violations among first deliveries at the backup (expected 0).
    pub order_violations_backup: u64,
    /// … at the preferred broker.
    pub order_violations_primary: u64,
}

/// Analyses the deliveries of one run. `kill_ns` is on the run clock like every time here.
pub fn analyse(
    sent: &Sent,
    primary: &[Observed],
    backup: &[Observed],
    kill_ns: u64,
    delayed_ns: u64,
) -> Figures {
    let n = sent.origin_ns.len();
    // First delivery per seq, and where.
    let mut first: Vec<u64> = vec![u64::MAX; n];
    let mut at_primary = vec![false; n];
    let mut at_backup = vec![false; n];
    let mut redelivered = 0u64;
    for (obs, seen) in [(primary, &mut at_primary), (backup, &mut at_backup)] {
        for o in obs {
            let Ok(i) = usize::try_from(o.seq) else {
                continue;
            };
            let (Some(f), Some(s)) = (first.get_mut(i), seen.get_mut(i)) else {
                continue;
            };
            if *s {
                redelivered += 1;
            }
            *s = true;
            *f = (*f).min(o.at_ns);
        }
    }
    let switch_ns = backup
        .iter()
        .map(|o| o.at_ns)
        .filter(|&t| t >= kill_ns)
        .min();
    let last_primary = primary.iter().map(|o| o.at_ns).max();
    let ms = |a: u64, b: u64| (a as f64 - b as f64) / 1e6;
    let (mut all, mut before, mut outage, mut after) = (
        Latency::new(),
        Latency::new(),
        Latency::new(),
        Latency::new(),
    );
    let mut f = Figures {
        first_at_backup_after_kill_ms: switch_ns.map(|t| ms(t, kill_ns)),
        last_at_primary_after_kill_ms: last_primary.map(|t| ms(t, kill_ns)),
        acked: 0,
        acked_delivered: 0,
        acked_missing: 0,
        unacked_delivered: 0,
        primary_unique: at_primary.iter().filter(|&&b| b).count() as u64,
        backup_unique: at_backup.iter().filter(|&&b| b).count() as u64,
        at_both: at_primary
            .iter()
            .zip(&at_backup)
            .filter(|(a, b)| **a && **b)
            .count() as u64,
        redelivered,
        delayed: 0,
        latency: None,
        latency_before_kill: None,
        latency_outage: None,
        latency_after_switch: None,
        order_violations_backup: order_violations(
            backup.iter().map(|o| (o.device.as_str(), o.seq)),
        ),
        order_violations_primary: order_violations(
            primary.iter().map(|o| (o.device.as_str(), o.seq)),
        ),
    };
    for (i, &origin) in sent.origin_ns.iter().enumerate() {
        if origin == u64::MAX {
            continue;
        }
        let acked = sent.acked.get(i).copied().unwrap_or(false);
        let delivered = first.get(i).copied().unwrap_or(u64::MAX);
        match (acked, delivered != u64::MAX) {
            (true, true) => f.acked_delivered += 1,
            (true, false) => f.acked_missing += 1,
            (false, true) => f.unacked_delivered += 1,
            (false, false) => {}
        }
        f.acked += u64::from(acked);
        if delivered == u64::MAX {
            continue;
        }
        let lat = delivered.saturating_sub(origin);
        if lat > delayed_ns {
            f.delayed += 1;
        }
        all.record_ns(lat);
        if origin < kill_ns {
            before.record_ns(lat);
        } else if switch_ns.is_none_or(|s| origin < s) {
            outage.record_ns(lat);
        } else {
            after.record_ns(lat);
        }
    }
    f.latency = all.summary();
    f.latency_before_kill = before.summary();
    f.latency_outage = outage.summary();
    f.latency_after_switch = after.summary();
    f
}

/// The gateway's own counts, from its metrics after the run.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct GatewayCounts {
    /// Readings the preferred broker acknowledged (PUBACK) to the gateway.
    pub primary_acked: Option<f64>,
    /// Readings the backup broker acknowledged to the gateway.
    pub backup_acked: Option<f64>,
    /// Readings the cutover moved off the preferred uplink.
    pub primary_released: Option<f64>,
    /// Non-zero breaker transitions, `{labels} count`.
    pub breaker_transitions: Vec<String>,
}

/// Where the acknowledged readings that reached neither broker went.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Accounting {
    /// Readings the killed broker acknowledged to the gateway but its subscriber never received:
    /// lost inside the broker by the SIGKILL (the gateway's count minus the subscriber's).
    pub lost_in_killed_broker: Option<i64>,
    /// Acknowledged readings missing at both brokers that the killed broker does not account
    /// for (expected 0).
    pub unexplained_missing: Option<i64>,
}

/// Splits the missing readings into those the killed broker had accepted and the rest.
/// `primary_received_all` counts every distinct reading the preferred broker's subscriber got,
/// the readiness probe included (the gateway's counter includes it too).
pub fn account(figures: &Figures, gw: &GatewayCounts, primary_received_all: u64) -> Accounting {
    let lost = gw
        .primary_acked
        .map(|a| a.round() as i64 - primary_received_all as i64);
    Accounting {
        lost_in_killed_broker: lost,
        unexplained_missing: lost.map(|l| figures.acked_missing as i64 - l.max(0)),
    }
}

/// The JSON object printed for one run.
#[derive(Debug, Clone, Serialize)]
pub struct FailoverReport {
    /// Always `failover`.
    pub tool: &'static str,
    /// `--label`.
    pub label: String,
    /// Target rate, readings/s.
    pub rate: f64,
    /// Send phase, s.
    pub duration_s: f64,
    /// When the kill returned, seconds into the send phase.
    pub killed_at_s: f64,
    /// How long the `kill` call took, ms (the signal landed within it).
    pub kill_call_ms: f64,
    /// Simulated devices.
    pub devices: usize,
    /// Requests sent.
    pub sent: u64,
    /// Answered 2.xx.
    pub ok: u64,
    /// Answered 5.03.
    pub busy_503: u64,
    /// Unanswered after the generator's timeout.
    pub timeouts: u64,
    /// CoAP answer latency (from the scheduled send time).
    pub ack_latency: Option<LatencySummary>,
    /// Delivery figures.
    #[serde(flatten)]
    pub figures: Figures,
    /// The gateway's counts.
    pub gateway: GatewayCounts,
    /// The missing readings explained.
    #[serde(flatten)]
    pub accounting: Accounting,
    /// Distinct readings of any device (probe included) at the preferred broker.
    pub primary_received_all: u64,
    /// Wait for stragglers after the send phase, s.
    pub drain_s: f64,
    /// Subscriber connection failures (the preferred broker's is the kill).
    pub subscriber_errors: Vec<String>,
}

/// Kills the preferred broker from the sender's ticks.
struct Killer {
    pid: u32,
    after_ns: u64,
    start_ns: Option<u64>,
    tracker: Option<Arc<Tracker>>,
    run_prefix: String,
    /// (kill issued, kill returned) on the run clock, or why it failed.
    job: Option<JoinHandle<Result<(u64, u64), String>>>,
}

impl RunHooks for Killer {
    fn started(&mut self, tracker: &Arc<Tracker>, run_prefix: &str) {
        self.tracker = Some(tracker.clone());
        self.run_prefix = run_prefix.to_owned();
    }

    fn tick(&mut self, now_ns: u64) {
        let start = *self.start_ns.get_or_insert(now_ns);
        if self.job.is_some() || now_ns.saturating_sub(start) < self.after_ns {
            return;
        }
        let Some(tracker) = self.tracker.clone() else {
            return;
        };
        let pid = self.pid;
        // `kill` is a fork+exec: off the sender's thread so the pacing is not held up.
        self.job = Some(std::thread::spawn(move || {
            let issued = tracker.now_ns();
            let status = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status()
                .map_err(|e| format!("kill: {e}"))?;
            let done = tracker.now_ns();
            if status.success() {
                Ok((issued, done))
            } else {
                Err(format!("kill -KILL {pid}: {status}"))
            }
        }));
    }
}

fn recorder(url: &str, topic: &str, id: String) -> Result<Recorder, BenchError> {
    let (host, port) = mqtt_broker(url)?;
    Recorder::start(RecorderConfig {
        host,
        port,
        topic: topic.to_owned(),
        client_id: id,
        persistent_session: false,
        reconnect: false,
    })
}

fn observed(rec: &Recorded, prefix: &str, t0: Instant) -> Vec<Observed> {
    rec.arrivals
        .iter()
        .filter(|a| a.class == Class::Vital && a.device.starts_with(prefix))
        .filter_map(|a| {
            Some(Observed {
                device: a.device.clone(),
                seq: a.seq?,
                at_ns: u64::try_from(a.at.saturating_duration_since(t0).as_nanos()).ok()?,
            })
        })
        .collect()
}

fn distinct_readings(rec: &Recorded) -> u64 {
    let mut set: HashMap<&str, std::collections::HashSet<u64>> = HashMap::new();
    for a in &rec.arrivals {
        if let Some(s) = a.seq {
            set.entry(a.device.as_str()).or_default().insert(s);
        }
    }
    set.values().map(|s| s.len() as u64).sum()
}

/// Runs one failover measurement.
pub fn run(args: &FailoverArgs) -> Result<FailoverReport, BenchError> {
    if !(args.kill_at > 0.0 && args.kill_at < args.duration) {
        return Err(BenchError::InvalidArgs(
            "--kill-at must be inside the send phase (0, --duration)".into(),
        ));
    }
    if !(0.0..=600.0).contains(&args.drain_timeout) || !(0.0..=60.0).contains(&args.drain_idle) {
        return Err(BenchError::InvalidArgs(
            "--drain-timeout must be in [0, 600] and --drain-idle in [0, 60] s".into(),
        ));
    }
    if args.devices == 0 || args.devices > 1024 {
        return Err(BenchError::InvalidArgs(
            "--devices must be in [1, 1024]".into(),
        ));
    }
    let nonce = std::process::id();
    // Subscribed before anything is sent: the readiness probe is seen too.
    let primary = recorder(
        &args.primary,
        &args.topic,
        format!("wardgate-bench-primary-{nonce}"),
    )?;
    let backup = recorder(
        &args.backup,
        &args.topic,
        format!("wardgate-bench-backup-{nonce}"),
    )?;
    let load = CoapLoadArgs {
        target: args.target.clone(),
        path: "v1/readings".into(),
        device_prefix: "failover".into(),
        msg_type: MsgType::Con,
        format: Format::SenmlJson,
        sockets: args.devices,
        in_flight: 4096,
        rate: Some(args.rate),
        duration: args.duration,
        count: None,
        timeout: 2.0,
        mqtt: None,
        topic: None,
        drain_timeout: 0.0,
        pid: None,
        peer_pid: vec![],
        rss_series: None,
        ready_timeout: 10.0,
        topic_must_contain: None,
        label: args.label.clone(),
    };
    let mut killer = Killer {
        pid: args.kill_pid,
        after_ns: (args.kill_at * 1e9) as u64,
        start_ns: None,
        tracker: None,
        run_prefix: String::new(),
        job: None,
    };
    let (coap, tracker) = run_with(&load, &mut killer)?;
    let (issued, killed) = match killer.job.take().map(JoinHandle::join) {
        Some(Ok(Ok(t))) => t,
        Some(Ok(Err(e))) => return Err(BenchError::InvalidArgs(e)),
        Some(Err(_)) => return Err(BenchError::InvalidArgs("the kill thread panicked".into())),
        None => {
            return Err(BenchError::InvalidArgs(
                "the send phase ended before --kill-at".into(),
            ));
        }
    };

    let drain = wait_for_deliveries(args, &coap, &primary, &backup);
    let primary = primary.finish();
    let backup = backup.finish();
    let gateway = match &args.metrics {
        Some(url) => {
            let text = prom::scrape(url)?;
            let acked = "wardgate_mqtt_readings_acked_total";
            GatewayCounts {
                primary_acked: prom::sum(&text, acked, &[("uplink", &args.primary_uplink)]),
                backup_acked: prom::sum(&text, acked, &[("uplink", &args.backup_uplink)]),
                primary_released: prom::sum(
                    &text,
                    "wardgate_store_released_total",
                    &[("uplink", &args.primary_uplink)],
                ),
                breaker_transitions: prom::samples(
                    &text,
                    "wardgate_selector_breaker_transitions_total",
                ),
            }
        }
        None => GatewayCounts::default(),
    };

    let prefix = format!("{}-", killer.run_prefix);
    let t0 = tracker.t0();
    let sent = Sent {
        origin_ns: (0..coap.sent)
            .map(|s| tracker.origin(s).unwrap_or(u64::MAX))
            .collect(),
        acked: (0..coap.sent).map(|s| tracker.state(s) & OK != 0).collect(),
    };
    let figures = analyse(
        &sent,
        &observed(&primary, &prefix, t0),
        &observed(&backup, &prefix, t0),
        killed,
        (args.delayed_ms * 1e6) as u64,
    );
    let primary_received_all = distinct_readings(&primary);
    let accounting = account(&figures, &gateway, primary_received_all);
    let start = killer.start_ns.unwrap_or(0);
    Ok(FailoverReport {
        tool: "failover",
        label: args.label.clone(),
        rate: args.rate,
        duration_s: coap.duration_s,
        killed_at_s: killed.saturating_sub(start) as f64 / 1e9,
        kill_call_ms: killed.saturating_sub(issued) as f64 / 1e6,
        devices: coap.sockets,
        sent: coap.sent,
        ok: coap.ok,
        busy_503: coap.busy_503,
        timeouts: coap.timeouts,
        ack_latency: coap.ack_latency,
        figures,
        gateway,
        accounting,
        primary_received_all,
        drain_s: drain.as_secs_f64(),
        subscriber_errors: primary
            .errors
            .iter()
            .map(|e| format!("primary: {e}"))
            .chain(backup.errors.iter().map(|e| format!("backup: {e}")))
            .collect(),
    })
}

/// Waits until as many readings arrived as were acknowledged, nothing new arrived for
/// `--drain-idle`, or `--drain-timeout` passed.
fn wait_for_deliveries(
    args: &FailoverArgs,
    coap: &CoapLoadReport,
    primary: &Recorder,
    backup: &Recorder,
) -> Duration {
    use std::sync::atomic::Ordering::Relaxed;
    let start = Instant::now();
    let count = || primary.progress().unique.load(Relaxed) + backup.progress().unique.load(Relaxed);
    let (mut last, mut changed) = (count(), Instant::now());
    let idle = Duration::from_secs_f64(args.drain_idle);
    let max = Duration::from_secs_f64(args.drain_timeout);
    while start.elapsed() < max && count() < coap.ok {
        std::thread::sleep(Duration::from_millis(10));
        let now = count();
        if now != last {
            (last, changed) = (now, Instant::now());
        } else if changed.elapsed() >= idle {
            break;
        }
    }
    start.elapsed()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn obs(device: &str, seq: u64, at_ms: u64) -> Observed {
        Observed {
            device: device.into(),
            seq,
            at_ns: at_ms * MS,
        }
    }

    /// Six readings from two devices scheduled every 10 ms; the kill is at 25 ms.
    fn sent() -> Sent {
        Sent {
            origin_ns: (0..6).map(|i| i * 10 * MS).collect(),
            acked: vec![true; 6],
        }
    }

    #[test]
    fn latency_is_split_at_the_kill_and_at_the_first_delivery_at_the_backup() {
        let primary = [obs("d0", 0, 2), obs("d1", 1, 12), obs("d0", 2, 22)];
        // 3 was owed to the killed broker and moved; 4 and 5 went straight to the backup.
        let backup = [obs("d1", 3, 2100), obs("d0", 4, 2101), obs("d1", 5, 2102)];
        let f = analyse(&sent(), &primary, &backup, 25 * MS, 1000 * MS);
        assert_eq!(f.first_at_backup_after_kill_ms, Some(2075.0));
        assert_eq!(f.last_at_primary_after_kill_ms, Some(-3.0));
        assert_eq!((f.acked, f.acked_delivered, f.acked_missing), (6, 6, 0));
        assert_eq!((f.primary_unique, f.backup_unique, f.at_both), (3, 3, 0));
        assert_eq!(
            f.delayed, 3,
            "the three readings that waited for the switch"
        );
        assert_eq!(f.latency_before_kill.as_ref().map(|l| l.count), Some(3));
        assert_eq!(f.latency_outage.as_ref().map(|l| l.count), Some(3));
        assert!(
            f.latency_after_switch.is_none(),
            "nothing scheduled after 2.1 s"
        );
        let max = f.latency.as_ref().map(|l| l.max_ms).unwrap_or(0.0);
        assert!((max - 2070.0).abs() < 3.0, "{max}");
        assert_eq!(
            (f.order_violations_primary, f.order_violations_backup),
            (0, 0)
        );
    }

    #[test]
    fn readings_at_both_brokers_count_once_and_reordering_at_the_backup_is_counted() {
        let primary = [obs("d0", 0, 2), obs("d1", 1, 12), obs("d0", 2, 22)];
        // 2 was delivered to the killed broker but its PUBACK was lost: it comes again.
        let backup = [
            obs("d0", 4, 2100),
            obs("d0", 2, 2101),
            obs("d1", 3, 2102),
            obs("d1", 3, 2103),
        ];
        let f = analyse(&sent(), &primary, &backup, 25 * MS, 1000 * MS);
        assert_eq!(f.at_both, 1);
        assert_eq!(f.redelivered, 1);
        assert_eq!(
            (f.acked_delivered, f.acked_missing),
            (5, 1),
            "5 never arrived"
        );
        assert_eq!(f.order_violations_backup, 1, "d0/2 after d0/4");
    }

    #[test]
    fn missing_readings_are_explained_by_what_the_killed_broker_had_accepted() {
        let primary = [obs("d0", 0, 2)];
        let backup = [obs("d0", 4, 2100), obs("d1", 5, 2101)];
        let f = analyse(&sent(), &primary, &backup, 25 * MS, 1000 * MS);
        assert_eq!(f.acked_missing, 3, "1, 2 and 3");
        // The gateway says the broker PUBACKed 4 readings (the probe and 0, 1, 2); its
        // subscriber saw 2 (the probe and 0): 2 were lost inside the broker, 1 is unexplained.
        let gw = GatewayCounts {
            primary_acked: Some(4.0),
            ..GatewayCounts::default()
        };
        let a = account(&f, &gw, 2);
        assert_eq!(a.lost_in_killed_broker, Some(2));
        assert_eq!(a.unexplained_missing, Some(1));
        assert_eq!(
            account(&f, &GatewayCounts::default(), 2).unexplained_missing,
            None
        );
    }

    #[test]
    fn unsent_and_unacknowledged_readings_are_kept_apart() {
        let s = Sent {
            origin_ns: vec![0, 10 * MS, u64::MAX],
            acked: vec![true, false, false],
        };
        let f = analyse(&s, &[obs("d0", 0, 1), obs("d1", 1, 11)], &[], 5 * MS, MS);
        assert_eq!((f.acked, f.acked_delivered, f.unacked_delivered), (1, 1, 1));
        assert_eq!(f.first_at_backup_after_kill_ms, None);
        assert!(f.latency_outage.is_some() && f.latency_after_switch.is_none());
    }
}
