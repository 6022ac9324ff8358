//! The client side: [`Requester`] sends requests over a socket task's message layer (the
//! endpoint's sockets or a [`CoapClient`]'s own), with block-wise transfer of large bodies.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::codec::{BlockOpt, Code, Token};
use crate::config::TransmissionConfig;
use crate::driver::{self, DriveOptions};
use crate::engine::{Command, Engine};
use crate::error::CoapError;
use crate::exchange::{BlockOpts, ClientRequest, ClientResponse, Notification};
use crate::layer::LayerConfig;
use crate::metrics::CoapMetrics;
use crate::transport::{SocketOptions, Transport, UdpTransport};

/// Commands a socket task buffers. Requesters wait for room (`send().await`): the socket task
/// never blocks on a requester, and a requester flooding it slows only itself.
pub(crate) const COMMAND_QUEUE: usize = 256;

/// Notifications buffered per observation; beyond, CON notifications are not acknowledged (the
/// server retransmits) and NON ones are dropped and counted.
const NOTIFICATION_QUEUE: usize = 16;

/// Largest body reassembled from Block2 responses.
const MAX_BLOCK2_BODY: usize = 1024 * 1024;

/// Payload size above which a request body is sent block-wise when no block size is set.
const DEFAULT_BLOCK: usize = 1024;

/// A handle to send requests from one socket's message layer. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Requester {
    tx: mpsc::Sender<Command>,
}

/// An observation in progress (RFC 7641).
#[derive(Debug)]
pub struct Observation {
    /// The token of the registration; notifications carry it.
    pub token: Token,
    /// The registration response first, then each notification. Ends when the observation ends
    /// (error response, response without Observe, registration timeout or reset). Boxed to keep
    /// the channel small.
    pub notifications: mpsc::Receiver<Box<Notification>>,
}

impl Requester {
    pub(crate) fn new(tx: mpsc::Sender<Command>) -> Self {
        Requester { tx }
    }

    async fn exchange(
        &self,
        peer: SocketAddr,
        req: ClientRequest,
        blocks: BlockOpts,
    ) -> Result<ClientResponse, CoapError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Request {
                peer,
                req,
                blocks,
                reply,
            })
            .await
            .map_err(|_| CoapError::Closed)?;
        rx.await.map_err(|_| CoapError::Closed)?
    }

    /// Sends `req` to `peer` and waits for the response (piggybacked or separate). Bodies larger
    /// than the block size go block-wise (Block1), adapting to a smaller size the server asks
    /// for; Block2 responses to GET/FETCH are followed and reassembled.
    pub async fn request(
        &self,
        peer: SocketAddr,
        mut req: ClientRequest,
    ) -> Result<ClientResponse, CoapError> {
        let block = req.block_size.map_or(DEFAULT_BLOCK, |s| {
            1usize << (BlockOpt::szx_for(usize::from(s)) + 4)
        });
        let first = if req.payload.len() > block {
            let body = std::mem::take(&mut req.payload);
            self.block1(peer, &req, &body, BlockOpt::szx_for(block))
                .await?
        } else {
            let blocks = BlockOpts {
                block2: req.block_size.map(|_| BlockOpt {
                    num: 0,
                    more: false,
                    szx: BlockOpt::szx_for(block),
                }),
                ..BlockOpts::default()
            };
            self.exchange(peer, req.clone(), blocks).await?
        };
        if matches!(req.method, Code::GET | Code::FETCH) {
            return self.follow_block2(peer, &req, first).await;
        }
        Ok(first)
    }

    async fn block1(
        &self,
        peer: SocketAddr,
        req: &ClientRequest,
        body: &[u8],
        mut szx: u8,
    ) -> Result<ClientResponse, CoapError> {
        let mut offset = 0usize;
        loop {
            let size = 1usize << (szx + 4);
            let end = (offset + size).min(body.len());
            let more = end < body.len();
            let num = u32::try_from(offset / size).map_err(|_| CoapError::TooLarge(body.len()))?;
            let mut r = req.clone();
            r.payload = body.get(offset..end).unwrap_or_default().to_vec();
            r.token = None;
            let blocks = BlockOpts {
                block1: Some(BlockOpt { num, more, szx }),
                size1: (num == 0).then(|| u32::try_from(body.len()).unwrap_or(u32::MAX)),
                block2: None,
            };
            let resp = self.exchange(peer, r, blocks).await?;
            if !more {
                return Ok(resp);
            }
            if resp.code() != Code::CONTINUE {
                return Ok(resp);
            }
            if let Some(b) = resp.block1() {
                if b.szx < szx {
                    szx = b.szx;
                }
            }
            offset = end;
        }
    }

    async fn follow_block2(
        &self,
        peer: SocketAddr,
        req: &ClientRequest,
        mut first: ClientResponse,
    ) -> Result<ClientResponse, CoapError> {
        let Some(mut b) = first.block2() else {
            return Ok(first);
        };
        while b.more {
            if first.payload().len() > MAX_BLOCK2_BODY {
                return Err(CoapError::TooLarge(first.payload().len()));
            }
            let next = BlockOpt {
                num: b.num + 1,
                more: false,
                szx: b.szx,
            };
            let mut r = req.clone();
            r.token = None;
            let blocks = BlockOpts {
                block2: Some(next),
                ..BlockOpts::default()
            };
            let resp = self.exchange(peer, r, blocks).await?;
            if !resp.is_success() {
                return Err(CoapError::Blockwise(resp.code()));
            }
            let Some(nb) = resp.block2() else {
                return Err(CoapError::BadResponse(
                    "Block2 missing in a follow-up block",
                ));
            };
            if nb.num != next.num {
                return Err(CoapError::BadResponse("Block2 number mismatch"));
            }
            first.payload_mut().extend_from_slice(resp.payload());
            b = nb;
        }
        Ok(first)
    }

    /// Registers an observation (the request gets Observe=0). The registration response and the
    /// notifications arrive on [`Observation::notifications`].
    pub async fn observe(
        &self,
        peer: SocketAddr,
        mut req: ClientRequest,
    ) -> Result<Observation, CoapError> {
        req.observe = Some(0);
        let (sink, notifications) = mpsc::channel(NOTIFICATION_QUEUE);
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Observe {
                peer,
                req,
                sink,
                reply,
            })
            .await
            .map_err(|_| CoapError::Closed)?;
        let token = rx.await.map_err(|_| CoapError::Closed)??;
        Ok(Observation {
            token,
            notifications,
        })
    }

    /// Cancels an observation actively (RFC 7641 §3.6): GET with Observe=1 and the same token.
    /// `req` must be the registration request.
    pub async fn cancel_observation(
        &self,
        peer: SocketAddr,
        mut req: ClientRequest,
        token: Token,
    ) -> Result<ClientResponse, CoapError> {
        req.observe = Some(1);
        req.token = Some(token);
        self.exchange(peer, req, BlockOpts::default()).await
    }

    /// Forgets an observation; its next notification is answered with RST (RFC 7641 §3.6).
    pub async fn forget(&self, token: Token) {
        let _ = self.tx.send(Command::Forget { token }).await;
    }
}

/// A standalone CoAP client on its own UDP socket (the demo sensors, tests). The socket task
/// stops when the client is dropped.
#[derive(Debug)]
pub struct CoapClient {
    requester: Requester,
    local: SocketAddr,
    _stop: DropGuard,
    task: JoinHandle<()>,
}

impl CoapClient {
    /// Binds `local` (port 0 for an ephemeral port) and starts the socket task.
    pub async fn bind(local: SocketAddr, tx: TransmissionConfig) -> Result<CoapClient, CoapError> {
        let transport = UdpTransport::bind(
            local,
            SocketOptions {
                recv_buffer_bytes: 0,
                send_buffer_bytes: 0,
            },
        )
        .map_err(|source| CoapError::Bind {
            addr: local,
            source,
        })?;
        CoapClient::over(transport, tx)
    }

    /// A client over `transport` (CoAP over DTLS with `wardgate_dtls::DtlsTransport` and a
    /// client credential for its server: the simulated ward's `coaps` devices). Starts the
    /// socket task; must be called inside a tokio runtime.
    pub fn over<T: Transport>(
        transport: T,
        tx: TransmissionConfig,
    ) -> Result<CoapClient, CoapError> {
        let local = transport.local_addr()?;
        let metrics = CoapMetrics::default();
        let max_datagram = 1280;
        let engine = Engine::new(
            Instant::now(),
            LayerConfig {
                transmission: tx,
                piggyback_budget: Duration::from_millis(500),
                dedup_max_entries: 4096,
                dedup_max_entries_per_source: 4096,
            },
            max_datagram,
            None,
            metrics.clone(),
        );
        let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
        let stop = CancellationToken::new();
        let observers_done = CancellationToken::new();
        observers_done.cancel();
        let task = tokio::spawn(driver::drive(
            Arc::new(transport),
            engine,
            cmd_rx,
            stop.clone(),
            DriveOptions {
                max_datagram,
                drain_timeout: Duration::ZERO,
                observers_done,
            },
            metrics,
        ));
        Ok(CoapClient {
            requester: Requester::new(cmd_tx),
            local,
            _stop: stop.drop_guard(),
            task,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Sends `req` to `peer` and waits for its response (see [`Requester::request`]).
    pub async fn request(
        &self,
        peer: SocketAddr,
        req: ClientRequest,
    ) -> Result<ClientResponse, CoapError> {
        self.requester.request(peer, req).await
    }

    /// A requester for this client's socket (e.g. for observing).
    pub fn requester(&self) -> Requester {
        self.requester.clone()
    }
}

impl Drop for CoapClient {
    fn drop(&mut self) {
        // The drop guard cancels the task; abort covers a task stuck in a send.
        self.task.abort();
    }
}
