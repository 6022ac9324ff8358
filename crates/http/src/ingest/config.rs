//! `[ingest.http]`: the HTTP(S) device ingest listener.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wardgate_core::MessageClass;
use wardgate_core::validate::Problems;

/// Largest `max_body_bytes` accepted (the body is held in memory while it is decoded).
const MAX_BODY_LIMIT: usize = 16 * 1024 * 1024;

/// The device ingest listener: `POST /v1/devices/{id}/readings`.
#[derive(Debug, Clone, Deserialize, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct IngestHttpConfig {
    /// Serve device ingest over HTTP(S).
    pub enabled: bool,
    /// Listen address. Plain HTTP (no `tls`) is accepted on a loopback address, or anywhere
    /// with `allow_plain` (lab only).
    pub listen: SocketAddr,
    /// Serve over TLS (strongly recommended: tokens and readings travel in clear otherwise).
    pub tls: Option<IngestTlsConfig>,
    /// LAB ONLY: allow plain HTTP on a non-loopback address. Tokens and readings travel
    /// unencrypted; logged at WARN at start.
    pub allow_plain: bool,
    /// Largest request body, in bytes; larger ones get 413 (checked while reading: a body is
    /// never buffered past this).
    pub max_body_bytes: usize,
    /// Connections (handshaking or serving) at once; past it new connections wait in the
    /// kernel's backlog.
    pub max_connections: usize,
    /// Longest a TLS handshake may take.
    #[schemars(with = "wardgate_core::config_doc::Duration")]
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// Longest a client may take to send a request's headers (slow-header clients are cut off).
    #[schemars(with = "wardgate_core::config_doc::Duration")]
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// Longest a client may take to send a request's body; past it the answer is 408.
    #[schemars(with = "wardgate_core::config_doc::Duration")]
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// A connection that sends nothing for this long is closed.
    #[schemars(with = "wardgate_core::config_doc::Duration")]
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Class of readings whose request has no `?class=`.
    pub default_class: MessageClass,
    /// `Retry-After` of 503 answers (store full, busy, shutting down), in seconds.
    pub busy_retry_after_secs: u32,
    /// Requests a second per claimed device id (token bucket); 0 = unlimited. Over it: 429
    /// with `Retry-After`.
    pub per_device_rate: f64,
    /// Burst of the per-device bucket.
    pub per_device_burst: u32,
}

impl Default for IngestHttpConfig {
    fn default() -> Self {
        IngestHttpConfig {
            enabled: false,
            listen: SocketAddr::from(([0, 0, 0, 0], 8443)),
            tls: None,
            allow_plain: false,
            max_body_bytes: 64 * 1024,
            max_connections: 1024,
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            default_class: MessageClass::default(),
            busy_retry_after_secs: 5,
            per_device_rate: 0.0,
            per_device_burst: 10,
        }
    }
}

/// `[ingest.http.tls]`: the server certificate and, optionally, the CA device certificates
/// must chain to.
#[derive(Debug, Clone, Deserialize, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IngestTlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1). Should be mode 0600.
    pub key_file: PathBuf,
    /// PEM CA bundle for device certificates. When set, a device may present a certificate
    /// (one that is presented must chain to it); a verified one proves the identity
    /// `x509-sha256:<hex SHA-256 of its DER>`, which the device registry maps to a device.
    /// Devices without one may still use a bearer token.
    pub client_ca_file: Option<PathBuf>,
}

impl IngestHttpConfig {
    /// Adds every problem in this section to `p`; `at` is the section's path.
    pub fn validate(&self, at: &str, p: &mut Problems) {
        if self.max_body_bytes == 0 || self.max_body_bytes > MAX_BODY_LIMIT {
            p.push(
                format!("{at}.max_body_bytes"),
                format!("must be between 1 and {MAX_BODY_LIMIT}"),
            );
        }
        if self.max_connections == 0 {
            p.push(format!("{at}.max_connections"), "must be at least 1");
        }
        for (field, d) in [
            ("handshake_timeout", self.handshake_timeout),
            ("header_timeout", self.header_timeout),
            ("body_timeout", self.body_timeout),
            ("idle_timeout", self.idle_timeout),
        ] {
            if d.is_zero() {
                p.push(format!("{at}.{field}"), "must be more than 0s");
            }
        }
        if !self.per_device_rate.is_finite() || self.per_device_rate < 0.0 {
            p.push(
                format!("{at}.per_device_rate"),
                "must be a number of requests a second, 0 for unlimited",
            );
        }
        if self.per_device_rate > 0.0 && self.per_device_burst == 0 {
            p.push(format!("{at}.per_device_burst"), "must be at least 1");
        }
        if let Some(tls) = &self.tls {
            for (field, file) in [
                ("cert_file", Some(&tls.cert_file)),
                ("key_file", Some(&tls.key_file)),
                ("client_ca_file", tls.client_ca_file.as_ref()),
            ] {
                if let Some(f) = file
                    && !f.is_file()
                {
                    p.push(
                        format!("{at}.tls.{field}"),
                        format!("{} is not a readable file", f.display()),
                    );
                }
            }
            if self.allow_plain {
                p.push(
                    format!("{at}.allow_plain"),
                    "has no meaning with tls: the listener speaks TLS only",
                );
            }
        } else if self.enabled && !self.allow_plain && !self.listen.ip().is_loopback() {
            p.push(
                format!("{at}.listen"),
                "plain HTTP ingest on a non-loopback address: configure tls, or set allow_plain = true (lab only)",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(cfg: &IngestHttpConfig) -> Vec<String> {
        let mut p = Problems::new();
        cfg.validate("ingest.http", &mut p);
        p.into_vec().into_iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn defaults_are_documented_values_and_plain_http_needs_loopback_or_allow_plain() {
        let cfg: IngestHttpConfig = serde_json::from_value(serde_json::json!({})).unwrap();
        assert_eq!(cfg.max_body_bytes, 64 * 1024);
        assert_eq!(cfg.max_connections, 1024);
        assert_eq!(cfg.header_timeout, Duration::from_secs(10));
        assert_eq!(cfg.default_class, MessageClass::default());
        assert!(problems(&cfg).is_empty(), "disabled: {:?}", problems(&cfg));
        let on = IngestHttpConfig {
            enabled: true,
            ..cfg.clone()
        };
        assert!(
            problems(&on)
                .iter()
                .any(|p| p.starts_with("ingest.http.listen:")),
            "{:?}",
            problems(&on)
        );
        let lab = IngestHttpConfig {
            allow_plain: true,
            ..on.clone()
        };
        assert!(problems(&lab).is_empty());
        let local = IngestHttpConfig {
            listen: "127.0.0.1:8080".parse().unwrap(),
            ..on
        };
        assert!(problems(&local).is_empty());
    }

    #[test]
    fn every_problem_is_reported_at_once_and_unknown_fields_are_refused() {
        let cfg: IngestHttpConfig = serde_json::from_value(serde_json::json!({
            "enabled": true, "allow_plain": true, "max_body_bytes": 0, "max_connections": 0,
            "header_timeout": "0s", "per_device_rate": -1.0,
            "tls": { "cert_file": "/nonexistent/c.pem", "key_file": "/nonexistent/k.pem" },
        }))
        .unwrap();
        let found = problems(&cfg);
        for path in [
            "ingest.http.max_body_bytes:",
            "ingest.http.max_connections:",
            "ingest.http.header_timeout:",
            "ingest.http.per_device_rate:",
            "ingest.http.tls.cert_file:",
            "ingest.http.tls.key_file:",
            "ingest.http.allow_plain:",
        ] {
            assert!(
                found.iter().any(|p| p.starts_with(path)),
                "{path} in {found:?}"
            );
        }
        let r: Result<IngestHttpConfig, _> =
            serde_json::from_value(serde_json::json!({ "listen_port": 1 }));
        assert!(r.is_err());
    }
}
