//! The DDF object-definition parser on arbitrary bytes: what runs on every user-supplied `*.xml`
//! file at start-up. It must never panic; whatever it accepts must have ids in range and
//! non-empty names, and must name every one of its resources as a reading without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wardgate_lwm2m::model::{ObjectModel, parse_ddf_bytes};
use wardgate_lwm2m::node::TypeLookup;
use wardgate_lwm2m::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(defs) = parse_ddf_bytes(data) else {
        return;
    };
    assert!(!defs.is_empty());
    let mut model = ObjectModel::empty();
    for def in defs {
        assert!(def.id < u16::MAX && !def.name.is_empty());
        assert!(def.resources.iter().all(|(rid, r)| *rid == r.id && r.id < u16::MAX));
        model.insert(def);
    }
    for object in model.objects() {
        for r in object.resources.values() {
            assert_eq!(model.resource_type(object.id, r.id), Some(r.rtype));
            for path in [
                Path::resource(object.id, 0, r.id),
                Path::resource_instance(object.id, 1, r.id, 2),
            ] {
                let name = model.reading_name(&path).expect("a resource path has a name");
                assert!(!name.name.is_empty());
            }
        }
    }
});
