//! Errors of config loading.

use std::path::PathBuf;

use wardgate_core::validate::Problem;

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// One or more problems; all of them are listed.
    #[error("{} configuration problem(s):\n{}", .0.len(), list(.0))]
    Invalid(Vec<Problem>),
}

/// One problem a line, with where it is when known:
/// `  - line 12, column 1: uplinks[1].url: ...`.
fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| match (p.line, p.column) {
            (Some(l), Some(c)) => format!("  - line {l}, column {c}: {p}"),
            (Some(l), None) => format!("  - line {l}: {p}"),
            _ => format!("  - {p}"),
        })
        .collect::<Vec<_>>()
        .join("\n")
}
