//! The subscriber's broker session as the traffic monitor sees it: the session's metadata,
//! through [`DatagramTap::stream`] like the HTTPS ingest's sessions. Each MQTT packet the
//! subscriber sends or receives is one "segment" of its size (CONNECT, CONNACK, SUBSCRIBE,
//! SUBACK, PUBLISH, PUBACK, PINGREQ, PINGRESP, DISCONNECT), at the time rumqttc hands the event
//! over; the monitor makes flow records of them (`app_protocol` `mqtt` / `mqtts`) and, when a
//! capture records, TCP segments of those sizes whose bytes are zero (a PUBLISH carries patient
//! data, a CONNECT the broker password). Sizes are of the MQTT packets, so over TLS they leave
//! out the TLS records' overhead, and several packets rumqttc writes at once are still several
//! segments.
//!
//! **The 5-tuple.** rumqttc owns the socket and does not show its addresses, so once the
//! broker accepted the connection (CONNACK) the session's addresses are read from the kernel:
//! the established TCP sockets of this network namespace (`/proc/self/net/tcp{,6}`) that belong
//! to this process (`/proc/self/fd`) and lead to the broker's port on one of the addresses its
//! name resolves to, leaving out those that existed before the subscriber began to connect.
//! When several remain (another component of this gateway connected to the same broker at the
//! same moment), the newest socket (highest inode) is taken. When none does (no `/proc`), the
//! session is not tapped and that is logged once.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use wardgate_core::{DatagramTap, PeerContext};

/// The tap and what it knows of the current connection.
pub(crate) struct SessionTap {
    tap: Arc<dyn DatagramTap>,
    /// The broker (with the identity it proved) and our address, while connected.
    session: Option<(PeerContext, SocketAddr)>,
    /// The CONNECT packet's size (it is sent before rumqttc reports anything).
    connect_size: usize,
    /// The SUBSCRIBE packet's size (rumqttc reports only its packet id).
    subscribe_size: usize,
    /// Sockets to the broker that existed when the subscriber began to connect: not ours.
    before: HashSet<u64>,
    warned: bool,
}

impl SessionTap {
    pub(crate) fn new(
        tap: Arc<dyn DatagramTap>,
        connect_size: usize,
        subscribe_size: usize,
    ) -> Self {
        SessionTap {
            tap,
            session: None,
            connect_size,
            subscribe_size,
            before: HashSet::new(),
            warned: false,
        }
    }

    /// The subscriber is about to connect to `port` on one of `addresses`: the sockets to it
    /// that exist now belong to someone else.
    pub(crate) fn connecting(&mut self, port: u16, addresses: &[IpAddr]) {
        self.session = None;
        self.before = connections(port, addresses)
            .into_iter()
            .map(|c| c.0)
            .collect();
    }

    /// The broker accepted a connection: find its addresses, then report the CONNECT and the
    /// CONNACK. `broker`: the broker as the subscriber knows it (its port, the addresses its
    /// name resolves to, its proven identity).
    pub(crate) fn connected(&mut self, broker: &PeerContext, addresses: &[IpAddr]) {
        self.session = None;
        let newest = connections(broker.addr.port(), addresses)
            .into_iter()
            .filter(|c| !self.before.contains(&c.0))
            .max_by_key(|c| c.0);
        match newest {
            Some((_, local, remote)) => {
                let mut peer = broker.clone();
                peer.addr = remote;
                self.session = Some((peer, local));
                self.packet(false, self.connect_size);
                self.packet(true, CONNACK);
            }
            None if !self.warned => {
                self.warned = true;
                tracing::warn!(broker = %broker.addr, "the MQTT subscriber's connection was not found in /proc; its session is not in the capture or the flow records");
            }
            None => {}
        }
    }

    /// One MQTT packet of `size` bytes received (`inbound`) or sent.
    pub(crate) fn packet(&self, inbound: bool, size: usize) {
        if let Some((peer, local)) = &self.session {
            self.tap.stream(inbound, peer, *local, size);
        }
    }

    /// The SUBSCRIBE went out.
    pub(crate) fn subscribed(&self) {
        self.packet(false, self.subscribe_size);
    }

    /// The connection ended.
    pub(crate) fn closed(&mut self) {
        self.session = None;
    }
}

/// CONNACK, PUBACK: a 2-byte fixed header and 2 bytes.
pub(crate) const CONNACK: usize = 4;
pub(crate) const PUBACK: usize = 4;
/// PINGREQ, PINGRESP, DISCONNECT: the fixed header alone.
pub(crate) const EMPTY: usize = 2;

/// The size of a packet whose variable part is `remaining` bytes (MQTT 3.1.1 §2.2.3: the
/// remaining length takes one byte per 7 bits).
pub(crate) fn packet_size(remaining: usize) -> usize {
    let len_bytes = match remaining {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    };
    1 + len_bytes + remaining
}

/// MQTT 3.1.1 §3.1: CONNECT with protocol name, level, flags, keep-alive, the client id, and
/// the user name and password when set (the subscriber sends no will).
pub(crate) fn connect_size(client_id: &str, credentials: Option<(&str, &str)>) -> usize {
    let mut remaining = 10 + 2 + client_id.len();
    if let Some((user, password)) = credentials {
        remaining += 2 + user.len() + 2 + password.len();
    }
    packet_size(remaining)
}

/// MQTT 3.1.1 §3.8: SUBSCRIBE with its packet id and each filter with its QoS byte.
pub(crate) fn subscribe_size<'a>(filters: impl Iterator<Item = &'a str>) -> usize {
    packet_size(2 + filters.map(|f| 2 + f.len() + 1).sum::<usize>())
}

/// MQTT 3.1.1 §3.9: SUBACK with its packet id and a return code per filter.
pub(crate) fn suback_size(codes: usize) -> usize {
    packet_size(2 + codes)
}

/// This process's established TCP connections to `port` on one of `addresses` (any address
/// when empty): (inode, local, remote).
fn connections(port: u16, addresses: &[IpAddr]) -> Vec<(u64, SocketAddr, SocketAddr)> {
    let inodes = own_socket_inodes();
    let canonical = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
    let mut found = Vec::new();
    for (file, v6) in [("/proc/self/net/tcp", false), ("/proc/self/net/tcp6", true)] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for s in parse_proc_net_tcp(&text, v6) {
            let wanted = s.established
                && s.remote.port() == port
                && inodes.contains(&s.inode)
                && (addresses.is_empty()
                    || addresses
                        .iter()
                        .any(|a| a.to_canonical() == s.remote.ip().to_canonical()));
            if wanted {
                found.push((s.inode, canonical(s.local), canonical(s.remote)));
            }
        }
    }
    found
}

/// The inodes of this process's sockets (`/proc/self/fd/N` → `socket:[INODE]`).
fn own_socket_inodes() -> HashSet<u64> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return HashSet::new();
    };
    dir.filter_map(|e| {
        let target = std::fs::read_link(e.ok()?.path()).ok()?;
        let t = target.to_str()?;
        t.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
    })
    .collect()
}

#[derive(Debug, PartialEq, Eq)]
struct ProcSocket {
    local: SocketAddr,
    remote: SocketAddr,
    established: bool,
    inode: u64,
}

/// The sockets of `/proc/net/tcp` (or `tcp6`, `v6`): `sl local rem st tx:rx tr:when retr uid
/// timeout inode ...`, addresses as the kernel's native-endian 32-bit words in hex. Lines that
/// do not parse are skipped.
fn parse_proc_net_tcp(text: &str, v6: bool) -> Vec<ProcSocket> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            Some(ProcSocket {
                local: proc_addr(f.get(1)?, v6)?,
                remote: proc_addr(f.get(2)?, v6)?,
                established: *f.get(3)? == "01",
                inode: f.get(9)?.parse().ok()?,
            })
        })
        .collect()
}

fn proc_addr(field: &str, v6: bool) -> Option<SocketAddr> {
    let (ip, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let hex = ip.get(i * 8..i * 8 + 8)?;
        Some(u32::from_str_radix(hex, 16).ok()?.to_ne_bytes())
    };
    let ip = if v6 {
        if ip.len() != 32 {
            return None;
        }
        let mut b = [0u8; 16];
        for i in 0..4 {
            b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
        }
        IpAddr::V6(Ipv6Addr::from(b))
    } else {
        if ip.len() != 8 {
            return None;
        }
        IpAddr::V4(Ipv4Addr::from(word(0)?))
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_tcp_lines_parse_to_addresses_state_and_inode() {
        // 127.0.0.1:1883 ← 127.0.0.1:40000, established; a listener; a malformed line.
        let native = |b: [u8; 4]| format!("{:08X}", u32::from_ne_bytes(b));
        let lo = native([127, 0, 0, 1]);
        let text = format!(
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
             0: {lo}:9C40 {lo}:075B 01 00000000:00000000 00:00000000 00000000     0        0 4242 1 0 20 4 30 10 -1\n\
             1: {zero}:075B {zero}:0000 0A 00000000:00000000 00:00000000 00000000     0        0 17 1 0 100 0 0 10 0\n\
             2: nonsense\n",
            zero = native([0, 0, 0, 0]),
        );
        let sockets = parse_proc_net_tcp(&text, false);
        assert_eq!(
            sockets,
            [
                ProcSocket {
                    local: "127.0.0.1:40000".parse().unwrap(),
                    remote: "127.0.0.1:1883".parse().unwrap(),
                    established: true,
                    inode: 4242,
                },
                ProcSocket {
                    local: "0.0.0.0:1883".parse().unwrap(),
                    remote: "0.0.0.0:0".parse().unwrap(),
                    established: false,
                    inode: 17,
                },
            ]
        );
        let v6 = [[0u8, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]]
            .map(native)
            .concat();
        let text = format!("header\n0: {v6}:0050 {v6}:1F90 01 0:0 0:0 0 0 0 99 1\n");
        let s = &parse_proc_net_tcp(&text, true)[0];
        assert_eq!(s.local, "[::1]:80".parse().unwrap());
        assert_eq!(s.remote, "[::1]:8080".parse().unwrap());
    }

    #[derive(Debug, Default)]
    struct Recorder(std::sync::Mutex<Vec<(bool, SocketAddr, SocketAddr, usize)>>);

    impl DatagramTap for Recorder {
        fn datagram(&self, _: bool, _: &PeerContext, _: SocketAddr, _: &[u8]) {}
        fn stream(&self, inbound: bool, peer: &PeerContext, local: SocketAddr, len: usize) {
            self.0
                .lock()
                .unwrap()
                .push((inbound, peer.addr, local, len));
        }
    }

    /// The session's socket is this process's new connection to the broker's port and
    /// address, not one that was there before the subscriber began to connect.
    #[test]
    fn the_session_is_the_new_connection_to_the_broker() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let lo: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap()];
        let other = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let recorder = Arc::new(Recorder::default());
        let mut t = SessionTap::new(recorder.clone(), 18, 23);
        t.connecting(port, &lo);
        let ours = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let broker = PeerContext::new(
            SocketAddr::from(([127, 0, 0, 1], port)),
            wardgate_core::TransportKind::Tcp,
        );
        t.connected(&broker, &lo);
        t.subscribed();
        t.packet(true, 40);
        t.closed();
        t.packet(true, 40); // after the end: not shown
        let (local, remote) = (ours.local_addr().unwrap(), ours.peer_addr().unwrap());
        assert_eq!(
            *recorder.0.lock().unwrap(),
            [
                (false, remote, local, 18),
                (true, remote, local, CONNACK),
                (false, remote, local, 23),
                (true, remote, local, 40),
            ]
        );
        assert_ne!(other.local_addr().unwrap(), local);
        assert!(connections(port, &["192.0.2.1".parse().unwrap()]).is_empty());
    }

    #[test]
    fn packet_sizes_follow_mqtt_3_1_1() {
        assert_eq!(packet_size(0), 2);
        assert_eq!(packet_size(127), 129);
        assert_eq!(packet_size(128), 131);
        // "MQTT" 4, level, flags, keep-alive: 10; client id "ward" with its length: 6.
        assert_eq!(connect_size("ward", None), 18);
        assert_eq!(connect_size("ward", Some(("u", "pw"))), 25);
        assert_eq!(subscribe_size(["wards/+/readings"].into_iter()), 23);
        assert_eq!(suback_size(1), 5);
    }
}
