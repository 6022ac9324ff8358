//! The end-to-end observer: a QoS 1 MQTT subscriber that matches every delivered reading to its
//! send time by the `seq` record, and counts duplicates and strangers. It runs on its own thread
//! with a single-threaded tokio runtime so the load generator's pacing is not disturbed by it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde::Serialize;

use crate::error::BenchError;
use crate::payload::extract_seq;
use crate::stats::{Latency, LatencySummary};
use crate::tracker::{DELIVERED, Tracker};

/// Where and what to subscribe to.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    /// Broker host (loopback, checked by the caller).
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Topic filter.
    pub topic: String,
    /// Only messages whose topic contains this string belong to this run (the run's device-id
    /// prefix); others are counted as foreign and ignored.
    pub topic_must_contain: String,
    /// MQTT client id.
    pub client_id: String,
}

/// End-to-end results.
#[derive(Debug, Clone, Serialize, Default)]
pub struct E2eReport {
    /// Messages received that belong to this run (including duplicates).
    pub received: u64,
    /// Distinct readings delivered.
    pub unique: u64,
    /// Deliveries of a reading already delivered.
    pub duplicates: u64,
    /// Acknowledged (2.xx) readings never delivered.
    pub lost_acked: u64,
    /// Sent readings never delivered (whatever their CoAP answer).
    pub undelivered: u64,
    /// unique / sent.
    pub delivery_ratio: f64,
    /// Messages on the subscription that are not this run's or carry no usable seq.
    pub foreign: u64,
    /// Distinct deliveries per second over the send phase plus drain.
    pub delivered_per_s: f64,
    /// Latency from the request's origin (scheduled or send time) to delivery on MQTT.
    pub latency: Option<LatencySummary>,
    /// Time spent waiting for stragglers after the last request.
    pub drain_s: f64,
    /// Subscriber error, if the connection failed during the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Default)]
struct SinkTotals {
    received: u64,
    duplicates: u64,
    foreign: u64,
    latency: Latency,
    error: Option<String>,
}

/// What the sending side did, for the loss accounting.
#[derive(Debug, Clone, Copy)]
pub struct RunTotals {
    /// Requests sent (sequence numbers `0..sent`).
    pub sent: u64,
    /// Requests answered with 2.xx.
    pub acked_ok: u64,
    /// Length of the send phase.
    pub send_phase: Duration,
}

/// How long to wait for stragglers.
#[derive(Debug, Clone, Copy)]
pub struct Drain {
    /// Stop as soon as this many distinct readings arrived.
    pub expect: u64,
    /// Stop when nothing new arrived for this long.
    pub idle: Duration,
    /// Never wait longer than this.
    pub max: Duration,
}

/// A running subscriber.
#[derive(Debug)]
pub struct MqttSink {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<SinkTotals>>,
}

/// Longest wait for CONNACK + SUBACK.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);

impl MqttSink {
    /// Connects, subscribes with QoS 1 and returns once the broker has granted the
    /// subscription, so nothing published afterwards can be missed.
    pub fn start(cfg: SinkConfig, tracker: Arc<Tracker>) -> Result<Self, BenchError> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::sync_channel::<Result<(), String>>(1);
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("mqtt-sink".into())
            .spawn(move || run(cfg, tracker, stop2, ready_tx))
            .map_err(|e| BenchError::io("spawn mqtt subscriber", e))?;
        match ready_rx.recv_timeout(SUBSCRIBE_TIMEOUT + Duration::from_secs(1)) {
            Ok(Ok(())) => Ok(MqttSink {
                stop,
                thread: Some(thread),
            }),
            Ok(Err(e)) => {
                stop.store(true, Ordering::Relaxed);
                let _ = thread.join();
                Err(BenchError::Mqtt(e))
            }
            Err(_) => {
                stop.store(true, Ordering::Relaxed);
                let _ = thread.join();
                Err(BenchError::Mqtt("no SUBACK from the broker".into()))
            }
        }
    }

    /// Waits until `drain.expect` distinct readings have arrived, no new one arrived for
    /// `drain.idle`, or `drain.max` passed; then stops the subscriber and reports.
    pub fn finish(mut self, tracker: &Tracker, run: RunTotals, drain: Drain) -> E2eReport {
        let RunTotals {
            sent,
            acked_ok,
            send_phase,
        } = run;
        let Drain { expect, idle, max } = drain;
        let start = Instant::now();
        let mut last = tracker.delivered();
        let mut last_change = Instant::now();
        while tracker.delivered() < expect && start.elapsed() < max {
            std::thread::sleep(Duration::from_millis(5));
            let now = tracker.delivered();
            if now != last {
                last = now;
                last_change = Instant::now();
            } else if last_change.elapsed() >= idle {
                break;
            }
        }
        let drain = start.elapsed();
        self.stop.store(true, Ordering::Relaxed);
        let totals = self
            .thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        let unique = tracker.count_with(sent, DELIVERED);
        let lost_acked =
            acked_ok.saturating_sub(tracker.count_with(sent, DELIVERED | crate::tracker::OK));
        let span = send_phase + drain;
        E2eReport {
            received: totals.received,
            unique,
            duplicates: totals.duplicates,
            lost_acked,
            undelivered: sent.saturating_sub(unique),
            delivery_ratio: if sent > 0 {
                unique as f64 / sent as f64
            } else {
                0.0
            },
            foreign: totals.foreign,
            delivered_per_s: if span.as_secs_f64() > 0.0 {
                unique as f64 / span.as_secs_f64()
            } else {
                0.0
            },
            latency: totals.latency.summary(),
            drain_s: drain.as_secs_f64(),
            error: totals.error,
        }
    }
}

impl Drop for MqttSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(
    cfg: SinkConfig,
    tracker: Arc<Tracker>,
    stop: Arc<AtomicBool>,
    ready: mpsc::SyncSender<Result<(), String>>,
) -> SinkTotals {
    let mut totals = SinkTotals::default();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.try_send(Err(format!("runtime: {e}")));
            return totals;
        }
    };
    rt.block_on(async {
        let mut opts = MqttOptions::new(cfg.client_id.clone(), cfg.host.clone(), cfg.port);
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_clean_session(true);
        opts.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = AsyncClient::new(opts, 64);
        if let Err(e) = client.subscribe(cfg.topic.clone(), QoS::AtLeastOnce).await {
            let _ = ready.try_send(Err(format!("subscribe: {e}")));
            return;
        }
        let deadline = Instant::now() + SUBSCRIBE_TIMEOUT;
        let mut subscribed = false;
        while !stop.load(Ordering::Relaxed) {
            let ev = tokio::time::timeout(Duration::from_millis(50), eventloop.poll()).await;
            let ev = match ev {
                Err(_) => {
                    if !subscribed && Instant::now() > deadline {
                        let _ = ready.try_send(Err("timed out waiting for SUBACK".into()));
                        return;
                    }
                    continue;
                }
                Ok(Err(e)) => {
                    if subscribed {
                        totals.error = Some(e.to_string());
                    } else {
                        let _ = ready.try_send(Err(format!("connect: {e}")));
                    }
                    return;
                }
                Ok(Ok(ev)) => ev,
            };
            match ev {
                Event::Incoming(Packet::SubAck(_)) if !subscribed => {
                    subscribed = true;
                    let _ = ready.try_send(Ok(()));
                }
                Event::Incoming(Packet::Publish(p)) => {
                    let now = tracker.now_ns();
                    if !p.topic.contains(&cfg.topic_must_contain) {
                        totals.foreign += 1;
                        continue;
                    }
                    let Some(seq) = extract_seq(&p.payload).filter(|&s| s < tracker.capacity())
                    else {
                        totals.foreign += 1;
                        continue;
                    };
                    totals.received += 1;
                    match tracker.mark(seq, DELIVERED) {
                        Some(prev) if prev & DELIVERED != 0 => totals.duplicates += 1,
                        Some(_) => {
                            if let Some(origin) = tracker.origin(seq) {
                                totals.latency.record_ns(now.saturating_sub(origin));
                            }
                        }
                        None => totals.foreign += 1,
                    }
                }
                _ => {}
            }
        }
        let _ = client.disconnect().await;
        // Let the DISCONNECT go out; bounded.
        let _ = tokio::time::timeout(Duration::from_millis(100), eventloop.poll()).await;
    });
    totals
}
