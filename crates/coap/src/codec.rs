//! CoAP message codec (RFC 7252 §3): a zero-copy parser and an encoder into a reusable buffer.
//!
//! Why not `coap-lite`'s `Packet`: it allocates a `BTreeMap` of `LinkedList<Vec<u8>>` per
//! datagram, does not check the version, and accepts a payload marker followed by no payload,
//! which RFC 7252 §3 makes a message format error. [`Message::parse`] validates the whole message
//! without allocating and borrows options and payload from the receive buffer; the encoder writes
//! into a caller-owned `Vec` that the message layer reuses.

use std::fmt;

/// The only protocol version (RFC 7252 §3).
pub const VERSION: u8 = 1;

/// Option numbers used by wardgate (IANA CoAP Option Numbers registry).
pub mod opt {
    /// If-Match (critical; not implemented by the endpoint, so answered 4.02).
    pub const IF_MATCH: u16 = 1;
    /// Uri-Host.
    pub const URI_HOST: u16 = 3;
    /// ETag.
    pub const ETAG: u16 = 4;
    /// If-None-Match (critical; not implemented by the endpoint).
    pub const IF_NONE_MATCH: u16 = 5;
    /// Observe (RFC 7641).
    pub const OBSERVE: u16 = 6;
    /// Uri-Port.
    pub const URI_PORT: u16 = 7;
    /// Location-Path.
    pub const LOCATION_PATH: u16 = 8;
    /// Uri-Path.
    pub const URI_PATH: u16 = 11;
    /// Content-Format.
    pub const CONTENT_FORMAT: u16 = 12;
    /// Max-Age.
    pub const MAX_AGE: u16 = 14;
    /// Uri-Query.
    pub const URI_QUERY: u16 = 15;
    /// Accept.
    pub const ACCEPT: u16 = 17;
    /// Location-Query.
    pub const LOCATION_QUERY: u16 = 20;
    /// Block2 (RFC 7959).
    pub const BLOCK2: u16 = 23;
    /// Block1 (RFC 7959).
    pub const BLOCK1: u16 = 27;
    /// Size2 (RFC 7959).
    pub const SIZE2: u16 = 28;
    /// Proxy-Uri.
    pub const PROXY_URI: u16 = 35;
    /// Proxy-Scheme.
    pub const PROXY_SCHEME: u16 = 39;
    /// Size1.
    pub const SIZE1: u16 = 60;

    /// Critical options have an odd number (RFC 7252 §5.4.6).
    pub fn is_critical(number: u16) -> bool {
        number & 1 == 1
    }
}

/// Message type (RFC 7252 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MsgType {
    /// Confirmable.
    Con,
    /// Non-confirmable.
    Non,
    /// Acknowledgement.
    Ack,
    /// Reset.
    Rst,
}

impl MsgType {
    fn from_bits(b: u8) -> MsgType {
        match b & 0b11 {
            0 => MsgType::Con,
            1 => MsgType::Non,
            2 => MsgType::Ack,
            _ => MsgType::Rst,
        }
    }

    fn bits(self) -> u8 {
        match self {
            MsgType::Con => 0,
            MsgType::Non => 1,
            MsgType::Ack => 2,
            MsgType::Rst => 3,
        }
    }

    /// Lower-case name, also the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            MsgType::Con => "con",
            MsgType::Non => "non",
            MsgType::Ack => "ack",
            MsgType::Rst => "rst",
        }
    }
}

/// A message code `c.dd` (RFC 7252 §3, §12.1).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Code(pub u8);

impl Code {
    /// `c.dd` from its class and detail.
    pub const fn new(class: u8, detail: u8) -> Code {
        Code((class << 5) | (detail & 0x1f))
    }
    /// 0.00 Empty.
    pub const EMPTY: Code = Code::new(0, 0);
    /// 0.01 GET.
    pub const GET: Code = Code::new(0, 1);
    /// 0.02 POST.
    pub const POST: Code = Code::new(0, 2);
    /// 0.03 PUT.
    pub const PUT: Code = Code::new(0, 3);
    /// 0.04 DELETE.
    pub const DELETE: Code = Code::new(0, 4);
    /// 0.05 FETCH (RFC 8132).
    pub const FETCH: Code = Code::new(0, 5);
    /// 2.01 Created.
    pub const CREATED: Code = Code::new(2, 1);
    /// 2.02 Deleted.
    pub const DELETED: Code = Code::new(2, 2);
    /// 2.03 Valid.
    pub const VALID: Code = Code::new(2, 3);
    /// 2.04 Changed.
    pub const CHANGED: Code = Code::new(2, 4);
    /// 2.05 Content.
    pub const CONTENT: Code = Code::new(2, 5);
    /// 2.31 Continue (RFC 7959).
    pub const CONTINUE: Code = Code::new(2, 31);
    /// 4.00 Bad Request.
    pub const BAD_REQUEST: Code = Code::new(4, 0);
    /// 4.01 Unauthorized.
    pub const UNAUTHORIZED: Code = Code::new(4, 1);
    /// 4.02 Bad Option.
    pub const BAD_OPTION: Code = Code::new(4, 2);
    /// 4.03 Forbidden.
    pub const FORBIDDEN: Code = Code::new(4, 3);
    /// 4.04 Not Found.
    pub const NOT_FOUND: Code = Code::new(4, 4);
    /// 4.05 Method Not Allowed.
    pub const METHOD_NOT_ALLOWED: Code = Code::new(4, 5);
    /// 4.06 Not Acceptable.
    pub const NOT_ACCEPTABLE: Code = Code::new(4, 6);
    /// 4.08 Request Entity Incomplete (RFC 7959).
    pub const REQUEST_ENTITY_INCOMPLETE: Code = Code::new(4, 8);
    /// 4.13 Request Entity Too Large.
    pub const REQUEST_ENTITY_TOO_LARGE: Code = Code::new(4, 13);
    /// 4.15 Unsupported Content-Format.
    pub const UNSUPPORTED_CONTENT_FORMAT: Code = Code::new(4, 15);
    /// 5.00 Internal Server Error.
    pub const INTERNAL_SERVER_ERROR: Code = Code::new(5, 0);
    /// 5.03 Service Unavailable.
    pub const SERVICE_UNAVAILABLE: Code = Code::new(5, 3);
    /// 5.05 Proxying Not Supported.
    pub const PROXYING_NOT_SUPPORTED: Code = Code::new(5, 5);

    /// The class digit.
    pub fn class(self) -> u8 {
        self.0 >> 5
    }

    /// The detail digits.
    pub fn detail(self) -> u8 {
        self.0 & 0x1f
    }

    /// 0.00.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// A method code (class 0, not Empty).
    pub fn is_request(self) -> bool {
        self.class() == 0 && self.detail() != 0
    }

    /// A response code (classes 2, 4 and 5).
    pub fn is_response(self) -> bool {
        matches!(self.class(), 2 | 4 | 5)
    }

    /// A 2.xx code.
    pub fn is_success(self) -> bool {
        self.class() == 2
    }

    /// Every value [`Code::label`] can return.
    pub const LABELS: [&'static str; 25] = [
        "2.01", "2.02", "2.03", "2.04", "2.05", "2.31", "4.00", "4.02", "4.04", "4.05", "4.06",
        "4.08", "4.13", "4.15", "5.00", "5.03", "5.05", "0.01", "0.02", "0.03", "0.xx", "2.xx",
        "4.xx", "5.xx", "other",
    ];

    /// A bounded metric label: the code itself for every code wardgate sends, else its class.
    pub fn label(self) -> &'static str {
        const KNOWN: [(Code, &str); 20] = [
            (Code::CREATED, "2.01"),
            (Code::DELETED, "2.02"),
            (Code::VALID, "2.03"),
            (Code::CHANGED, "2.04"),
            (Code::CONTENT, "2.05"),
            (Code::CONTINUE, "2.31"),
            (Code::BAD_REQUEST, "4.00"),
            (Code::BAD_OPTION, "4.02"),
            (Code::NOT_FOUND, "4.04"),
            (Code::METHOD_NOT_ALLOWED, "4.05"),
            (Code::NOT_ACCEPTABLE, "4.06"),
            (Code::REQUEST_ENTITY_INCOMPLETE, "4.08"),
            (Code::REQUEST_ENTITY_TOO_LARGE, "4.13"),
            (Code::UNSUPPORTED_CONTENT_FORMAT, "4.15"),
            (Code::INTERNAL_SERVER_ERROR, "5.00"),
            (Code::SERVICE_UNAVAILABLE, "5.03"),
            (Code::PROXYING_NOT_SUPPORTED, "5.05"),
            (Code::GET, "0.01"),
            (Code::POST, "0.02"),
            (Code::PUT, "0.03"),
        ];
        if let Some((_, s)) = KNOWN.iter().find(|(c, _)| *c == self) {
            return s;
        }
        match self.class() {
            0 => "0.xx",
            2 => "2.xx",
            4 => "4.xx",
            5 => "5.xx",
            _ => "other",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.class(), self.detail())
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A token of 0 to 8 bytes, stored inline (no allocation).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Token {
    len: u8,
    bytes: [u8; 8],
}

impl Token {
    /// The zero-length token.
    pub const EMPTY: Token = Token {
        len: 0,
        bytes: [0; 8],
    };

    /// A token from up to 8 bytes; `None` when longer.
    pub fn new(b: &[u8]) -> Option<Token> {
        if b.len() > 8 {
            return None;
        }
        let mut bytes = [0u8; 8];
        bytes[..b.len()].copy_from_slice(b);
        Some(Token {
            len: b.len() as u8,
            bytes,
        })
    }

    /// The token bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Zero-length token.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("0x")?;
        for b in self.as_bytes() {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// The fixed 4-byte header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Message type.
    pub mtype: MsgType,
    /// Code.
    pub code: Code,
    /// Message ID.
    pub mid: u16,
    /// Token length field as sent (may be an illegal 9..15).
    pub tkl: u8,
}

/// Why a datagram is not a well-formed CoAP message. `reason()` is the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// Fewer than 4 bytes.
    #[error("shorter than the 4-byte header")]
    TooShort,
    /// Version field is not 1.
    #[error("unknown version")]
    BadVersion,
    /// Token Length 9..15 (reserved).
    #[error("token length above 8")]
    BadTokenLength,
    /// The datagram ends inside the token.
    #[error("truncated token")]
    TruncatedToken,
    /// Option delta nibble 15 without being the payload marker.
    #[error("reserved option delta")]
    BadOptionDelta,
    /// Option length nibble 15.
    #[error("reserved option length")]
    BadOptionLength,
    /// The datagram ends inside an option.
    #[error("truncated option")]
    TruncatedOption,
    /// Option numbers past 65535.
    #[error("option number overflow")]
    OptionNumberOverflow,
    /// A payload marker followed by nothing.
    #[error("payload marker without payload")]
    EmptyPayload,
    /// An Empty (0.00) message with a token, options or payload.
    #[error("empty message with content")]
    EmptyWithContent,
    /// Code class 1, 6 or 7.
    #[error("reserved code class")]
    ReservedClass,
    /// A request code in an ACK or RST, or a response code in a RST.
    #[error("code not allowed for this message type")]
    CodeTypeMismatch,
}

impl FormatError {
    /// Fixed metric label.
    pub fn reason(self) -> &'static str {
        match self {
            FormatError::TooShort => "too_short",
            FormatError::BadVersion => "bad_version",
            FormatError::BadTokenLength => "bad_token_length",
            FormatError::TruncatedToken => "truncated_token",
            FormatError::BadOptionDelta => "bad_option_delta",
            FormatError::BadOptionLength => "bad_option_length",
            FormatError::TruncatedOption => "truncated_option",
            FormatError::OptionNumberOverflow => "option_number_overflow",
            FormatError::EmptyPayload => "empty_payload",
            FormatError::EmptyWithContent => "empty_with_content",
            FormatError::ReservedClass => "reserved_class",
            FormatError::CodeTypeMismatch => "code_type_mismatch",
        }
    }
}

/// A parse failure, with the header when it could be read (version 1, 4 bytes): a Confirmable
/// message with a readable header is rejected with a Reset (RFC 7252 §4.2), anything else is
/// silently ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{kind}")]
pub struct ParseError {
    /// What is wrong.
    pub kind: FormatError,
    /// The header, when version and length allowed reading it.
    pub header: Option<Header>,
}

/// Reads the 4-byte header; `None` for short datagrams and unknown versions.
pub fn parse_header(buf: &[u8]) -> Option<Header> {
    let (&b0, rest) = buf.split_first()?;
    if rest.len() < 3 || b0 >> 6 != VERSION {
        return None;
    }
    Some(Header {
        mtype: MsgType::from_bits(b0 >> 4),
        code: Code(rest[0]),
        mid: u16::from_be_bytes([rest[1], rest[2]]),
        tkl: b0 & 0x0f,
    })
}

/// Reads the header and token of a datagram that may be truncated after them (an oversized
/// datagram cut at the receive buffer).
pub fn parse_header_and_token(buf: &[u8]) -> Option<(Header, Token)> {
    let h = parse_header(buf)?;
    let end = 4 + usize::from(h.tkl);
    let t = Token::new(buf.get(4..end)?)?;
    Some((h, t))
}

/// One option: its absolute number and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoapOption<'a> {
    /// Option number.
    pub number: u16,
    /// Raw value.
    pub value: &'a [u8],
}

/// Decodes one option header at `buf[i..]`; returns (delta, length, header size).
fn option_header(buf: &[u8], i: usize) -> Result<(u32, usize, usize), FormatError> {
    let b = *buf.get(i).ok_or(FormatError::TruncatedOption)?;
    let mut at = i + 1;
    let mut ext = |nibble: u8, bad: FormatError| -> Result<u32, FormatError> {
        match nibble {
            0..=12 => Ok(u32::from(nibble)),
            13 => {
                let v = *buf.get(at).ok_or(FormatError::TruncatedOption)?;
                at += 1;
                Ok(u32::from(v) + 13)
            }
            14 => {
                let hi = *buf.get(at).ok_or(FormatError::TruncatedOption)?;
                let lo = *buf.get(at + 1).ok_or(FormatError::TruncatedOption)?;
                at += 2;
                Ok(u32::from(u16::from_be_bytes([hi, lo])) + 269)
            }
            _ => Err(bad),
        }
    };
    let delta = ext(b >> 4, FormatError::BadOptionDelta)?;
    let len = ext(b & 0x0f, FormatError::BadOptionLength)?;
    Ok((delta, len as usize, at - i))
}

/// Iterator over a validated option block.
#[derive(Debug, Clone)]
pub struct Options<'a> {
    buf: &'a [u8],
    i: usize,
    number: u32,
}

impl<'a> Iterator for Options<'a> {
    type Item = CoapOption<'a>;

    fn next(&mut self) -> Option<CoapOption<'a>> {
        // The block was validated by `Message::parse`, so errors cannot occur; stop if they do.
        let (delta, len, hdr) = option_header(self.buf, self.i).ok()?;
        let start = self.i + hdr;
        let value = self.buf.get(start..start + len)?;
        self.i = start + len;
        self.number += delta;
        Some(CoapOption {
            number: u16::try_from(self.number).ok()?,
            value,
        })
    }
}

/// A parsed message borrowing options and payload from the datagram.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    /// Message type.
    pub mtype: MsgType,
    /// Code.
    pub code: Code,
    /// Message ID.
    pub mid: u16,
    /// Token.
    pub token: Token,
    options: &'a [u8],
    /// Payload (empty when absent).
    pub payload: &'a [u8],
}

impl<'a> Message<'a> {
    /// Parses and validates a whole datagram without allocating.
    pub fn parse(buf: &'a [u8]) -> Result<Message<'a>, ParseError> {
        let Some(header) = parse_header(buf) else {
            let kind = if buf.len() < 4 {
                FormatError::TooShort
            } else {
                FormatError::BadVersion
            };
            return Err(ParseError { kind, header: None });
        };
        let fail = |kind| ParseError {
            kind,
            header: Some(header),
        };
        if header.tkl > 8 {
            return Err(fail(FormatError::BadTokenLength));
        }
        let opts_start = 4 + usize::from(header.tkl);
        let token = buf
            .get(4..opts_start)
            .and_then(Token::new)
            .ok_or(fail(FormatError::TruncatedToken))?;
        if header.code.is_empty() && buf.len() > 4 {
            return Err(fail(FormatError::EmptyWithContent));
        }
        if matches!(header.code.class(), 1 | 6 | 7) {
            return Err(fail(FormatError::ReservedClass));
        }
        match header.mtype {
            MsgType::Ack if header.code.is_request() => {
                return Err(fail(FormatError::CodeTypeMismatch));
            }
            MsgType::Rst if !header.code.is_empty() => {
                return Err(fail(FormatError::CodeTypeMismatch));
            }
            _ => {}
        }
        let mut i = opts_start;
        let mut number: u32 = 0;
        let mut payload: &[u8] = &[];
        let mut opts_end = buf.len();
        while i < buf.len() {
            if buf[i] == 0xff {
                opts_end = i;
                payload = &buf[i + 1..];
                if payload.is_empty() {
                    return Err(fail(FormatError::EmptyPayload));
                }
                break;
            }
            let (delta, len, hdr) = option_header(buf, i).map_err(fail)?;
            number += delta;
            if number > u32::from(u16::MAX) {
                return Err(fail(FormatError::OptionNumberOverflow));
            }
            let end = i + hdr + len;
            if end > buf.len() {
                return Err(fail(FormatError::TruncatedOption));
            }
            i = end;
        }
        Ok(Message {
            mtype: header.mtype,
            code: header.code,
            mid: header.mid,
            token,
            options: &buf[opts_start..opts_end],
            payload,
        })
    }

    /// The options, in ascending number order.
    pub fn options(&self) -> Options<'a> {
        Options {
            buf: self.options,
            i: 0,
            number: 0,
        }
    }

    /// Every value of option `number`.
    pub fn values(&self, number: u16) -> impl Iterator<Item = &'a [u8]> + use<'a> {
        self.options()
            .filter(move |o| o.number == number)
            .map(|o| o.value)
    }

    /// The first value of option `number`.
    pub fn option(&self, number: u16) -> Option<&'a [u8]> {
        self.values(number).next()
    }

    /// Whether option `number` is present.
    pub fn has_option(&self, number: u16) -> bool {
        self.option(number).is_some()
    }

    /// The first value of a uint option: `None` when absent, `Some(Err)` when longer than
    /// `max_len` bytes (RFC 7252 §5.4.3: treat like an unrecognized option).
    pub fn uint_option(&self, number: u16, max_len: usize) -> Option<Result<u32, BadOptionValue>> {
        self.option(number).map(|v| decode_uint(v, max_len))
    }

    /// Content-Format, or `None` when absent or invalid (an elective option with a bad length is
    /// ignored, RFC 7252 §5.4.3).
    pub fn content_format(&self) -> Option<u16> {
        self.uint_option(opt::CONTENT_FORMAT, 2)
            .and_then(Result::ok)
            .and_then(|v| u16::try_from(v).ok())
    }

    /// Observe value (elective; invalid lengths read as absent).
    pub fn observe(&self) -> Option<u32> {
        self.uint_option(opt::OBSERVE, 3).and_then(Result::ok)
    }

    /// Block1 option: `None` absent, `Some(Err)` malformed (a critical option: answer 4.02).
    pub fn block1(&self) -> Option<Result<BlockOpt, BadOptionValue>> {
        self.option(opt::BLOCK1).map(BlockOpt::decode)
    }

    /// Block2 option: `None` absent, `Some(Err)` malformed.
    pub fn block2(&self) -> Option<Result<BlockOpt, BadOptionValue>> {
        self.option(opt::BLOCK2).map(BlockOpt::decode)
    }

    /// Size1 (elective; invalid lengths read as absent).
    pub fn size1(&self) -> Option<u32> {
        self.uint_option(opt::SIZE1, 4).and_then(Result::ok)
    }

    /// The first critical option whose number is not in `known`.
    pub fn unknown_critical(&self, known: &[u16]) -> Option<u16> {
        self.options()
            .map(|o| o.number)
            .find(|n| opt::is_critical(*n) && !known.contains(n))
    }
}

/// An option value outside its defined format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("option value has an invalid format")]
pub struct BadOptionValue;

/// Decodes a CoAP uint (big-endian, minimal length not required).
pub fn decode_uint(v: &[u8], max_len: usize) -> Result<u32, BadOptionValue> {
    if v.len() > max_len.min(4) {
        return Err(BadOptionValue);
    }
    Ok(v.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)))
}

/// Minimal big-endian encoding of a uint: returns the buffer and the used suffix length.
pub fn encode_uint(v: u32) -> ([u8; 4], usize) {
    let b = v.to_be_bytes();
    let skip = (v.leading_zeros() / 8) as usize;
    (b, 4 - skip)
}

/// A Block1/Block2 value (RFC 7959 §2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockOpt {
    /// Block number.
    pub num: u32,
    /// More blocks follow.
    pub more: bool,
    /// Size exponent: block size is `2^(szx+4)`; 7 is reserved (BERT, TCP only).
    pub szx: u8,
}

impl BlockOpt {
    /// Decodes a 0..3-byte value.
    pub fn decode(v: &[u8]) -> Result<BlockOpt, BadOptionValue> {
        let raw = decode_uint(v, 3)?;
        Ok(BlockOpt {
            num: raw >> 4,
            more: raw & 0x8 != 0,
            szx: (raw & 0x7) as u8,
        })
    }

    /// The encoded uint value.
    pub fn value(self) -> u32 {
        (self.num << 4) | (u32::from(self.more) << 3) | u32::from(self.szx & 0x7)
    }

    /// Block size in bytes (16..=1024 for SZX 0..=6).
    pub fn size(self) -> usize {
        1usize << (u32::from(self.szx.min(6)) + 4)
    }

    /// SZX for a block size (rounded down to a power of two, clamped to 16..=1024).
    pub fn szx_for(size: usize) -> u8 {
        let size = size.clamp(16, 1024);
        (usize::BITS - 1 - size.leading_zeros()) as u8 - 4
    }
}

/// Why a message could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// Options must be written in ascending order.
    #[error("option {0} written out of order")]
    OptionOrder(u16),
    /// An option value longer than 65804 bytes.
    #[error("option value too long")]
    ValueTooLong,
    /// The token is longer than 8 bytes.
    #[error("token too long")]
    TokenTooLong,
}

/// Writes a message into a reusable buffer. Options must be added in ascending number order.
#[derive(Debug)]
pub struct Encoder<'b> {
    buf: &'b mut Vec<u8>,
    last: u16,
}

impl<'b> Encoder<'b> {
    /// Clears `buf` and writes the header and token.
    pub fn new(buf: &'b mut Vec<u8>, mtype: MsgType, code: Code, mid: u16, token: Token) -> Self {
        buf.clear();
        buf.push((VERSION << 6) | (mtype.bits() << 4) | token.len);
        buf.push(code.0);
        buf.extend_from_slice(&mid.to_be_bytes());
        buf.extend_from_slice(token.as_bytes());
        Encoder { buf, last: 0 }
    }

    fn nibble(v: usize) -> (u8, [u8; 2], usize) {
        if v < 13 {
            (v as u8, [0, 0], 0)
        } else if v < 269 {
            (13, [(v - 13) as u8, 0], 1)
        } else {
            let x = (v - 269) as u16;
            (14, x.to_be_bytes(), 2)
        }
    }

    /// Appends an option.
    pub fn option(&mut self, number: u16, value: &[u8]) -> Result<(), EncodeError> {
        if number < self.last {
            return Err(EncodeError::OptionOrder(number));
        }
        if value.len() > 65_535 + 269 {
            return Err(EncodeError::ValueTooLong);
        }
        let (dn, dext, dl) = Self::nibble(usize::from(number - self.last));
        let (ln, lext, ll) = Self::nibble(value.len());
        self.buf.push((dn << 4) | ln);
        self.buf.extend_from_slice(&dext[..dl]);
        self.buf.extend_from_slice(&lext[..ll]);
        self.buf.extend_from_slice(value);
        self.last = number;
        Ok(())
    }

    /// Appends a uint option in its minimal encoding.
    pub fn uint_option(&mut self, number: u16, v: u32) -> Result<(), EncodeError> {
        let (b, n) = encode_uint(v);
        self.option(number, &b[4 - n..])
    }

    /// Appends the payload (with its marker, only when non-empty) and finishes.
    pub fn payload(self, payload: &[u8]) {
        if !payload.is_empty() {
            self.buf.push(0xff);
            self.buf.extend_from_slice(payload);
        }
    }

    /// Finishes without payload.
    pub fn finish(self) {}
}

/// Encodes an Empty message (ACK, RST or a CoAP ping) into `buf`.
pub fn encode_empty(buf: &mut Vec<u8>, mtype: MsgType, mid: u16) {
    Encoder::new(buf, mtype, Code::EMPTY, mid, Token::EMPTY).finish();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(f: impl FnOnce(&mut Encoder<'_>)) -> Vec<u8> {
        let mut buf = Vec::new();
        let tok = Token::new(&[1, 2, 3]).expect("token");
        let mut e = Encoder::new(&mut buf, MsgType::Con, Code::POST, 0x1234, tok);
        f(&mut e);
        e.payload(b"hi");
        buf
    }

    #[test]
    fn encoded_message_parses_back_with_every_option() {
        let buf = encode(|e| {
            e.option(opt::URI_PATH, b"v1").expect("opt");
            e.option(opt::URI_PATH, b"readings").expect("opt");
            e.uint_option(opt::CONTENT_FORMAT, 110).expect("opt");
            e.option(opt::URI_QUERY, &[b'x'; 300]).expect("opt");
            e.uint_option(opt::SIZE1, 70_000).expect("opt");
            e.option(2000, b"").expect("opt");
        });
        let m = Message::parse(&buf).expect("parse");
        assert_eq!(m.mtype, MsgType::Con);
        assert_eq!(m.code, Code::POST);
        assert_eq!(m.mid, 0x1234);
        assert_eq!(m.token.as_bytes(), &[1, 2, 3]);
        let path: Vec<&[u8]> = m.values(opt::URI_PATH).collect();
        assert_eq!(path, vec![&b"v1"[..], &b"readings"[..]]);
        assert_eq!(m.content_format(), Some(110));
        assert_eq!(m.option(opt::URI_QUERY).map(<[u8]>::len), Some(300));
        assert_eq!(m.size1(), Some(70_000));
        assert!(m.has_option(2000));
        assert_eq!(m.payload, b"hi");
    }

    #[test]
    fn options_out_of_order_are_refused_by_the_encoder() {
        let mut buf = Vec::new();
        let mut e = Encoder::new(&mut buf, MsgType::Con, Code::GET, 1, Token::EMPTY);
        e.option(opt::URI_QUERY, b"a").expect("first");
        assert_eq!(
            e.option(opt::URI_PATH, b"b"),
            Err(EncodeError::OptionOrder(opt::URI_PATH))
        );
    }

    #[test]
    fn payload_marker_without_payload_is_a_format_error_with_header() {
        let buf = [0x40, 0x01, 0x00, 0x07, 0xff];
        let e = Message::parse(&buf).expect_err("must fail");
        assert_eq!(e.kind, FormatError::EmptyPayload);
        assert_eq!(e.header.map(|h| h.mid), Some(7));
    }

    #[test]
    fn bad_version_and_short_datagrams_have_no_header() {
        assert_eq!(
            Message::parse(&[0x80, 0x01, 0, 1]).expect_err("v2").header,
            None
        );
        assert_eq!(
            Message::parse(&[0x40, 0x01]).expect_err("short").kind,
            FormatError::TooShort
        );
    }

    #[test]
    fn token_length_nine_is_a_format_error() {
        let mut buf = vec![0x49, 0x01, 0, 1];
        buf.extend_from_slice(&[0; 9]);
        assert_eq!(
            Message::parse(&buf).expect_err("tkl 9").kind,
            FormatError::BadTokenLength
        );
    }

    #[test]
    fn empty_message_with_token_is_a_format_error() {
        let buf = [0x41, 0x00, 0, 1, 0xaa];
        assert_eq!(
            Message::parse(&buf).expect_err("e").kind,
            FormatError::EmptyWithContent
        );
    }

    #[test]
    fn block_values_round_trip() {
        let b = BlockOpt {
            num: 1000,
            more: true,
            szx: 6,
        };
        let (v, n) = encode_uint(b.value());
        assert_eq!(BlockOpt::decode(&v[4 - n..]), Ok(b));
        assert_eq!(b.size(), 1024);
        assert_eq!(BlockOpt::szx_for(16), 0);
        assert_eq!(BlockOpt::szx_for(1024), 6);
        assert_eq!(BlockOpt::szx_for(1000), 5);
        assert_eq!(
            BlockOpt::decode(&[]),
            Ok(BlockOpt {
                num: 0,
                more: false,
                szx: 0
            })
        );
    }

    #[test]
    fn every_code_label_is_listed() {
        for c in 0..=255u8 {
            assert!(Code::LABELS.contains(&Code(c).label()), "{}", Code(c));
        }
    }

    #[test]
    fn code_labels_are_bounded() {
        assert_eq!(Code::CREATED.label(), "2.01");
        assert_eq!(Code::new(4, 29).label(), "4.xx");
        assert_eq!(Code::new(2, 1).to_string(), "2.01");
    }
}
