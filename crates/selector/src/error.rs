//! The selector's errors.

use wardgate_core::validate::Problem;

/// What the selector refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// The `[selector]` section has problems (every one of them).
    #[error("invalid [selector] configuration: {}", list(.0))]
    InvalidConfig(Vec<Problem>),
    /// An outcome or probe release named an uplink the selector does not know.
    #[error("no uplink named {0:?} in the selector")]
    UnknownUplink(String),
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}
