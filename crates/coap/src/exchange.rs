//! Owned request/response values for wardgate's client side (the gateway sending requests to
//! devices, the demo sensors, tests), and the notification hand-off for observations.

use std::borrow::Cow;
use std::fmt;

use tokio::sync::oneshot;

use crate::codec::{self, BlockOpt, Code, EncodeError, Encoder, Message, MsgType, Token, opt};

/// A request to send with [`crate::CoapClient::request`] or an endpoint's
/// [`crate::Requester`].
#[derive(Debug, Clone, PartialEq)]
pub struct ClientRequest {
    /// Method code (GET, POST, PUT, DELETE, FETCH, ...).
    pub method: Code,
    /// Confirmable (retransmitted until acknowledged) or Non-confirmable.
    pub confirmable: bool,
    /// Uri-Path segments (not percent-encoded).
    pub path: Vec<String>,
    /// Uri-Query items (`key=value`).
    pub query: Vec<String>,
    /// Content-Format of the payload.
    pub content_format: Option<u16>,
    /// Accept.
    pub accept: Option<u16>,
    /// Observe (0 register, 1 deregister).
    pub observe: Option<u32>,
    /// Block size for block-wise transfer of a large payload (Block1) and the preferred size of
    /// response blocks (Block2); `None` uses 1024 and only when needed.
    pub block_size: Option<u16>,
    /// Other options as (number, value); merged in number order.
    pub options: Vec<(u16, Vec<u8>)>,
    /// Body.
    pub payload: Vec<u8>,
    /// Token to use instead of a random one (re-registration or cancellation of an observation).
    pub token: Option<Token>,
    /// The peer's address was learned from traffic nothing authenticated (an LwM2M client's
    /// Register over plain UDP) and may be spoofed: until the address proves it receives there,
    /// the layer sends it at most 3× what it received from it, and a request over that budget
    /// fails with [`CoapError::AddressUnproven`](crate::CoapError::AddressUnproven). Off for
    /// addresses from the configuration.
    pub validate_address: bool,
}

impl ClientRequest {
    /// A confirmable request with `method` to `path` (`"a/b"` or `"/a/b"`).
    pub fn new(method: Code, path: impl AsRef<str>) -> Self {
        ClientRequest {
            method,
            confirmable: true,
            path: path
                .as_ref()
                .split('/')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            query: Vec::new(),
            content_format: None,
            accept: None,
            observe: None,
            block_size: None,
            options: Vec::new(),
            payload: Vec::new(),
            token: None,
            validate_address: false,
        }
    }

    /// GET `path`.
    pub fn get(path: impl AsRef<str>) -> Self {
        Self::new(Code::GET, path)
    }

    /// POST `path`.
    pub fn post(path: impl AsRef<str>) -> Self {
        Self::new(Code::POST, path)
    }

    /// PUT `path`.
    pub fn put(path: impl AsRef<str>) -> Self {
        Self::new(Code::PUT, path)
    }

    /// Adds a Uri-Query item.
    pub fn query(mut self, q: impl Into<String>) -> Self {
        self.query.push(q.into());
        self
    }

    /// Sets the Content-Format.
    pub fn content_format(mut self, cf: u16) -> Self {
        self.content_format = Some(cf);
        self
    }

    /// Sets Accept.
    pub fn accept(mut self, cf: u16) -> Self {
        self.accept = Some(cf);
        self
    }

    /// Sets the payload.
    pub fn payload(mut self, p: impl Into<Vec<u8>>) -> Self {
        self.payload = p.into();
        self
    }

    /// Non-confirmable.
    pub fn non_confirmable(mut self) -> Self {
        self.confirmable = false;
        self
    }

    /// Sets the block size for block-wise transfers (rounded down to a power of two in 16..=1024).
    pub fn block_size(mut self, size: u16) -> Self {
        self.block_size = Some(size);
        self
    }

    /// Adds an arbitrary option.
    pub fn option(mut self, number: u16, value: impl Into<Vec<u8>>) -> Self {
        self.options.push((number, value.into()));
        self
    }

    /// Encodes this request with `payload` (a block of the body, or all of it) and the given
    /// Block1/Block2 options into `buf`.
    pub(crate) fn encode(
        &self,
        buf: &mut Vec<u8>,
        head: (MsgType, u16, Token),
        blocks: BlockOpts,
        payload: &[u8],
    ) -> Result<(), EncodeError> {
        let (mtype, mid, token) = head;
        let BlockOpts {
            block1,
            block2,
            size1,
        } = blocks;
        let mut opts: Vec<(u16, Cow<'_, [u8]>)> = Vec::with_capacity(8 + self.path.len());
        let uint = |v: u32| {
            let (b, n) = codec::encode_uint(v);
            Cow::Owned(b[4 - n..].to_vec())
        };
        if let Some(o) = self.observe {
            opts.push((opt::OBSERVE, uint(o)));
        }
        for p in &self.path {
            opts.push((opt::URI_PATH, Cow::Borrowed(p.as_bytes())));
        }
        if let Some(cf) = self.content_format {
            opts.push((opt::CONTENT_FORMAT, uint(u32::from(cf))));
        }
        for q in &self.query {
            opts.push((opt::URI_QUERY, Cow::Borrowed(q.as_bytes())));
        }
        if let Some(a) = self.accept {
            opts.push((opt::ACCEPT, uint(u32::from(a))));
        }
        if let Some(b) = block2 {
            opts.push((opt::BLOCK2, uint(b.value())));
        }
        if let Some(b) = block1 {
            opts.push((opt::BLOCK1, uint(b.value())));
        }
        if let Some(s) = size1 {
            opts.push((opt::SIZE1, uint(s)));
        }
        for (n, v) in &self.options {
            opts.push((*n, Cow::Borrowed(v.as_slice())));
        }
        // Stable: repeated options keep their order.
        opts.sort_by_key(|(n, _)| *n);
        let mut e = Encoder::new(buf, mtype, self.method, mid, token);
        for (n, v) in &opts {
            e.option(*n, v)?;
        }
        e.payload(payload);
        Ok(())
    }
}

/// Block-wise options of one request message.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct BlockOpts {
    pub(crate) block1: Option<BlockOpt>,
    pub(crate) block2: Option<BlockOpt>,
    pub(crate) size1: Option<u32>,
}

/// A response received by the client side.
#[derive(Clone, PartialEq)]
pub struct ClientResponse {
    code: Code,
    options: Vec<(u16, Vec<u8>)>,
    payload: Vec<u8>,
}

impl fmt::Debug for ClientResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientResponse")
            .field("code", &self.code)
            .field("options", &self.options)
            .field("payload", &String::from_utf8_lossy(&self.payload))
            .finish()
    }
}

impl ClientResponse {
    pub(crate) fn from_message(m: &Message<'_>) -> Self {
        ClientResponse {
            code: m.code,
            options: m.options().map(|o| (o.number, o.value.to_vec())).collect(),
            payload: m.payload.to_vec(),
        }
    }

    /// The response code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// 2.xx.
    pub fn is_success(&self) -> bool {
        self.code.is_success()
    }

    /// The body (reassembled when the response came in Block2 blocks).
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    pub(crate) fn payload_mut(&mut self) -> &mut Vec<u8> {
        &mut self.payload
    }

    /// Every option as (number, value).
    pub fn options(&self) -> &[(u16, Vec<u8>)] {
        &self.options
    }

    /// The first value of option `number`.
    pub fn option(&self, number: u16) -> Option<&[u8]> {
        self.options
            .iter()
            .find(|(n, _)| *n == number)
            .map(|(_, v)| v.as_slice())
    }

    fn uint(&self, number: u16, max: usize) -> Option<u32> {
        self.option(number)
            .and_then(|v| codec::decode_uint(v, max).ok())
    }

    /// Content-Format.
    pub fn content_format(&self) -> Option<u16> {
        self.uint(opt::CONTENT_FORMAT, 2)
            .and_then(|v| u16::try_from(v).ok())
    }

    /// Observe sequence number.
    pub fn observe(&self) -> Option<u32> {
        self.uint(opt::OBSERVE, 3)
    }

    /// Max-Age in seconds (default 60 when absent, RFC 7252 §5.10.5).
    pub fn max_age(&self) -> u32 {
        self.uint(opt::MAX_AGE, 4).unwrap_or(60)
    }

    /// Size1.
    pub fn size1(&self) -> Option<u32> {
        self.uint(opt::SIZE1, 4)
    }

    /// Block1.
    pub fn block1(&self) -> Option<BlockOpt> {
        self.option(opt::BLOCK1)
            .and_then(|v| BlockOpt::decode(v).ok())
    }

    /// Block2.
    pub fn block2(&self) -> Option<BlockOpt> {
        self.option(opt::BLOCK2)
            .and_then(|v| BlockOpt::decode(v).ok())
    }

    /// Location-Path segments (lossy UTF-8).
    pub fn location_path(&self) -> Vec<String> {
        self.options
            .iter()
            .filter(|(n, _)| *n == opt::LOCATION_PATH)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }
}

/// A response or notification delivered to an observation.
#[derive(Debug)]
pub struct Notification {
    /// The response (2.05 with Observe while the observation lasts; an error or a response
    /// without Observe ends it).
    pub response: ClientResponse,
    /// Present for Confirmable notifications: the ACK is sent only when this is accepted. Dropping
    /// it (or rejecting) sends no ACK, so the server retransmits.
    pub ack: Option<AckHandle>,
}

/// Decides whether a Confirmable notification is acknowledged.
#[derive(Debug)]
pub struct AckHandle(pub(crate) oneshot::Sender<bool>);

impl AckHandle {
    /// Acknowledge: the notification was processed (its reading is durable).
    pub fn accept(self) {
        let _ = self.0.send(true);
    }

    /// Do not acknowledge; a retransmission of the same message will be delivered again.
    pub fn reject(self) {
        let _ = self.0.send(false);
    }
}
