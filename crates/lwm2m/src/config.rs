//! `[lwm2m]` in `gateway.toml`: the LwM2M server on the CoAP endpoints (`/rd`, `/dp`).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wardgate_core::MessageClass;
use wardgate_core::validate::Problems;

use crate::bootstrap::BootstrapConfig;
use crate::observe::ObserveRule;
use crate::server::Settings;

/// LwM2M server settings.
#[derive(Debug, Clone, Deserialize, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Lwm2mConfig {
    /// Serve the LwM2M interfaces (`/rd`, `/dp`) on every CoAP endpoint, plain and DTLS.
    pub enabled: bool,
    /// Where registrations are kept across restarts (SQLite). Unset: `lwm2m.db` beside the
    /// outbox (`[store] path`).
    pub registrations_path: Option<PathBuf>,
    /// How long a queue-mode client is reachable after it last talked (default 93 s, CoAP's
    /// MAX_TRANSMIT_WAIT, as TS Transport §6.6 suggests).
    #[schemars(with = "wardgate_core::config_doc::Duration")]
    #[serde(with = "humantime_serde")]
    pub awake_window: Duration,
    /// Operations waiting per sleeping client; more are refused.
    pub queue_limit: usize,
    /// How long a queued operation waits for its client to wake.
    #[schemars(with = "wardgate_core::config_doc::Duration")]
    #[serde(with = "humantime_serde")]
    pub queue_timeout: Duration,
    /// How long one request to a client may take.
    #[schemars(with = "wardgate_core::config_doc::Duration")]
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Most registered clients.
    pub max_clients: usize,
    /// Class of readings clients Send (`/dp`).
    pub send_class: MessageClass,
    /// A folder of OMA DDF XML object definitions added to (and overriding) the built-in ones;
    /// relative to `gateway.toml`'s directory.
    pub objects_dir: Option<PathBuf>,
    /// `[[lwm2m.observe]]`: observations established on every registration.
    pub observe: Vec<ObserveRule>,
    /// `[[lwm2m.bootstrap]]`: what the bootstrap server (`/bs`) provisions, first match wins
    /// (configurations added through the admin API are tried first).
    pub bootstrap: Vec<BootstrapConfig>,
}

impl Default for Lwm2mConfig {
    fn default() -> Self {
        let s = Settings::default();
        Lwm2mConfig {
            enabled: true,
            registrations_path: None,
            awake_window: s.awake_window,
            queue_limit: s.queue_limit,
            queue_timeout: s.queue_timeout,
            request_timeout: s.request_timeout,
            max_clients: s.max_clients,
            send_class: s.send_class,
            objects_dir: None,
            observe: Vec::new(),
            bootstrap: Vec::new(),
        }
    }
}

impl Lwm2mConfig {
    /// Adds every problem to `p` under the section path `at`.
    pub fn validate(&self, at: &str, p: &mut Problems) {
        if self.awake_window.is_zero() {
            p.push(format!("{at}.awake_window"), "must be more than 0s");
        }
        if !(1..=10_000).contains(&self.queue_limit) {
            p.push(format!("{at}.queue_limit"), "must be from 1 to 10000");
        }
        if self.request_timeout < Duration::from_secs(1) {
            p.push(format!("{at}.request_timeout"), "must be at least 1s");
        }
        if self.queue_timeout.is_zero() {
            p.push(format!("{at}.queue_timeout"), "must be more than 0s");
        }
        if !(1..=10_000_000).contains(&self.max_clients) {
            p.push(format!("{at}.max_clients"), "must be from 1 to 10000000");
        }
        for (i, r) in self.observe.iter().enumerate() {
            let at = format!("{at}.observe[{i}]");
            if r.endpoint.is_empty() {
                p.push(
                    format!("{at}.endpoint"),
                    "must not be empty (use \"*\" for every client)",
                );
            }
            if r.paths.is_empty() {
                p.push(format!("{at}.paths"), "needs at least one path");
            }
            if r.paths.iter().any(|x| x.is_empty()) {
                p.push(
                    format!("{at}.paths"),
                    "\"/\" cannot be observed; name an object or below",
                );
            }
            if let Some(a) = &r.attributes {
                if let Err(e) = a.query() {
                    p.push(format!("{at}.attributes"), e.to_string());
                }
            }
        }
        for (i, b) in self.bootstrap.iter().enumerate() {
            for (field, msg) in b.problems() {
                p.push(format!("{at}.bootstrap[{i}].{field}"), msg);
            }
        }
    }

    /// The server settings it describes.
    pub fn settings(&self) -> Settings {
        Settings {
            awake_window: self.awake_window,
            queue_limit: self.queue_limit,
            queue_timeout: self.queue_timeout,
            request_timeout: self.request_timeout,
            max_clients: self.max_clients,
            observe: self.observe.clone(),
            send_class: self.send_class,
            bootstrap: self.bootstrap.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observe_rules_parse_from_toml_and_bad_values_are_all_reported() {
        let c: Lwm2mConfig = toml::from_str(
            r#"
            awake_window = "30s"
            [[observe]]
            endpoint = "bed-*"
            paths = ["/3303/0/5700", "/3304/0/5700"]
            composite = true
            class = "vital"
            attributes = { pmin = 5, pmax = 60 }
            "#,
        )
        .unwrap();
        let mut p = Problems::new();
        c.validate("lwm2m", &mut p);
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(c.observe[0].paths.len(), 2);
        assert_eq!(c.observe[0].attributes.as_ref().unwrap().pmax, Some(60));

        let c: Lwm2mConfig = toml::from_str(
            r#"
            queue_limit = 0
            [[observe]]
            endpoint = ""
            paths = []
            attributes = { pmin = 10, pmax = 5 }
            "#,
        )
        .unwrap();
        let mut p = Problems::new();
        c.validate("lwm2m", &mut p);
        let paths: Vec<String> = p.into_vec().into_iter().map(|x| x.path).collect();
        assert_eq!(
            paths,
            [
                "lwm2m.queue_limit",
                "lwm2m.observe[0].endpoint",
                "lwm2m.observe[0].paths",
                "lwm2m.observe[0].attributes"
            ]
        );
        assert!(
            toml::from_str::<Lwm2mConfig>("[[observe]]\nendpoint=\"*\"\npaths=[\"/3/x\"]").is_err()
        );
    }
}
