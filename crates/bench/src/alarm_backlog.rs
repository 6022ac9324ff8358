//! `alarm-backlog`: alarm latency while an outage's backlog drains (issue 11, the outbox's
//! priority lane). With the gateway's only uplink broker stopped (SIGTERM by pid), a closed loop
//! of vitals ([`crate::coap_load`]) fills the outbox; then the broker is started again (same
//! config, same port, as this process's child) and, from the moment the backlog starts arriving
//! at the subscriber, one alarm (`?class=alarm`) is sent every `--interval-ms` until the backlog
//! has drained (and at least `--alarms` were sent). The same alarms with no backlog, before the
//! outage, are the baseline.
//!
//! The subscriber keeps a persistent session on a broker with persistence on, so what the gateway
//! publishes between the broker's restart and the subscriber's reconnection is queued for it,
//! not dropped.
//!
//! The analysis ([`alarm_latency`], [`drain`]) is pure.

use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::arrivals::{Arrival, Class, Recorder, RecorderConfig, order_violations};
use crate::coap_load::{self, CoapLoadArgs};
use crate::coap_msg::{Incoming, MsgType, RequestTemplate, classify, empty_ack};
use crate::error::BenchError;
use crate::payload::{self, Format};
use crate::stats::{Latency, LatencySummary};
use crate::target::{loopback_addr, mqtt_broker};

/// Most alarms one run sends (bounds a drain that never ends).
pub const MAX_ALARMS: u64 = 20_000;

/// Arguments of `alarm-backlog`.
#[derive(Debug, Clone, clap::Args)]
pub struct AlarmBacklogArgs {
    /// The gateway's CoAP address, host:port (loopback only).
    #[arg(long)]
    pub target: String,
    /// The uplink's broker, mqtt://host:port (loopback).
    #[arg(long)]
    pub mqtt: String,
    /// Pid of the running broker (stopped with SIGTERM).
    #[arg(long)]
    pub broker_pid: u32,
    /// Its configuration file, to start it again (persistence on, same listener).
    #[arg(long)]
    pub broker_conf: PathBuf,
    /// The broker binary.
    #[arg(long, default_value = "/usr/sbin/mosquitto")]
    pub mosquitto: PathBuf,
    /// Write the pid of the broker this run starts again here (so a caller can stop it if this
    /// process is killed before it does).
    #[arg(long)]
    pub broker_pid_file: Option<PathBuf>,
    /// Vitals sent while the broker is stopped.
    #[arg(long, default_value_t = 100_000)]
    pub backlog: u64,
    /// Requests in flight while filling the backlog.
    #[arg(long, default_value_t = 256)]
    pub in_flight: usize,
    /// Alarms at least, during the drain and in the baseline.
    #[arg(long, default_value_t = 50)]
    pub alarms: u64,
    /// One alarm every this many milliseconds.
    #[arg(long, default_value_t = 20)]
    pub interval_ms: u64,
    /// Topic filter of the subscriber.
    #[arg(long, default_value = "wardgate/#")]
    pub topic: String,
    /// Longest drain, seconds.
    #[arg(long, default_value_t = 120.0)]
    pub drain_timeout: f64,
    /// Free-form label copied into the report.
    #[arg(long, default_value = "")]
    pub label: String,
}

/// Alarm latencies of one phase.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AlarmFigures {
    /// Alarms sent.
    pub sent: u64,
    /// Alarms answered 2.xx.
    pub acked: u64,
    /// Alarms received by the subscriber.
    pub delivered: u64,
    /// Send → arrival at the subscriber.
    pub latency: Option<LatencySummary>,
    /// Alarms later than the budget (1 s).
    pub over_budget: u64,
    /// Send → CoAP answer.
    pub ack_latency: Option<LatencySummary>,
}

/// One alarm sent.
#[derive(Debug, Clone, Copy)]
pub struct AlarmSent {
    /// Its `seq` record.
    pub seq: u64,
    /// When it left.
    pub at: Instant,
    /// When the gateway answered 2.xx.
    pub acked_at: Option<Instant>,
}

/// The alarm class's latency budget.
pub const ALARM_BUDGET: Duration = Duration::from_secs(1);

/// Latency of `sent` alarms, matched by seq against the first arrival in `arrived`.
pub fn alarm_latency(sent: &[AlarmSent], arrived: &[(u64, Instant)]) -> AlarmFigures {
    let mut first = std::collections::HashMap::new();
    for &(seq, at) in arrived {
        first.entry(seq).or_insert(at);
    }
    let (mut lat, mut ack) = (Latency::new(), Latency::new());
    let mut f = AlarmFigures {
        sent: sent.len() as u64,
        acked: 0,
        delivered: 0,
        latency: None,
        over_budget: 0,
        ack_latency: None,
    };
    for s in sent {
        if let Some(a) = s.acked_at {
            f.acked += 1;
            ack.record_ns(nanos(a.saturating_duration_since(s.at)));
        }
        if let Some(&at) = first.get(&s.seq) {
            let d = at.saturating_duration_since(s.at);
            f.delivered += 1;
            f.over_budget += u64::from(d > ALARM_BUDGET);
            lat.record_ns(nanos(d));
        }
    }
    f.latency = lat.summary();
    f.ack_latency = ack.summary();
    f
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// How the backlog drained.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DrainFigures {
    /// Broker ready again → first backlog reading at the subscriber, s (the gateway's
    /// reconnection).
    pub reconnect_s: Option<f64>,
    /// Broker ready again → last backlog reading at the subscriber, s.
    pub drain_s: Option<f64>,
    /// First → last backlog reading at the subscriber, s.
    pub drain_span_s: Option<f64>,
    /// Distinct backlog readings delivered.
    pub delivered: u64,
    /// Distinct backlog readings per second over the drain span.
    pub rate_per_s: Option<f64>,
    /// Per-device order violations among the backlog's first deliveries (expected 0).
    pub order_violations: u64,
}

/// The drain of the backlog readings `backlog` (device, seq, arrival; in arrival order) after
/// the broker was ready again at `ready`.
pub fn drain(backlog: &[(&str, u64, Instant)], ready: Instant) -> DrainFigures {
    let mut seen = std::collections::HashSet::new();
    let firsts: Vec<Instant> = backlog
        .iter()
        .filter(|(d, s, _)| seen.insert((*d, *s)))
        .map(|&(_, _, at)| at)
        .collect();
    let first = firsts.iter().min().copied();
    let last = firsts.iter().max().copied();
    let secs = |a: Option<Instant>| a.map(|a| a.saturating_duration_since(ready).as_secs_f64());
    let span = first
        .zip(last)
        .map(|(f, l)| l.saturating_duration_since(f).as_secs_f64());
    DrainFigures {
        reconnect_s: secs(first),
        drain_s: secs(last),
        drain_span_s: span,
        delivered: firsts.len() as u64,
        rate_per_s: span.filter(|s| *s > 0.0).map(|s| firsts.len() as f64 / s),
        order_violations: order_violations(backlog.iter().map(|&(d, s, _)| (d, s))),
    }
}

/// How many backlog readings arrived after each alarm, median over the alarms: how much of the
/// backlog an alarm overtook. `backlog_firsts` must be sorted.
pub fn overtaken_median(backlog_firsts: &[Instant], alarm_arrivals: &[Instant]) -> Option<u64> {
    let mut v: Vec<u64> = alarm_arrivals
        .iter()
        .map(|a| (backlog_firsts.len() - backlog_firsts.partition_point(|b| b <= a)) as u64)
        .collect();
    v.sort_unstable();
    v.get(v.len() / 2).copied()
}

/// The JSON object printed for one run.
#[derive(Debug, Clone, Serialize)]
pub struct AlarmBacklogReport {
    /// Always `alarm-backlog`.
    pub tool: &'static str,
    /// `--label`.
    pub label: String,
    /// Backlog readings sent while the broker was stopped.
    pub backlog_sent: u64,
    /// … of which acknowledged.
    pub backlog_acked: u64,
    /// Seconds the backlog took to send (closed loop).
    pub backlog_send_s: f64,
    /// Alarms with no backlog (before the outage).
    pub baseline: AlarmFigures,
    /// Alarms sent while the backlog drained.
    pub during_drain: AlarmFigures,
    /// Alarms sent after the drain (to reach `--alarms` when the drain was shorter).
    pub after_drain: AlarmFigures,
    /// The drain.
    pub drain: DrainFigures,
    /// Median backlog readings that arrived after an alarm sent during the drain.
    pub overtaken_median: Option<u64>,
    /// Subscriber connections (1 + the one after the restart).
    pub subscriber_connects: u64,
    /// Connections on which the broker had lost the subscriber's session (expected 0: what was
    /// published before the subscriber subscribed again is missing).
    pub subscriber_sessions_lost: u64,
}

/// Sends alarms on one socket every `interval`, reading answers in between.
struct AlarmSender {
    sock: UdpSocket,
    tpl: RequestTemplate,
    base_name: String,
    next_seq: u64,
    sent: Vec<AlarmSent>,
    payload: Vec<u8>,
    datagram: Vec<u8>,
}

impl AlarmSender {
    fn new(target: SocketAddr, device: &str) -> Result<Self, BenchError> {
        let sock = UdpSocket::bind(("127.0.0.1", 0))
            .map_err(|e| BenchError::io("bind alarm socket", e))?;
        sock.connect(target)
            .map_err(|e| BenchError::io("connect alarm socket", e))?;
        Ok(AlarmSender {
            sock,
            tpl: RequestTemplate::new(
                MsgType::Con,
                &format!("v1/readings/{device}?class=alarm"),
                Format::SenmlJson.coap_number(),
            ),
            base_name: format!("urn:dev:{device}:"),
            next_seq: 0,
            sent: Vec::new(),
            payload: Vec::new(),
            datagram: Vec::new(),
        })
    }

    fn send(&mut self) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        payload::encode(
            Format::SenmlJson,
            &mut self.payload,
            &self.base_name,
            epoch,
            seq,
        );
        self.tpl
            .write(&mut self.datagram, seq as u16, seq as u32, &self.payload);
        let at = Instant::now();
        // A failed send is left unanswered and undelivered; the report shows it.
        let _ = self.sock.send(&self.datagram);
        self.sent.push(AlarmSent {
            seq,
            at,
            acked_at: None,
        });
    }

    /// Reads answers until `until`.
    fn answers_until(&mut self, until: Instant) {
        let mut buf = [0u8; 1500];
        loop {
            let now = Instant::now();
            if now >= until {
                return;
            }
            let _ = self.sock.set_read_timeout(Some(until - now));
            let Ok(n) = self.sock.recv(&mut buf) else {
                continue;
            };
            let now = Instant::now();
            if let Incoming::Response {
                token,
                class,
                needs_ack,
                ..
            } = classify(buf.get(..n).unwrap_or(&[]))
            {
                if let Some(mid) = needs_ack {
                    let _ = self.sock.send(&empty_ack(mid));
                }
                if class == 2
                    && let Some(s) = self
                        .sent
                        .iter_mut()
                        .rev()
                        .find(|s| s.seq == u64::from(token))
                {
                    s.acked_at.get_or_insert(now);
                }
            }
        }
    }

    /// Sends one alarm every `interval` while `more()` says so (at most [`MAX_ALARMS`] in all).
    fn run(
        &mut self,
        interval: Duration,
        mut more: impl FnMut(u64) -> bool,
    ) -> std::ops::Range<usize> {
        let from = self.sent.len();
        let mut due = Instant::now();
        let mut n = 0;
        while more(n) && self.next_seq < MAX_ALARMS {
            self.send();
            n += 1;
            due += interval;
            self.answers_until(due);
        }
        from..self.sent.len()
    }
}

fn wait_until(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> bool,
) -> Result<(), BenchError> {
    let end = Instant::now() + timeout;
    while !f() {
        if Instant::now() > end {
            return Err(BenchError::InvalidArgs(format!(
                "timed out waiting for {what}"
            )));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

fn accepts(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok()
}

/// The broker started again by this run; killed when dropped.
struct Broker(Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs one measurement.
pub fn run(args: &AlarmBacklogArgs) -> Result<AlarmBacklogReport, BenchError> {
    if args.alarms == 0 || args.alarms > MAX_ALARMS / 4 || args.interval_ms == 0 {
        return Err(BenchError::InvalidArgs(format!(
            "--alarms must be in [1, {}] and --interval-ms > 0",
            MAX_ALARMS / 4
        )));
    }
    if !(1.0..=600.0).contains(&args.drain_timeout) {
        return Err(BenchError::InvalidArgs(
            "--drain-timeout must be in [1, 600] s".into(),
        ));
    }
    let target = loopback_addr(&args.target)?;
    let (host, port) = mqtt_broker(&args.mqtt)?;
    let broker_addr = loopback_addr(&format!("{host}:{port}"))?;
    let nonce = std::process::id();
    let alarm_device = format!("alarm-{nonce}");
    let backlog_prefix = format!("backlog-{nonce}");
    let interval = Duration::from_millis(args.interval_ms);
    let rec = Recorder::start(RecorderConfig {
        host,
        port,
        topic: args.topic.clone(),
        client_id: format!("wardgate-bench-alarms-{nonce}"),
        persistent_session: true,
        reconnect: true,
    })?;
    let progress = rec.progress();
    let mut alarms = AlarmSender::new(target, &alarm_device)?;

    // Baseline: no backlog.
    let baseline = alarms.run(interval, |n| n < args.alarms);
    let sent_so_far = alarms.next_seq;
    let _ = wait_until("the baseline alarms", Duration::from_secs(5), || {
        progress.unique_alarms.load(Relaxed) >= sent_so_far
    });

    // The outage: the broker stops, a backlog accumulates.
    let status = Command::new("kill")
        .args(["-TERM", &args.broker_pid.to_string()])
        .status()
        .map_err(|e| BenchError::io("kill -TERM the broker", e))?;
    if !status.success() {
        return Err(BenchError::InvalidArgs(format!(
            "kill -TERM {}: {status}",
            args.broker_pid
        )));
    }
    wait_until("the broker to stop", Duration::from_secs(10), || {
        !accepts(broker_addr)
    })?;
    let load = CoapLoadArgs {
        target: args.target.clone(),
        path: "v1/readings".into(),
        device_prefix: backlog_prefix.clone(),
        msg_type: MsgType::Con,
        format: Format::SenmlJson,
        sockets: 4,
        in_flight: args.in_flight,
        rate: None,
        duration: coap_load::MAX_DURATION_S.min(args.drain_timeout),
        count: Some(args.backlog),
        timeout: 2.0,
        mqtt: None,
        topic: None,
        drain_timeout: 0.0,
        pid: None,
        peer_pid: vec![],
        rss_series: None,
        ready_timeout: 5.0,
        topic_must_contain: None,
        label: args.label.clone(),
    };
    let backlog = coap_load::run(&load)?;

    // The broker comes back; the backlog drains; alarms while it does.
    // Its log goes next to its config, after the first run's.
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(args.broker_conf.with_file_name("mosquitto.log"))
        .map_err(|e| BenchError::io("open the broker's log", e))?;
    let child = Command::new(&args.mosquitto)
        .arg("-c")
        .arg(&args.broker_conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| BenchError::io("start the broker again", e))?;
    if let Some(f) = &args.broker_pid_file {
        std::fs::write(f, child.id().to_string())
            .map_err(|e| BenchError::io("write the broker's pid file", e))?;
    }
    let _broker = Broker(child);
    wait_until(
        "the broker to listen again",
        Duration::from_secs(10),
        || accepts(broker_addr),
    )?;
    let ready = Instant::now();
    let drain_end = ready + Duration::from_secs_f64(args.drain_timeout);
    wait_until(
        "the gateway to reconnect",
        Duration::from_secs_f64(args.drain_timeout),
        || progress.unique_vitals.load(Relaxed) > 0,
    )?;
    let mut drained_at: Option<Instant> = None;
    let target_vitals = backlog.ok;
    let during_and_after = alarms.run(interval, |n| {
        if drained_at.is_none() && progress.unique_vitals.load(Relaxed) >= target_vitals {
            drained_at = Some(Instant::now());
        }
        (drained_at.is_none() && Instant::now() < drain_end) || n < args.alarms
    });
    let total_alarms = alarms.next_seq;
    let _ = wait_until("the last alarms", Duration::from_secs(5), || {
        progress.unique_alarms.load(Relaxed) >= total_alarms
    });
    // Stragglers of the backlog, if the drain was cut by the timeout.
    if drained_at.is_none() {
        let _ = wait_until("the backlog", Duration::from_secs(3), || {
            progress.unique_vitals.load(Relaxed) >= target_vitals
        });
    }
    let connects = progress.connects.load(Relaxed);
    let sessions_lost = progress.sessions_lost.load(Relaxed);
    let recorded = rec.finish();

    let alarm_arrivals: Vec<(u64, Instant)> = recorded
        .arrivals
        .iter()
        .filter(|a| a.class == Class::Alarm && a.device == alarm_device)
        .filter_map(|a| Some((a.seq?, a.at)))
        .collect();
    let is_backlog = |a: &&Arrival| {
        a.class == Class::Vital
            && a.device.starts_with(&backlog_prefix)
            && a.seq.is_some_and(|s| s < backlog.sent)
    };
    let backlog_arrivals: Vec<(&str, u64, Instant)> = recorded
        .arrivals
        .iter()
        .filter(is_backlog)
        .filter_map(|a| Some((a.device.as_str(), a.seq?, a.at)))
        .collect();
    let drain_figures = drain(&backlog_arrivals, ready);
    // Alarms sent during the drain: before the last backlog reading arrived.
    let last_backlog = backlog_arrivals.iter().map(|a| a.2).max();
    let dd = alarms.sent.get(during_and_after.clone()).unwrap_or(&[]);
    let split = dd
        .iter()
        .position(|s| last_backlog.is_none_or(|l| s.at > l))
        .unwrap_or(dd.len());
    let (during, after) = dd.split_at(split);
    let mut firsts: Vec<Instant> = {
        let mut seen = std::collections::HashSet::new();
        backlog_arrivals
            .iter()
            .filter(|(d, s, _)| seen.insert((*d, *s)))
            .map(|a| a.2)
            .collect()
    };
    firsts.sort_unstable();
    let during_seqs: std::collections::HashSet<u64> = during.iter().map(|s| s.seq).collect();
    let during_arrivals: Vec<Instant> = {
        let mut seen = std::collections::HashSet::new();
        alarm_arrivals
            .iter()
            .filter(|(s, _)| during_seqs.contains(s) && seen.insert(*s))
            .map(|a| a.1)
            .collect()
    };
    Ok(AlarmBacklogReport {
        tool: "alarm-backlog",
        label: args.label.clone(),
        backlog_sent: backlog.sent,
        backlog_acked: backlog.ok,
        backlog_send_s: backlog.duration_s,
        baseline: alarm_latency(alarms.sent.get(baseline).unwrap_or(&[]), &alarm_arrivals),
        during_drain: alarm_latency(during, &alarm_arrivals),
        after_drain: alarm_latency(after, &alarm_arrivals),
        drain: drain_figures,
        overtaken_median: overtaken_median(&firsts, &during_arrivals),
        subscriber_connects: connects,
        subscriber_sessions_lost: sessions_lost,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn alarm_latency_is_send_to_first_arrival_and_the_budget_is_counted() {
        let t0 = Instant::now();
        let sent = [
            AlarmSent {
                seq: 0,
                at: at(t0, 0),
                acked_at: Some(at(t0, 2)),
            },
            AlarmSent {
                seq: 1,
                at: at(t0, 20),
                acked_at: None,
            },
            AlarmSent {
                seq: 2,
                at: at(t0, 40),
                acked_at: Some(at(t0, 41)),
            },
        ];
        let arrived = [(0, at(t0, 5)), (0, at(t0, 9)), (2, at(t0, 1100))];
        let f = alarm_latency(&sent, &arrived);
        assert_eq!((f.sent, f.acked, f.delivered, f.over_budget), (3, 2, 2, 1));
        let l = f.latency.expect("two delivered");
        assert!((l.p50_ms - 5.0).abs() < 0.1, "{l:?}");
        assert!((l.max_ms - 1060.0).abs() < 1.0, "{l:?}");
    }

    #[test]
    fn the_drain_runs_from_the_broker_restart_to_the_last_first_delivery() {
        let t0 = Instant::now();
        let backlog = [
            ("a", 0, at(t0, 300)),
            ("b", 1, at(t0, 310)),
            ("a", 0, at(t0, 320)),
            ("a", 2, at(t0, 1300)),
        ];
        let d = drain(&backlog, t0);
        assert_eq!(d.reconnect_s, Some(0.3));
        assert_eq!(d.drain_s, Some(1.3));
        assert_eq!(d.drain_span_s, Some(1.0));
        assert_eq!(d.delivered, 3);
        assert_eq!(d.rate_per_s, Some(3.0));
        assert_eq!(d.order_violations, 0);
        let empty = drain(&[], t0);
        assert_eq!((empty.drain_s, empty.delivered), (None, 0));
    }

    #[test]
    fn an_alarm_overtakes_the_backlog_that_arrives_after_it() {
        let t0 = Instant::now();
        let backlog: Vec<Instant> = (0..10).map(|i| at(t0, i * 10)).collect();
        // Arrivals at 15 ms (8 after it), 55 ms (4 after), 200 ms (none after).
        let alarms = [at(t0, 15), at(t0, 55), at(t0, 200)];
        assert_eq!(overtaken_median(&backlog, &alarms), Some(4));
        assert_eq!(overtaken_median(&backlog, &[]), None);
    }
}
