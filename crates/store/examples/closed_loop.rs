//! Closed-loop driver for profiling the store path: `inflight` submitters append readings
//! (fsync durability, no commit window) while a task per uplink acknowledges each reading as it
//! is handed out. Prints wall time and process CPU (user+sys from /proc/self/stat, 10 ms ticks)
//! per reading; run it under `valgrind --tool=callgrind` for instruction counts.
//!
//! `cargo run --release -p wardgate-store --example closed_loop -- [readings] [inflight] [uplinks]`
//! (temporary files go to `$DIR`, default /tmp).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use ulid::Ulid;
use wardgate_core::health::ComponentKind;
use wardgate_core::{Bus, Encoded, Health, MessageClass, OutboxCursor, Shutdown};
use wardgate_store::{Outbox, StoreConfig, StoreMetrics};

fn reading() -> Encoded {
    let id = Ulid::new();
    let json = format!(
        "{{\"schema\":\"wardgate.reading/1\",\"id\":\"{id}\",\"gateway\":\"ward-3a\",\"device\":\"bed-12-spo2\",\"protocol\":\"coap\",\"class\":\"vital\",\"received_at\":\"2026-11-21T21:04:05.123Z\",\"records\":[{{\"n\":\"spo2\",\"u\":\"%\",\"v\":97,\"t\":1763759045.1}},{{\"n\":\"heart_rate\",\"u\":\"beat/min\",\"v\":72,\"t\":1763759045.1}}]}}"
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

fn cpu_ticks() -> u64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap();
    let rest = &s[s.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap())
        .collect();
    let inflight = args.get(1).copied().unwrap_or(64).max(1) as usize;
    // A whole number of readings per submitter, so the uplinks know when they are done.
    let per = args.first().copied().unwrap_or(50_000) / inflight as u64;
    let n = per * inflight as u64;
    let ups = args.get(2).copied().unwrap_or(1) as usize;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir_in(std::env::var("DIR").unwrap_or("/tmp".into())).unwrap();
    let cfg = StoreConfig {
        path: dir.path().join("outbox.db"),
        commit_window: Duration::ZERO,
        ..StoreConfig::default()
    };
    let names: Vec<String> = (0..ups).map(|i| format!("up{i}")).collect();
    let outbox = Outbox::open(&cfg, &names, StoreMetrics::unregistered()).unwrap();
    let (bus, rx) = Bus::new(1024);
    let stop = Shutdown::new();
    let writer = {
        let outbox = outbox.clone();
        let stop = stop.clone();
        let h = Health::new().reporter("store", ComponentKind::Store);
        rt.spawn(async move { outbox.run_writer(rx, stop, h).await })
    };
    let t0 = Instant::now();
    let c0 = cpu_ticks();
    rt.block_on(async {
        let mut acks = Vec::new();
        for name in &names {
            let mut cur = outbox.cursor(name).unwrap();
            acks.push(tokio::spawn(async move {
                let mut got = 0u64;
                while got < n {
                    let ds = cur.next(256).await.unwrap();
                    got += ds.len() as u64;
                    let seqs: Vec<u64> = ds.iter().map(|d| d.seq).collect();
                    cur.ack(&seqs);
                }
                cur
            }));
        }
        let mut tasks = Vec::new();
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
        for a in acks {
            drop(a.await.unwrap());
        }
    });
    // Let the last acks commit.
    rt.block_on(async {
        for _ in 0..200 {
            if outbox.stats().unwrap().readings == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let wall = t0.elapsed();
    let cpu = cpu_ticks() - c0;
    let st = outbox.stats().unwrap();
    stop.cancel();
    rt.block_on(writer).unwrap().unwrap();
    println!(
        "readings={n} inflight={inflight} uplinks={ups} wall={:.3}s rate={:.0}/s cpu={}ms cpu_per_reading={:.2}us left={}",
        wall.as_secs_f64(),
        n as f64 / wall.as_secs_f64(),
        cpu * 10,
        cpu as f64 * 10_000.0 / n as f64,
        st.readings
    );
}
