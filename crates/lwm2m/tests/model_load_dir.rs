//! Loading a directory of user DDF files over the built-ins.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;

use wardgate_lwm2m::model::{FileError, MAX_DDF_BYTES};
use wardgate_lwm2m::{DdfError, ObjectModel, ResourceType};

fn ddf(oid: u16, version: &str, name: &str, units: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<LWM2M><Object ObjectType=\"MODefinition\"><Name>{name}</Name>\
         <ObjectID>{oid}</ObjectID><ObjectVersion>{version}</ObjectVersion>\
         <MultipleInstances>Multiple</MultipleInstances><Mandatory>Optional</Mandatory><Resources>\
         <Item ID=\"5700\"><Name>Sensor Value</Name><Operations>R</Operations>\
         <MultipleInstances>Single</MultipleInstances><Mandatory>Mandatory</Mandatory><Type>Float</Type>\
         <Units>{units}</Units></Item>\
         <Item ID=\"5701\"><Name>Sensor Units</Name><Operations>R</Operations>\
         <MultipleInstances>Single</MultipleInstances><Mandatory>Optional</Mandatory><Type>String</Type></Item>\
         </Resources></Object></LWM2M>\n"
    )
}

fn file_names(errors: &[FileError]) -> Vec<String> {
    errors
        .iter()
        .map(|e| e.path.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn user_files_add_objects_and_versions_and_replace_builtin_versions() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("10500.xml"),
        ddf(10500, "1.0", "Infusion Pump", "ml/h"),
    )
    .unwrap();
    fs::write(
        dir.path().join("3303.XML"),
        ddf(3303, "1.1", "Temperature", "Cel"),
    )
    .unwrap();
    fs::write(
        dir.path().join("3304-1_2.xml"),
        ddf(3304, "1.2", "Humidity", "%RH"),
    )
    .unwrap();
    fs::write(dir.path().join("README.md"), "not a definition").unwrap();
    fs::create_dir(dir.path().join("sub.xml")).unwrap();

    let m = ObjectModel::load_dir(dir.path()).unwrap();
    assert_eq!(m.object(10500).unwrap().name, "Infusion Pump");
    assert_eq!(m.resource(10500, 5700).unwrap().rtype, ResourceType::Float);
    // 3303 1.1 replaced: the user's version has two resources and a unit.
    let t = m.object(3303).unwrap();
    assert_eq!((t.version.as_str(), t.resources.len()), ("1.1", 2));
    assert_eq!(t.resource(5700).unwrap().units.as_deref(), Some("Cel"));
    assert_eq!(m.object_version(3303, "1.0").unwrap().resources.len(), 7);
    // 3304 1.2 added as the latest; 1.1 kept.
    assert_eq!(m.object(3304).unwrap().version, "1.2");
    assert!(m.object_version(3304, "1.1").is_some());
    // Built-ins untouched.
    assert_eq!(m.object(3).unwrap().name, "Device");
    assert_eq!(m.len(), ObjectModel::builtin().len() + 1);
}

#[test]
fn an_empty_directory_gives_the_builtins() {
    let dir = tempfile::tempdir().unwrap();
    let m = ObjectModel::load_dir(dir.path()).unwrap();
    assert_eq!(m.len(), ObjectModel::builtin().len());
}

#[test]
fn every_bad_file_is_reported_by_name_and_good_ones_do_not_hide_them() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    fs::write(p.join("a_good.xml"), ddf(10500, "1.0", "Pump", "")).unwrap();
    fs::write(
        p.join("b_doctype.xml"),
        format!("<!DOCTYPE x>{}", ddf(10501, "1.0", "X", "")),
    )
    .unwrap();
    fs::write(
        p.join("c_type.xml"),
        ddf(10502, "1.0", "Scale", "").replace(">Float<", ">Double<"),
    )
    .unwrap();
    fs::write(
        p.join("d_latin1.xml"),
        b"<LWM2M><Object><Name>Temp\xe9rature</Name></Object></LWM2M>",
    )
    .unwrap();
    fs::write(p.join("e_big.xml"), vec![b' '; MAX_DDF_BYTES + 1]).unwrap();
    fs::write(p.join("f_good.xml"), ddf(10503, "1.0", "Bed", "")).unwrap();
    fs::write(p.join("g_empty.xml"), "").unwrap();

    let err = ObjectModel::load_dir(p).unwrap_err();
    assert_eq!(
        file_names(&err.errors),
        [
            "b_doctype.xml",
            "c_type.xml",
            "d_latin1.xml",
            "e_big.xml",
            "g_empty.xml"
        ]
    );
    let kinds: Vec<&DdfError> = err.errors.iter().map(|e| &e.error).collect();
    assert!(matches!(kinds[0], DdfError::Dtd(_)));
    assert!(matches!(
        kinds[1],
        DdfError::Field {
            field: "Type",
            resource: Some(5700),
            ..
        }
    ));
    assert!(matches!(kinds[2], DdfError::NotUtf8 { .. }));
    assert!(
        matches!(kinds[3], DdfError::TooLarge { size, .. } if *size == MAX_DDF_BYTES as u64 + 1)
    );
    assert!(matches!(kinds[4], DdfError::Xml(_)));
    let msg = err.to_string();
    assert!(
        msg.contains("c_type.xml: object 10502 (Scale), resource 5700: <Type>"),
        "{msg}"
    );
    assert!(
        msg.contains("b_doctype.xml") && msg.contains("e_big.xml"),
        "{msg}"
    );
}

#[test]
fn two_files_defining_the_same_object_version_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("1.xml"), ddf(10500, "1.0", "Pump", "")).unwrap();
    fs::write(
        dir.path().join("2.xml"),
        ddf(10500, "1.0", "Pump again", ""),
    )
    .unwrap();
    let err = ObjectModel::load_dir(dir.path()).unwrap_err();
    assert_eq!(file_names(&err.errors), ["2.xml"]);
    assert!(
        matches!(&err.errors[0].error, DdfError::DefinedInOtherFile { id: 10500, other, .. } if other.ends_with("1.xml")),
        "{err}"
    );
}

#[test]
fn a_missing_directory_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let err = ObjectModel::load_dir(&missing).unwrap_err();
    assert_eq!(err.errors.len(), 1);
    assert_eq!(err.errors[0].path, missing);
    assert!(matches!(err.errors[0].error, DdfError::Io(_)));
    assert!(err.to_string().contains("nope"));
}
