//! A real Mosquitto per test.

use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::{ChildGuard, PATIENCE, Pki, free_tcp_port, require_tool, wait_for};

const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// What Mosquitto logs (at `notice`) the first time it discards a message for a client.
const DROPPED: &str = "are being dropped";

/// A Mosquitto broker on free loopback ports, killed when dropped.
///
/// Queue limits are lifted far above anything a test sends (`max_queued_messages`; `0` would
/// mean unlimited, but some Mosquitto releases dropped everything with it), and the broker's log
/// is checked for dropped messages when the fixture drops: a test whose broker dropped a message
/// fails, naming the log, whatever it asserted.
#[derive(Debug)]
pub struct Mosquitto {
    /// The plain listener (the tests' own subscribers use it).
    pub port: u16,
    /// The TLS listener, for [`Mosquitto::start_tls`] brokers (the second listener of
    /// [`Mosquitto::start_with_listener`] brokers).
    pub tls_port: Option<u16>,
    dir: tempfile::TempDir,
    conf: PathBuf,
    child: Option<ChildGuard>,
}

impl Mosquitto {
    /// A broker with one plain listener and no persistence.
    pub fn start() -> Mosquitto {
        Self::start_with(false, None)
    }

    /// A broker that keeps sessions and retained messages across a graceful restart
    /// ([`Mosquitto::stop_gracefully`] then [`Mosquitto::restart`]).
    pub fn start_persistent() -> Mosquitto {
        Self::start_with(true, None)
    }

    /// A broker with a plain listener for the tests' subscriber and a TLS listener for the
    /// client under test. `require_certificate` turns on mutual TLS.
    pub fn start_tls(pki: &Pki, require_certificate: bool) -> Mosquitto {
        let tls = format!(
            "listener {} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate {require_certificate}\n",
            free_tcp_port(),
            pki.ca.display(),
            pki.server_cert.display(),
            pki.server_key.display(),
        );
        Self::start_with(false, Some(tls))
    }

    /// A broker with the plain listener and one more, given as Mosquitto config lines that start
    /// with `listener <port> 127.0.0.1` (e.g. `protocol websockets`, which Mosquitto 2.0 only
    /// starts next to a plain listener). That listener's port is in [`Mosquitto::tls_port`],
    /// the fixture's second listener, whatever its protocol.
    pub fn start_with_listener(persistent: bool, listener: String) -> Mosquitto {
        Self::start_with(persistent, Some(listener))
    }

    fn start_with(persistent: bool, tls: Option<String>) -> Mosquitto {
        require_tool(MOSQUITTO);
        let dir = tempfile::tempdir().expect("tempdir");
        // Started as root, Mosquitto drops to its own user: it must be able to write its
        // persistence file here.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
            .expect("chmod broker dir");
        let port = free_tcp_port();
        let tls_port = tls.as_ref().map(|t| {
            t.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse().ok())
                .expect("tls listener port")
        });
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "per_listener_settings false\nallow_anonymous true\n\
                 persistence {persistent}\npersistence_location {}/\n\
                 max_queued_messages 1000000\nmax_queued_bytes 0\nmax_inflight_messages 0\n\
                 log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\nlog_type information\n\
                 listener {port} 127.0.0.1\n{}",
                dir.path().display(),
                tls.unwrap_or_default(),
            ),
        )
        .expect("write mosquitto.conf");
        let mut m = Mosquitto {
            port,
            tls_port,
            dir,
            conf,
            child: None,
        };
        m.restart();
        m
    }

    /// Starts the broker (again) on the same ports with the same config; a running one is
    /// killed first.
    pub fn restart(&mut self) {
        self.stop();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("broker log file");
        let child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start mosquitto");
        self.child = Some(ChildGuard(child));
        for p in std::iter::once(self.port).chain(self.tls_port) {
            wait_for(&format!("mosquitto to listen on {p}"), PATIENCE, || {
                if let Some(status) = self
                    .child
                    .as_mut()
                    .and_then(|c| c.0.try_wait().ok().flatten())
                {
                    panic!("mosquitto exited with {status}; log:\n{}", self.log());
                }
                TcpStream::connect(("127.0.0.1", p)).ok()
            });
        }
    }

    /// Kills the broker (SIGKILL): an outage, no goodbye to anyone.
    pub fn stop(&mut self) {
        self.child.take();
    }

    /// Stops the broker with SIGTERM, so a persistent broker saves its sessions.
    pub fn stop_gracefully(&mut self) {
        if let Some(mut g) = self.child.take() {
            signal("-TERM", g.0.id());
            let _ = g.0.wait();
        }
    }

    /// Freezes the broker (SIGSTOP): connections stay open but nothing is answered.
    pub fn freeze(&self) {
        signal("-STOP", self.pid());
    }

    /// Resumes a frozen broker (SIGCONT).
    pub fn thaw(&self) {
        signal("-CONT", self.pid());
    }

    /// Process id of the running broker.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("broker is running").0.id()
    }

    /// `mqtt://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("mosquitto.log")
    }

    /// The broker's log so far, across restarts.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Fails the test if the broker has logged that it dropped messages for any client.
    pub fn assert_no_dropped_messages(&self) {
        let log = self.log();
        assert!(
            !log.contains(DROPPED),
            "the test broker DROPPED messages (a harness limit, not necessarily wardgate); log:\n{log}"
        );
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
        // Panicking while already unwinding would abort the test binary and hide the first
        // failure; that test fails anyway.
        if !std::thread::panicking() {
            self.assert_no_dropped_messages();
        }
    }
}

fn signal(sig: &str, pid: u32) {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {sig} {pid} failed");
}
