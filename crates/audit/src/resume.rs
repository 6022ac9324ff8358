//! Opening an existing log: where the chain continues, or why it cannot.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::error::AuditError;
use crate::key::Signer;
use crate::record::{self, Checked, Hash, LineError, MAX_LINE};

/// Bytes read from the end of a file: the last line and (usually) a few before it.
const TAIL_WINDOW: u64 = 2 * MAX_LINE as u64 + 2;

/// Where the chain stands when the log is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Tail {
    /// No record anywhere: start at seq 1.
    Fresh,
    /// The tail checked: continue after it.
    Continue {
        /// Last seq written.
        seq: u64,
        /// Its hash.
        hash: Hash,
    },
    /// The tail did not check: start a new file with a `chain_broken` record.
    Broken {
        /// The last record that still checked, if one was found.
        last_good: Option<(u64, Hash)>,
        /// The damaged file (renamed aside if it was the active one).
        damaged: PathBuf,
        /// What was wrong.
        problem: String,
    },
}

/// The state of the files at open.
#[derive(Debug)]
pub(crate) struct Resumed {
    pub(crate) tail: Tail,
    /// First seq in the active file when records are appended to it (it is kept).
    pub(crate) active_first_seq: Option<u64>,
}

/// Inspects the active file (and, if it is empty or missing, the newest rotated file). A
/// damaged active file is renamed aside before this returns.
pub(crate) fn inspect(path: &Path, signer: Option<&Signer>) -> Result<Resumed, AuditError> {
    let len = match std::fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(e) => return Err(AuditError::io(path, "inspecting", e)),
    };
    if len > 0 {
        let (tail, whole) =
            read_tail(path, len).map_err(|e| AuditError::io(path, "reading the tail of", e))?;
        let first = first_seq(path).map_err(|e| AuditError::io(path, "reading", e))?;
        let verdict = judge_tail(&tail, signer).and_then(|c| match first {
            Some(_) => Ok(c),
            None => Err("first line is not a record".to_owned()),
        });
        return match verdict {
            Ok(c) => Ok(Resumed {
                tail: Tail::Continue {
                    seq: c.seq,
                    hash: c.hash,
                },
                active_first_seq: first,
            }),
            Err(problem) => {
                let mut last_good = last_good_in(&tail, whole, signer);
                if last_good.is_none() {
                    last_good = newest_rotated(path)
                        .and_then(|r| read_tail_of(&r).ok())
                        .and_then(|(t, whole)| last_good_in(&t, whole, signer));
                }
                let damaged = move_aside(path)?;
                tracing::error!(
                    file = %path.display(),
                    kept_as = %damaged.display(),
                    problem = %problem,
                    last_good_seq = last_good.map(|(s, _)| s),
                    "audit log tail is damaged; it is kept aside and a new file starts with a chain_broken record"
                );
                Ok(Resumed {
                    tail: Tail::Broken {
                        last_good,
                        damaged,
                        problem,
                    },
                    active_first_seq: None,
                })
            }
        };
    }
    let Some(rotated) = newest_rotated(path) else {
        return Ok(Resumed {
            tail: Tail::Fresh,
            active_first_seq: None,
        });
    };
    let (tail, whole) =
        read_tail_of(&rotated).map_err(|e| AuditError::io(&rotated, "reading the tail of", e))?;
    let tail = match judge_tail(&tail, signer) {
        Ok(c) => Tail::Continue {
            seq: c.seq,
            hash: c.hash,
        },
        Err(problem) => {
            let last_good = last_good_in(&tail, whole, signer);
            tracing::error!(
                file = %rotated.display(),
                problem = %problem,
                last_good_seq = last_good.map(|(s, _)| s),
                "newest rotated audit file has a damaged tail; a new file starts with a chain_broken record"
            );
            Tail::Broken {
                last_good,
                damaged: rotated,
                problem,
            }
        }
    };
    Ok(Resumed {
        tail,
        active_first_seq: None,
    })
}

/// The last [`TAIL_WINDOW`] bytes, and whether they are the whole file.
fn read_tail(path: &Path, len: u64) -> io::Result<(Vec<u8>, bool)> {
    let mut f = File::open(path)?;
    let start = len.saturating_sub(TAIL_WINDOW);
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::new();
    f.take(TAIL_WINDOW).read_to_end(&mut buf)?;
    Ok((buf, start == 0))
}

fn read_tail_of(path: &Path) -> io::Result<(Vec<u8>, bool)> {
    let len = std::fs::metadata(path)?.len();
    read_tail(path, len)
}

/// The seq of the file's first line (read at most [`MAX_LINE`] bytes of it).
pub(crate) fn first_seq(path: &Path) -> io::Result<Option<u64>> {
    let mut buf = Vec::new();
    File::open(path)?
        .take(MAX_LINE as u64 + 1)
        .read_to_end(&mut buf)?;
    Ok(buf.split(|&b| b == b'\n').next().and_then(record::seq_of))
}

/// The last line must be complete, and its hash (and MAC, with a key) must check.
fn judge_tail(tail: &[u8], signer: Option<&Signer>) -> Result<Checked, String> {
    let Some(body) = tail.strip_suffix(b"\n") else {
        return Err("last line truncated (no newline at the end)".into());
    };
    let line = match body.iter().rposition(|&b| b == b'\n') {
        Some(i) => &body[i + 1..],
        None if tail.len() as u64 >= TAIL_WINDOW => {
            return Err("last line is longer than the verifier reads".into());
        }
        None => body,
    };
    let c = record::check_line(line).map_err(|e| describe(&e))?;
    if let (Some(s), Some(mac)) = (signer, &c.mac) {
        if !s.check(&c.hash, mac) {
            return Err(format!(
                "MAC of seq {} does not match (forged, or written with another key)",
                c.seq
            ));
        }
    }
    Ok(c)
}

fn describe(e: &LineError) -> String {
    match e {
        LineError::Unparsable(m) => format!("last line is not a record ({m})"),
        LineError::Version(v) => format!("last line has unknown version {v}"),
        LineError::NotCanonical { seq } => {
            format!("last line (seq {seq}) is not in canonical form")
        }
        LineError::HashMismatch { seq } => format!("last line (seq {seq}): hash mismatch"),
    }
}

/// The last complete line in `tail` that checks on its own.
fn last_good_in(tail: &[u8], whole: bool, signer: Option<&Signer>) -> Option<(u64, Hash)> {
    let mut lines: Vec<&[u8]> = tail.split(|&b| b == b'\n').collect();
    // After the last `\n` comes a partial line or nothing; before the first, unless the window
    // starts the file, a line cut by the window.
    lines.pop();
    let skip = usize::from(!whole);
    lines.iter().skip(skip).rev().find_map(|line| {
        let c = record::check_line(line).ok()?;
        match (signer, &c.mac) {
            (Some(s), Some(mac)) if !s.check(&c.hash, mac) => None,
            _ => Some((c.seq, c.hash)),
        }
    })
}

/// Renames a damaged file to `<name>.damaged-<unix-seconds>` (plus `-N` if that exists).
fn move_aside(path: &Path) -> Result<PathBuf, AuditError> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let base = format!("{}.damaged-{secs}", file_name(path));
    let mut target = path.with_file_name(&base);
    let mut n = 1;
    while target.exists() {
        target = path.with_file_name(format!("{base}-{n}"));
        n += 1;
    }
    std::fs::rename(path, &target).map_err(|e| AuditError::io(path, "renaming aside", e))?;
    sync_dir(path);
    Ok(target)
}

pub(crate) fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Rotated siblings of `path` (`<name>.<first>-<last>`), oldest first.
pub(crate) fn rotated_siblings(path: &Path) -> Vec<(u64, u64, PathBuf)> {
    let name = file_name(path);
    let prefix = format!("{name}.");
    let dir = parent_dir(path);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut found: Vec<(u64, u64, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let n = e.file_name().to_str()?.to_owned();
            let (first, last) = n.strip_prefix(&prefix)?.split_once('-')?;
            Some((first.parse().ok()?, last.parse().ok()?, e.path()))
        })
        .collect();
    found.sort();
    found
}

fn newest_rotated(path: &Path) -> Option<PathBuf> {
    rotated_siblings(path)
        .into_iter()
        .max_by_key(|(_, last, _)| *last)
        .map(|(_, _, p)| p)
}

pub(crate) fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// fsyncs the directory holding `path`, so a rename or a new file survives a power cut.
/// Best effort: some file systems refuse to sync directories.
pub(crate) fn sync_dir(path: &Path) {
    if let Ok(d) = File::open(parent_dir(path)) {
        let _ = d.sync_all();
    }
}
