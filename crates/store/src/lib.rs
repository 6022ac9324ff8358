//! wardgate-store: the durable outbox between ingest and the uplinks.
//!
//! It owns the readings from the moment a device is told "accepted" until every uplink they are
//! owed to has acknowledged them upstream. Which uplinks that is, is decided once per reading
//! when it is appended, by the [`wardgate_core::Router`] given at open ([`OpenOptions`]; the
//! default, [`wardgate_core::AllUplinks`], owes every reading to every configured uplink), and
//! stored with the reading. Its promises:
//!
//! 1. **Ack means durable.** A request's `done` resolves `Ok` only after the transaction holding
//!    its readings is committed and fsynced (`durability = "fsync"`). A `kill -9` or power cut at
//!    any instant loses no acknowledged reading. The explicitly named `unsafe-no-fsync` mode
//!    acknowledges on receipt and warns at start-up that this promise is off.
//! 2. **At least once, in order, with the original id.** Each uplink's [`Cursor`] hands out
//!    readings in append (seq) order per lane, which keeps per-device order within a class:
//!    every uplink has an alarm lane and a lane for the other classes (two persisted bits), and
//!    its cursor hands out owed alarms before anything else, so an alarm never waits behind a
//!    backlog (at most [`MAX_UPLINKS`] = 31 uplinks). A reading leaves the outbox
//!    for an uplink only when that uplink acknowledges it. After a rewind or a restart,
//!    everything unacknowledged is handed out again with the same id and a non-zero
//!    `attempts`, counted in `wardgate_store_replayed_total`. `nack` hands deliveries out again
//!    the same way (from the lowest nacked seq), counted in `wardgate_store_nacked_total`.
//! 3. **Cutovers keep order across a failover.** Before routing each batch the writer asks the
//!    router for cutovers ([`wardgate_core::Router::take_cutovers`]) and moves what an uplink
//!    taken out of routing is still owed, in the same transaction as that batch, so no newer
//!    reading of a device reaches the new uplink before its older ones are owed there.
//! 4. **Never owed to nobody.** A reading the router owes to no configured uplink is owed to
//!    every uplink instead (`wardgate_store_unrouted_total`), never dropped or refused. A
//!    `release` moves a reading from the releasing uplink's bit to the router's choice of other
//!    uplinks in one row update inside one transaction, so after any crash it is owed to the
//!    old uplink or to the new ones; if no other uplink can take it, it stays owed to the
//!    releasing uplink (`wardgate_store_nacked_total{reason="release_unplaced"}`). The receiving
//!    uplink's cursor moves back to the released seq, so it hands the reading out before any
//!    later reading it has not had acknowledged: per-device order holds there too.
//!    (Removing an uplink from the configuration still deletes the readings only it was owed,
//!    as before routing; with a router that owes readings to a subset, those were not
//!    necessarily delivered elsewhere.)
//! 5. **Quotas with a policy, never silent drops.** `max_readings`/`max_bytes` are enforced per
//!    request: `reject` refuses it with [`wardgate_core::IngestError::StoreFull`] (the device
//!    keeps the reading), `drop-oldest` deletes the oldest readings and counts them in
//!    `wardgate_store_dropped_total{reason="overflow"}`. `max_age` expiry is counted as
//!    `reason="expired"`.
//! 6. **Bounded memory.** The writer holds at most one batch (`max_batch` readings); the
//!    in-memory tail is bounded by `tail_readings`/`tail_bytes`; cursors read `max` rows at a
//!    time; opening a cleanly closed store with a large backlog reads its counters, not its
//!    rows (after an unclean stop they are recounted, see `db.rs`).
//! 7. **Delivery outcomes are published, never waited for.** Every ack, nack and release is a
//!    [`wardgate_core::DeliveryOutcome`] (with the latency since the cursor handed the reading
//!    out, on `tokio::time`'s clock) on a bounded broadcast channel
//!    ([`Outbox::subscribe_outcomes`]); a subscriber that falls behind loses the oldest events,
//!    counted in `wardgate_store_outcome_events_lost_total`. The one
//!    [`OpenOptions::observer`] sees every outcome synchronously instead (lossless; it must be
//!    cheap).
//! 8. **Delivered means recorded.** With `[store] delivery_log` on (the default), each
//!    acknowledgement writes a `deliveries` row (reading id, uplink, time) in the transaction
//!    that clears the reading's bit, so a reading never leaves the outbox without a record of
//!    who delivered it ([`Outbox::trace`]); the record is bounded by age and rows.
//! 9. **Damage is reported, never papered over.** A file that is not a database, is truncated,
//!    or fails `quick_check` after an unclean stop is [`StoreError::Corrupt`], whose message
//!    names `wardgate store recover --config <file>` ([`recover`]), which salvages what is
//!    readable and keeps the damaged file aside.
//!
//! # Why SQLite (WAL, `synchronous=FULL`)
//!
//! - A WAL commit appends checksummed frames ending in a commit frame and fsyncs once. A write
//!   torn by a crash fails its checksum and is ignored at the next open, so the store always
//!   reopens at the last complete commit: torn-write handling is SQLite's, tested far beyond
//!   what a hand-rolled log would be.
//! - `synchronous=FULL` fsyncs the WAL at every commit, so an acknowledged reading survives
//!   power loss, not only a process crash (`NORMAL` would only survive the latter). The cost of
//!   that fsync is shared: the writer group-commits every request that arrives within
//!   `commit_window` (or while the previous fsync runs) in one transaction, so throughput
//!   scales with concurrency rather than with fsyncs per second. Between a light load and
//!   saturation, where each commit would otherwise carry one reading, the writer lingers for the
//!   requests a steady stream promises (`commit_linger`, adaptive: see the `linger` module).
//!   Commits that carry only
//!   acknowledgements, releases or expiry run with `synchronous=NORMAL`: losing one only
//!   repeats a delivery (or leaves a released reading with the uplink that released it), and
//!   WAL ordering makes the next fsynced commit cover it.
//! - One row per reading with a per-uplink bitmask (`pending`) means a reading is stored once
//!   however many uplinks there are, an acknowledgement is a primary-key update (or the
//!   delete, for the last uplink), a routing decision is the initial mask and a release is one
//!   update of it.
//! - WAL readers see a consistent snapshot without blocking the writer, so cursors that fell
//!   behind read by seq range on their own connections while the writer keeps committing.
//! - It is one C library built by `rusqlite`'s `bundled` feature (no system dependency), and a
//!   field engineer can inspect a store with the stock `sqlite3` shell.
//!
//! Alternatives considered: a hand-written segment log (our own checksums, compaction and
//! per-uplink ack index to write and prove), `sled` (unmaintained beta), `redb`/`fjall` (sound,
//! but no per-row inspection tooling and no salvage path for a damaged file), RocksDB (heavy C++
//! build for an edge box).
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod config;
mod cursor;
mod db;
mod error;
mod linger;
pub mod metrics;
mod outbox;
mod recover;
mod route;
mod tail;
mod trace;

pub use config::{Durability, OverflowPolicy, StoreConfig};
pub use cursor::Cursor;
pub use error::{RECOVER_COMMAND, StoreError};
pub use metrics::StoreMetrics;
pub use outbox::{MAX_CONFIGURED_UPLINKS, MAX_UPLINKS};
pub use outbox::{OpenOptions, Outbox, OutboxStats, UplinkStats};
pub use recover::{RecoverReport, recover};
pub use trace::{DeliveryRecord, PendingReading, ReadingTrace};
