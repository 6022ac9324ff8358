//! A QoS 1 MQTT subscriber that records every normalized reading it receives (device, class,
//! `seq` record, arrival instant) for scenarios that analyse deliveries after the run: which
//! broker a reading reached, in what order per device, how late. Unlike [`crate::mqtt_sink`] it
//! needs no run bookkeeping to start, so it can be subscribed before anything is sent (the
//! readiness probe included), and it can outlive a broker restart.
//!
//! Memory is bounded by [`MAX_ARRIVALS`]; past it arrivals are counted, not kept.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde::{Deserialize, Serialize};

use crate::error::BenchError;
use crate::payload::seq_of;

/// Most arrivals one recorder keeps (≈ 100 bytes each).
pub const MAX_ARRIVALS: usize = 2_000_000;
/// Longest wait for CONNACK + SUBACK at start.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between reconnect attempts of a recorder that outlives its broker.
const RECONNECT_PAUSE: Duration = Duration::from_millis(20);

/// The message class of a reading, as the gateway published it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    /// `alarm`.
    Alarm,
    /// `vital`.
    Vital,
    /// Any other class.
    Other,
}

impl Class {
    fn parse(s: &str) -> Class {
        match s {
            "alarm" => Class::Alarm,
            "vital" => Class::Vital,
            _ => Class::Other,
        }
    }
}

/// One reading as the subscriber saw it.
#[derive(Debug, Clone)]
pub struct Arrival {
    /// The `device` field.
    pub device: String,
    /// The `class` field.
    pub class: Class,
    /// The harness's `seq` record, when the reading has one.
    pub seq: Option<u64>,
    /// When it was received.
    pub at: Instant,
}

/// Where to subscribe and how to behave when the broker goes away.
#[derive(Debug, Clone)]
pub struct RecorderConfig {
    /// Broker host (loopback, checked by the caller).
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Topic filter.
    pub topic: String,
    /// MQTT client id.
    pub client_id: String,
    /// Connect with clean session = false, so a broker that keeps sessions queues what arrives
    /// while this subscriber is away (across a broker restart with persistence).
    pub persistent_session: bool,
    /// Reconnect after the connection fails (for a broker that is restarted); otherwise the
    /// first failure ends the recording (for a broker that is killed for good).
    pub reconnect: bool,
}

/// Live counters, readable while the recorder runs.
#[derive(Debug, Default)]
pub struct Progress {
    /// Distinct (device, seq) readings of class `vital`.
    pub unique_vitals: AtomicU64,
    /// Distinct (device, seq) readings of class `alarm`.
    pub unique_alarms: AtomicU64,
    /// Distinct (device, seq) readings of any class.
    pub unique: AtomicU64,
    /// Successful CONNACKs.
    pub connects: AtomicU64,
    /// Reconnections with a persistent session on which the broker had no session for us (we
    /// subscribe again; what it received in between is lost to us).
    pub sessions_lost: AtomicU64,
}

/// What a recorder saw, in arrival order.
#[derive(Debug, Default)]
pub struct Recorded {
    /// Every reading, in arrival order (duplicates included).
    pub arrivals: Vec<Arrival>,
    /// Arrivals past [`MAX_ARRIVALS`], counted only.
    pub overflow: u64,
    /// Messages that are not normalized readings (status topics, foreign payloads).
    pub other_messages: u64,
    /// Connection failures seen (the first ones, at most 8).
    pub errors: Vec<String>,
    /// Successful CONNACKs.
    pub connects: u64,
}

/// A running recorder.
#[derive(Debug)]
pub struct Recorder {
    stop: Arc<AtomicBool>,
    progress: Arc<Progress>,
    thread: Option<JoinHandle<Recorded>>,
}

impl Recorder {
    /// Connects, subscribes with QoS 1 and returns once the subscription is granted.
    pub fn start(cfg: RecorderConfig) -> Result<Self, BenchError> {
        let stop = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(Progress::default());
        let (ready_tx, ready_rx) = mpsc::sync_channel::<Result<(), String>>(1);
        let thread = {
            let stop = stop.clone();
            let progress = progress.clone();
            std::thread::Builder::new()
                .name("mqtt-recorder".into())
                .spawn(move || record(cfg, &stop, &progress, ready_tx))
                .map_err(|e| BenchError::io("spawn mqtt recorder", e))?
        };
        let r = Recorder {
            stop,
            progress,
            thread: Some(thread),
        };
        match ready_rx.recv_timeout(SUBSCRIBE_TIMEOUT + Duration::from_secs(1)) {
            Ok(Ok(())) => Ok(r),
            Ok(Err(e)) => Err(BenchError::Mqtt(e)),
            Err(_) => Err(BenchError::Mqtt("no SUBACK from the broker".into())),
        }
    }

    /// The live counters.
    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// Stops the subscriber and returns what it recorded.
    pub fn finish(mut self) -> Recorded {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[derive(Deserialize)]
struct Normalized {
    device: String,
    class: String,
    #[serde(default)]
    records: Vec<Record>,
}

#[derive(Deserialize)]
struct Record {
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    v: Option<f64>,
}

/// Device, class and `seq` of a normalized reading; `None` for anything else.
pub fn parse_reading(payload: &[u8]) -> Option<(String, Class, Option<u64>)> {
    if payload.first() != Some(&b'{') {
        return None;
    }
    let doc: Normalized = serde_json::from_slice(payload).ok()?;
    let seq = seq_of(doc.records.into_iter().map(|r| (r.n, r.v)));
    Some((doc.device, Class::parse(&doc.class), seq))
}

/// Device, class and `seq` of every reading of a batch (a JSON array of normalized readings, as
/// the HTTPS uplink POSTs it); `None` when the body is not such an array.
pub fn parse_batch(body: &[u8]) -> Option<Vec<(String, Class, Option<u64>)>> {
    let docs: Vec<Normalized> = serde_json::from_slice(body).ok()?;
    Some(
        docs.into_iter()
            .map(|d| {
                let seq = seq_of(d.records.into_iter().map(|r| (r.n, r.v)));
                (d.device, Class::parse(&d.class), seq)
            })
            .collect(),
    )
}

/// Per-device order violations in `(device, seq)` pairs given in arrival order: a first arrival
/// whose `seq` is lower than one its device already delivered. Redeliveries of a reading already
/// seen (at least once) are not violations; `seq` is the device's send order.
pub fn order_violations<'a>(arrivals: impl IntoIterator<Item = (&'a str, u64)>) -> u64 {
    let mut seen: HashSet<(&str, u64)> = HashSet::new();
    let mut highest: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
    let mut violations = 0;
    for (device, seq) in arrivals {
        if !seen.insert((device, seq)) {
            continue;
        }
        let top = highest.entry(device).or_insert(seq);
        if seq < *top {
            violations += 1;
        } else {
            *top = seq;
        }
    }
    violations
}

fn record(
    cfg: RecorderConfig,
    stop: &AtomicBool,
    progress: &Progress,
    ready: mpsc::SyncSender<Result<(), String>>,
) -> Recorded {
    let mut out = Recorded::default();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.try_send(Err(format!("runtime: {e}")));
            return out;
        }
    };
    let mut seen: HashSet<(String, u64)> = HashSet::new();
    rt.block_on(async {
        let mut opts = MqttOptions::new(cfg.client_id.clone(), cfg.host.clone(), cfg.port);
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_clean_session(!cfg.persistent_session);
        opts.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = AsyncClient::new(opts, 64);
        if let Err(e) = client.subscribe(cfg.topic.clone(), QoS::AtLeastOnce).await {
            let _ = ready.try_send(Err(format!("subscribe: {e}")));
            return;
        }
        let deadline = Instant::now() + SUBSCRIBE_TIMEOUT;
        let mut subscribed = false;
        while !stop.load(Ordering::Relaxed) {
            let ev = match tokio::time::timeout(Duration::from_millis(50), eventloop.poll()).await {
                Err(_) => {
                    if !subscribed && Instant::now() > deadline {
                        let _ = ready.try_send(Err("timed out waiting for SUBACK".into()));
                        return;
                    }
                    continue;
                }
                Ok(Err(e)) => {
                    if !subscribed {
                        let _ = ready.try_send(Err(format!("connect: {e}")));
                        return;
                    }
                    if out.errors.len() < 8 {
                        out.errors.push(e.to_string());
                    }
                    if !cfg.reconnect {
                        return;
                    }
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                    continue;
                }
                Ok(Ok(ev)) => ev,
            };
            match ev {
                Event::Incoming(Packet::ConnAck(c)) => {
                    out.connects += 1;
                    progress.connects.fetch_add(1, Ordering::Relaxed);
                    if subscribed && cfg.persistent_session && !c.session_present {
                        progress.sessions_lost.fetch_add(1, Ordering::Relaxed);
                        let _ = client.try_subscribe(cfg.topic.clone(), QoS::AtLeastOnce);
                    }
                }
                Event::Incoming(Packet::SubAck(_)) if !subscribed => {
                    subscribed = true;
                    let _ = ready.try_send(Ok(()));
                }
                Event::Incoming(Packet::Publish(p)) => {
                    let at = Instant::now();
                    let Some((device, class, seq)) = parse_reading(&p.payload) else {
                        out.other_messages += 1;
                        continue;
                    };
                    if let Some(s) = seq
                        && seen.insert((device.clone(), s))
                    {
                        progress.unique.fetch_add(1, Ordering::Relaxed);
                        match class {
                            Class::Vital => progress.unique_vitals.fetch_add(1, Ordering::Relaxed),
                            Class::Alarm => progress.unique_alarms.fetch_add(1, Ordering::Relaxed),
                            Class::Other => 0,
                        };
                    }
                    if out.arrivals.len() < MAX_ARRIVALS {
                        out.arrivals.push(Arrival {
                            device,
                            class,
                            seq,
                            at,
                        });
                    } else {
                        out.overflow += 1;
                    }
                }
                _ => {}
            }
        }
        let _ = client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_millis(100), eventloop.poll()).await;
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_normalized_reading_gives_its_device_class_and_seq() {
        let doc = br#"{"schema":"wardgate.reading/1","id":"01J","device":"bed-1","class":"alarm","records":[{"n":"urn:dev:bed-1:spo2","v":81},{"n":"urn:dev:bed-1:seq","v":7}]}"#;
        assert_eq!(
            parse_reading(doc),
            Some(("bed-1".into(), Class::Alarm, Some(7)))
        );
    }

    #[test]
    fn a_reading_overtaken_by_a_later_one_of_its_device_is_a_violation() {
        let arrivals = [("a", 1), ("b", 5), ("a", 3), ("a", 2), ("b", 6), ("a", 4)];
        assert_eq!(order_violations(arrivals), 1, "a/2 after a/3");
    }

    #[test]
    fn redeliveries_and_interleaved_devices_are_not_violations() {
        let arrivals = [
            ("a", 1),
            ("a", 2),
            ("a", 1),
            ("b", 0),
            ("a", 2),
            ("a", 3),
            ("b", 1),
        ];
        assert_eq!(order_violations(arrivals), 0);
        assert_eq!(order_violations([]), 0);
    }

    #[test]
    fn a_batch_gives_every_reading_in_order() {
        let body = br#"[{"id":"a","device":"d-1","class":"vital","records":[{"n":"urn:dev:d-1:seq","v":3}]},
            {"id":"b","device":"d-2","class":"telemetry","records":[{"n":"hr","v":60}]}]"#;
        assert_eq!(
            parse_batch(body),
            Some(vec![
                ("d-1".into(), Class::Vital, Some(3)),
                ("d-2".into(), Class::Other, None)
            ])
        );
        assert_eq!(parse_batch(b"[]"), Some(vec![]));
        assert_eq!(parse_batch(br#"{"device":"x","class":"vital"}"#), None);
        assert_eq!(parse_batch(b"[{\"device\""), None);
    }

    #[test]
    fn status_messages_and_foreign_payloads_are_not_readings() {
        assert_eq!(parse_reading(b"online"), None);
        assert_eq!(parse_reading(b"{\"device\":\"x\"}"), None);
        assert_eq!(
            parse_reading(br#"{"device":"x","class":"bulk","records":[]}"#),
            Some(("x".into(), Class::Other, None))
        );
    }
}
