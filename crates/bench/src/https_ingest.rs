//! `https-ingest-load`: devices posting SenML JSON readings to the gateway's HTTP(S) ingest
//! (`POST /v1/devices/{id}/readings`), each over its own keep-alive HTTP/1.1 connection with one
//! request in flight (closed loop), for a fixed duration. Over TLS when given the CA to trust,
//! plain HTTP otherwise, so the two runs show what TLS costs.
//!
//! Connections are opened (TCP + TLS handshake) before the timed phase; a connection that fails
//! during it is counted and opened again. Latency is request written → answer read; for a 201
//! that includes the gateway's durable commit. Bounded: `--duration` (≤ 10 min), `--timeout` per
//! request, `--connections` (≤ 1024).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::error::BenchError;
use crate::payload::{self, Format};
use crate::procfs::{CpuReport, MemoryReport, Monitor};
use crate::stats::{Latency, LatencySummary};
use crate::target::loopback_addr;

/// Most connections.
pub const MAX_CONNECTIONS: usize = 1024;
/// Longest timed phase, seconds.
pub const MAX_DURATION_S: f64 = 600.0;

/// Arguments of `https-ingest-load`.
#[derive(Debug, Clone, clap::Args)]
pub struct IngestLoadArgs {
    /// The gateway's `[ingest.http]` address, host:port (loopback only).
    #[arg(long)]
    pub target: String,
    /// Trust this PEM certificate and speak TLS; plain HTTP without it.
    #[arg(long)]
    pub ca_file: Option<std::path::PathBuf>,
    /// Connections (devices), each with one request in flight.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Timed phase, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// A request unanswered after this many seconds is an error (the connection is reopened).
    #[arg(long, default_value_t = 5.0)]
    pub timeout: f64,
    /// Wait up to this many seconds for the listener to accept a connection before starting.
    #[arg(long, default_value_t = 10.0)]
    pub ready_timeout: f64,
    /// Process under test: sample its CPU time and memory over the timed phase.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Device id prefix (`<prefix>-<run>-<n>`).
    #[arg(long, default_value = "ingest")]
    pub device_prefix: String,
    /// Free-form label copied into the report.
    #[arg(long, default_value = "")]
    pub label: String,
}

/// The JSON object printed for one run.
#[derive(Debug, Clone, Serialize)]
pub struct IngestLoadReport {
    /// Always `https-ingest-load`.
    pub tool: &'static str,
    /// `--label`.
    pub label: String,
    /// Server address.
    pub target: String,
    /// TLS or plain HTTP.
    pub tls: bool,
    /// The TLS version the first connection negotiated.
    pub tls_version: Option<String>,
    /// Connections (devices).
    pub connections: usize,
    /// Timed phase, seconds (measured).
    pub duration_s: f64,
    /// Size of a typical request body, bytes.
    pub payload_bytes: usize,
    /// Connection set-up (TCP + TLS handshake + HTTP/1.1 handshake) before the timed phase.
    pub connect: Option<LatencySummary>,
    /// Requests answered (any status).
    pub answered: u64,
    /// Answered 201 Created (durable).
    pub created: u64,
    /// Answers by status code.
    pub statuses: BTreeMap<u16, u64>,
    /// Requests that got no answer (connection failed or `--timeout`).
    pub errors: u64,
    /// Connections opened again during the timed phase.
    pub reconnects: u64,
    /// answered / duration.
    pub requests_per_s: f64,
    /// created / duration.
    pub created_per_s: f64,
    /// Latency of the 201 answers.
    pub latency_201: Option<LatencySummary>,
    /// Latency of the other answers.
    pub latency_other: Option<LatencySummary>,
    /// The first errors (at most 4).
    pub first_errors: Vec<String>,
    /// CPU accounting (per 1k = per 1000 requests answered 201).
    pub cpu: CpuReport,
    /// Memory of the process under test.
    pub sut_memory: Option<MemoryReport>,
}

/// One HTTP/1.1 client connection (TLS or plain) with one request in flight at a time.
pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
    /// The negotiated TLS version (`TLSv1_3`, ...), `None` for plain HTTP.
    pub tls_version: Option<String>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").finish_non_exhaustive()
    }
}

impl Conn {
    /// Connects to `addr`, over TLS with `tls` (the server name is the address), and completes
    /// the HTTP/1.1 handshake. The connection is driven by a task on the current runtime.
    pub async fn connect(
        addr: SocketAddr,
        tls: Option<&Arc<ClientConfig>>,
    ) -> Result<Conn, BenchError> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| BenchError::io(format!("connect {addr}"), e))?;
        let _ = tcp.set_nodelay(true);
        let http = |e: hyper::Error| BenchError::Http(format!("handshake: {e}"));
        let mut tls_version = None;
        let sender = match tls {
            Some(cfg) => {
                let name = ServerName::IpAddress(addr.ip().into());
                let stream = TlsConnector::from(cfg.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| BenchError::io(format!("TLS handshake with {addr}"), e))?;
                tls_version = stream
                    .get_ref()
                    .1
                    .protocol_version()
                    .map(|v| format!("{v:?}"));
                let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(http)?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                sender
            }
            None => {
                let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                    .await
                    .map_err(http)?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                sender
            }
        };
        Ok(Conn {
            sender,
            tls_version,
        })
    }

    /// Sends `req` and reads the whole answer: (status, body).
    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Result<(u16, Bytes), BenchError> {
        self.sender
            .ready()
            .await
            .map_err(|e| BenchError::Http(format!("connection: {e}")))?;
        let resp = self
            .sender
            .send_request(req)
            .await
            .map_err(|e| BenchError::Http(format!("request: {e}")))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| BenchError::Http(format!("answer body: {e}")))?
            .to_bytes();
        Ok((status, body))
    }
}

/// The ingest path of `device`.
pub fn ingest_path(device: &str) -> String {
    format!("/v1/devices/{device}/readings")
}

/// One reading's request: SenML JSON, keep-alive.
pub fn ingest_request(
    host: &str,
    device: &str,
    body: Vec<u8>,
) -> Result<Request<Full<Bytes>>, BenchError> {
    Request::post(ingest_path(device))
        .header("host", host)
        .header("content-type", "application/senml+json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| BenchError::Http(format!("request: {e}")))
}

/// What one connection's loop counted.
#[derive(Debug, Default)]
pub struct Totals {
    /// Answers by status.
    pub statuses: BTreeMap<u16, u64>,
    /// Requests without an answer.
    pub errors: u64,
    /// Connections opened again.
    pub reconnects: u64,
    /// Latency of 201s.
    pub created: Latency,
    /// Latency of other answers.
    pub other: Latency,
    /// The first error messages.
    pub first_errors: Vec<String>,
}

impl Totals {
    /// Counts one answer.
    pub fn answer(&mut self, status: u16, latency: Duration) {
        *self.statuses.entry(status).or_default() += 1;
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        if status == 201 {
            self.created.record_ns(ns);
        } else {
            self.other.record_ns(ns);
        }
    }

    /// Counts a request that got no answer.
    pub fn error(&mut self, e: &BenchError) {
        self.errors += 1;
        if self.first_errors.len() < 4 {
            self.first_errors.push(e.to_string());
        }
    }

    /// Adds another connection's counts.
    pub fn merge(&mut self, o: Totals) {
        for (s, n) in o.statuses {
            *self.statuses.entry(s).or_default() += n;
        }
        self.errors += o.errors;
        self.reconnects += o.reconnects;
        self.created.merge(&o.created);
        self.other.merge(&o.other);
        for e in o.first_errors {
            if self.first_errors.len() < 4 {
                self.first_errors.push(e);
            }
        }
    }

    /// Answers of any status.
    pub fn answered(&self) -> u64 {
        self.statuses.values().sum()
    }

    /// 201 answers.
    pub fn created_count(&self) -> u64 {
        self.statuses.get(&201).copied().unwrap_or(0)
    }
}

struct Worker {
    addr: SocketAddr,
    tls: Option<Arc<ClientConfig>>,
    host: String,
    device: String,
    base_name: String,
    timeout: Duration,
    deadline: Instant,
}

impl Worker {
    async fn run(self, mut conn: Option<Conn>) -> Totals {
        let mut t = Totals::default();
        let mut body = Vec::with_capacity(256);
        let mut seq = 0u64;
        while Instant::now() < self.deadline {
            let Some(c) = conn.as_mut() else {
                match Conn::connect(self.addr, self.tls.as_ref()).await {
                    Ok(c) => {
                        conn = Some(c);
                        t.reconnects += 1;
                    }
                    Err(e) => {
                        t.error(&e);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                continue;
            };
            payload::encode(
                Format::SenmlJson,
                &mut body,
                &self.base_name,
                epoch_now(),
                seq,
            );
            seq += 1;
            let req = match ingest_request(&self.host, &self.device, body.clone()) {
                Ok(r) => r,
                Err(e) => {
                    t.error(&e);
                    break;
                }
            };
            let sent = Instant::now();
            match tokio::time::timeout(self.timeout, c.send(req)).await {
                Ok(Ok((status, _))) => t.answer(status, sent.elapsed()),
                Ok(Err(e)) => {
                    t.error(&e);
                    conn = None;
                }
                Err(_) => {
                    t.error(&BenchError::Http("no answer within --timeout".into()));
                    conn = None;
                }
            }
        }
        t
    }
}

fn epoch_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn check(args: &IngestLoadArgs) -> Result<SocketAddr, BenchError> {
    let addr = loopback_addr(&args.target)?;
    if !(args.duration > 0.0 && args.duration <= MAX_DURATION_S) {
        return Err(BenchError::InvalidArgs(format!(
            "--duration must be in (0, {MAX_DURATION_S}] seconds"
        )));
    }
    if args.connections == 0 || args.connections > MAX_CONNECTIONS {
        return Err(BenchError::InvalidArgs(format!(
            "--connections must be in [1, {MAX_CONNECTIONS}]"
        )));
    }
    let timeout_ok = args.timeout > 0.0 && args.timeout <= 60.0;
    if !timeout_ok || !(0.0..=60.0).contains(&args.ready_timeout) {
        return Err(BenchError::InvalidArgs(
            "--timeout must be in (0, 60] and --ready-timeout in [0, 60] seconds".into(),
        ));
    }
    Ok(addr)
}

/// Runs one ingest load test.
pub fn run(args: &IngestLoadArgs) -> Result<IngestLoadReport, BenchError> {
    let addr = check(args)?;
    let tls = args
        .ca_file
        .as_deref()
        .map(crate::tls::client_config)
        .transpose()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| BenchError::io("runtime", e))?;
    rt.block_on(run_async(args, addr, tls))
}

async fn run_async(
    args: &IngestLoadArgs,
    addr: SocketAddr,
    tls: Option<Arc<ClientConfig>>,
) -> Result<IngestLoadReport, BenchError> {
    // Ready: the listener accepts (and, with TLS, handshakes).
    let ready_until = Instant::now() + Duration::from_secs_f64(args.ready_timeout);
    loop {
        match Conn::connect(addr, tls.as_ref()).await {
            Ok(_) => break,
            Err(_) if Instant::now() < ready_until => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e),
        }
    }
    let mut connect = Latency::new();
    let mut conns = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        let t = Instant::now();
        conns.push(Conn::connect(addr, tls.as_ref()).await?);
        connect.record_ns(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX));
    }
    let conns_version = conns.first().and_then(|c| c.tls_version.clone());
    let run = format!("{}-{}", args.device_prefix, std::process::id() % 100_000);
    let host = addr.to_string();
    let monitor = Monitor::start(args.pid, vec![], None)?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.duration);
    let mut set = tokio::task::JoinSet::new();
    for (i, c) in conns.into_iter().enumerate() {
        let device = format!("{run}-{i}");
        let w = Worker {
            addr,
            tls: tls.clone(),
            host: host.clone(),
            base_name: format!("urn:dev:{device}:"),
            device,
            timeout: Duration::from_secs_f64(args.timeout),
            deadline,
        };
        set.spawn(w.run(Some(c)));
    }
    let mut totals = Totals::default();
    while let Some(t) = set.join_next().await {
        if let Ok(t) = t {
            totals.merge(t);
        }
    }
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    let (cpu, sut_memory) = monitor.finish(totals.created_count());
    let mut sample = Vec::new();
    payload::encode(
        Format::SenmlJson,
        &mut sample,
        &format!("urn:dev:{run}-0:"),
        epoch_now(),
        1000,
    );
    Ok(IngestLoadReport {
        tool: "https-ingest-load",
        label: args.label.clone(),
        target: addr.to_string(),
        tls: tls.is_some(),
        tls_version: conns_version,
        connections: args.connections,
        duration_s: secs,
        payload_bytes: sample.len(),
        connect: connect.summary(),
        answered: totals.answered(),
        created: totals.created_count(),
        requests_per_s: totals.answered() as f64 / secs,
        created_per_s: totals.created_count() as f64 / secs,
        statuses: totals.statuses,
        errors: totals.errors,
        reconnects: totals.reconnects,
        latency_201: totals.created.summary(),
        latency_other: totals.other.summary(),
        first_errors: totals.first_errors,
        cpu,
        sut_memory,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(target: &str) -> IngestLoadArgs {
        IngestLoadArgs {
            target: target.into(),
            ca_file: None,
            connections: 4,
            duration: 1.0,
            timeout: 1.0,
            ready_timeout: 0.0,
            pid: None,
            device_prefix: "t".into(),
            label: String::new(),
        }
    }

    #[test]
    fn answers_are_tallied_by_status_and_only_201s_are_the_commit_latency() {
        let mut a = Totals::default();
        a.answer(201, Duration::from_millis(2));
        a.answer(201, Duration::from_millis(4));
        a.answer(503, Duration::from_millis(1));
        let mut b = Totals::default();
        b.answer(201, Duration::from_millis(3));
        b.error(&BenchError::Http("reset".into()));
        b.reconnects = 1;
        a.merge(b);
        assert_eq!(a.statuses, BTreeMap::from([(201, 3), (503, 1)]));
        assert_eq!((a.answered(), a.created_count()), (4, 3));
        assert_eq!((a.errors, a.reconnects), (1, 1));
        assert_eq!(a.created.count(), 3);
        assert_eq!(a.other.count(), 1);
        assert_eq!(a.first_errors, ["http: reset"]);
    }

    #[test]
    fn a_reading_is_posted_as_senml_json_to_its_devices_path() {
        let req = ingest_request("127.0.0.1:8443", "bed-7", b"[]".to_vec()).expect("request");
        assert_eq!(req.method(), hyper::Method::POST);
        assert_eq!(req.uri().path(), "/v1/devices/bed-7/readings");
        assert_eq!(req.headers()["content-type"], "application/senml+json");
        assert_eq!(req.headers()["host"], "127.0.0.1:8443");
    }

    #[test]
    fn runs_are_bounded_and_loopback_only() {
        assert!(check(&args("127.0.0.1:8443")).is_ok());
        assert!(matches!(
            check(&args("192.0.2.1:8443")),
            Err(BenchError::NotLoopback(_))
        ));
        let mut a = args("127.0.0.1:8443");
        a.connections = MAX_CONNECTIONS + 1;
        assert!(matches!(check(&a), Err(BenchError::InvalidArgs(_))));
        let mut a = args("127.0.0.1:8443");
        a.duration = 601.0;
        assert!(matches!(check(&a), Err(BenchError::InvalidArgs(_))));
    }
}
