//! Editing with immediate effect: revocation on the next lookup, durable writes that round-trip,
//! failed writes and reloads that change nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::*;
use wardgate_core::{AuditKind, Authorizer, CredentialStore, Denied, MessageClass, NoAudit};
use wardgate_registry::{
    DeviceSpec, KeyText, PskSpec, Registry, RegistryError, RegistryFile, RegistryMetrics, TokenSpec,
};

fn new_device() -> DeviceSpec {
    let mut spec = DeviceSpec::new("bed-14");
    spec.classes = Some(vec!["vital".into()]);
    spec.speaks_for = Some(vec!["bed-14".into(), "bed-14-*".into()]);
    spec.psk = Some(PskSpec {
        identity: "psk-bed-14".into(),
        key: Some(KeyText::new(format!("hex:{KEY2_HEX}"))),
        key_file: None,
    });
    spec.tokens = vec![TokenSpec {
        id: "t1".into(),
        sha256: "11".repeat(32),
    }];
    spec
}

#[test]
fn revocation_takes_effect_on_the_next_lookup_and_moves_the_generation() {
    let f = Fixture::new(&standard_toml("reject"));
    let peer = psk_peer("psk-bed-12");
    let g0 = f.reg.generation();
    assert!(f.reg.psk("psk-bed-12").is_some());
    assert!(
        f.reg
            .authorize(&write(&peer, "bed-12", MessageClass::Vital))
            .is_ok()
    );

    f.reg.revoke("bed-12", "admin:ops-1").unwrap();

    assert!(f.reg.generation() > g0, "open sessions must see the change");
    assert_eq!(f.reg.psk("psk-bed-12"), None);
    assert_eq!(
        f.reg
            .authorize(&write(&peer, "bed-12", MessageClass::Vital)),
        Err(Denied::Unauthenticated("revoked"))
    );
    let token_peer = wardgate_core::PeerContext::new(addr(), wardgate_core::TransportKind::Https);
    assert!(f.reg.verify_bearer(&token_peer, TOKEN.as_bytes()).is_err());
    let change = f
        .audit
        .events()
        .into_iter()
        .find(|e| e.kind == AuditKind::RegistryChange)
        .unwrap();
    assert_eq!(change.reason, "device_revoked");
    assert_eq!(change.actor.as_deref(), Some("admin:ops-1"));
    assert_eq!(change.subject.as_deref(), Some("bed-12"));

    // It is on disk too: a fresh load agrees.
    let again = Registry::load(&f.path, Arc::new(NoAudit), RegistryMetrics::default()).unwrap();
    assert!(again.get("bed-12").unwrap().revoked);

    f.reg.restore("bed-12", "admin:ops-1").unwrap();
    assert!(f.reg.psk("psk-bed-12").is_some());
}

#[test]
fn removal_and_rekeying_take_effect_at_once() {
    let f = Fixture::new(&standard_toml("reject"));
    let g0 = f.reg.generation();
    let mut spec = new_device();
    f.reg.upsert(spec.clone(), "admin:ops-1").unwrap();
    let k1 = f.reg.psk("psk-bed-14").unwrap();
    spec.psk.as_mut().unwrap().key = Some(KeyText::new(format!("hex:{KEY_HEX}")));
    f.reg.upsert(spec, "admin:ops-1").unwrap();
    let k2 = f.reg.psk("psk-bed-14").unwrap();
    assert_ne!(k1, k2);
    f.reg.remove("bed-14", "admin:ops-1").unwrap();
    assert_eq!(f.reg.psk("psk-bed-14"), None);
    assert_eq!(f.reg.generation(), g0 + 3);
    let reasons: Vec<_> = f.audit.events().into_iter().map(|e| e.reason).collect();
    // The lookup after the removal is an unknown identity, audited as such.
    assert_eq!(
        reasons,
        [
            "device_added",
            "device_updated",
            "device_removed",
            "unknown_identity"
        ]
    );
    assert!(matches!(
        f.reg.remove("bed-14", "admin:ops-1"),
        Err(RegistryError::NotFound(_))
    ));
}

#[test]
fn an_upsert_is_written_durably_and_reads_back_equal() {
    let f = Fixture::new(&standard_toml("reject"));
    f.reg.upsert(new_device(), "admin:ops-1").unwrap();
    assert_eq!(mode(&f.path), 0o600, "the rewritten file is private");
    let text = std::fs::read_to_string(&f.path).unwrap();
    let file = RegistryFile::parse(&text, &f.path).unwrap();
    assert_eq!(file.devices.len(), 4);
    assert_eq!(file.devices[3], new_device());
    // And written again, it is the same text: write(load(write(x))) == write(x).
    assert_eq!(file.to_toml().unwrap(), text);

    let again = Registry::load(&f.path, Arc::new(NoAudit), RegistryMetrics::default()).unwrap();
    assert_eq!(again.list(), f.reg.list());
    assert_eq!(again.psk("psk-bed-14"), f.reg.psk("psk-bed-14"));
    // No temporary file is left behind.
    let names: Vec<_> = std::fs::read_dir(f.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["devices.toml"]);
}

#[test]
fn key_file_and_environment_references_stay_references_when_written() {
    let dir = tempfile::tempdir().unwrap();
    write_private(&dir.path().join("b.key"), FILE_KEY_HEX);
    let path = dir.path().join("devices.toml");
    let original = "[[device]]\nid = \"b\"\n[device.psk]\nidentity = \"b\"\nkey_file = \"b.key\"\n\
                    [[device]]\nid = \"c\"\n[device.psk]\nidentity = \"c\"\nkey = \"${BED_12_PSK}\"\n";
    write_private(&path, original);
    let reg = load_at(&path).unwrap();
    reg.revoke("b", "admin:ops-1").unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("key_file = \"b.key\""), "{text}");
    assert!(text.contains("key = \"${BED_12_PSK}\""), "{text}");
    assert!(
        !text.contains(FILE_KEY_HEX) && !text.contains(ENV_KEY_HEX),
        "{text}"
    );
    let before = RegistryFile::parse(original, &path).unwrap();
    let mut after = RegistryFile::parse(&text, &path).unwrap();
    after.devices[0].revoked = false;
    assert_eq!(before, after);
}

#[test]
fn a_failed_write_leaves_memory_and_disk_unchanged() {
    let f = Fixture::new(&standard_toml("reject"));
    let before_text = std::fs::read_to_string(&f.path).unwrap();
    let before_list = f.reg.list();
    let g0 = f.reg.generation();
    // Deterministic even as root: the rename target becomes a non-empty directory, which
    // rename(2) refuses whatever the permissions. The file's content goes to a side copy.
    let side = f.dir.path().join("side.toml");
    std::fs::rename(&f.path, &side).unwrap();
    std::fs::create_dir(&f.path).unwrap();
    std::fs::write(f.path.join("occupied"), "x").unwrap();

    let err = f.reg.upsert(new_device(), "admin:ops-1").unwrap_err();
    assert!(matches!(err, RegistryError::Write { .. }), "{err}");
    assert_eq!(f.reg.list(), before_list);
    assert_eq!(f.reg.generation(), g0);
    assert_eq!(f.reg.psk("psk-bed-14"), None);
    let err = f.reg.revoke("bed-12", "admin:ops-1").unwrap_err();
    assert!(matches!(err, RegistryError::Write { .. }), "{err}");
    assert!(
        f.reg.psk("psk-bed-12").is_some(),
        "the revocation did not happen"
    );
    assert!(
        f.audit
            .events()
            .iter()
            .all(|e| e.kind != AuditKind::RegistryChange)
    );
    assert!(
        f.metrics_text()
            .contains(r#"wardgate_registry_edits_total{outcome="write_failed"} 2"#)
    );

    // The temporary file was cleaned up, the old content is intact.
    assert!(!f.dir.path().join(".devices.toml.tmp").exists());
    assert_eq!(std::fs::read_to_string(&side).unwrap(), before_text);
    assert_no_secret("the write error", &err.to_string());
}

#[test]
fn an_invalid_upsert_is_refused_with_every_problem_and_changes_nothing() {
    let f = Fixture::new(&standard_toml("reject"));
    let before_text = std::fs::read_to_string(&f.path).unwrap();
    let g0 = f.reg.generation();
    let mut spec = new_device();
    // Steals bed-12's PSK identity and has a bad class and a bad key.
    spec.psk = Some(PskSpec {
        identity: "psk-bed-12".into(),
        key: Some(KeyText::new(format!("hex:{}", &KEY_HEX[..10]))),
        key_file: None,
    });
    spec.classes = Some(vec!["gossip".into()]);
    let err = f.reg.upsert(spec, "admin:ops-1").unwrap_err();
    assert_eq!(err.problems().len(), 3, "{err}");
    assert_no_secret("the error", &err.to_string());
    assert_eq!(f.reg.generation(), g0);
    assert_eq!(std::fs::read_to_string(&f.path).unwrap(), before_text);
}

#[test]
fn a_reload_picks_up_hand_edits_and_a_broken_file_keeps_the_old_registry() {
    let f = Fixture::new(&standard_toml("reject"));
    let g0 = f.reg.generation();
    let edited = standard_toml("reject").replace("revoked = true", "revoked = false");
    write_private(&f.path, &edited);
    f.reg.reload().unwrap();
    assert!(f.reg.psk("psk-old-7").is_some());
    assert_eq!(f.reg.generation(), g0 + 1);

    write_private(&f.path, "[[device]]\nid = \"x y\"\nbogus = 1\n");
    let err = f.reg.reload().unwrap_err();
    assert!(!err.problems().is_empty());
    assert!(
        f.reg.psk("psk-old-7").is_some(),
        "old registry still in effect"
    );
    assert_eq!(f.reg.generation(), g0 + 1);
    let reloads: Vec<_> = f
        .audit
        .events()
        .into_iter()
        .filter(|e| e.kind == AuditKind::ConfigReload)
        .map(|e| e.reason)
        .collect();
    assert_eq!(reloads, ["registry_reloaded", "registry_reload_rejected"]);
}
