//! Traffic captures through the admin API (`/admin/v1/captures/...`): start one with its own
//! filters and an optional duration, stop it, list the capture files, download one.
//!
//! - `GET /admin/v1/captures`: the running capture (or `null`) and the files, oldest first.
//! - `POST /admin/v1/captures` (a `CaptureRequest`: `devices`, `addresses`, `protocols`,
//!   `duration`, `redact_payloads`): 201 with the session; 409 while one runs; 400 for a bad
//!   request (an unredacted capture is refused unless the configuration allows it). With a
//!   `duration` a timer stops that capture (not a later one) when it is up.
//! - `DELETE /admin/v1/captures/current`: stops it once its files are complete; 404 if none.
//! - `GET /admin/v1/captures/files/{name}`: the pcapng file (`application/x-pcapng`), streamed.
//!
//! Starting, stopping and every download are audited (`admin_action`): captures hold patient
//! traffic.

use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, Extension, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use wardgate_core::{AuditEvent, AuditKind};
use wardgate_monitor::control::{CaptureControl, CaptureRequest, ControlError};

use super::AdminState;
use super::auth::Principal;
use super::routes::ApiError;
use crate::listener::PeerInfo;

fn control(st: &AdminState) -> Result<CaptureControl, ApiError> {
    st.captures.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "captures are not available (the plain CoAP endpoint is off)",
        )
    })
}

fn control_error(e: &ControlError) -> ApiError {
    let status = match e {
        ControlError::Busy(_) => StatusCode::CONFLICT,
        ControlError::Invalid(_) => StatusCode::BAD_REQUEST,
        ControlError::NotFound => StatusCode::NOT_FOUND,
        ControlError::Failed(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    if matches!(e, ControlError::Failed(_)) {
        tracing::warn!(error = %e, "admin: capture control failed");
        return ApiError::new(
            status,
            "the capture could not be started or read (see the log)",
        );
    }
    ApiError::new(status, e.to_string())
}

fn audit(st: &AdminState, who: &Principal, peer: &PeerInfo, reason: &'static str, subject: String) {
    st.metrics.action(reason, true);
    st.audit.record(
        AuditEvent::new(AuditKind::AdminAction, reason)
            .actor(who.actor())
            .peer(peer.addr, super::transport(peer))
            .subject(subject),
    );
}

pub(crate) async fn list(State(st): State<Arc<AdminState>>) -> Result<Response, ApiError> {
    let c = control(&st)?;
    let files = tokio::task::spawn_blocking({
        let c = c.clone();
        move || c.files()
    })
    .await
    .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the listing failed"))?
    .map_err(|e| control_error(&ControlError::Failed(e.to_string())))?;
    Ok(Json(serde_json::json!({ "current": c.current(), "files": files })).into_response())
}

pub(crate) async fn start(
    State(st): State<Arc<AdminState>>,
    ConnectInfo(peer): ConnectInfo<PeerInfo>,
    Extension(who): Extension<Principal>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let c = control(&st)?;
    let body =
        body.map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "request body could not be read"))?;
    let req: CaptureRequest = if body.is_empty() {
        CaptureRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("not a capture request: {e}"),
            )
        })?
    };
    let actor = who.actor();
    let duration = req.duration;
    let info = {
        let c = c.clone();
        tokio::task::spawn_blocking(move || c.start(&req, &actor))
            .await
            .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the start failed"))?
            .map_err(|e| control_error(&e))?
    };
    audit(
        &st,
        &who,
        &peer,
        "capture_started",
        format!("capture:{}", info.id),
    );
    if let Some(d) = duration {
        // Stops this capture (not a later one) when its time is up.
        let id = info.id;
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            let _ = tokio::task::spawn_blocking(move || c.stop(Some(id))).await;
        });
    }
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

pub(crate) async fn stop(
    State(st): State<Arc<AdminState>>,
    ConnectInfo(peer): ConnectInfo<PeerInfo>,
    Extension(who): Extension<Principal>,
) -> Result<Response, ApiError> {
    let c = control(&st)?;
    let stopped = tokio::task::spawn_blocking(move || c.stop(None))
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the stop failed"))?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no capture is running"))?;
    audit(
        &st,
        &who,
        &peer,
        "capture_stopped",
        format!("capture:{}", stopped.id),
    );
    Ok(Json(stopped).into_response())
}

pub(crate) async fn download(
    State(st): State<Arc<AdminState>>,
    ConnectInfo(peer): ConnectInfo<PeerInfo>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let c = control(&st)?;
    let opened = {
        let name = name.clone();
        tokio::task::spawn_blocking(move || c.open_file(&name))
            .await
            .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the open failed"))?
            .map_err(|e| control_error(&e))?
    };
    let (file, len) = opened;
    audit(
        &st,
        &who,
        &peer,
        "capture_downloaded",
        format!("capture-file:{name}"),
    );
    // Only the bytes there were at open: the file of a running capture keeps growing.
    let body = tokio::io::AsyncReadExt::take(tokio::fs::File::from_std(file), len);
    let stream = tokio_util::io::ReaderStream::new(body);
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-pcapng".to_owned()),
            (header::CONTENT_LENGTH, len.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}
