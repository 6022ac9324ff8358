//! `[http]` section of `gateway.toml`.

use std::net::SocketAddr;

use serde::Deserialize;
use wardgate_core::validate::Problems;

/// Operator HTTP server settings.
#[derive(Debug, Clone, Deserialize, PartialEq)]
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
