//! The bounded ring of capture files in one directory: names carry a UTC timestamp and a
//! sequence number (`capture-20261130T163104Z-000042.pcapng`); the sequence continues across
//! restarts and orders the files, so a clock step never reorders or overwrites them.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

const PREFIX: &str = "capture-";
const SUFFIX: &str = ".pcapng";

/// The sequence number of a capture file name; `None` for any other file.
pub fn parse_seq(name: &str) -> Option<u64> {
    let stem = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    let (_, seq) = stem.rsplit_once('-')?;
    if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    seq.parse().ok()
}

/// `capture-<YYYYMMDDTHHMMSSZ>-<seq>.pcapng`.
pub fn file_name(at: SystemTime, seq: u64) -> String {
    let stamp: String = humantime::format_rfc3339_seconds(at)
        .to_string()
        .chars()
        .filter(|c| !matches!(c, '-' | ':'))
        .collect();
    format!("{PREFIX}{stamp}-{seq:06}{SUFFIX}")
}

/// The capture files in `dir` with their sequence numbers, oldest first (other files are left
/// out).
pub fn list(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(seq) = entry.file_name().to_str().and_then(parse_seq) {
            files.push((seq, entry.path()));
        }
    }
    files.sort();
    Ok(files)
}

/// The capture files of a directory, oldest first.
#[derive(Debug)]
pub struct Ring {
    dir: PathBuf,
    files: VecDeque<(u64, PathBuf)>,
    next_seq: u64,
    max_files: usize,
}

impl Ring {
    /// Creates `dir` if missing (mode 0700) and takes over the capture files already in it.
    pub fn open(dir: &Path, max_files: usize) -> io::Result<Ring> {
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir)?;
        let files = list(dir)?;
        let next_seq = files.last().map_or(1, |(s, _)| s.saturating_add(1));
        Ok(Ring {
            dir: dir.to_owned(),
            files: files.into(),
            next_seq,
            max_files: max_files.max(1),
        })
    }

    /// Creates the next file (mode 0600) and deletes the oldest beyond `max_files`.
    pub fn create_next(&mut self, now: SystemTime) -> io::Result<(PathBuf, File)> {
        let seq = self.next_seq;
        self.next_seq = seq.saturating_add(1);
        let path = self.dir.join(file_name(now, seq));
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let file = opts.open(&path)?;
        self.files.push_back((seq, path.clone()));
        while self.files.len() > self.max_files {
            if let Some((_, old)) = self.files.pop_front() {
                match fs::remove_file(&old) {
                    Ok(()) => {
                        tracing::debug!(file = %old.display(), "capture file deleted (ring full)")
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => {
                        tracing::warn!(file = %old.display(), error = %e, "cannot delete an old capture file")
                    }
                }
            }
        }
        Ok((path, file))
    }

    /// The files kept, oldest first.
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.files.iter().map(|(_, p)| p.as_path())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn names_carry_a_utc_timestamp_and_a_sequence_that_parses_back() {
        let at = UNIX_EPOCH + Duration::from_secs(1_764_520_264);
        let name = file_name(at, 42);
        assert_eq!(name, "capture-20251130T163104Z-000042.pcapng");
        assert_eq!(parse_seq(&name), Some(42));
        assert_eq!(parse_seq("capture-x-1234567.pcapng"), Some(1_234_567));
        for other in [
            "audit.log",
            "capture-.pcapng",
            "capture-x-.pcapng",
            "capture-x-1a.pcapng",
        ] {
            assert_eq!(parse_seq(other), None, "{other}");
        }
    }

    #[test]
    fn the_sequence_continues_after_the_files_already_there_and_the_oldest_go() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("capture-20250101T000000Z-000007.pcapng"),
            b"x",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("capture-20260101T000000Z-000003.pcapng"),
            b"x",
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"x").unwrap();
        let mut ring = Ring::open(dir.path(), 2).unwrap();
        let (p, _) = ring.create_next(SystemTime::now()).unwrap();
        assert_eq!(
            parse_seq(&p.file_name().unwrap().to_string_lossy()),
            Some(8)
        );
        let left: Vec<String> = ring
            .files()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left.len(), 2);
        assert!(left[0].ends_with("-000007.pcapng"), "{left:?}");
        assert!(
            !dir.path()
                .join("capture-20260101T000000Z-000003.pcapng")
                .exists()
        );
        assert!(
            dir.path().join("notes.txt").exists(),
            "other files are left alone"
        );
    }
}
