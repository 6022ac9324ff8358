//! OMA DDF XML (the LwM2M registry's object definition format) to [`ObjectDef`]s.
//!
//! Accepted: `<LWM2M>` (namespace attributes and prefixes ignored, an optional XML declaration and
//! UTF-8 byte order mark) holding one or more `<Object ObjectType="MODefinition">`, each with
//! `Name`, `ObjectID`, `MultipleInstances`, `Mandatory`, `Resources` (required) and
//! `Description1`, `ObjectURN`, `LWM2MVersion`, `ObjectVersion` (optional; versions default to
//! `1.0`). Each `<Item ID="…">` has `Name`, `MultipleInstances`, `Mandatory` (required) and
//! `Operations`, `Type`, `RangeEnumeration`, `Units`, `Description` (optional). Other elements
//! are ignored. Keywords compare case-insensitively; text is trimmed; CDATA is text.
//!
//! Refused, with an error naming the object and field: any DTD or entity declaration (the text
//! `<!DOCTYPE` or `<!ENTITY` anywhere, even in a comment: simplest to audit), more than
//! [`MAX_DDF_BYTES`] / [`MAX_XML_NODES`] / [`MAX_OBJECTS_PER_FILE`] /
//! [`MAX_RESOURCES_PER_OBJECT`], ids above 65534, an unknown type or operation keyword, a
//! repeated field, a duplicate resource id, an `ObjectURN` naming another object id.

use std::collections::BTreeMap;

use roxmltree::{Document, Node, ParsingOptions};

use super::{DdfError, ObjectDef, Operations, ResourceDef};
use crate::node::ResourceType;

/// Largest DDF file accepted (the OMA registry's largest is about 130 KiB).
pub const MAX_DDF_BYTES: usize = 1 << 20;
/// Most XML nodes (elements, text, comments) in one file.
pub const MAX_XML_NODES: u32 = 200_000;
/// Most objects in one file (registry files hold one).
pub const MAX_OBJECTS_PER_FILE: usize = 256;
/// Most resources in one object (the registry's largest object has 177).
pub const MAX_RESOURCES_PER_OBJECT: usize = 2048;
/// Highest object or resource id (65535 is reserved).
const MAX_ID: u32 = 65534;

/// Parses one DDF file's bytes: size limit, UTF-8 (a byte order mark is skipped), then
/// [`parse_ddf`].
pub fn parse_ddf_bytes(bytes: &[u8]) -> Result<Vec<ObjectDef>, DdfError> {
    check_size(bytes.len())?;
    let text = std::str::from_utf8(bytes).map_err(|e| DdfError::NotUtf8 {
        at: e.valid_up_to(),
    })?;
    parse_ddf(text)
}

fn check_size(len: usize) -> Result<(), DdfError> {
    if len > MAX_DDF_BYTES {
        return Err(DdfError::TooLarge {
            size: len as u64,
            limit: MAX_DDF_BYTES,
        });
    }
    Ok(())
}

/// Parses one DDF document into its object definitions (at least one).
pub fn parse_ddf(text: &str) -> Result<Vec<ObjectDef>, DdfError> {
    check_size(text.len())?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // roxmltree already refuses a DOCTYPE (allow_dtd: false); this check also catches
    // declarations in places the tokenizer would report as a less clear syntax error.
    for decl in ["<!DOCTYPE", "<!ENTITY"] {
        if text.contains(decl) {
            return Err(DdfError::Dtd(decl));
        }
    }
    let options = ParsingOptions {
        allow_dtd: false,
        nodes_limit: MAX_XML_NODES,
        ..ParsingOptions::default()
    };
    let doc = Document::parse_with_options(text, options).map_err(|e| match e {
        roxmltree::Error::DtdDetected => DdfError::Dtd("<!DOCTYPE"),
        roxmltree::Error::NodesLimitReached => DdfError::TooManyNodes(MAX_XML_NODES),
        other => DdfError::Xml(other.to_string()),
    })?;
    let root = doc.root_element();
    if root.tag_name().name() != "LWM2M" {
        return Err(DdfError::WrongRoot(root.tag_name().name().to_owned()));
    }
    let mut objects: Vec<ObjectDef> = Vec::new();
    for (index, node) in elements(root, "Object").enumerate() {
        if index >= MAX_OBJECTS_PER_FILE {
            return Err(DdfError::TooManyObjects(MAX_OBJECTS_PER_FILE));
        }
        let def = parse_object(node, index + 1)?;
        if objects
            .iter()
            .any(|o| o.id == def.id && o.version == def.version)
        {
            return Err(DdfError::DuplicateObject {
                id: def.id,
                version: def.version,
            });
        }
        objects.push(def);
    }
    if objects.is_empty() {
        return Err(DdfError::NoObjects);
    }
    Ok(objects)
}

/// Child elements with a local name (namespace prefixes ignored).
fn elements<'a, 'i>(node: Node<'a, 'i>, name: &'static str) -> impl Iterator<Item = Node<'a, 'i>> {
    node.children()
        .filter(move |n| n.is_element() && n.tag_name().name() == name)
}

/// Reads the fields of one `<Object>` or `<Item>`, naming it in errors.
struct Fields<'a, 'i> {
    node: Node<'a, 'i>,
    object: String,
    resource: Option<u16>,
}

impl<'a, 'i> Fields<'a, 'i> {
    fn err(&self, field: &'static str, problem: impl Into<String>) -> DdfError {
        DdfError::Field {
            object: self.object.clone(),
            resource: self.resource,
            field,
            problem: problem.into(),
        }
    }

    /// The trimmed text of child element `name` (all text and CDATA inside it), `None` when the
    /// element is absent; an error when it appears twice.
    fn text(&self, name: &'static str) -> Result<Option<String>, DdfError> {
        let mut found = elements(self.node, name);
        let Some(el) = found.next() else {
            return Ok(None);
        };
        if found.next().is_some() {
            return Err(self.err(name, "appears more than once"));
        }
        let text: String = el
            .descendants()
            .filter(|n| n.is_text())
            .filter_map(|n| n.text())
            .collect();
        Ok(Some(text.trim().to_owned()))
    }

    fn required(&self, name: &'static str) -> Result<String, DdfError> {
        match self.text(name)? {
            Some(t) if !t.is_empty() => Ok(t),
            Some(_) => Err(self.err(name, "is empty")),
            None => Err(self.err(name, "is missing")),
        }
    }

    fn optional(&self, name: &'static str) -> Result<Option<String>, DdfError> {
        Ok(self.text(name)?.filter(|t| !t.is_empty()))
    }

    fn choice(&self, name: &'static str, yes: &str, no: &str) -> Result<bool, DdfError> {
        let v = self.required(name)?;
        if v.eq_ignore_ascii_case(yes) {
            Ok(true)
        } else if v.eq_ignore_ascii_case(no) {
            Ok(false)
        } else {
            Err(self.err(name, format!("is {v:?}, expected {yes} or {no}")))
        }
    }

    fn version(&self, name: &'static str) -> Result<String, DdfError> {
        match self.optional(name)? {
            None => Ok("1.0".to_owned()),
            Some(v) if is_version(&v) => Ok(v),
            Some(v) => Err(self.err(name, format!("is {v:?}, expected MAJOR.MINOR like 1.1"))),
        }
    }
}

/// `MAJOR.MINOR`, each 1 to 3 digits.
pub(super) fn is_version(v: &str) -> bool {
    let digits = |s: &str| (1..=3).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
    v.split_once('.')
        .is_some_and(|(major, minor)| digits(major) && digits(minor))
}

fn parse_id(text: &str) -> Option<u16> {
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u32>()
        .ok()
        .filter(|n| *n <= MAX_ID)
        .and_then(|n| u16::try_from(n).ok())
}

fn parse_object(node: Node<'_, '_>, index: usize) -> Result<ObjectDef, DdfError> {
    let mut f = Fields {
        node,
        object: format!("object #{index}"),
        resource: None,
    };
    if let Some(t) = node.attribute("ObjectType") {
        if !t.trim().eq_ignore_ascii_case("MODefinition") {
            return Err(f.err(
                "ObjectType",
                format!("is {t:?}; only MODefinition objects can be loaded"),
            ));
        }
    }
    let id_text = f.required("ObjectID")?;
    let id = parse_id(&id_text)
        .ok_or_else(|| f.err("ObjectID", format!("is {id_text:?}, expected 0..=65534")))?;
    f.object = format!("object {id}");
    let name = f.required("Name")?;
    f.object = format!("object {id} ({name})");

    let version = f.version("ObjectVersion")?;
    let lwm2m_version = f.version("LWM2MVersion")?;
    let urn = match f.optional("ObjectURN")? {
        None => default_urn(id, &version),
        Some(urn) => {
            check_urn(&urn, id).map_err(|p| f.err("ObjectURN", p))?;
            urn
        }
    };
    let multiple = f.choice("MultipleInstances", "Multiple", "Single")?;
    let mandatory = f.choice("Mandatory", "Mandatory", "Optional")?;
    let description = f.optional("Description1")?.unwrap_or_default();

    let mut res_nodes = elements(node, "Resources");
    let res_node = res_nodes
        .next()
        .ok_or_else(|| f.err("Resources", "is missing"))?;
    if res_nodes.next().is_some() {
        return Err(f.err("Resources", "appears more than once"));
    }
    let mut resources = BTreeMap::new();
    for (count, item) in elements(res_node, "Item").enumerate() {
        if count >= MAX_RESOURCES_PER_OBJECT {
            return Err(DdfError::TooManyResources {
                object: f.object,
                limit: MAX_RESOURCES_PER_OBJECT,
            });
        }
        let def = parse_item(item, &f.object)?;
        let rid = def.id;
        if resources.insert(rid, def).is_some() {
            return Err(DdfError::DuplicateResource {
                object: f.object,
                id: rid,
            });
        }
    }
    Ok(ObjectDef {
        id,
        name,
        description,
        urn,
        version,
        lwm2m_version,
        multiple,
        mandatory,
        resources,
    })
}

/// `urn:oma:lwm2m:{oma|ext|x}:{id}` (with `:{version}` from 1.1 on), by the registry's id ranges.
fn default_urn(id: u16, version: &str) -> String {
    let kind = match id {
        0..=1023 => "oma",
        1024..=10240 => "ext",
        _ => "x",
    };
    if version == "1.0" {
        format!("urn:oma:lwm2m:{kind}:{id}")
    } else {
        format!("urn:oma:lwm2m:{kind}:{id}:{version}")
    }
}

fn check_urn(urn: &str, id: u16) -> Result<(), String> {
    let rest = urn
        .strip_prefix("urn:oma:lwm2m:")
        .ok_or_else(|| format!("is {urn:?}, expected urn:oma:lwm2m:…"))?;
    let mut parts = rest.split(':');
    let _kind = parts.next();
    match parts.next().map(parse_id) {
        Some(Some(n)) if n == id => Ok(()),
        _ => Err(format!("is {urn:?}, which does not name object {id}")),
    }
}

fn parse_item(node: Node<'_, '_>, object: &str) -> Result<ResourceDef, DdfError> {
    let mut f = Fields {
        node,
        object: object.to_owned(),
        resource: None,
    };
    let id_text = node
        .attribute("ID")
        .ok_or_else(|| f.err("Item ID", "is missing"))?
        .trim();
    let id = parse_id(id_text)
        .ok_or_else(|| f.err("Item ID", format!("is {id_text:?}, expected 0..=65534")))?;
    f.resource = Some(id);
    let name = f.required("Name")?;
    let operations = match f.optional("Operations")? {
        None => Operations::None,
        Some(op) => Operations::from_keyword(&op).ok_or_else(|| {
            f.err(
                "Operations",
                format!("is {op:?}, expected R, W, RW, E or empty"),
            )
        })?,
    };
    let multiple = f.choice("MultipleInstances", "Multiple", "Single")?;
    let mandatory = f.choice("Mandatory", "Mandatory", "Optional")?;
    let rtype = match f.optional("Type")? {
        // Executables have no type; a few registry files also leave it empty on readable
        // resources, whose values then keep the type their content format carries (and one
        // gives an executable a type, which is kept: execute arguments are not decoded by it).
        None => ResourceType::None,
        Some(t) => type_from_keyword(&t).ok_or_else(|| {
            f.err(
                "Type",
                format!(
                    "is {t:?}, expected String, Integer, Unsigned Integer, Float, Boolean, \
                     Opaque, Time, Objlnk, Corelnk or none"
                ),
            )
        })?,
    };
    Ok(ResourceDef {
        id,
        name,
        operations,
        multiple,
        mandatory,
        rtype,
        range_enumeration: f.optional("RangeEnumeration")?,
        units: f.optional("Units")?,
        description: f.optional("Description")?.unwrap_or_default(),
    })
}

fn type_from_keyword(t: &str) -> Option<ResourceType> {
    let key: String = t
        .chars()
        .filter(|c| !c.is_whitespace())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    Some(match key.as_str() {
        "string" => ResourceType::String,
        "integer" => ResourceType::Integer,
        "unsignedinteger" => ResourceType::Unsigned,
        "float" => ResourceType::Float,
        "boolean" => ResourceType::Boolean,
        "opaque" => ResourceType::Opaque,
        "time" => ResourceType::Time,
        "objlnk" => ResourceType::Objlnk,
        "corelnk" => ResourceType::Corelnk,
        "none" => ResourceType::None,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_within_range_only() {
        assert_eq!(parse_id("0"), Some(0));
        assert_eq!(parse_id("65534"), Some(65534));
        for bad in ["", "65535", "99999", "-1", "+1", "1.0", "0x10", "123456"] {
            assert_eq!(parse_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn versions_are_major_dot_minor() {
        for ok in ["1.0", "1.1", "2.0", "10.12"] {
            assert!(is_version(ok), "{ok}");
        }
        for bad in ["1", "1.", ".1", "1.1.1", "a.b", "1.0 ", "1234.0"] {
            assert!(!is_version(bad), "{bad}");
        }
    }

    #[test]
    fn default_urns_follow_registry_ranges() {
        assert_eq!(default_urn(3, "1.0"), "urn:oma:lwm2m:oma:3");
        assert_eq!(default_urn(3303, "1.1"), "urn:oma:lwm2m:ext:3303:1.1");
        assert_eq!(default_urn(10241, "1.0"), "urn:oma:lwm2m:x:10241");
    }
}
