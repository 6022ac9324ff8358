//! The uplink's HTTP client: reqwest over a rustls configuration built here.
//!
//! - Crypto provider: `ring`, passed explicitly in the `rustls::ClientConfig` handed to reqwest
//!   (`tls_backend_preconfigured`), so reqwest never looks for a process-wide provider and the
//!   tree keeps one rustls 0.23 with ring (no aws-lc).
//! - Versions: TLS 1.2 and 1.3 only (rustls has nothing older).
//! - Trust: `ca_file` when set, else the operating system's store (`rustls-native-certs`), with
//!   WebPKI chain, validity and host name checks. `insecure_skip_verify` swaps in a verifier
//!   that accepts any certificate but still checks the handshake signatures.
//! - Client certificate: `client_cert` + `client_key` (mutual TLS).
//! - No proxy from the environment (`HTTPS_PROXY` cannot silently redirect readings), no
//!   redirects (a POST of readings must not be replayed elsewhere, nor its token), HTTP/1.1.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::time::Instant;

use super::config::{HttpsUplinkConfig, redact_url};
use crate::error::HttpError;

/// Longest part of an error answer's body read (only its size is used: for the log).
const MAX_ANSWER_BODY: usize = 64 * 1024;
/// Longest error detail kept for logs and health.
const MAX_DETAIL: usize = 300;

/// How one POST ended.
#[derive(Debug)]
pub(crate) enum Answer {
    /// The peer answered.
    Status {
        /// The status code.
        status: u16,
        /// Its `Retry-After`, raw (parsed by the caller, who knows the time).
        retry_after: Option<String>,
        /// Bytes of its body read (at most [`MAX_ANSWER_BODY`]).
        body_bytes: usize,
    },
    /// No answer: the connection, TLS, or the request failed.
    Failed {
        /// What went wrong (deepest causes first removed; no URL query, no token).
        detail: String,
    },
    /// No answer within `timeout`.
    TimedOut,
}

/// A built client for one uplink.
pub(crate) struct Client {
    http: reqwest::Client,
    url: reqwest::Url,
    /// The URL as logs may show it.
    pub(crate) shown_url: String,
    headers: HeaderMap,
    gzip: bool,
    timeout: Duration,
}

impl std::fmt::Debug for Client {
    // Hand-written: the headers hold the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.shown_url)
            .field("gzip", &self.gzip)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Reads the TLS files and builds the client. `cfg` has been validated.
    pub(crate) fn new(cfg: &HttpsUplinkConfig, gateway_id: &str) -> Result<Client, HttpError> {
        let url =
            reqwest::Url::parse(&cfg.url).map_err(|e| HttpError::Invalid(format!("url: {e}")))?;
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(
            HeaderName::from_static("x-wardgate-gateway"),
            HeaderValue::from_str(gateway_id).map_err(|_| {
                HttpError::Invalid("the gateway id is not a valid header value".into())
            })?,
        );
        for (name, value) in &cfg.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| HttpError::Invalid(format!("header name {name:?}")))?;
            let mut value = HeaderValue::from_str(value)
                .map_err(|_| HttpError::Invalid(format!("the value of header {name}")))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        if let Some(token) = &cfg.token {
            let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| HttpError::Invalid("token is not a valid header value".into()))?;
            // Kept out of reqwest's and hyper's debug output.
            value.set_sensitive(true);
            headers.insert(header::AUTHORIZATION, value);
        }
        let tls = tls_config(cfg)?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(cfg.timeout)
            .timeout(cfg.timeout)
            .pool_max_idle_per_host(1)
            .user_agent(concat!("wardgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| HttpError::Client(e.without_url().to_string()))?;
        Ok(Client {
            http,
            shown_url: redact_url(&cfg.url),
            url,
            headers,
            gzip: cfg.gzip,
            timeout: cfg.timeout,
        })
    }

    /// Whether bodies are gzipped.
    pub(crate) fn gzip(&self) -> bool {
        self.gzip
    }

    /// POSTs `body` (`gzipped` or not) with `key` as its `Idempotency-Key`; the whole
    /// exchange, answer included, is bounded by the configured timeout.
    pub(crate) async fn post(&self, body: Vec<u8>, gzipped: bool, key: &str) -> Answer {
        let mut headers = self.headers.clone();
        if let Ok(v) = HeaderValue::from_str(key) {
            headers.insert(HeaderName::from_static("idempotency-key"), v);
        }
        if gzipped {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        let request = self.http.post(self.url.clone()).headers(headers).body(body);
        let deadline = Instant::now() + self.timeout;
        match tokio::time::timeout_at(deadline, request.send()).await {
            Err(_) => Answer::TimedOut,
            Ok(Err(e)) if e.is_timeout() => Answer::TimedOut,
            Ok(Err(e)) => Answer::Failed {
                detail: describe(&e),
            },
            Ok(Ok(mut response)) => {
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get(header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                // Read (a bounded part of) the body so the connection can be reused.
                let mut body_bytes = 0usize;
                // The status is what counts; a body cut short changes nothing.
                while let Ok(Ok(Some(chunk))) =
                    tokio::time::timeout_at(deadline, response.chunk()).await
                {
                    body_bytes = body_bytes.saturating_add(chunk.len());
                    if body_bytes >= MAX_ANSWER_BODY {
                        break;
                    }
                }
                Answer::Status {
                    status,
                    retry_after,
                    body_bytes,
                }
            }
        }
    }
}

/// The error and its causes, de-duplicated, without the URL, bounded.
fn describe(e: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    let top = if e.is_connect() {
        "cannot connect"
    } else if e.is_request() {
        "request failed"
    } else if e.is_body() {
        "sending the body failed"
    } else {
        "failed"
    };
    parts.push(top.to_owned());
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    let mut out = parts.join(": ");
    if out.len() > MAX_DETAIL {
        let mut cut = MAX_DETAIL;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('…');
    }
    out
}

/// The rustls client configuration of an uplink.
fn tls_config(cfg: &HttpsUplinkConfig) -> Result<ClientConfig, HttpError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| HttpError::Tls(e.to_string()))?;
    let builder = if cfg.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate { provider }))
    } else {
        builder.with_root_certificates(root_store(cfg)?)
    };
    let mut config = match (&cfg.client_cert, &cfg.client_key) {
        (Some(cert), Some(key)) => {
            let chain = crate::tls::read_certs("client_cert", cert)?;
            let key = crate::tls::read_key("client_key", key)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| HttpError::Tls(e.to_string()))?
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn root_store(cfg: &HttpsUplinkConfig) -> Result<RootCertStore, HttpError> {
    let mut roots = RootCertStore::empty();
    match &cfg.ca_file {
        Some(path) => {
            for cert in crate::tls::read_certs("ca_file", path)? {
                roots.add(cert).map_err(|e| HttpError::TlsFileContent {
                    what: "ca_file",
                    path: path.clone(),
                    reason: format!("unusable CA certificate: {e}"),
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found
                    .errors
                    .first()
                    .map(ToString::to_string)
                    .unwrap_or_else(|| "the system store is empty".into());
                return Err(HttpError::NoRootCertificates(why));
            }
        }
    }
    Ok(roots)
}

/// `insecure_skip_verify`: any certificate, any name, any date. The handshake signatures are
/// still checked (the peer holds the key of the certificate it sent), which stops nobody who
/// can present a certificate of their own: lab use only, and logged as such.
#[derive(Debug)]
struct AcceptAnyCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
