//! The gateway as an observing client (RFC 7641): one task per `[[coap.observe]]` target.
//!
//! Each task resolves the target, registers (GET with Observe=0) over the endpoint socket of the
//! matching address family, and turns every fresh notification into a reading on the bus.
//!
//! Decisions:
//! - A Confirmable notification is acknowledged only after its reading is durable. When the bus
//!   refuses it (busy, store full) the notification is *not* acknowledged rather than reset: a RST
//!   would cancel the observation (RFC 7641 §3.6), while silence makes the sensor retransmit the
//!   same state or send a newer one (§4.5), which is what "keep your data and retry" means here.
//!   A notification whose payload cannot be decoded is acknowledged (retransmitting it would not
//!   help) and counted.
//! - Freshness (§3.4) is checked against the last *accepted* notification, so a retransmission of
//!   a notification we refused is not mistaken for a stale one.
//! - Re-registration uses a new token after forgetting the old one (a leftover observation on the
//!   sensor is then cancelled by the RST its next notification gets). It happens after the
//!   observation ends (error response, response without Observe, registration timeout or RST)
//!   with jittered exponential backoff, and immediately when nothing arrived for
//!   `reregister_after`.
//! - A notification without Content-Format is read as text/plain (simple sensors, e.g. libcoap's
//!   example server, omit it).
//! - A notification with only the first Block2 block of its representation is completed with a
//!   GET of the whole (RFC 7959 §3.4) before it becomes a reading.
//! - On shutdown each observation is cancelled with GET Observe=1 (bounded wait), else forgotten.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use wardgate_core::payload::ContentFormat;
use wardgate_core::{Backoff, IngestPipeline, PeerContext, Protocol, Refused, Submission};

use crate::client::{Observation, Requester};
use crate::config::ObserveTarget;
use crate::error::CoapError;
use crate::exchange::{ClientRequest, ClientResponse, Notification};
use crate::metrics::CoapMetrics;
use crate::uri::CoapUri;

/// The RFC 7641 §3.4 freshness rule: is notification (`v2`, received `t2`) newer than
/// (`v1`, `t1`)? Sequence numbers are 24-bit and wrap; after 128 s any number is fresh.
pub fn is_fresh(v1: u32, t1: Instant, v2: u32, t2: Instant) -> bool {
    let d = v2.wrapping_sub(v1) & 0x00ff_ffff;
    (d != 0 && d < (1 << 23)) || t2 > t1 + Duration::from_secs(128)
}

/// Everything an observer needs besides its target.
#[derive(Clone)]
pub(crate) struct ObserverDeps {
    pub(crate) pipeline: IngestPipeline,
    pub(crate) metrics: CoapMetrics,
    /// (local address, requester) of every endpoint socket.
    pub(crate) sockets: Vec<(SocketAddr, Requester)>,
    /// Transmission's MAX_TRANSMIT_WAIT: the longest a registration can take.
    pub(crate) cancel_wait: Duration,
    /// The peer context the sockets' transport gives a sensor's address (over DTLS, with the
    /// identity the handshake proved), so its readings are attributed like a device's.
    pub(crate) peer_of: PeerOf,
}

impl std::fmt::Debug for ObserverDeps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObserverDeps")
            .field("sockets", &self.sockets.len())
            .field("cancel_wait", &self.cancel_wait)
            .finish_non_exhaustive()
    }
}

/// See [`ObserverDeps::peer_of`].
pub(crate) type PeerOf = std::sync::Arc<dyn Fn(SocketAddr) -> PeerContext + Send + Sync>;

const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

enum Ended {
    /// Shutdown requested.
    Shutdown,
    /// Nothing arrived for `reregister_after`.
    Quiet,
    /// The observation ended; `established` if it had delivered notifications.
    Over { established: bool },
}

enum Verdict {
    Accepted,
    Busy,
    Invalid,
}

/// One observe target's task.
pub(crate) struct Observer {
    target: ObserveTarget,
    uri: CoapUri,
    deps: ObserverDeps,
    default_name: Option<String>,
}

impl Observer {
    pub(crate) fn new(target: ObserveTarget, uri: CoapUri, deps: ObserverDeps) -> Self {
        let default_name = target.name.clone().or_else(|| uri.path.last().cloned());
        Observer {
            target,
            uri,
            deps,
            default_name,
        }
    }

    fn request(&self) -> ClientRequest {
        let mut r = ClientRequest::get("");
        r.path = self.uri.path.clone();
        r.query = self.uri.query.clone();
        r
    }

    async fn resolve(&self) -> Result<(SocketAddr, Requester), CoapError> {
        let fail = |reason: String| CoapError::Resolve {
            host: self.uri.host.clone(),
            reason,
        };
        let addrs = tokio::net::lookup_host((self.uri.host.as_str(), self.uri.port))
            .await
            .map_err(|e| fail(e.to_string()))?;
        for a in addrs {
            if let Some((_, r)) = self
                .deps
                .sockets
                .iter()
                .find(|(l, _)| l.is_ipv4() == a.is_ipv4())
            {
                return Ok((a, r.clone()));
            }
        }
        Err(fail(
            "no endpoint socket of a matching address family".into(),
        ))
    }

    /// Runs until `shutdown`.
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
        let m = &self.deps.metrics;
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            let (peer, requester) = match self.resolve().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(uri = %self.target.uri, error = %e, "observe target unresolved");
                    m.observe_registration("unresolved");
                    if !sleep_backoff(&mut backoff, &shutdown).await {
                        return;
                    }
                    continue;
                }
            };
            let req = self.request();
            let obs = match requester.observe(peer, req.clone()).await {
                Ok(o) => o,
                Err(CoapError::Closed) => return,
                Err(e) => {
                    tracing::warn!(uri = %self.target.uri, error = %e, "observe registration failed");
                    m.observe_registration("failed");
                    if !sleep_backoff(&mut backoff, &shutdown).await {
                        return;
                    }
                    continue;
                }
            };
            m.observe_registration("sent");
            let token = obs.token;
            match self.follow(obs, peer, &requester, &shutdown).await {
                Ended::Shutdown => {
                    let cancel = requester.cancel_observation(peer, req, token);
                    match tokio::time::timeout(self.deps.cancel_wait, cancel).await {
                        Ok(Ok(_)) => {}
                        _ => requester.forget(token).await,
                    }
                    return;
                }
                Ended::Quiet => {
                    tracing::info!(uri = %self.target.uri, "no notification within reregister_after; re-registering");
                    m.observe_registration("quiet");
                    requester.forget(token).await;
                }
                Ended::Over { established } => {
                    requester.forget(token).await;
                    if established {
                        backoff.reset();
                    }
                    tracing::info!(uri = %self.target.uri, "observation ended; re-registering after backoff");
                    if !sleep_backoff(&mut backoff, &shutdown).await {
                        return;
                    }
                }
            }
        }
    }

    async fn follow(
        &self,
        mut obs: Observation,
        peer: SocketAddr,
        requester: &Requester,
        shutdown: &CancellationToken,
    ) -> Ended {
        let m = &self.deps.metrics;
        let addr = peer;
        let mut last: Option<(u32, Instant)> = None;
        let mut established = false;
        loop {
            let next = tokio::select! {
                biased;
                () = shutdown.cancelled() => return Ended::Shutdown,
                r = tokio::time::timeout(self.target.reregister_after, obs.notifications.recv()) => r,
            };
            let n = match next {
                Err(_) => return Ended::Quiet,
                Ok(None) => {
                    if !established {
                        m.observe_registration("failed");
                    }
                    return Ended::Over { established };
                }
                Ok(Some(n)) => n,
            };
            let Notification { response, ack } = *n;
            if !response.is_success() {
                tracing::warn!(uri = %self.target.uri, code = %response.code(), "observe target answered with an error");
                m.observe_registration("refused");
                if let Some(a) = ack {
                    a.accept();
                }
                return Ended::Over { established };
            }
            let seq = response.observe();
            if !established {
                m.observe_registration(if seq.is_some() {
                    "established"
                } else {
                    "not_observable"
                });
                established = seq.is_some();
            }
            let now = Instant::now();
            if let (Some((v1, t1)), Some(v2)) = (last, seq) {
                if !is_fresh(v1, t1, v2, now) {
                    m.observe_notification("stale");
                    if let Some(a) = ack {
                        a.accept();
                    }
                    continue;
                }
            }
            // A notification carrying only the first Block2 block of a larger representation:
            // fetch the whole current one (RFC 7959 §3.4, a GET without Observe, followed
            // block-wise by the client). If that fails the notification is not acknowledged,
            // so the sensor sends it again.
            let whole;
            let response = if response.block2().is_some_and(|b| b.more) {
                match requester.request(addr, self.request()).await {
                    Ok(r) if r.is_success() => {
                        whole = r;
                        &whole
                    }
                    other => {
                        tracing::warn!(uri = %self.target.uri, outcome = ?other.map(|r| r.code()), "could not fetch the rest of a block-wise notification");
                        m.observe_notification("block2_failed");
                        if let Some(a) = ack {
                            a.reject();
                        }
                        continue;
                    }
                }
            } else {
                &response
            };
            // Asked per notification: over DTLS the identity exists only once the handshake that
            // the registration started has finished.
            let peer = (self.deps.peer_of)(addr);
            match self.ingest(response, &peer).await {
                Verdict::Accepted => {
                    if let Some(v) = seq {
                        last = Some((v, now));
                    }
                    m.observe_notification("accepted");
                    if let Some(a) = ack {
                        a.accept();
                    }
                }
                Verdict::Busy => {
                    m.observe_notification("busy");
                    if let Some(a) = ack {
                        a.reject();
                    }
                }
                Verdict::Invalid => {
                    m.observe_notification("invalid");
                    if let Some(a) = ack {
                        a.accept();
                    }
                }
            }
            if seq.is_none() {
                // Not observable: the one response was the reading.
                return Ended::Over { established };
            }
        }
    }

    async fn ingest(&self, resp: &ClientResponse, peer: &PeerContext) -> Verdict {
        let m = &self.deps.metrics;
        let submission = Submission {
            peer,
            protocol: Protocol::Coap,
            device: &self.target.device,
            class: self.target.class,
            resource: &self.target.uri,
            format: ContentFormat::from_coap(resp.content_format().unwrap_or(0)),
            body: resp.payload(),
            default_name: self.default_name.as_deref(),
        };
        let refused = match self.deps.pipeline.submit(&submission) {
            Ok(pending) => match pending.await {
                Ok(_) => {
                    m.accepted("observe", self.target.class);
                    return Verdict::Accepted;
                }
                Err(e) => e,
            },
            Err(e) => e,
        };
        tracing::debug!(uri = %self.target.uri, error = %refused, "notification not stored");
        match refused {
            Refused::Store(_) => Verdict::Busy,
            Refused::Payload(e) => {
                m.payload_errors
                    .get_or_create(&crate::metrics::ReasonLabel { reason: e.reason() })
                    .inc();
                Verdict::Invalid
            }
            Refused::UnsupportedFormat | Refused::Denied(_) => Verdict::Invalid,
        }
    }
}

/// Sleeps the next backoff delay; false on shutdown.
async fn sleep_backoff(backoff: &mut Backoff, shutdown: &CancellationToken) -> bool {
    let d = backoff.next_delay();
    tokio::select! {
        () = shutdown.cancelled() => false,
        () = tokio::time::sleep(d) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freshness_follows_rfc7641_examples() {
        let t = Instant::now();
        assert!(is_fresh(1, t, 2, t));
        assert!(!is_fresh(2, t, 1, t));
        assert!(!is_fresh(5, t, 5, t));
        // Wrap-around: 0xFFFFFF → 0 is newer.
        assert!(is_fresh(0x00ff_ffff, t, 0, t));
        // The 128 s clause makes anything fresh.
        assert!(is_fresh(10, t, 3, t + Duration::from_secs(129)));
        assert!(!is_fresh(10, t, 3, t + Duration::from_secs(128)));
    }
}
