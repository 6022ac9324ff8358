//! Metrics and typed events of the MQTT southbound subscribers.
//!
//! Labels are bounded: `ingest` is a configured name, `class` a [`MessageClass`], `reason` a
//! `&'static str` from a closed set (the pipeline's refusal labels, the subscriber's own:
//! `retained`, `unmatched_topic`, `bad_device_id`, and the [`LinkFailure`] kinds). Never a
//! device id or a topic.

use std::collections::HashMap;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::time::Instant;
use wardgate_core::MessageClass;

use crate::link::LinkFailure;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IngestLabels {
    ingest: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    ingest: String,
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    ingest: String,
    class: &'static str,
}

type HistogramFamily = Family<IngestLabels, Histogram, fn() -> Histogram>;

fn durable_histogram() -> Histogram {
    // 0.5 ms .. ~16 s: a group commit takes milliseconds; seconds mean the disk is struggling.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Metrics shared by every MQTT southbound subscriber; register once, clone into each.
#[derive(Debug, Clone)]
pub struct MqttIngestMetrics {
    received: Family<IngestLabels, Counter>,
    ingested: Family<ClassLabels, Counter>,
    refused: Family<ReasonLabels, Counter>,
    deferred: Family<ReasonLabels, Counter>,
    durable: HistogramFamily,
    awaiting: Family<IngestLabels, Gauge>,
    connected: Family<IngestLabels, Gauge>,
    connects: Family<IngestLabels, Counter>,
    connect_failures: Family<ReasonLabels, Counter>,
    disconnects: Family<ReasonLabels, Counter>,
    subscriptions_refused: Family<IngestLabels, Counter>,
}

impl MqttIngestMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = MqttIngestMetrics {
            received: Family::default(),
            ingested: Family::default(),
            refused: Family::default(),
            deferred: Family::default(),
            durable: Family::new_with_constructor(durable_histogram),
            awaiting: Family::default(),
            connected: Family::default(),
            connects: Family::default(),
            connect_failures: Family::default(),
            disconnects: Family::default(),
            subscriptions_refused: Family::default(),
        };
        registry.register(
            "wardgate_mqtt_ingest_messages_received",
            "MQTT messages received from the sensors' broker (redeliveries count again)",
            m.received.clone(),
        );
        registry.register(
            "wardgate_mqtt_ingest_readings_ingested",
            "MQTT messages stored durably as readings and then acknowledged to the broker",
            m.ingested.clone(),
        );
        registry.register(
            "wardgate_mqtt_ingest_messages_refused",
            "MQTT messages acknowledged to the broker but not stored, by reason (bad payload, unknown or forbidden device, retained, ...)",
            m.refused.clone(),
        );
        registry.register(
            "wardgate_mqtt_ingest_messages_deferred",
            "MQTT messages left unacknowledged so that the broker delivers them again after a reconnect, by reason (store full or busy, shutting down, connection lost)",
            m.deferred.clone(),
        );
        registry.register(
            "wardgate_mqtt_ingest_durable_seconds",
            "Time from receiving an MQTT message to its reading being durable",
            m.durable.clone(),
        );
        registry.register(
            "wardgate_mqtt_ingest_awaiting_durability",
            "MQTT messages received and not yet acknowledged (awaiting durability or an earlier message)",
            m.awaiting.clone(),
        );
        registry.register(
            "wardgate_mqtt_ingest_connected",
            "1 while the MQTT subscriber has an accepted connection to the sensors' broker",
            m.connected.clone(),
        );
        registry.register(
            "wardgate_mqtt_ingest_connects",
            "MQTT subscriber connections established (CONNACK accepted)",
            m.connects.clone(),
        );
        registry.register(
            "wardgate_mqtt_ingest_connect_failures",
            "MQTT subscriber connection attempts that failed, by reason",
            m.connect_failures.clone(),
        );
        registry.register(
            "wardgate_mqtt_ingest_disconnects",
            "Established MQTT subscriber connections that ended, by reason",
            m.disconnects.clone(),
        );
        registry.register(
            "wardgate_mqtt_ingest_subscriptions_refused",
            "Topic filters the broker refused in a SUBACK (nothing arrives on them)",
            m.subscriptions_refused.clone(),
        );
        m
    }

    /// Handles bound to one subscriber's labels.
    pub(crate) fn for_ingest(&self, ingest: &str) -> IngestMetrics {
        let l = IngestLabels {
            ingest: ingest.to_owned(),
        };
        IngestMetrics {
            ingest: ingest.to_owned(),
            received: self.received.get_or_create(&l).clone(),
            durable: self.durable.get_or_create(&l).clone(),
            awaiting: self.awaiting.get_or_create(&l).clone(),
            connected: self.connected.get_or_create(&l).clone(),
            connects: self.connects.get_or_create(&l).clone(),
            subscriptions_refused: self.subscriptions_refused.get_or_create(&l).clone(),
            shared: self.clone(),
        }
    }
}

/// One subscriber's metric handles.
#[derive(Debug, Clone)]
pub(crate) struct IngestMetrics {
    ingest: String,
    received: Counter,
    durable: Histogram,
    awaiting: Gauge,
    connected: Gauge,
    connects: Counter,
    subscriptions_refused: Counter,
    shared: MqttIngestMetrics,
}

impl IngestMetrics {
    pub(crate) fn received(&self) {
        self.received.inc();
    }

    pub(crate) fn set_awaiting(&self, n: usize) {
        self.awaiting.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    fn reason(&self, reason: &'static str) -> ReasonLabels {
        ReasonLabels {
            ingest: self.ingest.clone(),
            reason,
        }
    }
}

/// Log lines of repeated events, at most one per reason per [`LogGate::EVERY`], with the number
/// left out in between. Reasons are a closed set, so the table stays small.
#[derive(Debug, Default)]
pub(crate) struct LogGate {
    last: HashMap<&'static str, (Instant, u64)>,
}

impl LogGate {
    const EVERY: Duration = Duration::from_secs(60);

    /// `Some(suppressed since the last line)` when this one should be logged.
    fn admit(&mut self, reason: &'static str) -> Option<u64> {
        let now = Instant::now();
        match self.last.get_mut(reason) {
            Some((at, skipped)) if now.duration_since(*at) < Self::EVERY => {
                *skipped += 1;
                None
            }
            Some((at, skipped)) => {
                let n = *skipped;
                *at = now;
                *skipped = 0;
                Some(n)
            }
            None => {
                self.last.insert(reason, (now, 0));
                Some(0)
            }
        }
    }
}

/// A message became a durable reading and is acknowledged.
#[derive(Debug)]
pub(crate) struct Ingested {
    pub(crate) class: MessageClass,
    pub(crate) latency: Duration,
}

impl Ingested {
    pub(crate) fn emit(&self, m: &IngestMetrics) {
        m.shared
            .ingested
            .get_or_create(&ClassLabels {
                ingest: m.ingest.clone(),
                class: self.class.as_str(),
            })
            .inc();
        m.durable.observe(self.latency.as_secs_f64());
    }
}

/// A message that can never become a reading: acknowledged (MQTT 3.1.1 has no negative
/// acknowledgement, and a redelivery would fail the same way forever), counted, logged at most
/// once a minute per reason.
#[derive(Debug)]
pub(crate) struct MessageRefused<'a> {
    pub(crate) reason: &'static str,
    pub(crate) topic: &'a str,
    pub(crate) detail: &'a str,
}

impl MessageRefused<'_> {
    pub(crate) fn emit(&self, m: &IngestMetrics, gate: &mut LogGate) {
        m.shared.refused.get_or_create(&m.reason(self.reason)).inc();
        if let Some(suppressed) = gate.admit(self.reason) {
            tracing::warn!(ingest = %m.ingest, reason = self.reason, topic = ?self.topic, detail = %self.detail, suppressed, "MQTT message not ingested (acknowledged to the broker and dropped)");
        }
    }
}

/// A message left unacknowledged on purpose, so that the broker delivers it again.
#[derive(Debug)]
pub(crate) struct MessageDeferred {
    pub(crate) reason: &'static str,
}

impl MessageDeferred {
    pub(crate) fn emit(&self, m: &IngestMetrics, gate: &mut LogGate) {
        m.shared
            .deferred
            .get_or_create(&m.reason(self.reason))
            .inc();
        if let Some(suppressed) = gate.admit(self.reason) {
            tracing::info!(ingest = %m.ingest, reason = self.reason, suppressed, "MQTT message left unacknowledged; the broker delivers it again after the reconnect");
        }
    }
}

/// The subscriber got a CONNACK.
#[derive(Debug)]
pub(crate) struct Connected<'a> {
    pub(crate) url: &'a str,
    pub(crate) session_present: bool,
}

impl Connected<'_> {
    pub(crate) fn emit(&self, m: &IngestMetrics) {
        tracing::info!(ingest = %m.ingest, url = %self.url, session_present = self.session_present, "MQTT subscriber connected");
        m.connects.inc();
        m.connected.set(1);
    }
}

/// An established connection ended.
#[derive(Debug)]
pub(crate) struct Disconnected<'a> {
    pub(crate) reason: &'static str,
    pub(crate) error: &'a str,
    pub(crate) unacked: usize,
}

impl Disconnected<'_> {
    pub(crate) fn emit(&self, m: &IngestMetrics) {
        if self.reason == LinkFailure::Shutdown.as_str() {
            tracing::info!(ingest = %m.ingest, unacked = self.unacked, "MQTT subscriber disconnected for shutdown");
        } else {
            tracing::warn!(ingest = %m.ingest, reason = self.reason, error = %self.error, unacked = self.unacked, "MQTT subscriber disconnected; unacknowledged messages stay with the broker and come again after reconnecting");
        }
        m.shared
            .disconnects
            .get_or_create(&m.reason(self.reason))
            .inc();
        m.connected.set(0);
        m.awaiting.set(0);
    }
}

/// A connection attempt failed.
#[derive(Debug)]
pub(crate) struct ConnectFailed<'a> {
    pub(crate) reason: LinkFailure,
    pub(crate) error: &'a str,
    pub(crate) retry_in: Duration,
    /// First failure of a new kind: WARN (ERROR for refused credentials). Repeats: DEBUG.
    pub(crate) state_changed: bool,
}

impl ConnectFailed<'_> {
    pub(crate) fn emit(&self, m: &IngestMetrics) {
        if self.state_changed && self.reason == LinkFailure::CredentialsRefused {
            tracing::error!(ingest = %m.ingest, reason = self.reason.as_str(), error = %self.error, retry_in = ?self.retry_in, "the sensors' broker refused our credentials; check username/password");
        } else if self.state_changed {
            tracing::warn!(ingest = %m.ingest, reason = self.reason.as_str(), error = %self.error, retry_in = ?self.retry_in, "MQTT subscriber cannot connect; retrying with backoff");
        } else {
            tracing::debug!(ingest = %m.ingest, reason = self.reason.as_str(), error = %self.error, retry_in = ?self.retry_in, "MQTT subscriber connect retry failed");
        }
        m.shared
            .connect_failures
            .get_or_create(&m.reason(self.reason.as_str()))
            .inc();
    }
}

/// The broker refused one of our topic filters in its SUBACK.
#[derive(Debug)]
pub(crate) struct SubscriptionRefused<'a> {
    pub(crate) filter: &'a str,
}

impl SubscriptionRefused<'_> {
    pub(crate) fn emit(&self, m: &IngestMetrics) {
        tracing::error!(ingest = %m.ingest, filter = %self.filter, "the sensors' broker refused the subscription (check its ACL for this client); nothing published there reaches wardgate");
        m.subscriptions_refused.inc();
    }
}
