//! The built-in object definitions: DDF files under `objects/`, embedded in the binary.
//!
//! They are parsed at start-up by the same parser as user files; `tests/model_builtin.rs`
//! proves every one parses and checks their facts.

use super::{ObjectDef, parse_ddf};

/// (file name, contents) of every built-in DDF file.
pub(super) const FILES: &[(&str, &str)] = &[
    ("0.xml", include_str!("objects/0.xml")),
    ("1.xml", include_str!("objects/1.xml")),
    ("2.xml", include_str!("objects/2.xml")),
    ("3.xml", include_str!("objects/3.xml")),
    ("4.xml", include_str!("objects/4.xml")),
    ("5.xml", include_str!("objects/5.xml")),
    ("6.xml", include_str!("objects/6.xml")),
    ("7.xml", include_str!("objects/7.xml")),
    ("3300.xml", include_str!("objects/3300.xml")),
    ("3301.xml", include_str!("objects/3301.xml")),
    ("3303.xml", include_str!("objects/3303.xml")),
    ("3303-1_0.xml", include_str!("objects/3303-1_0.xml")),
    ("3304.xml", include_str!("objects/3304.xml")),
    ("3306.xml", include_str!("objects/3306.xml")),
    ("3311.xml", include_str!("objects/3311.xml")),
    ("3316.xml", include_str!("objects/3316.xml")),
    ("3323.xml", include_str!("objects/3323.xml")),
    ("3336.xml", include_str!("objects/3336.xml")),
    ("3336-1_0.xml", include_str!("objects/3336-1_0.xml")),
    ("3341.xml", include_str!("objects/3341.xml")),
    ("3342.xml", include_str!("objects/3342.xml")),
    ("3346.xml", include_str!("objects/3346.xml")),
    ("3347.xml", include_str!("objects/3347.xml")),
];

/// Every built-in definition.
pub(super) fn definitions() -> impl Iterator<Item = ObjectDef> {
    FILES.iter().flat_map(|(name, text)| match parse_ddf(text) {
        Ok(defs) => defs,
        // Unreachable for the shipped files (the tests parse each); never panic at start-up.
        Err(e) => {
            tracing::error!(file = name, error = %e, "built-in LwM2M object definition refused");
            Vec::new()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_file_parses() {
        for (name, text) in FILES {
            let defs = parse_ddf(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(defs.len(), 1, "{name}");
        }
    }
}
