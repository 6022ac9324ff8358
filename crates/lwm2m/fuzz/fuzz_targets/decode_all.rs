//! Every LwM2M content-format decoder on arbitrary bytes. The first byte picks the format and
//! whether the model knows the types, the second the request path; the rest is the body.
//! Besides "no panic, no OOM, no hang": every entry lies at or below the request path, and
//! whatever decodes and re-encodes decodes again to the same entries.
#![no_main]

use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use wardgate_lwm2m::format::{self, Format};
use wardgate_lwm2m::node::NoTypes;
use wardgate_lwm2m::{Entry, Path, ResourceType, TypeLookup};

const FORMATS: [Format; 8] = [
    Format::Tlv,
    Format::OmaJson,
    Format::SenmlJson,
    Format::SenmlCbor,
    Format::Lwm2mCbor,
    Format::Cbor,
    Format::Text,
    Format::Opaque,
];

/// Object 9: rid % 10 picks the type (0..=8), rids 10..=19 are multiple.
struct Model;

impl TypeLookup for Model {
    fn resource_type(&self, oid: u16, rid: u16) -> Option<ResourceType> {
        use ResourceType as T;
        const TYPES: [T; 10] = [
            T::String, T::Integer, T::Unsigned, T::Float, T::Boolean, T::Opaque, T::Time,
            T::Objlnk, T::Corelnk, T::None,
        ];
        (oid == 9).then(|| TYPES[usize::from(rid % 10)])
    }
    fn is_multiple(&self, oid: u16, rid: u16) -> Option<bool> {
        (oid == 9).then_some((10..20).contains(&rid))
    }
}

fn sorted(mut v: Vec<Entry>) -> Vec<Entry> {
    v.sort_by_key(|e| e.path);
    v
}

fuzz_target!(|data: &[u8]| {
    let [sel, depth, body @ ..] = data else {
        return;
    };
    let format = FORMATS[usize::from(sel % 8)];
    let types: &dyn TypeLookup = if sel & 0x80 != 0 { &Model } else { &NoTypes };
    let ids: &[u16] = &[9, 0, u16::from(depth >> 3) % 24, 1];
    let base = Path::new(&ids[..usize::from(depth % 5)]).expect("valid ids");
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600);
    let Ok(entries) = format::decode(format, &base, body, types, now) else {
        return;
    };
    for e in &entries {
        assert!(e.path.starts_with(&base) && e.path.len() >= 3, "{} outside {base}", e.path);
    }
    // Times below 2^28 are relative: they would move on a second decode.
    if entries.iter().any(|e| e.time.is_some_and(|t| t < 268_435_456.0)) {
        return;
    }
    if let Ok(again) = format::encode(format, &base, &entries, types) {
        let back = format::decode(format, &base, &again, types, now)
            .unwrap_or_else(|e| panic!("re-encoded {format:?} does not decode: {e}"));
        assert_eq!(sorted(back), sorted(entries), "{format:?} round trip");
    }
});
