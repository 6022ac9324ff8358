//! The message layer over real UDP: deduplication, separate responses, error answers and
//! silence for malformed input, graceful shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Harness, Raw, Req, SENML_JSON, StoreMode, code_of, mtype_of, parse, uint};

const QUIET: Duration = Duration::from_millis(300);

fn senml() -> Vec<u8> {
    SENML_JSON.as_bytes().to_vec()
}

#[tokio::test]
async fn duplicate_con_gets_the_identical_response_and_stores_one_reading() {
    let h = Harness::start(StoreMode::Ok).await;
    let raw = Raw::new(h.addr).await;
    let req = Req::post(0x1001, "v1/readings/bed-7", Some(110), &senml()).bytes();
    raw.send(&req).await;
    let first = raw.recv().await;
    raw.send(&req).await;
    let second = raw.recv().await;
    assert_eq!(
        first, second,
        "the duplicate is answered with the same bytes"
    );
    let p = parse(&first);
    assert_eq!(code_of(&p), "2.01");
    assert_eq!(mtype_of(&first), 2, "piggybacked in the ACK");
    assert_eq!(p.header.message_id, 0x1001);
    assert_eq!(p.get_token(), &[0xde, 0xad, 0x10, 0x01]);
    assert_eq!(h.readings().len(), 1, "one reading for two copies");
    assert_eq!(h.metric("wardgate_coap_dedup_hits_total"), 1.0);
    assert_eq!(h.metric("wardgate_coap_dedup_entries"), 1.0);
    h.stop().await;
}

#[tokio::test]
async fn slow_store_gets_an_empty_ack_then_a_confirmable_separate_response() {
    // The store delay only has to outlast the two exchanges before the separate response.
    let h = Harness::start_with(StoreMode::Delay(Duration::from_millis(1500)), |c| {
        c.piggyback_budget = Duration::from_millis(50);
    })
    .await;
    let raw = Raw::new(h.addr).await;
    let req = Req::post(0x2002, "v1/readings/bed-8", Some(110), &senml()).bytes();
    raw.send(&req).await;
    let ack = raw.recv().await;
    assert_eq!(
        ack,
        vec![0x60, 0x00, 0x20, 0x02],
        "empty ACK with the request's MID"
    );
    // A retransmission of the request while the reading is being stored gets the empty ACK again.
    raw.send(&req).await;
    assert_eq!(raw.recv().await, ack);
    assert!(h.readings().is_empty(), "no answer before durability");
    let sep = raw.recv().await;
    let p = parse(&sep);
    assert_eq!(mtype_of(&sep), 0, "separate response is Confirmable");
    assert_eq!(code_of(&p), "2.01");
    assert_eq!(p.get_token(), &[0xde, 0xad, 0x20, 0x02], "token echoed");
    assert_ne!(p.header.message_id, 0x2002, "a new MID");
    assert_eq!(h.readings().len(), 1);
    // Acknowledge it; no retransmission follows.
    let mid = p.header.message_id.to_be_bytes();
    raw.send(&[0x60, 0x00, mid[0], mid[1]]).await;
    assert_eq!(raw.recv_within(Duration::from_millis(3500)).await, None);
    assert_eq!(h.metric("wardgate_coap_retransmissions_total"), 0.0);
    h.stop().await;
}

#[tokio::test]
async fn unacknowledged_separate_response_is_retransmitted() {
    let h = Harness::start_with(StoreMode::Delay(Duration::from_millis(200)), |c| {
        c.piggyback_budget = Duration::from_millis(20);
        c.transmission.ack_timeout = Duration::from_millis(100);
        c.transmission.max_retransmit = 2;
    })
    .await;
    let raw = Raw::new(h.addr).await;
    raw.send(&Req::post(0x3003, "v1/readings/bed-9", Some(110), &senml()).bytes())
        .await;
    assert_eq!(raw.recv().await.len(), 4, "empty ACK");
    let first = raw.recv().await;
    let again = raw.recv().await;
    let third = raw.recv().await;
    assert_eq!(first, again, "a retransmission is the same message");
    assert_eq!(first, third);
    assert_eq!(
        raw.recv_within(Duration::from_secs(1)).await,
        None,
        "given up after MAX_RETRANSMIT"
    );
    assert_eq!(h.metric("wardgate_coap_retransmissions_total"), 2.0);
    assert_eq!(h.metric("wardgate_coap_transmission_timeouts_total"), 1.0);
    h.stop().await;
}

#[tokio::test]
async fn non_request_gets_a_non_response_and_duplicates_are_ignored() {
    let h = Harness::start(StoreMode::Ok).await;
    let raw = Raw::new(h.addr).await;
    let mut req = Req::post(0x4004, "v1/readings/bed-10", Some(110), &senml());
    req.con = false;
    raw.send(&req.bytes()).await;
    let resp = raw.recv().await;
    assert_eq!(mtype_of(&resp), 1, "NON response");
    assert_eq!(code_of(&parse(&resp)), "2.01");
    raw.send(&req.bytes()).await;
    assert_eq!(raw.recv_within(QUIET).await, None, "duplicate NON ignored");
    assert_eq!(h.readings().len(), 1);
    h.stop().await;
}

async fn expect_code(raw: &Raw, req: &[u8], code: &str) -> coap_lite::Packet {
    raw.send(req).await;
    let resp = raw.recv().await;
    let p = parse(&resp);
    assert_eq!(code_of(&p), code, "response to {req:02x?}");
    p
}

async fn expect_rst(raw: &Raw, req: &[u8], mid: u16) {
    raw.send(req).await;
    let m = mid.to_be_bytes();
    assert_eq!(
        raw.recv().await,
        vec![0x70, 0x00, m[0], m[1]],
        "RST for {req:02x?}"
    );
}

async fn expect_silence(raw: &Raw, req: &[u8]) {
    raw.send(req).await;
    assert_eq!(raw.recv_within(QUIET).await, None, "silence for {req:02x?}");
}

#[tokio::test]
async fn hostile_and_wrong_requests_get_the_rfc_answer_and_the_endpoint_keeps_serving() {
    let h = Harness::start_with(StoreMode::Ok, |c| {
        c.max_datagram_bytes = 512;
        c.block.max_body_bytes = 4096;
    })
    .await;
    let raw = Raw::new(h.addr).await;

    // Truncated header, bad version: silently ignored.
    expect_silence(&raw, &[0x40, 0x02]).await;
    expect_silence(&raw, &[0x80, 0x02, 0x00, 0x01]).await;
    // ACK / RST with content: ignored.
    expect_silence(&raw, &[0x60, 0x01, 0x00, 0x02]).await;
    expect_silence(&raw, &[0x70, 0x45, 0x00, 0x03, 0xff, 0x01]).await;
    // An unmatched empty ACK and RST: ignored.
    expect_silence(&raw, &[0x60, 0x00, 0x00, 0x04]).await;
    // Token length 9: the header is readable, so the CON is rejected with RST.
    let mut tkl9 = vec![0x49, 0x02, 0x00, 0x05];
    tkl9.extend_from_slice(&[0; 9]);
    expect_rst(&raw, &tkl9, 5).await;
    // A NON with the same defect: silence.
    let mut tkl9_non = vec![0x59, 0x02, 0x00, 0x06];
    tkl9_non.extend_from_slice(&[0; 9]);
    expect_silence(&raw, &tkl9_non).await;
    // Truncated option and a payload marker without payload in a CON: RST.
    expect_rst(&raw, &[0x40, 0x02, 0x00, 0x07, 0xbd], 7).await;
    expect_rst(&raw, &[0x40, 0x02, 0x00, 0x08, 0xff], 8).await;
    // CoAP ping: RST.
    expect_rst(&raw, &[0x40, 0x00, 0x00, 0x09], 9).await;

    // Unknown critical option 2049 (odd): CON 4.02, NON nothing.
    let mut r = Req::post(10, "v1/readings/bed-1", Some(110), &senml());
    r.options.push((2049, b"x".to_vec()));
    expect_code(&raw, &r.bytes(), "4.02").await;
    r.con = false;
    r.mid = 11;
    expect_silence(&raw, &r.bytes()).await;
    // An unknown elective option is ignored.
    let mut r = Req::post(12, "v1/readings/bed-1", Some(110), &senml());
    r.options.push((2048, b"x".to_vec()));
    expect_code(&raw, &r.bytes(), "2.01").await;

    // Wrong method, unknown path, bad device id, bad class, formats.
    let mut get = Req::post(13, "v1/readings/bed-1", None, b"");
    get.code = 0x01;
    expect_code(&raw, &get.bytes(), "4.05").await;
    expect_code(
        &raw,
        &Req::post(14, "v2/other", Some(110), &senml()).bytes(),
        "4.04",
    )
    .await;
    expect_code(
        &raw,
        &Req::post(15, "v1/readings/bed%201", Some(110), &senml()).bytes(),
        "4.00",
    )
    .await;
    let long = format!("v1/readings/{}", "a".repeat(129));
    expect_code(
        &raw,
        &Req::post(16, &long, Some(110), &senml()).bytes(),
        "4.00",
    )
    .await;
    let mut bad_class = Req::post(17, "v1/readings/bed-1", Some(110), &senml());
    bad_class.options.push((15, b"class=urgent".to_vec()));
    expect_code(&raw, &bad_class.bytes(), "4.00").await;
    let unsupported = expect_code(
        &raw,
        &Req::post(18, "v1/readings/bed-1", Some(42), b"x").bytes(),
        "4.15",
    )
    .await;
    assert!(!unsupported.payload.is_empty(), "diagnostic payload");
    expect_code(
        &raw,
        &Req::post(19, "v1/readings/bed-1", None, &senml()).bytes(),
        "4.15",
    )
    .await;
    // Undecodable payload: 4.00 with a diagnostic.
    expect_code(
        &raw,
        &Req::post(20, "v1/readings/bed-1", Some(110), b"[{\"v\":").bytes(),
        "4.00",
    )
    .await;
    // Oversized datagram (> max_datagram_bytes): 4.13 with Size1.
    let big = Req::post(21, "v1/readings/bed-1", Some(110), &vec![b' '; 1000]).bytes();
    let p = expect_code(&raw, &big, "4.13").await;
    let size1 = p
        .get_first_option(coap_lite::CoapOption::Size1)
        .expect("Size1");
    assert_eq!(size1, &uint(4096));
    // Declared Size1 beyond the limit: 4.13.
    let mut sized = Req::post(22, "v1/readings/bed-1", Some(110), &senml());
    sized.options.push((60, uint(1 << 20)));
    expect_code(&raw, &sized.bytes(), "4.13").await;
    // Proxy-Uri: 5.05.
    let mut proxy = Req::post(23, "", Some(110), &senml());
    proxy.options.push((35, b"coap://elsewhere/".to_vec()));
    expect_code(&raw, &proxy.bytes(), "5.05").await;
    // Arbitrary junk.
    expect_silence(&raw, &[0x55; 40]).await;

    assert!(h.metric("wardgate_coap_malformed_messages_total{reason=\"bad_token_length\"}") >= 2.0);
    assert_eq!(
        h.metric("wardgate_coap_malformed_messages_total{reason=\"bad_version\"}"),
        1.0
    );
    assert_eq!(
        h.metric("wardgate_coap_malformed_messages_total{reason=\"oversized\"}"),
        1.0
    );
    assert_eq!(
        h.metric("wardgate_coap_payload_errors_total{reason=\"malformed\"}"),
        1.0
    );
    assert_eq!(
        h.metric("wardgate_coap_responses_sent_total{code=\"4.15\"}"),
        2.0
    );

    // Still serving.
    let ok = expect_code(
        &raw,
        &Req::post(99, "v1/readings/bed-1", Some(110), &senml()).bytes(),
        "2.01",
    )
    .await;
    let loc: Vec<String> = ok
        .get_option(coap_lite::CoapOption::LocationPath)
        .expect("Location-Path")
        .iter()
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    assert_eq!(loc[..3], ["v1", "readings", "bed-1"]);
    assert_eq!(loc.len(), 4, "ends with the reading id");
    assert_eq!(h.readings().len(), 2);
    h.stop().await;
}

#[tokio::test]
async fn full_store_is_answered_503_with_max_age() {
    let h = Harness::start_with(StoreMode::Full, |c| c.busy_max_age = Duration::from_secs(7)).await;
    let raw = Raw::new(h.addr).await;
    let p = expect_code(
        &raw,
        &Req::post(1, "v1/readings/bed-1", Some(110), &senml()).bytes(),
        "5.03",
    )
    .await;
    let max_age = p
        .get_first_option(coap_lite::CoapOption::MaxAge)
        .expect("Max-Age");
    assert_eq!(max_age, &uint(7));
    assert!(h.readings().is_empty());
    h.stop().await;
}

#[tokio::test]
async fn shutdown_answers_in_flight_requests_and_refuses_new_ones_with_503() {
    let h = Harness::start_with(StoreMode::Delay(Duration::from_millis(2000)), |c| {
        c.piggyback_budget = Duration::from_millis(50);
    })
    .await;
    let raw = Raw::new(h.addr).await;
    raw.send(&Req::post(0x5005, "v1/readings/bed-1", Some(110), &senml()).bytes())
        .await;
    assert_eq!(raw.recv().await.len(), 4, "empty ACK");
    assert!(h.health.readiness().checks["coap"].ready);
    h.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let p = expect_code(
        &raw,
        &Req::post(0x5006, "v1/readings/bed-2", Some(110), &senml()).bytes(),
        "5.03",
    )
    .await;
    assert!(p.get_first_option(coap_lite::CoapOption::MaxAge).is_some());
    // The in-flight request is still answered, after its reading is durable.
    let sep = raw.recv().await;
    let sp = parse(&sep);
    assert_eq!(code_of(&sp), "2.01");
    let mid = sp.header.message_id.to_be_bytes();
    raw.send(&[0x60, 0x00, mid[0], mid[1]]).await;
    assert_eq!(h.readings().len(), 1);
    assert_eq!(h.readings()[0].device, "bed-1");
    h.stop().await;
}
