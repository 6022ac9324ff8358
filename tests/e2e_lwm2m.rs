//! LwM2M through the real binary: a client registers over DTLS with the PSK the device registry
//! holds (OpenSSL's DTLS client carrying hand-made CoAP, so nothing of ours is on the client
//! side), the admin API lists it with the identity the handshake proved, and an operation run
//! through the admin API reaches the client over its DTLS session and comes back decoded. Over
//! plain UDP the same registration is refused as unauthenticated (libcoap's client).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{WARDGATE, admin_request};

const TOKEN: &str = "e2e-admin-token-5b1c9d";
/// `printf %s "$TOKEN" | sha256sum`
const TOKEN_SHA256: &str = "171af1420a6b96d677b85fe0e59f95055a264ba254305abf807e17a7cee758f6";
const KEY_HEX: &str = "000102030405060708090a0b0c0d0e0f";

/// OpenSSL's DTLS client: what it receives accumulates in the returned buffer.
struct DtlsClient {
    guard: common::ChildGuard,
    stdin: std::process::ChildStdin,
    received: Arc<Mutex<Vec<u8>>>,
}

impl DtlsClient {
    fn start(port: u16, identity: &str) -> DtlsClient {
        let mut c = Command::new("/usr/bin/openssl")
            .args(["s_client", "-dtls1_2", "-connect"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-psk_identity", identity, "-psk", KEY_HEX])
            .args(["-cipher", "PSK-AES128-CCM8", "-quiet", "-ign_eof"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdin = c.stdin.take().unwrap();
        let mut stdout = c.stdout.take().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let r = received.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                r.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        DtlsClient {
            guard: common::ChildGuard(c),
            stdin,
            received,
        }
    }

    fn send(&mut self, datagram: &[u8]) {
        self.stdin.write_all(datagram).unwrap();
        self.stdin.flush().unwrap();
    }

    /// Waits until at least `len` bytes were received; returns them all.
    fn wait_for_bytes(&self, len: usize, what: &str) -> Vec<u8> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = self.received.lock().unwrap().clone();
            if got.len() >= len {
                return got;
            }
            assert!(Instant::now() < deadline, "{what}: received only {got:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn an_lwm2m_client_registers_over_dtls_and_is_operated_through_the_admin_api() {
    let dir = tempfile::tempdir().unwrap();
    let coaps = common::free_udp_port();
    let coap = common::free_udp_port();
    let http = common::free_tcp_port();
    let admin: SocketAddr = format!("127.0.0.1:{}", common::free_tcp_port())
        .parse()
        .unwrap();
    std::fs::write(
        dir.path().join("devices.toml"),
        format!(
            "[[device]]\nid = \"bed-12\"\nprotocols = [\"lwm2ms\", \"coaps\"]\n\
             [device.psk]\nidentity = \"bed-12\"\nkey = \"hex:{KEY_HEX}\"\n"
        ),
    )
    .unwrap();
    let cfg = dir.path().join("gateway.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[gateway]
id = "ward-lwm2m"
[registry]
path = "devices.toml"
[coap]
listen = ["127.0.0.1:{coap}"]
[coaps]
enabled = true
listen = ["127.0.0.1:{coaps}"]
[http]
listen = "127.0.0.1:{http}"
[admin]
enabled = true
listen = "{admin}"
[[admin.tokens]]
id = "ops"
sha256 = "{TOKEN_SHA256}"
[store]
path = "{}"
[[uplinks]]
type = "file"
name = "out"
path = "-"
"#,
            dir.path().join("outbox.db").display()
        ),
    )
    .unwrap();
    let log = dir.path().join("gateway.log");
    let _gateway = common::ChildGuard(
        Command::new(WARDGATE)
            .args(["run", "--config"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    common::wait_for("/readyz", Duration::from_secs(30), || {
        common::http_get(format!("127.0.0.1:{http}").parse().unwrap(), "/readyz")
            .filter(|(code, _)| *code == 200)
    });

    // Over plain UDP nothing proves who registers: 4.01.
    let plain = common::coap_client(&[
        "-m",
        "post",
        "-t",
        "40",
        "-e",
        "</3/0>",
        &format!("coap://127.0.0.1:{coap}/rd?ep=bed-12&lt=60"),
    ]);
    assert!(plain.text().contains("4.01"), "{}", plain.text());

    // Over DTLS with bed-12's PSK: 2.01 with Location-Path rd/{id}.
    let mut client = DtlsClient::start(coaps, "bed-12");
    client.send(&common::lwm2m_register_datagram("bed-12"));
    let answer = client.wait_for_bytes(4, "the answer to Register");
    assert_eq!(
        &answer[..4],
        &[0x60, 0x41, 0x12, 0x34],
        "ACK 2.01, same MID: {answer:?}"
    );
    let answer = client.wait_for_bytes(12, "the Location-Path");
    assert!(contains(&answer, b"rd"), "{answer:?}");

    let (code, body) = admin_request(
        admin,
        "GET",
        "/admin/v1/lwm2m/clients/bed-12",
        Some(TOKEN),
        "",
    );
    assert_eq!(code, 200, "{body}");
    let info: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(info["identity"], "psk:bed-12");
    assert_eq!(info["transport"], "dtls");
    assert_eq!(info["version"], "1.1");
    assert_eq!(info["objects"]["objects"][1]["oid"], 3);
    let (code, _) = admin_request(admin, "GET", "/admin/v1/lwm2m/clients", None, "");
    assert_eq!(code, 401, "the admin API wants its token");

    // A Read through the admin API goes to the client over its DTLS session; the test answers
    // it by hand (piggybacked 2.05, TLV with /3/0/9 = 100).
    let before = client.received.lock().unwrap().len();
    let reader = std::thread::spawn(move || {
        admin_request(
            admin,
            "POST",
            "/admin/v1/lwm2m/clients/bed-12/operations",
            Some(TOKEN),
            r#"{"op":"read","path":"/3/0","format":"tlv"}"#,
        )
    });
    let got = client.wait_for_bytes(before + 4, "the Read request");
    let req = &got[before..];
    assert_eq!(req[0] & 0xF0, 0x40, "a CON request: {req:?}");
    assert_eq!(req[1], 0x01, "GET: {req:?}");
    assert!(
        contains(req, &[0xB1, b'3', 0x01, b'0']),
        "Uri-Path 3/0: {req:?}"
    );
    let tkl = usize::from(req[0] & 0x0F);
    let mut ack = vec![0x60 | req[0] & 0x0F, 0x45, req[2], req[3]];
    ack.extend_from_slice(&req[4..4 + tkl]);
    ack.extend_from_slice(&[0xC2, 0x2D, 0x16, 0xFF, 0xC1, 0x09, 0x64]);
    client.send(&ack);
    let (code, body) = reader.join().unwrap();
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["values"][0]["path"], "/3/0/9");
    assert_eq!(v["values"][0]["type"], "integer");
    assert_eq!(v["values"][0]["value"], 100);
    drop(client.guard);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains(KEY_HEX), "a key in the log");
    assert!(!text.contains(TOKEN), "the token in the log");
}
