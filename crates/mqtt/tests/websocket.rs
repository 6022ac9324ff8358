//! The uplink over MQTT-over-WebSockets (`ws://`, `wss://`) against Mosquitto's websockets
//! listener (Debian's Mosquitto 2.0 has libwebsockets built in; it starts a websockets
//! listener only next to a plain one, which the fixture always has).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use wardgate_core::MessageClass;

/// A broker with a websockets listener; `tls` adds Mosquitto's TLS lines to it (wss).
fn websocket_broker(tls: Option<&Pki>) -> Mosquitto {
    let port = free_port();
    let mut listener = format!("listener {port} 127.0.0.1\nprotocol websockets\n");
    if let Some(pki) = tls {
        listener.push_str(&format!(
            "cafile {}\ncertfile {}\nkeyfile {}\n",
            pki.ca.display(),
            pki.server_cert.display(),
            pki.server_key.display()
        ));
    }
    Mosquitto::start_with_listener(false, listener)
}

fn ws_port(broker: &Mosquitto) -> u16 {
    broker.tls_port.expect("the websockets listener")
}

async fn delivers_one_reading(
    url: String,
    version: &str,
    extra: serde_json::Value,
    broker: &Mosquitto,
) {
    let mut sub = Subscriber::connect(broker.port, "wardgate/+/+/+").await;
    let outbox = MemOutbox::new();
    let seq = outbox.push("bed-7", MessageClass::Vital, 98.0);
    let mut up = start(config(&url, version, extra), &outbox);
    up.wait_ready().await;
    let got = sub
        .collect_until("the reading over websockets", |g| {
            g.iter()
                .any(|(t, _)| *t == reading_topic("bed-7", MessageClass::Vital))
        })
        .await;
    let (_, payload) = got
        .iter()
        .find(|(t, _)| *t == reading_topic("bed-7", MessageClass::Vital))
        .expect("reading");
    assert_eq!(*payload, outbox.delivery(seq).json);
    outbox.wait_all_acked().await;
    up.stop().await.expect("clean stop");
}

#[tokio::test]
async fn the_uplink_delivers_over_plain_websockets_with_mqtt_3_1_1() {
    let broker = websocket_broker(None);
    let url = format!("ws://127.0.0.1:{}/mqtt", ws_port(&broker));
    delivers_one_reading(url, "3.1.1", serde_json::json!({}), &broker).await;
}

#[tokio::test]
async fn the_uplink_delivers_over_wss_with_mqtt_5_checking_the_broker_certificate() {
    let pki = Pki::generate();
    let broker = websocket_broker(Some(&pki));
    let url = format!("wss://localhost:{}/mqtt", ws_port(&broker));
    delivers_one_reading(
        url,
        "5",
        serde_json::json!({ "tls": { "ca_file": pki.ca } }),
        &broker,
    )
    .await;
}

#[tokio::test]
async fn a_wss_broker_with_an_untrusted_certificate_is_reported_as_an_unknown_ca() {
    let pki = Pki::generate();
    let other = Pki::generate();
    let broker = websocket_broker(Some(&pki));
    let url = format!("wss://localhost:{}/mqtt", ws_port(&broker));
    let outbox = MemOutbox::new();
    let mut up = start(
        config(
            &url,
            "3.1.1",
            serde_json::json!({ "tls": { "ca_file": other.ca } }),
        ),
        &outbox,
    );
    let h = up.health.clone();
    eventually("a reported connect failure", move || {
        h.readiness().checks["uplink.test"]
            .detail
            .starts_with("cannot connect")
    })
    .await;
    let detail = up.check().detail;
    assert!(detail.contains("tls.ca_file"), "{detail}");
    eventually("the failure counted as tls", || {
        up.metric("wardgate_mqtt_connect_failures_total{uplink=\"test\",reason=\"tls\"}")
            .is_some_and(|n| n >= 1.0)
    })
    .await;
    up.stop().await.expect("clean stop");
}
