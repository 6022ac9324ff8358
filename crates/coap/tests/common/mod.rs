//! Test harness: a real endpoint on an ephemeral loopback port, a fault-injecting "store" that
//! answers the bus and records readings, raw-UDP and libcoap helpers.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use wardgate_coap::config::CoapConfig;
use wardgate_coap::transport::{SocketOptions, Transport, UdpTransport};
use wardgate_coap::{CoapEndpoint, CoapMetrics, EndpointDeps, Registration, Resource};
use wardgate_core::health::ComponentKind;
use wardgate_core::payload::Limits;
use wardgate_core::{
    AllowAll, Authorizer, Bus, Health, Identity, IngestError, IngestPipeline, PeerContext, Reading,
    Shutdown, SystemClock, TransportKind,
};

/// How the fake store answers ingest requests.
#[derive(Debug, Clone)]
pub enum StoreMode {
    /// Commit at once.
    Ok,
    /// Commit after a delay (forces separate responses).
    Delay(Duration),
    /// Refuse as if the outbox quota were reached.
    Full,
}

/// Makes one socket's instance of a test resource.
pub type MakeResource = Arc<dyn Fn() -> Box<dyn Resource> + Send + Sync>;

/// What a test adds to the endpoint.
pub struct Options {
    /// Decides who may write (default: everyone).
    pub authorizer: Arc<dyn Authorizer>,
    /// When set, the transport tags every peer with this identity (as DTLS will).
    pub identity: Option<Identity>,
    /// Extra resources (registration, factory).
    pub resources: Vec<(Registration, MakeResource)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            authorizer: Arc::new(AllowAll),
            identity: None,
            resources: Vec::new(),
        }
    }
}

/// UDP whose every peer carries a fixed authenticated identity: a stand-in for what a DTLS
/// transport proves in its handshake.
#[derive(Debug)]
pub struct Tagged {
    inner: UdpTransport,
    identity: Identity,
}

impl Transport for Tagged {
    fn recv_from(
        &self,
        buf: &mut [u8],
    ) -> impl std::future::Future<Output = std::io::Result<(usize, SocketAddr)>> + Send {
        self.inner.recv_from(buf)
    }
    fn try_recv_from(&self, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
        self.inner.try_recv_from(buf)
    }
    fn try_send_to(&self, buf: &[u8], peer: SocketAddr) -> std::io::Result<usize> {
        self.inner.try_send_to(buf, peer)
    }
    fn send_to(
        &self,
        buf: &[u8],
        peer: SocketAddr,
    ) -> impl std::future::Future<Output = std::io::Result<usize>> + Send {
        self.inner.send_to(buf, peer)
    }
    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }
    fn kind(&self) -> &'static str {
        "dtls-test"
    }
    fn peer(&self, addr: SocketAddr) -> PeerContext {
        PeerContext::new(addr, TransportKind::Dtls).with_identity(self.identity.clone())
    }
}

type Launched = (
    Vec<SocketAddr>,
    wardgate_coap::Requester,
    JoinHandle<Result<(), wardgate_coap::CoapError>>,
);

/// Adds the test's resources and starts the endpoint.
fn launch<T: Transport>(
    mut endpoint: CoapEndpoint<T>,
    resources: Vec<(Registration, MakeResource)>,
    shutdown: &Shutdown,
) -> Launched {
    for (reg, make) in resources {
        endpoint.add_resource(reg, move || make());
    }
    let addrs = endpoint.local_addrs();
    let requester = endpoint.requester_for(addrs[0]).expect("requester");
    (
        addrs,
        requester,
        tokio::spawn(endpoint.run(shutdown.clone())),
    )
}

/// A running endpoint and its fake store.
pub struct Harness {
    pub addr: SocketAddr,
    pub readings: Arc<Mutex<Vec<Reading>>>,
    pub metrics: CoapMetrics,
    pub registry: Registry,
    pub health: Health,
    pub shutdown: Shutdown,
    /// Sends requests from the endpoint's (first) socket.
    pub requester: wardgate_coap::Requester,
    pub addrs: Vec<SocketAddr>,
    pub endpoint: Option<JoinHandle<Result<(), wardgate_coap::CoapError>>>,
    pub store: JoinHandle<()>,
}

impl Harness {
    pub async fn start(mode: StoreMode) -> Harness {
        Self::start_with(mode, |_| {}).await
    }

    pub async fn start_with(mode: StoreMode, tweak: impl FnOnce(&mut CoapConfig)) -> Harness {
        Self::start_opts(mode, tweak, Options::default()).await
    }

    /// The endpoint with an authorizer, a transport identity and extra resources of the test's.
    pub async fn start_opts(
        mode: StoreMode,
        tweak: impl FnOnce(&mut CoapConfig),
        opts: Options,
    ) -> Harness {
        let mut cfg = CoapConfig {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
            recv_buffer_bytes: 0,
            send_buffer_bytes: 0,
            ..CoapConfig::default()
        };
        tweak(&mut cfg);
        let (bus, mut rx) = Bus::new(64);
        let readings = Arc::new(Mutex::new(Vec::new()));
        let rec = readings.clone();
        let store = tokio::spawn(async move {
            while let Some(req) = rx.recv().await {
                let rec = rec.clone();
                let mode = mode.clone();
                // Each request is answered on its own so a delay does not serialize them.
                tokio::spawn(async move {
                    match mode {
                        StoreMode::Full => {
                            let _ = req.done.send(Err(IngestError::StoreFull));
                            return;
                        }
                        StoreMode::Delay(d) => tokio::time::sleep(d).await,
                        StoreMode::Ok => {}
                    }
                    for e in &req.readings {
                        let r: Reading = serde_json::from_slice(&e.json).expect("reading JSON");
                        rec.lock().expect("lock").push(r);
                    }
                    let _ = req.done.send(Ok(()));
                });
            }
        });
        let mut registry = Registry::default();
        let metrics = CoapMetrics::register(&mut registry);
        let health = Health::new();
        let deps = EndpointDeps {
            pipeline: IngestPipeline::new(
                "ward-test",
                bus,
                Arc::new(SystemClock),
                opts.authorizer.clone(),
                Limits::default(),
            ),
            metrics: metrics.clone(),
            health: health.reporter("coap", ComponentKind::Listener),
        };
        let shutdown = Shutdown::new();
        let (addrs, requester, handle) = match opts.identity {
            None => {
                let endpoint = CoapEndpoint::bind(cfg, deps).await.expect("bind");
                launch(endpoint, opts.resources, &shutdown)
            }
            Some(identity) => {
                let transports = cfg
                    .listen
                    .iter()
                    .map(|a| Tagged {
                        inner: UdpTransport::bind(
                            *a,
                            SocketOptions {
                                recv_buffer_bytes: 0,
                                send_buffer_bytes: 0,
                            },
                        )
                        .expect("bind"),
                        identity: identity.clone(),
                    })
                    .collect();
                let endpoint =
                    CoapEndpoint::with_transports(cfg, deps, transports).expect("endpoint");
                launch(endpoint, opts.resources, &shutdown)
            }
        };
        let addr = addrs[0];
        Harness {
            addr,
            readings,
            metrics,
            registry,
            health,
            shutdown,
            requester,
            addrs,
            endpoint: Some(handle),
            store,
        }
    }

    pub fn readings(&self) -> Vec<Reading> {
        self.readings.lock().expect("lock").clone()
    }

    pub fn uri(&self, path: &str) -> String {
        format!("coap://{}{}", self.addr, path)
    }

    /// The Prometheus text exposition.
    pub fn metrics_text(&self) -> String {
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &self.registry).expect("encode");
        s
    }

    /// Value of one sample line, e.g. `wardgate_coap_dedup_hits_total`.
    pub fn metric(&self, sample: &str) -> f64 {
        self.metrics_text()
            .lines()
            .find_map(|l| l.strip_prefix(sample).and_then(|v| v.strip_prefix(' ')))
            .map_or(0.0, |v| v.trim().parse().expect("number"))
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(h) = self.endpoint.take() {
            tokio::time::timeout(Duration::from_secs(10), h)
                .await
                .expect("endpoint stops in time")
                .expect("join")
                .expect("run ok");
        }
        self.store.abort();
    }
}

pub use wardgate_testkit::libcoap::ClientRun;

/// Runs libcoap's `coap-client-notls` with `args` (bounded by `-B 10`) off the runtime.
pub async fn coap_client(args: &[&str]) -> ClientRun {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        wardgate_testkit::libcoap::coap_client(&args)
    })
    .await
    .expect("coap-client-notls runner")
}

/// A raw UDP peer.
pub struct Raw {
    pub sock: UdpSocket,
    pub server: SocketAddr,
}

impl Raw {
    pub async fn new(server: SocketAddr) -> Raw {
        let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        Raw { sock, server }
    }

    pub async fn send(&self, bytes: &[u8]) {
        self.sock.send_to(bytes, self.server).await.expect("send");
    }

    /// The next datagram within `wait`, or `None`.
    pub async fn recv_within(&self, wait: Duration) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 2048];
        match tokio::time::timeout(wait, self.sock.recv_from(&mut buf)).await {
            Ok(Ok((n, _))) => Some(buf[..n].to_vec()),
            _ => None,
        }
    }

    pub async fn recv(&self) -> Vec<u8> {
        self.recv_within(Duration::from_secs(5))
            .await
            .expect("a datagram within 5 s")
    }
}

/// Builds a request datagram.
pub struct Req {
    pub con: bool,
    pub code: u8,
    pub mid: u16,
    pub token: Vec<u8>,
    pub options: Vec<(u16, Vec<u8>)>,
    pub payload: Vec<u8>,
}

impl Req {
    pub fn post(mid: u16, path: &str, cf: Option<u16>, payload: &[u8]) -> Req {
        let mut options: Vec<(u16, Vec<u8>)> = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| (11u16, s.as_bytes().to_vec()))
            .collect();
        if let Some(cf) = cf {
            options.push((12, uint(u32::from(cf))));
        }
        Req {
            con: true,
            code: 0x02,
            mid,
            token: vec![0xde, 0xad, (mid >> 8) as u8, mid as u8],
            options,
            payload: payload.to_vec(),
        }
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut opts = self.options.clone();
        opts.sort_by_key(|(n, _)| *n);
        let t = if self.con { 0 } else { 1 };
        let mut b = vec![0x40 | (t << 4) | self.token.len() as u8, self.code];
        b.extend_from_slice(&self.mid.to_be_bytes());
        b.extend_from_slice(&self.token);
        let mut last = 0u16;
        for (n, v) in &opts {
            let d = n - last;
            last = *n;
            let (dn, dext) = ext(usize::from(d));
            let (ln, lext) = ext(v.len());
            b.push((dn << 4) | ln);
            b.extend_from_slice(&dext);
            b.extend_from_slice(&lext);
            b.extend_from_slice(v);
        }
        if !self.payload.is_empty() {
            b.push(0xff);
            b.extend_from_slice(&self.payload);
        }
        b
    }
}

fn ext(v: usize) -> (u8, Vec<u8>) {
    if v < 13 {
        (v as u8, vec![])
    } else if v < 269 {
        (13, vec![(v - 13) as u8])
    } else {
        (14, ((v - 269) as u16).to_be_bytes().to_vec())
    }
}

pub fn uint(v: u32) -> Vec<u8> {
    let b = v.to_be_bytes();
    let skip = (v.leading_zeros() / 8) as usize;
    b[skip..].to_vec()
}

/// Parsed view of a response datagram (via coap-lite, an independent decoder).
pub fn parse(b: &[u8]) -> coap_lite::Packet {
    coap_lite::Packet::from_bytes(b).expect("a well-formed response")
}

pub fn code_of(p: &coap_lite::Packet) -> String {
    p.header.get_code()
}

pub fn mtype_of(b: &[u8]) -> u8 {
    (b[0] >> 4) & 0x3
}

pub const SENML_JSON: &str = r#"[{"bn":"urn:dev:bed-1:","n":"spo2","u":"%","v":97},{"n":"heart_rate","u":"beat/min","v":72}]"#;
