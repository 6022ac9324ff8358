//! Synthesized IPv4/IPv6 + UDP headers around a datagram, so a capture carries the real
//! 5-tuple (peer address and port, the gateway's local address and port) and tools decode it
//! as they would on the wire. Lengths and checksums are correct (the UDP checksum is computed
//! for IPv4 too, where it could be 0, so Wireshark's validation stays quiet). Pure.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

const UDP: u8 = 17;
const TTL: u8 = 64;
const IPV4_HEADER: usize = 20;
const IPV6_HEADER: usize = 40;
const UDP_HEADER: usize = 8;

/// The longest UDP payload both IP versions can describe without jumbograms.
pub const MAX_UDP_PAYLOAD: usize = 65_535 - IPV4_HEADER - UDP_HEADER;

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
    let (src, dst) = same_family(src, dst);
    let udp_len = UDP_HEADER + payload.len();
    // MAX_UDP_PAYLOAD keeps every length below within u16.
    let udp_len16 = u16::try_from(udp_len).unwrap_or(u16::MAX);
    let mut udp = Vec::with_capacity(udp_len);
    udp.extend_from_slice(&src.port().to_be_bytes());
    udp.extend_from_slice(&dst.port().to_be_bytes());
    udp.extend_from_slice(&udp_len16.to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);

    let mut pseudo = 0u32;
    let mut out;
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out = Vec::with_capacity(IPV4_HEADER + udp_len);
            let total = u16::try_from(IPV4_HEADER + udp_len).unwrap_or(u16::MAX);
            out.extend_from_slice(&[0x45, 0]);
            out.extend_from_slice(&total.to_be_bytes());
            out.extend_from_slice(&[0, 0, 0x40, 0, TTL, UDP, 0, 0]); // id 0, DF
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
            out = Vec::with_capacity(IPV6_HEADER + udp_len);
            out.extend_from_slice(&[0x60, 0, 0, 0]);
            out.extend_from_slice(&udp_len16.to_be_bytes());
            out.extend_from_slice(&[UDP, TTL]);
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
            pseudo = sum16(pseudo, &s.octets());
            pseudo = sum16(pseudo, &d.octets());
        }
    }
    pseudo = sum16(pseudo, &(udp_len as u32).to_be_bytes());
    pseudo = sum16(pseudo, &[0, UDP]);
    let csum = match fold(sum16(pseudo, &udp)) {
        0 => 0xffff, // 0 means "no checksum" (RFC 768)
        c => c,
    };
    udp[6..8].copy_from_slice(&csum.to_be_bytes());
    out.extend_from_slice(&udp);
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
