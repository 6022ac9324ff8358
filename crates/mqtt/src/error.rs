//! Errors of the MQTT uplink and the southbound subscriber.
//!
//! Construction errors ([`MqttUplink::new`](crate::MqttUplink::new),
//! [`MqttIngestConfig::build`](crate::southbound::MqttIngestConfig::build)) name the setting or
//! file at fault. Connection problems at run time are not errors of `run`: the uplink retries them with
//! backoff and reports them through health, metrics and logs. `run` fails only when the outbox
//! does.

use std::path::PathBuf;

use wardgate_core::OutboxError;

/// Why an MQTT uplink or subscriber could not be built, or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    /// The broker URL is malformed.
    #[error("invalid broker url {url:?}: {reason}")]
    Url {
        /// The configured URL as [`crate::url::redact`] shows it: it may hold a password.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A topic template is malformed.
    #[error("invalid {field} template {template:?}: {reason}")]
    Template {
        /// `topic` or `status_topic`.
        field: &'static str,
        /// The configured template.
        template: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The configuration breaks its rules (`MqttUplinkConfig::validate`'s or
    /// `MqttIngestConfig::validate`'s problems).
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// Another setting is out of range (normally caught by config validation first).
    #[error("invalid setting {field}: {reason}")]
    Setting {
        /// The setting's name.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A TLS file could not be read.
    #[error("cannot read {what} {}: {source}", path.display())]
    TlsFileRead {
        /// `ca_file`, `client_cert_file` or `client_key_file`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A TLS file was read but holds no usable PEM content.
    #[error("bad {what} {}: {reason}", path.display())]
    TlsFileContent {
        /// `ca_file`, `client_cert_file` or `client_key_file`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// No trust anchors: `ca_file` unset and the system store is empty or unreadable.
    #[error("no CA certificates: set tls.ca_file or install system roots ({0})")]
    NoRootCertificates(String),
    /// rustls refused the assembled configuration (e.g. a client key that does not match its
    /// certificate).
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// The outbox failed while the uplink was reading from it.
    #[error("outbox: {0}")]
    Outbox(#[from] OutboxError),
}

/// `Err(Invalid)` listing every problem `validate` reports, `Ok` when there is none: the
/// constructors run the same rules as `check-config`, never a copy of them.
pub(crate) fn check(
    validate: impl FnOnce(&mut wardgate_core::validate::Problems),
) -> Result<(), MqttError> {
    let mut problems = wardgate_core::validate::Problems::new();
    validate(&mut problems);
    if problems.is_empty() {
        return Ok(());
    }
    let all: Vec<String> = problems
        .into_vec()
        .iter()
        .map(ToString::to_string)
        .collect();
    Err(MqttError::Invalid(all.join("; ")))
}
