//! The `wardgate simulate` command: live progress on the terminal (an `indicatif` line, or a
//! plain line every 10 s when stderr is not a terminal) and a summary on stdout at the end.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use wardgate_core::Shutdown;

use super::{Plan, Proto, Stats};

/// Runs `plan` with progress; exits 0 when the gateway accepted readings, 1 when it accepted
/// none (unreachable, or refusing every device).
pub(crate) fn main(plan: Plan, quiet: bool) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("wardgate-sim")
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stats = Arc::new(Stats::default());
    let started = Instant::now();
    runtime.block_on(async {
        let stop = Shutdown::new();
        let sim = tokio::spawn(super::run(plan.clone(), stats.clone(), stop.clone()));
        let bar = if quiet {
            ProgressBar::hidden()
        } else {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar
        };
        let plain = !quiet && bar.is_hidden();
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut last = (Instant::now(), 0u64);
        let mut rate = 0.0;
        let mut printed = Instant::now();
        let mut sim = sim;
        loop {
            tokio::select! {
                _ = &mut sim => break,
                r = tokio::signal::ctrl_c() => {
                    if r.is_ok() {
                        bar.println("stopping: LwM2M clients de-register, answers in flight are awaited");
                    }
                    stop.cancel();
                }
                _ = tick.tick() => {
                    let sent = stats.sent();
                    let dt = last.0.elapsed().as_secs_f64();
                    if dt >= 1.0 {
                        rate = (sent - last.1) as f64 / dt;
                        last = (Instant::now(), sent);
                    }
                    let line = status_line(&plan, &stats, rate);
                    bar.set_message(line.clone());
                    bar.tick();
                    if plain && printed.elapsed() >= Duration::from_secs(10) {
                        eprintln!("[{:>4} s] {line}", started.elapsed().as_secs());
                        printed = Instant::now();
                    }
                }
            }
        }
        bar.finish_and_clear();
    });
    print!("{}", summary(&plan, &stats, started.elapsed()));
    if stats.accepted() == 0 {
        eprintln!(
            "wardgate simulate: the gateway accepted no reading (is it running, and are these \
             endpoints the ones it listens on?)"
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn status_line(plan: &Plan, s: &Stats, rate: f64) -> String {
    let mut line = format!(
        "{} beds · {rate:.0} readings/s · accepted {} · refused {} · failed {} · alarms {} · dropouts {}",
        plan.beds,
        s.accepted(),
        s.refused(),
        s.failed(),
        s.alarms.load(Ordering::Relaxed),
        s.dropouts.load(Ordering::Relaxed),
    );
    if plan.attack_from.is_some() {
        let _ = write!(
            line,
            " · attack packets {}",
            s.attack_sent.load(Ordering::Relaxed)
        );
    }
    line
}

/// The end-of-run table.
pub(crate) fn summary(plan: &Plan, s: &Stats, elapsed: Duration) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "simulated ward: {} beds for {:.1} s",
        plan.beds,
        elapsed.as_secs_f64()
    );
    let _ = writeln!(
        o,
        "  {:<8} {:>10} {:>10} {:>10} {:>10}",
        "protocol", "sent", "accepted", "refused", "failed"
    );
    for p in Proto::ALL {
        let c = s.of(p);
        let sent = c.sent.load(Ordering::Relaxed);
        if sent == 0 && c.failed.load(Ordering::Relaxed) == 0 {
            continue;
        }
        let _ = writeln!(
            o,
            "  {:<8} {:>10} {:>10} {:>10} {:>10}",
            p.name(),
            sent,
            c.accepted.load(Ordering::Relaxed),
            c.refused.load(Ordering::Relaxed),
            c.failed.load(Ordering::Relaxed),
        );
    }
    let _ = writeln!(
        o,
        "  {:<8} {:>10} {:>10} {:>10} {:>10}",
        "total",
        s.sent(),
        s.accepted(),
        s.refused(),
        s.failed()
    );
    let _ = writeln!(
        o,
        "alarms sent: {}; sensor dropouts: {}",
        s.alarms.load(Ordering::Relaxed),
        s.dropouts.load(Ordering::Relaxed)
    );
    if s.of(Proto::Mqtt).sent.load(Ordering::Relaxed) > 0 {
        let _ = writeln!(
            o,
            "(MQTT \"accepted\" is the broker's PUBACK; the gateway acknowledges to its broker once durable)"
        );
    }
    if let Some(from) = plan.attack_from {
        let _ = writeln!(
            o,
            "attack from {from}: {} packets sent, {} answered",
            s.attack_sent.load(Ordering::Relaxed),
            s.attack_answered.load(Ordering::Relaxed)
        );
    }
    o
}
