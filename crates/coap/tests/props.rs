//! Property tests: the datagram entry point never panics, the dedup table matches a reference
//! model and stays bounded, the freshness rule matches RFC 7641 §3.4, the codec round-trips and
//! agrees with an independent decoder (coap-lite).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use proptest::collection::vec;
use proptest::prelude::*;
use tokio::time::Instant;
use wardgate_coap::CoapMetrics;
use wardgate_coap::block::{BlockLimits, Reassembly};
use wardgate_coap::codec::{Code, Encoder, Message, MsgType, Token};
use wardgate_coap::config::TransmissionConfig;
use wardgate_coap::dedup::{DedupKey, DedupTable, Seen};
use wardgate_coap::engine::Engine;
use wardgate_coap::ingest::{IngestResource, IngestSettings};
use wardgate_coap::layer::LayerConfig;
use wardgate_coap::observe::is_fresh;
use wardgate_coap::router::{Router, RouterSettings};
use wardgate_core::payload::Limits;
use wardgate_core::{
    AllowAll, Bus, BusReceiver, IngestPipeline, MessageClass, PeerContext, SystemClock,
};

fn engine(now: Instant, dedup_max: usize) -> (Engine, BusReceiver) {
    let metrics = CoapMetrics::default();
    let (bus, rx) = Bus::new(4);
    let pipeline = IngestPipeline::new(
        "g",
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
            per_source: wardgate_core::Rate {
                rate: 0.0,
                burst: 1,
            },
        },
        Reassembly::new(
            BlockLimits {
                max_body_bytes: 2048,
                max_open_transfers: 4,
                max_transfers_per_source: 4,
                transfer_timeout: Duration::from_secs(60),
                preferred_szx: 6,
                busy_max_age: 5,
            },
            metrics.clone(),
        ),
        metrics.clone(),
    );
    let (reg, ingest) = IngestResource::new(
        IngestSettings {
            ingest_path: vec!["v1".into(), "readings".into()],
            default_class: MessageClass::Vital,
            busy_max_age: 5,
            per_device: wardgate_core::Rate {
                rate: 0.0,
                burst: 1,
            },
        },
        pipeline,
        metrics.clone(),
    );
    router.add(reg, Box::new(ingest));
    let e = Engine::new(
        now,
        LayerConfig {
            transmission: TransmissionConfig::default(),
            piggyback_budget: Duration::from_millis(500),
            dedup_max_entries: dedup_max,
            dedup_max_entries_per_source: dedup_max,
        },
        1280,
        Some(router),
        metrics,
    );
    (e, rx)
}

/// A syntactically plausible message: valid header, arbitrary options and payload, so the
/// fuzzing reaches routing, block-wise and ingest, not just the parser.
fn plausible() -> impl Strategy<Value = Vec<u8>> {
    (
        0u8..4,
        prop_oneof![Just(0u8), Just(1), Just(2), Just(3), Just(5), any::<u8>()],
        any::<u16>(),
        vec(any::<u8>(), 0..=8),
        vec(
            (
                prop_oneof![
                    Just(11u16),
                    Just(12),
                    Just(15),
                    Just(23),
                    Just(27),
                    Just(60),
                    Just(6),
                    Just(17),
                    Just(35),
                    0u16..300
                ],
                prop_oneof![
                    Just(b"v1".to_vec()),
                    Just(b"readings".to_vec()),
                    Just(b"bed-1".to_vec()),
                    Just(vec![110]),
                    Just(b"class=alarm".to_vec()),
                    vec(any::<u8>(), 0..5),
                ],
            ),
            0..8,
        ),
        vec(any::<u8>(), 0..64),
    )
        .prop_map(|(t, code, mid, token, mut opts, payload)| {
            opts.sort_by_key(|(n, _)| *n);
            let mut buf = Vec::new();
            let mtype = [MsgType::Con, MsgType::Non, MsgType::Ack, MsgType::Rst][usize::from(t)];
            let tok = Token::new(&token).unwrap_or_default();
            let mut e = Encoder::new(&mut buf, mtype, Code(code), mid, tok);
            for (n, v) in &opts {
                let _ = e.option(*n, v);
            }
            e.payload(&payload);
            buf
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_datagrams_never_panic_the_engine(
        datagrams in vec(
            (prop_oneof![vec(any::<u8>(), 0..1400), plausible()], 0u64..5_000, 0u8..3),
            1..40,
        )
    ) {
        let t0 = Instant::now();
        let (mut e, _rx) = engine(t0, 16);
        let mut now = t0;
        for (d, advance_ms, peer) in datagrams {
            now += Duration::from_millis(advance_ms);
            let peer = SocketAddr::from(([127, 0, 0, 1], 6000 + u16::from(peer)));
            e.handle_datagram(now, &PeerContext::udp(peer), &d);
            e.poll_timers(now);
            e.tx().clear();
            prop_assert!(e.layer().dedup_len() <= 16);
        }
    }

    #[test]
    fn dedup_table_matches_a_reference_model_and_never_exceeds_its_bound(
        max in 1usize..12,
        ops in vec((0u8..4, 0u16..6, any::<bool>(), 1u64..60_000), 1..400),
    ) {
        let con_life = Duration::from_secs(247);
        let non_life = Duration::from_secs(145);
        let t0 = Instant::now();
        let mut table = DedupTable::new(t0, max, con_life, non_life);
        // Reference: entries in arrival order (arrivals strictly increase).
        let mut model: Vec<((u8, u16), u64, bool)> = Vec::new();
        let mut now_ms = 0u64;
        let mut evictions = 0u64;
        for (peer, mid, con, advance) in ops {
            now_ms += advance;
            let life = |c: bool| if c { con_life } else { non_life }.as_millis() as u64;
            model.retain(|(_, at, c)| at + life(*c) > now_ms);
            let model_dup = model.iter().any(|(k, _, _)| *k == (peer, mid));
            if !model_dup {
                if model.len() >= max {
                    model.remove(0);
                    evictions += 1;
                }
                model.push(((peer, mid), now_ms, con));
            }
            let key = DedupKey::new(SocketAddr::from(([10, 0, 0, peer], 5683)), mid);
            let seen = table.observe(t0 + Duration::from_millis(now_ms), key, con);
            prop_assert_eq!(matches!(seen, Seen::Duplicate(_)), model_dup);
            prop_assert!(table.len() <= max);
            prop_assert_eq!(table.len(), model.len());
        }
        prop_assert_eq!(table.stats().evictions, evictions);
    }

    #[test]
    fn freshness_matches_rfc7641_section_3_4(
        v1 in 0u32..(1 << 24),
        v2 in 0u32..(1 << 24),
        dt_ms in 0u64..300_000,
    ) {
        let t1 = Instant::now();
        let t2 = t1 + Duration::from_millis(dt_ms);
        // The RFC's formula, literally, in wide signed arithmetic.
        let (a, b) = (i64::from(v1), i64::from(v2));
        let p23 = 1i64 << 23;
        let reference = (a < b && b - a < p23)
            || (a > b && a - b > p23)
            || t2 > t1 + Duration::from_secs(128);
        prop_assert_eq!(is_fresh(v1, t1, v2, t2), reference);
    }

    #[test]
    fn codec_round_trips_and_agrees_with_coap_lite(
        t in 0u8..2,
        code in prop_oneof![Just(Code::GET), Just(Code::POST), Just(Code::CONTENT), Just(Code::CREATED)],
        mid in any::<u16>(),
        token in vec(any::<u8>(), 0..=8),
        mut opts in vec((1u16..2000, vec(any::<u8>(), 0..300)), 0..10),
        payload in vec(any::<u8>(), 0..200),
    ) {
        opts.sort_by_key(|(n, _)| *n);
        let mtype = if t == 0 { MsgType::Con } else { MsgType::Non };
        let mut buf = Vec::new();
        let mut e = Encoder::new(&mut buf, mtype, code, mid, Token::new(&token).expect("<= 8"));
        for (n, v) in &opts {
            e.option(*n, v).expect("ascending");
        }
        e.payload(&payload);
        let m = Message::parse(&buf).expect("own encoding parses");
        prop_assert_eq!(m.mtype, mtype);
        prop_assert_eq!(m.code, code);
        prop_assert_eq!(m.mid, mid);
        prop_assert_eq!(m.token.as_bytes(), token.as_slice());
        let parsed: Vec<(u16, Vec<u8>)> = m.options().map(|o| (o.number, o.value.to_vec())).collect();
        prop_assert_eq!(&parsed, &opts);
        prop_assert_eq!(m.payload, payload.as_slice());
        let lite = coap_lite::Packet::from_bytes(&buf).expect("coap-lite parses it too");
        let lite_opts: Vec<(u16, Vec<u8>)> = lite
            .options()
            .flat_map(|(n, vs)| vs.iter().map(move |v| (*n, v.clone())))
            .collect();
        prop_assert_eq!(&lite_opts, &opts);
        prop_assert_eq!(&lite.payload, &payload);
        prop_assert_eq!(lite.header.message_id, mid);
    }
}
