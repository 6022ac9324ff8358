//! Registrations survive a gateway restart: every Register, Update and De-register is written to
//! a SQLite file (one row per registration, the registration as JSON) by a writer thread, so the
//! CoAP socket tasks never wait for a disk.
//!
//! Decisions:
//! - **Coalescing, not a queue.** Changes go into a map keyed by registration id (the newest state
//!   wins), which the writer takes whole and commits in one transaction. Memory is bounded by the
//!   number of registrations, however fast clients update, and a registration storm costs one
//!   commit per batch rather than one per client.
//! - **WAL with `synchronous=NORMAL`**: a committed batch survives the gateway being killed
//!   (it is in the WAL, in the OS page cache); a power cut may lose the last batches. The
//!   registration is the client's to renew (it re-registers when an Update gets 4.04), so this
//!   trades an fsync per batch for nothing a client cannot repair. Readings are not stored here:
//!   their durability is the outbox's.
//! - The answer to the client does not wait for the write: a registration lost in a crash
//!   within the batch window (milliseconds) means one 4.04 on the client's next Update and a
//!   re-registration, which every client implements.
//! - A row that does not parse (an older or damaged file) is skipped with a warning, never a
//!   failed start.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use rusqlite::{Connection, params};

use crate::bootstrap::BootstrapConfig;
use crate::registration::Registration;

/// Why the registration file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// SQLite refused.
    #[error("LwM2M registration store {path}: {source}")]
    Sqlite {
        /// The file.
        path: PathBuf,
        /// Why.
        source: rusqlite::Error,
    },
}

#[derive(Debug, Default)]
struct Pending {
    /// Registration id → its newest state (`None`: removed).
    changes: HashMap<String, Option<Arc<Registration>>>,
    /// The admin-managed bootstrap configurations, when they changed.
    bootstrap: Option<Vec<BootstrapConfig>>,
    /// Batches committed (for `flush`).
    committed: u64,
    /// Batches taken by the writer.
    taken: u64,
    stop: bool,
}

#[derive(Debug, Default)]
struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
    done: Condvar,
}

/// Where registrations are persisted. Dropping it writes what is pending and stops the writer.
#[derive(Debug)]
pub struct RegistrationStore {
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
    bootstrap: Vec<BootstrapConfig>,
}

impl RegistrationStore {
    /// A store that keeps nothing (registrations are lost on restart).
    pub fn none() -> RegistrationStore {
        RegistrationStore {
            shared: Arc::new(Shared::default()),
            writer: None,
            bootstrap: Vec::new(),
        }
    }

    /// Opens (creating) the file and returns the registrations it holds.
    pub fn open(path: &Path) -> Result<(RegistrationStore, Vec<Registration>), PersistError> {
        let err = |source| PersistError::Sqlite {
            path: path.to_owned(),
            source,
        };
        let conn = Connection::open(path).map_err(err)?;
        // A small page cache: the file is read once at start and then only written.
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA cache_size=-256;
             CREATE TABLE IF NOT EXISTS registrations (
                 id TEXT PRIMARY KEY, endpoint TEXT NOT NULL, data TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS bootstrap (
                 id INTEGER PRIMARY KEY CHECK (id = 1), data TEXT NOT NULL);",
        )
        .map_err(err)?;
        let loaded = load(&conn).map_err(err)?;
        let bootstrap = load_bootstrap(&conn).map_err(err)?;
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        let shown = path.display().to_string();
        let writer = std::thread::Builder::new()
            .name("lwm2m-persist".into())
            .spawn(move || write_loop(conn, &s, &shown))
            .map_err(|e| err(rusqlite::Error::ToSqlConversionFailure(Box::new(e))))?;
        Ok((
            RegistrationStore {
                shared,
                writer: Some(writer),
                bootstrap,
            },
            loaded,
        ))
    }

    /// Records a registration's new state (shared: nothing is copied until it is written).
    pub fn put(&self, r: &Arc<Registration>) {
        self.change(r.id.clone(), Some(r.clone()));
    }

    /// The admin-managed bootstrap configurations the file held when opened.
    pub fn bootstrap_configs(&self) -> Vec<BootstrapConfig> {
        self.bootstrap.clone()
    }

    /// Records the admin-managed bootstrap configurations.
    pub fn put_bootstrap(&self, configs: &[BootstrapConfig]) {
        if self.writer.is_none() {
            return;
        }
        if let Ok(mut p) = self.shared.pending.lock() {
            p.bootstrap = Some(configs.to_vec());
            self.shared.wake.notify_one();
        }
    }

    /// Records that a registration ended.
    pub fn remove(&self, id: &str) {
        self.change(id.to_owned(), None);
    }

    fn change(&self, id: String, r: Option<Arc<Registration>>) {
        if self.writer.is_none() {
            return;
        }
        if let Ok(mut p) = self.shared.pending.lock() {
            p.changes.insert(id, r);
            self.shared.wake.notify_one();
        }
    }

    /// Blocks until everything recorded so far is committed (tests, shutdown).
    pub fn flush(&self) {
        if self.writer.is_none() {
            return;
        }
        let Ok(mut p) = self.shared.pending.lock() else {
            return;
        };
        // Wait for the batch holding our changes: the one the writer takes next, or the one it
        // is writing if nothing is pending.
        let target = if p.changes.is_empty() {
            p.taken
        } else {
            p.taken + 1
        };
        while p.committed < target && !p.stop {
            match self.shared.done.wait(p) {
                Ok(g) => p = g,
                Err(_) => return,
            }
        }
    }
}

impl Drop for RegistrationStore {
    fn drop(&mut self) {
        if let Some(w) = self.writer.take() {
            if let Ok(mut p) = self.shared.pending.lock() {
                p.stop = true;
                self.shared.wake.notify_one();
            }
            let _ = w.join();
        }
    }
}

fn load(conn: &Connection) -> rusqlite::Result<Vec<Registration>> {
    let mut stmt = conn.prepare("SELECT id, data FROM registrations")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let (id, data) = row?;
        match serde_json::from_str::<Registration>(&data) {
            Ok(r) => out.push(r),
            Err(e) => {
                tracing::warn!(registration = %id, error = %e, "skipping a stored LwM2M registration that does not parse");
            }
        }
    }
    Ok(out)
}

fn load_bootstrap(conn: &Connection) -> rusqlite::Result<Vec<BootstrapConfig>> {
    let data: Option<String> = conn
        .query_row("SELECT data FROM bootstrap WHERE id = 1", [], |r| r.get(0))
        .map(Some)
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e),
        })?;
    Ok(match data.map(|d| serde_json::from_str(&d)) {
        Some(Ok(v)) => v,
        Some(Err(e)) => {
            tracing::warn!(error = %e, "ignoring stored LwM2M bootstrap configurations that do not parse");
            Vec::new()
        }
        None => Vec::new(),
    })
}

fn write_loop(mut conn: Connection, shared: &Shared, path: &str) {
    loop {
        let (batch, stop) = {
            let Ok(mut p) = shared.pending.lock() else {
                return;
            };
            while p.changes.is_empty() && p.bootstrap.is_none() && !p.stop {
                match shared.wake.wait(p) {
                    Ok(g) => p = g,
                    Err(_) => return,
                }
            }
            p.taken += 1;
            ((std::mem::take(&mut p.changes), p.bootstrap.take()), p.stop)
        };
        if !batch.0.is_empty() || batch.1.is_some() {
            if let Err(e) = commit(&mut conn, batch) {
                tracing::error!(path, error = %e, "could not persist LwM2M registrations; they will be lost on restart unless the next write succeeds");
            }
        }
        if let Ok(mut p) = shared.pending.lock() {
            p.committed += 1;
            shared.done.notify_all();
            if stop && p.changes.is_empty() {
                return;
            }
        }
    }
}

type Batch = (
    HashMap<String, Option<Arc<Registration>>>,
    Option<Vec<BootstrapConfig>>,
);

fn commit(conn: &mut Connection, (batch, bootstrap): Batch) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    if let Some(b) = bootstrap {
        let data = serde_json::to_string(&b)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        tx.execute(
            "INSERT INTO bootstrap (id, data) VALUES (1, ?1)
             ON CONFLICT(id) DO UPDATE SET data = excluded.data",
            params![data],
        )?;
    }
    {
        let mut put = tx.prepare_cached(
            "INSERT INTO registrations (id, endpoint, data) VALUES (?1, ?2, ?3)
             ON CONFLICT(id) DO UPDATE SET endpoint = excluded.endpoint, data = excluded.data",
        )?;
        let mut del = tx.prepare_cached("DELETE FROM registrations WHERE id = ?1")?;
        for (id, r) in batch {
            match r {
                Some(r) => {
                    let data = serde_json::to_string(r.as_ref())
                        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
                    put.execute(params![id, r.endpoint, data])?;
                }
                None => {
                    del.execute(params![id])?;
                }
            }
        }
    }
    tx.commit()
}
