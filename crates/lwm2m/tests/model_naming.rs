//! Reading names and units for resource paths.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use wardgate_lwm2m::{ObjectModel, Path, ReadingName, parse_ddf};

fn name(m: &ObjectModel, path: &str) -> (String, Option<String>) {
    let r = m.reading_name(&path.parse::<Path>().unwrap()).unwrap();
    (r.name, r.unit)
}

fn pair(n: &str, u: Option<&str>) -> (String, Option<String>) {
    (n.to_owned(), u.map(str::to_owned))
}

#[test]
fn ipso_sensor_values_are_named_after_their_object_with_a_default_unit() {
    let m = ObjectModel::builtin();
    for (path, n, u) in [
        ("/3303/0/5700", "temperature", Some("Cel")),
        ("/3304/0/5700", "humidity", Some("%RH")),
        ("/3316/0/5700", "voltage", Some("V")),
        ("/3323/0/5700", "pressure", Some("Pa")),
        ("/3301/0/5700", "illuminance", Some("lx")),
        ("/3346/0/5700", "rate", None),
        ("/3300/0/5700", "generic_sensor", None),
    ] {
        assert_eq!(name(&m, path), pair(n, u), "{path}");
    }
}

#[test]
fn a_non_zero_instance_is_appended_after_the_object() {
    let m = ObjectModel::builtin();
    assert_eq!(name(&m, "/3303/1/5700"), pair("temperature/1", Some("Cel")));
    assert_eq!(
        name(&m, "/3303/2/5601"),
        pair("temperature/2/min_measured_value", Some("Cel"))
    );
    assert_eq!(
        name(&m, "/3347/3/5500"),
        pair("push_button/3/digital_input_state", None)
    );
}

#[test]
fn other_resources_are_object_slash_resource_in_snake_case() {
    let m = ObjectModel::builtin();
    for (path, n, u) in [
        ("/3/0/9", "device/battery_level", Some("%")),
        ("/3/0/0", "device/manufacturer", None),
        ("/3/0/7/1", "device/power_source_voltage/1", Some("mV")),
        ("/3/0/7/0", "device/power_source_voltage/0", Some("mV")),
        (
            "/3303/0/5601",
            "temperature/min_measured_value",
            Some("Cel"),
        ),
        ("/3303/0/5604", "temperature/max_range_value", Some("Cel")),
        ("/3303/0/5518", "temperature/timestamp", None),
        (
            "/3303/0/6050",
            "temperature/fractional_timestamp",
            Some("s"),
        ),
        ("/3342/0/5500", "on_off_switch/digital_input_state", None),
        (
            "/4/0/2",
            "connectivity_monitoring/radio_signal_strength",
            Some("dBm"),
        ),
        ("/6/0/0", "location/latitude", Some("lat")),
        ("/3336/0/6051", "location/numeric_latitude", Some("lat")),
        ("/1/0/1", "lwm2m_server/lifetime", Some("s")),
        ("/5/0/7", "firmware_update/pkgversion", None),
        ("/3306/0/5851", "actuation/dimmer", Some("%")),
        // The sensor value's short form is for the resource itself only.
        ("/3303/0/5700/1", "temperature/sensor_value/1", Some("Cel")),
    ] {
        assert_eq!(name(&m, path), pair(n, u), "{path}");
    }
}

#[test]
fn unknown_objects_and_resources_fall_back_to_the_path() {
    let m = ObjectModel::builtin();
    assert_eq!(name(&m, "/3442/0/1"), pair("3442/0/1", None));
    assert_eq!(name(&m, "/3442/0/1/2"), pair("3442/0/1/2", None));
    assert_eq!(name(&m, "/3/0/65"), pair("3/0/65", None));
    assert_eq!(
        name(&ObjectModel::empty(), "/3303/0/5700"),
        pair("3303/0/5700", None)
    );
    for above_resource in ["/", "/3303", "/3303/0"] {
        assert_eq!(
            m.reading_name(&above_resource.parse().unwrap()),
            None,
            "{above_resource}"
        );
    }
}

#[test]
fn the_devices_sensor_units_override_the_default_unit() {
    let m = ObjectModel::builtin();
    let p = |s: &str| s.parse::<Path>().unwrap();
    let with =
        |path: &str, units: Option<&str>| m.reading_name_with_units(&p(path), units).unwrap().unit;
    assert_eq!(with("/3303/0/5700", Some("°F")).as_deref(), Some("°F"));
    assert_eq!(with("/3303/0/5700", Some("K")).as_deref(), Some("K"));
    assert_eq!(
        with("/3303/0/5700", Some("degrees Celsius")).as_deref(),
        Some("Cel")
    );
    // IPSO devices often say "C" for Celsius; in a temperature object that is what it means.
    assert_eq!(with("/3303/0/5700", Some("C")).as_deref(), Some("Cel"));
    assert_eq!(with("/3303/0/5602", Some("°F")).as_deref(), Some("°F"));
    assert_eq!(with("/3303/0/5700", Some("  ")).as_deref(), Some("Cel"));
    assert_eq!(with("/3303/0/5700", None).as_deref(), Some("Cel"));
    assert_eq!(
        with("/3346/0/5700", Some("bpm")).as_deref(),
        Some("beat/min")
    );
    assert_eq!(with("/3300/0/5700", Some("ppm")).as_deref(), Some("ppm"));
    assert_eq!(with("/3323/0/5700", Some("hPa")).as_deref(), Some("hPa"));
    // Not a measured resource: Sensor Units does not apply.
    assert_eq!(with("/3/0/9", Some("V")).as_deref(), Some("%"));
    assert_eq!(with("/3303/0/5518", Some("V")), None);
    let r = m.reading_name(&p("/3303/0/5700")).unwrap();
    assert!(r.sensor_units_apply);
    assert!(
        !m.reading_name(&p("/3303/0/5750"))
            .unwrap()
            .sensor_units_apply
    );
}

#[test]
fn user_objects_are_named_from_their_ddf_and_units_are_normalized() {
    let mut m = ObjectModel::builtin();
    let ddf = "<LWM2M><Object><Name>SpO2 Monitor</Name><ObjectID>10600</ObjectID>\
        <MultipleInstances>Multiple</MultipleInstances><Mandatory>Optional</Mandatory><Resources>\
        <Item ID=\"5700\"><Name>Sensor Value</Name><Operations>R</Operations><MultipleInstances>Single</MultipleInstances>\
        <Mandatory>Mandatory</Mandatory><Type>Float</Type><Units>percent</Units></Item>\
        <Item ID=\"1\"><Name>Pulse Rate</Name><Operations>R</Operations><MultipleInstances>Single</MultipleInstances>\
        <Mandatory>Optional</Mandatory><Type>Integer</Type><Units>beats per minute</Units></Item>\
        <Item ID=\"2\"><Name>Cuff Pressure</Name><Operations>R</Operations><MultipleInstances>Single</MultipleInstances>\
        <Mandatory>Optional</Mandatory><Type>Float</Type><Units>mmHg</Units></Item>\
        <Item ID=\"3\"><Name>√√√</Name><Operations>R</Operations><MultipleInstances>Single</MultipleInstances>\
        <Mandatory>Optional</Mandatory><Type>Float</Type></Item>\
        </Resources></Object></LWM2M>";
    for def in parse_ddf(ddf).unwrap() {
        m.insert(def);
    }
    assert_eq!(name(&m, "/10600/0/5700"), pair("spo2_monitor", Some("%")));
    assert_eq!(
        name(&m, "/10600/0/1"),
        pair("spo2_monitor/pulse_rate", Some("beat/min"))
    );
    assert_eq!(
        name(&m, "/10600/0/2"),
        pair("spo2_monitor/cuff_pressure", Some("mmHg"))
    );
    assert_eq!(name(&m, "/10600/0/3"), pair("spo2_monitor/3", None));
    // No 5701 in this object: nothing for the device to override.
    let r: ReadingName = m.reading_name(&"/10600/0/5700".parse().unwrap()).unwrap();
    assert!(!r.sensor_units_apply);
}

#[test]
fn names_are_valid_senml_names() {
    let m = ObjectModel::builtin();
    for o in m.objects() {
        for rid in o.resources.keys() {
            for path in [
                Path::resource(o.id, 0, *rid),
                Path::resource_instance(o.id, 7, *rid, 3),
            ] {
                let n = m.reading_name(&path).unwrap().name;
                assert!(
                    n.bytes().all(|b| b.is_ascii_lowercase()
                        || b.is_ascii_digit()
                        || b == b'_'
                        || b == b'/'),
                    "{path} → {n}"
                );
                assert!(
                    !n.starts_with('/') && !n.ends_with('/') && !n.contains("//"),
                    "{n}"
                );
            }
        }
    }
}
