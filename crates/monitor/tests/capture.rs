//! The capture pipeline against real files and a real decoder: what it writes is read back
//! with Debian's `tshark`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use wardgate_coap::Transport;
use wardgate_coap::transport::{SocketOptions, UdpTransport};
use wardgate_core::PeerContext;
use wardgate_monitor::{
    CaptureConfig, CaptureHandle, CaptureMetrics, Direction, TapTransport, start,
};
use wardgate_testkit::{require_tool, wait_for};

const TSHARK: &str = "/usr/bin/tshark";

/// `tshark -r FILE -T fields -e …` (checksums validated), one `|`-separated line per packet.
fn tshark_fields(file: &Path, fields: &[&str]) -> Vec<String> {
    tshark_fields_with(file, &[], fields)
}

/// [`tshark_fields`] with extra arguments (e.g. `-d udp.port==N,coap` for an ephemeral port).
fn tshark_fields_with(file: &Path, extra: &[&str], fields: &[&str]) -> Vec<String> {
    require_tool(TSHARK);
    let mut cmd = Command::new(TSHARK);
    cmd.args([
        "-n",
        "-o",
        "udp.check_checksum:TRUE",
        "-o",
        "ip.check_checksum:TRUE",
    ])
    .args(extra)
    .arg("-r")
    .arg(file)
    .args(["-T", "fields", "-E", "separator=|"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().expect("run tshark");
    assert!(
        out.status.success(),
        "tshark failed on {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn captures(dir: &Path) -> Vec<PathBuf> {
    wardgate_monitor::ring::list(dir)
        .unwrap()
        .into_iter()
        .map(|(_, p)| p)
        .collect()
}

fn config(dir: &Path) -> CaptureConfig {
    CaptureConfig {
        enabled: true,
        dir: dir.to_owned(),
        redact_payloads: false,
        ..CaptureConfig::default()
    }
}

/// CON POST /v1/readings/bed-1, Content-Format 0, token 0xbeef, `payload`.
fn coap_post(mid: u16, payload: &[u8]) -> Vec<u8> {
    let mut m = vec![0x42, 0x02];
    m.extend_from_slice(&mid.to_be_bytes());
    m.extend_from_slice(&[0xbe, 0xef]);
    m.extend_from_slice(&[0xb2, b'v', b'1', 0x08]);
    m.extend_from_slice(b"readings");
    m.extend_from_slice(&[0x05]);
    m.extend_from_slice(b"bed-1");
    m.extend_from_slice(&[0x10, 0xff]);
    m.extend_from_slice(payload);
    m
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn peer(s: &str) -> PeerContext {
    PeerContext::udp(s.parse().unwrap())
}

#[test]
fn rotation_by_size_keeps_only_max_files_and_every_file_stays_readable() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = CaptureConfig {
        max_file_bytes: 4096,
        max_files: 3,
        queue_packets: 1000,
        ..config(dir.path())
    };
    let metrics = CaptureMetrics::default();
    let (handle, writer) = start(&cfg, metrics.clone()).unwrap();
    let local: SocketAddr = "10.0.0.1:5683".parse().unwrap();
    for i in 0..300u16 {
        let payload = format!("{{\"n\":\"spo2\",\"v\":{i}}}");
        assert!(handle.offer(
            Direction::Inbound,
            &peer("192.0.2.7:40000"),
            local,
            &coap_post(i, payload.as_bytes())
        ));
    }
    drop(handle);
    writer.join();

    let files = captures(dir.path());
    assert_eq!(files.len(), 3, "the ring keeps max_files: {files:?}");
    assert_eq!(metrics.packets(), 300);
    assert!(metrics.files_rotated() >= 5, "{}", metrics.files_rotated());
    let mut last_mid = None;
    for f in &files {
        let size = std::fs::metadata(f).unwrap().len();
        assert!(size <= 4096, "{} is {size} bytes", f.display());
        let lines = tshark_fields(f, &["coap.mid", "udp.checksum.status"]);
        assert!(!lines.is_empty(), "{} holds packets", f.display());
        for l in lines {
            let (mid, status) = l.split_once('|').unwrap();
            let mid: u16 = mid.parse().unwrap();
            assert_eq!(status, "1", "checksum good (1) in {l}");
            if let Some(prev) = last_mid {
                assert_eq!(mid, prev + 1, "files hold consecutive packets in order");
            }
            last_mid = Some(mid);
        }
    }
    assert_eq!(last_mid, Some(299), "the newest packets are the ones kept");
}

#[test]
fn a_file_older_than_max_file_age_is_rotated_when_the_next_packet_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = CaptureConfig {
        // Below what validation accepts, so the test needs only a short pause.
        max_file_age: Duration::from_millis(50),
        ..config(dir.path())
    };
    let metrics = CaptureMetrics::default();
    let (handle, writer) = start(&cfg, metrics.clone()).unwrap();
    let local: SocketAddr = "10.0.0.1:5683".parse().unwrap();
    let from = peer("192.0.2.7:1");
    assert!(handle.offer(Direction::Inbound, &from, local, &coap_post(1, b"a")));
    wait_for("the first packet written", Duration::from_secs(30), || {
        (metrics.packets() == 1).then_some(())
    });
    std::thread::sleep(Duration::from_millis(100));
    assert!(handle.offer(Direction::Inbound, &from, local, &coap_post(2, b"b")));
    drop(handle);
    writer.join();
    let files = captures(dir.path());
    assert_eq!(files.len(), 2, "{files:?}");
    assert_eq!(metrics.files_rotated(), 1);
    assert_eq!(tshark_fields(&files[0], &["coap.mid"]), ["1"]);
    assert_eq!(tshark_fields(&files[1], &["coap.mid"]), ["2"]);
}

#[test]
fn a_full_queue_drops_and_counts_instead_of_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = CaptureConfig {
        queue_packets: 4,
        ..config(dir.path())
    };
    let metrics = CaptureMetrics::default();
    // No writer yet: nothing drains the queue.
    let (handle, queue) = CaptureHandle::channel(&cfg, metrics.clone()).unwrap();
    let local: SocketAddr = "10.0.0.1:5683".parse().unwrap();
    let offered: Vec<bool> = (0..10u16)
        .map(|i| {
            handle.offer(
                Direction::Inbound,
                &peer("192.0.2.7:1"),
                local,
                &coap_post(i, b"x"),
            )
        })
        .collect();
    assert_eq!(
        offered,
        [
            true, true, true, true, false, false, false, false, false, false
        ]
    );
    assert_eq!(metrics.dropped(), 6);

    let writer = queue.spawn_writer(&cfg).unwrap();
    drop(handle);
    writer.join();
    let files = captures(dir.path());
    assert_eq!(files.len(), 1);
    let mids = tshark_fields(&files[0], &["coap.mid"]);
    assert_eq!(
        mids,
        ["0", "1", "2", "3"],
        "the queued packets, not the dropped ones"
    );
    assert_eq!(metrics.packets(), 4);
}

#[test]
fn packets_outside_the_filters_are_not_copied() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = CaptureConfig {
        addresses: vec!["192.0.2.0/24".into()],
        protocols: vec!["coap".into()],
        ..config(dir.path())
    };
    let metrics = CaptureMetrics::default();
    let (handle, writer) = start(&cfg, metrics.clone()).unwrap();
    let local: SocketAddr = "10.0.0.1:5683".parse().unwrap();
    assert!(handle.offer(
        Direction::Inbound,
        &peer("192.0.2.9:1"),
        local,
        &coap_post(1, b"a")
    ));
    assert!(!handle.offer(
        Direction::Inbound,
        &peer("198.51.100.9:1"),
        local,
        &coap_post(2, b"b")
    ));
    drop(handle);
    writer.join();
    let files = captures(dir.path());
    assert_eq!(
        tshark_fields(&files[0], &["ip.src", "coap.mid"]),
        ["192.0.2.9|1"]
    );
    assert_eq!(metrics.dropped(), 0, "filtered out is not dropped");
}

#[tokio::test(flavor = "current_thread")]
async fn a_tapped_ipv6_udp_transport_captures_both_directions_with_the_real_five_tuple() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let metrics = CaptureMetrics::default();
    let (handle, writer) = start(&cfg, metrics.clone()).unwrap();
    let opts = SocketOptions {
        recv_buffer_bytes: 0,
        send_buffer_bytes: 0,
    };
    let udp = UdpTransport::bind("[::1]:0".parse().unwrap(), opts).unwrap();
    let tap = TapTransport::new(udp, Some(handle.into())).unwrap();
    let server = tap.local_addr().unwrap();

    let client = UdpSocket::bind("[::1]:0").unwrap();
    let client_addr = client.local_addr().unwrap();
    client.send_to(&coap_post(0x1234, b"36.6"), server).unwrap();
    let mut buf = [0u8; 1500];
    let (n, from) = tokio::time::timeout(Duration::from_secs(10), tap.recv_from(&mut buf))
        .await
        .expect("a datagram within 10 s")
        .unwrap();
    assert_eq!(from, client_addr);
    assert_eq!(n, coap_post(0x1234, b"36.6").len());
    // ACK 2.04 Changed, same MID and token.
    tap.send_to(&[0x62, 0x44, 0x12, 0x34, 0xbe, 0xef], from)
        .await
        .unwrap();
    drop(tap);
    writer.join();

    let files = captures(dir.path());
    let decode_as = format!("udp.port=={},coap", server.port());
    let lines = tshark_fields_with(
        &files[0],
        &["-d", &decode_as],
        &[
            "ipv6.src",
            "udp.srcport",
            "ipv6.dst",
            "udp.dstport",
            "coap.code",
            "coap.opt.uri_path",
            "coap.payload_length",
            "udp.payload",
            "udp.checksum.status",
        ],
    );
    let (c, s) = (client_addr.port(), server.port());
    assert_eq!(
        lines,
        [
            format!(
                "::1|{c}|::1|{s}|2|v1,readings,bed-1|4|{}|1",
                hex(&coap_post(0x1234, b"36.6"))
            ),
            format!("::1|{s}|::1|{c}|68|||62441234beef|1"),
        ]
    );
    assert_eq!(metrics.packets(), 2);
}
