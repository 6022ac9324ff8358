//! The DTLS cookie front's parsing, on arbitrary datagrams: what runs for every datagram from an
//! address without a session, before any state exists. It must never panic, and the cookie-less
//! copy of a ClientHello must parse back as the same hello without a cookie.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wardgate_dtls::record::{self, ClientHello, FirstRecord};

fuzz_target!(|data: &[u8]| {
    let kind = record::first_record(data);
    let _ = record::hello_verify_cookie(data);
    match ClientHello::parse(data) {
        Some(hello) => {
            assert_eq!(kind, FirstRecord::ClientHello);
            let first = hello.without_cookie();
            let again = ClientHello::parse(&first).expect("the cookie-less copy parses");
            assert!(again.cookie.is_empty());
            assert_eq!(again.message_seq, 0);
            assert_eq!(again.random, hello.random);
            assert_eq!(
                again.offers(record::PSK_AES128_CCM_8),
                hello.offers(record::PSK_AES128_CCM_8)
            );
        }
        None => assert_ne!(kind, FirstRecord::ClientHello),
    }
});
