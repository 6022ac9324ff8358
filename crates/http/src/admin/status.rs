//! The status page (`/status`) and its live feed, on the admin listener.
//!
//! - `GET /status`: the page, rendered here (HTML, a stylesheet and one small script, all
//!   embedded in the binary: no build step, no CDN, nothing fetched from outside, so it works
//!   on an air-gapped ward network). Without JavaScript it is a complete picture that reloads
//!   itself; with it, the script swaps in fresh panels every two seconds.
//! - `GET /status/v1/panels`: the panels alone (the same HTML), for that refresh.
//! - `GET /status/v1/snapshot`: the same facts as JSON, for scripts and other tools.
//! - `GET /status/v1/feed`: Server-Sent Events of the readings made durable from now on
//!   (`event: reading`, the `wardgate.reading/1` JSON as `data`, its id as `id`), filtered by
//!   `device` (an id, or a prefix ending in `*`) and `class` (comma-separated). Readings are
//!   patient data: the feed needs a token (an admin token or a `role = "viewer"` one). Each
//!   client may fall [`wardgate_core::board::FEED_CAPACITY`] readings behind; a client slower
//!   than that is sent `event: dropped` and disconnected, never buffered without limit; at most
//!   [`MAX_FEED_CLIENTS`] listen at once (503 past that).
//!
//! The page, panels, snapshot and assets are read-only and open without a token (the admin
//! listener is on loopback or behind TLS); they show device ids, counts, ages and security
//! labels, never a reading's values, a key or a token. Admin actions on the page call the admin
//! API with the token the operator typed, which stays in the tab's `sessionStorage`.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use prometheus_client::metrics::gauge::Gauge;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use wardgate_core::board::{BoardSnapshot, FeedItem};
use wardgate_core::health::Readiness;
use wardgate_core::{MessageClass, StatusBoard};

use super::AdminState;
use super::routes::ApiError;

/// Live-feed clients at once.
pub(crate) const MAX_FEED_CLIENTS: usize = 16;
/// How often the feed sends a keep-alive comment when there is nothing to say.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

const CSS: &str = include_str!("../../assets/status.css");
const JS: &str = include_str!("../../assets/status.js");

/// Paths anyone who reaches the listener may read.
pub(crate) fn is_public(path: &str) -> bool {
    matches!(
        path,
        "/" | "/status"
            | "/admin/v1/openapi.json"
            | "/status/v1/panels"
            | "/status/v1/snapshot"
            | "/status/assets/status.css"
            | "/status/assets/status.js"
    )
}

/// Counts live-feed clients (and shows them in `wardgate_admin_feed_clients`); a slot is given
/// back when its stream is dropped, whichever side ended it.
#[derive(Debug, Default)]
pub(crate) struct FeedSlots {
    count: Arc<AtomicUsize>,
    gauge: Gauge,
}

struct FeedSlot {
    count: Arc<AtomicUsize>,
    gauge: Gauge,
}

impl Drop for FeedSlot {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::SeqCst);
        self.gauge.dec();
    }
}

impl FeedSlots {
    pub(crate) fn new(gauge: Gauge) -> Self {
        FeedSlots {
            count: Arc::default(),
            gauge,
        }
    }

    fn take(&self) -> Option<FeedSlot> {
        self.count
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < MAX_FEED_CLIENTS).then_some(n + 1)
            })
            .ok()?;
        self.gauge.inc();
        Some(FeedSlot {
            count: self.count.clone(),
            gauge: self.gauge.clone(),
        })
    }
}

/// What the page and the snapshot show.
#[derive(Debug, Serialize)]
pub(crate) struct Snapshot {
    #[serde(flatten)]
    board: BoardSnapshot,
    readiness: Readiness,
    #[serde(skip_serializing_if = "Option::is_none")]
    outbox: Option<OutboxView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    selector: Option<wardgate_selector::SelectorStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lwm2m: Option<Vec<wardgate_lwm2m::ClientInfo>>,
    /// Registered devices (id and whether revoked); `null` without a registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    registry: Option<Vec<RegisteredDevice>>,
    /// Unknown identities waiting for approval (`unknown = "quarantine"`), with the readings
    /// held for each; `null` without a registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pending: Option<Vec<wardgate_registry::PendingView>>,
    /// Whether a capture is running; `null` without the capture control.
    #[serde(skip_serializing_if = "Option::is_none")]
    capturing: Option<bool>,
}

#[derive(Debug, Serialize)]
struct OutboxView {
    readings: u64,
    bytes: u64,
    max_readings: u64,
    max_bytes: u64,
    uplinks: Vec<UplinkBacklog>,
}

#[derive(Debug, Serialize)]
struct UplinkBacklog {
    uplink: String,
    readings: u64,
    oldest_age_s: Option<f64>,
}

#[derive(Debug, Serialize)]
struct RegisteredDevice {
    id: String,
    revoked: bool,
}

fn snapshot(st: &AdminState, board: &StatusBoard) -> Snapshot {
    let outbox = st
        .outbox
        .as_ref()
        .and_then(|o| o.stats().ok())
        .map(|s| OutboxView {
            readings: s.readings,
            bytes: s.bytes,
            max_readings: s.max_readings,
            max_bytes: s.max_bytes,
            uplinks: s
                .uplinks
                .into_iter()
                .map(|u| UplinkBacklog {
                    uplink: u.uplink,
                    readings: u.readings,
                    oldest_age_s: u.oldest_age.map(|d| d.as_secs_f64()),
                })
                .collect(),
        });
    Snapshot {
        board: board.snapshot(),
        readiness: st.health.readiness(),
        outbox,
        selector: st.selector.as_ref().map(|s| s.status()),
        lwm2m: st.lwm2m.as_ref().map(|s| s.clients()),
        registry: st.registry.as_ref().map(|r| {
            r.list()
                .into_iter()
                .map(|d| RegisteredDevice {
                    id: d.id,
                    revoked: d.revoked,
                })
                .collect()
        }),
        pending: st.registry.as_ref().map(|r| r.pending()),
        capturing: st.captures.as_ref().map(|c| c.current().is_some()),
    }
}

fn board(st: &AdminState) -> Result<&StatusBoard, ApiError> {
    st.board.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "this gateway keeps no status board",
        )
    })
}

fn html(body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

/// Headers every status response carries: nothing from elsewhere, no framing, no sniffing.
pub(crate) fn harden(resp: &mut Response) {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

/// `GET /`: the status page.
pub(crate) async fn root() -> Response {
    (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, HeaderValue::from_static("/status"))],
    )
        .into_response()
}

/// `GET /status`.
pub(crate) async fn page(State(st): State<Arc<AdminState>>) -> Result<Response, ApiError> {
    let b = board(&st)?;
    let snap = snapshot(&st, b);
    let mut resp = html(render_page(&snap));
    harden(&mut resp);
    Ok(resp)
}

/// `GET /status/v1/panels`.
pub(crate) async fn panels(State(st): State<Arc<AdminState>>) -> Result<Response, ApiError> {
    let b = board(&st)?;
    let snap = snapshot(&st, b);
    let mut out = String::with_capacity(16 * 1024);
    render_panels(&mut out, &snap);
    let mut resp = html(out);
    harden(&mut resp);
    Ok(resp)
}

/// `GET /status/v1/snapshot`.
pub(crate) async fn snapshot_json(
    State(st): State<Arc<AdminState>>,
) -> Result<axum::Json<Snapshot>, ApiError> {
    let b = board(&st)?;
    Ok(axum::Json(snapshot(&st, b)))
}

/// `GET /status/assets/{file}`.
pub(crate) async fn css() -> Response {
    asset("text/css; charset=utf-8", CSS)
}

/// `GET /status/assets/status.js`.
pub(crate) async fn js() -> Response {
    asset("text/javascript; charset=utf-8", JS)
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    let mut resp = (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response();
    harden(&mut resp);
    resp
}

/// The feed's filters.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct FeedQuery {
    /// A device id, or a prefix ending in `*`.
    device: Option<String>,
    /// Classes, comma-separated.
    class: Option<String>,
}

#[derive(Debug)]
struct Filter {
    device: Option<(String, bool)>,
    classes: Option<Vec<MessageClass>>,
}

impl Filter {
    fn parse(q: FeedQuery) -> Result<Filter, ApiError> {
        let device = q
            .device
            .filter(|d| !d.is_empty())
            .map(|d| match d.strip_suffix('*') {
                Some(prefix) => (prefix.to_owned(), true),
                None => (d, false),
            });
        if let Some((d, _)) = &device
            && (d.len() > 128
                || !d
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')))
        {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "device: a device id (A-Z a-z 0-9 . _ : -), or a prefix of one ending in *",
            ));
        }
        let classes = match q.class.filter(|c| !c.is_empty()) {
            None => None,
            Some(list) => Some(
                list.split(',')
                    .map(|c| {
                        c.trim().parse::<MessageClass>().map_err(|_| {
                            ApiError::new(
                                StatusCode::BAD_REQUEST,
                                "class: comma-separated alarm, vital, telemetry, bulk, security",
                            )
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        Ok(Filter { device, classes })
    }

    fn matches(&self, item: &FeedItem) -> bool {
        let device_ok = match &self.device {
            None => true,
            Some((prefix, true)) => item.device.starts_with(prefix.as_str()),
            Some((id, false)) => *item.device == **id,
        };
        device_ok
            && self
                .classes
                .as_ref()
                .is_none_or(|cs| cs.contains(&item.class))
    }
}

/// `GET /status/v1/feed` (authenticated by the middleware).
pub(crate) async fn feed(
    State(st): State<Arc<AdminState>>,
    Query(q): Query<FeedQuery>,
) -> Result<Response, ApiError> {
    let b = board(&st)?;
    let filter = Filter::parse(q)?;
    let Some(slot) = st.feed_slots.take() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many live-feed clients; try again later",
        ));
    };
    let rx = b.subscribe();
    let metrics = st.metrics.clone();
    let stream = futures::stream::unfold(
        (rx, filter, Some(slot), metrics),
        |(mut rx, filter, slot, metrics)| async move {
            // `slot` is None once the stream said it ends.
            slot.as_ref()?;
            loop {
                match rx.recv().await {
                    Ok(item) if filter.matches(&item) => {
                        let ev = Event::default()
                            .event("reading")
                            .data(String::from_utf8_lossy(&item.json));
                        return Some((
                            Ok::<_, std::convert::Infallible>(ev),
                            (rx, filter, slot, metrics),
                        ));
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(missed)) => {
                        metrics.feed_dropped();
                        tracing::info!(missed, "status feed: a client fell behind and is dropped");
                        let ev = Event::default()
                            .event("dropped")
                            .data(format!("{{\"reason\":\"too slow\",\"missed\":{missed}}}"));
                        drop(slot);
                        return Some((Ok(ev), (rx, filter, None, metrics)));
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        },
    );
    let mut resp = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    harden(&mut resp);
    Ok(resp)
}

// ---- rendering -------------------------------------------------------------------------------

/// Escapes text for HTML content and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn ago(now_ms: i64, at_ms: i64) -> String {
    let s = (now_ms - at_ms).max(0) / 1000;
    match s {
        0..=59 => format!("{s} s ago"),
        60..=3599 => format!("{} min ago", s / 60),
        _ => format!("{} h {} min ago", s / 3600, (s % 3600) / 60),
    }
}

fn iso(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}

fn age_s(secs: f64) -> String {
    if secs < 1.0 {
        format!("{:.0} ms", secs * 1000.0)
    } else if secs < 120.0 {
        format!("{secs:.1} s")
    } else {
        format!("{:.0} min", secs / 60.0)
    }
}

fn bytes_h(b: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    if b >= 1024 * 1024 {
        format!("{:.1} MiB", b as f64 / MIB)
    } else {
        format!("{:.1} KiB", b as f64 / 1024.0)
    }
}

fn render_page(s: &Snapshot) -> String {
    let mut o = String::with_capacity(32 * 1024);
    let title = format!("wardgate {} status", esc(&s.board.gateway));
    let _ = write!(
        o,
        r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="stylesheet" href="/status/assets/status.css">
<script src="/status/assets/status.js" defer></script>
<noscript><meta http-equiv="refresh" content="10"></noscript>
</head>
<body>
<a class="skip" href="#panels">Skip to the gateway's state</a>
<header>
<h1>wardgate <span class="gw">{gw}</span></h1>
<p class="meta">version {ver} · started <time datetime="{started}">{started}</time></p>
</header>
<main>
<section id="access" aria-labelledby="access-h">
<h2 id="access-h">Access</h2>
<form id="token-form" autocomplete="off">
<label for="token">Admin or viewer token</label>
<input id="token" name="token" type="password" autocomplete="off" spellcheck="false">
<button type="submit" id="token-use">Use token</button>
<button type="button" id="token-forget">Forget token</button>
</form>
<p id="token-state" role="status">Read-only: no token. The live feed and the actions need one.</p>
</section>
<div id="alarm-banner" role="alert" hidden></div>
<div id="panels" aria-live="off">
"##,
        gw = esc(&s.board.gateway),
        ver = esc(s.board.version),
        started = iso(s.board.started_ms),
    );
    render_panels(&mut o, s);
    o.push_str(
        r#"</div>
<section id="feed" aria-labelledby="feed-h">
<h2 id="feed-h">Live readings</h2>
<form id="feed-form">
<label for="feed-device">Device (id, or prefix*)</label>
<input id="feed-device" name="device" placeholder="bed-12*">
<label for="feed-class">Class</label>
<select id="feed-class" name="class">
<option value="">any</option>
<option value="alarm">alarm</option>
<option value="vital">vital</option>
<option value="telemetry">telemetry</option>
<option value="bulk">bulk</option>
<option value="security">security</option>
</select>
<button type="submit" id="feed-start">Start</button>
<button type="button" id="feed-stop">Stop</button>
</form>
<p id="feed-state" role="status">Stopped.</p>
<ol id="feed-list" aria-live="polite" aria-relevant="additions"></ol>
</section>
<section id="actions" aria-labelledby="actions-h">
<h2 id="actions-h">Actions</h2>
<p>Need an admin token. Every action is written to the audit trail.</p>
<form id="revoke-form" class="action">
<label for="revoke-device">Device</label>
<input id="revoke-device" name="device" required>
<button type="submit" id="revoke" data-op="revoke">Revoke</button>
<button type="button" id="restore" data-op="restore">Restore</button>
</form>
<form id="capture-form" class="action">
<label for="capture-seconds">Capture for (seconds)</label>
<input id="capture-seconds" name="seconds" type="number" min="1" max="3600" value="60">
<button type="submit" id="capture-start">Start capture</button>
<button type="button" id="capture-stop">Stop capture</button>
</form>
<form id="lwm2m-form" class="action">
<label for="lwm2m-endpoint">LwM2M endpoint</label>
<input id="lwm2m-endpoint" name="endpoint" required>
<label for="lwm2m-path">Path</label>
<input id="lwm2m-path" name="path" value="/3/0" required>
<button type="submit" id="lwm2m-read">Read</button>
</form>
<p id="action-result" role="status"></p>
</section>
</main>
</body>
</html>
"#,
    );
    o
}

fn render_panels(o: &mut String, s: &Snapshot) {
    let now = s.board.now_ms;
    // In pairs on a wide screen: health and uplinks, then the traffic and devices across,
    // then LwM2M and security.
    render_health(o, s);
    render_uplinks(o, s);
    render_traffic(o, s);
    render_devices(o, s, now);
    render_lwm2m(o, s);
    render_security(o, s, now);
}

fn render_health(o: &mut String, s: &Snapshot) {
    let r = &s.readiness;
    let up = (s.board.now_ms - s.board.started_ms).max(0) / 1000;
    let _ = write!(
        o,
        r#"<section id="health" aria-labelledby="health-h"><h2 id="health-h">Health</h2>
<p><span id="ready" class="badge {cls}">{state}</span> up {h} h {m} min · <span id="readings-total">{total}</span> readings stored · <span id="delivered-total">{delivered}</span> deliveries acknowledged</p>"#,
        cls = if r.ready { "ok" } else { "bad" },
        state = if r.ready { "Ready" } else { "Not ready" },
        h = up / 3600,
        m = (up % 3600) / 60,
        total = s.board.readings_total,
        delivered = s.board.delivered_total,
    );
    if !r.failing.is_empty() {
        let _ = write!(
            o,
            "<p class=\"bad-text\">Failing: {}</p>",
            esc(&r.failing.join(", "))
        );
    }
    o.push_str("<table><caption>Components</caption><thead><tr><th scope=\"col\">Component</th><th scope=\"col\">State</th><th scope=\"col\">Detail</th></tr></thead><tbody>");
    for (name, c) in &r.checks {
        let _ = write!(
            o,
            "<tr><th scope=\"row\">{}</th><td class=\"{}\">{}</td><td>{}</td></tr>",
            esc(name),
            if c.ready { "ok-text" } else { "bad-text" },
            if c.ready { "ready" } else { "not ready" },
            esc(&c.detail)
        );
    }
    o.push_str("</tbody></table></section>\n");
}

/// A small SVG line chart of `values` (one a second), with its text equivalent.
fn chart(o: &mut String, id: &str, label: &str, unit: &str, series: &[(&str, Vec<Option<f64>>)]) {
    const W: f64 = 600.0;
    const H: f64 = 120.0;
    let max = series
        .iter()
        .flat_map(|(_, v)| v.iter().flatten())
        .fold(0.0f64, |a, &b| a.max(b));
    let top = if max <= 0.0 { 1.0 } else { max * 1.1 };
    let latest: Vec<String> = series
        .iter()
        .map(|(name, v)| {
            let last = v.iter().rev().take(10).flatten().copied();
            let (n, sum) = last.fold((0u32, 0.0), |(n, s), x| (n + 1, s + x));
            let avg = if n > 0 { sum / f64::from(n) } else { 0.0 };
            format!("{name} {avg:.1} {unit}")
        })
        .collect();
    let summary = format!(
        "{label}: last 10 s average {}; peak {max:.1} {unit} over the last 5 min",
        latest.join(", ")
    );
    let _ = write!(
        o,
        r#"<figure class="chart" id="{id}"><svg viewBox="0 0 {W} {H}" role="img" aria-labelledby="{id}-t" preserveAspectRatio="none"><title id="{id}-t">{summary}</title>"#,
        summary = esc(&summary)
    );
    for (i, (_, values)) in series.iter().enumerate() {
        let n = values.len().max(2) as f64;
        let mut pts = String::new();
        for (x, v) in values.iter().enumerate() {
            if let Some(v) = v {
                let px = x as f64 / (n - 1.0) * W;
                let py = H - (v / top) * (H - 4.0) - 2.0;
                let _ = write!(pts, "{px:.1},{py:.1} ");
            }
        }
        let _ = write!(o, r#"<polyline class="s{i}" points="{}"/>"#, pts.trim_end());
    }
    let _ = write!(
        o,
        r#"</svg><figcaption>{}</figcaption></figure>"#,
        esc(&summary)
    );
}

fn render_traffic(o: &mut String, s: &Snapshot) {
    o.push_str(r#"<section id="traffic" aria-labelledby="traffic-h"><h2 id="traffic-h">Traffic, last 5 minutes</h2><div class="charts">"#);
    let pts = &s.board.series;
    chart(
        o,
        "chart-readings",
        "Readings stored per second",
        "/s",
        &[
            (
                "readings",
                pts.iter().map(|p| Some(f64::from(p.readings))).collect(),
            ),
            (
                "alarms",
                pts.iter().map(|p| Some(f64::from(p.alarms))).collect(),
            ),
        ],
    );
    chart(
        o,
        "chart-latency",
        "Delivery latency (ingest to acknowledgement)",
        "ms",
        &[
            ("mean", pts.iter().map(|p| p.latency_mean_ms).collect()),
            (
                "max",
                pts.iter()
                    .map(|p| p.latency_max_ms.map(|v| v as f64))
                    .collect(),
            ),
        ],
    );
    o.push_str("</div><p class=\"legend\"><span class=\"s0\">■</span> readings / mean <span class=\"s1\">■</span> alarms / max</p></section>\n");
}

fn render_devices(o: &mut String, s: &Snapshot, now: i64) {
    let _ = write!(
        o,
        r#"<section id="devices" aria-labelledby="devices-h"><h2 id="devices-h">Devices <span class="count">({})</span></h2>"#,
        s.board.devices.len()
    );
    // Indexed once: this page is open without a token, and a registry may hold thousands.
    let registered: Option<std::collections::HashMap<&str, bool>> = s
        .registry
        .as_ref()
        .map(|r| r.iter().map(|d| (d.id.as_str(), d.revoked)).collect());
    let revoked = |id: &str| {
        registered.as_ref().map(|r| match r.get(id) {
            None => "not registered",
            Some(true) => "revoked",
            Some(false) => "registered",
        })
    };
    if s.board.devices.is_empty() {
        o.push_str("<p>No readings yet.</p>");
    } else {
        o.push_str("<table><caption>Devices by last reading (since start)</caption><thead><tr><th scope=\"col\">Device</th><th scope=\"col\">Protocol</th><th scope=\"col\">Last class</th><th scope=\"col\">Last seen</th><th scope=\"col\">Rate /min</th><th scope=\"col\">Readings</th><th scope=\"col\">Alarms</th>");
        if s.registry.is_some() {
            o.push_str("<th scope=\"col\">Registry</th>");
        }
        o.push_str("</tr></thead><tbody>");
        for d in s.board.devices.iter().take(200) {
            let _ = write!(
                o,
                r#"<tr data-device="{id}"><th scope="row">{id}</th><td>{proto}</td><td class="class-{class}">{class}</td><td><time datetime="{at}">{ago}</time></td><td>{rate}</td><td class="readings">{n}</td><td>{alarms}</td>"#,
                id = esc(&d.device),
                proto = d.protocol,
                class = d.class,
                at = iso(d.last_seen_ms),
                ago = ago(now, d.last_seen_ms),
                rate = d
                    .per_minute
                    .map_or_else(|| "–".to_owned(), |r| format!("{r:.1}")),
                n = d.readings,
                alarms = d.alarms,
            );
            if let Some(state) = revoked(&d.device) {
                let _ = write!(
                    o,
                    "<td class=\"reg-{}\">{state}</td>",
                    state.replace(' ', "-")
                );
            }
            o.push_str("</tr>");
        }
        o.push_str("</tbody></table>");
        if s.board.devices.len() > 200 {
            let _ = write!(
                o,
                "<p>{} more in <a href=\"/status/v1/snapshot\">the snapshot</a>.</p>",
                s.board.devices.len() - 200
            );
        }
    }
    if let Some(reg) = &s.registry {
        let seen: std::collections::HashSet<&str> =
            s.board.devices.iter().map(|d| d.device.as_str()).collect();
        let silent: Vec<&RegisteredDevice> = reg
            .iter()
            .filter(|r| !seen.contains(r.id.as_str()))
            .collect();
        if !silent.is_empty() {
            o.push_str("<p>Registered, no reading since start: ");
            let names: Vec<String> = silent
                .iter()
                .map(|r| {
                    if r.revoked {
                        format!("{} (revoked)", esc(&r.id))
                    } else {
                        esc(&r.id)
                    }
                })
                .collect();
            o.push_str(&names.join(", "));
            o.push_str("</p>");
        }
    }
    render_pending(o, s);
    o.push_str("</section>\n");
}

/// Unknown identities waiting for an administrator (quarantine), when there are any.
fn render_pending(o: &mut String, s: &Snapshot) {
    let Some(pending) = s.pending.as_ref().filter(|p| !p.is_empty()) else {
        return;
    };
    o.push_str("<table><caption>Unknown identities waiting for approval (quarantine)</caption><thead><tr><th scope=\"col\">Identity</th><th scope=\"col\">Readings held</th><th scope=\"col\">Seen</th><th scope=\"col\">First seen</th><th scope=\"col\">Last seen</th><th scope=\"col\">Last address</th></tr></thead><tbody>");
    for p in pending {
        let _ = write!(
            o,
            "<tr><th scope=\"row\"><code>{}</code></th><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&p.identity),
            p.held,
            p.count,
            esc(&p.first_seen),
            esc(&p.last_seen),
            p.last_peer
                .map_or_else(|| "–".to_owned(), |a| a.to_string()),
        );
    }
    o.push_str("</tbody></table><p>Approve one by adding a device that holds the identity (its held readings are then delivered); dismiss it with <code>DELETE /admin/v1/pending/{identity}</code> (they are discarded).</p>");
}

fn render_lwm2m(o: &mut String, s: &Snapshot) {
    let Some(clients) = &s.lwm2m else {
        return;
    };
    let _ = write!(
        o,
        r#"<section id="lwm2m" aria-labelledby="lwm2m-h"><h2 id="lwm2m-h">LwM2M registrations <span class="count">({})</span></h2>"#,
        clients.len()
    );
    if clients.is_empty() {
        o.push_str("<p>No client registered.</p>");
    } else {
        o.push_str("<table><caption>Registered LwM2M clients</caption><thead><tr><th scope=\"col\">Endpoint</th><th scope=\"col\">Device</th><th scope=\"col\">Transport</th><th scope=\"col\">Lifetime</th><th scope=\"col\">Binding</th><th scope=\"col\">Last seen</th><th scope=\"col\">Awake</th><th scope=\"col\">Queued</th><th scope=\"col\">Observed</th></tr></thead><tbody>");
        for c in clients {
            let r = &c.registration;
            let _ = write!(
                o,
                "<tr><th scope=\"row\">{}</th><td>{}</td><td>{}</td><td>{} s</td><td>{}{}</td><td>{} s ago</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&r.endpoint),
                esc(&r.device),
                r.transport.as_str(),
                r.lifetime.as_secs(),
                esc(&r.binding),
                if r.queue_mode { "Q" } else { "" },
                c.last_seen_secs_ago,
                if c.awake { "yes" } else { "no" },
                c.queued,
                esc(&c.observations.join(" ")),
            );
        }
        o.push_str("</tbody></table>");
    }
    o.push_str("</section>\n");
}

fn render_uplinks(o: &mut String, s: &Snapshot) {
    o.push_str(r#"<section id="uplinks" aria-labelledby="uplinks-h"><h2 id="uplinks-h">Uplinks and outbox</h2>"#);
    if let Some(ob) = &s.outbox {
        let pct = if ob.max_readings > 0 {
            ob.readings as f64 * 100.0 / ob.max_readings as f64
        } else {
            0.0
        };
        let _ = write!(
            o,
            "<p>Outbox: <span id=\"outbox-readings\">{}</span> readings ({}) held, {pct:.1} % of {} allowed.</p>",
            ob.readings,
            bytes_h(ob.bytes),
            ob.max_readings
        );
    }
    o.push_str("<table><caption>Uplinks</caption><thead><tr><th scope=\"col\">Uplink</th><th scope=\"col\">State</th><th scope=\"col\">Backlog</th><th scope=\"col\">Oldest undelivered</th>");
    let sel = s.selector.as_ref();
    if sel.is_some() {
        o.push_str("<th scope=\"col\">Breaker</th><th scope=\"col\">Latency EWMA</th><th scope=\"col\">Success</th>");
    }
    o.push_str("</tr></thead><tbody>");
    let names: Vec<String> = match &s.outbox {
        Some(ob) => ob.uplinks.iter().map(|u| u.uplink.clone()).collect(),
        None => Vec::new(),
    };
    for name in &names {
        let check = s.readiness.checks.get(&format!("uplink.{name}"));
        let backlog = s
            .outbox
            .as_ref()
            .and_then(|ob| ob.uplinks.iter().find(|u| &u.uplink == name));
        let _ = write!(
            o,
            "<tr><th scope=\"row\">{}</th><td class=\"{}\">{}</td><td>{}</td><td>{}</td>",
            esc(name),
            if check.is_some_and(|c| c.ready) {
                "ok-text"
            } else {
                "bad-text"
            },
            esc(&check.map_or_else(
                || "unknown".to_owned(),
                |c| {
                    if c.ready {
                        format!("ready ({})", c.detail)
                    } else {
                        format!("down ({})", c.detail)
                    }
                }
            )),
            backlog.map_or(0, |b| b.readings),
            backlog
                .and_then(|b| b.oldest_age_s)
                .map_or_else(|| "none".to_owned(), age_s),
        );
        if let Some(u) = sel.and_then(|s| s.uplinks.iter().find(|u| &u.name == name)) {
            let _ = write!(
                o,
                "<td>{}</td><td>{}</td><td>{}</td>",
                u.breaker,
                u.ewma_ms
                    .map_or_else(|| "–".to_owned(), |v| format!("{v:.1} ms")),
                u.success_ratio
                    .map_or_else(|| "–".to_owned(), |v| format!("{:.1} %", v * 100.0)),
            );
        }
        o.push_str("</tr>");
    }
    o.push_str("</tbody></table>");
    if let Some(sel) = sel {
        o.push_str("<table><caption>Routing by class</caption><thead><tr><th scope=\"col\">Class</th><th scope=\"col\">Policy</th><th scope=\"col\">Goes to now</th></tr></thead><tbody>");
        for c in &sel.classes {
            let _ = write!(
                o,
                "<tr><th scope=\"row\">{}</th><td>{}</td><td>{}</td></tr>",
                c.class,
                c.policy,
                esc(&c.now.join(", "))
            );
        }
        o.push_str("</tbody></table><h3>Recent selector decisions</h3>");
        if sel.decisions.is_empty() {
            o.push_str("<p>None yet.</p>");
        } else {
            o.push_str("<ol class=\"decisions\">");
            for d in sel.decisions.iter().take(10) {
                let _ = write!(
                    o,
                    "<li>{} ago: {} ({}) → {}: {} <span class=\"detail\">{}</span></li>",
                    age_s(d.age_ms as f64 / 1000.0),
                    d.class,
                    d.policy,
                    esc(&d.targets.join(", ")),
                    d.reason,
                    esc(&d.detail),
                );
            }
            o.push_str("</ol>");
        }
    }
    o.push_str("</section>\n");
}

fn render_security(o: &mut String, s: &Snapshot, now: i64) {
    o.push_str(r#"<section id="security" aria-labelledby="security-h"><h2 id="security-h">Security events</h2>"#);
    if s.board.event_counts.is_empty() {
        o.push_str("<p>None since start.</p>");
    } else {
        o.push_str("<ul class=\"counts\">");
        for (k, n) in &s.board.event_counts {
            let _ = write!(
                o,
                "<li class=\"ev-{k}\">{}: <strong>{n}</strong></li>",
                k.replace('_', " ")
            );
        }
        o.push_str("</ul>");
        if let Some(c) = s.capturing {
            let _ = write!(
                o,
                "<p>Traffic capture: {}.</p>",
                if c { "running" } else { "off" }
            );
        }
        o.push_str("<table><caption>Most recent first</caption><thead><tr><th scope=\"col\">When</th><th scope=\"col\">Kind</th><th scope=\"col\">Reason</th><th scope=\"col\">Who</th><th scope=\"col\">From</th><th scope=\"col\">Concerning</th></tr></thead><tbody>");
        for e in s.board.events.iter().take(25) {
            let _ = write!(
                o,
                "<tr class=\"ev-{kind}\"><td><time datetime=\"{at}\">{ago}</time></td><td>{kind_h}</td><td>{reason}</td><td>{actor}</td><td>{peer}</td><td>{subject}</td></tr>",
                kind = e.kind,
                kind_h = e.kind.replace('_', " "),
                at = iso(e.at_ms),
                ago = ago(now, e.at_ms),
                reason = esc(e.reason),
                actor = esc(e.actor.as_deref().unwrap_or("–")),
                peer = e.peer.map_or_else(|| "–".to_owned(), |p| p.to_string()),
                subject = esc(e.subject.as_deref().unwrap_or("–")),
            );
        }
        o.push_str("</tbody></table>");
    }
    o.push_str("</section>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_everything_markup_could_hide_in() {
        assert_eq!(
            esc(r#"<script>"a" & 'b'</script>"#),
            "&lt;script&gt;&quot;a&quot; &amp; &#39;b&#39;&lt;/script&gt;"
        );
    }

    #[test]
    fn feed_filters_by_device_prefix_and_class() {
        let item = |d: &str, class| FeedItem {
            device: Arc::from(d),
            class,
            json: bytes::Bytes::new(),
        };
        let f = Filter::parse(FeedQuery {
            device: Some("bed-12*".into()),
            class: Some("alarm, vital".into()),
        })
        .unwrap();
        assert!(f.matches(&item("bed-12-spo2", MessageClass::Alarm)));
        assert!(!f.matches(&item("bed-14", MessageClass::Alarm)));
        assert!(!f.matches(&item("bed-12-spo2", MessageClass::Bulk)));
        let exact = Filter::parse(FeedQuery {
            device: Some("bed-12".into()),
            class: None,
        })
        .unwrap();
        assert!(exact.matches(&item("bed-12", MessageClass::Bulk)));
        assert!(!exact.matches(&item("bed-12-spo2", MessageClass::Bulk)));
        assert!(
            Filter::parse(FeedQuery {
                device: Some("<x>".into()),
                class: None
            })
            .is_err()
        );
        assert!(
            Filter::parse(FeedQuery {
                device: None,
                class: Some("urgent".into())
            })
            .is_err()
        );
    }

    #[test]
    fn feed_slots_are_bounded_and_given_back() {
        let slots = FeedSlots::default();
        let taken: Vec<FeedSlot> = (0..MAX_FEED_CLIENTS)
            .map(|_| slots.take().unwrap())
            .collect();
        assert!(slots.take().is_none());
        drop(taken);
        assert!(slots.take().is_some());
    }
}
