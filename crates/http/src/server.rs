//! The axum server and its routes.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use wardgate_core::{Health, HealthReporter, Shutdown};

use crate::config::HttpConfig;
use crate::error::HttpError;

/// Called before each `/metrics` render to refresh sampled gauges (bus depth, outbox stats).
pub type ScrapeHook = Arc<dyn Fn() + Send + Sync>;

/// What the server needs from the rest of the gateway.
#[derive(Clone)]
pub struct HttpDeps {
    /// The metrics registry, complete (every component registered) before the server starts.
    pub registry: Arc<Registry>,
    /// Readiness table.
    pub health: Health,
    /// Gauge refreshers run before each scrape.
    pub on_scrape: Vec<ScrapeHook>,
}

impl fmt::Debug for HttpDeps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpDeps")
            .field("hooks", &self.on_scrape.len())
            .finish_non_exhaustive()
    }
}

/// A bound, not yet serving, HTTP server.
#[derive(Debug)]
pub struct HttpServer {
    listener: TcpListener,
    deps: HttpDeps,
    reporter: HealthReporter,
}

impl HttpServer {
    /// Binds the listener. `reporter` is marked ready once bound.
    pub async fn bind(
        cfg: &HttpConfig,
        deps: HttpDeps,
        reporter: HealthReporter,
    ) -> Result<HttpServer, HttpError> {
        let (listener, addr) = bind_tcp(cfg.listen).await?;
        reporter.ready(format!("http {addr}"));
        Ok(HttpServer {
            listener,
            deps,
            reporter,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serves until `shutdown` is cancelled, then finishes in-flight requests and returns.
    pub async fn run(self, shutdown: Shutdown) -> Result<(), HttpError> {
        let app = router(self.deps);
        let result = axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .map_err(HttpError::Serve);
        self.reporter.not_ready("stopped");
        result
    }
}

/// Binds `addr`; the bound address (with port 0 resolved).
pub(crate) async fn bind_tcp(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), HttpError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError::Bind { addr, source })?;
    let bound = listener.local_addr().map_err(HttpError::Serve)?;
    Ok((listener, bound))
}

fn router(deps: HttpDeps) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(Arc::new(deps))
}

async fn healthz() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"status":"alive"}"#,
    )
}

async fn readyz(State(deps): State<Arc<HttpDeps>>) -> Response {
    let readiness = deps.health.readiness();
    let status = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(readiness)).into_response()
}

async fn metrics(State(deps): State<Arc<HttpDeps>>) -> Response {
    for hook in &deps.on_scrape {
        hook();
    }
    let mut body = String::with_capacity(16 * 1024);
    match prometheus_client::encoding::text::encode(&mut body, &deps.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "metrics encoding failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "metrics unavailable").into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use wardgate_core::health::ComponentKind;

    async fn get_raw(addr: SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).await.expect("read");
        out
    }

    #[tokio::test]
    async fn serves_health_readiness_and_metrics_until_shutdown() {
        let mut registry = Registry::default();
        let c: Counter = Counter::default();
        registry.register("wardgate_test_things", "test counter", c.clone());
        c.inc();
        let health = Health::new();
        let uplink = health.reporter("uplink.a", ComponentKind::Uplink);
        let scraped = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let s2 = scraped.clone();
        let deps = HttpDeps {
            registry: Arc::new(registry),
            health: health.clone(),
            on_scrape: vec![Arc::new(move || {
                s2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            })],
        };
        let cfg = HttpConfig {
            enabled: true,
            listen: "127.0.0.1:0".parse().unwrap(),
        };
        let server = HttpServer::bind(&cfg, deps, health.reporter("http", ComponentKind::Listener))
            .await
            .expect("bind");
        let addr = server.local_addr().unwrap();
        let shutdown = Shutdown::new();
        let task = tokio::spawn(server.run(shutdown.clone()));

        let h = get_raw(addr, "/healthz").await;
        assert!(h.starts_with("HTTP/1.1 200"), "{h}");

        let r = get_raw(addr, "/readyz").await;
        assert!(r.starts_with("HTTP/1.1 503"), "{r}");
        assert!(r.contains(r#""failing":["uplinks"]"#), "{r}");
        uplink.ready("connected");
        let r = get_raw(addr, "/readyz").await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");

        let m = get_raw(addr, "/metrics").await;
        assert!(m.contains("wardgate_test_things_total 1"), "{m}");
        assert_eq!(scraped.load(std::sync::atomic::Ordering::SeqCst), 1);

        let nf = get_raw(addr, "/admin/secret").await;
        assert!(nf.starts_with("HTTP/1.1 404"), "{nf}");

        shutdown.cancel();
        task.await.expect("join").expect("clean stop");
    }
}
