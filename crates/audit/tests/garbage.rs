//! The verifier is total: arbitrary bytes never make it panic, and any one changed byte of a
//! log is found.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use proptest::prelude::*;
use wardgate_audit::verify;

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_the_verifier(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("audit.log");
        std::fs::write(&p, &bytes).unwrap();
        let report = verify(&[p], Some(&[3; 32]));
        let _ = report.to_string();
    }

    #[test]
    fn json_looking_lines_never_panic_the_verifier(
        lines in proptest::collection::vec(
            (any::<u64>(), "[0-9a-f]{0,70}", "[0-9a-f]{0,70}", any::<bool>()),
            0..20,
        )
    ) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("audit.log");
        let text: String = lines
            .iter()
            .map(|(seq, prev, hash, nl)| {
                format!(
                    "{{\"v\":1,\"seq\":{seq},\"kind\":\"x\",\"prev\":\"{prev}\",\"hash\":\"{hash}\"}}{}",
                    if *nl { "\n" } else { "" }
                )
            })
            .collect();
        std::fs::write(&p, text).unwrap();
        let _ = verify(&[p], None).to_string();
    }
}

#[test]
fn any_single_changed_byte_of_an_unsigned_log_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = common::closed_log(dir.path(), 3, |_| {});
    let good = std::fs::read(&path).unwrap();
    let mut runner = proptest::test_runner::TestRunner::default();
    runner
        .run(&(0..good.len(), 1u8..=255), |(at, flip)| {
            let mut bad = good.clone();
            bad[at] ^= flip;
            std::fs::write(&path, &bad).unwrap();
            let report = verify(std::slice::from_ref(&path), None);
            prop_assert!(!report.is_intact(), "byte {at} ^ {flip} not found");
            Ok(())
        })
        .unwrap();
}
