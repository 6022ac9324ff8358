//! The CoAP resources of the LwM2M server, thin shells over [`Server`]: `/rd` (Register,
//! Update, De-register; TS Transport §6.2) and `/dp` (Send; TS Transport §6.4.4, LwM2M 1.1+).
//! Add them to every CoAP endpoint socket (plain and DTLS) with [`install`].
//!
//! Answers: Register 2.01 with Location-Path `rd/{id}`; Update 2.04; De-register 2.02; Send
//! 2.04 once its readings are durable. Malformed parameters or bodies 4.00 with a diagnostic;
//! an unknown registration 4.04; a registration of another identity 4.03; an unauthenticated
//! peer 4.01 (with a device registry); a body in a format the interface does not take 4.15;
//! a full store 5.03 with Max-Age. Requests the client makes wake it (queue mode) once
//! answered: queued operations and missing observations follow the answer.

use std::time::SystemTime;

use wardgate_coap::codec::{MsgType, opt};
use wardgate_coap::{CoapEndpoint, Code, Reply, Request, Resource, Response, Transport};
use wardgate_core::{IngestError, Refused, TransportKind};

use crate::format::{self, Format};
use crate::link::ObjectList;
use crate::node::Path;
use crate::registration::{RegisterParams, UpdateParams};
use crate::server::{Refusal, Server};

/// Adds `/rd`, `/bs` and `/dp` to every socket of `endpoint` and lets `server` send requests over its
/// sockets (as `kind`: plain UDP or DTLS).
pub fn install<T: Transport>(endpoint: &mut CoapEndpoint<T>, server: &Server, kind: TransportKind) {
    for local in endpoint.local_addrs() {
        if let Some(r) = endpoint.requester_for(local) {
            server.attach(kind, local, r);
        }
    }
    let s = server.clone();
    endpoint.add_resource(
        wardgate_coap::Registration::new("rd", &[Code::POST, Code::DELETE])
            .subtree(1)
            .rt("core.rd")
            .content_formats(&[40])
            .title("LwM2M registration interface"),
        move || Box::new(RdResource { server: s.clone() }),
    );
    let s = server.clone();
    endpoint.add_resource(
        wardgate_coap::Registration::new("bs", &[Code::POST]).title("LwM2M bootstrap server"),
        move || Box::new(crate::bootstrap::BootstrapResource { server: s.clone() }),
    );
    let s = server.clone();
    endpoint.add_resource(
        wardgate_coap::Registration::new("dp", &[Code::POST])
            .content_formats(&[110, 112, 11544])
            .title("LwM2M Send"),
        move || Box::new(SendResource { server: s.clone() }),
    );
}

fn refuse(server: &Server, interface: &'static str, r: &Refusal) -> Reply {
    server.metrics().client_request(interface, r.label);
    Reply::Now(Response::diagnostic(r.code, r.reason.clone()))
}

fn bad(server: &Server, interface: &'static str, label: &'static str, text: String) -> Reply {
    server.metrics().client_request(interface, label);
    Reply::Now(Response::diagnostic(Code::BAD_REQUEST, text))
}

fn query<'a>(req: &Request<'_, 'a>) -> Vec<&'a [u8]> {
    req.msg.values(opt::URI_QUERY).collect()
}

/// Parses a Register/Update body: link-format, sent with Content-Format 40 or (some 1.0
/// clients) none.
fn objects(req: &Request<'_, '_>) -> Result<Option<ObjectList>, (Code, String)> {
    match req.msg.content_format() {
        None | Some(40) => {}
        Some(cf) => {
            return Err((
                Code::UNSUPPORTED_CONTENT_FORMAT,
                format!("the object list must be link-format (40), not {cf}"),
            ));
        }
    }
    if req.body.is_empty() {
        return Ok(None);
    }
    let text = std::str::from_utf8(req.body)
        .map_err(|_| (Code::BAD_REQUEST, "the object list is not UTF-8".to_owned()))?;
    ObjectList::parse(text).map(Some).map_err(|e| {
        (
            Code::BAD_REQUEST,
            format!("the object list is not valid link-format: {e}"),
        )
    })
}

/// `/rd`: Register, Update, De-register.
#[derive(Debug)]
pub struct RdResource {
    server: Server,
}

impl Resource for RdResource {
    fn handle(&mut self, req: &Request<'_, '_>) -> Reply {
        let s = &self.server;
        match (req.msg.code, req.rest) {
            (Code::POST, []) => {
                let params = match RegisterParams::parse(&query(req)) {
                    Ok(p) => p,
                    Err(e) => return bad(s, "register", "bad_parameters", e.to_string()),
                };
                let objects = match objects(req) {
                    Ok(o) => o.unwrap_or_default(),
                    Err((code, text)) => {
                        s.metrics().client_request("register", "bad_objects");
                        return Reply::Now(Response::diagnostic(code, text));
                    }
                };
                let reg = match s.register(req.peer, params, objects) {
                    Ok(r) => r,
                    Err(r) => return refuse(s, "register", &r),
                };
                s.metrics().client_request("register", "ok");
                let server = s.clone();
                Reply::Later(Box::pin(async move {
                    // Runs as the answer is sent: what the server does next (observations)
                    // reaches the client after its 2.01.
                    server.woke(&reg.id);
                    let mut r = Response::new(Code::CREATED);
                    r.location = Some(format!("rd/{}", reg.id));
                    r
                }))
            }
            (Code::POST, [id]) => {
                let Ok(id) = std::str::from_utf8(id) else {
                    return refuse(s, "update", &unknown());
                };
                let params = match UpdateParams::parse(&query(req)) {
                    Ok(p) => p,
                    Err(e) => return bad(s, "update", "bad_parameters", e.to_string()),
                };
                let objects = match objects(req) {
                    Ok(o) => o,
                    Err((code, text)) => {
                        s.metrics().client_request("update", "bad_objects");
                        return Reply::Now(Response::diagnostic(code, text));
                    }
                };
                if let Err(r) = s.update(req.peer, id, params, objects) {
                    return refuse(s, "update", &r);
                }
                s.metrics().client_request("update", "ok");
                let server = s.clone();
                let id = id.to_owned();
                Reply::Later(Box::pin(async move {
                    server.woke(&id);
                    Response::new(Code::CHANGED)
                }))
            }
            (Code::DELETE, [id]) => {
                let Ok(id) = std::str::from_utf8(id) else {
                    return refuse(s, "deregister", &unknown());
                };
                match s.deregister(req.peer, id) {
                    Ok(()) => {
                        s.metrics().client_request("deregister", "ok");
                        Reply::Now(Response::new(Code::DELETED))
                    }
                    Err(r) => refuse(s, "deregister", &r),
                }
            }
            (Code::DELETE, []) => Reply::Now(Response::diagnostic(
                Code::METHOD_NOT_ALLOWED,
                "De-register is DELETE /rd/{id}",
            )),
            _ => Reply::Now(Response::diagnostic(Code::NOT_FOUND, "no such resource")),
        }
    }
}

fn unknown() -> Refusal {
    Refusal {
        code: Code::NOT_FOUND,
        reason: "no such registration".into(),
        label: "unknown_registration",
    }
}

/// `/dp`: Send (SenML JSON/CBOR, and LwM2M CBOR from 1.2). The client must be registered:
/// the readings are stored under its registration's device.
#[derive(Debug)]
pub struct SendResource {
    server: Server,
}

/// Max-Age of a 5.03 when the store is busy, seconds.
const BUSY_MAX_AGE: u32 = 5;

fn refused(r: &Refused) -> Response {
    let (code, text): (Code, String) = match r {
        Refused::Denied(wardgate_core::Denied::Unauthenticated(_)) => {
            (Code::UNAUTHORIZED, r.to_string())
        }
        Refused::Denied(_) => (Code::FORBIDDEN, r.to_string()),
        Refused::UnsupportedFormat => (Code::UNSUPPORTED_CONTENT_FORMAT, r.to_string()),
        Refused::Payload(wardgate_core::payload::DecodeError::TooManyRecords(_)) => {
            (Code::REQUEST_ENTITY_TOO_LARGE, r.to_string())
        }
        Refused::Payload(_) => (Code::BAD_REQUEST, r.to_string()),
        Refused::Store(IngestError::Unavailable(_)) => {
            (Code::INTERNAL_SERVER_ERROR, "the store failed".into())
        }
        Refused::Store(_) => {
            let mut resp = Response::diagnostic(Code::SERVICE_UNAVAILABLE, "busy, retry later");
            resp.max_age = Some(BUSY_MAX_AGE);
            return resp;
        }
    };
    Response::diagnostic(code, text)
}

impl Resource for SendResource {
    fn handle(&mut self, req: &Request<'_, '_>) -> Reply {
        let s = &self.server;
        let format = match req.msg.content_format().and_then(Format::from_coap) {
            Some(f @ (Format::SenmlJson | Format::SenmlCbor | Format::Lwm2mCbor)) => f,
            _ => {
                s.metrics().client_request("send", "unsupported_format");
                return Reply::Now(Response::diagnostic(
                    Code::UNSUPPORTED_CONTENT_FORMAT,
                    "Send takes SenML JSON (110), SenML CBOR (112) or LwM2M CBOR (11544)",
                ));
            }
        };
        let Some((id, reg)) = s.client_at(req.peer) else {
            s.metrics().client_request("send", "not_registered");
            return Reply::Now(Response::diagnostic(
                Code::FORBIDDEN,
                "Send needs a registration from this address and identity",
            ));
        };
        let entries =
            match format::decode(format, &Path::ROOT, req.body, s.model(), SystemTime::now()) {
                Ok(e) if !e.is_empty() => e,
                Ok(_) => return bad(s, "send", "empty", "Send carried no values".into()),
                Err(e) => return bad(s, "send", e.reason(), e.to_string()),
            };
        let class = s.settings().send_class;
        match s.submit(req.peer, &reg, "/dp", class, &entries) {
            Ok(pending) => {
                let server = s.clone();
                Reply::Later(Box::pin(async move {
                    match pending.await {
                        Ok(_) => {
                            server.metrics().client_request("send", "ok");
                            server.woke(&id);
                            Response::new(Code::CHANGED)
                        }
                        Err(e) => {
                            server.metrics().client_request("send", e.reason());
                            refused(&e)
                        }
                    }
                }))
            }
            Err(e) => {
                s.metrics().client_request("send", e.reason());
                if req.msg.mtype == MsgType::Non && e.is_retryable() {
                    return Reply::Silent;
                }
                Reply::Now(refused(&e))
            }
        }
    }
}
