//! The capture pipeline: taps offer copies of datagrams to a [`CaptureHandle`] (filter, copy,
//! `try_send` on a bounded queue: never waits), and one std writer thread turns them into
//! pcapng in a [`Ring`] of files.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use wardgate_core::{Identity, PeerContext};

use crate::config::CaptureConfig;
use crate::error::MonitorError;
use crate::filter::CaptureFilter;
use crate::frame::{MAX_TCP_PAYLOAD, tcp_packet, udp_packet};
use crate::metrics::CaptureMetrics;
use crate::pcapng::{self, Direction, LINKTYPE_RAW};
use crate::redact::redact;
use crate::ring::Ring;

/// How long a writer sleeps between drains of its queue while traffic flows. The queue must
/// hold this long's datagrams: 20 ms at 100k datagrams/s is 2,000, half the default queue.
pub(crate) const DRAIN_EVERY: Duration = Duration::from_millis(20);

/// What one [`drain`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Drained {
    /// At least one item.
    Some,
    /// The queue was empty.
    Nothing,
    /// Every sender is gone (after the items it held).
    Closed,
}

/// Hands every item queued now to `f` without blocking.
pub(crate) fn drain<T>(rx: &Receiver<T>, mut f: impl FnMut(T)) -> Drained {
    let mut any = false;
    loop {
        match rx.try_recv() {
            Ok(item) => {
                any = true;
                f(item);
            }
            Err(TryRecvError::Empty) => {
                return if any { Drained::Some } else { Drained::Nothing };
            }
            Err(TryRecvError::Disconnected) => return Drained::Closed,
        }
    }
}

/// One datagram as a tap saw it.
#[derive(Debug, Clone)]
pub struct CapturedPacket {
    /// When the tap saw it.
    pub at: SystemTime,
    /// Received or sent by the gateway.
    pub direction: Direction,
    /// The peer's address.
    pub peer: SocketAddr,
    /// The gateway's socket address.
    pub local: SocketAddr,
    /// What the transport proved about the peer (written as the packet's comment).
    pub identity: Option<Identity>,
    /// The datagram (the UDP payload).
    pub data: Vec<u8>,
    /// A stream segment (TLS on the HTTPS ingest) of this many bytes instead of a datagram:
    /// written as a TCP segment of that length whose bytes are zero (`data` is empty). The
    /// bytes a stream tap sees are plaintext above TLS, so only sizes and times are kept.
    pub segment: Option<usize>,
}

/// Sessions whose TCP sequence numbers a writer tracks at once; beyond, it forgets them all
/// (their next segments start from 1 again).
const MAX_SESSIONS: usize = 4096;

/// Where taps hand datagrams. Cheap to clone; [`CaptureHandle::offer`] never blocks.
#[derive(Debug, Clone)]
pub struct CaptureHandle {
    tx: SyncSender<CapturedPacket>,
    filter: Arc<CaptureFilter>,
    metrics: CaptureMetrics,
}

/// The receiving end of the capture queue, until a writer takes it.
#[derive(Debug)]
pub struct CaptureQueue {
    rx: Receiver<CapturedPacket>,
    metrics: CaptureMetrics,
}

/// The running writer thread.
#[derive(Debug)]
pub struct CaptureWriter {
    thread: JoinHandle<()>,
    dir: PathBuf,
}

/// Starts a capture: the queue and its writer thread. The writer ends, after writing what is
/// queued, once every [`CaptureHandle`] clone has been dropped.
pub fn start(
    cfg: &CaptureConfig,
    metrics: CaptureMetrics,
) -> Result<(CaptureHandle, CaptureWriter), MonitorError> {
    let (handle, queue) = CaptureHandle::channel(cfg, metrics)?;
    let writer = queue.spawn_writer(cfg)?;
    Ok((handle, writer))
}

impl CaptureHandle {
    /// A handle and the queue behind it (`queue_packets` deep, at least 1), filters compiled
    /// from `cfg`. Nothing is written until [`CaptureQueue::spawn_writer`].
    pub fn channel(
        cfg: &CaptureConfig,
        metrics: CaptureMetrics,
    ) -> Result<(CaptureHandle, CaptureQueue), MonitorError> {
        let filter = CaptureFilter::from_config(cfg).map_err(|problems| {
            MonitorError::Filter(
                problems
                    .into_iter()
                    .map(|(at, m)| format!("{at}: {m}"))
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })?;
        let (tx, rx) = sync_channel(cfg.queue_packets.max(1));
        Ok((
            CaptureHandle {
                tx,
                filter: Arc::new(filter),
                metrics: metrics.clone(),
            },
            CaptureQueue { rx, metrics },
        ))
    }

    /// The compiled filters.
    pub fn filter(&self) -> &CaptureFilter {
        &self.filter
    }

    /// Copies `datagram` into the queue if `peer` passes the filters. Never waits: a full
    /// queue (or a stopped writer) drops the copy and counts it. Returns whether it was queued.
    pub fn offer(
        &self,
        direction: Direction,
        peer: &PeerContext,
        local: SocketAddr,
        datagram: &[u8],
    ) -> bool {
        if !self.filter.matches(peer) {
            return false;
        }
        self.queue(direction, peer, local, datagram.to_vec(), None)
    }

    /// Queues a stream segment of `len` bytes (its size and time only; see
    /// [`CapturedPacket::segment`]) if `peer` passes the filters. Never waits, like
    /// [`Self::offer`].
    pub fn offer_segment(
        &self,
        direction: Direction,
        peer: &PeerContext,
        local: SocketAddr,
        len: usize,
    ) -> bool {
        if !self.filter.matches(peer) {
            return false;
        }
        self.queue(direction, peer, local, Vec::new(), Some(len))
    }

    fn queue(
        &self,
        direction: Direction,
        peer: &PeerContext,
        local: SocketAddr,
        data: Vec<u8>,
        segment: Option<usize>,
    ) -> bool {
        let packet = CapturedPacket {
            at: SystemTime::now(),
            direction,
            peer: peer.addr,
            local,
            identity: peer.identity.clone(),
            data,
            segment,
        };
        match self.tx.try_send(packet) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.metrics.drop_one();
                false
            }
        }
    }
}

impl CaptureQueue {
    /// Starts the writer thread on the capture directory of `cfg` (created, mode 0700, if
    /// missing; the files already there count towards `max_files`).
    pub fn spawn_writer(self, cfg: &CaptureConfig) -> Result<CaptureWriter, MonitorError> {
        let ring = Ring::open(&cfg.dir, cfg.max_files).map_err(|source| MonitorError::Dir {
            path: cfg.dir.clone(),
            source,
        })?;
        let mut writer = Writer {
            ring,
            current: None,
            max_file_bytes: cfg.max_file_bytes,
            max_file_age: cfg.max_file_age,
            redact: cfg.redact_payloads,
            metrics: self.metrics,
            failing: false,
            sessions: HashMap::new(),
        };
        let rx = self.rx;
        let thread = std::thread::Builder::new()
            .name("wardgate-capture".into())
            .spawn(move || writer.run(&rx))
            .map_err(MonitorError::Thread)?;
        Ok(CaptureWriter {
            thread,
            dir: cfg.dir.clone(),
        })
    }
}

impl CaptureWriter {
    /// The capture directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Waits until every handle is gone and everything queued is written and flushed.
    pub fn join(self) {
        if self.thread.join().is_err() {
            tracing::error!("the capture writer thread panicked");
        }
    }
}

struct OpenFile {
    path: PathBuf,
    out: BufWriter<File>,
    bytes: u64,
    packets: u64,
    opened: Instant,
}

struct Writer {
    ring: Ring,
    current: Option<OpenFile>,
    max_file_bytes: u64,
    max_file_age: Duration,
    redact: bool,
    metrics: CaptureMetrics,
    /// A write failed and was logged; the next failure is only counted until one succeeds.
    failing: bool,
    /// Per stream session (peer, local): the next sequence number of each direction (from the
    /// peer, from the gateway).
    sessions: HashMap<(SocketAddr, SocketAddr), (u32, u32)>,
}

impl Writer {
    fn run(&mut self, rx: &Receiver<CapturedPacket>) {
        // Idle: blocked on the queue (no CPU). Under traffic: drain what is queued, sleep
        // `DRAIN_EVERY`, drain again, so a tap's `try_send` finds nobody waiting and never pays
        // for waking this thread (one wake per burst instead of one per datagram: on a small
        // box this thread shares the core with ingest). Flush when a round finds nothing, so
        // the files are complete up to the last packet whenever the gateway is idle.
        while let Ok(first) = rx.recv() {
            self.write(first);
            loop {
                match drain(rx, |p| self.write(p)) {
                    Drained::Some => std::thread::sleep(DRAIN_EVERY),
                    Drained::Nothing => break,
                    Drained::Closed => {
                        self.close();
                        return;
                    }
                }
            }
            self.flush();
        }
        self.close();
    }

    fn write(&mut self, mut p: CapturedPacket) {
        let original = p.segment.unwrap_or(p.data.len());
        if self.redact {
            redact(&mut p.data);
        }
        let (src, dst) = match p.direction {
            Direction::Inbound => (p.peer, p.local),
            Direction::Outbound => (p.local, p.peer),
        };
        let ip = match p.segment {
            None => udp_packet(src, dst, &p.data),
            Some(len) => self.tcp_segment(&p, src, dst, len),
        };
        let nanos =
            p.at.duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let comment = p.identity.as_ref().map(ToString::to_string);
        let block = pcapng::enhanced_packet(nanos, &ip, ip.len(), p.direction, comment.as_deref());
        match self.append(&block, p.at) {
            Ok(()) => {
                self.failing = false;
                self.metrics.written(original);
            }
            Err(e) => {
                self.metrics.write_failed();
                if !self.failing {
                    tracing::error!(error = %e, "capture write failed; packets are lost until a write succeeds");
                    self.failing = true;
                }
                // Start over in a fresh file rather than continue a file with a torn block.
                self.current = None;
            }
        }
    }

    /// A TCP segment of `len` zero bytes in `p`'s session, continuing its sequence numbers.
    fn tcp_segment(
        &mut self,
        p: &CapturedPacket,
        src: SocketAddr,
        dst: SocketAddr,
        len: usize,
    ) -> Vec<u8> {
        if self.sessions.len() >= MAX_SESSIONS && !self.sessions.contains_key(&(p.peer, p.local)) {
            self.sessions.clear();
        }
        let next = self.sessions.entry((p.peer, p.local)).or_insert((1, 1));
        let len = len.min(MAX_TCP_PAYLOAD);
        let step = u32::try_from(len).unwrap_or(u32::MAX);
        let (seq, ack) = match p.direction {
            Direction::Inbound => {
                let s = next.0;
                next.0 = s.wrapping_add(step);
                (s, next.1)
            }
            Direction::Outbound => {
                let s = next.1;
                next.1 = s.wrapping_add(step);
                (s, next.0)
            }
        };
        tcp_packet(src, dst, seq, ack, &vec![0; len])
    }

    fn append(&mut self, block: &[u8], now: SystemTime) -> io::Result<()> {
        let len = block.len() as u64;
        let due = self.current.as_ref().is_some_and(|f| {
            (f.packets > 0 && f.bytes + len > self.max_file_bytes)
                || f.opened.elapsed() >= self.max_file_age
        });
        if due {
            self.rotate();
        }
        let file = match &mut self.current {
            Some(f) => f,
            None => self.current.insert(open(&mut self.ring, now)?),
        };
        file.out.write_all(block)?;
        file.bytes += len;
        file.packets += 1;
        Ok(())
    }

    fn rotate(&mut self) {
        if let Some(mut f) = self.current.take() {
            if let Err(e) = f.out.flush() {
                tracing::warn!(file = %f.path.display(), error = %e, "capture file not flushed at rotation");
            }
            self.metrics.rotated();
        }
    }

    fn flush(&mut self) {
        if let Some(f) = &mut self.current {
            if let Err(e) = f.out.flush() {
                self.metrics.write_failed();
                tracing::warn!(file = %f.path.display(), error = %e, "capture flush failed");
                self.current = None;
            }
        }
    }

    fn close(&mut self) {
        if let Some(mut f) = self.current.take() {
            let synced = f.out.flush().and_then(|()| f.out.get_ref().sync_data());
            if let Err(e) = synced {
                tracing::warn!(file = %f.path.display(), error = %e, "capture file not synced at close");
            }
        }
    }
}

/// Opens the next file of the ring and writes its Section Header and Interface Description.
fn open(ring: &mut Ring, now: SystemTime) -> io::Result<OpenFile> {
    let (path, file) = ring.create_next(now)?;
    let mut out = BufWriter::with_capacity(64 * 1024, file);
    let shb = pcapng::section_header(concat!("wardgate ", env!("CARGO_PKG_VERSION")));
    let idb = pcapng::interface_description(LINKTYPE_RAW, "wardgate-taps");
    out.write_all(&shb)?;
    out.write_all(&idb)?;
    tracing::debug!(file = %path.display(), "capture file opened");
    Ok(OpenFile {
        path,
        out,
        bytes: (shb.len() + idb.len()) as u64,
        packets: 0,
        opened: Instant::now(),
    })
}
