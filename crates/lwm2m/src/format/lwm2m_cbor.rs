//! LwM2M CBOR (11544; OMA LwM2M TS Core 1.2 §7.4.7): nested CBOR maps keyed by path
//! components from the root, each key an unsigned id or an array of ids (a path prefix), each
//! leaf a resource (instance) value: `{[3303, 0]: {5700: 21.5, 5701: "Cel"}}`.
//!
//! Reading: keys nest at most four ids deep, so the walk recurses at most five levels whatever
//! the input; a leaf above a resource path, a map below a resource instance, an empty key array
//! and a null value (the composite-write deletion, which the entry model cannot say) are
//! invalid. Writing: the entries become a tree and every chain of single children collapses into
//! one array key, so the example above is what `/3303/0/5700` and `/3303/0/5701` give.

use std::collections::BTreeMap;

use ciborium_ll::Header;

use super::cbor_io::{Reader, Writer};
use super::value;
use super::{Ctx, Format, FormatError, invalid};
use crate::node::{Entry, Path, Value};

pub(super) fn decode(ctx: &Ctx<'_>, body: &[u8]) -> Result<Vec<Entry>, FormatError> {
    let mut r = Reader::new(body, Format::Lwm2mCbor, ctx.limits);
    let mut out = Vec::new();
    match r.header()? {
        h @ Header::Map(_) => map(ctx, &mut r, h, Path::ROOT, &mut out)?,
        _ => return Err(invalid("LwM2M CBOR is a map at the top")),
    }
    r.finish()?;
    Ok(out)
}

fn map(
    ctx: &Ctx<'_>,
    r: &mut Reader<'_>,
    h: Header,
    prefix: Path,
    out: &mut Vec<Entry>,
) -> Result<(), FormatError> {
    let Header::Map(len) = h else {
        return Err(invalid("a map is expected"));
    };
    let mut i = 0usize;
    loop {
        if len.is_some_and(|n| i >= n) {
            return Ok(());
        }
        let key = r.header()?;
        if len.is_none() && key == Header::Break {
            return Ok(());
        }
        let path = key_path(r, key, prefix)?;
        let vh = r.header()?;
        match vh {
            Header::Map(_) if path.len() < 4 => map(ctx, r, vh, path, out)?,
            Header::Map(_) => return Err(invalid("a map below a resource instance")),
            _ if path.len() < 3 => {
                return Err(invalid(format!("a value at {path}, above a resource")));
            }
            _ => {
                ctx.room(out)?;
                let raw = r.value(vh)?;
                let ids = path.ids();
                let value = value::typed(raw, ctx.types.resource_type(ids[0], ids[2]))
                    .map_err(value::at(&path))?;
                out.push(Entry {
                    path,
                    value,
                    time: None,
                });
            }
        }
        i += 1;
    }
}

/// `prefix` extended by a key: an id or an array of ids.
fn key_path(r: &mut Reader<'_>, key: Header, prefix: Path) -> Result<Path, FormatError> {
    let deeper = |p: Path, h: Header| -> Result<Path, FormatError> {
        match h {
            Header::Positive(id) => u16::try_from(id)
                .ok()
                .and_then(|id| p.child(id))
                .ok_or_else(|| invalid("a path id above 65534 or a path deeper than 4 levels")),
            _ => Err(invalid("a path key is not an unsigned integer")),
        }
    };
    match key {
        Header::Positive(_) => deeper(prefix, key),
        Header::Array(len) => {
            let mut p = prefix;
            let mut n = 0usize;
            loop {
                if len.is_some_and(|l| n >= l) {
                    break;
                }
                let h = r.header()?;
                if len.is_none() && h == Header::Break {
                    break;
                }
                p = deeper(p, h)?;
                n += 1;
            }
            if n == 0 {
                return Err(invalid("an empty path array"));
            }
            Ok(p)
        }
        Header::Break => Err(r.malformed("an unexpected break")),
        _ => Err(invalid("a map key is neither an id nor an array of ids")),
    }
}

#[derive(Debug, Default)]
struct Node<'a> {
    value: Option<&'a Value>,
    children: BTreeMap<u16, Node<'a>>,
}

pub(super) fn encode(entries: &[Entry]) -> Result<Vec<u8>, FormatError> {
    let mut root = Node::default();
    for e in entries {
        let mut node = &mut root;
        for id in e.path.ids() {
            node = node.children.entry(*id).or_default();
        }
        node.value = Some(&e.value);
    }
    let mut w = Writer::default();
    write_children(&mut w, &root);
    Ok(w.into_bytes())
}

fn write_children(w: &mut Writer, node: &Node<'_>) {
    w.map(node.children.len());
    for (id, child) in &node.children {
        let mut key = vec![*id];
        let mut n = child;
        while n.value.is_none() && n.children.len() == 1 {
            let Some((k, c)) = n.children.iter().next() else {
                break;
            };
            key.push(*k);
            n = c;
        }
        if let [single] = key[..] {
            w.uint(u64::from(single));
        } else {
            w.array(key.len());
            for k in &key {
                w.uint(u64::from(*k));
            }
        }
        match n.value {
            Some(v) => w.value(v),
            None => write_children(w, n),
        }
    }
}
