//! Many simulated clients at once (the demo's ward, the registration benchmark).
//!
//! Each client holds one UDP socket, so `N` clients need `N` file descriptors on top of what
//! the process already uses: raise `ulimit -n` to at least `N + 256` before a 10,000-client run
//! ([`run_many`] checks this on Linux and refuses early rather than failing half-way).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::{SimClient, SimConfig, SimError};

/// File descriptors kept free for the rest of the process.
const FD_HEADROOM: u64 = 256;

/// Clients started by [`run_many`].
#[derive(Debug)]
pub struct Ward {
    /// The clients that registered, in no particular order.
    pub clients: Vec<SimClient>,
    /// The ones that did not: their index and why.
    pub failures: Vec<(usize, SimError)>,
    /// From the first start to the last registration.
    pub elapsed: Duration,
}

/// Starts `count` clients, configured by `config(i)`, each on its own socket, and registers
/// them with `server`, at most `concurrency` registrations in flight at a time.
pub async fn run_many(
    server: SocketAddr,
    count: usize,
    concurrency: usize,
    config: impl Fn(usize) -> SimConfig,
) -> Result<Ward, SimError> {
    let needed = u64::try_from(count).unwrap_or(u64::MAX) + FD_HEADROOM;
    if let Some(limit) = open_files_limit() {
        if limit < needed {
            return Err(SimError::FileLimit { needed, limit });
        }
    }
    let started = Instant::now();
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut set = JoinSet::new();
    for i in 0..count {
        let cfg = config(i);
        let permits = permits.clone();
        set.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let r = async {
                let c = SimClient::start(cfg, server).await?;
                c.register().await?;
                Ok::<_, SimError>(c)
            }
            .await;
            (i, r)
        });
    }
    let mut ward = Ward {
        clients: Vec::with_capacity(count),
        failures: Vec::new(),
        elapsed: Duration::ZERO,
    };
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((_, Ok(c))) => ward.clients.push(c),
            Ok((i, Err(e))) => ward.failures.push((i, e)),
            Err(e) => tracing::warn!(error = %e, "a simulated client task failed"),
        }
    }
    ward.elapsed = started.elapsed();
    Ok(ward)
}

impl Ward {
    /// De-registers every client, `concurrency` at a time; returns how many failed.
    pub async fn deregister_all(&self, concurrency: usize) -> usize {
        let permits = Arc::new(Semaphore::new(concurrency.max(1)));
        let mut set = JoinSet::new();
        for c in &self.clients {
            let c = c.clone();
            let permits = permits.clone();
            set.spawn(async move {
                let _permit = permits.acquire_owned().await;
                c.deregister().await.is_ok()
            });
        }
        let mut failed = 0;
        while let Some(r) = set.join_next().await {
            if !matches!(r, Ok(true)) {
                failed += 1;
            }
        }
        failed
    }
}

/// The soft limit on open files of this process (Linux: `/proc/self/limits`), if known.
pub fn open_files_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line.split_whitespace().nth(3)?;
    if soft == "unlimited" {
        return Some(u64::MAX);
    }
    soft.parse().ok()
}
