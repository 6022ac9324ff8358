//! The [`Registry`]: an in-memory snapshot answering transports and the ingest pipeline, and the
//! editing methods that change it (file first, then memory).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use wardgate_core::reading::valid_device_id;
use wardgate_core::{
    Action, AuditEvent, AuditKind, AuditSink, AuthRequest, Authorizer, Clock, CredentialStore,
    Denied, Grant, Identity, IdentityKind, PeerContext, Secret, SystemClock,
};

use crate::error::RegistryError;
use crate::file::{DeviceSpec, RegistryFile, UnknownPolicy, wipe};
use crate::limit::{Limiter, Verdict};
use crate::metrics::{DenyReason, RegistryMetrics};
use crate::pending::{PendingList, PendingView};
use crate::persist;
use crate::table::{Compiled, Table, compile, printable, protocol_bit};
use crate::view::DeviceView;

mod quarantine;

pub use quarantine::{HeldReading, HeldVerdict, QuarantineLimits};

/// Environment lookup for `${VAR}` keys.
pub type EnvLookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// How a registry reads its surroundings. The defaults are the process environment and the
/// system clock; tests inject both.
#[derive(Clone)]
pub struct LoadOptions {
    /// Wall clock (pending-list stamps, the denial rate limit's windows).
    pub clock: Arc<dyn Clock>,
    /// Resolves `key = "${VAR}"`.
    pub env: EnvLookup,
    /// How much quarantine may hold.
    pub quarantine: QuarantineLimits,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            clock: Arc::new(SystemClock),
            env: Arc::new(|name| std::env::var(name).ok()),
            quarantine: QuarantineLimits::default(),
        }
    }
}

impl fmt::Debug for LoadOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadOptions")
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

/// The file model and its compiled table, swapped as one.
#[derive(Debug)]
struct State {
    file: RegistryFile,
    table: Table,
}

/// The device registry. Share it as `Arc<Registry>`: it is the [`CredentialStore`] of the
/// secure transports and the [`Authorizer`] of the ingest pipeline.
///
/// Lookups take a read lock only to clone an `Arc` of the current snapshot, then answer from
/// it without I/O. Editing methods do blocking file I/O (write, fsync): call them from
/// `spawn_blocking`, never from a socket task. Edits are serialized among themselves.
pub struct Registry {
    path: PathBuf,
    base: PathBuf,
    state: RwLock<Arc<State>>,
    generation: AtomicU64,
    edit: Mutex<()>,
    audit: Arc<dyn AuditSink>,
    metrics: RegistryMetrics,
    limiter: Limiter,
    pending: Mutex<PendingList>,
    /// Readings held in quarantine, as the quarantine lane counted them.
    held_total: AtomicU64,
    /// Recent dismissals: identity and when (held readings from before are discarded).
    dismissed: Mutex<Vec<(Identity, std::time::SystemTime)>>,
    /// Moves on every dismissal (part of the quarantine epoch).
    dismissals: AtomicU64,
    opts: LoadOptions,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The table's Debug is secret-free too (keys print as their length), but the summary
        // is what a log line needs.
        let s = self.snapshot();
        f.debug_struct("Registry")
            .field("path", &self.path)
            .field("generation", &self.generation.load(Ordering::SeqCst))
            .field("unknown", &s.table.unknown)
            .field("table", &s.table)
            .finish_non_exhaustive()
    }
}

/// Who a denial is about, as the audit and the log name it. Never a secret.
#[derive(Debug, Clone, Copy)]
enum Actor<'a> {
    /// An identity the transport or adapter proved.
    Proven(&'a Identity),
    /// An identity a peer presented that nothing accepted (yet): `claimed-psk:…`.
    Claimed(IdentityKind, &'a str),
    /// No identity; the device id the message claims.
    Device(&'a str),
    /// A bearer token that matched nothing (the token itself is never named).
    Token,
}

impl Actor<'_> {
    fn parts(&self) -> (&'static str, &str) {
        match self {
            Actor::Proven(i) => (i.kind().prefix(), i.value()),
            Actor::Claimed(k, v) => (claimed_prefix(*k), v),
            Actor::Device(d) => ("claimed-device", d),
            Actor::Token => ("claimed-token", ""),
        }
    }

    fn name(&self) -> String {
        match self.parts() {
            (p, "") => p.to_owned(),
            (p, v) => format!("{p}:{}", printable(v)),
        }
    }
}

fn claimed_prefix(k: IdentityKind) -> &'static str {
    match k {
        IdentityKind::PskIdentity => "claimed-psk",
        IdentityKind::CertificateSha256 => "claimed-x509-sha256",
        IdentityKind::TokenSubject => "claimed-token",
    }
}

impl Registry {
    /// Loads and validates `path` (a `devices.toml`), warning about loose permissions on it
    /// and on every key file it names. Every problem is reported at once.
    pub fn load(
        path: impl Into<PathBuf>,
        audit: Arc<dyn AuditSink>,
        metrics: RegistryMetrics,
    ) -> Result<Registry, RegistryError> {
        Registry::load_with(path, audit, metrics, LoadOptions::default())
    }

    /// [`Registry::load`] with an injected clock and environment.
    pub fn load_with(
        path: impl Into<PathBuf>,
        audit: Arc<dyn AuditSink>,
        metrics: RegistryMetrics,
        opts: LoadOptions,
    ) -> Result<Registry, RegistryError> {
        let path = path.into();
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let (file, compiled) = read(&path, &base, &opts)?;
        let reg = Registry {
            path,
            base,
            state: RwLock::new(Arc::new(State {
                file,
                table: compiled.table,
            })),
            generation: AtomicU64::new(1),
            edit: Mutex::new(()),
            audit,
            metrics,
            limiter: Limiter::default(),
            pending: Mutex::new(PendingList::default()),
            held_total: AtomicU64::new(0),
            dismissed: Mutex::new(Vec::new()),
            dismissals: AtomicU64::new(0),
            opts,
        };
        reg.update_gauges();
        let s = reg.snapshot();
        tracing::info!(
            path = %reg.path.display(),
            devices = s.table.devices.len(),
            unknown = s.table.unknown.as_str(),
            "device registry loaded"
        );
        Ok(reg)
    }

    /// The registry file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What happens to unknown identities.
    pub fn unknown_policy(&self) -> UnknownPolicy {
        self.snapshot().table.unknown
    }

    /// Every device, in file order, without secrets.
    pub fn list(&self) -> Vec<DeviceView> {
        self.snapshot()
            .table
            .devices
            .iter()
            .map(DeviceView::from)
            .collect()
    }

    /// One device, without secrets.
    pub fn get(&self, id: &str) -> Option<DeviceView> {
        self.snapshot().table.by_id(id).map(DeviceView::from)
    }

    /// Unknown identities waiting for approval (`unknown = "quarantine"`), sorted by identity.
    pub fn pending(&self) -> Vec<PendingView> {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .views()
    }

    /// Forgets a pending identity (`psk:bed-99`) without approving it; readings held for it
    /// until now are discarded. Whether it was listed.
    pub fn dismiss_pending(&self, identity: &str, actor: &str) -> bool {
        let removed = {
            let mut p = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            let r = p.dismiss(identity);
            self.metrics.pending.set(gauge(p.len()));
            r
        };
        let Some(removed) = removed else {
            return false;
        };
        self.note_dismissal(removed);
        self.audit.record(
            AuditEvent::new(AuditKind::RegistryChange, "pending_dismissed")
                .actor(actor)
                .subject(printable(identity)),
        );
        true
    }

    /// Adds the device, or replaces the one with the same id. Approves any pending identity the
    /// device holds. Validated against the whole registry, written durably, then in effect.
    pub fn upsert(&self, spec: DeviceSpec, actor: &str) -> Result<(), RegistryError> {
        let id = spec.id.clone();
        let mut reason = "device_added";
        self.edit(actor, &id, "upsert", |file| {
            match file.devices.iter_mut().find(|d| d.id == spec.id) {
                Some(d) => {
                    *d = spec;
                    reason = "device_updated";
                }
                None => file.devices.push(spec),
            }
            Ok(())
        })
        .map(|()| self.record_change(actor, &id, reason))
    }

    /// Removes the device: its identities stop working on the next handshake or request, and
    /// open sessions relying on its key close on the generation change.
    pub fn remove(&self, id: &str, actor: &str) -> Result<(), RegistryError> {
        self.edit(actor, id, "remove", |file| {
            let before = file.devices.len();
            file.devices.retain(|d| d.id != id);
            if file.devices.len() == before {
                return Err(RegistryError::NotFound(printable(id)));
            }
            Ok(())
        })
        .map(|()| self.record_change(actor, id, "device_removed"))
    }

    /// Revokes the device (kept in the file, proving nothing) with immediate effect.
    pub fn revoke(&self, id: &str, actor: &str) -> Result<(), RegistryError> {
        self.set_revoked(id, true, actor)
            .map(|()| self.record_change(actor, id, "device_revoked"))
    }

    /// Lifts a revocation.
    pub fn restore(&self, id: &str, actor: &str) -> Result<(), RegistryError> {
        self.set_revoked(id, false, actor)
            .map(|()| self.record_change(actor, id, "device_restored"))
    }

    fn set_revoked(&self, id: &str, revoked: bool, actor: &str) -> Result<(), RegistryError> {
        let what = if revoked { "revoke" } else { "restore" };
        self.edit(actor, id, what, |file| {
            match file.devices.iter_mut().find(|d| d.id == id) {
                Some(d) => d.revoked = revoked,
                None => return Err(RegistryError::NotFound(printable(id))),
            }
            Ok(())
        })
    }

    /// Re-reads the file (SIGHUP, or after a hand edit). On any problem the current registry
    /// stays in effect and every problem is returned.
    pub fn reload(&self) -> Result<(), RegistryError> {
        let _guard = self.edit.lock().unwrap_or_else(PoisonError::into_inner);
        let subject = self.path.display().to_string();
        match read(&self.path, &self.base, &self.opts) {
            Ok((file, compiled)) => {
                self.install(file, compiled);
                self.metrics.reload("ok");
                tracing::info!(path = %subject, "device registry reloaded");
                self.audit.record(
                    AuditEvent::new(AuditKind::ConfigReload, "registry_reloaded").subject(subject),
                );
                Ok(())
            }
            Err(e) => {
                self.metrics.reload("rejected");
                tracing::warn!(
                    path = %subject,
                    "device registry reload rejected; the previous registry stays in effect: {e}"
                );
                self.audit.record(
                    AuditEvent::new(AuditKind::ConfigReload, "registry_reload_rejected")
                        .subject(subject),
                );
                Err(e)
            }
        }
    }

    /// Checks a bearer token (its bytes as sent) against the registered token hashes, in
    /// constant time per hash. On success the identity is a token subject
    /// `<device>/<token id>`, which [`Authorizer::authorize`] then accepts for that device.
    pub fn verify_bearer(&self, peer: &PeerContext, token: &[u8]) -> Result<Identity, Denied> {
        let digest = ring::digest::digest(&ring::digest::SHA256, token);
        let mut hash = [0u8; 32];
        hash.copy_from_slice(digest.as_ref());
        let s = self.snapshot();
        match s.table.by_token_hash(&hash) {
            Some((d, _)) if d.revoked => {
                Err(self.deny(DenyReason::Revoked, Actor::Token, Some(peer), Some(&d.id)))
            }
            Some((d, token_id)) => Ok(Identity::new(
                IdentityKind::TokenSubject,
                format!("{}/{token_id}", d.id),
            )),
            None => Err(self.deny(DenyReason::UnknownIdentity, Actor::Token, Some(peer), None)),
        }
    }

    fn snapshot(&self) -> Arc<State> {
        Arc::clone(&self.state.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Applies `change` to a copy of the file model, validates it, writes it, and only then
    /// swaps it in. Any error leaves memory and the file as they were.
    fn edit(
        &self,
        actor: &str,
        subject: &str,
        what: &'static str,
        change: impl FnOnce(&mut RegistryFile) -> Result<(), RegistryError>,
    ) -> Result<(), RegistryError> {
        let _guard = self.edit.lock().unwrap_or_else(PoisonError::into_inner);
        let mut file = self.snapshot().file.clone();
        let result = change(&mut file)
            .and_then(|()| {
                compile(&file, &self.base, &*self.opts.env).map_err(|problems| {
                    RegistryError::Invalid {
                        path: self.path.clone(),
                        problems,
                    }
                })
            })
            .and_then(|compiled| {
                warn_loose(&self.path, &compiled);
                let text = file
                    .to_toml()
                    .map_err(|e| RegistryError::Serialize(e.to_string()))?;
                let written = persist::write_atomic(&self.path, text.as_bytes());
                wipe(text);
                written.map(|()| compiled)
            });
        match result {
            Ok(compiled) => {
                self.install(file, compiled);
                self.metrics.edit("ok");
                Ok(())
            }
            Err(e) => {
                self.metrics.edit(match &e {
                    RegistryError::Invalid { .. } => "invalid",
                    RegistryError::NotFound(_) => "not_found",
                    RegistryError::Write { .. } | RegistryError::Read { .. } => "write_failed",
                    RegistryError::Serialize(_) => "serialize_failed",
                });
                tracing::warn!(
                    actor = ?printable(actor),
                    subject = ?printable(subject),
                    edit = what,
                    "device registry edit refused; nothing changed: {e}"
                );
                Err(e)
            }
        }
    }

    fn record_change(&self, actor: &str, id: &str, reason: &'static str) {
        tracing::info!(actor = ?printable(actor), device = ?printable(id), reason, "device registry changed");
        self.audit.record(
            AuditEvent::new(AuditKind::RegistryChange, reason)
                .actor(actor)
                .subject(printable(id)),
        );
    }

    /// Swaps the snapshot in, then moves the generation (a transport that sees the new
    /// generation reads the new table).
    fn install(&self, file: RegistryFile, compiled: Compiled) {
        let state = Arc::new(State {
            file,
            table: compiled.table,
        });
        {
            let mut p = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            p.retain_unknown(&state.table);
        }
        *self.state.write().unwrap_or_else(PoisonError::into_inner) = state;
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.update_gauges();
    }

    fn update_gauges(&self) {
        let s = self.snapshot();
        self.metrics.devices.set(gauge(s.table.devices.len()));
        self.metrics
            .generation
            .set(i64::try_from(self.generation.load(Ordering::SeqCst)).unwrap_or(i64::MAX));
        let pending = self
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        self.metrics.pending.set(gauge(pending));
    }

    fn note_pending(&self, kind: IdentityKind, value: &str, peer: Option<SocketAddr>) {
        let now = self.opts.clock.now();
        let mut p = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if p.note(kind, value, peer, now) {
            self.metrics.pending_evictions.inc();
        }
        self.metrics.pending.set(gauge(p.len()));
    }

    /// An identity no device holds: rejected, or quarantined (remembered for approval).
    fn unknown(
        &self,
        table: &Table,
        kind: IdentityKind,
        value: &str,
        actor: Actor<'_>,
        peer: Option<&PeerContext>,
        subject: Option<&str>,
    ) -> Denied {
        let reason = match table.unknown {
            UnknownPolicy::Reject => DenyReason::UnknownIdentity,
            UnknownPolicy::Quarantine => {
                self.note_pending(kind, value, peer.map(|p| p.addr));
                DenyReason::Quarantined
            }
        };
        self.deny(reason, actor, peer, subject)
    }

    /// Counts a denial, and logs and audits it unless the rate limit coalesces it.
    fn deny(
        &self,
        reason: DenyReason,
        actor: Actor<'_>,
        peer: Option<&PeerContext>,
        subject: Option<&str>,
    ) -> Denied {
        self.metrics.denied(reason);
        let key = self.limiter.key((reason.as_str(), actor.parts()));
        match self.limiter.check(key, self.opts.clock.now()) {
            Verdict::Coalesce => {
                self.metrics.denials_coalesced.inc();
            }
            Verdict::Emit { coalesced } => {
                let name = actor.name();
                let subject = subject.map(printable);
                tracing::warn!(
                    reason = reason.as_str(),
                    actor = ?name,
                    peer = ?peer.map(|p| p.addr),
                    subject = ?subject,
                    repeats_coalesced = coalesced,
                    "device registry refused"
                );
                let mut ev = AuditEvent::new(reason.audit_kind(), reason.as_str()).actor(name);
                if let Some(p) = peer {
                    ev = ev.peer(p.addr, p.transport);
                }
                if let Some(s) = subject {
                    ev = ev.subject(s);
                }
                self.audit.record(ev);
            }
        }
        reason.denied()
    }
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn warn_loose(path: &Path, compiled: &Compiled) {
    persist::warn_if_loose(path);
    for f in &compiled.key_files {
        persist::warn_if_loose(f);
    }
}

/// Reads, parses, validates and compiles the file; warns about loose permissions.
fn read(
    path: &Path,
    base: &Path,
    opts: &LoadOptions,
) -> Result<(RegistryFile, Compiled), RegistryError> {
    let text = std::fs::read_to_string(path).map_err(|source| RegistryError::Read {
        path: path.to_owned(),
        source,
    })?;
    let parsed = RegistryFile::parse(&text, path);
    wipe(text);
    let invalid = |problems| RegistryError::Invalid {
        path: path.to_owned(),
        problems,
    };
    let file = parsed.map_err(invalid)?;
    let compiled = compile(&file, base, &*opts.env).map_err(invalid)?;
    warn_loose(path, &compiled);
    Ok((file, compiled))
}

impl CredentialStore for Registry {
    fn psk(&self, identity: &str) -> Option<Secret> {
        let s = self.snapshot();
        match s.table.by_psk(identity) {
            Some(d) if !d.revoked => d.psk.as_ref().map(|p| p.key.clone()),
            Some(d) => {
                let actor = Actor::Claimed(IdentityKind::PskIdentity, identity);
                self.deny(DenyReason::Revoked, actor, None, Some(&d.id));
                None
            }
            None => {
                let actor = Actor::Claimed(IdentityKind::PskIdentity, identity);
                self.unknown(
                    &s.table,
                    IdentityKind::PskIdentity,
                    identity,
                    actor,
                    None,
                    None,
                );
                None
            }
        }
    }

    /// An unknown certificate is accepted under `unknown = "quarantine"`: the handshake proved
    /// the key, so what it sends can be held (module `quarantine`); it is listed as pending.
    fn knows_certificate(&self, sha256_hex: &str) -> bool {
        let s = self.snapshot();
        let actor = Actor::Claimed(IdentityKind::CertificateSha256, sha256_hex);
        match s.table.by_certificate(sha256_hex) {
            Some(d) if !d.revoked => true,
            Some(d) => {
                self.deny(DenyReason::Revoked, actor, None, Some(&d.id));
                false
            }
            None if s.table.unknown == UnknownPolicy::Quarantine => {
                self.note_pending(IdentityKind::CertificateSha256, sha256_hex, None);
                true
            }
            None => {
                let kind = IdentityKind::CertificateSha256;
                self.unknown(&s.table, kind, sha256_hex, actor, None, None);
                false
            }
        }
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    fn verify_bearer(&self, peer: &PeerContext, token: &[u8]) -> Result<Identity, Denied> {
        Registry::verify_bearer(self, peer, token)
    }
}

impl Authorizer for Registry {
    /// The rules, in order (the first that fails is the answer):
    /// 1. an identity must be proven (`no_identity`, 4.01);
    /// 2. it must belong to a device (`unknown_identity`, 4.01; or `quarantined`, 4.03);
    /// 3. the device must not be revoked (`revoked`, 4.01);
    /// 4. the protocol, in its plain or secure form per the transport, must be allowed
    ///    (`protocol_not_allowed`, 4.03);
    /// 5. for writes, the message class must be allowed (`class_not_allowed`, 4.03);
    /// 6. the resource must match (`resource_not_allowed`, 4.03);
    /// 7. the claimed device id (the device's own id when the claim is empty) must be a valid
    ///    device id matching `speaks_for` (`not_speaking_for`, 4.03).
    ///
    /// The answer is the claimed device id: readings are stored under the id they claim, once
    /// the proven device may speak for it.
    fn authorize(&self, req: &AuthRequest<'_>) -> Result<String, Denied> {
        self.decide(req, HoldMode::Refuse).map(|g| match g {
            Grant::Allow(d) | Grant::Hold(d) => d,
        })
    }

    /// [`Self::authorize`], except that under `unknown = "quarantine"` a write from a proven
    /// identity no device holds is held ([`Grant::Hold`]) instead of refused.
    fn authorize_write(&self, req: &AuthRequest<'_>) -> Result<Grant, Denied> {
        self.decide(req, HoldMode::Hold)
    }

    fn precheck_write(&self, req: &AuthRequest<'_>) -> Result<Grant, Denied> {
        self.decide(req, HoldMode::Peek)
    }

    fn authenticates(&self) -> bool {
        true
    }
}

/// Whether [`Registry::decide`] may hold a quarantined write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HoldMode {
    /// No: refuse it (`quarantined`).
    Refuse,
    /// Yes: note the identity, grant [`Grant::Hold`].
    Hold,
    /// Answer as `Hold` would, noting nothing (an adapter's check before the body).
    Peek,
}

impl Registry {
    /// The rules of [`Authorizer::authorize`]; `mode` says whether a quarantined write may be
    /// held.
    fn decide(&self, req: &AuthRequest<'_>, mode: HoldMode) -> Result<Grant, Denied> {
        let s = self.snapshot();
        let peer = req.peer;
        let claimed = req.claimed_device;
        let Some(identity) = &peer.identity else {
            let actor = Actor::Device(claimed);
            return Err(self.deny(DenyReason::NoIdentity, actor, Some(peer), Some(claimed)));
        };
        let actor = Actor::Proven(identity);
        let Some(dev) = s.table.by_identity(identity) else {
            if mode != HoldMode::Refuse
                && req.action == Action::Write
                && s.table.unknown == UnknownPolicy::Quarantine
            {
                return self.hold(&s.table, identity, req, mode == HoldMode::Peek);
            }
            let (kind, value) = (identity.kind(), identity.value());
            return Err(self.unknown(&s.table, kind, value, actor, Some(peer), Some(claimed)));
        };
        let refusal = if dev.revoked {
            Some((DenyReason::Revoked, claimed))
        } else if !dev.allows_protocol(protocol_bit(req.protocol, peer.transport)) {
            Some((DenyReason::ProtocolNotAllowed, claimed))
        } else if req.action == Action::Write && !dev.allows_class(req.class) {
            Some((DenyReason::ClassNotAllowed, claimed))
        } else if !dev.allows_resource(req.resource) {
            Some((DenyReason::ResourceNotAllowed, req.resource))
        } else {
            None
        };
        if let Some((reason, subject)) = refusal {
            return Err(self.deny(reason, actor, Some(peer), Some(subject)));
        }
        let device = if claimed.is_empty() {
            &*dev.id
        } else {
            claimed
        };
        if !valid_device_id(device.as_bytes()) || !dev.speaks_for(device) {
            let reason = DenyReason::NotSpeakingFor;
            return Err(self.deny(reason, actor, Some(peer), Some(device)));
        }
        Ok(Grant::Allow(device.to_owned()))
    }
}
