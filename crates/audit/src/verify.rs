//! Reading audit files back: the first problem, where it is, and what it means.

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use crate::key::Signer;
use crate::record::{self, Hash, LineError, MAX_LINE};

/// After a seq gap, how many further lines are read looking for the missing seqs (a gap whose
/// records turn up later is a reordering, not a removal).
const LOOKAHEAD_LINES: u64 = 100_000;

/// How to verify.
#[derive(Debug, Clone, Copy, Default)]
pub struct VerifyOptions<'a> {
    /// The HMAC key: every record must then carry a valid `mac`.
    pub key: Option<&'a [u8]>,
    /// Require the files to start at seq 1 (no older file was deleted).
    pub from_start: bool,
}

/// What kind of problem was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// A file could not be opened or read.
    Unreadable,
    /// A line longer than the verifier reads (64 KiB).
    LineTooLong,
    /// A line that is not a record (not JSON, or fields missing).
    NotARecord,
    /// A record of a format version this verifier does not know.
    UnknownVersion,
    /// `hash`/`mac` malformed or not the last fields.
    NotCanonical,
    /// The recomputed hash differs: the record was edited.
    HashMismatch,
    /// A key was given but the record has no MAC.
    MacMissing,
    /// The MAC does not match: forged, rewritten without the key, or the wrong key.
    MacMismatch,
    /// A seq gap: records removed.
    Removed,
    /// A seq lower than (or equal to) the one before it.
    Reordered,
    /// `prev` is not the previous record's hash: a record was replaced or the chain rewritten.
    PrevMismatch,
    /// The last line is incomplete.
    Truncated,
    /// `--from-start` was asked for but the first record is not seq 1.
    StartsLate,
}

/// The first problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyProblem {
    /// What kind.
    pub kind: ProblemKind,
    /// In which file.
    pub file: PathBuf,
    /// At which line (1-based; 0 for the file as a whole).
    pub line: u64,
    /// The seq of the record there, when it could be read.
    pub seq: Option<u64>,
    /// What is wrong, in words.
    pub message: String,
}

impl fmt::Display for VerifyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.file.display())?;
        if self.line > 0 {
            write!(f, "line {}", self.line)?;
            if let Some(s) = self.seq {
                write!(f, " (seq {s})")?;
            }
            f.write_str(": ")?;
        }
        f.write_str(&self.message)
    }
}

/// What [`verify`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// The files, in the order they were read.
    pub files: Vec<PathBuf>,
    /// Records that checked (up to the first problem).
    pub records: u64,
    /// Seq of the first record.
    pub first_seq: Option<u64>,
    /// Seq of the last record that checked.
    pub last_seq: Option<u64>,
    /// Hash of that record (hex): compare it with the `audit chain head` in the gateway's log.
    pub head: Option<String>,
    /// Whether MACs were checked (a key was given).
    pub macs_checked: bool,
    /// Sum of `dropped_before`: events the gateway could not write (its queue was full).
    pub dropped_events: u64,
    /// `chain_broken` records seen: restarts after a damaged tail.
    pub chain_broken: u64,
    /// The first problem; `None` when everything checked.
    pub problem: Option<VerifyProblem>,
}

impl VerifyReport {
    /// True when no problem was found.
    pub fn is_intact(&self) -> bool {
        self.problem.is_none()
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(p) = &self.problem {
            return write!(
                f,
                "NOT INTACT: {p} ({} record(s) checked before it)",
                self.records
            );
        }
        write!(
            f,
            "intact: {} record(s) in {} file(s)",
            self.records,
            self.files.len()
        )?;
        if let (Some(a), Some(b)) = (self.first_seq, self.last_seq) {
            write!(f, ", seq {a}..{b}")?;
        }
        if let Some(h) = &self.head {
            write!(f, ", head {h}")?;
        }
        f.write_str(if self.macs_checked {
            ", MACs verified"
        } else {
            ", MACs not checked (no key)"
        })?;
        if let Some(a) = self.first_seq.filter(|&a| a != 1) {
            write!(
                f,
                "; starts at seq {a} (earlier records are not in these files)"
            )?;
        }
        if self.dropped_events > 0 {
            write!(
                f,
                "; {} event(s) were dropped before being written (dropped_before)",
                self.dropped_events
            )?;
        }
        if self.chain_broken > 0 {
            write!(
                f,
                "; {} chain_broken record(s): verify the damaged file(s) they name",
                self.chain_broken
            )?;
        }
        Ok(())
    }
}

/// Verifies audit files without `--from-start` (see [`verify_with`]).
pub fn verify(paths: &[PathBuf], key: Option<&[u8]>) -> VerifyReport {
    verify_with(
        paths,
        &VerifyOptions {
            key,
            from_start: false,
        },
    )
}

/// Verifies audit files as one chain. A directory stands for every regular file in it. When
/// more than one file is given and each starts with a readable seq, they are read in order of
/// their first seq (files without records last); otherwise in the order given. Reports the
/// first problem; never panics, reads at most 64 KiB per line.
pub fn verify_with(paths: &[PathBuf], opts: &VerifyOptions<'_>) -> VerifyReport {
    let mut v = Verifier {
        report: VerifyReport::default(),
        from_start: opts.from_start,
        signer: None,
        prev: None,
        gap: None,
    };
    if let Some(k) = opts.key {
        match Signer::new(k) {
            Some(s) => v.signer = Some(s),
            None => {
                v.report.problem = Some(problem(
                    ProblemKind::Unreadable,
                    Path::new("(key)"),
                    0,
                    None,
                    "the key is not usable for HMAC-SHA256".into(),
                ));
                return v.report;
            }
        }
        v.report.macs_checked = true;
    }
    let files = match expand(paths) {
        Ok(f) => f,
        Err(p) => {
            v.report.problem = Some(p);
            return v.report;
        }
    };
    v.report.files = files.clone();
    let count = files.len();
    for (i, file) in files.iter().enumerate() {
        if let Err(p) = v.file(file, i + 1 == count) {
            v.report.problem = Some(p);
            return v.report;
        }
    }
    if let Some(g) = v.gap.take() {
        v.report.problem = Some(g.removed());
    }
    v.report
}

/// A seq gap seen, not yet known to be a removal or a reordering.
#[derive(Debug)]
struct Gap {
    before: u64,
    found: u64,
    file: PathBuf,
    line: u64,
    first_of_file: bool,
    looked: u64,
}

impl Gap {
    fn removed(&self) -> VerifyProblem {
        let missing = self.found - self.before - 1;
        let whole = if self.first_of_file {
            " (a whole file missing?)"
        } else {
            ""
        };
        problem(
            ProblemKind::Removed,
            &self.file,
            self.line,
            Some(self.found),
            format!(
                "seq jumps {} → {} — {missing} record(s) removed{whole}",
                self.before, self.found
            ),
        )
    }
}

#[derive(Debug)]
struct Verifier {
    report: VerifyReport,
    from_start: bool,
    signer: Option<Signer>,
    /// Seq and hash of the last record that checked.
    prev: Option<(u64, Hash)>,
    gap: Option<Gap>,
}

impl Verifier {
    fn file(&mut self, path: &Path, last_file: bool) -> Result<(), VerifyProblem> {
        let unreadable = |line: u64, e: io::Error| {
            problem(
                ProblemKind::Unreadable,
                path,
                line,
                None,
                format!("cannot read: {e}"),
            )
        };
        let f = File::open(path).map_err(|e| unreadable(0, e))?;
        let mut lines = Lines(BufReader::with_capacity(64 * 1024, f));
        let mut buf = Vec::new();
        let mut n = 0u64;
        loop {
            let read = match lines.next(&mut buf) {
                Ok(Some(r)) => r,
                Ok(None) => return Ok(()),
                Err(e) => return Err(unreadable(n + 1, e)),
            };
            n += 1;
            if let Some(g) = &mut self.gap {
                if let Some(s) =
                    record::seq_of(&buf).filter(|s| (g.before + 1..g.found).contains(s))
                {
                    return Err(problem(
                        ProblemKind::Reordered,
                        path,
                        n,
                        Some(s),
                        format!(
                            "reordered: seq {s} after seq {} ({}:{})",
                            g.found,
                            g.file.display(),
                            g.line
                        ),
                    ));
                }
                g.looked += 1;
                if g.looked >= LOOKAHEAD_LINES {
                    return Err(g.removed());
                }
                continue;
            }
            let at_end = last_file && lines.at_eof();
            self.line(path, n, &buf, read, at_end)?;
        }
    }

    fn line(
        &mut self,
        path: &Path,
        n: u64,
        line: &[u8],
        read: Read,
        last_line: bool,
    ) -> Result<(), VerifyProblem> {
        let fail = |kind, seq, message: String| Err(problem(kind, path, n, seq, message));
        match read {
            Read::TooLong => {
                return fail(
                    ProblemKind::LineTooLong,
                    None,
                    format!(
                        "line longer than {} KiB — not written by wardgate",
                        MAX_LINE / 1024
                    ),
                );
            }
            Read::NoNewline => {
                return fail(
                    ProblemKind::Truncated,
                    record::seq_of(line),
                    "last line truncated (no newline at the end)".into(),
                );
            }
            Read::Line => {}
        }
        let c = match record::check_line(line) {
            Ok(c) => c,
            Err(LineError::Unparsable(m)) if last_line => {
                return fail(
                    ProblemKind::Truncated,
                    None,
                    format!("last line truncated or damaged — not a record ({m})"),
                );
            }
            Err(LineError::Unparsable(m)) => {
                return fail(ProblemKind::NotARecord, None, format!("not a record ({m})"));
            }
            Err(LineError::Version(v)) => {
                return fail(
                    ProblemKind::UnknownVersion,
                    None,
                    format!("unknown record version {v}"),
                );
            }
            Err(LineError::NotCanonical { seq }) => {
                return fail(
                    ProblemKind::NotCanonical,
                    Some(seq),
                    "hash/mac malformed or not the last fields — record was edited".into(),
                );
            }
            Err(LineError::HashMismatch { seq }) => {
                return fail(
                    ProblemKind::HashMismatch,
                    Some(seq),
                    "hash mismatch — record was edited".into(),
                );
            }
        };
        let seq = Some(c.seq);
        if let Some(s) = &self.signer {
            match &c.mac {
                None => {
                    return fail(
                        ProblemKind::MacMissing,
                        seq,
                        "no MAC — written without a key, or the MAC was removed".into(),
                    );
                }
                Some(m) if !s.check(&c.hash, m) => {
                    return fail(
                        ProblemKind::MacMismatch,
                        seq,
                        "MAC mismatch — record forged or rewritten without the key (or the key is wrong)".into(),
                    );
                }
                Some(_) => {}
            }
        }
        match self.prev {
            None => {
                if self.from_start && c.seq != 1 {
                    return fail(
                        ProblemKind::StartsLate,
                        seq,
                        format!(
                            "starts at seq {}, not 1 — earlier records or files are missing",
                            c.seq
                        ),
                    );
                }
                self.report.first_seq = Some(c.seq);
            }
            Some((ps, ph)) => {
                if c.seq <= ps {
                    return fail(
                        ProblemKind::Reordered,
                        seq,
                        format!("reordered: seq {} after {ps}", c.seq),
                    );
                }
                if c.seq > ps + 1 {
                    self.gap = Some(Gap {
                        before: ps,
                        found: c.seq,
                        file: path.to_owned(),
                        line: n,
                        first_of_file: n == 1,
                        looked: 0,
                    });
                    return Ok(());
                }
                if c.prev != ph {
                    return fail(
                        ProblemKind::PrevMismatch,
                        seq,
                        format!(
                            "prev of seq {} does not match hash of seq {ps} — a record was replaced or the chain rewritten",
                            c.seq
                        ),
                    );
                }
            }
        }
        if c.seq == 1 && c.prev != [0; 32] {
            return fail(
                ProblemKind::PrevMismatch,
                seq,
                "seq 1 must have prev = 64 zeros".into(),
            );
        }
        self.prev = Some((c.seq, c.hash));
        self.report.records += 1;
        self.report.last_seq = Some(c.seq);
        self.report.head = Some(record::hex(&c.hash));
        self.report.dropped_events = self.report.dropped_events.saturating_add(c.dropped_before);
        if c.kind == "chain_broken" {
            self.report.chain_broken += 1;
        }
        Ok(())
    }
}

fn problem(
    kind: ProblemKind,
    file: &Path,
    line: u64,
    seq: Option<u64>,
    message: String,
) -> VerifyProblem {
    VerifyProblem {
        kind,
        file: file.to_owned(),
        line,
        seq,
        message,
    }
}

/// What the first line of a file says about its place in the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Start {
    Seq(u64),
    /// No bytes: sorts after every file with records.
    Empty,
}

fn start_of(path: &Path) -> Option<Start> {
    match std::fs::metadata(path) {
        Ok(m) if m.len() == 0 => Some(Start::Empty),
        _ => crate::resume::first_seq(path)
            .ok()
            .flatten()
            .map(Start::Seq),
    }
}

/// Directories become their regular files (by name); then, if every file's start is known,
/// sorts by first seq.
fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, VerifyProblem> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let entries = std::fs::read_dir(p).map_err(|e| {
                problem(
                    ProblemKind::Unreadable,
                    p,
                    0,
                    None,
                    format!("cannot list: {e}"),
                )
            })?;
            let mut inside: Vec<PathBuf> = entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect();
            inside.sort();
            files.extend(inside);
        } else {
            files.push(p.clone());
        }
    }
    if files.len() > 1 {
        let starts: Option<Vec<Start>> = files.iter().map(|f| start_of(f)).collect();
        if let Some(starts) = starts {
            let mut keyed: Vec<(Start, PathBuf)> = starts.into_iter().zip(files).collect();
            keyed.sort_by_key(|(s, _)| *s);
            files = keyed.into_iter().map(|(_, f)| f).collect();
        }
    }
    Ok(files)
}

/// How a line ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    /// With `\n`.
    Line,
    /// At the end of the file, without `\n`.
    NoNewline,
    /// Longer than [`MAX_LINE`]; skipped to its end, content not kept.
    TooLong,
}

/// Lines of at most [`MAX_LINE`] bytes, however long the file's lines are.
struct Lines<R>(R);

impl<R: BufRead> Lines<R> {
    fn next(&mut self, buf: &mut Vec<u8>) -> io::Result<Option<Read>> {
        buf.clear();
        let mut any = false;
        let mut too_long = false;
        loop {
            let avail = self.0.fill_buf()?;
            if avail.is_empty() {
                return Ok(match (any, too_long) {
                    (false, _) => None,
                    (true, true) => Some(Read::TooLong),
                    (true, false) => Some(Read::NoNewline),
                });
            }
            any = true;
            let newline = avail.iter().position(|&b| b == b'\n');
            let chunk = newline.unwrap_or(avail.len());
            if !too_long {
                if buf.len() + chunk > MAX_LINE {
                    too_long = true;
                    buf.clear();
                } else {
                    buf.extend_from_slice(avail.get(..chunk).unwrap_or_default());
                }
            }
            self.0.consume(newline.map_or(chunk, |i| i + 1));
            if newline.is_some() {
                return Ok(Some(if too_long { Read::TooLong } else { Read::Line }));
            }
        }
    }

    fn at_eof(&mut self) -> bool {
        self.0.fill_buf().map(<[u8]>::is_empty).unwrap_or(false)
    }
}
