//! Publishing to a real Mosquitto: topics, exact bytes, acks, order, birth / will / offline.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use common::*;
use wardgate_core::MessageClass;

async fn readings_arrive_in_order_with_exact_bytes_and_are_all_acked(version: &str) {
    let broker = Mosquitto::start();
    let mut sub = Subscriber::connect(broker.port, "wardgate/#").await;
    let outbox = MemOutbox::new();
    // Three devices, interleaved, more readings than the in-flight window.
    let devices = ["bed-1-spo2", "bed-2-ecg", "bed-3-temp"];
    let classes = [
        MessageClass::Vital,
        MessageClass::Alarm,
        MessageClass::Telemetry,
    ];
    for i in 0..60 {
        outbox.push(devices[i % 3], classes[i % 3], i as f64);
    }
    let mut up = start(
        config(
            &format!("mqtt://127.0.0.1:{}", broker.port),
            version,
            serde_json::json!({ "max_inflight": 8 }),
        ),
        &outbox,
    );
    let got = sub
        .collect_until("all 60 readings", |got| {
            got.iter().filter(|(t, _)| !t.ends_with("/status")).count() >= 60
        })
        .await;
    outbox.wait_all_acked().await;

    let all = outbox.all();
    let by_payload: BTreeMap<&[u8], &wardgate_core::Delivery> =
        all.iter().map(|d| (d.json.as_ref(), d)).collect();
    let mut per_device: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (topic, payload) in got.iter().filter(|(t, _)| !t.ends_with("/status")) {
        let d = by_payload
            .get(payload.as_ref())
            .unwrap_or_else(|| panic!("unexpected payload on {topic}"));
        assert_eq!(
            topic,
            &reading_topic(&d.device, d.class),
            "topic of seq {}",
            d.seq
        );
        per_device.entry(d.device.clone()).or_default().push(d.seq);
    }
    for (device, seqs) in &per_device {
        let mut sorted = seqs.clone();
        sorted.sort_unstable();
        assert_eq!(seqs, &sorted, "{device} readings out of order");
        assert_eq!(
            seqs.len(),
            20,
            "{device}: every reading exactly once on a healthy link"
        );
    }
    let acked = outbox.acked();
    assert_eq!(acked.len(), 60);
    assert_eq!(
        outbox.with(|s| s.ack_log.len()),
        60,
        "each reading acked once"
    );
    assert_eq!(
        up.metric(r#"wardgate_mqtt_readings_acked_total{uplink="test",class="alarm"}"#),
        Some(20.0)
    );
    assert_eq!(
        up.metric(r#"wardgate_mqtt_connected{uplink="test"}"#),
        Some(1.0)
    );
    assert!(
        up.metrics_text()
            .contains(r#"wardgate_mqtt_publish_ack_seconds_count{uplink="test"} 60"#),
        "{}",
        up.metrics_text()
    );
    up.stop().await.expect("clean stop");
}

#[tokio::test]
async fn mqtt311_readings_arrive_in_order_with_exact_bytes_and_are_all_acked() {
    readings_arrive_in_order_with_exact_bytes_and_are_all_acked("3.1.1").await;
}

#[tokio::test]
async fn mqtt5_readings_arrive_in_order_with_exact_bytes_and_are_all_acked() {
    readings_arrive_in_order_with_exact_bytes_and_are_all_acked("5").await;
}

#[tokio::test]
async fn qos0_readings_are_acked_once_written_and_arrive() {
    let broker = Mosquitto::start();
    let mut sub = Subscriber::connect(broker.port, "wardgate/+/+/+").await;
    let outbox = MemOutbox::new();
    for i in 0..10 {
        outbox.push("bed-9", MessageClass::Bulk, i as f64);
    }
    let mut up = start(
        config(
            &format!("mqtt://127.0.0.1:{}", broker.port),
            "3.1.1",
            serde_json::json!({ "qos": 0 }),
        ),
        &outbox,
    );
    let got = sub.collect_until("10 readings", |g| g.len() >= 10).await;
    outbox.wait_all_acked().await;
    let sent: Vec<_> = outbox.all().into_iter().map(|d| d.json).collect();
    let received: Vec<_> = got.into_iter().map(|(_, p)| p).collect();
    assert_eq!(received, sent);
    up.stop().await.expect("clean stop");
}

#[tokio::test]
async fn device_ids_with_wildcards_and_separators_stay_inside_one_topic_level() {
    let broker = Mosquitto::start();
    let mut sub = Subscriber::connect(broker.port, "wardgate/#").await;
    let outbox = MemOutbox::new();
    outbox.push("evil/+/#", MessageClass::Vital, 1.0);
    let mut up = start(
        config(
            &format!("mqtt://127.0.0.1:{}", broker.port),
            "5",
            serde_json::json!({}),
        ),
        &outbox,
    );
    let (topic, _) = sub
        .collect_until("the reading", |g| {
            g.iter().any(|(t, _)| !t.ends_with("/status"))
        })
        .await
        .into_iter()
        .find(|(t, _)| !t.ends_with("/status"))
        .expect("reading");
    assert_eq!(topic, "wardgate/ward-test/evil%2F%2B%2F%23/vital");
    outbox.wait_all_acked().await;
    up.stop().await.expect("clean stop");
}

async fn retained_online_after_connect_and_retained_offline_after_graceful_shutdown(version: &str) {
    let broker = Mosquitto::start();
    let outbox = MemOutbox::new();
    outbox.push("bed-1", MessageClass::Vital, 97.0);
    let mut up = start(
        config(
            &format!("mqtt://127.0.0.1:{}", broker.port),
            version,
            serde_json::json!({}),
        ),
        &outbox,
    );
    up.wait_ready().await;
    outbox.wait_all_acked().await;
    assert!(
        up.check()
            .detail
            .starts_with("connected to mqtt://127.0.0.1:")
    );

    // A subscriber arriving later still sees the state: it is retained.
    let mut late = Subscriber::connect(broker.port, &up.status_topic).await;
    assert!(
        late.wait_payload(&up.status_topic, b"online").await,
        "online must be retained"
    );

    up.stop().await.expect("clean stop");
    assert!(
        !late.wait_payload(&up.status_topic, b"offline").await,
        "live copy"
    );
    let mut after = Subscriber::connect(broker.port, &up.status_topic).await;
    assert!(
        after.wait_payload(&up.status_topic, b"offline").await,
        "offline must be retained"
    );
    assert_eq!(
        up.metric(r#"wardgate_mqtt_disconnects_total{uplink="test",reason="shutdown"}"#),
        Some(1.0),
        "the stop was a clean DISCONNECT, not a timeout"
    );
    assert!(!up.health.readiness().checks["uplink.test"].ready);
}

#[tokio::test]
async fn mqtt311_retained_online_after_connect_and_retained_offline_after_graceful_shutdown() {
    retained_online_after_connect_and_retained_offline_after_graceful_shutdown("3.1.1").await;
}

#[tokio::test]
async fn mqtt5_retained_online_after_connect_and_retained_offline_after_graceful_shutdown() {
    retained_online_after_connect_and_retained_offline_after_graceful_shutdown("5").await;
}

async fn killed_connection_makes_the_broker_publish_the_retained_will(version: &str) {
    let broker = Mosquitto::start();
    let outbox = MemOutbox::new();
    let up = start(
        config(
            &format!("mqtt://127.0.0.1:{}", broker.port),
            version,
            serde_json::json!({}),
        ),
        &outbox,
    );
    let mut sub = Subscriber::connect(broker.port, &up.status_topic).await;
    sub.wait_payload(&up.status_topic, b"online").await;

    // Abort the task: the socket is dropped without DISCONNECT.
    up.task.abort();
    assert!(up.task.await.expect_err("aborted").is_cancelled());
    sub.wait_payload(&up.status_topic, b"offline").await;
    let mut after = Subscriber::connect(broker.port, &up.status_topic).await;
    assert!(
        after.wait_payload(&up.status_topic, b"offline").await,
        "the will is retained"
    );
}

#[tokio::test]
async fn mqtt311_killed_connection_makes_the_broker_publish_the_retained_will() {
    killed_connection_makes_the_broker_publish_the_retained_will("3.1.1").await;
}

#[tokio::test]
async fn mqtt5_killed_connection_makes_the_broker_publish_the_retained_will() {
    killed_connection_makes_the_broker_publish_the_retained_will("5").await;
}

#[tokio::test]
async fn a_reading_larger_than_the_packet_limit_is_dropped_with_a_metric_and_the_rest_flow() {
    let broker = Mosquitto::start();
    let mut sub = Subscriber::connect(broker.port, "wardgate/+/+/+").await;
    let outbox = MemOutbox::new();
    outbox.push("bed-1", MessageClass::Vital, 1.0);
    let big = outbox.push(&"x".repeat(2000), MessageClass::Bulk, 2.0);
    outbox.push("bed-1", MessageClass::Vital, 3.0);
    let mut up = start(
        config(
            &format!("mqtt://127.0.0.1:{}", broker.port),
            "3.1.1",
            serde_json::json!({ "max_packet_size": 1024 }),
        ),
        &outbox,
    );
    let got = sub
        .collect_until("the two small readings", |g| g.len() >= 2)
        .await;
    outbox.wait_all_acked().await;
    assert!(
        got.iter()
            .all(|(t, _)| t == &reading_topic("bed-1", MessageClass::Vital))
    );
    assert_eq!(
        up.metric(
            r#"wardgate_mqtt_readings_dropped_total{uplink="test",class="bulk",reason="too_large"}"#
        ),
        Some(1.0)
    );
    assert!(outbox.acked().contains(&big));
    assert_eq!(
        up.metric(r#"wardgate_mqtt_connects_total{uplink="test"}"#),
        Some(1.0),
        "no reconnect loop"
    );
    up.stop().await.expect("clean stop");
}
