//! The MQTT southbound subscriber against a real Mosquitto, ingesting into a real outbox:
//! sensors are `mosquitto_pub` (an independent MQTT client), readings are read back from the
//! store with a cursor.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{Mosquitto, Pki, eventually, free_port, within};
use prometheus_client::registry::Registry;
use tokio::task::JoinHandle;
use wardgate_core::health::ComponentKind;
use wardgate_core::payload::Limits;
use wardgate_core::{
    AllowAll, Authorizer, Bus, Health, IngestPipeline, OutboxCursor, Shutdown, SystemClock,
};
use wardgate_mqtt::southbound::{MqttIngest, MqttIngestConfig, MqttIngestMetrics};
use wardgate_store::{Outbox, StoreConfig, StoreMetrics};

// ---------------------------------------------------------------------------------------------
// Harness

/// A real outbox with its writer running, and the one cursor tests read it with.
struct Store {
    _dir: tempfile::TempDir,
    outbox: Outbox,
    bus: Bus,
    cursor: wardgate_store::Cursor,
    shutdown: Shutdown,
    writer: JoinHandle<()>,
}

impl Store {
    fn open() -> Store {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = StoreConfig {
            path: dir.path().join("outbox.db"),
            ..StoreConfig::default()
        };
        let outbox = Outbox::open(&cfg, &["cloud".to_owned()], StoreMetrics::unregistered())
            .expect("outbox opens");
        let (bus, rx) = Bus::new(64);
        let shutdown = Shutdown::new();
        let writer = {
            let outbox = outbox.clone();
            let shutdown = shutdown.clone();
            let health = Health::new().reporter("store", ComponentKind::Store);
            tokio::spawn(async move {
                outbox
                    .run_writer(rx, shutdown, health)
                    .await
                    .expect("writer runs");
            })
        };
        let cursor = outbox.cursor("cloud").expect("cursor");
        Store {
            _dir: dir,
            outbox,
            bus,
            cursor,
            shutdown,
            writer,
        }
    }

    /// The next `n` readings appended, as JSON, in outbox order.
    async fn take(&mut self, n: usize) -> Vec<serde_json::Value> {
        let mut got = Vec::new();
        within(&format!("{n} readings in the outbox"), async {
            while got.len() < n {
                for d in self.cursor.next(n - got.len()).await.expect("outbox") {
                    got.push(serde_json::from_slice(&d.json).expect("reading JSON"));
                }
            }
        })
        .await;
        got
    }

    async fn close(self) {
        self.shutdown.cancel();
        within("the store writer stops", self.writer)
            .await
            .expect("writer task");
        drop(self.outbox);
    }
}

fn pipeline(bus: Bus, authorizer: Arc<dyn Authorizer>) -> IngestPipeline {
    IngestPipeline::new(
        "ward-test",
        bus,
        Arc::new(SystemClock),
        authorizer,
        Limits::default(),
    )
}

/// A subscriber config: fast reconnects, a client id of its own (so no test shares a broker
/// session with another), and `extra` on top.
fn config(url: &str, client_id: &str, extra: serde_json::Value) -> MqttIngestConfig {
    let mut v = serde_json::json!({
        "name": "ward",
        "url": url,
        "client_id": client_id,
        "topics": [
            { "filter": "ward/+/senml", "device_level": 2 },
            { "filter": "ward/+/cbor", "device_level": 2, "format": "senml-cbor" },
            { "filter": "ward/+/plain", "device_level": 2, "format": "json", "class": "telemetry" },
        ],
        "reconnect_min": "50ms",
        "reconnect_max": "400ms",
        "keep_alive": "5s",
    });
    if let (Some(obj), Some(extra)) = (v.as_object_mut(), extra.as_object()) {
        for (k, val) in extra {
            obj.insert(k.clone(), val.clone());
        }
    }
    serde_json::from_value(v).expect("valid subscriber config")
}

/// A running subscriber with what a test inspects.
struct Sub {
    health: Health,
    registry: Registry,
    shutdown: Shutdown,
    task: JoinHandle<Result<(), wardgate_mqtt::MqttError>>,
}

impl Sub {
    fn start(cfg: &MqttIngestConfig, pipeline: IngestPipeline) -> Sub {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "wardgate_mqtt=debug,rumqttc=info".into()),
            )
            .with_test_writer()
            .try_init();
        let health = Health::new();
        let mut registry = Registry::default();
        let metrics = MqttIngestMetrics::register(&mut registry);
        let ingest: MqttIngest = cfg.build(metrics, &health).expect("subscriber builds");
        let shutdown = Shutdown::new();
        let task = tokio::spawn(ingest.run(pipeline, shutdown.clone()));
        Sub {
            health,
            registry,
            shutdown,
            task,
        }
    }

    /// Waits until the broker acknowledged every subscription (health `ingest.mqtt.ward`).
    async fn wait_subscribed(&self) {
        let h = self.health.clone();
        eventually("the subscriber is subscribed", move || {
            let c = &h.readiness().checks["ingest.mqtt.ward"];
            c.ready && c.detail.starts_with("subscribed")
        })
        .await;
    }

    async fn stop(self) {
        self.shutdown.cancel();
        within("the subscriber stops", self.task)
            .await
            .expect("subscriber task")
            .expect("subscriber stops cleanly");
    }

    /// One sample's value, e.g. `wardgate_mqtt_ingest_messages_received_total{ingest="ward"}`;
    /// 0 when it was never recorded.
    fn metric(&self, sample: &str) -> f64 {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("encode");
        out.lines()
            .find_map(|l| {
                l.strip_prefix(sample)
                    .and_then(|rest| rest.trim().parse::<f64>().ok())
            })
            .unwrap_or(0.0)
    }

    fn refused(&self, reason: &str) -> f64 {
        self.metric(&format!(
            "wardgate_mqtt_ingest_messages_refused_total{{ingest=\"ward\",reason=\"{reason}\"}}"
        ))
    }

    fn received(&self) -> f64 {
        self.metric("wardgate_mqtt_ingest_messages_received_total{ingest=\"ward\"}")
    }
}

/// A sensor: `mosquitto_pub` publishing `payload` once at QoS 1 (it returns after the broker's
/// PUBACK, so the broker has the message when this returns).
async fn publish(port: u16, topic: &str, payload: &[u8]) {
    const MOSQUITTO_PUB: &str = "/usr/bin/mosquitto_pub";
    wardgate_testkit::require_tool(MOSQUITTO_PUB);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("payload");
    std::fs::write(&file, payload).expect("write payload");
    let out = within(
        "mosquitto_pub",
        tokio::process::Command::new(MOSQUITTO_PUB)
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
            .args(["-t", topic, "-f"])
            .arg(&file)
            .output(),
    )
    .await
    .expect("run mosquitto_pub");
    assert!(
        out.status.success(),
        "mosquitto_pub failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `[{"n":"spo2","u":"%","v":<v>}]` in SenML CBOR (labels n=0, u=1, v=2).
fn senml_cbor(v: u8) -> Vec<u8> {
    let mut b = vec![0x81, 0xa3, 0x00, 0x64];
    b.extend_from_slice(b"spo2");
    b.extend_from_slice(&[0x01, 0x61, b'%', 0x02, 0x18, v]);
    b
}

fn client_id(test: &str) -> String {
    format!("wardgate-{test}-{}", free_port())
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn senml_json_senml_cbor_and_plain_json_from_sensors_become_readings_of_the_topic_device() {
    let broker = Mosquitto::start();
    let mut store = Store::open();
    let sub = Sub::start(
        &config(&broker.url(), &client_id("formats"), serde_json::json!({})),
        pipeline(store.bus.clone(), Arc::new(AllowAll)),
    );
    sub.wait_subscribed().await;
    publish(
        broker.port,
        "ward/bed-1/senml",
        br#"[{"bn":"bed-1:","n":"spo2","u":"%","v":97}]"#,
    )
    .await;
    publish(broker.port, "ward/bed-2/cbor", &senml_cbor(96)).await;
    publish(
        broker.port,
        "ward/room-3/plain",
        br#"{"temperature": 21.5}"#,
    )
    .await;
    let got = store.take(3).await;
    let summary: Vec<(String, String, String, f64)> = got
        .iter()
        .map(|r| {
            (
                r["device"].as_str().unwrap().to_owned(),
                r["protocol"].as_str().unwrap().to_owned(),
                r["records"][0]["n"].as_str().unwrap().to_owned(),
                r["records"][0]["v"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("bed-1".into(), "mqtt".into(), "bed-1:spo2".into(), 97.0),
            ("bed-2".into(), "mqtt".into(), "spo2".into(), 96.0),
            ("room-3".into(), "mqtt".into(), "temperature".into(), 21.5),
        ]
    );
    assert_eq!(got[2]["class"], "telemetry");
    assert!(
        got[0].get("source").is_none(),
        "a plain-TCP broker proves nothing: no provenance"
    );
    eventually("three readings counted", || {
        sub.metric("wardgate_mqtt_ingest_readings_ingested_total{ingest=\"ward\",class=\"vital\"}")
            == 2.0
    })
    .await;
    assert_eq!(sub.received(), 3.0);
    sub.stop().await;
    store.close().await;
}

#[tokio::test]
async fn messages_published_while_the_subscriber_is_stopped_arrive_after_it_restarts() {
    let broker = Mosquitto::start();
    let mut store = Store::open();
    let cfg = config(&broker.url(), &client_id("restart"), serde_json::json!({}));
    let first = Sub::start(&cfg, pipeline(store.bus.clone(), Arc::new(AllowAll)));
    first.wait_subscribed().await;
    first.stop().await;
    for bed in ["bed-1", "bed-2", "bed-3"] {
        publish(
            broker.port,
            &format!("ward/{bed}/senml"),
            br#"[{"n":"spo2","v":95}]"#,
        )
        .await;
    }
    let second = Sub::start(&cfg, pipeline(store.bus.clone(), Arc::new(AllowAll)));
    let got = store.take(3).await;
    let devices: Vec<&str> = got.iter().map(|r| r["device"].as_str().unwrap()).collect();
    assert_eq!(
        devices,
        ["bed-1", "bed-2", "bed-3"],
        "all of them, in order"
    );
    second.stop().await;
    store.close().await;
}

#[tokio::test]
async fn a_message_is_not_acknowledged_to_the_broker_before_its_reading_is_durable() {
    let broker = Mosquitto::start();
    let cfg = config(
        &broker.url(),
        &client_id("durable"),
        serde_json::json!({ "shutdown_timeout": "200ms" }),
    );
    // No store writer serves this bus: what is submitted is never durable.
    let (stalled_bus, stalled_rx) = Bus::new(8);
    let first = Sub::start(&cfg, pipeline(stalled_bus, Arc::new(AllowAll)));
    first.wait_subscribed().await;
    publish(broker.port, "ward/bed-9/senml", br#"[{"n":"spo2","v":91}]"#).await;
    eventually("the message is held awaiting durability", || {
        first.metric("wardgate_mqtt_ingest_awaiting_durability{ingest=\"ward\"}") == 1.0
    })
    .await;
    // Shutdown cannot wait it out (the reading never becomes durable): the connection ends
    // with the message unacknowledged.
    first.stop().await;
    drop(stalled_rx);

    let mut store = Store::open();
    let second = Sub::start(&cfg, pipeline(store.bus.clone(), Arc::new(AllowAll)));
    let got = store.take(1).await;
    assert_eq!(
        got[0]["device"], "bed-9",
        "the broker kept it and delivered it again"
    );
    assert_eq!(got[0]["records"][0]["v"], 91.0);
    second.stop().await;
    store.close().await;
}

#[tokio::test]
async fn a_message_the_store_refuses_for_now_is_delivered_again_after_a_reconnect() {
    let broker = Mosquitto::start();
    // A scripted store: the first request is refused as full, later ones are durable at once.
    let (bus, mut rx) = Bus::new(8);
    let (stored_tx, mut stored) = tokio::sync::mpsc::unbounded_channel();
    let store = tokio::spawn(async move {
        let mut first = true;
        while let Some(req) = rx.recv().await {
            if std::mem::take(&mut first) {
                let _ = req.done.send(Err(wardgate_core::IngestError::StoreFull));
            } else {
                for r in &req.readings {
                    let _ = stored_tx.send(r.device.clone());
                }
                let _ = req.done.send(Ok(()));
            }
        }
    });
    let sub = Sub::start(
        &config(&broker.url(), &client_id("refused"), serde_json::json!({})),
        pipeline(bus, Arc::new(AllowAll)),
    );
    sub.wait_subscribed().await;
    publish(broker.port, "ward/bed-3/senml", br#"[{"n":"spo2","v":92}]"#).await;
    let device = within("the reading stored on the second delivery", stored.recv())
        .await
        .expect("store alive");
    assert_eq!(device, "bed-3");
    assert_eq!(
        sub.metric(
            "wardgate_mqtt_ingest_messages_deferred_total{ingest=\"ward\",reason=\"store_full\"}"
        ),
        1.0
    );
    assert_eq!(sub.received(), 2.0, "the broker delivered it twice");
    assert_eq!(
        sub.metric("wardgate_mqtt_ingest_connects_total{ingest=\"ward\"}"),
        2.0,
        "after a reconnect"
    );
    sub.stop().await;
    store.abort();
}

#[tokio::test]
async fn a_malformed_payload_is_counted_and_acknowledged_and_later_messages_still_arrive() {
    let broker = Mosquitto::start();
    let mut store = Store::open();
    let cfg = config(
        &broker.url(),
        &client_id("malformed"),
        serde_json::json!({}),
    );
    let first = Sub::start(&cfg, pipeline(store.bus.clone(), Arc::new(AllowAll)));
    first.wait_subscribed().await;
    publish(broker.port, "ward/bed-1/senml", b"[{\"n\":\"spo2\",\"v\":").await;
    publish(broker.port, "ward/bed-1/senml", b"97.5").await;
    publish(broker.port, "ward/bed-1/senml", br#"[{"n":"spo2","v":97}]"#).await;
    let got = store.take(1).await;
    assert_eq!(got[0]["records"][0]["v"], 97.0);
    // In order: both bad messages were judged before the good one became durable.
    assert_eq!(first.refused("malformed"), 1.0);
    assert_eq!(first.refused("unsupported_format"), 1.0);
    first.stop().await;

    // Acknowledged means the broker forgot them: a new connection of the same session gets only
    // what was published since, not the bad messages again (unacknowledged ones would come
    // first).
    publish(broker.port, "ward/bed-2/senml", br#"[{"n":"spo2","v":94}]"#).await;
    let second = Sub::start(&cfg, pipeline(store.bus.clone(), Arc::new(AllowAll)));
    let got = store.take(1).await;
    assert_eq!(got[0]["device"], "bed-2");
    assert_eq!(second.received(), 1.0, "nothing was delivered again");
    assert_eq!(second.refused("malformed"), 0.0);
    second.stop().await;
    store.close().await;
}

#[tokio::test]
async fn a_topic_without_a_valid_device_id_and_a_retained_message_are_counted_not_stored() {
    let broker = Mosquitto::start();
    let mut store = Store::open();
    // A retained message on the topic before anyone subscribes: the broker replays it at the
    // subscription, flagged retained.
    let out = tokio::process::Command::new("/usr/bin/mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &broker.port.to_string(),
            "-q",
            "1",
            "-r",
        ])
        .args(["-t", "ward/bed-5/senml", "-m", r#"[{"n":"spo2","v":90}]"#])
        .output()
        .await
        .expect("run mosquitto_pub");
    assert!(out.status.success());
    let sub = Sub::start(
        &config(
            &broker.url(),
            &client_id("bad-topic"),
            serde_json::json!({}),
        ),
        pipeline(store.bus.clone(), Arc::new(AllowAll)),
    );
    sub.wait_subscribed().await;
    publish(broker.port, "ward/bed$1/senml", br#"[{"n":"spo2","v":90}]"#).await;
    publish(broker.port, "ward/bed-6/senml", br#"[{"n":"spo2","v":93}]"#).await;
    let got = store.take(1).await;
    assert_eq!(got[0]["device"], "bed-6");
    assert_eq!(sub.refused("bad_device_id"), 1.0);
    assert_eq!(sub.refused("retained"), 1.0);
    sub.stop().await;
    store.close().await;
}

/// The SHA-256 fingerprint of a PEM certificate, as `openssl` prints it (`AB:CD:…`).
fn fingerprint(cert: &Path) -> String {
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(cert)
        .output()
        .expect("run openssl");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    text.trim()
        .split_once('=')
        .expect("Fingerprint=…")
        .1
        .to_owned()
}

#[tokio::test]
async fn over_tls_the_registry_decides_which_devices_the_broker_may_speak_for() {
    let pki = Pki::generate();
    let broker = Mosquitto::start_tls(&pki, false);
    let dir = tempfile::tempdir().expect("tempdir");
    let devices = dir.path().join("devices.toml");
    let fp = fingerprint(&pki.server_cert);
    std::fs::write(
        &devices,
        format!(
            r#"unknown = "reject"
[[device]]
id = "ward-broker"
protocols = ["mqtts"]
classes = ["vital"]
resources = ["ward/*"]
speaks_for = ["bed-*"]
[[device.certificate]]
sha256 = "{fp}"
"#
        ),
    )
    .expect("write devices.toml");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&devices, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let mut metrics_registry = Registry::default();
    let registry = wardgate_registry::Registry::load(
        &devices,
        Arc::new(wardgate_core::NoAudit),
        wardgate_registry::RegistryMetrics::register(&mut metrics_registry),
    )
    .expect("registry loads");
    let mut store = Store::open();
    let url = format!("mqtts://127.0.0.1:{}", broker.tls_port.expect("tls port"));
    let sub = Sub::start(
        &config(
            &url,
            &client_id("registry"),
            serde_json::json!({ "tls": { "ca_file": pki.ca } }),
        ),
        pipeline(store.bus.clone(), Arc::new(registry)),
    );
    sub.wait_subscribed().await;
    publish(
        broker.port,
        "ward/intruder-1/senml",
        br#"[{"n":"spo2","v":80}]"#,
    )
    .await;
    publish(broker.port, "ward/bed-7/senml", br#"[{"n":"spo2","v":98}]"#).await;
    let got = store.take(1).await;
    assert_eq!(got[0]["device"], "bed-7");
    let want = format!("x509-sha256:{}", fp.replace(':', "").to_ascii_lowercase());
    assert_eq!(got[0]["source"]["identity"], want.as_str());
    assert_eq!(got[0]["source"]["transport"], "tls");
    assert_eq!(
        sub.refused("forbidden"),
        1.0,
        "the device outside speaks_for is refused, counted, and acknowledged"
    );
    sub.stop().await;
    store.close().await;
}

#[tokio::test]
async fn over_plain_tcp_the_registry_refuses_every_message_as_unauthenticated() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let devices = dir.path().join("devices.toml");
    std::fs::write(&devices, "unknown = \"reject\"\n").expect("write devices.toml");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&devices, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let mut metrics_registry = Registry::default();
    let registry = wardgate_registry::Registry::load(
        &devices,
        Arc::new(wardgate_core::NoAudit),
        wardgate_registry::RegistryMetrics::register(&mut metrics_registry),
    )
    .expect("registry loads");
    let (bus, _rx) = Bus::new(8);
    let sub = Sub::start(
        &config(
            &broker.url(),
            &client_id("plain-registry"),
            serde_json::json!({}),
        ),
        pipeline(bus, Arc::new(registry)),
    );
    sub.wait_subscribed().await;
    publish(broker.port, "ward/bed-1/senml", br#"[{"n":"spo2","v":98}]"#).await;
    eventually("the refusal is counted", || {
        sub.refused("unauthenticated") == 1.0
    })
    .await;
    sub.stop().await;
}

#[tokio::test]
async fn the_subscriber_ingests_over_websockets_too() {
    let ws_port = free_port();
    let broker = Mosquitto::start_with_listener(
        false,
        format!("listener {ws_port} 127.0.0.1\nprotocol websockets\n"),
    );
    let mut store = Store::open();
    let sub = Sub::start(
        &config(
            &format!("ws://127.0.0.1:{ws_port}/mqtt"),
            &client_id("ws"),
            serde_json::json!({}),
        ),
        pipeline(store.bus.clone(), Arc::new(AllowAll)),
    );
    sub.wait_subscribed().await;
    publish(broker.port, "ward/bed-4/senml", br#"[{"n":"spo2","v":99}]"#).await;
    let got = store.take(1).await;
    assert_eq!(got[0]["device"], "bed-4");
    sub.stop().await;
    store.close().await;
}
