//! Interop with libcoap's `coap-client-notls` (a real, independent CoAP implementation).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Harness, SENML_JSON, StoreMode, coap_client};

/// `-e` text is percent-decoded by libcoap: escape the `%` of SenML units.
fn pct(s: &str) -> String {
    s.replace('%', "%25")
}

/// libcoap at verbosity 7 logs every PDU as `v:1 t:ACK c:2.01 i:... {token} [ options ] :: payload`.
fn saw(out: &common::ClientRun, needle: &str) -> bool {
    out.stdout.contains(needle) || out.stderr.contains(needle)
}

#[tokio::test]
async fn libcoap_client_posts_senml_json_and_gets_created_after_the_reading_is_stored() {
    let h = Harness::start(StoreMode::Ok).await;
    let out = coap_client(&[
        "-v",
        "7",
        "-m",
        "post",
        "-t",
        "110",
        "-e",
        &pct(SENML_JSON),
        &h.uri("/v1/readings/bed-1"),
    ])
    .await;
    assert!(out.ok, "{out:?}");
    assert!(saw(&out, "c:2.01"), "expected 2.01 Created: {out:?}");
    assert!(
        saw(&out, "Location-Path:v1"),
        "expected Location-Path: {out:?}"
    );
    let r = h.readings();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].device, "bed-1");
    assert_eq!(r[0].gateway, "ward-test");
    let names: Vec<&str> = r[0].records.iter().map(|x| x.n.as_str()).collect();
    assert_eq!(names, ["urn:dev:bed-1:spo2", "urn:dev:bed-1:heart_rate"]);
    assert_eq!(r[0].records[0].v, Some(97.0));
    // The Location-Path names the stored reading.
    assert!(saw(&out, &r[0].id.to_string()), "{out:?}");
    assert_eq!(
        h.metric("wardgate_coap_readings_accepted_total{source=\"request\",class=\"vital\"}"),
        1.0
    );
    h.stop().await;
}

#[tokio::test]
async fn libcoap_client_posts_senml_cbor_from_a_file() {
    let h = Harness::start(StoreMode::Ok).await;
    let records = [wardgate_core::Record {
        n: "body_temperature".into(),
        u: Some("Cel".into()),
        v: Some(36.9),
        t: 1_763_759_045.0,
        ..Default::default()
    }];
    let cbor = wardgate_core::senml::encode_cbor(&records);
    let dir = tempdir();
    let path = dir.join("reading.cbor");
    std::fs::write(&path, &cbor).expect("write");
    let out = coap_client(&[
        "-v",
        "7",
        "-m",
        "post",
        "-t",
        "112",
        "-f",
        path.to_str().expect("utf8"),
        &h.uri("/v1/readings/bed-2"),
    ])
    .await;
    assert!(saw(&out, "c:2.01"), "{out:?}");
    let r = h.readings();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].device, "bed-2");
    assert_eq!(r[0].records[0].n, "body_temperature");
    assert_eq!(r[0].records[0].v, Some(36.9));
    assert_eq!(r[0].records[0].t, 1_763_759_045.0);
    let _ = std::fs::remove_dir_all(dir);
    h.stop().await;
}

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "wardgate-coap-test-{}-{}",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::create_dir_all(&d).expect("mkdir");
    d
}

#[tokio::test]
async fn libcoap_client_puts_plain_json_with_a_class_and_gets_changed() {
    let h = Harness::start(StoreMode::Ok).await;
    let out = coap_client(&[
        "-v",
        "7",
        "-m",
        "put",
        "-t",
        "50",
        "-e",
        r#"{"heart_rate":72,"respiratory_rate":16}"#,
        &h.uri("/v1/readings/bed-14-resp?class=telemetry"),
    ])
    .await;
    assert!(saw(&out, "c:2.04"), "{out:?}");
    let r = h.readings();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].class, wardgate_core::MessageClass::Telemetry);
    let mut names: Vec<&str> = r[0].records.iter().map(|x| x.n.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["heart_rate", "respiratory_rate"]);
    h.stop().await;
}

#[tokio::test]
async fn libcoap_client_posts_text_plain_named_by_the_last_path_segment() {
    let h = Harness::start(StoreMode::Ok).await;
    let out = coap_client(&[
        "-v",
        "7",
        "-m",
        "post",
        "-t",
        "0",
        "-e",
        "36.9",
        &h.uri("/v1/readings/bed-12/temperature?class=vital"),
    ])
    .await;
    assert!(saw(&out, "c:2.01"), "{out:?}");
    let r = h.readings();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].device, "bed-12");
    assert_eq!(r[0].records[0].n, "temperature");
    assert_eq!(r[0].records[0].v, Some(36.9));
    // Without a name segment text/plain has no record name: 4.00, nothing stored.
    let out = coap_client(&[
        "-v",
        "7",
        "-m",
        "post",
        "-t",
        "0",
        "-e",
        "36.9",
        &h.uri("/v1/readings/bed-12"),
    ])
    .await;
    assert!(saw(&out, "c:4.00"), "{out:?}");
    assert_eq!(h.readings().len(), 1);
    h.stop().await;
}

#[tokio::test]
async fn libcoap_client_uploads_a_large_senml_body_in_16_byte_blocks() {
    let h = Harness::start(StoreMode::Ok).await;
    let mut body = String::from("[");
    for i in 0..8 {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&format!(r#"{{"n":"sensor-{i}/spo2","u":"%","v":9{i}}}"#));
    }
    body.push(']');
    assert!(body.len() > 250, "payload is {} bytes", body.len());
    let out = coap_client(&[
        "-v",
        "7",
        "-b",
        "16",
        "-m",
        "post",
        "-t",
        "110",
        "-e",
        &pct(&body),
        &h.uri("/v1/readings/bed-3"),
    ])
    .await;
    assert!(
        saw(&out, "c:2.31"),
        "intermediate blocks get 2.31 Continue: {out:?}"
    );
    assert!(saw(&out, "c:2.01"), "{out:?}");
    let r = h.readings();
    assert_eq!(r.len(), 1, "one reading for the whole body");
    assert_eq!(r[0].records.len(), 8);
    assert_eq!(r[0].records[7].n, "sensor-7/spo2");
    assert_eq!(
        h.metric("wardgate_coap_block_transfers_total{outcome=\"completed\"}"),
        1.0
    );
    assert_eq!(h.metric("wardgate_coap_block_transfers_open"), 0.0);
    h.stop().await;
}

#[tokio::test]
async fn libcoap_client_reads_well_known_core_in_link_format() {
    let h = Harness::start(StoreMode::Ok).await;
    let out = coap_client(&["-m", "get", &h.uri("/.well-known/core")]).await;
    assert!(out.ok, "{out:?}");
    assert!(
        out.stdout.contains(
            "</v1/readings>;rt=\"wardgate.readings\";if=\"core.p\";ct=\"0 50 60 110 112\""
        ),
        "{out:?}"
    );
    // With 16-byte blocks the document comes in many Block2 blocks and is reassembled by libcoap.
    let blocks = coap_client(&["-b", "16", "-m", "get", &h.uri("/.well-known/core")]).await;
    assert_eq!(blocks.stdout.trim(), out.stdout.trim(), "{blocks:?}");
    let traced = coap_client(&[
        "-v",
        "7",
        "-b",
        "16",
        "-m",
        "get",
        &h.uri("/.well-known/core"),
    ])
    .await;
    assert!(
        saw(&traced, "Block2:1/M/16"),
        "second 16-byte block was served: {traced:?}"
    );
    assert!(
        saw(&traced, "Content-Format:application/link-format"),
        "{traced:?}"
    );
    h.stop().await;
}

#[tokio::test]
async fn libcoap_client_accepts_a_separate_response_from_a_slow_store() {
    let h = Harness::start_with(StoreMode::Delay(Duration::from_millis(1500)), |c| {
        c.piggyback_budget = Duration::from_millis(100);
    })
    .await;
    let out = coap_client(&[
        "-v",
        "7",
        "-m",
        "post",
        "-t",
        "110",
        "-e",
        &pct(SENML_JSON),
        &h.uri("/v1/readings/bed-4"),
    ])
    .await;
    assert!(out.ok, "{out:?}");
    assert!(saw(&out, "t:ACK c:0.00"), "empty ACK first: {out:?}");
    assert!(saw(&out, "t:CON c:2.01"), "then a CON 2.01: {out:?}");
    assert_eq!(h.readings().len(), 1);
    assert_eq!(h.metric("wardgate_coap_separate_responses_total"), 1.0);
    h.stop().await;
}

#[tokio::test]
async fn libcoap_client_sees_503_with_max_age_when_the_store_is_full() {
    let h = Harness::start(StoreMode::Full).await;
    let out = coap_client(&[
        "-v",
        "7",
        "-m",
        "post",
        "-t",
        "110",
        "-e",
        &pct(SENML_JSON),
        &h.uri("/v1/readings/bed-5"),
    ])
    .await;
    assert!(saw(&out, "c:5.03"), "{out:?}");
    assert!(saw(&out, "Max-Age:5"), "{out:?}");
    assert!(h.readings().is_empty());
    assert_eq!(
        h.metric("wardgate_coap_ingest_rejections_total{reason=\"store_full\"}"),
        1.0
    );
    h.stop().await;
}
