//! The command line as a user meets it: check-config, --version, and the shipped default config
//! running with `--demo` and writing readings to stdout.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{WARDGATE, schema, valid_reading};

fn repo_file(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(name)
}

#[test]
fn version_flag_prints_the_version() {
    let out = Command::new(WARDGATE).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("wardgate {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn shipped_gateway_toml_passes_check_config() {
    let out = Command::new(WARDGATE)
        .args(["check-config", "--config"])
        .arg(repo_file("gateway.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid"));
}

#[test]
fn check_config_reports_every_problem_at_once_and_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        r#"
[gateway]
id = "${WARDGATE_TEST_UNSET_VARIABLE}"
[coap]
listen = []
[store]
max_batch = 0
[[uplinks]]
type = "mqtt"
name = "cloud"
url = "ftp://nope"
"#,
    )
    .unwrap();
    // A port taken by someone else must not matter: check-config binds nothing.
    let out = Command::new(WARDGATE)
        .args(["check-config", "--config"])
        .arg(&cfg)
        .env_remove("WARDGATE_TEST_UNSET_VARIABLE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "WARDGATE_TEST_UNSET_VARIABLE is not set",
        "coap.listen",
        "store.max_batch",
        "uplinks[0].url",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    // `run` refuses the same file with the same code before binding anything.
    let out = Command::new(WARDGATE)
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn demo_on_the_shipped_config_prints_valid_readings_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let coap = common::free_udp_port();
    let shipped = std::fs::read_to_string(repo_file("gateway.toml")).unwrap();
    let cfg_text = shipped.replace(
        r#"listen = ["0.0.0.0:5683", "[::]:5683"]"#,
        &format!(r#"listen = ["127.0.0.1:{coap}"]"#),
    );
    assert_ne!(
        cfg_text, shipped,
        "the shipped CoAP listen line changed; update this test"
    );
    let cfg = dir.path().join("gateway.toml");
    std::fs::write(&cfg, cfg_text).unwrap();
    let http = common::free_tcp_port();
    let admin = common::free_tcp_port();
    let mut child = common::ChildGuard(
        Command::new(WARDGATE)
            .args(["run", "--demo", "--config"])
            .arg(&cfg)
            .env("WARDGATE_HTTP", format!("127.0.0.1:{http}"))
            .env("WARDGATE_ADMIN", format!("127.0.0.1:{admin}"))
            .env("WARDGATE_DATA_DIR", dir.path().join("data"))
            .env("WARDGATE_ID", "demo-ward")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let validator = schema();
    let mut devices = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut lwm2m_path = None;
    // Each kind of device, from either bed: the three CoAP sensors and the LwM2M thermometer
    // (which Sends its temperature object). A sensor may drop out for up to 40 s at any time,
    // so one bed's set may be incomplete for a while; both beds' the same kind is unlikely.
    let kinds = ["resp", "spo2", "temp", "thermo"];
    let seen = |devices: &std::collections::BTreeSet<String>, kind: &str| {
        devices.contains(&format!("bed-01-{kind}")) || devices.contains(&format!("bed-02-{kind}"))
    };
    while !kinds.iter().all(|k| seen(&devices, k)) {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("demo readings on stdout; seen {devices:?}"));
        let v = valid_reading(&validator, &line);
        assert_eq!(v["gateway"], "demo-ward");
        if v["protocol"] == "lwm2m" {
            lwm2m_path = v["records"][0]["path"].as_str().map(str::to_owned);
        }
        devices.insert(v["device"].as_str().unwrap().to_owned());
    }
    assert!(
        devices
            .iter()
            .all(|d| d.starts_with("bed-01-") || d.starts_with("bed-02-")),
        "{devices:?}"
    );
    assert_eq!(lwm2m_path.as_deref(), Some("/3303/0/5700"));
    let (status, body) = common::http_get(([127, 0, 0, 1], http).into(), "/readyz").unwrap();
    assert_eq!(status, 200, "{body}");
    // The status page is up on the admin listener, and its token is in a file only the owner
    // may read.
    let (status, page) = common::http_get(([127, 0, 0, 1], admin).into(), "/status").unwrap();
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("bed-01-") || page.contains("bed-02-"),
        "{page}"
    );
    let token = dir.path().join("data/demo-admin-token");
    let meta = std::fs::metadata(&token).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o600
    );
    let token = std::fs::read_to_string(&token).unwrap();
    let (status, body) = common::admin_request(
        ([127, 0, 0, 1], admin).into(),
        "GET",
        "/admin/v1/lwm2m/clients",
        Some(token.trim()),
        "",
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("-thermo"), "{body}");

    Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
}

#[test]
fn a_coap_port_in_use_stops_start_up_with_an_error_naming_the_address() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let cfg = dir.path().join("gateway.toml");
    std::fs::write(
        &cfg,
        format!(
            "[coap]\nlisten = [\"{addr}\"]\n[http]\nenabled = false\n[store]\npath = \"{}/outbox.db\"\n[[uplinks]]\ntype = \"file\"\nname = \"out\"\npath = \"-\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let out = Command::new(WARDGATE)
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&addr.to_string()), "{err}");
    drop(taken);
}

/// The production shape: plain CoAP off, CoAP over DTLS on with a device registry. OpenSSL's
/// DTLS client posts a reading with the device's PSK; it reaches stdout under that device, with
/// the proven identity as its source. A device the registry does not know gets nowhere.
#[test]
fn a_device_in_the_registry_posts_over_coaps_and_its_reading_carries_its_identity() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_udp_port();
    let http = common::free_tcp_port();
    let cfg = dtls_gateway(
        dir.path(),
        port,
        http,
        "ward-dtls",
        "[audit]\npath = \"audit.log\"\n",
    );
    let (_gateway, rx) = run_with_stdout_lines(&cfg);
    // Ready once /readyz answers 200 (the DTLS listener is bound by then).
    wait_ready(http);
    // The stranger claims bed-12's readings path with an identity no device holds.
    let stranger = common::openssl_psk_post(port, "bed-99", "bed-12", 97);
    let device = common::openssl_psk_post(port, "bed-12", "bed-12", 97);
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("a reading on stdout");
    let v = valid_reading(&schema(), &line);
    assert_eq!(v["device"], "bed-12");
    assert_eq!(v["source"]["transport"], "dtls");
    assert_eq!(v["source"]["identity"], "psk:bed-12");
    // The stranger's handshake fails as an unknown identity, and nothing of it is stored.
    let failed = "wardgate_dtls_handshake_failures_total{reason=\"unknown_identity\"} 1";
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = common::http_get(format!("127.0.0.1:{http}").parse().unwrap(), "/metrics")
            .map(|(_, body)| body)
            .unwrap_or_default();
        if metrics.contains(failed) {
            break;
        }
        assert!(Instant::now() < deadline, "{metrics}");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(device);
    drop(stranger);
    assert!(rx.try_recv().is_err(), "a second reading appeared");

    // Both handshakes are in the audit trail, and the trail verifies.
    let audit = dir.path().join("audit.log");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&audit).unwrap_or_default();
        if text.contains(r#""kind":"auth_success","actor":"psk:bed-12""#)
            && text.contains(r#""actor":"claimed-psk:bed-99""#)
        {
            assert!(
                !text.contains("000102030405060708090a0b0c0d0e0f"),
                "a key in the audit trail"
            );
            break;
        }
        assert!(Instant::now() < deadline, "audit trail:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
    common::assert_audit_verifies(&audit);
}

/// The gateway as the DTLS client of a sensor: libcoap's example server with a PSK serves an
/// observable `/time` over DTLS; the gateway observes it through `coaps://` with the PSK the
/// registry holds for that device, and the notifications become readings under it.
#[test]
fn the_gateway_observes_a_sensor_over_coaps_with_the_psk_the_registry_holds() {
    common::require_tool("/usr/bin/coap-server-openssl");
    let dir = tempfile::tempdir().unwrap();
    // libcoap's server listens for DTLS on its port + 1: find two free neighbours.
    let (plain, _hold) = loop {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let p = a.local_addr().unwrap().port();
        if p < 65535 && std::net::UdpSocket::bind(("127.0.0.1", p + 1)).is_ok() {
            break (p, a);
        }
    };
    drop(_hold);
    let key = "sensor-psk-3a-12";
    let _sensor = common::ChildGuard(
        Command::new("/usr/bin/coap-server-openssl")
            .args(["-A", "127.0.0.1", "-p", &plain.to_string(), "-k", key])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let hex: String = key.bytes().map(|b| format!("{b:02x}")).collect();
    std::fs::write(
        dir.path().join("devices.toml"),
        format!(
            "[[device]]\nid = \"wall-clock\"\nresources = [\"coaps://*\"]\n[device.psk]\nidentity = \"wardgate-3a\"\nkey = \"hex:{hex}\"\n"
        ),
    )
    .unwrap();
    let coaps = common::free_udp_port();
    let http = common::free_tcp_port();
    let cfg = dir.path().join("gateway.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[gateway]
id = "ward-observe"
[registry]
path = "devices.toml"
[coap]
enabled = false
[[coap.observe]]
uri = "coaps://127.0.0.1:{dtls}/time?ticks"
device = "wall-clock"
class = "telemetry"
[coaps]
enabled = true
listen = ["127.0.0.1:{coaps}"]
[http]
listen = "127.0.0.1:{http}"
[store]
path = "{db}"
[[uplinks]]
type = "file"
name = "out"
path = "-"
"#,
            dtls = plain + 1,
            db = dir.path().join("outbox.db").display()
        ),
    )
    .unwrap();
    let (_gateway, rx) = run_with_stdout_lines(&cfg);
    let validator = schema();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = 0;
    while seen < 2 {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("observed readings over DTLS on stdout");
        let v = valid_reading(&validator, &line);
        assert_eq!(v["device"], "wall-clock");
        assert_eq!(v["source"]["transport"], "dtls");
        assert_eq!(v["source"]["identity"], "psk:wardgate-3a");
        seen += 1;
    }
}

/// `kill -HUP` re-reads `devices.toml`: a device added by hand can post over DTLS without a
/// restart, and the reload is in the audit trail.
#[test]
fn sighup_reloads_the_device_registry_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_udp_port();
    let http = common::free_tcp_port();
    let devices = dir.path().join("devices.toml");
    let entry = |id: &str| {
        format!(
            "[[device]]\nid = \"{id}\"\n[device.psk]\nidentity = \"{id}\"\nkey = \"hex:000102030405060708090a0b0c0d0e0f\"\n"
        )
    };
    std::fs::write(&devices, entry("bed-12")).unwrap();
    let cfg = dir.path().join("gateway.toml");
    std::fs::write(
        &cfg,
        format!(
            "[gateway]\nid = \"ward-hup\"\n[registry]\npath = \"devices.toml\"\n[audit]\npath = \"audit.log\"\n[coap]\nenabled = false\n[coaps]\nenabled = true\nlisten = [\"127.0.0.1:{port}\"]\n[http]\nlisten = \"127.0.0.1:{http}\"\n[store]\npath = \"{}\"\n[[uplinks]]\ntype = \"file\"\nname = \"out\"\npath = \"-\"\n",
            dir.path().join("outbox.db").display()
        ),
    )
    .unwrap();
    let (child, rx) = run_with_stdout_lines(&cfg);
    let pid = child.0.id();
    wait_ready(http);
    // bed-13 is added by hand, then the gateway is told.
    std::fs::write(&devices, entry("bed-12") + &entry("bed-13")).unwrap();
    let hup = Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let audit = dir.path().join("audit.log");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&audit)
        .unwrap_or_default()
        .contains(r#""kind":"config_reload""#)
    {
        assert!(
            Instant::now() < deadline,
            "no config_reload in the audit trail"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _client = common::openssl_psk_post(port, "bed-13", "bed-13", 95);
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("bed-13's reading after the reload");
    let v = valid_reading(&schema(), &line);
    assert_eq!(v["device"], "bed-13");
}

/// `wardgate run --config cfg`, its stdout as a channel of lines (read on a thread, so the test
/// can wait with a timeout), stderr discarded.
fn run_with_stdout_lines(
    cfg: &std::path::Path,
) -> (common::ChildGuard, std::sync::mpsc::Receiver<String>) {
    let mut child = common::ChildGuard(
        Command::new(WARDGATE)
            .args(["run", "--config"])
            .arg(cfg)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (child, rx)
}

/// Waits until the gateway's `/readyz` on `127.0.0.1:{http}` answers 200.
fn wait_ready(http: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while common::http_get(format!("127.0.0.1:{http}").parse().unwrap(), "/readyz")
        .is_none_or(|(code, _)| code != 200)
    {
        assert!(Instant::now() < deadline, "gateway not ready");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The production shape in `dir`: plain CoAP off, CoAP over DTLS on `127.0.0.1:{port}` with a
/// registry holding bed-12's PSK (the tests' key), HTTP on `http`, the file uplink on stdout,
/// and `extra` sections. Returns the config file.
fn dtls_gateway(
    dir: &std::path::Path,
    port: u16,
    http: u16,
    id: &str,
    extra: &str,
) -> std::path::PathBuf {
    std::fs::write(
        dir.join("devices.toml"),
        "[[device]]\nid = \"bed-12\"\n[device.psk]\nidentity = \"bed-12\"\nkey = \"hex:000102030405060708090a0b0c0d0e0f\"\n",
    )
    .unwrap();
    let cfg = dir.join("gateway.toml");
    std::fs::write(
        &cfg,
        format!(
            "[gateway]\nid = \"{id}\"\n[registry]\npath = \"devices.toml\"\n\
             [coap]\nenabled = false\n[coaps]\nenabled = true\nlisten = [\"127.0.0.1:{port}\"]\n\
             [http]\nlisten = \"127.0.0.1:{http}\"\n[store]\npath = \"{}\"\n{extra}\n\
             [[uplinks]]\ntype = \"file\"\nname = \"out\"\npath = \"-\"\n",
            dir.join("outbox.db").display()
        ),
    )
    .unwrap();
    cfg
}

/// The traffic monitor on the DTLS endpoint: the capture holds the DTLS records as they crossed
/// the wire (tshark decodes the handshake; the application data is zeroed under the default
/// redaction), and the flow record names the device by its proven identity.
#[test]
fn dtls_records_are_captured_with_the_handshake_readable_and_flows_carry_the_identity() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_udp_port();
    let http = common::free_tcp_port();
    let monitor = format!(
        "[monitor.capture]\nenabled = true\ndir = \"{data}/captures\"\n\
         [monitor.flows]\nenabled = true\ndir = \"{data}/flows\"\n",
        data = dir.path().display()
    );
    let cfg = dtls_gateway(dir.path(), port, http, "ward-dtls-monitor", &monitor);
    let (mut gateway, rx) = run_with_stdout_lines(&cfg);
    wait_ready(http);
    let stranger = common::openssl_psk_post(port, "bed-99", "bed-12", 95);
    let device = common::openssl_psk_post(port, "bed-12", "bed-12", 95);
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("a reading on stdout");
    assert!(line.contains("\"bed-12\""), "{line}");
    let failed = "wardgate_dtls_handshake_failures_total{reason=\"unknown_identity\"} 1";
    common::wait_for(
        "the stranger's failed handshake",
        Duration::from_secs(30),
        || {
            common::http_get(format!("127.0.0.1:{http}").parse().unwrap(), "/metrics")
                .filter(|(_, body)| body.contains(failed))
        },
    );
    drop((device, stranger));
    let status = common::terminate(&mut gateway.0);
    assert!(status.success(), "{status}");

    // The capture: DTLS records, decoded as DTLS by tshark.
    let captures: Vec<_> = std::fs::read_dir(dir.path().join("captures"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(captures.len(), 1, "{captures:?}");
    let dtls = format!("udp.port=={port},dtls");
    let rows = common::tshark_fields(
        &captures[0],
        &["-d", &dtls],
        &[
            "udp.dstport",
            "dtls.handshake.type",
            "dtls.record.content_type",
            "dtls.app_data",
            "frame.comment",
        ],
    );
    let text = format!("{rows:?}");
    let handshake_types: Vec<&str> = rows
        .iter()
        .flat_map(|r| r[1].split(','))
        .filter(|t| !t.is_empty())
        .collect();
    // ClientHello (1) before and after the HelloVerifyRequest (3), the server's flight (2, 14).
    for t in ["1", "3", "2", "14"] {
        assert!(handshake_types.contains(&t), "handshake type {t}: {text}");
    }
    // (more than two only if the client retransmitted one)
    assert!(
        rows.iter()
            .filter(|r| r[1].split(',').any(|t| t == "1"))
            .count()
            >= 2,
        "{text}"
    );
    // The request went in as application data (type 23), its bytes zeroed by redaction.
    let app: Vec<&Vec<String>> = rows
        .iter()
        .filter(|r| r[0] == port.to_string() && r[2].split(',').any(|t| t == "23"))
        .collect();
    assert!(!app.is_empty(), "{text}");
    for r in &app {
        assert!(
            r[3].chars().all(|c| c == '0' || c == ','),
            "not redacted: {r:?}"
        );
    }
    // After the handshake the identity is on the packets.
    assert!(rows.iter().any(|r| r[4].contains("psk:bed-12")), "{text}");

    // The flows: the device's, named by its proven identity, with its handshake established and
    // no CoAP counts from encrypted records; the stranger's, its handshake failed on the
    // unknown identity.
    let (flows, records) = common::flow_records(&dir.path().join("flows"));
    assert_eq!(records.len(), 2, "{flows}");
    let (ok, refused): (Vec<_>, Vec<_>) = records
        .iter()
        .partition(|r| r["dtls_handshake"] == "established");
    assert_eq!((ok.len(), refused.len()), (1, 1), "{flows}");
    assert_eq!(refused[0]["dtls_handshake"], "unknown_identity");
    assert_eq!(refused[0]["auth_outcome"], "failed");
    assert_eq!(refused[0]["device"], "");
    let f = ok[0];
    assert_eq!(f["auth_outcome"], "ok");
    assert_eq!(f["app_protocol"], "coaps");
    assert_eq!(f["dst_port"], port);
    assert_eq!(f["device"], "psk:bed-12");
    assert_eq!(
        (f["malformed_pkts"].as_u64(), f["coap_con"].as_u64()),
        (Some(0), Some(0))
    );
    assert!(f["tot_fwd_pkts"].as_u64().unwrap() >= 4, "{f}");
    assert!(f["tot_bwd_pkts"].as_u64().unwrap() >= 3, "{f}");
}

/// `[monitor.capture] keylog_file`: the gateway writes the secrets of every captured DTLS
/// session in the NSS key log format, for a PSK session and a certificate (ECDHE_ECDSA) one
/// alike. Its lines are the very lines OpenSSL's client logs for the same sessions
/// (`-keylogfile`), the file is private to its owner, and tshark, given it, decrypts the
/// captured records back into both CoAP requests; without it tshark sees only application data.
#[test]
fn the_capture_key_log_lets_tshark_decrypt_dtls_psk_and_certificate_sessions() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let port = common::free_udp_port();
    let http = common::free_tcp_port();
    let pki = wardgate_testkit::Pki::generate();
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(&pki.client_cert)
        .output()
        .unwrap();
    let fingerprint = String::from_utf8(out.stdout).unwrap();
    let fingerprint = fingerprint.trim().split('=').nth(1).unwrap();
    std::fs::write(
        data.join("devices.toml"),
        format!(
            "[[device]]\nid = \"bed-12\"\n[device.psk]\nidentity = \"bed-12\"\n\
             key = \"hex:000102030405060708090a0b0c0d0e0f\"\n\
             [[device]]\nid = \"monitor-3\"\n[[device.certificate]]\nsha256 = \"{fingerprint}\"\n"
        ),
    )
    .unwrap();
    let keylog = data.join("keys/dtls-keys.log");
    let cfg = data.join("gateway.toml");
    std::fs::write(
        &cfg,
        format!(
            "[gateway]\nid = \"ward-dtls-keylog\"\n[registry]\npath = \"devices.toml\"\n\
             [coap]\nenabled = false\n[coaps]\nenabled = true\nlisten = [\"127.0.0.1:{port}\"]\n\
             certificate_file = \"{cert}\"\nprivate_key_file = \"{key}\"\n\
             [http]\nlisten = \"127.0.0.1:{http}\"\n[store]\npath = \"{store}\"\n\
             [monitor.capture]\nenabled = true\ndir = \"{captures}\"\nredact_payloads = false\n\
             keylog_file = \"{keylog}\"\n\
             [[uplinks]]\ntype = \"file\"\nname = \"out\"\npath = \"-\"\n",
            cert = pki.server_cert.display(),
            key = pki.server_key.display(),
            store = data.join("outbox.db").display(),
            captures = data.join("captures").display(),
            keylog = keylog.display(),
        ),
    )
    .unwrap();
    let (mut gateway, rx) = run_with_stdout_lines(&cfg);
    wait_ready(http);
    let psk_log = data.join("openssl-psk-keys.log");
    let psk_client = common::openssl_psk_post_with(
        port,
        "bed-12",
        "bed-12",
        96,
        &["-keylogfile".as_ref(), psk_log.as_os_str()],
    );
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("a reading on stdout");
    assert!(line.contains("\"bed-12\""), "{line}");
    let cert_log = data.join("openssl-cert-keys.log");
    let cert_client = common::openssl_cert_post_with(
        port,
        &pki.client_cert,
        &pki.client_key,
        "monitor-3",
        88,
        &["-keylogfile".as_ref(), cert_log.as_os_str()],
    );
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("a second reading on stdout");
    assert!(line.contains("\"monitor-3\""), "{line}");
    common::wait_for("the key log lines", Duration::from_secs(30), || {
        common::http_get(format!("127.0.0.1:{http}").parse().unwrap(), "/metrics").filter(
            |(_, body)| {
                body.contains("wardgate_monitor_capture_keylog_lines_total 2")
                    && body.contains("wardgate_dtls_session_keys_total{reason=\"logged\"} 2")
            },
        )
    });
    drop((psk_client, cert_client));
    let status = common::terminate(&mut gateway.0);
    assert!(status.success(), "{status}");

    let client_random_lines = |path: &std::path::Path| -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("CLIENT_RANDOM "))
            .map(str::to_owned)
            .collect()
    };
    let ours = client_random_lines(&keylog);
    let theirs = [
        client_random_lines(&psk_log),
        client_random_lines(&cert_log),
    ]
    .concat();
    assert_eq!(ours.len(), 2, "{ours:?}");
    assert_eq!(ours, theirs, "the gateway's key log differs from OpenSSL's");
    let mode = std::fs::metadata(&keylog).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let captures: Vec<_> = std::fs::read_dir(data.join("captures"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(captures.len(), 1, "{captures:?}");
    let dtls = format!("udp.port=={port},dtls");
    // CoAP inside DTLS on this port (Wireshark only knows 5684 by itself).
    let coap_inside = format!("dtls.port=={port},coap");
    let fields = [
        "udp.dstport",
        "coap.code",
        "coap.opt.uri_path",
        "json.value.string",
        "json.value.number",
    ];
    let keylog_pref = format!("tls.keylog_file:{}", keylog.display());
    let decrypted = common::tshark_fields(
        &captures[0],
        &["-d", &dtls, "-d", &coap_inside, "-o", &keylog_pref],
        &fields,
    );
    let text = format!("{decrypted:?}");
    let posts: Vec<(&str, &str, &str)> = decrypted
        .iter()
        .filter(|r| r[0] == port.to_string() && r[1] == "2")
        .map(|r| (r[2].as_str(), r[3].as_str(), r[4].as_str()))
        .collect();
    // The SenML payloads, decoded as JSON: `[{"n":"spo2","u":"%","v":96}]`.
    assert_eq!(
        posts,
        [
            ("v1,readings,bed-12", "spo2,%", "96"),
            ("v1,readings,monitor-3", "spo2,%", "88")
        ],
        "{text}"
    );
    // The answers (2.01 Created) are decrypted too.
    let created = decrypted
        .iter()
        .filter(|r| r[0] != port.to_string() && r[1] == "65")
        .count();
    assert_eq!(created, 2, "{text}");
    let sealed = common::tshark_fields(&captures[0], &["-d", &dtls, "-d", &coap_inside], &fields);
    assert!(
        sealed.iter().all(|r| r[1].is_empty()),
        "CoAP decoded without the key log: {sealed:?}"
    );
}

/// The anomaly detectors on the DTLS endpoint, against OpenSSL's DTLS client: three handshakes
/// with an identity the registry does not know become one `auth_failures` event, and their
/// ClientHellos (two per handshake: before and after the cookie) one `handshake_flood` event,
/// each a `security`-class reading on the file uplink naming the source.
#[test]
fn failed_dtls_handshakes_become_auth_failure_and_handshake_flood_readings() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_udp_port();
    let http = common::free_tcp_port();
    let monitor = "[monitor.anomalies]\nenabled = true\nlearning = \"0s\"\nwindow = \"60s\"\n\
                   auth_failure_threshold = 3\nhandshake_threshold = 4\n";
    let cfg = dtls_gateway(dir.path(), port, http, "ward-dtls-anomaly", monitor);
    let (mut gateway, rx) = run_with_stdout_lines(&cfg);
    wait_ready(http);
    let metrics = || {
        common::http_get(format!("127.0.0.1:{http}").parse().unwrap(), "/metrics")
            .map(|(_, body)| body)
            .unwrap_or_default()
    };
    for n in 1..=3 {
        let stranger = common::openssl_psk_post(port, "bed-99", "bed-12", 90);
        let failed =
            format!("wardgate_dtls_handshake_failures_total{{reason=\"unknown_identity\"}} {n}");
        common::wait_for(
            "the stranger's failed handshake",
            Duration::from_secs(30),
            || metrics().contains(&failed).then_some(()),
        );
        drop(stranger);
    }
    let mut kinds = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while kinds.len() < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("two security readings on stdout");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if v["class"] != "security" {
            continue;
        }
        assert_eq!(v["device"], "ward-dtls-anomaly", "{line}");
        let records = v["records"].as_array().unwrap();
        let value = |n: &str| {
            records
                .iter()
                .find(|r| r["n"] == n)
                .cloned()
                .unwrap_or_default()
        };
        assert!(
            value("peer")["vs"]
                .as_str()
                .unwrap()
                .starts_with("127.0.0.1:"),
            "{line}"
        );
        kinds.push(value("anomaly")["vs"].as_str().unwrap().to_owned());
    }
    kinds.sort();
    assert_eq!(kinds, ["auth_failures", "handshake_flood"]);
    let text = metrics();
    for kind in ["auth_failures", "handshake_flood"] {
        let series = format!("wardgate_monitor_anomalies_total{{kind=\"{kind}\"}} 1");
        assert!(text.contains(&series), "{series}\n{text}");
    }
    let status = common::terminate(&mut gateway.0);
    assert!(status.success(), "{status}");
}

#[test]
fn every_command_has_help_with_examples() {
    let help = |cmd: &[&str]| -> String {
        let out = Command::new(WARDGATE)
            .args(cmd)
            .arg("--help")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{cmd:?}: {text}");
        text
    };
    // The subcommands each help lists (`Commands:` lines), so a new command cannot be missed.
    let commands = |text: &str| -> Vec<String> {
        text.lines()
            .skip_while(|l| !l.starts_with("Commands:"))
            .skip(1)
            .take_while(|l| l.starts_with("  "))
            .filter_map(|l| l.split_whitespace().next())
            .filter(|c| *c != "help")
            .map(str::to_owned)
            .collect()
    };
    let top = commands(&help(&[]));
    assert!(top.len() >= 8, "{top:?}");
    let mut checked = Vec::new();
    for cmd in &top {
        let text = help(&[cmd]);
        let subs = commands(&text);
        if subs.is_empty() {
            assert!(text.contains("Examples:\n  wardgate "), "{cmd}:\n{text}");
            checked.push(cmd.clone());
        }
        for sub in subs {
            let text = help(&[cmd, &sub]);
            assert!(
                text.contains("Examples:\n  wardgate "),
                "{cmd} {sub}:\n{text}"
            );
            checked.push(format!("{cmd} {sub}"));
        }
    }
    for expected in [
        "run",
        "generate-config",
        "simulate",
        "store recover",
        "audit verify",
    ] {
        assert!(checked.iter().any(|c| c == expected), "{checked:?}");
    }
}

/// `wardgate generate-config` prints a configuration that `check-config` accepts as it is, and
/// `--reference` prints exactly the checked-in `docs/configuration.md`.
#[test]
fn generate_config_prints_a_valid_config_and_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(WARDGATE)
        .arg("generate-config")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for key in [
        "#piggyback_budget = \"500ms\"",
        "#[[uplinks]]",
        "#[selector]",
        "[coap.dedup]",
    ] {
        assert!(text.contains(key), "no {key} in:\n{text}");
    }
    let cfg = dir.path().join("gateway.toml");
    std::fs::write(&cfg, &text).unwrap();
    let check = Command::new(WARDGATE)
        .args(["check-config", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let reference = Command::new(WARDGATE)
        .args(["generate-config", "--reference"])
        .output()
        .unwrap();
    assert!(reference.status.success());
    let docs = std::fs::read(repo_file("docs/configuration.md")).unwrap();
    assert!(reference.stdout == docs, "docs/configuration.md is stale");
}

#[test]
fn check_config_names_the_line_the_key_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let check = |name: &str, text: &str| -> String {
        let cfg = dir.path().join(name);
        std::fs::write(&cfg, text).unwrap();
        let out = Command::new(WARDGATE)
            .args(["check-config", "--config"])
            .arg(&cfg)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(64));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // Keys of the wrong type or misspelt (each section reports its first).
    let err = check(
        "typos.toml",
        "# a gateway with typos\n[coap]\nlisten = \"0.0.0.0:5683\"\n[http]\nlisen = \"127.0.0.1:8080\"\n\
         [[uplinks]]\ntype = \"file\"\nname = \"out\"\npath = \"-\"\n",
    );
    for needle in [
        "line 3, column 1: coap.listen: invalid type: string \"0.0.0.0:5683\", expected a sequence (write a list",
        "line 5, column 1: http.lisen: unknown field `lisen`",
        "did you mean `listen`?",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    // Values out of range, found once the file reads.
    let err = check(
        "values.toml",
        "[store]\nmax_batch = 0\n[[uplinks]]\ntype = \"mqtt\"\nname = \"cloud\"\nurl = \"ftp://x\"\n",
    );
    for needle in [
        "line 2, column 1: store.max_batch:",
        "line 6, column 1: uplinks[0].url:",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
}
