//! Notification attributes and the client's side of observations (TS Core §5.1.2, §6.4):
//! which value changes are worth a notification, and when it may (`pmin`) or must (`pmax`) go.
//! Pure: values and instants in, decisions out.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;
use wardgate_coap::codec::Token;

use crate::format::Format;
use crate::link::Attr;
use crate::node::{Path, Value};

/// The notification attributes written on one path (object, instance or resource).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Attrs {
    /// Minimum period, seconds.
    pub pmin: Option<u32>,
    /// Maximum period, seconds.
    pub pmax: Option<u32>,
    /// Greater than.
    pub gt: Option<f64>,
    /// Less than.
    pub lt: Option<f64>,
    /// Step.
    pub st: Option<f64>,
    /// Minimum evaluation period, seconds.
    pub epmin: Option<u32>,
    /// Maximum evaluation period, seconds.
    pub epmax: Option<u32>,
}

impl Attrs {
    /// Applies Write-Attributes query items (`pmin=5`, `gt=37.5`, a bare `st` removes it).
    /// Unknown names and bad values refuse the whole write.
    pub(crate) fn apply(&mut self, items: &[String]) -> Result<(), String> {
        let mut next = self.clone();
        for item in items {
            let (k, v) = match item.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (item.as_str(), None),
            };
            let int = |v: Option<&str>| -> Result<Option<u32>, String> {
                v.map(|v| {
                    v.parse()
                        .map_err(|_| format!("{k}={v} is not a number of seconds"))
                })
                .transpose()
            };
            let num = |v: Option<&str>| -> Result<Option<f64>, String> {
                v.map(|v| {
                    v.parse::<f64>()
                        .ok()
                        .filter(|f| f.is_finite())
                        .ok_or_else(|| format!("{k}={v} is not a number"))
                })
                .transpose()
            };
            match k {
                "pmin" => next.pmin = int(v)?,
                "pmax" => next.pmax = int(v)?,
                "epmin" => next.epmin = int(v)?,
                "epmax" => next.epmax = int(v)?,
                "gt" => next.gt = num(v)?,
                "lt" => next.lt = num(v)?,
                "st" => next.st = num(v)?,
                _ => return Err(format!("unknown attribute {k:?}")),
            }
        }
        *self = next;
        Ok(())
    }

    /// `more` (written on a deeper path) over `self`.
    pub(crate) fn then(&self, more: &Attrs) -> Attrs {
        Attrs {
            pmin: more.pmin.or(self.pmin),
            pmax: more.pmax.or(self.pmax),
            gt: more.gt.or(self.gt),
            lt: more.lt.or(self.lt),
            st: more.st.or(self.st),
            epmin: more.epmin.or(self.epmin),
            epmax: more.epmax.or(self.epmax),
        }
    }

    /// As link-format attributes (Discover).
    pub(crate) fn links(&self) -> Vec<Attr> {
        let mut out = Vec::new();
        let mut put = |name: &str, v: Option<String>| {
            if let Some(v) = v {
                out.push(Attr {
                    name: name.into(),
                    value: Some(v),
                });
            }
        };
        put("pmin", self.pmin.map(|v| v.to_string()));
        put("pmax", self.pmax.map(|v| v.to_string()));
        put("gt", self.gt.map(|v| v.to_string()));
        put("lt", self.lt.map(|v| v.to_string()));
        put("st", self.st.map(|v| v.to_string()));
        put("epmin", self.epmin.map(|v| v.to_string()));
        put("epmax", self.epmax.map(|v| v.to_string()));
        out
    }

    /// Whether a change from `last` to `new` is worth a notification: any change without
    /// `gt`/`lt`/`st`; with them, crossing `gt` or `lt` (either way) or moving at least `st`.
    pub(crate) fn worth(&self, last: Option<f64>, new: Option<f64>) -> bool {
        let (Some(last), Some(new)) = (last, new) else {
            return true;
        };
        if self.gt.is_none() && self.lt.is_none() && self.st.is_none() {
            return last != new;
        }
        let crosses = |t: f64| (last > t) != (new > t);
        self.gt.is_some_and(crosses)
            || self.lt.is_some_and(|t| (last < t) != (new < t))
            || self.st.is_some_and(|s| (new - last).abs() >= s)
    }
}

/// The effective attributes of `path`: object, then instance, then resource level.
pub(crate) fn effective(written: &BTreeMap<Path, Attrs>, path: &Path) -> Attrs {
    let mut a = Attrs::default();
    for depth in 1..=path.len().min(3) {
        if let Ok(p) = Path::new(&path.ids()[..depth]) {
            if let Some(w) = written.get(&p) {
                a = a.then(w);
            }
        }
    }
    a
}

/// A number to compare thresholds against.
pub(crate) fn numeric(v: &Value) -> Option<f64> {
    #[allow(clippy::cast_precision_loss)]
    match v {
        Value::Integer(i) | Value::Time(i) => Some(*i as f64),
        Value::Unsigned(u) => Some(*u as f64),
        Value::Float(f) => Some(*f),
        _ => None,
    }
}

/// One observation the server holds on this client.
#[derive(Debug, Clone)]
pub(crate) struct Observation {
    pub(crate) token: Token,
    /// Where notifications go (the address the Observe came from).
    pub(crate) peer: SocketAddr,
    /// One path, or several (Observe-Composite).
    pub(crate) paths: Vec<Path>,
    pub(crate) composite: bool,
    pub(crate) format: Format,
    pub(crate) last_sent: Instant,
    /// The value last notified, when the observation is of one numeric resource.
    pub(crate) last_value: Option<f64>,
    /// A change worth notifying waits for `pmin`.
    pub(crate) pending: bool,
}

impl Observation {
    /// Whether a change at `path` concerns it.
    pub(crate) fn covers(&self, path: &Path) -> bool {
        self.paths
            .iter()
            .any(|p| path.starts_with(p) || p.starts_with(path))
    }

    /// Whether a notification is due at `now`: a pending change once `pmin` passed, or
    /// `pmax` passed without one.
    pub(crate) fn due(&self, attrs: &Attrs, now: Instant) -> bool {
        let since = now.saturating_duration_since(self.last_sent);
        let pmin = Duration::from_secs(u64::from(attrs.pmin.unwrap_or(0)));
        if since < pmin {
            return false;
        }
        self.pending
            || attrs
                .pmax
                .is_some_and(|p| p > 0 && since >= Duration::from_secs(u64::from(p)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_and_steps_decide_which_changes_notify() {
        let none = Attrs::default();
        assert!(none.worth(Some(1.0), Some(1.5)));
        assert!(!none.worth(Some(1.0), Some(1.0)));
        let gt = Attrs {
            gt: Some(38.0),
            ..Attrs::default()
        };
        assert!(!gt.worth(Some(36.0), Some(37.5)));
        assert!(gt.worth(Some(37.5), Some(38.5)), "crossing up");
        assert!(gt.worth(Some(38.5), Some(37.0)), "crossing down");
        let st = Attrs {
            st: Some(0.5),
            ..Attrs::default()
        };
        assert!(!st.worth(Some(36.0), Some(36.4)));
        assert!(st.worth(Some(36.0), Some(36.5)));
        assert!(
            st.worth(None, Some(1.0)),
            "non-numeric values always notify"
        );
    }

    #[test]
    fn pmin_holds_a_change_back_and_pmax_forces_a_notification() {
        let t0 = Instant::now();
        let mut o = Observation {
            token: Token::EMPTY,
            peer: "127.0.0.1:1".parse().unwrap(),
            paths: vec![Path::resource(3303, 0, 5700)],
            composite: false,
            format: Format::SenmlCbor,
            last_sent: t0,
            last_value: Some(1.0),
            pending: true,
        };
        let a = Attrs {
            pmin: Some(2),
            pmax: Some(5),
            ..Attrs::default()
        };
        assert!(!o.due(&a, t0 + Duration::from_secs(1)));
        assert!(o.due(&a, t0 + Duration::from_secs(2)));
        o.pending = false;
        assert!(!o.due(&a, t0 + Duration::from_secs(4)));
        assert!(o.due(&a, t0 + Duration::from_secs(5)));
    }

    #[test]
    fn attributes_apply_merge_and_refuse_bad_items() {
        let mut a = Attrs::default();
        a.apply(&["pmin=1".into(), "gt=37.5".into()]).unwrap();
        a.apply(&["gt".into()]).unwrap();
        assert_eq!((a.pmin, a.gt), (Some(1), None));
        assert!(a.apply(&["bogus=1".into()]).is_err());
        assert!(a.apply(&["pmax=x".into()]).is_err());
        let mut w = BTreeMap::new();
        w.insert(
            Path::object(3303),
            Attrs {
                pmax: Some(60),
                pmin: Some(5),
                ..Attrs::default()
            },
        );
        w.insert(
            Path::resource(3303, 0, 5700),
            Attrs {
                pmin: Some(1),
                ..Attrs::default()
            },
        );
        let e = effective(&w, &Path::resource(3303, 0, 5700));
        assert_eq!((e.pmin, e.pmax), (Some(1), Some(60)));
    }
}
