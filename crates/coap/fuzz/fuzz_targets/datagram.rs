//! The per-socket engine (message layer, routing, block-wise, ingest) on a sequence of arbitrary
//! datagrams from a few peers, with timers run in between: never panics, dedup stays bounded.
#![no_main]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tokio::time::Instant;
use wardgate_coap::CoapMetrics;
use wardgate_coap::block::{BlockLimits, Reassembly};
use wardgate_coap::config::TransmissionConfig;
use wardgate_coap::engine::Engine;
use wardgate_coap::ingest::{IngestResource, IngestSettings};
use wardgate_coap::router::{Router, RouterSettings};
use wardgate_coap::layer::LayerConfig;
use wardgate_core::payload::Limits;
use wardgate_core::{AllowAll, Bus, IngestPipeline, MessageClass, PeerContext, SystemClock};

fuzz_target!(|data: &[u8]| {
    let metrics = CoapMetrics::default();
    let (bus, _rx) = Bus::new(4);
    let limits = BlockLimits {
        max_body_bytes: 2048,
        max_open_transfers: 4,
        max_transfers_per_source: 2,
        transfer_timeout: Duration::from_secs(60),
        preferred_szx: 6,
        busy_max_age: 5,
    };
    let pipeline = IngestPipeline::new(
        "fuzz",
        bus,
        Arc::new(SystemClock),
        Arc::new(AllowAll),
        Limits::default(),
    );
    let mut router = Router::new(
        RouterSettings {
            busy_max_age: 5,
            max_body_bytes: 2048,
            preferred_szx: 6,
            max_responses_per_source: 8,
            // Limited, so the fuzzer reaches the refusals too.
            per_source: wardgate_core::Rate { rate: 50.0, burst: 16 },
        },
        Reassembly::new(limits, metrics.clone()),
        metrics.clone(),
    );
    let (reg, ingest) = IngestResource::new(
        IngestSettings {
            ingest_path: vec!["v1".into(), "readings".into()],
            default_class: MessageClass::Vital,
            busy_max_age: 5,
            per_device: wardgate_core::Rate { rate: 5.0, burst: 4 },
        },
        pipeline,
        metrics.clone(),
    );
    router.add(reg, Box::new(ingest));
    let t0 = Instant::now();
    let mut e = Engine::new(
        t0,
        LayerConfig {
            transmission: TransmissionConfig::default(),
            piggyback_budget: Duration::from_millis(500),
            dedup_max_entries: 32,
            dedup_max_entries_per_source: 8,
        },
        1280,
        Some(router),
        metrics,
    );
    // Framing: [peer byte][advance byte][len byte][len bytes]...
    let mut now = t0;
    let mut rest = data;
    while let [peer, advance, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (d, next) = tail.split_at(n);
        now += Duration::from_millis(u64::from(*advance) * 100);
        let peer = SocketAddr::from(([127, 0, 0, 1], 5000 + u16::from(*peer % 4)));
        e.handle_datagram(now, &PeerContext::udp(peer), d);
        e.poll_timers(now);
        e.tx().clear();
        assert!(e.layer().dedup_len() <= 32);
        rest = next;
    }
});
