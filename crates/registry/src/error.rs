//! Errors of loading and editing the registry. None of them carries key or token material:
//! problems name the field and what is wrong with it, never the value.

use std::path::PathBuf;

use wardgate_core::validate::Problem;

/// Why the registry could not be loaded, reloaded or edited. On any of these the registry in
/// memory (and on disk, for edits) is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The registry file.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// The registry (as read, or as an edit would leave it) is invalid; every problem is listed.
    #[error("{} device registry problem(s) in {}:\n{}", problems.len(), path.display(), list(problems))]
    Invalid {
        /// The registry file.
        path: PathBuf,
        /// Every problem found, in file order.
        problems: Vec<Problem>,
    },
    /// The edited registry could not be written durably; nothing changed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file (or temporary file, or directory) that failed.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// The registry could not be turned into TOML (a bug: every field is a plain string).
    #[error("cannot serialize the device registry: {0}")]
    Serialize(String),
    /// No device has this id.
    #[error("no device {0:?} in the registry")]
    NotFound(String),
}

impl RegistryError {
    /// The problems, when the error is a validation failure.
    pub fn problems(&self) -> &[Problem] {
        match self {
            RegistryError::Invalid { problems, .. } => problems,
            _ => &[],
        }
    }
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}
