//! The server's Device Management operations end-to-end against the simulated client: Read in
//! every content format and the 4.06 fallback, Discover, Write (replace, update, 4.15
//! fallback), Execute, Create/Delete, composite Read/Write, Block2 reads, alternate root path.
//!
//! The object model is still a placeholder while these tests are written: formats that carry
//! no types (TLV, text) decode on the server as opaque bytes or strings. The helpers
//! [`number`] and [`text`] accept those shapes too, so the assertions hold before and after
//! the model lands.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Gateway, client, entry, p};
use wardgate_lwm2m::registration::Version;
use wardgate_lwm2m::sim::{SimClient, SimConfig, Tree};
use wardgate_lwm2m::{Entry, Format, OpError, Value, WriteMode};

/// A number however the server's model typed it (TLV without a model: big-endian bytes).
fn number(v: &Value) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    match v {
        Value::Float(f) => *f,
        Value::Integer(i) | Value::Time(i) => *i as f64,
        Value::Unsigned(u) => *u as f64,
        Value::String(s) => s.parse().unwrap(),
        Value::Opaque(b) if b.len() == 8 => f64::from_be_bytes(b[..].try_into().unwrap()),
        Value::Opaque(b) if b.len() == 4 => {
            f64::from(f32::from_be_bytes(b[..].try_into().unwrap()))
        }
        Value::Opaque(b) if b.len() <= 2 => b.iter().fold(0.0, |n, x| n * 256.0 + f64::from(*x)),
        other => panic!("not a number: {other:?}"),
    }
}

/// A string however the server's model typed it.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Opaque(b) => String::from_utf8(b.clone()).unwrap(),
        other => panic!("not a string: {other:?}"),
    }
}

fn at<'a>(entries: &'a [Entry], path: &str) -> &'a Value {
    let path = p(path);
    &entries
        .iter()
        .find(|e| e.path == path)
        .unwrap_or_else(|| panic!("{path} not in {entries:?}"))
        .value
}

fn accepts(c: &SimClient) -> Vec<Option<u16>> {
    c.received()
        .iter()
        .filter(|r| r.method == wardgate_coap::Code::GET)
        .map(|r| r.accept)
        .collect()
}

fn client_code(r: Result<impl std::fmt::Debug, OpError>) -> String {
    match r {
        Err(OpError::Client { code, .. }) => code,
        other => panic!("expected an error answer from the client, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_come_back_in_the_format_each_version_prefers_or_the_one_forced() {
    let gw = Gateway::start().await;
    let old = client(&gw, SimConfig::new("read-10").version(Version::V1_0)).await;
    let e = gw.server.read("read-10", p("/3303/0"), None).await.unwrap();
    assert_eq!(number(at(&e, "/3303/0/5700")), 21.5);
    assert_eq!(text(at(&e, "/3303/0/5701")), "Cel");
    assert_eq!(
        accepts(&old),
        [Some(11542)],
        "a 1.0 client is asked for TLV"
    );

    let cfg = SimConfig::new("read-11").tree(Tree::device("read-11", 300).with_large_opaque(32));
    let new = client(&gw, cfg).await;
    let e = gw
        .server
        .read("read-11", p("/3303/0/5700"), None)
        .await
        .unwrap();
    assert_eq!(e[0].value, Value::Float(21.5));
    assert_eq!(
        accepts(&new),
        [Some(112)],
        "a 1.1 client is asked for SenML CBOR"
    );

    let forced = [
        (Format::SenmlJson, "/3/0", "/3/0/0"),
        (Format::Cbor, "/3303/0/5700", "/3303/0/5700"),
        (Format::Lwm2mCbor, "/3303/0", "/3303/0/5700"),
        (Format::Text, "/3303/0/5700", "/3303/0/5700"),
        (Format::OmaJson, "/3/0/11", "/3/0/11/0"),
        (Format::Tlv, "/3/0", "/3/0/9"),
        (Format::Opaque, "/19/0/0/0", "/19/0/0/0"),
    ];
    for (f, read, check) in forced {
        let e = gw
            .server
            .read("read-11", p(read), Some(f))
            .await
            .unwrap_or_else(|err| panic!("{f:?} read of {read}: {err}"));
        let v = at(&e, check);
        match check {
            "/3/0/0" => assert_eq!(text(v), "wardgate", "{f:?}"),
            "/3/0/11/0" => assert_eq!(number(v), 0.0, "{f:?}"),
            "/3/0/9" => assert_eq!(number(v), 87.0, "{f:?}"),
            "/19/0/0/0" => assert_eq!(v, &new.get(&p("/19/0/0/0")).unwrap(), "{f:?}"),
            _ => assert_eq!(number(v), 21.5, "{f:?}"),
        }
        let last = new.received().last().cloned().unwrap();
        assert_eq!(last.accept, Some(f.coap_number()), "{f:?}");
    }

    // A single-value format for an instance, a path the client does not have.
    assert_eq!(
        client_code(
            gw.server
                .read("read-11", p("/3303/0"), Some(Format::Text))
                .await
        ),
        "4.06"
    );
    assert_eq!(
        client_code(gw.server.read("read-11", p("/3303/7"), None).await),
        "4.04"
    );
    assert_eq!(
        client_code(gw.server.read("read-11", p("/3/0/4"), None).await),
        "4.05",
        "an executable resource has no value to read"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_refusing_senml_gets_tlv_after_4_06_and_the_server_remembers() {
    let gw = Gateway::start().await;
    // Like Wakaama: 1.1, but only TLV and OMA JSON, and no ct= in its object list.
    let cfg = SimConfig::new("waka-1").formats(&[Format::Tlv, Format::OmaJson]);
    let c = client(&gw, cfg).await;
    let e = gw
        .server
        .read("waka-1", p("/3303/0/5700"), None)
        .await
        .unwrap();
    assert_eq!(number(&e[0].value), 21.5);
    assert_eq!(
        accepts(&c),
        [Some(112), Some(110), Some(11542)],
        "SenML CBOR, SenML JSON refused with 4.06, then TLV"
    );
    gw.server.read("waka-1", p("/3/0/9"), None).await.unwrap();
    assert_eq!(
        accepts(&c).last(),
        Some(&Some(11542)),
        "the next read asks for TLV straight away"
    );
    assert_eq!(accepts(&c).len(), 4);

    // Writes: the remembered format goes first and is accepted.
    gw.server
        .write(
            "waka-1",
            p("/3303/0/5701"),
            WriteMode::Replace,
            &[entry("/3303/0/5701", Value::String("K".into()))],
            None,
        )
        .await
        .unwrap();
    assert_eq!(c.get(&p("/3303/0/5701")), Some(Value::String("K".into())));
    assert_eq!(c.received().last().unwrap().content_format, Some(11542));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_in_a_format_the_client_lacks_falls_back_after_4_15() {
    let gw = Gateway::start().await;
    let cfg = SimConfig::new("waka-2").formats(&[Format::Tlv]);
    let c = client(&gw, cfg).await;
    gw.server
        .write(
            "waka-2",
            p("/3303/0"),
            WriteMode::Update,
            &[entry("/3303/0/5701", Value::String("Far".into()))],
            None,
        )
        .await
        .unwrap();
    assert_eq!(c.get(&p("/3303/0/5701")), Some(Value::String("Far".into())));
    let cfs: Vec<Option<u16>> = c.received().iter().map(|r| r.content_format).collect();
    assert_eq!(cfs, [Some(112), Some(110), Some(11542)]);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discover_lists_objects_instances_resources_and_written_attributes() {
    let gw = Gateway::start().await;
    let c = client(&gw, SimConfig::new("disc-1")).await;
    gw.server
        .write_attributes(
            "disc-1",
            p("/3303/0/5700"),
            &wardgate_lwm2m::Attributes {
                pmin: Some(2),
                gt: Some(30.0),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let a = c.attributes(&p("/3303/0/5700")).unwrap();
    assert_eq!((a.pmin, a.gt), (Some(2), Some(30.0)));

    let d = gw.server.discover("disc-1", p("/3303")).await.unwrap();
    let links = wardgate_lwm2m::link::parse(&d).unwrap();
    let targets: Vec<&str> = links.iter().map(|l| l.target.as_str()).collect();
    assert!(targets.starts_with(&["/3303", "/3303/0"]), "{d}");
    let t = links.iter().find(|l| l.target == "/3303/0/5700").unwrap();
    assert_eq!(t.attr_value("pmin"), Some("2"), "{d}");
    assert_eq!(t.attr_value("gt"), Some("30"), "{d}");
    let d = gw.server.discover("disc-1", p("/3/0/11")).await.unwrap();
    assert_eq!(d, "</3/0/11>;dim=1");
    assert_eq!(c.received().last().unwrap().accept, Some(40));
    assert_eq!(
        client_code(gw.server.discover("disc-1", p("/9")).await),
        "4.04"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_replace_and_partial_update_change_the_clients_values() {
    let gw = Gateway::start().await;
    let c = client(&gw, SimConfig::new("write-1")).await;
    // Update (POST) adds a resource instance, the others stay.
    gw.server
        .write(
            "write-1",
            p("/3/0"),
            WriteMode::Update,
            &[entry("/3/0/11/1", Value::Integer(7))],
            None,
        )
        .await
        .unwrap();
    assert_eq!(c.get(&p("/3/0/11/0")), Some(Value::Integer(0)));
    assert_eq!(c.get(&p("/3/0/11/1")), Some(Value::Integer(7)));
    assert_eq!(
        c.received().last().unwrap().method,
        wardgate_coap::Code::POST
    );

    // Replace (PUT) of the multiple resource: exactly the given instances remain.
    gw.server
        .write(
            "write-1",
            p("/3/0/11"),
            WriteMode::Replace,
            &[entry("/3/0/11/5", Value::Integer(3))],
            Some(Format::SenmlJson),
        )
        .await
        .unwrap();
    assert_eq!(c.get(&p("/3/0/11/0")), None);
    assert_eq!(c.get(&p("/3/0/11/5")), Some(Value::Integer(3)));
    assert_eq!(
        c.received().last().unwrap().method,
        wardgate_coap::Code::PUT
    );

    // Replace of an instance in TLV: resources not written are gone.
    gw.server
        .write(
            "write-1",
            p("/3303/0"),
            WriteMode::Replace,
            &[
                entry("/3303/0/5700", Value::Float(19.25)),
                entry("/3303/0/5701", Value::String("Cel".into())),
            ],
            Some(Format::Tlv),
        )
        .await
        .unwrap();
    assert_eq!(c.get(&p("/3303/0/5700")), Some(Value::Float(19.25)));
    assert_eq!(c.get(&p("/3303/0/5601")), None);
    let r = gw
        .server
        .read("write-1", p("/3303/0/5700"), None)
        .await
        .unwrap();
    assert_eq!(r[0].value, Value::Float(19.25));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execute_reaches_the_resource_with_its_arguments() {
    let gw = Gateway::start().await;
    let c = client(&gw, SimConfig::new("exec-1")).await;
    gw.server
        .execute("exec-1", p("/3303/0/5605"), Some("0='min',1"))
        .await
        .unwrap();
    gw.server
        .execute("exec-1", p("/3/0/5"), None)
        .await
        .unwrap();
    let ex = c.executed();
    assert_eq!(ex.len(), 2);
    assert_eq!(ex[0].path, p("/3303/0/5605"));
    assert_eq!(ex[0].arguments.as_deref(), Some("0='min',1"));
    assert_eq!((ex[1].path, ex[1].arguments.clone()), (p("/3/0/5"), None));
    assert_eq!(
        client_code(gw.server.execute("exec-1", p("/3303/0/5700"), None).await),
        "4.05",
        "a value resource is not executable"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_and_delete_an_object_instance() {
    let gw = Gateway::start().await;
    let c = client(&gw, SimConfig::new("create-1")).await;
    let entries = [
        entry("/3303/1/5700", Value::Float(18.0)),
        entry("/3303/1/5701", Value::String("Cel".into())),
    ];
    let created = gw
        .server
        .create("create-1", 3303, &entries, None)
        .await
        .unwrap();
    assert_eq!(created, Some(p("/3303/1")));
    assert_eq!(c.get(&p("/3303/1/5700")), Some(Value::Float(18.0)));
    let r = gw
        .server
        .read("create-1", p("/3303/1/5700"), None)
        .await
        .unwrap();
    assert_eq!(r[0].value, Value::Float(18.0));
    assert_eq!(
        client_code(gw.server.create("create-1", 3303, &entries, None).await),
        "4.00",
        "the instance exists"
    );
    // The client tells the server about its new instance.
    c.update(wardgate_lwm2m::sim::UpdateOpts {
        objects: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let objects = gw.server.client("create-1").unwrap().registration.objects;
    assert!(
        objects
            .objects
            .iter()
            .any(|o| (o.oid, o.iid) == (3303, Some(1)))
    );

    gw.server.delete("create-1", p("/3303/1")).await.unwrap();
    assert!(!c.exists(&p("/3303/1")));
    assert_eq!(
        client_code(gw.server.delete("create-1", p("/3303/1")).await),
        "4.04"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn composite_read_and_write_span_objects() {
    let gw = Gateway::start().await;
    let cfg = SimConfig::new("comp-1").tree(Tree::device("comp-1", 300).with_humidity());
    let c = client(&gw, cfg).await;
    let paths = [p("/3303/0/5700"), p("/3304/0/5700"), p("/3/0/0")];
    let e = gw
        .server
        .read_composite("comp-1", &paths, None)
        .await
        .unwrap();
    assert_eq!(e.len(), 3, "{e:?}");
    assert_eq!(at(&e, "/3304/0/5700"), &Value::Float(45.0));
    let fetch = c.received().last().cloned().unwrap();
    assert_eq!(fetch.method, wardgate_coap::Code::FETCH);
    assert_eq!(fetch.content_format, Some(112));

    let e = gw
        .server
        .read_composite("comp-1", &paths[..2], Some(Format::SenmlJson))
        .await
        .unwrap();
    assert_eq!(e.len(), 2);

    gw.server
        .write_composite(
            "comp-1",
            &[
                entry("/3303/0/5701", Value::String("K".into())),
                entry("/3304/0/5700", Value::Float(50.5)),
            ],
            None,
        )
        .await
        .unwrap();
    assert_eq!(c.get(&p("/3303/0/5701")), Some(Value::String("K".into())));
    assert_eq!(c.get(&p("/3304/0/5700")), Some(Value::Float(50.5)));
    assert_eq!(c.received().last().unwrap().method.0, 7, "iPATCH");

    // A 1.0 client has no composite operations: refused before anything is sent.
    let old = client(&gw, SimConfig::new("comp-10").version(Version::V1_0)).await;
    assert!(matches!(
        gw.server.read_composite("comp-10", &paths, None).await,
        Err(OpError::Invalid(_))
    ));
    assert!(old.received().is_empty());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_resource_is_read_block_by_block() {
    let gw = Gateway::start().await;
    let cfg = SimConfig::new("big-1").tree(Tree::device("big-1", 300).with_large_opaque(4096));
    let c = client(&gw, cfg).await;
    let e = gw
        .server
        .read("big-1", p("/19/0/0/0"), Some(Format::Opaque))
        .await
        .unwrap();
    let Value::Opaque(got) = &e[0].value else {
        panic!("{e:?}")
    };
    assert_eq!(Some(Value::Opaque(got.clone())), c.get(&p("/19/0/0/0")));
    assert_eq!(got.len(), 4096);
    let blocks: Vec<u32> = c
        .received()
        .iter()
        .map(|r| r.block2.map_or(0, |b| b.num))
        .collect();
    assert_eq!(
        blocks,
        (0..8).collect::<Vec<_>>(),
        "4096 bytes in 512-byte blocks"
    );

    // The instance in SenML CBOR is also larger than a block.
    let e = gw.server.read("big-1", p("/19/0"), None).await.unwrap();
    assert_eq!(e.len(), 1);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alternate_root_path_prefixes_every_request() {
    let gw = Gateway::start().await;
    let c = client(&gw, SimConfig::new("root-1").root("/lwm2m")).await;
    assert_eq!(
        gw.server
            .client("root-1")
            .unwrap()
            .registration
            .objects
            .root,
        "/lwm2m"
    );
    let e = gw.server.read("root-1", p("/3/0/0"), None).await.unwrap();
    assert_eq!(e[0].value, Value::String("wardgate".into()));
    gw.server
        .execute("root-1", p("/3303/0/5605"), None)
        .await
        .unwrap();
    for r in c.received() {
        assert_eq!(
            r.uri_path.first().map(String::as_str),
            Some("lwm2m"),
            "{r:?}"
        );
    }
    gw.stop().await;
}

/// LwM2M CBOR cannot carry the list of paths of a Read-Composite request: the body goes in
/// SenML CBOR with Accept 11544 (found with this test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_composite_read_can_ask_for_lwm2m_cbor() {
    let gw = Gateway::start().await;
    let _c = client(&gw, SimConfig::new("comp-12").version(Version::V1_2)).await;
    let e = gw
        .server
        .read_composite(
            "comp-12",
            &[p("/3303/0/5700"), p("/3/0/9")],
            Some(Format::Lwm2mCbor),
        )
        .await
        .unwrap();
    assert_eq!(e.len(), 2);
    gw.stop().await;
}

/// The simulator's own message layer, seen from a bare socket: a duplicate Confirmable
/// request gets the very same answer and is handled once; a response nobody asked for gets
/// a RST.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_answers_duplicates_once_and_resets_strangers() {
    use wardgate_coap::codec::{Encoder, Message, MsgType, Token, opt};
    let gw = Gateway::start().await;
    let c = client(&gw, SimConfig::new("dup-1")).await;
    let peer = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut get = Vec::new();
    let mut e = Encoder::new(
        &mut get,
        MsgType::Con,
        wardgate_coap::Code::GET,
        0x4242,
        Token::new(&[9]).unwrap(),
    );
    for s in ["3303", "0", "5700"] {
        e.option(opt::URI_PATH, s.as_bytes()).unwrap();
    }
    e.uint_option(opt::ACCEPT, 110).unwrap();
    e.finish();
    let mut answers = Vec::new();
    for _ in 0..2 {
        peer.send_to(&get, c.local_addr()).await.unwrap();
        let mut buf = vec![0; 1500];
        let (n, _) =
            tokio::time::timeout(std::time::Duration::from_secs(10), peer.recv_from(&mut buf))
                .await
                .unwrap()
                .unwrap();
        answers.push(buf[..n].to_vec());
    }
    assert_eq!(answers[0], answers[1]);
    let m = Message::parse(&answers[0]).unwrap();
    assert_eq!(
        (m.mtype, m.mid, m.code),
        (MsgType::Ack, 0x4242, wardgate_coap::Code::CONTENT)
    );
    assert_eq!(c.received().len(), 1, "the duplicate was not handled again");

    let mut resp = Vec::new();
    Encoder::new(
        &mut resp,
        MsgType::Con,
        wardgate_coap::Code::CONTENT,
        0x77,
        Token::new(&[1, 2, 3]).unwrap(),
    )
    .finish();
    peer.send_to(&resp, c.local_addr()).await.unwrap();
    let mut buf = vec![0; 64];
    let (n, _) = tokio::time::timeout(std::time::Duration::from_secs(10), peer.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let m = Message::parse(&buf[..n]).unwrap();
    assert_eq!((m.mtype, m.mid), (MsgType::Rst, 0x77));
    gw.stop().await;
}
