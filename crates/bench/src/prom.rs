//! Reading the gateway's Prometheus text exposition: a loopback HTTP/1.0 GET and a sum over the
//! samples of one metric whose labels match.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::error::BenchError;
use crate::target::loopback_addr;

/// Largest exposition read, bytes.
const MAX_BODY: u64 = 16 << 20;

/// GETs `url` (`http://host:port/path`, loopback only) and returns the body.
pub fn scrape(url: &str) -> Result<String, BenchError> {
    let bad = |detail: &str| BenchError::BadTarget {
        target: url.to_owned(),
        detail: detail.to_owned(),
    };
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| bad("only http:// URLs"))?;
    let (hostport, path) = rest.split_once('/').unwrap_or((rest, ""));
    let addr = loopback_addr(hostport)?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| BenchError::io(format!("connect {url}"), e))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| BenchError::io("metrics read timeout", e))?;
    write!(s, "GET /{path} HTTP/1.0\r\nHost: {hostport}\r\n\r\n")
        .map_err(|e| BenchError::io(format!("GET {url}"), e))?;
    let mut raw = String::new();
    s.take(MAX_BODY)
        .read_to_string(&mut raw)
        .map_err(|e| BenchError::io(format!("read {url}"), e))?;
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| bad("no HTTP header"))?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return Err(bad(head.lines().next().unwrap_or("no status line")));
    }
    Ok(body.to_owned())
}

/// Sum of the samples of `name` (exactly; `name{...}` or `name value`) whose label set contains
/// every `key="value"` of `labels`. `None` when no sample matches.
pub fn sum(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut total = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (label_set, value) = match rest.chars().next() {
            Some('{') => match rest.split_once('}') {
                Some((l, v)) => (l, v),
                None => continue,
            },
            Some(' ') => ("", rest),
            _ => continue,
        };
        if !labels
            .iter()
            .all(|(k, v)| label_set.contains(&format!("{k}=\"{v}\"")))
        {
            continue;
        }
        let Some(v) = value
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        else {
            continue;
        };
        total = Some(total.unwrap_or(0.0) + v);
    }
    total
}

/// The samples of `name` with a non-zero value, as `labels value` strings (for a report).
pub fn samples(text: &str, name: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix(name))
        .filter(|rest| rest.starts_with('{'))
        .filter(|rest| {
            rest.rsplit(' ')
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .is_some_and(|v| v != 0.0)
        })
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP x\n\
        wardgate_mqtt_readings_acked_total{uplink=\"cloud\"} 41\n\
        wardgate_mqtt_readings_acked_total{uplink=\"backup\"} 9\n\
        wardgate_mqtt_readings_acked_total_extra{uplink=\"cloud\"} 1000\n\
        wardgate_store_released_total{uplink=\"cloud\"} 3\n\
        wardgate_up 1\n\
        wardgate_selector_breaker_transitions_total{uplink=\"cloud\",from=\"closed\",to=\"open\",reason=\"link_down\"} 1\n\
        wardgate_selector_breaker_transitions_total{uplink=\"backup\",from=\"closed\",to=\"open\",reason=\"x\"} 0\n";

    #[test]
    fn samples_are_summed_by_exact_name_and_matching_labels() {
        let acked = "wardgate_mqtt_readings_acked_total";
        assert_eq!(sum(TEXT, acked, &[("uplink", "cloud")]), Some(41.0));
        assert_eq!(sum(TEXT, acked, &[]), Some(50.0));
        assert_eq!(sum(TEXT, acked, &[("uplink", "nowhere")]), None);
        assert_eq!(sum(TEXT, "wardgate_up", &[]), Some(1.0));
        assert_eq!(sum(TEXT, "wardgate_missing", &[]), None);
    }

    #[test]
    fn non_zero_samples_are_listed_with_their_labels() {
        assert_eq!(
            samples(TEXT, "wardgate_selector_breaker_transitions_total"),
            ["{uplink=\"cloud\",from=\"closed\",to=\"open\",reason=\"link_down\"} 1"]
        );
    }

    #[test]
    fn only_loopback_http_is_scraped() {
        assert!(matches!(
            scrape("http://192.0.2.1:9000/metrics"),
            Err(BenchError::NotLoopback(_))
        ));
        assert!(matches!(
            scrape("https://127.0.0.1:9000/metrics"),
            Err(BenchError::BadTarget { .. })
        ));
    }
}
