//! The status page's endpoints over real HTTP: what is open without a token and what is not,
//! the headers that keep the page to itself, the snapshot's facts, the live feed's token,
//! filters and bounds (a client that stops reading is dropped, not buffered; at most
//! `MAX_FEED_CLIENTS` at once), and a viewer token that may read but not edit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wardgate_core::health::ComponentKind;
use wardgate_core::{
    AuditKind, CommitObserver, Encoded, Health, MemoryAudit, MessageClass, Protocol, Shutdown,
    StatusBoard,
};
use wardgate_http::{AdminConfig, AdminDeps, AdminMetrics, AdminServer, AdminToken, TokenRole};

const ADMIN: &str = "status-admin-token-1";
const VIEWER: &str = "status-viewer-token-2";

fn sha256_hex(s: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, s.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

struct Fixture {
    addr: SocketAddr,
    board: StatusBoard,
    audit: Arc<MemoryAudit>,
    shutdown: Shutdown,
}

async fn start() -> Fixture {
    let audit = Arc::new(MemoryAudit::default());
    let board = StatusBoard::new("ward-7");
    let cfg = AdminConfig {
        enabled: true,
        listen: "127.0.0.1:0".parse().unwrap(),
        tokens: vec![
            AdminToken {
                id: "ops".into(),
                sha256: sha256_hex(ADMIN),
                role: TokenRole::Admin,
            },
            AdminToken {
                id: "screen".into(),
                sha256: sha256_hex(VIEWER),
                role: TokenRole::Viewer,
            },
        ],
        ..AdminConfig::default()
    };
    let health = Health::new();
    let deps = AdminDeps {
        registry: None,
        audit: board.audit_tee(audit.clone()),
        metrics: AdminMetrics::default(),
        lwm2m: None,
        selector: None,
        outbox: None,
        captures: None,
        board: Some(board.clone()),
        health: health.clone(),
    };
    let server = AdminServer::bind(
        &cfg,
        deps,
        health.reporter("admin", ComponentKind::Listener),
    )
    .await
    .unwrap();
    let addr = server.local_addr().unwrap();
    let shutdown = Shutdown::new();
    tokio::spawn(server.run(shutdown.clone()));
    Fixture {
        addr,
        board,
        audit,
        shutdown,
    }
}

fn reading(device: &str, class: MessageClass, pad: usize) -> Encoded {
    let id = ulid::Ulid::new();
    Encoded {
        id,
        device: device.into(),
        class,
        protocol: Protocol::Coap,
        json: Bytes::from(format!(
            "{{\"id\":\"{id}\",\"device\":\"{device}\",\"class\":\"{}\",\"pad\":\"{}\"}}",
            class.as_str(),
            "x".repeat(pad)
        )),
        held: false,
    }
}

/// Sends a request; returns the open stream (for a streamed answer).
async fn open(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    s.write_all(
        format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}Content-Length: 0\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    s
}

/// A whole answer: status, head, body.
async fn get(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (u16, String, String) {
    let mut s = open(addr, method, path, token).await;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .expect("answer in time")
        .unwrap();
    split(&String::from_utf8_lossy(&raw))
}

fn split(raw: &str) -> (u16, String, String) {
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_owned())
}

/// Reads from `s` until `needle` appeared (or fails after 10 s).
async fn read_until(s: &mut TcpStream, buf: &mut String, needle: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut chunk = [0u8; 4096];
    while !buf.contains(needle) {
        let n = tokio::time::timeout_at(deadline, s.read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("no {needle:?} in time; got {buf:?}"))
            .unwrap();
        assert!(n > 0, "closed before {needle:?}; got {buf:?}");
        buf.push_str(&String::from_utf8_lossy(&chunk[..n]));
    }
}

#[tokio::test]
async fn the_page_and_snapshot_are_open_and_show_the_board_without_values() {
    let f = start().await;
    f.board.committed(&[
        reading("bed-1", MessageClass::Vital, 0),
        reading("bed-2", MessageClass::Alarm, 0),
    ]);
    f.board.delivered(Duration::from_millis(12));

    let (status, head, _) = get(f.addr, "GET", "/", None).await;
    assert_eq!(status, 303);
    assert!(head.contains("location: /status"), "{head}");

    let (status, head, body) = get(f.addr, "GET", "/status", None).await;
    assert_eq!(status, 200, "{body}");
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(
        head.contains("content-security-policy: default-src 'none'; script-src 'self'"),
        "{head}"
    );
    assert!(head.contains("x-content-type-options: nosniff"), "{head}");
    assert!(
        body.contains("<title>wardgate ward-7 status</title>"),
        "{body}"
    );
    assert!(body.contains(r#"data-device="bed-2""#), "{body}");
    assert!(
        body.contains(r#"<td class="class-alarm">alarm</td>"#),
        "{body}"
    );
    // No reading's content on the open page.
    assert!(!body.contains("\"pad\""), "{body}");

    let (status, _, panels) = get(f.addr, "GET", "/status/v1/panels", None).await;
    assert_eq!(status, 200);
    assert!(panels.contains(r#"<section id="devices""#) && !panels.contains("<html"));

    let (status, _, json) = get(f.addr, "GET", "/status/v1/snapshot", None).await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["gateway"], "ward-7");
    assert_eq!(v["readings_total"], 2);
    assert_eq!(v["delivered_total"], 1);
    assert_eq!(v["devices"].as_array().unwrap().len(), 2);
    assert_eq!(v["series"].as_array().unwrap().len(), 300);
    assert_eq!(v["readiness"]["checks"]["admin"]["ready"], true);

    for (path, kind) in [
        ("/status/assets/status.css", "text/css"),
        ("/status/assets/status.js", "text/javascript"),
    ] {
        let (status, head, body) = get(f.addr, "GET", path, None).await;
        assert_eq!(status, 200, "{path}");
        assert!(head.contains(kind), "{head}");
        assert!(!body.is_empty());
    }
    // The API's description is open too, at a stable path.
    let (status, _, json) = get(f.addr, "GET", "/admin/v1/openapi.json", None).await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(v["openapi"].as_str().unwrap().starts_with("3."), "{v}");
    assert!(v["paths"]["/admin/v1/devices"].is_object());
    // Everything else on the listener still needs a token.
    let (status, _, _) = get(f.addr, "GET", "/status/v1/feed", None).await;
    assert_eq!(status, 401);
    let (status, _, _) = get(f.addr, "GET", "/status/other", None).await;
    assert_eq!(status, 401);
    f.shutdown.cancel();
}

#[tokio::test]
async fn the_feed_streams_durable_readings_through_its_filters_to_a_viewer() {
    let f = start().await;
    let mut s = open(
        f.addr,
        "GET",
        "/status/v1/feed?device=bed-12*&class=alarm",
        Some(VIEWER),
    )
    .await;
    let mut buf = String::new();
    read_until(&mut s, &mut buf, "\r\n\r\n").await;
    let (status, head, _) = split(&buf);
    assert_eq!(status, 200, "{buf}");
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    // Subscribed once the head is out.
    assert_eq!(f.board.subscribers(), 1);
    f.board.committed(&[
        reading("bed-14", MessageClass::Alarm, 0),
        reading("bed-12", MessageClass::Vital, 0),
        reading("bed-12", MessageClass::Alarm, 0),
    ]);
    read_until(
        &mut s,
        &mut buf,
        "\"device\":\"bed-12\",\"class\":\"alarm\"",
    )
    .await;
    assert!(buf.contains("event: reading\n"), "{buf}");
    assert!(!buf.contains("bed-14"), "device filter: {buf}");
    assert!(!buf.contains("\"vital\""), "class filter: {buf}");

    // Bad filters are refused with the reason.
    let (status, _, body) = get(f.addr, "GET", "/status/v1/feed?class=urgent", Some(VIEWER)).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("class"), "{body}");

    // The viewer may read but not edit; the refusal is audited and listed on the board.
    let (status, _, body) = get(f.addr, "POST", "/admin/v1/registry/reload", Some(VIEWER)).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("only read"), "{body}");
    let denied: Vec<_> = f
        .audit
        .events()
        .into_iter()
        .filter(|e| e.kind == AuditKind::AclDenied && e.reason == "admin_read_only")
        .collect();
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0].actor.as_deref(), Some("viewer:screen"));
    let snap = f.board.snapshot();
    assert_eq!(snap.events[0].reason, "admin_read_only");
    // The admin token passes the same check (503: no registry here, not 403).
    let (status, _, _) = get(f.addr, "POST", "/admin/v1/registry/reload", Some(ADMIN)).await;
    assert_eq!(status, 503);
    drop(s);
    f.shutdown.cancel();
}

#[tokio::test]
async fn a_feed_client_that_stops_reading_is_dropped_and_clients_are_bounded() {
    let f = start().await;
    let mut slow = open(f.addr, "GET", "/status/v1/feed", Some(ADMIN)).await;
    let mut buf = String::new();
    read_until(&mut slow, &mut buf, "\r\n\r\n").await;
    assert_eq!(f.board.subscribers(), 1);
    // 4 000 readings of 16 KiB: far more than the socket buffers and the feed's 1 024 hold.
    for _ in 0..400 {
        let batch: Vec<Encoded> = (0..10)
            .map(|_| reading("bed-9", MessageClass::Vital, 16 * 1024))
            .collect();
        f.board.committed(&batch);
        tokio::task::yield_now().await;
    }
    // Reading now, it gets what fitted in the buffers, then `dropped`, then the end.
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), slow.read_to_end(&mut rest))
        .await
        .expect("the server ends the stream")
        .unwrap();
    let rest = String::from_utf8_lossy(&rest);
    assert!(
        rest.contains("event: dropped"),
        "{} bytes, no dropped event",
        rest.len()
    );
    assert!(rest.contains("\"reason\":\"too slow\""));
    tokio::time::timeout(Duration::from_secs(5), async {
        while f.board.subscribers() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the dropped client's subscription is gone");

    // At most MAX_FEED_CLIENTS at once; the next gets 503, and a slot frees when one leaves.
    let mut clients = Vec::new();
    for _ in 0..16 {
        let mut c = open(f.addr, "GET", "/status/v1/feed", Some(VIEWER)).await;
        let mut b = String::new();
        read_until(&mut c, &mut b, "\r\n\r\n").await;
        assert!(b.starts_with("HTTP/1.1 200"), "{b}");
        clients.push(c);
    }
    let (status, _, body) = get(f.addr, "GET", "/status/v1/feed", Some(VIEWER)).await;
    assert_eq!(status, 503, "{body}");
    drop(clients.pop());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        // The server learns the client left when it next writes to it.
        f.board
            .committed(&[reading("bed-9", MessageClass::Vital, 0)]);
        let mut c = open(f.addr, "GET", "/status/v1/feed", Some(VIEWER)).await;
        let mut b = String::new();
        read_until(&mut c, &mut b, "\r\n\r\n").await;
        if b.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slot never freed: {b}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f.shutdown.cancel();
}
