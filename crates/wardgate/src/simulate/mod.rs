//! `wardgate simulate`: a virtual ward of beds whose devices send a gateway realistic vital
//! signs over every southbound protocol it has on, with occasional alarms and sensor dropouts,
//! optional attack traffic for the traffic monitor, live progress in the terminal and a summary
//! at the end. `wardgate run --demo` runs the same ward, quietly, against itself.
//!
//! Each bed has a patient ([`ward::Patient`]) and up to six devices, named `bed-NN-<kind>`:
//! - `spo2`: SpO2 and pulse rate, CoAP, SenML JSON, every second; an `alarm`-class reading
//!   while SpO2 is below 90 % (a desaturation episode, on average every `alarm_every`);
//! - `temp`: body temperature, CoAP, SenML CBOR, every 5 s;
//! - `resp`: heart and respiratory rate, CoAP, a plain JSON object, every 2 s;
//! - `thermo`: an LwM2M client (`wardgate_lwm2m::sim`) that registers and Sends its temperature
//!   object (`/3303/0/5700`) every 5 s (when the gateway's LwM2M server is on);
//! - `bp`: blood pressure over HTTPS ingest, every 10 s (when `[ingest.http]` is on);
//! - `pump`: an infusion pump publishing its rate to the sensors' MQTT broker every 5 s (when
//!   an `[[ingest.mqtt]]` subscriber with an `mqtt://` broker is configured).
//!
//! Every device but the LwM2M one drops out now and then (silent for 10-40 s, on average once
//! every `dropout_every`), as a probe slipping off a finger does.
//!
//! With `attack`, a second source address (`attack_from`, by default `127.0.0.66`, which
//! `[[monitor.flows.labels]]` can label `attack`) scans resources (4.04s), claims the reserved
//! `security` class (4.03s) and sends malformed datagrams, at most [`attack::PER_SECOND`]
//! packets a second.
//!
//! Credentials come from the gateway's own device registry (`[registry] path`), so a ward can be
//! simulated against a gateway that authenticates its devices:
//! - a CoAP device the registry gives a PSK (`[device.psk]`) sends over CoAP over DTLS
//!   (`[coaps]`, PSK_AES128_CCM_8, its own session through `wardgate_dtls::DtlsTransport` as a
//!   client), counted as `coaps`; the others send plain CoAP. The LwM2M thermometer likewise
//!   registers over DTLS when it has a PSK (counted under `lwm2m`);
//! - the `bp` device presents the bearer token `sim-<device id>`, which a registry can list by
//!   its SHA-256.
//!
//! `wardgate simulate --print-devices` writes such a registry for the ward (random PSKs). The
//! MQTT pumps are not authenticated by the gateway (their broker does that).

mod attack;
mod devices;
mod progress;
pub(crate) mod ward;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use wardgate_core::Shutdown;

pub(crate) use progress::main;

/// What to simulate, and against what.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// Beds (1..=[`MAX_BEDS`]).
    pub(crate) beds: u32,
    /// Stop after this long (`None`: until Ctrl-C).
    pub(crate) duration: Option<Duration>,
    /// Seed of every random choice (the same seed gives the same ward).
    pub(crate) seed: u64,
    /// Mean time between a patient's desaturation episodes (`None`: never).
    pub(crate) alarm_every: Option<Duration>,
    /// Mean time between a device's dropouts (`None`: never).
    pub(crate) dropout_every: Option<Duration>,
    /// Where the devices send.
    pub(crate) targets: Targets,
    /// Attack traffic from this address, when set.
    pub(crate) attack_from: Option<IpAddr>,
}

/// Most beds a run may have.
pub(crate) const MAX_BEDS: u32 = 500;

/// The gateway's southbound endpoints the devices use.
#[derive(Debug, Clone, Default)]
pub(crate) struct Targets {
    /// Plain CoAP.
    pub(crate) coap: Option<SocketAddr>,
    /// CoAP over DTLS (used by the devices `registry` has a PSK for).
    pub(crate) coaps: Option<SocketAddr>,
    /// The gateway's device registry: the PSKs of the `coaps` devices.
    pub(crate) registry: Option<Arc<wardgate_registry::Registry>>,
    /// LwM2M clients register over the CoAP target.
    pub(crate) lwm2m: bool,
    /// HTTPS (or plain HTTP) ingest.
    pub(crate) https: Option<HttpsTarget>,
    /// The sensors' MQTT broker.
    pub(crate) mqtt: Option<MqttTarget>,
}

/// HTTPS ingest.
#[derive(Debug, Clone)]
pub(crate) struct HttpsTarget {
    /// `https://127.0.0.1:8444` (or `http://` without TLS).
    pub(crate) base: String,
    /// The CA (or self-signed certificate) the server's certificate is checked against.
    pub(crate) ca: Option<PathBuf>,
}

/// The sensors' broker and where a device publishes.
#[derive(Debug, Clone)]
pub(crate) struct MqttTarget {
    /// Broker host.
    pub(crate) host: String,
    /// Broker port.
    pub(crate) port: u16,
    /// The subscriber's topic filter and the level that holds the device id.
    pub(crate) filter: String,
    /// 1-based.
    pub(crate) device_level: usize,
}

impl MqttTarget {
    /// The topic `device` publishes to: the filter with the device at its level and every
    /// other wildcard filled in.
    pub(crate) fn topic(&self, device: &str) -> String {
        let mut levels: Vec<String> = Vec::new();
        for (i, level) in self.filter.split('/').enumerate() {
            if i + 1 == self.device_level {
                levels.push(device.to_owned());
            } else if level == "#" {
                if levels.len() + 1 < self.device_level {
                    while levels.len() + 1 < self.device_level {
                        levels.push("sim".into());
                    }
                    levels.push(device.to_owned());
                } else {
                    levels.push("sim".into());
                }
            } else if level == "+" {
                levels.push("sim".into());
            } else {
                levels.push(level.to_owned());
            }
        }
        levels.join("/")
    }
}

/// Loopback for an unspecified address (a gateway listening on all interfaces).
pub(crate) fn reachable(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(v) if v.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v) if v.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

impl Targets {
    /// The endpoints `cfg` turns on.
    pub(crate) fn of(cfg: &wardgate_config::GatewayConfig, https_ca: Option<PathBuf>) -> Targets {
        let coap = cfg
            .coap
            .enabled
            .then(|| cfg.coap.listen.first().copied().map(reachable))
            .flatten();
        let https = cfg.ingest.http.enabled.then(|| {
            let addr = reachable(cfg.ingest.http.listen);
            match &cfg.ingest.http.tls {
                Some(tls) => HttpsTarget {
                    base: format!("https://{addr}"),
                    ca: https_ca.clone().or_else(|| Some(tls.cert_file.clone())),
                },
                None => HttpsTarget {
                    base: format!("http://{addr}"),
                    ca: None,
                },
            }
        });
        let coaps = cfg
            .coaps
            .enabled
            .then(|| cfg.coaps.listen.first().copied().map(reachable))
            .flatten();
        let mqtt = cfg.ingest.mqtt.iter().find_map(|m| {
            let rest = m.url.strip_prefix("mqtt://")?;
            // Validation refuses user info in the URL: host[:port] up to the path.
            let hostport = rest.split('/').next()?;
            let (host, port) = match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), p.parse().ok()?),
                None => (hostport.to_owned(), 1883),
            };
            let t = m.topics.first()?;
            Some(MqttTarget {
                host,
                port,
                filter: t.filter.clone(),
                device_level: t.device_level,
            })
        });
        Targets {
            coap,
            coaps,
            registry: None,
            lwm2m: (coap.is_some() || coaps.is_some()) && cfg.lwm2m.enabled,
            https,
            mqtt,
        }
    }

    /// Loads the gateway's device registry (`[registry] path`, already resolved against the
    /// configuration's directory), for the PSKs of the `coaps` devices.
    pub(crate) fn load_registry(
        &mut self,
        cfg: &wardgate_config::GatewayConfig,
    ) -> anyhow::Result<()> {
        if let Some(path) = &cfg.registry.path {
            let registry = wardgate_registry::Registry::load(
                path.clone(),
                Arc::new(wardgate_core::NoAudit),
                wardgate_registry::RegistryMetrics::default(),
            )
            .with_context(|| format!("device registry {}", path.display()))?;
            self.registry = Some(Arc::new(registry));
        }
        Ok(())
    }

    /// Whether any device has somewhere to send.
    pub(crate) fn any(&self) -> bool {
        self.coap.is_some()
            || (self.coaps.is_some() && self.registry.is_some())
            || self.https.is_some()
            || self.mqtt.is_some()
    }
}

/// The protocols, in the summary's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Proto {
    Coap,
    Coaps,
    Lwm2m,
    Https,
    Mqtt,
}

impl Proto {
    pub(crate) const ALL: [Proto; 5] = [
        Proto::Coap,
        Proto::Coaps,
        Proto::Lwm2m,
        Proto::Https,
        Proto::Mqtt,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Proto::Coap => "coap",
            Proto::Coaps => "coaps",
            Proto::Lwm2m => "lwm2m",
            Proto::Https => "https",
            Proto::Mqtt => "mqtt",
        }
    }
}

/// One protocol's counts.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    /// Readings sent.
    pub(crate) sent: AtomicU64,
    /// Acknowledged as stored (2.01/2.04, 201; for MQTT the broker's PUBACK).
    pub(crate) accepted: AtomicU64,
    /// Answered with a refusal (4.xx, 5.xx, a 4xx/5xx status).
    pub(crate) refused: AtomicU64,
    /// No answer in time, or no connection.
    pub(crate) failed: AtomicU64,
}

/// Everything counted during a run. Shared by every device task.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    per: [Counts; 5],
    /// Alarm-class readings sent.
    pub(crate) alarms: AtomicU64,
    /// Dropouts begun.
    pub(crate) dropouts: AtomicU64,
    /// Attack packets sent.
    pub(crate) attack_sent: AtomicU64,
    /// Attack packets the gateway answered (with an error, one hopes).
    pub(crate) attack_answered: AtomicU64,
}

/// How one send ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Accepted,
    Refused,
    Failed,
}

impl Stats {
    pub(crate) fn of(&self, p: Proto) -> &Counts {
        &self.per[p as usize]
    }

    pub(crate) fn record(&self, p: Proto, outcome: Outcome) {
        let c = self.of(p);
        c.sent.fetch_add(1, Ordering::Relaxed);
        match outcome {
            Outcome::Accepted => &c.accepted,
            Outcome::Refused => &c.refused,
            Outcome::Failed => &c.failed,
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    fn total(&self, f: impl Fn(&Counts) -> &AtomicU64) -> u64 {
        self.per.iter().map(|c| f(c).load(Ordering::Relaxed)).sum()
    }

    pub(crate) fn sent(&self) -> u64 {
        self.total(|c| &c.sent)
    }

    pub(crate) fn accepted(&self) -> u64 {
        self.total(|c| &c.accepted)
    }

    pub(crate) fn refused(&self) -> u64 {
        self.total(|c| &c.refused)
    }

    pub(crate) fn failed(&self) -> u64 {
        self.total(|c| &c.failed)
    }
}

/// Runs the ward until `plan.duration` passes or `stop` is cancelled; every device task is
/// finished (LwM2M clients de-registered) when it returns.
pub(crate) async fn run(plan: Plan, stats: Arc<Stats>, stop: Shutdown) {
    let plan = Arc::new(plan);
    let ends = stop.child_token();
    if let Some(d) = plan.duration {
        let ends = ends.clone();
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            ends.cancel();
        });
    }
    let mut tasks = tokio::task::JoinSet::new();
    let shared = match devices::Shared::new(&plan, stats.clone(), ends.clone()).await {
        Ok(s) => Arc::new(s),
        Err(e) => {
            tracing::error!("simulate: {e:#}");
            return;
        }
    };
    for bed in 1..=plan.beds {
        tasks.spawn(devices::bed(
            bed,
            plan.clone(),
            shared.clone(),
            stats.clone(),
            ends.clone(),
        ));
    }
    if let (Some(from), Some(target)) = (plan.attack_from, plan.targets.coap) {
        tasks.spawn(attack::run(
            from,
            target,
            plan.seed,
            stats.clone(),
            ends.clone(),
        ));
    }
    while tasks.join_next().await.is_some() {}
    ends.cancel();
    shared.close().await;
}

/// The CoAP devices of a bed (the ones a PSK moves to DTLS).
pub(crate) const COAP_KINDS: [&str; 3] = ["spo2", "temp", "resp"];

/// `wardgate simulate --print-devices`: a `devices.toml` for a ward of `beds` beds. Each CoAP
/// device gets a random 16-byte PSK (identity = its id) and may use `coaps` only, the LwM2M
/// thermometer likewise with `lwm2ms`; the `bp`
/// device gets the token `sim-<id>` the simulator presents (by its SHA-256), on `https` and on
/// plain `http` (a loopback test ingest). The MQTT pumps are not listed: the sensors' broker
/// authenticates those.
pub(crate) fn devices_toml(beds: u32) -> String {
    use std::fmt::Write as _;
    let mut out = String::from(
        "# devices.toml for `wardgate simulate`, written by `wardgate simulate --print-devices`.\n\
         # It holds the simulated devices' keys: keep it private (mode 0600), never reuse them.\n\
         # The CoAP devices and LwM2M thermometers send over DTLS when the gateway has [coaps] on\n\
         # and this file as its [registry] path.\n",
    );
    for bed in 1..=beds {
        let psk_devices = COAP_KINDS
            .iter()
            .map(|k| (*k, "coaps"))
            .chain([("thermo", "lwm2ms")]);
        for (kind, protocol) in psk_devices {
            let key: [u8; 16] = rand::random();
            let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
            let _ = write!(
                out,
                "\n[[device]]\nid = \"bed-{bed:02}-{kind}\"\nprotocols = [\"{protocol}\"]\n\
                 [device.psk]\nidentity = \"bed-{bed:02}-{kind}\"\nkey = \"hex:{hex}\"\n"
            );
        }
        let id = format!("bed-{bed:02}-bp");
        let digest = ring::digest::digest(&ring::digest::SHA256, format!("sim-{id}").as_bytes());
        let sha: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        let _ = write!(
            out,
            "\n[[device]]\nid = \"{id}\"\nprotocols = [\"https\", \"http\"]\n\
             [[device.token]]\nid = \"sim\"\nsha256 = \"{sha}\"\n"
        );
    }
    out
}

/// The ward `wardgate run --demo` runs against its own CoAP endpoint: two beds, an alarm now and
/// then, no attack.
pub(crate) fn demo_plan(coap: SocketAddr, lwm2m: bool) -> Plan {
    Plan {
        beds: 2,
        duration: None,
        seed: rand::random(),
        alarm_every: Some(Duration::from_secs(180)),
        dropout_every: Some(Duration::from_secs(900)),
        targets: Targets {
            coap: Some(coap),
            lwm2m,
            ..Targets::default()
        },
        attack_from: None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn an_mqtt_device_publishes_where_the_subscriber_reads_its_id() {
        let t = |filter: &str, level| MqttTarget {
            host: "h".into(),
            port: 1883,
            filter: filter.into(),
            device_level: level,
        };
        assert_eq!(t("ward/+/senml", 2).topic("bed-1"), "ward/bed-1/senml");
        assert_eq!(t("ward/+/+/json", 3).topic("bed-1"), "ward/sim/bed-1/json");
        assert_eq!(t("sensors/#", 2).topic("bed-1"), "sensors/bed-1");
        assert_eq!(t("sensors/#", 3).topic("bed-1"), "sensors/sim/bed-1");
    }

    #[test]
    fn targets_follow_the_configuration() {
        let cfg = wardgate_config::parse(
            r#"
[coap]
listen = ["0.0.0.0:5999"]
[ingest.http]
enabled = true
listen = "127.0.0.1:8999"
[[ingest.mqtt]]
name = "ward"
url = "mqtt://10.0.0.5:1884"
client_id = "gw"
[[ingest.mqtt.topics]]
filter = "ward/+/data"
device_level = 2
[[uplinks]]
type = "file"
name = "out"
path = "/dev/null"
"#,
            &|_| None,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let t = Targets::of(&cfg, None);
        assert_eq!(t.coap, Some("127.0.0.1:5999".parse().unwrap()));
        assert!(t.lwm2m);
        let h = t.https.unwrap();
        assert_eq!((h.base.as_str(), h.ca), ("http://127.0.0.1:8999", None));
        let m = t.mqtt.unwrap();
        assert_eq!((m.host.as_str(), m.port), ("10.0.0.5", 1884));
        assert_eq!(m.topic("bed-01-pump"), "ward/bed-01-pump/data");
    }
}
