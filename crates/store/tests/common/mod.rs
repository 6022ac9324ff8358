//! Shared helpers for the store's integration tests.
#![allow(dead_code, unreachable_pub)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::task::JoinHandle;
use ulid::Ulid;
use wardgate_core::health::ComponentKind;
use wardgate_core::{Bus, Clock, Encoded, Health, MessageClass, Shutdown};
use wardgate_store::{Outbox, StoreConfig, StoreError, StoreMetrics};

pub fn cfg(dir: &Path) -> StoreConfig {
    StoreConfig {
        path: dir.join("data").join("outbox.db"),
        commit_window: Duration::from_millis(1),
        ..StoreConfig::default()
    }
}

pub fn names(n: &[&str]) -> Vec<String> {
    n.iter().map(|s| (*s).to_owned()).collect()
}

/// A reading whose JSON is exactly `len` bytes (at least 2).
pub fn reading(device: &str, len: usize) -> Encoded {
    let id = Ulid::new();
    let mut json = format!("{{\"id\":\"{id}\",\"device\":\"{device}\",\"pad\":\"");
    let close = "\"}";
    while json.len() + close.len() < len {
        json.push('x');
    }
    json.push_str(close);
    Encoded {
        id,
        device: device.to_owned(),
        class: MessageClass::Vital,
        json: Bytes::from(json),
    }
}

/// A wall clock the test moves by hand.
#[derive(Debug)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    pub fn new() -> Arc<Self> {
        Arc::new(ManualClock(AtomicU64::new(1_763_759_045_000)))
    }
    pub fn advance(&self, d: Duration) {
        self.0.fetch_add(d.as_millis() as u64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.0.load(Ordering::SeqCst))
    }
}

/// An open outbox with its writer running.
pub struct Running {
    pub outbox: Outbox,
    pub bus: Bus,
    pub shutdown: Shutdown,
    pub writer: JoinHandle<Result<(), StoreError>>,
    pub health: Health,
    pub metrics: StoreMetrics,
}

impl Running {
    pub fn start(cfg: &StoreConfig, uplinks: &[String]) -> Result<Running, StoreError> {
        Running::start_with(cfg, uplinks, StoreMetrics::unregistered(), None)
    }

    pub fn start_with(
        cfg: &StoreConfig,
        uplinks: &[String],
        metrics: StoreMetrics,
        clock: Option<Arc<dyn Clock>>,
    ) -> Result<Running, StoreError> {
        let outbox = match clock {
            Some(c) => Outbox::open_with_clock(cfg, uplinks, metrics.clone(), c)?,
            None => Outbox::open(cfg, uplinks, metrics.clone())?,
        };
        let (bus, rx) = Bus::new(1024);
        let shutdown = Shutdown::new();
        let health = Health::new();
        let reporter = health.reporter("store", ComponentKind::Store);
        let writer = {
            let outbox = outbox.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move { outbox.run_writer(rx, shutdown, reporter).await })
        };
        Ok(Running {
            outbox,
            bus,
            shutdown,
            writer,
            health,
            metrics,
        })
    }

    /// Clean shutdown: drain, final commit, checkpoint, clean marker.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.writer
            .await
            .expect("writer task")
            .expect("writer closes cleanly");
    }

    /// Stops without any of the clean-shutdown work, as a crash would: the writer task is
    /// aborted and every handle dropped.
    pub async fn crash(self) {
        // In a real crash nothing writes afterwards; in-process, a commit already handed to a
        // blocking thread would still land after the "crash" unless the handle is abandoned.
        self.outbox.abandon();
        self.writer.abort();
        let _ = self.writer.await;
        drop(self.outbox);
        drop(self.bus);
    }

    pub fn store_ready(&self) -> bool {
        self.health
            .readiness()
            .checks
            .get("store")
            .is_some_and(|c| c.ready)
    }

    pub fn store_detail(&self) -> String {
        self.health
            .readiness()
            .checks
            .get("store")
            .map(|c| c.detail.clone())
            .unwrap_or_default()
    }
}
