//! The Registration interface against aiocoap as the client: parameters, answers,
//! Location-Path, Update, De-register, replacement, expiry and persistence across restarts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, SystemTime};

use common::{AioPeer, Gateway, Options};
use wardgate_lwm2m::registration::Version;

const OBJECTS: &[u8] = b"</1/0>,</3/0>,</3303/0>;ver=1.1";

fn register(peer: &mut AioPeer, query: &[&str]) -> serde_json::Value {
    peer.request("POST", "rd", query, Some(40), OBJECTS)
}

fn location(resp: &serde_json::Value) -> Vec<String> {
    resp["location"]
        .as_array()
        .expect("location")
        .iter()
        .map(|s| s.as_str().expect("segment").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_update_deregister_with_the_answers_the_specification_asks_for() {
    let gw = Gateway::start().await;
    let mut peer = AioPeer::start(gw.addr);
    let r = register(&mut peer, &["ep=bed-1", "lt=60", "lwm2m=1.1", "b=U"]);
    assert_eq!(r["code"], "2.01", "{r}");
    let loc = location(&r);
    assert_eq!(loc.len(), 2, "{loc:?}");
    assert_eq!(loc[0], "rd");
    let id = loc[1].clone();
    let c = gw.server.client("bed-1").expect("registered");
    assert_eq!(c.registration.id, id);
    assert_eq!(c.registration.version, Version::V1_1);
    assert_eq!(c.registration.lifetime, Duration::from_secs(60));
    assert!(!c.registration.queue_mode);
    let objects: Vec<String> = c
        .registration
        .objects
        .objects
        .iter()
        .map(|o| {
            format!(
                "{}/{:?}/{:?}",
                o.oid,
                o.iid,
                o.version.map(|v| v.to_string())
            )
        })
        .collect();
    assert_eq!(
        objects,
        [
            "1/Some(0)/None",
            "3/Some(0)/None",
            "3303/Some(0)/Some(\"1.1\")"
        ]
    );

    // An Update with a new object list replaces it.
    let r = peer.request(
        "POST",
        &format!("rd/{id}"),
        &[],
        Some(40),
        b"</1/0>,</3/0>,</3304/0>",
    );
    assert_eq!(r["code"], "2.04", "{r}");
    let c = gw.server.client("bed-1").expect("still registered");
    assert_eq!(
        c.registration.objects.objects.last().map(|o| o.oid),
        Some(3304)
    );

    let r = peer.request("POST", &format!("rd/{id}"), &["lt=120"], None, b"");
    assert_eq!(r["code"], "2.04", "{r}");
    let c = gw.server.client("bed-1").expect("still registered");
    assert_eq!(c.registration.lifetime, Duration::from_secs(120));

    let r = peer.request("DELETE", &format!("rd/{id}"), &[], None, b"");
    assert_eq!(r["code"], "2.02", "{r}");
    assert!(gw.server.client("bed-1").is_none());
    let r = peer.request("POST", &format!("rd/{id}"), &[], None, b"");
    assert_eq!(r["code"], "4.04", "an Update of an ended registration: {r}");
    assert_eq!(
        gw.metric(r#"wardgate_lwm2m_client_requests_total{interface="register",outcome="ok"}"#),
        1.0
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defaults_apply_and_a_register_without_content_format_is_accepted() {
    let gw = Gateway::start().await;
    let mut peer = AioPeer::start(gw.addr);
    // Some 1.0 clients send the object list without a Content-Format.
    // And an alternate root path.
    let r = peer.request(
        "POST",
        "rd",
        &["ep=old-pump", "b=UQ"],
        None,
        b"</lwm2m>;rt=\"oma.lwm2m\";ct=11543,</lwm2m/1/0>,</lwm2m/3/0>",
    );
    assert_eq!(r["code"], "2.01", "{r}");
    let c = gw.server.client("old-pump").expect("registered");
    assert_eq!(c.registration.lifetime, Duration::from_secs(86_400));
    assert_eq!(c.registration.version, Version::V1_0);
    assert!(c.registration.queue_mode);
    assert_eq!(c.registration.binding, "U");
    assert_eq!(c.registration.objects.root, "/lwm2m");
    assert_eq!(c.registration.objects.content_formats, [11543]);
    assert_eq!(
        c.registration.preferred_format(),
        wardgate_lwm2m::Format::OmaJson
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_registrations_get_4_00_or_4_15_and_register_nothing() {
    let gw = Gateway::start().await;
    let mut peer = AioPeer::start(gw.addr);
    for (query, why) in [
        (vec!["lt=60"], "no endpoint name"),
        (vec!["ep=x", "lt=abc"], "lifetime not a number"),
        (vec!["ep=x", "lt=0"], "lifetime zero"),
        (vec!["ep=x", "lwm2m=9.9"], "unknown version"),
        (vec!["ep=x", "b=Z"], "unknown binding"),
        (vec!["ep=bad name"], "endpoint name with a space"),
    ] {
        let r = register(&mut peer, &query);
        assert_eq!(r["code"], "4.00", "{why}: {r}");
        let diag = String::from_utf8(common::unhex(r["payload_hex"].as_str().unwrap())).unwrap();
        assert!(!diag.is_empty(), "{why}: a 4.00 carries a diagnostic");
    }
    let r = peer.request("POST", "rd", &["ep=x"], Some(0), OBJECTS);
    assert_eq!(
        r["code"], "4.15",
        "an object list that is not link-format: {r}"
    );
    assert!(gw.server.clients().is_empty());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_registration_of_a_known_endpoint_replaces_the_old_one() {
    let gw = Gateway::start().await;
    let mut peer = AioPeer::start(gw.addr);
    let first = location(&register(&mut peer, &["ep=bed-2", "lt=60"]))[1].clone();
    let second = location(&register(&mut peer, &["ep=bed-2", "lt=90"]))[1].clone();
    assert_ne!(first, second);
    assert_eq!(gw.server.clients().len(), 1);
    let r = peer.request("POST", &format!("rd/{first}"), &[], None, b"");
    assert_eq!(r["code"], "4.04", "the replaced registration is gone: {r}");
    let r = peer.request("POST", &format!("rd/{second}"), &[], None, b"");
    assert_eq!(r["code"], "2.04", "{r}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_expires_after_its_lifetime_without_an_update() {
    let gw = Gateway::start().await;
    let mut peer = AioPeer::start(gw.addr);
    let id = location(&register(&mut peer, &["ep=bed-3", "lt=30"]))[1].clone();
    // Not yet.
    assert_eq!(
        gw.server
            .expire(SystemTime::now() + Duration::from_secs(29)),
        0
    );
    assert!(gw.server.client("bed-3").is_some());
    // Past its lifetime.
    assert_eq!(
        gw.server
            .expire(SystemTime::now() + Duration::from_secs(31)),
        1
    );
    assert!(gw.server.client("bed-3").is_none());
    let r = peer.request("POST", &format!("rd/{id}"), &[], None, b"");
    assert_eq!(r["code"], "4.04", "{r}");
    assert_eq!(gw.metric("wardgate_lwm2m_registrations_expired_total"), 1.0);
    // And the timer does it on its own.
    register(&mut peer, &["ep=bed-4", "lt=1"]);
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    while gw.server.client("bed-4").is_some() {
        assert!(
            tokio::time::Instant::now() < end,
            "the expiry timer did not end it"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_survive_a_gateway_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("lwm2m.db");
    let port = wardgate_testkit::free_udp_port();
    let gw = Gateway::start_with(Options {
        db: Some(db.clone()),
        port,
        ..Options::default()
    })
    .await;
    let mut peer = AioPeer::start(gw.addr);
    let id = location(&register(&mut peer, &["ep=bed-5", "lt=600", "lwm2m=1.1"]))[1].clone();
    let gone = location(&register(&mut peer, &["ep=bed-6", "lt=600"]))[1].clone();
    assert_eq!(
        peer.request("DELETE", &format!("rd/{gone}"), &[], None, b"")["code"],
        "2.02"
    );
    gw.server.flush();
    gw.stop().await;

    let gw = Gateway::start_with(Options {
        db: Some(db),
        port,
        ..Options::default()
    })
    .await;
    let c = gw.server.client("bed-5").expect("restored");
    assert_eq!(c.registration.id, id);
    assert_eq!(c.registration.version, Version::V1_1);
    assert!(
        gw.server.client("bed-6").is_none(),
        "a de-registered client stays gone"
    );
    // The client carries on with its Updates as if nothing happened.
    let r = peer.request("POST", &format!("rd/{id}"), &[], None, b"");
    assert_eq!(r["code"], "2.04", "{r}");
    gw.stop().await;
}
