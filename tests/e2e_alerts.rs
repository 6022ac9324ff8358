//! The Prometheus alert rules (`deploy/prometheus/alerts.yml`) against Debian's `promtool` and a
//! running gateway: the rules parse, each alert fires on the synthetic series of
//! `alerts.test.yml`, and every metric a rule names is one the gateway exports (a renamed or
//! removed metric fails here, not silently on a hospital's dashboard).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use common::{Gateway, Mosquitto, require_tool};

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
    assert!(checked.contains("SUCCESS: 9 rules found"), "{checked}");
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

#[test]
fn every_metric_the_alert_rules_name_is_exported_by_the_gateway() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let devices = dir.path().join("devices.toml");
    std::fs::write(
        &devices,
        "[[device]]\nid = \"bed-12\"\n[device.psk]\nidentity = \"bed-12\"\nkey = \"hex:000102030405060708090a0b0c0d0e0f\"\n",
    )
    .unwrap();
    let coaps = common::free_udp_port();
    // Every part a rule looks at: the MQTT uplink, the selector, DTLS, the anomaly detectors.
    let gw = Gateway::start(
        dir.path(),
        &broker.url(),
        &format!(
            "[registry]\npath = \"{}\"\n[coaps]\nenabled = true\nlisten = [\"127.0.0.1:{coaps}\"]\n\
             [selector]\n[monitor.anomalies]\nenabled = true\n",
            devices.display()
        ),
    );
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
