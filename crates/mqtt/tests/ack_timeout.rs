//! A broker that hangs with the connection open (SIGSTOP): readings without a PUBACK for
//! `ack_timeout` are reported timed out (nacked, so the selector sees them) and the uplink not
//! ready, without publishing them twice; when the broker resumes they are acknowledged, once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use wardgate_core::{MessageClass, NackReason};

#[tokio::test]
async fn readings_a_hung_broker_does_not_acknowledge_are_reported_timed_out_and_acked_when_it_resumes()
 {
    let broker = Mosquitto::start();
    let mut sub = Subscriber::connect(broker.port, "wardgate/#").await;
    let outbox = MemOutbox::new();
    let mut up = start(
        config(
            &format!("mqtt://127.0.0.1:{}", broker.port),
            "3.1.1",
            serde_json::json!({"ack_timeout": "500ms", "keep_alive": "60s"}),
        ),
        &outbox,
    );
    up.wait_ready().await;

    broker.freeze();
    // Two waves, so the first wave's report (which moves the cursor back) finds the second
    // still in flight and not yet overdue: it must not be published again either.
    let mut stuck: Vec<u64> = (0..3)
        .map(|i| outbox.push("bed-1", MessageClass::Vital, f64::from(i)))
        .collect();
    tokio::time::sleep(Duration::from_millis(250)).await;
    stuck.extend((3..5).map(|i| outbox.push("bed-1", MessageClass::Vital, f64::from(i))));
    let o = outbox.clone();
    let s = stuck.clone();
    eventually("the stuck readings reported timed out", move || {
        let timed_out: BTreeSet<u64> = o.with(|st| {
            st.nacks
                .iter()
                .filter(|(_, why)| *why == NackReason::TimedOut)
                .map(|(seq, _)| *seq)
                .collect()
        });
        s.iter().all(|seq| timed_out.contains(seq))
    })
    .await;
    let h = up.health.clone();
    eventually("the uplink reports not ready", move || {
        !h.readiness().checks["uplink.test"].ready
    })
    .await;
    assert!(
        up.check().detail.contains("no PUBACK"),
        "{}",
        up.check().detail
    );
    assert!(outbox.acked().is_empty(), "nothing acked without a PUBACK");

    broker.thaw();
    outbox.wait_all_acked().await;
    up.wait_ready().await;
    let got = sub
        .collect_until("the five readings", |got| {
            got.iter().filter(|(t, _)| t.contains("bed-1")).count() >= 5
        })
        .await;
    // Give a duplicate time to show up, then check there was none.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let more = sub.drain_now();
    let copies = got
        .iter()
        .chain(more.iter())
        .filter(|(t, _)| t.contains("bed-1"))
        .count();
    assert_eq!(copies, 5, "each stuck reading published once");
    // Each was reported once, however long the stall lasted.
    let reports = outbox.with(|st| {
        st.nacks
            .iter()
            .filter(|(_, why)| *why == NackReason::TimedOut)
            .count()
    });
    assert_eq!(reports, 5);
    up.stop().await.expect("clean stop");
}
