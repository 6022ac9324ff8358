//! `[selector]`: health tuning, the policy per message class and the class mapping rules.
//!
//! ```toml
//! [selector]
//! cool_down = "10s"
//!
//! [[selector.classes]]
//! class = "alarm"
//! policy = "redundant"
//!
//! [[selector.classes]]
//! class = "bulk"
//! failover = ["site-mqtt", "cloud-https"]
//!
//! [[selector.rules]]
//! device = "bed-*-spo2"
//! resource = "*/alarm"
//! class = "alarm"
//!
//! [selector.budgets]
//! alarm = "1s"
//! ```

use std::collections::HashSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wardgate_core::MessageClass;
use wardgate_core::validate::Problems;

use crate::budget::Budgets;
use crate::health::HealthParams;
use crate::policy::Policy;

/// Default EWMA weight of a new latency sample: 0.3 follows a change within a handful of
/// deliveries (after 5 samples the old value weighs 0.7^5 ≈ 17 %) without chasing single
/// outliers.
pub const DEFAULT_EWMA_ALPHA: f64 = 0.3;
/// Default window: the last 50 outcomes, a few seconds of traffic at ward rates, so the ratio
/// reacts within seconds but one failure moves it by only 2 %.
pub const DEFAULT_WINDOW: usize = 50;
/// Default minimum samples for the ratio rule: 10, so the first couple of failures after
/// start-up (ratio 0/1, 1/2) cannot open the breaker on their own; the failure run does that.
pub const DEFAULT_MIN_SAMPLES: usize = 10;
/// Default minimum success ratio: 0.5. Below it, a path loses more than it delivers.
pub const DEFAULT_MIN_SUCCESS_RATIO: f64 = 0.5;
/// Default failure run: 5 in a row is a dead path, not noise (a hard outage trips within
/// 5 deliveries, which bounds how many readings wait for a fallback).
pub const DEFAULT_CONSECUTIVE_FAILURES: u32 = 5;
/// Default cool-down: 10 s, about an MQTT reconnect with backoff; short enough that a
/// recovered path is back within seconds.
pub const DEFAULT_COOL_DOWN: Duration = Duration::from_secs(10);
/// Default growth of the cool-down per failed probe: doubling.
pub const DEFAULT_COOL_DOWN_MULTIPLIER: f64 = 2.0;
/// Default cap of the cool-down: 2 min, so a long outage costs one probe per 2 min at most
/// and a recovery is noticed within 2 min.
pub const DEFAULT_MAX_COOL_DOWN: Duration = Duration::from_secs(120);
/// Default probes in HalfOpen: one; the first report decides.
pub const DEFAULT_HALF_OPEN_PROBES: u32 = 1;
/// Default link grace: an uplink not ready this long is down. Longer than a start-up connect
/// or a reconnect blip; it is most of the failover time (`bench/selector.sh`).
pub const DEFAULT_LINK_DOWN_AFTER: Duration = Duration::from_secs(2);
/// Default capacity of the recent-decision ring (and of the transition log).
pub const DEFAULT_DECISION_LOG: usize = 256;

/// The `[selector]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SelectorConfig {
    /// Weight of a new latency sample in the EWMA (`ewma = α·x + (1−α)·ewma`), in `(0, 1]`;
    /// 1 keeps only the last sample. The first sample seeds the EWMA. Default 0.3.
    pub ewma_alpha: f64,
    /// Number of most recent outcomes the success ratio is computed over. Default 50.
    pub window: usize,
    /// The ratio rule applies once the window holds this many outcomes (1..=window).
    /// Default 10.
    pub min_samples: usize,
    /// A closed breaker opens when the window's ratio is strictly below this, in `0..=1`
    /// (0 disables the ratio rule). Default 0.5.
    pub min_success_ratio: f64,
    /// A closed breaker opens after this many failures or timeouts in a row. Default 5.
    pub consecutive_failures: u32,
    /// How long an open breaker rests before probing. Default 10 s.
    #[schemars(with = "wardgate_core::config_doc::Duration")]
    #[serde(with = "humantime_serde")]
    pub cool_down: Duration,
    /// Each failed probe multiplies the cool-down by this (at least 1; 1 keeps it constant).
    /// Default 2.
    pub cool_down_multiplier: f64,
    /// Upper bound of the grown cool-down (at least `cool_down`). Default 2 min.
    #[schemars(with = "wardgate_core::config_doc::Duration")]
    #[serde(with = "humantime_serde")]
    pub max_cool_down: Duration,
    /// Deliveries let through while half-open, before one of them reports. Default 1.
    pub half_open_probes: u32,
    /// Capacity of the ring of recent decisions shown by the admin API. Default 256.
    pub decision_log: usize,
    /// An uplink whose health check has been not ready this long (disconnected, failing) is
    /// reported down and its breaker opens at once (0.1 s .. 60 s). Default 2 s.
    #[schemars(with = "wardgate_core::config_doc::Duration")]
    #[serde(with = "humantime_serde")]
    pub link_down_after: Duration,
    /// `[[selector.classes]]`: the policy per message class. A class without an entry gets
    /// its default (see [`Policy::default_for`]).
    pub classes: Vec<ClassPolicyConfig>,
    /// `[[selector.rules]]`: device/resource patterns that set a reading's class; first match
    /// wins, no match keeps the class the reading has.
    pub rules: Vec<ClassRuleConfig>,
    /// `[selector.budgets]`: the delivery latency budget per class (alarm 1 s by default),
    /// measured by [`crate::DeliveryBudget`].
    pub budgets: Budgets,
}

impl Default for SelectorConfig {
    fn default() -> Self {
        SelectorConfig {
            ewma_alpha: DEFAULT_EWMA_ALPHA,
            window: DEFAULT_WINDOW,
            min_samples: DEFAULT_MIN_SAMPLES,
            min_success_ratio: DEFAULT_MIN_SUCCESS_RATIO,
            consecutive_failures: DEFAULT_CONSECUTIVE_FAILURES,
            cool_down: DEFAULT_COOL_DOWN,
            cool_down_multiplier: DEFAULT_COOL_DOWN_MULTIPLIER,
            max_cool_down: DEFAULT_MAX_COOL_DOWN,
            half_open_probes: DEFAULT_HALF_OPEN_PROBES,
            decision_log: DEFAULT_DECISION_LOG,
            link_down_after: DEFAULT_LINK_DOWN_AFTER,
            classes: Vec::new(),
            rules: Vec::new(),
            budgets: Budgets::default(),
        }
    }
}

/// The policy names `policy = "..."` accepts (the ones that need no uplink names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyName {
    /// Every healthy uplink.
    Redundant,
    /// The healthy uplink with the lowest latency EWMA.
    LowestLatency,
    /// The healthy uplink with the highest windowed success ratio.
    MostReliable,
}

/// One `[[selector.classes]]` entry: exactly one of `policy`, `failover`, `pinned`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClassPolicyConfig {
    /// The message class this entry is for.
    pub class: MessageClass,
    /// `"redundant"`, `"lowest-latency"` or `"most-reliable"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyName>,
    /// Uplink names in order of preference: the first healthy one is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<Vec<String>>,
    /// One uplink name, used even when its breaker is open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned: Option<String>,
}

impl ClassPolicyConfig {
    /// The policy this entry sets, `None` unless exactly one of the three keys is given.
    pub fn to_policy(&self) -> Option<Policy> {
        match (&self.policy, &self.failover, &self.pinned) {
            (Some(PolicyName::Redundant), None, None) => Some(Policy::Redundant),
            (Some(PolicyName::LowestLatency), None, None) => Some(Policy::LowestLatency),
            (Some(PolicyName::MostReliable), None, None) => Some(Policy::MostReliable),
            (None, Some(list), None) => Some(Policy::Failover(list.clone())),
            (None, None, Some(name)) => Some(Policy::Pinned(name.clone())),
            _ => None,
        }
    }
}

/// One `[[selector.rules]]` entry. Patterns match the whole string; `*` matches any run of
/// characters (including none and `/`). A rule needs `device`, `resource` or both (both must
/// match); `device = "*"` is the explicit catch-all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClassRuleConfig {
    /// Device id pattern, e.g. `"bed-*-spo2"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Resource pattern (CoAP path, SenML name, MQTT topic), e.g. `"*/alarm"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// The class a matching reading gets.
    pub class: MessageClass,
}

impl SelectorConfig {
    /// The health/breaker tuning as used by [`crate::UplinkHealth`].
    pub fn health(&self) -> HealthParams {
        HealthParams {
            ewma_alpha: self.ewma_alpha,
            window: self.window,
            min_samples: self.min_samples,
            min_success_ratio: self.min_success_ratio,
            consecutive_failures: self.consecutive_failures,
            cool_down: self.cool_down,
            cool_down_multiplier: self.cool_down_multiplier,
            max_cool_down: self.max_cool_down,
            half_open_probes: self.half_open_probes,
        }
    }

    /// Adds every problem in this section to `p`; `at` is the section's path (`"selector"`),
    /// `uplinks` the configured uplink names (in configuration order).
    pub fn validate(&self, at: &str, uplinks: &[&str], p: &mut Problems) {
        if !(self.ewma_alpha > 0.0 && self.ewma_alpha <= 1.0) {
            p.push(format!("{at}.ewma_alpha"), "must be in (0, 1]");
        }
        if self.window == 0 {
            p.push(format!("{at}.window"), "must be at least 1");
        }
        if self.link_down_after < Duration::from_millis(100)
            || self.link_down_after > Duration::from_secs(60)
        {
            p.push(
                format!("{at}.link_down_after"),
                "must be between 100ms and 60s",
            );
        }
        if self.min_samples == 0 || (self.window > 0 && self.min_samples > self.window) {
            p.push(
                format!("{at}.min_samples"),
                format!(
                    "must be between 1 and window ({}); more could never be reached",
                    self.window
                ),
            );
        }
        if !(0.0..=1.0).contains(&self.min_success_ratio) {
            p.push(format!("{at}.min_success_ratio"), "must be in 0..=1");
        }
        if self.consecutive_failures == 0 {
            p.push(format!("{at}.consecutive_failures"), "must be at least 1");
        }
        if self.cool_down.is_zero() {
            p.push(format!("{at}.cool_down"), "must be longer than 0");
        }
        if !(self.cool_down_multiplier.is_finite() && self.cool_down_multiplier >= 1.0) {
            p.push(
                format!("{at}.cool_down_multiplier"),
                "must be a finite number of at least 1",
            );
        }
        if self.max_cool_down < self.cool_down {
            p.push(format!("{at}.max_cool_down"), "must be at least cool_down");
        }
        if self.half_open_probes == 0 {
            p.push(format!("{at}.half_open_probes"), "must be at least 1");
        }
        if self.decision_log == 0 {
            p.push(format!("{at}.decision_log"), "must be at least 1");
        }
        self.budgets.validate(&format!("{at}.budgets"), p);

        let mut names = HashSet::new();
        for (i, name) in uplinks.iter().enumerate() {
            if !names.insert(*name) {
                p.push(
                    format!("uplinks[{i}].name"),
                    format!("uplink name {name:?} is used twice; the selector needs unique names"),
                );
            }
        }
        let known = |n: &str| names.contains(n);
        let mut seen = HashSet::new();
        for (i, c) in self.classes.iter().enumerate() {
            let at = format!("{at}.classes[{i}]");
            if !seen.insert(c.class) {
                p.push(
                    format!("{at}.class"),
                    format!("class {} has more than one entry", c.class),
                );
            }
            let given = usize::from(c.policy.is_some())
                + usize::from(c.failover.is_some())
                + usize::from(c.pinned.is_some());
            if given != 1 {
                p.push(at.clone(), "set exactly one of policy, failover or pinned");
            }
            if let Some(list) = &c.failover {
                if list.is_empty() {
                    p.push(format!("{at}.failover"), "must name at least one uplink");
                }
                let mut once = HashSet::new();
                for (j, n) in list.iter().enumerate() {
                    if !known(n) {
                        p.push(format!("{at}.failover[{j}]"), unknown(n, uplinks));
                    } else if !once.insert(n.as_str()) {
                        p.push(
                            format!("{at}.failover[{j}]"),
                            format!("uplink {n:?} is listed twice"),
                        );
                    }
                }
            }
            if let Some(n) = &c.pinned
                && !known(n)
            {
                p.push(format!("{at}.pinned"), unknown(n, uplinks));
            }
        }
        for (i, r) in self.rules.iter().enumerate() {
            let at = format!("{at}.rules[{i}]");
            if r.device.is_none() && r.resource.is_none() {
                p.push(
                    at.clone(),
                    "set device, resource or both (device = \"*\" matches every reading)",
                );
            }
            for (key, pat) in [("device", &r.device), ("resource", &r.resource)] {
                if pat.as_deref() == Some("") {
                    p.push(
                        format!("{at}.{key}"),
                        "must not be empty (use \"*\" for any)",
                    );
                }
            }
        }
    }
}

fn unknown(name: &str, uplinks: &[&str]) -> String {
    format!(
        "no uplink is named {name:?} (configured: {})",
        uplinks.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
ewma_alpha = 0.25
window = 20
min_samples = 5
min_success_ratio = 0.6
consecutive_failures = 3
cool_down = "5s"
cool_down_multiplier = 1.5
max_cool_down = "1m"
half_open_probes = 2
decision_log = 64

[[classes]]
class = "alarm"
policy = "redundant"

[[classes]]
class = "vital"
policy = "lowest-latency"

[[classes]]
class = "telemetry"
pinned = "site"

[[classes]]
class = "bulk"
failover = ["cloud", "site"]

[[rules]]
device = "bed-*-spo2"
resource = "*/alarm"
class = "alarm"

[[rules]]
resource = "waveform/*"
class = "bulk"

[budgets]
alarm = "500ms"
vital = "3s"
"#;

    #[test]
    fn a_full_example_parses_validates_and_round_trips() {
        let cfg: SelectorConfig = toml::from_str(FULL).expect("parses");
        assert_eq!(cfg.cool_down, Duration::from_secs(5));
        assert_eq!(cfg.max_cool_down, Duration::from_secs(60));
        assert_eq!(
            cfg.classes[3].to_policy(),
            Some(Policy::Failover(vec!["cloud".into(), "site".into()]))
        );
        assert_eq!(cfg.classes[1].to_policy(), Some(Policy::LowestLatency));
        assert_eq!(cfg.rules[1].device, None);
        assert_eq!(cfg.budgets.alarm, Some(Duration::from_millis(500)));
        assert_eq!(cfg.budgets.vital, Some(Duration::from_secs(3)));
        let mut p = Problems::new();
        cfg.validate("selector", &["site", "cloud"], &mut p);
        assert!(p.is_empty(), "{:?}", p.into_vec());

        let text = toml::to_string(&cfg).expect("serializes");
        let again: SelectorConfig = toml::from_str(&text).expect("reparses");
        assert_eq!(again, cfg);
    }

    #[test]
    fn an_empty_section_takes_the_documented_defaults() {
        let cfg: SelectorConfig = toml::from_str("").expect("parses");
        assert_eq!(cfg, SelectorConfig::default());
        assert_eq!(cfg.window, 50);
        assert_eq!(cfg.consecutive_failures, 5);
        assert_eq!(cfg.min_samples, 10);
        assert_eq!(cfg.min_success_ratio, 0.5);
        assert_eq!(cfg.cool_down, Duration::from_secs(10));
        assert_eq!(cfg.decision_log, 256);
        let mut p = Problems::new();
        cfg.validate("selector", &["a"], &mut p);
        assert!(p.is_empty());
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = toml::from_str::<SelectorConfig>("windw = 3").expect_err("typo refused");
        assert!(err.to_string().contains("windw"), "{err}");
        let err = toml::from_str::<SelectorConfig>(
            "[[classes]]\nclass = \"alarm\"\npolicy = \"fastest\"\n",
        )
        .expect_err("unknown policy refused");
        assert!(err.to_string().contains("fastest"), "{err}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = r#"
ewma_alpha = 0.0
window = 0
min_samples = 0
min_success_ratio = 1.5
consecutive_failures = 0
cool_down = "0s"
cool_down_multiplier = 0.5
max_cool_down = "0s"
half_open_probes = 0
decision_log = 0

[[classes]]
class = "alarm"
failover = []

[[classes]]
class = "alarm"
policy = "redundant"
pinned = "a"

[[classes]]
class = "vital"
pinned = "nowhere"

[[classes]]
class = "bulk"
failover = ["a", "ghost", "a"]

[[classes]]
class = "telemetry"

[[rules]]
class = "alarm"

[[rules]]
device = ""
class = "alarm"
"#;
        let cfg: SelectorConfig = toml::from_str(text).expect("parses");
        let mut p = Problems::new();
        cfg.validate("selector", &["a", "b", "a"], &mut p);
        let paths: Vec<String> = p.into_vec().into_iter().map(|p| p.path).collect();
        assert_eq!(
            paths,
            vec![
                "selector.ewma_alpha",
                "selector.window",
                "selector.min_samples",
                "selector.min_success_ratio",
                "selector.consecutive_failures",
                "selector.cool_down",
                "selector.cool_down_multiplier",
                "selector.half_open_probes",
                "selector.decision_log",
                "uplinks[2].name",
                "selector.classes[0].failover",
                "selector.classes[1].class",
                "selector.classes[1]",
                "selector.classes[2].pinned",
                "selector.classes[3].failover[1]",
                "selector.classes[3].failover[2]",
                "selector.classes[4]",
                "selector.rules[0]",
                "selector.rules[1].device",
            ]
        );
    }

    #[test]
    fn a_nan_ratio_or_alpha_is_a_problem() {
        let cfg = SelectorConfig {
            ewma_alpha: f64::NAN,
            min_success_ratio: f64::NAN,
            ..SelectorConfig::default()
        };
        let mut p = Problems::new();
        cfg.validate("selector", &["a"], &mut p);
        assert_eq!(p.into_vec().len(), 2);
    }

    #[test]
    fn min_samples_above_the_window_is_a_problem() {
        let cfg = SelectorConfig {
            window: 5,
            min_samples: 6,
            ..SelectorConfig::default()
        };
        let mut p = Problems::new();
        cfg.validate("selector", &["a"], &mut p);
        let v = p.into_vec();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].path, "selector.min_samples");
    }
}
