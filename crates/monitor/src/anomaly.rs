//! Anomaly events: what the monitor's taps see turned into security events, each delivered
//! upstream as a `security`-class reading (alarm priority), counted in a metric and written to
//! the audit trail.
//!
//! [`AnomalyDetector`] is pure like [`crate::FlowTable`]: the flow thread hands it every
//! datagram's metadata ([`FlowPacket`]), every DTLS handshake outcome and a clock tick, with
//! the times they happened; it returns the [`Anomaly`]s they complete. Tests drive it with
//! exact times.
//!
//! # Detectors ([`AnomalyKind`])
//! Per source address, counted in tumbling windows of `window` (default 10 s); an event fires
//! when a count reaches its threshold inside one window:
//! - `resource_scan`: 4.04 Not Found and 4.05 Method Not Allowed answers sent to the source
//!   (a scanner probing for resources);
//! - `malformed_flood`: datagrams from the source that are not CoAP;
//! - `auth_failures`: 4.01 and 4.03 answers sent to it, DTLS handshakes it failed with
//!   credentials (unknown identity or certificate, wrong key), and HTTP ingest requests
//!   refused 401/403;
//! - `handshake_flood`: DTLS ClientHello records from it (a handshake flood, which the
//!   stateless cookie check already keeps from costing state).
//!
//! Gateway-wide:
//! - `new_sources`: source addresses never seen before (or not for an hour), counted in the
//!   same windows: a burst of unknown devices, or a flood from spoofed addresses.
//!
//! Per device (the proven identity, else the source address):
//! - `rate_spike`: datagrams per `rate_interval` against the device's own baseline, an
//!   exponentially weighted mean and variance (`rate_alpha`), once it has `rate_warmup`
//!   intervals of history: an interval whose z-score reaches `rate_zscore` with at least
//!   `rate_min_packets` datagrams fires. The standard deviation used is at least a tenth of the
//!   mean and one datagram per interval, so a perfectly regular device (variance ≈ 0) is not
//!   alarmed by one extra datagram. Every interval, anomalous or not, updates the baseline, so a
//!   lasting change becomes the new normal after a few intervals;
//! - `new_port`: a device known for longer than `learning` sends to a gateway port it never
//!   used (a device that suddenly talks to new services).
//!
//! Nothing fires about traffic seen during the first `learning` after start for `new_sources`
//! (every device is new when the gateway starts), and each (kind, source or device) fires at
//! most once per `cooldown`, so a long attack is one event a minute, not one per datagram.
//!
//! # Bounds
//! At most `max_tracked` sources and as many devices; a full table forgets its least recently
//! seen 1 % at once (like the flow table: O(100) per insert under a flood of spoofed sources),
//! and an entry idle for [`FORGET_AFTER`] is dropped at the next interval. A device keeps at
//! most [`MAX_PORTS`] ports.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use wardgate_core::Record;

use crate::config::AnomaliesConfig;
use crate::flow::{AUTH_FAILURES, FlowPacket};
use crate::pcapng::Direction;

/// An entry (source or device) without traffic this long is forgotten.
pub const FORGET_AFTER: Duration = Duration::from_secs(3600);
/// Ports remembered per device.
pub const MAX_PORTS: usize = 16;
/// Intervals folded in at once after a gap (a clock jump or a suspended host); beyond, the
/// interval clock restarts.
const MAX_CATCH_UP: u32 = 1000;

/// What kind of anomaly (a closed set: the metric label and the reading's `anomaly` value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyKind {
    /// A device's datagram rate far above its own baseline.
    RateSpike,
    /// Many never-seen source addresses in one window.
    NewSources,
    /// Many 4.04 / 4.05 answers to one source.
    ResourceScan,
    /// Many datagrams from one source that are not CoAP.
    MalformedFlood,
    /// Many 4.01 / 4.03 answers and credential failures for one source.
    AuthFailures,
    /// Many DTLS ClientHellos from one source.
    HandshakeFlood,
    /// A known device sending to a gateway port it never used.
    NewPort,
}

impl AnomalyKind {
    /// Every kind.
    pub const ALL: [AnomalyKind; 7] = [
        AnomalyKind::RateSpike,
        AnomalyKind::NewSources,
        AnomalyKind::ResourceScan,
        AnomalyKind::MalformedFlood,
        AnomalyKind::AuthFailures,
        AnomalyKind::HandshakeFlood,
        AnomalyKind::NewPort,
    ];

    /// The wire name (`resource_scan`).
    pub fn as_str(self) -> &'static str {
        match self {
            AnomalyKind::RateSpike => "rate_spike",
            AnomalyKind::NewSources => "new_sources",
            AnomalyKind::ResourceScan => "resource_scan",
            AnomalyKind::MalformedFlood => "malformed_flood",
            AnomalyKind::AuthFailures => "auth_failures",
            AnomalyKind::HandshakeFlood => "handshake_flood",
            AnomalyKind::NewPort => "new_port",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One anomaly, as it becomes a reading, a metric and an audit record.
#[derive(Debug, Clone, PartialEq)]
pub struct Anomaly {
    /// What was seen.
    pub kind: AnomalyKind,
    /// When it was completed (the time of the packet or tick that crossed the threshold).
    pub at: SystemTime,
    /// The source's latest address (`None` for the gateway-wide `new_sources`).
    pub peer: Option<SocketAddr>,
    /// The identity the transport proved for it, if any.
    pub device: Option<String>,
    /// How many events in the window (datagrams in the interval for `rate_spike`; new
    /// sources for `new_sources`; 1 for `new_port`).
    pub count: u64,
    /// The window (or rate interval) counted over.
    pub window: Duration,
    /// The threshold it reached (the z-score threshold for `rate_spike`).
    pub threshold: f64,
    /// For `rate_spike`: the interval's rate, the baseline mean (both per second) and the
    /// z-score.
    pub rate: Option<RateDetail>,
    /// For `new_port`: the gateway port.
    pub port: Option<u16>,
}

/// The numbers behind a `rate_spike`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateDetail {
    /// Datagrams per second in the interval.
    pub rate: f64,
    /// The baseline mean, datagrams per second.
    pub baseline: f64,
    /// (rate − baseline) / the standard deviation used.
    pub zscore: f64,
}

impl Anomaly {
    /// Logs it at WARN (the gateway and the interface monitor alike).
    pub fn log(&self) {
        let peer = self.peer.map(|p| p.to_string());
        tracing::warn!(
            anomaly = self.kind.as_str(),
            peer = peer.as_deref().unwrap_or("-"),
            identity = self.device.as_deref().unwrap_or("-"),
            count = self.count,
            window_s = self.window.as_secs_f64(),
            "traffic anomaly"
        );
    }

    /// The SenML records of its `security`-class reading: `anomaly` (the kind), `peer` (the
    /// source address), `identity` (a proven identity), `count`, `window` (s), `threshold`,
    /// and for a rate spike `rate`, `baseline` (1/s) and `zscore`, for a new port `port`.
    pub fn records(&self) -> Vec<Record> {
        let t = self
            .at
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let text = |n: &str, s: String| Record {
            n: n.into(),
            vs: Some(s),
            t,
            ..Record::default()
        };
        let num = |n: &str, v: f64, u: Option<&str>| Record {
            n: n.into(),
            v: Some(v),
            u: u.map(Into::into),
            t,
            ..Record::default()
        };
        let mut out = vec![text("anomaly", self.kind.as_str().into())];
        if let Some(p) = self.peer {
            out.push(text("peer", p.to_string()));
        }
        if let Some(d) = &self.device {
            out.push(text("identity", d.clone()));
        }
        out.push(num("count", self.count as f64, None));
        out.push(num("window", self.window.as_secs_f64(), Some("s")));
        out.push(num("threshold", self.threshold, None));
        if let Some(r) = self.rate {
            out.push(num("rate", r.rate, Some("1/s")));
            out.push(num("baseline", r.baseline, Some("1/s")));
            out.push(num("zscore", r.zscore, None));
        }
        if let Some(p) = self.port {
            out.push(num("port", f64::from(p), None));
        }
        out
    }
}

/// The per-source window counters.
#[derive(Debug, Clone, Copy)]
enum Counter {
    Scan,
    Malformed,
    Auth,
    Hello,
}

const COUNTERS: usize = 4;

impl Counter {
    fn kind(self) -> AnomalyKind {
        match self {
            Counter::Scan => AnomalyKind::ResourceScan,
            Counter::Malformed => AnomalyKind::MalformedFlood,
            Counter::Auth => AnomalyKind::AuthFailures,
            Counter::Hello => AnomalyKind::HandshakeFlood,
        }
    }
}

type Fired = [Option<SystemTime>; AnomalyKind::ALL.len()];

#[derive(Debug, Clone)]
struct Source {
    window_start: SystemTime,
    counts: [u32; COUNTERS],
    last_seen: SystemTime,
    last_peer: SocketAddr,
    device: Option<String>,
    fired: Fired,
}

#[derive(Debug, Clone)]
struct Device {
    first_seen: SystemTime,
    last_seen: SystemTime,
    last_peer: SocketAddr,
    identity: Option<String>,
    /// Datagrams in the current rate interval.
    count: u64,
    mean: f64,
    var: f64,
    intervals: u32,
    ports: Vec<u16>,
    fired: Fired,
}

/// Whether `kind` may fire now for an entry last fired at `fired` (and records it if so).
fn may_fire(fired: &mut Fired, kind: AnomalyKind, now: SystemTime, cooldown: Duration) -> bool {
    let slot = &mut fired[kind.index()];
    let quiet = slot.is_none_or(|at| now.duration_since(at).is_ok_and(|d| d >= cooldown));
    if quiet {
        *slot = Some(now);
    }
    quiet
}

fn since(later: SystemTime, earlier: SystemTime) -> Duration {
    later.duration_since(earlier).unwrap_or(Duration::ZERO)
}

/// Removes the least recently seen 1 % (at least one) of `map`.
fn evict_oldest<K: Clone + Eq + std::hash::Hash, V>(
    map: &mut HashMap<K, V>,
    last_seen: impl Fn(&V) -> SystemTime,
) {
    let n = (map.len() / 100).max(1);
    let mut ages: Vec<(SystemTime, K)> =
        map.iter().map(|(k, v)| (last_seen(v), k.clone())).collect();
    if n < ages.len() {
        ages.select_nth_unstable_by_key(n - 1, |(t, _)| *t);
        ages.truncate(n);
    }
    for (_, k) in ages {
        map.remove(&k);
    }
}

/// The detectors' state. Pure: see the module doc.
#[derive(Debug)]
pub struct AnomalyDetector {
    params: AnomaliesConfig,
    started: SystemTime,
    sources: HashMap<IpAddr, Source>,
    devices: HashMap<String, Device>,
    /// The gateway-wide new-sources window.
    new_window_start: SystemTime,
    new_count: u32,
    new_fired: Fired,
    /// The start of the current rate interval.
    interval_start: SystemTime,
}

impl AnomalyDetector {
    /// A detector started at `now`.
    pub fn new(params: AnomaliesConfig, now: SystemTime) -> Self {
        AnomalyDetector {
            params,
            started: now,
            sources: HashMap::new(),
            devices: HashMap::new(),
            new_window_start: now,
            new_count: 0,
            new_fired: [None; AnomalyKind::ALL.len()],
            interval_start: now,
        }
    }

    /// Sources and devices tracked now.
    pub fn tracked(&self) -> (usize, usize) {
        (self.sources.len(), self.devices.len())
    }

    /// One datagram (received or sent by the gateway); appends what it completes to `out`.
    pub fn packet(&mut self, p: &FlowPacket, out: &mut Vec<Anomaly>) {
        self.roll_intervals(p.at, out);
        let inbound = p.direction == Direction::Inbound;
        if inbound {
            self.source_seen(p, out);
            self.device_seen(p, out);
        }
        let counter = match (p.direction, p.coap) {
            (Direction::Inbound, Some(None)) => Some(Counter::Malformed),
            (Direction::Inbound, None) if p.client_hello => Some(Counter::Hello),
            (Direction::Outbound, Some(Some(m))) => match m.code {
                0x81 | 0x83 => Some(Counter::Auth),
                0x84 | 0x85 => Some(Counter::Scan),
                _ => None,
            },
            _ => None,
        };
        if let Some(c) = counter {
            self.count(p.peer, p.device.as_deref(), p.at, c, out);
        }
    }

    /// How a DTLS handshake of `peer` ended; a credential failure counts for `auth_failures`.
    pub fn handshake(
        &mut self,
        peer: SocketAddr,
        outcome: &str,
        at: SystemTime,
        out: &mut Vec<Anomaly>,
    ) {
        if AUTH_FAILURES.contains(&outcome) {
            self.count(peer, None, at, Counter::Auth, out);
        }
    }

    /// A request of `peer` refused for its credentials on a stream session (HTTP 401/403):
    /// counts for `auth_failures` like a CoAP 4.01/4.03.
    pub fn auth_failure(&mut self, peer: SocketAddr, at: SystemTime, out: &mut Vec<Anomaly>) {
        self.count(peer, None, at, Counter::Auth, out);
    }

    /// The clock moved to `now` without traffic: closes finished rate intervals.
    pub fn tick(&mut self, now: SystemTime, out: &mut Vec<Anomaly>) {
        self.roll_intervals(now, out);
    }

    fn source_seen(&mut self, p: &FlowPacket, out: &mut Vec<Anomaly>) {
        let ip = p.peer.ip().to_canonical();
        if let Some(s) = self.sources.get_mut(&ip) {
            s.last_seen = s.last_seen.max(p.at);
            s.last_peer = p.peer;
            if p.device.is_some() {
                s.device.clone_from(&p.device);
            }
            return;
        }
        if self.sources.len() >= self.params.max_tracked.max(1) {
            evict_oldest(&mut self.sources, |s| s.last_seen);
        }
        self.sources.insert(
            ip,
            Source {
                window_start: p.at,
                counts: [0; COUNTERS],
                last_seen: p.at,
                last_peer: p.peer,
                device: p.device.clone(),
                fired: [None; AnomalyKind::ALL.len()],
            },
        );
        // A new source: the gateway-wide burst counter (not while learning).
        if since(p.at, self.new_window_start) >= self.params.window {
            self.new_window_start = p.at;
            self.new_count = 0;
        }
        self.new_count = self.new_count.saturating_add(1);
        if since(p.at, self.started) >= self.params.learning
            && self.new_count == self.params.new_sources_threshold
            && may_fire(
                &mut self.new_fired,
                AnomalyKind::NewSources,
                p.at,
                self.params.cooldown,
            )
        {
            out.push(Anomaly {
                kind: AnomalyKind::NewSources,
                at: p.at,
                peer: None,
                device: None,
                count: u64::from(self.new_count),
                window: self.params.window,
                threshold: f64::from(self.params.new_sources_threshold),
                rate: None,
                port: None,
            });
        }
    }

    fn device_seen(&mut self, p: &FlowPacket, out: &mut Vec<Anomaly>) {
        let key = match &p.device {
            Some(d) => d.clone(),
            None => p.peer.ip().to_canonical().to_string(),
        };
        let port = p.local.port();
        if !self.devices.contains_key(&key) && self.devices.len() >= self.params.max_tracked.max(1)
        {
            evict_oldest(&mut self.devices, |d| d.last_seen);
        }
        let d = self.devices.entry(key).or_insert_with(|| Device {
            first_seen: p.at,
            last_seen: p.at,
            last_peer: p.peer,
            identity: p.device.clone(),
            count: 0,
            mean: 0.0,
            var: 0.0,
            intervals: 0,
            ports: vec![port],
            fired: [None; AnomalyKind::ALL.len()],
        });
        d.last_seen = d.last_seen.max(p.at);
        d.last_peer = p.peer;
        d.count += 1;
        if d.ports.contains(&port) {
            return;
        }
        let known = since(p.at, d.first_seen) >= self.params.learning;
        if d.ports.len() < MAX_PORTS {
            d.ports.push(port);
        }
        if known
            && may_fire(
                &mut d.fired,
                AnomalyKind::NewPort,
                p.at,
                self.params.cooldown,
            )
        {
            out.push(Anomaly {
                kind: AnomalyKind::NewPort,
                at: p.at,
                peer: Some(p.peer),
                device: d.identity.clone(),
                count: 1,
                window: self.params.learning,
                threshold: 1.0,
                rate: None,
                port: Some(port),
            });
        }
    }

    fn count(
        &mut self,
        peer: SocketAddr,
        device: Option<&str>,
        at: SystemTime,
        counter: Counter,
        out: &mut Vec<Anomaly>,
    ) {
        let ip = peer.ip().to_canonical();
        if !self.sources.contains_key(&ip) && self.sources.len() >= self.params.max_tracked.max(1) {
            evict_oldest(&mut self.sources, |s| s.last_seen);
        }
        // An answer to a source never heard from (e.g. after its entry was evicted) starts one,
        // without counting it as a new source.
        let s = self.sources.entry(ip).or_insert_with(|| Source {
            window_start: at,
            counts: [0; COUNTERS],
            last_seen: at,
            last_peer: peer,
            device: device.map(Into::into),
            fired: [None; AnomalyKind::ALL.len()],
        });
        if since(at, s.window_start) >= self.params.window {
            s.window_start = at;
            s.counts = [0; COUNTERS];
        }
        let n = &mut s.counts[counter as usize];
        *n = n.saturating_add(1);
        let threshold = match counter {
            Counter::Scan => self.params.scan_threshold,
            Counter::Malformed => self.params.malformed_threshold,
            Counter::Auth => self.params.auth_failure_threshold,
            Counter::Hello => self.params.handshake_threshold,
        };
        let kind = counter.kind();
        if *n == threshold && may_fire(&mut s.fired, kind, at, self.params.cooldown) {
            out.push(Anomaly {
                kind,
                at,
                peer: Some(s.last_peer),
                device: s.device.clone(),
                count: u64::from(threshold),
                window: self.params.window,
                threshold: f64::from(threshold),
                rate: None,
                port: None,
            });
        }
    }

    /// Closes every rate interval that ended by `now`.
    fn roll_intervals(&mut self, now: SystemTime, out: &mut Vec<Anomaly>) {
        let interval = self.params.rate_interval.max(Duration::from_millis(1));
        let mut rolled = 0;
        while since(now, self.interval_start) >= interval {
            if rolled == MAX_CATCH_UP {
                self.interval_start = now;
                break;
            }
            self.interval_start += interval;
            self.close_interval(self.interval_start, out);
            rolled += 1;
        }
        if rolled > 0 {
            let forget = |last: SystemTime| since(now, last) >= FORGET_AFTER;
            self.devices.retain(|_, d| !forget(d.last_seen));
            self.sources.retain(|_, s| !forget(s.last_seen));
        }
    }

    fn close_interval(&mut self, end: SystemTime, out: &mut Vec<Anomaly>) {
        let p = &self.params;
        let secs = p.rate_interval.as_secs_f64().max(1e-3);
        for d in self.devices.values_mut() {
            let x = d.count as f64 / secs;
            if d.intervals >= p.rate_warmup && d.count >= u64::from(p.rate_min_packets) {
                let sd = d.var.sqrt().max(d.mean * 0.1).max(1.0 / secs);
                let z = (x - d.mean) / sd;
                if z >= p.rate_zscore
                    && may_fire(&mut d.fired, AnomalyKind::RateSpike, end, p.cooldown)
                {
                    out.push(Anomaly {
                        kind: AnomalyKind::RateSpike,
                        at: end,
                        peer: Some(d.last_peer),
                        device: d.identity.clone(),
                        count: d.count,
                        window: p.rate_interval,
                        threshold: p.rate_zscore,
                        rate: Some(RateDetail {
                            rate: x,
                            baseline: d.mean,
                            zscore: z,
                        }),
                        port: None,
                    });
                }
            }
            // The EWMA mean and variance (West's incremental form).
            if d.intervals == 0 {
                d.mean = x;
                d.var = 0.0;
            } else {
                let diff = x - d.mean;
                d.mean += p.rate_alpha * diff;
                d.var = (1.0 - p.rate_alpha) * (d.var + p.rate_alpha * diff * diff);
            }
            d.intervals = d.intervals.saturating_add(1);
            d.count = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::CoapMeta;

    const T0: Duration = Duration::from_secs(1_700_000_000);

    fn at(ms: u64) -> SystemTime {
        UNIX_EPOCH + T0 + Duration::from_millis(ms)
    }

    fn params() -> AnomaliesConfig {
        AnomaliesConfig {
            learning: Duration::from_secs(5),
            ..AnomaliesConfig::default()
        }
    }

    fn peer(last: u8, port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, last], port))
    }

    fn local(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    fn inbound(
        ms: u64,
        from: SocketAddr,
        to_port: u16,
        coap: Option<Option<CoapMeta>>,
    ) -> FlowPacket {
        FlowPacket {
            at: at(ms),
            direction: Direction::Inbound,
            peer: from,
            local: local(to_port),
            protocol: if coap.is_some() { "coap" } else { "coaps" },
            device: None,
            len: 40,
            coap,
            client_hello: false,
            lwm2m: None,
        }
    }

    fn post(ms: u64, from: SocketAddr) -> FlowPacket {
        inbound(ms, from, 5683, Some(Some(CoapMeta { kind: 0, code: 2 })))
    }

    fn answer(ms: u64, to: SocketAddr, code: u8) -> FlowPacket {
        FlowPacket {
            direction: Direction::Outbound,
            coap: Some(Some(CoapMeta { kind: 2, code })),
            ..post(ms, to)
        }
    }

    fn kinds(out: &[Anomaly]) -> Vec<AnomalyKind> {
        out.iter().map(|a| a.kind).collect()
    }

    #[test]
    fn a_scan_fires_once_at_the_threshold_and_again_only_after_the_cooldown() {
        let mut d = AnomalyDetector::new(params(), at(0));
        let scanner = peer(66, 40000);
        let mut out = Vec::new();
        for i in 0..19 {
            d.packet(&post(i * 10, scanner), &mut out);
            d.packet(&answer(i * 10 + 1, scanner, 0x84), &mut out);
        }
        assert!(
            out.is_empty(),
            "19 answers are below the threshold: {out:?}"
        );
        d.packet(&answer(200, scanner, 0x85), &mut out);
        assert_eq!(kinds(&out), [AnomalyKind::ResourceScan]);
        assert_eq!(out[0].peer, Some(scanner));
        assert_eq!(out[0].count, 20);
        // The same scan going on: more windows reach the threshold, the cooldown holds them.
        for i in 0..200 {
            d.packet(&answer(10_000 + i * 100, scanner, 0x84), &mut out);
        }
        assert_eq!(out.len(), 1, "{out:?}");
        // After the cooldown a window that reaches the threshold fires again.
        for i in 0..20 {
            d.packet(&answer(61_000 + i, scanner, 0x84), &mut out);
        }
        assert_eq!(kinds(&out), [AnomalyKind::ResourceScan; 2]);
    }

    #[test]
    fn counts_reset_with_the_window_so_a_slow_trickle_never_fires() {
        let mut d = AnomalyDetector::new(params(), at(0));
        let slow = peer(7, 1);
        let mut out = Vec::new();
        // 19 not-founds every 10 s window, for five minutes: a device with a wrong path.
        for w in 0..30 {
            for i in 0..19 {
                d.packet(&answer(w * 10_000 + i * 100, slow, 0x84), &mut out);
            }
        }
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn malformed_floods_auth_failures_and_hellos_each_have_their_detector() {
        let mut d = AnomalyDetector::new(params(), at(0));
        let mut out = Vec::new();
        let junk = peer(20, 1);
        for i in 0..20 {
            d.packet(&inbound(i, junk, 5683, Some(None)), &mut out);
        }
        let guesser = peer(21, 1);
        for i in 0..5 {
            d.packet(&answer(100 + i, guesser, 0x81), &mut out);
            d.packet(&answer(110 + i, guesser, 0x83), &mut out);
        }
        let bad_psk = peer(22, 1);
        for i in 0..9 {
            d.handshake(bad_psk, "bad_key", at(200 + i), &mut out);
        }
        // A timeout says nothing about credentials.
        d.handshake(bad_psk, "timeout", at(220), &mut out);
        let flooder = peer(23, 1);
        for i in 0..30 {
            let mut p = inbound(300 + i, flooder, 5684, None);
            p.client_hello = true;
            d.packet(&p, &mut out);
        }
        assert_eq!(
            kinds(&out),
            [
                AnomalyKind::MalformedFlood,
                AnomalyKind::AuthFailures,
                AnomalyKind::HandshakeFlood
            ]
        );
        assert_eq!(out[1].peer, Some(guesser));
        d.handshake(bad_psk, "unknown_identity", at(400), &mut out);
        assert_eq!(
            out.last().map(|a| (a.kind, a.peer)),
            Some((AnomalyKind::AuthFailures, Some(bad_psk)))
        );
    }

    #[test]
    fn new_sources_burst_fires_after_learning_only() {
        let mut p = params();
        p.new_sources_threshold = 10;
        let mut d = AnomalyDetector::new(p, at(0));
        let mut out = Vec::new();
        // At start every device is new: 50 of them in the first second fire nothing.
        for i in 0..50 {
            d.packet(&post(i, peer(i as u8 + 100, 1)), &mut out);
        }
        assert!(out.is_empty());
        // Later, nine new sources in a window are fine, a tenth in the same window fires.
        for i in 0..9 {
            d.packet(
                &post(10_000 + i, SocketAddr::from(([10, 1, 0, i as u8], 1))),
                &mut out,
            );
        }
        assert!(out.is_empty());
        // Known sources do not count.
        d.packet(&post(10_050, peer(100, 1)), &mut out);
        assert!(out.is_empty());
        d.packet(
            &post(10_100, SocketAddr::from(([10, 1, 0, 9], 1))),
            &mut out,
        );
        assert_eq!(kinds(&out), [AnomalyKind::NewSources]);
        assert_eq!(out[0].peer, None);
    }

    #[test]
    fn a_rate_spike_against_the_devices_own_baseline() {
        let mut p = params();
        p.rate_interval = Duration::from_secs(1);
        p.rate_warmup = 5;
        let mut d = AnomalyDetector::new(p, at(0));
        let mut out = Vec::new();
        let mut bed = post(0, peer(12, 1));
        bed.device = Some("psk:bed-12".into());
        // Ten seconds at 20-22 datagrams a second: the baseline.
        for s in 0..10u64 {
            for i in 0..(20 + s % 3) {
                bed.at = at(s * 1000 + i * 40);
                d.packet(&bed, &mut out);
            }
        }
        // 25 a second is within four standard deviations (floored at 10 % of the mean).
        for i in 0..25 {
            bed.at = at(10_000 + i * 30);
            d.packet(&bed, &mut out);
        }
        d.tick(at(11_000), &mut out);
        assert!(out.is_empty(), "{out:?}");
        // 200 a second is not.
        for i in 0..200 {
            bed.at = at(11_000 + i * 4);
            d.packet(&bed, &mut out);
        }
        d.tick(at(12_000), &mut out);
        assert_eq!(kinds(&out), [AnomalyKind::RateSpike]);
        let a = &out[0];
        assert_eq!(a.device.as_deref(), Some("psk:bed-12"));
        let r = a.rate.expect("rate detail");
        assert!((r.rate - 200.0).abs() < 1e-9, "{r:?}");
        assert!(r.baseline > 19.0 && r.baseline < 25.0, "{r:?}");
        assert!(r.zscore >= 4.0, "{r:?}");
        assert_eq!(a.count, 200);
        // A device with no history is never judged.
        let mut fresh = post(12_000, peer(13, 1));
        for i in 0..500 {
            fresh.at = at(12_000 + i);
            d.packet(&fresh, &mut out);
        }
        d.tick(at(13_000), &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
    }

    #[test]
    fn a_known_device_on_a_new_port_fires_a_device_still_learning_does_not() {
        let mut d = AnomalyDetector::new(params(), at(0));
        let mut out = Vec::new();
        let bed = peer(12, 1);
        d.packet(
            &inbound(0, bed, 5683, Some(Some(CoapMeta { kind: 0, code: 2 }))),
            &mut out,
        );
        // Within the learning time: a second port is learned quietly.
        d.packet(&inbound(1000, bed, 5684, None), &mut out);
        assert!(out.is_empty());
        d.packet(&inbound(6000, bed, 5683, Some(None)), &mut out);
        d.packet(&inbound(6001, bed, 8080, None), &mut out);
        assert_eq!(kinds(&out), [AnomalyKind::NewPort]);
        assert_eq!(out[0].port, Some(8080));
        // Now known: no second event for it.
        d.packet(&inbound(7000, bed, 8080, None), &mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn a_flood_of_spoofed_sources_stays_within_max_tracked() {
        let mut p = params();
        p.max_tracked = 1000;
        let mut d = AnomalyDetector::new(p, at(0));
        let mut out = Vec::new();
        for i in 0..100_000u32 {
            let [_, b, c, e] = i.to_be_bytes();
            let from = SocketAddr::from(([10, b, c, e], 9));
            d.packet(
                &inbound(u64::from(i / 100), from, 5683, Some(None)),
                &mut out,
            );
            d.packet(&answer(u64::from(i / 100), from, 0x84), &mut out);
        }
        let (s, dev) = d.tracked();
        assert!(s <= 1000 && dev <= 1000, "{s} sources, {dev} devices");
        // Entries idle for an hour are forgotten at the next interval.
        d.tick(at(2 * 3600 * 1000), &mut out);
        assert_eq!(d.tracked(), (0, 0));
    }

    #[test]
    fn records_carry_the_kind_the_source_and_the_numbers() {
        let a = Anomaly {
            kind: AnomalyKind::RateSpike,
            at: at(0),
            peer: Some(peer(12, 5000)),
            device: Some("psk:bed-12".into()),
            count: 200,
            window: Duration::from_secs(10),
            threshold: 4.0,
            rate: Some(RateDetail {
                rate: 20.0,
                baseline: 2.0,
                zscore: 9.0,
            }),
            port: None,
        };
        let r = a.records();
        let names: Vec<&str> = r.iter().map(|r| r.n.as_str()).collect();
        assert_eq!(
            names,
            [
                "anomaly",
                "peer",
                "identity",
                "count",
                "window",
                "threshold",
                "rate",
                "baseline",
                "zscore"
            ]
        );
        assert_eq!(r[0].vs.as_deref(), Some("rate_spike"));
        assert_eq!(r[1].vs.as_deref(), Some("10.0.0.12:5000"));
        assert_eq!(r[4].u.as_deref(), Some("s"));
        assert!(r.iter().all(|r| (r.t - T0.as_secs_f64()).abs() < 1e-6));
    }
}
