//! Hot-path micro-benchmarks: the per-reading work between a CoAP datagram and the outbox.
//!
//! `cargo bench -p wardgate-bench --bench hot_path` (add `-- --quick` for a fast pass). Inputs are
//! the same vital-signs packs the load generator sends, so these numbers add up to the CPU per
//! reading that `bench/run.sh` measures on the whole process.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use coap_lite::{MessageClass, MessageType, Packet, ResponseType};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use wardgate_bench::coap_msg::{MsgType, RequestTemplate};
use wardgate_bench::payload::{self, Format};
use wardgate_core::health::ComponentKind;
use wardgate_core::payload::{ContentFormat, DecodeContext, Limits};
use wardgate_core::{
    Bus, Health, MessageClass as Class, OutboxCursor, Protocol, Reading, Shutdown,
};
use wardgate_store::{Durability, Outbox, StoreConfig, StoreMetrics};

const BASE_TIME: f64 = 1_763_759_045.125;

fn pack(format: Format) -> Vec<u8> {
    let mut out = Vec::new();
    payload::encode(format, &mut out, "urn:dev:bed-12:", BASE_TIME, 123_456);
    out
}

fn ctx() -> DecodeContext<'static> {
    DecodeContext {
        now: SystemTime::now(),
        default_name: None,
        limits: Limits::default(),
    }
}

fn coap(c: &mut Criterion) {
    let tpl = RequestTemplate::new(MsgType::Con, "v1/readings/bed-12-spo2", 110);
    let mut req = Vec::new();
    tpl.write(&mut req, 0x1234, 0xDEAD_BEEF, &pack(Format::SenmlJson));
    let mut g = c.benchmark_group("coap");
    g.throughput(Throughput::Elements(1));
    g.bench_function("request_decode_and_ack_encode", |b| {
        b.iter(|| {
            let p = Packet::from_bytes(black_box(&req)).unwrap();
            let mut ack = Packet::new();
            ack.header.set_type(MessageType::Acknowledgement);
            ack.header.message_id = p.header.message_id;
            ack.header.code = MessageClass::Response(ResponseType::Created);
            ack.set_token(p.get_token().to_vec());
            black_box((p.payload.len(), ack.to_bytes().unwrap()))
        })
    });
    g.finish();
}

fn senml(c: &mut Criterion) {
    let json = pack(Format::SenmlJson);
    let cbor = pack(Format::SenmlCbor);
    let mut g = c.benchmark_group("senml_decode");
    g.throughput(Throughput::Elements(1));
    g.bench_function("json", |b| {
        b.iter(|| wardgate_core::senml::decode_json(black_box(&json), &ctx()).unwrap())
    });
    g.bench_function("cbor", |b| {
        b.iter(|| wardgate_core::senml::decode_cbor(black_box(&cbor), &ctx()).unwrap())
    });
    g.bench_function("payload_decode_json", |b| {
        b.iter(|| {
            wardgate_core::payload::decode(ContentFormat::SenmlJson, black_box(&json), &ctx())
                .unwrap()
        })
    });
    g.finish();
}

fn reading(c: &mut Criterion) {
    let records = wardgate_core::senml::decode_json(&pack(Format::SenmlJson), &ctx()).unwrap();
    let mut g = c.benchmark_group("reading");
    g.throughput(Throughput::Elements(1));
    g.bench_function("new_and_encode", |b| {
        b.iter_batched(
            || records.clone(),
            |records| {
                Reading::new(
                    "ward-3a",
                    "bed-12-spo2",
                    Protocol::Coap,
                    Class::Vital,
                    SystemTime::now(),
                    records,
                )
                .encode()
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn outbox(c: &mut Criterion) {
    outbox_group(c, "outbox_append", false);
}

/// The closed loop the gateway runs: each reading is appended, then delivered to and
/// acknowledged by an uplink (which deletes it), so the store stays small.
fn outbox_ack(c: &mut Criterion) {
    outbox_group(c, "outbox_append_and_ack", true);
}

fn outbox_group(c: &mut Criterion, group: &str, ack: bool) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let records = wardgate_core::senml::decode_json(&pack(Format::SenmlJson), &ctx()).unwrap();
    let encoded = Reading::new(
        "ward-3a",
        "bed-12-spo2",
        Protocol::Coap,
        Class::Vital,
        SystemTime::now(),
        records,
    )
    .encode();
    let mut g = c.benchmark_group(group);
    g.measurement_time(Duration::from_secs(3));
    for (name, durability, concurrent) in [
        ("fsync_1", Durability::Fsync, 1u64),
        ("fsync_64_concurrent", Durability::Fsync, 64),
        ("no_fsync_1", Durability::UnsafeNoFsync, 1),
        ("no_fsync_64_concurrent", Durability::UnsafeNoFsync, 64),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = StoreConfig {
            path: dir.path().join("outbox.db"),
            durability,
            commit_window: Duration::ZERO,
            ..StoreConfig::default()
        };
        let mut registry = prometheus_client::registry::Registry::default();
        let outbox = Outbox::open(
            &cfg,
            &["bench".to_owned()],
            StoreMetrics::register(&mut registry),
        )
        .unwrap();
        let (bus, rx) = Bus::new(1024);
        let stop = Shutdown::new();
        let writer = {
            let outbox = outbox.clone();
            let stop = stop.clone();
            let health = Health::new().reporter("store", ComponentKind::Store);
            rt.spawn(async move { outbox.run_writer(rx, stop, health).await })
        };
        let acker = ack.then(|| {
            let mut cursor = outbox.cursor("bench").unwrap();
            rt.spawn(async move {
                // Ends with `Closed` when the writer shuts down.
                while let Ok(ds) = cursor.next(256).await {
                    let seqs: Vec<u64> = ds.iter().map(|d| d.seq).collect();
                    cursor.ack(&seqs);
                }
            })
        });
        g.throughput(Throughput::Elements(concurrent));
        g.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(async {
                    let pending: Vec<_> = (0..concurrent)
                        .map(|_| {
                            let mut e = encoded.clone();
                            e.id = ulid::Ulid::new();
                            bus.enqueue(vec![e]).unwrap()
                        })
                        .collect();
                    for p in pending {
                        p.await.unwrap().unwrap();
                    }
                })
            })
        });
        stop.cancel();
        let _ = rt.block_on(writer);
        if let Some(acker) = acker {
            let _ = rt.block_on(acker);
        }
    }
    g.finish();
}

criterion_group!(benches, coap, senml, reading, outbox, outbox_ack);
criterion_main!(benches);
