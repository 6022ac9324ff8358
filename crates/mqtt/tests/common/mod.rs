//! Test harness: a real Mosquitto per test, an in-memory outbox cursor (the store's test
//! double), a rumqttc subscriber, and small helpers. Every file in `tests/` uses a different
//! subset, hence the `dead_code` allowance.
#![allow(dead_code, unreachable_pub)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use prometheus_client::registry::Registry;
use tokio::process::{Child, Command};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use wardgate_core::health::ComponentKind;
use wardgate_core::{
    Delivery, Health, HealthReporter, MessageClass, NackReason, OutboxCursor, OutboxError,
    Protocol, Reading, Record,
};
use wardgate_mqtt::{MqttMetrics, MqttUplink, MqttUplinkConfig};

/// Upper bound for anything a test waits for; reaching it is a failure, never a pass.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

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
// Mosquitto

/// A Mosquitto child process with its own config file in a temp dir. Killed on drop.
pub struct Mosquitto {
    dir: tempfile::TempDir,
    conf: PathBuf,
    child: Option<Child>,
    /// The port the tests' own subscriber uses (plain MQTT).
    pub port: u16,
    /// Extra listener ports (e.g. TLS) named by the config.
    pub tls_port: Option<u16>,
}

impl Mosquitto {
    /// A broker with one plain listener on a free loopback port.
    pub async fn start() -> Mosquitto {
        let port = free_port();
        let conf = format!(
            "per_listener_settings false\nallow_anonymous true\npersistence false\n\
             listener {port} 127.0.0.1\n"
        );
        Self::start_with(conf, port, None).await
    }

    /// A broker with a plain listener for the tests' subscriber and a TLS listener for the
    /// uplink. `require_certificate` turns on mutual TLS.
    pub async fn start_tls(pki: &Pki, require_certificate: bool) -> Mosquitto {
        let port = free_port();
        let tls_port = free_port();
        let conf = format!(
            "per_listener_settings false\nallow_anonymous true\npersistence false\n\
             listener {port} 127.0.0.1\n\
             listener {tls_port} 127.0.0.1\n\
             cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate {require_certificate}\n",
            pki.ca.display(),
            pki.server_cert.display(),
            pki.server_key.display(),
        );
        Self::start_with(conf, port, Some(tls_port)).await
    }

    async fn start_with(conf_text: String, port: u16, tls_port: Option<u16>) -> Mosquitto {
        let dir = tempfile::tempdir().expect("tempdir");
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(&conf, conf_text).expect("write mosquitto.conf");
        let mut m = Mosquitto {
            dir,
            conf,
            child: None,
            port,
            tls_port,
        };
        m.spawn().await;
        m
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("mosquitto.log"))
            .expect("log file");
        let child = Command::new("/usr/sbin/mosquitto")
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start /usr/sbin/mosquitto");
        self.child = Some(child);
        let ports: Vec<u16> = std::iter::once(self.port).chain(self.tls_port).collect();
        for p in ports {
            let deadline = tokio::time::Instant::now() + PATIENCE;
            loop {
                if tokio::net::TcpStream::connect(("127.0.0.1", p))
                    .await
                    .is_ok()
                {
                    break;
                }
                if let Some(status) = self
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten())
                {
                    panic!("mosquitto exited with {status}; log:\n{}", self.log());
                }
                if tokio::time::Instant::now() > deadline {
                    panic!("mosquitto did not listen on {p}; log:\n{}", self.log());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// The broker's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    /// Process id of the running broker.
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .and_then(Child::id)
            .expect("broker is running")
    }

    /// Freezes the broker (SIGSTOP): connections stay open but nothing is answered.
    pub fn freeze(&self) {
        let status = std::process::Command::new("kill")
            .args(["-STOP", &self.pid().to_string()])
            .status()
            .expect("run kill -STOP");
        assert!(status.success());
    }

    /// Kills the broker (SIGKILL): no goodbye to anyone.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.start_kill().expect("SIGKILL mosquitto");
            child.wait().await.expect("reap mosquitto");
        }
    }

    /// Starts the broker again on the same ports with the same config.
    pub async fn restart(&mut self) {
        self.kill().await;
        self.spawn().await;
    }
}

// ---------------------------------------------------------------------------------------------
// Certificates

/// A throw-away PKI made with the `openssl` CLI: a CA, a server certificate for `localhost` and
/// 127.0.0.1, and a client certificate.
pub struct Pki {
    _dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pki {
    pub fn generate() -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut args = vec!["req", "-x509"];
        args.extend(ec);
        args.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=wardgate test CA",
        ]);
        openssl(d, &args);
        for (name, cn, eku, san) in [
            (
                "server",
                "localhost",
                "serverAuth",
                "DNS:localhost,IP:127.0.0.1",
            ),
            (
                "client",
                "wardgate-test-client",
                "clientAuth",
                "DNS:wardgate-test-client",
            ),
        ] {
            let mut args = vec!["req"];
            args.extend(ec);
            let key = format!("{name}.key");
            let csr = format!("{name}.csr");
            let subj = format!("/CN={cn}");
            args.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
            openssl(d, &args);
            let ext = format!("{name}.ext");
            std::fs::write(
                d.join(&ext),
                format!(
                    "subjectAltName={san}\nbasicConstraints=CA:FALSE\n\
                     keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage={eku}\n"
                ),
            )
            .expect("write ext");
            let pem = format!("{name}.pem");
            openssl(
                d,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-out",
                    &pem,
                    "-days",
                    "2",
                    "-extfile",
                    &ext,
                ],
            );
        }
        // Mosquitto started as root drops to its own user before loading the key files.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
        for f in std::fs::read_dir(d).expect("list pki dir") {
            let f = f.expect("entry").path();
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        }
        Pki {
            ca: d.join("ca.pem"),
            server_cert: d.join("server.pem"),
            server_key: d.join("server.key"),
            client_cert: d.join("client.pem"),
            client_key: d.join("client.key"),
            _dir: dir,
        }
    }
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
