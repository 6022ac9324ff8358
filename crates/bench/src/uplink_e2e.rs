//! `uplink-e2e`: CoAP vitals ([`crate::coap_load`]'s generator, closed or open loop) into a
//! gateway, delivered upstream by its MQTT uplink (observed by an [`arrivals`] subscriber), its
//! HTTPS uplink (received by this process's [`HttpsSink`]), or both; reported per uplink:
//! readings delivered end to end per second, end-to-end latency (send, or scheduled send in open
//! loop → arrival), losses, duplicates, per-device order, and for HTTPS the requests and their
//! batch sizes; plus the gateway's CPU per 1000 acknowledged readings over the send phase and
//! the drain.
//!
//! Delivered per second is distinct readings over (first send → last first arrival), so it does
//! not depend on how long the drain waits. The analysis ([`analyse`], [`batch_figures`]) is
//! pure: vectors in, figures out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::arrivals::{Arrival, Recorder, RecorderConfig, order_violations};
use crate::coap_load::{CoapLoadArgs, RunHooks, run_with};
use crate::coap_msg::MsgType;
use crate::error::BenchError;
use crate::failover::{Observed, Sent};
use crate::https_sink::{Batch, HttpsSink, SinkRecorded};
use crate::payload::Format;
use crate::procfs::{CpuReport, MemoryReport, Monitor};
use crate::prom;
use crate::stats::{Latency, LatencySummary};
use crate::target::{loopback_addr, mqtt_broker};
use crate::tracker::{OK, Tracker};

/// Arguments of `uplink-e2e`.
#[derive(Debug, Clone, clap::Args)]
pub struct UplinkE2eArgs {
    /// The gateway's CoAP address, host:port (loopback only).
    #[arg(long)]
    pub target: String,
    /// Subscribe to the MQTT uplink's broker (mqtt://host:port, loopback).
    #[arg(long)]
    pub mqtt: Option<String>,
    /// Topic filter for `--mqtt`.
    #[arg(long, default_value = "wardgate/#")]
    pub topic: String,
    /// Serve the HTTPS uplink's endpoint on this address (loopback), answering 200.
    #[arg(long)]
    pub https_listen: Option<String>,
    /// Directory with the sink's `cert.pem` and `key.pem` (`gen-cert`); plain HTTP without.
    #[arg(long)]
    pub tls_dir: Option<std::path::PathBuf>,
    /// Simulated devices (client sockets; raised so no Message ID repeats).
    #[arg(long, default_value_t = 16)]
    pub devices: usize,
    /// Requests in flight at most (closed loop: the load).
    #[arg(long, default_value_t = 256)]
    pub in_flight: usize,
    /// Open loop at this many readings per second; closed loop when absent.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Send phase, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Payload encoding.
    #[arg(long, value_enum, default_value = "senml-json")]
    pub format: Format,
    /// After the send phase, stop waiting once nothing new arrived for this long, s.
    #[arg(long, default_value_t = 3.0)]
    pub drain_idle: f64,
    /// Never wait longer than this for deliveries after the send phase, s.
    #[arg(long, default_value_t = 60.0)]
    pub drain_timeout: f64,
    /// The gateway: its CPU and memory are sampled over the send phase and the drain.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Peer processes (the broker), accounted separately.
    #[arg(long)]
    pub peer_pid: Vec<u32>,
    /// The gateway's metrics URL, read after the run (HTTPS uplink requests and retries).
    #[arg(long)]
    pub metrics: Option<String>,
    /// Free-form label copied into the report.
    #[arg(long, default_value = "")]
    pub label: String,
}

/// Delivery figures of one uplink.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DeliveryFigures {
    /// Distinct readings of the run received.
    pub unique: u64,
    /// Receipts of a reading already received.
    pub duplicates: u64,
    /// Acknowledged (2.xx) readings never received.
    pub acked_missing: u64,
    /// Readings received whose CoAP answer was not a 2.xx (timed out or refused).
    pub unacked_delivered: u64,
    /// First send (scheduled, open loop) → last first receipt, s.
    pub span_s: f64,
    /// unique / span.
    pub delivered_per_s: f64,
    /// Latency origin → first receipt.
    pub latency: Option<LatencySummary>,
    /// Per-device order violations among first receipts (expected 0).
    pub order_violations: u64,
}

/// Analyses one uplink's receipts of a run (`arrivals` in receipt order, run clock).
pub fn analyse(sent: &Sent, arrivals: &[Observed]) -> DeliveryFigures {
    let n = sent.origin_ns.len();
    let mut first = vec![u64::MAX; n];
    let mut duplicates = 0;
    for a in arrivals {
        let Some(f) = usize::try_from(a.seq).ok().and_then(|i| first.get_mut(i)) else {
            continue;
        };
        if *f != u64::MAX {
            duplicates += 1;
        } else {
            *f = a.at_ns;
        }
    }
    let start = sent.origin_ns.iter().copied().min().unwrap_or(0);
    let mut lat = Latency::new();
    let (mut unique, mut acked_missing, mut unacked_delivered, mut last) = (0u64, 0, 0, start);
    for (i, (&origin, &at)) in sent.origin_ns.iter().zip(&first).enumerate() {
        if origin == u64::MAX {
            continue;
        }
        let acked = sent.acked.get(i).copied().unwrap_or(false);
        if at == u64::MAX {
            acked_missing += u64::from(acked);
            continue;
        }
        unique += 1;
        unacked_delivered += u64::from(!acked);
        last = last.max(at);
        lat.record_ns(at.saturating_sub(origin));
    }
    let span_s = last.saturating_sub(start) as f64 / 1e9;
    DeliveryFigures {
        unique,
        duplicates,
        acked_missing,
        unacked_delivered,
        span_s,
        delivered_per_s: if span_s > 0.0 {
            unique as f64 / span_s
        } else {
            0.0
        },
        latency: lat.summary(),
        order_violations: order_violations(arrivals.iter().map(|a| (a.device.as_str(), a.seq))),
    }
}

/// The HTTPS requests of a run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BatchFigures {
    /// Requests answered 200 within the run's window.
    pub requests: u64,
    /// requests / the delivery span.
    pub requests_per_s: f64,
    /// Readings per request (mean).
    pub mean_batch: f64,
    /// Largest batch.
    pub max_batch: u64,
    /// Request body bytes on the wire per reading (after gzip when on).
    pub wire_bytes_per_reading: f64,
}

/// Figures of the requests that arrived in `[start_ns, end_ns]` on the run clock
/// (`batches` as `(at_ns, readings, wire_bytes)`); the span for the rate is the delivery span.
pub fn batch_figures(
    batches: &[(u64, u32, u32)],
    start_ns: u64,
    end_ns: u64,
    span_s: f64,
) -> BatchFigures {
    let inside = || {
        batches
            .iter()
            .filter(move |b| b.0 >= start_ns && b.0 <= end_ns)
    };
    let requests = inside().count() as u64;
    let readings: u64 = inside().map(|b| u64::from(b.1)).sum();
    let wire: u64 = inside().map(|b| u64::from(b.2)).sum();
    BatchFigures {
        requests,
        requests_per_s: if span_s > 0.0 {
            requests as f64 / span_s
        } else {
            0.0
        },
        mean_batch: if requests > 0 {
            readings as f64 / requests as f64
        } else {
            0.0
        },
        max_batch: inside().map(|b| u64::from(b.1)).max().unwrap_or(0),
        wire_bytes_per_reading: if readings > 0 {
            wire as f64 / readings as f64
        } else {
            0.0
        },
    }
}

/// The HTTPS uplink's figures.
#[derive(Debug, Clone, Serialize)]
pub struct HttpsReport {
    /// Delivery.
    #[serde(flatten)]
    pub delivery: DeliveryFigures,
    /// Requests.
    #[serde(flatten)]
    pub batches: BatchFigures,
    /// Decoded (JSON) bytes over wire bytes of all accepted requests (1 without gzip).
    pub compression_ratio: f64,
    /// Requests answered 400/405 by the sink (the gateway retries them).
    pub refused_requests: u64,
    /// TCP connections the gateway opened to the sink.
    pub connections: u64,
    /// TLS handshakes that failed.
    pub tls_failures: u64,
    /// Negotiated TLS version of each connection.
    pub tls_versions: Vec<String>,
    /// Receipts not kept (memory bound).
    pub overflow: u64,
    /// `wardgate_https_uplink_requests_total` (all statuses), from the gateway's metrics.
    pub gateway_requests: Option<f64>,
    /// `wardgate_https_uplink_retries_total`, from the gateway's metrics.
    pub gateway_retries: Option<f64>,
}

/// The MQTT uplink's figures.
#[derive(Debug, Clone, Serialize)]
pub struct MqttReport {
    /// Delivery.
    #[serde(flatten)]
    pub delivery: DeliveryFigures,
    /// Subscriber connection failures.
    pub subscriber_errors: Vec<String>,
    /// Receipts not kept (memory bound).
    pub overflow: u64,
}

/// The JSON object printed for one run.
#[derive(Debug, Clone, Serialize)]
pub struct UplinkE2eReport {
    /// Always `uplink-e2e`.
    pub tool: &'static str,
    /// `--label`.
    pub label: String,
    /// `closed` or `open`.
    pub mode: &'static str,
    /// In-flight window (closed loop: the load).
    pub in_flight: usize,
    /// Target rate (open loop).
    pub rate_target: Option<f64>,
    /// Simulated devices.
    pub devices: usize,
    /// Send phase, s.
    pub duration_s: f64,
    /// Requests sent.
    pub sent: u64,
    /// Answered 2.xx.
    pub ok: u64,
    /// Answered 5.03.
    pub busy_503: u64,
    /// Unanswered after 2 s.
    pub timeouts: u64,
    /// ok / send phase.
    pub ok_rps: f64,
    /// CoAP answer latency.
    pub ack_latency: Option<LatencySummary>,
    /// The MQTT uplink (with `--mqtt`).
    pub mqtt: Option<MqttReport>,
    /// The HTTPS uplink (with `--https-listen`).
    pub https: Option<HttpsReport>,
    /// Wait for deliveries after the send phase, s.
    pub drain_s: f64,
    /// The gateway's CPU (per 1k acknowledged readings), send phase and drain.
    pub cpu: CpuReport,
    /// The gateway's memory.
    pub sut_memory: Option<MemoryReport>,
}

#[derive(Default)]
struct Capture {
    tracker: Option<Arc<Tracker>>,
    run_prefix: String,
}

impl RunHooks for Capture {
    fn started(&mut self, tracker: &Arc<Tracker>, run_prefix: &str) {
        self.tracker = Some(tracker.clone());
        self.run_prefix = run_prefix.to_owned();
    }
}

fn observed(arrivals: &[Arrival], prefix: &str, t0: Instant) -> Vec<Observed> {
    arrivals
        .iter()
        .filter(|a| a.device.starts_with(prefix))
        .filter_map(|a| {
            Some(Observed {
                device: a.device.clone(),
                seq: a.seq?,
                at_ns: u64::try_from(a.at.saturating_duration_since(t0).as_nanos()).ok()?,
            })
        })
        .collect()
}

fn check(args: &UplinkE2eArgs) -> Result<(), BenchError> {
    if args.mqtt.is_none() && args.https_listen.is_none() {
        return Err(BenchError::InvalidArgs(
            "give --mqtt, --https-listen or both".into(),
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
    Ok(())
}

/// Runs one measurement.
pub fn run(args: &UplinkE2eArgs) -> Result<UplinkE2eReport, BenchError> {
    check(args)?;
    // Both ends listen before anything is sent: the readiness probe is delivered too.
    let sink = match &args.https_listen {
        Some(listen) => {
            let tls = args
                .tls_dir
                .as_deref()
                .map(crate::tls::server_config)
                .transpose()?;
            Some(HttpsSink::start(loopback_addr(listen)?, tls)?)
        }
        None => None,
    };
    let recorder = match &args.mqtt {
        Some(url) => {
            let (host, port) = mqtt_broker(url)?;
            Some(Recorder::start(RecorderConfig {
                host,
                port,
                topic: args.topic.clone(),
                client_id: format!("wardgate-bench-uplink-{}", std::process::id()),
                persistent_session: false,
                reconnect: false,
            })?)
        }
        None => None,
    };
    let load = CoapLoadArgs {
        target: args.target.clone(),
        path: "v1/readings".into(),
        device_prefix: "uplink".into(),
        msg_type: MsgType::Con,
        format: args.format,
        sockets: args.devices,
        in_flight: args.in_flight,
        rate: args.rate,
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
    let monitor = Monitor::start(args.pid, args.peer_pid.clone(), None)?;
    let mut hooks = Capture::default();
    let (coap, tracker) = run_with(&load, &mut hooks)?;

    // Drain: every acknowledged reading (and the probe) received by every uplink's far end,
    // nothing new for --drain-idle, or --drain-timeout.
    let expect = coap.ok + 1;
    let counts = || {
        let mut v = vec![];
        if let Some(r) = &recorder {
            v.push(
                r.progress()
                    .unique
                    .load(std::sync::atomic::Ordering::Relaxed),
            );
        }
        if let Some(s) = &sink {
            v.push(
                s.progress()
                    .unique
                    .load(std::sync::atomic::Ordering::Relaxed),
            );
        }
        v
    };
    let drain_started = Instant::now();
    let (mut last, mut last_change) = (counts(), Instant::now());
    while drain_started.elapsed().as_secs_f64() < args.drain_timeout {
        let now = counts();
        if now.iter().all(|&c| c >= expect) {
            break;
        }
        if now != last {
            last = now;
            last_change = Instant::now();
        } else if last_change.elapsed().as_secs_f64() >= args.drain_idle {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let drain_s = drain_started.elapsed().as_secs_f64();
    let (cpu, sut_memory) = monitor.finish(coap.ok);

    let t0 = tracker.t0();
    let prefix = format!("{}-", hooks.run_prefix);
    let sent = Sent {
        origin_ns: (0..coap.sent)
            .map(|s| tracker.origin(s).unwrap_or(u64::MAX))
            .collect(),
        acked: (0..coap.sent).map(|s| tracker.state(s) & OK != 0).collect(),
    };
    let mqtt = recorder.map(|r| {
        let rec = r.finish();
        MqttReport {
            delivery: analyse(&sent, &observed(&rec.arrivals, &prefix, t0)),
            subscriber_errors: rec.errors,
            overflow: rec.overflow,
        }
    });
    let metrics = args.metrics.as_deref().map(prom::scrape).transpose()?;
    let https = sink.map(|s| {
        let rec: SinkRecorded = s.finish();
        let delivery = analyse(&sent, &observed(&rec.arrivals, &prefix, t0));
        let start = sent.origin_ns.iter().copied().min().unwrap_or(0);
        let end = start + (delivery.span_s * 1e9) as u64;
        let rel = |b: &Batch| {
            (
                u64::try_from(b.at.saturating_duration_since(t0).as_nanos()).unwrap_or(u64::MAX),
                b.readings,
                b.wire_bytes,
            )
        };
        let batches: Vec<_> = rec.batches.iter().map(rel).collect();
        let wire: u64 = rec.batches.iter().map(|b| u64::from(b.wire_bytes)).sum();
        HttpsReport {
            batches: batch_figures(&batches, start, end, delivery.span_s),
            delivery,
            compression_ratio: if wire > 0 {
                rec.decoded_bytes as f64 / wire as f64
            } else {
                0.0
            },
            refused_requests: rec.refused_requests,
            connections: rec.connections,
            tls_failures: rec.tls_failures,
            tls_versions: rec.tls_versions.clone(),
            overflow: rec.overflow,
            gateway_requests: metrics
                .as_deref()
                .and_then(|m| prom::sum(m, "wardgate_https_uplink_requests_total", &[])),
            gateway_retries: metrics
                .as_deref()
                .and_then(|m| prom::sum(m, "wardgate_https_uplink_retries_total", &[])),
        }
    });
    Ok(UplinkE2eReport {
        tool: "uplink-e2e",
        label: args.label.clone(),
        mode: coap.mode,
        in_flight: args.in_flight,
        rate_target: args.rate,
        devices: coap.sockets,
        duration_s: coap.duration_s,
        sent: coap.sent,
        ok: coap.ok,
        busy_503: coap.busy_503,
        timeouts: coap.timeouts,
        ok_rps: coap.ok_rps,
        ack_latency: coap.ack_latency,
        mqtt,
        https,
        drain_s,
        cpu,
        sut_memory,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(device: &str, seq: u64, at_ms: u64) -> Observed {
        Observed {
            device: device.into(),
            seq,
            at_ns: at_ms * 1_000_000,
        }
    }

    #[test]
    fn delivery_is_counted_once_per_reading_with_its_first_receipt() {
        // Four readings sent at 0, 10, 20, 30 ms; #2 was not acknowledged, #3 never arrived.
        let sent = Sent {
            origin_ns: vec![0, 10_000_000, 20_000_000, 30_000_000],
            acked: vec![true, true, false, true],
        };
        let arrivals = [
            obs("a", 0, 5),
            obs("a", 1, 15),
            obs("a", 1, 40),
            obs("b", 2, 45),
        ];
        let f = analyse(&sent, &arrivals);
        assert_eq!(f.unique, 3);
        assert_eq!(f.duplicates, 1);
        assert_eq!(f.acked_missing, 1);
        assert_eq!(f.unacked_delivered, 1);
        assert!(
            (f.span_s - 0.045).abs() < 1e-9,
            "first send → last first receipt"
        );
        assert!((f.delivered_per_s - 3.0 / 0.045).abs() < 1e-6);
        let l = f.latency.expect("latency");
        assert_eq!(l.count, 3);
        assert!((l.max_ms - 25.0).abs() < 0.1, "{l:?}");
        assert_eq!(f.order_violations, 0);
    }

    #[test]
    fn a_reading_overtaking_an_older_one_of_its_device_is_an_order_violation() {
        let sent = Sent {
            origin_ns: vec![0, 1, 2],
            acked: vec![true; 3],
        };
        let f = analyse(&sent, &[obs("a", 1, 5), obs("a", 0, 6), obs("a", 2, 7)]);
        assert_eq!(f.order_violations, 1);
        assert_eq!(f.acked_missing, 0);
    }

    #[test]
    fn nothing_received_gives_zero_rates_not_a_division_by_zero() {
        let sent = Sent {
            origin_ns: vec![0, 1],
            acked: vec![true, true],
        };
        let f = analyse(&sent, &[]);
        assert_eq!((f.unique, f.acked_missing), (0, 2));
        assert_eq!(f.delivered_per_s, 0.0);
        assert!(f.latency.is_none());
        let b = batch_figures(&[], 0, 0, 0.0);
        assert_eq!((b.requests, b.mean_batch, b.requests_per_s), (0, 0.0, 0.0));
    }

    #[test]
    fn only_the_runs_requests_count_toward_batch_figures() {
        // A probe batch before the run, three batches inside, one after the window.
        let batches = [
            (5, 1, 300),
            (100, 50, 10_000),
            (200, 150, 30_000),
            (300, 100, 20_000),
            (900, 7, 1_000),
        ];
        let b = batch_figures(&batches, 100, 300, 2.0);
        assert_eq!(b.requests, 3);
        assert!((b.requests_per_s - 1.5).abs() < 1e-9);
        assert!((b.mean_batch - 100.0).abs() < 1e-9);
        assert_eq!(b.max_batch, 150);
        assert!((b.wire_bytes_per_reading - 200.0).abs() < 1e-9);
    }

    #[test]
    fn at_least_one_uplink_is_required() {
        let a = UplinkE2eArgs {
            target: "127.0.0.1:5683".into(),
            mqtt: None,
            topic: "wardgate/#".into(),
            https_listen: None,
            tls_dir: None,
            devices: 16,
            in_flight: 256,
            rate: None,
            duration: 1.0,
            format: Format::SenmlJson,
            drain_idle: 1.0,
            drain_timeout: 5.0,
            pid: None,
            peer_pid: vec![],
            metrics: None,
            label: String::new(),
        };
        assert!(matches!(check(&a), Err(BenchError::InvalidArgs(_))));
    }
}
