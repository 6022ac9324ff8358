//! Split mode (`wardgate run --only <part>`) as processes on loopback: a `coap` part and an
//! `uplinks` part exchanging readings over a real Mosquitto bus, delivering to a second Mosquitto
//! upstream. The promise under test: a reading the device saw acknowledged reaches the backend,
//! under the id the device was given, whichever part is killed with `kill -9` and when.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{
    ChildGuard, Mosquitto, Subscriber, WARDGATE, free_tcp_port, free_udp_port, http_get, load,
    schema, valid_reading, wait_for,
};

/// One part of the split gateway: the same `gateway.toml` for every part, its own HTTP port.
struct Part {
    name: &'static str,
    config: PathBuf,
    http: SocketAddr,
    log: PathBuf,
    child: Option<ChildGuard>,
}

impl Part {
    fn start(dir: &Path, name: &'static str) -> Part {
        Part::start_with(&dir.join("gateway.toml"), name)
    }

    /// A part reading `config`; its log is beside it, named after the config and the part.
    fn start_with(config: &Path, name: &'static str) -> Part {
        let stem = config.file_stem().unwrap().to_string_lossy().into_owned();
        let mut p = Part {
            name,
            config: config.to_owned(),
            http: SocketAddr::from(([127, 0, 0, 1], free_tcp_port())),
            log: config.with_file_name(format!("{stem}-{name}.log")),
            child: None,
        };
        p.restart();
        p
    }

    /// Starts the process (again) and waits until it is ready (`/readyz`: for `uplinks`, the
    /// bus subscription is in place and the upstream connected; for `coap`, the bus connected).
    fn restart(&mut self) {
        self.child.take();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(WARDGATE)
            .args(["run", "--only", self.name, "--config"])
            .arg(&self.config)
            .env("WG_HTTP", self.http.to_string())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn wardgate");
        self.child = Some(ChildGuard(child));
        // A NATS cluster elects its JetStream leaders before the first MQTT session can exist.
        let deadline = Instant::now() + Duration::from_secs(60);
        while http_get(self.http, "/readyz").is_none_or(|(s, _)| s != 200) {
            let exited = self.child.as_mut().and_then(|c| c.0.try_wait().unwrap());
            assert!(exited.is_none(), "{} exited: {}", self.name, self.log());
            assert!(
                Instant::now() < deadline,
                "{} not ready: {}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn kill(&mut self) {
        if let Some(mut g) = self.child.take() {
            let _ = g.0.kill();
            let _ = g.0.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The one configuration every part reads.
fn write_config(dir: &Path, coap: SocketAddr, bus: &Mosquitto, cloud: &Mosquitto) {
    write_gateway(
        &dir.join("gateway.toml"),
        "ward-split",
        coap,
        &bus.url(),
        &cloud.url(),
        "",
    );
}

/// A gateway's configuration at `path` (its outbox files beside it); `split` adds lines to
/// `[split]`.
fn write_gateway(path: &Path, id: &str, coap: SocketAddr, bus: &str, cloud: &str, split: &str) {
    std::fs::write(
        path,
        format!(
            r#"
[gateway]
id = "{id}"
[coap]
listen = ["{coap}"]
[http]
listen = "${{WG_HTTP}}"
[store]
path = "{dir}/{id}-outbox.db"
[split]
broker = "{bus}"
{split}
[[uplinks]]
type = "mqtt"
name = "cloud"
url = "{cloud}"
reconnect_min = "50ms"
reconnect_max = "500ms"
"#,
            dir = path.parent().unwrap().display(),
        ),
    )
    .unwrap();
}

/// Reads upstream readings until every id in `want` arrived or `timeout` passed: id -> copies.
fn delivered(
    sub: &Subscriber,
    want: &HashSet<String>,
    timeout: Duration,
) -> HashMap<String, usize> {
    let validator = schema();
    let deadline = Instant::now() + timeout;
    let mut seen: HashMap<String, usize> = HashMap::new();
    while !want.iter().all(|id| seen.contains_key(id)) && Instant::now() < deadline {
        let Some((topic, payload)) = sub.next(Duration::from_millis(500)) else {
            continue;
        };
        if topic.ends_with("/status") {
            continue;
        }
        let v = valid_reading(&validator, &payload);
        assert_eq!(
            v["protocol"], "coap",
            "the protocol the device used, not the bus"
        );
        *seen
            .entry(v["id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    seen
}

/// Runs load against the `coap` part, kills `victim` after `after`, restarts it, and returns the
/// ids the devices saw acknowledged.
fn load_and_kill(
    coap: SocketAddr,
    victim: &mut Part,
    after: Duration,
    prefix: &str,
) -> HashSet<String> {
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let prefix = prefix.to_owned();
    let loader = std::thread::spawn(move || {
        load::run_as(
            &prefix,
            coap,
            1_000_000,
            32,
            Duration::from_secs(30),
            &|| s2.load(Ordering::SeqCst),
        )
    });
    std::thread::sleep(after);
    victim.kill();
    // A little more load while the victim is down (the coap part then answers nothing; the
    // uplinks part being down must not stop the coap part from acknowledging).
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    let report = loader.join().unwrap();
    victim.restart();
    report.acked.into_iter().map(|(_, id)| id).collect()
}

#[test]
fn a_split_gateway_delivers_every_acknowledged_reading_through_kills_of_either_part() {
    let bus = Mosquitto::start_persistent();
    let cloud = Mosquitto::start();
    let sub = Subscriber::start(cloud.port, "wardgate/#");
    let dir = tempfile::tempdir().unwrap();
    let coap_addr = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    write_config(dir.path(), coap_addr, &bus, &cloud);
    // The uplinks part subscribes first: its persistent session then holds what adapters
    // publish while it is away.
    let mut uplinks = Part::start(dir.path(), "uplinks");
    let mut coap = Part::start(dir.path(), "coap");
    assert!(
        dir.path().join("ward-split-outbox-coap.db").exists()
            && dir.path().join("ward-split-outbox-uplinks.db").exists(),
        "each part has its own outbox"
    );

    let mut acked = HashSet::new();
    for (trial, after) in [(0, 700), (1, 400), (2, 900)] {
        let first = load_and_kill(
            coap_addr,
            &mut coap,
            Duration::from_millis(after),
            &format!("c{trial}"),
        );
        assert!(
            !first.is_empty(),
            "trial {trial}: nothing acknowledged before killing coap"
        );
        acked.extend(first);
        let second = load_and_kill(
            coap_addr,
            &mut uplinks,
            Duration::from_millis(after),
            &format!("u{trial}"),
        );
        assert!(
            !second.is_empty(),
            "trial {trial}: nothing acknowledged before killing uplinks"
        );
        acked.extend(second);
    }
    let seen = delivered(&sub, &acked, Duration::from_secs(90));
    let lost: Vec<&String> = acked.iter().filter(|id| !seen.contains_key(*id)).collect();
    let duplicated = seen.values().filter(|n| **n > 1).count();
    println!(
        "split kill harness: acked {}, lost {}, duplicated {duplicated}, delivered ids {}",
        acked.len(),
        lost.len(),
        seen.len()
    );
    assert!(
        lost.is_empty(),
        "{} acknowledged readings never reached the backend, e.g. {:?}\n--- coap\n{}\n--- uplinks\n{}",
        lost.len(),
        lost.iter().take(5).collect::<Vec<_>>(),
        coap.log(),
        uplinks.log()
    );
    // What the uplinks part stored came from the bus (forwarded, not decoded again).
    let metrics = http_get(uplinks.http, "/metrics").unwrap().1;
    let ingested: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("wardgate_mqtt_ingest_readings_ingested_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(
        ingested >= 1.0,
        "the bus subscriber counts what it stored:\n{metrics}"
    );
}

#[test]
fn the_uplinks_part_refuses_what_is_not_a_reading_and_a_part_needs_its_adapter() {
    let bus = Mosquitto::start();
    let cloud = Mosquitto::start();
    let sub = Subscriber::start(cloud.port, "wardgate/#");
    let dir = tempfile::tempdir().unwrap();
    let coap_addr = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    write_config(dir.path(), coap_addr, &bus, &cloud);
    let uplinks = Part::start(dir.path(), "uplinks");
    // Anyone who can publish on the bus can try: a SenML payload, a reading under another
    // device's topic, and one good reading.
    let good = r#"{"schema":"wardgate.reading/1","id":"01JD0000000000000000000001","gateway":"ward-split","device":"bed-1","protocol":"coap","class":"vital","received_at":"2026-11-30T00:00:00.000Z","records":[{"n":"spo2","v":97.0,"t":1764460800.0}]}"#;
    for (topic, payload) in [
        (
            "wardgate/bus/readings/ward-split/vital/bed-1",
            r#"[{"n":"spo2","v":97}]"#,
        ),
        ("wardgate/bus/readings/ward-split/vital/bed-2", good),
        ("wardgate/bus/readings/ward-split/vital/bed-1", good),
    ] {
        let status = Command::new("mosquitto_pub")
            .args([
                "-p",
                &bus.port.to_string(),
                "-q",
                "1",
                "-t",
                topic,
                "-m",
                payload,
            ])
            .status()
            .unwrap();
        assert!(status.success());
    }
    let (topic, payload) = sub
        .collect(1, Duration::from_secs(20), |t| !t.ends_with("/status"))
        .pop()
        .expect("the good reading is delivered");
    assert_eq!(payload, good, "stored and delivered byte for byte");
    assert_eq!(topic, "wardgate/ward-split/bed-1/vital");
    wait_for("refusals to be counted", Duration::from_secs(10), || {
        let m = http_get(uplinks.http, "/metrics").unwrap().1;
        m.lines()
            .any(|l| {
                l.starts_with("wardgate_mqtt_ingest_messages_refused")
                    && l.contains("invalid")
                    && !l.ends_with(" 0")
            })
            .then_some(())
    });
    assert!(
        sub.next(Duration::from_millis(500))
            .is_none_or(|(t, _)| t.ends_with("/status")),
        "nothing else is delivered"
    );

    // `--only mqtt-in` without `[[ingest.mqtt]]`: refused at start, naming what is missing.
    let out = Command::new(WARDGATE)
        .args(["check-config", "--only", "mqtt-in", "--config"])
        .arg(dir.path().join("gateway.toml"))
        .env("WG_HTTP", "127.0.0.1:1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--only") && err.contains("[[ingest.mqtt]]"),
        "{err}"
    );
    let out = Command::new(WARDGATE)
        .args(["run", "--only", "lwm2m", "--config"])
        .arg(dir.path().join("gateway.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("coap, http-in, mqtt-in, uplinks"));
}

/// A three-node NATS cluster with JetStream and its MQTT listener: the bus of a split gateway
/// that must survive the loss of a node.
struct NatsCluster {
    /// Per node: its MQTT port, its monitoring port, the process, its client port.
    nodes: Vec<(u16, u16, Option<ChildGuard>, u16)>,
}

impl NatsCluster {
    const NATS: &'static str = "/usr/sbin/nats-server";

    fn start(dir: &Path) -> NatsCluster {
        common::require_tool(Self::NATS);
        let ports: Vec<[u16; 4]> = (0..3)
            .map(|_| {
                [
                    free_tcp_port(),
                    free_tcp_port(),
                    free_tcp_port(),
                    free_tcp_port(),
                ]
            })
            .collect();
        let mut nodes = Vec::new();
        for (i, [client, route, mqtt, monitor]) in ports.iter().enumerate() {
            let routes: Vec<String> = ports
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, p)| format!("nats-route://127.0.0.1:{}", p[1]))
                .collect();
            let conf = dir.join(format!("n{i}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "server_name: n{i}\nlisten: 127.0.0.1:{client}\nhttp: 127.0.0.1:{monitor}\n\
                     jetstream {{ store_dir: \"{store}\" }}\n\
                     cluster {{ name: wardgate-test, listen: 127.0.0.1:{route}, routes: [{routes}] }}\n\
                     mqtt {{ listen: 127.0.0.1:{mqtt}, stream_replicas: 3 }}\n",
                    store = dir.join(format!("js-n{i}")).display(),
                    routes = routes.join(", "),
                ),
            )
            .unwrap();
            let log = std::fs::File::create(dir.join(format!("n{i}.log"))).unwrap();
            let child = Command::new(Self::NATS)
                .arg("-c")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("spawn nats-server");
            nodes.push((*mqtt, *monitor, Some(ChildGuard(child)), *client));
        }
        let c = NatsCluster { nodes };
        // JetStream is usable once the cluster elected its meta leader.
        for (_, monitor, _, _) in &c.nodes {
            let addr = SocketAddr::from(([127, 0, 0, 1], *monitor));
            wait_for("a JetStream meta leader", Duration::from_secs(60), || {
                let (_, body) = http_get(addr, "/jsz")?;
                body.contains("\"meta_cluster\"")
                    .then_some(())
                    .filter(|()| body.contains("\"leader\""))
            });
        }
        c
    }

    /// The index of the node that is the JetStream meta leader now.
    fn meta_leader(&self) -> usize {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.nodes[0].1));
        wait_for("the meta leader's name", Duration::from_secs(30), || {
            let (_, body) = http_get(addr, "/jsz")?;
            let name = body
                .split("\"leader\":")
                .nth(1)?
                .split('"')
                .nth(1)?
                .to_owned();
            name.strip_prefix('n')?.parse().ok()
        })
    }

    fn mqtt_url(&self, node: usize) -> String {
        format!("mqtt://127.0.0.1:{}", self.nodes[node].0)
    }

    /// `[split.jetstream] servers`: every node's client URL, as a TOML array.
    fn nats_servers(&self) -> String {
        let urls: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("\"nats://127.0.0.1:{}\"", n.3))
            .collect();
        format!("[{}]", urls.join(", "))
    }

    fn kill(&mut self, node: usize) {
        if let Some(mut g) = self.nodes[node].2.take() {
            let _ = g.0.kill();
            let _ = g.0.wait();
        }
    }
}

#[test]
fn two_gateways_through_different_nodes_of_a_nats_cluster_lose_nothing_when_a_node_dies() {
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = NatsCluster::start(dir.path());
    println!("cluster up after {:?}", t0.elapsed());
    // The node to kill is the JetStream meta leader (the hardest loss: a new leader must be
    // elected while both gateways publish); the parts connect to the other two.
    let victim = cluster.meta_leader();
    let (first, second) = match victim {
        0 => (1, 2),
        1 => (0, 2),
        _ => (0, 1),
    };
    let cloud = Mosquitto::start();
    let sub = Subscriber::start(cloud.port, "wardgate/#");
    // The hub's uplinks part takes both wards' readings from the bus; each ward's coap part
    // publishes through its own node.
    let (coap_a, coap_b) = (
        SocketAddr::from(([127, 0, 0, 1], free_udp_port())),
        SocketAddr::from(([127, 0, 0, 1], free_udp_port())),
    );
    let unused = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let config = |name: &str, coap, node| {
        let path = dir.path().join(format!("{name}.toml"));
        write_gateway(&path, name, coap, &cluster.mqtt_url(node), &cloud.url(), "");
        path
    };
    let (hub, ward_a, ward_b) = (
        config("hub", unused, first),
        config("ward-a", coap_a, first),
        config("ward-b", coap_b, second),
    );
    let uplinks = Part::start_with(&hub, "uplinks");
    let parts = [
        Part::start_with(&ward_a, "coap"),
        Part::start_with(&ward_b, "coap"),
    ];

    let stop = Arc::new(AtomicBool::new(false));
    let loaders: Vec<_> = [("a", coap_a), ("b", coap_b)]
        .into_iter()
        .map(|(prefix, target)| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                load::run_as(
                    prefix,
                    target,
                    1_000_000,
                    8,
                    Duration::from_secs(30),
                    &|| stop.load(Ordering::SeqCst),
                )
            })
        })
        .collect();
    println!("parts ready after {:?}", t0.elapsed());
    std::thread::sleep(Duration::from_millis(1500));
    cluster.kill(victim);
    std::thread::sleep(Duration::from_millis(2500));
    stop.store(true, Ordering::SeqCst);
    let mut acked = HashSet::new();
    for (l, who) in loaders.into_iter().zip(["ward-a", "ward-b"]) {
        let report = l.join().unwrap();
        assert!(!report.acked.is_empty(), "{who}: nothing acknowledged");
        acked.extend(report.acked.into_iter().map(|(_, id)| id));
    }
    println!("load done after {:?}", t0.elapsed());
    let seen = delivered(&sub, &acked, Duration::from_secs(120));
    let lost: Vec<&String> = acked.iter().filter(|id| !seen.contains_key(*id)).collect();
    println!(
        "NATS cluster, meta leader n{victim} killed mid-run: acked {} \
         (two gateways), lost {}, duplicated {}, all delivered after {:?}",
        acked.len(),
        lost.len(),
        seen.values().filter(|n| **n > 1).count(),
        t0.elapsed()
    );
    assert!(
        lost.is_empty(),
        "{} acknowledged readings lost, e.g. {:?}\n--- hub\n{}\n--- ward-a\n{}",
        lost.len(),
        lost.iter().take(5).collect::<Vec<_>>(),
        uplinks.log(),
        parts[0].log()
    );
}

/// The sum of a counter's samples in a part's /metrics.
fn counter(part: &Part, name: &str) -> f64 {
    http_get(part.http, "/metrics")
        .map(|(_, m)| {
            m.lines()
                .filter(|l| l.starts_with(name))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        })
        .unwrap_or(0.0)
}

#[test]
fn two_uplinks_workers_share_the_bus_and_a_killed_one_loses_nothing() {
    let bus = Mosquitto::start_persistent();
    let cloud = Mosquitto::start();
    let sub = Subscriber::start(cloud.port, "wardgate/#");
    let dir = tempfile::tempdir().unwrap();
    let coap = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let unused = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let config = |name: &str, coap, split: &str| {
        let path = dir.path().join(format!("{name}.toml"));
        write_gateway(&path, name, coap, &bus.url(), &cloud.url(), split);
        path
    };
    let shared = "shared_group = \"hub\"";
    let mut workers = [
        Part::start_with(&config("hub-1", unused, shared), "uplinks"),
        Part::start_with(&config("hub-2", unused, shared), "uplinks"),
    ];
    let ward = Part::start_with(&config("ward", coap, ""), "coap");

    let (stop, loader, shares) = load_until_both_take(
        coap,
        &workers,
        "wardgate_mqtt_ingest_readings_ingested_total",
    );
    workers[1].kill();
    std::thread::sleep(Duration::from_millis(1000));
    let acked = stop_load(&stop, loader);
    workers[1].restart();
    // Shared, not copied (each worker does not get every reading): the only copies are the
    // at-least-once redeliveries of what the killed worker had made durable but not yet
    // acknowledged, at most its window (`[split] max_inflight`, 256).
    assert_shared("shared bus", &sub, &acked, shares, &workers, &ward, 256);
}

#[test]
fn uplinks_workers_share_a_jetstream_consumer_and_lose_nothing_when_a_worker_and_a_node_die() {
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = NatsCluster::start(dir.path());
    // The node killed is the JetStream meta leader; the ward publishes through another one. The
    // workers know all three and are wherever their client put them.
    let victim = cluster.meta_leader();
    let ward_node = (victim + 1) % 3;
    let cloud = Mosquitto::start();
    let sub = Subscriber::start(cloud.port, "wardgate/#");
    let coap = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let unused = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let bus = cluster.mqtt_url(ward_node);
    let config = |name: &str, coap, split: &str| {
        let path = dir.path().join(format!("{name}.toml"));
        write_gateway(&path, name, coap, &bus, &cloud.url(), split);
        path
    };
    let jetstream = format!(
        "[split.jetstream]\nservers = {}\nstream_replicas = 3\nack_wait = \"2s\"\n",
        cluster.nats_servers()
    );
    // The workers first: the stream and the shared consumer exist before the ward publishes.
    let mut workers = [
        Part::start_with(&config("hub-1", unused, &jetstream), "uplinks"),
        Part::start_with(&config("hub-2", unused, &jetstream), "uplinks"),
    ];
    let ward = Part::start_with(&config("ward", coap, ""), "coap");
    println!("parts ready after {:?}", t0.elapsed());

    let stored = "wardgate_bus_jetstream_readings_total{outcome=\"stored\"}";
    let (stop, loader, shares) = load_until_both_take(coap, &workers, stored);
    // A worker dies holding readings it has not acknowledged, and a node of the cluster dies.
    workers[1].kill();
    cluster.kill(victim);
    std::thread::sleep(Duration::from_millis(1500));
    let acked = stop_load(&stop, loader);
    // What hub-2 had taken but not made durable goes to hub-1 after ack_wait; what it had made
    // durable (and acknowledged) is in its outbox, delivered once it runs again.
    workers[1].restart();
    // Shared, not copied: the only copies are at-least-once redeliveries of what was durable
    // at a worker but not acknowledged (the consumer's window, `max_inflight` 256, once for
    // the killed worker and once for acknowledgements lost with the killed node).
    let label =
        format!("JetStream consumer shared by two workers, one worker and node n{victim} killed");
    assert_shared(&label, &sub, &acked, shares, &workers, &ward, 2 * 256);
    println!("all delivered after {:?}", t0.elapsed());
}

/// Waits for every acknowledged reading at the backend and checks that two workers sharing the
/// bus lost none and copied at most `max_copies` (`shares`: what each had taken before the
/// kill), with the parts' logs when not.
fn assert_shared(
    label: &str,
    sub: &Subscriber,
    acked: &HashSet<String>,
    shares: [f64; 2],
    workers: &[Part; 2],
    ward: &Part,
    max_copies: usize,
) {
    let seen = delivered(sub, acked, Duration::from_secs(120));
    let lost: Vec<&String> = acked.iter().filter(|id| !seen.contains_key(*id)).collect();
    let duplicated = seen.values().filter(|n| **n > 1).count();
    println!(
        "{label}: acked {}, taken before the kill by the workers {} and {}, lost {}, duplicated {duplicated}",
        acked.len(),
        shares[0],
        shares[1],
        lost.len()
    );
    assert!(
        lost.is_empty(),
        "{} acknowledged readings lost, e.g. {:?}\n--- worker 1\n{}\n--- worker 2\n{}\n--- ward\n{}",
        lost.len(),
        lost.iter().take(5).collect::<Vec<_>>(),
        workers[0].log(),
        workers[1].log(),
        ward.log()
    );
    assert!(
        duplicated <= max_copies,
        "{duplicated} of {} readings came more than once",
        acked.len()
    );
}

/// Starts load against the ward's `coap` part and waits until both workers took readings (by
/// their counter `taken`): the load's stop flag and thread, and what each worker had taken.
fn load_until_both_take(
    coap: SocketAddr,
    workers: &[Part; 2],
    taken: &str,
) -> (
    Arc<AtomicBool>,
    std::thread::JoinHandle<load::LoadReport>,
    [f64; 2],
) {
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let loader = std::thread::spawn(move || {
        load::run(coap, 1_000_000, 16, Duration::from_secs(30), &|| {
            s2.load(Ordering::SeqCst)
        })
    });
    wait_for(
        "both workers to take readings",
        Duration::from_secs(30),
        || (workers.iter().all(|w| counter(w, taken) >= 1.0)).then_some(()),
    );
    (
        stop,
        loader,
        [counter(&workers[0], taken), counter(&workers[1], taken)],
    )
}

/// Stops the load of [`load_until_both_take`]: the ids the devices saw acknowledged.
fn stop_load(
    stop: &AtomicBool,
    loader: std::thread::JoinHandle<load::LoadReport>,
) -> HashSet<String> {
    stop.store(true, Ordering::SeqCst);
    loader
        .join()
        .unwrap()
        .acked
        .into_iter()
        .map(|(_, id)| id)
        .collect()
}
