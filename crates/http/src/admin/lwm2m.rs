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
use super::listener::PeerInfo;
use super::routes::ApiError;

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
