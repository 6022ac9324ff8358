//! Property tests: arbitrary entries of every type, at every depth, encode and decode back to
//! themselves in every format that can carry them; arbitrary bytes never panic any decoder.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod formats_support;

use formats_support::*;
use proptest::prelude::*;
use wardgate_lwm2m::format::{self, Format};
use wardgate_lwm2m::node::NoTypes;
use wardgate_lwm2m::{Entry, Path, Value};

/// A value of the type the test model gives resource `rid % 10` of object 9999.
fn value_for(kind: usize) -> BoxedStrategy<Value> {
    match kind {
        0 => ".{0,12}".prop_map(Value::String).boxed(),
        1 => any::<i64>().prop_map(Value::Integer).boxed(),
        2 => any::<u64>().prop_map(Value::Unsigned).boxed(),
        3 => any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::Float)
            .boxed(),
        4 => any::<bool>().prop_map(Value::Boolean).boxed(),
        5 => proptest::collection::vec(any::<u8>(), 0..40)
            .prop_map(Value::Opaque)
            .boxed(),
        6 => any::<i64>().prop_map(Value::Time).boxed(),
        7 => (any::<u16>(), any::<u16>())
            .prop_map(|(o, i)| Value::Objlnk(o, i))
            .boxed(),
        _ => "<[a-z/0-9]{0,8}>".prop_map(Value::Corelnk).boxed(),
    }
}

/// Up to 12 entries in object 9999: instance 0..3, single rids 0..=8 and multiple rids 10..=18
/// with resource instances, unique paths, each with the model's type.
fn entries() -> impl Strategy<Value = Vec<Entry>> {
    let one = (0u16..3, 0usize..9, any::<bool>(), 0u16..300).prop_flat_map(
        |(iid, kind, multiple, riid)| {
            value_for(kind).prop_map(move |v| {
                let path = if multiple {
                    Path::resource_instance(9999, iid, 10 + kind as u16, riid)
                } else {
                    Path::resource(9999, iid, kind as u16)
                };
                Entry {
                    path,
                    value: v,
                    time: None,
                }
            })
        },
    );
    proptest::collection::vec(one, 0..12).prop_map(|mut v| {
        let mut seen = std::collections::HashSet::new();
        v.retain(|e| seen.insert(e.path));
        v.sort_by_key(|e| e.path);
        v
    })
}

/// The deepest path all entries share, cut to `depth` levels.
fn base_of(entries: &[Entry], depth: usize) -> Path {
    let Some(first) = entries.first() else {
        return Path::new(&[9999, 0, 0][..depth.min(3)]).unwrap();
    };
    let mut n = entries.iter().map(|e| e.path.len()).fold(depth, usize::min);
    while !entries
        .iter()
        .all(|e| e.path.ids()[..n] == first.path.ids()[..n])
    {
        n -= 1;
    }
    Path::new(&first.path.ids()[..n]).unwrap()
}

fn round_trip(f: Format, base: &Path, entries: &[Entry]) -> Result<(), TestCaseError> {
    let bytes = format::encode(f, base, entries, &Model)
        .map_err(|e| TestCaseError::fail(format!("{f:?} encode at {base}: {e}")))?;
    let back = format::decode(f, base, &bytes, &Model, now())
        .map_err(|e| TestCaseError::fail(format!("{f:?} decode at {base}: {e}")))?;
    let mut back = back;
    back.sort_by_key(|e| e.path);
    prop_assert_eq!(back, entries.to_vec(), "{:?} at {}", f, base);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn every_multi_value_format_round_trips_arbitrary_entries_at_every_depth(
        entries in entries(), depth in 0usize..5,
    ) {
        let base = base_of(&entries, depth);
        for f in [Format::SenmlJson, Format::SenmlCbor, Format::Lwm2mCbor, Format::OmaJson] {
            round_trip(f, &base, &entries)?;
        }
        if !base.is_empty() {
            round_trip(Format::Tlv, &base, &entries)?;
        }
    }

    #[test]
    fn single_value_formats_round_trip_every_type(kind in 0usize..9, v in (0usize..9).prop_flat_map(value_for)) {
        let _ = kind;
        let rid = match &v {
            Value::String(_) => 0, Value::Integer(_) => 1, Value::Unsigned(_) => 2,
            Value::Float(_) => 3, Value::Boolean(_) => 4, Value::Opaque(_) => 5,
            Value::Time(_) => 6, Value::Objlnk(..) => 7, Value::Corelnk(_) => 8,
        };
        let entries = vec![Entry { path: Path::resource(9999, 0, rid), value: v, time: None }];
        let base = Path::resource(9999, 0, rid);
        round_trip(Format::Text, &base, &entries)?;
        round_trip(Format::Cbor, &base, &entries)?;
        if rid == 5 {
            round_trip(Format::Opaque, &base, &entries)?;
        }
    }

    #[test]
    fn timestamped_entries_keep_their_times_in_senml_and_oma_json(
        entries in entries(), times in proptest::collection::vec(268_435_456.0f64..4e9, 12),
    ) {
        let timed: Vec<Entry> = entries
            .into_iter()
            .zip(times)
            .map(|(e, t)| Entry { time: Some(t), ..e })
            .collect();
        for f in [Format::SenmlJson, Format::SenmlCbor, Format::OmaJson] {
            round_trip(f, &Path::ROOT, &timed)?;
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_any_decoder(
        body in proptest::collection::vec(any::<u8>(), 0..200), depth in 0usize..5, typed in any::<bool>(),
    ) {
        let base = Path::new(&[9999, 0, 3, 1][..depth]).unwrap();
        for f in [Format::Tlv, Format::OmaJson, Format::SenmlJson, Format::SenmlCbor,
                  Format::Lwm2mCbor, Format::Cbor, Format::Text, Format::Opaque] {
            let r = if typed {
                format::decode(f, &base, &body, &Model, now())
            } else {
                format::decode(f, &base, &body, &NoTypes, now())
            };
            if let Ok(entries) = r {
                prop_assert!(entries.iter().all(|e| e.path.starts_with(&base)));
            }
        }
        let _ = format::decode_paths(Format::SenmlJson, &body);
        let _ = format::decode_paths(Format::SenmlCbor, &body);
    }

    #[test]
    fn arbitrary_text_never_panics_the_link_parser(text in ".{0,200}") {
        if let Ok(links) = wardgate_lwm2m::link::parse(&text) {
            let printed = wardgate_lwm2m::link::to_link_format(&links);
            prop_assert_eq!(wardgate_lwm2m::link::parse(&printed), Ok(links));
        }
        let _ = wardgate_lwm2m::link::parse_discover(&text);
    }
}
