//! CoAP over DTLS against real peers (OpenSSL's `s_client -dtls1_2`, libcoap's
//! `coap-client-openssl`) and a scripted dimpl client for floods and revocation.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Client, Gateway, coap_code, coap_post};
use wardgate_core::AuditKind;
use wardgate_testkit::{ChildGuard, PATIENCE, require_tool};

const KEY: &[u8] = b"secretPSK-bed-12";

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Runs `openssl s_client -dtls1_2` against the gateway with `auth` (the credential and cipher
/// arguments), writes `input` once connected, keeps stdin open (`-ign_eof`) and returns the
/// child so the test decides when it has seen enough.
fn s_client_with(gw: &Gateway, auth: &[&std::ffi::OsStr], input: &[u8]) -> ChildGuard {
    require_tool("/usr/bin/openssl");
    let mut child = Command::new("/usr/bin/openssl")
        .args(["s_client", "-dtls1_2", "-connect", &gw.addr.to_string()])
        .args(auth)
        .args(["-quiet", "-ign_eof"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input).expect("write");
    // Keep stdin open for the life of the child: s_client sends it once the handshake is done.
    std::mem::forget(stdin);
    ChildGuard(child)
}

/// `s_client_with` a PSK over PSK-AES128-CCM8.
fn s_client(gw: &Gateway, identity: &str, key: &[u8], input: &[u8]) -> ChildGuard {
    let key = hex(key);
    let args = [
        "-psk_identity",
        identity,
        "-psk",
        &key,
        "-cipher",
        "PSK-AES128-CCM8",
    ];
    let args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
    s_client_with(gw, &args, input)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_s_client_with_psk_ccm8_posts_a_reading_stored_under_its_identity() {
    let gw = Gateway::start(|_| {}).await;
    gw.keys.set("bed-12", KEY);
    let _client = s_client(&gw, "bed-12", KEY, &coap_post("bed-12", 0x1001, 97.0));
    let readings = gw.wait_for_readings(1).await;
    assert_eq!(readings.len(), 1, "no reading arrived over DTLS");
    let r = &readings[0];
    assert_eq!(r.device, "bed-12");
    let source = r
        .source
        .as_ref()
        .expect("a DTLS reading carries its source");
    let id = source.identity.as_ref().expect("proven identity");
    assert_eq!(id, "psk:bed-12");
    assert_eq!(gw.metric("wardgate_dtls_handshakes_total"), 1.0);
    assert!(
        gw.audit
            .events()
            .iter()
            .any(|e| e.kind == AuditKind::AuthSuccess && e.actor.as_deref() == Some("psk:bed-12"))
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libcoap_coap_client_openssl_posts_over_coaps() {
    require_tool("/usr/bin/coap-client-openssl");
    let gw = Gateway::start(|_| {}).await;
    gw.keys.set("bed-12", KEY);
    let uri = format!("coaps://{}/v1/readings/bed-12", gw.addr);
    let out = tokio::task::spawn_blocking(move || {
        Command::new("coap-client-openssl")
            .args(["-m", "post", "-u", "bed-12", "-k"])
            .arg(std::str::from_utf8(KEY).unwrap())
            .args([
                "-t",
                "110",
                "-e",
                r#"[{"n":"hr","u":"beat/min","v":72}]"#,
                "-B",
                "20",
            ])
            .arg(uri)
            .output()
            .expect("coap-client-openssl")
    })
    .await
    .unwrap();
    let readings = gw.wait_for_readings(1).await;
    assert_eq!(
        readings.len(),
        1,
        "coap-client-openssl: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(readings[0].device, "bed-12");
    assert_eq!(readings[0].records[0].n, "hr");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_fails_the_handshake_is_audited_and_stores_nothing() {
    let gw = Gateway::start(|_| {}).await;
    gw.keys.set("bed-12", KEY);
    let mut c = Client::new("127.0.0.1", gw.addr, "bed-12", b"not-the-right-key").await;
    assert!(!c.handshake(Duration::from_secs(3)).await);
    let deadline = Instant::now() + PATIENCE;
    while gw.metric("wardgate_dtls_handshake_failures_total{reason=\"bad_key\"}") < 1.0 {
        assert!(Instant::now() < deadline, "{}", gw.metrics_text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let events = gw.audit.events();
    let failure = events
        .iter()
        .find(|e| e.kind == AuditKind::AuthFailure)
        .expect("an audited failure");
    assert_eq!(failure.reason, "bad_key");
    assert_eq!(failure.actor.as_deref(), Some("claimed-psk:bed-12"));
    assert!(gw.readings().is_empty());
    assert_eq!(gw.metric("wardgate_dtls_sessions"), 0.0);

    // An identity no device holds is audited as such.
    let mut c = Client::new("127.0.0.1", gw.addr, "bed-99", KEY).await;
    assert!(!c.handshake(Duration::from_secs(3)).await);
    let deadline = Instant::now() + PATIENCE;
    while !gw
        .audit
        .events()
        .iter()
        .any(|e| e.reason == "unknown_identity" && e.actor.as_deref() == Some("claimed-psk:bed-99"))
    {
        assert!(Instant::now() < deadline, "{:?}", gw.audit.events());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gw.stop().await;
}

/// A DTLS 1.2 ClientHello without a cookie, as a flood would send it.
fn bare_client_hello(n: u32) -> Vec<u8> {
    client_hello_with(n, 0xC0A8, &[], 0)
}

/// A DTLS 1.2 ClientHello offering one `suite`, with `cookie` and `message_seq`.
fn client_hello_with(n: u32, suite: u16, cookie: &[u8], seq: u16) -> Vec<u8> {
    let mut body = vec![0xfe, 0xfd];
    body.extend_from_slice(&n.to_be_bytes());
    body.extend((0..28u8).map(|i| i ^ (n as u8)));
    body.push(0); // session id
    body.push(cookie.len() as u8);
    body.extend_from_slice(cookie);
    body.extend_from_slice(&[0, 2]);
    body.extend_from_slice(&suite.to_be_bytes());
    // null compression; extended_master_secret
    body.extend_from_slice(&[1, 0, 0, 4, 0, 0x17, 0, 0]);
    let l = (body.len() as u32).to_be_bytes();
    let s = seq.to_be_bytes();
    let mut hs = vec![1, l[1], l[2], l[3], s[0], s[1], 0, 0, 0, l[1], l[2], l[3]];
    hs.extend_from_slice(&body);
    let mut rec = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, seq as u8];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_without_a_shared_suite_is_audited_only_once_its_address_is_proven() {
    let gw = Gateway::start(|_| {}).await;
    let peer = tokio::net::UdpSocket::bind("127.0.0.7:0").await.unwrap();
    let mut buf = [0u8; 2048];
    // ECDHE_ECDSA only, to a PSK-only listener, without a cookie: a HelloVerifyRequest, no audit.
    peer.send_to(&client_hello_with(1, 0xC02B, &[], 0), gw.addr)
        .await
        .unwrap();
    let (n, _) = tokio::time::timeout(PATIENCE, peer.recv_from(&mut buf))
        .await
        .expect("a HelloVerifyRequest")
        .unwrap();
    let cookie = buf[13 + 12 + 3..n].to_vec();
    assert_eq!(cookie.len(), buf[13 + 12 + 2] as usize);
    assert!(gw.audit.events().is_empty(), "{:?}", gw.audit.events());
    // With the cookie (the address is proven): refused, counted and audited.
    peer.send_to(&client_hello_with(1, 0xC02B, &cookie, 1), gw.addr)
        .await
        .unwrap();
    let deadline = Instant::now() + PATIENCE;
    while !gw
        .audit
        .events()
        .iter()
        .any(|e| e.reason == "no_shared_suite")
    {
        assert!(Instant::now() < deadline, "{}", gw.metrics_text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(gw.metric("wardgate_dtls_sessions"), 0.0);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_hello_flood_from_many_sources_keeps_no_state_and_devices_are_served() {
    let gw = Gateway::start(|_| {}).await;
    gw.keys.set("bed-12", KEY);
    // A device with a session before the flood.
    let mut device = Client::new("127.0.0.1", gw.addr, "bed-12", KEY).await;
    assert!(device.handshake(Duration::from_secs(5)).await);

    // An unauthenticated ClientHello gets a HelloVerifyRequest no larger than itself (RFC 6347
    // §4.2.1; well inside RFC 7252 §11.3's 3x).
    let probe = tokio::net::UdpSocket::bind("127.0.0.5:0").await.unwrap();
    let ch = bare_client_hello(7);
    probe.send_to(&ch, gw.addr).await.unwrap();
    let mut buf = [0u8; 2048];
    let (n, _) = tokio::time::timeout(PATIENCE, probe.recv_from(&mut buf))
        .await
        .expect("a HelloVerifyRequest")
        .unwrap();
    assert_eq!(buf[13], 3, "HelloVerifyRequest");
    assert!(
        n <= ch.len(),
        "HelloVerifyRequest {n} bytes for a {} byte ClientHello",
        ch.len()
    );

    // One source's burst is answered, the rest of what it sends at once is not: 25 ClientHellos
    // back to back from 127.0.0.6 (too few for the kernel to drop any) get 20 answers (plus
    // whatever the 10/s refill adds while they are processed).
    let burst = tokio::net::UdpSocket::bind("127.0.0.6:0").await.unwrap();
    for i in 0..25 {
        burst
            .send_to(&bare_client_hello(900_000 + i), gw.addr)
            .await
            .unwrap();
    }
    let mut answers = 0;
    while let Ok(Ok(_)) =
        tokio::time::timeout(Duration::from_millis(500), burst.recv_from(&mut buf)).await
    {
        answers += 1;
    }
    assert!(
        (20..=22).contains(&answers),
        "{answers} answers to a burst of 25"
    );
    let limited_before_flood =
        gw.metric("wardgate_dtls_handshake_failures_total{reason=\"rate_limited\"}");
    assert!(limited_before_flood >= 3.0, "{}", gw.metrics_text());

    // 20,000 cookie-less ClientHellos from 200 loopback addresses.
    let mut sent = 0usize;
    let mut sent_bytes = 0usize;
    for a in 0..200u32 {
        let s = std::net::UdpSocket::bind(format!("127.1.{}.{}:0", a / 250, 1 + a % 250)).unwrap();
        for i in 0..100u32 {
            let ch = bare_client_hello(a * 1000 + i);
            sent_bytes += s.send_to(&ch, gw.addr).unwrap_or(0);
            sent += 1;
        }
    }
    // The device is served during the flood, and its reading is stored. Like any CoAP client
    // it retransmits its Confirmable request (same Message ID) when the answer does not come:
    // the flood overflows the socket's receive buffer, so the kernel may drop its first try.
    let deadline = Instant::now() + PATIENCE;
    let answer = loop {
        device.send(&coap_post("bed-12", 0x2001, 95.0)).await;
        if let Some(a) = device.recv(Duration::from_secs(2)).await {
            break a;
        }
        assert!(Instant::now() < deadline, "no answer during the flood");
    };
    assert_eq!(coap_code(&answer), Some(0x41), "2.01 Created");
    assert_eq!(gw.wait_for_readings(1).await.len(), 1);

    // No state was kept for any of them: the only session is the device's.
    assert_eq!(gw.metric("wardgate_dtls_sessions"), 1.0);
    assert_eq!(gw.metric("wardgate_dtls_handshakes_in_progress"), 0.0);
    let verify = gw.metric("wardgate_dtls_hello_verify_sent_total");
    let limited = gw.metric("wardgate_dtls_handshake_failures_total{reason=\"rate_limited\"}");
    assert!(verify > 0.0, "{}", gw.metrics_text());
    // Each source got at most its burst (20) of answers, the rest was rate limited, and what was
    // sent back was never more than what came in.
    assert!(verify <= 200.0 * 20.0 + 1.0 + 22.0, "{verify}");
    // (How many the kernel dropped before the gateway saw them varies; what it saw, it either
    // answered within each source's burst or refused.)
    assert!(limited >= limited_before_flood, "{}", gw.metrics_text());
    println!(
        "flood: {sent} hellos ({sent_bytes} bytes), {verify} verify requests, {limited} rate limited"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_handshakes_are_bounded_in_total_and_per_source() {
    let gw = Gateway::start(|c| {
        c.max_handshakes = 20;
        c.max_handshakes_per_source = 3;
        c.handshake_timeout = Duration::from_secs(4);
        // Not what this test is about: sources sharing a hashed rate bucket must not matter.
        c.hello_burst_per_source = 1000;
    })
    .await;
    gw.keys.set("bed-12", KEY);
    let mut device = Client::new("127.0.0.1", gw.addr, "bed-12", KEY).await;
    assert!(device.handshake(Duration::from_secs(5)).await);

    // 10 sources x 5 half-open handshakes each (each past the cookie, so each may hold state).
    let mut floods = Vec::new();
    for a in 0..10 {
        for _ in 0..5 {
            let mut c = Client::new(&format!("127.2.0.{}", a + 1), gw.addr, "bed-12", b"x").await;
            c.half_open(Duration::from_secs(2)).await;
            floods.push(c);
        }
    }
    // Sources 1-6 get 3 each (18) and 2 refusals each; source 7 takes the last 2 places;
    // everything after finds the table full.
    let source_full = "wardgate_dtls_handshake_failures_total{reason=\"source_full\"}";
    let table_full = "wardgate_dtls_handshake_failures_total{reason=\"handshakes_full\"}";
    let deadline = Instant::now() + PATIENCE;
    while gw.metric(source_full) + gw.metric(table_full) < 30.0 {
        assert!(Instant::now() < deadline, "{}", gw.metrics_text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(gw.metric(source_full), 12.0, "{}", gw.metrics_text());
    assert_eq!(gw.metric(table_full), 18.0, "{}", gw.metrics_text());
    assert!(gw.metric("wardgate_dtls_handshakes_in_progress") <= 20.0);

    // The established device is still served.
    device.send(&coap_post("bed-12", 0x3001, 96.0)).await;
    let answer = device.recv(PATIENCE).await.expect("answer");
    assert_eq!(coap_code(&answer), Some(0x41));

    // Abandoned handshakes expire, and the table is free again for a new device.
    let deadline = Instant::now() + PATIENCE;
    while gw.metric("wardgate_dtls_handshakes_in_progress") > 0.0 {
        assert!(Instant::now() < deadline, "{}", gw.metrics_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gw.metric("wardgate_dtls_handshake_failures_total{reason=\"timeout\"}") >= 1.0);
    let mut late = Client::new("127.0.0.3", gw.addr, "bed-12", KEY).await;
    assert!(late.handshake(Duration::from_secs(5)).await);
    drop(floods);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_device_closes_its_open_session_on_the_next_request() {
    let gw = Gateway::start(|_| {}).await;
    gw.keys.set("bed-12", KEY);
    let mut device = Client::new("127.0.0.1", gw.addr, "bed-12", KEY).await;
    assert!(device.handshake(Duration::from_secs(5)).await);
    device.send(&coap_post("bed-12", 0x4001, 96.0)).await;
    assert_eq!(
        coap_code(&device.recv(PATIENCE).await.expect("answer")),
        Some(0x41)
    );

    gw.keys.revoke("bed-12");
    device.send(&coap_post("bed-12", 0x4002, 91.0)).await;
    // The gateway closes the session (close_notify) instead of answering.
    let answer = device.recv(Duration::from_secs(3)).await;
    assert!(answer.is_none(), "a revoked device was answered");
    assert!(device.closed, "no close_notify from the gateway");
    assert_eq!(
        gw.readings().len(),
        1,
        "a revoked device's reading was stored"
    );
    assert_eq!(
        gw.metric("wardgate_dtls_sessions_closed_total{reason=\"revoked\"}"),
        1.0,
        "{}",
        gw.metrics_text()
    );
    assert!(
        gw.audit.events().iter().any(
            |e| e.kind == AuditKind::SessionRevoked && e.actor.as_deref() == Some("psk:bed-12")
        )
    );
    // And it cannot come back.
    let mut again = Client::new("127.0.0.1", gw.addr, "bed-12", KEY).await;
    assert!(!again.handshake(Duration::from_secs(3)).await);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_may_not_post_as_another_device_over_its_session() {
    let gw = Gateway::start(|_| {}).await;
    gw.keys.set("bed-12", KEY);
    let mut device = Client::new("127.0.0.1", gw.addr, "bed-12", KEY).await;
    assert!(device.handshake(Duration::from_secs(5)).await);
    device.send(&coap_post("bed-13", 0x5001, 96.0)).await;
    let answer = device.recv(PATIENCE).await.expect("answer");
    assert_eq!(coap_code(&answer), Some(0x83), "4.03 Forbidden");
    assert!(gw.readings().is_empty());
    gw.stop().await;
}

/// Every log line of this thread while the guard lives (`#[tokio::test]` without a flavor runs
/// the gateway's tasks on the test's own thread, so they are all seen).
#[derive(Clone, Default)]
struct CapturedLog(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for CapturedLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn no_key_appears_in_any_log_line_at_trace_level() {
    let log = CapturedLog::default();
    let sink = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("trace")
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let gw = Gateway::start(|_| {}).await;
    gw.keys.set("bed-12", KEY);
    let mut device = Client::new("127.0.0.1", gw.addr, "bed-12", KEY).await;
    assert!(device.handshake(Duration::from_secs(5)).await);
    device.send(&coap_post("bed-12", 0x6001, 96.0)).await;
    assert!(device.recv(PATIENCE).await.is_some());
    let mut wrong = Client::new("127.0.0.1", gw.addr, "bed-12", b"wrong-key-wrong!").await;
    assert!(!wrong.handshake(Duration::from_secs(3)).await);
    gw.keys.revoke("bed-12");
    device.send(&coap_post("bed-12", 0x6002, 96.0)).await;
    let _ = device.recv(Duration::from_secs(2)).await;
    gw.stop().await;

    let text = String::from_utf8_lossy(&log.0.lock().unwrap()).into_owned();
    assert!(text.contains("bed-12"), "the capture saw nothing: {text}");
    for secret in [
        String::from_utf8_lossy(KEY).into_owned(),
        hex(KEY),
        "wrong-key-wrong!".to_owned(),
        hex(b"wrong-key-wrong!"),
    ] {
        assert!(!text.contains(&secret), "a key appears in the logs");
    }
}

/// An ECDSA P-256 key and self-signed certificate made by the system's OpenSSL, and the
/// SHA-256 (hex) of the certificate's DER.
fn ec_certificate(
    dir: &std::path::Path,
    name: &str,
) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    let ok = Command::new("/usr/bin/openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .args(["-days", "2", "-subj", &format!("/CN={name}")])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let der = Command::new("/usr/bin/openssl")
        .args(["x509", "-outform", "DER", "-in"])
        .arg(&cert)
        .output()
        .unwrap();
    assert!(der.status.success());
    use sha2::Digest;
    (cert, key, hex(&sha2::Sha256::digest(&der.stdout)))
}

/// `s_client_with` a client certificate over ECDHE-ECDSA-AES128-GCM-SHA256.
fn s_client_cert(
    gw: &Gateway,
    cert: &std::path::Path,
    key: &std::path::Path,
    input: &[u8],
) -> ChildGuard {
    let args = [
        std::ffi::OsStr::new("-cert"),
        cert.as_os_str(),
        std::ffi::OsStr::new("-key"),
        key.as_os_str(),
        std::ffi::OsStr::new("-cipher"),
        std::ffi::OsStr::new("ECDHE-ECDSA-AES128-GCM-SHA256"),
    ];
    s_client_with(gw, &args, input)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_the_registry_lists_posts_over_ecdhe_ecdsa_and_an_unlisted_one_is_refused()
 {
    let dir = tempfile::tempdir().unwrap();
    let (server_cert, server_key, _) = ec_certificate(dir.path(), "gateway");
    let (client_cert, client_key, fingerprint) = ec_certificate(dir.path(), "bed-12");
    let (other_cert, other_key, other_fp) = ec_certificate(dir.path(), "intruder");
    let gw = Gateway::start(|c| {
        c.certificate_file = Some(server_cert.clone());
        c.private_key_file = Some(server_key.clone());
    })
    .await;
    gw.keys.set_certificate(&fingerprint, "bed-12");

    let _device = s_client_cert(
        &gw,
        &client_cert,
        &client_key,
        &coap_post("bed-12", 0x7001, 97.0),
    );
    let readings = gw.wait_for_readings(1).await;
    assert_eq!(
        readings.len(),
        1,
        "no reading over ECDHE_ECDSA: {}",
        gw.metrics_text()
    );
    assert_eq!(readings[0].device, "bed-12");
    let source = readings[0].source.as_ref().expect("source");
    assert_eq!(
        source.identity.as_deref(),
        Some(format!("x509-sha256:{fingerprint}").as_str())
    );

    let _intruder = s_client_cert(
        &gw,
        &other_cert,
        &other_key,
        &coap_post("bed-12", 0x7002, 1.0),
    );
    let deadline = Instant::now() + PATIENCE;
    let actor = format!("claimed-x509-sha256:{other_fp}");
    while !gw
        .audit
        .events()
        .iter()
        .any(|e| e.reason == "unknown_certificate" && e.actor.as_deref() == Some(actor.as_str()))
    {
        assert!(Instant::now() < deadline, "{:?}", gw.audit.events());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(gw.readings().len(), 1);
    gw.stop().await;
}

/// Runs a bare transport's receive loop and timers, sending what it decrypts to a channel.
fn pump(
    t: std::sync::Arc<wardgate_dtls::DtlsTransport>,
) -> tokio::sync::mpsc::UnboundedReceiver<Vec<u8>> {
    use wardgate_coap::Transport;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        loop {
            let deadline = t
                .next_deadline()
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(1));
            tokio::select! {
                r = t.recv_from(&mut buf) => match r {
                    Ok((n, _)) => { let _ = tx.send(buf[..n].to_vec()); }
                    Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                },
                () = tokio::time::sleep_until(deadline) => t.poll_timers(tokio::time::Instant::now()),
            }
        }
    });
    rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateways_own_dtls_credential_follows_the_registry_revoked_and_rekeyed() {
    use std::sync::Arc;
    use wardgate_coap::Transport;
    use wardgate_core::MemoryAudit;
    use wardgate_dtls::{DtlsConfig, DtlsDeps, DtlsMetrics, DtlsTransport};
    let settings = DtlsConfig {
        enabled: true,
        recv_buffer_bytes: 0,
        send_buffer_bytes: 0,
        ..DtlsConfig::default()
    };
    let deps = |credentials: Arc<dyn wardgate_core::CredentialStore>| DtlsDeps {
        credentials,
        audit: Arc::new(MemoryAudit::default()),
        metrics: DtlsMetrics::default(),
        tap: None,
    };
    // The sensor: a DTLS server that knows the gateway as "gw".
    let sensor_keys = Arc::new(common::Keys::default());
    sensor_keys.set("gw", KEY);
    let sensor = Arc::new(
        DtlsTransport::bind(
            "127.0.0.1:0".parse().unwrap(),
            &settings,
            deps(sensor_keys.clone()),
        )
        .unwrap(),
    );
    let sensor_addr = sensor.local_addr().unwrap();
    let mut at_sensor = pump(sensor.clone());
    // The gateway: its registry holds the same key for "gw".
    let registry = Arc::new(common::Keys::default());
    registry.set("gw", KEY);
    let gateway = Arc::new(
        DtlsTransport::bind(
            "127.0.0.1:0".parse().unwrap(),
            &settings,
            deps(registry.clone()),
        )
        .unwrap(),
    );
    gateway
        .add_client(sensor_addr, "gw", wardgate_core::Secret::new(KEY.to_vec()))
        .unwrap();
    let _at_gateway = pump(gateway.clone());

    gateway.try_send_to(b"first", sensor_addr).unwrap();
    let got = tokio::time::timeout(PATIENCE, at_sensor.recv())
        .await
        .unwrap();
    assert_eq!(got.as_deref(), Some(&b"first"[..]));
    assert_eq!(sensor.session_count(), 1);

    // Revoked in the gateway's registry: the session is closed and the sensor is not reached.
    registry.revoke("gw");
    let deadline = Instant::now() + PATIENCE;
    while sensor.session_count() != 0 {
        assert!(
            Instant::now() < deadline,
            "the sensor still has the session"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gateway.try_send_to(b"nope", sensor_addr).is_err());

    // Re-keyed on both sides: the next request handshakes with the new key.
    let new_key = b"a-brand-new-key!";
    sensor_keys.set("gw", new_key);
    registry.set("gw", new_key);
    let deadline = Instant::now() + PATIENCE;
    loop {
        // The gateway notices the registry change on its next call or its 1 s sweep.
        if gateway.try_send_to(b"second", sensor_addr).is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "the credential was not rebuilt");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = tokio::time::timeout(PATIENCE, at_sensor.recv())
        .await
        .unwrap();
    assert_eq!(got.as_deref(), Some(&b"second"[..]));
}
