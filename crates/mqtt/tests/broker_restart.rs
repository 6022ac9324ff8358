//! The broker dies with readings in flight and comes back on the same port.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use wardgate_core::MessageClass;

async fn broker_restart_loses_nothing_and_acks_nothing_while_down(version: &str) {
    let mut broker = Mosquitto::start();
    let mut sub = Subscriber::connect(broker.port, "wardgate/#").await;
    let outbox = MemOutbox::new();
    let mut up = start(
        config(
            &format!("mqtt://127.0.0.1:{}", broker.port),
            version,
            serde_json::json!({}),
        ),
        &outbox,
    );

    // Phase 1: a healthy link.
    for i in 0..5 {
        outbox.push("bed-1", MessageClass::Vital, i as f64);
    }
    outbox.wait_all_acked().await;
    let acked_before = outbox.acked();

    // Phase 2: freeze the broker so publishes are written but never acknowledged, then kill it.
    broker.freeze();
    let pending: Vec<u64> = (0..10)
        .map(|i| outbox.push("bed-2", MessageClass::Alarm, i as f64))
        .collect();
    let o = outbox.clone();
    let p = pending.clone();
    eventually("the pending readings handed to the uplink", move || {
        let handed: BTreeSet<u64> = o.handed_out().into_iter().collect();
        p.iter().all(|s| handed.contains(s))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        outbox.acked(),
        acked_before,
        "nothing acked without a PUBACK"
    );
    broker.stop();
    let h = up.health.clone();
    eventually("uplink reports not ready", move || {
        !h.readiness().checks["uplink.test"].ready
    })
    .await;
    // More readings arrive while the broker is gone; still nothing is acked.
    for i in 0..5 {
        outbox.push("bed-3", MessageClass::Telemetry, i as f64);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        outbox.acked(),
        acked_before,
        "nothing acked while the broker is down"
    );
    assert!(
        up.check().detail.contains("127.0.0.1"),
        "{}",
        up.check().detail
    );
    assert_eq!(
        up.metric(r#"wardgate_mqtt_connected{uplink="test"}"#),
        Some(0.0)
    );

    // Phase 3: the broker returns. Hold the outbox until our subscriber is back, so what the
    // test sees is what was delivered (a fresh broker has no session for it).
    outbox.set_gate(false);
    broker.restart();
    sub.wait_subscribed().await;
    outbox.set_gate(true);
    outbox.wait_all_acked().await;

    let all = outbox.all();
    let expected: BTreeSet<Vec<u8>> = all
        .iter()
        .filter(|d| !acked_before.contains(&d.seq))
        .map(|d| d.json.to_vec())
        .collect();
    let mut seen_online = false;
    let got = sub
        .collect_until("every reading after the restart", |got| {
            let payloads: BTreeSet<Vec<u8>> = got.iter().map(|(_, p)| p.to_vec()).collect();
            expected.is_subset(&payloads)
        })
        .await;
    for (topic, payload) in &got {
        if topic == &up.status_topic && payload.as_ref() == b"online" {
            seen_online = true;
        }
    }
    if !seen_online {
        // Published before our subscriber was back: then it is retained.
        let mut late = Subscriber::connect(broker.port, &up.status_topic).await;
        assert!(late.wait_payload(&up.status_topic, b"online").await);
    }
    // Per-device order holds among the redelivered readings.
    let bed2: Vec<u64> = got
        .iter()
        .filter_map(|(_, p)| all.iter().find(|d| d.json == *p))
        .filter(|d| d.device == "bed-2")
        .map(|d| d.seq)
        .collect();
    let mut sorted = bed2.clone();
    sorted.sort_unstable();
    assert_eq!(bed2, sorted);
    assert!(up.metric(r#"wardgate_mqtt_connects_total{uplink="test"}"#) >= Some(2.0));
    assert!(
        up.metrics_text()
            .contains(r#"wardgate_mqtt_disconnects_total{uplink="test",reason="io"}"#),
        "{}",
        up.metrics_text()
    );
    up.stop().await.expect("clean stop");
}

#[tokio::test]
async fn mqtt311_broker_restart_loses_nothing_and_acks_nothing_while_down() {
    broker_restart_loses_nothing_and_acks_nothing_while_down("3.1.1").await;
}

#[tokio::test]
async fn mqtt5_broker_restart_loses_nothing_and_acks_nothing_while_down() {
    broker_restart_loses_nothing_and_acks_nothing_while_down("5").await;
}
