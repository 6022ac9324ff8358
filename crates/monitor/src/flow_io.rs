//! Running the flow table and the anomaly detectors: [`FlowHandle`] (what taps call, never
//! waits) and [`FlowWriter`] (the monitor's analysis thread: it owns the [`FlowTable`] and
//! appends records to `flows.jsonl` and `flows.csv`, and runs the [`AnomalyDetector`] whose
//! events go to a sink).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use wardgate_core::PeerContext;

use crate::anomaly::{Anomaly, AnomalyDetector};
use crate::capture::{DRAIN_EVERY, Drained, drain};
use crate::config::AnomaliesConfig;
use crate::config::FlowsConfig;
use crate::error::MonitorError;
use crate::flow::{
    CSV_COLUMNS, CoapMeta, FlowPacket, FlowRecord, FlowTable, Lwm2mOp, is_client_hello,
};
use crate::metrics::AnomalyMetrics;
use crate::pcapng::Direction;

/// The JSON lines file in `dir`.
pub const JSONL_FILE: &str = "flows.jsonl";
/// The CSV file in `dir`.
pub const CSV_FILE: &str = "flows.csv";
/// How often the writer ends idle flows and flushes its files when no packet arrives.
const TICK: Duration = Duration::from_secs(1);

/// The flow exporter's metrics.
#[derive(Debug, Clone, Default)]
pub struct FlowMetrics {
    records: Counter,
    active: Gauge,
    dropped: Counter,
    evicted: Counter,
    write_errors: Counter,
}

impl FlowMetrics {
    /// Registers every flow metric in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = FlowMetrics::default();
        registry.register(
            "wardgate_monitor_flow_records",
            "Flow records written (flows.jsonl and flows.csv)",
            m.records.clone(),
        );
        registry.register(
            "wardgate_monitor_flows_active",
            "Flows open in the flow table",
            m.active.clone(),
        );
        registry.register(
            "wardgate_monitor_flow_packets_dropped",
            "Datagrams neither counted in a flow nor seen by the anomaly detectors because the monitor's queue was full (ingest is never slowed)",
            m.dropped.clone(),
        );
        registry.register(
            "wardgate_monitor_flows_evicted",
            "Flows written early because the table was at max_flows",
            m.evicted.clone(),
        );
        registry.register(
            "wardgate_monitor_flow_write_errors",
            "Flow record writes that failed (the record is lost)",
            m.write_errors.clone(),
        );
        m
    }

    /// Records written so far.
    pub fn records(&self) -> u64 {
        self.records.get()
    }

    /// Datagrams dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.get()
    }
}

/// What the flow thread is told.
#[derive(Debug)]
enum FlowInput {
    /// A datagram's metadata.
    Packet(FlowPacket),
    /// How a flow's security handshake ended.
    Handshake {
        at: SystemTime,
        peer: SocketAddr,
        local: SocketAddr,
        protocol: &'static str,
        outcome: &'static str,
    },
    /// A request refused for its credentials on a stream session (for the detectors).
    AuthFailure { at: SystemTime, peer: SocketAddr },
}

/// Where taps hand datagrams' metadata. Cheap to clone; [`FlowHandle::offer`] never blocks.
#[derive(Debug, Clone)]
pub struct FlowHandle {
    tx: SyncSender<FlowInput>,
    metrics: FlowMetrics,
}

impl FlowHandle {
    /// Queues the metadata of one datagram (its length and CoAP header; never its payload).
    /// A full queue drops it and counts it.
    pub fn offer(
        &self,
        direction: Direction,
        peer: &PeerContext,
        local: SocketAddr,
        protocol: &'static str,
        datagram: &[u8],
    ) {
        let mut packet = FlowPacket::plain(direction, peer, local, protocol, datagram.len());
        // DTLS records: the CoAP inside is encrypted, so no CoAP counts (and no "malformed").
        if protocol == "coaps" {
            packet.client_hello = direction == Direction::Inbound && is_client_hello(datagram);
        } else {
            let meta = CoapMeta::parse(datagram);
            packet.coap = Some(meta);
            packet.lwm2m =
                meta.and_then(|m| Lwm2mOp::with_meta(m, datagram, direction == Direction::Inbound));
        }
        self.send(FlowInput::Packet(packet));
    }

    /// Queues one read or write of a stream session (`https`): its length only.
    pub fn offer_segment(
        &self,
        direction: Direction,
        peer: &PeerContext,
        local: SocketAddr,
        protocol: &'static str,
        len: usize,
    ) {
        let packet = FlowPacket::plain(direction, peer, local, protocol, len);
        self.send(FlowInput::Packet(packet));
    }

    /// Tells the flow of `peer` how its security handshake ended (`established` or a failure
    /// reason). Never waits, like `offer`.
    pub fn handshake(
        &self,
        peer: &PeerContext,
        local: SocketAddr,
        protocol: &'static str,
        outcome: &'static str,
    ) {
        self.send(FlowInput::Handshake {
            at: SystemTime::now(),
            peer: peer.addr,
            local,
            protocol,
            outcome,
        });
    }

    /// Queues a refusal of `peer`'s credentials (HTTP 401/403) for the anomaly detectors.
    pub fn auth_failure(&self, peer: &PeerContext) {
        self.send(FlowInput::AuthFailure {
            at: SystemTime::now(),
            peer: peer.addr,
        });
    }

    fn send(&self, input: FlowInput) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.tx.try_send(input)
        {
            self.metrics.dropped.inc();
        }
    }
}

/// The running flow writer thread.
#[derive(Debug)]
pub struct FlowWriter {
    thread: JoinHandle<()>,
    dir: Option<PathBuf>,
}

impl FlowWriter {
    /// The directory the flow records go to (`None`: anomaly detection only).
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Waits for the thread: it ends every open flow (`shutdown`), writes them and returns
    /// once every [`FlowHandle`] clone has been dropped.
    pub fn join(self) {
        if self.thread.join().is_err() {
            tracing::error!("the flow writer thread panicked");
        }
    }
}

/// The anomaly detectors as the monitor thread runs them: the detector, where its events go
/// (called on the monitor thread: it must not block; the gateway queues them for the ingest
/// pipeline) and its metrics.
pub struct Anomalies {
    /// The detectors' settings.
    pub params: AnomaliesConfig,
    /// Receives every event, after it is counted.
    pub sink: Box<dyn FnMut(Anomaly) + Send>,
    /// `wardgate_monitor_anomalies_total{kind}`.
    pub metrics: AnomalyMetrics,
}

impl std::fmt::Debug for Anomalies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Anomalies")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

/// Starts the monitor's analysis thread: flow records of `flows` (which must have passed
/// validation; appended to `dir/flows.jsonl` and `dir/flows.csv`, created mode 0700) and/or
/// the anomaly detectors of `anomalies`, fed by one bounded queue of `queue` datagrams.
pub fn start_analysis(
    flows: Option<&FlowsConfig>,
    anomalies: Option<Anomalies>,
    queue: usize,
    metrics: FlowMetrics,
) -> Result<(FlowHandle, FlowWriter), MonitorError> {
    let flows = match flows {
        None => None,
        Some(cfg) => {
            let params = cfg
                .params()
                .map_err(|p| MonitorError::Filter(p.join("; ")))?;
            let dir_error = |source| MonitorError::Dir {
                path: cfg.dir.clone(),
                source,
            };
            create_private_dir(&cfg.dir).map_err(dir_error)?;
            let files = Files::open(&cfg.dir, cfg.max_file_bytes).map_err(dir_error)?;
            Some((FlowTable::new(params), files, cfg.dir.clone()))
        }
    };
    let dir = flows.as_ref().map(|(_, _, d)| d.clone());
    let analysis = Analysis {
        flows: flows.map(|(t, f, _)| (t, f)),
        anomalies: anomalies.map(|a| Detecting {
            per_minute: a.params.max_events_per_minute,
            minute: (Instant::now(), 0),
            detector: AnomalyDetector::new(a.params, SystemTime::now()),
            sink: a.sink,
            metrics: a.metrics,
            out: Vec::new(),
        }),
    };
    let (tx, rx) = sync_channel(queue.max(1));
    let m = metrics.clone();
    let thread = std::thread::Builder::new()
        .name("wardgate-flows".into())
        .spawn(move || run(rx, analysis, &m))
        .map_err(MonitorError::Thread)?;
    Ok((FlowHandle { tx, metrics }, FlowWriter { thread, dir }))
}

/// Starts the flow exporter of `cfg` alone (no anomaly detection).
pub fn start_flows(
    cfg: &FlowsConfig,
    metrics: FlowMetrics,
) -> Result<(FlowHandle, FlowWriter), MonitorError> {
    start_analysis(Some(cfg), None, cfg.queue_packets, metrics)
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

struct Detecting {
    detector: AnomalyDetector,
    sink: Box<dyn FnMut(Anomaly) + Send>,
    metrics: AnomalyMetrics,
    out: Vec<Anomaly>,
    /// `max_events_per_minute` and the current minute's count: security readings ride the
    /// alarm lane, so an attacker spoofing many sources must not be able to crowd out alarms
    /// with them. Every detection is still counted by kind.
    per_minute: u32,
    minute: (Instant, u32),
}

impl Detecting {
    fn emit(&mut self) {
        for a in self.out.drain(..) {
            self.metrics.fired(a.kind);
            let now = Instant::now();
            if now.duration_since(self.minute.0) >= Duration::from_secs(60) {
                self.minute = (now, 0);
            }
            if self.minute.1 >= self.per_minute {
                if self.metrics.suppress() == 1 {
                    tracing::warn!(
                        limit = self.per_minute,
                        "more anomaly events than [monitor.anomalies] max_events_per_minute: \
                         the rest are counted (wardgate_monitor_anomalies_suppressed_total), not stored"
                    );
                }
                continue;
            }
            self.minute.1 += 1;
            (self.sink)(a);
        }
    }
}

/// What the monitor thread keeps: the flow table and its files, the anomaly detectors.
struct Analysis {
    flows: Option<(FlowTable, Files)>,
    anomalies: Option<Detecting>,
}

impl Analysis {
    fn input(&mut self, input: FlowInput, m: &FlowMetrics) {
        match input {
            FlowInput::Packet(p) => {
                if let Some((table, files)) = &mut self.flows {
                    let done = table.observe(&p);
                    m.evicted
                        .inc_by(done.iter().filter(|r| r.end_reason == "evicted").count() as u64);
                    files.write(&done, m);
                }
                if let Some(a) = &mut self.anomalies {
                    a.detector.packet(&p, &mut a.out);
                    a.emit();
                }
            }
            FlowInput::Handshake {
                at,
                peer,
                local,
                protocol,
                outcome,
            } => {
                if let Some((table, files)) = &mut self.flows {
                    let done = table.handshake(peer, local, protocol, outcome, at);
                    m.evicted.inc_by(done.len() as u64);
                    files.write(&done, m);
                }
                if let Some(a) = &mut self.anomalies {
                    a.detector.handshake(peer, outcome, at, &mut a.out);
                    a.emit();
                }
            }
            FlowInput::AuthFailure { at, peer } => {
                if let Some(a) = &mut self.anomalies {
                    a.detector.auth_failure(peer, at, &mut a.out);
                    a.emit();
                }
            }
        }
    }

    fn tick(&mut self, m: &FlowMetrics) {
        let now = SystemTime::now();
        if let Some((table, files)) = &mut self.flows {
            let done = table.expire(now);
            files.write(&done, m);
            files.flush(m);
            m.active.set(i64::try_from(table.len()).unwrap_or(i64::MAX));
        }
        if let Some(a) = &mut self.anomalies {
            a.detector.tick(now, &mut a.out);
            a.emit();
        }
    }

    fn finish(&mut self, m: &FlowMetrics) {
        if let Some((table, files)) = &mut self.flows {
            let done = table.drain();
            files.write(&done, m);
            files.flush(m);
        }
        m.active.set(0);
    }
}

fn run(rx: Receiver<FlowInput>, mut analysis: Analysis, m: &FlowMetrics) {
    // Like the capture writer: blocked while idle (waking every TICK to end idle flows and
    // close rate intervals), and under traffic a drain every DRAIN_EVERY, so taps never pay
    // for waking this thread.
    let mut last_tick = Instant::now();
    'outer: loop {
        match rx.recv_timeout(TICK) {
            Ok(p) => {
                analysis.input(p, m);
                loop {
                    match drain(&rx, |p| analysis.input(p, m)) {
                        Drained::Some => {}
                        Drained::Nothing => break,
                        Drained::Closed => break 'outer,
                    }
                    if last_tick.elapsed() >= TICK {
                        break;
                    }
                    std::thread::sleep(DRAIN_EVERY);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if last_tick.elapsed() >= TICK {
            last_tick = Instant::now();
            analysis.tick(m);
        }
    }
    analysis.finish(m);
}

/// The two output files, each rotated to `<name>.1` when it would pass `max_bytes`.
struct Files {
    dir: PathBuf,
    max_bytes: u64,
    jsonl: Out,
    csv: Out,
}

struct Out {
    name: &'static str,
    file: BufWriter<File>,
    bytes: u64,
}

impl Out {
    fn open(dir: &Path, name: &'static str) -> io::Result<Out> {
        let path = dir.join(name);
        let mut o = OpenOptions::new();
        o.create(true).append(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            o.mode(0o600);
        }
        let file = o.open(&path)?;
        let bytes = file.metadata()?.len();
        Ok(Out {
            name,
            file: BufWriter::new(file),
            bytes,
        })
    }
}

impl Files {
    fn open(dir: &Path, max_bytes: u64) -> io::Result<Files> {
        let mut f = Files {
            dir: dir.to_owned(),
            max_bytes,
            jsonl: Out::open(dir, JSONL_FILE)?,
            csv: Out::open(dir, CSV_FILE)?,
        };
        if f.csv.bytes == 0 {
            let header = CSV_COLUMNS.join(",") + "\n";
            f.csv.file.write_all(header.as_bytes())?;
            f.csv.bytes = header.len() as u64;
        }
        Ok(f)
    }

    fn write(&mut self, records: &[FlowRecord], m: &FlowMetrics) {
        for r in records {
            let json = match serde_json::to_string(r) {
                Ok(j) => j + "\n",
                Err(e) => {
                    tracing::warn!(error = %e, "a flow record did not serialize");
                    m.write_errors.inc();
                    continue;
                }
            };
            let csv = r.csv_row() + "\n";
            let ok = self.append(false, &json) && self.append(true, &csv);
            if ok {
                m.records.inc();
            } else {
                m.write_errors.inc();
            }
        }
    }

    /// Appends `line` to one file, rotating it first when it would pass the bound.
    fn append(&mut self, csv: bool, line: &str) -> bool {
        let (dir, max) = (self.dir.clone(), self.max_bytes);
        let out = if csv { &mut self.csv } else { &mut self.jsonl };
        if out.bytes > 0 && out.bytes + line.len() as u64 > max {
            if let Err(e) = rotate(&dir, out, csv) {
                tracing::warn!(file = out.name, error = %e, "flow file rotation failed");
                return false;
            }
        }
        match out.file.write_all(line.as_bytes()) {
            Ok(()) => {
                out.bytes += line.len() as u64;
                true
            }
            Err(e) => {
                tracing::warn!(file = out.name, error = %e, "flow record write failed");
                false
            }
        }
    }

    fn flush(&mut self, m: &FlowMetrics) {
        for out in [&mut self.jsonl, &mut self.csv] {
            if let Err(e) = out.file.flush() {
                tracing::warn!(file = out.name, error = %e, "flow file flush failed");
                m.write_errors.inc();
            }
        }
    }
}

/// `<name>` becomes `<name>.1` (replacing the previous one) and a new `<name>` starts (with
/// the CSV header for the CSV file).
fn rotate(dir: &Path, out: &mut Out, csv: bool) -> io::Result<()> {
    out.file.flush()?;
    fs::rename(dir.join(out.name), dir.join(format!("{}.1", out.name)))?;
    *out = Out::open(dir, out.name)?;
    if csv {
        let header = CSV_COLUMNS.join(",") + "\n";
        out.file.write_all(header.as_bytes())?;
        out.bytes = header.len() as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use wardgate_core::TransportKind;

    /// 20 one-exchange flows through a running exporter into `dir`.
    fn run_20_flows(dir: &Path, max_file_bytes: u64) -> FlowMetrics {
        let cfg = FlowsConfig {
            enabled: true,
            dir: dir.to_owned(),
            max_file_bytes,
            ..FlowsConfig::default()
        };
        let metrics = FlowMetrics::default();
        let (handle, writer) = start_flows(&cfg, metrics.clone()).unwrap();
        let local = SocketAddr::from(([127, 0, 0, 1], 5683));
        for port in 0..20u16 {
            let peer = PeerContext::new(
                SocketAddr::from(([127, 0, 0, 1], 40000 + port)),
                TransportKind::Udp,
            );
            handle.offer(
                Direction::Inbound,
                &peer,
                local,
                "coap",
                &[0x40, 0x02, 0, 1],
            );
            handle.offer(
                Direction::Outbound,
                &peer,
                local,
                "coap",
                &[0x60, 0x44, 0, 1],
            );
        }
        drop(handle);
        writer.join();
        metrics
    }

    #[test]
    fn anomalies_without_flow_files_reach_the_sink_counted_by_kind() {
        let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = events.clone();
        let anomaly_metrics = AnomalyMetrics::default();
        let anomalies = Anomalies {
            params: AnomaliesConfig {
                malformed_threshold: 3,
                ..AnomaliesConfig::default()
            },
            sink: Box::new(move |a: Anomaly| seen.lock().unwrap().push(a)),
            metrics: anomaly_metrics.clone(),
        };
        let (handle, writer) =
            start_analysis(None, Some(anomalies), 64, FlowMetrics::default()).unwrap();
        assert!(writer.dir().is_none());
        let local = SocketAddr::from(([127, 0, 0, 1], 5683));
        let peer = PeerContext::new(SocketAddr::from(([127, 0, 0, 9], 4000)), TransportKind::Udp);
        for _ in 0..3 {
            handle.offer(Direction::Inbound, &peer, local, "coap", b"\xff not CoAP");
        }
        drop(handle);
        writer.join();
        let events = events.lock().unwrap();
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].kind, crate::AnomalyKind::MalformedFlood);
        assert_eq!(events[0].peer, Some(peer.addr));
        assert_eq!(anomaly_metrics.count(crate::AnomalyKind::MalformedFlood), 1);
    }

    #[test]
    fn events_beyond_the_per_minute_limit_are_counted_not_stored() {
        let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = events.clone();
        let metrics = AnomalyMetrics::default();
        let anomalies = Anomalies {
            params: AnomaliesConfig {
                malformed_threshold: 1,
                max_events_per_minute: 2,
                ..AnomaliesConfig::default()
            },
            sink: Box::new(move |a: Anomaly| seen.lock().unwrap().push(a)),
            metrics: metrics.clone(),
        };
        let (handle, writer) =
            start_analysis(None, Some(anomalies), 64, FlowMetrics::default()).unwrap();
        let local = SocketAddr::from(([127, 0, 0, 1], 5683));
        // Five spoofed sources, one malformed datagram each: five detections.
        for i in 1..=5u8 {
            let peer =
                PeerContext::new(SocketAddr::from(([10, 9, 9, i], 4000)), TransportKind::Udp);
            handle.offer(Direction::Inbound, &peer, local, "coap", b"\xff junk");
        }
        drop(handle);
        writer.join();
        assert_eq!(events.lock().unwrap().len(), 2);
        assert_eq!(metrics.count(crate::AnomalyKind::MalformedFlood), 5);
        assert_eq!(metrics.suppressed(), 3);
    }

    #[test]
    fn every_open_flow_lands_in_both_files_at_shutdown() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("flows");
        let metrics = run_20_flows(&dir, 1 << 20);
        assert_eq!((metrics.records(), metrics.dropped()), (20, 0));
        let json = fs::read_to_string(dir.join(JSONL_FILE)).unwrap();
        assert_eq!(json.lines().count(), 20);
        let v: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
        assert_eq!(
            (v["tot_fwd_pkts"].as_u64(), v["tot_bwd_pkts"].as_u64()),
            (Some(1), Some(1))
        );
        assert_eq!(v["end_reason"], "shutdown");
        let csv = fs::read_to_string(dir.join(CSV_FILE)).unwrap();
        let mut lines = csv.lines();
        assert_eq!(lines.next(), Some(CSV_COLUMNS.join(",").as_str()));
        assert_eq!(lines.count(), 20);
        // A second run appends (one header only).
        run_20_flows(&dir, 1 << 20);
        let csv = fs::read_to_string(dir.join(CSV_FILE)).unwrap();
        assert_eq!(csv.lines().count(), 41);
    }

    #[test]
    fn files_rotate_to_one_previous_file_at_the_bound() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("flows");
        let metrics = run_20_flows(&dir, 4096);
        assert_eq!(metrics.records(), 20);
        for name in [JSONL_FILE, CSV_FILE] {
            let previous = dir.join(format!("{name}.1"));
            assert!(previous.exists(), "{name} rotated");
            for f in [dir.join(name), previous] {
                assert!(fs::metadata(&f).unwrap().len() <= 4096, "{}", f.display());
            }
        }
        // Each CSV file starts with the header; every JSON line parses.
        for f in [CSV_FILE.to_owned(), format!("{CSV_FILE}.1")] {
            let text = fs::read_to_string(dir.join(f)).unwrap();
            assert!(text.starts_with("flow_id,"));
        }
        for f in [JSONL_FILE.to_owned(), format!("{JSONL_FILE}.1")] {
            for l in fs::read_to_string(dir.join(f)).unwrap().lines() {
                serde_json::from_str::<serde_json::Value>(l).unwrap();
            }
        }
    }
}
