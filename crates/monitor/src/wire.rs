//! Reading frames off a network interface ([`crate::interface`]): Ethernet II (with up to two
//! 802.1Q / 802.1ad VLAN tags) → IPv4 or IPv6 → UDP, to the datagram's 5-tuple and payload.
//! Total over any bytes: a frame that is truncated, not IP, not UDP or a fragment is
//! [`Skip`]ped with the reason (a metric label), never a panic.
//!
//! Fragments are skipped rather than reassembled: CoAP keeps datagrams under the path MTU
//! (RFC 7252 §4.6, block-wise transfer for more), so a fragmented datagram on a ward LAN is
//! itself unusual; reassembly would need per-flow buffers an attacker could fill.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// A UDP datagram found in a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpDatagram<'a> {
    /// Its sender.
    pub src: SocketAddr,
    /// Its destination.
    pub dst: SocketAddr,
    /// The UDP payload (bounded by the UDP length and the bytes captured).
    pub payload: &'a [u8],
}

/// Why a frame carried no usable UDP datagram (a closed set: metric labels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Skip {
    /// Shorter than its headers say.
    Truncated,
    /// Not IPv4 or IPv6 (ARP, LLDP, …).
    NotIp,
    /// IP, but not UDP (TCP, ICMP, …).
    NotUdp,
    /// An IP fragment (see the module doc).
    Fragment,
}

impl Skip {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::Truncated => "truncated",
            Skip::NotIp => "not_ip",
            Skip::NotUdp => "not_udp",
            Skip::Fragment => "fragment",
        }
    }
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: [u16; 3] = [0x8100, 0x88a8, 0x9100];
const PROTO_UDP: u8 = 17;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// The UDP datagram of an Ethernet frame.
pub fn parse_ethernet(frame: &[u8]) -> Result<UdpDatagram<'_>, Skip> {
    let mut ethertype = u16_at(frame, 12).ok_or(Skip::Truncated)?;
    let mut at = 14;
    for _ in 0..2 {
        if !ETHERTYPE_VLAN.contains(&ethertype) {
            break;
        }
        ethertype = u16_at(frame, at + 2).ok_or(Skip::Truncated)?;
        at += 4;
    }
    let ip = frame.get(at..).ok_or(Skip::Truncated)?;
    match ethertype {
        ETHERTYPE_IPV4 => parse_ipv4(ip),
        ETHERTYPE_IPV6 => parse_ipv6(ip),
        _ => Err(Skip::NotIp),
    }
}

/// The UDP datagram of an IPv4 packet.
pub fn parse_ipv4(p: &[u8]) -> Result<UdpDatagram<'_>, Skip> {
    let first = *p.first().ok_or(Skip::Truncated)?;
    if first >> 4 != 4 {
        return Err(Skip::NotIp);
    }
    let header = usize::from(first & 0x0f) * 4;
    let total = usize::from(u16_at(p, 2).ok_or(Skip::Truncated)?);
    if header < 20 || total < header || p.len() < header {
        return Err(Skip::Truncated);
    }
    let flags_offset = u16_at(p, 6).ok_or(Skip::Truncated)?;
    // More-fragments set, or a non-zero offset.
    if flags_offset & 0x2000 != 0 || flags_offset & 0x1fff != 0 {
        return Err(Skip::Fragment);
    }
    if p.get(9) != Some(&PROTO_UDP) {
        return Err(Skip::NotUdp);
    }
    let addr = |at: usize| -> Result<IpAddr, Skip> {
        let b: [u8; 4] = p
            .get(at..at + 4)
            .and_then(|s| s.try_into().ok())
            .ok_or(Skip::Truncated)?;
        Ok(IpAddr::V4(Ipv4Addr::from(b)))
    };
    let (src, dst) = (addr(12)?, addr(16)?);
    // Ethernet pads short frames: the IP total length bounds the packet.
    let packet = p.get(..total.min(p.len())).ok_or(Skip::Truncated)?;
    parse_udp(packet.get(header..).ok_or(Skip::Truncated)?, src, dst)
}

/// The UDP datagram of an IPv6 packet (hop-by-hop, routing and destination-options extension
/// headers are walked; a fragment header skips the packet).
pub fn parse_ipv6(p: &[u8]) -> Result<UdpDatagram<'_>, Skip> {
    let first = *p.first().ok_or(Skip::Truncated)?;
    if first >> 4 != 6 {
        return Err(Skip::NotIp);
    }
    let payload_len = usize::from(u16_at(p, 4).ok_or(Skip::Truncated)?);
    let addr = |at: usize| -> Result<IpAddr, Skip> {
        let b: [u8; 16] = p
            .get(at..at + 16)
            .and_then(|s| s.try_into().ok())
            .ok_or(Skip::Truncated)?;
        Ok(IpAddr::V6(Ipv6Addr::from(b)))
    };
    let (src, dst) = (addr(8)?, addr(24)?);
    let packet = p
        .get(..(40 + payload_len).min(p.len()))
        .ok_or(Skip::Truncated)?;
    let mut next = *p.get(6).ok_or(Skip::Truncated)?;
    let mut at = 40;
    // At most a handful of extension headers; more is not a sensor's traffic.
    for _ in 0..8 {
        match next {
            PROTO_UDP => return parse_udp(packet.get(at..).ok_or(Skip::Truncated)?, src, dst),
            0 | 43 | 60 => {
                next = *packet.get(at).ok_or(Skip::Truncated)?;
                let len = (usize::from(*packet.get(at + 1).ok_or(Skip::Truncated)?) + 1) * 8;
                at += len;
            }
            44 => return Err(Skip::Fragment),
            _ => return Err(Skip::NotUdp),
        }
    }
    Err(Skip::NotUdp)
}

fn parse_udp(u: &[u8], src: IpAddr, dst: IpAddr) -> Result<UdpDatagram<'_>, Skip> {
    let sport = u16_at(u, 0).ok_or(Skip::Truncated)?;
    let dport = u16_at(u, 2).ok_or(Skip::Truncated)?;
    let len = usize::from(u16_at(u, 4).ok_or(Skip::Truncated)?);
    if len < 8 {
        return Err(Skip::Truncated);
    }
    // A snapped frame keeps what it has; the UDP length bounds the payload otherwise.
    let payload = u.get(8..len.min(u.len())).ok_or(Skip::Truncated)?;
    Ok(UdpDatagram {
        src: SocketAddr::new(src, sport),
        dst: SocketAddr::new(dst, dport),
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame;

    fn ether(ethertype: u16, body: &[u8]) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(body);
        f
    }

    /// A CoAP CON POST with a payload.
    const COAP: &[u8] = &[0x40, 0x02, 0x12, 0x34, 0xff, b'3', b'6'];

    #[test]
    fn ipv4_and_ipv6_udp_in_ethernet_with_and_without_vlan_tags() {
        let src: SocketAddr = "10.1.2.3:40000".parse().unwrap();
        let dst: SocketAddr = "10.1.2.1:5683".parse().unwrap();
        let ip = frame::udp_packet(src, dst, COAP);
        let f = ether(ETHERTYPE_IPV4, &ip);
        let d = parse_ethernet(&f).unwrap();
        assert_eq!((d.src, d.dst, d.payload), (src, dst, COAP));
        // Ethernet pads to 60 bytes: the padding is not payload.
        let mut padded = ether(ETHERTYPE_IPV4, &ip);
        padded.resize(80, 0);
        assert_eq!(parse_ethernet(&padded).unwrap().payload, COAP);
        // Two VLAN tags.
        let mut tagged = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
        tagged.extend_from_slice(&[0x88, 0xa8, 0, 10, 0x81, 0x00, 0, 20, 0x08, 0x00]);
        tagged.extend_from_slice(&ip);
        assert_eq!(parse_ethernet(&tagged).unwrap().payload, COAP);

        let src6: SocketAddr = "[fd00::3]:40000".parse().unwrap();
        let dst6: SocketAddr = "[fd00::1]:5684".parse().unwrap();
        let ip6 = frame::udp_packet(src6, dst6, COAP);
        let f6 = ether(ETHERTYPE_IPV6, &ip6);
        let d = parse_ethernet(&f6).unwrap();
        assert_eq!((d.src, d.dst, d.payload), (src6, dst6, COAP));
    }

    #[test]
    fn not_ip_not_udp_fragments_and_truncation_are_skipped_with_their_reason() {
        let src: SocketAddr = "10.1.2.3:40000".parse().unwrap();
        let dst: SocketAddr = "10.1.2.1:5683".parse().unwrap();
        let ip = frame::udp_packet(src, dst, COAP);
        assert_eq!(parse_ethernet(&ether(0x0806, &[0; 28])), Err(Skip::NotIp));
        let mut tcp = ip.clone();
        tcp[9] = 6;
        assert_eq!(
            parse_ethernet(&ether(ETHERTYPE_IPV4, &tcp)),
            Err(Skip::NotUdp)
        );
        let mut frag = ip.clone();
        frag[6] = 0x20; // more fragments
        assert_eq!(
            parse_ethernet(&ether(ETHERTYPE_IPV4, &frag)),
            Err(Skip::Fragment)
        );
        for cut in 0..(14 + 28) {
            let f = ether(ETHERTYPE_IPV4, &ip);
            assert_eq!(
                parse_ethernet(&f[..cut]),
                Err(Skip::Truncated),
                "cut at {cut}"
            );
        }
        // A snapped frame: the payload is what was captured.
        let f = ether(ETHERTYPE_IPV4, &ip);
        assert_eq!(
            parse_ethernet(&f[..f.len() - 2]).unwrap().payload,
            &COAP[..COAP.len() - 2]
        );
    }

    #[test]
    fn any_bytes_parse_or_skip_without_a_panic() {
        // A cheap deterministic generator (no dependency): every length up to 200, many seeds,
        // with plausible headers planted so the deeper parsers run too.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..200usize {
            for plant in 0..40u8 {
                let mut f: Vec<u8> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect();
                if len > 14 {
                    let t = if plant % 2 == 0 {
                        ETHERTYPE_IPV4
                    } else {
                        ETHERTYPE_IPV6
                    };
                    f[12..14].copy_from_slice(&t.to_be_bytes());
                    f[14] = if plant % 2 == 0 { 0x45 } else { 0x60 };
                }
                if len > 23 && plant % 3 == 0 {
                    f[23] = PROTO_UDP;
                    f[20] = 6;
                }
                let _ = parse_ethernet(&f);
            }
        }
    }
}
