//! Test harness: a real CoAP endpoint with the LwM2M server on an ephemeral loopback port, a
//! fake store answering the bus (recording readings, or refusing as full), and aiocoap as an
//! independent LwM2M client peer.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::registry::Registry;
use wardgate_coap::config::CoapConfig;
use wardgate_coap::{CoapEndpoint, CoapMetrics, EndpointDeps};
use wardgate_core::health::ComponentKind;
use wardgate_core::payload::Limits;
use wardgate_core::{
    AllowAll, Authorizer, Bus, Health, IngestError, IngestPipeline, Reading, Shutdown, SystemClock,
    TransportKind,
};
use wardgate_lwm2m::persist::RegistrationStore;
use wardgate_lwm2m::{Lwm2mMetrics, Server, Settings};

/// A running endpoint with the LwM2M server.
pub struct Gateway {
    pub addr: SocketAddr,
    pub server: Server,
    pub readings: Arc<Mutex<Vec<Reading>>>,
    /// While set, the fake store refuses readings as full.
    pub store_full: Arc<AtomicBool>,
    pub registry: Registry,
    pub shutdown: Shutdown,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// What a test changes.
pub struct Options {
    pub settings: Settings,
    pub authorizer: Arc<dyn Authorizer>,
    /// Registration database (None: not persisted).
    pub db: Option<std::path::PathBuf>,
    /// Port to bind (0: ephemeral).
    pub port: u16,
    /// CoAP transmission parameters (None: the defaults).
    pub transmission: Option<wardgate_coap::TransmissionConfig>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            settings: Settings::default(),
            authorizer: Arc::new(AllowAll),
            db: None,
            port: 0,
            transmission: None,
        }
    }
}

impl Gateway {
    pub async fn start() -> Gateway {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(opts: Options) -> Gateway {
        let cfg = CoapConfig {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], opts.port))],
            recv_buffer_bytes: 0,
            send_buffer_bytes: 0,
            drain_timeout: Duration::from_millis(500),
            transmission: opts.transmission.unwrap_or_default(),
            ..CoapConfig::default()
        };
        let (bus, mut rx) = Bus::new(256);
        let readings = Arc::new(Mutex::new(Vec::new()));
        let store_full = Arc::new(AtomicBool::new(false));
        let (rec, full) = (readings.clone(), store_full.clone());
        let store = tokio::spawn(async move {
            while let Some(req) = rx.recv().await {
                if full.load(Ordering::SeqCst) {
                    let _ = req.done.send(Err(IngestError::StoreFull));
                    continue;
                }
                for e in &req.readings {
                    let r: Reading = serde_json::from_slice(&e.json).expect("reading JSON");
                    rec.lock().expect("lock").push(r);
                }
                let _ = req.done.send(Ok(()));
            }
        });
        let mut registry = Registry::default();
        let pipeline = IngestPipeline::new(
            "ward-test",
            bus,
            Arc::new(SystemClock),
            opts.authorizer.clone(),
            Limits::default(),
        );
        let health = Health::new();
        let deps = EndpointDeps {
            pipeline: pipeline.clone(),
            metrics: CoapMetrics::register(&mut registry),
            health: health.reporter("coap", ComponentKind::Listener),
        };
        let (store_db, loaded) = match &opts.db {
            Some(p) => RegistrationStore::open(p).expect("registration store"),
            None => (RegistrationStore::none(), Vec::new()),
        };
        let server = Server::new(
            opts.settings,
            pipeline,
            Arc::new(wardgate_lwm2m::model::ObjectModel::builtin()),
            store_db,
            loaded,
            Lwm2mMetrics::register(&mut registry),
        );
        let mut endpoint = CoapEndpoint::bind(cfg, deps).await.expect("bind");
        wardgate_lwm2m::resource::install(&mut endpoint, &server, TransportKind::Udp);
        let addr = endpoint.local_addrs()[0];
        let shutdown = Shutdown::new();
        let s = shutdown.clone();
        let ep = tokio::spawn(async move {
            let _ = endpoint.run(s).await;
        });
        let run = tokio::spawn(server.clone().run(shutdown.clone()));
        Gateway {
            addr,
            server,
            readings,
            store_full,
            registry,
            shutdown,
            tasks: vec![store, ep, run],
        }
    }

    pub fn readings(&self) -> Vec<Reading> {
        self.readings.lock().expect("lock").clone()
    }

    /// Waits (bounded) until at least `n` readings were stored.
    pub async fn wait_readings(&self, n: usize, timeout: Duration) -> Vec<Reading> {
        let end = tokio::time::Instant::now() + timeout;
        loop {
            let r = self.readings();
            if r.len() >= n {
                return r;
            }
            assert!(
                tokio::time::Instant::now() < end,
                "timed out waiting for {n} readings; have {r:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Value of one sample line of the metrics exposition (0 when absent).
    pub fn metric(&self, sample: &str) -> f64 {
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &self.registry).expect("encode");
        s.lines()
            .find_map(|l| l.strip_prefix(sample).and_then(|v| v.strip_prefix(' ')))
            .map_or(0.0, |v| v.trim().parse().expect("number"))
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let mut tasks = self.tasks.into_iter();
        // The fake store runs as long as anything holds the bus (the server does): end it.
        if let Some(store) = tasks.next() {
            store.abort();
        }
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    }
}

/// aiocoap as an LwM2M client (see `tests/peers/aiocoap_client.py`).
pub struct AioPeer {
    child: Child,
    stdin: ChildStdin,
    events: mpsc::Receiver<serde_json::Value>,
    next_id: u64,
}

pub fn python() -> &'static str {
    "python3"
}

impl AioPeer {
    /// Starts the peer talking to `server`.
    pub fn start(server: SocketAddr) -> AioPeer {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/aiocoap_client.py");
        let mut child = Command::new(python())
            .arg(script)
            .arg(server.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the aiocoap peer (python3 with aiocoap; scripts/test.sh installs it)");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                match serde_json::from_str(&line) {
                    Ok(v) => {
                        if tx.send(v).is_err() {
                            break;
                        }
                    }
                    Err(_) => eprintln!("aiocoap peer: {line}"),
                }
            }
        });
        let mut p = AioPeer {
            child,
            stdin,
            events,
            next_id: 0,
        };
        p.expect_event("ready", Duration::from_secs(20));
        p
    }

    fn send(&mut self, cmd: serde_json::Value) {
        writeln!(self.stdin, "{cmd}").expect("write to the aiocoap peer");
        self.stdin.flush().expect("flush");
    }

    /// The next event of kind `kind` (others before it are returned in order by `events`).
    pub fn expect_event(&mut self, kind: &str, timeout: Duration) -> serde_json::Value {
        let end = std::time::Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(std::time::Instant::now());
            let e = self.events.recv_timeout(left).unwrap_or_else(|_| {
                panic!("no {kind} event from the aiocoap peer within {timeout:?}")
            });
            if e["event"] == kind {
                return e;
            }
        }
    }

    /// Sends a request from the peer and returns the response event.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        query: &[&str],
        cf: Option<u16>,
        payload: &[u8],
    ) -> serde_json::Value {
        self.next_id += 1;
        let id = self.next_id;
        self.send(serde_json::json!({
            "op": "request", "id": id, "method": method, "path": path, "query": query,
            "cf": cf, "payload_hex": hex(payload),
        }));
        let end = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let left = end.saturating_duration_since(std::time::Instant::now());
            let e = self
                .events
                .recv_timeout(left)
                .expect("response from the aiocoap peer");
            if e["event"] == "response" && e["id"] == id {
                return e;
            }
        }
    }

    /// Makes the peer answer requests on `path` (`method` "*" for any) with `code`, `cf` and
    /// `payload`.
    pub fn serve(&mut self, path: &str, method: &str, code: &str, cf: Option<u16>, payload: &[u8]) {
        self.send(serde_json::json!({
            "op": "serve", "path": path, "method": method, "code": code, "cf": cf,
            "payload_hex": hex(payload),
        }));
        self.expect_event("served", Duration::from_secs(10));
    }

    /// Makes the peer answer 4.06 to a request on `path` whose Accept is not in `accepts`.
    pub fn accept_only(&mut self, path: &str, accepts: &[u16]) {
        self.send(serde_json::json!({
            "op": "serve", "path": path, "method": "__none__", "accepts": accepts,
        }));
        self.expect_event("served", Duration::from_secs(10));
    }

    /// Makes the peer take `seconds` before answering on `path` (a separate response).
    pub fn delay(&mut self, path: &str, seconds: f64) {
        self.send(serde_json::json!({
            "op": "serve", "path": path, "method": "__none__", "delay": seconds,
        }));
        self.expect_event("served", Duration::from_secs(10));
    }

    /// Makes the peer answer requests on `path` block-wise (1024-byte Block2 blocks).
    pub fn block_wise(&mut self, path: &str) {
        self.send(serde_json::json!({
            "op": "serve", "path": path, "method": "__none__", "block": true,
        }));
        self.expect_event("served", Duration::from_secs(10));
    }

    /// Sends a notification to the observers of `path`.
    pub fn notify(&mut self, path: &str, cf: u16, payload: &[u8]) {
        self.send(serde_json::json!({
            "op": "notify", "path": path, "cf": cf, "payload_hex": hex(payload),
        }));
    }

    /// The next request the server sent the peer.
    pub fn next_request(&mut self, timeout: Duration) -> serde_json::Value {
        self.expect_event("request", timeout)
    }
}

impl Drop for AioPeer {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{{\"op\": \"quit\"}}");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex"))
        .collect()
}

/// Polls `check` until it gives `Some`, at most `timeout`; panics naming `what` otherwise.
pub async fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let end = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every record of every stored reading as (path, numeric value, name).
pub fn records(gw: &Gateway) -> Vec<(String, Option<f64>, String)> {
    gw.readings()
        .iter()
        .flat_map(|r| r.records.iter())
        .map(|r| (r.path.clone().unwrap_or_default(), r.v, r.n.clone()))
        .collect()
}

/// An LwM2M path from text (tests only: panics on a bad one).
pub fn p(s: &str) -> wardgate_lwm2m::Path {
    s.parse().expect("path")
}

/// A value at a path, without time.
pub fn entry(path: &str, value: wardgate_lwm2m::Value) -> wardgate_lwm2m::Entry {
    wardgate_lwm2m::Entry {
        path: p(path),
        value,
        time: None,
    }
}

/// A simulated client of `gw`, registered.
pub async fn client(
    gw: &Gateway,
    cfg: wardgate_lwm2m::sim::SimConfig,
) -> wardgate_lwm2m::sim::SimClient {
    let c = wardgate_lwm2m::sim::SimClient::start(cfg, gw.addr)
        .await
        .expect("start the simulated client");
    c.register().await.expect("register the simulated client");
    c
}
