//! Environment interpolation over the raw config text, before TOML parsing.
//!
//! Syntax (as in POSIX shells and Docker Compose):
//! - `${VAR}`: the value of VAR; a problem if VAR is unset;
//! - `${VAR:-default}`: VAR if set and non-empty, else `default`;
//! - `${VAR-default}`: VAR if set (even empty), else `default`;
//! - `$$`: a literal `$`.
//!
//! The scanner knows TOML's lexical structure well enough to do this properly rather than by
//! string replacement:
//! - comments are copied untouched, so documentation may mention `${VAR}`;
//! - inside a basic string (`"..."`, `"""..."""`) the value is escaped for TOML, so a password
//!   containing `"` or `\` stays one string and cannot inject keys;
//! - inside a literal string (`'...'`) a value containing `'` is refused (it cannot be escaped);
//! - outside strings the value is inserted as is, so `max_bytes = ${MAX_BYTES:-1048576}` works
//!   for numbers and booleans.
//!
//! A lone `$` not followed by `{` or `$` is kept as is. Values containing a line break are
//! refused. Every problem is collected; nothing stops at the first.

use wardgate_core::validate::Problems;

/// Where the scanner is in the TOML text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lex {
    Bare,
    Comment,
    Basic,
    MultiBasic,
    Literal,
    MultiLiteral,
}

/// Expands `text`, recording problems (with 1-based line numbers) in `problems`.
pub fn interpolate(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    problems: &mut Problems,
) -> String {
    let mut out = String::with_capacity(text.len());
    let mut lex = Lex::Bare;
    let mut lineno = 1;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        let tail = &rest[c.len_utf8()..];
        match (lex, c) {
            (_, '\n') => {
                lineno += 1;
                if matches!(lex, Lex::Comment | Lex::Basic | Lex::Literal) {
                    lex = Lex::Bare;
                }
            }
            (Lex::Bare, '#') => lex = Lex::Comment,
            (Lex::Bare, '"') if rest.starts_with("\"\"\"") => {
                out.push_str("\"\"\"");
                rest = &rest[3..];
                lex = Lex::MultiBasic;
                continue;
            }
            (Lex::Bare, '"') => lex = Lex::Basic,
            (Lex::Bare, '\'') if rest.starts_with("\'\'\'") => {
                out.push_str("\'\'\'");
                rest = &rest[3..];
                lex = Lex::MultiLiteral;
                continue;
            }
            (Lex::Bare, '\'') => lex = Lex::Literal,
            (Lex::Basic | Lex::MultiBasic, '\\') => {
                // An escape: copy it and the escaped character verbatim.
                out.push('\\');
                if let Some(next) = tail.chars().next() {
                    if next == '\n' {
                        lineno += 1;
                    }
                    out.push(next);
                    rest = &tail[next.len_utf8()..];
                } else {
                    rest = tail;
                }
                continue;
            }
            (Lex::Basic, '"') | (Lex::Literal, '\'') => lex = Lex::Bare,
            (Lex::MultiBasic, '"') if rest.starts_with("\"\"\"") => {
                out.push_str("\"\"\"");
                rest = &rest[3..];
                lex = Lex::Bare;
                continue;
            }
            (Lex::MultiLiteral, '\'') if rest.starts_with("\'\'\'") => {
                out.push_str("\'\'\'");
                rest = &rest[3..];
                lex = Lex::Bare;
                continue;
            }
            (l, '$') if l != Lex::Comment => {
                rest = substitute(tail, lex, lineno, lookup, problems, &mut out);
                continue;
            }
            _ => {}
        }
        out.push(c);
        rest = tail;
    }
    out
}

/// Handles the text after a `$`; returns what is left to scan.
fn substitute<'a>(
    after: &'a str,
    lex: Lex,
    lineno: usize,
    lookup: &dyn Fn(&str) -> Option<String>,
    problems: &mut Problems,
    out: &mut String,
) -> &'a str {
    if let Some(tail) = after.strip_prefix('$') {
        out.push('$');
        return tail;
    }
    let Some(body_and_tail) = after.strip_prefix('{') else {
        out.push('$');
        return after;
    };
    let Some(end) = body_and_tail
        .find(['}', '\n'])
        .filter(|&i| body_and_tail[i..].starts_with('}'))
    else {
        problems.push(format!("line {lineno}"), "unterminated ${...} reference");
        out.push('$');
        return after;
    };
    let expr = &body_and_tail[..end];
    let rest = &body_and_tail[end + 1..];
    let Some(value) = expand(expr, lineno, lookup, problems) else {
        return rest;
    };
    if value.contains(['\n', '\r']) {
        problems.push(
            format!("line {lineno}"),
            format!("the value of ${{{expr}}} contains a line break"),
        );
        return rest;
    }
    match lex {
        Lex::Basic | Lex::MultiBasic => {
            for ch in value.chars() {
                match ch {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
                    c => out.push(c),
                }
            }
        }
        Lex::Literal | Lex::MultiLiteral if value.contains('\'') => problems.push(
            format!("line {lineno}"),
            format!(
                "the value of ${{{expr}}} contains ' and cannot go in a '...' string; use \"...\""
            ),
        ),
        _ => out.push_str(&value),
    }
    rest
}

fn expand(
    expr: &str,
    lineno: usize,
    lookup: &dyn Fn(&str) -> Option<String>,
    problems: &mut Problems,
) -> Option<String> {
    let (name, default, empty_counts_as_unset) = if let Some((n, d)) = expr.split_once(":-") {
        (n, Some(d), true)
    } else if let Some((n, d)) = expr.split_once('-') {
        (n, Some(d), false)
    } else {
        (expr, None, false)
    };
    let valid_name = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if !valid_name {
        problems.push(
            format!("line {lineno}"),
            format!("${{{expr}}}: {name:?} is not a valid environment variable name"),
        );
        return None;
    }
    match (lookup(name), default) {
        (Some(v), Some(d)) if v.is_empty() && empty_counts_as_unset => Some(d.to_owned()),
        (Some(v), _) => Some(v),
        (None, Some(d)) => Some(d.to_owned()),
        (None, None) => {
            problems.push(
                format!("line {lineno}"),
                format!("environment variable {name} is not set (use ${{{name}:-default}} for a default)"),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str, vars: &[(&str, &str)]) -> (String, Vec<String>) {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let lookup = move |n: &str| vars.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let mut p = Problems::new();
        let out = interpolate(text, &lookup, &mut p);
        (
            out,
            p.into_vec().into_iter().map(|p| p.to_string()).collect(),
        )
    }

    #[test]
    fn set_variables_expand_and_defaults_apply_only_when_needed() {
        let (out, p) = run(
            "a = \"${A}\"\nb = \"${B:-two}\"\nc = \"${C:-three}\"\nd = \"${D-four}\"\ne = \"${E-five}\"\n",
            &[("A", "one"), ("C", ""), ("E", "")],
        );
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(
            out,
            "a = \"one\"\nb = \"two\"\nc = \"three\"\nd = \"four\"\ne = \"\"\n"
        );
    }

    #[test]
    fn dollar_escapes_and_lone_dollars_are_kept() {
        let (out, p) = run("x = \"$$HOME cost $5\"", &[]);
        assert!(p.is_empty());
        assert_eq!(out, "x = \"$HOME cost $5\"");
    }

    #[test]
    fn every_missing_variable_is_reported_with_its_line() {
        let (_, p) = run(
            "a = \"${NOPE}\"\nb = \"${ALSO_NOPE}\"\nc = \"${bad name}\"\nd = ${OPEN\n",
            &[],
        );
        assert_eq!(p.len(), 4, "{p:?}");
        assert!(p[0].starts_with("line 1: environment variable NOPE is not set"));
        assert!(p[1].starts_with("line 2:"));
        assert!(p[2].contains("not a valid environment variable name"));
        assert!(p[3].contains("unterminated"));
    }

    #[test]
    fn values_with_line_breaks_are_refused() {
        let (_, p) = run("a = \"${A}\"", &[("A", "x\"\n[evil]")]);
        assert_eq!(p.len(), 1);
        assert!(p[0].contains("line break"));
    }

    #[test]
    fn comments_are_not_interpolated() {
        let (out, p) = run(
            "# use ${VAR} here\na = 1 # or ${OTHER:-x}\nb = \"#${B}\"\n",
            &[("B", "2")],
        );
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(
            out,
            "# use ${VAR} here\na = 1 # or ${OTHER:-x}\nb = \"#2\"\n"
        );
    }

    #[test]
    fn quotes_in_values_cannot_break_out_of_basic_strings() {
        let (out, p) = run("pw = \"${PW}\"\n", &[("PW", "a\"b\\c = [x]")]);
        assert!(p.is_empty(), "{p:?}");
        let table: toml::Table = out.parse().expect("still valid TOML");
        assert_eq!(table["pw"].as_str(), Some("a\"b\\c = [x]"));
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn bare_values_become_typed_toml_values() {
        let (out, p) = run("n = ${N:-42}\nflag = ${F:-true}\n", &[]);
        assert!(p.is_empty(), "{p:?}");
        let table: toml::Table = out.parse().expect("valid TOML");
        assert_eq!(table["n"].as_integer(), Some(42));
        assert_eq!(table["flag"].as_bool(), Some(true));
    }

    #[test]
    fn apostrophes_cannot_go_in_literal_strings() {
        let (_, p) = run("a = '${A}'\n", &[("A", "it's")]);
        assert_eq!(p.len(), 1);
        assert!(p[0].contains("cannot go in"), "{p:?}");
    }
}
