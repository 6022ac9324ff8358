//! The HTTPS uplink: drains one outbox cursor to one HTTPS endpoint, in batches.
//!
//! # Wire format
//! Each batch is one `POST <url>` whose body is a JSON array of `wardgate.reading/1` objects,
//! built by joining the stored JSON of each reading (nothing is parsed again), with
//! `Content-Type: application/json`, optionally `Content-Encoding: gzip`, and:
//! - `Authorization: Bearer <token>` when a token is configured;
//! - `X-Wardgate-Gateway: <gateway id>`;
//! - `Idempotency-Key`: 32 hex digits of the SHA-256 of the batch's reading ids in order, so a
//!   batch that is sent again after a failure carries the same key (the endpoint can drop the
//!   repeat); every reading also carries its own unique `id`.
//!
//! # Delivery rule
//! One batch is in flight at a time. That keeps per-device order on this uplink without any
//! bookkeeping: the outbox hands readings out in order, and the next batch leaves only after the
//! previous one was answered. A reading is acknowledged to the outbox only when the endpoint
//! answered its batch 2xx. Any other outcome hands the whole batch back with
//! [`OutboxCursor::nack`] (`Failed`, or `TimedOut` when no answer came within `timeout`), which
//! makes the outbox hand it out again, in order, and the uplink waits before sending it again:
//!
//! | outcome | wait before the next attempt |
//! |---|---|
//! | 429, 503 | the answer's `Retry-After` (seconds or HTTP-date) capped at `retry_max`, else the backoff |
//! | 408, other 5xx, connection or TLS failure, timeout | the backoff (exponential, full jitter, `retry_min`..`retry_max`) |
//! | 413 for several readings | `retry_min`, with batches half as large (they grow back after successes) |
//! | other 1xx/3xx/4xx (401, 403, 404, 413 for one reading, ...) | `retry_max`: retrying soon cannot change the answer; logged at ERROR once per status until a success |
//!
//! Nothing is ever dropped by this uplink: a misconfigured endpoint keeps the readings in the
//! outbox (under its quota) and costs one request per `retry_max`.
//!
//! # Health
//! `uplink.<name>` is ready at start (nothing has failed yet: an uplink that waits for readings
//! must not hold the gateway's readiness, and with it the devices' traffic, hostage) and after
//! every 2xx; not ready, with a short detail, from a failed batch to the next 2xx.
//!
//! # Shutdown
//! Cancelling stops taking deliveries at once. A batch in flight is given up to
//! `shutdown_timeout` to be answered (and acknowledged); past that it is handed back with a
//! `TimedOut` nack. Readings handed out but not sent stay owed and go out after the restart.

mod batch;
mod client;
pub mod config;
mod metrics;

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use wardgate_core::{
    Backoff, Delivery, HealthReporter, MessageClass, NackReason, OutboxCursor, OutboxError,
    Shutdown,
};

use crate::error::HttpError;
use batch::Verdict;
use client::{Answer, Client};
use metrics::{Answered, BatchDelivered, BatchFailed, NoAnswer, UplinkMetrics};

pub use config::HttpsUplinkConfig;
pub use metrics::HttpsUplinkMetrics;

/// How often `insecure_skip_verify` is logged again at ERROR while it is on.
const INSECURE_NAG: Duration = Duration::from_secs(3600);
/// How often a failure that keeps happening (same reason and status) is logged again at
/// WARN/ERROR; the attempts in between log at DEBUG.
const FAILURE_LOG_REPEAT: Duration = Duration::from_secs(10 * 60);
/// Bodies larger than this are gzipped on the blocking pool rather than on the runtime.
const GZIP_INLINE_MAX: usize = 64 * 1024;

/// A configured HTTPS uplink, not yet running. Built by [`HttpsUplinkConfig::build`].
pub struct HttpsUplink {
    name: String,
    client: Client,
    batch_max_readings: usize,
    batch_max_bytes: usize,
    linger: Duration,
    retry_min: Duration,
    retry_max: Duration,
    shutdown_timeout: Duration,
    insecure: bool,
    metrics: UplinkMetrics,
    health: HealthReporter,
}

impl std::fmt::Debug for HttpsUplink {
    // Hand-written: the client's headers hold the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsUplink")
            .field("name", &self.name)
            .field("url", &self.client.shown_url)
            .finish_non_exhaustive()
    }
}

impl<C: OutboxCursor> wardgate_core::Uplink<C> for HttpsUplink {
    fn name(&self) -> &str {
        &self.name
    }

    fn start(self: Box<Self>, cursor: C, shutdown: Shutdown) -> wardgate_core::UplinkTask {
        Box::pin(async move {
            let name = self.name.clone();
            if let Err(e) = HttpsUplink::run(*self, cursor, shutdown).await {
                tracing::error!(uplink = %name, error = %e, "uplink stopped with an error");
            }
        })
    }
}

/// Why a batch went back to the outbox, as the run loop decides the wait.
struct Failure {
    reason: &'static str,
    nack: NackReason,
    status: Option<u16>,
    detail: String,
    delay: Duration,
}

impl HttpsUplink {
    pub(crate) fn new(
        cfg: &HttpsUplinkConfig,
        client: Client,
        metrics: HttpsUplinkMetrics,
        health: HealthReporter,
    ) -> HttpsUplink {
        HttpsUplink {
            name: cfg.name.clone(),
            client,
            batch_max_readings: cfg.batch_max_readings,
            batch_max_bytes: cfg.batch_max_bytes,
            linger: cfg.linger,
            retry_min: cfg.retry_min,
            retry_max: cfg.retry_max,
            shutdown_timeout: cfg.shutdown_timeout,
            insecure: cfg.insecure_skip_verify,
            metrics: metrics.for_uplink(&cfg.name),
            health,
        }
    }

    /// The uplink's configured name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Drains `cursor` to the endpoint until `shutdown` is cancelled or the outbox closes (see
    /// the module documentation for the delivery rule). Delivery failures are retried, never
    /// returned; it returns an error only when the outbox fails.
    pub async fn run<C: OutboxCursor>(
        self,
        mut cursor: C,
        shutdown: Shutdown,
    ) -> Result<(), HttpError> {
        let _nag = self.insecure.then(|| self.nag_insecure(&shutdown));
        self.health
            .ready(format!("no batch sent yet to {}", self.client.shown_url));
        let mut run = Run {
            buffer: VecDeque::new(),
            retry_count: None,
            cap: self.batch_max_readings,
            backoff: Backoff::new(self.retry_min, self.retry_max),
            failures: 0,
            last_logged: None,
            refused_logged: Vec::new(),
        };
        let result = loop {
            match self.fill(&mut run, &mut cursor, &shutdown).await {
                Ok(true) => {}
                Ok(false) => break Ok(()),
                Err(OutboxError::Closed) => {
                    tracing::info!(uplink = %self.name, "outbox closed; HTTPS uplink stopping");
                    break Ok(());
                }
                Err(e) => break Err(HttpError::Outbox(e)),
            }
            let target = run.retry_count.take().unwrap_or(run.cap);
            let batch = batch::cut(&mut run.buffer, target, self.batch_max_bytes);
            if batch.is_empty() {
                continue;
            }
            let (answer, took, stopping) = self.send(&batch, &shutdown).await;
            let seqs: Vec<u64> = batch.iter().map(|d| d.seq).collect();
            match self.judge(&mut run, &batch, answer, took) {
                None => {
                    cursor.ack(&seqs);
                    let classes: Vec<MessageClass> = batch.iter().map(|d| d.class).collect();
                    BatchDelivered {
                        classes: &classes,
                        took,
                        after_failures: run.failures,
                    }
                    .emit(&self.metrics);
                    self.health
                        .ready(format!("delivering to {}", self.client.shown_url));
                    run.succeeded(self.batch_max_readings);
                }
                Some(f) => {
                    cursor.nack(&seqs, f.nack);
                    // The outbox hands out again every unacknowledged delivery from the lowest
                    // nacked one: what was buffered behind this batch comes back too.
                    run.buffer.clear();
                    let delay = self.failed(&mut run, &batch, f);
                    if stopping {
                        break Ok(());
                    }
                    tokio::select! {
                        biased;
                        () = shutdown.cancelled() => break Ok(()),
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
            if stopping {
                break Ok(());
            }
        };
        self.health.not_ready("stopped");
        result
    }

    /// Waits for deliveries and lingers to fill a batch. `Ok(false)` on shutdown.
    async fn fill<C: OutboxCursor>(
        &self,
        run: &mut Run,
        cursor: &mut C,
        shutdown: &Shutdown,
    ) -> Result<bool, OutboxError> {
        let target = run.retry_count.unwrap_or(run.cap).max(1);
        if run.buffer.is_empty() {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return Ok(false),
                got = cursor.next(target) => run.buffer.extend(got?),
            }
        }
        let deadline = Instant::now() + self.linger;
        while run.buffer.len() < target && buffered_bytes(&run.buffer) < self.batch_max_bytes {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return Ok(false),
                () = tokio::time::sleep_until(deadline) => break,
                got = cursor.next(target - run.buffer.len()) => run.buffer.extend(got?),
            }
        }
        Ok(true)
    }

    /// Sends one batch. On shutdown the batch in flight gets `shutdown_timeout` more to be
    /// answered. Returns the answer, how long it took, and whether shutdown began.
    async fn send(&self, batch: &[Delivery], shutdown: &Shutdown) -> (Answer, Duration, bool) {
        let key = batch::idempotency_key(batch);
        let json = batch::json_array(batch);
        let (body, gzipped) = if self.client.gzip() {
            match gzip(json).await {
                Some(z) => (z, true),
                None => (batch::json_array(batch), false),
            }
        } else {
            (json, false)
        };
        let started = Instant::now();
        let post = self.client.post(body, gzipped, &key);
        tokio::pin!(post);
        let (answer, stopping) = tokio::select! {
            biased;
            a = &mut post => (a, false),
            () = shutdown.cancelled() => {
                tracing::info!(uplink = %self.name, readings = batch.len(), "HTTPS uplink stopping; waiting for the batch in flight");
                match tokio::time::timeout(self.shutdown_timeout, &mut post).await {
                    Ok(a) => (a, true),
                    Err(_) => (Answer::TimedOut, true),
                }
            }
        };
        (answer, started.elapsed(), stopping)
    }

    /// `None` when the batch was delivered; else why not and how long to wait.
    fn judge(
        &self,
        run: &mut Run,
        batch: &[Delivery],
        answer: Answer,
        took: Duration,
    ) -> Option<Failure> {
        let n = batch.len();
        match answer {
            Answer::TimedOut => {
                NoAnswer {
                    timed_out: true,
                    took,
                }
                .emit(&self.metrics);
                Some(Failure {
                    reason: "timeout",
                    nack: NackReason::TimedOut,
                    status: None,
                    detail: format!("no answer from {} in time", self.client.shown_url),
                    delay: run.backoff.next_delay(),
                })
            }
            Answer::Failed { detail } => {
                NoAnswer {
                    timed_out: false,
                    took,
                }
                .emit(&self.metrics);
                Some(Failure {
                    reason: "connect",
                    nack: NackReason::Failed,
                    status: None,
                    detail: format!("{}: {detail}", self.client.shown_url),
                    delay: run.backoff.next_delay(),
                })
            }
            Answer::Status {
                status,
                retry_after,
                body_bytes,
            } => {
                if batch::verdict(status, n) != Verdict::Delivered {
                    Answered { status, took }.emit(&self.metrics);
                }
                let answered = |what: &str| {
                    format!(
                        "{} answered {status}{what} ({body_bytes} bytes of body)",
                        self.client.shown_url
                    )
                };
                let failure = |reason, detail, delay| Failure {
                    reason,
                    nack: NackReason::Failed,
                    status: Some(status),
                    detail,
                    delay,
                };
                match batch::verdict(status, n) {
                    Verdict::Delivered => None,
                    Verdict::Throttled => {
                        let backoff = run.backoff.next_delay();
                        let asked = retry_after
                            .as_deref()
                            .and_then(|v| batch::retry_after(v, SystemTime::now()));
                        let delay = batch::throttle_delay(asked, backoff, self.retry_max);
                        let what = match asked {
                            Some(d) => format!(" with Retry-After {}s", d.as_secs()),
                            None => String::new(),
                        };
                        Some(failure("throttled", answered(&what), delay))
                    }
                    Verdict::Transient => Some(failure(
                        "server_error",
                        answered(""),
                        run.backoff.next_delay(),
                    )),
                    Verdict::TooLarge => {
                        run.cap = (n / 2).max(1);
                        Some(failure(
                            "too_large",
                            answered(&format!(
                                " to {n} readings; sending at most {} per batch",
                                run.cap
                            )),
                            self.retry_min,
                        ))
                    }
                    Verdict::Refused => Some(failure("refused", answered(""), self.retry_max)),
                }
            }
        }
    }

    /// Records a failed batch (log, metrics, health); returns the wait before the next attempt.
    fn failed(&self, run: &mut Run, batch: &[Delivery], f: Failure) -> Duration {
        run.failures = run.failures.saturating_add(1);
        // The same readings are retried as the same batch (same Idempotency-Key), unless the
        // batch has to shrink.
        if f.reason != "too_large" {
            run.retry_count = Some(batch.len());
        }
        let now = Instant::now();
        let state_changed = if f.reason == "refused" {
            // Once per status until a success.
            let status = f.status.unwrap_or(0);
            let new = !run.refused_logged.contains(&status);
            if new {
                run.refused_logged.push(status);
            }
            new
        } else {
            match run.last_logged {
                Some((reason, status, at)) => {
                    (reason, status) != (f.reason, f.status)
                        || now.duration_since(at) >= FAILURE_LOG_REPEAT
                }
                None => true,
            }
        };
        if state_changed {
            run.last_logged = Some((f.reason, f.status, now));
        }
        BatchFailed {
            reason: f.reason,
            detail: &f.detail,
            readings: batch.len(),
            retry_in: f.delay,
            state_changed,
        }
        .emit(&self.metrics);
        // Health is state, not a log line: always the latest words.
        self.health.not_ready(f.detail);
        f.delay
    }

    /// Logs the lab-only setting at ERROR now and every hour until the uplink stops.
    fn nag_insecure(&self, shutdown: &Shutdown) -> tokio_util::sync::DropGuard {
        let stop = shutdown.child_token();
        let name = self.name.clone();
        let url = self.client.shown_url.clone();
        let watched = stop.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(INSECURE_NAG);
            loop {
                tokio::select! {
                    () = watched.cancelled() => return,
                    _ = every.tick() => tracing::error!(uplink = %name, url = %url, "insecure_skip_verify is on: the server certificate of this HTTPS uplink is NOT verified, so anyone on the path can read and change the readings it sends; lab use only"),
                }
            }
        });
        stop.drop_guard()
    }
}

/// The run loop's state between batches.
struct Run {
    /// Deliveries handed out by the cursor and not yet sent.
    buffer: VecDeque<Delivery>,
    /// After a failure: the size of the batch to send again, so it is the same batch.
    retry_count: Option<usize>,
    /// Current most readings per batch (halved by 413 answers, grown back by successes).
    cap: usize,
    backoff: Backoff,
    /// Failed attempts since the last success.
    failures: u32,
    /// The last failure logged at WARN/ERROR: its reason, its status and when.
    last_logged: Option<(&'static str, Option<u16>, Instant)>,
    /// Statuses of refused batches already logged at ERROR since the last success.
    refused_logged: Vec<u16>,
}

impl Run {
    fn succeeded(&mut self, max: usize) {
        self.backoff.reset();
        self.failures = 0;
        self.last_logged = None;
        self.refused_logged.clear();
        self.cap = self.cap.saturating_mul(2).min(max);
    }
}

fn buffered_bytes(buffer: &VecDeque<Delivery>) -> usize {
    buffer.iter().map(|d| d.json.len() + 1).sum()
}

/// Gzips `json`, on the blocking pool when it is large. `None` if that failed (it cannot with
/// an in-memory writer, short of a panic): the caller then sends the batch uncompressed.
async fn gzip(json: Vec<u8>) -> Option<Vec<u8>> {
    let result = if json.len() <= GZIP_INLINE_MAX {
        batch::gzip(&json)
    } else {
        match tokio::task::spawn_blocking(move || batch::gzip(&json)).await {
            Ok(r) => r,
            Err(e) => Err(std::io::Error::other(e.to_string())),
        }
    };
    match result {
        Ok(z) => Some(z),
        Err(e) => {
            tracing::error!(error = %e, "gzip failed; sending this batch uncompressed");
            None
        }
    }
}
