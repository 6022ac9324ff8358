//! `wardgate simulate` against the real gateway: a ward of three beds over every southbound
//! protocol the gateway has on (CoAP, LwM2M, plain-HTTP ingest on loopback, MQTT sensors through
//! Mosquitto), with attack traffic from 127.0.0.66. The readings of every protocol reach the
//! upstream broker, the summary counts them, and the monitor labels the attack's flows
//! `attack` and the ward's `benign`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Gateway, Mosquitto, Subscriber, WARDGATE, free_tcp_port};

/// Runs `wardgate simulate --config CONFIG ARGS --dropout-every 0s --quiet` to its end: its
/// stdout (the summary) and stderr. Fails the test if it exits non-zero.
fn simulate(config: &std::path::Path, args: &[&str]) -> (String, String) {
    let out = Command::new(WARDGATE)
        .args(["simulate", "--config"])
        .arg(config)
        .args(args)
        .args(["--dropout-every", "0s", "--quiet"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{}\n{stdout}\n{stderr}", out.status);
    (stdout, stderr)
}

/// The summary row of `protocol`: sent, accepted, refused, failed.
fn row(summary: &str, protocol: &str) -> Option<Vec<u64>> {
    let line = summary
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{protocol} ")))?;
    Some(
        line.split_whitespace()
            .skip(1)
            .map(|n| n.parse().unwrap())
            .collect(),
    )
}

#[test]
fn a_simulated_ward_reaches_the_cloud_and_its_attack_is_detected_and_labelled() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start();
    let http_in = free_tcp_port();
    let flows = dir.path().join("flows");
    let extra = format!(
        r#"
[ingest.http]
enabled = true
listen = "127.0.0.1:{http_in}"
[[ingest.mqtt]]
name = "ward-broker"
url = "mqtt://127.0.0.1:{port}"
client_id = "gw-sim-test"
[[ingest.mqtt.topics]]
filter = "ward/+/data"
device_level = 2
[monitor.flows]
enabled = true
dir = "{flows}"
[[monitor.flows.labels]]
addresses = ["127.0.0.66"]
label = "attack"
[monitor.anomalies]
enabled = true
"#,
        port = broker.port,
        flows = flows.display(),
    );
    let mut gw = Gateway::start(
        dir.path(),
        &format!("mqtt://127.0.0.1:{}", broker.port),
        &extra,
    );
    let sub = Subscriber::start(broker.port, "wardgate/#");

    let (stdout, stderr) = simulate(
        &gw.config,
        &[
            "--beds",
            "3",
            "--duration",
            "12s",
            "--seed",
            "5",
            "--attack",
        ],
    );
    // The summary: a line per protocol with readings accepted, and the attack.
    let row = |name: &str| row(&stdout, name).unwrap_or_else(|| panic!("no {name} row:\n{stdout}"));
    for p in ["coap", "lwm2m", "https", "mqtt"] {
        let r = row(p);
        assert!(r[1] > 0, "{p} accepted nothing:\n{stdout}");
        assert_eq!(r[3], 0, "{p} failures:\n{stdout}\n{stderr}");
        // No registry: every reading sent is accepted (MQTT's last PUBACKs included).
        assert_eq!(r[0], r[1], "{p}:\n{stdout}");
    }
    // Three beds, a reading a second from each SpO2 probe for 12 s (less any dropout).
    assert!(row("coap")[0] >= 3 * 8, "{stdout}");
    assert!(stdout.contains("attack from 127.0.0.66: "), "{stdout}");

    // Every protocol's devices reached the upstream broker through the gateway, and the
    // attack's scan (4.04s), forged readings (4.03s) and malformed datagrams became anomaly
    // events (`security` readings from the gateway) naming the attacker's address.
    let mut devices = BTreeSet::new();
    let mut anomalies = BTreeSet::new();
    let wanted = ["bed-01-spo2", "bed-01-thermo", "bed-01-bp", "bed-01-pump"];
    let attacks = ["auth_failures", "malformed_flood", "resource_scan"];
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !(wanted.iter().all(|d| devices.contains(*d))
        && attacks.iter().all(|a| anomalies.contains(*a)))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "upstream saw only {devices:?} and the anomalies {anomalies:?}\n{stdout}"
        );
        // Readings only (the uplink also publishes its retained online/offline status).
        if let Some((_, payload)) = sub.next(Duration::from_secs(1))
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&payload)
            && let Some(d) = v["device"].as_str()
        {
            devices.insert(d.to_owned());
            let record = |n: &str| {
                v["records"]
                    .as_array()
                    .and_then(|r| r.iter().find(|r| r["n"] == n))
                    .and_then(|r| r["vs"].as_str())
                    .map(str::to_owned)
            };
            if v["class"] == "security"
                && record("peer").is_some_and(|p| p.starts_with("127.0.0.66:"))
                && let Some(kind) = record("anomaly")
            {
                anomalies.insert(kind);
            }
        }
    }
    // No spoofed security reading got through.
    assert!(!devices.iter().any(|d| d.contains("spoof")), "{devices:?}");

    let status = gw.terminate();
    assert!(status.success(), "{status}\n{}", gw.log());
    let (json, records) = common::flow_records(&flows);
    let (attacks, ward): (Vec<_>, Vec<_>) = records
        .iter()
        .filter(|r| r["protocol"] == 17)
        .partition(|r| r["src_ip"] == "127.0.0.66");
    assert!(!attacks.is_empty() && !ward.is_empty(), "{json}");
    assert!(attacks.iter().all(|r| r["label"] == "attack"), "{json}");
    assert!(ward.iter().all(|r| r["label"] == "benign"), "{json}");
    // The scan's 4.04s and the malformed datagrams are in the attack's flows.
    let sum = |k: &str| -> u64 { attacks.iter().map(|r| r[k].as_u64().unwrap_or(0)).sum() };
    assert!(sum("coap_404") > 0 && sum("malformed_pkts") > 0, "{json}");
}

/// Against a gateway that authenticates its devices: the registry `simulate --print-devices`
/// writes gives each CoAP device and each LwM2M thermometer a PSK, so they send over DTLS (each
/// its own session, `source.identity` = `psk:<id>`), and the HTTPS device its token.
#[test]
fn a_ward_with_registry_credentials_sends_over_dtls_and_authenticates_every_reading() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start();
    let devices = Command::new(WARDGATE)
        .args(["simulate", "--beds", "2", "--print-devices"])
        .output()
        .unwrap();
    assert!(devices.status.success());
    let text = String::from_utf8(devices.stdout).unwrap();
    assert_eq!(text.matches("[[device]]").count(), 2 * 5, "{text}");
    let registry = dir.path().join("devices.toml");
    std::fs::write(&registry, &text).unwrap();
    std::fs::set_permissions(
        &registry,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let coaps = common::free_udp_port();
    let http_in = free_tcp_port();
    let extra = format!(
        r#"
[registry]
path = "devices.toml"
[coaps]
enabled = true
listen = ["127.0.0.1:{coaps}"]
[ingest.http]
enabled = true
listen = "127.0.0.1:{http_in}"
"#
    );
    let mut gw = Gateway::start(
        dir.path(),
        &format!("mqtt://127.0.0.1:{}", broker.port),
        &extra,
    );
    let sub = Subscriber::start(broker.port, "wardgate/#");

    let (stdout, stderr) = simulate(
        &gw.config,
        &["--beds", "2", "--duration", "10s", "--seed", "3"],
    );
    let row = |name: &str| row(&stdout, name);
    // Every CoAP device has a PSK: none sends plain CoAP.
    assert!(row("coap").is_none(), "{stdout}");
    for p in ["coaps", "lwm2m", "https"] {
        let r = row(p).unwrap_or_else(|| panic!("no {p} row:\n{stdout}"));
        assert!(r[1] > 0, "{p} accepted nothing:\n{stdout}\n{stderr}");
        assert_eq!((r[0], r[2], r[3]), (r[1], 0, 0), "{p}:\n{stdout}\n{stderr}");
    }

    // Upstream, each reading names the identity its device proved.
    let mut proved = BTreeSet::new();
    let wanted = [
        ("bed-01-spo2", "dtls", "psk:bed-01-spo2"),
        ("bed-02-temp", "dtls", "psk:bed-02-temp"),
        ("bed-01-thermo", "dtls", "psk:bed-01-thermo"),
        ("bed-01-bp", "http", "token:bed-01-bp/sim"),
    ];
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !wanted
        .iter()
        .all(|(d, t, i)| proved.contains(&(*d, *t, *i)))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "upstream saw only {proved:?}\n{stdout}"
        );
        if let Some((_, payload)) = sub.next(Duration::from_secs(1))
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&payload)
            && let Some(w) = wanted.iter().find(|(d, _, _)| v["device"] == *d)
        {
            let s = &v["source"];
            if s["transport"] == w.1 && s["identity"] == w.2 {
                proved.insert(*w);
            }
        }
    }
    let status = gw.terminate();
    assert!(status.success(), "{status}\n{}", gw.log());
}
