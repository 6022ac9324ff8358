//! Captures started and stopped at run time (the admin API's `/admin/v1/captures`): one
//! capture at a time, with its own filters, an optional duration and the ring of files it
//! writes into; the taps are always in place and cost one atomic load while nothing records.
//!
//! A capture with a duration is stopped by a timer its starter sets (the admin API does), by
//! id, so a late timer never stops a later capture.
//!
//! [`CaptureControl`] owns the session: [`CaptureControl::start`] compiles the request's
//! filters, starts a writer thread on the configured directory and publishes the session's
//! [`CaptureHandle`]; [`CaptureControl::stop`] takes it away again, so the writer sees its last
//! sender go, writes what is queued and closes its file. Taps reach the session through a
//! [`CaptureTap`]: an `AtomicBool` says whether anything records, then a read lock on the
//! session (never held across I/O: `offer` only filters, copies and `try_send`s).
//!
//! Safety rails: payloads stay redacted unless `[monitor.capture] redact_payloads = false` (an
//! administrator cannot turn patient data on through the API); a duration is at most
//! [`MAX_DURATION`]; files are only ever served by a name the ring itself would give, so a
//! download cannot leave the capture directory.

use std::fs::{self, File};
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use wardgate_core::PeerContext;

use crate::capture::{CaptureHandle, CaptureWriter};
use crate::config::CaptureConfig;
use crate::error::MonitorError;
use crate::keylog::KeyLog;
use crate::metrics::CaptureMetrics;
use crate::pcapng::Direction;
use crate::ring::parse_seq;

/// The longest capture the API starts: a day. Longer recordings belong in the configuration.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// What an administrator asks for. Empty filters record every peer (as in the config).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaptureRequest {
    /// Proven device identities (exact or `prefix*`).
    pub devices: Vec<String>,
    /// Peer prefixes.
    pub addresses: Vec<String>,
    /// `coap`, `coaps`, `https`, `http`, `mqtt`, `mqtts` (see [`crate::filter::PROTOCOLS`]).
    pub protocols: Vec<String>,
    /// Stop by itself after this long (`"60s"`, `"15m"`); none: until stopped.
    #[serde(with = "humantime_serde::option")]
    pub duration: Option<Duration>,
    /// Zero payloads (default: the configuration's `redact_payloads`). `false` is refused
    /// unless the configuration allows unredacted captures.
    pub redact_payloads: Option<bool>,
}

/// A capture session as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionInfo {
    /// Increases with every capture started in this process.
    pub id: u64,
    /// Who started it (`config` for `[monitor.capture] enabled`, else the administrator).
    pub started_by: String,
    /// RFC 3339.
    pub started_at: String,
    /// When it stops by itself (RFC 3339), if it has a duration.
    pub until: Option<String>,
    /// Its filters.
    pub devices: Vec<String>,
    /// Its filters.
    pub addresses: Vec<String>,
    /// Its filters.
    pub protocols: Vec<String>,
    /// Whether payloads are zeroed.
    pub redact_payloads: bool,
}

/// One file of the capture directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CaptureFile {
    /// The file name (`capture-20261130T163104Z-000042.pcapng`).
    pub name: String,
    /// Its size.
    pub bytes: u64,
    /// Last modified (RFC 3339).
    pub modified: String,
}

/// Why a control request failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// A capture is already running (stop it first).
    #[error("a capture is already running (id {0}); stop it first")]
    Busy(u64),
    /// The request is not acceptable; the message says why.
    #[error("{0}")]
    Invalid(String),
    /// No capture file by that name.
    #[error("no such capture file")]
    NotFound,
    /// The directory or the writer thread failed.
    #[error("{0}")]
    Failed(String),
}

struct Session {
    handle: CaptureHandle,
    writer: CaptureWriter,
    info: SessionInfo,
}

struct Inner {
    base: CaptureConfig,
    metrics: CaptureMetrics,
    recording: AtomicBool,
    session: RwLock<Option<Session>>,
    next_id: AtomicU64,
    /// `[monitor.capture] keylog_file`, once opened ([`CaptureControl::open_keylog`]).
    keylog: OnceLock<KeyLog>,
}

/// Starts, stops and lists captures; see the module doc. Cheap to clone.
#[derive(Clone)]
pub struct CaptureControl {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for CaptureControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureControl")
            .field("dir", &self.inner.base.dir)
            .field("recording", &self.inner.recording.load(Ordering::Relaxed))
            .finish()
    }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

impl CaptureControl {
    /// A control over the directory and ring of `base` (which must have passed validation);
    /// nothing records until [`CaptureControl::start`].
    pub fn new(base: CaptureConfig, metrics: CaptureMetrics) -> Self {
        CaptureControl {
            inner: Arc::new(Inner {
                base,
                metrics,
                recording: AtomicBool::new(false),
                session: RwLock::new(None),
                next_id: AtomicU64::new(1),
                keylog: OnceLock::new(),
            }),
        }
    }

    /// Opens `[monitor.capture] keylog_file`, if set: from then on the secrets of captured DTLS
    /// sessions are written to it (see [`crate::keylog`]). The gateway calls this; the
    /// interface monitor, which holds no keys, does not.
    pub fn open_keylog(&self) -> Result<(), MonitorError> {
        let Some(path) = &self.inner.base.keylog_file else {
            return Ok(());
        };
        if self.inner.keylog.get().is_none() {
            let log = KeyLog::open(path, self.inner.metrics.clone())?;
            let _ = self.inner.keylog.set(log);
        }
        Ok(())
    }

    /// Whether session secrets are wanted (a key log is open).
    pub fn wants_session_keys(&self) -> bool {
        self.inner.keylog.get().is_some()
    }

    /// Writes a session's secrets to the key log when a capture records and its filters take
    /// `peer`.
    pub fn session_keys(&self, peer: &PeerContext, client_random: &[u8; 32], master: &[u8; 48]) {
        let Some(log) = self.inner.keylog.get() else {
            return;
        };
        self.with_handle(|h| {
            if h.filter().matches(peer) {
                log.write(client_random, master);
            }
        });
    }

    /// What the taps hold.
    pub fn tap(&self) -> CaptureTap {
        CaptureTap::Controlled(self.clone())
    }

    /// Starts a capture with the request's filters. `by` names who asked (for the session
    /// view; the caller audits).
    pub fn start(&self, req: &CaptureRequest, by: &str) -> Result<SessionInfo, ControlError> {
        let base = &self.inner.base;
        let redact = req.redact_payloads.unwrap_or(base.redact_payloads);
        if !redact && base.redact_payloads {
            return Err(ControlError::Invalid(
                "unredacted captures are off: [monitor.capture] redact_payloads = true (payloads are patient data)"
                    .into(),
            ));
        }
        if let Some(d) = req.duration
            && (d.is_zero() || d > MAX_DURATION)
        {
            return Err(ControlError::Invalid(
                "duration must be longer than 0 and at most 24h".into(),
            ));
        }
        let cfg = CaptureConfig {
            enabled: true,
            devices: req.devices.clone(),
            addresses: req.addresses.clone(),
            protocols: req.protocols.clone(),
            redact_payloads: redact,
            ..base.clone()
        };
        let mut slot = self
            .inner
            .session
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = slot.as_ref() {
            return Err(ControlError::Busy(s.info.id));
        }
        let (handle, queue) = CaptureHandle::channel(&cfg, self.inner.metrics.clone())
            .map_err(|e| ControlError::Invalid(e.to_string()))?;
        let writer = queue
            .spawn_writer(&cfg)
            .map_err(|e| ControlError::Failed(e.to_string()))?;
        let now = SystemTime::now();
        let deadline = req.duration.map(|d| now + d);
        let info = SessionInfo {
            id: self.inner.next_id.fetch_add(1, Ordering::Relaxed),
            started_by: by.to_owned(),
            started_at: rfc3339(now),
            until: deadline.map(rfc3339),
            devices: cfg.devices,
            addresses: cfg.addresses,
            protocols: cfg.protocols,
            redact_payloads: redact,
        };
        *slot = Some(Session {
            handle,
            writer,
            info: info.clone(),
        });
        self.inner.recording.store(true, Ordering::Release);
        tracing::info!(
            capture = info.id,
            by,
            redact = redact,
            dir = %base.dir.display(),
            "capture started"
        );
        Ok(info)
    }

    /// Stops the running capture (the one with `id`, if given) and waits until its files are
    /// complete. Blocking: call from a blocking thread. The stopped session, if one ran.
    pub fn stop(&self, id: Option<u64>) -> Option<SessionInfo> {
        let session = {
            let mut slot = self
                .inner
                .session
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            if id.is_some_and(|id| slot.as_ref().is_some_and(|s| s.info.id != id)) {
                return None;
            }
            let s = slot.take()?;
            self.inner.recording.store(false, Ordering::Release);
            s
        };
        let Session {
            handle,
            writer,
            info,
        } = session;
        // The writer ends once its last sender is gone (taps only borrow the handle).
        drop(handle);
        writer.join();
        tracing::info!(capture = info.id, "capture stopped");
        Some(info)
    }

    /// The running capture, if any.
    pub fn current(&self) -> Option<SessionInfo> {
        self.inner
            .session
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|s| s.info.clone())
    }

    /// The capture files in the directory, oldest first (none when it does not exist yet).
    pub fn files(&self) -> io::Result<Vec<CaptureFile>> {
        let listed = match crate::ring::list(&self.inner.base.dir) {
            Ok(l) => l,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::with_capacity(listed.len());
        for (_, path) in listed {
            let meta = match fs::metadata(&path) {
                Ok(m) => m,
                // Deleted by the ring between the listing and now.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            out.push(CaptureFile {
                name: path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default()
                    .to_owned(),
                bytes: meta.len(),
                modified: meta.modified().map(rfc3339).unwrap_or_default(),
            });
        }
        Ok(out)
    }

    /// Opens a capture file for download: only names the ring gives (no path can leave the
    /// directory). The file and its length.
    pub fn open_file(&self, name: &str) -> Result<(File, u64), ControlError> {
        if parse_seq(name).is_none() || name.contains(['/', '\\']) {
            return Err(ControlError::NotFound);
        }
        let path: PathBuf = self.inner.base.dir.join(name);
        let file = File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => ControlError::NotFound,
            _ => ControlError::Failed(format!("{}: {e}", path.display())),
        })?;
        let len = file
            .metadata()
            .map_err(|e| ControlError::Failed(e.to_string()))?
            .len();
        Ok((file, len))
    }

    fn offer(&self, direction: Direction, peer: &PeerContext, local: SocketAddr, bytes: &[u8]) {
        self.with_handle(|h| {
            h.offer(direction, peer, local, bytes);
        });
    }

    fn offer_segment(
        &self,
        direction: Direction,
        peer: &PeerContext,
        local: SocketAddr,
        len: usize,
    ) {
        self.with_handle(|h| {
            h.offer_segment(direction, peer, local, len);
        });
    }

    /// Runs `f` on the running capture's handle, if one is recording.
    fn with_handle(&self, f: impl FnOnce(&CaptureHandle)) {
        if !self.inner.recording.load(Ordering::Acquire) {
            return;
        }
        let slot = self
            .inner
            .session
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = slot.as_ref() {
            f(&s.handle);
        }
    }
}

/// What a tap offers datagrams to: a fixed capture, or whatever the control runs now.
#[derive(Debug, Clone)]
pub enum CaptureTap {
    /// One capture for the tap's whole life.
    Fixed(CaptureHandle),
    /// The control's current capture, if any.
    Controlled(CaptureControl),
}

impl From<CaptureHandle> for CaptureTap {
    fn from(h: CaptureHandle) -> Self {
        CaptureTap::Fixed(h)
    }
}

impl CaptureTap {
    /// Offers one datagram (see [`CaptureHandle::offer`]); never waits.
    pub fn offer(&self, direction: Direction, peer: &PeerContext, local: SocketAddr, bytes: &[u8]) {
        match self {
            CaptureTap::Fixed(h) => {
                h.offer(direction, peer, local, bytes);
            }
            CaptureTap::Controlled(c) => c.offer(direction, peer, local, bytes),
        }
    }

    /// Offers one stream segment's size (see [`CaptureHandle::offer_segment`]); never waits.
    pub fn offer_segment(
        &self,
        direction: Direction,
        peer: &PeerContext,
        local: SocketAddr,
        len: usize,
    ) {
        match self {
            CaptureTap::Fixed(h) => {
                h.offer_segment(direction, peer, local, len);
            }
            CaptureTap::Controlled(c) => c.offer_segment(direction, peer, local, len),
        }
    }

    /// Whether the capture takes DTLS session secrets (a controlled capture with a key log).
    pub fn wants_session_keys(&self) -> bool {
        matches!(self, CaptureTap::Controlled(c) if c.wants_session_keys())
    }

    /// Offers a session's secrets to the key log (see [`CaptureControl::session_keys`]).
    pub fn session_keys(&self, peer: &PeerContext, client_random: &[u8; 32], master: &[u8; 48]) {
        if let CaptureTap::Controlled(c) = self {
            c.session_keys(peer, client_random, master);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wardgate_core::TransportKind;

    fn control(dir: &std::path::Path, redact: bool) -> CaptureControl {
        CaptureControl::new(
            CaptureConfig {
                dir: dir.join("captures"),
                redact_payloads: redact,
                ..CaptureConfig::default()
            },
            CaptureMetrics::default(),
        )
    }

    fn offer(c: &CaptureControl, port: u16) {
        let peer = PeerContext::new(SocketAddr::from(([127, 0, 0, 1], port)), TransportKind::Udp);
        c.tap().offer(
            Direction::Inbound,
            &peer,
            SocketAddr::from(([127, 0, 0, 1], 5683)),
            &[0x40, 0x02, 0, 1],
        );
    }

    #[test]
    fn one_capture_at_a_time_with_its_own_filters_and_files_listed_after_stop() {
        let tmp = tempfile::tempdir().unwrap();
        let c = control(tmp.path(), true);
        offer(&c, 1); // nothing records yet
        assert!(c.files().unwrap().is_empty());
        let req = CaptureRequest {
            addresses: vec!["127.0.0.1".into()],
            ..CaptureRequest::default()
        };
        let info = c.start(&req, "ops-1").unwrap();
        assert_eq!((info.id, info.started_by.as_str()), (1, "ops-1"));
        assert!(info.redact_payloads);
        assert!(matches!(c.start(&req, "ops-2"), Err(ControlError::Busy(1))));
        offer(&c, 2);
        offer(&c, 3);
        assert_eq!(c.current().unwrap().id, 1);
        assert_eq!(c.stop(Some(99)), None, "not the running one");
        let stopped = c.stop(None).unwrap();
        assert_eq!(stopped.id, 1);
        assert!(c.current().is_none());
        let files = c.files().unwrap();
        assert_eq!(files.len(), 1);
        let (_, len) = c.open_file(&files[0].name).unwrap();
        assert_eq!(len, files[0].bytes);
        assert!(len > 100, "headers and two packets");
        // A second capture gets the next id and its own file.
        assert_eq!(c.start(&CaptureRequest::default(), "ops-1").unwrap().id, 2);
        offer(&c, 4);
        c.stop(None);
        assert_eq!(c.files().unwrap().len(), 2);
    }

    #[test]
    fn bad_requests_are_refused_and_names_cannot_leave_the_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let c = control(tmp.path(), true);
        let unredacted = CaptureRequest {
            redact_payloads: Some(false),
            ..CaptureRequest::default()
        };
        assert!(matches!(
            c.start(&unredacted, "x"),
            Err(ControlError::Invalid(_))
        ));
        let long = CaptureRequest {
            duration: Some(Duration::from_secs(2 * 24 * 3600)),
            ..CaptureRequest::default()
        };
        assert!(matches!(c.start(&long, "x"), Err(ControlError::Invalid(_))));
        let bad = CaptureRequest {
            addresses: vec!["not-an-ip".into()],
            ..CaptureRequest::default()
        };
        assert!(matches!(c.start(&bad, "x"), Err(ControlError::Invalid(_))));
        assert!(c.current().is_none());
        for name in [
            "../outbox.db",
            "capture-x-000001.pcapng/../../etc/passwd",
            "capture-20261130T000000Z-000001.pcapng",
        ] {
            assert!(
                matches!(c.open_file(name), Err(ControlError::NotFound)),
                "{name}"
            );
        }
        // With the configuration allowing it, an unredacted capture starts.
        let open = control(tmp.path(), false);
        assert!(!open.start(&unredacted, "x").unwrap().redact_payloads);
        open.stop(None);
    }

    #[test]
    fn a_duration_is_reported_and_only_that_capture_is_stopped_by_its_id() {
        let tmp = tempfile::tempdir().unwrap();
        let c = control(tmp.path(), true);
        let req = CaptureRequest {
            duration: Some(Duration::from_secs(60)),
            ..CaptureRequest::default()
        };
        let first = c.start(&req, "ops").unwrap();
        assert!(first.until.is_some());
        c.stop(None);
        let second = c.start(&CaptureRequest::default(), "ops").unwrap();
        assert!(second.until.is_none());
        // The first capture's timer fires late: the second keeps running.
        assert_eq!(c.stop(Some(first.id)), None);
        assert_eq!(c.current().map(|i| i.id), Some(second.id));
        assert_eq!(c.stop(Some(second.id)).map(|i| i.id), Some(second.id));
    }
}
