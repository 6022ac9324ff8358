//! Device Management and Information Reporting operations the server runs on a client
//! (TS Core §6.3, §6.4; Transport §6.3, §6.4): Read, Discover, Write (replace and partial
//! update), Write-Attributes, Execute, Create, Delete, composite Read and Write, and the
//! content-format negotiation under them.
//!
//! Format negotiation: the server asks a client for its preferred format (see
//! [`Registration::preferred_format`](crate::registration::Registration::preferred_format)).
//! When the client answers 4.06 Not Acceptable (to a Read) or 4.15 Unsupported Content-Format
//! (to a Write), the server tries the next format its version allows and remembers the one that
//! worked for that client — Leshan users otherwise have to configure a format per device model.

use wardgate_coap::{ClientRequest, ClientResponse, Code};

use crate::format::{self, Format};
use crate::node::{Entry, Path};
use crate::server::{OpError, Server, decode_answer};

/// The body of a composite Read/Observe asking for answers in `answer`: the paths in the same
/// format when it can list them (SenML), else in SenML CBOR (LwM2M CBOR carries values, not a
/// list of paths: TS Core §7.4.7).
pub(crate) fn paths_body(answer: Format, paths: &[Path]) -> Result<(Format, Vec<u8>), OpError> {
    let f = match answer {
        Format::SenmlJson | Format::SenmlCbor => answer,
        _ => Format::SenmlCbor,
    };
    Ok((f, format::encode_paths(f, paths)?))
}

/// iPATCH (RFC 8132).
pub(crate) const IPATCH: Code = Code::new(0, 7);

/// Write replaces (PUT) or updates (POST) the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WriteMode {
    /// PUT: the target's content becomes exactly this.
    Replace,
    /// POST: the given resources change, the others stay.
    Update,
}

/// Notification attributes (TS Core §5.1.2). `None` leaves an attribute as it is; an empty
/// value is not offered (removal is done by writing the attribute without value, see
/// [`Attributes::clear`]).
#[derive(
    Debug, Clone, Default, PartialEq, serde::Deserialize, serde::Serialize, schemars::JsonSchema,
)]
#[serde(deny_unknown_fields)]
pub struct Attributes {
    /// Minimum period, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pmin: Option<u32>,
    /// Maximum period, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pmax: Option<u32>,
    /// Greater than.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gt: Option<f64>,
    /// Less than.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lt: Option<f64>,
    /// Step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub st: Option<f64>,
    /// Minimum evaluation period, seconds (1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epmin: Option<u32>,
    /// Maximum evaluation period, seconds (1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epmax: Option<u32>,
    /// Attributes to remove (written without a value: `pmin`, `gt`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clear: Vec<String>,
}

const ATTRIBUTE_NAMES: [&str; 7] = ["pmin", "pmax", "gt", "lt", "st", "epmin", "epmax"];

impl Attributes {
    /// The Uri-Query items (`pmin=10`, `gt=37.5`, `st` to clear). Refuses what the
    /// specification forbids: non-finite thresholds, a negative step, `lt` ≥ `gt` with `st`
    /// not fitting between them (§5.1.2), `pmin` > `pmax`, `epmin` > `epmax`, unknown names.
    pub fn query(&self) -> Result<Vec<String>, OpError> {
        let bad = |s: &str| Err(OpError::Invalid(s.to_owned()));
        for f in [self.gt, self.lt, self.st].into_iter().flatten() {
            if !f.is_finite() {
                return bad("gt, lt and st must be finite numbers");
            }
        }
        if self.st.is_some_and(|s| s < 0.0) {
            return bad("st must not be negative");
        }
        if let (Some(lt), Some(gt)) = (self.lt, self.gt) {
            if lt >= gt {
                return bad("lt must be less than gt");
            }
            if self.st.is_some_and(|st| lt + 2.0 * st >= gt) {
                return bad("lt + 2*st must be less than gt");
            }
        }
        if let (Some(a), Some(b)) = (self.pmin, self.pmax) {
            if a > b {
                return bad("pmin must not exceed pmax");
            }
        }
        if let (Some(a), Some(b)) = (self.epmin, self.epmax) {
            if a > b {
                return bad("epmin must not exceed epmax");
            }
        }
        let mut q = Vec::new();
        let mut push = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                q.push(format!("{k}={v}"));
            }
        };
        push("pmin", self.pmin.map(|v| v.to_string()));
        push("pmax", self.pmax.map(|v| v.to_string()));
        push("gt", self.gt.map(|v| v.to_string()));
        push("lt", self.lt.map(|v| v.to_string()));
        push("st", self.st.map(|v| v.to_string()));
        push("epmin", self.epmin.map(|v| v.to_string()));
        push("epmax", self.epmax.map(|v| v.to_string()));
        for c in &self.clear {
            if !ATTRIBUTE_NAMES.contains(&c.as_str()) {
                return Err(OpError::Invalid(format!("unknown attribute {c:?}")));
            }
            q.push(c.clone());
        }
        if q.is_empty() {
            return bad("no attribute to write");
        }
        Ok(q)
    }
}

fn expect(resp: ClientResponse, ok: &[Code]) -> Result<ClientResponse, OpError> {
    if ok.contains(&resp.code()) {
        return Ok(resp);
    }
    let diagnostic = std::str::from_utf8(resp.payload())
        .ok()
        .filter(|s| !s.is_empty() && s.len() <= 256)
        .map(str::to_owned);
    Err(OpError::Client {
        code: resp.code().to_string(),
        diagnostic,
    })
}

/// Execute arguments (TS Core §5.4.5): `0,1='text'`; printable ASCII, bounded.
fn valid_arguments(a: &str) -> bool {
    a.len() <= 1024 && a.bytes().all(|b| (0x20..0x7f).contains(&b))
}

impl Server {
    /// Read: the values at `path` (object, instance, resource or resource instance), in
    /// `format` or the negotiated one.
    pub async fn read(
        &self,
        endpoint: &str,
        path: Path,
        format: Option<Format>,
    ) -> Result<Vec<Entry>, OpError> {
        if path.is_empty() {
            return Err(OpError::Invalid("Read needs at least an object id".into()));
        }
        let resp = self
            .negotiate(endpoint, format, Code::NOT_ACCEPTABLE, |f| {
                Ok(ClientRequest::get(path.to_string()).accept(f.coap_number()))
            })
            .await?;
        let resp = expect(resp, &[Code::CONTENT])?;
        decode_answer(self, &path, &resp)
    }

    /// Sends what `make` builds for a format, falling back through the client's formats while
    /// it answers `refusal`; remembers the format that worked.
    async fn negotiate(
        &self,
        endpoint: &str,
        forced: Option<Format>,
        refusal: Code,
        make: impl Fn(Format) -> Result<ClientRequest, OpError>,
    ) -> Result<ClientResponse, OpError> {
        if let Some(f) = forced {
            return self.send(endpoint, make(f)?).await;
        }
        let first = self
            .format_for(endpoint)
            .ok_or_else(|| OpError::UnknownClient(endpoint.to_owned()))?;
        let resp = self.send(endpoint, make(first)?).await?;
        if resp.code() != refusal {
            if resp.is_success() {
                self.remember_format(endpoint, first);
            }
            return Ok(resp);
        }
        let fallbacks = self
            .client(endpoint)
            .map(|c| c.registration.fallback_formats())
            .unwrap_or_default();
        let mut last = resp;
        for f in fallbacks.iter().filter(|f| **f != first) {
            // A format that cannot carry these values is skipped, not sent.
            let Ok(req) = make(*f) else { continue };
            last = self.send(endpoint, req).await?;
            if last.code() != refusal {
                if last.is_success() {
                    tracing::info!(endpoint, format = ?f, "LwM2M client refused its preferred format; using this one from now on");
                    self.remember_format(endpoint, *f);
                }
                return Ok(last);
            }
        }
        Ok(last)
    }

    /// Discover: the link-format description of `path` (objects, instances, resources and
    /// their attributes), as the client sent it.
    pub async fn discover(&self, endpoint: &str, path: Path) -> Result<String, OpError> {
        let resp = self
            .send(endpoint, ClientRequest::get(path.to_string()).accept(40))
            .await?;
        let resp = expect(resp, &[Code::CONTENT])?;
        String::from_utf8(resp.payload().to_vec())
            .map_err(|_| OpError::Invalid("the Discover answer is not UTF-8".into()))
    }

    /// Write: replace (PUT) or partially update (POST) `path` with `entries` (all at or below
    /// `path`).
    pub async fn write(
        &self,
        endpoint: &str,
        path: Path,
        mode: WriteMode,
        entries: &[Entry],
        format: Option<Format>,
    ) -> Result<(), OpError> {
        if path.len() < 2 && mode == WriteMode::Replace {
            return Err(OpError::Invalid(
                "Write (replace) needs an object instance or resource path".into(),
            ));
        }
        if let Some(e) = entries.iter().find(|e| !e.path.starts_with(&path)) {
            return Err(OpError::Invalid(format!(
                "{} is not below the written path {path}",
                e.path
            )));
        }
        let method = match mode {
            WriteMode::Replace => Code::PUT,
            WriteMode::Update => Code::POST,
        };
        let resp = self
            .negotiate(endpoint, format, Code::UNSUPPORTED_CONTENT_FORMAT, |f| {
                let body = format::encode(f, &path, entries, self.model())?;
                Ok(ClientRequest::new(method, path.to_string())
                    .content_format(f.coap_number())
                    .payload(body))
            })
            .await?;
        expect(resp, &[Code::CHANGED]).map(|_| ())
    }

    /// Write-Attributes on `path`.
    pub async fn write_attributes(
        &self,
        endpoint: &str,
        path: Path,
        attrs: &Attributes,
    ) -> Result<(), OpError> {
        if path.is_empty() {
            return Err(OpError::Invalid(
                "Write-Attributes needs an object path".into(),
            ));
        }
        let mut req = ClientRequest::put(path.to_string());
        req.query = attrs.query()?;
        let resp = self.send(endpoint, req).await?;
        expect(resp, &[Code::CHANGED]).map(|_| ())
    }

    /// Execute the resource at `path` with optional arguments.
    pub async fn execute(
        &self,
        endpoint: &str,
        path: Path,
        arguments: Option<&str>,
    ) -> Result<(), OpError> {
        if path.len() != 3 {
            return Err(OpError::Invalid(
                "Execute needs a resource path /oid/iid/rid".into(),
            ));
        }
        let mut req = ClientRequest::post(path.to_string());
        if let Some(a) = arguments {
            if !valid_arguments(a) {
                return Err(OpError::Invalid(
                    "Execute arguments must be printable ASCII, at most 1024 bytes".into(),
                ));
            }
            req = req.content_format(0).payload(a.as_bytes().to_vec());
        }
        let resp = self.send(endpoint, req).await?;
        expect(resp, &[Code::CHANGED]).map(|_| ())
    }

    /// Create an instance of object `object` (its id from `entries`' paths if they name one,
    /// else chosen by the client). Returns the new instance's path when the client says it
    /// (Location-Path) or the entries named it.
    pub async fn create(
        &self,
        endpoint: &str,
        object: u16,
        entries: &[Entry],
        format: Option<Format>,
    ) -> Result<Option<Path>, OpError> {
        let base = Path::object(object);
        if let Some(e) = entries.iter().find(|e| !e.path.starts_with(&base)) {
            return Err(OpError::Invalid(format!(
                "{} is not in object {object}",
                e.path
            )));
        }
        let resp = self
            .negotiate(endpoint, format, Code::UNSUPPORTED_CONTENT_FORMAT, |f| {
                let body = format::encode(f, &base, entries, self.model())?;
                Ok(ClientRequest::post(base.to_string())
                    .content_format(f.coap_number())
                    .payload(body))
            })
            .await?;
        let resp = expect(resp, &[Code::CREATED])?;
        let loc = resp.location_path();
        if loc.len() >= 2 {
            if let Ok(p) = Path::from_segments(&loc[loc.len() - 2..]) {
                return Ok(Some(p));
            }
        }
        Ok(entries
            .first()
            .and_then(|e| e.path.instance_id().map(|i| Path::instance(object, i))))
    }

    /// Delete an object instance (or, in bootstrap, more).
    pub async fn delete(&self, endpoint: &str, path: Path) -> Result<(), OpError> {
        if path.len() != 2 {
            return Err(OpError::Invalid(
                "Delete needs an object instance path /oid/iid".into(),
            ));
        }
        let resp = self
            .send(endpoint, ClientRequest::new(Code::DELETE, path.to_string()))
            .await?;
        expect(resp, &[Code::DELETED]).map(|_| ())
    }

    /// Read-Composite (FETCH on `/` with a SenML list of paths; LwM2M 1.1+).
    pub async fn read_composite(
        &self,
        endpoint: &str,
        paths: &[Path],
        format: Option<Format>,
    ) -> Result<Vec<Entry>, OpError> {
        let f = self.composite_format(endpoint, format)?;
        let (body_format, body) = paths_body(f, paths)?;
        let req = ClientRequest::new(Code::FETCH, "")
            .content_format(body_format.coap_number())
            .accept(f.coap_number())
            .payload(body);
        let resp = expect(self.send(endpoint, req).await?, &[Code::CONTENT])?;
        decode_answer(self, &Path::ROOT, &resp)
    }

    /// Write-Composite (iPATCH on `/` with SenML values; LwM2M 1.1+).
    pub async fn write_composite(
        &self,
        endpoint: &str,
        entries: &[Entry],
        format: Option<Format>,
    ) -> Result<(), OpError> {
        let f = self.composite_format(endpoint, format)?;
        let body = format::encode(f, &Path::ROOT, entries, self.model())?;
        let req = ClientRequest::new(IPATCH, "")
            .content_format(f.coap_number())
            .payload(body);
        expect(self.send(endpoint, req).await?, &[Code::CHANGED]).map(|_| ())
    }

    /// Composite operations exist from 1.1 and carry SenML (JSON or CBOR) or LwM2M CBOR.
    pub(crate) fn composite_format(
        &self,
        endpoint: &str,
        format: Option<Format>,
    ) -> Result<Format, OpError> {
        let c = self
            .client(endpoint)
            .ok_or_else(|| OpError::UnknownClient(endpoint.to_owned()))?;
        if c.registration.version == crate::registration::Version::V1_0 {
            return Err(OpError::Invalid(
                "composite operations need LwM2M 1.1 or later; the client registered 1.0".into(),
            ));
        }
        let f = format.unwrap_or_else(|| match self.format_for(endpoint) {
            Some(f @ (Format::SenmlJson | Format::SenmlCbor)) => f,
            _ => Format::SenmlCbor,
        });
        match f {
            Format::SenmlJson | Format::SenmlCbor | Format::Lwm2mCbor => Ok(f),
            _ => Err(OpError::Invalid(format!(
                "{f:?} cannot carry a composite operation; use SenML JSON, SenML CBOR or LwM2M CBOR"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_become_query_items_and_bad_ones_are_refused() {
        let a = Attributes {
            pmin: Some(5),
            pmax: Some(60),
            gt: Some(38.5),
            lt: Some(35.0),
            st: Some(0.5),
            clear: vec!["epmin".into()],
            ..Attributes::default()
        };
        assert_eq!(
            a.query().unwrap(),
            vec!["pmin=5", "pmax=60", "gt=38.5", "lt=35", "st=0.5", "epmin"]
        );
        let bad = [
            Attributes {
                pmin: Some(10),
                pmax: Some(5),
                ..Default::default()
            },
            Attributes {
                lt: Some(5.0),
                gt: Some(5.0),
                ..Default::default()
            },
            Attributes {
                lt: Some(1.0),
                gt: Some(3.0),
                st: Some(1.0),
                ..Default::default()
            },
            Attributes {
                st: Some(-1.0),
                ..Default::default()
            },
            Attributes {
                gt: Some(f64::NAN),
                ..Default::default()
            },
            Attributes {
                clear: vec!["bogus".into()],
                ..Default::default()
            },
            Attributes::default(),
        ];
        for b in bad {
            assert!(b.query().is_err(), "{b:?}");
        }
    }

    #[test]
    fn execute_arguments_are_bounded_printable_ascii() {
        assert!(valid_arguments("0='abc',1"));
        assert!(!valid_arguments("0='\n'"));
        assert!(!valid_arguments(&"1".repeat(1025)));
    }
}
