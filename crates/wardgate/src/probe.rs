//! `wardgate probe`: the container health check. Asks the gateway's own `[http]` listener for
//! `/readyz` (or another path) over plain HTTP/1.1 and exits 0 on `200`, 1 otherwise, so a
//! runtime image needs no curl or shell.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

/// Longest wait for connecting, and for each read and write.
const TIMEOUT: Duration = Duration::from_secs(3);
/// The status line is all we read.
const MAX_HEAD: usize = 1024;

pub(crate) fn main(addr: &str, path: &str) -> ExitCode {
    match status(addr, path) {
        Ok(200) => ExitCode::SUCCESS,
        Ok(code) => {
            eprintln!("GET {path} on {addr}: HTTP {code}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("GET {path} on {addr}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn status(addr: &str, path: &str) -> std::io::Result<u16> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_owned());
    if !path.starts_with('/') || path.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err(bad("the path must start with / and contain no spaces"));
    }
    let target = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| bad("the address resolves to nothing"))?;
    let mut s = TcpStream::connect_timeout(&target, TIMEOUT)?;
    s.set_read_timeout(Some(TIMEOUT))?;
    s.set_write_timeout(Some(TIMEOUT))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut head = Vec::with_capacity(64);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < MAX_HEAD {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    // "HTTP/1.1 200 OK"
    let line = String::from_utf8_lossy(&head);
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .filter(|_| line.starts_with("HTTP/1."))
        .ok_or_else(|| bad("not an HTTP answer"))
}
