//! LwM2M clients through the admin API (`/admin/v1/lwm2m/...`): list the registered clients
//! with their registration data, objects, observations and last-seen time; run any operation
//! on one and get the decoded result.
//!
//! - An operation on an awake client runs within the request (bounded by the admin request
//!   deadline, 30 s) and answers 200 with its result. One on a sleeping queue-mode client is
//!   queued and answered 202 at once (`{"queued": true}`): it goes out when the client next
//!   talks, and its outcome is logged and audited then.
//! - Errors: unknown client 404; an invalid operation 400; the client's own error answer 502
//!   with its CoAP code; no answer 504; a full queue 503.
//! - Operations that change the client (write, execute, create, delete, observe, ...) are
//!   audited `admin_action` with the administrator as actor; reads are not.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use wardgate_core::{AuditEvent, AuditKind};
use wardgate_lwm2m::{ClientInfo, OpError, Operation, Server};

use super::AdminState;
use super::auth::Principal;
use super::routes::ApiError;
use crate::listener::PeerInfo;

fn server(st: &AdminState) -> Result<Server, ApiError> {
    st.lwm2m.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the LwM2M server is not enabled",
        )
    })
}

pub(crate) async fn list_clients(
    State(st): State<Arc<AdminState>>,
) -> Result<Json<Vec<ClientInfo>>, ApiError> {
    Ok(Json(server(&st)?.clients()))
}

pub(crate) async fn get_client(
    State(st): State<Arc<AdminState>>,
    Path(endpoint): Path<String>,
) -> Result<Json<ClientInfo>, ApiError> {
    server(&st)?
        .client(&endpoint)
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no such LwM2M client"))
}

fn op_error(e: &OpError) -> ApiError {
    let status = match e {
        OpError::UnknownClient(_) | OpError::Gone => StatusCode::NOT_FOUND,
        OpError::Invalid(_) => StatusCode::BAD_REQUEST,
        OpError::Client { .. } | OpError::Format(_) | OpError::Coap(_) => StatusCode::BAD_GATEWAY,
        OpError::Timeout => StatusCode::GATEWAY_TIMEOUT,
        OpError::QueueFull(_) | OpError::NoRoute(..) => StatusCode::SERVICE_UNAVAILABLE,
    };
    ApiError::new(status, e.to_string())
}

pub(crate) async fn run_operation(
    State(st): State<Arc<AdminState>>,
    ConnectInfo(peer): ConnectInfo<PeerInfo>,
    Extension(who): Extension<Principal>,
    Path(endpoint): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let server = server(&st)?;
    let body =
        body.map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "request body could not be read"))?;
    let op: Operation = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("not an LwM2M operation: {e}"),
        )
    })?;
    let info = server
        .client(&endpoint)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no such LwM2M client"))?;
    let label = op.label();
    let audited = op.changes_the_client();
    let record = {
        let st = st.clone();
        let actor = who.actor();
        let endpoint = endpoint.clone();
        move |ok: bool| {
            st.metrics.action(label, ok);
            if audited {
                let reason = if ok { label } else { "lwm2m_operation_failed" };
                st.audit.record(
                    AuditEvent::new(AuditKind::AdminAction, reason)
                        .actor(actor.clone())
                        .peer(peer.addr, super::transport(&peer))
                        .subject(format!("lwm2m:{endpoint}")),
                );
            }
        }
    };
    if !info.awake {
        // A sleeping client: the operation waits for it, not the administrator.
        let ep = endpoint.clone();
        tokio::spawn(async move {
            let r = server.run_operation(&ep, op).await;
            match &r {
                Ok(_) => {
                    tracing::info!(endpoint = %ep, operation = label, "queued LwM2M operation done")
                }
                Err(e) => {
                    tracing::warn!(endpoint = %ep, operation = label, error = %e, "queued LwM2M operation failed")
                }
            }
            record(r.is_ok());
        });
        return Ok((
            StatusCode::ACCEPTED,
            Json(serde_json::json!({ "queued": true, "operation": label })),
        )
            .into_response());
    }
    let r = server.run_operation(&endpoint, op).await;
    record(r.is_ok());
    match r {
        Ok(v) => Ok(Json(v).into_response()),
        Err(e) => Err(op_error(&e)),
    }
}

/// A bootstrap configuration as the API lists it.
#[derive(Debug, serde::Serialize)]
pub(crate) struct BootstrapView {
    /// `admin` (managed here, persisted with the registrations) or `file` (`gateway.toml`).
    source: &'static str,
    #[serde(flatten)]
    config: wardgate_lwm2m::BootstrapConfig,
}

pub(crate) async fn list_bootstrap(
    State(st): State<Arc<AdminState>>,
) -> Result<Json<Vec<BootstrapView>>, ApiError> {
    let server = server(&st)?;
    let managed = server.managed_bootstrap_configs();
    let n = managed.len();
    Ok(Json(
        server
            .bootstrap_configs()
            .into_iter()
            .enumerate()
            .map(|(i, config)| BootstrapView {
                source: if i < n { "admin" } else { "file" },
                config,
            })
            .collect(),
    ))
}

fn audit_bootstrap(
    st: &AdminState,
    peer: &PeerInfo,
    who: &Principal,
    reason: &'static str,
    ok: bool,
    pattern: &str,
) {
    st.metrics.action(reason, ok);
    st.audit.record(
        AuditEvent::new(
            AuditKind::AdminAction,
            if ok {
                reason
            } else {
                "lwm2m_bootstrap_refused"
            },
        )
        .actor(who.actor())
        .peer(peer.addr, super::transport(peer))
        .subject(format!("lwm2m-bootstrap:{}", pattern.escape_default())),
    );
}

pub(crate) async fn put_bootstrap(
    State(st): State<Arc<AdminState>>,
    ConnectInfo(peer): ConnectInfo<PeerInfo>,
    Extension(who): Extension<Principal>,
    Path(pattern): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let server = server(&st)?;
    let result = (|| {
        let body = body.map_err(|_| {
            ApiError::new(StatusCode::BAD_REQUEST, "request body could not be read")
        })?;
        let mut v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(StatusCode::BAD_REQUEST, format!("body is not JSON: {e}"))
        })?;
        let Some(obj) = v.as_object_mut() else {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "body must be a JSON object",
            ));
        };
        match obj.get("endpoint") {
            None => {
                obj.insert(
                    "endpoint".into(),
                    serde_json::Value::String(pattern.clone()),
                );
            }
            Some(serde_json::Value::String(e)) if *e == pattern => {}
            Some(_) => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "\"endpoint\" in the body must match the path",
                ));
            }
        }
        let cfg: wardgate_lwm2m::BootstrapConfig = serde_json::from_value(v).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("not a bootstrap configuration: {e}"),
            )
        })?;
        let replaced = server.put_bootstrap_config(cfg).map_err(|e| op_error(&e))?;
        Ok(if replaced {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        })
    })();
    audit_bootstrap(
        &st,
        &peer,
        &who,
        "lwm2m_bootstrap_put",
        result.is_ok(),
        &pattern,
    );
    result.map(|s| (s, Json(serde_json::json!({ "endpoint": pattern }))).into_response())
}

pub(crate) async fn delete_bootstrap(
    State(st): State<Arc<AdminState>>,
    ConnectInfo(peer): ConnectInfo<PeerInfo>,
    Extension(who): Extension<Principal>,
    Path(pattern): Path<String>,
) -> Result<StatusCode, ApiError> {
    let server = server(&st)?;
    let result = if server.remove_bootstrap_config(&pattern) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no bootstrap configuration managed through the API for this pattern (file ones are edited in gateway.toml)",
        ))
    };
    audit_bootstrap(
        &st,
        &peer,
        &who,
        "lwm2m_bootstrap_delete",
        result.is_ok(),
        &pattern,
    );
    result
}
