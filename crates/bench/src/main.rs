//! `wardgate-bench`: see the library docs. Prints one JSON object per run on stdout; errors go to
//! stderr with exit code 2 (usage) or 1 (anything else).
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use wardgate_bench::{
    BenchError, alarm_backlog, broker_limit, coap_load, dtls_load, failover, https_ingest,
    lwm2m_storm, sample, tls, udp_echo, uplink_e2e,
};

/// wardgate's benchmark harness (loopback targets only).
#[derive(Debug, Parser)]
#[command(name = "wardgate-bench", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// CoAP readings against a server, closed or open loop, optionally matched end to end on MQTT.
    CoapLoad(Box<coap_load::CoapLoadArgs>),
    /// Devices handshaking DTLS (PSK) and posting readings over their sessions, or the same
    /// readings over plain CoAP (`--plain`).
    DtlsLoad(dtls_load::DtlsLoadArgs),
    /// LwM2M clients registering as fast as the server takes them, then observed and notifying.
    Lwm2mStorm(lwm2m_storm::StormArgs),
    /// Stateless CoAP 2.01 answerer: the loopback UDP ceiling.
    UdpEcho(udp_echo::UdpEchoArgs),
    /// QoS 1 publish → Mosquitto → subscribe in one process: the broker ceiling.
    BrokerLimit(broker_limit::BrokerLimitArgs),
    /// CPU and memory of a process over a period (idle footprint).
    Sample(sample::SampleArgs),
    /// Open-loop vitals while the preferred uplink's broker is killed: the selector's failover.
    Failover(Box<failover::FailoverArgs>),
    /// Alarm latency while an outage's backlog drains (the outbox's priority lane).
    AlarmBacklog(alarm_backlog::AlarmBacklogArgs),
    /// CoAP vitals delivered by the MQTT and/or the HTTPS uplink (this process is the HTTPS
    /// endpoint): delivered readings/s, end-to-end latency, requests and batch sizes.
    UplinkE2e(Box<uplink_e2e::UplinkE2eArgs>),
    /// Devices posting SenML readings to the HTTP(S) ingest over keep-alive connections.
    HttpsIngestLoad(https_ingest::IngestLoadArgs),
    /// A self-signed certificate and key for the loopback names (cert.pem, key.pem).
    GenCert(tls::GenCertArgs),
}

fn print<T: serde::Serialize>(report: &T) -> Result<(), BenchError> {
    let line = serde_json::to_string(report)
        .map_err(|e| BenchError::InvalidArgs(format!("report serialization: {e}")))?;
    println!("{line}");
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::CoapLoad(a) => coap_load::run(a).and_then(|r| print(&r)),
        Command::DtlsLoad(a) => dtls_load::run(a).and_then(|r| print(&r)),
        Command::Lwm2mStorm(a) => lwm2m_storm::run(a).and_then(|r| print(&r)),
        Command::UdpEcho(a) => udp_echo::run(a),
        Command::BrokerLimit(a) => broker_limit::run(a).and_then(|r| print(&r)),
        Command::Sample(a) => sample::run(a).and_then(|r| print(&r)),
        Command::Failover(a) => failover::run(a).and_then(|r| print(&r)),
        Command::AlarmBacklog(a) => alarm_backlog::run(a).and_then(|r| print(&r)),
        Command::UplinkE2e(a) => uplink_e2e::run(a).and_then(|r| print(&r)),
        Command::HttpsIngestLoad(a) => https_ingest::run(a).and_then(|r| print(&r)),
        Command::GenCert(a) => tls::gen_cert(a).and_then(|r| print(&r)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wardgate-bench: {e}");
            match e {
                BenchError::InvalidArgs(_)
                | BenchError::NotLoopback(_)
                | BenchError::BadTarget { .. } => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            }
        }
    }
}
