//! A small CoAP load client for the end-to-end tests: many CON POSTs in flight over one UDP
//! socket, retransmitted like a real device (the reading is kept until a 2.xx arrives), recording
//! the reading id the gateway returned in Location-Path for every acknowledged reading.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};

/// One reading the client is trying to deliver.
#[derive(Debug, Clone)]
struct Outstanding {
    device: String,
    body: Vec<u8>,
    mid: u16,
    sent_at: Instant,
}

/// What the load run saw.
#[derive(Debug, Default, Clone)]
pub struct LoadReport {
    /// Reading ids from 2.01 Location-Path, per device in ack order.
    pub acked: Vec<(String, String)>,
    /// 5.03 answers (busy / full).
    pub busy: usize,
    /// Other non-success answers.
    pub errors: usize,
    /// Requests never answered before the run ended (the gateway died, or the run stopped).
    pub unanswered: usize,
}

/// Sends `total` readings from `devices` simulated devices (`dev-0` ...), each with one request
/// outstanding at a time (NSTART = 1, as RFC 7252 asks of a device), until every one is answered,
/// `deadline` passes, or `stop()` says so. SenML JSON whose value is a per-device counter, so
/// per-device order can be checked downstream.
pub fn run(
    target: SocketAddr,
    total: usize,
    devices: usize,
    deadline: Duration,
    stop: &dyn Fn() -> bool,
) -> LoadReport {
    run_as("dev", target, total, devices, deadline, stop)
}

/// [`run`] with devices named `<prefix>-0` ... (each run's counters start at 0, so runs whose
/// per-device order is checked together need their own prefixes).
pub fn run_as(
    prefix: &str,
    target: SocketAddr,
    total: usize,
    devices: usize,
    deadline: Duration,
    stop: &dyn Fn() -> bool,
) -> LoadReport {
    let dash = format!("{prefix}-");
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_millis(20)))
        .expect("timeout");
    let end = Instant::now() + deadline;
    let mut report = LoadReport::default();
    let mut next = 0usize;
    let mut mid: u16 = rand_u16();
    let mut pending: HashMap<Vec<u8>, Outstanding> = HashMap::new();
    let mut counters = vec![0u64; devices];
    let mut busy = vec![false; devices];
    let mut buf = [0u8; 2048];
    loop {
        if Instant::now() > end || stop() {
            break;
        }
        for d in 0..devices {
            if busy[d] || next >= total {
                continue;
            }
            busy[d] = true;
            let device = format!("{prefix}-{d}");
            let body = format!(r#"[{{"n":"seq","v":{}}}]"#, counters[d]).into_bytes();
            counters[d] += 1;
            mid = mid.wrapping_add(1);
            let token = ((d as u64) << 32 | counters[d]).to_be_bytes().to_vec();
            let o = Outstanding {
                device,
                body,
                mid,
                sent_at: Instant::now(),
            };
            send(&sock, target, &token, &o);
            pending.insert(token, o);
            next += 1;
        }
        if pending.is_empty() && next >= total {
            break;
        }
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            let Ok(p) = Packet::from_bytes(&buf[..n]) else {
                continue;
            };
            if p.header.get_type() == MessageType::Confirmable {
                // A separate response: acknowledge it.
                let mut ack = Packet::new();
                ack.header.set_type(MessageType::Acknowledgement);
                ack.header.message_id = p.header.message_id;
                ack.header.code = MessageClass::Empty;
                let _ = sock.send_to(&ack.to_bytes().expect("ack"), from);
            }
            let MessageClass::Response(code) = p.header.code else {
                continue; // empty ACK: the response follows separately
            };
            let Some(o) = pending.remove(p.get_token()) else {
                continue;
            };
            match code {
                ResponseType::Created | ResponseType::Changed => {
                    let id = p
                        .get_option(CoapOption::LocationPath)
                        .and_then(|segs| segs.back().cloned())
                        .map(|s| String::from_utf8_lossy(&s).into_owned())
                        .unwrap_or_default();
                    if let Some(d) = o
                        .device
                        .strip_prefix(dash.as_str())
                        .and_then(|d| d.parse::<usize>().ok())
                    {
                        busy[d] = false;
                    }
                    report.acked.push((o.device, id));
                }
                ResponseType::ServiceUnavailable => {
                    report.busy += 1;
                    // The device keeps the reading and retries later as a new request.
                    mid = mid.wrapping_add(1);
                    pending.insert(
                        p.get_token().to_vec(),
                        Outstanding {
                            mid,
                            sent_at: Instant::now() + Duration::from_millis(200),
                            ..o
                        },
                    );
                }
                _ => {
                    report.errors += 1;
                    if let Some(d) = o
                        .device
                        .strip_prefix(dash.as_str())
                        .and_then(|d| d.parse::<usize>().ok())
                    {
                        busy[d] = false;
                    }
                }
            }
        }
        // Retransmit like a device whose reading is not acknowledged yet: same Message ID, so a
        // live gateway deduplicates it; a restarted one may store it twice, never zero times.
        let now = Instant::now();
        for (token, o) in pending.iter_mut() {
            if now.saturating_duration_since(o.sent_at) > Duration::from_millis(1500) {
                o.sent_at = now;
                send(&sock, target, token, o);
            }
        }
    }
    report.unanswered = pending.len();
    report
}

fn send(sock: &UdpSocket, target: SocketAddr, token: &[u8], o: &Outstanding) {
    let mut p = Packet::new();
    p.header.set_type(MessageType::Confirmable);
    p.header.code = MessageClass::Request(RequestType::Post);
    p.header.message_id = o.mid;
    p.set_token(token.to_vec());
    p.add_option(CoapOption::UriPath, b"v1".to_vec());
    p.add_option(CoapOption::UriPath, b"readings".to_vec());
    p.add_option(CoapOption::UriPath, o.device.as_bytes().to_vec());
    p.add_option(CoapOption::ContentFormat, vec![110]);
    p.payload = o.body.clone();
    let _ = sock.send_to(&p.to_bytes().expect("encode"), target);
}

fn rand_u16() -> u16 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (t.subsec_nanos() % 65_536) as u16
}
