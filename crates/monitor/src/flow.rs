//! Flow records for intrusion-detection datasets: the taps' datagrams grouped into flows
//! (one per peer address, gateway address and protocol), with the statistics classifiers are
//! trained on, written as JSON lines and CSV when a flow ends.
//!
//! [`FlowTable`] is pure (packets and their timestamps in, finished [`FlowRecord`]s out), so
//! tests drive it with exact times. [`crate::FlowHandle`] / [`crate::FlowWriter`] run it: a tap hands each
//! datagram's metadata (sizes and the CoAP header, never the payload) to a bounded queue
//! (`try_send`: never waits; a full queue drops and counts), one std thread keeps the table and
//! appends records to `flows.jsonl` and `flows.csv`.
//!
//! # The record
//! Field names follow CICFlowMeter's (the Python `cicflowmeter` / CIC-IDS CSV naming:
//! `flow_duration`, `tot_fwd_pkts`, `fwd_pkt_len_mean`, `flow_iat_std`, …) where the two
//! overlap; times are microseconds as there. "Forward" is the direction of the flow's first
//! packet, and `src_*` its sender. CoAP adds message type counts (`coap_con` …), request and
//! response-class counts, the codes seen (`coap_codes`, e.g. `{"2.04": 3, "4.04": 1}`; in CSV
//! `2.04=3;4.04=1`), datagrams that were not CoAP (`malformed_pkts`) and LwM2M operations by
//! name (`lwm2m_ops`, [`Lwm2mOp`]). DTLS flows add how the
//! handshake ended (`dtls_handshake`: `established` or the failure reason) and what that says
//! about the peer's credentials (`auth_outcome`: `ok`, `failed`, or empty). `device` is the
//! identity the transport proved (DTLS), empty on plain UDP. `label` is the hook for labelled
//! datasets: the first `[[monitor.flows.labels]]` prefix containing the peer's address names
//! it (a simulator sends its attacks from its own address), else the default label. The CSV
//! header is [`CSV_COLUMNS`]; `docs/ARCHITECTURE.md` ("Traffic monitor") documents each field.
//!
//! # Ends of a flow (`end_reason`)
//! `idle` (no packet for `idle_timeout`), `active` (longer than `active_timeout`: the flow is
//! cut and a new one starts, as CICFlowMeter does), `evicted` (the table was at `max_flows`:
//! the least recently seen 1 % of flows are written early to make room), `shutdown`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::filter::IpPrefix;
use crate::pcapng::Direction;

/// The CoAP header fields a flow counts (RFC 7252 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoapMeta {
    /// 0 CON, 1 NON, 2 ACK, 3 RST.
    pub kind: u8,
    /// The code byte (class << 5 | detail); 0 is Empty.
    pub code: u8,
}

impl CoapMeta {
    /// The header of `datagram` if it looks like CoAP (version 1, at least 4 bytes, token
    /// length ≤ 8); `None` otherwise.
    pub fn parse(datagram: &[u8]) -> Option<CoapMeta> {
        let first = *datagram.first()?;
        if first >> 6 != 1 || datagram.len() < 4 || first & 0x0f > 8 {
            return None;
        }
        Some(CoapMeta {
            kind: (first >> 4) & 0x03,
            code: *datagram.get(1)?,
        })
    }
}

/// One datagram as a flow sees it: no payload, only what the statistics need.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowPacket {
    /// When the tap saw it.
    pub at: SystemTime,
    /// Received or sent by the gateway.
    pub direction: Direction,
    /// The peer's address.
    pub peer: SocketAddr,
    /// The gateway's socket address.
    pub local: SocketAddr,
    /// `coap` or `coaps`.
    pub protocol: &'static str,
    /// The identity the transport proved, if any.
    pub device: Option<String>,
    /// The datagram's length (UDP payload).
    pub len: usize,
    /// Its CoAP header: `Some(None)` when it did not parse as CoAP (malformed), `None` when it
    /// is not expected to be readable CoAP (DTLS records).
    pub coap: Option<Option<CoapMeta>>,
    /// A received DTLS datagram that starts with a ClientHello (see [`is_client_hello`]).
    pub client_hello: bool,
    /// The LwM2M operation the datagram carries, if it is one (plain CoAP only; see
    /// [`Lwm2mOp::of`]).
    pub lwm2m: Option<Lwm2mOp>,
}

impl FlowPacket {
    /// A packet of `len` bytes seen now, with no protocol detail (no CoAP header, no
    /// ClientHello, no LwM2M operation).
    pub fn plain(
        direction: Direction,
        peer: &wardgate_core::PeerContext,
        local: SocketAddr,
        protocol: &'static str,
        len: usize,
    ) -> FlowPacket {
        FlowPacket {
            at: SystemTime::now(),
            direction,
            peer: peer.addr,
            local,
            protocol,
            device: peer.identity.as_ref().map(ToString::to_string),
            len,
            coap: None,
            client_hello: false,
            lwm2m: None,
        }
    }
}

/// An LwM2M operation, recognized from a CoAP request's method, Uri-Path and Observe option
/// (OMA-TS-LightweightM2M-Core 1.1 §6.3-6.5, Transport §6): from the client, the registration
/// interface (`POST /rd` register, `POST /rd/{location}` update, `DELETE /rd/{location}`
/// deregister), `POST /bs` bootstrap and `POST /dp` send; from the server, device management
/// on numeric object paths (`GET` read, `GET` with Observe observe, `PUT` write, `POST` to an
/// object create, `POST` to a resource execute, `DELETE` delete) and `POST /bs` (bootstrap
/// finish). Over DTLS the requests are encrypted where the tap sees them: no operations there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Lwm2mOp {
    /// Register.
    Register,
    /// Registration update.
    Update,
    /// Deregister.
    Deregister,
    /// Bootstrap request or finish.
    Bootstrap,
    /// Send (`/dp`).
    Send,
    /// Read.
    Read,
    /// Observe (or its cancellation).
    Observe,
    /// Write.
    Write,
    /// Create.
    Create,
    /// Execute.
    Execute,
    /// Delete.
    Delete,
}

impl Lwm2mOp {
    /// How many there are.
    pub const COUNT: usize = 11;

    /// The name in flow records.
    pub fn as_str(self) -> &'static str {
        match self {
            Lwm2mOp::Register => "register",
            Lwm2mOp::Update => "update",
            Lwm2mOp::Deregister => "deregister",
            Lwm2mOp::Bootstrap => "bootstrap",
            Lwm2mOp::Send => "send",
            Lwm2mOp::Read => "read",
            Lwm2mOp::Observe => "observe",
            Lwm2mOp::Write => "write",
            Lwm2mOp::Create => "create",
            Lwm2mOp::Execute => "execute",
            Lwm2mOp::Delete => "delete",
        }
    }

    /// The operation a CoAP datagram carries, `inbound` meaning sent by the peer to the
    /// gateway (the LwM2M client's side); `None` for anything else (responses, other paths,
    /// options that do not parse).
    pub fn of(datagram: &[u8], inbound: bool) -> Option<Lwm2mOp> {
        Lwm2mOp::with_meta(CoapMeta::parse(datagram)?, datagram, inbound)
    }

    /// [`Lwm2mOp::of`] for a datagram whose header the caller already parsed.
    pub fn with_meta(meta: CoapMeta, datagram: &[u8], inbound: bool) -> Option<Lwm2mOp> {
        // Only GET, POST, PUT and DELETE carry an operation: everything else (half the traffic
        // is responses) returns before the options are parsed.
        if !(1..=4).contains(&meta.code) {
            return None;
        }
        let (first, segments, observe) = uri_path(datagram)?;
        let (get, post, put, delete) = (1, 2, 3, 4);
        if inbound {
            match (meta.code, first, segments) {
                (c, b"rd", 1) if c == post => Some(Lwm2mOp::Register),
                (c, b"rd", 2) if c == post => Some(Lwm2mOp::Update),
                (c, b"rd", 2) if c == delete => Some(Lwm2mOp::Deregister),
                (c, b"bs", _) if c == post => Some(Lwm2mOp::Bootstrap),
                (c, b"dp", _) if c == post => Some(Lwm2mOp::Send),
                _ => None,
            }
        } else {
            if first == b"bs" && meta.code == post {
                return Some(Lwm2mOp::Bootstrap);
            }
            if first.is_empty() || !first.iter().all(u8::is_ascii_digit) {
                return None;
            }
            match meta.code {
                c if c == get && observe => Some(Lwm2mOp::Observe),
                c if c == get => Some(Lwm2mOp::Read),
                c if c == put => Some(Lwm2mOp::Write),
                c if c == post && segments >= 3 => Some(Lwm2mOp::Execute),
                c if c == post => Some(Lwm2mOp::Create),
                c if c == delete => Some(Lwm2mOp::Delete),
                _ => None,
            }
        }
    }
}

/// A request's first Uri-Path segment, how many segments it has and whether it carries an
/// Observe option; `None` when the datagram does not parse (the CoAP crate's codec, which
/// validates the whole message without allocating).
fn uri_path(d: &[u8]) -> Option<(&[u8], usize, bool)> {
    let m = wardgate_coap::codec::Message::parse(d).ok()?;
    let (mut first, mut segments, mut observe) = (&[][..], 0, false);
    // Options come in order: nothing after Uri-Path (11) matters here.
    for o in m.options().take_while(|o| o.number <= 11) {
        match o.number {
            6 => observe = true,
            11 => {
                if segments == 0 {
                    first = o.value;
                }
                segments += 1;
            }
            _ => {}
        }
    }
    Some((first, segments, observe))
}

/// Whether a DTLS datagram starts with a ClientHello: a handshake record (content type 22,
/// DTLS version 0xfeXX) whose first handshake message has type 1 (RFC 6347 §4.1, §4.2.2).
/// Only the first record is looked at: a client puts its ClientHello first.
pub fn is_client_hello(datagram: &[u8]) -> bool {
    datagram.first() == Some(&22) && datagram.get(1) == Some(&0xfe) && datagram.get(13) == Some(&1)
}

/// Count, sum, sum of squares, min and max of a series.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Series {
    n: u64,
    sum: f64,
    sumsq: f64,
    min: f64,
    max: f64,
}

impl Series {
    fn add(&mut self, x: f64) {
        if self.n == 0 {
            self.min = x;
            self.max = x;
        } else {
            self.min = self.min.min(x);
            self.max = self.max.max(x);
        }
        self.n += 1;
        self.sum += x;
        self.sumsq += x * x;
    }

    fn mean(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.sum / self.n as f64
        }
    }

    /// Sample standard deviation (n − 1), 0 below two values (as CICFlowMeter).
    fn std(&self) -> f64 {
        if self.n < 2 {
            return 0.0;
        }
        let n = self.n as f64;
        ((self.sumsq - self.sum * self.sum / n) / (n - 1.0))
            .max(0.0)
            .sqrt()
    }
}

/// What identifies a flow.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FlowKey {
    peer: SocketAddr,
    local: SocketAddr,
    protocol: &'static str,
}

#[derive(Debug, Clone)]
struct Flow {
    forward: Direction,
    device: Option<String>,
    first: SystemTime,
    last: SystemTime,
    last_fwd: Option<SystemTime>,
    last_bwd: Option<SystemTime>,
    fwd_len: Series,
    bwd_len: Series,
    pkt_len: Series,
    flow_iat: Series,
    fwd_iat: Series,
    bwd_iat: Series,
    coap_types: [u64; 4],
    coap_requests: u64,
    /// (code byte, count); at most 256 entries (one per code).
    coap_codes: Vec<(u8, u64)>,
    malformed: u64,
    /// LwM2M operations, indexed like [`Lwm2mOp`].
    lwm2m_ops: [u64; Lwm2mOp::COUNT],
    /// How the security handshake ended (the latest outcome), if the transport told.
    handshake: Option<&'static str>,
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn since(later: SystemTime, earlier: SystemTime) -> Duration {
    later.duration_since(earlier).unwrap_or(Duration::ZERO)
}

impl Flow {
    fn new(p: &FlowPacket) -> Flow {
        Flow {
            forward: p.direction,
            device: p.device.clone(),
            first: p.at,
            last: p.at,
            last_fwd: None,
            last_bwd: None,
            fwd_len: Series::default(),
            bwd_len: Series::default(),
            pkt_len: Series::default(),
            flow_iat: Series::default(),
            fwd_iat: Series::default(),
            bwd_iat: Series::default(),
            coap_types: [0; 4],
            coap_requests: 0,
            coap_codes: Vec::new(),
            malformed: 0,
            lwm2m_ops: [0; Lwm2mOp::COUNT],
            handshake: None,
        }
    }

    fn add(&mut self, p: &FlowPacket) {
        let len = p.len as f64;
        if self.pkt_len.n > 0 {
            self.flow_iat.add(micros(since(p.at, self.last)));
        }
        self.pkt_len.add(len);
        let (series, iat, last) = if p.direction == self.forward {
            (&mut self.fwd_len, &mut self.fwd_iat, &mut self.last_fwd)
        } else {
            (&mut self.bwd_len, &mut self.bwd_iat, &mut self.last_bwd)
        };
        series.add(len);
        if let Some(prev) = *last {
            iat.add(micros(since(p.at, prev)));
        }
        *last = Some(p.at);
        self.last = self.last.max(p.at);
        if self.device.is_none() {
            self.device.clone_from(&p.device);
        }
        match p.coap {
            None => {}
            Some(Some(m)) => {
                if let Some(t) = self.coap_types.get_mut(usize::from(m.kind)) {
                    *t += 1;
                }
                if (1..32).contains(&m.code) {
                    self.coap_requests += 1;
                }
                if m.code >= 64 {
                    match self.coap_codes.iter_mut().find(|(c, _)| *c == m.code) {
                        Some((_, n)) => *n += 1,
                        None => self.coap_codes.push((m.code, 1)),
                    }
                }
            }
            Some(None) => self.malformed += 1,
        }
        if let Some(op) = p.lwm2m {
            self.lwm2m_ops[op as usize] += 1;
        }
    }

    fn record(&self, key: &FlowKey, end_reason: &'static str, label: &str) -> FlowRecord {
        let (src, dst) = if self.forward == Direction::Inbound {
            (key.peer, key.local)
        } else {
            (key.local, key.peer)
        };
        let duration = since(self.last, self.first);
        let secs = duration.as_secs_f64();
        let bytes = self.pkt_len.sum;
        let per_sec = |x: f64| if secs > 0.0 { x / secs } else { 0.0 };
        let class = |c: u8| {
            self.coap_codes
                .iter()
                .filter(|(code, _)| code >> 5 == c)
                .map(|(_, n)| n)
                .sum()
        };
        let code = |c: u8| {
            self.coap_codes
                .iter()
                .find(|(code, _)| *code == c)
                .map_or(0, |(_, n)| *n)
        };
        let mut codes = self.coap_codes.clone();
        codes.sort_unstable();
        FlowRecord {
            flow_id: format!("{src}-{dst}-{}", key.protocol),
            timestamp: humantime::format_rfc3339_micros(self.first.max(UNIX_EPOCH)).to_string(),
            src_ip: src.ip().to_canonical().to_string(),
            src_port: src.port(),
            dst_ip: dst.ip().to_canonical().to_string(),
            dst_port: dst.port(),
            // TCP for stream sessions (HTTPS ingest, the MQTT subscriber's broker session), UDP
            // for CoAP and DTLS.
            protocol: if key.protocol.starts_with("http") || key.protocol.starts_with("mqtt") {
                6
            } else {
                17
            },
            app_protocol: key.protocol,
            device: self.device.clone().unwrap_or_default(),
            flow_duration: micros(duration),
            tot_fwd_pkts: self.fwd_len.n,
            tot_bwd_pkts: self.bwd_len.n,
            totlen_fwd_pkts: self.fwd_len.sum,
            totlen_bwd_pkts: self.bwd_len.sum,
            fwd_pkt_len_max: self.fwd_len.max,
            fwd_pkt_len_min: self.fwd_len.min,
            fwd_pkt_len_mean: self.fwd_len.mean(),
            fwd_pkt_len_std: self.fwd_len.std(),
            bwd_pkt_len_max: self.bwd_len.max,
            bwd_pkt_len_min: self.bwd_len.min,
            bwd_pkt_len_mean: self.bwd_len.mean(),
            bwd_pkt_len_std: self.bwd_len.std(),
            flow_byts_s: per_sec(bytes),
            flow_pkts_s: per_sec(self.pkt_len.n as f64),
            flow_iat_mean: self.flow_iat.mean(),
            flow_iat_std: self.flow_iat.std(),
            flow_iat_max: self.flow_iat.max,
            flow_iat_min: self.flow_iat.min,
            fwd_iat_tot: self.fwd_iat.sum,
            fwd_iat_mean: self.fwd_iat.mean(),
            fwd_iat_std: self.fwd_iat.std(),
            fwd_iat_max: self.fwd_iat.max,
            fwd_iat_min: self.fwd_iat.min,
            bwd_iat_tot: self.bwd_iat.sum,
            bwd_iat_mean: self.bwd_iat.mean(),
            bwd_iat_std: self.bwd_iat.std(),
            bwd_iat_max: self.bwd_iat.max,
            bwd_iat_min: self.bwd_iat.min,
            pkt_len_min: self.pkt_len.min,
            pkt_len_max: self.pkt_len.max,
            pkt_len_mean: self.pkt_len.mean(),
            pkt_len_std: self.pkt_len.std(),
            coap_con: self.coap_types[0],
            coap_non: self.coap_types[1],
            coap_ack: self.coap_types[2],
            coap_rst: self.coap_types[3],
            coap_requests: self.coap_requests,
            coap_2xx: class(2),
            coap_4xx: class(4),
            coap_5xx: class(5),
            coap_401: code(0x81),
            coap_403: code(0x83),
            coap_404: code(0x84),
            coap_405: code(0x85),
            coap_codes: codes
                .iter()
                .map(|(c, n)| (format!("{}.{:02}", c >> 5, c & 0x1f), *n))
                .collect(),
            malformed_pkts: self.malformed,
            lwm2m_ops: LWM2M_OPS
                .iter()
                .filter(|op| self.lwm2m_ops[**op as usize] > 0)
                .map(|op| (op.as_str(), self.lwm2m_ops[*op as usize]))
                .collect(),
            dtls_handshake: self.handshake.unwrap_or_default(),
            auth_outcome: match self.handshake {
                None => "",
                Some("established") => "ok",
                Some(r) if AUTH_FAILURES.contains(&r) => "failed",
                // A timeout or protocol error says nothing about the credentials.
                Some(_) => "",
            },
            end_reason,
            label: label.to_owned(),
        }
    }
}

/// One finished flow. See the module doc for the fields' meaning.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[allow(missing_docs)]
pub struct FlowRecord {
    pub flow_id: String,
    pub timestamp: String,
    pub src_ip: String,
    pub src_port: u16,
    pub dst_ip: String,
    pub dst_port: u16,
    pub protocol: u8,
    pub app_protocol: &'static str,
    pub device: String,
    pub flow_duration: f64,
    pub tot_fwd_pkts: u64,
    pub tot_bwd_pkts: u64,
    pub totlen_fwd_pkts: f64,
    pub totlen_bwd_pkts: f64,
    pub fwd_pkt_len_max: f64,
    pub fwd_pkt_len_min: f64,
    pub fwd_pkt_len_mean: f64,
    pub fwd_pkt_len_std: f64,
    pub bwd_pkt_len_max: f64,
    pub bwd_pkt_len_min: f64,
    pub bwd_pkt_len_mean: f64,
    pub bwd_pkt_len_std: f64,
    pub flow_byts_s: f64,
    pub flow_pkts_s: f64,
    pub flow_iat_mean: f64,
    pub flow_iat_std: f64,
    pub flow_iat_max: f64,
    pub flow_iat_min: f64,
    pub fwd_iat_tot: f64,
    pub fwd_iat_mean: f64,
    pub fwd_iat_std: f64,
    pub fwd_iat_max: f64,
    pub fwd_iat_min: f64,
    pub bwd_iat_tot: f64,
    pub bwd_iat_mean: f64,
    pub bwd_iat_std: f64,
    pub bwd_iat_max: f64,
    pub bwd_iat_min: f64,
    pub pkt_len_min: f64,
    pub pkt_len_max: f64,
    pub pkt_len_mean: f64,
    pub pkt_len_std: f64,
    pub coap_con: u64,
    pub coap_non: u64,
    pub coap_ack: u64,
    pub coap_rst: u64,
    pub coap_requests: u64,
    pub coap_2xx: u64,
    pub coap_4xx: u64,
    pub coap_5xx: u64,
    pub coap_401: u64,
    pub coap_403: u64,
    pub coap_404: u64,
    pub coap_405: u64,
    pub coap_codes: std::collections::BTreeMap<String, u64>,
    pub malformed_pkts: u64,
    pub lwm2m_ops: std::collections::BTreeMap<&'static str, u64>,
    pub dtls_handshake: &'static str,
    pub auth_outcome: &'static str,
    pub end_reason: &'static str,
    pub label: String,
}

const LWM2M_OPS: [Lwm2mOp; Lwm2mOp::COUNT] = [
    Lwm2mOp::Register,
    Lwm2mOp::Update,
    Lwm2mOp::Deregister,
    Lwm2mOp::Bootstrap,
    Lwm2mOp::Send,
    Lwm2mOp::Read,
    Lwm2mOp::Observe,
    Lwm2mOp::Write,
    Lwm2mOp::Create,
    Lwm2mOp::Execute,
    Lwm2mOp::Delete,
];

/// Handshake failure reasons that are about the peer's credentials (`auth_outcome = "failed"`).
/// `finished_unanswered` is interface mode's: the server left the client's final flight
/// unanswered through a retransmission, which is how OpenSSL-based servers refuse a wrong PSK.
pub const AUTH_FAILURES: [&str; 4] = [
    "unknown_identity",
    "unknown_certificate",
    "bad_key",
    "finished_unanswered",
];

/// The CSV header, in the order [`FlowRecord::csv_row`] writes the fields.
pub const CSV_COLUMNS: &[&str] = &[
    "flow_id",
    "timestamp",
    "src_ip",
    "src_port",
    "dst_ip",
    "dst_port",
    "protocol",
    "app_protocol",
    "device",
    "flow_duration",
    "tot_fwd_pkts",
    "tot_bwd_pkts",
    "totlen_fwd_pkts",
    "totlen_bwd_pkts",
    "fwd_pkt_len_max",
    "fwd_pkt_len_min",
    "fwd_pkt_len_mean",
    "fwd_pkt_len_std",
    "bwd_pkt_len_max",
    "bwd_pkt_len_min",
    "bwd_pkt_len_mean",
    "bwd_pkt_len_std",
    "flow_byts_s",
    "flow_pkts_s",
    "flow_iat_mean",
    "flow_iat_std",
    "flow_iat_max",
    "flow_iat_min",
    "fwd_iat_tot",
    "fwd_iat_mean",
    "fwd_iat_std",
    "fwd_iat_max",
    "fwd_iat_min",
    "bwd_iat_tot",
    "bwd_iat_mean",
    "bwd_iat_std",
    "bwd_iat_max",
    "bwd_iat_min",
    "pkt_len_min",
    "pkt_len_max",
    "pkt_len_mean",
    "pkt_len_std",
    "coap_con",
    "coap_non",
    "coap_ack",
    "coap_rst",
    "coap_requests",
    "coap_2xx",
    "coap_4xx",
    "coap_5xx",
    "coap_401",
    "coap_403",
    "coap_404",
    "coap_405",
    "coap_codes",
    "malformed_pkts",
    "lwm2m_ops",
    "dtls_handshake",
    "auth_outcome",
    "end_reason",
    "label",
];

/// A CSV field: quoted when it holds a comma, quote or line break (RFC 4180).
fn csv_field(out: &mut String, s: &str) {
    if s.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&s.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(s);
    }
}

impl FlowRecord {
    /// The record as one CSV row (no line end), columns as [`CSV_COLUMNS`].
    pub fn csv_row(&self) -> String {
        let v = serde_json::to_value(self).unwrap_or_default();
        let mut out = String::new();
        for (i, col) in CSV_COLUMNS.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            match v.get(*col) {
                Some(serde_json::Value::String(s)) => csv_field(&mut out, s),
                Some(serde_json::Value::Object(m)) => {
                    let joined = m
                        .iter()
                        .map(|(k, n)| format!("{k}={n}"))
                        .collect::<Vec<_>>()
                        .join(";");
                    csv_field(&mut out, &joined);
                }
                Some(other) => {
                    let _ = write!(out, "{other}");
                }
                None => {}
            }
        }
        out
    }
}

/// The flow table's settings.
#[derive(Debug, Clone)]
pub struct FlowParams {
    /// A flow without packets this long ends.
    pub idle_timeout: Duration,
    /// A flow longer than this is cut.
    pub active_timeout: Duration,
    /// Most flows kept at once.
    pub max_flows: usize,
    /// (prefix, label): the first containing the peer's address labels its flows.
    pub labels: Vec<(IpPrefix, String)>,
    /// The label of every other flow.
    pub default_label: String,
}

/// The open flows. Pure: see the module doc.
#[derive(Debug)]
pub struct FlowTable {
    params: FlowParams,
    flows: HashMap<FlowKey, Flow>,
}

impl FlowTable {
    /// An empty table.
    pub fn new(params: FlowParams) -> Self {
        FlowTable {
            params,
            flows: HashMap::new(),
        }
    }

    /// Flows open now.
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// No flow is open.
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    fn label(&self, key: &FlowKey) -> &str {
        self.params
            .labels
            .iter()
            .find(|(p, _)| p.contains(key.peer.ip()))
            .map_or(self.params.default_label.as_str(), |(_, l)| l.as_str())
    }

    fn finish(&self, key: &FlowKey, flow: &Flow, why: &'static str) -> FlowRecord {
        flow.record(key, why, self.label(key))
    }

    /// Adds one packet; returns the flows it ended (its own flow cut by `active_timeout` or
    /// idle since, or the least recently seen 1 % evicted to make room).
    pub fn observe(&mut self, p: &FlowPacket) -> Vec<FlowRecord> {
        let key = FlowKey {
            peer: p.peer,
            local: p.local,
            protocol: p.protocol,
        };
        let mut out = Vec::new();
        if let Some(f) = self.flows.get(&key) {
            let why = if since(p.at, f.last) >= self.params.idle_timeout {
                Some("idle")
            } else if since(p.at, f.first) >= self.params.active_timeout {
                Some("active")
            } else {
                None
            };
            if let Some(why) = why {
                out.push(self.finish(&key, f, why));
                self.flows.remove(&key);
            }
        }
        self.make_room(&key, &mut out);
        self.flows.entry(key).or_insert_with(|| Flow::new(p)).add(p);
        out
    }

    /// Before `key` is added: when the table is full, the least recently seen 1 % go at once
    /// (into `out`): one O(flows) pass per max/100 new flows, so a flood of new sources
    /// (spoofed addresses) costs O(100) per packet, not O(flows).
    fn make_room(&mut self, key: &FlowKey, out: &mut Vec<FlowRecord>) {
        let max = self.params.max_flows.max(1);
        if self.flows.contains_key(key) || self.flows.len() < max {
            return;
        }
        let k = (max / 100).max(1);
        let mut by_age: Vec<(SystemTime, FlowKey)> = self
            .flows
            .iter()
            .map(|(k, f)| (f.last, k.clone()))
            .collect();
        if k < by_age.len() {
            by_age.select_nth_unstable_by_key(k - 1, |(last, _)| *last);
            by_age.truncate(k);
        }
        for (_, old) in by_age {
            if let Some(f) = self.flows.remove(&old) {
                out.push(self.finish(&old, &f, "evicted"));
            }
        }
    }

    /// Records how the security handshake of the flow (`peer`, `local`, `protocol`) ended at
    /// `at`. A flow not open yet starts here, without packets: a stream session's handshake
    /// (TLS on the HTTPS ingest) is reported before its first byte is read, and a failed one
    /// has no bytes at all (its record is the failure). Returns the flows evicted to make room.
    pub fn handshake(
        &mut self,
        peer: SocketAddr,
        local: SocketAddr,
        protocol: &'static str,
        outcome: &'static str,
        at: SystemTime,
    ) -> Vec<FlowRecord> {
        let key = FlowKey {
            peer,
            local,
            protocol,
        };
        let mut out = Vec::new();
        if let Some(f) = self.flows.get_mut(&key) {
            f.handshake = Some(outcome);
            return out;
        }
        self.make_room(&key, &mut out);
        let mut f = Flow::new(&FlowPacket {
            at,
            direction: Direction::Inbound,
            peer,
            local,
            protocol,
            device: None,
            len: 0,
            coap: None,
            client_hello: false,
            lwm2m: None,
        });
        f.handshake = Some(outcome);
        self.flows.insert(key, f);
        out
    }

    /// Ends every flow idle for `idle_timeout` at `now`.
    pub fn expire(&mut self, now: SystemTime) -> Vec<FlowRecord> {
        let idle = self.params.idle_timeout;
        let done: Vec<FlowKey> = self
            .flows
            .iter()
            .filter(|(_, f)| since(now, f.last) >= idle)
            .map(|(k, _)| k.clone())
            .collect();
        let mut out = Vec::with_capacity(done.len());
        for k in done {
            if let Some(f) = self.flows.remove(&k) {
                out.push(self.finish(&k, &f, "idle"));
            }
        }
        out
    }

    /// Ends every flow (shutdown), oldest first.
    pub fn drain(&mut self) -> Vec<FlowRecord> {
        let mut all: Vec<(FlowKey, Flow)> = self.flows.drain().collect();
        all.sort_by_key(|(_, f)| f.first);
        all.iter()
            .map(|(k, f)| f.record(k, "shutdown", self.label(k)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_764_000_000;

    fn params() -> FlowParams {
        FlowParams {
            idle_timeout: Duration::from_secs(60),
            active_timeout: Duration::from_secs(1800),
            max_flows: 100,
            labels: vec![("127.0.0.66/32".parse().unwrap(), "attack".into())],
            default_label: "benign".into(),
        }
    }

    fn pkt(ms: u64, dir: Direction, port: u16, bytes: &[u8]) -> FlowPacket {
        FlowPacket {
            at: UNIX_EPOCH + Duration::from_secs(T0) + Duration::from_millis(ms),
            direction: dir,
            peer: SocketAddr::from(([127, 0, 0, 1], port)),
            local: SocketAddr::from(([127, 0, 0, 1], 5683)),
            protocol: "coap",
            device: None,
            len: bytes.len(),
            coap: Some(CoapMeta::parse(bytes)),
            client_hello: false,
            lwm2m: Lwm2mOp::of(bytes, dir == Direction::Inbound),
        }
    }

    /// CON POST (code 0.02) with a 10-byte tail.
    const CON_POST: [u8; 14] = [0x40, 0x02, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    /// ACK 2.04.
    const ACK_204: [u8; 4] = [0x60, 0x44, 0, 1];
    /// ACK 4.04.
    const ACK_404: [u8; 4] = [0x60, 0x84, 0, 2];

    #[test]
    fn a_request_response_exchange_gets_the_cicflowmeter_statistics() {
        let mut t = FlowTable::new(params());
        for p in [
            pkt(0, Direction::Inbound, 40000, &CON_POST),
            pkt(10, Direction::Outbound, 40000, &ACK_204),
            pkt(1000, Direction::Inbound, 40000, &CON_POST),
            pkt(1030, Direction::Outbound, 40000, &ACK_404),
            pkt(1040, Direction::Inbound, 40000, b"\xff\xff"),
        ] {
            assert!(t.observe(&p).is_empty());
        }
        let r = t.drain().pop().unwrap();
        assert_eq!(
            (r.src_ip.as_str(), r.src_port, r.dst_port),
            ("127.0.0.1", 40000, 5683)
        );
        assert_eq!((r.tot_fwd_pkts, r.tot_bwd_pkts), (3, 2));
        assert_eq!((r.totlen_fwd_pkts, r.totlen_bwd_pkts), (30.0, 8.0));
        assert_eq!(r.flow_duration, 1_040_000.0);
        assert_eq!((r.fwd_pkt_len_min, r.fwd_pkt_len_max), (2.0, 14.0));
        assert_eq!(r.fwd_pkt_len_mean, 10.0);
        // Sample std of 14, 14, 2: sqrt(((4² + 4² + 8²)) / 2) = sqrt(48).
        assert!((r.fwd_pkt_len_std - 48f64.sqrt()).abs() < 1e-9);
        // Gaps 10, 990, 30, 10 ms.
        assert_eq!(r.flow_iat_min, 10_000.0);
        assert_eq!(r.flow_iat_max, 990_000.0);
        assert_eq!(r.flow_iat_mean, 260_000.0);
        assert_eq!((r.fwd_iat_tot, r.fwd_iat_min), (1_040_000.0, 40_000.0));
        assert_eq!(r.bwd_iat_tot, 1_020_000.0);
        assert_eq!((r.coap_con, r.coap_ack, r.coap_requests), (2, 2, 2));
        assert_eq!((r.coap_2xx, r.coap_4xx, r.coap_404), (1, 1, 1));
        assert_eq!(r.malformed_pkts, 1);
        assert_eq!(r.coap_codes.get("4.04"), Some(&1));
        assert_eq!(r.coap_codes.get("2.04"), Some(&1));
        assert_eq!((r.end_reason, r.label.as_str()), ("shutdown", "benign"));
        assert!((r.flow_pkts_s - 5.0 / 1.04).abs() < 1e-9);
    }

    #[test]
    fn flows_end_idle_or_cut_active_and_the_table_stays_bounded() {
        let mut p = params();
        p.max_flows = 2;
        p.active_timeout = Duration::from_secs(120);
        let mut t = FlowTable::new(p);
        t.observe(&pkt(0, Direction::Inbound, 1, &CON_POST));
        t.observe(&pkt(5, Direction::Inbound, 2, &CON_POST));
        // A third flow evicts the least recently seen (port 1).
        let out = t.observe(&pkt(10, Direction::Inbound, 3, &CON_POST));
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].src_port, out[0].end_reason), (1, "evicted"));
        assert_eq!(t.len(), 2);
        // Port 2 keeps talking every 50 s: never idle, but cut after 120 s.
        assert!(
            t.observe(&pkt(50_005, Direction::Inbound, 2, &CON_POST))
                .is_empty()
        );
        assert!(
            t.observe(&pkt(100_005, Direction::Inbound, 2, &CON_POST))
                .is_empty()
        );
        let out = t.observe(&pkt(150_005, Direction::Inbound, 2, &CON_POST));
        assert_eq!((out[0].end_reason, out[0].tot_fwd_pkts), ("active", 3));
        // Port 3 has been silent since 10 ms: idle at 60.01 s.
        let at = |ms: u64| UNIX_EPOCH + Duration::from_secs(T0) + Duration::from_millis(ms);
        assert!(t.expire(at(60_009)).is_empty());
        let out = t.expire(at(60_010));
        assert_eq!((out[0].src_port, out[0].end_reason), (3, "idle"));
        assert_eq!(t.len(), 1, "port 2's new flow");
    }

    #[test]
    fn a_full_table_evicts_the_oldest_percent_at_once() {
        let mut p = params();
        p.max_flows = 200;
        let mut t = FlowTable::new(p);
        for port in 0..200u16 {
            assert!(
                t.observe(&pkt(u64::from(port), Direction::Inbound, port, &CON_POST))
                    .is_empty()
            );
        }
        let out = t.observe(&pkt(1000, Direction::Inbound, 999, &CON_POST));
        let mut ports: Vec<u16> = out.iter().map(|r| r.src_port).collect();
        ports.sort_unstable();
        assert_eq!(ports, [0, 1], "the two least recently seen");
        assert!(out.iter().all(|r| r.end_reason == "evicted"));
        assert_eq!(t.len(), 199);
    }

    #[test]
    fn the_label_comes_from_the_first_matching_prefix_and_a_gateway_first_flow_is_reversed() {
        let mut t = FlowTable::new(params());
        let mut attack = pkt(0, Direction::Inbound, 7, &CON_POST);
        attack.peer = SocketAddr::from(([127, 0, 0, 66], 7));
        t.observe(&attack);
        // The gateway spoke first (an observe request to a sensor): forward is outbound.
        t.observe(&pkt(0, Direction::Outbound, 9, &CON_POST));
        let all = t.drain();
        let a = all.iter().find(|r| r.src_ip == "127.0.0.66").unwrap();
        assert_eq!(a.label, "attack");
        let g = all.iter().find(|r| r.dst_port == 9).unwrap();
        assert_eq!((g.src_port, g.label.as_str()), (5683, "benign"));
    }

    #[test]
    fn csv_rows_follow_the_header_and_quote_what_needs_it() {
        let mut t = FlowTable::new(params());
        let mut p = pkt(0, Direction::Inbound, 1, &ACK_404);
        p.device = Some("bed,1 \"x\"".into());
        t.observe(&p);
        t.observe(&pkt(1, Direction::Inbound, 1, &ACK_204));
        let r = t.drain().pop().unwrap();
        let row = r.csv_row();
        assert!(row.contains(r#","bed,1 ""x""","#), "{row}");
        assert!(row.contains(",2.04=1;4.04=1,"), "{row}");
        assert!(row.ends_with(",shutdown,benign"), "{row}");
        // Same number of fields as the header, outside quotes.
        let mut fields = 1;
        let mut quoted = false;
        for c in row.chars() {
            match c {
                '"' => quoted = !quoted,
                ',' if !quoted => fields += 1,
                _ => {}
            }
        }
        assert_eq!(fields, CSV_COLUMNS.len());
    }

    /// A CoAP request (token `7`): Observe (6) when `observe`, one Uri-Path (11) per segment,
    /// one Uri-Query (15) when given, then a payload marker and a byte.
    fn request(code: u8, observe: bool, path: &[&str], query: Option<&str>) -> Vec<u8> {
        let mut d = vec![0x41, code, 0x12, 0x34, 7];
        let mut last = 0u8;
        let mut option = |d: &mut Vec<u8>, number: u8, value: &[u8]| {
            let delta = number - last;
            last = number;
            assert!(delta < 13 && value.len() < 13);
            d.push(delta << 4 | value.len() as u8);
            d.extend_from_slice(value);
        };
        if observe {
            option(&mut d, 6, &[]);
        }
        for seg in path {
            option(&mut d, 11, seg.as_bytes());
        }
        if let Some(q) = query {
            option(&mut d, 15, q.as_bytes());
        }
        d.extend_from_slice(&[0xff, b'x']);
        d
    }

    #[test]
    fn lwm2m_operations_are_told_from_method_path_and_observe() {
        let (get, post, put, delete) = (1, 2, 3, 4);
        let client =
            |code, path: &[&str]| Lwm2mOp::of(&request(code, false, path, Some("ep=bed")), true);
        assert_eq!(client(post, &["rd"]), Some(Lwm2mOp::Register));
        assert_eq!(client(post, &["rd", "5a3f"]), Some(Lwm2mOp::Update));
        assert_eq!(client(delete, &["rd", "5a3f"]), Some(Lwm2mOp::Deregister));
        assert_eq!(client(post, &["bs"]), Some(Lwm2mOp::Bootstrap));
        assert_eq!(client(post, &["dp"]), Some(Lwm2mOp::Send));
        assert_eq!(client(post, &["v1", "readings", "bed"]), None);
        assert_eq!(client(get, &["rd"]), None);
        let server =
            |code, observe, path: &[&str]| Lwm2mOp::of(&request(code, observe, path, None), false);
        assert_eq!(
            server(get, false, &["3303", "0", "5700"]),
            Some(Lwm2mOp::Read)
        );
        assert_eq!(
            server(get, true, &["3303", "0", "5700"]),
            Some(Lwm2mOp::Observe)
        );
        assert_eq!(server(put, false, &["1", "0", "1"]), Some(Lwm2mOp::Write));
        assert_eq!(
            server(post, false, &["3", "0", "4"]),
            Some(Lwm2mOp::Execute)
        );
        assert_eq!(server(post, false, &["3303"]), Some(Lwm2mOp::Create));
        assert_eq!(server(delete, false, &["3303", "1"]), Some(Lwm2mOp::Delete));
        assert_eq!(server(post, false, &["bs"]), Some(Lwm2mOp::Bootstrap));
        // The gateway observing a plain CoAP sensor is not LwM2M (no numeric object path).
        assert_eq!(server(get, true, &["sensors", "temp"]), None);
        // Responses, empty messages, broken options: nothing.
        assert_eq!(Lwm2mOp::of(&[0x60, 0x44, 0, 1], false), None);
        assert_eq!(Lwm2mOp::of(&[0x40, 0x00, 0, 1], true), None);
        let mut broken = request(post, false, &["rd"], None);
        broken[5] = 0xbf; // delta 11, length nibble 15: invalid
        assert_eq!(Lwm2mOp::of(&broken, true), None);
        for cut in 0..broken.len() {
            let _ = Lwm2mOp::of(
                &request(post, true, &["rd", "x"], Some("ep=a"))[..cut],
                true,
            );
        }
    }

    #[test]
    fn a_flow_counts_its_lwm2m_operations_in_the_record_and_the_csv() {
        let mut t = FlowTable::new(params());
        for (ms, bytes, dir) in [
            (
                0,
                request(2, false, &["rd"], Some("ep=bed")),
                Direction::Inbound,
            ),
            (
                10,
                request(1, true, &["3303", "0", "5700"], None),
                Direction::Outbound,
            ),
            (
                20,
                request(2, false, &["rd", "ab"], None),
                Direction::Inbound,
            ),
            (
                30,
                request(2, false, &["rd", "ab"], None),
                Direction::Inbound,
            ),
        ] {
            t.observe(&pkt(ms, dir, 9, &bytes));
        }
        let r = t.drain().remove(0);
        let ops: Vec<(&str, u64)> = r.lwm2m_ops.iter().map(|(k, v)| (*k, *v)).collect();
        assert_eq!(ops, [("observe", 1), ("register", 1), ("update", 2)]);
        let col = CSV_COLUMNS.iter().position(|c| *c == "lwm2m_ops").unwrap();
        let row = r.csv_row();
        assert_eq!(
            row.split(',').nth(col),
            Some("observe=1;register=1;update=2")
        );
    }

    #[test]
    fn handshake_outcomes_land_in_the_record_and_only_credential_failures_fail_auth() {
        let mut t = FlowTable::new(params());
        let local = SocketAddr::from(([127, 0, 0, 1], 5683));
        for (port, outcome) in [(1, "established"), (2, "bad_key"), (3, "timeout")] {
            let mut p = pkt(0, Direction::Inbound, port, &[22, 0xfe, 0xfd]);
            p.protocol = "coaps";
            p.coap = None;
            t.observe(&p);
            t.handshake(p.peer, local, "coaps", outcome, p.at);
        }
        // A handshake before any byte (a TLS session) starts its flow: a failed one is a
        // record without packets.
        let stranger = SocketAddr::from(([127, 0, 0, 9], 9));
        let at = UNIX_EPOCH + Duration::from_secs(T0);
        assert!(
            t.handshake(stranger, local, "https", "error", at)
                .is_empty()
        );
        let all = t.drain();
        assert_eq!(all.len(), 4);
        let tls = all.iter().find(|r| r.src_port == 9).unwrap();
        assert_eq!(
            (tls.protocol, tls.app_protocol, tls.dtls_handshake),
            (6, "https", "error")
        );
        assert_eq!((tls.tot_fwd_pkts, tls.tot_bwd_pkts), (0, 0));
        let by = |port: u16| all.iter().find(|r| r.src_port == port).unwrap();
        assert_eq!(
            (by(1).dtls_handshake, by(1).auth_outcome),
            ("established", "ok")
        );
        assert_eq!(
            (by(2).dtls_handshake, by(2).auth_outcome),
            ("bad_key", "failed")
        );
        assert_eq!((by(3).dtls_handshake, by(3).auth_outcome), ("timeout", ""));
        assert_eq!(
            by(1).malformed_pkts,
            0,
            "encrypted records are not malformed CoAP"
        );
    }

    #[test]
    fn coap_meta_is_total_over_any_bytes() {
        assert_eq!(CoapMeta::parse(&[]), None);
        assert_eq!(CoapMeta::parse(&[0x40, 1, 2]), None);
        assert_eq!(CoapMeta::parse(&[0x09, 1, 2, 3]), None, "version 0");
        assert_eq!(CoapMeta::parse(&[0x49, 1, 2, 3]), None, "token length 9");
        assert_eq!(
            CoapMeta::parse(&[0x70, 0x00, 0, 0]),
            Some(CoapMeta { kind: 3, code: 0 })
        );
    }
}
