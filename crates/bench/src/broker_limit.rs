//! `broker-limit`: the broker ceiling ("limit-broker"). A QoS 1 publisher and a QoS 1 subscriber
//! in this process, Mosquitto between them, messages the size of wardgate's normalized readings,
//! at most `--in-flight` published-but-not-yet-received. What any gateway that forwards every
//! reading through this broker could reach at most.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rumqttc::{AsyncClient, MqttOptions, QoS};
use serde::Serialize;

use crate::error::BenchError;
use crate::mqtt_sink::{Drain, E2eReport, MqttSink, RunTotals, SinkConfig};
use crate::payload;
use crate::procfs::{CpuReport, MemoryReport, Monitor};
use crate::target::mqtt_broker;
use crate::tracker::{MAX_COUNT, Tracker};

/// Arguments of `broker-limit`.
#[derive(Debug, Clone, clap::Args)]
pub struct BrokerLimitArgs {
    /// Broker URL, mqtt://host:port (loopback only).
    #[arg(long)]
    pub mqtt: String,
    /// Messages published but not yet received, at most.
    #[arg(long, default_value_t = 256)]
    pub in_flight: usize,
    /// Publish phase, seconds (at most 600).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Stop after this many messages.
    #[arg(long)]
    pub count: Option<u64>,
    /// Longest wait for the last messages, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub drain_timeout: f64,
    /// The broker's pid: sample its CPU and memory.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Free-form label copied into the report.
    #[arg(long, default_value = "")]
    pub label: String,
}

/// The JSON object printed for one run.
#[derive(Debug, Clone, Serialize)]
pub struct BrokerLimitReport {
    /// Always `broker-limit`.
    pub tool: &'static str,
    /// `--label`.
    pub label: String,
    /// Broker address.
    pub target: String,
    /// In-flight window.
    pub in_flight: usize,
    /// Message size, bytes.
    pub payload_bytes: usize,
    /// Publish phase, seconds.
    pub duration_s: f64,
    /// Messages published.
    pub sent: u64,
    /// Distinct messages received per second of publish phase.
    pub throughput_rps: f64,
    /// Publish-to-receive results (latency = pub→sub).
    pub e2e: E2eReport,
    /// CPU accounting (per 1k = per 1000 delivered messages; the SUT is the broker).
    pub cpu: CpuReport,
    /// Broker memory.
    pub sut_memory: Option<MemoryReport>,
}

/// Runs one broker ceiling measurement.
pub fn run(args: &BrokerLimitArgs) -> Result<BrokerLimitReport, BenchError> {
    let (host, port) = mqtt_broker(&args.mqtt)?;
    let duration_ok = args.duration > 0.0 && args.duration <= 600.0;
    if !(duration_ok && (0.0..=600.0).contains(&args.drain_timeout)) {
        return Err(BenchError::InvalidArgs(
            "--duration must be in (0, 600] and --drain-timeout in [0, 600] seconds".into(),
        ));
    }
    if args.in_flight == 0 || args.in_flight > usize::from(u16::MAX) {
        return Err(BenchError::InvalidArgs(
            "--in-flight must be in [1, 65535]".into(),
        ));
    }
    let by_time = (250_000.0 * args.duration).ceil() as u64;
    let count = args.count.unwrap_or(by_time).min(by_time).min(MAX_COUNT);
    let nonce = format!(
        "{:x}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
            & 0xFF_FFFF_FFFF
    );
    let device = format!("limit-{nonce}");
    let topic = format!("wardgate/bench/{device}/vital");
    let tracker = Arc::new(Tracker::new(count));
    let sink = MqttSink::start(
        SinkConfig {
            host: host.clone(),
            port,
            topic: topic.clone(),
            topic_must_contain: device.clone(),
            client_id: format!("wardgate-bench-limit-sub-{nonce}"),
        },
        tracker.clone(),
    )?;
    let monitor = Monitor::start(args.pid, vec![], None)?;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| BenchError::io("tokio runtime", e))?;
    let window = args.in_flight as u64;
    let duration = Duration::from_secs_f64(args.duration);
    let base_time = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let (sent, send_phase, payload_bytes) = rt.block_on(async {
        let mut opts = MqttOptions::new(
            format!("wardgate-bench-limit-pub-{nonce}"),
            host.clone(),
            port,
        );
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_clean_session(true);
        opts.set_inflight(args.in_flight as u16);
        opts.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = AsyncClient::new(opts, args.in_flight.max(16));
        let driver = tokio::spawn(async move {
            loop {
                if let Err(e) = eventloop.poll().await {
                    return Some(e.to_string());
                }
            }
        });
        let mut buf = Vec::with_capacity(512);
        let started = Instant::now();
        let mut seq = 0u64;
        let mut size = 0;
        while seq < count && started.elapsed() < duration {
            while seq.saturating_sub(tracker.delivered()) >= window {
                if started.elapsed() >= duration {
                    break;
                }
                let _ = tokio::time::timeout(
                    Duration::from_millis(5),
                    tracker.delivered_notify.notified(),
                )
                .await;
            }
            if started.elapsed() >= duration {
                break;
            }
            payload::normalized_json(
                &mut buf,
                &device,
                base_time + started.elapsed().as_secs_f64(),
                seq,
            );
            size = buf.len();
            tracker.set_origin(seq, tracker.now_ns());
            if client
                .publish(topic.clone(), QoS::AtLeastOnce, false, buf.clone())
                .await
                .is_err()
            {
                break;
            }
            seq += 1;
        }
        let phase = started.elapsed();
        // Keep the publisher's event loop running until the stragglers are in.
        let drain_until = Instant::now() + Duration::from_secs_f64(args.drain_timeout);
        while tracker.delivered() < seq && Instant::now() < drain_until && !driver.is_finished() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let _ = client.disconnect().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        driver.abort();
        (seq, phase, size)
    });
    let e2e = sink.finish(
        &tracker,
        RunTotals {
            sent,
            acked_ok: sent,
            send_phase,
        },
        Drain {
            expect: sent,
            idle: Duration::from_millis(500),
            max: Duration::from_secs(1),
        },
    );
    let (cpu, sut_memory) = monitor.finish(e2e.unique);
    let secs = send_phase.as_secs_f64().max(1e-9);
    Ok(BrokerLimitReport {
        tool: "broker-limit",
        label: args.label.clone(),
        target: format!("{host}:{port}"),
        in_flight: args.in_flight,
        payload_bytes,
        duration_s: secs,
        sent,
        throughput_rps: e2e.unique as f64 / secs,
        e2e,
        cpu,
        sut_memory,
    })
}
