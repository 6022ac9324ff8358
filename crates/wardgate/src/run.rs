//! `wardgate run`: load and validate the config, build everything ([`App::build`]: open the
//! outbox, build the ingest pipeline and every uplink component, bind every listener), then
//! start it all ([`App::spawn`]), serve until SIGINT/SIGTERM, and shut down in dependency order
//! ([`Running::shutdown`]).
//!
//! Shutdown order (each phase bounded by a deadline):
//! 0. the admin API stops (no registry edits while the gateway drains);
//! 1. ingest stops: the CoAP endpoint stops accepting and answers its in-flight requests
//!    (their readings are already queued to the store, so their acknowledgements stay truthful);
//!    then the capture writer (`[monitor.capture]`) writes what its taps queued and closes,
//!    the monitor thread (`[monitor.flows]`, `[monitor.anomalies]`) writes every open flow,
//!    and the anomaly events it raised are stored;
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
use wardgate_coap::UdpTransport;
use wardgate_config::{GatewayConfig, UplinkConfig};
use wardgate_core::health::ComponentKind;
use wardgate_core::{
    AllowAll, AuditSink, Authorizer, Bus, BusReceiver, Clock, CredentialStore, Health,
    IngestPipeline, NoAudit, NoCredentials, Shutdown, SystemClock, TransportKind, Uplink,
};
use wardgate_dtls::{DtlsDeps, DtlsMetrics, DtlsTransport};
use wardgate_monitor::TapTransport;
use wardgate_store::{Cursor, Outbox};

use crate::file_uplink::{FileUplink, FileUplinkMetrics};
use crate::{EXIT_DATAERR, demo, telemetry};

/// Longest wait for each shutdown phase.
const PHASE_DEADLINE: Duration = Duration::from_secs(10);

pub(crate) fn main(
    cfg: GatewayConfig,
    only: Option<wardgate_config::Part>,
    demo: bool,
) -> ExitCode {
    telemetry::init(&cfg.log);
    if let Some(part) = only {
        tracing::info!(%part, "running one part of a split gateway");
    }
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
    // The `uplinks` part of a split gateway on a NATS bus reads it through JetStream.
    let jetstream = match only {
        Some(wardgate_config::Part::Uplinks) => cfg.split.jetstream.clone(),
        _ => None,
    };
    match runtime.block_on(serve(cfg, jetstream, demo)) {
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

async fn serve(
    cfg: GatewayConfig,
    jetstream: Option<wardgate_config::split::JetStreamConfig>,
    demo: bool,
) -> anyhow::Result<()> {
    let app = App::build(cfg, jetstream, demo).await?;
    let running = app.spawn();
    tracing::info!("wardgate ready; stop with Ctrl-C or SIGTERM");
    wait_for_signal().await;
    running.shutdown().await;
    Ok(())
}

/// The gateway built and bound, nothing running yet. Everything fallible happens in
/// [`App::build`]: a corrupt outbox, a bad TLS file or a port in use stops start-up with the
/// outbox untouched, not half-way through with tasks already draining it. A future
/// `--only <part>` is a filter in [`App::spawn`].
struct App {
    health: Health,
    outbox: Outbox,
    bus_rx: BusReceiver,
    uplinks: Vec<BuiltUplink>,
    /// The plain CoAP endpoint; its sockets pass through capture taps (pass-through when
    /// `[monitor.capture]` is off).
    coap: Option<wardgate_coap::CoapEndpoint<TapTransport<UdpTransport>>>,
    /// The capture control (whatever runs is stopped at shutdown).
    capture: Option<wardgate_monitor::CaptureControl>,
    /// The monitor thread, when `[monitor.flows]` or `[monitor.anomalies]` is enabled.
    flows: Option<wardgate_monitor::FlowWriter>,
    /// Stores the anomaly events (`[monitor.anomalies]`).
    anomalies: Option<crate::anomalies::AnomalyStore>,
    coaps: Option<wardgate_coap::CoapEndpoint<DtlsTransport>>,
    http: Option<wardgate_http::HttpServer>,
    admin: Option<wardgate_http::AdminServer>,
    /// The device registry, reloaded from its file on SIGHUP.
    devices: Option<Arc<wardgate_registry::Registry>>,
    /// The LwM2M server (its resources are on the CoAP endpoints).
    lwm2m: Option<wardgate_lwm2m::Server>,
    /// The uplink selector, when `[selector]` is configured.
    selector: Option<wardgate_selector::SharedSelector>,
    /// `[selector] link_down_after`.
    link_down_after: Duration,
    /// `[[ingest.mqtt]]` subscribers.
    mqtt_ingest: Vec<wardgate_mqtt::southbound::MqttIngest>,
    /// The `uplinks` part's shared JetStream consumer (`[split.jetstream]`).
    bus_jetstream: Option<crate::jetstream::JetStreamBus>,
    /// `[ingest.http]`: HTTPS device ingest.
    ingest_http: Option<wardgate_http::ingest::IngestServer>,
    /// The ingest pipeline, for the adapters started in `spawn`.
    pipeline: IngestPipeline,
    demo: bool,
    /// The demo also runs a simulated LwM2M client (when the LwM2M server runs).
    demo_lwm2m: bool,
}

impl App {
    async fn build(
        cfg: GatewayConfig,
        jetstream: Option<wardgate_config::split::JetStreamConfig>,
        demo: bool,
    ) -> anyhow::Result<App> {
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
        let selector = build_selector(&cfg, &uplink_names, &mut registry)?;
        // Kept with or without a selector: every acknowledged delivery is measured.
        let budget = crate::steer::Budget(wardgate_selector::DeliveryBudget::register(
            cfg.selector
                .as_ref()
                .map(|s| s.budgets.clone())
                .unwrap_or_default(),
            &mut registry,
        ));
        budget.0.announce(&uplink_names);
        // What the status page shows: durable readings, delivery ages, security events.
        let board = wardgate_core::StatusBoard::new(cfg.gateway.id.as_str());
        let store_metrics = wardgate_store::StoreMetrics::register(&mut registry);
        store_metrics.set_capacity(cfg.store.max_readings, cfg.store.max_bytes);
        let mut open = wardgate_store::OpenOptions {
            observer: Some(Arc::new(crate::steer::Observers {
                budget,
                board: board.clone(),
            })),
            on_commit: Some(Arc::new(board.clone())),
            ..wardgate_store::OpenOptions::default()
        };
        if let Some(s) = &selector {
            open.router = Arc::new(s.clone());
        }
        // With a device registry, the outbox has a quarantine lane too (after the configured
        // uplinks, so their indices are the selector's): it holds readings of unknown
        // identities until an administrator decides (`crate::quarantine`).
        let mut lanes = uplink_names;
        if cfg.registry.path.is_some() {
            lanes.push(wardgate_core::QUARANTINE.to_owned());
        }
        // Opening may run `PRAGMA quick_check` over the whole file after an unclean stop: keep
        // that off the async runtime.
        let store_cfg = cfg.store.clone();
        let outbox = tokio::task::spawn_blocking(move || {
            Outbox::open_with(&store_cfg, &lanes, store_metrics, open)
        })
        .await
        .context("outbox open task")??;

        let (bus, bus_rx) = Bus::new(cfg.bus.capacity);
        let bus_depth: Gauge = Gauge::default();
        registry.register(
            "wardgate_bus_depth",
            "Ingest requests waiting for the store writer",
            bus_depth.clone(),
        );
        // The audit trail before anything that authenticates, so the first handshake is in it.
        let audit: Arc<dyn AuditSink> = match cfg.audit.options() {
            Some(opts) => {
                let metrics = wardgate_audit::AuditMetrics::register(&mut registry);
                let path = opts.path.clone();
                let log = tokio::task::spawn_blocking(move || {
                    wardgate_audit::AuditLog::open(&opts, metrics)
                })
                .await
                .context("audit log open task")?
                .with_context(|| format!("audit log {}", path.display()))?;
                Arc::new(log)
            }
            None => {
                tracing::warn!(
                    "no [audit] path: authentication results, denials and registry changes are \
                     not recorded in an audit trail"
                );
                Arc::new(NoAudit)
            }
        };
        let audit = board.audit_tee(audit);
        let (authorizer, credentials, device_registry): Devices = match &cfg.registry.path {
            Some(path) => {
                let metrics = wardgate_registry::RegistryMetrics::register(&mut registry);
                let opts = wardgate_registry::LoadOptions {
                    quarantine: wardgate_registry::QuarantineLimits {
                        max_readings: cfg.registry.quarantine_max_readings,
                        max_per_identity: cfg.registry.quarantine_max_per_identity,
                    },
                    ..wardgate_registry::LoadOptions::default()
                };
                let reg = Arc::new(
                    wardgate_registry::Registry::load_with(
                        path.clone(),
                        audit.clone(),
                        metrics,
                        opts,
                    )
                    .with_context(|| format!("device registry {}", path.display()))?,
                );
                (reg.clone(), reg.clone(), Some(reg))
            }
            None => {
                // Say so once, loudly (not in the `uplinks` part of a split gateway: its only
                // ingest is the gateway's own bus, whose readings the adapter parts authorized).
                if device_facing(&cfg) {
                    tracing::warn!(
                        "devices are NOT authenticated: any host that can reach the ingest ports \
                         may submit readings for any device id (no [registry] configured)"
                    );
                }
                (Arc::new(AllowAll), Arc::new(NoCredentials), None)
            }
        };
        let mut pipeline = IngestPipeline::new(
            cfg.gateway.id.as_str(),
            bus.clone(),
            clock,
            authorizer,
            wardgate_core::payload::Limits::default(),
        );
        if let Some(s) = &selector {
            pipeline = pipeline.with_classifier(Arc::new(s.clone()));
        }
        let ingest_pipeline = pipeline.clone();

        let mut uplinks = build_uplinks(&cfg, &outbox, &mut registry, &health)?;
        if let Some(reg) = &device_registry {
            let cursor = outbox
                .cursor(wardgate_core::QUARANTINE)
                .context("outbox cursor for the quarantine lane")?;
            uplinks.push((
                Box::new(crate::quarantine::QuarantineLane::new(reg.clone(), &health)),
                cursor,
            ));
        }
        let mqtt_ingest = if cfg.ingest.mqtt.is_empty() {
            Vec::new()
        } else {
            let metrics = wardgate_mqtt::southbound::MqttIngestMetrics::register(&mut registry);
            cfg.ingest
                .mqtt
                .iter()
                .map(|m| {
                    m.build(metrics.clone(), &health)
                        .with_context(|| format!("[[ingest.mqtt]] {}", m.name))
                })
                .collect::<anyhow::Result<Vec<_>>>()?
        };
        let bus_jetstream = jetstream.map(|js| {
            crate::jetstream::JetStreamBus::new(
                &cfg.split,
                &js,
                &cfg.gateway.id,
                crate::jetstream::JetStreamMetrics::register(&mut registry),
                &health,
            )
        });
        let lwm2m = if cfg.lwm2m.enabled && (cfg.coap.enabled || cfg.coaps.enabled) {
            Some(build_lwm2m(&cfg, pipeline.clone(), credentials.clone(), &mut registry).await?)
        } else {
            None
        };

        // One set of CoAP metrics for plain and DTLS endpoints (same names, summed).
        let coap_metrics = (cfg.coap.enabled || cfg.coaps.enabled)
            .then(|| wardgate_coap::CoapMetrics::register(&mut registry));
        // `coaps://` observe targets are reached through the DTLS endpoint, the rest over UDP.
        let (secure_targets, plain_targets): (Vec<_>, Vec<_>) = cfg
            .coap
            .observe
            .iter()
            .cloned()
            .partition(|t| t.uri.starts_with("coaps://"));
        let capture = build_capture(&cfg, &mut registry)?;
        let tap = capture.as_ref().map(wardgate_monitor::CaptureControl::tap);
        let (flows, flows_writer, anomalies) =
            build_analysis(&cfg, &mut registry, &ingest_pipeline, &audit)?;
        // What the transports that own their sockets (DTLS, the HTTPS ingest, the MQTT
        // subscribers) hand their traffic to: the capture and the flows.
        let monitor_tap = wardgate_monitor::MonitorTap::new(tap.clone(), flows.clone())
            .map(|t| Arc::new(t) as Arc<dyn wardgate_core::DatagramTap>);
        // The MQTT subscribers' broker sessions become flows, and TCP segments of their
        // packets' sizes in the capture (never their bytes).
        let mqtt_ingest: Vec<_> = mqtt_ingest
            .into_iter()
            .map(|m| m.with_tap(monitor_tap.clone()))
            .collect();
        let mut coap = match (&coap_metrics, cfg.coap.enabled) {
            (Some(metrics), true) => Some(
                wardgate_coap::CoapEndpoint::bind_wrapped(
                    wardgate_coap::CoapConfig {
                        observe: plain_targets,
                        ..cfg.coap.clone()
                    },
                    wardgate_coap::EndpointDeps {
                        pipeline: pipeline.clone(),
                        metrics: metrics.clone(),
                        health: health.reporter("coap", ComponentKind::Listener),
                    },
                    {
                        let (tap, flows) = (tap.clone(), flows.clone());
                        move |udp| {
                            TapTransport::new(udp, tap.clone()).map(|t| t.with_flows(flows.clone()))
                        }
                    },
                )
                .await
                .context("CoAP endpoint")?,
            ),
            _ => None,
        };
        if let (Some(endpoint), Some(server)) = (coap.as_mut(), &lwm2m) {
            wardgate_lwm2m::resource::install(endpoint, server, TransportKind::Udp);
        }
        let coaps = match (&coap_metrics, cfg.coaps.enabled) {
            (Some(metrics), true) => Some(build_coaps(
                &cfg,
                secure_targets,
                device_registry.as_deref(),
                wardgate_coap::EndpointDeps {
                    pipeline,
                    metrics: metrics.clone(),
                    health: health.reporter("coaps", ComponentKind::Listener),
                },
                DtlsDeps {
                    credentials: credentials.clone(),
                    audit: audit.clone(),
                    metrics: DtlsMetrics::register(&mut registry),
                    // DTLS records, not the decrypted CoAP a wrapper would see.
                    tap: monitor_tap.clone(),
                },
            )?),
            _ => None,
        };

        let mut coaps = coaps;
        if let (Some(endpoint), Some(server)) = (coaps.as_mut(), &lwm2m) {
            wardgate_lwm2m::resource::install(endpoint, server, TransportKind::Dtls);
        }

        let admin = if cfg.admin.enabled {
            let deps = wardgate_http::AdminDeps {
                registry: device_registry.clone(),
                audit: audit.clone(),
                metrics: wardgate_http::AdminMetrics::register(&mut registry),
                lwm2m: lwm2m.clone(),
                selector: selector.clone(),
                outbox: Some(outbox.clone()),
                captures: capture.clone(),
                board: Some(board.clone()),
                health: health.clone(),
            };
            let reporter = health.reporter("admin", ComponentKind::Listener);
            Some(
                wardgate_http::AdminServer::bind(&cfg.admin, deps, reporter)
                    .await
                    .context("admin API")?,
            )
        } else {
            None
        };

        let ingest_http = if cfg.ingest.http.enabled {
            let deps = wardgate_http::ingest::IngestDeps {
                pipeline: ingest_pipeline.clone(),
                credentials: credentials.clone(),
                metrics: wardgate_http::ingest::IngestMetrics::register(&mut registry),
                // Sessions become flows, and TCP segments of their sizes in the capture (never
                // their bytes: at the tap they are plaintext).
                tap: monitor_tap.clone(),
            };
            Some(
                wardgate_http::ingest::IngestServer::bind(
                    &cfg.ingest.http,
                    deps,
                    health.reporter("ingest.http", ComponentKind::Listener),
                )
                .await
                .context("HTTPS ingest")?,
            )
        } else {
            None
        };

        // HTTP binds last: the registry is complete now.
        let http = bind_http(
            &cfg,
            registry,
            &health,
            vec![Arc::new(move || {
                bus_depth.set(i64::try_from(bus.depth()).unwrap_or(i64::MAX));
            })],
        )
        .await?;
        Ok(App {
            health,
            outbox,
            bus_rx,
            uplinks,
            coap,
            capture: capture.clone(),
            flows: flows_writer,
            anomalies,
            coaps,
            http,
            admin,
            devices: device_registry,
            demo_lwm2m: lwm2m.is_some(),
            lwm2m,
            selector,
            link_down_after: cfg
                .selector
                .as_ref()
                .map_or(wardgate_selector::DEFAULT_LINK_DOWN_AFTER, |s| {
                    s.link_down_after
                }),
            mqtt_ingest,
            bus_jetstream,
            ingest_http,
            pipeline: ingest_pipeline,
            demo,
        })
    }

    /// Starts everything: the store writer, the uplinks, ingest, HTTP, the admin API (and the
    /// demo sensors).
    fn spawn(self) -> Running {
        let stops = Stops::default();
        let store_health = self.health.reporter("store", ComponentKind::Store);
        let writer = {
            let outbox = self.outbox.clone();
            let stop = stops.store.clone();
            let bus_rx = self.bus_rx;
            tokio::spawn(async move { outbox.run_writer(bus_rx, stop, store_health).await })
        };
        let mut uplinks = JoinSet::new();
        for (up, cursor) in self.uplinks {
            uplinks.spawn(up.start(cursor, stops.uplinks.clone()));
        }
        if let Some(selector) = self.selector {
            uplinks.spawn(crate::steer::run(
                selector,
                self.outbox.clone(),
                self.health.clone(),
                self.link_down_after,
                stops.uplinks.clone(),
            ));
        }
        let mut ingest = JoinSet::new();
        let mut coap_addrs = Vec::new();
        if let Some(endpoint) = self.coap {
            coap_addrs = endpoint.local_addrs();
            for a in &coap_addrs {
                tracing::info!(addr = %a, "CoAP listening");
            }
            let stop = stops.ingest.clone();
            ingest.spawn(async move {
                if let Err(e) = endpoint.run(stop).await {
                    tracing::error!(error = %e, "CoAP endpoint failed");
                }
            });
        }
        if let Some(endpoint) = self.coaps {
            for a in endpoint.local_addrs() {
                tracing::info!(addr = %a, "CoAP over DTLS listening");
            }
            let stop = stops.ingest.clone();
            ingest.spawn(async move {
                if let Err(e) = endpoint.run(stop).await {
                    tracing::error!(error = %e, "CoAP over DTLS endpoint failed");
                }
            });
        }
        let http = self.http.map(|server| {
            if let Some(a) = server.local_addr() {
                tracing::info!(addr = %a, "HTTP listening (/healthz /readyz /metrics)");
            }
            tokio::spawn(server.run(stops.http.clone()))
        });
        if let Some(server) = self.lwm2m {
            ingest.spawn(server.run(stops.ingest.clone()));
        }
        if let Some(server) = self.ingest_http {
            if let Some(a) = server.local_addr() {
                tracing::info!(addr = %a, "HTTPS ingest listening (POST /v1/devices/{{id}}/readings)");
            }
            let stop = stops.ingest.clone();
            ingest.spawn(async move {
                if let Err(e) = server.run(stop).await {
                    tracing::error!(error = %e, "HTTPS ingest failed");
                }
            });
        }
        for sub in self.mqtt_ingest {
            let pipeline = self.pipeline.clone();
            let stop = stops.ingest.clone();
            ingest.spawn(async move {
                if let Err(e) = sub.run(pipeline, stop).await {
                    tracing::error!(error = %e, "MQTT subscriber failed");
                }
            });
        }
        if let Some(bus) = self.bus_jetstream {
            ingest.spawn(bus.run(self.pipeline.clone(), stops.ingest.clone()));
        }
        if let Some(devices) = self.devices {
            ingest.spawn(reload_on_sighup(devices, stops.ingest.clone()));
        }
        let admin = self.admin.map(|server| {
            if let Some(a) = server.local_addr() {
                tracing::info!(addr = %a, "admin API listening");
                // TLS is on for anything but loopback (validation refuses plain HTTP elsewhere).
                let scheme = if a.ip().is_loopback() {
                    "http"
                } else {
                    "https"
                };
                tracing::info!("status page: {scheme}://{a}/status");
            }
            tokio::spawn(server.run(stops.admin.clone()))
        });
        if self.demo {
            match demo::target(&coap_addrs) {
                Some(target) => {
                    tracing::info!(%target, "demo: starting a simulated ward of two beds");
                    let plan = crate::simulate::demo_plan(target, self.demo_lwm2m);
                    let stats = std::sync::Arc::new(crate::simulate::Stats::default());
                    ingest.spawn(crate::simulate::run(plan, stats, stops.ingest.clone()));
                }
                None => tracing::warn!("demo: CoAP is disabled; no simulated sensors started"),
            }
        }
        Running {
            stops,
            ingest,
            capture: self.capture,
            flows: self.flows,
            anomalies: self.anomalies.map(|a| tokio::spawn(a.run())),
            uplinks,
            writer,
            http,
            admin,
        }
    }
}

/// The `[http]` server (`/healthz`, `/readyz`, `/metrics` of `registry`), when enabled.
pub(crate) async fn bind_http(
    cfg: &GatewayConfig,
    registry: Registry,
    health: &Health,
    on_scrape: Vec<wardgate_http::ScrapeHook>,
) -> anyhow::Result<Option<wardgate_http::HttpServer>> {
    if !cfg.http.enabled {
        return Ok(None);
    }
    let deps = wardgate_http::HttpDeps {
        registry: Arc::new(registry),
        health: health.clone(),
        on_scrape,
    };
    let server = wardgate_http::HttpServer::bind(
        &cfg.http,
        deps,
        health.reporter("http", ComponentKind::Listener),
    )
    .await
    .context("HTTP server")?;
    Ok(Some(server))
}

/// Whether anything takes readings from devices (rather than only from the split bus).
fn device_facing(cfg: &GatewayConfig) -> bool {
    let from_devices = |m: &wardgate_mqtt::southbound::MqttIngestConfig| {
        m.topics
            .iter()
            .any(|t| t.format != wardgate_mqtt::southbound::PayloadFormat::Reading)
    };
    cfg.coap.enabled
        || cfg.coaps.enabled
        || cfg.ingest.http.enabled
        || cfg.ingest.mqtt.iter().any(from_devices)
}

/// Whether anything the traffic monitor taps is enabled: the plain CoAP sockets, the DTLS
/// transport, the HTTPS ingest's sessions, the MQTT subscribers' broker sessions.
fn tapped(cfg: &GatewayConfig) -> bool {
    cfg.coap.enabled || cfg.coaps.enabled || cfg.ingest.http.enabled || !cfg.ingest.mqtt.is_empty()
}

/// `[monitor.capture]`: the capture control the taps (on the plain CoAP sockets, in the DTLS
/// transport, the HTTPS ingest and the MQTT subscribers) follow and the admin API drives; the
/// configured capture is started now when `enabled`.
fn build_capture(
    cfg: &GatewayConfig,
    registry: &mut Registry,
) -> anyhow::Result<Option<wardgate_monitor::CaptureControl>> {
    if !tapped(cfg) {
        return Ok(None);
    }
    let control = start_capture(&cfg.monitor.capture, registry)?;
    control.open_keylog().with_context(|| {
        format!(
            "[monitor.capture] keylog_file {}",
            cfg.monitor
                .capture
                .keylog_file
                .as_deref()
                .unwrap_or(std::path::Path::new(""))
                .display()
        )
    })?;
    if let Some(path) = &cfg.monitor.capture.keylog_file {
        tracing::warn!(file = %path.display(), "writing the secrets of captured DTLS sessions to a key log: it decrypts patient data");
    }
    Ok(Some(control))
}

/// The capture control of `c` with its metrics; the configured capture started when `enabled`
/// (also `wardgate monitor`'s).
pub(crate) fn start_capture(
    c: &wardgate_monitor::CaptureConfig,
    registry: &mut Registry,
) -> anyhow::Result<wardgate_monitor::CaptureControl> {
    let metrics = wardgate_monitor::CaptureMetrics::register(registry);
    let control = wardgate_monitor::CaptureControl::new(c.clone(), metrics);
    if !c.enabled {
        return Ok(control);
    }
    let request = wardgate_monitor::control::CaptureRequest {
        devices: c.devices.clone(),
        addresses: c.addresses.clone(),
        protocols: c.protocols.clone(),
        duration: None,
        redact_payloads: Some(c.redact_payloads),
    };
    control
        .start(&request, "config")
        .with_context(|| format!("[monitor.capture] dir {}", c.dir.display()))?;
    if c.redact_payloads {
        tracing::info!(dir = %c.dir.display(), "capturing the monitored traffic to pcapng (payloads redacted)");
    } else {
        tracing::warn!(dir = %c.dir.display(), "capturing the monitored traffic to pcapng WITH payloads: the files hold patient data");
    }
    Ok(control)
}

/// The monitor thread (`[monitor.flows]` and/or `[monitor.anomalies]`), when either is enabled
/// and something exists for its taps (the plain CoAP sockets, the DTLS transport and the HTTPS
/// ingest listener get the handle); with anomalies, the task that stores their events.
fn build_analysis(
    cfg: &GatewayConfig,
    registry: &mut Registry,
    pipeline: &IngestPipeline,
    audit: &Arc<dyn AuditSink>,
) -> anyhow::Result<(
    Option<wardgate_monitor::FlowHandle>,
    Option<wardgate_monitor::FlowWriter>,
    Option<crate::anomalies::AnomalyStore>,
)> {
    let (f, a) = (&cfg.monitor.flows, &cfg.monitor.anomalies);
    if !((f.enabled || a.enabled) && tapped(cfg)) {
        return Ok((None, None, None));
    }
    let metrics = wardgate_monitor::FlowMetrics::register(registry);
    let (detectors, store) = if a.enabled {
        let metrics = wardgate_monitor::AnomalyMetrics::register(registry);
        let (tx, rx) = tokio::sync::mpsc::channel(a.queue_events.max(1));
        let detectors = wardgate_monitor::Anomalies {
            params: a.clone(),
            sink: crate::anomalies::sink(tx, metrics.clone()),
            metrics: metrics.clone(),
        };
        let store = crate::anomalies::AnomalyStore {
            rx,
            pipeline: pipeline.clone(),
            device: cfg.gateway.id.clone(),
            audit: audit.clone(),
            metrics,
        };
        (Some(detectors), Some(store))
    } else {
        (None, None)
    };
    // One queue for flows and detectors: `[monitor.flows] queue_packets` sizes it either way.
    let (handle, writer) = wardgate_monitor::start_analysis(
        f.enabled.then_some(f),
        detectors,
        f.queue_packets,
        metrics,
    )
    .with_context(|| format!("[monitor.flows] dir {}", f.dir.display()))?;
    if f.enabled {
        tracing::info!(dir = %f.dir.display(), "writing flow records of the CoAP traffic");
    }
    if a.enabled {
        tracing::info!("detecting traffic anomalies (security-class readings)");
    }
    Ok((Some(handle), Some(writer), store))
}

/// The LwM2M server: its object model, its registrations restored from disk, its metrics.
async fn build_lwm2m(
    cfg: &GatewayConfig,
    pipeline: IngestPipeline,
    credentials: Arc<dyn CredentialStore>,
    registry: &mut Registry,
) -> anyhow::Result<wardgate_lwm2m::Server> {
    let path = cfg.lwm2m.registrations_path.clone().unwrap_or_else(|| {
        cfg.store
            .path
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join("lwm2m.db")
    });
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("LwM2M registrations directory {}", dir.display()))?;
    }
    let p = path.clone();
    let (store, loaded) =
        tokio::task::spawn_blocking(move || wardgate_lwm2m::persist::RegistrationStore::open(&p))
            .await
            .context("LwM2M registration store open task")??;
    let model = match &cfg.lwm2m.objects_dir {
        None => wardgate_lwm2m::ObjectModel::builtin(),
        Some(dir) => {
            let m = wardgate_lwm2m::ObjectModel::load_dir(dir)
                .with_context(|| format!("LwM2M object definitions in {}", dir.display()))?;
            tracing::info!(dir = %dir.display(), objects = m.len(), "LwM2M object definitions loaded");
            m
        }
    };
    let model = Arc::new(model);
    if !pipeline.authorizer().authenticates() {
        tracing::warn!(
            "LwM2M registrations are NOT authenticated: any host that can reach the CoAP ports \
             may register as any endpoint (no [registry] configured)"
        );
    }
    let server = wardgate_lwm2m::Server::new(
        cfg.lwm2m.settings(),
        pipeline,
        model,
        store,
        loaded,
        wardgate_lwm2m::Lwm2mMetrics::register(registry),
    );
    // Bootstrap provisions PSKs from the device registry.
    server.set_credentials(credentials);
    tracing::info!(registrations = %path.display(), "LwM2M server enabled on the CoAP endpoints (/rd, /dp, /bs)");
    Ok(server)
}

/// The CoAP-over-DTLS endpoint: one DTLS transport per `[coaps] listen` address, serving the
/// same resources as plain CoAP (observe targets stay with the plain endpoint).
fn build_coaps(
    cfg: &GatewayConfig,
    targets: Vec<wardgate_coap::ObserveTarget>,
    devices: Option<&wardgate_registry::Registry>,
    deps: wardgate_coap::EndpointDeps,
    dtls: DtlsDeps,
) -> anyhow::Result<wardgate_coap::CoapEndpoint<DtlsTransport>> {
    let transports = cfg
        .coaps
        .listen
        .iter()
        .map(|addr| DtlsTransport::bind(*addr, &cfg.coaps, dtls.clone()))
        .collect::<Result<Vec<_>, _>>()
        .context("CoAP over DTLS listener")?;
    // The gateway is the DTLS client of each `coaps://` sensor, with the PSK the registry holds
    // for the target's device.
    for t in &targets {
        let uri = wardgate_coap::uri::parse_uri(&t.uri)?;
        let identity = devices
            .and_then(|d| d.get(&t.device))
            .and_then(|v| v.psk)
            .map(|p| p.identity)
            .with_context(|| {
                format!(
                    "observe target {}: the registry has no PSK for device {:?}",
                    t.uri, t.device
                )
            })?;
        let key = devices.and_then(|d| d.psk(&identity)).with_context(|| {
            format!("observe target {}: device {:?} is revoked", t.uri, t.device)
        })?;
        let addrs: Vec<std::net::SocketAddr> =
            std::net::ToSocketAddrs::to_socket_addrs(&(uri.host.as_str(), uri.port))
                .with_context(|| format!("observe target {}: cannot resolve the host", t.uri))?
                .collect();
        for transport in &transports {
            for addr in &addrs {
                transport.add_client(*addr, &identity, key.clone())?;
            }
        }
    }
    let coap_cfg = wardgate_coap::CoapConfig {
        listen: cfg.coaps.listen.clone(),
        observe: targets,
        ..cfg.coap.clone()
    };
    Ok(wardgate_coap::CoapEndpoint::with_transports(
        coap_cfg, deps, transports,
    )?)
}

/// The uplink selector of `[selector]` (none without the section: every reading goes to every
/// uplink).
fn build_selector(
    cfg: &GatewayConfig,
    uplinks: &[String],
    registry: &mut Registry,
) -> anyhow::Result<Option<wardgate_selector::SharedSelector>> {
    let Some(sel) = &cfg.selector else {
        return Ok(None);
    };
    let now: wardgate_selector::Now = Arc::new(|| tokio::time::Instant::now().into_std());
    let selector = wardgate_selector::Selector::new(sel, uplinks, now()).context("[selector]")?;
    for c in wardgate_core::MessageClass::ALL {
        tracing::info!(
            class = c.as_str(),
            policy = selector.policy(c).name(),
            "selector policy"
        );
    }
    let metrics = wardgate_selector::SelectorMetrics::register(registry);
    Ok(Some(wardgate_selector::SharedSelector::new(
        selector, now, metrics,
    )))
}

/// Who decides, where keys come from, and the registry itself when there is one.
type Devices = (
    Arc<dyn Authorizer>,
    Arc<dyn CredentialStore>,
    Option<Arc<wardgate_registry::Registry>>,
);

/// An uplink component with the outbox cursor it will drain.
type BuiltUplink = (Box<dyn Uplink<Cursor>>, Cursor);

/// Every configured uplink built (validated, TLS files read, metrics and health checks
/// registered) with its outbox cursor, in configuration order.
fn build_uplinks(
    cfg: &GatewayConfig,
    outbox: &Outbox,
    registry: &mut Registry,
    health: &Health,
) -> anyhow::Result<Vec<BuiltUplink>> {
    let file_metrics = FileUplinkMetrics::register(registry);
    let mqtt_metrics = wardgate_mqtt::MqttMetrics::register(registry);
    let https_metrics = if cfg
        .uplinks
        .iter()
        .any(|u| matches!(u, UplinkConfig::Https(_)))
    {
        wardgate_http::uplink::HttpsUplinkMetrics::register(registry)
    } else {
        wardgate_http::uplink::HttpsUplinkMetrics::default()
    };
    cfg.uplinks
        .iter()
        .map(|u| {
            let up: Box<dyn Uplink<Cursor>> = match u {
                UplinkConfig::File(f) => {
                    Box::new(FileUplink::build(f, file_metrics.clone(), health))
                }
                UplinkConfig::Mqtt(m) => Box::new(
                    m.build(&cfg.gateway.id, mqtt_metrics.clone(), health)
                        .with_context(|| format!("uplink {}", m.name))?,
                ),
                UplinkConfig::Https(h) => Box::new(
                    h.build(&cfg.gateway.id, https_metrics.clone(), health)
                        .with_context(|| format!("uplink {}", h.name))?,
                ),
            };
            let cursor = outbox
                .cursor(up.name())
                .with_context(|| format!("outbox cursor for uplink {}", up.name()))?;
            Ok((up, cursor))
        })
        .collect()
}

/// One cancellation per shutdown phase.
#[derive(Default)]
struct Stops {
    admin: Shutdown,
    ingest: Shutdown,
    uplinks: Shutdown,
    store: Shutdown,
    http: Shutdown,
}

/// The running gateway.
struct Running {
    stops: Stops,
    ingest: JoinSet<()>,
    /// Its running capture is stopped after the CoAP endpoint (holding the taps).
    capture: Option<wardgate_monitor::CaptureControl>,
    /// Likewise; writes every open flow (`shutdown`) before it ends.
    flows: Option<wardgate_monitor::FlowWriter>,
    /// Ends once the monitor thread has (its queue closed) and every event it raised is stored.
    anomalies: Option<tokio::task::JoinHandle<()>>,
    uplinks: JoinSet<()>,
    writer: tokio::task::JoinHandle<Result<(), wardgate_store::StoreError>>,
    http: Option<tokio::task::JoinHandle<Result<(), wardgate_http::HttpError>>>,
    admin: Option<tokio::task::JoinHandle<Result<(), wardgate_http::HttpError>>>,
}

impl Running {
    /// Stops in dependency order, each phase bounded by [`PHASE_DEADLINE`] (see the module doc).
    async fn shutdown(mut self) {
        self.stops.admin.cancel();
        if let Some(t) = self.admin.take() {
            let _ = tokio::time::timeout(PHASE_DEADLINE, t).await;
        }
        tracing::info!("shutting down: closing ingest");
        self.stops.ingest.cancel();
        drain(&mut self.ingest, "ingest").await;
        if let Some(capture) = self.capture.take() {
            // The writer writes what is queued and closes.
            let joined = tokio::task::spawn_blocking(move || capture.stop(None));
            if tokio::time::timeout(PHASE_DEADLINE, joined).await.is_err() {
                tracing::warn!("the capture writer did not finish within {PHASE_DEADLINE:?}");
            }
        }
        if let Some(flows) = self.flows.take() {
            let joined = tokio::task::spawn_blocking(move || flows.join());
            if tokio::time::timeout(PHASE_DEADLINE, joined).await.is_err() {
                tracing::warn!("the flow writer did not finish within {PHASE_DEADLINE:?}");
            }
        }
        if let Some(t) = self.anomalies.take()
            && tokio::time::timeout(PHASE_DEADLINE, t).await.is_err()
        {
            tracing::warn!("anomaly events were still being stored after {PHASE_DEADLINE:?}");
        }
        tracing::info!("shutting down: stopping uplinks");
        self.stops.uplinks.cancel();
        drain(&mut self.uplinks, "uplinks").await;
        tracing::info!("shutting down: flushing the outbox");
        self.stops.store.cancel();
        match tokio::time::timeout(PHASE_DEADLINE, self.writer).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::error!(error = %e, "outbox did not close cleanly"),
            Ok(Err(e)) => tracing::error!(error = %e, "outbox writer panicked"),
            Err(_) => tracing::error!("outbox did not close within {PHASE_DEADLINE:?}"),
        }
        self.stops.http.cancel();
        if let Some(t) = self.http {
            let _ = tokio::time::timeout(PHASE_DEADLINE, t).await;
        }
        tracing::info!("wardgate stopped");
    }
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

/// `kill -HUP` re-reads `devices.toml` (hand edits take effect without a restart). A file that
/// does not validate keeps the current registry; either way the registry audits the reload.
async fn reload_on_sighup(devices: Arc<wardgate_registry::Registry>, stop: Shutdown) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGHUP; reload the registry through the admin API");
                return;
            }
        };
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                got = hup.recv() => if got.is_none() { return },
            }
            let reg = devices.clone();
            match tokio::task::spawn_blocking(move || reg.reload()).await {
                Ok(Ok(())) => tracing::info!("SIGHUP: device registry reloaded"),
                Ok(Err(e)) => tracing::error!(
                    "SIGHUP: device registry not reloaded, keeping the current one: {e}"
                ),
                Err(e) => tracing::error!(error = %e, "SIGHUP: registry reload task failed"),
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (devices, stop);
    }
}

pub(crate) async fn wait_for_signal() {
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
