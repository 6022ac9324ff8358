//! The configuration reference, generated from the config types themselves: their doc comments
//! and types (`schemars::JsonSchema`) and their defaults (`Default`, through `Serialize`).
//!
//! Two renderings of one walk over the schema of [`GatewayConfig`]:
//! - [`commented_config`]: `wardgate generate-config`, a `gateway.toml` with every option, each
//!   at its default and commented out (`#key = value`, in the style of `sshd_config`), and prose
//!   lines as `# text`. It runs as it is: the one active entry is a stdout uplink;
//! - [`markdown`]: `docs/configuration.md` (with the device registry's `devices.toml`,
//!   [`registry_sections`]), which a test keeps current (CI fails when a doc
//!   comment, a default or a key changes without regenerating it).
//!
//! Nothing here is written by hand per option, so the reference cannot drift from the code.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde_json::{Map, Value};

use crate::GatewayConfig;

/// How a section appears in `gateway.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SectionKind {
    /// `[name]`: always there, every key has a default.
    Table,
    /// `[name]` that turns something on by being present (`[selector]`).
    Optional,
    /// `[[name]]`: a list of entries, none by default.
    Array,
}

/// One section (`[coap.dedup]`, `[[uplinks]]` of one `type`).
#[derive(Debug, Clone)]
pub struct Section {
    /// Dotted path (`coap.dedup`).
    pub path: String,
    /// How it appears.
    pub kind: SectionKind,
    /// Whether it sits inside an optional or array section (so it is an example, commented out).
    pub example: bool,
    /// What the section is: the doc comment of the field holding it or of its type, whichever
    /// says more (for a variant of a tagged list, both).
    pub doc: String,
    /// For a variant of a tagged list (`[[uplinks]]`): the tag key and value (`type`, `mqtt`).
    pub tag: Option<(String, String)>,
    /// The keys that are not sections themselves.
    pub options: Vec<Key>,
}

/// One key.
#[derive(Debug, Clone)]
pub struct Key {
    /// The key.
    pub key: String,
    /// Its doc comment.
    pub doc: String,
    /// Its type in words (`duration`, `array of string`, `"text" | "json"`).
    pub ty: String,
    /// Its default; `None` when it has none (required) or is unset by default.
    pub default: Option<Value>,
    /// Whether it must be given.
    pub required: bool,
}

/// Every section of `gateway.toml`, in file order.
pub fn sections() -> Vec<Section> {
    let schema = serde_json::to_value(schemars::schema_for!(GatewayConfig)).unwrap_or(Value::Null);
    walk(&schema, declaration_order())
}

/// Every section of the device registry's `devices.toml` (`[registry] path`), the top level
/// (path `""`) first.
pub fn registry_sections() -> Vec<Section> {
    let schema = serde_json::to_value(schemars::schema_for!(wardgate_registry::RegistryFile))
        .unwrap_or(Value::Null);
    walk(&schema, HashMap::new())
}

/// The sections of the file `schema` describes; `order` gives the keys' declaration order where
/// it is known. The top level is kept only when it has keys of its own.
fn walk(schema: &Value, order: HashMap<String, Vec<String>>) -> Vec<Section> {
    let walker = Walker {
        order,
        defs: schema
            .get("$defs")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default(),
    };
    let mut out = Vec::new();
    walker.object(
        schema,
        Place {
            path: String::new(),
            kind: SectionKind::Table,
            example: false,
            doc: String::new(),
            tag: None,
        },
        &mut out,
    );
    out.retain(|s| !s.path.is_empty() || !s.options.is_empty());
    out
}

/// Where a section is being placed.
struct Place {
    path: String,
    kind: SectionKind,
    example: bool,
    doc: String,
    tag: Option<(String, String)>,
}

struct Walker {
    defs: Map<String, Value>,
    /// Section path → its keys in declaration order (see [`declaration_order`]).
    order: HashMap<String, Vec<String>>,
}

impl Walker {
    /// Follows `$ref`, and `anyOf: [$ref, null]` (an `Option<T>`): the target and whether it was
    /// optional.
    fn resolve<'a>(&'a self, s: &'a Value) -> (&'a Value, bool) {
        if let Some(r) = s.get("$ref").and_then(Value::as_str) {
            let name = r.trim_start_matches("#/$defs/");
            if let Some(d) = self.defs.get(name) {
                return (self.resolve(d).0, false);
            }
        }
        if let Some(any) = s.get("anyOf").and_then(Value::as_array) {
            let non_null: Vec<&Value> = any
                .iter()
                .filter(|v| v.get("type").and_then(Value::as_str) != Some("null"))
                .collect();
            if let [one] = non_null.as_slice()
                && any.len() == 2
            {
                return (self.resolve(one).0, true);
            }
        }
        (s, false)
    }

    fn is_struct(s: &Value) -> bool {
        s.get("properties").is_some()
    }

    /// Adds the section at `place` (an object schema) and everything under it.
    fn object(&self, s: &Value, place: Place, out: &mut Vec<Section>) {
        let props = s
            .get("properties")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let required: Vec<&str> = s
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let keys = order(&props, &required, self.order.get(&place.path));
        let mut section = Section {
            path: place.path.clone(),
            kind: place.kind,
            example: place.example,
            doc: match &place.tag {
                Some(_) => join_docs(&place.doc, doc(s)),
                None => longer(&place.doc, doc(s)).to_owned(),
            },
            tag: place.tag.clone(),
            options: Vec::new(),
        };
        let mut below: Vec<(String, &Value)> = Vec::new();
        for key in &keys {
            let Some(p) = props.get(key.as_str()) else {
                continue;
            };
            if place.tag.as_ref().is_some_and(|(k, _)| k == key) {
                continue;
            }
            let (target, _) = self.resolve(p);
            let item = target.get("items").map(|i| self.resolve(i).0);
            let is_section = Self::is_struct(target)
                || item.is_some_and(|i| Self::is_struct(i) || i.get("oneOf").is_some());
            if is_section {
                below.push((key.clone(), p));
                continue;
            }
            let default = p.get("default").filter(|v| !v.is_null()).cloned();
            section.options.push(Key {
                key: key.clone(),
                doc: doc(p).to_owned(),
                ty: self.type_name(p),
                required: required.contains(&key.as_str()) && default.is_none(),
                default,
            });
        }
        out.push(section);
        // Tables first, in declaration order, then lists (`[[...]]`, which the TOML text of the
        // defaults shows as `key = []` ahead of the tables).
        below.sort_by_key(|(_, p)| self.resolve(p).0.get("items").is_some());
        for (key, p) in below {
            let (target, optional) = self.resolve(p);
            let path = if place.path.is_empty() {
                key.clone()
            } else {
                format!("{}.{key}", place.path)
            };
            let field_doc = doc(p).to_owned();
            if Self::is_struct(target) {
                let kind = if optional {
                    SectionKind::Optional
                } else {
                    SectionKind::Table
                };
                let example = place.example || optional;
                let place = Place {
                    path,
                    kind,
                    example,
                    doc: field_doc,
                    tag: None,
                };
                self.object(target, place, out);
                continue;
            }
            let Some(item) = target.get("items").map(|i| self.resolve(i).0) else {
                continue;
            };
            match item.get("oneOf").and_then(Value::as_array) {
                Some(variants) => {
                    for v in variants {
                        let Some((tag, value)) = tag_of(v) else {
                            continue;
                        };
                        let place = Place {
                            path: path.clone(),
                            kind: SectionKind::Array,
                            example: true,
                            doc: longer(&field_doc, doc(item)).to_owned(),
                            tag: Some((tag, value)),
                        };
                        self.object(v, place, out);
                    }
                }
                None => {
                    let place = Place {
                        path,
                        kind: SectionKind::Array,
                        example: true,
                        doc: field_doc,
                        tag: None,
                    };
                    self.object(item, place, out);
                }
            }
        }
    }

    /// The type of a key in words.
    fn type_name(&self, s: &Value) -> String {
        let (s, _) = self.resolve(s);
        if let Some(values) = enum_values(s) {
            return values.join(" | ");
        }
        if s.get("format").and_then(Value::as_str) == Some("duration") {
            return "duration".into();
        }
        let ty = match s.get("type") {
            Some(Value::String(t)) => t.clone(),
            Some(Value::Array(ts)) => ts
                .iter()
                .filter_map(Value::as_str)
                .find(|t| *t != "null")
                .unwrap_or("any")
                .to_owned(),
            _ => "any".into(),
        };
        match ty.as_str() {
            "array" => match s.get("items") {
                Some(i) => format!("array of {}", self.type_name(i)),
                None => "array".into(),
            },
            "object" => match s.get("additionalProperties") {
                Some(v) if v.is_object() => format!("table of {}", self.type_name(v)),
                _ => "table".into(),
            },
            other => other.to_owned(),
        }
    }
}

/// The keys of every section in declaration order, read from the defaults serialized as TOML
/// (the serializer writes struct fields in order; the schema's and `toml::Table`'s maps are
/// sorted). The text is our own serializer's output: `[a.b]` headers and `key = value` lines.
fn declaration_order() -> HashMap<String, Vec<String>> {
    let text = toml::to_string(&GatewayConfig::default()).unwrap_or_default();
    let mut order: HashMap<String, Vec<String>> = HashMap::new();
    let mut section = String::new();
    for line in text.lines() {
        if let Some(h) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = h.trim_matches(['[', ']']).to_owned();
            let (parent, key) = section.rsplit_once('.').unwrap_or(("", &section));
            let keys = order.entry(parent.to_owned()).or_default();
            if !keys.iter().any(|k| k == key) {
                keys.push(key.to_owned());
            }
        } else if let Some((key, _)) = line.split_once(" = ") {
            order
                .entry(section.clone())
                .or_default()
                .push(key.to_owned());
        }
    }
    order
}

/// Keys in declaration order where the defaults show it; the rest required first, then by name.
fn order(
    props: &Map<String, Value>,
    required: &[&str],
    known: Option<&Vec<String>>,
) -> Vec<String> {
    let mut keys: Vec<String> = known
        .map(|k| {
            k.iter()
                .filter(|k| props.contains_key(k.as_str()))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let mut rest: Vec<&String> = props.keys().filter(|k| !keys.contains(k)).collect();
    rest.sort_by_key(|k| (!required.contains(&k.as_str()), k.as_str()));
    keys.extend(rest.into_iter().cloned());
    keys
}

/// A tagged variant's tag key and value: the property holding a single `const` or `enum`.
fn tag_of(v: &Value) -> Option<(String, String)> {
    let props = v.get("properties")?.as_object()?;
    props.iter().find_map(|(k, p)| {
        let value = p
            .get("const")
            .or_else(|| p.get("enum").and_then(Value::as_array)?.first())?
            .as_str()?;
        Some((k.clone(), value.to_owned()))
    })
}

/// The values of a string enum (`enum`, or `oneOf` of `const`s), quoted.
fn enum_values(s: &Value) -> Option<Vec<String>> {
    if let Some(e) = s.get("enum").and_then(Value::as_array) {
        return Some(e.iter().map(toml_literal).collect());
    }
    let one_of = s.get("oneOf")?.as_array()?;
    one_of
        .iter()
        .map(|v| {
            v.get("const")
                .or_else(|| v.get("enum").and_then(Value::as_array)?.first())
                .map(toml_literal)
        })
        .collect()
}

fn doc(s: &Value) -> &str {
    s.get("description").and_then(Value::as_str).unwrap_or("")
}

/// The field's doc comment or its type's, whichever says more (they often say the same).
fn longer<'a>(field: &'a str, ty: &'a str) -> &'a str {
    if ty.len() > field.len() { ty } else { field }
}

fn join_docs(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_owned(),
        (_, true) => a.to_owned(),
        _ if a == b => a.to_owned(),
        _ => format!("{a}\n\n{b}"),
    }
}

/// A JSON value as a TOML value (inline tables for objects).
fn toml_literal(v: &Value) -> String {
    match v {
        Value::Null => "<unset>".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => toml::Value::String(s.clone()).to_string(),
        Value::Array(a) => {
            let items: Vec<String> = a.iter().map(toml_literal).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Object(o) => {
            let items: Vec<String> = o
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| format!("{k} = {}", toml_literal(v)))
                .collect();
            format!("{{ {} }}", items.join(", "))
        }
    }
}

/// Doc text as `# ` comment lines, with paragraphs kept.
fn comment(out: &mut String, text: &str) {
    for line in text.lines() {
        if line.trim().is_empty() {
            out.push_str("#\n");
        } else {
            let _ = writeln!(out, "# {}", line.trim_end());
        }
    }
}

/// `wardgate generate-config`: a complete, commented `gateway.toml`. Every option is present at
/// its default and commented out (`#key = value`); uncommenting one and changing its value is
/// how it is set. Sections that switch something on by being present (`[selector]`) and list
/// entries (`[[uplinks]]`, ...) are commented out entirely, with `<type>` placeholders for the
/// keys without a default. The one active entry, a stdout uplink, makes the file run as it is.
pub fn commented_config() -> String {
    let mut out = String::new();
    out.push_str(
        "# wardgate gateway.toml: every option, at its default.\n\
         # Generated by `wardgate generate-config` from the configuration types (the same text is in\n\
         # docs/configuration.md). Lines `#key = value` show a default: uncomment one to change it.\n\
         # Any value may use ${VAR} or ${VAR:-default}; keep secrets in the environment.\n\
         # Check a file without starting anything: wardgate check-config --config gateway.toml\n",
    );
    for s in sections() {
        let header = match s.kind {
            SectionKind::Array => format!("[[{}]]", s.path),
            _ => format!("[{}]", s.path),
        };
        out.push('\n');
        comment(&mut out, &s.doc);
        if s.example {
            let _ = writeln!(out, "#{header}");
        } else {
            let _ = writeln!(out, "{header}");
        }
        if let Some((k, v)) = &s.tag {
            let _ = writeln!(out, "#{k} = {}", toml_literal(&Value::String(v.clone())));
        }
        for o in &s.options {
            comment(&mut out, &o.doc);
            let value = match &o.default {
                Some(v) => toml_literal(v),
                None if o.required => format!("<{}>  # required", o.ty),
                None => format!("<{}>  # unset by default", o.ty),
            };
            let _ = writeln!(out, "#{} = {value}", o.key);
        }
    }
    out.push_str(
        "\n# The one active entry: normalized readings as JSON lines on stdout, so this file runs\n\
         # as it is. Replace it with your MQTT broker or HTTPS endpoint (see [[uplinks]] above).\n\
         [[uplinks]]\n\
         type = \"file\"\n\
         name = \"stdout\"\n\
         path = \"-\"\n",
    );
    out
}

/// `docs/configuration.md`.
pub fn markdown() -> String {
    let sections = sections();
    let registry = registry_sections();
    let mut out = String::new();
    out.push_str(
        "# Configuration reference\n\n\
         <!-- Generated by `wardgate generate-config --reference` from the configuration types'\n\
         doc comments and defaults. Do not edit: a test fails when this file is stale. -->\n\n\
         Every key of `gateway.toml` and of the device registry `devices.toml`, its type, its \
         default and what it does. \
         `wardgate generate-config` prints the same as a commented `gateway.toml`; \
         `wardgate check-config --config FILE` checks a file and names the line, the key and the \
         fix of every problem.\n\n\
         - Any value may use `${VAR}` or `${VAR:-default}` (the environment); keep secrets there.\n\
         - Durations are written like `500ms`, `5s`, `10m`, `24h`.\n\
         - Files the configuration names are relative to the directory of `gateway.toml`.\n\
         - `[name]` sections are always there (every key has a default); a section marked \
         *optional* turns its feature on by being present; `[[name]]` sections are lists, empty by \
         default.\n\n## Sections\n\n",
    );
    for s in &sections {
        let _ = writeln!(out, "- [`{}`](#{})", header(s), anchor(&header(s)));
    }
    out.push_str("\nThe device registry, `devices.toml` (`[registry] path`):\n\n");
    for s in &registry {
        let _ = writeln!(out, "- [`{}`](#{})", header(s), anchor(&header(s)));
    }
    render(&mut out, &sections);
    out.push_str(
        "\n# The device registry: `devices.toml`\n\n\
         The file `[registry] path` names: each device, the identities it proves (a DTLS PSK, \
         bearer tokens by their SHA-256, client certificates by fingerprint) and what it may do. \
         The admin API edits it with immediate effect; hand edits take effect on SIGHUP. An \
         example: [`examples/devices.toml`](examples/devices.toml); provisioning and rotation: \
         [`security.md`](security.md).\n",
    );
    render(&mut out, &registry);
    out
}

/// The Markdown of `sections`, a `##` heading each.
fn render(out: &mut String, sections: &[Section]) {
    for s in sections {
        let _ = write!(out, "\n## `{}`\n\n", header(s));
        match s.kind {
            SectionKind::Optional => out.push_str("*Optional: present turns it on.*\n\n"),
            SectionKind::Array => out.push_str("*A list: zero or more entries.*\n\n"),
            SectionKind::Table => {}
        }
        if !s.doc.is_empty() {
            let _ = write!(out, "{}\n\n", paragraphs(&s.doc));
        }
        if let Some((k, v)) = &s.tag {
            let _ = write!(out, "With `{k} = \"{v}\"`.\n\n");
        }
        for o in &s.options {
            let default = match &o.default {
                Some(v) => format!("default `{}`", toml_literal(v)),
                None if o.required => "**required**".to_owned(),
                None => "unset by default".to_owned(),
            };
            let _ = writeln!(
                out,
                "- **`{}`** ({}; {default}): {}",
                o.key,
                o.ty.replace('|', "\\|"),
                paragraphs(&o.doc).replace("\n\n", " ")
            );
        }
    }
}

fn header(s: &Section) -> String {
    if s.path.is_empty() {
        return "(top level)".into();
    }
    let base = match s.kind {
        SectionKind::Array => format!("[[{}]]", s.path),
        _ => format!("[{}]", s.path),
    };
    match &s.tag {
        Some((k, v)) => format!("{base} {k} = \"{v}\""),
        None => base,
    }
}

/// The GitHub-style anchor of a heading.
fn anchor(heading: &str) -> String {
    heading
        .chars()
        .filter_map(|c| match c {
            'a'..='z' | '0'..='9' | '-' | '_' => Some(c),
            'A'..='Z' => Some(c.to_ascii_lowercase()),
            ' ' => Some('-'),
            _ => None,
        })
        .collect()
}

/// Doc comment text with its hard line breaks joined (paragraphs and list items kept).
fn paragraphs(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.is_empty() {
            out.push_str("\n\n");
        } else if t.starts_with("- ") && !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
            out.push_str(t);
        } else {
            if !out.is_empty() && !out.ends_with('\n') {
                out.push(' ');
            }
            out.push_str(t);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ConfigError, FileUplinkConfig, UplinkConfig, parse};

    fn expected() -> GatewayConfig {
        GatewayConfig {
            uplinks: vec![UplinkConfig::File(FileUplinkConfig {
                name: "stdout".into(),
                path: "-".into(),
                fsync: false,
            })],
            ..GatewayConfig::default()
        }
    }

    fn parsed(text: &str) -> GatewayConfig {
        match parse(text, &|_| None) {
            Ok(c) => c,
            Err(ConfigError::Invalid(p)) => panic!("{p:#?}\n{text}"),
            Err(e) => panic!("{e}"),
        }
    }

    /// The CI check that `docs/configuration.md` is current.
    #[test]
    fn the_reference_in_docs_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/configuration.md");
        let checked_in = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            checked_in == markdown(),
            "docs/configuration.md is stale (a config type's doc comment, key or default \
             changed): regenerate it with\n  \
             cargo run -p wardgate -- generate-config --reference > docs/configuration.md"
        );
    }

    #[test]
    fn the_generated_config_runs_as_it_is() {
        assert_eq!(parsed(&commented_config()), expected());
    }

    /// Every default shown is the real one: uncommenting every `#key = value` of the sections
    /// that are in effect changes nothing.
    #[test]
    fn uncommenting_every_default_changes_nothing() {
        let mut in_effect = true;
        let mut uncommented = 0;
        let text: String = commented_config()
            .lines()
            .map(|line| {
                if line.starts_with('[') {
                    in_effect = true;
                } else if line.starts_with("#[") {
                    in_effect = false;
                } else if in_effect
                    && line.starts_with('#')
                    && !line.starts_with("# ")
                    && line.contains(" = ")
                    && !line.contains(" = <")
                {
                    uncommented += 1;
                    return format!("{}\n", &line[1..]);
                }
                format!("{line}\n")
            })
            .collect();
        assert!(uncommented > 100, "only {uncommented} options uncommented");
        assert_eq!(parsed(&text), expected());
    }

    #[test]
    fn every_section_and_key_is_documented_and_typed() {
        let sections = sections();
        assert!(sections.len() > 30, "{} sections", sections.len());
        for s in &sections {
            assert!(!s.doc.trim().is_empty(), "[{}] has no doc comment", s.path);
            for o in &s.options {
                assert!(
                    !o.doc.trim().is_empty(),
                    "{}.{} has no doc comment",
                    s.path,
                    o.key
                );
                assert!(!o.ty.contains("any"), "{}.{}: type {}", s.path, o.key, o.ty);
            }
        }
        let paths: Vec<&str> = sections.iter().map(|s| s.path.as_str()).collect();
        for expected in [
            "gateway",
            "coap.dedup",
            "coaps",
            "lwm2m",
            "selector.budgets",
            "ingest.mqtt",
            "uplinks",
            "monitor.capture",
            "split",
        ] {
            assert!(paths.contains(&expected), "no [{expected}] in {paths:?}");
        }
        let uplinks: Vec<_> = sections.iter().filter_map(|s| s.tag.as_ref()).collect();
        assert_eq!(uplinks.len(), 3, "{uplinks:?}");
        let registry = registry_sections();
        let paths: Vec<&str> = registry.iter().map(|s| s.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "",
                "device",
                "device.psk",
                "device.certificate",
                "device.token"
            ]
        );
        for s in &registry {
            assert!(
                !s.doc.trim().is_empty(),
                "devices.toml [{}] has no doc",
                s.path
            );
            for o in &s.options {
                assert!(
                    !o.doc.trim().is_empty(),
                    "devices.toml {}.{}",
                    s.path,
                    o.key
                );
            }
        }
    }

    #[test]
    fn durations_enums_and_lists_read_as_such() {
        let sections = sections();
        let key = |path: &str, key: &str| {
            sections
                .iter()
                .find(|s| s.path == path)
                .and_then(|s| s.options.iter().find(|o| o.key == key))
                .unwrap_or_else(|| panic!("{path}.{key} missing"))
                .clone()
        };
        let piggyback = key("coap", "piggyback_budget");
        assert_eq!(piggyback.ty, "duration");
        assert_eq!(piggyback.default, Some(Value::from("500ms")));
        assert_eq!(key("log", "format").ty, r#""text" | "json""#);
        assert_eq!(key("coap", "listen").ty, "array of string");
        let alarm = key("selector.budgets", "alarm");
        assert_eq!(
            (alarm.ty.as_str(), alarm.default),
            ("duration", Some("1s".into()))
        );
    }

    #[test]
    fn serializing_a_configuration_writes_no_secret() {
        let text = r#"
            [split]
            broker = "mqtts://bus.example:8883"
            password = "s3cret-split-pw"
            [[uplinks]]
            type = "mqtt"
            name = "cloud"
            url = "mqtts://broker.example"
            username = "u"
            password = "s3cret-mqtt"
            [[uplinks]]
            type = "https"
            name = "api"
            url = "https://api.example/v1/readings"
            token = "s3cret-token"
            headers = { "x-api-key" = "s3cret-header" }
            [[ingest.mqtt]]
            name = "sensors"
            url = "mqtt://127.0.0.1"
            client_id = "wardgate"
            password = "s3cret-ingest"
            [[ingest.mqtt.topics]]
            filter = "ward/+/senml"
            device_level = 2
        "#;
        let mut cfg = parsed(text);
        // User info in URLs is refused by validation, but a configuration built in code may
        // still hold some.
        cfg.split.broker = Some("mqtts://bus:s3cret-split@bus.example:8883".into());
        if let UplinkConfig::Mqtt(m) = &mut cfg.uplinks[0] {
            m.url = "mqtts://u:s3cret-url@broker.example".into();
        }
        cfg.ingest.mqtt[0].url = "mqtt://s:s3cret-in-url@127.0.0.1".into();
        let out = toml::to_string(&cfg).unwrap() + &serde_json::to_string(&cfg).unwrap();
        assert!(!out.contains("s3cret"), "{out}");
        assert!(out.contains("<redacted>"), "{out}");
    }
}
