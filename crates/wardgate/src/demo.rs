//! `wardgate run --demo`: a simulated ward of two beds that speaks real CoAP and LwM2M to this
//! gateway (the ward of `wardgate simulate`, see `crate::simulate`): per bed, SpO2 and pulse
//! (SenML JSON, every second, `alarm` class during a desaturation), temperature (SenML CBOR),
//! heart and respiratory rate (plain JSON), and an LwM2M thermometer that registers, Sends its
//! temperature and answers the server's operations (try the admin API on `bed-01-thermo`).
//!
//! When the configuration leaves the admin API off, the demo turns it on at its loopback default
//! (`127.0.0.1:8443`) so the status page is there to look at, with a fresh admin token written
//! to `demo-admin-token` (mode 0600) next to the outbox, never to the log.

use std::net::SocketAddr;

use rand::Rng;

/// Where the simulated sensors send: the first CoAP listener, with an unspecified address
/// replaced by loopback.
pub(crate) fn target(addrs: &[SocketAddr]) -> Option<SocketAddr> {
    addrs.first().copied().map(crate::simulate::reachable)
}

/// Turns the admin API (and with it the status page) on for a demo run whose configuration
/// leaves it off: on its loopback default, with a random admin token written, mode 0600, to
/// `demo-admin-token` in the outbox's directory. Returns that file, or `None` when the
/// configuration has its own admin API (its tokens apply).
pub(crate) fn enable_status_page(
    cfg: &mut wardgate_config::GatewayConfig,
) -> std::io::Result<Option<std::path::PathBuf>> {
    if cfg.admin.enabled {
        return Ok(None);
    }
    let dir = match cfg.store.path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)?;
    let mut raw = [0u8; 24];
    rand::rng().fill(&mut raw);
    let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let hash = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let path = dir.join("demo-admin-token");
    write_private(&path, token.as_bytes())?;
    cfg.admin.enabled = true;
    cfg.admin.tokens.push(wardgate_http::AdminToken {
        id: "demo".into(),
        sha256: hash.as_ref().iter().map(|b| format!("{b:02x}")).collect(),
        role: wardgate_http::TokenRole::Admin,
    });
    Ok(Some(path))
}

/// Writes `bytes` to a file only its owner may read (replacing what was there).
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        opts.mode(0o600);
        let mut f = opts.open(path)?;
        // An older file keeps its mode through `open`: tighten it.
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f.write_all(bytes)?;
        f.write_all(b"\n")
    }
    #[cfg(not(unix))]
    {
        let mut f = opts.open(path)?;
        f.write_all(bytes)?;
        f.write_all(b"\n")
    }
}
