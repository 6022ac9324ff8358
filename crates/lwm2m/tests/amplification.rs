//! RFC 7252 §11.3 for what the LwM2M server sends on its own initiative. A Register or a
//! Bootstrap-Request over plain UDP may come from a spoofed address; the observations, the
//! Write-Attributes and the bootstrap writes it sets off would then flood whoever owns that
//! address. Measured from a second loopback address that never answers: everything the gateway
//! sends there stays within 3× what was sent from there. A real client (aiocoap) that answers
//! is observed as before, and stays proven across a gateway restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{AioPeer, Gateway, Options};
use tokio::net::UdpSocket;
use wardgate_coap::TransmissionConfig;
use wardgate_lwm2m::{BootstrapConfig, ObserveRule, Settings};

/// A Confirmable POST with Uri-Path `path`, Uri-Query `query` and `payload` (link format).
fn post(mid: u16, path: &str, query: &[&str], payload: &[u8]) -> Vec<u8> {
    let token = [0x5a, 0x5a, (mid >> 8) as u8, mid as u8];
    let mut b = vec![0x44, 0x02];
    b.extend_from_slice(&mid.to_be_bytes());
    b.extend_from_slice(&token);
    let mut last = 0u16;
    let mut opt = |b: &mut Vec<u8>, n: u16, v: &[u8]| {
        let d = n - last;
        last = n;
        assert!(d < 13 && v.len() < 13 + 256);
        if v.len() < 13 {
            b.push(((d as u8) << 4) | v.len() as u8);
        } else {
            b.push(((d as u8) << 4) | 13);
            b.push((v.len() - 13) as u8);
        }
        b.extend_from_slice(v);
    };
    opt(&mut b, 11, path.as_bytes());
    opt(&mut b, 12, &[40]); // Content-Format: application/link-format
    for q in query {
        opt(&mut b, 15, q.as_bytes());
    }
    if !payload.is_empty() {
        b.push(0xff);
        b.extend_from_slice(payload);
    }
    b
}

fn rule(paths: &[&str]) -> ObserveRule {
    ObserveRule {
        endpoint: "*".into(),
        paths: paths.iter().map(|p| p.parse().unwrap()).collect(),
        composite: false,
        attributes: serde_json::from_value(serde_json::json!({"pmin": 1, "pmax": 60})).unwrap(),
        class: wardgate_core::MessageClass::Vital,
    }
}

fn settings() -> Settings {
    let boot: BootstrapConfig = serde_json::from_value(serde_json::json!({
        "endpoint": "boot-*",
        "server_uri": "coap://127.0.0.1:5683",
        "security_mode": "nosec",
        "lifetime": 120,
    }))
    .unwrap();
    Settings {
        observe: vec![
            rule(&["/3303/0/5700"]),
            rule(&["/3/0/9"]),
            rule(&["/3/0/20"]),
        ],
        bootstrap: vec![boot],
        ..Settings::default()
    }
}

/// Fast retransmissions, so the whole give-up sequence fits the test.
fn fast() -> TransmissionConfig {
    TransmissionConfig {
        ack_timeout: Duration::from_millis(50),
        ..TransmissionConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoofed_register_and_bootstrap_request_get_at_most_three_times_their_bytes() {
    let gw = Gateway::start_with(Options {
        settings: settings(),
        transmission: Some(fast()),
        ..Options::default()
    })
    .await;
    let victim = UdpSocket::bind("127.0.0.2:0").await.expect("bind");
    let register = post(
        1,
        "rd",
        &["ep=victim-1", "lt=300", "lwm2m=1.1", "b=U"],
        b"</3303/0>,</3/0>",
    );
    let bootstrap = post(2, "bs", &["ep=boot-1"], b"");
    victim.send_to(&register, gw.addr).await.expect("send");
    victim.send_to(&bootstrap, gw.addr).await.expect("send");
    let sent = register.len() + bootstrap.len();
    // Everything that reaches the victim, until the server has had a request withheld (the
    // budget is spent) and then 3 s more passed without a datagram (any retransmission still
    // running is over by then: they are at most 0.05 × 1.5 × 2⁴ s apart).
    let withheld =
        || gw.metric("wardgate_coap_amplification_limited_total{reason=\"request_withheld\"}");
    let mut got = Vec::new();
    let mut buf = vec![0u8; 2048];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match tokio::time::timeout(Duration::from_secs(3), victim.recv_from(&mut buf)).await {
            Ok(Ok((n, _))) => got.push(buf[..n].to_vec()),
            _ if withheld() >= 1.0 => break,
            _ => {}
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no request was withheld within 60 s ({} datagrams to the victim)",
            got.len()
        );
    }
    let bytes: usize = got.iter().map(Vec::len).sum();
    eprintln!(
        "to the victim: {bytes} bytes in {} datagrams for its {sent}",
        got.len()
    );
    assert!(
        bytes <= 3 * sent,
        "{bytes} bytes in {} datagrams to the victim for its {sent} ({:.2}×)",
        got.len(),
        bytes as f64 / sent as f64
    );
    // The registration was answered and the server did try: requests went within the budget,
    // and the rest were withheld and counted.
    assert!(got.len() >= 3, "{got:?}");
    assert!(gw.server.client("victim-1").is_some());
    let info = gw.server.client("victim-1").unwrap();
    assert!(!info.registration.address_proven);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_answers_is_proven_observed_and_still_proven_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = wardgate_testkit::free_udp_port();
    let opts = || Options {
        settings: settings(),
        transmission: Some(fast()),
        db: Some(dir.path().join("lwm2m.db")),
        port,
        ..Options::default()
    };
    let gw = Gateway::start_with(opts()).await;
    let mut peer = AioPeer::start(gw.addr);
    let senml = br#"[{"bn":"/3303/0/5700","v":36.6}]"#;
    peer.serve("3303/0/5700", "GET", "2.05", Some(110), senml);
    peer.serve("3303/0/5700", "PUT", "2.04", None, b"");
    let r = peer.request(
        "POST",
        "rd",
        &["ep=bed-4", "lt=300", "lwm2m=1.1", "b=U"],
        Some(40),
        b"</3303/0>",
    );
    assert_eq!(r["code"], "2.01", "{r}");
    gw.wait_readings(1, Duration::from_secs(10)).await;
    common::eventually("bed-4 proven", Duration::from_secs(5), || {
        gw.server
            .client("bed-4")
            .filter(|c| c.registration.address_proven)
    })
    .await;
    gw.server.flush();
    gw.stop().await;

    // Restored: proven, so observed again at once, without a message from the client.
    let gw = Gateway::start_with(opts()).await;
    let info = gw.server.client("bed-4").expect("restored");
    assert!(info.registration.address_proven);
    gw.wait_readings(1, Duration::from_secs(10)).await;
    gw.stop().await;
}
