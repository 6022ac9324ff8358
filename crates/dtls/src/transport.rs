//! [`DtlsTransport`]: a [`Transport`] that owns one UDP socket's DTLS sessions and hands the
//! CoAP message layer plaintext datagrams, each named by its peer's proven identity.
//!
//! All state sits behind one mutex that only the socket's task takes (the message layer calls
//! the transport from that task), so it is never contended; no await happens while it is held.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use dimpl::{Dtls, Output};
use socket2::{Domain, Protocol, Socket, Type};
use std::collections::HashMap;
use tokio::net::UdpSocket;
use wardgate_coap::Transport;
use wardgate_core::{
    AuditEvent, AuditKind, AuditSink, CredentialStore, Identity, IdentityKind, PeerContext,
    TransportKind,
};

use crate::config::DtlsConfig;
use crate::error::DtlsError;
use crate::front::{
    Admit, Auth, Claimed, CookieCheck, Epochs, KeyResolver, Replays, build_epoch, check_cookie,
    fingerprint,
};
use crate::keylog::{self, SessionKeys};
use crate::metrics::DtlsMetrics;
use crate::record::{self, ClientHello, FirstRecord, PSK_AES128_CCM_8};
use wardgate_core::limit::{Rate, SourceKey, Take, TokenBuckets};

/// Largest datagram read from the socket (a DTLS record carries at most 2^14 bytes).
const MAX_WIRE_DATAGRAM: usize = 17 * 1024;
/// Plaintext datagrams decrypted but not yet taken by the message layer.
const MAX_PENDING_PLAINTEXT: usize = 256;
/// Encrypted datagrams waiting for room in the socket's send buffer.
const MAX_SEND_BACKLOG: usize = 1024;
/// Datagrams processed per `try_recv_from` call without one for the message layer, before the
/// call returns `WouldBlock` so the socket task can do other work (a handshake flood must not
/// hold it).
const RECV_BUDGET: usize = 64;
/// How often idle sessions, stale handshakes, revocations and the cookie epoch are looked at.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Buckets of the per-source ClientHello limit.
const HELLO_BUCKETS: usize = 4096;
/// Client randoms remembered per epoch (replay protection, see `front.rs`).
const MAX_RANDOMS_PER_EPOCH: usize = 65_536;

/// What a transport needs from the gateway.
#[derive(Debug, Clone)]
pub struct DtlsDeps {
    /// Device keys (the registry). Looked up per handshake.
    pub credentials: Arc<dyn CredentialStore>,
    /// Authentication successes and failures, revocations.
    pub audit: Arc<dyn AuditSink>,
    /// Metrics (see [`DtlsMetrics::register`]).
    pub metrics: DtlsMetrics,
    /// Sees every raw datagram (DTLS records) received and sent, for captures and flow
    /// records; `None`: nothing is copied.
    pub tap: Option<Arc<dyn wardgate_core::DatagramTap>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Handshake { started: Instant },
    Established,
}

/// Who started the session: a device (we are the DTLS server) or the gateway's own CoAP client
/// reaching a sensor (`coaps://` observe targets; we are the DTLS client).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Server,
    Client,
}

/// Most requests queued for a sensor while the gateway's handshake with it is in progress (the
/// CoAP layer retransmits anyway).
const MAX_CLIENT_QUEUE: usize = 16;

/// What the gateway presents when it is the DTLS client of a sensor.
struct ClientCredential {
    /// None while the registry has no key for `identity` (revoked): the sensor is not reached.
    config: Option<Arc<dimpl::Config>>,
    identity: String,
    /// SHA-256 of the key `config` holds, to notice a re-key in the registry.
    key_fingerprint: Option<[u8; 32]>,
}

/// The library config of the gateway's client side for one sensor (builds in milliseconds).
fn client_config(
    settings: &DtlsConfig,
    identity: &str,
    key: wardgate_core::Secret,
) -> Result<Arc<dimpl::Config>, DtlsError> {
    dimpl::Config::builder()
        .with_crypto_provider(keylog::provider())
        .with_psk_client(identity.as_bytes().to_vec(), Arc::new(FixedKey(key)))
        .dtls12_cipher_suites(&[dimpl::crypto::Dtls12CipherSuite::PSK_AES128_CCM_8])
        .mtu(settings.mtu)
        .handshake_timeout(settings.handshake_timeout)
        .build()
        .map(Arc::new)
        .map_err(|e| DtlsError::Library(e.to_string()))
}

struct FixedKey(wardgate_core::Secret);

impl dimpl::PskResolver for FixedKey {
    fn resolve(&self, _identity: &[u8]) -> Option<Vec<u8>> {
        Some(self.0.expose().to_vec())
    }
}

struct Session {
    dtls: Dtls,
    role: Role,
    /// Plaintext for the peer, waiting for the handshake to finish (client sessions only).
    outbox: Vec<Vec<u8>>,
    phase: Phase,
    source: SourceKey,
    /// What the key resolver saw for this peer (identity, whether known, key fingerprint).
    claimed: Option<Claimed>,
    /// SHA-256 (hex) of the client certificate, in a certificate handshake.
    cert_fingerprint: Option<String>,
    /// Set once the handshake completed with a known identity.
    identity: Option<Identity>,
    last_seen: Instant,
    /// The library's next timer, as registered in the heap.
    deadline: Option<Instant>,
    closing: bool,
    /// Unique per session of this transport (`PeerContext::session`).
    serial: u64,
    /// Whether the tap wants this session's secrets (see `keylog`), and what the library
    /// derived, until the session is established.
    watch_keys: bool,
    keys: Option<SessionKeys>,
}

struct Inner {
    settings: DtlsConfig,
    resolver: Arc<KeyResolver>,
    sessions: HashMap<SocketAddr, Session>,
    handshakes: usize,
    per_source: HashMap<SourceKey, usize>,
    timers: BinaryHeap<Reverse<(Instant, SocketAddr)>>,
    pending: VecDeque<(Vec<u8>, SocketAddr)>,
    backlog: VecDeque<(Vec<u8>, SocketAddr)>,
    epochs: Epochs,
    /// Sensors the gateway reaches over DTLS, by address.
    clients: HashMap<SocketAddr, ClientCredential>,
    /// The listener's certificate, when it offers certificate suites.
    certificate: Option<Arc<dimpl::DtlsCertificate>>,
    replays: Replays,
    /// ClientHellos per source (a fixed array of hashed buckets).
    limiter: TokenBuckets,
    generation: u64,
    /// The next session's serial.
    next_serial: u64,
    next_sweep: Instant,
    out: Vec<u8>,
    raw: Vec<u8>,
}

/// CoAP over DTLS 1.2 (RFC 7925 profile): TLS_PSK_WITH_AES_128_CCM_8, identities from the
/// device registry, a stateless cookie front, bounded sessions and handshakes.
pub struct DtlsTransport {
    socket: UdpSocket,
    /// The socket's address (for the tap).
    local: SocketAddr,
    deps: DtlsDeps,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for DtlsTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DtlsTransport")
            .field("local", &self.socket.local_addr().ok())
            .finish_non_exhaustive()
    }
}

impl DtlsTransport {
    /// Binds `addr` and prepares the first cookie epoch. Must be called inside a tokio runtime.
    pub fn bind(
        addr: SocketAddr,
        settings: &DtlsConfig,
        deps: DtlsDeps,
    ) -> Result<DtlsTransport, DtlsError> {
        let bind_err = |source| DtlsError::Bind { addr, source };
        let domain = if addr.is_ipv4() {
            Domain::IPV4
        } else {
            Domain::IPV6
        };
        let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP)).map_err(bind_err)?;
        if addr.is_ipv6() {
            socket.set_only_v6(true).map_err(bind_err)?;
        }
        if settings.recv_buffer_bytes > 0 {
            socket
                .set_recv_buffer_size(settings.recv_buffer_bytes)
                .map_err(bind_err)?;
        }
        if settings.send_buffer_bytes > 0 {
            socket
                .set_send_buffer_size(settings.send_buffer_bytes)
                .map_err(bind_err)?;
        }
        socket.set_nonblocking(true).map_err(bind_err)?;
        socket.bind(&addr.into()).map_err(bind_err)?;
        let socket = UdpSocket::from_std(socket.into()).map_err(bind_err)?;
        let resolver = Arc::new(KeyResolver::new(deps.credentials.clone()));
        let certificate = settings
            .certificate_file
            .as_deref()
            .zip(settings.private_key_file.as_deref())
            .map(|(cert, key)| crate::pem::load_certificate(cert, key))
            .transpose()?;
        let first = build_epoch(settings, &resolver, certificate.is_some())
            .map_err(|e| DtlsError::Library(e.to_string()))?;
        if let Some(c) = &certificate {
            // The library parses the key again per handshake and would panic on one it cannot
            // use: refuse it here, at start-up, instead.
            first
                .config
                .crypto_provider()
                .key_provider
                .load_private_key(&c.private_key)
                .map_err(|_| DtlsError::Certificate {
                    path: settings.private_key_file.clone().unwrap_or_default(),
                    reason: "not an ECDSA P-256 or P-384 private key".into(),
                })?;
        }
        let now = Instant::now();
        let inner = Inner {
            settings: settings.clone(),
            resolver,
            sessions: HashMap::new(),
            handshakes: 0,
            per_source: HashMap::new(),
            timers: BinaryHeap::new(),
            pending: VecDeque::new(),
            backlog: VecDeque::new(),
            epochs: Epochs::new(first, now, settings.cookie_rotation, certificate.is_some()),
            certificate: certificate.map(Arc::new),
            clients: HashMap::new(),
            replays: Replays::new(MAX_RANDOMS_PER_EPOCH),
            limiter: TokenBuckets::new(
                Rate {
                    rate: settings.hello_rate_per_source,
                    burst: settings.hello_burst_per_source,
                },
                HELLO_BUCKETS,
            ),
            generation: deps.credentials.generation(),
            next_serial: 0,
            next_sweep: now + SWEEP_EVERY,
            out: vec![0; 2048],
            raw: vec![0; MAX_WIRE_DATAGRAM],
        };
        let local = socket.local_addr().map_err(bind_err)?;
        Ok(DtlsTransport {
            socket,
            local,
            deps,
            inner: Mutex::new(inner),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock would be a bug in this file; the state is still
        // consistent enough to keep serving (every table is bounded and self-cleaning).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lets the gateway's own CoAP client reach the sensor at `server` over DTLS with a PSK:
    /// the first request to it starts a handshake (`identity`, `key`), the requests wait for it
    /// (up to 16), and the session's peer identity is `psk:<identity>` (the sensor proved it
    /// holds the key). Call before the endpoint runs; builds a library config (milliseconds).
    pub fn add_client(
        &self,
        server: SocketAddr,
        identity: &str,
        key: wardgate_core::Secret,
    ) -> Result<(), DtlsError> {
        let mut g = self.lock();
        let key_fingerprint = Some(fingerprint(key.expose()));
        let config = Some(client_config(&g.settings, identity, key)?);
        g.clients.insert(
            server,
            ClientCredential {
                config,
                identity: identity.to_owned(),
                key_fingerprint,
            },
        );
        Ok(())
    }

    /// Sessions open now (established and in handshake).
    pub fn session_count(&self) -> usize {
        self.lock().sessions.len()
    }

    fn io(&self) -> Io<'_> {
        Io {
            socket: &self.socket,
            local: self.local,
            deps: &self.deps,
        }
    }
}

/// The parts of the transport the session code needs besides the state.
struct Io<'a> {
    socket: &'a UdpSocket,
    local: SocketAddr,
    deps: &'a DtlsDeps,
}

/// The peer context of `addr` as its session (if any) knows it.
fn session_context(session: Option<&Session>, addr: SocketAddr) -> PeerContext {
    let ctx = PeerContext::new(addr, TransportKind::Dtls);
    let Some(s) = session else {
        return ctx;
    };
    let ctx = ctx.in_session(s.serial);
    match s.identity.clone() {
        Some(id) => ctx.with_identity(id),
        None => ctx,
    }
}

impl Io<'_> {
    /// Tells the tap how a handshake with `addr` ended.
    fn handshake(&self, session: Option<&Session>, addr: SocketAddr, outcome: &'static str) {
        if let Some(t) = &self.deps.tap {
            t.handshake(&session_context(session, addr), self.local, outcome);
        }
    }

    /// Shows a datagram to the tap, if there is one.
    fn tap(&self, inbound: bool, session: Option<&Session>, addr: SocketAddr, bytes: &[u8]) {
        if let Some(t) = &self.deps.tap {
            t.datagram(inbound, &session_context(session, addr), self.local, bytes);
        }
    }

    /// Sends `bytes` (or queues them in the bounded backlog when the socket is full); the tap
    /// sees what was sent or queued. `session` names the peer for the tap.
    fn send(
        &self,
        backlog: &mut VecDeque<(Vec<u8>, SocketAddr)>,
        bytes: &[u8],
        to: SocketAddr,
        session: Option<&Session>,
    ) {
        match self.socket.try_send_to(bytes, to) {
            Ok(_) => self.tap(false, session, to, bytes),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if backlog.len() < MAX_SEND_BACKLOG {
                    self.tap(false, session, to, bytes);
                    backlog.push_back((bytes.to_vec(), to));
                } else {
                    self.deps.metrics.drop_datagram("send_backlog_full");
                }
            }
            Err(error) => tracing::debug!(%to, %error, "DTLS send failed"),
        }
    }

    fn audit(&self, event: AuditEvent) {
        self.deps.audit.record(event);
    }

    /// Whether a new session's secrets are wanted by the tap.
    fn wants_session_keys(&self) -> bool {
        self.deps
            .tap
            .as_ref()
            .is_some_and(|t| t.wants_session_keys())
    }

    /// Hands the tap the secrets of the session just established with `addr`, taking them
    /// out of the session.
    fn session_keys(&self, s: &mut Session, addr: SocketAddr) {
        let Some(tap) = &self.deps.tap else {
            return;
        };
        match s.keys.take() {
            Some(keys) => {
                tap.session_keys(
                    &session_context(Some(s), addr),
                    self.local,
                    &keys.client_random,
                    &keys.master_secret,
                );
                self.deps.metrics.session_keys("logged");
            }
            None => {
                // The library derived its keys outside a watched call: not what dimpl 0.9
                // does (it derives them while handling the peer's flight), but say so.
                tracing::debug!(%addr, "no key log line for this DTLS session");
                self.deps.metrics.session_keys("not_seen");
            }
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Runs one library call on a session, turning a panic inside the library into an error for
/// that session only: the library is young and has `unwrap`s on internal invariants, and one
/// peer's datagram must never take the listener down. (The session is dropped afterwards, so
/// no state from the interrupted call is used again.)
fn guarded<T>(call: impl FnOnce() -> Result<T, dimpl::Error>) -> Result<T, Guarded> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Guarded::Error(e)),
        Err(_) => Err(Guarded::Panic),
    }
}

/// A library call that failed, or panicked.
#[derive(Debug)]
enum Guarded {
    Error(dimpl::Error),
    Panic,
}

impl std::fmt::Display for Guarded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Guarded::Error(e) => write!(f, "{e}"),
            Guarded::Panic => f.write_str("the DTLS library panicked"),
        }
    }
}

/// Why a session's library call failed, as a fixed label.
fn failure_reason(error: &Guarded, claimed: Option<&Claimed>) -> &'static str {
    use dimpl::Error as E;
    let error = match error {
        Guarded::Panic => return "library_panic",
        Guarded::Error(e) => e,
    };
    match (error, claimed) {
        (_, Some(c)) if !c.known => "unknown_identity",
        (E::SecurityError(dimpl::SecurityError::NoMutuallyAcceptableCipherSuite), _) => {
            "no_shared_suite"
        }
        (E::SecurityError(_), _) => "protocol_error",
        (E::Timeout(_), _) => "timeout",
        (E::CryptoError(_), Some(_)) => "bad_key",
        (E::PskError(_), _) => "bad_key",
        _ => "protocol_error",
    }
}

impl Inner {
    /// Handles one datagram from `addr`.
    fn on_datagram(&mut self, io: &Io<'_>, now: Instant, addr: SocketAddr, data: &[u8]) {
        self.check_generation(io, now);
        match record::first_record(data) {
            FirstRecord::Garbage => io.deps.metrics.drop_datagram("garbage"),
            FirstRecord::ClientHello => {
                let Some(hello) = ClientHello::parse(data) else {
                    return;
                };
                let handshaking = matches!(
                    self.sessions.get(&addr).map(|s| s.phase),
                    Some(Phase::Handshake { .. })
                );
                if !hello.cookie.is_empty() && hello.message_seq != 0 && handshaking {
                    // A retransmitted cookie-bearing ClientHello: the session resends its flight.
                    self.feed(io, now, addr, data);
                } else {
                    self.front(io, now, addr, data, &hello);
                }
            }
            FirstRecord::Other => {
                if self.sessions.contains_key(&addr) {
                    self.feed(io, now, addr, data);
                } else {
                    io.deps.metrics.drop_datagram("no_session");
                }
            }
        }
    }

    /// A ClientHello from an address without a handshake in progress (see `front.rs`).
    fn front(
        &mut self,
        io: &Io<'_>,
        now: Instant,
        addr: SocketAddr,
        data: &[u8],
        hello: &ClientHello<'_>,
    ) {
        let metrics = &io.deps.metrics;
        let source = SourceKey::of_addr(&addr);
        if self
            .limiter
            .take(source, tokio::time::Instant::from_std(now))
            != Take::Allowed
        {
            metrics.fail("rate_limited");
            return;
        }
        // PSK whenever offered; a certificate handshake only when this listener has one. Without
        // a shared suite the cookie exchange still runs (it does not depend on the suites), so
        // the refusal is audited only for a proven address: spoofed ClientHellos cannot write
        // to the audit trail.
        let auth = if hello.offers(PSK_AES128_CCM_8) {
            Some(Auth::Psk)
        } else {
            self.certificate
                .as_ref()
                .filter(|_| hello.offers_non_psk())
                .map(|cert| Auth::Certificate(cert.clone()))
        };
        let hello0 = hello.without_cookie();
        let dtls = match check_cookie(
            &self.epochs,
            auth.as_ref().unwrap_or(&Auth::Psk),
            &hello0,
            hello.cookie,
            now,
            &mut self.out,
        ) {
            CookieCheck::Valid(dtls) if hello.message_seq == 1 => *dtls,
            CookieCheck::Valid(_) | CookieCheck::Refused => {
                metrics.fail("protocol_error");
                return;
            }
            CookieCheck::Verify(hvr) => {
                metrics.hello_verify_sent.inc();
                io.send(&mut self.backlog, &hvr, addr, None);
                return;
            }
        };
        // The address is proven: from here on state may be kept, within the bounds.
        if auth.is_none() {
            metrics.fail("no_shared_suite");
            io.audit(
                AuditEvent::new(AuditKind::AuthFailure, "no_shared_suite")
                    .peer(addr, TransportKind::Dtls),
            );
            return;
        }
        let reason = match self.replays.admit(hello.random) {
            Admit::Replayed => Some("replayed_hello"),
            Admit::Full => Some("handshakes_full"),
            Admit::Fresh => None,
        }
        .or_else(|| {
            let replacing = self.sessions.contains_key(&addr);
            if !replacing && self.sessions.len() >= self.settings.max_sessions {
                Some("sessions_full")
            } else if self.handshakes >= self.settings.max_handshakes {
                Some("handshakes_full")
            } else if self.per_source.get(&source).copied().unwrap_or(0)
                >= self.settings.max_handshakes_per_source
            {
                Some("source_full")
            } else {
                None
            }
        });
        if let Some(reason) = reason {
            metrics.fail(reason);
            return;
        }
        self.remove(io, addr, "replaced");
        self.next_serial += 1;
        let serial = self.next_serial;
        self.handshakes += 1;
        *self.per_source.entry(source).or_insert(0) += 1;
        metrics.handshakes_in_progress.set(self.handshakes as i64);
        self.sessions.insert(
            addr,
            Session {
                dtls,
                role: Role::Server,
                outbox: Vec::new(),
                phase: Phase::Handshake { started: now },
                source,
                claimed: None,
                cert_fingerprint: None,
                identity: None,
                last_seen: now,
                deadline: None,
                closing: false,
                serial,
                watch_keys: io.wants_session_keys(),
                keys: None,
            },
        );
        metrics.sessions.set(self.sessions.len() as i64);
        self.feed(io, now, addr, data);
    }

    /// Feeds a datagram to `addr`'s session and acts on what comes out.
    fn feed(&mut self, io: &Io<'_>, now: Instant, addr: SocketAddr, data: &[u8]) {
        let Some(s) = self.sessions.get_mut(&addr) else {
            return;
        };
        s.last_seen = now;
        let _ = self.resolver.take();
        let (r, keys) = keylog::watching(s.watch_keys, || guarded(|| s.dtls.handle_packet(data)));
        if keys.is_some() {
            s.keys = keys;
        }
        if let Some(c) = self.resolver.take() {
            s.claimed = Some(c);
        }
        self.after_call(io, now, addr, r);
    }

    /// Drains a session's output after a library call, then closes it if the call failed or
    /// the peer closed.
    fn after_call(&mut self, io: &Io<'_>, now: Instant, addr: SocketAddr, r: Result<(), Guarded>) {
        let Some(s) = self.sessions.get_mut(&addr) else {
            return;
        };
        let mut connected = false;
        let mut plaintext: Vec<Vec<u8>> = Vec::new();
        let deadline = loop {
            match s.dtls.poll_output(&mut self.out) {
                Output::Packet(p) => io.send(&mut self.backlog, p, addr, Some(&*s)),
                Output::BufferTooSmall { needed } => self.out.resize(needed.min(64 * 1024), 0),
                Output::Timeout(t) => break t,
                Output::Connected => connected = true,
                // Held until the identity check below: a flight may carry the Finished and the
                // first request together, and the request may only pass once the session is
                // established with a known identity.
                Output::ApplicationData(d) => plaintext.push(d.to_vec()),
                Output::PeerCert(der) => s.cert_fingerprint = Some(hex(&fingerprint(der))),
                Output::CloseNotify => s.closing = true,
                _ => {}
            }
        };
        if let Err(error) = r {
            let handshaking = matches!(s.phase, Phase::Handshake { .. });
            let reason = failure_reason(&error, s.claimed.as_ref());
            tracing::debug!(%addr, %error, reason, "DTLS session failed");
            if handshaking {
                self.handshake_failed(io, addr, reason);
            } else {
                self.remove(io, addr, "error");
            }
            return;
        }
        if connected {
            self.established(io, now, addr);
        }
        let Some(s) = self.sessions.get_mut(&addr) else {
            return;
        };
        if s.phase == Phase::Established && !s.outbox.is_empty() {
            let queued = std::mem::take(&mut s.outbox);
            for d in queued {
                if guarded(|| s.dtls.send_application_data(&d)).is_err() {
                    break;
                }
            }
            loop {
                match s.dtls.poll_output(&mut self.out) {
                    Output::Packet(p) => io.send(&mut self.backlog, p, addr, Some(&*s)),
                    Output::BufferTooSmall { needed } => self.out.resize(needed.min(64 * 1024), 0),
                    _ => break,
                }
            }
        }
        if s.phase == Phase::Established {
            for d in plaintext {
                if self.pending.len() < MAX_PENDING_PLAINTEXT {
                    self.pending.push_back((d, addr));
                } else {
                    io.deps.metrics.drop_datagram("plaintext_queue_full");
                }
            }
        } else if !plaintext.is_empty() {
            io.deps.metrics.drop_datagram("before_established");
        }
        if s.closing {
            self.remove(io, addr, "peer_closed");
            return;
        }
        if s.deadline.is_none_or(|old| deadline < old) {
            s.deadline = Some(deadline);
            self.timers.push(Reverse((deadline, addr)));
        }
    }

    fn established(&mut self, io: &Io<'_>, now: Instant, addr: SocketAddr) {
        let store = self.resolver.store().clone();
        let Some(s) = self.sessions.get_mut(&addr) else {
            return;
        };
        // The library checked the proof (a Finished under the PSK, or the certificate's
        // signature over the handshake); whether the key or certificate belongs to a device is
        // the registry's answer.
        let client_identity = match s.role {
            Role::Client => self.clients.get(&addr).map(|c| c.identity.clone()),
            Role::Server => None,
        };
        let identity = match (&s.cert_fingerprint, &s.claimed) {
            _ if s.role == Role::Client => client_identity
                .map(|id| Identity::new(IdentityKind::PskIdentity, id))
                .ok_or("unknown_identity"),
            (Some(fp), _) if store.knows_certificate(fp) => {
                Ok(Identity::new(IdentityKind::CertificateSha256, fp.as_str()))
            }
            (Some(_), _) => Err("unknown_certificate"),
            (None, Some(c)) if c.known && c.key_fingerprint.is_some() => Ok(Identity::new(
                IdentityKind::PskIdentity,
                c.identity.as_str(),
            )),
            // A completed PSK handshake for an identity no device holds is impossible (the keys
            // cannot match), but never let it through.
            (None, _) => Err("unknown_identity"),
        };
        let identity = match identity {
            Ok(identity) => identity,
            Err(reason) => return self.handshake_failed(io, addr, reason),
        };
        s.phase = Phase::Established;
        s.last_seen = now;
        let method = match (s.role, identity.kind()) {
            (Role::Client, _) => "dtls_psk_as_client",
            (_, IdentityKind::CertificateSha256) => "dtls_certificate",
            _ => "dtls_psk",
        };
        io.audit(
            AuditEvent::new(AuditKind::AuthSuccess, method)
                .actor(identity.to_string())
                .peer(addr, TransportKind::Dtls),
        );
        tracing::debug!(%addr, %identity, "DTLS session established");
        s.identity = Some(identity);
        io.handshake(Some(s), addr, "established");
        if s.watch_keys {
            s.watch_keys = false;
            io.session_keys(s, addr);
        }
        let (source, role) = (s.source, s.role);
        if role == Role::Server {
            self.handshake_done(source);
        }
        io.deps.metrics.handshakes.inc();
        io.deps
            .metrics
            .handshakes_in_progress
            .set(self.handshakes as i64);
    }

    fn handshake_done(&mut self, source: SourceKey) {
        self.handshakes = self.handshakes.saturating_sub(1);
        if let Some(n) = self.per_source.get_mut(&source) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_source.remove(&source);
            }
        }
    }

    fn handshake_failed(&mut self, io: &Io<'_>, addr: SocketAddr, reason: &'static str) {
        let claimed = self
            .sessions
            .get(&addr)
            .and_then(|s| match &s.cert_fingerprint {
                Some(fp) => Some(format!("claimed-x509-sha256:{fp}")),
                None => s
                    .claimed
                    .as_ref()
                    .map(|c| format!("claimed-psk:{}", c.identity)),
            });
        io.deps.metrics.fail(reason);
        let mut event =
            AuditEvent::new(AuditKind::AuthFailure, reason).peer(addr, TransportKind::Dtls);
        if let Some(actor) = claimed {
            event = event.actor(actor);
        }
        io.audit(event);
        io.handshake(self.sessions.get(&addr), addr, reason);
        self.remove(io, addr, "handshake_failed");
    }

    /// Removes a session (sending close_notify when it is established and still ours to close).
    /// The metrics and gauges change before the close_notify leaves, so a peer that sees it
    /// never sees counts that do not yet include it.
    fn remove(&mut self, io: &Io<'_>, addr: SocketAddr, reason: &'static str) -> Option<()> {
        let mut s = self.sessions.remove(&addr)?;
        io.deps.metrics.sessions.set(self.sessions.len() as i64);
        if let Phase::Handshake { .. } = s.phase {
            if s.role == Role::Server {
                self.handshake_done(s.source);
            }
            io.deps
                .metrics
                .handshakes_in_progress
                .set(self.handshakes as i64);
            return Some(());
        }
        io.deps.metrics.closed(reason);
        if !s.closing && s.dtls.close().is_ok() {
            loop {
                match s.dtls.poll_output(&mut self.out) {
                    Output::Packet(p) => io.send(&mut self.backlog, p, addr, Some(&s)),
                    Output::BufferTooSmall { needed } => self.out.resize(needed.min(64 * 1024), 0),
                    _ => break,
                }
            }
        }
        Some(())
    }

    /// Closes every established session whose identity's key is gone or changed since it was
    /// proven. Runs when the registry's generation moves.
    fn check_generation(&mut self, io: &Io<'_>, _now: Instant) {
        let g = io.deps.credentials.generation();
        if g == self.generation {
            return;
        }
        self.generation = g;
        let store = self.resolver.store().clone();
        let stale: Vec<(SocketAddr, String)> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.role == Role::Server)
            .filter_map(|(addr, s)| {
                let id = s.identity.as_ref()?;
                let still_valid = match id.kind() {
                    IdentityKind::CertificateSha256 => store.knows_certificate(id.value()),
                    _ => {
                        let current = store.psk(id.value()).map(|k| fingerprint(k.expose()));
                        let proven = s.claimed.as_ref().and_then(|c| c.key_fingerprint);
                        current.is_some() && current == proven
                    }
                };
                (!still_valid).then(|| (*addr, id.to_string()))
            })
            .collect();
        self.refresh_clients(io, &store);
        for (addr, identity) in stale {
            tracing::info!(%addr, %identity, "DTLS session closed: its credentials were revoked or changed");
            io.audit(
                AuditEvent::new(AuditKind::SessionRevoked, "credentials_changed")
                    .actor(identity)
                    .peer(addr, TransportKind::Dtls),
            );
            self.remove(io, addr, "revoked");
        }
    }

    /// The gateway's own credentials for sensors follow the registry too: a revoked one is
    /// dropped (the sensor is no longer reached), a re-keyed one is rebuilt, and either way the
    /// open session that used the old key is closed, so the next request handshakes afresh.
    fn refresh_clients(&mut self, io: &Io<'_>, store: &Arc<dyn CredentialStore>) {
        let settings = &self.settings;
        let mut closed = Vec::new();
        for (addr, cred) in self.clients.iter_mut() {
            let key = store.psk(&cred.identity);
            let fp = key.as_ref().map(|k| fingerprint(k.expose()));
            if fp == cred.key_fingerprint {
                continue;
            }
            cred.key_fingerprint = fp;
            cred.config = match key.map(|k| client_config(settings, &cred.identity, k)) {
                Some(Ok(config)) => Some(config),
                Some(Err(error)) => {
                    tracing::error!(%addr, %error, "cannot rebuild the DTLS client credential; the sensor is not reached");
                    None
                }
                None => {
                    tracing::info!(%addr, identity = %cred.identity, "the registry has no key for the gateway's credential to this sensor; not reaching it");
                    None
                }
            };
            closed.push((*addr, cred.identity.clone()));
        }
        for (addr, identity) in closed {
            if self
                .sessions
                .get(&addr)
                .is_some_and(|s| s.role == Role::Client)
            {
                io.audit(
                    AuditEvent::new(AuditKind::SessionRevoked, "credentials_changed")
                        .actor(format!("psk:{identity}"))
                        .peer(addr, TransportKind::Dtls),
                );
                self.remove(io, addr, "revoked");
            }
        }
    }

    /// Timers: library retransmissions, stale handshakes, idle sessions, revocations, epochs.
    fn poll_timers(&mut self, io: &Io<'_>, now: Instant) {
        while let Some(Reverse((t, addr))) = self.timers.peek().copied() {
            if t > now {
                break;
            }
            self.timers.pop();
            let due = self
                .sessions
                .get_mut(&addr)
                .filter(|s| s.deadline == Some(t));
            let Some(s) = due else { continue };
            s.deadline = None;
            let r = guarded(|| s.dtls.handle_timeout(now));
            self.after_call(io, now, addr, r);
        }
        if now >= self.next_sweep {
            self.next_sweep = now + SWEEP_EVERY;
            self.sweep(io, now);
        }
        // Stale entries (deadlines that moved later) are dropped when the heap outgrows the
        // sessions, so it stays bounded by them.
        if self.timers.len() > 4 * self.sessions.len() + 64 {
            self.timers = self
                .sessions
                .iter()
                .filter_map(|(a, s)| s.deadline.map(|t| Reverse((t, *a))))
                .collect();
        }
    }

    fn sweep(&mut self, io: &Io<'_>, now: Instant) {
        self.check_generation(io, now);
        let hs_timeout = self.settings.handshake_timeout;
        let idle = self.settings.idle_timeout;
        let expired: Vec<(SocketAddr, bool)> = self
            .sessions
            .iter()
            .filter_map(|(addr, s)| match s.phase {
                Phase::Handshake { started }
                    if now.saturating_duration_since(started) > hs_timeout =>
                {
                    Some((*addr, true))
                }
                Phase::Established if now.saturating_duration_since(s.last_seen) > idle => {
                    Some((*addr, false))
                }
                _ => None,
            })
            .collect();
        for (addr, handshake) in expired {
            if handshake {
                self.handshake_failed(io, addr, "timeout");
            } else {
                self.remove(io, addr, "idle");
            }
        }
        let period = self.settings.cookie_rotation;
        let settings = self.settings.clone();
        if self.epochs.tick(now, period, &settings, &self.resolver) {
            self.replays.rotate();
        }
    }

    fn next_deadline(&self) -> Instant {
        let mut d = self.next_sweep;
        if let Some(Reverse((t, _))) = self.timers.peek() {
            d = d.min(*t);
        }
        if !self.backlog.is_empty() {
            d = d.min(Instant::now() + Duration::from_millis(1));
        }
        d
    }

    fn flush_backlog(&mut self, io: &Io<'_>) {
        while let Some((bytes, to)) = self.backlog.front() {
            match io.socket.try_send_to(bytes, *to) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                _ => {
                    self.backlog.pop_front();
                }
            }
        }
    }
}

impl DtlsTransport {
    fn try_recv(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let io = self.io();
        let mut g = self.lock();
        g.flush_backlog(&io);
        let mut budget = RECV_BUDGET;
        loop {
            if let Some((data, addr)) = g.pending.pop_front() {
                let n = data.len().min(buf.len());
                buf[..n].copy_from_slice(&data[..n]);
                return Ok((n, addr));
            }
            if budget == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            budget -= 1;
            let mut raw = std::mem::take(&mut g.raw);
            let r = self.socket.try_recv_from(&mut raw);
            match r {
                Ok((n, addr)) => {
                    let data = raw.get(..n).unwrap_or_default();
                    if io.deps.tap.is_some() {
                        io.tap(true, g.sessions.get(&addr), addr, data);
                    }
                    g.on_datagram(&io, Instant::now(), addr, data);
                    g.raw = raw;
                }
                Err(e) => {
                    g.raw = raw;
                    return Err(e);
                }
            }
        }
    }

    fn try_send(&self, buf: &[u8], peer: SocketAddr) -> io::Result<usize> {
        let io = self.io();
        let mut g = self.lock();
        g.flush_backlog(&io);
        let now = Instant::now();
        g.check_generation(&io, now);
        if !g.sessions.contains_key(&peer) {
            g.connect(&io, now, peer);
        }
        let Some(s) = g.sessions.get_mut(&peer) else {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "no DTLS session with this peer",
            ));
        };
        match (s.phase, s.role) {
            (Phase::Established, _) => {
                let r = guarded(|| s.dtls.send_application_data(buf));
                g.after_call(&io, now, peer, r.map(|_| ()));
            }
            (Phase::Handshake { .. }, Role::Client) if s.outbox.len() < MAX_CLIENT_QUEUE => {
                s.outbox.push(buf.to_vec());
            }
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::NotConnected,
                    "DTLS handshake with this peer not finished",
                ));
            }
        }
        Ok(buf.len())
    }
}

impl Inner {
    /// Starts the gateway's handshake with a sensor it has a credential for.
    fn connect(&mut self, io: &Io<'_>, now: Instant, peer: SocketAddr) {
        let Some(config) = self.clients.get(&peer).and_then(|c| c.config.clone()) else {
            return;
        };
        let mut dtls = Dtls::new_12_psk(config, now);
        dtls.set_active(true);
        self.next_serial += 1;
        let serial = self.next_serial;
        self.sessions.insert(
            peer,
            Session {
                dtls,
                role: Role::Client,
                outbox: Vec::new(),
                phase: Phase::Handshake { started: now },
                source: SourceKey::of_addr(&peer),
                claimed: None,
                cert_fingerprint: None,
                identity: None,
                last_seen: now,
                deadline: None,
                closing: false,
                serial,
                watch_keys: io.wants_session_keys(),
                keys: None,
            },
        );
        io.deps.metrics.sessions.set(self.sessions.len() as i64);
        let r = self
            .sessions
            .get_mut(&peer)
            .map_or(Ok(()), |s| guarded(|| s.dtls.handle_timeout(now)));
        self.after_call(io, now, peer, r);
    }
}

impl Transport for DtlsTransport {
    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        loop {
            match self.try_recv(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.socket.readable().await?;
                }
                r => return r,
            }
        }
    }

    fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.try_recv(buf)
    }

    fn try_send_to(&self, buf: &[u8], peer: SocketAddr) -> io::Result<usize> {
        self.try_send(buf, peer)
    }

    fn send_to(
        &self,
        buf: &[u8],
        peer: SocketAddr,
    ) -> impl Future<Output = io::Result<usize>> + Send {
        // Never WouldBlock: what the socket cannot take now waits in the bounded backlog.
        std::future::ready(self.try_send(buf, peer))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    fn kind(&self) -> &'static str {
        "dtls"
    }

    fn peer(&self, addr: SocketAddr) -> PeerContext {
        session_context(self.lock().sessions.get(&addr), addr)
    }

    fn next_deadline(&self) -> Option<tokio::time::Instant> {
        Some(tokio::time::Instant::from_std(self.lock().next_deadline()))
    }

    fn poll_timers(&self, _now: tokio::time::Instant) {
        let io = self.io();
        let mut g = self.lock();
        g.flush_backlog(&io);
        g.poll_timers(&io, Instant::now());
    }
}

impl Drop for DtlsTransport {
    /// Says goodbye (close_notify) to every established session, so devices re-handshake at
    /// once after a restart instead of waiting for their own timeouts.
    fn drop(&mut self) {
        let io = Io {
            socket: &self.socket,
            local: self.local,
            deps: &self.deps,
        };
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let addrs: Vec<SocketAddr> = g.sessions.keys().copied().collect();
        for addr in addrs {
            g.remove(&io, addr, "shutdown");
        }
    }
}
