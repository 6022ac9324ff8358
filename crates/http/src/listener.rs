//! The TCP listener of the admin API and the ingest server: optionally TLS, with bounded
//! connections.
//!
//! Implements axum's [`Listener`], so `axum::serve` (and its graceful shutdown) can drive it;
//! the ingest server calls [`Listener::accept`] itself. Handshakes run concurrently in a
//! [`JoinSet`] owned by the listener, each bounded by [`Limits::handshake_timeout`]; a slow or
//! silent client never holds up the others. At most [`Limits::max_connections`] connections
//! (handshaking or serving) exist at once: past that, new TCP connections wait in the kernel's
//! backlog. A connection on which nothing is read or written for [`Limits::idle_timeout`] is
//! closed.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use wardgate_core::{DatagramTap, PeerContext, TransportKind};

/// The listener's bounds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Longest a TLS handshake may take.
    pub(crate) handshake_timeout: Duration,
    /// Connections (handshaking or serving) at once.
    pub(crate) max_connections: usize,
    /// A connection that sends nothing for this long is closed.
    pub(crate) idle_timeout: Duration,
}

/// Told about every failed handshake: `error` or `timeout` (a metric label).
pub(crate) type OnHandshakeFailure = Arc<dyn Fn(&'static str) + Send + Sync>;

/// The traffic monitor's view of a stream listener's sessions: each connection's handshake
/// outcome and the length of every read and write (`DatagramTap::stream`), never the bytes.
#[derive(Debug, Clone)]
pub(crate) struct SessionTap {
    tap: Arc<dyn DatagramTap>,
    local: SocketAddr,
}

impl SessionTap {
    fn peer(addr: SocketAddr, tls: bool) -> PeerContext {
        let kind = if tls {
            TransportKind::Https
        } else {
            TransportKind::Http
        };
        PeerContext::new(addr, kind)
    }
}

/// Who is on the other end of a connection, as the transport proved it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerInfo {
    /// The peer's address.
    pub(crate) addr: SocketAddr,
    /// Whether the connection is TLS.
    pub(crate) tls: bool,
    /// SHA-256 of the client certificate's DER, when one was presented and verified against
    /// `client_ca_file` (rustls refuses the handshake otherwise).
    pub(crate) client_cert: Option<[u8; 32]>,
}

impl Connected<IncomingStream<'_, BoundedListener>> for PeerInfo {
    fn connect_info(stream: IncomingStream<'_, BoundedListener>) -> Self {
        *stream.remote_addr()
    }
}

type Handshake = Option<(Conn, PeerInfo)>;

/// The bound listener.
pub(crate) struct BoundedListener {
    /// For log lines: `admin API`, `ingest`.
    what: &'static str,
    tcp: TcpListener,
    tls: Option<TlsAcceptor>,
    slots: Arc<Semaphore>,
    handshakes: JoinSet<Handshake>,
    limits: Limits,
    on_failure: OnHandshakeFailure,
    tap: Option<SessionTap>,
}

impl std::fmt::Debug for BoundedListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundedListener")
            .field("what", &self.what)
            .field("addr", &self.tcp.local_addr().ok())
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl BoundedListener {
    pub(crate) fn new(
        what: &'static str,
        tcp: TcpListener,
        tls: Option<TlsAcceptor>,
        limits: Limits,
        on_failure: OnHandshakeFailure,
    ) -> BoundedListener {
        BoundedListener {
            what,
            tcp,
            tls,
            slots: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            handshakes: JoinSet::new(),
            limits,
            on_failure,
            tap: None,
        }
    }

    /// Hands every connection's handshake outcome and read and write lengths to `tap`.
    pub(crate) fn with_tap(mut self, tap: Option<Arc<dyn DatagramTap>>) -> io::Result<Self> {
        self.tap = match tap {
            Some(tap) => Some(SessionTap {
                tap,
                local: self.tcp.local_addr()?,
            }),
            None => None,
        };
        Ok(self)
    }

    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

/// A free connection slot, then a TCP connection. Cancel-safe (both steps are).
async fn next_tcp(
    what: &'static str,
    tcp: &TcpListener,
    slots: &Arc<Semaphore>,
) -> (TcpStream, SocketAddr, OwnedSemaphorePermit) {
    let slot = match slots.clone().acquire_owned().await {
        Ok(slot) => slot,
        // The semaphore is never closed.
        Err(_) => std::future::pending().await,
    };
    loop {
        match tcp.accept().await {
            Ok((stream, addr)) => return (stream, addr, slot),
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(listener = what, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

impl Listener for BoundedListener {
    type Io = Conn;
    type Addr = PeerInfo;

    async fn accept(&mut self) -> (Conn, PeerInfo) {
        loop {
            tokio::select! {
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    if let Ok(Some(ready)) = done {
                        return ready;
                    }
                }
                (tcp, addr, slot) = next_tcp(self.what, &self.tcp, &self.slots) => {
                    let idle = self.limits.idle_timeout;
                    let Some(acceptor) = self.tls.clone() else {
                        let peer = PeerInfo { addr, tls: false, client_cert: None };
                        let tap = self.tap.clone().map(|t| (SessionTap::peer(addr, false), t));
                        return (Conn::new(Io::Plain(tcp), slot, idle, tap), peer);
                    };
                    self.handshakes.spawn(handshake(
                        self.what,
                        acceptor,
                        (tcp, addr, slot),
                        self.limits,
                        self.on_failure.clone(),
                        self.tap.clone(),
                    ));
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<PeerInfo> {
        Ok(PeerInfo {
            addr: self.tcp.local_addr()?,
            tls: self.tls.is_some(),
            client_cert: None,
        })
    }
}

async fn handshake(
    what: &'static str,
    acceptor: TlsAcceptor,
    (tcp, addr, slot): (TcpStream, SocketAddr, OwnedSemaphorePermit),
    limits: Limits,
    on_failure: OnHandshakeFailure,
    tap: Option<SessionTap>,
) -> Handshake {
    let ctx = SessionTap::peer(addr, true);
    let outcome = |what: &'static str| {
        if let Some(t) = &tap {
            t.tap.handshake(&ctx, t.local, what);
        }
    };
    match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => {
            let client_cert = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|der| sha256(der.as_ref()));
            let peer = PeerInfo {
                addr,
                tls: true,
                client_cert,
            };
            outcome("established");
            let tap = tap.map(|t| (ctx.clone(), t));
            let conn = Conn::new(Io::Tls(Box::new(tls)), slot, limits.idle_timeout, tap);
            Some((conn, peer))
        }
        Ok(Err(e)) => {
            on_failure("error");
            outcome("error");
            // Debug only: anyone can make handshakes fail; the counter is the signal.
            tracing::debug!(listener = what, peer = %addr, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            on_failure("timeout");
            outcome("timeout");
            tracing::debug!(listener = what, peer = %addr, "TLS handshake timed out");
            None
        }
    }
}

/// SHA-256 of `bytes`.
pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// One accepted connection: the stream, its slot (released on drop) and its idle deadline.
pub(crate) struct Conn {
    io: Io,
    idle: Pin<Box<Sleep>>,
    idle_timeout: Duration,
    _slot: OwnedSemaphorePermit,
    tap: Option<(PeerContext, SessionTap)>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.io {
            Io::Plain(_) => "plain",
            Io::Tls(_) => "tls",
        };
        f.debug_struct("Conn")
            .field("io", &kind)
            .finish_non_exhaustive()
    }
}

impl Conn {
    fn new(
        io: Io,
        slot: OwnedSemaphorePermit,
        idle_timeout: Duration,
        tap: Option<(PeerContext, SessionTap)>,
    ) -> Conn {
        Conn {
            io,
            idle: Box::pin(tokio::time::sleep(idle_timeout)),
            idle_timeout,
            _slot: slot,
            tap,
        }
    }

    fn tapped(&self, inbound: bool, len: usize) {
        if let (Some((peer, t)), true) = (&self.tap, len > 0) {
            t.tap.stream(inbound, peer, t.local, len);
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let polled = match &mut this.io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s).poll_read(cx, buf),
        };
        match polled {
            Poll::Ready(result) => {
                let read = buf.filled().len() - before;
                if read > 0 {
                    this.idle.as_mut().reset(Instant::now() + this.idle_timeout);
                    this.tapped(true, read);
                }
                Poll::Ready(result)
            }
            Poll::Pending => match this.idle.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "connection idle",
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let polled = match &mut this.io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s).poll_write(cx, buf),
        };
        if let Poll::Ready(Ok(n)) = &polled {
            // A long answer the peer keeps reading (the status page's live feed) is not idle;
            // a peer that stops reading stops these writes, and the read side times it out.
            if *n > 0 {
                this.idle.as_mut().reset(Instant::now() + this.idle_timeout);
            }
            this.tapped(false, *n);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
