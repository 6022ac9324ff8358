//! The traffic monitor through the real binary: libcoap's `coap-client-notls` talks to a
//! gateway whose `[monitor.capture]` is enabled, and Debian's `tshark` decodes the pcapng it
//! wrote: CoAP method, Uri-Path options and payload match what was sent (and the payload is
//! gone, its length kept, under the default redaction).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Gateway, Mosquitto, coap_send, require_tool, wait_for};

const TSHARK: &str = "/usr/bin/tshark";

fn capture_files(dir: &Path) -> Vec<PathBuf> {
    wardgate_monitor::ring::list(dir)
        .unwrap()
        .into_iter()
        .map(|(_, p)| p)
        .collect()
}

/// One decoded packet of the capture.
#[derive(Debug)]
struct Decoded {
    src_port: u16,
    dst_port: u16,
    code: u8,
    uri_path: String,
    payload_len: Option<usize>,
    datagram: Vec<u8>,
    checksum_good: bool,
}

/// `tshark -r FILE -T fields …`, decoding `port` as CoAP (the test gateway's port is not 5683).
fn decode(file: &Path, port: u16) -> Vec<Decoded> {
    require_tool(TSHARK);
    let out = Command::new(TSHARK)
        .args(["-n", "-o", "udp.check_checksum:TRUE", "-d"])
        .arg(format!("udp.port=={port},coap"))
        .arg("-r")
        .arg(file)
        .args(["-T", "fields", "-E", "separator=|"])
        .args(["-e", "udp.srcport", "-e", "udp.dstport", "-e", "coap.code"])
        .args(["-e", "coap.opt.uri_path", "-e", "coap.payload_length"])
        .args(["-e", "udp.payload", "-e", "udp.checksum.status"])
        .output()
        .expect("run tshark");
    assert!(
        out.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            assert_eq!(f.len(), 7, "{l}");
            Decoded {
                src_port: f[0].parse().unwrap(),
                dst_port: f[1].parse().unwrap(),
                code: f[2].parse().unwrap(),
                uri_path: f[3].to_owned(),
                payload_len: f[4].parse().ok(),
                datagram: (0..f[5].len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&f[5][i..i + 2], 16).unwrap())
                    .collect(),
                checksum_good: f[6] == "1",
            }
        })
        .collect()
}

fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Sends a POST and a PUT with libcoap, stops the gateway, returns what tshark decoded.
/// POSTs one temperature reading as bed-7 with libcoap's client; it must be accepted.
fn post_temperature(gw: &Gateway) {
    let (ok, out) = coap_send(
        "post",
        0,
        "36.6",
        &gw.coap_uri("v1/readings/bed-7/temperature"),
    )
    .outcome();
    assert!(ok, "{out}");
}

fn capture_two_readings(redact: Option<bool>) -> (Vec<Decoded>, Vec<u8>, u16) {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let captures = dir.path().join("captures");
    let redact = redact.map_or(String::new(), |r| format!("redact_payloads = {r}\n"));
    let mut gw = Gateway::start(
        dir.path(),
        &broker.url(),
        &format!(
            "[monitor.capture]\nenabled = true\ndir = \"{}\"\n{redact}",
            captures.display()
        ),
    );
    post_temperature(&gw);
    let (ok, out) = coap_send("put", 0, "97", &gw.coap_uri("v1/readings/bed-8/spo2")).outcome();
    assert!(ok, "{out}");
    wait_for(
        "4 captured datagrams in /metrics",
        Duration::from_secs(30),
        || metric(&gw.metrics(), "wardgate_monitor_capture_packets_total").filter(|n| *n >= 4),
    );
    assert_eq!(
        metric(&gw.metrics(), "wardgate_monitor_capture_dropped_total"),
        Some(0)
    );
    let status = gw.terminate();
    assert!(status.success(), "{status}\n{}", gw.log());
    let files = capture_files(&captures);
    assert_eq!(files.len(), 1, "{files:?}");
    let raw = std::fs::read(&files[0]).unwrap();
    let port = gw.coap.port();
    (decode(&files[0], port), raw, port)
}

fn requests(all: &[Decoded], port: u16) -> Vec<&Decoded> {
    all.iter().filter(|d| d.dst_port == port).collect()
}

fn responses(all: &[Decoded], port: u16) -> Vec<&Decoded> {
    all.iter().filter(|d| d.src_port == port).collect()
}

#[test]
fn tshark_decodes_method_uri_path_and_payload_of_captured_coap_traffic() {
    let (decoded, _, port) = capture_two_readings(Some(false));
    assert!(decoded.iter().all(|d| d.checksum_good), "{decoded:?}");
    let req = requests(&decoded, port);
    assert_eq!(req.len(), 2, "{decoded:?}");
    assert_eq!((req[0].code, req[1].code), (2, 3), "POST then PUT");
    assert_eq!(req[0].uri_path, "v1,readings,bed-7,temperature");
    assert_eq!(req[1].uri_path, "v1,readings,bed-8,spo2");
    assert_eq!(req[0].payload_len, Some(4));
    assert!(req[0].datagram.ends_with(b"\xff36.6"), "{:?}", req[0]);
    assert!(req[1].datagram.ends_with(b"\xff97"), "{:?}", req[1]);
    let resp = responses(&decoded, port);
    assert_eq!(resp.len(), 2, "{decoded:?}");
    assert!(
        resp.iter().all(|r| r.code >> 5 == 2 && r.src_port == port),
        "2.xx answers from the gateway's port: {resp:?}"
    );
    assert_eq!(resp[0].dst_port, req[0].src_port, "the real 5-tuple");
}

#[test]
fn captures_redact_payloads_by_default_and_keep_headers_options_and_lengths() {
    let (decoded, raw, port) = capture_two_readings(None);
    assert!(decoded.iter().all(|d| d.checksum_good), "{decoded:?}");
    let req = requests(&decoded, port);
    assert_eq!(req.len(), 2, "{decoded:?}");
    assert_eq!((req[0].code, req[1].code), (2, 3));
    assert_eq!(req[0].uri_path, "v1,readings,bed-7,temperature");
    assert_eq!(req[0].payload_len, Some(4), "the length is kept");
    assert!(req[0].datagram.ends_with(b"\xff\0\0\0\0"), "{:?}", req[0]);
    assert!(req[1].datagram.ends_with(b"\xff\0\0"), "{:?}", req[1]);
    assert!(
        !raw.windows(4).any(|w| w == b"36.6"),
        "the reading's value is nowhere in the file"
    );
}

#[test]
fn flow_records_count_coap_exchanges_per_flow_and_label_the_attackers_address() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows");
    let mut gw = Gateway::start(
        dir.path(),
        &broker.url(),
        &format!(
            "[monitor.flows]\nenabled = true\ndir = \"{}\"\n\
             [[monitor.flows.labels]]\naddresses = [\"127.0.0.66\"]\nlabel = \"attack\"\n",
            flows.display()
        ),
    );
    // A sensor posts two readings (two client runs: two flows, each its own source port).
    for v in ["36.6", "36.7"] {
        let (ok, out) =
            coap_send("post", 0, v, &gw.coap_uri("v1/readings/bed-7/temperature")).outcome();
        assert!(ok, "{out}");
    }
    // A scanner from another address asks for resources that do not exist.
    for path in ["admin", ".well-known/secret"] {
        let run = common::coap_client(&["-a", "127.0.0.66", "-m", "get", &gw.coap_uri(path)]);
        assert!(run.text().contains("4.04"), "{}", run.text());
    }
    let status = gw.terminate();
    assert!(status.success(), "{status}\n{}", gw.log());

    let (json, records) = common::flow_records(&flows);
    assert_eq!(records.len(), 4, "{json}");
    let port = gw.coap.port();
    let n = |r: &serde_json::Value, k: &str| r[k].as_u64().unwrap_or(0);
    for r in &records {
        assert_eq!(r["dst_port"], port, "the client spoke first: {r}");
        // One request and its answer; a retransmission or a separate response (when a commit
        // is slow) adds packets, never removes them.
        assert!(
            n(r, "tot_fwd_pkts") >= 1 && n(r, "tot_bwd_pkts") >= 1,
            "{r}"
        );
        assert!(n(r, "coap_con") >= 1 && n(r, "coap_ack") >= 1, "{r}");
        assert!(n(r, "coap_requests") >= 1, "{r}");
        assert_eq!(r["malformed_pkts"], 0);
        assert_eq!(r["end_reason"], "shutdown");
        assert_eq!(r["protocol"], 17);
        assert!(r["flow_duration"].as_f64().unwrap() > 0.0, "{r}");
    }
    let (attacks, sensors): (Vec<_>, Vec<_>) =
        records.iter().partition(|r| r["src_ip"] == "127.0.0.66");
    assert_eq!((attacks.len(), sensors.len()), (2, 2));
    for a in &attacks {
        assert_eq!(a["label"], "attack");
        assert!(n(a, "coap_404") >= 1 && n(a, "coap_2xx") == 0, "{a}");
        assert_eq!(n(a, "coap_404"), n(a, "coap_4xx"), "{a}");
    }
    for s in &sensors {
        assert_eq!(s["label"], "benign");
        assert!(n(s, "coap_2xx") >= 1 && n(s, "coap_4xx") == 0, "{s}");
        let codes = s["coap_codes"].as_object().unwrap();
        assert!(codes.keys().all(|k| k.starts_with("2.")), "{s}");
    }

    // The CSV holds the same flows under its documented header.
    let csv = std::fs::read_to_string(flows.join("flows.csv")).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(header[..3], ["flow_id", "timestamp", "src_ip"]);
    assert_eq!(header.last(), Some(&"label"));
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 4);
    assert_eq!(rows.iter().filter(|r| r.ends_with(",attack")).count(), 2);
}

const TOKEN: &str = "e2e-admin-token-5b1c9d";
const TOKEN_SHA256: &str = "171af1420a6b96d677b85fe0e59f95055a264ba254305abf807e17a7cee758f6";

/// One admin request whose answer body may be binary: status, headers, body.
fn admin_bytes(addr: std::net::SocketAddr, path: &str) -> (u16, String, Vec<u8>) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&out[..split]).into_owned();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head, out[split + 4..].to_vec())
}

#[test]
fn an_administrator_starts_a_capture_stops_it_and_downloads_a_file_tshark_decodes() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let captures = dir.path().join("captures");
    let admin_port = common::free_tcp_port();
    let admin = std::net::SocketAddr::from(([127, 0, 0, 1], admin_port));
    let gw = Gateway::start(
        dir.path(),
        &broker.url(),
        &format!(
            "[monitor.capture]\ndir = \"{}\"\n\
             [admin]\nenabled = true\nlisten = \"127.0.0.1:{admin_port}\"\n\
             [[admin.tokens]]\nid = \"ops-1\"\nsha256 = \"{TOKEN_SHA256}\"\n",
            captures.display()
        ),
    );
    let req = |method: &str, path: &str, token: Option<&str>, body: &str| {
        common::admin_request(admin, method, path, token, body)
    };
    // Nothing records until asked; without the token nothing starts.
    let (status, body) = req("GET", "/admin/v1/captures", Some(TOKEN), "");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        v["current"].is_null() && v["files"].as_array().unwrap().is_empty(),
        "{body}"
    );
    assert_eq!(req("POST", "/admin/v1/captures", None, "{}").0, 401);
    assert_eq!(
        req(
            "POST",
            "/admin/v1/captures",
            Some(TOKEN),
            r#"{"redact_payloads":false}"#
        )
        .0,
        400,
        "payloads stay redacted"
    );

    let (status, body) = req(
        "POST",
        "/admin/v1/captures",
        Some(TOKEN),
        r#"{"addresses":["127.0.0.1"],"duration":"10m"}"#,
    );
    assert_eq!(status, 201, "{body}");
    let started: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(started["started_by"], "admin:ops-1", "{body}");
    assert!(started["until"].is_string());
    assert_eq!(req("POST", "/admin/v1/captures", Some(TOKEN), "{}").0, 409);

    post_temperature(&gw);
    wait_for("2 captured datagrams", Duration::from_secs(30), || {
        metric(&gw.metrics(), "wardgate_monitor_capture_packets_total").filter(|n| *n >= 2)
    });
    let (status, body) = req("DELETE", "/admin/v1/captures/current", Some(TOKEN), "");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        req("DELETE", "/admin/v1/captures/current", Some(TOKEN), "").0,
        404
    );

    let (_, body) = req("GET", "/admin/v1/captures", Some(TOKEN), "");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(v["current"].is_null());
    let files = v["files"].as_array().unwrap();
    assert_eq!(files.len(), 1, "{body}");
    let name = files[0]["name"].as_str().unwrap();
    let (status, head, pcap) = admin_bytes(admin, &format!("/admin/v1/captures/files/{name}"));
    assert_eq!(status, 200, "{head}");
    assert!(
        head.to_ascii_lowercase().contains("application/x-pcapng"),
        "{head}"
    );
    assert_eq!(pcap.len() as u64, files[0]["bytes"].as_u64().unwrap());
    let local = dir.path().join("download.pcapng");
    std::fs::write(&local, &pcap).unwrap();
    let decoded = decode(&local, gw.coap.port());
    let posts: Vec<&Decoded> = decoded.iter().filter(|d| d.code == 2).collect();
    assert_eq!(posts.len(), 1, "{decoded:?}");
    assert_eq!(posts[0].uri_path, "v1,readings,bed-7,temperature");
    // Only names the ring gives are served.
    for bad in ["..%2Foutbox.db", "capture-x.pcapng", "flows.jsonl"] {
        let (status, _, _) = admin_bytes(admin, &format!("/admin/v1/captures/files/{bad}"));
        assert_eq!(status, 404, "{bad}");
    }
}

/// Sends `n` datagrams that are not CoAP from `from` (an address of the loopback network) to
/// the gateway.
fn send_junk(from: &str, to: std::net::SocketAddr, n: usize) {
    let s = std::net::UdpSocket::bind((from, 0)).unwrap();
    for i in 0..n {
        // Version 3 in the first byte: not CoAP (RFC 7252 §3 requires version 1).
        s.send_to(&[0xff, 0x00, i as u8, 0x42, 0x13, 0x37], to)
            .unwrap();
    }
}

/// The anomaly detectors through the real binary, with a simulated attacker on three loopback
/// addresses: a resource scan (libcoap GETs of paths that do not exist, 4.04), a flood of
/// datagrams that are not CoAP, and a burst of unauthenticated posts (4.01 from the registry).
/// Each becomes one `security`-class reading from the gateway itself at the upstream broker
/// (schema-valid, naming the source), a metric and an audit record, and the flow records of
/// the same traffic carry the labels the simulator's addresses are given.
#[test]
fn a_scan_a_malformed_flood_and_an_auth_failure_burst_arrive_upstream_as_security_readings() {
    let broker = Mosquitto::start();
    let sub = common::Subscriber::start(broker.port, "wardgate/#");
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows");
    let devices = dir.path().join("devices.toml");
    let audit = dir.path().join("audit.log");
    std::fs::write(
        &devices,
        "[[device]]\nid = \"bed-12\"\n[device.psk]\nidentity = \"bed-12\"\nkey = \"hex:000102030405060708090a0b0c0d0e0f\"\n",
    )
    .unwrap();
    let mut gw = Gateway::start(
        dir.path(),
        &broker.url(),
        &format!(
            "[registry]\npath = \"{}\"\n[audit]\npath = \"{}\"\n\
             [monitor.flows]\nenabled = true\ndir = \"{}\"\n\
             [[monitor.flows.labels]]\naddresses = [\"127.0.0.66\"]\nlabel = \"scan\"\n\
             [[monitor.flows.labels]]\naddresses = [\"127.0.0.67\"]\nlabel = \"malformed\"\n\
             [[monitor.flows.labels]]\naddresses = [\"127.0.0.68\"]\nlabel = \"auth-failure\"\n\
             [monitor.anomalies]\nenabled = true\nlearning = \"0s\"\nwindow = \"60s\"\n\
             scan_threshold = 5\nmalformed_threshold = 5\nauth_failure_threshold = 5\n",
            devices.display(),
            audit.display(),
            flows.display()
        ),
    );
    for i in 0..5 {
        let run = common::coap_client(&[
            "-a",
            "127.0.0.66",
            "-m",
            "get",
            &gw.coap_uri(&format!("probe-{i}")),
        ]);
        assert!(run.text().contains("4.04"), "{}", run.text());
    }
    send_junk("127.0.0.67", gw.coap, 5);
    for v in 0..5 {
        let run = common::coap_client(&[
            "-a",
            "127.0.0.68",
            "-m",
            "post",
            "-e",
            &format!("{v}"),
            &gw.coap_uri("v1/readings/bed-12/spo2"),
        ]);
        assert!(run.text().contains("4.01"), "{}", run.text());
    }

    let validator = common::schema();
    let events = sub.collect(3, Duration::from_secs(30), |t| t.ends_with("/security"));
    let mut seen = Vec::new();
    for (topic, payload) in &events {
        assert_eq!(topic, "wardgate/test-ward/test-ward/security");
        let v = common::valid_reading(&validator, payload);
        assert_eq!(
            (v["class"].as_str(), v["device"].as_str()),
            (Some("security"), Some("test-ward"))
        );
        let records = v["records"].as_array().unwrap();
        let text = |n: &str| {
            records
                .iter()
                .find(|r| r["n"] == n)
                .and_then(|r| r["vs"].as_str())
                .unwrap_or_default()
                .to_owned()
        };
        let count = records.iter().find(|r| r["n"] == "count").unwrap()["v"].as_f64();
        assert_eq!(count, Some(5.0), "{payload}");
        let ip = text("peer")
            .rsplit_once(':')
            .map(|(ip, _)| ip.to_owned())
            .unwrap_or_default();
        seen.push((text("anomaly"), ip));
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            ("auth_failures".to_owned(), "127.0.0.68".to_owned()),
            ("malformed_flood".to_owned(), "127.0.0.67".to_owned()),
            ("resource_scan".to_owned(), "127.0.0.66".to_owned()),
        ]
    );
    // The task that stored them counts each once its commit is answered, which may be a moment
    // after the uplink already delivered it.
    let text = wait_for(
        "3 anomaly readings counted",
        Duration::from_secs(10),
        || {
            let text = gw.metrics();
            (metric(&text, "wardgate_monitor_anomaly_readings_total") == Some(3)).then_some(text)
        },
    );
    for kind in ["resource_scan", "malformed_flood", "auth_failures"] {
        let series = format!("wardgate_monitor_anomalies_total{{kind=\"{kind}\"}}");
        assert_eq!(metric(&text, &series), Some(1), "{series}\n{text}");
    }
    assert_eq!(
        metric(
            &text,
            "wardgate_monitor_anomalies_total{kind=\"rate_spike\"}"
        ),
        Some(0)
    );
    let status = gw.terminate();
    assert!(status.success(), "{status}\n{}", gw.log());
    // Nothing else was raised in the meantime (the shutdown stores what was queued).
    assert!(
        sub.next(Duration::from_millis(500))
            .is_none_or(|(t, _)| !t.ends_with("/security"))
    );

    // The audit trail has the three events, chained.
    common::assert_audit_verifies(&audit);
    let trail = std::fs::read_to_string(&audit).unwrap();
    for kind in ["resource_scan", "malformed_flood", "auth_failures"] {
        assert!(
            trail
                .lines()
                .any(|l| l.contains("\"kind\":\"anomaly\"") && l.contains(kind)),
            "{kind} in {trail}"
        );
    }
    // The flow records of the simulated attacks carry its labels.
    let json = std::fs::read_to_string(flows.join("flows.jsonl")).unwrap();
    for line in json.lines() {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        let want = match r["src_ip"].as_str() {
            Some("127.0.0.66") => "scan",
            Some("127.0.0.67") => "malformed",
            Some("127.0.0.68") => "auth-failure",
            _ => "benign",
        };
        assert_eq!(r["label"], want, "{r}");
    }
    for label in ["scan", "malformed", "auth-failure"] {
        assert!(
            json.contains(&format!("\"label\":\"{label}\"")),
            "{label} in {json}"
        );
    }
}

/// A network namespace holding one end of a veth pair whose other end stays here: a ward LAN
/// of two hosts made by the test (root and `ip` from iproute2 needed). Removed on drop.
struct VethLan {
    netns: String,
    host_if: String,
    /// The address of this side (where the CoAP server listens).
    host_ip: String,
    /// The address of the namespace's side (the sensor).
    sensor_ip: String,
}

impl VethLan {
    /// libcoap's server on this side's address, port 5683, until the guard drops.
    fn coap_server(&self) -> common::ChildGuard {
        self.libcoap_server("/usr/bin/coap-server-notls", &[], 5683)
    }

    /// libcoap's OpenSSL server on this side's address (CoAP on 5683, CoAP over DTLS on 5684,
    /// any PSK identity with `key`), until the guard drops.
    fn dtls_server(&self, key: &str) -> common::ChildGuard {
        self.libcoap_server(
            "/usr/bin/coap-server-openssl",
            &["-k", key, "-h", "ward"],
            5684,
        )
    }

    /// `server` (a libcoap server) on this side's address with base port 5683 and `args`, up
    /// once `bound` can no longer be bound.
    fn libcoap_server(&self, server: &str, args: &[&str], bound: u16) -> common::ChildGuard {
        require_tool(server);
        let child = common::ChildGuard(
            Command::new(server)
                .args(["-A", &self.host_ip, "-p", "5683"])
                .args(args)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("start {server}: {e}")),
        );
        wait_for("the libcoap server bound", Duration::from_secs(10), || {
            std::net::UdpSocket::bind((self.host_ip.as_str(), bound))
                .is_err()
                .then_some(())
        });
        child
    }

    /// `wardgate monitor` on this side's interface with `sections` after `[gateway]` and
    /// `[http]`, ready; its log is `dir/monitor.log`.
    fn monitor(&self, dir: &Path, sections: &str) -> (common::ChildGuard, std::net::SocketAddr) {
        let http = common::free_tcp_port();
        let cfg = dir.join("monitor.toml");
        std::fs::write(
            &cfg,
            format!(
                "[gateway]\nid = \"ward-monitor\"\n[http]\nlisten = \"127.0.0.1:{http}\"\n{sections}"
            ),
        )
        .unwrap();
        let monitor = common::ChildGuard(
            Command::new(common::WARDGATE)
                .args(["monitor", "--config"])
                .arg(&cfg)
                .args(["--interface", &self.host_if])
                .stdout(std::process::Stdio::null())
                .stderr(std::fs::File::create(dir.join("monitor.log")).unwrap())
                .spawn()
                .expect("start wardgate monitor"),
        );
        let addr: std::net::SocketAddr = format!("127.0.0.1:{http}").parse().unwrap();
        wait_for("the monitor ready", Duration::from_secs(30), || {
            common::http_get(addr, "/readyz").filter(|(code, _)| *code == 200)
        });
        (monitor, addr)
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("run ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {}: {} (the interface-mode test creates a network namespace: it needs root)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl VethLan {
    fn create() -> VethLan {
        // Unique per test process and per LAN in it (tests run in parallel threads): the
        // names, and a /30 of their own.
        static LANS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = LANS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 60;
        let id = std::process::id();
        let net = format!("10.203.{}", id % 250);
        let lan = VethLan {
            netns: format!("wardgate-mon-{id}-{n}"),
            host_if: format!("wgm{id}x{n}h"),
            host_ip: format!("{net}.{}", 4 * n + 1),
            sensor_ip: format!("{net}.{}", 4 * n + 2),
        };
        let sensor_if = format!("wgm{id}x{n}n");
        ip(&["netns", "add", &lan.netns]);
        ip(&[
            "link",
            "add",
            &lan.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &sensor_if,
        ]);
        ip(&["link", "set", &sensor_if, "netns", &lan.netns]);
        ip(&[
            "addr",
            "add",
            &format!("{}/30", lan.host_ip),
            "dev",
            &lan.host_if,
        ]);
        ip(&["link", "set", &lan.host_if, "up"]);
        let ns = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &lan.netns, "ip"];
            all.extend_from_slice(args);
            ip(&all);
        };
        ns(&[
            "addr",
            "add",
            &format!("{}/30", lan.sensor_ip),
            "dev",
            &sensor_if,
        ]);
        ns(&["link", "set", &sensor_if, "up"]);
        ns(&["link", "set", "lo", "up"]);
        lan
    }

    /// Runs `cmd` inside the namespace (the sensor's host).
    fn exec(&self, cmd: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.netns])
            .args(cmd)
            .output()
            .expect("ip netns exec")
    }
}

impl Drop for VethLan {
    fn drop(&mut self) {
        // Deleting one end deletes the pair; then the namespace.
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .output();
    }
}

/// Interface capture mode: `wardgate monitor` reads a veth interface the test creates, while a
/// sensor in a network namespace talks CoAP (libcoap's client) to a CoAP server (libcoap's
/// `coap-server-notls`) on the other end. The monitor writes the same pcapng (tshark decodes
/// the requests and answers, payloads redacted) and the same flow records as the gateway's
/// own taps, and counts what it saw in `/metrics`.
#[test]
fn interface_mode_captures_and_records_the_flows_of_a_veth_lan() {
    require_tool(TSHARK);
    let lan = VethLan::create();
    let server = lan.coap_server();
    let dir = tempfile::tempdir().unwrap();
    let (mut monitor, addr) = lan.monitor(
        dir.path(),
        &format!(
            "[monitor.capture]\nenabled = true\ndir = \"{data}/captures\"\n\
             [monitor.flows]\nenabled = true\ndir = \"{data}/flows\"\n\
             [[monitor.flows.labels]]\naddresses = [\"{sensor}\"]\nlabel = \"sensor\"\n",
            data = dir.path().display(),
            sensor = lan.sensor_ip
        ),
    );
    // The sensor asks the server three times (three client runs: three flows).
    let uri = format!("coap://{}:5683/", lan.host_ip);
    for _ in 0..3 {
        let out = lan.exec(&["/usr/bin/coap-client-notls", "-m", "get", "-B", "5", &uri]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let datagrams = "wardgate_monitor_interface_datagrams_total";
    wait_for("six datagrams seen", Duration::from_secs(30), || {
        let (_, text) = common::http_get(addr, "/metrics")?;
        (metric(&text, datagrams)? >= 6).then_some(())
    });
    let status = common::terminate(&mut monitor.0);
    let log = std::fs::read_to_string(dir.path().join("monitor.log")).unwrap_or_default();
    assert!(status.success(), "{status}\n{log}");
    drop(server);

    // tshark: the requests and the answers, between the two ends of the veth.
    let files = capture_files(&dir.path().join("captures"));
    assert_eq!(files.len(), 1, "{files:?}");
    let rows = common::tshark_fields(
        &files[0],
        &["-Y", "coap"],
        &["ip.src", "ip.dst", "udp.dstport", "coap.code"],
    );
    let gets = rows
        .iter()
        .filter(|r| r[0] == lan.sensor_ip && r[1] == lan.host_ip && r[2] == "5683" && r[3] == "1")
        .count();
    let contents = rows
        .iter()
        .filter(|r| r[0] == lan.host_ip && r[1] == lan.sensor_ip && r[3] == "69")
        .count();
    assert!(
        gets >= 3 && contents >= 3,
        "GETs {gets}, 2.05s {contents}: {rows:?}"
    );

    // The flows: one per client run, from the sensor to the server, labelled.
    let (json, records) = common::flow_records(&dir.path().join("flows"));
    let records: Vec<serde_json::Value> = records
        .into_iter()
        .filter(|r| r["src_ip"] == lan.sensor_ip.as_str())
        .collect();
    assert_eq!(records.len(), 3, "{json}");
    for r in &records {
        assert_eq!(
            (r["dst_ip"].as_str(), r["dst_port"].as_u64()),
            (Some(lan.host_ip.as_str()), Some(5683)),
            "{r}"
        );
        assert_eq!(r["label"], "sensor");
        assert_eq!(r["app_protocol"], "coap");
        assert!(
            r["coap_requests"].as_u64() >= Some(1) && r["coap_2xx"].as_u64() >= Some(1),
            "{r}"
        );
    }
}

/// Interface mode reads a DTLS handshake's outcome from what the server sends in clear: a
/// sensor with the right PSK (libcoap's OpenSSL client against libcoap's OpenSSL server) is an
/// `established` flow with `auth_outcome` `ok`; one with a wrong key, which the server drops
/// without a word, is told by the client sending its final flight again unanswered:
/// `finished_unanswered`, `failed`.
#[test]
fn interface_mode_reads_dtls_handshake_outcomes_from_the_wire() {
    const KEY: &str = "ward-lan-psk-0001";
    let lan = VethLan::create();
    let _server = lan.dtls_server(KEY);
    let dir = tempfile::tempdir().unwrap();
    let (mut monitor, addr) = lan.monitor(
        dir.path(),
        &format!(
            "[monitor.flows]\nenabled = true\ndir = \"{}/flows\"\n",
            dir.path().display()
        ),
    );
    let uri = format!("coaps://{}:5684/", lan.host_ip);
    let good = lan.exec(&[
        "/usr/bin/coap-client-openssl",
        "-u",
        "sensor-1",
        "-k",
        KEY,
        "-m",
        "get",
        "-B",
        "5",
        &uri,
    ]);
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    // The wrong key: the server drops the client's Finished without a word, the client sends
    // its final flight again (OpenSSL's timer: after 1 s, then 2 s more) and gives up after its
    // wait (-B 5); its exit status says nothing we rely on.
    let _ = lan.exec(&[
        "/usr/bin/coap-client-openssl",
        "-u",
        "sensor-2",
        "-k",
        "not-the-ward-key",
        "-m",
        "get",
        "-B",
        "5",
        &uri,
    ]);
    let datagrams = "wardgate_monitor_interface_datagrams_total";
    wait_for("the DTLS datagrams seen", Duration::from_secs(30), || {
        let (_, text) = common::http_get(addr, "/metrics")?;
        (metric(&text, datagrams)? >= 8).then_some(())
    });
    let status = common::terminate(&mut monitor.0);
    let log = std::fs::read_to_string(dir.path().join("monitor.log")).unwrap_or_default();
    assert!(status.success(), "{status}\n{log}");

    let (json, records) = common::flow_records(&dir.path().join("flows"));
    let dtls: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r["src_ip"] == lan.sensor_ip.as_str() && r["dst_port"] == 5684)
        .collect();
    assert_eq!(dtls.len(), 2, "one flow per client run: {json}");
    let outcomes: Vec<(&str, &str)> = dtls
        .iter()
        .map(|r| {
            (
                r["dtls_handshake"].as_str().unwrap_or_default(),
                r["auth_outcome"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert!(outcomes.contains(&("established", "ok")), "{json}");
    assert!(
        outcomes.contains(&("finished_unanswered", "failed")),
        "{json}"
    );
}

/// Interface mode runs the anomaly detectors too: a sensor that asks for resources the server
/// does not have (4.04 after 4.04) is a `resource_scan`, written as a JSON line to
/// `anomalies.jsonl` beside the flow records, logged at WARN and counted.
#[test]
fn interface_mode_writes_anomaly_events_beside_the_flow_records() {
    let lan = VethLan::create();
    let _server = lan.coap_server();
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows");
    let (mut monitor, addr) = lan.monitor(
        dir.path(),
        &format!(
            "[monitor.flows]\nenabled = true\ndir = \"{}\"\n\
             [monitor.anomalies]\nenabled = true\nscan_threshold = 5\nwindow = \"30s\"\n",
            flows.display()
        ),
    );
    for i in 0..6 {
        let uri = format!("coap://{}:5683/nothing-{i}", lan.host_ip);
        let out = lan.exec(&["/usr/bin/coap-client-notls", "-m", "get", "-B", "5", &uri]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let scans = "wardgate_monitor_anomalies_total{kind=\"resource_scan\"}";
    wait_for("a resource_scan event", Duration::from_secs(30), || {
        let (_, text) = common::http_get(addr, "/metrics")?;
        (metric(&text, scans)? >= 1).then_some(())
    });
    let status = common::terminate(&mut monitor.0);
    let log = std::fs::read_to_string(dir.path().join("monitor.log")).unwrap_or_default();
    assert!(status.success(), "{status}\n{log}");
    assert!(
        log.contains("traffic anomaly") && log.contains("resource_scan"),
        "{log}"
    );
    let text = std::fs::read_to_string(flows.join("anomalies.jsonl")).unwrap();
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let scan = events
        .iter()
        .find(|e| e["anomaly"] == "resource_scan")
        .unwrap_or_else(|| panic!("no resource_scan in {text}"));
    assert!(
        scan["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with(&format!("{}:", lan.sensor_ip))),
        "{scan}"
    );
    assert!(scan["count"].as_u64() >= Some(5), "{scan}");
    assert_eq!(scan["window_s"], 30.0, "{scan}");
}

/// Interface mode writes anomaly events beside the flow records: without flows the
/// configuration is refused, by `wardgate monitor` and by `check-config --monitor`.
#[test]
fn interface_mode_anomalies_need_the_flow_records() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("monitor.toml");
    std::fs::write(
        &cfg,
        "[gateway]\nid = \"ward-monitor\"\n[monitor.capture]\nenabled = true\n\
         [monitor.anomalies]\nenabled = true\n",
    )
    .unwrap();
    let out = Command::new(common::WARDGATE)
        .args(["monitor", "--config"])
        .arg(&cfg)
        .args(["--interface", "lo"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("monitor.anomalies.enabled") && err.contains("needs [monitor.flows]"),
        "{err}"
    );
    // check-config --monitor says the same.
    let out = Command::new(common::WARDGATE)
        .args(["check-config", "--monitor", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{out:?}");
}

/// Sends `request` (a CON with message id `mid`) from `sock` and returns the ACK that answers
/// it, passing over the gateway's own requests to the client (observations after a
/// registration).
fn exchange(sock: &std::net::UdpSocket, to: std::net::SocketAddr, request: &[u8]) -> Vec<u8> {
    let mid = [request[2], request[3]];
    sock.send_to(request, to).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 1500];
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no answer to {request:?}"
        );
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            if n >= 4 && buf[0] >> 4 & 0x03 == 2 && buf[2..4] == mid {
                return buf[..n].to_vec();
            }
        }
    }
}

/// LwM2M operations in the flow records: a client made by hand on a UDP socket registers,
/// updates and deregisters with the gateway's LwM2M server; its flow counts each operation.
#[test]
fn flow_records_count_the_lwm2m_operations_of_a_client() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows");
    let mut gw = Gateway::start(
        dir.path(),
        &broker.url(),
        &format!(
            "[lwm2m]\nenabled = true\n[monitor.flows]\nenabled = true\ndir = \"{}\"\n",
            flows.display()
        ),
    );
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let created = exchange(&sock, gw.coap, &common::lwm2m_register_datagram("bed-lw"));
    let answer = wardgate_coap::codec::Message::parse(&created).unwrap();
    assert_eq!(created[1], 0x41, "2.01 Created: {created:?}");
    let location: Vec<&[u8]> = answer
        .options()
        .filter(|o| o.number == 8)
        .map(|o| o.value)
        .collect();
    assert_eq!(location.first(), Some(&&b"rd"[..]), "{created:?}");
    let id = location[1];
    // Update (CON POST /rd/{id}) and Deregister (CON DELETE /rd/{id}), message ids 2 and 3.
    for (code, mid) in [(0x02u8, 2u8), (0x04, 3)] {
        let mut m = vec![0x40, code, 0, mid, 0xB2, b'r', b'd'];
        m.push(u8::try_from(id.len()).unwrap());
        m.extend_from_slice(id);
        let a = exchange(&sock, gw.coap, &m);
        assert_eq!(a[1] >> 5, 2, "2.xx for {code}: {a:?}");
    }
    let status = gw.terminate();
    assert!(status.success(), "{status}\n{}", gw.log());
    let json = std::fs::read_to_string(flows.join("flows.jsonl")).unwrap();
    let port = sock.local_addr().unwrap().port();
    let record: serde_json::Value = json
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|r| r["src_port"] == port)
        .unwrap_or_else(|| panic!("no flow from port {port}: {json}"));
    let ops = &record["lwm2m_ops"];
    assert_eq!(
        (
            ops["register"].as_u64(),
            ops["update"].as_u64(),
            ops["deregister"].as_u64()
        ),
        (Some(1), Some(1), Some(1)),
        "{record}"
    );
}

/// The MQTT subscriber's session with the ward broker is in the flow records and the capture
/// as session metadata: one TCP flow from the gateway's own address (the port Mosquitto logs
/// for the subscriber's client id) to the broker, with the MQTT packets each way, and in the
/// pcapng the same packets as TCP segments between those addresses, each as long as its MQTT
/// packet (the PUBLISH exactly as long as the one a sensor sent) and with zeroed bytes.
#[test]
fn the_mqtt_subscriber_s_broker_session_is_in_the_flow_records_and_the_capture() {
    let cloud = Mosquitto::start();
    let ward = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let captures = dir.path().join("captures");
    let flows = dir.path().join("flows");
    const CLIENT_ID: &str = "gw-monitor-test";
    let mut gw = Gateway::start(
        dir.path(),
        &cloud.url(),
        &format!(
            "[[ingest.mqtt]]\nname = \"ward\"\nurl = \"{}\"\nclient_id = \"{CLIENT_ID}\"\n\
             [[ingest.mqtt.topics]]\nfilter = \"ward/+/data\"\ndevice_level = 2\n\
             [monitor.capture]\nenabled = true\ndir = \"{}\"\n\
             [monitor.flows]\nenabled = true\ndir = \"{}\"\n",
            ward.url(),
            captures.display(),
            flows.display()
        ),
    );
    wait_for(
        "the gateway ready (subscribed)",
        Duration::from_secs(30),
        || common::http_get(gw.http, "/readyz").filter(|(code, _)| *code == 200),
    );
    let (topic, payload) = ("ward/bed-7/data", r#"[{"n":"spo2","v":97}]"#);
    let status = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &ward.port.to_string(), "-q", "1"])
        .args(["-t", topic, "-m", payload])
        .status()
        .unwrap();
    assert!(status.success());
    wait_for("the reading ingested", Duration::from_secs(30), || {
        gw.metrics()
            .lines()
            .find(|l| l.starts_with("wardgate_mqtt_ingest_readings_ingested_total{"))
            .filter(|l| l.ends_with(" 1"))
            .map(|_| ())
    });
    let status = gw.terminate();
    assert!(status.success(), "{status}\n{}", gw.log());

    // The port the broker saw the subscriber connect from.
    let log = ward.log();
    let from = "New client connected from 127.0.0.1:";
    let client_port: u16 = log
        .lines()
        .find(|l| l.contains(from) && l.contains(&format!(" as {CLIENT_ID} ")))
        .and_then(|l| l.split(from).nth(1)?.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no connection of {CLIENT_ID} in the broker's log:\n{log}"));
    // MQTT 3.1.1: fixed header 2, topic with its length 2 + 15, packet id 2, the payload.
    let publish_len = 2 + 2 + topic.len() + 2 + payload.len();

    let (json, records) = common::flow_records(&flows);
    let mqtt: Vec<_> = records
        .iter()
        .filter(|r| r["app_protocol"] == "mqtt")
        .collect();
    assert_eq!(mqtt.len(), 1, "{json}");
    let f = mqtt[0];
    assert_eq!(f["protocol"], 6, "{f}");
    assert_eq!(
        (f["src_ip"].as_str(), f["src_port"].as_u64()),
        (Some("127.0.0.1"), Some(u64::from(client_port))),
        "{f}"
    );
    assert_eq!(f["dst_port"].as_u64(), Some(u64::from(ward.port)), "{f}");
    // Out: CONNECT, SUBSCRIBE, PUBACK, DISCONNECT; in: CONNACK, SUBACK, PUBLISH (and a
    // keep-alive exchange if one fell in).
    assert!(f["tot_fwd_pkts"].as_u64().unwrap() >= 4, "{f}");
    assert!(f["tot_bwd_pkts"].as_u64().unwrap() >= 3, "{f}");
    assert_eq!(
        f["bwd_pkt_len_max"].as_f64(),
        Some(publish_len as f64),
        "{f}"
    );

    let files = capture_files(&captures);
    assert_eq!(files.len(), 1, "{files:?}");
    let rows = common::tshark_fields(
        &files[0],
        &["-Y", &format!("tcp.port=={}", ward.port)],
        &["tcp.srcport", "tcp.dstport", "tcp.len", "tcp.payload"],
    );
    let text = format!("{rows:?}");
    let (gw_port, broker_port) = (client_port.to_string(), ward.port.to_string());
    assert!(
        rows.iter().all(|r| (r[0] == gw_port && r[1] == broker_port)
            || (r[0] == broker_port && r[1] == gw_port)),
        "{text}"
    );
    assert!(
        rows.iter()
            .any(|r| r[0] == broker_port && r[2] == publish_len.to_string()),
        "no PUBLISH-sized segment from the broker: {text}"
    );
    assert!(
        rows.iter().all(|r| r[3].chars().all(|c| c == '0')),
        "bytes written: {text}"
    );
    // The first segment is the CONNECT: fixed header 2, protocol name, level, flags and
    // keep-alive 10, the client id with its length.
    assert_eq!(rows[0][0], gw_port, "{text}");
    assert_eq!(
        rows[0][2],
        (2 + 10 + 2 + CLIENT_ID.len()).to_string(),
        "{text}"
    );
}
