//! Fault injection with a hand-written minimal broker: it accepts CONNECT, answers CONNACK (or
//! refuses the first connections with a chosen code), reports every PUBLISH, and sends a PUBACK,
//! or any raw bytes, only when the test says so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use wardgate_core::MessageClass;

#[derive(Debug, Clone)]
enum FakeEvent {
    Connect {
        conn: u32,
        at: tokio::time::Instant,
    },
    /// A CONNECT answered with a refusing CONNACK; the broker then closed the connection.
    Refused {
        conn: u32,
        at: tokio::time::Instant,
    },
    Publish {
        pkid: u16,
        qos: u8,
        topic: String,
        payload: Vec<u8>,
        retain: bool,
    },
}

#[derive(Debug)]
enum Cmd {
    PubAck(u16),
    /// Write these bytes as they are (any packet, valid or not).
    Raw(Vec<u8>),
    /// Close the connection without a word.
    Drop,
}

struct FakeBroker {
    port: u16,
    events: mpsc::UnboundedReceiver<FakeEvent>,
    cmds: mpsc::UnboundedSender<Cmd>,
    task: JoinHandle<()>,
}

impl Drop for FakeBroker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn read_packet(r: &mut (impl AsyncReadExt + Unpin)) -> std::io::Result<(u8, Vec<u8>)> {
    let header = r.read_u8().await?;
    let mut len = 0usize;
    for shift in (0..28).step_by(7) {
        let b = r.read_u8().await?;
        len |= usize::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            break;
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).await?;
    Ok((header, body))
}

fn skip_varint(body: &[u8]) -> (usize, usize) {
    let mut value = 0usize;
    for (i, b) in body.iter().enumerate().take(4) {
        value |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return (value, i + 1);
        }
    }
    panic!("bad varint");
}

impl FakeBroker {
    /// `session_present_on_reconnect`: claim a resumed session on every connection after the
    /// first, which invites rumqttc to replay what it kept from the previous connection.
    async fn start(session_present_on_reconnect: bool) -> FakeBroker {
        Self::start_refusing(session_present_on_reconnect, Vec::new()).await
    }

    /// Like [`FakeBroker::start`], but connection `n` (1-based) is refused with `refuse[n - 1]`
    /// as the CONNACK return code (3.1.1) or reason code (5) while there is one.
    async fn start_refusing(session_present_on_reconnect: bool, refuse: Vec<u8>) -> FakeBroker {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (ev_tx, events) = mpsc::unbounded_channel();
        let (cmds, mut cmd_rx) = mpsc::unbounded_channel::<Cmd>();
        let task = tokio::spawn(async move {
            let mut conn = 0u32;
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                conn += 1;
                let (mut rd, mut wr) = sock.into_split();
                let Ok((header, body)) = read_packet(&mut rd).await else {
                    continue;
                };
                assert_eq!(header >> 4, 1, "first packet is CONNECT");
                let level = body[6];
                if let Some(&code) = refuse.get(conn as usize - 1) {
                    let connack: &[u8] = if level == 5 {
                        &[0x20, 3, 0, code, 0]
                    } else {
                        &[0x20, 2, 0, code]
                    };
                    let _ = wr.write_all(connack).await;
                    let _ = ev_tx.send(FakeEvent::Refused {
                        conn,
                        at: tokio::time::Instant::now(),
                    });
                    continue;
                }
                let sp = u8::from(session_present_on_reconnect && conn > 1);
                let connack: &[u8] = if level == 5 {
                    &[0x20, 3, sp, 0, 0]
                } else {
                    &[0x20, 2, sp, 0]
                };
                wr.write_all(connack).await.expect("write CONNACK");
                let _ = ev_tx.send(FakeEvent::Connect {
                    conn,
                    at: tokio::time::Instant::now(),
                });
                let (pkt_tx, mut pkts) = mpsc::unbounded_channel();
                let reader = tokio::spawn(async move {
                    while let Ok(p) = read_packet(&mut rd).await {
                        if pkt_tx.send(p).is_err() {
                            break;
                        }
                    }
                });
                loop {
                    tokio::select! {
                        p = pkts.recv() => match p {
                            None => break,
                            Some((h, body)) => match h >> 4 {
                                3 => {
                                    let qos = (h >> 1) & 3;
                                    let tlen = usize::from(u16::from_be_bytes([body[0], body[1]]));
                                    let topic = String::from_utf8(body[2..2 + tlen].to_vec()).expect("utf8 topic");
                                    let mut at = 2 + tlen;
                                    let mut pkid = 0;
                                    if qos > 0 {
                                        pkid = u16::from_be_bytes([body[at], body[at + 1]]);
                                        at += 2;
                                    }
                                    if level == 5 {
                                        let (plen, n) = skip_varint(&body[at..]);
                                        at += n + plen;
                                    }
                                    let _ = ev_tx.send(FakeEvent::Publish {
                                        pkid, qos, topic, payload: body[at..].to_vec(), retain: h & 1 == 1,
                                    });
                                }
                                12 => { let _ = wr.write_all(&[0xd0, 0]).await; }
                                14 => break,
                                _ => {}
                            },
                        },
                        c = cmd_rx.recv() => match c {
                            Some(Cmd::PubAck(pkid)) => {
                                let [hi, lo] = pkid.to_be_bytes();
                                let _ = wr.write_all(&[0x40, 2, hi, lo]).await;
                            }
                            Some(Cmd::Raw(bytes)) => {
                                let _ = wr.write_all(&bytes).await;
                            }
                            Some(Cmd::Drop) | None => break,
                        },
                    }
                }
                reader.abort();
            }
        });
        FakeBroker {
            port,
            events,
            cmds,
            task,
        }
    }

    async fn next_event(&mut self) -> FakeEvent {
        within("fake broker event", self.events.recv())
            .await
            .expect("fake broker alive")
    }

    /// The next `n` PUBLISH packets as (pkid, topic, payload, retain).
    async fn publishes(&mut self, n: usize) -> Vec<(u16, String, Vec<u8>, bool)> {
        let mut out = Vec::new();
        while out.len() < n {
            if let FakeEvent::Publish {
                pkid,
                qos,
                topic,
                payload,
                retain,
                ..
            } = self.next_event().await
            {
                assert_eq!(qos, 1, "QoS 1 by default, status messages included");
                out.push((pkid, topic, payload, retain));
            }
        }
        out
    }

    /// Asserts nothing more arrives for a while.
    async fn quiet(&mut self) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if let Ok(ev) = self.events.try_recv() {
            panic!("expected silence, got {ev:?}");
        }
    }

    fn puback(&self, pkid: u16) {
        self.cmds
            .send(Cmd::PubAck(pkid))
            .expect("fake broker alive");
    }
}

fn seq_of(outbox: &MemOutbox, payload: &[u8]) -> u64 {
    outbox
        .all()
        .into_iter()
        .find(|d| d.json.as_ref() == payload)
        .map(|d| d.seq)
        .expect("payload is a reading")
}

async fn nothing_is_acked_without_a_puback_and_in_flight_stops_at_max_inflight(version: &str) {
    let mut broker = FakeBroker::start(false).await;
    let outbox = MemOutbox::new();
    for i in 0..10 {
        outbox.push("bed-1", MessageClass::Vital, i as f64);
    }
    let mut up = start(
        config(
            &format!("mqtt://127.0.0.1:{}", broker.port),
            version,
            serde_json::json!({ "max_inflight": 4, "shutdown_timeout": "500ms" }),
        ),
        &outbox,
    );
    assert!(matches!(
        broker.next_event().await,
        FakeEvent::Connect { conn: 1, .. }
    ));
    // The window is 4 publishes: the birth message and three readings.
    let first = broker.publishes(4).await;
    assert_eq!(first[0].1, up.status_topic);
    assert_eq!(
        (first[0].2.as_slice(), first[0].3),
        (b"online".as_slice(), true)
    );
    let seqs: Vec<u64> = first[1..].iter().map(|p| seq_of(&outbox, &p.2)).collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    assert!(first[1..].iter().all(|p| !p.3), "readings are not retained");
    broker.quiet().await;
    assert!(outbox.acked().is_empty(), "no PUBACK, no ack");
    assert_eq!(outbox.handed_out(), vec![1, 2, 3]);
    assert_eq!(
        up.metric(r#"wardgate_mqtt_inflight_readings{uplink="test"}"#),
        Some(3.0)
    );

    // A PUBACK for the second reading's packet id acks exactly that reading. It frees a slot,
    // but rumqttc reuses packet ids cyclically (1..=max_inflight) and the next id is the
    // unacknowledged birth message's: it holds the publish until that id is acknowledged.
    broker.puback(first[2].0);
    let o = outbox.clone();
    eventually("seq 2 acked", move || o.acked().contains(&2)).await;
    assert_eq!(outbox.acked(), BTreeSet::from([2]));
    broker.quiet().await;

    // Acking the birth message releases the held publish, with the freed packet id.
    broker.puback(first[0].0);
    let next = broker.publishes(1).await;
    assert_eq!((seq_of(&outbox, &next[0].2), next[0].0), (4, first[0].0));
    broker.quiet().await;
    assert_eq!(
        outbox.acked(),
        BTreeSet::from([2]),
        "only PUBACKed readings are acked"
    );
    assert_eq!(outbox.with(|s| s.ack_log.clone()), vec![2]);
    assert_eq!(
        outbox.handed_out(),
        vec![1, 2, 3, 4, 5],
        "the window bounds what is taken"
    );
    assert_eq!(
        up.metric(r#"wardgate_mqtt_inflight_readings{uplink="test"}"#),
        Some(4.0)
    );

    // Shutdown cannot complete without the offline PUBACK: it gives up after shutdown_timeout,
    // still without acking anything.
    up.stop().await.expect("stops after the timeout");
    assert_eq!(outbox.acked(), BTreeSet::from([2]));
    assert_eq!(
        up.metric(r#"wardgate_mqtt_disconnects_total{uplink="test",reason="shutdown_timeout"}"#),
        Some(1.0)
    );
    assert_eq!(
        up.metric(r#"wardgate_mqtt_connected{uplink="test"}"#),
        Some(0.0)
    );
}

#[tokio::test]
async fn mqtt311_nothing_is_acked_without_a_puback_and_in_flight_stops_at_max_inflight() {
    nothing_is_acked_without_a_puback_and_in_flight_stops_at_max_inflight("3.1.1").await;
}

#[tokio::test]
async fn mqtt5_nothing_is_acked_without_a_puback_and_in_flight_stops_at_max_inflight() {
    nothing_is_acked_without_a_puback_and_in_flight_stops_at_max_inflight("5").await;
}

async fn reconnect_republishes_from_the_oldest_unacked_reading_and_nothing_stale_leaks(
    version: &str,
) {
    // The broker claims a resumed session on reconnect, which would make rumqttc replay what it
    // kept; the uplink must send only what the outbox hands out again.
    let mut broker = FakeBroker::start(true).await;
    let outbox = MemOutbox::new();
    for i in 0..6 {
        outbox.push("bed-1", MessageClass::Alarm, i as f64);
    }
    let mut up = start(
        config(
            &format!("mqtt://127.0.0.1:{}", broker.port),
            version,
            serde_json::json!({ "max_inflight": 4, "shutdown_timeout": "500ms" }),
        ),
        &outbox,
    );
    assert!(matches!(
        broker.next_event().await,
        FakeEvent::Connect { conn: 1, .. }
    ));
    let first = broker.publishes(4).await; // online, 1, 2, 3
    broker.puback(first[2].0); // reading 2
    broker.puback(first[0].0); // online
    let more = broker.publishes(1).await; // 4 (5 waits for reading 1's packet id)
    assert_eq!(seq_of(&outbox, &more[0].2), 4);
    let o = outbox.clone();
    eventually("seq 2 acked", move || o.acked().contains(&2)).await;

    broker.cmds.send(Cmd::Drop).expect("alive");
    assert!(matches!(
        broker.next_event().await,
        FakeEvent::Connect { conn: 2, .. }
    ));
    let second = broker.publishes(4).await;
    assert_eq!(
        (second[0].1.as_str(), second[0].2.as_slice()),
        (up.status_topic.as_str(), b"online".as_slice())
    );
    let seqs: Vec<u64> = second[1..].iter().map(|p| seq_of(&outbox, &p.2)).collect();
    assert_eq!(
        seqs,
        vec![1, 3, 4],
        "oldest unacked first, in order, acked ones skipped"
    );
    broker.quiet().await;
    assert_eq!(
        outbox.acked(),
        BTreeSet::from([2]),
        "the drop acked nothing"
    );
    assert!(outbox.with(|s| s.rewinds) >= 2);

    // PUBACKs on the new connection ack by their own packet ids.
    for p in &second {
        broker.puback(p.0);
    }
    let last = broker.publishes(2).await;
    let seqs: Vec<u64> = last.iter().map(|p| seq_of(&outbox, &p.2)).collect();
    assert_eq!(seqs, vec![5, 6]);
    for p in &last {
        broker.puback(p.0);
    }
    outbox.wait_all_acked().await;
    assert_eq!(
        outbox.with(|s| s.ack_log.len()),
        6,
        "each reading acked once"
    );
    up.stop().await.expect("stops");
}

#[tokio::test]
async fn mqtt311_reconnect_republishes_from_the_oldest_unacked_reading_and_nothing_stale_leaks() {
    reconnect_republishes_from_the_oldest_unacked_reading_and_nothing_stale_leaks("3.1.1").await;
}

#[tokio::test]
async fn mqtt5_reconnect_republishes_from_the_oldest_unacked_reading_and_nothing_stale_leaks() {
    reconnect_republishes_from_the_oldest_unacked_reading_and_nothing_stale_leaks("5").await;
}

/// A QoS 1 PUBLISH with an empty topic name, reusing `pkid` (a reading's packet id, so a
/// confused client might take it for that reading's acknowledgement).
fn empty_topic_publish(version: &str, pkid: u16) -> Vec<u8> {
    let [hi, lo] = pkid.to_be_bytes();
    let mut body = vec![0, 0, hi, lo];
    if version == "5" {
        body.push(0); // no properties, so no topic alias either
    }
    body.extend_from_slice(b"{}");
    let mut packet = vec![0x32, u8::try_from(body.len()).expect("short")];
    packet.extend(body);
    packet
}

async fn an_empty_topic_publish_from_the_broker_closes_the_connection_and_acks_nothing(
    version: &str,
) {
    let mut broker = FakeBroker::start(false).await;
    let outbox = MemOutbox::new();
    for i in 0..3 {
        outbox.push("bed-1", MessageClass::Vital, f64::from(i));
    }
    let mut up = start(
        config(
            &format!("mqtt://127.0.0.1:{}", broker.port),
            version,
            serde_json::json!({ "shutdown_timeout": "500ms" }),
        ),
        &outbox,
    );
    assert!(matches!(
        broker.next_event().await,
        FakeEvent::Connect { conn: 1, .. }
    ));
    let first = broker.publishes(4).await; // online, 1, 2, 3
    broker
        .cmds
        .send(Cmd::Raw(empty_topic_publish(version, first[1].0)))
        .expect("alive");
    assert!(
        matches!(
            broker.next_event().await,
            FakeEvent::Connect { conn: 2, .. }
        ),
        "the uplink closed the connection and came back"
    );
    assert!(outbox.acked().is_empty(), "the bad PUBLISH acked nothing");
    assert_eq!(
        up.metric(r#"wardgate_mqtt_protocol_violations_total{uplink="test",reason="empty_topic"}"#),
        Some(1.0)
    );
    assert_eq!(
        up.metric(r#"wardgate_mqtt_disconnects_total{uplink="test",reason="protocol"}"#),
        Some(1.0)
    );
    let second = broker.publishes(4).await;
    let seqs: Vec<u64> = second[1..].iter().map(|p| seq_of(&outbox, &p.2)).collect();
    assert_eq!(
        seqs,
        vec![1, 2, 3],
        "everything is sent again after reconnecting"
    );
    for p in &second {
        broker.puback(p.0);
    }
    outbox.wait_all_acked().await;
    up.stop().await.expect("stops");
}

#[tokio::test]
async fn mqtt311_an_empty_topic_publish_from_the_broker_closes_the_connection_and_acks_nothing() {
    an_empty_topic_publish_from_the_broker_closes_the_connection_and_acks_nothing("3.1.1").await;
}

#[tokio::test]
async fn mqtt5_an_empty_topic_publish_from_the_broker_closes_the_connection_and_acks_nothing() {
    an_empty_topic_publish_from_the_broker_closes_the_connection_and_acks_nothing("5").await;
}

/// The floor of the refused-credentials backoff in these tests (the default is 30 s).
const REFUSED_FLOOR: Duration = Duration::from_secs(1);

async fn refused_credentials_back_off_to_the_floor_and_say_so_in_health(version: &str, code: u8) {
    let mut broker = FakeBroker::start_refusing(false, vec![code]).await;
    let outbox = MemOutbox::new();
    outbox.push("bed-1", MessageClass::Vital, 1.0);
    let mut up = start(
        config(
            &format!("mqtt://127.0.0.1:{}", broker.port),
            version,
            serde_json::json!({
                "username": "ward", "password": "wrong",
                "refused_retry_min": "1s", "refused_retry_max": "2s",
                "shutdown_timeout": "500ms",
            }),
        ),
        &outbox,
    );
    let FakeEvent::Refused {
        conn: 1,
        at: refused_at,
    } = broker.next_event().await
    else {
        panic!("the first connection is refused");
    };
    let h = up.health.clone();
    eventually("health says the credentials were refused", move || {
        h.readiness().checks["uplink.test"]
            .detail
            .starts_with("broker refused credentials")
    })
    .await;
    assert!(!up.check().ready);
    let FakeEvent::Connect { conn: 2, at } = broker.next_event().await else {
        panic!("the second connection is accepted");
    };
    assert!(
        at.duration_since(refused_at) >= REFUSED_FLOOR,
        "retried after {:?}, before the floor",
        at.duration_since(refused_at)
    );
    assert_eq!(
        up.metric(
            r#"wardgate_mqtt_connect_failures_total{uplink="test",reason="credentials_refused"}"#
        ),
        Some(1.0)
    );
    let sent = broker.publishes(2).await;
    for p in &sent {
        broker.puback(p.0);
    }
    outbox.wait_all_acked().await;
    up.wait_ready().await;
    up.stop().await.expect("stops");
}

#[tokio::test]
async fn mqtt311_bad_user_name_or_password_backs_off_to_the_refused_floor() {
    refused_credentials_back_off_to_the_floor_and_say_so_in_health("3.1.1", 4).await;
}

#[tokio::test]
async fn mqtt311_not_authorized_backs_off_to_the_refused_floor() {
    refused_credentials_back_off_to_the_floor_and_say_so_in_health("3.1.1", 5).await;
}

#[tokio::test]
async fn mqtt5_bad_user_name_or_password_backs_off_to_the_refused_floor() {
    refused_credentials_back_off_to_the_floor_and_say_so_in_health("5", 0x86).await;
}

#[tokio::test]
async fn mqtt5_not_authorized_backs_off_to_the_refused_floor() {
    refused_credentials_back_off_to_the_floor_and_say_so_in_health("5", 0x87).await;
}
