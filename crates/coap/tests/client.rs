//! wardgate's own CoAP client: against the endpoint (piggybacked and separate responses,
//! block-wise both ways), against libcoap's server, and NSTART.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use common::{Harness, SENML_JSON, StoreMode, parse};
use tokio::net::UdpSocket;
use wardgate_coap::config::TransmissionConfig;
use wardgate_coap::{ClientRequest, CoapClient, Code};

async fn client() -> CoapClient {
    CoapClient::bind(
        "127.0.0.1:0".parse().expect("addr"),
        TransmissionConfig::default(),
    )
    .await
    .expect("client")
}

#[tokio::test]
async fn client_posts_a_reading_and_gets_its_location() {
    let h = Harness::start(StoreMode::Ok).await;
    let c = client().await;
    let resp = c
        .request(
            h.addr,
            ClientRequest::post("v1/readings/bed-20")
                .content_format(110)
                .query("class=alarm")
                .payload(SENML_JSON),
        )
        .await
        .expect("response");
    assert_eq!(resp.code(), Code::CREATED);
    let r = h.readings();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].class, wardgate_core::MessageClass::Alarm);
    assert_eq!(
        resp.location_path(),
        vec![
            "v1".to_string(),
            "readings".into(),
            "bed-20".into(),
            r[0].id.to_string()
        ]
    );
    h.stop().await;
}

#[tokio::test]
async fn client_waits_for_a_separate_response() {
    let h = Harness::start_with(StoreMode::Delay(Duration::from_millis(700)), |c| {
        c.piggyback_budget = Duration::from_millis(50);
    })
    .await;
    let c = client().await;
    let resp = c
        .request(
            h.addr,
            ClientRequest::put("v1/readings/bed-21")
                .content_format(110)
                .payload(SENML_JSON),
        )
        .await
        .expect("response");
    assert_eq!(resp.code(), Code::CHANGED);
    assert_eq!(h.metric("wardgate_coap_separate_responses_total"), 1.0);
    h.stop().await;
}

fn big_senml(records: usize) -> String {
    let items: Vec<String> = (0..records)
        .map(|i| format!(r#"{{"n":"ch{i}","u":"mV","v":{i}.5}}"#))
        .collect();
    format!("[{}]", items.join(","))
}

#[tokio::test]
async fn client_sends_a_large_body_block_wise_and_reads_blocks_back() {
    let h = Harness::start_with(StoreMode::Ok, |c| c.block.preferred_block_size = 32).await;
    let c = client().await;
    let body = big_senml(120);
    assert!(body.len() > 2500);
    let resp = c
        .request(
            h.addr,
            ClientRequest::post("v1/readings/ecg-1")
                .content_format(110)
                .block_size(128)
                .payload(body),
        )
        .await
        .expect("response");
    assert_eq!(resp.code(), Code::CREATED, "{resp:?}");
    // The endpoint asked for 32-byte blocks in its first 2.31; the client adapted.
    let r = h.readings();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].records.len(), 120);
    assert_eq!(r[0].records[119].v, Some(119.5));
    let full = c
        .request(h.addr, ClientRequest::get(".well-known/core"))
        .await
        .expect("response");
    let blocks = c
        .request(
            h.addr,
            ClientRequest::get(".well-known/core").block_size(16),
        )
        .await
        .expect("response");
    assert_eq!(full.code(), Code::CONTENT);
    assert_eq!(blocks.payload(), full.payload());
    assert_eq!(blocks.content_format(), Some(40));
    h.stop().await;
}

#[tokio::test]
async fn client_interoperates_with_libcoap_server_block_wise() {
    let port = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        s.local_addr().expect("addr").port()
    };
    let _server = tokio::process::Command::new("coap-server-notls")
        .args(["-A", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("coap-server-notls");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let server: SocketAddr = ([127, 0, 0, 1], port).into();
    let c = client().await;
    let body: Vec<u8> = (0..2000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let put = c
        .request(
            server,
            ClientRequest::put("example_data")
                .content_format(0)
                .block_size(64)
                .payload(body.clone()),
        )
        .await
        .expect("PUT");
    assert!(put.is_success(), "{put:?}");
    let got = c
        .request(server, ClientRequest::get("example_data").block_size(64))
        .await
        .expect("GET");
    assert_eq!(got.code(), Code::CONTENT);
    assert_eq!(got.payload(), body.as_slice());
}

#[tokio::test]
async fn client_keeps_one_confirmable_request_outstanding_per_peer() {
    let peer_sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let peer = peer_sock.local_addr().expect("addr");
    let c = client().await;
    let r = c.requester();
    let a = tokio::spawn({
        let r = r.clone();
        async move { r.request(peer, ClientRequest::get("a")).await }
    });
    let b = tokio::spawn(async move { r.request(peer, ClientRequest::get("b")).await });
    let mut buf = [0u8; 256];
    let (n, from) = peer_sock.recv_from(&mut buf).await.expect("first");
    let first = parse(&buf[..n]);
    // NSTART = 1: the second request waits for the first exchange.
    let mut other = [0u8; 256];
    let quiet =
        tokio::time::timeout(Duration::from_millis(300), peer_sock.recv_from(&mut other)).await;
    assert!(
        quiet.is_err(),
        "second request sent while the first is outstanding"
    );
    // Piggybacked 2.05 for the first.
    let tok = first.get_token().to_vec();
    let mut resp = vec![0x60 | tok.len() as u8, 0x45];
    resp.extend_from_slice(&first.header.message_id.to_be_bytes());
    resp.extend_from_slice(&tok);
    resp.extend_from_slice(b"\xffone");
    peer_sock.send_to(&resp, from).await.expect("send");
    let (n, _) = peer_sock.recv_from(&mut buf).await.expect("second");
    let second = parse(&buf[..n]);
    assert_ne!(second.header.message_id, first.header.message_id);
    assert_ne!(second.get_token(), first.get_token());
    let tok = second.get_token().to_vec();
    let mut resp = vec![0x60 | tok.len() as u8, 0x45];
    resp.extend_from_slice(&second.header.message_id.to_be_bytes());
    resp.extend_from_slice(&tok);
    resp.extend_from_slice(b"\xfftwo");
    peer_sock.send_to(&resp, from).await.expect("send");
    let mut answers = vec![
        a.await.expect("join").expect("a").payload().to_vec(),
        b.await.expect("join").expect("b").payload().to_vec(),
    ];
    answers.sort();
    assert_eq!(answers, vec![b"one".to_vec(), b"two".to_vec()]);
}
