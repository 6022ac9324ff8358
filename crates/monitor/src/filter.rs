//! Which packets a capture keeps: by device (the identity the transport proved), by peer
//! address or prefix, and by protocol. Evaluated at the tap, before anything is copied.

use std::net::IpAddr;
use std::str::FromStr;

use wardgate_core::{PeerContext, TransportKind};

use crate::config::CaptureConfig;

/// Protocol names a filter may list (the registry's protocol names; `mqtt` / `mqtts` are the
/// MQTT southbound subscriber's sessions with the ward broker).
pub const PROTOCOLS: [&str; 6] = ["coap", "coaps", "https", "http", "mqtt", "mqtts"];

/// An IP prefix: `192.0.2.0/24`, `2001:db8::/32`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpPrefix {
    addr: IpAddr,
    len: u8,
}

impl IpPrefix {
    /// Whether `ip` is inside the prefix (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(p), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(p) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(p), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                u128::from(p) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpPrefix {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or prefix (e.g. 192.0.2.0/24)"))?;
        let addr = addr.to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(l) => l
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0-{max}"))?,
        };
        Ok(IpPrefix { addr, len })
    }
}

/// A device pattern: an exact identity name, or a prefix ending in one `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DevicePattern(String);

impl DevicePattern {
    fn matches(&self, name: &str) -> bool {
        match self.0.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == self.0,
        }
    }
}

/// The compiled filters of a `[monitor.capture]` section.
#[derive(Debug, Clone, Default)]
pub struct CaptureFilter {
    devices: Vec<DevicePattern>,
    addresses: Vec<IpPrefix>,
    protocols: Vec<TransportKind>,
}

/// The protocol name a filter uses for a transport.
pub fn protocol_name(kind: TransportKind) -> &'static str {
    match kind {
        TransportKind::Udp => "coap",
        TransportKind::Dtls => "coaps",
        TransportKind::Tcp => "mqtt",
        TransportKind::Tls => "mqtts",
        other => other.as_str(),
    }
}

impl CaptureFilter {
    /// Compiles the section's filters; the problems (one message per bad entry) otherwise.
    pub fn from_config(cfg: &CaptureConfig) -> Result<Self, Vec<(String, String)>> {
        let mut problems = Vec::new();
        let mut f = CaptureFilter::default();
        for (i, d) in cfg.devices.iter().enumerate() {
            if d.is_empty()
                || d.trim() != d
                || d.matches('*').count() > 1
                || d.contains('*') && !d.ends_with('*')
            {
                problems.push((
                    format!("devices[{i}]"),
                    format!("{d:?} must be a device identity, or a prefix ending in one *"),
                ));
            } else {
                f.devices.push(DevicePattern(d.clone()));
            }
        }
        for (i, a) in cfg.addresses.iter().enumerate() {
            match a.parse() {
                Ok(p) => f.addresses.push(p),
                Err(e) => problems.push((format!("addresses[{i}]"), e)),
            }
        }
        for (i, p) in cfg.protocols.iter().enumerate() {
            match p.as_str() {
                "coap" => f.protocols.push(TransportKind::Udp),
                "coaps" => f.protocols.push(TransportKind::Dtls),
                "https" => f.protocols.push(TransportKind::Https),
                "http" => f.protocols.push(TransportKind::Http),
                "mqtt" => f.protocols.push(TransportKind::Tcp),
                "mqtts" => f.protocols.push(TransportKind::Tls),
                other => problems.push((
                    format!("protocols[{i}]"),
                    format!("{other:?} is not one of: {}", PROTOCOLS.join(", ")),
                )),
            }
        }
        if problems.is_empty() {
            Ok(f)
        } else {
            Err(problems)
        }
    }

    /// Whether packets of `peer` are captured: its protocol is listed (or none are), and it
    /// matches a device pattern by its proven identity or an address prefix (or neither kind of
    /// filter is set). A peer with no proven identity (plain UDP) can only match by address.
    pub fn matches(&self, peer: &PeerContext) -> bool {
        if !self.protocols.is_empty() && !self.protocols.contains(&peer.transport) {
            return false;
        }
        if self.devices.is_empty() && self.addresses.is_empty() {
            return true;
        }
        let by_device = peer
            .identity
            .as_ref()
            .is_some_and(|id| self.devices.iter().any(|d| d.matches(id.value())));
        by_device || self.addresses.iter().any(|p| p.contains(peer.addr.ip()))
    }

    /// Whether the filter lets anything of `kind` through.
    pub fn admits_protocol(&self, kind: TransportKind) -> bool {
        self.protocols.is_empty() || self.protocols.contains(&kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wardgate_core::{Identity, IdentityKind};

    fn filter(devices: &[&str], addresses: &[&str], protocols: &[&str]) -> CaptureFilter {
        let cfg = CaptureConfig {
            devices: devices.iter().map(|s| (*s).to_owned()).collect(),
            addresses: addresses.iter().map(|s| (*s).to_owned()).collect(),
            protocols: protocols.iter().map(|s| (*s).to_owned()).collect(),
            ..CaptureConfig::default()
        };
        CaptureFilter::from_config(&cfg).unwrap()
    }

    fn udp(a: &str) -> PeerContext {
        PeerContext::udp(a.parse().unwrap())
    }

    fn dtls(a: &str, id: &str) -> PeerContext {
        PeerContext::new(a.parse().unwrap(), TransportKind::Dtls)
            .with_identity(Identity::new(IdentityKind::PskIdentity, id))
    }

    #[test]
    fn no_filters_capture_everything() {
        let f = filter(&[], &[], &[]);
        assert!(f.matches(&udp("192.0.2.1:1")));
        assert!(f.matches(&dtls("[2001:db8::1]:1", "bed-1")));
    }

    #[test]
    fn address_prefixes_match_ipv4_ipv6_and_mapped_addresses() {
        let f = filter(&[], &["192.0.2.0/24", "2001:db8::/32", "10.1.2.3"], &[]);
        assert!(f.matches(&udp("192.0.2.200:5683")));
        assert!(f.matches(&udp("[::ffff:192.0.2.9]:5683")));
        assert!(f.matches(&udp("[2001:db8:1::7]:5683")));
        assert!(f.matches(&udp("10.1.2.3:1")));
        assert!(!f.matches(&udp("10.1.2.4:1")));
        assert!(!f.matches(&udp("192.0.3.1:5683")));
        assert!(!f.matches(&udp("[2001:db9::1]:5683")));
        assert!(filter(&[], &["0.0.0.0/0"], &[]).matches(&udp("203.0.113.5:1")));
    }

    #[test]
    fn devices_match_the_proven_identity_and_unauthenticated_peers_only_by_address() {
        let f = filter(&["bed-12", "pump-*"], &["192.0.2.0/24"], &[]);
        assert!(f.matches(&dtls("203.0.113.1:1", "bed-12")));
        assert!(f.matches(&dtls("203.0.113.1:1", "pump-7")));
        assert!(!f.matches(&dtls("203.0.113.1:1", "bed-13")));
        assert!(f.matches(&udp("192.0.2.1:1")), "by address");
        assert!(!filter(&["bed-12"], &[], &[]).matches(&udp("192.0.2.1:1")));
    }

    #[test]
    fn protocols_restrict_whatever_else_matches() {
        let f = filter(&[], &[], &["coaps"]);
        assert!(!f.matches(&udp("192.0.2.1:1")));
        assert!(f.matches(&dtls("192.0.2.1:1", "x")));
        assert!(!f.admits_protocol(TransportKind::Udp));
    }

    #[test]
    fn every_bad_entry_is_reported() {
        let cfg = CaptureConfig {
            devices: vec!["".into(), "a*b".into(), "ok-*".into()],
            addresses: vec!["192.0.2.0/33".into(), "ward".into(), "::/128".into()],
            protocols: vec!["ftp".into(), "coap".into()],
            ..CaptureConfig::default()
        };
        let problems = CaptureFilter::from_config(&cfg).unwrap_err();
        let at: Vec<&str> = problems.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            at,
            [
                "devices[0]",
                "devices[1]",
                "addresses[0]",
                "addresses[1]",
                "protocols[0]"
            ]
        );
    }
}
