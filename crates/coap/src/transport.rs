//! The transport seam under the message layer: datagrams in and out, addressed by peer.
//!
//! UDP is [`UdpTransport`]. DTLS (RFC 7925 profile) is the second implementation, in the
//! `wardgate-dtls` crate: it owns the handshakes and records per peer and hands the message layer
//! plaintext CoAP datagrams; the message layer, the endpoint and the client stay as they are.
//! A transport names each datagram's sender as a [`PeerContext`] (a DTLS transport adds the
//! PSK identity or certificate fingerprint its handshake proved), and may ask the socket task
//! for timers (handshake retransmission, session expiry).

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::time::Instant;
use wardgate_core::{PeerContext, TransportKind};

/// A datagram transport shared by the message layer's single task.
pub trait Transport: Send + Sync + 'static {
    /// Receives one plaintext CoAP datagram into `buf`; a datagram longer than `buf` is
    /// truncated to `buf.len()` (so the caller sizes `buf` one byte larger than the largest
    /// accepted datagram to detect oversize). Must be cancel-safe: it is polled in a `select!`.
    fn recv_from(
        &self,
        buf: &mut [u8],
    ) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send;

    /// Receives one datagram if one is ready, without waiting: `WouldBlock` when none is. Lets the
    /// socket task take a burst of datagrams per wake-up instead of one per trip through its
    /// `select!`. Same truncation rule as [`Transport::recv_from`].
    fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)>;

    /// Sends without waiting; `WouldBlock` when the transport cannot take it now.
    fn try_send_to(&self, buf: &[u8], peer: SocketAddr) -> io::Result<usize>;

    /// Sends, waiting for room.
    fn send_to(
        &self,
        buf: &[u8],
        peer: SocketAddr,
    ) -> impl Future<Output = io::Result<usize>> + Send;

    /// The bound address.
    fn local_addr(&self) -> io::Result<SocketAddr>;

    /// Short scheme-like name for health details and logs (`udp`, `dtls`).
    fn kind(&self) -> &'static str;

    /// The peer context of a datagram from `addr`: its address, this transport's kind and
    /// whatever identity the transport proved for it.
    fn peer(&self, addr: SocketAddr) -> PeerContext;

    /// When [`Transport::poll_timers`] next has work (none for plain UDP).
    fn next_deadline(&self) -> Option<Instant> {
        None
    }

    /// Runs the transport's due timers; called from the socket task.
    fn poll_timers(&self, _now: Instant) {}
}

/// Plain UDP.
#[derive(Debug)]
pub struct UdpTransport {
    socket: UdpSocket,
}

/// Socket options applied when binding.
#[derive(Debug, Clone, Copy)]
pub struct SocketOptions {
    /// SO_RCVBUF in bytes (0 = kernel default).
    pub recv_buffer_bytes: usize,
    /// SO_SNDBUF in bytes (0 = kernel default).
    pub send_buffer_bytes: usize,
}

impl UdpTransport {
    /// Binds a non-blocking UDP socket: IPV6_V6ONLY on IPv6 so `0.0.0.0` and `[::]` can share a
    /// port, buffer sizes from `opts`. Must be called inside a tokio runtime.
    pub fn bind(addr: SocketAddr, opts: SocketOptions) -> io::Result<UdpTransport> {
        let domain = if addr.is_ipv4() {
            Domain::IPV4
        } else {
            Domain::IPV6
        };
        let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
        if addr.is_ipv6() {
            socket.set_only_v6(true)?;
        }
        if opts.recv_buffer_bytes > 0 {
            socket.set_recv_buffer_size(opts.recv_buffer_bytes)?;
        }
        if opts.send_buffer_bytes > 0 {
            socket.set_send_buffer_size(opts.send_buffer_bytes)?;
        }
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        let socket = UdpSocket::from_std(socket.into())?;
        Ok(UdpTransport { socket })
    }
}

impl Transport for UdpTransport {
    fn recv_from(
        &self,
        buf: &mut [u8],
    ) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send {
        self.socket.recv_from(buf)
    }

    fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.socket.try_recv_from(buf)
    }

    fn try_send_to(&self, buf: &[u8], peer: SocketAddr) -> io::Result<usize> {
        self.socket.try_send_to(buf, peer)
    }

    fn send_to(
        &self,
        buf: &[u8],
        peer: SocketAddr,
    ) -> impl Future<Output = io::Result<usize>> + Send {
        self.socket.send_to(buf, peer)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    fn kind(&self) -> &'static str {
        "udp"
    }

    fn peer(&self, addr: SocketAddr) -> PeerContext {
        PeerContext::new(addr, TransportKind::Udp)
    }
}
