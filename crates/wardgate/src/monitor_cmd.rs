//! `wardgate monitor`: interface capture mode, the monitor apart from the gateway (a mirrored
//! switch port, or the host's interface on the ward LAN). It reads frames from
//! `[monitor.interface]` (or `--interface`) and writes the same pcapng captures
//! (`[monitor.capture]`) and flow records (`[monitor.flows]`) the gateway's own taps write,
//! with `/metrics`, `/healthz` and `/readyz` on `[http]`. No ingest, no outbox, no uplinks.
//! With `[monitor.anomalies]` the same detectors run on the interface's traffic; with no outbox
//! to make readings of, their events are JSON lines in `anomalies.jsonl` in the flows directory
//! (`wardgate_monitor::anomaly_log`), WARN log lines and the same metrics.
//!
//! Stops on SIGINT/SIGTERM: the reader stops, the capture writes what is queued and closes,
//! the flow thread writes every open flow.

use std::process::ExitCode;

use anyhow::Context;
use prometheus_client::registry::Registry;
use wardgate_config::GatewayConfig;
use wardgate_core::health::ComponentKind;
use wardgate_core::{Health, Shutdown};

use crate::{EXIT_USAGE, run, telemetry};

pub(crate) fn main(cfg: GatewayConfig, interface: Option<String>) -> ExitCode {
    telemetry::init(&cfg.log);
    let mut icfg = cfg.monitor.interface.clone();
    if let Some(name) = interface {
        icfg.name = name;
    }
    if icfg.name.is_empty() {
        eprintln!(
            "wardgate monitor: no interface: give --interface NAME or [monitor.interface] name"
        );
        return ExitCode::from(EXIT_USAGE);
    }
    if !(cfg.monitor.capture.enabled || cfg.monitor.flows.enabled) {
        eprintln!(
            "wardgate monitor: nothing to record: enable [monitor.capture] and/or [monitor.flows]"
        );
        return ExitCode::from(EXIT_USAGE);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .thread_name("wardgate-monitor")
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(&cfg, &icfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("wardgate monitor: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(
    cfg: &GatewayConfig,
    icfg: &wardgate_monitor::InterfaceConfig,
) -> anyhow::Result<()> {
    // Open the interface first: a missing interface or permission stops here, before any file.
    let source = wardgate_monitor::InterfaceSource::open(icfg)?;
    let mut registry = Registry::default();
    let health = Health::without_uplinks();
    let interface_health = health.reporter("interface", ComponentKind::Listener);
    let capture = if cfg.monitor.capture.enabled {
        Some(run::start_capture(&cfg.monitor.capture, &mut registry)?)
    } else {
        None
    };
    let f = &cfg.monitor.flows;
    let flows = if f.enabled {
        let metrics = wardgate_monitor::FlowMetrics::register(&mut registry);
        let a = &cfg.monitor.anomalies;
        let detectors = a.enabled.then(|| {
            let metrics = wardgate_monitor::AnomalyMetrics::register(&mut registry);
            let log = wardgate_monitor::AnomalyLog::new(&f.dir, f.max_file_bytes, metrics.clone());
            wardgate_monitor::Anomalies {
                params: a.clone(),
                sink: log.into_sink(),
                metrics,
            }
        });
        let (handle, writer) =
            wardgate_monitor::start_analysis(Some(f), detectors, f.queue_packets, metrics)
                .with_context(|| format!("[monitor.flows] dir {}", f.dir.display()))?;
        if a.enabled {
            tracing::info!(
                file = %f.dir.join(wardgate_monitor::anomaly_log::FILE_NAME).display(),
                "writing the anomaly events of the interface's traffic"
            );
        }
        Some((handle, writer))
    } else {
        None
    };
    let metrics = wardgate_monitor::InterfaceMetrics::register(&mut registry);
    let reader = source.start(
        capture.as_ref().map(wardgate_monitor::CaptureControl::tap),
        flows.as_ref().map(|(h, _)| h.clone()),
        metrics,
    )?;
    interface_health.ready(format!("reading {}", icfg.name));
    let (flow_handle, flow_writer) = flows.unzip();
    // The reader holds the only handle now: the flow thread ends when the reader does.
    drop(flow_handle);
    let http_stop = Shutdown::new();
    let http = run::bind_http(cfg, registry, &health, Vec::new())
        .await?
        .map(|server| {
            if let Some(a) = server.local_addr() {
                tracing::info!(addr = %a, "HTTP listening (/healthz /readyz /metrics)");
            }
            tokio::spawn(server.run(http_stop.clone()))
        });
    tracing::info!(
        interface = %icfg.name,
        server_ports = ?icfg.server_ports,
        "monitoring the interface; stop with Ctrl-C or SIGTERM"
    );
    run::wait_for_signal().await;
    tracing::info!("stopping the interface monitor");
    let done = tokio::task::spawn_blocking(move || {
        reader.stop();
        if let Some(c) = capture {
            c.stop(None);
        }
        if let Some(w) = flow_writer {
            w.join();
        }
    });
    if done.await.is_err() {
        tracing::error!("the monitor threads did not stop cleanly");
    }
    http_stop.cancel();
    if let Some(t) = http {
        let _ = t.await;
    }
    tracing::info!("interface monitor stopped");
    Ok(())
}
