//! Writing `devices.toml` durably, and the permission check on files that hold secrets.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::RegistryError;

/// Replaces `path` with `bytes` so that a crash leaves either the old or the new file: a
/// temporary file in the same directory (mode 0600), written, fsynced, renamed over `path`,
/// then the directory fsynced. Any failure is an error, and the temporary file is removed.
/// If only the final directory fsync fails the rename has happened, but the edit is reported
/// as failed (not known durable); a reload reads whichever version the disk holds.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), RegistryError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "devices.toml".into());
    let tmp = dir.join(format!(".{name}.tmp"));
    let err = |p: &Path| {
        let p = p.to_path_buf();
        move |source| RegistryError::Write { path: p, source }
    };
    // A stale temporary file from a crash may have other permissions: never reuse it.
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(&tmp)(e)),
    }
    let result = (|| {
        let mut f = create_private(&tmp).map_err(err(&tmp))?;
        f.write_all(bytes).map_err(err(&tmp))?;
        f.sync_all().map_err(err(&tmp))?;
        drop(f);
        fs::rename(&tmp, path).map_err(err(path))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    sync_dir(&dir).map_err(err(&dir))
}

#[cfg(unix)]
fn create_private(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn create_private(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().write(true).create_new(true).open(path)
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> std::io::Result<()> {
    Ok(())
}

/// Warns (does not fail) when a file holding secrets is readable or writable by group or
/// others, naming the file and the fix.
#[cfg(unix)]
pub(crate) fn warn_if_loose(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format_args!("{mode:03o}"),
                "file with device secrets is accessible to group or others; fix: chmod 600 {}",
                path.display()
            );
        }
    }
}

#[cfg(not(unix))]
pub(crate) fn warn_if_loose(_path: &Path) {}
