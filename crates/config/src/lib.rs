//! wardgate-config: the `gateway.toml` schema, `${VAR}` / `${VAR:-default}` interpolation, and
//! validation that reports every problem at once.
//!
//! Each adapter crate owns the struct of its own section (`wardgate_coap::CoapConfig`, ...);
//! this crate composes them, interpolates the environment, and runs every section's `validate`.
//! Nothing here binds a socket or opens a file other than the config itself, so
//! `wardgate check-config` and `wardgate run` share exactly the same checks.
//!
//! [`reference`] renders the configuration reference (`wardgate generate-config`,
//! `docs/configuration.md`) from the config types. Their doc comments and types come from
//! `schemars` (the maintained JSON Schema derive that follows serde's attributes, so the
//! reference matches what the parser accepts; a hand-written `syn` walker over the sources could
//! not see defaults, and rustdoc's JSON output needs a nightly compiler), their defaults from
//! `Serialize` of each section's `Default`.
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod audit;
mod error;
mod gateway;
mod interpolate;
mod locate;
pub mod reference;
pub mod split;

pub use audit::AuditConfig;
pub use error::ConfigError;
pub use gateway::{
    BusConfig, FileUplinkConfig, GatewayConfig, GatewaySection, LogConfig, LogFormat, UplinkConfig,
};
pub use interpolate::interpolate;
pub use split::{Part, SplitConfig};
pub use wardgate_core::validate::Problem;

use std::path::Path;

/// What a configuration is loaded for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// `wardgate run` (and `check-config`, `store recover`): every rule.
    Gateway,
    /// `wardgate monitor` (interface capture mode): it stores and delivers nothing, so
    /// `[[uplinks]]` may be absent.
    Monitor,
}

/// Reads, interpolates (with the process environment), parses and validates a config file.
pub fn load(path: &Path) -> Result<GatewayConfig, ConfigError> {
    load_for(path, Purpose::Gateway)
}

/// [`load`] for `purpose`.
pub fn load_for(path: &Path, purpose: Purpose) -> Result<GatewayConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut cfg = parse_for(&text, &|name| std::env::var(name).ok(), purpose)?;
    // Files the configuration names are relative to the configuration's own directory.
    if let Some(dir) = path.parent() {
        let admin_tls = cfg.admin.tls.as_mut();
        let (cert, key, client_ca) = match admin_tls {
            Some(t) => (
                Some(&mut t.cert_file),
                Some(&mut t.key_file),
                t.client_ca_file.as_mut(),
            ),
            None => (None, None, None),
        };
        let named = [
            cfg.registry.path.as_mut(),
            cfg.audit.path.as_mut(),
            cfg.audit.hmac_key_file.as_mut(),
            cfg.coaps.certificate_file.as_mut(),
            cfg.coaps.private_key_file.as_mut(),
            cfg.lwm2m.objects_dir.as_mut(),
            cert,
            key,
            client_ca,
        ];
        for file in named.into_iter().flatten() {
            if file.is_relative() {
                *file = dir.join(&*file);
            }
        }
    }
    Ok(cfg)
}

/// Interpolates and parses config text with the given variable lookup, then validates it.
/// Every problem found (interpolation, types, values, cross-section rules) is returned at once.
pub fn parse(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<GatewayConfig, ConfigError> {
    parse_for(text, lookup, Purpose::Gateway)
}

/// [`parse`] for `purpose`.
pub fn parse_for(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    purpose: Purpose,
) -> Result<GatewayConfig, ConfigError> {
    let mut problems = wardgate_core::validate::Problems::new();
    let expanded = interpolate(text, lookup, &mut problems);
    let cfg = match gateway::parse_sections(&expanded, &mut problems) {
        Some(parsed) if parsed.failed.is_empty() => {
            parsed.cfg.validate(&mut problems);
            Some(parsed.cfg)
        }
        Some(parsed) => {
            // The sections that parsed still get their value checks, so one type error does
            // not hide the other problems of the file.
            let mut checks = wardgate_core::validate::Problems::new();
            parsed.cfg.validate(&mut checks);
            for c in checks.into_vec() {
                if gateway::holds_despite(&c, &parsed.failed) {
                    problems.push(c.path, c.message);
                }
            }
            None
        }
        None => None,
    };
    if purpose == Purpose::Monitor
        && let Some(c) = &cfg
        && c.monitor.anomalies.enabled
        && !c.monitor.flows.enabled
    {
        problems.push(
            "monitor.anomalies.enabled",
            "needs [monitor.flows] enabled in interface mode (wardgate monitor): the events are \
             written to anomalies.jsonl in the flows directory",
        );
    }
    let mut problems = problems.into_vec();
    if purpose == Purpose::Monitor {
        problems.retain(|p| p.path != "uplinks");
    }
    if !problems.is_empty() {
        locate::locate(text, &expanded, &mut problems);
    }
    match cfg {
        Some(cfg) if problems.is_empty() => Ok(cfg),
        _ => Err(ConfigError::Invalid(problems)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_monitor_needs_no_uplinks_the_gateway_does() {
        let text = "[monitor.flows]\nenabled = true\n";
        let none = &|_: &str| None;
        assert!(parse_for(text, none, Purpose::Monitor).is_ok());
        let Err(ConfigError::Invalid(p)) = parse_for(text, none, Purpose::Gateway) else {
            panic!("a gateway without uplinks passed");
        };
        assert_eq!(
            p.iter().map(|p| p.path.as_str()).collect::<Vec<_>>(),
            ["uplinks"]
        );
        // Other problems still count.
        assert!(parse_for("[monitor.flows]\nmax_flows = 0\n", none, Purpose::Monitor).is_err());
    }

    #[test]
    fn the_monitors_anomaly_events_need_the_flows_directory() {
        let none = &|_: &str| None;
        let text = "[monitor.capture]\nenabled = true\n[monitor.anomalies]\nenabled = true\n";
        let Err(ConfigError::Invalid(p)) = parse_for(text, none, Purpose::Monitor) else {
            panic!("interface-mode anomalies without flows passed");
        };
        assert_eq!(p[0].path, "monitor.anomalies.enabled", "{p:?}");
        let with_flows = format!("{text}[monitor.flows]\nenabled = true\n");
        assert!(parse_for(&with_flows, none, Purpose::Monitor).is_ok());
    }

    #[test]
    fn admin_tls_files_are_relative_to_the_configs_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.toml");
        std::fs::write(
            &path,
            "[admin]\n[admin.tls]\ncert_file = \"admin.pem\"\nkey_file = \"/etc/admin.key\"\n\
             client_ca_file = \"ca/admin-ca.pem\"\n\
             [[uplinks]]\ntype = \"file\"\nname = \"out\"\npath = \"-\"\n",
        )
        .unwrap();
        let cfg = load(&path).unwrap_or_else(|e| panic!("{e}"));
        let tls = cfg.admin.tls.unwrap();
        assert_eq!(tls.cert_file, dir.path().join("admin.pem"));
        assert_eq!(tls.key_file, Path::new("/etc/admin.key"));
        assert_eq!(tls.client_ca_file, Some(dir.path().join("ca/admin-ca.pem")));
    }
}
