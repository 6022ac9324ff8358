//! The far end of the gateway's HTTPS uplink, for benchmarks: an HTTP/1.1 server (over TLS with
//! [`crate::tls::server_config`], or plain) that answers 200 to every POST whose body is a JSON
//! array of normalized readings (gzipped when `Content-Encoding: gzip`), and records every
//! reading it received (device, class, `seq`, when its request's body was complete) plus every
//! request (when, how many readings, bytes on the wire and decoded). Anything else is answered
//! 400/405 and counted: the gateway then retries, which the counts make visible.
//!
//! It runs on its own thread with a single-threaded tokio runtime. Memory is bounded by
//! [`MAX_ARRIVALS`] readings and [`MAX_BODY`] bytes per request body (decoded).

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::CONTENT_ENCODING;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::ServerConfig;
use tokio::sync::oneshot;
use tokio_rustls::TlsAcceptor;

use crate::arrivals::{Arrival, Class, parse_batch};
use crate::error::BenchError;

/// Most readings kept (≈ 100 bytes each); past it they are counted only.
pub const MAX_ARRIVALS: usize = 4_000_000;
/// Largest request body accepted, bytes (on the wire, and again after gunzip).
pub const MAX_BODY: usize = 64 << 20;

/// One request as the sink answered it with 200.
#[derive(Debug, Clone, Copy)]
pub struct Batch {
    /// When its body was complete.
    pub at: Instant,
    /// Readings in it.
    pub readings: u32,
    /// Body bytes as sent (gzipped or not).
    pub wire_bytes: u32,
}

/// Everything the sink saw.
#[derive(Debug, Default)]
pub struct SinkRecorded {
    /// Every reading of every accepted batch, in arrival order (duplicates included).
    pub arrivals: Vec<Arrival>,
    /// Readings past [`MAX_ARRIVALS`], counted only.
    pub overflow: u64,
    /// Accepted requests, in arrival order.
    pub batches: Vec<Batch>,
    /// Body bytes of accepted requests after gunzip.
    pub decoded_bytes: u64,
    /// Accepted requests with `Content-Encoding: gzip`.
    pub gzip_requests: u64,
    /// Requests answered 400 (body unreadable, not gzip, not a JSON array of readings) or 405.
    pub refused_requests: u64,
    /// TCP connections accepted.
    pub connections: u64,
    /// TLS handshakes that failed.
    pub tls_failures: u64,
    /// Negotiated TLS version of each TLS connection (`TLSv1_3`, ...).
    pub tls_versions: Vec<String>,
}

/// Live counters, readable while the sink runs.
#[derive(Debug, Default)]
pub struct SinkProgress {
    /// Accepted requests.
    pub requests: AtomicU64,
    /// Distinct (device, seq) readings received.
    pub unique: AtomicU64,
}

#[derive(Debug, Default)]
struct Inner {
    rec: SinkRecorded,
    seen: HashSet<(String, u64)>,
}

#[derive(Debug, Default)]
struct Shared {
    progress: SinkProgress,
    inner: Mutex<Inner>,
}

impl Shared {
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        f(&mut self.inner.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Why a request body was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `Content-Encoding: gzip` but not gzip (or larger than [`MAX_BODY`] decoded).
    BadGzip,
    /// Not a JSON array of normalized readings.
    NotReadings,
}

/// Device, class and `seq` of each reading of a batch, in order.
pub type Readings = Vec<(String, Class, Option<u64>)>;

/// Decodes one request body: gunzips it when `gzip`, then parses the readings. Returns the
/// readings and the decoded size.
pub fn decode_batch(wire: &[u8], gzip: bool) -> Result<(Readings, usize), Refusal> {
    let plain;
    let body = if gzip {
        use std::io::Read;
        let mut out = Vec::with_capacity(wire.len() * 4);
        flate2::read::GzDecoder::new(wire)
            .take(MAX_BODY as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|_| Refusal::BadGzip)?;
        if out.len() > MAX_BODY {
            return Err(Refusal::BadGzip);
        }
        plain = out;
        plain.as_slice()
    } else {
        wire
    };
    let readings = parse_batch(body).ok_or(Refusal::NotReadings)?;
    Ok((readings, body.len()))
}

/// A running sink.
#[derive(Debug)]
pub struct HttpsSink {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl HttpsSink {
    /// Binds `listen` (loopback, checked by the caller) and serves until [`Self::finish`]. TLS
    /// with `tls`, plain HTTP without. The socket is listening when this returns.
    pub fn start(listen: SocketAddr, tls: Option<Arc<ServerConfig>>) -> Result<Self, BenchError> {
        let listener = std::net::TcpListener::bind(listen)
            .map_err(|e| BenchError::io(format!("bind the HTTPS sink on {listen}"), e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| BenchError::io("set nonblocking", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| BenchError::io("sink address", e))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| BenchError::io("sink runtime", e))?;
        let shared = Arc::new(Shared::default());
        let (stop_tx, stop_rx) = oneshot::channel();
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("https-sink".into())
                .spawn(move || {
                    rt.block_on(serve(listener, tls.map(TlsAcceptor::from), shared, stop_rx))
                })
                .map_err(|e| BenchError::io("spawn the HTTPS sink", e))?
        };
        Ok(HttpsSink {
            addr,
            shared,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The live counters.
    pub fn progress(&self) -> &SinkProgress {
        &self.shared.progress
    }

    /// Stops serving (connections are dropped) and returns what was recorded.
    pub fn finish(mut self) -> SinkRecorded {
        self.shutdown();
        self.shared.with(|i| std::mem::take(&mut i.rec))
    }

    fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for HttpsSink {
    fn drop(&mut self) {
        self.shutdown();
    }
}

async fn serve(
    listener: std::net::TcpListener,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    mut stop: oneshot::Receiver<()>,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    loop {
        tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => {
                let Ok((tcp, _)) = accepted else { continue };
                let _ = tcp.set_nodelay(true);
                shared.with(|i| i.rec.connections += 1);
                tokio::spawn(connection(tcp, tls.clone(), shared.clone()));
            }
        }
    }
}

async fn connection(tcp: tokio::net::TcpStream, tls: Option<TlsAcceptor>, shared: Arc<Shared>) {
    let svc = {
        let shared = shared.clone();
        service_fn(move |req| handle(req, shared.clone()))
    };
    let http = hyper::server::conn::http1::Builder::new();
    match tls {
        Some(acceptor) => match acceptor.accept(tcp).await {
            Ok(stream) => {
                let version = stream.get_ref().1.protocol_version();
                shared.with(|i| {
                    i.rec
                        .tls_versions
                        .push(version.map_or_else(|| "?".into(), |v| format!("{v:?}")));
                });
                let _ = http.serve_connection(TokioIo::new(stream), svc).await;
            }
            Err(_) => shared.with(|i| i.rec.tls_failures += 1),
        },
        None => {
            let _ = http.serve_connection(TokioIo::new(tcp), svc).await;
        }
    }
}

fn answer(status: StatusCode) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = status;
    r
}

async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != Method::POST {
        shared.with(|i| i.rec.refused_requests += 1);
        return Ok(answer(StatusCode::METHOD_NOT_ALLOWED));
    }
    let gzip = req
        .headers()
        .get(CONTENT_ENCODING)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
    let Ok(body) = Limited::new(req.into_body(), MAX_BODY).collect().await else {
        shared.with(|i| i.rec.refused_requests += 1);
        return Ok(answer(StatusCode::BAD_REQUEST));
    };
    let at = Instant::now();
    let wire = body.to_bytes();
    let Ok((readings, decoded)) = decode_batch(&wire, gzip) else {
        shared.with(|i| i.rec.refused_requests += 1);
        return Ok(answer(StatusCode::BAD_REQUEST));
    };
    let progress = &shared.progress;
    shared.with(|i| {
        let rec = &mut i.rec;
        rec.batches.push(Batch {
            at,
            readings: u32::try_from(readings.len()).unwrap_or(u32::MAX),
            wire_bytes: u32::try_from(wire.len()).unwrap_or(u32::MAX),
        });
        rec.decoded_bytes += decoded as u64;
        rec.gzip_requests += u64::from(gzip);
        for (device, class, seq) in readings {
            if let Some(s) = seq
                && i.seen.insert((device.clone(), s))
            {
                progress.unique.fetch_add(1, Ordering::Relaxed);
            }
            if rec.arrivals.len() < MAX_ARRIVALS {
                rec.arrivals.push(Arrival {
                    device,
                    class,
                    seq,
                    at,
                });
            } else {
                rec.overflow += 1;
            }
        }
    });
    progress.requests.fetch_add(1, Ordering::Relaxed);
    Ok(answer(StatusCode::OK))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BATCH: &[u8] = br#"[{"id":"a","device":"d-1","class":"vital","records":[{"n":"seq","v":1}]},{"id":"b","device":"d-1","class":"vital","records":[{"n":"seq","v":2}]}]"#;

    fn gz(b: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(b).expect("gzip");
        e.finish().expect("gzip")
    }

    #[test]
    fn a_plain_and_a_gzipped_batch_decode_to_the_same_readings() {
        let (plain, n) = decode_batch(BATCH, false).expect("plain");
        assert_eq!(n, BATCH.len());
        assert_eq!(plain.len(), 2);
        let (zipped, n) = decode_batch(&gz(BATCH), true).expect("gzip");
        assert_eq!(n, BATCH.len(), "decoded size is the JSON's");
        assert_eq!(zipped, plain);
    }

    #[test]
    fn a_body_that_is_not_gzip_or_not_readings_is_refused() {
        assert_eq!(decode_batch(BATCH, true), Err(Refusal::BadGzip));
        assert_eq!(decode_batch(b"hello", false), Err(Refusal::NotReadings));
        assert_eq!(decode_batch(&gz(b"{}"), true), Err(Refusal::NotReadings));
    }

    /// Talks to the sink through a real TLS client (the one the ingest load generator uses).
    #[test]
    fn the_sink_answers_200_over_tls_and_records_each_reading() {
        let dir = tempfile::tempdir().expect("tempdir");
        crate::tls::gen_cert(&crate::tls::GenCertArgs {
            dir: dir.path().to_owned(),
        })
        .expect("cert");
        let tls = crate::tls::server_config(dir.path()).expect("server config");
        let sink = HttpsSink::start("127.0.0.1:0".parse().expect("addr"), Some(tls)).expect("sink");
        let client = crate::tls::client_config(&dir.path().join(crate::tls::CERT_FILE))
            .expect("client config");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        let statuses = rt.block_on(async {
            let mut conn = crate::https_ingest::Conn::connect(sink.addr(), Some(&client))
                .await
                .expect("connect");
            let mut out = vec![];
            for (body, gzip) in [
                (BATCH.to_vec(), false),
                (gz(BATCH), true),
                (b"x".to_vec(), false),
            ] {
                let mut req = Request::post("/in").header("content-type", "application/json");
                if gzip {
                    req = req.header("content-encoding", "gzip");
                }
                let req = req.body(Full::new(Bytes::from(body))).expect("request");
                out.push(conn.send(req).await.expect("answer").0);
            }
            out
        });
        assert_eq!(statuses, [200, 200, 400]);
        assert_eq!(sink.progress().unique.load(Ordering::Relaxed), 2);
        let rec = sink.finish();
        assert_eq!(rec.batches.len(), 2);
        assert_eq!(rec.arrivals.len(), 4, "duplicates are kept");
        assert_eq!(
            (rec.gzip_requests, rec.refused_requests, rec.connections),
            (1, 1, 1)
        );
        assert_eq!(rec.decoded_bytes, 2 * BATCH.len() as u64);
        assert_eq!(rec.tls_versions, ["TLSv1_3"]);
    }
}
