//! Issue 10 item 4 for plain CoAP: one source (IPv4 address, IPv6 /64) gets only its share of
//! every per-peer table (Block1 reassemblies, kept Block2 responses, deduplication), a full table
//! makes room instead of refusing everybody, the tables never exceed their bounds, and requests
//! are rate-limited per source and per claimed device id. Floods come from many ports of
//! 127.0.0.1 or from many loopback addresses; the legitimate device is a real libcoap client on
//! 127.0.0.2.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use common::{Harness, Options, Req, SENML_JSON, StoreMode, coap_client, code_of, parse, uint};
use tokio::net::UdpSocket;
use wardgate_coap::layer::Response;
use wardgate_coap::{Code, Registration, Reply, Request, Resource};
use wardgate_testkit::PATIENCE;

/// Block1 option number.
const BLOCK1: u16 = 27;

/// The first 16-byte block (NUM 0, M=1, SZX 0) of a longer body for `device`.
fn first_block(mid: u16, device: &str) -> Vec<u8> {
    let mut r = Req::post(
        mid,
        &format!("v1/readings/{device}"),
        Some(110),
        &[b' '; 16],
    );
    r.options.push((BLOCK1, uint(0x08)));
    r.bytes()
}

/// Sends `bytes` from `sock` and waits (bounded) for the answer's bytes.
async fn ask_raw(sock: &UdpSocket, server: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    sock.send_to(bytes, server).await.expect("send");
    let mut buf = vec![0u8; 2048];
    let (n, _) = tokio::time::timeout(PATIENCE, sock.recv_from(&mut buf))
        .await
        .expect("an answer in time")
        .expect("recv");
    buf.truncate(n);
    buf
}

/// Sends `bytes` from `sock` and waits (bounded) for the answer.
async fn ask(sock: &UdpSocket, server: SocketAddr, bytes: &[u8]) -> coap_lite::Packet {
    parse(&ask_raw(sock, server, bytes).await)
}

async fn bind(ip: Ipv4Addr) -> UdpSocket {
    UdpSocket::bind(SocketAddr::from((ip, 0)))
        .await
        .unwrap_or_else(|e| panic!("bind {ip}: {e}"))
}

fn max_age(p: &coap_lite::Packet) -> Option<u32> {
    p.get_option(coap_lite::CoapOption::MaxAge)
        .and_then(|v| v.front().cloned())
        .map(|v| v.iter().fold(0u32, |a, b| (a << 8) | u32::from(*b)))
}

/// A SenML body of more than 250 bytes: libcoap sends it in 16-byte blocks with `-b 16`.
fn large_body() -> String {
    let mut body = String::from("[");
    for i in 0..8 {
        if i > 0 {
            body.push(',');
        }
        // `%25` is libcoap's `-e` escape for `%`.
        body.push_str(&format!(r#"{{"n":"sensor-{i}/spo2","u":"%25","v":9{i}}}"#));
    }
    body.push(']');
    body
}

/// libcoap uploads `large_body()` for `device` from 127.0.0.2 in 16-byte blocks.
async fn legitimate_block_upload(h: &Harness, device: &str) {
    let out = coap_client(&[
        "-a",
        "127.0.0.2",
        "-b",
        "16",
        "-m",
        "post",
        "-t",
        "110",
        "-e",
        &large_body(),
        &h.uri(&format!("/v1/readings/{device}")),
    ])
    .await;
    assert!(out.ok, "the device's block upload succeeds: {out:?}");
    let stored = h.readings();
    let mine: Vec<_> = stored.iter().filter(|r| r.device == device).collect();
    assert_eq!(mine.len(), 1, "one reading for the whole body");
    assert_eq!(mine[0].records.len(), 8);
}

#[tokio::test]
async fn a_thousand_transfers_from_one_host_get_503_beyond_its_share_and_a_device_on_another_host_still_uploads()
 {
    let h = Harness::start(StoreMode::Ok).await;
    let mut socks = Vec::new();
    let (mut continued, mut refused) = (0, 0);
    for i in 0..1000u16 {
        let sock = bind(Ipv4Addr::LOCALHOST).await;
        let resp = ask(&sock, h.addr, &first_block(i, "flood")).await;
        match code_of(&resp).as_str() {
            "2.31" => continued += 1,
            "5.03" => {
                refused += 1;
                assert!(max_age(&resp).is_some_and(|a| a >= 1), "{resp:?}");
            }
            other => panic!("unexpected {other}: {resp:?}"),
        }
        // Kept open so every transfer has its own source port.
        socks.push(sock);
    }
    assert_eq!(
        (continued, refused),
        (8, 992),
        "the host holds its share of 8"
    );
    legitimate_block_upload(&h, "bed-3").await;
    assert_eq!(
        h.metric("wardgate_coap_block_transfers_total{outcome=\"source_share\"}"),
        992.0
    );
    assert_eq!(
        h.metric("wardgate_coap_block_transfers_total{outcome=\"completed\"}"),
        1.0
    );
    assert_eq!(h.metric("wardgate_coap_block_transfers_open"), 8.0);
    h.stop().await;
}

#[tokio::test]
async fn a_thousand_transfers_from_two_hundred_hosts_are_evicted_oldest_first_and_a_device_still_uploads()
 {
    let h = Harness::start(StoreMode::Ok).await;
    let mut socks = Vec::new();
    let mut mid = 0u16;
    for host in 0..200u8 {
        let ip = Ipv4Addr::new(127, 1, host / 100, host % 100 + 1);
        for _ in 0..5 {
            let sock = bind(ip).await;
            mid += 1;
            let resp = ask(&sock, h.addr, &first_block(mid, "flood")).await;
            assert_eq!(code_of(&resp), "2.31", "5 per host is within the share");
            assert!(h.metric("wardgate_coap_block_transfers_open") <= 256.0);
            socks.push(sock);
        }
    }
    assert_eq!(h.metric("wardgate_coap_block_transfers_open"), 256.0);
    assert_eq!(
        h.metric("wardgate_coap_evictions_total{table=\"block1\",reason=\"table_full\"}"),
        744.0
    );
    legitimate_block_upload(&h, "bed-4").await;
    assert!(h.metric("wardgate_coap_block_transfers_open") <= 256.0);
    assert_eq!(
        h.metric("wardgate_coap_block_transfers_total{outcome=\"completed\"}"),
        1.0
    );
    h.stop().await;
}

/// Sends a CON request and returns the answer's code.
async fn post_code(h: &Harness, sock: &UdpSocket, mid: u16, device: &str) -> coap_lite::Packet {
    let req = Req::post(
        mid,
        &format!("v1/readings/{device}"),
        Some(110),
        SENML_JSON.as_bytes(),
    );
    ask(sock, h.addr, &req.bytes()).await
}

/// A CoAP ping (empty CON): answered with RST by the message layer, never rate-limited. The first
/// datagram after a request that should go unanswered must be this RST.
async fn ping_is_next_answer(h: &Harness, sock: &UdpSocket, mid: u16) {
    let mut ping = vec![0x40, 0x00];
    ping.extend_from_slice(&mid.to_be_bytes());
    let resp = ask(sock, h.addr, &ping).await;
    assert_eq!(
        (resp.header.get_type(), resp.header.message_id),
        (coap_lite::MessageType::Reset, mid),
        "nothing came before the ping's RST: {resp:?}"
    );
}

#[tokio::test]
async fn a_source_over_its_burst_gets_503_with_max_age_and_another_source_is_unaffected() {
    let h = Harness::start_with(StoreMode::Ok, |c| {
        // One token a hundred seconds: nothing refills while the test runs.
        c.rate_limit.per_source_rate = 0.01;
        c.rate_limit.per_source_burst = 3;
    })
    .await;
    let a = bind(Ipv4Addr::new(127, 0, 0, 2)).await;
    for mid in 1..=3 {
        assert_eq!(code_of(&post_code(&h, &a, mid, "bed-1").await), "2.01");
    }
    let over = post_code(&h, &a, 4, "bed-1").await;
    assert_eq!(code_of(&over), "5.03");
    assert!(
        max_age(&over).is_some_and(|s| (1..=100).contains(&s)),
        "{over:?}"
    );
    // Another port of the same host is the same source.
    let a2 = bind(Ipv4Addr::new(127, 0, 0, 2)).await;
    assert_eq!(code_of(&post_code(&h, &a2, 5, "bed-1").await), "5.03");
    // A Non-confirmable request over the limit gets nothing.
    let mut non = Req::post(6, "v1/readings/bed-1", Some(110), SENML_JSON.as_bytes());
    non.con = false;
    a.send_to(&non.bytes(), h.addr).await.expect("send");
    ping_is_next_answer(&h, &a, 7).await;
    let b = bind(Ipv4Addr::new(127, 0, 0, 3)).await;
    assert_eq!(code_of(&post_code(&h, &b, 1, "bed-2").await), "2.01");
    assert_eq!(
        h.metric("wardgate_coap_rate_limited_total{scope=\"source\"}"),
        3.0
    );
    assert_eq!(h.readings().len(), 4);
    h.stop().await;
}

#[tokio::test]
async fn a_device_over_its_burst_gets_503_from_any_source_and_other_devices_are_unaffected() {
    let h = Harness::start_with(StoreMode::Ok, |c| {
        c.rate_limit.per_device_rate = 0.01;
        c.rate_limit.per_device_burst = 2;
    })
    .await;
    let s2 = bind(Ipv4Addr::new(127, 0, 0, 2)).await;
    let s3 = bind(Ipv4Addr::new(127, 0, 0, 3)).await;
    let s4 = bind(Ipv4Addr::new(127, 0, 0, 4)).await;
    assert_eq!(code_of(&post_code(&h, &s2, 1, "bed-7").await), "2.01");
    assert_eq!(code_of(&post_code(&h, &s3, 1, "bed-7").await), "2.01");
    let over = post_code(&h, &s4, 1, "bed-7").await;
    assert_eq!(code_of(&over), "5.03");
    assert!(max_age(&over).is_some_and(|s| s >= 1), "{over:?}");
    assert_eq!(code_of(&post_code(&h, &s4, 2, "bed-8").await), "2.01");
    assert_eq!(
        h.metric("wardgate_coap_rate_limited_total{scope=\"device\"}"),
        1.0
    );
    let devices: Vec<_> = h.readings().into_iter().map(|r| r.device).collect();
    assert_eq!(devices, ["bed-7", "bed-7", "bed-8"]);
    h.stop().await;
}

#[tokio::test]
async fn a_flood_from_one_host_does_not_push_out_a_devices_deduplication_entry() {
    let h = Harness::start_with(StoreMode::Ok, |c| {
        c.dedup.max_entries = 64;
        c.dedup.max_entries_per_source = 8;
        // Piggybacked answers only, so the duplicate's answer is the cached response.
        c.piggyback_budget = PATIENCE;
    })
    .await;
    let device = bind(Ipv4Addr::new(127, 0, 0, 2)).await;
    let req = Req::post(7, "v1/readings/bed-5", Some(110), SENML_JSON.as_bytes()).bytes();
    let first = ask_raw(&device, h.addr, &req).await;
    assert_eq!(code_of(&parse(&first)), "2.01");
    let mut mid = 100u16;
    for _ in 0..20 {
        let sock = bind(Ipv4Addr::LOCALHOST).await;
        for _ in 0..10 {
            mid += 1;
            let mut r = Req::post(mid, "x", None, b"");
            r.code = 0x01;
            assert_eq!(code_of(&ask(&sock, h.addr, &r.bytes()).await), "4.04");
            assert!(h.metric("wardgate_coap_dedup_entries") <= 64.0);
        }
    }
    assert_eq!(h.metric("wardgate_coap_dedup_over_share_total"), 192.0);
    assert_eq!(h.metric("wardgate_coap_dedup_evictions_total"), 0.0);
    let again = ask_raw(&device, h.addr, &req).await;
    assert_eq!(again, first, "the retransmission gets the cached answer");
    assert_eq!(h.readings().len(), 1, "and is not stored twice");
    h.stop().await;
}

/// Answers every POST with 200 bytes: more than one 16-byte block, so the router keeps the
/// whole answer for the client's further Block2 requests.
#[derive(Debug)]
struct Big;

impl Resource for Big {
    fn handle(&mut self, _req: &Request<'_, '_>) -> Reply {
        let mut r = Response::new(Code::CHANGED);
        r.payload = bytes::Bytes::from_static(&[b'x'; 200]);
        Reply::Now(r)
    }
}

#[tokio::test]
async fn the_tables_never_exceed_their_configured_sizes_under_a_flood_from_many_hosts() {
    let opts = Options {
        resources: vec![(
            Registration::new("big", &[Code::POST]),
            Arc::new(|| Box::new(Big) as Box<dyn Resource>),
        )],
        ..Options::default()
    };
    let h = Harness::start_opts(
        StoreMode::Ok,
        |c| {
            c.block.max_open_transfers = 16;
            c.block.max_transfers_per_source = 4;
            c.block.preferred_block_size = 16;
            c.dedup.max_entries = 64;
            c.dedup.max_entries_per_source = 8;
        },
        opts,
    )
    .await;
    let mut mid = 0u16;
    for host in 0..40u8 {
        let ip = Ipv4Addr::new(127, 2, 0, host + 1);
        for _ in 0..6 {
            let sock = bind(ip).await;
            for _ in 0..2 {
                mid += 1;
                let code = code_of(&ask(&sock, h.addr, &first_block(mid, "flood")).await);
                assert!(code == "2.31" || code == "5.03", "{code}");
                // A block-wise answer kept for the client's later Block2 requests.
                mid += 1;
                let big = Req::post(mid, "big", None, &[0; 40]);
                assert_eq!(code_of(&ask(&sock, h.addr, &big.bytes()).await), "2.04");
                assert!(h.metric("wardgate_coap_block_transfers_open") <= 16.0);
                assert!(h.metric("wardgate_coap_dedup_entries") <= 64.0);
                assert!(h.metric("wardgate_coap_block2_cached_responses") <= 64.0);
            }
        }
    }
    // Each host could hold 4 transfers (6 ports × 2 tries): the rest of its opens were refused.
    assert!(h.metric("wardgate_coap_block_transfers_total{outcome=\"source_share\"}") > 0.0);
    assert!(
        h.metric("wardgate_coap_evictions_total{table=\"block1\",reason=\"table_full\"}") > 0.0
    );
    assert!(h.metric("wardgate_coap_dedup_evictions_total") > 0.0);
    assert!(h.metric("wardgate_coap_block2_cached_responses") > 0.0);
    assert!(
        h.metric("wardgate_coap_evictions_total{table=\"block2\",reason=\"source_share\"}") > 0.0
    );
    h.stop().await;
}
