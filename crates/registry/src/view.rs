//! What the admin API shows of a device: its effective ACL and which identities it has, never a
//! key, a token or a token hash.

use std::path::PathBuf;

use serde::Serialize;

use crate::table::{Device, KeyOrigin, to_hex};

/// A device without its secrets. Lists are the effective ones (defaults applied).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceView {
    /// Device id.
    pub id: String,
    /// Protocols it may use (`coaps`, `https`, …).
    pub protocols: Vec<&'static str>,
    /// Message classes it may write.
    pub classes: Vec<&'static str>,
    /// Resource patterns it may write to.
    pub resources: Vec<String>,
    /// Device-id patterns it may submit as.
    pub speaks_for: Vec<String>,
    /// Whether it is revoked.
    pub revoked: bool,
    /// Its PSK identity and where the key comes from; not the key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub psk: Option<PskView>,
    /// Its bearer tokens, by id.
    pub tokens: Vec<String>,
    /// Its certificate fingerprints (lower-case hex SHA-256).
    pub certificates: Vec<String>,
}

/// A PSK without the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PskView {
    /// The PSK identity.
    pub identity: String,
    /// `inline`, `env` or `file`.
    pub key_source: &'static str,
    /// The key file, when `key_source` is `file` (as written, relative to `devices.toml`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// The environment variable, when `key_source` is `env`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_env: Option<String>,
    /// Key length in bytes.
    pub key_bytes: usize,
}

impl From<&Device> for DeviceView {
    fn from(d: &Device) -> Self {
        DeviceView {
            id: d.id.to_string(),
            protocols: d.protocol_names(),
            classes: d.class_names(),
            resources: d.resources.iter().map(|p| p.text()).collect(),
            speaks_for: d.speaks_for.iter().map(|p| p.text()).collect(),
            revoked: d.revoked,
            psk: d.psk.as_ref().map(|p| {
                let (key_source, key_file, key_env) = match &p.origin {
                    KeyOrigin::Inline => ("inline", None, None),
                    KeyOrigin::Env(v) => ("env", None, Some(v.clone())),
                    KeyOrigin::File(f) => ("file", Some(f.clone()), None),
                };
                PskView {
                    identity: p.identity.to_string(),
                    key_source,
                    key_file,
                    key_env,
                    key_bytes: p.key.len(),
                }
            }),
            tokens: d.token_ids.iter().map(|t| t.to_string()).collect(),
            certificates: d.certificates.iter().map(|c| to_hex(c)).collect(),
        }
    }
}
