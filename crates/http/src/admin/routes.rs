//! The admin API's endpoints (`/admin/v1/...`), their JSON errors, and their audit records.
//!
//! Every edit runs on the blocking pool (the registry writes and fsyncs its file) and is
//! audited `admin_action` with the administrator as actor, whether it succeeded or was
//! refused; the registry records its own `registry_change` on success. Reads are not audited.

use std::borrow::Cow;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use wardgate_core::{AuditEvent, AuditKind};
use wardgate_registry::{DeviceSpec, DeviceView, Registry, RegistryError, redact_parser_message};

use super::AdminState;
use super::auth::Principal;
use crate::listener::PeerInfo;

/// An error answer: `{"error": "...", "problems": [...]}`. Messages are fixed texts or
/// registry problems (which never carry key material), never internals.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    error: Cow<'static, str>,
    problems: Vec<ProblemOut>,
}

#[derive(Debug, Serialize)]
struct ProblemOut {
    path: String,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, error: impl Into<Cow<'static, str>>) -> ApiError {
        ApiError {
            status,
            error: error.into(),
            problems: Vec::new(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body<'a> {
            error: &'a str,
            #[serde(skip_serializing_if = "<[_]>::is_empty")]
            problems: &'a [ProblemOut],
        }
        let body = Body {
            error: &self.error,
            problems: &self.problems,
        };
        (self.status, Json(body)).into_response()
    }
}

/// What an edit was, for the audit reason and the metric label.
#[derive(Debug, Clone, Copy)]
enum Action {
    Upsert,
    Remove,
    Revoke,
    Restore,
    DismissPending,
    Reload,
}

impl Action {
    fn label(self) -> &'static str {
        match self {
            Action::Upsert => "device_upsert",
            Action::Remove => "device_remove",
            Action::Revoke => "device_revoke",
            Action::Restore => "device_restore",
            Action::DismissPending => "pending_dismiss",
            Action::Reload => "registry_reload",
        }
    }

    fn refused(self) -> &'static str {
        match self {
            Action::Upsert => "device_upsert_refused",
            Action::Remove => "device_remove_refused",
            Action::Revoke => "device_revoke_refused",
            Action::Restore => "device_restore_refused",
            Action::DismissPending => "pending_dismiss_refused",
            Action::Reload => "registry_reload_refused",
        }
    }
}

type Ctx = (
    State<Arc<AdminState>>,
    ConnectInfo<PeerInfo>,
    Extension<Principal>,
);

fn registry(st: &AdminState) -> Result<Arc<Registry>, ApiError> {
    st.registry.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no device registry configured",
        )
    })
}

/// Records the outcome of an edit in the audit trail and the metrics, then passes it on.
fn audited<T>(
    (st, peer, who): &Ctx,
    action: Action,
    subject: &str,
    result: Result<T, ApiError>,
) -> Result<T, ApiError> {
    let ok = result.is_ok();
    st.metrics.action(action.label(), ok);
    let reason = if ok { action.label() } else { action.refused() };
    let mut ev = AuditEvent::new(AuditKind::AdminAction, reason)
        .actor(who.actor())
        .peer(peer.addr, super::transport(peer));
    if !subject.is_empty() {
        ev = ev.subject(printable(subject));
    }
    st.audit.record(ev);
    result
}

/// A subject as the audit names it: control characters escaped, length bounded.
fn printable(s: &str) -> String {
    s.chars().take(128).flat_map(char::escape_default).collect()
}

/// Runs a registry edit on the blocking pool.
async fn blocking<T: Send + 'static>(
    edit: impl FnOnce() -> Result<T, RegistryError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(edit).await {
        Ok(result) => result.map_err(registry_error),
        Err(e) => {
            tracing::error!(error = %e, "admin API registry edit task failed");
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error",
            ))
        }
    }
}

fn registry_error(e: RegistryError) -> ApiError {
    match e {
        RegistryError::Invalid { problems, .. } => ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            error: "the device registry would be invalid; nothing changed".into(),
            problems: problems
                .into_iter()
                .map(|p| ProblemOut {
                    path: p.path,
                    message: p.message,
                })
                .collect(),
        },
        RegistryError::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, "no such device"),
        RegistryError::Read { .. } => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the device registry file could not be read; the previous registry stays in effect",
        ),
        // Details (path, OS error) are in the registry's own log line.
        RegistryError::Write { .. } | RegistryError::Serialize(_) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the device registry could not be written; nothing changed",
        ),
    }
}

pub(crate) async fn list_devices(
    State(st): State<Arc<AdminState>>,
) -> Result<Json<Vec<DeviceView>>, ApiError> {
    Ok(Json(registry(&st)?.list()))
}

pub(crate) async fn get_device(
    State(st): State<Arc<AdminState>>,
    Path(id): Path<String>,
) -> Result<Json<DeviceView>, ApiError> {
    registry(&st)?
        .get(&id)
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no such device"))
}

pub(crate) async fn put_device(
    st: State<Arc<AdminState>>,
    peer: ConnectInfo<PeerInfo>,
    who: Extension<Principal>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let ctx = (st, peer, who);
    let result = async {
        let reg = registry(&ctx.0)?;
        let spec = device_spec(&id, body)?;
        let actor = ctx.2.actor();
        let created = reg.get(&id).is_none();
        let r = reg.clone();
        blocking(move || r.upsert(spec, &actor)).await?;
        let view = reg
            .get(&id)
            .ok_or_else(|| ApiError::new(StatusCode::CONFLICT, "device changed concurrently"))?;
        let status = if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        Ok((status, Json(view)).into_response())
    }
    .await;
    audited(&ctx, Action::Upsert, &id, result)
}

/// Parses a PUT body into a device spec. `id` may be left out; if given it must be the path's.
/// Keys are accepted inline (`"hex:…"`) or as a `key_file`; `${VAR}` is refused (an API
/// caller could otherwise probe the gateway's environment). Parser messages have any echoed
/// value removed (it could be a key).
fn device_spec(id: &str, body: Result<Bytes, BytesRejection>) -> Result<DeviceSpec, ApiError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body larger than {} bytes", super::MAX_BODY),
            )
        } else {
            ApiError::new(StatusCode::BAD_REQUEST, "request body could not be read")
        }
    })?;
    let bad = |msg: String| ApiError::new(StatusCode::BAD_REQUEST, msg);
    let mut value: Value = serde_json::from_slice(&body).map_err(|e| {
        bad(format!(
            "body is not JSON: {}",
            redact_parser_message(&e.to_string())
        ))
    })?;
    let Some(object) = value.as_object_mut() else {
        return Err(bad("body must be a JSON object (a device spec)".into()));
    };
    match object.get("id") {
        None => {
            object.insert("id".into(), Value::String(id.to_owned()));
        }
        Some(Value::String(given)) if given == id => {}
        Some(_) => return Err(bad("\"id\" in the body must match the path".into())),
    }
    let env_key = object
        .get("psk")
        .and_then(|p| p.get("key"))
        .and_then(Value::as_str)
        .is_some_and(|k| k.trim_start().starts_with("${"));
    if env_key {
        return Err(bad(
            "psk.key through the admin API must be \"hex:…\" (or use psk.key_file); ${VAR} is refused"
                .into(),
        ));
    }
    serde_json::from_value(value).map_err(|e| {
        bad(format!(
            "not a device spec: {}",
            redact_parser_message(&e.to_string())
        ))
    })
}

pub(crate) async fn delete_device(
    st: State<Arc<AdminState>>,
    peer: ConnectInfo<PeerInfo>,
    who: Extension<Principal>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let ctx = (st, peer, who);
    let result = edit(&ctx, &id, |reg, id, actor| reg.remove(id, actor)).await;
    audited(
        &ctx,
        Action::Remove,
        &id,
        result.map(|()| StatusCode::NO_CONTENT),
    )
}

pub(crate) async fn revoke_device(
    st: State<Arc<AdminState>>,
    peer: ConnectInfo<PeerInfo>,
    who: Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<DeviceView>, ApiError> {
    set_revoked((st, peer, who), id, Action::Revoke).await
}

pub(crate) async fn restore_device(
    st: State<Arc<AdminState>>,
    peer: ConnectInfo<PeerInfo>,
    who: Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<DeviceView>, ApiError> {
    set_revoked((st, peer, who), id, Action::Restore).await
}

/// Revokes or restores; answers with the device as it now is.
async fn set_revoked(ctx: Ctx, id: String, action: Action) -> Result<Json<DeviceView>, ApiError> {
    let result = match action {
        Action::Revoke => edit(&ctx, &id, |reg, id, actor| reg.revoke(id, actor)).await,
        _ => edit(&ctx, &id, |reg, id, actor| reg.restore(id, actor)).await,
    };
    let result = result.and_then(|()| view_of(&ctx, &id));
    audited(&ctx, action, &id, result)
}

/// Runs `change(registry, id, actor)` on the blocking pool.
async fn edit(
    ctx: &Ctx,
    id: &str,
    change: fn(&Registry, &str, &str) -> Result<(), RegistryError>,
) -> Result<(), ApiError> {
    let reg = registry(&ctx.0)?;
    let (id, actor) = (id.to_owned(), ctx.2.actor());
    blocking(move || change(&reg, &id, &actor)).await
}

fn view_of(ctx: &Ctx, id: &str) -> Result<Json<DeviceView>, ApiError> {
    registry(&ctx.0)?
        .get(id)
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no such device"))
}

pub(crate) async fn list_pending(State(st): State<Arc<AdminState>>) -> Result<Response, ApiError> {
    Ok(Json(registry(&st)?.pending()).into_response())
}

pub(crate) async fn dismiss_pending(
    st: State<Arc<AdminState>>,
    peer: ConnectInfo<PeerInfo>,
    who: Extension<Principal>,
    Path(identity): Path<String>,
) -> Result<StatusCode, ApiError> {
    let ctx = (st, peer, who);
    // In memory only (no file I/O): no need for the blocking pool.
    let result = registry(&ctx.0).and_then(|reg| {
        if reg.dismiss_pending(&identity, &ctx.2.actor()) {
            Ok(StatusCode::NO_CONTENT)
        } else {
            Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "no such pending identity",
            ))
        }
    });
    audited(&ctx, Action::DismissPending, &identity, result)
}

pub(crate) async fn reload_registry(
    st: State<Arc<AdminState>>,
    peer: ConnectInfo<PeerInfo>,
    who: Extension<Principal>,
) -> Result<Json<Value>, ApiError> {
    let ctx = (st, peer, who);
    let result = match registry(&ctx.0) {
        Ok(reg) => {
            let r = reg.clone();
            blocking(move || r.reload())
                .await
                .map(|()| Json(serde_json::json!({ "devices": reg.list().len() })))
        }
        Err(e) => Err(e),
    };
    audited(&ctx, Action::Reload, "", result)
}

pub(crate) async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not found")
}
