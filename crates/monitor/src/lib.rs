//! wardgate-monitor: the gateway as its own network monitor: **pcapng captures** of the CoAP
//! and DTLS traffic it serves, **flow records** for IDS datasets ([`flow`]: CICFlowMeter field
//! names plus CoAP counts, JSON lines and CSV, labelled by source prefix) and **anomaly events**
//! ([`anomaly`]: scans, floods, authentication-failure bursts, handshake floods, new sources,
//! rate spikes against each device's baseline, new ports; the gateway stores each as a
//! `security`-class reading). The same captures and flows can be made apart from the gateway
//! from a network interface or a mirrored port ([`interface`], `wardgate monitor`).
//!
//! - [`TapTransport`] wraps a `wardgate_coap::Transport` and offers every datagram received
//!   and sent, with its `PeerContext` and the local address, to a [`CaptureHandle`];
//! - [`CaptureHandle::offer`] applies the filters ([`CaptureFilter`]: device identity,
//!   address prefix, protocol), copies the datagram and `try_send`s it on a bounded queue;
//! - [`CaptureControl`] starts and stops captures at run time (the admin API; one at a time,
//!   each with its own filters and duration); taps hold a [`CaptureTap`] that follows it;
//! - one std writer thread ([`CaptureWriter`]) optionally redacts the payload ([`redact()`]),
//!   synthesizes IPv4/IPv6 + UDP headers with the real 5-tuple ([`frame`]), and writes pcapng
//!   ([`pcapng`]) into a bounded ring of rotated files ([`ring`]).
//!
//! # Promises
//! 1. **Capture never slows ingest.** A tap does a filter check, one copy and a `try_send`.
//!    When the queue (`queue_packets`) is full the copy is dropped and counted in
//!    `wardgate_monitor_capture_dropped_total`; readings are never affected. File I/O happens
//!    only on the writer thread, which under traffic drains its queue every 20 ms instead of
//!    being woken per datagram (measured overhead: flows 4.8 %, flows and capture 18.5 % of
//!    the ingest rate, `docs/benchmarks.md`).
//! 2. **Bounded memory and disk.** Memory: `queue_packets` × the largest datagram, plus one
//!    64 KiB write buffer. Disk: at most `max_files` files of at most `max_file_bytes` each
//!    (a single packet bigger than that gets a file of its own); the oldest file is deleted
//!    when a new one starts, including files left by an earlier run.
//! 3. **Tools read the files as if captured on the wire.** `LINKTYPE_RAW` (101) packets with
//!    correct IP and UDP lengths and checksums, nanosecond timestamps (`if_tsresol` = 9), the
//!    direction in `epb_flags` and any proven identity as the packet comment. tshark and
//!    Wireshark decode CoAP (and LwM2M over it) from them.
//! 4. **Redaction keeps lengths.** With `redact_payloads` (the default: payloads are patient
//!    data) payload bytes are zeroed, never removed: headers, tokens and options stay readable
//!    and every length stays true, since packet sizes are what traffic features are made of.
//! 5. **Never a panic on input.** Redaction and header synthesis are total over any bytes.
//!
//! # Choices
//! - **pcapng by hand** (`pcapng.rs`, ~100 lines) rather than the `pcap-file` crate: we write
//!   three fixed block types and never read, the format is stable, and the hand version is
//!   covered byte by byte by unit tests and checked by tshark; a dependency would add a reader,
//!   a parser surface and a release cadence we do not need.
//! - **IP/UDP headers by hand** (`frame.rs`) rather than `etherparse`: two fixed headers and
//!   the Internet checksum, ~60 lines.
//! - **A wrapper transport, not an endpoint hook**: see [`tap`].
//! - **Flows on their own thread and queue** ([`FlowHandle`]): the tap sends only a datagram's
//!   length and CoAP header, so flows cost no payload copy, and a flow backlog never delays a
//!   capture (or the other way round).
//! - **DTLS records, not plaintext**: the DTLS transport owns its socket and hands its raw
//!   datagrams to a [`MonitorTap`] (`wardgate_core::DatagramTap`), so a `coaps` capture holds
//!   the records as they crossed the wire (handshake readable, application data zeroed under
//!   redaction) with the proven identity as the packet comment.
//! - **Anomalies on the flow thread**: the detectors need the same per-datagram metadata as the
//!   flows, so they share its queue and thread ([`start_analysis`]); the thread never waits on
//!   the store, its sink only queues.
//! - **Not yet**: the DTLS keylog file (dimpl 0.9 exposes no master secret or key-log hook);
//!   LwM2M operations inside DTLS (encrypted where the tap sits); the MQTT southbound session;
//!   TCP segments in captures (HTTPS ingest sessions are flows only, see [`MonitorTap`]).
//!   With a listener bound to a wildcard address the capture shows the wildcard as the
//!   gateway's address (the real destination address needs `IP_PKTINFO`).
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod anomaly;
pub mod anomaly_log;
mod capture;
pub mod config;
pub mod control;
mod error;
pub mod filter;
pub mod flow;
mod flow_io;
pub mod frame;
pub mod interface;
pub mod keylog;
mod metrics;
pub mod pcapng;
pub mod redact;
pub mod ring;
pub mod tap;
pub mod wire;

pub use anomaly::{Anomaly, AnomalyDetector, AnomalyKind};
pub use anomaly_log::AnomalyLog;
pub use capture::{CaptureHandle, CaptureQueue, CaptureWriter, CapturedPacket, start};
pub use config::{AnomaliesConfig, CaptureConfig, FlowLabel, FlowsConfig, MonitorConfig};
pub use control::{CaptureControl, CaptureTap};
pub use error::MonitorError;
pub use filter::CaptureFilter;
pub use flow::{FlowRecord, FlowTable};
pub use flow_io::{
    Anomalies, CSV_FILE, FlowHandle, FlowMetrics, FlowWriter, JSONL_FILE, start_analysis,
    start_flows,
};
pub use interface::{InterfaceConfig, InterfaceMetrics, InterfaceReader, InterfaceSource};
pub use metrics::{AnomalyMetrics, CaptureMetrics};
pub use pcapng::Direction;
pub use redact::redact;
pub use tap::{MonitorTap, TapTransport};
