//! Shared fixtures: a registry in a temporary directory, peers, requests, captured logs.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use prometheus_client::registry::Registry as Prom;
use wardgate_core::{
    Action, AuthRequest, Clock, Identity, IdentityKind, MemoryAudit, MessageClass, PeerContext,
    Protocol, TransportKind,
};
use wardgate_registry::{LoadOptions, Registry, RegistryError, RegistryMetrics};

/// The test keys and tokens: every test that looks for leaks searches for these.
pub const KEY_HEX: &str = "5ec7e75ec7e75ec7e75ec7e75ec7e7aa";
pub const KEY2_HEX: &str = "c0dec0dec0dec0dec0dec0dec0dec0de0ddba11c0dec0dec0dec0dec0dec0de0";
pub const ENV_KEY_HEX: &str = "e7e7e7e7c0ffeec0ffeec0ffeec0ffee";
pub const FILE_KEY_HEX: &str = "f11ef11ef11ef11ef11ef11ef11ef11e";
pub const TOKEN: &str = "tok-0f-bed-12-never-logged";
pub const CERT_FP: &str = "7cc397039af6c66d9148420b9a2435073d84482c44f7ce12f00245be30b117b6";

/// Every secret a test uses, for leak searches.
pub fn secrets() -> Vec<String> {
    vec![
        KEY_HEX.into(),
        KEY2_HEX.into(),
        ENV_KEY_HEX.into(),
        FILE_KEY_HEX.into(),
        TOKEN.into(),
        token_hash(TOKEN),
    ]
}

pub fn token_hash(token: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A registry with three devices: `bed-12` (PSK, token; speaks for its sensors),
/// `room-21` (certificate, MQTT telemetry only), `old-7` (revoked PSK).
pub fn standard_toml(unknown: &str) -> String {
    format!(
        r#"
unknown = "{unknown}"

[[device]]
id = "bed-12"
protocols = ["coaps", "lwm2ms", "https", "mqtts"]
classes = ["vital", "alarm"]
speaks_for = ["bed-12", "bed-12-*"]
[device.psk]
identity = "psk-bed-12"
key = "hex:{KEY_HEX}"
[[device.token]]
id = "t1"
sha256 = "{hash}"

[[device]]
id = "room-21"
protocols = ["mqtts", "mqtt"]
classes = ["telemetry"]
resources = ["wards/+/room-21/*"]
[[device.certificate]]
sha256 = "{CERT_FP}"

[[device]]
id = "old-7"
revoked = true
[device.psk]
identity = "psk-old-7"
key = "hex:{KEY2_HEX}"
"#,
        hash = token_hash(TOKEN)
    )
}

/// A clock the test moves by hand.
#[derive(Debug)]
pub struct ManualClock(Mutex<SystemTime>);

impl ManualClock {
    pub fn new() -> Arc<Self> {
        Arc::new(ManualClock(Mutex::new(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        )))
    }
    pub fn advance(&self, d: Duration) {
        *self.0.lock().unwrap() += d;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.0.lock().unwrap()
    }
}

/// A registry loaded from a file in its own temporary directory.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
    pub audit: Arc<MemoryAudit>,
    pub prom: Prom,
    pub clock: Arc<ManualClock>,
    pub reg: Arc<Registry>,
}

impl Fixture {
    pub fn new(text: &str) -> Fixture {
        Fixture::try_new(text).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn try_new(text: &str) -> Result<Fixture, RegistryError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("devices.toml");
        write_private(&path, text);
        let audit = Arc::new(MemoryAudit::default());
        let mut prom = Prom::default();
        let metrics = RegistryMetrics::register(&mut prom);
        let clock = ManualClock::new();
        let reg = Registry::load_with(&path, audit.clone(), metrics, opts(&clock))?;
        Ok(Fixture {
            dir,
            path,
            audit,
            prom,
            clock,
            reg: Arc::new(reg),
        })
    }

    pub fn metrics_text(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.prom).unwrap();
        out
    }

    /// The value of `wardgate_registry_denials_total{reason="…"}`.
    pub fn denials(&self, reason: &str) -> u64 {
        let needle = format!("wardgate_registry_denials_total{{reason=\"{reason}\"}} ");
        self.metrics_text()
            .lines()
            .find_map(|l| l.strip_prefix(&needle).map(|v| v.trim().parse().unwrap()))
            .unwrap_or(0)
    }
}

pub fn opts(clock: &Arc<ManualClock>) -> LoadOptions {
    LoadOptions {
        clock: clock.clone(),
        env: Arc::new(|name| (name == "BED_12_PSK").then(|| format!("hex:{ENV_KEY_HEX}"))),
        // Small, so the tests reach them.
        quarantine: wardgate_registry::QuarantineLimits {
            max_readings: 5,
            max_per_identity: 3,
        },
    }
}

/// Loads `path` with the test environment and no audit.
pub fn load_at(path: &Path) -> Result<Registry, RegistryError> {
    let clock = ManualClock::new();
    Registry::load_with(
        path,
        Arc::new(wardgate_core::NoAudit),
        RegistryMetrics::default(),
        opts(&clock),
    )
}

pub fn write_private(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    set_mode(path, 0o600);
}

pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

pub fn addr() -> std::net::SocketAddr {
    "10.0.0.7:49152".parse().unwrap()
}

pub fn psk_peer(identity: &str) -> PeerContext {
    PeerContext::new(addr(), TransportKind::Dtls)
        .with_identity(Identity::new(IdentityKind::PskIdentity, identity))
}

pub fn cert_peer(fp: &str, transport: TransportKind) -> PeerContext {
    PeerContext::new(addr(), transport)
        .with_identity(Identity::new(IdentityKind::CertificateSha256, fp))
}

/// A write over CoAP to the readings resource, as the CoAP adapter asks.
pub fn write<'a>(peer: &'a PeerContext, device: &'a str, class: MessageClass) -> AuthRequest<'a> {
    AuthRequest {
        peer,
        protocol: Protocol::Coap,
        claimed_device: device,
        class,
        resource: "/v1/readings",
        action: Action::Write,
    }
}

/// Panics if any test secret occurs in `text` (case-insensitively, for hex).
pub fn assert_no_secret(what: &str, text: &str) {
    let lower = text.to_ascii_lowercase();
    for s in secrets() {
        assert!(
            !lower.contains(&s.to_ascii_lowercase()),
            "{what} contains a secret ({}…):\n{text}",
            &s[..4]
        );
    }
}
