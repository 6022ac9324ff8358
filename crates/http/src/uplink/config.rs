//! `type = "https"` uplink settings (one `[[uplinks]]` entry).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wardgate_core::validate::Problems;

/// Headers the uplink sets itself; `headers` may not override them.
pub(crate) const RESERVED_HEADERS: [&str; 10] = [
    "authorization",
    "content-type",
    "content-encoding",
    "content-length",
    "transfer-encoding",
    "host",
    "connection",
    "idempotency-key",
    "x-wardgate-gateway",
    "te",
];

/// An HTTPS uplink: POSTs batches of readings (a JSON array of `wardgate.reading/1` objects) to
/// one endpoint. `Debug` redacts the token and the values of `headers`.
#[derive(Clone, Deserialize, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpsUplinkConfig {
    /// Unique uplink name (metrics label, admin API, store cursor key).
    pub name: String,
    /// The endpoint every batch is POSTed to: `https://host[:port]/path`. `http://` only with
    /// `allow_plain_http`.
    #[serde(serialize_with = "wardgate_core::config_doc::redact_url")]
    pub url: String,
    /// Bearer token sent as `Authorization: Bearer <token>`. Use `${VAR}` interpolation, never a
    /// literal secret in the file.
    #[serde(default, serialize_with = "wardgate_core::config_doc::redact")]
    pub token: Option<String>,
    /// PEM bundle of CAs to trust instead of the operating system's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain for mutual TLS (with `client_key`).
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `client_cert`.
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// LAB ONLY: accept any server certificate (no chain, name or date check). Every batch can
    /// then be read and changed by whoever sits on the path. Logged at ERROR at start and every
    /// hour while it is on.
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// Allow an `http://` URL (no TLS at all): for a lab or a loopback sidecar only.
    #[serde(default)]
    pub allow_plain_http: bool,
    /// Most readings in one batch (one POST).
    #[serde(default = "default_batch_max_readings")]
    pub batch_max_readings: usize,
    /// Most bytes of reading JSON in one batch (before gzip). A single reading larger than this
    /// is sent alone.
    #[serde(default = "default_batch_max_bytes")]
    pub batch_max_bytes: usize,
    /// How long to wait for more readings to fill a batch once the first one is there.
    #[schemars(with = "wardgate_core::config_doc::Duration")]
    #[serde(default = "default_linger", with = "humantime_serde")]
    pub linger: Duration,
    /// Compress each body with gzip (`Content-Encoding: gzip`).
    #[serde(default)]
    pub gzip: bool,
    /// Deadline of one request, from connecting to the end of the answer.
    #[schemars(with = "wardgate_core::config_doc::Duration")]
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// First retry delay after a failed batch; doubles per failure up to `retry_max`, with full
    /// jitter.
    #[schemars(with = "wardgate_core::config_doc::Duration")]
    #[serde(default = "default_retry_min", with = "humantime_serde")]
    pub retry_min: Duration,
    /// Longest retry delay; also the delay after an answer that retrying soon cannot change
    /// (4xx other than 408/429), and the cap on a server's `Retry-After`.
    #[schemars(with = "wardgate_core::config_doc::Duration")]
    #[serde(default = "default_retry_max", with = "humantime_serde")]
    pub retry_max: Duration,
    /// Longest wait at shutdown for the batch in flight to be answered.
    #[schemars(with = "wardgate_core::config_doc::Duration")]
    #[serde(default = "default_shutdown_timeout", with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Extra static headers sent with every batch (for example a tenant id). Values may carry
    /// secrets: they are never logged.
    #[serde(default, serialize_with = "wardgate_core::config_doc::redact_values")]
    pub headers: BTreeMap<String, String>,
}

impl std::fmt::Debug for HttpsUplinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let header_names: Vec<&str> = self.headers.keys().map(String::as_str).collect();
        f.debug_struct("HttpsUplinkConfig")
            .field("name", &self.name)
            .field("url", &redact_url(&self.url))
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("ca_file", &self.ca_file)
            .field("client_cert", &self.client_cert)
            .field("client_key", &self.client_key)
            .field("insecure_skip_verify", &self.insecure_skip_verify)
            .field("allow_plain_http", &self.allow_plain_http)
            .field("batch_max_readings", &self.batch_max_readings)
            .field("batch_max_bytes", &self.batch_max_bytes)
            .field("linger", &self.linger)
            .field("gzip", &self.gzip)
            .field("timeout", &self.timeout)
            .field("retry_min", &self.retry_min)
            .field("retry_max", &self.retry_max)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("headers", &header_names)
            .finish()
    }
}

fn default_batch_max_readings() -> usize {
    500
}
fn default_batch_max_bytes() -> usize {
    1024 * 1024
}
fn default_linger() -> Duration {
    Duration::from_millis(20)
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_retry_min() -> Duration {
    Duration::from_millis(500)
}
fn default_retry_max() -> Duration {
    Duration::from_secs(60)
}
fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(5)
}

/// Most readings one batch may be configured to hold.
const MAX_BATCH_READINGS: usize = 100_000;
/// Most bytes one batch may be configured to hold (it is built in memory).
const MAX_BATCH_BYTES: usize = 64 * 1024 * 1024;

/// The URL without user info or query (either may carry a secret), for logs and `Debug`.
pub(crate) fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            if !u.username().is_empty() || u.password().is_some() {
                // Cannot fail for URLs with a host, which are the only ones with user info.
                let _ = u.set_username("");
                let _ = u.set_password(None);
            }
            if u.query().is_some() {
                u.set_query(Some("<redacted>"));
            }
            u.to_string()
        }
        Err(_) => "<unparsable url>".into(),
    }
}

impl HttpsUplinkConfig {
    /// Builds the uplink: validates this section (the same rules as [`Self::validate`]), reads
    /// the TLS files, builds the HTTP client, and registers its health check `uplink.<name>`
    /// with `health`. Nothing connects until the uplink is started.
    pub fn build(
        &self,
        gateway_id: &str,
        metrics: super::HttpsUplinkMetrics,
        health: &wardgate_core::Health,
    ) -> Result<super::HttpsUplink, crate::HttpError> {
        let mut problems = Problems::new();
        self.validate(&format!("uplinks.{}", self.name), &mut problems);
        if !problems.is_empty() {
            let all: Vec<String> = problems
                .into_vec()
                .iter()
                .map(ToString::to_string)
                .collect();
            return Err(crate::HttpError::Invalid(all.join("; ")));
        }
        let client = super::client::Client::new(self, gateway_id)?;
        let reporter = health.reporter(
            format!("uplink.{}", self.name),
            wardgate_core::health::ComponentKind::Uplink,
        );
        Ok(super::HttpsUplink::new(self, client, metrics, reporter))
    }

    /// Adds every problem in this uplink to `p`; `at` is its path, e.g. `uplinks[0]`. No
    /// problem message carries the token, a header value or the URL's user info.
    pub fn validate(&self, at: &str, p: &mut Problems) {
        if self.name.is_empty() {
            p.push(format!("{at}.name"), "must not be empty");
        }
        let plain = self.validate_url(at, p);
        if plain == Some(true) {
            if self.insecure_skip_verify {
                p.push(
                    format!("{at}.insecure_skip_verify"),
                    "has no meaning for an http:// url",
                );
            }
            for (field, set) in [
                ("ca_file", self.ca_file.is_some()),
                ("client_cert", self.client_cert.is_some()),
                ("client_key", self.client_key.is_some()),
            ] {
                if set {
                    p.push(format!("{at}.{field}"), "TLS settings need an https:// url");
                }
            }
        }
        if self.client_cert.is_some() != self.client_key.is_some() {
            p.push(
                format!("{at}.client_cert"),
                "client_cert and client_key go together",
            );
        }
        for (field, file) in [
            ("ca_file", &self.ca_file),
            ("client_cert", &self.client_cert),
            ("client_key", &self.client_key),
        ] {
            if let Some(f) = file
                && !f.is_file()
            {
                p.push(
                    format!("{at}.{field}"),
                    format!("{} is not a readable file", f.display()),
                );
            }
        }
        if let Some(token) = &self.token {
            if token.is_empty() {
                p.push(format!("{at}.token"), "must not be empty when set");
            } else if !token.bytes().all(|b| b.is_ascii_graphic()) {
                // Not echoed: it is a secret.
                p.push(
                    format!("{at}.token"),
                    "must be printable ASCII without spaces (it is sent in an HTTP header)",
                );
            }
        }
        if self.batch_max_readings == 0 || self.batch_max_readings > MAX_BATCH_READINGS {
            p.push(
                format!("{at}.batch_max_readings"),
                format!("must be between 1 and {MAX_BATCH_READINGS}"),
            );
        }
        if self.batch_max_bytes < 1024 || self.batch_max_bytes > MAX_BATCH_BYTES {
            p.push(
                format!("{at}.batch_max_bytes"),
                format!("must be between 1024 and {MAX_BATCH_BYTES}"),
            );
        }
        if self.linger > Duration::from_secs(10) {
            p.push(format!("{at}.linger"), "must be at most 10s");
        }
        for (field, d) in [
            ("timeout", self.timeout),
            ("retry_min", self.retry_min),
            ("shutdown_timeout", self.shutdown_timeout),
        ] {
            if d.is_zero() {
                p.push(format!("{at}.{field}"), "must be more than 0s");
            }
        }
        if self.retry_min > self.retry_max {
            p.push(format!("{at}.retry_min"), "must not exceed retry_max");
        }
        for (name, value) in &self.headers {
            let lower = name.to_ascii_lowercase();
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                p.push(
                    format!("{at}.headers"),
                    format!("{name:?} is not a valid header name"),
                );
            } else if RESERVED_HEADERS.contains(&lower.as_str()) {
                p.push(
                    format!("{at}.headers"),
                    format!("{name:?} is set by the uplink itself and cannot be overridden"),
                );
            }
            if reqwest::header::HeaderValue::from_str(value).is_err() {
                // The value is not echoed: it may be a secret.
                p.push(
                    format!("{at}.headers"),
                    format!("the value of {name:?} is not a valid header value"),
                );
            }
        }
    }

    /// Checks `url`; `Some(true)` for a usable `http://` URL, `Some(false)` for `https://`.
    fn validate_url(&self, at: &str, p: &mut Problems) -> Option<bool> {
        let path = format!("{at}.url");
        let url = match reqwest::Url::parse(&self.url) {
            Ok(u) => u,
            Err(e) => {
                p.push(path, format!("not a URL ({e})"));
                return None;
            }
        };
        if !url.username().is_empty() || url.password().is_some() {
            p.push(
                path,
                "must not carry user info (credentials go in `token`, never in the url)",
            );
            return None;
        }
        if url.host_str().is_none_or(str::is_empty) {
            p.push(path, "needs a host");
            return None;
        }
        if url.fragment().is_some() {
            p.push(path, "must not have a #fragment");
            return None;
        }
        match url.scheme() {
            "https" => Some(false),
            "http" if self.allow_plain_http => Some(true),
            "http" => {
                p.push(
                    path,
                    "http:// sends readings unencrypted: use https://, or set allow_plain_http = true (lab or loopback only)",
                );
                None
            }
            other => {
                p.push(path, format!("scheme {other:?} is not https"));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: serde_json::Value) -> HttpsUplinkConfig {
        serde_json::from_value(json).unwrap_or_else(|e| panic!("config parses: {e}"))
    }

    fn problems(cfg: &HttpsUplinkConfig) -> Vec<String> {
        let mut p = Problems::new();
        cfg.validate("uplinks[0]", &mut p);
        p.into_vec().into_iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn minimal_uplink_gets_documented_defaults_and_validates() {
        let cfg = parse(serde_json::json!({ "name": "cloud", "url": "https://ingest.example/v1" }));
        assert_eq!(cfg.batch_max_readings, 500);
        assert_eq!(cfg.batch_max_bytes, 1024 * 1024);
        assert_eq!(cfg.linger, Duration::from_millis(20));
        assert_eq!(cfg.timeout, Duration::from_secs(10));
        assert_eq!(cfg.retry_min, Duration::from_millis(500));
        assert_eq!(cfg.retry_max, Duration::from_secs(60));
        assert_eq!(cfg.shutdown_timeout, Duration::from_secs(5));
        assert!(!cfg.gzip && !cfg.insecure_skip_verify && !cfg.allow_plain_http);
        assert!(cfg.headers.is_empty());
        assert!(problems(&cfg).is_empty(), "{:?}", problems(&cfg));
    }

    #[test]
    fn plain_http_is_refused_unless_allowed() {
        let cfg = parse(serde_json::json!({ "name": "lab", "url": "http://127.0.0.1:8080/in" }));
        let found = problems(&cfg);
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("uplinks[0].url:") && p.contains("allow_plain_http")),
            "{found:?}"
        );
        let cfg = parse(serde_json::json!({
            "name": "lab", "url": "http://127.0.0.1:8080/in", "allow_plain_http": true
        }));
        assert!(problems(&cfg).is_empty(), "{:?}", problems(&cfg));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let cfg = parse(serde_json::json!({
            "name": "",
            "url": "ftp://ingest.example/",
            "client_cert": "/nonexistent/client.pem",
            "batch_max_readings": 0,
            "batch_max_bytes": 0,
            "timeout": "0s",
            "retry_min": "2m",
            "retry_max": "1m",
            "linger": "1m",
            "token": "has space",
            "headers": { "Authorization": "x", "bad header": "v", "X-Ok": "line\nbreak" },
        }));
        let found = problems(&cfg);
        for needle in [
            "uplinks[0].name:",
            "uplinks[0].url: scheme \"ftp\"",
            "uplinks[0].client_cert: client_cert and client_key go together",
            "uplinks[0].client_cert: /nonexistent/client.pem is not a readable file",
            "uplinks[0].batch_max_readings:",
            "uplinks[0].batch_max_bytes:",
            "uplinks[0].timeout:",
            "uplinks[0].retry_min: must not exceed retry_max",
            "uplinks[0].linger:",
            "uplinks[0].token:",
            "uplinks[0].headers: \"Authorization\" is set by the uplink itself",
            "uplinks[0].headers: \"bad header\" is not a valid header name",
            "uplinks[0].headers: the value of \"X-Ok\" is not a valid header value",
        ] {
            assert!(
                found.iter().any(|p| p.starts_with(needle)),
                "{needle} in {found:?}"
            );
        }
        assert!(!format!("{found:?}").contains("has space"));
    }

    #[test]
    fn tls_settings_with_an_http_url_and_user_info_in_the_url_are_problems() {
        let cfg = parse(serde_json::json!({
            "name": "lab", "url": "http://127.0.0.1/in", "allow_plain_http": true,
            "insecure_skip_verify": true, "ca_file": "/etc/hostname",
        }));
        let found = problems(&cfg);
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("uplinks[0].insecure_skip_verify:")),
            "{found:?}"
        );
        assert!(
            found.iter().any(|p| p.starts_with("uplinks[0].ca_file:")),
            "{found:?}"
        );
        let cfg = parse(serde_json::json!({ "name": "c", "url": "https://u:pw-s3cret@h/in" }));
        let found = problems(&cfg);
        assert!(
            found.iter().any(|p| p.starts_with("uplinks[0].url:")),
            "{found:?}"
        );
        assert!(!format!("{found:?} {cfg:?}").contains("pw-s3cret"));
    }

    #[test]
    fn unknown_fields_are_refused() {
        let r: Result<HttpsUplinkConfig, _> = serde_json::from_value(serde_json::json!({
            "name": "cloud", "url": "https://h/", "retries": 3
        }));
        assert!(r.is_err());
    }

    #[test]
    fn debug_output_never_shows_the_token_or_header_values() {
        let cfg = parse(serde_json::json!({
            "name": "cloud", "url": "https://h/in?key=q-s3cret", "token": "tok-hunter2",
            "headers": { "X-Api-Key": "hdr-s3cret" },
        }));
        let shown = format!("{cfg:?}");
        for secret in ["tok-hunter2", "hdr-s3cret", "q-s3cret"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(
            shown.contains("<redacted>") && shown.contains("X-Api-Key"),
            "{shown}"
        );
    }
}
