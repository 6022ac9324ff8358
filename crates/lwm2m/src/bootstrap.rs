//! The bootstrap server (TS Core §6.1, TS Transport §6.1): a factory-fresh client sends
//! `POST /bs?ep={name}[&pct={format}]`; the server answers 2.04 and provisions it from the first
//! `[[lwm2m.bootstrap]]` configuration whose endpoint pattern matches:
//!
//! 1. Bootstrap-Discover of `/0` (`GET /0`, Accept 40): the instance without `ssid` is the
//!    client's bootstrap account, and the Security instance is written elsewhere if the
//!    configured id is that one (a client that does not answer is written as configured);
//! 2. Bootstrap-Delete of `/0` and `/1` (when `delete_first`, the default): the client keeps
//!    only its bootstrap-server account;
//! 3. Bootstrap-Write of a Security (0) instance: the LwM2M server URI, the security mode and,
//!    for PSK, the identity and key — the key taken from the device registry, never from
//!    `gateway.toml`;
//! 4. Bootstrap-Write of a Server (1) instance: short server id, lifetime, binding;
//! 5. Bootstrap-Finish (`POST /bs`).
//!
//! Decisions:
//! - Writes use the client's preferred format (`pct`, 1.1+) when it is one that carries
//!   instances, else TLV, which every client since 1.0 reads.
//! - Keys never travel in clear: a configuration that writes a PSK is refused (4.03) for a
//!   Bootstrap-Request that did not come over DTLS, and the key is looked up per request in the
//!   credential store (a revoked device gets nothing: 4.03).
//! - An endpoint no configuration matches gets 4.00 (TS Transport §6.1.1 "Unknown Endpoint
//!   Client Name"). Each outcome is counted (`interface="bootstrap"`) and logged without keys.

use std::net::SocketAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use wardgate_coap::{ClientRequest, Code, Reply, Request, Resource, Response};
use wardgate_core::{CredentialStore, PeerContext, TransportKind};

use crate::format::{self, Format};
use crate::node::{Entry, Path, Value};
use crate::server::{OpError, Server};

/// How the provisioned client secures its connection to the LwM2M server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SecurityMode {
    /// Pre-shared key (security mode 0).
    Psk,
    /// No security (mode 3): plain CoAP. For lab use.
    Nosec,
}

impl SecurityMode {
    fn value(self) -> i64 {
        match self {
            SecurityMode::Psk => 0,
            SecurityMode::Nosec => 3,
        }
    }
}

/// `[[lwm2m.bootstrap]]`: what a matching client is provisioned with.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BootstrapConfig {
    /// Endpoint names it applies to (`*` wildcards).
    pub endpoint: String,
    /// The LwM2M server URI written to the client (`coaps://10.1.0.5:5684`).
    pub server_uri: String,
    /// Security mode.
    pub security_mode: SecurityMode,
    /// PSK identity for `psk` (`{endpoint}` is replaced by the endpoint name); the key is the
    /// device registry's for that identity.
    #[serde(default)]
    pub psk_identity: Option<String>,
    /// Short server id.
    #[serde(default = "one")]
    pub short_server_id: u16,
    /// Registration lifetime written to the Server object, seconds.
    #[serde(default = "lifetime")]
    pub lifetime: u32,
    /// Binding written to the Server object.
    #[serde(default = "binding")]
    pub binding: String,
    /// Instance id of the Security instance written (the bootstrap account is usually 0).
    #[serde(default = "one")]
    pub security_instance: u16,
    /// Instance id of the Server instance written.
    #[serde(default)]
    pub server_instance: u16,
    /// Delete `/0` and `/1` first.
    #[serde(default = "yes")]
    pub delete_first: bool,
}

fn one() -> u16 {
    1
}
fn lifetime() -> u32 {
    300
}
fn binding() -> String {
    "U".into()
}
fn yes() -> bool {
    true
}

impl BootstrapConfig {
    /// Problems with this configuration (for `gateway.toml` validation and the admin API).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut p = Vec::new();
        if self.endpoint.is_empty() {
            p.push((
                "endpoint",
                "must not be empty (use \"*\" for every client)".into(),
            ));
        }
        if !(self.server_uri.starts_with("coap://") || self.server_uri.starts_with("coaps://")) {
            p.push(("server_uri", "must be a coap:// or coaps:// URI".into()));
        }
        match self.security_mode {
            SecurityMode::Psk if self.psk_identity.as_deref().is_none_or(str::is_empty) => {
                p.push((
                    "psk_identity",
                    "is required for security_mode = \"psk\"".into(),
                ));
            }
            SecurityMode::Psk if !self.server_uri.starts_with("coaps://") => {
                p.push((
                    "server_uri",
                    "must be coaps:// for security_mode = \"psk\"".into(),
                ));
            }
            _ => {}
        }
        if self.lifetime == 0 {
            p.push(("lifetime", "must be at least 1 second".into()));
        }
        if self.binding.is_empty() || !self.binding.bytes().all(|b| b"USTNQ".contains(&b)) {
            p.push(("binding", "must be letters from U, S, T, N, Q".into()));
        }
        if self.short_server_id == 0 || self.short_server_id == u16::MAX {
            p.push(("short_server_id", "must be 1..=65534".into()));
        }
        p
    }

    fn matches(&self, endpoint: &str) -> bool {
        crate::observe::glob(self.endpoint.as_bytes(), endpoint.as_bytes())
    }

    /// The Security and Server instances to write, with the PSK key from `credentials`.
    fn instances(
        &self,
        endpoint: &str,
        credentials: &dyn CredentialStore,
    ) -> Result<(Vec<Entry>, Vec<Entry>), &'static str> {
        let s = self.security_instance;
        let e = |rid: u16, value: Value| Entry {
            path: Path::resource(0, s, rid),
            value,
            time: None,
        };
        let mut security = vec![
            e(0, Value::String(self.server_uri.clone())),
            e(1, Value::Boolean(false)),
            e(2, Value::Integer(self.security_mode.value())),
        ];
        if self.security_mode == SecurityMode::Psk {
            let identity = self
                .psk_identity
                .as_deref()
                .unwrap_or_default()
                .replace("{endpoint}", endpoint);
            let key = credentials.psk(&identity).ok_or("no_credentials")?;
            security.push(e(3, Value::Opaque(identity.into_bytes())));
            security.push(e(5, Value::Opaque(key.expose().to_vec())));
        } else {
            security.push(e(3, Value::Opaque(Vec::new())));
            security.push(e(5, Value::Opaque(Vec::new())));
        }
        security.push(e(10, Value::Integer(i64::from(self.short_server_id))));
        let i = self.server_instance;
        let r = |rid: u16, value: Value| Entry {
            path: Path::resource(1, i, rid),
            value,
            time: None,
        };
        let server = vec![
            r(0, Value::Integer(i64::from(self.short_server_id))),
            r(1, Value::Integer(i64::from(self.lifetime))),
            r(6, Value::Boolean(false)),
            r(7, Value::String(self.binding.clone())),
        ];
        Ok((security, server))
    }
}

/// `/bs`: Bootstrap-Request.
#[derive(Debug)]
pub(crate) struct BootstrapResource {
    pub(crate) server: Server,
}

fn answer(server: &Server, code: Code, label: &'static str, text: &'static str) -> Reply {
    server.metrics().client_request("bootstrap", label);
    Reply::Now(Response::diagnostic(code, text))
}

impl Resource for BootstrapResource {
    fn handle(&mut self, req: &Request<'_, '_>) -> Reply {
        let s = &self.server;
        let mut endpoint = None;
        let mut pct = None;
        for q in req.msg.values(wardgate_coap::codec::opt::URI_QUERY) {
            let Ok(q) = std::str::from_utf8(q) else {
                return answer(s, Code::BAD_REQUEST, "bad_parameters", "query is not UTF-8");
            };
            match q.split_once('=') {
                Some(("ep", v)) => endpoint = Some(v.to_owned()),
                Some(("pct", v)) => pct = v.parse::<u16>().ok().and_then(Format::from_coap),
                _ => {}
            }
        }
        let Some(endpoint) =
            endpoint.filter(|e| wardgate_core::reading::valid_device_id(e.as_bytes()))
        else {
            return answer(
                s,
                Code::BAD_REQUEST,
                "bad_parameters",
                "Bootstrap-Request needs ep=<endpoint name>",
            );
        };
        if s.pipeline_authorizer()
            .authorize(&wardgate_core::AuthRequest {
                peer: req.peer,
                protocol: wardgate_core::Protocol::Lwm2m,
                claimed_device: &endpoint,
                class: wardgate_core::MessageClass::Telemetry,
                resource: "/bs",
                action: wardgate_core::Action::Register,
            })
            .is_err()
        {
            return answer(
                s,
                Code::FORBIDDEN,
                "forbidden",
                "not allowed to bootstrap as this endpoint",
            );
        }
        let Some(cfg) = s.bootstrap_config(&endpoint) else {
            return answer(
                s,
                Code::BAD_REQUEST,
                "unknown_endpoint",
                "no bootstrap configuration for this endpoint",
            );
        };
        if cfg.security_mode == SecurityMode::Psk && !req.peer.transport.is_secure() {
            tracing::warn!(endpoint, addr = %req.peer.addr, "refused to bootstrap PSK credentials over plain CoAP; the Bootstrap-Request must come over DTLS");
            return answer(
                s,
                Code::FORBIDDEN,
                "insecure_transport",
                "credentials are only provisioned over DTLS",
            );
        }
        let instances = match cfg.instances(&endpoint, s.credentials().as_ref()) {
            Ok(i) => i,
            Err(label) => {
                tracing::warn!(
                    endpoint,
                    "no PSK for the bootstrap configuration's identity (unknown or revoked device)"
                );
                return answer(s, Code::FORBIDDEN, label, "no credentials to provision");
            }
        };
        let server = s.clone();
        let peer = req.peer.clone();
        Reply::Later(Box::pin(async move {
            // Runs as the 2.04 is sent: the sequence follows it.
            tokio::spawn(async move {
                let outcome = provision(&server, &peer, &endpoint, &cfg, pct, instances).await;
                match outcome {
                    Ok(()) => {
                        server.metrics().client_request("bootstrap", "ok");
                        tracing::info!(endpoint, server_uri = %cfg.server_uri, "LwM2M client bootstrapped");
                    }
                    Err(e) => {
                        server.metrics().client_request("bootstrap", "failed");
                        tracing::warn!(endpoint, error = %e, "LwM2M bootstrap sequence failed");
                    }
                }
            });
            Response::new(Code::CHANGED)
        }))
    }
}

async fn provision(
    server: &Server,
    peer: &PeerContext,
    endpoint: &str,
    cfg: &BootstrapConfig,
    pct: Option<Format>,
    (security, srv): (Vec<Entry>, Vec<Entry>),
) -> Result<(), OpError> {
    let (kind, addr) = (peer.transport, peer.addr);
    let format = match pct {
        Some(f @ (Format::Tlv | Format::SenmlCbor | Format::SenmlJson | Format::Lwm2mCbor)) => f,
        _ => Format::Tlv,
    };
    let send = |req: ClientRequest| send_to(server, kind, addr, req);
    // Bootstrap-Discover of the Security object: which instance is the client's bootstrap
    // account (the one without `ssid`), so the write does not land on it.
    let mut security_instance = cfg.security_instance;
    match send(ClientRequest::get("0").accept(40)).await {
        Ok(r) if r.code() == Code::CONTENT => {
            let text = String::from_utf8_lossy(r.payload()).into_owned();
            let (used, bootstrap) = security_instances(&text);
            tracing::debug!(endpoint, discovered = %text, "Bootstrap-Discover of /0");
            if bootstrap.contains(&security_instance)
                || (!cfg.delete_first && used.contains(&security_instance))
            {
                let taken: Vec<u16> = if cfg.delete_first { bootstrap } else { used };
                security_instance = (0..u16::MAX)
                    .find(|i| !taken.contains(i))
                    .unwrap_or(security_instance);
                tracing::info!(
                    endpoint,
                    instance = security_instance,
                    "the configured Security instance is taken on the client (its bootstrap account); writing another"
                );
            }
        }
        // 1.0 clients and simple ones may not answer Bootstrap-Discover: the configuration decides.
        Ok(r) => {
            tracing::debug!(endpoint, code = %r.code(), "Bootstrap-Discover not answered; writing the configured instances")
        }
        Err(e) => return Err(e),
    }
    let security: Vec<Entry> = security
        .into_iter()
        .map(|mut e| {
            if let Some(rid) = e.path.resource_id() {
                e.path = Path::resource(0, security_instance, rid);
            }
            e
        })
        .collect();
    if cfg.delete_first {
        for obj in ["0", "1"] {
            let r = send(ClientRequest::new(Code::DELETE, obj)).await?;
            // A client with nothing to delete may say so; the writes decide.
            if !(r.is_success() || r.code() == Code::NOT_FOUND) {
                return Err(refused(&r));
            }
        }
    }
    for (entries, base) in [
        (&security, Path::instance(0, security_instance)),
        (&srv, Path::instance(1, cfg.server_instance)),
    ] {
        let body = format::encode(format, &base, entries, server.model())?;
        let r = send(
            ClientRequest::put(base.to_string())
                .content_format(format.coap_number())
                .payload(body),
        )
        .await?;
        if r.code() != Code::CHANGED {
            return Err(refused(&r));
        }
    }
    let r = send(ClientRequest::post("bs")).await?;
    if r.code() != Code::CHANGED {
        return Err(refused(&r));
    }
    tracing::debug!(endpoint, "Bootstrap-Finish accepted");
    Ok(())
}

/// The Security instances a Bootstrap-Discover answer lists (`lwm2m="1.1",</0/0>;uri="..",
/// </0/1>;ssid=101;uri=".."`), and those without `ssid`: the bootstrap account.
fn security_instances(text: &str) -> (Vec<u16>, Vec<u16>) {
    // 1.1 prefixes the links with `lwm2m="1.1"`, which is not a link.
    let links = text.find('<').map_or("", |i| &text[i..]);
    let Ok(links) = crate::link::parse_discover(links) else {
        return (Vec::new(), Vec::new());
    };
    let mut used = Vec::new();
    let mut bootstrap = Vec::new();
    for l in links {
        if l.path.object_id() == Some(0) && l.path.len() == 2 {
            if let Some(i) = l.path.instance_id() {
                used.push(i);
                if !l.attrs.iter().any(|a| a.name == "ssid") {
                    bootstrap.push(i);
                }
            }
        }
    }
    (used, bootstrap)
}

fn refused(r: &wardgate_coap::ClientResponse) -> OpError {
    OpError::Client {
        code: r.code().to_string(),
        diagnostic: None,
    }
}

async fn send_to(
    server: &Server,
    kind: TransportKind,
    addr: SocketAddr,
    req: ClientRequest,
) -> Result<wardgate_coap::ClientResponse, OpError> {
    server.send_direct(kind, addr, req).await
}

impl Server {
    /// The first bootstrap configuration matching `endpoint`.
    pub(crate) fn bootstrap_config(&self, endpoint: &str) -> Option<BootstrapConfig> {
        self.bootstrap_configs()
            .into_iter()
            .find(|c| c.matches(endpoint))
    }

    /// Sets the credential store PSKs for bootstrap come from.
    pub fn set_credentials(&self, credentials: Arc<dyn CredentialStore>) {
        self.replace_credentials(credentials);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> BootstrapConfig {
        toml_like(
            r#"{"endpoint":"bed-*","server_uri":"coaps://10.0.0.1:5684","security_mode":"psk","psk_identity":"{endpoint}"}"#,
        )
    }

    fn toml_like(s: &str) -> BootstrapConfig {
        serde_json::from_str(s).unwrap()
    }

    #[derive(Debug)]
    struct OneKey;
    impl CredentialStore for OneKey {
        fn psk(&self, identity: &str) -> Option<wardgate_core::Secret> {
            (identity == "bed-1").then(|| wardgate_core::Secret::new(vec![1, 2, 3]))
        }
        fn knows_certificate(&self, _: &str) -> bool {
            false
        }
        fn generation(&self) -> u64 {
            0
        }
    }

    #[test]
    fn a_psk_configuration_writes_the_registry_key_of_the_endpoint_identity() {
        let c = cfg();
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        let (sec, srv) = c.instances("bed-1", &OneKey).unwrap();
        let v = |es: &[Entry], p: &str| {
            es.iter()
                .find(|e| e.path.to_string() == p)
                .unwrap()
                .value
                .clone()
        };
        assert_eq!(
            v(&sec, "/0/1/0"),
            Value::String("coaps://10.0.0.1:5684".into())
        );
        assert_eq!(v(&sec, "/0/1/2"), Value::Integer(0));
        assert_eq!(v(&sec, "/0/1/3"), Value::Opaque(b"bed-1".to_vec()));
        assert_eq!(v(&sec, "/0/1/5"), Value::Opaque(vec![1, 2, 3]));
        assert_eq!(v(&srv, "/1/0/1"), Value::Integer(300));
        assert_eq!(c.instances("bed-2", &OneKey).unwrap_err(), "no_credentials");
    }

    #[test]
    fn bootstrap_discover_answers_tell_the_bootstrap_account_apart() {
        let (used, bs) = security_instances(
            r#"lwm2m="1.1",</0/0>;uri="coap://bs.example:5683",</0/1>;ssid=101;uri="coaps://x",</1/0>;ssid=101"#,
        );
        assert_eq!((used, bs), (vec![0, 1], vec![0]));
        assert_eq!(security_instances("garbage"), (vec![], vec![]));
        assert_eq!(security_instances(""), (vec![], vec![]));
    }

    #[test]
    fn configurations_that_cannot_work_are_refused() {
        let mut c = cfg();
        c.server_uri = "coap://x".into();
        assert_eq!(c.problems()[0].0, "server_uri");
        let mut c = cfg();
        c.psk_identity = None;
        assert_eq!(c.problems()[0].0, "psk_identity");
        let mut c = cfg();
        c.binding = "X".into();
        c.short_server_id = 0;
        assert_eq!(c.problems().len(), 2);
    }
}
