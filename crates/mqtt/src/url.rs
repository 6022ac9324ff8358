//! `mqtt://host[:port]` / `mqtts://host[:port]` parsing. Deliberately narrow: no user info (use
//! `username`/`password`), no path, no query, so nothing in the URL is silently ignored.

use std::fmt;
use std::net::Ipv6Addr;

/// A parsed broker URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// True for `mqtts://`.
    pub tls: bool,
    /// Host name or IP address, without IPv6 brackets.
    pub host: String,
    /// Port (default 1883, or 8883 with TLS).
    pub port: u16,
}

/// Why a broker URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UrlError(String);

impl BrokerUrl {
    /// Parses `mqtt://host[:port]` or `mqtts://host[:port]` (IPv6 as `[addr]`).
    pub fn parse(url: &str) -> Result<BrokerUrl, UrlError> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("mqtts://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("mqtt://") {
            (false, r)
        } else {
            return Err(UrlError(format!(
                "{url:?} must start with mqtt:// or mqtts://"
            )));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) {
            return Err(UrlError(
                "only host and port are allowed (credentials go in username/password)".into(),
            ));
        }
        let default_port = if tls { 8883 } else { 1883 };
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (addr, after) = v6
                .split_once(']')
                .ok_or_else(|| UrlError("unterminated [IPv6] host".into()))?;
            addr.parse::<Ipv6Addr>()
                .map_err(|_| UrlError(format!("{addr:?} is not an IPv6 address")))?;
            let port = match after.strip_prefix(':') {
                Some(p) => parse_port(p)?,
                None if after.is_empty() => default_port,
                None => return Err(UrlError("unexpected text after ]".into())),
            };
            (addr.to_owned(), port)
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), parse_port(p)?),
                None => (rest.to_owned(), default_port),
            }
        };
        if host.is_empty() {
            return Err(UrlError("missing host".into()));
        }
        Ok(BrokerUrl { tls, host, port })
    }

    /// The host as a socket address string needs it (`[v6]` bracketed).
    pub(crate) fn connect_host(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }
}

fn parse_port(p: &str) -> Result<u16, UrlError> {
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(UrlError(format!("{p:?} is not a port number"))),
        Ok(port) => Ok(port),
    }
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        write!(f, "{scheme}://{}:{}", self.connect_host(), self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_get_the_scheme_default_port() {
        let u = BrokerUrl::parse("mqtt://broker.example").expect("valid");
        assert_eq!(
            (u.tls, u.host.as_str(), u.port),
            (false, "broker.example", 1883)
        );
        let u = BrokerUrl::parse("mqtts://broker.example/").expect("valid");
        assert_eq!((u.tls, u.port), (true, 8883));
    }

    #[test]
    fn explicit_ports_and_ipv6_hosts_parse() {
        let u = BrokerUrl::parse("mqtt://127.0.0.1:1884").expect("valid");
        assert_eq!((u.host.as_str(), u.port), ("127.0.0.1", 1884));
        let u = BrokerUrl::parse("mqtts://[::1]:8884").expect("valid");
        assert_eq!((u.host.as_str(), u.port), ("::1", 8884));
        assert_eq!(u.to_string(), "mqtts://[::1]:8884");
    }

    #[test]
    fn urls_with_other_schemes_credentials_paths_or_bad_ports_are_refused() {
        for bad in [
            "tcp://h:1883",
            "mqtt://user:pw@h",
            "mqtt://h/topic",
            "mqtt://h:0",
            "mqtt://h:70000",
            "mqtt://",
            "mqtt://[::1",
            "mqtt://[nope]:1",
        ] {
            assert!(BrokerUrl::parse(bad).is_err(), "{bad} should be refused");
        }
    }
}
