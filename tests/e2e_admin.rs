//! The admin API as an operator meets it: the real binary with `[registry]`, `[audit]` and
//! `[admin]` on loopback; a device added over the API lands in `devices.toml` at once, the
//! audit trail holds the admin action (and a refused attempt) and verifies, and neither the
//! token nor the key appears in what the gateway logged.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{WARDGATE, admin_request as request};

const TOKEN: &str = "e2e-admin-token-5b1c9d";
/// `printf %s "$TOKEN" | sha256sum`
const TOKEN_SHA256: &str = "171af1420a6b96d677b85fe0e59f95055a264ba254305abf807e17a7cee758f6";
const NEW_KEY_HEX: &str = "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf";

#[test]
fn a_device_added_through_the_admin_api_is_in_devices_toml_and_the_audit_trail_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let http: SocketAddr = format!("127.0.0.1:{}", common::free_tcp_port())
        .parse()
        .unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", common::free_tcp_port())
        .parse()
        .unwrap();
    std::fs::write(
        dir.path().join("devices.toml"),
        "[[device]]\nid = \"bed-12\"\n",
    )
    .unwrap();
    let cfg = dir.path().join("gateway.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[gateway]
id = "ward-admin"
[log]
level = "debug"
[registry]
path = "devices.toml"
[audit]
path = "audit.log"
[coap]
enabled = false
[http]
listen = "{http}"
[admin]
enabled = true
listen = "{admin}"
[[admin.tokens]]
id = "ops-1"
sha256 = "{TOKEN_SHA256}"
[store]
path = "{}"
[[uplinks]]
type = "file"
name = "out"
path = "{}"
"#,
            dir.path().join("outbox.db").display(),
            dir.path().join("out.jsonl").display(),
        ),
    )
    .unwrap();
    let stderr = dir.path().join("wardgate.log");
    let mut child = common::ChildGuard(
        Command::new(WARDGATE)
            .args(["run", "--config"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap(),
    );
    common::wait_for("/healthz", Duration::from_secs(30), || {
        let up = common::http_get(http, "/healthz").is_some_and(|(code, _)| code == 200);
        let exited = child.0.try_wait().unwrap();
        assert!(
            exited.is_none(),
            "{}",
            std::fs::read_to_string(&stderr).unwrap()
        );
        up.then_some(())
    });
    // The admin API is not on the [http] listener.
    let (code, _) = request(http, "GET", "/admin/v1/devices", Some(TOKEN), "");
    assert_eq!(code, 404);

    let (code, _) = request(admin, "GET", "/admin/v1/devices", Some("not-the-token"), "");
    assert_eq!(code, 401);
    let spec = format!(r#"{{"psk":{{"identity":"psk-bed-14","key":"hex:{NEW_KEY_HEX}"}}}}"#);
    let (code, body) = request(admin, "PUT", "/admin/v1/devices/bed-14", Some(TOKEN), &spec);
    assert_eq!(code, 201, "{body}");
    assert!(!body.contains(NEW_KEY_HEX), "{body}");
    let (code, body) = request(admin, "GET", "/admin/v1/devices", Some(TOKEN), "");
    assert_eq!(code, 200);
    assert!(
        body.contains("bed-14") && !body.contains(NEW_KEY_HEX),
        "{body}"
    );

    let devices = std::fs::read_to_string(dir.path().join("devices.toml")).unwrap();
    assert!(devices.contains("id = \"bed-14\""), "{devices}");

    let audit = dir.path().join("audit.log");
    let text = common::wait_for(
        "the admin action in the audit trail",
        Duration::from_secs(30),
        || {
            let text = std::fs::read_to_string(&audit).unwrap_or_default();
            let done = text.contains(r#""kind":"admin_action","actor":"admin:ops-1""#)
                && text.contains(r#""reason":"device_upsert""#)
                && text.contains(r#""reason":"admin_bad_token""#);
            done.then_some(text)
        },
    );

    assert!(common::terminate(&mut child.0).success());
    common::assert_audit_verifies(&audit);
    let log = std::fs::read_to_string(&stderr).unwrap();
    assert!(log.contains("admin API listening"), "{log}");
    for secret in [TOKEN, "not-the-token", TOKEN_SHA256, NEW_KEY_HEX] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
        assert!(
            !text.contains(secret),
            "{secret} in the audit trail:\n{text}"
        );
    }
}
