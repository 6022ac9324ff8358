//! Append throughput of the outbox: fsync vs unsafe-no-fsync, with 1, 16 and 256 requests in
//! flight (one reading of ~300 bytes each), into a temporary directory. `outbox_append_and_ack`
//! is the gateway's closed loop: an uplink cursor acknowledges every reading as it arrives, so
//! each commit also deletes what the previous ones delivered.
//!
//! Each measured iteration is one acknowledged reading, so criterion's throughput line reads as
//! readings per second. Run with `cargo bench -p wardgate-store`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tokio::runtime::Runtime;
use ulid::Ulid;
use wardgate_core::health::ComponentKind;
use wardgate_core::{Bus, Encoded, Health, MessageClass, OutboxCursor, Shutdown};
use wardgate_store::{Durability, Outbox, StoreConfig, StoreError, StoreMetrics};

fn reading() -> Encoded {
    let id = Ulid::new();
    let json = format!(
        "{{\"schema\":\"wardgate.reading/1\",\"id\":\"{id}\",\"gateway\":\"ward-3a\",\"device\":\"bed-12-spo2\",\
         \"protocol\":\"coap\",\"class\":\"vital\",\"received_at\":\"2026-11-21T21:04:05.123Z\",\
         \"records\":[{{\"n\":\"spo2\",\"u\":\"%\",\"v\":97,\"t\":1763759045.1}},{{\"n\":\"heart_rate\",\
         \"u\":\"beat/min\",\"v\":72,\"t\":1763759045.1}}]}}"
    );
    Encoded {
        id,
        device: "bed-12-spo2".into(),
        class: MessageClass::Vital,
        protocol: wardgate_core::Protocol::Coap,
        json: Bytes::from(json),
        held: false,
    }
}

struct Store {
    _dir: tempfile::TempDir,
    bus: Bus,
    stop: Shutdown,
    writer: tokio::task::JoinHandle<Result<(), StoreError>>,
    acker: Option<tokio::task::JoinHandle<()>>,
}

impl Store {
    fn stop(self, rt: &Runtime) {
        self.stop.cancel();
        rt.block_on(self.writer).unwrap().unwrap();
        if let Some(acker) = self.acker {
            rt.block_on(acker).unwrap();
        }
    }
}

fn start(rt: &Runtime, durability: Durability, window: Duration, ack: bool) -> Store {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig {
        path: dir.path().join("outbox.db"),
        durability,
        commit_window: window,
        max_readings: u64::MAX / 2,
        max_bytes: u64::MAX / 2,
        ..StoreConfig::default()
    };
    let outbox = Outbox::open(&cfg, &["cloud".to_owned()], StoreMetrics::unregistered()).unwrap();
    let (bus, rx) = Bus::new(1024);
    let stop = Shutdown::new();
    let health = Health::new();
    let writer = {
        let stop = stop.clone();
        let reporter = health.reporter("store", ComponentKind::Store);
        let outbox = outbox.clone();
        rt.spawn(async move { outbox.run_writer(rx, stop, reporter).await })
    };
    let acker = ack.then(|| {
        let mut cursor = outbox.cursor("cloud").unwrap();
        rt.spawn(async move {
            // Ends with `Closed` when the writer shuts down.
            while let Ok(ds) = cursor.next(256).await {
                let seqs: Vec<u64> = ds.iter().map(|d| d.seq).collect();
                cursor.ack(&seqs);
            }
        })
    });
    Store {
        _dir: dir,
        bus,
        stop,
        writer,
        acker,
    }
}

/// Appends `n` readings with `inflight` concurrent submitters; returns the time taken.
async fn append(bus: &Bus, n: u64, inflight: usize) -> Duration {
    let per = n.div_ceil(inflight as u64);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(inflight);
    for _ in 0..inflight {
        let bus = bus.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..per {
                bus.submit(vec![reading()]).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let took = started.elapsed();
    // Scale to exactly `n` readings (the last round may have done a few more).
    took.mul_f64(n as f64 / (per * inflight as u64) as f64)
}

fn bench_append(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("outbox_append");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Elements(1));
    let modes = [
        ("fsync", Durability::Fsync, Duration::ZERO),
        (
            "fsync_window_2ms",
            Durability::Fsync,
            Duration::from_millis(2),
        ),
        ("unsafe_no_fsync", Durability::UnsafeNoFsync, Duration::ZERO),
    ];
    for (name, durability, window) in modes {
        for inflight in [1usize, 16, 256] {
            let store = start(&rt, durability, window, false);
            group.bench_with_input(
                BenchmarkId::new(name, inflight),
                &inflight,
                |b, &inflight| {
                    b.iter_custom(|iters| rt.block_on(append(&store.bus, iters, inflight)));
                },
            );
            store.stop(&rt);
        }
    }
    group.finish();
}

fn bench_append_and_ack(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("outbox_append_and_ack");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Elements(1));
    for inflight in [1usize, 16, 256] {
        let store = start(&rt, Durability::Fsync, Duration::ZERO, true);
        group.bench_with_input(
            BenchmarkId::new("fsync", inflight),
            &inflight,
            |b, &inflight| {
                b.iter_custom(|iters| rt.block_on(append(&store.bus, iters, inflight)));
            },
        );
        store.stop(&rt);
    }
    group.finish();
}

criterion_group!(benches, bench_append, bench_append_and_ack);
criterion_main!(benches);
