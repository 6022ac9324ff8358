//! HTTPS device ingest against real clients (reqwest over rustls, and curl) over real TLS with an
//! rcgen PKI, a real device registry loaded from a devices.toml, and the real outbox: who gets
//! in, what is refused with which problem, and that a 2xx means the reading is in the outbox.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::pki::{Pair, TestPki};
use common::sha256_hex;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use wardgate_core::health::ComponentKind;
use wardgate_core::payload::Limits;
use wardgate_core::{
    AllowAll, Authorizer, Bus, CredentialStore, Health, IngestPipeline, MemoryAudit, NoCredentials,
    Shutdown, SystemClock,
};
use wardgate_http::HttpError;
use wardgate_http::ingest::{
    IngestDeps, IngestHttpConfig, IngestMetrics, IngestServer, IngestTlsConfig,
};
use wardgate_registry::{Registry, RegistryMetrics};
use wardgate_store::{Outbox, StoreConfig, StoreMetrics};

const TOKEN: &str = "dev-tok-bed-12-3f9a-never-logged";
const REVOKED_TOKEN: &str = "dev-tok-old-7-77aa";
const SENML: &str =
    r#"[{"bn":"bed-12/","n":"spo2","u":"%","v":97},{"n":"hr","u":"beat/min","v":72}]"#;

struct Gateway {
    addr: SocketAddr,
    pki: TestPki,
    /// A client certificate the registry knows (device bed-12).
    known: Pair,
    outbox: Outbox,
    stop_ingest: Shutdown,
    stop_store: Shutdown,
    ingest: tokio::task::JoinHandle<Result<(), HttpError>>,
    writer: tokio::task::JoinHandle<Result<(), wardgate_store::StoreError>>,
    _dir: tempfile::TempDir,
}

struct Options {
    registry: bool,
    tls: bool,
    store: fn(&mut StoreConfig),
    ingest: fn(&mut IngestHttpConfig),
}

impl Default for Options {
    fn default() -> Self {
        Options {
            registry: true,
            tls: true,
            store: |_| {},
            ingest: |_| {},
        }
    }
}

fn devices_toml(known_cert: &str) -> String {
    format!(
        r#"
[[device]]
id = "bed-12"
protocols = ["https"]
speaks_for = ["bed-12", "bed-12-*"]
[[device.token]]
id = "t1"
sha256 = "{token}"
[[device.certificate]]
sha256 = "{known_cert}"

[[device]]
id = "old-7"
revoked = true
[[device.token]]
id = "t1"
sha256 = "{revoked}"
"#,
        token = sha256_hex(TOKEN.as_bytes()),
        revoked = sha256_hex(REVOKED_TOKEN.as_bytes()),
    )
}

impl Gateway {
    async fn start(o: Options) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let pki = TestPki::new("ward");
        let server = pki.server("server");
        let known = pki.client("known", "bed-12");

        let mut store_cfg = StoreConfig {
            path: dir.path().join("outbox.db"),
            ..StoreConfig::default()
        };
        (o.store)(&mut store_cfg);
        let outbox = Outbox::open(
            &store_cfg,
            &["cloud".to_owned()],
            StoreMetrics::unregistered(),
        )
        .unwrap();
        let (bus, rx) = Bus::new(64);
        let health = Health::new();
        let stop_store = Shutdown::new();
        let writer = {
            let outbox = outbox.clone();
            let stop = stop_store.clone();
            let reporter = health.reporter("store", ComponentKind::Store);
            tokio::spawn(async move { outbox.run_writer(rx, stop, reporter).await })
        };

        let (authorizer, credentials): (Arc<dyn Authorizer>, Arc<dyn CredentialStore>) =
            if o.registry {
                let path = dir.path().join("devices.toml");
                std::fs::write(&path, devices_toml(&known.fingerprint())).unwrap();
                let reg = Arc::new(
                    Registry::load(
                        path,
                        Arc::new(MemoryAudit::default()),
                        RegistryMetrics::default(),
                    )
                    .unwrap(),
                );
                (reg.clone(), reg)
            } else {
                (Arc::new(AllowAll), Arc::new(NoCredentials))
            };
        let pipeline = IngestPipeline::new(
            "ward-t",
            bus,
            Arc::new(SystemClock),
            authorizer,
            Limits::default(),
        );
        let mut cfg = IngestHttpConfig {
            enabled: true,
            listen: "127.0.0.1:0".parse().unwrap(),
            tls: o.tls.then(|| IngestTlsConfig {
                cert_file: server.cert.clone(),
                key_file: server.key.clone(),
                client_ca_file: Some(pki.ca.clone()),
            }),
            ..IngestHttpConfig::default()
        };
        (o.ingest)(&mut cfg);
        let deps = IngestDeps {
            pipeline,
            credentials,
            metrics: IngestMetrics::default(),
            tap: None,
        };
        let server = IngestServer::bind(
            &cfg,
            deps,
            health.reporter("ingest", ComponentKind::Listener),
        )
        .await
        .unwrap();
        let addr = server.local_addr().unwrap();
        let stop_ingest = Shutdown::new();
        let ingest = tokio::spawn(server.run(stop_ingest.clone()));
        Gateway {
            addr,
            pki,
            known,
            outbox,
            stop_ingest,
            stop_store,
            ingest,
            writer,
            _dir: dir,
        }
    }

    fn url(&self, device: &str) -> String {
        format!(
            "https://127.0.0.1:{}/v1/devices/{device}/readings",
            self.addr.port()
        )
    }

    /// A reqwest client trusting the test CA, presenting `cert` if given.
    fn client(&self, cert: Option<&Pair>) -> reqwest::Client {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(&self.pki.ca).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        let config = match cert {
            Some(p) => {
                let chain = CertificateDer::pem_file_iter(&p.cert)
                    .unwrap()
                    .map(Result::unwrap)
                    .collect();
                let key = PrivateKeyDer::from_pem_file(&p.key).unwrap();
                builder.with_client_auth_cert(chain, key).unwrap()
            }
            None => builder.with_no_client_auth(),
        };
        reqwest::Client::builder()
            .tls_backend_preconfigured(config)
            .no_proxy()
            .build()
            .unwrap()
    }

    /// Everything the outbox holds for the uplink, as JSON.
    async fn stored(&self) -> Vec<serde_json::Value> {
        let mut cursor = self.outbox.cursor("cloud").unwrap();
        let got = cursor.try_next(1000).await.unwrap();
        got.iter()
            .map(|d| serde_json::from_slice(&d.json).unwrap())
            .collect()
    }

    async fn stop(self) {
        self.stop_ingest.cancel();
        self.ingest.await.unwrap().unwrap();
        self.stop_store.cancel();
        self.writer.await.unwrap().unwrap();
    }
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    json: serde_json::Value,
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> Answer {
    let mut req = client
        .post(url)
        .header("content-type", content_type)
        .body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.expect("an answer");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let bytes = r.bytes().await.unwrap();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    Answer {
        status,
        headers,
        json,
    }
}

/// A problem+json answer with `status`: its `detail`.
fn problem(a: &Answer, status: u16) -> String {
    assert_eq!(a.status, status, "{}", a.json);
    assert_eq!(
        a.headers["content-type"], "application/problem+json",
        "{:?}",
        a.headers
    );
    assert_eq!(a.json["status"], status);
    assert!(
        a.json["type"]
            .as_str()
            .unwrap()
            .starts_with("urn:wardgate:problem:")
    );
    assert!(a.json["title"].is_string());
    a.json["detail"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_reading_with_a_valid_token_gets_201_and_is_in_the_outbox() {
    let gw = Gateway::start(Options::default()).await;
    let client = gw.client(None);
    let a = post(
        &client,
        &gw.url("bed-12-spo2"),
        Some(TOKEN),
        "application/senml+json",
        SENML,
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.json);
    let id = a.json["ids"][0].as_str().unwrap().to_owned();
    assert_eq!(a.json["device"], "bed-12-spo2");
    let stored = gw.stored().await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["id"], id.as_str());
    assert_eq!(stored[0]["device"], "bed-12-spo2");
    assert_eq!(stored[0]["protocol"], "http");
    assert_eq!(stored[0]["source"]["identity"], "token:bed-12/t1");
    assert_eq!(stored[0]["source"]["transport"], "https");
    assert_eq!(stored[0]["records"][0]["n"], "bed-12/spo2");
    assert!(!stored[0].to_string().contains(TOKEN));
    gw.stop().await;
}

#[tokio::test]
async fn an_invalid_revoked_or_missing_token_gets_401_problem_json_and_nothing_is_stored() {
    let gw = Gateway::start(Options::default()).await;
    let client = gw.client(None);
    for token in [Some("guessed-token-0000"), Some(REVOKED_TOKEN), None] {
        let a = post(
            &client,
            &gw.url("bed-12"),
            token,
            "application/senml+json",
            SENML,
        )
        .await;
        let detail = problem(&a, 401);
        assert!(
            a.headers["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer"),
            "{:?}",
            a.headers
        );
        assert!(!detail.contains(REVOKED_TOKEN) && !a.json.to_string().contains("guessed"));
    }
    // Someone else's device: the token is good, the claim is not.
    let a = post(
        &client,
        &gw.url("room-21"),
        Some(TOKEN),
        "application/senml+json",
        SENML,
    )
    .await;
    problem(&a, 403);
    assert!(gw.stored().await.is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn a_known_client_certificate_authenticates_and_an_unknown_one_gets_401() {
    let gw = Gateway::start(Options::default()).await;
    let known = gw.client(Some(&gw.known));
    let a = post(
        &known,
        &gw.url("bed-12"),
        None,
        "application/json",
        r#"{"temp":36.9}"#,
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.json);
    let stored = gw.stored().await;
    assert_eq!(
        stored[0]["source"]["identity"],
        format!("x509-sha256:{}", gw.known.fingerprint())
    );
    let stranger = gw.pki.client("stranger", "bed-99");
    let unknown = gw.client(Some(&stranger));
    let a = post(
        &unknown,
        &gw.url("bed-12"),
        None,
        "application/json",
        r#"{"temp":1}"#,
    )
    .await;
    problem(&a, 401);
    assert_eq!(gw.stored().await.len(), 1);
    gw.stop().await;
}

#[tokio::test]
async fn an_oversized_body_gets_413_and_malformed_senml_400_and_a_wrong_content_type_415() {
    let gw = Gateway::start(Options::default()).await;
    let client = gw.client(None);
    let big = format!(r#"[{{"n":"x","vs":"{}"}}]"#, "a".repeat(70 * 1024));
    let a = post(
        &client,
        &gw.url("bed-12"),
        Some(TOKEN),
        "application/senml+json",
        big,
    )
    .await;
    problem(&a, 413);
    let a = post(
        &client,
        &gw.url("bed-12"),
        Some(TOKEN),
        "application/senml+json",
        r#"[{"n":"spo2","v":"#,
    )
    .await;
    let detail = problem(&a, 400);
    assert!(detail.contains("malformed"), "{detail}");
    let a = post(
        &client,
        &gw.url("bed-12"),
        Some(TOKEN),
        "text/csv",
        "spo2,97",
    )
    .await;
    problem(&a, 415);
    let a = post(
        &client,
        &gw.url("bed%20bad"),
        Some(TOKEN),
        "application/senml+json",
        SENML,
    )
    .await;
    problem(&a, 400);
    assert!(gw.stored().await.is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn a_full_store_answers_503_with_retry_after() {
    let gw = Gateway::start(Options {
        store: |s| s.max_readings = 1,
        ..Options::default()
    })
    .await;
    let client = gw.client(None);
    let url = gw.url("bed-12");
    let a = post(&client, &url, Some(TOKEN), "application/senml+json", SENML).await;
    assert_eq!(a.status, 201, "{}", a.json);
    let a = post(&client, &url, Some(TOKEN), "application/senml+json", SENML).await;
    let detail = problem(&a, 503);
    assert!(detail.contains("full"), "{detail}");
    assert_eq!(a.headers["retry-after"], "5");
    assert_eq!(gw.stored().await.len(), 1);
    gw.stop().await;
}

#[tokio::test]
async fn over_the_per_device_rate_a_device_gets_429_with_retry_after() {
    let gw = Gateway::start(Options {
        ingest: |c| {
            c.per_device_rate = 0.01;
            c.per_device_burst = 1;
        },
        ..Options::default()
    })
    .await;
    let client = gw.client(None);
    let url = gw.url("bed-12");
    let a = post(&client, &url, Some(TOKEN), "application/senml+json", SENML).await;
    assert_eq!(a.status, 201);
    let a = post(&client, &url, Some(TOKEN), "application/senml+json", SENML).await;
    problem(&a, 429);
    assert_eq!(a.headers["retry-after"], "100");
    gw.stop().await;
}

#[tokio::test]
async fn unknown_paths_and_methods_get_problem_json() {
    let gw = Gateway::start(Options::default()).await;
    let client = gw.client(None);
    let r = client
        .get(gw.url("bed-12"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 405);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let url = format!("https://127.0.0.1:{}/v1/other", gw.addr.port());
    let a = post(&client, &url, Some(TOKEN), "application/senml+json", SENML).await;
    problem(&a, 404);
    // The API's description, at its stable path, without a token.
    let url = format!("https://127.0.0.1:{}/v1/openapi.json", gw.addr.port());
    let r = client.get(&url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert!(
        v["paths"]["/v1/devices/{id}/readings"]["post"].is_object(),
        "{v}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn without_a_registry_plain_http_on_loopback_accepts_unauthenticated_senml_cbor() {
    let gw = Gateway::start(Options {
        registry: false,
        tls: false,
        ..Options::default()
    })
    .await;
    // [{"n": "spo2", "v": 97}] in SenML CBOR (labels: n = 0, v = 2).
    let cbor: Vec<u8> = vec![
        0x81, 0xa2, 0x00, 0x64, b's', b'p', b'o', b'2', 0x02, 0x18, 97,
    ];
    let url = format!(
        "http://127.0.0.1:{}/v1/devices/bed-3/readings",
        gw.addr.port()
    );
    let client = gw.client(None);
    let a = post(&client, &url, None, "application/senml+cbor", cbor).await;
    assert_eq!(a.status, 201, "{}", a.json);
    let stored = gw.stored().await;
    assert_eq!(stored[0]["records"][0]["v"], 97.0);
    assert!(stored[0].get("source").is_none(), "nothing was proven");
    gw.stop().await;
}

/// curl's status code and body.
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
    let body = format!("{body}{}", String::from_utf8_lossy(&out.stderr));
    (code.trim().parse().unwrap_or(0), body)
}

#[tokio::test]
async fn curl_posts_over_tls_with_a_token_and_a_chunked_oversized_body_gets_413() {
    let gw = Gateway::start(Options::default()).await;
    let ca = gw.pki.ca.to_str().unwrap().to_owned();
    let auth = format!("Authorization: Bearer {TOKEN}");
    let url = gw.url("bed-12");
    let (code, body) = curl(
        &[
            "--cacert",
            &ca,
            "-H",
            &auth,
            "-H",
            "Content-Type: application/senml+json",
            "--data-binary",
            SENML,
        ],
        &url,
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(gw.stored().await[0]["id"], v["ids"][0]);
    // No Content-Length: the limit is enforced while reading.
    let big = gw.pki.dir().join("big.json");
    std::fs::write(
        &big,
        format!(r#"[{{"n":"x","vs":"{}"}}]"#, "b".repeat(200 * 1024)),
    )
    .unwrap();
    let data = format!("@{}", big.display());
    let (code, body) = curl(
        &[
            "--cacert",
            &ca,
            "-H",
            &auth,
            "-H",
            "Content-Type: application/senml+json",
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            &data,
        ],
        &url,
    )
    .await;
    assert_eq!(code, 413, "{body}");
    assert!(body.contains("urn:wardgate:problem:too-large"), "{body}");
    gw.stop().await;
}

#[tokio::test]
async fn a_peer_the_authorizer_refuses_is_answered_without_its_body_being_read() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gw = Gateway::start(Options {
        tls: false,
        ..Options::default()
    })
    .await;
    // Headers announcing a body that never comes, and no credentials: the answer must not wait
    // for the body (the body timeout would answer 408 after 30 s).
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(
        b"POST /v1/devices/bed-12/readings HTTP/1.1\r\nHost: gw\r\n\
          Content-Type: application/senml+json\r\nContent-Length: 60000\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = vec![0u8; 64];
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), s.read(&mut head))
        .await
        .expect("answered before the body")
        .unwrap();
    let head = String::from_utf8_lossy(&head[..n]).into_owned();
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    assert!(gw.stored().await.is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn a_source_that_keeps_failing_authentication_is_rate_limited() {
    let gw = Gateway::start(Options::default()).await;
    let client = gw.client(None);
    let url = gw.url("bed-12");
    for i in 0..10 {
        let a = post(
            &client,
            &url,
            Some(&format!("guess-{i}")),
            "application/senml+json",
            SENML,
        )
        .await;
        problem(&a, 401);
    }
    // The eleventh attempt from the same address, even with the right token, waits.
    let a = post(&client, &url, Some(TOKEN), "application/senml+json", SENML).await;
    problem(&a, 429);
    assert!(a.headers.contains_key("retry-after"), "{:?}", a.headers);
    assert!(gw.stored().await.is_empty());
    gw.stop().await;
}
