//! Errors of the CoAP crate.

use std::io;
use std::net::SocketAddr;

use crate::codec::{Code, EncodeError};

/// Errors at the crate's boundary: binding, client exchanges, observe targets.
#[derive(Debug, thiserror::Error)]
pub enum CoapError {
    /// A `listen` address could not be bound.
    #[error("cannot bind CoAP socket {addr}: {source}")]
    Bind {
        /// The address from the configuration.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// A socket failed outside binding.
    #[error("CoAP socket error: {0}")]
    Io(#[from] io::Error),
    /// The peer did not acknowledge or answer in time.
    #[error("no response from {0}")]
    Timeout(SocketAddr),
    /// The peer rejected the message with a Reset.
    #[error("{0} reset the exchange")]
    Reset(SocketAddr),
    /// A request to an address learned from unauthenticated traffic was not sent: the address
    /// has not answered one of our requests yet, and the request would exceed 3× the bytes
    /// received from it (RFC 7252 §11.3). It can go once the peer sends more.
    #[error(
        "request to {0} not sent: the address has not proven it receives there and its amplification budget (3x the bytes it sent) is spent; waiting for it to send again"
    )]
    AddressUnproven(SocketAddr),
    /// Too many requests already wait for this peer (NSTART queue full).
    #[error("too many requests queued for {0}")]
    Busy(SocketAddr),
    /// The request could not be encoded.
    #[error("request cannot be encoded: {0}")]
    Encode(#[from] EncodeError),
    /// The request does not fit in one datagram and block-wise transfer was not possible.
    #[error("request of {0} bytes does not fit in a datagram")]
    TooLarge(usize),
    /// The message layer task is gone (shut down).
    #[error("CoAP endpoint is shut down")]
    Closed,
    /// The peer's response is unusable.
    #[error("invalid response: {0}")]
    BadResponse(&'static str),
    /// A block-wise transfer was refused by the peer.
    #[error("block-wise transfer failed with {0}")]
    Blockwise(Code),
    /// An observe target URI is not usable.
    #[error("invalid URI {uri:?}: {reason}")]
    InvalidUri {
        /// The URI as configured.
        uri: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// An observe target's host did not resolve to an address the endpoint can reach.
    #[error("cannot resolve {host}: {reason}")]
    Resolve {
        /// Host name.
        host: String,
        /// Why.
        reason: String,
    },
}
