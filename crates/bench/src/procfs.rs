//! Resource accounting from /proc: CPU time (utime+stime) and memory (VmRSS, VmHWM) of the
//! process under test, of the load generator itself and of named peers (the broker), plus the
//! machine-wide busy time so a run can tell how much CPU *other* processes took while it ran.
//! A run where other processes were busy is marked so the orchestrator can repeat it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::BenchError;

/// Kernel clock ticks per second for /proc/*/stat times (USER_HZ). Asked once from `getconf`;
/// USER_HZ is 100 on every Linux architecture we run on, which is the fallback.
pub fn clk_tck() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t: &u64| t > 0)
        .unwrap_or(100)
}

/// utime+stime of a process (all threads), in clock ticks.
pub fn cpu_ticks(pid: u32) -> Result<u64, BenchError> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).map_err(|e| BenchError::Proc {
        pid,
        detail: e.to_string(),
    })?;
    parse_stat_ticks(&text).ok_or_else(|| BenchError::Proc {
        pid,
        detail: "unexpected /proc/PID/stat format".into(),
    })
}

/// utime (field 14) + stime (field 15); the command name (field 2) may contain spaces and
/// parentheses, so fields are counted from the last `)`.
pub fn parse_stat_ticks(text: &str) -> Option<u64> {
    let after = &text[text.rfind(')')? + 1..];
    let mut fields = after.split_whitespace();
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// VmRSS and VmHWM in KiB.
pub fn memory_kb(pid: u32) -> Result<(u64, u64), BenchError> {
    let text =
        std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| BenchError::Proc {
            pid,
            detail: e.to_string(),
        })?;
    Ok(parse_status_memory(&text))
}

/// (VmRSS, VmHWM) in KiB; 0 where a field is missing (kernel threads, zombies).
pub fn parse_status_memory(text: &str) -> (u64, u64) {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Machine-wide (busy, total) ticks from the first line of /proc/stat. Busy excludes idle and
/// iowait.
pub fn system_ticks() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    parse_system_ticks(&text)
}

/// See [`system_ticks`].
pub fn parse_system_ticks(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let total: u64 = v.iter().sum();
    let idle = v.get(3)? + v.get(4)?;
    Some((total - idle, total))
}

/// Memory of the process under test over a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MemoryReport {
    /// VmRSS when sampling started, KiB.
    pub rss_start_kb: u64,
    /// VmRSS when sampling ended, KiB.
    pub rss_end_kb: u64,
    /// Largest sampled VmRSS, KiB.
    pub rss_max_kb: u64,
    /// VmHWM (the kernel's peak RSS since the process started) at the end, KiB.
    pub vm_hwm_kb: u64,
    /// Least-squares slope of the sampled RSS, KiB per minute (leak indicator for soaks).
    pub rss_slope_kb_per_min: f64,
    /// (seconds since start, VmRSS KiB) once per series interval; empty unless asked for.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rss_series: Vec<(f64, u64)>,
}

/// CPU accounting over a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CpuReport {
    /// CPU time of the process under test, ms (None without `--pid`).
    pub sut_cpu_ms: Option<f64>,
    /// SUT CPU per 1000 units of work (responses or delivered messages), ms.
    pub sut_cpu_ms_per_1k: Option<f64>,
    /// CPU time of the load generator (this process, all threads), ms.
    pub loadgen_cpu_ms: f64,
    /// CPU time of the named peers (e.g. the broker), ms, in the order given.
    pub peers_cpu_ms: Vec<f64>,
    /// Machine-wide busy CPU not used by the SUT, the load generator or the peers, in percent
    /// of one core over the run. Above ~20 % the run was disturbed.
    pub other_cpu_pct: f64,
    /// Machine-wide busy CPU, percent of one core.
    pub system_busy_pct: f64,
}

struct Snapshot {
    at: Instant,
    sut: Option<u64>,
    me: u64,
    peers: Vec<u64>,
    system: (u64, u64),
}

fn snapshot(sut: Option<u32>, peers: &[u32]) -> Snapshot {
    Snapshot {
        at: Instant::now(),
        sut: sut.and_then(|p| cpu_ticks(p).ok()),
        me: cpu_ticks(std::process::id()).unwrap_or(0),
        peers: peers.iter().map(|&p| cpu_ticks(p).unwrap_or(0)).collect(),
        system: system_ticks().unwrap_or((0, 0)),
    }
}

#[derive(Default)]
struct MemoryTrack {
    first: Option<u64>,
    last: u64,
    max: u64,
    series: Vec<(f64, u64)>,
    all: Vec<(f64, u64)>,
}

/// Samples the SUT's memory in a background thread and snapshots CPU counters at start and
/// finish. Sampling is every 100 ms; the optional series keeps one point per `series_every`.
#[derive(Debug)]
pub struct Monitor {
    sut: Option<u32>,
    peers: Vec<u32>,
    start: Snapshot,
    stop: Arc<AtomicBool>,
    sampler: Option<JoinHandle<MemoryTrack>>,
    tck: u64,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("at", &self.at)
            .finish_non_exhaustive()
    }
}

/// Most sampled points kept for the slope (one per 100 ms: 10 minutes).
const MAX_POINTS: usize = 6000;

impl Monitor {
    /// Starts monitoring. Fails if `sut` or any peer does not exist.
    pub fn start(
        sut: Option<u32>,
        peers: Vec<u32>,
        series_every: Option<Duration>,
    ) -> Result<Self, BenchError> {
        if let Some(p) = sut {
            cpu_ticks(p)?;
        }
        for &p in &peers {
            cpu_ticks(p)?;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = sut.map(|pid| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let t0 = Instant::now();
                let mut m = MemoryTrack::default();
                let mut next_series = Duration::ZERO;
                loop {
                    if let Ok((rss, _)) = memory_kb(pid) {
                        let t = t0.elapsed();
                        m.first.get_or_insert(rss);
                        m.last = rss;
                        m.max = m.max.max(rss);
                        if m.all.len() < MAX_POINTS {
                            m.all.push((t.as_secs_f64(), rss));
                        }
                        if let Some(every) = series_every
                            && t >= next_series
                        {
                            m.series.push((t.as_secs_f64(), rss));
                            next_series += every;
                        }
                    }
                    if stop.load(Ordering::Relaxed) {
                        break m;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        });
        Ok(Monitor {
            sut,
            start: snapshot(sut, &peers),
            peers,
            stop,
            sampler,
            tck: clk_tck(),
        })
    }

    /// Stops sampling; `units` is the work done (for CPU per 1k).
    pub fn finish(mut self, units: u64) -> (CpuReport, Option<MemoryReport>) {
        let end = snapshot(self.sut, &self.peers);
        self.stop.store(true, Ordering::Relaxed);
        let track = self.sampler.take().and_then(|h| h.join().ok());
        let ms = |ticks: u64| ticks as f64 * 1000.0 / self.tck as f64;
        let wall_ms = end.at.duration_since(self.start.at).as_secs_f64() * 1000.0;
        let sut_cpu_ms = match (self.start.sut, end.sut) {
            (Some(a), Some(b)) => Some(ms(b.saturating_sub(a))),
            _ => None,
        };
        let loadgen_cpu_ms = ms(end.me.saturating_sub(self.start.me));
        let peers_cpu_ms: Vec<f64> = self
            .start
            .peers
            .iter()
            .zip(&end.peers)
            .map(|(a, b)| ms(b.saturating_sub(*a)))
            .collect();
        let busy_ms = ms(end.system.0.saturating_sub(self.start.system.0));
        let accounted =
            sut_cpu_ms.unwrap_or(0.0) + loadgen_cpu_ms + peers_cpu_ms.iter().sum::<f64>();
        let pct = |x: f64| {
            if wall_ms > 0.0 {
                100.0 * x / wall_ms
            } else {
                0.0
            }
        };
        let cpu = CpuReport {
            sut_cpu_ms,
            sut_cpu_ms_per_1k: sut_cpu_ms
                .filter(|_| units > 0)
                .map(|c| c * 1000.0 / units as f64),
            loadgen_cpu_ms,
            peers_cpu_ms,
            other_cpu_pct: pct((busy_ms - accounted).max(0.0)),
            system_busy_pct: pct(busy_ms),
        };
        let mem = self.sut.map(|pid| {
            let track = track.unwrap_or_default();
            let (rss_end, hwm) = memory_kb(pid).unwrap_or((track.last, 0));
            MemoryReport {
                rss_start_kb: track.first.unwrap_or(rss_end),
                rss_end_kb: rss_end,
                rss_max_kb: track.max.max(rss_end),
                vm_hwm_kb: hwm,
                rss_slope_kb_per_min: slope(&track.all) * 60.0,
                rss_series: track.series,
            }
        });
        (cpu, mem)
    }
}

/// Least-squares slope of y over x (per unit of x); 0 with fewer than two points.
pub fn slope(points: &[(f64, u64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1 as f64).sum::<f64>() / n;
    let (mut num, mut den) = (0.0, 0.0);
    for &(x, y) in points {
        num += (x - mx) * (y as f64 - my);
        den += (x - mx) * (x - mx);
    }
    if den == 0.0 { 0.0 } else { num / den }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_times_are_read_after_a_command_name_with_spaces() {
        let line = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0 100 1000 200";
        assert_eq!(parse_stat_ticks(line), Some(325));
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn status_memory_fields_are_parsed_in_kib() {
        let text = "Name:\twardgate\nVmHWM:\t   20480 kB\nVmRSS:\t   16384 kB\n";
        assert_eq!(parse_status_memory(text), (16384, 20480));
        assert_eq!(parse_status_memory("Name:\tkthreadd\n"), (0, 0));
    }

    #[test]
    fn system_busy_time_excludes_idle_and_iowait() {
        let text = "cpu  100 5 50 1000 20 3 2 0 0 0\ncpu0 1 2 3 4 5 6 7 8\n";
        assert_eq!(parse_system_ticks(text), Some((160, 1180)));
    }

    #[test]
    fn own_process_can_be_sampled() {
        let pid = std::process::id();
        let (rss, hwm) = memory_kb(pid).expect("own status");
        assert!(rss > 0 && hwm >= rss);
        let mon =
            Monitor::start(Some(pid), vec![], Some(Duration::from_millis(50))).expect("start");
        std::thread::sleep(Duration::from_millis(250));
        let (cpu, mem) = mon.finish(1000);
        let mem = mem.expect("memory report for a sut pid");
        assert!(mem.rss_max_kb >= mem.rss_start_kb.min(mem.rss_end_kb));
        assert!(!mem.rss_series.is_empty());
        assert!(cpu.sut_cpu_ms.is_some());
    }

    #[test]
    fn slope_of_a_steady_leak_is_its_rate() {
        let pts: Vec<(f64, u64)> = (0..10)
            .map(|i| (f64::from(i), 1000 + 5 * i as u64))
            .collect();
        assert!((slope(&pts) - 5.0).abs() < 1e-9);
        assert_eq!(slope(&pts[..1]), 0.0);
    }
}
