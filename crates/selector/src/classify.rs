//! The class mapping: device / resource patterns that set a reading's [`MessageClass`].

use wardgate_core::MessageClass;

use crate::config::ClassRuleConfig;

/// Ordered rules; the first whose patterns all match decides, otherwise the reading keeps
/// the class it has (from its adapter or device registration).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClassMap {
    rules: Vec<ClassRuleConfig>,
}

impl ClassMap {
    /// The rules in configuration order.
    pub fn new(rules: &[ClassRuleConfig]) -> Self {
        ClassMap {
            rules: rules.to_vec(),
        }
    }

    /// The class for a reading of `device` (and `resource`, when the adapter knows one).
    /// A rule with a resource pattern never matches a reading without a resource.
    pub fn classify(
        &self,
        device: &str,
        resource: Option<&str>,
        current: MessageClass,
    ) -> MessageClass {
        self.rules
            .iter()
            .find(|r| {
                r.device.as_deref().is_none_or(|p| glob(p, device))
                    && r.resource
                        .as_deref()
                        .is_none_or(|p| resource.is_some_and(|res| glob(p, res)))
            })
            .map_or(current, |r| r.class)
    }
}

/// Whole-string match where `*` stands for any run of bytes (including none and `/`); every
/// other byte matches itself. Linear backtracking on the last `*` (no recursion, so a hostile
/// pattern or id cannot blow the stack; O(pattern × text) at worst).
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_whole_strings_with_star_as_any_run() {
        assert!(glob("bed-*-spo2", "bed-12-spo2"));
        assert!(glob("bed-*-spo2", "bed--spo2"));
        assert!(glob("*", ""));
        assert!(glob("*/alarm", "3/0/alarm"));
        assert!(glob("a*b*c", "aXbYbZc"));
        assert!(glob("exact", "exact"));
        assert!(!glob("exact", "exact2"));
        assert!(!glob("bed-*-spo2", "bed-12-spo2x"));
        assert!(!glob("a*b", "ac"));
        assert!(!glob("", "x"));
    }

    fn rule(device: Option<&str>, resource: Option<&str>, class: MessageClass) -> ClassRuleConfig {
        ClassRuleConfig {
            device: device.map(str::to_owned),
            resource: resource.map(str::to_owned),
            class,
        }
    }

    #[test]
    fn the_first_matching_rule_wins_and_no_match_keeps_the_class() {
        let m = ClassMap::new(&[
            rule(Some("bed-*"), Some("*/alarm"), MessageClass::Alarm),
            rule(Some("bed-*"), None, MessageClass::Vital),
            rule(None, Some("waveform/*"), MessageClass::Bulk),
        ]);
        let t = MessageClass::Telemetry;
        assert_eq!(
            m.classify("bed-1", Some("spo2/alarm"), t),
            MessageClass::Alarm
        );
        assert_eq!(m.classify("bed-1", Some("spo2"), t), MessageClass::Vital);
        assert_eq!(m.classify("bed-1", None, t), MessageClass::Vital);
        assert_eq!(
            m.classify("pump-1", Some("waveform/ecg"), t),
            MessageClass::Bulk
        );
        assert_eq!(m.classify("pump-1", Some("rate"), t), t);
        assert_eq!(
            m.classify("pump-1", None, t),
            t,
            "resource rule needs a resource"
        );
    }
}
