//! Topic templates and the sanitization rule for the values put into them.
//!
//! Templates are parsed once at construction. The literal text of a template comes from the
//! operator and is checked (no wildcards, no NUL); the field values come from devices and are
//! sanitized so that a device id can never add a topic level, a wildcard or a `$`-prefixed system
//! topic, nor make the broker drop the connection over a malformed topic.
//!
//! # The rule
//! In `{gateway}` and `{device}` values every character below is replaced by the percent-encoding
//! (`%XX`, upper-case hex) of each of its UTF-8 bytes; every other character is kept:
//! - `/` (level separator), `+` and `#` (wildcards), `$` (system topics), `%` (the escape itself,
//!   so the mapping stays one-to-one and therefore reversible);
//! - NUL and every other control character (U+0000–U+001F, U+007F–U+009F): MQTT forbids NUL and
//!   brokers such as Mosquitto disconnect a client that publishes to a topic containing control
//!   characters;
//! - Unicode non-characters (U+FDD0–U+FDEF and U+xxFFFE/U+xxFFFF), refused by the same brokers.
//!
//! `{class}` is one of the closed set `alarm`, `vital`, `telemetry`, `bulk` and needs no escaping.

use std::borrow::Cow;
use std::fmt::Write as _;

use wardgate_core::MessageClass;

/// A template field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Gateway,
    Device,
    Class,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Field(Field),
}

/// A parsed topic template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicTemplate {
    parts: Vec<Part>,
}

/// Why a template was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TemplateError(String);

impl TopicTemplate {
    /// A readings topic template: fields `{gateway}`, `{device}`, `{class}`.
    pub fn readings(template: &str) -> Result<TopicTemplate, TemplateError> {
        Self::parse(template, &[Field::Gateway, Field::Device, Field::Class])
    }

    /// A status topic template: field `{gateway}` only (the topic must be fixed per gateway so
    /// the will and the birth message land on the same topic).
    pub fn status(template: &str) -> Result<TopicTemplate, TemplateError> {
        Self::parse(template, &[Field::Gateway])
    }

    fn parse(template: &str, allowed: &[Field]) -> Result<TopicTemplate, TemplateError> {
        if template.is_empty() {
            return Err(TemplateError("must not be empty".into()));
        }
        let mut parts = Vec::new();
        let mut rest = template;
        while !rest.is_empty() {
            match rest.find(['{', '}']) {
                None => {
                    parts.push(Part::Literal(rest.to_owned()));
                    rest = "";
                }
                Some(i) if rest[i..].starts_with('}') => {
                    return Err(TemplateError("unmatched '}'".into()));
                }
                Some(i) => {
                    if i > 0 {
                        parts.push(Part::Literal(rest[..i].to_owned()));
                    }
                    let after = &rest[i + 1..];
                    let end = after
                        .find('}')
                        .ok_or_else(|| TemplateError("unterminated '{'".into()))?;
                    let name = &after[..end];
                    let field = match name {
                        "gateway" => Field::Gateway,
                        "device" => Field::Device,
                        "class" => Field::Class,
                        other => {
                            return Err(TemplateError(format!("unknown field {{{other}}}")));
                        }
                    };
                    if !allowed.contains(&field) {
                        return Err(TemplateError(format!(
                            "field {{{name}}} is not available in this template"
                        )));
                    }
                    parts.push(Part::Field(field));
                    rest = &after[end + 1..];
                }
            }
        }
        for part in &parts {
            if let Part::Literal(text) = part {
                if text.contains(['+', '#']) {
                    return Err(TemplateError(
                        "a publish topic must not contain wildcards".into(),
                    ));
                }
                if text.contains('\0') {
                    return Err(TemplateError("must not contain NUL".into()));
                }
            }
        }
        Ok(TopicTemplate { parts })
    }

    /// The topic for one reading (or, for a status template, with `device`/`class` unused).
    pub fn render(&self, gateway: &str, device: &str, class: MessageClass) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Field(Field::Gateway) => out.push_str(&sanitize_level(gateway)),
                Part::Field(Field::Device) => out.push_str(&sanitize_level(device)),
                Part::Field(Field::Class) => out.push_str(class.as_str()),
            }
        }
        out
    }
}

/// Applies the module's rule to one field value.
pub fn sanitize_level(value: &str) -> Cow<'_, str> {
    if !value.chars().any(needs_escape) {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 8);
    let mut buf = [0u8; 4];
    for c in value.chars() {
        if needs_escape(c) {
            for b in c.encode_utf8(&mut buf).bytes() {
                // Writing to a String cannot fail.
                let _ = write!(out, "%{b:02X}");
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    let cp = u32::from(c);
    matches!(c, '/' | '+' | '#' | '$' | '%')
        || c.is_control()
        || (0xFDD0..=0xFDEF).contains(&cp)
        || (cp & 0xFFFE) == 0xFFFE
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readings(t: &str) -> TopicTemplate {
        TopicTemplate::readings(t).unwrap_or_else(|e| panic!("{t}: {e}"))
    }

    #[test]
    fn default_template_renders_gateway_device_and_class() {
        let t = readings("wardgate/{gateway}/{device}/{class}");
        assert_eq!(
            t.render("ward-3a", "bed-12-spo2", MessageClass::Vital),
            "wardgate/ward-3a/bed-12-spo2/vital"
        );
    }

    #[test]
    fn ordinary_device_ids_are_kept_verbatim() {
        for id in [
            "bed-12",
            "urn:dev:mac:0024befffe804ff1",
            "Zimmer 3 Bett 2",
            "pulsoxímetro_7",
        ] {
            assert_eq!(sanitize_level(id), id);
        }
    }

    #[test]
    fn device_ids_cannot_add_levels_or_wildcards() {
        let t = readings("wardgate/{gateway}/{device}/{class}");
        let topic = t.render("ward", "a/b/+/#", MessageClass::Alarm);
        assert_eq!(topic, "wardgate/ward/a%2Fb%2F%2B%2F%23/alarm");
        assert_eq!(topic.split('/').count(), 4);
        assert!(!topic.contains(['+', '#']));
    }

    #[test]
    fn nul_control_characters_and_noncharacters_are_escaped() {
        assert_eq!(sanitize_level("a\0b"), "a%00b");
        assert_eq!(sanitize_level("tab\there"), "tab%09here");
        assert_eq!(sanitize_level("del\u{7f}"), "del%7F");
        assert_eq!(sanitize_level("c1\u{85}"), "c1%C2%85");
        assert_eq!(sanitize_level("x\u{FFFF}"), "x%EF%BF%BF");
        assert_eq!(sanitize_level("x\u{FDD0}"), "x%EF%B7%90");
    }

    #[test]
    fn system_topic_prefix_and_the_escape_character_are_escaped() {
        assert_eq!(sanitize_level("$SYS"), "%24SYS");
        // Escaping '%' keeps the mapping one-to-one: these two ids stay distinct.
        assert_ne!(sanitize_level("a/b"), sanitize_level("a%2Fb"));
        assert_eq!(sanitize_level("a%2Fb"), "a%252Fb");
    }

    #[test]
    fn gateway_ids_are_sanitized_too() {
        let t = TopicTemplate::status("wardgate/{gateway}/status").expect("valid");
        assert_eq!(
            t.render("ward/3a", "", MessageClass::Vital),
            "wardgate/ward%2F3a/status"
        );
    }

    #[test]
    fn templates_with_wildcards_unknown_fields_or_bad_braces_are_refused() {
        for bad in [
            "wardgate/+/{device}",
            "wardgate/#",
            "wardgate/{devices}",
            "wardgate/{device",
            "wardgate/device}",
            "",
            "a\0b",
        ] {
            assert!(
                TopicTemplate::readings(bad).is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn status_template_only_takes_the_gateway_field() {
        assert!(TopicTemplate::status("wardgate/{gateway}/status").is_ok());
        assert!(TopicTemplate::status("wardgate/{device}/status").is_err());
        assert!(TopicTemplate::status("wardgate/{class}").is_err());
    }
}
