//! Target parsing with the loopback rule: every address the harness sends to must be on this
//! machine, so a typo can never turn a benchmark into a flood on someone else's network.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use crate::error::BenchError;

/// Resolves `host:port` and accepts it only if every resolved address is loopback.
pub fn loopback_addr(target: &str) -> Result<SocketAddr, BenchError> {
    let addrs: Vec<SocketAddr> = target
        .to_socket_addrs()
        .map_err(|e| BenchError::BadTarget {
            target: target.to_owned(),
            detail: e.to_string(),
        })?
        .collect();
    let first = addrs
        .first()
        .copied()
        .ok_or_else(|| BenchError::BadTarget {
            target: target.to_owned(),
            detail: "resolves to no address".into(),
        })?;
    if addrs.iter().any(|a| !is_loopback(a.ip())) {
        return Err(BenchError::NotLoopback(target.to_owned()));
    }
    Ok(first)
}

/// 127.0.0.0/8, ::1 and the IPv4-mapped form of 127.0.0.0/8.
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// An MQTT broker URL (`mqtt://host:port`, port 1883 by default), loopback only.
pub fn mqtt_broker(url: &str) -> Result<(String, u16), BenchError> {
    let rest = url
        .strip_prefix("mqtt://")
        .ok_or_else(|| BenchError::BadTarget {
            target: url.to_owned(),
            detail: "only plain mqtt:// URLs are supported".into(),
        })?;
    let hostport = rest.split('/').next().unwrap_or(rest);
    let with_port = if hostport.starts_with('[') {
        if hostport.contains("]:") {
            hostport.to_owned()
        } else {
            format!("{hostport}:1883")
        }
    } else if hostport.contains(':') {
        hostport.to_owned()
    } else {
        format!("{hostport}:1883")
    };
    let addr = loopback_addr(&with_port)?;
    Ok((addr.ip().to_string(), addr.port()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_targets_are_accepted() {
        assert!(loopback_addr("127.0.0.1:5683").is_ok());
        assert!(loopback_addr("127.3.2.1:5683").is_ok());
        assert!(loopback_addr("[::1]:5683").is_ok());
        assert!(loopback_addr("localhost:5683").is_ok());
    }

    #[test]
    fn private_and_public_targets_are_refused() {
        for t in [
            "10.0.0.1:5683",
            "192.168.1.10:5683",
            "172.16.0.1:1",
            "8.8.8.8:53",
            "[2001:db8::1]:5683",
        ] {
            assert!(
                matches!(loopback_addr(t), Err(BenchError::NotLoopback(_))),
                "{t} must be refused"
            );
        }
    }

    #[test]
    fn mqtt_urls_default_to_port_1883_and_must_be_loopback() {
        assert_eq!(
            mqtt_broker("mqtt://127.0.0.1").ok(),
            Some(("127.0.0.1".into(), 1883))
        );
        assert_eq!(
            mqtt_broker("mqtt://127.0.0.1:18830").ok(),
            Some(("127.0.0.1".into(), 18830))
        );
        assert!(matches!(
            mqtt_broker("mqtt://10.1.1.1:1883"),
            Err(BenchError::NotLoopback(_))
        ));
        assert!(mqtt_broker("mqtts://127.0.0.1:8883").is_err());
    }
}
