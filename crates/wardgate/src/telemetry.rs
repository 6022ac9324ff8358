//! Logging set-up. Logs go to stderr so stdout stays clean for the stdout uplink.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use wardgate_config::{LogConfig, LogFormat};

/// Installs the global `tracing` subscriber (the one process-wide global we accept: it is how
/// `tracing` works, and nothing reads it back).
pub(crate) fn init(cfg: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cfg.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match cfg.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
