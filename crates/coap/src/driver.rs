//! The socket task: one per socket, owning its [`Engine`] (no lock). One `select!` polls, in
//! priority order, shutdown, the store commits and ACK decisions, requester commands, timers and
//! finally the socket, so a datagram flood cannot starve answers that are already due.

use std::future::poll_fn;
use std::io;
use std::sync::Arc;
use std::task::Poll;
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

/// Most datagrams (and most resolved commits) taken per wake-up before the queued answers are
/// sent and the other branches get a turn.
const BURST: usize = 32;

/// Serves one socket until `shutdown` and the drain are over.
///
/// Cost per datagram matters here (it is the ingest hot path): the timers and the cancellation
/// waits are created once and re-armed only when their deadline changes, and after every wake-up
/// the task takes what else is ready (resolved commits, then datagrams, up to [`BURST`] each)
/// without another trip through the `select!`.
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
    let mut draining = false;
    let mut cmds_open = true;
    let mut recv_errors: u32 = 0;
    let shutdown_wait = shutdown.cancelled();
    let observers_wait = opts.observers_done.cancelled();
    // Parked far away until armed; `armed` is the deadline it was last set to.
    let timer = sleep_until(Instant::now() + PARKED);
    let drain_timer = sleep_until(Instant::now() + PARKED);
    tokio::pin!(shutdown_wait, observers_wait, timer, drain_timer);
    let mut armed: Option<Instant> = None;
    loop {
        flush(transport.as_ref(), &mut engine, &metrics).await;
        if draining && engine.is_idle() && opts.observers_done.is_cancelled() {
            break;
        }
        let deadline = match (engine.next_deadline(), transport.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if deadline != armed {
            if let Some(d) = deadline {
                timer.as_mut().reset(d);
            }
            armed = deadline;
        }
        tokio::select! {
            biased;
            () = &mut shutdown_wait, if !draining => {
                let grace = opts.drain_timeout.min(Duration::from_secs(3600));
                drain_timer.as_mut().reset(Instant::now() + grace);
                draining = true;
                engine.stop_accepting();
            }
            // Wakes the loop to re-check the exit condition once the observers have finished.
            () = &mut observers_wait, if draining && !opts.observers_done.is_cancelled() => {}
            () = &mut drain_timer, if draining => {
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
            () = &mut timer, if armed.is_some() => {
                armed = None;
                let now = Instant::now();
                transport.poll_timers(now);
                engine.poll_timers(now);
            }
            r = transport.recv_from(&mut buf) => match r {
                Ok((n, peer)) => {
                    recv_errors = 0;
                    engine.handle_datagram(Instant::now(), &transport.peer(peer), buf.get(..n).unwrap_or_default());
                }
                Err(e) => {
                    recv_error(&e, &mut recv_errors).await;
                    continue;
                }
            },
        }
        // What else is ready, without waiting: answers first, then new datagrams. Each item
        // spends one unit of tokio's cooperative budget, so a flooded socket still yields the
        // worker to the uplinks and the store writer as often as one awaited receive per item
        // would.
        for _ in 0..BURST {
            let ready = poll_fn(|cx| match engine.poll_completion(cx) {
                Poll::Ready(c) => Poll::Ready(Some(c)),
                Poll::Pending => Poll::Ready(None),
            })
            .await;
            let Some(c) = ready else { break };
            engine.complete(Instant::now(), c);
            tokio::task::consume_budget().await;
        }
        for _ in 0..BURST {
            match transport.try_recv_from(&mut buf) {
                Ok((n, peer)) => {
                    recv_errors = 0;
                    engine.handle_datagram(
                        Instant::now(),
                        &transport.peer(peer),
                        buf.get(..n).unwrap_or_default(),
                    );
                    tokio::task::consume_budget().await;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    recv_error(&e, &mut recv_errors).await;
                    break;
                }
            }
        }
    }
    flush(transport.as_ref(), &mut engine, &metrics).await;
}

/// Where an unarmed timer waits: far enough never to fire, near enough not to overflow.
const PARKED: Duration = Duration::from_secs(86_400 * 365);

/// ICMP errors surface as receive errors on some platforms; a persistent error must not spin.
async fn recv_error(e: &io::Error, count: &mut u32) {
    tracing::debug!(error = %e, "CoAP receive error");
    *count = count.saturating_add(1);
    if *count > 100 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
