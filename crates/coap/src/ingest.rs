//! The readings resource: `POST` (2.01) or `PUT` (2.04) to
//! `/{ingest_path}/{device-id}[/{name}][?class=alarm|vital|telemetry|bulk]`.
//!
//! `{name}` is the record name for payloads that carry none (text/plain):
//! `/v1/readings/bed-12/temperature` with `36.9` gives a record named `temperature`. Without
//! `{name}` a text/plain payload is refused (4.00). For SenML the name is passed as the
//! decoders' default and SenML's own names win.
//!
//! It is a thin protocol shell over the ingest pipeline of `wardgate-core`: it parses the URI
//! and options into a [`Submission`] and maps the pipeline's [`Refused`] to CoAP codes
//! (4.01, 4.03, 4.00, 4.13, 4.15, 5.03 + Max-Age, 5.00). Routing, block-wise transfer, the
//! per-source rate limit and the shutdown 5.03 are the router's; the per-device rate limit
//! (`[coap.rate_limit] per_device_*`, keyed by the device id the path claims, checked before
//! authorization and decoding) is here: over it a CON gets 5.03 with Max-Age, a NON nothing.
//!
//! Invariant: a 2.xx is produced only from a [`wardgate_core::Pending`] that resolved `Ok`,
//! i.e. after the store made the reading durable.

use std::sync::Arc;

use wardgate_core::payload::ContentFormat;
use wardgate_core::reading::valid_device_id;
use wardgate_core::{
    Denied, IngestError, IngestPipeline, MessageClass, Protocol, Rate, Refused, Submission, Take,
    TokenBuckets,
};

use crate::codec::{Code, MsgType, opt};
use crate::layer::Response;
use crate::metrics::{CoapMetrics, IngestRejected, LogGate, PayloadRejected, RateLimited};
use crate::resource::{Registration, Reply, Request, Resource};
use crate::router::RATE_BUCKETS;

/// Longest `{name}` path segment.
const MAX_NAME: usize = 64;

fn valid_name(s: &[u8]) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME
        && s.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'-' | b'/'))
}

/// Settings of the readings resource.
#[derive(Debug, Clone)]
pub struct IngestSettings {
    /// Ingest path segments (`["v1", "readings"]`).
    pub ingest_path: Vec<String>,
    /// Class without `class=` query.
    pub default_class: MessageClass,
    /// Max-Age of 5.03 answers, seconds.
    pub busy_max_age: u32,
    /// Readings requests per claimed device id (unlimited when its rate is 0).
    pub per_device: Rate,
}

/// The readings resource.
#[derive(Debug)]
pub struct IngestResource {
    s: IngestSettings,
    pipeline: IngestPipeline,
    metrics: CoapMetrics,
    /// `ingest_path` joined with `/`: the start of every Location-Path.
    path_prefix: Arc<str>,
    /// `/` + `path_prefix`: the resource named to the authorizer.
    resource_path: String,
    device_limit: TokenBuckets,
    device_log: LogGate,
}

impl IngestResource {
    /// The resource, and where to register it.
    pub fn new(
        s: IngestSettings,
        pipeline: IngestPipeline,
        metrics: CoapMetrics,
    ) -> (Registration, Self) {
        let path = s.ingest_path.join("/");
        let formats: Vec<u16> = ContentFormat::ALL.iter().map(|f| f.coap_number()).collect();
        let reg = Registration::new(&path, &[Code::POST, Code::PUT])
            .subtree(2)
            .rt("wardgate.readings")
            .interface("core.p")
            .content_formats(&formats)
            .title(&format!(
                "POST or PUT readings to /{path}/{{device-id}}[/{{name}}][?class=alarm|vital|telemetry|bulk]"
            ));
        let r = IngestResource {
            resource_path: format!("/{path}"),
            path_prefix: Arc::from(path),
            device_limit: TokenBuckets::new(s.per_device, RATE_BUCKETS),
            device_log: LogGate::default(),
            s,
            pipeline,
            metrics,
        };
        (reg, r)
    }

    fn reject(&self, req: &Request<'_, '_>, reason: &'static str, resp: Response) -> Reply {
        IngestRejected {
            peer: req.peer.addr,
            reason,
            detail: std::str::from_utf8(&resp.payload).unwrap_or(""),
        }
        .emit(&self.metrics);
        Reply::Now(resp)
    }

    fn bad_request(
        &self,
        req: &Request<'_, '_>,
        reason: &'static str,
        text: &'static str,
    ) -> Reply {
        self.reject(req, reason, Response::diagnostic(Code::BAD_REQUEST, text))
    }
}

/// The CoAP answer to a pipeline refusal.
fn refusal_response(e: &Refused, busy_max_age: u32) -> Response {
    let busy = |text: &'static str| {
        let mut r = Response::diagnostic(Code::SERVICE_UNAVAILABLE, text);
        r.max_age = Some(busy_max_age);
        r
    };
    match e {
        Refused::Denied(Denied::Unauthenticated(_)) => {
            Response::diagnostic(Code::UNAUTHORIZED, "not authenticated")
        }
        Refused::Denied(Denied::Forbidden(_)) => Response::diagnostic(Code::FORBIDDEN, "forbidden"),
        Refused::UnsupportedFormat => Response::diagnostic(
            Code::UNSUPPORTED_CONTENT_FORMAT,
            "Content-Format must be 0, 50, 60, 110 or 112",
        ),
        Refused::Payload(d) => {
            let code = if matches!(d, wardgate_core::payload::DecodeError::TooManyRecords(_)) {
                Code::REQUEST_ENTITY_TOO_LARGE
            } else {
                Code::BAD_REQUEST
            };
            let mut text = d.to_string();
            text.truncate(120);
            Response::diagnostic(code, text)
        }
        Refused::Store(IngestError::Busy) => busy("gateway busy, retry later"),
        Refused::Store(IngestError::StoreFull) => busy("gateway storage full, retry later"),
        Refused::Store(IngestError::ShuttingDown) => busy("gateway shutting down"),
        Refused::Store(IngestError::Unavailable(_)) => {
            Response::diagnostic(Code::INTERNAL_SERVER_ERROR, "storage unavailable")
        }
    }
}

impl Resource for IngestResource {
    fn handle(&mut self, req: &Request<'_, '_>) -> Reply {
        let created = req.msg.code == Code::POST;
        let (device, name) = match req.rest {
            [d] => (*d, None),
            [d, n] => (*d, Some(*n)),
            _ => {
                let r = Response::diagnostic(Code::NOT_FOUND, "no such resource");
                return self.reject(req, "not_found", r);
            }
        };
        let device = match std::str::from_utf8(device) {
            Ok(d) if valid_device_id(device) => d,
            _ => {
                return self.bad_request(
                    req,
                    "bad_device_id",
                    "device id must be 1-128 of [A-Za-z0-9._:-]",
                );
            }
        };
        if let Take::Limited { retry_after_secs } = self.device_limit.take(device, req.now) {
            RateLimited {
                peer: req.peer.addr,
                scope: "device",
                retry_after_secs,
            }
            .emit(&self.metrics, &mut self.device_log, req.now);
            if req.msg.mtype != MsgType::Con {
                return Reply::Silent;
            }
            let mut r = Response::diagnostic(Code::SERVICE_UNAVAILABLE, "rate limited");
            r.max_age = Some(retry_after_secs);
            return Reply::Now(r);
        }
        let name = match name {
            None => None,
            Some(n) => match std::str::from_utf8(n) {
                Ok(s) if valid_name(n) => Some(s),
                _ => return self.bad_request(req, "bad_name", "invalid record name segment"),
            },
        };
        let mut class = self.s.default_class;
        for q in req.msg.values(opt::URI_QUERY) {
            if let Some(v) = q.strip_prefix(b"class=") {
                match std::str::from_utf8(v).ok().and_then(|v| v.parse().ok()) {
                    Some(c) => class = c,
                    None => {
                        return self.bad_request(
                            req,
                            "bad_class",
                            "class must be alarm, vital, telemetry or bulk",
                        );
                    }
                }
            }
        }
        let submission = Submission {
            peer: req.peer,
            protocol: Protocol::Coap,
            device,
            class,
            resource: &self.resource_path,
            format: req.msg.content_format().and_then(ContentFormat::from_coap),
            body: req.body,
            default_name: name,
        };
        let pending = match self.pipeline.submit(&submission) {
            Ok(p) => p,
            Err(e) => {
                if let Refused::Payload(d) = &e {
                    PayloadRejected {
                        peer: req.peer.addr,
                        reason: d.reason(),
                        error: d,
                    }
                    .emit(&self.metrics);
                    return Reply::Now(refusal_response(&e, self.s.busy_max_age));
                }
                let r = refusal_response(&e, self.s.busy_max_age);
                return self.reject(req, e.reason(), r);
            }
        };
        let metrics = self.metrics.clone();
        let prefix = self.path_prefix.clone();
        let busy_max_age = self.s.busy_max_age;
        let peer = req.peer.addr;
        Reply::Later(Box::pin(async move {
            match pending.await {
                Ok(a) => {
                    metrics.accepted("request", a.class);
                    if created {
                        let mut r = Response::new(Code::CREATED);
                        r.location = Some(format!("{prefix}/{}/{}", a.device, a.id));
                        r
                    } else {
                        Response::new(Code::CHANGED)
                    }
                }
                Err(e) => {
                    let r = refusal_response(&e, busy_max_age);
                    IngestRejected {
                        peer,
                        reason: e.reason(),
                        detail: &e.to_string(),
                    }
                    .emit(&metrics);
                    r
                }
            }
        }))
    }
}
