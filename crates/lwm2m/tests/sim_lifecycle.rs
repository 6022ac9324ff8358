//! Information reporting and the client's life against the simulated client: observations
//! shaped by written attributes becoming readings, cancellation, composite observation, Send
//! (durable before 2.04, 5.03 when the store is full), queue mode, a reboot, a silently lost
//! observation, NAT rebinding, automatic Updates and a ward of clients.
//!
//! Waits are bounded polls (`common::eventually`), never fixed sleeps: the machine running
//! these may be loaded.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Gateway, Options, client, entry, eventually, p, records};
use wardgate_core::MessageClass;
use wardgate_lwm2m::sim::{SimClient, SimConfig, Tree, run_many};
use wardgate_lwm2m::{Attributes, Format, ObserveRule, OpError, Settings, Value};

const WAIT: Duration = Duration::from_secs(30);

/// The numeric values stored for `path`, in order.
fn values_at(gw: &Gateway, path: &str) -> Vec<f64> {
    records(gw)
        .into_iter()
        .filter(|(p, _, _)| p == path)
        .filter_map(|(_, v, _)| v)
        .collect()
}

async fn wait_value(gw: &Gateway, path: &str, v: f64) {
    eventually(&format!("a reading {v} at {path}"), WAIT, || {
        values_at(gw, path).contains(&v).then_some(())
    })
    .await;
}

fn observes(c: &SimClient, path: &str) -> usize {
    let path = p(path);
    c.received()
        .iter()
        .filter(|r| r.observe == Some(0) && r.path == Some(path))
        .count()
}

fn with_settings(settings: Settings) -> Options {
    Options {
        settings,
        ..Options::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn written_attributes_decide_which_changes_become_readings() {
    let gw = Gateway::start().await;
    let c = client(&gw, SimConfig::new("obs-1")).await;
    gw.server
        .write_attributes(
            "obs-1",
            p("/3303/0/5700"),
            &Attributes {
                st: Some(1.0),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    gw.server
        .observe("obs-1", vec![p("/3303/0/5700")], None, MessageClass::Vital)
        .unwrap();
    // The Observe's first answer is a reading too.
    wait_value(&gw, "/3303/0/5700", 21.5).await;
    eventually("the observation on the client", WAIT, || {
        (c.observations() == [vec![p("/3303/0/5700")]]).then_some(())
    })
    .await;
    c.set(p("/3303/0/5700"), Value::Float(21.9)).unwrap(); // less than the step
    c.set(p("/3303/0/5700"), Value::Float(23.0)).unwrap();
    wait_value(&gw, "/3303/0/5700", 23.0).await;
    assert_eq!(
        values_at(&gw, "/3303/0/5700"),
        [21.5, 23.0],
        "a change smaller than st is not notified"
    );
    let r = gw.readings();
    let last = r.last().unwrap();
    assert_eq!(last.device, "obs-1");
    assert!(!last.records[0].n.is_empty(), "a reading has a name");
    assert!(
        gw.server
            .client("obs-1")
            .unwrap()
            .observations
            .contains(&"/3303/0/5700".to_owned())
    );

    // Cancel: the client is told (GET with Observe=1) and forgets it.
    assert!(
        gw.server
            .cancel_observation("obs-1", &[p("/3303/0/5700")])
            .await
            .unwrap()
    );
    let cancel = c
        .wait_request(WAIT, |r| r.observe == Some(1))
        .await
        .expect("a cancelling GET");
    assert_eq!(cancel.path, Some(p("/3303/0/5700")));
    assert!(c.observations().is_empty());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pmin_and_pmax_pace_the_notifications() {
    let gw = Gateway::start().await;
    let c = client(&gw, SimConfig::new("obs-2")).await;
    gw.server
        .observe(
            "obs-2",
            vec![p("/3/0/9")],
            Some(Attributes {
                pmin: Some(1),
                pmax: Some(1),
                ..Default::default()
            }),
            MessageClass::Telemetry,
        )
        .unwrap();
    let a = eventually("attributes written before observing", WAIT, || {
        c.attributes(&p("/3/0/9"))
    })
    .await;
    assert_eq!((a.pmin, a.pmax), (Some(1), Some(1)));
    // Nothing changes, yet pmax brings the value again and again.
    eventually("three battery readings from pmax", WAIT, || {
        (values_at(&gw, "/3/0/9").len() >= 3).then_some(())
    })
    .await;
    assert!(values_at(&gw, "/3/0/9").iter().all(|v| *v == 87.0));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_composite_observation_reports_every_path_in_one_non_confirmable_notification() {
    let gw = Gateway::start().await;
    let mut cfg = SimConfig::new("obs-3").tree(Tree::device("obs-3", 300).with_voltage());
    cfg.confirmable_notifications = false;
    let c = client(&gw, cfg).await;
    gw.server
        .observe(
            "obs-3",
            vec![p("/3303/0/5700"), p("/3316/0/5700")],
            None,
            MessageClass::Vital,
        )
        .unwrap();
    wait_value(&gw, "/3316/0/5700", 3.3).await;
    let fetch = c
        .wait_request(WAIT, |r| r.observe == Some(0))
        .await
        .unwrap();
    assert_eq!(fetch.method, wardgate_coap::Code::FETCH);
    c.set(p("/3316/0/5700"), Value::Float(3.1)).unwrap();
    wait_value(&gw, "/3316/0/5700", 3.1).await;
    let last = gw.readings().last().cloned().unwrap();
    assert_eq!(
        last.records.len(),
        2,
        "both paths in one notification: {last:?}"
    );
    // Cancelling sends the FETCH again with Observe=1, and the client forgets it.
    let paths = [p("/3303/0/5700"), p("/3316/0/5700")];
    assert!(gw.server.cancel_observation("obs-3", &paths).await.unwrap());
    let cancel = c
        .wait_request(WAIT, |r| r.observe == Some(1))
        .await
        .unwrap();
    assert_eq!(cancel.method, wardgate_coap::Code::FETCH);
    eventually("the composite observation forgotten", WAIT, || {
        c.observations().is_empty().then_some(())
    })
    .await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_is_acknowledged_once_durable_and_refused_while_the_store_is_full() {
    let gw = Gateway::start().await;
    let c = client(&gw, SimConfig::new("send-1")).await;
    let entries = [
        entry("/3303/0/5700", Value::Float(36.6)),
        entry("/3/0/9", Value::Integer(80)),
    ];
    let r = c.send(&entries, Format::SenmlCbor).await.unwrap();
    assert_eq!(r.code, wardgate_coap::Code::CHANGED);
    // No wait: the 2.04 came after the store had the readings.
    assert_eq!(values_at(&gw, "/3303/0/5700"), [36.6]);
    assert_eq!(values_at(&gw, "/3/0/9"), [80.0]);
    let r = c.send(&entries[..1], Format::SenmlJson).await.unwrap();
    assert_eq!(r.code, wardgate_coap::Code::CHANGED);
    assert_eq!(values_at(&gw, "/3303/0/5700"), [36.6, 36.6]);

    gw.store_full
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let r = c.send(&entries, Format::SenmlCbor).await.unwrap();
    assert_eq!(r.code, wardgate_coap::Code::SERVICE_UNAVAILABLE);
    assert!(r.max_age.is_some(), "5.03 tells when to retry: {r:?}");
    assert_eq!(gw.readings().len(), 2);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operation_for_a_sleeping_client_waits_for_its_wake_up_update() {
    let gw = Gateway::start_with(with_settings(Settings {
        awake_window: Duration::from_secs(1),
        queue_limit: 1,
        ..Settings::default()
    }))
    .await;
    let c = client(&gw, SimConfig::new("queue-1").queue_mode()).await;
    assert!(gw.server.client("queue-1").unwrap().registration.queue_mode);
    c.sleep();
    eventually("the server to consider the client asleep", WAIT, || {
        (!gw.server.client("queue-1").unwrap().awake).then_some(())
    })
    .await;
    let server = gw.server.clone();
    let read = tokio::spawn(async move { server.read("queue-1", p("/3/0/9"), None).await });
    eventually("the read to wait in the queue", WAIT, || {
        (gw.server.client("queue-1").unwrap().queued == 1).then_some(())
    })
    .await;
    assert!(matches!(
        gw.server.read("queue-1", p("/3/0/0"), None).await,
        Err(OpError::QueueFull(1))
    ));
    assert!(
        c.received().is_empty(),
        "nothing reached the sleeping client"
    );
    assert!(!read.is_finished());

    c.wake().await.unwrap();
    let e = tokio::time::timeout(WAIT, read)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(e[0].value, Value::Integer(87));
    assert_eq!(c.received().len(), 1);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebooted_client_gets_its_configured_observation_back() {
    let gw = Gateway::start_with(with_settings(Settings {
        observe: vec![ObserveRule {
            endpoint: "boot-*".into(),
            paths: vec![p("/3303/0/5700")],
            composite: false,
            attributes: None,
            class: MessageClass::Vital,
        }],
        ..Settings::default()
    }))
    .await;
    let c = client(&gw, SimConfig::new("boot-1")).await;
    wait_value(&gw, "/3303/0/5700", 21.5).await;
    c.set(p("/3303/0/5700"), Value::Float(22.5)).unwrap();
    wait_value(&gw, "/3303/0/5700", 22.5).await;
    let first = gw.server.client("boot-1").unwrap().registration.id;

    gw.server
        .execute("boot-1", p("/3/0/4"), None)
        .await
        .unwrap();
    eventually("the re-registration", WAIT, || {
        (c.registrations() == 2).then_some(())
    })
    .await;
    eventually("the observation established again", WAIT, || {
        (observes(&c, "/3303/0/5700") == 2 && !c.observations().is_empty()).then_some(())
    })
    .await;
    assert_ne!(gw.server.client("boot-1").unwrap().registration.id, first);
    c.set(p("/3303/0/5700"), Value::Float(30.5)).unwrap();
    wait_value(&gw, "/3303/0/5700", 30.5).await;
    gw.stop().await;
}

/// The server notices an observation gone quiet only after 2 × pmax + 30 s (its fixed
/// margin), so this test takes about half a minute even with pmax = 1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silently_lost_observation_is_established_again_after_pmax() {
    let gw = Gateway::start_with(with_settings(Settings {
        observe: vec![ObserveRule {
            endpoint: "quiet-*".into(),
            paths: vec![p("/3303/0/5700")],
            composite: false,
            attributes: Some(Attributes {
                pmax: Some(1),
                ..Default::default()
            }),
            class: MessageClass::Vital,
        }],
        ..Settings::default()
    }))
    .await;
    let c = client(&gw, SimConfig::new("quiet-1")).await;
    eventually("the observation", WAIT, || {
        (!c.observations().is_empty()).then_some(())
    })
    .await;
    c.forget_observations();
    eventually(
        "a new Observe after the silence",
        Duration::from_secs(120),
        || (observes(&c, "/3303/0/5700") >= 2).then_some(()),
    )
    .await;
    c.set(p("/3303/0/5700"), Value::Float(25.0)).unwrap();
    wait_value(&gw, "/3303/0/5700", 25.0).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_from_a_new_address_keeps_the_registration_and_moves_requests() {
    let gw = Gateway::start().await;
    let c = client(&gw, SimConfig::new("nat-1")).await;
    let before = gw.server.client("nat-1").unwrap().registration;
    assert_eq!(before.addr, c.local_addr());
    let moved = c.rebind().await.unwrap();
    assert_ne!(moved, before.addr);
    c.update(Default::default()).await.unwrap();
    let after = gw.server.client("nat-1").unwrap().registration;
    assert_eq!(after.id, before.id);
    assert_eq!(after.addr, moved);
    // The old socket is closed: an answer proves the request went to the new address.
    let e = gw.server.read("nat-1", p("/3/0/0"), None).await.unwrap();
    assert_eq!(e[0].value, Value::String("wardgate".into()));
    gw.stop().await;
}

/// Found with this test: the CoAP exchange of an observation is bound to the address it was
/// made with, so notifications from a new address are answered RST and the client ends the
/// observation (RFC 7641 §3.6). The server now makes its observations again when an Update
/// arrives from a new address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_observation_keeps_reporting_after_a_nat_rebinding() {
    let gw = Gateway::start().await;
    let c = client(&gw, SimConfig::new("nat-2")).await;
    gw.server
        .observe("nat-2", vec![p("/3303/0/5700")], None, MessageClass::Vital)
        .unwrap();
    wait_value(&gw, "/3303/0/5700", 21.5).await;
    c.rebind().await.unwrap();
    c.update(Default::default()).await.unwrap();
    c.set(p("/3303/0/5700"), Value::Float(24.0)).unwrap();
    wait_value(&gw, "/3303/0/5700", 24.0).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automatic_updates_keep_a_short_registration_alive() {
    let gw = Gateway::start().await;
    let _c = client(&gw, SimConfig::new("auto-1").lifetime(4).auto_update()).await;
    let registered = gw.server.client("auto-1").unwrap().registration.updated_at;
    // Two Updates, the second past the first lifetime.
    let mut seen = vec![registered];
    eventually("two automatic Updates", WAIT, || {
        let c = gw.server.client("auto-1")?;
        if seen.last() != Some(&c.registration.updated_at) {
            seen.push(c.registration.updated_at);
        }
        (seen.len() >= 3).then_some(())
    })
    .await;
    assert!(gw.server.client("auto-1").is_some());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ward_of_clients_registers_and_deregisters() {
    let gw = Gateway::start().await;
    let ward = run_many(gw.addr, 50, 8, |i| SimConfig::new(format!("bed-{i}")))
        .await
        .unwrap();
    assert!(ward.failures.is_empty(), "{:?}", ward.failures);
    assert_eq!(ward.clients.len(), 50);
    assert_eq!(gw.server.clients().len(), 50);
    let addrs: std::collections::HashSet<_> =
        ward.clients.iter().map(SimClient::local_addr).collect();
    assert_eq!(addrs.len(), 50, "each client on its own socket");
    assert_eq!(ward.deregister_all(8).await, 0);
    assert!(gw.server.clients().is_empty());
    gw.stop().await;
}

/// A client that handshakes a new DTLS session from the same address (its observations were
/// bound to the old session) gets its observations made again. The session is given to the
/// server directly here (the simulator speaks plain UDP); `tests/e2e_lwm2m.rs` covers DTLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_security_session_from_the_same_address_makes_the_observations_again() {
    let gw = Gateway::start_with(Options {
        settings: Settings {
            observe: vec![ObserveRule {
                endpoint: "sess-*".into(),
                paths: vec![p("/3303/0/5700")],
                composite: false,
                attributes: None,
                class: MessageClass::Vital,
            }],
            ..Settings::default()
        },
        ..Options::default()
    })
    .await;
    let c = client(&gw, SimConfig::new("sess-1")).await;
    let observes = || c.received().iter().filter(|r| r.observe == Some(0)).count();
    eventually("the first observation", WAIT, || {
        (observes() == 1).then_some(())
    })
    .await;
    let id = gw.server.client("sess-1").unwrap().registration.id;
    let peer = |serial| {
        wardgate_core::PeerContext::new(c.local_addr(), wardgate_core::TransportKind::Udp)
            .in_session(serial)
    };
    let none = wardgate_lwm2m::registration::UpdateParams::default();
    gw.server.update(&peer(1), &id, none.clone(), None).unwrap();
    gw.server.update(&peer(1), &id, none.clone(), None).unwrap();
    assert_eq!(observes(), 1, "the same session keeps its observation");
    gw.server.update(&peer(2), &id, none, None).unwrap();
    // The client's next message (here an Update) finds the observation gone and makes it again.
    c.update(Default::default()).await.unwrap();
    eventually("the observation made again", WAIT, || {
        (observes() == 2).then_some(())
    })
    .await;
    gw.stop().await;
}
