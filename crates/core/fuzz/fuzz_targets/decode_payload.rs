//! Feeds arbitrary bytes to `payload::decode` for every Content-Format.
//!
//! Beyond "never panics", it checks what the decoders promise about anything they accept: the
//! published record rules (`docs/readings.schema.json` `$defs/record`), the limits, and that
//! SenML re-encoding of the result decodes to the same records.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use wardgate_core::Record;
use wardgate_core::payload::{self, ContentFormat, DecodeContext, Limits};
use wardgate_core::senml;

/// SenML times below 2^28 are relative, so only records with larger times re-decode unchanged.
const ABSOLUTE_TIME_MIN: f64 = 268_435_456.0;

fuzz_target!(|data: &[u8]| {
    let ctx = DecodeContext {
        now: UNIX_EPOCH + Duration::from_secs(1_763_759_045),
        default_name: Some("value"),
        limits: Limits::default(),
    };
    for format in ContentFormat::ALL {
        if let Ok(records) = payload::decode(format, data, &ctx) {
            check(&records, &ctx.limits);
        }
    }
});

fn check(records: &[Record], limits: &Limits) {
    assert!(!records.is_empty() && records.len() <= limits.max_records);
    for r in records {
        assert!(!r.n.is_empty() && r.n.len() <= limits.max_name_len, "{r:?}");
        assert!(
            r.n.as_bytes()[0].is_ascii_alphanumeric()
                && r.n
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"-:./_".contains(&c)),
            "{r:?}"
        );
        let kinds = [
            r.v.is_some(),
            r.vs.is_some(),
            r.vb.is_some(),
            r.vd.is_some(),
        ];
        let kinds = kinds.iter().filter(|k| **k).count();
        assert!(kinds == 1 || (kinds == 0 && r.s.is_some()), "{r:?}");
        for x in [r.v, r.s, r.ut, Some(r.t)].into_iter().flatten() {
            assert!(x.is_finite(), "{r:?}");
        }
        assert!(r.ut.is_none_or(|ut| ut >= 0.0), "{r:?}");
        assert!(
            r.vs.as_ref()
                .is_none_or(|vs| vs.len() <= limits.max_value_len),
            "{r:?}"
        );
    }
    if records.iter().all(|r| r.t >= ABSOLUTE_TIME_MIN) {
        let ctx = DecodeContext {
            now: UNIX_EPOCH,
            default_name: None,
            limits: *limits,
        };
        let json = senml::decode_json(&senml::encode_json(records), &ctx);
        assert_eq!(json.as_deref(), Ok(records), "SenML JSON re-encoding");
        let cbor = senml::decode_cbor(&senml::encode_cbor(records), &ctx);
        assert_eq!(cbor.as_deref(), Ok(records), "SenML CBOR re-encoding");
    }
}
