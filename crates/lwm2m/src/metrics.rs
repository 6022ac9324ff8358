//! LwM2M metrics (prometheus-client, explicit registry). Labels come from closed sets
//! (operations, fixed outcomes and reasons, CoAP code labels); endpoints are never labels.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use wardgate_coap::Code;

/// `operation` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabel {
    /// read, write, observe, ...
    pub operation: &'static str,
}

/// `operation` and `outcome` labels.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpOutcome {
    /// read, write, observe, ...
    pub operation: &'static str,
    /// The CoAP code label of the answer, `timeout` or `error`.
    pub outcome: &'static str,
}

/// `interface` and `outcome` labels of the client-initiated requests.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClientOutcome {
    /// register, update, deregister, send, bootstrap.
    pub interface: &'static str,
    /// ok, or the refusal reason.
    pub outcome: &'static str,
}

/// `outcome` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    /// Fixed outcome.
    pub outcome: &'static str,
}

/// The server's metrics. Cheap to clone (handles).
#[derive(Debug, Clone)]
pub struct Lwm2mMetrics {
    /// Registered clients.
    pub clients: Gauge,
    /// Registrations that expired.
    pub expired: Counter,
    /// Register/Update/De-register/Send/Bootstrap requests by outcome.
    pub client_requests: Family<ClientOutcome, Counter>,
    /// Requests the server sent, by operation and answer.
    pub requests: Family<OpOutcome, Counter>,
    /// Time to the client's answer, by operation.
    pub request_seconds: Family<OpLabel, Histogram>,
    /// Operations queued for a sleeping client.
    pub queued: Counter,
    /// Operations refused because a sleeping client's queue was full.
    pub queue_full: Counter,
    /// Notifications by outcome (accepted, busy, undecodable, refused).
    pub notifications: Family<Outcome, Counter>,
    /// Observations established, re-established and failed.
    pub observations: Family<Outcome, Counter>,
    /// Active observations.
    pub active_observations: Gauge,
}

impl Default for Lwm2mMetrics {
    fn default() -> Self {
        Lwm2mMetrics {
            clients: Gauge::default(),
            expired: Counter::default(),
            client_requests: Family::default(),
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(|| {
                Histogram::new([0.005, 0.02, 0.1, 0.5, 2.0, 10.0, 60.0])
            }),
            queued: Counter::default(),
            queue_full: Counter::default(),
            notifications: Family::default(),
            observations: Family::default(),
            active_observations: Gauge::default(),
        }
    }
}

impl Lwm2mMetrics {
    /// Registers every metric in `registry` and returns the handles.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry;
        r.register(
            "wardgate_lwm2m_clients",
            "Registered LwM2M clients",
            m.clients.clone(),
        );
        r.register(
            "wardgate_lwm2m_registrations_expired",
            "LwM2M registrations that ended because their lifetime passed without an Update",
            m.expired.clone(),
        );
        r.register(
            "wardgate_lwm2m_client_requests",
            "Register, Update, De-register, Send and Bootstrap requests from clients, by outcome",
            m.client_requests.clone(),
        );
        r.register(
            "wardgate_lwm2m_requests",
            "Requests the server sent to clients, by operation and answer",
            m.requests.clone(),
        );
        r.register(
            "wardgate_lwm2m_request_seconds",
            "Time from sending a request to a client to its answer, by operation",
            m.request_seconds.clone(),
        );
        r.register(
            "wardgate_lwm2m_queued_operations",
            "Operations that waited for a sleeping (queue-mode) client",
            m.queued.clone(),
        );
        r.register(
            "wardgate_lwm2m_queue_full",
            "Operations refused because a sleeping client's queue was full",
            m.queue_full.clone(),
        );
        r.register(
            "wardgate_lwm2m_notifications",
            "Notifications from clients, by outcome",
            m.notifications.clone(),
        );
        r.register(
            "wardgate_lwm2m_observations",
            "Observations established (ok), re-established (silent, reregistered) or failed",
            m.observations.clone(),
        );
        r.register(
            "wardgate_lwm2m_active_observations",
            "Observations the server holds on clients",
            m.active_observations.clone(),
        );
        m
    }

    pub(crate) fn request(
        &self,
        operation: &'static str,
        r: Result<Code, &crate::server::OpError>,
        took: Duration,
    ) {
        let outcome = match r {
            Ok(code) => code.label(),
            Err(crate::server::OpError::Timeout) => "timeout",
            Err(_) => "error",
        };
        self.requests
            .get_or_create(&OpOutcome { operation, outcome })
            .inc();
        self.request_seconds
            .get_or_create(&OpLabel { operation })
            .observe(took.as_secs_f64());
    }

    pub(crate) fn client_request(&self, interface: &'static str, outcome: &'static str) {
        self.client_requests
            .get_or_create(&ClientOutcome { interface, outcome })
            .inc();
    }

    pub(crate) fn notification(&self, outcome: &'static str) {
        self.notifications.get_or_create(&Outcome { outcome }).inc();
    }

    pub(crate) fn observation(&self, outcome: &'static str) {
        self.observations.get_or_create(&Outcome { outcome }).inc();
    }
}
