//! The socket task: one per socket, owning its [`Engine`] (no lock). One `select!` polls, in
//! priority order, shutdown, the store commits and ACK decisions, requester commands, timers and
//! finally the socket, so a datagram flood cannot starve answers that are already due.

use std::future::poll_fn;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::engine::{Command, Engine};
use crate::metrics::{CoapMetrics, SendFailed};
use crate::transport::Transport;

/// How a socket task ends.
#[derive(Debug, Clone)]
pub(crate) struct DriveOptions {
    /// Largest accepted datagram.
    pub(crate) max_datagram: usize,
    /// After shutdown, how long to keep serving in-flight work at most.
    pub(crate) drain_timeout: Duration,
    /// Finish draining only once this is cancelled too (observers have deregistered).
    pub(crate) observers_done: CancellationToken,
}

async fn flush<T: Transport>(t: &T, engine: &mut Engine, metrics: &CoapMetrics) {
    let tx = engine.tx();
    for (peer, bytes) in tx.iter() {
        let r = match t.try_send_to(bytes, peer) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => t.send_to(bytes, peer).await,
            r => r,
        };
        if let Err(error) = r {
            SendFailed {
                peer,
                error: &error,
            }
            .emit(metrics);
        }
    }
    tx.clear();
}

/// Serves one socket until `shutdown` and the drain are over.
pub(crate) async fn drive<T: Transport>(
    transport: Arc<T>,
    mut engine: Engine,
    mut cmds: mpsc::Receiver<Command>,
    shutdown: CancellationToken,
    opts: DriveOptions,
    metrics: CoapMetrics,
) {
    // One byte more than the largest accepted datagram, to detect oversize (truncation).
    let mut buf = vec![0u8; opts.max_datagram + 1];
    let mut draining: Option<Instant> = None;
    let mut cmds_open = true;
    let mut recv_errors: u32 = 0;
    loop {
        flush(transport.as_ref(), &mut engine, &metrics).await;
        if draining.is_some() && engine.is_idle() && opts.observers_done.is_cancelled() {
            break;
        }
        let deadline = engine.next_deadline();
        tokio::select! {
            biased;
            () = shutdown.cancelled(), if draining.is_none() => {
                let grace = opts.drain_timeout.min(Duration::from_secs(3600));
                draining = Some(Instant::now() + grace);
                engine.stop_accepting();
            }
            // Wakes the loop to re-check the exit condition once the observers have finished.
            () = opts.observers_done.cancelled(),
                if draining.is_some() && !opts.observers_done.is_cancelled() => {}
            () = sleep_until(draining.unwrap_or_else(Instant::now)), if draining.is_some() => {
                tracing::debug!(
                    pending = engine.pending_commits(),
                    "CoAP drain deadline reached"
                );
                break;
            }
            c = poll_fn(|cx| engine.poll_completion(cx)) => engine.complete(Instant::now(), c),
            cmd = cmds.recv(), if cmds_open => match cmd {
                Some(c) => engine.command(Instant::now(), c),
                None => cmds_open = false,
            },
            () = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                engine.poll_timers(Instant::now());
            }
            r = transport.recv_from(&mut buf) => match r {
                Ok((n, peer)) => {
                    recv_errors = 0;
                    engine.handle_datagram(Instant::now(), peer, buf.get(..n).unwrap_or_default());
                }
                Err(e) => {
                    // ICMP errors surface here on some platforms; a persistent error must not spin.
                    tracing::debug!(error = %e, "CoAP receive error");
                    recv_errors = recv_errors.saturating_add(1);
                    if recv_errors > 100 {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            },
        }
    }
    flush(transport.as_ref(), &mut engine, &metrics).await;
}
