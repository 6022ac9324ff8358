//! The simulator's message layer pieces: encoding one message, the RFC 7252 timers, the cache
//! of answers to repeat for duplicate Confirmable requests, and responses as the client sees
//! them.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use rand::Rng;
use wardgate_coap::codec::{Code, Encoder, Message, MsgType, Token, opt};

/// Retransmission timers (RFC 7252 §4.8): a Confirmable message is sent again after
/// `ack_timeout` × a random factor in 1..`ack_random_factor`, doubling, at most
/// `max_retransmit` times; a separate response is awaited for `response_timeout` after the
/// empty ACK.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    /// ACK_TIMEOUT.
    pub ack_timeout: Duration,
    /// ACK_RANDOM_FACTOR.
    pub ack_random_factor: f64,
    /// MAX_RETRANSMIT.
    pub max_retransmit: u32,
    /// How long to wait for a separate response after an empty ACK.
    pub response_timeout: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            ack_timeout: Duration::from_secs(2),
            ack_random_factor: 1.5,
            max_retransmit: 4,
            response_timeout: Duration::from_secs(60),
        }
    }
}

impl Timing {
    /// The first retransmission timeout.
    pub(crate) fn initial(&self) -> Duration {
        let f = rand::rng().random_range(1.0..self.ack_random_factor.max(1.0 + f64::EPSILON));
        self.ack_timeout.mul_f64(f)
    }
}

/// A message to encode. Options may be added in any order (sorted, stably, when encoded).
#[derive(Debug, Clone)]
pub(crate) struct Msg {
    pub(crate) mtype: MsgType,
    pub(crate) code: Code,
    pub(crate) mid: u16,
    pub(crate) token: Token,
    pub(crate) options: Vec<(u16, Vec<u8>)>,
    pub(crate) payload: Vec<u8>,
}

impl Msg {
    pub(crate) fn new(mtype: MsgType, code: Code, mid: u16, token: Token) -> Msg {
        Msg {
            mtype,
            code,
            mid,
            token,
            options: Vec::new(),
            payload: Vec::new(),
        }
    }

    pub(crate) fn opt(mut self, number: u16, value: impl Into<Vec<u8>>) -> Msg {
        self.options.push((number, value.into()));
        self
    }

    pub(crate) fn uint(self, number: u16, v: u32) -> Msg {
        let (b, n) = wardgate_coap::codec::encode_uint(v);
        self.opt(number, b[4 - n..].to_vec())
    }

    pub(crate) fn path(mut self, segments: &[String]) -> Msg {
        for s in segments {
            self.options.push((opt::URI_PATH, s.as_bytes().to_vec()));
        }
        self
    }

    pub(crate) fn payload(mut self, p: Vec<u8>) -> Msg {
        self.payload = p;
        self
    }

    pub(crate) fn encode(mut self) -> Vec<u8> {
        self.options.sort_by_key(|(n, _)| *n);
        let mut buf = Vec::with_capacity(32 + self.payload.len());
        let mut e = Encoder::new(&mut buf, self.mtype, self.code, self.mid, self.token);
        for (n, v) in &self.options {
            // Sorted and short: the encoder cannot refuse them.
            let _ = e.option(*n, v);
        }
        e.payload(&self.payload);
        buf
    }
}

/// An empty ACK or RST for `mid`.
pub(crate) fn empty(mtype: MsgType, mid: u16) -> Vec<u8> {
    Msg::new(mtype, Code::EMPTY, mid, Token::EMPTY).encode()
}

pub(crate) fn random_token() -> Token {
    let b: [u8; 4] = rand::rng().random();
    Token::new(&b).unwrap_or_default()
}

/// A response from the server to one of the client's requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimResponse {
    /// Its code.
    pub code: Code,
    /// Content-Format.
    pub content_format: Option<u16>,
    /// Location-Path segments.
    pub location: Vec<String>,
    /// Max-Age.
    pub max_age: Option<u32>,
    /// Body (a diagnostic for errors).
    pub payload: Vec<u8>,
}

impl SimResponse {
    pub(crate) fn from_message(m: &Message<'_>) -> SimResponse {
        SimResponse {
            code: m.code,
            content_format: m.content_format(),
            location: m
                .values(opt::LOCATION_PATH)
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect(),
            max_age: m.uint_option(opt::MAX_AGE, 4).and_then(Result::ok),
            payload: m.payload.to_vec(),
        }
    }
}

/// The answers to the last few requests, by (peer, Message ID), sent again to a duplicate.
#[derive(Debug, Default)]
pub(crate) struct AnswerCache {
    entries: VecDeque<((SocketAddr, u16), Vec<u8>)>,
}

/// Enough to cover EXCHANGE_LIFETIME of a server sending with NSTART 1.
const ANSWERS_KEPT: usize = 64;

impl AnswerCache {
    pub(crate) fn get(&self, peer: SocketAddr, mid: u16) -> Option<&[u8]> {
        self.entries
            .iter()
            .find(|(k, _)| *k == (peer, mid))
            .map(|(_, v)| v.as_slice())
    }

    pub(crate) fn put(&mut self, peer: SocketAddr, mid: u16, bytes: Vec<u8>) {
        if self.entries.len() >= ANSWERS_KEPT {
            self.entries.pop_front();
        }
        self.entries.push_back(((peer, mid), bytes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_encode_with_options_sorted_and_parse_back() {
        let b = Msg::new(MsgType::Con, Code::POST, 7, Token::new(&[1, 2]).unwrap())
            .uint(opt::CONTENT_FORMAT, 40)
            .path(&["rd".into()])
            .opt(opt::URI_QUERY, "ep=x")
            .payload(b"</1/0>".to_vec())
            .encode();
        let m = Message::parse(&b).unwrap();
        assert_eq!((m.mtype, m.code, m.mid), (MsgType::Con, Code::POST, 7));
        assert_eq!(m.option(opt::URI_PATH), Some(&b"rd"[..]));
        assert_eq!(m.content_format(), Some(40));
        assert_eq!(m.payload, b"</1/0>");
    }

    #[test]
    fn the_answer_cache_is_bounded_and_keyed_by_peer_and_mid() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let mut c = AnswerCache::default();
        c.put(a, 1, vec![1]);
        assert_eq!(c.get(a, 1), Some(&[1u8][..]));
        assert_eq!(c.get(b, 1), None);
        for i in 0..ANSWERS_KEPT as u16 {
            c.put(b, 100 + i, vec![]);
        }
        assert_eq!(c.get(a, 1), None, "the oldest answer was evicted");
    }
}
