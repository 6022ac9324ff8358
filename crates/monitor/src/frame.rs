//! Synthesized IPv4/IPv6 + UDP (or TCP) headers around a datagram (or a stream segment), so a
//! capture carries the real 5-tuple (peer address and port, the gateway's local address and
//! port) and tools decode it as they would on the wire. Lengths and checksums are correct (the
//! UDP checksum is computed for IPv4 too, where it could be 0, so Wireshark's validation stays
//! quiet). Pure.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

const UDP: u8 = 17;
const TCP: u8 = 6;
const TTL: u8 = 64;
const IPV4_HEADER: usize = 20;
const IPV6_HEADER: usize = 40;
const UDP_HEADER: usize = 8;
const TCP_HEADER: usize = 20;
/// TCP flags of a synthesized segment: PSH and ACK (data on an established connection).
const TCP_PSH_ACK: u8 = 0x18;

/// The longest UDP payload both IP versions can describe without jumbograms.
pub const MAX_UDP_PAYLOAD: usize = 65_535 - IPV4_HEADER - UDP_HEADER;
/// The longest TCP segment payload both IP versions can describe.
pub const MAX_TCP_PAYLOAD: usize = 65_535 - IPV4_HEADER - TCP_HEADER;

/// Both ends in one family: an IPv4-mapped IPv6 address becomes IPv4; if the families still
/// differ (an IPv4 peer on a dual-stack socket), the IPv4 one is mapped into IPv6.
fn same_family(a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    let canon = |s: SocketAddr| SocketAddr::new(s.ip().to_canonical(), s.port());
    let (a, b) = (canon(a), canon(b));
    let v6 = |s: SocketAddr| match s.ip() {
        IpAddr::V4(v4) => SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), s.port()),
        IpAddr::V6(_) => s,
    };
    if a.is_ipv4() == b.is_ipv4() {
        (a, b)
    } else {
        (v6(a), v6(b))
    }
}

/// Ones' complement sum of `data` as big-endian 16-bit words, added to `acc`.
fn sum16(mut acc: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u32::from(u16::from_be_bytes([c[0], c[1]]));
        acc = (acc & 0xffff) + (acc >> 16);
    }
    if let [last] = chunks.remainder() {
        acc += u32::from(*last) << 8;
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// An IP packet (LINKTYPE_RAW) holding one UDP datagram from `src` to `dst` with `payload`
/// (cut at [`MAX_UDP_PAYLOAD`]).
pub fn udp_packet(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let payload = &payload[..payload.len().min(MAX_UDP_PAYLOAD)];
    let udp_len = UDP_HEADER + payload.len();
    // MAX_UDP_PAYLOAD keeps every length below within u16.
    let udp_len16 = u16::try_from(udp_len).unwrap_or(u16::MAX);
    let mut udp = Vec::with_capacity(udp_len);
    udp.extend_from_slice(&src.port().to_be_bytes());
    udp.extend_from_slice(&dst.port().to_be_bytes());
    udp.extend_from_slice(&udp_len16.to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    ip_packet(src, dst, UDP, udp, 6)
}

/// An IP packet (LINKTYPE_RAW) holding one TCP segment (PSH, ACK) from `src` to `dst` with
/// sequence number `seq`, acknowledging `ack`, carrying `payload` (cut at
/// [`MAX_TCP_PAYLOAD`]).
pub fn tcp_packet(src: SocketAddr, dst: SocketAddr, seq: u32, ack: u32, payload: &[u8]) -> Vec<u8> {
    let payload = &payload[..payload.len().min(MAX_TCP_PAYLOAD)];
    let mut tcp = Vec::with_capacity(TCP_HEADER + payload.len());
    tcp.extend_from_slice(&src.port().to_be_bytes());
    tcp.extend_from_slice(&dst.port().to_be_bytes());
    tcp.extend_from_slice(&seq.to_be_bytes());
    tcp.extend_from_slice(&ack.to_be_bytes());
    // Data offset 5 words, no options; a 64 KiB window; checksum and urgent pointer 0.
    tcp.extend_from_slice(&[
        (TCP_HEADER as u8 / 4) << 4,
        TCP_PSH_ACK,
        0xff,
        0xff,
        0,
        0,
        0,
        0,
    ]);
    tcp.extend_from_slice(payload);
    ip_packet(src, dst, TCP, tcp, 16)
}

/// `segment` (a UDP or TCP header and payload, its checksum field at `checksum_at` zero) in an
/// IPv4 or IPv6 header from `src` to `dst`, with the transport checksum over the pseudo-header
/// filled in. The segment is at most 65,535 - 20 bytes long.
fn ip_packet(
    src: SocketAddr,
    dst: SocketAddr,
    protocol: u8,
    mut segment: Vec<u8>,
    checksum_at: usize,
) -> Vec<u8> {
    let (src, dst) = same_family(src, dst);
    let len = segment.len();
    let len16 = u16::try_from(len).unwrap_or(u16::MAX);
    let mut pseudo = 0u32;
    let mut out;
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out = Vec::with_capacity(IPV4_HEADER + len);
            let total = u16::try_from(IPV4_HEADER + len).unwrap_or(u16::MAX);
            out.extend_from_slice(&[0x45, 0]);
            out.extend_from_slice(&total.to_be_bytes());
            out.extend_from_slice(&[0, 0, 0x40, 0, TTL, protocol, 0, 0]); // id 0, DF
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
            let csum = fold(sum16(0, &out[..IPV4_HEADER]));
            out[10..12].copy_from_slice(&csum.to_be_bytes());
            pseudo = sum16(pseudo, &s.octets());
            pseudo = sum16(pseudo, &d.octets());
        }
        (s, d) => {
            let s = as_v6(s);
            let d = as_v6(d);
            out = Vec::with_capacity(IPV6_HEADER + len);
            out.extend_from_slice(&[0x60, 0, 0, 0]);
            out.extend_from_slice(&len16.to_be_bytes());
            out.extend_from_slice(&[protocol, TTL]);
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
            pseudo = sum16(pseudo, &s.octets());
            pseudo = sum16(pseudo, &d.octets());
        }
    }
    pseudo = sum16(pseudo, &(len as u32).to_be_bytes());
    pseudo = sum16(pseudo, &[0, protocol]);
    let csum = match fold(sum16(pseudo, &segment)) {
        0 if protocol == UDP => 0xffff, // 0 means "no checksum" (RFC 768)
        c => c,
    };
    segment[checksum_at..checksum_at + 2].copy_from_slice(&csum.to_be_bytes());
    out.extend_from_slice(&segment);
    out
}

fn as_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V6(v6) => v6,
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
    }
}

/// The unspecified address of `addr`'s family (for a listener bound to a wildcard).
pub fn unspecified_like(addr: SocketAddr) -> IpAddr {
    if addr.is_ipv4() {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// Verifying a checksum: the sum over the data including the checksum folds to 0.
    fn verifies(acc: u32, data: &[u8]) -> bool {
        fold(sum16(acc, data)) == 0
    }

    #[test]
    fn ipv4_packet_has_the_real_five_tuple_lengths_and_checksums() {
        let p = udp_packet(addr("192.0.2.7:40000"), addr("10.0.0.1:5683"), b"hello");
        assert_eq!(p.len(), 20 + 8 + 5);
        assert_eq!(p[0], 0x45);
        assert_eq!(u16::from_be_bytes([p[2], p[3]]), 33, "IPv4 total length");
        assert_eq!(p[9], 17, "protocol UDP");
        assert_eq!(&p[12..16], &[192, 0, 2, 7]);
        assert_eq!(&p[16..20], &[10, 0, 0, 1]);
        assert!(verifies(0, &p[..20]), "IPv4 header checksum");
        assert_eq!(u16::from_be_bytes([p[20], p[21]]), 40000);
        assert_eq!(u16::from_be_bytes([p[22], p[23]]), 5683);
        assert_eq!(u16::from_be_bytes([p[24], p[25]]), 13, "UDP length");
        let mut pseudo = sum16(0, &p[12..20]);
        pseudo = sum16(pseudo, &[0, 17, 0, 13]);
        assert!(verifies(pseudo, &p[20..]), "UDP checksum");
        assert_eq!(&p[28..], b"hello");
    }

    #[test]
    fn ipv6_packet_has_payload_length_and_a_mandatory_udp_checksum() {
        let p = udp_packet(addr("[2001:db8::1]:5683"), addr("[fe80::2]:61000"), b"abc");
        assert_eq!(p.len(), 40 + 8 + 3);
        assert_eq!(p[0] >> 4, 6);
        assert_eq!(u16::from_be_bytes([p[4], p[5]]), 11, "payload length");
        assert_eq!(p[6], 17);
        let csum = u16::from_be_bytes([p[46], p[47]]);
        assert_ne!(csum, 0, "IPv6 UDP checksum is mandatory");
        let mut pseudo = sum16(0, &p[8..40]);
        pseudo = sum16(pseudo, &[0, 0, 0, 11, 0, 0, 0, 17]);
        assert!(
            verifies(pseudo, &p[40..]),
            "UDP checksum over the pseudo-header"
        );
    }

    #[test]
    fn mixed_families_become_one_family() {
        let p = udp_packet(addr("[::ffff:192.0.2.1]:1"), addr("10.0.0.1:2"), b"");
        assert_eq!(p[0], 0x45, "a mapped address is written as IPv4");
        let p = udp_packet(addr("192.0.2.1:1"), addr("[2001:db8::1]:2"), b"");
        assert_eq!(p[0] >> 4, 6, "an IPv4 peer on an IPv6 socket is mapped");
    }

    #[test]
    fn an_oversized_payload_is_cut_to_what_the_headers_can_describe() {
        let big = vec![7u8; MAX_UDP_PAYLOAD + 100];
        let p = udp_packet(addr("192.0.2.1:1"), addr("10.0.0.1:2"), &big);
        assert_eq!(p.len(), 65_535);
        assert_eq!(u16::from_be_bytes([p[2], p[3]]), 65_535);
    }

    #[test]
    fn a_tcp_segment_has_ports_sequence_numbers_flags_and_a_valid_checksum() {
        for (src, dst) in [
            ("192.0.2.7:40000", "10.0.0.1:8443"),
            ("[2001:db8::1]:40000", "[2001:db8::2]:8443"),
        ] {
            let p = tcp_packet(addr(src), addr(dst), 1001, 77, b"abcde");
            let (ip, pseudo_addrs) = if p[0] >> 4 == 4 {
                assert!(verifies(0, &p[..20]), "IPv4 header checksum");
                assert_eq!(p[9], 6, "protocol TCP");
                (20, sum16(0, &p[12..20]))
            } else {
                assert_eq!(p[6], 6, "next header TCP");
                assert_eq!(u16::from_be_bytes([p[4], p[5]]), 25);
                (40, sum16(0, &p[8..40]))
            };
            let t = &p[ip..];
            assert_eq!(t.len(), 25);
            assert_eq!(u16::from_be_bytes([t[0], t[1]]), 40000);
            assert_eq!(u16::from_be_bytes([t[2], t[3]]), 8443);
            assert_eq!(u32::from_be_bytes([t[4], t[5], t[6], t[7]]), 1001);
            assert_eq!(u32::from_be_bytes([t[8], t[9], t[10], t[11]]), 77);
            assert_eq!((t[12] >> 4, t[13]), (5, 0x18), "data offset, PSH+ACK");
            let pseudo = sum16(pseudo_addrs, &[0, 0, 0, 25, 0, 0, 0, 6]);
            assert!(verifies(pseudo, t), "TCP checksum over the pseudo-header");
            assert_eq!(&t[20..], b"abcde");
        }
        let big = vec![1u8; MAX_TCP_PAYLOAD + 10];
        let p = tcp_packet(addr("192.0.2.1:1"), addr("10.0.0.1:2"), 0, 0, &big);
        assert_eq!(p.len(), 65_535);
    }

    #[test]
    fn odd_lengths_checksum_with_a_zero_pad_byte() {
        for n in 0..6 {
            let payload = vec![0xabu8; n];
            let p = udp_packet(addr("192.0.2.1:9"), addr("192.0.2.2:10"), &payload);
            let len = u16::try_from(8 + n).unwrap().to_be_bytes();
            let mut pseudo = sum16(0, &p[12..20]);
            pseudo = sum16(pseudo, &[0, 17, len[0], len[1]]);
            assert!(verifies(pseudo, &p[20..]), "n = {n}");
        }
    }
}
