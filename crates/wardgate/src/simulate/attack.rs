//! Attack traffic for the traffic monitor, from its own source address so that flow records can
//! be labelled by it (`[[monitor.flows.labels]]`). Three kinds, in rounds of a second:
//! a resource scan (GETs of paths that do not exist: 4.04s), forged `security`-class readings
//! (4.03s) and malformed datagrams (not CoAP: dropped and counted by the gateway). Bounded:
//! [`PER_SECOND`] packets a second at most, whatever the gateway does.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use wardgate_coap::config::TransmissionConfig;
use wardgate_coap::{ClientRequest, CoapClient};
use wardgate_core::Shutdown;

use super::Stats;

/// Attack packets a second, at most.
pub(crate) const PER_SECOND: u64 = 60;
const SCANS: u64 = 20;
const FORGED: u64 = 10;
const MALFORMED: u64 = PER_SECOND - SCANS - FORGED;

/// Paths a scanner tries.
const PATHS: &[&str] = &[
    "admin",
    "config",
    "firmware",
    "debug",
    "login",
    "api/v1/users",
    "cgi-bin/status",
    "dev/null",
    "sensors",
    "backup",
    "v2/readings",
    "shell",
];

/// Runs until `stop`.
pub(crate) async fn run(
    from: IpAddr,
    target: SocketAddr,
    seed: u64,
    stats: Arc<Stats>,
    stop: Shutdown,
) {
    let bind = SocketAddr::new(from, 0);
    // No retransmissions: a scanner does not wait.
    let tx = TransmissionConfig {
        max_retransmit: 0,
        ..TransmissionConfig::default()
    };
    let scanner = match CoapClient::bind(bind, tx).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(%from, error = %e, "simulate: cannot bind the attack source (on Linux any 127.x.y.z works on loopback)");
            return;
        }
    };
    let raw = match tokio::net::UdpSocket::bind(bind).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(%from, error = %e, "simulate: cannot bind the attack source");
            return;
        }
    };
    tracing::info!(%from, %target, "simulate: attack traffic started");
    let mut rng = StdRng::seed_from_u64(seed ^ 0x00a7_7ac4);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let mut answers = tokio::task::JoinSet::new();
        for i in 0..SCANS {
            let path = format!(
                "{}/{}",
                PATHS[rng.random_range(0..PATHS.len())],
                rng.random_range(0..1000u32)
            );
            let req = if i % 2 == 0 {
                ClientRequest::get(path)
            } else {
                ClientRequest::post(path).payload(b"x".to_vec())
            };
            let requester = scanner.requester();
            answers.spawn(async move {
                tokio::time::timeout(Duration::from_secs(2), requester.request(target, req)).await
            });
        }
        for _ in 0..FORGED {
            let device = format!("bed-{}-spoof", rng.random_range(1..99u32));
            let req = ClientRequest::post(format!("v1/readings/{device}"))
                .content_format(110)
                .query("class=security")
                .payload(br#"[{"n":"anomaly","vs":"none"}]"#.to_vec());
            let requester = scanner.requester();
            answers.spawn(async move {
                tokio::time::timeout(Duration::from_secs(2), requester.request(target, req)).await
            });
        }
        for _ in 0..MALFORMED {
            let len = rng.random_range(1..64usize);
            let mut junk: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            // Version 0 or 2/3 in the first two bits: never a CoAP 1 header.
            junk[0] = (junk[0] & 0x3f) | if rng.random_bool(0.5) { 0x00 } else { 0x80 };
            if raw.send_to(&junk, target).await.is_ok() {
                stats.attack_sent.fetch_add(1, Ordering::Relaxed);
            }
        }
        stats
            .attack_sent
            .fetch_add(SCANS + FORGED, Ordering::Relaxed);
        while let Some(r) = answers.join_next().await {
            if matches!(r, Ok(Ok(Ok(_)))) {
                stats.attack_answered.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
