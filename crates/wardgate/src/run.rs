//! `wardgate run`: load and validate the config, open the outbox, bind listeners, start uplinks,
//! serve until SIGINT/SIGTERM, then shut down in dependency order.
//!
//! Shutdown order (each phase bounded by a deadline):
//! 1. ingest stops: the CoAP endpoint stops accepting and answers its in-flight requests
//!    (their readings are already queued to the store, so their acknowledgements stay truthful);
//! 2. uplinks stop: they stop taking from the outbox, wait briefly for outstanding peer
//!    acknowledgements and say goodbye (MQTT retained `offline`);
//! 3. the store writer drains the bus, commits the last acknowledgements, checkpoints and closes;
//! 4. the HTTP server stops last, so `/healthz` answers until the end.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::task::JoinSet;
use wardgate_config::{GatewayConfig, UplinkConfig};
use wardgate_core::health::ComponentKind;
use wardgate_core::{
    AllowAll, Authorizer, Bus, Clock, Health, IngestPipeline, Shutdown, SystemClock,
};

use crate::file_uplink::{FileUplink, FileUplinkMetrics};
use crate::{EXIT_DATAERR, EXIT_USAGE, demo, telemetry};

/// Longest wait for each shutdown phase.
const PHASE_DEADLINE: Duration = Duration::from_secs(10);

pub(crate) fn main(config: &Path, demo: bool) -> ExitCode {
    let cfg = match wardgate_config::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: {e}", config.display());
            return ExitCode::from(EXIT_USAGE);
        }
    };
    telemetry::init(&cfg.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("wardgate")
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(cfg, demo)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(wardgate_store::StoreError::Corrupt { .. }) =
                e.downcast_ref::<wardgate_store::StoreError>()
            {
                tracing::error!("{e:#}");
                eprintln!("wardgate: {e:#}");
                return ExitCode::from(EXIT_DATAERR);
            }
            tracing::error!("{e:#}");
            eprintln!("wardgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(cfg: GatewayConfig, demo: bool) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        gateway = %cfg.gateway.id,
        "wardgate starting"
    );
    let mut registry = Registry::default();
    let health = Health::new();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);

    // The outbox first: a corrupt store must stop us before any device hears "accepted".
    let uplink_names: Vec<String> = cfg.uplinks.iter().map(|u| u.name().to_owned()).collect();
    let store_metrics = wardgate_store::StoreMetrics::register(&mut registry);
    // Opening may run `PRAGMA quick_check` over the whole file after an unclean stop: keep that
    // off the async runtime.
    let store_cfg = cfg.store.clone();
    let outbox = tokio::task::spawn_blocking(move || {
        wardgate_store::Outbox::open(&store_cfg, &uplink_names, store_metrics)
    })
    .await
    .context("outbox open task")??;

    let (bus, bus_rx) = Bus::new(cfg.bus.capacity);
    // Devices are not authenticated until the device registry exists: say so once, loudly.
    let authorizer: Arc<dyn Authorizer> = Arc::new(AllowAll);
    if !authorizer.authenticates() {
        tracing::warn!(
            "devices are NOT authenticated: any host that can reach the ingest ports may submit \
             readings for any device id (no device registry configured)"
        );
    }
    let pipeline = IngestPipeline::new(
        cfg.gateway.id.as_str(),
        bus.clone(),
        clock.clone(),
        authorizer,
        wardgate_core::payload::Limits::default(),
    );
    let bus_depth: Gauge = Gauge::default();
    registry.register(
        "wardgate_bus_depth",
        "Ingest requests waiting for the store writer",
        bus_depth.clone(),
    );

    let ingest_stop = Shutdown::new();
    let uplink_stop = Shutdown::new();
    let store_stop = Shutdown::new();
    let http_stop = Shutdown::new();

    // Everything fallible happens before anything runs: a bad TLS file or a port in use stops
    // start-up with the outbox untouched, not half-way through with tasks already draining it.
    #[allow(clippy::large_enum_variant)] // a handful, built once at start-up
    enum Uplink {
        File(FileUplink),
        Mqtt(wardgate_mqtt::MqttUplink),
    }
    let file_metrics = FileUplinkMetrics::register(&mut registry);
    let mqtt_metrics = wardgate_mqtt::MqttMetrics::register(&mut registry);
    let mut built = Vec::with_capacity(cfg.uplinks.len());
    for u in &cfg.uplinks {
        let reporter = health.reporter(format!("uplink.{}", u.name()), ComponentKind::Uplink);
        let cursor = outbox
            .cursor(u.name())
            .with_context(|| format!("outbox cursor for uplink {}", u.name()))?;
        let up = match u {
            UplinkConfig::File(f) => {
                Uplink::File(FileUplink::new(f.clone(), file_metrics.clone(), reporter))
            }
            UplinkConfig::Mqtt(m) => Uplink::Mqtt(
                wardgate_mqtt::MqttUplink::new(
                    m.clone(),
                    &cfg.gateway.id,
                    mqtt_metrics.clone(),
                    reporter,
                )
                .with_context(|| format!("uplink {}", m.name))?,
            ),
        };
        built.push((u.name().to_owned(), up, cursor));
    }

    let coap_metrics = wardgate_coap::CoapMetrics::register(&mut registry);
    let endpoint = if cfg.coap.enabled {
        let endpoint = wardgate_coap::CoapEndpoint::bind(
            cfg.coap.clone(),
            wardgate_coap::EndpointDeps {
                pipeline: pipeline.clone(),
                metrics: coap_metrics,
                health: health.reporter("coap", ComponentKind::Listener),
            },
        )
        .await
        .context("CoAP endpoint")?;
        Some(endpoint)
    } else {
        None
    };

    // HTTP binds last: the registry is complete now.
    let http_server = if cfg.http.enabled {
        let depth_bus = bus.clone();
        let deps = wardgate_http::HttpDeps {
            registry: Arc::new(registry),
            health: health.clone(),
            on_scrape: vec![Arc::new(move || {
                bus_depth.set(i64::try_from(depth_bus.depth()).unwrap_or(i64::MAX));
            })],
        };
        let server = wardgate_http::HttpServer::bind(
            &cfg.http,
            deps,
            health.reporter("http", ComponentKind::Listener),
        )
        .await
        .context("HTTP server")?;
        Some(server)
    } else {
        None
    };

    // Start: writer, uplinks, ingest, HTTP.
    let store_health = health.reporter("store", ComponentKind::Store);
    let writer = {
        let outbox = outbox.clone();
        let stop = store_stop.clone();
        tokio::spawn(async move { outbox.run_writer(bus_rx, stop, store_health).await })
    };
    let mut uplinks = JoinSet::new();
    for (name, up, cursor) in built {
        let stop = uplink_stop.clone();
        match up {
            Uplink::File(up) => {
                uplinks.spawn(up.run(cursor, stop));
            }
            Uplink::Mqtt(up) => {
                uplinks.spawn(async move {
                    if let Err(e) = up.run(cursor, stop).await {
                        tracing::error!(uplink = %name, error = %e, "uplink stopped with an error");
                    }
                });
            }
        }
    }
    let mut ingest = JoinSet::new();
    let mut coap_addrs = Vec::new();
    if let Some(endpoint) = endpoint {
        coap_addrs = endpoint.local_addrs();
        for a in &coap_addrs {
            tracing::info!(addr = %a, "CoAP listening");
        }
        let stop = ingest_stop.clone();
        ingest.spawn(async move {
            if let Err(e) = endpoint.run(stop).await {
                tracing::error!(error = %e, "CoAP endpoint failed");
            }
        });
    }
    let http_task = http_server.map(|server| {
        if let Some(a) = server.local_addr() {
            tracing::info!(addr = %a, "HTTP listening (/healthz /readyz /metrics)");
        }
        tokio::spawn(server.run(http_stop.clone()))
    });

    if demo {
        match demo::target(&coap_addrs) {
            Some(target) => {
                tracing::info!(%target, "demo: starting simulated ward sensors");
                ingest.spawn(demo::run(target, ingest_stop.clone()));
            }
            None => tracing::warn!("demo: CoAP is disabled; no simulated sensors started"),
        }
    }

    tracing::info!("wardgate ready; stop with Ctrl-C or SIGTERM");
    wait_for_signal().await;
    tracing::info!("shutting down: closing ingest");

    ingest_stop.cancel();
    drain(&mut ingest, "ingest").await;
    tracing::info!("shutting down: stopping uplinks");
    uplink_stop.cancel();
    drain(&mut uplinks, "uplinks").await;
    tracing::info!("shutting down: flushing the outbox");
    store_stop.cancel();
    match tokio::time::timeout(PHASE_DEADLINE, writer).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::error!(error = %e, "outbox did not close cleanly"),
        Ok(Err(e)) => tracing::error!(error = %e, "outbox writer panicked"),
        Err(_) => tracing::error!("outbox did not close within {PHASE_DEADLINE:?}"),
    }
    http_stop.cancel();
    if let Some(t) = http_task {
        let _ = tokio::time::timeout(PHASE_DEADLINE, t).await;
    }
    tracing::info!("wardgate stopped");
    Ok(())
}

async fn drain(set: &mut JoinSet<()>, what: &str) {
    let all = async {
        while let Some(r) = set.join_next().await {
            if let Err(e) = r {
                tracing::error!(error = %e, "{what} task failed");
            }
        }
    };
    if tokio::time::timeout(PHASE_DEADLINE, all).await.is_err() {
        tracing::warn!("{what} did not stop within {PHASE_DEADLINE:?}; abandoning them");
        set.abort_all();
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops wardgate");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
