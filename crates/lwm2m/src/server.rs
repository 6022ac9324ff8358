//! The LwM2M server's state and its operations on clients.
//!
//! [`Server`] is cheap to clone. The CoAP resources (`/rd`, `/dp`, in `resource.rs`) call its
//! synchronous entry points from the socket tasks (short critical sections on one mutex, never
//! an await); the admin API and the observation tasks call its async operations, which send
//! requests to the client over the socket it registered on.
//!
//! Queue mode (TS Core §6.5, Transport §6.6): a client in queue mode is reachable only for
//! `awake_window` after it last sent something (a Register, an Update, a Send, a notification).
//! An operation for a sleeping client waits in that client's bounded queue (`queue_limit`, else
//! [`OpError::QueueFull`]) and goes out, in order, the next time the client talks to the server;
//! if the client does not wake within `queue_timeout` the caller gets [`OpError::Timeout`].
//!
//! Observations: see `observe.rs`. On every Register and Update (and the first message from a
//! client after a gateway restart) the server makes sure the observations the configuration
//! asks for exist, so a rebooted device, a new DTLS session or a gateway restart never leaves a
//! sensor unobserved (Leshan issue #848).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use rand::Rng;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use wardgate_coap::{ClientRequest, ClientResponse, CoapError, Code, Requester};
use wardgate_core::{
    Authorizer, CredentialStore, IngestPipeline, MessageClass, NoCredentials, PeerContext,
    Protocol, Record, RecordSubmission, Refused, TransportKind,
};

use crate::bootstrap::BootstrapConfig;
use crate::format::{self, Format, FormatError};
use crate::link::ObjectList;
use crate::metrics::Lwm2mMetrics;
use crate::model::ObjectModel;
use crate::node::{Entry, Path, Value};
use crate::observe::{Observations, ObserveRule};
use crate::persist::RegistrationStore;
use crate::registration::{RegisterParams, Registration, UpdateParams};

/// Server settings (`[lwm2m]`).
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long a queue-mode client stays reachable after it last talked (TS Transport §6.6:
    /// by default CoAP's MAX_TRANSMIT_WAIT, 93 s).
    pub awake_window: Duration,
    /// Operations waiting per sleeping client.
    pub queue_limit: usize,
    /// How long a queued operation waits for its client to wake.
    pub queue_timeout: Duration,
    /// How long one request to a client may take (retransmissions and a separate response
    /// included).
    pub request_timeout: Duration,
    /// Most registered clients; a Register beyond is 5.03.
    pub max_clients: usize,
    /// Observations the server establishes on every registration.
    pub observe: Vec<ObserveRule>,
    /// Class of readings a client Sends (`/dp`).
    pub send_class: MessageClass,
    /// Bootstrap configurations from `gateway.toml` (the admin API adds its own in front).
    pub bootstrap: Vec<BootstrapConfig>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            awake_window: Duration::from_secs(93),
            queue_limit: 32,
            queue_timeout: Duration::from_secs(24 * 3600),
            request_timeout: Duration::from_secs(100),
            max_clients: 100_000,
            observe: Vec::new(),
            send_class: MessageClass::Vital,
            bootstrap: Vec::new(),
        }
    }
}

/// Most bootstrap configurations managed through the admin API.
pub const MAX_BOOTSTRAP_CONFIGS: usize = 1000;

/// Why an operation on a client failed. The admin API maps these to HTTP statuses.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// No registration for that endpoint.
    #[error("no client registered as {0:?}")]
    UnknownClient(String),
    /// The client answered with an error code.
    #[error("the client answered {code}")]
    Client {
        /// Its answer (e.g. 4.04, 4.05, 4.06).
        code: String,
        /// Its diagnostic payload, if text.
        diagnostic: Option<String>,
    },
    /// The request could not be sent or got no answer.
    #[error("request failed: {0}")]
    Coap(#[from] CoapError),
    /// No answer in time (or the sleeping client did not wake in time).
    #[error("the client did not answer in time")]
    Timeout,
    /// The client's queue of waiting operations is full.
    #[error("the client is asleep and its queue of {0} operations is full")]
    QueueFull(usize),
    /// The client registered over a transport the server cannot send on (not attached).
    #[error("no socket to reach {0} over {1}")]
    NoRoute(SocketAddr, &'static str),
    /// The answer or the request content does not encode/decode.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// The client's registration ended while the operation waited.
    #[error("the client deregistered")]
    Gone,
    /// The operation is not valid as asked (e.g. Execute on an object path).
    #[error("{0}")]
    Invalid(String),
}

/// A registered client as the server tracks it.
#[derive(Debug)]
pub(crate) struct Client {
    /// Shared with the persistence queue until written (an Update copies it only then).
    pub(crate) reg: Arc<Registration>,
    /// The last peer context the client talked with (address, identity).
    pub(crate) peer: PeerContext,
    /// When it last talked to the server (queue mode).
    pub(crate) last_seen: Instant,
    /// Whether it talked since this registration was loaded (false after a gateway restart).
    pub(crate) seen: bool,
    /// Operations waiting for it to wake.
    queue: VecDeque<Queued>,
    /// Whether a task is sending the queue.
    flushing: bool,
    /// The client did not establish an Observe-Composite: composite rules are observed path
    /// by path.
    pub(crate) no_composite: bool,
    pub(crate) observations: Observations,
}

#[derive(Debug)]
struct Queued {
    req: ClientRequest,
    reply: oneshot::Sender<Result<ClientResponse, OpError>>,
}

#[derive(Debug, Default)]
struct State {
    /// Boxed: the table's slots stay small (a few hundred bytes per client otherwise, times the
    /// table's spare capacity).
    by_id: HashMap<RegId, Box<Client>>,
    by_endpoint: HashMap<String, RegId>,
    by_addr: HashMap<SocketAddr, RegId>,
}

#[derive(Debug)]
struct Inner {
    settings: Settings,
    state: Mutex<State>,
    store: RegistrationStore,
    requesters: Mutex<Vec<(TransportKind, SocketAddr, Requester)>>,
    pub(crate) model: Arc<ObjectModel>,
    pipeline: IngestPipeline,
    metrics: Lwm2mMetrics,
    credentials: Mutex<Arc<dyn CredentialStore>>,
    /// Bootstrap configurations added through the admin API (persisted), before the file's.
    bootstrap: Mutex<Vec<BootstrapConfig>>,
}

/// The LwM2M server. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Server {
    inner: Arc<Inner>,
}

/// What a Register did.
#[derive(Debug)]
pub struct Registered {
    /// The new registration id.
    pub id: String,
    /// The registration it replaced (same endpoint), if any.
    pub replaced: Option<String>,
}

/// Why a Register/Update/Send is refused: the CoAP code and a diagnostic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// 4.00, 4.01, 4.03, 4.04, 5.03.
    pub code: Code,
    /// Diagnostic text (no secrets, no payload echo).
    pub reason: String,
    /// Metric label.
    pub label: &'static str,
}

impl Refusal {
    fn new(code: Code, label: &'static str, reason: impl Into<String>) -> Self {
        Refusal {
            code,
            reason: reason.into(),
            label,
        }
    }
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic while holding the lock cannot leave the maps inconsistent in a way worse than
    // losing the server: keep serving with what is there.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Length of a registration id.
const ID_LEN: usize = 10;

/// A registration id held inline (the tables keep one per client three times; as `String`s they
/// cost an allocation each). Looked up by `&str` through `Borrow<str>`, hashing as the `str`.
#[derive(Clone, Copy, PartialEq, Eq)]
struct RegId([u8; ID_LEN]);

impl RegId {
    /// From a generated or restored id; `None` for anything that is not `ID_LEN` ASCII
    /// alphanumerics (such an id was never issued).
    fn new(s: &str) -> Option<RegId> {
        let b: [u8; ID_LEN] = s.as_bytes().try_into().ok()?;
        b.iter().all(u8::is_ascii_alphanumeric).then_some(RegId(b))
    }

    fn as_str(&self) -> &str {
        // Always ASCII (checked in `new`).
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::hash::Hash for RegId {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.as_str().hash(h);
    }
}

impl std::borrow::Borrow<str> for RegId {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Debug for RegId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn new_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..ID_LEN)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

impl Server {
    /// A server over `pipeline` (authorizer, readings), with registrations persisted in `store`
    /// and the ones loaded from it (`loaded`) restored.
    pub fn new(
        settings: Settings,
        pipeline: IngestPipeline,
        model: Arc<ObjectModel>,
        store: RegistrationStore,
        loaded: Vec<Registration>,
        metrics: Lwm2mMetrics,
    ) -> Server {
        let mut state = State::default();
        let now = Instant::now();
        let wall = SystemTime::now();
        for reg in loaded {
            if reg.expires_at() <= wall {
                store.remove(&reg.id);
                continue;
            }
            let Some(rid) = RegId::new(&reg.id) else {
                tracing::warn!(registration = %reg.id, "skipping a stored LwM2M registration whose id this server never issues");
                store.remove(&reg.id);
                continue;
            };
            let peer = PeerContext::new(reg.addr, reg.transport);
            state.by_endpoint.insert(reg.endpoint.clone(), rid);
            state.by_addr.insert(reg.addr, rid);
            state.by_id.insert(
                rid,
                Box::new(Client {
                    peer,
                    last_seen: now,
                    seen: false,
                    queue: VecDeque::new(),
                    flushing: false,
                    no_composite: false,
                    observations: Observations::default(),
                    reg: Arc::new(reg),
                }),
            );
        }
        metrics
            .clients
            .set(i64::try_from(state.by_id.len()).unwrap_or(i64::MAX));
        if !state.by_id.is_empty() {
            tracing::info!(
                clients = state.by_id.len(),
                "restored LwM2M registrations; their observations are re-established when each client next talks"
            );
        }
        let bootstrap = store.bootstrap_configs();
        Server {
            inner: Arc::new(Inner {
                settings,
                state: Mutex::new(state),
                credentials: Mutex::new(Arc::new(NoCredentials)),
                bootstrap: Mutex::new(bootstrap),
                store,
                requesters: Mutex::new(Vec::new()),
                model,
                pipeline,
                metrics,
            }),
        }
    }

    /// Lets the server send requests over a socket of `kind` bound to `local` (call once per
    /// endpoint socket, before clients register).
    pub fn attach(&self, kind: TransportKind, local: SocketAddr, requester: Requester) {
        if let Ok(mut r) = self.inner.requesters.lock() {
            r.push((kind, local, requester));
        }
    }

    pub(crate) fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    pub(crate) fn metrics(&self) -> &Lwm2mMetrics {
        &self.inner.metrics
    }

    pub(crate) fn model(&self) -> &ObjectModel {
        &self.inner.model
    }

    pub(crate) fn pipeline_authorizer(&self) -> &Arc<dyn Authorizer> {
        self.inner.pipeline.authorizer()
    }

    pub(crate) fn credentials(&self) -> Arc<dyn CredentialStore> {
        self.inner
            .credentials
            .lock()
            .map(|c| c.clone())
            .unwrap_or_else(|_| Arc::new(NoCredentials))
    }

    pub(crate) fn replace_credentials(&self, c: Arc<dyn CredentialStore>) {
        if let Ok(mut g) = self.inner.credentials.lock() {
            *g = c;
        }
    }

    /// Every bootstrap configuration in the order they are tried: the admin API's, then the
    /// file's.
    pub fn bootstrap_configs(&self) -> Vec<BootstrapConfig> {
        let mut v = self
            .inner
            .bootstrap
            .lock()
            .map(|b| b.clone())
            .unwrap_or_default();
        v.extend(self.inner.settings.bootstrap.iter().cloned());
        v
    }

    /// The bootstrap configurations managed through the admin API.
    pub fn managed_bootstrap_configs(&self) -> Vec<BootstrapConfig> {
        self.inner
            .bootstrap
            .lock()
            .map(|b| b.clone())
            .unwrap_or_default()
    }

    /// Adds or replaces (same endpoint pattern) a managed bootstrap configuration; persisted.
    /// Returns whether it replaced one.
    pub fn put_bootstrap_config(&self, cfg: BootstrapConfig) -> Result<bool, OpError> {
        if let Some((field, msg)) = cfg.problems().into_iter().next() {
            return Err(OpError::Invalid(format!("{field} {msg}")));
        }
        let mut b = self
            .inner
            .bootstrap
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let full = b.len() >= MAX_BOOTSTRAP_CONFIGS;
        let replaced = match b.iter_mut().find(|c| c.endpoint == cfg.endpoint) {
            Some(c) => {
                *c = cfg;
                true
            }
            None if full => {
                return Err(OpError::Invalid(format!(
                    "at most {MAX_BOOTSTRAP_CONFIGS} bootstrap configurations can be managed through the API"
                )));
            }
            None => {
                b.push(cfg);
                false
            }
        };
        self.inner.store.put_bootstrap(&b);
        Ok(replaced)
    }

    /// Removes the managed bootstrap configuration for `endpoint_pattern`; persisted.
    pub fn remove_bootstrap_config(&self, endpoint_pattern: &str) -> bool {
        let mut b = self
            .inner
            .bootstrap
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = b.len();
        b.retain(|c| c.endpoint != endpoint_pattern);
        let removed = b.len() != before;
        if removed {
            self.inner.store.put_bootstrap(&b);
        }
        removed
    }

    /// Sends `req` to `addr` over `kind` at once (bootstrap: the client is not registered).
    pub(crate) async fn send_direct(
        &self,
        kind: TransportKind,
        addr: SocketAddr,
        req: ClientRequest,
    ) -> Result<ClientResponse, OpError> {
        self.send_now(kind, addr, req).await
    }

    fn requester(&self, kind: TransportKind, addr: SocketAddr) -> Option<Requester> {
        let r = self.inner.requesters.lock().ok()?;
        r.iter()
            .find(|(k, local, _)| *k == kind && local.is_ipv4() == addr.is_ipv4())
            .map(|(_, _, r)| r.clone())
    }

    // ---- the Registration interface (called from the socket tasks) ----

    /// A Register from `peer`. Authorizes the endpoint name against what the transport proved,
    /// replaces an earlier registration of the same endpoint, persists it.
    pub fn register(
        &self,
        peer: &PeerContext,
        params: RegisterParams,
        objects: ObjectList,
    ) -> Result<Registered, Refusal> {
        let device = self
            .inner
            .pipeline
            .authorizer()
            .authorize(&wardgate_core::AuthRequest {
                peer,
                protocol: Protocol::Lwm2m,
                claimed_device: &params.endpoint,
                class: MessageClass::Telemetry,
                resource: "/rd",
                action: wardgate_core::Action::Register,
            })
            .map_err(|d| match d {
                wardgate_core::Denied::Unauthenticated(_) => {
                    Refusal::new(Code::UNAUTHORIZED, "unauthenticated", d.to_string())
                }
                wardgate_core::Denied::Forbidden(_) => {
                    Refusal::new(Code::FORBIDDEN, "forbidden", d.to_string())
                }
            })?;
        let now = SystemTime::now();
        let mut st = lock(&self.inner.state);
        let replaced = st.by_endpoint.get(&params.endpoint).copied();
        if replaced.is_none() && st.by_id.len() >= self.inner.settings.max_clients {
            return Err(Refusal::new(
                Code::SERVICE_UNAVAILABLE,
                "too_many_clients",
                "the server holds its maximum number of registrations",
            ));
        }
        // Observations an operator started survive a re-registration (the client forgot them;
        // the server starts them again).
        let manual = replaced
            .as_ref()
            .and_then(|old| st.by_id.get(old))
            .map(|c| c.observations.manual())
            .unwrap_or_default();
        if let Some(old) = &replaced {
            self.remove_locked(&mut st, old.as_str());
        }
        let (id, rid) = loop {
            let id = new_id();
            match RegId::new(&id) {
                Some(rid) if !st.by_id.contains_key(id.as_str()) => break (id, rid),
                _ => {}
            }
        };
        let reg = Registration {
            id: id.clone(),
            endpoint: params.endpoint,
            device,
            version: params.version,
            lifetime: params.lifetime,
            binding: params.binding,
            queue_mode: params.queue_mode,
            sms: params.sms,
            objects,
            addr: peer.addr,
            transport: peer.transport,
            identity: peer.identity.as_ref().map(ToString::to_string),
            registered_at: now,
            updated_at: now,
            format: None,
            address_proven: peer.identity.is_some(),
        };
        let reg = Arc::new(reg);
        self.inner.store.put(&reg);
        if let Some(other) = st.by_addr.insert(peer.addr, rid) {
            // Another endpoint registered from this address earlier (a NAT reusing a port):
            // the address now belongs to the new one.
            tracing::debug!(registration = other.as_str(), addr = %peer.addr, "address taken over by a new registration");
        }
        st.by_endpoint.insert(reg.endpoint.clone(), rid);
        tracing::info!(
            endpoint = %reg.endpoint, registration = %id, version = reg.version.as_str(),
            lifetime_s = reg.lifetime.as_secs(), queue = reg.queue_mode, addr = %peer.addr,
            replaced = replaced.is_some(), "LwM2M client registered"
        );
        st.by_id.insert(
            rid,
            Box::new(Client {
                reg,
                peer: peer.clone(),
                last_seen: Instant::now(),
                seen: true,
                queue: VecDeque::new(),
                flushing: false,
                no_composite: false,
                observations: Observations::with_manual(manual),
            }),
        );
        self.inner
            .metrics
            .clients
            .set(i64::try_from(st.by_id.len()).unwrap_or(i64::MAX));
        Ok(Registered {
            id,
            replaced: replaced.map(|r| r.as_str().to_owned()),
        })
    }

    /// An Update of registration `id` from `peer`.
    pub fn update(
        &self,
        peer: &PeerContext,
        id: &str,
        params: UpdateParams,
        objects: Option<ObjectList>,
    ) -> Result<(), Refusal> {
        let mut st = lock(&self.inner.state);
        let Some(c) = st.by_id.get_mut(id) else {
            return Err(Refusal::new(
                Code::NOT_FOUND,
                "unknown_registration",
                "no such registration",
            ));
        };
        same_identity(&c.reg, peer)?;
        let old_addr = c.reg.addr;
        // A new DTLS session (the client handshook again, e.g. after a reboot that kept its
        // registration): observations are bound to the old one, so they are made again.
        let new_session =
            peer.session.is_some() && c.peer.session.is_some() && peer.session != c.peer.session;
        if new_session && old_addr == peer.addr {
            c.observations.restart();
            tracing::info!(registration = %id, "LwM2M client in a new DTLS session; its observations are made again");
        }
        let reg = Arc::make_mut(&mut c.reg);
        if let Some(lt) = params.lifetime {
            reg.lifetime = lt;
        }
        if let Some(b) = params.binding {
            reg.binding = b;
        }
        if let Some(q) = params.queue_mode {
            reg.queue_mode = q;
        }
        if params.sms.is_some() {
            reg.sms = params.sms;
        }
        if let Some(o) = objects {
            reg.objects = o;
        }
        if reg.addr != peer.addr || peer.identity.is_some() {
            reg.address_proven = peer.identity.is_some();
        }
        reg.addr = peer.addr;
        reg.transport = peer.transport;
        reg.updated_at = SystemTime::now();
        c.peer = peer.clone();
        c.last_seen = Instant::now();
        c.seen = true;
        self.inner.store.put(&c.reg);
        tracing::debug!(registration = %id, endpoint = %c.reg.endpoint, lifetime_s = c.reg.lifetime.as_secs(), "LwM2M registration updated");
        if old_addr != peer.addr {
            // An observation is bound to the address it was made with (its notifications from
            // the new one would be answered RST): make them again from the new address.
            c.observations.restart();
            tracing::info!(registration = %id, from = %old_addr, to = %peer.addr, "LwM2M client changed address; its observations are made again");
            st.by_addr.remove(&old_addr);
            if let Some(rid) = RegId::new(id) {
                st.by_addr.insert(peer.addr, rid);
            }
        }
        Ok(())
    }

    /// A De-register of registration `id` from `peer`.
    pub fn deregister(&self, peer: &PeerContext, id: &str) -> Result<(), Refusal> {
        let mut st = lock(&self.inner.state);
        let Some(c) = st.by_id.get(id) else {
            return Err(Refusal::new(
                Code::NOT_FOUND,
                "unknown_registration",
                "no such registration",
            ));
        };
        same_identity(&c.reg, peer)?;
        tracing::info!(registration = %id, endpoint = %c.reg.endpoint, "LwM2M client deregistered");
        self.remove_locked(&mut st, id);
        Ok(())
    }

    fn remove_locked(&self, st: &mut State, id: &str) {
        if let Some(c) = st.by_id.remove(id) {
            let mut c = c;
            c.observations.restart();
            if st.by_endpoint.get(&c.reg.endpoint).map(RegId::as_str) == Some(id) {
                st.by_endpoint.remove(&c.reg.endpoint);
            }
            if st.by_addr.get(&c.reg.addr).map(RegId::as_str) == Some(id) {
                st.by_addr.remove(&c.reg.addr);
            }
            for q in c.queue {
                let _ = q.reply.send(Err(OpError::Gone));
            }
            self.inner.store.remove(id);
            self.inner
                .metrics
                .clients
                .set(i64::try_from(st.by_id.len()).unwrap_or(i64::MAX));
        }
    }

    /// Ends every registration whose lifetime passed without an Update. Returns how many.
    pub fn expire(&self, now: SystemTime) -> usize {
        let mut st = lock(&self.inner.state);
        let expired: Vec<String> = st
            .by_id
            .values()
            .filter(|c| c.reg.expires_at() <= now)
            .map(|c| c.reg.id.clone())
            .collect();
        for id in &expired {
            if let Some(c) = st.by_id.get(id.as_str()) {
                tracing::info!(registration = %id, endpoint = %c.reg.endpoint, "LwM2M registration expired (no Update within its lifetime)");
            }
            self.remove_locked(&mut st, id);
            self.inner.metrics.expired.inc();
        }
        expired.len()
    }

    /// Runs the expiry timer until `shutdown`, then writes what is pending.
    ///
    /// First, the clients restored from disk that are always reachable (not in queue mode) get
    /// their observations back at once: after a restart their notifications carry tokens the
    /// new process does not know (answered RST), so waiting for their next Update could leave
    /// a sensor unread for hours.
    pub async fn run(self, shutdown: CancellationToken) {
        let restored: Vec<String> = lock(&self.inner.state)
            .by_id
            .values()
            .filter(|c| !c.seen && !c.reg.queue_mode)
            .map(|c| c.reg.id.clone())
            .collect();
        for id in &restored {
            crate::observe::ensure(&self, id);
        }
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => { self.expire(SystemTime::now()); }
            }
        }
        for c in lock(&self.inner.state).by_id.values_mut() {
            c.observations.restart();
        }
        let inner = self.inner.clone();
        let _ = tokio::task::spawn_blocking(move || inner.store.flush()).await;
    }

    /// Blocks until every registration change so far is persisted (tests, shutdown).
    pub fn flush(&self) {
        self.inner.store.flush();
    }

    /// Marks registration `id` as having just talked (a notification).
    pub(crate) fn touch(&self, id: &str) {
        self.with_client(id, |c| c.last_seen = Instant::now());
    }

    /// The peer context and registration of `endpoint`.
    pub(crate) fn peer_of(&self, endpoint: &str) -> Option<(PeerContext, Arc<Registration>)> {
        self.with_endpoint(endpoint, |c| (c.peer.clone(), c.reg.clone()))
    }

    /// The client (registration id) talking from `addr`, if it is registered; marks it seen.
    pub(crate) fn client_at(&self, peer: &PeerContext) -> Option<(String, Arc<Registration>)> {
        let mut st = lock(&self.inner.state);
        let id = *st.by_addr.get(&peer.addr)?;
        let c = st.by_id.get_mut(&id)?;
        same_identity(&c.reg, peer).ok()?;
        c.peer = peer.clone();
        c.last_seen = Instant::now();
        Some((id.as_str().to_owned(), c.reg.clone()))
    }

    /// Called after the client with registration `id` talked to the server (its request was
    /// answered): sends what waited for it and makes sure its observations exist.
    pub(crate) fn woke(&self, id: &str) {
        let flush = {
            let mut st = lock(&self.inner.state);
            let Some(c) = st.by_id.get_mut(id) else {
                return;
            };
            c.last_seen = Instant::now();
            c.seen = true;
            let flush = !c.flushing && !c.queue.is_empty();
            if flush {
                c.flushing = true;
            }
            flush
        };
        if flush {
            let s = self.clone();
            let id = id.to_owned();
            tokio::spawn(async move { s.flush_queue(&id).await });
        }
        crate::observe::ensure(self, id);
    }

    async fn flush_queue(&self, id: &str) {
        loop {
            let next = {
                let mut st = lock(&self.inner.state);
                let Some(c) = st.by_id.get_mut(id) else {
                    return;
                };
                match c.queue.pop_front() {
                    Some(q) => Some((q, c.reg.transport, c.reg.addr)),
                    None => {
                        c.flushing = false;
                        None
                    }
                }
            };
            let Some((q, kind, addr)) = next else {
                return;
            };
            let r = self.send_now(kind, addr, q.req).await;
            let _ = q.reply.send(r);
        }
    }

    // ---- lookups for the admin API ----

    /// Every registration, sorted by endpoint.
    pub fn clients(&self) -> Vec<ClientInfo> {
        let st = lock(&self.inner.state);
        let now = Instant::now();
        let mut v: Vec<ClientInfo> = st.by_id.values().map(|c| self.info(c, now)).collect();
        v.sort_by(|a, b| a.registration.endpoint.cmp(&b.registration.endpoint));
        v
    }

    /// One client by endpoint name.
    pub fn client(&self, endpoint: &str) -> Option<ClientInfo> {
        let st = lock(&self.inner.state);
        let id = st.by_endpoint.get(endpoint)?;
        st.by_id.get(id).map(|c| self.info(c, Instant::now()))
    }

    fn info(&self, c: &Client, now: Instant) -> ClientInfo {
        ClientInfo {
            registration: Registration::clone(&c.reg),
            last_seen_secs_ago: now.saturating_duration_since(c.last_seen).as_secs(),
            awake: self.awake(c, now),
            queued: c.queue.len(),
            observations: c.observations.paths(),
        }
    }

    fn awake(&self, c: &Client, now: Instant) -> bool {
        !c.reg.queue_mode
            || now.saturating_duration_since(c.last_seen) < self.inner.settings.awake_window
    }

    // ---- sending requests to clients ----

    /// Sends `req` to the client registered as `endpoint`: now, or (queue mode, asleep) when
    /// it next wakes.
    pub(crate) async fn send(
        &self,
        endpoint: &str,
        mut req: ClientRequest,
    ) -> Result<ClientResponse, OpError> {
        let (kind, addr, wait) = {
            let mut st = lock(&self.inner.state);
            let id = st
                .by_endpoint
                .get(endpoint)
                .cloned()
                .ok_or_else(|| OpError::UnknownClient(endpoint.to_owned()))?;
            let now = Instant::now();
            let awake = st.by_id.get(&id).is_some_and(|c| self.awake(c, now));
            let limit = self.inner.settings.queue_limit;
            let c = st
                .by_id
                .get_mut(&id)
                .ok_or_else(|| OpError::UnknownClient(endpoint.to_owned()))?;
            prefix_root(&mut req, &c.reg.objects);
            if awake && c.queue.is_empty() {
                (c.reg.transport, c.reg.addr, None)
            } else {
                if c.queue.len() >= limit {
                    self.inner.metrics.queue_full.inc();
                    return Err(OpError::QueueFull(limit));
                }
                let (tx, rx) = oneshot::channel();
                c.queue.push_back(Queued {
                    req: req.clone(),
                    reply: tx,
                });
                self.inner.metrics.queued.inc();
                (c.reg.transport, c.reg.addr, Some(rx))
            }
        };
        match wait {
            None => self.send_now(kind, addr, req).await,
            Some(rx) => match tokio::time::timeout(self.inner.settings.queue_timeout, rx).await {
                Ok(Ok(r)) => r,
                Ok(Err(_)) => Err(OpError::Gone),
                Err(_) => Err(OpError::Timeout),
            },
        }
    }

    async fn send_now(
        &self,
        kind: TransportKind,
        addr: SocketAddr,
        req: ClientRequest,
    ) -> Result<ClientResponse, OpError> {
        let requester = self
            .requester(kind, addr)
            .ok_or(OpError::NoRoute(addr, kind.as_str()))?;
        let op = op_label(&req);
        let started = Instant::now();
        let mut req = req;
        req.validate_address = !self.address_proven(addr);
        let r = tokio::time::timeout(
            self.inner.settings.request_timeout,
            requester.request(addr, req),
        )
        .await;
        let r = match r {
            Ok(Ok(resp)) => {
                self.answered_from(addr);
                Ok(resp)
            }
            Ok(Err(e)) => Err(OpError::Coap(e)),
            Err(_) => Err(OpError::Timeout),
        };
        self.inner
            .metrics
            .request(op, r.as_ref().map(|x| x.code()), started.elapsed());
        r
    }

    /// Whether the client registered at `addr` proved it receives there. Every address the
    /// server sends to came from a client's message (a Register, a Bootstrap-Request): until
    /// then, what goes there is held to 3× what came from there (`ClientRequest::validate_address`).
    pub(crate) fn address_proven(&self, addr: SocketAddr) -> bool {
        let st = lock(&self.inner.state);
        st.by_addr
            .get(&addr)
            .and_then(|id| st.by_id.get(id))
            .is_some_and(|c| c.reg.addr == addr && c.reg.address_proven)
    }

    /// The client registered at `addr` answered a request of ours there: remembered (and
    /// persisted) as proven.
    pub(crate) fn answered_from(&self, addr: SocketAddr) {
        let store = &self.inner.store;
        let mut st = lock(&self.inner.state);
        let Some(id) = st.by_addr.get(&addr).copied() else {
            return;
        };
        if let Some(c) = st.by_id.get_mut(&id)
            && c.reg.addr == addr
            && !c.reg.address_proven
        {
            Arc::make_mut(&mut c.reg).address_proven = true;
            store.put(&c.reg);
        }
    }

    /// The requester and address to observe the client `endpoint` with (observations are not
    /// queued: they are set up when the client is awake).
    pub(crate) fn route(
        &self,
        endpoint: &str,
    ) -> Result<(Requester, SocketAddr, Arc<Registration>), OpError> {
        let st = lock(&self.inner.state);
        let id = st
            .by_endpoint
            .get(endpoint)
            .ok_or_else(|| OpError::UnknownClient(endpoint.to_owned()))?;
        let c = st
            .by_id
            .get(id)
            .ok_or_else(|| OpError::UnknownClient(endpoint.to_owned()))?;
        let r = self
            .requester(c.reg.transport, c.reg.addr)
            .ok_or(OpError::NoRoute(c.reg.addr, c.reg.transport.as_str()))?;
        Ok((r, c.reg.addr, c.reg.clone()))
    }

    /// Runs `f` on the client with registration `id` under the state lock.
    pub(crate) fn with_client<R>(&self, id: &str, f: impl FnOnce(&mut Client) -> R) -> Option<R> {
        let mut st = lock(&self.inner.state);
        st.by_id.get_mut(id).map(|c| f(c))
    }

    /// Runs `f` on the client registered as `endpoint` under the state lock.
    pub(crate) fn with_endpoint<R>(
        &self,
        endpoint: &str,
        f: impl FnOnce(&mut Client) -> R,
    ) -> Option<R> {
        let mut st = lock(&self.inner.state);
        let id = *st.by_endpoint.get(endpoint)?;
        st.by_id.get_mut(&id).map(|c| f(c))
    }

    /// The format to ask `endpoint` for (the one that worked last, else its preference).
    pub(crate) fn format_for(&self, endpoint: &str) -> Option<Format> {
        self.with_endpoint(endpoint, |c| {
            c.reg.format.unwrap_or_else(|| c.reg.preferred_format())
        })
    }

    /// Remembers the format `endpoint` answered with.
    pub(crate) fn remember_format(&self, endpoint: &str, f: Format) {
        let store = &self.inner.store;
        self.with_endpoint(endpoint, |c| {
            if c.reg.format != Some(f) {
                Arc::make_mut(&mut c.reg).format = Some(f);
                store.put(&c.reg);
            }
        });
    }

    /// Readings from `entries` the client `reg` reported, into the ingest pipeline.
    pub(crate) fn submit(
        &self,
        peer: &PeerContext,
        reg: &Registration,
        resource: &str,
        class: MessageClass,
        entries: &[Entry],
    ) -> Result<wardgate_core::Pending, Refused> {
        let now = wardgate_core::reading::epoch_seconds(SystemTime::now());
        let records: Vec<Record> = entries
            .iter()
            .map(|e| to_record(&self.inner.model, e, now))
            .collect();
        self.inner.pipeline.submit_records(RecordSubmission {
            peer,
            protocol: Protocol::Lwm2m,
            device: &reg.endpoint,
            class,
            resource,
            records,
        })
    }
}

/// A registration made under a proven identity answers only to that identity (4.03).
fn same_identity(reg: &Registration, peer: &PeerContext) -> Result<(), Refusal> {
    let identity = peer.identity.as_ref().map(ToString::to_string);
    if reg.identity.is_some() && reg.identity != identity {
        return Err(Refusal::new(
            Code::FORBIDDEN,
            "identity_mismatch",
            "the registration belongs to another identity",
        ));
    }
    Ok(())
}

/// Every request to a client whose objects live under an alternate root path (`</lwm2m>;
/// rt="oma.lwm2m"`) goes below that path.
fn prefix_root(req: &mut ClientRequest, objects: &ObjectList) {
    let root: Vec<String> = objects
        .root
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if !root.is_empty() && !req.path.starts_with(&root) {
        let mut p = root;
        p.append(&mut req.path);
        req.path = p;
    }
}

fn op_label(req: &ClientRequest) -> &'static str {
    match req.method {
        Code::GET if req.observe == Some(0) => "observe",
        Code::GET if req.accept == Some(40) => "discover",
        Code::GET => "read",
        Code::PUT if req.content_format.is_none() => "write_attributes",
        Code::PUT => "write",
        Code::POST if req.content_format.is_none() || req.content_format == Some(0) => "execute",
        Code::POST => "write_or_create",
        Code::DELETE => "delete",
        Code::FETCH => "read_composite",
        _ => "other",
    }
}

/// One LwM2M value as a normalized record: named by the object model (`temperature`, unit
/// `Cel`), the path kept, numbers (integers, unsigned, floats, times) as `v`, strings and links
/// as `vs`, booleans as `vb`, opaque as `vd` (base64url).
pub(crate) fn to_record(model: &ObjectModel, e: &Entry, now: f64) -> Record {
    let path = e.path.to_string();
    let (n, u) = match model.reading_name(&e.path) {
        Some(r) => (r.name, r.unit),
        None => (path.trim_start_matches('/').to_owned(), None),
    };
    let mut r = Record {
        n,
        u,
        t: e.time.unwrap_or(now),
        path: Some(path),
        ..Record::default()
    };
    #[allow(clippy::cast_precision_loss)]
    match &e.value {
        Value::Integer(i) | Value::Time(i) => r.v = Some(*i as f64),
        Value::Unsigned(u) => r.v = Some(*u as f64),
        Value::Float(f) => r.v = Some(*f),
        Value::Boolean(b) => r.vb = Some(*b),
        Value::String(s) | Value::Corelnk(s) => r.vs = Some(s.clone()),
        Value::Objlnk(o, i) => r.vs = Some(format!("{o}:{i}")),
        Value::Opaque(b) => r.vd = Some(crate::format::base64::encode_url(b)),
    }
    r
}

/// What the admin API shows of a client.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClientInfo {
    /// The registration.
    #[serde(flatten)]
    pub registration: Registration,
    /// Seconds since it last talked to the server.
    pub last_seen_secs_ago: u64,
    /// Whether requests go out now (always true outside queue mode).
    pub awake: bool,
    /// Operations waiting for it to wake.
    pub queued: usize,
    /// Paths the server observes on it.
    pub observations: Vec<String>,
}

/// Decodes the answer to a request on `base` with the object model's types.
pub(crate) fn decode_answer(
    server: &Server,
    base: &Path,
    resp: &ClientResponse,
) -> Result<Vec<Entry>, OpError> {
    let cf = resp.content_format().unwrap_or(0);
    let f = Format::from_coap(cf).ok_or_else(|| {
        OpError::Format(FormatError::Invalid(format!(
            "the client answered in content format {cf}, which is not an LwM2M format"
        )))
    })?;
    Ok(format::decode(
        f,
        base,
        resp.payload(),
        server.model(),
        SystemTime::now(),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_become_records_with_their_path() {
        let m = ObjectModel::builtin();
        let e = Entry {
            path: Path::resource(3303, 0, 5700),
            value: Value::Float(21.5),
            time: None,
        };
        let r = to_record(&m, &e, 1000.0);
        assert_eq!(r.v, Some(21.5));
        assert_eq!(r.t, 1000.0);
        assert_eq!(r.path.as_deref(), Some("/3303/0/5700"));
        let e = Entry {
            path: Path::resource(3, 0, 17),
            value: Value::Objlnk(3, 0),
            time: Some(5.0),
        };
        let r = to_record(&m, &e, 1000.0);
        assert_eq!((r.vs.as_deref(), r.t), (Some("3:0"), 5.0));
    }
}
