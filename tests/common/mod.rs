//! Fixtures for the end-to-end tests: real Mosquitto, real libcoap tools, the real `wardgate`
//! binary. Every server runs on a free loopback port and is killed when its fixture drops.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

pub mod load;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const WARDGATE: &str = env!("CARGO_BIN_EXE_wardgate");

/// A free TCP port on loopback (bound then released).
pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A free UDP port on loopback (bound then released).
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Fails the test with a clear message when a required tool is missing: the README's test
/// command installs them, so a missing tool is a broken environment, not a skip.
pub fn require_tool(path: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: run the test command from README.md (it installs mosquitto and libcoap3-bin)"
    );
}

/// Polls `f` until it returns Some or the deadline passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A child process killed on drop.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A Mosquitto broker on a free loopback port.
pub struct Mosquitto {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<ChildGuard>,
    persistent: bool,
}

impl Mosquitto {
    pub fn start() -> Mosquitto {
        Self::start_with(false)
    }

    /// A broker that keeps sessions and retained messages across a graceful restart.
    pub fn start_persistent() -> Mosquitto {
        Self::start_with(true)
    }

    fn start_with(persistent: bool) -> Mosquitto {
        require_tool("/usr/sbin/mosquitto");
        let dir = tempfile::tempdir().expect("tempdir");
        // Started as root, mosquitto drops to its own user: it must be able to write its
        // persistence file here.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
                .expect("chmod broker dir");
        }
        let mut m = Mosquitto {
            port: free_tcp_port(),
            dir,
            child: None,
            persistent,
        };
        m.restart();
        m
    }

    /// Starts (again) on the same port.
    pub fn restart(&mut self) {
        self.stop();
        let conf = self.dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {} 127.0.0.1\nallow_anonymous true\npersistence {}\npersistence_location {}/\nlog_dest stderr\nlog_type error\n",
                self.port,
                self.persistent,
                self.dir.path().display()
            ),
        )
        .expect("write conf");
        let child = Command::new("/usr/sbin/mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn mosquitto");
        self.child = Some(ChildGuard(child));
        let port = self.port;
        wait_for("mosquitto to listen", Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", port)).ok()
        });
    }

    /// Stops the broker (SIGKILL: an outage, not a maintenance window).
    pub fn stop(&mut self) {
        self.child.take();
    }

    /// Stops the broker with SIGTERM, so a persistent broker saves its sessions.
    pub fn stop_gracefully(&mut self) {
        if let Some(mut g) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &g.0.id().to_string()])
                .status();
            let _ = g.0.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

/// A `mosquitto_sub -v` subscriber; lines are `topic payload`.
pub struct Subscriber {
    _child: ChildGuard,
    rx: mpsc::Receiver<String>,
    early: std::cell::RefCell<std::collections::VecDeque<String>>,
    probe_topic: String,
}

impl Subscriber {
    pub fn start(port: u16, topic: &str) -> Subscriber {
        Self::start_with(port, topic, None)
    }

    /// A subscriber with a persistent session (clean session off): the broker queues QoS 1
    /// messages for it while it is away.
    pub fn start_persistent(port: u16, topic: &str, client_id: &str) -> Subscriber {
        Self::start_with(port, topic, Some(client_id))
    }

    fn start_with(port: u16, topic: &str, client_id: Option<&str>) -> Subscriber {
        require_tool("/usr/bin/mosquitto_sub");
        // A private topic, subscribed beside the real one, tells us when the subscription is live.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let probe_topic = format!(
            "wardgate-test-probe/{}/{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let mut args: Vec<String> = [
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-t",
            topic,
            "-t",
            &probe_topic,
            "-v",
            "-q",
            "1",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        if let Some(id) = client_id {
            args.extend(["-c".to_owned(), "-i".to_owned(), id.to_owned()]);
        }
        let mut child = Command::new("/usr/bin/mosquitto_sub")
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn mosquitto_sub");
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        // mosquitto_sub has no "subscribed" signal; publish a probe until it shows up.
        let sub = Subscriber {
            _child: ChildGuard(child),
            rx,
            early: Default::default(),
            probe_topic,
        };
        // Anything that arrives before the probe (queued session messages, retained status) is
        // kept for `next`.
        let probe_topic = sub.probe_topic.clone();
        wait_for(
            "subscriber to be subscribed",
            Duration::from_secs(10),
            || {
                let _ = Command::new("/usr/bin/mosquitto_pub")
                    .args([
                        "-h",
                        "127.0.0.1",
                        "-p",
                        &port.to_string(),
                        "-t",
                        &probe_topic,
                        "-m",
                        "probe",
                    ])
                    .status();
                let deadline = Instant::now() + Duration::from_millis(200);
                while let Ok(l) = sub
                    .rx
                    .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                {
                    if l.starts_with(&format!("{probe_topic} ")) {
                        return Some(());
                    }
                    sub.early.borrow_mut().push_back(l);
                }
                None
            },
        );
        sub
    }

    /// Next line within `timeout`.
    pub fn next(&self, timeout: Duration) -> Option<(String, String)> {
        let line = loop {
            let line = match self.early.borrow_mut().pop_front() {
                Some(l) => l,
                None => self.rx.recv_timeout(timeout).ok()?,
            };
            if !line.starts_with(&format!("{} ", self.probe_topic)) {
                break line;
            }
        };
        let (topic, payload) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        Some((topic.to_owned(), payload.to_owned()))
    }

    /// Collects lines whose topic passes `keep` until `n` are collected (panics on timeout).
    pub fn collect(
        &self,
        n: usize,
        timeout: Duration,
        keep: impl Fn(&str) -> bool,
    ) -> Vec<(String, String)> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        while out.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left) {
                Some((t, p)) if keep(&t) => out.push((t, p)),
                Some(_) => {}
                None => panic!(
                    "got {} of {n} messages before the timeout: {out:?}",
                    out.len()
                ),
            }
        }
        out
    }
}

/// The wardgate binary running with a generated config.
pub struct Gateway {
    pub coap: SocketAddr,
    pub http: SocketAddr,
    pub dir: PathBuf,
    pub config: PathBuf,
    child: Option<ChildGuard>,
    stderr_log: PathBuf,
}

impl Gateway {
    /// Writes `gateway.toml` into `dir` (the mqtt uplink points at `mqtt_url`, plus `extra`
    /// TOML appended) and starts the gateway.
    pub fn start(dir: &Path, mqtt_url: &str, extra: &str) -> Gateway {
        Self::start_with(dir, mqtt_url, "", extra)
    }

    /// Like `start`, with `store_extra` lines placed in the `[store]` section.
    pub fn start_with(dir: &Path, mqtt_url: &str, store_extra: &str, extra: &str) -> Gateway {
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
        let pid = g.0.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = g.0.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "wardgate did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    pub fn metrics(&self) -> String {
        http_get(self.http, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default()
    }

    pub fn coap_uri(&self, path: &str) -> String {
        format!("coap://{}/{path}", self.coap)
    }
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

/// Runs libcoap's `coap-client-notls` and returns (success, stdout+stderr). coap-client exits 0
/// even for 4.xx/5.xx answers and prints them as `4.00 <diagnostic>`, so those count as failure.
/// Note `-e` payloads are percent-decoded by coap-client: write `%` as `%25`.
pub fn coap_client(args: &[&str]) -> (bool, String) {
    require_tool("/usr/bin/coap-client-notls");
    let out = Command::new("/usr/bin/coap-client-notls")
        .args(args)
        .output()
        .expect("run coap-client-notls");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let error_code = text.lines().any(|l| {
        let b = l.as_bytes();
        b.len() >= 4
            && (b[0] == b'4' || b[0] == b'5')
            && b[1] == b'.'
            && b[2].is_ascii_digit()
            && b[3].is_ascii_digit()
    });
    (out.status.success() && !error_code, text)
}

/// `coap-client-notls -m <method> -t <format> -e <payload> <uri>`.
pub fn coap_send(method: &str, format: u16, payload: &str, uri: &str) -> (bool, String) {
    coap_client(&["-m", method, "-t", &format.to_string(), "-e", payload, uri])
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
