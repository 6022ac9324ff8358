//! `udp-echo`: the loopback ceiling ("limit-udp"). A blocking std UDP loop that answers every
//! CoAP request with the smallest correct answer, 2.01 Created: piggybacked in an ACK for a CON,
//! a NON response for a NON. No parsing beyond the fixed header, no state: what a CoAP server
//! could do at most on this machine's loopback with one socket and one thread.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::error::BenchError;
use crate::target::loopback_addr;

/// Arguments of `udp-echo`.
#[derive(Debug, Clone, clap::Args)]
pub struct UdpEchoArgs {
    /// Address to listen on (loopback only).
    #[arg(long, default_value = "127.0.0.1:5683")]
    pub listen: String,
    /// Exit after this many seconds (the server is bounded like every other part of the
    /// harness).
    #[arg(long, default_value_t = 3600.0)]
    pub max_seconds: f64,
}

/// Builds the answer to one request datagram into `out`; `None` for anything that is not a
/// CON or NON request.
pub fn answer(req: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let [b0, code, mid_hi, mid_lo, rest @ ..] = req else {
        return None;
    };
    let tkl = usize::from(b0 & 0x0F);
    let msg_type = (b0 >> 4) & 0x3;
    if b0 >> 6 != 1 || tkl > 8 || msg_type > 1 || !(1..=31).contains(code) {
        return None;
    }
    let token = rest.get(..tkl)?;
    out.clear();
    if msg_type == 0 {
        // ACK, same Message ID, 2.01.
        out.extend_from_slice(&[0x60 | (tkl as u8), 0x41, *mid_hi, *mid_lo]);
    } else {
        // NON response; reusing the request's Message ID is fine for a stateless echo.
        out.extend_from_slice(&[0x50 | (tkl as u8), 0x41, *mid_hi, *mid_lo]);
    }
    out.extend_from_slice(token);
    Some(())
}

/// Receive buffer asked for, bytes: the same as wardgate's shipped `recv_buffer_bytes`, so the
/// ceiling is not lowered by drops a real server would configure away. Best effort (capped by
/// `net.core.rmem_max`).
const RECV_BUFFER: usize = 4 << 20;

/// Binds the socket (so a caller can learn the port) and returns it.
pub fn bind(listen: &str) -> Result<UdpSocket, BenchError> {
    let addr: SocketAddr = loopback_addr(listen)?;
    let sock = UdpSocket::bind(addr).map_err(|e| BenchError::io(format!("bind {addr}"), e))?;
    let _ = socket2::SockRef::from(&sock).set_recv_buffer_size(RECV_BUFFER);
    Ok(sock)
}

/// Serves until `stop` is set or `max` elapsed. Returns the number of answers sent.
pub fn serve(sock: &UdpSocket, stop: &AtomicBool, max: Duration) -> Result<u64, BenchError> {
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(|e| BenchError::io("set read timeout", e))?;
    let until = Instant::now() + max;
    let mut buf = [0u8; 2048];
    let mut out = Vec::with_capacity(16);
    let mut answered = 0u64;
    while !stop.load(Ordering::Relaxed) && Instant::now() < until {
        let (n, peer) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            // ECONNREFUSED from an earlier send to a closed client port: keep serving.
            Err(_) => continue,
        };
        if answer(buf.get(..n).unwrap_or(&[]), &mut out).is_some()
            && sock.send_to(&out, peer).is_ok()
        {
            answered += 1;
        }
    }
    Ok(answered)
}

/// The `udp-echo` command: serve until the time limit (or the process is signalled).
pub fn run(args: &UdpEchoArgs) -> Result<(), BenchError> {
    let sock = bind(&args.listen)?;
    let local = sock
        .local_addr()
        .map_err(|e| BenchError::io("local addr", e))?;
    eprintln!("udp-echo listening on {local}");
    let stop = Arc::new(AtomicBool::new(false));
    serve(
        &sock,
        &stop,
        Duration::from_secs_f64(args.max_seconds.clamp(0.0, 86_400.0)),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn con_request_gets_piggybacked_created_with_its_token() {
        let req = [0x42, 0x02, 0xAB, 0xCD, 0x11, 0x22, 0xB2, b'v', b'1'];
        let mut out = Vec::new();
        assert!(answer(&req, &mut out).is_some());
        assert_eq!(out, [0x62, 0x41, 0xAB, 0xCD, 0x11, 0x22]);
    }

    #[test]
    fn non_request_gets_non_created() {
        let req = [0x51, 0x02, 0, 7, 9];
        let mut out = Vec::new();
        assert!(answer(&req, &mut out).is_some());
        assert_eq!(out, [0x51, 0x41, 0, 7, 9]);
    }

    #[test]
    fn acks_resets_responses_and_garbage_get_no_answer() {
        let mut out = Vec::new();
        assert!(answer(&[0x60, 0, 0, 1], &mut out).is_none(), "empty ACK");
        assert!(answer(&[0x70, 0, 0, 1], &mut out).is_none(), "RST");
        assert!(
            answer(&[0x40, 0x41, 0, 1], &mut out).is_none(),
            "a response, not a request"
        );
        assert!(
            answer(&[0x48, 0x02, 0, 1, 1], &mut out).is_none(),
            "token shorter than TKL"
        );
        assert!(answer(&[], &mut out).is_none());
        assert!(answer(&[0xFF; 3], &mut out).is_none());
    }
}
