//! Loading and validating devices.toml: every problem at once, no secret in any of them,
//! key sources, permission warnings, the shipped example.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::*;
use wardgate_core::{CredentialStore, NoAudit};
use wardgate_registry::{Registry, RegistryError, RegistryMetrics, UnknownPolicy};
use wardgate_testkit::CapturedLog;

#[test]
fn the_shipped_example_loads() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/examples/devices.toml"
    );
    let reg = Registry::load(path, Arc::new(NoAudit), RegistryMetrics::default())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(reg.unknown_policy(), UnknownPolicy::Reject);
    let ids: Vec<_> = reg.list().into_iter().map(|d| d.id).collect();
    assert_eq!(ids, ["bed-12", "room-21-thermo"]);
    assert_eq!(reg.psk("bed-12").map(|k| k.len()), Some(16));
    assert!(reg.knows_certificate(CERT_FP));
}

#[test]
fn the_standard_fixture_loads_with_defaults_applied() {
    let f = Fixture::new(&standard_toml("reject"));
    let bed = f.reg.get("bed-12").unwrap();
    assert_eq!(bed.protocols, ["coaps", "lwm2ms", "mqtts", "https"]);
    assert_eq!(bed.classes, ["alarm", "vital"]);
    assert_eq!(
        bed.resources,
        ["v1/readings", "v1/readings/*", "rd", "dp", "bs", "lwm2m/*"]
    );
    let old = f.reg.get("old-7").unwrap();
    assert_eq!(old.speaks_for, ["old-7"]);
    assert_eq!(old.protocols, ["coaps", "lwm2ms", "mqtts", "https"]);
    assert_eq!(old.classes, ["alarm", "vital", "telemetry", "bulk"]);
    assert!(old.revoked);
}

#[test]
fn every_problem_in_the_file_is_reported_at_once() {
    let text = format!(
        r#"
[[device]]
id = "bed 12"
protocols = ["coaps", "gopher"]
classes = ["vital", "gossip"]
resources = []
speaks_for = ["a*b*c", "bed/12"]
[device.psk]
identity = "dup"
key = "hex:{KEY_HEX}"
key_file = "k.key"

[[device]]
id = "bed-13"
[device.psk]
identity = "dup"
key = "hex:0011"
[[device.token]]
id = "t1"
sha256 = "not-a-hash"
[[device.token]]
id = "t1"
sha256 = "{hash}"
[[device.certificate]]
sha256 = "abc"

[[device]]
id = "bed-13"
[device.psk]
identity = "p3"
key = "${{UNSET_VAR}}"
"#,
        hash = token_hash(TOKEN)
    );
    let err = Fixture::try_new(&text).err().expect("invalid");
    let RegistryError::Invalid { problems, .. } = &err else {
        panic!("{err}")
    };
    let paths: Vec<_> = problems.iter().map(|p| p.path.as_str()).collect();
    for expected in [
        "device[0] (bed 12).id",
        "device[0] (bed 12).protocols[1]",
        "device[0] (bed 12).classes[1]",
        "device[0] (bed 12).resources",
        "device[0] (bed 12).speaks_for[0]",
        "device[0] (bed 12).speaks_for[1]",
        "device[0] (bed 12).psk",
        "device[1] (bed-13).psk.key",
        "device[1] (bed-13).psk.identity",
        "device[1] (bed-13).token[0].sha256",
        "device[1] (bed-13).token[1].id",
        "device[1] (bed-13).certificate[0].sha256",
        "device[2] (bed-13).id",
        "device[2] (bed-13).psk.key",
    ] {
        assert!(
            paths.iter().any(|p| p.starts_with(expected)),
            "missing problem at {expected}; got:\n{err}"
        );
    }
    let shown = err.to_string();
    assert!(shown.contains("gopher"), "{shown}");
    assert!(shown.contains("UNSET_VAR is not set"), "{shown}");
    assert!(
        shown.contains("is 2 bytes; a PSK must be 16 to 64 bytes"),
        "{shown}"
    );
    assert_no_secret("the error", &shown);
}

#[test]
fn no_key_or_token_appears_in_any_error_message() {
    let cases = [
        // Not hex: the message must not echo it.
        format!(
            "[[device]]\nid = \"a\"\n[device.psk]\nidentity = \"a\"\nkey = \"hex:{KEY_HEX}zz\"\n"
        ),
        // Too short, too long.
        format!(
            "[[device]]\nid = \"a\"\n[device.psk]\nidentity = \"a\"\nkey = \"hex:{}\"\n",
            &KEY_HEX[..20]
        ),
        format!(
            "[[device]]\nid = \"a\"\n[device.psk]\nidentity = \"a\"\nkey = \"hex:{KEY2_HEX}{KEY2_HEX}00\"\n"
        ),
        // The key in the wrong field, where serde would echo the string.
        format!("[[device]]\nid = \"a\"\nrevoked = \"hex:{KEY_HEX}\"\n"),
        format!("[[device]]\nid = \"a\"\nprotocols = \"{KEY_HEX}\"\n"),
        // The key written as a TOML integer: serde would echo the number.
        "[[device]]\nid = \"a\"\n[device.psk]\nidentity = \"a\"\nkey = 0x5ec7e75ec7e75ec7\n"
            .to_owned(),
        // A syntax error on the key's line: toml's Display would quote the line.
        format!("[[device]]\nid = \"a\"\n[device.psk]\nidentity = \"a\"\nkey = \"hex:{KEY_HEX}\n"),
        // A token where the hash belongs.
        format!("[[device]]\nid = \"a\"\n[[device.token]]\nid = \"t\"\nsha256 = \"{TOKEN}\"\n"),
        // An unknown field holding a key.
        format!("[[device]]\nid = \"a\"\nsecret = \"{KEY_HEX}\"\n"),
    ];
    for text in cases {
        let err = Fixture::try_new(&text).err().expect("invalid");
        let shown = format!("{err} / {err:?}");
        assert_no_secret("the error", &shown);
        assert_no_secret("the error", &shown.replace("5ec7e75ec7e75ec7", KEY_HEX));
    }
}

#[test]
fn keys_come_inline_from_a_key_file_or_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("keys")).unwrap();
    write_private(
        &dir.path().join("keys/b.key"),
        &format!("  hex:{FILE_KEY_HEX}\n"),
    );
    let path = dir.path().join("devices.toml");
    write_private(
        &path,
        &format!(
            r#"
[[device]]
id = "a"
[device.psk]
identity = "a"
key = "hex:{KEY_HEX}"
[[device]]
id = "b"
[device.psk]
identity = "b"
key_file = "keys/b.key"
[[device]]
id = "c"
[device.psk]
identity = "c"
key = "${{BED_12_PSK}}"
"#
        ),
    );
    let reg = load_at(&path).unwrap_or_else(|e| panic!("{e}"));
    let hex = |k: wardgate_core::Secret| -> String {
        k.expose().iter().map(|b| format!("{b:02x}")).collect()
    };
    assert_eq!(hex(reg.psk("a").unwrap()), KEY_HEX);
    assert_eq!(hex(reg.psk("b").unwrap()), FILE_KEY_HEX);
    assert_eq!(hex(reg.psk("c").unwrap()), ENV_KEY_HEX);
    let views = serde_json::to_string(&reg.list()).unwrap();
    assert!(
        views.contains(r#""key_source":"file","key_file":"keys/b.key","key_bytes":16"#),
        "{views}"
    );
    assert!(
        views.contains(r#""key_source":"env","key_env":"BED_12_PSK","key_bytes":16"#),
        "{views}"
    );
    assert_no_secret("the views", &views);
}

#[test]
fn a_missing_file_is_a_read_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.toml");
    let err = Registry::load(&path, Arc::new(NoAudit), RegistryMetrics::default()).unwrap_err();
    assert!(matches!(err, RegistryError::Read { .. }));
    assert!(err.to_string().contains("nope.toml"));
}

#[test]
fn loose_permissions_on_the_registry_or_a_key_file_produce_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("b.key");
    std::fs::write(&key, FILE_KEY_HEX).unwrap();
    set_mode(&key, 0o640);
    let path = dir.path().join("devices.toml");
    std::fs::write(
        &path,
        "[[device]]\nid = \"b\"\n[device.psk]\nidentity = \"b\"\nkey_file = \"b.key\"\n",
    )
    .unwrap();
    set_mode(&path, 0o644);
    let (log, _guard) = CapturedLog::start_with("trace");
    Registry::load(&path, Arc::new(NoAudit), RegistryMetrics::default()).unwrap();
    let text = log.text();
    let warnings: Vec<_> = text.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warnings.len(), 2, "{text}");
    assert!(
        warnings
            .iter()
            .any(|l| l.contains(&format!("chmod 600 {}", path.display()))),
        "{text}"
    );
    assert!(
        warnings
            .iter()
            .any(|l| l.contains(&format!("chmod 600 {}", key.display()))),
        "{text}"
    );
    assert!(
        text.contains("mode=644") && text.contains("mode=640"),
        "{text}"
    );
    assert_no_secret("the log", &text);
}

#[test]
fn private_files_produce_no_warning() {
    let (log, _guard) = CapturedLog::start_with("trace");
    let _f = Fixture::new(&standard_toml("reject"));
    let text = log.text();
    assert!(!text.contains("WARN"), "{text}");
    assert!(text.contains("device registry loaded"), "{text}");
}
