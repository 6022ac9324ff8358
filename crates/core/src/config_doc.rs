//! What the configuration types of every crate share for their reference documentation
//! (`wardgate generate-config`, `docs/configuration.md`) and their serialization.
//!
//! The config types derive `schemars::JsonSchema` for their doc comments and types, and
//! `serde::Serialize` for their defaults. Serializing a configuration must never write a secret:
//! fields holding one serialize through [`redact`], [`redact_values`] or [`redact_url`].

use std::borrow::Cow;
use std::collections::BTreeMap;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::Serializer;

/// What a secret serializes as.
pub const REDACTED: &str = "<redacted>";

/// The schema of a `humantime` duration (`"500ms"`, `"5s"`, `"10m"`, `"24h"`): use as
/// `#[schemars(with = "wardgate_core::config_doc::Duration")]` on a `humantime_serde` field.
#[derive(Debug)]
pub struct Duration;

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "format": "duration" })
    }
}

/// [`Duration`], optional.
pub type OptionalDuration = Option<Duration>;

/// Serializes a secret as [`REDACTED`] (or nothing, when unset).
pub fn redact<S: Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(_) => s.serialize_some(REDACTED),
        None => s.serialize_none(),
    }
}

/// Serializes a map of secrets (HTTP header values) with every value [`REDACTED`].
pub fn redact_values<S: Serializer>(v: &BTreeMap<String, String>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(v.keys().map(|k| (k, REDACTED)))
}

/// Serializes a URL with the user information (`user:password@`) replaced by [`REDACTED`].
pub fn redact_url<S: Serializer>(v: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&url_without_userinfo(v))
}

/// [`redact_url`] for an optional URL.
pub fn redact_optional_url<S: Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(url) => s.serialize_some(&url_without_userinfo(url)),
        None => s.serialize_none(),
    }
}

/// `v` with any `userinfo@` of its authority replaced by [`REDACTED`].
pub fn url_without_userinfo(v: &str) -> Cow<'_, str> {
    let Some(scheme_end) = v.find("://") else {
        return Cow::Borrowed(v);
    };
    let rest = &v[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => Cow::Owned(format!("{}{REDACTED}{}", &v[..scheme_end + 3], &rest[at..])),
        None => Cow::Borrowed(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_redacted_and_everything_else_kept() {
        assert_eq!(
            url_without_userinfo("mqtts://u:hunter2@broker:8883/x@y"),
            "mqtts://<redacted>@broker:8883/x@y"
        );
        assert_eq!(
            url_without_userinfo("mqtt://broker:1883"),
            "mqtt://broker:1883"
        );
        assert_eq!(url_without_userinfo("no scheme@host"), "no scheme@host");
        assert_eq!(
            url_without_userinfo("https://h/p?a=b@c"),
            "https://h/p?a=b@c"
        );
    }
}
