//! Observations the server holds on clients, and the readings their notifications become.
//!
//! Two sources: rules in `gateway.toml` (`[[lwm2m.observe]]`: an endpoint pattern, paths,
//! notification attributes, the readings' class), and observations an operator starts through
//! the admin API. Both are *wanted* observations of a client; the server keeps them established:
//! - after every Register and Update, and the first message of a client restored after a gateway
//!   restart, every wanted observation that is not running is (re)started ([`ensure`]); a
//!   re-registration (a rebooted device) starts them all again, since the client forgot them
//!   (TS Core §6.2.1: observations end with the registration). Observations an operator started
//!   are carried over to the new registration of the same endpoint.
//! - an observation with a `pmax` that stays silent for 2 × pmax + 30 s is re-established (a
//!   client that lost it without telling, e.g. after a new DTLS session);
//! - an observation the client ends (an error notification, a RST) is retried with backoff
//!   while the client is awake.
//!
//! A notification becomes one reading through the ingest pipeline; a Confirmable notification is
//! acknowledged only once that reading is durable (refused by a full store: not acknowledged, so
//! the client retransmits — the same rule as the CoAP observer). An undecodable notification is
//! acknowledged (retransmitting would not help), counted and logged.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use wardgate_coap::{ClientRequest, Code, Notification, Token};
use wardgate_core::{Backoff, MessageClass};

use crate::format::Format;
use crate::node::{Entry, Path};
use crate::ops::Attributes;
use crate::server::{OpError, Server, decode_answer};

/// Most observations an operator may start on one client (each is a task and a channel).
pub const MAX_MANUAL_OBSERVATIONS: usize = 64;

/// `[[lwm2m.observe]]`: what to observe on which clients.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ObserveRule {
    /// Endpoint names it applies to: exact, or with `*` wildcards (`bed-*`, `*`).
    pub endpoint: String,
    /// Paths to observe (`/3303/0/5700`, `/3303`, ...).
    pub paths: Vec<Path>,
    /// Observe all `paths` in one Observe-Composite (LwM2M 1.1+) instead of one observation
    /// each. Clients registered with 1.0 get one observation per path.
    #[serde(default)]
    pub composite: bool,
    /// Notification attributes written before observing (Write-Attributes on each path).
    #[serde(default)]
    pub attributes: Option<Attributes>,
    /// The class of the readings.
    #[serde(default = "vital")]
    pub class: MessageClass,
}

fn vital() -> MessageClass {
    MessageClass::Vital
}

impl ObserveRule {
    /// Whether the rule applies to `endpoint`.
    pub fn matches(&self, endpoint: &str) -> bool {
        glob(self.endpoint.as_bytes(), endpoint.as_bytes())
    }
}

/// `*` matches any run of characters; everything else matches itself.
pub(crate) fn glob(pattern: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while i < s.len() {
        if p < pattern.len() && pattern[p] != b'*' && pattern[p] == s[i] {
            p += 1;
            i += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some(p);
            mark = i;
            p += 1;
        } else if let Some(sp) = star {
            p = sp + 1;
            mark += 1;
            i = mark;
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|c| *c == b'*')
}

/// One wanted observation of a client.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Wanted {
    pub(crate) paths: Vec<Path>,
    pub(crate) composite: bool,
    pub(crate) attributes: Option<Attributes>,
    pub(crate) class: MessageClass,
    /// Started by an operator (carried over to a new registration).
    pub(crate) manual: bool,
}

impl Wanted {
    fn key(&self) -> String {
        let p: Vec<String> = self.paths.iter().map(ToString::to_string).collect();
        if self.composite {
            format!("composite:{}", p.join(","))
        } else {
            p.join(",")
        }
    }
}

#[derive(Debug)]
struct Running {
    stop: CancellationToken,
    /// Token of the current observation, once established.
    token: Option<Token>,
}

/// A client's observations: the manual ones wanted, and those running.
#[derive(Debug, Default)]
pub(crate) struct Observations {
    manual: Vec<Wanted>,
    running: HashMap<String, Running>,
}

impl Observations {
    pub(crate) fn paths(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .running
            .iter()
            .filter(|(_, r)| r.token.is_some())
            .map(|(k, _)| k.clone())
            .collect();
        v.sort();
        v
    }

    /// The operator-started observations, for a new registration of the same endpoint.
    pub(crate) fn manual(&self) -> Vec<Wanted> {
        self.manual.clone()
    }

    /// Stops every running observation so that `ensure` makes them again (the client moved to
    /// another address).
    pub(crate) fn restart(&mut self) {
        for (_, r) in self.running.drain() {
            r.stop.cancel();
        }
    }

    pub(crate) fn with_manual(manual: Vec<Wanted>) -> Observations {
        Observations {
            manual,
            running: HashMap::new(),
        }
    }
}

fn wanted_for(
    server: &Server,
    endpoint: &str,
    composite_ok: bool,
    manual: &[Wanted],
) -> Vec<Wanted> {
    let mut out = Vec::new();
    for rule in server
        .settings()
        .observe
        .iter()
        .filter(|r| r.matches(endpoint))
    {
        let one = |paths: Vec<Path>, composite| Wanted {
            paths,
            composite,
            attributes: rule.attributes.clone(),
            class: rule.class,
            manual: false,
        };
        if rule.composite && composite_ok && rule.paths.len() > 1 {
            out.push(one(rule.paths.clone(), true));
        } else {
            out.extend(rule.paths.iter().map(|p| one(vec![*p], false)));
        }
    }
    out.extend(manual.iter().cloned());
    out
}

/// Starts every wanted observation of registration `id` that is not running.
pub(crate) fn ensure(server: &Server, id: &str) {
    let Some((endpoint, to_start)) = server.with_client(id, |c| {
        let composite_ok = c.reg.version != crate::registration::Version::V1_0 && !c.no_composite;
        let wanted = wanted_for(
            server,
            &c.reg.endpoint,
            composite_ok,
            &c.observations.manual,
        );
        let mut start = Vec::new();
        for w in wanted {
            let key = w.key();
            if c.observations.running.contains_key(&key) {
                continue;
            }
            let stop = CancellationToken::new();
            c.observations.running.insert(
                key.clone(),
                Running {
                    stop: stop.clone(),
                    token: None,
                },
            );
            start.push((key, w, stop));
        }
        (c.reg.endpoint.clone(), start)
    }) else {
        return;
    };
    for (key, w, stop) in to_start {
        let s = server.clone();
        let id = id.to_owned();
        let endpoint = endpoint.clone();
        tokio::spawn(async move {
            let composite_failed = observe_loop(&s, &id, &endpoint, &key, &w, &stop).await;
            s.with_client(&id, |c| {
                if c.observations
                    .running
                    .get(&key)
                    .is_some_and(|r| r.stop == stop)
                {
                    c.observations.running.remove(&key);
                }
                if composite_failed {
                    c.no_composite = true;
                }
            });
            if composite_failed && !stop.is_cancelled() {
                tracing::warn!(
                    endpoint,
                    observation = key,
                    "the LwM2M client did not establish an Observe-Composite; observing its paths one by one"
                );
                ensure(&s, &id);
            }
        });
    }
}

enum Ended {
    /// The registration ended or the observation was cancelled.
    Stopped,
    /// Nothing arrived for the silence limit.
    Silent,
    /// The client ended it (error, RST, response without Observe).
    ByClient,
    /// It could not be established (error answer, no route, timeout).
    Failed(OpError),
}

/// Keeps one observation established until it is stopped. Returns true when a composite
/// observation could not be established (the caller falls back to one per path).
async fn observe_loop(
    server: &Server,
    id: &str,
    endpoint: &str,
    key: &str,
    w: &Wanted,
    stop: &CancellationToken,
) -> bool {
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    let mut reason = "ok";
    loop {
        if stop.is_cancelled() {
            return false;
        }
        let ended = observe_once(server, id, endpoint, key, w, stop, reason).await;
        let delay = match ended {
            Ended::Stopped => return false,
            Ended::Silent => {
                tracing::info!(
                    endpoint,
                    observation = key,
                    "LwM2M observation went silent past 2 × pmax; re-establishing it"
                );
                reason = "silent";
                Duration::ZERO
            }
            Ended::ByClient => {
                reason = "restarted";
                backoff.next_delay()
            }
            Ended::Failed(e) => {
                server.metrics().observation("failed");
                if w.composite && !w.manual {
                    return true;
                }
                tracing::warn!(endpoint, observation = key, error = %e, "could not observe on the LwM2M client; retrying when it next updates its registration");
                return false;
            }
        };
        // Only while the client is awake: a sleeping client gets its observations back when it
        // next talks (ensure runs on every Update).
        let awake = server
            .client(endpoint)
            .is_some_and(|c| c.awake && c.registration.id == id);
        if !awake {
            return false;
        }
        tokio::select! {
            _ = stop.cancelled() => return false,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn observe_once(
    server: &Server,
    id: &str,
    endpoint: &str,
    key: &str,
    w: &Wanted,
    stop: &CancellationToken,
    reason: &'static str,
) -> Ended {
    if let Some(a) = &w.attributes {
        for p in &w.paths {
            if let Err(e) = server.write_attributes(endpoint, *p, a).await {
                // Clients may refuse attributes they do not support; the observation still
                // works with the client's defaults.
                tracing::warn!(endpoint, path = %p, error = %e, "Write-Attributes before observing failed; observing with the client's defaults");
            }
        }
    }
    // Only what the observation needs of the registration is kept for its lifetime.
    let (requester, addr, fallbacks, root) = match server.route(endpoint) {
        Ok((r, a, reg)) => (r, a, reg.fallback_formats(), reg.objects.root.clone()),
        Err(e) => return Ended::Failed(e),
    };
    // The formats to try: a composite observation has one; a single one starts with the
    // client's (negotiated) format and falls back like a Read when the client answers 4.06.
    let formats: Vec<Format> = if w.composite {
        match server.composite_format(endpoint, None) {
            Ok(f) => vec![f],
            Err(e) => return Ended::Failed(e),
        }
    } else {
        let first = server.format_for(endpoint).unwrap_or(Format::Tlv);
        std::iter::once(first)
            .chain(fallbacks.iter().copied().filter(|f| *f != first))
            .collect()
    };
    let base = if w.composite {
        Path::ROOT
    } else {
        w.paths.first().copied().unwrap_or(Path::ROOT)
    };
    let mut established = None;
    let mut last_refusal = None;
    for (i, fmt) in formats.iter().enumerate() {
        let mut req = if w.composite {
            let (body_format, body) = match crate::ops::paths_body(*fmt, &w.paths) {
                Ok(b) => b,
                Err(e) => return Ended::Failed(e),
            };
            ClientRequest::new(Code::FETCH, "")
                .content_format(body_format.coap_number())
                .accept(fmt.coap_number())
                .payload(body)
        } else {
            ClientRequest::get(base.to_string()).accept(fmt.coap_number())
        };
        prefix(&mut req, &root);
        // The client's address came from its Register: over plain UDP it may be spoofed, and
        // the layer holds what goes there to 3× what came from there until the client answers.
        req.validate_address = !server.address_proven(addr);
        // Bounded: the registration and its first answer (a client that never answers a FETCH,
        // as one without composite support may do, fails here instead of hanging).
        let first = tokio::select! {
            _ = stop.cancelled() => return Ended::Stopped,
            r = tokio::time::timeout(server.settings().request_timeout, async {
                let mut obs = requester.observe(addr, req.clone()).await?;
                let first = obs.notifications.recv().await;
                Ok::<_, wardgate_coap::CoapError>((obs, first))
            }) => r,
        };
        let (obs, first) = match first {
            Ok(Ok((obs, Some(first)))) => (obs, first),
            Ok(Ok((obs, None))) => {
                requester.forget(obs.token).await;
                return Ended::Failed(OpError::Timeout);
            }
            Ok(Err(e)) => return Ended::Failed(e.into()),
            Err(_) => return Ended::Failed(OpError::Timeout),
        };
        // Any answer proves the client receives at its address.
        server.answered_from(addr);
        let code = first.response.code();
        if code.is_success() {
            if i > 0 {
                tracing::info!(endpoint, format = ?fmt, "LwM2M client refused its preferred format for an observation; using this one from now on");
                server.remember_format(endpoint, *fmt);
            }
            established = Some((obs, first, req));
            break;
        }
        if let Some(a) = first.ack {
            a.accept();
        }
        requester.forget(obs.token).await;
        if code != Code::NOT_ACCEPTABLE {
            return Ended::Failed(OpError::Client {
                code: code.to_string(),
                diagnostic: None,
            });
        }
        last_refusal = Some(code);
    }
    let Some((mut obs, first, req)) = established else {
        return Ended::Failed(OpError::Client {
            code: last_refusal.unwrap_or(Code::NOT_ACCEPTABLE).to_string(),
            diagnostic: Some("no content format the client accepts".into()),
        });
    };
    let silence = w
        .attributes
        .as_ref()
        .and_then(|a| a.pmax)
        .map(|p| Duration::from_secs(u64::from(p) * 2 + 30));
    let token = obs.token;
    server.metrics().observation(reason);
    server.metrics().active_observations.inc();
    server.with_client(id, |c| {
        if let Some(r) = c.observations.running.get_mut(key) {
            r.token = Some(token);
        }
    });
    tracing::debug!(endpoint, observation = key, "LwM2M observation established");
    let fetch = Refetch {
        requester: &requester,
        addr,
        req: &req,
    };
    server.touch(id);
    notification(server, endpoint, &base, w.class, first, &fetch).await;
    loop {
        let deadline = silence.map(|s| Instant::now() + s);
        let next = tokio::select! {
            _ = stop.cancelled() => {
                requester.forget(token).await;
                finish(server);
                return Ended::Stopped;
            }
            _ = sleep_until(deadline) => {
                requester.forget(token).await;
                finish(server);
                server.metrics().observation("silent");
                return Ended::Silent;
            }
            n = obs.notifications.recv() => n,
        };
        let Some(n) = next else {
            finish(server);
            return Ended::ByClient;
        };
        if !n.response.code().is_success() {
            if let Some(a) = n.ack {
                a.accept();
            }
            finish(server);
            return Ended::ByClient;
        }
        server.touch(id);
        notification(server, endpoint, &base, w.class, n, &fetch).await;
    }
}

/// How to fetch a whole representation when a notification carries only its first Block2
/// block (RFC 7959 §3.4: the client asks for the rest; a fresh request without Observe gets
/// the whole current representation, block-wise through the CoAP client).
struct Refetch<'a> {
    requester: &'a wardgate_coap::Requester,
    addr: std::net::SocketAddr,
    req: &'a ClientRequest,
}

impl Refetch<'_> {
    async fn whole(&self) -> Result<wardgate_coap::ClientResponse, OpError> {
        let mut req = self.req.clone();
        req.observe = None;
        req.token = None;
        Ok(self.requester.request(self.addr, req).await?)
    }
}

fn finish(server: &Server) {
    server.metrics().active_observations.dec();
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn prefix(req: &mut ClientRequest, root: &str) {
    let root: Vec<String> = root
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if !root.is_empty() {
        let mut p = root;
        p.append(&mut req.path);
        req.path = p;
    }
}

/// One notification (or the observation's first answer) to a reading.
async fn notification(
    server: &Server,
    endpoint: &str,
    base: &Path,
    class: MessageClass,
    n: Box<Notification>,
    fetch: &Refetch<'_>,
) {
    let Some((peer, reg)) = server.peer_of(endpoint) else {
        return;
    };
    let Notification { response, ack } = *n;
    // Acknowledges a Confirmable notification (`true`) or leaves it unacknowledged so the
    // client retransmits it (`false`).
    let settle = |accept: bool| {
        if let Some(a) = ack {
            if accept { a.accept() } else { a.reject() }
        }
    };
    let whole;
    let response = if response.block2().is_some_and(|b| b.more) {
        match fetch.whole().await {
            Ok(r) if r.is_success() => {
                whole = r;
                &whole
            }
            Ok(r) => {
                server.metrics().notification("block2_failed");
                tracing::warn!(endpoint, path = %base, code = %r.code(), "could not fetch the rest of a block-wise notification; acknowledged and dropped");
                settle(true);
                return;
            }
            Err(e) => {
                server.metrics().notification("block2_failed");
                tracing::warn!(endpoint, path = %base, error = %e, "could not fetch the rest of a block-wise notification; not acknowledged");
                settle(false);
                return;
            }
        }
    } else {
        &response
    };
    let entries: Vec<Entry> = match decode_answer(server, base, response) {
        Ok(e) if !e.is_empty() => e,
        Ok(_) => {
            server.metrics().notification("empty");
            settle(true);
            return;
        }
        Err(e) => {
            server.metrics().notification("undecodable");
            tracing::warn!(endpoint, path = %base, error = %e, "LwM2M notification could not be decoded; acknowledged and dropped");
            settle(true);
            return;
        }
    };
    // The registry names LwM2M notifications `lwm2m/<path>` (its default ACL allows `lwm2m/*`).
    let resource = format!("/lwm2m{base}");
    let pending = server.submit(&peer, &reg, &resource, class, &entries);
    let verdict = match pending {
        Ok(p) => p.await.map(|_| ()),
        Err(e) => Err(e),
    };
    match verdict {
        Ok(()) => {
            server.metrics().notification("accepted");
            settle(true);
        }
        Err(e) if e.is_retryable() => {
            server.metrics().notification("busy");
            settle(false);
        }
        Err(e) => {
            server.metrics().notification(e.reason());
            tracing::warn!(endpoint, path = %base, error = %e, "LwM2M notification refused by the ingest pipeline");
            settle(true);
        }
    }
}

impl Server {
    /// Starts observing `paths` on `endpoint` (one observation, composite when several paths),
    /// its notifications becoming readings of `class`. It is kept established like the
    /// configured ones, and carried over when the client re-registers.
    pub fn observe(
        &self,
        endpoint: &str,
        paths: Vec<Path>,
        attributes: Option<Attributes>,
        class: MessageClass,
    ) -> Result<(), OpError> {
        if paths.is_empty() || paths.iter().any(Path::is_empty) {
            return Err(OpError::Invalid(
                "observe needs at least one non-root path".into(),
            ));
        }
        let composite = paths.len() > 1;
        if composite {
            self.composite_format(endpoint, None)?;
        }
        let w = Wanted {
            paths,
            composite,
            attributes,
            class,
            manual: true,
        };
        let id = self
            .with_endpoint(endpoint, |c| {
                if !c.observations.manual.contains(&w) {
                    if c.observations.manual.len() >= MAX_MANUAL_OBSERVATIONS {
                        return Err(OpError::Invalid(format!(
                            "the client already has {MAX_MANUAL_OBSERVATIONS} observations started through the API; cancel one first"
                        )));
                    }
                    c.observations.manual.push(w.clone());
                }
                Ok(c.reg.id.clone())
            })
            .ok_or_else(|| OpError::UnknownClient(endpoint.to_owned()))??;
        ensure(self, &id);
        Ok(())
    }

    /// Stops the observation of `paths` on `endpoint` (manual or configured) and cancels it on
    /// the client (GET with Observe=1). Configured observations come back on the next Update.
    pub async fn cancel_observation(
        &self,
        endpoint: &str,
        paths: &[Path],
    ) -> Result<bool, OpError> {
        let key = Wanted {
            paths: paths.to_vec(),
            composite: paths.len() > 1,
            attributes: None,
            class: MessageClass::Vital,
            manual: true,
        }
        .key();
        let running = self
            .with_endpoint(endpoint, |c| {
                c.observations.manual.retain(|w| w.key() != key);
                c.observations.running.remove(&key)
            })
            .ok_or_else(|| OpError::UnknownClient(endpoint.to_owned()))?;
        let Some(r) = running else {
            return Ok(false);
        };
        r.stop.cancel();
        if let (Some(token), Ok((requester, addr, reg))) = (r.token, self.route(endpoint)) {
            // Cancel actively (RFC 7641 §3.6): the registration request again with Observe=1 —
            // a GET, or for a composite observation the same FETCH.
            let req = if let [path] = paths {
                Some(ClientRequest::get(path.to_string()))
            } else {
                self.composite_format(endpoint, None)
                    .ok()
                    .and_then(|f| crate::ops::paths_body(f, paths).ok().map(|b| (f, b)))
                    .map(|(f, (body_format, body))| {
                        ClientRequest::new(Code::FETCH, "")
                            .content_format(body_format.coap_number())
                            .accept(f.coap_number())
                            .payload(body)
                    })
            };
            if let Some(mut req) = req {
                prefix(&mut req, &reg.objects.root);
                req.validate_address = !self.address_proven(addr);
                let _ = requester.cancel_observation(addr, req, token).await;
            }
            requester.forget(token).await;
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_patterns_match_with_wildcards() {
        let m = |p: &str, s: &str| glob(p.as_bytes(), s.as_bytes());
        assert!(m("*", "bed-12"));
        assert!(m("bed-*", "bed-12"));
        assert!(m("bed-12", "bed-12"));
        assert!(m("*-12", "bed-12"));
        assert!(m("b*d*2", "bed-12"));
        assert!(!m("bed-*", "pump-1"));
        assert!(!m("bed-1", "bed-12"));
        assert!(m("", ""));
        assert!(!m("", "x"));
    }

    #[test]
    fn wanted_keys_tell_composite_from_single() {
        let w = Wanted {
            paths: vec![Path::resource(3303, 0, 5700), Path::resource(3304, 0, 5700)],
            composite: true,
            attributes: None,
            class: MessageClass::Vital,
            manual: false,
        };
        assert_eq!(w.key(), "composite:/3303/0/5700,/3304/0/5700");
        let single = Wanted {
            composite: false,
            ..w
        };
        assert_eq!(single.key(), "/3303/0/5700,/3304/0/5700");
    }
}
