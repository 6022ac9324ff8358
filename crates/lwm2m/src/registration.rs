//! The Registration interface's data (OMA LwM2M TS Transport §6.2, TS Core §6.2): what a client
//! registers with (`POST /rd?ep=..&lt=..&lwm2m=..&b=..&sms=..&Q` and a link-format body), what
//! an Update changes, and the registration the server keeps.
//!
//! Rules (checked against Leshan's `RegisterResource` behaviour and the specification):
//! - `ep` is required (4.00 without it) and must be a valid device id (1–128 of
//!   `[A-Za-z0-9._:-]`: it names the device in readings, topics and URLs).
//! - `lt` absent → 86400 s; present it must be a decimal in 1..=2^32-1 (4.00 otherwise).
//! - `lwm2m` absent → 1.0 (a 1.0 client may omit it); `1.0`, `1.1` and `1.2` are accepted,
//!   anything else is 4.00 (1.1 §6.2.1: "the server MUST reject unsupported versions" with
//!   4.00 Bad Request — Leshan answers 4.00 too, with a diagnostic).
//! - `b` absent → `U`; letters from `U`, `S`, `T`, `N`, `Q` (1.0's `UQ`, `SQ`, `UQS`). Queue
//!   mode is `Q` in `b` (1.0) or the `Q` parameter (1.1+).
//! - Unknown parameters are ignored (forward compatibility), repeated known ones are 4.00.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use wardgate_core::TransportKind;
use wardgate_core::reading::valid_device_id;

use crate::format::Format;
use crate::link::ObjectList;

/// Lifetime when `lt` is absent (TS Core §6.2.1.1).
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(86_400);

/// The LwM2M enabler version a client registered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Version {
    /// 1.0
    #[serde(rename = "1.0")]
    V1_0,
    /// 1.1
    #[serde(rename = "1.1")]
    V1_1,
    /// 1.2
    #[serde(rename = "1.2")]
    V1_2,
}

impl Version {
    /// From the `lwm2m` parameter.
    pub fn parse(s: &str) -> Option<Version> {
        match s {
            "1.0" => Some(Version::V1_0),
            "1.1" => Some(Version::V1_1),
            "1.2" => Some(Version::V1_2),
            _ => None,
        }
    }

    /// `1.0`, `1.1`, `1.2`.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V1_0 => "1.0",
            Version::V1_1 => "1.1",
            Version::V1_2 => "1.2",
        }
    }
}

/// Why a Register or Update request is refused (4.00 with this text as diagnostic).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    /// `ep` is missing.
    #[error("the endpoint name (ep) is missing")]
    MissingEndpoint,
    /// `ep` is not a valid device id.
    #[error("the endpoint name must be 1-128 of [A-Za-z0-9._:-]")]
    BadEndpoint,
    /// `lt` is not a positive 32-bit decimal.
    #[error("the lifetime (lt) must be a decimal number of seconds in 1..=4294967295")]
    BadLifetime,
    /// `lwm2m` names a version this server does not speak.
    #[error("unsupported LwM2M version (lwm2m); this server speaks 1.0, 1.1 and 1.2")]
    BadVersion,
    /// `b` has a letter that is not a binding.
    #[error("the binding (b) must be letters from U, S, T, N, Q")]
    BadBinding,
    /// A parameter is repeated or not UTF-8.
    #[error("query parameter {0} is repeated or not UTF-8")]
    BadParameter(&'static str),
    /// The object list does not parse.
    #[error("the object list is not valid link-format: {0}")]
    BadObjects(String),
    /// An Update carried `ep`, `lwm2m` or another parameter only Register may carry.
    #[error("an Update may carry only lt, b, sms and Q")]
    NotForUpdate,
}

/// The query parameters of a Register request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterParams {
    /// `ep`.
    pub endpoint: String,
    /// `lt`.
    pub lifetime: Duration,
    /// `lwm2m`.
    pub version: Version,
    /// `b` (without the queue letter).
    pub binding: String,
    /// Queue mode (`Q` in `b` or the `Q` parameter).
    pub queue_mode: bool,
    /// `sms`.
    pub sms: Option<String>,
}

/// The query parameters of an Update request (each optional).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpdateParams {
    /// `lt`.
    pub lifetime: Option<Duration>,
    /// `b`.
    pub binding: Option<String>,
    /// Queue mode from `b` (1.0) or `Q` (1.1).
    pub queue_mode: Option<bool>,
    /// `sms`.
    pub sms: Option<String>,
}

struct Query<'a> {
    items: Vec<(&'a str, Option<&'a str>)>,
}

impl<'a> Query<'a> {
    fn parse(raw: &[&'a [u8]]) -> Result<Query<'a>, ParamError> {
        let mut items = Vec::with_capacity(raw.len());
        for q in raw {
            let q = std::str::from_utf8(q).map_err(|_| ParamError::BadParameter("(query)"))?;
            items.push(match q.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (q, None),
            });
        }
        Ok(Query { items })
    }

    fn one(&self, key: &'static str) -> Result<Option<Option<&'a str>>, ParamError> {
        let mut it = self.items.iter().filter(|(k, _)| *k == key);
        let first = it.next().map(|(_, v)| *v);
        if it.next().is_some() {
            return Err(ParamError::BadParameter(key));
        }
        Ok(first)
    }

    fn value(&self, key: &'static str) -> Result<Option<&'a str>, ParamError> {
        match self.one(key)? {
            None => Ok(None),
            Some(Some(v)) => Ok(Some(v)),
            Some(None) => Err(ParamError::BadParameter(key)),
        }
    }
}

fn lifetime(v: &str) -> Result<Duration, ParamError> {
    if v.is_empty() || v.len() > 10 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParamError::BadLifetime);
    }
    match v.parse::<u64>() {
        Ok(n) if (1..=u64::from(u32::MAX)).contains(&n) => Ok(Duration::from_secs(n)),
        _ => Err(ParamError::BadLifetime),
    }
}

/// Splits `b` into the transport letters and whether it asks for queue mode.
fn binding(v: &str) -> Result<(String, bool), ParamError> {
    if v.is_empty() || v.len() > 8 || !v.bytes().all(|b| b"USTNQ".contains(&b)) {
        return Err(ParamError::BadBinding);
    }
    let queue = v.contains('Q');
    let letters: String = v.chars().filter(|c| *c != 'Q').collect();
    Ok((
        if letters.is_empty() {
            "U".into()
        } else {
            letters
        },
        queue,
    ))
}

impl RegisterParams {
    /// From the Uri-Query options of `POST /rd`.
    pub fn parse(query: &[&[u8]]) -> Result<RegisterParams, ParamError> {
        let q = Query::parse(query)?;
        let endpoint = q.value("ep")?.ok_or(ParamError::MissingEndpoint)?;
        if !valid_device_id(endpoint.as_bytes()) {
            return Err(ParamError::BadEndpoint);
        }
        let lifetime = q
            .value("lt")?
            .map(lifetime)
            .transpose()?
            .unwrap_or(DEFAULT_LIFETIME);
        let version = match q.value("lwm2m")? {
            None => Version::V1_0,
            Some(v) => Version::parse(v).ok_or(ParamError::BadVersion)?,
        };
        let (binding, b_queue) = q
            .value("b")?
            .map(binding)
            .transpose()?
            .unwrap_or(("U".into(), false));
        let queue_mode = b_queue || q.one("Q")?.is_some();
        let sms = q.value("sms")?.map(str::to_owned);
        Ok(RegisterParams {
            endpoint: endpoint.to_owned(),
            lifetime,
            version,
            binding,
            queue_mode,
            sms,
        })
    }
}

impl UpdateParams {
    /// From the Uri-Query options of `POST /rd/{id}`.
    pub fn parse(query: &[&[u8]]) -> Result<UpdateParams, ParamError> {
        let q = Query::parse(query)?;
        if q.one("ep")?.is_some() || q.one("lwm2m")?.is_some() {
            return Err(ParamError::NotForUpdate);
        }
        let lifetime = q.value("lt")?.map(lifetime).transpose()?;
        let (binding, b_queue) = match q.value("b")?.map(binding).transpose()? {
            Some((b, queue)) => (Some(b), Some(queue)),
            None => (None, None),
        };
        let queue_mode = if q.one("Q")?.is_some() {
            Some(true)
        } else {
            b_queue
        };
        Ok(UpdateParams {
            lifetime,
            binding,
            queue_mode,
            sms: q.value("sms")?.map(str::to_owned),
        })
    }
}

/// A client's registration as the server keeps (and persists) it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registration {
    /// The registration id (the `{id}` of `/rd/{id}`).
    pub id: String,
    /// The endpoint name (`ep`).
    pub endpoint: String,
    /// The device readings are stored under (the authorizer's answer; the endpoint name when
    /// nothing authenticates).
    pub device: String,
    /// `lwm2m`.
    pub version: Version,
    /// Lifetime.
    #[serde(with = "secs")]
    pub lifetime: Duration,
    /// Binding letters without `Q`.
    pub binding: String,
    /// Queue mode.
    pub queue_mode: bool,
    /// `sms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sms: Option<String>,
    /// The object list, alternate root path and content formats of the last Register/Update
    /// that carried one.
    pub objects: ObjectList,
    /// Where the client talks from (requests to it go there).
    pub addr: SocketAddr,
    /// Over which transport.
    pub transport: TransportKind,
    /// The identity the transport proved (`psk:bed-12`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// When it registered (RFC 3339 in JSON).
    #[serde(with = "rfc3339")]
    pub registered_at: SystemTime,
    /// When it last registered or updated (the lifetime runs from here).
    #[serde(with = "rfc3339")]
    pub updated_at: SystemTime,
    /// The content format the client answered in after refusing its preferred one (kept, so
    /// the negotiation is not repeated after a gateway restart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
    /// The client answered a request of ours at `addr`, or `addr` came over a transport that
    /// authenticated it: the server's requests there skip address validation (see
    /// `wardgate_coap::ClientRequest::validate_address`). Persisted, so a restored client is
    /// observed again at once after a gateway restart; reset when the address changes.
    #[serde(default)]
    pub address_proven: bool,
}

impl Registration {
    /// When it expires without an Update.
    pub fn expires_at(&self) -> SystemTime {
        self.updated_at + self.lifetime
    }

    /// The content format to ask this client for: the best one it says it supports (the `ct`
    /// of its root link), else by version — TLV for 1.0 (the only format every 1.0 client has),
    /// SenML CBOR for 1.1+ (mandatory-to-implement among SenML JSON/CBOR and compact). A
    /// client that refuses it (4.06) makes the server fall back, see `Server`.
    pub fn preferred_format(&self) -> Format {
        const BY_PREFERENCE: [Format; 5] = [
            Format::SenmlCbor,
            Format::Lwm2mCbor,
            Format::SenmlJson,
            Format::Tlv,
            Format::OmaJson,
        ];
        let listed = &self.objects.content_formats;
        if let Some(f) = self.format {
            return f;
        }
        if let Some(f) = BY_PREFERENCE
            .iter()
            .find(|f| listed.contains(&f.coap_number()))
        {
            return *f;
        }
        match self.version {
            Version::V1_0 => Format::Tlv,
            Version::V1_1 | Version::V1_2 => Format::SenmlCbor,
        }
    }

    /// The formats to try after `tried` was refused with 4.06, in order.
    pub fn fallback_formats(&self) -> &'static [Format] {
        match self.version {
            Version::V1_0 => &[Format::Tlv, Format::OmaJson],
            Version::V1_1 | Version::V1_2 => &[
                Format::SenmlCbor,
                Format::SenmlJson,
                Format::Tlv,
                Format::OmaJson,
            ],
        }
    }
}

mod rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_millis(*t))
    }

    /// Also reads serde's default form of a `SystemTime` (`{"secs_since_epoch", ...}`), which
    /// registrations stored by earlier development builds carry.
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Stored {
        Text(String),
        Epoch {
            secs_since_epoch: u64,
            nanos_since_epoch: u32,
        },
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        match Stored::deserialize(d)? {
            Stored::Text(s) => humantime::parse_rfc3339(&s).map_err(serde::de::Error::custom),
            Stored::Epoch {
                secs_since_epoch,
                nanos_since_epoch,
            } => Ok(SystemTime::UNIX_EPOCH
                + std::time::Duration::new(secs_since_epoch, nanos_since_epoch)),
        }
    }
}

mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(items: &[&str]) -> Vec<Vec<u8>> {
        items.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    fn reg(items: &[&str]) -> Result<RegisterParams, ParamError> {
        let v = q(items);
        let r: Vec<&[u8]> = v.iter().map(Vec::as_slice).collect();
        RegisterParams::parse(&r)
    }

    fn upd(items: &[&str]) -> Result<UpdateParams, ParamError> {
        let v = q(items);
        let r: Vec<&[u8]> = v.iter().map(Vec::as_slice).collect();
        UpdateParams::parse(&r)
    }

    #[test]
    fn register_defaults_follow_the_specification() {
        let p = reg(&["ep=bed-12"]).unwrap();
        assert_eq!(p.endpoint, "bed-12");
        assert_eq!(p.lifetime, DEFAULT_LIFETIME);
        assert_eq!(p.version, Version::V1_0);
        assert_eq!(p.binding, "U");
        assert!(!p.queue_mode);
        assert_eq!(p.sms, None);
    }

    #[test]
    fn register_reads_every_parameter_and_both_queue_spellings() {
        let p = reg(&[
            "ep=x",
            "lt=300",
            "lwm2m=1.1",
            "b=U",
            "Q",
            "sms=+4412",
            "future=1",
        ])
        .unwrap();
        assert_eq!(
            (p.lifetime, p.version, p.binding.as_str(), p.queue_mode),
            (Duration::from_secs(300), Version::V1_1, "U", true)
        );
        assert_eq!(p.sms.as_deref(), Some("+4412"));
        let p = reg(&["ep=x", "b=UQ"]).unwrap();
        assert_eq!((p.binding.as_str(), p.queue_mode), ("U", true));
    }

    #[test]
    fn register_refuses_what_it_cannot_honour() {
        assert_eq!(reg(&[]), Err(ParamError::MissingEndpoint));
        assert_eq!(reg(&["ep"]), Err(ParamError::BadParameter("ep")));
        assert_eq!(reg(&["ep=a b"]), Err(ParamError::BadEndpoint));
        assert_eq!(reg(&["ep=x", "ep=y"]), Err(ParamError::BadParameter("ep")));
        for lt in ["lt=0", "lt=-1", "lt=abc", "lt=4294967296", "lt=", "lt=1.5"] {
            assert_eq!(reg(&["ep=x", lt]), Err(ParamError::BadLifetime), "{lt}");
        }
        assert_eq!(
            reg(&["ep=x", "lt=4294967295"]).unwrap().lifetime.as_secs(),
            4_294_967_295
        );
        assert_eq!(reg(&["ep=x", "lwm2m=2.0"]), Err(ParamError::BadVersion));
        assert_eq!(reg(&["ep=x", "b=X"]), Err(ParamError::BadBinding));
    }

    #[test]
    fn stored_times_read_both_rfc3339_and_the_earlier_epoch_form() {
        #[derive(serde::Deserialize)]
        struct T {
            #[serde(with = "super::rfc3339")]
            t: SystemTime,
        }
        let a: T = serde_json::from_str(r#"{"t":"2026-11-30T12:00:00.250Z"}"#).unwrap();
        let b: T = serde_json::from_str(
            r#"{"t":{"secs_since_epoch":1796040000,"nanos_since_epoch":250000000}}"#,
        )
        .unwrap();
        assert_eq!(a.t, b.t);
        assert!(serde_json::from_str::<T>(r#"{"t":"yesterday"}"#).is_err());
    }

    #[test]
    fn update_takes_only_what_an_update_may_change() {
        assert_eq!(upd(&[]).unwrap(), UpdateParams::default());
        let u = upd(&["lt=60", "b=UQ"]).unwrap();
        assert_eq!(u.lifetime, Some(Duration::from_secs(60)));
        assert_eq!(u.queue_mode, Some(true));
        assert_eq!(upd(&["Q"]).unwrap().queue_mode, Some(true));
        assert_eq!(upd(&["b=U"]).unwrap().queue_mode, Some(false));
        assert_eq!(upd(&["ep=x"]), Err(ParamError::NotForUpdate));
        assert_eq!(upd(&["lt=0"]), Err(ParamError::BadLifetime));
    }
}
