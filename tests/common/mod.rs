//! Fixtures for the end-to-end tests: the real `wardgate` binary, with real Mosquitto and
//! libcoap tools from `wardgate-testkit`. Every server runs on a free loopback port and is killed when its fixture drops.
#![allow(
    dead_code,
    unused_imports,
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub
)]

pub mod load;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub use wardgate_testkit::libcoap::{ClientRun, coap_client, coap_send};
pub use wardgate_testkit::{
    ChildGuard, Mosquitto, Subscriber, free_tcp_port, free_udp_port, require_tool, wait_for,
};

pub const WARDGATE: &str = env!("CARGO_BIN_EXE_wardgate");

/// The wardgate binary running with a generated config.
pub struct Gateway {
    pub coap: SocketAddr,
    pub http: SocketAddr,
    pub dir: PathBuf,
    pub config: PathBuf,
    child: Option<ChildGuard>,
    stderr_log: PathBuf,
    /// Extra `wardgate run` arguments (`--demo`).
    run_args: Vec<String>,
}

impl Gateway {
    /// Writes `gateway.toml` into `dir` (the mqtt uplink points at `mqtt_url`, plus `extra`
    /// TOML appended) and starts the gateway.
    pub fn start(dir: &Path, mqtt_url: &str, extra: &str) -> Gateway {
        Self::start_with(dir, mqtt_url, "", extra)
    }

    /// Like `start`, with `store_extra` lines placed in the `[store]` section.
    pub fn start_with(dir: &Path, mqtt_url: &str, store_extra: &str, extra: &str) -> Gateway {
        Self::start_run(dir, mqtt_url, store_extra, extra, &[])
    }

    /// Like `start_with`, with `run_args` after `wardgate run --config FILE` (`--demo`).
    pub fn start_run(
        dir: &Path,
        mqtt_url: &str,
        store_extra: &str,
        extra: &str,
        run_args: &[&str],
    ) -> Gateway {
        let coap = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
        let http = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
        let config = dir.join("gateway.toml");
        std::fs::write(
            &config,
            format!(
                r#"
[gateway]
id = "test-ward"
[log]
level = "info,wardgate_coap=debug"
[coap]
listen = ["{coap}"]
[http]
listen = "{http}"
[store]
path = "{dir}/outbox.db"
{store_extra}
[[uplinks]]
type = "mqtt"
name = "cloud"
url = "{mqtt_url}"
reconnect_min = "50ms"
reconnect_max = "500ms"
{extra}
"#,
                dir = dir.display()
            ),
        )
        .expect("write config");
        let mut g = Gateway {
            coap,
            http,
            dir: dir.to_owned(),
            config,
            child: None,
            stderr_log: dir.join("wardgate.log"),
            run_args: run_args.iter().map(|a| (*a).to_owned()).collect(),
        };
        g.restart();
        g
    }

    /// Starts the process (again) with the same config and ports.
    pub fn restart(&mut self) {
        self.child.take();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stderr_log)
            .expect("log file");
        let child = Command::new(WARDGATE)
            .args(["run", "--config"])
            .arg(&self.config)
            .args(&self.run_args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn wardgate");
        self.child = Some(ChildGuard(child));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if http_get(self.http, "/healthz").is_some_and(|(s, _)| s == 200) {
                return;
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.0.try_wait().ok().flatten());
            if let Some(status) = exited {
                panic!(
                    "wardgate exited during start-up ({status}):\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "wardgate did not answer /healthz:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut g) = self.child.take() {
            let _ = g.0.kill();
            let _ = g.0.wait();
        }
    }

    /// SIGTERM and wait for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut g = self.child.take().expect("running");
        terminate(&mut g.0)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    pub fn metrics(&self) -> String {
        http_get(self.http, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default()
    }

    /// The value of the first sample whose line starts with `series` (name and labels as
    /// exposed, e.g. `wardgate_x_total{uplink="cloud"}`), 0 when there is none.
    pub fn metric(&self, series: &str) -> f64 {
        self.metrics()
            .lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    }

    pub fn coap_uri(&self, path: &str) -> String {
        format!("coap://{}/{path}", self.coap)
    }
}

/// SIGTERM to a running gateway; waits (at most 30 s) for its exit status.
pub fn terminate(child: &mut std::process::Child) -> std::process::ExitStatus {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill -TERM");
    wait_for(
        "wardgate to exit after SIGTERM",
        Duration::from_secs(30),
        || child.try_wait().expect("wait"),
    )
}

/// A hand-made LwM2M Register request (CON POST `/rd?ep={endpoint}&lt=60&lwm2m=1.1`,
/// link format, objects 1 and 3), message id 0x1234.
pub fn lwm2m_register_datagram(endpoint: &str) -> Vec<u8> {
    let mut m = vec![0x40, 0x02, 0x12, 0x34, 0xB2, b'r', b'd', 0x11, 40];
    let ep = format!("ep={endpoint}");
    for (i, q) in [ep.as_str(), "lt=60", "lwm2m=1.1"].iter().enumerate() {
        let delta = if i == 0 { 3 } else { 0 };
        m.push((delta << 4) | u8::try_from(q.len()).unwrap());
        m.extend_from_slice(q.as_bytes());
    }
    m.push(0xFF);
    m.extend_from_slice(b"</1/0>,</3/0>");
    m
}

/// OpenSSL's DTLS client with PSK `identity` (the tests' key) posting one SenML reading of
/// `value` as a CoAP CON POST to `/v1/readings/{device}` on `127.0.0.1:{port}`. Its stdin stays
/// open (`-ign_eof`) so it keeps the session until the guard kills it.
pub fn openssl_psk_post(port: u16, identity: &str, device: &str, value: u32) -> ChildGuard {
    openssl_psk_post_with(port, identity, device, value, &[])
}

/// [`openssl_psk_post`] with more `openssl s_client` arguments (`-keylogfile FILE`).
pub fn openssl_psk_post_with(
    port: u16,
    identity: &str,
    device: &str,
    value: u32,
    more: &[&std::ffi::OsStr],
) -> ChildGuard {
    let mut args: Vec<&std::ffi::OsStr> = [
        "-psk_identity",
        identity,
        "-psk",
        "000102030405060708090a0b0c0d0e0f",
        "-cipher",
        "PSK-AES128-CCM8",
    ]
    .map(std::ffi::OsStr::new)
    .to_vec();
    args.extend_from_slice(more);
    openssl_dtls_post(port, &args, device, value)
}

/// [`openssl_psk_post`] with a client certificate (ECDHE-ECDSA-AES128-GCM-SHA256).
pub fn openssl_cert_post(
    port: u16,
    cert: &Path,
    key: &Path,
    device: &str,
    value: u32,
) -> ChildGuard {
    openssl_cert_post_with(port, cert, key, device, value, &[])
}

/// [`openssl_cert_post`] with more `openssl s_client` arguments (`-keylogfile FILE`).
pub fn openssl_cert_post_with(
    port: u16,
    cert: &Path,
    key: &Path,
    device: &str,
    value: u32,
    more: &[&std::ffi::OsStr],
) -> ChildGuard {
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "-cert".as_ref(),
        cert.as_os_str(),
        "-key".as_ref(),
        key.as_os_str(),
        "-cipher".as_ref(),
        "ECDHE-ECDSA-AES128-GCM-SHA256".as_ref(),
    ];
    args.extend_from_slice(more);
    openssl_dtls_post(port, &args, device, value)
}

fn openssl_dtls_post(port: u16, args: &[&std::ffi::OsStr], device: &str, value: u32) -> ChildGuard {
    let mut post = vec![0x40, 0x02, 0x12, 0x34, 0xB2, b'v', b'1', 0x08];
    post.extend_from_slice(b"readings");
    post.push(device.len() as u8);
    post.extend_from_slice(device.as_bytes());
    post.extend_from_slice(&[0x11, 110, 0xFF]);
    post.extend_from_slice(format!(r#"[{{"n":"spo2","u":"%","v":{value}}}]"#).as_bytes());
    let mut c = Command::new("/usr/bin/openssl")
        .args(["s_client", "-dtls1_2", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .args(args)
        .args(["-quiet", "-ign_eof"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = c.stdin.take().unwrap();
    std::io::Write::write_all(&mut stdin, &post).unwrap();
    std::mem::forget(stdin);
    ChildGuard(c)
}

/// `tshark -n -r FILE ARGS -T fields -E separator=| -e FIELD…`: one row of the fields per packet
/// (a field with several values holds them comma-separated). Panics naming tshark's error.
pub fn tshark_fields(file: &Path, args: &[&str], fields: &[&str]) -> Vec<Vec<String>> {
    const TSHARK: &str = "/usr/bin/tshark";
    require_tool(TSHARK);
    let mut cmd = Command::new(TSHARK);
    cmd.args(["-n", "-r"]).arg(file).args(args);
    cmd.args(["-T", "fields", "-E", "separator=|"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().expect("run tshark");
    assert!(
        out.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split('|').map(str::to_owned).collect())
        .collect()
}

/// `wardgate audit verify FILE` must succeed.
pub fn assert_audit_verifies(path: &Path) {
    let out = Command::new(WARDGATE)
        .args(["audit", "verify"])
        .arg(path)
        .output()
        .expect("run wardgate audit verify");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Minimal HTTP/1.1 GET; returns status and body.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

/// The monitor's flow records in `dir/flows.jsonl`: the file's text (for failure messages) and
/// each record.
pub fn flow_records(dir: &Path) -> (String, Vec<serde_json::Value>) {
    let json = std::fs::read_to_string(dir.join("flows.jsonl")).expect("flows.jsonl");
    let records = json
        .lines()
        .map(|l| serde_json::from_str(l).expect("a flow record"))
        .collect();
    (json, records)
}

/// The published reading schema, compiled.
pub fn schema() -> jsonschema::Validator {
    let text = include_str!("../../docs/readings.schema.json");
    let v: serde_json::Value = serde_json::from_str(text).expect("schema json");
    jsonschema::validator_for(&v).expect("schema compiles")
}

/// Parses and schema-checks one delivered reading.
pub fn valid_reading(validator: &jsonschema::Validator, payload: &str) -> serde_json::Value {
    let v: serde_json::Value =
        serde_json::from_str(payload).unwrap_or_else(|e| panic!("not JSON ({e}): {payload}"));
    let errors: Vec<String> = validator.iter_errors(&v).map(|e| e.to_string()).collect();
    assert!(
        errors.is_empty(),
        "schema violations {errors:?} in {payload}"
    );
    v
}

/// One HTTP/1.1 request over plain TCP (the admin API on loopback): status and body. `token`
/// goes in `Authorization: Bearer`.
pub fn admin_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}
