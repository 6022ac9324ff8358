//! `[audit]`: the security audit trail (`wardgate-audit`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use wardgate_audit::{AuditOptions, DEFAULT_QUEUE_CAPACITY, DEFAULT_ROTATE_BYTES};
use wardgate_core::validate::Problems;

/// Most events that may wait for the audit writer (each queued one is held in memory).
const MAX_QUEUE_CAPACITY: usize = 1 << 24;
/// Smallest non-zero `rotate_bytes`: one record may be up to 64 KiB.
const MIN_ROTATE_BYTES: u64 = 64 * 1024;

/// Audit trail settings. Without `path` there is no audit trail, which `wardgate run` warns
/// about at start-up.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// The active audit file (JSON lines, hash-chained). Its directory is created if missing;
    /// rotated files are its siblings, `<name>.<first-seq>-<last-seq>`. Unset: audit off.
    pub path: Option<PathBuf>,
    /// Rotate once the active file holds this many bytes (default 64 MiB). 0 never rotates.
    pub rotate_bytes: u64,
    /// Rotated files kept; the oldest beyond this are deleted. 0 (the default) keeps all.
    pub keep_files: usize,
    /// A file of at least 32 random bytes (raw, or hex): each record is then signed with
    /// HMAC-SHA256, so a rewritten file no longer verifies with `wardgate audit verify --key`.
    /// Keep it readable by the gateway only (a warning is logged otherwise).
    pub hmac_key_file: Option<PathBuf>,
    /// Events waiting for the audit writer (default 65536). When full, events are dropped,
    /// counted in `wardgate_audit_dropped_total` and marked in the file (`dropped_before`).
    pub queue_capacity: usize,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            path: None,
            rotate_bytes: DEFAULT_ROTATE_BYTES,
            keep_files: 0,
            hmac_key_file: None,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
        }
    }
}

impl AuditConfig {
    /// Adds every problem in this section to `p`; `at` is the section's path.
    pub fn validate(&self, at: &str, p: &mut Problems) {
        if self
            .path
            .as_ref()
            .is_some_and(|f| f.as_os_str().is_empty() || f.file_name().is_none())
        {
            p.push(format!("{at}.path"), "must name a file");
        }
        if self.rotate_bytes != 0 && self.rotate_bytes < MIN_ROTATE_BYTES {
            p.push(
                format!("{at}.rotate_bytes"),
                format!("must be 0 (never rotate) or at least {MIN_ROTATE_BYTES}"),
            );
        }
        if self.queue_capacity == 0 || self.queue_capacity > MAX_QUEUE_CAPACITY {
            p.push(
                format!("{at}.queue_capacity"),
                format!("must be 1-{MAX_QUEUE_CAPACITY} (queued events are held in memory)"),
            );
        }
        match &self.hmac_key_file {
            Some(k) if k.as_os_str().is_empty() => {
                p.push(format!("{at}.hmac_key_file"), "must not be empty");
            }
            Some(_) if self.path.is_none() => {
                p.push(
                    format!("{at}.hmac_key_file"),
                    "has no effect without audit.path (the audit trail is off)",
                );
            }
            _ => {}
        }
    }

    /// What `wardgate_audit::AuditLog::open` needs, or `None` when the audit trail is off.
    pub fn options(&self) -> Option<AuditOptions> {
        let path = self.path.clone()?;
        Some(AuditOptions {
            path,
            rotate_bytes: self.rotate_bytes,
            keep_files: self.keep_files,
            hmac_key_file: self.hmac_key_file.clone(),
            queue_capacity: self.queue_capacity,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::{ConfigError, parse};

    fn no_env(_: &str) -> Option<String> {
        None
    }

    const UPLINK: &str = "[[uplinks]]\ntype = \"file\"\nname = \"out\"\npath = \"-\"\n";

    #[test]
    fn audit_is_off_unless_a_path_is_given() {
        let cfg = parse(UPLINK, &no_env).unwrap();
        assert_eq!(cfg.audit.path, None);
        assert!(cfg.audit.options().is_none());
    }

    #[test]
    fn an_audit_section_maps_onto_the_log_options() {
        let text = format!(
            "[audit]\npath = \"/var/lib/wardgate/audit.log\"\nrotate_bytes = 1048576\nkeep_files = 30\nhmac_key_file = \"/etc/wardgate/audit.key\"\nqueue_capacity = 1024\n{UPLINK}"
        );
        let opts = parse(&text, &no_env).unwrap().audit.options().unwrap();
        assert_eq!(opts.path.to_str(), Some("/var/lib/wardgate/audit.log"));
        assert_eq!(
            (opts.rotate_bytes, opts.keep_files, opts.queue_capacity),
            (1_048_576, 30, 1024)
        );
        assert_eq!(
            opts.hmac_key_file.as_deref().and_then(|p| p.to_str()),
            Some("/etc/wardgate/audit.key")
        );
    }

    #[test]
    fn every_bad_audit_setting_is_reported_at_once() {
        let text = format!(
            "[audit]\npath = \"\"\nrotate_bytes = 100\nqueue_capacity = 0\nhmac_key_file = \"\"\n{UPLINK}"
        );
        let Err(ConfigError::Invalid(problems)) = parse(&text, &no_env) else {
            panic!("expected problems");
        };
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "audit.path",
                "audit.rotate_bytes",
                "audit.queue_capacity",
                "audit.hmac_key_file"
            ],
            "{problems:?}"
        );
    }

    #[test]
    fn a_key_without_an_audit_file_is_refused_and_unknown_fields_too() {
        let text = format!("[audit]\nhmac_key_file = \"/k\"\nrotate = 1\n{UPLINK}");
        let Err(ConfigError::Invalid(problems)) = parse(&text, &no_env) else {
            panic!("expected problems");
        };
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].message.contains("rotate"), "{problems:?}");
        let text = format!("[audit]\nhmac_key_file = \"/k\"\n{UPLINK}");
        let Err(ConfigError::Invalid(problems)) = parse(&text, &no_env) else {
            panic!("expected problems");
        };
        assert_eq!(problems[0].path, "audit.hmac_key_file");
    }
}
