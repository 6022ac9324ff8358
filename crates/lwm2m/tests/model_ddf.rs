//! The DDF parser: real-shaped files load; every malformed or hostile file is refused with an
//! error that names what is wrong, and nothing panics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use wardgate_lwm2m::model::{
    MAX_DDF_BYTES, MAX_OBJECTS_PER_FILE, MAX_RESOURCES_PER_OBJECT, parse_ddf_bytes,
};
use wardgate_lwm2m::{DdfError, Operations, ResourceType, parse_ddf};

/// One `<Object>` element with `object_fields` and `items` as its resources.
fn object(object_fields: &str, items: &str) -> String {
    format!(
        "<Object ObjectType=\"MODefinition\">{object_fields}<Resources>{items}</Resources></Object>"
    )
}

/// A minimal DDF document with one object.
fn doc(object_fields: &str, items: &str) -> String {
    format!("<LWM2M>{}</LWM2M>", object(object_fields, items))
}

const FIELDS: &str = "<Name>Temperature</Name><ObjectID>3303</ObjectID>\
    <MultipleInstances>Multiple</MultipleInstances><Mandatory>Optional</Mandatory>";

fn item(id: &str, ty: &str) -> String {
    format!(
        "<Item ID=\"{id}\"><Name>Sensor Value</Name><Operations>R</Operations>\
         <MultipleInstances>Single</MultipleInstances><Mandatory>Mandatory</Mandatory>\
         <Type>{ty}</Type><RangeEnumeration></RangeEnumeration><Units></Units>\
         <Description></Description></Item>"
    )
}

fn field_error(e: &DdfError) -> (&'static str, Option<u16>) {
    match e {
        DdfError::Field {
            field, resource, ..
        } => (field, *resource),
        other => panic!("expected a field error, got {other:?}"),
    }
}

#[test]
fn a_registry_shaped_file_with_declaration_bom_comments_namespaces_and_cdata_loads() {
    let text = "\u{feff}<?xml version=\"1.0\" encoding=\"utf-8\"?>
<!-- BSD-3 Clause License, Copyright someone -->
<LWM2M xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\"
       xsi:noNamespaceSchemaLocation=\"http://openmobilealliance.org/tech/profiles/LWM2M-v1_1.xsd\">
  <Object ObjectType=\"MODefinition\">
    <Name>  Blood Pressure Monitor </Name>
    <Description1><![CDATA[Reports <systolic> & diastolic pressure.]]></Description1>
    <ObjectID>
        10500
    </ObjectID>
    <ObjectURN>urn:oma:lwm2m:x:10500:1.1</ObjectURN>
    <LWM2MVersion>1.1</LWM2MVersion>
    <ObjectVersion>1.1</ObjectVersion>
    <MultipleInstances>single</MultipleInstances>
    <Mandatory>optional</Mandatory>
    <Resources>
      <Item ID=\" 1 \">
        <Name>Systolic</Name>
        <Operations>r</Operations>
        <MultipleInstances>Single</MultipleInstances>
        <Mandatory>Mandatory</Mandatory>
        <Type>Float</Type>
        <RangeEnumeration>0..300</RangeEnumeration>
        <Units>mmHg</Units>
        <Description>Systolic &amp; more &#x263A;</Description>
      </Item>
      <!-- a comment between items -->
      <Item ID=\"2\">
        <Name>Readings</Name>
        <Operations>RW</Operations>
        <MultipleInstances>Multiple</MultipleInstances>
        <Mandatory>Optional</Mandatory>
        <Type>Unsigned   Integer</Type>
        <RangeEnumeration/>
        <Units/>
        <Description/>
      </Item>
      <Item ID=\"3\">
        <Name>Reset</Name>
        <Operations>E</Operations>
        <MultipleInstances>Single</MultipleInstances>
        <Mandatory>Optional</Mandatory>
        <Type></Type>
        <RangeEnumeration></RangeEnumeration>
        <Units></Units>
        <Description></Description>
      </Item>
    </Resources>
    <Description2></Description2>
  </Object>
</LWM2M>
";
    let defs = parse_ddf(text).unwrap();
    assert_eq!(defs.len(), 1);
    let o = &defs[0];
    assert_eq!(o.id, 10500);
    assert_eq!(o.name, "Blood Pressure Monitor");
    assert_eq!(o.description, "Reports <systolic> & diastolic pressure.");
    assert_eq!(o.urn, "urn:oma:lwm2m:x:10500:1.1");
    assert_eq!(
        (o.version.as_str(), o.lwm2m_version.as_str()),
        ("1.1", "1.1")
    );
    assert!(!o.multiple && !o.mandatory);
    let r1 = o.resource(1).unwrap();
    assert_eq!(r1.operations, Operations::R);
    assert_eq!(r1.rtype, ResourceType::Float);
    assert_eq!(r1.units.as_deref(), Some("mmHg"));
    assert_eq!(r1.range_enumeration.as_deref(), Some("0..300"));
    assert_eq!(r1.description, "Systolic & more \u{263A}");
    let r2 = o.resource(2).unwrap();
    assert!(r2.multiple && !r2.mandatory);
    assert_eq!(r2.rtype, ResourceType::Unsigned);
    assert_eq!(
        (r2.units.clone(), r2.range_enumeration.clone()),
        (None, None)
    );
    let r3 = o.resource(3).unwrap();
    assert_eq!(
        (r3.operations, r3.rtype),
        (Operations::E, ResourceType::None)
    );
}

#[test]
fn a_minimal_file_without_declaration_gets_default_versions_and_urn() {
    let defs = parse_ddf(&doc(FIELDS, &item("5700", "Float"))).unwrap();
    let o = &defs[0];
    assert_eq!(o.version, "1.0");
    assert_eq!(o.lwm2m_version, "1.0");
    assert_eq!(o.urn, "urn:oma:lwm2m:ext:3303");
    assert_eq!(o.description, "");
}

#[test]
fn default_and_prefixed_namespaces_are_ignored() {
    let default_ns = format!(
        "<LWM2M xmlns=\"urn:example:ddf\">{}</LWM2M>",
        object(FIELDS, &item("1", "String"))
    );
    assert_eq!(parse_ddf(&default_ns).unwrap()[0].id, 3303);
    let prefixed = "<o:LWM2M xmlns:o=\"urn:x\"><o:Object><o:Name>T</o:Name><o:ObjectID>3303</o:ObjectID>\
        <o:MultipleInstances>Single</o:MultipleInstances><o:Mandatory>Optional</o:Mandatory>\
        <o:Resources><o:Item ID=\"1\"><o:Name>A</o:Name><o:MultipleInstances>Single</o:MultipleInstances>\
        <o:Mandatory>Optional</o:Mandatory><o:Type>Boolean</o:Type></o:Item></o:Resources></o:Object></o:LWM2M>";
    let o = &parse_ddf(prefixed).unwrap()[0];
    assert_eq!(o.resource(1).unwrap().rtype, ResourceType::Boolean);
    assert_eq!(o.resource(1).unwrap().operations, Operations::None);
}

#[test]
fn several_objects_in_one_file_load_and_a_repeated_one_is_refused() {
    let two = format!(
        "<LWM2M>{}{}</LWM2M>",
        object(FIELDS, &item("1", "Float")),
        object(&FIELDS.replace("3303", "3304"), &item("1", "Float")),
    );
    let ids: Vec<u16> = parse_ddf(&two).unwrap().iter().map(|o| o.id).collect();
    assert_eq!(ids, [3303, 3304]);
    let same = two.replace("3304", "3303");
    assert!(matches!(
        parse_ddf(&same),
        Err(DdfError::DuplicateObject { id: 3303, .. })
    ));
}

#[test]
fn a_doctype_is_refused_so_entities_never_expand() {
    let laughs = format!(
        "<?xml version=\"1.0\"?><!DOCTYPE LWM2M [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;&lol;&lol;\">]>{}",
        doc(FIELDS, &item("1", "Float")).replace("Temperature", "&lol2;")
    );
    let e = parse_ddf(&laughs).unwrap_err();
    assert!(matches!(e, DdfError::Dtd("<!DOCTYPE")), "{e:?}");
    assert!(e.to_string().contains("DTD"), "{e}");

    let xxe = format!(
        "<!DOCTYPE LWM2M [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]>{}",
        doc(FIELDS, &item("1", "Float")).replace("Temperature", "&xxe;")
    );
    assert!(matches!(parse_ddf(&xxe), Err(DdfError::Dtd(_))));

    let bare_doctype = format!("<!DOCTYPE LWM2M>{}", doc(FIELDS, &item("1", "Float")));
    assert!(matches!(parse_ddf(&bare_doctype), Err(DdfError::Dtd(_))));

    let stray_entity =
        doc(FIELDS, &item("1", "Float")).replace("<Resources>", "<!ENTITY x \"y\"><Resources>");
    assert!(matches!(
        parse_ddf(&stray_entity),
        Err(DdfError::Dtd("<!ENTITY"))
    ));

    // An undeclared entity reference is just malformed XML.
    let undeclared = doc(FIELDS, &item("1", "Float")).replace("Temperature", "&xxe;");
    assert!(matches!(parse_ddf(&undeclared), Err(DdfError::Xml(_))));
}

#[test]
fn unknown_type_and_operation_keywords_name_object_resource_and_field() {
    let e = parse_ddf(&doc(FIELDS, &item("5700", "Double"))).unwrap_err();
    assert_eq!(field_error(&e), ("Type", Some(5700)));
    let msg = e.to_string();
    assert!(
        msg.contains("object 3303 (Temperature), resource 5700: <Type>") && msg.contains("Double"),
        "{msg}"
    );

    let e = parse_ddf(&doc(FIELDS, &item("7", "Float").replace(">R<", ">RX<"))).unwrap_err();
    assert_eq!(field_error(&e), ("Operations", Some(7)));

    let e = parse_ddf(&doc(
        FIELDS,
        &item("7", "Float").replace(">Single<", ">Many<"),
    ))
    .unwrap_err();
    assert_eq!(field_error(&e), ("MultipleInstances", Some(7)));

    let e = parse_ddf(&doc(
        &FIELDS.replace(">Optional<", ">Sometimes<"),
        &item("7", "Float"),
    ))
    .unwrap_err();
    assert_eq!(field_error(&e), ("Mandatory", None));
}

#[test]
fn ids_must_be_present_decimal_and_at_most_65534() {
    for bad in ["", "abc", "-1", "65535", "70000", "1.5"] {
        let e = parse_ddf(&doc(FIELDS, &item(bad, "Float"))).unwrap_err();
        assert_eq!(field_error(&e), ("Item ID", None), "{bad:?}");
        assert!(e.to_string().contains("object 3303 (Temperature)"), "{e}");
    }
    let no_id = doc(FIELDS, &item("1", "Float").replace(" ID=\"1\"", ""));
    assert_eq!(
        field_error(&parse_ddf(&no_id).unwrap_err()),
        ("Item ID", None)
    );
    assert!(parse_ddf(&doc(FIELDS, &item("65534", "Float"))).is_ok());

    for bad in ["65535", "70000", "x", ""] {
        let e = parse_ddf(&doc(
            &FIELDS.replace(">3303<", &format!(">{bad}<")),
            &item("1", "Float"),
        ))
        .unwrap_err();
        assert_eq!(field_error(&e), ("ObjectID", None), "{bad:?}");
        assert!(e.to_string().contains("object #1"), "{e}");
    }
}

#[test]
fn missing_required_fields_are_named() {
    for (field, fields) in [
        ("ObjectID", FIELDS.replace("<ObjectID>3303</ObjectID>", "")),
        ("Name", FIELDS.replace("<Name>Temperature</Name>", "")),
        (
            "Name",
            FIELDS.replace("<Name>Temperature</Name>", "<Name>  </Name>"),
        ),
        (
            "MultipleInstances",
            FIELDS.replace("<MultipleInstances>Multiple</MultipleInstances>", ""),
        ),
    ] {
        let e = parse_ddf(&doc(&fields, &item("1", "Float"))).unwrap_err();
        assert_eq!(field_error(&e).0, field, "{e}");
    }
    let no_resources = "<LWM2M><Object>".to_owned() + FIELDS + "</Object></LWM2M>";
    assert_eq!(
        field_error(&parse_ddf(&no_resources).unwrap_err()),
        ("Resources", None)
    );
    let e = parse_ddf(&doc(
        FIELDS,
        &item("4", "Float").replace("<Name>Sensor Value</Name>", ""),
    ))
    .unwrap_err();
    assert_eq!(field_error(&e), ("Name", Some(4)));
}

#[test]
fn a_field_given_twice_is_refused() {
    let e = parse_ddf(&doc(
        &(FIELDS.to_owned() + "<ObjectID>3304</ObjectID>"),
        &item("1", "Float"),
    ))
    .unwrap_err();
    assert_eq!(field_error(&e), ("ObjectID", None));
    assert!(e.to_string().contains("more than once"), "{e}");
}

#[test]
fn duplicate_resource_ids_are_refused() {
    let e = parse_ddf(&doc(
        FIELDS,
        &(item("5700", "Float") + &item("5700", "Integer")),
    ))
    .unwrap_err();
    assert!(
        matches!(&e, DdfError::DuplicateResource { id: 5700, object } if object == "object 3303 (Temperature)"),
        "{e:?}"
    );
}

#[test]
fn versions_urns_and_object_types_are_checked() {
    let e = parse_ddf(&doc(
        &(FIELDS.to_owned() + "<ObjectVersion>v1</ObjectVersion>"),
        "",
    ))
    .unwrap_err();
    assert_eq!(field_error(&e), ("ObjectVersion", None));
    let e = parse_ddf(&doc(
        &(FIELDS.to_owned() + "<ObjectURN>urn:oma:lwm2m:ext:3304</ObjectURN>"),
        "",
    ))
    .unwrap_err();
    assert_eq!(field_error(&e), ("ObjectURN", None));
    let e = parse_ddf(&doc(FIELDS, "").replace("MODefinition", "CommonResources")).unwrap_err();
    assert_eq!(field_error(&e), ("ObjectType", None));
    // An object with no resources is odd but valid.
    assert!(parse_ddf(&doc(FIELDS, "")).unwrap()[0].resources.is_empty());
}

#[test]
fn documents_that_are_not_ddf_are_refused() {
    assert!(matches!(
        parse_ddf("<units><x/></units>"),
        Err(DdfError::WrongRoot(r)) if r == "units"
    ));
    assert!(matches!(
        parse_ddf("<LWM2M></LWM2M>"),
        Err(DdfError::NoObjects)
    ));
    for broken in [
        "",
        "<LWM2M>",
        "<LWM2M><Object></LWM2M>",
        "not xml",
        "<a></b>",
    ] {
        assert!(
            matches!(parse_ddf(broken), Err(DdfError::Xml(_))),
            "{broken:?}"
        );
    }
}

#[test]
fn oversized_and_non_utf8_input_is_refused() {
    let mut big = doc(FIELDS, &item("1", "Float"));
    big.push_str(&" ".repeat(MAX_DDF_BYTES));
    assert!(matches!(
        parse_ddf(&big),
        Err(DdfError::TooLarge {
            limit: MAX_DDF_BYTES,
            ..
        })
    ));
    assert!(matches!(
        parse_ddf_bytes(big.as_bytes()),
        Err(DdfError::TooLarge { .. })
    ));

    let mut latin1 = doc(FIELDS, &item("1", "Float")).into_bytes();
    let at = latin1.iter().position(|b| *b == b'T').unwrap();
    latin1[at] = 0xE9; // 'é' in ISO-8859-1
    let e = parse_ddf_bytes(&latin1).unwrap_err();
    assert!(matches!(e, DdfError::NotUtf8 { at: a } if a == at), "{e:?}");
    assert!(e.to_string().contains("UTF-8"));
}

#[test]
fn object_and_resource_counts_are_bounded() {
    let one = object(FIELDS, "");
    let mut many = String::from("<LWM2M>");
    for i in 0..=MAX_OBJECTS_PER_FILE {
        many.push_str(&one.replace(">3303<", &format!(">{}<", 20000 + i)));
    }
    many.push_str("</LWM2M>");
    assert!(matches!(parse_ddf(&many), Err(DdfError::TooManyObjects(_))));

    let items: String = (0..=MAX_RESOURCES_PER_OBJECT)
        .map(|i| {
            format!(
                "<Item ID=\"{i}\"><Name>r</Name><MultipleInstances>Single</MultipleInstances>\
                 <Mandatory>Optional</Mandatory><Type>Float</Type></Item>"
            )
        })
        .collect();
    let e = parse_ddf(&doc(FIELDS, &items)).unwrap_err();
    assert!(matches!(e, DdfError::TooManyResources { .. }), "{e:?}");
}

#[test]
fn deeply_nested_elements_do_not_overflow_the_stack() {
    let depth = 100_000;
    let deep = format!("{}x{}", "<b>".repeat(depth), "</b>".repeat(depth));
    let d = doc(&FIELDS.replace("Temperature", &deep), "");
    assert!(d.len() < MAX_DDF_BYTES);
    // Accepted (text inside markup in <Name> is still text) or refused; never a crash.
    if let Ok(defs) = parse_ddf(&d) {
        assert_eq!(defs[0].name, "x");
    }
    let mut over = String::from("<LWM2M>");
    over.push_str(&"<a>".repeat(250_000));
    assert!(matches!(
        parse_ddf(&over),
        Err(DdfError::TooManyNodes(_)) | Err(DdfError::Xml(_))
    ));
}

fn valid_doc() -> String {
    doc(FIELDS, &(item("5700", "Float") + &item("5701", "String")))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_text_never_panics_the_parser(s in ".{0,400}") {
        let _ = parse_ddf(&s);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_parser(b in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = parse_ddf_bytes(&b);
    }

    #[test]
    fn mutated_valid_documents_never_panic_and_keep_ids_in_range(
        cut in 0usize..2000,
        insert in "[<>/&;!\\[\\]\"a-zA-Z0-9 ]{0,12}",
    ) {
        let mut d = valid_doc();
        let at = cut.min(d.len());
        if d.is_char_boundary(at) {
            d.insert_str(at, &insert);
        }
        if let Ok(defs) = parse_ddf(&d) {
            for o in defs {
                prop_assert!(o.id < u16::MAX);
                prop_assert!(!o.name.is_empty());
                prop_assert!(o.resources.keys().all(|r| *r < u16::MAX));
            }
        }
    }
}
