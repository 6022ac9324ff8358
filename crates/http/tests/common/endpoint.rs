//! A real HTTP(S) endpoint for the uplink to POST to: axum over tokio-rustls (or plain TCP) on
//! 127.0.0.1:0. It records every request (headers, body gunzipped when sent gzipped, the client
//! certificate's fingerprint), every failed handshake, and answers from a script (default 200).

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::serve::{IncomingStream, Listener};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::either::Either;
use wardgate_core::Shutdown;

use super::pki::Pair;

/// One request as the endpoint saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    /// The body as sent on the wire.
    pub raw: Vec<u8>,
    /// The body after undoing `Content-Encoding: gzip`.
    pub body: Vec<u8>,
    /// SHA-256 (hex) of the client certificate, when one was presented.
    pub client_cert: Option<String>,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    /// The reading ids of the JSON array body, in order.
    pub fn ids(&self) -> Vec<String> {
        let v: serde_json::Value =
            serde_json::from_slice(&self.body).expect("the body is a JSON array");
        v.as_array()
            .expect("an array")
            .iter()
            .map(|r| r["id"].as_str().expect("an id").to_owned())
            .collect()
    }
}

/// A scripted answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    /// Wait this long before answering.
    pub delay: Duration,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            delay: Duration::ZERO,
        }
    }

    pub fn header(mut self, name: &'static str, value: &str) -> Reply {
        self.headers.push((name, value.to_owned()));
        self
    }

    pub fn after(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

#[derive(Debug, Default)]
struct Shared {
    received: Mutex<Vec<Received>>,
    handshake_errors: Mutex<Vec<String>>,
    script: Mutex<VecDeque<Reply>>,
    /// When set, requests without `Authorization: Bearer <this>` get 401.
    token: Option<String>,
}

/// A running endpoint; stops when dropped.
#[derive(Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Shutdown,
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// How the endpoint speaks.
pub enum Mode<'a> {
    Plain,
    /// TLS with this certificate; client certificates required when `client_ca` is set.
    Tls {
        server: &'a Pair,
        client_ca: Option<&'a Path>,
    },
}

/// The rustls server configuration of a test endpoint.
pub fn server_config(server: &Pair, client_ca: Option<&Path>) -> Arc<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions");
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca).expect("read CA") {
                roots.add(c.expect("CA PEM")).expect("add CA");
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let chain: Vec<_> = CertificateDer::pem_file_iter(&server.cert)
        .expect("read cert")
        .map(|c| c.expect("cert PEM"))
        .collect();
    let key = PrivateKeyDer::from_pem_file(&server.key).expect("read key");
    let mut config = builder.with_single_cert(chain, key).expect("server config");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

#[derive(Debug, Clone)]
struct Peer {
    client_cert: Option<String>,
}

struct TestListener {
    tcp: TcpListener,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
}

impl Connected<IncomingStream<'_, TestListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TestListener>) -> Self {
        stream.remote_addr().clone()
    }
}

impl Listener for TestListener {
    type Io = Either<TlsStream<TcpStream>, TcpStream>;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Peer) {
        loop {
            let Ok((tcp, _)) = self.tcp.accept().await else {
                continue;
            };
            let Some(acceptor) = &self.tls else {
                return (Either::Right(tcp), Peer { client_cert: None });
            };
            // One handshake at a time: enough for one uplink.
            match acceptor.accept(tcp).await {
                Ok(tls) => {
                    let client_cert = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|der| super::sha256_hex(der.as_ref()));
                    return (Either::Left(tls), Peer { client_cert });
                }
                Err(e) => self
                    .shared
                    .handshake_errors
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(e.to_string()),
            }
        }
    }

    fn local_addr(&self) -> io::Result<Peer> {
        Ok(Peer { client_cert: None })
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let body = if headers
        .get("content-encoding")
        .is_some_and(|v| v.as_bytes() == b"gzip")
    {
        use std::io::Read;
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .expect("a valid gzip body");
        out
    } else {
        raw.to_vec()
    };
    let authorized = match &shared.token {
        None => true,
        Some(t) => headers
            .get("authorization")
            .is_some_and(|v| v.as_bytes() == format!("Bearer {t}").as_bytes()),
    };
    shared
        .received
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(Received {
            headers,
            raw: raw.to_vec(),
            body,
            client_cert: peer.client_cert,
            at: Instant::now(),
        });
    if !authorized {
        return (StatusCode::UNAUTHORIZED, "bad token").into_response();
    }
    let reply = shared
        .script
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .pop_front()
        .unwrap_or_else(|| Reply::status(200));
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut r = (
        StatusCode::from_u16(reply.status).expect("a status"),
        "answer",
    )
        .into_response();
    for (name, value) in reply.headers {
        r.headers_mut()
            .insert(name, value.parse().expect("a header value"));
    }
    r
}

impl Endpoint {
    /// Starts an endpoint; `token` set means bearer authentication is checked.
    pub async fn start(mode: Mode<'_>, token: Option<&str>) -> Endpoint {
        let tls = match mode {
            Mode::Plain => None,
            Mode::Tls { server, client_ca } => {
                Some(TlsAcceptor::from(server_config(server, client_ca)))
            }
        };
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = tcp.local_addr().expect("addr");
        let shared = Arc::new(Shared {
            token: token.map(str::to_owned),
            ..Shared::default()
        });
        let listener = TestListener {
            tcp,
            tls,
            shared: shared.clone(),
        };
        let app = Router::new()
            .route("/v1/batches", post(handle))
            .with_state(shared.clone())
            .into_make_service_with_connect_info::<Peer>();
        let shutdown = Shutdown::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
        });
        Endpoint {
            addr,
            shared,
            shutdown,
        }
    }

    /// The URL the uplink should POST to.
    pub fn url(&self, scheme: &str) -> String {
        format!("{scheme}://{}/v1/batches", self.addr)
    }

    /// Answers the next requests with these, in order (then 200).
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.shared
            .script
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(replies);
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared
            .received
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn handshake_errors(&self) -> Vec<String> {
        self.shared
            .handshake_errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Every reading id received, in arrival order (duplicates kept).
    pub fn ids(&self) -> Vec<String> {
        self.received().iter().flat_map(Received::ids).collect()
    }
}
