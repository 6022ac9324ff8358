//! Where in the file each problem is: the line (and column) of the key its path names, so that
//! `check-config` points at it the way a compiler does.
//!
//! The file is parsed a second time, with spans (`toml::de::DeTable`), only when there are
//! problems. A path (`uplinks[1].url`, `coap.block.max_body_bytes`) is followed as far as the
//! file has it: a key the file leaves out (a required one) points at its table.

use toml::de::{DeTable, DeValue};
use wardgate_core::validate::Problem;

/// Fills in `line` and `column` of every problem whose path is in `expanded` (the text after
/// `${VAR}` interpolation). Lines are the same as in `original` unless an interpolated value
/// held a newline; a column is given only where the line reads the same in both.
pub(crate) fn locate(original: &str, expanded: &str, problems: &mut [Problem]) {
    let Ok(doc) = DeTable::parse(expanded) else {
        return;
    };
    let originals: Vec<&str> = original.lines().collect();
    for p in problems.iter_mut() {
        let Some(offset) = find(doc.get_ref(), &segments(&p.path)) else {
            continue;
        };
        let (line, column) = line_col(expanded, offset);
        p.line = Some(line);
        let same = expanded.lines().nth(line - 1) == originals.get(line - 1).copied();
        p.column = same.then_some(column);
    }
}

#[derive(Debug, PartialEq)]
enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

/// `a.b[2].c` → `a`, `b`, `2`, `c`. Quoted keys are not used in wardgate's configuration.
fn segments(path: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            out.push(Segment::Key(key));
        }
        while let Some(inner) = rest.strip_prefix('[') {
            let Some(end) = inner.find(']') else { break };
            if let Ok(i) = inner[..end].parse() {
                out.push(Segment::Index(i));
            }
            rest = &inner[end + 1..];
        }
    }
    out
}

/// The byte offset of the deepest part of `path` the document has.
fn find(doc: &DeTable<'_>, path: &[Segment<'_>]) -> Option<usize> {
    let mut table = doc;
    let mut found = None;
    let mut value: Option<&DeValue<'_>> = None;
    for seg in path {
        match (seg, value) {
            (Segment::Key(k), None) => {
                let (key, v) = table.iter().find(|(key, _)| key.get_ref().as_ref() == *k)?;
                found = Some(key.span().start);
                value = Some(v.get_ref());
            }
            (Segment::Key(k), Some(DeValue::Table(t))) => {
                table = t;
                let Some((key, v)) = table.iter().find(|(key, _)| key.get_ref().as_ref() == *k)
                else {
                    return found;
                };
                found = Some(key.span().start);
                value = Some(v.get_ref());
            }
            (Segment::Index(i), Some(DeValue::Array(items))) => {
                let Some(item) = items.get(*i) else {
                    return found;
                };
                found = Some(item.span().start);
                value = Some(item.get_ref());
            }
            _ => return found,
        }
    }
    found
}

/// 1-based line and column (in characters) of byte `offset`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(start..).map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(path: &str) -> Problem {
        let mut p = wardgate_core::validate::Problems::new();
        p.push(path, "x");
        p.into_vec().remove(0)
    }

    #[test]
    fn paths_split_into_keys_and_indices() {
        assert_eq!(
            segments("uplinks[1].url"),
            [
                Segment::Key("uplinks"),
                Segment::Index(1),
                Segment::Key("url")
            ]
        );
        assert_eq!(
            segments("ingest.mqtt[0].topics[2].filter"),
            [
                Segment::Key("ingest"),
                Segment::Key("mqtt"),
                Segment::Index(0),
                Segment::Key("topics"),
                Segment::Index(2),
                Segment::Key("filter")
            ]
        );
    }

    #[test]
    fn problems_point_at_their_keys_or_the_nearest_table() {
        let text = "[gateway]\nid = \"x\"\n\n[coap]\n  listen = [\"bad\"]\n\n[[uplinks]]\ntype = \"file\"\n\
                    [[uplinks]]\ntype = \"mqtt\"\nurl = \"ftp://x\"\n";
        let mut ps = vec![
            problem("coap.listen"),
            problem("uplinks[1].url"),
            problem("uplinks[1].name"),
            problem("coap.block.max_body_bytes"),
            problem("store.path"),
        ];
        locate(text, text, &mut ps);
        let at: Vec<_> = ps.iter().map(|p| (p.line, p.column)).collect();
        assert_eq!(
            at,
            [
                (Some(5), Some(3)),
                (Some(11), Some(1)),
                // Not in the file: its [[uplinks]] entry.
                (Some(9), Some(1)),
                (Some(4), Some(2)),
                (None, None),
            ]
        );
    }

    #[test]
    fn a_line_changed_by_interpolation_keeps_its_line_but_not_its_column() {
        let original = "[http]\nlisten = \"${ADDR}\"\n";
        let expanded = "[http]\nlisten = \"127.0.0.1:99999\"\n";
        let mut ps = vec![problem("http.listen")];
        locate(original, expanded, &mut ps);
        assert_eq!((ps[0].line, ps[0].column), (Some(2), None));
    }
}
