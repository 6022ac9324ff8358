//! Retransmission timers (RFC 7252 §4.2, §4.8): ACK_TIMEOUT × random [1, ACK_RANDOM_FACTOR),
//! doubling, MAX_RETRANSMIT retransmissions, then give up. Driven with an explicit clock on the
//! sans-I/O layer and with `tokio::time::pause()` end to end.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::Instant;
use wardgate_coap::codec::{Code, Message, MsgType};
use wardgate_coap::config::TransmissionConfig;
use wardgate_coap::layer::{Inbound, LayerConfig, MessageLayer, Response};
use wardgate_coap::{ClientRequest, CoapClient, CoapError, CoapMetrics};

fn layer(now: Instant, metrics: CoapMetrics) -> MessageLayer {
    MessageLayer::new(
        now,
        LayerConfig {
            transmission: TransmissionConfig::default(),
            piggyback_budget: Duration::from_millis(500),
            dedup_max_entries: 1024,
            dedup_max_entries_per_source: 1024,
        },
        metrics,
    )
}

fn sent(l: &mut MessageLayer) -> Vec<Vec<u8>> {
    let v = l.tx().iter().map(|(_, b)| b.to_vec()).collect();
    l.tx().clear();
    v
}

fn close(a: Duration, b: Duration) -> bool {
    a.abs_diff(b) <= Duration::from_millis(2)
}

/// `b` is `initial × 2^i`: the 1 ms timer granularity in `initial` scales with the factor.
fn close_scaled(a: Duration, b: Duration, i: u32) -> bool {
    a.abs_diff(b) <= Duration::from_millis(2 + (1 << i))
}

#[test]
fn separate_response_is_retransmitted_with_doubling_timeouts_then_given_up() {
    let t0 = Instant::now();
    let metrics = CoapMetrics::default();
    let mut l = layer(t0, metrics.clone());
    let peer = SocketAddr::from(([127, 0, 0, 1], 5683));
    // A CON POST with token 0x77.
    let req = [0x41, 0x02, 0x12, 0x34, 0x77];
    let id = match l.handle_datagram(t0, peer, &req) {
        Inbound::Request(r) => r.id,
        Inbound::Nothing => panic!("request expected"),
    };
    assert!(sent(&mut l).is_empty());
    l.defer(t0, id);
    // Piggyback budget over: empty ACK.
    let budget_end = l.next_deadline().expect("budget timer");
    assert_eq!(budget_end - t0, Duration::from_millis(500));
    l.poll_timers(budget_end);
    assert_eq!(sent(&mut l), vec![vec![0x60, 0x00, 0x12, 0x34]]);
    // The reading becomes durable later: separate CON response.
    let t1 = t0 + Duration::from_secs(1);
    l.respond(t1, id, &Response::new(Code::CREATED));
    let first = sent(&mut l);
    assert_eq!(first.len(), 1);
    let m = Message::parse(&first[0]).expect("valid");
    assert_eq!(
        (m.mtype, m.code, m.token.as_bytes()),
        (MsgType::Con, Code::CREATED, &[0x77][..])
    );

    let mut times = vec![t1];
    while let Some(d) = l.next_deadline() {
        if d > t1 + Duration::from_secs(200) {
            break; // only dedup expiry left
        }
        l.poll_timers(d);
        let out = sent(&mut l);
        if !out.is_empty() {
            assert_eq!(out, first, "a retransmission repeats the message");
            times.push(d);
        } else if l.outstanding() == 0 {
            times.push(d); // the give-up instant
            break;
        }
    }
    assert_eq!(
        times.len(),
        6,
        "original + MAX_RETRANSMIT (4) + give-up: {times:?}"
    );
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    let initial = gaps[0];
    assert!(
        initial >= Duration::from_secs(2) && initial < Duration::from_secs(3),
        "initial timeout in [ACK_TIMEOUT, ACK_TIMEOUT*1.5): {initial:?}"
    );
    for (i, g) in gaps.iter().enumerate() {
        assert!(close(*g, initial * (1 << i)), "gap {i} doubles: {gaps:?}");
    }
    assert_eq!(metrics.retransmissions.get(), 4);
    assert_eq!(metrics.transmission_timeouts.get(), 1);
}

#[test]
fn ack_stops_retransmission_and_rst_cancels_it() {
    let t0 = Instant::now();
    let mut l = layer(t0, CoapMetrics::default());
    let peer = SocketAddr::from(([127, 0, 0, 1], 5683));
    for (mid, answer) in [(0x0001u16, 0x60u8), (0x0002, 0x70)] {
        let m = mid.to_be_bytes();
        let req = [0x41, 0x02, m[0], m[1], 0x77];
        let Inbound::Request(r) = l.handle_datagram(t0, peer, &req) else {
            panic!("request expected");
        };
        l.defer(t0, r.id);
        l.poll_timers(t0 + Duration::from_millis(600));
        sent(&mut l);
        l.respond(
            t0 + Duration::from_secs(1),
            r.id,
            &Response::new(Code::CREATED),
        );
        let out = sent(&mut l);
        let sep_mid = Message::parse(&out[0]).expect("valid").mid.to_be_bytes();
        // ACK (0x60) or RST (0x70) from the device.
        let _ = l.handle_datagram(
            t0 + Duration::from_secs(1),
            peer,
            &[answer, 0, sep_mid[0], sep_mid[1]],
        );
        assert_eq!(l.outstanding(), 0);
        l.poll_timers(t0 + Duration::from_secs(100));
        assert!(
            sent(&mut l).is_empty(),
            "nothing retransmitted after {answer:#x}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn client_request_to_a_silent_peer_retransmits_on_the_rfc_schedule_and_times_out() {
    let silent = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let peer = silent.local_addr().expect("addr");
    let client = CoapClient::bind(
        "127.0.0.1:0".parse().expect("addr"),
        TransmissionConfig::default(),
    )
    .await
    .expect("client");
    let start = Instant::now();
    let req = tokio::spawn(async move {
        let r = client
            .request(
                peer,
                ClientRequest::post("v1/readings/x")
                    .content_format(0)
                    .payload("1"),
            )
            .await;
        (r, Instant::now())
    });
    let mut arrivals = Vec::new();
    let mut first: Option<Vec<u8>> = None;
    let mut buf = [0u8; 256];
    for _ in 0..5 {
        let (n, _) = silent.recv_from(&mut buf).await.expect("datagram");
        arrivals.push(Instant::now());
        match &first {
            None => first = Some(buf[..n].to_vec()),
            Some(f) => assert_eq!(f.as_slice(), &buf[..n], "same MID and token each time"),
        }
    }
    let (result, ended) = req.await.expect("join");
    assert!(
        matches!(result, Err(CoapError::Timeout(p)) if p == peer),
        "{result:?}"
    );
    assert!(arrivals[0] - start < Duration::from_millis(5));
    let gaps: Vec<Duration> = arrivals.windows(2).map(|w| w[1] - w[0]).collect();
    let initial = gaps[0];
    // RFC 7252 §4.8: [ACK_TIMEOUT, ACK_TIMEOUT × ACK_RANDOM_FACTOR). Tokio's timer rounds a
    // deadline up to the next millisecond, so a draw just below 3 s can fire at 3.000 s.
    assert!(
        initial >= Duration::from_secs(2) && initial <= Duration::from_millis(3_001),
        "{gaps:?}"
    );
    for (i, g) in gaps.iter().enumerate() {
        assert!(
            close_scaled(*g, initial * (1 << i), i as u32),
            "gap {i} doubles: {gaps:?}"
        );
    }
    assert!(
        close_scaled(ended - arrivals[4], initial * 16, 4),
        "gives up one doubled timeout after the last"
    );
    let mut extra = [0u8; 64];
    let more = tokio::time::timeout(Duration::from_secs(300), silent.recv_from(&mut extra)).await;
    assert!(more.is_err(), "no transmission after giving up");
}
