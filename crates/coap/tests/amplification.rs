//! RFC 7252 §11.3: a peer nothing authenticated never gets back more than 3× the bytes it sent
//! (its address may be spoofed, and we would be flooding someone else), measured from a second
//! loopback address for every kind of answer the router, the readings resource and the message
//! layer give. An authenticated peer gets the whole answer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Harness, Options, Req, StoreMode, parse};
use tokio::net::UdpSocket;
use wardgate_core::{Identity, IdentityKind};

/// Sends `req` from 127.0.0.2 and returns (request bytes, response bytes, response).
async fn exchange(h: &Harness, req: &Req) -> (usize, usize, coap_lite::Packet) {
    let sock = UdpSocket::bind("127.0.0.2:0")
        .await
        .expect("bind 127.0.0.2");
    let bytes = req.bytes();
    sock.send_to(&bytes, h.addr).await.expect("send");
    let mut buf = vec![0u8; 2048];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
        .await
        .expect("an answer within 5 s")
        .expect("recv");
    (bytes.len(), n, parse(&buf[..n]))
}

fn get(mid: u16, path: &str) -> Req {
    let mut r = Req::post(mid, path, None, b"");
    r.code = 0x01;
    r.token.clear();
    r
}

/// Every answer the router and the readings resource give to small requests.
fn probes() -> Vec<(&'static str, Req)> {
    let mut bad_body = Req::post(4, "v1/readings/bed-1", Some(110), b"[");
    bad_body.token.clear();
    let mut wrong_method = get(5, "v1/readings/bed-1");
    wrong_method.code = 0x04; // DELETE
    let mut bad_format = Req::post(6, "v1/readings/bed-1", Some(41), b"x");
    bad_format.token.clear();
    vec![
        ("well-known core", get(1, ".well-known/core")),
        ("unknown path", get(2, "x")),
        ("empty path", get(3, "")),
        ("undecodable body", bad_body),
        ("wrong method", wrong_method),
        ("unsupported format", bad_format),
    ]
}

#[tokio::test]
async fn unauthenticated_peers_never_get_more_than_three_times_their_request() {
    let h = Harness::start(StoreMode::Ok).await;
    for (what, req) in probes() {
        let (sent, got, resp) = exchange(&h, &req).await;
        assert!(
            got <= 3 * sent,
            "{what}: {got} bytes back for {sent} sent ({:.2}×): {resp:?}",
            got as f64 / sent as f64
        );
    }
    h.stop().await;
}

#[tokio::test]
async fn well_known_core_still_arrives_whole_in_budget_sized_blocks() {
    let h = Harness::start(StoreMode::Ok).await;
    let mut doc = Vec::new();
    for num in 0u32..200 {
        let mut req = get(100 + num as u16, ".well-known/core");
        if num > 0 {
            // Block2: NUM, M=0, SZX of the first answer (16-byte blocks here: SZX 0).
            req.options.push((23, common::uint(num << 4)));
        }
        let (sent, got, resp) = exchange(&h, &req).await;
        assert!(got <= 3 * sent, "block {num}: {got} for {sent}");
        doc.extend_from_slice(&resp.payload);
        let more = resp
            .get_option(coap_lite::CoapOption::Block2)
            .and_then(|v| v.front().cloned())
            .map(|v| v.last().is_some_and(|b| b & 0x08 != 0))
            .unwrap_or(false);
        if !more {
            break;
        }
    }
    let text = String::from_utf8(doc).expect("utf-8");
    assert!(
        text.starts_with("</v1/readings>;rt=\"wardgate.readings\"") && text.ends_with('"'),
        "{text}"
    );
    h.stop().await;
}

#[tokio::test]
async fn an_authenticated_peer_gets_the_whole_answer() {
    let opts = Options {
        identity: Some(Identity::new(IdentityKind::PskIdentity, "bed-1")),
        ..Options::default()
    };
    let h = Harness::start_opts(StoreMode::Ok, |_| {}, opts).await;
    let (sent, got, resp) = exchange(&h, &get(1, "x")).await;
    assert_eq!(resp.payload, b"no such resource", "the diagnostic is kept");
    assert!(got > sent);
    let (_, _, resp) = exchange(&h, &get(2, ".well-known/core")).await;
    assert!(resp.payload.starts_with(b"</v1/readings>"));
    h.stop().await;
}

#[tokio::test]
async fn a_message_layer_4_02_to_an_unauthenticated_peer_leaves_out_its_diagnostic() {
    let h = Harness::start(StoreMode::Ok).await;
    // A GET with If-Match (1): critical, and not processed here. 5 bytes.
    let mut req = get(1, "");
    req.options.push((1, Vec::new()));
    let (sent, got, resp) = exchange(&h, &req).await;
    assert_eq!(resp.header.get_code(), "4.02");
    assert!(
        got <= 3 * sent,
        "{got} bytes back for {sent} sent: {resp:?}"
    );
    assert!(resp.payload.is_empty());
    assert_eq!(
        h.metric("wardgate_coap_amplification_limited_total{reason=\"diagnostic_withheld\"}"),
        1.0
    );
    h.stop().await;
}

#[tokio::test]
async fn a_message_layer_4_02_to_an_authenticated_peer_keeps_its_diagnostic() {
    let opts = Options {
        identity: Some(Identity::new(IdentityKind::PskIdentity, "bed-1")),
        ..Options::default()
    };
    let h = Harness::start_opts(StoreMode::Ok, |_| {}, opts).await;
    let mut req = get(1, "");
    req.options.push((1, Vec::new()));
    let (_, _, resp) = exchange(&h, &req).await;
    assert_eq!(resp.header.get_code(), "4.02");
    assert_eq!(resp.payload, b"unrecognized critical option");
    h.stop().await;
}

#[tokio::test]
async fn a_short_datagram_reusing_a_requests_message_id_does_not_get_its_cached_answer() {
    // Piggybacked answers only, so the cached answer is the 2.01 itself.
    let h = Harness::start_with(StoreMode::Ok, |c| {
        c.piggyback_budget = wardgate_testkit::PATIENCE
    })
    .await;
    let sock = UdpSocket::bind("127.0.0.2:0")
        .await
        .expect("bind 127.0.0.2");
    let ask = |bytes: Vec<u8>| {
        let sock = &sock;
        async move {
            sock.send_to(&bytes, h.addr).await.expect("send");
            let mut buf = vec![0u8; 2048];
            let (n, _) = tokio::time::timeout(wardgate_testkit::PATIENCE, sock.recv_from(&mut buf))
                .await
                .expect("an answer in time")
                .expect("recv");
            buf.truncate(n);
            buf
        }
    };
    let post = Req::post(9, "v1/readings/bed-1/t", Some(0), b"1").bytes();
    let created = ask(post.clone()).await;
    assert_eq!(parse(&created).header.get_code(), "2.01");
    assert!(created.len() > 12, "the answer is larger than 3 × 4 bytes");
    // The same Message ID in a bare 4-byte CON POST: a duplicate by (peer, Message ID), but its
    // cached answer is more than 3× its size. Nothing may come back; the ping's RST comes first.
    sock.send_to(&[0x40, 0x02, 0x00, 0x09], h.addr)
        .await
        .expect("send");
    let rst = ask(vec![0x40, 0x00, 0x12, 0x34]).await;
    assert_eq!(
        rst,
        [0x70, 0x00, 0x12, 0x34],
        "nothing before the ping's RST"
    );
    assert_eq!(
        h.metric("wardgate_coap_amplification_limited_total{reason=\"duplicate_not_resent\"}"),
        1.0
    );
    // The real retransmission, as large as the original, gets the cached answer.
    assert_eq!(ask(post).await, created);
    assert_eq!(h.readings().len(), 1);
    h.stop().await;
}
