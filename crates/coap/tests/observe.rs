//! The gateway observing sensors (RFC 7641): against libcoap's example server, and against a
//! scripted sensor for the ACK-after-durability, freshness and cancellation rules.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use common::{Harness, StoreMode, parse, uint};
use tokio::net::UdpSocket;
use tokio::process::{Child, Command};
use wardgate_coap::config::ObserveTarget;
use wardgate_core::MessageClass;

fn free_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.local_addr().expect("addr").port()
}

fn libcoap_server(port: u16) -> Child {
    Command::new("coap-server-notls")
        .args(["-A", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("coap-server-notls is installed")
}

fn target(uri: String, reregister_after: Duration) -> ObserveTarget {
    ObserveTarget {
        uri,
        device: "wall-clock-3a".into(),
        class: MessageClass::Telemetry,
        name: None,
        reregister_after,
    }
}

async fn wait_for_readings(h: &Harness, n: usize, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    while h.readings().len() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "expected {n} readings, have {}",
            h.readings().len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn notifications_from_libcoap_server_become_readings() {
    let port = free_port();
    let _server = libcoap_server(port);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let uri = format!("coap://127.0.0.1:{port}/time?ticks");
    let h = Harness::start_with(StoreMode::Ok, |c| {
        c.observe = vec![target(uri, Duration::from_secs(30))];
    })
    .await;
    wait_for_readings(&h, 3, Duration::from_secs(15)).await;
    let r = h.readings();
    for reading in &r {
        assert_eq!(reading.device, "wall-clock-3a");
        assert_eq!(reading.class, MessageClass::Telemetry);
        assert_eq!(
            reading.records[0].n, "time",
            "text/plain named by the last path segment"
        );
        assert!(reading.records[0].v.expect("numeric ticks") > 1.0e9);
    }
    assert!(
        r[2].records[0].v >= r[1].records[0].v,
        "clock ticks forward"
    );
    assert_eq!(
        h.metric("wardgate_coap_observe_registrations_total{outcome=\"established\"}"),
        1.0
    );
    assert!(h.metric("wardgate_coap_observe_notifications_total{outcome=\"accepted\"}") >= 3.0);
    assert!(
        h.metric("wardgate_coap_readings_accepted_total{source=\"observe\",class=\"telemetry\"}")
            >= 3.0
    );
    h.stop().await;
}

#[tokio::test]
async fn observation_is_re_registered_after_the_sensor_restarts() {
    let port = free_port();
    let mut server = libcoap_server(port);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let uri = format!("coap://127.0.0.1:{port}/time?ticks");
    let h = Harness::start_with(StoreMode::Ok, |c| {
        c.observe = vec![target(uri, Duration::from_secs(2))];
        c.transmission.ack_timeout = Duration::from_millis(500);
    })
    .await;
    wait_for_readings(&h, 2, Duration::from_secs(15)).await;
    server.kill().await.expect("kill sensor");
    let before = h.readings().len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The restarted sensor has forgotten every observer.
    let _server = libcoap_server(port);
    wait_for_readings(&h, before + 2, Duration::from_secs(20)).await;
    assert!(h.metric("wardgate_coap_observe_registrations_total{outcome=\"sent\"}") >= 2.0);
    assert!(h.metric("wardgate_coap_observe_registrations_total{outcome=\"quiet\"}") >= 1.0);
    h.stop().await;
}

/// A scripted sensor on a raw socket.
struct Sensor {
    sock: UdpSocket,
}

impl Sensor {
    async fn new() -> Sensor {
        Sensor {
            sock: UdpSocket::bind("127.0.0.1:0").await.expect("bind"),
        }
    }

    fn addr(&self) -> SocketAddr {
        self.sock.local_addr().expect("addr")
    }

    async fn recv(&self, within: Duration) -> Option<(Vec<u8>, SocketAddr)> {
        let mut buf = vec![0u8; 1500];
        match tokio::time::timeout(within, self.sock.recv_from(&mut buf)).await {
            Ok(Ok((n, from))) => Some((buf[..n].to_vec(), from)),
            _ => None,
        }
    }

    /// Sends a 2.05 text/plain notification with `seq`.
    async fn notify(
        &self,
        to: SocketAddr,
        mtype: u8,
        mid: u16,
        token: &[u8],
        seq: u32,
        value: &str,
    ) {
        let mut b = vec![0x40 | (mtype << 4) | token.len() as u8, 0x45];
        b.extend_from_slice(&mid.to_be_bytes());
        b.extend_from_slice(token);
        let obs = uint(seq);
        b.push(0x60 | obs.len() as u8); // Observe (6)
        b.extend_from_slice(&obs);
        b.push(0x60); // Content-Format (12) = 0, zero-length
        b.push(0xff);
        b.extend_from_slice(value.as_bytes());
        self.sock.send_to(&b, to).await.expect("send");
    }
}

/// Receives the registration GET and answers it piggybacked; returns (gateway addr, token).
async fn accept_registration(s: &Sensor) -> (SocketAddr, Vec<u8>) {
    let (req, gw) = s.recv(Duration::from_secs(5)).await.expect("registration");
    let p = parse(&req);
    assert_eq!(p.header.get_code(), "0.01");
    assert_eq!(p.get_observe_value().map(|r| r.expect("observe")), Some(0));
    let token = p.get_token().to_vec();
    let mut b = vec![0x60 | token.len() as u8, 0x45];
    b.extend_from_slice(&p.header.message_id.to_be_bytes());
    b.extend_from_slice(&token);
    b.extend_from_slice(&[0x61, 0x01, 0x60, 0xff]); // Observe 1, Content-Format 0
    b.extend_from_slice(b"20.0");
    s.sock.send_to(&b, gw).await.expect("send");
    (gw, token)
}

fn is_empty_ack(b: &[u8], mid: u16) -> bool {
    let m = mid.to_be_bytes();
    b == [0x60, 0x00, m[0], m[1]]
}

#[tokio::test]
async fn con_notifications_are_acked_after_storage_stale_ones_skipped_and_shutdown_cancels() {
    let sensor = Sensor::new().await;
    let uri = format!("coap://{}/temp", sensor.addr());
    let h = Harness::start_with(StoreMode::Ok, |c| {
        c.observe = vec![ObserveTarget {
            name: Some("room_temperature".into()),
            ..target(uri, Duration::from_secs(60))
        }];
    })
    .await;
    let (gw, token) = accept_registration(&sensor).await;
    sensor.notify(gw, 0, 0x0100, &token, 5, "21.5").await;
    let (ack, _) = sensor.recv(Duration::from_secs(5)).await.expect("ACK");
    assert!(is_empty_ack(&ack, 0x0100), "{ack:02x?}");
    // By the time the ACK is sent the reading is stored.
    let r = h.readings();
    assert_eq!(r.len(), 2, "registration response and notification");
    assert_eq!(r[1].records[0].n, "room_temperature");
    assert_eq!(r[1].records[0].v, Some(21.5));
    // A duplicate (same MID) is acknowledged again but not stored twice.
    sensor.notify(gw, 0, 0x0100, &token, 5, "21.5").await;
    let (ack, _) = sensor.recv(Duration::from_secs(5)).await.expect("ACK");
    assert!(is_empty_ack(&ack, 0x0100));
    // An older sequence number is stale: acknowledged, not stored.
    sensor.notify(gw, 0, 0x0101, &token, 4, "19.0").await;
    let (ack, _) = sensor.recv(Duration::from_secs(5)).await.expect("ACK");
    assert!(is_empty_ack(&ack, 0x0101));
    // A NON notification needs no ACK.
    sensor.notify(gw, 1, 0x0102, &token, 6, "22.0").await;
    assert!(sensor.recv(Duration::from_millis(300)).await.is_none());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let values: Vec<f64> = h.readings().iter().filter_map(|r| r.records[0].v).collect();
    assert_eq!(values, [20.0, 21.5, 22.0]);
    assert_eq!(
        h.metric("wardgate_coap_observe_notifications_total{outcome=\"stale\"}"),
        1.0
    );

    // Shutdown deregisters with GET Observe=1 and the same token.
    h.shutdown.cancel();
    let (cancel, _) = sensor
        .recv(Duration::from_secs(5))
        .await
        .expect("deregistration");
    let p = parse(&cancel);
    assert_eq!(p.header.get_code(), "0.01");
    assert_eq!(p.get_observe_value().map(|r| r.expect("observe")), Some(1));
    assert_eq!(p.get_token(), token.as_slice());
    let mut b = vec![0x60 | token.len() as u8, 0x45];
    b.extend_from_slice(&p.header.message_id.to_be_bytes());
    b.extend_from_slice(&token);
    sensor.sock.send_to(&b, gw).await.expect("send");
    h.stop().await;
}

#[tokio::test]
async fn notification_refused_by_a_full_store_is_not_acknowledged() {
    let sensor = Sensor::new().await;
    let uri = format!("coap://{}/temp", sensor.addr());
    let h = Harness::start_with(StoreMode::Full, |c| {
        c.observe = vec![target(uri, Duration::from_secs(60))];
    })
    .await;
    let (gw, token) = accept_registration(&sensor).await;
    sensor.notify(gw, 0, 0x0200, &token, 2, "21.0").await;
    assert!(
        sensor.recv(Duration::from_millis(500)).await.is_none(),
        "no ACK: the sensor must keep the reading and retransmit"
    );
    // The retransmission is processed again (and refused again), not silently deduplicated.
    sensor.notify(gw, 0, 0x0200, &token, 2, "21.0").await;
    assert!(sensor.recv(Duration::from_millis(500)).await.is_none());
    // The registration response carried a reading too: refused as well.
    assert_eq!(
        h.metric("wardgate_coap_observe_notifications_total{outcome=\"busy\"}"),
        3.0
    );
    assert!(h.readings().is_empty());
    h.stop().await;
}

#[tokio::test]
async fn notification_for_a_forgotten_token_is_reset() {
    let sensor = Sensor::new().await;
    let uri = format!("coap://{}/temp", sensor.addr());
    let h = Harness::start_with(StoreMode::Ok, |c| {
        c.observe = vec![target(uri, Duration::from_secs(60))];
    })
    .await;
    let (gw, _token) = accept_registration(&sensor).await;
    sensor.notify(gw, 0, 0x0300, b"\x01\x02", 2, "1").await;
    let (rst, _) = sensor.recv(Duration::from_secs(5)).await.expect("RST");
    assert_eq!(rst, vec![0x70, 0x00, 0x03, 0x00]);
    assert_eq!(h.metric("wardgate_coap_unmatched_responses_total"), 1.0);
    h.stop().await;
}

/// Answers a GET from the gateway with block `num` of `body` in 16-byte blocks (Block2, SZX 0).
async fn answer_block(s: &Sensor, req: &[u8], gw: SocketAddr, body: &[u8]) {
    let p = parse(req);
    let num = p
        .get_first_option(coap_lite::CoapOption::Block2)
        .map_or(0, |v| {
            v.iter().fold(0u32, |n, b| (n << 8) | u32::from(*b)) >> 4
        });
    let start = num as usize * 16;
    let end = (start + 16).min(body.len());
    let more = end < body.len();
    let token = p.get_token().to_vec();
    let mut b = vec![0x60 | token.len() as u8, 0x45];
    b.extend_from_slice(&p.header.message_id.to_be_bytes());
    b.extend_from_slice(&token);
    b.push(0xC0); // Content-Format (12) = 0, zero-length
    b.push(0xB1); // Block2 (23)
    b.push(((num as u8) << 4) | if more { 0x08 } else { 0 });
    b.push(0xff);
    b.extend_from_slice(&body[start..end]);
    s.sock.send_to(&b, gw).await.expect("send");
}

#[tokio::test]
async fn a_block_wise_notification_is_fetched_whole_before_it_becomes_a_reading() {
    let sensor = Sensor::new().await;
    let uri = format!("coap://{}/temp", sensor.addr());
    let h = Harness::start_with(StoreMode::Ok, |c| {
        c.observe = vec![target(uri, Duration::from_secs(60))];
    })
    .await;
    let (gw, token) = accept_registration(&sensor).await;
    // 20 bytes: more than one 16-byte block.
    let body = b"        21.5        ";
    let mut n = vec![0x40 | token.len() as u8, 0x45, 0x02, 0x00];
    n.extend_from_slice(&token);
    n.extend_from_slice(&[0x61, 0x07, 0x60, 0xB1, 0x08, 0xff]); // Observe 7, CF 0, Block2 0/M/16
    n.extend_from_slice(&body[..16]);
    sensor.sock.send_to(&n, gw).await.expect("send");
    // The gateway asks for the whole representation, block by block, then acknowledges.
    let mut blocks = 0;
    loop {
        let (msg, from) = sensor
            .recv(Duration::from_secs(5))
            .await
            .expect("request or ACK");
        if is_empty_ack(&msg, 0x0200) {
            break;
        }
        let p = parse(&msg);
        assert_eq!(p.header.get_code(), "0.01", "{msg:02x?}");
        assert_eq!(
            p.get_observe_value(),
            None,
            "the follow-up GET does not observe"
        );
        answer_block(&sensor, &msg, from, body).await;
        blocks += 1;
        assert!(blocks <= 4, "too many requests");
    }
    assert_eq!(blocks, 2);
    let values: Vec<f64> = h.readings().iter().filter_map(|r| r.records[0].v).collect();
    assert_eq!(values, [20.0, 21.5]);
    h.stop().await;
}
