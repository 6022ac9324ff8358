//! `devices.toml`: the registry's file form, parsed and written back.
//!
//! These types are the file, not the answer to anybody: they hold key text (inline keys and
//! `${VAR}` references) and token hashes, so they are `Deserialize` but deliberately not
//! `Serialize`; the one writer is [`RegistryFile::to_toml`], and API answers use
//! [`crate::DeviceView`]. `Debug` never prints key text ([`KeyText`] redacts itself).
//!
//! Comments in a hand-edited file are not kept when the registry writes the file back after an
//! edit (the values are: `load(write(x)) == x`).

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use wardgate_core::validate::{Problem, Problems};

/// What happens to a peer whose identity no device holds.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum UnknownPolicy {
    /// Refused as unauthenticated (CoAP 4.01, HTTP 401). The default.
    #[default]
    Reject,
    /// Remembered in a bounded pending-approval list the admin API shows. A proven identity
    /// (a client certificate over TLS or DTLS) has its readings accepted and held in the
    /// outbox, delivered nowhere: adding a device with that identity approves it and releases
    /// them (checked against that device's ACL); dismissing it discards them. Identities that
    /// cannot be proven without a device (a PSK identity: there is no key) and registrations
    /// are refused as forbidden (`quarantined`, CoAP 4.03, HTTP 403).
    Quarantine,
}

impl UnknownPolicy {
    /// The file name of the policy.
    pub fn as_str(self) -> &'static str {
        match self {
            UnknownPolicy::Reject => "reject",
            UnknownPolicy::Quarantine => "quarantine",
        }
    }
}

/// The whole `devices.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegistryFile {
    /// What happens to peers whose identity no device holds: `"reject"` (default) or
    /// `"quarantine"`.
    #[serde(default)]
    pub unknown: UnknownPolicy,
    /// The devices (`[[device]]` tables), in file order.
    #[serde(default, rename = "device")]
    pub devices: Vec<DeviceSpec>,
}

/// One `[[device]]`: its identities and its ACL. Lists left out take their documented default;
/// a list given empty is a problem (it would allow nothing; remove the device instead).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceSpec {
    /// The device id (`bed-12`): letters, digits, `.`, `_`, `:`, `-`; at most 128 bytes.
    pub id: String,
    /// The protocols it may use: `coap` `coaps` `lwm2m` `lwm2ms` `mqtt` `mqtts` `http`
    /// `https`; the name with the `s` is that protocol over DTLS/TLS. Default: the four secure
    /// ones. A plain name is an explicit opt-in to an unencrypted transport.
    pub protocols: Option<Vec<String>>,
    /// The message classes it may write: `alarm` `vital` `telemetry` `bulk`. Default: all.
    pub classes: Option<Vec<String>>,
    /// The resources it may write, as the adapter names them (`v1/readings`), leading `/`
    /// ignored; one `*` matches any run of characters. Default: the CoAP readings resource and
    /// the LwM2M interfaces, `["v1/readings", "v1/readings/*", "rd", "dp", "bs", "lwm2m/*"]`.
    pub resources: Option<Vec<String>>,
    /// The device ids it may submit readings as; one `*` matches any run of characters
    /// (`bed-12-*`). Default: its own id only.
    pub speaks_for: Option<Vec<String>>,
    /// A revoked device keeps its entry but proves nothing: no PSK, no certificate, no token.
    #[serde(default)]
    pub revoked: bool,
    /// Its DTLS pre-shared key, if it uses one.
    pub psk: Option<PskSpec>,
    /// Its bearer tokens (`[[device.token]]`), by SHA-256 only.
    #[serde(default, rename = "token")]
    pub tokens: Vec<TokenSpec>,
    /// Its client certificates (`[[device.certificate]]`), by fingerprint.
    #[serde(default, rename = "certificate")]
    pub certificates: Vec<CertificateSpec>,
}

impl DeviceSpec {
    /// A device with this id, no identities, every list at its default.
    pub fn new(id: impl Into<String>) -> Self {
        DeviceSpec {
            id: id.into(),
            protocols: None,
            classes: None,
            resources: None,
            speaks_for: None,
            revoked: false,
            psk: None,
            tokens: Vec::new(),
            certificates: Vec::new(),
        }
    }
}

/// `[device.psk]`: a PSK identity and where its key is. Exactly one of `key` and `key_file`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PskSpec {
    /// The PSK identity the device sends in its handshake (unique across devices; printable
    /// ASCII, at most 128 bytes). Kept separate from the device id (RFC 7925).
    pub identity: String,
    /// The key inline: `"hex:00112233…"` (16 to 64 bytes), or `"${VAR}"` naming an environment
    /// variable that holds such text.
    pub key: Option<KeyText>,
    /// A file holding the key as hex text (optionally `hex:`-prefixed, surrounding whitespace
    /// ignored), relative to the directory of `devices.toml`. Should be mode 0600.
    pub key_file: Option<PathBuf>,
}

/// `[[device.token]]`: a bearer token, by its hash.
// `Debug` shows the id only: a hash of a weak token can be brute-forced, so it is kept out of
// logs too.
#[derive(Clone, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenSpec {
    /// The token's name (unique within the device; same characters as device ids). Audit
    /// events and the admin API name tokens by it.
    pub id: String,
    /// Hex SHA-256 of the token's bytes (`printf %s "$TOKEN" | sha256sum`). Never the token.
    pub sha256: String,
}

impl fmt::Debug for TokenSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSpec")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// `[[device.certificate]]`: a client certificate, by fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CertificateSpec {
    /// Hex SHA-256 of the certificate's DER (`openssl x509 -noout -fingerprint -sha256`
    /// output, with or without the colons).
    pub sha256: String,
}

/// Key text as written in the file (`hex:…` or `${VAR}`). Redacted in `Debug`, zeroed on drop.
#[derive(Clone, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(transparent)]
pub struct KeyText(String);

impl KeyText {
    /// Wraps key text (`hex:…` or `${VAR}`).
    pub fn new(text: impl Into<String>) -> Self {
        KeyText(text.into())
    }

    pub(crate) fn text(&self) -> &str {
        &self.0
    }

    /// The variable name when the text is exactly `${VAR}`.
    pub(crate) fn env_var(&self) -> Option<&str> {
        self.0
            .strip_prefix("${")
            .and_then(|r| r.strip_suffix('}'))
            .filter(|v| !v.is_empty())
    }
}

impl fmt::Debug for KeyText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.env_var() {
            Some(var) => write!(f, "KeyText(env {var})"),
            None => write!(f, "KeyText(inline, {} chars)", self.0.len()),
        }
    }
}

impl Drop for KeyText {
    fn drop(&mut self) {
        wipe(std::mem::take(&mut self.0));
    }
}

/// Overwrites a string's bytes before freeing them (best effort, like `Secret`).
pub(crate) fn wipe(s: String) {
    let mut b = s.into_bytes();
    for x in b.iter_mut() {
        *x = 0;
    }
    std::hint::black_box(&b);
}

impl RegistryFile {
    /// Parses `devices.toml` text. Syntax and type errors are reported with their line, with any
    /// value the parser would echo redacted (it could be a key).
    pub fn parse(text: &str, path: &Path) -> Result<RegistryFile, Vec<Problem>> {
        toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text.get(..s.start).unwrap_or("").matches('\n').count() + 1);
            let at = match line {
                Some(l) => format!("{} line {l}", path.display()),
                None => path.display().to_string(),
            };
            let mut p = Problems::new();
            p.push(at, redact_parser_message(e.message()));
            p.into_vec()
        })
    }

    /// The file text: what [`RegistryFile::parse`] reads back to an equal value. Key files
    /// and `${VAR}` references stay references.
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        let out = FileOut {
            unknown: self.unknown,
            device: self.devices.iter().map(DeviceOut::from).collect(),
        };
        let body = toml::to_string(&out)?;
        Ok(format!(
            "# wardgate device registry. Written by wardgate after an edit through the admin API;\n\
             # hand edits are fine (then reload: SIGHUP). Comments are not kept on the next write.\n\
             # Format: docs/examples/devices.toml\n\n{body}"
        ))
    }
}

// The writer's mirror of the file types: private, so nothing else can serialize key text.
#[derive(Serialize)]
struct FileOut<'a> {
    unknown: UnknownPolicy,
    device: Vec<DeviceOut<'a>>,
}

#[derive(Serialize)]
struct DeviceOut<'a> {
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    protocols: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    classes: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resources: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    speaks_for: Option<&'a [String]>,
    #[serde(skip_serializing_if = "is_false")]
    revoked: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    psk: Option<PskOut<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    token: Vec<TokenOut<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    certificate: Vec<CertOut<'a>>,
}

#[derive(Serialize)]
struct PskOut<'a> {
    identity: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_file: Option<&'a Path>,
}

#[derive(Serialize)]
struct TokenOut<'a> {
    id: &'a str,
    sha256: &'a str,
}

#[derive(Serialize)]
struct CertOut<'a> {
    sha256: &'a str,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl<'a> From<&'a DeviceSpec> for DeviceOut<'a> {
    fn from(d: &'a DeviceSpec) -> Self {
        DeviceOut {
            id: &d.id,
            protocols: d.protocols.as_deref(),
            classes: d.classes.as_deref(),
            resources: d.resources.as_deref(),
            speaks_for: d.speaks_for.as_deref(),
            revoked: d.revoked,
            psk: d.psk.as_ref().map(|p| PskOut {
                identity: &p.identity,
                key: p.key.as_ref().map(KeyText::text),
                key_file: p.key_file.as_deref(),
            }),
            token: d
                .tokens
                .iter()
                .map(|t| TokenOut {
                    id: &t.id,
                    sha256: &t.sha256,
                })
                .collect(),
            certificate: d
                .certificates
                .iter()
                .map(|c| CertOut { sha256: &c.sha256 })
                .collect(),
        }
    }
}

/// serde echoes the offending value in type errors (`invalid type: string "…"`,
/// ``integer `…` ``): a mistyped key would end up in the error. Those values are replaced by
/// `…`; field and variant names (which are not values) are kept. Public for the admin API,
/// which parses device specs from JSON with the same types.
pub fn redact_parser_message(msg: &str) -> String {
    const VALUE_MARKERS: [(&str, char); 6] = [
        ("string \"", '"'),
        ("integer `", '`'),
        ("floating point `", '`'),
        ("boolean `", '`'),
        ("character `", '`'),
        ("bytes \"", '"'),
    ];
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    'scan: while !rest.is_empty() {
        for (marker, close) in VALUE_MARKERS {
            if let Some(after) = rest.strip_prefix(marker) {
                out.push_str(marker);
                out.push('…');
                out.push(close);
                // Skip to the closing quote; if there is none, drop the rest entirely.
                rest = match after.find(close) {
                    Some(i) => after.get(i + close.len_utf8()..).unwrap_or(""),
                    None => "",
                };
                continue 'scan;
            }
        }
        let mut chars = rest.chars();
        if let Some(c) = chars.next() {
            out.push(c);
        }
        rest = chars.as_str();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parser_values_are_redacted_but_names_kept() {
        let m = redact_parser_message(
            "invalid type: string \"hex:00112233\", expected a boolean; unknown field `keyy`",
        );
        assert_eq!(
            m,
            "invalid type: string \"…\", expected a boolean; unknown field `keyy`"
        );
        let m = redact_parser_message("invalid type: integer `1234`, expected a string");
        assert_eq!(m, "invalid type: integer `…`, expected a string");
    }

    #[test]
    fn key_text_debug_is_redacted() {
        let k = KeyText::new("hex:00112233445566778899aabbccddeeff");
        assert_eq!(format!("{k:?}"), "KeyText(inline, 36 chars)");
        let k = KeyText::new("${BED_KEY}");
        assert_eq!(format!("{k:?}"), "KeyText(env BED_KEY)");
    }
}
