//! `[http]` and `[admin]` sections of `gateway.toml`.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use wardgate_core::validate::Problems;

/// Operator HTTP server settings.
#[derive(Debug, Clone, Deserialize, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Serve `/healthz`, `/readyz` and `/metrics`.
    pub enabled: bool,
    /// Listen address.
    pub listen: SocketAddr,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            enabled: true,
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
        }
    }
}

impl HttpConfig {
    /// Adds every problem in this section to `p`; `at` is the section's path.
    pub fn validate(&self, _at: &str, _p: &mut Problems) {
        // Every value a SocketAddr can hold is usable; binding failures are reported at start-up.
    }
}

/// `[admin]`: the admin API, on its own listener (never `[http] listen`, which stays
/// unauthenticated for probes and scrapes).
#[derive(Debug, Clone, Deserialize, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Serve the admin API.
    pub enabled: bool,
    /// Listen address. Plain HTTP is allowed on a loopback address only; anything else needs
    /// `[admin.tls]`.
    pub listen: SocketAddr,
    /// Bearer tokens (`[[admin.tokens]]`), by SHA-256 only.
    pub tokens: Vec<AdminToken>,
    /// Client certificates that authenticate without a token: hex SHA-256 of the certificate's
    /// DER (`openssl x509 -noout -fingerprint -sha256`, colons allowed). Needs
    /// `tls.client_ca_file` (the chain is verified first).
    pub client_certificates: Vec<String>,
    /// Serve over TLS.
    pub tls: Option<AdminTlsConfig>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            enabled: false,
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            tokens: Vec::new(),
            client_certificates: Vec::new(),
            tls: None,
        }
    }
}

/// One admin bearer token, by its hash.
#[derive(Clone, Deserialize, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminToken {
    /// The token's name: the audit trail names the administrator `admin:<id>`.
    /// `A-Z a-z 0-9 . _ : -`, 1-64 characters, unique.
    pub id: String,
    /// Hex SHA-256 of the token's bytes (`printf %s "$TOKEN" | sha256sum`). Never the token.
    pub sha256: String,
    /// `admin` (default): everything; `viewer`: reads only (`GET`: the live feed of readings
    /// on the status page, device and LwM2M listings), for a nurse-station screen.
    #[serde(default)]
    pub role: TokenRole,
}

/// What a token may do.
#[derive(
    Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum TokenRole {
    /// Read and edit.
    #[default]
    Admin,
    /// Read only.
    Viewer,
}

// A hash of a weak token can be brute-forced: keep it out of logs, like the token itself.
impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminToken")
            .field("id", &self.id)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// `[admin.tls]`: the admin API's server certificate and, optionally, the CA its client
/// certificates must chain to.
#[derive(Debug, Clone, Deserialize, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminTlsConfig {
    /// PEM certificate chain, leaf first (relative to the directory of `gateway.toml`).
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1). Should be mode 0600.
    pub key_file: PathBuf,
    /// PEM CA bundle for client certificates. When set, a client may present a certificate;
    /// a verified one authenticates when its fingerprint is in `client_certificates`.
    /// Clients without a certificate may still use a token.
    pub client_ca_file: Option<PathBuf>,
}

impl AdminConfig {
    /// Adds every problem in this section to `p`; `at` is the section's path.
    pub fn validate(&self, at: &str, p: &mut Problems) {
        let mut ids = std::collections::HashSet::new();
        for (i, t) in self.tokens.iter().enumerate() {
            let ok_id = !t.id.is_empty()
                && t.id.len() <= 64
                && t.id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'));
            if !ok_id {
                p.push(
                    format!("{at}.tokens[{i}].id"),
                    "must be 1-64 characters of A-Z a-z 0-9 . _ : -",
                );
            } else if !ids.insert(t.id.as_str()) {
                p.push(
                    format!("{at}.tokens[{i}].id"),
                    format!("duplicate token id {:?}", t.id),
                );
            }
            if parse_sha256_hex(&t.sha256).is_none() {
                // The value is not echoed: it might be a token pasted by mistake.
                p.push(
                    format!("{at}.tokens[{i}].sha256"),
                    "must be the 64 hex digits of the token's SHA-256 (printf %s \"$TOKEN\" | sha256sum), not the token",
                );
            }
        }
        for (i, c) in self.client_certificates.iter().enumerate() {
            if parse_sha256_hex(c).is_none() {
                p.push(
                    format!("{at}.client_certificates[{i}]"),
                    "must be a SHA-256 fingerprint: 64 hex digits, colons allowed",
                );
            }
        }
        let client_ca = self.tls.as_ref().and_then(|t| t.client_ca_file.as_ref());
        if !self.client_certificates.is_empty() && client_ca.is_none() {
            p.push(
                format!("{at}.client_certificates"),
                "needs tls.client_ca_file: client certificates are verified against it first",
            );
        }
        if !self.enabled {
            return;
        }
        if self.tokens.is_empty() && self.client_certificates.is_empty() {
            p.push(
                format!("{at}.tokens"),
                "the enabled admin API needs at least one token or client certificate",
            );
        }
        if self.tls.is_none() && !self.listen.ip().is_loopback() {
            p.push(
                format!("{at}.listen"),
                "admin API on a non-loopback address must use TLS ([admin.tls])",
            );
        }
    }
}

/// Decodes a hex SHA-256 (either case, colons allowed): `None` unless exactly 32 bytes.
pub fn parse_sha256_hex(text: &str) -> Option<[u8; 32]> {
    let digits: Vec<u8> = text.bytes().filter(|b| *b != b':').collect();
    if digits.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let hi = char::from(pair[0]).to_digit(16)?;
        let lo = char::from(pair[1]).to_digit(16)?;
        *o = u8::try_from(hi * 16 + lo).ok()?;
    }
    Some(out)
}
