//! libcoap's command-line tools as test peers.

use std::process::{Command, Stdio};

use crate::require_tool;

/// Path of libcoap's plain-UDP client.
pub const COAP_CLIENT: &str = "/usr/bin/coap-client-notls";

/// What one `coap-client-notls` run printed.
#[derive(Debug, Clone)]
pub struct ClientRun {
    /// Exit status 0 and no 4.xx/5.xx answer printed.
    pub ok: bool,
    /// Standard output (the response payload, or `4.04 <diagnostic>` for an error answer).
    pub stdout: String,
    /// Standard error (libcoap's warnings and logs).
    pub stderr: String,
}

impl ClientRun {
    /// Standard output then standard error.
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// `(ok, stdout + stderr)`, for tests that assert on the text as a whole.
    pub fn outcome(&self) -> (bool, String) {
        (self.ok, self.text())
    }
}

/// Runs `coap-client-notls -B 10 <args>`: `-B` bounds how long it waits for an answer.
/// coap-client exits 0 even for 4.xx/5.xx answers and prints them as `4.00 <diagnostic>`, so
/// those count as not `ok`. Note that `-e` payloads are percent-decoded by coap-client: write `%`
/// as `%25`.
pub fn coap_client(args: &[&str]) -> ClientRun {
    require_tool(COAP_CLIENT);
    let out = Command::new(COAP_CLIENT)
        .args(["-B", "10"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run coap-client-notls");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let error_code = stdout.lines().chain(stderr.lines()).any(|l| {
        let b = l.as_bytes();
        b.len() >= 4
            && (b[0] == b'4' || b[0] == b'5')
            && b[1] == b'.'
            && b[2].is_ascii_digit()
            && b[3].is_ascii_digit()
    });
    ClientRun {
        ok: out.status.success() && !error_code,
        stdout,
        stderr,
    }
}

/// `coap-client-notls -m <method> -t <format> -e <payload> <uri>`.
pub fn coap_send(method: &str, format: u16, payload: &str, uri: &str) -> ClientRun {
    coap_client(&["-m", method, "-t", &format.to_string(), "-e", payload, uri])
}
