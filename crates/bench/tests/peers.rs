//! The harness against real peers: its own UDP ceiling server, libcoap's `coap-server-notls`,
//! and Mosquitto. These prove the load generator counts what really happened (answers, codes,
//! deliveries, losses, duplicates); they assert no speed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use wardgate_bench::coap_load::{self, CoapLoadArgs};
use wardgate_bench::coap_msg::MsgType;
use wardgate_bench::payload::Format;
use wardgate_bench::{broker_limit, udp_echo};
use wardgate_testkit::{ChildGuard as Peer, Mosquitto, free_udp_port};

struct Echo {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn echo() -> Echo {
    let sock = udp_echo::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let thread =
        std::thread::spawn(move || udp_echo::serve(&sock, &s, Duration::from_secs(60)).unwrap());
    Echo {
        addr,
        stop,
        thread: Some(thread),
    }
}

fn args(target: SocketAddr) -> CoapLoadArgs {
    CoapLoadArgs {
        target: target.to_string(),
        path: "v1/readings".into(),
        device_prefix: "test".into(),
        msg_type: MsgType::Con,
        format: Format::SenmlJson,
        sockets: 2,
        in_flight: 16,
        rate: None,
        duration: 10.0,
        count: Some(2_000),
        timeout: 2.0,
        mqtt: None,
        topic: None,
        drain_timeout: 5.0,
        pid: None,
        peer_pid: vec![],
        rss_series: None,
        ready_timeout: 5.0,
        topic_must_contain: None,
        label: "test".into(),
    }
}

#[test]
fn closed_loop_run_gets_every_con_reading_acknowledged_by_the_udp_ceiling() {
    let e = echo();
    let r = coap_load::run(&args(e.addr)).unwrap();
    assert_eq!(r.mode, "closed");
    assert_eq!(r.sent, 2_000);
    assert_eq!(r.ok, 2_000);
    assert_eq!(r.responses, 2_000);
    assert_eq!(r.timeouts + r.duplicate_responses + r.unexpected, 0);
    assert_eq!(r.ack_latency.as_ref().unwrap().count, 2_000);
}

#[test]
fn open_loop_run_sends_on_schedule_and_reports_its_own_lateness() {
    let e = echo();
    let mut a = args(e.addr);
    a.rate = Some(2_000.0);
    a.duration = 0.5;
    a.count = None;
    a.in_flight = 256;
    a.format = Format::SenmlCbor;
    let r = coap_load::run(&a).unwrap();
    assert_eq!(r.mode, "open");
    assert_eq!(r.sent, 1_000, "rate x duration requests");
    assert_eq!(r.ok, 1_000);
    assert_eq!(r.send_lag.as_ref().unwrap().count, 1_000);
    assert!(
        r.duration_s >= 0.49,
        "the schedule spans the duration: {}",
        r.duration_s
    );
}

#[test]
fn non_requests_are_matched_to_non_responses_by_token() {
    let e = echo();
    let mut a = args(e.addr);
    a.msg_type = MsgType::Non;
    let r = coap_load::run(&a).unwrap();
    assert_eq!(r.ok, 2_000);
    assert_eq!(r.unexpected, 0);
}

#[test]
fn silent_server_yields_timeouts_not_a_hang() {
    // A bound socket that never answers.
    let quiet = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut a = args(quiet.local_addr().unwrap());
    a.ready_timeout = 0.0;
    a.count = Some(20);
    a.in_flight = 4;
    a.timeout = 0.2;
    a.duration = 0.5;
    let started = Instant::now();
    let r = coap_load::run(&a).unwrap();
    assert_eq!(r.responses, 0);
    assert_eq!(r.timeouts, r.sent);
    assert!(r.sent >= 4);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "bounded by duration + timeout"
    );
}

#[test]
fn libcoap_server_answers_are_counted_by_response_class() {
    let port = free_udp_port();
    let _server = Peer(
        Command::new("/usr/bin/coap-server-notls")
            .args(["-A", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("libcoap3-bin is installed"),
    );
    let mut a = args(SocketAddr::from(([127, 0, 0, 1], port)));
    a.count = Some(500);
    let r = coap_load::run(&a).unwrap();
    assert_eq!(r.sent, 500);
    assert_eq!(r.responses, 500, "{r:?}");
    // libcoap has no /v1/readings resource: 4.04 (or 4.05), fast and without forwarding.
    assert_eq!(r.client_4xx, 500);
    assert_eq!(r.ok, 0);
}

#[test]
fn broker_ceiling_delivers_every_message_once_through_mosquitto() {
    let broker = Mosquitto::start();
    let port = broker.port;
    let r = broker_limit::run(&broker_limit::BrokerLimitArgs {
        mqtt: format!("mqtt://127.0.0.1:{port}"),
        in_flight: 64,
        duration: 10.0,
        count: Some(3_000),
        drain_timeout: 5.0,
        pid: Some(broker.pid()),
        label: "test".into(),
    })
    .unwrap();
    assert_eq!(r.sent, 3_000);
    assert_eq!(r.e2e.unique, 3_000);
    assert_eq!(r.e2e.duplicates, 0);
    assert!(r.e2e.latency.is_some());
    assert!(r.sut_memory.is_some() && r.cpu.sut_cpu_ms.is_some());
}

/// A CoAP→MQTT bridge that acknowledges everything, drops every 10th reading and publishes
/// every 7th twice: the harness must see exactly that.
fn lossy_bridge(
    mqtt_port: u16,
    stop: Arc<AtomicBool>,
) -> (SocketAddr, std::thread::JoinHandle<()>) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let addr = sock.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        let mut opts = rumqttc::MqttOptions::new("lossy-bridge", "127.0.0.1", mqtt_port);
        opts.set_inflight(1000);
        let (client, mut conn) = rumqttc::Client::new(opts, 10_000);
        let driver = std::thread::spawn(move || {
            for ev in conn.iter() {
                if ev.is_err() {
                    break;
                }
            }
        });
        let mut buf = [0u8; 2048];
        let mut out = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let Ok((n, peer)) = sock.recv_from(&mut buf) else {
                continue;
            };
            let req = &buf[..n];
            if udp_echo::answer(req, &mut out).is_none() {
                continue;
            }
            let body = coap_lite::Packet::from_bytes(req)
                .map(|p| p.payload)
                .unwrap_or_default();
            let seq = wardgate_bench::payload::extract_seq(&body);
            let topic = "bridge/test/vital";
            if seq.is_none_or(|s| s % 10 != 3) {
                client
                    .publish(topic, rumqttc::QoS::AtLeastOnce, false, body.clone())
                    .unwrap();
                if seq.is_some_and(|s| s % 7 == 0) {
                    client
                        .publish(topic, rumqttc::QoS::AtLeastOnce, false, body)
                        .unwrap();
                }
            }
            let _ = sock.send_to(&out, peer);
        }
        let _ = client.disconnect();
        let _ = driver.join();
    });
    (addr, handle)
}

#[test]
fn end_to_end_matching_counts_lost_and_duplicated_readings() {
    let broker = Mosquitto::start();
    let port = broker.port;
    let stop = Arc::new(AtomicBool::new(false));
    let (addr, bridge) = lossy_bridge(port, stop.clone());
    let mut a = args(addr);
    a.count = Some(700);
    a.mqtt = Some(format!("mqtt://127.0.0.1:{port}"));
    a.topic = Some("bridge/+/vital".into());
    a.drain_timeout = 3.0;
    // The bridge's topic does not name the device; match on its fixed topic instead.
    a.topic_must_contain = Some("bridge/test".into());
    let r = coap_load::run(&a).unwrap();
    stop.store(true, Ordering::Relaxed);
    bridge.join().unwrap();
    let e2e = r.e2e.unwrap();
    assert_eq!(r.ok, 700);
    assert_eq!(
        e2e.undelivered, 70,
        "every 10th reading (seq % 10 == 3) dropped: {e2e:?}"
    );
    assert_eq!(e2e.lost_acked, 70);
    assert_eq!(e2e.unique, 630);
    // seq % 7 == 0 and not dropped: 0,7,..,693 is 100 numbers, 10 of them are ≡ 3 mod 10.
    assert_eq!(e2e.duplicates, 90);
    assert!((e2e.delivery_ratio - 0.9).abs() < 1e-9);
}
