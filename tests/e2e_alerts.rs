//! The Prometheus alert rules (`deploy/prometheus/alerts.yml`) against Debian's `promtool` and a
//! running gateway: the rules parse, each alert fires on the synthetic series of
//! `alerts.test.yml`, and every metric a rule names is one the gateway exports (a renamed or
//! removed metric fails here, not silently on a hospital's dashboard).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use common::{Gateway, Mosquitto, require_tool, wait_for};

const PROMTOOL: &str = "/usr/bin/promtool";
const RULES_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/prometheus");

fn promtool(args: &[&str]) -> String {
    require_tool(PROMTOOL);
    let out = Command::new(PROMTOOL)
        .args(args)
        .current_dir(RULES_DIR)
        .output()
        .expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}: {text}");
    text
}

#[test]
fn the_alert_rules_parse_and_each_fires_on_its_test_series() {
    let checked = promtool(&["check", "rules", "alerts.yml"]);
    assert!(checked.contains("SUCCESS: 10 rules found"), "{checked}");
    let tested = promtool(&["test", "rules", "alerts.test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

/// Every `wardgate_*` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("wardgate_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    out
}

/// A `[registry]` section whose file (written in `dir`) holds bed-12 with the tests' PSK.
fn registry(dir: &Path) -> String {
    let devices = dir.join("devices.toml");
    std::fs::write(
        &devices,
        "[[device]]\nid = \"bed-12\"\n[device.psk]\nidentity = \"bed-12\"\nkey = \"hex:000102030405060708090a0b0c0d0e0f\"\n",
    )
    .unwrap();
    format!("[registry]\npath = \"{}\"\n", devices.display())
}

/// A gateway with every part a rule or panel looks at: the MQTT uplink to `broker`, the
/// selector, DTLS (with the registry), LwM2M, the anomaly detectors; and its DTLS port.
fn full_gateway(dir: &Path, broker: &Mosquitto) -> (Gateway, u16) {
    let coaps = common::free_udp_port();
    let gw = Gateway::start(
        dir,
        &broker.url(),
        &format!(
            "{}[coaps]\nenabled = true\nlisten = [\"127.0.0.1:{coaps}\"]\n[lwm2m]\nenabled = true\n\
             [selector]\n[monitor.anomalies]\nenabled = true\n",
            registry(dir)
        ),
    );
    (gw, coaps)
}

#[test]
fn every_metric_the_alert_rules_name_is_exported_by_the_gateway() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let (gw, _) = full_gateway(dir.path(), &broker);
    let exported = gw.metrics();
    // Families are announced by their `# TYPE` line even before their first sample.
    let families: BTreeSet<&str> = exported
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let rules = std::fs::read_to_string(Path::new(RULES_DIR).join("alerts.yml")).unwrap();
    let named = metric_names(&rules);
    assert!(named.len() >= 10, "{named:?}");
    let missing: Vec<&String> = named
        .iter()
        .filter(|n| {
            let family = ["_total", "_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| n.strip_suffix(s))
                .unwrap_or(n);
            !families.contains(family) && !families.contains(n.as_str())
        })
        .collect();
    assert!(
        missing.is_empty(),
        "alert rules name metrics the gateway does not export: {missing:?}\nexported families: {families:?}"
    );
}

/// `s` percent-encoded for a URL query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The dashboard (`deploy/grafana/wardgate-dashboard.json`) against Debian's Prometheus scraping
/// a running gateway that took readings and delivered them to Mosquitto: every panel's query,
/// with Grafana's variables filled in, returns data (a renamed metric, a wrong label or a broken
/// query fails here).
#[test]
fn every_dashboard_query_returns_data_from_prometheus_scraping_a_gateway() {
    const PROMETHEUS: &str = "/usr/bin/prometheus";
    require_tool(PROMETHEUS);
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(RULES_DIR).join("../grafana/wardgate-dashboard.json"))
            .unwrap(),
    )
    .unwrap();
    let queries: Vec<(String, String)> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap_or_default().to_owned();
            p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |t| (title.clone(), t["expr"].as_str().unwrap().to_owned()))
        })
        .collect();
    assert!(queries.len() >= 12, "{queries:?}");

    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let (gw, coaps) = full_gateway(dir.path(), &broker);
    let web = common::free_tcp_port();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: wardgate\n    static_configs:\n      - targets: [\"{}\"]\n",
            gw.http
        ),
    )
    .unwrap();
    let _prometheus = common::ChildGuard(
        Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{web}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
            .spawn()
            .expect("start prometheus"),
    );
    // A reading in over DTLS and delivered to Mosquitto, so the rates and histograms have
    // something to say.
    let _device = common::openssl_psk_post(coaps, "bed-12", "bed-12", 97);
    wait_for(
        "a reading delivered",
        std::time::Duration::from_secs(30),
        || (gw.metric("wardgate_store_acks_total{uplink=\"cloud\"}") >= 1.0).then_some(()),
    );
    let addr: std::net::SocketAddr = format!("127.0.0.1:{web}").parse().unwrap();
    let empty = |expr: &str| -> bool {
        let filled = expr
            .replace("$instance", ".*")
            .replace("$__rate_interval", "1m");
        let path = format!("/api/v1/query?query={}", encode(&filled));
        common::http_get(addr, &path)
            .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(&body).ok())
            .and_then(|v| v["data"]["result"].as_array().map(Vec::is_empty))
            .unwrap_or(true)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let missing: Vec<&(String, String)> = queries.iter().filter(|(_, e)| empty(e)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "dashboard panels without data after 60 s: {missing:#?}\n{}",
            std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}
