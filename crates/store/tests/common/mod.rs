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
use wardgate_core::{
    Bus, Clock, Delivery, Encoded, Health, MessageClass, RouteInput, Router, Shutdown, UplinkSet,
};
use wardgate_store::{Cursor, OpenOptions, Outbox, StoreConfig, StoreError, StoreMetrics};

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
        protocol: wardgate_core::Protocol::Coap,
        json: Bytes::from(json),
        held: false,
    }
}

/// The property tests' settings: `default_cases` cases unless `PROPTEST_CASES` says otherwise
/// (e.g. 2000 for a longer soak); failures persisted to `file` (integration tests have no
/// lib.rs beside them, so the file is named explicitly).
pub fn proptest_config(file: &'static str, default_cases: u32) -> proptest::test_runner::Config {
    proptest::test_runner::Config {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default_cases),
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct(file),
        )),
        ..proptest::test_runner::Config::default()
    }
}

/// Runs `f` on a fresh two-worker runtime (for tests that are not `#[tokio::test]`).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
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

/// Routes by a prefix of the device id, `"{route}/{name}"`:
/// - `route` lists uplink indices in preference order (`"0"`, `"1"`, `"01"`): the reading is
///   owed to all of them; released by one, it goes to the others listed, else (failover) to
///   every uplink not excluded;
/// - a trailing `!` pins it: no failover (a release with nobody else listed stays put);
/// - `-` routes to nobody (the store then owes it to every uplink).
///
/// A device without a `/` is owed to every uplink.
#[derive(Debug, Default)]
pub struct PrefixRouter;

impl PrefixRouter {
    /// The route of `device` as a pure function, for models to replay.
    pub fn decide(device: &str, uplinks: usize, excluded: UplinkSet) -> UplinkSet {
        let all = UplinkSet::first(uplinks).difference(excluded);
        let Some((route, _)) = device.split_once('/') else {
            return all;
        };
        if route == "-" {
            return UplinkSet::EMPTY;
        }
        let pinned = route.ends_with('!');
        let listed: UplinkSet = route
            .chars()
            .filter_map(|c| c.to_digit(10))
            .map(|d| d as usize)
            .collect();
        let set = listed.difference(excluded);
        if set.is_empty() && !pinned { all } else { set }
    }

    pub fn options() -> OpenOptions {
        OpenOptions {
            router: Arc::new(PrefixRouter),
            ..OpenOptions::default()
        }
    }
}

impl Router for PrefixRouter {
    fn route(&self, r: &RouteInput<'_>) -> UplinkSet {
        PrefixRouter::decide(r.device, r.uplinks.len(), r.excluded)
    }
}

/// Readings in the file owed to no uplink at all (must always be 0), read with a connection of
/// its own, as a field engineer's `sqlite3` would.
pub fn owed_to_nobody(db: &Path) -> i64 {
    let c = rusqlite::Connection::open(db).expect("open the store file");
    c.query_row(
        "SELECT count(*) FROM readings WHERE pending = 0 \
         OR (pending & (SELECT COALESCE(SUM(1 << bit), 0) FROM uplinks)) = 0",
        [],
        |r| r.get(0),
    )
    .expect("count readings owed to nobody")
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
        Ok(Running::writing(outbox, metrics))
    }

    /// Opened with `opts` (a router), unregistered metrics.
    pub fn start_opts(
        cfg: &StoreConfig,
        uplinks: &[String],
        opts: OpenOptions,
    ) -> Result<Running, StoreError> {
        let metrics = StoreMetrics::unregistered();
        let outbox = Outbox::open_with(cfg, uplinks, metrics.clone(), opts)?;
        Ok(Running::writing(outbox, metrics))
    }

    fn writing(outbox: Outbox, metrics: StoreMetrics) -> Running {
        let (bus, rx) = Bus::new(1024);
        let shutdown = Shutdown::new();
        let health = Health::new();
        let reporter = health.reporter("store", ComponentKind::Store);
        let writer = {
            let outbox = outbox.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move { outbox.run_writer(rx, shutdown, reporter).await })
        };
        Running {
            outbox,
            bus,
            shutdown,
            writer,
            health,
            metrics,
        }
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

/// The seqs of `ds`, in order.
pub fn seqs(ds: &[Delivery]) -> Vec<u64> {
    ds.iter().map(|d| d.seq).collect()
}

/// Everything the cursor hands out now, without waiting.
pub async fn drain(c: &mut Cursor) -> Vec<Delivery> {
    let mut all = Vec::new();
    loop {
        let got = c.try_next(100).await.unwrap();
        if got.is_empty() {
            return all;
        }
        all.extend(got);
    }
}

/// Alarms go to every uplink; everything else to uplink 0, failing over to the others.
#[derive(Debug)]
pub struct AlarmsEverywhere;

impl Router for AlarmsEverywhere {
    fn route(&self, r: &RouteInput<'_>) -> UplinkSet {
        let all = UplinkSet::first(r.uplinks.len()).difference(r.excluded);
        if r.class == MessageClass::Alarm || r.excluded.contains(0) {
            all
        } else {
            UplinkSet::single(0)
        }
    }
}
