//! RFC 6690 link-format parsing and the LwM2M Register/Update and Discover readings of it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use wardgate_lwm2m::Path;
use wardgate_lwm2m::link::{
    self, Attr, LinkError, LinkLimits, ObjectLink, ObjectList, Version, parse, parse_discover,
};

fn obj(oid: u16, iid: Option<u16>, ver: Option<(u8, u8)>) -> ObjectLink {
    ObjectLink {
        oid,
        iid,
        version: ver.map(|(major, minor)| Version { major, minor }),
    }
}

#[test]
fn register_body_of_lwm2m_1_1_gives_root_content_formats_and_objects() {
    let body = r#"</>;rt="oma.lwm2m";ct="60 110 112 11543",</1/0>,</3/0>,</3303>;ver=1.1,</3303/0>,</3303/1>"#;
    let list = ObjectList::from_links(&parse(body).unwrap()).unwrap();
    assert_eq!(list.root, "/");
    assert_eq!(list.content_formats, vec![60, 110, 112, 11543]);
    assert_eq!(
        list.objects,
        vec![
            obj(1, Some(0), None),
            obj(3, Some(0), None),
            obj(3303, None, Some((1, 1))),
            obj(3303, Some(0), None),
            obj(3303, Some(1), None),
        ]
    );
    assert_eq!(
        ObjectList::from_links(&parse(&list.to_link_format()).unwrap()).unwrap(),
        list
    );
}

#[test]
fn alternate_root_path_puts_objects_below_it_and_ignores_links_outside() {
    let body =
        "</lwm2m>;rt=\"oma.lwm2m\";ct=11543,</lwm2m/1/101>,</lwm2m/3/0>,</lwm2m/5>,</other/4/0>";
    let list = ObjectList::from_links(&parse(body).unwrap()).unwrap();
    assert_eq!(list.root, "/lwm2m");
    assert_eq!(list.content_formats, vec![11543]);
    assert_eq!(
        list.objects,
        vec![
            obj(1, Some(101), None),
            obj(3, Some(0), None),
            obj(5, None, None)
        ]
    );
    assert_eq!(
        list.to_link_format(),
        "</lwm2m>;rt=\"oma.lwm2m\";ct=11543,</lwm2m/1/101>,</lwm2m/3/0>,</lwm2m/5>"
    );
}

#[test]
fn lwm2m_1_0_bodies_without_root_link_or_with_a_bare_root_ct_read() {
    let plain = ObjectList::from_links(&parse("</1/0>,</3/0>,</4/0>,</5>").unwrap()).unwrap();
    assert_eq!(plain.root, "/");
    assert!(plain.content_formats.is_empty());
    assert_eq!(plain.objects.len(), 4);
    assert_eq!(plain.to_link_format(), "</1/0>,</3/0>,</4/0>,</5>");
    // 1.0: `</>;ct=11543` states JSON support without rt.
    let ct = ObjectList::from_links(&parse("</>;ct=11543,</1/0>").unwrap()).unwrap();
    assert_eq!(ct.content_formats, vec![11543]);
    assert_eq!(ct.objects, vec![obj(1, Some(0), None)]);
}

#[test]
fn malformed_versions_content_formats_and_two_roots_are_invalid() {
    for body in [
        "</3303>;ver=1",
        "</3303>;ver=1.1.1",
        "</3303>;ver=x.y",
        "</>;rt=\"oma.lwm2m\";ct=json",
        "</>;rt=\"oma.lwm2m\";ct=70000",
        "</a>;rt=\"oma.lwm2m\",</b>;rt=\"oma.lwm2m\"",
    ] {
        let err = ObjectList::from_links(&parse(body).unwrap()).unwrap_err();
        assert!(matches!(err, LinkError::Invalid(_)), "{body}: {err}");
    }
}

#[test]
fn discover_answers_give_paths_with_their_attributes() {
    let got = parse_discover(
        "</3/0>,</3/0/1>,</3/0/7>;dim=2,</3303/0/5700>;pmin=10;pmax=60;gt=30.5;st=\"0.5\";obs",
    )
    .unwrap();
    let paths: Vec<Path> = got.iter().map(|l| l.path).collect();
    assert_eq!(
        paths,
        vec![
            Path::instance(3, 0),
            Path::resource(3, 0, 1),
            Path::resource(3, 0, 7),
            Path::resource(3303, 0, 5700)
        ]
    );
    assert_eq!(got[2].attr_value("dim"), Some("2"));
    assert_eq!(got[3].attr_value("pmin"), Some("10"));
    assert_eq!(got[3].attr_value("st"), Some("0.5"));
    assert_eq!(
        got[3].attrs.last(),
        Some(&Attr {
            name: "obs".into(),
            value: None
        })
    );
    assert!(matches!(
        parse_discover("</rd/5>"),
        Err(LinkError::Invalid(_))
    ));
    assert!(matches!(
        parse_discover("<coap://x/3>"),
        Err(LinkError::Invalid(_))
    ));
}

#[test]
fn whitespace_around_separators_and_a_trailing_comma_are_tolerated() {
    let links = parse(" </1/0> ;ver=1.1 ,\r\n\t</3/0>,\n").unwrap();
    assert_eq!(links.len(), 2);
    assert_eq!(links[0].attr_value("ver"), Some("1.1"));
    assert_eq!(parse("").unwrap(), vec![]);
}

#[test]
fn malformed_link_format_says_where() {
    for (text, at) in [
        ("/1/0", 0),
        ("</1/0", 5),
        ("</1/0>;", 7),
        ("</1/0>;=3", 7),
        ("</1/0>;a=", 9),
        ("</1/0>;a=\"x", 11),
        ("</1/0>;a=\"x\\", 12),
        ("</1/0> </3/0>", 7),
        ("</1 /0>", 3),
        ("<</1>", 1),
        ("</1/0>;a=b c", 11),
    ] {
        match parse(text) {
            Err(LinkError::Malformed { at: got, .. }) => assert_eq!(got, at, "{text:?}"),
            other => panic!("{text:?}: {other:?}"),
        }
    }
}

#[test]
fn bounds_on_length_links_and_attributes_hold() {
    let limits = LinkLimits {
        max_len: 100,
        max_links: 3,
        max_attrs: 2,
    };
    assert_eq!(
        link::parse_with(&"x".repeat(101), &limits),
        Err(LinkError::TooLong(100))
    );
    assert_eq!(
        link::parse_with("<a>,<b>,<c>,<d>", &limits),
        Err(LinkError::TooManyLinks(3))
    );
    assert_eq!(
        link::parse_with("<a>;x;y;z", &limits),
        Err(LinkError::TooManyAttrs(2))
    );
    assert!(link::parse_with("<a>,<b>,<c>;x;y", &limits).is_ok());
    // The default bounds take a large registration.
    let big: Vec<String> = (0..1000).map(|i| format!("</3303/{i}>")).collect();
    assert_eq!(parse(&big.join(",")).unwrap().len(), 1000);
    assert_eq!(LinkError::TooLong(1).reason(), "too_large");
}

#[test]
fn printed_links_quote_what_needs_quoting_and_parse_back() {
    let text = r#"</a>;rt="oma.lwm2m";title="two words";if=sensor;x="q\"b\\";obs"#;
    let links = parse(text).unwrap();
    let printed = link::to_link_format(&links);
    assert_eq!(printed, text);
    assert_eq!(parse(&printed).unwrap(), links);
}
