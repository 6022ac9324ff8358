//! The three pcapng blocks a capture needs (draft-ietf-opsawg-pcapng): Section Header,
//! Interface Description and Enhanced Packet, little-endian, each padded to 32 bits and
//! ending with its total length repeated. Pure: bytes out, no I/O.

/// `LINKTYPE_RAW`: each packet starts with its IPv4 or IPv6 header (no link layer to invent).
pub const LINKTYPE_RAW: u16 = 101;

const SHB: u32 = 0x0A0D_0D0A;
const IDB: u32 = 0x0000_0001;
const EPB: u32 = 0x0000_0006;
const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;

const OPT_END: u16 = 0;
const OPT_COMMENT: u16 = 1;
const SHB_USERAPPL: u16 = 4;
const IF_NAME: u16 = 2;
const IF_TSRESOL: u16 = 9;
const EPB_FLAGS: u16 = 2;

/// Timestamps are written in nanoseconds since the Unix epoch (`if_tsresol` = 9).
pub const TSRESOL_NANOS: u8 = 9;

/// Which way a packet went, from the gateway's point of view (`epb_flags` bits 0-1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// A datagram the gateway received.
    Inbound,
    /// A datagram the gateway sent.
    Outbound,
}

impl Direction {
    /// `Inbound` when the gateway received it, else `Outbound` (the taps' `inbound` flag).
    pub fn of(inbound: bool) -> Direction {
        if inbound {
            Direction::Inbound
        } else {
            Direction::Outbound
        }
    }
}

fn pad4(n: usize) -> usize {
    (4 - n % 4) % 4
}

fn put_option(out: &mut Vec<u8>, code: u16, value: &[u8]) {
    // Option values longer than u16::MAX are cut: they are names and comments we generate.
    let value = &value[..value.len().min(usize::from(u16::MAX))];
    out.extend_from_slice(&code.to_le_bytes());
    out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    out.extend_from_slice(value);
    out.resize(out.len() + pad4(value.len()), 0);
}

/// Wraps `body` (everything between the length fields) as a block of `kind`.
fn block(kind: u32, body: &[u8]) -> Vec<u8> {
    let total = 12 + body.len();
    let total32 = u32::try_from(total).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(&total32.to_le_bytes());
    out.extend_from_slice(body);
    out.extend_from_slice(&total32.to_le_bytes());
    out
}

/// A Section Header Block (version 1.0, section length unknown) naming the writing application.
pub fn section_header(user_appl: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(64);
    body.extend_from_slice(&BYTE_ORDER_MAGIC.to_le_bytes());
    body.extend_from_slice(&1u16.to_le_bytes());
    body.extend_from_slice(&0u16.to_le_bytes());
    body.extend_from_slice(&(-1i64).to_le_bytes());
    put_option(&mut body, SHB_USERAPPL, user_appl.as_bytes());
    put_option(&mut body, OPT_END, &[]);
    block(SHB, &body)
}

/// An Interface Description Block: `linktype`, no snap length, nanosecond timestamps.
pub fn interface_description(linktype: u16, name: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(48);
    body.extend_from_slice(&linktype.to_le_bytes());
    body.extend_from_slice(&0u16.to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes());
    put_option(&mut body, IF_NAME, name.as_bytes());
    put_option(&mut body, IF_TSRESOL, &[TSRESOL_NANOS]);
    put_option(&mut body, OPT_END, &[]);
    block(IDB, &body)
}

/// An Enhanced Packet Block on interface 0: `data` as captured, `original_len` as it was on
/// the wire, the direction in `epb_flags`, and an optional comment (the proven identity).
pub fn enhanced_packet(
    timestamp_nanos: u64,
    data: &[u8],
    original_len: usize,
    direction: Direction,
    comment: Option<&str>,
) -> Vec<u8> {
    let mut body = Vec::with_capacity(20 + data.len() + 4 + 32);
    body.extend_from_slice(&0u32.to_le_bytes());
    body.extend_from_slice(&((timestamp_nanos >> 32) as u32).to_le_bytes());
    body.extend_from_slice(&(timestamp_nanos as u32).to_le_bytes());
    let cap = u32::try_from(data.len()).unwrap_or(u32::MAX);
    body.extend_from_slice(&cap.to_le_bytes());
    let orig = u32::try_from(original_len.max(data.len())).unwrap_or(u32::MAX);
    body.extend_from_slice(&orig.to_le_bytes());
    body.extend_from_slice(data);
    body.resize(body.len() + pad4(data.len()), 0);
    let flags: u32 = match direction {
        Direction::Inbound => 0b01,
        Direction::Outbound => 0b10,
    };
    put_option(&mut body, EPB_FLAGS, &flags.to_le_bytes());
    if let Some(c) = comment {
        put_option(&mut body, OPT_COMMENT, c.as_bytes());
    }
    put_option(&mut body, OPT_END, &[]);
    block(EPB, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }

    fn assert_well_framed(b: &[u8], kind: u32) {
        assert_eq!(u32_at(b, 0), kind);
        let total = u32_at(b, 4) as usize;
        assert_eq!(total, b.len(), "total length field");
        assert_eq!(total % 4, 0, "32-bit aligned");
        assert_eq!(u32_at(b, total - 4) as usize, total, "trailing length");
    }

    #[test]
    fn section_header_has_the_byte_order_magic_version_1_0_and_unknown_length() {
        let b = section_header("wardgate test");
        assert_well_framed(&b, SHB);
        assert_eq!(u32_at(&b, 8), BYTE_ORDER_MAGIC);
        assert_eq!(&b[12..16], &[1, 0, 0, 0]);
        assert_eq!(&b[16..24], &[0xff; 8]);
        assert!(b.windows(13).any(|w| w == b"wardgate test"));
    }

    #[test]
    fn interface_description_carries_raw_linktype_and_nanosecond_resolution() {
        let b = interface_description(LINKTYPE_RAW, "coap 0.0.0.0:5683");
        assert_well_framed(&b, IDB);
        assert_eq!(u16::from_le_bytes([b[8], b[9]]), 101);
        assert_eq!(u32_at(&b, 12), 0, "no snap length");
        let tsresol = [9u8, 0, 1, 0, TSRESOL_NANOS, 0, 0, 0];
        assert!(b.windows(8).any(|w| w == tsresol), "if_tsresol option");
    }

    #[test]
    fn enhanced_packet_splits_the_timestamp_pads_the_data_and_flags_the_direction() {
        let ts = 0x0000_0012_3456_789a_u64;
        let b = enhanced_packet(
            ts,
            &[1, 2, 3, 4, 5],
            9,
            Direction::Outbound,
            Some("psk:bed"),
        );
        assert_well_framed(&b, EPB);
        assert_eq!(u32_at(&b, 8), 0, "interface 0");
        assert_eq!(u32_at(&b, 12), 0x12);
        assert_eq!(u32_at(&b, 16), 0x3456_789a);
        assert_eq!(u32_at(&b, 20), 5, "captured length");
        assert_eq!(u32_at(&b, 24), 9, "original length");
        assert_eq!(&b[28..36], &[1, 2, 3, 4, 5, 0, 0, 0]);
        assert_eq!(&b[36..44], &[2, 0, 4, 0, 2, 0, 0, 0], "epb_flags outbound");
        assert_eq!(&b[44..48], &[1, 0, 7, 0], "comment option header");
        assert_eq!(&b[48..55], b"psk:bed");
        assert_eq!(&b[56..60], &[0, 0, 0, 0], "end of options");
    }

    #[test]
    fn original_length_is_never_below_the_captured_length() {
        let b = enhanced_packet(0, &[0; 8], 3, Direction::Inbound, None);
        assert_eq!(u32_at(&b, 24), 8);
    }
}
