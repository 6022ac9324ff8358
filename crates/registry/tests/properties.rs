//! Properties: the loader never panics on arbitrary (TOML-ish) input and never echoes a key
//! planted in it; valid registries written out read back equal.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::*;
use proptest::prelude::*;
use wardgate_registry::{
    CertificateSpec, DeviceSpec, KeyText, PskSpec, RegistryFile, TokenSpec, UnknownPolicy,
};

/// Fragments that make random input look like a registry, so the parser gets past line 1.
fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("[[device]]\n".to_owned()),
        Just("[device.psk]\n".to_owned()),
        Just("[[device.token]]\n".to_owned()),
        Just("[[device.certificate]]\n".to_owned()),
        Just("unknown = \"quarantine\"\n".to_owned()),
        "[a-z_]{1,10}".prop_map(|k| format!("{k} = \"x\"\n")),
        "[a-z0-9*/-]{0,12}".prop_map(|v| format!("id = \"{v}\"\n")),
        "[a-z0-9*/-]{0,12}".prop_map(|v| format!("speaks_for = [\"{v}\"]\n")),
        "[a-z0-9]{0,8}".prop_map(|v| format!("protocols = [\"{v}\"]\n")),
        "[a-z0-9]{0,8}".prop_map(|v| format!("identity = \"{v}\"\n")),
        "[0-9a-fA-Fxz:]{0,70}".prop_map(|v| format!("sha256 = \"{v}\"\n")),
        "[0-9a-fA-Fxz]{0,140}".prop_map(|v| format!("key = \"hex:{v}\"\n")),
        Just(format!("key = \"hex:{KEY_HEX}\"\n")),
        Just(format!("key = {KEY_HEX}\n")),
        Just(format!("revoked = \"{KEY_HEX}\"\n")),
        Just("key = \"${UNSET}\"\n".to_owned()),
        Just("key_file = \"nope.key\"\n".to_owned()),
        Just("revoked = true\n".to_owned()),
        Just("classes = []\n".to_owned()),
        "\\PC{0,20}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn the_loader_never_panics_and_never_echoes_a_key(parts in prop::collection::vec(fragment(), 0..24)) {
        let text = parts.concat();
        // Parse + validate + compile, through the public loader.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("devices.toml");
        write_private(&path, &text);
        let r = load_at(&path);
        if let Err(e) = r {
            let shown = e.to_string();
            prop_assert!(!shown.to_ascii_lowercase().contains(KEY_HEX), "{}", shown);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_parser(text in "\\PC{0,400}") {
        let _ = RegistryFile::parse(&text, Path::new("devices.toml"));
    }

    #[test]
    fn a_registry_written_out_reads_back_equal(file in registry_file()) {
        let text = file.to_toml().unwrap();
        let back = RegistryFile::parse(&text, Path::new("devices.toml"))
            .map_err(|p| TestCaseError::fail(format!("{p:?}\n{text}")))?;
        prop_assert_eq!(back, file);
    }
}

fn opt_list(s: &'static str) -> impl Strategy<Value = Option<Vec<String>>> {
    prop::option::of(prop::collection::vec(s, 0..3))
}

fn device() -> impl Strategy<Value = DeviceSpec> {
    (
        "[a-z0-9-]{1,12}",
        opt_list("(coaps|https|mqtt|lwm2ms)"),
        opt_list("(vital|alarm|bulk)"),
        opt_list("[a-z/*]{1,10}"),
        opt_list("[a-z0-9*-]{1,10}"),
        any::<bool>(),
        prop::option::of(("[ -~]{1,20}", any::<bool>(), "[0-9a-f]{32,64}")),
        prop::collection::vec(("[a-z0-9]{1,6}", "[0-9a-f]{64}"), 0..3),
        prop::collection::vec("[0-9a-f:]{64,95}", 0..3),
    )
        .prop_map(
            |(id, protocols, classes, resources, speaks_for, revoked, psk, tokens, certs)| {
                let mut d = DeviceSpec::new(id);
                d.protocols = protocols;
                d.classes = classes;
                d.resources = resources;
                d.speaks_for = speaks_for;
                d.revoked = revoked;
                d.psk = psk.map(|(identity, file, hex)| PskSpec {
                    identity,
                    key: (!file).then(|| KeyText::new(format!("hex:{hex}"))),
                    key_file: file.then(|| format!("keys/{hex}.key").into()),
                });
                d.tokens = tokens
                    .into_iter()
                    .map(|(id, sha256)| TokenSpec { id, sha256 })
                    .collect();
                d.certificates = certs
                    .into_iter()
                    .map(|sha256| CertificateSpec { sha256 })
                    .collect();
                d
            },
        )
}

fn registry_file() -> impl Strategy<Value = RegistryFile> {
    (any::<bool>(), prop::collection::vec(device(), 0..4)).prop_map(|(q, devices)| RegistryFile {
        unknown: if q {
            UnknownPolicy::Quarantine
        } else {
            UnknownPolicy::Reject
        },
        devices,
    })
}
