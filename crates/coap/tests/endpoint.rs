//! Endpoint lifecycle: binding (errors, dual stack, readiness) and the endpoint acting as a
//! client over its own socket.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::{Harness, SENML_JSON, StoreMode, coap_client, parse};
use tokio::net::UdpSocket;
use wardgate_coap::config::CoapConfig;
use wardgate_coap::{ClientRequest, CoapEndpoint, CoapError, CoapMetrics, Code, EndpointDeps};
use wardgate_core::health::ComponentKind;
use wardgate_core::payload::Limits;
use wardgate_core::{AllowAll, Bus, Health, IngestPipeline, SystemClock};

#[tokio::test]
async fn bind_failure_names_the_address() {
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let (bus, _rx) = Bus::new(1);
    let health = Health::new();
    let cfg = CoapConfig {
        listen: vec![addr],
        ..CoapConfig::default()
    };
    let err = CoapEndpoint::bind(
        cfg,
        EndpointDeps {
            pipeline: IngestPipeline::new(
                "g",
                bus,
                Arc::new(SystemClock),
                Arc::new(AllowAll),
                Limits::default(),
            ),
            metrics: CoapMetrics::default(),
            health: health.reporter("coap", ComponentKind::Listener),
        },
    )
    .await
    .expect_err("port is taken");
    assert!(
        matches!(err, CoapError::Bind { addr: a, .. } if a == addr),
        "{err:?}"
    );
    assert!(err.to_string().contains(&addr.to_string()));
    assert!(!health.readiness().checks["coap"].ready);
}

#[tokio::test]
async fn endpoint_serves_ipv4_and_ipv6_sockets_and_reports_them_ready() {
    let h = Harness::start_with(StoreMode::Ok, |c| {
        c.listen = vec![
            SocketAddr::from(([127, 0, 0, 1], 0)),
            "[::1]:0".parse().expect("v6"),
        ];
    })
    .await;
    assert_eq!(h.addrs.len(), 2);
    let v6 = h.addrs[1];
    assert!(v6.is_ipv6());
    let check = &h.health.readiness().checks["coap"];
    assert!(check.ready);
    assert_eq!(check.detail, format!("udp {}, udp {}", h.addrs[0], v6));
    let out = coap_client(&[
        "-v",
        "7",
        "-m",
        "post",
        "-t",
        "110",
        "-e",
        &SENML_JSON.replace('%', "%25"),
        &format!("coap://[::1]:{}/v1/readings/bed-v6", v6.port()),
    ])
    .await;
    assert!(
        out.stdout.contains("c:2.01") || out.stderr.contains("c:2.01"),
        "{out:?}"
    );
    assert_eq!(h.readings()[0].device, "bed-v6");
    let health = h.health.clone();
    h.stop().await;
    let check = &health.readiness().checks["coap"];
    assert!(!check.ready);
    assert_eq!(check.detail, "stopped");
}

#[tokio::test]
async fn endpoint_sends_its_own_requests_from_the_listening_socket() {
    let h = Harness::start(StoreMode::Ok).await;
    let device = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let dev_addr = device.local_addr().expect("addr");
    let requester = h.requester.clone();
    let req = tokio::spawn(async move {
        requester
            .request(dev_addr, ClientRequest::get("3/0/0").accept(0))
            .await
    });
    let mut buf = [0u8; 512];
    let (n, from) = tokio::time::timeout(Duration::from_secs(5), device.recv_from(&mut buf))
        .await
        .expect("request arrives")
        .expect("recv");
    assert_eq!(from, h.addr, "sent from the endpoint's listening socket");
    let p = parse(&buf[..n]);
    assert_eq!(p.header.get_code(), "0.01");
    assert!(p.get_token().len() >= 4, "tokens carry enough randomness");
    // Empty ACK, then a separate CON response: the endpoint ACKs it and completes the request.
    let mid = p.header.message_id.to_be_bytes();
    device
        .send_to(&[0x60, 0x00, mid[0], mid[1]], from)
        .await
        .expect("send");
    let tok = p.get_token().to_vec();
    let mut resp = vec![0x40 | tok.len() as u8, 0x45, 0x77, 0x01];
    resp.extend_from_slice(&tok);
    resp.extend_from_slice(b"\xffAcme");
    device.send_to(&resp, from).await.expect("send");
    let (n, _) = device.recv_from(&mut buf).await.expect("ACK");
    assert_eq!(&buf[..n], &[0x60, 0x00, 0x77, 0x01]);
    let r = req.await.expect("join").expect("response");
    assert_eq!(r.code(), Code::CONTENT);
    assert_eq!(r.payload(), b"Acme");
    h.stop().await;
}

#[test]
fn public_futures_are_send() {
    fn send<T: Send>(_: &T) {}
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let h = Harness::start(StoreMode::Ok).await;
        let c = wardgate_coap::CoapClient::bind(
            "127.0.0.1:0".parse().expect("addr"),
            Default::default(),
        )
        .await
        .expect("client");
        let f = c.request(h.addr, ClientRequest::get(".well-known/core"));
        send(&f);
        let r = f.await.expect("response");
        assert_eq!(r.code(), Code::CONTENT);
        h.stop().await;
    });
}
