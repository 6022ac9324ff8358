//! CoRE link format (RFC 6690) as LwM2M uses it: the object list of Register/Update
//! (`</>;rt="oma.lwm2m";ct=11543,</1/0>,</3303>;ver=1.1`) and Discover answers
//! (`</3/0/7>;dim=2,</3303/0/5700>;pmin=10`).
//!
//! [`parse`] reads any link-format text into [`Link`]s (target and attributes, quoted values
//! unescaped), bounded by [`LinkLimits`]; [`ObjectList::from_links`] interprets a Register or
//! Update body and [`ObjectList::to_link_format`] writes one; [`parse_discover`] gives each
//! link of a Discover answer its [`Path`].
//!
//! Leniencies, because clients are seen doing them: whitespace (spaces, tabs, line breaks)
//! around `,` and `;` and at the ends is skipped; an attribute may have no value (`;obs`); a
//! trailing comma is allowed. A body without Content-Format is just text to [`parse`].

use std::fmt;

use crate::node::Path;

/// One link: `<target>;name=value;…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The URI reference between `<` and `>`, as written.
    pub target: String,
    /// Attributes in order (names may repeat, as RFC 6690 allows for some).
    pub attrs: Vec<Attr>,
}

/// A link attribute: `name`, `name=token` or `name="quoted"` (value unescaped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    /// The parameter name.
    pub name: String,
    /// The value, unquoted; `None` for a bare name.
    pub value: Option<String>,
}

impl Link {
    /// The first attribute called `name`.
    pub fn attr(&self, name: &str) -> Option<&Attr> {
        self.attrs.iter().find(|a| a.name == name)
    }

    /// The value of the first attribute called `name` (`None` if absent or bare).
    pub fn attr_value(&self, name: &str) -> Option<&str> {
        self.attr(name).and_then(|a| a.value.as_deref())
    }

    /// The target as an LwM2M path, if it is one (`/3/0/7`, a trailing slash tolerated).
    pub fn path(&self) -> Option<Path> {
        let t = self.target.as_str();
        let t = if t.len() > 1 {
            t.strip_suffix('/').unwrap_or(t)
        } else {
            t
        };
        if !t.starts_with('/') {
            return None;
        }
        t.parse().ok()
    }
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{}>", self.target)?;
        for a in &self.attrs {
            write!(f, ";{}", a.name)?;
            if let Some(v) = &a.value {
                if !v.is_empty() && v.bytes().all(is_ptoken) && a.name != "rt" {
                    write!(f, "={v}")?;
                } else {
                    f.write_str("=\"")?;
                    for c in v.chars() {
                        if c == '"' || c == '\\' {
                            f.write_str("\\")?;
                        }
                        write!(f, "{c}")?;
                    }
                    f.write_str("\"")?;
                }
            }
        }
        Ok(())
    }
}

/// Writes links separated by commas.
pub fn to_link_format(links: &[Link]) -> String {
    links
        .iter()
        .map(Link::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Why link-format text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// Longer than [`LinkLimits::max_len`].
    #[error("link-format text longer than {0} bytes")]
    TooLong(usize),
    /// More than [`LinkLimits::max_links`] links.
    #[error("more than {0} links")]
    TooManyLinks(usize),
    /// A link with more than [`LinkLimits::max_attrs`] attributes.
    #[error("a link with more than {0} attributes")]
    TooManyAttrs(usize),
    /// Not RFC 6690 link-format.
    #[error("malformed link-format at byte {at}: {detail}")]
    Malformed {
        /// Byte offset in the text.
        at: usize,
        /// What was expected.
        detail: &'static str,
    },
    /// Well-formed links that are not a valid LwM2M object list or Discover answer.
    #[error("invalid LwM2M links: {0}")]
    Invalid(String),
}

impl LinkError {
    /// Fixed metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            LinkError::TooLong(_) | LinkError::TooManyLinks(_) | LinkError::TooManyAttrs(_) => {
                "too_large"
            }
            LinkError::Malformed { .. } => "malformed",
            LinkError::Invalid(_) => "invalid",
        }
    }
}

/// Bounds for [`parse_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkLimits {
    /// Longest text, in bytes.
    pub max_len: usize,
    /// Most links.
    pub max_links: usize,
    /// Most attributes on one link.
    pub max_attrs: usize,
}

impl Default for LinkLimits {
    /// 64 KiB, 1024 links, 32 attributes a link: a device with every OMA object and a few
    /// hundred instances fits.
    fn default() -> LinkLimits {
        LinkLimits {
            max_len: 64 * 1024,
            max_links: 1024,
            max_attrs: 32,
        }
    }
}

/// Parses link-format text with [`LinkLimits::default`].
pub fn parse(text: &str) -> Result<Vec<Link>, LinkError> {
    parse_with(text, &LinkLimits::default())
}

/// Parses link-format text.
pub fn parse_with(text: &str, limits: &LinkLimits) -> Result<Vec<Link>, LinkError> {
    if text.len() > limits.max_len {
        return Err(LinkError::TooLong(limits.max_len));
    }
    let mut p = Parser {
        s: text.as_bytes(),
        pos: 0,
    };
    let mut links = Vec::new();
    p.skip_ws();
    while !p.at_end() {
        if links.len() >= limits.max_links {
            return Err(LinkError::TooManyLinks(limits.max_links));
        }
        links.push(p.link(limits)?);
        p.skip_ws();
        match p.peek() {
            None => break,
            Some(b',') => {
                p.pos += 1;
                p.skip_ws();
            }
            Some(_) => return Err(p.err("',' or the end after a link")),
        }
    }
    Ok(links)
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn err(&self, detail: &'static str) -> LinkError {
        LinkError::Malformed {
            at: self.pos,
            detail,
        }
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
            self.pos += 1;
        }
    }

    /// The text of `self.s[from..self.pos]`; both ends are at ASCII bytes, so it is UTF-8.
    fn text(&self, from: usize) -> String {
        String::from_utf8_lossy(&self.s[from..self.pos]).into_owned()
    }

    fn link(&mut self, limits: &LinkLimits) -> Result<Link, LinkError> {
        if self.peek() != Some(b'<') {
            return Err(self.err("'<' to start a link"));
        }
        self.pos += 1;
        let start = self.pos;
        while let Some(b) = self.peek() {
            if b == b'>' {
                break;
            }
            if b == b'<' || b.is_ascii_whitespace() || b.is_ascii_control() {
                return Err(self.err("a URI reference character"));
            }
            self.pos += 1;
        }
        if self.at_end() {
            return Err(self.err("'>' to end the URI reference"));
        }
        let target = self.text(start);
        self.pos += 1;
        let mut attrs = Vec::new();
        loop {
            self.skip_ws();
            if self.peek() != Some(b';') {
                break;
            }
            self.pos += 1;
            self.skip_ws();
            if attrs.len() >= limits.max_attrs {
                return Err(LinkError::TooManyAttrs(limits.max_attrs));
            }
            attrs.push(self.attr()?);
        }
        Ok(Link { target, attrs })
    }

    fn attr(&mut self) -> Result<Attr, LinkError> {
        let start = self.pos;
        while self.peek().is_some_and(is_parmname) {
            self.pos += 1;
        }
        if self.pos == start {
            return Err(self.err("an attribute name"));
        }
        let name = self.text(start);
        self.skip_ws();
        if self.peek() != Some(b'=') {
            return Ok(Attr { name, value: None });
        }
        self.pos += 1;
        self.skip_ws();
        let value = if self.peek() == Some(b'"') {
            self.quoted()?
        } else {
            let start = self.pos;
            while self.peek().is_some_and(is_ptoken) {
                self.pos += 1;
            }
            if self.pos == start {
                return Err(self.err("an attribute value"));
            }
            self.text(start)
        };
        Ok(Attr {
            name,
            value: Some(value),
        })
    }

    /// A quoted string (RFC 7230 §3.2.6: `\` escapes the next character).
    fn quoted(&mut self) -> Result<String, LinkError> {
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return Err(self.err("'\"' to end a quoted string")),
                Some(b'"') => {
                    self.pos += 1;
                    break;
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(b) => out.push(b),
                        None => return Err(self.err("a character after '\\'")),
                    }
                    self.pos += 1;
                }
                Some(b) => {
                    out.push(b);
                    self.pos += 1;
                }
            }
        }
        // An escape can split a multi-byte character only if the input was not UTF-8 to
        // begin with, and it was (a &str): a lossless conversion.
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

fn is_parmname(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~*".contains(&b)
}

/// RFC 6690 `ptokenchar`.
fn is_ptoken(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'()*+-./:<=>?@[]^_`{|}~".contains(&b)
}

/// An LwM2M object version (`ver=1.1`): major.minor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    /// Major.
    pub major: u8,
    /// Minor.
    pub minor: u8,
}

impl std::str::FromStr for Version {
    type Err = LinkError;
    fn from_str(s: &str) -> Result<Version, LinkError> {
        let bad = || LinkError::Invalid(format!("ver \"{}\" is not major.minor", s.escape_debug()));
        let (a, b) = s.split_once('.').ok_or_else(bad)?;
        let part = |x: &str| {
            if x.is_empty() || x.len() > 3 || !x.bytes().all(|c| c.is_ascii_digit()) {
                return Err(bad());
            }
            x.parse::<u8>().map_err(|_| bad())
        };
        Ok(Version {
            major: part(a)?,
            minor: part(b)?,
        })
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl serde::Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Version {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Version, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One object (or object instance) a client registers: `</3303>;ver=1.1`, `</3303/0>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ObjectLink {
    /// Object id.
    pub oid: u16,
    /// Instance id, for an instance link.
    pub iid: Option<u16>,
    /// `ver`, when the client states one (without it the object's version is 1.0).
    pub version: Option<Version>,
}

/// A Register/Update object list: the alternate root path, the content formats the client
/// states, the objects and instances.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ObjectList {
    /// The root path of the objects: `/` unless a link with `rt="oma.lwm2m"` names another
    /// (`/lwm2m`); the server prefixes its requests' paths with it. No trailing slash except
    /// for `/` itself.
    pub root: String,
    /// `ct` of the root link (LwM2M 1.0 allows `ct=11543`, 1.1 a quoted list `ct="60 110"`).
    pub content_formats: Vec<u16>,
    /// Object and instance links, in order.
    pub objects: Vec<ObjectLink>,
}

impl Default for ObjectList {
    fn default() -> ObjectList {
        ObjectList {
            root: "/".to_string(),
            content_formats: Vec::new(),
            objects: Vec::new(),
        }
    }
}

impl ObjectList {
    /// Parses and interprets a Register or Update body.
    pub fn parse(text: &str) -> Result<ObjectList, LinkError> {
        ObjectList::from_links(&parse(text)?)
    }

    /// Interprets the links of a Register or Update body (OMA LwM2M TS Core 1.1 §6.2.1).
    ///
    /// The root is the link whose `rt` names `oma.lwm2m` (or a `</>` link); its `ct` lists
    /// the content formats. Object links are below the root: `<root/oid>` or `<root/oid/iid>`.
    /// Links outside the root, or deeper than an instance, are ignored (they carry nothing the
    /// server uses); a malformed `ver` or `ct`, or two roots, is [`LinkError::Invalid`].
    pub fn from_links(links: &[Link]) -> Result<ObjectList, LinkError> {
        let mut list = ObjectList::default();
        let is_root = |l: &Link| {
            l.attr_value("rt")
                .is_some_and(|rt| rt.split_ascii_whitespace().any(|t| t == "oma.lwm2m"))
        };
        let mut roots = links.iter().filter(|l| is_root(l));
        let root_link = match (roots.next(), roots.next()) {
            (Some(_), Some(_)) => {
                return Err(LinkError::Invalid("two links with rt=\"oma.lwm2m\"".into()));
            }
            (Some(l), None) => Some(l),
            (None, _) => links.iter().find(|l| l.target == "/"),
        };
        if let Some(l) = root_link {
            let t = l.target.trim_end_matches('/');
            list.root = if t.is_empty() {
                "/".into()
            } else {
                t.to_string()
            };
            if !list.root.starts_with('/') {
                return Err(LinkError::Invalid("the root path is not absolute".into()));
            }
            for ct in l.attrs.iter().filter(|a| a.name == "ct") {
                let v = ct.value.as_deref().unwrap_or("");
                for n in v.split_ascii_whitespace() {
                    let n = n.parse::<u16>().map_err(|_| {
                        LinkError::Invalid(format!(
                            "ct \"{}\" is not a list of numbers",
                            v.escape_debug()
                        ))
                    })?;
                    list.content_formats.push(n);
                }
            }
        }
        let prefix = if list.root == "/" {
            ""
        } else {
            list.root.as_str()
        };
        for l in links {
            if root_link.is_some_and(|r| std::ptr::eq(r, l)) {
                continue;
            }
            let Some(rest) = l.target.strip_prefix(prefix) else {
                continue;
            };
            let rest = if rest.len() > 1 {
                rest.strip_suffix('/').unwrap_or(rest)
            } else {
                rest
            };
            if !rest.starts_with('/') {
                continue;
            }
            let Ok(path) = rest.parse::<Path>() else {
                continue;
            };
            let (oid, iid) = match *path.ids() {
                [oid] => (oid, None),
                [oid, iid] => (oid, Some(iid)),
                _ => continue,
            };
            let version = l.attr_value("ver").map(str::parse).transpose()?;
            list.objects.push(ObjectLink { oid, iid, version });
        }
        Ok(list)
    }

    /// The Register body for this list: the root link (when the root is not `/` or content
    /// formats are stated), then the objects.
    pub fn to_link_format(&self) -> String {
        let mut links = Vec::new();
        if self.root != "/" || !self.content_formats.is_empty() {
            let mut attrs = vec![Attr {
                name: "rt".into(),
                value: Some("oma.lwm2m".into()),
            }];
            if !self.content_formats.is_empty() {
                let cts: Vec<String> = self.content_formats.iter().map(u16::to_string).collect();
                attrs.push(Attr {
                    name: "ct".into(),
                    value: Some(cts.join(" ")),
                });
            }
            links.push(Link {
                target: self.root.clone(),
                attrs,
            });
        }
        let prefix = if self.root == "/" {
            ""
        } else {
            self.root.as_str()
        };
        for o in &self.objects {
            let target = match o.iid {
                Some(iid) => format!("{prefix}/{}/{iid}", o.oid),
                None => format!("{prefix}/{}", o.oid),
            };
            let attrs = o
                .version
                .map(|v| Attr {
                    name: "ver".into(),
                    value: Some(v.to_string()),
                })
                .into_iter()
                .collect();
            links.push(Link { target, attrs });
        }
        to_link_format(&links)
    }
}

/// One link of a Discover answer: an LwM2M path and its attributes (`dim`, `pmin`, `ver`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoverLink {
    /// The object, instance, resource or resource-instance path.
    pub path: Path,
    /// Attributes in order.
    pub attrs: Vec<Attr>,
}

impl DiscoverLink {
    /// The value of the first attribute called `name`.
    pub fn attr_value(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| a.name == name)
            .and_then(|a| a.value.as_deref())
    }
}

/// Parses a Discover answer: every link must be an LwM2M path ([`LinkError::Invalid`]
/// otherwise).
pub fn parse_discover(text: &str) -> Result<Vec<DiscoverLink>, LinkError> {
    parse(text)?
        .into_iter()
        .map(|l| match l.path() {
            Some(path) => Ok(DiscoverLink {
                path,
                attrs: l.attrs,
            }),
            None => Err(LinkError::Invalid(format!(
                "the Discover link <{}> is not an LwM2M path",
                l.target.escape_debug()
            ))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_values_unescape_and_bare_attributes_have_no_value() {
        let links = parse(r#"</a>;title="x \"y\" \\z";obs;ct=40"#).unwrap();
        assert_eq!(links[0].attr_value("title"), Some(r#"x "y" \z"#));
        assert_eq!(links[0].attr("obs").map(|a| a.value.clone()), Some(None));
        assert_eq!(links[0].attr_value("ct"), Some("40"));
        assert_eq!(parse(&links[0].to_string()).unwrap(), links);
    }
}
