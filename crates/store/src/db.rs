//! The writer's side of the SQLite file: schema, open-time checks, uplink registration, and the
//! single transaction each commit makes. Synchronous code: the async writer runs it on a
//! blocking thread.
//!
//! Schema (version 2; a version-1 file is migrated at open by adding `deliveries`):
//! - `readings(seq, id, device, class, received_ms, bytes, pending, json)`: one row per reading.
//!   `seq` is the rowid, assigned by the writer and strictly increasing for the life of the file
//!   (`meta.next_seq`), so it never goes backwards even when the table empties. `pending` is a
//!   bitmask of the uplinks still owed the reading; the row is deleted when it reaches 0. `json`
//!   is last so the fixed-size columns read without touching overflow pages.
//! - `uplinks(name, bit, owed, owed_bytes, low_seq)`: the bit each configured uplink owns, its
//!   backlog counters, and a lower bound on the oldest seq it is owed (where the "oldest
//!   undelivered" lookup starts, so it never rescans the whole table).
//! - `deliveries(id, uplink, acked_ms)`: the delivery record: which configured uplink
//!   acknowledged which reading (by its id) and when, written in the transaction that applies the
//!   acknowledgement, so a reading is never gone from `readings` without its record (when the
//!   record is enabled, `[store] delivery_log`). Keyed by the reading's ULID, whose
//!   time-ordered bytes let retention delete a prefix; bounded in age and rows.
//! - `meta(key, value)`: `schema_version`, `clean` (1 only after a clean shutdown), `next_seq`,
//!   the quota counters `readings` and `bytes`, and `adopt` (set by `recover` when the uplink
//!   table was lost: salvaged readings then go to every uplink configured at the next open).
//!
//! The counters (`readings`, `bytes`, and each uplink's `owed`, `owed_bytes`, `low_seq`) are
//! exact on disk only while `clean` is 1: the open marks the file not clean in the transaction
//! that loads them, commits keep them in memory only, and the clean close writes them in the
//! transaction that sets `clean` back to 1. So a clean open is O(1) however large the backlog,
//! an unclean stop (which already pays a full `quick_check`) recounts them from the rows, and a
//! commit writes no counter page. `next_seq` is a reservation instead, at or above every seq
//! ever assigned, rewritten once per [`SEQ_RESERVE`] readings: after a crash numbering resumes
//! at the reservation (skipping the unused rest), never below a seq already handed out.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rusqlite::{
    Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior, params,
};
use ulid::Ulid;
use wardgate_core::{Encoded, MAX_UPLINKS, MessageClass};

use crate::config::{Durability, OverflowPolicy, StoreConfig};
use crate::error::StoreError;
use crate::metrics::CommitKind;
use crate::tail::TailRow;

/// Newest schema this build reads and writes.
pub(crate) const SCHEMA_VERSION: i64 = 2;
/// Most delivery records one prune removes; the rest go at the next housekeeping.
const PRUNE_CHUNK: i64 = 50_000;
const PAGE_SIZE: i64 = 4096;
/// Every uplink bit set: rows salvaged without their owners go to every configured uplink.
pub(crate) const ADOPT_ALL: i64 = i64::MAX;
/// Most rows one expiry transaction deletes; the sweep continues in the next one.
const EXPIRE_CHUNK: i64 = 8192;
/// Readers wait this long for the writer's checkpoint before giving up with `SQLITE_BUSY`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// WAL size kept after a checkpoint; larger WALs are truncated back to this.
const JOURNAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;
/// Seqs reserved per write of `meta.next_seq` (at most this many are skipped after a crash).
const SEQ_RESERVE: u64 = 1 << 16;

pub(crate) const SCHEMA_V1: &str = "
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE uplinks (
    name       TEXT PRIMARY KEY,
    bit        INTEGER NOT NULL UNIQUE CHECK (bit BETWEEN 0 AND 62),
    owed       INTEGER NOT NULL DEFAULT 0,
    owed_bytes INTEGER NOT NULL DEFAULT 0,
    low_seq    INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE readings (
    seq         INTEGER PRIMARY KEY,
    id          BLOB NOT NULL,
    device      TEXT NOT NULL,
    class       INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    bytes       INTEGER NOT NULL,
    pending     INTEGER NOT NULL,
    json        BLOB NOT NULL
);
";

/// Added in version 2: the delivery record.
pub(crate) const SCHEMA_V2: &str = "
CREATE TABLE deliveries (
    id       BLOB NOT NULL,
    uplink   TEXT NOT NULL,
    acked_ms INTEGER NOT NULL,
    PRIMARY KEY (id, uplink)
) WITHOUT ROWID;
";

/// The WAL file SQLite keeps beside `path`.
pub(crate) fn wal_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push("-wal");
    PathBuf::from(s)
}

/// The shared-memory index SQLite keeps beside `path`.
pub(crate) fn shm_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push("-shm");
    PathBuf::from(s)
}

/// Opens a connection with the settings every connection to the store uses.
pub(crate) fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    Ok(conn)
}

/// An error of our own making in rusqlite's type, for paths that must look like a failed
/// SQLite call (the writer answers `Unavailable` with its message).
pub(crate) fn misuse(msg: &str) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_MISUSE),
        Some(msg.to_owned()),
    )
}

pub(crate) fn class_code(c: MessageClass) -> i64 {
    match c {
        MessageClass::Alarm => 0,
        MessageClass::Vital => 1,
        MessageClass::Telemetry => 2,
        MessageClass::Bulk => 3,
        MessageClass::Security => 4,
    }
}

/// Inverse of [`class_code`]. An unknown code (a damaged row) still delivers, as the default
/// class, rather than wedging the uplink.
pub(crate) fn class_from_code(code: i64) -> MessageClass {
    match code {
        0 => MessageClass::Alarm,
        1 => MessageClass::Vital,
        2 => MessageClass::Telemetry,
        3 => MessageClass::Bulk,
        4 => MessageClass::Security,
        other => {
            tracing::warn!(
                code = other,
                "outbox row has an unknown message class; delivering it as the default class"
            );
            MessageClass::default()
        }
    }
}

pub(crate) fn ulid_from_blob(b: &[u8]) -> Option<Ulid> {
    let arr: [u8; 16] = b.try_into().ok()?;
    Some(Ulid::from_bytes(arr))
}

pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(crate) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

pub(crate) fn meta_get(conn: &Connection, key: &str) -> rusqlite::Result<Option<i64>> {
    conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()
}

pub(crate) fn meta_set(conn: &Connection, key: &str, value: i64) -> rusqlite::Result<()> {
    conn.prepare_cached("INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value")?
        .execute(params![key, value])?;
    Ok(())
}

/// One configured uplink as the writer tracks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UplinkState {
    pub(crate) name: String,
    pub(crate) bit: u8,
    /// Readings still owed to this uplink, and their bytes.
    pub(crate) owed: u64,
    pub(crate) owed_bytes: u64,
    /// The oldest reading owed: (seq, received_ms).
    pub(crate) oldest: Option<(u64, i64)>,
    /// Lower bound on the oldest owed seq as persisted.
    pub(crate) low_seq: u64,
}

impl UplinkState {
    pub(crate) fn mask(&self) -> i64 {
        1i64 << self.bit
    }
}

/// The writer's counters, written to `meta`/`uplinks` at open and at the clean close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct State {
    pub(crate) next_seq: u64,
    pub(crate) readings: u64,
    pub(crate) bytes: u64,
    /// In configuration order.
    pub(crate) uplinks: Vec<UplinkState>,
    /// Rows in `deliveries`, and the creation time (ms) of the oldest reading they record.
    pub(crate) deliveries: u64,
    pub(crate) oldest_delivery_ms: Option<i64>,
}

impl State {
    fn all_mask(&self) -> i64 {
        self.uplinks.iter().fold(0, |m, u| m | u.mask())
    }

    /// Removes one deleted row from every counter.
    fn forget_row(&mut self, seq: u64, pending: i64, bytes: u64, dirty: &mut [bool]) {
        self.readings = self.readings.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(bytes);
        for (i, u) in self.uplinks.iter_mut().enumerate() {
            if pending & u.mask() != 0 {
                u.owed = u.owed.saturating_sub(1);
                u.owed_bytes = u.owed_bytes.saturating_sub(bytes);
                if u.oldest.is_some_and(|(s, _)| s <= seq) {
                    dirty[i] = true;
                }
            }
        }
    }
}

/// An uplink that was configured before and no longer is.
#[derive(Debug, Clone)]
pub(crate) struct Released {
    pub(crate) name: String,
    pub(crate) readings: u64,
}

/// What `Db::open` found and did, for the log.
#[derive(Debug, Default)]
pub(crate) struct OpenReport {
    pub(crate) created: bool,
    pub(crate) was_clean: bool,
    pub(crate) quick_check: Option<Duration>,
    pub(crate) added: Vec<String>,
    pub(crate) released: Vec<Released>,
    /// Readings deleted because no configured uplink is owed them any more.
    pub(crate) orphans_deleted: u64,
    /// Readings handed to every uplink after a recovery that lost the uplink table.
    pub(crate) adopted: u64,
    /// Counters that disagreed with a recount: (stored readings, stored bytes, counted readings,
    /// counted bytes).
    pub(crate) recount_fixed: Option<(u64, u64, u64, u64)>,
    /// The schema version the file had when it was migrated at this open.
    pub(crate) migrated_from: Option<i64>,
}

/// One commit's input.
#[derive(Debug, Default)]
pub(crate) struct Work {
    /// Accepted readings, in arrival order.
    pub(crate) readings: Vec<Encoded>,
    /// The routed `pending` mask of each reading (same order; never 0). A reading without one
    /// is owed to every uplink.
    pub(crate) pending: Vec<i64>,
    /// Acknowledged seqs per uplink index.
    pub(crate) acks: Vec<(usize, Vec<u64>)>,
    /// Released deliveries per uplink index: (seq, mask of the uplinks taking it over).
    pub(crate) releases: Vec<(usize, Vec<(u64, i64)>)>,
    /// Router cutovers: readings owed on a lane of an uplink taken out of routing move to
    /// other uplinks (see [`wardgate_core::Router::take_cutovers`]).
    pub(crate) cutovers: Vec<CutoverWork>,
    /// Delete readings received before this instant (ms since the epoch).
    pub(crate) expire_before_ms: Option<i64>,
    /// Prune the delivery record: records of readings created before this instant (ms since
    /// the epoch), then the oldest beyond the row bound.
    pub(crate) prune_deliveries_before_ms: Option<i64>,
    /// The receive stamp for new readings (ms since the epoch).
    pub(crate) now_ms: i64,
}

/// One cutover move: every reading of `class` owed on lane `slot` (bit `from_mask`) is moved
/// to the bits of `target`, except the ids in `keep`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CutoverWork {
    pub(crate) slot: usize,
    pub(crate) from_mask: i64,
    pub(crate) class: MessageClass,
    pub(crate) target: i64,
    pub(crate) keep: Vec<Ulid>,
}

impl Work {
    pub(crate) fn is_empty(&self) -> bool {
        self.readings.is_empty()
            && self.acks.is_empty()
            && self.releases.is_empty()
            && self.cutovers.is_empty()
            && self.expire_before_ms.is_none()
            && self.prune_deliveries_before_ms.is_none()
    }
}

/// One commit's result.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub(crate) appended: Vec<TailRow>,
    pub(crate) overflow_dropped: u64,
    /// Every seq at or below this was deleted (overflow or expiry: both delete a prefix).
    pub(crate) deleted_through: Option<u64>,
    pub(crate) expired: u64,
    /// The expiry sweep stopped at its chunk size; more may be due.
    pub(crate) more_expiry: bool,
    /// Acknowledgements that cleared a pending bit, per uplink index.
    pub(crate) acked: Vec<u64>,
    /// Rows whose `pending` a release changed: (seq, new pending).
    pub(crate) moved: Vec<(u64, i64)>,
    /// Seqs newly owed to each uplink index by a release, ascending per release batch.
    pub(crate) received: Vec<Vec<u64>>,
    /// Readings moved by cutovers, per lane slot they left.
    pub(crate) cut: Vec<u64>,
    /// Per lane slot: the lowest seq a cutover made owed to it (its cursor rescans from there).
    pub(crate) rescan_from: Vec<Option<u64>>,
    /// The cutovers applied, for the in-memory tail: (from mask, class, target mask, kept ids).
    pub(crate) cut_tail: Vec<(i64, MessageClass, i64, Vec<Ulid>)>,
    pub(crate) elapsed: Duration,
    pub(crate) kind: Option<CommitKind>,
}

/// What SQLite is currently told about syncing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SyncMode {
    Full,
    Normal,
    Off,
}

/// The writer's connection and counters.
#[derive(Debug)]
pub(crate) struct Db {
    conn: Connection,
    path: PathBuf,
    durability: Durability,
    overflow: OverflowPolicy,
    max_readings: u64,
    max_bytes: u64,
    sync: Option<SyncMode>,
    closed: bool,
    abandoned: bool,
    /// `meta.next_seq` as committed: never below `state.next_seq`.
    seq_reserved: u64,
    /// Most rows of the delivery record; `None` when it is off.
    delivery_rows: Option<u64>,
    pub(crate) state: State,
}

impl Db {
    /// Opens or creates the store; see [`crate::Outbox::open`].
    pub(crate) fn open(
        cfg: &StoreConfig,
        uplinks: &[String],
    ) -> Result<(Db, OpenReport), StoreError> {
        let path = cfg.path.clone();
        validate_uplinks(uplinks)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)
                .map_err(|e| StoreError::io(dir, "creating the store directory", e))?;
        }
        let sq = |op: &'static str| {
            let path = path.clone();
            move |e: rusqlite::Error| StoreError::sqlite(&path, op, e)
        };
        let mut report = OpenReport::default();
        precheck_file(&path)?;
        let mut conn = connect(&path).map_err(sq("opening"))?;
        // Only takes effect on a new, empty file.
        conn.pragma_update(None, "page_size", PAGE_SIZE)
            .map_err(sq("setting the page size"))?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(sq("switching to WAL"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Sqlite {
                path,
                op: "switching to WAL",
                source: misuse(&format!("journal_mode stayed {mode:?}")),
            });
        }
        conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)
            .map_err(sq("setting journal_size_limit"))?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sq("setting synchronous"))?;

        let has_meta: bool = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'meta'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map_err(sq("reading the schema"))?
            > 0;
        if !has_meta {
            let tables: i64 = conn
                .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
                .map_err(sq("reading the schema"))?;
            if tables > 0 {
                return Err(StoreError::Corrupt {
                    path,
                    detail:
                        "the file is a SQLite database but not a wardgate outbox (no meta table)"
                            .into(),
                });
            }
            create_schema(&mut conn).map_err(sq("creating the schema"))?;
            report.created = true;
            report.was_clean = true;
        } else {
            let version = meta_get(&conn, "schema_version")
                .map_err(sq("reading the schema version"))?
                .unwrap_or(0);
            if version > SCHEMA_VERSION {
                return Err(StoreError::UnsupportedSchema {
                    path,
                    found: version,
                    supported: SCHEMA_VERSION,
                });
            }
            if version < 1 {
                return Err(StoreError::Corrupt {
                    path,
                    detail: format!("unknown schema version {version}"),
                });
            }
            report.was_clean =
                meta_get(&conn, "clean").map_err(sq("reading the clean marker"))? == Some(1);
            if version < SCHEMA_VERSION {
                report.migrated_from = Some(version);
            }
        }

        if !report.was_clean {
            let started = Instant::now();
            let problems = quick_check(&conn).map_err(sq("running quick_check"))?;
            report.quick_check = Some(started.elapsed());
            if !problems.is_empty() {
                return Err(StoreError::Corrupt {
                    path,
                    detail: format!("quick_check: {}", problems.join("; ")),
                });
            }
        }

        // After the integrity check: a damaged file is reported, never written to.
        if let Some(from) = report.migrated_from {
            migrate(&mut conn, from).map_err(sq("migrating the schema"))?;
        }
        let mut state =
            prepare(&mut conn, uplinks, &mut report).map_err(sq("registering uplinks"))?;
        (state.deliveries, state.oldest_delivery_ms) =
            count_deliveries(&conn).map_err(sq("counting the delivery record"))?;
        let delivery_rows = (!cfg.delivery_log.is_zero()).then_some(cfg.delivery_log_rows);
        let db = Db {
            conn,
            path,
            durability: cfg.durability,
            overflow: cfg.overflow,
            max_readings: cfg.max_readings,
            max_bytes: cfg.max_bytes,
            sync: None,
            closed: false,
            abandoned: false,
            seq_reserved: state.next_seq,
            delivery_rows,
            state,
        };
        Ok((db, report))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    #[cfg(test)]
    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    fn set_sync(&mut self, kind: CommitKind) -> rusqlite::Result<()> {
        let want = match (self.durability, kind) {
            (Durability::UnsafeNoFsync, _) => SyncMode::Off,
            (Durability::Fsync, CommitKind::Ingest) => SyncMode::Full,
            // Losing an acknowledgement only repeats a delivery, so it need not wait for the
            // disk; WAL order means the next fsynced commit makes it durable too.
            (Durability::Fsync, CommitKind::Housekeeping) => SyncMode::Normal,
        };
        if self.sync != Some(want) {
            let v = match want {
                SyncMode::Full => "FULL",
                SyncMode::Normal => "NORMAL",
                SyncMode::Off => "OFF",
            };
            self.conn.pragma_update(None, "synchronous", v)?;
            self.sync = Some(want);
        }
        Ok(())
    }

    /// Applies `work` in one transaction. On error nothing changed (the transaction rolled back
    /// and the counters are untouched).
    pub(crate) fn commit(&mut self, work: &Work) -> rusqlite::Result<Outcome> {
        if self.abandoned {
            return Err(misuse("the outbox was abandoned"));
        }
        if self.closed {
            return Err(misuse("the outbox is closed"));
        }
        let started = Instant::now();
        let kind = if work.readings.is_empty() {
            CommitKind::Housekeeping
        } else {
            CommitKind::Ingest
        };
        self.set_sync(kind)?;
        let mut st = self.state.clone();
        let mut out = Outcome {
            acked: vec![0; st.uplinks.len()],
            received: vec![Vec::new(); st.uplinks.len()],
            cut: vec![0; st.uplinks.len()],
            rescan_from: vec![None; st.uplinks.len()],
            kind: Some(kind),
            ..Outcome::default()
        };
        let mut dirty = vec![false; st.uplinks.len()];
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;

        append(&tx, &mut st, work, &mut out)?;
        let log = self.delivery_rows.is_some().then_some(work.now_ms);
        apply_acks(&tx, &mut st, &work.acks, log, &mut out, &mut dirty)?;
        apply_releases(&tx, &mut st, &work.releases, &mut out, &mut dirty)?;
        apply_cutovers(&tx, &mut st, &work.cutovers, &mut out, &mut dirty)?;
        if let Some(cutoff) = work.expire_before_ms {
            expire(&tx, &mut st, cutoff, &mut out, &mut dirty)?;
        }
        if let Some(cutoff) = work.prune_deliveries_before_ms {
            let max_rows = self.delivery_rows.unwrap_or(0);
            prune_deliveries(&tx, &mut st, cutoff, max_rows)?;
        }
        if self.overflow == OverflowPolicy::DropOldest
            && (st.readings > self.max_readings || st.bytes > self.max_bytes)
        {
            let need_r = st.readings.saturating_sub(self.max_readings);
            let need_b = st.bytes.saturating_sub(self.max_bytes);
            if let Some(through) = oldest_prefix(&tx, need_r, need_b)? {
                let n = delete_through(&tx, &mut st, through, &mut dirty)?;
                out.overflow_dropped += n;
                out.deleted_through = out.deleted_through.max(Some(through));
            }
        }
        for (i, u) in st.uplinks.iter_mut().enumerate() {
            if dirty[i] {
                let from = u.oldest.map_or(u.low_seq, |(s, _)| s);
                u.oldest = find_oldest(&tx, u.mask(), from)?;
            }
            u.low_seq = u.oldest.map_or(st.next_seq, |(s, _)| s);
        }
        // The other counters are recounted after an unclean stop and written by `close`.
        let mut reserved = self.seq_reserved;
        if st.next_seq > reserved {
            reserved = st.next_seq.saturating_add(SEQ_RESERVE);
            meta_set(&tx, "next_seq", to_i64(reserved))?;
        }
        tx.commit()?;
        self.seq_reserved = reserved;
        self.state = st;
        out.elapsed = started.elapsed();
        Ok(out)
    }

    /// Refuses every later write, leaving the file as a crash would (no clean marker).
    pub(crate) fn abandon(&mut self) {
        self.abandoned = true;
    }

    /// Clean shutdown: writes the counters and marks the file clean in one (fsynced)
    /// transaction, then checkpoints the WAL into the file.
    /// Returns false when readers kept the checkpoint from completing (harmless: the WAL is
    /// replayed at the next open).
    pub(crate) fn close(&mut self) -> rusqlite::Result<bool> {
        if self.abandoned {
            return Err(misuse(
                "the outbox was abandoned; it is left as a crash leaves it",
            ));
        }
        if self.closed {
            return Ok(true);
        }
        self.conn.pragma_update(None, "synchronous", "FULL")?;
        self.sync = Some(SyncMode::Full);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        persist_counters(&tx, &self.state)?;
        meta_set(&tx, "clean", 1)?;
        tx.commit()?;
        let busy: i64 = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
        self.closed = true;
        Ok(busy == 0)
    }
}

fn validate_uplinks(uplinks: &[String]) -> Result<(), StoreError> {
    if uplinks.is_empty() {
        return Err(StoreError::NoUplinks);
    }
    if uplinks.len() > MAX_UPLINKS {
        return Err(StoreError::TooManyUplinks {
            count: uplinks.len(),
        });
    }
    let mut seen = HashSet::new();
    for u in uplinks {
        if !seen.insert(u.as_str()) {
            return Err(StoreError::DuplicateUplink(u.clone()));
        }
    }
    Ok(())
}

pub(crate) fn create_schema(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    tx.execute_batch(SCHEMA_V1)?;
    tx.execute_batch(SCHEMA_V2)?;
    for (k, v) in [
        ("schema_version", SCHEMA_VERSION),
        ("clean", 1),
        ("next_seq", 1),
        ("readings", 0),
        ("bytes", 0),
        ("adopt", 0),
    ] {
        meta_set(&tx, k, v)?;
    }
    tx.commit()
}

/// Brings a file of schema `from` (older than [`SCHEMA_VERSION`]) up to date in one
/// transaction. Version 1 → 2 adds the delivery record; nothing else changes, so an older build
/// refuses the migrated file (its schema is newer) rather than misreading it.
fn migrate(conn: &mut Connection, from: i64) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if from < 2 {
        tx.execute_batch(SCHEMA_V2)?;
    }
    meta_set(&tx, "schema_version", SCHEMA_VERSION)?;
    tx.commit()
}

/// Rows of the delivery record and the creation time of the oldest reading it records.
fn count_deliveries(conn: &Connection) -> rusqlite::Result<(u64, Option<i64>)> {
    let rows: i64 = conn.query_row("SELECT count(*) FROM deliveries", [], |r| r.get(0))?;
    let oldest: Option<Vec<u8>> = conn
        .query_row("SELECT id FROM deliveries ORDER BY id LIMIT 1", [], |r| {
            r.get(0)
        })
        .optional()?;
    Ok((to_u64(rows), oldest.as_deref().and_then(ulid_ms)))
}

/// The creation time (ms since the epoch) in a stored ULID.
fn ulid_ms(blob: &[u8]) -> Option<i64> {
    ulid_from_blob(blob).map(|u| i64::try_from(u.timestamp_ms()).unwrap_or(i64::MAX))
}

/// Deletes the delivery records of readings created before `cutoff_ms`, then the oldest beyond
/// `max_rows`, at most about [`PRUNE_CHUNK`] rows per call. Both delete a prefix of the ULID
/// order.
fn prune_deliveries(
    tx: &Transaction<'_>,
    st: &mut State,
    cutoff_ms: i64,
    max_rows: u64,
) -> rusqlite::Result<()> {
    let cutoff = Ulid::from_parts(u64::try_from(cutoff_ms).unwrap_or(0), 0).to_bytes();
    // The id of the PRUNE_CHUNK-th record (or the excess-th), inclusive bound of one delete.
    let nth = |n: i64| -> rusqlite::Result<Option<Vec<u8>>> {
        tx.query_row(
            "SELECT id FROM deliveries ORDER BY id LIMIT 1 OFFSET ?1",
            [n.saturating_sub(1).max(0)],
            |r| r.get(0),
        )
        .optional()
    };
    let chunk_end = nth(PRUNE_CHUNK)?;
    let n = match chunk_end.filter(|end| end.as_slice() < &cutoff[..]) {
        Some(end) => tx.execute("DELETE FROM deliveries WHERE id <= ?1", [end])?,
        None => tx.execute("DELETE FROM deliveries WHERE id < ?1", [&cutoff[..]])?,
    };
    st.deliveries = st.deliveries.saturating_sub(n as u64);
    let excess = st.deliveries.saturating_sub(max_rows);
    if excess > 0 {
        let take = i64::try_from(excess).unwrap_or(i64::MAX).min(PRUNE_CHUNK);
        if let Some(end) = nth(take)? {
            let n = tx.execute("DELETE FROM deliveries WHERE id <= ?1", [end])? as u64;
            st.deliveries = st.deliveries.saturating_sub(n);
        }
    }
    let oldest: Option<Vec<u8>> = tx
        .query_row("SELECT id FROM deliveries ORDER BY id LIMIT 1", [], |r| {
            r.get(0)
        })
        .optional()?;
    st.oldest_delivery_ms = oldest.as_deref().and_then(ulid_ms);
    Ok(())
}

/// Reads the 100-byte SQLite header before SQLite does, so damage gets a precise message.
/// A file shorter than its header says was truncated (SQLite would only notice when it reads a
/// missing page). The size check is meaningful only when the WAL is empty: otherwise the WAL
/// holds the newest pages and the size.
fn precheck_file(path: &Path) -> Result<(), StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt {
        path: path.to_owned(),
        detail,
    };
    let mut f = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StoreError::io(path, "opening", e)),
    };
    let len = f
        .metadata()
        .map_err(|e| StoreError::io(path, "reading the file size", e))?
        .len();
    if len == 0 {
        return Ok(());
    }
    let mut h = [0u8; 100];
    if len < 100 || std::io::Read::read_exact(&mut f, &mut h).is_err() {
        return Err(corrupt(format!(
            "the file is only {len} bytes: not a SQLite database"
        )));
    }
    if &h[..16] != b"SQLite format 3\0" {
        return Err(corrupt(
            "the file header is not a SQLite header (overwritten or not a database)".into(),
        ));
    }
    let be32 = |i: usize| u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    let page_size = match u16::from_be_bytes([h[16], h[17]]) {
        1 => 65_536u64,
        n if n >= 512 && n.is_power_of_two() => u64::from(n),
        n => {
            return Err(corrupt(format!(
                "the header names an impossible page size {n}"
            )));
        }
    };
    let wal_len = fs::metadata(wal_path(path)).map(|m| m.len()).unwrap_or(0);
    if wal_len > 0 {
        return Ok(());
    }
    let pages = u64::from(be32(28));
    // The in-header size is only authoritative when "version-valid-for" matches the change
    // counter; SQLite falls back to the file size otherwise.
    let size_valid = pages > 0 && be32(24) == be32(92);
    if len % page_size != 0 || (size_valid && len < pages * page_size) {
        return Err(corrupt(format!(
            "the file is {len} bytes but its header says {pages} pages of {page_size} bytes: it was truncated"
        )));
    }
    Ok(())
}

/// `PRAGMA quick_check`: the problems found (at most a few), empty when the file is sound.
pub(crate) fn quick_check(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare("PRAGMA quick_check(5)")?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    let mut problems = Vec::new();
    for r in rows {
        let r = r?;
        if r != "ok" {
            problems.push(r);
        }
    }
    Ok(problems)
}

/// Registers uplinks, releases removed ones, applies a pending adoption, recounts after an
/// unclean stop, and loads the counters. Marks the file "not clean" in the same transaction.
fn prepare(
    conn: &mut Connection,
    configured: &[String],
    report: &mut OpenReport,
) -> rusqlite::Result<State> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let max_seq: i64 = tx.query_row("SELECT COALESCE(MAX(seq), 0) FROM readings", [], |r| {
        r.get(0)
    })?;
    let stored_next = meta_get(&tx, "next_seq")?.unwrap_or(1);
    let next_seq = to_u64(stored_next.max(max_seq.saturating_add(1)));

    let mut registered: Vec<(String, u8)> = Vec::new();
    {
        let mut stmt = tx.prepare("SELECT name, bit FROM uplinks ORDER BY bit")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        for r in rows {
            let (name, bit) = r?;
            registered.push((name, u8::try_from(bit).unwrap_or(63)));
        }
    }
    let mut must_recount = !report.was_clean;
    let mut released_mask = 0i64;
    for (name, bit) in &registered {
        if !configured.contains(name) {
            let mask = 1i64 << (*bit).min(62);
            let n = tx.execute(
                "UPDATE readings SET pending = pending & ~?1 WHERE (pending & ?1) != 0",
                [mask],
            )?;
            tx.execute("DELETE FROM uplinks WHERE name = ?1", [name])?;
            released_mask |= mask;
            report.released.push(Released {
                name: name.clone(),
                readings: n as u64,
            });
        }
    }
    if released_mask != 0 {
        report.orphans_deleted = tx.execute("DELETE FROM readings WHERE pending = 0", [])? as u64;
        must_recount = true;
    }
    let used: HashSet<u8> = registered
        .iter()
        .filter(|(n, _)| configured.contains(n))
        .map(|(_, b)| *b)
        .collect();
    let mut free = (0u8..63).filter(|b| !used.contains(b));
    let mut uplinks = Vec::with_capacity(configured.len());
    for name in configured {
        let bit = match registered.iter().find(|(n, _)| n == name) {
            Some((_, bit)) => *bit,
            None => {
                // validate_uplinks bounds the count to 63, so a bit is always free.
                let bit = free.next().unwrap_or(62);
                tx.execute(
                    "INSERT INTO uplinks (name, bit, owed, owed_bytes, low_seq) VALUES (?1, ?2, 0, 0, ?3)",
                    params![name, i64::from(bit), to_i64(next_seq)],
                )?;
                report.added.push(name.clone());
                bit
            }
        };
        let (owed, owed_bytes, low_seq): (i64, i64, i64) = tx.query_row(
            "SELECT owed, owed_bytes, low_seq FROM uplinks WHERE bit = ?1",
            [i64::from(bit)],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        uplinks.push(UplinkState {
            name: name.clone(),
            bit,
            owed: to_u64(owed),
            owed_bytes: to_u64(owed_bytes),
            oldest: None,
            low_seq: to_u64(low_seq),
        });
    }

    if meta_get(&tx, "adopt")? == Some(1) {
        // Every uplink, on the lane of the reading's class (priority lanes are the names
        // with a `/`, see `outbox::lane_names`), so no uplink gets a reading on both lanes.
        let (priority, normal) = uplinks.iter().fold((0i64, 0i64), |(p, n), u| {
            if u.name.contains('/') {
                (p | u.mask(), n)
            } else {
                (p, n | u.mask())
            }
        });
        // A file opened without lanes (the store's own unit tests) has no priority lane.
        let priority = if priority == 0 { normal } else { priority };
        let alarm = class_code(MessageClass::Alarm);
        let security = class_code(MessageClass::Security);
        report.adopted = tx.execute(
            "UPDATE readings SET pending = pending & (CASE WHEN class IN (?3, ?5) THEN ?1 ELSE ?4 END) \
             WHERE pending = ?2",
            params![priority, ADOPT_ALL, alarm, normal, security],
        )? as u64;
        // Salvaged rows whose own bits matched no configured uplink.
        report.orphans_deleted += tx.execute("DELETE FROM readings WHERE pending = 0", [])? as u64;
        meta_set(&tx, "adopt", 0)?;
        must_recount = true;
    }

    let stored_readings = to_u64(meta_get(&tx, "readings")?.unwrap_or(0));
    let stored_bytes = to_u64(meta_get(&tx, "bytes")?.unwrap_or(0));
    let mut state = State {
        next_seq,
        readings: stored_readings,
        bytes: stored_bytes,
        uplinks,
        deliveries: 0,
        oldest_delivery_ms: None,
    };
    if must_recount {
        let before = state.clone();
        recount(&tx, &mut state)?;
        if (before.readings, before.bytes) != (state.readings, state.bytes)
            || before
                .uplinks
                .iter()
                .zip(&state.uplinks)
                .any(|(a, b)| (a.owed, a.owed_bytes) != (b.owed, b.owed_bytes))
        {
            report.recount_fixed =
                Some((before.readings, before.bytes, state.readings, state.bytes));
        }
    }
    for u in &mut state.uplinks {
        u.oldest = find_oldest(&tx, u.mask(), u.low_seq)?;
        u.low_seq = u.oldest.map_or(state.next_seq, |(s, _)| s);
    }
    persist_counters(&tx, &state)?;
    meta_set(&tx, "clean", 0)?;
    tx.commit()?;
    Ok(state)
}

/// Recomputes every counter with one pass over the table.
fn recount(conn: &Connection, st: &mut State) -> rusqlite::Result<()> {
    st.readings = 0;
    st.bytes = 0;
    for u in &mut st.uplinks {
        u.owed = 0;
        u.owed_bytes = 0;
        u.oldest = None;
        u.low_seq = st.next_seq;
    }
    let mut stmt = conn.prepare("SELECT seq, pending, bytes FROM readings ORDER BY seq")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let seq = to_u64(r.get(0)?);
        let pending: i64 = r.get(1)?;
        let bytes = to_u64(r.get(2)?);
        st.readings += 1;
        st.bytes += bytes;
        for u in &mut st.uplinks {
            if pending & u.mask() != 0 {
                u.owed += 1;
                u.owed_bytes += bytes;
                u.low_seq = u.low_seq.min(seq);
            }
        }
    }
    Ok(())
}

fn find_oldest(conn: &Connection, mask: i64, from: u64) -> rusqlite::Result<Option<(u64, i64)>> {
    conn.prepare_cached(
        "SELECT seq, received_ms FROM readings WHERE seq >= ?1 AND (pending & ?2) != 0 ORDER BY seq LIMIT 1",
    )?
    .query_row(params![to_i64(from), mask], |r| {
        Ok((to_u64(r.get(0)?), r.get::<_, i64>(1)?))
    })
    .optional()
}

/// Writes every counter (exact values, `next_seq` included).
fn persist_counters(tx: &Transaction<'_>, st: &State) -> rusqlite::Result<()> {
    meta_set(tx, "next_seq", to_i64(st.next_seq))?;
    meta_set(tx, "readings", to_i64(st.readings))?;
    meta_set(tx, "bytes", to_i64(st.bytes))?;
    let mut stmt = tx.prepare_cached(
        "UPDATE uplinks SET owed = ?1, owed_bytes = ?2, low_seq = ?3 WHERE bit = ?4",
    )?;
    for u in &st.uplinks {
        stmt.execute(params![
            to_i64(u.owed),
            to_i64(u.owed_bytes),
            to_i64(u.low_seq),
            i64::from(u.bit)
        ])?;
    }
    Ok(())
}

fn append(
    tx: &Transaction<'_>,
    st: &mut State,
    work: &Work,
    out: &mut Outcome,
) -> rusqlite::Result<()> {
    if work.readings.is_empty() {
        return Ok(());
    }
    let all = st.all_mask();
    let mut ins = tx.prepare_cached(
        "INSERT INTO readings (seq, id, device, class, received_ms, bytes, pending, json) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    out.appended.reserve(work.readings.len());
    for (i, e) in work.readings.iter().enumerate() {
        // Owed to nobody would mean acknowledged to the device and never delivered: a missing
        // or foreign mask falls back to every uplink (the router layer already counted it).
        let mask = match work.pending.get(i).map(|m| m & all) {
            Some(m) if m != 0 => m,
            _ => all,
        };
        let seq = st.next_seq;
        st.next_seq += 1;
        let len = e.json.len() as u64;
        ins.execute(params![
            to_i64(seq),
            &e.id.to_bytes()[..],
            e.device,
            class_code(e.class),
            work.now_ms,
            to_i64(len),
            mask,
            &e.json[..],
        ])?;
        st.readings += 1;
        st.bytes += len;
        for u in st.uplinks.iter_mut().filter(|u| mask & u.mask() != 0) {
            u.owed += 1;
            u.owed_bytes += len;
            if u.oldest.is_none() {
                u.oldest = Some((seq, work.now_ms));
            }
        }
        out.appended.push(TailRow {
            seq,
            pending: mask,
            id: e.id,
            device: e.device.clone(),
            class: e.class,
            json: Bytes::clone(&e.json),
        });
    }
    Ok(())
}

/// Acknowledgements, one pair of range statements per contiguous run of acknowledged seqs (a
/// caught-up uplink acknowledges whole runs, so a commit usually runs one or two statements per
/// uplink instead of one per reading). Every seq in a run was acknowledged, so the range
/// touches exactly the acknowledged rows that still exist.
///
/// With `log_ms` (the delivery record is on), each acknowledged reading gets a `deliveries` row
/// naming the configured uplink (the lane's uplink) and `log_ms` as its time.
fn apply_acks(
    tx: &Transaction<'_>,
    st: &mut State,
    acks: &[(usize, Vec<u64>)],
    log_ms: Option<i64>,
    out: &mut Outcome,
    dirty: &mut [bool],
) -> rusqlite::Result<()> {
    if acks.is_empty() {
        return Ok(());
    }
    // The last uplink owed a reading deletes it; the others clear their bit.
    let mut del = tx.prepare_cached(
        "DELETE FROM readings WHERE seq BETWEEN ?1 AND ?2 AND pending = ?3 \
         RETURNING seq, bytes, id",
    )?;
    let mut clear = tx.prepare_cached(
        "UPDATE readings SET pending = pending & ~?3 \
         WHERE seq BETWEEN ?1 AND ?2 AND (pending & ?3) != 0 RETURNING seq, bytes, id",
    )?;
    let mut record = tx.prepare_cached(
        "INSERT OR IGNORE INTO deliveries (id, uplink, acked_ms) VALUES (?1, ?2, ?3)",
    )?;
    let mut sorted = Vec::new();
    let mut ids: Vec<Vec<u8>> = Vec::new();
    for (idx, seqs) in acks {
        let Some(mask) = st.uplinks.get(*idx).map(UplinkState::mask) else {
            continue;
        };
        ids.clear();
        sorted.clear();
        sorted.extend_from_slice(seqs);
        sorted.sort_unstable();
        sorted.dedup();
        for (lo, hi) in runs(&sorted) {
            let (first, last) = (to_i64(lo), to_i64(hi));
            let range = params![first, last, mask];
            let mut deleted = 0u64;
            let mut rows = del.query(range)?;
            while let Some(r) = rows.next()? {
                st.forget_row(to_u64(r.get(0)?), mask, to_u64(r.get(1)?), dirty);
                if log_ms.is_some() {
                    ids.push(r.get(2)?);
                }
                deleted += 1;
            }
            drop(rows);
            out.acked[*idx] += deleted;
            if deleted > hi - lo {
                // The whole run was deleted: nothing left in it to clear.
                continue;
            }
            let mut rows = clear.query(range)?;
            while let Some(r) = rows.next()? {
                let seq = to_u64(r.get(0)?);
                let bytes = to_u64(r.get(1)?);
                if log_ms.is_some() {
                    ids.push(r.get(2)?);
                }
                if let Some(u) = st.uplinks.get_mut(*idx) {
                    u.owed = u.owed.saturating_sub(1);
                    u.owed_bytes = u.owed_bytes.saturating_sub(bytes);
                    if u.oldest.is_some_and(|(o, _)| o <= seq) {
                        dirty[*idx] = true;
                    }
                }
                out.acked[*idx] += 1;
            }
        }
        if let (Some(ms), Some(lane)) = (log_ms, st.uplinks.get(*idx)) {
            // A priority lane is `<uplink>/alarm`: the record names the uplink.
            let uplink = lane.name.split('/').next().unwrap_or(&lane.name);
            for id in &ids {
                if record.execute(params![id, uplink, ms])? > 0 {
                    st.deliveries += 1;
                }
                let born = ulid_ms(id);
                if st
                    .oldest_delivery_ms
                    .is_none_or(|o| born.is_some_and(|b| b < o))
                {
                    st.oldest_delivery_ms = born.or(st.oldest_delivery_ms);
                }
            }
        }
    }
    Ok(())
}

/// Releases: each released row moves from the releasing uplink's bit to the bits of the uplinks
/// taking it over in one UPDATE, so no committed state has the row owed to nobody. A row the
/// releasing uplink is no longer owed (acknowledged, already moved, deleted) is left alone.
fn apply_releases(
    tx: &Transaction<'_>,
    st: &mut State,
    releases: &[(usize, Vec<(u64, i64)>)],
    out: &mut Outcome,
    dirty: &mut [bool],
) -> rusqlite::Result<()> {
    if releases.is_empty() {
        return Ok(());
    }
    let all = st.all_mask();
    let mut sel =
        tx.prepare_cached("SELECT pending, bytes, received_ms FROM readings WHERE seq = ?1")?;
    let mut upd = tx.prepare_cached("UPDATE readings SET pending = ?2 WHERE seq = ?1")?;
    for (idx, moves) in releases {
        let Some(from) = st.uplinks.get(*idx).map(UplinkState::mask) else {
            continue;
        };
        for &(seq, target) in moves {
            let target = target & all & !from;
            if target == 0 {
                // The cursor never queues such a move; clearing the bit would orphan the row.
                continue;
            }
            let row = sel
                .query_row([to_i64(seq)], |r| {
                    Ok((r.get::<_, i64>(0)?, to_u64(r.get(1)?), r.get::<_, i64>(2)?))
                })
                .optional()?;
            let Some((pending, bytes, received_ms)) = row else {
                continue;
            };
            if pending & from == 0 {
                continue;
            }
            let new = (pending & !from) | target;
            upd.execute(params![to_i64(seq), new])?;
            out.moved.push((seq, new));
            for (i, u) in st.uplinks.iter_mut().enumerate() {
                let bit = u.mask();
                if bit == from {
                    u.owed = u.owed.saturating_sub(1);
                    u.owed_bytes = u.owed_bytes.saturating_sub(bytes);
                    if u.oldest.is_some_and(|(o, _)| o <= seq) {
                        dirty[i] = true;
                    }
                } else if target & bit != 0 && pending & bit == 0 {
                    u.owed += 1;
                    u.owed_bytes += bytes;
                    if u.oldest.is_none_or(|(o, _)| seq < o) {
                        u.oldest = Some((seq, received_ms));
                    }
                    if let Some(r) = out.received.get_mut(i) {
                        r.push(seq);
                    }
                }
            }
        }
    }
    Ok(())
}

/// Cutovers: every row of the class owed on the lane moves to the target bits in set-based
/// statements (a few scans, whatever the backlog), with the counters adjusted from aggregates;
/// the receiving lanes are told to rescan from the lowest moved seq rather than given each seq,
/// so memory does not grow with the backlog. The whole backlog moves in this one transaction:
/// no later commit can hand a device's newer reading to the new uplink before its older ones
/// are owed there. The cost is one transaction proportional to the table, once per breaker
/// opening.
fn apply_cutovers(
    tx: &Transaction<'_>,
    st: &mut State,
    cutovers: &[CutoverWork],
    out: &mut Outcome,
    dirty: &mut [bool],
) -> rusqlite::Result<()> {
    for c in cutovers {
        let all = st.all_mask();
        let target = c.target & all & !c.from_mask;
        if target == 0 {
            continue;
        }
        let keep: Vec<Vec<u8>> = c.keep.iter().map(|id| id.to_bytes().to_vec()).collect();
        let not_kept = if keep.is_empty() {
            String::new()
        } else {
            format!(" AND id NOT IN ({})", vec!["?"; keep.len()].join(","))
        };
        let matching = format!(
            "(pending & {}) != 0 AND class = {}{not_kept}",
            c.from_mask,
            class_code(c.class)
        );
        let keep_params = rusqlite::params_from_iter(keep.iter());
        let (n, bytes, first): (i64, i64, Option<i64>) = tx.query_row(
            &format!(
                "SELECT COUNT(*), COALESCE(SUM(bytes), 0), MIN(seq) FROM readings WHERE {matching}"
            ),
            keep_params,
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        let Some(first) = first else {
            continue;
        };
        let received_ms: i64 = tx.query_row(
            "SELECT received_ms FROM readings WHERE seq = ?1",
            [first],
            |r| r.get(0),
        )?;
        // Newly owed per target lane (a row already owed there is not counted twice).
        let mut gained = Vec::new();
        for (i, u) in st.uplinks.iter().enumerate() {
            let bit = u.mask();
            if target & bit == 0 {
                continue;
            }
            let (gn, gb): (i64, i64) = tx.query_row(
                &format!(
                    "SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM readings \
                     WHERE {matching} AND (pending & {bit}) = 0"
                ),
                rusqlite::params_from_iter(keep.iter()),
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            gained.push((i, to_u64(gn), to_u64(gb)));
        }
        tx.execute(
            &format!(
                "UPDATE readings SET pending = (pending & ~{}) | {target} WHERE {matching}",
                c.from_mask
            ),
            rusqlite::params_from_iter(keep.iter()),
        )?;
        let first = to_u64(first);
        if let Some(u) = st.uplinks.get_mut(c.slot) {
            u.owed = u.owed.saturating_sub(to_u64(n));
            u.owed_bytes = u.owed_bytes.saturating_sub(to_u64(bytes));
            if let Some(d) = dirty.get_mut(c.slot) {
                *d = true;
            }
        }
        for (i, gn, gb) in gained {
            if let Some(u) = st.uplinks.get_mut(i) {
                u.owed += gn;
                u.owed_bytes += gb;
                if u.oldest.is_none_or(|(o, _)| first < o) {
                    u.oldest = Some((first, received_ms));
                }
            }
            if let Some(r) = out.rescan_from.get_mut(i) {
                *r = Some(r.map_or(first, |x| x.min(first)));
            }
        }
        if let Some(k) = out.cut.get_mut(c.slot) {
            *k += to_u64(n);
        }
        out.cut_tail
            .push((c.from_mask, c.class, target, c.keep.clone()));
    }
    Ok(())
}

/// The maximal runs of consecutive values in a sorted, deduplicated slice, as (first, last).
fn runs(sorted: &[u64]) -> impl Iterator<Item = (u64, u64)> + '_ {
    let mut i = 0;
    std::iter::from_fn(move || {
        let lo = *sorted.get(i)?;
        let mut hi = lo;
        i += 1;
        while sorted.get(i).is_some_and(|&s| Some(s) == hi.checked_add(1)) {
            hi += 1;
            i += 1;
        }
        Some((lo, hi))
    })
}

fn expire(
    tx: &Transaction<'_>,
    st: &mut State,
    cutoff_ms: i64,
    out: &mut Outcome,
    dirty: &mut [bool],
) -> rusqlite::Result<()> {
    // Stamps follow seq order unless the wall clock stepped back; then readings behind a newer
    // stamp wait for it (late, never early).
    let mut through = None;
    let mut scanned = 0i64;
    let mut stopped = false;
    {
        let mut sel =
            tx.prepare_cached("SELECT seq, received_ms FROM readings ORDER BY seq LIMIT ?1")?;
        let mut rows = sel.query([EXPIRE_CHUNK])?;
        while let Some(r) = rows.next()? {
            let seq = to_u64(r.get(0)?);
            let ms: i64 = r.get(1)?;
            if ms >= cutoff_ms {
                stopped = true;
                break;
            }
            through = Some(seq);
            scanned += 1;
        }
    }
    out.more_expiry = !stopped && scanned == EXPIRE_CHUNK;
    if let Some(t) = through {
        out.expired += delete_through(tx, st, t, dirty)?;
        out.deleted_through = out.deleted_through.max(Some(t));
    }
    Ok(())
}

/// The seq through which the oldest readings must go to free `rows` readings and `bytes` bytes.
fn oldest_prefix(tx: &Transaction<'_>, rows: u64, bytes: u64) -> rusqlite::Result<Option<u64>> {
    let mut sel = tx.prepare_cached("SELECT seq, bytes FROM readings ORDER BY seq")?;
    let mut it = sel.query([])?;
    let (mut fr, mut fb, mut through) = (0u64, 0u64, None);
    while fr < rows || fb < bytes {
        let Some(r) = it.next()? else { break };
        through = Some(to_u64(r.get(0)?));
        fr += 1;
        fb += to_u64(r.get(1)?);
    }
    Ok(through)
}

fn delete_through(
    tx: &Transaction<'_>,
    st: &mut State,
    through: u64,
    dirty: &mut [bool],
) -> rusqlite::Result<u64> {
    let mut del =
        tx.prepare_cached("DELETE FROM readings WHERE seq <= ?1 RETURNING seq, pending, bytes")?;
    let mut rows = del.query([to_i64(through)])?;
    let mut n = 0;
    while let Some(r) = rows.next()? {
        st.forget_row(to_u64(r.get(0)?), r.get(1)?, to_u64(r.get(2)?), dirty);
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::runs;

    #[test]
    fn runs_split_sorted_seqs_at_every_gap() {
        let got: Vec<(u64, u64)> = runs(&[1, 2, 3, 5, 7, 8, u64::MAX - 1, u64::MAX]).collect();
        assert_eq!(got, vec![(1, 3), (5, 5), (7, 8), (u64::MAX - 1, u64::MAX)]);
        assert_eq!(runs(&[]).count(), 0);
    }
}
