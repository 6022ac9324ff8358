//! Who may use the admin API, and how often a source may fail to prove it.
//!
//! A request is authenticated by, in order:
//! 1. a verified client certificate whose SHA-256 fingerprint is listed in
//!    `client_certificates` (mutual TLS; the chain was checked in the handshake);
//! 2. `Authorization: Bearer <token>` whose SHA-256 equals a configured hash. Every configured
//!    hash is compared, in constant time, whatever matched first.
//!
//! Failures (no credentials, a wrong token, an unlisted certificate) are answered 401, counted,
//! audited (`auth_failure`, reason `admin_no_credentials` / `admin_bad_token` /
//! `admin_unlisted_certificate`, never the token) and charged to the source IP: past
//! [`MAX_FAILURES`] in [`WINDOW`] the source gets 429 for the rest of the window, whatever it
//! sends. The table of sources is bounded ([`SOURCES`]).

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use subtle::ConstantTimeEq;
use tokio::time::Instant;

use crate::config::{AdminConfig, TokenRole, parse_sha256_hex};
use crate::listener::sha256;

/// Failed attempts a source may make per window.
pub(crate) const MAX_FAILURES: u32 = 10;
/// The failure window.
pub(crate) const WINDOW: Duration = Duration::from_secs(60);
/// Sources tracked at once; when full, expired windows go first, then the oldest.
pub(crate) const SOURCES: usize = 1024;
/// Longest token accepted (longer ones are wrong without hashing them).
const MAX_TOKEN: usize = 4096;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The authenticated administrator (or viewer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Principal {
    /// By bearer token: its configured id.
    Token(Box<str>),
    /// By a `role = "viewer"` bearer token: its configured id. May read (`GET`), never edit.
    Viewer(Box<str>),
    /// By client certificate: its fingerprint.
    Certificate([u8; 32]),
}

impl Principal {
    /// The audit actor: `admin:<token id>`, `viewer:<token id>` or
    /// `admin-cert:<first 16 hex digits>`.
    pub(crate) fn actor(&self) -> String {
        match self {
            Principal::Token(id) => format!("admin:{id}"),
            Principal::Viewer(id) => format!("viewer:{id}"),
            Principal::Certificate(fp) => format!("admin-cert:{}", hex(fp.get(..8).unwrap_or(fp))),
        }
    }

    /// Whether it may only read.
    pub(crate) fn read_only(&self) -> bool {
        matches!(self, Principal::Viewer(_))
    }
}

/// Why a request was not authenticated: the audit reason and metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Neither a listed certificate nor an `Authorization` header.
    NoCredentials,
    /// An `Authorization` header that is not a configured bearer token.
    BadToken,
    /// A verified client certificate that is not listed, and no token.
    UnlistedCertificate,
}

impl Failure {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Failure::NoCredentials => "admin_no_credentials",
            Failure::BadToken => "admin_bad_token",
            Failure::UnlistedCertificate => "admin_unlisted_certificate",
        }
    }
}

/// The configured credentials, decoded once.
pub(crate) struct Credentials {
    tokens: Vec<([u8; 32], Box<str>, TokenRole)>,
    certificates: Vec<[u8; 32]>,
}

// Hashes of weak tokens can be brute-forced: Debug names token ids only.
impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<&str> = self.tokens.iter().map(|(_, id, _)| &**id).collect();
        f.debug_struct("Credentials")
            .field("tokens", &ids)
            .field("certificates", &self.certificates.len())
            .finish()
    }
}

impl Credentials {
    /// From a validated `[admin]` section (entries that do not decode are skipped; validation
    /// has reported them already).
    pub(crate) fn from_config(cfg: &AdminConfig) -> Credentials {
        Credentials {
            tokens: cfg
                .tokens
                .iter()
                .filter_map(|t| Some((parse_sha256_hex(&t.sha256)?, t.id.as_str().into(), t.role)))
                .collect(),
            certificates: cfg
                .client_certificates
                .iter()
                .filter_map(|c| parse_sha256_hex(c))
                .collect(),
        }
    }

    /// Authenticates a request from its verified client certificate and its headers.
    pub(crate) fn authenticate(
        &self,
        client_cert: Option<&[u8; 32]>,
        headers: &HeaderMap,
    ) -> Result<Principal, Failure> {
        if let Some(fp) = client_cert
            && self.certificates.iter().any(|c| bool::from(c.ct_eq(fp)))
        {
            return Ok(Principal::Certificate(*fp));
        }
        let Some(value) = headers.get(AUTHORIZATION) else {
            return Err(match client_cert {
                Some(_) => Failure::UnlistedCertificate,
                None => Failure::NoCredentials,
            });
        };
        let token = bearer(value.as_bytes()).ok_or(Failure::BadToken)?;
        match self.token(token) {
            Some((id, TokenRole::Admin)) => Ok(Principal::Token(id)),
            Some((id, TokenRole::Viewer)) => Ok(Principal::Viewer(id)),
            None => Err(Failure::BadToken),
        }
    }

    /// The id of the token whose hash matches, comparing every hash in constant time.
    fn token(&self, token: &[u8]) -> Option<(Box<str>, TokenRole)> {
        let presented = sha256(token);
        let mut found = None;
        for (hash, id, role) in &self.tokens {
            if bool::from(hash.ct_eq(&presented)) {
                found = Some((id.clone(), *role));
            }
        }
        found
    }
}

/// The token of `Bearer <token>` (scheme case-insensitive, RFC 6750).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty() && token.len() <= MAX_TOKEN).then_some(token)
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    failures: u32,
}

/// Failed attempts per source IP, over a bounded table.
#[derive(Debug, Default)]
pub(crate) struct FailureLimit {
    table: Mutex<HashMap<IpAddr, Window>>,
}

impl FailureLimit {
    /// Whether `ip` is over its limit now.
    pub(crate) fn blocked(&self, ip: IpAddr, now: Instant) -> bool {
        let table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        table
            .get(&ip)
            .is_some_and(|w| now.duration_since(w.start) < WINDOW && w.failures >= MAX_FAILURES)
    }

    /// Charges a failure to `ip`. Returns whether this one reached the limit.
    pub(crate) fn fail(&self, ip: IpAddr, now: Instant) -> bool {
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        if !table.contains_key(&ip) && table.len() >= SOURCES {
            table.retain(|_, w| now.duration_since(w.start) < WINDOW);
            if table.len() >= SOURCES
                && let Some(oldest) = table.iter().min_by_key(|(_, w)| w.start).map(|(k, _)| *k)
            {
                table.remove(&oldest);
            }
        }
        let w = table.entry(ip).or_insert(Window {
            start: now,
            failures: 0,
        });
        if now.duration_since(w.start) >= WINDOW {
            *w = Window {
                start: now,
                failures: 0,
            };
        }
        w.failures = w.failures.saturating_add(1);
        w.failures == MAX_FAILURES
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AdminToken;

    fn creds() -> Credentials {
        let cfg = AdminConfig {
            tokens: vec![
                AdminToken {
                    id: "ops-1".into(),
                    sha256: hex(&sha256(b"right")),
                    role: TokenRole::Admin,
                },
                AdminToken {
                    id: "screen-1".into(),
                    sha256: hex(&sha256(b"look")),
                    role: TokenRole::Viewer,
                },
            ],
            ..AdminConfig::default()
        };
        Credentials::from_config(&cfg)
    }

    fn auth(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, value.parse().unwrap());
        h
    }

    #[test]
    fn a_bearer_token_is_accepted_by_its_hash_and_named_by_its_id() {
        let c = creds();
        let p = c.authenticate(None, &auth("Bearer right")).unwrap();
        assert_eq!(p.actor(), "admin:ops-1");
        assert_eq!(
            c.authenticate(None, &auth("bearer  right ")).unwrap(),
            Principal::Token("ops-1".into())
        );
        let viewer = c.authenticate(None, &auth("Bearer look")).unwrap();
        assert_eq!(viewer, Principal::Viewer("screen-1".into()));
        assert_eq!(viewer.actor(), "viewer:screen-1");
        assert!(viewer.read_only() && !p.read_only());
        assert_eq!(
            c.authenticate(None, &auth("Bearer wrong")),
            Err(Failure::BadToken)
        );
        assert_eq!(
            c.authenticate(None, &auth("Basic cmlnaHQ=")),
            Err(Failure::BadToken)
        );
        assert_eq!(
            c.authenticate(None, &HeaderMap::new()),
            Err(Failure::NoCredentials)
        );
        assert_eq!(
            c.authenticate(Some(&[7; 32]), &HeaderMap::new()),
            Err(Failure::UnlistedCertificate)
        );
    }

    #[test]
    fn a_source_is_blocked_after_its_failures_until_the_window_ends() {
        let limit = FailureLimit::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        for i in 1..MAX_FAILURES {
            assert!(!limit.fail(ip, t0), "{i}");
            assert!(!limit.blocked(ip, t0));
        }
        assert!(limit.fail(ip, t0));
        assert!(limit.blocked(ip, t0));
        assert!(!limit.blocked("192.0.2.2".parse().unwrap(), t0));
        assert!(!limit.blocked(ip, t0 + WINDOW));
    }

    #[test]
    fn the_source_table_stays_bounded() {
        let limit = FailureLimit::default();
        let t0 = Instant::now();
        for i in 0..(SOURCES as u32 + 100) {
            limit.fail(IpAddr::from(i.to_be_bytes()), t0);
        }
        let len = limit.table.lock().unwrap().len();
        assert!(len <= SOURCES, "{len}");
    }
}
