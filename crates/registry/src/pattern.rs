//! The one glob the registry knows: at most one `*`, matching any run of characters (including
//! none and including `/`). `bed-12` is exact, `bed-12-*` a prefix, `*-spo2` a suffix,
//! `bed-*-spo2` both. Nothing else is special, so a pattern reads as what it matches.

/// A compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pattern {
    prefix: Box<str>,
    /// `None`: the pattern has no `*` and must match exactly.
    suffix: Option<Box<str>>,
}

impl Pattern {
    /// Compiles `text`, or says why not (a fixed message, safe to show).
    pub(crate) fn parse(text: &str) -> Result<Pattern, &'static str> {
        if text.is_empty() {
            return Err("is empty");
        }
        match text.split_once('*') {
            None => Ok(Pattern {
                prefix: text.into(),
                suffix: None,
            }),
            Some((_, after)) if after.contains('*') => Err("has more than one `*`"),
            Some((before, after)) => Ok(Pattern {
                prefix: before.into(),
                suffix: Some(after.into()),
            }),
        }
    }

    /// Matches exactly `s` (a `*` in it is literal).
    pub(crate) fn exact(s: &str) -> Pattern {
        Pattern {
            prefix: s.into(),
            suffix: None,
        }
    }

    /// Matches everything starting with `s`.
    pub(crate) fn prefix(s: &str) -> Pattern {
        Pattern {
            prefix: s.into(),
            suffix: Some("".into()),
        }
    }

    /// Whether `s` matches.
    pub(crate) fn matches(&self, s: &str) -> bool {
        match &self.suffix {
            None => s == &*self.prefix,
            Some(suffix) => {
                s.len() >= self.prefix.len() + suffix.len()
                    && s.starts_with(&*self.prefix)
                    && s.ends_with(&**suffix)
            }
        }
    }

    /// The pattern as written.
    pub(crate) fn text(&self) -> String {
        match &self.suffix {
            None => self.prefix.to_string(),
            Some(s) => format!("{}*{s}", self.prefix),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, s: &str) -> bool {
        Pattern::parse(p).unwrap().matches(s)
    }

    #[test]
    fn one_star_matches_prefix_suffix_or_both() {
        assert!(m("bed-12", "bed-12"));
        assert!(!m("bed-12", "bed-123"));
        assert!(m("bed-12-*", "bed-12-spo2"));
        assert!(m("bed-12-*", "bed-12-"));
        assert!(!m("bed-12-*", "bed-12"));
        assert!(m("*-spo2", "bed-1-spo2"));
        assert!(m("bed-*-spo2", "bed-7-spo2"));
        // Prefix and suffix may not overlap.
        assert!(!m("ab*ba", "aba"));
        assert!(m("*", ""));
        assert!(m("v1/readings/*", "v1/readings/bed-1/x"));
    }

    #[test]
    fn two_stars_or_empty_are_refused() {
        assert!(Pattern::parse("a*b*").is_err());
        assert!(Pattern::parse("").is_err());
        assert_eq!(Pattern::parse("a*b").unwrap().text(), "a*b");
    }
}
