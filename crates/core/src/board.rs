//! The status board: what the gateway's status page shows of its traffic, kept in memory and
//! bounded.
//!
//! It is fed from three places, each cheap and never blocking:
//! - the store, after every commit ([`CommitObserver`]): every durable reading updates its
//!   device's row (protocol, last class, last seen, count, rate) and the per-second series, and
//!   goes to the live feed when someone listens;
//! - the outbox's outcome observer ([`StatusBoard::delivered`]): every acknowledged delivery's
//!   age (ingest to acknowledgement) goes into the series;
//! - the audit trail ([`StatusBoard::audit_tee`]): authentication failures, ACL denials, closed
//!   sessions, admin actions and anomalies are kept as the recent security events.
//!
//! Bounds: at most [`MAX_DEVICES`] device rows (the least recently seen eighth is evicted when
//! full), [`SERIES_SECONDS`] one-second buckets, [`RECENT_EVENTS`] events, and a live feed of
//! [`FEED_CAPACITY`] readings per subscriber (a subscriber that falls further behind is told it
//! lagged; the HTTP side then drops it). Nothing here holds a reading's values except the feed's
//! ring, which only readers that proved a token see.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::broadcast;

use crate::audit::{AuditEvent, AuditKind, AuditSink};
use crate::outcome::CommitObserver;
use crate::reading::{Encoded, MessageClass, Protocol};

/// Device rows kept at most.
pub const MAX_DEVICES: usize = 4096;
/// Seconds of per-second series kept.
pub const SERIES_SECONDS: usize = 300;
/// Security events kept.
pub const RECENT_EVENTS: usize = 100;
/// Readings a live-feed subscriber may fall behind before it is told it lagged.
pub const FEED_CAPACITY: usize = 1024;

/// One durable reading on the live feed.
#[derive(Debug, Clone)]
pub struct FeedItem {
    /// Its device.
    pub device: Arc<str>,
    /// Its class.
    pub class: MessageClass,
    /// Its `wardgate.reading/1` JSON, as stored.
    pub json: Bytes,
}

/// The status board. Cheap to clone; every clone is the same board.
#[derive(Debug, Clone)]
pub struct StatusBoard {
    inner: Arc<Mutex<Inner>>,
    feed: broadcast::Sender<FeedItem>,
    gateway: Arc<str>,
    started: SystemTime,
}

#[derive(Debug, Default)]
struct Inner {
    devices: HashMap<String, DeviceSeen>,
    series: Vec<Bucket>,
    events: VecDeque<SecurityEvent>,
    event_counts: BTreeMap<&'static str, u64>,
    readings_total: u64,
    delivered_total: u64,
}

#[derive(Debug, Clone, Copy)]
struct DeviceSeen {
    protocol: Protocol,
    class: MessageClass,
    first_ms: i64,
    last_ms: i64,
    readings: u64,
    alarms: u64,
    /// EWMA of the time between its readings, in ms (0 until the second reading).
    interval_ms: f64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    second: i64,
    readings: u32,
    alarms: u32,
    delivered: u32,
    latency_sum_ms: u64,
    latency_max_ms: u64,
}

/// One device as the status page lists it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DeviceRow {
    /// Device id.
    pub device: String,
    /// The protocol of its last reading.
    pub protocol: &'static str,
    /// The class of its last reading.
    pub class: &'static str,
    /// First reading seen since start (ms since the epoch).
    pub first_seen_ms: i64,
    /// Last reading (ms since the epoch).
    pub last_seen_ms: i64,
    /// Readings since start.
    pub readings: u64,
    /// Alarm-class readings since start.
    pub alarms: u64,
    /// Readings per minute: from the smoothed interval between its readings, or from the time
    /// since its last one when that is longer (a device that went quiet drifts towards 0);
    /// `null` until its second reading.
    pub per_minute: Option<f64>,
}

/// One second of traffic.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SeriesPoint {
    /// The second (since the epoch).
    pub t: i64,
    /// Readings made durable.
    pub readings: u32,
    /// Of which alarm-class.
    pub alarms: u32,
    /// Deliveries acknowledged by an uplink.
    pub delivered: u32,
    /// Mean age at acknowledgement (ingest to ack), ms; `null` when nothing was delivered.
    pub latency_mean_ms: Option<f64>,
    /// Largest age at acknowledgement, ms.
    pub latency_max_ms: Option<u64>,
}

/// A security-relevant audit event, as the status page lists it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SecurityEvent {
    /// When (ms since the epoch).
    pub at_ms: i64,
    /// `auth_failure`, `acl_denied`, `session_revoked`, `admin_action` or `anomaly`.
    pub kind: &'static str,
    /// Why (a fixed label).
    pub reason: &'static str,
    /// Who, as the audit trail names them (an identity, never a key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// From where.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<SocketAddr>,
    /// What it concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

/// Everything on the board at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct BoardSnapshot {
    /// The gateway's id.
    pub gateway: String,
    /// wardgate's version.
    pub version: &'static str,
    /// Process start (ms since the epoch).
    pub started_ms: i64,
    /// Now (ms since the epoch).
    pub now_ms: i64,
    /// Readings made durable since start.
    pub readings_total: u64,
    /// Deliveries acknowledged since start.
    pub delivered_total: u64,
    /// Devices, most recently seen first.
    pub devices: Vec<DeviceRow>,
    /// The last [`SERIES_SECONDS`] seconds, oldest first, one point a second (the current,
    /// unfinished second excluded).
    pub series: Vec<SeriesPoint>,
    /// Recent security events, newest first.
    pub events: Vec<SecurityEvent>,
    /// Security events since start, by kind.
    pub event_counts: BTreeMap<&'static str, u64>,
}

fn ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn lock(m: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl StatusBoard {
    /// An empty board for gateway `gateway`.
    pub fn new(gateway: impl Into<Arc<str>>) -> Self {
        let (feed, _) = broadcast::channel(FEED_CAPACITY);
        StatusBoard {
            inner: Arc::new(Mutex::new(Inner {
                series: vec![Bucket::default(); SERIES_SECONDS],
                ..Inner::default()
            })),
            feed,
            gateway: gateway.into(),
            started: SystemTime::now(),
        }
    }

    /// The gateway's id.
    pub fn gateway(&self) -> &str {
        &self.gateway
    }

    /// Readings committed at `now` (what [`CommitObserver::committed`] does, with the clock
    /// given).
    pub fn committed_at(&self, readings: &[Encoded], now: SystemTime) {
        let now_ms = ms(now);
        let second = now_ms.div_euclid(1000);
        let listening = self.feed.receiver_count() > 0;
        {
            let mut g = lock(&self.inner);
            let inner = &mut *g;
            let alarms = readings
                .iter()
                .filter(|e| e.class == MessageClass::Alarm)
                .count();
            let b = inner.bucket(second);
            b.readings = b.readings.saturating_add(saturating_u32(readings.len()));
            b.alarms = b.alarms.saturating_add(saturating_u32(alarms));
            inner.readings_total += readings.len() as u64;
            for e in readings {
                inner.seen(e, now_ms);
            }
        }
        if listening {
            for e in readings {
                // A send fails only when every receiver went away meanwhile: nothing to do.
                let _ = self.feed.send(FeedItem {
                    device: Arc::from(e.device.as_str()),
                    class: e.class,
                    json: e.json.clone(),
                });
            }
        }
    }

    /// A delivery acknowledged at `now`, `age` after its reading was made.
    pub fn delivered_at(&self, age: Duration, now: SystemTime) {
        let second = ms(now).div_euclid(1000);
        let age_ms = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
        let mut g = lock(&self.inner);
        g.delivered_total += 1;
        let b = g.bucket(second);
        b.delivered = b.delivered.saturating_add(1);
        b.latency_sum_ms = b.latency_sum_ms.saturating_add(age_ms);
        b.latency_max_ms = b.latency_max_ms.max(age_ms);
    }

    /// A delivery acknowledged now, `age` after its reading was made.
    pub fn delivered(&self, age: Duration) {
        self.delivered_at(age, SystemTime::now());
    }

    /// Keeps `ev` when it is security-relevant (see the module doc).
    pub fn audit_event(&self, ev: &AuditEvent, now: SystemTime) {
        let kind = match ev.kind {
            AuditKind::AuthFailure
            | AuditKind::AclDenied
            | AuditKind::SessionRevoked
            | AuditKind::AdminAction
            | AuditKind::Anomaly => ev.kind.as_str(),
            AuditKind::AuthSuccess | AuditKind::RegistryChange | AuditKind::ConfigReload => {
                return;
            }
        };
        let mut g = lock(&self.inner);
        *g.event_counts.entry(kind).or_default() += 1;
        if g.events.len() == RECENT_EVENTS {
            g.events.pop_back();
        }
        g.events.push_front(SecurityEvent {
            at_ms: ms(now),
            kind,
            reason: ev.reason,
            actor: ev.actor.clone(),
            peer: ev.peer,
            subject: ev.subject.clone(),
        });
    }

    /// `sink`, with every event also shown to this board.
    pub fn audit_tee(&self, sink: Arc<dyn AuditSink>) -> Arc<dyn AuditSink> {
        Arc::new(AuditTee {
            sink,
            board: self.clone(),
        })
    }

    /// A live feed of the readings made durable from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<FeedItem> {
        self.feed.subscribe()
    }

    /// Live-feed subscribers now.
    pub fn subscribers(&self) -> usize {
        self.feed.receiver_count()
    }

    /// The board at `now`.
    pub fn snapshot_at(&self, now: SystemTime) -> BoardSnapshot {
        let now_ms = ms(now);
        let current = now_ms.div_euclid(1000);
        let g = lock(&self.inner);
        let mut devices: Vec<DeviceRow> =
            g.devices.iter().map(|(id, d)| d.row(id, now_ms)).collect();
        devices.sort_by(|a, b| {
            b.last_seen_ms
                .cmp(&a.last_seen_ms)
                .then_with(|| a.device.cmp(&b.device))
        });
        let n = SERIES_SECONDS as i64;
        let series = (current - n..current)
            .map(|t| {
                let b = g.series[slot(t)];
                let b = if b.second == t { b } else { Bucket::default() };
                SeriesPoint {
                    t,
                    readings: b.readings,
                    alarms: b.alarms,
                    delivered: b.delivered,
                    latency_mean_ms: (b.delivered > 0)
                        .then(|| b.latency_sum_ms as f64 / f64::from(b.delivered)),
                    latency_max_ms: (b.delivered > 0).then_some(b.latency_max_ms),
                }
            })
            .collect();
        BoardSnapshot {
            gateway: self.gateway.to_string(),
            version: env!("CARGO_PKG_VERSION"),
            started_ms: ms(self.started),
            now_ms,
            readings_total: g.readings_total,
            delivered_total: g.delivered_total,
            devices,
            series,
            events: g.events.iter().cloned().collect(),
            event_counts: g.event_counts.clone(),
        }
    }

    /// The board now.
    pub fn snapshot(&self) -> BoardSnapshot {
        self.snapshot_at(SystemTime::now())
    }
}

impl CommitObserver for StatusBoard {
    fn committed(&self, readings: &[Encoded]) {
        self.committed_at(readings, SystemTime::now());
    }
}

fn saturating_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn slot(second: i64) -> usize {
    // rem_euclid of a positive modulus is in 0..SERIES_SECONDS.
    usize::try_from(second.rem_euclid(SERIES_SECONDS as i64)).unwrap_or(0)
}

impl Inner {
    fn bucket(&mut self, second: i64) -> &mut Bucket {
        let b = &mut self.series[slot(second)];
        if b.second != second {
            *b = Bucket {
                second,
                ..Bucket::default()
            };
        }
        b
    }

    fn seen(&mut self, e: &Encoded, now_ms: i64) {
        if let Some(d) = self.devices.get_mut(&e.device) {
            let gap = (now_ms - d.last_ms).max(0) as f64;
            d.interval_ms = if d.readings == 1 {
                gap
            } else {
                0.8 * d.interval_ms + 0.2 * gap
            };
            d.protocol = e.protocol;
            d.class = e.class;
            d.last_ms = now_ms;
            d.readings += 1;
            d.alarms += u64::from(e.class == MessageClass::Alarm);
            return;
        }
        if self.devices.len() >= MAX_DEVICES {
            self.evict();
        }
        self.devices.insert(
            e.device.clone(),
            DeviceSeen {
                protocol: e.protocol,
                class: e.class,
                first_ms: now_ms,
                last_ms: now_ms,
                readings: 1,
                alarms: u64::from(e.class == MessageClass::Alarm),
                interval_ms: 0.0,
            },
        );
    }

    /// Drops the least recently seen eighth of the rows, exactly that many even when many were
    /// last seen in the same millisecond (amortized: one selection pass per `MAX_DEVICES / 8`
    /// new devices).
    fn evict(&mut self) {
        let mut by_age: Vec<(i64, &String)> =
            self.devices.iter().map(|(id, d)| (d.last_ms, id)).collect();
        let k = (MAX_DEVICES / 8).max(1).min(by_age.len());
        if k < by_age.len() {
            by_age.select_nth_unstable(k);
        }
        let gone: Vec<String> = by_age[..k].iter().map(|(_, id)| (*id).clone()).collect();
        for id in gone {
            self.devices.remove(&id);
        }
    }
}

impl DeviceSeen {
    fn row(&self, id: &str, now_ms: i64) -> DeviceRow {
        let quiet = (now_ms - self.last_ms).max(0) as f64;
        let interval = self.interval_ms.max(quiet);
        let per_minute = (self.readings >= 2).then(|| {
            if interval > 0.0 {
                (60_000.0 / interval * 10.0).round() / 10.0
            } else {
                0.0
            }
        });
        DeviceRow {
            device: id.to_owned(),
            protocol: self.protocol.as_str(),
            class: self.class.as_str(),
            first_seen_ms: self.first_ms,
            last_seen_ms: self.last_ms,
            readings: self.readings,
            alarms: self.alarms,
            per_minute,
        }
    }
}

#[derive(Debug)]
struct AuditTee {
    sink: Arc<dyn AuditSink>,
    board: StatusBoard,
}

impl AuditSink for AuditTee {
    fn record(&self, event: AuditEvent) {
        self.board.audit_event(&event, SystemTime::now());
        self.sink.record(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::MemoryAudit;

    fn enc(device: &str, class: MessageClass) -> Encoded {
        Encoded {
            id: ulid::Ulid::new(),
            device: device.into(),
            class,
            protocol: Protocol::Coap,
            json: Bytes::from_static(b"{}"),
            held: false,
        }
    }

    fn at(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(ms)
    }

    #[test]
    fn devices_series_and_rates() {
        let b = StatusBoard::new("gw-1");
        let t0 = 1_700_000_000_000;
        for i in 0..10 {
            b.committed_at(&[enc("bed-1", MessageClass::Vital)], at(t0 + i * 2_000));
        }
        b.committed_at(&[enc("bed-2", MessageClass::Alarm)], at(t0 + 18_500));
        b.delivered_at(Duration::from_millis(4), at(t0 + 18_600));
        b.delivered_at(Duration::from_millis(10), at(t0 + 18_700));
        let s = b.snapshot_at(at(t0 + 19_000));
        assert_eq!(s.gateway, "gw-1");
        assert_eq!(s.readings_total, 11);
        assert_eq!(s.delivered_total, 2);
        assert_eq!(s.devices.len(), 2);
        assert_eq!(s.devices[0].device, "bed-2");
        assert_eq!(s.devices[0].alarms, 1);
        assert_eq!(s.devices[0].class, "alarm");
        let bed1 = &s.devices[1];
        assert_eq!(bed1.readings, 10);
        assert_eq!(bed1.per_minute, Some(30.0), "{bed1:?}");
        // One reading: no rate yet.
        assert_eq!(s.devices[0].per_minute, None);
        assert_eq!(s.series.len(), SERIES_SECONDS);
        let last = s.series.last().unwrap();
        assert_eq!(last.t, (t0 + 18_000) as i64 / 1000);
        assert_eq!((last.readings, last.alarms, last.delivered), (2, 1, 2));
        assert_eq!(last.latency_mean_ms, Some(7.0));
        assert_eq!(last.latency_max_ms, Some(10));
        // A device that went quiet drifts towards 0 a minute.
        let later = b.snapshot_at(at(t0 + 78_000));
        let bed1 = later.devices.iter().find(|d| d.device == "bed-1").unwrap();
        assert!(bed1.per_minute.unwrap() <= 1.0, "{bed1:?}");
        // The series forgets what is older than its window.
        let much_later = b.snapshot_at(at(t0 + 1_000_000));
        assert!(much_later.series.iter().all(|p| p.readings == 0));
    }

    #[test]
    fn device_rows_stay_bounded() {
        let b = StatusBoard::new("gw");
        let t0 = 1_700_000_000_000u64;
        for i in 0..(MAX_DEVICES as u64 + 1000) {
            b.committed_at(
                &[enc(&format!("d-{i}"), MessageClass::Vital)],
                at(t0 + i * 10),
            );
        }
        let s = b.snapshot_at(at(t0 + 1_000_000));
        assert!(s.devices.len() <= MAX_DEVICES);
        assert!(
            s.devices.len() > MAX_DEVICES - MAX_DEVICES / 8 - 1,
            "{}",
            s.devices.len()
        );
        // The newest survive.
        let last = format!("d-{}", MAX_DEVICES + 999);
        assert_eq!(s.devices[0].device, last);
        assert!(!s.devices.iter().any(|d| d.device == "d-0"));
    }

    #[test]
    fn devices_seen_in_one_commit_are_evicted_an_eighth_at_a_time() {
        let b = StatusBoard::new("gw");
        let batch: Vec<Encoded> = (0..MAX_DEVICES + 1)
            .map(|i| enc(&format!("d-{i}"), MessageClass::Vital))
            .collect();
        // One commit, one millisecond for all of them.
        b.committed_at(&batch, at(1_700_000_000_000));
        let n = b.snapshot_at(at(1_700_000_001_000)).devices.len();
        assert_eq!(n, MAX_DEVICES + 1 - MAX_DEVICES / 8);
    }

    #[test]
    fn security_events_are_kept_newest_first_and_bounded() {
        let b = StatusBoard::new("gw");
        let mem = Arc::new(MemoryAudit::default());
        let sink = b.audit_tee(mem.clone());
        sink.record(AuditEvent::new(AuditKind::AuthSuccess, "psk"));
        for _ in 0..(RECENT_EVENTS + 5) {
            sink.record(AuditEvent::new(AuditKind::AuthFailure, "unknown_identity"));
        }
        sink.record(AuditEvent::new(AuditKind::AclDenied, "forbidden_class").subject("bed-9"));
        assert_eq!(
            mem.events().len(),
            RECENT_EVENTS + 7,
            "every event still reaches the sink"
        );
        let s = b.snapshot();
        assert_eq!(s.events.len(), RECENT_EVENTS);
        assert_eq!(s.events[0].kind, "acl_denied");
        assert_eq!(s.events[0].subject.as_deref(), Some("bed-9"));
        assert_eq!(
            s.event_counts.get("auth_failure"),
            Some(&(RECENT_EVENTS as u64 + 5))
        );
        assert_eq!(s.event_counts.get("auth_success"), None);
    }

    #[tokio::test]
    async fn the_feed_carries_committed_readings_and_reports_a_lagging_subscriber() {
        let b = StatusBoard::new("gw");
        // Nobody listening: nothing is kept.
        b.committed(&[enc("bed-1", MessageClass::Vital)]);
        let mut rx = b.subscribe();
        b.committed(&[enc("bed-2", MessageClass::Alarm)]);
        let item = rx.recv().await.unwrap();
        assert_eq!(&*item.device, "bed-2");
        assert_eq!(item.class, MessageClass::Alarm);
        for _ in 0..(FEED_CAPACITY + 1) {
            b.committed(&[enc("bed-3", MessageClass::Vital)]);
        }
        assert!(matches!(
            rx.recv().await,
            Err(broadcast::error::RecvError::Lagged(_))
        ));
    }
}
