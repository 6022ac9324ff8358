//! The admin API: device registry management over HTTP(S), on its own listener.
//!
//! - **Listener**: `[admin] listen`, never the `[http]` one (which keeps `/healthz`, `/readyz`
//!   and `/metrics` unauthenticated for probes). TLS when `[admin.tls]` is set; plain HTTP is
//!   allowed on loopback only (configuration validation refuses anything else).
//! - **Authentication** ([`auth`]): a listed client certificate or a bearer token matched by
//!   its SHA-256; failures are 401, audited, and rate limited per source IP (429).
//! - **Endpoints** ([`routes`]): devices (list, get, put, delete, revoke, restore), the
//!   quarantine list, registry reload; LwM2M clients and operations on them ([`lwm2m`]); the
//!   uplink selector's state; readings in the outbox; traffic captures ([`captures`]: start,
//!   stop, list, download).
//!   JSON in and out; errors are `{"error": "..."}`.
//! - **Bounds**: bodies up to [`MAX_BODY`] (413 past it), [`REQUEST_TIMEOUT`] per request,
//!   and the listener's connection, handshake and idle bounds.
//! - **Secrets**: no response, log line, metric or audit event carries a key, a token or a
//!   token hash. Device views come from [`wardgate_registry::DeviceView`], which has none.

pub(crate) mod auth;
mod captures;
mod lwm2m;
mod metrics;
mod routes;
mod status;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use tokio::time::Instant;
use wardgate_core::{
    AuditEvent, AuditKind, AuditSink, Health, HealthReporter, Shutdown, TransportKind,
};
use wardgate_registry::Registry;

use crate::config::AdminConfig;
use crate::error::HttpError;
use crate::listener::{BoundedListener, Limits, PeerInfo};
use auth::{Credentials, FailureLimit};
use routes::ApiError;

pub use metrics::AdminMetrics;

/// Largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;
/// Longest a request may take (including a registry edit's fsyncs).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The listener's bounds: TLS handshake time, connections at once, idle time.
const LIMITS: Limits = Limits {
    handshake_timeout: Duration::from_secs(10),
    max_connections: 64,
    idle_timeout: Duration::from_secs(60),
};

/// What the admin API needs from the rest of the gateway.
#[derive(Clone)]
pub struct AdminDeps {
    /// The device registry it edits; without one, device endpoints answer 503.
    pub registry: Option<Arc<Registry>>,
    /// Where admin actions and authentication failures are recorded.
    pub audit: Arc<dyn AuditSink>,
    /// Its counters.
    pub metrics: AdminMetrics,
    /// The LwM2M server whose clients it lists and operates; without one, LwM2M endpoints
    /// answer 503.
    pub lwm2m: Option<wardgate_lwm2m::Server>,
    /// The uplink selector whose live state it shows; without one (no `[selector]`), the
    /// selector endpoint answers 503.
    pub selector: Option<wardgate_selector::SharedSelector>,
    /// The outbox readings are looked up in; without one, the readings endpoint answers 503.
    pub outbox: Option<wardgate_store::Outbox>,
    /// The traffic capture control; without one, the capture endpoints answer 503.
    pub captures: Option<wardgate_monitor::CaptureControl>,
    /// What the status page shows of the traffic; without one, the status page answers 503.
    pub board: Option<wardgate_core::StatusBoard>,
    /// The readiness table the status page shows.
    pub health: Health,
}

impl fmt::Debug for AdminDeps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminDeps")
            .field("registry", &self.registry.as_ref().map(|r| r.path()))
            .finish_non_exhaustive()
    }
}

/// Shared by every request.
pub(crate) struct AdminState {
    registry: Option<Arc<Registry>>,
    lwm2m: Option<wardgate_lwm2m::Server>,
    selector: Option<wardgate_selector::SharedSelector>,
    outbox: Option<wardgate_store::Outbox>,
    captures: Option<wardgate_monitor::CaptureControl>,
    board: Option<wardgate_core::StatusBoard>,
    health: Health,
    feed_slots: status::FeedSlots,
    audit: Arc<dyn AuditSink>,
    metrics: AdminMetrics,
    credentials: Credentials,
    limit: FailureLimit,
}

/// A bound, not yet serving, admin API server.
#[derive(Debug)]
pub struct AdminServer {
    listener: BoundedListener,
    state: Arc<AdminState>,
    reporter: HealthReporter,
}

impl fmt::Debug for AdminState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminState")
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

impl AdminServer {
    /// Reads the TLS files (if any) and binds the listener. `reporter` is marked ready once
    /// bound. `cfg` must have passed validation.
    pub async fn bind(
        cfg: &AdminConfig,
        deps: AdminDeps,
        reporter: HealthReporter,
    ) -> Result<AdminServer, HttpError> {
        let tls = match &cfg.tls {
            Some(t) => Some(tokio_rustls::TlsAcceptor::from(crate::tls::server_config(
                &crate::tls::ServerFiles {
                    cert: ("admin.tls.cert_file", &t.cert_file),
                    key: ("admin.tls.key_file", &t.key_file),
                    client_ca: t
                        .client_ca_file
                        .as_deref()
                        .map(|p| ("admin.tls.client_ca_file", p)),
                },
            )?)),
            None => None,
        };
        let (tcp, addr) = crate::server::bind_tcp(cfg.listen).await?;
        let metrics = deps.metrics.clone();
        let listener = BoundedListener::new(
            "admin API",
            tcp,
            tls,
            LIMITS,
            Arc::new(move |reason| metrics.handshake_failed(reason)),
        );
        reporter.ready(format!("admin {addr}"));
        let state = AdminState {
            registry: deps.registry,
            lwm2m: deps.lwm2m,
            selector: deps.selector,
            outbox: deps.outbox,
            captures: deps.captures,
            board: deps.board,
            health: deps.health,
            feed_slots: status::FeedSlots::new(deps.metrics.feed_clients.clone()),
            audit: deps.audit,
            metrics: deps.metrics,
            credentials: Credentials::from_config(cfg),
            limit: FailureLimit::default(),
        };
        Ok(AdminServer {
            listener,
            state: Arc::new(state),
            reporter,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serves until `shutdown` is cancelled, then finishes in-flight requests and returns.
    pub async fn run(self, shutdown: Shutdown) -> Result<(), HttpError> {
        let app = router(self.state).into_make_service_with_connect_info::<PeerInfo>();
        let result = axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .map_err(HttpError::Serve);
        self.reporter.not_ready("stopped");
        result
    }
}

/// `GET /admin/v1/selector`: every uplink's measured health and breaker, every class's policy
/// and current choice, and the recent decisions with their reasons.
async fn selector_status(
    axum::extract::State(st): axum::extract::State<Arc<AdminState>>,
) -> Result<axum::Json<wardgate_selector::SelectorStatus>, ApiError> {
    st.selector
        .as_ref()
        .map(|s| axum::Json(s.status()))
        .ok_or_else(|| {
            ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "no [selector] configured: every reading goes to every uplink",
            )
        })
}

/// `GET /admin/v1/readings/{id}`: what the outbox knows about one reading: the uplinks it is
/// still owed to, and which uplinks delivered it and when (the delivery record). 404 when the
/// outbox neither holds nor recorded it.
async fn reading_trace(
    axum::extract::State(st): axum::extract::State<Arc<AdminState>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<axum::Json<wardgate_store::ReadingTrace>, ApiError> {
    let Some(outbox) = st.outbox.clone() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "this gateway has no outbox to look readings up in",
        ));
    };
    let id: ulid::Ulid = id.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "not a reading id (the 26-character ULID in a reading's \"id\")",
        )
    })?;
    let trace = tokio::task::spawn_blocking(move || outbox.trace(id))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "admin: the reading lookup task failed");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the lookup failed")
        })?
        .map_err(|e| {
            tracing::warn!(error = %e, "admin: reading lookup failed");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the outbox could not be read",
            )
        })?;
    if trace.is_unknown() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "the outbox neither holds this reading nor has a delivery record of it (never \
             stored here, dropped by a quota, or delivered longer ago than [store] delivery_log \
             keeps)",
        ));
    }
    Ok(axum::Json(trace))
}

/// `GET /admin/v1/openapi.json` (no token needed): the API's description.
async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("../../../../docs/admin-api.openapi.json"),
    )
        .into_response()
}

fn router(state: Arc<AdminState>) -> Router {
    let devices = "/admin/v1/devices/{id}";
    Router::new()
        .route("/admin/v1/devices", get(routes::list_devices))
        .route(
            devices,
            get(routes::get_device)
                .put(routes::put_device)
                .delete(routes::delete_device),
        )
        .route("/admin/v1/devices/{id}/revoke", post(routes::revoke_device))
        .route(
            "/admin/v1/devices/{id}/restore",
            post(routes::restore_device),
        )
        .route("/admin/v1/pending", get(routes::list_pending))
        .route(
            "/admin/v1/pending/{identity}",
            delete(routes::dismiss_pending),
        )
        .route("/admin/v1/registry/reload", post(routes::reload_registry))
        .route("/admin/v1/selector", get(selector_status))
        .route("/admin/v1/readings/{id}", get(reading_trace))
        .route(
            "/admin/v1/captures",
            get(captures::list).post(captures::start),
        )
        .route("/admin/v1/captures/current", delete(captures::stop))
        .route("/admin/v1/captures/files/{name}", get(captures::download))
        .route("/admin/v1/lwm2m/clients", get(lwm2m::list_clients))
        .route("/admin/v1/lwm2m/clients/{endpoint}", get(lwm2m::get_client))
        .route(
            "/admin/v1/lwm2m/clients/{endpoint}/operations",
            post(lwm2m::run_operation),
        )
        .route("/admin/v1/lwm2m/bootstrap", get(lwm2m::list_bootstrap))
        .route("/", get(status::root))
        .route("/admin/v1/openapi.json", get(openapi))
        .route("/status", get(status::page))
        .route("/status/v1/panels", get(status::panels))
        .route("/status/v1/snapshot", get(status::snapshot_json))
        .route("/status/v1/feed", get(status::feed))
        .route("/status/assets/status.css", get(status::css))
        .route("/status/assets/status.js", get(status::js))
        .route(
            "/admin/v1/lwm2m/bootstrap/{pattern}",
            axum::routing::put(lwm2m::put_bootstrap).delete(lwm2m::delete_bootstrap),
        )
        .fallback(routes::not_found)
        // Outermost first: the deadline covers authentication too.
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn(deadline))
        .with_state(state)
}

fn transport(peer: &PeerInfo) -> TransportKind {
    if peer.tls {
        TransportKind::Https
    } else {
        TransportKind::Http
    }
}

async fn deadline(req: Request, next: Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(response) => response,
        Err(_) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "request timed out").into_response()
        }
    }
}

/// Lets a request through with its [`auth::Principal`] in the extensions, or answers 401/429.
async fn authenticate(
    State(st): State<Arc<AdminState>>,
    ConnectInfo(peer): ConnectInfo<PeerInfo>,
    mut req: Request,
    next: Next,
) -> Response {
    // The status page is read-only and shows no reading values, keys or tokens.
    if status::is_public(req.uri().path()) {
        return next.run(req).await;
    }
    let ip = peer.addr.ip();
    let now = Instant::now();
    if st.limit.blocked(ip, now) {
        st.metrics.auth_failed("admin_rate_limited");
        return ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too many failed authentication attempts; try again later",
        )
        .into_response();
    }
    let failure = match st
        .credentials
        .authenticate(peer.client_cert.as_ref(), req.headers())
    {
        Ok(principal) => {
            if principal.read_only() && !matches!(*req.method(), Method::GET | Method::HEAD) {
                st.metrics.auth_failed("admin_read_only");
                tracing::warn!(peer = %peer.addr, actor = %principal.actor(), "admin API: a viewer token may only read");
                st.audit.record(
                    AuditEvent::new(AuditKind::AclDenied, "admin_read_only")
                        .actor(principal.actor())
                        .peer(peer.addr, transport(&peer))
                        .subject(req.uri().path().to_owned()),
                );
                return ApiError::new(
                    StatusCode::FORBIDDEN,
                    "this token may only read (role = \"viewer\")",
                )
                .into_response();
            }
            req.extensions_mut().insert(principal);
            return next.run(req).await;
        }
        Err(failure) => failure,
    };
    st.metrics.auth_failed(failure.as_str());
    tracing::warn!(peer = %peer.addr, reason = failure.as_str(), "admin API request refused");
    let mut ev =
        AuditEvent::new(AuditKind::AuthFailure, failure.as_str()).peer(peer.addr, transport(&peer));
    if let Some(fp) = &peer.client_cert {
        ev = ev.actor(format!("claimed-x509-sha256:{}", auth_hex(fp)));
    }
    st.audit.record(ev);
    if st.limit.fail(ip, now) {
        tracing::warn!(peer = %peer.addr, "admin API: source rate limited after repeated failures");
        st.audit.record(
            AuditEvent::new(AuditKind::AuthFailure, "admin_rate_limited")
                .peer(peer.addr, transport(&peer)),
        );
    }
    let mut response =
        ApiError::new(StatusCode::UNAUTHORIZED, "authentication required").into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(match failure {
            auth::Failure::BadToken => "Bearer error=\"invalid_token\"",
            _ => "Bearer",
        }),
    );
    response
}

fn auth_hex(fp: &[u8; 32]) -> String {
    fp.iter().map(|b| format!("{b:02x}")).collect()
}
