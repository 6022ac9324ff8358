//! No password reaches an error, a `Debug` output, a health detail or a log line: neither one
//! written into the URL by mistake nor the configured `password`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use wardgate_core::MessageClass;

const SECRET: &str = "s3cret";

fn build(cfg: wardgate_mqtt::MqttUplinkConfig) -> Result<wardgate_mqtt::MqttUplink, String> {
    let health = wardgate_core::Health::new();
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = wardgate_mqtt::MqttMetrics::register(&mut registry);
    wardgate_mqtt::MqttUplink::new(
        cfg,
        "ward-test",
        metrics,
        health.reporter("uplink.test", wardgate_core::health::ComponentKind::Uplink),
    )
    .map_err(|e| {
        let shown = format!("{e} {e:?}");
        tracing::error!(error = %e, debug = ?e, "uplink refused");
        shown
    })
}

#[test]
fn a_password_in_the_broker_url_appears_in_no_error_debug_output_or_problem() {
    // Every crate at every level: rumqttc's own lines must not show it either.
    let (log, _guard) = CapturedLog::start_with("trace");
    for url in [
        "mqtt://user:s3cret@127.0.0.1:1883",
        "ssl://user:s3cret@127.0.0.1:8883",
        "mqtts://user:s3cret@localhost",
        "mqtt://user:s3cret",
        "mqtt:/user:s3cret@127.0.0.1",
    ] {
        let cfg = config(url, "5", serde_json::json!({}));
        let debug = format!("{cfg:?}");
        assert!(!debug.contains(SECRET), "{url}: {debug}");
        let mut problems = wardgate_core::validate::Problems::new();
        cfg.validate("uplinks.test", &mut problems);
        let problems = format!("{:?}", problems.into_vec());
        assert!(problems.contains("uplinks.test.url"), "{url}: {problems}");
        assert!(!problems.contains(SECRET), "{url}: {problems}");
        let err = build(cfg).expect_err(url);
        assert!(!err.contains(SECRET), "{url}: {err}");
    }
    let log = log.text();
    assert!(log.contains("uplink refused"), "the errors were logged");
    assert!(!log.contains(SECRET), "{log}");
}

#[tokio::test]
async fn a_run_with_a_password_against_mosquitto_logs_and_reports_no_password() {
    // Every crate at every level: rumqttc's own lines must not show it either.
    let (log, _guard) = CapturedLog::start_with("trace");
    let broker = Mosquitto::start();
    let outbox = MemOutbox::new();
    outbox.push("bed-1", MessageClass::Vital, 97.0);
    let mut up = start(
        config(
            &format!("mqtt://127.0.0.1:{}", broker.port),
            "5",
            serde_json::json!({ "username": "user", "password": SECRET }),
        ),
        &outbox,
    );
    up.wait_ready().await;
    outbox.wait_all_acked().await;
    let detail = up.check().detail;
    up.stop().await.expect("clean stop");
    assert!(!detail.contains(SECRET), "{detail}");
    assert!(!up.metrics_text().contains(SECRET));
    let log = log.text();
    assert!(log.contains("MQTT uplink connected"), "the run was logged");
    assert!(!log.contains(SECRET), "{log}");
}
