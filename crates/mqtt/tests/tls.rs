//! mqtts:// against Mosquitto's TLS listener, with a PKI made by the `openssl` CLI.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use wardgate_core::MessageClass;

fn tls_config(
    broker: &Mosquitto,
    host: &str,
    tls: serde_json::Value,
) -> wardgate_mqtt::MqttUplinkConfig {
    config(
        &format!("mqtts://{host}:{}", broker.tls_port.expect("tls listener")),
        "5",
        serde_json::json!({ "tls": tls }),
    )
}

/// Waits until the uplink reports a connect failure and returns its health detail.
async fn connect_failure(up: &Running) -> String {
    let h = up.health.clone();
    eventually("a reported connect failure", move || {
        h.readiness().checks["uplink.test"]
            .detail
            .starts_with("cannot connect")
    })
    .await;
    assert!(!up.check().ready);
    up.check().detail
}

#[tokio::test]
async fn mqtts_with_a_custom_ca_file_delivers_readings() {
    let pki = Pki::generate();
    let broker = Mosquitto::start_tls(&pki, false);
    let mut sub = Subscriber::connect(broker.port, "wardgate/+/+/+").await;
    let outbox = MemOutbox::new();
    let seq = outbox.push("bed-7", MessageClass::Vital, 98.0);
    let mut up = start(
        tls_config(
            &broker,
            "127.0.0.1",
            serde_json::json!({ "ca_file": pki.ca }),
        ),
        &outbox,
    );
    up.wait_ready().await;
    assert!(
        up.check()
            .detail
            .starts_with("connected to mqtts://127.0.0.1:")
    );
    let got = sub.collect_until("the reading", |g| !g.is_empty()).await;
    assert_eq!(got[0].1, outbox.delivery(seq).json);
    outbox.wait_all_acked().await;
    up.stop().await.expect("clean stop");
}

#[tokio::test]
async fn server_name_overrides_the_url_host_for_certificate_checks() {
    let pki = Pki::generate();
    let broker = Mosquitto::start_tls(&pki, false);
    let outbox = MemOutbox::new();
    outbox.push("bed-7", MessageClass::Vital, 98.0);
    // Connect by IP, check the certificate for the DNS name it carries.
    let mut up = start(
        tls_config(
            &broker,
            "127.0.0.1",
            serde_json::json!({ "ca_file": pki.ca, "server_name": "localhost" }),
        ),
        &outbox,
    );
    up.wait_ready().await;
    outbox.wait_all_acked().await;
    up.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_server_name_the_certificate_does_not_carry_fails_with_a_clear_error() {
    let pki = Pki::generate();
    let broker = Mosquitto::start_tls(&pki, false);
    let outbox = MemOutbox::new();
    outbox.push("bed-7", MessageClass::Vital, 98.0);
    let mut up = start(
        tls_config(
            &broker,
            "127.0.0.1",
            serde_json::json!({ "ca_file": pki.ca, "server_name": "broker.wrong.example" }),
        ),
        &outbox,
    );
    let detail = connect_failure(&up).await;
    assert!(
        detail.contains("does not carry the name")
            && detail.contains("broker.wrong.example")
            && detail.contains("tls.server_name"),
        "{detail}"
    );
    assert!(
        up.metric(r#"wardgate_mqtt_connect_failures_total{uplink="test",reason="tls"}"#)
            >= Some(1.0)
    );
    assert!(outbox.acked().is_empty());
    up.stop().await.expect("stops while not connected");
}

#[tokio::test]
async fn a_broker_certificate_from_an_unknown_ca_is_refused_and_logged_once_while_it_repeats() {
    let (log, _guard) = CapturedLog::start_with("wardgate_mqtt=debug");
    let pki = Pki::generate();
    let other = Pki::generate();
    let broker = Mosquitto::start_tls(&pki, false);
    let outbox = MemOutbox::new();
    let mut up = start(
        tls_config(
            &broker,
            "127.0.0.1",
            serde_json::json!({ "ca_file": other.ca }),
        ),
        &outbox,
    );
    let detail = connect_failure(&up).await;
    assert!(
        detail.contains("not issued by a CA we trust") && detail.contains("tls.ca_file"),
        "{detail}"
    );
    let failures = r#"wardgate_mqtt_connect_failures_total{uplink="test",reason="tls"}"#;
    let u = &up;
    eventually("four failed attempts", move || {
        u.metric(failures) >= Some(4.0)
    })
    .await;
    assert_eq!(
        log.count("MQTT uplink cannot connect"),
        1,
        "one WARN per kind of failure: {}",
        log.text()
    );
    assert!(log.count("connect retry failed") >= 3, "{}", log.text());
    up.stop().await.expect("stops while not connected");
}

#[tokio::test]
async fn mutual_tls_works_with_a_client_certificate() {
    let pki = Pki::generate();
    let broker = Mosquitto::start_tls(&pki, true);
    let outbox = MemOutbox::new();
    outbox.push("bed-7", MessageClass::Alarm, 1.0);
    let mut up = start(
        tls_config(
            &broker,
            "127.0.0.1",
            serde_json::json!({
                "ca_file": pki.ca,
                "client_cert_file": pki.client_cert,
                "client_key_file": pki.client_key,
            }),
        ),
        &outbox,
    );
    up.wait_ready().await;
    outbox.wait_all_acked().await;
    up.stop().await.expect("clean stop");
}

#[tokio::test]
async fn mutual_tls_fails_without_a_client_certificate() {
    let pki = Pki::generate();
    let broker = Mosquitto::start_tls(&pki, true);
    let outbox = MemOutbox::new();
    outbox.push("bed-7", MessageClass::Alarm, 1.0);
    let mut up = start(
        tls_config(
            &broker,
            "127.0.0.1",
            serde_json::json!({ "ca_file": pki.ca }),
        ),
        &outbox,
    );
    let detail = connect_failure(&up).await;
    assert!(
        detail.contains("requires a client certificate") && detail.contains("tls.client_cert_file"),
        "{detail}"
    );
    assert!(
        up.metric(r#"wardgate_mqtt_connect_failures_total{uplink="test",reason="tls"}"#)
            >= Some(1.0)
    );
    assert!(outbox.acked().is_empty());
    up.stop().await.expect("stops while not connected");
}

#[tokio::test]
async fn unreadable_tls_files_fail_construction_naming_the_file() {
    let pki = Pki::generate();
    let health = wardgate_core::Health::new();
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = wardgate_mqtt::MqttMetrics::register(&mut registry);
    let cfg = config(
        "mqtts://127.0.0.1:8883",
        "5",
        serde_json::json!({ "tls": {
            "ca_file": pki.ca,
            "client_cert_file": pki.client_cert,
            "client_key_file": "/nonexistent/client.key",
        }}),
    );
    let err = wardgate_mqtt::MqttUplink::new(
        cfg,
        "ward-test",
        metrics,
        health.reporter("uplink.test", wardgate_core::health::ComponentKind::Uplink),
    )
    .expect_err("missing key file");
    assert!(err.to_string().contains("/nonexistent/client.key"), "{err}");
    assert!(err.to_string().contains("client_key_file"), "{err}");
}

#[tokio::test]
async fn a_broker_presenting_its_ca_certificate_as_its_own_gets_a_clear_error() {
    let pki = Pki::generate();
    // The misconfiguration the probe found: Mosquitto's certfile/keyfile set to the CA's.
    for (from, to) in [
        (pki.ca.clone(), pki.server_cert.clone()),
        (pki.ca.with_file_name("ca.key"), pki.server_key.clone()),
    ] {
        std::fs::copy(&from, &to).expect("copy the CA over the server's files");
        // Mosquitto drops to its own user before it reads them.
        std::fs::set_permissions(&to, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .expect("chmod");
    }
    let broker = Mosquitto::start_tls(&pki, false);
    let outbox = MemOutbox::new();
    let mut up = start(
        tls_config(
            &broker,
            "localhost",
            serde_json::json!({ "ca_file": pki.ca }),
        ),
        &outbox,
    );
    let detail = connect_failure(&up).await;
    assert!(
        detail.contains("presents a CA certificate as its own server certificate"),
        "{detail}"
    );
    assert!(!detail.contains("OtherError"), "{detail}");
    up.stop().await.expect("stops while not connected");
}

#[tokio::test]
async fn plain_mqtt_to_a_tls_port_suggests_mqtts() {
    let pki = Pki::generate();
    let broker = Mosquitto::start_tls(&pki, false);
    let outbox = MemOutbox::new();
    let mut up = start(
        config(
            &format!(
                "mqtt://127.0.0.1:{}",
                broker.tls_port.expect("tls listener")
            ),
            "5",
            serde_json::json!({}),
        ),
        &outbox,
    );
    let detail = connect_failure(&up).await;
    assert!(detail.contains("use mqtts://"), "{detail}");
    up.stop().await.expect("stops while not connected");
}
