//! One bed's devices, each speaking its protocol to the gateway, a tick a second.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use rand::SeedableRng;
use rand::rngs::StdRng;
use wardgate_coap::config::TransmissionConfig;
use wardgate_coap::{ClientRequest, CoapClient};
use wardgate_core::payload::ContentFormat;
use wardgate_core::reading::epoch_seconds;
use wardgate_core::{CredentialStore as _, Record, Shutdown, senml};
use wardgate_lwm2m::sim::{OverTransport, SimSocket};

use super::ward::{Dropout, Patient, Vitals};
use super::{Outcome, Plan, Proto, Stats};

/// Longest wait for one answer before the send counts as failed.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// After the run, how long the MQTT devices wait for the broker's last PUBACKs.
const DRAIN: Duration = Duration::from_secs(3);

/// What the beds share: the HTTPS client and the MQTT connection.
pub(crate) struct Shared {
    https: Option<(reqwest::Client, String)>,
    mqtt: Option<(
        rumqttc::AsyncClient,
        super::MqttTarget,
        tokio::task::JoinHandle<()>,
    )>,
}

impl Shared {
    pub(crate) async fn new(
        plan: &Plan,
        stats: Arc<Stats>,
        stop: Shutdown,
    ) -> anyhow::Result<Shared> {
        let https = match &plan.targets.https {
            Some(t) => Some((https_client(t.ca.as_deref())?, t.base.clone())),
            None => None,
        };
        let mqtt = plan.targets.mqtt.clone().map(|t| {
            let mut opts = rumqttc::MqttOptions::new(
                format!("wardgate-sim-{:x}", plan.seed),
                t.host.clone(),
                t.port,
            );
            opts.set_keep_alive(Duration::from_secs(30));
            let (client, mut events) = rumqttc::AsyncClient::new(opts, 256);
            let closer = client.clone();
            // The event loop counts the broker's PUBACKs and reconnects after a pause on error.
            // Once `stop` comes it goes on for up to DRAIN so the last PUBACKs are counted;
            // whatever is still unacknowledged then counts as failed.
            let task = tokio::spawn(async move {
                let mut until: Option<tokio::time::Instant> = None;
                loop {
                    let c = stats.of(Proto::Mqtt);
                    let open = c
                        .sent
                        .load(Ordering::Relaxed)
                        .saturating_sub(c.accepted.load(Ordering::Relaxed))
                        .saturating_sub(c.failed.load(Ordering::Relaxed));
                    if until.is_some() && open == 0 {
                        break;
                    }
                    let deadline = until.unwrap_or_else(|| {
                        tokio::time::Instant::now() + Duration::from_secs(3600)
                    });
                    tokio::select! {
                        () = stop.cancelled(), if until.is_none() => {
                            until = Some(tokio::time::Instant::now() + DRAIN);
                        }
                        () = tokio::time::sleep_until(deadline), if until.is_some() => {
                            c.failed.fetch_add(open, Ordering::Relaxed);
                            break;
                        }
                        ev = events.poll() => match ev {
                            Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => {
                                c.accepted.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(_) => {}
                            Err(e) => {
                                if until.is_some() {
                                    c.failed.fetch_add(open, Ordering::Relaxed);
                                    break;
                                }
                                tracing::warn!(error = %e, "simulate: MQTT broker connection failed");
                                tokio::select! {
                                    () = stop.cancelled() => {}
                                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                                }
                            }
                        }
                    }
                }
                // DISCONNECT goes out with the next poll.
                let _ = closer.try_disconnect();
                let _ = tokio::time::timeout(Duration::from_millis(500), events.poll()).await;
            });
            (client, t, task)
        });
        Ok(Shared { https, mqtt })
    }

    /// Waits for the MQTT event loop to count the last PUBACKs and disconnect.
    pub(crate) async fn close(&self) {
        if let Some((_, _, task)) = &self.mqtt {
            let _ = tokio::time::timeout(DRAIN + Duration::from_secs(1), async {
                while !task.is_finished() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await;
        }
    }
}

/// The HTTPS client: the ring provider like everything here; `ca` (PEM) as its only trust
/// anchor when given, else the system's.
fn https_client(ca: Option<&std::path::Path>) -> anyhow::Result<reqwest::Client> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            let pem =
                std::fs::read(path).with_context(|| format!("HTTPS CA {}", path.display()))?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                roots
                    .add(cert.with_context(|| format!("HTTPS CA {}", path.display()))?)
                    .context("HTTPS CA certificate")?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(ANSWER_TIMEOUT)
        .no_proxy()
        .build()
        .context("HTTPS client")
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

/// A device of a bed, with its dropout state.
struct Device {
    id: String,
    dropout: Dropout,
    /// Sends every this many seconds.
    every: u64,
}

impl Device {
    fn new(bed: u32, kind: &str, every: u64, plan: &Plan) -> Device {
        Device {
            id: format!("bed-{bed:02}-{kind}"),
            dropout: Dropout::new(plan.dropout_every),
            every,
        }
    }

    /// Whether it sends at second `n` (and is not silent).
    fn due(&mut self, n: u64, offset: u64, rng: &mut StdRng, stats: &Stats) -> bool {
        let (started, silent) = self.dropout.step(rng);
        if started {
            stats.dropouts.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(device = %self.id, "simulate: sensor dropout");
        }
        // Each bed's devices start at their own second (`offset`), then keep their period.
        !silent && n % self.every == offset % self.every
    }
}

/// The local address for talking to `target` (loopback to loopback).
fn local_for(target: SocketAddr) -> SocketAddr {
    match target.ip() {
        IpAddr::V4(v) if v.is_loopback() => (Ipv4Addr::LOCALHOST, 0).into(),
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(v) if v.is_loopback() => (Ipv6Addr::LOCALHOST, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    }
}

/// One bed until `stop`.
pub(crate) async fn bed(
    bed: u32,
    plan: Arc<Plan>,
    shared: Arc<Shared>,
    stats: Arc<Stats>,
    stop: Shutdown,
) {
    let mut rng = StdRng::seed_from_u64(plan.seed ^ (u64::from(bed) << 32));
    let mut patient = Patient::new(&mut rng, plan.alarm_every);
    let coap = match plan.targets.coap {
        Some(target) => {
            match CoapClient::bind(local_for(target), TransmissionConfig::default()).await {
                Ok(c) => Some((c, target)),
                Err(e) => {
                    tracing::error!(error = %e, "simulate: cannot bind a CoAP socket");
                    None
                }
            }
        }
        None => None,
    };
    // The thermometer registers on its own task: the other devices start at once. Over its own
    // DTLS session when the registry has its PSK, else over plain CoAP.
    let thermo_id = format!("bed-{bed:02}-thermo");
    let thermo_link = match dtls_transport(&thermo_id, &plan) {
        Some((t, target)) => {
            let socket: Arc<dyn SimSocket> = Arc::new(OverTransport(t));
            Some((target, Some(socket)))
        }
        None => plan.targets.coap.map(|target| (target, None)),
    };
    let mut registering = match (plan.targets.lwm2m, thermo_link) {
        (true, Some((target, socket))) => Some(tokio::spawn(Lwm2mThermo::start(
            thermo_id,
            target,
            socket,
            stats.clone(),
        ))),
        _ => None,
    };
    let mut lwm2m: Option<Lwm2mThermo> = None;
    let [spo2_kind, temp_kind, resp_kind] = super::COAP_KINDS;
    let mut spo2 = Device::new(bed, spo2_kind, 1, &plan);
    let mut temp = Device::new(bed, temp_kind, 5, &plan);
    let mut resp = Device::new(bed, resp_kind, 2, &plan);
    // Each CoAP device over its own DTLS session when the registry has its PSK, else over the
    // bed's plain CoAP socket, else (no plain CoAP) not at all.
    let plain = coap.as_ref().map(|(c, t)| (c, *t, Proto::Coap));
    let spo2_dtls = dtls_client(&spo2.id, &plan);
    let temp_dtls = dtls_client(&temp.id, &plan);
    let resp_dtls = dtls_client(&resp.id, &plan);
    fn link<'a>(
        dtls: &'a Option<(CoapClient, SocketAddr)>,
        plain: Option<(&'a CoapClient, SocketAddr, Proto)>,
    ) -> Option<(&'a CoapClient, SocketAddr, Proto)> {
        dtls.as_ref().map(|(c, t)| (c, *t, Proto::Coaps)).or(plain)
    }
    let (spo2_link, temp_link, resp_link) = (
        link(&spo2_dtls, plain),
        link(&temp_dtls, plain),
        link(&resp_dtls, plain),
    );
    let mut bp = Device::new(bed, "bp", 10, &plan);
    let mut pump = Device::new(bed, "pump", 5, &plan);
    let offset = u64::from(bed);
    let mut pump_rate = 20.0 + f64::from(bed % 7) * 5.0;
    // Beds start a little apart, as they would.
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_millis(u64::from(bed % 10) * 97),
        Duration::from_secs(1),
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for n in 0u64.. {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        if registering
            .as_ref()
            .is_some_and(tokio::task::JoinHandle::is_finished)
            && let Some(h) = registering.take()
        {
            lwm2m = h.await.ok().flatten();
        }
        let v = patient.step(&mut rng);
        let now = epoch_seconds(SystemTime::now());
        if let Some((client, target, proto)) = spo2_link
            && spo2.due(n, offset, &mut rng, &stats)
        {
            let body = senml::encode_json(&[
                record("spo2", "%", v.spo2, now),
                record("pulse_rate", "beat/min", v.pulse, now),
            ]);
            if v.alarming() {
                stats.alarms.fetch_add(1, Ordering::Relaxed);
            }
            let class = v.alarming().then_some("alarm");
            let to = (client, target, proto);
            coap_send(to, &spo2.id, class, ContentFormat::SenmlJson, body, &stats).await;
        }
        if let Some((client, target, proto)) = temp_link
            && temp.due(n, offset, &mut rng, &stats)
        {
            let body = senml::encode_cbor(&[record("body_temperature", "Cel", v.temp, now)]);
            let to = (client, target, proto);
            coap_send(to, &temp.id, None, ContentFormat::SenmlCbor, body, &stats).await;
        }
        if let Some((client, target, proto)) = resp_link
            && resp.due(n, offset, &mut rng, &stats)
        {
            let body = format!(
                r#"{{"heart_rate":{},"respiratory_rate":{}}}"#,
                v.pulse, v.resp
            );
            let to = (client, target, proto);
            let body = body.into_bytes();
            coap_send(to, &resp.id, None, ContentFormat::Json, body, &stats).await;
        }
        if let Some(thermo) = &lwm2m
            && n % 5 == offset % 5
        {
            thermo.send(v.temp, &stats).await;
        }
        if let Some((client, base)) = &shared.https
            && bp.due(n, offset, &mut rng, &stats)
        {
            https_send(client, base, &bp.id, &v, now, &stats).await;
        }
        if let Some((client, target, _)) = &shared.mqtt
            && pump.due(n, offset, &mut rng, &stats)
        {
            pump_rate = (pump_rate + f64::from(u8::from(n % 60 == 0)) * 5.0).min(120.0);
            let body = format!(r#"{{"infusion_rate":{pump_rate},"occluded":false}}"#);
            let c = stats.of(Proto::Mqtt);
            match client.try_publish(
                target.topic(&pump.id),
                rumqttc::QoS::AtLeastOnce,
                false,
                body,
            ) {
                Ok(()) => {
                    c.sent.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "simulate: MQTT publish not queued");
                    stats.record(Proto::Mqtt, Outcome::Failed);
                }
            }
        }
    }
    if let Some(h) = registering {
        h.abort();
    }
    if let Some(thermo) = lwm2m {
        thermo.stop().await;
    }
}

/// A CoAP client over its own DTLS session to the gateway's `[coaps]` listener, with the PSK
/// the registry holds for `device` (see [`dtls_transport`]).
fn dtls_client(device: &str, plan: &Plan) -> Option<(CoapClient, SocketAddr)> {
    let (transport, target) = dtls_transport(device, plan)?;
    match CoapClient::over(transport, TransmissionConfig::default()) {
        Ok(c) => Some((c, target)),
        Err(e) => {
            tracing::error!(device, error = %e, "simulate: cannot start a CoAP client");
            None
        }
    }
}

/// A DTLS transport of its own, as the client of the gateway's `[coaps]` listener with the PSK
/// the registry holds for `device`, and that listener; `None` when there is no such listener or
/// no such PSK (or the socket cannot be bound, which is logged).
fn dtls_transport(device: &str, plan: &Plan) -> Option<(wardgate_dtls::DtlsTransport, SocketAddr)> {
    let (target, registry) = (plan.targets.coaps?, plan.targets.registry.clone()?);
    let identity = registry.get(device)?.psk?.identity;
    let key = registry.psk(&identity)?;
    let deps = wardgate_dtls::DtlsDeps {
        credentials: registry,
        audit: Arc::new(wardgate_core::NoAudit),
        metrics: wardgate_dtls::DtlsMetrics::default(),
        tap: None,
    };
    let transport = wardgate_dtls::DtlsTransport::bind(
        local_for(target),
        &wardgate_dtls::DtlsConfig::default(),
        deps,
    )
    .and_then(|t| {
        t.add_client(target, &identity, key)?;
        Ok(t)
    });
    match transport {
        Ok(t) => Some((t, target)),
        Err(e) => {
            tracing::error!(device, error = %e, "simulate: cannot start a DTLS client");
            None
        }
    }
}

async fn coap_send(
    (client, target, proto): (&CoapClient, SocketAddr, Proto),
    device: &str,
    class: Option<&str>,
    format: ContentFormat,
    payload: Vec<u8>,
    stats: &Stats,
) {
    let mut req = ClientRequest::post(format!("v1/readings/{device}"))
        .content_format(format.coap_number())
        .payload(payload);
    if let Some(c) = class {
        req = req.query(format!("class={c}"));
    }
    let outcome = match tokio::time::timeout(ANSWER_TIMEOUT, client.request(target, req)).await {
        Ok(Ok(r)) if r.is_success() => Outcome::Accepted,
        Ok(Ok(r)) => {
            tracing::debug!(device, code = %r.code(), "simulate: reading refused");
            Outcome::Refused
        }
        Ok(Err(e)) => {
            tracing::debug!(device, error = %e, "simulate: CoAP request failed");
            Outcome::Failed
        }
        Err(_) => Outcome::Failed,
    };
    stats.record(proto, outcome);
}

async fn https_send(
    client: &reqwest::Client,
    base: &str,
    device: &str,
    v: &Vitals,
    now: f64,
    stats: &Stats,
) {
    let body = senml::encode_json(&[
        record("systolic", "mmHg", v.systolic, now),
        record("diastolic", "mmHg", v.diastolic, now),
    ]);
    let r = client
        .post(format!("{base}/v1/devices/{device}/readings"))
        // Unchecked without a [registry]; with one, the gateway refuses it (401).
        .bearer_auth(format!("sim-{device}"))
        .header("content-type", "application/senml+json")
        .body(body)
        .send()
        .await;
    let outcome = match r {
        Ok(r) if r.status().is_success() => Outcome::Accepted,
        Ok(r) => {
            tracing::debug!(device, status = %r.status(), "simulate: HTTPS reading refused");
            Outcome::Refused
        }
        Err(e) => {
            tracing::debug!(device, error = %e, "simulate: HTTPS request failed");
            Outcome::Failed
        }
    };
    stats.record(Proto::Https, outcome);
}

/// A bed's LwM2M thermometer.
struct Lwm2mThermo {
    client: wardgate_lwm2m::sim::SimClient,
}

impl Lwm2mThermo {
    /// Starts the client `endpoint` (on `socket`, or on a UDP socket of its own) and registers.
    async fn start(
        endpoint: String,
        target: SocketAddr,
        socket: Option<Arc<dyn SimSocket>>,
        stats: Arc<Stats>,
    ) -> Option<Lwm2mThermo> {
        use wardgate_lwm2m::sim::{SimClient, SimConfig};
        let mut cfg = SimConfig::new(endpoint).auto_update();
        cfg.bind = local_for(target);
        let started = match socket {
            Some(socket) => Ok(SimClient::start_on(cfg, target, socket)),
            None => SimClient::start(cfg, target).await,
        };
        let client = match started {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "simulate: cannot start an LwM2M client");
                return None;
            }
        };
        match tokio::time::timeout(ANSWER_TIMEOUT * 2, client.register()).await {
            Ok(Ok(_)) => Some(Lwm2mThermo { client }),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "simulate: an LwM2M client could not register");
                stats.record(Proto::Lwm2m, Outcome::Refused);
                None
            }
            Err(_) => {
                stats.record(Proto::Lwm2m, Outcome::Failed);
                None
            }
        }
    }

    async fn send(&self, temp: f64, stats: &Stats) {
        use wardgate_lwm2m::{Entry, Format, Path, Value};
        let path = Path::resource(3303, 0, 5700);
        if let Err(e) = self.client.set(path, Value::Float(temp)) {
            tracing::debug!(error = %e, "simulate: LwM2M value not set");
        }
        let entry = Entry {
            path,
            value: Value::Float(temp),
            time: Some(epoch_seconds(SystemTime::now())),
        };
        let outcome = match tokio::time::timeout(
            ANSWER_TIMEOUT,
            self.client.send(&[entry], Format::SenmlJson),
        )
        .await
        {
            Ok(Ok(r)) if r.code.is_success() => Outcome::Accepted,
            Ok(Ok(_)) => Outcome::Refused,
            Ok(Err(_)) | Err(_) => Outcome::Failed,
        };
        stats.record(Proto::Lwm2m, outcome);
    }

    async fn stop(self) {
        let _ = tokio::time::timeout(ANSWER_TIMEOUT, self.client.deregister()).await;
    }
}
