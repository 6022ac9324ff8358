//! Interface capture mode (`wardgate monitor`): the monitor apart from the gateway, reading a
//! network interface or a mirrored switch port through an `AF_PACKET` socket and writing the
//! same pcapng captures and flow records as the gateway's own taps.
//!
//! Each frame is parsed ([`crate::wire`]) to its UDP datagram; a datagram to or from one of
//! `server_ports` (the gateway's CoAP and DTLS ports: 5683, 5684) is offered to the capture and
//! the flows exactly as a tap would offer it, the server side standing where the gateway's own
//! address stands (received = sent to a server port). A datagram whose first bytes are a DTLS
//! record header is `coaps`, else `coap`. Everything else (other ports, TCP, ARP, fragments) is
//! counted and skipped. There is no identity (nothing proved one to a passive observer), so
//! device filters match nothing and flows have no `device`.
//!
//! DTLS handshake outcomes are read from what the server sends in clear ([`server_verdict`]):
//! its ChangeCipherSpec means it accepted the client's proof (`established`); a fatal alert
//! before it (epoch 0, so not encrypted) names why it refused (`unknown_identity`, `bad_key`,
//! `unknown_certificate`, or the alert's class), and the credential failures count as
//! authentication failures for the anomaly detectors, as the gateway's own transport reports
//! them. A server that drops what it cannot decrypt without a word (RFC 6347 §4.1.2.7: OpenSSL
//! and libcoap do so on a wrong PSK) leaves no verdict on the wire, but the client's
//! retransmission does: a client that sends its final flight (its ChangeCipherSpec, in clear)
//! a second time with no ChangeCipherSpec or alert from the server in between was not answered,
//! and the handshake gets `finished_unanswered`, a credential failure ([`Finishes`]). A lost
//! datagram looks the same until the server's ChangeCipherSpec comes after all, which then
//! makes the flow `established` (its record keeps the last outcome; the anomaly detector has
//! counted the one failure).
//!
//! Why `pnet_datalink`: the `AF_PACKET` socket needs `unsafe` FFI that the monitor crate
//! forbids itself; `pnet_datalink` is the maintained pure-Rust wrapper (no C library to link,
//! unlike the `pcap` crate's libpcap, which would make every wardgate binary depend on
//! `libpcap.so` for a mode few sites use). It reads with a timeout, so the reader thread
//! notices a stop within [`READ_TIMEOUT`]. It needs `CAP_NET_RAW`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use wardgate_core::validate::Problems;
use wardgate_core::{PeerContext, TransportKind};

use crate::control::CaptureTap;
use crate::error::MonitorError;
use crate::filter::protocol_name;
use crate::flow_io::FlowHandle;
use crate::pcapng::Direction;
use crate::wire::{Skip, parse_ethernet};

/// How long a read waits before the reader looks at its stop flag.
pub const READ_TIMEOUT: Duration = Duration::from_millis(200);

/// `[monitor.interface]`: where `wardgate monitor` reads.
#[derive(Debug, Clone, Deserialize, PartialEq, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct InterfaceConfig {
    /// The interface (`eth1`, a mirrored port); `wardgate monitor --interface` overrides it.
    pub name: String,
    /// The gateway side's UDP ports: datagrams to them are "received", from them "sent".
    /// Default `[5683, 5684]`.
    pub server_ports: Vec<u16>,
    /// Put the interface in promiscuous mode (a mirrored port delivers frames for other MACs).
    /// Default `true`.
    pub promiscuous: bool,
}

impl Default for InterfaceConfig {
    fn default() -> Self {
        InterfaceConfig {
            name: String::new(),
            server_ports: vec![5683, 5684],
            promiscuous: true,
        }
    }
}

impl InterfaceConfig {
    /// Checks every value, reporting all problems under `at` (`monitor.interface`). The name
    /// is checked when the mode starts (it may come from the command line).
    pub fn validate(&self, at: &str, p: &mut Problems) {
        if self.server_ports.is_empty() || self.server_ports.contains(&0) {
            p.push(
                format!("{at}.server_ports"),
                "must list at least one port, none of them 0",
            );
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// The interface reader's metrics.
#[derive(Debug, Clone, Default)]
pub struct InterfaceMetrics {
    frames: Counter,
    datagrams: Counter,
    skipped: Family<ReasonLabel, Counter>,
    read_errors: Counter,
}

impl InterfaceMetrics {
    /// Registers every interface metric in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = InterfaceMetrics::default();
        registry.register(
            "wardgate_monitor_interface_frames",
            "Frames read from the monitored interface",
            m.frames.clone(),
        );
        registry.register(
            "wardgate_monitor_interface_datagrams",
            "UDP datagrams to or from a server port, offered to the capture and the flows",
            m.datagrams.clone(),
        );
        for r in ["truncated", "not_ip", "not_udp", "fragment", "other_port"] {
            let _ = m.skipped.get_or_create(&ReasonLabel { reason: r });
        }
        registry.register(
            "wardgate_monitor_interface_skipped",
            "Frames skipped, by reason",
            m.skipped.clone(),
        );
        registry.register(
            "wardgate_monitor_interface_read_errors",
            "Reads from the interface that failed",
            m.read_errors.clone(),
        );
        m
    }

    /// Datagrams offered so far.
    pub fn datagrams(&self) -> u64 {
        self.datagrams.get()
    }
}

/// Whether `payload` starts with a DTLS record header (content type 20-25, version 0xfeXX).
fn looks_like_dtls(payload: &[u8]) -> bool {
    matches!(payload, [20..=25, 0xfe, ..])
}

/// What a datagram is to the monitor: its direction, the peer's side and the server's side.
fn orient(
    src: SocketAddr,
    dst: SocketAddr,
    server_ports: &[u16],
) -> Option<(Direction, SocketAddr, SocketAddr)> {
    if server_ports.contains(&dst.port()) {
        Some((Direction::Inbound, src, dst))
    } else if server_ports.contains(&src.port()) {
        Some((Direction::Outbound, dst, src))
    } else {
        None
    }
}

/// Most handshakes whose final flight is tracked at once; beyond, all are forgotten (their
/// retransmissions then start counting again).
const MAX_FINISHES: usize = 4096;

/// Per (client, server): how often the client sent its final flight (a ChangeCipherSpec
/// record) since the server last said anything in clear about the handshake.
#[derive(Debug, Default)]
struct Finishes(std::collections::HashMap<(SocketAddr, SocketAddr), u8>);

impl Finishes {
    /// The client `peer` sent `payload` to `local`: `finished_unanswered` the second time it
    /// sends its final flight unanswered.
    fn client_sent(
        &mut self,
        peer: SocketAddr,
        local: SocketAddr,
        payload: &[u8],
    ) -> Option<&'static str> {
        if !has_change_cipher_spec(payload) {
            return None;
        }
        if self.0.len() >= MAX_FINISHES && !self.0.contains_key(&(peer, local)) {
            self.0.clear();
        }
        let n = self.0.entry((peer, local)).or_insert(0);
        *n = n.saturating_add(1);
        (*n == 2).then_some("finished_unanswered")
    }

    /// The server answered: whatever it said, the client's flight is not unanswered.
    fn server_answered(&mut self, peer: SocketAddr, local: SocketAddr) {
        self.0.remove(&(peer, local));
    }
}

/// Whether a datagram holds a ChangeCipherSpec record (type 20).
fn has_change_cipher_spec(mut datagram: &[u8]) -> bool {
    while datagram.len() >= DTLS_HEADER {
        if datagram[0] == 20 {
            return true;
        }
        let len = usize::from(u16::from_be_bytes([datagram[11], datagram[12]]));
        let Some(rest) = datagram.get(DTLS_HEADER + len..) else {
            return false;
        };
        datagram = rest;
    }
    false
}

/// Offers one frame to the capture and the flows.
fn offer(
    frame: &[u8],
    cfg: &InterfaceConfig,
    capture: Option<&CaptureTap>,
    flows: Option<&FlowHandle>,
    m: &InterfaceMetrics,
    finishes: &mut Finishes,
) {
    m.frames.inc();
    let skip = |r: &'static str| {
        m.skipped.get_or_create(&ReasonLabel { reason: r }).inc();
    };
    let d = match parse_ethernet(frame) {
        Ok(d) => d,
        Err(e) => return skip(Skip::as_str(e)),
    };
    let Some((direction, peer, local)) = orient(d.src, d.dst, &cfg.server_ports) else {
        return skip("other_port");
    };
    m.datagrams.inc();
    let kind = if looks_like_dtls(d.payload) {
        TransportKind::Dtls
    } else {
        TransportKind::Udp
    };
    let ctx = PeerContext::new(peer, kind);
    if let Some(c) = capture {
        c.offer(direction, &ctx, local, d.payload);
    }
    if let Some(f) = flows {
        let protocol = protocol_name(kind);
        f.offer(direction, &ctx, local, protocol, d.payload);
        let verdict = match (kind, direction) {
            (TransportKind::Dtls, Direction::Outbound) => {
                let verdict = server_verdict(d.payload);
                if verdict.is_some() {
                    finishes.server_answered(peer, local);
                }
                verdict
            }
            (TransportKind::Dtls, Direction::Inbound) => {
                finishes.client_sent(peer, local, d.payload)
            }
            _ => None,
        };
        if let Some(outcome) = verdict {
            f.handshake(&ctx, local, protocol, outcome);
        }
    }
}

/// A DTLS record's header length (RFC 6347 §4.1: type, version, epoch, sequence, length).
const DTLS_HEADER: usize = 13;

/// What the DTLS records of one datagram a server sent say about the client's handshake:
/// `established` for a ChangeCipherSpec (the server took the client's Finished), the reason of
/// a fatal alert sent in epoch 0 (in clear), else nothing.
fn server_verdict(mut datagram: &[u8]) -> Option<&'static str> {
    while datagram.len() >= DTLS_HEADER {
        let content_type = datagram[0];
        let epoch = u16::from_be_bytes([datagram[3], datagram[4]]);
        let len = usize::from(u16::from_be_bytes([datagram[11], datagram[12]]));
        let fragment = datagram.get(DTLS_HEADER..DTLS_HEADER + len)?;
        match (content_type, epoch, fragment) {
            (20, _, _) => return Some("established"),
            (21, 0, [2, description, ..]) => return Some(alert_reason(*description)),
            _ => {}
        }
        datagram = &datagram[DTLS_HEADER + len..];
    }
    None
}

/// The outcome label of a fatal alert (RFC 5246 §7.2, RFC 4279 §2), in the gateway's
/// transport's terms where they mean the same.
fn alert_reason(description: u8) -> &'static str {
    match description {
        115 => "unknown_identity",
        20 | 51 => "bad_key",
        42..=46 | 48 => "unknown_certificate",
        40 => "handshake_failure",
        _ => "alert",
    }
}

/// The running reader thread.
#[derive(Debug)]
pub struct InterfaceReader {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl InterfaceReader {
    /// Stops reading (within [`READ_TIMEOUT`]) and waits for the thread; the capture and flow
    /// handles it held are dropped.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        if self.thread.join().is_err() {
            tracing::error!("the interface reader thread panicked");
        }
    }
}

/// The interface, opened (an `AF_PACKET` socket, promiscuous if asked), not read yet: opening
/// first lets `wardgate monitor` fail on a missing interface or permission before it creates
/// any file.
pub struct InterfaceSource {
    cfg: InterfaceConfig,
    rx: Box<dyn pnet_datalink::DataLinkReceiver>,
}

impl std::fmt::Debug for InterfaceSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InterfaceSource")
            .field("name", &self.cfg.name)
            .finish_non_exhaustive()
    }
}

impl InterfaceSource {
    /// Opens `cfg.name`.
    pub fn open(cfg: &InterfaceConfig) -> Result<Self, MonitorError> {
        let fail = |reason: String| MonitorError::Interface {
            name: cfg.name.clone(),
            reason,
        };
        let iface = pnet_datalink::interfaces()
            .into_iter()
            .find(|i| i.name == cfg.name)
            .ok_or_else(|| fail("no such interface".into()))?;
        let config = pnet_datalink::Config {
            read_timeout: Some(READ_TIMEOUT),
            read_buffer_size: 65_536,
            promiscuous: cfg.promiscuous,
            ..pnet_datalink::Config::default()
        };
        match pnet_datalink::channel(&iface, config) {
            Ok(pnet_datalink::Channel::Ethernet(_tx, rx)) => Ok(InterfaceSource {
                cfg: cfg.clone(),
                rx,
            }),
            Ok(_) => Err(fail("not an Ethernet channel".into())),
            Err(e) => Err(fail(format!("{e} (the monitor needs CAP_NET_RAW)"))),
        }
    }

    /// Starts the reader thread, offering every datagram to `capture` and `flows`.
    pub fn start(
        self,
        capture: Option<CaptureTap>,
        flows: Option<FlowHandle>,
        metrics: InterfaceMetrics,
    ) -> Result<InterfaceReader, MonitorError> {
        let InterfaceSource { cfg, mut rx } = self;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("wardgate-iface".into())
            .spawn(move || {
                let mut finishes = Finishes::default();
                while !stopped.load(Ordering::Relaxed) {
                    match rx.next() {
                        Ok(frame) => {
                            let (c, f) = (capture.as_ref(), flows.as_ref());
                            offer(frame, &cfg, c, f, &metrics, &mut finishes);
                        }
                        Err(e) if is_timeout(&e) => {}
                        Err(e) => {
                            metrics.read_errors.inc();
                            tracing::warn!(interface = %cfg.name, error = %e, "reading the interface failed");
                            std::thread::sleep(READ_TIMEOUT);
                        }
                    }
                }
            })
            .map_err(MonitorError::Thread)?;
        Ok(InterfaceReader { stop, thread })
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{Interrupted, TimedOut, WouldBlock};
    matches!(e.kind(), TimedOut | WouldBlock | Interrupted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_are_oriented_by_the_server_ports() {
        let dev: SocketAddr = "10.0.0.2:40000".parse().unwrap();
        let gw: SocketAddr = "10.0.0.1:5683".parse().unwrap();
        let ports = [5683, 5684];
        assert_eq!(orient(dev, gw, &ports), Some((Direction::Inbound, dev, gw)));
        assert_eq!(
            orient(gw, dev, &ports),
            Some((Direction::Outbound, dev, gw))
        );
        let other: SocketAddr = "10.0.0.1:53".parse().unwrap();
        assert_eq!(orient(dev, other, &ports), None);
    }

    /// One DTLS 1.2 record: `content_type`, `epoch`, `fragment`.
    fn record(content_type: u8, epoch: u16, fragment: &[u8]) -> Vec<u8> {
        let mut r = vec![content_type, 0xfe, 0xfd];
        r.extend_from_slice(&epoch.to_be_bytes());
        r.extend_from_slice(&[0, 0, 0, 0, 0, 7]);
        r.extend_from_slice(&u16::try_from(fragment.len()).unwrap().to_be_bytes());
        r.extend_from_slice(fragment);
        r
    }

    #[test]
    fn the_server_s_clear_records_tell_how_a_handshake_ended() {
        // ServerHello flight only: nothing decided yet.
        let flight = [record(22, 0, &[2; 40]), record(22, 0, &[14, 0, 0, 0])].concat();
        assert_eq!(server_verdict(&flight), None);
        // Its Finished flight starts with a ChangeCipherSpec (and goes on encrypted).
        let done = [
            record(22, 0, &[4; 10]),
            record(20, 0, &[1]),
            record(22, 1, &[9; 40]),
        ]
        .concat();
        assert_eq!(server_verdict(&done), Some("established"));
        // Fatal alerts in clear, by description.
        for (description, reason) in [
            (115, "unknown_identity"),
            (51, "bad_key"),
            (20, "bad_key"),
            (42, "unknown_certificate"),
            (48, "unknown_certificate"),
            (40, "handshake_failure"),
            (70, "alert"),
        ] {
            assert_eq!(
                server_verdict(&record(21, 0, &[2, description])),
                Some(reason),
                "{description}"
            );
        }
        // A warning, an encrypted alert (a close_notify after the session) and a truncated
        // record say nothing.
        assert_eq!(server_verdict(&record(21, 0, &[1, 0])), None);
        assert_eq!(server_verdict(&record(21, 1, &[2, 51])), None);
        let mut cut = record(20, 0, &[1]);
        cut.truncate(DTLS_HEADER);
        assert_eq!(server_verdict(&cut), None);
        assert_eq!(server_verdict(&[]), None);
    }

    /// A client that sends its final flight again without a word from the server in between
    /// was left unanswered (how OpenSSL-based servers refuse a wrong PSK); a server verdict in
    /// between resets the count, and one handshake is reported once.
    #[test]
    fn a_final_flight_sent_twice_unanswered_is_finished_unanswered() {
        let client: SocketAddr = "10.0.0.2:40000".parse().unwrap();
        let server: SocketAddr = "10.0.0.1:5684".parse().unwrap();
        let last_flight = [
            record(22, 0, &[16; 20]),
            record(20, 0, &[1]),
            record(22, 1, &[0; 40]),
        ]
        .concat();
        let hello = record(22, 0, &[1; 60]);
        let mut f = Finishes::default();
        assert_eq!(f.client_sent(client, server, &hello), None);
        assert_eq!(f.client_sent(client, server, &last_flight), None);
        f.server_answered(client, server);
        assert_eq!(f.client_sent(client, server, &last_flight), None);
        assert_eq!(
            f.client_sent(client, server, &last_flight),
            Some("finished_unanswered")
        );
        assert_eq!(f.client_sent(client, server, &last_flight), None);
        // Another client's count is its own; cut records are not read past their end.
        let other: SocketAddr = "10.0.0.3:40000".parse().unwrap();
        assert_eq!(f.client_sent(other, server, &last_flight), None);
        let mut cut = record(22, 0, &[16; 20]);
        cut.truncate(20);
        assert!(!has_change_cipher_spec(&cut));
        assert!(!has_change_cipher_spec(&[]));
    }

    #[test]
    fn dtls_records_are_told_from_coap_by_their_header() {
        assert!(looks_like_dtls(&[22, 0xfe, 0xfd, 0, 0]));
        assert!(looks_like_dtls(&[23, 0xfe, 0xfd]));
        assert!(!looks_like_dtls(&[0x40, 0x02, 0, 1]));
        assert!(!looks_like_dtls(&[22]));
    }

    #[test]
    fn frames_are_counted_and_skipped_by_reason() {
        let m = InterfaceMetrics::default();
        let cfg = InterfaceConfig::default();
        offer(&[0u8; 10], &cfg, None, None, &m, &mut Finishes::default());
        let mut arp = vec![0u8; 12];
        arp.extend_from_slice(&[0x08, 0x06]);
        arp.extend_from_slice(&[0; 28]);
        offer(&arp, &cfg, None, None, &m, &mut Finishes::default());
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x08, 0x00]);
        let src: SocketAddr = "10.0.0.2:40000".parse().unwrap();
        f.extend_from_slice(&crate::frame::udp_packet(
            src,
            "10.0.0.1:5683".parse().unwrap(),
            &[0x40, 1, 0, 1],
        ));
        offer(&f, &cfg, None, None, &m, &mut Finishes::default());
        let get = |r: &'static str| m.skipped.get_or_create(&ReasonLabel { reason: r }).get();
        assert_eq!(
            (
                m.frames.get(),
                m.datagrams(),
                get("truncated"),
                get("not_ip")
            ),
            (3, 1, 1, 1)
        );
    }
}
