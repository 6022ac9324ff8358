//! `coap-load`: CoAP readings against a loopback server, closed loop (a fixed number of requests
//! in flight: the maximum throughput) or open loop (a fixed rate: latency under a given load).
//!
//! Open-loop latency is measured from each request's *scheduled* send time, not from when it
//! actually left: if the server (or the window of requests in flight) holds the generator back,
//! the waiting counts against the server instead of silently thinning the load (coordinated
//! omission). The generator's own lateness is reported separately as `send_lag`.
//!
//! Shape: one sender thread paces and sends; one receiver thread polls every client socket with
//! mio and classifies answers; optionally one MQTT subscriber thread matches deliveries. They
//! share per-sequence-number atomics ([`Tracker`]) and an in-flight counter, nothing else.
//!
//! Every run is bounded: by `--duration` (at most 10 minutes), by `--count` (at most
//! [`MAX_COUNT`]), by `--timeout` per request, and by `--drain-timeout` for end-to-end stragglers.
//! Each client socket sends at most [`MAX_PER_SOCKET`] requests so a Message ID is never reused
//! within a run (the server deduplicates by peer and Message ID for 247 s); more requests means
//! more sockets, like more devices on a ward.

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::Thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::{Events, Interest, Poll, Token};
use serde::Serialize;

use crate::coap_msg::{Incoming, MsgType, RequestTemplate, classify, empty_ack};
use crate::error::BenchError;
use crate::mqtt_sink::{Drain, E2eReport, MqttSink, RunTotals, SinkConfig};
use crate::payload::{self, Format};
use crate::procfs::{CpuReport, MemoryReport, Monitor};
use crate::stats::{Latency, LatencySummary};
use crate::target::{loopback_addr, mqtt_broker};
use crate::tracker::{ANSWERED, MAX_COUNT, OK, TIMED_OUT, Tracker};

/// Requests one client socket sends in a run at most (below the 65 536 Message IDs).
pub const MAX_PER_SOCKET: u64 = 60_000;
/// Longest send phase.
pub const MAX_DURATION_S: f64 = 600.0;
/// Most client sockets.
pub const MAX_SOCKETS: usize = 1024;
/// Receive buffer asked for on every client socket, bytes.
const CLIENT_RECV_BUFFER: usize = 1 << 20;
/// Closed-loop runs without `--count` size their bookkeeping for this rate, far above what a
/// loopback CoAP server reaches on one core.
const CLOSED_LOOP_CEILING_RPS: f64 = 250_000.0;

/// Arguments of `coap-load`.
#[derive(Debug, Clone, clap::Args)]
pub struct CoapLoadArgs {
    /// Server address, host:port (loopback only).
    #[arg(long)]
    pub target: String,
    /// URI path before the device id.
    #[arg(long, default_value = "v1/readings")]
    pub path: String,
    /// Device id prefix; each client socket is one device `<prefix>-<run>-<n>`.
    #[arg(long, default_value = "bench")]
    pub device_prefix: String,
    /// CON or NON requests.
    #[arg(long = "type", value_enum, default_value = "con")]
    pub msg_type: MsgType,
    /// Payload encoding.
    #[arg(long, value_enum, default_value = "senml-json")]
    pub format: Format,
    /// Client sockets (raised automatically so no socket sends more than 60 000 requests).
    #[arg(long, default_value_t = 4)]
    pub sockets: usize,
    /// Requests in flight at most, over all sockets.
    #[arg(long, default_value_t = 64)]
    pub in_flight: usize,
    /// Open loop at this many requests per second; closed loop when absent.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Send phase length, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Stop after this many requests.
    #[arg(long)]
    pub count: Option<u64>,
    /// A request unanswered after this many seconds counts as a timeout.
    #[arg(long, default_value_t = 2.0)]
    pub timeout: f64,
    /// Subscribe to this broker (mqtt://host:port, loopback) and match deliveries.
    #[arg(long, requires = "topic")]
    pub mqtt: Option<String>,
    /// Topic filter for `--mqtt`.
    #[arg(long, requires = "mqtt")]
    pub topic: Option<String>,
    /// Longest wait for end-to-end stragglers after the send phase, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub drain_timeout: f64,
    /// Process under test: sample its CPU time and memory.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Peer processes (the broker) whose CPU is accounted separately, not as "other".
    #[arg(long)]
    pub peer_pid: Vec<u32>,
    /// Keep an RSS time series of the process under test, one point per this many seconds.
    #[arg(long)]
    pub rss_series: Option<f64>,
    /// Wait up to this many seconds for the server to answer a probe before starting.
    #[arg(long, default_value_t = 5.0)]
    pub ready_timeout: f64,
    /// Count only MQTT messages whose topic contains this (default: the run's device-id
    /// prefix, which wardgate's topics contain).
    #[arg(long)]
    pub topic_must_contain: Option<String>,
    /// Free-form label copied into the report.
    #[arg(long, default_value = "")]
    pub label: String,
}

/// The JSON object printed for one run.
#[derive(Debug, Clone, Serialize)]
pub struct CoapLoadReport {
    /// Always `coap-load`.
    pub tool: &'static str,
    /// `--label`.
    pub label: String,
    /// Server address.
    pub target: String,
    /// `closed` or `open`.
    pub mode: &'static str,
    /// CON or NON.
    pub msg_type: MsgType,
    /// Payload encoding.
    pub format: Format,
    /// Size of a typical payload, bytes.
    pub payload_bytes: usize,
    /// Client sockets used.
    pub sockets: usize,
    /// In-flight window.
    pub in_flight: usize,
    /// Target rate (open loop).
    pub rate_target: Option<f64>,
    /// Send phase length, seconds.
    pub duration_s: f64,
    /// Requests sent.
    pub sent: u64,
    /// Requests answered (any code), each counted once.
    pub responses: u64,
    /// Answered 2.xx.
    pub ok: u64,
    /// Answered 5.03 Service Unavailable (busy).
    pub busy_503: u64,
    /// Answered 4.xx.
    pub client_4xx: u64,
    /// Answered 5.xx other than 5.03.
    pub server_5xx: u64,
    /// Given up after `--timeout`.
    pub timeouts: u64,
    /// Answers that arrived after their request timed out.
    pub late_responses: u64,
    /// Repeated answers to an already answered request.
    pub duplicate_responses: u64,
    /// Empty ACKs (the server answered separately).
    pub empty_acks: u64,
    /// Datagrams that are not answers to our requests.
    pub unexpected: u64,
    /// Failed send calls.
    pub send_errors: u64,
    /// responses / duration.
    pub throughput_rps: f64,
    /// ok / duration.
    pub ok_rps: f64,
    /// Answer latency from the latency origin (scheduled time in open loop).
    pub ack_latency: Option<LatencySummary>,
    /// Answer latency from the actual send.
    pub service_latency: Option<LatencySummary>,
    /// Actual minus scheduled send time (open loop): the generator's own lateness.
    pub send_lag: Option<LatencySummary>,
    /// End-to-end results with `--mqtt`.
    pub e2e: Option<E2eReport>,
    /// CPU accounting (per 1k = per 1000 answered requests).
    pub cpu: CpuReport,
    /// Memory of the process under test.
    pub sut_memory: Option<MemoryReport>,
}

#[derive(Debug, Default)]
struct RecvTotals {
    responses: u64,
    ok: u64,
    busy_503: u64,
    client_4xx: u64,
    server_5xx: u64,
    late: u64,
    duplicates: u64,
    empty_acks: u64,
    unexpected: u64,
    ack: Latency,
    service: Latency,
}

/// Everything validated and resolved from the arguments.
#[derive(Debug)]
struct Plan {
    target: SocketAddr,
    count: u64,
    sockets: usize,
    in_flight: usize,
    interval_ns: Option<f64>,
    duration: Duration,
    timeout: Duration,
}

fn plan(args: &CoapLoadArgs) -> Result<Plan, BenchError> {
    let target = loopback_addr(&args.target)?;
    if !(args.duration > 0.0 && args.duration <= MAX_DURATION_S) {
        return Err(BenchError::InvalidArgs(format!(
            "--duration must be in (0, {MAX_DURATION_S}] seconds"
        )));
    }
    if !(args.timeout > 0.0 && args.timeout <= 60.0) {
        return Err(BenchError::InvalidArgs(
            "--timeout must be in (0, 60] seconds".into(),
        ));
    }
    if !(0.0..=600.0).contains(&args.drain_timeout) || !(0.0..=60.0).contains(&args.ready_timeout) {
        return Err(BenchError::InvalidArgs(
            "--drain-timeout must be in [0, 600] and --ready-timeout in [0, 60] seconds".into(),
        ));
    }
    if args.in_flight == 0 || args.in_flight > 1 << 20 {
        return Err(BenchError::InvalidArgs(
            "--in-flight must be in [1, 1048576]".into(),
        ));
    }
    let interval_ns = match args.rate {
        Some(r) if r > 0.0 && r <= 1_000_000.0 => Some(1e9 / r),
        Some(_) => return Err(BenchError::InvalidArgs("--rate must be in (0, 1e6]".into())),
        None => None,
    };
    let by_time = match args.rate {
        Some(r) => (r * args.duration).ceil() as u64,
        None => (CLOSED_LOOP_CEILING_RPS * args.duration).ceil() as u64,
    };
    let count = args.count.unwrap_or(by_time).min(by_time).min(MAX_COUNT);
    if count == 0 {
        return Err(BenchError::InvalidArgs(
            "nothing to send (count is 0)".into(),
        ));
    }
    let sockets = args
        .sockets
        .max(1)
        .max(count.div_ceil(MAX_PER_SOCKET) as usize);
    if sockets > MAX_SOCKETS {
        return Err(BenchError::InvalidArgs(format!(
            "{count} requests need {sockets} sockets (> {MAX_SOCKETS}); lower --count or --duration"
        )));
    }
    Ok(Plan {
        target,
        count,
        sockets,
        in_flight: args.in_flight,
        interval_ns,
        duration: Duration::from_secs_f64(args.duration),
        timeout: Duration::from_secs_f64(args.timeout),
    })
}

fn run_nonce() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{:x}{:x}",
        std::process::id() & 0xFFFF,
        (nanos & 0xFF_FFFF_FFFF) as u64
    )
}

fn epoch_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Sends a probe (from its own socket and device, outside this run's id space) until the server
/// answers anything.
fn wait_ready(
    args: &CoapLoadArgs,
    target: SocketAddr,
    timeout: Duration,
) -> Result<(), BenchError> {
    let sock =
        UdpSocket::bind(bind_addr(target)).map_err(|e| BenchError::io("bind probe socket", e))?;
    sock.connect(target)
        .map_err(|e| BenchError::io("connect probe socket", e))?;
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(|e| BenchError::io("probe socket timeout", e))?;
    let device = format!("{}-probe", args.device_prefix);
    let tpl = RequestTemplate::new(
        MsgType::Con,
        &format!("{}/{device}", args.path),
        args.format.coap_number(),
    );
    let mut body = Vec::new();
    payload::encode(
        args.format,
        &mut body,
        &format!("urn:dev:{device}:"),
        epoch_now(),
        u64::from(u32::MAX),
    );
    let mut req = Vec::new();
    let deadline = Instant::now() + timeout;
    let mut mid: u16 = 1;
    let mut buf = [0u8; 1500];
    loop {
        tpl.write(&mut req, mid, u32::MAX, &body);
        mid = mid.wrapping_add(1);
        let _ = sock.send(&req);
        if let Ok(n) = sock.recv(&mut buf)
            && n > 0
        {
            if let Incoming::Response {
                needs_ack: Some(m), ..
            } = classify(&buf[..n])
            {
                let _ = sock.send(&empty_ack(m));
            }
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(BenchError::NotReady(target));
        }
    }
}

fn bind_addr(target: SocketAddr) -> SocketAddr {
    match target {
        SocketAddr::V4(_) => SocketAddr::from(([127, 0, 0, 1], 0)),
        SocketAddr::V6(_) => SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 0)),
    }
}

/// What a scenario built on the load generator (e.g. [`crate::failover`]) can add to a run.
pub trait RunHooks {
    /// Once the run's bookkeeping exists, before the first request: `run_prefix` starts every
    /// device id of the run (`<prefix>-<n>`; the readiness probe's device is not among them).
    fn started(&mut self, _tracker: &Arc<Tracker>, _run_prefix: &str) {}
    /// Called by the sender between requests (about once per request, and every millisecond
    /// while it waits for a slot or for the last answers) with the run clock
    /// ([`Tracker::now_ns`]). Must return quickly: it delays the next request.
    fn tick(&mut self, _now_ns: u64) {}
}

/// No hooks: a plain `coap-load` run.
struct NoHooks;
impl RunHooks for NoHooks {}

/// Runs one load test and returns its report.
pub fn run(args: &CoapLoadArgs) -> Result<CoapLoadReport, BenchError> {
    run_with(args, &mut NoHooks).map(|(report, _)| report)
}

/// Runs one load test with `hooks`; returns the report and the run's bookkeeping (send times
/// and answer states by sequence number, for matching deliveries the caller observed itself).
pub fn run_with(
    args: &CoapLoadArgs,
    hooks: &mut dyn RunHooks,
) -> Result<(CoapLoadReport, Arc<Tracker>), BenchError> {
    let plan = plan(args)?;
    let mqtt = match (&args.mqtt, &args.topic) {
        (Some(url), Some(topic)) => Some((mqtt_broker(url)?, topic.clone())),
        _ => None,
    };
    if args.ready_timeout > 0.0 {
        wait_ready(
            args,
            plan.target,
            Duration::from_secs_f64(args.ready_timeout),
        )?;
    }

    let nonce = run_nonce();
    let run_prefix = format!("{}-{nonce}", args.device_prefix);
    let tracker = Arc::new(Tracker::new(plan.count));

    // Sockets: std for the sender, mio (same file description) for the receiver.
    let mut send_socks = Vec::with_capacity(plan.sockets);
    let mut recv_socks = Vec::with_capacity(plan.sockets);
    let mut templates = Vec::with_capacity(plan.sockets);
    let mut base_names = Vec::with_capacity(plan.sockets);
    for i in 0..plan.sockets {
        let s = UdpSocket::bind(bind_addr(plan.target))
            .map_err(|e| BenchError::io("bind client socket", e))?;
        // A burst of answers must not overflow the default receive buffer: the generator would
        // report its own drops as the server's timeouts. Best effort (capped by rmem_max).
        let _ = socket2::SockRef::from(&s).set_recv_buffer_size(CLIENT_RECV_BUFFER);
        s.connect(plan.target)
            .map_err(|e| BenchError::io("connect client socket", e))?;
        s.set_nonblocking(true)
            .map_err(|e| BenchError::io("set nonblocking", e))?;
        let r = s
            .try_clone()
            .map_err(|e| BenchError::io("clone client socket", e))?;
        recv_socks.push(mio::net::UdpSocket::from_std(r));
        send_socks.push(s);
        let device = format!("{run_prefix}-{i}");
        templates.push(RequestTemplate::new(
            args.msg_type,
            &format!("{}/{device}", args.path),
            args.format.coap_number(),
        ));
        base_names.push(format!("urn:dev:{device}:"));
    }

    let sink = match &mqtt {
        Some(((host, port), topic)) => Some(MqttSink::start(
            SinkConfig {
                host: host.clone(),
                port: *port,
                topic: topic.clone(),
                topic_must_contain: args
                    .topic_must_contain
                    .clone()
                    .unwrap_or_else(|| run_prefix.clone()),
                client_id: format!("wardgate-bench-sub-{nonce}"),
            },
            tracker.clone(),
        )?),
        None => None,
    };

    hooks.started(&tracker, &run_prefix);
    let monitor = Monitor::start(
        args.pid,
        args.peer_pid.clone(),
        args.rss_series
            .filter(|s| *s > 0.0)
            .map(Duration::from_secs_f64),
    )?;

    let in_flight = Arc::new(AtomicUsize::new(0));
    let sending_done = Arc::new(AtomicBool::new(false));
    let sender_thread = std::thread::current();
    let receiver = {
        let tracker = tracker.clone();
        let in_flight = in_flight.clone();
        let done = sending_done.clone();
        std::thread::Builder::new()
            .name("coap-recv".into())
            .spawn(move || receive(recv_socks, &tracker, &in_flight, &done, &sender_thread))
            .map_err(|e| BenchError::io("spawn receiver", e))?
    };

    let base_time = epoch_now();
    let mut sender = Sender {
        plan: &plan,
        tracker: &tracker,
        in_flight: &in_flight,
        socks: &send_socks,
        templates: &templates,
        base_names: &base_names,
        format: args.format,
        base_time,
        hooks,
        fifo: VecDeque::new(),
        timeouts: 0,
        send_errors: 0,
        lag: Latency::new(),
        payload: Vec::with_capacity(256),
        datagram: Vec::with_capacity(512),
    };
    let started = Instant::now();
    let sent = sender.send_all();
    let send_phase = started.elapsed();
    sender.wait_in_flight(plan.timeout);
    sending_done.store(true, Ordering::Release);
    let recv = receiver.join().unwrap_or_default();
    let timeouts = sender.timeouts;

    let e2e = sink.map(|s| {
        s.finish(
            &tracker,
            RunTotals {
                sent,
                acked_ok: recv.ok,
                send_phase,
            },
            Drain {
                expect: tracker.count_with(sent, OK),
                idle: Duration::from_secs_f64(args.drain_timeout.min(3.0)),
                max: Duration::from_secs_f64(args.drain_timeout),
            },
        )
    });
    let (cpu, sut_memory) = monitor.finish(recv.responses);

    let mut sample = Vec::new();
    payload::encode(
        args.format,
        &mut sample,
        base_names.first().map_or("", |s| s.as_str()),
        base_time,
        plan.count / 2,
    );
    let secs = send_phase.as_secs_f64().max(1e-9);
    let report = CoapLoadReport {
        tool: "coap-load",
        label: args.label.clone(),
        target: plan.target.to_string(),
        mode: if plan.interval_ns.is_some() {
            "open"
        } else {
            "closed"
        },
        msg_type: args.msg_type,
        format: args.format,
        payload_bytes: sample.len(),
        sockets: plan.sockets,
        in_flight: plan.in_flight,
        rate_target: args.rate,
        duration_s: secs,
        sent,
        responses: recv.responses,
        ok: recv.ok,
        busy_503: recv.busy_503,
        client_4xx: recv.client_4xx,
        server_5xx: recv.server_5xx,
        timeouts,
        late_responses: recv.late,
        duplicate_responses: recv.duplicates,
        empty_acks: recv.empty_acks,
        unexpected: recv.unexpected,
        send_errors: sender.send_errors,
        throughput_rps: recv.responses as f64 / secs,
        ok_rps: recv.ok as f64 / secs,
        ack_latency: recv.ack.summary(),
        service_latency: recv.service.summary(),
        send_lag: if plan.interval_ns.is_some() {
            sender.lag.summary()
        } else {
            None
        },
        e2e,
        cpu,
        sut_memory,
    };
    Ok((report, tracker))
}

struct Sender<'a> {
    plan: &'a Plan,
    tracker: &'a Tracker,
    in_flight: &'a AtomicUsize,
    socks: &'a [UdpSocket],
    templates: &'a [RequestTemplate],
    base_names: &'a [String],
    format: Format,
    base_time: f64,
    hooks: &'a mut dyn RunHooks,
    /// Sequence numbers in send order, for timeouts (sent times are monotonic along it).
    fifo: VecDeque<u64>,
    timeouts: u64,
    send_errors: u64,
    lag: Latency,
    payload: Vec<u8>,
    datagram: Vec<u8>,
}

impl Sender<'_> {
    /// Sends until the count or the duration is exhausted; returns how many were sent.
    fn send_all(&mut self) -> u64 {
        let start_ns = self.tracker.now_ns();
        let deadline_ns =
            start_ns + u64::try_from(self.plan.duration.as_nanos()).unwrap_or(u64::MAX);
        let mut seq = 0u64;
        while seq < self.plan.count {
            let origin = match self.plan.interval_ns {
                Some(iv) => {
                    let due = start_ns + (seq as f64 * iv) as u64;
                    if due >= deadline_ns {
                        break;
                    }
                    let now = self.tracker.now_ns();
                    if due > now {
                        // Sleep-based pacing: never spin, the receiver shares this core.
                        std::thread::sleep(Duration::from_nanos(due - now));
                    }
                    due
                }
                None => {
                    if self.tracker.now_ns() >= deadline_ns {
                        break;
                    }
                    0
                }
            };
            if !self.wait_for_slot(deadline_ns) {
                break;
            }
            let now = self.tracker.now_ns();
            self.hooks.tick(now);
            let origin = if self.plan.interval_ns.is_some() {
                self.lag.record_ns(now.saturating_sub(origin));
                origin
            } else {
                now
            };
            self.send_one(seq, origin, now);
            seq += 1;
            if seq % 1024 == 0 {
                self.expire(self.tracker.now_ns());
            }
        }
        seq
    }

    /// Blocks while the window is full, expiring timed-out requests. False if the deadline
    /// passed while waiting.
    fn wait_for_slot(&mut self, deadline_ns: u64) -> bool {
        while self.in_flight.load(Ordering::Acquire) >= self.plan.in_flight {
            let now = self.tracker.now_ns();
            if now >= deadline_ns {
                return false;
            }
            self.expire(now);
            self.hooks.tick(now);
            std::thread::park_timeout(Duration::from_millis(1));
        }
        true
    }

    fn send_one(&mut self, seq: u64, origin: u64, now: u64) {
        let sock_ix = (seq % self.socks.len() as u64) as usize;
        let (Some(sock), Some(tpl), Some(bn)) = (
            self.socks.get(sock_ix),
            self.templates.get(sock_ix),
            self.base_names.get(sock_ix),
        ) else {
            return;
        };
        let per_socket = seq / self.socks.len() as u64;
        let t = self.base_time + now as f64 / 1e9;
        payload::encode(self.format, &mut self.payload, bn, t, seq);
        tpl.write(
            &mut self.datagram,
            per_socket as u16,
            seq as u32,
            &self.payload,
        );
        self.tracker.set_origin(seq, origin);
        self.tracker.set_sent(seq, now);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.fifo.push_back(seq);
        loop {
            match sock.send(&self.datagram) {
                Ok(_) => break,
                Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(_) => {
                    // Counted, and left to time out like a lost datagram.
                    self.send_errors += 1;
                    break;
                }
            }
        }
    }

    /// Drops answered requests from the front of the FIFO and times out expired ones.
    fn expire(&mut self, now: u64) {
        let timeout = u64::try_from(self.plan.timeout.as_nanos()).unwrap_or(u64::MAX);
        while let Some(&seq) = self.fifo.front() {
            if self.tracker.state(seq) & (ANSWERED | TIMED_OUT) != 0 {
                self.fifo.pop_front();
                continue;
            }
            let sent = self.tracker.sent(seq).unwrap_or(now);
            if now.saturating_sub(sent) < timeout {
                break;
            }
            self.fifo.pop_front();
            if self.tracker.time_out(seq) {
                self.timeouts += 1;
                self.in_flight.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    /// After the send phase: waits for the outstanding answers (bounded by the timeout).
    fn wait_in_flight(&mut self, timeout: Duration) {
        let until = Instant::now() + timeout + Duration::from_millis(50);
        while self.in_flight.load(Ordering::Acquire) > 0 && Instant::now() < until {
            let now = self.tracker.now_ns();
            self.expire(now);
            self.hooks.tick(now);
            std::thread::park_timeout(Duration::from_millis(1));
        }
        // Anything still outstanding has exceeded the timeout by now.
        self.expire(u64::MAX);
    }
}

fn receive(
    socks: Vec<mio::net::UdpSocket>,
    tracker: &Tracker,
    in_flight: &AtomicUsize,
    done: &AtomicBool,
    sender: &Thread,
) -> RecvTotals {
    let mut t = RecvTotals::default();
    let mut socks = socks;
    let Ok(mut poll) = Poll::new() else {
        return t;
    };
    for (i, s) in socks.iter_mut().enumerate() {
        if poll
            .registry()
            .register(s, Token(i), Interest::READABLE)
            .is_err()
        {
            return t;
        }
    }
    let mut events = Events::with_capacity(1024);
    let mut buf = [0u8; 2048];
    loop {
        if done.load(Ordering::Acquire) {
            break;
        }
        if let Err(e) = poll.poll(&mut events, Some(Duration::from_millis(20)))
            && e.kind() != ErrorKind::Interrupted
        {
            break;
        }
        for ev in &events {
            let Some(sock) = socks.get(ev.token().0) else {
                continue;
            };
            loop {
                let n = match sock.recv(&mut buf) {
                    Ok(n) => n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    // ICMP port unreachable and the like: the request will time out.
                    Err(_) => break,
                };
                let now = tracker.now_ns();
                match classify(buf.get(..n).unwrap_or(&[])) {
                    Incoming::Response {
                        token,
                        class,
                        detail,
                        needs_ack,
                    } => {
                        if let Some(mid) = needs_ack {
                            let _ = sock.send(&empty_ack(mid));
                        }
                        let seq = u64::from(token);
                        let ok_bit = if class == 2 { OK } else { 0 };
                        match tracker.mark(seq, ANSWERED | ok_bit) {
                            None => t.unexpected += 1,
                            Some(prev) if prev & ANSWERED != 0 => t.duplicates += 1,
                            Some(prev) => {
                                if prev & TIMED_OUT != 0 {
                                    t.late += 1;
                                    continue;
                                }
                                in_flight.fetch_sub(1, Ordering::AcqRel);
                                sender.unpark();
                                t.responses += 1;
                                match (class, detail) {
                                    (2, _) => t.ok += 1,
                                    (5, 3) => t.busy_503 += 1,
                                    (4, _) => t.client_4xx += 1,
                                    _ => t.server_5xx += 1,
                                }
                                if let Some(o) = tracker.origin(seq) {
                                    t.ack.record_ns(now.saturating_sub(o));
                                }
                                if let Some(s) = tracker.sent(seq) {
                                    t.service.record_ns(now.saturating_sub(s));
                                }
                            }
                        }
                    }
                    Incoming::EmptyAck { .. } => t.empty_acks += 1,
                    Incoming::Other => t.unexpected += 1,
                }
            }
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(target: &str) -> CoapLoadArgs {
        CoapLoadArgs {
            target: target.into(),
            path: "v1/readings".into(),
            device_prefix: "t".into(),
            msg_type: MsgType::Con,
            format: Format::SenmlJson,
            sockets: 2,
            in_flight: 8,
            rate: None,
            duration: 1.0,
            count: Some(10),
            timeout: 1.0,
            mqtt: None,
            topic: None,
            drain_timeout: 1.0,
            pid: None,
            peer_pid: vec![],
            rss_series: None,
            ready_timeout: 0.0,
            topic_must_contain: None,
            label: String::new(),
        }
    }

    #[test]
    fn sockets_grow_so_no_message_id_repeats_within_a_run() {
        let mut a = args("127.0.0.1:5683");
        a.count = Some(1_000_000);
        a.rate = Some(100_000.0);
        a.duration = 10.0;
        let p = plan(&a).expect("valid plan");
        assert_eq!(p.count, 1_000_000);
        assert!(p.count.div_ceil(p.sockets as u64) <= MAX_PER_SOCKET);
    }

    #[test]
    fn runs_are_bounded_in_time_count_and_target() {
        let mut a = args("127.0.0.1:5683");
        a.duration = 601.0;
        assert!(matches!(plan(&a), Err(BenchError::InvalidArgs(_))));
        let mut a = args("127.0.0.1:5683");
        a.count = Some(u64::MAX);
        a.rate = Some(1000.0);
        assert_eq!(
            plan(&a).expect("plan").count,
            1000,
            "count capped by rate x duration"
        );
        assert!(matches!(
            plan(&args("192.168.0.10:5683")),
            Err(BenchError::NotLoopback(_))
        ));
    }
}
