//! [`TapTransport`]: a [`Transport`] around another that hands a copy of every datagram the
//! CoAP endpoint receives or sends, with its [`PeerContext`] and the local address, to a
//! capture, and its metadata to the flow exporter.
//!
//! Why a wrapper and not a hook in the endpoint: the transport seam already sees every
//! datagram in both directions with its peer context (`Transport::peer`), so wrapping it needs
//! no change to the message layer, the socket task or the engine, costs nothing when capture is
//! off (one branch on an `Option`), and composes with any transport.
//!
//! What it sees is what the endpoint sees: for plain UDP, the datagrams on the wire. Wrapped
//! around the DTLS transport it would see decrypted CoAP, which is not what a capture of
//! `coaps` should hold; DTLS *records* are tapped inside `wardgate-dtls`, which owns that
//! socket and hands its raw datagrams to a [`MonitorTap`] (the core `DatagramTap` hook) with
//! the same capture and flow handles.

use std::io;
use std::net::SocketAddr;

use tokio::time::Instant;
use wardgate_coap::Transport;
use wardgate_core::PeerContext;

use crate::control::CaptureTap;
use crate::filter::protocol_name;
use crate::flow_io::FlowHandle;
use crate::pcapng::Direction;

/// A transport whose datagrams are offered to a capture (or passed through untouched when
/// there is none).
#[derive(Debug)]
pub struct TapTransport<T> {
    inner: T,
    local: SocketAddr,
    capture: Option<CaptureTap>,
    flows: Option<FlowHandle>,
}

impl<T: Transport> TapTransport<T> {
    /// Wraps `inner`; `None` passes everything through without copying. A
    /// [`crate::CaptureHandle`] converts into a fixed tap; [`crate::CaptureControl::tap`] gives
    /// one that follows the captures started and stopped at run time.
    pub fn new(inner: T, capture: Option<CaptureTap>) -> io::Result<Self> {
        let local = inner.local_addr()?;
        Ok(TapTransport {
            inner,
            local,
            capture,
            flows: None,
        })
    }

    /// Also hands every datagram's metadata to the flow exporter (`None`: no flows).
    #[must_use]
    pub fn with_flows(mut self, flows: Option<FlowHandle>) -> Self {
        self.flows = flows;
        self
    }

    /// The wrapped transport.
    pub fn inner(&self) -> &T {
        &self.inner
    }

    fn tap(&self, direction: Direction, addr: SocketAddr, bytes: &[u8]) {
        if self.capture.is_none() && self.flows.is_none() {
            return;
        }
        let peer = self.inner.peer(addr);
        if let Some(c) = &self.capture {
            c.offer(direction, &peer, self.local, bytes);
        }
        if let Some(f) = &self.flows {
            f.offer(
                direction,
                &peer,
                self.local,
                protocol_name(peer.transport),
                bytes,
            );
        }
    }
}

impl<T: Transport> Transport for TapTransport<T> {
    // Cancel-safe like the inner future: nothing after its completion awaits.
    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let got = self.inner.recv_from(buf).await;
        if let Ok((n, addr)) = &got {
            self.tap(Direction::Inbound, *addr, buf.get(..*n).unwrap_or(buf));
        }
        got
    }

    fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let got = self.inner.try_recv_from(buf);
        if let Ok((n, addr)) = &got {
            self.tap(Direction::Inbound, *addr, buf.get(..*n).unwrap_or(buf));
        }
        got
    }

    fn try_send_to(&self, buf: &[u8], peer: SocketAddr) -> io::Result<usize> {
        let sent = self.inner.try_send_to(buf, peer);
        if let Ok(n) = &sent {
            self.tap(Direction::Outbound, peer, buf.get(..*n).unwrap_or(buf));
        }
        sent
    }

    async fn send_to(&self, buf: &[u8], peer: SocketAddr) -> io::Result<usize> {
        let sent = self.inner.send_to(buf, peer).await;
        if let Ok(n) = &sent {
            self.tap(Direction::Outbound, peer, buf.get(..*n).unwrap_or(buf));
        }
        sent
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn peer(&self, addr: SocketAddr) -> PeerContext {
        self.inner.peer(addr)
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.inner.next_deadline()
    }

    fn poll_timers(&self, now: Instant) {
        self.inner.poll_timers(now);
    }
}

/// The monitor as a [`wardgate_core::DatagramTap`]: for transports that own their socket (DTLS),
/// which hand it their raw datagrams (records, not decrypted CoAP). Same capture and flow
/// handles as [`TapTransport`].
#[derive(Debug, Clone)]
pub struct MonitorTap {
    capture: Option<CaptureTap>,
    flows: Option<FlowHandle>,
}

impl MonitorTap {
    /// A tap offering to `capture` and `flows`; `None` when both are `None` (nothing to tap).
    pub fn new(capture: Option<CaptureTap>, flows: Option<FlowHandle>) -> Option<Self> {
        (capture.is_some() || flows.is_some()).then_some(MonitorTap { capture, flows })
    }
}

impl wardgate_core::DatagramTap for MonitorTap {
    fn datagram(&self, inbound: bool, peer: &PeerContext, local: SocketAddr, bytes: &[u8]) {
        let direction = Direction::of(inbound);
        if let Some(c) = &self.capture {
            c.offer(direction, peer, local, bytes);
        }
        if let Some(f) = &self.flows {
            f.offer(direction, peer, local, protocol_name(peer.transport), bytes);
        }
    }

    /// Refused credentials on a stream session count for the `auth_failures` detector.
    fn auth_failure(&self, peer: &PeerContext, _local: SocketAddr) {
        if let Some(f) = &self.flows {
            f.auth_failure(peer);
        }
    }

    fn wants_session_keys(&self) -> bool {
        self.capture
            .as_ref()
            .is_some_and(CaptureTap::wants_session_keys)
    }

    fn session_keys(
        &self,
        peer: &PeerContext,
        _local: SocketAddr,
        client_random: &[u8; 32],
        master_secret: &[u8; 48],
    ) {
        if let Some(c) = &self.capture {
            c.session_keys(peer, client_random, master_secret);
        }
    }

    fn handshake(&self, peer: &PeerContext, local: SocketAddr, outcome: &'static str) {
        if let Some(f) = &self.flows {
            f.handshake(peer, local, protocol_name(peer.transport), outcome);
        }
    }

    /// Stream sessions (HTTPS ingest) become flows (`protocol` 6, `app_protocol` `https` or
    /// `http`), each read and write a "packet" of its length, and captured as TCP segments of
    /// that length with zeroed bytes (the session's metadata: the bytes at the tap are
    /// plaintext patient data above TLS, so none of them is written, whatever the redaction
    /// setting).
    fn stream(&self, inbound: bool, peer: &PeerContext, local: SocketAddr, len: usize) {
        let direction = Direction::of(inbound);
        if let Some(c) = &self.capture {
            c.offer_segment(direction, peer, local, len);
        }
        if let Some(f) = &self.flows {
            f.offer_segment(direction, peer, local, protocol_name(peer.transport), len);
        }
    }
}
