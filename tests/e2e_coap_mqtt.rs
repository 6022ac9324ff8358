//! CoAP in, MQTT out: libcoap's tools and Mosquitto against the real wardgate binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::net::UdpSocket;
use std::time::Duration;

use common::{Gateway, Mosquitto, Subscriber, coap_client, coap_send, schema, valid_reading};

const WAIT: Duration = Duration::from_secs(20);

fn readings_only(topic: &str) -> bool {
    !topic.ends_with("/status")
}

#[test]
fn every_accepted_payload_format_arrives_normalized_and_schema_valid() {
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "wardgate/#");
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(dir.path(), &broker.url(), "");

    // SenML JSON (110) with base name and base time.
    let (ok, out) = coap_send(
        "post",
        110,
        r#"[{"bn":"bed-1/","bt":1763759045,"n":"spo2","u":"%25","v":97},{"n":"heart_rate","u":"beat/min","v":72}]"#,
        &gw.coap_uri("v1/readings/bed-1"),
    ).outcome();
    assert!(ok, "{out}");
    // SenML CBOR (112): [{0: "temp", 1: "Cel", 2: 36.6}] encoded by hand.
    let cbor = dir.path().join("r.cbor");
    std::fs::write(
        &cbor,
        [
            0x81, 0xa3, 0x00, 0x64, b't', b'e', b'm', b'p', 0x01, 0x63, b'C', b'e', b'l', 0x02,
            0xfb, 0x40, 0x42, 0x4c, 0xcc, 0xcc, 0xcc, 0xcc, 0xcd,
        ],
    )
    .unwrap();
    let (ok, out) = coap_client(&[
        "-m",
        "post",
        "-t",
        "112",
        "-f",
        cbor.to_str().unwrap(),
        &gw.coap_uri("v1/readings/bed-2"),
    ])
    .outcome();
    assert!(ok, "{out}");
    // Plain JSON (50), as an alarm.
    let (ok, out) = coap_send(
        "post",
        50,
        r#"{"spo2":88,"probe_ok":true}"#,
        &gw.coap_uri("v1/readings/bed-3?class=alarm"),
    )
    .outcome();
    assert!(ok, "{out}");
    // text/plain (0): the record name comes from the URI.
    let (ok, out) = coap_send(
        "put",
        0,
        "37.2",
        &gw.coap_uri("v1/readings/bed-4/temperature"),
    )
    .outcome();
    assert!(ok, "{out}");
    // Block1 upload in 16-byte blocks: a ~300-byte SenML pack.
    let big: Vec<String> = (0..10)
        .map(|i| format!(r#"{{"n":"channel-{i}","u":"mV","v":{i}.5}}"#))
        .collect();
    let big = format!("[{}]", big.join(","));
    assert!(big.len() > 250);
    let (ok, out) = coap_client(&[
        "-m",
        "post",
        "-b",
        "16",
        "-t",
        "110",
        "-e",
        &big,
        &gw.coap_uri("v1/readings/bed-5"),
    ])
    .outcome();
    assert!(ok, "{out}");

    let validator = schema();
    let got = sub.collect(5, WAIT, readings_only);
    let mut ids = HashSet::new();
    let mut by_device = std::collections::HashMap::new();
    for (topic, payload) in &got {
        let v = valid_reading(&validator, payload);
        assert!(
            ids.insert(v["id"].as_str().unwrap().to_owned()),
            "duplicate id in {got:?}"
        );
        assert_eq!(v["gateway"], "test-ward");
        assert_eq!(v["protocol"], "coap");
        let device = v["device"].as_str().unwrap().to_owned();
        assert_eq!(
            topic,
            &format!(
                "wardgate/test-ward/{device}/{}",
                v["class"].as_str().unwrap()
            )
        );
        by_device.insert(device, v);
    }
    let r1 = &by_device["bed-1"]["records"];
    assert_eq!(r1[0]["n"], "bed-1/spo2");
    assert_eq!(r1[0]["v"], 97.0);
    assert_eq!(r1[0]["u"], "%");
    assert_eq!(r1[0]["t"], 1_763_759_045.0);
    assert_eq!(r1[1]["n"], "bed-1/heart_rate");
    assert_eq!(r1[1]["u"], "beat/min");
    assert_eq!(by_device["bed-2"]["records"][0]["n"], "temp");
    assert_eq!(by_device["bed-2"]["records"][0]["v"], 36.6);
    assert_eq!(by_device["bed-3"]["class"], "alarm");
    assert_eq!(by_device["bed-4"]["records"][0]["n"], "temperature");
    assert_eq!(by_device["bed-4"]["records"][0]["v"], 37.2);
    assert_eq!(by_device["bed-5"]["records"].as_array().unwrap().len(), 10);
    assert_eq!(by_device["bed-5"]["records"][9]["n"], "channel-9");
}

#[test]
fn duplicate_con_is_answered_identically_and_delivered_once() {
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "wardgate/#");
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(dir.path(), &broker.url(), "");

    let mut p = coap_lite::Packet::new();
    p.header.set_type(coap_lite::MessageType::Confirmable);
    p.header.code = coap_lite::MessageClass::Request(coap_lite::RequestType::Post);
    p.header.message_id = 0x4242;
    p.set_token(vec![1, 2, 3, 4]);
    for seg in ["v1", "readings", "bed-dup"] {
        p.add_option(coap_lite::CoapOption::UriPath, seg.as_bytes().to_vec());
    }
    p.add_option(coap_lite::CoapOption::ContentFormat, vec![110]);
    p.payload = br#"[{"n":"spo2","v":95}]"#.to_vec();
    let bytes = p.to_bytes().unwrap();

    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut answers = Vec::new();
    for _ in 0..2 {
        sock.send_to(&bytes, gw.coap).unwrap();
        let mut buf = [0u8; 1500];
        let (n, _) = sock.recv_from(&mut buf).expect("an answer to each copy");
        answers.push(buf[..n].to_vec());
    }
    assert_eq!(
        answers[0], answers[1],
        "a duplicate CON gets the same response"
    );
    let resp = coap_lite::Packet::from_bytes(&answers[0]).unwrap();
    assert_eq!(
        resp.header.code,
        coap_lite::MessageClass::Response(coap_lite::ResponseType::Created)
    );
    assert_eq!(resp.header.message_id, 0x4242);
    assert_eq!(resp.get_token(), &[1, 2, 3, 4]);

    let got = sub.collect(1, WAIT, readings_only);
    assert!(got[0].1.contains("bed-dup"));
    assert!(
        sub.next(Duration::from_secs(2))
            .filter(|(t, _)| readings_only(t))
            .is_none(),
        "the duplicate must not become a second reading"
    );
    let metrics = gw.metrics();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("wardgate_coap_dedup_hits_total") && !l.ends_with(" 0")),
        "dedup hit not counted:\n{metrics}"
    );
}

#[test]
fn malformed_datagrams_get_the_rfc_answer_and_the_gateway_keeps_serving() {
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "wardgate/#");
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(dir.path(), &broker.url(), "");
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 2048];

    // Truncated header (2 bytes) and a wrong version: silently ignored.
    for junk in [&[0x40u8, 0x01][..], &[0x80, 0x01, 0x12, 0x34][..]] {
        sock.send_to(junk, gw.coap).unwrap();
        assert!(
            sock.recv_from(&mut buf).is_err(),
            "junk {junk:?} must be ignored"
        );
    }
    // CON with token length 9 (a format error with a readable MID): RST.
    sock.send_to(
        &[0x49, 0x02, 0xab, 0xcd, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        gw.coap,
    )
    .unwrap();
    let (n, _) = sock.recv_from(&mut buf).expect("RST for a malformed CON");
    assert_eq!(buf[0] & 0x30, 0x30, "type RST");
    assert_eq!(&buf[2..4], &[0xab, 0xcd]);
    assert_eq!(n, 4);
    // Empty CON (CoAP ping): RST.
    sock.send_to(&[0x40, 0x00, 0x00, 0x07], gw.coap).unwrap();
    let (_, _) = sock.recv_from(&mut buf).expect("RST for ping");
    assert_eq!(buf[0] & 0x30, 0x30);
    // Oversized datagram: 4.13 (the CON header is readable).
    let mut big = vec![0x42, 0x02, 0x00, 0x09, 0xaa, 0xbb];
    big.extend(std::iter::repeat_n(0x00, 4000));
    sock.send_to(&big, gw.coap).unwrap();
    let (n, _) = sock.recv_from(&mut buf).expect("answer to oversized");
    let p = coap_lite::Packet::from_bytes(&buf[..n]).unwrap();
    assert_eq!(
        p.header.code,
        coap_lite::MessageClass::Response(coap_lite::ResponseType::RequestEntityTooLarge)
    );
    // Unknown critical option 9 (odd, unregistered) in a CON: 4.02.
    let (ok, out) = coap_client(&[
        "-m",
        "post",
        "-O",
        "9,x",
        "-t",
        "110",
        "-e",
        "[]",
        &gw.coap_uri("v1/readings/bed-x"),
    ])
    .outcome();
    assert!(out.contains("4.02"), "{ok} {out}");
    // Wrong method: 4.05. Unsupported content format: 4.15. Garbage SenML: 4.00.
    let (_, out) = coap_client(&["-m", "delete", &gw.coap_uri("v1/readings/bed-x")]).outcome();
    assert!(out.contains("4.05"), "{out}");
    let (_, out) = coap_send("post", 41, "<x/>", &gw.coap_uri("v1/readings/bed-x")).outcome();
    assert!(out.contains("4.15"), "{out}");
    let (_, out) =
        coap_send("post", 110, "{not senml", &gw.coap_uri("v1/readings/bed-x")).outcome();
    assert!(out.contains("4.00"), "{out}");

    // Still serving, and the discovery resource works.
    let (ok, out) = coap_client(&["-m", "get", &gw.coap_uri(".well-known/core")]).outcome();
    assert!(ok && out.contains("</v1/readings>"), "{out}");
    let (ok, out) = coap_send(
        "post",
        110,
        r#"[{"n":"spo2","v":96}]"#,
        &gw.coap_uri("v1/readings/bed-ok"),
    )
    .outcome();
    assert!(ok, "{out}");
    let got = sub.collect(1, WAIT, readings_only);
    assert!(got[0].1.contains("bed-ok"), "{got:?}");
    let metrics = gw.metrics();
    assert!(metrics.contains("wardgate_coap_"), "{metrics}");
}

#[test]
fn observed_coap_server_sensor_notifications_become_readings() {
    common::require_tool("/usr/bin/coap-server-notls");
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "wardgate/#");
    let sensor_port = common::free_udp_port();
    let _sensor = common::ChildGuard(
        std::process::Command::new("/usr/bin/coap-server-notls")
            .args(["-A", "127.0.0.1", "-p", &sensor_port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "[[coap.observe]]\nuri = \"coap://127.0.0.1:{sensor_port}/time?ticks\"\ndevice = \"clock-sensor\"\nclass = \"telemetry\"\nname = \"ticks\"\n"
    );
    let _gw = Gateway::start(dir.path(), &broker.url(), &extra);

    let got = sub.collect(2, Duration::from_secs(30), readings_only);
    let validator = schema();
    for (topic, payload) in &got {
        assert_eq!(topic, "wardgate/test-ward/clock-sensor/telemetry");
        let v = valid_reading(&validator, payload);
        assert_eq!(v["records"][0]["n"], "ticks");
    }
}
