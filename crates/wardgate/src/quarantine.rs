//! The quarantine lane: the internal uplink (named [`QUARANTINE`]) that holds the readings of
//! proven but unknown identities (`unknown = "quarantine"` in `devices.toml`) until an
//! administrator decides.
//!
//! The outbox owes a held reading to this lane alone (`wardgate_store`'s routing). The lane
//! delivers nothing: it asks the registry about each reading ([`Registry::judge_held`]) and
//! - keeps it in flight while nobody decided (it stays in the outbox, durable across restarts);
//! - **releases** it when the identity was approved: the outbox hands it to the router, which
//!   places it on the configured uplinks in one durable step (the cursor's `release`), under
//!   the id the device was given;
//! - **acknowledges** it when it was dismissed (or the approving device's ACL refuses it):
//!   it leaves the outbox, counted and audited.
//!
//! It judges everything it holds again whenever the registry's quarantine epoch moves
//! (checked every [`EPOCH_POLL`] while it holds something; idle otherwise).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};
use wardgate_core::health::ComponentKind;
use wardgate_core::{
    Delivery, Health, HealthReporter, Identity, OutboxCursor, OutboxError, QUARANTINE, Reading,
    Shutdown, TransportKind, Uplink, UplinkTask,
};
use wardgate_registry::{HeldReading, HeldVerdict, Registry};

/// How often the lane looks at the registry's quarantine epoch while it holds readings.
const EPOCH_POLL: Duration = Duration::from_millis(250);
/// How long a released reading that no uplink could take waits before it is tried again.
const RELEASE_RETRY: Duration = Duration::from_secs(5);
/// Readings judged per cursor batch.
const BATCH: usize = 256;

/// The quarantine lane over the device registry.
#[derive(Debug)]
pub(crate) struct QuarantineLane {
    registry: Arc<Registry>,
    health: HealthReporter,
}

impl QuarantineLane {
    /// The lane deciding with `registry`. Its check `uplink.quarantine` (where the status page
    /// looks for an uplink's) says how much it holds; it is of the store's kind, not an
    /// uplink's, because it never delivers: it must not make a gateway whose real uplinks are
    /// all down look ready.
    pub(crate) fn new(registry: Arc<Registry>, health: &Health) -> Self {
        let health = health.reporter(format!("uplink.{QUARANTINE}"), ComponentKind::Store);
        QuarantineLane { registry, health }
    }
}

impl<C: OutboxCursor> Uplink<C> for QuarantineLane {
    fn name(&self) -> &str {
        QUARANTINE
    }

    fn start(self: Box<Self>, cursor: C, shutdown: Shutdown) -> UplinkTask {
        Box::pin(run(self.registry, self.health, cursor, shutdown))
    }
}

/// What the lane keeps of the readings it holds (the outbox keeps the readings).
#[derive(Debug, Default)]
struct Held {
    /// Held readings by seq, with the identity they are counted under.
    held: HashMap<u64, Identity>,
    /// Seqs released in this epoch: one seen again found no uplink; it waits for a retry.
    released: HashSet<u64>,
    /// When to try those again.
    retry_at: Option<Instant>,
    /// Readings that cannot be judged (no source identity), logged once each.
    unjudgeable: HashSet<u64>,
}

async fn run<C: OutboxCursor>(
    registry: Arc<Registry>,
    health: HealthReporter,
    mut cursor: C,
    shutdown: Shutdown,
) {
    let mut st = Held::default();
    let mut shown = None;
    let mut epoch = registry.quarantine_epoch();
    let mut tick = tokio::time::interval(EPOCH_POLL);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        if shown != Some(st.held.len()) {
            shown = Some(st.held.len());
            health.ready(format!(
                "holding {} readings of unknown identities (GET /admin/v1/pending)",
                st.held.len()
            ));
        }
        let holding = !st.held.is_empty() || st.retry_at.is_some();
        tokio::select! {
            () = shutdown.cancelled() => return,
            batch = cursor.next(BATCH) => match batch {
                Ok(ds) => judge(&registry, &mut cursor, &mut st, ds),
                Err(OutboxError::Closed) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "quarantine lane: reading the outbox failed; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            },
            _ = tick.tick(), if holding => {
                let now = registry.quarantine_epoch();
                let retry = st.retry_at.is_some_and(|t| t <= Instant::now());
                if now != epoch || retry {
                    epoch = now;
                    st.released.clear();
                    st.retry_at = None;
                    cursor.rewind();
                }
            }
        }
    }
}

/// Judges one batch: releases, acknowledges (discards) and keeps.
fn judge<C: OutboxCursor>(registry: &Registry, cursor: &mut C, st: &mut Held, ds: Vec<Delivery>) {
    let mut release = Vec::new();
    let mut discard = Vec::new();
    let mut decided: HashMap<(Identity, HeldVerdict), u64> = HashMap::new();
    for d in ds {
        let Some((identity, transport, reading)) = parse(&d) else {
            // Never deliver what nobody can approve; never drop it silently either.
            if st.unjudgeable.insert(d.seq) {
                tracing::error!(
                    id = %d.id,
                    "quarantine lane: a held reading names no identity; it stays held"
                );
            }
            continue;
        };
        let addr: Option<SocketAddr> = reading.source.as_ref().and_then(|s| s.addr.parse().ok());
        let verdict = registry.judge_held(&HeldReading {
            identity: &identity,
            transport,
            protocol: reading.protocol,
            class: reading.class,
            device: &reading.device,
            received: reading.received_at,
        });
        match verdict {
            HeldVerdict::Hold => {
                if let std::collections::hash_map::Entry::Vacant(e) = st.held.entry(d.seq) {
                    registry.count_held(&identity, addr, 1);
                    e.insert(identity);
                }
                continue;
            }
            HeldVerdict::Release if !st.released.insert(d.seq) => {
                // Released before in this epoch and handed back: no uplink took it (a router
                // that answered nothing). Keep it; try again after a pause.
                st.retry_at
                    .get_or_insert_with(|| Instant::now() + RELEASE_RETRY);
                continue;
            }
            HeldVerdict::Release => release.push(d.seq),
            HeldVerdict::Discard(_) => discard.push(d.seq),
        }
        if st.held.remove(&d.seq).is_some() {
            registry.count_held(&identity, None, -1);
        }
        *decided.entry((identity, verdict)).or_default() += 1;
    }
    if !release.is_empty() {
        cursor.release(&release);
    }
    if !discard.is_empty() {
        cursor.ack(&discard);
    }
    for ((identity, verdict), n) in decided {
        registry.quarantine_decided(&identity, verdict, n);
    }
}

/// The reading, the identity it is held for and the transport that proved it.
fn parse(d: &Delivery) -> Option<(Identity, TransportKind, Reading)> {
    let reading: Reading = serde_json::from_slice(&d.json).ok()?;
    let source = reading.source.as_ref()?;
    let identity = Identity::parse(source.identity.as_deref()?)?;
    let transport = source.transport;
    Some((identity, transport, reading))
}
