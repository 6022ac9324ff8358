//! `lwm2m-storm`: many LwM2M clients register with a server as fast as it takes them, answer the
//! observation the server then asks for, and send Confirmable notifications (closed loop, each
//! acknowledged only once the gateway made its reading durable).
//!
//! Each client has its own UDP socket on its own loopback address (127.4.x.y), as real devices
//! have their own addresses; the clients are tokio tasks on one thread. The messages are
//! hand-built CoAP (a Register with a small object list; a piggybacked 2.05 with Observe and a
//! SenML JSON temperature; CON notifications), so the generator costs little next to the server.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::net::UdpSocket;
use tokio::sync::{Mutex, Semaphore};

use crate::error::BenchError;

/// Arguments of `lwm2m-storm`.
#[derive(Debug, Clone, clap::Args)]
pub struct StormArgs {
    /// The server (`127.0.0.1:5683`).
    #[arg(long)]
    pub target: SocketAddr,
    /// How many clients register.
    #[arg(long, default_value_t = 10_000)]
    pub clients: u32,
    /// Registrations in flight at once.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Endpoint name prefix (`storm-0`, `storm-1`, ...).
    #[arg(long, default_value = "storm")]
    pub prefix: String,
    /// Wait this long (seconds) for the server to observe each client after registering; 0
    /// skips observation and notifications.
    #[arg(long, default_value_t = 30)]
    pub observe_wait: u64,
    /// Confirmable notifications each observed client sends (closed loop).
    #[arg(long, default_value_t = 5)]
    pub notifications: u32,
    /// Registration lifetime (seconds).
    #[arg(long, default_value_t = 3600)]
    pub lifetime: u32,
}

/// One run's figures.
#[derive(Debug, serde::Serialize)]
pub struct StormReport {
    /// Clients started.
    pub clients: u32,
    /// Registrations answered 2.01.
    pub registered: u64,
    /// Registrations that failed (no answer after retransmissions, or an error code).
    pub register_failed: u64,
    /// From the first Register sent to the last 2.01.
    pub register_seconds: f64,
    /// Registrations per second over that span.
    pub registrations_per_s: f64,
    /// Register round trip, median and 99th percentile (ms).
    pub register_p50_ms: f64,
    /// 99th percentile.
    pub register_p99_ms: f64,
    /// Clients the server observed (its GET with Observe arrived and was answered).
    pub observed: u64,
    /// From the first 2.01 to the last observation set up.
    pub observe_seconds: f64,
    /// Notifications acknowledged by the gateway (durable).
    pub notifications_acked: u64,
    /// Notifications not acknowledged after retransmissions.
    pub notifications_lost: u64,
    /// Span of the notification phase.
    pub notify_seconds: f64,
    /// Acknowledged notifications per second.
    pub notifications_per_s: f64,
    /// Notification round trip (send → ACK), median and 99th percentile (ms).
    pub notify_p50_ms: f64,
    /// 99th percentile.
    pub notify_p99_ms: f64,
}

#[derive(Default)]
struct Totals {
    registered: AtomicU64,
    register_failed: AtomicU64,
    observed: AtomicU64,
    acked: AtomicU64,
    lost: AtomicU64,
    last_registered: Mutex<Option<Instant>>,
    last_observed: Mutex<Option<Instant>>,
    first_notify: Mutex<Option<Instant>>,
    last_ack: Mutex<Option<Instant>>,
}

const ACK_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_TRIES: u32 = 5;

fn address(i: u32) -> Ipv4Addr {
    // 127.4.0.1 .. : 250 clients per /24, skipping .0 and .255.
    let (hi, lo) = (i / 250, i % 250 + 1);
    Ipv4Addr::new(
        127,
        4,
        u8::try_from(hi % 256).unwrap_or(0),
        u8::try_from(lo).unwrap_or(1),
    )
}

fn option(out: &mut Vec<u8>, last: &mut u16, number: u16, value: &[u8]) {
    let delta = number - *last;
    *last = number;
    let len = value.len();
    let nib = |v: usize| if v < 13 { v as u8 } else { 13 };
    out.push((nib(usize::from(delta)) << 4) | nib(len));
    if delta >= 13 {
        out.push(u8::try_from(delta - 13).unwrap_or(0));
    }
    if len >= 13 {
        out.push(u8::try_from(len - 13).unwrap_or(0));
    }
    out.extend_from_slice(value);
}

fn register(mid: u16, endpoint: &str, lifetime: u32) -> Vec<u8> {
    let mut m = vec![0x42, 0x02, (mid >> 8) as u8, mid as u8, 0xAB, 0xCD];
    let mut last = 0;
    option(&mut m, &mut last, 11, b"rd");
    option(&mut m, &mut last, 12, &[40]);
    option(&mut m, &mut last, 15, format!("ep={endpoint}").as_bytes());
    option(&mut m, &mut last, 15, format!("lt={lifetime}").as_bytes());
    option(&mut m, &mut last, 15, b"lwm2m=1.1");
    m.push(0xFF);
    m.extend_from_slice(b"</1/0>,</3/0>,</3303/0>");
    m
}

/// A 2.05 carrying Observe `seq` and a SenML JSON temperature: as the piggybacked answer to the
/// server's GET (`ack`), or a Confirmable notification.
fn content(ack: bool, mid: u16, token: &[u8], seq: u32, value: f64) -> Vec<u8> {
    let t = if ack { 0x60 } else { 0x40 };
    let mut m = vec![
        t | u8::try_from(token.len()).unwrap_or(0),
        0x45,
        (mid >> 8) as u8,
        mid as u8,
    ];
    m.extend_from_slice(token);
    let mut last = 0;
    let s = seq.to_be_bytes();
    option(&mut m, &mut last, 6, &s[1..]);
    option(&mut m, &mut last, 12, &[110]);
    m.push(0xFF);
    m.extend_from_slice(format!(r#"[{{"bn":"/3303/0/5700","v":{value}}}]"#).as_bytes());
    m
}

async fn client(
    i: u32,
    args: Arc<StormArgs>,
    gate: Arc<Semaphore>,
    totals: Arc<Totals>,
    reg_hist: Arc<std::sync::Mutex<Histogram<u64>>>,
    notify_hist: Arc<std::sync::Mutex<Histogram<u64>>>,
) -> Result<(), BenchError> {
    let local = SocketAddr::from((address(i), 0));
    let sock = UdpSocket::bind(local)
        .await
        .map_err(|e| BenchError::io(format!("bind {local}"), e))?;
    sock.connect(args.target)
        .await
        .map_err(|e| BenchError::io("connect", e))?;
    let endpoint = format!("{}-{i}", args.prefix);
    let mut mid = u16::try_from(i % 60_000).unwrap_or(0);
    let mut buf = [0u8; 1500];
    // Register, retransmitting like a device.
    let ok = {
        let _permit = gate.acquire().await;
        mid = mid.wrapping_add(1);
        let msg = register(mid, &endpoint, args.lifetime);
        let started = Instant::now();
        let mut ok = false;
        'tries: for _ in 0..MAX_TRIES {
            let _ = sock.send(&msg).await;
            let deadline = tokio::time::Instant::now() + ACK_TIMEOUT;
            while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
                let m = &buf[..n];
                if n >= 4 && m[2..4] == mid.to_be_bytes() && m[0] >> 4 & 3 == 2 {
                    ok = m[1] == 0x41;
                    break 'tries;
                }
            }
        }
        if ok {
            let ms = started.elapsed().as_micros() as u64;
            if let Ok(mut h) = reg_hist.lock() {
                let _ = h.record(ms.max(1));
            }
            totals.registered.fetch_add(1, Ordering::Relaxed);
            *totals.last_registered.lock().await = Some(Instant::now());
        } else {
            totals.register_failed.fetch_add(1, Ordering::Relaxed);
        }
        ok
    };
    if !ok || args.observe_wait == 0 {
        return Ok(());
    }
    // The server's GET with Observe: answer it piggybacked.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.observe_wait);
    let token = loop {
        match tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
            Ok(Ok(n)) if n >= 4 && buf[0] >> 4 & 3 == 0 && buf[1] == 0x01 => {
                let tkl = usize::from(buf[0] & 0x0F).min(8);
                let token = buf[4..4 + tkl.min(n - 4)].to_vec();
                let reply = content(true, u16::from_be_bytes([buf[2], buf[3]]), &token, 1, 36.6);
                let _ = sock.send(&reply).await;
                break token;
            }
            Ok(Ok(_)) => {}
            _ => return Ok(()),
        }
    };
    totals.observed.fetch_add(1, Ordering::Relaxed);
    *totals.last_observed.lock().await = Some(Instant::now());
    // Confirmable notifications, each waiting for its ACK.
    if args.notifications > 0 {
        totals
            .first_notify
            .lock()
            .await
            .get_or_insert_with(Instant::now);
    }
    for k in 0..args.notifications {
        mid = mid.wrapping_add(1);
        let msg = content(false, mid, &token, k + 2, 36.0 + f64::from(k) / 10.0);
        let started = Instant::now();
        let mut acked = false;
        'tries: for _ in 0..MAX_TRIES {
            let _ = sock.send(&msg).await;
            let deadline = tokio::time::Instant::now() + ACK_TIMEOUT;
            while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
                if n >= 4 && buf[2..4] == mid.to_be_bytes() && buf[0] >> 4 & 3 == 2 {
                    acked = true;
                    break 'tries;
                }
            }
        }
        if acked {
            totals.acked.fetch_add(1, Ordering::Relaxed);
            *totals.last_ack.lock().await = Some(Instant::now());
            if let Ok(mut h) = notify_hist.lock() {
                let _ = h.record((started.elapsed().as_micros() as u64).max(1));
            }
        } else {
            totals.lost.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        h.value_at_quantile(q) as f64 / 1000.0
    }
}

/// Runs the storm.
pub fn run(args: &StormArgs) -> Result<StormReport, BenchError> {
    if !args.target.ip().is_loopback() {
        return Err(BenchError::InvalidArgs(
            "the storm only targets loopback addresses".into(),
        ));
    }
    if args.clients == 0 || args.clients > 60_000 {
        return Err(BenchError::InvalidArgs(
            "--clients must be 1..=60000".into(),
        ));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| BenchError::io("tokio runtime", e))?;
    let args = Arc::new(args.clone());
    let totals = Arc::new(Totals::default());
    let hist = || {
        Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)
            .map(|h| Arc::new(std::sync::Mutex::new(h)))
    };
    let reg_hist = hist().map_err(|e| BenchError::InvalidArgs(e.to_string()))?;
    let notify_hist = hist().map_err(|e| BenchError::InvalidArgs(e.to_string()))?;
    let gate = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let started = Instant::now();
    let (first_error, notify_window) = rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..args.clients {
            set.spawn(client(
                i,
                args.clone(),
                gate.clone(),
                totals.clone(),
                reg_hist.clone(),
                notify_hist.clone(),
            ));
        }
        let mut first_error = None;
        while let Some(r) = set.join_next().await {
            if let Ok(Err(e)) = r {
                first_error.get_or_insert(e);
            }
        }
        let first = *totals.first_notify.lock().await;
        let last = *totals.last_ack.lock().await;
        let window = match (first, last) {
            (Some(a), Some(b)) => Some(b.saturating_duration_since(a)),
            _ => None,
        };
        (first_error, window)
    });
    if let Some(e) = first_error {
        return Err(e);
    }
    let reg_end = rt
        .block_on(async { *totals.last_registered.lock().await })
        .unwrap_or(started);
    let obs_end = rt.block_on(async { *totals.last_observed.lock().await });
    let register_seconds = reg_end.duration_since(started).as_secs_f64();
    let registered = totals.registered.load(Ordering::Relaxed);
    let acked = totals.acked.load(Ordering::Relaxed);
    let notify_seconds = notify_window.map_or(0.0, |d| d.as_secs_f64());
    let reg_h = reg_hist
        .lock()
        .map(|h| h.clone())
        .map_err(|_| BenchError::InvalidArgs("histogram".into()))?;
    let not_h = notify_hist
        .lock()
        .map(|h| h.clone())
        .map_err(|_| BenchError::InvalidArgs("histogram".into()))?;
    Ok(StormReport {
        clients: args.clients,
        registered,
        register_failed: totals.register_failed.load(Ordering::Relaxed),
        register_seconds,
        registrations_per_s: if register_seconds > 0.0 {
            registered as f64 / register_seconds
        } else {
            0.0
        },
        register_p50_ms: ms(&reg_h, 0.5),
        register_p99_ms: ms(&reg_h, 0.99),
        observed: totals.observed.load(Ordering::Relaxed),
        observe_seconds: obs_end.map_or(0.0, |t| t.duration_since(reg_end.min(t)).as_secs_f64()),
        notifications_acked: acked,
        notifications_lost: totals.lost.load(Ordering::Relaxed),
        notify_seconds,
        notifications_per_s: if notify_seconds > 0.0 {
            acked as f64 / notify_seconds
        } else {
            0.0
        },
        notify_p50_ms: ms(&not_h, 0.5),
        notify_p99_ms: ms(&not_h, 0.99),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_built_messages_parse_as_coap() {
        let r = register(7, "storm-1", 60);
        let p = coap_lite::Packet::from_bytes(&r).unwrap();
        assert_eq!(p.header.message_id, 7);
        let q: Vec<String> = p
            .get_option(coap_lite::CoapOption::UriQuery)
            .unwrap()
            .iter()
            .map(|v| String::from_utf8(v.clone()).unwrap())
            .collect();
        assert_eq!(q, ["ep=storm-1", "lt=60", "lwm2m=1.1"]);
        let c = content(false, 9, &[1, 2], 3, 36.5);
        let p = coap_lite::Packet::from_bytes(&c).unwrap();
        assert_eq!(p.get_token(), &[1, 2]);
        assert_eq!(p.get_observe_value(), Some(Ok(3)));
        assert!(String::from_utf8_lossy(&p.payload).contains("36.5"));
        assert_eq!(address(0), Ipv4Addr::new(127, 4, 0, 1));
        assert_eq!(address(250), Ipv4Addr::new(127, 4, 1, 1));
    }
}
