//! Wire checks against a CoAP stack that is not ours: aiocoap plays the LwM2M client with bytes
//! the test chooses (the OMA specification's TLV example), and the test checks what the server
//! sends it byte for byte and what it makes of the answers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{AioPeer, Gateway, Options, hex, unhex};
use wardgate_lwm2m::{Entry, Format, ObserveRule, OpError, Path, Settings, Value, WriteMode};

/// The Device object instance of the OMA TS Core TLV example (Appendix, "Single-Instance Object").
const DEVICE_TLV: &str = "c800144f70656e204d6f62696c6520416c6c69616e6365\
c801164c69676874776569676874204d324d20436c69656e74\
c80209333435303030313233\
c303312e30\
8606410001410105\
88070842000ed842011388\
87084100 7d42010384\
c10964\
c10a0f\
830b410000\
c40d5182428f\
c60e2b30323a3030\
c11055";

fn device_tlv() -> Vec<u8> {
    unhex(&DEVICE_TLV.replace(' ', ""))
}

fn register(peer: &mut AioPeer, ep: &str, version: &str, extra: &[&str]) -> String {
    let mut q = vec![
        format!("ep={ep}"),
        format!("lwm2m={version}"),
        "lt=300".to_owned(),
    ];
    q.extend(extra.iter().map(|s| (*s).to_owned()));
    let q: Vec<&str> = q.iter().map(String::as_str).collect();
    let r = peer.request("POST", "rd", &q, Some(40), b"</1/0>,</3/0>,</3303/0>");
    assert_eq!(r["code"], "2.01", "{r}");
    r["location"][1].as_str().unwrap().to_owned()
}

fn value(entries: &[Entry], path: &str) -> Value {
    let p: Path = path.parse().unwrap();
    entries
        .iter()
        .find(|e| e.path == p)
        .unwrap_or_else(|| panic!("{path} missing in {entries:?}"))
        .value
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_asks_a_1_0_client_for_tlv_and_decodes_the_specification_example() {
    let gw = Gateway::start().await;
    let mut peer = AioPeer::start(gw.addr);
    peer.serve("3/0", "GET", "2.05", Some(11542), &device_tlv());
    register(&mut peer, "dev-1", "1.0", &[]);
    let entries = gw
        .server
        .read("dev-1", "/3/0".parse().unwrap(), None)
        .await
        .unwrap();
    let req = peer.next_request(Duration::from_secs(10));
    assert_eq!(
        (req["method"].as_str(), req["path"].as_str()),
        (Some("GET"), Some("3/0"))
    );
    assert_eq!(req["accept"], 11542, "a 1.0 client is asked for TLV");
    assert_eq!(
        value(&entries, "/3/0/0"),
        Value::String("Open Mobile Alliance".into())
    );
    assert_eq!(value(&entries, "/3/0/9"), Value::Integer(100));
    assert_eq!(value(&entries, "/3/0/13"), Value::Time(1_367_491_215));
    assert_eq!(value(&entries, "/3/0/7/1"), Value::Integer(5000));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_refusing_the_preferred_format_gets_the_next_one_and_it_is_remembered() {
    let gw = Gateway::start().await;
    let mut peer = AioPeer::start(gw.addr);
    // A 1.1 client (SenML CBOR preferred) that only speaks TLV, as some Wakaama builds do.
    peer.serve("3/0", "GET", "2.05", Some(11542), &device_tlv());
    peer.accept_only("3/0", &[11542]);
    register(&mut peer, "dev-2", "1.1", &[]);
    let entries = gw
        .server
        .read("dev-2", "/3/0".parse().unwrap(), None)
        .await
        .unwrap();
    assert_eq!(
        value(&entries, "/3/0/1"),
        Value::String("Lightweight M2M Client".into())
    );
    let accepts: Vec<u64> = (0..3)
        .map(|_| {
            peer.next_request(Duration::from_secs(10))["accept"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(
        accepts,
        [112, 110, 11542],
        "SenML CBOR, SenML JSON, then TLV"
    );
    // The next read goes straight to TLV.
    gw.server
        .read("dev-2", "/3/0".parse().unwrap(), None)
        .await
        .unwrap();
    assert_eq!(peer.next_request(Duration::from_secs(10))["accept"], 11542);
    // The choice is kept with the registration, so it survives a restart.
    let reg = gw.server.client("dev-2").unwrap().registration;
    assert_eq!(reg.format, Some(Format::Tlv));
    let stored: wardgate_lwm2m::registration::Registration =
        serde_json::from_str(&serde_json::to_string(&reg).unwrap()).unwrap();
    assert_eq!(stored.preferred_format(), Format::Tlv);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_sends_the_tlv_bytes_of_the_specification_and_errors_come_back_typed() {
    let gw = Gateway::start().await;
    let mut peer = AioPeer::start(gw.addr);
    peer.serve("3/0/14", "PUT", "2.04", None, b"");
    peer.serve("3/0/15", "PUT", "4.05", None, b"");
    register(&mut peer, "dev-3", "1.0", &[]);
    let e = [Entry {
        path: "/3/0/14".parse().unwrap(),
        value: Value::String("+02:00".into()),
        time: None,
    }];
    gw.server
        .write(
            "dev-3",
            "/3/0/14".parse().unwrap(),
            WriteMode::Replace,
            &e,
            None,
        )
        .await
        .unwrap();
    let req = peer.next_request(Duration::from_secs(10));
    assert_eq!(req["method"], "PUT");
    assert_eq!(req["cf"], 11542);
    assert_eq!(
        req["payload_hex"], "c60e2b30323a3030",
        "the spec's TLV for /3/0/14"
    );
    let e = [Entry {
        path: "/3/0/15".parse().unwrap(),
        value: Value::String("Europe/Berlin".into()),
        time: None,
    }];
    let err = gw
        .server
        .write(
            "dev-3",
            "/3/0/15".parse().unwrap(),
            WriteMode::Replace,
            &e,
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, OpError::Client { code, .. } if code.starts_with("4.05")),
        "{err}"
    );
    let err = gw
        .server
        .read("nobody", Path::object(3), None)
        .await
        .unwrap_err();
    assert!(matches!(err, OpError::UnknownClient(_)), "{err}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_observation_starts_on_registration_and_notifications_become_readings() {
    let gw = Gateway::start_with(Options {
        settings: Settings {
            observe: vec![ObserveRule {
                endpoint: "bed-*".into(),
                paths: vec!["/3303/0/5700".parse().unwrap()],
                composite: false,
                attributes: None,
                class: wardgate_core::MessageClass::Vital,
            }],
            ..Settings::default()
        },
        ..Options::default()
    })
    .await;
    let mut peer = AioPeer::start(gw.addr);
    let senml = |v: f64| format!(r#"[{{"bn":"/3303/0/5700","v":{v}}}]"#).into_bytes();
    peer.serve("3303/0/5700", "GET", "2.05", Some(110), &senml(36.5));
    register(&mut peer, "bed-9", "1.1", &[]);
    let req = peer.next_request(Duration::from_secs(10));
    assert_eq!(req["observe"], 0, "{req}");
    assert_eq!(req["path"], "3303/0/5700");
    let r = gw.wait_readings(1, Duration::from_secs(10)).await;
    assert_eq!(r[0].device, "bed-9");
    assert_eq!(r[0].records[0].v, Some(36.5));
    assert_eq!(r[0].records[0].path.as_deref(), Some("/3303/0/5700"));
    assert_eq!(
        r[0].records[0].n, "temperature",
        "named from the object model"
    );
    assert_eq!(r[0].records[0].u.as_deref(), Some("Cel"));
    peer.notify("3303/0/5700", 110, &senml(37.25));
    let r = gw.wait_readings(2, Duration::from_secs(10)).await;
    assert_eq!(r[1].records[0].v, Some(37.25));
    assert_eq!(r[1].protocol, wardgate_core::Protocol::Lwm2m);
    // Another endpoint pattern is not observed.
    register(&mut peer, "pump-1", "1.1", &[]);
    let info = gw.server.client("pump-1").unwrap();
    assert!(info.observations.is_empty());
    let info = gw.server.client("bed-9").unwrap();
    assert_eq!(info.observations, ["/3303/0/5700"]);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_stores_readings_and_answers_only_when_they_are_durable() {
    let gw = Gateway::start().await;
    let mut peer = AioPeer::start(gw.addr);
    let body = br#"[{"bn":"/3303/0/","n":"5700","v":37.2},{"n":"5701","vs":"Cel"}]"#;
    // Not registered yet.
    let r = peer.request("POST", "dp", &[], Some(110), body);
    assert_eq!(r["code"], "4.03", "{r}");
    register(&mut peer, "bed-10", "1.1", &[]);
    let r = peer.request("POST", "dp", &[], Some(110), body);
    assert_eq!(r["code"], "2.04", "{r}");
    let readings = gw.wait_readings(1, Duration::from_secs(5)).await;
    let paths: Vec<_> = readings[0]
        .records
        .iter()
        .map(|r| r.path.clone().unwrap())
        .collect();
    assert_eq!(paths, ["/3303/0/5700", "/3303/0/5701"]);
    assert_eq!(readings[0].records[0].v, Some(37.2));
    let r = peer.request("POST", "dp", &[], Some(0), b"37.2");
    assert_eq!(r["code"], "4.15", "Send is SenML only: {r}");
    let r = peer.request("POST", "dp", &[], Some(110), b"[{\"bn\":");
    assert_eq!(r["code"], "4.00", "{r}");
    gw.store_full
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let r = peer.request("POST", "dp", &[], Some(110), body);
    assert_eq!(r["code"], "5.03", "a full store: {r}");
    assert!(r["max_age"].as_u64().is_some(), "5.03 carries Max-Age: {r}");
    assert_eq!(gw.readings().len(), 1, "nothing stored while full");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operation_for_a_sleeping_queue_mode_client_waits_for_its_next_update() {
    let gw = Gateway::start_with(Options {
        settings: Settings {
            awake_window: Duration::from_millis(300),
            queue_limit: 1,
            ..Settings::default()
        },
        ..Options::default()
    })
    .await;
    let mut peer = AioPeer::start(gw.addr);
    peer.serve("3/0", "GET", "2.05", Some(11542), &device_tlv());
    let id = register(&mut peer, "sleepy", "1.1", &["Q"]);
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    while gw.server.client("sleepy").unwrap().awake {
        assert!(tokio::time::Instant::now() < end, "never fell asleep");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let server = gw.server.clone();
    let read = tokio::spawn(async move {
        server
            .read("sleepy", "/3/0".parse().unwrap(), Some(Format::Tlv))
            .await
    });
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    while gw.server.client("sleepy").unwrap().queued == 0 {
        assert!(tokio::time::Instant::now() < end, "the read was not queued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The queue holds one: a second operation is refused at once.
    let err = gw
        .server
        .read("sleepy", Path::object(3), None)
        .await
        .unwrap_err();
    assert!(matches!(err, OpError::QueueFull(1)), "{err}");
    // The client wakes with an Update; the queued read goes out after its answer.
    let r = peer.request("POST", &format!("rd/{id}"), &[], None, b"");
    assert_eq!(r["code"], "2.04");
    let entries = tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(value(&entries, "/3/0/9"), Value::Integer(100));
    assert_eq!(peer.next_request(Duration::from_secs(5))["path"], "3/0");
    assert_eq!(gw.metric("wardgate_lwm2m_queued_operations_total"), 1.0);
    let _ = hex(b"");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_deletes_writes_security_and_server_then_finishes_in_order() {
    let cfg = |endpoint: &str, mode: &str| -> wardgate_lwm2m::BootstrapConfig {
        serde_json::from_value(serde_json::json!({
            "endpoint": endpoint,
            "server_uri": if mode == "psk" { "coaps://127.0.0.1:5684" } else { "coap://127.0.0.1:5683" },
            "security_mode": mode,
            "psk_identity": "{endpoint}",
            "lifetime": 120,
        }))
        .unwrap()
    };
    let gw = Gateway::start_with(Options {
        settings: Settings {
            bootstrap: vec![cfg("fresh-*", "nosec"), cfg("secure-*", "psk")],
            ..Settings::default()
        },
        ..Options::default()
    })
    .await;
    let mut peer = AioPeer::start(gw.addr);
    for (path, method, code) in [
        ("0", "DELETE", "2.02"),
        ("1", "DELETE", "2.02"),
        ("0/1", "PUT", "2.04"),
        ("1/0", "PUT", "2.04"),
        ("bs", "POST", "2.04"),
    ] {
        peer.serve(path, method, code, None, b"");
    }
    let r = peer.request("POST", "bs", &["ep=fresh-1"], None, b"");
    assert_eq!(r["code"], "2.04", "{r}");
    let seen: Vec<serde_json::Value> = (0..6)
        .map(|_| peer.next_request(Duration::from_secs(10)))
        .collect();
    let order: Vec<String> = seen
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r["method"].as_str().unwrap(),
                r["path"].as_str().unwrap()
            )
        })
        .collect();
    // Bootstrap-Discover first (this peer answers it 4.05: the configuration decides).
    assert_eq!(
        order,
        [
            "GET 0", "DELETE 0", "DELETE 1", "PUT 0/1", "PUT 1/0", "POST bs"
        ]
    );
    assert_eq!(seen[0]["accept"], 40);
    let seen = &seen[1..];
    assert_eq!(seen[2]["cf"], 11542, "TLV without a preferred format");
    let model = wardgate_lwm2m::ObjectModel::builtin();
    let security = wardgate_lwm2m::format::decode(
        Format::Tlv,
        &"/0/1".parse().unwrap(),
        &unhex(seen[2]["payload_hex"].as_str().unwrap()),
        &model,
        std::time::SystemTime::now(),
    )
    .unwrap();
    assert_eq!(
        value(&security, "/0/1/0"),
        Value::String("coap://127.0.0.1:5683".into())
    );
    assert_eq!(value(&security, "/0/1/1"), Value::Boolean(false));
    assert_eq!(value(&security, "/0/1/2"), Value::Integer(3), "NoSec");
    let server = wardgate_lwm2m::format::decode(
        Format::Tlv,
        &"/1/0".parse().unwrap(),
        &unhex(seen[3]["payload_hex"].as_str().unwrap()),
        &model,
        std::time::SystemTime::now(),
    )
    .unwrap();
    assert_eq!(value(&server, "/1/0/1"), Value::Integer(120));
    assert_eq!(value(&server, "/1/0/7"), Value::String("U".into()));
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    while gw.metric(r#"wardgate_lwm2m_client_requests_total{interface="bootstrap",outcome="ok"}"#)
        < 1.0
    {
        assert!(
            tokio::time::Instant::now() < end,
            "bootstrap not counted as done"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A client whose bootstrap account is Security instance 1 (no `ssid`) gets the server
    // account written elsewhere.
    peer.serve(
        "0",
        "GET",
        "2.05",
        Some(40),
        br#"lwm2m="1.1",</0/1>;uri="coap://bs.example""#,
    );
    peer.serve("0/0", "PUT", "2.04", None, b"");
    let r = peer.request("POST", "bs", &["ep=fresh-2"], None, b"");
    assert_eq!(r["code"], "2.04", "{r}");
    let puts: Vec<String> = (0..6)
        .map(|_| peer.next_request(Duration::from_secs(10)))
        .filter(|r| r["method"] == "PUT")
        .map(|r| r["path"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(puts, ["0/0", "1/0"]);

    // Keys never go over plain CoAP; an endpoint nothing matches is unknown.
    let r = peer.request("POST", "bs", &["ep=secure-1"], None, b"");
    assert_eq!(r["code"], "4.03", "{r}");
    let r = peer.request("POST", "bs", &["ep=stranger"], None, b"");
    assert_eq!(r["code"], "4.00", "{r}");
    let r = peer.request("POST", "bs", &[], None, b"");
    assert_eq!(r["code"], "4.00", "{r}");
    let _ = hex(b"");
    gw.stop().await;
}

fn observing(rules: Vec<ObserveRule>) -> Options {
    Options {
        settings: Settings {
            observe: rules,
            ..Settings::default()
        },
        ..Options::default()
    }
}

fn rule(paths: &[&str], composite: bool) -> ObserveRule {
    ObserveRule {
        endpoint: "*".into(),
        paths: paths.iter().map(|p| p.parse().unwrap()).collect(),
        composite,
        attributes: None,
        class: wardgate_core::MessageClass::Telemetry,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_observation_falls_back_to_a_format_the_client_accepts() {
    let gw = Gateway::start_with(observing(vec![rule(&["/3/0/9"], false)])).await;
    let mut peer = AioPeer::start(gw.addr);
    peer.serve("3/0/9", "GET", "2.05", Some(11542), &unhex("c10964"));
    peer.accept_only("3/0/9", &[11542]);
    register(&mut peer, "tlv-only", "1.1", &[]);
    let accepts: Vec<u64> = (0..3)
        .map(|_| {
            peer.next_request(Duration::from_secs(10))["accept"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(accepts, [112, 110, 11542]);
    let r = gw.wait_readings(1, Duration::from_secs(10)).await;
    assert_eq!(r[0].records[0].n, "device/battery_level");
    assert_eq!(r[0].records[0].v, Some(100.0));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_wise_notification_is_fetched_whole() {
    let gw = Gateway::start_with(observing(vec![rule(&["/3303/0/5750"], false)])).await;
    let mut peer = AioPeer::start(gw.addr);
    let long = "x".repeat(1500);
    let body = format!(r#"[{{"bn":"/3303/0/5750","vs":"{long}"}}]"#);
    // The first answer (and each notification) carries Block2 #0 of two (RFC 7959).
    peer.serve("3303/0/5750", "GET", "2.05", Some(110), body.as_bytes());
    peer.block_wise("3303/0/5750");
    register(&mut peer, "big", "1.1", &[]);
    let r = gw.wait_readings(1, Duration::from_secs(10)).await;
    assert_eq!(r[0].records[0].vs.as_deref(), Some(long.as_str()));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_composite_rule_falls_back_to_one_observation_per_path() {
    let gw = Gateway::start_with(observing(vec![rule(&["/3/0/9", "/3303/0/5700"], true)])).await;
    let mut peer = AioPeer::start(gw.addr);
    peer.serve("3/0/9", "GET", "2.05", Some(11542), &unhex("c10964"));
    peer.serve(
        "3303/0/5700",
        "GET",
        "2.05",
        Some(110),
        br#"[{"bn":"/3303/0/5700","v":36.6}]"#,
    );
    // aiocoap serves nothing at "/": the FETCH gets 4.04 or 4.05.
    register(&mut peer, "no-fetch", "1.1", &[]);
    let end = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let obs = gw.server.client("no-fetch").unwrap().observations;
        if obs.len() == 2 {
            assert_eq!(obs, ["/3/0/9", "/3303/0/5700"]);
            break;
        }
        assert!(tokio::time::Instant::now() < end, "observations: {obs:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gw.wait_readings(2, Duration::from_secs(10)).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_gateway_restart_an_always_reachable_client_is_observed_again_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let port = wardgate_testkit::free_udp_port();
    let opts = || Options {
        db: Some(dir.path().join("lwm2m.db")),
        port,
        ..observing(vec![rule(&["/3303/0/5700"], false)])
    };
    let gw = Gateway::start_with(opts()).await;
    let mut peer = AioPeer::start(gw.addr);
    peer.serve(
        "3303/0/5700",
        "GET",
        "2.05",
        Some(110),
        br#"[{"bn":"/3303/0/5700","v":36.6}]"#,
    );
    register(&mut peer, "steady", "1.1", &[]);
    assert_eq!(peer.next_request(Duration::from_secs(10))["observe"], 0);
    gw.wait_readings(1, Duration::from_secs(10)).await;
    gw.server.flush();
    gw.stop().await;

    let gw = Gateway::start_with(opts()).await;
    // Without any message from the client, the restored registration is observed again.
    let req = peer.next_request(Duration::from_secs(10));
    assert_eq!(
        (req["observe"].as_u64(), req["path"].as_str()),
        (Some(0), Some("3303/0/5700"))
    );
    gw.wait_readings(1, Duration::from_secs(10)).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_separate_response_from_the_client_completes_the_operation() {
    let gw = Gateway::start().await;
    let mut peer = AioPeer::start(gw.addr);
    peer.serve("3/0", "GET", "2.05", Some(11542), &device_tlv());
    // Past aiocoap's empty-ACK delay: an empty ACK, then the content as a CON of its own.
    peer.delay("3/0", 1.0);
    register(&mut peer, "slow", "1.0", &[]);
    let entries = gw
        .server
        .read("slow", "/3/0".parse().unwrap(), None)
        .await
        .unwrap();
    assert_eq!(value(&entries, "/3/0/9"), Value::Integer(100));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observations_started_through_the_api_are_bounded_per_client() {
    let gw = Gateway::start().await;
    let mut peer = AioPeer::start(gw.addr);
    register(&mut peer, "many", "1.0", &[]);
    let max = u16::try_from(wardgate_lwm2m::MAX_MANUAL_OBSERVATIONS).unwrap();
    for i in 0..max {
        gw.server
            .observe(
                "many",
                vec![Path::resource(3303, 0, i)],
                None,
                wardgate_core::MessageClass::Vital,
            )
            .unwrap();
    }
    let err = gw
        .server
        .observe(
            "many",
            vec![Path::resource(3303, 0, max)],
            None,
            wardgate_core::MessageClass::Vital,
        )
        .unwrap_err();
    assert!(matches!(err, OpError::Invalid(_)), "{err}");
    // The same observation again is not a new one.
    gw.server
        .observe(
            "many",
            vec![Path::resource(3303, 0, 0)],
            None,
            wardgate_core::MessageClass::Vital,
        )
        .unwrap();
    gw.stop().await;
}
