//! The resource layer against libcoap's client: a resource a test registers gets routing,
//! 4.04/4.05, `/.well-known/core` and block-wise transfer without code of its own; the peer
//! identity a transport proves reaches the stored reading; an authorizer's refusal is 4.01/4.03
//! and stores nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};

use common::{Harness, Options, SENML_JSON, StoreMode, coap_client};
use wardgate_coap::layer::Response;
use wardgate_coap::{Code, Registration, Reply, Request, Resource};
use wardgate_core::{AuthRequest, Authorizer, Denied, Identity, IdentityKind};

/// Echoes the request body back and remembers every body it saw (shared with the test).
#[derive(Debug)]
struct Echo(Arc<Mutex<Vec<Vec<u8>>>>);

impl Resource for Echo {
    fn handle(&mut self, req: &Request<'_, '_>) -> Reply {
        self.0.lock().unwrap().push(req.body.to_vec());
        let mut r = Response::new(Code::CHANGED);
        r.content_format = Some(0);
        r.payload = bytes::Bytes::copy_from_slice(req.body);
        Reply::Now(r)
    }
}

fn echo_options(seen: &Arc<Mutex<Vec<Vec<u8>>>>) -> Options {
    let seen = seen.clone();
    Options {
        resources: vec![(
            Registration::new("test/echo", &[Code::PUT])
                .rt("wardgate.test-echo")
                .content_formats(&[0]),
            Arc::new(move || Box::new(Echo(seen.clone())) as Box<dyn Resource>),
        )],
        ..Options::default()
    }
}

fn saw(out: &common::ClientRun, needle: &str) -> bool {
    out.stdout.contains(needle) || out.stderr.contains(needle)
}

#[tokio::test]
async fn a_registered_resource_gets_block1_and_block2_from_libcoap_without_block_code() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    // Our own Block2 blocks at 16 bytes too, so the 2.04 answering the last Block1 block
    // starts a Block2 transfer (RFC 7959 §2.7) that libcoap completes by repeating the PUT.
    let h = Harness::start_opts(
        StoreMode::Ok,
        |c| c.block.preferred_block_size = 16,
        echo_options(&seen),
    )
    .await;
    // 300 bytes: 19 Block1 blocks up, 19 Block2 blocks back at 16 bytes each.
    let body: String = (0..300)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let out = coap_client(&[
        "-v",
        "7",
        "-b",
        "16",
        "-m",
        "put",
        "-t",
        "0",
        "-e",
        &body,
        &h.uri("/test/echo"),
    ])
    .await;
    assert!(out.ok, "{out:?}");
    assert!(
        saw(&out, "Block1:18/_/16"),
        "last Block1 block was sent: {out:?}"
    );
    assert!(
        saw(&out, "Block2:18/_/16"),
        "last Block2 block was served: {out:?}"
    );
    assert!(
        out.stdout.contains(&body),
        "the echo came back whole: {out:?}"
    );
    assert_eq!(
        *seen.lock().unwrap(),
        vec![body.into_bytes()],
        "one whole body, once"
    );
    h.stop().await;
}

#[tokio::test]
async fn the_router_answers_unknown_paths_404_and_wrong_methods_405() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let h = Harness::start_opts(StoreMode::Ok, |_| {}, echo_options(&seen)).await;
    let out = coap_client(&["-m", "get", &h.uri("/test/nothing-here")]).await;
    assert!(saw(&out, "4.04 no such resource"), "{out:?}");
    let out = coap_client(&["-m", "post", "-e", "x", &h.uri("/test/echo")]).await;
    assert!(saw(&out, "4.05"), "{out:?}");
    let out = coap_client(&["-m", "put", "-e", "x", &h.uri("/test/echo/deeper")]).await;
    assert!(saw(&out, "4.04"), "no subtree registered: {out:?}");
    assert!(seen.lock().unwrap().is_empty(), "the resource never ran");
    assert_eq!(
        h.metric("wardgate_coap_ingest_rejections_total{reason=\"method_not_allowed\"}"),
        1.0
    );
    h.stop().await;
}

#[tokio::test]
async fn well_known_core_lists_the_registered_resources() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let h = Harness::start_opts(StoreMode::Ok, |_| {}, echo_options(&seen)).await;
    let out = coap_client(&["-m", "get", &h.uri("/.well-known/core")]).await;
    assert!(out.ok, "{out:?}");
    assert!(
        out.stdout
            .contains("</test/echo>;rt=\"wardgate.test-echo\";ct=\"0\""),
        "{out:?}"
    );
    assert!(
        out.stdout
            .contains("</v1/readings>;rt=\"wardgate.readings\""),
        "{out:?}"
    );
    h.stop().await;
}

#[tokio::test]
async fn the_identity_a_transport_proves_reaches_the_stored_reading() {
    let opts = Options {
        identity: Some(Identity::new(IdentityKind::PskIdentity, "bed-77")),
        ..Options::default()
    };
    let h = Harness::start_opts(StoreMode::Ok, |_| {}, opts).await;
    let out = coap_client(&[
        "-m",
        "post",
        "-t",
        "110",
        "-e",
        &SENML_JSON.replace('%', "%25"),
        &h.uri("/v1/readings/bed-77"),
    ])
    .await;
    assert!(out.ok, "{out:?}");
    let r = &h.readings()[0];
    let src = r.source.as_ref().expect("provenance");
    assert_eq!(src.identity.as_deref(), Some("psk:bed-77"));
    assert_eq!(src.transport, wardgate_core::TransportKind::Dtls);
    assert!(src.addr.starts_with("127.0.0.1:"), "{src:?}");
    h.stop().await;
}

/// Lets a peer write only for the device its identity names.
#[derive(Debug)]
struct OwnDeviceOnly;

impl Authorizer for OwnDeviceOnly {
    fn authorize(&self, req: &AuthRequest<'_>) -> Result<String, Denied> {
        match &req.peer.identity {
            None => Err(Denied::Unauthenticated("no identity")),
            Some(id) if id.value() == req.claimed_device => Ok(req.claimed_device.to_owned()),
            Some(_) => Err(Denied::Forbidden("not its device")),
        }
    }
    fn authenticates(&self) -> bool {
        true
    }
}

#[tokio::test]
async fn an_authorizer_refusal_is_401_or_403_and_nothing_is_stored() {
    // Plain UDP proves nothing: 4.01.
    let opts = Options {
        authorizer: Arc::new(OwnDeviceOnly),
        ..Options::default()
    };
    let h = Harness::start_opts(StoreMode::Ok, |_| {}, opts).await;
    let post = |uri: String| async move {
        coap_client(&[
            "-m",
            "post",
            "-t",
            "110",
            "-e",
            &SENML_JSON.replace('%', "%25"),
            &uri,
        ])
        .await
    };
    let out = post(h.uri("/v1/readings/bed-1")).await;
    assert!(saw(&out, "4.01 not authenticated"), "{out:?}");
    assert!(h.readings().is_empty());
    assert_eq!(
        h.metric("wardgate_coap_ingest_rejections_total{reason=\"unauthenticated\"}"),
        1.0
    );
    h.stop().await;

    // Proven as bed-1, writing for bed-2: 4.03; for bed-1: stored.
    let opts = Options {
        authorizer: Arc::new(OwnDeviceOnly),
        identity: Some(Identity::new(IdentityKind::PskIdentity, "bed-1")),
        ..Options::default()
    };
    let h = Harness::start_opts(StoreMode::Ok, |_| {}, opts).await;
    let out = post(h.uri("/v1/readings/bed-2")).await;
    assert!(saw(&out, "4.03 forbidden"), "{out:?}");
    assert!(h.readings().is_empty());
    let out = post(h.uri("/v1/readings/bed-1")).await;
    assert!(out.ok, "{out:?}");
    assert_eq!(h.readings().len(), 1);
    assert_eq!(h.readings()[0].device, "bed-1");
    h.stop().await;
}
