//! HTTP(S) device ingest: `POST /v1/devices/{id}/readings[?class=alarm|vital|telemetry|bulk]`
//! on its own listener ([`IngestServer`]).
//!
//! A thin protocol shell over the ingest pipeline of `wardgate-core`: it proves who the peer is,
//! reads the body within its bounds, hands a [`Submission`] to [`IngestPipeline::submit`] and
//! maps the outcome to HTTP. Invariant: a 2xx is produced only from a [`wardgate_core::Pending`]
//! that resolved `Ok`, i.e. after the store made the reading durable.
//!
//! - **Identity** ([`PeerContext`] with transport `https` or `http`): an
//!   `Authorization: Bearer <token>` header is checked by the [`CredentialStore`]
//!   (`verify_bearer`; a header that does not verify is 401 whatever else the peer has); without
//!   one, a client certificate verified against `tls.client_ca_file` proves
//!   `x509-sha256:<hex SHA-256 of its DER>`. The pipeline's [`wardgate_core::Authorizer`] (the
//!   device registry) then decides. With `AllowAll` (no registry) tokens are not checked and
//!   every request is accepted; the gateway warns about that at start-up.
//! - **Resource** named to the authorizer: `/v1/readings`, as CoAP names its readings resource,
//!   so one registry `resources` entry covers a device on either protocol.
//! - **Content types**: `application/senml+json`, `application/senml+cbor`,
//!   `application/json` (parameters ignored); anything else is 415.
//! - **Answers**: 201 with `{"ids": [...], "device": ..., "class": ...}` once durable; errors are
//!   RFC 9457 `application/problem+json` ([`problem`]): 400 malformed, 401 (+
//!   `WWW-Authenticate: Bearer`), 403, 404, 405, 408 (body too slow), 413 (body over
//!   `max_body_bytes`, checked against `Content-Length` and again while reading: nothing is
//!   buffered past it; or too many records), 415, 429 (per-device rate, + `Retry-After`), 503
//!   (store full, busy or shutting down, + `Retry-After`), 500 (store failing). Each refusal is
//!   counted and logged (at most once a minute per reason).
//! - **Bounds**: `max_connections`, TLS handshake, header (slow headers are cut off by hyper),
//!   body and idle timeouts, per-device token buckets in a fixed array.
//! - **Shutdown**: stops accepting, lets each connection finish the request it is serving
//!   (bounded by [`DRAIN_TIMEOUT`]), then returns.

pub mod config;
mod metrics;
mod problem;

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::serve::Listener;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::ServiceExt;
use wardgate_core::payload::{ContentFormat, DecodeError};
use wardgate_core::reading::valid_device_id;
use wardgate_core::{
    Action, AuthRequest, CredentialStore, Denied, HealthReporter, Identity, IdentityKind,
    IngestError, IngestPipeline, MessageClass, PeerContext, Protocol, Rate, Refused, Shutdown,
    Submission, Take, TokenBuckets, TransportKind,
};

use crate::error::HttpError;
use crate::listener::{BoundedListener, Limits, PeerInfo};
use metrics::Refusal;
use problem::{Kind, Problem};

pub use config::{IngestHttpConfig, IngestTlsConfig};
pub use metrics::IngestMetrics;

/// The resource named to the authorizer (as CoAP names its readings resource).
const RESOURCE: &str = "/v1/readings";
/// The route.
const ROUTE: &str = "/v1/devices/{id}/readings";
/// Longest wait at shutdown for connections to finish their requests.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Buckets of the per-device rate limit (fixed memory, whatever the number of device ids).
const RATE_BUCKETS: usize = 4096;
/// Longest bearer token considered (longer ones are refused without hashing them).
const MAX_TOKEN: usize = 4096;
/// After a body went over the limit, up to this many more bytes are read and discarded (within
/// [`LINGER_TIME`]) so that the client, still sending, receives the 413 instead of a reset
/// connection. Nothing is buffered.
const LINGER_BYTES: usize = 1024 * 1024;
/// See [`LINGER_BYTES`].
const LINGER_TIME: Duration = Duration::from_secs(1);

/// What the ingest server needs from the rest of the gateway.
#[derive(Clone)]
pub struct IngestDeps {
    /// The one ingest pipeline (its authorizer decides who may write what).
    pub pipeline: IngestPipeline,
    /// Where bearer tokens are verified (the device registry; `NoCredentials` without one).
    pub credentials: Arc<dyn CredentialStore>,
    /// Its counters.
    pub metrics: IngestMetrics,
    /// The traffic monitor's tap: every connection's TLS handshake outcome and read/write
    /// lengths become flow records (`app_protocol` `https`). `None`: not monitored.
    pub tap: Option<Arc<dyn wardgate_core::DatagramTap>>,
}

impl fmt::Debug for IngestDeps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IngestDeps")
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

/// Shared by every request.
struct IngestState {
    pipeline: IngestPipeline,
    credentials: Arc<dyn CredentialStore>,
    metrics: IngestMetrics,
    max_body: usize,
    body_timeout: Duration,
    busy_retry_after: u32,
    default_class: MessageClass,
    per_device: Mutex<TokenBuckets>,
    /// Failed authentications per source address (the admin API's limit: 10 a minute, then
    /// 429 for the rest of the minute), so tokens cannot be guessed at line rate.
    auth_failures: crate::admin::auth::FailureLimit,
    /// The traffic monitor and the listener's address: 401 and 403 answers are told to it
    /// (`DatagramTap::auth_failure`), as the CoAP taps read 4.01 and 4.03 from the wire.
    tap: Option<(Arc<dyn wardgate_core::DatagramTap>, SocketAddr)>,
}

/// A bound, not yet serving, ingest server.
pub struct IngestServer {
    listener: BoundedListener,
    state: Arc<IngestState>,
    reporter: HealthReporter,
    header_timeout: Duration,
}

impl fmt::Debug for IngestServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IngestServer")
            .field("listener", &self.listener)
            .finish_non_exhaustive()
    }
}

impl IngestServer {
    /// Validates `cfg` (the same rules as [`IngestHttpConfig::validate`]), reads the TLS files
    /// and binds the listener. `reporter` is marked ready once bound.
    pub async fn bind(
        cfg: &IngestHttpConfig,
        deps: IngestDeps,
        reporter: HealthReporter,
    ) -> Result<IngestServer, HttpError> {
        let mut problems = wardgate_core::validate::Problems::new();
        cfg.validate("ingest.http", &mut problems);
        if !problems.is_empty() {
            let all: Vec<String> = problems
                .into_vec()
                .iter()
                .map(ToString::to_string)
                .collect();
            return Err(HttpError::Invalid(all.join("; ")));
        }
        let tls = match &cfg.tls {
            Some(t) => Some(tokio_rustls::TlsAcceptor::from(crate::tls::server_config(
                &crate::tls::ServerFiles {
                    cert: ("ingest.http.tls.cert_file", &t.cert_file),
                    key: ("ingest.http.tls.key_file", &t.key_file),
                    client_ca: t
                        .client_ca_file
                        .as_deref()
                        .map(|p| ("ingest.http.tls.client_ca_file", p)),
                },
            )?)),
            None => None,
        };
        let (tcp, addr) = crate::server::bind_tcp(cfg.listen).await?;
        if tls.is_none() && !addr.ip().is_loopback() {
            tracing::warn!(listen = %addr, "HTTP ingest without TLS on a non-loopback address (allow_plain): tokens and readings travel unencrypted; lab use only");
        }
        let metrics = deps.metrics.clone();
        let listener = BoundedListener::new(
            "ingest",
            tcp,
            tls,
            Limits {
                handshake_timeout: cfg.handshake_timeout,
                max_connections: cfg.max_connections,
                idle_timeout: cfg.idle_timeout,
            },
            Arc::new(move |reason| metrics.handshake_failed(reason)),
        )
        .with_tap(deps.tap.clone())
        .map_err(|source| HttpError::Bind {
            addr: cfg.listen,
            source,
        })?;
        let scheme = if cfg.tls.is_some() { "https" } else { "http" };
        reporter.ready(format!("ingest {scheme} {addr}"));
        let state = IngestState {
            pipeline: deps.pipeline,
            credentials: deps.credentials,
            metrics: deps.metrics,
            max_body: cfg.max_body_bytes,
            body_timeout: cfg.body_timeout,
            busy_retry_after: cfg.busy_retry_after_secs,
            default_class: cfg.default_class,
            auth_failures: crate::admin::auth::FailureLimit::default(),
            tap: deps.tap.map(|t| (t, addr)),
            per_device: Mutex::new(TokenBuckets::new(
                Rate {
                    rate: cfg.per_device_rate,
                    burst: cfg.per_device_burst,
                },
                RATE_BUCKETS,
            )),
        };
        Ok(IngestServer {
            listener,
            state: Arc::new(state),
            reporter,
            header_timeout: cfg.header_timeout,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        Listener::local_addr(&self.listener).ok().map(|p| p.addr)
    }

    /// Serves until `shutdown` is cancelled, then lets connections finish the requests they
    /// are serving (at most [`DRAIN_TIMEOUT`]) and returns.
    pub async fn run(mut self, shutdown: Shutdown) -> Result<(), HttpError> {
        let app = router(self.state.clone());
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(self.header_timeout)
            .keep_alive(true);
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                (io, peer) = self.listener.accept() => {
                    let app = app.clone();
                    let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                        req.extensions_mut().insert(ConnectInfo(peer));
                        app.clone().oneshot(req.map(Body::new))
                    });
                    let conn = http.serve_connection(TokioIo::new(io), service);
                    let stop = shutdown.clone();
                    conns.spawn(async move {
                        tokio::pin!(conn);
                        let result = tokio::select! {
                            r = conn.as_mut() => r,
                            () = stop.cancelled() => {
                                conn.as_mut().graceful_shutdown();
                                conn.await
                            }
                        };
                        if let Err(e) = result {
                            // Clients that vanish or send garbage: their problem, not ours.
                            tracing::debug!(peer = %peer.addr, error = %e, "ingest connection ended with an error");
                        }
                    });
                }
            }
        }
        let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
            while conns.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                connections = conns.len(),
                "ingest connections still open after the drain deadline; closing them"
            );
            conns.abort_all();
        }
        self.reporter.not_ready("stopped");
        Ok(())
    }
}

/// The API's description, served at [`OPENAPI_PATH`] for device makers and their tools.
const OPENAPI: &str = include_str!("../../../../docs/ingest-api.openapi.json");
/// Where the description is served (no token needed).
pub const OPENAPI_PATH: &str = "/v1/openapi.json";

fn router(state: Arc<IngestState>) -> Router {
    Router::new()
        .route(ROUTE, post(post_readings))
        .route(
            OPENAPI_PATH,
            axum::routing::get(|| async {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    OPENAPI,
                )
            }),
        )
        .method_not_allowed_fallback(|| async {
            Problem::new(Kind::MethodNotAllowed, "use POST").into_response()
        })
        .fallback(|| async {
            Problem::new(Kind::NotFound, "POST readings to /v1/devices/{id}/readings")
                .into_response()
        })
        .with_state(state)
}

/// A refusal: counted, logged (rate-limited), told to the traffic monitor when it is about
/// credentials (401, 403), answered.
fn refuse(st: &IngestState, peer: &PeerInfo, reason: &'static str, p: Problem) -> Response {
    let status = p.kind.status().as_u16();
    if let (Some((tap, local)), 401 | 403) = (&st.tap, status) {
        let transport = if peer.tls {
            TransportKind::Https
        } else {
            TransportKind::Http
        };
        tap.auth_failure(&PeerContext::new(peer.addr, transport), *local);
    }
    Refusal {
        peer: peer.addr,
        reason,
        status: p.kind.status().as_u16(),
        detail: &p.detail,
    }
    .emit(&st.metrics);
    st.metrics.response(p.kind.status().as_u16());
    p.into_response()
}

async fn post_readings(
    State(st): State<Arc<IngestState>>,
    ConnectInfo(peer): ConnectInfo<PeerInfo>,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
    uri: Uri,
    headers: HeaderMap,
    request: Request,
) -> Response {
    let now = Instant::now();
    if st.auth_failures.blocked(peer.addr.ip(), now) {
        let p = Problem::new(
            Kind::RateLimited,
            "too many failed authentications from this address; try again later",
        )
        .retry_after(60);
        return refuse(&st, &peer, "auth_rate_limited", p);
    }
    let device = match path {
        Ok(Path(d)) if valid_device_id(d.as_bytes()) => d,
        _ => {
            let p = Problem::new(
                Kind::BadRequest,
                "the device id must be 1-128 of [A-Za-z0-9._:-]",
            );
            return refuse(&st, &peer, "bad_device_id", p);
        }
    };
    let class = match class_of(&uri, st.default_class) {
        Some(c) => c,
        None => {
            let p = Problem::new(
                Kind::BadRequest,
                "class must be alarm, vital, telemetry or bulk",
            );
            return refuse(&st, &peer, "bad_class", p);
        }
    };
    let format = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(ContentFormat::from_media_type)
        .filter(|f| {
            matches!(
                f,
                ContentFormat::SenmlJson | ContentFormat::SenmlCbor | ContentFormat::Json
            )
        });
    let Some(format) = format else {
        let p = Problem::new(
            Kind::UnsupportedMediaType,
            "Content-Type must be application/senml+json, application/senml+cbor or application/json",
        );
        return refuse(&st, &peer, "unsupported_format", p);
    };
    let limited = st
        .per_device
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take(&device, Instant::now());
    if let Take::Limited { retry_after_secs } = limited {
        let p = Problem::new(Kind::RateLimited, "too many requests for this device")
            .retry_after(retry_after_secs);
        return refuse(&st, &peer, "rate_limited", p);
    }
    let mut ctx = PeerContext::new(
        peer.addr,
        if peer.tls {
            TransportKind::Https
        } else {
            TransportKind::Http
        },
    );
    match identity(&st, &ctx, &peer, &headers) {
        Ok(Some(id)) => ctx = ctx.with_identity(id),
        Ok(None) => {}
        Err(p) => {
            note_auth_failure(&st, &peer, now);
            return refuse(&st, &peer, "unauthenticated", p);
        }
    }
    // Who may write is settled before the body is read, so a peer the authorizer refuses
    // cannot make us read (and hold) up to `max_body_bytes`. The pipeline asks again with the
    // body (the same in-memory answer unless the registry changed in between).
    let ask = AuthRequest {
        peer: &ctx,
        protocol: Protocol::Http,
        claimed_device: &device,
        class,
        resource: RESOURCE,
        action: Action::Write,
    };
    if let Err(d) = st.pipeline.authorizer().precheck_write(&ask) {
        if matches!(d, Denied::Unauthenticated(_)) {
            note_auth_failure(&st, &peer, now);
        }
        let e = Refused::Denied(d);
        return refuse(&st, &peer, e.reason(), refusal(&e, st.busy_retry_after));
    }
    let body = match read_body(&st, &headers, request.into_body()).await {
        Ok(b) => b,
        Err((reason, p)) => return refuse(&st, &peer, reason, p),
    };
    let submission = Submission {
        peer: &ctx,
        protocol: Protocol::Http,
        device: &device,
        class,
        resource: RESOURCE,
        format: Some(format),
        body: &body,
        default_name: None,
    };
    let pending = match st.pipeline.submit(&submission) {
        Ok(p) => p,
        Err(e) => {
            let reason = e.reason();
            return refuse(&st, &peer, reason, refusal(&e, st.busy_retry_after));
        }
    };
    match pending.await {
        Ok(a) => {
            st.metrics.accepted(a.class);
            st.metrics.response(201);
            let mut body = serde_json::json!({
                "ids": [a.id.to_string()],
                "device": a.device,
                "class": a.class.as_str(),
            });
            if a.held {
                // Quarantined: stored, delivered once an administrator approves the identity.
                body["held"] = serde_json::Value::Bool(true);
            }
            (StatusCode::CREATED, axum::Json(body)).into_response()
        }
        Err(e) => {
            let reason = e.reason();
            refuse(&st, &peer, reason, refusal(&e, st.busy_retry_after))
        }
    }
}

/// Charges a failed authentication to the peer's address; logs once when it reaches the limit.
fn note_auth_failure(st: &IngestState, peer: &PeerInfo, now: Instant) {
    if st.auth_failures.fail(peer.addr.ip(), now) {
        tracing::warn!(
            peer = %peer.addr,
            "HTTPS ingest: source rate limited after repeated failed authentications"
        );
    }
}

/// `?class=` (the last one wins), or the default; `None` when it names no class.
fn class_of(uri: &Uri, default: MessageClass) -> Option<MessageClass> {
    let mut class = default;
    for pair in uri.query().unwrap_or("").split('&') {
        if let Some(v) = pair.strip_prefix("class=") {
            class = v.parse().ok()?;
        }
    }
    Some(class)
}

/// The identity the request proves: its bearer token (checked now), else its verified client
/// certificate, else none.
fn identity(
    st: &IngestState,
    ctx: &PeerContext,
    peer: &PeerInfo,
    headers: &HeaderMap,
) -> Result<Option<Identity>, Problem> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        if !st.pipeline.authorizer().authenticates() {
            // AllowAll: nothing to check a token against; the gateway warned at start-up.
            return Ok(None);
        }
        let unauthenticated = |detail: &'static str| {
            Problem::new(Kind::Unauthenticated, detail).challenge("Bearer error=\"invalid_token\"")
        };
        let token = bearer(value.as_bytes())
            .ok_or_else(|| unauthenticated("Authorization must be Bearer <token>"))?;
        return st
            .credentials
            .verify_bearer(ctx, token)
            .map(Some)
            .map_err(|_| unauthenticated("the token is not accepted"));
    }
    Ok(peer.client_cert.map(|fp| {
        let hex: String = fp.iter().map(|b| format!("{b:02x}")).collect();
        Identity::new(IdentityKind::CertificateSha256, hex)
    }))
}

/// The token of `Bearer <token>` (scheme case-insensitive, RFC 6750).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty() && token.len() <= MAX_TOKEN).then_some(token)
}

/// The body, at most `max_body` bytes (refused by `Content-Length` first, then while reading),
/// within `body_timeout`.
async fn read_body(
    st: &IngestState,
    headers: &HeaderMap,
    mut body: Body,
) -> Result<Bytes, (&'static str, Problem)> {
    let too_large = || {
        (
            "too_large",
            Problem::new(
                Kind::TooLarge,
                format!("the body must be at most {} bytes", st.max_body),
            ),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > st.max_body as u64) {
        return Err(too_large());
    }
    let read = async {
        let mut buf = Vec::with_capacity(declared.map_or(1024, |n| n as usize));
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| {
                (
                    "body_error",
                    Problem::new(Kind::BadRequest, "the body could not be read"),
                )
            })?;
            if let Ok(data) = frame.into_data() {
                if buf.len() + data.len() > st.max_body {
                    drop(buf);
                    discard(&mut body).await;
                    return Err(too_large());
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(Bytes::from(buf))
    };
    match tokio::time::timeout(st.body_timeout, read).await {
        Ok(r) => r,
        Err(_) => Err((
            "body_timeout",
            Problem::new(Kind::Timeout, "the body did not arrive in time"),
        )),
    }
}

/// Reads and drops what the client is still sending, up to [`LINGER_BYTES`] within
/// [`LINGER_TIME`] (a lingering close: the 413 then reaches a client that sends its whole body
/// before reading the answer, as curl does).
async fn discard(body: &mut Body) {
    let _ = tokio::time::timeout(LINGER_TIME, async {
        let mut seen = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                seen = seen.saturating_add(data.len());
                if seen > LINGER_BYTES {
                    return;
                }
            }
        }
    })
    .await;
}

/// The HTTP answer to a pipeline refusal (the table in `wardgate_core::pipeline`).
fn refusal(e: &Refused, busy_retry_after: u32) -> Problem {
    match e {
        Refused::Denied(Denied::Unauthenticated(_)) => {
            Problem::new(Kind::Unauthenticated, "not authenticated").challenge("Bearer")
        }
        Refused::Denied(Denied::Forbidden(_)) => Problem::new(
            Kind::Forbidden,
            "this identity may not write these readings",
        ),
        Refused::UnsupportedFormat => Problem::new(
            Kind::UnsupportedMediaType,
            "Content-Type must be application/senml+json, application/senml+cbor or application/json",
        ),
        Refused::Payload(DecodeError::TooManyRecords(n)) => Problem::new(
            Kind::TooLarge,
            format!("a payload may hold at most {n} records"),
        ),
        Refused::Payload(d) => {
            let mut text = d.to_string();
            if text.len() > 200 {
                let mut cut = 200;
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                text.truncate(cut);
            }
            Problem::new(Kind::BadRequest, text)
        }
        Refused::Store(IngestError::Busy) => {
            Problem::new(Kind::Unavailable, "gateway busy, retry later")
                .retry_after(busy_retry_after)
        }
        Refused::Store(IngestError::StoreFull) => {
            Problem::new(Kind::Unavailable, "gateway storage full, retry later")
                .retry_after(busy_retry_after)
        }
        Refused::Store(IngestError::ShuttingDown) => {
            Problem::new(Kind::Unavailable, "gateway shutting down, retry later")
                .retry_after(busy_retry_after)
        }
        Refused::Store(IngestError::Unavailable(_)) => {
            Problem::new(Kind::Internal, "storage unavailable")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_class_comes_from_the_query_or_the_default() {
        let uri: Uri = "/v1/devices/a/readings?class=alarm".parse().unwrap();
        assert_eq!(
            class_of(&uri, MessageClass::Vital),
            Some(MessageClass::Alarm)
        );
        let uri: Uri = "/v1/devices/a/readings".parse().unwrap();
        assert_eq!(class_of(&uri, MessageClass::Bulk), Some(MessageClass::Bulk));
        let uri: Uri = "/v1/devices/a/readings?class=loud".parse().unwrap();
        assert_eq!(class_of(&uri, MessageClass::Vital), None);
    }

    #[test]
    fn only_bearer_tokens_are_taken_from_the_authorization_header() {
        assert_eq!(bearer(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"bearer  abc "), Some(&b"abc"[..]));
        assert_eq!(bearer(b"Basic YWJj"), None);
        assert_eq!(bearer(b"Bearer "), None);
    }

    #[test]
    fn store_refusals_are_503_with_retry_after_and_failures_500_without_internals() {
        let p = refusal(&Refused::Store(IngestError::StoreFull), 7);
        assert_eq!(p.kind, Kind::Unavailable);
        let r = p.into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "7");
        let p = refusal(
            &Refused::Store(IngestError::Unavailable("disk I/O error at /var/x".into())),
            7,
        );
        assert_eq!(p.kind, Kind::Internal);
        assert!(!p.detail.contains("/var/x"));
    }
}
