//! Test harness: an in-memory outbox cursor (the store's test double), the uplink under test, an
//! async rumqttc subscriber, and small helpers; the real Mosquitto and the PKI come from
//! `wardgate-testkit`. Every file in `tests/` uses a different
//! subset, hence the `dead_code` allowance.
#![allow(dead_code, unused_imports, unreachable_pub)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use prometheus_client::registry::Registry;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use wardgate_core::health::ComponentKind;
use wardgate_core::{
    Delivery, Health, HealthReporter, MessageClass, NackReason, OutboxCursor, OutboxError,
    Protocol, Reading, Record,
};
use wardgate_mqtt::{MqttMetrics, MqttUplink, MqttUplinkConfig};
pub use wardgate_testkit::CapturedLog;
pub use wardgate_testkit::{Mosquitto, Pki, free_tcp_port as free_port};

/// Upper bound for anything a test waits for; reaching it is a failure, never a pass.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Polls `cond` every 10 ms until it holds; panics with `what` after [`PATIENCE`].
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !cond() {
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs `fut` with [`PATIENCE`] as the limit.
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for: {what}"))
}

// ---------------------------------------------------------------------------------------------
// The outbox test double

#[derive(Debug, Default)]
pub struct OutboxState {
    pub items: Vec<Delivery>,
    pub acked: BTreeSet<u64>,
    /// Every ack call's seqs, in call order (duplicates kept).
    pub ack_log: Vec<u64>,
    /// Index of the next delivery to hand out.
    pos: usize,
    /// While false, `next` hands out nothing (lets a test order events).
    pub gate_open: bool,
    /// Every handed-out seq, in order (repeats after a rewind).
    pub handed_out: Vec<u64>,
    pub rewinds: u32,
    /// Every nack call's seqs with their reason, in call order.
    pub nacks: Vec<(u64, NackReason)>,
    /// Every release call's seqs, in call order. One uplink only: nobody can take them, so
    /// they stay owed and are handed out again, as the store does.
    pub releases: Vec<u64>,
}

impl OutboxState {
    /// Moves the position back to `seq` (if it was handed out and is not acknowledged), so it
    /// and every unacknowledged delivery after it are handed out again.
    fn back_to(&mut self, seqs: &[u64]) {
        let lowest = seqs
            .iter()
            .copied()
            .filter(|s| !self.acked.contains(s) && self.handed_out.contains(s))
            .min();
        if let Some(seq) = lowest {
            self.pos = self.pos.min((seq - 1) as usize);
        }
    }
}

/// An in-memory outbox with one cursor: a Vec of deliveries, acks tracked, rewind to the oldest
/// unacknowledged, nack and release back to the lowest seq handed back. `next` is cancel-safe: it changes state only when it returns.
#[derive(Debug, Clone)]
pub struct MemOutbox {
    state: Arc<Mutex<OutboxState>>,
    changed: Arc<Notify>,
}

impl Default for MemOutbox {
    fn default() -> Self {
        MemOutbox {
            state: Arc::new(Mutex::new(OutboxState {
                gate_open: true,
                ..OutboxState::default()
            })),
            changed: Arc::new(Notify::new()),
        }
    }
}

impl MemOutbox {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a reading for `device` and returns its seq (1-based).
    pub fn push(&self, device: &str, class: MessageClass, value: f64) -> u64 {
        let reading = Reading::new(
            "ward-test",
            device,
            Protocol::Coap,
            class,
            SystemTime::now(),
            vec![Record {
                n: "spo2".into(),
                u: Some("%".into()),
                v: Some(value),
                t: 1_763_759_045.1,
                ..Record::default()
            }],
        )
        .encode();
        let seq = {
            let mut s = self.state.lock().unwrap();
            let seq = s.items.len() as u64 + 1;
            s.items.push(Delivery {
                seq,
                id: reading.id,
                device: reading.device,
                class: reading.class,
                json: reading.json,
                attempts: 0,
            });
            seq
        };
        self.changed.notify_waiters();
        seq
    }

    pub fn cursor(&self) -> MemCursor {
        MemCursor {
            outbox: self.clone(),
        }
    }

    pub fn with<T>(&self, f: impl FnOnce(&OutboxState) -> T) -> T {
        f(&self.state.lock().unwrap())
    }

    pub fn acked(&self) -> BTreeSet<u64> {
        self.with(|s| s.acked.clone())
    }

    pub fn handed_out(&self) -> Vec<u64> {
        self.with(|s| s.handed_out.clone())
    }

    pub fn delivery(&self, seq: u64) -> Delivery {
        self.with(|s| s.items[(seq - 1) as usize].clone())
    }

    pub fn all(&self) -> Vec<Delivery> {
        self.with(|s| s.items.clone())
    }

    pub fn set_gate(&self, open: bool) {
        self.state.lock().unwrap().gate_open = open;
        self.changed.notify_waiters();
    }

    pub async fn wait_all_acked(&self) {
        let o = self.clone();
        eventually("every reading acked", move || {
            o.with(|s| s.acked.len() == s.items.len())
        })
        .await;
    }
}

#[derive(Debug)]
pub struct MemCursor {
    outbox: MemOutbox,
}

impl OutboxCursor for MemCursor {
    fn next(
        &mut self,
        max: usize,
    ) -> impl Future<Output = Result<Vec<Delivery>, OutboxError>> + Send {
        let outbox = self.outbox.clone();
        async move {
            loop {
                let notified = outbox.changed.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                {
                    let mut s = outbox.state.lock().unwrap();
                    if s.gate_open && max > 0 {
                        let mut batch = Vec::new();
                        while s.pos < s.items.len() && batch.len() < max {
                            let i = s.pos;
                            s.pos += 1;
                            if s.acked.contains(&s.items[i].seq) {
                                continue;
                            }
                            let d = s.items[i].clone();
                            s.items[i].attempts += 1;
                            s.handed_out.push(d.seq);
                            batch.push(d);
                        }
                        if !batch.is_empty() {
                            return Ok(batch);
                        }
                    }
                }
                notified.await;
            }
        }
    }

    fn ack(&mut self, seqs: &[u64]) {
        let mut s = self.outbox.state.lock().unwrap();
        s.acked.extend(seqs.iter().copied());
        s.ack_log.extend_from_slice(seqs);
    }

    fn rewind(&mut self) {
        let mut s = self.outbox.state.lock().unwrap();
        let acked = s.acked.clone();
        s.pos = s
            .items
            .iter()
            .position(|d| !acked.contains(&d.seq))
            .unwrap_or(s.items.len());
        s.rewinds += 1;
    }

    fn nack(&mut self, seqs: &[u64], why: NackReason) {
        {
            let mut s = self.outbox.state.lock().unwrap();
            s.nacks.extend(seqs.iter().map(|q| (*q, why)));
            s.back_to(seqs);
        }
        self.outbox.changed.notify_waiters();
    }

    fn release(&mut self, seqs: &[u64]) {
        {
            let mut s = self.outbox.state.lock().unwrap();
            s.releases.extend_from_slice(seqs);
            s.back_to(seqs);
        }
        self.outbox.changed.notify_waiters();
    }
}

// ---------------------------------------------------------------------------------------------
// The uplink under test

/// A config from JSON, with fast reconnects for tests.
pub fn config(url: &str, version: &str, extra: serde_json::Value) -> MqttUplinkConfig {
    let mut v = serde_json::json!({
        "name": "test",
        "url": url,
        "version": version,
        "reconnect_min": "50ms",
        "reconnect_max": "400ms",
        "keep_alive": "5s",
    });
    if let (Some(obj), Some(extra)) = (v.as_object_mut(), extra.as_object()) {
        for (k, val) in extra {
            obj.insert(k.clone(), val.clone());
        }
    }
    serde_json::from_value(v).expect("valid uplink config")
}

/// A running uplink with everything a test inspects.
pub struct Running {
    pub outbox: MemOutbox,
    pub health: Health,
    pub registry: Arc<Mutex<Registry>>,
    pub shutdown: wardgate_core::Shutdown,
    pub task: JoinHandle<Result<(), wardgate_mqtt::MqttError>>,
    pub status_topic: String,
}

impl Running {
    pub fn check(&self) -> wardgate_core::health::Check {
        self.health.readiness().checks["uplink.test"].clone()
    }

    pub async fn wait_ready(&self) {
        let h = self.health.clone();
        eventually("uplink ready", move || {
            h.readiness().checks["uplink.test"].ready
        })
        .await;
    }

    /// Graceful stop: cancels the shutdown token and waits for `run` to return.
    pub async fn stop(&mut self) -> Result<(), wardgate_mqtt::MqttError> {
        self.shutdown.cancel();
        within("uplink stops", &mut self.task)
            .await
            .expect("uplink task panicked")
    }

    pub fn metrics_text(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry.lock().unwrap())
            .expect("encode metrics");
        out
    }

    /// The value of one sample line, e.g. `wardgate_mqtt_connected{uplink="test"}`.
    pub fn metric(&self, sample: &str) -> Option<f64> {
        self.metrics_text().lines().find_map(|l| {
            l.strip_prefix(sample)
                .and_then(|rest| rest.trim().parse::<f64>().ok())
        })
    }
}

pub fn start(cfg: MqttUplinkConfig, outbox: &MemOutbox) -> Running {
    // Logs show up for failing tests only (the test writer is captured).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "wardgate_mqtt=debug,rumqttc=info".into()),
        )
        .with_test_writer()
        .try_init();
    let health = Health::new();
    let reporter: HealthReporter = health.reporter("uplink.test", ComponentKind::Uplink);
    let mut registry = Registry::default();
    let metrics = MqttMetrics::register(&mut registry);
    let uplink = MqttUplink::new(cfg, "ward-test", metrics, reporter).expect("uplink builds");
    let status_topic = uplink.status_topic().to_owned();
    let shutdown = wardgate_core::Shutdown::new();
    let task = tokio::spawn(uplink.run(outbox.cursor(), shutdown.clone()));
    Running {
        outbox: outbox.clone(),
        health,
        registry: Arc::new(Mutex::new(registry)),
        shutdown,
        task,
        status_topic,
    }
}

// ---------------------------------------------------------------------------------------------
// A subscriber inside the test

#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    /// The subscription is active (after every (re)connect).
    Subscribed,
    Message {
        topic: String,
        payload: Bytes,
        retain: bool,
    },
}

/// A rumqttc (MQTT 5) subscriber that reconnects and resubscribes by itself.
pub struct Subscriber {
    pub rx: mpsc::UnboundedReceiver<Seen>,
    task: JoinHandle<()>,
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Subscriber {
    pub async fn connect(port: u16, filter: &str) -> Subscriber {
        use rumqttc::v5::mqttbytes::QoS;
        use rumqttc::v5::mqttbytes::v5::Packet;
        use rumqttc::v5::{AsyncClient, Event, MqttOptions};
        let id = format!("test-sub-{}", free_port());
        let mut opts = MqttOptions::new(id, "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(5));
        let (client, mut eventloop) = AsyncClient::new(opts, 16);
        let (tx, rx) = mpsc::unbounded_channel();
        let filter = filter.to_owned();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = client.try_subscribe(filter.clone(), QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = tx.send(Seen::Subscribed);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = tx.send(Seen::Message {
                            topic: String::from_utf8_lossy(&p.topic).into_owned(),
                            payload: p.payload,
                            retain: p.retain,
                        });
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        let mut s = Subscriber { rx, task };
        s.wait_subscribed().await;
        s
    }

    pub async fn wait_subscribed(&mut self) {
        self.next_matching("subscription", |m| *m == Seen::Subscribed)
            .await;
    }

    /// Skips messages until one matches.
    pub async fn next_matching(&mut self, what: &str, f: impl Fn(&Seen) -> bool) -> Seen {
        within(what, async {
            loop {
                let m = self.rx.recv().await.expect("subscriber alive");
                if f(&m) {
                    return m;
                }
            }
        })
        .await
    }

    /// Waits for `payload` on `topic`; returns its retain flag.
    pub async fn wait_payload(&mut self, topic: &str, payload: &[u8]) -> bool {
        match self
            .next_matching(&format!("{payload:?} on {topic}"), |m| {
                matches!(m, Seen::Message { topic: t, payload: p, .. } if t == topic && p.as_ref() == payload)
            })
            .await
        {
            Seen::Message { retain, .. } => retain,
            Seen::Subscribed => unreachable!(),
        }
    }

    /// The messages (topic, payload) already received, without waiting.
    pub fn drain_now(&mut self) -> Vec<(String, Bytes)> {
        let mut out = Vec::new();
        while let Ok(m) = self.rx.try_recv() {
            if let Seen::Message { topic, payload, .. } = m {
                out.push((topic, payload));
            }
        }
        out
    }

    /// Collects messages (topic, payload) until `done` says the collection is complete.
    pub async fn collect_until(
        &mut self,
        what: &str,
        mut done: impl FnMut(&[(String, Bytes)]) -> bool,
    ) -> Vec<(String, Bytes)> {
        let mut got = Vec::new();
        within(what, async {
            while !done(&got) {
                if let Seen::Message { topic, payload, .. } =
                    self.rx.recv().await.expect("subscriber alive")
                {
                    got.push((topic, payload));
                }
            }
        })
        .await;
        got
    }
}

/// Reading topic the default template gives.
pub fn reading_topic(device: &str, class: MessageClass) -> String {
    format!("wardgate/ward-test/{device}/{class}")
}
