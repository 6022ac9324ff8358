//! The listener's certificate and key from PEM files, as the DER the library takes.

use std::io::BufReader;
use std::path::Path;

use crate::error::DtlsError;

/// Reads the first certificate of `cert` and the private key of `key` (PKCS#8 or SEC1).
pub(crate) fn load_certificate(
    cert: &Path,
    key: &Path,
) -> Result<dimpl::DtlsCertificate, DtlsError> {
    let bad = |path: &Path, reason: String| DtlsError::Certificate {
        path: path.to_owned(),
        reason,
    };
    let open = |path: &Path| {
        std::fs::File::open(path)
            .map(BufReader::new)
            .map_err(|e| bad(path, format!("cannot read: {e}")))
    };
    let certificate = rustls_pemfile::certs(&mut open(cert)?)
        .next()
        .ok_or_else(|| bad(cert, "no CERTIFICATE block".into()))?
        .map_err(|e| bad(cert, format!("not a PEM certificate: {e}")))?;
    warn_if_loose(key);
    // A failed key parse is reported without anything of the file's content.
    let private_key = rustls_pemfile::private_key(&mut open(key)?)
        .ok()
        .flatten()
        .ok_or_else(|| bad(key, "no usable PRIVATE KEY or EC PRIVATE KEY block".into()))?;
    Ok(dimpl::DtlsCertificate {
        certificate: certificate.to_vec(),
        private_key: private_key.secret_der().to_vec(),
    })
}

/// A private key readable by group or others is worth a warning (not a refusal: the operator
/// may have reasons, e.g. a key mounted by a secrets manager).
fn warn_if_loose(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            path = %path.display(),
            mode = format!("{:o}", meta.permissions().mode() & 0o777),
            "the DTLS private key is readable by group or others; chmod 600 it"
        );
    }
}
