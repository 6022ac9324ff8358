//! RFC 7252 §11.3: a peer nothing authenticated never gets back more than 3× the bytes it sent
//! (its address may be spoofed, and we would be flooding someone else), measured from a second
//! loopback address for every kind of answer the router, the readings resource and the message
//! layer give. An authenticated peer gets the whole answer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Harness, Options, Req, StoreMode, code_of, parse};
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

/// Everything that reaches `sock` within `quiet` of the last datagram: (bytes, datagrams).
async fn drain(sock: &UdpSocket, quiet: Duration) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 2048];
    while let Ok(Ok((n, _))) = tokio::time::timeout(quiet, sock.recv_from(&mut buf)).await {
        got.push(buf[..n].to_vec());
    }
    got
}

/// Answers every Confirmable request arriving at `sock` with a piggybacked 2.05 (same MID and
/// token), for as long as `n` requests; returns how many it answered.
async fn answer(sock: &UdpSocket, n: usize) -> usize {
    let mut buf = vec![0u8; 2048];
    let mut answered = 0;
    while answered < n {
        let Ok(Ok((len, from))) =
            tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf)).await
        else {
            break;
        };
        let req = parse(&buf[..len]);
        let mut ack = coap_lite::Packet::new();
        ack.header.set_type(coap_lite::MessageType::Acknowledgement);
        ack.header.code = coap_lite::MessageClass::Response(coap_lite::ResponseType::Content);
        ack.header.message_id = req.header.message_id;
        ack.set_token(req.get_token().to_vec());
        sock.send_to(&ack.to_bytes().expect("encode"), from)
            .await
            .expect("send");
        answered += 1;
    }
    answered
}

/// RFC 7252 §11.3 for the gateway's own requests: to an address learned from unauthenticated
/// traffic (an LwM2M client's Register over plain UDP may come from a spoofed source), the
/// layer sends — answers, requests and their retransmissions together — at most 3× what came
/// from there, until the address answers one of its requests; then requests flow unlimited.
#[tokio::test]
async fn requests_to_a_learned_address_stay_within_its_budget_until_it_answers() {
    let h = Harness::start_with(StoreMode::Ok, |c| {
        c.transmission.ack_timeout = Duration::from_millis(40);
        c.transmission.max_retransmit = 2;
    })
    .await;
    let victim = UdpSocket::bind("127.0.0.2:0")
        .await
        .expect("bind 127.0.0.2");
    let at = victim.local_addr().expect("addr");
    // What a spoofed Register would be: one request "from" the victim (it never answers; its
    // answer is read here only to know the gateway has taken the request in).
    let register = |mid| Req::post(mid, "v1/readings/bed-1", Some(110), &senml_sized(48)).bytes();
    let talk = |mid| {
        let (victim, to) = (&victim, h.addr);
        async move {
            let bytes = register(mid);
            victim.send_to(&bytes, to).await.expect("send");
            let mut buf = vec![0u8; 2048];
            let (n, _) = victim.recv_from(&mut buf).await.expect("recv");
            assert_eq!(code_of(&parse(&buf[..n])), "2.01");
            (bytes.len(), n)
        }
    };
    let (sent, answered) = talk(7).await;
    fn learned() -> wardgate_coap::ClientRequest {
        let mut r = wardgate_coap::ClientRequest::get("3303/0/5700");
        r.validate_address = true;
        r
    }
    let mut unproven = 0;
    for _ in 0..20 {
        match h.requester.request(at, learned()).await {
            Err(wardgate_coap::CoapError::AddressUnproven(a)) => {
                assert_eq!(a, at);
                unproven += 1;
                break;
            }
            Err(wardgate_coap::CoapError::Timeout(_)) => {}
            other => panic!("nobody answers at {at}: {other:?}"),
        }
    }
    assert_eq!(unproven, 1, "the budget ran out within 20 requests");
    let got = drain(&victim, Duration::from_millis(300)).await;
    let bytes = answered + got.iter().map(Vec::len).sum::<usize>();
    eprintln!(
        "to the victim: {bytes} bytes in {} datagrams for its {sent}",
        got.len() + 1
    );
    assert!(
        bytes <= 3 * sent,
        "{bytes} bytes in {} datagrams sent to the victim for its {sent} ({:.2}×)",
        got.len() + 1,
        bytes as f64 / sent as f64
    );
    assert!(got.len() >= 2, "some requests went: {got:?}");
    assert!(
        h.metric("wardgate_coap_amplification_limited_total{reason=\"request_withheld\"}") >= 1.0
    );

    // The device talks again (more budget), and this time answers: proven, no limit after.
    talk(8).await;
    let first = tokio::spawn({
        let r = h.requester.clone();
        async move { r.request(at, learned()).await }
    });
    assert_eq!(answer(&victim, 1).await, 1);
    first.await.expect("join").expect("answered");
    fn big() -> wardgate_coap::ClientRequest {
        let mut r = learned();
        r.method = wardgate_coap::Code::PUT;
        r.payload = vec![b'x'; 400];
        r
    }
    let requests = tokio::spawn({
        let r = h.requester.clone();
        async move {
            for _ in 0..5 {
                r.request(at, big()).await?;
            }
            Ok::<_, wardgate_coap::CoapError>(())
        }
    });
    assert_eq!(answer(&victim, 5).await, 5);
    requests
        .await
        .expect("join")
        .expect("a proven address gets every request");
    h.stop().await;
}

fn senml_sized(n: usize) -> Vec<u8> {
    let mut v = br#"[{"n":"x","v":1}]"#.to_vec();
    v.resize(n.max(v.len()), b' ');
    v
}
