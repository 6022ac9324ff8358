//! A CoAP endpoint over the DTLS transport, with an in-memory credential store, an authorizer
//! that stores readings under the proven identity, an in-memory audit sink and a fake store,
//! plus a scriptable DTLS client (dimpl) for the tests that need to stop half-way.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::registry::Registry;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use wardgate_coap::config::CoapConfig;
use wardgate_coap::{CoapEndpoint, CoapMetrics, EndpointDeps};
use wardgate_core::health::ComponentKind;
use wardgate_core::payload::Limits;
use wardgate_core::{
    AuthRequest, Authorizer, Bus, CredentialStore, Denied, Health, IngestPipeline, MemoryAudit,
    Reading, Secret, Shutdown, SystemClock,
};
use wardgate_dtls::{DtlsConfig, DtlsDeps, DtlsMetrics, DtlsTransport};

/// Devices by PSK identity, editable while the gateway runs.
#[derive(Debug, Default)]
pub struct Keys {
    keys: Mutex<HashMap<String, Vec<u8>>>,
    /// Client certificate SHA-256 (hex) → device.
    certs: Mutex<HashMap<String, String>>,
    generation: AtomicU64,
}

impl Keys {
    pub fn set(&self, identity: &str, key: &[u8]) {
        self.keys
            .lock()
            .unwrap()
            .insert(identity.into(), key.to_vec());
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    pub fn set_certificate(&self, sha256_hex: &str, device: &str) {
        self.certs
            .lock()
            .unwrap()
            .insert(sha256_hex.into(), device.into());
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    pub fn revoke(&self, identity: &str) {
        self.keys.lock().unwrap().remove(identity);
        self.generation.fetch_add(1, Ordering::SeqCst);
    }
}

impl CredentialStore for Keys {
    fn psk(&self, identity: &str) -> Option<Secret> {
        self.keys
            .lock()
            .unwrap()
            .get(identity)
            .cloned()
            .map(Secret::new)
    }

    fn knows_certificate(&self, sha256_hex: &str) -> bool {
        self.certs.lock().unwrap().contains_key(sha256_hex)
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }
}

/// A peer may write only as the device its proven identity names: the PSK identity itself, or
/// the device a certificate fingerprint belongs to (what the registry does for a device whose
/// `speaks_for` is itself).
#[derive(Debug)]
pub struct IdentityIsDevice(pub Arc<Keys>);

impl Authorizer for IdentityIsDevice {
    fn authorize(&self, req: &AuthRequest<'_>) -> Result<String, Denied> {
        let id = req
            .peer
            .identity
            .as_ref()
            .ok_or(Denied::Unauthenticated("no identity"))?;
        let device = match id.kind() {
            wardgate_core::IdentityKind::CertificateSha256 => {
                self.0.certs.lock().unwrap().get(id.value()).cloned()
            }
            _ => Some(id.value().to_owned()),
        };
        match device {
            Some(d) if d == req.claimed_device => Ok(d),
            _ => Err(Denied::Forbidden("not this device")),
        }
    }

    fn authenticates(&self) -> bool {
        true
    }
}

pub struct Gateway {
    pub addr: SocketAddr,
    pub keys: Arc<Keys>,
    pub audit: Arc<MemoryAudit>,
    pub readings: Arc<Mutex<Vec<Reading>>>,
    pub registry: Registry,
    pub shutdown: Shutdown,
    pub endpoint: JoinHandle<Result<(), wardgate_coap::CoapError>>,
}

impl Gateway {
    pub async fn start(tweak: impl FnOnce(&mut DtlsConfig)) -> Gateway {
        let mut settings = DtlsConfig {
            enabled: true,
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
            recv_buffer_bytes: 0,
            send_buffer_bytes: 0,
            ..DtlsConfig::default()
        };
        tweak(&mut settings);
        let keys = Arc::new(Keys::default());
        let audit = Arc::new(MemoryAudit::default());
        let mut registry = Registry::default();
        let metrics = DtlsMetrics::register(&mut registry);
        let coap_metrics = CoapMetrics::register(&mut registry);
        let transport = DtlsTransport::bind(
            settings.listen[0],
            &settings,
            DtlsDeps {
                credentials: keys.clone(),
                audit: audit.clone(),
                metrics,
                tap: None,
            },
        )
        .expect("bind");
        let (bus, mut rx) = Bus::new(64);
        let readings = Arc::new(Mutex::new(Vec::new()));
        let rec = readings.clone();
        tokio::spawn(async move {
            while let Some(req) = rx.recv().await {
                for e in &req.readings {
                    let r: Reading = serde_json::from_slice(&e.json).expect("reading JSON");
                    rec.lock().unwrap().push(r);
                }
                let _ = req.done.send(Ok(()));
            }
        });
        let health = Health::new();
        let deps = EndpointDeps {
            pipeline: IngestPipeline::new(
                "ward-test",
                bus,
                Arc::new(SystemClock),
                Arc::new(IdentityIsDevice(keys.clone())),
                Limits::default(),
            ),
            metrics: coap_metrics,
            health: health.reporter("coaps", ComponentKind::Listener),
        };
        let cfg = CoapConfig {
            listen: settings.listen.clone(),
            ..CoapConfig::default()
        };
        let endpoint = CoapEndpoint::with_transports(cfg, deps, vec![transport]).expect("endpoint");
        let addr = endpoint.local_addrs()[0];
        let shutdown = Shutdown::new();
        let endpoint = tokio::spawn(endpoint.run(shutdown.clone()));
        Gateway {
            addr,
            keys,
            audit,
            readings,
            registry,
            shutdown,
            endpoint,
        }
    }

    pub fn readings(&self) -> Vec<Reading> {
        self.readings.lock().unwrap().clone()
    }

    /// Value of one sample line of the Prometheus text, 0 when absent.
    pub fn metric(&self, sample: &str) -> f64 {
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &self.registry).unwrap();
        s.lines()
            .find_map(|l| l.strip_prefix(sample).and_then(|v| v.strip_prefix(' ')))
            .map_or(0.0, |v| v.trim().parse().unwrap())
    }

    pub fn metrics_text(&self) -> String {
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &self.registry).unwrap();
        s
    }

    pub async fn wait_for_readings(&self, n: usize) -> Vec<Reading> {
        let deadline = Instant::now() + wardgate_testkit::PATIENCE;
        loop {
            let r = self.readings();
            if r.len() >= n || Instant::now() > deadline {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.endpoint).await;
    }
}

/// A CoAP CON POST of a SenML JSON reading to `/v1/readings/{device}`, message id `mid`.
pub fn coap_post(device: &str, mid: u16, value: f64) -> Vec<u8> {
    let mut m = vec![0x40, 0x02];
    m.extend_from_slice(&mid.to_be_bytes());
    m.push(0xB2);
    m.extend_from_slice(b"v1");
    m.push(0x08);
    m.extend_from_slice(b"readings");
    m.push(device.len() as u8);
    m.extend_from_slice(device.as_bytes());
    // Content-Format (12) = 110, application/senml+json
    m.extend_from_slice(&[0x11, 110]);
    m.push(0xFF);
    m.extend_from_slice(format!(r#"[{{"n":"spo2","u":"%","v":{value}}}]"#).as_bytes());
    m
}

/// The CoAP code byte of a response datagram (e.g. 0x41 = 2.01).
pub fn coap_code(datagram: &[u8]) -> Option<u8> {
    datagram.get(1).copied()
}

struct FixedKey(Vec<u8>);

impl dimpl::PskResolver for FixedKey {
    fn resolve(&self, _identity: &[u8]) -> Option<Vec<u8>> {
        Some(self.0.clone())
    }
}

/// A DTLS client driven by hand over a UDP socket bound to `local` (any 127.0.0.0/8 address).
pub struct Client {
    pub socket: UdpSocket,
    pub dtls: dimpl::Dtls,
    server: SocketAddr,
    buf: Vec<u8>,
    pub plaintext: Vec<Vec<u8>>,
    pub connected: bool,
    pub closed: bool,
}

impl Client {
    pub async fn new(local: &str, server: SocketAddr, identity: &str, key: &[u8]) -> Client {
        let config = Arc::new(
            dimpl::Config::builder()
                .with_psk_client(
                    identity.as_bytes().to_vec(),
                    Arc::new(FixedKey(key.to_vec())),
                )
                .build()
                .unwrap(),
        );
        let mut dtls = dimpl::Dtls::new_12_psk(config, Instant::now());
        dtls.set_active(true);
        let socket = UdpSocket::bind(format!("{local}:0")).await.unwrap();
        Client {
            socket,
            dtls,
            server,
            buf: vec![0; 4096],
            plaintext: Vec::new(),
            connected: false,
            closed: false,
        }
    }

    /// Sends whatever the library has queued; returns the datagrams sent.
    pub async fn flush(&mut self) -> usize {
        let mut out = vec![0u8; 4096];
        let mut sent = 0;
        loop {
            match self.dtls.poll_output(&mut out) {
                dimpl::Output::Packet(p) => {
                    self.socket.send_to(p, self.server).await.unwrap();
                    sent += 1;
                }
                dimpl::Output::Timeout(_) => return sent,
                dimpl::Output::Connected => self.connected = true,
                dimpl::Output::ApplicationData(d) => self.plaintext.push(d.to_vec()),
                dimpl::Output::CloseNotify => self.closed = true,
                _ => {}
            }
        }
    }

    /// Receives one datagram (or times out) and feeds it to the library.
    pub async fn pump(&mut self, wait: Duration) -> bool {
        match tokio::time::timeout(wait, self.socket.recv_from(&mut self.buf)).await {
            Ok(Ok((n, _))) => {
                let d = self.buf[..n].to_vec();
                if self.dtls.handle_packet(&d).is_err() {
                    self.closed = true;
                }
                self.flush().await;
                true
            }
            _ => false,
        }
    }

    /// Runs the handshake to the end (true) or until `wait` passes without progress (false).
    pub async fn handshake(&mut self, wait: Duration) -> bool {
        self.dtls.handle_timeout(Instant::now()).unwrap();
        self.flush().await;
        while !self.connected && !self.closed {
            if !self.pump(wait).await {
                return false;
            }
        }
        self.connected
    }

    /// Sends ClientHello, answers the HelloVerifyRequest, and stops: a half-open handshake.
    pub async fn half_open(&mut self, wait: Duration) {
        self.dtls.handle_timeout(Instant::now()).unwrap();
        self.flush().await;
        // HelloVerifyRequest -> cookie-bearing ClientHello
        self.pump(wait).await;
    }

    pub async fn send(&mut self, data: &[u8]) {
        self.dtls.send_application_data(data).unwrap();
        self.flush().await;
    }

    /// Waits for one plaintext datagram from the gateway.
    pub async fn recv(&mut self, wait: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + wait;
        while self.plaintext.is_empty() && !self.closed {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !self.pump(left).await {
                break;
            }
        }
        if self.plaintext.is_empty() {
            None
        } else {
            Some(self.plaintext.remove(0))
        }
    }
}
