//! The pure parts of the uplink: how a batch is cut from the deliveries at hand and encoded,
//! its idempotency key, what an answer means, and `Retry-After`. No I/O, no clock of its own.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use wardgate_core::Delivery;

/// Hex digits of the `Idempotency-Key` (128 bits of the SHA-256).
const KEY_HEX_DIGITS: usize = 32;

/// Takes the next batch from the front of `buffer`: at most `max_readings` deliveries whose
/// JSON array (brackets and commas included) fits in `max_bytes`. The first delivery is always
/// taken, even when it alone is larger: it could never be sent otherwise.
pub(crate) fn cut(
    buffer: &mut VecDeque<Delivery>,
    max_readings: usize,
    max_bytes: usize,
) -> Vec<Delivery> {
    let mut out: Vec<Delivery> = Vec::new();
    // "[" + "]"; each reading adds its bytes and one comma (one too many, on the safe side).
    let mut size = 2usize;
    while out.len() < max_readings.max(1) {
        let Some(next) = buffer.front() else { break };
        let grown = size.saturating_add(next.json.len()).saturating_add(1);
        if !out.is_empty() && grown > max_bytes {
            break;
        }
        size = grown;
        if let Some(d) = buffer.pop_front() {
            out.push(d);
        }
    }
    out
}

/// Bytes of the JSON array of `batch`.
pub(crate) fn body_len(batch: &[Delivery]) -> usize {
    let json: usize = batch.iter().map(|d| d.json.len()).sum();
    json + batch.len().saturating_sub(1) + 2
}

/// The JSON array of the readings, by concatenating their bytes (each already is one
/// `wardgate.reading/1` object; nothing is parsed again).
pub(crate) fn json_array(batch: &[Delivery]) -> Vec<u8> {
    let mut body = Vec::with_capacity(body_len(batch));
    body.push(b'[');
    for (i, d) in batch.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&d.json);
    }
    body.push(b']');
    body
}

/// Gzip of `body` (fast level: the gateway's CPU is worth more than a few percent of size).
pub(crate) fn gzip(body: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4 + 64),
        flate2::Compression::fast(),
    );
    enc.write_all(body)?;
    enc.finish()
}

/// `Idempotency-Key`: the first 128 bits, in hex, of the SHA-256 of the batch's reading ids
/// (16 bytes each, in order). The same readings in the same order give the same key, whatever
/// the attempt.
pub(crate) fn idempotency_key(batch: &[Delivery]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for d in batch {
        ctx.update(&d.id.to_bytes());
    }
    let digest = ctx.finish();
    let mut hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    hex.truncate(KEY_HEX_DIGITS);
    hex
}

/// What an HTTP status means for the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// 2xx: the peer has every reading of the batch.
    Delivered,
    /// 429, 503: the peer asks us to slow down; honour its `Retry-After` when it sends one.
    Throttled,
    /// 408, other 5xx: worth retrying with the normal backoff.
    Transient,
    /// 413 for a batch of more than one reading: retry with smaller batches.
    TooLarge,
    /// Other 3xx/4xx (and 1xx): retrying the same content soon cannot change the answer (a bad
    /// token, a wrong path, a schema the endpoint refuses). Kept, retried at `retry_max`.
    Refused,
}

/// The verdict on a batch of `readings` answered with `status`.
pub(crate) fn verdict(status: u16, readings: usize) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered,
        429 | 503 => Verdict::Throttled,
        408 | 500..=599 => Verdict::Transient,
        413 if readings > 1 => Verdict::TooLarge,
        _ => Verdict::Refused,
    }
}

/// The status class label of a metric (`2xx` .. `5xx`, `other`).
pub(crate) fn status_class(status: u16) -> &'static str {
    match status / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        5 => "5xx",
        _ => "other",
    }
}

/// The delay a `Retry-After` value asks for (RFC 9110 §10.2.3: delay-seconds or an HTTP-date),
/// at `now`; `None` when it is neither. A date in the past asks for no delay.
pub(crate) fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Longer than u64 seconds: as good as forever; the caller caps it.
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The wait after a 429/503: what the peer asked for (`Retry-After`), capped at `max`; the
/// `backoff` delay when it asked for nothing usable.
pub(crate) fn throttle_delay(
    asked: Option<Duration>,
    backoff: Duration,
    max: Duration,
) -> Duration {
    asked.map_or(backoff, |d| d.min(max))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use ulid::Ulid;
    use wardgate_core::MessageClass;

    use super::*;

    fn delivery(seq: u64, json: &str) -> Delivery {
        Delivery {
            seq,
            id: Ulid::from_parts(seq, u128::from(seq)),
            device: "bed-1".into(),
            class: MessageClass::Vital,
            json: Bytes::from(json.to_owned()),
            attempts: 0,
        }
    }

    #[test]
    fn the_body_is_the_readings_bytes_joined_into_one_array() {
        let batch = vec![delivery(1, r#"{"a":1}"#), delivery(2, r#"{"b":2}"#)];
        let body = json_array(&batch);
        assert_eq!(body, br#"[{"a":1},{"b":2}]"#);
        assert_eq!(body.len(), body_len(&batch));
        assert_eq!(json_array(&[]), b"[]");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v.as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn a_batch_stops_at_the_reading_or_byte_limit_but_always_takes_one() {
        let mut buf: VecDeque<Delivery> = (1..=5).map(|s| delivery(s, "0123456789")).collect();
        // Each reading costs 11 bytes, the brackets 2: 3 readings need 35 bytes.
        let b = cut(&mut buf, 10, 35);
        assert_eq!(b.iter().map(|d| d.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
        let b = cut(&mut buf, 1, 1_000);
        assert_eq!(b.iter().map(|d| d.seq).collect::<Vec<_>>(), vec![4]);
        let b = cut(&mut buf, 10, 3);
        assert_eq!(b.len(), 1, "an oversized reading goes alone");
        assert!(buf.is_empty());
        assert!(cut(&mut buf, 10, 100).is_empty());
    }

    #[test]
    fn the_idempotency_key_depends_only_on_the_reading_ids_in_order() {
        let a = vec![delivery(1, "{}"), delivery(2, "{}")];
        let mut retried = a.clone();
        for d in &mut retried {
            d.attempts = 3;
        }
        assert_eq!(idempotency_key(&a), idempotency_key(&retried));
        assert_eq!(idempotency_key(&a).len(), 32);
        let swapped = vec![a[1].clone(), a[0].clone()];
        assert_ne!(idempotency_key(&a), idempotency_key(&swapped));
        assert_ne!(idempotency_key(&a), idempotency_key(&a[..1]));
    }

    #[test]
    fn statuses_map_to_verdicts() {
        assert_eq!(verdict(200, 3), Verdict::Delivered);
        assert_eq!(verdict(204, 3), Verdict::Delivered);
        assert_eq!(verdict(429, 3), Verdict::Throttled);
        assert_eq!(verdict(503, 3), Verdict::Throttled);
        assert_eq!(verdict(500, 3), Verdict::Transient);
        assert_eq!(verdict(408, 3), Verdict::Transient);
        assert_eq!(verdict(413, 3), Verdict::TooLarge);
        assert_eq!(verdict(413, 1), Verdict::Refused);
        assert_eq!(verdict(401, 3), Verdict::Refused);
        assert_eq!(verdict(301, 3), Verdict::Refused);
        assert_eq!(status_class(404), "4xx");
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("soon", now), None);
        assert_eq!(retry_after("-5", now), None);
        assert_eq!(retry_after("", now), None);
        assert!(retry_after("99999999999999999999999", now).is_some());
    }

    #[test]
    fn a_retry_after_is_capped_at_retry_max_and_absent_means_backoff() {
        let s = Duration::from_secs;
        assert_eq!(throttle_delay(Some(s(5)), s(1), s(60)), s(5));
        assert_eq!(throttle_delay(Some(s(3600)), s(1), s(60)), s(60));
        assert_eq!(throttle_delay(None, s(2), s(60)), s(2));
    }
}
