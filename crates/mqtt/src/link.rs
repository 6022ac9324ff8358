//! One small seam over rumqttc's two clients (MQTT 3.1.1 in `rumqttc`, MQTT 5 in `rumqttc::v5`),
//! so the uplink logic in [`crate::uplink`] is written once.
//!
//! Only what the uplink needs crosses the seam: publish / disconnect requests, and the events
//! CONNACK, "publish written with packet id N" (`Outgoing::Publish(N)`), PUBACK(N) and
//! "DISCONNECT written". Everything else is [`LinkEvent::Other`].
//!
//! # What rumqttc 0.25 does that the uplink relies on (read in its source)
//! - Requests go through one bounded flume channel and the event loop takes them strictly in
//!   FIFO order. `MqttState::outgoing_publish` assigns the packet id and pushes
//!   `Outgoing::Publish(pkid)` as it takes each request, so those events come in the order the
//!   publishes were queued (QoS 0 publishes report pkid 0).
//! - Packet ids are reused cyclically, 1..=inflight (we set inflight = `max_inflight`). When the
//!   next id is still unacknowledged (the broker acked out of order, or not at all) rumqttc
//!   reports `Outgoing::AwaitAck`, holds that publish, takes no further requests, and reports the
//!   held publish's `Outgoing::Publish` right after the PUBACK that frees the id: the order still
//!   holds, and the PUBACK event comes before the reuse. If the id stays taken for two keep-alive
//!   intervals it fails the connection (`CollisionTimeout`), and the uplink starts over from the
//!   outbox. Mosquitto and other brokers ack in order, so this is a fault path.
//! - On a connection error `EventLoop::poll` calls `clean()`: unacked publishes and every request
//!   still in the channel move to `EventLoop::pending`, to be replayed first on the next
//!   connection, and the next CONNACK clears `pending` only if `session_present` is false.
//!   Events already buffered in `MqttState::events` are NOT cleared: with 3.1.1 they are returned
//!   after the next CONNACK (v5 returns them before it). `MqttState::collision` is not cleared
//!   either, which would stall a new session. [`Link::start_clean_session`] fixes all of that up
//!   at each CONNACK, so nothing queued on an old connection can be sent, or reported, on a new
//!   one.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::{TlsConfiguration, Transport};

/// Why a connection attempt failed or a connection ended. A closed set: it is a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinkFailure {
    /// TCP-level failure: refused, reset, closed by the peer.
    Io,
    /// Connect, flush or keep-alive (missing PINGRESP) timeout.
    Timeout,
    /// TLS handshake or certificate failure.
    Tls,
    /// The broker refused the CONNECT for another reason than our credentials (protocol
    /// version, client id, server unavailable, ...).
    Refused,
    /// The broker refused our credentials: bad user name or password, not authorized (and for
    /// MQTT 5, banned or a bad authentication method). Retrying soon cannot help.
    CredentialsRefused,
    /// The broker broke the protocol, or we could not encode a packet.
    Protocol,
    /// An MQTT 5 broker sent DISCONNECT.
    ServerDisconnect,
    /// Our own bookkeeping found an inconsistency and dropped the connection to start clean.
    Internal,
    /// Graceful shutdown: `offline` published, DISCONNECT sent.
    Shutdown,
    /// Shutdown gave up waiting for the broker and dropped the connection (the broker then
    /// publishes the will).
    ShutdownTimeout,
}

impl LinkFailure {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            LinkFailure::Io => "io",
            LinkFailure::Timeout => "timeout",
            LinkFailure::Tls => "tls",
            LinkFailure::Refused => "refused",
            LinkFailure::CredentialsRefused => "credentials_refused",
            LinkFailure::Protocol => "protocol",
            LinkFailure::ServerDisconnect => "server_disconnect",
            LinkFailure::Internal => "internal",
            LinkFailure::Shutdown => "shutdown",
            LinkFailure::ShutdownTimeout => "shutdown_timeout",
        }
    }
}

/// A failure reported by the event loop.
#[derive(Debug, Clone)]
pub(crate) struct LinkError {
    pub(crate) kind: LinkFailure,
    /// What went wrong, finer than `kind` and still a closed set (e.g. `tls_certificate_expired`).
    /// Repeated failures are logged once per label: the message may differ on every attempt
    /// (an expired certificate's names the current time).
    pub(crate) label: &'static str,
    /// A sentence saying what is wrong and, where we know, what to do about it.
    pub(crate) message: String,
}

impl LinkError {
    /// An error whose kind is all there is to say about its class.
    pub(crate) fn new(kind: LinkFailure, message: String) -> Self {
        LinkError {
            kind,
            label: kind.as_str(),
            message,
        }
    }
}

/// What the uplink needs to know from the event loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LinkEvent {
    /// The broker accepted the connection. `max_packet_size` is an MQTT 5 broker's limit.
    ConnAck { max_packet_size: Option<u32> },
    /// A PUBLISH was written with this packet id (0 for QoS 0).
    Published(u16),
    /// PUBACK for this packet id; `refused` carries an MQTT 5 error reason code's name.
    PubAck {
        pkid: u16,
        refused: Option<&'static str>,
    },
    /// Our DISCONNECT was written.
    DisconnectSent,
    /// The broker sent a PUBLISH with an empty topic name (after MQTT 5 topic-alias
    /// resolution): a protocol violation (MQTT 3.1.1 §4.7.3, MQTT 5 §4.7.3) that rumqttc passes
    /// on as an ordinary event. We never subscribe, so this broker cannot be trusted further.
    EmptyTopicPublish,
    /// Anything else (pings, collisions, ...).
    Other,
}

/// QoS levels the uplink uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Qos {
    AtMostOnce,
    AtLeastOnce,
}

/// Protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Version {
    V311,
    V5,
}

/// Everything needed to build a client. No `Debug`: it holds the password.
#[derive(Clone)]
pub(crate) struct LinkOptions {
    pub(crate) version: Version,
    pub(crate) client_id: String,
    pub(crate) host: String,
    pub(crate) port: u16,
    /// `Some(path)` for MQTT over WebSockets.
    pub(crate) websocket_path: Option<String>,
    pub(crate) keep_alive: Duration,
    pub(crate) credentials: Option<(String, String)>,
    pub(crate) will_topic: String,
    pub(crate) inflight: u16,
    pub(crate) max_packet_size: u32,
    pub(crate) request_capacity: usize,
    pub(crate) tls: Option<Arc<rustls::ClientConfig>>,
}

/// Payload of the status messages and the will.
pub(crate) const ONLINE: &[u8] = b"online";
pub(crate) const OFFLINE: &[u8] = b"offline";

/// MQTT 5 content type of readings.
const CONTENT_TYPE: &str = "application/json";

/// The request side.
#[derive(Debug, Clone)]
pub(crate) enum Client {
    V4(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

/// The event-loop side. Boxed: the loops are large and move in and out of futures.
pub(crate) enum Link {
    V4(Box<rumqttc::EventLoop>),
    V5(Box<rumqttc::v5::EventLoop>),
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Link::V4(_) => "Link::V4",
            Link::V5(_) => "Link::V5",
        })
    }
}

/// Builds the client pair. Always a clean session: the outbox, not the broker or rumqttc, is
/// the store of unacknowledged readings.
pub(crate) fn build(o: &LinkOptions) -> (Client, Link) {
    let (broker_addr, transport) =
        transport(&o.host, o.port, o.websocket_path.as_deref(), o.tls.as_ref());
    // Small: only acks and CONNACK/DISCONNECT come in; we never subscribe.
    const MAX_INCOMING: usize = 64 * 1024;
    match o.version {
        Version::V311 => {
            let mut opts = rumqttc::MqttOptions::new(o.client_id.clone(), broker_addr, o.port);
            opts.set_keep_alive(o.keep_alive)
                .set_clean_session(true)
                .set_inflight(o.inflight)
                .set_max_packet_size(MAX_INCOMING, o.max_packet_size as usize)
                .set_transport(transport)
                .set_last_will(rumqttc::LastWill::new(
                    o.will_topic.clone(),
                    OFFLINE,
                    rumqttc::QoS::AtLeastOnce,
                    true,
                ));
            if let Some((user, password)) = &o.credentials {
                opts.set_credentials(user.clone(), password.clone());
            }
            let (client, eventloop) = rumqttc::AsyncClient::new(opts, o.request_capacity);
            (Client::V4(client), Link::V4(Box::new(eventloop)))
        }
        Version::V5 => {
            use rumqttc::v5::mqttbytes::QoS;
            use rumqttc::v5::mqttbytes::v5::LastWill;
            let mut opts = rumqttc::v5::MqttOptions::new(o.client_id.clone(), broker_addr, o.port);
            opts.set_keep_alive(o.keep_alive)
                .set_clean_start(true)
                .set_outgoing_inflight_upper_limit(o.inflight)
                .set_transport(transport)
                .set_last_will(LastWill::new(
                    o.will_topic.clone(),
                    OFFLINE,
                    QoS::AtLeastOnce,
                    true,
                    None,
                ));
            if let Some((user, password)) = &o.credentials {
                opts.set_credentials(user.clone(), password.clone());
            }
            let (client, eventloop) = rumqttc::v5::AsyncClient::new(opts, o.request_capacity);
            (Client::V5(client), Link::V5(Box::new(eventloop)))
        }
    }
}

/// rumqttc's broker address and transport for a connection: `host` (`[v6]` bracketed) and
/// `port` over TCP, or, for MQTT over WebSockets, the `ws://` / `wss://` URL (rumqttc takes
/// host, port and path from it, and sends `Sec-WebSocket-Protocol: mqtt`). `tls` is the
/// connection's rustls configuration (`mqtts://`, `wss://`).
pub(crate) fn transport(
    host: &str,
    port: u16,
    websocket_path: Option<&str>,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> (String, Transport) {
    match (websocket_path, tls) {
        (None, None) => (host.to_owned(), Transport::Tcp),
        (None, Some(cfg)) => (
            host.to_owned(),
            Transport::Tls(TlsConfiguration::Rustls(cfg.clone())),
        ),
        (Some(path), None) => (format!("ws://{host}:{port}{path}"), Transport::Ws),
        (Some(path), Some(cfg)) => (
            format!("wss://{host}:{port}{path}"),
            Transport::Wss(TlsConfiguration::Rustls(cfg.clone())),
        ),
    }
}

impl Client {
    /// Queues a PUBLISH without waiting. Fails only if the request channel is full or closed,
    /// which the uplink's own in-flight cap rules out.
    pub(crate) fn try_publish(
        &self,
        topic: String,
        qos: Qos,
        retain: bool,
        payload: Bytes,
        json: bool,
    ) -> Result<(), String> {
        match self {
            Client::V4(c) => {
                let qos = match qos {
                    Qos::AtMostOnce => rumqttc::QoS::AtMostOnce,
                    Qos::AtLeastOnce => rumqttc::QoS::AtLeastOnce,
                };
                // The 3.1.1 client takes a Vec: one copy of the JSON per publish.
                c.try_publish(topic, qos, retain, payload.to_vec())
                    .map_err(|e| e.to_string())
            }
            Client::V5(c) => {
                use rumqttc::v5::mqttbytes::QoS;
                use rumqttc::v5::mqttbytes::v5::PublishProperties;
                let qos = match qos {
                    Qos::AtMostOnce => QoS::AtMostOnce,
                    Qos::AtLeastOnce => QoS::AtLeastOnce,
                };
                if json {
                    let props = PublishProperties {
                        payload_format_indicator: Some(1),
                        content_type: Some(CONTENT_TYPE.into()),
                        ..PublishProperties::default()
                    };
                    c.try_publish_with_properties(topic, qos, retain, payload, props)
                } else {
                    c.try_publish(topic, qos, retain, payload)
                }
                .map_err(|e| e.to_string())
            }
        }
    }

    /// Queues a DISCONNECT without waiting.
    pub(crate) fn try_disconnect(&self) -> Result<(), String> {
        match self {
            Client::V4(c) => c.try_disconnect().map_err(|e| e.to_string()),
            Client::V5(c) => c.try_disconnect().map_err(|e| e.to_string()),
        }
    }
}

/// An upper bound of the PUBLISH packet size for a topic and payload, to check against the
/// packet limit before queueing (rumqttc would otherwise fail the whole connection on encode,
/// and the reading would fail again after every reconnect).
pub(crate) fn publish_size_bound(version: Version, topic: &str, payload: usize) -> usize {
    // fixed header (1 + up to 4 length bytes) + topic length + topic + packet id + payload
    let base = 5 + 2 + topic.len() + 2 + payload;
    match version {
        Version::V311 => base,
        // properties length (up to 4) + payload format indicator (2) + content type (1 + 2 + n)
        Version::V5 => base + 4 + 2 + 3 + CONTENT_TYPE.len(),
    }
}

impl Link {
    /// The next event. Not cancel-safe (a cancelled write can lose a packet rumqttc already
    /// counted as sent): the uplink keeps one poll future alive until it completes.
    pub(crate) async fn poll(&mut self) -> Result<LinkEvent, LinkError> {
        match self {
            Link::V4(el) => el.poll().await.map(v4_event).map_err(v4_error),
            Link::V5(el) => el.poll().await.map(v5_event).map_err(v5_error),
        }
    }

    /// Called at each CONNACK: makes the new connection a clean slate inside rumqttc.
    /// Returns the packet ids of PUBACKs received on the previous connection that were still
    /// buffered (they are real acknowledgements of publishes made on that connection).
    pub(crate) fn start_clean_session(&mut self) -> Vec<u16> {
        match self {
            Link::V4(el) => {
                el.pending.clear();
                el.state.collision = None;
                let _ = el.state.clean();
                el.state
                    .events
                    .drain(..)
                    .filter_map(|e| match e {
                        rumqttc::Event::Incoming(rumqttc::Packet::PubAck(a)) => Some(a.pkid),
                        _ => None,
                    })
                    .collect()
            }
            Link::V5(el) => {
                use rumqttc::v5::mqttbytes::v5::Packet;
                el.pending.clear();
                el.state.collision = None;
                let _ = el.state.clean();
                el.state
                    .events
                    .drain(..)
                    .filter_map(|e| match e {
                        rumqttc::v5::Event::Incoming(Packet::PubAck(a))
                            if v5_refusal(&a.reason).is_none() =>
                        {
                            Some(a.pkid)
                        }
                        _ => None,
                    })
                    .collect()
            }
        }
    }

    /// An event rumqttc has already processed and queued, if any: what its next `poll` would
    /// return first while connected. Synchronous, so nothing in flight can be cancelled.
    pub(crate) fn next_buffered(&mut self) -> Option<LinkEvent> {
        match self {
            Link::V4(el) => el.state.events.pop_front().map(v4_event),
            Link::V5(el) => el.state.events.pop_front().map(v5_event),
        }
    }

    /// Drops the connection at once (no DISCONNECT, so the broker publishes the will). The next
    /// poll reconnects.
    pub(crate) fn drop_connection(&mut self) {
        match self {
            Link::V4(el) => el.clean(),
            Link::V5(el) => el.clean(),
        }
    }
}

fn v4_event(e: rumqttc::Event) -> LinkEvent {
    use rumqttc::{Event, Outgoing, Packet};
    match e {
        Event::Incoming(Packet::ConnAck(_)) => LinkEvent::ConnAck {
            max_packet_size: None,
        },
        Event::Incoming(Packet::PubAck(a)) => LinkEvent::PubAck {
            pkid: a.pkid,
            refused: None,
        },
        Event::Incoming(Packet::Publish(p)) if p.topic.is_empty() => LinkEvent::EmptyTopicPublish,
        Event::Outgoing(Outgoing::Publish(pkid)) => LinkEvent::Published(pkid),
        Event::Outgoing(Outgoing::Disconnect) => LinkEvent::DisconnectSent,
        _ => LinkEvent::Other,
    }
}

fn v5_event(e: rumqttc::v5::Event) -> LinkEvent {
    use rumqttc::Outgoing;
    use rumqttc::v5::Event;
    use rumqttc::v5::mqttbytes::v5::Packet;
    match e {
        Event::Incoming(Packet::ConnAck(c)) => LinkEvent::ConnAck {
            max_packet_size: c.properties.and_then(|p| p.max_packet_size),
        },
        Event::Incoming(Packet::PubAck(a)) => LinkEvent::PubAck {
            pkid: a.pkid,
            refused: v5_refusal(&a.reason),
        },
        Event::Incoming(Packet::Publish(p)) if p.topic.is_empty() => LinkEvent::EmptyTopicPublish,
        Event::Outgoing(Outgoing::Publish(pkid)) => LinkEvent::Published(pkid),
        Event::Outgoing(Outgoing::Disconnect) => LinkEvent::DisconnectSent,
        _ => LinkEvent::Other,
    }
}

fn v5_refusal(reason: &rumqttc::v5::mqttbytes::v5::PubAckReason) -> Option<&'static str> {
    use rumqttc::v5::mqttbytes::v5::PubAckReason as R;
    match reason {
        R::Success | R::NoMatchingSubscribers => None,
        R::UnspecifiedError => Some("unspecified_error"),
        R::ImplementationSpecificError => Some("implementation_specific_error"),
        R::NotAuthorized => Some("not_authorized"),
        R::TopicNameInvalid => Some("topic_name_invalid"),
        R::PacketIdentifierInUse => Some("packet_identifier_in_use"),
        R::QuotaExceeded => Some("quota_exceeded"),
        R::PayloadFormatInvalid => Some("payload_format_invalid"),
    }
}

/// Says what `kind` of failure happened in words an operator can act on, with a fixed label.
/// `raw` is rumqttc's message, kept where we have nothing better. `closed`: rumqttc saw the
/// peer close the connection.
fn explain(
    kind: LinkFailure,
    io: Option<&std::io::Error>,
    tls: Option<&rustls::Error>,
    closed: bool,
    raw: String,
) -> LinkError {
    let tls = tls.or_else(|| {
        io.and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    });
    let (label, message) = if let Some(t) = tls {
        explain_tls(t)
    } else if closed {
        (
            "io_closed",
            format!("the broker closed the connection ({raw})"),
        )
    } else if let Some(io) = io {
        use std::io::ErrorKind as K;
        match io.kind() {
            K::ConnectionReset | K::ConnectionAborted | K::UnexpectedEof | K::BrokenPipe => (
                "io_closed",
                format!("the broker closed the connection ({io})"),
            ),
            K::ConnectionRefused => (
                "io_refused",
                format!("nothing accepts connections at that address and port ({io})"),
            ),
            _ => ("io", raw),
        }
    } else {
        (kind.as_str(), raw)
    };
    LinkError {
        kind: if tls.is_some() {
            LinkFailure::Tls
        } else {
            kind
        },
        label,
        message,
    }
}

/// rustls's reasons, which name types (`Other(OtherError(CaUsedAsEndEntity))`) rather than
/// say what to fix.
fn explain_tls(e: &rustls::Error) -> (&'static str, String) {
    use rustls::{AlertDescription as A, CertificateError as C, Error as R};
    match e {
        R::InvalidCertificate(c) => match c {
            C::Expired | C::ExpiredContext { .. } => (
                "tls_certificate_expired",
                format!("the broker's certificate has expired ({c}); renew it on the broker, or check this gateway's clock"),
            ),
            C::NotValidYet | C::NotValidYetContext { .. } => (
                "tls_certificate_not_yet_valid",
                format!("the broker's certificate is not valid yet ({c}); check this gateway's clock, or the certificate's start date"),
            ),
            C::UnknownIssuer => (
                "tls_unknown_ca",
                "the broker's certificate is not issued by a CA we trust; set tls.ca_file to the CA that issued it (or install that CA in the system store)".into(),
            ),
            // What a CA with the same name as a trusted one, but another key, looks like.
            C::BadSignature => (
                "tls_unknown_ca",
                "the broker's certificate is not issued by a CA we trust (its signature does not verify against the trusted CA of that name); set tls.ca_file to the CA that issued it".into(),
            ),
            C::NotValidForName | C::NotValidForNameContext { .. } => (
                "tls_wrong_name",
                format!("the broker's certificate does not carry the name we check ({c}); connect by a name it carries, or set tls.server_name"),
            ),
            // webpki's reason travels as an opaque `OtherError`; its Debug form is the only
            // way to tell without depending on webpki directly.
            C::Other(o) if format!("{o:?}").contains("CaUsedAsEndEntity") => (
                "tls_ca_used_as_end_entity",
                "the broker presents a CA certificate as its own server certificate; give the broker a server certificate issued by that CA (Mosquitto: certfile), not the CA certificate itself".into(),
            ),
            other => (
                "tls_bad_certificate",
                format!("the broker's certificate was refused: {other}"),
            ),
        },
        R::AlertReceived(A::CertificateRequired) => (
            "tls_client_certificate_required",
            "the broker requires a client certificate and none was sent; set tls.client_cert_file and tls.client_key_file".into(),
        ),
        R::AlertReceived(
            a @ (A::BadCertificate
            | A::UnsupportedCertificate
            | A::CertificateRevoked
            | A::CertificateExpired
            | A::CertificateUnknown
            | A::UnknownCA
            | A::AccessDenied
            | A::DecryptError),
        ) => (
            "tls_client_certificate_rejected",
            format!("the broker rejected our client certificate (TLS alert {a:?}); check tls.client_cert_file and tls.client_key_file, and that the broker trusts the CA that issued them"),
        ),
        R::AlertReceived(A::HandshakeFailure) => (
            "tls_handshake_failure",
            "the broker ended the TLS handshake (alert HandshakeFailure): it may require a client certificate (tls.client_cert_file, tls.client_key_file) or accept no TLS version or cipher suite we offer".into(),
        ),
        other => ("tls", format!("TLS failed: {other}")),
    }
}

/// An I/O error on an established TLS stream (e.g. the broker's alert that it requires a client
/// certificate, which TLS 1.3 delivers after the handshake) is a TLS failure, not a network one.
fn io_kind(e: &std::io::Error) -> LinkFailure {
    if e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()) {
        LinkFailure::Tls
    } else {
        LinkFailure::Io
    }
}

/// The first I/O or rustls error in `e`'s source chain: how a WebSocket connection's failures
/// arrive (tungstenite wraps the socket's and the TLS handshake's errors).
fn io_or_tls_cause<'e>(
    e: &'e (dyn std::error::Error + 'static),
) -> (Option<&'e std::io::Error>, Option<&'e rustls::Error>) {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if let Some(t) = c.downcast_ref::<rustls::Error>() {
            return (None, Some(t));
        }
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return (Some(io), None);
        }
        cause = c.source();
    }
    (None, None)
}

/// A WebSocket failure's kind from its cause; without an I/O or TLS cause it is the HTTP
/// upgrade or the WebSocket framing that failed: a protocol failure.
fn websocket_kind(io: Option<&std::io::Error>, tls: Option<&rustls::Error>) -> LinkFailure {
    match (io, tls) {
        (_, Some(_)) => LinkFailure::Tls,
        (Some(io), None) => io_kind(io),
        (None, None) => LinkFailure::Protocol,
    }
}

pub(crate) fn v4_error(e: rumqttc::ConnectionError) -> LinkError {
    use rumqttc::{ConnectionError as E, StateError as S};
    let (io, tls) = match &e {
        E::Io(io)
        | E::MqttState(S::Io(io))
        | E::MqttState(S::Deserialization(rumqttc::mqttbytes::Error::Io(io)))
        | E::Tls(rumqttc::TlsError::Io(io)) => (Some(io), None),
        E::Tls(rumqttc::TlsError::TLS(t)) => (None, Some(t)),
        E::Websocket(w) => io_or_tls_cause(w),
        _ => (None, None),
    };
    let closed = matches!(e, E::MqttState(S::ConnectionAborted));
    let kind = match &e {
        E::Io(io)
        | E::MqttState(S::Io(io))
        | E::MqttState(S::Deserialization(rumqttc::mqttbytes::Error::Io(io))) => io_kind(io),
        E::MqttState(S::ConnectionAborted) => LinkFailure::Io,
        E::NetworkTimeout | E::FlushTimeout | E::MqttState(S::AwaitPingResp) => {
            LinkFailure::Timeout
        }
        E::Tls(_) => LinkFailure::Tls,
        E::Websocket(_) => websocket_kind(io, tls),
        E::ConnectionRefused(_) => LinkFailure::Refused,
        E::RequestsDone => LinkFailure::Internal,
        _ => LinkFailure::Protocol,
    };
    if let E::ConnectionRefused(code) = &e {
        use rumqttc::ConnectReturnCode as C;
        let why = match code {
            C::BadUserNamePassword => Some("bad user name or password, return code 4"),
            C::NotAuthorized => Some("not authorized, return code 5"),
            _ => None,
        };
        if let Some(why) = why {
            return LinkError::new(LinkFailure::CredentialsRefused, why.into());
        }
    }
    explain(kind, io, tls, closed, e.to_string())
}

fn v5_error(e: rumqttc::v5::ConnectionError) -> LinkError {
    use rumqttc::v5::{ConnectionError as E, StateError as S};
    let (io, tls) = match &e {
        E::Io(io)
        | E::MqttState(S::Io(io))
        | E::MqttState(S::Deserialization(rumqttc::v5::mqttbytes::Error::Io(io)))
        | E::Tls(rumqttc::TlsError::Io(io)) => (Some(io), None),
        E::Tls(rumqttc::TlsError::TLS(t)) => (None, Some(t)),
        E::Websocket(w) => io_or_tls_cause(w),
        _ => (None, None),
    };
    let closed = matches!(e, E::MqttState(S::ConnectionAborted));
    let kind = match &e {
        E::Io(io)
        | E::MqttState(S::Io(io))
        | E::MqttState(S::Deserialization(rumqttc::v5::mqttbytes::Error::Io(io))) => io_kind(io),
        E::MqttState(S::ConnectionAborted) => LinkFailure::Io,
        E::Timeout(_) | E::MqttState(S::AwaitPingResp) => LinkFailure::Timeout,
        E::Tls(_) => LinkFailure::Tls,
        E::Websocket(_) => websocket_kind(io, tls),
        E::ConnectionRefused(_) | E::MqttState(S::ConnFail { .. }) => LinkFailure::Refused,
        E::MqttState(S::ServerDisconnect { .. }) => LinkFailure::ServerDisconnect,
        E::RequestsDone => LinkFailure::Internal,
        _ => LinkFailure::Protocol,
    };
    if let E::ConnectionRefused(code) | E::MqttState(S::ConnFail { reason: code }) = &e {
        use rumqttc::v5::mqttbytes::v5::ConnectReturnCode as C;
        let why = match code {
            C::BadUserNamePassword => Some("bad user name or password, reason code 0x86"),
            C::NotAuthorized => Some("not authorized, reason code 0x87"),
            C::Banned => Some("banned, reason code 0x8A"),
            C::BadAuthenticationMethod => Some("bad authentication method, reason code 0x8C"),
            _ => None,
        };
        if let Some(why) = why {
            return LinkError::new(LinkFailure::CredentialsRefused, why.into());
        }
    }
    explain(kind, io, tls, closed, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::{AlertDescription as A, CertificateError as C, Error as R};

    fn label_and_message(e: R) -> (&'static str, String) {
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        let err = explain(LinkFailure::Io, Some(&io), None, false, "raw".into());
        assert_eq!(
            err.kind,
            LinkFailure::Tls,
            "a TLS cause makes it a TLS failure"
        );
        (err.label, err.message)
    }

    #[test]
    fn tls_failures_get_a_fixed_label_and_a_sentence_saying_what_to_do() {
        for (e, label, hint) in [
            (
                R::InvalidCertificate(C::Expired),
                "tls_certificate_expired",
                "clock",
            ),
            (
                R::InvalidCertificate(C::NotValidYet),
                "tls_certificate_not_yet_valid",
                "clock",
            ),
            (
                R::InvalidCertificate(C::UnknownIssuer),
                "tls_unknown_ca",
                "tls.ca_file",
            ),
            (
                R::InvalidCertificate(C::NotValidForName),
                "tls_wrong_name",
                "tls.server_name",
            ),
            (
                R::AlertReceived(A::CertificateRequired),
                "tls_client_certificate_required",
                "tls.client_cert_file",
            ),
            (
                R::AlertReceived(A::UnknownCA),
                "tls_client_certificate_rejected",
                "tls.client_cert_file",
            ),
        ] {
            let (got, message) = label_and_message(e);
            assert_eq!(got, label, "{message}");
            assert!(message.contains(hint), "{message}");
        }
    }

    #[test]
    fn a_closed_or_refused_socket_is_said_in_words() {
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        let e = explain(LinkFailure::Io, Some(&reset), None, false, "raw".into());
        assert_eq!((e.kind, e.label), (LinkFailure::Io, "io_closed"));
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let e = explain(LinkFailure::Io, Some(&refused), None, false, "raw".into());
        assert_eq!(e.label, "io_refused");
        let e = explain(LinkFailure::Timeout, None, None, false, "raw".into());
        assert_eq!((e.label, e.message.as_str()), ("timeout", "raw"));
    }
}
