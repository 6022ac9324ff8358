//! `sample`: CPU and memory of an idle (or otherwise loaded) process over a period, for the idle
//! footprint scenario.

use std::time::Duration;

use serde::Serialize;

use crate::error::BenchError;
use crate::procfs::{CpuReport, MemoryReport, Monitor};

/// Arguments of `sample`.
#[derive(Debug, Clone, clap::Args)]
pub struct SampleArgs {
    /// Process to sample.
    #[arg(long)]
    pub pid: u32,
    /// Sampling period, seconds (at most 600).
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Free-form label copied into the report.
    #[arg(long, default_value = "")]
    pub label: String,
}

/// The JSON object printed.
#[derive(Debug, Clone, Serialize)]
pub struct SampleReport {
    /// Always `sample`.
    pub tool: &'static str,
    /// `--label`.
    pub label: String,
    /// Seconds sampled.
    pub duration_s: f64,
    /// CPU over the period.
    pub cpu: CpuReport,
    /// Memory over the period.
    pub sut_memory: Option<MemoryReport>,
}

/// Samples `pid` for the period.
pub fn run(args: &SampleArgs) -> Result<SampleReport, BenchError> {
    if !(args.duration > 0.0 && args.duration <= 600.0) {
        return Err(BenchError::InvalidArgs(
            "--duration must be in (0, 600] seconds".into(),
        ));
    }
    let mon = Monitor::start(Some(args.pid), vec![], None)?;
    std::thread::sleep(Duration::from_secs_f64(args.duration));
    let (cpu, sut_memory) = mon.finish(0);
    Ok(SampleReport {
        tool: "sample",
        label: args.label.clone(),
        duration_s: args.duration,
        cpu,
        sut_memory,
    })
}
