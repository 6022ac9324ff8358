//! The `uplinks` part reading a NATS bus through JetStream (`[split.jetstream]`), so several
//! workers share one stream of readings.
//!
//! NATS's MQTT listener has no shared subscriptions (`$share/...` is taken as a plain topic and
//! receives nothing), so on a NATS bus the MQTT subscription of `docs/scale-out.md` would hand
//! every reading to every worker. What NATS does have: the adapters' MQTT QoS 1 PUBLISHes are
//! stored in its stream `$MQTT_msgs` (subject `$MQTT.msgs.` + the topic with `/` as `.`,
//! interest retention, replicated as `mqtt { stream_replicas }` says) *before* NATS sends the
//! PUBACK. Every worker binds the same durable pull consumer on that stream, filtered to the
//! bus readings: JetStream hands each reading to one worker, and to another when it is not
//! acknowledged within `ack_wait` (what a killed worker had taken but not made durable moves to
//! the others, which MQTT shared subscriptions on Mosquitto do not do; what it had made durable
//! waits in its outbox until it runs again). A worker acknowledges a reading only once it is
//! durable in its own outbox ([`IngestPipeline::forward`], under the id the adapter gave it), so
//! the chain "PUBACK to the adapter → stored in JetStream → durable at a worker → acknowledged"
//! never has a gap; a copy redelivered after a lost ack carries the same id.
//!
//! What the order of start-up must be: with interest retention, a reading published while no
//! consumer matches is acknowledged to the adapter and not kept. So a worker creates the stream
//! (when NATS has not yet, i.e. before any MQTT client connected) and the consumer before it
//! says it is ready, and the adapters must start after one worker is ready — the same rule as
//! the MQTT bus's persistent session. The consumer is never deleted by wardgate.
//!
//! Why `async-nats`: it is NATS's own Rust client, the only maintained one with JetStream pull
//! consumers; it reconnects across the listed servers by itself.

use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer, stream};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use wardgate_config::split::{JetStreamConfig, SplitConfig};
use wardgate_core::health::{ComponentKind, HealthReporter};
use wardgate_core::{Accepted, Backoff, Health, IngestPipeline, Pending, Refused, Shutdown};

/// The stream NATS's MQTT listener stores QoS 1 messages in.
const STREAM: &str = "$MQTT_msgs";

/// How long in-flight readings may take to become durable at shutdown before the worker
/// leaves them unacknowledged (JetStream redelivers them to another worker).
const DRAIN: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// `wardgate_bus_jetstream_*`.
#[derive(Clone, Debug, Default)]
pub(crate) struct JetStreamMetrics {
    readings: Family<OutcomeLabel, Counter>,
    errors: Counter,
}

impl JetStreamMetrics {
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "wardgate_bus_jetstream_readings",
            "Readings taken from the shared JetStream consumer, by outcome (stored: durable and \
             acknowledged; dropped: not a reading, terminated; deferred: the store refused it \
             for now, handed back for redelivery)",
            m.readings.clone(),
        );
        registry.register(
            "wardgate_bus_jetstream_session_errors",
            "JetStream sessions that failed (connect, stream, consumer or pull errors); the \
             worker reconnects with backoff",
            m.errors.clone(),
        );
        m
    }

    fn count(&self, outcome: &'static str) {
        self.readings.get_or_create(&OutcomeLabel { outcome }).inc();
    }
}

/// The shared consumer of one `uplinks` worker, not yet running.
pub(crate) struct JetStreamBus {
    cfg: JetStreamConfig,
    username: Option<String>,
    password: Option<String>,
    filter: String,
    max_inflight: usize,
    name: String,
    metrics: JetStreamMetrics,
    health: HealthReporter,
}

impl JetStreamBus {
    /// `gateway` names this worker's NATS connection.
    pub(crate) fn new(
        split: &SplitConfig,
        cfg: &JetStreamConfig,
        gateway: &str,
        metrics: JetStreamMetrics,
        health: &Health,
    ) -> Self {
        JetStreamBus {
            filter: cfg.filter_subject(&split.topic_prefix),
            cfg: cfg.clone(),
            username: split.username.clone(),
            password: split.password.clone(),
            max_inflight: usize::from(split.max_inflight.max(1)),
            name: format!("{gateway}-uplinks"),
            metrics,
            health: health.reporter("ingest.bus.jetstream", ComponentKind::Listener),
        }
    }

    /// Takes readings until `stop`; reconnects with backoff after any failure.
    pub(crate) async fn run(self, pipeline: IngestPipeline, stop: Shutdown) {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        let mut last_error = String::new();
        loop {
            let err = match self.session(&pipeline, &stop).await {
                Ok(()) => return,
                Err(e) => e,
            };
            self.metrics.errors.inc();
            let text = format!("{err:#}");
            self.health
                .not_ready(format!("JetStream bus: {text}; reconnecting"));
            // Once per distinct failure, not once per retry.
            if text != last_error {
                tracing::warn!(consumer = %self.cfg.consumer, error = %text, "JetStream bus session failed; reconnecting with backoff");
                last_error = text;
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
    }

    async fn connect(&self) -> anyhow::Result<jetstream::Context> {
        let options = match (&self.username, &self.password) {
            (Some(u), p) => async_nats::ConnectOptions::with_user_and_password(
                u.clone(),
                p.clone().unwrap_or_default(),
            ),
            (None, _) => async_nats::ConnectOptions::new(),
        };
        let servers: Vec<async_nats::ServerAddr> = self
            .cfg
            .servers
            .iter()
            .map(|s| s.parse())
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow::anyhow!("a [split.jetstream] server address: {e}"))?;
        let client = options
            .name(&self.name)
            .connection_timeout(Duration::from_secs(5))
            .connect(servers)
            .await
            .map_err(|e| anyhow::anyhow!("cannot connect to NATS: {e}"))?;
        Ok(jetstream::new(client))
    }

    /// The stream (created when NATS has not made it yet) and the shared consumer.
    async fn bind(&self, js: &jetstream::Context) -> anyhow::Result<consumer::PullConsumer> {
        let not_found = |k: &jetstream::context::GetStreamErrorKind| {
            matches!(k, jetstream::context::GetStreamErrorKind::JetStream(e)
                if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND)
        };
        let stream = match js.get_stream(STREAM).await {
            Ok(s) => s,
            Err(e) if not_found(&e.kind()) => {
                // Not there: no MQTT client connected yet. Made as NATS would make it, so the
                // readings of the first adapter are kept for the consumer.
                tracing::info!(
                    stream = STREAM,
                    replicas = self.cfg.stream_replicas,
                    "creating the MQTT message stream before any adapter connects"
                );
                js.get_or_create_stream(stream::Config {
                    name: STREAM.into(),
                    subjects: vec!["$MQTT.msgs.>".into()],
                    retention: stream::RetentionPolicy::Interest,
                    storage: stream::StorageType::File,
                    num_replicas: self.cfg.stream_replicas,
                    ..Default::default()
                })
                .await
                .map_err(|e| anyhow::anyhow!("cannot create the stream {STREAM}: {e}"))?
            }
            Err(e) => anyhow::bail!("cannot look up the stream {STREAM}: {e}"),
        };
        stream
            .get_or_create_consumer(
                &self.cfg.consumer,
                consumer::pull::Config {
                    durable_name: Some(self.cfg.consumer.clone()),
                    filter_subject: self.filter.clone(),
                    deliver_policy: consumer::DeliverPolicy::All,
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: self.cfg.ack_wait,
                    max_deliver: -1,
                    max_ack_pending: i64::try_from(self.max_inflight).unwrap_or(i64::MAX),
                    // 0: as many replicas as the stream has (NATS refuses more).
                    num_replicas: 0,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!("cannot bind the consumer {}: {e}", self.cfg.consumer))
    }

    /// One connection: bind, then take readings until `stop` (Ok) or a failure (Err).
    async fn session(&self, pipeline: &IngestPipeline, stop: &Shutdown) -> anyhow::Result<()> {
        let js = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            r = self.connect() => r?,
        };
        let consumer = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            r = self.bind(&js) => r?,
        };
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(self.max_inflight)
            .heartbeat(Duration::from_secs(5))
            .messages()
            .await
            .map_err(|e| anyhow::anyhow!("cannot pull from the consumer: {e}"))?;
        self.health.ready(format!(
            "consumer {} on {STREAM} ({})",
            self.cfg.consumer, self.filter
        ));
        let mut inflight = FuturesUnordered::new();
        let ended = loop {
            tokio::select! {
                () = stop.cancelled() => break Ok(()),
                Some((msg, verdict)) = inflight.next(), if !inflight.is_empty() => {
                    self.settle(&msg, verdict).await;
                }
                next = messages.next(), if inflight.len() < self.max_inflight => match next {
                    Some(Ok(msg)) => match self.take(pipeline, &msg) {
                        Ok(pending) => inflight.push(async move {
                            let verdict = pending.await;
                            (msg, verdict)
                        }),
                        Err(refused) => self.settle(&msg, Err(refused)).await,
                    },
                    Some(Err(e)) => break Err(anyhow::anyhow!("pulling from the consumer: {e}")),
                    None => break Err(anyhow::anyhow!("the consumer's message stream ended")),
                },
            }
        };
        // What is in flight is being made durable: acknowledge what makes it in time; the rest
        // is redelivered (to this worker or another) after ack_wait.
        let _ = tokio::time::timeout(DRAIN, async {
            while let Some((msg, verdict)) = inflight.next().await {
                self.settle(&msg, verdict).await;
            }
        })
        .await;
        ended
    }

    /// Hands one message to the pipeline.
    fn take(
        &self,
        pipeline: &IngestPipeline,
        msg: &jetstream::Message,
    ) -> Result<Pending, Refused> {
        // `$MQTT.msgs.<prefix>.readings.<gateway>.<class>.<device>`: NATS refuses MQTT topics
        // with dots, so the last token is the whole device id.
        let device = msg.subject.as_str().rsplit('.').next();
        pipeline.forward(msg.payload.clone(), device)
    }

    /// Acknowledges a durable reading, terminates one that is not a reading (redelivering it
    /// would not help), and hands one the store refused back for later.
    async fn settle(&self, msg: &jetstream::Message, verdict: Result<Accepted, Refused>) {
        let (kind, outcome) = match verdict {
            Ok(_) => (AckKind::Ack, "stored"),
            Err(Refused::Store(e)) => {
                tracing::debug!(error = %e, "the store refused a bus reading for now; handing it back");
                (AckKind::Nak(Some(Duration::from_secs(1))), "deferred")
            }
            Err(e) => {
                tracing::warn!(subject = %msg.subject, reason = e.reason(), error = %e, "dropping a bus message that is not a valid reading");
                (AckKind::Term, "dropped")
            }
        };
        self.metrics.count(outcome);
        // A lost acknowledgement only means a redelivery (same id: the backend de-duplicates).
        if let Err(e) = msg.ack_with(kind).await {
            tracing::debug!(error = %e, "acknowledgement to JetStream failed; the reading will come again");
        }
    }
}
