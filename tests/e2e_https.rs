//! HTTPS in and out through the real binary: readings posted over HTTP ingest and acknowledged
//! 201 survive `kill -9`; an HTTPS uplink that answers 5xx, drops connections or becomes slow
//! (and flaps between those and health) loses its traffic to the MQTT uplink within a bounded
//! number of requests and gets it back when it recovers, with nothing lost or reordered per
//! device (asserted from what the servers received).
//!
//! The HTTPS uplink's TLS behaviour (certificates, host names, TLS 1.1, mTLS) is proven against a
//! real TLS server in `crates/http/tests/https_uplink.rs`; here the endpoint is a plain-HTTP fault
//! injector on loopback (`allow_plain_http`), which is what a fake is for.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Gateway, Mosquitto, Subscriber, free_tcp_port, wait_for};

/// One reading as a server received it.
#[derive(Debug, Clone)]
struct Got {
    id: String,
    device: String,
    seq: Option<u64>,
}

fn got(v: &serde_json::Value) -> Option<Got> {
    Some(Got {
        id: v["id"].as_str()?.to_owned(),
        device: v["device"].as_str()?.to_owned(),
        seq: v["records"]
            .as_array()?
            .iter()
            .find(|r| r["n"] == "seq")
            .and_then(|r| r["v"].as_f64())
            .map(|f| f as u64),
    })
}

/// Per device, first arrivals must come in counter order (`repeats`: a device that re-sent a
/// reading it got no answer for may show the same counter twice, under two ids).
fn assert_in_device_order(server: &str, seen: &[Got], repeats: bool) {
    let mut first = HashSet::new();
    let mut last: HashMap<&str, u64> = HashMap::new();
    for g in seen {
        if !first.insert(g.id.clone()) {
            continue;
        }
        let Some(seq) = g.seq else { continue };
        if let Some(prev) = last.insert(&g.device, seq) {
            assert!(
                seq > prev || (repeats && seq == prev),
                "{server}: {} reading {seq} after {prev}",
                g.device
            );
        }
    }
}

const OK: u8 = 0;
const FAIL: u8 = 1;
const DROP: u8 = 2;
const SLOW: u8 = 3;

/// A plain-HTTP/1.1 endpoint that answers every batch as its mode says: 200 (and records the
/// readings), 503, or closing the connection without an answer.
struct FaultServer {
    port: u16,
    mode: Arc<AtomicU8>,
    received: Arc<Mutex<Vec<Got>>>,
    refused: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl FaultServer {
    fn start() -> FaultServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let s = FaultServer {
            port,
            mode: Arc::new(AtomicU8::new(OK)),
            received: Arc::default(),
            refused: Arc::default(),
            stop: Arc::default(),
        };
        let (mode, received, refused, stop) = (
            s.mode.clone(),
            s.received.clone(),
            s.refused.clone(),
            s.stop.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (mode, received, refused) =
                            (mode.clone(), received.clone(), refused.clone());
                        std::thread::spawn(move || serve(conn, &mode, &received, &refused));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        s
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }

    fn received(&self) -> Vec<Got> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(conn: TcpStream, mode: &AtomicU8, received: &Mutex<Vec<Got>>, refused: &AtomicUsize) {
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut conn = conn;
    loop {
        let mut len = 0usize;
        let mut auth = false;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let l = line.trim_end().to_ascii_lowercase();
            if l.is_empty() {
                break;
            }
            if let Some(v) = l.strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
            auth |= l == "authorization: bearer e2e-uplink-token";
        }
        let mut body = vec![0; len];
        reader.read_exact(&mut body).unwrap();
        assert!(auth, "the uplink sends its bearer token");
        match mode.load(Ordering::SeqCst) {
            OK => {
                let batch: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
                received
                    .lock()
                    .unwrap()
                    .extend(batch.iter().filter_map(got));
                conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                    .unwrap();
            }
            FAIL => {
                refused.fetch_add(1, Ordering::SeqCst);
                let _ = conn
                    .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n");
            }
            DROP => {
                refused.fetch_add(1, Ordering::SeqCst);
                return;
            }
            _ => {
                // Slower than the uplink's timeout: it gives up first.
                refused.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_secs(2));
                return;
            }
        }
    }
}

/// How many of `acked` reached the endpoint or the broker.
fn delivered(server: &FaultServer, at_cloud: &[Got], acked: &HashSet<String>) -> usize {
    let mut ids: HashSet<String> = server.received().into_iter().map(|g| g.id).collect();
    ids.extend(at_cloud.iter().map(|g| g.id.clone()));
    acked.iter().filter(|id| ids.contains(*id)).count()
}

fn metric_lines(gw: &Gateway, prefix: &str) -> Vec<String> {
    gw.metrics()
        .lines()
        .filter(|l| l.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

/// Breaker transitions of `uplink` into `to` so far (all reasons).
fn transitions(gw: &Gateway, uplink: &str, to: &str) -> u64 {
    metric_lines(gw, "wardgate_selector_breaker_transitions_total")
        .iter()
        .filter(|l| {
            l.contains(&format!("uplink=\"{uplink}\"")) && l.contains(&format!("to=\"{to}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn drain_mqtt(sub: &Subscriber, into: &mut Vec<Got>, quiet: Duration) {
    while let Some((topic, payload)) = sub.next(quiet) {
        if topic.ends_with("/status") {
            continue;
        }
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&payload) {
            into.extend(got(&v));
        }
    }
}

#[test]
fn a_failing_https_uplink_loses_its_traffic_to_mqtt_and_gets_it_back_without_loss_or_reordering() {
    let server = FaultServer::start();
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "wardgate/#");
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(
        dir.path(),
        &broker.url(),
        &format!(
            r#"
[[uplinks]]
type = "https"
name = "hospital"
url = "http://127.0.0.1:{}/readings"
allow_plain_http = true
token = "e2e-uplink-token"
timeout = "1s"
retry_min = "50ms"
retry_max = "200ms"
batch_max_readings = 50
[selector]
cool_down = "1s"
consecutive_failures = 3
[[selector.classes]]
class = "vital"
failover = ["hospital", "cloud"]
"#,
            server.port
        ),
    );
    let mut acked = HashSet::new();
    let load = |acked: &mut HashSet<String>, phase: &str, n: usize| {
        let report = common::load::run_as(phase, gw.coap, n, 4, Duration::from_secs(60), &|| false);
        assert_eq!(report.acked.len(), n);
        acked.extend(report.acked.into_iter().map(|(_, id)| id));
    };

    // Healthy: vitals go to the HTTPS endpoint.
    load(&mut acked, "healthy", 200);
    wait_for(
        "the endpoint to get 200 readings",
        Duration::from_secs(20),
        || (server.received().len() >= 200).then_some(()),
    );
    let mut at_cloud = Vec::new();
    drain_mqtt(&sub, &mut at_cloud, Duration::from_millis(500));
    assert!(
        at_cloud.is_empty(),
        "vitals went to the preferred uplink only"
    );

    // It fails in one way after another (503, dropped connections, answers slower than the
    // uplink's timeout), recovering in between: each time the breaker opens, MQTT takes over,
    // and after the cool-down a probe closes it and vitals go back.
    for (round, fault) in [FAIL, DROP, SLOW].into_iter().enumerate() {
        let opened = transitions(&gw, "hospital", "open");
        let refused_before = server.refused.load(Ordering::SeqCst);
        server.set(fault);
        load(&mut acked, &format!("fault{round}"), 150);
        wait_for(
            "the hospital breaker to open",
            Duration::from_secs(20),
            || (transitions(&gw, "hospital", "open") > opened).then_some(()),
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while delivered(&server, &at_cloud, &acked) < acked.len() {
            assert!(
                Instant::now() < deadline,
                "readings stuck after failover {round}"
            );
            drain_mqtt(&sub, &mut at_cloud, Duration::from_millis(300));
        }
        let refused = server.refused.load(Ordering::SeqCst) - refused_before;
        assert!(
            refused <= 20,
            "{refused} requests failed before the traffic moved (bounded by the breaker)"
        );

        server.set(OK);
        let (closed, before) = (
            transitions(&gw, "hospital", "closed"),
            server.received().len(),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let background = {
            let (target, stop, phase) = (gw.coap, stop.clone(), format!("recovered{round}"));
            std::thread::spawn(move || {
                common::load::run_as(&phase, target, 100_000, 4, Duration::from_secs(60), &|| {
                    stop.load(Ordering::Relaxed)
                })
            })
        };
        wait_for(
            "the hospital breaker to close again",
            Duration::from_secs(30),
            || {
                (transitions(&gw, "hospital", "closed") > closed
                    && server.received().len() > before + 100)
                    .then_some(())
            },
        );
        stop.store(true, Ordering::Relaxed);
        let report = background.join().unwrap();
        acked.extend(report.acked.into_iter().map(|(_, id)| id));
        let deadline = Instant::now() + Duration::from_secs(30);
        while delivered(&server, &at_cloud, &acked) < acked.len() {
            assert!(
                Instant::now() < deadline,
                "{} of {} delivered after recovery {round}",
                delivered(&server, &at_cloud, &acked),
                acked.len()
            );
            drain_mqtt(&sub, &mut at_cloud, Duration::from_millis(300));
        }
    }
    assert_in_device_order("https endpoint", &server.received(), false);
    assert_in_device_order("mqtt broker", &at_cloud, false);
    broker.assert_no_dropped_messages();
}

/// Posts one SenML reading over plain HTTP/1.1; the ids of a 201, `None` on anything else
/// (including a connection the gateway never answered).
fn post(addr: SocketAddr, device: &str, seq: u64) -> Option<Vec<String>> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let body = format!(r#"[{{"n":"seq","v":{seq}}}]"#);
    write!(
        s,
        "POST /v1/devices/{device}/readings HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\
         Content-Type: application/senml+json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    if !out.starts_with("HTTP/1.1 201") {
        return None;
    }
    let json = out.split_once("\r\n\r\n")?.1;
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    Some(
        v["ids"]
            .as_array()?
            .iter()
            .filter_map(|i| i.as_str().map(str::to_owned))
            .collect(),
    )
}

#[test]
fn readings_acknowledged_over_https_ingest_survive_kill_9_under_load() {
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "wardgate/#");
    let dir = tempfile::tempdir().unwrap();
    let port = free_tcp_port();
    let mut gw = Gateway::start(
        dir.path(),
        &broker.url(),
        &format!(
            r#"
[ingest.http]
enabled = true
listen = "127.0.0.1:{port}"
allow_plain = true
"#
        ),
    );
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_for("HTTP ingest to answer", Duration::from_secs(20), || {
        post(addr, "probe", 0).map(|_| ())
    });

    // Four devices post as fast as they are answered; each keeps a reading until it got 201.
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|d| {
            let (acked, stop) = (acked.clone(), stop.clone());
            std::thread::spawn(move || {
                let device = format!("dev-{d}");
                let mut seq = 0;
                while !stop.load(Ordering::Relaxed) {
                    match post(addr, &device, seq) {
                        Some(ids) => {
                            acked.lock().unwrap().extend(ids);
                            seq += 1;
                        }
                        None => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            })
        })
        .collect();
    wait_for("500 acknowledged readings", Duration::from_secs(30), || {
        (acked.lock().unwrap().len() >= 500).then_some(())
    });
    gw.kill();
    let at_kill = acked.lock().unwrap().len();
    gw.restart();
    wait_for(
        "more readings after the restart",
        Duration::from_secs(30),
        || (acked.lock().unwrap().len() >= at_kill + 200).then_some(()),
    );
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let acked: HashSet<String> = acked.lock().unwrap().iter().cloned().collect();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        drain_mqtt(&sub, &mut seen, Duration::from_millis(500));
        let ids: HashSet<&str> = seen.iter().map(|g| g.id.as_str()).collect();
        let missing = acked.iter().filter(|id| !ids.contains(id.as_str())).count();
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of {} readings acknowledged with 201 never arrived",
            acked.len()
        );
    }
    assert_in_device_order("broker", &seen, true);
    broker.assert_no_dropped_messages();
}

/// The traffic monitor on the HTTPS ingest: each TLS session (curl posting one reading) becomes
/// a flow record (`protocol` 6, `app_protocol` `https`, the handshake outcome, bytes each way
/// counted above TLS, never their content) and TCP segments in the capture that tshark reads
/// (true sizes, zeroed bytes).
#[test]
fn https_ingest_sessions_become_flow_records() {
    common::require_tool("/usr/bin/curl");
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let pki = wardgate_testkit::Pki::generate();
    let port = free_tcp_port();
    let flows = dir.path().join("flows");
    let captures = dir.path().join("captures");
    let mut gw = Gateway::start(
        dir.path(),
        &broker.url(),
        &format!(
            "[ingest.http]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\n\
             [ingest.http.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n\
             [monitor.flows]\nenabled = true\ndir = \"{}\"\n\
             [monitor.capture]\nenabled = true\ndir = \"{}\"\nprotocols = [\"https\"]\n",
            pki.server_cert.display(),
            pki.server_key.display(),
            flows.display(),
            captures.display()
        ),
    );
    let url = format!("https://127.0.0.1:{port}/v1/devices/bed-tls/readings");
    let curl = || {
        std::process::Command::new("/usr/bin/curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
            .arg(&pki.ca)
            .args(["-H", "Content-Type: application/senml+json"])
            .args(["--data", r#"[{"n":"spo2","u":"%","v":97}]"#, &url])
            .output()
            .expect("run curl")
    };
    wait_for("HTTPS ingest to answer", Duration::from_secs(20), || {
        let out = curl();
        (out.stdout == b"201").then_some(())
    });
    let out = curl();
    assert_eq!(
        out.stdout,
        b"201",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Plain HTTP to the TLS port: the handshake fails, and that is a flow of its own.
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    assert!(post(addr, "bed-plain", 0).is_none());
    let failed = "wardgate_http_ingest_tls_handshake_failures_total{reason=\"error\"}";
    wait_for(
        "the failed handshake counted",
        Duration::from_secs(10),
        || (gw.metric(failed) >= 1.0).then_some(()),
    );
    let status = gw.terminate();
    assert!(status.success(), "{status}\n{}", gw.log());

    // The capture: each session's reads and writes as TCP segments between the real addresses,
    // their sizes true and their bytes zero (never the plaintext a stream tap sees).
    let files: Vec<_> = std::fs::read_dir(&captures)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "pcapng"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let rows = common::tshark_fields(
        &files[0],
        &["-Y", &format!("tcp.port == {port}")],
        &[
            "ip.src",
            "tcp.srcport",
            "tcp.dstport",
            "tcp.len",
            "tcp.payload",
        ],
    );
    let to_gateway: Vec<_> = rows.iter().filter(|r| r[2] == port.to_string()).collect();
    let from_gateway: Vec<_> = rows.iter().filter(|r| r[1] == port.to_string()).collect();
    assert!(
        to_gateway
            .iter()
            .any(|r| r[3].parse::<u32>().unwrap_or(0) > 100)
            && from_gateway
                .iter()
                .any(|r| r[3].parse::<u32>().unwrap_or(0) > 50),
        "requests in, answers out: {rows:?}"
    );
    for r in &rows {
        assert_eq!(r[0], "127.0.0.1", "{r:?}");
        assert!(
            r[4].bytes().all(|b| b == b'0' || b == b':'),
            "a segment's bytes are written: {r:?}"
        );
    }

    let json = std::fs::read_to_string(flows.join("flows.jsonl")).unwrap();
    let sessions: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["dst_port"] == port)
        .collect();
    let (failed, sessions): (Vec<_>, Vec<_>) = sessions
        .into_iter()
        .partition(|r| r["dtls_handshake"] == "error");
    assert_eq!(failed.len(), 1, "{json}");
    assert_eq!(
        (
            failed[0]["tot_fwd_pkts"].as_u64(),
            failed[0]["protocol"].as_u64()
        ),
        (Some(0), Some(6)),
        "{json}"
    );
    assert!(sessions.len() >= 2, "one flow per curl session: {json}");
    for r in &sessions {
        assert_eq!(
            (r["protocol"].as_u64(), r["app_protocol"].as_str()),
            (Some(6), Some("https")),
            "{r}"
        );
        assert_eq!(r["dtls_handshake"], "established", "{r}");
        assert_eq!(r["src_ip"], "127.0.0.1");
        // A request went in, an answer came out; nothing of CoAP.
        assert!(r["totlen_fwd_pkts"].as_f64() > Some(100.0), "{r}");
        assert!(r["totlen_bwd_pkts"].as_f64() > Some(50.0), "{r}");
        assert_eq!(
            (r["coap_requests"].as_u64(), r["malformed_pkts"].as_u64()),
            (Some(0), Some(0)),
            "{r}"
        );
    }
}

/// The HTTPS ingest's refusals of credentials reach the anomaly detectors as the CoAP taps'
/// 4.01s do: five posts from one address without a token, to a gateway whose registry wants
/// one (401 each), make one `auth_failures` security reading upstream naming that address.
#[test]
fn refused_http_credentials_become_an_auth_failures_security_reading() {
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "wardgate/#");
    let dir = tempfile::tempdir().unwrap();
    let port = free_tcp_port();
    let devices = dir.path().join("devices.toml");
    std::fs::write(
        &devices,
        "[[device]]\nid = \"bed-1\"\n[[device.token]]\nid = \"t1\"\n\
         sha256 = \"dff27397377f952ad93f2bd12f3e6c241f611a5ac7c89bacc6840271ea01a61c\"\n",
    )
    .unwrap();
    let _gw = Gateway::start(
        dir.path(),
        &broker.url(),
        &format!(
            "[registry]\npath = \"{}\"\n\
             [ingest.http]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\n\
             [monitor.flows]\nenabled = true\ndir = \"{}\"\n\
             [monitor.anomalies]\nenabled = true\nlearning = \"0s\"\nwindow = \"60s\"\n\
             auth_failure_threshold = 5\n",
            devices.display(),
            dir.path().join("flows").display()
        ),
    );
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_for("HTTP ingest to answer", Duration::from_secs(20), || {
        TcpStream::connect(addr).ok()
    });
    for seq in 0..5 {
        // No token: refused (401), so `post` sees no 201.
        assert!(post(addr, "bed-1", seq).is_none());
    }
    let events = sub.collect(1, Duration::from_secs(30), |t| t.ends_with("/security"));
    assert_eq!(events.len(), 1, "no security reading upstream");
    let v: serde_json::Value = serde_json::from_str(&events[0].1).unwrap();
    let records = v["records"].as_array().unwrap();
    let field = |n: &str| records.iter().find(|r| r["n"] == n).cloned();
    assert_eq!(
        field("anomaly").and_then(|r| r["vs"].as_str().map(str::to_owned)),
        Some("auth_failures".to_owned()),
        "{v}"
    );
    assert!(
        field("peer")
            .and_then(|r| r["vs"].as_str().map(|p| p.starts_with("127.0.0.1:")))
            .unwrap_or(false),
        "{v}"
    );
    assert_eq!(
        field("count").and_then(|r| r["v"].as_f64()),
        Some(5.0),
        "{v}"
    );
}
