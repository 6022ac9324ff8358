//! Metrics and typed events of the MQTT uplinks.
//!
//! Labels are bounded: `uplink` is a configured name (a closed set), `class` a
//! [`MessageClass`], `reason` a `&'static str` from a closed set ([`LinkFailure`], the MQTT 5
//! PUBACK reason codes, `too_large`). Never a device id.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use wardgate_core::MessageClass;

use crate::link::LinkFailure;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UplinkLabels {
    uplink: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    uplink: String,
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    uplink: String,
    class: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassReasonLabels {
    uplink: String,
    class: &'static str,
    reason: &'static str,
}

type HistogramFamily = Family<UplinkLabels, Histogram, fn() -> Histogram>;

fn ack_latency_histogram() -> Histogram {
    // 1 ms .. ~33 s: a LAN broker acks in milliseconds, a congested cloud link in seconds.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// Metrics shared by every MQTT uplink; register once, clone into each uplink.
#[derive(Debug, Clone)]
pub struct MqttMetrics {
    connects: Family<UplinkLabels, Counter>,
    disconnects: Family<ReasonLabels, Counter>,
    connect_failures: Family<ReasonLabels, Counter>,
    published: Family<ClassLabels, Counter>,
    acked: Family<ClassLabels, Counter>,
    dropped: Family<ClassReasonLabels, Counter>,
    refused: Family<ReasonLabels, Counter>,
    violations: Family<ReasonLabels, Counter>,
    ack_latency: HistogramFamily,
    inflight: Family<UplinkLabels, Gauge>,
    connected: Family<UplinkLabels, Gauge>,
}

impl MqttMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = MqttMetrics {
            connects: Family::default(),
            disconnects: Family::default(),
            connect_failures: Family::default(),
            published: Family::default(),
            acked: Family::default(),
            dropped: Family::default(),
            refused: Family::default(),
            violations: Family::default(),
            ack_latency: Family::new_with_constructor(ack_latency_histogram),
            inflight: Family::default(),
            connected: Family::default(),
        };
        registry.register(
            "wardgate_mqtt_connects",
            "MQTT uplink connections established (CONNACK accepted)",
            m.connects.clone(),
        );
        registry.register(
            "wardgate_mqtt_disconnects",
            "Established MQTT uplink connections that ended, by reason",
            m.disconnects.clone(),
        );
        registry.register(
            "wardgate_mqtt_connect_failures",
            "MQTT uplink connection attempts that failed, by reason",
            m.connect_failures.clone(),
        );
        registry.register(
            "wardgate_mqtt_readings_published",
            "Readings written to the broker (each retransmission counts again)",
            m.published.clone(),
        );
        registry.register(
            "wardgate_mqtt_readings_acked",
            "Readings acknowledged by the broker (PUBACK, or written for QoS 0) and released from the outbox",
            m.acked.clone(),
        );
        registry.register(
            "wardgate_mqtt_readings_dropped",
            "Readings this uplink can never deliver (e.g. larger than the packet limit), released from the outbox",
            m.dropped.clone(),
        );
        registry.register(
            "wardgate_mqtt_publish_refused",
            "MQTT 5 PUBACKs with an error reason code; the reading stays owed and is retried after the next reconnect",
            m.refused.clone(),
        );
        registry.register(
            "wardgate_mqtt_protocol_violations",
            "Packets from the broker that break the MQTT protocol, by reason; each closes the connection",
            m.violations.clone(),
        );
        registry.register(
            "wardgate_mqtt_publish_ack_seconds",
            "Time from writing a QoS 1 reading to its PUBACK",
            m.ack_latency.clone(),
        );
        registry.register(
            "wardgate_mqtt_inflight_readings",
            "Readings handed to the MQTT client and not yet acknowledged",
            m.inflight.clone(),
        );
        registry.register(
            "wardgate_mqtt_connected",
            "1 while the MQTT uplink has an accepted connection",
            m.connected.clone(),
        );
        m
    }

    /// Handles bound to one uplink's labels, so the hot path does no label lookups.
    pub(crate) fn for_uplink(&self, uplink: &str) -> UplinkMetrics {
        let u = UplinkLabels {
            uplink: uplink.to_owned(),
        };
        let per_class = |family: &Family<ClassLabels, Counter>| {
            MessageClass::ALL.map(|c| {
                family
                    .get_or_create(&ClassLabels {
                        uplink: uplink.to_owned(),
                        class: c.as_str(),
                    })
                    .clone()
            })
        };
        UplinkMetrics {
            uplink: uplink.to_owned(),
            connects: self.connects.get_or_create(&u).clone(),
            published: per_class(&self.published),
            acked: per_class(&self.acked),
            ack_latency: self.ack_latency.get_or_create(&u).clone(),
            inflight: self.inflight.get_or_create(&u).clone(),
            connected: self.connected.get_or_create(&u).clone(),
            shared: self.clone(),
        }
    }
}

/// One uplink's metric handles.
#[derive(Debug, Clone)]
pub(crate) struct UplinkMetrics {
    uplink: String,
    connects: Counter,
    published: [Counter; MessageClass::COUNT],
    acked: [Counter; MessageClass::COUNT],
    ack_latency: Histogram,
    inflight: Gauge,
    connected: Gauge,
    shared: MqttMetrics,
}

impl UplinkMetrics {
    pub(crate) fn published(&self, class: MessageClass) {
        self.published[class.index()].inc();
    }

    pub(crate) fn acked(&self, class: MessageClass, latency: Option<Duration>) {
        self.acked[class.index()].inc();
        if let Some(l) = latency {
            self.ack_latency.observe(l.as_secs_f64());
        }
    }

    pub(crate) fn set_inflight(&self, readings: usize) {
        self.inflight
            .set(i64::try_from(readings).unwrap_or(i64::MAX));
    }

    fn reason(&self, reason: &'static str) -> ReasonLabels {
        ReasonLabels {
            uplink: self.uplink.clone(),
            reason,
        }
    }
}

/// The uplink got a CONNACK.
#[derive(Debug)]
pub(crate) struct Connected<'a> {
    pub(crate) url: &'a str,
    pub(crate) failed_attempts: u32,
}

impl Connected<'_> {
    pub(crate) fn emit(&self, m: &UplinkMetrics) {
        tracing::info!(uplink = %m.uplink, url = %self.url, failed_attempts = self.failed_attempts, "MQTT uplink connected");
        m.connects.inc();
        m.connected.set(1);
    }
}

/// An established connection ended.
#[derive(Debug)]
pub(crate) struct Disconnected<'a> {
    pub(crate) reason: LinkFailure,
    pub(crate) error: &'a str,
    pub(crate) unacked: usize,
}

impl Disconnected<'_> {
    pub(crate) fn emit(&self, m: &UplinkMetrics) {
        if matches!(
            self.reason,
            LinkFailure::Shutdown | LinkFailure::ShutdownTimeout
        ) {
            tracing::info!(uplink = %m.uplink, reason = self.reason.as_str(), unacked = self.unacked, "MQTT uplink disconnected for shutdown");
        } else {
            tracing::warn!(uplink = %m.uplink, reason = self.reason.as_str(), error = %self.error, unacked = self.unacked, "MQTT uplink disconnected; unacknowledged readings will be sent again after reconnecting");
        }
        m.shared
            .disconnects
            .get_or_create(&m.reason(self.reason.as_str()))
            .inc();
        m.connected.set(0);
        m.inflight.set(0);
    }
}

/// A connection attempt failed.
#[derive(Debug)]
pub(crate) struct ConnectFailed<'a> {
    pub(crate) reason: LinkFailure,
    pub(crate) error: &'a str,
    pub(crate) retry_in: Duration,
    /// First failure of a new kind: logged at WARN. Repeats of the same failure go to DEBUG so
    /// a retry storm cannot flood the log.
    pub(crate) state_changed: bool,
    /// The uplink's configured name, for pointing at its settings.
    pub(crate) setting: &'a str,
}

impl ConnectFailed<'_> {
    pub(crate) fn emit(&self, m: &UplinkMetrics) {
        if self.state_changed && self.reason == LinkFailure::CredentialsRefused {
            // An ERROR: only an operator can fix it, and the uplink now retries rarely.
            tracing::error!(
                uplink = %m.uplink,
                reason = self.reason.as_str(),
                "the broker refused our credentials ({}); check uplinks.{}.username/password; retrying in {:?}",
                self.error,
                self.setting,
                self.retry_in,
            );
        } else if self.state_changed {
            tracing::warn!(uplink = %m.uplink, reason = self.reason.as_str(), error = %self.error, retry_in = ?self.retry_in, "MQTT uplink cannot connect; retrying with backoff");
        } else {
            tracing::debug!(uplink = %m.uplink, reason = self.reason.as_str(), error = %self.error, retry_in = ?self.retry_in, "MQTT uplink connect retry failed");
        }
        m.shared
            .connect_failures
            .get_or_create(&m.reason(self.reason.as_str()))
            .inc();
    }
}

/// The broker broke the protocol; the connection is closed because of it. Only counted here:
/// the [`Disconnected`] that follows logs it, once, with `error` saying what happened.
#[derive(Debug)]
pub(crate) struct ProtocolViolation {
    /// A closed set: `empty_topic`.
    pub(crate) reason: &'static str,
}

impl ProtocolViolation {
    pub(crate) fn emit(&self, m: &UplinkMetrics) {
        m.shared
            .violations
            .get_or_create(&m.reason(self.reason))
            .inc();
    }
}

/// A reading that this uplink can never deliver was released from the outbox.
#[derive(Debug)]
pub(crate) struct ReadingDropped<'a> {
    pub(crate) seq: u64,
    pub(crate) id: &'a ulid::Ulid,
    pub(crate) class: MessageClass,
    pub(crate) reason: &'static str,
    pub(crate) detail: String,
}

impl ReadingDropped<'_> {
    pub(crate) fn emit(&self, m: &UplinkMetrics) {
        tracing::error!(uplink = %m.uplink, seq = self.seq, id = %self.id, class = %self.class, reason = self.reason, detail = %self.detail, "reading dropped for this MQTT uplink");
        m.shared
            .dropped
            .get_or_create(&ClassReasonLabels {
                uplink: m.uplink.clone(),
                class: self.class.as_str(),
                reason: self.reason,
            })
            .inc();
    }
}

/// An MQTT 5 broker answered a reading's PUBLISH with an error reason code.
#[derive(Debug)]
pub(crate) struct PublishRefused {
    pub(crate) seq: u64,
    pub(crate) reason: &'static str,
}

impl PublishRefused {
    pub(crate) fn emit(&self, m: &UplinkMetrics) {
        tracing::warn!(uplink = %m.uplink, seq = self.seq, reason = self.reason, "broker refused a reading; it stays in the outbox and is sent again after the next reconnect");
        m.shared.refused.get_or_create(&m.reason(self.reason)).inc();
    }
}
