//! The endpoint's resources: the ingest resource and `/.well-known/core`.
//!
//! Ingest resource: `POST` or `PUT` to `/{ingest_path}/{device-id}[/{name}]`, optional query
//! `class=alarm|vital|telemetry|bulk`. `{name}` is the record name for payloads that carry none
//! (text/plain): `/v1/readings/bed-12/temperature` with `36.9` gives a record named
//! `temperature`. Without `{name}` a text/plain payload is refused (4.00). For SenML the name is
//! passed as the decoders' default and SenML's own names win.
//!
//! Invariant: a 2.xx is produced only from a [`PendingCommit`] that resolved `Ok`, i.e. after the
//! store made the reading durable.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::time::Instant;
use wardgate_core::payload::{self, ContentFormat, DecodeContext, DecodeError, Limits};
use wardgate_core::{Bus, Clock, IngestError, MessageClass, Protocol, Reading};

use crate::block::{self, Reassembly, Step};
use crate::codec::{BlockOpt, Code, Message, opt};
use crate::layer::{RequestId, Response};
use crate::metrics::{CoapMetrics, IngestRejected, PayloadRejected};

/// Link-format Content-Format.
pub const LINK_FORMAT: u16 = 40;

/// Longest device id.
pub const MAX_DEVICE_ID: usize = 128;

/// Longest `{name}` path segment.
const MAX_NAME: usize = 64;

/// Device ids: 1..=128 of `[A-Za-z0-9._:-]`.
pub fn valid_device_id(s: &[u8]) -> bool {
    !s.is_empty()
        && s.len() <= MAX_DEVICE_ID
        && s.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'-'))
}

fn valid_name(s: &[u8]) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME
        && s.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'-' | b'/'))
}

/// Settings of the ingest service.
#[derive(Debug, Clone)]
pub struct IngestSettings {
    /// Gateway id stamped on readings.
    pub gateway_id: Arc<str>,
    /// Ingest path segments (`["v1", "readings"]`).
    pub ingest_path: Vec<String>,
    /// Class without `class=` query.
    pub default_class: MessageClass,
    /// Max-Age of 5.03 answers, seconds.
    pub busy_max_age: u32,
    /// Decoder bounds.
    pub limits: Limits,
    /// Largest body (single datagram or reassembled).
    pub max_body_bytes: usize,
    /// SZX of our Block2 responses.
    pub preferred_szx: u8,
}

/// What the service does with a request.
#[derive(Debug)]
pub enum Reply {
    /// Answer now.
    Now(Response),
    /// Answer when the store resolves.
    Later(PendingCommit),
}

/// What a resolved commit becomes.
#[derive(Debug)]
pub struct CommitMeta {
    created: bool,
    class: MessageClass,
    location: String,
    block1: Option<BlockOpt>,
    peer: SocketAddr,
}

/// A reading queued on the bus, waiting for durability.
#[derive(Debug)]
pub struct PendingCommit {
    id: RequestId,
    rx: oneshot::Receiver<Result<(), IngestError>>,
    meta: Option<CommitMeta>,
}

/// The result of a [`PendingCommit`].
pub type CommitResult = (RequestId, Result<(), IngestError>, CommitMeta);

impl Future for PendingCommit {
    type Output = Option<CommitResult>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let r = match Pin::new(&mut self.rx).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(r)) => r,
            // The store dropped the request: it is shutting down, nothing was committed.
            Poll::Ready(Err(_)) => Err(IngestError::ShuttingDown),
        };
        let id = self.id;
        Poll::Ready(self.meta.take().map(|m| (id, r, m)))
    }
}

/// The resources of one endpoint socket.
#[derive(Debug)]
pub struct Ingest {
    s: IngestSettings,
    bus: Bus,
    clock: Arc<dyn Clock>,
    metrics: CoapMetrics,
    reassembly: Reassembly,
    well_known: Bytes,
    /// `ingest_path` joined with `/`: the start of every Location-Path.
    path_prefix: String,
    accepting: bool,
}

enum Route<'a> {
    WellKnown,
    Ingest {
        device: &'a [u8],
        name: Option<&'a [u8]>,
    },
    NotFound,
}

impl Ingest {
    /// The service.
    pub fn new(
        s: IngestSettings,
        bus: Bus,
        clock: Arc<dyn Clock>,
        metrics: CoapMetrics,
        reassembly: Reassembly,
    ) -> Self {
        let formats: Vec<String> = ContentFormat::ALL
            .iter()
            .map(|f| f.coap_number().to_string())
            .collect();
        let well_known: Bytes = format!(
            "</{}>;rt=\"wardgate.readings\";if=\"core.p\";ct=\"{}\";title=\"POST or PUT readings to /{}/{{device-id}}[/{{name}}][?class=alarm|vital|telemetry|bulk]\"",
            s.ingest_path.join("/"),
            formats.join(" "),
            s.ingest_path.join("/"),
        )
        .into();
        Ingest {
            path_prefix: s.ingest_path.join("/"),
            s,
            bus,
            clock,
            metrics,
            reassembly,
            well_known,
            accepting: true,
        }
    }

    /// The `/.well-known/core` document.
    pub fn well_known(&self) -> &[u8] {
        &self.well_known
    }

    /// Largest accepted body.
    pub fn max_body_bytes(&self) -> usize {
        self.s.max_body_bytes
    }

    /// From now on new requests get 5.03 (graceful shutdown).
    pub fn stop_accepting(&mut self) {
        self.accepting = false;
    }

    /// Idle-transfer expiry is due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.reassembly.next_deadline()
    }

    /// Expires idle block transfers.
    pub fn poll_timers(&mut self, now: Instant) {
        self.reassembly.expire(now);
    }

    fn busy(&self, text: &'static str) -> Response {
        let mut r = Response::diagnostic(Code::SERVICE_UNAVAILABLE, text);
        r.max_age = Some(self.s.busy_max_age);
        r
    }

    fn reject(&self, peer: SocketAddr, reason: &'static str, resp: Response) -> Reply {
        IngestRejected {
            peer,
            reason,
            detail: std::str::from_utf8(&resp.payload).unwrap_or(""),
        }
        .emit(&self.metrics);
        Reply::Now(resp)
    }

    fn route<'a>(&self, msg: &Message<'a>) -> Route<'a> {
        // At most ingest path + device + name segments are looked at; more is not our resource.
        let mut segs: [&[u8]; 10] = [&[]; 10];
        let mut n = 0;
        for s in msg.values(opt::URI_PATH) {
            if n == segs.len() {
                return Route::NotFound;
            }
            segs[n] = s;
            n += 1;
        }
        let segs = &segs[..n];
        if segs == [&b".well-known"[..], &b"core"[..]] {
            return Route::WellKnown;
        }
        let k = self.s.ingest_path.len();
        if n < k + 1 || n > k + 2 {
            return Route::NotFound;
        }
        if !self
            .s
            .ingest_path
            .iter()
            .zip(segs)
            .all(|(want, got)| want.as_bytes() == *got)
        {
            return Route::NotFound;
        }
        Route::Ingest {
            device: segs[k],
            name: segs.get(k + 1).copied(),
        }
    }

    /// Handles a request the message layer handed over.
    pub fn on_request(
        &mut self,
        now: Instant,
        id: RequestId,
        peer: SocketAddr,
        msg: &Message<'_>,
    ) -> Reply {
        if msg.has_option(opt::PROXY_URI) || msg.has_option(opt::PROXY_SCHEME) {
            return self.reject(
                peer,
                "proxy",
                Response::diagnostic(Code::PROXYING_NOT_SUPPORTED, "not a proxy"),
            );
        }
        if !self.accepting {
            return self.reject(peer, "shutting_down", self.busy("shutting down"));
        }
        match self.route(msg) {
            Route::NotFound => self.reject(
                peer,
                "not_found",
                Response::diagnostic(Code::NOT_FOUND, "no such resource"),
            ),
            Route::WellKnown => self.well_known_get(peer, msg),
            Route::Ingest { device, name } => self.ingest(now, id, peer, msg, device, name),
        }
    }

    fn well_known_get(&self, peer: SocketAddr, msg: &Message<'_>) -> Reply {
        if msg.code != Code::GET {
            return self.reject(
                peer,
                "method_not_allowed",
                Response::diagnostic(Code::METHOD_NOT_ALLOWED, "GET only"),
            );
        }
        if let Some(a) = msg.uint_option(opt::ACCEPT, 2) {
            if a != Ok(u32::from(LINK_FORMAT)) {
                return self.reject(
                    peer,
                    "not_acceptable",
                    Response::diagnostic(Code::NOT_ACCEPTABLE, "only link-format (40)"),
                );
            }
        }
        let requested = match msg.block2() {
            None => None,
            Some(Ok(b)) => Some(b),
            Some(Err(_)) => {
                return self.reject(
                    peer,
                    "bad_option",
                    Response::diagnostic(Code::BAD_OPTION, "malformed Block2"),
                );
            }
        };
        let mut r = Response::new(Code::CONTENT);
        r.content_format = Some(LINK_FORMAT);
        match block::block2_slice(&self.well_known, requested, self.s.preferred_szx) {
            Ok(None) => r.payload = self.well_known.clone(),
            Ok(Some((b, range))) => {
                r.block2 = Some(b);
                r.size2 = Some(u32::try_from(self.well_known.len()).unwrap_or(u32::MAX));
                // `range` lies within the document (block2_slice's contract); no copy.
                let end = range.end.min(self.well_known.len());
                r.payload = self.well_known.slice(range.start.min(end)..end);
            }
            Err(e) => return self.reject(peer, "bad_option", e),
        }
        Reply::Now(r)
    }

    fn ingest(
        &mut self,
        now: Instant,
        id: RequestId,
        peer: SocketAddr,
        msg: &Message<'_>,
        device: &[u8],
        name: Option<&[u8]>,
    ) -> Reply {
        let created = match msg.code {
            Code::POST => true,
            Code::PUT => false,
            _ => {
                return self.reject(
                    peer,
                    "method_not_allowed",
                    Response::diagnostic(Code::METHOD_NOT_ALLOWED, "POST or PUT only"),
                );
            }
        };
        let device = match std::str::from_utf8(device) {
            Ok(d) if valid_device_id(device) => d,
            _ => {
                return self.reject(
                    peer,
                    "bad_device_id",
                    Response::diagnostic(
                        Code::BAD_REQUEST,
                        "device id must be 1-128 of [A-Za-z0-9._:-]",
                    ),
                );
            }
        };
        let name = match name {
            None => None,
            Some(n) => match std::str::from_utf8(n) {
                Ok(s) if valid_name(n) => Some(s),
                _ => {
                    return self.reject(
                        peer,
                        "bad_name",
                        Response::diagnostic(Code::BAD_REQUEST, "invalid record name segment"),
                    );
                }
            },
        };
        let mut class = self.s.default_class;
        for q in msg.values(opt::URI_QUERY) {
            if let Some(v) = q.strip_prefix(b"class=") {
                match std::str::from_utf8(v).ok().and_then(|v| v.parse().ok()) {
                    Some(c) => class = c,
                    None => {
                        return self.reject(
                            peer,
                            "bad_class",
                            Response::diagnostic(
                                Code::BAD_REQUEST,
                                "class must be alarm, vital, telemetry or bulk",
                            ),
                        );
                    }
                }
            }
        }
        let Some(format) = msg.content_format().and_then(ContentFormat::from_coap) else {
            return self.reject(
                peer,
                "unsupported_format",
                Response::diagnostic(
                    Code::UNSUPPORTED_CONTENT_FORMAT,
                    "Content-Format must be 0, 50, 60, 110 or 112",
                ),
            );
        };
        let max_body = self.s.max_body_bytes;
        let too_large = |what: &'static str| {
            let mut r = Response::diagnostic(Code::REQUEST_ENTITY_TOO_LARGE, what);
            r.size1 = Some(u32::try_from(max_body).unwrap_or(u32::MAX));
            r
        };
        let (body, block1): (std::borrow::Cow<'_, [u8]>, Option<BlockOpt>) = match msg.block1() {
            Some(Err(_)) => {
                return self.reject(
                    peer,
                    "bad_option",
                    Response::diagnostic(Code::BAD_OPTION, "malformed Block1"),
                );
            }
            Some(Ok(b)) => {
                let uri = request_uri(msg);
                match self.reassembly.on_block(
                    now,
                    peer,
                    &uri,
                    b,
                    msg.payload,
                    msg.size1(),
                    Some(format.coap_number()),
                ) {
                    Step::Reply(r) => {
                        if r.code.is_success() {
                            return Reply::Now(r);
                        }
                        return self.reject(peer, "block_transfer", r);
                    }
                    Step::Complete { body, block1 } => (body.into(), Some(block1)),
                }
            }
            None => {
                if msg.size1().is_some_and(|s| s as usize > max_body)
                    || msg.payload.len() > max_body
                {
                    return self.reject(peer, "too_large", too_large("body too large"));
                }
                (msg.payload.into(), None)
            }
        };
        let ctx = DecodeContext {
            now: self.clock.now(),
            default_name: name,
            limits: self.s.limits,
        };
        let records = match payload::decode(format, &body, &ctx) {
            Ok(r) => r,
            Err(e) => {
                PayloadRejected {
                    peer,
                    reason: e.reason(),
                    error: &e,
                }
                .emit(&self.metrics);
                let code = if matches!(e, DecodeError::TooManyRecords(_)) {
                    Code::REQUEST_ENTITY_TOO_LARGE
                } else {
                    Code::BAD_REQUEST
                };
                let mut text = e.to_string();
                text.truncate(120);
                let mut r = Response::diagnostic(code, text);
                r.block1 = block1;
                return Reply::Now(r);
            }
        };
        let reading = Reading::new(
            self.s.gateway_id.as_ref(),
            device,
            Protocol::Coap,
            class,
            ctx.now,
            records,
        );
        let location = format!("{}/{}/{}", self.path_prefix, device, reading.id);
        match self.bus.enqueue(vec![reading.into_encoded()]) {
            Ok(rx) => Reply::Later(PendingCommit {
                id,
                rx,
                meta: Some(CommitMeta {
                    created,
                    class,
                    location,
                    block1,
                    peer,
                }),
            }),
            Err(e) => {
                let mut r = self.ingest_error(&e);
                r.block1 = block1;
                self.reject(peer, e.reason(), r)
            }
        }
    }

    fn ingest_error(&self, e: &IngestError) -> Response {
        match e {
            IngestError::Busy => self.busy("gateway busy, retry later"),
            IngestError::StoreFull => self.busy("gateway storage full, retry later"),
            IngestError::ShuttingDown => self.busy("gateway shutting down"),
            IngestError::Unavailable(_) => {
                Response::diagnostic(Code::INTERNAL_SERVER_ERROR, "storage unavailable")
            }
        }
    }

    /// The response for a resolved commit. 2.xx only for `Ok`.
    pub fn commit_response(&self, result: Result<(), IngestError>, meta: CommitMeta) -> Response {
        match result {
            Ok(()) => {
                self.metrics.accepted("request", meta.class);
                let mut r = if meta.created {
                    let mut r = Response::new(Code::CREATED);
                    r.location = Some(meta.location);
                    r
                } else {
                    Response::new(Code::CHANGED)
                };
                r.block1 = meta.block1;
                r
            }
            Err(e) => {
                let mut r = self.ingest_error(&e);
                IngestRejected {
                    peer: meta.peer,
                    reason: e.reason(),
                    detail: &e.to_string(),
                }
                .emit(&self.metrics);
                r.block1 = meta.block1;
                r
            }
        }
    }
}

/// Path and query of a request, the key of its block-wise transfer.
fn request_uri(msg: &Message<'_>) -> String {
    let mut s = String::new();
    for p in msg.values(opt::URI_PATH) {
        s.push('/');
        s.push_str(&String::from_utf8_lossy(p));
    }
    let mut sep = '?';
    for q in msg.values(opt::URI_QUERY) {
        s.push(sep);
        sep = '&';
        s.push_str(&String::from_utf8_lossy(q));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_ids_follow_the_documented_charset() {
        assert!(valid_device_id(b"bed-12.spo2:a_b"));
        assert!(!valid_device_id(b""));
        assert!(!valid_device_id(b"bed 12"));
        assert!(!valid_device_id(b"bed/12"));
        assert!(valid_device_id(&[b'a'; 128]));
        assert!(!valid_device_id(&[b'a'; 129]));
    }
}
