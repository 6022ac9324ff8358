//! Store-and-forward promises, proven against the real binary, Mosquitto and a CoAP load client:
//! acknowledged readings survive `kill -9`, broker outages are absorbed in per-device order,
//! quotas apply their policy, and a corrupt outbox stops the gateway with a recovery command.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::load;
use common::{Gateway, Mosquitto, Subscriber, schema, valid_reading};

fn readings_only(topic: &str) -> bool {
    !topic.ends_with("/status")
}

/// Reads every reading that arrives until `want` ids have all been seen or `timeout` passes.
/// Returns (id -> times seen, per-device values in arrival order).
fn drain_until(
    sub: &Subscriber,
    want: &HashSet<String>,
    timeout: Duration,
) -> (HashMap<String, usize>, HashMap<String, Vec<f64>>) {
    let validator = schema();
    let deadline = Instant::now() + timeout;
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut order: HashMap<String, Vec<f64>> = HashMap::new();
    while !want.iter().all(|id| seen.contains_key(id)) {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some((topic, payload)) = sub.next(left.min(Duration::from_secs(1))) else {
            if left.is_zero() {
                break;
            }
            continue;
        };
        if !readings_only(&topic) {
            continue;
        }
        let v = valid_reading(&validator, &payload);
        let id = v["id"].as_str().unwrap().to_owned();
        *seen.entry(id).or_default() += 1;
        order
            .entry(v["device"].as_str().unwrap().to_owned())
            .or_default()
            .push(v["records"][0]["v"].as_f64().unwrap());
    }
    // Anything still in flight (duplicates) for a moment longer.
    while let Some((topic, payload)) = sub.next(Duration::from_millis(300)) {
        if readings_only(&topic) {
            let v = valid_reading(&validator, &payload);
            *seen
                .entry(v["id"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
    }
    (seen, order)
}

/// Per-device values, first occurrences only, must be strictly increasing.
fn assert_per_device_order(order: &HashMap<String, Vec<f64>>) {
    for (device, values) in order {
        let mut firsts = Vec::new();
        let mut seen = HashSet::new();
        for v in values {
            if seen.insert(v.to_bits()) {
                firsts.push(*v);
            }
        }
        assert!(
            firsts.windows(2).all(|w| w[0] < w[1]),
            "{device} out of order: {firsts:?}"
        );
    }
}

#[test]
fn acknowledged_readings_survive_kill_9_at_random_moments() {
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "wardgate/#");
    let dir = tempfile::tempdir().unwrap();
    let mut gw = Gateway::start(dir.path(), &broker.url(), "");
    let trials = 5;
    let (mut acked_total, mut lost_total, mut dup_total) = (0, 0, 0);
    for trial in 0..trials {
        // Kill after a pseudo-random 150..1350 ms of load, so each trial hits a different moment
        // (mid-commit, mid-publish, between acks).
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let kill_after = Duration::from_millis(150 + u64::from(nanos % 1200));
        let killed = Arc::new(AtomicBool::new(false));
        let k2 = killed.clone();
        let target = gw.coap;
        let loader = std::thread::spawn(move || {
            load::run(target, 1_000_000, 64, Duration::from_secs(30), &|| {
                k2.load(Ordering::SeqCst)
            })
        });
        std::thread::sleep(kill_after);
        gw.kill();
        killed.store(true, Ordering::SeqCst);
        let report = loader.join().unwrap();
        gw.restart();
        let acked: HashSet<String> = report.acked.iter().map(|(_, id)| id.clone()).collect();
        assert!(
            !acked.is_empty(),
            "trial {trial}: nothing was acknowledged before the kill"
        );
        assert!(
            acked.iter().all(|id| id.len() == 26),
            "Location-Path carries the reading id"
        );
        let (seen, _) = drain_until(&sub, &acked, Duration::from_secs(60));
        let lost = acked.iter().filter(|id| !seen.contains_key(*id)).count();
        let dups: usize = seen.values().filter(|n| **n > 1).count();
        println!(
            "trial {trial}: killed after {kill_after:?}: acked {} lost {lost} duplicated {dups} (busy answers {}, unanswered at kill {})",
            acked.len(),
            report.busy,
            report.unanswered
        );
        acked_total += acked.len();
        lost_total += lost;
        dup_total += dups;
    }
    println!(
        "kill -9 harness: {trials} trials, acked {acked_total}, lost {lost_total}, duplicated {dup_total}"
    );
    assert_eq!(lost_total, 0, "acknowledged readings were lost");
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn broker_outage_is_absorbed_and_delivered_in_per_device_order() {
    let mut broker = Mosquitto::start_persistent();
    let sub = Subscriber::start_persistent(broker.port, "wardgate/+/+/+", "outage-sub");
    let status =
        Subscriber::start_persistent(broker.port, "wardgate/test-ward/status", "outage-status");
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(dir.path(), &broker.url(), "");
    common::wait_for("uplink connected", Duration::from_secs(10), || {
        common::http_get(gw.http, "/readyz").filter(|(s, _)| *s == 200)
    });
    assert_eq!(
        status.collect(1, Duration::from_secs(10), |_| true)[0].1,
        "online"
    );
    drop(status);
    let before = load::run(gw.coap, 80, 4, Duration::from_secs(20), &|| false);
    assert_eq!(before.acked.len(), 80, "{before:?}");
    let ids = |r: &load::LoadReport| {
        r.acked
            .iter()
            .map(|(_, id)| id.clone())
            .collect::<HashSet<_>>()
    };
    let (seen, _) = drain_until(&sub, &ids(&before), Duration::from_secs(20));
    assert!(ids(&before).iter().all(|id| seen.contains_key(id)));
    drop(sub);

    broker.stop_gracefully();
    let during = load::run(gw.coap, 200, 4, Duration::from_secs(20), &|| false);
    assert_eq!(
        during.acked.len(),
        200,
        "readings are accepted while the broker is down: {during:?}"
    );
    let m = gw.metrics();
    assert!(
        metric(&m, "wardgate_store_depth_readings") >= 200.0,
        "depth did not rise:\n{m}"
    );
    let (status, body) = common::http_get(gw.http, "/readyz").unwrap();
    assert_eq!(
        status, 503,
        "no uplink is connected while the broker is down: {body}"
    );
    assert!(body.contains("uplinks"), "{body}");
    // The backlog is in /readyz too, by uplink, once its oldest reading is a second old (the
    // gauges and the detail refresh every second).
    let owed = common::wait_for("the backlog in /readyz", Duration::from_secs(10), || {
        common::http_get(gw.http, "/readyz").filter(|(_, b)| b.contains("owed: cloud"))
    })
    .1;
    let count: u64 = owed
        .split("owed: cloud ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {owed}"));
    assert!(count >= 200, "owed {count} readings, 200 expected: {owed}");

    broker.restart();
    // The broker published wardgate's will when it went down; wardgate says online again once
    // it has reconnected.
    let status =
        Subscriber::start_persistent(broker.port, "wardgate/test-ward/status", "outage-status");
    let states: Vec<String> = {
        let mut v = Vec::new();
        while !(v.contains(&"offline".to_owned()) && v.last().is_some_and(|s| s == "online")) {
            let Some((_, p)) = status.next(Duration::from_secs(15)) else {
                panic!("status went {v:?}, expected offline then online");
            };
            v.push(p);
        }
        v
    };
    let off = states.iter().position(|s| s == "offline").unwrap();
    assert!(states[off..].contains(&"online".to_owned()), "{states:?}");
    let sub = Subscriber::start_persistent(broker.port, "wardgate/+/+/+", "outage-sub");
    let after = load::run(gw.coap, 80, 4, Duration::from_secs(20), &|| false);
    let mut want = ids(&during);
    want.extend(ids(&after));
    let (seen, order) = drain_until(&sub, &want, Duration::from_secs(30));
    let missing = want.iter().filter(|id| !seen.contains_key(*id)).count();
    println!(
        "outage: before {} during {} after {} missing {missing}",
        before.acked.len(),
        during.acked.len(),
        after.acked.len()
    );
    assert_eq!(
        missing, 0,
        "readings accepted during the outage were not delivered"
    );
    assert_per_device_order(&order);
    common::wait_for("outbox to drain", Duration::from_secs(30), || {
        (metric(&gw.metrics(), "wardgate_store_depth_readings") == 0.0).then_some(())
    });
    common::wait_for(
        "the backlog to leave /readyz",
        Duration::from_secs(10),
        || common::http_get(gw.http, "/readyz").filter(|(s, b)| *s == 200 && !b.contains("owed")),
    );
}

#[test]
fn status_topic_shows_offline_when_the_gateway_dies_and_online_when_it_returns() {
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "wardgate/test-ward/status");
    let dir = tempfile::tempdir().unwrap();
    let mut gw = Gateway::start(dir.path(), &broker.url(), "");
    let first = sub.collect(1, Duration::from_secs(10), |_| true);
    assert_eq!(first[0].1, "online");
    gw.kill();
    let will = sub.collect(1, Duration::from_secs(60), |_| true);
    assert_eq!(
        will[0].1, "offline",
        "the broker publishes the will after a kill -9"
    );
    gw.restart();
    let back = sub.collect(1, Duration::from_secs(10), |_| true);
    assert_eq!(back[0].1, "online");
    let status = gw.terminate();
    assert!(status.success(), "{status}");
    let bye = sub.collect(1, Duration::from_secs(10), |_| true);
    assert_eq!(bye[0].1, "offline", "graceful shutdown says goodbye");
}

#[test]
fn full_outbox_with_reject_policy_answers_5_03_and_keeps_what_it_acknowledged() {
    let mut broker = Mosquitto::start_persistent();
    drop(Subscriber::start_persistent(
        broker.port,
        "wardgate/+/+/+",
        "reject-sub",
    ));
    broker.stop_gracefully();
    let dir = tempfile::tempdir().unwrap();
    let g = Gateway::start_with(
        dir.path(),
        &broker.url(),
        "max_readings = 50\noverflow = \"reject\"",
        "",
    );
    // Broker down, quota of 50: the rest is refused with 5.03 and stays with the device.
    let report = load::run(g.coap, 60, 1, Duration::from_secs(5), &|| false);
    assert_eq!(report.acked.len(), 50, "{report:?}");
    assert!(report.busy > 0, "5.03 answers expected: {report:?}");
    let m = g.metrics();
    assert!(metric(&m, "wardgate_store_rejected") > 0.0, "{m}");
    assert_eq!(metric(&m, "wardgate_store_depth_readings"), 50.0, "{m}");
    let (status, body) = common::http_get(g.http, "/readyz").unwrap();
    assert_eq!(status, 503);
    assert!(body.contains("store"), "a full store is reported: {body}");
    broker.restart();
    let sub = Subscriber::start_persistent(broker.port, "wardgate/+/+/+", "reject-sub");
    let acked: HashSet<String> = report.acked.iter().map(|(_, id)| id.clone()).collect();
    let (seen, _) = drain_until(&sub, &acked, Duration::from_secs(30));
    assert!(
        acked.iter().all(|id| seen.contains_key(id)),
        "every acknowledged reading is delivered"
    );
    common::wait_for("outbox to drain", Duration::from_secs(30), || {
        (metric(&g.metrics(), "wardgate_store_depth_readings") == 0.0).then_some(())
    });
}

#[test]
fn full_outbox_with_drop_oldest_policy_counts_every_drop() {
    let mut broker = Mosquitto::start_persistent();
    drop(Subscriber::start_persistent(
        broker.port,
        "wardgate/+/+/+",
        "drop-sub",
    ));
    broker.stop_gracefully();
    let dir = tempfile::tempdir().unwrap();
    let g = Gateway::start_with(
        dir.path(),
        &broker.url(),
        "max_readings = 50\noverflow = \"drop-oldest\"",
        "",
    );
    let report = load::run(g.coap, 80, 1, Duration::from_secs(10), &|| false);
    assert_eq!(
        report.acked.len(),
        80,
        "drop-oldest accepts everything: {report:?}"
    );
    let m = g.metrics();
    assert_eq!(metric(&m, "wardgate_store_dropped_total"), 30.0, "{m}");
    assert_eq!(metric(&m, "wardgate_store_depth_readings"), 50.0, "{m}");
    // Exactly the newest 50 are delivered once the broker returns.
    broker.restart();
    let sub = Subscriber::start_persistent(broker.port, "wardgate/+/+/+", "drop-sub");
    let newest: HashSet<String> = report.acked[30..]
        .iter()
        .map(|(_, id)| id.clone())
        .collect();
    let (seen, _) = drain_until(&sub, &newest, Duration::from_secs(30));
    let oldest: HashSet<String> = report.acked[..30]
        .iter()
        .map(|(_, id)| id.clone())
        .collect();
    assert!(
        newest.iter().all(|id| seen.contains_key(id)),
        "the newest readings are delivered"
    );
    assert!(
        oldest.iter().all(|id| !seen.contains_key(id)),
        "dropped readings must not be delivered"
    );
}

#[test]
fn corrupt_outbox_stops_the_gateway_with_the_recovery_command() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start();
    let mut g = Gateway::start(dir.path(), &broker.url(), "");
    let status = g.terminate();
    assert!(status.success());
    let db = dir.path().join("outbox.db");
    let mut bytes = std::fs::read(&db).unwrap();
    assert!(bytes.len() > 4096);
    for b in bytes.iter_mut().skip(100).take(4000) {
        *b = 0xA5;
    }
    std::fs::write(&db, bytes).unwrap();
    let out = std::process::Command::new(common::WARDGATE)
        .args(["run", "--config"])
        .arg(&g.config)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(65),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("wardgate store recover"), "{err}");
    let out = std::process::Command::new(common::WARDGATE)
        .args(["store", "recover", "--config"])
        .arg(&g.config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    g.restart();
}
