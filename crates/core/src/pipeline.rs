//! The one ingest pipeline every protocol adapter uses:
//! authorize → decode by content format → normalize → enqueue → resolve when durable.
//!
//! An adapter turns what it received into a [`Submission`] (the peer context, the device the
//! message claims, the class, the resource, the content format and the body) and calls
//! [`IngestPipeline::submit`]. It gets back either a [`Refused`] at once (answer the device
//! now) or a [`Pending`] future that resolves when the store made the reading durable — only
//! then may the adapter acknowledge (CoAP 2.01/2.04, HTTP 2xx, MQTT PUBACK). [`Refused`] is the
//! one error type every adapter maps to its protocol's answer:
//!
//! | [`Refused`] | CoAP | HTTP | MQTT (southbound subscriber) |
//! |---|---|---|---|
//! | `Denied(Unauthenticated)` | 4.01 | 401 | PUBACK, dropped, counted |
//! | `Denied(Forbidden)` | 4.03 | 403 | PUBACK, dropped, counted |
//! | `UnsupportedFormat` | 4.15 | 415 | PUBACK, dropped, counted |
//! | `Payload(TooManyRecords)` | 4.13 | 413 | PUBACK, dropped, counted |
//! | `Payload(_)` | 4.00 | 400 | PUBACK, dropped, counted |
//! | `Store(Busy / StoreFull / ShuttingDown)` | 5.03 + Max-Age | 503 + Retry-After | no PUBACK, reconnect |
//! | `Store(Unavailable)` | 5.00 | 500 | no PUBACK, reconnect |
//!
//! The MQTT subscriber's peer is the sensors' broker and MQTT 3.1.1 has no negative
//! acknowledgement: a withheld PUBACK makes the broker deliver the message again after every
//! reconnect, which helps a store refusal (the message is kept) and loops for ever on a message
//! that can never be accepted (see `wardgate_mqtt::southbound`).
//!
//! The pipeline is synchronous up to the enqueue and never blocks: it runs inside the socket
//! tasks' sans-I/O engines. Metrics and logs stay with the adapters' typed events, which know
//! their protocol's labels.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::oneshot;
use ulid::Ulid;

use crate::authorize::{Action, AuthRequest, Authorizer, Denied, Grant};
use crate::bus::{Bus, IngestError};
use crate::clock::Clock;
use crate::payload::{self, ContentFormat, DecodeContext, DecodeError, Limits};
use crate::peer::PeerContext;
use crate::reading::{MessageClass, Protocol, Reading, Record};

/// One message's readings, as an adapter hands them to the pipeline.
#[derive(Debug, Clone, Copy)]
pub struct Submission<'a> {
    /// Who sent it.
    pub peer: &'a PeerContext,
    /// Over which protocol.
    pub protocol: Protocol,
    /// The device the message claims to be from (URI segment, topic level, endpoint name).
    pub device: &'a str,
    /// Its message class.
    pub class: MessageClass,
    /// The resource it targets, for the authorizer and logs (`/v1/readings/bed-12`).
    pub resource: &'a str,
    /// Its content format; `None` when the adapter saw one wardgate does not decode.
    pub format: Option<ContentFormat>,
    /// The body (reassembled, if it came in blocks).
    pub body: &'a [u8],
    /// Record name for payloads that carry none (text/plain), e.g. from the URI.
    pub default_name: Option<&'a str>,
}

/// Why the pipeline refused a submission. Nothing of a refused submission is stored.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refused {
    /// The authorizer said no.
    #[error(transparent)]
    Denied(#[from] Denied),
    /// The content format is not one wardgate decodes.
    #[error("unsupported content format")]
    UnsupportedFormat,
    /// The body does not decode to a reading.
    #[error(transparent)]
    Payload(#[from] DecodeError),
    /// The store did not take it (full, busy, shutting down, failing).
    #[error(transparent)]
    Store(#[from] IngestError),
}

impl Refused {
    /// Fixed metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Refused::Denied(d) => d.reason(),
            Refused::UnsupportedFormat => "unsupported_format",
            Refused::Payload(e) => e.reason(),
            Refused::Store(e) => e.reason(),
        }
    }

    /// Whether the device should keep the reading and retry later (5.03 / 503).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Refused::Store(IngestError::Busy | IngestError::StoreFull | IngestError::ShuttingDown)
        )
    }
}

/// A reading the pipeline took: what an adapter needs to answer once it is durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The reading id (the CoAP Location-Path and HTTP `Location` carry it).
    pub id: Ulid,
    /// The device it is stored under (the authorizer's answer, not necessarily the claim).
    pub device: String,
    /// Its class.
    pub class: MessageClass,
    /// Quarantined: stored, and delivered only once an administrator approves its identity.
    pub held: bool,
}

/// A reading queued for the store. Resolves `Ok` only once the reading is durable.
#[derive(Debug)]
pub struct Pending {
    rx: oneshot::Receiver<Result<(), IngestError>>,
    accepted: Option<Accepted>,
}

impl Pending {
    /// What was accepted (known before it is durable: for logs and answers built early).
    /// `None` only after the future completed.
    pub fn accepted(&self) -> Option<&Accepted> {
        self.accepted.as_ref()
    }
}

impl Future for Pending {
    type Output = Result<Accepted, Refused>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let r = match Pin::new(&mut self.rx).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(r)) => r,
            // The store dropped the request: it is shutting down, nothing was committed.
            Poll::Ready(Err(_)) => Err(IngestError::ShuttingDown),
        };
        Poll::Ready(match (r, self.accepted.take()) {
            (Ok(()), Some(a)) => Ok(a),
            (Ok(()), None) => Err(Refused::Store(IngestError::Unavailable(
                "ingest result polled twice".into(),
            ))),
            (Err(e), _) => Err(Refused::Store(e)),
        })
    }
}

/// The ingest pipeline. Cheap to clone; every adapter holds one.
#[derive(Debug, Clone)]
pub struct IngestPipeline {
    gateway: Arc<str>,
    bus: Bus,
    clock: Arc<dyn Clock>,
    authorizer: Arc<dyn Authorizer>,
    limits: Limits,
    classifier: Option<Arc<dyn Classify>>,
}

/// Sets a reading's message class from its device and resource (the selector's
/// `[[selector.rules]]`), before it is normalized: the class is part of the stored JSON and
/// decides the outbox lane and the routing policy, so it is settled once, here.
pub trait Classify: Send + Sync + std::fmt::Debug {
    /// The class of a reading from `device` (the authorized id) at `resource` (CoAP path,
    /// MQTT topic, HTTP path, LwM2M path), which the adapter classed `class`.
    fn classify(&self, device: &str, resource: &str, class: MessageClass) -> MessageClass;
}

impl IngestPipeline {
    /// A pipeline stamping readings with `gateway`, decoding within `limits`, enqueueing on
    /// `bus`.
    pub fn new(
        gateway: impl Into<Arc<str>>,
        bus: Bus,
        clock: Arc<dyn Clock>,
        authorizer: Arc<dyn Authorizer>,
        limits: Limits,
    ) -> Self {
        IngestPipeline {
            gateway: gateway.into(),
            bus,
            clock,
            authorizer,
            limits,
            classifier: None,
        }
    }

    /// The same pipeline, classing readings with `classifier` (see [`Classify`]).
    pub fn with_classifier(mut self, classifier: Arc<dyn Classify>) -> Self {
        self.classifier = Some(classifier);
        self
    }

    fn class_of(&self, device: &str, resource: &str, class: MessageClass) -> MessageClass {
        match &self.classifier {
            Some(c) => c.classify(device, resource, class),
            None => class,
        }
    }

    /// The same pipeline decoding within `limits` (an adapter's own bounds).
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The bus it enqueues on (for depth gauges).
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// The decoder limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The authorizer in use.
    pub fn authorizer(&self) -> &Arc<dyn Authorizer> {
        &self.authorizer
    }

    /// Authorizes, decodes, normalizes and enqueues one message's reading. Never waits: a full
    /// bus is `Refused::Store(Busy)` at once.
    pub fn submit(&self, s: &Submission<'_>) -> Result<Pending, Refused> {
        refuse_security_claim(s.class)?;
        let grant = self.authorizer.authorize_write(&AuthRequest {
            peer: s.peer,
            protocol: s.protocol,
            claimed_device: s.device,
            class: s.class,
            resource: s.resource,
            action: Action::Write,
        })?;
        let format = s.format.ok_or(Refused::UnsupportedFormat)?;
        let now = self.clock.now();
        let ctx = DecodeContext {
            now,
            default_name: s.default_name,
            limits: self.limits,
        };
        let records = payload::decode(format, s.body, &ctx)?;
        let class = self.class_of(grant.device(), s.resource, s.class);
        self.enqueue(s.peer, s.protocol, class, grant, now, records)
    }

    /// Normalizes authorized, decoded records into a reading and enqueues it (held in
    /// quarantine when the grant says so).
    fn enqueue(
        &self,
        peer: &PeerContext,
        protocol: Protocol,
        class: MessageClass,
        grant: Grant,
        now: std::time::SystemTime,
        records: Vec<Record>,
    ) -> Result<Pending, Refused> {
        let (device, held) = match grant {
            Grant::Allow(d) => (d, false),
            Grant::Hold(d) => (d, true),
        };
        let mut reading =
            Reading::new(self.gateway.as_ref(), device, protocol, class, now, records);
        // Provenance only where something proved who sent it: an unauthenticated address is
        // spoofable (plain UDP), proves nothing, and would cost every reading ~50 bytes through
        // the store, the uplinks and the broker (measured: bench A/B in docs/bench-raw/notes.md).
        // A held reading always has one: what proved the unknown identity is what an
        // administrator approves, and the quarantine lane reads it back from here.
        if peer.identity.is_some() {
            reading = reading.with_source(peer);
        }
        self.enqueue_reading(reading, held)
    }

    /// Enqueues a normalized reading; the [`Pending`] resolves when it is durable.
    fn enqueue_reading(&self, reading: Reading, held: bool) -> Result<Pending, Refused> {
        let accepted = Accepted {
            id: reading.id,
            device: reading.device.clone(),
            class: reading.class,
            held,
        };
        let mut encoded = reading.into_encoded();
        encoded.held = held;
        let rx = self.bus.enqueue(vec![encoded])?;
        Ok(Pending {
            rx,
            accepted: Some(accepted),
        })
    }
}

/// Readings an adapter decoded itself (LwM2M values, named from its object model), as it hands
/// them to the pipeline: the same authorization and enqueue as a [`Submission`], without the
/// pipeline's payload decoders.
#[derive(Debug, Clone)]
pub struct RecordSubmission<'a> {
    /// Who sent it.
    pub peer: &'a PeerContext,
    /// Over which protocol.
    pub protocol: Protocol,
    /// The device the message claims to be from.
    pub device: &'a str,
    /// Its message class.
    pub class: MessageClass,
    /// The resource it targets, for the authorizer and logs (`/dp`, `/3303/0/5700`).
    pub resource: &'a str,
    /// The resolved records.
    pub records: Vec<Record>,
}

impl IngestPipeline {
    /// Authorizes and enqueues records an adapter decoded itself. The records get the checks the
    /// payload decoders apply (at least one, at most the record limit, SenML names within the
    /// name limit, exactly one finite value each), so every reading obeys the published schema
    /// whichever path made it.
    pub fn submit_records(&self, s: RecordSubmission<'_>) -> Result<Pending, Refused> {
        refuse_security_claim(s.class)?;
        let grant = self.authorizer.authorize_write(&AuthRequest {
            peer: s.peer,
            protocol: s.protocol,
            claimed_device: s.device,
            class: s.class,
            resource: s.resource,
            action: Action::Write,
        })?;
        check_records(&s.records, &self.limits)?;
        let class = self.class_of(grant.device(), s.resource, s.class);
        self.enqueue(
            s.peer,
            s.protocol,
            class,
            grant,
            self.clock.now(),
            s.records,
        )
    }
}

impl IngestPipeline {
    /// Enqueues a reading another part of a split gateway already took, authorized and
    /// normalized (`wardgate run --only uplinks` receiving the bus): the `wardgate.reading/1`
    /// JSON is checked against the schema and stored byte for byte, under the id it was given
    /// where the device was acknowledged, so a redelivered copy carries the same id and the
    /// backend de-duplicates it. It is not authorized again: the bus is the gateway's own
    /// (a private broker with credentials), and the part that spoke to the device decided.
    /// `topic_device`, when the bus topic names a device, must be the reading's.
    pub fn forward(
        &self,
        json: bytes::Bytes,
        topic_device: Option<&str>,
    ) -> Result<Pending, Refused> {
        let reading: Reading = serde_json::from_slice(&json)
            .map_err(|e| DecodeError::Invalid(format!("not a wardgate.reading/1: {e}")))?;
        if !crate::reading::valid_device_id(reading.device.as_bytes()) {
            return Err(DecodeError::Invalid("the device id is not valid".into()).into());
        }
        if let Some(d) = topic_device.filter(|d| *d != reading.device) {
            return Err(DecodeError::Invalid(format!(
                "the topic names device {d:?}, the reading {:?}",
                reading.device
            ))
            .into());
        }
        check_records(&reading.records, &self.limits)?;
        let accepted = Accepted {
            id: reading.id,
            device: reading.device.clone(),
            class: reading.class,
            held: false,
        };
        let rx = self.bus.enqueue(vec![crate::reading::Encoded {
            id: reading.id,
            device: reading.device,
            class: reading.class,
            protocol: reading.protocol,
            json,
            held: false,
        }])?;
        Ok(Pending {
            rx,
            accepted: Some(accepted),
        })
    }
}

/// The `security` class is the gateway's own (its monitor's events): a device claiming it
/// could forge security events or jump the priority lane, so it is refused (CoAP 4.03,
/// HTTP 403). An operator's `[[selector.classes]]` rule may still classify into it.
fn refuse_security_claim(class: MessageClass) -> Result<(), Denied> {
    if class == MessageClass::Security {
        return Err(Denied::Forbidden("security_class_reserved"));
    }
    Ok(())
}

impl IngestPipeline {
    /// Enqueues a reading the gateway makes itself (an anomaly event of its traffic monitor):
    /// from `device` (the gateway's own id), not authorized (no peer sent it), checked like
    /// every reading and made durable like every reading. Resolves like [`Self::submit`].
    pub fn submit_own(
        &self,
        device: &str,
        protocol: Protocol,
        class: MessageClass,
        records: Vec<Record>,
    ) -> Result<Pending, Refused> {
        if !crate::reading::valid_device_id(device.as_bytes()) {
            return Err(DecodeError::Invalid("the device id is not valid".into()).into());
        }
        check_records(&records, &self.limits)?;
        let now = self.clock.now();
        let reading = Reading::new(self.gateway.as_ref(), device, protocol, class, now, records);
        self.enqueue_reading(reading, false)
    }
}

fn check_records(records: &[Record], limits: &Limits) -> Result<(), DecodeError> {
    if records.is_empty() {
        return Err(DecodeError::Empty);
    }
    if records.len() > limits.max_records {
        return Err(DecodeError::TooManyRecords(limits.max_records));
    }
    for (i, r) in records.iter().enumerate() {
        crate::senml::check_name(&r.n, limits, &format_args!("record {i}"))?;
        let values = [
            r.v.is_some(),
            r.vs.is_some(),
            r.vb.is_some(),
            r.vd.is_some(),
        ]
        .iter()
        .filter(|x| **x)
        .count();
        if values != 1 {
            return Err(DecodeError::Invalid(format!(
                "record {i}: needs exactly one value"
            )));
        }
        if r.v.is_some_and(|v| !v.is_finite()) || !r.t.is_finite() {
            return Err(DecodeError::Invalid(format!(
                "record {i}: a number is not finite"
            )));
        }
        let long = |x: &Option<String>| x.as_ref().is_some_and(|x| x.len() > limits.max_value_len);
        if long(&r.vs) || long(&r.vd) {
            return Err(DecodeError::TooLong("value"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::clock::FixedClock;
    use crate::peer::{Identity, IdentityKind};

    #[derive(Debug)]
    struct DenyAll(Denied);

    impl Authorizer for DenyAll {
        fn authorize(&self, _: &AuthRequest<'_>) -> Result<String, Denied> {
            Err(self.0)
        }
        fn authenticates(&self) -> bool {
            true
        }
    }

    /// Maps a PSK identity to the device it names, refuses anyone else.
    #[derive(Debug)]
    struct ByIdentity;

    impl Authorizer for ByIdentity {
        fn authorize(&self, req: &AuthRequest<'_>) -> Result<String, Denied> {
            match &req.peer.identity {
                Some(id) => Ok(id.value().to_owned()),
                None => Err(Denied::Unauthenticated("no identity")),
            }
        }
        fn authenticates(&self) -> bool {
            true
        }
    }

    fn pipeline(auth: Arc<dyn Authorizer>) -> (IngestPipeline, crate::BusReceiver) {
        let (bus, rx) = Bus::new(4);
        let clock = Arc::new(FixedClock(UNIX_EPOCH + Duration::from_secs(1_763_759_045)));
        (
            IngestPipeline::new("ward-t", bus, clock, auth, Limits::default()),
            rx,
        )
    }

    fn submission<'a>(peer: &'a PeerContext, body: &'a [u8]) -> Submission<'a> {
        Submission {
            peer,
            protocol: Protocol::Coap,
            device: "claimed-bed",
            class: MessageClass::Vital,
            resource: "/v1/readings/claimed-bed",
            format: Some(ContentFormat::SenmlJson),
            body,
            default_name: None,
        }
    }

    const BODY: &[u8] = br#"[{"n":"spo2","u":"%","v":97}]"#;

    #[tokio::test]
    async fn accepted_reading_resolves_only_when_the_store_says_durable() {
        let (p, mut rx) = pipeline(Arc::new(crate::AllowAll));
        let peer = PeerContext::udp("127.0.0.1:40000".parse().unwrap());
        let pending = p.submit(&submission(&peer, BODY)).expect("accepted");
        let req = rx.recv().await.expect("queued");
        let json: serde_json::Value = serde_json::from_slice(&req.readings[0].json).unwrap();
        assert_eq!(json["device"], "claimed-bed");
        assert!(
            json.get("source").is_none(),
            "an unauthenticated address proves nothing: no provenance"
        );
        req.done.send(Ok(())).unwrap();
        let a = pending.await.expect("durable");
        assert_eq!(a.device, "claimed-bed");
        assert_eq!(a.id.to_string(), json["id"]);
    }

    #[tokio::test]
    async fn the_authorizer_chooses_the_device_from_the_proven_identity() {
        let (p, mut rx) = pipeline(Arc::new(ByIdentity));
        let peer = PeerContext::udp("127.0.0.1:40000".parse().unwrap())
            .with_identity(Identity::new(IdentityKind::PskIdentity, "bed-7"));
        let pending = p.submit(&submission(&peer, BODY)).expect("accepted");
        assert_eq!(pending.accepted().map(|a| a.device.as_str()), Some("bed-7"));
        let req = rx.recv().await.expect("queued");
        let json: serde_json::Value = serde_json::from_slice(&req.readings[0].json).unwrap();
        assert_eq!(json["device"], "bed-7");
        assert_eq!(json["source"]["identity"], "psk:bed-7");
        assert_eq!(json["source"]["transport"], "udp");
        assert_eq!(json["source"]["addr"], "127.0.0.1:40000");
    }

    #[tokio::test]
    async fn a_device_may_not_claim_the_security_class_the_gateway_may_use_it() {
        let (p, mut rx) = pipeline(Arc::new(crate::AllowAll));
        let peer = PeerContext::udp("127.0.0.1:40000".parse().unwrap());
        let mut s = submission(&peer, BODY);
        s.class = MessageClass::Security;
        let e = p.submit(&s).unwrap_err();
        assert!(
            matches!(
                e,
                Refused::Denied(Denied::Forbidden("security_class_reserved"))
            ),
            "{e:?}"
        );
        let r = p.submit_records(RecordSubmission {
            peer: &peer,
            protocol: Protocol::Lwm2m,
            device: "bed-1",
            class: MessageClass::Security,
            resource: "/dp",
            records: vec![Record {
                n: "x".into(),
                v: Some(1.0),
                ..Record::default()
            }],
        });
        assert!(matches!(r, Err(Refused::Denied(Denied::Forbidden(_)))));
        assert!(rx.try_recv().is_err(), "nothing was queued");

        let records = vec![Record {
            n: "anomaly".into(),
            vs: Some("resource_scan".into()),
            ..Record::default()
        }];
        let pending = p
            .submit_own("ward-t", Protocol::Coap, MessageClass::Security, records)
            .expect("accepted");
        let req = rx.recv().await.expect("queued");
        let json: serde_json::Value = serde_json::from_slice(&req.readings[0].json).unwrap();
        assert_eq!(
            (json["class"].as_str(), json["device"].as_str()),
            (Some("security"), Some("ward-t"))
        );
        req.done.send(Ok(())).unwrap();
        assert_eq!(
            pending.await.expect("durable").class,
            MessageClass::Security
        );
        // Its own readings are checked like any other.
        assert!(
            p.submit_own("ward-t", Protocol::Coap, MessageClass::Security, Vec::new())
                .is_err()
        );
        assert!(
            p.submit_own(
                "no spaces",
                Protocol::Coap,
                MessageClass::Security,
                vec![Record {
                    n: "x".into(),
                    v: Some(1.0),
                    ..Record::default()
                }]
            )
            .is_err()
        );
    }

    #[test]
    fn refusals_store_nothing_and_name_their_reason() {
        let peer = PeerContext::udp("127.0.0.1:40000".parse().unwrap());
        let (p, mut rx) = pipeline(Arc::new(DenyAll(Denied::Forbidden("acl"))));
        let e = p.submit(&submission(&peer, BODY)).unwrap_err();
        assert_eq!(e.reason(), "forbidden");
        let (p, _) = pipeline(Arc::new(ByIdentity));
        assert_eq!(
            p.submit(&submission(&peer, BODY)).unwrap_err().reason(),
            "unauthenticated"
        );
        let (p, mut rx2) = pipeline(Arc::new(crate::AllowAll));
        let mut s = submission(&peer, BODY);
        s.format = None;
        assert_eq!(p.submit(&s).unwrap_err().reason(), "unsupported_format");
        let s = submission(&peer, b"{not senml");
        assert!(matches!(p.submit(&s), Err(Refused::Payload(_))));
        assert!(rx.try_recv().is_err() && rx2.try_recv().is_err());
    }

    #[test]
    fn a_full_bus_is_a_retryable_refusal_not_a_wait() {
        let peer = PeerContext::udp("127.0.0.1:40000".parse().unwrap());
        let (bus, _rx) = Bus::new(1);
        let p = IngestPipeline::new(
            "ward-t",
            bus,
            Arc::new(crate::SystemClock),
            Arc::new(crate::AllowAll),
            Limits::default(),
        );
        let _first = p.submit(&submission(&peer, BODY)).expect("room for one");
        let e = p.submit(&submission(&peer, BODY)).unwrap_err();
        assert!(e.is_retryable() && e.reason() == "busy", "{e:?}");
    }

    #[tokio::test]
    async fn a_forwarded_reading_keeps_its_id_and_bytes_and_skips_the_authorizer() {
        // Taken by one part (its authorizer chose the device)...
        let (adapter, mut rx) = pipeline(Arc::new(ByIdentity));
        let peer = PeerContext::udp("127.0.0.1:40000".parse().unwrap())
            .with_identity(Identity::new(IdentityKind::PskIdentity, "bed-7"));
        let _pending = adapter.submit(&submission(&peer, BODY)).expect("accepted");
        let original = rx.recv().await.expect("queued").readings.remove(0);
        // ...forwarded by the uplinks part, whose authorizer would refuse everyone.
        let (uplinks, mut rx) = pipeline(Arc::new(DenyAll(Denied::Forbidden("acl"))));
        let pending = uplinks
            .forward(original.json.clone(), Some("bed-7"))
            .expect("forwarded");
        let req = rx.recv().await.expect("queued");
        assert_eq!(
            req.readings[0], original,
            "same id, device, class and bytes"
        );
        req.done.send(Ok(())).unwrap();
        assert_eq!(pending.await.expect("durable").id, original.id);
    }

    #[test]
    fn a_forwarded_reading_that_is_not_one_is_refused_as_a_payload() {
        let (p, mut rx) = pipeline(Arc::new(crate::AllowAll));
        let reading = Reading::new(
            "ward-t",
            "bed-1",
            Protocol::Coap,
            MessageClass::Alarm,
            std::time::UNIX_EPOCH,
            vec![Record {
                n: "spo2".into(),
                v: Some(80.0),
                t: 1.0,
                ..Record::default()
            }],
        )
        .into_encoded()
        .json;
        let text = std::str::from_utf8(&reading).unwrap().to_owned();
        let bad = [
            br#"[{"n":"spo2","v":97}]"#.to_vec(),
            text.replace("wardgate.reading/1", "wardgate.reading/9")
                .into_bytes(),
            text.replace(r#""device":"bed-1""#, r#""device":"bed 1""#)
                .into_bytes(),
            text.replace(r#","v":80.0"#, r#","v":80.0,"vb":true"#)
                .into_bytes(),
        ];
        for body in bad {
            let e = p.forward(body.clone().into(), None).unwrap_err();
            assert_eq!(e.reason(), "invalid", "{}", String::from_utf8_lossy(&body));
        }
        let e = p.forward(reading.clone(), Some("bed-2")).unwrap_err();
        assert!(e.to_string().contains("bed-2"), "{e}");
        assert!(rx.try_recv().is_err(), "nothing of a refusal is queued");
        assert!(p.forward(reading, Some("bed-1")).is_ok());
    }
}
