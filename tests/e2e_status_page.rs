//! The status page in a real browser: Debian's `chromium`, driven over WebDriver by its
//! `chromedriver` (through `fantoccini`), against the real binary running `--demo` (simulated
//! CoAP sensors and an LwM2M thermometer) with an MQTT uplink to Mosquitto.
//!
//! It checks what an operator sees: the simulated devices listed and their counts moving, the
//! LwM2M registration, an alarm sent by a bedside device arriving on the live feed and raising
//! the banner, an admin action refused without a token (401, and the failure listed among the
//! security events), refused with a viewer token (403) and done with the admin token; every
//! form control has a label; nothing overflows sideways on a tablet-sized window. It saves
//! screenshots (desktop and tablet) in the test's target directory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{ChildGuard, Gateway, Mosquitto, coap_send, free_tcp_port, require_tool, wait_for};
use fantoccini::{Client, ClientBuilder, Locator};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const ADMIN_TOKEN: &str = "e2e-status-admin-7c2d";
const VIEWER_TOKEN: &str = "e2e-status-viewer-91fe";

fn sha256_hex(s: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, s.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// chromedriver on a free loopback port, and a session of headless chromium through it.
async fn browser(profile: &Path) -> (ChildGuard, Client) {
    require_tool(CHROMIUM);
    require_tool(CHROMEDRIVER);
    let port = free_tcp_port();
    let driver = ChildGuard(
        Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver"),
    );
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_for("chromedriver to answer", Duration::from_secs(20), || {
        driver_ready(addr).then_some(())
    });
    let caps = serde_json::json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": [
                "--headless=new",
                // The sandbox needs user namespaces, which a root CI container does not give.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--window-size=1280,1400",
                format!("--user-data-dir={}", profile.display()),
            ],
        },
    });
    let caps = match caps {
        serde_json::Value::Object(m) => m,
        _ => unreachable!(),
    };
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("WebDriver session with chromium");
    (driver, client)
}

/// Whether chromedriver answers `GET /status` with `"ready":true` (it refuses a `Host` that is
/// not a loopback name, so the fixtures' generic GET does not do).
fn driver_ready(addr: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET /status HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    // It may keep the connection open after its answer: read what came within the timeout.
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let out = String::from_utf8_lossy(&out);
    out.starts_with("HTTP/1.1 200") && out.contains("\"ready\":true")
}

async fn text(c: &Client, css: &str) -> String {
    match c.find(Locator::Css(css)).await {
        Ok(e) => e.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Polls `css`'s text until `ok` holds (the panels refresh every 2 s).
async fn wait_text(c: &Client, css: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let t = text(c, css).await;
        if ok(&t) {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; {css} shows {t:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn type_into(c: &Client, id: &str, value: &str) {
    let e = c.find(Locator::Id(id)).await.unwrap();
    e.clear().await.unwrap();
    e.send_keys(value).await.unwrap();
}

async fn click(c: &Client, id: &str) {
    c.find(Locator::Id(id))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

async fn screenshot(c: &Client, name: &str) -> PathBuf {
    c.execute("window.scrollTo(0, 0);", vec![]).await.unwrap();
    let png = c.screenshot().await.expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&path, png).unwrap();
    eprintln!("screenshot: {}", path.display());
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_the_ward_and_guards_its_actions_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start();
    let admin: SocketAddr = ([127, 0, 0, 1], free_tcp_port()).into();
    let extra = format!(
        r#"
[audit]
path = "{dir}/audit.log"
[admin]
enabled = true
listen = "{admin}"
[[admin.tokens]]
id = "ops-1"
sha256 = "{admin_hash}"
[[admin.tokens]]
id = "screen-1"
sha256 = "{viewer_hash}"
role = "viewer"
"#,
        dir = dir.path().display(),
        admin_hash = sha256_hex(ADMIN_TOKEN),
        viewer_hash = sha256_hex(VIEWER_TOKEN),
    );
    let gw = Gateway::start_run(
        dir.path(),
        &format!("mqtt://127.0.0.1:{}", broker.port),
        "",
        &extra,
        &["--demo"],
    );
    let profile = tempfile::tempdir().unwrap();
    let (_driver, c) = browser(profile.path()).await;

    c.goto(&format!("http://{admin}/")).await.unwrap();
    assert!(c.current_url().await.unwrap().path() == "/status");
    assert!(c.title().await.unwrap().contains("test-ward"));

    // The simulated devices are listed, and their counts move.
    // Either bed's (a sensor may have dropped out for its first seconds).
    wait_text(&c, "#devices", "the demo's sensors", |t| {
        (t.contains("bed-01-spo2") || t.contains("bed-02-spo2"))
            && (t.contains("bed-01-resp") || t.contains("bed-02-resp"))
    })
    .await;
    let count = |t: &str| t.trim().parse::<u64>().unwrap_or(0);
    let first = count(&wait_text(&c, "#readings-total", "readings", |t| count(t) > 0).await);
    wait_text(&c, "#readings-total", "the count to move", |t| {
        count(t) > first
    })
    .await;
    wait_text(&c, "#ready", "readiness", |t| t == "Ready").await;
    // The LwM2M thermometer registered and shows up.
    wait_text(&c, "#lwm2m", "the LwM2M registration", |t| {
        t.contains("bed-01-thermo")
    })
    .await;
    // Deliveries are measured for the latency chart.
    wait_text(&c, "#delivered-total", "deliveries", |t| count(t) > 0).await;

    // Every control has a label.
    let unlabelled = c
        .execute(
            "return Array.from(document.querySelectorAll('input, select'))\
             .filter(i => !document.querySelector('label[for=\"' + i.id + '\"]'))\
             .map(i => i.id || i.name);",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        unlabelled,
        serde_json::json!([]),
        "controls without a label"
    );

    // An admin action without a token: the gateway refuses it, and the failure is a
    // security event.
    type_into(&c, "lwm2m-endpoint", "bed-01-thermo").await;
    type_into(&c, "lwm2m-path", "/3303/0/5700").await;
    click(&c, "lwm2m-read").await;
    wait_text(&c, "#action-result", "a 401", |t| t.contains("HTTP 401")).await;
    wait_text(&c, "#security", "the refused request listed", |t| {
        t.contains("admin_no_credentials")
    })
    .await;

    // A viewer token may watch the live feed but not act.
    type_into(&c, "token", VIEWER_TOKEN).await;
    click(&c, "token-use").await;
    click(&c, "lwm2m-read").await;
    wait_text(&c, "#action-result", "a 403", |t| t.contains("HTTP 403")).await;

    c.find(Locator::Id("feed-class"))
        .await
        .unwrap()
        .select_by_value("alarm")
        .await
        .unwrap();
    click(&c, "feed-start").await;
    wait_text(&c, "#feed-state", "the feed to start", |t| {
        t.starts_with("Live")
    })
    .await;
    // A bedside device raises an alarm.
    let alarm = coap_send(
        "post",
        110,
        r#"[{"n":"spo2","u":"%25","v":84}]"#,
        &gw.coap_uri("v1/readings/bed-20-spo2?class=alarm"),
    );
    assert!(alarm.ok, "alarm accepted: {alarm:?}");
    // The demo's own patients may alarm too: look for this one in the list, which keeps 50.
    let feed = wait_text(&c, "#feed-list", "the alarm on the live feed", |t| {
        t.contains("bed-20-spo2")
    })
    .await;
    assert!(feed.contains("spo2=84"), "{feed}");
    let banner = wait_text(&c, "#alarm-banner", "the alarm banner", |t| {
        t.starts_with("ALARM bed-")
    })
    .await;
    assert!(banner.contains("spo2"), "{banner}");
    let alarm_items = c
        .execute(
            "return Array.from(document.querySelectorAll('#feed-list li'))\
             .every(li => li.classList.contains('alarm'));",
            vec![],
        )
        .await
        .unwrap();
    // The class filter holds: only alarm-class readings are listed.
    assert_eq!(alarm_items, serde_json::json!(true), "{feed}");

    // The admin token can act: an LwM2M read of the thermometer.
    type_into(&c, "token", ADMIN_TOKEN).await;
    click(&c, "token-use").await;
    click(&c, "lwm2m-read").await;
    let done = wait_text(&c, "#action-result", "the LwM2M read", |t| {
        t.contains("done")
    })
    .await;
    assert!(done.contains("HTTP 200") && done.contains("5700"), "{done}");

    screenshot(&c, "status-page.png").await;
    // A tablet held upright: nothing overflows sideways.
    c.set_window_size(800, 1280).await.unwrap();
    let overflow = c
        .execute(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
            vec![],
        )
        .await
        .unwrap();
    assert!(
        overflow.as_i64().unwrap_or(1) <= 0,
        "the page scrolls sideways on a tablet by {overflow}px"
    );
    screenshot(&c, "status-page-tablet.png").await;
    c.close().await.unwrap();

    // What the browser did is in the audit trail, and no token is in the log.
    let log = gw.log();
    assert!(!log.contains(ADMIN_TOKEN) && !log.contains(VIEWER_TOKEN));
    let audit = std::fs::read_to_string(dir.path().join("audit.log")).unwrap();
    assert!(audit.contains("admin_read_only"), "{audit}");
    assert!(audit.contains("admin_no_credentials"), "{audit}");
}
