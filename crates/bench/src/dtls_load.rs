//! `dtls-load`: many devices, each on its own loopback address, first completing a DTLS 1.2 PSK
//! handshake (handshakes/s), then posting readings stop-and-wait over their sessions
//! (readings/s); with `--plain`, the same devices post the same readings over plain CoAP, so
//! the two runs compare the transport alone. The gateway's RSS before and after the sessions
//! exist gives the memory per session.
//!
//! Device `i` is `bench-{i}` with the 16-byte key `format!("{i:016}")` (see `bench/dtls.sh`,
//! which writes the matching `devices.toml`).

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;

use crate::error::BenchError;
use crate::procfs;

/// Arguments of `dtls-load`.
#[derive(Debug, Args)]
pub struct DtlsLoadArgs {
    /// The gateway's CoAP (with --plain) or CoAPS listener, on loopback.
    #[arg(long)]
    pub target: SocketAddr,
    /// Devices (each its own 127.3.x.y address and DTLS session).
    #[arg(long, default_value_t = 200)]
    pub devices: u32,
    /// Readings each device posts after its handshake.
    #[arg(long, default_value_t = 50)]
    pub readings: u32,
    /// Worker threads (devices are split among them).
    #[arg(long, default_value_t = 4)]
    pub workers: u32,
    /// Plain CoAP instead of DTLS (no handshake phase).
    #[arg(long)]
    pub plain: bool,
    /// The gateway's pid, for its memory before and after the sessions exist.
    #[arg(long)]
    pub gateway_pid: Option<u32>,
}

/// One run's results.
#[derive(Debug, Serialize)]
pub struct DtlsLoadReport {
    /// `dtls` or `plain`.
    pub transport: &'static str,
    /// Devices that completed their handshake (all of them with --plain).
    pub devices: u32,
    /// Handshakes per second over the whole handshake phase (none with --plain).
    pub handshakes_per_s: Option<f64>,
    /// Readings answered 2.01 per second over the reading phase.
    pub readings_per_s: f64,
    /// Readings answered 2.01.
    pub readings_ok: u64,
    /// Readings that got another answer or none (after retries).
    pub readings_failed: u64,
    /// Gateway VmRSS before the handshakes and after them, KiB.
    pub gateway_rss_kib: Option<(u64, u64)>,
    /// (after - before) / devices, bytes.
    pub bytes_per_session: Option<f64>,
    /// Gateway CPU time (user + system) per 1,000 readings during the reading phase, ms: the
    /// gateway's cost per reading, which the latency-bound rate above does not show.
    pub gateway_cpu_ms_per_1k: Option<f64>,
}

struct Key(Vec<u8>);

impl dimpl::PskResolver for Key {
    fn resolve(&self, _identity: &[u8]) -> Option<Vec<u8>> {
        Some(self.0.clone())
    }
}

/// A device's transport: a DTLS session or plain UDP, over its own socket.
struct Device {
    socket: UdpSocket,
    dtls: Option<dimpl::Dtls>,
    target: SocketAddr,
    buf: Vec<u8>,
    out: Vec<u8>,
}

fn device_addr(i: u32) -> Ipv4Addr {
    Ipv4Addr::new(127, 3, (i / 250) as u8, (1 + i % 250) as u8)
}

fn io_err(e: std::io::Error) -> BenchError {
    BenchError::InvalidArgs(format!("socket: {e}"))
}

impl Device {
    fn new(i: u32, target: SocketAddr, plain: bool) -> Result<Device, BenchError> {
        let socket = UdpSocket::bind((device_addr(i), 0)).map_err(io_err)?;
        socket
            .set_read_timeout(Some(Duration::from_millis(500)))
            .map_err(io_err)?;
        let dtls = if plain {
            None
        } else {
            let config = dimpl::Config::builder()
                .with_psk_client(
                    format!("bench-{i}").into_bytes(),
                    Arc::new(Key(format!("{i:016}").into_bytes())),
                )
                .build()
                .map_err(|e| BenchError::InvalidArgs(format!("dimpl: {e}")))?;
            let mut d = dimpl::Dtls::new_12_psk(Arc::new(config), Instant::now());
            d.set_active(true);
            Some(d)
        };
        Ok(Device {
            socket,
            dtls,
            target,
            buf: vec![0; 4096],
            out: vec![0; 4096],
        })
    }

    /// Sends what the library has queued; returns (connected, plaintexts received).
    fn flush(&mut self, plaintext: &mut Vec<Vec<u8>>) -> bool {
        let mut connected = false;
        let Some(d) = self.dtls.as_mut() else {
            return false;
        };
        loop {
            match d.poll_output(&mut self.out) {
                dimpl::Output::Packet(p) => {
                    let _ = self.socket.send_to(p, self.target);
                }
                dimpl::Output::Timeout(_) => return connected,
                dimpl::Output::Connected => connected = true,
                dimpl::Output::ApplicationData(a) => plaintext.push(a.to_vec()),
                _ => {}
            }
        }
    }

    fn handshake(&mut self, deadline: Instant) -> bool {
        let mut sink = Vec::new();
        let Some(d) = self.dtls.as_mut() else {
            return true;
        };
        if d.handle_timeout(Instant::now()).is_err() {
            return false;
        }
        if self.flush(&mut sink) {
            return true;
        }
        while Instant::now() < deadline {
            let got = self.socket.recv_from(&mut self.buf);
            let Some(d) = self.dtls.as_mut() else {
                return false;
            };
            let r = match got {
                Ok((n, _)) => d.handle_packet(&self.buf[..n]),
                Err(_) => d.handle_timeout(Instant::now()),
            };
            if r.is_err() {
                return false;
            }
            if self.flush(&mut sink) {
                return true;
            }
        }
        false
    }

    /// One CON POST, answered or not within a few retransmissions.
    fn post(&mut self, msg: &[u8]) -> Option<u8> {
        for _ in 0..4 {
            let mut plain = Vec::new();
            match self.dtls.as_mut() {
                Some(d) => {
                    d.send_application_data(msg).ok()?;
                    self.flush(&mut plain);
                }
                None => {
                    self.socket.send_to(msg, self.target).ok()?;
                }
            }
            let until = Instant::now() + Duration::from_secs(2);
            while plain.is_empty() && Instant::now() < until {
                let Ok((n, _)) = self.socket.recv_from(&mut self.buf) else {
                    continue;
                };
                match self.dtls.as_mut() {
                    Some(d) => {
                        d.handle_packet(&self.buf[..n]).ok()?;
                        self.flush(&mut plain);
                    }
                    None => plain.push(self.buf[..n].to_vec()),
                }
            }
            // Answers to an earlier message id (a late retransmission) are not ours.
            if let Some(a) = plain
                .iter()
                .find(|a| a.get(2..4) == msg.get(2..4))
                .and_then(|a| a.get(1).copied())
            {
                return Some(a);
            }
        }
        None
    }
}

fn post_message(device: u32, mid: u16, value: u32) -> Vec<u8> {
    let name = format!("bench-{device}");
    let mut m = vec![0x40, 0x02];
    m.extend_from_slice(&mid.to_be_bytes());
    m.push(0xB2);
    m.extend_from_slice(b"v1");
    m.push(0x08);
    m.extend_from_slice(b"readings");
    m.push(name.len() as u8);
    m.extend_from_slice(name.as_bytes());
    m.extend_from_slice(&[0x11, 110, 0xFF]);
    m.extend_from_slice(format!(r#"[{{"n":"spo2","u":"%","v":{value}}}]"#).as_bytes());
    m
}

fn rss(pid: Option<u32>) -> Option<u64> {
    pid.and_then(|p| procfs::memory_kb(p).ok())
        .map(|(rss, _)| rss)
}

/// Runs the load; every address is on loopback by construction (127.3.0.0/16 → target).
pub fn run(args: &DtlsLoadArgs) -> Result<DtlsLoadReport, BenchError> {
    if !args.target.ip().is_loopback() {
        return Err(BenchError::NotLoopback(args.target.to_string()));
    }
    if args.devices == 0 || args.devices > 60_000 || args.workers == 0 || args.readings > 100_000 {
        return Err(BenchError::InvalidArgs(
            "devices 1..60000, workers ≥ 1, readings ≤ 100000".into(),
        ));
    }
    let before = rss(args.gateway_pid);
    let workers = args.workers.min(args.devices);
    let hs_start = Instant::now();
    let handshaken: Vec<Result<Vec<(u32, Device)>, BenchError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                s.spawn(move || {
                    let mut mine = Vec::new();
                    for i in (w..args.devices).step_by(workers as usize) {
                        let mut d = Device::new(i, args.target, args.plain)?;
                        if d.handshake(Instant::now() + Duration::from_secs(10)) {
                            mine.push((i, d));
                        }
                    }
                    Ok(mine)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(BenchError::InvalidArgs("worker panicked".into())))
            })
            .collect()
    });
    let hs_elapsed = hs_start.elapsed();
    let mut groups = Vec::new();
    for g in handshaken {
        groups.push(g?);
    }
    let connected: u32 = groups.iter().map(|g| g.len() as u32).sum();
    let after = rss(args.gateway_pid);

    let cpu_before = args.gateway_pid.and_then(|p| procfs::cpu_ticks(p).ok());
    let rd_start = Instant::now();
    let results: Vec<(u64, u64)> = std::thread::scope(|s| {
        let handles: Vec<_> = groups
            .into_iter()
            .map(|mut group| {
                s.spawn(move || {
                    let (mut ok, mut failed) = (0u64, 0u64);
                    for r in 0..args.readings {
                        for (id, d) in group.iter_mut() {
                            // One exchange at a time per device: its own message ids suffice.
                            let mid = (r as u16).wrapping_add(1);
                            match d.post(&post_message(*id, mid, 90 + r % 10)) {
                                Some(0x41) => ok += 1,
                                _ => failed += 1,
                            }
                        }
                    }
                    (ok, failed)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or((0, 0)))
            .collect()
    });
    let rd_elapsed = rd_start.elapsed().as_secs_f64();
    let cpu_after = args.gateway_pid.and_then(|p| procfs::cpu_ticks(p).ok());
    let readings_ok: u64 = results.iter().map(|r| r.0).sum();
    let readings_failed: u64 = results.iter().map(|r| r.1).sum();
    let gateway_rss_kib = before.zip(after);
    Ok(DtlsLoadReport {
        transport: if args.plain { "plain" } else { "dtls" },
        devices: connected,
        handshakes_per_s: (!args.plain).then(|| f64::from(connected) / hs_elapsed.as_secs_f64()),
        readings_per_s: readings_ok as f64 / rd_elapsed.max(1e-9),
        readings_ok,
        readings_failed,
        gateway_rss_kib,
        bytes_per_session: gateway_rss_kib
            .filter(|_| !args.plain && connected > 0)
            .map(|(b, a)| (a.saturating_sub(b) as f64 * 1024.0) / f64::from(connected)),
        gateway_cpu_ms_per_1k: cpu_before.zip(cpu_after).filter(|_| readings_ok > 0).map(
            |(b, a)| {
                let ms = a.saturating_sub(b) as f64 * 1000.0 / procfs::clk_tck() as f64;
                ms * 1000.0 / readings_ok as f64
            },
        ),
    })
}
