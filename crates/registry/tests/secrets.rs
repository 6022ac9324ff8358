//! Keys and tokens never leave the registry: not in Debug output, views, errors, audit events,
//! metrics or logs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use wardgate_core::{
    AuthRequest, Authorizer, CredentialStore, MessageClass, PeerContext, Protocol, TransportKind,
};
use wardgate_registry::{DeviceSpec, KeyText, PskSpec, RegistryFile};
use wardgate_testkit::CapturedLog;

#[test]
fn no_secret_in_the_debug_output_of_any_public_type() {
    let f = Fixture::new(&standard_toml("quarantine"));
    let _ = f.reg.psk("psk-unknown");
    let shown = format!("{:?}", f.reg);
    assert!(
        shown.contains("bed-12") && shown.contains("Secret(16 bytes)"),
        "{shown}"
    );
    assert_no_secret("Debug of Registry", &shown);
    assert_no_secret("Debug of Registry", &format!("{:#?}", f.reg));

    let text = std::fs::read_to_string(&f.path).unwrap();
    let file = RegistryFile::parse(&text, &f.path).unwrap();
    assert_no_secret("Debug of RegistryFile", &format!("{file:?} {file:#?}"));
    let spec = PskSpec {
        identity: "x".into(),
        key: Some(KeyText::new(format!("hex:{KEY_HEX}"))),
        key_file: None,
    };
    assert_no_secret("Debug of PskSpec", &format!("{spec:?}"));
    assert_no_secret(
        "Debug of the key",
        &format!("{:?}", f.reg.psk("psk-bed-12")),
    );
    assert_no_secret(
        "Debug of views",
        &format!("{:?} {:?}", f.reg.list(), f.reg.pending()),
    );
}

#[test]
fn views_serialize_without_keys_tokens_or_token_hashes() {
    let f = Fixture::new(&standard_toml("reject"));
    let json = serde_json::to_string(&f.reg.list()).unwrap();
    assert!(json.contains(r#""tokens":["t1"]"#), "{json}");
    assert!(json.contains(r#""key_source":"inline""#), "{json}");
    assert!(json.contains(CERT_FP), "{json}");
    assert_no_secret("the views", &json);
}

#[test]
fn no_test_key_or_token_appears_in_the_logs_audit_or_metrics_of_a_whole_session() {
    let (log, _guard) = CapturedLog::start_with("trace");
    let f = Fixture::new(&standard_toml("quarantine"));
    let https = PeerContext::new(addr(), TransportKind::Https);

    // Every kind of lookup and denial.
    let _ = f.reg.psk("psk-bed-12");
    let _ = f.reg.psk("psk-old-7");
    let _ = f.reg.psk(KEY_HEX); // a peer sending a key as its identity is its own fault…
    let _ = f.reg.verify_bearer(&https, TOKEN.as_bytes());
    let _ = f.reg.verify_bearer(&https, format!("{TOKEN}x").as_bytes());
    let bed = psk_peer("psk-bed-12");
    for class in MessageClass::ALL {
        let _ = f.reg.authorize(&write(&bed, "bed-12", class));
    }
    let _ = f.reg.authorize(&write(&bed, "bed-99", MessageClass::Vital));
    let _ = f.reg.authorize(&AuthRequest {
        protocol: Protocol::Mqtt,
        ..write(&bed, "bed-12", MessageClass::Vital)
    });
    let _ = f.reg.authorize(&write(
        &PeerContext::udp(addr()),
        "bed-12",
        MessageClass::Vital,
    ));
    f.clock.advance(Duration::from_secs(120));
    let _ = f.reg.authorize(&write(&bed, "bed-99", MessageClass::Vital));

    // Edits: good, invalid, and a reload that fails.
    let mut spec = DeviceSpec::new("bed-14");
    spec.psk = Some(PskSpec {
        identity: "psk-bed-14".into(),
        key: Some(KeyText::new(format!("hex:{KEY2_HEX}"))),
        key_file: None,
    });
    f.reg.upsert(spec.clone(), "admin:ops-1").unwrap();
    spec.psk.as_mut().unwrap().key = Some(KeyText::new(format!("hex:{KEY2_HEX}0")));
    assert!(f.reg.upsert(spec, "admin:ops-1").is_err());
    f.reg.revoke("bed-12", "admin:ops-1").unwrap();
    write_private(
        &f.path,
        &format!("[[device]]\nid = \"a\"\nrevoked = \"{KEY_HEX}\"\n"),
    );
    assert!(f.reg.reload().is_err());

    // Which lines the capture sees is not asserted: tracing caches each callsite's interest
    // process-wide, so a thread-scoped subscriber can miss a callsite that a parallel test in
    // this binary hit first (seen once in CI). What it sees must hold no secret.
    let text = log.text();
    // The identity a peer chose is its own; everything else must be clean.
    let text = text.replace(
        &format!("claimed-psk:{KEY_HEX}"),
        "claimed-psk:<peer's choice>",
    );
    assert_no_secret("the captured log", &text);
    let audit = format!("{:?}", f.audit.events()).replace(
        &format!("claimed-psk:{KEY_HEX}"),
        "claimed-psk:<peer's choice>",
    );
    assert_no_secret("the audit events", &audit);
    assert_no_secret("the metrics", &f.metrics_text());
}
