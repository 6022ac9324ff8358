//! The built-in object definitions: every one parses and carries the OMA registry's facts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use wardgate_lwm2m::node::TypeLookup;
use wardgate_lwm2m::{ObjectModel, Operations, ResourceType};

fn model() -> ObjectModel {
    ObjectModel::builtin()
}

/// (oid, rid, operations, multiple, mandatory, type, units)
type Fact = (
    u16,
    u16,
    Operations,
    bool,
    bool,
    ResourceType,
    Option<&'static str>,
);

#[test]
fn builtin_model_knows_the_core_and_ward_objects() {
    let m = model();
    let ids: Vec<u16> = m.objects().map(|o| o.id).collect();
    assert_eq!(
        ids,
        [
            0, 1, 2, 3, 4, 5, 6, 7, 3300, 3301, 3303, 3304, 3306, 3311, 3316, 3323, 3336, 3341,
            3342, 3346, 3347
        ]
    );
    let names: Vec<(&str, u16)> = m.objects().map(|o| (o.name.as_str(), o.id)).collect();
    for (name, id) in [
        ("LWM2M Security", 0),
        ("LwM2M Server", 1),
        ("LwM2M Access Control", 2),
        ("Device", 3),
        ("Connectivity Monitoring", 4),
        ("Firmware Update", 5),
        ("Location", 6),
        ("Connectivity Statistics", 7),
        ("Generic Sensor", 3300),
        ("Illuminance", 3301),
        ("Temperature", 3303),
        ("Humidity", 3304),
        ("Actuation", 3306),
        ("Light Control", 3311),
        ("Voltage", 3316),
        ("Pressure", 3323),
        ("Location", 3336),
        ("Addressable Text Display", 3341),
        ("On/Off switch", 3342),
        ("Rate", 3346),
        ("Push button", 3347),
    ] {
        assert!(names.contains(&(name, id)), "{id} {name}");
    }
}

#[test]
fn object_level_facts_match_the_registry() {
    let m = model();
    // (oid, version, lwm2m version, multiple, mandatory, urn)
    for (oid, ver, lwm2m, multiple, mandatory, urn) in [
        (0, "1.1", "1.1", true, true, "urn:oma:lwm2m:oma:0:1.1"),
        (1, "1.1", "1.1", true, true, "urn:oma:lwm2m:oma:1:1.1"),
        (2, "1.1", "1.0", true, false, "urn:oma:lwm2m:oma:2:1.1"),
        (3, "1.1", "1.1", false, true, "urn:oma:lwm2m:oma:3:1.1"),
        (4, "1.2", "1.1", false, false, "urn:oma:lwm2m:oma:4:1.2"),
        (5, "1.1", "1.1", false, false, "urn:oma:lwm2m:oma:5:1.1"),
        (6, "1.0", "1.0", false, false, "urn:oma:lwm2m:oma:6"),
        (7, "1.0", "1.0", false, false, "urn:oma:lwm2m:oma:7"),
        (
            3303,
            "1.1",
            "1.0",
            true,
            false,
            "urn:oma:lwm2m:ext:3303:1.1",
        ),
        (3311, "1.0", "1.0", true, false, "urn:oma:lwm2m:ext:3311"),
        (
            3336,
            "2.0",
            "1.0",
            true,
            false,
            "urn:oma:lwm2m:ext:3336:2.0",
        ),
        (
            3347,
            "1.1",
            "1.0",
            true,
            false,
            "urn:oma:lwm2m:ext:3347:1.1",
        ),
    ] {
        let o = m.object(oid).unwrap();
        assert_eq!(o.version, ver, "{oid}");
        assert_eq!(o.lwm2m_version, lwm2m, "{oid}");
        assert_eq!(o.multiple, multiple, "{oid}");
        assert_eq!(o.mandatory, mandatory, "{oid}");
        assert_eq!(o.urn, urn, "{oid}");
        assert!(!o.description.is_empty(), "{oid}");
    }
    // Resource counts of the versions we ship.
    for (oid, n) in [
        (0, 18),
        (1, 24),
        (2, 4),
        (3, 23),
        (4, 13),
        (5, 13),
        (6, 7),
        (7, 9),
        (3303, 12),
        (3347, 5),
        (3336, 10),
    ] {
        assert_eq!(m.object(oid).unwrap().resources.len(), n, "{oid}");
    }
}

#[test]
fn resource_facts_match_the_registry() {
    use Operations::{E, None as NoOp, R, RW, W};
    use ResourceType as T;
    let facts: &[Fact] = &[
        (0, 0, NoOp, false, true, T::String, None),
        (0, 1, NoOp, false, true, T::Boolean, None),
        (0, 2, NoOp, false, true, T::Integer, None),
        (0, 5, NoOp, false, true, T::Opaque, None),
        (0, 10, NoOp, false, false, T::Integer, None),
        (0, 11, NoOp, false, false, T::Integer, Some("s")),
        (0, 16, NoOp, true, false, T::Unsigned, None),
        (0, 17, NoOp, false, false, T::Objlnk, None),
        (1, 0, R, false, true, T::Integer, None),
        (1, 1, RW, false, true, T::Integer, Some("s")),
        (1, 4, E, false, false, T::None, None),
        (1, 6, RW, false, true, T::Boolean, None),
        (1, 7, RW, false, true, T::String, None),
        (1, 8, E, false, true, T::None, None),
        (1, 10, RW, false, false, T::Objlnk, None),
        (1, 11, R, false, false, T::Unsigned, None),
        (1, 12, R, false, false, T::Time, None),
        (1, 23, RW, false, false, T::Boolean, None),
        (2, 2, RW, true, false, T::Integer, None),
        (2, 3, RW, false, true, T::Integer, None),
        (3, 0, R, false, false, T::String, None),
        (3, 4, E, false, true, T::None, None),
        (3, 6, R, true, false, T::Integer, None),
        (3, 7, R, true, false, T::Integer, Some("mV")),
        (3, 9, R, false, false, T::Integer, Some("%")),
        (3, 11, R, true, true, T::Integer, None),
        (3, 13, RW, false, false, T::Time, None),
        (3, 16, R, false, true, T::String, None),
        (3, 22, R, true, false, T::Objlnk, None),
        (4, 0, R, false, true, T::Integer, None),
        (4, 2, R, false, true, T::Integer, Some("dBm")),
        (4, 4, R, true, true, T::String, None),
        (5, 0, W, false, true, T::Opaque, None),
        (5, 1, RW, false, true, T::String, None),
        (5, 2, E, false, true, T::None, None),
        (5, 3, R, false, true, T::Integer, None),
        (5, 13, RW, false, false, T::Unsigned, Some("s")),
        (6, 0, R, false, true, T::Float, Some("lat")),
        (6, 1, R, false, true, T::Float, Some("lon")),
        (6, 5, R, false, true, T::Time, None),
        (6, 6, R, false, false, T::Float, Some("m/s")),
        (7, 4, R, false, false, T::Integer, Some("B")),
        (7, 6, E, false, true, T::None, None),
        (7, 8, RW, false, false, T::Integer, Some("s")),
        (3300, 5700, R, false, true, T::Float, None),
        (3300, 5751, R, false, false, T::String, None),
        (3301, 5700, R, false, true, T::Float, None),
        (3303, 5700, R, false, true, T::Float, None),
        (3303, 5701, R, false, false, T::String, None),
        (3303, 5601, R, false, false, T::Float, None),
        (3303, 5605, E, false, false, T::None, None),
        (3303, 5750, RW, false, false, T::String, None),
        (3303, 5518, R, false, false, T::Time, None),
        (3303, 6050, R, false, false, T::Float, Some("s")),
        (3303, 6042, R, false, false, T::Integer, None),
        (3304, 5700, R, false, true, T::Float, None),
        (3306, 5850, RW, false, true, T::Boolean, None),
        (3306, 5851, RW, false, false, T::Integer, Some("%")),
        (3306, 5852, RW, false, false, T::Integer, Some("s")),
        (3311, 5805, R, false, false, T::Float, Some("Wh")),
        (3311, 5706, RW, false, false, T::String, None),
        (3316, 5700, R, false, true, T::Float, None),
        (3316, 5821, RW, false, false, T::Float, None),
        (3323, 5700, R, false, true, T::Float, None),
        (3336, 6051, R, false, true, T::Float, Some("lat")),
        (3336, 5705, R, false, false, T::Float, Some("deg")),
        (3336, 5517, R, false, false, T::Opaque, None),
        (3341, 5527, RW, false, true, T::String, None),
        (3341, 5530, E, false, false, T::None, None),
        (3341, 5531, RW, false, false, T::Float, Some("%")),
        (3342, 5500, R, false, true, T::Boolean, None),
        (3342, 5854, RW, false, false, T::Integer, Some("s")),
        (3346, 5700, R, false, true, T::Float, None),
        (3347, 5500, R, false, true, T::Boolean, None),
        (3347, 5501, R, false, false, T::Integer, None),
    ];
    let m = model();
    for &(oid, rid, ops, multiple, mandatory, rtype, units) in facts {
        let r = m
            .resource(oid, rid)
            .unwrap_or_else(|| panic!("/{oid}/x/{rid} missing"));
        assert_eq!(
            (
                r.operations,
                r.multiple,
                r.mandatory,
                r.rtype,
                r.units.as_deref()
            ),
            (ops, multiple, mandatory, rtype, units),
            "/{oid}/x/{rid} {}",
            r.name
        );
    }
    assert_eq!(m.resource(3, 9).unwrap().name, "Battery Level");
    assert_eq!(
        m.resource(3, 9).unwrap().range_enumeration.as_deref(),
        Some("0..100")
    );
    assert_eq!(m.resource(0, 0).unwrap().name, "LWM2M  Server URI");
}

#[test]
fn every_builtin_resource_is_consistent() {
    let m = model();
    for o in m.objects() {
        assert!(o.urn.contains(&format!(":{}", o.id)), "{}", o.urn);
        for (rid, r) in &o.resources {
            assert_eq!(*rid, r.id);
            assert!(!r.name.is_empty(), "/{}/{rid}", o.id);
            assert!(!r.description.is_empty(), "/{}/{rid}", o.id);
            assert_eq!(
                r.operations == Operations::E,
                r.rtype == ResourceType::None,
                "/{}/{rid}: executables and only they are untyped",
                o.id
            );
        }
        if o.resource(5700).is_some() {
            let sv = o.resource(5700).unwrap();
            assert_eq!(sv.rtype, ResourceType::Float, "{}", o.id);
            assert!(sv.mandatory && sv.operations == Operations::R);
            assert!(o.resource(5701).is_some(), "{} has Sensor Units", o.id);
        }
    }
}

#[test]
fn older_versions_are_kept_and_latest_wins() {
    let m = model();
    let versions: Vec<&str> = m.versions(3303).map(|o| o.version.as_str()).collect();
    assert_eq!(versions, ["1.0", "1.1"]);
    let v10 = m.object_version(3303, "1.0").unwrap();
    assert_eq!(v10.urn, "urn:oma:lwm2m:ext:3303");
    assert_eq!(v10.resources.len(), 7);
    assert!(v10.resource(5518).is_none());
    assert_eq!(m.object(3303).unwrap().version, "1.1");
    assert!(m.object_version(3303, "1.2").is_none());
    assert!(m.object_version(9999, "1.0").is_none());

    // 3336 2.0 dropped the string coordinates of 1.0; they still resolve for old devices.
    assert!(m.object(3336).unwrap().resource(5514).is_none());
    assert_eq!(m.resource(3336, 5514).unwrap().rtype, ResourceType::String);
    assert_eq!(m.object_version(3336, "1.0").unwrap().resources.len(), 7);
}

#[test]
fn type_lookup_answers_for_known_resources_only() {
    let m = model();
    let lookup: &dyn TypeLookup = &m;
    assert_eq!(lookup.resource_type(3303, 5700), Some(ResourceType::Float));
    assert_eq!(lookup.resource_type(1, 1), Some(ResourceType::Integer));
    assert_eq!(lookup.resource_type(3, 13), Some(ResourceType::Time));
    assert_eq!(lookup.resource_type(0, 16), Some(ResourceType::Unsigned));
    assert_eq!(lookup.resource_type(3, 4), Some(ResourceType::None));
    assert_eq!(lookup.resource_type(3303, 9999), None);
    assert_eq!(lookup.resource_type(9999, 0), None);
    assert_eq!(lookup.is_multiple(3, 7), Some(true));
    assert_eq!(lookup.is_multiple(3, 9), Some(false));
    assert_eq!(lookup.is_multiple(4, 4), Some(true));
    assert_eq!(lookup.is_multiple(9999, 0), None);
}

#[test]
fn model_is_shared_across_tasks_behind_an_arc() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<ObjectModel>();
    let shared = Arc::new(model());
    let other = Arc::clone(&shared);
    assert_eq!(other.len(), shared.len());
    assert!(!ObjectModel::builtin().is_empty());
    assert!(ObjectModel::empty().is_empty());
}
