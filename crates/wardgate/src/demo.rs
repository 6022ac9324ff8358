//! `wardgate run --demo`: simulated ward sensors that speak real CoAP to this gateway.
//!
//! Three bedside devices with plausible physiology (bounded random walks), each using a different
//! payload format so the first run exercises the decoders:
//! - `bed-12-spo2`: SpO2 and pulse rate, SenML JSON, every second; a desaturation below 90 %
//!   is sent with `class=alarm`;
//! - `bed-12-temp`: core temperature, SenML CBOR, every 5 s;
//! - `bed-14-resp`: heart and respiratory rate, plain JSON, every 2 s;
//! - `bed-16-thermo`: an LwM2M client (the `wardgate_lwm2m::sim` simulator) that registers with
//!   the gateway's LwM2M server and Sends its temperature object (`/3303/0/5700`, SenML JSON)
//!   every 5 s; it answers the server's operations (try the admin API on it), and any
//!   `[[lwm2m.observe]]` rule that matches it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, SystemTime};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use wardgate_coap::config::TransmissionConfig;
use wardgate_coap::{ClientRequest, CoapClient};
use wardgate_core::payload::ContentFormat;
use wardgate_core::reading::epoch_seconds;
use wardgate_core::{Record, Shutdown, senml};

/// Where the simulated sensors send: the first CoAP listener, with an unspecified address
/// replaced by loopback.
pub(crate) fn target(addrs: &[SocketAddr]) -> Option<SocketAddr> {
    let a = addrs.first()?;
    let ip = match a.ip() {
        IpAddr::V4(v) if v.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v) if v.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    Some(SocketAddr::new(ip, a.port()))
}

/// A bounded random walk: plausible drifting vital signs.
#[derive(Debug, Clone, Copy)]
struct Walk {
    value: f64,
    min: f64,
    max: f64,
    step: f64,
}

impl Walk {
    fn next(&mut self, rng: &mut impl Rng) -> f64 {
        let delta = rng.random_range(-self.step..=self.step);
        self.value = (self.value + delta).clamp(self.min, self.max);
        (self.value * 10.0).round() / 10.0
    }
}

fn record(n: &str, u: &str, v: f64, t: f64) -> Record {
    Record {
        n: n.into(),
        u: Some(u.into()),
        v: Some(v),
        t,
        ..Record::default()
    }
}

/// The simulated LwM2M thermometer: registers, then Sends a temperature every 5 s until
/// `shutdown` (and de-registers).
pub(crate) async fn run_lwm2m(target: SocketAddr, shutdown: Shutdown) {
    use wardgate_lwm2m::sim::{SimClient, SimConfig};
    use wardgate_lwm2m::{Entry, Format, Path, Value};
    let mut cfg = SimConfig::new("bed-16-thermo").auto_update();
    if target.is_ipv6() {
        cfg.bind = (Ipv6Addr::LOCALHOST, 0).into();
    }
    let client = match SimClient::start(cfg, target).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "demo: cannot start the LwM2M client");
            return;
        }
    };
    if let Err(e) = client.register().await {
        tracing::warn!(error = %e, "demo: the LwM2M client could not register (is [lwm2m] enabled?)");
        return;
    }
    let mut temp = Walk {
        value: 36.8,
        min: 35.5,
        max: 39.5,
        step: 0.05,
    };
    let mut rng = StdRng::from_os_rng();
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    let path = Path::resource(3303, 0, 5700);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let v = temp.next(&mut rng);
        if let Err(e) = client.set(path, Value::Float(v)) {
            tracing::debug!(error = %e, "demo: LwM2M value not set");
        }
        let entry = Entry {
            path,
            value: Value::Float(v),
            time: Some(epoch_seconds(SystemTime::now())),
        };
        match client.send(&[entry], Format::SenmlJson).await {
            Ok(r) => tracing::debug!(code = ?r.code, "demo: LwM2M Send answered"),
            Err(e) => tracing::warn!(error = %e, "demo: LwM2M Send failed"),
        }
    }
    let _ = client.deregister().await;
}

/// Runs the simulated sensors until `shutdown`.
pub(crate) async fn run(target: SocketAddr, shutdown: Shutdown) {
    let local: SocketAddr = if target.is_ipv4() {
        (Ipv4Addr::LOCALHOST, 0).into()
    } else {
        (Ipv6Addr::LOCALHOST, 0).into()
    };
    let client = match CoapClient::bind(local, TransmissionConfig::default()).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "demo: cannot bind a client socket");
            return;
        }
    };
    let mut spo2 = Walk {
        value: 97.0,
        min: 86.0,
        max: 100.0,
        step: 0.6,
    };
    let mut pulse = Walk {
        value: 72.0,
        min: 48.0,
        max: 130.0,
        step: 2.0,
    };
    let mut temp = Walk {
        value: 36.9,
        min: 35.5,
        max: 39.5,
        step: 0.05,
    };
    let mut hr = Walk {
        value: 80.0,
        min: 50.0,
        max: 140.0,
        step: 2.5,
    };
    let mut resp = Walk {
        value: 16.0,
        min: 8.0,
        max: 30.0,
        step: 0.7,
    };
    // StdRng (not the thread-local rng) because it lives across awaits in a Send task.
    let mut rng = StdRng::from_os_rng();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = epoch_seconds(SystemTime::now());
        let mut sends: Vec<(&str, Option<&str>, ContentFormat, Vec<u8>)> = Vec::new();
        let s = spo2.next(&mut rng);
        let class = (s < 90.0).then_some("alarm");
        sends.push((
            "bed-12-spo2",
            class,
            ContentFormat::SenmlJson,
            senml::encode_json(&[
                record("spo2", "%", s, now),
                record("pulse_rate", "beat/min", pulse.next(&mut rng), now),
            ]),
        ));
        if n % 5 == 0 {
            sends.push((
                "bed-12-temp",
                None,
                ContentFormat::SenmlCbor,
                senml::encode_cbor(&[record("body_temperature", "Cel", temp.next(&mut rng), now)]),
            ));
        }
        if n % 2 == 0 {
            let body = format!(
                r#"{{"heart_rate":{},"respiratory_rate":{}}}"#,
                hr.next(&mut rng),
                resp.next(&mut rng)
            );
            sends.push(("bed-14-resp", None, ContentFormat::Json, body.into_bytes()));
        }
        n += 1;
        for (device, class, format, payload) in sends {
            let mut req = ClientRequest::post(format!("v1/readings/{device}"))
                .content_format(format.coap_number())
                .payload(payload);
            if let Some(c) = class {
                req = req.query(format!("class={c}"));
            }
            match client.request(target, req).await {
                Ok(resp) if resp.is_success() => {
                    tracing::debug!(device, code = %resp.code(), "demo: reading accepted");
                }
                Ok(resp) => tracing::warn!(device, code = %resp.code(), "demo: reading refused"),
                Err(e) => tracing::warn!(device, error = %e, "demo: request failed"),
            }
        }
    }
}
