//! The admin API's listener: TCP, optionally TLS, with bounded connections.
//!
//! Implements axum's [`Listener`], so `axum::serve` (and its graceful shutdown) drives it.
//! Handshakes run concurrently in a [`JoinSet`] owned by the listener, each bounded by
//! [`HANDSHAKE_TIMEOUT`]; a slow or silent client never holds up the others. At most
//! [`MAX_CONNECTIONS`] connections (handshaking or serving) exist at once: past that, new TCP
//! connections wait in the kernel's backlog. A connection that sends nothing for
//! [`IDLE_TIMEOUT`] is closed.

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

use super::metrics::AdminMetrics;

/// Longest a TLS handshake may take.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections (handshaking or serving) at once.
pub(crate) const MAX_CONNECTIONS: usize = 64;
/// A connection that sends nothing for this long is closed.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

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

impl Connected<IncomingStream<'_, AdminListener>> for PeerInfo {
    fn connect_info(stream: IncomingStream<'_, AdminListener>) -> Self {
        *stream.remote_addr()
    }
}

type Handshake = Option<(Conn, PeerInfo)>;

/// The bound listener.
pub(crate) struct AdminListener {
    tcp: TcpListener,
    tls: Option<TlsAcceptor>,
    slots: Arc<Semaphore>,
    handshakes: JoinSet<Handshake>,
    metrics: AdminMetrics,
}

impl std::fmt::Debug for AdminListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminListener")
            .field("addr", &self.tcp.local_addr().ok())
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl AdminListener {
    pub(crate) fn new(
        tcp: TcpListener,
        tls: Option<TlsAcceptor>,
        metrics: AdminMetrics,
    ) -> AdminListener {
        AdminListener {
            tcp,
            tls,
            slots: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
            handshakes: JoinSet::new(),
            metrics,
        }
    }

    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

/// A free connection slot, then a TCP connection. Cancel-safe (both steps are).
async fn next_tcp(
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
                tracing::warn!(error = %e, "admin API accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

impl Listener for AdminListener {
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
                (tcp, addr, slot) = next_tcp(&self.tcp, &self.slots) => {
                    let Some(acceptor) = self.tls.clone() else {
                        let peer = PeerInfo { addr, tls: false, client_cert: None };
                        return (Conn::new(Io::Plain(tcp), slot), peer);
                    };
                    let metrics = self.metrics.clone();
                    self.handshakes.spawn(handshake(acceptor, tcp, addr, slot, metrics));
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
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    addr: SocketAddr,
    slot: OwnedSemaphorePermit,
    metrics: AdminMetrics,
) -> Handshake {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => {
            let client_cert = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|der| super::auth::sha256(der.as_ref()));
            let peer = PeerInfo {
                addr,
                tls: true,
                client_cert,
            };
            Some((Conn::new(Io::Tls(Box::new(tls)), slot), peer))
        }
        Ok(Err(e)) => {
            metrics.handshake_failed("error");
            // Debug only: anyone can make handshakes fail; the counter is the signal.
            tracing::debug!(peer = %addr, error = %e, "admin API TLS handshake failed");
            None
        }
        Err(_) => {
            metrics.handshake_failed("timeout");
            tracing::debug!(peer = %addr, "admin API TLS handshake timed out");
            None
        }
    }
}

enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// One accepted connection: the stream, its slot (released on drop) and its idle deadline.
pub(crate) struct Conn {
    io: Io,
    idle: Pin<Box<Sleep>>,
    _slot: OwnedSemaphorePermit,
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
    fn new(io: Io, slot: OwnedSemaphorePermit) -> Conn {
        Conn {
            io,
            idle: Box::pin(tokio::time::sleep(IDLE_TIMEOUT)),
            _slot: slot,
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
                if buf.filled().len() > before {
                    this.idle.as_mut().reset(Instant::now() + IDLE_TIMEOUT);
                }
                Poll::Ready(result)
            }
            Poll::Pending => match this.idle.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "admin API connection idle",
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
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
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
