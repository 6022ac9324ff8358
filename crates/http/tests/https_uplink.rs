//! The HTTPS uplink against real HTTP(S) endpoints started by the tests (axum over tokio-rustls
//! on 127.0.0.1, certificates from an rcgen PKI, and `openssl s_server` for TLS 1.1): what
//! arrives, what is acknowledged to the outbox, what is refused, and how failures are retried.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::cursor::{FakeOutbox, reading_json};
use common::endpoint::{Endpoint, Mode, Reply};
use common::eventually;
use common::pki::{Pair, TestPki, Use};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wardgate_core::{Health, NackReason, Shutdown};
use wardgate_http::HttpError;
use wardgate_http::uplink::{HttpsUplinkConfig, HttpsUplinkMetrics};

const TOKEN: &str = "upl-tok-5ecret-0a1b2c";

/// An uplink named `cloud` to `url`, with short retry delays.
fn config(url: &str, extra: serde_json::Value) -> HttpsUplinkConfig {
    let mut v = serde_json::json!({
        "name": "cloud",
        "url": url,
        "token": TOKEN,
        "retry_min": "20ms",
        "retry_max": "200ms",
        "linger": "5ms",
        "timeout": "5s",
    });
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    serde_json::from_value(v).unwrap()
}

struct Running {
    outbox: FakeOutbox,
    health: Health,
    registry: Registry,
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<Result<(), HttpError>>,
}

impl Running {
    async fn start(cfg: &HttpsUplinkConfig) -> Running {
        let mut registry = Registry::default();
        let metrics = HttpsUplinkMetrics::register(&mut registry);
        let health = Health::new();
        let up = cfg.build("ward-t", metrics, &health).expect("builds");
        let outbox = FakeOutbox::default();
        let shutdown = Shutdown::new();
        let task = tokio::spawn(up.run(outbox.cursor(), shutdown.clone()));
        Running {
            outbox,
            health,
            registry,
            shutdown,
            task,
        }
    }

    /// Whether `uplink.cloud` is ready, and its detail.
    fn check(&self) -> (bool, String) {
        let r = self.health.readiness();
        let c = &r.checks["uplink.cloud"];
        (c.ready, c.detail.clone())
    }

    fn metrics(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).unwrap();
        out
    }

    async fn wait_acked(&self, n: usize) {
        eventually(&format!("{n} readings acknowledged"), || {
            (self.outbox.acked().len() >= n).then_some(())
        })
        .await;
    }

    async fn wait_nacks(&self, n: usize) {
        eventually(&format!("{n} nacks"), || {
            (self.outbox.nacks().len() >= n).then_some(())
        })
        .await;
    }

    async fn stop(self) -> (FakeOutbox, Health) {
        self.shutdown.cancel();
        self.task.await.unwrap().expect("the uplink stops cleanly");
        (self.outbox, self.health)
    }
}

fn tls<'a>(server: &'a Pair) -> Mode<'a> {
    Mode::Tls {
        server,
        client_ca: None,
    }
}

fn ca(path: &Path) -> serde_json::Value {
    serde_json::json!({ "ca_file": path })
}

#[tokio::test]
async fn batches_arrive_intact_and_in_order_and_are_acked_only_after_a_2xx() {
    let pki = TestPki::new("main");
    let server = pki.server("server");
    let ep = Endpoint::start(tls(&server), Some(TOKEN)).await;
    let mut extra = ca(&pki.ca);
    extra["batch_max_readings"] = 10.into();
    let up = Running::start(&config(&ep.url("https"), extra)).await;
    let mut ids = up.outbox.push("bed-1", 13);
    ids.extend(up.outbox.push("bed-2", 12));
    up.wait_acked(25).await;

    let received = ep.received();
    assert!(received.len() >= 3, "{} batches", received.len());
    let got = ep.ids();
    let want: Vec<String> = ids.iter().map(ToString::to_string).collect();
    assert_eq!(got, want, "every reading once, in outbox order");
    for r in &received {
        assert!(r.ids().len() <= 10);
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("application/json")
        );
        assert_eq!(r.header("x-wardgate-gateway").as_deref(), Some("ward-t"));
        assert_eq!(r.header("authorization"), Some(format!("Bearer {TOKEN}")));
        let key = r.header("idempotency-key").unwrap();
        assert!(
            key.len() == 32 && key.bytes().all(|b| b.is_ascii_hexdigit()),
            "{key}"
        );
        assert!(r.header("content-encoding").is_none());
    }
    // The body is the stored JSON of each reading, joined: byte for byte.
    let first = &received[0];
    let n = first.ids().len();
    let expected: Vec<String> = (1..=n as u64)
        .map(|seq| reading_json(ids[seq as usize - 1], "bed-1", seq))
        .collect();
    assert_eq!(
        String::from_utf8(first.body.clone()).unwrap(),
        format!("[{}]", expected.join(","))
    );
    // Acknowledged in order, one ack per batch, nothing nacked.
    assert_eq!(up.outbox.acked(), (1..=25).collect::<Vec<u64>>());
    assert_eq!(up.outbox.acks().len(), received.len());
    assert!(up.outbox.nacks().is_empty());
    let (ready, detail) = up.check();
    assert!(ready, "{detail}");
    let m = up.metrics();
    for line in [
        r#"wardgate_https_uplink_readings_delivered_total{uplink="cloud",class="vital"} 25"#,
        r#"wardgate_https_uplink_requests_total{uplink="cloud",status="2xx"}"#,
        r#"wardgate_https_uplink_request_duration_seconds_count{uplink="cloud"}"#,
    ] {
        assert!(m.contains(line), "{line} in\n{m}");
    }
    assert!(!m.contains(TOKEN));
    up.stop().await;
}

#[tokio::test]
async fn a_wrong_token_gets_401_and_the_uplink_keeps_every_reading_without_hot_looping() {
    let (log, _guard) = wardgate_testkit::CapturedLog::start_with("wardgate_http=debug");
    let pki = TestPki::new("main");
    let server = pki.server("server");
    let ep = Endpoint::start(tls(&server), Some("the-right-token")).await;
    let up = Running::start(&config(&ep.url("https"), ca(&pki.ca))).await;
    up.outbox.push("bed-1", 3);
    up.wait_nacks(3).await;

    assert!(up.outbox.acked().is_empty(), "nothing is acknowledged");
    for (seqs, why) in up.outbox.nacks() {
        assert_eq!((seqs, why), (vec![1, 2, 3], NackReason::Failed));
    }
    // Retried at retry_max (200 ms here), with the same batch each time.
    let received = ep.received();
    let keys: Vec<_> = received
        .iter()
        .map(|r| r.header("idempotency-key"))
        .collect();
    assert!(keys.windows(2).all(|w| w[0] == w[1]), "{keys:?}");
    for pair in received.windows(2) {
        assert!(
            pair[1].at.duration_since(pair[0].at) >= Duration::from_millis(200),
            "a refused batch is retried no sooner than retry_max"
        );
    }
    let (ready, detail) = up.check();
    assert!(!ready);
    assert!(detail.contains("401"), "{detail}");
    let text = log.text();
    assert_eq!(
        log.count("the HTTPS endpoint refused a batch"),
        1,
        "logged once per status: {text}"
    );
    assert!(!text.contains(TOKEN) && !detail.contains(TOKEN), "{text}");
    let m = up.metrics();
    assert!(
        m.contains(r#"wardgate_https_uplink_retries_total{uplink="cloud",reason="refused"}"#),
        "{m}"
    );
    up.stop().await;
}

#[tokio::test]
async fn mutual_tls_sends_the_configured_client_certificate_and_an_uplink_without_one_is_refused() {
    let pki = TestPki::new("main");
    let server = pki.server("server");
    let client = pki.client("client", "ward-t-uplink");
    let ep = Endpoint::start(
        Mode::Tls {
            server: &server,
            client_ca: Some(&pki.ca),
        },
        None,
    )
    .await;
    let mut extra = ca(&pki.ca);
    extra["client_cert"] = client.cert.to_str().unwrap().into();
    extra["client_key"] = client.key.to_str().unwrap().into();
    let up = Running::start(&config(&ep.url("https"), extra)).await;
    up.outbox.push("bed-1", 2);
    up.wait_acked(2).await;
    let received = ep.received();
    assert_eq!(
        received[0].client_cert.as_deref(),
        Some(client.fingerprint().as_str())
    );
    up.stop().await;

    // No client certificate: the handshake fails, nothing arrives, nothing is acknowledged.
    let up = Running::start(&config(&ep.url("https"), ca(&pki.ca))).await;
    up.outbox.push("bed-1", 2);
    up.wait_nacks(1).await;
    assert_eq!(ep.received().len(), 1, "only the first uplink's batch");
    assert!(!ep.handshake_errors().is_empty());
    assert!(up.outbox.acked().is_empty());
    let (ready, detail) = up.check();
    assert!(!ready, "{detail}");
    up.stop().await;
}

/// Starts an endpoint with `server`, runs an uplink trusting `trust`, and checks that nothing
/// is delivered; returns the health detail.
async fn refused(server: &Pair, trust: &Path) -> String {
    let ep = Endpoint::start(tls(server), None).await;
    let up = Running::start(&config(&ep.url("https"), ca(trust))).await;
    up.outbox.push("bed-1", 3);
    up.wait_nacks(2).await;
    assert!(ep.received().is_empty(), "no request got through");
    assert!(up.outbox.acked().is_empty(), "nothing acknowledged");
    assert!(
        up.outbox
            .nacks()
            .iter()
            .all(|(s, why)| s == &vec![1, 2, 3] && *why == NackReason::Failed)
    );
    let (ready, detail) = up.check();
    assert!(!ready, "{detail}");
    let m = up.metrics();
    assert!(
        m.contains(r#"wardgate_https_uplink_requests_total{uplink="cloud",status="error"}"#),
        "{m}"
    );
    up.stop().await;
    detail
}

#[tokio::test]
async fn a_server_certificate_for_another_host_name_is_refused() {
    let pki = TestPki::new("main");
    let server = pki.leaf("other", &["other.example"], Use::Server);
    let detail = refused(&server, &pki.ca).await;
    assert!(detail.contains("not valid for name"), "{detail}");
}

#[tokio::test]
async fn an_expired_server_certificate_is_refused() {
    let pki = TestPki::new("main");
    let server = pki.expired_server("expired");
    let detail = refused(&server, &pki.ca).await;
    assert!(detail.contains("expired"), "{detail}");
}

#[tokio::test]
async fn a_self_signed_server_certificate_is_refused() {
    let pki = TestPki::new("main");
    let server = pki.self_signed_server("selfsigned");
    let detail = refused(&server, &pki.ca).await;
    assert!(detail.contains("invalid peer certificate"), "{detail}");
}

#[tokio::test]
async fn a_server_certificate_from_an_unknown_ca_is_refused() {
    let trusted = TestPki::new("main");
    let other = TestPki::new("other");
    let server = other.server("server");
    let detail = refused(&server, &trusted.ca).await;
    assert!(detail.contains("UnknownIssuer"), "{detail}");
}

#[tokio::test]
async fn insecure_skip_verify_accepts_a_self_signed_server_and_says_so_at_error() {
    let (log, _guard) = wardgate_testkit::CapturedLog::start_with("wardgate_http=info");
    let pki = TestPki::new("main");
    let server = pki.self_signed_server("selfsigned");
    let ep = Endpoint::start(tls(&server), None).await;
    let cfg = config(
        &ep.url("https"),
        serde_json::json!({ "insecure_skip_verify": true }),
    );
    let up = Running::start(&cfg).await;
    up.outbox.push("bed-1", 2);
    up.wait_acked(2).await;
    let text = log.text();
    assert!(
        text.contains("ERROR") && text.contains("insecure_skip_verify is on"),
        "{text}"
    );
    up.stop().await;
}

#[tokio::test]
async fn a_tls_1_1_only_server_is_refused_although_openssl_can_talk_to_it() {
    wardgate_testkit::require_tool("/usr/bin/openssl");
    let pki = TestPki::new("main");
    let server = pki.server("server");
    let port = wardgate_testkit::free_tcp_port();
    let accept = format!("127.0.0.1:{port}");
    let _openssl = wardgate_testkit::ChildGuard(
        std::process::Command::new("openssl")
            .args([
                "s_server",
                "-tls1_1",
                "-cipher",
                "DEFAULT@SECLEVEL=0",
                "-www",
            ])
            .args(["-accept", &accept])
            .arg("-cert")
            .arg(&server.cert)
            .arg("-key")
            .arg(&server.key)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start openssl s_server"),
    );
    // The control: openssl's own client completes a TLS 1.1 handshake with it.
    let control = eventually("openssl s_server to speak TLS 1.1", || {
        let out = std::process::Command::new("openssl")
            .args(["s_client", "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"])
            .args(["-connect", &accept])
            .stdin(std::process::Stdio::null())
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains("Protocol  : TLSv1.1").then_some(text)
    })
    .await;
    assert!(control.contains("TLSv1.1"));

    let url = format!("https://127.0.0.1:{port}/");
    let up = Running::start(&config(&url, ca(&pki.ca))).await;
    up.outbox.push("bed-1", 1);
    up.wait_nacks(1).await;
    assert!(up.outbox.acked().is_empty());
    let (ready, detail) = up.check();
    assert!(!ready);
    assert!(
        detail.contains("protocol version") || detail.contains("ProtocolVersion"),
        "{detail}"
    );
    up.stop().await;
}

#[tokio::test]
async fn plain_http_is_refused_at_build_unless_explicitly_allowed() {
    let ep = Endpoint::start(Mode::Plain, Some(TOKEN)).await;
    let cfg = config(&ep.url("http"), serde_json::json!({}));
    let err = cfg
        .build("ward-t", HttpsUplinkMetrics::default(), &Health::new())
        .unwrap_err();
    assert!(
        matches!(&err, HttpError::Invalid(m) if m.contains("allow_plain_http")),
        "{err}"
    );
    let cfg = config(
        &ep.url("http"),
        serde_json::json!({ "allow_plain_http": true }),
    );
    let up = Running::start(&cfg).await;
    up.outbox.push("bed-1", 2);
    up.wait_acked(2).await;
    assert_eq!(ep.received().len(), 1);
    up.stop().await;
}

#[tokio::test]
async fn a_503_with_retry_after_is_honoured_and_the_batch_keeps_its_idempotency_key() {
    let pki = TestPki::new("main");
    let server = pki.server("server");
    let ep = Endpoint::start(tls(&server), None).await;
    ep.script([Reply::status(503).header("retry-after", "1")]);
    // Without Retry-After the next attempt would come after 20-40 ms.
    let mut extra = ca(&pki.ca);
    extra["retry_max"] = "30s".into();
    let up = Running::start(&config(&ep.url("https"), extra)).await;
    up.outbox.push("bed-1", 4);
    up.wait_acked(4).await;
    let r = ep.received();
    assert_eq!(r.len(), 2);
    assert!(
        r[1].at.duration_since(r[0].at) >= Duration::from_secs(1),
        "the retry waited for Retry-After"
    );
    assert_eq!(
        r[0].header("idempotency-key"),
        r[1].header("idempotency-key")
    );
    assert_eq!(r[0].body, r[1].body);
    assert_eq!(
        up.outbox.nacks(),
        vec![(vec![1, 2, 3, 4], NackReason::Failed)]
    );
    let m = up.metrics();
    assert!(
        m.contains(r#"wardgate_https_uplink_requests_total{uplink="cloud",status="5xx"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"wardgate_https_uplink_retries_total{uplink="cloud",reason="throttled"} 1"#),
        "{m}"
    );
    up.stop().await;
}

#[tokio::test]
async fn gzip_bodies_decode_to_the_same_array() {
    let pki = TestPki::new("main");
    let server = pki.server("server");
    let ep = Endpoint::start(tls(&server), None).await;
    let mut extra = ca(&pki.ca);
    extra["gzip"] = true.into();
    let up = Running::start(&config(&ep.url("https"), extra)).await;
    let ids = up.outbox.push("bed-1", 50);
    up.wait_acked(50).await;
    let r = ep.received();
    assert!(
        r.iter()
            .all(|r| r.header("content-encoding").as_deref() == Some("gzip"))
    );
    assert!(r.iter().all(|r| r.raw.len() < r.body.len()), "compressed");
    let got = ep.ids();
    assert_eq!(got, ids.iter().map(ToString::to_string).collect::<Vec<_>>());
    up.stop().await;
}

#[tokio::test]
async fn a_request_without_an_answer_in_time_is_nacked_as_timed_out_and_sent_again() {
    let pki = TestPki::new("main");
    let server = pki.server("server");
    let ep = Endpoint::start(tls(&server), None).await;
    ep.script([Reply::status(200).after(Duration::from_secs(5))]);
    let mut extra = ca(&pki.ca);
    extra["timeout"] = "300ms".into();
    let up = Running::start(&config(&ep.url("https"), extra)).await;
    up.outbox.push("bed-1", 2);
    up.wait_acked(2).await;
    assert_eq!(up.outbox.nacks(), vec![(vec![1, 2], NackReason::TimedOut)]);
    let r = ep.received();
    assert_eq!(r.len(), 2);
    assert_eq!(
        r[0].header("idempotency-key"),
        r[1].header("idempotency-key")
    );
    up.stop().await;
}

/// A TLS endpoint that reads the first request's head, then drops the connection without an
/// answer; later connections get 200. Returns the request heads it saw.
async fn killing_endpoint(server: &Pair) -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(common::endpoint::server_config(server, None));
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}/v1/batches", tcp.local_addr().unwrap());
    let heads = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = heads.clone();
    tokio::spawn(async move {
        let mut first = true;
        loop {
            let (s, _) = tcp.accept().await.unwrap();
            let Ok(mut tls) = acceptor.accept(s).await else {
                continue;
            };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = tls.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            seen.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&buf).into_owned());
            if first {
                first = false;
                drop(tls); // killed mid-request: no answer at all
                continue;
            }
            let _ = tls
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await;
            let _ = tls.shutdown().await;
        }
    });
    (url, heads)
}

#[tokio::test]
async fn a_connection_killed_mid_request_is_nacked_and_redelivered_with_the_same_key() {
    let pki = TestPki::new("main");
    let server = pki.server("server");
    let (url, heads) = killing_endpoint(&server).await;
    let up = Running::start(&config(&url, ca(&pki.ca))).await;
    up.outbox.push("bed-1", 3);
    up.wait_acked(3).await;
    assert_eq!(up.outbox.nacks(), vec![(vec![1, 2, 3], NackReason::Failed)]);
    assert_eq!(up.outbox.acked(), vec![1, 2, 3]);
    let heads = heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 2, "{heads:?}");
    let key = |h: &str| {
        h.lines()
            .find_map(|l| l.strip_prefix("idempotency-key: "))
            .map(str::to_owned)
    };
    assert!(key(&heads[0]).is_some());
    assert_eq!(key(&heads[0]), key(&heads[1]));
    up.stop().await;
}

#[tokio::test]
async fn a_413_splits_the_batch_until_the_endpoint_takes_it() {
    let pki = TestPki::new("main");
    let server = pki.server("server");
    let ep = Endpoint::start(tls(&server), None).await;
    ep.script([Reply::status(413)]);
    let up = Running::start(&config(&ep.url("https"), ca(&pki.ca))).await;
    let ids = up.outbox.push("bed-1", 8);
    up.wait_acked(8).await;
    let r = ep.received();
    assert_eq!(r[0].ids().len(), 8);
    assert_eq!(r[1].ids().len(), 4, "half the batch after a 413");
    let delivered: Vec<String> = r[1..].iter().flat_map(|r| r.ids()).collect();
    assert_eq!(
        delivered,
        ids.iter().map(ToString::to_string).collect::<Vec<_>>()
    );
    up.stop().await;
}

#[tokio::test]
async fn shutdown_waits_for_the_batch_in_flight_and_acknowledges_it() {
    let pki = TestPki::new("main");
    let server = pki.server("server");
    let ep = Endpoint::start(tls(&server), None).await;
    ep.script([Reply::status(200).after(Duration::from_millis(500))]);
    let up = Running::start(&config(&ep.url("https"), ca(&pki.ca))).await;
    up.outbox.push("bed-1", 2);
    eventually("the batch in flight", || {
        (!ep.received().is_empty()).then_some(())
    })
    .await;
    let (outbox, health) = up.stop().await;
    assert_eq!(
        outbox.acked(),
        vec![1, 2],
        "answered during the shutdown wait"
    );
    let c = &health.readiness().checks["uplink.cloud"];
    assert_eq!((c.ready, c.detail.as_str()), (false, "stopped"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_real_outbox_every_reading_is_delivered_once_and_leaves_the_outbox() {
    use wardgate_store::{Outbox, StoreConfig, StoreMetrics};
    let dir = tempfile::tempdir().unwrap();
    let store_cfg = StoreConfig {
        path: dir.path().join("outbox.db"),
        ..StoreConfig::default()
    };
    let outbox = Outbox::open(
        &store_cfg,
        &["cloud".to_owned()],
        StoreMetrics::unregistered(),
    )
    .unwrap();
    let (bus, rx) = wardgate_core::Bus::new(64);
    let health = Health::new();
    let stop_store = Shutdown::new();
    let writer = {
        let outbox = outbox.clone();
        let stop = stop_store.clone();
        let reporter = health.reporter("store", wardgate_core::health::ComponentKind::Store);
        tokio::spawn(async move { outbox.run_writer(rx, stop, reporter).await })
    };
    let mut ids = Vec::new();
    for i in 0..40u64 {
        let id = ulid::Ulid::new();
        ids.push(id.to_string());
        bus.submit(vec![wardgate_core::Encoded {
            id,
            device: format!("bed-{}", i % 3),
            class: wardgate_core::MessageClass::Vital,
            protocol: wardgate_core::Protocol::Coap,
            json: bytes::Bytes::from(reading_json(id, &format!("bed-{}", i % 3), i)),
            held: false,
        }])
        .await
        .unwrap();
    }

    let pki = TestPki::new("main");
    let server = pki.server("server");
    let ep = Endpoint::start(tls(&server), Some(TOKEN)).await;
    ep.script([Reply::status(500)]);
    let mut extra = ca(&pki.ca);
    extra["batch_max_readings"] = 16.into();
    let cfg = config(&ep.url("https"), extra);
    let up = cfg
        .build("ward-t", HttpsUplinkMetrics::default(), &health)
        .unwrap();
    let stop_uplink = Shutdown::new();
    let task = tokio::spawn(up.run(outbox.cursor("cloud").unwrap(), stop_uplink.clone()));
    eventually("every reading delivered", || {
        let got: std::collections::HashSet<String> = ep.ids().into_iter().collect();
        ids.iter().all(|id| got.contains(id)).then_some(())
    })
    .await;
    // The first batch failed (500) and went again: after it, each reading once and in order.
    let r = ep.received();
    assert_eq!(r[0].ids(), r[1].ids());
    let after: Vec<String> = r[1..].iter().flat_map(|r| r.ids()).collect();
    assert_eq!(after, ids);
    stop_uplink.cancel();
    task.await.unwrap().unwrap();
    outbox.flush().await.unwrap();
    let stats = outbox.stats().unwrap();
    assert_eq!(stats.uplinks[0].readings, 0, "{stats:?}");
    assert_eq!(stats.readings, 0, "{stats:?}");
    stop_store.cancel();
    writer.await.unwrap().unwrap();
}
