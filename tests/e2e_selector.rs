//! The uplink selector and the outbox's priority lanes against real Mosquitto brokers, through
//! the real binary: failover without loss or per-device reordering (asserted from what the
//! brokers' subscribers received), redundant alarms, alarms overtaking a backlog, the admin
//! view of the selector, and MQTT sensors ingested through a local broker.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Gateway, Mosquitto, Subscriber, admin_request, coap_send, free_tcp_port};

const TOKEN: &str = "e2e-admin-token-5b1c9d";
const TOKEN_SHA256: &str = "171af1420a6b96d677b85fe0e59f95055a264ba254305abf807e17a7cee758f6";

/// One reading as a broker's subscriber saw it.
#[derive(Debug, Clone)]
struct Seen {
    id: String,
    device: String,
    class: String,
    /// The load client's per-device counter (`seq` record), when there is one.
    seq: Option<u64>,
}

fn parse(payload: &str) -> Option<Seen> {
    let v: serde_json::Value = serde_json::from_str(payload).ok()?;
    let seq = v["records"]
        .as_array()?
        .iter()
        .find(|r| r["n"] == "seq")
        .and_then(|r| r["v"].as_f64())
        .map(|f| f as u64);
    Some(Seen {
        id: v["id"].as_str()?.to_owned(),
        device: v["device"].as_str()?.to_owned(),
        class: v["class"].as_str()?.to_owned(),
        seq,
    })
}

/// Every reading the subscriber receives until `quiet` passes without one, in arrival order.
fn drain(sub: &Subscriber, quiet: Duration) -> Vec<Seen> {
    let mut out = Vec::new();
    while let Some((topic, payload)) = sub.next(quiet) {
        if topic.ends_with("/status") {
            continue;
        }
        out.extend(parse(&payload));
    }
    out
}

/// Per device, the load counters in first-arrival order must increase: nothing reordered.
fn assert_in_device_order(server: &str, seen: &[Seen]) {
    let mut first = HashSet::new();
    let mut last: HashMap<&str, u64> = HashMap::new();
    for s in seen {
        if !first.insert(s.id.clone()) {
            continue; // a redelivery (at least once); the backend de-duplicates on id
        }
        let Some(seq) = s.seq else { continue };
        if let Some(prev) = last.insert(&s.device, seq) {
            assert!(
                seq > prev,
                "{server}: {} reading {seq} arrived after {prev}",
                s.device
            );
        }
    }
}

fn two_uplinks(backup: &Mosquitto, admin: u16) -> String {
    format!(
        r#"
keep_alive = "5s"
[[uplinks]]
type = "mqtt"
name = "backup"
url = "{}"
reconnect_min = "50ms"
reconnect_max = "500ms"
keep_alive = "5s"
[selector]
cool_down = "30s"
[[selector.classes]]
class = "vital"
failover = ["cloud", "backup"]
[[selector.classes]]
class = "alarm"
policy = "redundant"
[admin]
enabled = true
listen = "127.0.0.1:{admin}"
[[admin.tokens]]
id = "ops-1"
sha256 = "{TOKEN_SHA256}"
"#,
        backup.url()
    )
}

#[test]
fn vitals_fail_over_to_the_backup_broker_without_loss_or_reordering_and_alarms_reach_both() {
    let mut cloud = Mosquitto::start_persistent();
    let backup = Mosquitto::start();
    let cloud_sub = Subscriber::start_persistent(cloud.port, "wardgate/#", "e2e-cloud-sub");
    let backup_sub = Subscriber::start(backup.port, "wardgate/#");
    let dir = tempfile::tempdir().unwrap();
    let admin = free_tcp_port();
    let gw = Gateway::start(dir.path(), &cloud.url(), &two_uplinks(&backup, admin));

    // Alarms go to both uplinks (redundant).
    for i in 0..3 {
        let (ok, out) = coap_send(
            "post",
            50,
            &format!(r#"{{"spo2":8{i}}}"#),
            &gw.coap_uri("v1/readings/bed-9?class=alarm"),
        )
        .outcome();
        assert!(ok, "{out}");
    }

    // A stream of vitals from 8 devices; the preferred uplink's broker goes away mid-stream.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let target = gw.coap;
        let stop = stop.clone();
        std::thread::spawn(move || {
            common::load::run(target, 6000, 4, Duration::from_secs(120), &|| {
                stop.load(Ordering::Relaxed)
            })
        })
    };
    let mut before = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while before.iter().filter(|s: &&Seen| s.class == "vital").count() < 100 {
        assert!(Instant::now() < deadline, "cloud saw too few readings");
        if let Some((topic, payload)) = cloud_sub.next(Duration::from_secs(1)) {
            if !topic.ends_with("/status") {
                before.extend(parse(&payload));
            }
        }
    }
    cloud.stop_gracefully();
    let report = load.join().unwrap();
    assert_eq!((report.errors, report.unanswered), (0, 0));
    assert_eq!(report.acked.len(), 6000);

    // What the backup got: the readings cloud was owed when it went away, then the rest.
    let acked: HashSet<String> = report.acked.iter().map(|(_, id)| id.clone()).collect();
    common::wait_for("the cloud breaker to open", Duration::from_secs(20), || {
        gw.metrics()
            .lines()
            .any(|l| {
                l.starts_with("wardgate_selector_breaker_transitions_total")
                    && l.contains("uplink=\"cloud\"")
                    && l.contains("to=\"open\"")
            })
            .then_some(())
    });
    // What cloud was owed when its circuit opened moved to the backup in one commit.
    let moved: f64 = gw
        .metrics()
        .lines()
        .find(|l| l.starts_with("wardgate_store_released_total{uplink=\"cloud\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0);
    assert!(
        moved > 0.0,
        "the cutover moved cloud's backlog:\n{}\n{}",
        gw.metrics()
            .lines()
            .filter(|l| l.contains("released")
                || l.contains("selector")
                || l.contains("uplink_readings"))
            .collect::<Vec<_>>()
            .join("\n"),
        gw.log()
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("circuit"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // A vital sent now goes straight to the backup (the decision says why).
    let (ok, out) = coap_send(
        "post",
        50,
        r#"{"seq":0}"#,
        &gw.coap_uri("v1/readings/bed-10"),
    )
    .outcome();
    assert!(ok, "{out}");
    let (status, body) = admin_request(
        std::net::SocketAddr::from(([127, 0, 0, 1], admin)),
        "GET",
        "/admin/v1/selector",
        Some(TOKEN),
        "",
    );
    assert_eq!(status, 200);
    let view: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(view["uplinks"][0]["name"], "cloud");
    assert_eq!(view["uplinks"][0]["breaker"], "open");
    assert_eq!(view["uplinks"][1]["breaker"], "closed");
    let vital = view["classes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["class"] == "vital")
        .unwrap();
    assert_eq!(vital["policy"], "failover");
    assert_eq!(vital["now"], serde_json::json!(["backup"]));
    let newest = &view["decisions"][0];
    assert_eq!(newest["class"], "vital");
    assert_eq!(newest["reason"], "failover-skipped", "{newest}");
    assert_eq!(newest["targets"], serde_json::json!(["backup"]));

    // The cloud broker comes back: its persistent subscriber receives what it had accepted.
    cloud.restart();
    before.extend(drain(&cloud_sub, Duration::from_secs(3)));
    let at_backup = drain(&backup_sub, Duration::from_secs(3));
    let delivered: HashSet<&str> = before
        .iter()
        .chain(&at_backup)
        .map(|s| s.id.as_str())
        .collect();
    let lost: Vec<&String> = acked
        .iter()
        .filter(|id| !delivered.contains(id.as_str()))
        .collect();
    assert!(lost.is_empty(), "{} acknowledged readings lost", lost.len());
    assert!(
        at_backup.iter().filter(|s| s.class == "vital").count() > 0,
        "vitals failed over to the backup"
    );
    assert_in_device_order("cloud", &before);
    assert_in_device_order("backup", &at_backup);
    for server in [&before, &at_backup] {
        let alarms: HashSet<&str> = server
            .iter()
            .filter(|s| s.class == "alarm")
            .map(|s| s.id.as_str())
            .collect();
        assert_eq!(alarms.len(), 3, "every alarm reached both brokers");
    }

    // The outbox recorded which uplink delivered what: an alarm by both, a vital that failed
    // over by the backup.
    let admin_addr = std::net::SocketAddr::from(([127, 0, 0, 1], admin));
    let delivered_by = |id: &str| -> HashSet<String> {
        let (status, body) = admin_request(
            admin_addr,
            "GET",
            &format!("/admin/v1/readings/{id}"),
            Some(TOKEN),
            "",
        );
        assert_eq!(status, 200, "{id}: {body}");
        let t: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(t["id"], id);
        assert!(t["pending"].is_null(), "{body}");
        t["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["uplink"].as_str().unwrap().to_owned())
            .collect()
    };
    let alarm = before.iter().find(|s| s.class == "alarm").unwrap();
    assert_eq!(
        delivered_by(&alarm.id),
        HashSet::from(["cloud".to_owned(), "backup".to_owned()])
    );
    let cloud_ids: HashSet<&str> = before.iter().map(|s| s.id.as_str()).collect();
    let failed_over = at_backup
        .iter()
        .find(|s| s.class == "vital" && !cloud_ids.contains(s.id.as_str()))
        .expect("a vital only the backup delivered");
    assert!(delivered_by(&failed_over.id).contains("backup"));
    let (status, _) = admin_request(
        admin_addr,
        "GET",
        &format!("/admin/v1/readings/{}", ulid::Ulid::new()),
        Some(TOKEN),
        "",
    );
    assert_eq!(status, 404, "an id the outbox never saw");
    let (status, _) = admin_request(
        admin_addr,
        "GET",
        "/admin/v1/readings/not-an-id",
        Some(TOKEN),
        "",
    );
    assert_eq!(status, 400);
    let (status, _) = admin_request(
        admin_addr,
        "GET",
        &format!("/admin/v1/readings/{}", alarm.id),
        None,
        "",
    );
    assert_eq!(status, 401, "the lookup needs the admin token");
    drop(gw);
    cloud.assert_no_dropped_messages();
    backup.assert_no_dropped_messages();
}

#[test]
fn alarms_overtake_a_backlog_draining_after_an_outage() {
    let mut broker = Mosquitto::start_persistent();
    // Subscribed before the outage, so the broker keeps what arrives while it reconnects.
    let sub = Subscriber::start_persistent(broker.port, "wardgate/#", "e2e-backlog-sub");
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(dir.path(), &broker.url(), "");
    broker.stop_gracefully();
    // 20,000 vitals accumulate while the broker is away, then one alarm.
    let report = common::load::run(gw.coap, 20_000, 16, Duration::from_secs(240), &|| false);
    assert_eq!(report.acked.len(), 20_000);
    let alarm = |spo2: u32| {
        let (ok, out) = coap_send(
            "post",
            50,
            &format!(r#"{{"spo2":{spo2}}}"#),
            &gw.coap_uri("v1/readings/bed-1?class=alarm"),
        )
        .outcome();
        assert!(ok, "{out}");
    };
    alarm(79);
    // The broker stays away past the alarm class's budget (1 s): that alarm is delivered late.
    std::thread::sleep(Duration::from_millis(1200));
    broker.restart();

    // A second alarm while the backlog drains.
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < 2_000 {
        assert!(
            Instant::now() < deadline,
            "the drain stalled at {}",
            seen.len()
        );
        if let Some((topic, payload)) = sub.next(Duration::from_secs(1)) {
            if !topic.ends_with("/status") {
                seen.extend(parse(&payload));
            }
        }
    }
    let sent_at = seen.len();
    alarm(78);
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen.len() < 20_002 {
        assert!(
            Instant::now() < deadline,
            "only {} of 20002 arrived",
            seen.len()
        );
        seen.extend(drain(&sub, Duration::from_secs(1)));
    }
    let alarms: Vec<usize> = seen
        .iter()
        .enumerate()
        .filter(|(_, s)| s.class == "alarm")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(alarms.len(), 2);
    // The uplink's window (max_inflight) bounds how far ahead of an alarm the backlog can be;
    // without the priority lane the first alarm would arrive last.
    assert!(
        alarms[0] < 500,
        "the alarm stored behind 20,000 readings arrived {}th",
        alarms[0]
    );
    assert!(
        alarms[1] < sent_at + 5_000 && alarms[1] < seen.len() - 5_000,
        "the alarm sent when {sent_at} had arrived came {}th of {}",
        alarms[1],
        seen.len()
    );
    assert_in_device_order("broker", &seen);
    // The alarm stored during the outage was delivered after the alarm budget (1 s by default,
    // no [selector] needed): measured and counted.
    // Measured when the uplink takes each PUBACK, which may trail the subscriber by a moment.
    let measured = |class: &str| {
        gw.metric(&format!(
            r#"wardgate_delivery_age_seconds_count{{class="{class}",uplink="cloud"}}"#
        ))
    };
    common::wait_for("every delivery measured", Duration::from_secs(30), || {
        (measured("alarm") >= 2.0 && measured("vital") >= 20_000.0).then_some(())
    });
    assert!(
        gw.metric(r#"wardgate_delivery_over_budget_total{class="alarm",uplink="cloud"}"#) >= 1.0,
        "{}",
        gw.metrics()
    );
    assert_eq!(
        gw.metric(r#"wardgate_delivery_budget_seconds{class="alarm"}"#),
        1.0
    );
    assert!(
        gw.log().contains("later than their class's latency budget"),
        "the breach is logged"
    );
    drop(gw);
    broker.assert_no_dropped_messages();
}

#[test]
fn an_mqtt_sensor_reaches_the_uplink_and_what_it_published_while_wardgate_was_down_arrives_later() {
    let sensors = Mosquitto::start_persistent();
    let cloud = Mosquitto::start();
    let sub = Subscriber::start(cloud.port, "wardgate/#");
    let dir = tempfile::tempdir().unwrap();
    let mut gw = Gateway::start(
        dir.path(),
        &cloud.url(),
        &format!(
            r#"
[[ingest.mqtt]]
name = "ward-broker"
url = "{}"
client_id = "wardgate-e2e-south"
reconnect_min = "50ms"
reconnect_max = "500ms"
[[ingest.mqtt.topics]]
filter = "ward/+/senml"
device_level = 2
format = "senml-json"
"#,
            sensors.url()
        ),
    );
    let publish = |device: &str, v: u32| {
        let status = Command::new("mosquitto_pub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &sensors.port.to_string(),
                "-q",
                "1",
            ])
            .args(["-t", &format!("ward/{device}/senml")])
            .args(["-m", &format!(r#"[{{"n":"seq","v":{v}}}]"#)])
            .status()
            .unwrap();
        assert!(status.success());
    };
    common::wait_for("the subscriber to connect", Duration::from_secs(20), || {
        gw.metrics()
            .lines()
            .any(|l| l.starts_with("wardgate_mqtt_ingest_connected") && l.ends_with(" 1"))
            .then_some(())
    });
    publish("bed-7", 0);
    let first = drain(&sub, Duration::from_secs(3));
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!((first[0].device.as_str(), first[0].seq), ("bed-7", Some(0)));

    gw.terminate();
    for v in 1..=3 {
        publish("bed-7", v);
    }
    gw.restart();
    let later = drain(&sub, Duration::from_secs(5));
    assert_eq!(
        later.iter().map(|s| s.seq).collect::<Vec<_>>(),
        vec![Some(1), Some(2), Some(3)],
        "published while wardgate was stopped, delivered after it restarted, in order"
    );
}
