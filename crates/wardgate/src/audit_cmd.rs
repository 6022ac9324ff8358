//! `wardgate audit verify`: the CLI face of `wardgate_audit::verify`.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::EXIT_USAGE;

/// Verifies `files` as one chain. Exit 0 and a one-line summary when intact; exit 1 and the
/// first problem (file, line, seq) when not; exit 64 when a file or the key cannot be used.
pub(crate) fn verify(key: Option<PathBuf>, from_start: bool, files: &[PathBuf]) -> ExitCode {
    if let Some(missing) = files.iter().find(|f| !f.exists()) {
        eprintln!("{}: no such file or directory", missing.display());
        return ExitCode::from(EXIT_USAGE);
    }
    let key = match key
        .as_deref()
        .map(wardgate_audit::HmacKey::load)
        .transpose()
    {
        Ok(k) => k,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let report = wardgate_audit::verify_with(
        files,
        &wardgate_audit::VerifyOptions {
            key: key.as_ref().map(wardgate_audit::HmacKey::as_bytes),
            from_start,
        },
    );
    if report.is_intact() {
        println!("{report}");
        ExitCode::SUCCESS
    } else {
        eprintln!("{report}");
        ExitCode::FAILURE
    }
}
