//! The zero-copy parser on arbitrary bytes: never panics, and whatever parses re-encodes to a
//! message that parses to the same fields.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wardgate_coap::codec::{Encoder, Message};

fuzz_target!(|data: &[u8]| {
    let Ok(m) = Message::parse(data) else {
        return;
    };
    let mut buf = Vec::new();
    let mut e = Encoder::new(&mut buf, m.mtype, m.code, m.mid, m.token);
    for o in m.options() {
        e.option(o.number, o.value)
            .expect("parsed options are in order");
    }
    e.payload(m.payload);
    let again = Message::parse(&buf).expect("re-encoded message parses");
    assert_eq!(again.code, m.code);
    assert_eq!(again.mid, m.mid);
    assert_eq!(again.token, m.token);
    assert_eq!(again.payload, m.payload);
    assert!(again.options().eq(m.options()));
});
