//! The RFC 6690 link-format parser and the Register/Discover interpretation on arbitrary text.
//! Besides "no panic": what parses prints and parses back to the same links, and an object list
//! written out reads back as the same list.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wardgate_lwm2m::link::{self, ObjectList};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = link::parse_discover(text);
    let Ok(links) = link::parse(text) else {
        return;
    };
    let printed = link::to_link_format(&links);
    assert_eq!(link::parse(&printed).as_ref(), Ok(&links), "{printed}");
    if let Ok(list) = ObjectList::from_links(&links) {
        let written = list.to_link_format();
        let reread = link::parse(&written).expect("a written object list parses");
        assert_eq!(ObjectList::from_links(&reread), Ok(list), "{written}");
    }
});
