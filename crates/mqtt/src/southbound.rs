//! The MQTT southbound subscriber: ward sensors that publish to a local broker instead of
//! speaking CoAP. wardgate subscribes (MQTT 3.1.1) and hands each message to the one ingest
//! pipeline; the broker learns the message is taken only once its reading is durable.
//!
//! # Ack means durable
//! The session is persistent (`clean_session = false` under a stable `client_id`), so the
//! broker queues what sensors publish while wardgate is down and delivers it after the
//! reconnect. Acknowledgements are manual (`MqttOptions::set_manual_acks`): each QoS 1 PUBLISH
//! is submitted to [`IngestPipeline::submit`] and its PUBACK is queued only once the returned
//! [`wardgate_core::Pending`] resolved, i.e. once the reading is in the outbox. Until then the
//! broker holds the message, and a crash, a disconnect or a store refusal makes it deliver it
//! again. At least once: a message whose reading became durable but whose PUBACK did not reach
//! the broker comes again and becomes a second reading with its own id (MQTT 3.1.1 gives a
//! message no id to de-duplicate on).
//!
//! # Order of acknowledgements
//! MQTT 3.1.1 §4.6 wants PUBACKs in the order the PUBLISHes arrived, and rumqttc 0.25 sends
//! them in the order `AsyncClient::try_ack` queues them (one FIFO request channel). The
//! subscriber keeps received messages in a window in arrival order and acknowledges from its
//! front only: a message that is already durable waits for the ones before it (the store
//! commits in bus order, so that wait is short).
//!
//! # What is acknowledged without a reading, and what is not acknowledged
//! - Acknowledged and dropped, counted in `wardgate_mqtt_ingest_messages_refused{reason}` and
//!   logged at most once a minute per reason: an undecodable payload, a payload format that
//!   cannot be recognised, a topic without a valid device id at `device_level`, a device the
//!   [`Authorizer`](wardgate_core::Authorizer) refuses, a topic no configured filter matches,
//!   and retained messages (a broker replays its retained message at every subscribe, which
//!   would duplicate a reading per reconnect; sensors must not publish readings retained).
//!   MQTT 3.1.1 has no negative acknowledgement, and withholding the PUBACK would make the
//!   broker deliver the same bad message after every reconnect, for ever.
//! - Not acknowledged, counted in `wardgate_mqtt_ingest_messages_deferred{reason}`: a message
//!   the store refuses for now (`Refused::Store`: bus busy, outbox full under `reject`, shutting
//!   down, store failing). The subscriber stops taking messages, lets the PUBACKs of the
//!   messages before it be written, drops the connection and reconnects after the backoff; the
//!   broker then delivers everything unacknowledged again, in order. Messages behind the
//!   refused one are dropped from the window unacknowledged as well (acknowledging them would
//!   break the order).
//!
//! # Who the peer is
//! The peer is the broker, not the sensor: MQTT 3.1.1 does not say who published a message.
//! The broker authenticates its publishers and its ACL decides who may publish on which topic;
//! the device id comes from the topic. The [`PeerContext`] carries the broker's address and
//! transport (`tcp`, or `tls` for `mqtts://` and `wss://`); over TLS its identity is the
//! SHA-256 fingerprint of the broker certificate that verified (`x509-sha256:…`), and nothing
//! otherwise. The authorizer still decides, per message, whether that peer may write for the
//! device the topic names, with the topic as the resource. With the device registry that means
//! one registry entry for the broker: its certificate fingerprint, `protocols = ["mqtts"]`,
//! `resources` = the topics, `speaks_for` = the device ids its sensors may use. Over plain
//! `mqtt://` nothing is proven, so the registry refuses every message (`unauthenticated`);
//! only the unauthenticated `AllowAll` accepts them.
//!
//! # Backpressure and memory
//! At most `max_inflight` messages are held awaiting durability. When the window is full the
//! subscriber stops polling rumqttc's event loop until the oldest is acknowledged, so TCP
//! pushes back on the broker. rumqttc reads and answers keep-alive only while polled, so a
//! window stuck longer than one and a half keep-alive intervals (a store that stopped
//! answering) ends in the broker closing the connection, which redelivers everything later.
//! MQTT 3.1.1 has no Receive Maximum for the client to announce; the broker's own per-client
//! limit on unacknowledged messages (Mosquitto `max_inflight_messages`, 20 by default) keeps it
//! from sending more than that, so with `max_inflight` at or above it the window never fills.
//! PUBACKs owed wait in order in a queue of packet ids when rumqttc's request channel is full
//! (it writes one request per poll while incoming messages keep it busy), so acknowledging never
//! fails; a warning says when the broker sends more than `max_inflight` unacknowledged.
//!
//! # Reconnects
//! Messages still in the window when the connection ends are dropped unacknowledged (the broker
//! redelivers them). At each CONNACK the subscriber clears what rumqttc kept from the previous
//! connection (buffered incoming packets, queued requests), so no PUBACK of an old connection is
//! ever sent on a new one, and subscribes again to every filter, so the configured filters hold
//! even when the broker lost or never had the session.

mod config;
mod filter;
mod metrics;
mod session_tap;

use std::collections::VecDeque;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, Incoming, Outgoing, Publish, QoS};
use tokio::time::Instant;

use crate::uplink::sleep_until;
use wardgate_core::health::ComponentKind;
use wardgate_core::{
    Backoff, Health, HealthReporter, Identity, IdentityKind, IngestPipeline, PeerContext, Pending,
    Protocol, Refused, Shutdown, Submission, TransportKind,
};

pub use config::{MqttIngestConfig, PayloadFormat, TopicConfig};
pub use metrics::MqttIngestMetrics;

use crate::error::MqttError;
use crate::link::{self, LinkError, LinkFailure};
use crate::tls::SeenCertificate;
use crate::url::BrokerUrl;
use filter::{TopicFilter, TopicMatch};
use metrics::{
    ConnectFailed, Connected, Disconnected, IngestMetrics, Ingested, LogGate, MessageDeferred,
    MessageRefused, SubscriptionRefused,
};
use session_tap::SessionTap;

/// A connection that stayed up this long resets the reconnect backoff.
const STABLE_CONNECTION: Duration = Duration::from_secs(10);

/// How often a connect failure that keeps happening is logged again at WARN.
const FAILURE_LOG_REPEAT: Duration = Duration::from_secs(10 * 60);

impl MqttIngestConfig {
    /// Builds the subscriber: validates this section (the same rules as [`Self::validate`]),
    /// reads the TLS files, and registers its health check `ingest.mqtt.<name>` with `health`.
    /// Nothing connects until it runs.
    pub fn build(
        &self,
        metrics: MqttIngestMetrics,
        health: &Health,
    ) -> Result<MqttIngest, MqttError> {
        crate::error::check(|p| self.validate(&format!("ingest.mqtt.{}", self.name), p))?;
        let url = BrokerUrl::parse(&self.url).map_err(|e| MqttError::Url {
            url: crate::url::redact(&self.url),
            reason: e.to_string(),
        })?;
        let filters = self
            .topics
            .iter()
            .map(TopicFilter::parse)
            .collect::<Result<Vec<_>, _>>()
            .map_err(MqttError::Invalid)?;
        let seen = SeenCertificate::default();
        let tls = if url.tls {
            Some(crate::tls::client_config_recording(
                &self.tls,
                &url.host,
                seen.clone(),
            )?)
        } else {
            None
        };
        let (broker_addr, transport) = link::transport(
            &url.connect_host(),
            url.port,
            url.websocket_path.as_deref(),
            tls.as_ref(),
        );
        let mut options = rumqttc::MqttOptions::new(self.client_id.clone(), broker_addr, url.port);
        options
            .set_keep_alive(self.keep_alive)
            .set_clean_session(false)
            .set_manual_acks(true)
            // We never publish: one outgoing slot is all rumqttc needs to allocate.
            .set_inflight(1)
            .set_max_packet_size(self.max_packet_size as usize, 64 * 1024)
            .set_transport(transport);
        // MQTT 3.1.1 allows a password only with a user name: send an empty one.
        if self.username.is_some() || self.password.is_some() {
            options.set_credentials(
                self.username.clone().unwrap_or_default(),
                self.password.clone().unwrap_or_default(),
            );
        }
        let max_inflight = usize::from(self.max_inflight);
        let credentials = (self.username.is_some() || self.password.is_some()).then(|| {
            (
                self.username.as_deref().unwrap_or_default(),
                self.password.as_deref().unwrap_or_default(),
            )
        });
        Ok(MqttIngest {
            connect_size: session_tap::connect_size(&self.client_id, credentials),
            subscribe_size: session_tap::subscribe_size(filters.iter().map(|f| f.filter.as_str())),
            tap: None,
            health: health.reporter(
                format!("ingest.mqtt.{}", self.name),
                ComponentKind::Listener,
            ),
            metrics: metrics.for_ingest(&self.name),
            name: self.name.clone(),
            url,
            filters,
            qos: if self.qos == 0 {
                QoS::AtMostOnce
            } else {
                QoS::AtLeastOnce
            },
            max_inflight,
            reconnect_min: self.reconnect_min,
            reconnect_max: self.reconnect_max,
            shutdown_timeout: self.shutdown_timeout,
            options,
            // A PUBACK per window slot, the SUBSCRIBE and the DISCONNECT, with room to spare.
            request_capacity: max_inflight + 16,
            seen,
        })
    }
}

/// A configured MQTT southbound subscriber, not yet running.
pub struct MqttIngest {
    name: String,
    url: BrokerUrl,
    filters: Vec<TopicFilter>,
    qos: QoS,
    max_inflight: usize,
    reconnect_min: Duration,
    reconnect_max: Duration,
    shutdown_timeout: Duration,
    /// Holds the credentials: never printed.
    options: rumqttc::MqttOptions,
    request_capacity: usize,
    seen: SeenCertificate,
    metrics: IngestMetrics,
    health: HealthReporter,
    /// The traffic monitor, shown the broker session's packets (see `session_tap`).
    tap: Option<Arc<dyn wardgate_core::DatagramTap>>,
    /// Sizes of the packets rumqttc does not report whole (for the tap).
    connect_size: usize,
    subscribe_size: usize,
}

impl std::fmt::Debug for MqttIngest {
    // Hand-written so the credentials in the options never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttIngest")
            .field("name", &self.name)
            .field("url", &self.url.to_string())
            .field("client_id", &self.options.client_id())
            .finish_non_exhaustive()
    }
}

impl MqttIngest {
    /// The subscriber's configured name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Shows the broker session to the traffic monitor (flow records, capture): each MQTT
    /// packet as a stream segment of its size, never its bytes (see `session_tap`).
    #[must_use]
    pub fn with_tap(mut self, tap: Option<Arc<dyn wardgate_core::DatagramTap>>) -> Self {
        self.tap = tap;
        self
    }

    /// Connects, subscribes, and ingests through `pipeline` until `shutdown`; reconnects with
    /// full-jitter exponential backoff between `reconnect_min` and `reconnect_max`. At shutdown
    /// it stops taking messages, waits (at most `shutdown_timeout`) for those in flight to
    /// become durable and be acknowledged, and disconnects; the rest stay with the broker.
    ///
    /// Connection failures are retried, never returned; it returns `Ok` after shutdown.
    pub async fn run(self, pipeline: IngestPipeline, shutdown: Shutdown) -> Result<(), MqttError> {
        let addresses = resolve(&self.url).await;
        // The first address names the peer (informative only: the broker proves itself by its
        // certificate; rumqttc resolves again at every connect); all of them find the session's
        // socket for the traffic monitor. Unspecified when the name does not resolve.
        let peer_addr = SocketAddr::new(
            addresses
                .first()
                .copied()
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            self.url.port,
        );
        let broker_addresses = if self.tap.is_some() {
            addresses
        } else {
            Vec::new()
        };
        let (client, eventloop) = AsyncClient::new(self.options.clone(), self.request_capacity);
        let mut d = Driver {
            session_tap: self
                .tap
                .clone()
                .map(|t| SessionTap::new(t, self.connect_size, self.subscribe_size)),
            broker_addresses,
            up: &self,
            pipeline: &pipeline,
            client,
            peer: PeerContext::new(peer_addr, transport_kind(&self.url)),
            window: Window::default(),
            connected: false,
            connected_at: Instant::now(),
            phase: Phase::Running,
            acks_unwritten: 0,
            acks_waiting: VecDeque::new(),
            acks_backlog_warned: false,
            disconnect_sent: false,
            backoff: Backoff::new(self.reconnect_min, self.reconnect_max),
            last_failure: None,
            log: LogGate::default(),
        };
        self.health.not_ready(format!("connecting to {}", self.url));
        d.connecting();
        let mut poll = arm(eventloop, Duration::ZERO);
        let mut deadline: Option<Instant> = None;
        loop {
            let may_poll = d.phase != Phase::Running || d.window.len() < self.max_inflight;
            let resolving = d.window.has_waiting();
            tokio::select! {
                biased;
                () = shutdown.cancelled(), if d.phase != Phase::Draining => {
                    deadline = Some(Instant::now() + self.shutdown_timeout);
                    d.begin_shutdown();
                }
                () = sleep_until(deadline), if deadline.is_some() => {
                    tracing::warn!(ingest = %self.name, timeout = ?self.shutdown_timeout, "MQTT subscriber shutdown timed out; messages still in flight stay with the broker");
                    d.drop_window("shutting_down");
                    return d.finish();
                }
                () = std::future::poll_fn(|cx| d.window.poll_resolve(cx)), if resolving => {}
                (mut el, res) = &mut poll, if may_poll => {
                    let next = match res {
                        Ok(ev) => d.on_event(&mut el, ev),
                        Err(e) => d.on_error(link::v4_error(e)),
                    };
                    match next {
                        Next::Poll(delay) => {
                            if !d.connected {
                                d.connecting();
                            }
                            poll = arm(el, delay);
                        }
                        Next::Return => return d.finish(),
                    }
                }
            }
            d.ack_front();
            d.flush_acks();
            match d.phase {
                Phase::Reconnecting if d.acks_unwritten == 0 && d.acks_waiting.is_empty() => {
                    // The PUBACKs owed are written: drop the connection (cancelling the poll
                    // loses nothing now) and start over on a new event loop after the backoff.
                    let delay = d.lost_connection(LinkError::new(
                        LinkFailure::Internal,
                        "the store refused a message for now; reconnecting so that the broker delivers it again".into(),
                    ));
                    let (client, eventloop) =
                        AsyncClient::new(self.options.clone(), self.request_capacity);
                    d.client = client;
                    d.phase = Phase::Running;
                    d.connecting();
                    poll = arm(eventloop, delay);
                }
                Phase::Draining
                    if d.connected
                        && !d.disconnect_sent
                        && d.window.is_empty()
                        && d.acks_unwritten == 0
                        && d.acks_waiting.is_empty() =>
                {
                    d.disconnect_sent = true;
                    if let Err(e) = d.client.try_disconnect() {
                        tracing::warn!(ingest = %self.name, error = %e, "cannot queue DISCONNECT; dropping the connection");
                        return d.finish();
                    }
                }
                Phase::Draining if !d.connected => return d.finish(),
                _ => {}
            }
        }
    }
}

/// The broker's addresses: the URL's IP address, or every address its name resolves to now
/// (none when it does not resolve).
async fn resolve(url: &BrokerUrl) -> Vec<IpAddr> {
    if let Ok(ip) = url.host.parse::<IpAddr>() {
        return vec![ip];
    }
    match tokio::net::lookup_host((url.host.as_str(), url.port)).await {
        Ok(addrs) => addrs.map(|a| a.ip()).collect(),
        Err(_) => Vec::new(),
    }
}

fn transport_kind(url: &BrokerUrl) -> TransportKind {
    if url.tls {
        TransportKind::Tls
    } else {
        TransportKind::Tcp
    }
}

type PollFuture =
    Pin<Box<dyn Future<Output = (EventLoop, Result<Event, rumqttc::ConnectionError>)> + Send>>;

/// Moves the event loop into a future that waits `delay`, polls once and hands the loop back.
/// Never cancelled while the connection matters: a cancelled write can lose a packet.
fn arm(mut el: EventLoop, delay: Duration) -> PollFuture {
    Box::pin(async move {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let res = el.poll().await;
        (el, res)
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Poll(Duration),
    Return,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    /// The store refused a message for now: take nothing more, let the PUBACKs owed be
    /// written, then drop the connection.
    Reconnecting,
    /// Shutting down: take nothing more, acknowledge what becomes durable, then DISCONNECT.
    Draining,
}

/// What became of a received message.
#[derive(Debug)]
enum Verdict {
    /// Its reading is durable: acknowledge.
    Durable(wardgate_core::Accepted),
    /// It can never become a reading: acknowledge, count, drop.
    Dropped {
        reason: &'static str,
        detail: String,
    },
    /// Not now: leave it unacknowledged (the broker delivers it again) and reconnect.
    Deferred(&'static str),
}

impl From<Refused> for Verdict {
    fn from(e: Refused) -> Self {
        match e {
            Refused::Store(s) => Verdict::Deferred(s.reason()),
            other => Verdict::Dropped {
                reason: other.reason(),
                detail: other.to_string(),
            },
        }
    }
}

#[derive(Debug)]
enum SlotState {
    Waiting(Pending),
    Done(Verdict),
}

#[derive(Debug)]
struct Slot {
    publish: Publish,
    received_at: Instant,
    state: SlotState,
}

/// Received messages in arrival order, until acknowledged from the front.
#[derive(Debug, Default)]
struct Window {
    slots: VecDeque<Slot>,
    waiting: usize,
}

impl Window {
    fn len(&self) -> usize {
        self.slots.len()
    }

    fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    fn has_waiting(&self) -> bool {
        self.waiting > 0
    }

    fn push(&mut self, slot: Slot) {
        if matches!(slot.state, SlotState::Waiting(_)) {
            self.waiting += 1;
        }
        self.slots.push_back(slot);
    }

    /// Polls every message awaiting durability; ready when at least one resolved.
    fn poll_resolve(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut resolved = false;
        for slot in &mut self.slots {
            if let SlotState::Waiting(pending) = &mut slot.state {
                if let Poll::Ready(r) = Pin::new(pending).poll(cx) {
                    slot.state = SlotState::Done(match r {
                        Ok(a) => Verdict::Durable(a),
                        Err(e) => e.into(),
                    });
                    self.waiting -= 1;
                    resolved = true;
                }
            }
        }
        if resolved {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// The front message, if its verdict is in.
    fn pop_done(&mut self) -> Option<(Publish, Instant, Verdict)> {
        if !matches!(self.slots.front()?.state, SlotState::Done(_)) {
            return None;
        }
        let slot = self.slots.pop_front()?;
        match slot.state {
            SlotState::Done(v) => Some((slot.publish, slot.received_at, v)),
            SlotState::Waiting(_) => None,
        }
    }

    fn clear(&mut self) -> usize {
        self.waiting = 0;
        let n = self.slots.len();
        self.slots.clear();
        n
    }
}

/// The subscriber's state machine; `run` feeds it events.
struct Driver<'a> {
    up: &'a MqttIngest,
    pipeline: &'a IngestPipeline,
    client: AsyncClient,
    /// The broker as a peer, with the identity of the current connection.
    peer: PeerContext,
    window: Window,
    connected: bool,
    connected_at: Instant,
    phase: Phase,
    /// PUBACKs queued and not yet reported written by rumqttc.
    acks_unwritten: usize,
    /// PUBACKs (packet ids, in order) not yet handed to rumqttc because its request channel
    /// was full: rumqttc writes at most one request per poll while incoming messages keep it
    /// busy, so under a flood the owed acknowledgements queue here instead of failing.
    acks_waiting: VecDeque<u16>,
    /// The warning about a broker sending more than `max_inflight` was logged.
    acks_backlog_warned: bool,
    disconnect_sent: bool,
    backoff: Backoff,
    /// The last connect failure logged at WARN: kind, label and when.
    last_failure: Option<(LinkFailure, &'static str, Instant)>,
    log: LogGate,
    /// The traffic monitor's view of the session, when there is a monitor.
    session_tap: Option<SessionTap>,
    /// The broker's addresses, for finding the session's socket (empty without a monitor).
    broker_addresses: Vec<IpAddr>,
}

impl Driver<'_> {
    fn on_event(&mut self, el: &mut EventLoop, ev: Event) -> Next {
        if let Some(t) = &self.session_tap {
            match &ev {
                Event::Incoming(Incoming::SubAck(s)) => {
                    t.packet(true, session_tap::suback_size(s.return_codes.len()));
                }
                Event::Incoming(Incoming::Publish(p)) => t.packet(true, p.size()),
                Event::Incoming(Incoming::PingResp) => t.packet(true, session_tap::EMPTY),
                Event::Outgoing(Outgoing::PubAck(_)) => t.packet(false, session_tap::PUBACK),
                Event::Outgoing(Outgoing::Subscribe(_)) => t.subscribed(),
                Event::Outgoing(Outgoing::PingReq | Outgoing::Disconnect) => {
                    t.packet(false, session_tap::EMPTY);
                }
                _ => {}
            }
        }
        match ev {
            Event::Incoming(Incoming::ConnAck(c)) => self.on_connack(el, c.session_present),
            Event::Incoming(Incoming::SubAck(s)) => self.on_suback(&s.return_codes),
            Event::Incoming(Incoming::Publish(p)) => self.on_publish(p),
            Event::Outgoing(Outgoing::PubAck(_)) => {
                self.acks_unwritten = self.acks_unwritten.saturating_sub(1);
            }
            Event::Outgoing(Outgoing::Disconnect) if self.disconnect_sent => {
                self.connected = false;
                if let Some(t) = &mut self.session_tap {
                    t.closed();
                }
                Disconnected {
                    reason: LinkFailure::Shutdown.as_str(),
                    error: "",
                    unacked: self.window.len(),
                }
                .emit(&self.up.metrics);
                return Next::Return;
            }
            _ => {}
        }
        Next::Poll(Duration::ZERO)
    }

    /// A connection attempt is about to start (for the traffic monitor's view).
    fn connecting(&mut self) {
        if let Some(t) = &mut self.session_tap {
            t.connecting(self.up.url.port, &self.broker_addresses);
        }
    }

    fn on_connack(&mut self, el: &mut EventLoop, session_present: bool) {
        // Whatever rumqttc kept from the previous connection (incoming publishes read but not
        // yet returned, queued requests) belongs to it: the broker redelivers what we did not
        // acknowledge, and an old PUBACK must not be sent on this connection.
        el.state.events.clear();
        el.pending.clear();
        self.window.clear();
        self.acks_unwritten = 0;
        self.acks_waiting.clear();
        self.connected = true;
        self.connected_at = Instant::now();
        self.last_failure = None;
        let mut peer = PeerContext::new(self.peer.addr, self.peer.transport);
        if let Some(fp) = self.up.seen.latest() {
            peer = peer.with_identity(Identity::new(IdentityKind::CertificateSha256, fp));
        }
        self.peer = peer;
        if let Some(t) = &mut self.session_tap {
            t.connected(&self.peer, &self.broker_addresses);
        }
        Connected {
            url: &self.up.url.to_string(),
            session_present,
        }
        .emit(&self.up.metrics);
        let filters = self
            .up
            .filters
            .iter()
            .map(|f| rumqttc::SubscribeFilter::new(f.filter.clone(), self.up.qos));
        if let Err(e) = self.client.try_subscribe_many(filters) {
            // Cannot happen with the channel sized above the window; reconnect if it does.
            tracing::error!(ingest = %self.up.name, error = %e, "cannot queue SUBSCRIBE; reconnecting");
            self.phase_reconnect();
        }
        self.up
            .health
            .not_ready(format!("connected to {}, subscribing", self.up.url));
    }

    fn on_suback(&mut self, codes: &[rumqttc::SubscribeReasonCode]) {
        let mut refused = Vec::new();
        for (f, code) in self.up.filters.iter().zip(codes) {
            if *code == rumqttc::SubscribeReasonCode::Failure {
                SubscriptionRefused { filter: &f.filter }.emit(&self.up.metrics);
                refused.push(f.filter.as_str());
            }
        }
        if refused.is_empty() {
            self.up.health.ready(format!(
                "subscribed to {} topic filter(s) at {}",
                self.up.filters.len(),
                self.up.url
            ));
        } else {
            self.up.health.not_ready(format!(
                "{} refused the subscription to {}",
                self.up.url,
                refused.join(", ")
            ));
        }
    }

    fn on_publish(&mut self, p: Publish) {
        self.up.metrics.received();
        if self.phase != Phase::Running {
            let reason = if self.phase == Phase::Draining {
                "shutting_down"
            } else {
                "reconnecting"
            };
            MessageDeferred { reason }.emit(&self.up.metrics, &mut self.log);
            return;
        }
        let state = match self.assess(&p) {
            Ok(pending) => SlotState::Waiting(pending),
            Err(v) => SlotState::Done(v),
        };
        self.window.push(Slot {
            publish: p,
            received_at: Instant::now(),
            state,
        });
    }

    /// Hands a message to the pipeline, or says why not.
    fn assess(&self, p: &Publish) -> Result<Pending, Verdict> {
        let dropped = |reason: &'static str, detail: &str| Verdict::Dropped {
            reason,
            detail: detail.to_owned(),
        };
        if p.retain {
            return Err(dropped(
                "retained",
                "a retained message is the broker's replay of an old value, not a new reading",
            ));
        }
        let mut found = None;
        for f in &self.up.filters {
            match f.classify(&p.topic) {
                TopicMatch::NoMatch => continue,
                TopicMatch::BadDeviceId => {
                    return Err(dropped(
                        "bad_device_id",
                        "the topic level at device_level is not a device id (1-128 of [A-Za-z0-9._:-])",
                    ));
                }
                TopicMatch::Device(d) => {
                    found = Some((f, d));
                    break;
                }
            }
        }
        let Some((f, device)) = found else {
            return Err(dropped(
                "unmatched_topic",
                "no configured topic filter matches the topic",
            ));
        };
        if f.format == PayloadFormat::Reading {
            return self
                .pipeline
                .forward(p.payload.clone(), Some(device))
                .map_err(Verdict::from);
        }
        let submission = Submission {
            peer: &self.peer,
            protocol: Protocol::Mqtt,
            device,
            class: f.class,
            resource: &p.topic,
            format: filter::content_format(f.format, &p.payload),
            body: &p.payload,
            default_name: None,
        };
        self.pipeline.submit(&submission).map_err(Verdict::from)
    }

    /// Acknowledges every message at the front of the window whose verdict is in, in order.
    fn ack_front(&mut self) {
        while let Some((publish, received_at, verdict)) = self.window.pop_done() {
            match verdict {
                Verdict::Durable(a) => {
                    Ingested {
                        class: a.class,
                        latency: received_at.elapsed(),
                    }
                    .emit(&self.up.metrics);
                    self.ack(&publish);
                }
                Verdict::Dropped { reason, detail } => {
                    MessageRefused {
                        reason,
                        topic: &publish.topic,
                        detail: &detail,
                    }
                    .emit(&self.up.metrics, &mut self.log);
                    self.ack(&publish);
                }
                Verdict::Deferred(reason) => {
                    MessageDeferred { reason }.emit(&self.up.metrics, &mut self.log);
                    // Acknowledging what comes after it would break the order; the broker
                    // delivers all of it again after the reconnect.
                    self.drop_window("behind_deferred");
                    if self.phase == Phase::Running {
                        self.phase = Phase::Reconnecting;
                    }
                }
            }
        }
        self.up.metrics.set_awaiting(self.window.len());
    }

    fn ack(&mut self, publish: &Publish) {
        if publish.qos == QoS::AtMostOnce {
            return;
        }
        self.acks_waiting.push_back(publish.pkid);
        self.flush_acks();
        if self.acks_waiting.len() > self.up.max_inflight && !self.acks_backlog_warned {
            self.acks_backlog_warned = true;
            tracing::warn!(
                ingest = %self.up.name,
                waiting = self.acks_waiting.len(),
                "the broker sends more unacknowledged messages than max_inflight; set its \
                 per-client in-flight limit (Mosquitto max_inflight_messages) at or below \
                 max_inflight so acknowledgements keep up"
            );
        }
    }

    /// Hands the waiting PUBACKs to rumqttc, in order, while its request channel has room.
    fn flush_acks(&mut self) {
        while let Some(&pkid) = self.acks_waiting.front() {
            let mut ack = Publish::new("", QoS::AtLeastOnce, Vec::new());
            ack.pkid = pkid;
            // Fails only when the channel is full (the client outlives its event loop): the
            // rest wait until rumqttc wrote some (`Outgoing::PubAck`).
            if self.client.try_ack(&ack).is_err() {
                break;
            }
            self.acks_waiting.pop_front();
            self.acks_unwritten += 1;
        }
    }

    fn phase_reconnect(&mut self) {
        if self.phase == Phase::Running {
            self.phase = Phase::Reconnecting;
        }
    }

    /// Drops every message in the window unacknowledged, counted as deferred for `reason`.
    fn drop_window(&mut self, reason: &'static str) {
        for _ in 0..self.window.clear() {
            MessageDeferred { reason }.emit(&self.up.metrics, &mut self.log);
        }
    }

    fn begin_shutdown(&mut self) {
        self.phase = Phase::Draining;
        self.up.health.not_ready("stopping");
    }

    fn finish(self) -> Result<(), MqttError> {
        if self.connected {
            Disconnected {
                reason: LinkFailure::ShutdownTimeout.as_str(),
                error: "",
                unacked: self.window.len(),
            }
            .emit(&self.up.metrics);
        }
        self.up.health.not_ready("stopped");
        Ok(())
    }

    /// The established connection is gone: forget its window; returns the reconnect delay.
    fn lost_connection(&mut self, e: LinkError) -> Duration {
        self.connected = false;
        if let Some(t) = &mut self.session_tap {
            t.closed();
        }
        if self.connected_at.elapsed() >= STABLE_CONNECTION {
            self.backoff.reset();
        }
        let unacked = self.window.len();
        self.drop_window("connection_lost");
        self.acks_unwritten = 0;
        self.acks_waiting.clear();
        Disconnected {
            reason: e.kind.as_str(),
            error: &e.message,
            unacked,
        }
        .emit(&self.up.metrics);
        self.up
            .health
            .not_ready(format!("disconnected from {}: {}", self.up.url, e.message));
        self.backoff.next_delay()
    }

    fn on_error(&mut self, e: LinkError) -> Next {
        if self.phase == Phase::Draining {
            if self.connected {
                self.lost_connection(e);
            }
            return Next::Return;
        }
        if self.connected {
            let delay = self.lost_connection(e);
            // Whatever made it reconnect, the failed connection did it.
            self.phase = Phase::Running;
            return Next::Poll(delay);
        }
        let delay = self.backoff.next_delay();
        let now = Instant::now();
        let state_changed = match self.last_failure {
            Some((kind, label, logged)) => {
                (kind, label) != (e.kind, e.label)
                    || now.duration_since(logged) >= FAILURE_LOG_REPEAT
            }
            None => true,
        };
        ConnectFailed {
            reason: e.kind,
            error: &e.message,
            retry_in: delay,
            state_changed,
        }
        .emit(&self.up.metrics);
        self.up
            .health
            .not_ready(format!("cannot connect to {}: {}", self.up.url, e.message));
        if state_changed {
            self.last_failure = Some((e.kind, e.label, now));
        }
        Next::Poll(delay)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use wardgate_core::{Bus, IngestError, MessageClass};

    fn publish(pkid: u16) -> Publish {
        let mut p = Publish::new("ward/bed-1/senml", QoS::AtLeastOnce, b"[]".to_vec());
        p.pkid = pkid;
        p
    }

    fn pipeline() -> (IngestPipeline, wardgate_core::BusReceiver) {
        let (bus, rx) = Bus::new(8);
        (
            IngestPipeline::new(
                "ward-t",
                bus,
                Arc::new(wardgate_core::SystemClock),
                Arc::new(wardgate_core::AllowAll),
                wardgate_core::payload::Limits::default(),
            ),
            rx,
        )
    }

    fn pending(p: &IngestPipeline) -> Pending {
        let peer = PeerContext::new("127.0.0.1:1883".parse().unwrap(), TransportKind::Tcp);
        p.submit(&Submission {
            peer: &peer,
            protocol: Protocol::Mqtt,
            device: "bed-1",
            class: MessageClass::Vital,
            resource: "ward/bed-1/senml",
            format: Some(wardgate_core::payload::ContentFormat::SenmlJson),
            body: br#"[{"n":"spo2","v":97}]"#,
            default_name: None,
        })
        .unwrap()
    }

    #[tokio::test]
    async fn a_durable_message_waits_for_the_ones_before_it() {
        let (p, mut rx) = pipeline();
        let mut w = Window::default();
        for pkid in [1, 2] {
            w.push(Slot {
                publish: publish(pkid),
                received_at: Instant::now(),
                state: SlotState::Waiting(pending(&p)),
            });
        }
        let first = rx.recv().await.unwrap();
        let second = rx.recv().await.unwrap();
        second.done.send(Ok(())).unwrap();
        std::future::poll_fn(|cx| w.poll_resolve(cx)).await;
        assert!(
            w.pop_done().is_none(),
            "the second may not overtake the first"
        );
        first.done.send(Err(IngestError::StoreFull)).unwrap();
        std::future::poll_fn(|cx| w.poll_resolve(cx)).await;
        let (p1, _, v1) = w.pop_done().unwrap();
        assert_eq!(p1.pkid, 1);
        assert!(matches!(v1, Verdict::Deferred("store_full")), "{v1:?}");
        let (p2, _, v2) = w.pop_done().unwrap();
        assert_eq!(p2.pkid, 2);
        assert!(matches!(v2, Verdict::Durable(_)), "{v2:?}");
        assert!(w.is_empty() && !w.has_waiting());
    }

    #[test]
    fn store_refusals_defer_and_everything_else_is_dropped_with_its_reason() {
        let v: Verdict = Refused::Store(IngestError::Busy).into();
        assert!(matches!(v, Verdict::Deferred("busy")));
        let v: Verdict = Refused::Store(IngestError::Unavailable("disk".into())).into();
        assert!(matches!(v, Verdict::Deferred("store_unavailable")));
        let v: Verdict = Refused::UnsupportedFormat.into();
        assert!(matches!(
            v,
            Verdict::Dropped {
                reason: "unsupported_format",
                ..
            }
        ));
        let v: Verdict = Refused::Denied(wardgate_core::Denied::Forbidden("acl")).into();
        assert!(matches!(
            v,
            Verdict::Dropped {
                reason: "forbidden",
                ..
            }
        ));
    }
}
