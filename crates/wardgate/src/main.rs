//! The `wardgate` binary: CLI, config loading, wiring, supervision, graceful shutdown.
//!
//! Exit codes: 0 clean shutdown; 64 (EX_USAGE) invalid configuration; 65 (EX_DATAERR) corrupt
//! outbox (see `wardgate store recover`); 1 any other start-up or runtime failure, or an audit
//! trail that `wardgate audit verify` found damaged. Command-line usage errors exit 64 too.
#![forbid(unsafe_code)]

mod anomalies;
mod audit_cmd;
mod demo;
mod file_uplink;
mod jetstream;
mod monitor_cmd;
mod probe;
mod quarantine;
mod run;
mod simulate;
mod steer;
mod telemetry;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// IoMT edge gateway: CoAP/LwM2M/MQTT/HTTPS sensors in, durable normalized JSON to the cloud.
#[derive(Debug, Parser)]
#[command(name = "wardgate", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway.
    #[command(after_help = "Examples:\n  \
        wardgate run --demo                      # embedded defaults, a simulated ward, the status page\n  \
        wardgate run --config /etc/wardgate/gateway.toml\n  \
        WARDGATE_ONLY=coap wardgate run          # one part of a split gateway (docs/scale-out.md)")]
    Run {
        /// Configuration file.
        #[arg(long, short, default_value = "gateway.toml", env = "WARDGATE_CONFIG")]
        config: PathBuf,
        /// Also start simulated ward sensors (SpO2, heart rate, temperature) that send CoAP
        /// readings to this gateway, so the whole flow is visible at once.
        #[arg(long)]
        demo: bool,
        /// Run one part of a split gateway (one container per adapter): `coap` (CoAP, CoAP over
        /// DTLS, LwM2M), `http-in`, `mqtt-in`, or `uplinks` (the outbox of record and the
        /// uplinks). The parts exchange readings through the `[split]` broker.
        #[arg(long, env = "WARDGATE_ONLY")]
        only: Option<wardgate_config::Part>,
    },
    /// Validate a configuration file, report every problem, bind nothing.
    #[command(after_help = "Examples:\n  \
        wardgate check-config --config gateway.toml\n  \
        wardgate check-config --only uplinks     # as the uplinks part of a split gateway reads it\n  \
        wardgate check-config --monitor --config monitor.toml\n\n\
        Every problem is listed with its line, its key and what to write instead; exit 64 if any.")]
    CheckConfig {
        /// Configuration file.
        #[arg(long, short, default_value = "gateway.toml", env = "WARDGATE_CONFIG")]
        config: PathBuf,
        /// Check the configuration of one part of a split gateway (one container per adapter): `coap` (CoAP, CoAP over
        /// DTLS, LwM2M), `http-in`, `mqtt-in`, or `uplinks` (the outbox of record and the
        /// uplinks). The parts exchange readings through the `[split]` broker.
        #[arg(long, env = "WARDGATE_ONLY")]
        only: Option<wardgate_config::Part>,
        /// Check it as `wardgate monitor` reads it (interface capture mode: no `[[uplinks]]`
        /// needed).
        #[arg(long, conflicts_with = "only")]
        monitor: bool,
    },
    /// Print a complete `gateway.toml` with every option, its default and its documentation
    /// (options commented out at their defaults; it runs as it is, readings on stdout), or with
    /// `--reference` the configuration reference in Markdown (`docs/configuration.md`).
    #[command(after_help = "Examples:\n  \
        wardgate generate-config > gateway.toml  # then uncomment and change what you need\n  \
        wardgate generate-config --reference > docs/configuration.md")]
    GenerateConfig {
        /// The Markdown reference instead of a configuration file.
        #[arg(long)]
        reference: bool,
    },
    /// Ask a running gateway whether it is ready (`GET /readyz`): exit 0 if it answers 200, 1
    /// otherwise. For container health checks, where no curl is installed.
    #[command(after_help = "Examples:\n  \
        wardgate probe                           # GET /readyz on 127.0.0.1:8080\n  \
        wardgate probe --path /healthz --addr 10.0.4.2:8080")]
    Probe {
        /// Address of the gateway's `[http]` listener.
        #[arg(long, default_value = "127.0.0.1:8080", env = "WARDGATE_PROBE_ADDR")]
        addr: String,
        /// Path to ask (`/healthz` for liveness).
        #[arg(long, default_value = "/readyz")]
        path: String,
    },
    /// Interface capture mode: the traffic monitor apart from the gateway. Reads a network
    /// interface or a mirrored switch port (AF_PACKET; needs CAP_NET_RAW) and writes the
    /// pcapng captures (`[monitor.capture]`) and flow records (`[monitor.flows]`) of the
    /// CoAP and DTLS traffic on it, with /metrics on `[http]`.
    #[command(after_help = "Examples:\n  \
        wardgate monitor --config monitor.toml --interface eth1\n  \
        docker compose --profile monitor up      # the same, as a container on the host network")]
    Monitor {
        /// Configuration file (its `[monitor]`, `[http]` and `[log]` sections are used).
        #[arg(long, short, default_value = "gateway.toml", env = "WARDGATE_CONFIG")]
        config: PathBuf,
        /// The interface to read (overrides `[monitor.interface] name`).
        #[arg(long, short, env = "WARDGATE_MONITOR_INTERFACE")]
        interface: Option<String>,
    },
    /// Simulate a ward: beds of devices sending a running gateway realistic vital signs over
    /// every southbound protocol its configuration turns on (CoAP, LwM2M, HTTPS ingest, the
    /// sensors' MQTT broker), with desaturation alarms, sensor dropouts and optional attack
    /// traffic; live progress on stderr, a summary on stdout. Exit 1 if no reading was
    /// accepted.
    #[command(after_help = "Examples:\n  \
        wardgate simulate --beds 8 --duration 2m\n  \
        wardgate simulate --config gateway.toml --beds 40 --attack --seed 7\n  \
        wardgate simulate --coap 10.0.4.2:5683 --no-lwm2m --duration 30s\n  \
        wardgate simulate --beds 8 --print-devices > devices.toml  # then [registry] path and [coaps]\n\n\
        CoAP devices and LwM2M thermometers with a PSK in the gateway's registry ([registry] path)\n\
        send over DTLS ([coaps]).")]
    Simulate {
        /// The gateway's configuration file: where its endpoints are.
        #[arg(long, short, default_value = "gateway.toml", env = "WARDGATE_CONFIG")]
        config: PathBuf,
        /// Beds (1-500); each has up to six devices.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=i64::from(simulate::MAX_BEDS)))]
        beds: u32,
        /// Stop after this long (`90s`, `10m`); default: until Ctrl-C.
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<std::time::Duration>,
        /// Mean time between a patient's desaturation episodes (alarms); `0s`: none.
        #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
        alarm_every: std::time::Duration,
        /// Mean time between a sensor's dropouts; `0s`: none.
        #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
        dropout_every: std::time::Duration,
        /// Seed for every random choice (the same seed, the same ward).
        #[arg(long)]
        seed: Option<u64>,
        /// Also send attack traffic (resource scans, forged security-class readings,
        /// malformed datagrams) from `--attack-from`.
        #[arg(long)]
        attack: bool,
        /// Source address of the attack traffic (label its flows with
        /// `[[monitor.flows.labels]]`).
        #[arg(long, default_value = "127.0.0.66")]
        attack_from: std::net::IpAddr,
        /// Send CoAP (and LwM2M) here instead of the configuration's first `[coap] listen`:
        /// `HOST:PORT` (`10.0.4.2:5683`, `coap:5683` in a container network).
        #[arg(long, value_name = "HOST:PORT")]
        coap: Option<String>,
        /// Do not run the LwM2M thermometers.
        #[arg(long)]
        no_lwm2m: bool,
        /// CA certificate (PEM) to check the HTTPS ingest certificate against (default: the
        /// configuration's `[ingest.http.tls] cert_file`).
        #[arg(long)]
        https_ca: Option<PathBuf>,
        /// No progress line.
        #[arg(long, short)]
        quiet: bool,
        /// Print a `devices.toml` for this ward (`--beds`) and exit: a random PSK for each CoAP
        /// device and LwM2M thermometer (they then send over DTLS when `[coaps]` is on) and the
        /// HTTPS device's token hash. Keep it private: it holds the keys.
        #[arg(long)]
        print_devices: bool,
    },
    /// Outbox maintenance.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Audit trail tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Check audit files: every record's hash, the chain across records and rotated files,
    /// gap-free seq and (with --key) every MAC. Exit 0 if intact, 1 at the first problem.
    #[command(after_help = "Examples:\n  \
        wardgate audit verify wardgate-data/audit.log\n  \
        wardgate audit verify --key /etc/wardgate/audit.key --from-start wardgate-data/")]
    Verify {
        /// The HMAC key file the gateway signs with (`[audit] hmac_key_file`).
        #[arg(long)]
        key: Option<PathBuf>,
        /// Require the chain to start at seq 1 (no older rotated file was deleted).
        #[arg(long)]
        from_start: bool,
        /// Audit files or directories; several are read in order of their first seq.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum StoreCommand {
    /// Salvage every readable reading from a corrupt outbox into a fresh file; the damaged file
    /// is kept beside it as `<path>.corrupt-<unix-time>`.
    #[command(after_help = "Examples:\n  \
        wardgate store recover --config gateway.toml\n  \
        wardgate store recover --only uplinks    # the outbox of a split gateway's uplinks part")]
    Recover {
        /// Configuration file (its `[store] path` is recovered).
        #[arg(long, short, default_value = "gateway.toml", env = "WARDGATE_CONFIG")]
        config: PathBuf,
        /// Recover the outbox of one part of a split gateway (one container per adapter): `coap` (CoAP, CoAP over
        /// DTLS, LwM2M), `http-in`, `mqtt-in`, or `uplinks` (the outbox of record and the
        /// uplinks). The parts exchange readings through the `[split]` broker.
        #[arg(long, env = "WARDGATE_ONLY")]
        only: Option<wardgate_config::Part>,
    },
}

/// EX_USAGE from sysexits.h.
pub(crate) const EXIT_USAGE: u8 = 64;
/// EX_DATAERR from sysexits.h.
const EXIT_DATAERR: u8 = 65;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are not errors; everything else is EX_USAGE, not clap's 2.
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match cli.command {
        Command::CheckConfig {
            config,
            monitor: true,
            ..
        } => match load_monitor(&config) {
            Ok(cfg) => {
                let on = |b: bool| if b { "on" } else { "off" };
                println!(
                    "{}: valid for wardgate monitor (capture {}, flows {}, anomalies {}, HTTP {})",
                    config.display(),
                    on(cfg.monitor.capture.enabled),
                    on(cfg.monitor.flows.enabled),
                    on(cfg.monitor.anomalies.enabled),
                    on(cfg.http.enabled),
                );
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::CheckConfig { config, only, .. } => match load(&config, only) {
            Ok(cfg) => {
                let on = |b: bool| if b { "on" } else { "off" };
                println!(
                    "{}: valid{} ({} uplink(s), CoAP {}, CoAP over DTLS {}, HTTP {})",
                    config.display(),
                    only.map(|p| format!(" for part {p}")).unwrap_or_default(),
                    cfg.uplinks.len(),
                    on(cfg.coap.enabled),
                    on(cfg.coaps.enabled),
                    on(cfg.http.enabled),
                );
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Run { config, demo, only } => match load(&config, only) {
            Ok(mut cfg) => {
                if demo && only.is_none() {
                    match demo::enable_status_page(&mut cfg) {
                        Ok(Some(path)) => eprintln!(
                            "demo: status page at http://{}/status; its admin token is in {}",
                            cfg.admin.listen,
                            path.display()
                        ),
                        Ok(None) => {}
                        Err(e) => eprintln!(
                            "demo: cannot write the admin token file ({e}); the status page is off"
                        ),
                    }
                }
                run::main(cfg, only, demo)
            }
            Err(code) => code,
        },
        Command::GenerateConfig { reference } => {
            let text = if reference {
                wardgate_config::reference::markdown()
            } else {
                wardgate_config::reference::commented_config()
            };
            print_all(&text)
        }
        Command::Probe { addr, path } => probe::main(&addr, &path),
        Command::Simulate {
            config,
            beds,
            duration,
            alarm_every,
            dropout_every,
            seed,
            attack,
            attack_from,
            coap,
            no_lwm2m,
            https_ca,
            quiet,
            print_devices,
        } => {
            if print_devices {
                return print_all(&simulate::devices_toml(beds));
            }
            let cfg = match load(&config, None) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let mut targets = simulate::Targets::of(&cfg, https_ca);
            if let Some(c) = coap {
                let resolved =
                    std::net::ToSocketAddrs::to_socket_addrs(c.as_str()).map(|mut a| a.next());
                match resolved {
                    Ok(Some(addr)) => {
                        targets.coap = Some(addr);
                        targets.lwm2m = cfg.lwm2m.enabled;
                    }
                    Ok(None) | Err(_) => {
                        eprintln!("--coap {c}: not a HOST:PORT that resolves");
                        return ExitCode::from(EXIT_USAGE);
                    }
                }
            }
            if no_lwm2m {
                targets.lwm2m = false;
            }
            if let Err(e) = targets.load_registry(&cfg) {
                eprintln!("{e:#}");
                return ExitCode::FAILURE;
            }
            if !targets.any() {
                eprintln!(
                    "{}: no southbound endpoint to simulate against ([coap], [ingest.http], \
                     [[ingest.mqtt]] are all off, and [coaps] needs a [registry] with the \
                     devices' PSKs); give one with --coap",
                    config.display()
                );
                return ExitCode::from(EXIT_USAGE);
            }
            // Warnings only (RUST_LOG overrides): the progress line is the output.
            telemetry::init(&wardgate_config::LogConfig {
                level: "warn".into(),
                ..cfg.log.clone()
            });
            let nonzero = |d: std::time::Duration| (!d.is_zero()).then_some(d);
            simulate::main(
                simulate::Plan {
                    beds,
                    duration,
                    seed: seed.unwrap_or_else(rand::random),
                    alarm_every: nonzero(alarm_every),
                    dropout_every: nonzero(dropout_every),
                    targets,
                    attack_from: attack.then_some(attack_from),
                },
                quiet,
            )
        }
        Command::Monitor { config, interface } => match load_monitor(&config) {
            Ok(cfg) => monitor_cmd::main(cfg, interface),
            Err(code) => code,
        },
        Command::Audit {
            command:
                AuditCommand::Verify {
                    key,
                    from_start,
                    files,
                },
        } => audit_cmd::verify(key, from_start, &files),
        Command::Store {
            command: StoreCommand::Recover { config, only },
        } => {
            let cfg = match load(&config, only) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match wardgate_store::recover(&cfg.store.path) {
                Ok(report) => {
                    println!("{report}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("recovery of {} failed: {e}", cfg.store.path.display());
                    ExitCode::from(EXIT_DATAERR)
                }
            }
        }
    }
}

/// Loads and validates the configuration of `wardgate monitor` (no `[[uplinks]]` needed); a
/// problem is printed and becomes the exit code (64).
fn load_monitor(path: &std::path::Path) -> Result<wardgate_config::GatewayConfig, ExitCode> {
    wardgate_config::load_for(path, wardgate_config::Purpose::Monitor).map_err(|e| {
        eprintln!("{}: {e}", path.display());
        ExitCode::from(EXIT_USAGE)
    })
}

/// Loads and validates the configuration, restricted to one part with `--only`; a problem is
/// printed and becomes the exit code (64).
fn load(
    path: &std::path::Path,
    only: Option<wardgate_config::Part>,
) -> Result<wardgate_config::GatewayConfig, ExitCode> {
    let restricted = wardgate_config::load(path).and_then(|cfg| match only {
        None => Ok(cfg),
        Some(part) => wardgate_config::split::restrict(&cfg, part)
            .map_err(|p| wardgate_config::ConfigError::Invalid(p.into_vec())),
    });
    restricted.map_err(|e| {
        eprintln!("{}: {e}", path.display());
        ExitCode::from(EXIT_USAGE)
    })
}

/// Writes `text` to stdout; a closed pipe (`| head`) is not an error, anything else exits 1.
fn print_all(text: &str) -> ExitCode {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cannot write to stdout: {e}");
            ExitCode::FAILURE
        }
    }
}
