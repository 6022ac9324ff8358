//! The admin API against a real registry in a temporary directory: authentication (token,
//! client certificate), the rate limit, edits with immediate effect, bounds, and TLS with a real
//! client (curl).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wardgate_core::health::ComponentKind;
use wardgate_core::{AuditKind, CredentialStore, Health, MemoryAudit, Shutdown};
use wardgate_http::{
    AdminConfig, AdminDeps, AdminMetrics, AdminServer, AdminTlsConfig, AdminToken,
};
use wardgate_registry::{Registry, RegistryMetrics};
use wardgate_testkit::sha256_hex;

const TOKEN: &str = "s3cret-admin-token-0f4e";
const KEY_HEX: &str = "000102030405060708090a0b0c0d0e0f";
const NEW_KEY_HEX: &str = "f0e0d0c0b0a090807060504030201000";

struct Admin {
    addr: SocketAddr,
    audit: Arc<MemoryAudit>,
    reg: Option<Arc<Registry>>,
    dir: tempfile::TempDir,
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<Result<(), wardgate_http::HttpError>>,
}

impl Admin {
    async fn start(with_registry: bool, tweak: impl FnOnce(&mut AdminConfig)) -> Admin {
        let dir = tempfile::tempdir().unwrap();
        let audit = Arc::new(MemoryAudit::default());
        let reg = with_registry.then(|| {
            let path = dir.path().join("devices.toml");
            std::fs::write(
                &path,
                format!(
                    "[[device]]\nid = \"bed-12\"\n[device.psk]\nidentity = \"psk-bed-12\"\nkey = \"hex:{KEY_HEX}\"\n"
                ),
            )
            .unwrap();
            Arc::new(Registry::load(path, audit.clone(), RegistryMetrics::default()).unwrap())
        });
        let mut cfg = AdminConfig {
            enabled: true,
            listen: "127.0.0.1:0".parse().unwrap(),
            tokens: vec![AdminToken {
                id: "ops-1".into(),
                sha256: sha256_hex(TOKEN.as_bytes()),
                role: wardgate_http::TokenRole::Admin,
            }],
            ..AdminConfig::default()
        };
        tweak(&mut cfg);
        let deps = AdminDeps {
            registry: reg.clone(),
            audit: audit.clone(),
            metrics: AdminMetrics::default(),
            lwm2m: None,
            selector: None,
            outbox: None,
            captures: None,
            board: None,
            health: Health::new(),
        };
        let health = Health::new();
        let server = AdminServer::bind(
            &cfg,
            deps,
            health.reporter("admin", ComponentKind::Listener),
        )
        .await
        .unwrap();
        let addr = server.local_addr().unwrap();
        let shutdown = Shutdown::new();
        let task = tokio::spawn(server.run(shutdown.clone()));
        Admin {
            addr,
            audit,
            reg,
            dir,
            shutdown,
            task,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }

    /// A request with the right token.
    async fn send(&self, method: &str, path: &str, body: Option<&str>) -> Reply {
        call(self.addr, method, path, Some(TOKEN), body).await
    }

    fn count(&self, kind: AuditKind, reason: &str) -> usize {
        self.audited(kind, reason).len()
    }

    fn audited(&self, kind: AuditKind, reason: &str) -> Vec<wardgate_core::AuditEvent> {
        self.audit
            .events()
            .into_iter()
            .filter(|e| e.kind == kind && e.reason == reason)
            .collect()
    }
}

struct Reply {
    status: u16,
    head: String,
    body: String,
}

/// A minimal HTTP/1.1 client over plain TCP.
async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Reply {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    let body = body.unwrap_or("");
    req.push_str(&format!(
        "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ));
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("reply in time")
        .unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Reply {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

#[tokio::test]
async fn a_request_without_credentials_is_refused_401_with_a_bearer_challenge_and_audited() {
    let admin = Admin::start(true, |_| {}).await;
    let r = call(admin.addr, "GET", "/admin/v1/devices", None, None).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(
        r.head
            .to_ascii_lowercase()
            .contains("www-authenticate: bearer"),
        "{}",
        r.head
    );
    assert_eq!(r.body, r#"{"error":"authentication required"}"#);
    let ev = admin.audited(AuditKind::AuthFailure, "admin_no_credentials");
    assert_eq!(ev.len(), 1, "{:?}", admin.audit.events());
    assert!(ev[0].peer.is_some());
    admin.stop().await;
}

#[tokio::test]
async fn a_wrong_token_is_refused_401_and_audited_without_the_token() {
    let admin = Admin::start(true, |_| {}).await;
    let wrong = "guessed-token-7781";
    let r = call(admin.addr, "GET", "/admin/v1/devices", Some(wrong), None).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(!r.body.contains(wrong));
    let ev = admin.audited(AuditKind::AuthFailure, "admin_bad_token");
    assert_eq!(ev.len(), 1, "{:?}", admin.audit.events());
    let all = format!("{:?}", admin.audit.events());
    assert!(!all.contains(wrong), "{all}");
    assert!(!all.contains(TOKEN), "{all}");
    admin.stop().await;
}

#[tokio::test]
async fn the_right_token_lists_devices_without_any_key_material() {
    let admin = Admin::start(true, |_| {}).await;
    let r = admin.send("GET", "/admin/v1/devices", None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v[0]["id"], "bed-12");
    assert_eq!(v[0]["psk"]["identity"], "psk-bed-12");
    assert_eq!(v[0]["psk"]["key_bytes"], 16);
    assert!(!r.body.contains(KEY_HEX), "{}", r.body);
    let one = admin.send("GET", "/admin/v1/devices/bed-12", None).await;
    assert_eq!(one.status, 200);
    assert!(!one.body.contains(KEY_HEX));
    let none = admin.send("GET", "/admin/v1/devices/bed-99", None).await;
    assert_eq!(none.status, 404);
    assert_eq!(none.body, r#"{"error":"no such device"}"#);
    admin.stop().await;
}

#[tokio::test]
async fn a_device_put_through_the_api_is_readable_at_once_durable_and_audited() {
    let admin = Admin::start(true, |_| {}).await;
    let spec = format!(
        r#"{{"classes":["vital"],"psk":{{"identity":"psk-bed-14","key":"hex:{NEW_KEY_HEX}"}}}}"#
    );
    let r = admin
        .send("PUT", "/admin/v1/devices/bed-14", Some(&spec))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(!r.body.contains(NEW_KEY_HEX), "{}", r.body);
    let got = admin.send("GET", "/admin/v1/devices/bed-14", None).await;
    assert_eq!(got.status, 200, "{}", got.body);
    let v: serde_json::Value = serde_json::from_str(&got.body).unwrap();
    assert_eq!(v["classes"], serde_json::json!(["vital"]));
    // Immediate effect: the DTLS key store answers with the new key.
    let reg = admin.reg.as_ref().unwrap();
    assert_eq!(reg.psk("psk-bed-14").unwrap().len(), 16);
    // Durable: in devices.toml.
    let file = std::fs::read_to_string(admin.dir.path().join("devices.toml")).unwrap();
    assert!(file.contains("bed-14"), "{file}");
    // Replacing it answers 200.
    let again = admin
        .send("PUT", "/admin/v1/devices/bed-14", Some(&spec))
        .await;
    assert_eq!(again.status, 200, "{}", again.body);
    let ev = admin.audited(AuditKind::AdminAction, "device_upsert");
    assert_eq!(ev.len(), 2, "{:?}", admin.audit.events());
    assert_eq!(ev[0].actor.as_deref(), Some("admin:ops-1"));
    assert_eq!(ev[0].subject.as_deref(), Some("bed-14"));
    assert!(!format!("{:?}", admin.audit.events()).contains(NEW_KEY_HEX));
    admin.stop().await;
}

#[tokio::test]
async fn an_invalid_device_spec_is_refused_without_echoing_values_and_audited_as_refused() {
    let admin = Admin::start(true, |_| {}).await;
    // A key of the wrong type: serde would echo it.
    let typo = r#"{"psk":{"identity":"p","key":12345678901234567}}"#;
    let r = admin
        .send("PUT", "/admin/v1/devices/bed-15", Some(typo))
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(!r.body.contains("12345678901234567"), "{}", r.body);
    // A key too short: the registry refuses it with its problems, and nothing changes.
    let short = r#"{"psk":{"identity":"p","key":"hex:0011"}}"#;
    let r = admin
        .send("PUT", "/admin/v1/devices/bed-15", Some(short))
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("problems"), "{}", r.body);
    assert!(!r.body.contains("0011\""), "{}", r.body);
    // An id that is not the path's.
    let other = r#"{"id":"bed-16"}"#;
    let r = admin
        .send("PUT", "/admin/v1/devices/bed-15", Some(other))
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    // ${VAR} keys would let a caller probe the environment.
    let env = r#"{"psk":{"identity":"p","key":"${HOME}"}}"#;
    let r = admin
        .send("PUT", "/admin/v1/devices/bed-15", Some(env))
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(admin.reg.as_ref().unwrap().get("bed-15").is_none());
    assert_eq!(
        admin.count(AuditKind::AdminAction, "device_upsert_refused"),
        4
    );
    admin.stop().await;
}

#[tokio::test]
async fn revoking_a_device_takes_effect_at_once_and_restoring_lifts_it() {
    let admin = Admin::start(true, |_| {}).await;
    let reg = admin.reg.clone().unwrap();
    let g0 = reg.generation();
    assert!(reg.psk("psk-bed-12").is_some());
    let r = admin
        .send("POST", "/admin/v1/devices/bed-12/revoke", None)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains(r#""revoked":true"#), "{}", r.body);
    assert!(reg.psk("psk-bed-12").is_none());
    assert!(reg.generation() > g0);
    let r = admin
        .send("POST", "/admin/v1/devices/bed-12/restore", None)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(reg.psk("psk-bed-12").is_some());
    let missing = admin
        .send("POST", "/admin/v1/devices/nope/revoke", None)
        .await;
    assert_eq!(missing.status, 404);
    assert_eq!(admin.count(AuditKind::AdminAction, "device_revoke"), 1);
    assert_eq!(admin.count(AuditKind::AdminAction, "device_restore"), 1);
    assert_eq!(
        admin.count(AuditKind::AdminAction, "device_revoke_refused"),
        1
    );
    // The registry records its own change too.
    assert!(
        admin
            .audit
            .events()
            .iter()
            .any(|e| e.kind == AuditKind::RegistryChange
                && e.reason == "device_revoked"
                && e.actor.as_deref() == Some("admin:ops-1"))
    );
    let del = admin.send("DELETE", "/admin/v1/devices/bed-12", None).await;
    assert_eq!(del.status, 204);
    assert!(reg.get("bed-12").is_none());
    admin.stop().await;
}

#[tokio::test]
async fn the_pending_list_and_a_reload_are_served() {
    let admin = Admin::start(true, |_| {}).await;
    let r = admin.send("GET", "/admin/v1/pending", None).await;
    assert_eq!((r.status, r.body.as_str()), (200, "[]"));
    let r = admin
        .send("DELETE", "/admin/v1/pending/psk:bed-99", None)
        .await;
    assert_eq!(r.status, 404, "{}", r.body);
    std::fs::write(
        admin.dir.path().join("devices.toml"),
        "[[device]]\nid = \"bed-20\"\n[[device]]\nid = \"bed-21\"\n",
    )
    .unwrap();
    let r = admin.send("POST", "/admin/v1/registry/reload", None).await;
    assert_eq!((r.status, r.body.as_str()), (200, r#"{"devices":2}"#));
    assert_eq!(admin.count(AuditKind::AdminAction, "registry_reload"), 1);
    admin.stop().await;
}

#[tokio::test]
async fn a_body_over_64_kib_is_refused_413() {
    let admin = Admin::start(true, |_| {}).await;
    let big = format!(r#"{{"resources":["{}"]}}"#, "a".repeat(70 * 1024));
    let r = admin
        .send("PUT", "/admin/v1/devices/bed-13", Some(&big))
        .await;
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(r.body.starts_with(r#"{"error":"#), "{}", r.body);
    admin.stop().await;
}

#[tokio::test]
async fn repeated_failures_from_one_source_get_429_even_with_the_right_token() {
    let admin = Admin::start(true, |_| {}).await;
    for _ in 0..10 {
        let r = call(admin.addr, "GET", "/admin/v1/devices", Some("nope"), None).await;
        assert_eq!(r.status, 401);
    }
    let r = admin.send("GET", "/admin/v1/devices", None).await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(admin.count(AuditKind::AuthFailure, "admin_rate_limited"), 1);
    admin.stop().await;
}

#[tokio::test]
async fn device_endpoints_answer_503_without_a_registry() {
    let admin = Admin::start(false, |_| {}).await;
    let r = admin.send("GET", "/admin/v1/devices", None).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.body, r#"{"error":"no device registry configured"}"#);
    let r = admin.send("POST", "/admin/v1/devices/x/revoke", None).await;
    assert_eq!(r.status, 503);
    admin.stop().await;
}

/// curl's status code and body, over TLS.
async fn curl(args: &[&str], url: &str) -> (u16, String) {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"])
        .args(args)
        .arg(url)
        .output()
        .await
        .expect("curl is installed (scripts/test.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

fn tls(pki: &wardgate_testkit::Pki, client_ca: bool) -> AdminTlsConfig {
    AdminTlsConfig {
        cert_file: pki.server_cert.clone(),
        key_file: pki.server_key.clone(),
        client_ca_file: client_ca.then(|| pki.ca.clone()),
    }
}

fn cert_fingerprint(pem: &Path) -> String {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let der = CertificateDer::from_pem_file(pem).unwrap();
    sha256_hex(der.as_ref())
}

#[tokio::test]
async fn over_tls_curl_uses_the_api_and_plain_http_to_the_tls_port_gets_no_answer() {
    let pki = wardgate_testkit::Pki::generate();
    let admin = Admin::start(true, |c| c.tls = Some(tls(&pki, false))).await;
    let url = format!("https://127.0.0.1:{}/admin/v1/devices", admin.addr.port());
    let ca = pki.ca.to_str().unwrap();
    let auth = format!("Authorization: Bearer {TOKEN}");
    let (code, body) = curl(&["--cacert", ca, "-H", &auth], &url).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("bed-12") && !body.contains(KEY_HEX), "{body}");
    let (code, _) = curl(&["--cacert", ca], &url).await;
    assert_eq!(code, 401);
    // Plain HTTP to the TLS port: no HTTP answer.
    let mut s = tokio::net::TcpStream::connect(admin.addr).await.unwrap();
    s.write_all(b"GET /admin/v1/devices HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut out)).await;
    assert!(
        !out.starts_with(b"HTTP/"),
        "{:?}",
        String::from_utf8_lossy(&out)
    );
    admin.stop().await;
}

#[tokio::test]
async fn a_listed_client_certificate_authenticates_without_a_token_and_an_unlisted_one_is_refused()
{
    let pki = wardgate_testkit::Pki::generate();
    let listed = cert_fingerprint(&pki.client_cert);
    let ca = pki.ca.to_str().unwrap().to_owned();
    let client = [
        "--cacert",
        &ca,
        "--cert",
        pki.client_cert.to_str().unwrap(),
        "--key",
        pki.client_key.to_str().unwrap(),
    ];

    let admin = Admin::start(true, |c| {
        c.tls = Some(tls(&pki, true));
        c.client_certificates = vec![listed.clone()];
    })
    .await;
    let url = format!("https://127.0.0.1:{}/admin/v1/devices", admin.addr.port());
    let (code, body) = curl(&client, &url).await;
    assert_eq!(code, 200, "{body}");
    let revoke = format!(
        "https://127.0.0.1:{}/admin/v1/devices/bed-12/revoke",
        admin.addr.port()
    );
    let mut post = client.to_vec();
    post.extend(["-X", "POST"]);
    let (code, body) = curl(&post, &revoke).await;
    assert_eq!(code, 200, "{body}");
    let ev = admin.audited(AuditKind::AdminAction, "device_revoke");
    let actor = ev[0].actor.clone().unwrap();
    assert_eq!(actor, format!("admin-cert:{}", &listed[..16]));
    // Without a certificate, a token still works.
    let auth = format!("Authorization: Bearer {TOKEN}");
    let (code, _) = curl(&["--cacert", &ca, "-H", &auth], &url).await;
    assert_eq!(code, 200);
    admin.stop().await;

    // The same (verified) certificate, not listed: refused.
    let admin = Admin::start(true, |c| {
        c.tls = Some(tls(&pki, true));
        c.client_certificates = vec!["ab".repeat(32)];
    })
    .await;
    let url = format!("https://127.0.0.1:{}/admin/v1/devices", admin.addr.port());
    let (code, body) = curl(&client, &url).await;
    assert_eq!(code, 401, "{body}");
    assert_eq!(
        admin.count(AuditKind::AuthFailure, "admin_unlisted_certificate"),
        1
    );
    admin.stop().await;
}
