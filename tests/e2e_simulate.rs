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

#[test]
fn a_simulated_ward_reaches_the_cloud_over_every_protocol_and_its_attack_is_labelled() {
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

    let out = Command::new(WARDGATE)
        .args(["simulate", "--config"])
        .arg(&gw.config)
        .args([
            "--beds",
            "3",
            "--duration",
            "12s",
            "--seed",
            "5",
            "--attack",
            "--dropout-every",
            "0s",
            "--quiet",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}\n{stdout}\n{stderr}", out.status);

    // The summary: a line per protocol with readings accepted, and the attack.
    let row = |name: &str| -> Vec<u64> {
        let line = stdout
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} row:\n{stdout}"));
        line.split_whitespace()
            .skip(1)
            .map(|n| n.parse().unwrap())
            .collect()
    };
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

    // Every protocol's devices reached the upstream broker through the gateway.
    let mut devices = BTreeSet::new();
    let wanted = ["bed-01-spo2", "bed-01-thermo", "bed-01-bp", "bed-01-pump"];
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !wanted.iter().all(|d| devices.contains(*d)) {
        assert!(
            std::time::Instant::now() < deadline,
            "upstream saw only {devices:?}\n{stdout}"
        );
        // Readings only (the uplink also publishes its retained online/offline status).
        if let Some((_, payload)) = sub.next(Duration::from_secs(1))
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&payload)
            && let Some(d) = v["device"].as_str()
        {
            devices.insert(d.to_owned());
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
