//! `wardgate run --demo`: simulated ward sensors that speak real CoAP to this gateway.
//!
//! Three bedside devices with plausible physiology (bounded random walks), each using a different
//! payload format so the first run exercises the decoders:
//! - `bed-12-spo2`: SpO2 and pulse rate, SenML JSON, every second; a desaturation below 90 %
//!   is sent with `class=alarm`;
//! - `bed-12-temp`: core temperature, SenML CBOR, every 5 s;
//! - `bed-14-resp`: heart and respiratory rate, plain JSON, every 2 s.

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
