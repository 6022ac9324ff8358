//! CoAP metrics (prometheus-client, explicit registry) and the typed events that count them.
//!
//! Every label value is a `&'static str` from a closed set (message types, codes wardgate sends,
//! fixed reasons), so cardinality is bounded; peers and device ids are never labels.

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::codec::{Code, MsgType};

/// `type` label: con, non, ack, rst.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    /// Message type.
    pub r#type: &'static str,
}

/// `code` label (see [`crate::codec::Code::label`]).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    /// Response code.
    pub code: &'static str,
}

/// `reason` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Fixed reason.
    pub reason: &'static str,
}

/// `outcome` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// Fixed outcome.
    pub outcome: &'static str,
}

/// `table` and `reason` labels of evictions.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EvictionLabels {
    /// `block1` (reassemblies) or `block2` (kept block-wise responses).
    pub table: &'static str,
    /// `table_full` or `source_share`.
    pub reason: &'static str,
}

/// `scope` label of rate limiting: `source` or `device`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScopeLabel {
    /// What the limit is per.
    pub scope: &'static str,
}

/// `source` label: `request` (devices posting) or `observe` (notifications), and the reading's
/// message class (a closed set).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    /// Where the reading came from.
    pub source: &'static str,
    /// Message class.
    pub class: &'static str,
}

/// Pre-resolved handles of the per-datagram counters: `Family::get_or_create` takes a read lock
/// and hashes the labels, which the hot path avoids. Clones share the family's atomics.
#[derive(Debug, Clone)]
struct Hot {
    /// Indexed like [`MsgType`]: con, non, ack, rst.
    received: [Counter; 4],
    /// One per [`Code::LABELS`] entry, in that order.
    responses: Arc<[Counter]>,
}

/// Every CoAP metric. Cheap to clone (the metrics are shared handles).
#[derive(Debug, Clone)]
pub struct CoapMetrics {
    /// Messages received by type.
    pub messages_received: Family<TypeLabel, Counter>,
    /// Responses sent by code.
    pub responses_sent: Family<CodeLabel, Counter>,
    /// Duplicates detected by (peer, Message ID).
    pub dedup_hits: Counter,
    /// Dedup entries evicted early because the table was full.
    pub dedup_evictions: Counter,
    /// Dedup entries currently remembered (all sockets).
    pub dedup_entries: Gauge,
    /// Malformed datagrams by reason.
    pub malformed: Family<ReasonLabel, Counter>,
    /// Payloads refused by the decoders, by reason.
    pub payload_errors: Family<ReasonLabel, Counter>,
    /// Readings made durable and acknowledged.
    pub readings_accepted: Family<SourceLabel, Counter>,
    /// Ingest requests refused, by reason.
    pub ingest_rejections: Family<ReasonLabel, Counter>,
    /// Responses sent separately (empty ACK first).
    pub separate_responses: Counter,
    /// Confirmable messages retransmitted.
    pub retransmissions: Counter,
    /// Confirmable messages given up after MAX_RETRANSMIT.
    pub transmission_timeouts: Counter,
    /// Responses that matched no exchange (answered with RST).
    pub unmatched_responses: Counter,
    /// Datagrams that could not be sent.
    pub send_errors: Counter,
    /// Observe notifications by outcome.
    pub observe_notifications: Family<OutcomeLabel, Counter>,
    /// Observe registrations by outcome.
    pub observe_registrations: Family<OutcomeLabel, Counter>,
    /// Block1 reassemblies in progress.
    pub block_transfers_open: Gauge,
    /// Block1 reassemblies by outcome.
    pub block_transfers: Family<OutcomeLabel, Counter>,
    /// Block-wise responses kept for Block2 fetches.
    pub block2_cached: Gauge,
    /// Entries dropped early from the block tables, by table and reason.
    pub evictions: Family<EvictionLabels, Counter>,
    /// Messages not remembered for deduplication because their source held its share.
    pub dedup_over_share: Counter,
    /// Requests refused by a rate limit, by scope.
    pub rate_limited: Family<ScopeLabel, Counter>,
    /// Answers to unauthenticated peers cut or withheld by the amplification limit, by reason.
    pub amplification_limited: Family<ReasonLabel, Counter>,
    hot: Hot,
}

impl Default for CoapMetrics {
    fn default() -> Self {
        let messages_received: Family<TypeLabel, Counter> = Family::default();
        let responses_sent: Family<CodeLabel, Counter> = Family::default();
        let recv = |t: MsgType| {
            messages_received
                .get_or_create(&TypeLabel { r#type: t.as_str() })
                .clone()
        };
        let hot = Hot {
            received: [
                recv(MsgType::Con),
                recv(MsgType::Non),
                recv(MsgType::Ack),
                recv(MsgType::Rst),
            ],
            responses: Code::LABELS
                .iter()
                .map(|code| responses_sent.get_or_create(&CodeLabel { code }).clone())
                .collect(),
        };
        CoapMetrics {
            messages_received,
            responses_sent,
            dedup_hits: Counter::default(),
            dedup_evictions: Counter::default(),
            dedup_entries: Gauge::default(),
            malformed: Family::default(),
            payload_errors: Family::default(),
            readings_accepted: Family::default(),
            ingest_rejections: Family::default(),
            separate_responses: Counter::default(),
            retransmissions: Counter::default(),
            transmission_timeouts: Counter::default(),
            unmatched_responses: Counter::default(),
            send_errors: Counter::default(),
            observe_notifications: Family::default(),
            observe_registrations: Family::default(),
            block_transfers_open: Gauge::default(),
            block_transfers: Family::default(),
            block2_cached: Gauge::default(),
            evictions: Family::default(),
            dedup_over_share: Counter::default(),
            rate_limited: Family::default(),
            amplification_limited: Family::default(),
            hot,
        }
    }
}

impl CoapMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry;
        r.register(
            "wardgate_coap_messages_received",
            "CoAP messages received, by type",
            m.messages_received.clone(),
        );
        r.register(
            "wardgate_coap_responses_sent",
            "CoAP responses sent, by code",
            m.responses_sent.clone(),
        );
        r.register(
            "wardgate_coap_dedup_hits",
            "Duplicate CoAP messages detected by (peer, Message ID)",
            m.dedup_hits.clone(),
        );
        r.register(
            "wardgate_coap_dedup_evictions",
            "Deduplication entries evicted before their lifetime because the table was full",
            m.dedup_evictions.clone(),
        );
        r.register(
            "wardgate_coap_dedup_entries",
            "Deduplication entries currently remembered",
            m.dedup_entries.clone(),
        );
        r.register(
            "wardgate_coap_malformed_messages",
            "Malformed CoAP datagrams, by reason",
            m.malformed.clone(),
        );
        r.register(
            "wardgate_coap_payload_errors",
            "Payloads refused by the decoders, by reason",
            m.payload_errors.clone(),
        );
        r.register(
            "wardgate_coap_readings_accepted",
            "Readings made durable and acknowledged, by source",
            m.readings_accepted.clone(),
        );
        r.register(
            "wardgate_coap_ingest_rejections",
            "Ingest requests refused, by reason",
            m.ingest_rejections.clone(),
        );
        r.register(
            "wardgate_coap_separate_responses",
            "Responses sent separately after an empty ACK",
            m.separate_responses.clone(),
        );
        r.register(
            "wardgate_coap_retransmissions",
            "Confirmable messages retransmitted",
            m.retransmissions.clone(),
        );
        r.register(
            "wardgate_coap_transmission_timeouts",
            "Confirmable messages given up after MAX_RETRANSMIT",
            m.transmission_timeouts.clone(),
        );
        r.register(
            "wardgate_coap_unmatched_responses",
            "Responses matching no exchange (rejected with RST)",
            m.unmatched_responses.clone(),
        );
        r.register(
            "wardgate_coap_send_errors",
            "Datagrams that could not be sent",
            m.send_errors.clone(),
        );
        r.register(
            "wardgate_coap_observe_notifications",
            "Observe notifications received, by outcome",
            m.observe_notifications.clone(),
        );
        r.register(
            "wardgate_coap_observe_registrations",
            "Observe registrations, by outcome",
            m.observe_registrations.clone(),
        );
        r.register(
            "wardgate_coap_block_transfers_open",
            "Block1 reassemblies in progress",
            m.block_transfers_open.clone(),
        );
        r.register(
            "wardgate_coap_block_transfers",
            "Block1 reassemblies, by outcome",
            m.block_transfers.clone(),
        );
        r.register(
            "wardgate_coap_block2_cached_responses",
            "Block-wise responses kept for clients fetching their remaining Block2 blocks",
            m.block2_cached.clone(),
        );
        r.register(
            "wardgate_coap_evictions",
            "Block transfers and kept block-wise responses dropped early, by table and reason",
            m.evictions.clone(),
        );
        r.register(
            "wardgate_coap_dedup_over_share",
            "Messages processed but not remembered for deduplication because their source held its share of the table",
            m.dedup_over_share.clone(),
        );
        r.register(
            "wardgate_coap_rate_limited",
            "Requests refused by a rate limit, by scope (source or device)",
            m.rate_limited.clone(),
        );
        r.register(
            "wardgate_coap_amplification_limited",
            "Answers to unauthenticated peers shortened or withheld to stay within 3x the request's bytes, by reason",
            m.amplification_limited.clone(),
        );
        m
    }

    pub(crate) fn received(&self, t: MsgType) {
        let i = match t {
            MsgType::Con => 0,
            MsgType::Non => 1,
            MsgType::Ack => 2,
            MsgType::Rst => 3,
        };
        if let Some(c) = self.hot.received.get(i) {
            c.inc();
        }
    }

    pub(crate) fn response_sent(&self, code: Code) {
        let label = code.label();
        let hot = Code::LABELS
            .iter()
            .position(|l| *l == label)
            .and_then(|i| self.hot.responses.get(i));
        match hot {
            Some(c) => {
                c.inc();
            }
            None => {
                self.responses_sent
                    .get_or_create(&CodeLabel { code: label })
                    .inc();
            }
        }
    }

    pub(crate) fn block_outcome(&self, outcome: &'static str) {
        self.block_transfers
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    pub(crate) fn eviction(&self, table: &'static str, reason: &'static str) {
        self.evictions
            .get_or_create(&EvictionLabels { table, reason })
            .inc();
    }

    pub(crate) fn amplification(&self, reason: &'static str) {
        self.amplification_limited
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    pub(crate) fn observe_notification(&self, outcome: &'static str) {
        self.observe_notifications
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    pub(crate) fn observe_registration(&self, outcome: &'static str) {
        self.observe_registrations
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    pub(crate) fn accepted(&self, source: &'static str, class: wardgate_core::MessageClass) {
        self.readings_accepted
            .get_or_create(&SourceLabel {
                source,
                class: class.as_str(),
            })
            .inc();
    }
}

/// A datagram that is not a well-formed CoAP message. Logged at debug: per-packet noise.
#[derive(Debug)]
pub(crate) struct MalformedMessage {
    pub(crate) peer: SocketAddr,
    pub(crate) reason: &'static str,
}

impl MalformedMessage {
    pub(crate) fn emit(&self, m: &CoapMetrics) {
        tracing::debug!(peer = %self.peer, reason = self.reason, "malformed CoAP message");
        m.malformed
            .get_or_create(&ReasonLabel {
                reason: self.reason,
            })
            .inc();
    }
}

/// An ingest request refused with an error response.
#[derive(Debug)]
pub(crate) struct IngestRejected<'a> {
    pub(crate) peer: SocketAddr,
    pub(crate) reason: &'static str,
    pub(crate) detail: &'a str,
}

impl IngestRejected<'_> {
    pub(crate) fn emit(&self, m: &CoapMetrics) {
        tracing::debug!(
            peer = %self.peer,
            reason = self.reason,
            detail = self.detail,
            "CoAP ingest request refused"
        );
        m.ingest_rejections
            .get_or_create(&ReasonLabel {
                reason: self.reason,
            })
            .inc();
    }
}

/// A payload the decoders refused.
#[derive(Debug)]
pub(crate) struct PayloadRejected<'a> {
    pub(crate) peer: SocketAddr,
    pub(crate) reason: &'static str,
    pub(crate) error: &'a wardgate_core::payload::DecodeError,
}

impl PayloadRejected<'_> {
    pub(crate) fn emit(&self, m: &CoapMetrics) {
        tracing::debug!(peer = %self.peer, reason = self.reason, error = %self.error,
            "CoAP payload refused");
        m.payload_errors
            .get_or_create(&ReasonLabel {
                reason: self.reason,
            })
            .inc();
    }
}

/// A Confirmable message given up after MAX_RETRANSMIT.
#[derive(Debug)]
pub(crate) struct TransmissionGaveUp {
    pub(crate) peer: SocketAddr,
    pub(crate) mid: u16,
    pub(crate) what: &'static str,
}

impl TransmissionGaveUp {
    pub(crate) fn emit(&self, m: &CoapMetrics) {
        tracing::info!(peer = %self.peer, mid = self.mid, what = self.what,
            "CoAP peer did not acknowledge; giving up");
        m.transmission_timeouts.inc();
    }
}

/// A datagram that could not be sent.
#[derive(Debug)]
pub(crate) struct SendFailed<'a> {
    pub(crate) peer: SocketAddr,
    pub(crate) error: &'a std::io::Error,
}

impl SendFailed<'_> {
    pub(crate) fn emit(&self, m: &CoapMetrics) {
        tracing::debug!(peer = %self.peer, error = %self.error, "CoAP send failed");
        m.send_errors.inc();
    }
}

/// Coalesces a log line to at most one a minute, carrying how many occurrences it stands for.
#[derive(Debug, Default)]
pub(crate) struct LogGate {
    last: Option<tokio::time::Instant>,
    unlogged: u64,
}

/// How often a coalesced log line may appear.
const LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

impl LogGate {
    /// Counts one occurrence; `Some(n)` when a line should be logged now for `n` occurrences.
    fn hit(&mut self, now: tokio::time::Instant) -> Option<u64> {
        self.unlogged += 1;
        if self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) < LOG_EVERY)
        {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }
}

/// A request refused by a rate limit: counted every time, logged at most once a minute per
/// scope (and socket) with the number of refusals since the last line.
#[derive(Debug)]
pub(crate) struct RateLimited {
    pub(crate) peer: SocketAddr,
    /// `source` or `device`.
    pub(crate) scope: &'static str,
    pub(crate) retry_after_secs: u32,
}

impl RateLimited {
    pub(crate) fn emit(&self, m: &CoapMetrics, gate: &mut LogGate, now: tokio::time::Instant) {
        m.rate_limited
            .get_or_create(&ScopeLabel { scope: self.scope })
            .inc();
        if let Some(count) = gate.hit(now) {
            tracing::warn!(
                peer = %self.peer,
                scope = self.scope,
                retry_after_secs = self.retry_after_secs,
                refused_since_last_line = count,
                "CoAP requests over the rate limit refused (logged at most once a minute)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_gate_lets_one_line_a_minute_through_with_the_count() {
        let t0 = tokio::time::Instant::now();
        let mut g = LogGate::default();
        assert_eq!(g.hit(t0), Some(1));
        for _ in 0..5 {
            assert_eq!(g.hit(t0 + std::time::Duration::from_secs(30)), None);
        }
        assert_eq!(g.hit(t0 + LOG_EVERY), Some(6));
    }
}
