//! Delivery latency budgets per message class: how long a reading may take from ingest to its
//! acknowledgement by an uplink, and what is measured against it.
//!
//! ```toml
//! [selector.budgets]
//! alarm = "1s"      # the default
//! vital = "5s"
//! ```
//!
//! The budget is a promise the operator watches, not a routing input: the priority lanes and
//! the class policies are what keep alarms fast; [`DeliveryBudget`] tells whether they did.
//! For every acknowledged delivery it observes the reading's age (now minus the creation time
//! in its ULID, stamped when the payload was decoded) in `wardgate_delivery_age_seconds{class,
//! uplink}`; a delivery older than its class's budget increments
//! `wardgate_delivery_over_budget_total{class, uplink}` and is logged (at most once per
//! [`BREACH_LOG_EVERY`] per class, with the count since). `wardgate_delivery_budget_seconds
//! {class}` exports the budgets so alert rules need not repeat them.
//!
//! A reading delivered over several uplinks (`redundant`) is measured once per uplink: each copy
//! is a delivery. Readings that wait in the outbox while every uplink is down are measured when
//! they are finally delivered, so an outage shows up as breaches after it ends; the outbox's
//! oldest-age gauge shows it while it lasts.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use std::sync::atomic::AtomicU64;
use wardgate_core::MessageClass;
use wardgate_core::validate::Problems;

/// Default budget of the alarm class: 1 s from ingest to the cloud's acknowledgement.
pub const DEFAULT_ALARM_BUDGET: Duration = Duration::from_secs(1);
/// Longest budget accepted: beyond an hour a "budget" is the outbox's `max_age`'s business.
pub const MAX_BUDGET: Duration = Duration::from_secs(3600);
/// A class's breaches are logged at most this often, with the count since the last line.
pub const BREACH_LOG_EVERY: Duration = Duration::from_secs(10);

/// `[selector.budgets]`: the latency budget per message class. A class without one is measured
/// (the age histogram) but never in breach.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Budgets {
    /// Default 1 s.
    #[schemars(with = "wardgate_core::config_doc::OptionalDuration")]
    #[serde(
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub alarm: Option<Duration>,
    /// Default none.
    #[schemars(with = "wardgate_core::config_doc::OptionalDuration")]
    #[serde(
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub vital: Option<Duration>,
    /// Default none.
    #[schemars(with = "wardgate_core::config_doc::OptionalDuration")]
    #[serde(
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub telemetry: Option<Duration>,
    /// Default none.
    #[schemars(with = "wardgate_core::config_doc::OptionalDuration")]
    #[serde(
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub bulk: Option<Duration>,
    /// The monitor's security events. Default 1 s, like alarms.
    #[schemars(with = "wardgate_core::config_doc::OptionalDuration")]
    #[serde(
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub security: Option<Duration>,
}

impl Default for Budgets {
    fn default() -> Self {
        Budgets {
            alarm: Some(DEFAULT_ALARM_BUDGET),
            vital: None,
            telemetry: None,
            bulk: None,
            security: Some(DEFAULT_ALARM_BUDGET),
        }
    }
}

impl Budgets {
    /// The budget of `class`, if it has one.
    pub fn get(&self, class: MessageClass) -> Option<Duration> {
        match class {
            MessageClass::Alarm => self.alarm,
            MessageClass::Vital => self.vital,
            MessageClass::Telemetry => self.telemetry,
            MessageClass::Bulk => self.bulk,
            MessageClass::Security => self.security,
        }
    }

    /// Adds every problem to `p`; `at` is the section's path (`"selector.budgets"`).
    pub fn validate(&self, at: &str, p: &mut Problems) {
        for class in MessageClass::ALL {
            if let Some(b) = self.get(class)
                && (b < Duration::from_millis(1) || b > MAX_BUDGET)
            {
                p.push(
                    format!("{at}.{}", class.as_str()),
                    "must be between 1ms and 1h",
                );
            }
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AgeLabels {
    class: &'static str,
    uplink: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    class: &'static str,
}

fn age_histogram() -> Histogram {
    // 1 ms .. ~65 s; older deliveries (after an outage) land in +Inf.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// Breaches of one class since its last log line.
#[derive(Debug, Default)]
struct BreachLog {
    last: Option<Instant>,
    since: u64,
    worst: Duration,
}

/// Measures deliveries against [`Budgets`]; see the module doc. Cheap to share (`&self`).
#[derive(Debug)]
pub struct DeliveryBudget {
    budgets: Budgets,
    age: Family<AgeLabels, Histogram, fn() -> Histogram>,
    over: Family<AgeLabels, Counter>,
    log: Mutex<[BreachLog; MessageClass::COUNT]>,
}

impl DeliveryBudget {
    /// Creates the metrics, registers them in `registry` and exports the budgets.
    pub fn register(budgets: Budgets, registry: &mut Registry) -> Self {
        let d = DeliveryBudget {
            budgets,
            age: Family::new_with_constructor(age_histogram),
            over: Family::default(),
            log: Mutex::default(),
        };
        let gauge: Family<ClassLabels, Gauge<f64, AtomicU64>> = Family::default();
        for class in MessageClass::ALL {
            if let Some(b) = d.budgets.get(class) {
                gauge
                    .get_or_create(&ClassLabels {
                        class: class.as_str(),
                    })
                    .set(b.as_secs_f64());
            }
        }
        registry.register(
            "wardgate_delivery_age_seconds",
            "Age of a reading when an uplink acknowledged it (ingest to MQTT PUBACK / HTTP 2xx), \
             by message class and uplink",
            d.age.clone(),
        );
        registry.register(
            "wardgate_delivery_over_budget",
            "Deliveries acknowledged after their message class's latency budget, by class and \
             uplink",
            d.over.clone(),
        );
        registry.register(
            "wardgate_delivery_budget_seconds",
            "The configured latency budget per message class ([selector.budgets])",
            gauge,
        );
        d
    }

    /// Creates the over-budget counter of every budgeted class for each of `uplinks` at 0, so
    /// dashboards and alert rules find the series before the first breach.
    pub fn announce<S: AsRef<str>>(&self, uplinks: &[S]) {
        for class in MessageClass::ALL {
            if self.budgets.get(class).is_none() {
                continue;
            }
            for u in uplinks {
                let _ = self.over.get_or_create(&AgeLabels {
                    class: class.as_str(),
                    uplink: u.as_ref().to_owned(),
                });
            }
        }
    }

    /// The budgets measured against.
    pub fn budgets(&self) -> &Budgets {
        &self.budgets
    }

    /// One acknowledged delivery of a reading of `class` by `uplink`, `age` after it was
    /// ingested. `now` paces the breach log. Returns whether it was over budget.
    pub fn record(&self, class: MessageClass, uplink: &str, age: Duration, now: Instant) -> bool {
        let labels = AgeLabels {
            class: class.as_str(),
            uplink: uplink.to_owned(),
        };
        self.age.get_or_create(&labels).observe(age.as_secs_f64());
        let Some(budget) = self.budgets.get(class) else {
            return false;
        };
        if age <= budget {
            return false;
        }
        self.over.get_or_create(&labels).inc();
        let mut logs = self
            .log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let log = &mut logs[class.index()];
        log.since += 1;
        log.worst = log.worst.max(age);
        if log
            .last
            .is_none_or(|t| now.duration_since(t) >= BREACH_LOG_EVERY)
        {
            tracing::warn!(
                class = class.as_str(),
                uplink,
                budget_ms = u64::try_from(budget.as_millis()).unwrap_or(u64::MAX),
                worst_ms = u64::try_from(log.worst.as_millis()).unwrap_or(u64::MAX),
                deliveries = log.since,
                "readings were delivered later than their class's latency budget \
                 (counted in wardgate_delivery_over_budget_total)"
            );
            *log = BreachLog {
                last: Some(now),
                ..BreachLog::default()
            };
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    fn text(r: &Registry) -> String {
        let mut s = String::new();
        encode(&mut s, r).unwrap();
        s
    }

    #[test]
    fn the_alarm_budget_defaults_to_one_second_and_others_to_none() {
        let b: Budgets = toml::from_str("").unwrap();
        assert_eq!(b, Budgets::default());
        assert_eq!(b.get(MessageClass::Alarm), Some(Duration::from_secs(1)));
        assert_eq!(b.get(MessageClass::Bulk), None);
        let b: Budgets = toml::from_str("vital = \"250ms\"").unwrap();
        assert_eq!(b.get(MessageClass::Alarm), Some(Duration::from_secs(1)));
        assert_eq!(b.get(MessageClass::Vital), Some(Duration::from_millis(250)));
        let again: Budgets = toml::from_str(&toml::to_string(&b).unwrap()).unwrap();
        assert_eq!(again, b);
    }

    #[test]
    fn out_of_range_budgets_and_unknown_classes_are_refused() {
        let b: Budgets = toml::from_str("alarm = \"0s\"\nbulk = \"2h\"").unwrap();
        let mut p = Problems::new();
        b.validate("selector.budgets", &mut p);
        let paths: Vec<String> = p.into_vec().into_iter().map(|p| p.path).collect();
        assert_eq!(paths, ["selector.budgets.alarm", "selector.budgets.bulk"]);
        let err = toml::from_str::<Budgets>("alarms = \"1s\"").unwrap_err();
        assert!(err.to_string().contains("alarms"), "{err}");
    }

    #[test]
    fn deliveries_are_measured_and_only_those_over_budget_count_as_breaches() {
        let mut reg = Registry::default();
        let d = DeliveryBudget::register(Budgets::default(), &mut reg);
        let now = Instant::now();
        assert!(!d.record(MessageClass::Alarm, "cloud", Duration::from_millis(40), now));
        // Exactly the budget is within it.
        assert!(!d.record(MessageClass::Alarm, "cloud", Duration::from_secs(1), now));
        assert!(d.record(
            MessageClass::Alarm,
            "cloud",
            Duration::from_millis(1001),
            now
        ));
        assert!(d.record(MessageClass::Alarm, "site", Duration::from_secs(30), now));
        // No budget: measured, never a breach.
        assert!(!d.record(
            MessageClass::Telemetry,
            "cloud",
            Duration::from_secs(600),
            now
        ));
        let t = text(&reg);
        assert!(
            t.contains(r#"wardgate_delivery_age_seconds_count{class="alarm",uplink="cloud"} 3"#),
            "{t}"
        );
        assert!(
            t.contains(r#"wardgate_delivery_over_budget_total{class="alarm",uplink="cloud"} 1"#),
            "{t}"
        );
        assert!(
            t.contains(r#"wardgate_delivery_over_budget_total{class="alarm",uplink="site"} 1"#),
            "{t}"
        );
        assert!(!t.contains(r#"over_budget_total{class="telemetry""#), "{t}");
        assert!(
            t.contains(r#"wardgate_delivery_budget_seconds{class="alarm"} 1.0"#),
            "{t}"
        );
        assert!(!t.contains(r#"budget_seconds{class="bulk"}"#), "{t}");
    }

    #[test]
    fn breaches_are_logged_at_most_once_per_interval_per_class() {
        let mut reg = Registry::default();
        let d = DeliveryBudget::register(Budgets::default(), &mut reg);
        let t0 = Instant::now();
        let late = Duration::from_secs(2);
        d.record(MessageClass::Alarm, "a", late, t0);
        d.record(MessageClass::Alarm, "a", Duration::from_secs(5), t0);
        d.record(MessageClass::Alarm, "a", late, t0 + Duration::from_secs(1));
        {
            let logs = d.log.lock().unwrap();
            // The first was logged; two wait for the next line, the worst remembered.
            assert_eq!(logs[0].since, 2);
            assert_eq!(logs[0].worst, Duration::from_secs(5));
            assert_eq!(logs[0].last, Some(t0));
        }
        d.record(MessageClass::Alarm, "a", late, t0 + BREACH_LOG_EVERY);
        let logs = d.log.lock().unwrap();
        assert_eq!(logs[0].since, 0);
        assert_eq!(logs[0].last, Some(t0 + BREACH_LOG_EVERY));
    }
}
