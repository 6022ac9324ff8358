//! Metrics and typed events of the HTTPS uplinks.
//!
//! Labels are bounded: `uplink` is a configured name (a closed set), `class` a status class
//! (`2xx` .. `5xx`, `error`, `timeout`) or a [`MessageClass`], `reason` a `&'static str` from a
//! closed set. Never a device id, a URL or a status text.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use wardgate_core::MessageClass;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UplinkLabels {
    uplink: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    uplink: String,
    status: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    uplink: String,
    class: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    uplink: String,
    reason: &'static str,
}

type HistogramFamily = Family<UplinkLabels, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    // 1 ms .. ~33 s: a LAN endpoint answers in milliseconds, a congested cloud link in seconds.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// Metrics shared by every HTTPS uplink; register once, clone into each uplink's build.
#[derive(Debug, Clone)]
pub struct HttpsUplinkMetrics {
    requests: Family<StatusLabels, Counter>,
    batches: Family<UplinkLabels, Counter>,
    delivered: Family<ClassLabels, Counter>,
    retries: Family<ReasonLabels, Counter>,
    duration: HistogramFamily,
}

impl Default for HttpsUplinkMetrics {
    /// Unregistered handles (tests, tools).
    fn default() -> Self {
        HttpsUplinkMetrics {
            requests: Family::default(),
            batches: Family::default(),
            delivered: Family::default(),
            retries: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
        }
    }
}

impl HttpsUplinkMetrics {
    /// Creates the metrics and registers them in `registry`:
    /// `wardgate_https_uplink_requests_total{uplink,status}`,
    /// `wardgate_https_uplink_batches_delivered_total{uplink}`,
    /// `wardgate_https_uplink_readings_delivered_total{uplink,class}`,
    /// `wardgate_https_uplink_retries_total{uplink,reason}`,
    /// `wardgate_https_uplink_request_duration_seconds{uplink}`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = HttpsUplinkMetrics::default();
        registry.register(
            "wardgate_https_uplink_requests",
            "Batch POSTs by outcome: the answer's status class, or error / timeout without one",
            m.requests.clone(),
        );
        registry.register(
            "wardgate_https_uplink_batches_delivered",
            "Batches answered 2xx and released from the outbox",
            m.batches.clone(),
        );
        registry.register(
            "wardgate_https_uplink_readings_delivered",
            "Readings in batches answered 2xx, released from the outbox",
            m.delivered.clone(),
        );
        registry.register(
            "wardgate_https_uplink_retries",
            "Batches handed back to the outbox for a later attempt, by reason",
            m.retries.clone(),
        );
        registry.register(
            "wardgate_https_uplink_request_duration_seconds",
            "Time from sending a batch to the end of its answer (or the failure)",
            m.duration.clone(),
        );
        m
    }

    /// Handles bound to one uplink's labels.
    pub(crate) fn for_uplink(&self, uplink: &str) -> UplinkMetrics {
        let u = UplinkLabels {
            uplink: uplink.to_owned(),
        };
        UplinkMetrics {
            uplink: uplink.to_owned(),
            batches: self.batches.get_or_create(&u).clone(),
            duration: self.duration.get_or_create(&u).clone(),
            delivered: MessageClass::ALL.map(|c| {
                self.delivered
                    .get_or_create(&ClassLabels {
                        uplink: uplink.to_owned(),
                        class: c.as_str(),
                    })
                    .clone()
            }),
            shared: self.clone(),
        }
    }
}

/// One uplink's metric handles.
#[derive(Debug, Clone)]
pub(crate) struct UplinkMetrics {
    pub(crate) uplink: String,
    batches: Counter,
    delivered: [Counter; MessageClass::COUNT],
    duration: Histogram,
    shared: HttpsUplinkMetrics,
}

impl UplinkMetrics {
    fn request(&self, status: &'static str, took: Duration) {
        self.shared
            .requests
            .get_or_create(&StatusLabels {
                uplink: self.uplink.clone(),
                status,
            })
            .inc();
        self.duration.observe(took.as_secs_f64());
    }
}

/// A batch was answered 2xx.
#[derive(Debug)]
pub(crate) struct BatchDelivered<'a> {
    pub(crate) classes: &'a [MessageClass],
    pub(crate) took: Duration,
    /// Failed attempts before this one (0 when it went through at once).
    pub(crate) after_failures: u32,
}

impl BatchDelivered<'_> {
    pub(crate) fn emit(&self, m: &UplinkMetrics) {
        m.request("2xx", self.took);
        m.batches.inc();
        for c in self.classes {
            m.delivered[c.index()].inc();
        }
        if self.after_failures > 0 {
            tracing::info!(uplink = %m.uplink, readings = self.classes.len(), failed_attempts = self.after_failures, "HTTPS uplink delivering again");
        } else {
            tracing::debug!(uplink = %m.uplink, readings = self.classes.len(), took = ?self.took, "batch delivered");
        }
    }
}

/// A batch was answered, but not 2xx. Logged by [`BatchFailed`] (which knows whether this
/// failure is new); only counted here.
#[derive(Debug)]
pub(crate) struct Answered {
    pub(crate) status: u16,
    pub(crate) took: Duration,
}

impl Answered {
    pub(crate) fn emit(&self, m: &UplinkMetrics) {
        m.request(super::batch::status_class(self.status), self.took);
    }
}

/// A request got no answer: connection or TLS failure, or its deadline passed.
#[derive(Debug)]
pub(crate) struct NoAnswer {
    pub(crate) timed_out: bool,
    pub(crate) took: Duration,
}

impl NoAnswer {
    pub(crate) fn emit(&self, m: &UplinkMetrics) {
        m.request(if self.timed_out { "timeout" } else { "error" }, self.took);
    }
}

/// A batch was handed back to the outbox for a later attempt.
#[derive(Debug)]
pub(crate) struct BatchFailed<'a> {
    /// A closed set: `throttled`, `server_error`, `too_large`, `refused`, `connect`, `timeout`.
    pub(crate) reason: &'static str,
    /// What happened, for the log (never a secret: no token, no header value, no body).
    pub(crate) detail: &'a str,
    pub(crate) readings: usize,
    pub(crate) retry_in: Duration,
    /// First failure of its kind since the last success: logged at WARN (ERROR for `refused`);
    /// repeats go to DEBUG so a long outage cannot flood the log.
    pub(crate) state_changed: bool,
}

impl BatchFailed<'_> {
    pub(crate) fn emit(&self, m: &UplinkMetrics) {
        m.shared
            .retries
            .get_or_create(&ReasonLabels {
                uplink: m.uplink.clone(),
                reason: self.reason,
            })
            .inc();
        if self.state_changed && self.reason == "refused" {
            // Only an operator can fix it (token, URL, endpoint's schema); retried rarely.
            tracing::error!(uplink = %m.uplink, reason = self.reason, readings = self.readings, retry_in = ?self.retry_in, "the HTTPS endpoint refused a batch ({}); the readings stay in the outbox; check this uplink's url and token", self.detail);
        } else if self.state_changed {
            tracing::warn!(uplink = %m.uplink, reason = self.reason, error = %self.detail, readings = self.readings, retry_in = ?self.retry_in, "HTTPS uplink batch not delivered; retrying with backoff");
        } else {
            tracing::debug!(uplink = %m.uplink, reason = self.reason, error = %self.detail, readings = self.readings, retry_in = ?self.retry_in, "HTTPS uplink retry failed");
        }
    }
}
