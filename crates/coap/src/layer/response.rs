//! [`Response`]: what the application answers a request with, and its encoding (options in
//! number order) into a message of the given type, Message ID and token.

use std::borrow::Cow;

use bytes::Bytes;

use crate::codec::{self, BlockOpt, Code, Encoder, MsgType, Token, opt};

/// A response for [`MessageLayer::respond`](super::MessageLayer::respond).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Response {
    /// Code.
    pub code: Code,
    /// Observe.
    pub observe: Option<u32>,
    /// Location-Path segments joined with `/`.
    pub location: Option<String>,
    /// Content-Format.
    pub content_format: Option<u16>,
    /// Max-Age in seconds.
    pub max_age: Option<u32>,
    /// Block2.
    pub block2: Option<BlockOpt>,
    /// Block1.
    pub block1: Option<BlockOpt>,
    /// Size2.
    pub size2: Option<u32>,
    /// Size1.
    pub size1: Option<u32>,
    /// Payload (a diagnostic text for errors). `Bytes` so static texts and slices of shared
    /// documents need no allocation.
    pub payload: Bytes,
}

impl Response {
    /// A response with `code` and nothing else.
    pub fn new(code: Code) -> Self {
        Response {
            code,
            ..Response::default()
        }
    }

    /// With a diagnostic payload (RFC 7252 §5.5.2).
    pub fn diagnostic(code: Code, text: impl Into<Cow<'static, str>>) -> Self {
        let payload = match text.into() {
            Cow::Borrowed(s) => Bytes::from_static(s.as_bytes()),
            Cow::Owned(s) => Bytes::from(s),
        };
        Response {
            code,
            payload,
            ..Response::default()
        }
    }

    pub(super) fn encode(
        &self,
        buf: &mut Vec<u8>,
        mtype: MsgType,
        mid: u16,
        token: Token,
    ) -> Result<(), codec::EncodeError> {
        let mut e = Encoder::new(buf, mtype, self.code, mid, token);
        if let Some(o) = self.observe {
            e.uint_option(opt::OBSERVE, o)?;
        }
        if let Some(loc) = &self.location {
            for seg in loc.split('/').filter(|s| !s.is_empty()) {
                e.option(opt::LOCATION_PATH, seg.as_bytes())?;
            }
        }
        if let Some(cf) = self.content_format {
            e.uint_option(opt::CONTENT_FORMAT, u32::from(cf))?;
        }
        if let Some(m) = self.max_age {
            e.uint_option(opt::MAX_AGE, m)?;
        }
        if let Some(b) = self.block2 {
            e.uint_option(opt::BLOCK2, b.value())?;
        }
        if let Some(b) = self.block1 {
            e.uint_option(opt::BLOCK1, b.value())?;
        }
        if let Some(s) = self.size2 {
            e.uint_option(opt::SIZE2, s)?;
        }
        if let Some(s) = self.size1 {
            e.uint_option(opt::SIZE1, s)?;
        }
        e.payload(&self.payload);
        Ok(())
    }
}
