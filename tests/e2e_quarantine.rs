//! Quarantine as an operator meets it: `unknown = "quarantine"`, a device with a client
//! certificate the hospital CA signed but nobody registered posts over HTTPS ingest (curl). Its
//! readings are acknowledged (201) and held in the outbox, delivered nowhere, listed with the
//! identity in the admin API; a dismissal discards what was held; what it sends next is held
//! again and survives `kill -9`; approving it (adding a device holding the certificate)
//! releases exactly those readings to the upstream broker (Mosquitto) under the ids the device
//! was given; from then on it is an ordinary device. The audit trail records both decisions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Gateway, Mosquitto, Subscriber, admin_request, free_tcp_port, wait_for};
use wardgate_testkit::sha256_hex;

const ADMIN_TOKEN: &str = "e2e-quarantine-admin-7d2e";
const DEVICE_TOKEN: &str = "e2e-quarantine-bed-1-token-41ac";

/// The SHA-256 of a PEM certificate's DER, as wardgate names it.
fn fingerprint(pem: &Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-outform", "DER", "-in"])
        .arg(pem)
        .output()
        .expect("run openssl");
    assert!(out.status.success());
    sha256_hex(&out.stdout)
}

/// How a curl client proves itself.
enum Proof<'a> {
    Certificate(&'a wardgate_testkit::Pki),
    Token(&'a str),
}

/// One SenML reading posted with curl: (status, body).
fn post(
    pki: &wardgate_testkit::Pki,
    port: u16,
    device: &str,
    v: u32,
    proof: Proof<'_>,
) -> (u16, String) {
    let url = format!("https://127.0.0.1:{port}/v1/devices/{device}/readings");
    let mut cmd = Command::new("/usr/bin/curl");
    cmd.args(["-s", "-w", "\n%{http_code}", "--max-time", "10", "--cacert"])
        .arg(&pki.ca)
        .args(["-H", "Content-Type: application/senml+json"]);
    match proof {
        Proof::Certificate(p) => {
            cmd.arg("--cert")
                .arg(&p.client_cert)
                .arg("--key")
                .arg(&p.client_key);
        }
        Proof::Token(t) => {
            cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
        }
    }
    let out = cmd
        .args([
            "--data",
            &format!(r#"[{{"n":"spo2","u":"%","v":{v}}}]"#),
            &url,
        ])
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// The reading ids of a 201 answer.
fn ids(body: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    v["ids"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|i| i.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Posts until a 201 (the listener may still be starting); the ids, and whether it says held.
fn post_ok(
    pki: &wardgate_testkit::Pki,
    port: u16,
    device: &str,
    v: u32,
    proof: fn(&wardgate_testkit::Pki) -> Proof<'_>,
) -> (Vec<String>, bool) {
    let mut last = (0, String::new());
    for _ in 0..200 {
        last = post(pki, port, device, v, proof(pki));
        if last.0 == 201 {
            let held = last.1.contains(r#""held":true"#);
            return (ids(&last.1), held);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("no 201 for {device} from HTTPS ingest; last answer: {last:?}");
}

fn by_cert(p: &wardgate_testkit::Pki) -> Proof<'_> {
    Proof::Certificate(p)
}

fn by_token(_: &wardgate_testkit::Pki) -> Proof<'static> {
    Proof::Token(DEVICE_TOKEN)
}

/// Reading ids the subscriber sees within `quiet` of silence.
fn seen_ids(sub: &Subscriber, into: &mut HashSet<String>, quiet: Duration) {
    while let Some((_, payload)) = sub.next(quiet) {
        // Readings only (the uplink's status topic carries "online"/"offline").
        let v: serde_json::Value = serde_json::from_str(&payload).unwrap_or_default();
        if let Some(id) = v["id"].as_str() {
            into.insert(id.to_owned());
        }
    }
}

/// Waits until every reading of `ids` reached the subscriber (collected into `seen`).
fn wait_upstream(sub: &Subscriber, seen: &mut HashSet<String>, what: &str, ids: &[String]) {
    wait_for(what, Duration::from_secs(30), || {
        seen_ids(sub, seen, Duration::from_millis(200));
        ids.iter().all(|id| seen.contains(id)).then_some(())
    });
}

/// Waits until the quarantine lane holds `n` readings (the store's gauge).
fn wait_held(gw: &Gateway, n: f64) {
    let gauge = "wardgate_store_uplink_depth_readings{uplink=\"quarantine\"}";
    wait_for(
        &format!("{n} readings held"),
        Duration::from_secs(20),
        || (gw.metric(gauge) == n).then_some(()),
    );
}

/// The gateway with the registry in `dir`, the admin API on `admin` (token [`ADMIN_TOKEN`]),
/// the upstream `broker`, and `extra` TOML.
fn start(dir: &Path, broker: &Mosquitto, admin: SocketAddr, extra: &str) -> Gateway {
    Gateway::start(
        dir,
        &broker.url(),
        &format!(
            "[registry]\npath = \"devices.toml\"\n[admin]\nenabled = true\n\
             listen = \"{admin}\"\n[[admin.tokens]]\nid = \"ops-1\"\nsha256 = \"{}\"\n{extra}",
            sha256_hex(ADMIN_TOKEN.as_bytes())
        ),
    )
}

/// Approves the certificate `fp` by adding `device` (speaking `protocol`) that holds it.
fn approve(admin: SocketAddr, device: &str, protocol: &str, fp: &str) {
    let spec = format!(r#"{{"protocols":["{protocol}"],"certificate":[{{"sha256":"{fp}"}}]}}"#);
    let path = format!("/admin/v1/devices/{device}");
    let (code, body) = admin_request(admin, "PUT", &path, Some(ADMIN_TOKEN), &spec);
    assert_eq!(code, 201, "{body}");
}

#[test]
fn an_unknown_certificate_is_held_until_dismissed_or_approved_and_nothing_is_lost_across_kill_9() {
    common::require_tool("/usr/bin/curl");
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "wardgate/#");
    let pki = wardgate_testkit::Pki::generate();
    let fp = fingerprint(&pki.client_cert);
    let identity = format!("x509-sha256:{fp}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("devices.toml"),
        format!(
            "unknown = \"quarantine\"\n[[device]]\nid = \"bed-1\"\nprotocols = [\"https\"]\n\
             [[device.token]]\nid = \"t1\"\nsha256 = \"{}\"\n",
            sha256_hex(DEVICE_TOKEN.as_bytes())
        ),
    )
    .unwrap();
    let port = free_tcp_port();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
    let mut gw = start(
        dir.path(),
        &broker,
        admin,
        &format!(
            "[audit]\npath = \"audit.log\"\n[ingest.http]\nenabled = true\n\
             listen = \"127.0.0.1:{port}\"\n[ingest.http.tls]\ncert_file = \"{}\"\n\
             key_file = \"{}\"\nclient_ca_file = \"{}\"\n",
            pki.server_cert.display(),
            pki.server_key.display(),
            pki.ca.display()
        ),
    );
    let pending = || -> serde_json::Value {
        let (code, body) = admin_request(admin, "GET", "/admin/v1/pending", Some(ADMIN_TOKEN), "");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    };

    // 1. Three readings from the unknown certificate: 201, held. A registered device's reading
    //    goes through meanwhile, so the pipeline to the broker is shown to be flowing.
    let mut dismissed = Vec::new();
    for v in 0..3 {
        let (ids, held) = post_ok(&pki, port, "pump-7", 90 + v, by_cert);
        assert!(held, "the 201 of a quarantined reading says it is held");
        dismissed.extend(ids);
    }
    assert_eq!(dismissed.len(), 3);
    let (control, held) = post_ok(&pki, port, "bed-1", 97, by_token);
    assert!(!held);
    let mut seen = HashSet::new();
    wait_upstream(
        &sub,
        &mut seen,
        "the registered device's reading upstream",
        &control,
    );
    wait_held(&gw, 3.0);
    let list = pending();
    let entry = list
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["identity"] == identity.as_str())
        .unwrap_or_else(|| panic!("{identity} not in {list}"))
        .clone();
    assert_eq!(entry["held"], 3, "{entry}");

    // 2. Dismissed: the three leave the outbox undelivered.
    let path = format!("/admin/v1/pending/{identity}");
    let (code, body) = admin_request(admin, "DELETE", &path, Some(ADMIN_TOKEN), "");
    assert_eq!(code, 204, "{body}");
    wait_for(
        "the dismissed readings discarded",
        Duration::from_secs(20),
        || {
            let discarded =
                gw.metric("wardgate_registry_quarantine_readings_total{outcome=\"discarded\"}");
            (discarded == 3.0).then_some(())
        },
    );
    wait_held(&gw, 0.0);

    // 3. Two more are held again, and survive kill -9: after the restart the identity is
    //    listed again with them.
    let mut approved = Vec::new();
    for v in 0..2 {
        approved.extend(post_ok(&pki, port, "pump-7", 80 + v, by_cert).0);
    }
    wait_held(&gw, 2.0);
    // /readyz says so, and held readings are not an uplink backlog.
    let ready = wait_for(
        "/readyz to show the held readings",
        Duration::from_secs(20),
        || {
            let (code, ready) = common::http_get(gw.http, "/readyz")?;
            (code == 200 && ready.contains("holding 2 readings of unknown identities"))
                .then_some(ready)
        },
    );
    assert!(!ready.contains("owed: quarantine"), "{ready}");
    // The status page (no token) shows who waits and what is held.
    let (code, page) = common::http_get(admin, "/status/v1/panels").unwrap();
    assert_eq!(code, 200);
    assert!(
        page.contains("waiting for approval") && page.contains(&fp),
        "{page}"
    );
    gw.kill();
    gw.restart();
    wait_for(
        "the held identity listed after the restart",
        Duration::from_secs(20),
        || {
            let list = pending();
            list.as_array()
                .unwrap()
                .iter()
                .any(|e| e["identity"] == identity.as_str() && e["held"] == 2)
                .then_some(())
        },
    );

    // 4. Approved: a device holding the certificate. Exactly the two held since the dismissal
    //    arrive upstream, under the ids the device was given.
    approve(admin, "pump-7", "https", &fp);
    wait_upstream(&sub, &mut seen, "the approved readings upstream", &approved);
    // 5. Now it is a device like any other: its next reading is delivered at once.
    let (next, held) = post_ok(&pki, port, "pump-7", 99, by_cert);
    assert!(!held, "an approved device's reading is not held");
    wait_upstream(&sub, &mut seen, "the approved device's next reading", &next);
    seen_ids(&sub, &mut seen, Duration::from_millis(500));
    for id in &dismissed {
        assert!(!seen.contains(id), "dismissed reading {id} was delivered");
    }
    wait_held(&gw, 0.0);
    assert!(gw.metric("wardgate_registry_quarantine_readings_total{outcome=\"released\"}") >= 2.0);
    let status = gw.terminate();
    assert!(status.success(), "{status}\n{}", gw.log());

    let audit = dir.path().join("audit.log");
    common::assert_audit_verifies(&audit);
    let trail = std::fs::read_to_string(&audit).unwrap();
    assert!(
        trail.contains(r#""reason":"quarantine_discarded""#),
        "{trail}"
    );
    assert!(
        trail.contains(r#""reason":"quarantine_released""#),
        "{trail}"
    );
    assert!(trail.contains(r#""reason":"pending_dismissed""#), "{trail}");
    let log = gw.log();
    for secret in [ADMIN_TOKEN, DEVICE_TOKEN] {
        assert!(
            !log.contains(secret) && !trail.contains(secret),
            "{secret} leaked"
        );
    }
    broker.assert_no_dropped_messages();
}

/// The same over CoAP/DTLS: OpenSSL's DTLS client with an unregistered certificate
/// (ECDHE_ECDSA) completes its handshake, its reading is held (2.01 to the device), and it
/// reaches the broker once a device holding the certificate is added.
#[test]
fn an_unknown_certificate_over_dtls_is_held_and_released_on_approval() {
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "wardgate/#");
    let pki = wardgate_testkit::Pki::generate();
    let fp = fingerprint(&pki.client_cert);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("devices.toml"),
        "unknown = \"quarantine\"\n",
    )
    .unwrap();
    let coaps = common::free_udp_port();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
    let gw = start(
        dir.path(),
        &broker,
        admin,
        &format!(
            "[coaps]\nenabled = true\nlisten = [\"127.0.0.1:{coaps}\"]\n\
             certificate_file = \"{}\"\nprivate_key_file = \"{}\"\n",
            pki.server_cert.display(),
            pki.server_key.display(),
        ),
    );
    let device =
        common::openssl_cert_post(coaps, &pki.client_cert, &pki.client_key, "monitor-3", 88);
    wait_held(&gw, 1.0);
    let (code, body) = admin_request(admin, "GET", "/admin/v1/pending", Some(ADMIN_TOKEN), "");
    assert_eq!(code, 200);
    assert!(body.contains(&format!("x509-sha256:{fp}")), "{body}");

    approve(admin, "monitor-3", "coaps", &fp);
    let reading = wait_for(
        "the released reading upstream",
        Duration::from_secs(30),
        || {
            let (_, payload) = sub.next(Duration::from_millis(200))?;
            let v: serde_json::Value = serde_json::from_str(&payload).unwrap_or_default();
            (v["device"] == "monitor-3").then_some(v)
        },
    );
    assert_eq!(reading["source"]["transport"], "dtls", "{reading}");
    assert_eq!(
        reading["source"]["identity"],
        format!("x509-sha256:{fp}").as_str(),
        "{reading}"
    );
    assert_eq!(reading["records"][0]["v"], 88.0, "{reading}");
    drop(device);
    wait_held(&gw, 0.0);
    broker.assert_no_dropped_messages();
}
