//! The MQTT uplink: drains one outbox cursor to one broker.
//!
//! # Delivery rule
//! A reading is acknowledged to the outbox only when the broker's PUBACK for ITS packet id
//! arrives (QoS 1), or when rumqttc reports it written (QoS 0). The mapping from reading to
//! packet id is kept by [`Tracker`]. rumqttc's queue is never storage: on every CONNACK the uplink
//! clears what rumqttc kept from the previous connection, forgets its own in-flight map,
//! rewinds the cursor and publishes again from the oldest unacknowledged reading, in order.
//!
//! # One task
//! The client, the event loop and the cursor are driven from one task, so the uplink knows the
//! connection state exactly when it queues: it queues only between a CONNACK and the next
//! connection error, and rumqttc moves whatever was queued on a dying connection into its
//! `pending` list, which is cleared at the next CONNACK. The event loop's `poll` future is never
//! cancelled (a cancelled write can lose a packet rumqttc already counted as sent): it owns the
//! event loop and hands it back when it completes. `OutboxCursor::next` is the future that gets
//! cancelled when an event arrives first, so the cursor must be cancel-safe (hand out nothing
//! unless `next` resolves), as the store's cursor and the file uplink already assume.
//!
//! # Backpressure
//! At most `max_inflight` publishes (readings plus the status message) are queued-or-unacked at
//! once; the uplink asks the cursor for no more than the free room. rumqttc's own in-flight
//! limit is set to the same number and its request channel is sized above it, so a `try_publish`
//! never finds it full and the task never blocks on rumqttc.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::time::Instant;
use wardgate_core::{
    Delivery, HealthReporter, MessageClass, NackReason, OutboxCursor, OutboxError, Shutdown,
};

use crate::config::MqttUplinkConfig;
use crate::error::MqttError;
use crate::inflight::{Entry, Status, Tracker};
use crate::link::{self, Client, Link, LinkError, LinkEvent, LinkFailure, LinkOptions, Qos};
use crate::metrics::{
    ConnectFailed, Connected, Disconnected, MqttMetrics, ProtocolViolation, PublishRefused,
    ReadingDropped, UplinkMetrics,
};
use crate::topic::TopicTemplate;
use crate::url::BrokerUrl;
use wardgate_core::Backoff;

/// A connection that stayed up this long resets the reconnect backoff; a broker that accepts
/// and then drops us at once keeps backing off instead of being hammered.
const STABLE_CONNECTION: Duration = Duration::from_secs(10);

/// How often a connect failure that keeps happening (same kind and label) is logged again at
/// WARN/ERROR; the attempts in between log at DEBUG.
const FAILURE_LOG_REPEAT: Duration = Duration::from_secs(10 * 60);

/// MQTT's limit on a topic name's length in bytes.
const MAX_TOPIC_LEN: usize = 65_535;

/// A configured MQTT uplink, not yet running.
pub struct MqttUplink {
    name: String,
    url: BrokerUrl,
    gateway: String,
    topic: TopicTemplate,
    status_topic: String,
    qos: Qos,
    max_inflight: u16,
    max_packet_size: u32,
    reconnect_min: Duration,
    reconnect_max: Duration,
    refused_retry_min: Duration,
    refused_retry_max: Duration,
    shutdown_timeout: Duration,
    ack_timeout: Duration,
    link: LinkOptions,
    metrics: UplinkMetrics,
    health: HealthReporter,
}

impl<C: OutboxCursor> wardgate_core::Uplink<C> for MqttUplink {
    fn name(&self) -> &str {
        &self.name
    }

    fn start(self: Box<Self>, cursor: C, shutdown: Shutdown) -> wardgate_core::UplinkTask {
        Box::pin(async move {
            let name = self.name.clone();
            if let Err(e) = MqttUplink::run(*self, cursor, shutdown).await {
                tracing::error!(uplink = %name, error = %e, "uplink stopped with an error");
            }
        })
    }
}

impl std::fmt::Debug for MqttUplink {
    // Hand-written so the credentials in the link options never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttUplink")
            .field("name", &self.name)
            .field("url", &self.url.to_string())
            .field("client_id", &self.link.client_id)
            .finish_non_exhaustive()
    }
}

impl MqttUplink {
    /// Builds the client options and TLS config (reads CA / cert / key files; a bad file is a
    /// typed error naming it). Does not connect.
    pub fn new(
        cfg: MqttUplinkConfig,
        gateway_id: &str,
        metrics: MqttMetrics,
        health: HealthReporter,
    ) -> Result<MqttUplink, MqttError> {
        // One set of rules: the same validation `check-config` runs (they had drifted apart
        // when this constructor kept its own copy).
        crate::error::check(|p| cfg.validate(&format!("uplinks.{}", cfg.name), p))?;
        let url = BrokerUrl::parse(&cfg.url).map_err(|e| MqttError::Url {
            url: crate::url::redact(&cfg.url),
            reason: e.to_string(),
        })?;
        let topic = TopicTemplate::readings(&cfg.topic).map_err(|e| MqttError::Template {
            field: "topic",
            template: cfg.topic.clone(),
            reason: e.to_string(),
        })?;
        let status = TopicTemplate::status(&cfg.status_topic).map_err(|e| MqttError::Template {
            field: "status_topic",
            template: cfg.status_topic.clone(),
            reason: e.to_string(),
        })?;
        let qos = if cfg.qos == 0 {
            Qos::AtMostOnce
        } else {
            Qos::AtLeastOnce
        };
        let tls = if url.tls {
            Some(crate::tls::client_config(&cfg.tls, &url.host)?)
        } else {
            None
        };
        let status_topic = status.render(gateway_id, "", MessageClass::default());
        let link = LinkOptions {
            version: match cfg.version {
                crate::config::MqttVersion::V311 => link::Version::V311,
                crate::config::MqttVersion::V5 => link::Version::V5,
            },
            client_id: cfg
                .client_id
                .clone()
                .unwrap_or_else(|| format!("wardgate-{gateway_id}-{}", cfg.name)),
            host: url.connect_host(),
            port: url.port,
            websocket_path: url.websocket_path.clone(),
            keep_alive: cfg.keep_alive,
            // MQTT 3.1.1 allows a password only with a user name: send an empty one.
            credentials: (cfg.username.is_some() || cfg.password.is_some()).then(|| {
                (
                    cfg.username.clone().unwrap_or_default(),
                    cfg.password.clone().unwrap_or_default(),
                )
            }),
            will_topic: status_topic.clone(),
            inflight: cfg.max_inflight,
            max_packet_size: cfg.max_packet_size,
            // Room for a full window plus the offline status and the DISCONNECT.
            request_capacity: usize::from(cfg.max_inflight) + 4,
            tls,
        };
        Ok(MqttUplink {
            metrics: metrics.for_uplink(&cfg.name),
            name: cfg.name,
            url,
            gateway: gateway_id.to_owned(),
            topic,
            status_topic,
            qos,
            max_inflight: cfg.max_inflight,
            max_packet_size: cfg.max_packet_size,
            reconnect_min: cfg.reconnect_min,
            reconnect_max: cfg.reconnect_max,
            refused_retry_min: cfg.refused_retry_min,
            refused_retry_max: cfg.refused_retry_max,
            shutdown_timeout: cfg.shutdown_timeout,
            ack_timeout: cfg.ack_timeout,
            link,
            health,
        })
    }

    /// The uplink's configured name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The status topic (retained `online` / `offline`).
    pub fn status_topic(&self) -> &str {
        &self.status_topic
    }

    /// Connects, keeps connected (reconnect with full-jitter exponential backoff between
    /// reconnect_min and reconnect_max), drains `cursor` to the broker. Returns on shutdown after
    /// publishing retained `offline` on the status topic and disconnecting cleanly (bounded by
    /// `shutdown_timeout`; past it the socket is dropped and the broker publishes the will).
    ///
    /// Refused credentials (CONNACK "bad user name or password" / "not authorized") are retried
    /// too, but between `refused_retry_min` and `refused_retry_max`, logged once at ERROR, and
    /// reported in health as "broker refused credentials" until a connection is accepted.
    ///
    /// Connection failures are retried, never returned. It returns an error only when the
    /// outbox fails; when the outbox closes it stops like on shutdown.
    pub async fn run<C: OutboxCursor>(
        self,
        mut cursor: C,
        shutdown: Shutdown,
    ) -> Result<(), MqttError> {
        let (client, link) = link::build(&self.link);
        let mut d = Driver::new(&self, client);
        self.health.not_ready(format!("connecting to {}", self.url));
        let mut poll = arm(link, Duration::ZERO);
        let mut deadline: Option<Instant> = None;
        // Checks for readings written longer than `ack_timeout` ago without a PUBACK.
        let mut ack_check = tokio::time::interval(
            (self.ack_timeout / 4).clamp(Duration::from_millis(25), Duration::from_secs(1)),
        );
        ack_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let room = d.room();
            let pull = d.can_pull() && room > 0;
            let flow = tokio::select! {
                biased;
                () = shutdown.cancelled(), if d.phase == Phase::Running => {
                    let flow = d.begin_shutdown();
                    deadline = Some(Instant::now() + self.shutdown_timeout);
                    flow
                }
                () = sleep_until(deadline), if deadline.is_some() => {
                    tracing::warn!(uplink = %self.name, timeout = ?self.shutdown_timeout, "MQTT uplink shutdown timed out; dropping the connection (the broker publishes the will)");
                    Flow::Return
                }
                (mut link, res) = &mut poll => {
                    let mut next = match res {
                        Ok(ev) => d.on_event(&mut link, ev, &mut cursor),
                        Err(e) => d.on_error(e),
                    };
                    // rumqttc reads every packet that has arrived but returns one event per
                    // poll; take the rest here, in order, as its next polls would (they pop its
                    // event queue first), without a new poll future and select! round each.
                    while next == Next::Poll(Duration::ZERO) && d.connected {
                        let Some(ev) = link.next_buffered() else { break };
                        next = d.on_event(&mut link, ev, &mut cursor);
                    }
                    match next {
                        Next::Poll(delay) => {
                            poll = arm(link, delay);
                            Flow::Continue
                        }
                        Next::Return => Flow::Return,
                    }
                }
                batch = cursor.next(room), if pull => d.on_batch(batch, &mut cursor),
                _ = ack_check.tick(), if d.connected && d.phase == Phase::Running => {
                    d.check_acks(&mut cursor);
                    Flow::Continue
                }
            };
            d.flush_acks(&mut cursor);
            if flow == Flow::Return {
                return d.finish();
            }
            if d.phase != Phase::Running && deadline.is_none() {
                // The outbox ended the run rather than the shutdown token.
                deadline = Some(Instant::now() + self.shutdown_timeout);
            }
        }
    }
}

type PollFuture = Pin<Box<dyn Future<Output = (Link, Result<LinkEvent, LinkError>)> + Send>>;

/// Moves the event loop into a future that waits `delay` (reconnect backoff), polls once and
/// hands the loop back.
fn arm(mut link: Link, delay: Duration) -> PollFuture {
    Box::pin(async move {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let res = link.poll().await;
        (link, res)
    })
}

/// Sleeps until `deadline`, or for ever without one (a `select!` arm that is off).
pub(crate) async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    Return,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Poll the event loop again after this delay.
    Poll(Duration),
    Return,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    /// Shutting down: `offline` queued, waiting for its PUBACK.
    Draining,
    /// DISCONNECT queued, waiting for it to be written.
    Disconnecting,
}

/// The uplink's state machine; `run` feeds it events.
struct Driver<'a> {
    up: &'a MqttUplink,
    client: Client,
    tracker: Tracker,
    connected: bool,
    connected_at: Instant,
    phase: Phase,
    backoff: Backoff,
    /// Used instead of `backoff` while the broker refuses our credentials.
    refused_backoff: Backoff,
    failed_attempts: u32,
    /// The last connect failure logged at WARN/ERROR: its kind, its label and when.
    last_failure: Option<(LinkFailure, &'static str, Instant)>,
    /// Packet limit of the current connection (ours, or an MQTT 5 broker's if lower).
    packet_limit: usize,
    /// Set when a publish could not be queued: stop queueing and drop the connection at the
    /// next event, so the outbox hands everything out again in order.
    force_reconnect: Option<String>,
    /// Readings were reported timed out on this connection and not all acknowledged since.
    stalled: bool,
    outbox_error: Option<OutboxError>,
    /// Sequence numbers acknowledged by the broker and not yet handed to the outbox: collected
    /// over one batch of events so the store is woken once per batch, not once per PUBACK.
    acks: Vec<u64>,
}

impl<'a> Driver<'a> {
    fn new(up: &'a MqttUplink, client: Client) -> Self {
        Driver {
            up,
            client,
            tracker: Tracker::default(),
            connected: false,
            connected_at: Instant::now(),
            phase: Phase::Running,
            backoff: Backoff::new(up.reconnect_min, up.reconnect_max),
            refused_backoff: Backoff::new(up.refused_retry_min, up.refused_retry_max),
            failed_attempts: 0,
            last_failure: None,
            packet_limit: up.max_packet_size as usize,
            force_reconnect: None,
            stalled: false,
            outbox_error: None,
            acks: Vec::new(),
        }
    }

    /// Hands the collected acknowledgements to the outbox.
    fn flush_acks<C: OutboxCursor>(&mut self, cursor: &mut C) {
        if !self.acks.is_empty() {
            cursor.ack(&self.acks);
            self.acks.clear();
        }
    }

    fn room(&self) -> usize {
        usize::from(self.up.max_inflight).saturating_sub(self.tracker.outstanding())
    }

    fn can_pull(&self) -> bool {
        self.connected && self.phase == Phase::Running && self.force_reconnect.is_none()
    }

    fn finish(self) -> Result<(), MqttError> {
        if self.connected {
            // Giving up on a clean stop (timeout): the socket is dropped now, the broker
            // publishes the will.
            Disconnected {
                reason: LinkFailure::ShutdownTimeout,
                error: "",
                unacked: self.tracker.readings(),
            }
            .emit(&self.up.metrics);
        }
        self.up.health.not_ready("stopped");
        match self.outbox_error {
            Some(e) => Err(MqttError::Outbox(e)),
            None => Ok(()),
        }
    }

    fn on_event<C: OutboxCursor>(
        &mut self,
        link: &mut Link,
        ev: LinkEvent,
        cursor: &mut C,
    ) -> Next {
        match ev {
            LinkEvent::ConnAck { max_packet_size } => {
                return self.on_connack(link, max_packet_size, cursor);
            }
            LinkEvent::Published(pkid) => {
                if self.connected {
                    match self.tracker.on_written(pkid, Instant::now()) {
                        Ok(w) => {
                            if let Entry::Reading { seq, class } = w.entry {
                                self.up.metrics.published(class);
                                if w.done {
                                    self.acks.push(seq);
                                    self.up.metrics.acked(class, None);
                                }
                            }
                            self.update_inflight();
                        }
                        Err(why) => {
                            tracing::error!(uplink = %self.up.name, error = %why, "MQTT publish bookkeeping out of step; reconnecting to start clean");
                            self.force_reconnect = Some(why);
                        }
                    }
                }
            }
            LinkEvent::PubAck { pkid, refused } => self.on_puback(pkid, refused),
            LinkEvent::DisconnectSent => {
                if self.phase == Phase::Disconnecting {
                    self.connected = false;
                    Disconnected {
                        reason: LinkFailure::Shutdown,
                        error: "",
                        unacked: self.tracker.readings(),
                    }
                    .emit(&self.up.metrics);
                    return Next::Return;
                }
            }
            LinkEvent::EmptyTopicPublish => {
                if self.connected && self.phase == Phase::Running {
                    ProtocolViolation {
                        reason: "empty_topic",
                    }
                    .emit(&self.up.metrics);
                    link.drop_connection();
                    return self.on_error(LinkError {
                        kind: LinkFailure::Protocol,
                        label: "empty_topic",
                        message: "the broker sent a PUBLISH with an empty topic name, which MQTT forbids (3.1.1 and 5, section 4.7.3); closing the connection".into(),
                    });
                }
            }
            LinkEvent::Other => {}
        }
        match self.force_reconnect.take() {
            Some(why) if self.connected && self.phase == Phase::Running => {
                link.drop_connection();
                self.on_error(LinkError::new(LinkFailure::Internal, why))
            }
            _ => Next::Poll(Duration::ZERO),
        }
    }

    fn on_connack<C: OutboxCursor>(
        &mut self,
        link: &mut Link,
        broker_max_packet: Option<u32>,
        cursor: &mut C,
    ) -> Next {
        // PUBACKs read on the previous connection but still buffered in rumqttc are genuine:
        // resolve them against the previous connection's map before forgetting it.
        for pkid in link.start_clean_session() {
            self.on_puback(pkid, None);
        }
        self.flush_acks(cursor);
        self.tracker.reset();
        self.stalled = false;
        cursor.rewind();
        self.force_reconnect = None;
        self.connected = true;
        self.connected_at = Instant::now();
        self.last_failure = None;
        self.refused_backoff.reset();
        let limit =
            broker_max_packet.map_or(self.up.max_packet_size, |b| b.min(self.up.max_packet_size));
        self.packet_limit = limit as usize;
        Connected {
            url: &self.up.url.to_string(),
            failed_attempts: self.failed_attempts,
        }
        .emit(&self.up.metrics);
        self.failed_attempts = 0;
        self.up
            .health
            .ready(format!("connected to {}", self.up.url));
        self.update_inflight();
        // Birth: retained, so a late subscriber sees the state too.
        match self.client.try_publish(
            self.up.status_topic.clone(),
            Qos::AtLeastOnce,
            true,
            bytes::Bytes::from_static(link::ONLINE),
            false,
        ) {
            Ok(()) => self
                .tracker
                .queue(Entry::Status(Status::Online), Qos::AtLeastOnce),
            Err(e) => self.force_reconnect = Some(format!("cannot queue the birth message: {e}")),
        }
        Next::Poll(Duration::ZERO)
    }

    fn on_puback(&mut self, pkid: u16, refused: Option<&'static str>) {
        match self.tracker.on_puback(pkid) {
            Some((Entry::Reading { seq, class }, written_at)) => match refused {
                None => {
                    self.acks.push(seq);
                    self.up.metrics.acked(class, Some(written_at.elapsed()));
                    if self.stalled && !self.tracker.stalled() && self.connected {
                        self.stalled = false;
                        tracing::info!(uplink = %self.up.name, "MQTT broker acknowledges again");
                        self.up
                            .health
                            .ready(format!("connected to {}", self.up.url));
                    }
                }
                Some(reason) => PublishRefused { seq, reason }.emit(&self.up.metrics),
            },
            Some((Entry::Status(Status::Offline), _)) if self.phase == Phase::Draining => {
                self.phase = Phase::Disconnecting;
                if let Err(e) = self.client.try_disconnect() {
                    // Cannot happen with the channel sized above the window; if it did, the
                    // shutdown timeout ends the run and the broker publishes the will.
                    tracing::warn!(uplink = %self.up.name, error = %e, "cannot queue DISCONNECT");
                }
            }
            Some((Entry::Status(s), _)) => {
                tracing::debug!(uplink = %self.up.name, status = ?s, "status message acknowledged");
            }
            None => {
                tracing::debug!(uplink = %self.up.name, pkid, "PUBACK for no publish of this connection");
            }
        }
        if self.connected {
            self.update_inflight();
        }
    }

    /// Reports readings written more than `ack_timeout` ago without a PUBACK as timed out
    /// (a nack: the selector counts them) and the uplink not ready, once per stall. They stay
    /// in flight on the connection: a late PUBACK still acknowledges them, a reconnect sends
    /// them again.
    fn check_acks<C: OutboxCursor>(&mut self, cursor: &mut C) {
        let Some(cutoff) = Instant::now().checked_sub(self.up.ack_timeout) else {
            return;
        };
        let late = self.tracker.overdue(cutoff);
        if late.is_empty() {
            return;
        }
        cursor.nack(&late, NackReason::TimedOut);
        if !self.stalled {
            self.stalled = true;
            tracing::warn!(
                uplink = %self.up.name,
                readings = late.len(),
                timeout = ?self.up.ack_timeout,
                "MQTT broker has not acknowledged readings in time; reporting them timed out"
            );
            self.up.health.not_ready(format!(
                "no PUBACK within {:?} from {}",
                self.up.ack_timeout, self.up.url
            ));
        }
    }

    /// The event loop failed: a connect attempt, or the established connection.
    fn on_error(&mut self, mut e: LinkError) -> Next {
        if self.phase != Phase::Running {
            // Shutting down: nothing more can be sent; the broker publishes the will.
            if self.connected {
                self.connected = false;
                Disconnected {
                    reason: e.kind,
                    error: &e.message,
                    unacked: self.tracker.readings(),
                }
                .emit(&self.up.metrics);
            }
            return Next::Return;
        }
        let delay;
        if self.connected {
            self.connected = false;
            if self.connected_at.elapsed() >= STABLE_CONNECTION {
                self.backoff.reset();
            }
            delay = self.backoff.next_delay();
            Disconnected {
                reason: e.kind,
                error: &e.message,
                unacked: self.tracker.readings(),
            }
            .emit(&self.up.metrics);
            self.up
                .health
                .not_ready(format!("disconnected from {}: {}", self.up.url, e.message));
            tracing::debug!(uplink = %self.up.name, retry_in = ?delay, "MQTT uplink reconnecting");
        } else {
            self.failed_attempts = self.failed_attempts.saturating_add(1);
            let refused = e.kind == LinkFailure::CredentialsRefused;
            // Refused credentials get their own, much longer backoff: only an operator can fix
            // them, and brokers may lock out a client that keeps trying. It grows only with
            // refusals and starts over at the next CONNACK.
            delay = if refused {
                self.refused_backoff.next_delay()
            } else {
                self.backoff.next_delay()
            };
            if e.label == "io_closed" && !self.up.url.tls {
                // What a TLS listener does with a plain CONNECT.
                e.message.push_str(if self.up.url.websocket_path.is_some() {
                    "; if this port expects TLS, use wss://"
                } else {
                    "; if this port expects TLS, use mqtts://"
                });
            }
            // Throttled by kind and label, never by message: a message can change on every
            // attempt. A failure that lasts is logged again once per FAILURE_LOG_REPEAT.
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
                setting: &self.up.name,
            }
            .emit(&self.up.metrics);
            // Health is state, not a log line: always the latest words.
            self.up.health.not_ready(if refused {
                format!(
                    "broker refused credentials ({}) at {}",
                    e.message, self.up.url
                )
            } else {
                format!("cannot connect to {}: {}", self.up.url, e.message)
            });
            if state_changed {
                self.last_failure = Some((e.kind, e.label, now));
            }
        }
        Next::Poll(delay)
    }

    fn on_batch<C: OutboxCursor>(
        &mut self,
        batch: Result<Vec<Delivery>, OutboxError>,
        cursor: &mut C,
    ) -> Flow {
        let deliveries = match batch {
            Ok(d) => d,
            Err(OutboxError::Closed) => {
                tracing::info!(uplink = %self.up.name, "outbox closed; MQTT uplink stopping");
                return self.begin_shutdown();
            }
            Err(e) => {
                tracing::error!(uplink = %self.up.name, error = %e, "outbox read failed; MQTT uplink stopping");
                self.outbox_error = Some(e);
                return self.begin_shutdown();
            }
        };
        for d in deliveries {
            if self.tracker.stalled() && self.tracker.in_flight(d.seq) {
                // Handed out again after a timeout report moved the cursor back, but still in
                // flight on this connection: publishing it again would only duplicate it.
                continue;
            }
            let topic = self.up.topic.render(&self.up.gateway, &d.device, d.class);
            let size = link::publish_size_bound(self.client_version(), &topic, d.json.len());
            if topic.len() > MAX_TOPIC_LEN || size > self.packet_limit {
                ReadingDropped {
                    seq: d.seq,
                    id: &d.id,
                    class: d.class,
                    reason: "too_large",
                    detail: format!(
                        "PUBLISH of about {size} bytes (topic {} bytes) exceeds the limit of {} bytes",
                        topic.len(),
                        self.packet_limit
                    ),
                }
                .emit(&self.up.metrics);
                cursor.ack(&[d.seq]);
                continue;
            }
            match self
                .client
                .try_publish(topic, self.up.qos, false, d.json, true)
            {
                Ok(()) => self.tracker.queue(
                    Entry::Reading {
                        seq: d.seq,
                        class: d.class,
                    },
                    self.up.qos,
                ),
                Err(e) => {
                    // The rest of this batch is not queued either, so order holds; the
                    // reconnect rewinds the cursor to hand them all out again. Only this one
                    // was tried and failed: the nack reports that (outcome, counter) and is
                    // consistent with the rewind (no pull happens before the reconnect).
                    tracing::error!(uplink = %self.up.name, error = %e, "MQTT client refused a publish; reconnecting to start clean");
                    cursor.nack(&[d.seq], NackReason::Failed);
                    self.force_reconnect = Some(format!("publish not queued: {e}"));
                    break;
                }
            }
        }
        self.update_inflight();
        Flow::Continue
    }

    /// Starts the graceful stop: retained `offline`, then DISCONNECT once it is acknowledged.
    fn begin_shutdown(&mut self) -> Flow {
        if self.phase != Phase::Running {
            return Flow::Continue;
        }
        self.phase = Phase::Draining;
        if !self.connected {
            return Flow::Return;
        }
        match self.client.try_publish(
            self.up.status_topic.clone(),
            Qos::AtLeastOnce,
            true,
            bytes::Bytes::from_static(link::OFFLINE),
            false,
        ) {
            Ok(()) => {
                self.tracker
                    .queue(Entry::Status(Status::Offline), Qos::AtLeastOnce);
                Flow::Continue
            }
            Err(e) => {
                tracing::warn!(uplink = %self.up.name, error = %e, "cannot queue the offline status; dropping the connection (the broker publishes the will)");
                Flow::Return
            }
        }
    }

    fn client_version(&self) -> link::Version {
        match self.client {
            Client::V4(_) => link::Version::V311,
            Client::V5(_) => link::Version::V5,
        }
    }

    fn update_inflight(&self) {
        if self.connected {
            self.up.metrics.set_inflight(self.tracker.readings());
        }
    }
}
