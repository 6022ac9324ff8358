//! `wardgate store recover`: salvage every readable reading from a damaged store.
//!
//! The damaged file (with its WAL) is first moved aside to `<path>.corrupt-<unix-ts>` and is
//! read without being written (no SQL writes, no checkpoint on close) and never deleted, so nothing is lost even if salvage misses something:
//! a person can still run `sqlite3 <file> .recover` on it. Readings are read in seq order; a
//! damaged region is skipped by probing forward for the next readable seq, and each skipped
//! range is reported. If the file header itself is destroyed, a copy with a rebuilt header is
//! tried. The salvaged readings go into a fresh store written at a temporary name and renamed
//! into place, closed cleanly.

use std::fmt;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};

use crate::db::{
    ADOPT_ALL, connect, create_schema, meta_get, meta_set, shm_path, to_i64, to_u64, wal_path,
};
use crate::error::StoreError;

/// Rows read per query while salvaging.
const CHUNK: usize = 512;

/// What `recover` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoverReport {
    /// The store path (now holding the salvaged store).
    pub path: PathBuf,
    /// Where the damaged file was moved (kept, never modified).
    pub moved_to: PathBuf,
    /// Readings copied into the new store.
    pub salvaged: u64,
    /// Their bytes of JSON.
    pub salvaged_bytes: u64,
    /// Rows that were found but unusable (e.g. a damaged id).
    pub damaged_rows: u64,
    /// Seq ranges (inclusive) that could not be read at all.
    pub unreadable: Vec<(u64, u64)>,
    /// Whether the uplink table was readable. When it was not, every salvaged reading is owed
    /// to every uplink configured at the next start.
    pub uplinks_recovered: bool,
    /// Whether the file header had to be rebuilt to read anything.
    pub header_rebuilt: bool,
    /// False when nothing in the old file could be read.
    pub readable: bool,
}

impl fmt::Display for RecoverReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "salvaged {} readings ({} bytes) into {}",
            self.salvaged,
            self.salvaged_bytes,
            self.path.display()
        )?;
        writeln!(f, "the damaged file is kept at {}", self.moved_to.display())?;
        if !self.readable {
            writeln!(
                f,
                "nothing in the damaged file was readable; try `sqlite3 {} .recover` by hand",
                self.moved_to.display()
            )?;
        }
        if self.header_rebuilt {
            writeln!(
                f,
                "the file header was destroyed and was rebuilt to read the rest"
            )?;
        }
        if self.damaged_rows > 0 {
            writeln!(
                f,
                "{} rows were found damaged and skipped",
                self.damaged_rows
            )?;
        }
        for (a, b) in &self.unreadable {
            writeln!(
                f,
                "unreadable: readings with seq {a}..={b} (some of these may never have existed)"
            )?;
        }
        if !self.uplinks_recovered && self.readable {
            writeln!(
                f,
                "the uplink list was unreadable: every salvaged reading will be delivered to every configured uplink"
            )?;
        }
        Ok(())
    }
}

/// Salvages every readable reading from a (possibly corrupt) store into a new file at `path`
/// and moves the old one aside (`<path>.corrupt-<unix-ts>`). Backs `wardgate store recover`.
/// The gateway must not be running.
pub fn recover(path: &Path) -> Result<RecoverReport, StoreError> {
    if !path.exists() {
        return Err(StoreError::NotFound(path.to_owned()));
    }
    let aside = aside_name(path);
    move_with_sidecars(path, &aside)?;

    let mut salvage = Salvage::default();
    let mut header_rebuilt = false;
    let mut readable = match connect_readonly(&aside) {
        Ok(conn) => read_store(&conn, &mut salvage).is_ok(),
        Err(_) => false,
    };
    let rebuilt = with_suffix(&aside, ".rebuilt");
    if !readable {
        salvage = Salvage::default();
        if rebuild_header(&aside, &rebuilt).is_ok() {
            if let Ok(conn) = connect_readonly(&rebuilt) {
                readable = read_store(&conn, &mut salvage).is_ok();
                header_rebuilt = readable;
            }
        }
    }

    let tmp = with_suffix(path, ".recovering");
    for p in [tmp.clone(), wal_path(&tmp), shm_path(&tmp)] {
        let _ = fs::remove_file(p);
    }
    write_store(&tmp, &salvage)
        .map_err(|e| StoreError::sqlite(&tmp, "writing the recovered store", e))?;
    fs::rename(&tmp, path)
        .map_err(|e| StoreError::io(path, "moving the recovered store into place", e))?;
    for p in [rebuilt.clone(), wal_path(&rebuilt), shm_path(&rebuilt)] {
        let _ = fs::remove_file(p);
    }

    let report = RecoverReport {
        path: path.to_owned(),
        moved_to: aside,
        salvaged: salvage.rows.len() as u64,
        salvaged_bytes: salvage.rows.iter().map(|r| r.json.len() as u64).sum(),
        damaged_rows: salvage.damaged,
        unreadable: salvage.unreadable,
        uplinks_recovered: salvage.uplinks.is_some(),
        header_rebuilt,
        readable,
    };
    tracing::warn!(
        path = %path.display(),
        moved_to = %report.moved_to.display(),
        salvaged = report.salvaged,
        unreadable_ranges = report.unreadable.len(),
        "outbox recovered"
    );
    Ok(report)
}

/// A connection that reads the damaged file without writing it: no writes through SQL, and
/// no checkpoint of its WAL into it on close (only the `-shm` index is rebuilt).
fn connect_readonly(path: &Path) -> rusqlite::Result<Connection> {
    let conn = connect(path)?;
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
        true,
    )?;
    conn.pragma_update(None, "query_only", true)?;
    Ok(conn)
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn aside_name(path: &Path) -> PathBuf {
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let base = with_suffix(path, &format!(".corrupt-{ts}"));
    let mut candidate = base.clone();
    let mut n = 1;
    while candidate.exists() {
        candidate = with_suffix(&base, &format!(".{n}"));
        n += 1;
    }
    candidate
}

/// Moves the database and its WAL/SHM so SQLite still pairs them under the new name.
fn move_with_sidecars(from: &Path, to: &Path) -> Result<(), StoreError> {
    fs::rename(from, to).map_err(|e| StoreError::io(from, "moving the damaged store aside", e))?;
    for (a, b) in [
        (wal_path(from), wal_path(to)),
        (shm_path(from), shm_path(to)),
    ] {
        if a.exists() {
            fs::rename(&a, &b)
                .map_err(|e| StoreError::io(&a, "moving the damaged store aside", e))?;
        }
    }
    Ok(())
}

/// A SQLite header taken from a fresh store, written over a copy of the damaged file. The
/// in-header page count and the freelist are zeroed so SQLite derives the size from the file
/// and never trusts the lost freelist (we only read).
fn rebuild_header(damaged: &Path, out: &Path) -> std::io::Result<()> {
    let template_path = with_suffix(out, ".template");
    let header = {
        let _ = fs::remove_file(&template_path);
        let mut conn = connect(&template_path).map_err(std::io::Error::other)?;
        conn.pragma_update(None, "page_size", 4096)
            .map_err(std::io::Error::other)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(std::io::Error::other)?;
        create_schema(&mut conn).map_err(std::io::Error::other)?;
        drop(conn);
        let mut h = [0u8; 100];
        fs::File::open(&template_path)?.read_exact(&mut h)?;
        for p in [
            template_path.clone(),
            wal_path(&template_path),
            shm_path(&template_path),
        ] {
            let _ = fs::remove_file(p);
        }
        h
    };
    let mut data = fs::read(damaged)?;
    if data.len() < 100 {
        return Err(std::io::Error::other("file too short"));
    }
    data[..100].copy_from_slice(&header);
    data[28..40].fill(0);
    fs::File::create(out)?.write_all(&data)?;
    let wal = wal_path(damaged);
    if wal.exists() {
        fs::copy(&wal, wal_path(out))?;
    }
    Ok(())
}

#[derive(Debug, Clone)]
struct Row {
    seq: i64,
    id: Vec<u8>,
    device: String,
    class: i64,
    received_ms: i64,
    pending: i64,
    json: Vec<u8>,
}

#[derive(Debug, Default)]
struct Salvage {
    rows: Vec<Row>,
    uplinks: Option<Vec<(String, i64)>>,
    next_seq: Option<i64>,
    damaged: u64,
    unreadable: Vec<(u64, u64)>,
}

/// Reads everything readable. Err only when nothing at all could be read (not a database).
fn read_store(conn: &Connection, s: &mut Salvage) -> rusqlite::Result<()> {
    conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
        r.get::<_, i64>(0)
    })?;
    s.uplinks = read_uplinks(conn).ok();
    s.next_seq = meta_get(conn, "next_seq").ok().flatten();
    let max_seq: Option<i64> = conn
        .query_row("SELECT MAX(seq) FROM readings", [], |r| r.get(0))
        .ok()
        .flatten();
    let limit = max_seq.or(s.next_seq).unwrap_or(i64::MAX / 2);
    let mut from = 0i64;
    loop {
        let (rows, err) = read_chunk(conn, from);
        let got = rows.len();
        for r in rows {
            from = r.seq.saturating_add(1);
            if r.id.len() == 16 {
                s.rows.push(r);
            } else {
                s.damaged += 1;
            }
        }
        match err {
            None if got < CHUNK => break,
            None => {}
            Some(_) => {
                // `from` is the first seq whose read failed (or the row after the last good one).
                match probe_next_readable(conn, from, limit) {
                    Some(resume) => {
                        if resume > from {
                            s.unreadable.push((to_u64(from), to_u64(resume - 1)));
                        } else {
                            // The seek works but the row itself does not: lose just this one.
                            s.unreadable.push((to_u64(from), to_u64(from)));
                        }
                        from = resume.max(from.saturating_add(1));
                    }
                    None => {
                        s.unreadable.push((to_u64(from), to_u64(limit.max(from))));
                        break;
                    }
                }
            }
        }
    }
    Ok(())
}

fn read_uplinks(conn: &Connection) -> rusqlite::Result<Vec<(String, i64)>> {
    let mut stmt = conn.prepare("SELECT name, bit FROM uplinks")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

/// Up to `CHUNK` rows from `from` on, plus the error that stopped the read early, if any.
fn read_chunk(conn: &Connection, from: i64) -> (Vec<Row>, Option<rusqlite::Error>) {
    let mut out = Vec::new();
    let res = (|| -> rusqlite::Result<()> {
        let mut stmt = conn.prepare_cached(
            "SELECT seq, id, device, class, received_ms, pending, json FROM readings \
             WHERE seq >= ?1 ORDER BY seq LIMIT ?2",
        )?;
        let mut rows = stmt.query(params![from, CHUNK as i64])?;
        while let Some(r) = rows.next()? {
            out.push(Row {
                seq: r.get(0)?,
                id: r.get(1)?,
                device: r.get(2)?,
                class: r.get(3)?,
                received_ms: r.get(4)?,
                pending: r.get(5)?,
                json: r.get(6)?,
            });
        }
        Ok(())
    })();
    (out, res.err())
}

/// Whether a seek to `seq >= at` works (finds a row or the end).
fn seek_ok(conn: &Connection, at: i64) -> bool {
    conn.query_row(
        "SELECT seq FROM readings WHERE seq >= ?1 ORDER BY seq LIMIT 1",
        [at],
        |r| r.get::<_, i64>(0),
    )
    .optional()
    .is_ok()
}

/// The smallest seq after `failed` from which reading works again, searching exponentially
/// then by bisection; None when nothing up to `limit` is readable.
fn probe_next_readable(conn: &Connection, failed: i64, limit: i64) -> Option<i64> {
    let mut bad = failed;
    let mut step = 1i64;
    let good = loop {
        let at = failed.saturating_add(step);
        if at > limit.saturating_add(1) {
            return None;
        }
        if seek_ok(conn, at) {
            break at;
        }
        bad = at;
        step = step.saturating_mul(2);
    };
    let (mut lo, mut hi) = (bad, good);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if seek_ok(conn, mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(hi)
}

fn write_store(path: &Path, s: &Salvage) -> rusqlite::Result<()> {
    let mut conn = connect(path)?;
    conn.pragma_update(None, "page_size", 4096)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    create_schema(&mut conn)?;
    let tx = conn.transaction()?;
    let mut known_mask = 0i64;
    if let Some(uplinks) = &s.uplinks {
        for (name, bit) in uplinks {
            if (0..63).contains(bit) {
                tx.execute(
                    "INSERT INTO uplinks (name, bit, owed, owed_bytes, low_seq) VALUES (?1, ?2, 0, 0, 0)",
                    params![name, bit],
                )?;
                known_mask |= 1i64 << bit;
            }
        }
    }
    let mut adopt = false;
    let mut max_seq = 0i64;
    let mut readings = 0u64;
    let mut bytes = 0u64;
    {
        let mut ins = tx.prepare(
            "INSERT INTO readings (seq, id, device, class, received_ms, bytes, pending, json) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        for r in &s.rows {
            let mut pending = r.pending & known_mask;
            if pending == 0 {
                // Owner unknown (uplink table lost or the bits are damaged): every uplink
                // configured at the next start gets it.
                pending = ADOPT_ALL;
                adopt = true;
            }
            ins.execute(params![
                r.seq,
                r.id,
                r.device,
                r.class,
                r.received_ms,
                r.json.len() as i64,
                pending,
                r.json
            ])?;
            max_seq = max_seq.max(r.seq);
            readings += 1;
            bytes += r.json.len() as u64;
        }
    }
    // Per-uplink counters are recounted at the next open (it sees no clean marker).
    meta_set(
        &tx,
        "next_seq",
        s.next_seq.unwrap_or(1).max(max_seq.saturating_add(1)),
    )?;
    meta_set(&tx, "readings", to_i64(readings))?;
    meta_set(&tx, "bytes", to_i64(bytes))?;
    meta_set(&tx, "adopt", i64::from(adopt))?;
    meta_set(&tx, "clean", 0)?;
    tx.commit()?;
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    conn.close().map_err(|(_, e)| e)
}
