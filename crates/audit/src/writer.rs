//! The active file: appending chained records in fsynced batches, and rotating it.
//! Runs on the writer thread (and once, for the first records, on the thread that opens).

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use crate::error::AuditError;
use crate::key::{HmacKey, Signer};
use crate::metrics::AuditMetrics;
use crate::options::AuditOptions;
use crate::record::{self, Draft, Hash, RecordKind};
use crate::resume::{self, Tail};

/// A write error is logged at most this often (the metric counts every one).
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// A batch that could not be made durable.
#[derive(Debug)]
pub(crate) struct Failed {
    pub(crate) error: io::Error,
    /// Records of the batch that were cut back off the file.
    pub(crate) lost: u64,
    /// Those plus the drops they were carrying: what the next record's `dropped_before` owes.
    pub(crate) carry: u64,
}

/// The chain's state and the active file.
#[derive(Debug)]
pub(crate) struct Writer {
    path: PathBuf,
    file: File,
    /// Bytes in the active file that are known durable.
    file_len: u64,
    /// First seq in the active file (`None` while it is empty).
    first_seq: Option<u64>,
    /// Last seq written (0: none yet).
    seq: u64,
    /// Hash of that record (zeros before seq 1).
    prev: Hash,
    signer: Option<Signer>,
    rotate_bytes: u64,
    keep_files: usize,
    metrics: AuditMetrics,
    buf: Vec<u8>,
    last_error_log: Option<Instant>,
}

impl Writer {
    /// Loads the key, resumes (or starts) the chain, and writes `audit_started` (after a
    /// `chain_broken` record if the tail was damaged), fsynced.
    pub(crate) fn open(opts: &AuditOptions, metrics: AuditMetrics) -> Result<Writer, AuditError> {
        if opts.path.file_name().is_none() {
            return Err(AuditError::Invalid(format!(
                "{} does not name a file",
                opts.path.display()
            )));
        }
        let signer = match &opts.hmac_key_file {
            Some(p) => Some(HmacKey::load(p)?.signer().clone()),
            None => None,
        };
        let dir = resume::parent_dir(&opts.path);
        std::fs::create_dir_all(&dir)
            .map_err(|e| AuditError::io(&dir, "creating the directory", e))?;
        let resumed = resume::inspect(&opts.path, signer.as_ref())?;
        let file = open_append(&opts.path)?;
        let file_len = file
            .metadata()
            .map_err(|e| AuditError::io(&opts.path, "inspecting", e))?
            .len();
        let (seq, prev, drafts) = match resumed.tail {
            Tail::Fresh => (
                0,
                [0; 32],
                vec![Draft::internal(RecordKind::Started, "new_log")],
            ),
            Tail::Continue { seq, hash } => (
                seq,
                hash,
                vec![Draft::internal(RecordKind::Started, "restart")],
            ),
            Tail::Broken {
                last_good, damaged, ..
            } => {
                let (seq, hash) = last_good.unwrap_or((0, [0; 32]));
                let mut broken = Draft::internal(RecordKind::ChainBroken, "damaged_tail");
                broken.subject = Some(resume::file_name(&damaged));
                broken.last_good = last_good;
                (
                    seq,
                    hash,
                    vec![broken, Draft::internal(RecordKind::Started, "restart")],
                )
            }
        };
        let mut w = Writer {
            path: opts.path.clone(),
            file,
            file_len,
            first_seq: resumed.active_first_seq,
            seq,
            prev,
            signer,
            rotate_bytes: opts.rotate_bytes,
            keep_files: opts.keep_files,
            metrics,
            buf: Vec::with_capacity(64 * 1024),
            last_error_log: None,
        };
        w.write(drafts)
            .map_err(|f| AuditError::io(&opts.path, "writing the first records of", f.error))?;
        resume::sync_dir(&opts.path);
        Ok(w)
    }

    /// Last seq written and its hash.
    pub(crate) fn head(&self) -> (u64, Hash) {
        (self.seq, self.prev)
    }

    /// Appends `drafts` as consecutive records, fsyncs, and rotates whenever the active file
    /// reaches `rotate_bytes`. On failure, what was not yet durable is cut back off the file
    /// and the chain stays at the last durable record.
    pub(crate) fn write(&mut self, drafts: Vec<Draft>) -> Result<(), Failed> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let mut seq = self.seq;
        let mut prev = self.prev;
        let mut first = self.first_seq;
        let mut pending = 0usize;
        let mut result = Ok(());
        for (i, d) in drafts.iter().enumerate() {
            seq += 1;
            let ts = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
            prev = record::encode(d, seq, &ts, &prev, self.signer.as_ref(), &mut buf);
            first.get_or_insert(seq);
            pending += 1;
            let full =
                self.rotate_bytes > 0 && self.file_len + buf.len() as u64 >= self.rotate_bytes;
            if full || i + 1 == drafts.len() {
                if let Err(error) = self.commit(&buf, pending, seq, prev, first) {
                    let rest = &drafts[i + 1 - pending..];
                    let lost = rest.len() as u64;
                    let carried: u64 = rest.iter().map(|d| d.dropped_before).sum();
                    result = Err(Failed {
                        error,
                        lost,
                        carry: lost + carried,
                    });
                    break;
                }
                buf.clear();
                pending = 0;
                if full {
                    self.rotate();
                }
                first = self.first_seq;
            }
        }
        self.buf = buf;
        if let Err(f) = &result {
            self.metrics.write_failed();
            let now = Instant::now();
            if self
                .last_error_log
                .is_none_or(|t| now.duration_since(t) >= ERROR_LOG_INTERVAL)
            {
                self.last_error_log = Some(now);
                tracing::error!(
                    file = %self.path.display(),
                    error = %f.error,
                    lost = f.lost,
                    "audit write failed; the batch was cut off and counted as dropped"
                );
            }
        }
        result
    }

    fn commit(
        &mut self,
        bytes: &[u8],
        records: usize,
        seq: u64,
        hash: Hash,
        first: Option<u64>,
    ) -> io::Result<()> {
        let done = self
            .file
            .write_all(bytes)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = done {
            // Leave no half line behind: the next record must follow the last durable one.
            let _ = self.file.set_len(self.file_len);
            return Err(e);
        }
        self.file_len += bytes.len() as u64;
        self.seq = seq;
        self.prev = hash;
        self.first_seq = first;
        self.metrics.written(records as u64);
        Ok(())
    }

    /// Renames the (fsynced) active file to `<name>.<first>-<last>` and starts a fresh one.
    /// A failure is logged and writing continues in the current file.
    fn rotate(&mut self) {
        let Some(first) = self.first_seq else {
            return;
        };
        let rotated = self.path.with_file_name(format!(
            "{}.{first}-{}",
            resume::file_name(&self.path),
            self.seq
        ));
        if let Err(e) = std::fs::rename(&self.path, &rotated) {
            tracing::error!(file = %self.path.display(), error = %e, "audit rotation failed; still writing the same file");
            return;
        }
        match open_append(&self.path) {
            Ok(f) => {
                self.file = f;
                self.file_len = 0;
                self.first_seq = None;
            }
            Err(e) => {
                tracing::error!(error = %e, "audit rotation could not create a new file; still writing the old one");
                // Put the name back so the rotated name never understates its content.
                let _ = std::fs::rename(&rotated, &self.path);
                return;
            }
        }
        resume::sync_dir(&self.path);
        tracing::info!(
            rotated_to = %rotated.display(),
            last_seq = self.seq,
            head = %record::hex(&self.prev),
            "audit file rotated; audit chain head"
        );
        self.prune();
    }

    /// Deletes the oldest rotated files beyond `keep_files` (never a `.damaged-` file).
    fn prune(&self) {
        if self.keep_files == 0 {
            return;
        }
        let rotated = resume::rotated_siblings(&self.path);
        let excess = rotated.len().saturating_sub(self.keep_files);
        for (first, last, p) in rotated.into_iter().take(excess) {
            match std::fs::remove_file(&p) {
                Ok(()) => {
                    tracing::info!(file = %p.display(), first, last, "deleted old audit file (keep_files)")
                }
                Err(e) => {
                    tracing::warn!(file = %p.display(), error = %e, "could not delete old audit file")
                }
            }
        }
    }
}

fn open_append(path: &std::path::Path) -> Result<File, AuditError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| AuditError::io(path, "opening", e))
}
